//! Serves the generated `Greeter` service and calls it with the generated client, discovering
//! the server through the embedded in-memory registry.
//!
//! Run with `cargo run -p gannet-example-greeter`.

use gannet::discovery::MemoryRegistry;
use gannet::{Client, Server};
use gannet_example_greeter::Greetings;
use gannet_example_greeter::greeter::greeter_client::GreeterClient;
use gannet_example_greeter::greeter::greeter_server::GreeterServer;
use gannet_example_greeter::greeter::{CountRequest, HelloRequest};

#[tokio::main]
async fn main() -> gannet::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let registry = MemoryRegistry::new();
    let server = Server::builder("greeter")
        .bind("127.0.0.1:0".parse().expect("a valid address"))
        .registry(registry.clone())
        .service(GreeterServer::new(Greetings::default()))
        .start()
        .await?;
    println!(
        "server: {} ({}) listening on {}",
        GreeterClient::SERVICE,
        GreeterClient::METHODS.join(", "),
        server.local_addr()
    );

    let greeter = GreeterClient::new(
        Client::builder("greeter")
            .caller("greeter-example")
            .resolver(registry.resolver())
            .rpc_timeout(std::time::Duration::from_secs(1))
            .build()?,
    );

    let reply = greeter
        .say_hello(&HelloRequest {
            name: "gannet".into(),
        })
        .await?;
    println!("client: {}", reply.message);

    // Metainfo travels with a prepared context.
    let mut cx = greeter.client().context("SayHello");
    cx.meta.set_persistent("lang", "fr");
    let reply = greeter
        .say_hello_with(
            &mut cx,
            &HelloRequest {
                name: "gannet".into(),
            },
        )
        .await?;
    println!("client: {} (lang=fr)", reply.message);

    // A handler's application error comes back typed, with its code.
    let err = greeter
        .say_hello(&HelloRequest::default())
        .await
        .expect_err("an empty name is refused");
    println!(
        "client: an empty name gives code {:?}: {}",
        err.remote_code(),
        err.message()
    );

    let count = greeter.count(&CountRequest {}).await?;
    println!("client: the server gave {} greetings", count.greetings);

    server.shutdown().await?;
    println!("server: shut down gracefully");
    Ok(())
}

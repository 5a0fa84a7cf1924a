//! The quickstart: an echo server registers in the embedded in-memory registry, a client
//! discovers it there and calls it.
//!
//! Run with `cargo run -p gannet --example quickstart`.

use gannet::discovery::MemoryRegistry;
use gannet::{Client, MetaInfo, Server};

/// The request of the `Echo` method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// What to echo.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The reply of the `Echo` method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoResponse {
    /// The echoed message.
    #[prost(string, tag = "1")]
    pub message: String,
    /// The caller's `tenant` metainfo value, as the server saw it.
    #[prost(string, tag = "2")]
    pub tenant: String,
}

#[tokio::main]
async fn main() -> gannet::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // The embedded registry: servers register here, clients discover here.
    let registry = MemoryRegistry::new();

    let server = Server::builder("echo")
        .bind("127.0.0.1:0".parse().expect("a valid address"))
        .registry(registry.clone())
        .handler("Echo", |req: EchoRequest| async move {
            let tenant = MetaInfo::current()
                .and_then(|m| m.get_persistent("tenant").map(str::to_owned))
                .unwrap_or_default();
            Ok(EchoResponse {
                message: req.message,
                tenant,
            })
        })
        .start()
        .await?;
    println!("server: echo listening on {}", server.local_addr());

    let client = Client::builder("echo")
        .caller("quickstart")
        .resolver(registry.resolver())
        .rpc_timeout(std::time::Duration::from_secs(1))
        .build()?;

    let mut cx = client.context("Echo");
    cx.meta.set_persistent("tenant", "acme");
    let reply: EchoResponse = client
        .call_with(
            &mut cx,
            &EchoRequest {
                message: "hello, gannet".into(),
            },
        )
        .await?;
    println!(
        "client: reply {:?} (tenant {:?}) from {} found through the in-memory registry",
        reply.message,
        reply.tenant,
        cx.rpc_info
            .callee
            .address
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    // Unknown methods come back as typed errors, not dropped connections.
    let err = client
        .call::<_, EchoResponse>(
            "Shout",
            &EchoRequest {
                message: "?".into(),
            },
        )
        .await
        .expect_err("Shout is not served");
    println!("client: calling an unknown method gives: {err}");

    server.shutdown().await?;
    println!("server: shut down gracefully");
    Ok(())
}

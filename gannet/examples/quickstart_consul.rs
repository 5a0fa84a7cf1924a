//! The quickstart with Consul as the registry: the server registers with a Consul agent (a
//! TTL check it keeps passing), the client finds it through blocking queries.
//!
//! Run with `cargo run -p gannet --example quickstart-consul --features consul`. It uses the
//! agent at `$GANNET_TEST_CONSUL` if set, else starts a local dev agent from the binary that
//! `scripts/install-test-servers consul` installs (and stops it at the end).

use gannet::consul::ConsulOptions;
use gannet::{Client, Server};

/// The request and reply of `Echo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let runtime = tokio::runtime::Runtime::new()?;
    let consul = runtime.block_on(gannet_conformance::harness::Consul::start())?;
    let res = runtime.block_on(run(&consul));
    // Stop the runtime (and with it the client's blocking queries) before Consul goes away,
    // so the watch does not report Consul's exit as an outage.
    drop(runtime);
    drop(consul);
    res
}

async fn run(
    consul: &gannet_conformance::harness::Consul,
) -> Result<(), Box<dyn std::error::Error>> {
    println!("consul: {}", consul.endpoint());
    let options = ConsulOptions::new().endpoint(consul.endpoint());

    let server = Server::builder("echo")
        .bind("127.0.0.1:0".parse()?)
        .registry(options.registry())
        .handler("Echo", |req: Echo| async move { Ok(req) })
        .start()
        .await?;
    println!(
        "server: echo listening on {}, registered with consul",
        server.local_addr()
    );

    let client = Client::builder("echo")
        .resolver(options.resolver())
        .build()?;
    let mut cx = client.context("Echo");
    let reply: Echo = client
        .call_with(
            &mut cx,
            &Echo {
                text: "hello through consul".into(),
            },
        )
        .await?;
    println!(
        "client: reply {:?} from {} found through consul",
        reply.text,
        cx.rpc_info
            .callee
            .address
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    server.shutdown().await?;
    println!("server: deregistered from consul and shut down");
    Ok(())
}

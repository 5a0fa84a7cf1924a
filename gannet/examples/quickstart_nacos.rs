//! The quickstart with Nacos as the registry: the server registers an ephemeral instance, the
//! client finds it through a Nacos subscription.
//!
//! Run with `cargo run -p gannet --example quickstart-nacos --features nacos`. It uses the
//! Nacos whose HTTP address (`host:port`) is `$GANNET_TEST_NACOS` if set, else starts a local
//! `rnacos` from the binary that `scripts/install-test-servers nacos` installs (and stops it at
//! the end).

use gannet::nacos::NacosOptions;
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
            // nacos-sdk logs every subscription step at info, and warns when its stream
            // closes as the runtime stops at the end.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,nacos_sdk=error".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let runtime = tokio::runtime::Runtime::new()?;
    let nacos = runtime.block_on(gannet_conformance::harness::Nacos::start())?;
    let res = runtime.block_on(run(&nacos));
    // Stop the runtime (and with it the Nacos client's connection) before Nacos goes away, so
    // the client does not report Nacos's exit as an outage.
    drop(runtime);
    drop(nacos);
    res
}

async fn run(nacos: &gannet_conformance::harness::Nacos) -> Result<(), Box<dyn std::error::Error>> {
    println!("nacos: {}", nacos.addr());
    // One options value for both sides: they share one Nacos naming client.
    let options = NacosOptions::new().addr(nacos.addr());

    let server = Server::builder("echo")
        .bind("127.0.0.1:0".parse()?)
        .registry(options.registry())
        .handler("Echo", |req: Echo| async move { Ok(req) })
        .start()
        .await?;
    println!(
        "server: echo listening on {}, registered with nacos",
        server.local_addr()
    );

    let client = Client::builder("echo")
        .resolver(options.resolver())
        .rpc_timeout(std::time::Duration::from_secs(5))
        .build()?;
    let mut cx = client.context("Echo");
    let reply: Echo = client
        .call_with(
            &mut cx,
            &Echo {
                text: "hello through nacos".into(),
            },
        )
        .await?;
    println!(
        "client: reply {:?} from {} found through nacos",
        reply.text,
        cx.rpc_info
            .callee
            .address
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    server.shutdown().await?;
    println!("server: deregistered from nacos and shut down");
    Ok(())
}

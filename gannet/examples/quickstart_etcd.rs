//! The quickstart with etcd as the registry: the server registers in etcd, the client finds
//! it there through a watch.
//!
//! Run with `cargo run -p gannet --example quickstart-etcd --features etcd`. It uses the etcd
//! at `$GANNET_TEST_ETCD` if set, else starts a local one from the binary that
//! `scripts/install-test-servers etcd` installs (and stops it at the end).

use gannet::etcd::EtcdOptions;
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
    let etcd = runtime.block_on(gannet_conformance::harness::Etcd::start())?;
    let res = runtime.block_on(run(&etcd));
    // Stop the runtime (and with it the client's etcd watch) before etcd goes away, so the
    // watch does not report etcd's exit as an outage.
    drop(runtime);
    drop(etcd);
    res
}

async fn run(etcd: &gannet_conformance::harness::Etcd) -> Result<(), Box<dyn std::error::Error>> {
    println!("etcd: {}", etcd.endpoint());
    let options = EtcdOptions::new().endpoint(etcd.endpoint());

    let server = Server::builder("echo")
        .bind("127.0.0.1:0".parse()?)
        .registry(options.registry())
        .handler("Echo", |req: Echo| async move { Ok(req) })
        .start()
        .await?;
    println!(
        "server: echo listening on {}, registered in etcd",
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
                text: "hello through etcd".into(),
            },
        )
        .await?;
    println!(
        "client: reply {:?} from {} found through etcd",
        reply.text,
        cx.rpc_info
            .callee
            .address
            .map(|a| a.to_string())
            .unwrap_or_default()
    );

    server.shutdown().await?;
    println!("server: deregistered from etcd and shut down");
    Ok(())
}

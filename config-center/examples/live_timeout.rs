//! A timeout changed live: a client calls a slow method while the example rewrites the
//! `rpc_timeout` file under a config directory; the calls start failing and then pass again.
//!
//! Run with `cargo run -p gannet-config-center --example live_timeout`.

use std::time::Duration;

use gannet_config_center::file::FileSource;
use gannet_config_center::{ClientConfig, ConfigSource};
use gannet_core::{Client, Server};

/// The request: the server sleeps `delay_ms`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Slow {
    /// How long the server takes.
    #[prost(uint64, tag = "1")]
    pub delay_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let source = FileSource::new(dir.path());
    let file = source.path_of(&source.client_key(
        "frontend",
        "slow",
        gannet_config_center::Category::RpcTimeout,
    ));
    std::fs::create_dir_all(file.parent().ok_or("no parent")?)?;

    let server = Server::builder("slow")
        .bind("127.0.0.1:0".parse()?)
        .handler("Work", |req: Slow| async move {
            tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
            Ok(req)
        })
        .start()
        .await?;
    let config = ClientConfig::new(source, "frontend", "slow").await;
    let client = Client::builder("slow")
        .caller("frontend")
        .address(server.local_addr())
        .suite(config)
        .build()?;

    for (step, timeout) in [(1, None), (2, Some(50)), (3, Some(1000))] {
        match timeout {
            Some(ms) => {
                let json = format!(r#"{{"*": {{"rpc_timeout_ms": {ms}}}}}"#);
                std::fs::write(&file, &json)?;
                println!("step {step}: wrote {} = {json}", file.display());
            }
            None => println!("step {step}: no config file, default policy (no timeout)"),
        }
        // Give the watch a moment to see the file.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let res: gannet_core::Result<Slow> = client.call("Work", &Slow { delay_ms: 200 }).await;
        match res {
            Ok(_) => println!("step {step}: a 200 ms call succeeded"),
            Err(e) => println!("step {step}: a 200 ms call failed: {e}"),
        }
    }
    server.shutdown().await?;
    Ok(())
}

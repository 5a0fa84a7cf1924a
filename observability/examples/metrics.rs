//! RPC metrics on a Prometheus endpoint: a server and a client with the `Observability` suite
//! (metrics only), a few calls, then what `/metrics` serves.
//!
//! Run with `cargo run -p gannet-observability --example metrics`.

use gannet_core::{Client, Error, Server};
use gannet_observability::Observability;

/// The request and reply of `Echo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    /// The text; `"fail"` makes the server answer with an error.
    #[prost(string, tag = "1")]
    pub text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let metrics = gannet_observability::install_prometheus(addr)?;
    let suite = Observability::default().tracing(false);

    let server = Server::builder("echo")
        .bind("127.0.0.1:0".parse()?)
        .suite(suite.clone())
        .handler("Echo", |req: Echo| async move {
            if req.text == "fail" {
                return Err(Error::application(1, "asked to fail"));
            }
            Ok(req)
        })
        .start()
        .await?;
    let client = Client::builder("echo")
        .address(server.local_addr())
        .suite(suite)
        .build()?;
    for text in ["a", "b", "fail"] {
        let _ = client
            .call::<Echo, Echo>("Echo", &Echo { text: text.into() })
            .await;
    }
    server.shutdown().await?;

    println!("# what http://{addr}/metrics serves (duration series):");
    for line in metrics.render().lines() {
        if line.starts_with("rpc_client_duration_count")
            || line.starts_with("rpc_server_duration_count")
        {
            println!("{line}");
        }
    }
    Ok(())
}

//! Starts a real etcd through the harness, restarts it, and stops it.
//!
//! `cargo run -p gannet-conformance --example etcd` (after `scripts/install-test-servers etcd`).

use gannet_conformance::harness::Etcd;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = Etcd::start().await?;
    println!("etcd is healthy at {}", etcd.endpoint());
    etcd.restart().await?;
    println!("restarted; healthy again at {}", etcd.endpoint());
    drop(etcd);
    println!("stopped (killed by process id, data directory removed)");
    Ok(())
}

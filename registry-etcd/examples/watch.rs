//! Registers an instance in etcd and prints what a watch on its service sees.
//!
//! `cargo run -p gannet-registry-etcd --example watch` — uses the etcd at `$GANNET_TEST_ETCD`,
//! or `http://127.0.0.1:2379`.

use std::sync::Arc;

use futures::StreamExt;
use gannet_core::{Registry, RegistryInfo, Resolver};
use gannet_registry_etcd::EtcdOptions;

#[tokio::main]
async fn main() -> gannet_core::Result<()> {
    let endpoint =
        std::env::var("GANNET_TEST_ETCD").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let etcd = EtcdOptions::new().endpoint(endpoint);
    let registry = etcd.registry();
    let resolver = Arc::new(etcd.resolver());
    let mut watch = resolver.clone().watch("example".into());
    println!("before: {:?}", watch.next().await);
    let info = RegistryInfo::new("example", "127.0.0.1:9999".parse().expect("address"));
    registry.register(&info).await?;
    println!("after register: {:?}", watch.next().await);
    registry.deregister(&info).await?;
    println!("after deregister: {:?}", watch.next().await);
    Ok(())
}

//! Registers an instance in Nacos and prints what a watch on its service sees.
//!
//! `cargo run -p gannet-registry-nacos --example watch` — uses the Nacos whose HTTP address is
//! `$GANNET_TEST_NACOS` (`host:port`), or `127.0.0.1:8848`.

use std::sync::Arc;

use futures::StreamExt;
use gannet_core::{Registry, RegistryInfo, Resolver};
use gannet_registry_nacos::NacosOptions;

#[tokio::main]
async fn main() -> gannet_core::Result<()> {
    let addr = std::env::var("GANNET_TEST_NACOS")
        .unwrap_or_else(|_| gannet_registry_nacos::DEFAULT_ADDR.into());
    let nacos = NacosOptions::new().addr(addr);
    let registry = nacos.registry();
    let resolver = Arc::new(nacos.resolver());
    let mut watch = resolver.clone().watch("example".into());
    println!("before: {:?}", watch.next().await);
    let info = RegistryInfo::new("example", "127.0.0.1:9999".parse().expect("address"));
    registry.register(&info).await?;
    println!("after register: {:?}", watch.next().await);
    registry.deregister(&info).await?;
    println!("after deregister: {:?}", watch.next().await);
    Ok(())
}

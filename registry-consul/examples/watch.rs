//! Registers an instance in Consul and prints what a watch on its service sees.
//!
//! `cargo run -p gannet-registry-consul --example watch` — uses the agent at
//! `$GANNET_TEST_CONSUL`, or `http://127.0.0.1:8500`.

use std::sync::Arc;

use futures::StreamExt;
use gannet_core::{Registry, RegistryInfo, Resolver};
use gannet_registry_consul::ConsulOptions;

#[tokio::main]
async fn main() -> gannet_core::Result<()> {
    let endpoint = std::env::var("GANNET_TEST_CONSUL")
        .unwrap_or_else(|_| gannet_registry_consul::DEFAULT_ENDPOINT.into());
    let consul = ConsulOptions::new().endpoint(endpoint);
    let registry = consul.registry();
    let resolver = Arc::new(consul.resolver());
    let mut watch = resolver.clone().watch("example".into());
    println!("before: {:?}", watch.next().await);
    let info = RegistryInfo::new("example", "127.0.0.1:9999".parse().expect("address"));
    registry.register(&info).await?;
    println!("after register: {:?}", watch.next().await);
    registry.deregister(&info).await?;
    println!("after deregister: {:?}", watch.next().await);
    Ok(())
}

//! # Gannet
//!
//! A high-performance RPC framework for Rust, shaped like CloudWeGo Kitex: a small core
//! ([`gannet-core`](gannet_core), re-exported here) and integrations picked as Cargo features.
//!
//! ```
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoRequest { #[prost(string, tag = "1")] message: String }
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoResponse { #[prost(string, tag = "1")] message: String }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> gannet::Result<()> {
//! use gannet::{Client, Server, discovery::MemoryRegistry};
//!
//! let registry = MemoryRegistry::new();
//! let server = Server::builder("echo")
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .registry(registry.clone())
//!     .handler("Echo", |req: EchoRequest| async move { Ok(EchoResponse { message: req.message }) })
//!     .start()
//!     .await?;
//! let client = Client::builder("echo").resolver(registry.resolver()).build()?;
//! let reply: EchoResponse = client.call("Echo", &EchoRequest { message: "hi".into() }).await?;
//! assert_eq!(reply.message, "hi");
//! server.shutdown().await
//! # }
//! ```
//!
//! ## Code generation
//! Services written in `.proto` files get typed clients and service traits from the
//! `gannet-build` crate, in a build script (no `protoc` needed):
//! `gannet_build::compile_protos(&["proto/greeter.proto"], &["proto"])`, then
//! `pub mod greeter { gannet::include_proto!("greeter"); }`, and
//! `Server::builder("greeter").service(GreeterServer::new(MyGreeter))` on the server. The
//! generated code names only `::gannet`. A crate that warns on missing docs puts
//! `#[allow(missing_docs)]` on that module: messages without `.proto` comments have none.
//!
//! ## Features
//! - `tower`: adapters between Gannet's `Service`/`Layer` and `tower`'s.
//! - `etcd`: [`etcd`], the etcd registry and resolver (`etcd-tls` adds TLS).
//! - `consul`: [`consul`], the Consul registry and resolver.
//! - `nacos`: [`nacos`], the Nacos registry and resolver.
//! - `opentelemetry`: [`observability`], OpenTelemetry spans and RPC metrics with OTLP export
//!   and a Prometheus exporter (`opentelemetry-http` adds OTLP over HTTP).
//! - `config-etcd`, `config-consul`, `config-nacos`, `config-file`: [`config`], governance
//!   policies kept current from etcd, Consul, Nacos or files.
//! - `full`: everything.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use gannet_core::*;

/// The etcd registry and resolver ([`gannet-registry-etcd`](gannet_registry_etcd)).
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
#[doc(inline)]
pub use gannet_registry_etcd as etcd;

/// The Consul registry and resolver ([`gannet-registry-consul`](gannet_registry_consul)).
#[cfg(feature = "consul")]
#[cfg_attr(docsrs, doc(cfg(feature = "consul")))]
#[doc(inline)]
pub use gannet_registry_consul as consul;

/// The Nacos registry and resolver ([`gannet-registry-nacos`](gannet_registry_nacos)).
#[cfg(feature = "nacos")]
#[cfg_attr(docsrs, doc(cfg(feature = "nacos")))]
#[doc(inline)]
pub use gannet_registry_nacos as nacos;

/// OpenTelemetry tracing and RPC metrics ([`gannet-observability`](gannet_observability)).
#[cfg(feature = "opentelemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "opentelemetry")))]
#[doc(inline)]
pub use gannet_observability as observability;

/// Live governance config ([`gannet-config-center`](gannet_config_center)).
#[cfg(any(
    feature = "config-etcd",
    feature = "config-consul",
    feature = "config-nacos",
    feature = "config-file"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "config-etcd",
        feature = "config-consul",
        feature = "config-nacos",
        feature = "config-file"
    )))
)]
#[doc(inline)]
pub use gannet_config_center as config;

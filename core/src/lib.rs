//! # gannet-core
//!
//! The runtime of [Gannet](https://github.com/gannet-rs/gannet), a high-performance RPC framework:
//! TTHeader framing with Protobuf payloads, multiplexed connections, a client and a server,
//! middleware, discovery with a shared cache, load balancing, and governance (timeouts, retries,
//! backup requests, circuit breakers, rate limits, degradation) whose policies change at run time.
//!
//! It also defines the extension points integrations implement: [`Resolver`], [`Registry`],
//! [`Tracer`], [`ClientSuite`] and [`ServerSuite`], each with a plain implementation beside it.
//!
//! ```
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoRequest { #[prost(string, tag = "1")] message: String }
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoResponse { #[prost(string, tag = "1")] message: String }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> gannet_core::Result<()> {
//! use gannet_core::{Client, Server, discovery::MemoryRegistry};
//!
//! let registry = MemoryRegistry::new();
//! let server = Server::builder("echo")
//!     .bind("127.0.0.1:0".parse().unwrap())
//!     .registry(registry.clone())
//!     .handler("Echo", |req: EchoRequest| async move { Ok(EchoResponse { message: req.message }) })
//!     .start()
//!     .await?;
//!
//! let client = Client::builder("echo").resolver(registry.resolver()).build()?;
//! let reply: EchoResponse = client.call("Echo", &EchoRequest { message: "hi".into() }).await?;
//! assert_eq!(reply.message, "hi");
//! server.shutdown().await
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod client;
pub mod clock;
pub mod codec;
pub mod context;
pub mod discovery;
pub mod error;
mod inline;
pub mod loadbalance;
pub mod policy;
pub mod registry;
pub mod server;
pub mod service;
pub mod suite;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;
pub mod tracer;
mod transport;
pub mod watch;

pub use client::{Client, ClientBuilder};
pub use context::{Context, Endpoint, Extensions, MetaInfo, RpcInfo};
pub use discovery::{Instance, Resolver};
pub use error::{Error, ErrorKind, Result};
pub use registry::{Registry, RegistryInfo};
pub use server::{RunningServer, Server, ServerBuilder};

/// Includes the code `gannet-build` generated for a Protobuf package, from `$OUT_DIR`: in a
/// crate whose build script ran `gannet_build::compile_protos`, write
/// `pub mod greeter { gannet::include_proto!("greeter"); }` for package `greeter`.
#[macro_export]
macro_rules! include_proto {
    ($package:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $package, ".rs"));
    };
}
pub use service::{Layer, Service};
pub use suite::{ClientSuite, ServerSuite};
pub use tracer::{NoopTracer, Tracer};

/// Re-exported so handlers and generated code name the same `prost` and `bytes` as the core.
pub use bytes;
pub use prost;

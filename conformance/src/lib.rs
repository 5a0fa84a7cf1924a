//! # gannet-conformance
//!
//! Two things every Gannet integration needs in its tests, published so that adapter authors
//! outside this repository can use them too:
//!
//! - [`harness`]: real servers (etcd, Consul, Nacos, an OTLP collector, Prometheus), each
//!   started from an endpoint in an environment variable, a container, or a local binary
//!   installed by `scripts/install-test-servers`.
//! - [`registry`]: the conformance kit a `Registry` + `Resolver` adapter must pass.
//! - [`config`]: the conformance kit a config source (`gannet-config-center`'s
//!   `ConfigSource`) must pass.
//!
//! ```no_run
//! # async fn demo() {
//! use std::sync::Arc;
//! use gannet_conformance::registry::{check_all, InMemoryBackend, Subject};
//! use gannet_core::discovery::MemoryRegistry;
//!
//! let registry = MemoryRegistry::new();
//! let subject = Subject::new(
//!     Arc::new(registry.clone()),
//!     Arc::new(registry.resolver()),
//!     Arc::new(InMemoryBackend),
//! );
//! check_all(&subject).await.assert_passed();
//! # }
//! ```

pub mod config;
pub mod harness;
pub mod registry;

//! # gannet-registry-etcd
//!
//! A [`Registry`](gannet_core::Registry) and a [`Resolver`](gannet_core::Resolver) on etcd,
//! for [Gannet](https://github.com/gannet-rs/gannet).
//!
//! - Keys follow kitex-contrib's registry-etcd layout, `{prefix}/{service}/{host:port}`, with a
//!   configurable prefix (default `gannet/registry`; use `kitex/registry-etcd` to share a
//!   registry with Kitex services). Values are JSON: `{"network":"tcp","address":"…",
//!   "weight":10,"tags":{…}}`.
//! - Each registration holds a lease (TTL 60 s by default) kept alive in the background; when
//!   the lease is lost (etcd restarted, a partition outlived the TTL, someone revoked it) the
//!   registry grants a new one and registers again, and logs it.
//! - The resolver watches the service's prefix from the revision it listed at, applies events,
//!   re-lists after a compaction or a broken watch, and hands the core full snapshots.
//!
//! ```no_run
//! # async fn demo() -> gannet_core::Result<()> {
//! use gannet_registry_etcd::EtcdOptions;
//! let etcd = EtcdOptions::new().endpoint("http://127.0.0.1:2379");
//! let server = gannet_core::Server::builder("echo")
//!     .registry(etcd.registry())
//! #   .handler("Echo", |m: Ping| async move { Ok(m) })
//!     // .handler(...)
//!     .start()
//!     .await?;
//! let client = gannet_core::Client::builder("echo").resolver(etcd.resolver()).build()?;
//! # Ok(()) }
//! # #[derive(Clone, PartialEq, prost::Message)] struct Ping {}
//! ```

mod conn;
mod registry;
mod resolver;

pub use registry::EtcdRegistry;
pub use resolver::EtcdResolver;

use std::collections::HashMap;
use std::time::Duration;

use gannet_core::discovery::Instance;
use serde::{Deserialize, Serialize};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "gannet/registry";

/// Errors of the etcd adapter; they become [`gannet_core::Error`]s of kind `Registry` or
/// `Discovery` at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd answered with an error, or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// A setting or argument was invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Where etcd is and how to talk to it; builds registries and resolvers that share one
/// connection.
#[derive(Debug, Clone)]
#[must_use]
pub struct EtcdOptions {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) ttl: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) user: Option<(String, String)>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<etcd_client::TlsOptions>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: DEFAULT_PREFIX.to_string(),
            ttl: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            user: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl EtcdOptions {
    /// Options with the defaults: no endpoint yet (`http://127.0.0.1:2379` if none is given),
    /// prefix `gannet/registry`, lease TTL 60 s, connect and request timeouts 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an etcd endpoint (`http://host:port`); may be given several times.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoints.push(endpoint.into());
        self
    }

    /// The key prefix (default `gannet/registry`). Trailing slashes are ignored.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    /// The lease TTL of registrations (default 60 s; at least 2 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(2));
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request to etcd may take (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Authenticates with a user name and password.
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// Connects with TLS.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: etcd_client::TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// A registry with these options.
    #[must_use]
    pub fn registry(&self) -> EtcdRegistry {
        EtcdRegistry::new(self.clone())
    }

    /// A resolver with these options.
    #[must_use]
    pub fn resolver(&self) -> EtcdResolver {
        EtcdResolver::new(self.clone())
    }

    pub(crate) fn endpoints_or_default(&self) -> Vec<String> {
        if self.endpoints.is_empty() {
            vec!["http://127.0.0.1:2379".to_string()]
        } else {
            self.endpoints.clone()
        }
    }

    pub(crate) fn service_prefix(&self, service: &str) -> String {
        format!("{}/{service}/", self.prefix)
    }
}

/// The JSON value stored for an instance (kitex-contrib's registry-etcd shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct InstanceValue {
    #[serde(default = "tcp")]
    pub(crate) network: String,
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) weight: u32,
    #[serde(default)]
    pub(crate) tags: HashMap<String, String>,
}

fn tcp() -> String {
    "tcp".to_string()
}

impl InstanceValue {
    /// The instance, or why the value is not one.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Instance, String> {
        let v: InstanceValue = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if v.network != "tcp" {
            return Err(format!("network {:?} is not tcp", v.network));
        }
        let address = v
            .address
            .parse()
            .map_err(|e| format!("address {:?}: {e}", v.address))?;
        Ok(Instance {
            address,
            weight: v.weight,
            tags: v.tags,
        })
    }
}

pub(crate) fn check_service(service: &str) -> Result<(), Error> {
    if service.is_empty() {
        return Err(Error::Invalid("service name is empty".into()));
    }
    if service.contains('/') {
        return Err(Error::Invalid(format!(
            "service name {service:?} contains '/'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_like_kitex_writes_them() {
        let i = InstanceValue::parse(
            br#"{"network":"tcp","address":"10.0.0.1:8888","weight":20,"tags":{"zone":"a"}}"#,
        )
        .unwrap();
        assert_eq!(i.address.to_string(), "10.0.0.1:8888");
        assert_eq!(i.weight, 20);
        assert_eq!(i.tags["zone"], "a");
        assert!(InstanceValue::parse(b"not json").is_err());
        assert!(InstanceValue::parse(br#"{"address":"nowhere"}"#).is_err());
        assert!(InstanceValue::parse(br#"{"network":"unix","address":"1.2.3.4:5"}"#).is_err());
    }

    #[test]
    fn options_normalize() {
        let o = EtcdOptions::new()
            .prefix("kitex/registry-etcd/")
            .ttl(Duration::from_millis(10));
        assert_eq!(o.service_prefix("echo"), "kitex/registry-etcd/echo/");
        assert_eq!(o.ttl, Duration::from_secs(2));
        assert_eq!(o.endpoints_or_default(), ["http://127.0.0.1:2379"]);
        assert!(check_service("").is_err());
        assert!(check_service("a/b").is_err());
    }
}

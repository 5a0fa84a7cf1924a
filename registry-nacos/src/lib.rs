//! # gannet-registry-nacos
//!
//! A [`Registry`](gannet_core::Registry) and a [`Resolver`](gannet_core::Resolver) on Nacos 2.x,
//! through `nacos-sdk`'s naming client (gRPC), for
//! [Gannet](https://github.com/gannet-rs/gannet).
//!
//! - Instances follow kitex-contrib's registry-nacos layout, so Gannet and Kitex services can
//!   share a Nacos: service `{service}` in group `DEFAULT_GROUP` and cluster `DEFAULT` (both
//!   configurable), the instance's IP and port, its weight, its tags as metadata.
//! - Instances are ephemeral: they live as long as the client's connection, and `nacos-sdk`
//!   registers them again when it reconnects (Nacos restarted, a network partition healed).
//!   The registry also checks every 10 s that Nacos still lists each of its instances and
//!   registers again one that was removed behind its back, and logs it.
//! - The resolver lists healthy, enabled instances; its watch subscribes to the service (Nacos
//!   pushes every change, an empty service included: `nacos-sdk`'s push-empty protection is
//!   off) and reads the list again every 10 s in case a push was lost, handing
//!   the core a full snapshot on every change. Instances it cannot call (an IP that is not an
//!   IP address, a port out of range) are skipped and logged.
//!
//! ```no_run
//! # async fn demo() -> gannet_core::Result<()> {
//! use gannet_registry_nacos::NacosOptions;
//! // the Nacos HTTP address; nacos-sdk derives the gRPC port (HTTP + 1000)
//! let nacos = NacosOptions::new().addr("127.0.0.1:8848");
//! let server = gannet_core::Server::builder("echo")
//!     .registry(nacos.registry())
//! #   .handler("Echo", |m: Ping| async move { Ok(m) })
//!     // .handler(...)
//!     .start()
//!     .await?;
//! let client = gannet_core::Client::builder("echo").resolver(nacos.resolver()).build()?;
//! # Ok(()) }
//! # #[derive(Clone, PartialEq, prost::Message)] struct Ping {}
//! ```

mod naming;
mod registry;
mod resolver;

pub use registry::NacosRegistry;
pub use resolver::NacosResolver;

use std::time::Duration;

/// The address used when none is given: a local Nacos on its default HTTP port.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8848";
/// kitex-contrib registry-nacos's group.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// Nacos's default cluster.
pub const DEFAULT_CLUSTER: &str = "DEFAULT";

/// Errors of the Nacos adapter; they become [`gannet_core::Error`]s of kind `Registry` or
/// `Discovery` at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `nacos-sdk` reported an error (Nacos unreachable, a refused request, …).
    #[error("{what}: {source}")]
    Nacos {
        /// The request.
        what: String,
        /// Why it failed.
        #[source]
        source: nacos_sdk::api::error::Error,
    },
    /// No naming client: connecting to Nacos failed (tried again after a pause).
    #[error("{what}: {why}")]
    Connect {
        /// What was attempted.
        what: String,
        /// Why it failed.
        why: String,
    },
    /// Nacos did not answer in time.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// The request.
        what: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// A setting or argument was invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Where Nacos is and how to talk to it; builds registries and resolvers that share one
/// `nacos-sdk` naming client (one gRPC connection).
///
/// ```
/// use gannet_registry_nacos::NacosOptions;
/// let nacos = NacosOptions::new()
///     .addr("10.0.0.5:8848")
///     .namespace("prod")
///     .auth("nacos", "a-password");
/// let (registry, resolver) = (nacos.registry(), nacos.resolver());
/// # let _ = (registry, resolver);
/// ```
#[derive(Clone)]
#[must_use]
pub struct NacosOptions {
    pub(crate) addr: String,
    pub(crate) namespace: String,
    pub(crate) group: String,
    pub(crate) cluster: String,
    pub(crate) auth: Option<(String, String)>,
    pub(crate) request_timeout: Duration,
    pub(crate) check_every: Duration,
    /// The naming client the registries and resolvers built from these options share.
    pub(crate) naming: naming::Naming,
}

impl std::fmt::Debug for NacosOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs.
        f.debug_struct("NacosOptions")
            .field("addr", &self.addr)
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("cluster", &self.cluster)
            .field("user", &self.auth.as_ref().map(|(u, _)| u))
            .field("request_timeout", &self.request_timeout)
            .field("check_every", &self.check_every)
            .finish()
    }
}

impl Default for NacosOptions {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR.to_string(),
            namespace: String::new(),
            group: DEFAULT_GROUP.to_string(),
            cluster: DEFAULT_CLUSTER.to_string(),
            auth: None,
            request_timeout: Duration::from_secs(5),
            check_every: Duration::from_secs(10),
            naming: naming::Naming::default(),
        }
    }
}

impl NacosOptions {
    /// Options with the defaults: Nacos at [`DEFAULT_ADDR`], the public namespace, group
    /// [`DEFAULT_GROUP`], cluster [`DEFAULT_CLUSTER`], no login, requests (and connecting) 5 s,
    /// the registry's check every 10 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nacos's HTTP address, `host:port` (`http://` is ignored); `nacos-sdk` talks gRPC to
    /// the port 1000 above it.
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr
            .into()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        self.naming = naming::Naming::default();
        self
    }

    /// The namespace (tenant) id (default: the public namespace).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self.naming = naming::Naming::default();
        self
    }

    /// The group of the services (default [`DEFAULT_GROUP`]).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = group.into();
        self
    }

    /// The cluster instances register in, and the resolver reads (default
    /// [`DEFAULT_CLUSTER`]).
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = cluster.into();
        self
    }

    /// Logs in with `user` and `password`.
    pub fn auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Some((user.into(), password.into()));
        self.naming = naming::Naming::default();
        self
    }

    /// How long connecting or a request may take (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How often the registry checks that Nacos still lists its instances (default 10 s;
    /// at least 1 s).
    pub fn check_every(mut self, every: Duration) -> Self {
        self.check_every = every.max(Duration::from_secs(1));
        self
    }

    /// A registry with these options.
    pub fn registry(&self) -> NacosRegistry {
        NacosRegistry::new(self.clone())
    }

    /// A resolver with these options.
    pub fn resolver(&self) -> NacosResolver {
        NacosResolver::new(self.clone())
    }
}

/// A service name Nacos can hold: not empty, and without the `@@` that separates a group
/// from a service in Nacos's grouped names.
pub(crate) fn check_service(service: &str) -> Result<(), Error> {
    if service.trim().is_empty() {
        return Err(Error::Invalid("the service name is empty".into()));
    }
    if service.contains("@@") {
        return Err(Error::Invalid(format!(
            "the service name {service:?} contains \"@@\" (Nacos's group separator)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_nacos_cannot_hold_are_refused() {
        assert!(check_service("echo-v2.internal").is_ok());
        for bad in ["", "  ", "DEFAULT_GROUP@@echo"] {
            assert!(
                matches!(check_service(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_normalise_the_address_and_keep_passwords_out_of_debug() {
        let o = NacosOptions::new()
            .addr("http://10.0.0.5:8848/")
            .auth("nacos", "secret")
            .check_every(Duration::from_millis(1));
        assert_eq!(o.addr, "10.0.0.5:8848");
        assert_eq!(o.check_every, Duration::from_secs(1));
        let debug = format!("{o:?}");
        assert!(
            debug.contains("nacos") && !debug.contains("secret"),
            "{debug}"
        );
    }
}

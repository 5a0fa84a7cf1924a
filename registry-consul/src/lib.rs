//! # gannet-registry-consul
//!
//! A [`Registry`](gannet_core::Registry) and a [`Resolver`](gannet_core::Resolver) on
//! Consul's HTTP API, for [Gannet](https://github.com/gannet-rs/gannet).
//!
//! - Registrations follow kitex-contrib's registry-consul layout, so Gannet and Kitex services
//!   can share a Consul: service ID `{service}:{host}:{port}`, the instance's weight as the
//!   service's `Weights` (passing and warning), its tags as Consul tags `key:value`.
//! - Each registration carries a TTL check (10 s by default) that the registry keeps passing
//!   in the background; when the agent no longer knows the check (it restarted, someone
//!   deregistered the service, it was reaped after being critical) the registry registers the
//!   service again, and logs it. A server that dies without deregistering turns critical
//!   after the TTL (clients stop seeing it) and is removed by Consul a minute later.
//! - The resolver reads `/v1/health/service/{service}?passing=true`: only instances whose
//!   checks pass. Its watch is a loop of blocking queries that hands the core a full snapshot
//!   on every change, and starts over (with a logged error) when Consul restarts or cannot be
//!   reached. Entries it cannot use (an address that is not an IP address, a port out of
//!   range) are skipped and logged.
//!
//! ```no_run
//! # async fn demo() -> gannet_core::Result<()> {
//! use gannet_registry_consul::ConsulOptions;
//! let consul = ConsulOptions::new().endpoint("http://127.0.0.1:8500");
//! let server = gannet_core::Server::builder("echo")
//!     .registry(consul.registry())
//! #   .handler("Echo", |m: Ping| async move { Ok(m) })
//!     // .handler(...)
//!     .start()
//!     .await?;
//! let client = gannet_core::Client::builder("echo").resolver(consul.resolver()).build()?;
//! # Ok(()) }
//! # #[derive(Clone, PartialEq, prost::Message)] struct Ping {}
//! ```

mod api;
mod registry;
mod resolver;

pub use registry::ConsulRegistry;
pub use resolver::ConsulResolver;

use std::time::Duration;

/// The endpoint used when none is given: a local agent on Consul's default HTTP port.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8500";

/// Errors of the Consul adapter; they become [`gannet_core::Error`]s of kind `Registry` or
/// `Discovery` at the trait boundary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Consul could not be reached, or did not answer in time.
    #[error("{what}: {source}")]
    Http {
        /// The request.
        what: String,
        /// Why it failed.
        #[source]
        source: reqwest::Error,
    },
    /// Consul answered with an error status.
    #[error("{what}: Consul answered {status}: {body}")]
    Status {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// What Consul said.
        body: String,
    },
    /// Consul's answer was not what its API documents.
    #[error("{what}: unexpected answer: {why}")]
    Decode {
        /// The request.
        what: String,
        /// What was wrong with it.
        why: String,
    },
    /// A setting or argument was invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
}

/// Where Consul is and how to talk to it; builds registries and resolvers.
///
/// ```
/// use std::time::Duration;
/// use gannet_registry_consul::ConsulOptions;
/// let consul = ConsulOptions::new()
///     .endpoint("http://10.0.0.5:8500")
///     .token("an-acl-token")
///     .ttl(Duration::from_secs(15));
/// let (registry, resolver) = (consul.registry(), consul.resolver());
/// # let _ = (registry, resolver);
/// ```
#[derive(Clone)]
#[must_use]
pub struct ConsulOptions {
    pub(crate) endpoint: String,
    pub(crate) token: Option<String>,
    pub(crate) datacenter: Option<String>,
    pub(crate) ttl: Duration,
    pub(crate) deregister_critical_after: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) wait: Duration,
}

impl std::fmt::Debug for ConsulOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("ConsulOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("datacenter", &self.datacenter)
            .field("ttl", &self.ttl)
            .field("deregister_critical_after", &self.deregister_critical_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("wait", &self.wait)
            .finish()
    }
}

impl Default for ConsulOptions {
    fn default() -> Self {
        Self {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            token: None,
            datacenter: None,
            ttl: Duration::from_secs(10),
            deregister_critical_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            wait: Duration::from_secs(30),
        }
    }
}

impl ConsulOptions {
    /// Options with the defaults: the agent at [`DEFAULT_ENDPOINT`], no ACL token, the agent's
    /// datacenter, TTL 10 s, deregistration 60 s after turning critical, connect and request
    /// timeouts 5 s, blocking queries of 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The agent's HTTP API, `http://host:port` (default [`DEFAULT_ENDPOINT`]).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = endpoint.into().trim_end_matches('/').to_string();
        self
    }

    /// The ACL token sent with every request (`X-Consul-Token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The datacenter the resolver reads (default: the agent's own).
    pub fn datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    /// The TTL of each registration's check (default 10 s; at least 2 s). The registry marks
    /// it passing every third of it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl.max(Duration::from_secs(2));
        self
    }

    /// How long after its check turned critical Consul removes an instance (default 60 s;
    /// Consul does not go below one minute).
    pub fn deregister_critical_after(mut self, after: Duration) -> Self {
        self.deregister_critical_after = after;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a request may take (default 5 s); blocking queries get their wait on top.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one blocking query of a watch waits for a change (default 30 s; Consul caps
    /// it at 10 minutes).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait.clamp(Duration::from_secs(1), Duration::from_secs(600));
        self
    }

    /// A registry with these options.
    pub fn registry(&self) -> ConsulRegistry {
        ConsulRegistry::new(self.clone())
    }

    /// A resolver with these options.
    pub fn resolver(&self) -> ConsulResolver {
        ConsulResolver::new(self.clone())
    }
}

/// A service name Consul can hold and a URL path can carry as it is.
pub(crate) fn check_service(service: &str) -> Result<(), Error> {
    if service.is_empty() {
        return Err(Error::Invalid("the service name is empty".into()));
    }
    if let Some(c) = service
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || "/?#%&".contains(*c))
    {
        return Err(Error::Invalid(format!(
            "the service name {service:?} contains {c:?}"
        )));
    }
    Ok(())
}

/// kitex-contrib's tag layout: `key:value`.
pub(crate) const TAG_SEPARATOR: char = ':';

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_that_a_url_cannot_carry_are_refused() {
        assert!(check_service("echo-v2.internal").is_ok());
        for bad in ["", "a/b", "a b", "a?b", "a%2F", "a#b", "a\nb"] {
            assert!(
                matches!(check_service(bad), Err(Error::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn options_keep_values_in_range_and_tokens_out_of_debug() {
        let o = ConsulOptions::new()
            .endpoint("http://c:8500/")
            .token("secret")
            .ttl(Duration::from_millis(10))
            .wait(Duration::from_secs(3600));
        assert_eq!(o.endpoint, "http://c:8500");
        assert_eq!(o.ttl, Duration::from_secs(2));
        assert_eq!(o.wait, Duration::from_secs(600));
        assert!(!format!("{o:?}").contains("secret"));
    }
}

//! Service discovery: [`Instance`], the [`Resolver`] extension trait, the shared
//! [`DiscoveryCache`], and the plain [`StaticResolver`].
//!
//! Resolvers only produce **full snapshots** of a target's instances; the cache computes the
//! [`Change`]s, shares one watch per target between clients, keeps the last good snapshot when a
//! resolver fails, and stops watching targets no client uses any more.

mod cache;
mod memory;

pub use cache::{Discovered, DiscoveryCache};
pub use memory::{MemoryRegistry, MemoryResolver};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};

use crate::context::Endpoint;
use crate::error::Result;

/// The default instance weight.
pub const DEFAULT_WEIGHT: u32 = 10;

/// One callable instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Where to connect.
    pub address: SocketAddr,
    /// Relative share of traffic for weighted balancers; 0 takes no traffic.
    pub weight: u32,
    /// Free-form tags (zone, version, …).
    pub tags: HashMap<String, String>,
}

impl Instance {
    /// An instance at `address` with the default weight and no tags.
    #[must_use]
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            weight: DEFAULT_WEIGHT,
            tags: HashMap::new(),
        }
    }

    /// Sets the weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// What changed between two snapshots of a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    /// The target (cache key) that changed.
    pub target: String,
    /// Instances that appeared.
    pub added: Vec<Instance>,
    /// Instances whose weight or tags changed (new values).
    pub updated: Vec<Instance>,
    /// Instances that disappeared.
    pub removed: Vec<Instance>,
}

impl Change {
    /// Whether nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    /// The change from `old` to `new` (both sorted by address, as the cache keeps them).
    #[must_use]
    pub fn between(target: &str, old: &[Instance], new: &[Instance]) -> Self {
        let mut change = Self {
            target: target.to_string(),
            ..Self::default()
        };
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            match (old.get(i), new.get(j)) {
                (Some(a), Some(b)) if a.address == b.address => {
                    if a != b {
                        change.updated.push(b.clone());
                    }
                    i += 1;
                    j += 1;
                }
                (Some(a), Some(b)) if a.address < b.address => {
                    change.removed.push(a.clone());
                    i += 1;
                }
                (Some(_), Some(b)) | (None, Some(b)) => {
                    change.added.push(b.clone());
                    j += 1;
                }
                (Some(a), None) => {
                    change.removed.push(a.clone());
                    i += 1;
                }
                (None, None) => break,
            }
        }
        change
    }
}

/// The instances of one target at one moment, as the load balancer sees them.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every change; load balancers rebuild their state when it moves.
    pub version: u64,
    /// The instances, sorted by address, one per address.
    pub instances: Arc<[Instance]>,
}

/// Finds the instances of a service. Object-safe: clients hold `Arc<dyn Resolver>`.
///
/// Implement [`resolve`](Resolver::resolve); implement [`watch`](Resolver::watch) too when the
/// backing server can push changes (the default polls `resolve`).
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The name of the backend this resolver reads, part of the cache key: the
    /// [`DiscoveryCache`] shares one watch between resolvers of equal name and target, so a
    /// name must tell backends apart (include the endpoints, e.g. `etcd:http://10.0.0.1:2379`).
    fn name(&self) -> &str;

    /// The cache key of the callee `endpoint`; by default its service name.
    fn target(&self, endpoint: &Endpoint) -> String {
        endpoint.service.to_string()
    }

    /// The current instances of `target`.
    async fn resolve(&self, target: &str) -> Result<Vec<Instance>>;

    /// How often the default [`watch`](Resolver::watch) polls.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// Full snapshots of `target` as it changes; the first item is the current state.
    ///
    /// The default polls [`resolve`](Resolver::resolve) every
    /// [`poll_interval`](Resolver::poll_interval). Errors are items, not the end of the stream;
    /// the cache keeps the last good snapshot meanwhile.
    fn watch(self: Arc<Self>, target: String) -> BoxStream<'static, Result<Vec<Instance>>> {
        let interval = self.poll_interval();
        stream::unfold((self, target, true), move |(r, t, first)| async move {
            if !first {
                tokio::time::sleep(interval).await;
            }
            let item = r.resolve(&t).await;
            Some((item, (r, t, false)))
        })
        .boxed()
    }
}

/// Where a watch task sends snapshots (see [`spawn_watch`]).
pub type WatchSender = tokio::sync::mpsc::Sender<Result<Vec<Instance>>>;

/// Spawns `task` with a [`WatchSender`] and returns the stream of what it sends: the plumbing
/// of a [`Resolver::watch`] that follows a server's pushes. The task should end once the
/// stream is dropped (`tx.closed()` resolves, or a send fails).
///
/// ```
/// use std::sync::Arc;
/// use futures::stream::BoxStream;
/// use gannet_core::discovery::{Instance, Resolver, spawn_watch};
///
/// struct Pushed;
/// #[async_trait::async_trait]
/// impl Resolver for Pushed {
///     fn name(&self) -> &str { "pushed" }
///     async fn resolve(&self, _target: &str) -> gannet_core::Result<Vec<Instance>> {
///         Ok(Vec::new())
///     }
///     fn watch(self: Arc<Self>, target: String) -> BoxStream<'static, gannet_core::Result<Vec<Instance>>> {
///         spawn_watch(|tx| async move {
///             // follow the server's pushes for `target`, sending each snapshot, until
///             // `tx.send(..)` fails or `tx.closed()` resolves
///             let _ = tx.send(self.resolve(&target).await).await;
///         })
///     }
/// }
/// ```
pub fn spawn_watch<F, Fut>(task: F) -> BoxStream<'static, Result<Vec<Instance>>>
where
    F: FnOnce(WatchSender) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    crate::watch::spawn_stream(4, task)
}

/// A fixed list of instances, for tests and for services with known addresses.
///
/// ```
/// use gannet_core::discovery::{Instance, StaticResolver};
/// let r = StaticResolver::new(vec![Instance::new("127.0.0.1:8888".parse().unwrap())]);
/// # let _ = r;
/// ```
#[derive(Debug, Clone)]
pub struct StaticResolver {
    instances: Vec<Instance>,
}

impl StaticResolver {
    /// Resolves every target to `instances`.
    #[must_use]
    pub fn new(instances: Vec<Instance>) -> Self {
        Self { instances }
    }

    /// Resolves every target to these addresses with the default weight.
    #[must_use]
    pub fn from_addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self::new(addrs.into_iter().map(Instance::new).collect())
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    fn name(&self) -> &str {
        "static"
    }

    fn target(&self, _endpoint: &Endpoint) -> String {
        // The same list is the same target, whatever the service.
        let mut key = String::new();
        for i in &self.instances {
            use std::fmt::Write;
            let _ = write!(key, "{}/{};", i.address, i.weight);
        }
        key
    }

    async fn resolve(&self, _target: &str) -> Result<Vec<Instance>> {
        Ok(self.instances.clone())
    }

    fn watch(self: Arc<Self>, _target: String) -> BoxStream<'static, Result<Vec<Instance>>> {
        stream::once(async move { Ok(self.instances.clone()) })
            .chain(stream::pending())
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(port: u16, weight: u32) -> Instance {
        Instance::new(SocketAddr::from(([127, 0, 0, 1], port))).with_weight(weight)
    }

    #[test]
    fn change_between_snapshots() {
        let old = vec![inst(1, 10), inst(2, 10), inst(3, 10)];
        let new = vec![inst(2, 20), inst(3, 10), inst(4, 10)];
        let c = Change::between("svc", &old, &new);
        assert_eq!(c.added, vec![inst(4, 10)]);
        assert_eq!(c.updated, vec![inst(2, 20)]);
        assert_eq!(c.removed, vec![inst(1, 10)]);
        assert!(Change::between("svc", &new, &new).is_empty());
        assert_eq!(Change::between("svc", &[], &new).added.len(), 3);
        assert_eq!(Change::between("svc", &new, &[]).removed.len(), 3);
    }
}

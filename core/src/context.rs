//! The per-call [`Context`]: who calls whom ([`RpcInfo`]), what travels with the call
//! ([`MetaInfo`]) and typed slots for middleware ([`Extensions`]).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use faststr::FastStr;

use crate::clock::Timestamp;
use crate::error::Error;

/// One side of a call: a service name, and where known its address and tags.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// The service name, as registered in discovery.
    pub service: FastStr,
    /// The network address, once known (the picked instance on the client; the peer on the server).
    pub address: Option<SocketAddr>,
    /// Tags of the endpoint (for example the instance tags of the picked instance).
    pub tags: Option<Arc<HashMap<String, String>>>,
}

impl Endpoint {
    /// An endpoint for `service` with no address yet.
    pub fn new(service: impl Into<FastStr>) -> Self {
        Self {
            service: service.into(),
            address: None,
            tags: None,
        }
    }
}

/// Per-call configuration, filled from the client's policies and the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallConfig {
    /// The timeout of one attempt of the call; `None` means no timeout.
    pub rpc_timeout: Option<Duration>,
    /// The timeout of establishing a connection.
    pub connect_timeout: Option<Duration>,
}

/// What happened during the call; read by tracers in [`Tracer::finish`](crate::Tracer::finish).
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    /// When the call started (set when the client or server has tracers).
    pub start: Option<Timestamp>,
    /// When the call finished (set when the client or server has tracers).
    pub end: Option<Timestamp>,
    /// Size in bytes of the encoded request payload.
    pub request_size: usize,
    /// Size in bytes of the encoded response payload.
    pub response_size: usize,
    /// How many attempts were sent (1 without retries).
    pub attempts: u32,
    /// The error the call ended with, if any.
    pub error: Option<Error>,
}

impl CallStats {
    /// The call's duration, once finished.
    #[must_use]
    #[inline]
    pub fn duration(&self) -> Option<Duration> {
        Some(self.end?.saturating_duration_since(self.start?))
    }
}

/// Who calls whom, which method, with which settings, and what happened.
#[derive(Debug, Clone, Default)]
pub struct RpcInfo {
    /// The calling side.
    pub caller: Endpoint,
    /// The called side.
    pub callee: Endpoint,
    /// The method name.
    pub method: FastStr,
    /// Per-call settings.
    pub config: CallConfig,
    /// Statistics, filled as the call proceeds.
    pub stats: CallStats,
    /// The key the consistent-hash load balancer routes on, if the caller set one.
    pub hash_key: Option<u64>,
}

/// The key prefix of persistent metainfo on the wire (shared with Kitex).
pub const PERSISTENT_PREFIX: &str = "RPC_PERSIST_";
/// The key prefix of transient metainfo on the wire (shared with Kitex).
pub const TRANSIENT_PREFIX: &str = "RPC_TRANSIT_";

/// String key/values that travel with a call in the frame header.
///
/// - **persistent** pairs travel to the next hop and onward through every later hop;
/// - **transient** pairs travel one hop only: the server sees them as [`MetaInfo::upstream`]
///   values and does not forward them.
///
/// Inside a server handler, [`MetaInfo::current`] returns the incoming metainfo, and any call a
/// handler makes forwards the incoming persistent pairs automatically.
///
/// ```
/// use gannet_core::MetaInfo;
/// let mut meta = MetaInfo::default();
/// meta.set_persistent("tenant", "acme");
/// meta.set_transient("debug", "1");
/// assert_eq!(meta.get_persistent("tenant"), Some("acme"));
/// assert_eq!(meta.get_transient("debug"), Some("1"));
/// ```
#[derive(Clone, Default)]
pub struct MetaInfo {
    // One list for the three kinds: a call usually carries no pair at all, and one empty
    // `Vec` costs a call's create-and-drop a third of what three did.
    pairs: Vec<(Kind, String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Persistent,
    Transient,
    Upstream,
}

impl MetaInfo {
    fn set(&mut self, kind: Kind, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self
            .pairs
            .iter_mut()
            .find(|(kd, k, _)| *kd == kind && *k == key)
        {
            Some(slot) => slot.2 = value,
            None => self.pairs.push((kind, key, value)),
        }
    }

    fn get(&self, kind: Kind, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(kd, k, _)| *kd == kind && k == key)
            .map(|(_, _, v)| v.as_str())
    }

    fn pairs_of(&self, kind: Kind) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .filter(move |(kd, _, _)| *kd == kind)
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
    }
}

/// Equal when each kind holds the same pairs in the same order.
impl PartialEq for MetaInfo {
    fn eq(&self, other: &Self) -> bool {
        [Kind::Persistent, Kind::Transient, Kind::Upstream]
            .into_iter()
            .all(|kind| self.pairs_of(kind).eq(other.pairs_of(kind)))
    }
}

impl Eq for MetaInfo {}

impl fmt::Debug for MetaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |kind| self.pairs_of(kind).collect::<Vec<_>>();
        f.debug_struct("MetaInfo")
            .field("persistent", &list(Kind::Persistent))
            .field("transient", &list(Kind::Transient))
            .field("upstream", &list(Kind::Upstream))
            .finish()
    }
}

tokio::task_local! {
    static CURRENT: MetaInfo;
}

impl MetaInfo {
    /// Sets a pair that travels through every later hop.
    pub fn set_persistent(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.set(Kind::Persistent, key, value);
    }

    /// Sets a pair that travels to the next hop only.
    pub fn set_transient(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.set(Kind::Transient, key, value);
    }

    /// A persistent value.
    #[must_use]
    pub fn get_persistent(&self, key: &str) -> Option<&str> {
        self.get(Kind::Persistent, key)
    }

    /// A transient value set on this side.
    #[must_use]
    pub fn get_transient(&self, key: &str) -> Option<&str> {
        self.get(Kind::Transient, key)
    }

    /// A transient value the previous hop sent (server side).
    #[must_use]
    pub fn upstream(&self, key: &str) -> Option<&str> {
        self.get(Kind::Upstream, key)
    }

    /// Removes a persistent pair, returning its value.
    pub fn remove_persistent(&mut self, key: &str) -> Option<String> {
        let i = self
            .pairs
            .iter()
            .position(|(kd, k, _)| *kd == Kind::Persistent && k == key)?;
        Some(self.pairs.remove(i).2)
    }

    /// All persistent pairs.
    pub fn persistent(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs_of(Kind::Persistent)
    }

    /// All transient pairs set on this side.
    pub fn transient(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs_of(Kind::Transient)
    }

    /// All transient pairs the previous hop sent (server side).
    pub fn upstream_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs_of(Kind::Upstream)
    }

    /// Whether no pair at all is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The metainfo of the server call the current task is handling, if any.
    ///
    /// Handlers use this to read what the caller sent.
    #[must_use]
    pub fn current() -> Option<MetaInfo> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `f` with `meta` as the current server call's metainfo, lent rather than copied:
    /// it moves into the task-local for the run and back into `meta` when `f` finishes, so
    /// middleware on the way out sees it unchanged. (Cloning it cost every request three
    /// `Vec` clones and drops, empty or not.) If this future is dropped before `f` finishes,
    /// `meta` stays empty.
    pub(crate) async fn scope_lent<F: Future>(meta: &mut MetaInfo, f: F) -> F::Output {
        let mut fut = std::pin::pin!(CURRENT.scope(std::mem::take(meta), f));
        let out = fut.as_mut().await;
        if let Some(m) = fut.take_value() {
            *meta = m;
        }
        out
    }

    /// Copies the persistent pairs of the server call being handled (if any) into `self`,
    /// without overriding pairs already set.
    pub(crate) fn inherit_current(&mut self) {
        let _ = CURRENT.try_with(|current| {
            for (k, v) in current.pairs_of(Kind::Persistent) {
                if self.get(Kind::Persistent, k).is_none() {
                    self.pairs
                        .push((Kind::Persistent, k.to_owned(), v.to_owned()));
                }
            }
        });
    }

    /// Whether the server call being handled carries the upstream transient `key`.
    pub(crate) fn current_upstream_has(key: &str) -> bool {
        CURRENT
            .try_with(|current| current.upstream(key).is_some())
            .unwrap_or(false)
    }

    /// Takes one received wire pair (server side): prefixed keys become persistent or upstream
    /// values; other keys are ignored by metainfo.
    pub(crate) fn accept_wire(&mut self, key: &str, value: &str) {
        if let Some(k) = key.strip_prefix(PERSISTENT_PREFIX) {
            self.set(Kind::Persistent, k, value);
        } else if let Some(k) = key.strip_prefix(TRANSIENT_PREFIX) {
            self.set(Kind::Upstream, k, value);
        }
    }
}

/// Typed slots on a [`Context`], for middleware to pass values along the chain.
///
/// ```
/// let mut ext = gannet_core::Extensions::default();
/// ext.insert(42u32);
/// assert_eq!(ext.get::<u32>(), Some(&42));
/// ```
#[derive(Default)]
pub struct Extensions {
    // A call carries a handful of slots at most: a vector scanned by `TypeId` beats hashing.
    slots: Vec<(TypeId, Box<dyn Any + Send + Sync>)>,
}

impl Extensions {
    fn position<T: 'static>(&self) -> Option<usize> {
        let id = TypeId::of::<T>();
        self.slots.iter().position(|(t, _)| *t == id)
    }

    /// Stores a value, returning the previous value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<T> {
        match self.position::<T>() {
            Some(i) => {
                let old = std::mem::replace(&mut self.slots[i].1, Box::new(value));
                old.downcast().ok().map(|b| *b)
            }
            None => {
                self.slots.push((TypeId::of::<T>(), Box::new(value)));
                None
            }
        }
    }

    /// The value of type `T`, if any.
    #[must_use]
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.slots[self.position::<T>()?].1.downcast_ref()
    }

    /// The value of type `T`, mutably.
    pub fn get_mut<T: Send + Sync + 'static>(&mut self) -> Option<&mut T> {
        let i = self.position::<T>()?;
        self.slots[i].1.downcast_mut()
    }

    /// Removes and returns the value of type `T`.
    pub fn remove<T: Send + Sync + 'static>(&mut self) -> Option<T> {
        let i = self.position::<T>()?;
        self.slots.swap_remove(i).1.downcast().ok().map(|b| *b)
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.slots.len())
            .finish()
    }
}

/// The state of one call, passed as `&mut` down the middleware chain.
#[derive(Debug, Default)]
pub struct Context {
    /// Who calls whom, the method, settings and statistics.
    pub rpc_info: RpcInfo,
    /// Key/values that travel in the frame header.
    pub meta: MetaInfo,
    /// Typed slots for middleware.
    pub extensions: Extensions,
    /// Instances already tried by earlier attempts of this call (retry avoids them).
    pub(crate) tried: Vec<SocketAddr>,
}

impl Context {
    /// A context for calling `method` of `callee` from `caller`.
    pub fn new(
        caller: impl Into<FastStr>,
        callee: impl Into<FastStr>,
        method: impl Into<FastStr>,
    ) -> Self {
        Self::with_meta(caller, callee, method, MetaInfo::default())
    }

    /// [`new`](Context::new) with metainfo; built as one value, so that it is written straight
    /// into the caller's place (a context built and then changed is copied out, 400 bytes).
    pub(crate) fn with_meta(
        caller: impl Into<FastStr>,
        callee: impl Into<FastStr>,
        method: impl Into<FastStr>,
        meta: MetaInfo,
    ) -> Self {
        // Every field spelled out: `..Default::default()` would build the defaults of the fields
        // given here too, and drop them, on every call.
        Self {
            rpc_info: RpcInfo {
                caller: Endpoint::new(caller),
                callee: Endpoint::new(callee),
                method: method.into(),
                config: CallConfig::default(),
                stats: CallStats::default(),
                hash_key: None,
            },
            meta,
            extensions: Extensions::default(),
            tried: Vec::new(),
        }
    }

    /// The method name.
    #[must_use]
    pub fn method(&self) -> &str {
        &self.rpc_info.method
    }

    /// Addresses tried by earlier attempts of this call.
    #[must_use]
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_keys_split_into_persistent_and_upstream() {
        let mut meta = MetaInfo::default();
        meta.accept_wire("RPC_PERSIST_tenant", "acme");
        meta.accept_wire("RPC_TRANSIT_debug", "1");
        meta.accept_wire("other", "x");
        assert_eq!(meta.get_persistent("tenant"), Some("acme"));
        assert_eq!(meta.upstream("debug"), Some("1"));
        assert_eq!(meta.get_transient("debug"), None);
        assert_eq!(meta.persistent().count(), 1);
    }

    #[test]
    fn metainfo_kinds_stay_apart_whatever_the_order_of_setting() {
        let mut a = MetaInfo::default();
        a.set_persistent("k", "p");
        a.set_transient("k", "t");
        a.accept_wire("RPC_TRANSIT_k", "u");
        let mut b = MetaInfo::default();
        b.accept_wire("RPC_TRANSIT_k", "u");
        b.set_transient("k", "t");
        b.set_persistent("k", "p");
        assert_eq!(a, b, "equal per kind, whatever the interleaving");
        assert_eq!(a.get_persistent("k"), Some("p"));
        assert_eq!(a.get_transient("k"), Some("t"));
        assert_eq!(a.upstream("k"), Some("u"));
        a.set_persistent("k", "p2");
        assert_eq!(a.persistent().collect::<Vec<_>>(), [("k", "p2")]);
        assert_ne!(a, b);
        assert_eq!(a.remove_persistent("k").as_deref(), Some("p2"));
        assert_eq!(a.get_persistent("k"), None);
        assert_eq!(a.get_transient("k"), Some("t"), "other kinds keep the key");
        assert!(!a.is_empty());
    }

    #[test]
    fn extensions_replace_and_remove() {
        let mut ext = Extensions::default();
        assert_eq!(ext.insert("a".to_string()), None);
        assert_eq!(ext.insert("b".to_string()), Some("a".to_string()));
        *ext.get_mut::<String>().unwrap() += "c";
        assert_eq!(ext.remove::<String>().as_deref(), Some("bc"));
        assert!(ext.get::<String>().is_none());
    }

    #[tokio::test]
    async fn a_lent_scope_shows_the_metainfo_and_gives_it_back() {
        let mut meta = MetaInfo::default();
        meta.accept_wire("RPC_PERSIST_tenant", "acme");
        meta.accept_wire("RPC_TRANSIT_debug", "1");
        let expected = meta.clone();
        let seen = MetaInfo::scope_lent(&mut meta, async { MetaInfo::current() }).await;
        assert_eq!(seen.as_ref(), Some(&expected));
        assert_eq!(meta, expected, "the metainfo comes back after the run");
        assert_eq!(MetaInfo::current(), None, "and is current only inside it");
    }

    #[tokio::test]
    async fn inherit_current_keeps_local_values() {
        let mut incoming = MetaInfo::default();
        incoming.accept_wire("RPC_PERSIST_a", "1");
        incoming.accept_wire("RPC_PERSIST_b", "2");
        let out = MetaInfo::scope_lent(&mut incoming, async {
            let mut m = MetaInfo::default();
            m.set_persistent("b", "local");
            m.inherit_current();
            m
        })
        .await;
        assert_eq!(out.get_persistent("a"), Some("1"));
        assert_eq!(out.get_persistent("b"), Some("local"));
    }
}

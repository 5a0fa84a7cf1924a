//! The transport: batched frame writing, multiplexed client connections and their pool.
//!
//! Each connection has one writer task. Callers encode their frame straight into the
//! connection's pending buffer (a short per-connection lock held only for the copy; a large
//! payload is queued by reference instead of copied) and wake the writer, which swaps the buffer
//! out and writes every queued frame with one (vectored) syscall. Replies are matched to callers
//! by sequence id through a sharded map.

pub(crate) mod conn;
pub(crate) mod pool;
pub(crate) mod queue;

pub(crate) use conn::Connection;
pub(crate) use pool::Pool;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The hasher of internal maps on the call path (seeded per process).
pub(crate) type FastHash = foldhash::fast::RandomState;

/// A map read without locks (one atomic load) and written by copy-on-write; for read-mostly
/// keyed state on the call path (connection pools, breakers).
pub(crate) struct CowMap<K, V> {
    map: ArcSwap<HashMap<K, Arc<V>, FastHash>>,
}

impl<K: Eq + Hash + Clone, V> Default for CowMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone, V> CowMap<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            map: ArcSwap::from_pointee(HashMap::default()),
        }
    }

    /// Runs `f` with the value of `key`, if any, borrowed from the current map (no reference
    /// count is updated).
    pub(crate) fn with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.load().get(key).map(|v| f(v))
    }

    pub(crate) fn get_or_insert_with<Q>(&self, key: &Q, make: impl Fn() -> V) -> Arc<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.map.load().get(key) {
            return v.clone();
        }
        let fresh = Arc::new(make());
        let mut out = None;
        self.map.rcu(|m| {
            if let Some(v) = m.get(key) {
                out = Some(v.clone());
                return Arc::clone(m);
            }
            let mut m = HashMap::clone(m);
            m.insert(key.to_owned(), fresh.clone());
            out = Some(fresh.clone());
            Arc::new(m)
        });
        out.unwrap_or(fresh)
    }

    /// Replaces the value of `key`, if there is one, with what `update` makes of it.
    pub(crate) fn update<Q>(&self, key: &Q, update: impl Fn(&V) -> V)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.rcu(|m| {
            let Some((k, v)) = m.get_key_value(key) else {
                return Arc::clone(m);
            };
            let mut m = HashMap::clone(m);
            m.insert(k.clone(), Arc::new(update(v)));
            Arc::new(m)
        });
    }

    pub(crate) fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.map.rcu(|m| {
            if m.keys().all(&keep) {
                return Arc::clone(m);
            }
            Arc::new(
                m.iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        });
    }

    pub(crate) fn values(&self) -> Vec<Arc<V>> {
        self.map.load().values().cloned().collect()
    }
}

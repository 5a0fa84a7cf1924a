//! Read-mostly caches of values derived from per-call strings (metric handles, span starts).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// Keys are hashes already: the map uses them as they are.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type ByHash<V> = HashMap<u64, Vec<Arc<V>>, BuildHasherDefault<Prehashed>>;

/// The most entries a cache keeps.
pub(crate) const LIMIT: usize = 4096;

/// A map from a key's hash to values built from it, with the full key compared on lookup, so a
/// lookup hashes borrowed strings and allocates nothing. Bounded: past [`LIMIT`] entries,
/// values are built per call and not kept (a peer could otherwise grow it with made-up names).
pub(crate) struct Cache<V> {
    hasher: foldhash::fast::RandomState,
    /// Read with one atomic load; replaced whole (copy on write) when a key is added.
    map: ArcSwap<ByHash<V>>,
    /// Serializes writers and counts the entries.
    len: Mutex<usize>,
}

impl<V> Default for Cache<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Cache<V> {
    pub(crate) fn new() -> Self {
        Self {
            hasher: foldhash::fast::RandomState::default(),
            map: ArcSwap::from_pointee(ByHash::default()),
            len: Mutex::new(0),
        }
    }

    pub(crate) fn get_or_insert(
        &self,
        key: impl Hash,
        matches: impl Fn(&V) -> bool,
        make: impl FnOnce() -> V,
    ) -> Arc<V> {
        let h = self.hasher.hash_one(key);
        let find = |map: &ByHash<V>| {
            map.get(&h)
                .and_then(|b| b.iter().find(|v| matches(v)))
                .cloned()
        };
        if let Some(v) = find(&self.map.load()) {
            return v;
        }
        let mut len = self.len.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.map.load_full();
        if let Some(v) = find(&current) {
            return v;
        }
        let v = Arc::new(make());
        if *len < LIMIT {
            *len += 1;
            let mut next = ByHash::clone(&current);
            next.entry(h).or_default().push(v.clone());
            self.map.store(Arc::new(next));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_full_key_and_stops_growing_at_the_limit() {
        let c: Cache<(String, u32)> = Cache::new();
        let a = c.get_or_insert("a", |v| v.0 == "a", || ("a".into(), 1));
        let again = c.get_or_insert("a", |v| v.0 == "a", || ("a".into(), 2));
        assert!(Arc::ptr_eq(&a, &again), "built once");
        for i in 0..LIMIT + 10 {
            let k = format!("k{i}");
            c.get_or_insert(&k, |v| v.0 == k, || (k.clone(), 0));
        }
        assert_eq!(*c.len.lock().unwrap(), LIMIT);
        assert_eq!(c.map.load().values().map(Vec::len).sum::<usize>(), LIMIT);
        // Past the limit a value is still returned, built fresh each time.
        let x = c.get_or_insert("new", |v| v.0 == "new", || ("new".into(), 3));
        let y = c.get_or_insert("new", |v| v.0 == "new", || ("new".into(), 3));
        assert!(!Arc::ptr_eq(&x, &y));
    }
}

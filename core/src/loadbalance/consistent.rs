use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{LoadBalancer, PerSnapshot, first_allowed};
use crate::context::Context;
use crate::discovery::{DEFAULT_WEIGHT, Instance, Snapshot};

type KeyFn = dyn Fn(&Context) -> Option<u64> + Send + Sync;

/// Consistent hashing on a key taken from the call's [`Context`]: calls with one key go to one
/// instance while it lives, and a change of instances moves only the keys it must.
///
/// The key defaults to [`RpcInfo::hash_key`](crate::context::RpcInfo::hash_key); calls without
/// a key are spread at random.
pub struct ConsistentHash {
    key: Arc<KeyFn>,
    virtual_nodes: u32,
    ring: PerSnapshot<Vec<(u64, usize)>>,
}

impl std::fmt::Debug for ConsistentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsistentHash")
            .field("virtual_nodes", &self.virtual_nodes)
            .finish()
    }
}

impl Default for ConsistentHash {
    fn default() -> Self {
        Self::new()
    }
}

fn hash_of(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl ConsistentHash {
    /// Hashes on [`RpcInfo::hash_key`](crate::context::RpcInfo::hash_key).
    #[must_use]
    pub fn new() -> Self {
        Self::with_key(|cx| cx.rpc_info.hash_key)
    }

    /// Hashes on the key `key` returns for a call.
    ///
    /// ```
    /// use gannet_core::loadbalance::ConsistentHash;
    /// // route by a metainfo value
    /// let lb = ConsistentHash::with_key(|cx| {
    ///     cx.meta.get_persistent("user").map(|u| u.len() as u64)
    /// });
    /// # let _ = lb;
    /// ```
    #[must_use]
    pub fn with_key(key: impl Fn(&Context) -> Option<u64> + Send + Sync + 'static) -> Self {
        Self {
            key: Arc::new(key),
            virtual_nodes: 100,
            ring: PerSnapshot::new(),
        }
    }

    /// Sets the virtual nodes of an instance of the default weight (others scale with weight).
    #[must_use]
    pub fn virtual_nodes(mut self, n: u32) -> Self {
        self.virtual_nodes = n.max(1);
        self
    }

    fn build(&self, instances: &[Instance]) -> Vec<(u64, usize)> {
        let mut ring = Vec::new();
        for (idx, inst) in instances.iter().enumerate() {
            if inst.weight == 0 {
                continue;
            }
            let n = (u64::from(self.virtual_nodes) * u64::from(inst.weight)
                / u64::from(DEFAULT_WEIGHT))
            .clamp(1, 10_000);
            for v in 0..n {
                ring.push((hash_of((inst.address, v)), idx));
            }
        }
        ring.sort_unstable();
        ring
    }
}

impl LoadBalancer for ConsistentHash {
    fn name(&self) -> &'static str {
        "consistent_hash"
    }

    fn pick<'a>(
        &self,
        cx: &Context,
        snapshot: &'a Snapshot,
        exclude: &[SocketAddr],
    ) -> Option<&'a Instance> {
        self.ring.with(
            snapshot,
            |i| self.build(i),
            |ring| {
                if ring.is_empty() {
                    return None;
                }
                let start = match (self.key)(cx) {
                    Some(k) => ring.partition_point(|(h, _)| *h < hash_of(k)),
                    None => fastrand::usize(..ring.len()),
                };
                first_allowed(
                    &snapshot.instances,
                    (0..ring.len().min(256)).map(|k| ring[(start + k) % ring.len()].1),
                    exclude,
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    fn pick_port(lb: &ConsistentHash, snap: &Snapshot, key: u64) -> u16 {
        let mut cx = Context::default();
        cx.rpc_info.hash_key = Some(key);
        lb.pick(&cx, snap, &[]).unwrap().address.port()
    }

    #[test]
    fn same_key_same_instance_and_spread() {
        let lb = ConsistentHash::new();
        let snap = snapshot(&[10, 10, 10, 10]);
        let mut per = std::collections::HashMap::<u16, usize>::new();
        for key in 0..4000u64 {
            let p = pick_port(&lb, &snap, key);
            assert_eq!(p, pick_port(&lb, &snap, key));
            *per.entry(p).or_default() += 1;
        }
        assert_eq!(per.len(), 4);
        for n in per.values() {
            // each of 4 gets 1000 on average; 100 virtual nodes keep it within ±40%
            assert!((600..1400).contains(n), "{per:?}");
        }
    }

    #[test]
    fn removing_an_instance_moves_only_its_keys() {
        let lb = ConsistentHash::new();
        let before = snapshot(&[10, 10, 10, 10]);
        let mut after = snapshot(&[10, 10, 10]);
        after.version = 2;
        let mut moved = 0;
        for key in 0..2000u64 {
            let a = pick_port(&lb, &before, key);
            let b = pick_port(&ConsistentHash::new(), &after, key);
            if a != 1003 {
                assert_eq!(a, b, "key {key} moved though its instance stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
    }
}

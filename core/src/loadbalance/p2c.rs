use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::LoadBalancer;
use crate::context::Context;
use crate::discovery::{Instance, Snapshot};
use crate::transport::CowMap;

/// Power of two choices: draws two instances at random and sends the call to the one with
/// fewer calls in flight (relative to weight). Steers away from slow instances quickly.
pub struct PowerOfTwoChoices {
    inflight: CowMap<SocketAddr, AtomicUsize>,
}

impl std::fmt::Debug for PowerOfTwoChoices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PowerOfTwoChoices")
    }
}

impl Default for PowerOfTwoChoices {
    fn default() -> Self {
        Self::new()
    }
}

impl PowerOfTwoChoices {
    /// A new balancer.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inflight: CowMap::new(),
        }
    }

    /// Calls in flight to `addr` through this balancer.
    #[must_use]
    pub fn inflight(&self, addr: &SocketAddr) -> usize {
        self.inflight
            .with(addr, |c| c.load(Ordering::Relaxed))
            .unwrap_or(0)
    }
}

impl LoadBalancer for PowerOfTwoChoices {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn pick<'a>(
        &self,
        _cx: &Context,
        snapshot: &'a Snapshot,
        exclude: &[SocketAddr],
    ) -> Option<&'a Instance> {
        let candidates: smallvec::SmallVec<[&Instance; 8]>;
        let all = &snapshot.instances;
        let usable = |i: &Instance| i.weight > 0 && !exclude.contains(&i.address);
        let pool: &[&Instance] = if all.iter().all(&usable) {
            candidates = all.iter().collect();
            &candidates
        } else {
            candidates = all.iter().filter(|i| usable(i)).collect();
            if candidates.is_empty() {
                return all.iter().find(|i| i.weight > 0);
            }
            &candidates
        };
        match pool.len() {
            0 => None,
            1 => Some(pool[0]),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (pool[a], pool[b]);
                let load = |i: &Instance| self.inflight(&i.address) as u64;
                // compare inflight/weight without division
                if load(a) * u64::from(b.weight) <= load(b) * u64::from(a.weight) {
                    Some(a)
                } else {
                    Some(b)
                }
            }
        }
    }

    fn on_start(&self, addr: SocketAddr) {
        self.inflight
            .get_or_insert_with(&addr, || AtomicUsize::new(0))
            .fetch_add(1, Ordering::Relaxed);
    }

    fn on_finish(&self, addr: SocketAddr) {
        self.inflight.with(&addr, |c| {
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        });
    }

    fn rebalance(&self, change: &crate::discovery::Change) {
        if !change.removed.is_empty() {
            self.inflight
                .retain(|a| !change.removed.iter().any(|r| r.address == *a));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn prefers_the_less_loaded_instance() {
        let lb = PowerOfTwoChoices::new();
        let snap = snapshot(&[10, 10]);
        let busy = snap.instances[0].address;
        for _ in 0..5 {
            lb.on_start(busy);
        }
        let c = counts(&lb, &snap, 200);
        assert_eq!(c.get(&1001), Some(&200), "{c:?}");
        for _ in 0..5 {
            lb.on_finish(busy);
        }
        assert_eq!(lb.inflight(&busy), 0);
        let c = counts(&lb, &snap, 400);
        assert!(
            c.get(&1000).copied().unwrap_or(0) > 0,
            "idle again, gets traffic: {c:?}"
        );
    }
}

//! Load balancing: the [`LoadBalancer`] extension trait and four balancers —
//! [`WeightedRoundRobin`] (the default), [`WeightedRandom`], [`ConsistentHash`] and
//! [`PowerOfTwoChoices`].
//!
//! Balancers keep per-snapshot state (schedules, rings) that they rebuild when the snapshot's
//! version moves, swapping it in atomically: callers never wait on a rebuild.

mod consistent;
mod p2c;
mod random;
mod wrr;

pub use consistent::ConsistentHash;
pub use p2c::PowerOfTwoChoices;
pub use random::WeightedRandom;
pub use wrr::WeightedRoundRobin;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwapOption;

use crate::context::Context;
use crate::discovery::{Change, Instance, Snapshot};

/// Picks the instance each call goes to.
pub trait LoadBalancer: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Picks an instance of `snapshot` for the call in `cx`, avoiding `exclude` (instances
    /// earlier attempts of the call already tried) where another instance is available.
    fn pick<'a>(
        &self,
        cx: &Context,
        snapshot: &'a Snapshot,
        exclude: &[SocketAddr],
    ) -> Option<&'a Instance>;

    /// Told about every discovery change of the target (state is also rebuilt lazily from
    /// the snapshot version, so implementing this is optional).
    fn rebalance(&self, change: &Change) {
        let _ = change;
    }

    /// A call to `addr` started.
    fn on_start(&self, addr: SocketAddr) {
        let _ = addr;
    }

    /// A call to `addr` finished.
    fn on_finish(&self, addr: SocketAddr) {
        let _ = addr;
    }
}

/// Per-snapshot state, rebuilt when the snapshot's version changes.
pub(crate) struct PerSnapshot<T> {
    cell: ArcSwapOption<(u64, T)>,
}

impl<T> Default for PerSnapshot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerSnapshot<T> {
    pub(crate) fn new() -> Self {
        Self {
            cell: ArcSwapOption::empty(),
        }
    }

    /// Runs `f` with the state of `snapshot`, building it first if the snapshot changed.
    /// Borrowed, not cloned: a clone cost every pick two reference-count updates.
    pub(crate) fn with<R>(
        &self,
        snapshot: &Snapshot,
        build: impl FnOnce(&[Instance]) -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        {
            let current = self.cell.load();
            if let Some(s) = current.as_deref() {
                if s.0 == snapshot.version {
                    return f(&s.1);
                }
            }
        }
        let fresh = Arc::new((snapshot.version, build(&snapshot.instances)));
        self.cell.store(Some(fresh.clone()));
        f(&fresh.1)
    }
}

/// Picks by walking from `start` through `candidates` (indices into `instances`) until one is
/// not excluded; falls back to the first candidate if all are.
pub(crate) fn first_allowed<'a>(
    instances: &'a [Instance],
    candidates: impl Iterator<Item = usize>,
    exclude: &[SocketAddr],
) -> Option<&'a Instance> {
    let mut fallback = None;
    for i in candidates {
        let inst = instances.get(i)?;
        if !exclude.contains(&inst.address) {
            return Some(inst);
        }
        fallback.get_or_insert(inst);
    }
    fallback
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn snapshot(weights: &[u32]) -> Snapshot {
        Snapshot {
            version: 1,
            instances: weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    Instance::new(SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)))
                        .with_weight(*w)
                })
                .collect(),
        }
    }

    pub(crate) fn counts(lb: &dyn LoadBalancer, snap: &Snapshot, n: usize) -> HashMap<u16, usize> {
        let cx = Context::default();
        let mut out = HashMap::new();
        for _ in 0..n {
            let i = lb.pick(&cx, snap, &[]).unwrap();
            *out.entry(i.address.port()).or_default() += 1;
        }
        out
    }
}

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{LoadBalancer, PerSnapshot, first_allowed};
use crate::context::Context;
use crate::discovery::{Instance, Snapshot};

/// Longest schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 8192;

/// Smooth weighted round robin (nginx's), precomputed into a schedule walked with one atomic
/// counter: lock-free picks, and an instance of weight 2 gets twice the calls of one of weight 1,
/// interleaved rather than in bursts. The default balancer.
#[derive(Default)]
pub struct WeightedRoundRobin {
    schedule: PerSnapshot<Vec<usize>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for WeightedRoundRobin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeightedRoundRobin")
    }
}

impl WeightedRoundRobin {
    /// A new balancer.
    #[must_use]
    pub fn new() -> Self {
        Self {
            schedule: PerSnapshot::new(),
            next: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

pub(crate) fn schedule(instances: &[Instance]) -> Vec<usize> {
    let mut weights: Vec<u64> = instances.iter().map(|i| u64::from(i.weight)).collect();
    let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
    if g == 0 {
        return Vec::new();
    }
    weights.iter_mut().for_each(|w| *w /= g);
    let total: u64 = weights.iter().sum();
    if total > MAX_SCHEDULE {
        weights
            .iter_mut()
            .filter(|w| **w > 0)
            .for_each(|w| *w = (*w * MAX_SCHEDULE / total).max(1));
    }
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

impl LoadBalancer for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted_round_robin"
    }

    fn pick<'a>(
        &self,
        _cx: &Context,
        snapshot: &'a Snapshot,
        exclude: &[SocketAddr],
    ) -> Option<&'a Instance> {
        // One instance: its schedule is itself (or nothing, at weight 0), and loading the
        // schedule would cost the call an atomic-swap load. As with a longer schedule, an
        // excluded instance is still picked when it is the only one.
        if let [only] = &*snapshot.instances {
            return (only.weight > 0).then_some(only);
        }
        self.schedule.with(snapshot, schedule, |sched| {
            if sched.is_empty() {
                return None;
            }
            // One entry: nothing to rotate, and no shared counter to bump.
            let start = if sched.len() == 1 {
                0
            } else {
                self.next.fetch_add(1, Ordering::Relaxed)
            };
            if exclude.is_empty() {
                return snapshot.instances.get(sched[start % sched.len()]);
            }
            let tries = sched.len().min(64);
            first_allowed(
                &snapshot.instances,
                (0..tries).map(|k| sched[(start + k) % sched.len()]),
                exclude,
            )
            .or_else(|| first_allowed(&snapshot.instances, 0..snapshot.instances.len(), exclude))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn distribution_follows_weights_exactly() {
        let snap = snapshot(&[10, 20, 30, 0]);
        let c = counts(&WeightedRoundRobin::new(), &snap, 600);
        assert_eq!(c.get(&1000), Some(&100));
        assert_eq!(c.get(&1001), Some(&200));
        assert_eq!(c.get(&1002), Some(&300));
        assert_eq!(c.get(&1003), None, "weight 0 takes no traffic");
    }

    #[test]
    fn smooth_interleaving() {
        let snap = snapshot(&[5, 1, 1]);
        assert_eq!(schedule(&snap.instances), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn excluded_instance_is_skipped() {
        let snap = snapshot(&[10, 10]);
        let lb = WeightedRoundRobin::new();
        let cx = Context::default();
        let ex = [snap.instances[0].address];
        for _ in 0..10 {
            assert_eq!(lb.pick(&cx, &snap, &ex).unwrap().address.port(), 1001);
        }
    }

    #[test]
    fn rebuilds_on_new_version_and_handles_empty() {
        let lb = WeightedRoundRobin::new();
        let cx = Context::default();
        assert!(lb.pick(&cx, &Snapshot::default(), &[]).is_none());
        let mut snap = snapshot(&[10, 0]);
        assert_eq!(lb.pick(&cx, &snap, &[]).unwrap().address.port(), 1000);
        snap = Snapshot {
            version: 2,
            ..snapshot(&[0, 10])
        };
        assert_eq!(lb.pick(&cx, &snap, &[]).unwrap().address.port(), 1001);
    }

    #[test]
    fn a_single_instance_is_picked_unless_its_weight_is_zero() {
        let lb = WeightedRoundRobin::new();
        let cx = Context::default();
        let snap = snapshot(&[10]);
        let only = snap.instances[0].address;
        assert_eq!(lb.pick(&cx, &snap, &[]).unwrap().address, only);
        // Excluded (already tried) but the only one: picked, as from a longer schedule.
        assert_eq!(lb.pick(&cx, &snap, &[only]).unwrap().address, only);
        assert!(lb.pick(&cx, &snapshot(&[0]), &[]).is_none());
    }

    #[test]
    fn huge_weights_are_scaled() {
        let snap = snapshot(&[1_000_000, 3_000_000, 7]);
        let s = schedule(&snap.instances);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 3);
        assert!(s.contains(&2), "tiny weights keep at least one slot");
    }
}

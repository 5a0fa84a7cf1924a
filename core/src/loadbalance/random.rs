use std::net::SocketAddr;

use super::{LoadBalancer, PerSnapshot, first_allowed};
use crate::context::Context;
use crate::discovery::{Instance, Snapshot};

/// Picks at random with probability proportional to weight.
#[derive(Default)]
pub struct WeightedRandom {
    // cumulative weights
    prefix: PerSnapshot<Vec<u64>>,
}

impl std::fmt::Debug for WeightedRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeightedRandom")
    }
}

impl WeightedRandom {
    /// A new balancer.
    #[must_use]
    pub fn new() -> Self {
        Self {
            prefix: PerSnapshot::new(),
        }
    }
}

impl LoadBalancer for WeightedRandom {
    fn name(&self) -> &'static str {
        "weighted_random"
    }

    fn pick<'a>(
        &self,
        _cx: &Context,
        snapshot: &'a Snapshot,
        exclude: &[SocketAddr],
    ) -> Option<&'a Instance> {
        let prefix_sums = |instances: &[Instance]| {
            instances
                .iter()
                .scan(0u64, |acc, i| {
                    *acc += u64::from(i.weight);
                    Some(*acc)
                })
                .collect()
        };
        self.prefix.with(snapshot, prefix_sums, |prefix| {
            let total = *prefix.last()?;
            if total == 0 {
                return None;
            }
            let draw = || {
                let r = fastrand::u64(..total);
                prefix.partition_point(|&c| c <= r)
            };
            if exclude.is_empty() {
                return snapshot.instances.get(draw());
            }
            first_allowed(&snapshot.instances, (0..8).map(|_| draw()), exclude)
                .filter(|i| !exclude.contains(&i.address))
                .or_else(|| {
                    first_allowed(
                        &snapshot.instances,
                        (0..snapshot.instances.len()).filter(|&i| snapshot.instances[i].weight > 0),
                        exclude,
                    )
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn distribution_follows_weights() {
        let snap = snapshot(&[10, 30, 0]);
        let n = 40_000;
        let c = counts(&WeightedRandom::new(), &snap, n);
        let share = |p| *c.get(&p).unwrap_or(&0) as f64 / n as f64;
        // expected 0.25 / 0.75 / 0; 40k draws keep the error well under 0.03
        assert!((share(1000) - 0.25).abs() < 0.03, "{c:?}");
        assert!((share(1001) - 0.75).abs() < 0.03, "{c:?}");
        assert_eq!(share(1002), 0.0);
    }

    #[test]
    fn exclusion_and_all_zero() {
        let lb = WeightedRandom::new();
        let cx = Context::default();
        let snap = snapshot(&[10, 10]);
        let ex = [snap.instances[1].address];
        for _ in 0..50 {
            assert_eq!(lb.pick(&cx, &snap, &ex).unwrap().address.port(), 1000);
        }
        assert!(
            WeightedRandom::new()
                .pick(&cx, &snapshot(&[0, 0]), &[])
                .is_none()
        );
    }
}

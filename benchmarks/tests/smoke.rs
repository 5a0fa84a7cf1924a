//! A few hundred requests through every system, so the benchmark code cannot rot.

use gannet_benchmarks::systems::System;

#[test]
fn every_system_echoes_a_few_hundred_requests() {
    for system in System::ALL {
        let r = gannet_benchmarks::smoke(system, 300).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            r.requests >= 300,
            "{}: {} requests",
            system.name(),
            r.requests
        );
        assert_eq!(r.errors, 0, "{}", system.name());
        assert!(
            r.p50_us > 0 && r.p50_us <= r.p99_us,
            "{}: percentiles",
            system.name()
        );
    }
}

//! The core's in-memory registry passes the conformance kit (the checks that stop its server
//! are skipped: it has none).

use std::sync::Arc;

use gannet_conformance::registry::{Outcome, Subject, check_all};
use gannet_core::discovery::MemoryRegistry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_registry_passes_the_kit() {
    let registry = MemoryRegistry::new();
    let subject = Subject::new(
        Arc::new(registry.clone()),
        Arc::new(registry.resolver()),
        Arc::new(gannet_conformance::registry::InMemoryBackend),
    );
    let report = check_all(&subject).await;
    report.assert_passed();
    let passed: Vec<&str> = report
        .outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Passed)
        .map(|(name, _)| *name)
        .collect();
    assert_eq!(
        passed,
        [
            "register_resolve_deregister",
            "services_stay_apart",
            "watch_pushes_changes",
            "calls_follow_servers"
        ],
        "{report:?}"
    );
    // What needs a server to stop, expire or corrupt is skipped, not passed.
    assert_eq!(report.outcomes.len(), 7);
}

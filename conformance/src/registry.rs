//! The registry conformance kit: what every `Registry` + `Resolver` adapter must do.
//!
//! Give [`check_all`] a [`Subject`]: the adapter's registry and resolver, a [`Backend`] handle
//! that can stop, restart and tamper with the server behind them, and optionally an adapter
//! configured with an unreachable endpoint. Each check returns what failed, in words.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use gannet_core::discovery::{DiscoveryCache, Instance, Resolver};
use gannet_core::{Client, Registry, RegistryInfo, Server};

/// What the kit may do to the server behind the adapter. Each method returns `Ok(false)` when
/// the backend cannot do it (for example, an in-memory registry cannot be stopped); the checks
/// that need it are then skipped and reported as such.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Stops the server (its data may stay).
    async fn stop(&self) -> Result<bool, String>;
    /// Starts it again on the same address.
    async fn start(&self) -> Result<bool, String>;
    /// Drops every client session or lease, as if they had expired.
    async fn expire_sessions(&self) -> Result<bool, String>;
    /// Writes a malformed record where the adapter reads the instances of `service`.
    async fn write_malformed(&self, service: &str) -> Result<bool, String>;
}

/// A [`Backend`] answer for something done: `Ok(true)`, or the error as text.
///
/// ```
/// # use gannet_conformance::registry::done;
/// assert_eq!(done(Ok::<(), std::io::Error>(())), Ok(true));
/// ```
///
/// # Errors
/// `r`'s error, as text.
pub fn done<E: std::fmt::Display>(r: Result<(), E>) -> Result<bool, String> {
    r.map(|()| true).map_err(|e| e.to_string())
}

/// The adapter under test.
pub struct Subject {
    /// Its registry.
    pub registry: Arc<dyn Registry>,
    /// Its resolver, reading what `registry` writes.
    pub resolver: Arc<dyn Resolver>,
    /// The server behind them.
    pub backend: Arc<dyn Backend>,
    /// The same adapter pointed at an endpoint where nothing listens, if it has one.
    pub unreachable: Option<(Arc<dyn Registry>, Arc<dyn Resolver>)>,
    /// How long a pushed change may take to arrive (default 5 s).
    pub push_within: Duration,
    /// How long re-registration after a restart or a lost session may take (default 30 s).
    pub recover_within: Duration,
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject")
            .field("resolver", &self.resolver.name())
            .finish_non_exhaustive()
    }
}

impl Subject {
    /// A subject with the default time limits.
    pub fn new(
        registry: Arc<dyn Registry>,
        resolver: Arc<dyn Resolver>,
        backend: Arc<dyn Backend>,
    ) -> Self {
        Self {
            registry,
            resolver,
            backend,
            unreachable: None,
            push_within: Duration::from_secs(5),
            recover_within: Duration::from_secs(30),
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The adapter did what it must.
    Passed,
    /// The backend cannot do what the check needs (see [`Backend`]).
    Skipped(String),
    /// The adapter did not do what it must; why.
    Failed(String),
}

/// Every check's outcome, by name.
#[derive(Debug, Default)]
pub struct Report {
    /// (check, outcome), in the order run.
    pub outcomes: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// The failed checks, with why.
    #[must_use]
    pub fn failures(&self) -> Vec<String> {
        self.outcomes
            .iter()
            .filter_map(|(name, o)| match o {
                Outcome::Failed(why) => Some(format!("{name}: {why}")),
                _ => None,
            })
            .collect()
    }

    /// Panics with every failure, if any (for tests).
    ///
    /// # Panics
    /// If a check failed.
    pub fn assert_passed(&self) {
        let failures = self.failures();
        assert!(
            failures.is_empty(),
            "conformance failures:\n  {}",
            failures.join("\n  ")
        );
    }

    /// Panics unless every check passed: none failed and none was skipped (for a backend that
    /// can do everything the kit asks, such as a real server the harness started).
    ///
    /// # Panics
    /// If a check failed or was skipped.
    pub fn assert_all_passed(&self) {
        self.assert_passed();
        let skipped: Vec<String> = self
            .outcomes
            .iter()
            .filter_map(|(name, o)| match o {
                Outcome::Skipped(why) => Some(format!("{name}: {why}")),
                _ => None,
            })
            .collect();
        assert!(
            skipped.is_empty(),
            "conformance checks skipped:\n  {}",
            skipped.join("\n  ")
        );
    }
}

type Check = Result<Outcome, String>;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A service name no other check or run uses.
fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    format!(
        "conformance-{name}-{pid}-{}",
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn info(service: &str, port: u16, weight: u32, tags: &[(&str, &str)]) -> RegistryInfo {
    RegistryInfo {
        weight,
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..RegistryInfo::new(service, addr(port))
    }
}

/// Polls `resolve` until `pred` holds for its answer or `limit` passes.
async fn resolve_until(
    r: &dyn Resolver,
    service: &str,
    limit: Duration,
    pred: impl Fn(&[Instance]) -> bool,
) -> Result<Vec<Instance>, String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match r.resolve(service).await {
            Ok(list) if pred(&list) => return Ok(list),
            Ok(list) => format!("{list:?}"),
            Err(e) => format!("error: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("after {limit:?} the resolver answers {last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ports(list: &[Instance]) -> Vec<u16> {
    let mut p: Vec<u16> = list.iter().map(|i| i.address.port()).collect();
    p.sort_unstable();
    p
}

/// Register makes the instance visible with address, weight and tags intact; deregister
/// removes it.
pub async fn register_resolve_deregister(s: &Subject) -> Check {
    let svc = unique("basic");
    let reg = info(&svc, 20001, 37, &[("zone", "z1"), ("version", "v2")]);
    s.registry
        .register(&reg)
        .await
        .map_err(|e| format!("register: {e}"))?;
    let list = resolve_until(&*s.resolver, &svc, s.push_within, |l| !l.is_empty()).await?;
    if list.len() != 1 {
        return Ok(Outcome::Failed(format!(
            "expected one instance, got {list:?}"
        )));
    }
    let i = &list[0];
    let want_tags: HashMap<String, String> = reg.tags.clone();
    if i.address != reg.address || i.weight != 37 || i.tags != want_tags {
        return Ok(Outcome::Failed(format!(
            "registered {reg:?}, resolved {i:?}"
        )));
    }
    s.registry
        .deregister(&reg)
        .await
        .map_err(|e| format!("deregister: {e}"))?;
    resolve_until(&*s.resolver, &svc, s.push_within, <[Instance]>::is_empty).await?;
    Ok(Outcome::Passed)
}

/// Two instances of one service, and two services, stay apart.
pub async fn services_stay_apart(s: &Subject) -> Check {
    let (a, b) = (unique("a"), unique("b"));
    let regs = [
        info(&a, 20011, 10, &[]),
        info(&a, 20012, 10, &[]),
        info(&b, 20013, 10, &[]),
    ];
    for r in &regs {
        s.registry
            .register(r)
            .await
            .map_err(|e| format!("register: {e}"))?;
    }
    let la = resolve_until(&*s.resolver, &a, s.push_within, |l| l.len() == 2).await?;
    let lb = resolve_until(&*s.resolver, &b, s.push_within, |l| l.len() == 1).await?;
    let ok = ports(&la) == [20011, 20012] && ports(&lb) == [20013];
    for r in &regs {
        s.registry
            .deregister(r)
            .await
            .map_err(|e| format!("deregister: {e}"))?;
    }
    Ok(if ok {
        Outcome::Passed
    } else {
        Outcome::Failed(format!("{a}: {la:?}; {b}: {lb:?}"))
    })
}

/// `watch` delivers a registration, and then the deregistration that leaves the service empty,
/// without waiting for a poll: each within `push_within`, which is shorter than the default
/// poll interval.
pub async fn watch_pushes_changes(s: &Subject) -> Check {
    let svc = unique("watch");
    let mut stream = s.resolver.clone().watch(svc.clone());
    // The first item is the current (empty) state.
    let first = tokio::time::timeout(s.push_within, stream.next()).await;
    match first {
        Ok(Some(Ok(list))) if list.is_empty() => {}
        other => return Ok(Outcome::Failed(format!("first watch item: {other:?}"))),
    }
    let reg = info(&svc, 20021, 10, &[]);
    s.registry
        .register(&reg)
        .await
        .map_err(|e| format!("register: {e}"))?;
    let deadline = tokio::time::Instant::now() + s.push_within;
    let mut seen = false;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Ok(list) = item {
            if ports(&list) == [20021] {
                seen = true;
                break;
            }
        }
    }
    if !seen {
        s.registry.deregister(&reg).await.ok();
        return Ok(Outcome::Failed(format!(
            "the watch did not deliver the registration within {:?}",
            s.push_within
        )));
    }
    // And the deregistration of the last instance: an empty service is news too.
    s.registry
        .deregister(&reg)
        .await
        .map_err(|e| format!("deregister: {e}"))?;
    let deadline = tokio::time::Instant::now() + s.push_within;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Ok(list) = item {
            if list.is_empty() {
                return Ok(Outcome::Passed);
            }
        }
    }
    Ok(Outcome::Failed(format!(
        "the watch did not deliver the deregistration of the last instance within {:?}",
        s.push_within
    )))
}

/// A registration survives a restart of the server and a lost session; the watch resumes.
pub async fn survives_restart_and_lost_sessions(s: &Subject) -> Check {
    let svc = unique("survive");
    let reg = info(&svc, 20031, 10, &[]);
    s.registry
        .register(&reg)
        .await
        .map_err(|e| format!("register: {e}"))?;
    resolve_until(&*s.resolver, &svc, s.push_within, |l| l.len() == 1).await?;
    let mut stream = s.resolver.clone().watch(svc.clone());

    if !s.backend.expire_sessions().await? {
        s.registry.deregister(&reg).await.ok();
        return Ok(Outcome::Skipped(
            "the backend cannot expire sessions".into(),
        ));
    }
    resolve_until(&*s.resolver, &svc, s.recover_within, |l| l.len() == 1)
        .await
        .map_err(|e| format!("not re-registered after the session was lost: {e}"))?;

    if !s.backend.stop().await? {
        s.registry.deregister(&reg).await.ok();
        return Ok(Outcome::Skipped("the backend cannot be stopped".into()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if !s.backend.start().await? {
        return Ok(Outcome::Failed(
            "the backend was stopped but cannot start again".into(),
        ));
    }
    resolve_until(&*s.resolver, &svc, s.recover_within, |l| l.len() == 1)
        .await
        .map_err(|e| format!("not registered after the restart: {e}"))?;

    // The watch opened before the restart still delivers changes.
    let reg2 = info(&svc, 20032, 10, &[]);
    s.registry
        .register(&reg2)
        .await
        .map_err(|e| format!("register after restart: {e}"))?;
    let deadline = tokio::time::Instant::now() + s.recover_within;
    let mut resumed = false;
    while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
        if let Ok(list) = item {
            if ports(&list) == [20031, 20032] {
                resumed = true;
                break;
            }
        }
    }
    s.registry.deregister(&reg).await.ok();
    s.registry.deregister(&reg2).await.ok();
    Ok(if resumed {
        Outcome::Passed
    } else {
        Outcome::Failed("the watch did not resume after the restart".into())
    })
}

/// The request and reply of the kit's echo service.
#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    text: String,
}

/// A Gannet client discovering through the adapter keeps calling the last good instances
/// while the registry is down.
pub async fn client_survives_registry_outage(s: &Subject) -> Check {
    let svc = unique("outage");
    let server = Server::builder(svc.clone())
        .bind(addr(0))
        .registry_arc(s.registry.clone())
        .handler("Ping", |p: Ping| async move { Ok(p) })
        .start()
        .await
        .map_err(|e| format!("server start: {e}"))?;
    let client = Client::builder(svc.clone())
        .resolver_arc(s.resolver.clone())
        .discovery_cache(DiscoveryCache::default())
        .rpc_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    resolve_until(&*s.resolver, &svc, s.push_within, |l| l.len() == 1).await?;
    let ping = Ping {
        text: "ping".into(),
    };
    let first: Result<Ping, _> = client.call("Ping", &ping).await;
    if let Err(e) = first {
        let _ = server.shutdown().await;
        return Ok(Outcome::Failed(format!("the first call failed: {e}")));
    }
    if !s.backend.stop().await? {
        let _ = server.shutdown().await;
        return Ok(Outcome::Skipped("the backend cannot be stopped".into()));
    }
    let mut failed = None;
    for i in 0..20 {
        if let Err(e) = client.call::<_, Ping>("Ping", &ping).await {
            failed = Some(format!("call {i} with the registry down: {e}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted = s.backend.start().await;
    let _ = server.shutdown().await;
    restarted?;
    Ok(match failed {
        None => Outcome::Passed,
        Some(why) => Outcome::Failed(why),
    })
}

/// Gannet clients discovering through the adapter spread calls over every registered server,
/// and stop calling one that shut down: it deregisters and keeps serving for `push_within`
/// (its exit grace), which is when the change must have reached the client.
pub async fn calls_follow_servers(s: &Subject) -> Check {
    let svc = unique("follow");
    let start = |name: &'static str, grace: Duration| {
        Server::builder(svc.clone())
            .bind(addr(0))
            .registry_arc(s.registry.clone())
            .exit_grace(grace)
            .handler("Ping", move |_: Ping| async move {
                Ok(Ping {
                    text: name.to_string(),
                })
            })
            .start()
    };
    let a = start("a", s.push_within)
        .await
        .map_err(|e| format!("server start: {e}"))?;
    let b = match start("b", Duration::ZERO).await {
        Ok(b) => b,
        Err(e) => {
            let _ = a.shutdown().await;
            return Err(format!("server start: {e}"));
        }
    };
    let outcome = follow(s, &svc, a).await;
    let _ = b.shutdown().await;
    outcome
}

/// Calls `svc` until both servers answered, shuts `a` down, and checks that `b` answers all
/// calls from then on.
async fn follow(s: &Subject, svc: &str, a: gannet_core::RunningServer) -> Check {
    let client = Client::builder(svc.to_string())
        .resolver_arc(s.resolver.clone())
        .discovery_cache(DiscoveryCache::default())
        .rpc_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let ping = Ping::default();
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + s.push_within;
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        match client.call::<_, Ping>("Ping", &ping).await {
            Ok(r) => {
                seen.insert(r.text);
            }
            Err(e) => {
                let _ = a.shutdown().await;
                return Ok(Outcome::Failed(format!("a call failed: {e}")));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if seen.len() < 2 {
        let _ = a.shutdown().await;
        return Ok(Outcome::Failed(format!(
            "calls reached only {seen:?} of two registered servers within {:?}",
            s.push_within
        )));
    }
    a.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
    for i in 0..50 {
        match client.call::<_, Ping>("Ping", &ping).await {
            Ok(r) if r.text == "b" => {}
            Ok(r) => {
                return Ok(Outcome::Failed(format!(
                    "call {i} after the shutdown reached {:?}",
                    r.text
                )));
            }
            Err(e) => {
                return Ok(Outcome::Failed(format!(
                    "call {i} after the shutdown failed: {e}"
                )));
            }
        }
    }
    Ok(Outcome::Passed)
}

/// Bad input yields errors, not panics: an empty service name, an unreachable endpoint, and
/// malformed records written by someone else (valid instances are still returned).
pub async fn bad_input_is_an_error(s: &Subject) -> Check {
    let empty = RegistryInfo::new("", addr(20041));
    if s.registry.register(&empty).await.is_ok() {
        return Ok(Outcome::Failed(
            "registering an empty service name succeeded".into(),
        ));
    }
    if s.resolver.resolve("").await.is_ok() {
        return Ok(Outcome::Failed(
            "resolving an empty service name succeeded".into(),
        ));
    }
    if let Some((reg, res)) = &s.unreachable {
        let r = info(&unique("unreachable"), 20042, 10, &[]);
        match tokio::time::timeout(Duration::from_secs(30), reg.register(&r)).await {
            Ok(Ok(())) => {
                return Ok(Outcome::Failed(
                    "registering at an unreachable endpoint succeeded".into(),
                ));
            }
            Ok(Err(_)) => {}
            Err(_) => {
                return Ok(Outcome::Failed(
                    "registering at an unreachable endpoint hung".into(),
                ));
            }
        }
        match tokio::time::timeout(Duration::from_secs(30), res.resolve("x")).await {
            Ok(Ok(_)) => {
                return Ok(Outcome::Failed(
                    "resolving at an unreachable endpoint succeeded".into(),
                ));
            }
            Ok(Err(_)) => {}
            Err(_) => {
                return Ok(Outcome::Failed(
                    "resolving at an unreachable endpoint hung".into(),
                ));
            }
        }
    }
    let svc = unique("malformed");
    let good = info(&svc, 20043, 10, &[]);
    s.registry
        .register(&good)
        .await
        .map_err(|e| format!("register: {e}"))?;
    if !s.backend.write_malformed(&svc).await? {
        s.registry.deregister(&good).await.ok();
        return Ok(Outcome::Skipped(
            "the backend cannot write malformed records".into(),
        ));
    }
    let res = resolve_until(&*s.resolver, &svc, s.push_within, |l| ports(l) == [20043]).await;
    s.registry.deregister(&good).await.ok();
    Ok(match res {
        Ok(_) => Outcome::Passed,
        Err(e) => Outcome::Failed(format!("with a malformed record beside a good one: {e}")),
    })
}

/// Runs every check, in order.
pub async fn check_all(s: &Subject) -> Report {
    let mut report = Report::default();
    macro_rules! run {
        ($name:literal, $check:expr) => {{
            tracing::info!(check = $name, "conformance check");
            let outcome = match $check.await {
                Ok(o) => o,
                Err(e) => Outcome::Failed(e),
            };
            report.outcomes.push(($name, outcome));
        }};
    }
    run!(
        "register_resolve_deregister",
        register_resolve_deregister(s)
    );
    run!("services_stay_apart", services_stay_apart(s));
    run!("watch_pushes_changes", watch_pushes_changes(s));
    run!("calls_follow_servers", calls_follow_servers(s));
    run!("bad_input_is_an_error", bad_input_is_an_error(s));
    run!(
        "client_survives_registry_outage",
        client_survives_registry_outage(s)
    );
    run!(
        "survives_restart_and_lost_sessions",
        survives_restart_and_lost_sessions(s)
    );
    report
}

/// The backend of the core's in-memory registry: it never goes down, so the checks that stop
/// it are skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct InMemoryBackend;

#[async_trait]
impl Backend for InMemoryBackend {
    async fn stop(&self) -> Result<bool, String> {
        Ok(false)
    }
    async fn start(&self) -> Result<bool, String> {
        Ok(false)
    }
    async fn expire_sessions(&self) -> Result<bool, String> {
        Ok(false)
    }
    async fn write_malformed(&self, _service: &str) -> Result<bool, String> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: Outcome) -> Report {
        Report {
            outcomes: vec![("a", Outcome::Passed), ("b", outcome)],
        }
    }

    #[test]
    fn a_report_of_passes_passes() {
        report(Outcome::Passed).assert_all_passed();
    }

    #[test]
    #[should_panic(expected = "conformance checks skipped")]
    fn a_skipped_check_is_not_all_passed() {
        report(Outcome::Skipped("no server".into())).assert_all_passed();
    }

    #[test]
    #[should_panic(expected = "conformance failures")]
    fn a_failed_check_is_not_all_passed() {
        report(Outcome::Failed("wrong".into())).assert_all_passed();
    }
}

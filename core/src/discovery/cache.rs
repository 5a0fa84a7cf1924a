//! The discovery cache shared by clients.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::StreamExt;
use tokio::sync::watch;

use super::{Change, Instance, Resolver, Snapshot};
use crate::context::Endpoint;
use crate::error::Result;

type Key = (String, String);
type Listener = dyn Fn(&Change) + Send + Sync;

/// Shares one watch per (resolver, target) between all clients, computes [`Change`]s, keeps the
/// last good snapshot when the resolver fails, and stops watching a target once no client has
/// used it for the idle expiry.
///
/// Cheap to clone; clients built without an explicit cache share [`DiscoveryCache::global`].
#[derive(Clone)]
pub struct DiscoveryCache {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    targets: Mutex<HashMap<Key, Arc<TargetState>>>,
    idle_expiry: Duration,
    first_wait: Duration,
}

pub(crate) struct TargetState {
    target: String,
    /// Cleared when the watch task ends for any reason (including its runtime shutting down).
    watching: AtomicBool,
    snapshot: ArcSwap<Snapshot>,
    generation: watch::Sender<u64>,
    listeners: Mutex<Vec<Weak<Listener>>>,
    /// The address of the resolver instance whose watch this is (only compared, never used).
    origin: usize,
}

/// A client's handle on one watched target.
#[derive(Clone)]
pub struct Discovered {
    state: Arc<TargetState>,
}

impl fmt::Debug for DiscoveryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscoveryCache")
            .field("idle_expiry", &self.inner.idle_expiry)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Discovered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovered")
            .field("target", &self.state.target)
            .field("version", &self.state.snapshot.load().version)
            .finish()
    }
}

impl Default for DiscoveryCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl DiscoveryCache {
    /// A cache that stops watching a target `idle_expiry` after its last client went away.
    #[must_use]
    pub fn new(idle_expiry: Duration) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                targets: Mutex::new(HashMap::new()),
                idle_expiry,
                first_wait: Duration::from_secs(3),
            }),
        }
    }

    /// Sets how long [`discover`](DiscoveryCache::discover) waits for a new target's first
    /// snapshot (default 3 s). Call before the cache is shared.
    #[must_use]
    pub fn with_first_wait(self, wait: Duration) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                targets: Mutex::new(HashMap::new()),
                idle_expiry: self.inner.idle_expiry,
                first_wait: wait,
            }),
        }
    }

    /// The process-wide cache.
    #[must_use]
    pub fn global() -> &'static DiscoveryCache {
        static GLOBAL: std::sync::OnceLock<DiscoveryCache> = std::sync::OnceLock::new();
        GLOBAL.get_or_init(DiscoveryCache::default)
    }

    /// Targets being watched.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no target is watched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts (or joins) the watch of `endpoint`'s target and waits briefly for the first
    /// snapshot (or the resolver's first answer, which may be an error).
    ///
    /// # Errors
    /// None today: a failing resolver leaves the snapshot empty, and calls fail with
    /// [`NoInstance`](crate::ErrorKind::NoInstance) until it recovers.
    pub async fn discover(
        &self,
        resolver: Arc<dyn Resolver>,
        endpoint: &Endpoint,
    ) -> Result<Discovered> {
        let target = resolver.target(endpoint);
        let key = (resolver.name().to_string(), target.clone());
        let (state, fresh) = {
            let mut targets = self.inner.targets.lock().unwrap_or_else(|p| p.into_inner());
            match targets.get(&key) {
                Some(s) if s.watching.load(Ordering::Acquire) => {
                    if s.origin != origin(&resolver) {
                        // Legitimate when two instances watch the same backend; a mistake when
                        // they do not (their names must differ), which this makes findable.
                        tracing::debug!(
                            resolver = resolver.name(),
                            target = %target,
                            "another resolver instance with the same name joins an existing \
                             watch; resolvers of different backends must have different names"
                        );
                    }
                    (s.clone(), false)
                }
                _ => {
                    let state = Arc::new(TargetState {
                        target: target.clone(),
                        watching: AtomicBool::new(true),
                        snapshot: ArcSwap::from_pointee(Snapshot::default()),
                        generation: watch::channel(0).0,
                        listeners: Mutex::new(Vec::new()),
                        origin: origin(&resolver),
                    });
                    targets.insert(key.clone(), state.clone());
                    (state, true)
                }
            }
        };
        if fresh {
            tokio::spawn(run_watch(
                Arc::downgrade(&self.inner),
                key,
                state.clone(),
                resolver,
            ));
        }
        let mut rx = state.generation.subscribe();
        let _ = tokio::time::timeout(self.inner.first_wait, rx.wait_for(|g| *g > 0)).await;
        Ok(Discovered { state })
    }
}

/// Tells resolver instances apart (the data address of the `Arc`).
fn origin(resolver: &Arc<dyn Resolver>) -> usize {
    Arc::as_ptr(resolver).cast::<()>() as usize
}

impl Discovered {
    /// The current snapshot (one atomic load).
    #[must_use]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.state.snapshot.load()
    }

    /// The watched target.
    #[must_use]
    pub fn target(&self) -> &str {
        &self.state.target
    }

    /// Calls `listener` with every later change, for as long as the returned `Arc` lives.
    pub fn subscribe(&self, listener: Arc<Listener>) {
        let mut ls = self
            .state
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        ls.retain(|l| l.strong_count() > 0);
        ls.push(Arc::downgrade(&listener));
    }

    /// Waits until the snapshot has changed after `version`, or `timeout` passes.
    /// Returns the snapshot then current.
    pub async fn changed_after(&self, version: u64, timeout: Duration) -> Arc<Snapshot> {
        let mut rx = self.state.generation.subscribe();
        let state = &self.state;
        let _ = tokio::time::timeout(
            timeout,
            rx.wait_for(|_| state.snapshot.load().version > version),
        )
        .await;
        self.state.snapshot.load_full()
    }
}

fn normalize(mut list: Vec<Instance>) -> Vec<Instance> {
    list.sort_by_key(|i| i.address);
    list.dedup_by(|a, b| a.address == b.address);
    list
}

impl TargetState {
    fn apply(&self, list: Vec<Instance>) {
        let list = normalize(list);
        let old = self.snapshot.load_full();
        let change = Change::between(&self.target, &old.instances, &list);
        if change.is_empty() {
            return;
        }
        tracing::debug!(
            target = %self.target,
            added = change.added.len(),
            updated = change.updated.len(),
            removed = change.removed.len(),
            "discovery change"
        );
        self.snapshot.store(Arc::new(Snapshot {
            version: old.version + 1,
            instances: list.into(),
        }));
        let listeners: Vec<_> = {
            let ls = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            ls.iter().filter_map(Weak::upgrade).collect()
        };
        for l in listeners {
            l(&change);
        }
    }
}

async fn run_watch(
    cache: Weak<CacheInner>,
    key: Key,
    state: Arc<TargetState>,
    resolver: Arc<dyn Resolver>,
) {
    struct Watching<'a>(&'a TargetState);
    impl Drop for Watching<'_> {
        fn drop(&mut self) {
            self.0.watching.store(false, Ordering::Release);
        }
    }
    let _watching = Watching(&state);
    let idle_expiry = cache
        .upgrade()
        .map_or(Duration::from_secs(60), |c| c.idle_expiry);
    let check_every = (idle_expiry / 2).max(Duration::from_millis(10));
    let mut idle_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let mut stream = resolver.clone().watch(state.target.clone());
    loop {
        tokio::select! {
            item = stream.next() => {
                match item {
                    Some(Ok(list)) => {
                        backoff = Duration::from_millis(100);
                        state.apply(list);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(
                            resolver = resolver.name(), target = %state.target, error = %e,
                            "resolver failed; keeping the last good snapshot"
                        );
                    }
                    None => {
                        tracing::warn!(
                            resolver = resolver.name(), target = %state.target,
                            "resolver watch ended; restarting it in {backoff:?}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                        stream = resolver.clone().watch(state.target.clone());
                    }
                }
                state.generation.send_modify(|g| *g += 1);
            }
            () = tokio::time::sleep(check_every) => {}
        }
        // Held by the map and this task only: nobody uses the target.
        if Arc::strong_count(&state) <= 2 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= idle_expiry {
                let Some(cache) = cache.upgrade() else { return };
                let mut targets = cache.targets.lock().unwrap_or_else(|p| p.into_inner());
                if Arc::strong_count(&state) <= 2 {
                    targets.remove(&key);
                    tracing::debug!(target = %state.target, "discovery target expired");
                    return;
                }
            }
        } else {
            idle_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorKind};
    use async_trait::async_trait;
    use futures::stream::{self, BoxStream};
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;

    /// A resolver whose watch yields the snapshots (or errors) pushed into a channel, and
    /// counts how many watches were opened.
    struct Scripted {
        name: String,
        tx: tokio::sync::broadcast::Sender<Result<Vec<Instance>>>,
        watches: AtomicUsize,
    }

    impl Scripted {
        fn new(name: &str) -> Arc<Self> {
            Arc::new(Self {
                name: name.into(),
                tx: tokio::sync::broadcast::channel(16).0,
                watches: AtomicUsize::new(0),
            })
        }
    }

    #[async_trait]
    impl Resolver for Scripted {
        fn name(&self) -> &str {
            &self.name
        }
        async fn resolve(&self, _target: &str) -> Result<Vec<Instance>> {
            Ok(Vec::new())
        }
        fn watch(self: Arc<Self>, _target: String) -> BoxStream<'static, Result<Vec<Instance>>> {
            self.watches.fetch_add(1, Ordering::SeqCst);
            let rx = self.tx.subscribe();
            stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(item) => return Some((item, rx)),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return None,
                    }
                }
            })
            .boxed()
        }
    }

    fn inst(port: u16) -> Instance {
        Instance::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    async fn wait_version(d: &Discovered, v: u64) -> Arc<Snapshot> {
        d.changed_after(v - 1, Duration::from_secs(5)).await
    }

    #[tokio::test]
    async fn shares_one_watch_keeps_last_good_and_reports_changes() {
        let cache = DiscoveryCache::new(Duration::from_secs(60)).with_first_wait(Duration::ZERO);
        let r = Scripted::new("scripted-a");
        let ep = Endpoint::new("svc");
        let d1 = cache.discover(r.clone(), &ep).await.unwrap();
        let d2 = cache.discover(r.clone(), &ep).await.unwrap();
        // The watch task subscribes when it first runs.
        while r.watches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(r.watches.load(Ordering::SeqCst), 1, "one watch per target");

        let changes = Arc::new(Mutex::new(Vec::new()));
        let c = changes.clone();
        let listener: Arc<Listener> =
            Arc::new(move |ch: &Change| c.lock().unwrap().push(ch.clone()));
        d1.subscribe(listener.clone());

        r.tx.send(Ok(vec![inst(2), inst(1)])).unwrap();
        let snap = wait_version(&d2, 1).await;
        assert_eq!(snap.version, 1);
        assert_eq!(
            snap.instances
                .iter()
                .map(|i| i.address.port())
                .collect::<Vec<_>>(),
            [1, 2]
        );

        // An error keeps the last good snapshot.
        r.tx.send(Err(Error::new(ErrorKind::Discovery, "backend down")))
            .unwrap();
        r.tx.send(Ok(vec![inst(1), inst(3)])).unwrap();
        let snap = wait_version(&d1, 2).await;
        assert_eq!(
            snap.instances
                .iter()
                .map(|i| i.address.port())
                .collect::<Vec<_>>(),
            [1, 3]
        );
        let got = changes.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].added.len(), 2);
        assert_eq!(got[1].added, vec![inst(3)]);
        assert_eq!(got[1].removed, vec![inst(2)]);

        // The same list again is no change.
        r.tx.send(Ok(vec![inst(3), inst(1)])).unwrap();
        r.tx.send(Ok(vec![inst(1)])).unwrap();
        let snap = wait_version(&d1, 3).await;
        assert_eq!(snap.instances.len(), 1);
        assert_eq!(changes.lock().unwrap().len(), 3);
    }

    /// Log lines written while `f` runs (debug and up, this thread).
    async fn logs_during<F: Future>(f: F) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        f.await;
        drop(guard);
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn a_second_resolver_instance_under_one_name_is_logged_and_shares_the_watch() {
        let cache = DiscoveryCache::new(Duration::from_secs(60)).with_first_wait(Duration::ZERO);
        let (a, b) = (Scripted::new("same-name"), Scripted::new("same-name"));
        let ep = Endpoint::new("svc");
        let _da = cache.discover(a.clone(), &ep).await.unwrap();
        let same = logs_during(async {
            cache.discover(a.clone(), &ep).await.unwrap();
        })
        .await;
        assert!(
            !same.contains("same name"),
            "the same instance again: {same}"
        );
        let other = logs_during(async {
            cache.discover(b.clone(), &ep).await.unwrap();
        })
        .await;
        assert!(
            other.contains("another resolver instance with the same name") && other.contains("svc"),
            "{other}"
        );
        assert_eq!(cache.len(), 1, "one watch, shared");
    }

    #[tokio::test]
    async fn idle_targets_expire_and_a_new_client_starts_a_new_watch() {
        let cache = DiscoveryCache::new(Duration::from_millis(50)).with_first_wait(Duration::ZERO);
        let r = Scripted::new("scripted-b");
        let d = cache
            .discover(r.clone(), &Endpoint::new("svc"))
            .await
            .unwrap();
        assert_eq!(cache.len(), 1);
        drop(d);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cache.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cache.is_empty(), "the idle target expired");
        let _d = cache
            .discover(r.clone(), &Endpoint::new("svc"))
            .await
            .unwrap();
        while r.watches.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(r.watches.load(Ordering::SeqCst), 2);
    }
}

//! The bottom of the client chain: governance, discovery, balancing and the wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use faststr::FastStr;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::OnceCell;

use crate::codec::ttheader::{FrameWriter, MessageType, keys};
use crate::context::{Context, PERSISTENT_PREFIX, TRANSIENT_PREFIX};
use crate::discovery::{Change, Discovered, DiscoveryCache, Resolver};
use crate::error::{Error, ErrorKind, Result};
use crate::loadbalance::LoadBalancer;
use crate::policy::circuit_breaker::Window;
use crate::policy::retry::RETRY_TAG;
use crate::policy::{BackupPolicy, CircuitBreakers, ClientPolicies, FailurePolicy, StopPolicy};
use crate::service::Service;
use crate::transport::queue::{Body, Encoded, finish_frame};
use crate::transport::{CowMap, Pool};

pub(crate) struct InvokerConfig {
    pub(crate) caller: FastStr,
    pub(crate) service: FastStr,
    pub(crate) resolver: Arc<dyn Resolver>,
    pub(crate) cache: DiscoveryCache,
    pub(crate) lb: Arc<dyn LoadBalancer>,
    pub(crate) policies: Arc<ClientPolicies>,
    pub(crate) breakers: CircuitBreakers,
    pub(crate) rpc_timeout: Option<Duration>,
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) connections_per_instance: usize,
    pub(crate) max_frame_size: usize,
}

type ChangeListener = dyn Fn(&Change) + Send + Sync;

struct Inner {
    cfg: InvokerConfig,
    discovered: OnceCell<Discovered>,
    pool: Arc<Pool>,
    retry_windows: CowMap<String, Window>,
    listener: std::sync::Mutex<Option<Arc<ChangeListener>>>,
}

/// Sends calls: degradation, retry/backup, per-attempt timeout, breakers, discovery, balancing.
#[derive(Clone)]
pub(crate) struct Invoker {
    inner: Arc<Inner>,
}

/// The retry circuit breaker's minimum sample.
const RETRY_CB_MIN_SAMPLE: u64 = 10;

impl Invoker {
    pub(crate) fn new(cfg: InvokerConfig) -> Self {
        let pool = Arc::new(Pool::new(cfg.connections_per_instance, cfg.max_frame_size));
        Self {
            inner: Arc::new(Inner {
                cfg,
                discovered: OnceCell::new(),
                pool,
                retry_windows: CowMap::new(),
                listener: std::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn policies(&self) -> &Arc<ClientPolicies> {
        &self.inner.cfg.policies
    }

    pub(crate) fn breakers(&self) -> &CircuitBreakers {
        &self.inner.cfg.breakers
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.inner.pool.connection_count()
    }

    async fn discovered(&self) -> Result<&Discovered> {
        match self.inner.discovered.get() {
            Some(d) => Ok(d),
            // Boxed: runs once per client, and would otherwise grow every call's future.
            None => Box::pin(self.discover()).await,
        }
    }

    async fn discover(&self) -> Result<&Discovered> {
        let inner = &*self.inner;
        inner
            .discovered
            .get_or_try_init(|| async {
                let d = inner
                    .cfg
                    .cache
                    .discover(
                        inner.cfg.resolver.clone(),
                        &crate::context::Endpoint::new(inner.cfg.service.clone()),
                    )
                    .await?;
                // Rebalance on changes and drop connections to instances that left.
                let lb = inner.cfg.lb.clone();
                let pool = Arc::downgrade(&inner.pool);
                let target = d.clone();
                let listener: Arc<ChangeListener> = Arc::new(move |change: &Change| {
                    lb.rebalance(change);
                    if !change.removed.is_empty() {
                        if let Some(pool) = pool.upgrade() {
                            let snap = target.snapshot();
                            pool.retain(|a| snap.instances.iter().any(|i| i.address == *a));
                        }
                    }
                });
                d.subscribe(listener.clone());
                *inner.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
                Ok::<_, Error>(d)
            })
            .await
    }

    fn pick(&self, cx: &Context, d: &Discovered, exclude: &[SocketAddr]) -> Result<SocketAddr> {
        let inner = &*self.inner;
        let snap = d.snapshot();
        if snap.instances.is_empty() {
            return Err(Error::new(
                ErrorKind::NoInstance,
                format!(
                    "no instance of {} found by {}",
                    inner.cfg.service,
                    inner.cfg.resolver.name()
                ),
            ));
        }
        // Instances to avoid beyond `exclude`; `exclude` is copied in only once one is found,
        // so the common case (the first pick is usable) builds nothing.
        let mut skip: smallvec::SmallVec<[SocketAddr; 4]> = smallvec::SmallVec::new();
        for _ in 0..snap.instances.len().min(8) {
            let avoid: &[SocketAddr] = if skip.is_empty() { exclude } else { &skip };
            let Some(inst) = inner.cfg.lb.pick(cx, &snap, avoid) else {
                break;
            };
            let addr = inst.address;
            let avoided = avoid.contains(&addr);
            if avoided || inner.cfg.breakers.instance_open(&addr) {
                if avoided && !exclude.contains(&addr) {
                    break;
                }
                if skip.is_empty() {
                    skip.extend_from_slice(exclude);
                }
                skip.push(addr);
                continue;
            }
            return Ok(addr);
        }
        // Every candidate was excluded or broken: take what the balancer gives without exclusions.
        inner
            .cfg
            .lb
            .pick(cx, &snap, &[])
            .map(|i| i.address)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NoInstance,
                    format!("no instance of {} takes traffic", inner.cfg.service),
                )
            })
    }

    /// One attempt to one instance, with its timeout and breakers.
    async fn send(
        &self,
        cx: &Context,
        payload: Body<'_>,
        addr: SocketAddr,
        attempt: u32,
    ) -> Result<Bytes> {
        let inner = &*self.inner;
        let method = cx.method();
        let mut ticket = inner
            .cfg
            .breakers
            .admit_method(&inner.cfg.policies.circuit_break, method)?;
        inner.cfg.breakers.admit_instance(&mut ticket, addr)?;
        let (rpc_timeout, connect_timeout) = {
            let table = inner.cfg.policies.timeout.load_active();
            let p = table.as_ref().and_then(|t| t.lookup(method));
            (
                cx.rpc_info
                    .config
                    .rpc_timeout
                    .or_else(|| p.and_then(|p| p.rpc_timeout()))
                    .or(inner.cfg.rpc_timeout),
                cx.rpc_info
                    .config
                    .connect_timeout
                    .or_else(|| p.and_then(|p| p.conn_timeout()))
                    .or(inner.cfg.connect_timeout),
            )
        };
        inner.cfg.lb.on_start(addr);
        // The connect timeout bounds connecting; the rpc timeout bounds waiting for the
        // reply, enforced by the connection (no timer per call).
        let conn = match inner.pool.ready(addr) {
            Ok(conn) => Ok(conn),
            Err(slot) => inner.pool.get(addr, slot, connect_timeout).await,
        };
        let res = match conn {
            // This task's waker goes with the call, so the reply's first poll (right below, in
            // the same poll of this future) has nothing to look up.
            Ok(conn) => match conn.send(rpc_timeout, current_waker().await, |buf, seq| {
                encode_request(buf, seq, &inner.cfg, cx, rpc_timeout, attempt, payload)
            }) {
                Ok(reply) => reply.await.map_err(|e| match (e.kind(), rpc_timeout) {
                    (ErrorKind::Timeout, Some(t)) => Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "{}/{method} to {addr} timed out after {t:?}",
                            inner.cfg.service
                        ),
                    ),
                    _ => e,
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        inner.cfg.lb.on_finish(addr);
        ticket.finish(succeeded(&res));
        res
    }

    fn retry_window(&self, method: &str) -> Arc<Window> {
        self.inner
            .retry_windows
            .get_or_insert_with(method, Window::default)
    }

    fn may_retry(
        &self,
        stop: &StopPolicy,
        window: Option<&Window>,
        started: Option<Instant>,
        err: &Error,
        chain_stopped: bool,
    ) -> bool {
        if !err.is_retryable() || chain_stopped {
            return false;
        }
        if started.is_some_and(|s| s.elapsed() >= Duration::from_millis(stop.max_duration_ms)) {
            return false;
        }
        if let Some(window) = window {
            let (total, fails) = window.counts();
            if total >= RETRY_CB_MIN_SAMPLE
                && fails as f64 > stop.cb_policy.error_rate * total as f64
            {
                tracing::debug!(total, fails, "retry stopped by its circuit breaker");
                return false;
            }
        }
        true
    }

    /// One attempt: pick an instance (skipping those already tried) and send to it.
    async fn attempt(
        &self,
        cx: &mut Context,
        d: &Discovered,
        payload: Body<'_>,
        attempt: u32,
        remember: bool,
    ) -> Result<Bytes> {
        cx.rpc_info.stats.attempts = attempt;
        let addr = self.pick(cx, d, &cx.tried)?;
        cx.rpc_info.callee.address = Some(addr);
        let r = self.send(cx, payload, addr, attempt).await;
        if remember {
            cx.tried.push(addr);
        }
        r
    }

    /// Failure retry after the first attempt failed with `err`: attempts until one succeeds
    /// or the stop policy says stop. Boxed by the caller, so the first attempt (the common,
    /// successful case) does not carry this loop's state.
    async fn failure_retry(
        &self,
        cx: &mut Context,
        d: &Discovered,
        payload: Bytes,
        fp: &FailurePolicy,
        retry: Retrying,
        mut err: Error,
    ) -> Result<Bytes> {
        let stop = &fp.stop_policy;
        let chain_stopped = stop.chain_stopped();
        let Retrying { window, started } = retry;
        let mut attempt = 1;
        loop {
            if attempt > stop.max_retry_times
                || !self.may_retry(stop, window.as_deref(), started, &err, chain_stopped)
            {
                return Err(err);
            }
            let delay = fp
                .backoff_policy
                .as_ref()
                .map_or(Duration::ZERO, |b| b.delay());
            if let (true, Some(started)) = (stop.ddl_stop, started) {
                let after =
                    started.elapsed() + delay + cx.rpc_info.config.rpc_timeout.unwrap_or_default();
                if after > Duration::from_millis(stop.max_duration_ms) {
                    return Err(err);
                }
            }
            tracing::debug!(method = cx.method(), attempt, error = %err, "retrying");
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            attempt += 1;
            let res = self
                .attempt(
                    cx,
                    d,
                    Body::Borrowed(&payload),
                    attempt,
                    !fp.retry_same_node,
                )
                .await;
            if let Some(w) = &window {
                w.record(succeeded(&res));
            }
            match res {
                Ok(p) => return Ok(p),
                Err(e) => err = e,
            }
        }
    }

    async fn backup_request(
        &self,
        cx: &mut Context,
        payload: Bytes,
        bp: &BackupPolicy,
    ) -> Result<Bytes> {
        let stop = &bp.stop_policy;
        let chain_stopped = stop.chain_stopped();
        let window = self.retry_window(cx.method());
        let started = Instant::now();
        let d = self.discovered().await?;
        let delay = Duration::from_millis(bp.retry_delay_ms);
        let mut tried = cx.tried.clone();
        let cxr: &Context = cx;
        let sent = std::sync::atomic::AtomicU32::new(0);
        let mut inflight = FuturesUnordered::new();
        let launch = |tried: &mut Vec<SocketAddr>,
                      inflight: &mut FuturesUnordered<_>|
         -> Result<()> {
            let addr = self.pick(cxr, d, tried)?;
            if !bp.retry_same_node {
                tried.push(addr);
            }
            let attempt = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let payload = &payload;
            inflight
                .push(async move { self.send(cxr, Body::Borrowed(payload), addr, attempt).await });
            Ok(())
        };
        launch(&mut tried, &mut inflight)?;
        let res = loop {
            let more = sent.load(std::sync::atomic::Ordering::Relaxed) <= stop.max_retry_times
                && !chain_stopped
                && (stop.max_duration_ms == 0
                    || started.elapsed() < Duration::from_millis(stop.max_duration_ms));
            let next = if more {
                tokio::select! {
                    r = inflight.next() => r,
                    () = tokio::time::sleep(delay) => {
                        if let Err(e) = launch(&mut tried, &mut inflight) {
                            tracing::debug!(error = %e, "backup request not sent");
                        }
                        continue;
                    }
                }
            } else {
                inflight.next().await
            };
            match next {
                Some(Ok(p)) => break Ok(p),
                Some(Err(e)) => {
                    window.record(!e.is_system_failure());
                    if inflight.is_empty() {
                        break Err(e);
                    }
                }
                None => {
                    break Err(Error::new(
                        ErrorKind::NoInstance,
                        "no backup request could be sent",
                    ));
                }
            }
        };
        drop(inflight);
        cx.rpc_info.stats.attempts = sent.load(std::sync::atomic::Ordering::Relaxed);
        if res.is_ok() {
            window.record(true);
        }
        res
    }
}

fn encode_request(
    buf: &mut bytes::BytesMut,
    seq: u32,
    cfg: &InvokerConfig,
    cx: &Context,
    rpc_timeout: Option<Duration>,
    attempt: u32,
    payload: Body<'_>,
) -> Result<Encoded> {
    let mut timeout_buf = [0u8; 20];
    let timeout = rpc_timeout.map(|t| format_u64(&mut timeout_buf, t.as_millis() as u64));
    let mut ints: smallvec::SmallVec<[(u16, &[u8]); 6]> = smallvec::smallvec![
        (keys::TO_METHOD, cx.method().as_bytes()),
        (keys::MSG_TYPE, MessageType::Call.as_ascii()),
        (keys::FROM_SERVICE, cfg.caller.as_bytes()),
        (keys::TO_SERVICE, cfg.service.as_bytes()),
    ];
    if let Some(t) = timeout {
        ints.push((keys::RPC_TIMEOUT, t));
    }
    let mut w = FrameWriter::begin(buf, seq, crate::codec::ttheader::protocol::PROTOBUF, &ints)?;
    for (k, v) in cx.meta.persistent() {
        w.str_header(PERSISTENT_PREFIX, k, v)?;
    }
    for (k, v) in cx.meta.transient() {
        w.str_header(TRANSIENT_PREFIX, k, v)?;
    }
    if attempt > 1 {
        let mut n = [0u8; 20];
        let n = format_u64(&mut n, u64::from(attempt));
        w.str_header(
            TRANSIENT_PREFIX,
            RETRY_TAG,
            std::str::from_utf8(n).unwrap_or("2"),
        )?;
    }
    finish_frame(w, payload)
}

/// The waker of the task polling the caller.
async fn current_waker() -> std::task::Waker {
    std::future::poll_fn(|task| Poll::Ready(task.waker().clone())).await
}

/// Formats `n` in decimal into `buf` without allocating.
fn format_u64(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

impl Service<Bytes> for Invoker {
    type Response = Bytes;
    type Error = Error;

    async fn call(&self, cx: &mut Context, payload: Bytes) -> Result<Bytes> {
        let policies = &self.inner.cfg.policies;
        if policies
            .degradation
            .load_enabled()
            .is_some_and(|d| d.should_drop())
        {
            return Err(Error::new(
                ErrorKind::Degraded,
                format!(
                    "call to {}/{} dropped by degradation",
                    self.inner.cfg.service,
                    cx.method()
                ),
            ));
        }
        // Hold the table (one reference count) rather than cloning the policy per call.
        let retry = policies
            .retry
            .load_active()
            .map(arc_swap::Guard::into_inner);
        let policy = retry.as_deref().and_then(|t| t.lookup(cx.method()));
        let mut failure = None;
        if let Some(r) = policy {
            match (r.kind, &r.failure_policy, &r.backup_policy) {
                (0, Some(fp), _) => failure = Some(fp),
                // Boxed: its state machine is large and backup requests are rare.
                (1, _, Some(bp)) => return Box::pin(self.backup_request(cx, payload, bp)).await,
                _ => {}
            }
        }
        let d = self.discovered().await?;
        let Some(fp) = failure else {
            // No retry: the payload goes to the wire as it is (large ones are not copied).
            return self.attempt(cx, d, Body::Owned(payload), 1, false).await;
        };
        let stop = &fp.stop_policy;
        let retry = Retrying {
            // The retry circuit breaker's window, kept only when the policy uses it.
            window: (stop.cb_policy.error_rate > 0.0).then(|| self.retry_window(cx.method())),
            // Read the clock only when the policy bounds the duration.
            started: (stop.max_duration_ms > 0).then(Instant::now),
        };
        let res = self
            .attempt(cx, d, Body::Borrowed(&payload), 1, !fp.retry_same_node)
            .await;
        if let Some(w) = &retry.window {
            w.record(succeeded(&res));
        }
        match res {
            Ok(p) => Ok(p),
            Err(err) => Box::pin(self.failure_retry(cx, d, payload, fp, retry, err)).await,
        }
    }
}

/// What a failure retry carries from the first attempt to the next.
struct Retrying {
    window: Option<Arc<Window>>,
    started: Option<Instant>,
}

/// Whether a result counts as a success for breakers and retry windows (a remote application
/// error is the service answering, not a failure of the system).
fn succeeded(res: &Result<Bytes>) -> bool {
    res.as_ref()
        .map_or_else(|e| !e.is_system_failure(), |_| true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn format_u64_digits() {
        let mut b = [0u8; 20];
        assert_eq!(super::format_u64(&mut b, 0), b"0");
        assert_eq!(super::format_u64(&mut b, 1500), b"1500");
        assert_eq!(
            super::format_u64(&mut b, u64::MAX),
            u64::MAX.to_string().as_bytes()
        );
    }
}

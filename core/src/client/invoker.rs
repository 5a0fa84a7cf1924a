//! The bottom of the client chain: governance, discovery, balancing and the wire.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use faststr::FastStr;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::OnceCell;

use crate::codec::ttheader::{FrameWriter, IntHeaders, MessageType, keys};
use crate::context::{Context, PERSISTENT_PREFIX, TRANSIENT_PREFIX};
use crate::discovery::{Change, Discovered, DiscoveryCache, Resolver};
use crate::error::{Error, ErrorKind, Result};
use crate::loadbalance::LoadBalancer;
use crate::policy::circuit_breaker::{BreakerTicket, Window};
use crate::policy::retry::RETRY_TAG;
use crate::policy::{
    BackupPolicy, CircuitBreakers, ClientPolicies, FailurePolicy, PolicyTable, RetryConfig,
    StopPolicy,
};
use crate::service::Service;
use crate::transport::conn::Reply;
use crate::transport::queue::{Body, Encoded, finish_frame};
use crate::transport::{Connection, CowMap, Pool};

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
    /// The integer headers every request carries (message type, caller and service names),
    /// encoded once; `None` if they cannot be (a name over 65,535 bytes: each call then
    /// fails with the protocol error).
    fixed_ints: Option<IntHeaders>,
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
        let fixed_ints = IntHeaders::new(&fixed_ints(&cfg)).ok();
        Self {
            inner: Arc::new(Inner {
                cfg,
                fixed_ints,
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

    /// Admits one attempt to `addr`: the breakers, the attempt's timeouts, and the balancer's
    /// count of calls in flight. Every admitted attempt ends in [`settle`](Self::settle).
    #[inline]
    fn admit(&self, cx: &Context, addr: SocketAddr) -> Result<Admitted> {
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
        Ok(Admitted {
            ticket,
            rpc_timeout,
            connect_timeout,
        })
    }

    /// Writes the request into `conn`'s queue; the reply will wake `waker`'s task. The rpc
    /// timeout is enforced by the connection (no timer per call).
    #[inline]
    fn transmit(
        &self,
        conn: Arc<Connection>,
        cx: &Context,
        payload: Body<'_>,
        attempt: u32,
        rpc_timeout: Option<Duration>,
        waker: Waker,
    ) -> Result<Reply> {
        conn.send(rpc_timeout, waker, |buf, seq| {
            encode_request(buf, seq, &self.inner, cx, rpc_timeout, attempt, payload)
        })
    }

    /// Ends an admitted attempt (its breaker `ticket` and rpc timeout) with its outcome: a
    /// timeout gets its context, and the balancer and the breakers learn how it went.
    #[inline]
    fn settle(
        &self,
        method: &str,
        addr: SocketAddr,
        ticket: BreakerTicket,
        rpc_timeout: Option<Duration>,
        res: Result<Bytes>,
    ) -> Result<Bytes> {
        let res = res.map_err(|e| match (e.kind(), rpc_timeout) {
            (ErrorKind::Timeout, Some(t)) => Error::new(
                ErrorKind::Timeout,
                format!(
                    "{}/{method} to {addr} timed out after {t:?}",
                    self.inner.cfg.service
                ),
            ),
            _ => e,
        });
        self.inner.cfg.lb.on_finish(addr);
        ticket.finish(succeeded(&res));
        res
    }

    /// One attempt to one instance, with its timeout and breakers (the general path's; the
    /// fast path does the same steps in [`InvokerCall`]).
    async fn send(
        &self,
        cx: &Context,
        payload: Body<'_>,
        addr: SocketAddr,
        attempt: u32,
    ) -> Result<Bytes> {
        self.send_via(cx, payload, addr, attempt, None).await
    }

    /// [`send`](Self::send), given what the pool said about `addr` when the caller asked it
    /// already (a connection, or the slot to connect).
    async fn send_via(
        &self,
        cx: &Context,
        payload: Body<'_>,
        addr: SocketAddr,
        attempt: u32,
        looked_up: Option<std::result::Result<Arc<Connection>, Option<usize>>>,
    ) -> Result<Bytes> {
        let inner = &*self.inner;
        let admitted = self.admit(cx, addr)?;
        // Should this future be dropped before the outcome, the balancer still learns the
        // call is no longer in flight, and a breaker probe is given back.
        let in_flight = InFlightGuard {
            lb: &*inner.cfg.lb,
            addr,
            ticket: &admitted.ticket,
        };
        // The connect timeout bounds connecting; the rpc timeout bounds waiting for the reply.
        let conn = match looked_up.unwrap_or_else(|| inner.pool.ready(addr)) {
            Ok(conn) => Ok(conn),
            Err(slot) => inner.pool.get(addr, slot, admitted.connect_timeout).await,
        };
        let res = match conn {
            // This task's waker goes with the call, so the reply's first poll (right below, in
            // the same poll of this future) has nothing to look up.
            Ok(conn) => {
                let waker = current_waker().await;
                match self.transmit(conn, cx, payload, attempt, admitted.rpc_timeout, waker) {
                    Ok(reply) => reply.await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        std::mem::forget(in_flight);
        self.settle(
            cx.method(),
            addr,
            admitted.ticket,
            admitted.rpc_timeout,
            res,
        )
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

/// The integer headers that are the same on every request of a client.
fn fixed_ints(cfg: &InvokerConfig) -> [(u16, &[u8]); 3] {
    [
        (keys::MSG_TYPE, MessageType::Call.as_ascii()),
        (keys::FROM_SERVICE, cfg.caller.as_bytes()),
        (keys::TO_SERVICE, cfg.service.as_bytes()),
    ]
}

fn encode_request(
    buf: &mut bytes::BytesMut,
    seq: u32,
    inner: &Inner,
    cx: &Context,
    rpc_timeout: Option<Duration>,
    attempt: u32,
    payload: Body<'_>,
) -> Result<Encoded> {
    let protocol = crate::codec::ttheader::protocol::PROTOBUF;
    let mut timeout_buf = [0u8; 20];
    let timeout = rpc_timeout.map(|t| format_u64(&mut timeout_buf, t.as_millis() as u64));
    let method = (keys::TO_METHOD, cx.method().as_bytes());
    let mut w = match (&inner.fixed_ints, timeout) {
        (Some(fixed), None) => FrameWriter::begin_with(buf, seq, protocol, fixed, &[method])?,
        (Some(fixed), Some(t)) => {
            FrameWriter::begin_with(buf, seq, protocol, fixed, &[method, (keys::RPC_TIMEOUT, t)])?
        }
        (None, _) => {
            let mut ints: smallvec::SmallVec<[(u16, &[u8]); 5]> = smallvec::SmallVec::new();
            ints.push(method);
            ints.extend(fixed_ints(&inner.cfg));
            ints.extend(timeout.map(|t| (keys::RPC_TIMEOUT, t)));
            FrameWriter::begin(buf, seq, protocol, &ints)?
        }
    };
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

impl Invoker {
    /// The degradation policy's verdict: the error of a call it drops.
    fn degraded(&self, cx: &Context) -> Option<Error> {
        self.inner
            .cfg
            .policies
            .degradation
            .load_enabled()
            .is_some_and(|d| d.should_drop())
            .then(|| {
                Error::new(
                    ErrorKind::Degraded,
                    format!(
                        "call to {}/{} dropped by degradation",
                        self.inner.cfg.service,
                        cx.method()
                    ),
                )
            })
    }

    /// A call past degradation, the general way: backup requests, failure retries, the first
    /// discovery and connecting. [`InvokerCall`] hands calls over to it (boxed) when they need
    /// any of these.
    async fn call_general(&self, cx: &mut Context, payload: Bytes) -> Result<Bytes> {
        let policies = &self.inner.cfg.policies;
        // Hold the table (one reference count) rather than cloning the policy per call.
        let retry = policies
            .retry
            .load_active()
            .map(arc_swap::Guard::into_inner);
        let failure = match RetryPlan::of(retry.as_deref(), cx.method()) {
            RetryPlan::Backup(bp) => return self.backup_request(cx, payload, bp).await,
            RetryPlan::Failure(fp) => Some(fp),
            RetryPlan::Once => None,
        };
        let d = self.discovered().await?;
        let Some(fp) = failure else {
            // No retry: the payload goes to the wire as it is (large ones are not copied).
            return self.attempt(cx, d, Body::Owned(payload), 1, false).await;
        };
        let retry = Retrying::new(self, cx, &fp.stop_policy);
        let res = self
            .attempt(cx, d, Body::Borrowed(&payload), 1, !fp.retry_same_node)
            .await;
        if let Some(w) = &retry.window {
            w.record(succeeded(&res));
        }
        match res {
            Ok(p) => Ok(p),
            Err(err) => self.failure_retry(cx, d, payload, fp, retry, err).await,
        }
    }

    /// The first attempt of a fast-path call whose connection to `addr` was not ready:
    /// connects (into pool slot `slot`), sends, and goes on as a failure policy says.
    async fn first_connecting(
        &self,
        cx: &mut Context,
        addr: SocketAddr,
        slot: Option<usize>,
        mut payload: FirstPayload,
    ) -> Result<Bytes> {
        let res = self
            .send_via(cx, payload.body(), addr, 1, Some(Err(slot)))
            .await;
        match payload.into_first() {
            None => res,
            Some(first) => {
                let res = first.record(cx, Some(addr), res);
                match res {
                    Ok(p) => Ok(p),
                    Err(err) => self.retry_first(cx, *first, err).await,
                }
            }
        }
    }

    /// Failure retries after a fast-path first attempt failed with `err`.
    async fn retry_first(&self, cx: &mut Context, first: FirstTry, err: Error) -> Result<Bytes> {
        let FirstTry {
            table,
            payload,
            retrying,
            ..
        } = first;
        let RetryPlan::Failure(fp) = RetryPlan::of(Some(&table), cx.method()) else {
            return Err(err);
        };
        let d = self.discovered().await?;
        self.failure_retry(cx, d, payload, fp, retrying, err).await
    }
}

impl Service<Bytes> for Invoker {
    type Response = Bytes;
    type Error = Error;

    fn call(&self, cx: &mut Context, payload: Bytes) -> impl Future<Output = Result<Bytes>> + Send {
        InvokerCall {
            invoker: self,
            cx: Some(cx),
            state: CallState::Start(payload),
        }
    }
}

/// A call through the invoker, written by hand rather than as an `async fn`.
///
/// Nested `async fn`s (call, attempt, send) compiled to a 712-byte future that kept several
/// copies of the same arguments, and every move of it (into a middleware chain's slot, for
/// one) copied all of it. On the fast path (a connection ready, no backup request) this future
/// sends the request synchronously in its first poll and then holds only what the reply needs,
/// updated in place; anything else goes to [`Invoker::call_general`], boxed.
///
/// The general path's future owns a clone of the invoker (an `Arc`) and takes the context, so
/// this future needs no lifetime common to the invoker's borrow and the context's.
struct InvokerCall<'s, 'c> {
    invoker: &'s Invoker,
    /// The call's context, until the general path takes it.
    cx: Option<&'c mut Context>,
    state: CallState<'c>,
}

enum CallState<'c> {
    /// Not polled yet: calls are lazy, like an `async fn`'s.
    Start(Bytes),
    /// Sent on the fast path; waiting for the reply.
    Wait(InFlight),
    /// On the general path (which holds the context).
    Slow(BoxFuture<'c, Result<Bytes>>),
    /// Finished.
    Done,
}

/// What a fast-path call holds while its reply is on the way.
struct InFlight {
    addr: SocketAddr,
    admitted: Admitted,
    reply: Reply,
    /// With a failure policy: what its retries need (boxed: most calls have none).
    first: Option<Box<FirstTry>>,
}

/// What the retries after a fast-path first attempt need.
struct FirstTry {
    /// The retry table the policy came from (the policy is looked up again on failure).
    table: Arc<PolicyTable<RetryConfig>>,
    payload: Bytes,
    retrying: Retrying,
    /// Whether retries avoid the instance tried (`!retry_same_node`).
    remember: bool,
}

impl FirstTry {
    /// Books the first attempt (to `addr`, if one was picked) and its outcome, as the general
    /// path's first attempt does.
    fn record(
        &self,
        cx: &mut Context,
        addr: Option<SocketAddr>,
        res: Result<Bytes>,
    ) -> Result<Bytes> {
        if let (true, Some(addr)) = (self.remember, addr) {
            cx.tried.push(addr);
        }
        if let Some(w) = &self.retrying.window {
            w.record(succeeded(&res));
        }
        res
    }
}

/// The payload of a fast-path call; with a failure policy, kept with what its retries need.
enum FirstPayload {
    /// No retries: the payload goes to the wire as it is (large ones are not copied).
    Once(Bytes),
    /// Retries may follow: the payload is lent to the attempt.
    Kept(Box<FirstTry>),
}

impl FirstPayload {
    /// The payload for the first attempt (`Once` gives its bytes away).
    fn body(&mut self) -> Body<'_> {
        match self {
            FirstPayload::Once(p) => Body::Owned(std::mem::take(p)),
            FirstPayload::Kept(f) => Body::Borrowed(&f.payload),
        }
    }

    fn into_first(self) -> Option<Box<FirstTry>> {
        match self {
            FirstPayload::Once(_) => None,
            FirstPayload::Kept(f) => Some(f),
        }
    }
}

impl<'c> InvokerCall<'_, 'c> {
    /// The context, while this future holds it (until the general path takes it).
    fn context(&mut self) -> Result<&mut Context> {
        self.cx.as_deref_mut().ok_or_else(taken)
    }

    /// Hands the rest of the call to the general path: `go` gets the invoker and the context.
    fn go_slow<F>(&mut self, go: impl FnOnce(Invoker, &'c mut Context) -> F) -> Result<()>
    where
        F: Future<Output = Result<Bytes>> + Send + 'c,
    {
        let cx = self.cx.take().ok_or_else(taken)?;
        self.state = CallState::Slow(Box::pin(go(self.invoker.clone(), cx)));
        Ok(())
    }

    /// The first poll: sends the call on the fast path (state `Wait`), or hands it over
    /// (state `Slow`), or finishes it (`Some`). Before the balancer's pick nothing has an
    /// effect, so a call that needs the general path there (a backup policy, the first
    /// discovery) starts over on it; a call whose connection is not ready goes on, boxed, from
    /// the instance picked.
    fn start(&mut self, payload: Bytes, task: &std::task::Context<'_>) -> Option<Result<Bytes>> {
        let invoker = self.invoker;
        let inner = &*invoker.inner;
        let cx = match self.context() {
            Ok(cx) => cx,
            Err(e) => return Some(Err(e)),
        };
        if let Some(e) = invoker.degraded(cx) {
            return Some(Err(e));
        }
        let table = inner
            .cfg
            .policies
            .retry
            .load_active()
            .map(arc_swap::Guard::into_inner);
        let (Some(d), plan @ (RetryPlan::Once | RetryPlan::Failure(_))) = (
            inner.discovered.get(),
            RetryPlan::of(table.as_deref(), cx.method()),
        ) else {
            return self
                .go_slow(|invoker, cx| async move { invoker.call_general(cx, payload).await })
                .err()
                .map(Err);
        };
        let failure = match plan {
            RetryPlan::Failure(fp) => Some((
                Retrying::new(invoker, cx, &fp.stop_policy),
                !fp.retry_same_node,
            )),
            _ => None,
        };
        let mut payload = match failure.zip(table) {
            Some(((retrying, remember), table)) => FirstPayload::Kept(Box::new(FirstTry {
                table,
                payload,
                retrying,
                remember,
            })),
            None => FirstPayload::Once(payload),
        };
        cx.rpc_info.stats.attempts = 1;
        let addr = match invoker.pick(cx, d, &cx.tried) {
            Ok(addr) => addr,
            Err(e) => return self.first_done(None, payload.into_first(), Err(e)),
        };
        cx.rpc_info.callee.address = Some(addr);
        let conn = match inner.pool.ready(addr) {
            Ok(conn) => conn,
            Err(slot) => {
                return self
                    .go_slow(|invoker, cx| async move {
                        invoker.first_connecting(cx, addr, slot, payload).await
                    })
                    .err()
                    .map(Err);
            }
        };
        let admitted = match invoker.admit(cx, addr) {
            Ok(admitted) => admitted,
            Err(e) => return self.first_done(Some(addr), payload.into_first(), Err(e)),
        };
        let rpc_timeout = admitted.rpc_timeout;
        let sent = invoker.transmit(
            conn,
            cx,
            payload.body(),
            1,
            rpc_timeout,
            task.waker().clone(),
        );
        let first = payload.into_first();
        match sent {
            Ok(reply) => {
                self.state = CallState::Wait(InFlight {
                    addr,
                    admitted,
                    reply,
                    first,
                });
                None
            }
            Err(e) => {
                let res = invoker.settle(cx.method(), addr, admitted.ticket, rpc_timeout, Err(e));
                self.first_done(Some(addr), first, res)
            }
        }
    }

    /// The first attempt (to `addr`, if one was picked) ended with `res`: the call's result
    /// (`Some`), or, when a failure policy says try again, its retries (state `Slow`).
    fn first_done(
        &mut self,
        addr: Option<SocketAddr>,
        first: Option<Box<FirstTry>>,
        res: Result<Bytes>,
    ) -> Option<Result<Bytes>> {
        let Some(first) = first else {
            return Some(res);
        };
        let res = match self.context() {
            Ok(cx) => first.record(cx, addr, res),
            Err(e) => Err(e),
        };
        match res {
            Ok(p) => Some(Ok(p)),
            Err(err) => self
                .go_slow(|invoker, cx| async move { invoker.retry_first(cx, *first, err).await })
                .err()
                .map(Err),
        }
    }
}

/// The error of an invoker call polled after it gave its context away: a bug in a caller
/// polling a finished future, reported rather than panicked on.
fn taken() -> Error {
    Error::new(
        ErrorKind::Transport,
        "invoker call polled after it finished",
    )
}

impl Future for InvokerCall<'_, '_> {
    type Output = Result<Bytes>;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<Result<Bytes>> {
        let this = self.get_mut();
        let invoker = this.invoker;
        loop {
            match &mut this.state {
                CallState::Wait(f) => {
                    let res = std::task::ready!(Pin::new(&mut f.reply).poll(task));
                    let (addr, first) = (f.addr, f.first.take());
                    let ticket = std::mem::take(&mut f.admitted.ticket);
                    let rpc_timeout = f.admitted.rpc_timeout;
                    this.state = CallState::Done;
                    let res = match this.context() {
                        Ok(cx) => invoker.settle(cx.method(), addr, ticket, rpc_timeout, res),
                        Err(e) => Err(e),
                    };
                    if let Some(res) = this.first_done(Some(addr), first, res) {
                        return Poll::Ready(res);
                    }
                }
                CallState::Slow(fut) => {
                    let res = std::task::ready!(fut.as_mut().poll(task));
                    this.state = CallState::Done;
                    return Poll::Ready(res);
                }
                CallState::Start(payload) => {
                    let payload = std::mem::take(payload);
                    if let Some(res) = this.start(payload, task) {
                        this.state = CallState::Done;
                        return Poll::Ready(res);
                    }
                    // On the fast path the loop polls the reply once right away: it registered
                    // this task's waker when it was sent, and that first poll sees so and stops.
                }
                CallState::Done => return Poll::Ready(Err(taken())),
            }
        }
    }
}

/// Cancels an attempt whose future is dropped before [`Invoker::settle`] (which ends it
/// otherwise; the guard is forgotten then): the balancer learns it is no longer in flight, and
/// a breaker probe it carried is given back.
struct InFlightGuard<'a> {
    lb: &'a dyn LoadBalancer,
    addr: SocketAddr,
    ticket: &'a BreakerTicket,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.ticket.cancel();
        self.lb.on_finish(self.addr);
    }
}

/// A fast-path call dropped while its reply was on the way (its caller stopped waiting) is
/// cancelled the same way; the reply forgets itself.
impl Drop for InvokerCall<'_, '_> {
    fn drop(&mut self) {
        if let CallState::Wait(f) = &self.state {
            f.admitted.ticket.cancel();
            self.invoker.inner.cfg.lb.on_finish(f.addr);
        }
    }
}

/// An attempt the breakers admitted, with its timeouts.
struct Admitted {
    ticket: BreakerTicket,
    rpc_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

/// What a call's retry policy asks for.
enum RetryPlan<'p> {
    /// One attempt.
    Once,
    /// Failure retries (policy type 0).
    Failure(&'p FailurePolicy),
    /// Backup requests (policy type 1).
    Backup(&'p BackupPolicy),
}

impl<'p> RetryPlan<'p> {
    /// The plan `table` (the retry policies in force, if any) has for `method`. The absent
    /// table, the call path's usual case, is decided inline: as a call, it cost ~19
    /// instructions per call.
    #[inline(always)]
    fn of(table: Option<&'p PolicyTable<RetryConfig>>, method: &str) -> Self {
        match table {
            Some(t) => Self::lookup(t, method),
            None => RetryPlan::Once,
        }
    }

    fn lookup(table: &'p PolicyTable<RetryConfig>, method: &str) -> Self {
        match table.lookup(method) {
            Some(r) => match (r.kind, &r.failure_policy, &r.backup_policy) {
                (0, Some(fp), _) => RetryPlan::Failure(fp),
                (1, _, Some(bp)) => RetryPlan::Backup(bp),
                _ => RetryPlan::Once,
            },
            None => RetryPlan::Once,
        }
    }
}

/// What a failure retry carries from the first attempt to the next.
struct Retrying {
    window: Option<Arc<Window>>,
    started: Option<Instant>,
}

impl Retrying {
    /// Before the first attempt of a call under `stop`.
    fn new(invoker: &Invoker, cx: &Context, stop: &StopPolicy) -> Self {
        Self {
            // The retry circuit breaker's window, kept only when the policy uses it.
            window: (stop.cb_policy.error_rate > 0.0).then(|| invoker.retry_window(cx.method())),
            // Read the clock only when the policy bounds the duration.
            started: (stop.max_duration_ms > 0).then(Instant::now),
        }
    }
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

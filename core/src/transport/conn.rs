//! One multiplexed client connection: many calls in flight, replies matched by sequence id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::queue::{Encoded, WriteQueue};
use bytes::Bytes;

use crate::codec::ttheader::{self, MessageType, ReplyFrame};
use crate::error::{Error, ErrorKind, Result};

/// Hashes a sequence id with one multiply (Fibonacci hashing); ids are unique and sequential.
///
/// Not the identity: `hashbrown` takes each entry's 7-bit tag from the hash's top bits, which
/// are all zero for a `u32` hashed to itself, so every probe matched every entry of its group
/// and compared their keys one by one. The multiply by 2⁶⁴/φ spreads the id into the top bits
/// and keeps the low bits (the bucket) distinct for consecutive ids.
#[derive(Default)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}

/// A call in flight: its reply once it came (or the error that ended the wait), and when it
/// stops waiting (milliseconds on the connection clock; 0 = no deadline).
///
/// The reply is handed over here, under the shard's lock, rather than through a channel per
/// call: a `oneshot` cost every call an allocation, its free, and a handful of atomic updates.
struct Waiter {
    slot: Slot,
    deadline_ms: u64,
}

/// Where a call's outcome is.
enum Slot {
    /// Not answered yet; the task to wake when it is (once the caller polled).
    Waiting(Option<Waker>),
    /// Answered; the caller takes it out on its next poll.
    Done(Result<Bytes>),
}

impl Waiter {
    /// Answers the call with `res` unless it has its answer already; returns the task to wake.
    fn answer(&mut self, res: Result<Bytes>) -> Option<Waker> {
        match &mut self.slot {
            Slot::Waiting(waker) => {
                let waker = waker.take();
                self.slot = Slot::Done(res);
                self.deadline_ms = 0;
                waker
            }
            // The first outcome stands (a reply racing a timeout or a failing connection).
            Slot::Done(_) => None,
        }
    }
}

type Waiters = HashMap<u32, Waiter, BuildHasherDefault<SeqHasher>>;

/// How often a connection with timed calls in flight checks their deadlines: timeouts fire
/// at most this late. One check per connection replaces a timer per call.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(5);

const SHARDS: usize = 16;

/// Calls waiting for their reply, sharded by sequence id so callers rarely meet on a lock.
struct Pending {
    shards: [Mutex<Waiters>; SHARDS],
}

impl Pending {
    fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Waiters::default())),
        }
    }

    fn shard(&self, seq: u32) -> std::sync::MutexGuard<'_, Waiters> {
        self.shards[seq as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, seq: u32, deadline_ms: u64, waker: Option<Waker>) {
        self.shard(seq).insert(
            seq,
            Waiter {
                slot: Slot::Waiting(waker),
                deadline_ms,
            },
        );
    }

    fn remove(&self, seq: u32) -> Option<Waiter> {
        self.shard(seq).remove(&seq)
    }

    /// Answers call `seq` with `res`; false if nobody waits for it any more.
    fn answer(&self, seq: u32, res: Result<Bytes>) -> bool {
        let waker = match self.shard(seq).get_mut(&seq) {
            Some(w) => w.answer(res),
            None => return false,
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// The outcome of call `seq` if it has one (taking the call out), else registers the
    /// caller's task to be woken. `Ready(None)` if the call is unknown.
    fn poll(&self, seq: u32, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Bytes>>> {
        use std::collections::hash_map::Entry;
        let mut shard = self.shard(seq);
        let Entry::Occupied(mut entry) = shard.entry(seq) else {
            return Poll::Ready(None);
        };
        if let Slot::Waiting(waker) = &mut entry.get_mut().slot {
            match waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        match entry.remove().slot {
            Slot::Done(res) => Poll::Ready(Some(res)),
            Slot::Waiting(_) => Poll::Ready(None),
        }
    }

    /// Answers every call matching `pick` with `fail()`, waking their tasks outside the
    /// locks; returns how many.
    fn fail_where(&self, pick: impl Fn(&Waiter) -> bool, fail: impl Fn() -> Error) -> usize {
        let mut woken = Vec::new();
        let mut n = 0;
        for shard in &self.shards {
            let mut w = shard.lock().unwrap_or_else(|p| p.into_inner());
            for waiter in w.values_mut() {
                if matches!(waiter.slot, Slot::Waiting(_)) && pick(waiter) {
                    n += 1;
                    woken.extend(waiter.answer(Err(fail())));
                }
            }
        }
        for waker in woken {
            waker.wake();
        }
        n
    }

    /// Fails the calls whose deadline has passed; returns how many.
    fn expire(&self, now_ms: u64, addr: SocketAddr) -> usize {
        self.fail_where(
            |w| w.deadline_ms != 0 && w.deadline_ms <= now_ms,
            || {
                Error::new(
                    ErrorKind::Timeout,
                    format!("no reply from {addr} before the deadline"),
                )
            },
        )
    }

    fn fail_all(&self, err: &Error) {
        self.fail_where(|_| true, || err.clone());
    }
}

struct Shared {
    addr: SocketAddr,
    queue: WriteQueue,
    pending: Pending,
    next_seq: AtomicU32,
    closed: AtomicBool,
    /// Calls in flight that have a deadline; the reader sweeps only while there are some.
    timed: AtomicUsize,
    /// Wakes the reader when the first timed call starts.
    timed_started: Notify,
}

/// A client connection; dropping the last handle closes the socket.
pub(crate) struct Connection {
    shared: Arc<Shared>,
    _close_on_drop: DropGuard,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects to `addr` and starts the connection's reader and writer tasks.
    pub(crate) async fn connect(
        addr: SocketAddr,
        timeout: Option<Duration>,
        max_frame_size: usize,
    ) -> Result<Self> {
        let connect = TcpStream::connect(addr);
        let stream = match timeout {
            Some(t) => tokio::time::timeout(t, connect).await.map_err(|_| {
                Error::new(
                    ErrorKind::Connect,
                    format!("connecting to {addr} timed out after {t:?}"),
                )
            })?,
            None => connect.await,
        }
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Connect,
                format!("connecting to {addr} failed"),
                e,
            )
        })?;
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let shared = Arc::new(Shared {
            addr,
            queue: WriteQueue::new(wr),
            pending: Pending::new(),
            next_seq: AtomicU32::new(1),
            closed: AtomicBool::new(false),
            timed: AtomicUsize::new(0),
            timed_started: Notify::new(),
        });
        let token = CancellationToken::new();

        let (s, t) = (shared.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = t.cancelled() => {}
                res = s.queue.run_writer() => {
                    if let Err(e) = res {
                        tracing::debug!(addr = %s.addr, error = %e, "connection write failed");
                    }
                    t.cancel();
                }
            }
        });

        let (s, t) = (shared.clone(), token.clone());
        tokio::spawn(async move {
            let err = read_loop(&s, &mut rd, &t, max_frame_size).await;
            s.closed.store(true, Ordering::SeqCst);
            s.queue.close();
            t.cancel();
            s.pending.fail_all(&err);
        });

        tracing::debug!(%addr, "connected");
        Ok(Self {
            shared,
            _close_on_drop: token.drop_guard(),
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire) || self.shared.queue.is_closed()
    }

    /// Sends one frame written by `encode` (given the sequence id) and returns the reply to
    /// wait for: the reply payload, or the remote error it carries. With a `timeout`, the call
    /// fails with a [`Timeout`](ErrorKind::Timeout) error once it has waited that long (checked
    /// every [`SWEEP_EVERY`] by the connection's reader, not by a timer per call).
    ///
    /// Sending is synchronous (the frame goes into the write queue), so a call's future holds
    /// only the small [`Reply`], not a state machine around it. The `Reply` keeps the handle it
    /// is given (`self`), so it borrows nothing and a hand-written future can hold it. Dropping
    /// the `Reply` forgets the call; a late reply is discarded.
    ///
    /// `waker` is the task that will poll the `Reply` (the caller's own): registered with the
    /// call, it spares the `Reply`'s first poll a trip through the pending map's lock. A
    /// `Reply` polled by another task registers that one instead.
    pub(crate) fn send(
        self: Arc<Self>,
        timeout: Option<Duration>,
        waker: Waker,
        encode: impl FnOnce(&mut BytesMut, u32) -> Result<Encoded>,
    ) -> Result<Reply> {
        let s = &*self.shared;
        let seq = s.next_seq.fetch_add(1, Ordering::Relaxed);
        // Deadlines round up to the next millisecond, never down.
        let deadline_ms = timeout.map_or(0, |t| now_ms() + t.as_millis() as u64 + 1);
        let registered = Some((waker.data().addr(), waker.vtable()));
        s.pending.insert(seq, deadline_ms, Some(waker));
        if deadline_ms != 0 && s.timed.fetch_add(1, Ordering::AcqRel) == 0 {
            s.timed_started.notify_one();
        }
        let reply = Reply {
            registered,
            forget: Forget {
                conn: self,
                seq,
                timed: deadline_ms != 0,
                answered: false,
            },
        };
        let s = &*reply.forget.conn.shared;
        if s.closed.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Transport,
                format!("connection to {} is closed", s.addr),
            ));
        }
        s.queue.push(|buf| encode(buf, seq))?;
        Ok(reply)
    }
}

/// The reply to a call sent with [`Connection::send`].
pub(crate) struct Reply {
    /// Who the waker registered by `send` is (its data address and vtable, as `will_wake`
    /// compares them), until the first poll.
    registered: Option<(usize, &'static std::task::RawWakerVTable)>,
    forget: Forget,
}

impl Future for Reply {
    type Output = Result<Bytes>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Bytes>> {
        // First poll by the task `send` registered: any answer since then woke that task,
        // which polls again, so there is nothing to look up yet.
        if let Some((data, vtable)) = self.registered.take() {
            let w = cx.waker();
            if w.data().addr() == data && std::ptr::eq(w.vtable(), vtable) {
                return Poll::Pending;
            }
        }
        let f = &self.forget;
        let res = std::task::ready!(f.conn.shared.pending.poll(f.seq, cx));
        // Taken out of the pending calls: nothing is left to forget.
        self.forget.answered = true;
        Poll::Ready(match res {
            Some(res) => res,
            None => Err(Error::new(
                ErrorKind::Transport,
                format!(
                    "connection to {} closed before the reply",
                    self.forget.conn.shared.addr
                ),
            )),
        })
    }
}

use crate::clock::now_ms;

/// Removes a pending call when its caller stops waiting before it was answered.
struct Forget {
    conn: Arc<Connection>,
    seq: u32,
    timed: bool,
    answered: bool,
}

impl Drop for Forget {
    fn drop(&mut self) {
        let shared = &*self.conn.shared;
        if !self.answered {
            shared.pending.remove(self.seq);
        }
        if self.timed {
            shared.timed.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

async fn read_loop(
    s: &Shared,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    token: &CancellationToken,
    max_frame_size: usize,
) -> Error {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let sweep = tokio::time::sleep(SWEEP_EVERY);
    tokio::pin!(sweep);
    // Registered once and kept across iterations: re-registering a waiter on every read
    // would cost a lock per batch.
    let started = s.timed_started.notified();
    tokio::pin!(started);
    loop {
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let timed = s.timed.load(Ordering::Acquire) > 0;
        let n = tokio::select! {
            _ = token.cancelled() => {
                return Error::new(ErrorKind::Transport, format!("connection to {} closed", s.addr));
            }
            n = rd.read_buf(&mut buf) => n,
            // Timed calls in flight: check their deadlines every SWEEP_EVERY. One timer for
            // the connection, re-armed when it fires (select picks ready branches at random,
            // so a busy socket does not starve it).
            () = &mut sweep, if timed => {
                s.pending.expire(now_ms(), s.addr);
                sweep.as_mut().reset(tokio::time::Instant::now() + SWEEP_EVERY);
                continue;
            }
            // The first timed call after an idle spell: start sweeping.
            () = &mut started, if !timed => {
                started.set(s.timed_started.notified());
                continue;
            }
        };
        match n {
            Ok(0) => {
                tracing::debug!(addr = %s.addr, "connection closed by peer");
                return Error::new(
                    ErrorKind::Transport,
                    format!("connection to {} closed by peer", s.addr),
                );
            }
            Ok(_) => loop {
                match ttheader::decode_reply(&mut buf, max_frame_size) {
                    Ok(Some(frame)) => {
                        let seq = frame.seq_id;
                        if !s.pending.answer(seq, reply_of(frame)) {
                            tracing::trace!(seq, "reply to a forgotten call");
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(addr = %s.addr, error = %e, "bad frame from server; closing connection");
                        return e;
                    }
                }
            },
            Err(e) => {
                return Error::transport(format!("reading from {} failed", s.addr), e);
            }
        }
    }
}

/// The payload of a reply frame, or the error an exception frame carries. Done on the reader
/// so that only the payload (not the whole frame) travels to the caller.
fn reply_of(frame: ReplyFrame) -> Result<Bytes> {
    match frame.message_type() {
        Some(MessageType::Reply) => Ok(frame.into_payload()),
        Some(MessageType::Exception) => {
            let code = frame
                .status_code()
                .and_then(|c| c.parse().ok())
                .unwrap_or(crate::error::code::INTERNAL);
            Err(Error::remote(
                code,
                String::from_utf8_lossy(frame.payload()),
            ))
        }
        _ => Err(Error::protocol("reply frame has no valid message type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(p: &Pending, seq: u32, waker: &Waker) -> Poll<Option<Result<Bytes>>> {
        p.poll(seq, &mut TaskContext::from_waker(waker))
    }

    #[test]
    fn consecutive_sequence_ids_get_distinct_hash_tags() {
        use std::hash::BuildHasher;
        // hashbrown files an entry under the hash's top 7 bits; ids that shared them (the
        // identity hash) would make every lookup compare every key of its group.
        let build = BuildHasherDefault::<SeqHasher>::default();
        let tags: std::collections::HashSet<u64> =
            (1..=128u32).map(|seq| build.hash_one(seq) >> 57).collect();
        assert!(tags.len() > 64, "{} distinct tags of 128", tags.len());
        // And the low bits (the bucket) stay distinct for consecutive ids.
        let buckets: std::collections::HashSet<u64> = (1..=1024u32)
            .map(|seq| build.hash_one(seq) & 1023)
            .collect();
        assert_eq!(buckets.len(), 1024);
    }

    #[test]
    fn a_reply_wakes_the_waiting_caller_once_and_the_first_outcome_stands() {
        let p = Pending::new();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        p.insert(7, 0, None);
        assert!(poll(&p, 7, &waker).is_pending());
        assert!(p.answer(7, Ok(Bytes::from_static(b"first"))));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // A second outcome (a late timeout, a failing connection) neither replaces nor wakes.
        assert!(p.answer(7, Err(Error::protocol("late"))));
        p.fail_all(&Error::protocol("closed"));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match poll(&p, 7, &waker) {
            Poll::Ready(Some(Ok(b))) => assert_eq!(&b[..], b"first"),
            other => panic!("expected the first reply, got {other:?}"),
        }
        // Taken: the call is gone, a reply to it is for nobody.
        assert!(!p.answer(7, Ok(Bytes::new())));
        assert!(matches!(poll(&p, 7, &waker), Poll::Ready(None)));
    }

    #[test]
    fn a_waker_registered_with_the_call_is_woken_without_a_poll() {
        let p = Pending::new();
        let count = Arc::new(Count::default());
        p.insert(3, 0, Some(Waker::from(count.clone())));
        assert!(p.answer(3, Ok(Bytes::from_static(b"r"))));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let other = Waker::from(Arc::new(Count::default()));
        assert!(matches!(poll(&p, 3, &other), Poll::Ready(Some(Ok(_)))));
    }

    #[test]
    fn an_answer_before_the_first_poll_is_kept_for_it() {
        let p = Pending::new();
        p.insert(1, 0, None);
        assert!(p.answer(1, Ok(Bytes::from_static(b"early"))));
        let waker = Waker::from(Arc::new(Count::default()));
        assert!(matches!(poll(&p, 1, &waker), Poll::Ready(Some(Ok(_)))));
    }

    #[test]
    fn a_sweep_fails_only_the_calls_past_their_deadline() {
        let p = Pending::new();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        p.insert(1, 10, None);
        p.insert(2, 0, None);
        p.insert(3, 100, None);
        for seq in 1..=3 {
            assert!(poll(&p, seq, &waker).is_pending());
        }
        assert_eq!(p.expire(50, addr), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match poll(&p, 1, &waker) {
            Poll::Ready(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Timeout),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(poll(&p, 2, &waker).is_pending());
        assert!(poll(&p, 3, &waker).is_pending());
        // An expired call is not expired twice; the rest fail with the connection.
        assert_eq!(p.expire(1_000, addr), 1);
        p.fail_all(&Error::protocol("closed"));
        assert_eq!(count.0.load(Ordering::SeqCst), 3);
        match poll(&p, 2, &waker) {
            Poll::Ready(Some(Err(e))) => assert_eq!(e.kind(), ErrorKind::Protocol),
            other => panic!("expected the connection's error, got {other:?}"),
        }
    }
}

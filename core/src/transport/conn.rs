//! One multiplexed client connection: many calls in flight, replies matched by sequence id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::queue::WriteQueue;
use bytes::Bytes;

use crate::codec::ttheader::{self, Frame, MessageType, keys};
use crate::error::{Error, ErrorKind, Result};

/// Hashes a sequence id to itself; ids are unique and sequential.
#[derive(Default)]
struct SeqHasher(u64);

impl Hasher for SeqHasher {
    fn finish(&self) -> u64 {
        self.0
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

type Waiters = HashMap<u32, oneshot::Sender<Result<Bytes>>, BuildHasherDefault<SeqHasher>>;

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

    fn insert(&self, seq: u32, tx: oneshot::Sender<Result<Bytes>>) {
        self.shard(seq).insert(seq, tx);
    }

    fn remove(&self, seq: u32) -> Option<oneshot::Sender<Result<Bytes>>> {
        self.shard(seq).remove(&seq)
    }

    fn fail_all(&self, err: &Error) {
        for shard in &self.shards {
            let drained: Vec<_> = shard
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain()
                .collect();
            for (_, tx) in drained {
                let _ = tx.send(Err(err.clone()));
            }
        }
    }
}

struct Shared {
    addr: SocketAddr,
    queue: WriteQueue,
    pending: Pending,
    next_seq: AtomicU32,
    closed: AtomicBool,
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

    /// Sends one frame written by `encode` (given the sequence id) and waits for its reply:
    /// the reply payload, or the remote error it carries.
    ///
    /// Dropping the returned future (for example on timeout) forgets the call; a late reply is
    /// discarded.
    pub(crate) async fn call(
        &self,
        encode: impl FnOnce(&mut BytesMut, u32) -> Result<()>,
    ) -> Result<Bytes> {
        let s = &*self.shared;
        let seq = s.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        s.pending.insert(seq, tx);
        let _forget = Forget { shared: s, seq };
        if s.closed.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Transport,
                format!("connection to {} is closed", s.addr),
            ));
        }
        s.queue.push(|buf| encode(buf, seq))?;
        match rx.await {
            Ok(res) => res,
            Err(_) => Err(Error::new(
                ErrorKind::Transport,
                format!("connection to {} closed before the reply", s.addr),
            )),
        }
    }
}

/// Removes a pending call when its caller stops waiting.
struct Forget<'a> {
    shared: &'a Shared,
    seq: u32,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.pending.remove(self.seq);
    }
}

async fn read_loop(
    s: &Shared,
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    token: &CancellationToken,
    max_frame_size: usize,
) -> Error {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = tokio::select! {
            _ = token.cancelled() => {
                return Error::new(ErrorKind::Transport, format!("connection to {} closed", s.addr));
            }
            n = rd.read_buf(&mut buf) => n,
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
                match ttheader::decode(&mut buf, max_frame_size) {
                    Ok(Some(frame)) => match s.pending.remove(frame.seq_id) {
                        Some(tx) => {
                            let _ = tx.send(reply_of(frame));
                        }
                        None => tracing::trace!(seq = frame.seq_id, "reply to a forgotten call"),
                    },
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
fn reply_of(frame: Frame) -> Result<Bytes> {
    match frame.message_type() {
        Some(MessageType::Reply) => Ok(frame.payload),
        Some(MessageType::Exception) => {
            let code = frame
                .int_header_str(keys::STATUS_CODE)
                .and_then(|c| c.parse().ok())
                .unwrap_or(crate::error::code::INTERNAL);
            Err(Error::remote(code, String::from_utf8_lossy(&frame.payload)))
        }
        _ => Err(Error::protocol("reply frame has no valid message type")),
    }
}

//! The per-connection write queue and its writer task.
//!
//! Frames are encoded straight into the queue's buffer; a large payload is not copied but kept
//! by reference ([`Encoded::Shared`]) and written in place with a vectored write. The writer
//! task takes the whole buffer and writes it with one syscall. It yields once before taking it,
//! so that every task ready to queue a frame does so first (a woken task otherwise runs next on
//! tokio's LIFO slot, which would mean one write per frame). When the queue passes [`FLUSH_AT`]
//! bytes while the writer is idle, the task that filled it writes them itself with a
//! non-blocking write: the peer starts on the first frames while later ones are still being
//! produced, instead of the two sides taking turns with one large batch each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::codec::ttheader::FrameWriter;
use crate::error::{Error, ErrorKind, Result};

/// A buffer that grew past this is dropped after a write instead of kept.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

/// Queued bytes at which the producing task writes them out itself.
const FLUSH_AT: usize = 32 * 1024;

/// Owned payloads at least this large are queued by reference (see [`Encoded::Shared`]) rather
/// than copied. Below it a copy is cheaper: measured with callgrind at 1 KiB, a shared payload
/// cost each side ~300 instructions more (the queue entry, the I/O vector, and a free that
/// happens after the write, when the allocator's cache no longer has the buffer) than a copy
/// that takes a few dozen cycles.
const SHARE_OWNED_AT: usize = 8 * 1024;

/// Borrowed payloads at least this large are shared too: sharing one costs a reference count
/// (and, for a `Bytes` that was never shared, an allocation) on top of that.
const SHARE_BORROWED_AT: usize = 16 * 1024;

/// I/O vectors per write (Linux's limit).
const MAX_IOV: usize = 1024;

/// What an encoder left to append after the bytes it wrote.
pub(crate) enum Encoded {
    /// The frame is complete in the buffer.
    Done,
    /// The frame ends with this payload: it is written from where it is, not copied.
    Shared(Bytes),
}

/// A frame's payload: owned (written in place, never copied when large) or borrowed from a
/// caller that keeps it, for a retry (shared only when large enough to pay for it).
pub(crate) enum Body<'a> {
    /// The frame's own payload.
    Owned(Bytes),
    /// A payload the caller keeps.
    Borrowed(&'a Bytes),
}

impl Body<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Body::Owned(b) => b,
            Body::Borrowed(b) => b,
        }
    }
}

/// Ends a frame begun with `w` with `body`: copied into the buffer when small, queued by
/// reference when large (no copy; the frame's bytes still leave in order).
#[inline]
pub(crate) fn finish_frame(w: FrameWriter<'_>, body: Body<'_>) -> Result<Encoded> {
    let len = body.as_slice().len();
    let shared = match body {
        Body::Owned(b) if len >= SHARE_OWNED_AT => b,
        Body::Borrowed(b) if len >= SHARE_BORROWED_AT => b.clone(),
        _ => {
            w.finish(body.as_slice())?;
            return Ok(Encoded::Done);
        }
    };
    w.finish_header(len)?;
    Ok(Encoded::Shared(shared))
}

/// Bytes to write: `buf`, with each of `shared` spliced in after `buf[..at]`, from `buf_done`
/// on (the bytes before it are written).
#[derive(Default)]
struct Pending {
    buf: BytesMut,
    /// Bytes of `buf` already written.
    buf_done: usize,
    /// Payloads queued by reference, in order, with the `buf` offset they follow.
    shared: VecDeque<(usize, Bytes)>,
    /// Bytes in `shared`.
    shared_len: usize,
}

impl Pending {
    fn with_capacity(n: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(n),
            ..Self::default()
        }
    }

    /// Bytes still to write.
    fn len(&self) -> usize {
        self.buf.len() - self.buf_done + self.shared_len
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `payload` by reference after the bytes in `buf` so far.
    fn push_shared(&mut self, payload: Bytes) {
        self.shared_len += payload.len();
        self.shared.push_back((self.buf.len(), payload));
    }

    /// Writes what the socket takes now, without waiting: one `write` when nothing is shared,
    /// a vectored write otherwise. The caller marks the bytes written with `consume`.
    fn try_write(&self, io: &OwnedWriteHalf) -> std::io::Result<usize> {
        if self.shared.is_empty() {
            io.try_write(&self.buf[self.buf_done..])
        } else {
            io.try_write_vectored(&self.slices())
        }
    }

    /// The bytes still to write, in order, as at most [`MAX_IOV`] slices.
    fn slices(&self) -> smallvec::SmallVec<[IoSlice<'_>; 64]> {
        let mut out = smallvec::SmallVec::new();
        let mut from = self.buf_done;
        for (at, payload) in &self.shared {
            if out.len() + 2 > MAX_IOV {
                return out;
            }
            if *at > from {
                out.push(IoSlice::new(&self.buf[from..*at]));
            }
            out.push(IoSlice::new(payload));
            from = from.max(*at);
        }
        if from < self.buf.len() && out.len() < MAX_IOV {
            out.push(IoSlice::new(&self.buf[from..]));
        }
        out
    }

    /// Marks the next `n` bytes written.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let before = self.shared.front().map_or(self.buf.len(), |(at, _)| *at);
            let take = n.min(before.saturating_sub(self.buf_done));
            self.buf_done += take;
            n -= take;
            if n == 0 {
                break;
            }
            let Some((_, payload)) = self.shared.front_mut() else {
                break;
            };
            if n >= payload.len() {
                n -= payload.len();
                self.shared_len -= payload.len();
                self.shared.pop_front();
            } else {
                payload.advance(n);
                self.shared_len -= n;
                n = 0;
            }
        }
        if self.is_empty() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.buf_done = 0;
        self.shared.clear();
        self.shared_len = 0;
    }
}

struct State {
    pending: Pending,
    /// The writer task holds bytes it is writing; nobody else may write meanwhile.
    writer_busy: bool,
}

/// Frames waiting to be written on one connection.
pub(crate) struct WriteQueue {
    state: Mutex<State>,
    notify: Notify,
    closed: AtomicBool,
    io: OwnedWriteHalf,
}

impl WriteQueue {
    pub(crate) fn new(io: OwnedWriteHalf) -> Self {
        Self {
            state: Mutex::new(State {
                pending: Pending::with_capacity(16 * 1024),
                writer_busy: false,
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            io,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Encodes one frame into the queue with `encode`, then wakes the writer (or writes a
    /// full queue at once). If `encode` fails, nothing it wrote stays in the queue.
    pub(crate) fn push(&self, encode: impl FnOnce(&mut BytesMut) -> Result<Encoded>) -> Result<()> {
        {
            let mut st = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::new(ErrorKind::Transport, "connection is closed"));
            }
            let p = &mut st.pending;
            let mark = p.buf.len();
            match encode(&mut p.buf) {
                Ok(Encoded::Done) => {}
                Ok(Encoded::Shared(payload)) => p.push_shared(payload),
                Err(e) => {
                    p.buf.truncate(mark);
                    return Err(e);
                }
            }
            if p.len() >= FLUSH_AT && !st.writer_busy {
                // Under the lock, so bytes leave in the order they were queued. A full
                // socket (WouldBlock) or an error leaves the bytes to the writer task.
                let written = st.pending.try_write(&self.io);
                if let Ok(n) = written {
                    st.pending.consume(n);
                }
            }
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Stops taking frames; the writer writes what is queued and ends.
    pub(crate) fn close(&self) {
        {
            // Under the lock, so a frame is either queued before the writer sees the close
            // or refused.
            let _st = self.lock();
            self.closed.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Writes queued frames until the queue is closed and empty, or a write fails.
    pub(crate) async fn run_writer(&self) -> std::io::Result<()> {
        let mut spare = Pending::with_capacity(16 * 1024);
        loop {
            let closed = {
                let mut st = self.lock();
                std::mem::swap(&mut st.pending, &mut spare);
                st.writer_busy = !spare.is_empty();
                self.closed.load(Ordering::Acquire)
            };
            if spare.is_empty() {
                if closed {
                    // The write side shuts down when the queue (owning it) is dropped.
                    return Ok(());
                }
                self.notify.notified().await;
                // Let the tasks that are ready right now queue their frames too.
                tokio::task::yield_now().await;
                continue;
            }
            let res = write_all(&self.io, &mut spare).await;
            if spare.buf.capacity() > KEEP_CAPACITY {
                spare = Pending::with_capacity(16 * 1024);
            } else {
                spare.clear();
            }
            self.lock().writer_busy = false;
            if let Err(e) = res {
                self.closed.store(true, Ordering::Release);
                return Err(e);
            }
        }
    }
}

async fn write_all(io: &OwnedWriteHalf, pending: &mut Pending) -> std::io::Result<()> {
    while !pending.is_empty() {
        io.writable().await?;
        match pending.try_write(io) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => pending.consume(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(parts: &[(&[u8], Option<&'static [u8]>)]) -> Pending {
        let mut p = Pending::default();
        for (inline, shared) in parts {
            p.buf.extend_from_slice(inline);
            if let Some(s) = shared {
                p.push_shared(Bytes::from_static(s));
            }
        }
        p
    }

    fn flat(p: &Pending) -> Vec<u8> {
        p.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn slices_splice_shared_payloads_in_order() {
        let p = pending(&[(b"h1", Some(b"PAY1")), (b"", Some(b"P2")), (b"h3", None)]);
        assert_eq!(flat(&p), b"h1PAY1P2h3");
        assert_eq!(p.len(), 10);
    }

    #[test]
    fn consuming_any_prefix_leaves_the_rest() {
        let all = b"h1PAY1P2h3tail";
        for n in 0..=all.len() {
            let mut p = pending(&[
                (b"h1", Some(b"PAY1")),
                (b"", Some(b"P2")),
                (b"h3tail", None),
            ]);
            p.consume(n);
            assert_eq!(flat(&p), &all[n..], "after consuming {n}");
            assert_eq!(p.len(), all.len() - n);
        }
    }

    #[test]
    fn slices_stop_at_the_vector_limit_and_resume_after_consume() {
        let mut p = Pending::default();
        let mut want = Vec::new();
        // Two slices per entry: more entries than one write may carry.
        for i in 0..MAX_IOV {
            let b = (i % 251) as u8;
            p.buf.extend_from_slice(&[b]);
            want.push(b);
            p.push_shared(Bytes::from_static(b"abc"));
            want.extend_from_slice(b"abc");
        }
        let mut got = Vec::new();
        let mut writes = 0;
        while !p.is_empty() {
            let chunk = flat(&p);
            assert!(!chunk.is_empty());
            assert!(p.slices().len() <= MAX_IOV);
            writes += 1;
            got.extend_from_slice(&chunk);
            p.consume(chunk.len());
        }
        assert_eq!(got, want);
        assert!(writes >= 2, "the limit split the bytes into several writes");
    }
}

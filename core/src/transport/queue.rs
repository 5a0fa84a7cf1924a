//! The per-connection write queue and its writer task.
//!
//! Frames are encoded straight into the queue's buffer. The writer task takes the whole buffer
//! and writes it with one syscall. It yields once before taking it, so that every task ready to
//! queue a frame does so first (a woken task otherwise runs next on tokio's LIFO slot, which
//! would mean one write per frame). When the buffer passes [`FLUSH_AT`] while the writer is
//! idle, the task that filled it writes it itself with a non-blocking `try_write`: the peer
//! starts on the first frames while later ones are still being produced, instead of the two
//! sides taking turns with one large batch each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, BytesMut};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;

use crate::error::{Error, ErrorKind, Result};

/// A buffer that grew past this is dropped after a write instead of kept.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

/// Queued bytes at which the producing task writes them out itself.
const FLUSH_AT: usize = 32 * 1024;

struct State {
    buf: BytesMut,
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
                buf: BytesMut::with_capacity(16 * 1024),
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
    /// full buffer at once). If `encode` fails, nothing it wrote stays in the queue.
    pub(crate) fn push(&self, encode: impl FnOnce(&mut BytesMut) -> Result<()>) -> Result<()> {
        {
            let mut st = self.lock();
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::new(ErrorKind::Transport, "connection is closed"));
            }
            let mark = st.buf.len();
            if let Err(e) = encode(&mut st.buf) {
                st.buf.truncate(mark);
                return Err(e);
            }
            if st.buf.len() >= FLUSH_AT && !st.writer_busy {
                // Under the lock, so bytes leave in the order they were queued. A full
                // socket (WouldBlock) or an error leaves the bytes to the writer task.
                if let Ok(n) = self.io.try_write(&st.buf) {
                    st.buf.advance(n);
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
        let mut spare = BytesMut::with_capacity(16 * 1024);
        loop {
            let closed = {
                let mut st = self.lock();
                std::mem::swap(&mut st.buf, &mut spare);
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
            let res = write_all(&self.io, &spare).await;
            if spare.capacity() > KEEP_CAPACITY {
                spare = BytesMut::with_capacity(16 * 1024);
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

async fn write_all(io: &OwnedWriteHalf, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        io.writable().await?;
        match io.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

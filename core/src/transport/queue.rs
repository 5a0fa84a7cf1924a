//! The per-connection write queue and its writer task.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use crate::error::{Error, ErrorKind, Result};

/// Frames waiting to be written on one connection.
pub(crate) struct WriteQueue {
    buf: Mutex<BytesMut>,
    notify: Notify,
    closed: AtomicBool,
}

/// A buffer that grew past this is dropped after a write instead of kept.
const KEEP_CAPACITY: usize = 4 * 1024 * 1024;

impl WriteQueue {
    pub(crate) fn new() -> Self {
        Self {
            buf: Mutex::new(BytesMut::with_capacity(16 * 1024)),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Encodes one frame into the queue with `encode`, then wakes the writer. If `encode`
    /// fails, nothing it wrote stays in the queue.
    pub(crate) fn push(&self, encode: impl FnOnce(&mut BytesMut) -> Result<()>) -> Result<()> {
        {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::new(ErrorKind::Transport, "connection is closed"));
            }
            let mark = buf.len();
            if let Err(e) = encode(&mut buf) {
                buf.truncate(mark);
                return Err(e);
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
            let _buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            self.closed.store(true, Ordering::Release);
        }
        self.notify.notify_one();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Writes queued frames until the queue is closed and empty, or a write fails.
    pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(&self, mut io: W) -> std::io::Result<()> {
        let mut spare = BytesMut::with_capacity(16 * 1024);
        loop {
            let closed = {
                let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
                std::mem::swap(&mut *buf, &mut spare);
                self.closed.load(Ordering::Acquire)
            };
            if spare.is_empty() {
                if closed {
                    let _ = io.shutdown().await;
                    return Ok(());
                }
                self.notify.notified().await;
                // Let the tasks that are ready right now (other callers, other handlers) queue
                // their frames too, so one write carries them all: a woken task runs next on
                // tokio's LIFO slot, which would otherwise mean one write per frame.
                tokio::task::yield_now().await;
                continue;
            }
            let res = io.write_all(&spare).await;
            if spare.capacity() > KEEP_CAPACITY {
                spare = BytesMut::with_capacity(16 * 1024);
            } else {
                spare.clear();
            }
            if let Err(e) = res {
                self.closed.store(true, Ordering::Release);
                return Err(e);
            }
        }
    }
}

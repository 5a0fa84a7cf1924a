//! The raw-TCP ceiling: tokio, length-prefixed frames `[u32 length][u64 id][payload]`,
//! requests pipelined on one connection and matched by id, the server echoing each frame.
//! No headers, no codec, no middleware: the best a framed multiplexed protocol can do here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};

use crate::BoxError;

/// Starts the echo server; returns its address.
///
/// # Errors
/// If binding fails.
pub async fn serve(addr: SocketAddr) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo_conn(stream));
        }
    });
    Ok(local)
}

async fn echo_conn(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if inbuf.capacity() - inbuf.len() < 8 * 1024 {
            inbuf.reserve(64 * 1024);
        }
        match rd.read_buf(&mut inbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Echo every whole frame; write them all with one syscall.
        while inbuf.len() >= 4 {
            let len = u32::from_be_bytes([inbuf[0], inbuf[1], inbuf[2], inbuf[3]]) as usize;
            if inbuf.len() < 4 + len {
                break;
            }
            out.extend_from_slice(&inbuf.split_to(4 + len));
        }
        if !out.is_empty() {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

type Waiters = Mutex<HashMap<u64, oneshot::Sender<Bytes>>>;

struct Shared {
    out: Mutex<BytesMut>,
    notify: Notify,
    waiters: [Waiters; 16],
    next: AtomicU64,
}

/// A pipelined client on one connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("raw::Client")
    }
}

impl Client {
    /// Connects to `addr`.
    ///
    /// # Errors
    /// If connecting fails.
    pub async fn connect(addr: SocketAddr) -> Result<Self, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut rd, mut wr) = stream.into_split();
        let shared = Arc::new(Shared {
            out: Mutex::new(BytesMut::with_capacity(64 * 1024)),
            notify: Notify::new(),
            waiters: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next: AtomicU64::new(0),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            let mut spare = BytesMut::with_capacity(64 * 1024);
            loop {
                std::mem::swap(&mut *s.out.lock().expect("lock"), &mut spare);
                if spare.is_empty() {
                    s.notify.notified().await;
                    // Let every ready caller queue its frame first: one write for all.
                    tokio::task::yield_now().await;
                    continue;
                }
                if wr.write_all(&spare).await.is_err() {
                    return;
                }
                spare.clear();
            }
        });
        let s = shared.clone();
        tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(64 * 1024);
            loop {
                if buf.capacity() - buf.len() < 8 * 1024 {
                    buf.reserve(64 * 1024);
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + len {
                        break;
                    }
                    let mut frame = buf.split_to(4 + len).freeze();
                    frame.advance(4);
                    let id = frame.get_u64();
                    let tx = s.waiters[id as usize % 16]
                        .lock()
                        .expect("lock")
                        .remove(&id);
                    if let Some(tx) = tx {
                        let _ = tx.send(frame);
                    }
                }
            }
        });
        Ok(Self { shared })
    }

    /// Sends `payload` and waits for its echo.
    ///
    /// # Errors
    /// If the connection closed.
    pub async fn call(&self, payload: &[u8]) -> Result<Bytes, BoxError> {
        let s = &*self.shared;
        let id = s.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        s.waiters[id as usize % 16]
            .lock()
            .expect("lock")
            .insert(id, tx);
        {
            let mut out = s.out.lock().expect("lock");
            out.put_u32((8 + payload.len()) as u32);
            out.put_u64(id);
            out.put_slice(payload);
        }
        s.notify.notify_one();
        Ok(rx.await?)
    }
}

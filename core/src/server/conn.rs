//! One server connection: read frames, run each request concurrently, write replies in batches.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use faststr::FastStr;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::ServerInner;
use crate::codec::ttheader::{self, Frame, FrameWriter, MessageType, keys};
use crate::context::Context;
use crate::error::{Error, ErrorKind, Result, code};
use crate::transport::queue::{Body, Encoded, WriteQueue, finish_frame};

pub(super) async fn serve(inner: Arc<ServerInner>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let queue = Arc::new(WriteQueue::new(wr));
    // Dropping this future (a hard stop after the drain timeout) aborts the writer and every
    // request task, which closes the socket: callers see the connection close, not a hang.
    let mut writer = AbortOnDrop(Some({
        let queue = queue.clone();
        tokio::spawn(async move {
            if let Err(e) = queue.run_writer().await {
                tracing::debug!(%peer, error = %e, "writing to client failed");
            }
        })
    }));
    let mut requests = JoinSet::new();
    // The box of the last request that finished without waiting, kept for the next one: most
    // requests finish inline, and the future (~1.4 KiB) is past the size glibc's per-thread
    // cache serves, so a fresh box per request cost a slow `malloc` and `free`.
    let mut spare = None;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
        }
        let n = tokio::select! {
            () = inner.stop_reading.cancelled() => break,
            n = rd.read_buf(&mut buf) => n,
        };
        match n {
            Ok(0) => {
                if !buf.is_empty() {
                    tracing::warn!(%peer, pending = buf.len(), "client closed the connection mid-frame");
                }
                break;
            }
            Ok(_) => loop {
                match ttheader::decode(&mut buf, inner.max_frame_size) {
                    Ok(Some(frame)) => {
                        // Run the request here first: a handler that finishes without waiting
                        // costs no task. One that waits moves to a task of its own.
                        // Built in its box (`Pin::set` writes it in place): building it on the
                        // stack and copying it in cost more per request than the box's other
                        // work.
                        let mut fut = spare.take().unwrap_or_else(|| Box::pin(None));
                        fut.set(Some(handle(inner.clone(), queue.clone(), frame, peer)));
                        let mut noop = std::task::Context::from_waker(std::task::Waker::noop());
                        let ready = match fut.as_mut().as_pin_mut() {
                            Some(f) => f.poll(&mut noop).is_ready(),
                            None => true,
                        };
                        if ready {
                            fut.set(None);
                            spare = Some(fut);
                        } else {
                            requests.spawn(async move {
                                if let Some(f) = fut.as_mut().as_pin_mut() {
                                    f.await;
                                }
                            });
                            while requests.try_join_next().is_some() {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "bad frame from client; closing its connection");
                        break 'read;
                    }
                }
            },
            Err(e) => {
                tracing::debug!(%peer, error = %e, "reading from client failed");
                break;
            }
        }
    }
    // Let in-flight requests finish and their replies go out, then close.
    while requests.join_next().await.is_some() {}
    queue.close();
    if let Some(w) = writer.0.take() {
        let _ = w.await;
    }
}

struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

async fn handle(inner: Arc<ServerInner>, queue: Arc<WriteQueue>, frame: Frame, peer: SocketAddr) {
    let seq = frame.seq_id;
    let res = dispatch(&inner, frame, peer).await;
    let pushed = queue.push(|buf| match res {
        Ok(payload) => {
            let w = FrameWriter::begin(
                buf,
                seq,
                ttheader::protocol::PROTOBUF,
                &[(keys::MSG_TYPE, MessageType::Reply.as_ascii())],
            )?;
            finish_frame(w, Body::Owned(payload))
        }
        Err(e) => {
            let (code, msg) = wire_error(&e);
            let code = code.to_string();
            let w = FrameWriter::begin(
                buf,
                seq,
                ttheader::protocol::PROTOBUF,
                &[
                    (keys::MSG_TYPE, MessageType::Exception.as_ascii()),
                    (keys::STATUS_CODE, code.as_bytes()),
                ],
            )?;
            w.finish(msg.as_bytes())?;
            Ok(Encoded::Done)
        }
    });
    if let Err(e) = pushed {
        tracing::debug!(%peer, seq, error = %e, "reply not sent");
    }
}

/// The code and message an error travels to the client with.
fn wire_error(e: &Error) -> (u32, String) {
    match e.remote_code() {
        Some(code) => (code, e.message().to_string()),
        None => match e.kind() {
            ErrorKind::Codec => (code::BAD_REQUEST, e.to_string()),
            ErrorKind::RateLimited => (code::RATE_LIMITED, e.to_string()),
            _ => (code::INTERNAL, e.to_string()),
        },
    }
}

async fn dispatch(inner: &ServerInner, frame: Frame, peer: SocketAddr) -> Result<bytes::Bytes> {
    if frame.message_type() != Some(MessageType::Call) {
        return Err(Error::remote(code::BAD_REQUEST, "frame is not a call"));
    }
    let Some(method) = frame.int_header_str(keys::TO_METHOD) else {
        return Err(Error::remote(code::BAD_REQUEST, "call names no method"));
    };
    let caller = frame.int_header_str(keys::FROM_SERVICE).unwrap_or("");
    let mut cx = Context::new(
        FastStr::new(caller),
        inner.service.clone(),
        FastStr::new(method),
    );
    cx.rpc_info.caller.address = Some(peer);
    for (k, v) in frame.str_headers() {
        match (std::str::from_utf8(k), std::str::from_utf8(v)) {
            (Ok(k), Ok(v)) => cx.meta.accept_wire(k, v),
            _ => tracing::debug!(%peer, "ignoring a non-UTF-8 header"),
        }
    }
    inner.process(&mut cx, frame.into_payload()).await
}

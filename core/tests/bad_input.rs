//! Bad input: whatever bytes arrive, the server answers with a typed error or closes only the
//! offending connection, and keeps serving everyone else; the client turns a misbehaving server
//! into typed errors.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use gannet_core::codec::ttheader::{FrameWriter, keys, protocol};
use gannet_core::error::code;
use gannet_core::{Client, ErrorKind, RunningServer};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_FRAME: usize = 64 * 1024;

async fn server() -> RunningServer {
    let (b, _) = echo_server("bad", "s1");
    b.max_frame_size(MAX_FRAME).start().await.unwrap()
}

/// Sends `bytes` on a fresh connection (then keeps it open) and returns whether the server
/// closed the connection, reading whatever it wrote meanwhile.
async fn send_and_see_closed(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .unwrap_or(false)
}

fn frame(method: &str, msg_type: &[u8], payload: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    let w = FrameWriter::begin(
        &mut buf,
        1,
        protocol::PROTOBUF,
        &[
            (keys::TO_METHOD, method.as_bytes()),
            (keys::MSG_TYPE, msg_type),
        ],
    )
    .unwrap();
    w.finish(payload).unwrap();
    buf
}

async fn still_serves(addr: SocketAddr) {
    let client = Client::builder("bad").address(addr).build().unwrap();
    let r: Echo = client.call("Echo", &echo("still here")).await.unwrap();
    assert_eq!(r.text, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_wrong_magic_and_oversize_frames_close_only_their_connection() {
    init_tracing();
    let server = server().await;
    let addr = server.local_addr();
    // A live client on its own connection, before and after.
    let client = Client::builder("bad").address(addr).build().unwrap();
    let _: Echo = client.call("Echo", &echo("before")).await.unwrap();

    assert!(
        send_and_see_closed(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        "garbage"
    );
    assert!(
        send_and_see_closed(addr, &[0, 0, 0, 20, 0xca, 0xfe, 0, 0]).await,
        "wrong magic"
    );
    // Claims 4 GiB; the server must refuse at once, without waiting for (or allocating) it.
    assert!(
        send_and_see_closed(addr, &[0xff, 0xff, 0xff, 0xf0, 0x10, 0x00]).await,
        "oversize"
    );
    // Just over the configured maximum.
    let big = vec![0u8; MAX_FRAME + 16];
    let f = frame("Echo", b"1", &big);
    assert!(send_and_see_closed(addr, &f).await, "over max_frame_size");
    // Header size pointing past the frame.
    let mut f = frame("Echo", b"1", b"");
    f[12] = 0xff;
    f[13] = 0xff;
    assert!(send_and_see_closed(addr, &f).await, "malformed header");

    let r: Echo = client.call("Echo", &echo("after")).await.unwrap();
    assert_eq!(r.text, "after");
    assert_eq!(
        client.connection_count(),
        1,
        "the good connection was never touched"
    );
    still_serves(addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_close_leaves_the_server_serving() {
    init_tracing();
    let server = server().await;
    let addr = server.local_addr();
    let f = frame("Echo", b"1", b"some payload");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&f[..f.len() / 2]).await.unwrap();
    drop(s);
    still_serves(addr).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_bad_payload_and_non_call_frames_get_error_codes() {
    init_tracing();
    let server = server().await;
    let client = Client::builder("bad")
        .address(server.local_addr())
        .build()
        .unwrap();

    let err = client
        .call::<_, Echo>("NoSuchMethod", &echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(code::UNKNOWN_METHOD));
    assert!(err.message().contains("NoSuchMethod"), "{err}");
    assert!(!err.is_retryable());

    // Bytes that are not a valid Echo message.
    let mut cx = client.context("Echo");
    let err = client
        .call_raw(&mut cx, bytes::Bytes::from_static(&[0xff, 0xff, 0xff]))
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(code::BAD_REQUEST), "{err}");

    // The same connection still serves.
    let r: Echo = client.call("Echo", &echo("ok")).await.unwrap();
    assert_eq!(r.text, "ok");
    assert_eq!(client.connection_count(), 1);

    // A reply frame sent to the server is answered with an error, not a dropped connection.
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    s.write_all(&frame("Echo", b"2", b"")).await.unwrap();
    let mut buf = BytesMut::with_capacity(1024);
    let reply = loop {
        assert_ne!(
            s.read_buf(&mut buf).await.unwrap(),
            0,
            "server closed instead of answering"
        );
        if let Some(f) = gannet_core::codec::ttheader::decode(&mut buf, MAX_FRAME).unwrap() {
            break f;
        }
    };
    assert_eq!(reply.int_header_str(keys::STATUS_CODE), Some("2"));
    server.shutdown().await.unwrap();
}

/// Writes a call frame with `ints` headers on `s` and reads the server's answer.
async fn raw_call(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    seq: u32,
    ints: &[(u16, &[u8])],
    payload: &[u8],
) -> gannet_core::codec::ttheader::Frame {
    let mut out = BytesMut::new();
    let mut headers = vec![(keys::MSG_TYPE, &b"1"[..])];
    headers.extend_from_slice(ints);
    let w = FrameWriter::begin(&mut out, seq, protocol::PROTOBUF, &headers).unwrap();
    w.finish(payload).unwrap();
    s.write_all(&out).await.unwrap();
    loop {
        if let Some(f) = gannet_core::codec::ttheader::decode(buf, MAX_FRAME).unwrap() {
            assert_eq!(f.seq_id, seq);
            return f;
        }
        assert_ne!(
            s.read_buf(buf).await.unwrap(),
            0,
            "server closed instead of answering"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_non_utf8_and_unknown_method_names_are_answered_per_call() {
    init_tracing();
    let server = server().await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut buf = BytesMut::with_capacity(4096);
    let status = |f: &gannet_core::codec::ttheader::Frame| {
        f.int_header_str(keys::STATUS_CODE).map(str::to_string)
    };
    let bad_request = code::BAD_REQUEST.to_string();
    let unknown = code::UNKNOWN_METHOD.to_string();

    let f = raw_call(&mut s, &mut buf, 1, &[], b"").await;
    assert_eq!(
        status(&f).as_deref(),
        Some(bad_request.as_str()),
        "no method"
    );
    let f = raw_call(&mut s, &mut buf, 2, &[(keys::TO_METHOD, b"\xffEcho")], b"").await;
    assert_eq!(
        status(&f).as_deref(),
        Some(bad_request.as_str()),
        "not UTF-8"
    );
    let f = raw_call(&mut s, &mut buf, 3, &[(keys::FROM_SERVICE, b"\xfe")], b"").await;
    assert_eq!(
        status(&f).as_deref(),
        Some(bad_request.as_str()),
        "caller only"
    );

    // Unknown methods between good calls on one connection: each answer names its own call's
    // method, and the good calls go on.
    let payload = prost::Message::encode_to_vec(&echo("same connection"));
    for i in 0..10u32 {
        let method = format!("Missing{i}");
        let f = raw_call(
            &mut s,
            &mut buf,
            10 + i,
            &[(keys::TO_METHOD, method.as_bytes())],
            b"",
        )
        .await;
        assert_eq!(status(&f).as_deref(), Some(unknown.as_str()));
        let text = String::from_utf8_lossy(f.payload()).into_owned();
        assert!(text.ends_with(&format!("/{method}")), "{text}");
        // Echo in between, from callers named differently each time.
        let caller = format!("caller{i}");
        let f = raw_call(
            &mut s,
            &mut buf,
            100 + i,
            &[
                (keys::TO_METHOD, b"Echo"),
                (keys::FROM_SERVICE, caller.as_bytes()),
            ],
            &payload,
        )
        .await;
        assert_eq!(status(&f), None, "Echo answered with an error");
        let reply: Echo = prost::Message::decode(f.payload()).unwrap();
        assert_eq!(reply.text, "same connection");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_garbage_gives_the_client_a_protocol_error() {
    init_tracing();
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"\x00\x00\x00\x10HELLO WORLD!!!!!!").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let client = Client::builder("liar").address(addr).build().unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.call::<_, Echo>("Echo", &echo("x")),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connect_error() {
    init_tracing();
    let client = Client::builder("nowhere")
        .address(dead_addr())
        .build()
        .unwrap();
    let err = client
        .call::<_, Echo>("Echo", &echo("x"))
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_name_too_long_for_a_header_fails_each_call_not_the_client() {
    init_tracing();
    let server = server().await;
    // A header value holds at most 65,535 bytes.
    let client = Client::builder("bad")
        .caller("c".repeat(70_000))
        .address(server.local_addr())
        .build()
        .unwrap();
    for _ in 0..2 {
        let err = client
            .call::<_, Echo>("Echo", &echo("x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.message().contains("longer than 65535"), "{err}");
    }
    still_serves(server.local_addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_builders_are_config_errors() {
    let err = Client::builder("")
        .address(dead_addr())
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = Client::builder("svc").build().unwrap_err();
    assert!(err.message().contains("no resolver"), "{err}");
    let err = gannet_core::Server::builder("svc")
        .bind(loopback())
        .start()
        .await
        .unwrap_err();
    assert!(err.message().contains("no handler"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Random bytes on a live connection never take the server down.
    #[test]
    fn random_bytes_never_take_the_server_down(data in proptest::collection::vec(any::<u8>(), 1..2048)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        rt.block_on(async {
            let server = server().await;
            let addr = server.local_addr();
            let mut s = TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(&data).await;
            drop(s);
            still_serves(addr).await;
            server.shutdown().await.unwrap();
        });
    }
}

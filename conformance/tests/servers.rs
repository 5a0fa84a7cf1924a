//! Each test server of the harness starts from the binaries `scripts/install-test-servers`
//! caches, answers its real API, and (where it can) stops and comes back.

use std::time::Duration;

use gannet_conformance::harness::{Consul, Etcd, Nacos, OtelCollector, Prometheus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.0 request on loopback; returns (status line, body).
async fn http(host_port: &str, method: &str, path: &str, body: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(host_port)
        .await
        .expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host_port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

async fn eventually(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_keeps_data_across_a_restart() {
    let etcd = Etcd::start().await.unwrap();
    etcd.put_raw("harness/key", b"value").await.unwrap();
    etcd.restart().await.unwrap();
    let hp = etcd.endpoint().trim_start_matches("http://").to_string();
    // "aGFybmVzcy9rZXk=" is base64("harness/key"); "dmFsdWU=" is base64("value")
    let (status, body) = http(&hp, "POST", "/v3/kv/range", r#"{"key":"aGFybmVzcy9rZXk="}"#).await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("dmFsdWU="), "{body}");
    etcd.stop().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(&hp).await.is_err(),
        "stopped means not listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_registers_services_and_comes_back_after_a_restart() {
    let consul = Consul::start().await.unwrap();
    let hp = consul.endpoint().trim_start_matches("http://").to_string();
    let (status, _) = http(
        &hp,
        "PUT",
        "/v1/agent/service/register",
        r#"{"ID":"h1","Name":"harness","Address":"127.0.0.1","Port":9000}"#,
    )
    .await;
    assert!(status.contains("200"), "{status}");
    let (_, body) = http(&hp, "GET", "/v1/health/service/harness", "").await;
    let compact: String = body.split_whitespace().collect();
    assert!(compact.contains("\"Port\":9000"), "{body}");
    consul.restart().await.unwrap();
    let (status, _) = http(&hp, "GET", "/v1/status/leader", "").await;
    assert!(status.contains("200"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacos_serves_the_naming_api() {
    let nacos = Nacos::start().await.unwrap();
    let (status, body) = http(
        nacos.addr(),
        "POST",
        "/nacos/v1/ns/instance?serviceName=harness&ip=127.0.0.1&port=9100&ephemeral=false",
        "",
    )
    .await;
    assert!(status.contains("200"), "{status} {body}");
    let addr = nacos.addr().to_string();
    let listed = eventually(Duration::from_secs(10), async || {
        let (_, body) = http(
            &addr,
            "GET",
            "/nacos/v1/ns/instance/list?serviceName=harness",
            "",
        )
        .await;
        body.contains("9100")
    })
    .await;
    assert!(listed, "the registered instance is listed");
    nacos.restart().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otel_collector_prints_the_spans_it_receives() {
    let collector = OtelCollector::start().await.unwrap();
    let hp = collector
        .http_endpoint()
        .trim_start_matches("http://")
        .to_string();
    let span = r#"{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"scope":{"name":"harness"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"harness-span","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000"}]}]}]}"#;
    let (status, body) = http(&hp, "POST", "/v1/traces", span).await;
    assert!(status.contains("200"), "{status} {body}");
    let printed = eventually(Duration::from_secs(10), async || {
        collector.output().contains("harness-span")
    })
    .await;
    assert!(printed, "collector output:\n{}", collector.output());
    assert!(
        collector
            .output()
            .contains("5b8efff798038103d269b633813fc60c")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_its_target() {
    // A target that serves one counter in the text exposition format.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let body = "# TYPE harness_total counter\nharness_total 42\n";
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    let prom = Prometheus::start(&[target]).await.unwrap();
    // Prometheus answers its first query some seconds after start: poll.
    let scraped = eventually(Duration::from_secs(30), async || {
        prom.query("harness_total")
            .await
            .is_ok_and(|b| b.contains("\"42\""))
    })
    .await;
    assert!(scraped, "{:?}", prom.query("harness_total").await);
}

//! Drives a closed-loop load: `concurrency` tasks each send a request, wait for the reply and
//! send the next. Warm-up calls are not measured; the measured phase runs for a fixed duration
//! or until a bounded number of replies, whichever comes first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::systems::Caller;

/// What load to drive.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    /// Payload size in bytes.
    pub payload: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Unmeasured warm-up.
    pub warmup: Duration,
    /// Measured duration.
    pub duration: Duration,
    /// Stop measuring after this many replies.
    pub max_requests: u64,
}

/// What a load measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadResult {
    /// Replies received in the measured phase.
    pub requests: u64,
    /// Failed calls in the measured phase.
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Length of the measured phase, seconds.
    pub seconds: f64,
    /// Replies per second.
    pub qps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Client CPU seconds in the measured phase (filled by the caller).
    pub client_cpu_s: f64,
    /// Client peak RSS, KiB (filled by the caller).
    pub client_peak_rss_kib: u64,
    /// Lowest and highest QPS over the rounds this result is the median of.
    #[serde(default)]
    pub qps_range: Option<(f64, f64)>,
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

/// Runs the load; `on_measure` is called when the measured phase starts.
///
/// # Panics
/// If a load task panics.
pub async fn run(caller: Caller, cfg: LoadConfig, on_measure: impl FnOnce()) -> LoadResult {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let measured = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![b'x'; cfg.payload]);
    let mut tasks = Vec::with_capacity(cfg.concurrency);
    for _ in 0..cfg.concurrency {
        let (caller, phase, measured, payload) = (
            caller.clone(),
            phase.clone(),
            measured.clone(),
            payload.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                let p = phase.load(Ordering::Relaxed);
                if p == DONE {
                    break;
                }
                let t0 = Instant::now();
                let res = caller.call(&payload).await;
                if phase.load(Ordering::Relaxed) != MEASURE {
                    continue;
                }
                match res {
                    Ok(n) if n == payload.len() => {
                        let _ = hist.record((t0.elapsed().as_micros() as u64).max(1));
                        measured.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(n) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("echo of {n} bytes, sent {}", payload.len())
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (hist, errors, first_error)
        }));
    }
    tokio::time::sleep(cfg.warmup).await;
    on_measure();
    phase.store(MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    while start.elapsed() < cfg.duration && measured.load(Ordering::Relaxed) < cfg.max_requests {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    let requests = measured.load(Ordering::Relaxed);
    phase.store(DONE, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (h, e, f) = t.await.expect("load task");
        hist.add(h).expect("same bounds");
        errors += e;
        first_error = first_error.or(f);
    }
    LoadResult {
        requests,
        errors,
        first_error,
        seconds: elapsed.as_secs_f64(),
        qps: requests as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.50),
        p90_us: hist.value_at_quantile(0.90),
        p99_us: hist.value_at_quantile(0.99),
        p999_us: hist.value_at_quantile(0.999),
        client_cpu_s: 0.0,
        client_peak_rss_kib: 0,
        qps_range: None,
    }
}

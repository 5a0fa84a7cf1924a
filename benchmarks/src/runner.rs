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

type Caught = (Histogram<u64>, u64, Option<String>);

/// Starts `concurrency` closed-loop callers: each calls, waits for the reply and calls again
/// until `state` is `DONE`; replies that arrive while it is `MEASURE` are recorded and counted
/// in `measured`.
fn spawn_callers(
    caller: &Caller,
    payload: &Bytes,
    concurrency: usize,
    state: &Arc<AtomicU8>,
    measured: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Caught>> {
    (0..concurrency)
        .map(|_| {
            let (caller, state, measured, payload) = (
                caller.clone(),
                state.clone(),
                measured.clone(),
                payload.clone(),
            );
            tokio::spawn(async move {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
                let (mut errors, mut first_error) = (0u64, None);
                while state.load(Ordering::Relaxed) != DONE {
                    let t0 = Instant::now();
                    let res = caller.call(&payload).await;
                    if state.load(Ordering::Relaxed) != MEASURE {
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
            })
        })
        .collect()
}

/// Waits for the callers and merges what they recorded.
async fn join_callers(tasks: Vec<tokio::task::JoinHandle<Caught>>) -> Caught {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut errors, mut first_error) = (0, None);
    for t in tasks {
        let (h, e, f) = t.await.expect("load task");
        hist.add(h).expect("same bounds");
        errors += e;
        first_error = first_error.or(f);
    }
    (hist, errors, first_error)
}

/// Runs the load; `on_measure` is called when the measured phase starts.
///
/// # Panics
/// If a load task panics.
pub async fn run(caller: Caller, cfg: LoadConfig, on_measure: impl FnOnce()) -> LoadResult {
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let measured = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![b'x'; cfg.payload]);
    let tasks = spawn_callers(&caller, &payload, cfg.concurrency, &phase, &measured);
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
    let (hist, errors, first_error) = join_callers(tasks).await;
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

/// How to drive several systems in alternation from one client process.
#[derive(Debug, Clone, Copy)]
pub struct AltConfig {
    /// Payload size in bytes.
    pub payload: usize,
    /// Calls in flight at once, during each system's phase.
    pub concurrency: usize,
    /// One phase per system, repeated until this much time has passed, not measured.
    pub warmup: Duration,
    /// Length of one system's phase.
    pub phase: Duration,
    /// The start of every phase that is not measured (the pipeline filling up).
    pub lead_in: Duration,
    /// Cycles measured; a cycle gives every system one phase.
    pub cycles: usize,
}

/// What every system measured over its phases, and its QPS in each cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AltResult {
    /// One result per system, in the order given (CPU is this process's, over the system's
    /// measured windows).
    pub results: Vec<LoadResult>,
    /// Each system's QPS in each cycle.
    pub cycles: Vec<Vec<f64>>,
}

struct Phase {
    requests: u64,
    seconds: f64,
    cpu_s: f64,
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// One system's phase: `concurrency` callers for `cfg.phase`; completions after the lead-in
/// and before the end count. Every call has finished when this returns, so phases never
/// overlap.
async fn phase(caller: &Caller, payload: &Bytes, cfg: &AltConfig) -> Phase {
    let state = Arc::new(AtomicU8::new(WARMUP));
    let measured = Arc::new(AtomicU64::new(0));
    let tasks = spawn_callers(caller, payload, cfg.concurrency, &state, &measured);
    tokio::time::sleep(cfg.lead_in).await;
    let cpu0 = crate::sysstat::cpu_seconds("self").unwrap_or(0.0);
    state.store(MEASURE, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(cfg.phase.saturating_sub(cfg.lead_in)).await;
    let requests = measured.load(Ordering::Relaxed);
    state.store(DONE, Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = crate::sysstat::cpu_seconds("self").unwrap_or(0.0) - cpu0;
    let (hist, errors, first_error) = join_callers(tasks).await;
    Phase {
        requests,
        seconds,
        cpu_s,
        hist,
        errors,
        first_error,
    }
}

/// Drives `callers` in alternation, one system at a time, in phases of `cfg.phase`: every
/// cycle gives each system one phase, every other cycle in reverse order. Systems measured a
/// few hundred milliseconds apart share the machine's state, which on a noisy machine drifts
/// over seconds; `on_measure` is called when the warm-up is over.
///
/// # Panics
/// If a load task panics.
pub async fn run_alternating(
    callers: &[Caller],
    cfg: AltConfig,
    on_measure: impl FnOnce(),
) -> AltResult {
    let payload = Bytes::from(vec![b'x'; cfg.payload]);
    let warm_start = Instant::now();
    while warm_start.elapsed() < cfg.warmup {
        for c in callers {
            phase(c, &payload, &cfg).await;
        }
    }
    on_measure();
    let n = callers.len();
    let mut totals: Vec<Option<Phase>> = (0..n).map(|_| None).collect();
    let mut cycles = vec![Vec::with_capacity(cfg.cycles); n];
    for cycle in 0..cfg.cycles {
        let mut order: Vec<usize> = (0..n).collect();
        if cycle % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let p = phase(&callers[i], &payload, &cfg).await;
            cycles[i].push(p.requests as f64 / p.seconds);
            match &mut totals[i] {
                None => totals[i] = Some(p),
                Some(t) => {
                    t.requests += p.requests;
                    t.seconds += p.seconds;
                    t.cpu_s += p.cpu_s;
                    t.errors += p.errors;
                    t.hist.add(&p.hist).expect("same bounds");
                    if t.first_error.is_none() {
                        t.first_error = p.first_error;
                    }
                }
            }
        }
    }
    let results = totals
        .into_iter()
        .zip(&cycles)
        .map(|(t, per_cycle)| {
            let t = t.expect("at least one cycle");
            let lo = per_cycle.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_cycle.iter().copied().fold(0.0, f64::max);
            LoadResult {
                requests: t.requests,
                errors: t.errors,
                first_error: t.first_error,
                seconds: t.seconds,
                qps: t.requests as f64 / t.seconds,
                p50_us: t.hist.value_at_quantile(0.50),
                p90_us: t.hist.value_at_quantile(0.90),
                p99_us: t.hist.value_at_quantile(0.99),
                p999_us: t.hist.value_at_quantile(0.999),
                client_cpu_s: t.cpu_s,
                client_peak_rss_kib: crate::sysstat::peak_rss_kib("self").unwrap_or(0),
                qps_range: Some((lo, hi)),
            }
        })
        .collect();
    AltResult { results, cycles }
}

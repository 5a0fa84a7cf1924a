//! Circuit breakers per method and per instance: error rate over a sliding window, a minimum
//! sample, and a half-open probe after a cooling period.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{Policy, PolicyHolder, Swappable};
use crate::error::{Error, ErrorKind, Result};
use crate::transport::CowMap;

/// `circuit_break`: open when the error rate over the last 10 seconds reaches `err_rate` with at
/// least `min_sample` calls; after `cooling_timeout_ms` let one probe through (half-open) and
/// close again if it succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitBreakerConfig {
    /// Whether the breaker applies.
    pub enable: bool,
    /// Error rate (0–1] at which the breaker opens.
    pub err_rate: f64,
    /// Calls in the window before the rate is trusted.
    pub min_sample: u64,
    /// How long the breaker stays open before a probe (Gannet extension; default 10 s).
    pub cooling_timeout_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            enable: false,
            err_rate: 0.5,
            min_sample: 200,
            cooling_timeout_ms: 10_000,
        }
    }
}

impl Policy for CircuitBreakerConfig {
    fn is_enabled(&self) -> bool {
        self.enable
    }

    fn validate(&self) -> Result<()> {
        if !(self.err_rate > 0.0 && self.err_rate <= 1.0) {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "circuit breaker err_rate {} is not in (0, 1]",
                    self.err_rate
                ),
            ));
        }
        Ok(())
    }
}

pub(crate) use crate::clock::now_ms;

const BUCKETS: usize = 10;
const BUCKET_MS: u64 = 1000;

#[derive(Default)]
struct Bucket {
    epoch: AtomicU64,
    ok: AtomicU64,
    fail: AtomicU64,
}

/// Success and failure counts over the last ten seconds, in one-second buckets, lock-free.
#[derive(Default)]
pub(crate) struct Window {
    buckets: [Bucket; BUCKETS],
}

impl Window {
    pub(crate) fn record(&self, success: bool) {
        let epoch = now_ms() / BUCKET_MS + 1;
        let b = &self.buckets[epoch as usize % BUCKETS];
        let seen = b.epoch.load(Ordering::Acquire);
        if seen != epoch
            && b.epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            b.ok.store(0, Ordering::Relaxed);
            b.fail.store(0, Ordering::Relaxed);
        }
        if success {
            b.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            b.fail.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (total, failures) over the window.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let epoch = now_ms() / BUCKET_MS + 1;
        let (mut total, mut fails) = (0, 0);
        for b in &self.buckets {
            let e = b.epoch.load(Ordering::Acquire);
            if e + (BUCKETS as u64) > epoch && e <= epoch {
                let ok = b.ok.load(Ordering::Relaxed);
                let fail = b.fail.load(Ordering::Relaxed);
                total += ok + fail;
                fails += fail;
            }
        }
        (total, fails)
    }

    pub(crate) fn reset(&self) {
        for b in &self.buckets {
            b.epoch.store(0, Ordering::Release);
            b.ok.store(0, Ordering::Relaxed);
            b.fail.store(0, Ordering::Relaxed);
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are rejected.
    Open,
    /// One probe call is in flight; others are rejected.
    HalfOpen,
}

/// One breaker.
#[derive(Default)]
pub(crate) struct Breaker {
    window: Window,
    state: AtomicU8,
    since_ms: AtomicU64,
    probing: AtomicBool,
}

/// Whether a call may pass, and if it is the half-open probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    Pass,
    Probe,
}

impl Breaker {
    pub(crate) fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    pub(crate) fn admit(&self, cfg: &CircuitBreakerConfig) -> Option<Admission> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(Admission::Pass),
            _ => {
                let since = self.since_ms.load(Ordering::Acquire);
                if now_ms().saturating_sub(since) < cfg.cooling_timeout_ms {
                    return None;
                }
                // Cooling is over (or a probe got lost): let exactly one probe through.
                if self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.state.store(HALF_OPEN, Ordering::Release);
                    self.since_ms.store(now_ms(), Ordering::Release);
                    Some(Admission::Probe)
                } else {
                    None
                }
            }
        }
    }

    pub(crate) fn record(&self, cfg: &CircuitBreakerConfig, admission: Admission, success: bool) {
        if admission == Admission::Probe {
            if success {
                self.window.reset();
                self.state.store(CLOSED, Ordering::Release);
            } else {
                self.since_ms.store(now_ms(), Ordering::Release);
                self.state.store(OPEN, Ordering::Release);
            }
            self.probing.store(false, Ordering::Release);
            return;
        }
        self.window.record(success);
        if success || self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        let (total, fails) = self.window.counts();
        if total >= cfg.min_sample.max(1) && fails as f64 >= cfg.err_rate * total as f64 {
            self.since_ms.store(now_ms(), Ordering::Release);
            if self
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                tracing::warn!(
                    total,
                    fails,
                    err_rate = cfg.err_rate,
                    "circuit breaker opened"
                );
            }
        }
    }
}

/// A call's passage through the breakers; report its outcome with [`BreakerTicket::finish`].
/// The default ticket passed no breaker.
#[derive(Debug, Default)]
pub(crate) struct BreakerTicket {
    method: Option<(std::sync::Arc<Breaker>, CircuitBreakerConfig, Admission)>,
    instance: Option<(std::sync::Arc<Breaker>, CircuitBreakerConfig, Admission)>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("state", &self.state())
            .finish()
    }
}

impl BreakerTicket {
    pub(crate) fn finish(self, success: bool) {
        if let Some((b, cfg, a)) = self.method {
            b.record(&cfg, a, success);
        }
        if let Some((b, cfg, a)) = self.instance {
            b.record(&cfg, a, success);
        }
    }

    /// The call was cancelled (its caller stopped waiting): it counts for nothing, but a probe
    /// it carried is given back, or the breaker would wait for that probe's outcome forever and
    /// admit nothing. Not a `Drop`: moving entries out of a ticket with one cost every call
    /// ~90 instructions; the owners of an attempt call this when they are dropped mid-call.
    pub(crate) fn cancel(&self) {
        for (b, _, a) in self.method.iter().chain(&self.instance) {
            if *a == Admission::Probe {
                b.probing.store(false, Ordering::Release);
            }
        }
    }
}

/// The client's breakers: one per method (configured by the `circuit_break` policy table) and
/// one per instance (configured by one value for all instances).
#[derive(Default)]
pub struct CircuitBreakers {
    methods: CowMap<String, Breaker>,
    instances: CowMap<SocketAddr, Breaker>,
    /// The configuration of every instance breaker (disabled by default).
    pub instance_config: Swappable<CircuitBreakerConfig>,
}

impl std::fmt::Debug for CircuitBreakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakers")
            .field("instance_config", &self.instance_config)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakers {
    /// The state of `method`'s breaker.
    #[must_use]
    pub fn method_state(&self, method: &str) -> BreakerState {
        self.methods
            .with(method, Breaker::state)
            .unwrap_or(BreakerState::Closed)
    }

    /// The state of the breaker of the instance at `addr`.
    #[must_use]
    pub fn instance_state(&self, addr: &SocketAddr) -> BreakerState {
        self.instances
            .with(addr, Breaker::state)
            .unwrap_or(BreakerState::Closed)
    }

    /// Admits a call to `method` (before an instance is picked).
    pub(crate) fn admit_method(
        &self,
        table: &PolicyHolder<CircuitBreakerConfig>,
        method: &str,
    ) -> Result<BreakerTicket> {
        let mut ticket = BreakerTicket {
            method: None,
            instance: None,
        };
        let cfg = table.load_active().and_then(|t| t.lookup(method).copied());
        if let Some(cfg) = cfg {
            let b = self.methods.get_or_insert_with(method, Breaker::default);
            match b.admit(&cfg) {
                Some(a) => ticket.method = Some((b, cfg, a)),
                None => {
                    return Err(Error::new(
                        ErrorKind::CircuitOpen,
                        format!("circuit breaker of method {method} is open"),
                    ));
                }
            }
        }
        Ok(ticket)
    }

    /// Whether the instance at `addr` may take a call now (without admitting it).
    pub(crate) fn instance_open(&self, addr: &SocketAddr) -> bool {
        let Some(cfg) = self.instance_config.load_enabled() else {
            return false;
        };
        cfg.enable
            && self
                .instances
                .with(addr, |b| {
                    b.state() == BreakerState::Open
                        && now_ms().saturating_sub(b.since_ms.load(Ordering::Acquire))
                            < cfg.cooling_timeout_ms
                })
                .unwrap_or(false)
    }

    /// Admits a call to the instance at `addr`, adding it to `ticket`.
    pub(crate) fn admit_instance(
        &self,
        ticket: &mut BreakerTicket,
        addr: SocketAddr,
    ) -> Result<()> {
        let Some(cfg) = self.instance_config.load_enabled().map(|c| **c) else {
            return Ok(());
        };
        if !cfg.enable {
            return Ok(());
        }
        let b = self.instances.get_or_insert_with(&addr, Breaker::default);
        match b.admit(&cfg) {
            Some(a) => {
                ticket.instance = Some((b, cfg, a));
                Ok(())
            }
            None => Err(Error::new(
                ErrorKind::CircuitOpen,
                format!("circuit breaker of instance {addr} is open"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            enable: true,
            err_rate: 0.5,
            min_sample: 10,
            cooling_timeout_ms: 0,
        }
    }

    #[test]
    fn opens_at_error_rate_after_min_sample() {
        let mut c = cfg();
        c.cooling_timeout_ms = 60_000;
        let b = Breaker::default();
        for _ in 0..4 {
            b.record(&c, Admission::Pass, false);
        }
        assert_eq!(b.state(), BreakerState::Closed, "below min sample");
        for _ in 0..5 {
            b.record(&c, Admission::Pass, true);
        }
        b.record(&c, Admission::Pass, false);
        assert_eq!(b.state(), BreakerState::Open, "5 of 10 failed");
        assert_eq!(b.admit(&c), None);
    }

    #[test]
    fn half_open_probe_closes_or_reopens() {
        let c = cfg();
        let b = Breaker::default();
        for _ in 0..10 {
            b.record(&c, Admission::Pass, false);
        }
        assert_eq!(b.state(), BreakerState::Open);
        // cooling 0: one probe, and only one
        assert_eq!(b.admit(&c), Some(Admission::Probe));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(&c), None);
        b.record(&c, Admission::Probe, false);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(&c), Some(Admission::Probe));
        b.record(&c, Admission::Probe, true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(&c), Some(Admission::Pass));
    }

    #[test]
    fn config_validation() {
        let bad = CircuitBreakerConfig {
            err_rate: 1.5,
            ..cfg()
        };
        assert!(bad.validate().is_err());
        let parsed: CircuitBreakerConfig =
            super::super::parse_json(r#"{"enable": true, "err_rate": 0.3, "min_sample": 100}"#)
                .unwrap();
        assert_eq!(parsed.cooling_timeout_ms, 10_000);
    }
}

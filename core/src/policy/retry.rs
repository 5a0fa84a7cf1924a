//! Retry policies: failure retry with stop conditions and backoff, and backup requests.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Policy;
use crate::error::{Error, ErrorKind, Result};

/// The most retries a policy may ask for.
pub const MAX_RETRY_TIMES: u32 = 5;

/// The transient metainfo key that marks a request as a retry; a server handling a retried
/// request does not retry its own downstream calls (chain stop), unless the policy disables it.
pub const RETRY_TAG: &str = "gannet-retry";

/// `retry`: a failure-retry (`type` 0) or backup-request (`type` 1) policy.
///
/// ```
/// use gannet_core::policy::{parse_json, RetryConfig};
/// let p: RetryConfig = parse_json(r#"{
///     "enable": true, "type": 0,
///     "failure_policy": {
///         "stop_policy": {"max_retry_times": 2, "max_duration_ms": 0,
///                         "disable_chain_stop": false, "ddl_stop": false,
///                         "cb_policy": {"error_rate": 0.1}},
///         "backoff_policy": {"backoff_type": "fixed", "cfg_items": {"fix_ms": 10}},
///         "retry_same_node": false}}"#).unwrap();
/// assert_eq!(p.failure_policy.unwrap().stop_policy.max_retry_times, 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryConfig {
    /// Whether the policy applies.
    pub enable: bool,
    /// 0 = failure retry, 1 = backup request.
    #[serde(rename = "type")]
    pub kind: u8,
    /// The failure-retry settings (`type` 0).
    pub failure_policy: Option<FailurePolicy>,
    /// The backup-request settings (`type` 1).
    pub backup_policy: Option<BackupPolicy>,
}

/// Retry a failed attempt.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FailurePolicy {
    /// When to stop retrying.
    pub stop_policy: StopPolicy,
    /// How long to wait between attempts.
    pub backoff_policy: Option<BackoffPolicy>,
    /// Whether a retry may go to the instance that failed.
    pub retry_same_node: bool,
}

/// Send a second request if the first has not answered after a delay; the first answer wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupPolicy {
    /// The delay before the backup request.
    pub retry_delay_ms: u64,
    /// When not to send it.
    pub stop_policy: StopPolicy,
    /// Whether the backup may go to the same instance.
    pub retry_same_node: bool,
}

/// When to stop retrying.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StopPolicy {
    /// Retries after the first attempt (at most 5).
    pub max_retry_times: u32,
    /// Give up retrying once the call has taken this long (0 = no limit).
    pub max_duration_ms: u64,
    /// Retry even if this request is itself a retry from upstream.
    pub disable_chain_stop: bool,
    /// Do not start a retry that cannot finish before the call's rpc timeout.
    pub ddl_stop: bool,
    /// Stop retrying while the method's recent error rate is above a threshold.
    pub cb_policy: CbPolicy,
}

/// The retry circuit breaker: no retries while the method's error rate over the last
/// ten seconds exceeds `error_rate` (with at least 10 calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CbPolicy {
    /// The error rate (0–1] above which retries stop; 0 = off.
    pub error_rate: f64,
}

/// How long to wait between attempts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackoffPolicy {
    /// `none`, `fixed` (`fix_ms`) or `random` (`min_ms`..`max_ms`).
    pub backoff_type: String,
    /// The type's settings.
    pub cfg_items: HashMap<String, f64>,
}

impl BackoffPolicy {
    fn item(&self, key: &str) -> Option<u64> {
        self.cfg_items.get(key).map(|v| v.max(0.0) as u64)
    }

    /// The wait before the next attempt.
    #[must_use]
    pub fn delay(&self) -> Duration {
        match self.backoff_type.as_str() {
            "fixed" => Duration::from_millis(self.item("fix_ms").unwrap_or(0)),
            "random" => {
                let lo = self.item("min_ms").unwrap_or(0);
                let hi = self.item("max_ms").unwrap_or(lo).max(lo);
                Duration::from_millis(fastrand::u64(lo..=hi))
            }
            _ => Duration::ZERO,
        }
    }

    fn validate(&self) -> Result<()> {
        match self.backoff_type.as_str() {
            "" | "none" => Ok(()),
            "fixed" if self.item("fix_ms").is_some() => Ok(()),
            "random" if self.item("min_ms").is_some() && self.item("max_ms").is_some() => Ok(()),
            "fixed" => Err(cfg_err("fixed backoff needs cfg_items.fix_ms")),
            "random" => Err(cfg_err("random backoff needs cfg_items.min_ms and max_ms")),
            other => Err(cfg_err(format!("unknown backoff_type {other:?}"))),
        }
    }
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, msg)
}

impl StopPolicy {
    /// Whether the request being handled (if any) is itself a retry from upstream and this
    /// policy keeps chain stop on: then no retry or backup is sent downstream.
    #[must_use]
    pub fn chain_stopped(&self) -> bool {
        !self.disable_chain_stop && crate::context::MetaInfo::current_upstream_has(RETRY_TAG)
    }

    fn validate(&self) -> Result<()> {
        if self.max_retry_times > MAX_RETRY_TIMES {
            return Err(cfg_err(format!(
                "max_retry_times {} is above {MAX_RETRY_TIMES}",
                self.max_retry_times
            )));
        }
        if !(0.0..=1.0).contains(&self.cb_policy.error_rate) {
            return Err(cfg_err(format!(
                "cb_policy.error_rate {} is not in [0, 1]",
                self.cb_policy.error_rate
            )));
        }
        Ok(())
    }
}

impl Policy for RetryConfig {
    fn is_enabled(&self) -> bool {
        self.enable
    }

    fn validate(&self) -> Result<()> {
        if !self.enable {
            return Ok(());
        }
        match self.kind {
            0 => {
                let fp = self
                    .failure_policy
                    .as_ref()
                    .ok_or_else(|| cfg_err("type 0 (failure retry) needs failure_policy"))?;
                fp.stop_policy.validate()?;
                if let Some(b) = &fp.backoff_policy {
                    b.validate()?;
                }
                Ok(())
            }
            1 => {
                let bp = self
                    .backup_policy
                    .as_ref()
                    .ok_or_else(|| cfg_err("type 1 (backup request) needs backup_policy"))?;
                bp.stop_policy.validate()?;
                if bp.retry_delay_ms == 0 {
                    return Err(cfg_err("backup_policy.retry_delay_ms must be above 0"));
                }
                Ok(())
            }
            k => Err(cfg_err(format!("unknown retry type {k}"))),
        }
    }
}

impl RetryConfig {
    /// A failure-retry policy of `max_retry_times` with no backoff.
    #[must_use]
    pub fn failure(max_retry_times: u32) -> Self {
        Self {
            enable: true,
            kind: 0,
            failure_policy: Some(FailurePolicy {
                stop_policy: StopPolicy {
                    max_retry_times,
                    ..StopPolicy::default()
                },
                ..FailurePolicy::default()
            }),
            backup_policy: None,
        }
    }

    /// A backup-request policy sending one backup after `delay`.
    #[must_use]
    pub fn backup(delay: Duration) -> Self {
        Self {
            enable: true,
            kind: 1,
            failure_policy: None,
            backup_policy: Some(BackupPolicy {
                retry_delay_ms: delay.as_millis() as u64,
                stop_policy: StopPolicy {
                    max_retry_times: 1,
                    ..StopPolicy::default()
                },
                retry_same_node: false,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_json;
    use super::*;

    #[test]
    fn validation_rejects_bad_values() {
        let too_many = RetryConfig::failure(9);
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .message()
                .contains("max_retry_times")
        );
        let no_policy: RetryConfig = parse_json(r#"{"enable": true, "type": 1}"#).unwrap();
        assert!(no_policy.validate().is_err());
        let bad_backoff: RetryConfig = parse_json(
            r#"{"enable": true, "type": 0, "failure_policy":
                {"backoff_policy": {"backoff_type": "fixed"}}}"#,
        )
        .unwrap();
        assert!(
            bad_backoff
                .validate()
                .unwrap_err()
                .message()
                .contains("fix_ms")
        );
        assert!(
            RetryConfig::backup(Duration::from_millis(5))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn backoff_delays() {
        let fixed: BackoffPolicy =
            parse_json(r#"{"backoff_type": "fixed", "cfg_items": {"fix_ms": 25}}"#).unwrap();
        assert_eq!(fixed.delay(), Duration::from_millis(25));
        let random: BackoffPolicy =
            parse_json(r#"{"backoff_type": "random", "cfg_items": {"min_ms": 10, "max_ms": 20}}"#)
                .unwrap();
        for _ in 0..50 {
            let d = random.delay();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
    }
}

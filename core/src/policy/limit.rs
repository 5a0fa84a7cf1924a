//! Server rate limiting: requests per second and concurrent connections.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Gated;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use super::Policy;
use crate::error::{Error, ErrorKind, Result};

/// `limit`: the server's connection and QPS limits (0 = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitConfig {
    /// Concurrent connections the server accepts.
    pub connection_limit: u64,
    /// Requests per second the server takes.
    pub qps_limit: u64,
}

impl Policy for LimitConfig {
    fn validate(&self) -> Result<()> {
        if self.qps_limit > u64::from(u32::MAX) {
            return Err(Error::new(
                ErrorKind::Config,
                format!("qps_limit {} is above {}", self.qps_limit, u32::MAX),
            ));
        }
        Ok(())
    }
}

struct Active {
    config: LimitConfig,
    qps: Option<DefaultDirectRateLimiter>,
}

/// The server's limiter; swap its config at run time with [`Limiter::store`].
pub struct Limiter {
    /// On while a QPS limit is in force.
    active: Gated<Active>,
    connections: AtomicUsize,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            active: Gated::new(
                Active {
                    config: LimitConfig::default(),
                    qps: None,
                },
                false,
            ),
            connections: AtomicUsize::new(0),
        }
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config())
            .field("connections", &self.connections.load(Ordering::Relaxed))
            .finish()
    }
}

/// A counted connection; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    limiter: Arc<crate::policy::ServerPolicies>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.limiter
            .limit
            .connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    /// The config in force.
    #[must_use]
    pub fn config(&self) -> LimitConfig {
        self.active.load().config
    }

    /// Validates `config` and swaps it in (the QPS bucket starts full).
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error; the config in force stays.
    pub fn store(&self, config: LimitConfig) -> Result<()> {
        config.validate()?;
        let qps = NonZeroU32::new(config.qps_limit as u32)
            .map(|n| RateLimiter::direct(Quota::per_second(n)));
        let limited = qps.is_some();
        self.active.update(|_| (Active { config, qps }, limited));
        Ok(())
    }

    /// Parses, validates and swaps in a JSON config.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error; the config in force stays.
    pub fn set_json(&self, json: &str) -> Result<()> {
        self.store(super::parse_json(json)?)
    }

    /// Takes one request from the QPS budget.
    pub(crate) fn check_qps(&self) -> bool {
        self.active
            .load_if_on()
            .is_none_or(|a| a.qps.as_ref().is_none_or(|l| l.check().is_ok()))
    }

    /// Connections currently open.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    pub(crate) fn admit_connection(
        policies: &Arc<crate::policy::ServerPolicies>,
    ) -> Option<ConnectionPermit> {
        let me = &policies.limit;
        let limit = me.active.load().config.connection_limit;
        let prev = me.connections.fetch_add(1, Ordering::AcqRel);
        let permit = ConnectionPermit {
            limiter: policies.clone(),
        };
        if limit > 0 && prev as u64 >= limit {
            drop(permit);
            return None;
        }
        Some(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qps_budget_and_swap() {
        let l = Limiter::default();
        assert!((0..1000).all(|_| l.check_qps()), "unlimited by default");
        l.set_json(r#"{"connection_limit": 0, "qps_limit": 5}"#)
            .unwrap();
        let passed = (0..100).filter(|_| l.check_qps()).count();
        // governor allows a burst of the quota, then refills; 100 quick checks pass about 5
        assert!((5..=7).contains(&passed), "{passed}");
        assert!(l.set_json(r#"{"qps_limit": -1}"#).is_err());
        assert_eq!(l.config().qps_limit, 5);
    }

    #[test]
    fn connection_limit() {
        let p = Arc::new(crate::policy::ServerPolicies::default());
        p.limit.set_json(r#"{"connection_limit": 2}"#).unwrap();
        let a = Limiter::admit_connection(&p).unwrap();
        let _b = Limiter::admit_connection(&p).unwrap();
        assert!(Limiter::admit_connection(&p).is_none());
        assert_eq!(p.limit.connections(), 2);
        drop(a);
        assert!(Limiter::admit_connection(&p).is_some());
    }
}

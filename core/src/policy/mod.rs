//! Governance policies: timeouts, retries, circuit breakers, rate limits and degradation.
//!
//! Each policy lives in a holder that is read with one atomic load on the call path and
//! swapped whole from any task ([`PolicyHolder::store`], [`PolicyHolder::set_json`]); calls
//! never wait for a swap. Per-method policies are tables keyed by method name with a `*`
//! wildcard: a missing or disabled method entry falls back to `*`, then to the built-in default.
//!
//! Values deserialize from the JSON shapes of kitex-contrib's config centers, so a team can move
//! its configs over unchanged.

pub mod circuit_breaker;
pub mod limit;
pub mod retry;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

pub use circuit_breaker::{BreakerState, CircuitBreakerConfig, CircuitBreakers};
pub use limit::{LimitConfig, Limiter};
pub use retry::{BackoffPolicy, BackupPolicy, FailurePolicy, RetryConfig, StopPolicy};

use crate::error::{Error, ErrorKind, Result};

/// The method key that applies to every method without an entry of its own.
pub const WILDCARD: &str = "*";

/// A policy value that can be switched off per method.
pub trait Policy: Clone + fmt::Debug + Send + Sync + 'static {
    /// Whether this entry applies (a disabled entry falls back to `*`, then to the default).
    fn is_enabled(&self) -> bool {
        true
    }

    /// Checks the value, explaining what is wrong.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error naming the bad field.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
}

/// A per-method table of one policy.
///
/// Lookups run on every call, so the table is resolved when it is built: the enabled `*` entry
/// is kept aside and the enabled per-method entries go in a fast-hashed map. A table with only
/// `*` (the common shape) answers without hashing.
#[derive(Debug, Clone)]
pub struct PolicyTable<T> {
    methods: HashMap<String, T>,
    enabled: HashMap<Box<str>, T, crate::transport::FastHash>,
    wildcard: Option<T>,
}

impl<T> Default for PolicyTable<T> {
    fn default() -> Self {
        Self {
            methods: HashMap::new(),
            enabled: HashMap::default(),
            wildcard: None,
        }
    }
}

impl<T: Policy> PolicyTable<T> {
    fn new(methods: HashMap<String, T>) -> Self {
        let wildcard = methods.get(WILDCARD).filter(|p| p.is_enabled()).cloned();
        let enabled = methods
            .iter()
            .filter(|(m, p)| m.as_str() != WILDCARD && p.is_enabled())
            .map(|(m, p)| (Box::from(m.as_str()), p.clone()))
            .collect();
        Self {
            methods,
            enabled,
            wildcard,
        }
    }

    /// The policy in force for `method`: its own enabled entry, else an enabled `*`, else none
    /// (the built-in default applies).
    #[must_use]
    pub fn lookup(&self, method: &str) -> Option<&T> {
        if self.enabled.is_empty() {
            return self.wildcard.as_ref();
        }
        self.enabled.get(method).or(self.wildcard.as_ref())
    }

    /// Whether any entry applies (an enabled `*` or method entry).
    #[must_use]
    pub fn is_active(&self) -> bool {
        self.wildcard.is_some() || !self.enabled.is_empty()
    }

    /// The entries.
    #[must_use]
    pub fn entries(&self) -> &HashMap<String, T> {
        &self.methods
    }
}

/// A swappable value with a flag saying whether it is worth loading: calls skip the load while
/// the flag is off (the common case of a policy nobody set). Writers are serialised, so the
/// flag always describes the last value stored; a store becomes visible to calls at the flag's
/// release store, as it does at the `ArcSwap` store.
pub(crate) struct Gated<T> {
    value: ArcSwap<T>,
    on: AtomicBool,
    write: Mutex<()>,
}

impl<T> Gated<T> {
    pub(crate) fn new(value: T, on: bool) -> Self {
        Self {
            value: ArcSwap::from_pointee(value),
            on: AtomicBool::new(on),
            write: Mutex::new(()),
        }
    }

    /// The current value, whether the flag is on or not.
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.value.load()
    }

    /// The current value if the flag is on; `None` (without loading it) if it is off.
    pub(crate) fn load_if_on(&self) -> Option<arc_swap::Guard<Arc<T>>> {
        self.on.load(Ordering::Acquire).then(|| self.value.load())
    }

    /// Replaces the value with what `update` makes of the current one, and sets the flag.
    pub(crate) fn update(&self, update: impl FnOnce(&T) -> (T, bool)) {
        let _writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let (value, on) = update(&self.value.load());
        self.value.store(Arc::new(value));
        self.on.store(on, Ordering::Release);
    }
}

/// A swappable per-method policy table.
///
/// ```
/// use gannet_core::policy::{PolicyHolder, TimeoutConfig};
/// let holder = PolicyHolder::<TimeoutConfig>::default();
/// holder.set_json(r#"{"*": {"rpc_timeout_ms": 1000, "conn_timeout_ms": 50},
///                     "Slow": {"rpc_timeout_ms": 5000}}"#).unwrap();
/// assert_eq!(holder.load().lookup("Slow").unwrap().rpc_timeout_ms, 5000);
/// assert_eq!(holder.load().lookup("Echo").unwrap().rpc_timeout_ms, 1000);
/// // bad values are refused and the table stays as it was
/// assert!(holder.set_json(r#"{"*": {"rpc_timeout_ms": "soon"}}"#).is_err());
/// assert_eq!(holder.load().lookup("Echo").unwrap().rpc_timeout_ms, 1000);
/// ```
pub struct PolicyHolder<T> {
    /// On while the table has an entry in force.
    table: Gated<PolicyTable<T>>,
}

impl<T: Policy> Default for PolicyHolder<T> {
    fn default() -> Self {
        Self {
            table: Gated::new(PolicyTable::default(), false),
        }
    }
}

impl<T: Policy> fmt::Debug for PolicyHolder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyHolder")
            .field("methods", &self.table.load().methods)
            .finish()
    }
}

impl<T: Policy> PolicyHolder<T> {
    /// The current table (one atomic load; hold it only briefly).
    pub fn load(&self) -> arc_swap::Guard<Arc<PolicyTable<T>>> {
        self.table.load()
    }

    /// The current table if it has any entry; `None` (without loading it) if it has none.
    pub(crate) fn load_active(&self) -> Option<arc_swap::Guard<Arc<PolicyTable<T>>>> {
        self.table.load_if_on()
    }

    fn replace(&self, update: impl FnOnce(&PolicyTable<T>) -> PolicyTable<T>) {
        self.table.update(|t| {
            let table = update(t);
            let active = table.is_active();
            (table, active)
        });
    }

    /// Validates `methods` and swaps them in.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error if an entry fails validation; the table in force
    /// stays.
    pub fn store(&self, methods: HashMap<String, T>) -> Result<()> {
        for (m, p) in &methods {
            p.validate().map_err(|e| {
                Error::new(ErrorKind::Config, format!("method {m:?}: {}", e.message()))
            })?;
        }
        self.replace(|_| PolicyTable::new(methods));
        Ok(())
    }

    /// Sets the policy of one method (or `*`), keeping the others.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error if `policy` fails validation.
    pub fn set(&self, method: impl Into<String>, policy: T) -> Result<()> {
        policy.validate()?;
        let method = method.into();
        self.replace(|t| {
            let mut methods = t.methods.clone();
            methods.insert(method, policy);
            PolicyTable::new(methods)
        });
        Ok(())
    }

    /// Removes every entry: the built-in default applies again.
    pub fn clear(&self) {
        self.replace(|_| PolicyTable::default());
    }
}

impl<T: Policy + DeserializeOwned> PolicyHolder<T> {
    /// Parses a kitex-contrib style method map (`{"*": {...}, "Method": {...}}`), validates it
    /// and swaps it in.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error if the JSON does not parse or a value is invalid;
    /// the table in force stays.
    pub fn set_json(&self, json: &str) -> Result<()> {
        self.store(parse_json(json)?)
    }
}

/// Parses a JSON policy value into `T`, as a [`Config`](ErrorKind::Config) error on failure.
///
/// # Errors
/// A [`Config`](ErrorKind::Config) error describing where the JSON is wrong.
pub fn parse_json<T: DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json)
        .map_err(|e| Error::with_source(ErrorKind::Config, "invalid policy JSON", e))
}

/// A swappable single policy value (not per method).
pub struct Swappable<T> {
    /// On while the value in force is enabled.
    value: Gated<T>,
}

impl<T: Policy + Default> Default for Swappable<T> {
    fn default() -> Self {
        let value = T::default();
        let enabled = value.is_enabled();
        Self {
            value: Gated::new(value, enabled),
        }
    }
}

impl<T: Policy> fmt::Debug for Swappable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.load().fmt(f)
    }
}

impl<T: Policy> Swappable<T> {
    /// The current value.
    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.value.load()
    }

    /// Validates `value` and swaps it in.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error if it fails validation; the value in force stays.
    pub fn store(&self, value: T) -> Result<()> {
        value.validate()?;
        let enabled = value.is_enabled();
        self.value.update(|_| (value, enabled));
        Ok(())
    }

    /// The current value if it is enabled; `None` (without loading it) if it is not.
    pub(crate) fn load_enabled(&self) -> Option<arc_swap::Guard<Arc<T>>> {
        self.value.load_if_on()
    }
}

impl<T: Policy + DeserializeOwned> Swappable<T> {
    /// Parses, validates and swaps in a JSON value.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error; the value in force stays.
    pub fn set_json(&self, json: &str) -> Result<()> {
        self.store(parse_json(json)?)
    }
}

/// `rpc_timeout`: the timeout of one attempt and of connecting, in milliseconds (0 = use the
/// client's default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutConfig {
    /// Timeout of one attempt of the call.
    pub rpc_timeout_ms: u64,
    /// Timeout of establishing a connection.
    pub conn_timeout_ms: u64,
}

impl Policy for TimeoutConfig {}

impl TimeoutConfig {
    /// The rpc timeout, if set.
    #[must_use]
    pub fn rpc_timeout(&self) -> Option<Duration> {
        (self.rpc_timeout_ms > 0).then(|| Duration::from_millis(self.rpc_timeout_ms))
    }

    /// The connect timeout, if set.
    #[must_use]
    pub fn conn_timeout(&self) -> Option<Duration> {
        (self.conn_timeout_ms > 0).then(|| Duration::from_millis(self.conn_timeout_ms))
    }
}

/// `degradation`: drop a percentage of the client's calls before they are sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DegradationConfig {
    /// Whether degradation applies.
    pub enable: bool,
    /// Share of calls to drop, 0–100.
    pub percentage: u32,
}

impl Policy for DegradationConfig {
    fn is_enabled(&self) -> bool {
        self.enable
    }

    fn validate(&self) -> Result<()> {
        if self.percentage > 100 {
            return Err(Error::new(
                ErrorKind::Config,
                format!("degradation percentage {} is above 100", self.percentage),
            ));
        }
        Ok(())
    }
}

impl DegradationConfig {
    /// Whether this call should be dropped.
    #[must_use]
    pub fn should_drop(&self) -> bool {
        self.enable && self.percentage > 0 && fastrand::u32(..100) < self.percentage
    }
}

/// The client's policies, each swappable at run time (the config center swaps these).
#[derive(Debug, Default)]
pub struct ClientPolicies {
    /// `rpc_timeout` per method.
    pub timeout: PolicyHolder<TimeoutConfig>,
    /// `retry` per method.
    pub retry: PolicyHolder<RetryConfig>,
    /// `circuit_break` per method.
    pub circuit_break: PolicyHolder<CircuitBreakerConfig>,
    /// `degradation`.
    pub degradation: Swappable<DegradationConfig>,
}

/// The server's policies, swappable at run time.
#[derive(Debug, Default)]
pub struct ServerPolicies {
    /// `limit`: connections and QPS.
    pub limit: Limiter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_skip_tables_and_values_nobody_enabled_and_see_them_once_set() {
        let holder = PolicyHolder::<TimeoutConfig>::default();
        assert!(holder.load_active().is_none(), "an empty table is skipped");
        holder
            .set(
                "Echo",
                TimeoutConfig {
                    rpc_timeout_ms: 10,
                    conn_timeout_ms: 0,
                },
            )
            .unwrap();
        let t = holder.load_active().expect("a set entry is seen");
        assert_eq!(t.lookup("Echo").unwrap().rpc_timeout_ms, 10);
        holder.clear();
        assert!(holder.load_active().is_none(), "cleared again");
        holder.set_json(r#"{"*": {"rpc_timeout_ms": 5}}"#).unwrap();
        assert!(holder.load_active().is_some());
        // A refused update leaves the table, and its flag, as they were.
        assert!(holder.set_json("{").is_err());
        assert!(holder.load_active().is_some());

        let breakers = PolicyHolder::<CircuitBreakerConfig>::default();
        breakers
            .set_json(r#"{"Echo": {"enable": false, "err_rate": 0.5, "min_sample": 10}}"#)
            .unwrap();
        assert!(
            breakers.load_active().is_none(),
            "a table of disabled entries has nothing to apply"
        );

        let degradation = Swappable::<DegradationConfig>::default();
        assert!(degradation.load_enabled().is_none());
        degradation
            .store(DegradationConfig {
                enable: true,
                percentage: 100,
            })
            .unwrap();
        assert!(degradation.load_enabled().is_some_and(|d| d.should_drop()));
        degradation.store(DegradationConfig::default()).unwrap();
        assert!(degradation.load_enabled().is_none());
    }

    #[test]
    fn disabled_method_entry_falls_back_to_wildcard_then_default() {
        let holder = PolicyHolder::<CircuitBreakerConfig>::default();
        holder
            .set_json(
                r#"{"*": {"enable": true, "err_rate": 0.3, "min_sample": 10},
                    "Echo": {"enable": false, "err_rate": 0.9, "min_sample": 5}}"#,
            )
            .unwrap();
        let t = holder.load();
        assert_eq!(t.lookup("Echo").unwrap().err_rate, 0.3);
        assert_eq!(t.lookup("Other").unwrap().err_rate, 0.3);
        holder
            .set_json(r#"{"*": {"enable": false, "err_rate": 0.3, "min_sample": 10}}"#)
            .unwrap();
        assert!(holder.load().lookup("Echo").is_none());
    }

    #[test]
    fn method_entries_without_wildcard_and_set_keep_lookups_current() {
        let holder = PolicyHolder::<TimeoutConfig>::default();
        assert!(!holder.load().is_active());
        holder
            .set_json(r#"{"Slow": {"rpc_timeout_ms": 5000}}"#)
            .unwrap();
        let t = holder.load();
        assert!(t.is_active());
        assert_eq!(t.lookup("Slow").unwrap().rpc_timeout_ms, 5000);
        assert!(
            t.lookup("Echo").is_none(),
            "no wildcard: the default applies"
        );
        holder
            .set(
                WILDCARD,
                TimeoutConfig {
                    rpc_timeout_ms: 700,
                    conn_timeout_ms: 0,
                },
            )
            .unwrap();
        let t = holder.load();
        assert_eq!(t.lookup("Echo").unwrap().rpc_timeout_ms, 700);
        assert_eq!(t.lookup("Slow").unwrap().rpc_timeout_ms, 5000);
        holder.clear();
        assert!(holder.load().lookup("Slow").is_none());
    }

    #[test]
    fn degradation_validation_and_drop() {
        let d = Swappable::<DegradationConfig>::default();
        assert!(
            d.set_json(r#"{"enable": true, "percentage": 130}"#)
                .is_err()
        );
        assert!(!d.load().enable);
        d.set_json(r#"{"enable": true, "percentage": 100}"#)
            .unwrap();
        assert!((0..100).all(|_| d.load().should_drop()));
        d.set_json(r#"{"enable": true, "percentage": 0}"#).unwrap();
        assert!((0..100).all(|_| !d.load().should_drop()));
    }
}

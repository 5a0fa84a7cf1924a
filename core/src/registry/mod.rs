//! Registration: the [`Registry`] extension trait, what a server registers ([`RegistryInfo`]),
//! and the plain [`NoopRegistry`]. The in-memory registry is
//! [`MemoryRegistry`](crate::discovery::MemoryRegistry).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::discovery::{DEFAULT_WEIGHT, Instance};
use crate::error::Result;

/// What a server registers about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryInfo {
    /// The service name clients discover it by.
    pub service_name: String,
    /// The advertised address (never `0.0.0.0`).
    pub address: SocketAddr,
    /// Relative share of traffic.
    pub weight: u32,
    /// Free-form tags.
    pub tags: HashMap<String, String>,
    /// When the server started.
    pub start_time: SystemTime,
    /// How long the instance should warm up before taking full traffic.
    pub warmup: Duration,
}

impl RegistryInfo {
    /// Info for `service_name` at `address`, with the default weight and no tags.
    #[must_use]
    pub fn new(service_name: impl Into<String>, address: SocketAddr) -> Self {
        Self {
            service_name: service_name.into(),
            address,
            weight: DEFAULT_WEIGHT,
            tags: HashMap::new(),
            start_time: SystemTime::now(),
            warmup: Duration::ZERO,
        }
    }

    /// The instance clients will see.
    #[must_use]
    pub fn instance(&self) -> Instance {
        Instance {
            address: self.address,
            weight: self.weight,
            tags: self.tags.clone(),
        }
    }
}

/// Registers a server so that clients can discover it. Object-safe.
///
/// Adapters keep registrations alive through lease or session loss and server restarts on
/// their own (re-registering), and log when they do.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Makes `info` discoverable.
    async fn register(&self, info: &RegistryInfo) -> Result<()>;
    /// Removes `info`.
    async fn deregister(&self, info: &RegistryInfo) -> Result<()>;
}

/// A registry that registers nowhere (the server default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRegistry;

#[async_trait]
impl Registry for NoopRegistry {
    async fn register(&self, _info: &RegistryInfo) -> Result<()> {
        Ok(())
    }
    async fn deregister(&self, _info: &RegistryInfo) -> Result<()> {
        Ok(())
    }
}

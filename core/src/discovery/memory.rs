//! An in-memory registry and resolver pair that pushes changes: the embedded default for
//! examples, tests and single-process use.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;

use super::{Instance, Resolver};
use crate::error::{Error, ErrorKind, Result};
use crate::registry::{Registry, RegistryInfo};

/// A registry held in memory; clone it to share. Its [`resolver`](MemoryRegistry::resolver)
/// sees registrations at once, pushed without polling.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> gannet_core::Result<()> {
/// use gannet_core::discovery::{MemoryRegistry, Resolver};
/// use gannet_core::registry::{Registry, RegistryInfo};
/// let registry = MemoryRegistry::new();
/// registry.register(&RegistryInfo::new("echo", "127.0.0.1:8888".parse().unwrap())).await?;
/// let found = registry.resolver().resolve("echo").await?;
/// assert_eq!(found.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryRegistry {
    services: Arc<Mutex<HashMap<String, watch::Sender<Vec<Instance>>>>>,
    name: Arc<str>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self {
            services: Arc::default(),
            // Each registry is its own backend for the discovery cache.
            name: format!("memory#{}", NEXT.fetch_add(1, Ordering::Relaxed)).into(),
        }
    }
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_struct("MemoryRegistry")
            .field("services", &services.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A resolver over this registry.
    #[must_use]
    pub fn resolver(&self) -> MemoryResolver {
        MemoryResolver {
            registry: self.clone(),
        }
    }

    fn channel(&self, service: &str) -> watch::Sender<Vec<Instance>> {
        let mut services = self.services.lock().unwrap_or_else(|p| p.into_inner());
        services
            .entry(service.to_string())
            .or_insert_with(|| watch::channel(Vec::new()).0)
            .clone()
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::new(ErrorKind::Registry, "service name is empty"));
    }
    Ok(())
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, info: &RegistryInfo) -> Result<()> {
        check_name(&info.service_name)?;
        let instance = info.instance();
        self.channel(&info.service_name).send_modify(|list| {
            list.retain(|i| i.address != instance.address);
            list.push(instance);
        });
        Ok(())
    }

    async fn deregister(&self, info: &RegistryInfo) -> Result<()> {
        check_name(&info.service_name)?;
        self.channel(&info.service_name)
            .send_modify(|list| list.retain(|i| i.address != info.address));
        Ok(())
    }
}

/// The resolver of a [`MemoryRegistry`].
#[derive(Debug, Clone)]
pub struct MemoryResolver {
    registry: MemoryRegistry,
}

#[async_trait]
impl Resolver for MemoryResolver {
    fn name(&self) -> &str {
        &self.registry.name
    }

    async fn resolve(&self, target: &str) -> Result<Vec<Instance>> {
        check_name(target).map_err(|e| Error::new(ErrorKind::Discovery, e.message()))?;
        Ok(self.registry.channel(target).borrow().clone())
    }

    fn watch(self: Arc<Self>, target: String) -> BoxStream<'static, Result<Vec<Instance>>> {
        if let Err(e) = check_name(&target) {
            return stream::once(async move { Err(Error::new(ErrorKind::Discovery, e.message())) })
                .chain(stream::pending())
                .boxed();
        }
        let rx = self.registry.channel(&target).subscribe();
        stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let list = rx.borrow_and_update().clone();
            Some((Ok(list), (rx, false)))
        })
        .boxed()
    }
}

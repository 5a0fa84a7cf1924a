//! The `nacos-sdk` naming client, built on first use and shared, and the conversions between
//! its instances and Gannet's.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use gannet_core::RegistryInfo;
use gannet_core::discovery::Instance;
use nacos_sdk::api::naming::{NamingService, NamingServiceBuilder, ServiceInstance};
use nacos_sdk::api::props::ClientProps;

use crate::{Error, NacosOptions};

/// A naming client shared by the registries and resolvers built from one [`NacosOptions`].
///
/// Built once, in a task of its own: a caller that stops waiting (its request timeout) leaves
/// the build running for the next caller rather than starting another, since `nacos-sdk`'s
/// connection tasks outlive a dropped build. A failed build is tried again at most every
/// [`REBUILD_AFTER`]; meanwhile callers fail at once.
#[derive(Clone, Default)]
pub(crate) struct Naming(Arc<Mutex<Slot>>);

/// How long after a failed build the next one may start.
pub(crate) const REBUILD_AFTER: Duration = Duration::from_secs(5);

type Build = Shared<BoxFuture<'static, Result<NamingService, Arc<str>>>>;

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    Building(Build),
    Failed {
        why: Arc<str>,
        at: Instant,
    },
}

impl Naming {
    /// The client, connected on first use (and again after a failed attempt).
    pub(crate) async fn get(&self, opts: &NacosOptions) -> Result<NamingService, Error> {
        let what = || format!("connecting to nacos at {}", opts.addr);
        let build = {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match &*slot {
                Slot::Building(b) => b.clone(),
                Slot::Failed { why, at } if at.elapsed() < REBUILD_AFTER => {
                    return Err(Error::Connect {
                        what: what(),
                        why: why.to_string(),
                    });
                }
                Slot::Empty | Slot::Failed { .. } => {
                    let b = start_build(opts);
                    *slot = Slot::Building(b.clone());
                    b
                }
            }
        };
        match tokio::time::timeout(opts.request_timeout, build.clone()).await {
            Ok(Ok(naming)) => Ok(naming),
            Ok(Err(why)) => {
                let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if matches!(&*slot, Slot::Building(b) if b.ptr_eq(&build)) {
                    tracing::warn!(addr = %opts.addr, %why, retry_after = ?REBUILD_AFTER, "connecting to nacos failed");
                    *slot = Slot::Failed {
                        why: why.clone(),
                        at: Instant::now(),
                    };
                }
                Err(Error::Connect {
                    what: what(),
                    why: why.to_string(),
                })
            }
            Err(_) => Err(Error::Timeout {
                what: what(),
                timeout: opts.request_timeout,
            }),
        }
    }
}

/// Starts building a naming client in a task of its own.
fn start_build(opts: &NacosOptions) -> Build {
    let mut props = ClientProps::new()
        .server_addr(opts.addr.clone())
        .namespace(opts.namespace.clone())
        .app_name("gannet")
        // An empty service is a state clients must see (its last instance left), not a
        // glitch to hide: with nacos-sdk's protection on, that push never arrives.
        .naming_push_empty_protection(false);
    let builder = match &opts.auth {
        Some((user, password)) => {
            props = props
                .auth_username(user.clone())
                .auth_password(password.clone());
            NamingServiceBuilder::new(props).enable_auth_plugin_http()
        }
        None => NamingServiceBuilder::new(props),
    };
    let task = tokio::spawn(builder.build());
    async move {
        match task.await {
            Ok(Ok(naming)) => Ok(naming),
            Ok(Err(e)) => Err(Arc::from(e.to_string())),
            Err(e) => Err(Arc::from(format!("the build task failed: {e}"))),
        }
    }
    .boxed()
    .shared()
}

/// Awaits `fut` for at most `timeout`.
pub(crate) async fn run<T>(
    what: &str,
    timeout: Duration,
    fut: impl Future<Output = nacos_sdk::api::error::Result<T>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::Nacos {
            what: what.to_string(),
            source,
        }),
        Err(_) => Err(Error::Timeout {
            what: what.to_string(),
            timeout,
        }),
    }
}

/// The Nacos instance of `info`, in `cluster`.
pub(crate) fn to_nacos(info: &RegistryInfo, cluster: &str) -> ServiceInstance {
    ServiceInstance {
        ip: info.address.ip().to_string(),
        port: i32::from(info.address.port()),
        weight: f64::from(info.weight),
        healthy: true,
        enabled: true,
        ephemeral: true,
        cluster_name: Some(cluster.to_string()),
        service_name: Some(info.service_name.clone()),
        metadata: info.tags.clone(),
        ..ServiceInstance::default()
    }
}

/// Whether `i` is the Nacos instance at `addr`.
pub(crate) fn is_at(i: &ServiceInstance, addr: SocketAddr) -> bool {
    i.port == i32::from(addr.port()) && i.ip.parse::<IpAddr>().ok() == Some(addr.ip())
}

/// The Gannet instance of `i` if it takes calls; instances Gannet cannot call (written by
/// other tools) are skipped and logged.
pub(crate) fn from_nacos(service: &str, i: &ServiceInstance) -> Option<Instance> {
    if !i.healthy || !i.enabled {
        return None;
    }
    let Ok(ip) = i.ip.parse::<IpAddr>() else {
        tracing::warn!(%service, ip = %i.ip, "skipping a nacos instance whose ip is not an IP address");
        return None;
    };
    let Some(port) = u16::try_from(i.port).ok().filter(|p| *p != 0) else {
        tracing::warn!(%service, port = i.port, "skipping a nacos instance with an invalid port");
        return None;
    };
    // Nacos weights are decimals; Gannet's balancers take integers (Nacos's default, 1.0, is 1).
    let weight = if i.weight.is_finite() && i.weight > 0.0 {
        i.weight.round().clamp(1.0, f64::from(u32::MAX)) as u32
    } else {
        0
    };
    let mut instance = Instance::new(SocketAddr::new(ip, port)).with_weight(weight);
    instance.tags = i.metadata.clone();
    Some(instance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_round_trip_with_weight_and_tags() {
        let mut info = RegistryInfo::new("echo", "10.0.0.7:8888".parse().unwrap());
        info.weight = 37;
        info.tags.insert("zone".into(), "a".into());
        let n = to_nacos(&info, "DEFAULT");
        assert!(n.ephemeral && n.healthy && n.enabled);
        assert!(is_at(&n, info.address));
        let back = from_nacos("echo", &n).unwrap();
        assert_eq!(back, info.instance());
    }

    #[test]
    fn instances_gannet_cannot_call_are_skipped() {
        let good = to_nacos(
            &RegistryInfo::new("echo", "10.0.0.7:1".parse().unwrap()),
            "DEFAULT",
        );
        let bad_ip = ServiceInstance {
            ip: "db.internal".into(),
            ..good.clone()
        };
        let bad_port = ServiceInstance {
            port: 70000,
            ..good.clone()
        };
        let unhealthy = ServiceInstance {
            healthy: false,
            ..good.clone()
        };
        for i in [bad_ip, bad_port, unhealthy] {
            assert!(from_nacos("echo", &i).is_none(), "{i:?}");
        }
        let fractional = ServiceInstance {
            weight: 0.4,
            ..good
        };
        assert_eq!(from_nacos("echo", &fractional).unwrap().weight, 1);
    }
}

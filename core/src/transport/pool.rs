//! Connections per instance: a fixed number of multiplexed connections, opened on first use
//! and replaced when they close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Connection, CowMap};
use crate::error::Result;

/// The connections to one instance, as of one version of the pool's map: replacing a
/// connection replaces the instance's `Slots` (connecting is rare), so a call finds its
/// connection with the map's one load.
struct Slots {
    conns: Box<[Option<Arc<Connection>>]>,
    /// What outlives versions: one connect at a time per slot, and the rotation.
    shared: Arc<SlotsShared>,
}

struct SlotsShared {
    connecting: Box<[tokio::sync::Mutex<()>]>,
    next: AtomicUsize,
}

/// The client's connections, keyed by instance address.
pub(crate) struct Pool {
    slots: CowMap<SocketAddr, Slots>,
    per_instance: usize,
    max_frame_size: usize,
}

impl Pool {
    pub(crate) fn new(per_instance: usize, max_frame_size: usize) -> Self {
        Self {
            slots: CowMap::new(),
            per_instance: per_instance.max(1),
            max_frame_size,
        }
    }

    /// A live connection to `addr` if there is one (the call path: no future, one lookup);
    /// otherwise the slot to connect, for [`get`](Pool::get).
    pub(crate) fn ready(&self, addr: SocketAddr) -> Result<Arc<Connection>, Option<usize>> {
        self.slots
            .with(&addr, |slots| {
                let i = self.index(slots);
                match &slots.conns[i] {
                    Some(c) if !c.is_closed() => Ok(c.clone()),
                    _ => Err(Some(i)),
                }
            })
            .unwrap_or(Err(None))
    }

    /// A live connection to `addr` in `slot` (the next one when `None`), connecting if needed.
    /// Boxed: connecting is rare, and its future would otherwise grow every call's.
    pub(crate) fn get(
        &self,
        addr: SocketAddr,
        slot: Option<usize>,
        connect_timeout: Option<Duration>,
    ) -> BoxFuture<'_, Result<Arc<Connection>>> {
        Box::pin(async move {
            let n = self.per_instance;
            let slots = self.slots.get_or_insert_with(&addr, || Slots {
                conns: (0..n).map(|_| None).collect(),
                shared: Arc::new(SlotsShared {
                    connecting: (0..n).map(|_| tokio::sync::Mutex::new(())).collect(),
                    next: AtomicUsize::new(0),
                }),
            });
            let i = slot.unwrap_or_else(|| self.index(&slots));
            self.connect(&slots.shared, i, addr, connect_timeout).await
        })
    }

    fn index(&self, slots: &Slots) -> usize {
        if self.per_instance == 1 {
            0
        } else {
            slots.shared.next.fetch_add(1, Ordering::Relaxed) % self.per_instance
        }
    }

    async fn connect(
        &self,
        shared: &SlotsShared,
        i: usize,
        addr: SocketAddr,
        connect_timeout: Option<Duration>,
    ) -> Result<Arc<Connection>> {
        let _one_at_a_time = shared.connecting[i].lock().await;
        // Connected meanwhile by the call that held the lock?
        let current = self
            .slots
            .with(&addr, |s| s.conns[i].clone())
            .flatten()
            .filter(|c| !c.is_closed());
        if let Some(c) = current {
            return Ok(c);
        }
        let conn = Arc::new(Connection::connect(addr, connect_timeout, self.max_frame_size).await?);
        // An instance removed meanwhile stays removed; this call still uses its connection.
        self.slots.update(&addr, |s| {
            let mut conns = s.conns.clone();
            conns[i] = Some(conn.clone());
            Slots {
                conns,
                shared: s.shared.clone(),
            }
        });
        Ok(conn)
    }

    /// Drops the connections of instances for which `keep` says no.
    pub(crate) fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.slots.retain(keep);
    }

    /// Live connections, over all instances.
    pub(crate) fn connection_count(&self) -> usize {
        self.slots
            .values()
            .iter()
            .map(|s| {
                s.conns
                    .iter()
                    .filter(|c| c.as_ref().is_some_and(|c| !c.is_closed()))
                    .count()
            })
            .sum()
    }
}

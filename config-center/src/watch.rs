//! Pieces every source's watch shares: the task-to-stream plumbing, backoff between failed
//! attempts, and turning successive reads into changes.

#[cfg(any(feature = "etcd", feature = "consul"))]
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::{ConfigError, ConfigEvent};

/// What a watch task sends.
pub(crate) type Item = Result<ConfigEvent, ConfigError>;
/// Where a watch task sends.
pub(crate) type Tx = mpsc::Sender<Item>;

/// Spawns `task` with a sender and returns the stream of what it sends. The task should end
/// when the sender reports the stream was dropped (`tx.closed()`, or a failed send).
pub(crate) fn spawn_watch<F, Fut>(task: F) -> BoxStream<'static, Item>
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(task(tx));
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) }).boxed()
}

/// Waits between failed attempts: 100 ms, doubling up to 5 s.
#[cfg(any(feature = "etcd", feature = "consul"))]
pub(crate) struct Backoff(Duration);

#[cfg(any(feature = "etcd", feature = "consul"))]
impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self(Self::FIRST)
    }

    /// After a success: the next failure waits the shortest time again.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Reports `err` on `tx` and waits before the next attempt; `false` when the stream is gone.
    pub(crate) async fn fail(&mut self, tx: &Tx, key: &str, err: ConfigError) -> bool {
        tracing::debug!(%key, error = %err, retry_in = ?self.0, "config watch failed");
        if tx.send(Err(err)).await.is_err() {
            return false;
        }
        tokio::select! {
            () = tx.closed() => return false,
            () = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(Self::MOST);
        true
    }
}

/// Turns successive reads of a key into what a watch yields: a state when it differs from the
/// last one yielded (or follows errors), and the first error of a run of errors.
#[derive(Default)]
pub(crate) struct Changes {
    last: Option<ConfigEvent>,
    failing: bool,
}

impl Changes {
    pub(crate) fn observe(&mut self, read: Item) -> Option<Item> {
        let yield_it = match (&read, &self.last) {
            (Ok(s), Some(l)) => s != l || self.failing,
            (Ok(_), None) => true,
            (Err(_), _) => !self.failing,
        };
        self.failing = read.is_err();
        if let Ok(s) = &read {
            self.last = Some(s.clone());
        }
        yield_it.then_some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_yield_new_states_and_the_first_error_of_a_run() {
        let v = |s: &str| Ok(ConfigEvent::Value(s.into()));
        let e = || Err(ConfigError::new("t", "down"));
        let mut c = Changes::default();
        assert!(c.observe(v("a")).is_some(), "the first state");
        assert!(c.observe(v("a")).is_none(), "unchanged");
        assert!(c.observe(e()).is_some(), "the first error");
        assert!(c.observe(e()).is_none(), "errors in a row once");
        assert!(c.observe(v("a")).is_some(), "the state again after errors");
        assert!(c.observe(Ok(ConfigEvent::Deleted)).is_some());
        assert!(c.observe(Ok(ConfigEvent::Deleted)).is_none());
    }
}

//! Building blocks for the long-running tasks integrations keep: a stream fed by a spawned task
//! ([`spawn_stream`]), and the backoff between failed attempts ([`Backoff`]). Registry
//! resolvers, registries' keep-alive loops and config-center watches use them alike.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

/// Spawns `task` with the sending half of a channel of `buffer` items and returns the stream of
/// what it sends. The task should end when the stream is dropped: a failed `send`, or
/// `tx.closed()` resolving, says so.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// let numbers = gannet_core::watch::spawn_stream(4, |tx| async move {
///     for i in 0..3 {
///         if tx.send(i).await.is_err() {
///             return; // nobody listens any more
///         }
///     }
/// });
/// assert_eq!(numbers.collect::<Vec<_>>().await, [0, 1, 2]);
/// # }
/// ```
pub fn spawn_stream<T, F, Fut>(buffer: usize, task: F) -> BoxStream<'static, T>
where
    T: Send + 'static,
    F: FnOnce(mpsc::Sender<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(buffer);
    tokio::spawn(task(tx));
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed()
}

/// How long to wait between failed attempts: doubling from a first delay up to a cap
/// (100 ms to 5 s by default), back to the first after a success.
///
/// ```
/// use std::time::Duration;
/// use gannet_core::watch::Backoff;
/// let mut b = Backoff::default();
/// assert_eq!(b.advance(), Duration::from_millis(100));
/// assert_eq!(b.advance(), Duration::from_millis(200));
/// b.reset();
/// assert_eq!(b.current(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    most: Duration,
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    /// Waits `first`, then twice as long after each failure, at most `most`.
    #[must_use]
    pub fn new(first: Duration, most: Duration) -> Self {
        Self {
            first,
            most: most.max(first),
            current: first,
        }
    }

    /// The wait after the next failure.
    #[must_use]
    pub fn current(&self) -> Duration {
        self.current
    }

    /// After a success: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.current = self.first;
    }

    /// After a failure: returns how long to wait now, and doubles the next wait.
    pub fn advance(&mut self) -> Duration {
        let now = self.current;
        self.current = (now * 2).min(self.most);
        now
    }

    /// After a failure in a watch task: sends `err` on `tx` (the watch's subscribers see it),
    /// then waits [`advance`](Backoff::advance)'s delay. `false` if the stream was dropped
    /// meanwhile: the task should end.
    pub async fn report<T, E>(&mut self, tx: &mpsc::Sender<Result<T, E>>, err: E) -> bool {
        if tx.send(Err(err)).await.is_err() {
            return false;
        }
        let wait = self.advance();
        tokio::select! {
            () = tx.closed() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<_> = (0..4).map(|_| b.advance().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.advance(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn report_sends_the_error_then_waits_unless_the_stream_is_gone() {
        let (tx, mut rx) = mpsc::channel::<Result<(), &str>>(1);
        let mut b = Backoff::default();
        let started = tokio::time::Instant::now();
        assert!(b.report(&tx, "down").await);
        assert_eq!(rx.recv().await, Some(Err("down")));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        drop(rx);
        assert!(!b.report(&tx, "gone").await, "nobody listens");
    }

    #[tokio::test]
    async fn a_dropped_stream_ends_the_wait() {
        let (tx, rx) = mpsc::channel::<Result<(), &str>>(1);
        let mut b = Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600));
        let report = tokio::spawn(async move { b.report(&tx, "down").await });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(
            !report.await.unwrap(),
            "the hour-long wait ends with the stream"
        );
    }
}

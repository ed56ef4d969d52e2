//! Graceful shutdown: a token that every task can wait on, fed by SIGINT
//! and SIGTERM, and a bounded drain.
//!
//! The program's work takes a [`Shutdown`] (cheap to clone) and, once
//! [`Shutdown::wait`] returns, stops taking new work (stops resonating,
//! stops accepting connections), finishes what it holds, and returns.
//! [`run_until_shutdown`] runs that work and gives it at most `grace` to
//! drain after the shutdown is triggered; past it the work is dropped
//! (cancelled) and the program can exit anyway.
//!
//! ```
//! use std::time::Duration;
//!
//! use aether_ops::shutdown::{Shutdown, ShutdownOutcome, run_until_shutdown};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let shutdown = Shutdown::new(); // Shutdown::on_signals()? in a program
//! let (jobs, mut queue) = tokio::sync::mpsc::channel::<u32>(16);
//! let work = {
//!     let shutdown = shutdown.clone();
//!     async move {
//!         let mut done = 0;
//!         loop {
//!             tokio::select! {
//!                 Some(_job) = queue.recv() => done += 1,
//!                 () = shutdown.wait() => break,
//!             }
//!         }
//!         queue.close(); // take no more work...
//!         while queue.recv().await.is_some() {
//!             done += 1; // ...and finish what was taken
//!         }
//!         done
//!     }
//! };
//! for job in 0..3 {
//!     jobs.send(job).await.unwrap();
//! }
//! shutdown.trigger();
//! let outcome = run_until_shutdown(work, &shutdown, Duration::from_secs(5)).await;
//! assert_eq!(outcome, ShutdownOutcome::Drained(3));
//! # }
//! ```

use std::{future::Future, io, sync::Arc, time::Duration};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

/// A shutdown token: cloned into every task, triggered once (by a signal
/// or by [`Shutdown::trigger`]), waited on by all.
#[derive(Clone, Debug)]
pub struct Shutdown {
    triggered: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A token that nothing has triggered yet.
    pub fn new() -> Self {
        Self {
            triggered: Arc::new(watch::Sender::new(false)),
        }
    }

    /// A token triggered by the first SIGINT (Ctrl-C) or SIGTERM (what
    /// `kill`, systemd and Kubernetes send) this process receives. Call it
    /// within a Tokio runtime (with I/O enabled); once it returns, those
    /// signals no longer end the process by themselves: they trigger the
    /// token, which the program must wait on.
    pub fn on_signals() -> io::Result<Self> {
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let shutdown = Self::new();
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "shutdown requested");
            trigger.trigger();
        });
        Ok(shutdown)
    }

    /// Triggers the shutdown: every [`Shutdown::wait`] returns. Triggering
    /// again does nothing.
    pub fn trigger(&self) {
        self.triggered.send_replace(true);
    }

    /// Whether the shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        *self.triggered.borrow()
    }

    /// Returns once the shutdown is triggered (at once if it already was).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it (in a `select!`) loses nothing, and a later
    /// call sees a trigger that happened in between.
    pub async fn wait(&self) {
        let mut triggered = self.triggered.subscribe();
        // The sender lives in `self`, so the channel cannot close here.
        let _ = triggered.wait_for(|triggered| *triggered).await;
    }
}

/// How the work of [`run_until_shutdown`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownOutcome<T> {
    /// It finished before any shutdown.
    Completed(T),
    /// The shutdown was triggered and it drained within the grace period.
    Drained(T),
    /// It did not finish within the grace period and was dropped.
    TimedOut,
}

/// Runs `work` until it finishes; once `shutdown` is triggered, gives it
/// at most `grace` more to drain (it should watch the same token, stop
/// taking work and return), then drops it. So this returns at most `grace`
/// after the trigger.
pub async fn run_until_shutdown<F: Future>(
    work: F,
    shutdown: &Shutdown,
    grace: Duration,
) -> ShutdownOutcome<F::Output> {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        // The shutdown first: work that ends because of it has drained.
        biased;
        () = shutdown.wait() => {}
        output = &mut work => return ShutdownOutcome::Completed(output),
    }
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining"
    );
    match tokio::time::timeout(grace, work).await {
        Ok(output) => {
            tracing::info!("drained");
            ShutdownOutcome::Drained(output)
        }
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "not drained within the grace period: the remaining work is dropped"
            );
            ShutdownOutcome::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_clone_and_stays() {
        let shutdown = Shutdown::new();
        assert!(!shutdown.is_triggered());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let shutdown = shutdown.clone();
                tokio::spawn(async move { shutdown.wait().await })
            })
            .collect();
        shutdown.clone().trigger();
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(shutdown.is_triggered());
        shutdown.trigger();
        shutdown.wait().await; // at once, however late
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_finishes_first_is_completed() {
        let shutdown = Shutdown::new();
        let outcome = run_until_shutdown(async { 7 }, &shutdown, Duration::from_secs(1)).await;
        assert_eq!(outcome, ShutdownOutcome::Completed(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_drains_in_time_is_drained() {
        let shutdown = Shutdown::new();
        let work = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                tokio::time::sleep(Duration::from_millis(300)).await; // finishing up
                "drained"
            }
        };
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            trigger.trigger();
        });
        let start = Instant::now();
        let outcome = run_until_shutdown(work, &shutdown, Duration::from_secs(1)).await;
        assert_eq!(outcome, ShutdownOutcome::Drained("drained"));
        assert_eq!(start.elapsed(), Duration::from_millis(2300));
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_does_not_drain_is_dropped_after_the_grace_period() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let start = Instant::now();
        let outcome = run_until_shutdown(
            std::future::pending::<()>(),
            &shutdown,
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(outcome, ShutdownOutcome::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_millis(500));
    }
}

//! A connection's IO that fails a write making no progress for too long
//! (`write_stall_timeout_ms`): a peer that stops reading (an `/events`
//! stream never read, a scrape whose answer is never taken) would else hold
//! its connection, and its stream slot, for as long as it likes.
//!
//! The bound is on progress, not on the whole answer: every byte the
//! socket takes starts the clock again, so a slow reader is served as long
//! as it reads.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// `io`, whose writes (and flushes, and shutdown) fail with
/// [`io::ErrorKind::TimedOut`] once they have stayed pending for `timeout`.
#[derive(Debug)]
pub(crate) struct WriteStall<I> {
    io: I,
    timeout: Duration,
    /// Armed while a write is pending: when it fires, the write fails.
    deadline: Pin<Box<Sleep>>,
    armed: bool,
    /// Counts the connection once when a write fails for want of progress.
    stalled: Option<prometheus::IntCounter>,
}

impl<I> WriteStall<I> {
    pub(crate) fn new(io: I, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            stalled: None,
        }
    }

    /// Counts in `stalled` (once) the connection failed for its peer.
    pub(crate) fn counting(mut self, stalled: prometheus::IntCounter) -> Self {
        self.stalled = Some(stalled);
        self
    }

    /// What a write's `poll` gave: progress disarms the clock; pending
    /// arms it (once) and fails when it has run out.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    self.deadline.as_mut().reset(Instant::now() + self.timeout);
                }
                ready!(self.deadline.as_mut().poll(cx));
                self.armed = false;
                if let Some(stalled) = self.stalled.take() {
                    stalled.inc();
                }
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer took nothing for write_stall_timeout_ms",
                )))
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteStall<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteStall<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A write the peer never takes fails after the timeout; one it takes,
    /// however slowly, does not.
    #[tokio::test(start_paused = true)]
    async fn a_write_without_progress_fails_after_the_timeout() {
        let timeout = Duration::from_secs(10);
        let (ours, mut theirs) = tokio::io::duplex(64);
        let stalled = prometheus::IntCounter::new("stalled", "stalled").unwrap();
        let mut io = WriteStall::new(ours, timeout).counting(stalled.clone());
        // Slow, with progress: 64 bytes every 9 s, 10 times.
        let reader = tokio::spawn(async move {
            let mut buffer = [0u8; 64];
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                theirs.read_exact(&mut buffer).await.unwrap();
            }
            theirs
        });
        io.write_all(&[1; 64 * 11]).await.unwrap();
        let _theirs = reader.await.unwrap();
        assert_eq!(stalled.get(), 0, "not counted while the peer read");
        // The duplex is full and nobody reads any more.
        let started = Instant::now();
        let error = io.write_all(&[2; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        // Counted once, however many writes fail after.
        assert_eq!(stalled.get(), 1);
        assert!(io.write_all(&[3; 64]).await.is_err());
        assert_eq!(stalled.get(), 1);
    }
}

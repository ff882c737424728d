//! Bytes to and from the upstream, counted where they cross its socket, and the
//! idle watch that ends a connection with no traffic. A meter with a
//! [`Budget`] (the plan's bytes per month) also counts there, and fails the
//! upstream's next read or write once the budget is spent: the connection ends.
//! A meter with a [`Bucket`] (the plan's bandwidth) makes each read and write
//! upstream wait while the workspace's bucket is empty.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};

use super::{bandwidth::Bucket, budget::Budget};

/// One connection's counters.
pub struct Meter {
    up: AtomicU64,
    down: AtomicU64,
    /// Milliseconds after `start` of the last byte either way.
    last: AtomicU64,
    start: Instant,
    budget: Option<Arc<Budget>>,
    bandwidth: Option<Arc<Bucket>>,
    cut: std::sync::atomic::AtomicBool,
}

impl Meter {
    /// Fresh counters; the idle clock starts now.
    pub fn new() -> Arc<Self> {
        Self::with_limits(None, None)
    }

    /// Fresh counters that also count in `budget`, if any, and stop when it is spent.
    pub fn with_budget(budget: Option<Arc<Budget>>) -> Arc<Self> {
        Self::with_limits(budget, None)
    }

    /// Fresh counters that count in `budget` and are paced by `bandwidth`, if any.
    pub fn with_limits(budget: Option<Arc<Budget>>, bandwidth: Option<Arc<Bucket>>) -> Arc<Self> {
        Arc::new(Self {
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last: AtomicU64::new(0),
            start: Instant::now(),
            budget,
            bandwidth,
            cut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Whether the connection was stopped because the budget was spent.
    pub fn cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// An error when the budget is spent (and notes the cut).
    fn check(&self) -> io::Result<()> {
        match &self.budget {
            Some(b) if b.spent() => {
                self.cut.store(true, Ordering::Relaxed);
                Err(io::Error::other(
                    "the plan's monthly network transfer (egress_bytes_per_month) is used up",
                ))
            }
            _ => Ok(()),
        }
    }

    fn count(&self, n: u64) {
        if let Some(b) = &self.budget {
            b.add(n);
        }
        if let Some(b) = &self.bandwidth {
            b.take(n);
        }
    }

    /// Bytes written to the upstream.
    pub fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    /// Bytes read from the upstream.
    pub fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte has crossed for `idle`.
    pub async fn idle(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// The upstream socket, counting through a [`Meter`].
pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
    /// The waits for the bandwidth bucket, one per direction (each has its waker).
    read_pause: Option<Pin<Box<Sleep>>>,
    write_pause: Option<Pin<Box<Sleep>>>,
}

impl<S> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, meter: Arc<Meter>) -> Self {
        Self {
            inner,
            meter,
            read_pause: None,
            write_pause: None,
        }
    }
}

/// Ready once `bucket` (if any) lets bytes cross; `pause` keeps the wait between polls.
fn poll_paced(
    pause: &mut Option<Pin<Box<Sleep>>>,
    bucket: Option<&Bucket>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(bucket) = bucket else {
        return Poll::Ready(());
    };
    loop {
        if let Some(sleep) = pause {
            ready!(sleep.as_mut().poll(cx));
            *pause = None;
        }
        match bucket.wait() {
            None => return Poll::Ready(()),
            Some(wait) => *pause = Some(Box::pin(tokio::time::sleep(wait))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(error) = self.meter.check() {
            return Poll::Ready(Err(error));
        }
        let this = &mut *self;
        ready!(poll_paced(
            &mut this.read_pause,
            this.meter.bandwidth.as_deref(),
            cx
        ));
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        if n > 0 {
            self.meter.down.fetch_add(n as u64, Ordering::Relaxed);
            self.meter.count(n as u64);
            self.meter.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(error) = self.meter.check() {
            return Poll::Ready(Err(error));
        }
        let this = &mut *self;
        ready!(poll_paced(
            &mut this.write_pause,
            this.meter.bandwidth.as_deref(),
            cx
        ));
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.meter.up.fetch_add(n as u64, Ordering::Relaxed);
            self.meter.count(n as u64);
            self.meter.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

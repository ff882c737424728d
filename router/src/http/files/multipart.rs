//! The upload body as `multer` reads it, bounded.
//!
//! `multer` buffers a part's headers (and the preamble before the first part)
//! until it finds the blank line that ends them, with no limit of its own: an
//! endless header line would grow the router without bound. [`Framing`] hands
//! the parser at most [`MAX_FRAMING_BYTES`] while it looks for the next part
//! (`Budget::headers` before each `next_field`, `Budget::data` once a part
//! began). Past that it pauses once — multer reads greedily, so the budget may
//! be spent on the part's data while its headers are long complete, and a pause
//! lets multer parse what it has — and fails the body when multer asks for more;
//! [`Budget::exceeded`] then tells the handler to answer 413.
//!
//! [`Paced`] hands out about [`PACE_BYTES`] per poll cycle: multer reads its
//! input until the input has nothing ready, which on a fast connection buffers
//! without bound; one body chunk per poll keeps the memory of an upload flat
//! whatever its size.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::Stream;

/// Most bytes of framing (preamble, boundary line, a part's headers) read
/// before a part's data begins. Browsers send a few hundred.
pub const MAX_FRAMING_BYTES: usize = 16 * 1024;

/// Largest piece handed to the parser while it reads framing, so the budget is
/// counted finely even when the body arrives in large chunks.
const FRAMING_SLICE: usize = 4 * 1024;

/// Bytes a [`Paced`] stream hands out before it answers `Pending` once.
pub const PACE_BYTES: usize = 1024 * 1024;

/// What the parser may still read before the next part's data begins; shared by
/// the handler (which sets it) and [`Framing`] (which spends it).
#[derive(Clone)]
pub struct Budget {
    left: Arc<AtomicUsize>,
    tripped: Arc<AtomicBool>,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    /// A budget in the data phase (nothing counted).
    pub fn new() -> Self {
        Self {
            left: Arc::new(AtomicUsize::new(usize::MAX)),
            tripped: Arc::default(),
        }
    }

    /// The parser is about to look for the next part: framing is counted.
    pub fn headers(&self) {
        self.left.store(MAX_FRAMING_BYTES, Ordering::SeqCst);
    }

    /// A part's data is being read: nothing is counted.
    pub fn data(&self) {
        self.left.store(usize::MAX, Ordering::SeqCst);
    }

    /// Whether the body was failed for too much framing.
    pub fn exceeded(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }
}

/// The body, failed once the framing between two parts passes its [`Budget`].
pub struct Framing<S> {
    inner: S,
    rest: Option<Bytes>,
    budget: Budget,
    /// The budget ran out and the parser was paused once.
    paused: bool,
}

impl<S> Framing<S> {
    /// `inner` under `budget`.
    pub fn new(inner: S, budget: Budget) -> Self {
        Self {
            inner,
            rest: None,
            budget,
            paused: false,
        }
    }
}

impl<S, E> Stream for Framing<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let left = self.budget.left.load(Ordering::SeqCst);
        if left == 0 {
            if !self.paused {
                // Let the parser look at what it has: its headers may be there.
                self.paused = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.budget.tripped.store(true, Ordering::SeqCst);
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a part's headers are longer than {MAX_FRAMING_BYTES} bytes"),
            ))));
        }
        self.paused = false;
        let mut chunk = match self.rest.take() {
            Some(chunk) => chunk,
            None => match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => chunk,
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(e))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        if left == usize::MAX {
            return Poll::Ready(Some(Ok(chunk)));
        }
        if chunk.len() > FRAMING_SLICE {
            self.rest = Some(chunk.split_off(FRAMING_SLICE));
        }
        let spent = chunk.len().min(left);
        // Only the handler moves the budget out of the framing phase, so a
        // concurrent `data()` is not overwritten with a count.
        let _ = self.budget.left.compare_exchange(
            left,
            left - spent,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        Poll::Ready(Some(Ok(chunk)))
    }
}

/// A body stream that hands out about [`PACE_BYTES`] per poll cycle: past that
/// it answers `Pending` once (waking itself at once), so a consumer that reads
/// "until nothing is ready" buffers at most that much.
pub struct Paced<S> {
    inner: S,
    since_pending: usize,
}

impl<S> Paced<S> {
    /// `inner`, paced.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            since_pending: 0,
        }
    }
}

impl<S, E> Stream for Paced<S>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if self.since_pending >= PACE_BYTES {
            self.since_pending = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        match &next {
            Poll::Ready(Some(Ok(chunk))) => self.since_pending += chunk.len(),
            Poll::Pending => self.since_pending = 0,
            _ => {}
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use futures::{StreamExt, stream};

    use super::*;

    #[tokio::test]
    async fn paced_streams_pause_after_the_byte_budget_and_lose_nothing() {
        let chunk = || Ok::<_, std::io::Error>(Bytes::from(vec![0u8; PACE_BYTES / 2]));
        let mut paced = Paced::new(stream::iter([chunk(), chunk(), chunk()]));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..2 {
            assert!(matches!(
                Pin::new(&mut paced).poll_next(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
        }
        assert!(Pin::new(&mut paced).poll_next(&mut cx).is_pending());
        let rest: Vec<_> = paced.collect().await;
        assert_eq!(rest.len(), 1);
    }

    #[tokio::test]
    async fn framing_past_the_budget_fails_and_data_passes_whole() {
        let big = || Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 64 * 1024]));
        let budget = Budget::new();
        let mut data = Framing::new(stream::iter([big(), big()]), budget.clone());
        while let Some(chunk) = data.next().await {
            assert_eq!(chunk.expect("data passes").len(), 64 * 1024);
        }
        assert!(!budget.exceeded());

        budget.headers();
        let mut framing = Framing::new(stream::iter([big(), big()]), budget.clone());
        let mut passed = 0;
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        loop {
            match Pin::new(&mut framing).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) => passed += chunk.len(),
                Poll::Pending => break,
                other => panic!("{other:?}"),
            }
        }
        assert!(passed <= MAX_FRAMING_BYTES + FRAMING_SLICE, "{passed}");
        assert!(!budget.exceeded(), "a pause comes first");
        // The parser found its headers in what it has: the data flows again.
        budget.data();
        assert!(matches!(
            Pin::new(&mut framing).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        // It asks for more while still looking: the body fails.
        budget.headers();
        let budget_left = || budget.left.load(Ordering::SeqCst);
        while budget_left() > 0 {
            assert!(matches!(
                Pin::new(&mut framing).poll_next(&mut cx),
                Poll::Ready(Some(Ok(_)))
            ));
        }
        assert!(Pin::new(&mut framing).poll_next(&mut cx).is_pending());
        assert!(matches!(
            Pin::new(&mut framing).poll_next(&mut cx),
            Poll::Ready(Some(Err(_)))
        ));
        assert!(budget.exceeded());
    }
}

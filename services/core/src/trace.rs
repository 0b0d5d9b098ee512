//! The trace a call runs in, as far as the store's spans need it: the ids of the call's
//! server span (and its W3C `tracestate`), current while the call's future is polled.
//!
//! The server wraps a traced call's future in [`InTrace`]; the store reads [`current`]
//! when a transaction or a statement begins and, only then, builds its OpenTelemetry
//! parent from it. Setting this per poll is a copy into a thread-local, where an
//! OpenTelemetry `Context` attached per poll costs an allocation per call and reference
//! counting per poll, on every traced call, whether it reaches the database or not.
//! Work a call hands to another task (a batch led by another call, a spawned task) is
//! not in the call's trace, as with an attached `Context`.

use std::{
    cell::Cell,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

/// A sampled span that the store's spans take as their parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The W3C `tracestate` header, when the trace has one.
    pub trace_state: Option<Arc<str>>,
}

thread_local! {
    static CURRENT: Cell<Option<TraceParent>> = const { Cell::new(None) };
}

/// The trace of the call being polled on this thread, if it is traced.
pub fn current() -> Option<TraceParent> {
    CURRENT.with(|cell| {
        let parent = cell.take();
        let copy = parent.clone();
        cell.set(parent);
        copy
    })
}

pin_project_lite::pin_project! {
    /// A future that runs in `parent`'s trace: [`current`] is `parent` while it is polled.
    pub struct InTrace<F> {
        #[pin]
        future: F,
        parent: TraceParent,
    }
}

impl<F> InTrace<F> {
    pub fn new(future: F, parent: TraceParent) -> Self {
        Self { future, parent }
    }
}

impl<F: Future> Future for InTrace<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let outer = CURRENT.with(|cell| cell.replace(Some(this.parent.clone())));
        // Restored even when the inner future panics.
        struct Restore(Option<TraceParent>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let outer = self.0.take();
                CURRENT.with(|cell| cell.set(outer));
            }
        }
        let _restore = Restore(outer);
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn parent(n: u8) -> TraceParent {
        TraceParent {
            trace_id: [n; 16],
            span_id: [n; 8],
            trace_state: None,
        }
    }

    fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
        let mut future = std::pin::pin!(future);
        future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn the_parent_is_current_only_while_its_future_is_polled_and_nests() {
        assert_eq!(current(), None);
        let inner = InTrace::new(async { current() }, parent(2));
        let outer = InTrace::new(
            async move { (current(), inner.await, current()) },
            parent(1),
        );
        let Poll::Ready(seen) = poll_once(outer) else {
            panic!("ready at once")
        };
        assert_eq!(seen, (Some(parent(1)), Some(parent(2)), Some(parent(1))));
        assert_eq!(current(), None);
    }

    #[test]
    fn a_pending_future_leaves_no_parent_behind() {
        let pending = InTrace::new(std::future::pending::<()>(), parent(3));
        assert!(poll_once(pending).is_pending());
        assert_eq!(current(), None);
    }
}

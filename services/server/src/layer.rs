//! The tower layer the auth, observe and HTTP/JSON layers share: it wraps each service
//! in a [`WithState`] that holds the layer's shared state, and each of those layers is
//! its own `Service` impl of `WithState` over its state.

use std::sync::Arc;

/// Wraps each service in a [`WithState`] holding `T`.
pub struct StateLayer<T>(Arc<T>);

impl<T> StateLayer<T> {
    pub fn new(state: Arc<T>) -> Self {
        Self(state)
    }
}

impl<T> Clone for StateLayer<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S, T> tower::Layer<S> for StateLayer<T> {
    type Service = WithState<S, T>;

    fn layer(&self, inner: S) -> WithState<S, T> {
        WithState {
            inner,
            state: self.0.clone(),
        }
    }
}

/// A service and the state its layer shares.
pub struct WithState<S, T> {
    inner: S,
    pub state: Arc<T>,
}

impl<S: Clone, T> Clone for WithState<S, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            state: self.state.clone(),
        }
    }
}

impl<S: Clone, T> WithState<S, T> {
    /// The inner service, to poll it ready.
    pub fn inner(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service that was polled ready, for one call; a clone, not polled ready,
    /// stays behind.
    pub fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

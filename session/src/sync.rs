//! Surviving panics in code that is not ours: locks that keep serving after
//! a panic elsewhere, and a boundary that turns a panic into an error.
//!
//! A panic in a user closure (or anywhere) while a lock is held leaves plain
//! data behind that is still valid: a session map, a queue, a statement
//! cache. Serving on is better than turning every later request into a panic
//! on the poisoned lock.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a panic said, for an error message.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f`, which calls the app's code (serde, `Clone`); a panic in it
/// becomes `Err` with its message. The panic hook still reports it.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|payload| panic_message(&*payload))
}

/// A future that turns a panic while it is polled into `Err` with the
/// panic's message, so that one request's panic answers that request (with
/// a 500) instead of tearing down its connection. `F` is a pinned future
/// (`std::pin::pin!`, kept in the caller's own state: no allocation).
pub(crate) struct CatchPanic<F>(pub(crate) F);

impl<F: std::future::Future + Unpin> std::future::Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = std::pin::Pin::new(&mut self.0);
        match catch_panic(|| inner.poll(cx)) {
            Ok(poll) => poll.map(Ok),
            Err(message) => std::task::Poll::Ready(Err(message)),
        }
    }
}

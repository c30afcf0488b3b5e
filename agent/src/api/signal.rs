//! The stop signal of one connection: raised by another thread (the watchman, or the server
//! draining), polled by the connection's task each time it wakes.
//!
//! A connection task wakes for every request, and each wake-up also polls its stop signal. A
//! `tokio::sync::Notify` took its waiters lock on every such poll; this one reads one flag
//! and compares the task's waker with the one it registered (a pointer comparison), and
//! takes its lock only when the waker changes (in practice once per connection) and when the
//! signal is raised.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

/// A flag one side raises and the other consumes, waking the consumer's task.
#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Raises the signal and wakes the task that polls it. Raises before the next poll merge
    /// into one.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        if let Ok(slot) = self.waker.lock()
            && let Some(w) = slot.as_ref()
        {
            // By reference: the registration stays for the next raise.
            w.wake_by_ref();
        }
    }

    /// `Ready` (and consumed) if the signal was raised since the last `Ready`; else the
    /// task's waker is registered for [`Signal::raise`]. `registered` is the poller's own
    /// record of the waker it registered last.
    pub fn poll_raised(&self, cx: &Context<'_>, registered: &mut Option<Waker>) -> Poll<()> {
        if self.take() {
            return Poll::Ready(());
        }
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let w = cx.waker().clone();
            if let Ok(mut slot) = self.waker.lock() {
                *slot = Some(w.clone());
            }
            *registered = Some(w);
            // Raised between the first look and the registration: its wake-up may have gone
            // to the old waker (or none).
            if self.take() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    fn take(&self) -> bool {
        self.raised.load(Ordering::Relaxed) && self.raised.swap(false, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn each_raise_wakes_the_registered_task_and_is_consumed_once() {
        let s = Signal::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let cx = Context::from_waker(&waker);
        let mut reg = None;
        assert_eq!(s.poll_raised(&cx, &mut reg), Poll::Pending);
        assert_eq!(s.poll_raised(&cx, &mut reg), Poll::Pending);
        s.raise();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(s.poll_raised(&cx, &mut reg), Poll::Ready(()));
        assert_eq!(s.poll_raised(&cx, &mut reg), Poll::Pending);
        // A second raise (a timeout after a drain) wakes the same registration again.
        s.raise();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert_eq!(s.poll_raised(&cx, &mut reg), Poll::Ready(()));
    }

    #[test]
    fn a_raise_before_the_first_poll_is_seen_and_a_new_waker_is_registered() {
        let s = Signal::default();
        s.raise();
        let a = Arc::new(Count(AtomicUsize::new(0)));
        let wa = Waker::from(a.clone());
        let mut reg = None;
        assert_eq!(
            s.poll_raised(&Context::from_waker(&wa), &mut reg),
            Poll::Ready(())
        );
        assert_eq!(
            s.poll_raised(&Context::from_waker(&wa), &mut reg),
            Poll::Pending
        );
        // The task moved to another waker: the next raise wakes that one.
        let b = Arc::new(Count(AtomicUsize::new(0)));
        let wb = Waker::from(b.clone());
        assert_eq!(
            s.poll_raised(&Context::from_waker(&wb), &mut reg),
            Poll::Pending
        );
        s.raise();
        assert_eq!(
            (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)),
            (0, 1)
        );
    }
}

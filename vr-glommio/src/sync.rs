//! Two small wake-up primitives: [`Notify`] between tasks of one executor,
//! [`Mailbox`] from any thread into one executor task.
//!
//! glommio's own channels need both ends inside executors; a test thread or
//! a [`crate::ReplicaHandle`] owner is a plain thread, so the mailbox relies
//! on glommio's support for waking a task from another thread instead.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

/// Wakes one waiting task of the same executor. A notification that comes
/// while nobody waits is kept, so none is lost between checking for work
/// and starting to wait.
#[derive(Default)]
pub(crate) struct Notify {
    notified: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Returns once [`Notify::notify`] has been called since the last return.
    pub(crate) async fn notified(&self) {
        poll_fn(|cx| {
            if self.notified.replace(false) {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// A queue that any thread fills and one executor task drains. Each sender
/// waits for an answer before sending again, so it holds at most one item
/// per sending thread.
pub(crate) struct Mailbox<T> {
    state: Mutex<MailboxState<T>>,
}

struct MailboxState<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    closed: bool,
}

impl<T> Mailbox<T> {
    pub(crate) fn new() -> Mailbox<T> {
        Mailbox {
            state: Mutex::new(MailboxState {
                items: VecDeque::new(),
                waker: None,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MailboxState<T>> {
        // The state stays consistent even if a holder panicked: every
        // critical section is a single push, pop or flag change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item`; gives it back if the mailbox is closed.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(item);
            }
            state.items.push_back(item);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether the mailbox was closed (by either end).
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closes the mailbox from either end: later sends fail, the receiver
    /// sees `None` once the queue is empty, and queued items are dropped
    /// (which tells a sender waiting for an answer that none will come).
    pub(crate) fn close(&self) {
        let (waker, items) = {
            let mut state = self.lock();
            state.closed = true;
            (state.waker.take(), std::mem::take(&mut state.items))
        };
        drop(items);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next item, or `None` once the mailbox is closed.
    pub(crate) async fn recv(&self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.lock();
            if let Some(item) = state.items.pop_front() {
                return Poll::Ready(Some(item));
            }
            if state.closed {
                return Poll::Ready(None);
            }
            state.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// Closes a mailbox when dropped, also while unwinding from a panic, so that
/// threads waiting for an answer are released.
pub(crate) struct CloseOnDrop<'a, T>(pub(crate) &'a Mailbox<T>);

impl<T> Drop for CloseOnDrop<'_, T> {
    fn drop(&mut self) {
        self.0.close();
    }
}

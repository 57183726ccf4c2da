//! A bounded queue that never makes the producer wait: when full, the
//! oldest item is dropped to make room (a fresh pending elevation matters
//! more than a stale one). The consumer waits for items.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

pub struct Queue<T> {
    items: Mutex<Inner<T>>,
    capacity: usize,
    ready: Notify,
}

struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Queue<T> {
        Queue {
            items: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an item at once, returning the oldest one if it had to go.
    pub fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut inner = self.lock();
            let dropped = if inner.items.len() >= self.capacity {
                inner.items.pop_front()
            } else {
                None
            };
            inner.items.push_back(item);
            dropped
        };
        self.ready.notify_one();
        dropped
    }

    /// The next item; `None` once closed and empty.
    pub async fn pop(&self) -> Option<T> {
        loop {
            // Register interest before looking, so a push in between is
            // not missed.
            let notified = self.ready.notified();
            {
                let mut inner = self.lock();
                if let Some(item) = inner.items.pop_front() {
                    return Some(item);
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// No more items will come: `pop` drains what is left, then ends.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
        self.ready.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[tokio::test]
    async fn a_full_queue_drops_the_oldest() {
        let q = Queue::new(2);
        assert_eq!(q.push(1), None);
        assert_eq!(q.push(2), None);
        assert_eq!(q.push(3), Some(1));
        assert_eq!(q.push(4), Some(2));
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().await, Some(3));
        assert_eq!(q.pop().await, Some(4));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_consumer_wakes_for_a_push_and_ends_after_close() {
        let q = std::sync::Arc::new(Queue::new(4));
        let consumer = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = q.pop().await {
                    got.push(x);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        q.push("a");
        q.push("b");
        q.close();
        assert_eq!(consumer.await.unwrap(), ["a", "b"]);
    }

    proptest! {
        /// Whatever is pushed, the queue keeps the newest `capacity` items
        /// in order, and reports each dropped one exactly once.
        #[test]
        fn keeps_the_newest_in_order(capacity in 1usize..8, n in 0usize..40) {
            let q = Queue::new(capacity);
            let mut dropped = Vec::new();
            for i in 0..n {
                dropped.extend(q.push(i));
            }
            let kept: Vec<usize> = std::iter::from_fn(|| q.lock().items.pop_front()).collect();
            let first_kept = n.saturating_sub(capacity);
            prop_assert_eq!(kept, (first_kept..n).collect::<Vec<_>>());
            prop_assert_eq!(dropped, (0..first_kept).collect::<Vec<_>>());
        }
    }
}

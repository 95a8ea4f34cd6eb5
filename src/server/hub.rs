//! Fan-out of fired timers to `SUBSCRIBE fired` connections.
//!
//! Workers call [`Hub::publish`]; each subscriber has a byte queue that the
//! worker appends the encoded message to, and an I/O thread moves it into
//! the connection's output buffer when woken.
//!
//! Ground rules:
//! - Publishing never blocks on a subscriber: a queue over its limit marks
//!   the subscriber as overflowed (it is then disconnected and counted)
//!   instead of growing or waiting. Delivery is best effort by design.
//! - The I/O thread is woken only when a queue goes from empty to non-empty,
//!   so a burst of a million fires costs a handful of wake-ups.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::Sender;
use mio::{Token, Waker};
use parking_lot::{Mutex, RwLock};

use crate::protocol::Protocol;

/// One subscribed connection, as workers see it.
pub struct Subscription {
    pub token: Token,
    pub protocol: Protocol,
    queue: Mutex<Vec<u8>>,
    overflowed: AtomicBool,
    limit: usize,
    notify: Sender<Token>,
    waker: Arc<Waker>,
}

impl Subscription {
    pub fn new(
        token: Token,
        protocol: Protocol,
        limit: usize,
        notify: Sender<Token>,
        waker: Arc<Waker>,
    ) -> Subscription {
        Subscription {
            token,
            protocol,
            queue: Mutex::new(Vec::new()),
            overflowed: AtomicBool::new(false),
            limit,
            notify,
            waker,
        }
    }

    /// Moves queued messages into `out`; `false` if the subscriber fell
    /// too far behind and must be disconnected.
    pub fn drain_into(&self, out: &mut Vec<u8>) -> bool {
        let mut queue = self.queue.lock();
        out.extend_from_slice(&queue);
        queue.clear();
        !self.overflowed.load(Ordering::Relaxed)
    }

    /// Whether the queue went over its limit: the subscriber fell too far
    /// behind and must be disconnected.
    pub fn overflowed(&self) -> bool {
        self.overflowed.load(Ordering::Relaxed)
    }

    fn push(&self, message: &[u8]) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let mut queue = self.queue.lock();
        if queue.len() + message.len() > self.limit {
            self.overflowed.store(true, Ordering::Relaxed);
        } else {
            let was_empty = queue.is_empty();
            queue.extend_from_slice(message);
            if !was_empty {
                return;
            }
        }
        drop(queue);
        let _ = self.notify.send(self.token);
        let _ = self.waker.wake();
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("token", &self.token)
            .finish()
    }
}

/// All current subscriptions to the `fired` channel.
#[derive(Debug, Default)]
pub struct Hub {
    subscribers: RwLock<Vec<Arc<Subscription>>>,
    pub published_total: AtomicU64,
}

impl Hub {
    pub fn subscribe(&self, subscription: Arc<Subscription>) {
        self.subscribers.write().push(subscription);
    }

    pub fn unsubscribe(&self, subscription: &Arc<Subscription>) {
        self.subscribers
            .write()
            .retain(|s| !Arc::ptr_eq(s, subscription));
    }

    /// Swaps `old` for `new` in one step, so no message misses both and
    /// none reaches both (a connection changing protocol while subscribed).
    pub fn replace(&self, old: &Arc<Subscription>, new: Arc<Subscription>) {
        let mut subscribers = self.subscribers.write();
        subscribers.retain(|s| !Arc::ptr_eq(s, old));
        subscribers.push(new);
    }

    pub fn len(&self) -> usize {
        self.subscribers.read().len()
    }

    /// Sends `message fired <id>` to every subscriber.
    pub fn publish(&self, id: &[u8]) {
        let subscribers = self.subscribers.read();
        if subscribers.is_empty() {
            return;
        }
        let mut encoded: [Option<Vec<u8>>; 2] = [None, None];
        for subscriber in subscribers.iter() {
            let slot = &mut encoded[subscriber.protocol as usize];
            let message = slot.get_or_insert_with(|| fired_message(subscriber.protocol, id));
            subscriber.push(message);
        }
        self.published_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// `message fired <id>` as a pub/sub push in `protocol`.
pub fn fired_message(protocol: Protocol, id: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + id.len());
    out.extend_from_slice(match protocol {
        Protocol::Resp2 => b"*3\r\n",
        Protocol::Resp3 => b">3\r\n",
    });
    out.extend_from_slice(b"$7\r\nmessage\r\n$5\r\nfired\r\n");
    out.extend_from_slice(format!("${}\r\n", id.len()).as_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(b"\r\n");
    out
}

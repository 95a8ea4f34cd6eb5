//! `SUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE`: the best-effort `fired`
//! channel.
//!
//! Only [`FIRED_CHANNEL`] carries messages; other channels are confirmed
//! and stay silent, as an unused Redis channel would. Each confirmation is
//! one reply per channel (a push in RESP3), as Redis sends it.

use std::sync::Arc;

use super::IoContext;
use crate::protocol::{Protocol, write_bulk, write_integer, write_null, write_push_header};
use crate::server::Shared;
use crate::server::connection::Session;
use crate::server::hub::Subscription;

/// The channel fired timers are published on.
pub const FIRED_CHANNEL: &[u8] = b"fired";

/// `SUBSCRIBE channel [channel ...]`.
pub(super) fn subscribe(
    shared: &Shared,
    io: &IoContext<'_>,
    session: &mut Session,
    channels: Vec<Vec<u8>>,
    out: &mut Vec<u8>,
) {
    for channel in channels {
        if !session.channels.contains(&channel) {
            if channel == FIRED_CHANNEL {
                let subscription = new_subscription(shared, io, session.protocol);
                shared.hub.subscribe(subscription.clone());
                session.subscription = Some(subscription);
            }
            session.channels.push(channel.clone());
        }
        confirm(out, session, b"subscribe", Some(&channel));
    }
}

/// `UNSUBSCRIBE [channel ...]`: no channel means every channel.
pub(super) fn unsubscribe(
    shared: &Shared,
    session: &mut Session,
    channels: Vec<Vec<u8>>,
    out: &mut Vec<u8>,
) {
    let channels = if channels.is_empty() {
        session.channels.clone()
    } else {
        channels
    };
    if channels.is_empty() {
        confirm(out, session, b"unsubscribe", None);
    }
    for channel in channels {
        session.channels.retain(|c| *c != channel);
        if channel == FIRED_CHANNEL
            && let Some(subscription) = session.subscription.take()
        {
            shared.hub.unsubscribe(&subscription);
        }
        confirm(out, session, b"unsubscribe", Some(&channel));
    }
}

/// `PUNSUBSCRIBE [pattern ...]`. No pattern is ever subscribed: confirm as
/// Redis does for none.
pub(super) fn punsubscribe(session: &Session, patterns: Vec<Vec<u8>>, out: &mut Vec<u8>) {
    if patterns.is_empty() {
        confirm(out, session, b"punsubscribe", None);
    }
    for pattern in patterns {
        confirm(out, session, b"punsubscribe", Some(&pattern));
    }
}

/// A queue for `fired` messages to this connection, encoded in `protocol`.
pub(super) fn new_subscription(
    shared: &Shared,
    io: &IoContext<'_>,
    protocol: Protocol,
) -> Arc<Subscription> {
    Arc::new(Subscription::new(
        io.token,
        protocol,
        shared.config.max_subscriber_backlog,
        io.notify.clone(),
        io.waker.clone(),
    ))
}

/// `subscribe fired 1`-style confirmation, a push in RESP3.
fn confirm(out: &mut Vec<u8>, session: &Session, kind: &[u8], channel: Option<&[u8]>) {
    let proto = session.protocol;
    write_push_header(out, proto, 3);
    write_bulk(out, kind);
    match channel {
        Some(channel) => write_bulk(out, channel),
        None => write_null(out, proto),
    }
    write_integer(out, session.channels.len() as i64);
}

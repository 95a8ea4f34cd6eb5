//! `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH`: Redis transactions, so
//! that a client library's transactional pipeline (redis-py's default
//! `pipeline()`, ioredis `multi()`, phpredis `multi()`, redis-rs
//! `pipe().atomic()`) works.
//!
//! Ground rules:
//! - After `MULTI`, a command is checked as it arrives (the command table,
//!   its arity, its parser) and queued (`+QUEUED`); a refused one is
//!   answered with its error and dooms the transaction: `EXEC` then answers
//!   `-EXECABORT` and runs nothing, as in Redis.
//! - `EXEC`, `DISCARD`, `MULTI`, `WATCH` and `QUIT` act at once; commands
//!   flagged `NO_MULTI` (they change the connection: `SUBSCRIBE`, `AUTH`,
//!   `HELLO`, ...) are refused.
//! - `EXEC` runs the queued commands in order on this I/O thread, each as
//!   it would run alone, and answers one array of their replies. Its reply
//!   waits until every queued write is durable (acks settle in order, so
//!   waiting for the last is waiting for all); a write whose journal gave
//!   up is an error element, as it would be on its own.
//! - Not isolated: another client's command on another I/O thread can run
//!   between two queued commands. Each command is atomic on its own id, and
//!   queued commands see each other's effects.
//! - `WATCH` is an error: there is no optimistic locking to offer, and
//!   saying so beats a check that never fails.

use super::{IoContext, dispatch};
use crate::journal::Ack;
use crate::protocol::{Command, CommandSpec, Flags, Request, write_error, write_simple};
use crate::server::Shared;
use crate::server::connection::{Deferred, Part, Pending, Session, Transaction};

/// Commands one transaction may queue; one more dooms it. Bounds the memory
/// a connection can hold in a transaction, as `MAX_HELD` bounds pipelines.
pub const MAX_QUEUED: usize = 4096;

/// `EXEC` after a refused command, in Redis's words.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Whether a request inside `MULTI` runs now rather than being queued.
pub(super) fn runs_now(spec: Option<&CommandSpec>) -> bool {
    spec.is_some_and(|spec| matches!(spec.name, "exec" | "discard" | "multi" | "watch" | "quit"))
}

/// Inside `MULTI`: checks `request` and queues it (`+QUEUED`), or answers
/// its error and dooms the transaction.
pub(super) fn queue(
    session: &mut Session,
    spec: Option<&'static CommandSpec>,
    request: Request,
    out: &mut Vec<u8>,
) {
    let Some(transaction) = session.transaction.as_mut() else {
        debug_assert!(false, "queue called outside MULTI");
        return;
    };
    if spec.is_some_and(|spec| spec.flags.contains(Flags::NO_MULTI)) {
        write_error(out, "ERR Command not allowed inside a transaction");
        transaction.aborted = true;
        return;
    }
    match Command::from_row(spec, request) {
        Err(error) => {
            write_error(out, error);
            transaction.aborted = true;
        }
        Ok(_) if transaction.queued.len() >= MAX_QUEUED => {
            write_error(
                out,
                format_args!(
                    "ERR transaction too long: at most {MAX_QUEUED} queued commands; send EXEC \
                     or DISCARD sooner"
                ),
            );
            transaction.aborted = true;
        }
        Ok(command) => {
            transaction.queued.push(command);
            write_simple(out, "QUEUED");
        }
    }
}

/// `MULTI`.
pub(super) fn multi(session: &mut Session, out: &mut Vec<u8>) {
    if session.transaction.is_some() {
        write_error(out, "ERR MULTI calls can not be nested");
    } else {
        session.transaction = Some(Transaction::default());
        write_simple(out, "OK");
    }
}

/// `DISCARD`.
pub(super) fn discard(session: &mut Session, out: &mut Vec<u8>) {
    match session.transaction.take() {
        Some(_) => write_simple(out, "OK"),
        None => write_error(out, "ERR DISCARD without MULTI"),
    }
}

/// `WATCH`: refused, with the reason.
pub(super) fn watch(session: &Session, out: &mut Vec<u8>) {
    if session.transaction.is_some() {
        write_error(out, "ERR WATCH inside MULTI is not allowed");
    } else {
        write_error(
            out,
            "ERR WATCH is not supported: timewheel has no optimistic locking. Use MULTI/EXEC \
             without WATCH, or ADD/ADDAT without REPLACE, which fail with EXISTS if the order \
             is pending",
        );
    }
}

/// `EXEC`: runs the queued commands; the array reply waits for the journal.
pub(super) fn exec(
    shared: &Shared,
    io: &IoContext<'_>,
    session: &mut Session,
    out: &mut Vec<u8>,
) -> Option<Deferred> {
    let Some(transaction) = session.transaction.take() else {
        write_error(out, "ERR EXEC without MULTI");
        return None;
    };
    if transaction.aborted {
        write_error(out, EXECABORT);
        return None;
    }
    let mut parts = Vec::with_capacity(transaction.queued.len());
    let mut last = Ack::DURABLE;
    for command in transaction.queued {
        let mut reply = Vec::new();
        match dispatch(shared, io, session, command, &mut reply) {
            None => parts.push(Part::Ready(reply)),
            Some(Deferred {
                ack,
                reply: Pending::Integer(value),
            }) => {
                last = last.max(ack);
                parts.push(Part::Held(ack, value));
            }
            Some(Deferred {
                reply: Pending::Array(_),
                ..
            }) => {
                // EXEC is never queued (`runs_now`), so no array nests.
                debug_assert!(false, "a queued command answered an array");
                let mut error = Vec::new();
                write_error(&mut error, "ERR EXEC cannot be nested");
                parts.push(Part::Ready(error));
            }
        }
    }
    let deferred = Deferred {
        ack: last,
        reply: Pending::Array(parts),
    };
    let status = |ack| shared.engine.ack_status(ack);
    if !deferred.is_settled(&status) {
        return Some(deferred);
    }
    deferred.write(out, &status);
    None
}

//! `ADD`, `ADDAT`, `CANCEL`, `PTTL`, `COUNT`: the engine's operations.
//!
//! A write is answered only once the journal has it: if its ack is not
//! durable yet, the reply becomes a [`Deferred`] the connection holds.

use crate::engine::{Change, ScheduleError};
use crate::id::OrderId;
use crate::journal::{Ack, AckStatus};
use crate::limits::MAX_DELAY_DAYS;
use crate::protocol::{write_error, write_integer};
use crate::server::Shared;
use crate::server::connection::Deferred;

/// The reply to a write while the journal cannot reach Redis.
pub const JOURNAL_UNAVAILABLE: &str =
    "JOURNAL unavailable: Redis is unreachable, nothing was changed; retry later";

/// `ADD id delay [REPLACE]`: the delay in ms, or with a unit (`30m`).
pub(super) fn add(
    shared: &Shared,
    out: &mut Vec<u8>,
    id: &OrderId,
    delay_ms: u64,
    replace: bool,
) -> Option<Deferred> {
    let deadline = shared.engine.now_ms().saturating_add(delay_ms);
    schedule(shared, out, id, deadline, replace)
}

/// `ADDAT id unix_ms [REPLACE]` (and `ADD`, once its deadline is known).
pub(super) fn schedule(
    shared: &Shared,
    out: &mut Vec<u8>,
    id: &OrderId,
    deadline: u64,
    replace: bool,
) -> Option<Deferred> {
    let engine = &shared.engine;
    let result = if replace {
        engine.upsert_at(id, deadline)
    } else {
        engine.schedule_at(id, deadline)
    };
    match result.map(Change::into_parts) {
        Ok((deadline, ack)) => {
            return reply_when_durable(shared, out, ack, deadline.min(i64::MAX as u64) as i64);
        }
        Err(ScheduleError::AlreadyScheduled { .. }) => write_error(
            out,
            format_args!(
                "EXISTS {} is already scheduled",
                id.as_bytes().escape_ascii()
            ),
        ),
        Err(ScheduleError::DelayTooLong) => write_error(
            out,
            format_args!(
                "ERR deadline must be Unix time in milliseconds at most {MAX_DELAY_DAYS} days \
                 ahead; got {deadline}, {} days ahead",
                deadline.saturating_sub(shared.engine.now_ms()) / (24 * 60 * 60 * 1000)
            ),
        ),
        Err(error) => write_schedule_error(shared, out, error),
    }
    None
}

/// `CANCEL id`: `1` once the removal is durable, `0` if it was not pending.
pub(super) fn cancel(shared: &Shared, out: &mut Vec<u8>, id: &OrderId) -> Option<Deferred> {
    match shared.engine.cancel(id) {
        Ok(change) => reply_when_durable(shared, out, change.ack(), 1),
        Err(ScheduleError::NotScheduled) => {
            write_integer(out, 0);
            None
        }
        Err(error) => {
            write_schedule_error(shared, out, error);
            None
        }
    }
}

/// `PTTL id`: milliseconds left, or `-2` if it is not pending.
pub(super) fn pttl(shared: &Shared, out: &mut Vec<u8>, id: &OrderId) {
    let engine = &shared.engine;
    match engine.deadline(id) {
        Some(deadline) => {
            let left = deadline.saturating_sub(engine.now_ms());
            write_integer(out, left.min(i64::MAX as u64) as i64);
        }
        None => write_integer(out, -2),
    }
}

/// `COUNT`: pending timers.
pub(super) fn count(shared: &Shared, out: &mut Vec<u8>) {
    write_integer(out, shared.engine.len() as i64);
}

/// Writes `value` now if `ack` is already durable, or defers it.
fn reply_when_durable(
    shared: &Shared,
    out: &mut Vec<u8>,
    ack: Ack,
    value: i64,
) -> Option<Deferred> {
    match shared.engine.ack_status(ack) {
        AckStatus::Durable => {
            write_integer(out, value);
            None
        }
        _ => Some(Deferred::integer(ack, value)),
    }
}

fn write_schedule_error(shared: &Shared, out: &mut Vec<u8>, error: ScheduleError) {
    match error {
        // The partition stopped being served between routing and the write.
        ScheduleError::JournalUnavailable if shared.config.cluster.is_some() => {
            write_error(out, super::cluster::MOVING)
        }
        ScheduleError::JournalUnavailable => write_error(out, JOURNAL_UNAVAILABLE),
        ScheduleError::ShutDown => write_error(out, "ERR server is shutting down"),
        ScheduleError::DelayTooLong => write_error(
            out,
            format_args!("ERR deadline is more than {MAX_DELAY_DAYS} days ahead"),
        ),
        ScheduleError::AlreadyScheduled { .. }
        | ScheduleError::NotScheduled
        | ScheduleError::InvalidId => write_error(out, format_args!("ERR {error}")),
    }
}

//! Rebuild: read the due set back, oldest deadline first, in chunks.
//!
//! Nothing else writes the journal while this runs (the server accepts
//! clients only afterwards, and the writer has not started), so paging by
//! rank sees every entry exactly once.

use std::time::{Duration, Instant};

use redis::{Connection, Value};

use super::{JournalError, Keys};
use crate::id::OrderId;

/// Entries per `ZRANGE`.
const CHUNK: isize = 50_000;

/// What a rebuild found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Entries read.
    pub total: u64,
    /// Entries whose deadline had passed: they fire right away.
    pub overdue: u64,
    /// Overdue entries the previous run may already have delivered: their
    /// deadline passed while it was alive (by its heartbeat), so they were
    /// firing when it stopped. These may be delivered twice.
    pub refired: u64,
    /// Members that are not valid order ids (skipped, left in Redis).
    pub invalid: u64,
    pub elapsed_ms: u64,
}

/// One entry of the due set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredEntry {
    pub id: OrderId,
    pub deadline_ms: u64,
    /// The deadline is at or before the rebuild's start.
    pub overdue: bool,
}

pub(super) fn run(
    connection: &mut Connection,
    keys: &Keys,
    now_ms: u64,
    mut each: impl FnMut(RestoredEntry),
) -> Result<Restored, JournalError> {
    let redis_error = |e: redis::RedisError| JournalError::Redis(e.to_string());
    let started = Instant::now();
    let expected: u64 = redis::cmd("ZCARD")
        .arg(&keys.due)
        .query(connection)
        .map_err(redis_error)?;
    let previous_alive_ms: Option<u64> = redis::cmd("HGET")
        .arg(&keys.meta)
        .arg("alive_ms")
        .query(connection)
        .map_err(redis_error)?;
    // The previous run may have fired anything due up to one heartbeat
    // after its last one.
    let fired_before = previous_alive_ms.map(|t| t + super::writer::HEARTBEAT.as_millis() as u64);
    tracing::info!(
        key = %keys.due,
        timers = expected,
        "journal: rebuilding the wheel from Redis"
    );
    let mut restored = Restored::default();
    let mut last_log = Instant::now();
    let mut start: isize = 0;
    loop {
        let reply: Vec<Value> = redis::cmd("ZRANGE")
            .arg(&keys.due)
            .arg(start)
            .arg(start + CHUNK - 1)
            .arg("WITHSCORES")
            .query(connection)
            .map_err(redis_error)?;
        let read = entries(&reply);
        let mut in_chunk = 0;
        for (member, score) in read {
            in_chunk += 1;
            restored.total += 1;
            let Ok(id) = OrderId::new(member) else {
                restored.invalid += 1;
                continue;
            };
            let deadline_ms = score;
            let overdue = deadline_ms <= now_ms;
            if overdue {
                restored.overdue += 1;
                if fired_before.is_some_and(|t| deadline_ms <= t) {
                    restored.refired += 1;
                }
            }
            each(RestoredEntry {
                id,
                deadline_ms,
                overdue,
            });
        }
        if in_chunk < CHUNK as usize {
            break;
        }
        start += CHUNK;
        if last_log.elapsed() >= Duration::from_secs(1) {
            last_log = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                loaded = restored.total,
                of = expected,
                per_s = (restored.total as f64 / secs) as u64,
                "journal: rebuilding"
            );
        }
    }
    restored.elapsed_ms = started.elapsed().as_millis() as u64;
    if restored.invalid > 0 {
        tracing::warn!(
            invalid = restored.invalid,
            key = %keys.due,
            "journal: members that are not valid order ids were skipped (left in Redis)"
        );
    }
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    tracing::info!(
        timers = restored.total,
        overdue = restored.overdue,
        refired_after_restart = restored.refired,
        elapsed_ms = restored.elapsed_ms,
        per_s = (restored.total as f64 / secs) as u64,
        "journal: rebuilt; overdue timers fire now, oldest first"
    );
    Ok(restored)
}

/// The (member, score) pairs of a `ZRANGE ... WITHSCORES` reply, flat
/// (RESP2) or as pairs (RESP3). Scores are rounded to whole ms; one that
/// is not a number counts as 0 (long overdue).
fn entries(reply: &[Value]) -> impl Iterator<Item = (&[u8], u64)> {
    let flat = !matches!(reply.first(), Some(Value::Array(_)));
    let pairs: Box<dyn Iterator<Item = (&Value, &Value)>> = if flat {
        Box::new(reply.chunks_exact(2).map(|p| (&p[0], &p[1])))
    } else {
        Box::new(reply.iter().filter_map(|v| match v {
            Value::Array(p) if p.len() == 2 => Some((&p[0], &p[1])),
            _ => None,
        }))
    };
    pairs.filter_map(|(member, score)| {
        let Value::BulkString(member) = member else {
            return None;
        };
        let score = match score {
            Value::BulkString(s) => std::str::from_utf8(s)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0),
            Value::Double(d) => *d,
            Value::Int(i) => *i as f64,
            _ => 0.0,
        };
        Some((member.as_slice(), score.max(0.0).round() as u64))
    })
}

//! Rebuild: read the due set back, oldest deadline first, in chunks.
//!
//! Nothing else writes the journal while this runs (the server accepts
//! clients only afterwards, and the writer has not started), so paging by
//! rank sees every entry exactly once.

use std::time::{Duration, Instant};

use redis::Connection;

use super::bulk::BulkReader;
use super::{JournalError, Keys};
use crate::id::OrderId;

/// Entries per `ZRANGE`.
const CHUNK: u64 = 50_000;

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
    /// How long the rebuild took.
    pub elapsed_ms: u64,
}

/// One entry of the due set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredEntry {
    /// The order id.
    pub id: OrderId,
    /// Its deadline (Unix ms).
    pub deadline_ms: u64,
    /// The deadline is at or before the rebuild's start.
    pub overdue: bool,
}

pub(super) fn run(
    connection: &mut Connection,
    info: &redis::ConnectionInfo,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    io_timeout: Duration,
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
    // Two stages on two threads: the fetcher keeps Redis busy with the next
    // chunk while it parses this one; this thread fills the wheel.
    let (chunks_tx, chunks_rx) = crossbeam_channel::bounded::<Vec<(Vec<u8>, u64)>>(2);
    std::thread::scope(|scope| {
        let fetcher = scope.spawn(move || {
            let mut reader = BulkReader::connect(info, tls, io_timeout)
                .map_err(|e| JournalError::Redis(format!("rebuild connection: {e}")))?;
            fetch(&mut reader, keys, expected, chunks_tx)
        });
        for chunk in chunks_rx {
            for (member, deadline_ms) in chunk {
                restored.total += 1;
                let Ok(id) = OrderId::new(member) else {
                    restored.invalid += 1;
                    continue;
                };
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
        fetcher
            .join()
            .unwrap_or_else(|_| Err(JournalError::Redis("rebuild reader panicked".into())))
    })?;
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

/// Reads the set in chunks, one request ahead (so Redis prepares the next
/// chunk while this one is parsed), and sends them on parsed.
fn fetch(
    reader: &mut BulkReader,
    keys: &Keys,
    expected: u64,
    chunks: crossbeam_channel::Sender<Vec<(Vec<u8>, u64)>>,
) -> Result<(), JournalError> {
    let io_error = |e: std::io::Error| JournalError::Redis(format!("reading {}: {e}", keys.due));
    let request = |reader: &mut BulkReader, n: u64| {
        let start = (n * CHUNK).to_string();
        let stop = ((n + 1) * CHUNK - 1).to_string();
        reader.send(&[
            b"ZRANGE",
            keys.due.as_bytes(),
            start.as_bytes(),
            stop.as_bytes(),
            b"WITHSCORES",
        ])
    };
    request(reader, 0).map_err(io_error)?;
    let (mut sent, mut received) = (1u64, 0u64);
    loop {
        if sent * CHUNK < expected {
            request(reader, sent).map_err(io_error)?;
            sent += 1;
        }
        let chunk = reader.read_pairs().map_err(io_error)?;
        received += 1;
        let last = (chunk.len() as u64) < CHUNK;
        if chunks.send(chunk).is_err() {
            return Ok(());
        }
        if last {
            // Requests sent past the end answer empty.
            while received < sent {
                reader.read_pairs().map_err(io_error)?;
                received += 1;
            }
            return Ok(());
        }
        if received == sent {
            request(reader, sent).map_err(io_error)?;
            sent += 1;
        }
    }
}

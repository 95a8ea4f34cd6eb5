//! The writer thread: group commit of queued writes into Redis pipelines.
//!
//! Each turn takes everything queued (up to [`MAX_BATCH`]), folds runs of
//! the same kind into one command (`ZADD due s1 m1 s2 m2 ...`, one `ZREM`,
//! one script call for a run of removals), sends the pipeline and waits for
//! the replies; while it waits, new writes pile up for the next turn, so
//! the batch grows with the load and a round trip is paid per batch, not
//! per write. A failed round trip drops the connection, marks the journal
//! down, and retries the same batch with backoff until Redis is back.
//!
//! Cluster mode has a writer of its own: [`super::cluster_writer`].

use std::time::{Duration, Instant};

use crate::clock::unix_ms;

use redis::{Connection, Pipeline, Script, Value};

use super::{Inner, Keys, Op};
use std::sync::atomic::Ordering;

/// Writes per pipeline at most.
pub(super) const MAX_BATCH: usize = 16_384;

/// Members per folded command at most.
pub(super) const MAX_RUN: usize = 1024;

/// How often the writer proves Redis is there (and records `alive_ms`).
pub(super) const HEARTBEAT: Duration = Duration::from_secs(1);

pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Removes delivered orders: `KEYS[1]` = due, `ARGV` = id, deadline pairs.
/// An id whose score moved (re-added since it fired) stays.
const DONE_LUA: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  local s = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if s and tonumber(s) == tonumber(ARGV[i + 1]) then
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
";

/// Moves fired orders into the stream, each exactly once: `KEYS` = due,
/// stream; `ARGV` = id, deadline, fired triples. Only ids still in `due`
/// with the deadline that fired move; the rest were moved already (before
/// a crash) or re-added since.
pub const DELIVER_LUA: &str = r"
local ids = {}
for i = 1, #ARGV, 3 do ids[#ids + 1] = ARGV[i] end
local scores = redis.call('ZMSCORE', KEYS[1], unpack(ids))
local moved = {}
for j = 1, #ids do
  local deadline = ARGV[3 * j - 1]
  if scores[j] and tonumber(scores[j]) == tonumber(deadline) then
    moved[#moved + 1] = ids[j]
    redis.call('XADD', KEYS[2], '*', 'id', ids[j], 'deadline_ms', deadline,
      'fired_ms', ARGV[3 * j])
  end
end
if #moved > 0 then redis.call('ZREM', KEYS[1], unpack(moved)) end
return #moved
";

/// Dead-letters an order: `KEYS` = due, dead; `ARGV` = id, deadline,
/// attempts, error, now.
const DEAD_LUA: &str = r"
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('XADD', KEYS[2], '*', 'id', ARGV[1], 'deadline_ms', ARGV[2],
  'attempts', ARGV[3], 'error', ARGV[4], 'dead_ms', ARGV[5])
return 1
";

/// Opens a connection with timeouts set and checks that Redis answers.
pub(super) fn open(client: &redis::Client, io_timeout: Duration) -> redis::RedisResult<Connection> {
    let mut connection = client.get_connection_with_timeout(io_timeout)?;
    connection.set_read_timeout(Some(io_timeout))?;
    connection.set_write_timeout(Some(io_timeout))?;
    redis::cmd("PING").query::<()>(&mut connection)?;
    Ok(connection)
}

struct Scripts {
    done: Script,
    deliver: Script,
    dead: Script,
}

pub(super) fn run(inner: &Inner) {
    if let Some(ownership) = inner.ownership.clone() {
        return super::cluster_writer::run(inner, &ownership);
    }
    let scripts = Scripts {
        done: Script::new(DONE_LUA),
        deliver: Script::new(DELIVER_LUA),
        dead: Script::new(DEAD_LUA),
    };
    let mut epochs: Vec<u64> = Vec::new();
    let mut connection = inner.connection.lock().take();
    let mut scripts_loaded = false;
    let mut last_heartbeat: Option<Instant> = None;
    let mut batch: Vec<Op> = Vec::new();
    let mut pipe = redis::pipe();
    loop {
        let (first_seq, closing) = take(inner, &mut batch, &mut epochs, last_heartbeat);
        let heartbeat_due = last_heartbeat.is_none_or(|t| t.elapsed() >= HEARTBEAT);
        if batch.is_empty() && (closing || !heartbeat_due) {
            if closing {
                return;
            }
            continue;
        }
        let written = until_written(inner, first_seq, batch.len(), || {
            let result = write_once(
                inner,
                &mut connection,
                &mut scripts_loaded,
                &scripts,
                &mut pipe,
                &batch,
                heartbeat_due,
            );
            if result.is_err() {
                connection = None;
                scripts_loaded = false;
            }
            result
        });
        if !written {
            return;
        }
        if heartbeat_due {
            last_heartbeat = Some(Instant::now());
        }
        written_up_to(inner, first_seq, &mut batch, &mut epochs);
    }
}

/// Calls `attempt` until it succeeds: each failure marks the journal down
/// (client writes are refused) and backs off. Returns `false` if the
/// journal is closing and the grace ran out (the batch is given up).
fn until_written(
    inner: &Inner,
    first_seq: u64,
    in_batch: usize,
    mut attempt: impl FnMut() -> redis::RedisResult<()>,
) -> bool {
    let mut backoff = Duration::from_millis(50);
    let mut give_up_at: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let Err(error) = attempt() else {
            inner.set_up(true);
            return true;
        };
        failures += 1;
        inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        if inner.queue.lock().up {
            tracing::error!(
                %error,
                unconfirmed = in_batch,
                "journal: Redis lost; refusing client writes until it is back, \
                 unconfirmed writes are kept and resent"
            );
        } else if failures.is_power_of_two() {
            tracing::warn!(%error, failures, "journal: Redis still unreachable");
        }
        inner.set_up(false);
        if inner.queue.lock().closed {
            let deadline =
                *give_up_at.get_or_insert_with(|| Instant::now() + inner.config.shutdown_grace);
            if Instant::now() >= deadline {
                give_up(inner, first_seq, in_batch);
                return false;
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The batch is in Redis: publish it as acked and clear it.
fn written_up_to(inner: &Inner, first_seq: u64, batch: &mut Vec<Op>, epochs: &mut Vec<u64>) {
    if !batch.is_empty() {
        let n = batch.len() as u64;
        inner.counters.writes.fetch_add(n, Ordering::Relaxed);
        inner.acked_up_to(first_seq + n - 1);
        batch.clear();
        epochs.clear();
    }
}

/// Waits for work (at most until the next heartbeat) and moves up to
/// [`MAX_BATCH`] queued writes into `batch`. Returns the sequence number
/// of the first, and whether the journal is closing with nothing left.
fn take(
    inner: &Inner,
    batch: &mut Vec<Op>,
    epochs: &mut Vec<u64>,
    last_heartbeat: Option<Instant>,
) -> (u64, bool) {
    let wait = last_heartbeat.map_or(Duration::ZERO, |t| HEARTBEAT.saturating_sub(t.elapsed()));
    take_within(inner, batch, epochs, wait)
}

/// [`take`], waiting at most `wait` for work.
pub(super) fn take_within(
    inner: &Inner,
    batch: &mut Vec<Op>,
    epochs: &mut Vec<u64>,
    wait: Duration,
) -> (u64, bool) {
    let mut queue = inner.queue.lock();
    if queue.ops.is_empty() && !queue.closed && !wait.is_zero() {
        inner.work.wait_for(&mut queue, wait);
    }
    let n = queue.ops.len().min(MAX_BATCH);
    let first_seq = queue.head_seq;
    batch.extend(queue.ops.drain(..n));
    let tagged = n.min(queue.epochs.len());
    epochs.extend(queue.epochs.drain(..tagged));
    queue.head_seq += n as u64;
    (first_seq, queue.closed && batch.is_empty())
}

fn write_once(
    inner: &Inner,
    connection: &mut Option<Connection>,
    scripts_loaded: &mut bool,
    scripts: &Scripts,
    pipe: &mut Pipeline,
    batch: &[Op],
    heartbeat: bool,
) -> redis::RedisResult<()> {
    if connection.is_none() {
        *connection = Some(open(&inner.client, inner.config.io_timeout)?);
        inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    let Some(con) = connection.as_mut() else {
        unreachable!("connected above");
    };
    if !*scripts_loaded {
        scripts.done.load(con)?;
        scripts.deliver.load(con)?;
        scripts.dead.load(con)?;
        *scripts_loaded = true;
    }
    encode(pipe, batch, &inner.keys, scripts, heartbeat.then(unix_ms));
    if pipe.is_empty() {
        return Ok(());
    }
    pipe.query::<Vec<Value>>(con)?;
    inner.counters.batches.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Folds `batch` into commands, keeping the order of writes.
fn encode(
    pipe: &mut Pipeline,
    batch: &[Op],
    keys: &Keys,
    scripts: &Scripts,
    alive_ms: Option<u64>,
) {
    pipe.clear();
    let mut i = 0;
    while i < batch.len() {
        let start = i;
        match &batch[i] {
            Op::Put { .. } => {
                let mut cmd = redis::cmd("ZADD");
                cmd.arg(&keys.due);
                while let Some(Op::Put { id, deadline_ms }) = batch.get(i)
                    && i - start < MAX_RUN
                {
                    cmd.arg(*deadline_ms).arg(id.as_bytes());
                    i += 1;
                }
                pipe.add_command(cmd);
            }
            Op::Cancel { .. } => {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(&keys.due);
                while let Some(Op::Cancel { id }) = batch.get(i)
                    && i - start < MAX_RUN
                {
                    cmd.arg(id.as_bytes());
                    i += 1;
                }
                pipe.add_command(cmd);
            }
            Op::Done { .. } => {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(scripts.done.get_hash()).arg(1).arg(&keys.due);
                while let Some(Op::Done { id, deadline_ms }) = batch.get(i)
                    && i - start < MAX_RUN
                {
                    cmd.arg(id.as_bytes()).arg(*deadline_ms);
                    i += 1;
                }
                pipe.add_command(cmd);
            }
            Op::Deliver { .. } => {
                let Some(stream) = &keys.stream else {
                    unreachable!("deliver_to_stream without a stream key");
                };
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(scripts.deliver.get_hash())
                    .arg(2)
                    .arg(&keys.due)
                    .arg(stream);
                while let Some(Op::Deliver {
                    id,
                    deadline_ms,
                    fired_ms,
                }) = batch.get(i)
                    && i - start < MAX_RUN
                {
                    cmd.arg(id.as_bytes()).arg(*deadline_ms).arg(*fired_ms);
                    i += 1;
                }
                pipe.add_command(cmd);
            }
            Op::Dead {
                id,
                deadline_ms,
                attempts,
                error,
                now_ms,
            } => {
                pipe.cmd("EVALSHA")
                    .arg(scripts.dead.get_hash())
                    .arg(2)
                    .arg(&keys.due)
                    .arg(&keys.dead)
                    .arg(id.as_bytes())
                    .arg(*deadline_ms)
                    .arg(*attempts)
                    .arg(error.as_str())
                    .arg(*now_ms);
                i += 1;
            }
        }
    }
    if let Some(alive_ms) = alive_ms {
        pipe.cmd("HSET")
            .arg(&keys.meta)
            .arg("alive_ms")
            .arg(alive_ms);
    }
}

/// Shutdown with Redis down: every write from `first_seq` on fails.
pub(super) fn give_up(inner: &Inner, first_seq: u64, in_batch: usize) {
    let queued = inner.queue.lock().ops.len();
    tracing::error!(
        unwritten = in_batch + queued,
        "journal: Redis still unreachable at shutdown; unconfirmed client writes are \
         answered with an error, and delivered orders not yet removed will fire again \
         after a restart"
    );
    inner.failed_from.store(first_seq, Ordering::Release);
    inner.notify();
}

//! The cluster-mode writer: each partition's writes go, in fenced script
//! calls, to the Redis master of its slot, and settle per partition.
//!
//! A turn takes what is queued, splits it by partition and epoch into
//! calls of [`APPLY`] (a stable split: one id's writes keep their order,
//! and writes to different ids commute), and sends every call not yet
//! answered through the [`Router`] (one pipeline per master). Then, per
//! call:
//! - answered: its writes settle (durable, or fenced off when the
//!   partition has a newer owner);
//! - its master did not answer (failing over, unreachable): the call is
//!   kept, in order, and sent again next turn, and its partition is marked
//!   down ([`Ownership::set_journal_down`]): client writes to it are
//!   refused until its master answers, while the other partitions go on.
//!   A partition marked down with nothing to send is probed each turn.
//! - with `--journal-replicas N`, each master's pipeline ends with `WAIT
//!   N`; client writes (`P`, `C`) that a master applied but fewer than N
//!   replicas confirmed are undone on that master (each call returns the
//!   score each of its client writes found, and the undo writes those
//!   back, newest first, under the same epoch), answered
//!   [`AckStatus::NotReplicated`], and the partition is dropped and
//!   loaded again ([`Ownership::unreplicated`]), so memory forgets them
//!   too. Removals of fired orders are not undone: if they are lost with a
//!   master, the orders fire again (at least once; the move into a stream
//!   stays exactly once, as the script checks the score).
//!
//! Acknowledgement: every write at or below the `acked` watermark is
//! settled. A write settled while an earlier one still waits for its
//! master is recorded on its own ([`Inner::settled`]); the watermark
//! catches up once the earlier ones are answered.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redis::{Cmd, Script, Value};

use crate::cluster::Ownership;
use crate::cluster::router::Router;
use crate::cluster::scripts::APPLY;
use crate::id::OrderId;

use super::writer::{HEARTBEAT, MAX_BACKOFF, MAX_RUN, give_up, take_within};
use super::{AckStatus, Inner, Op};

/// How soon a turn comes again while calls wait for a master, or a
/// partition is marked down.
const RETRY: Duration = Duration::from_millis(50);

/// What a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Queued writes.
    Writes,
    /// Writes back the scores that unreplicated client writes replaced.
    Undo,
    /// Asks the master of a partition marked down whether it answers.
    Probe,
}

/// One call of the fenced script (or a probe), kept until its master
/// answers.
struct Call {
    partition: u16,
    epoch: u64,
    kind: Kind,
    cmd: Cmd,
    /// Sequence numbers of its writes, in order.
    seqs: Vec<u64>,
    /// Its client writes (`P`, `C`), in order: the sequence number and the
    /// id, for an undo.
    client: Vec<(u64, OrderId)>,
}

/// What the script answered.
enum Applied {
    /// Applied; with undo information, the score each client write found.
    Yes(Vec<Option<Vec<u8>>>),
    /// Refused: the partition's epoch is now this one.
    Fenced(String),
}

pub(super) fn run(inner: &Inner, ownership: &Ownership) {
    // The connection made at connect time proved the URL; the router
    // opens its own.
    drop(inner.connection.lock().take());
    let apply = Script::new(APPLY);
    let wait = (inner.config.replicas > 0)
        .then_some((inner.config.replicas, inner.config.replicas_timeout));
    let mut router: Option<Router> = None;
    let mut carry: VecDeque<Call> = VecDeque::new();
    // Partitions (and the epoch) whose client writes are being undone:
    // later client writes under that epoch are refused without being sent.
    let mut refusing: HashMap<u16, u64> = HashMap::new();
    let mut batch: Vec<Op> = Vec::new();
    let mut epochs: Vec<u64> = Vec::new();
    let mut taken_up_to = inner.acked.load(Ordering::Acquire);
    let mut backoff = RETRY;
    let mut give_up_at: Option<Instant> = None;
    loop {
        let idle = carry.is_empty() && ownership.journal_down_count() == 0;
        let (first_seq, closing) = take_within(
            inner,
            &mut batch,
            &mut epochs,
            if idle { HEARTBEAT } else { RETRY },
        );
        if closing && carry.is_empty() {
            return;
        }
        let mut settled = Settled::default();
        if !batch.is_empty() {
            taken_up_to = first_seq + batch.len() as u64 - 1;
            let calls = calls_of(
                &batch,
                &epochs,
                first_seq,
                ownership,
                &apply,
                wait.is_some(),
                &refusing,
                &mut settled.not_replicated,
            );
            carry.extend(calls);
            batch.clear();
            epochs.clear();
        }
        let probes = probes(ownership, &carry);
        if carry.is_empty() && probes.is_empty() {
            settled.publish(inner, taken_up_to, &carry);
            continue;
        }
        let (answered_any, failed_any) = match connected(inner, &mut router) {
            Ok(router) => {
                let outcome = send(
                    inner,
                    ownership,
                    router,
                    &apply,
                    &mut carry,
                    probes,
                    wait,
                    &mut refusing,
                    &mut settled,
                );
                let layout = ownership.layout();
                let mut backlog = vec![0u64; router.masters().len()];
                for call in &carry {
                    if let Some(m) = router.master_of(layout.slot(call.partition)) {
                        backlog[m] += call.seqs.len() as u64;
                    }
                }
                inner.publish_router_backlog(router, &backlog);
                outcome
            }
            Err(error) => {
                log_unreachable(&error, &carry);
                // No master known: every partition held here is down.
                for p in ownership.partitions().iter() {
                    if ownership.settle_epoch_of(p).is_some() {
                        ownership.set_journal_down(p, true);
                    }
                }
                carry.retain(|c| c.kind != Kind::Probe);
                (false, true)
            }
        };
        inner.partitions_down(ownership.journal_down_count());
        settled.publish(inner, taken_up_to, &carry);
        if failed_any {
            inner.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if inner.queue.lock().closed && !carry.is_empty() {
            let deadline =
                *give_up_at.get_or_insert_with(|| Instant::now() + inner.config.shutdown_grace);
            if Instant::now() >= deadline {
                let floor = floor(&carry).unwrap_or(taken_up_to + 1);
                give_up(inner, floor, carry.iter().map(|c| c.seqs.len()).sum());
                return;
            }
        }
        // Nothing got through at all: Redis is down; do not spin.
        if failed_any && !answered_any {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = RETRY;
        }
    }
}

/// The router, connecting it first if needed.
fn connected<'r>(
    inner: &Inner,
    router: &'r mut Option<Router>,
) -> redis::RedisResult<&'r mut Router> {
    if router.is_none() {
        let connected = Router::connect(inner.seeds.clone(), inner.config.io_timeout, &[APPLY])?;
        inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        *router = Some(connected);
    }
    Ok(router.as_mut().expect("connected above"))
}

fn log_unreachable(error: &redis::RedisError, carry: &VecDeque<Call>) {
    tracing::warn!(
        %error,
        unconfirmed = carry.iter().map(|c| c.seqs.len()).sum::<usize>(),
        "journal: cannot reach Redis; unconfirmed writes are kept and resent"
    );
}

/// Sends every call of `carry` and the probes; keeps in `carry` (in order)
/// the calls whose master did not answer, plus the undo calls. Returns
/// whether any master answered, and whether any did not.
#[allow(clippy::too_many_arguments)]
fn send(
    inner: &Inner,
    ownership: &Ownership,
    router: &mut Router,
    apply: &Script,
    carry: &mut VecDeque<Call>,
    probes: Vec<Call>,
    wait: Option<(u32, Duration)>,
    refusing: &mut HashMap<u16, u64>,
    settled: &mut Settled,
) -> (bool, bool) {
    let layout = ownership.layout();
    carry.extend(probes);
    let commands: Vec<(u16, &Cmd)> = carry
        .iter()
        .map(|c| (layout.slot(c.partition), &c.cmd))
        .collect();
    let answers = router.query_waiting(&commands, wait);
    inner.counters.batches.fetch_add(1, Ordering::Relaxed);
    let mut kept = VecDeque::new();
    let mut undo: BTreeMap<u16, Undo> = BTreeMap::new();
    // Per partition: whether its master answered this turn.
    let mut reached: BTreeMap<u16, bool> = BTreeMap::new();
    // The first error of each partition that got one.
    let mut errors: BTreeMap<u16, redis::RedisError> = BTreeMap::new();
    // Masters that did not answer at all: every partition held here whose
    // slot they serve is down, not only those that had something to send.
    let mut failed_masters: Vec<usize> = Vec::new();
    let mut first_error = None;
    for (call, answer) in carry.drain(..).zip(answers) {
        let p = call.partition;
        let reply = match call.kind {
            Kind::Probe => answer.reply.map(|_| Applied::Yes(Vec::new())),
            _ => answer.reply.and_then(|r| applied(&r)),
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(error) => {
                reached.insert(p, false);
                errors.entry(p).or_insert_with(|| error.clone());
                if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
                    failed_masters.extend(answer.master);
                }
                first_error.get_or_insert(error);
                if call.kind != Kind::Probe {
                    kept.push_back(call);
                }
                continue;
            }
        };
        reached.entry(p).or_insert(true);
        match (reply, call.kind) {
            (_, Kind::Probe) => {}
            (Applied::Fenced(current), kind) => {
                tracing::warn!(
                    partition = p,
                    epoch = call.epoch,
                    %current,
                    writes = call.seqs.len(),
                    "journal: fenced off: the partition has a newer owner; writes refused"
                );
                // An undo fenced off: a new owner loaded the partition, with
                // or without the writes; their clients are told they were not
                // replicated either way.
                match kind {
                    Kind::Undo => settled.not_replicated.extend(&call.seqs),
                    _ => settled.fenced.extend(&call.seqs),
                }
                ownership.fenced(p, call.epoch);
            }
            (Applied::Yes(_), Kind::Undo) => {
                settled.not_replicated.extend(&call.seqs);
                tracing::warn!(
                    partition = p,
                    epoch = call.epoch,
                    "journal: unreplicated client writes undone; the partition is loaded again"
                );
                ownership.unreplicated(p, call.epoch);
            }
            (Applied::Yes(before), _) => {
                let short = wait.is_some_and(|(n, _)| answer.replicas.is_none_or(|r| r < n as i64));
                if short && !call.client.is_empty() {
                    tracing::warn!(
                        partition = p,
                        replicas = ?answer.replicas,
                        wanted = wait.map(|w| w.0),
                        writes = call.client.len(),
                        "journal: client writes not replicated in time; undoing them"
                    );
                    let undone = undo.entry(p).or_insert_with(|| Undo {
                        epoch: call.epoch,
                        seqs: Vec::new(),
                        writes: Vec::new(),
                    });
                    for ((seq, id), before) in call.client.iter().zip(before) {
                        undone.seqs.push(*seq);
                        undone.writes.push((id.clone(), before));
                    }
                    let client: hashbrown::HashSet<u64> =
                        call.client.iter().map(|(s, _)| *s).collect();
                    settled
                        .durable
                        .extend(call.seqs.iter().filter(|&s| !client.contains(s)));
                    refusing.insert(p, call.epoch);
                    ownership.refuse_writes(p, call.epoch);
                } else {
                    settled.durable.extend(&call.seqs);
                }
            }
        }
    }
    for (p, undone) in undo.into_iter().rev() {
        kept.push_front(undo_call(ownership, apply, p, undone));
    }
    *carry = kept;
    if !failed_masters.is_empty() {
        for p in ownership.partitions().iter() {
            if ownership.settle_epoch_of(p).is_some()
                && router
                    .master_of(layout.slot(p))
                    .is_some_and(|m| failed_masters.contains(&m))
            {
                reached.entry(p).or_insert(false);
            }
        }
    }
    let mut answered_any = false;
    let mut failed_any = false;
    for (&p, &ok) in &reached {
        answered_any |= ok;
        failed_any |= !ok;
        let was_down = ownership.journal_down(p);
        if was_down == ok {
            ownership.set_journal_down(p, !ok);
            if ok {
                tracing::info!(
                    partition = p,
                    "journal: the partition's Redis master answers again; accepting its writes"
                );
            } else {
                let error = errors.get(&p).or(first_error.as_ref());
                let moving = error.and_then(|e| e.code()).is_some_and(|code| {
                    matches!(code, "TRYAGAIN" | "ASK" | "MOVED" | "CLUSTERDOWN")
                });
                let error = error.map(|e| e.to_string()).unwrap_or_default();
                if moving {
                    tracing::warn!(
                        partition = p,
                        %error,
                        "journal: the partition's slot is moving between Redis masters, or its \
                         master is failing over; refusing its client writes meanwhile (the other \
                         partitions go on), unconfirmed writes are kept and resent"
                    );
                } else {
                    tracing::error!(
                        partition = p,
                        %error,
                        "journal: the partition's Redis master does not answer; refusing its \
                         client writes (the other partitions go on), unconfirmed writes are kept \
                         and resent"
                    );
                }
            }
        }
    }
    (answered_any, failed_any)
}

/// Client writes of one partition to undo: their sequence numbers (their
/// clients are answered once the undo is in) and, in the order they were
/// applied, each id with the score it found.
struct Undo {
    epoch: u64,
    seqs: Vec<u64>,
    writes: Vec<(OrderId, Option<Vec<u8>>)>,
}

/// Writes settled in one turn.
#[derive(Default)]
struct Settled {
    durable: Vec<u64>,
    fenced: Vec<u64>,
    not_replicated: Vec<u64>,
}

impl Settled {
    /// Publishes them, and moves the watermark up to the first write still
    /// waiting in `carry` (or to the last one taken).
    fn publish(self, inner: &Inner, taken_up_to: u64, carry: &VecDeque<Call>) {
        let watermark = floor(carry).map_or(taken_up_to, |f| f - 1);
        let written = self.durable.len() as u64;
        inner.settled(self.fenced, AckStatus::Fenced);
        inner.settled(self.not_replicated, AckStatus::NotReplicated);
        inner.settled(
            self.durable.into_iter().filter(|&s| s > watermark),
            AckStatus::Durable,
        );
        inner.counters.writes.fetch_add(written, Ordering::Relaxed);
        if watermark > inner.acked.load(Ordering::Acquire) {
            inner.acked_up_to(watermark);
        } else {
            inner.notify();
        }
        inner.prune_outcomes();
    }
}

/// The first sequence number still waiting in `carry`.
fn floor(carry: &VecDeque<Call>) -> Option<u64> {
    carry.iter().filter_map(|c| c.seqs.first().copied()).min()
}

/// Probes for the partitions held here that are marked down and have no
/// call waiting: `EXISTS` of the partition's epoch key, on its master.
fn probes(ownership: &Ownership, carry: &VecDeque<Call>) -> Vec<Call> {
    if ownership.journal_down_count() == 0 {
        return Vec::new();
    }
    let layout = ownership.layout();
    ownership
        .partitions()
        .iter()
        .filter(|&p| ownership.journal_down(p) && !carry.iter().any(|c| c.partition == p))
        .map(|p| {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(layout.epoch(p));
            Call {
                partition: p,
                epoch: 0,
                kind: Kind::Probe,
                cmd,
                seqs: Vec::new(),
                client: Vec::new(),
            }
        })
        .collect()
}

/// Splits `batch` by partition and epoch, in queue order within each, into
/// fenced script calls. Client writes of a partition in `refusing` (under
/// that epoch) are not sent: their sequence numbers go to `refused`.
#[allow(clippy::too_many_arguments)]
fn calls_of(
    batch: &[Op],
    epochs: &[u64],
    first_seq: u64,
    ownership: &Ownership,
    apply: &Script,
    undoable: bool,
    refusing: &HashMap<u16, u64>,
    refused: &mut Vec<u64>,
) -> Vec<Call> {
    debug_assert_eq!(
        batch.len(),
        epochs.len(),
        "every cluster write carries its epoch"
    );
    let mut order: Vec<(u16, u64, usize)> = batch
        .iter()
        .zip(epochs)
        .enumerate()
        .map(|(i, (op, &epoch))| (ownership.partition_of(op.id().as_bytes()), epoch, i))
        .collect();
    // Stable by (partition, epoch); ties keep queue order, as `i` is last.
    order.sort_unstable();
    let layout = ownership.layout();
    let mut calls: Vec<Call> = Vec::new();
    for (partition, epoch, i) in order {
        let seq = first_seq + i as u64;
        let op = &batch[i];
        let client = matches!(op, Op::Put { .. } | Op::Cancel { .. });
        if client && refusing.get(&partition) == Some(&epoch) {
            refused.push(seq);
            continue;
        }
        let fits = calls.last().is_some_and(|c| {
            c.partition == partition && c.epoch == epoch && c.seqs.len() < MAX_RUN
        });
        if !fits {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(apply.get_hash())
                .arg(4)
                .arg(layout.epoch(partition))
                .arg(layout.due(partition))
                .arg(layout.dead(partition))
                .arg(
                    layout
                        .stream(partition)
                        .unwrap_or_else(|| layout.due(partition)),
                )
                .arg(epoch)
                .arg(if undoable { "u" } else { "-" });
            calls.push(Call {
                partition,
                epoch,
                kind: Kind::Writes,
                cmd,
                seqs: Vec::new(),
                client: Vec::new(),
            });
        }
        let call = calls.last_mut().expect("pushed above");
        call.seqs.push(seq);
        if client {
            call.client.push((seq, op.id().clone()));
        }
        encode_op(&mut call.cmd, op);
    }
    calls
}

/// Appends one write to a call of the fenced script.
fn encode_op(cmd: &mut Cmd, op: &Op) {
    match op {
        Op::Put { id, deadline_ms } => {
            cmd.arg("P").arg(id.as_bytes()).arg(*deadline_ms);
        }
        Op::Cancel { id } => {
            cmd.arg("C").arg(id.as_bytes());
        }
        Op::Done { id, deadline_ms } => {
            cmd.arg("D").arg(id.as_bytes()).arg(*deadline_ms);
        }
        Op::Deliver {
            id,
            deadline_ms,
            fired_ms,
        } => {
            cmd.arg("S")
                .arg(id.as_bytes())
                .arg(*deadline_ms)
                .arg(*fired_ms);
        }
        Op::Dead {
            id,
            deadline_ms,
            attempts,
            error,
            now_ms,
        } => {
            cmd.arg("X")
                .arg(id.as_bytes())
                .arg(*deadline_ms)
                .arg(*attempts)
                .arg(error.as_str())
                .arg(*now_ms);
        }
    }
}

/// The call that puts back what the client writes of `undo` replaced:
/// newest first, a score found is written back, none found is removed.
fn undo_call(ownership: &Ownership, apply: &Script, p: u16, undo: Undo) -> Call {
    let Undo {
        epoch,
        seqs,
        writes,
    } = undo;
    let layout = ownership.layout();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(apply.get_hash())
        .arg(4)
        .arg(layout.epoch(p))
        .arg(layout.due(p))
        .arg(layout.dead(p))
        .arg(layout.stream(p).unwrap_or_else(|| layout.due(p)))
        .arg(epoch)
        .arg("-");
    for (id, before) in writes.into_iter().rev() {
        match before {
            Some(score) => cmd.arg("P").arg(id.as_bytes()).arg(score),
            None => cmd.arg("C").arg(id.as_bytes()),
        };
    }
    Call {
        partition: p,
        epoch,
        kind: Kind::Undo,
        cmd,
        seqs,
        client: Vec::new(),
    }
}

/// The reply of the fenced script.
fn applied(reply: &Value) -> redis::RedisResult<Applied> {
    let bad = || {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "unexpected reply from the fenced journal script",
            format!("{reply:?}"),
        ))
    };
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    };
    match items.as_slice() {
        [Value::Int(1), Value::Int(_), before @ ..] => Ok(Applied::Yes(
            before
                .iter()
                .map(|v| text(v).filter(|b| !b.is_empty()))
                .collect(),
        )),
        [Value::Int(0), current] => Ok(Applied::Fenced(
            text(current)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
        )),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::scripts::Layout;
    use crate::cluster::slot::Partitions;

    fn ownership() -> Ownership {
        Ownership::new(Partitions::new(16).unwrap(), Layout::new("tw:", None))
    }

    fn id(s: &str) -> OrderId {
        OrderId::new(s.as_bytes()).unwrap()
    }

    /// The arguments of a command after the fixed ones (script, keys,
    /// epoch, mode), as text.
    fn writes_of(cmd: &Cmd) -> Vec<String> {
        let packed = String::from_utf8(cmd.get_packed_command()).unwrap();
        let args: Vec<&str> = packed
            .split("\r\n")
            .filter(|l| !l.starts_with('$') && !l.starts_with('*') && !l.is_empty())
            .collect();
        args[9..].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_ids_writes_stay_in_order_and_refused_partitions_are_not_sent() {
        let own = ownership();
        let apply = Script::new(APPLY);
        let a = (0..)
            .map(|i| format!("a{i}"))
            .find(|s| own.partition_of(s.as_bytes()) == 1)
            .unwrap();
        let b = (0..)
            .map(|i| format!("b{i}"))
            .find(|s| own.partition_of(s.as_bytes()) == 2)
            .unwrap();
        let batch = vec![
            Op::Put {
                id: id(&a),
                deadline_ms: 10,
            },
            Op::Put {
                id: id(&b),
                deadline_ms: 20,
            },
            Op::Cancel { id: id(&a) },
            Op::Done {
                id: id(&b),
                deadline_ms: 20,
            },
        ];
        let epochs = vec![7, 3, 7, 3];
        let mut refused = Vec::new();
        let calls = calls_of(
            &batch,
            &epochs,
            100,
            &own,
            &apply,
            true,
            &HashMap::new(),
            &mut refused,
        );
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].partition, calls[0].epoch), (1, 7));
        assert_eq!(calls[0].seqs, vec![100, 102]);
        assert_eq!(writes_of(&calls[0].cmd), ["P", a.as_str(), "10", "C", &a]);
        assert_eq!(calls[0].client.len(), 2);
        assert_eq!(calls[1].seqs, vec![101, 103]);
        assert_eq!(
            calls[1].client.len(),
            1,
            "the removal is not a client write"
        );
        assert!(refused.is_empty());

        // Partition 2 under epoch 3 is being undone: its client writes are
        // refused here; the removal still goes.
        let refusing = HashMap::from([(2u16, 3u64)]);
        let calls = calls_of(
            &batch,
            &epochs,
            100,
            &own,
            &apply,
            true,
            &refusing,
            &mut refused,
        );
        assert_eq!(refused, vec![101]);
        assert_eq!(calls[1].seqs, vec![103]);
        assert_eq!(writes_of(&calls[1].cmd), ["D", b.as_str(), "20"]);
    }

    #[test]
    fn an_undo_puts_back_what_each_write_found_newest_first() {
        let own = ownership();
        let undo = Undo {
            epoch: 4,
            seqs: vec![5, 6, 9],
            writes: vec![
                (id("x"), None),
                (id("x"), Some(b"1000".to_vec())),
                (id("y"), Some(b"2000".to_vec())),
            ],
        };
        let call = undo_call(&own, &Script::new(APPLY), 3, undo);
        assert_eq!(call.kind, Kind::Undo);
        assert_eq!(call.seqs, vec![5, 6, 9]);
        // y back to 2000, then x back to 1000 (the cancel), then x removed
        // (the add that found nothing).
        assert_eq!(
            writes_of(&call.cmd),
            ["P", "y", "2000", "P", "x", "1000", "C", "x"]
        );
    }

    #[test]
    fn script_replies_are_read() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![Value::Int(1), Value::Int(3), bulk(""), bulk("17")]);
        let Ok(Applied::Yes(before)) = applied(&reply) else {
            panic!("applied")
        };
        assert_eq!(before, vec![None, Some(b"17".to_vec())]);
        let reply = Value::Array(vec![Value::Int(0), bulk("9")]);
        assert!(matches!(applied(&reply), Ok(Applied::Fenced(e)) if e == "9"));
        assert!(applied(&Value::Int(1)).is_err());
    }
}

//! The manager thread: one round every quarter lease (sooner when the
//! journal reports a fenced write).
//!
//! A round: renew the leases held here (a lease found with another value
//! is lost: drop the partition); refresh this node's heartbeat and read
//! the members; read every partition's lease; hand off partitions
//! that rendezvous now gives to another live node (stop client writes,
//! wait until the journal has confirmed what was queued, forget the
//! timers, release the lease); take free partitions that rendezvous gives
//! to this node (epoch + 1, load the due set, serve). Whatever happens
//! with Redis, a partition whose lease ran out by this node's clock is
//! dropped, so a node cut off from Redis stops serving and firing it.
//!
//! Every command goes through a [`Router`]: on a Redis Cluster each
//! partition's commands go to the master of its slot, and the renewals run
//! first, so a master that fails over costs only the leases of the
//! partitions it holds (the others are renewed on their own masters).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::{Script, Value};

use super::membership::{self, View};
use super::router::Router;
use super::{Held, Owner, Shared, rendezvous, scripts};
use crate::engine::Engine;
use crate::id::OrderId;
use crate::journal::Ack;
use std::sync::atomic::Ordering;

struct Scripts {
    members: Script,
    take: Script,
    renew: Script,
    release: Script,
}

pub(super) fn run(shared: &Shared, engine: &Engine) {
    let lease_ms = shared.config.lease.as_millis() as u64;
    let round = Duration::from_millis((lease_ms / 4).max(20));
    let scripts = Scripts {
        members: Script::new(scripts::MEMBERS),
        take: Script::new(scripts::TAKE),
        renew: Script::new(scripts::RENEW),
        release: Script::new(scripts::RELEASE),
    };
    let own = &shared.ownership;
    let mut router: Option<Router> = None;
    let mut handoffs: HashMap<u16, Ack> = HashMap::new();
    let mut failures = 0u32;
    // Partitions dropped because their client writes did not reach
    // `--journal-replicas` replicas: their leases are given back next round.
    let mut to_release: Vec<(u16, u64)> = Vec::new();
    // From when (this node's ms) the member list is trusted to move
    // partitions; `None` while heartbeats fail. Trusted at start.
    let mut trusted_from: Option<u64> = Some(0);
    while !shared.stop.load(Ordering::SeqCst) {
        let started = own.now_ms();
        let mut drops: Vec<u16> = Vec::new();
        for p in own.partitions().iter() {
            if own.take_fenced(p) && own.held_epoch(p) != 0 {
                tracing::warn!(
                    partition = p,
                    "cluster: fenced off by a newer owner; dropping"
                );
                shared.counters.fenced_drops.fetch_add(1, Ordering::Relaxed);
                drops.push(p);
            }
        }
        forget(shared, engine, &drops, &mut handoffs);
        let unreplicated: Vec<(u16, u64)> = own
            .partitions()
            .iter()
            .filter(|&p| own.take_unreplicated(p) && own.held_epoch(p) != 0)
            .map(|p| (p, own.held_epoch(p)))
            .collect();
        if !unreplicated.is_empty() {
            tracing::warn!(
                partitions = ?unreplicated.iter().map(|u| u.0).collect::<Vec<_>>(),
                "cluster: client writes undone for want of replicas; dropping the partitions to load them again"
            );
            let ps: Vec<u16> = unreplicated.iter().map(|u| u.0).collect();
            forget(shared, engine, &ps, &mut handoffs);
            to_release.extend(unreplicated);
        }
        // First, before any Redis I/O: a node that wakes up from a pause
        // drops what it no longer holds without waiting for Redis.
        drop_expired(shared, engine, &mut handoffs);
        let connected = match router.take() {
            Some(r) => Ok(r),
            None => super::connect(shared, round.max(Duration::from_millis(100))),
        };
        let result = connected.and_then(|r| {
            let r = router.insert(r);
            release(shared, r, &scripts, &mut to_release);
            one_round(
                shared,
                engine,
                r,
                &scripts,
                &mut handoffs,
                &mut trusted_from,
            )
        });
        match result {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "cluster: Redis is back");
                }
                failures = 0;
            }
            Err(error) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::error!(%error, failures, "cluster: cannot reach Redis; partitions whose lease runs out stop being served");
                }
            }
        }
        drop_expired(shared, engine, &mut handoffs);
        let spent = Duration::from_millis(own.now_ms() - started);
        own.sleep(round.saturating_sub(spent));
    }
}

/// Gives back the leases of `partitions` (already dropped here), so that
/// they are taken again, with a new epoch, and loaded from Redis. A release
/// that fails leaves the lease to run out by itself.
fn release(
    shared: &Shared,
    router: &mut Router,
    scripts: &Scripts,
    partitions: &mut Vec<(u16, u64)>,
) {
    let layout = shared.ownership.layout();
    for (p, e) in partitions.drain(..) {
        let _ = router.with(layout.slot(p), |con| {
            scripts
                .release
                .key(layout.lease(p))
                .arg(format!("{} {e}", shared.me.id))
                .invoke::<i64>(con)
        });
    }
}

fn one_round(
    shared: &Shared,
    engine: &Engine,
    router: &mut Router,
    scripts: &Scripts,
    handoffs: &mut HashMap<u16, Ack>,
    trusted_from: &mut Option<u64>,
) -> redis::RedisResult<()> {
    let own = &shared.ownership;
    let layout = own.layout();
    let parts = own.partitions();
    let lease_ms = shared.config.lease.as_millis() as u64;
    let me = &shared.me;
    // The first error of a partition's command; the round goes on with the
    // partitions whose master answered.
    let mut first_error: Option<redis::RedisError> = None;

    // Renew what is held here, first: it needs nothing else from Redis.
    if let Err(error) = renew(shared, engine, router, scripts, handoffs) {
        first_error.get_or_insert(error);
    }

    let view = match router.with(layout.cluster_slot(), |con| {
        membership::heartbeat(con, &scripts.members, layout, Some(me), lease_ms)
    }) {
        Ok(view) => view,
        Err(error) => {
            *trusted_from = None;
            return Err(error);
        }
    };
    // After heartbeats failed for a while (Redis, or the master of the
    // cluster keys, failing over), every node's entry may have expired:
    // the first lists after that are partial, and moving partitions by
    // them would only move them back. Wait one lease of heartbeats first,
    // so that every live node is listed again.
    let now = own.now_ms();
    let may_move = now >= *trusted_from.get_or_insert(now + lease_ms);
    // The lease table: "<id> <epoch>" or nil per partition; `None` where
    // the partition's master did not answer.
    let calls: Vec<(u16, redis::Cmd)> = parts
        .iter()
        .map(|p| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(layout.lease(p));
            (layout.slot(p), cmd)
        })
        .collect();
    let holders: Vec<Option<Option<String>>> = router
        .query(&borrowed(&calls))
        .into_iter()
        .map(|reply| {
            match reply.and_then(|v| redis::from_redis_value(v).map_err(redis::RedisError::from)) {
                Ok(holder) => Some(holder),
                Err(error) => {
                    first_error.get_or_insert(error);
                    None
                }
            }
        })
        .collect();
    publish_routing(shared, &view, &holders);

    let live = || view.members.iter().map(|m| m.id.as_str());
    // Hand off what another live node should own.
    for p in parts.iter() {
        if may_move
            && let Held::Serving(_) = own.state(p)
            && let Some(preferred) = rendezvous::preferred(live(), p)
            && preferred != me.id
            && !handoffs.contains_key(&p)
        {
            own.stop_writes(p);
            let journal = engine.journal().map(|j| j.tail()).unwrap_or(Ack::DURABLE);
            tracing::info!(partition = p, to = %view.addr_of(preferred).unwrap_or("?"), "cluster: handing off (rendezvous prefers another live node)");
            handoffs.insert(p, journal);
        }
    }
    let ready: Vec<u16> = handoffs
        .iter()
        .filter(|&(_, &ack)| engine.journal().is_none_or(|j| j.settled_through(ack)))
        .map(|(&p, _)| p)
        .collect();
    // One pass over the wheel for all of them, then the releases.
    let epochs: Vec<(u16, u64)> = ready.iter().map(|&p| (p, own.held_epoch(p))).collect();
    forget(shared, engine, &ready, handoffs);
    for (p, e) in epochs {
        // A release that fails leaves the lease to run out by itself.
        let released: i64 = match router.with(layout.slot(p), |con| {
            scripts
                .release
                .key(layout.lease(p))
                .arg(format!("{} {e}", me.id))
                .invoke(con)
        }) {
            Ok(released) => released,
            Err(error) => {
                first_error.get_or_insert(error);
                0
            }
        };
        shared.counters.handoffs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(partition = p, epoch = e, released, "cluster: handed off");
    }

    // Take free partitions rendezvous gives to this node.
    let wanted: Vec<u16> = parts
        .iter()
        .filter(|&p| {
            may_move
                && matches!(holders[p as usize], Some(None))
                && own.held_epoch(p) == 0
                && rendezvous::preferred(live(), p) == Some(me.id.as_str())
        })
        .collect();
    let mut renewed_at = own.now_ms();
    for chunk in wanted.chunks(TAKES_PER_TRIP) {
        if let Err(error) = take(
            shared,
            engine,
            router,
            scripts,
            handoffs,
            &mut renewed_at,
            chunk,
        ) {
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Renews the leases held here; drops the partitions whose lease another
/// node holds now. `Err`: some masters did not answer (those leases run
/// out here unless a later renewal gets through).
fn renew(
    shared: &Shared,
    engine: &Engine,
    router: &mut Router,
    scripts: &Scripts,
    handoffs: &mut HashMap<u16, Ack>,
) -> redis::RedisResult<()> {
    let own = &shared.ownership;
    let layout = own.layout();
    let lease_ms = shared.config.lease.as_millis() as u64;
    let me = &shared.me;
    let mut first_error = None;
    let held: Vec<(u16, u64)> = own
        .partitions()
        .iter()
        .map(|p| (p, own.held_epoch(p)))
        .filter(|&(_, e)| e != 0)
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    let sent = own.now_ms();
    let calls: Vec<(u16, redis::Cmd)> = held
        .iter()
        .map(|&(p, e)| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(scripts.renew.get_hash())
                .arg(1)
                .arg(layout.lease(p))
                .arg(format!("{} {e}", me.id))
                .arg(lease_ms);
            (layout.slot(p), cmd)
        })
        .collect();
    let renewed = router.query(&borrowed(&calls));
    let mut lost = Vec::new();
    for (&(p, e), reply) in held.iter().zip(renewed) {
        match reply {
            Ok(Value::Int(1)) => {
                if own.held_epoch(p) == e {
                    own.renewed(p, sent + lease_ms);
                    shared.counters.renewed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(_) => lost.push(p),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if !lost.is_empty() {
        tracing::warn!(partitions = ?lost, "cluster: leases lost to another node; dropping");
        shared
            .counters
            .lost
            .fetch_add(lost.len() as u64, Ordering::Relaxed);
        forget(shared, engine, &lost, handoffs);
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// During a long round (many partitions to load), renews the leases held
/// and the heartbeat every quarter lease (`renewed_at`: the last time), as
/// rounds would: otherwise the first partitions taken would run out while
/// the last ones load.
fn keep_alive(
    shared: &Shared,
    engine: &Engine,
    router: &mut Router,
    scripts: &Scripts,
    handoffs: &mut HashMap<u16, Ack>,
    renewed_at: &mut u64,
) {
    let own = &shared.ownership;
    let lease_ms = shared.config.lease.as_millis() as u64;
    if own.now_ms() < *renewed_at + lease_ms / 4 {
        return;
    }
    *renewed_at = own.now_ms();
    let _ = renew(shared, engine, router, scripts, handoffs);
    let layout = own.layout();
    let _ = router.with(layout.cluster_slot(), |con| {
        membership::heartbeat(con, &scripts.members, layout, Some(&shared.me), lease_ms)
    });
}

/// Partitions taken (and loaded) per round trip: their takes, then their
/// due sets, go as one pipeline per Redis master, so a node taking many
/// partitions reads them from all masters at once.
const TAKES_PER_TRIP: usize = 16;

/// Takes `partitions` (free, and preferred here) and loads them. With
/// `--journal-replicas N`, a partition is loaded only once N replicas of its
/// master have the take, and so every write before it; otherwise its lease
/// is given back and it is tried again next round.
fn take(
    shared: &Shared,
    engine: &Engine,
    router: &mut Router,
    scripts: &Scripts,
    handoffs: &mut HashMap<u16, Ack>,
    renewed_at: &mut u64,
    partitions: &[u16],
) -> redis::RedisResult<()> {
    let own = &shared.ownership;
    let layout = own.layout();
    let lease_ms = shared.config.lease.as_millis() as u64;
    let mut first_error = None;
    let sent = own.now_ms();
    let calls: Vec<(u16, redis::Cmd)> = partitions
        .iter()
        .map(|&p| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(scripts.take.get_hash())
                .arg(2)
                .arg(layout.lease(p))
                .arg(layout.epoch(p))
                .arg(&shared.me.id)
                .arg(lease_ms);
            (layout.slot(p), cmd)
        })
        .collect();
    let mut taken: Vec<(u16, u64)> = Vec::new();
    for (&p, reply) in partitions.iter().zip(router.query(&borrowed(&calls))) {
        match reply {
            // Otherwise taken by someone else meanwhile.
            Ok(Value::Array(items)) => {
                if let [Value::Int(1), Value::Int(e)] = items.as_slice() {
                    taken.push((p, *e as u64));
                }
            }
            Ok(_) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some((n, timeout)) = engine
        .journal()
        .map(|j| (j.config().replicas, j.config().replicas_timeout))
        .filter(|&(n, _)| n > 0)
    {
        let mut confirmed: HashMap<Option<usize>, bool> = HashMap::new();
        let mut unconfirmed = Vec::new();
        taken.retain(|&(p, e)| {
            let slot = layout.slot(p);
            let ok = *confirmed.entry(router.master_of(slot)).or_insert_with(|| {
                let replicas = router.wait_replicas(slot, n, timeout);
                let ok = replicas.as_ref().is_ok_and(|&r| r >= i64::from(n));
                if !ok {
                    tracing::warn!(
                        partition = p,
                        wanted = n,
                        replicas = ?replicas,
                        "cluster: the partition's Redis master has fewer replicas in sync than \
                         --journal-replicas; not serving its partitions until it has"
                    );
                }
                ok
            });
            if !ok {
                unconfirmed.push((p, e));
            }
            ok
        });
        release(shared, router, scripts, &mut unconfirmed);
    }
    for &(p, epoch) in &taken {
        own.begin_load(p, epoch, sent + lease_ms);
    }
    // Read each due set from its partition's master (the one that just
    // took it), one partition per master per round trip: the masters answer
    // at the same time, and no reply holds more than one partition.
    let mut waves: Vec<Vec<(u16, u64)>> = Vec::new();
    let mut per_master: HashMap<Option<usize>, usize> = HashMap::new();
    for &(p, e) in &taken {
        let n = per_master
            .entry(router.master_of(layout.slot(p)))
            .or_insert(0);
        if waves.len() <= *n {
            waves.push(Vec::new());
        }
        waves[*n].push((p, e));
        *n += 1;
    }
    for wave in waves {
        let loading = std::time::Instant::now();
        let reads: Vec<(u16, redis::Cmd)> = wave
            .iter()
            .map(|&(p, _)| {
                let mut cmd = redis::cmd("ZRANGE");
                cmd.arg(layout.due(p)).arg(0).arg(-1).arg("WITHSCORES");
                (layout.slot(p), cmd)
            })
            .collect();
        let replies = router.query(&borrowed(&reads));
        // Each partition's reply is read and loaded on a thread of its own
        // (the engine takes its shard locks one timer at a time).
        let loaded: Vec<redis::RedisResult<(usize, u64)>> = std::thread::scope(|scope| {
            let threads: Vec<_> = replies
                .into_iter()
                .map(|reply| {
                    scope.spawn(move || {
                        let entries: Vec<(Vec<u8>, f64)> = redis::from_redis_value(reply?)?;
                        let total = entries.len();
                        let overdue = engine.load(entries.into_iter().filter_map(|(m, score)| {
                            OrderId::new(m)
                                .ok()
                                .map(|id| (id, score.max(0.0).round() as u64))
                        }));
                        Ok((total, overdue))
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a load thread panicked"))
                .collect()
        });
        for (&(p, epoch), result) in wave.iter().zip(loaded) {
            let (total, overdue) = match result {
                Ok(counts) => counts,
                Err(error) => {
                    // Not loaded, so not served; the lease runs out and the
                    // partition is taken again (epoch + 1) later.
                    own.forget(p);
                    first_error.get_or_insert(error);
                    continue;
                }
            };
            own.serve(p);
            let took = loading.elapsed().as_millis() as u64;
            let c = &shared.counters;
            c.takeovers.fetch_add(1, Ordering::Relaxed);
            c.last_takeover_ms.store(took, Ordering::Relaxed);
            c.last_takeover_unix_ms.store(unix_ms(), Ordering::Relaxed);
            tracing::info!(
                partition = p,
                epoch,
                timers = total,
                overdue,
                load_ms = took,
                "cluster: took partition (free, and rendezvous prefers this node); serving"
            );
        }
        keep_alive(shared, engine, router, scripts, handoffs, renewed_at);
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn borrowed(calls: &[(u16, redis::Cmd)]) -> Vec<(u16, &redis::Cmd)> {
    calls.iter().map(|(s, c)| (*s, c)).collect()
}

/// Drops the partitions whose lease ran out by this node's clock.
fn drop_expired(shared: &Shared, engine: &Engine, handoffs: &mut HashMap<u16, Ack>) {
    let own = &shared.ownership;
    let now = own.now_ms();
    let expired: Vec<u16> = own
        .partitions()
        .iter()
        .filter(|&p| own.held_epoch(p) != 0 && own.valid_until(p) <= now)
        .collect();
    if !expired.is_empty() {
        tracing::error!(partitions = ?expired, "cluster: leases ran out before they could be renewed; no longer serving them");
        shared
            .counters
            .lost
            .fetch_add(expired.len() as u64, Ordering::Relaxed);
        forget(shared, engine, &expired, handoffs);
    }
}

/// Stops serving `partitions` and forgets their timers.
fn forget(shared: &Shared, engine: &Engine, partitions: &[u16], handoffs: &mut HashMap<u16, Ack>) {
    if partitions.is_empty() {
        return;
    }
    let own = &shared.ownership;
    let mut gone = vec![false; own.partitions().count() as usize];
    for &p in partitions {
        own.forget(p);
        handoffs.remove(&p);
        gone[p as usize] = true;
    }
    let forgotten = engine.forget_where(|id| gone[own.partition_of(id) as usize]);
    tracing::info!(partitions = ?partitions, timers = forgotten, "cluster: partitions dropped");
}

/// `holders[p]` is `None` where the lease could not be read: the previous
/// owner is kept.
fn publish_routing(shared: &Shared, view: &View, holders: &[Option<Option<String>>]) {
    let mut routing = shared.routing.write();
    let previous = std::mem::take(&mut routing.owners);
    routing.owners = holders
        .iter()
        .enumerate()
        .map(|(p, holder)| {
            let Some(holder) = holder else {
                return previous.get(p).cloned().flatten();
            };
            let (id, epoch) = holder.as_deref()?.split_once(' ')?;
            let epoch = epoch.parse().ok()?;
            // A holder that just left the member list keeps its last address.
            let addr = view.addr_of(id).map(str::to_string).or_else(|| {
                previous
                    .get(p)?
                    .as_ref()
                    .filter(|o| o.id == id)
                    .map(|o| o.addr.clone())
            })?;
            Some(Owner {
                id: id.to_string(),
                addr,
                epoch,
            })
        })
        .collect();
    for (p, owner) in routing.owners.clone().iter().enumerate() {
        if let Some(owner) = owner {
            routing.epochs[p] = owner.epoch;
        }
    }
    routing.members = view.members.clone();
}

/// Clean exit: give every lease back and leave the member list.
pub(super) fn leave(shared: &Shared) {
    let own = &shared.ownership;
    let layout = own.layout();
    let Ok(mut router) = super::connect(shared, Duration::from_secs(2)) else {
        tracing::warn!("cluster: Redis unreachable at shutdown; the leases run out by themselves");
        return;
    };
    let release = Script::new(scripts::RELEASE);
    let mut released = 0;
    for p in own.partitions().iter() {
        let e = own.held_epoch(p);
        if e == 0 {
            continue;
        }
        own.forget(p);
        if let Ok(1) = router.with(layout.slot(p), |con| {
            release
                .key(layout.lease(p))
                .arg(format!("{} {e}", shared.me.id))
                .invoke::<i64>(con)
        }) {
            released += 1;
        }
    }
    let _ = router.with(layout.cluster_slot(), |con| {
        membership::leave(con, layout, &shared.me)
    });
    tracing::info!(released, "cluster: left; leases released");
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

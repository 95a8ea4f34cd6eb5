//! The Redis Cluster router (`timewheel::cluster::router::Router`) against
//! a real Redis Cluster of 3 masters and 3 replicas started by each test
//! (`tests/util/redis_cluster.rs`): pipelines sent to the masters at the
//! same time (one master `SIGSTOP`ped), `-ASK` during a slot migration set
//! by hand, several seeds, and `WAIT`.
//!
//! Run with `cargo test --test router` (needs `redis-server` and
//! `redis-cli` on PATH).

mod util;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{Cmd, IntoConnectionInfo, Value};
use timewheel::cluster::router::{Router, Seeds};
use timewheel::cluster::slot::key_slot;
use util::redis_cluster::RedisCluster;
use util::{Resp, RespConn, free_port};

/// The router's I/O timeout in these tests.
const IO_TIMEOUT: Duration = Duration::from_millis(1500);

fn connect(cluster: &RedisCluster) -> Router {
    Router::connect(
        cluster.url().into_connection_info().unwrap(),
        IO_TIMEOUT,
        &[],
    )
    .expect("the router connects")
}

/// One key (`{tag}name`) per master: master port -> (key, slot).
fn key_per_master(cluster: &RedisCluster, name: &str) -> HashMap<u16, (String, u16)> {
    let mut keys = HashMap::new();
    for tag in 0.. {
        let key = format!("{{t{tag}}}{name}");
        let slot = key_slot(key.as_bytes());
        keys.entry(cluster.master_of(slot)).or_insert((key, slot));
        if keys.len() == util::redis_cluster::MASTERS {
            return keys;
        }
    }
    unreachable!()
}

fn set(key: &str, value: &str) -> Cmd {
    redis::cmd("SET").arg(key).arg(value).to_owned()
}

fn get_at(cluster: &RedisCluster, port: u16, key: &str) -> Resp {
    cluster.cmd_at(port, &["GET", key])
}

#[test]
fn the_first_seed_that_answers_is_used() {
    let cluster = RedisCluster::start();
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let seeds = Seeds::parse(&format!("{dead},{}", cluster.url())).unwrap();
    assert_eq!(seeds.0.len(), 2);
    let mut router = Router::connect(seeds, IO_TIMEOUT, &[]).expect("the second seed answers");
    assert!(router.is_cluster());
    assert_eq!(router.masters().len(), util::redis_cluster::MASTERS);
    let keys = key_per_master(&cluster, "seed");
    let commands: Vec<(u16, Cmd)> = keys
        .values()
        .map(|(key, slot)| (*slot, set(key, "v")))
        .collect();
    let sent: Vec<(u16, &Cmd)> = commands.iter().map(|(s, c)| (*s, c)).collect();
    for reply in router.query(&sent) {
        assert_eq!(reply.unwrap(), Value::Okay);
    }
    for (port, (key, _)) in &keys {
        assert_eq!(get_at(&cluster, *port, key), Resp::bulk("v"));
    }
    let nobody = Seeds::parse(&format!("{dead},redis://127.0.0.1:{}", free_port())).unwrap();
    let error = Router::connect(nobody, IO_TIMEOUT, &[]).expect_err("no seed answers");
    assert!(
        error.is_io_error() || error.is_connection_refusal(),
        "{error}"
    );
}

#[test]
fn ask_is_followed_for_the_command_only_and_tryagain_is_answered() {
    let cluster = RedisCluster::start();
    let mut router = connect(&cluster);
    let (present, absent) = ("{mig}present", "{mig}absent");
    let slot = key_slot(present.as_bytes());
    let source = cluster.master_of(slot);
    let target = *cluster
        .masters()
        .keys()
        .find(|&&p| p != source)
        .expect("another master");
    assert_eq!(cluster.cmd_at(source, &["SET", present, "old"]), Resp::ok());
    let (source_id, target_id) = (cluster.node_id(source), cluster.node_id(target));
    let slot_s = slot.to_string();
    assert_eq!(
        cluster.cmd_at(
            target,
            &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &source_id]
        ),
        Resp::ok()
    );
    assert_eq!(
        cluster.cmd_at(
            source,
            &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &target_id]
        ),
        Resp::ok()
    );
    let masters_before = router.masters();
    let refreshes_before = router.stats().refreshes;

    let write_present = set(present, "new");
    let write_absent = set(absent, "moved-in");
    let read_present = redis::cmd("GET").arg(present).to_owned();
    let replies = router.query(&[
        (slot, &write_present),
        (slot, &write_absent),
        (slot, &read_present),
    ]);
    let replies: Vec<Value> = replies.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(
        replies,
        [Value::Okay, Value::Okay, Value::BulkString(b"new".to_vec())]
    );
    // The key the source had stayed there; the other went to the target,
    // which serves it only after ASKING.
    assert_eq!(get_at(&cluster, source, present), Resp::bulk("new"));
    let at_source = get_at(&cluster, source, absent);
    assert!(
        matches!(&at_source, Resp::Error(e) if e.starts_with("ASK ")),
        "{at_source:?}"
    );
    let mut at_target = RespConn::connect(target);
    assert_eq!(at_target.cmd(&["ASKING"]), Resp::ok());
    assert_eq!(at_target.cmd(&["GET", absent]), Resp::bulk("moved-in"));
    let stats = router.stats();
    assert_eq!(stats.asks, 1, "{stats:?}");
    assert_eq!(stats.redirects, 1, "{stats:?}");
    assert_eq!(
        stats.refreshes, refreshes_before,
        "an ASK does not read the map"
    );
    assert_eq!(router.masters(), masters_before);
    let source_index = router
        .masters()
        .iter()
        .position(|m| m.ends_with(&format!(":{source}")))
        .unwrap();
    assert_eq!(router.master_stats()[source_index].redirects, 1);

    // A script over a key on each side: the target answers -TRYAGAIN
    // (after the source asked), or the source does; either way the
    // error is the answer.
    let script = redis::cmd("EVAL")
        .arg("return redis.call('MGET', KEYS[1], KEYS[2])")
        .arg(2)
        .arg(present)
        .arg(absent)
        .to_owned();
    let reply = router.query(&[(slot, &script)]).remove(0);
    let error = reply.expect_err("keys split by the migration");
    assert_eq!(error.code(), Some("TRYAGAIN"), "{error}");
}

#[test]
fn wait_counts_the_replicas_that_acknowledged() {
    let mut cluster = RedisCluster::start();
    let mut router = connect(&cluster);
    let keys = key_per_master(&cluster, "wait");
    let commands: Vec<(u16, u16, Cmd)> = keys
        .iter()
        .map(|(&port, (key, slot))| (port, *slot, set(key, "v")))
        .collect();
    let sent: Vec<(u16, &Cmd)> = commands.iter().map(|(_, s, c)| (*s, c)).collect();
    let answers = router.query_waiting(&sent, Some((1, Duration::from_secs(5))));
    let masters = router.masters();
    for ((port, _, _), answer) in commands.iter().zip(&answers) {
        assert_eq!(answer.reply.as_ref().unwrap(), &Value::Okay);
        assert_eq!(answer.replicas, Some(1), "{port}: {answer:?}");
        let master = answer.master.expect("answered by a master");
        assert_eq!(masters[master], format!("127.0.0.1:{port}"));
    }
    let plain = router.query_waiting(&sent, None);
    assert!(
        plain
            .iter()
            .all(|a| a.replicas.is_none() && a.reply.is_ok())
    );

    let version = cluster.cmd_at(cluster.live_ports()[0], &["INFO", "server"]);
    let version = version.as_str().unwrap();
    let has_waitaof = [
        "redis_version:7.0.",
        "redis_version:7.1.",
        "redis_version:6.",
    ]
    .iter()
    .all(|old| !version.contains(old));
    assert_eq!(router.waitaof_supported(), has_waitaof, "{version}");

    // Its replica dies: that master's pipeline is acknowledged by nobody
    // within the timeout; the others still by one.
    let (&lonely, (_, lonely_slot)) = keys.iter().next().unwrap();
    cluster.kill9(cluster.replica_of(lonely));
    let started = Instant::now();
    let answers = router.query_waiting(&sent, Some((1, Duration::from_millis(500))));
    let took = started.elapsed();
    for ((port, _, _), answer) in commands.iter().zip(&answers) {
        assert_eq!(answer.reply.as_ref().unwrap(), &Value::Okay);
        let want = if *port == lonely { 0 } else { 1 };
        assert_eq!(answer.replicas, Some(want), "{port}: {answer:?}");
    }
    assert!(
        took >= Duration::from_millis(450),
        "WAIT returned early: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        router.wait_replicas(*lonely_slot, 1, Duration::from_millis(200)),
        Ok(0)
    );
    let (_, (_, other_slot)) = keys.iter().find(|(p, _)| **p != lonely).unwrap();
    assert_eq!(
        router.wait_replicas(*other_slot, 1, Duration::from_secs(5)),
        Ok(1)
    );
}

#[test]
fn a_stopped_master_does_not_hold_up_the_others() {
    let cluster = RedisCluster::start();
    let mut router = connect(&cluster);
    let keys = key_per_master(&cluster, "stop");
    let commands: Vec<(u16, u16, Cmd)> = keys
        .iter()
        .map(|(&port, (key, slot))| (port, *slot, set(key, "v")))
        .collect();
    let sent: Vec<(u16, &Cmd)> = commands.iter().map(|(_, s, c)| (*s, c)).collect();
    assert!(router.query(&sent).iter().all(Result::is_ok));
    let stopped = commands[0].0;
    let index = router
        .masters()
        .iter()
        .position(|m| *m == format!("127.0.0.1:{stopped}"))
        .unwrap();

    cluster.signal(stopped, "STOP");
    let started = Instant::now();
    let replies = router.query(&sent);
    let first_took = started.elapsed();
    // At once: the master just failed, so it is backing off.
    let started = Instant::now();
    let again = router.query(&sent);
    let again_took = started.elapsed();
    let stats = router.master_stats();
    cluster.signal(stopped, "CONT");

    for ((port, _, _), reply) in commands.iter().zip(&replies) {
        if *port == stopped {
            let error = reply.as_ref().expect_err("the stopped master times out");
            assert!(error.is_timeout() || error.is_io_error(), "{error}");
        } else {
            assert_eq!(reply.as_ref().unwrap(), &Value::Okay, "{port}");
        }
    }
    assert!(
        first_took >= IO_TIMEOUT - Duration::from_millis(100),
        "{first_took:?}"
    );
    for ((port, _, _), reply) in commands.iter().zip(&again) {
        if *port == stopped {
            let error = reply.as_ref().expect_err("backing off");
            assert!(error.is_io_error(), "{error}");
            assert!(error.to_string().contains("unreachable"), "{error}");
        } else {
            assert_eq!(reply.as_ref().unwrap(), &Value::Okay, "{port}");
        }
    }
    assert!(
        again_took < IO_TIMEOUT - Duration::from_millis(500),
        "the stopped master was waited for again: {again_took:?}"
    );
    assert!(!stats[index].up, "{stats:?}");
    assert!(stats[index].errors >= 2, "{stats:?}");
    assert!(stats[index].last_error_unix_ms > 0, "{stats:?}");
    for (i, master) in stats.iter().enumerate().filter(|(i, _)| *i != index) {
        assert!(master.up && master.batches >= 3, "{i}: {stats:?}");
    }

    // Resumed (or failed over, if the pause outlasted the node timeout):
    // every command is answered again.
    util::wait_until_every(
        "every master answers again",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || router.query(&sent).iter().all(Result::is_ok),
    );
    assert!(router.master_stats().iter().all(|m| m.up));
}

//! `--journal-replicas`: on a Redis Cluster of 3 masters and 3 replicas
//! (`tests/util/redis_cluster.rs`), a client write is acknowledged only
//! once a replica of its partition's master has it; with that replica
//! stopped (`SIGSTOP`), writes to the master's partitions are undone and
//! refused, in Redis and in memory, while the other masters' partitions go
//! on; once the replica runs again (`SIGCONT`), they are served again.
//!
//! Run with `cargo test --test replicas` (about 30 s; needs `redis-server`
//! and `redis-cli` on PATH).

mod util;

use std::time::{Duration, Instant};

use util::redis_cluster::RedisCluster;
use util::timewheel_cluster::{STREAM, info_field, layout, partition_of, wait_stable};
use util::{Resp, RespConn, TimewheelServer};

/// An id whose partition's slot is (`on = true`) or is not on `master`.
fn id_on(cluster: &RedisCluster, master: u16, on: bool, tag: &str) -> String {
    let layout = layout();
    (0..)
        .map(|i| format!("{tag}:{i}"))
        .find(|id| (cluster.master_of(layout.slot(partition_of(id))) == master) == on)
        .unwrap()
}

fn score(cluster: &RedisCluster, id: &str) -> Option<String> {
    let layout = layout();
    let p = partition_of(id);
    let master = cluster.master_of(layout.slot(p));
    cluster
        .cmd_at(master, &["ZSCORE", &layout.due(p), id])
        .as_str()
        .map(str::to_string)
}

#[test]
fn writes_a_replica_did_not_confirm_are_undone_and_the_other_masters_go_on() {
    let cluster = RedisCluster::start();
    let node = TimewheelServer::start(&[
        "--cluster",
        "--redis",
        &cluster.url(),
        "--lease-ms",
        "1000",
        "--stream",
        STREAM,
        "--journal-replicas",
        "1",
        "--journal-replicas-timeout-ms",
        "300",
    ]);
    wait_stable(&[node.port()], Duration::from_secs(30));
    let mut con = RespConn::connect(node.port());
    assert_eq!(info_field(node.port(), "journal_replicas"), Some(1));

    let layout = layout();
    let victim = cluster.master_of(layout.slot(0));
    let on = id_on(&cluster, victim, true, "on");
    let off = id_on(&cluster, victim, false, "off");
    let kept = id_on(&cluster, victim, true, "kept");
    // With the replica up, writes are acknowledged.
    for id in [&on, &kept] {
        assert!(
            matches!(con.cmd(&["ADD", id, "600000"]), Resp::Integer(_)),
            "{id}"
        );
    }
    let kept_score = score(&cluster, &kept).expect("kept is journaled");

    // The replica of that master stops: its writes cannot be confirmed.
    let replica = cluster.replica_of(victim);
    cluster.signal(replica, "STOP");
    let stopped = Instant::now();

    // A new order and a cancel on the victim's partitions: refused.
    let fresh = id_on(&cluster, victim, true, "fresh");
    let reply = con.cmd(&["ADD", &fresh, "600000"]);
    assert!(
        matches!(&reply, Resp::Error(e) if e.starts_with("JOURNAL not replicated") || e.starts_with("TRYAGAIN")),
        "{reply:?}"
    );
    let reply = con.cmd(&["CANCEL", &kept]);
    assert!(
        matches!(&reply, Resp::Error(e) if e.starts_with("JOURNAL not replicated") || e.starts_with("TRYAGAIN")),
        "{reply:?}"
    );
    // Nothing changed in Redis: the ADD is not there, the cancelled order is.
    util::wait_until("the undo is in Redis", Duration::from_secs(10), || {
        score(&cluster, &fresh).is_none()
    });
    assert_eq!(score(&cluster, &kept).as_deref(), Some(kept_score.as_str()));
    // Another master's partitions go on meanwhile.
    let reply = con.cmd(&["ADD", &off, "600000"]);
    assert!(matches!(reply, Resp::Integer(_)), "{reply:?}");
    assert!(score(&cluster, &off).is_some());
    assert!(info_field(node.port(), "journal_not_replicated_total").unwrap() >= 1);

    // Nothing changed in memory either, once the partition is loaded again
    // (it is not served while its master lacks a replica).
    cluster.signal(replica, "CONT");
    let resumed = loop {
        let reply = con.cmd(&["PTTL", &kept]);
        if let Resp::Integer(ms) = reply {
            break ms;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "not served again: {reply:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(resumed > 500_000, "the cancel was undone: PTTL {resumed}");
    assert_eq!(con.cmd(&["PTTL", &fresh]), Resp::Integer(-2), "{fresh}");
    // And writes are acknowledged again.
    let again = loop {
        match con.cmd(&["ADD", &fresh, "600000"]) {
            Resp::Integer(d) => break d,
            Resp::Error(e) if e.starts_with("TRYAGAIN") || e.starts_with("JOURNAL") => {
                assert!(stopped.elapsed() < Duration::from_secs(30), "{e}");
                std::thread::sleep(Duration::from_millis(100));
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(again > 0);
    assert!(score(&cluster, &fresh).is_some());
    assert!(score(&cluster, &on).is_some(), "an acknowledged ADD stays");
    eprintln!(
        "served again {:?} after the replica stopped",
        stopped.elapsed()
    );
    drop(node);
}

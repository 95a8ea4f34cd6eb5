//! Cluster mode on a Redis Cluster: 3 masters and 3 replicas started by the
//! test (`tests/util/redis_cluster.rs`), and real `timewheel serve
//! --cluster` processes on free ports: each partition's journal on the
//! master of its slot, and a Redis master's `kill -9` under load.
//!
//! Run with `cargo test --test rcluster` (about 30 s; needs
//! `redis-server` and `redis-cli` on PATH). `RCLUSTER_LOGS=1` prints the
//! nodes' logs of the failover test.

mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::Partitions;
use util::redis_cluster::RedisCluster;
use util::timewheel_cluster::{
    Ledger, Outcome, PARTITIONS, Router, array, info_field, load_client, wait_stable,
};
use util::{Resp, TimewheelServer, run_timewheel, unix_ms, wait_until};

const LEASE_MS: u64 = 1000;
const STREAM: &str = "orders";

fn layout() -> Layout {
    Layout::new("tw:", Some(STREAM))
}

fn partition_of(id: &str) -> u16 {
    Partitions::new(PARTITIONS as u32)
        .unwrap()
        .of_key(id.as_bytes())
}

fn start_node(cluster: &RedisCluster) -> TimewheelServer {
    let url = cluster.url();
    let lease = LEASE_MS.to_string();
    TimewheelServer::start(&[
        "--cluster",
        "--redis",
        &url,
        "--lease-ms",
        &lease,
        "--stream",
        STREAM,
    ])
}

/// `ZCARD` of every partition's due set, each asked of its master.
fn total_due(cluster: &RedisCluster) -> i64 {
    let layout = layout();
    (0..PARTITIONS)
        .map(|p| {
            let master = cluster.master_of(layout.slot(p));
            cluster
                .cmd_at(master, &["ZCARD", &layout.due(p)])
                .as_int()
                .unwrap_or_else(|| panic!("ZCARD of partition {p} on {master}"))
        })
        .sum()
}

/// Every entry of every partition stream, each read from its master:
/// (id, deadline_ms, fired_ms).
fn stream_entries(cluster: &RedisCluster) -> Vec<(String, u64, u64)> {
    let layout = layout();
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        let master = cluster.master_of(layout.slot(p));
        let reply = cluster.cmd_at(master, &["XRANGE", &layout.stream(p).unwrap(), "-", "+"]);
        for entry in array(&reply) {
            let fields = array(&array(entry)[1]);
            let mut map = HashMap::new();
            for pair in fields.chunks(2) {
                map.insert(
                    pair[0].as_str().unwrap().to_string(),
                    pair[1].as_str().unwrap().to_string(),
                );
            }
            out.push((
                map["id"].clone(),
                map["deadline_ms"].parse().unwrap(),
                map["fired_ms"].parse().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn partitions_are_journaled_on_the_master_of_their_slot() {
    let cluster = RedisCluster::start();
    let nodes: Vec<TimewheelServer> = (0..3).map(|_| start_node(&cluster)).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port()).collect();
    wait_stable(&ports, Duration::from_secs(30));
    for node in &nodes {
        assert!(
            node.log().contains("the Redis is a Redis Cluster"),
            "{}",
            node.log()
        );
    }

    // The redis crate's cluster client, against the timewheel nodes.
    let client =
        redis::cluster::ClusterClient::new(vec![format!("redis://127.0.0.1:{}", ports[0])])
            .unwrap();
    let mut con = client.get_connection().unwrap();
    let n: usize = 3000;
    let now = unix_ms();
    for i in 0..n {
        let id = format!("rc:{i}");
        let deadline: u64 = redis::cmd("ADD")
            .arg(&id)
            .arg(600_000)
            .query(&mut con)
            .unwrap();
        assert!(deadline + 1000 >= now + 600_000, "{id}: {deadline}");
    }
    for i in (0..n).step_by(3) {
        let cancelled: i64 = redis::cmd("CANCEL")
            .arg(format!("rc:{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(cancelled, 1, "rc:{i}");
    }

    // Each id is in its partition's due set, on the master of that
    // partition's slot, and nowhere else.
    let layout = layout();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for i in 0..n {
        let id = format!("rc:{i}");
        let p = partition_of(&id);
        let owner = cluster.master_of(layout.slot(p));
        let score = cluster.cmd_at(owner, &["ZSCORE", &layout.due(p), &id]);
        assert_eq!(
            score.as_str().is_some(),
            i % 3 != 0,
            "{id} on {owner}: {score:?}"
        );
        if i % 3 != 0 {
            *per_master.entry(owner).or_default() += 1;
        }
        for &other in masters.keys().filter(|&&m| m != owner) {
            let reply = cluster.cmd_at(other, &["ZSCORE", &layout.due(p), &id]);
            assert!(
                matches!(&reply, Resp::Error(e) if e.starts_with("MOVED")),
                "{id}: master {other} does not hold slot {} yet answered {reply:?}",
                layout.slot(p)
            );
        }
    }
    assert_eq!(per_master.len(), 3, "every master got some: {per_master:?}");
    assert_eq!(total_due(&cluster), (n - n.div_ceil(3)) as i64);
    // The writers send to the three masters.
    for &port in &ports {
        assert_eq!(
            info_field(port, "journal_redis_masters"),
            Some(3),
            "node {port}"
        );
    }

    // A single node (no --cluster) refuses a Redis Cluster, in one line.
    let url = cluster.url();
    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--redis",
            &url,
            "--stream",
            STREAM,
            "--bind",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("is a Redis Cluster") && stderr.contains("--cluster"),
        "{stderr}"
    );
}

#[test]
fn a_redis_master_killed_under_load_loses_nothing_and_service_resumes() {
    let mut cluster = RedisCluster::start();
    let nodes: Vec<TimewheelServer> = (0..3).map(|_| start_node(&cluster)).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port()).collect();
    wait_stable(&ports, Duration::from_secs(30));
    let seeds = Arc::new(Mutex::new(ports.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|n| {
            let (seeds, stop) = (seeds.clone(), stop.clone());
            thread::spawn(move || load_client(n, seeds, stop))
        })
        .collect();
    thread::sleep(Duration::from_secs(2));

    // The master holding the cluster keys (membership) and a third of the
    // partitions: the hardest one to lose.
    let layout = layout();
    let victim = cluster.master_of(layout.cluster_slot());
    let victim_partitions: Vec<u16> = (0..PARTITIONS)
        .filter(|&p| cluster.master_of(layout.slot(p)) == victim)
        .collect();
    assert!(!victim_partitions.is_empty());
    let takeovers = || -> u64 {
        ports
            .iter()
            .map(|&p| info_field(p, "cluster_takeovers_total").unwrap())
            .sum()
    };
    let takeovers_before = takeovers();
    cluster.kill9(victim);
    let killed = Instant::now();
    cluster.wait_recovered();
    let promoted = killed.elapsed();

    // Service resumes by itself: an ADD into a partition the dead master
    // held is acknowledged, through any node.
    let mut probe = Router::new(seeds.clone());
    let probe_id = (0..)
        .map(|i| format!("probe:{i}"))
        .find(|id| victim_partitions.contains(&partition_of(id)))
        .unwrap();
    let resumed = loop {
        if let Outcome::Done(_) = probe.call(&["ADD", &probe_id, "600000"]) {
            break killed.elapsed();
        }
    };
    assert_eq!(probe.call(&["CANCEL", &probe_id]), Outcome::Done(1));
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let ledger = Ledger::merged(clients.into_iter().map(|c| c.join().unwrap()));
    wait_until("every due set is empty", Duration::from_secs(30), || {
        total_due(&cluster) == 0
    });

    let entries = stream_entries(&cluster);
    let expected = ledger.check_streams(
        entries
            .iter()
            .map(|(id, deadline, fired)| (id.as_str(), *deadline, *fired)),
    );
    eprintln!(
        "redis master kill -9: replica promoted after {promoted:?}, writes to its partitions \
         acknowledged again after {resumed:?}; acked adds {}, cancelled {}, unknown adds {}, \
         unknown cancels {}, fired {} (expected at least {expected})",
        ledger.added.len(),
        ledger.cancelled.len(),
        ledger.maybe_added.len(),
        ledger.maybe_cancelled.len(),
        entries.len(),
    );
    assert!(
        ledger.added.len() > 500,
        "too little load: {}",
        ledger.added.len()
    );
    let retaken = takeovers() - takeovers_before;
    if std::env::var_os("RCLUSTER_LOGS").is_some() {
        for node in &nodes {
            for line in node.log().lines().filter(|l| !l.contains("took partition")) {
                eprintln!("{}: {line}", node.port());
            }
        }
    }
    eprintln!(
        "partitions on the dead master: {}; partitions taken again: {retaken}",
        victim_partitions.len()
    );
    // Only the dead master's partitions moved: the others kept their
    // leases on their own masters throughout.
    assert_eq!(retaken, victim_partitions.len() as u64);
    // The writers saw the failover: errors, then a new slot map.
    let sum = |key: &str| -> u64 { ports.iter().map(|&p| info_field(p, key).unwrap()).sum() };
    assert!(sum("journal_errors_total") >= 1);
    assert!(sum("journal_slot_map_changes_total") >= 1);
    assert!(ports.iter().any(|&p| {
        info_field(p, "journal_last_slot_map_change_unix_ms").unwrap() >= unix_ms() - 60_000
    }));
    drop(nodes);
}

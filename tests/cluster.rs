//! Cluster mode against a real `redis-server` (AOF, `appendfsync always`)
//! and real `timewheel serve --cluster` processes on free ports: slots as
//! Redis computes them, routing through cluster clients, fencing, failover
//! under `kill -9`, a `SIGSTOP` zombie, a fourth node joining, start-up
//! errors. The `kill -9`, zombie and join scenarios live in
//! `tests/util/timewheel_cluster.rs`; `tests/rcluster.rs` runs them on a
//! Redis Cluster too.
//!
//! Run with `cargo test --test cluster` (about two minutes; needs
//! `redis-server` on PATH; the redis-py part is skipped without
//! `python3 -c 'import redis'`).

mod util;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::{Partitions, key_slot};
use timewheel::cluster::{Held, Ownership};
use timewheel::{Engine, Journal, JournalConfig, ScheduleError};
use util::timewheel_cluster::{
    LEASE_MS, PARTITIONS, STREAM, array, cluster_slots, fourth_node_takes_a_quarter, info_field,
    kill9_loop, layout, partition_of, paused_node_cannot_write_after_its_lease, slot_map,
    start_node, total_due, wait_stable,
};
use util::{RedisServer, Resp, RespConn, TimewheelServer, unix_ms, wait_until};

fn due_key(id: &str) -> String {
    layout().due(partition_of(id))
}

#[test]
fn slots_are_the_ones_redis_cluster_computes() {
    // A cluster-enabled redis-server answers CLUSTER KEYSLOT without any
    // slot assigned; its bus port is port + 10000, so stay below 55535.
    let dir = tempfile::tempdir().unwrap();
    let port = loop {
        let p = util::free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            break p;
        }
    };
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--save",
            "",
            "--dir",
            dir.path().to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut redis = None;
    wait_until(
        "cluster-enabled redis answers",
        Duration::from_secs(10),
        || {
            redis = RespConn::try_connect(port).ok();
            redis.is_some()
        },
    );
    let mut redis = redis.unwrap();
    let redis_ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    assert!(redis_ok);
    let journal = RedisServer::start();
    let node = start_node(&journal, &[]);
    let mut tw = node.conn();
    let mut rng = fastrand::Rng::with_seed(14);
    let mut keys: Vec<String> = vec![
        "foo".into(),
        "{user1000}.following".into(),
        "{}x".into(),
        "a{b}c{d}".into(),
        "{{a}}".into(),
        "o:1".into(),
    ];
    for _ in 0..1000 {
        let len = rng.usize(1..24);
        keys.push(
            (0..len)
                .map(|_| *rng.choice(b"abcxyz:{}-_0123456789".iter()).unwrap() as char)
                .collect(),
        );
    }
    for key in &keys {
        let want = redis.cmd(&["CLUSTER", "KEYSLOT", key]).as_int().unwrap();
        assert_eq!(key_slot(key.as_bytes()) as i64, want, "{key}");
        assert_eq!(
            tw.cmd(&["CLUSTER", "KEYSLOT", key]).as_int(),
            Some(want),
            "{key}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The fenced script's moves into the stream, straight on Redis: each id
/// whose score is still the deadline that fired moves once, even when a
/// run names it twice; the others stay (re-added) or are gone already.
#[test]
fn the_fenced_script_moves_each_fired_order_once() {
    let redis = RedisServer::start();
    let layout = Layout::new("tw:", Some("orders"));
    let p = 3;
    let (due, stream) = (layout.due(p), layout.stream(p).unwrap());
    assert_eq!(redis.cmd(&["SET", &layout.epoch(p), "7"]), Resp::ok());
    assert_eq!(
        redis.cmd(&["ZADD", &due, "10", "a", "20", "b", "30", "c"]),
        Resp::Integer(3)
    );
    let script = timewheel::cluster::scripts::APPLY;
    let (epoch, dead) = (layout.epoch(p), layout.dead(p));
    #[rustfmt::skip]
    let call = [
        "EVAL", script, "4", &epoch, &due, &dead, &stream, "7", "-",
        "S", "a", "10", "100",
        "S", "a", "10", "100", // twice in one run: moved once
        "S", "b", "99", "100", // b was re-added since (score 20): stays
        "S", "x", "5", "100",  // moved before (not in due): nothing
        "C", "c",
        "S", "c", "30", "100", // cancelled just before: nothing
    ];
    let reply = redis.cmd(&call);
    assert_eq!(
        reply,
        Resp::Array(Some(vec![Resp::Integer(1), Resp::Integer(6)])),
        "{reply:?}"
    );
    assert_eq!(redis.cmd(&["XLEN", &stream]), Resp::Integer(1));
    assert_eq!(
        redis.cmd(&["ZRANGE", &due, "0", "-1"]),
        Resp::Array(Some(vec![Resp::bulk("b")]))
    );
    // Under another epoch nothing changes.
    let mut stale = call;
    stale[7] = "6";
    assert_eq!(
        redis.cmd(&stale),
        Resp::Array(Some(vec![Resp::Integer(0), Resp::bulk("7")]))
    );
    assert_eq!(redis.cmd(&["XLEN", &stream]), Resp::Integer(1));
}

#[test]
fn journal_writes_are_fenced_when_the_epoch_moves() {
    let redis = RedisServer::start();
    let layout = Layout::new("tw:", None);
    let partitions = Partitions::new(PARTITIONS as u32).unwrap();
    let ownership = Arc::new(Ownership::new(partitions, layout.clone()));
    let p = partitions.of_key(b"f:1");
    let other = (0..10_000)
        .map(|i| format!("f:{i}"))
        .find(|id| partitions.of_key(id.as_bytes()) != p)
        .unwrap();
    // Taken under epoch 5, as the TAKE script would leave it.
    assert_eq!(redis.cmd(&["SET", &layout.epoch(p), "5"]), Resp::ok());
    ownership.assume(p, 5, Duration::from_secs(60));
    let journal =
        Journal::connect_cluster(JournalConfig::new(redis.url()), ownership.clone()).unwrap();
    let engine = Engine::builder()
        .tick(Duration::from_millis(10))
        .journal(journal)
        .build(|_: &timewheel::Fired| Ok(()))
        .unwrap();
    let deadline = engine.now_ms() + 60_000;
    assert_eq!(
        engine.schedule_at("f:1", deadline).unwrap().wait(),
        Ok(deadline)
    );
    assert_eq!(
        redis.cmd(&["ZSCORE", &layout.due(p), "f:1"]).as_str(),
        Some(deadline.to_string().as_str())
    );
    // A partition not held here refuses before anything changes.
    assert_eq!(
        engine.schedule_at(&other, deadline).err(),
        Some(ScheduleError::JournalUnavailable)
    );
    assert_eq!(engine.deadline(&other), None);

    // Another node takes the partition: epoch 6. This node does not know.
    assert_eq!(redis.cmd(&["INCR", &layout.epoch(p)]).as_int(), Some(6));
    assert_eq!(ownership.state(p), Held::Serving(5));
    let same_partition = (0..10_000)
        .map(|i| format!("g:{i}"))
        .find(|id| partitions.of_key(id.as_bytes()) == p)
        .unwrap();
    assert_eq!(
        engine
            .schedule_at(&same_partition, deadline)
            .unwrap()
            .wait(),
        Err(ScheduleError::JournalUnavailable),
        "Redis must refuse the write"
    );
    assert_eq!(
        redis.cmd(&["ZSCORE", &layout.due(p), &same_partition]),
        Resp::nil(),
        "a fenced write reached Redis"
    );
    assert_eq!(
        engine.cancel("f:1").err(),
        Some(ScheduleError::JournalUnavailable),
        "fenced: the partition no longer takes client writes"
    );
    assert!(
        redis
            .cmd(&["ZSCORE", &layout.due(p), "f:1"])
            .as_str()
            .is_some(),
        "a fenced cancel reached Redis"
    );
    assert_eq!(
        ownership.state(p),
        Held::Closing,
        "fenced: no more client writes"
    );
    assert_eq!(engine.journal_stats().unwrap().fenced_total, 1);
    engine.shutdown();
}

#[test]
fn cluster_clients_route_by_themselves() {
    let redis = RedisServer::start();
    let nodes: Vec<TimewheelServer> = (0..3).map(|_| start_node(&redis, &[])).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port()).collect();
    let map = wait_stable(&ports, Duration::from_secs(20));

    // The redis crate's cluster client: ADD, ADDAT, PTTL, CANCEL.
    let client =
        redis::cluster::ClusterClient::new(vec![format!("redis://127.0.0.1:{}", ports[0])])
            .unwrap();
    let mut con = client.get_connection().unwrap();
    let n = 10_000;
    let now = unix_ms();
    for i in 0..n {
        let id = format!("r:{i}");
        let deadline: u64 = if i % 2 == 0 {
            redis::cmd("ADD")
                .arg(&id)
                .arg(600_000)
                .query(&mut con)
                .unwrap()
        } else {
            redis::cmd("ADDAT")
                .arg(&id)
                .arg(now + 600_000)
                .query(&mut con)
                .unwrap()
        };
        // The server's clock may lag the test's by a tick.
        assert!(deadline + 1000 >= now + 600_000, "{id}: {deadline}");
    }
    for i in 0..n {
        let id = format!("r:{i}");
        let left: i64 = redis::cmd("PTTL").arg(&id).query(&mut con).unwrap();
        assert!(left > 500_000, "{id}: {left}");
        if i % 4 == 0 {
            let cancelled: i64 = redis::cmd("CANCEL").arg(&id).query(&mut con).unwrap();
            assert_eq!(cancelled, 1, "{id}");
        }
    }
    let kept = n - n / 4;
    // Each id landed on the node owning its slot, in its partition's key.
    let mut per_port: HashMap<u16, i64> = HashMap::new();
    for i in 0..n {
        let id = format!("r:{i}");
        let in_redis = redis
            .cmd(&["ZSCORE", &due_key(&id), &id])
            .as_str()
            .is_some();
        assert_eq!(in_redis, i % 4 != 0, "{id}");
        if i % 4 != 0 {
            *per_port
                .entry(map[key_slot(id.as_bytes()) as usize])
                .or_default() += 1;
        }
    }
    let mut counted = 0;
    for node in &nodes {
        let count = node.conn().cmd(&["COUNT"]).as_int().unwrap();
        assert_eq!(
            count,
            per_port.get(&node.port()).copied().unwrap_or(0),
            "node {}",
            node.port()
        );
        counted += count;
    }
    assert_eq!(counted, kept as i64);
    assert_eq!(total_due(&redis), kept as i64);

    // A wrong node redirects, with the slot and the owner's address.
    let id = "r:1";
    let slot = key_slot(id.as_bytes());
    let owner = map[slot as usize];
    let wrong = *ports.iter().find(|&&p| p != owner).unwrap();
    let reply = RespConn::connect(wrong).cmd(&["PTTL", id]);
    assert_eq!(
        reply,
        Resp::Error(format!("MOVED {slot} 127.0.0.1:{owner}")),
        "from {wrong}"
    );
    let reply = RespConn::connect(wrong).cmd(&["ADD", id, "1000"]);
    assert_eq!(
        reply,
        Resp::Error(format!("MOVED {slot} 127.0.0.1:{owner}"))
    );
    // Redirected inside MULTI: the transaction is doomed, nothing runs.
    let mut tx = RespConn::connect(wrong);
    assert_eq!(tx.cmd(&["MULTI"]), Resp::ok());
    assert_eq!(
        tx.cmd(&["ADD", id, "1000", "REPLACE"]),
        Resp::Error(format!("MOVED {slot} 127.0.0.1:{owner}"))
    );
    assert!(matches!(tx.cmd(&["EXEC"]), Resp::Error(e) if e.starts_with("EXECABORT")));
    assert!(
        RespConn::connect(owner)
            .cmd(&["PTTL", id])
            .as_int()
            .unwrap()
            > 60_000,
        "the doomed transaction (a 1 s deadline) changed {id}"
    );
    // Keyless commands run anywhere; INFO says cluster mode.
    let mut conn = RespConn::connect(wrong);
    assert!(conn.cmd(&["COUNT"]).as_int().is_some());
    let info = conn.cmd(&["CLUSTER", "INFO"]);
    assert!(
        info.as_str().unwrap().contains("cluster_state:ok"),
        "{info:?}"
    );
    assert_eq!(info_field(wrong, "cluster_enabled"), Some(1));
    let myid = conn.cmd(&["CLUSTER", "MYID"]);
    let nodes_text = conn.cmd(&["CLUSTER", "NODES"]);
    let nodes_text = nodes_text.as_str().unwrap();
    assert_eq!(nodes_text.lines().count(), 3, "{nodes_text}");
    assert!(
        nodes_text
            .lines()
            .any(|l| l.starts_with(myid.as_str().unwrap()) && l.contains("myself,master")),
        "{nodes_text}"
    );
    let shards = conn.cmd(&["CLUSTER", "SHARDS"]);
    assert_eq!(array(&shards).len(), 3, "{shards:?}");

    // redis-py RedisCluster, through tests/python/cluster_check.py.
    if python_redis_available() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/cluster_check.py");
        let output = Command::new("python3")
            .args([script, "--port", &ports[1].to_string(), "--count", "2000"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.starts_with("ok"),
            "{script}: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        for i in 0..2000 {
            let id = format!("py:{i}");
            let in_redis = redis
                .cmd(&["ZSCORE", &due_key(&id), &id])
                .as_str()
                .is_some();
            assert_eq!(in_redis, i % 3 != 0, "{id}");
        }
    }
}

fn python_redis_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import redis.cluster"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED the redis-py part: python3 cannot import redis (pip install redis)");
    }
    ok
}

#[test]
fn kill9_loop_loses_nothing_and_fires_each_order_once() {
    kill9_loop(&RedisServer::start(), 20);
}

#[test]
fn a_paused_node_cannot_write_after_its_lease_and_redirects() {
    paused_node_cannot_write_after_its_lease(&RedisServer::start());
}

#[test]
fn a_fourth_node_takes_a_quarter_and_nothing_is_lost() {
    fourth_node_takes_a_quarter(&RedisServer::start());
}

#[test]
fn bad_cluster_settings_fail_at_start_with_one_line() {
    let redis = RedisServer::start();
    let url = redis.url();
    let node = start_node(&redis, &[]);
    let run = |args: &[&str]| {
        let mut all = vec![
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            "--redis",
            &url,
            "--stream",
            STREAM,
        ];
        all.extend_from_slice(args);
        let (status, stderr) = util::run_timewheel(&all, &[]);
        assert!(!status.success(), "{args:?} started");
        stderr
    };
    let err = run(&["--partitions", "64"]);
    assert!(
        err.contains("created with --partitions 128, not 64"),
        "{err}"
    );
    let err = run(&["--partitions", "100"]);
    assert!(err.contains("power of two"), "{err}");
    let err = run(&["--announce", "127.0.0.1"]);
    assert!(err.contains("--announce must be HOST:PORT"), "{err}");
    let twin = format!("127.0.0.1:{}", node.port());
    let err = run(&["--announce", &twin]);
    assert!(
        err.contains(&format!("another live node already announces {twin}")),
        "{err}"
    );
    assert_eq!(
        redis.cmd(&["ZADD", "tw:due", "1", "old:1"]).as_int(),
        Some(1)
    );
    let err = run(&[]);
    assert!(
        err.contains("tw:due holds 1 orders written by a single node"),
        "{err}"
    );
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert!(
        errors.len() == 1 && errors[0].contains("tw:due holds 1 orders"),
        "{err}"
    );
    let (status, err) = util::run_timewheel(&["serve", "--cluster"], &[]);
    assert!(!status.success() && err.contains("--redis"), "{err}");
}

/// Requests an endpoint received: (head, body).
type Recorded = Arc<Mutex<Vec<(String, String)>>>;

/// A keep-alive HTTP endpoint answering 200 to everything; records each
/// request's head and body.
fn http_recorder() -> (u16, Recorded) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let sink = sink.clone();
            thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    sink.lock()
                        .unwrap()
                        .push((head, String::from_utf8(body).unwrap()));
                    writer
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn webhook_calls_carry_the_partition_epoch() {
    let redis = RedisServer::start();
    let (port, seen) = http_recorder();
    let url = format!("http://127.0.0.1:{port}/close");
    let lease = LEASE_MS.to_string();
    let node = TimewheelServer::start(&[
        "--cluster",
        "--redis",
        &redis.url(),
        "--lease-ms",
        &lease,
        "--webhook",
        &url,
    ]);
    wait_stable(&[node.port()], Duration::from_secs(20));
    let mut conn = node.conn();
    assert!(conn.cmd(&["ADD", "w:1", "50"]).as_int().is_some());
    wait_until("the webhook is called", Duration::from_secs(10), || {
        !seen.lock().unwrap().is_empty()
    });
    let p = Partitions::new(PARTITIONS as u32).unwrap().of_key(b"w:1");
    let epoch = redis.cmd(&["GET", &Layout::new("tw:", None).epoch(p)]);
    let epoch = epoch.as_str().unwrap();
    let (head, body) = seen.lock().unwrap()[0].clone();
    assert!(body.starts_with("{\"id\":\"w:1\","), "{body}");
    assert!(body.ends_with(&format!(",\"epoch\":{epoch}}}")), "{body}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case(&format!("timewheel-epoch: {epoch}"))),
        "{head}"
    );
}

#[test]
fn a_node_cut_off_from_redis_stops_serving_and_resumes_after() {
    let mut redis = RedisServer::start();
    let node = start_node(&redis, &[]);
    wait_stable(&[node.port()], Duration::from_secs(20));
    let mut conn = node.conn();
    assert!(conn.cmd(&["ADD", "cut:1", "600000"]).as_int().is_some());
    redis.kill9();
    let cut = Instant::now();
    // Within a lease (plus a round) every partition stops being served.
    wait_until("the node stops serving", Duration::from_secs(5), || {
        info_field(node.port(), "cluster_partitions_owned") == Some(0)
    });
    let stopped_after = cut.elapsed();
    assert!(
        stopped_after <= Duration::from_millis(LEASE_MS + 1000),
        "still serving {stopped_after:?} after Redis went away"
    );
    for (args, what) in [
        (vec!["ADD", "cut:2", "1000"], "an ADD"),
        (vec!["PTTL", "cut:1"], "a PTTL"),
        (vec!["CANCEL", "cut:1"], "a CANCEL"),
    ] {
        let reply = conn.cmd(&args);
        assert!(
            matches!(&reply, Resp::Error(e) if e.starts_with("TRYAGAIN") || e.starts_with("CLUSTERDOWN")),
            "{what} was answered {reply:?} without Redis"
        );
    }
    assert_eq!(conn.cmd(&["COUNT"]).as_int(), Some(0), "timers still held");
    // Redis back (AOF): the node takes its partitions again, under new epochs.
    redis.restart();
    wait_stable(&[node.port()], Duration::from_secs(20));
    let left = conn.cmd(&["PTTL", "cut:1"]).as_int().unwrap();
    assert!(left > 500_000, "cut:1 lost: {left}");
    assert_eq!(conn.cmd(&["PTTL", "cut:2"]).as_int(), Some(-2));
    assert!(info_field(node.port(), "cluster_leases_lost_total").unwrap() >= PARTITIONS as u64);
}

#[test]
fn a_clean_shutdown_hands_partitions_over_without_waiting_for_the_lease() {
    // A long lease: were the leases not released, taking over would take 5 s.
    let redis = RedisServer::start();
    let start = || {
        TimewheelServer::start(&[
            "--cluster",
            "--redis",
            &redis.url(),
            "--lease-ms",
            "5000",
            "--stream",
            STREAM,
        ])
    };
    let mut leaving = start();
    let staying = start();
    wait_stable(&[leaving.port(), staying.port()], Duration::from_secs(40));
    let stopped = Instant::now();
    assert!(
        leaving
            .terminate(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    wait_until(
        "the survivor owns every slot",
        Duration::from_secs(10),
        || cluster_slots(staying.port()).is_some_and(|r| slot_map(&r, &[staying.port()]).is_some()),
    );
    let took = stopped.elapsed();
    assert!(
        took < Duration::from_millis(3000),
        "took {took:?}, about a lease"
    );
    assert!(
        leaving.log().contains("cluster: left; leases released"),
        "{}",
        leaving.log()
    );
}

#[test]
fn an_unreachable_redis_fails_the_start_with_one_line() {
    let port = util::free_port().to_string();
    let url = format!("redis://127.0.0.1:{port}/0");
    let (status, err) = util::run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--cluster",
            "--redis",
            &url,
            "--stream",
            STREAM,
            "--redis-connect-timeout-s",
            "1",
        ],
        &[],
    );
    assert!(!status.success());
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert!(
        errors.len() == 1 && errors[0].contains("unreachable"),
        "{err}"
    );
}

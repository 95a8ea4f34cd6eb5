// cargo build --release && cargo run --release --example cluster_burst -- 300000
//
//! A same-second burst in cluster mode, on a 3-master Redis Cluster and on
//! one Redis, side by side in one run.
//!
//! Part 1 starts a Redis Cluster of 3 masters and no replicas (private
//! `redis-server --cluster-enabled yes`, AOF `appendfsync everysec`,
//! `--cluster-require-full-coverage no`, ports below 55535, then
//! `redis-cli --cluster create ... --cluster-replicas 0`); part 2 starts one
//! plain `redis-server` with the same AOF settings. In each part, three
//! release `timewheel serve --cluster --stream burst:closed --tick-ms 1000`
//! nodes run on that Redis; N `ADDAT b:<n> D` are sent, each to the node
//! owning its id, all due at the same whole second D. From D on, the example
//! sums `XLEN` of the 128 partition streams (`burst:closed:{tw:pNNN}`, each
//! on the master of its slot) and prints how many were in the streams 1 s,
//! 2 s and 5 s after D, then reads the streams back for p50/p99/max
//! lateness (stream id time minus D) and checks exactly-once: every id in
//! the streams once, every due set empty. It prints the CPU seconds each
//! Redis master (`INFO cpu`) and each node used from D until the last timer
//! was in a stream.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::{SLOTS, key_slot};

const STREAM: &str = "burst:closed";
const PARTITIONS: u16 = 128;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(300_000), |n| n.parse())?;
    let which = args.next().unwrap_or_else(|| "both".into());
    let bin = std::env::var("TIMEWHEEL_BIN").unwrap_or_else(|_| "target/release/timewheel".into());
    if which != "single" {
        println!("== Redis Cluster, 3 masters (no replicas), AOF everysec; N = {count}");
        let dir = tempfile::tempdir()?;
        let masters = start_redis_cluster(dir.path())?;
        run(&bin, &masters, count)?;
    }
    if which != "cluster" {
        println!("== one Redis, AOF everysec; N = {count}");
        let dir = tempfile::tempdir()?;
        let port = free_port(u16::MAX);
        let redis = Killed(
            Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "yes"])
                .args(["--appendfsync", "everysec"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .spawn()?,
        );
        wait_for(|| cmd::<String>(port, &["PING"]).ok())?;
        run(&bin, &[(port, redis)], count)?;
    }
    Ok(())
}

/// Starts 3 cluster-enabled `redis-server`s and joins them as 3 masters.
fn start_redis_cluster(dir: &std::path::Path) -> Result<Vec<(u16, Killed)>, Error> {
    let mut masters = Vec::new();
    for _ in 0..3 {
        let port = free_port(55_535);
        let d = dir.join(port.to_string());
        std::fs::create_dir_all(&d)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "everysec", "--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-require-full-coverage", "no"])
            .arg("--dir")
            .arg(&d)
            .stdout(Stdio::null())
            .spawn()?;
        masters.push((port, Killed(child)));
        wait_for(|| cmd::<String>(port, &["PING"]).ok())?;
    }
    let addrs: Vec<String> = masters
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()?;
    if !out.status.success() {
        return Err(format!("redis-cli --cluster create: {out:?}").into());
    }
    let until = Instant::now() + Duration::from_secs(30);
    while !masters.iter().all(|(p, _)| {
        cmd::<String>(*p, &["CLUSTER", "INFO"]).is_ok_and(|s| s.contains("cluster_state:ok"))
    }) {
        if Instant::now() > until {
            return Err("Redis Cluster not ok within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(masters)
}

fn run(bin: &str, masters: &[(u16, Killed)], count: u64) -> Result<(), Error> {
    let ports: Vec<u16> = masters.iter().map(|(p, _)| *p).collect();
    let url = format!("redis://127.0.0.1:{}", ports[0]);
    let nodes: Vec<Node> = (0..3)
        .map(|_| Node::start(bin, &url))
        .collect::<Result<_, _>>()?;
    let map = wait_stable(&nodes, Duration::from_secs(60))?;
    // Which master holds partition p's keys.
    let layout = Layout::new("tw:", Some(STREAM));
    let redis_map = if ports.len() == 1 {
        vec![ports[0]; SLOTS as usize]
    } else {
        slot_map(ports[0]).ok_or("no Redis slot map")?
    };
    let mut by_master: HashMap<u16, Vec<u16>> = HashMap::new();
    for p in 0..PARTITIONS {
        by_master
            .entry(redis_map[layout.slot(p) as usize])
            .or_default()
            .push(p);
    }
    let mut split: Vec<(u16, usize)> = by_master.iter().map(|(m, ps)| (*m, ps.len())).collect();
    split.sort_unstable();
    println!("partitions per Redis master (port, partitions): {split:?}");

    let deadline_ms = (now_ms() / 1000 + 20 + count / 50_000) * 1000;
    let loading = Instant::now();
    load(&map, count, deadline_ms)?;
    println!(
        "scheduled: {count} timers due at {deadline_ms} in {:.1} s",
        loading.elapsed().as_secs_f64()
    );
    let sum = |key: &dyn Fn(u16) -> String, command: &str| -> Result<u64, Error> {
        let mut total = 0;
        for (master, ps) in &by_master {
            let mut con =
                redis::Client::open(format!("redis://127.0.0.1:{master}"))?.get_connection()?;
            let mut pipe = redis::pipe();
            for &p in ps {
                pipe.cmd(command).arg(key(p));
            }
            let lens: Vec<u64> = pipe.query(&mut con)?;
            total += lens.iter().sum::<u64>();
        }
        Ok(total)
    };
    let due_key = |p: u16| layout.due(p);
    let stream_key = |p: u16| layout.stream(p).unwrap_or_default();
    let due = sum(&due_key, "ZCARD")?;
    assert_eq!(due, count, "every ADDAT is in the journal before D");
    if now_ms() + 1000 > deadline_ms {
        return Err("loading ended less than 1 s before the deadline".into());
    }
    while now_ms() < deadline_ms {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu = |ports: &[u16]| -> Vec<f64> { ports.iter().map(|&p| redis_cpu_s(p)).collect() };
    let node_cpu = || -> Vec<f64> { nodes.iter().map(|n| process_cpu_s(n.child.id())).collect() };
    let cpu_at_deadline = (cpu(&ports), node_cpu());
    let mut all_in = None;
    let mut marks = [(1_000u64, None), (2_000, None), (5_000, None)];
    let mut last_len = 0;
    let finish_by = deadline_ms + 120_000;
    while now_ms() < deadline_ms + 5_050 || last_len < count {
        if now_ms() > finish_by {
            return Err("not every timer reached the streams within 2 minutes".into());
        }
        let len = sum(&stream_key, "XLEN")?;
        let late = now_ms().saturating_sub(deadline_ms);
        if len == count && all_in.is_none() {
            all_in = Some((late, cpu(&ports), node_cpu()));
        }
        for (at, seen) in marks.iter_mut() {
            if late <= *at {
                *seen = Some(len);
            }
        }
        last_len = len;
        std::thread::sleep(Duration::from_millis(20));
    }
    for (at, seen) in marks {
        println!(
            "in_streams_after_{}s: {} ({:.1}%)",
            at / 1000,
            seen.unwrap_or(0),
            100.0 * seen.unwrap_or(0) as f64 / count as f64
        );
    }
    let (all_in_ms, redis_cpu, nodes_cpu) = all_in.ok_or("never all in")?;
    println!("all_in_streams_after_ms: {all_in_ms} (streams polled every 20 ms or so)");
    for (i, port) in ports.iter().enumerate() {
        println!(
            "redis {port} CPU s from D until all in: {:.2}",
            redis_cpu[i] - cpu_at_deadline.0[i]
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        println!(
            "timewheel node {} CPU s from D until all in: {:.2}",
            node.port,
            nodes_cpu[i] - cpu_at_deadline.1[i]
        );
    }

    let mut lateness = Vec::with_capacity(count as usize);
    let mut seen = vec![false; count as usize];
    for (master, ps) in &by_master {
        let mut con =
            redis::Client::open(format!("redis://127.0.0.1:{master}"))?.get_connection()?;
        for &p in ps {
            let key = stream_key(p);
            let mut start = "-".to_string();
            loop {
                let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(&start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(50_000)
                    .query(&mut con)?;
                let Some((last, _)) = page.last() else { break };
                start = format!("({last}");
                for (entry_id, fields) in &page {
                    let entered_ms: u64 = entry_id.split('-').next().unwrap_or("0").parse()?;
                    lateness.push(entered_ms.saturating_sub(deadline_ms));
                    let id = &fields
                        .iter()
                        .find(|(k, _)| k == "id")
                        .ok_or("no id field")?
                        .1;
                    let n: usize = id.trim_start_matches("b:").parse()?;
                    assert!(!seen[n], "{id} is in the streams twice");
                    seen[n] = true;
                }
            }
        }
    }
    assert!(seen.iter().all(|&s| s), "every id is in the streams");
    let left = sum(&due_key, "ZCARD")?;
    assert_eq!(left, 0, "the due sets are empty once all moved");
    lateness.sort_unstable();
    let pct = |p: f64| lateness[((lateness.len() - 1) as f64 * p) as usize];
    println!(
        "lateness_ms: p50 {} p99 {} max {}",
        pct(0.5),
        pct(0.99),
        lateness.last().copied().unwrap_or(0)
    );
    println!("exactly_once: {count} distinct ids in the streams, each once; due sets empty");
    Ok(())
}

/// `ADDAT b:<n> deadline`, each to the node owning the id, 1000 in flight
/// per connection, one connection per node.
fn load(map: &[u16], count: u64, deadline_ms: u64) -> Result<(), Error> {
    let mut by_port: HashMap<u16, Vec<u64>> = HashMap::new();
    for n in 0..count {
        let slot = key_slot(format!("b:{n}").as_bytes());
        by_port.entry(map[slot as usize]).or_default().push(n);
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = by_port
            .iter()
            .map(|(&port, ids)| {
                scope.spawn(move || -> std::io::Result<()> {
                    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    for batch in ids.chunks(1000) {
                        let mut out = Vec::with_capacity(batch.len() * 40);
                        for n in batch {
                            write!(out, "ADDAT b:{n} {deadline_ms}\r\n")?;
                        }
                        stream.write_all(&out)?;
                        let mut line = String::new();
                        for _ in batch {
                            line.clear();
                            reader.read_line(&mut line)?;
                            if !line.starts_with(':') {
                                return Err(std::io::Error::other(format!("ADDAT: {line}")));
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("loader thread"))
    })?;
    Ok(())
}

/// Waits until every node agrees on a table covering all slots with these
/// nodes only, each owning something; returns the slot -> port map.
fn wait_stable(nodes: &[Node], timeout: Duration) -> Result<Vec<u16>, Error> {
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let until = Instant::now() + timeout;
    loop {
        let maps: Vec<Option<Vec<u16>>> = ports.iter().map(|&p| slot_map(p)).collect();
        if let Some(Some(map)) = maps.first()
            && maps.iter().all(|m| m.as_ref() == Some(map))
            && map.iter().all(|p| ports.contains(p))
            && ports.iter().all(|p| map.contains(p))
            && ports
                .iter()
                .all(|&p| info(p, "cluster_partitions_loading") == Some(0))
        {
            return Ok(map.clone());
        }
        if Instant::now() > until {
            return Err("cluster not stable".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The slot -> port map from `CLUSTER SLOTS`, if it covers every slot.
fn slot_map(port: u16) -> Option<Vec<u16>> {
    // Each range: start, end, then [ip, port, id, ...] of the master (Redis
    // 7 adds a fourth element), then the replicas.
    let ranges: Vec<Vec<redis::Value>> = cmd(port, &["CLUSTER", "SLOTS"]).ok()?;
    let mut map = vec![0u16; SLOTS as usize];
    for range in ranges {
        let start: u16 = redis::from_redis_value(range.first()?.clone()).ok()?;
        let end: u16 = redis::from_redis_value(range.get(1)?.clone()).ok()?;
        let master: Vec<redis::Value> = redis::from_redis_value(range.get(2)?.clone()).ok()?;
        let owner: u16 = redis::from_redis_value(master.get(1)?.clone()).ok()?;
        for slot in start..=end {
            map[slot as usize] = owner;
        }
    }
    map.iter().all(|&p| p != 0).then_some(map)
}

fn info(port: u16, key: &str) -> Option<u64> {
    let text: String = cmd(port, &["INFO"]).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().parse().ok())
}

fn cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, Error> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    Ok(c.query(&mut con)?)
}

/// A Redis's own CPU time (user + system), from `INFO cpu`.
fn redis_cpu_s(port: u16) -> f64 {
    cmd::<String>(port, &["INFO", "cpu"]).map_or(0.0, |info| {
        info.lines()
            .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
            .sum()
    })
}

/// A process's CPU time (user + system) from `/proc/<pid>/stat`, assuming
/// the usual 100 clock ticks per second; 0 where there is no `/proc`.
fn process_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn start(bin: &str, url: &str) -> Result<Node, Error> {
        let mut child = Command::new(bin)
            .args(["serve", "--bind", "127.0.0.1:0", "--tick-ms", "1000"])
            .args(["--cluster", "--redis", url, "--stream", STREAM])
            .env("RUST_LOG", "warn,timewheel=info")
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{bin}: {e} (run `cargo build --release` first)"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let port: u16 = loop {
            let line = lines.next().ok_or("timewheel exited before listening")??;
            if let Some(addr) = line.split("listening on ").nth(1) {
                break addr.trim().rsplit(':').next().ok_or("no port")?.parse()?;
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Node { child, port })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A free loopback port at most `max` (and, for a Redis Cluster node, with
/// port + 10000 free too: the cluster bus).
fn free_port(max: u16) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_or(0, |a| a.port());
        if port == 0 || port > max {
            continue;
        }
        if max < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
            continue;
        }
        return port;
    }
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Result<T, Error> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = f() {
            return Ok(value);
        }
        if Instant::now() > until {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed when the example ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
use std::io::Write;
use std::time::{Duration, Instant};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::SLOTS;

#[path = "common/mod.rs"]
mod common;
use common::{
    Aof, Error, Killed, Node, load_routed, now_ms, process_cpu_s, redis_cpu_s, slot_map,
    start_redis, start_redis_cluster, timewheel_bin, wait_stable,
};

const STREAM: &str = "burst:closed";
const PARTITIONS: u16 = 128;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(300_000), |n| n.parse())?;
    let which = args.next().unwrap_or_else(|| "both".into());
    let bin = timewheel_bin();
    if which != "single" {
        println!("== Redis Cluster, 3 masters (no replicas), AOF everysec; N = {count}");
        let dir = tempfile::tempdir()?;
        let masters = start_redis_cluster(dir.path(), 3, Aof::Fsync("everysec"))?;
        run(&bin, &masters, count)?;
    }
    if which != "cluster" {
        println!("== one Redis, AOF everysec; N = {count}");
        let dir = tempfile::tempdir()?;
        let redis = start_redis(dir.path(), Aof::Fsync("everysec"))?;
        run(&bin, &[redis], count)?;
    }
    Ok(())
}

fn run(bin: &str, masters: &[(u16, Killed)], count: u64) -> Result<(), Error> {
    let ports: Vec<u16> = masters.iter().map(|(p, _)| *p).collect();
    let url = format!("redis://127.0.0.1:{}", ports[0]);
    let nodes: Vec<Node> = (0..3)
        .map(|_| {
            #[rustfmt::skip]
            let args = ["--tick-ms", "1000", "--cluster", "--redis", &url, "--stream", STREAM];
            Node::start(bin, &args, "")
        })
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
    load_routed(
        map,
        0..count,
        (1, 1000),
        |n| format!("b:{n}"),
        |out, n| write!(out, "ADDAT b:{n} {deadline_ms}\r\n"),
    )
}

// cargo build --release && cargo run --release --example cluster_rebuild -- 10000000 [rounds] [lease_ms] [both|cluster|single]
//
//! Rebuild in cluster mode: how long one `timewheel serve --cluster` node,
//! starting alone, takes to serve N journaled timers, on a 3-master Redis
//! Cluster and on one Redis, side by side in one run.
//!
//! Per setup (a Redis Cluster of 3 masters without replicas, then one plain
//! `redis-server`; AOF off: the fill is not the subject and 10M timers
//! would write gigabytes of AOF): one node starts, takes the 128
//! partitions (so the cluster's keys exist as a node creates them), and
//! stops (SIGTERM: it releases its leases and leaves). The journal is then
//! filled directly: pipelined `ZADD`s of `order:NNNNNNNNNN` ids (16 bytes),
//! deadlines 600..1800 s ahead, into each id's partition's due set on the
//! master of its slot. Then, `rounds` times: a fresh node starts, and the
//! example polls its `INFO` every 20 ms until `cluster_partitions_owned` is
//! 128 and `pending` is N, then stops it. It prints the time from spawn to
//! listening, to the first partition owned and to everything served; the
//! CPU seconds each Redis (`INFO cpu`) and the node used meanwhile; and
//! the sum of the per-partition `load_ms` the node logged (the manager
//! reads one partition per master per round trip and loads the replies in
//! parallel: when the sum is close to the wall time, the loads do not
//! overlap).

use std::time::{Duration, Instant};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::Partitions;

#[path = "common/mod.rs"]
mod common;
use common::{
    Aof, Error, Node, info, load_average, now_ms, process_cpu_s, redis_cpu_s, slot_map,
    start_redis, start_redis_cluster, timewheel_bin,
};

const PARTITIONS: u16 = 128;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(10_000_000), |n| n.parse())?;
    let rounds: usize = args.next().map_or(Ok(2), |n| n.parse())?;
    let lease_ms: u64 = args.next().map_or(Ok(3000), |n| n.parse())?;
    let which = args.next().unwrap_or_else(|| "both".into());
    let bin = timewheel_bin();
    if which != "single" {
        println!("== Redis Cluster, 3 masters (no replicas), AOF off; N = {count}");
        let dir = tempfile::tempdir()?;
        let masters = start_redis_cluster(dir.path(), 3, Aof::Off)?;
        let ports: Vec<u16> = masters.iter().map(|(p, _)| *p).collect();
        run(&bin, &ports, count, rounds, lease_ms)?;
    }
    if which != "cluster" {
        println!("== one Redis, AOF off; N = {count}");
        let dir = tempfile::tempdir()?;
        let (port, _redis) = start_redis(dir.path(), Aof::Off)?;
        run(&bin, &[port], count, rounds, lease_ms)?;
    }
    Ok(())
}

fn run(bin: &str, ports: &[u16], count: u64, rounds: usize, lease_ms: u64) -> Result<(), Error> {
    let url = format!("redis://127.0.0.1:{}", ports[0]);
    let lease = lease_ms.to_string();
    #[rustfmt::skip]
    let args = ["--cluster", "--redis", &url, "--stream", "orders", "--lease-ms", &lease];
    // A first node creates the cluster's keys and epochs, then leaves.
    let first = Node::start(bin, &args, "")?;
    wait_served(first.port, 0, Duration::from_secs(60))?;
    first.stop(Duration::from_secs(20))?;

    let layout = Layout::new("tw:", None);
    let parts = Partitions::new(PARTITIONS as u32)?;
    let master_of: Vec<u16> = if ports.len() == 1 {
        vec![ports[0]; PARTITIONS as usize]
    } else {
        let map = slot_map(ports[0]).ok_or("no Redis slot map")?;
        parts.iter().map(|p| map[layout.slot(p) as usize]).collect()
    };
    let filling = Instant::now();
    fill(&layout, parts, &master_of, count)?;
    println!(
        "filled {count} timers in {:.1} s (load average {})",
        filling.elapsed().as_secs_f64(),
        load_average()
    );
    for round in 1..=rounds {
        let cpu_before: Vec<f64> = ports.iter().map(|&p| redis_cpu_s(p)).collect();
        let load_before = load_average();
        let spawned = Instant::now();
        let node = Node::start(bin, &args, "took partition")?;
        let listening = spawned.elapsed();
        let (first_owned, all) = wait_served(node.port, count, Duration::from_secs(300))?;
        let (first_owned, all) = (first_owned + listening, all + listening);
        let node_cpu = process_cpu_s(node.child.id());
        let redis_cpu: Vec<String> = ports
            .iter()
            .zip(&cpu_before)
            .map(|(&p, before)| format!("{p}={:.2}", redis_cpu_s(p) - before))
            .collect();
        let log = node.log.lock().clone();
        let load_ms: Vec<u64> = log.iter().filter_map(|l| field(l, "load_ms")).collect();
        let sum_s = load_ms.iter().sum::<u64>() as f64 / 1000.0;
        println!(
            "round {round}: listening after {:.2} s, first partition after {:.2} s, all {PARTITIONS} \
             partitions and {count} timers served after {:.2} s; Redis CPU s per master: {}; \
             node CPU s {node_cpu:.2}; load_ms summed over {} partitions {sum_s:.2} s (max {} ms); \
             load average {load_before} -> {}",
            listening.as_secs_f64(),
            first_owned.as_secs_f64(),
            all.as_secs_f64(),
            redis_cpu.join(" "),
            load_ms.len(),
            load_ms.iter().max().copied().unwrap_or(0),
            load_average()
        );
        // Still serving everything a while later? (Loads that outlast the
        // lease let the first partitions' leases run out.)
        std::thread::sleep(Duration::from_millis((2 * lease_ms).min(10_000)));
        println!(
            "round {round}: {:.1} s later: {} partitions owned, {} timers, {} partition loads logged",
            (2 * lease_ms).min(10_000) as f64 / 1000.0,
            info(node.port, "cluster_partitions_owned").unwrap_or(0),
            info(node.port, "pending").unwrap_or(0),
            node.log.lock().len()
        );
        let stopping = Instant::now();
        let graceful = node.stop(Duration::from_secs(20))?;
        println!(
            "round {round}: {} after {:.1} s",
            if graceful {
                "exited on SIGTERM"
            } else {
                "no exit within 20 s of SIGTERM: killed"
            },
            stopping.elapsed().as_secs_f64()
        );
        // The next node starts alone: a killed node's leases and member
        // entry are removed as if they had run out.
        if !graceful {
            forget_node(&layout, parts, &master_of)?;
        }
        wait_free(&layout, parts, &master_of)?;
    }
    Ok(())
}

/// Deletes every lease and the member list (a killed node's).
fn forget_node(layout: &Layout, parts: Partitions, master_of: &[u16]) -> Result<(), Error> {
    for p in parts.iter() {
        common::cmd::<()>(master_of[p as usize], &["DEL", &layout.lease(p)])?;
    }
    let cluster_master = master_of
        .iter()
        .copied()
        .find(|&m| common::cmd::<u64>(m, &["EXISTS", &layout.nodes()]).unwrap_or(0) > 0);
    if let Some(m) = cluster_master {
        common::cmd::<()>(m, &["DEL", &layout.nodes(), &layout.addrs()])?;
    }
    Ok(())
}

/// Waits until no partition has a lease, then one more second.
fn wait_free(layout: &Layout, parts: Partitions, master_of: &[u16]) -> Result<(), Error> {
    let until = Instant::now() + Duration::from_secs(60);
    while parts.iter().any(|p| {
        common::cmd::<u64>(master_of[p as usize], &["EXISTS", &layout.lease(p)]).unwrap_or(1) > 0
    }) {
        if Instant::now() > until {
            return Err("leases still held 60 s after the node stopped".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    Ok(())
}

/// Polls the node's `INFO` every 20 ms until it owns every partition and
/// holds `count` timers (any count when 0); returns (first partition
/// owned, everything served) after the call.
fn wait_served(port: u16, count: u64, timeout: Duration) -> Result<(Duration, Duration), Error> {
    let start = Instant::now();
    let mut first = None;
    loop {
        let owned = info(port, "cluster_partitions_owned").unwrap_or(0);
        if owned > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        let pending = info(port, "pending").unwrap_or(0);
        if owned == PARTITIONS as u64 && (count == 0 || pending == count) {
            return Ok((first.unwrap_or_default(), start.elapsed()));
        }
        if start.elapsed() > timeout {
            return Err(format!("after {timeout:?}: {owned} partitions, {pending} timers").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ZADD`s of 1000 members, 10 per pipeline, one connection (and thread)
/// per master, each id into its own partition's due set.
fn fill(layout: &Layout, parts: Partitions, master_of: &[u16], count: u64) -> Result<(), Error> {
    let mut ids: Vec<Vec<u64>> = vec![Vec::new(); PARTITIONS as usize];
    for n in 0..count {
        ids[parts.of_key(format!("order:{n:010}").as_bytes()) as usize].push(n);
    }
    let now = now_ms();
    let mut masters: Vec<u16> = master_of.to_vec();
    masters.sort_unstable();
    masters.dedup();
    std::thread::scope(|scope| {
        let workers: Vec<_> = masters
            .iter()
            .map(|&master| {
                let ids = &ids;
                scope.spawn(move || -> redis::RedisResult<()> {
                    let client = redis::Client::open(format!("redis://127.0.0.1:{master}"))?;
                    let mut con = client.get_connection()?;
                    for p in parts.iter().filter(|&p| master_of[p as usize] == master) {
                        let due = layout.due(p);
                        for chunk in ids[p as usize].chunks(10_000) {
                            let mut pipe = redis::pipe();
                            for members in chunk.chunks(1000) {
                                let mut zadd = redis::cmd("ZADD");
                                zadd.arg(&due);
                                for n in members {
                                    let deadline = now + 600_000 + fastrand::u64(..1_200_000);
                                    zadd.arg(deadline).arg(format!("order:{n:010}"));
                                }
                                pipe.add_command(zadd).ignore();
                            }
                            pipe.exec(&mut con)?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("fill thread"))
    })?;
    Ok(())
}

/// `name=value` of a log line, ANSI colours stripped.
fn field(line: &str, name: &str) -> Option<u64> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let at = plain.find(&format!("{name}="))? + name.len() + 1;
    plain[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

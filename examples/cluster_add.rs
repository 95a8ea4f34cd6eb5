// cargo build --release && cargo run --release --example cluster_add -- 1000000 [rounds] [depth] [both|cluster|single]
//
//! `ADD` throughput through a cluster client against `ZADD`, on a 3-master
//! Redis Cluster and on one Redis, side by side in one run.
//!
//! The load generator is a minimal cluster client: it reads the slot map
//! (`CLUSTER SLOTS`) from the servers it is pointed at, keeps one
//! connection per server and pipelines RESP commands, `depth` in flight
//! per connection (default 1024), each sent to the server owning its key's
//! slot. Per setup (a Redis Cluster of 3 masters without replicas, then one
//! plain `redis-server`; AOF `appendfsync everysec` in both) three
//! `timewheel serve --cluster` nodes keep their journal on it, and each
//! round runs, one after the other (A, B, C, A, B, C, ...):
//!
//! - A: `ADD o:<random u64> 1800000` to the timewheel nodes (journaled);
//! - B: the same generator sending `ZADD z:<random u64> <ms> o:<random u64>`
//!   to the Redis masters (random keys);
//! - C: `redis-benchmark [--cluster] -P 64 -c 50 -n N -r 100000000 ZADD
//!   z:{tag}:__rand_int__ <ms> o:__rand_int__` on the same Redis
//!   (redis-benchmark --cluster routes only by the literal `{tag}`, which it
//!   replaces with a tag of the master it talks to: random keys, each on a
//!   slot of that master; on one Redis the key is `z:__rand_int__`).
//!
//! It prints requests per second, the CPU seconds each Redis (`INFO cpu`)
//! and the three nodes used, and at the end checks that the nodes' `COUNT`s
//! add up to the `ADD`s sent.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use timewheel::cluster::slot::{SLOTS, key_slot};

#[path = "common/mod.rs"]
mod common;
use common::{
    Aof, Error, Node, cmd, load_average, now_ms, process_cpu_s, redis_cpu_s, slot_map, start_redis,
    start_redis_cluster, timewheel_bin, wait_stable,
};

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let rounds: usize = args.next().map_or(Ok(2), |n| n.parse())?;
    let depth: usize = args.next().map_or(Ok(1024), |n| n.parse())?;
    let which = args.next().unwrap_or_else(|| "both".into());
    let bin = timewheel_bin();
    if which != "single" {
        println!(
            "== Redis Cluster, 3 masters (no replicas), AOF everysec; N = {count}, depth {depth}"
        );
        let dir = tempfile::tempdir()?;
        let masters = start_redis_cluster(dir.path(), 3, Aof::Fsync("everysec"))?;
        let ports: Vec<u16> = masters.iter().map(|(p, _)| *p).collect();
        run(&bin, &ports, true, count, rounds, depth)?;
    }
    if which != "cluster" {
        println!("== one Redis, AOF everysec; N = {count}, depth {depth}");
        let dir = tempfile::tempdir()?;
        let (port, _redis) = start_redis(dir.path(), Aof::Fsync("everysec"))?;
        run(&bin, &[port], false, count, rounds, depth)?;
    }
    Ok(())
}

fn run(
    bin: &str,
    ports: &[u16],
    cluster: bool,
    count: u64,
    rounds: usize,
    depth: usize,
) -> Result<(), Error> {
    let url = format!("redis://127.0.0.1:{}", ports[0]);
    let nodes: Vec<Node> = (0..3)
        .map(|_| {
            Node::start(
                bin,
                &["--cluster", "--redis", &url, "--stream", "orders"],
                "",
            )
        })
        .collect::<Result<_, _>>()?;
    let node_map = wait_stable(&nodes, Duration::from_secs(60))?;
    let redis_map = if cluster {
        slot_map(ports[0]).ok_or("no Redis slot map")?
    } else {
        vec![ports[0]; SLOTS as usize]
    };
    let score = now_ms() + 1_800_000;
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 1..=rounds {
        for (i, what) in [
            "A ADD via nodes",
            "B ZADD via generator",
            "C redis-benchmark ZADD",
        ]
        .into_iter()
        .enumerate()
        {
            let redis_before: Vec<f64> = ports.iter().map(|&p| redis_cpu_s(p)).collect();
            let nodes_before: Vec<f64> =
                nodes.iter().map(|n| process_cpu_s(n.child.id())).collect();
            let load = load_average();
            let rate = match i {
                0 => generate(&node_map, count, depth, |out, rng| {
                    let id = format!("o:{}", rng.u64(..));
                    resp(out, &["ADD", &id, "1800000"]);
                    id
                })?,
                1 => generate(&redis_map, count, depth, |out, rng| {
                    let key = format!("z:{}", rng.u64(..));
                    let member = format!("o:{}", rng.u64(..));
                    resp(out, &["ZADD", &key, &score.to_string(), &member]);
                    key
                })?,
                _ => redis_benchmark(ports[0], cluster, count, score)?,
            };
            rates[i].push(rate);
            let redis_cpu: Vec<String> = ports
                .iter()
                .zip(&redis_before)
                .map(|(&p, b)| format!("{:.2}", redis_cpu_s(p) - b))
                .collect();
            let nodes_cpu: f64 = nodes
                .iter()
                .zip(&nodes_before)
                .map(|(n, b)| process_cpu_s(n.child.id()) - b)
                .sum();
            println!(
                "round {round} {what}: {rate:.0} req/s; Redis CPU s per master {}; nodes CPU s {nodes_cpu:.2}; load average {load} -> {}",
                redis_cpu.join(", "),
                load_average()
            );
        }
    }
    for (i, (a, b)) in rates[0].iter().zip(&rates[1]).enumerate() {
        println!(
            "round {}: ADD / ZADD (generator) {:.2}x, ADD / ZADD (redis-benchmark) {:.2}x",
            i + 1,
            a / b,
            a / rates[2][i]
        );
    }
    let counted: u64 = nodes
        .iter()
        .map(|n| cmd::<u64>(n.port, &["COUNT"]))
        .sum::<Result<_, _>>()?;
    let sent = count * rounds as u64;
    println!("COUNT over the nodes: {counted} (ADDs sent: {sent})");
    if counted != sent {
        return Err("the nodes' COUNTs differ from the ADDs sent".into());
    }
    Ok(())
}

/// Sends `count` commands made by `make` (which returns the key to route
/// by), each to the server owning the key's slot by `map`: one connection
/// per server, a writer and a reader thread on it, `depth` commands in
/// flight. Returns requests per second.
fn generate<F>(map: &[u16], count: u64, depth: usize, make: F) -> Result<f64, Error>
where
    F: Fn(&mut Vec<u8>, &mut fastrand::Rng) -> String + Sync,
{
    let mut servers: Vec<u16> = map.to_vec();
    servers.sort_unstable();
    servers.dedup();
    // Each server's share by its slots, the rounding remainder to the first.
    let by_slots = |port: u16| {
        let slots = map.iter().filter(|&&p| p == port).count() as u64;
        count * slots / SLOTS as u64
    };
    let rest = count - servers.iter().map(|&p| by_slots(p)).sum::<u64>();
    let share = |port: u16| by_slots(port) + if port == servers[0] { rest } else { 0 };
    let batch = (depth / 4).max(1);
    let make = &make;
    let started = Instant::now();
    let sent: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = servers
            .iter()
            .map(|&port| {
                let todo = share(port);
                scope.spawn(move || -> std::io::Result<u64> {
                    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
                    stream.set_nodelay(true)?;
                    let reader = BufReader::new(stream.try_clone()?);
                    // Batches in flight: the writer blocks once 4 are unanswered.
                    let (tx, rx) = sync_channel::<usize>(3);
                    let replies = std::thread::spawn(move || read_replies(reader, rx));
                    let mut rng = fastrand::Rng::new();
                    let mut out = Vec::with_capacity(batch * 64);
                    let mut one = Vec::with_capacity(64);
                    let mut left = todo;
                    while left > 0 {
                        out.clear();
                        let n = batch.min(left as usize);
                        let mut made = 0;
                        while made < n {
                            one.clear();
                            let key = make(&mut one, &mut rng);
                            if map[key_slot(key.as_bytes()) as usize] == port {
                                out.extend_from_slice(&one);
                                made += 1;
                            }
                        }
                        stream.write_all(&out)?;
                        if tx.send(n).is_err() {
                            break;
                        }
                        left -= n as u64;
                    }
                    drop(tx);
                    replies.join().expect("reader thread")?;
                    Ok(todo)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("generator thread"))
            .sum::<std::io::Result<u64>>()
    })?;
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// Reads one single-line reply per command of each batch; any reply other
/// than an integer is an error.
fn read_replies(
    mut reader: BufReader<TcpStream>,
    batches: std::sync::mpsc::Receiver<usize>,
) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(64);
    for n in batches {
        for _ in 0..n {
            line.clear();
            reader.read_until(b'\n', &mut line)?;
            if line.first() != Some(&b':') {
                let reply = String::from_utf8_lossy(&line).into_owned();
                return Err(std::io::Error::other(format!("reply: {reply}")));
            }
        }
    }
    Ok(())
}

/// Appends one command as a RESP array of bulk strings.
fn resp(out: &mut Vec<u8>, args: &[&str]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n{a}\r\n", a.len());
    }
}

/// `redis-benchmark -P 64 -c 50 ZADD` with random keys on the Redis at
/// `port`; returns its requests per second.
fn redis_benchmark(port: u16, cluster: bool, count: u64, score: u64) -> Result<f64, Error> {
    let mut command = Command::new("redis-benchmark");
    if cluster {
        command.arg("--cluster");
    }
    #[rustfmt::skip]
    command.args([
        "-p", &port.to_string(), "-P", "64", "-c", "50", "-n", &count.to_string(),
        "-r", "100000000", "-q", "ZADD",
        if cluster { "z:{tag}:__rand_int__" } else { "z:__rand_int__" },
        &score.to_string(), "o:__rand_int__",
    ]);
    let out = command.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The last progress line: "ZADD ...: 305998.00 requests per second, ...".
    text.split(['\r', '\n'])
        .filter_map(|l| l.split_once(" requests per second")?.0.rsplit(' ').next())
        .filter_map(|n| n.parse::<f64>().ok())
        .next_back()
        .ok_or_else(|| {
            format!(
                "redis-benchmark: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into()
        })
}

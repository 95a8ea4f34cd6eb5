// cargo build --release && cargo run --release --example cluster_takeover -- 1000000 10 [lease_ms]
//
//! Takeover time in cluster mode: three `timewheel serve --cluster` nodes
//! (release binary, `--stream`, default lease 3000 ms) on one private
//! `redis-server` (AOF, `appendfsync everysec`), N pending timers due in an
//! hour, then K rounds of: schedule 300 orders on the victim's partitions
//! due 200 ms after the kill, `kill -9` the victim, and measure
//!
//! - *writable*: until an `ADD` to every partition the victim owned is
//!   accepted by a survivor (following `-MOVED`, retrying `-TRYAGAIN` and
//!   `-CLUSTERDOWN`), and
//! - *fired*: until the 300 orders, overdue by then, are in the streams;
//!
//! then restart the victim and wait until it holds its share again. Prints
//! p50 and max of both over the K kills. Target: at most lease + 2 s.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::{Partitions, key_slot};

#[path = "common/mod.rs"]
mod common;
use common::{
    Aof, Error, Node, load_routed, now_ms, slot_map, start_redis, timewheel_bin, wait_stable,
};

const STREAM: &str = "orders";
const PARTITIONS: u32 = 128;
const DUE_AT_KILL: usize = 300;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let kills: usize = args.next().map_or(Ok(10), |n| n.parse())?;
    let lease_ms: u64 = args.next().map_or(Ok(3000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let (redis_port, _redis) = start_redis(dir.path(), Aof::Fsync("everysec"))?;
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let mut con = redis::Client::open(url.as_str())?.get_connection()?;
    let bin = timewheel_bin();
    let lease = lease_ms.to_string();
    #[rustfmt::skip]
    let args = [
        "--tick-ms", "10", "--cluster", "--redis", &url, "--stream", STREAM,
        "--lease-ms", &lease,
    ];
    let start = |bin: &str| Node::start(bin, &args, "");
    let mut nodes: Vec<Node> = (0..3).map(|_| start(&bin)).collect::<Result<_, _>>()?;
    wait_stable(&nodes, Duration::from_secs(60))?;

    let loading = Instant::now();
    let map = slot_map(nodes[0].port).ok_or("no slot map")?;
    load(&map, count)?;
    println!(
        "loaded {count} timers over 3 nodes in {:.1} s (lease {lease_ms} ms)",
        loading.elapsed().as_secs_f64()
    );
    let parts = Partitions::new(PARTITIONS)?;
    let layout = Layout::new("tw:", Some(STREAM));
    let mut writable = Vec::new();
    let mut fired = Vec::new();
    for round in 0..kills {
        let map = wait_stable(&nodes, Duration::from_secs(60))?;
        let victim = fastrand::usize(..nodes.len());
        let port = nodes[victim].port;
        let victim_parts: Vec<u16> = parts
            .iter()
            .filter(|&p| map[*parts.slots(p).start() as usize] == port)
            .collect();
        let in_streams = |con: &mut redis::Connection| -> redis::RedisResult<u64> {
            let mut pipe = redis::pipe();
            for p in parts.iter() {
                pipe.cmd("XLEN").arg(layout.stream(p).unwrap());
            }
            Ok(pipe.query::<Vec<u64>>(con)?.iter().sum())
        };
        let before = in_streams(&mut con)?;
        // Orders on the victim's partitions, due just after the kill.
        let due = now_ms() + 200;
        let mut victim_conn = RespLine::connect(port)?;
        let mut n = 0;
        let mut i = 0u64;
        while n < DUE_AT_KILL {
            i += 1;
            let id = format!("due:{round}:{i}");
            if map[key_slot(id.as_bytes()) as usize] == port {
                victim_conn.call(&format!("ADDAT {id} {due}"))?;
                n += 1;
            }
        }
        let probes: Vec<String> = victim_parts
            .iter()
            .map(|&p| {
                (0..)
                    .map(|i| format!("probe:{round}:{p}:{i}"))
                    .find(|id| parts.of_key(id.as_bytes()) == p)
                    .unwrap()
            })
            .collect();
        nodes.remove(victim).kill9();
        let killed = Instant::now();
        let survivors: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        let mut pending: Vec<&String> = probes.iter().collect();
        let mut routes: HashMap<u16, u16> = HashMap::new();
        let mut fired_at = None;
        while !pending.is_empty() || fired_at.is_none() {
            if fired_at.is_none() && in_streams(&mut con)? >= before + DUE_AT_KILL as u64 {
                fired_at = Some(killed.elapsed());
            }
            pending.retain(|id| {
                let slot = key_slot(id.as_bytes());
                let port = *routes.get(&slot).unwrap_or(&survivors[0]);
                match RespLine::connect(port).and_then(|mut c| c.call(&format!("ADD {id} 3600000")))
                {
                    Ok(reply) if reply.starts_with(':') => false,
                    Ok(reply) if reply.starts_with("-MOVED") => {
                        let addr = reply.trim().rsplit(' ').next().unwrap_or_default();
                        if let Some(p) = addr.rsplit(':').next().and_then(|p| p.parse().ok()) {
                            routes.insert(slot, p);
                        }
                        true
                    }
                    Ok(_) => true,
                    // Sent to the dead node by a stale -MOVED: ask a survivor again.
                    Err(_) => {
                        routes.remove(&slot);
                        true
                    }
                }
            });
            if pending.is_empty() && writable.len() == round {
                writable.push(killed.elapsed());
            }
            if killed.elapsed() > Duration::from_secs(60) {
                let sample = pending.first().map(|id| {
                    let slot = key_slot(id.as_bytes());
                    let port = *routes.get(&slot).unwrap_or(&survivors[0]);
                    RespLine::connect(port)
                        .and_then(|mut c| c.call(&format!("ADD {id} 3600000")))
                        .unwrap_or_else(|e| e.to_string())
                });
                return Err(format!(
                    "no takeover within 60 s: {} partitions not writable (e.g. {sample:?}), fired {:?}",
                    pending.len(),
                    fired_at
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let fired_at = fired_at.unwrap_or_default();
        fired.push(fired_at);
        println!(
            "kill {}: {} partitions; writable after {:.2} s, overdue fired after {:.2} s",
            round + 1,
            victim_parts.len(),
            writable[round].as_secs_f64(),
            fired_at.as_secs_f64()
        );
        nodes.push(start(&bin)?);
    }
    for (what, times) in [("writable", &mut writable), ("fired", &mut fired)] {
        times.sort();
        println!(
            "{what}: p50 {:.2} s, max {:.2} s over {} kills (lease {lease_ms} ms, target <= {:.1} s)",
            times[times.len() / 2].as_secs_f64(),
            times[times.len() - 1].as_secs_f64(),
            times.len(),
            (lease_ms + 2000) as f64 / 1000.0
        );
    }
    Ok(())
}

/// Sends `count` `ADD`s due in an hour, pipelined to each id's owner.
fn load(map: &[u16], count: u64) -> Result<(), Error> {
    load_routed(
        map,
        0..count,
        (1, 1000),
        |n| format!("t:{n}"),
        |out, n| write!(out, "ADD t:{n} 3600000\r\n"),
    )
}

/// One inline command, one reply line.
struct RespLine {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl RespLine {
    fn connect(port: u16) -> std::io::Result<RespLine> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(RespLine {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    fn call(&mut self, command: &str) -> std::io::Result<String> {
        self.stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }
}

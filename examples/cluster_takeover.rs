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
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timewheel::cluster::scripts::Layout;
use timewheel::cluster::slot::{Partitions, SLOTS, key_slot};

const STREAM: &str = "orders";
const PARTITIONS: u32 = 128;
const DUE_AT_KILL: usize = 300;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let kills: usize = args.next().map_or(Ok(10), |n| n.parse())?;
    let lease_ms: u64 = args.next().map_or(Ok(3000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let redis_port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()?,
    );
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let client = redis::Client::open(url.as_str())?;
    let mut con = wait_for(|| client.get_connection().ok())?;
    let bin = std::env::var("TIMEWHEEL_BIN").unwrap_or_else(|_| "target/release/timewheel".into());
    let start = |bin: &str| Node::start(bin, &url, lease_ms);
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
    let mut by_port: HashMap<u16, Vec<u64>> = HashMap::new();
    for n in 0..count {
        let slot = key_slot(format!("t:{n}").as_bytes());
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
                        let mut out = Vec::with_capacity(batch.len() * 32);
                        for n in batch {
                            write!(out, "ADD t:{n} 3600000\r\n")?;
                        }
                        stream.write_all(&out)?;
                        let mut line = String::new();
                        for _ in batch {
                            line.clear();
                            reader.read_line(&mut line)?;
                            if !line.starts_with(':') {
                                return Err(std::io::Error::other(format!("ADD: {line}")));
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
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client.get_connection().ok()?;
    let ranges: Vec<(u16, u16, (String, u16, String))> =
        redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).ok()?;
    let mut map = vec![0u16; SLOTS as usize];
    for (start, end, (_, owner, _)) in ranges {
        for slot in start..=end {
            map[slot as usize] = owner;
        }
    }
    map.iter().all(|&p| p != 0).then_some(map)
}

fn info(port: u16, key: &str) -> Option<u64> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client.get_connection().ok()?;
    let text: String = redis::cmd("INFO").query(&mut con).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().parse().ok())
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

struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn start(bin: &str, url: &str, lease_ms: u64) -> Result<Node, Error> {
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--tick-ms",
                "10",
                "--cluster",
            ])
            .args(["--redis", url, "--stream", STREAM])
            .args(["--lease-ms", &lease_ms.to_string()])
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

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
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

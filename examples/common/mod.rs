//! What the examples share: private `redis-server`s and Redis Clusters,
//! release `timewheel serve` nodes, the slot map, loaders that route each
//! command to the node owning its key, and CPU readings.
//!
//! Used with `#[path = "common/mod.rs"] mod common;`; a folder without a
//! `main.rs` is not an example of its own. Not every example uses every
//! helper, hence the `dead_code` allowance.
//!
//! Ground rules: every process started here is killed when its handle is
//! dropped, however the example ends; never a standard port (Redis Cluster
//! ports stay below 55535 with the cluster bus port, + 10000, free too);
//! every wait has a deadline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timewheel::cluster::slot::{SLOTS, key_slot};

pub type Error = Box<dyn std::error::Error>;

/// The release binary, or `$TIMEWHEEL_BIN`.
pub fn timewheel_bin() -> String {
    std::env::var("TIMEWHEEL_BIN").unwrap_or_else(|_| "target/release/timewheel".into())
}

/// A child process, killed when the example ends, however it ends.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a private `redis-server` keeps its AOF.
#[derive(Clone, Copy, Debug)]
pub enum Aof<'a> {
    /// `--appendonly no`.
    Off,
    /// `--appendonly yes --appendfsync <policy>`, no automatic rewrite
    /// (a rewrite's fork would land in the middle of a measurement).
    Fsync(&'a str),
}

impl Aof<'_> {
    fn args(self) -> Vec<String> {
        match self {
            Aof::Off => vec!["--appendonly".into(), "no".into()],
            Aof::Fsync(policy) => ["--appendonly", "yes", "--appendfsync", policy]
                .into_iter()
                .chain(["--auto-aof-rewrite-percentage", "0"])
                .map(str::to_string)
                .collect(),
        }
    }
}

/// Starts a plain `redis-server` in `dir` on a free port and waits for it.
pub fn start_redis(dir: &Path, aof: Aof<'_>) -> Result<(u16, Killed), Error> {
    let port = free_port(u16::MAX);
    let child = spawn_redis(dir, port, aof, &[])?;
    wait_for("redis-server to answer PING", || {
        cmd::<String>(port, &["PING"]).ok()
    })?;
    Ok((port, child))
}

fn spawn_redis(dir: &Path, port: u16, aof: Aof<'_>, extra: &[&str]) -> Result<Killed, Error> {
    std::fs::create_dir_all(dir)?;
    Ok(Killed(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(aof.args())
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()?,
    ))
}

/// Starts `masters` cluster-enabled `redis-server`s in `dir` and joins
/// them as a Redis Cluster without replicas (`--cluster-require-full-coverage
/// no`, node timeout 2 s); waits for `cluster_state:ok` on each.
pub fn start_redis_cluster(
    dir: &Path,
    masters: usize,
    aof: Aof<'_>,
) -> Result<Vec<(u16, Killed)>, Error> {
    let mut nodes = Vec::new();
    for _ in 0..masters {
        let port = free_port(55_535);
        #[rustfmt::skip]
        let child = spawn_redis(&dir.join(port.to_string()), port, aof, &[
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no",
        ])?;
        nodes.push((port, child));
        wait_for("redis-server to answer PING", || {
            cmd::<String>(port, &["PING"]).ok()
        })?;
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|(p, _)| format!("127.0.0.1:{p}"))
        .collect();
    let out = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!("redis-cli --cluster create: {out:?}").into());
    }
    for (port, _) in &nodes {
        wait_for("cluster_state:ok", || {
            cmd::<String>(*port, &["CLUSTER", "INFO"])
                .ok()
                .filter(|s| s.contains("cluster_state:ok"))
        })?;
    }
    Ok(nodes)
}

/// A release `timewheel serve` on a free port, its log drained (lines
/// matching `keep` are collected in `log`).
pub struct Node {
    pub child: Child,
    pub port: u16,
    pub log: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Node {
    /// `timewheel serve --bind 127.0.0.1:0 <args>`, `RUST_LOG=warn,timewheel=info`.
    pub fn start(bin: &str, args: &[&str], keep: &'static str) -> Result<Node, Error> {
        let mut child = Command::new(bin)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .args(args)
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
        let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let kept = log.clone();
        // Keep draining the log so the node never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if !keep.is_empty() && line.contains(keep) {
                    kept.lock().push(line);
                }
            }
        });
        Ok(Node { child, port, log })
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (the node releases its leases and leaves) and up to
    /// `grace` for it to exit; then `kill -9`. Returns whether it exited by
    /// itself.
    pub fn stop(mut self, grace: Duration) -> Result<bool, Error> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let until = Instant::now() + grace;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > until {
                self.kill9();
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(true)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every node agrees on a table covering all slots with these
/// nodes only, each owning something, none loading; returns the slot ->
/// port map.
pub fn wait_stable(nodes: &[Node], timeout: Duration) -> Result<Vec<u16>, Error> {
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

/// The slot -> port map from `CLUSTER SLOTS` (of a timewheel node or a
/// Redis Cluster master), if it covers every slot.
pub fn slot_map(port: u16) -> Option<Vec<u16>> {
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

/// Sends one command per id, each to the node owning `key(id)`'s slot by
/// `map`: `connections` connections (one thread each) per node, the node's
/// ids dealt round-robin, `batch` commands in flight per connection, every
/// reply checked to start with `:`.
pub fn load_routed<K, C>(
    map: &[u16],
    ids: impl Iterator<Item = u64>,
    (connections, batch): (usize, usize),
    key: K,
    command: C,
) -> Result<(), Error>
where
    K: Fn(u64) -> String,
    C: Fn(&mut Vec<u8>, u64) -> std::io::Result<()> + Sync,
{
    let mut lanes: HashMap<(u16, usize), Vec<u64>> = HashMap::new();
    let mut dealt: HashMap<u16, usize> = HashMap::new();
    for n in ids {
        let port = map[key_slot(key(n).as_bytes()) as usize];
        let i = dealt.entry(port).or_default();
        lanes.entry((port, *i % connections)).or_default().push(n);
        *i += 1;
    }
    let command = &command;
    std::thread::scope(|scope| {
        let workers: Vec<_> = lanes
            .iter()
            .map(|(&(port, _), ids)| {
                scope.spawn(move || -> std::io::Result<()> {
                    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    let mut out = Vec::new();
                    let mut line = String::new();
                    for chunk in ids.chunks(batch) {
                        out.clear();
                        for &n in chunk {
                            command(&mut out, n)?;
                        }
                        stream.write_all(&out)?;
                        for _ in chunk {
                            line.clear();
                            reader.read_line(&mut line)?;
                            if !line.starts_with(':') {
                                return Err(std::io::Error::other(format!("reply: {line}")));
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

/// One command on `port`, on a new connection.
pub fn cmd<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, Error> {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    Ok(c.query(&mut con)?)
}

/// A numeric `INFO` field of the server at `port`.
pub fn info(port: u16, key: &str) -> Option<u64> {
    let text: String = cmd(port, &["INFO"]).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .and_then(|v| v.trim().parse().ok())
}

/// A Redis's own CPU time (user + system, all its threads), from `INFO cpu`.
pub fn redis_cpu_s(port: u16) -> f64 {
    cmd::<String>(port, &["INFO", "cpu"]).map_or(0.0, |info| {
        info.lines()
            .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
            .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
            .sum()
    })
}

/// A process's CPU time (user + system) from `/proc/<pid>/stat`, assuming
/// the usual 100 clock ticks per second; 0 where there is no `/proc`.
pub fn process_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    (ticks(11) + ticks(12)) / 100.0
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A free loopback port at most `max` (and, for a Redis Cluster node, with
/// port + 10000 free too: the cluster bus).
pub fn free_port(max: u16) -> u16 {
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

/// Polls `f` every 50 ms for up to 30 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T, Error> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = f() {
            return Ok(value);
        }
        if Instant::now() > until {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

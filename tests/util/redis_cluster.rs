//! A private Redis Cluster of 3 masters and 3 replicas on loopback, in a
//! temporary directory, killed on drop.
//!
//! Each node is `redis-server --cluster-enabled yes --cluster-node-timeout
//! 2000 --appendonly yes --repl-diskless-sync-delay 0
//! --cluster-replica-validity-factor 0` (so that a replica that has synced
//! always fails over, within a few seconds of its master's `kill -9`;
//! `--cluster-require-full-coverage no`, so that the other masters keep
//! serving while one fails over), then
//! `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`.
//! Ports are below 55535 with port + 10000 (the cluster bus) free too.
//!
//! Ground rules: never port 6379; every wait has a deadline and panics with
//! the state it found.

use std::collections::HashMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Resp, RespConn, encode_command, find_on_path};

/// Masters of the cluster (each with one replica).
pub const MASTERS: usize = 3;
/// How long the cluster may take to form or to recover.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(40);

/// One node of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// Six `redis-server` processes forming one cluster.
pub struct RedisCluster {
    nodes: Vec<Node>,
    // Declared last so it is deleted after the processes are gone.
    dir: TempDir,
}

/// A port `p < 55535` on 127.0.0.1 such that `p` and `p + 10000` are free.
fn cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..1000 {
        let port = fastrand::u16(20_000..55_535);
        if taken
            .iter()
            .any(|&t| t == port || t + 10_000 == port || port + 10_000 == t)
        {
            continue;
        }
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free port pair (p, p + 10000) below 55535 after 1000 tries");
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster, and waits for
    /// `cluster_state:ok` on every node.
    pub fn start() -> RedisCluster {
        let binary = find_on_path("redis-server").expect("redis-server on PATH");
        let dir = tempfile::Builder::new()
            .prefix("tw-rcluster-")
            .tempdir()
            .expect("temporary dir");
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        let mut ports = Vec::new();
        for _ in 0..MASTERS * 2 {
            let port = cluster_port(&ports);
            ports.push(port);
            let child = cluster.spawn(&binary, port);
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for &port in &ports {
            wait_for(&format!("node {port} to answer PING"), || {
                cmd(port, &["PING"]) == Some(Resp::simple("PONG"))
            });
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_ok(&ports);
        // Every replica has finished its first sync (else it would not fail over).
        cluster.wait_replicas_synced();
        cluster
    }

    fn spawn(&self, binary: &PathBuf, port: u16) -> Child {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let port_s = port.to_string();
        let log = dir.join("redis.log");
        #[rustfmt::skip]
        let args = [
            "--port", &port_s, "--bind", "127.0.0.1", "--protected-mode", "no",
            "--dir", dir.to_str().expect("UTF-8 dir"),
            "--logfile", log.to_str().expect("UTF-8 log"),
            "--daemonize", "no", "--save", "",
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "2000",
            "--appendonly", "yes", "--appendfsync", "everysec",
            "--repl-diskless-sync-delay", "0",
            "--cluster-replica-validity-factor", "0",
            "--cluster-require-full-coverage", "no",
        ];
        Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server")
    }

    fn wait_ok(&self, ports: &[u16]) {
        for &port in ports {
            wait_for(&format!("cluster_state:ok on {port}"), || {
                info_text(port, "CLUSTER", "INFO").is_some_and(|t| t.contains("cluster_state:ok"))
            });
        }
    }

    fn wait_replicas_synced(&self) {
        wait_for("every replica to finish its first sync", || {
            self.live_ports().iter().all(|&port| {
                info_text(port, "INFO", "replication").is_some_and(|t| {
                    !t.contains("role:slave") || t.contains("master_link_status:up")
                })
            }) && self.masters().len() == MASTERS
        });
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// A `redis://` URL of a live node (any node is a seed).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.live_ports()[0])
    }

    /// Every live node's URL.
    pub fn urls(&self) -> Vec<String> {
        self.live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The live masters: port -> slot ranges, by `CLUSTER SLOTS` of a live node.
    pub fn masters(&self) -> HashMap<u16, Vec<(u16, u16)>> {
        let mut out: HashMap<u16, Vec<(u16, u16)>> = HashMap::new();
        for port in self.live_ports() {
            let Some(Resp::Array(Some(ranges))) = cmd(port, &["CLUSTER", "SLOTS"]) else {
                continue;
            };
            for range in ranges {
                let Resp::Array(Some(range)) = range else {
                    continue;
                };
                let (Some(start), Some(end)) = (range[0].as_int(), range[1].as_int()) else {
                    continue;
                };
                let Resp::Array(Some(node)) = &range[2] else {
                    continue;
                };
                let Some(p) = node[1].as_int() else { continue };
                out.entry(p as u16)
                    .or_default()
                    .push((start as u16, end as u16));
            }
            return out;
        }
        out
    }

    /// Waits until every live node's `CLUSTER SLOTS` names the same
    /// masters for the same ranges (news of a failover or of a moved slot
    /// reaches the other nodes through the cluster bus).
    pub fn wait_agreed(&self) {
        let view = |port: u16| -> Option<Vec<(i64, i64, i64)>> {
            let Some(Resp::Array(Some(ranges))) = cmd(port, &["CLUSTER", "SLOTS"]) else {
                return None;
            };
            let mut out: Vec<(i64, i64, i64)> = ranges
                .iter()
                .filter_map(|range| match range {
                    Resp::Array(Some(r)) => match &r[2] {
                        Resp::Array(Some(node)) => {
                            Some((r[0].as_int()?, r[1].as_int()?, node[1].as_int()?))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect();
            out.sort();
            Some(out)
        };
        wait_for("every node to agree on the slot map", || {
            let views: Vec<_> = self.live_ports().into_iter().map(view).collect();
            views.iter().all(|v| v.is_some() && *v == views[0])
        });
    }

    /// The port of the live master serving `slot`.
    pub fn master_of(&self, slot: u16) -> u16 {
        self.masters()
            .into_iter()
            .find(|(_, ranges)| ranges.iter().any(|&(s, e)| s <= slot && slot <= e))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// One command on the node at `port` (a master for keyed commands).
    pub fn cmd_at<A: AsRef<[u8]>>(&self, port: u16, args: &[A]) -> Resp {
        let mut conn = RespConn::connect(port);
        conn.cmd(args)
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the node at `port`.
    pub fn signal(&self, port: u16, signal: &str) {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        let pid = node.child.as_ref().expect("a live node").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid}: {status}");
    }

    /// `CLUSTER MYID` of the node at `port`.
    pub fn node_id(&self, port: u16) -> String {
        let reply = self.cmd_at(port, &["CLUSTER", "MYID"]);
        reply
            .as_str()
            .unwrap_or_else(|| panic!("CLUSTER MYID of {port}: {reply:?}"))
            .to_string()
    }

    /// The port of the replica of the master at `master`: `slave0:` of the
    /// master's `INFO replication`, waiting (up to [`FORM_TIMEOUT`]) until
    /// a replica is online there.
    pub fn replica_of(&self, master: u16) -> u16 {
        let deadline = Instant::now() + FORM_TIMEOUT;
        loop {
            let info = info_text(master, "INFO", "replication").unwrap_or_default();
            let replica = info
                .lines()
                .find_map(|l| l.strip_prefix("slave0:"))
                .filter(|l| l.contains("state=online"))
                .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
                .and_then(|p| p.parse().ok());
            if let Some(port) = replica {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica online in INFO replication of {master}: {info}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first element of `ROLE` on `port` (`master` or `slave`), `None`
    /// if it does not answer.
    pub fn role(&self, port: u16) -> Option<String> {
        match cmd(port, &["ROLE"])? {
            Resp::Array(Some(items)) => items.first()?.as_str().map(str::to_string),
            _ => None,
        }
    }

    /// `redis-cli --cluster reshard` of `slots` slots from the master at
    /// `from` to the master at `to`; panics with redis-cli's output if it
    /// fails.
    pub fn reshard(&self, from: u16, to: u16, slots: u16) {
        let output = Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from}")])
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster reshard");
        assert!(
            output.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Moves `slot` from the master at `from` to the master at `to` by the
    /// manual steps of the Redis Cluster specification (`SETSLOT IMPORTING`
    /// / `MIGRATING`, `MIGRATE ... KEYS`, `SETSLOT NODE`), holding it for
    /// `hold` with half of its keys moved: meanwhile the source answers
    /// `-ASK` for the moved keys and `-TRYAGAIN` for a call touching both
    /// halves. Returns the keys moved before and after the hold.
    pub fn migrate_slot_slowly(
        &self,
        slot: u16,
        from: u16,
        to: u16,
        hold: Duration,
    ) -> (Vec<String>, Vec<String>) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_s = slot.to_string();
        let ok = |port: u16, args: &[&str]| {
            let reply = self.cmd_at(port, args);
            assert!(
                reply == Resp::ok() || reply == Resp::simple("NOKEY"),
                "{args:?} on {port}: {reply:?}"
            );
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot_s, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot_s, "MIGRATING", &to_id]);
        let keys = |port: u16| -> Vec<String> {
            let reply = self.cmd_at(port, &["CLUSTER", "GETKEYSINSLOT", &slot_s, "1000"]);
            let Resp::Array(Some(keys)) = reply else {
                panic!("CLUSTER GETKEYSINSLOT {slot} on {port}: {reply:?}");
            };
            let mut keys: Vec<String> = keys
                .iter()
                .map(|k| k.as_str().unwrap().to_string())
                .collect();
            keys.sort();
            keys
        };
        let migrate = |keys: &[String]| {
            if keys.is_empty() {
                return;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            ok(from, &args);
        };
        let before = keys(from);
        let first = &before[..before.len() / 2];
        migrate(first);
        thread::sleep(hold);
        let rest = keys(from);
        migrate(&rest);
        // The destination first, then the source, then everyone else.
        ok(to, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
        for (master, _) in self.masters() {
            if master != from && master != to {
                ok(master, &["CLUSTER", "SETSLOT", &slot_s, "NODE", &to_id]);
            }
        }
        (first.to_vec(), rest)
    }

    /// `kill -9` of the node at `port`.
    pub fn kill9(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node at `port` again after [`RedisCluster::kill9`], with
    /// its directory (`nodes.conf`, AOF): a master whose replica was
    /// promoted meanwhile comes back as that replica's replica.
    pub fn restart(&mut self, port: u16) {
        let binary = find_on_path("redis-server").expect("redis-server on PATH");
        let child = self.spawn(&binary, port);
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        assert!(node.child.is_none(), "node {port} is running");
        node.child = Some(child);
        wait_for(&format!("node {port} to answer PING"), || {
            cmd(port, &["PING"]) == Some(Resp::simple("PONG"))
        });
    }

    /// Waits until every slot is served by a live master again and every
    /// live node says `cluster_state:ok` (after a failover).
    pub fn wait_recovered(&self) {
        let live = self.live_ports();
        wait_for(
            "the cluster to recover (every slot on a live master)",
            || {
                let masters = self.masters();
                let covered: u32 = masters
                    .values()
                    .flatten()
                    .map(|&(s, e)| (e - s) as u32 + 1)
                    .sum();
                covered == 16_384
                    && masters.keys().all(|p| live.contains(p))
                    && live.iter().all(|&port| {
                        info_text(port, "CLUSTER", "INFO")
                            .is_some_and(|t| t.contains("cluster_state:ok"))
                    })
            },
        );
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One command on `port`, `None` if the node does not answer.
fn cmd(port: u16, args: &[&str]) -> Option<Resp> {
    let mut conn = RespConn::try_connect(port).ok()?;
    conn.set_timeout(Duration::from_secs(2));
    conn.try_send_raw(&encode_command(args)).ok()?;
    conn.try_read_reply().ok()
}

fn info_text(port: u16, a: &str, b: &str) -> Option<String> {
    cmd(port, &[a, b]).and_then(|r| r.as_str().map(str::to_string))
}

#[track_caller]
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + FORM_TIMEOUT;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {FORM_TIMEOUT:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

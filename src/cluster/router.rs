//! Routes partition commands to the Redis master that holds their slot.
//!
//! `--redis` may name a plain Redis or any node of a Redis Cluster; which
//! one is decided at connect time by `INFO cluster` (`cluster_enabled:1`).
//! A plain Redis is one "master" for every slot, over one connection, and
//! behaves exactly as a single connection did. On a Redis Cluster the
//! router keeps the slot map (`CLUSTER SLOTS`) and one connection per
//! master.
//!
//! [`Router::query`] sends a list of commands, each with the slot of its
//! keys, as one pipeline per master (so group commit keeps one round trip
//! per master), and answers each command in place.
//!
//! Ground rules:
//! - Order: commands for one master keep their order in its pipeline. A
//!   command is sent again only when Redis refused it before running it
//!   (`-MOVED`, `-READONLY` from a demoted master, `-NOSCRIPT`); Redis
//!   refuses every command of a slot in a pipeline alike, so what is sent
//!   again for a slot is a suffix of its commands, in order, and two
//!   writes for the same id (one partition, one slot) are never reordered.
//! - The map is read again after a redirect, a `-READONLY`, a
//!   `-CLUSTERDOWN`/`-TRYAGAIN`, or any connection error; a connection
//!   that failed is dropped and reopened on next use.
//! - `-ASK` (a slot being migrated) is not followed: it is answered as an
//!   error and the caller retries later, when the migration is done and
//!   the slot map says `-MOVED`.
//! - Every connection loads the given scripts when it opens (`SCRIPT
//!   LOAD` is not replicated, so a promoted replica may not have them).
//! - The router does blocking I/O on its caller's thread; each thread that
//!   talks to Redis owns its own router.
//!
//! Why not the `redis` crate's `ClusterConnection`: it routes one command
//! (or a pipeline whose commands all hash to one slot) at a time, so group
//! commit over 128 partitions would pay one round trip per partition
//! instead of one per master, and it retries by itself in ways that could
//! send a write again after it ran.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::{Cmd, ConnectionAddr, ConnectionInfo, RedisError, RedisResult, Script, Value};

use super::slot::SLOTS;

/// Slot served by no known master.
const NOBODY: u16 = u16::MAX;

/// Attempts of one [`Router::query`] for commands refused before running.
const ATTEMPTS: usize = 4;

/// Counters of one router.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouterStats {
    /// Commands refused with `-MOVED`/`-ASK`/`-READONLY` and routed again.
    pub redirects: u64,
    /// Times the slot map was read.
    pub refreshes: u64,
    /// Failed round trips to a master (connection errors).
    pub errors: u64,
    /// Times a read of the slot map found other masters than the last one
    /// (a failover, or slots moved to a new master).
    pub map_changes: u64,
    /// Unix ms of the last such change (0: none seen).
    pub last_map_change_unix_ms: u64,
}

struct Master {
    host: String,
    port: u16,
    con: Option<redis::Connection>,
}

/// One connection per Redis master, and the slot map.
pub struct Router {
    seed: ConnectionInfo,
    io_timeout: Duration,
    scripts: Vec<Script>,
    cluster: bool,
    /// slot -> index into `masters`; empty for a plain Redis.
    slots: Vec<u16>,
    masters: Vec<Master>,
    /// Every node address seen, to read the map from when masters fail.
    known: Vec<(String, u16)>,
    stale: bool,
    stats: RouterStats,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("cluster", &self.cluster)
            .field(
                "masters",
                &self
                    .masters
                    .iter()
                    .map(|m| format!("{}:{}", m.host, m.port))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Whether the Redis behind `con` is a Redis Cluster (`INFO cluster`).
pub fn is_redis_cluster(con: &mut redis::Connection) -> RedisResult<bool> {
    let info: String = redis::cmd("INFO").arg("cluster").query(con)?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

impl Router {
    /// Connects to the seed, finds out whether it is a Redis Cluster, and
    /// reads the slot map if so. `scripts` are loaded on every connection.
    pub fn connect(
        seed: ConnectionInfo,
        io_timeout: Duration,
        scripts: &[&str],
    ) -> RedisResult<Router> {
        let scripts: Vec<Script> = scripts.iter().map(|s| Script::new(s)).collect();
        let mut con = open(&seed, io_timeout, &scripts)?;
        let cluster = is_redis_cluster(&mut con)?;
        let (host, port) = host_port(&seed);
        let mut router = Router {
            seed,
            io_timeout,
            scripts,
            cluster,
            slots: Vec::new(),
            masters: vec![Master {
                host: host.clone(),
                port,
                con: Some(con),
            }],
            known: vec![(host, port)],
            stale: cluster,
            stats: RouterStats::default(),
        };
        if cluster {
            router.refresh()?;
        }
        Ok(router)
    }

    /// Whether the store is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The counters.
    pub fn stats(&self) -> RouterStats {
        self.stats
    }

    /// `host:port` of each master, in the order of [`Router::master_of`].
    pub fn masters(&self) -> Vec<String> {
        self.masters
            .iter()
            .map(|m| format!("{}:{}", m.host, m.port))
            .collect()
    }

    /// The index of the master serving `slot`, if any.
    pub fn master_of(&self, slot: u16) -> Option<usize> {
        if !self.cluster {
            return Some(0);
        }
        match self.slots.get(slot as usize) {
            Some(&m) if m != NOBODY => Some(m as usize),
            _ => None,
        }
    }

    /// Reads the slot map (`CLUSTER SLOTS`) from the first node that
    /// answers, keeping the connections of masters that stay masters.
    pub fn refresh(&mut self) -> RedisResult<()> {
        if !self.cluster {
            return Ok(());
        }
        self.stats.refreshes += 1;
        let mut last_error = None;
        let mut reply = None;
        // Masters first (their connections are open), then every node seen.
        let candidates: Vec<(String, u16)> = self
            .masters
            .iter()
            .map(|m| (m.host.clone(), m.port))
            .chain(self.known.iter().cloned())
            .collect();
        for (host, port) in candidates {
            let from_open = self
                .masters
                .iter_mut()
                .find(|m| m.host == host && m.port == port)
                .and_then(|m| m.con.as_mut())
                .map(|con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(con));
            let answer = match from_open {
                Some(answer) => answer,
                None => open(
                    &with_addr(&self.seed, &host, port),
                    self.io_timeout.min(Duration::from_secs(1)),
                    &[],
                )
                .and_then(|mut con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut con)),
            };
            match answer {
                Ok(value) => {
                    reply = Some((value, host, port));
                    break;
                }
                Err(error) => {
                    if let Some(m) = self
                        .masters
                        .iter_mut()
                        .find(|m| m.host == host && m.port == port)
                    {
                        m.con = None;
                    }
                    last_error = Some(error);
                }
            }
        }
        let Some((reply, asked_host, _)) = reply else {
            return Err(last_error.unwrap_or_else(|| error("no Redis Cluster node answers")));
        };
        let ranges = parse_slots(&reply, &asked_host)?;
        let mut masters: Vec<Master> = Vec::new();
        let mut slots = vec![NOBODY; SLOTS as usize];
        for (start, end, (host, port), replicas) in ranges {
            let index = match masters
                .iter()
                .position(|m| m.host == host && m.port == port)
            {
                Some(i) => i,
                None => {
                    let con = self
                        .masters
                        .iter_mut()
                        .find(|m| m.host == host && m.port == port)
                        .and_then(|m| m.con.take());
                    masters.push(Master {
                        host: host.clone(),
                        port,
                        con,
                    });
                    masters.len() - 1
                }
            };
            for slot in start..=end.min(SLOTS - 1) {
                slots[slot as usize] = index as u16;
            }
            for node in std::iter::once((host, port)).chain(replicas) {
                if !self.known.contains(&node) {
                    self.known.push(node);
                }
            }
        }
        let changed = masters != self.masters || (!self.slots.is_empty() && slots != self.slots);
        if changed && !self.slots.is_empty() {
            self.stats.map_changes += 1;
            self.stats.last_map_change_unix_ms = crate::clock::unix_ms();
        }
        if changed {
            tracing::info!(masters = ?masters.iter().map(|m| format!("{}:{}", m.host, m.port)).collect::<Vec<_>>(), "redis cluster: slot map read");
        }
        self.masters = masters;
        self.slots = slots;
        self.stale = false;
        Ok(())
    }

    /// The connection to master `index`, opened (scripts loaded) if needed.
    fn connection(&mut self, index: usize) -> RedisResult<&mut redis::Connection> {
        let master = &mut self.masters[index];
        if master.con.is_none() {
            let info = if self.cluster {
                with_addr(&self.seed, &master.host, master.port)
            } else {
                self.seed.clone()
            };
            master.con = Some(open(&info, self.io_timeout, &self.scripts)?);
        }
        Ok(master.con.as_mut().expect("opened above"))
    }

    /// Records what an error says about the map and the connection.
    fn note(&mut self, index: Option<usize>, error: &RedisError) {
        if error.is_io_error() || error.is_connection_dropped() || error.is_timeout() {
            self.stats.errors += 1;
            if let Some(m) = index.and_then(|i| self.masters.get_mut(i)) {
                m.con = None;
            }
            self.stale = self.cluster;
        } else if matches!(
            error.code(),
            Some("MOVED" | "ASK" | "READONLY" | "CLUSTERDOWN" | "TRYAGAIN")
        ) {
            self.stale = self.cluster;
        }
    }

    /// Runs `f` on the connection of the master serving `slot` (for single
    /// commands and scripts of one slot). An error marks the map stale or
    /// drops the connection, as it says; the caller retries later.
    pub fn with<T>(
        &mut self,
        slot: u16,
        f: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        if self.stale {
            self.refresh()?;
        }
        let Some(index) = self.master_of(slot) else {
            self.stale = true;
            return Err(unserved(slot));
        };
        let result = self.connection(index).and_then(f);
        if let Err(error) = &result {
            self.note(Some(index), error);
        }
        result
    }

    /// Sends `commands` (each with the slot of its keys) as one pipeline
    /// per master and returns each command's reply, in the same order.
    /// Commands refused before they ran (`-MOVED`, `-READONLY`,
    /// `-NOSCRIPT`) are sent again after the map is read again.
    pub fn query(&mut self, commands: &[(u16, &Cmd)]) -> Vec<RedisResult<Value>> {
        let mut replies: Vec<Option<RedisResult<Value>>> = commands.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..commands.len()).collect();
        for _ in 0..ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if self.stale
                && let Err(error) = self.refresh()
            {
                for &i in &pending {
                    replies[i] = Some(Err(error.clone()));
                }
                break;
            }
            let mut by_master: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &i in &pending {
                match self.master_of(commands[i].0) {
                    Some(m) => by_master.entry(m).or_default().push(i),
                    None => {
                        self.stale = true;
                        replies[i] = Some(Err(unserved(commands[i].0)));
                    }
                }
            }
            let mut again = Vec::new();
            for (index, items) in by_master {
                let answers = self.connection(index).and_then(|con| {
                    let mut pipe = redis::pipe();
                    pipe.ignore_errors();
                    for &i in &items {
                        pipe.add_command(commands[i].1.clone());
                    }
                    pipe.query::<Vec<RedisResult<Value>>>(con)
                });
                match answers {
                    Err(error) => {
                        self.note(Some(index), &error);
                        for &i in &items {
                            replies[i] = Some(Err(error.clone()));
                        }
                    }
                    Ok(answers) => {
                        let mut reload = false;
                        for (&i, answer) in items.iter().zip(answers) {
                            if let Err(error) = &answer {
                                match error.code() {
                                    Some("MOVED" | "READONLY") => {
                                        self.stats.redirects += 1;
                                        self.stale = true;
                                        again.push(i);
                                    }
                                    Some("NOSCRIPT") => {
                                        reload = true;
                                        again.push(i);
                                    }
                                    _ => self.note(Some(index), error),
                                }
                            }
                            replies[i] = Some(answer);
                        }
                        if reload {
                            // Reopened with the scripts loaded.
                            self.masters[index].con = None;
                        }
                    }
                }
            }
            again.sort_unstable();
            pending = again;
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(error("not sent"))))
            .collect()
    }
}

/// What one command of [`Router::query_waiting`] got.
#[derive(Debug)]
pub struct Answer {
    /// Its reply.
    pub reply: RedisResult<Value>,
    /// The master that answered it (index into [`Router::masters`]).
    pub master: Option<usize>,
    /// With a `WAIT`: how many replicas of that master had every write of
    /// the pipeline that carried it (`None`: not known).
    pub replicas: Option<i64>,
}

impl Router {
    /// [`Router::query`], then (with `wait = Some((n, timeout))`) `WAIT n
    /// timeout` on every master that answered, on the same connection, so
    /// each answer says how many replicas have it.
    pub fn query_waiting(
        &mut self,
        commands: &[(u16, &Cmd)],
        wait: Option<(u32, Duration)>,
    ) -> Vec<Answer> {
        let replies = self.query(commands);
        let masters: Vec<Option<usize>> =
            commands.iter().map(|(s, _)| self.master_of(*s)).collect();
        let mut counts: BTreeMap<usize, Option<i64>> = BTreeMap::new();
        if let Some((n, timeout)) = wait {
            for (reply, master) in replies.iter().zip(&masters) {
                if let (Ok(_), Some(m)) = (reply, master) {
                    counts.entry(*m).or_insert(None);
                }
            }
            for (&m, count) in counts.iter_mut() {
                *count = self
                    .connection(m)
                    .and_then(|con| {
                        redis::cmd("WAIT")
                            .arg(n)
                            .arg(timeout.as_millis() as u64)
                            .query::<i64>(con)
                    })
                    .ok();
            }
        }
        replies
            .into_iter()
            .zip(masters)
            .map(|(reply, master)| Answer {
                replicas: master.and_then(|m| counts.get(&m).copied().flatten()),
                reply,
                master,
            })
            .collect()
    }

    /// `WAIT n timeout` on the master of `slot`: how many of its replicas
    /// have every write sent to it on this router's connection.
    pub fn wait_replicas(&mut self, slot: u16, n: u32, timeout: Duration) -> RedisResult<i64> {
        self.with(slot, |con| {
            redis::cmd("WAIT")
                .arg(n)
                .arg(timeout.as_millis() as u64)
                .query(con)
        })
    }
}

impl PartialEq for Master {
    fn eq(&self, other: &Master) -> bool {
        self.host == other.host && self.port == other.port
    }
}

fn error(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::Io, what))
}

fn unserved(slot: u16) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Io,
        "CLUSTERDOWN: no known master serves the slot",
        slot.to_string(),
    ))
}

fn open(
    info: &ConnectionInfo,
    io_timeout: Duration,
    scripts: &[Script],
) -> RedisResult<redis::Connection> {
    let client = redis::Client::open(info.clone())?;
    let mut con = client.get_connection_with_timeout(io_timeout)?;
    con.set_read_timeout(Some(io_timeout))?;
    con.set_write_timeout(Some(io_timeout))?;
    redis::cmd("PING").query::<()>(&mut con)?;
    for script in scripts {
        script.load(&mut con)?;
    }
    Ok(con)
}

fn host_port(info: &ConnectionInfo) -> (String, u16) {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            (host.clone(), *port)
        }
        other => (format!("{other:?}"), 0),
    }
}

/// `seed` (password, database, TLS settings) at another node's address.
fn with_addr(seed: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match seed.addr().clone() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure,
            tls_params,
        },
        _ => ConnectionAddr::Tcp(host.to_string(), port),
    };
    seed.clone().set_addr(addr)
}

type Node = (String, u16);

/// One range of `CLUSTER SLOTS`: start, end, master, replicas.
type SlotRange = (u16, u16, Node, Vec<Node>);

/// `CLUSTER SLOTS`: (start, end, master, replicas) per range. An empty
/// host means the node that answered.
fn parse_slots(reply: &Value, asked_host: &str) -> RedisResult<Vec<SlotRange>> {
    let bad = || error("unexpected CLUSTER SLOTS reply");
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let node = |v: &Value| -> Option<Node> {
        let Value::Array(fields) = v else { return None };
        let host = match fields.first()? {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let Value::Int(port) = fields.get(1)? else {
            return None;
        };
        let host = if host.is_empty() || host == "?" {
            asked_host.to_string()
        } else {
            host
        };
        Some((host, u16::try_from(*port).ok()?))
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(items) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(master)) =
            (items.first(), items.get(1), items.get(2).and_then(node))
        else {
            return Err(bad());
        };
        let replicas = items.iter().skip(3).filter_map(node).collect();
        out.push((*start as u16, *end as u16, master, replicas));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn another_node_keeps_the_seeds_password_and_database() {
        use redis::IntoConnectionInfo;
        let seed = "redis://:s3cret@10.0.0.1:7000/0"
            .into_connection_info()
            .unwrap();
        let other = with_addr(&seed, "10.0.0.2", 7001);
        assert_eq!(host_port(&other), ("10.0.0.2".to_string(), 7001));
        assert_eq!(other.redis_settings().password(), Some("s3cret"));
        assert_eq!(other.redis_settings().db(), 0);
        assert_eq!(host_port(&seed), ("10.0.0.1".to_string(), 7000));
    }

    #[test]
    fn another_node_of_a_tls_seed_is_tls_too() {
        use redis::IntoConnectionInfo;
        let seed = "rediss://10.0.0.1:7000".into_connection_info().unwrap();
        let other = with_addr(&seed, "10.0.0.3", 7002);
        assert!(
            matches!(other.addr(), ConnectionAddr::TcpTls { host, port: 7002, .. } if host == "10.0.0.3"),
            "{:?}",
            other.addr()
        );
    }

    #[test]
    fn cluster_slots_replies_are_read_with_replicas() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(30001), bulk("a")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(30004), bulk("d")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk(""), Value::Int(30002), bulk("b")]),
            ]),
        ]);
        let ranges = parse_slots(&reply, "10.0.0.9").unwrap();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].2, ("127.0.0.1".to_string(), 30001));
        assert_eq!(ranges[0].3, vec![("127.0.0.1".to_string(), 30004)]);
        assert_eq!(ranges[1].2, ("10.0.0.9".to_string(), 30002));
        assert!(parse_slots(&Value::Int(1), "x").is_err());
    }
}

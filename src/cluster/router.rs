//! Routes partition commands to the Redis master that holds their slot.
//!
//! `--redis` may name a plain Redis or any node of a Redis Cluster, or
//! several nodes of one Redis Cluster (`redis://a:7000,redis://b:7000`):
//! the first that answers is the seed, and every one is remembered as a
//! node to read the slot map from. Whether it is a Redis Cluster is
//! decided at connect time by `INFO cluster` (`cluster_enabled:1`). A
//! plain Redis is one "master" for every slot, over one connection, and
//! behaves exactly as a single connection did. On a Redis Cluster the
//! router keeps the slot map (`CLUSTER SLOTS`) and one connection per
//! master.
//!
//! [`Router::query`] sends a list of commands, each with the slot of its
//! keys, as one pipeline per master, the pipelines at the same time (one
//! scoped thread per master with commands, so a turn costs the slowest
//! master's round trip), and answers each command in place.
//! [`Router::query_waiting`] ends each pipeline with `WAIT` and says how
//! many replicas acknowledged each command.
//!
//! Ground rules:
//! - Order: commands for one master keep their order in its pipeline. A
//!   command is sent again only when Redis refused it before running it
//!   (`-MOVED`, `-ASK`, `-READONLY` from a demoted master, `-NOSCRIPT`);
//!   Redis refuses every command of a slot in a pipeline alike, so what is
//!   sent again for a slot is a suffix of its commands, in order, and two
//!   writes for the same id (one partition, one slot) are never reordered.
//!   During a migration a master runs the commands whose keys it still
//!   has and answers `-ASK` once they are gone (keys leave and never come
//!   back), so the asked commands of a slot are a suffix of them too.
//! - `-ASK slot host:port` is followed for that command only: `ASKING`
//!   then the command, to the node named, after every pipeline of the
//!   round; the map is not changed. `-TRYAGAIN` from there (a script whose
//!   keys are split by the migration) is the answer; the caller retries.
//! - The map is read again after a redirect, a `-READONLY`, a
//!   `-CLUSTERDOWN`/`-TRYAGAIN`, or any connection error; a connection
//!   that failed is dropped and reopened on next use.
//! - A node whose connection failed (refused, timed out) is not tried
//!   again before a backoff ([`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]),
//!   unless a read of the map finds other masters. Meanwhile its commands
//!   are answered at once with an I/O error (so a caller polling every
//!   50 ms does not wait an I/O timeout each time), and the map is read
//!   from another node every round, to see a failover at once.
//! - Every connection loads the given scripts when it opens (`SCRIPT
//!   LOAD` is not replicated, so a promoted replica may not have them).
//! - The router does blocking I/O on its caller's thread (and on scoped
//!   threads that end before [`Router::query`] returns); each thread that
//!   talks to Redis owns its own router.
//!
//! Why not the `redis` crate's `ClusterConnection`: it routes one command
//! (or a pipeline whose commands all hash to one slot) at a time, so group
//! commit over 128 partitions would pay one round trip per partition
//! instead of one per master, and it retries by itself in ways that could
//! send a write again after it ran.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError, RedisResult, Script, Value,
};

use super::slot::SLOTS;

/// Slot served by no known master.
const NOBODY: u16 = u16::MAX;

/// Attempts of one [`Router::query`] for commands refused before running.
const ATTEMPTS: usize = 4;

/// How long a node whose connection failed is left alone first; each
/// failure in a row doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait before a failed node is tried again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The first Redis version with `WAITAOF` (7.2).
const WAITAOF_SINCE: (u32, u32) = (7, 2);

/// Counters of one router.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouterStats {
    /// Commands refused with `-MOVED`/`-ASK`/`-READONLY` and routed again.
    pub redirects: u64,
    /// Of those, `-ASK` (a slot being migrated).
    pub asks: u64,
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

/// The figures of one master, for `INFO` and `/metrics`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MasterStats {
    /// `host:port`.
    pub addr: String,
    /// The last round trip to it succeeded (or none failed yet).
    pub up: bool,
    /// Pipelines it answered.
    pub batches: u64,
    /// Failed round trips to it (connection errors), and commands answered
    /// at once because it was backing off.
    pub errors: u64,
    /// Its commands refused with `-MOVED`, `-ASK` or `-READONLY`.
    pub redirects: u64,
    /// Unix ms of its last error (0: none).
    pub last_error_unix_ms: u64,
    /// Unix ms when this address became master of slots another master
    /// held (a failover, or slots moved to it; 0: not seen).
    pub last_failover_unix_ms: u64,
    /// Journal writes waiting for this master (filled by the journal
    /// writer; 0 from the router).
    pub backlog: u64,
}

/// The answer to one command of [`Router::query_waiting`].
#[derive(Debug)]
pub struct Answer {
    /// What Redis answered (or why nobody did).
    pub reply: RedisResult<Value>,
    /// The master that answered, as an index into [`Router::masters`]
    /// after the call (`None`: not sent, or answered by a node that is not
    /// a master of the map, after `-ASK`).
    pub master: Option<usize>,
    /// Replicas that acknowledged the pipeline that carried it, by the
    /// `WAIT` at its end (`None`: no `WAIT` sent, or it failed).
    pub replicas: Option<i64>,
}

/// The nodes a router may start from: one URL, or each of a
/// comma-separated list (`redis://a:7000,redis://b:7000`).
#[derive(Debug, Clone)]
pub struct Seeds(pub Vec<ConnectionInfo>);

impl From<ConnectionInfo> for Seeds {
    fn from(seed: ConnectionInfo) -> Seeds {
        Seeds(vec![seed])
    }
}

impl From<Vec<ConnectionInfo>> for Seeds {
    fn from(seeds: Vec<ConnectionInfo>) -> Seeds {
        Seeds(seeds)
    }
}

impl Seeds {
    /// Each URL of a comma-separated list.
    pub fn parse(urls: &str) -> RedisResult<Seeds> {
        let seeds = split_urls(urls)
            .into_iter()
            .map(|url| url.into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        if seeds.is_empty() {
            return Err(error("no Redis URL given"));
        }
        Ok(Seeds(seeds))
    }
}

/// The URLs of a comma-separated `--redis` (spaces around commas ignored).
pub fn split_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// A comma-separated list of URLs with every password masked
/// ([`crate::journal::redacted`] on each).
pub fn redacted_urls(urls: &str) -> String {
    split_urls(urls)
        .into_iter()
        .map(crate::journal::redacted)
        .collect::<Vec<_>>()
        .join(",")
}

type Node = (String, u16);

/// When a node that failed may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    /// Not before this (`None`: the last round trip succeeded).
    until: Option<Instant>,
    /// The wait after the next failure.
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            until: None,
            next: BACKOFF_MIN,
        }
    }
}

impl Backoff {
    fn failed(&mut self, now: Instant) {
        self.until = Some(now + self.next);
        self.next = (self.next * 2).min(BACKOFF_MAX);
    }

    fn waiting(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    batches: u64,
    errors: u64,
    redirects: u64,
    last_error_unix_ms: u64,
    last_failover_unix_ms: u64,
}

struct Master {
    host: String,
    port: u16,
    con: Option<redis::Connection>,
    /// Whether the server behind `con` has `WAITAOF` (`None`: not known).
    waitaof: Option<bool>,
    counts: Counts,
}

impl Master {
    fn node(&self) -> Node {
        (self.host.clone(), self.port)
    }

    fn is(&self, node: &Node) -> bool {
        self.host == node.0 && self.port == node.1
    }
}

/// What opening a connection needs, shared by the sending threads.
struct Settings<'a> {
    seed: &'a ConnectionInfo,
    io_timeout: Duration,
    scripts: &'a [Script],
    cluster: bool,
}

impl Settings<'_> {
    fn info(&self, host: &str, port: u16) -> ConnectionInfo {
        if self.cluster {
            with_addr(self.seed, host, port)
        } else {
            self.seed.clone()
        }
    }

    /// `master`'s connection, opened (scripts loaded, version read) if
    /// needed.
    fn connection<'m>(&self, master: &'m mut Master) -> RedisResult<&'m mut redis::Connection> {
        if master.con.is_none() {
            let mut con = open(
                &self.info(&master.host, master.port),
                self.io_timeout,
                self.scripts,
            )?;
            master.waitaof = Some(server_version(&mut con)? >= WAITAOF_SINCE);
            master.con = Some(con);
        }
        Ok(master.con.as_mut().expect("opened above"))
    }
}

/// A command's reply so far, the node that gave it, and the `WAIT` count
/// of its pipeline.
type Answered = (RedisResult<Value>, Option<Node>, Option<i64>);

/// One pipeline's answers.
struct Sent {
    replies: Vec<RedisResult<Value>>,
    /// What the `WAIT` at its end answered.
    replicas: Option<i64>,
}

/// Sends `commands` (each after `ASKING` if `asking`), then `WAIT`, as one
/// pipeline.
fn send(
    con: &mut redis::Connection,
    io_timeout: Duration,
    commands: &[&Cmd],
    asking: bool,
    wait: Option<(u32, Duration)>,
) -> RedisResult<Sent> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for &command in commands {
        if asking {
            pipe.add_command(redis::cmd("ASKING"));
        }
        pipe.add_command(command.clone());
    }
    if let Some((replicas, timeout)) = wait {
        pipe.add_command(
            redis::cmd("WAIT")
                .arg(replicas)
                .arg(timeout.as_millis() as u64)
                .to_owned(),
        );
        // WAIT blocks up to its timeout before it answers.
        con.set_read_timeout(Some(io_timeout + timeout))?;
    }
    let result = pipe.query::<Vec<RedisResult<Value>>>(con);
    if wait.is_some() {
        con.set_read_timeout(Some(io_timeout))?;
    }
    let mut replies = result?;
    let replicas = match wait {
        Some(_) => match replies.pop() {
            Some(Ok(Value::Int(n))) => Some(n),
            _ => None,
        },
        None => None,
    };
    if asking {
        // Drop the answers to ASKING.
        replies = replies.into_iter().skip(1).step_by(2).collect();
    }
    debug_assert_eq!(
        replies.len(),
        commands.len(),
        "asking={asking}: one answer per command"
    );
    Ok(Sent { replies, replicas })
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
    /// Every node address seen (the seeds first), to read the map from
    /// when masters fail.
    known: Vec<Node>,
    /// Nodes whose last connection failed.
    down: HashMap<Node, Backoff>,
    stale: bool,
    stats: RouterStats,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("cluster", &self.cluster)
            .field("masters", &self.masters())
            .finish()
    }
}

/// Whether the Redis behind `con` is a Redis Cluster (`INFO cluster`).
pub fn is_redis_cluster(con: &mut redis::Connection) -> RedisResult<bool> {
    let info: String = redis::cmd("INFO").arg("cluster").query(con)?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

/// The `(major, minor)` version of the Redis behind `con` (`INFO server`).
fn server_version(con: &mut redis::Connection) -> RedisResult<(u32, u32)> {
    let info: String = redis::cmd("INFO").arg("server").query(con)?;
    Ok(parse_version(&info).unwrap_or((0, 0)))
}

/// `redis_version:7.2.4` in `INFO server` text -> `(7, 2)`.
fn parse_version(info: &str) -> Option<(u32, u32)> {
    let version = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("redis_version:"))?;
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().unwrap_or("0").parse().ok()?;
    Some((major, minor))
}

impl Router {
    /// Connects to the first seed that answers, finds out whether it is a
    /// Redis Cluster, and reads the slot map if so. `scripts` are loaded
    /// on every connection.
    pub fn connect(
        seeds: impl Into<Seeds>,
        io_timeout: Duration,
        scripts: &[&str],
    ) -> RedisResult<Router> {
        let Seeds(seeds) = seeds.into();
        let scripts: Vec<Script> = scripts.iter().map(|s| Script::new(s)).collect();
        let known: Vec<Node> = seeds.iter().map(host_port).collect();
        let mut last_error = None;
        for seed in seeds {
            let opened = open(&seed, io_timeout, &scripts).and_then(|mut con| {
                let cluster = is_redis_cluster(&mut con)?;
                let waitaof = server_version(&mut con)? >= WAITAOF_SINCE;
                Ok((con, cluster, waitaof))
            });
            let (con, cluster, waitaof) = match opened {
                Ok(opened) => opened,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            let (host, port) = host_port(&seed);
            let mut router = Router {
                seed,
                io_timeout,
                scripts,
                cluster,
                slots: Vec::new(),
                masters: vec![Master {
                    host,
                    port,
                    con: Some(con),
                    waitaof: Some(waitaof),
                    counts: Counts::default(),
                }],
                known,
                down: HashMap::new(),
                stale: cluster,
                stats: RouterStats::default(),
            };
            if cluster {
                router.refresh()?;
            }
            return Ok(router);
        }
        Err(last_error.unwrap_or_else(|| error("no Redis URL given")))
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

    /// The figures of each master, in the order of [`Router::masters`].
    pub fn master_stats(&self) -> Vec<MasterStats> {
        self.masters
            .iter()
            .map(|m| MasterStats {
                addr: format!("{}:{}", m.host, m.port),
                up: self.down.get(&m.node()).is_none_or(|b| b.until.is_none()),
                batches: m.counts.batches,
                errors: m.counts.errors,
                redirects: m.counts.redirects,
                last_error_unix_ms: m.counts.last_error_unix_ms,
                last_failover_unix_ms: m.counts.last_failover_unix_ms,
                backlog: 0,
            })
            .collect()
    }

    /// Whether every master whose version is known has `WAITAOF` (Redis
    /// 7.2 or later); `false` while none is known.
    pub fn waitaof_supported(&self) -> bool {
        let known: Vec<bool> = self.masters.iter().filter_map(|m| m.waitaof).collect();
        !known.is_empty() && known.iter().all(|&w| w)
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

    fn backing_off(&self, node: &Node, now: Instant) -> bool {
        self.down.get(node).is_some_and(|b| b.waiting(now))
    }

    /// Records a failed connection to `node`: it is left alone for a while.
    fn node_failed(&mut self, node: &Node) {
        self.down
            .entry(node.clone())
            .or_default()
            .failed(Instant::now());
    }

    fn node_answered(&mut self, node: &Node) {
        self.down.remove(node);
    }

    /// Reads the slot map (`CLUSTER SLOTS`) from the first node that
    /// answers, keeping the connections and figures of masters that stay
    /// masters. Nodes backing off are skipped.
    pub fn refresh(&mut self) -> RedisResult<()> {
        if !self.cluster {
            return Ok(());
        }
        self.stats.refreshes += 1;
        let mut last_error = None;
        let mut reply = None;
        let now = Instant::now();
        // Masters first (their connections are open), then every node seen.
        let mut candidates: Vec<Node> = Vec::new();
        for node in self
            .masters
            .iter()
            .map(Master::node)
            .chain(self.known.clone())
        {
            if !candidates.contains(&node) && !self.backing_off(&node, now) {
                candidates.push(node);
            }
        }
        for node in candidates {
            let from_open = self
                .masters
                .iter_mut()
                .find(|m| m.is(&node))
                .and_then(|m| m.con.as_mut())
                .map(|con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(con));
            let answer = match from_open {
                Some(answer) => answer,
                None => open(
                    &with_addr(&self.seed, &node.0, node.1),
                    self.io_timeout.min(Duration::from_secs(1)),
                    &[],
                )
                .and_then(|mut con| redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut con)),
            };
            match answer {
                Ok(value) => {
                    self.node_answered(&node);
                    reply = Some((value, node.0));
                    break;
                }
                Err(error) => {
                    if let Some(m) = self.masters.iter_mut().find(|m| m.is(&node)) {
                        m.con = None;
                    }
                    if is_connection_error(&error) {
                        self.node_failed(&node);
                    }
                    last_error = Some(error);
                }
            }
        }
        let Some((reply, asked_host)) = reply else {
            return Err(last_error
                .unwrap_or_else(|| error("no Redis Cluster node answers (all backing off)")));
        };
        let ranges = parse_slots(&reply, &asked_host)?;
        let mut masters: Vec<Master> = Vec::new();
        let mut slots = vec![NOBODY; SLOTS as usize];
        let now_ms = crate::clock::unix_ms();
        for (start, end, node, replicas) in ranges {
            let index = match masters.iter().position(|m| m.is(&node)) {
                Some(i) => i,
                None => {
                    let old = self.masters.iter_mut().find(|m| m.is(&node));
                    let (con, waitaof, counts) = match old {
                        Some(m) => (m.con.take(), m.waitaof, m.counts),
                        None => (None, None, Counts::default()),
                    };
                    masters.push(Master {
                        host: node.0.clone(),
                        port: node.1,
                        con,
                        waitaof,
                        counts,
                    });
                    masters.len() - 1
                }
            };
            for slot in start..=end.min(SLOTS - 1) {
                let before = self.slots.get(slot as usize).copied().unwrap_or(NOBODY);
                if before != NOBODY && !self.masters[before as usize].is(&node) {
                    // Another master held it: a failover, or slots moved here.
                    masters[index].counts.last_failover_unix_ms = now_ms;
                }
                slots[slot as usize] = index as u16;
            }
            for node in std::iter::once(node).chain(replicas) {
                if !self.known.contains(&node) {
                    self.known.push(node);
                }
            }
        }
        let changed = masters != self.masters || (!self.slots.is_empty() && slots != self.slots);
        if changed && !self.slots.is_empty() {
            self.stats.map_changes += 1;
            self.stats.last_map_change_unix_ms = now_ms;
            // Whoever serves now is worth trying at once.
            self.down.clear();
        }
        if changed {
            tracing::info!(masters = ?masters.iter().map(|m| format!("{}:{}", m.host, m.port)).collect::<Vec<_>>(), "redis cluster: slot map read");
        }
        self.masters = masters;
        self.slots = slots;
        self.stale = false;
        Ok(())
    }

    /// Records a failed round trip to master `index`: the connection is
    /// dropped and the node backs off on a connection error, and the map
    /// is marked stale as the error says.
    fn note(&mut self, index: Option<usize>, error: &RedisError) {
        if is_connection_error(error) {
            self.stats.errors += 1;
            if let Some(i) = index.filter(|&i| i < self.masters.len()) {
                let m = &mut self.masters[i];
                m.con = None;
                m.counts.errors += 1;
                m.counts.last_error_unix_ms = crate::clock::unix_ms();
                let node = m.node();
                self.node_failed(&node);
            }
            self.stale = self.cluster;
        } else if matches!(
            error.code(),
            Some("MOVED" | "ASK" | "READONLY" | "CLUSTERDOWN" | "TRYAGAIN")
        ) {
            self.stale = self.cluster;
        }
    }

    /// The error a master backing off answers with at once.
    fn unreachable(&mut self, index: usize) -> RedisError {
        let m = &mut self.masters[index];
        m.counts.errors += 1;
        m.counts.last_error_unix_ms = crate::clock::unix_ms();
        // Read the map every round meanwhile: a promoted replica is seen at once.
        self.stale = self.cluster;
        RedisError::from((
            redis::ErrorKind::Io,
            "master unreachable (its last connection failed; backing off)",
            format!("{}:{}", m.host, m.port),
        ))
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
        if self.backing_off(&self.masters[index].node(), Instant::now()) {
            return Err(self.unreachable(index));
        }
        let settings = Settings {
            seed: &self.seed,
            io_timeout: self.io_timeout,
            scripts: &self.scripts,
            cluster: self.cluster,
        };
        let result = settings.connection(&mut self.masters[index]).and_then(f);
        match &result {
            Err(error) => self.note(Some(index), error),
            Ok(_) => {
                let node = self.masters[index].node();
                self.node_answered(&node);
            }
        }
        result
    }

    /// `WAIT n timeout` on the master of `slot`: how many replicas have
    /// every write this router sent it so far (for a take that must
    /// confirm replication before it loads).
    pub fn wait_replicas(&mut self, slot: u16, n: u32, timeout: Duration) -> RedisResult<i64> {
        let io_timeout = self.io_timeout;
        self.with(slot, |con| {
            con.set_read_timeout(Some(io_timeout + timeout))?;
            let replicas = redis::cmd("WAIT")
                .arg(n)
                .arg(timeout.as_millis() as u64)
                .query(con);
            con.set_read_timeout(Some(io_timeout))?;
            replicas
        })
    }

    /// Sends `commands` (each with the slot of its keys) as one pipeline
    /// per master, the masters at the same time, and returns each
    /// command's reply, in the same order. Commands refused before they
    /// ran (`-MOVED`, `-READONLY`, `-NOSCRIPT`) are sent again after the
    /// map is read again; `-ASK` is followed.
    pub fn query(&mut self, commands: &[(u16, &Cmd)]) -> Vec<RedisResult<Value>> {
        self.query_waiting(commands, None)
            .into_iter()
            .map(|a| a.reply)
            .collect()
    }

    /// [`Router::query`], each pipeline ending with `WAIT n timeout` when
    /// `wait` is given: each answer says which master answered it and how
    /// many replicas acknowledged its pipeline.
    pub fn query_waiting(
        &mut self,
        commands: &[(u16, &Cmd)],
        wait: Option<(u32, Duration)>,
    ) -> Vec<Answer> {
        let mut answers: Vec<Option<Answered>> = commands.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..commands.len()).collect();
        for _ in 0..ATTEMPTS {
            if pending.is_empty() {
                break;
            }
            if self.stale
                && let Err(error) = self.refresh()
            {
                for &i in &pending {
                    answers[i] = Some((Err(error.clone()), None, None));
                }
                break;
            }
            let now = Instant::now();
            let mut by_master: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for &i in &pending {
                match self.master_of(commands[i].0) {
                    Some(m) if self.backing_off(&self.masters[m].node(), now) => {
                        let error = self.unreachable(m);
                        answers[i] = Some((Err(error), None, None));
                    }
                    Some(m) => by_master.entry(m).or_default().push(i),
                    None => {
                        self.stale = true;
                        answers[i] = Some((Err(unserved(commands[i].0)), None, None));
                    }
                }
            }
            let batches: Vec<(usize, Vec<usize>)> = by_master.into_iter().collect();
            let results = self.send_all(&batches, commands, wait);
            let mut again = Vec::new();
            let mut asks: Vec<(Node, Vec<usize>)> = Vec::new();
            for ((index, items), result) in batches.into_iter().zip(results) {
                let node = self.masters[index].node();
                let sent = match result {
                    Err(error) => {
                        self.note(Some(index), &error);
                        for &i in &items {
                            answers[i] = Some((Err(error.clone()), None, None));
                        }
                        continue;
                    }
                    Ok(sent) => sent,
                };
                self.node_answered(&node);
                self.masters[index].counts.batches += 1;
                let mut reload = false;
                for (&i, reply) in items.iter().zip(sent.replies) {
                    if let Err(error) = &reply {
                        match error.code() {
                            Some("MOVED" | "READONLY") => {
                                self.redirected(index);
                                self.stale = true;
                                again.push(i);
                            }
                            Some("ASK") => match ask_target(error) {
                                Some(target) => {
                                    self.redirected(index);
                                    self.stats.asks += 1;
                                    match asks.iter_mut().find(|(n, _)| *n == target) {
                                        Some((_, list)) => list.push(i),
                                        None => asks.push((target, vec![i])),
                                    }
                                }
                                None => self.note(Some(index), error),
                            },
                            Some("NOSCRIPT") => {
                                reload = true;
                                again.push(i);
                            }
                            _ => self.note(Some(index), error),
                        }
                    }
                    answers[i] = Some((reply, Some(node.clone()), sent.replicas));
                }
                if reload {
                    // Reopened with the scripts loaded.
                    self.masters[index].con = None;
                }
            }
            for (target, items) in asks {
                self.follow_ask(&target, &items, commands, wait, &mut answers, &mut again);
            }
            again.sort_unstable();
            pending = again;
        }
        answers
            .into_iter()
            .map(|answer| match answer {
                Some((reply, node, replicas)) => Answer {
                    reply,
                    master: node.and_then(|n| self.masters.iter().position(|m| m.is(&n))),
                    replicas,
                },
                None => Answer {
                    reply: Err(error("not sent")),
                    master: None,
                    replicas: None,
                },
            })
            .collect()
    }

    fn redirected(&mut self, index: usize) {
        self.stats.redirects += 1;
        self.masters[index].counts.redirects += 1;
    }

    /// One pipeline per batch (master index, commands), the masters at the
    /// same time: a scoped thread each when there are several.
    fn send_all(
        &mut self,
        batches: &[(usize, Vec<usize>)],
        commands: &[(u16, &Cmd)],
        wait: Option<(u32, Duration)>,
    ) -> Vec<RedisResult<Sent>> {
        let settings = Settings {
            seed: &self.seed,
            io_timeout: self.io_timeout,
            scripts: &self.scripts,
            cluster: self.cluster,
        };
        let mut free: Vec<Option<&mut Master>> = self.masters.iter_mut().map(Some).collect();
        let jobs: Vec<(&mut Master, Vec<&Cmd>)> = batches
            .iter()
            .map(|(index, items)| {
                let master = free[*index].take().expect("one batch per master");
                (master, items.iter().map(|&i| commands[i].1).collect())
            })
            .collect();
        let run = |master: &mut Master, cmds: &[&Cmd]| {
            let con = settings.connection(master)?;
            send(con, settings.io_timeout, cmds, false, wait)
        };
        if jobs.len() <= 1 {
            return jobs
                .into_iter()
                .map(|(master, cmds)| run(master, &cmds))
                .collect();
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(master, cmds)| scope.spawn(move || run(master, &cmds)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(error("a sending thread panicked")))
                })
                .collect()
        })
    }

    /// Sends `items` to `target` (named by `-ASK`), each after `ASKING`.
    fn follow_ask(
        &mut self,
        target: &Node,
        items: &[usize],
        commands: &[(u16, &Cmd)],
        wait: Option<(u32, Duration)>,
        answers: &mut [Option<Answered>],
        again: &mut Vec<usize>,
    ) {
        let cmds: Vec<&Cmd> = items.iter().map(|&i| commands[i].1).collect();
        let io_timeout = self.io_timeout;
        let result = if self.backing_off(target, Instant::now()) {
            Err(RedisError::from((
                redis::ErrorKind::Io,
                "-ASK target unreachable (backing off)",
                format!("{}:{}", target.0, target.1),
            )))
        } else {
            match self.masters.iter().position(|m| m.is(target)) {
                Some(index) => {
                    let settings = Settings {
                        seed: &self.seed,
                        io_timeout,
                        scripts: &self.scripts,
                        cluster: self.cluster,
                    };
                    settings
                        .connection(&mut self.masters[index])
                        .and_then(|con| send(con, io_timeout, &cmds, true, wait))
                }
                None => open(
                    &with_addr(&self.seed, &target.0, target.1),
                    io_timeout,
                    &self.scripts,
                )
                .and_then(|mut con| send(&mut con, io_timeout, &cmds, true, wait)),
            }
        };
        let sent = match result {
            Ok(sent) => sent,
            Err(error) => {
                if is_connection_error(&error) {
                    self.stats.errors += 1;
                    if let Some(m) = self.masters.iter_mut().find(|m| m.is(target)) {
                        m.con = None;
                    }
                    self.node_failed(target);
                }
                for &i in items {
                    answers[i] = Some((Err(error.clone()), None, None));
                }
                return;
            }
        };
        self.node_answered(target);
        for (&i, reply) in items.iter().zip(sent.replies) {
            if let Err(error) = &reply {
                if error.code() == Some("MOVED") {
                    // The migration ended meanwhile: the map says where.
                    self.stats.redirects += 1;
                    self.stale = true;
                    again.push(i);
                } else {
                    self.note(None, error);
                }
            }
            answers[i] = Some((reply, Some(target.clone()), sent.replicas));
        }
    }
}

impl PartialEq for Master {
    fn eq(&self, other: &Master) -> bool {
        self.host == other.host && self.port == other.port
    }
}

fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_timeout()
}

/// The node `-ASK slot host:port` names.
fn ask_target(error: &RedisError) -> Option<Node> {
    if error.code() != Some("ASK") {
        return None;
    }
    parse_node(error.redirect_node()?.0)
}

/// `host:port` (`[v6]:port` too) -> `(host, port)`.
fn parse_node(addr: &str) -> Option<Node> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().ok()?;
    (!host.is_empty() && port != 0).then(|| (host.to_string(), port))
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

/// How long a new connection's own round trips (connect, `PING`, `SCRIPT
/// LOAD`) may take at most: retrying a master that accepts connections but
/// does not answer (paused, cut off) then holds up a turn this long, not a
/// whole I/O timeout.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

fn open(
    info: &ConnectionInfo,
    io_timeout: Duration,
    scripts: &[Script],
) -> RedisResult<redis::Connection> {
    let handshake = io_timeout.min(HANDSHAKE_TIMEOUT);
    let client = redis::Client::open(info.clone())?;
    let mut con = client.get_connection_with_timeout(handshake)?;
    con.set_read_timeout(Some(handshake))?;
    con.set_write_timeout(Some(handshake))?;
    redis::cmd("PING").query::<()>(&mut con)?;
    for script in scripts {
        script.load(&mut con)?;
    }
    con.set_read_timeout(Some(io_timeout))?;
    con.set_write_timeout(Some(io_timeout))?;
    Ok(con)
}

fn host_port(info: &ConnectionInfo) -> Node {
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
    fn ask_redirects_name_the_node() {
        let reply = redis::parse_redis_value(b"-ASK 3999 127.0.0.1:6381\r\n").unwrap();
        let error = reply.extract_error().unwrap_err();
        assert_eq!(ask_target(&error), Some(("127.0.0.1".to_string(), 6381)));
        let moved = redis::parse_redis_value(b"-MOVED 3999 127.0.0.1:6381\r\n")
            .unwrap()
            .extract_error()
            .unwrap_err();
        assert_eq!(ask_target(&moved), None, "MOVED is not ASK");
        assert_eq!(parse_node("[::1]:7000"), Some(("::1".to_string(), 7000)));
        assert_eq!(parse_node("::1:7000"), Some(("::1".to_string(), 7000)));
        assert_eq!(
            parse_node("host.internal:1"),
            Some(("host.internal".to_string(), 1))
        );
        for bad in ["", "host", ":7000", "host:0", "host:65536", "host:x"] {
            assert_eq!(parse_node(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn backoff_doubles_from_min_to_max_and_ends() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert!(!backoff.waiting(now));
        let mut waits = Vec::new();
        for _ in 0..6 {
            backoff.failed(now);
            waits.push(backoff.until.unwrap() - now);
        }
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(waits[0], BACKOFF_MIN);
        assert_eq!(waits[5], BACKOFF_MAX);
        assert!(backoff.waiting(now + BACKOFF_MAX - Duration::from_millis(1)));
        assert!(!backoff.waiting(now + BACKOFF_MAX));
    }

    #[test]
    fn versions_are_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.2.4\r\nredis_git_sha1:0\r\n";
        assert_eq!(parse_version(info), Some((7, 2)));
        assert!(parse_version(info).unwrap() >= WAITAOF_SINCE);
        assert!(parse_version("redis_version:7.0.15\r\n").unwrap() < WAITAOF_SINCE);
        assert!(parse_version("redis_version:8.0.0").unwrap() >= WAITAOF_SINCE);
        assert_eq!(parse_version("redis_version:7"), Some((7, 0)));
        assert_eq!(parse_version("redis_mode:cluster"), None);
        assert_eq!(parse_version("redis_version:x.1"), None);
    }

    #[test]
    fn seed_lists_split_on_commas_and_mask_every_password() {
        assert_eq!(
            split_urls("redis://a:1, redis://b:2,,"),
            ["redis://a:1", "redis://b:2"]
        );
        assert_eq!(split_urls("redis://a:1"), ["redis://a:1"]);
        assert_eq!(
            redacted_urls("redis://:one@a:1/0,rediss://u:two@b:2"),
            "redis://:***@a:1/0,rediss://u:***@b:2"
        );
        let seeds = Seeds::parse("redis://:pw@10.0.0.1:7000,redis://10.0.0.2:7001").unwrap();
        assert_eq!(seeds.0.len(), 2);
        assert_eq!(host_port(&seeds.0[1]), ("10.0.0.2".to_string(), 7001));
        assert_eq!(seeds.0[0].redis_settings().password(), Some("pw"));
        assert!(Seeds::parse(" , ").is_err());
        assert!(Seeds::parse("redis://a:1,nonsense").is_err());
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

//! Cluster mode: several nodes share the order ids by partition, each
//! partition owned by one node at a time through a lease in Redis, every
//! journal write fenced by the partition's epoch.
//!
//! ```text
//!  id ──CRC16──► slot (0..16384) ──► partition p (P contiguous ranges)
//!                                        │ rendezvous over live nodes
//!                                        ▼
//!            preferred owner ──TAKE (lease PX, epoch+1)──► owner: loads {tw:pNNN}:due,
//!            serves p, renews the lease every lease/4, writes through the fenced script
//! ```
//!
//! # Layout
//! - [`slot`]: CRC16, hash tags, partitions of slots.
//! - [`rendezvous`]: which live node should own a partition.
//! - [`membership`]: the heartbeat and the live member list.
//! - [`scripts`]: the Lua scripts and the key layout.
//! - [`lease`]: [`Ownership`], this node's table of held partitions.
//! - [`router`]: one connection per Redis master, commands routed by slot.
//! - `manager`: the thread that heartbeats, takes, renews, hands off and
//!   drops partitions.
//!
//! # Ground rules
//! - Who may write: only a node that holds partition `p` under epoch `e`
//!   tags writes with `e`, and Redis applies a write only while
//!   `{tw:pNNN}:epoch` is still `e` (the check and the write are one
//!   script, on keys of one slot). Taking a partition increments the epoch
//!   in the same script that sets the lease, so once a new owner has taken
//!   `p`, nothing the old one sends changes `p`'s journal.
//! - What the epoch guarantees: the `due` set a new owner loads holds every
//!   write any earlier owner had acknowledged, and nothing an earlier owner
//!   sends afterwards is applied. So an acknowledged `ADD` is never lost,
//!   an acknowledged `CANCEL` never fires into the stream, and the move into
//!   the stream stays exactly once, across any number of failovers.
//! - What the lease is for: liveness, not safety. A node serves `p` only
//!   while its lease has not run out by its own monotonic clock (counted
//!   from when the renewal was sent); leases and membership expire by
//!   Redis's clock, so clock skew between nodes does not matter.
//! - Webhook calls and `SUBSCRIBE fired` messages cannot be fenced: a
//!   failover may run a handler twice (at least once).
//! - The manager thread is the only one that takes, renews, releases and
//!   drops partitions; the engine and journal only read [`Ownership`].

pub mod lease;
mod manager;
pub mod membership;
pub mod rendezvous;
pub mod router;
pub mod scripts;
pub mod slot;

use router::Router;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

pub use lease::{Held, Ownership};
pub use membership::Member;
use scripts::Layout;
use slot::{BadPartitionCount, Partitions};

use crate::engine::Engine;

/// Default lease (`--lease-ms`).
pub const DEFAULT_LEASE: Duration = Duration::from_millis(3000);

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The Redis that holds the leases and the journal: one URL, or
    /// several nodes of one Redis Cluster, comma-separated.
    pub url: String,
    /// `host:port` clients are redirected to for this node's partitions.
    pub announce: String,
    /// Partitions (a power of two); must match what the cluster was
    /// created with.
    pub partitions: u32,
    /// How long a lease lasts; renewed every quarter of it.
    pub lease: Duration,
    /// Prefix inside every hash tag (`{<prefix>p017}`); default `tw:`.
    pub key_prefix: String,
    /// Fired orders go to `<stream>:{tw:pNNN}`.
    pub stream: Option<String>,
    /// How long to keep trying to reach Redis at start.
    pub connect_timeout: Duration,
}

impl ClusterConfig {
    /// The defaults (128 partitions, [`DEFAULT_LEASE`], prefix `tw:`) for
    /// a node announcing `announce` on the Redis at `url`.
    pub fn new(url: impl Into<String>, announce: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            url: url.into(),
            announce: announce.into(),
            partitions: slot::DEFAULT_PARTITIONS as u32,
            lease: DEFAULT_LEASE,
            key_prefix: "tw:".into(),
            stream: None,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// Why a node could not join.
#[derive(Debug)]
pub enum ClusterError {
    /// `--announce` is not `host:port`.
    BadAnnounce(String),
    /// `--partitions` is not a power of two in range.
    BadPartitions(BadPartitionCount),
    /// The cluster in Redis was created with another partition count.
    PartitionMismatch {
        /// What Redis holds.
        stored: u32,
        /// What this node was started with.
        asked: u32,
    },
    /// A live node already announces this address.
    DuplicateAddress(String),
    /// A single-node journal with orders is in the same Redis.
    LegacyJournal {
        /// The single-node `due` key.
        key: String,
        /// Orders in it.
        orders: u64,
    },
    /// Redis could not be reached within the connect timeout.
    Unreachable {
        /// The URL, password masked.
        url: String,
        /// The last error.
        error: String,
    },
    /// Redis answered something unusable.
    Redis(String),
}

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClusterError::BadAnnounce(a) => write!(
                f,
                "cluster: --announce must be HOST:PORT with a port from 1 to 65535, not {a:?}"
            ),
            ClusterError::BadPartitions(e) => write!(f, "cluster: {e}"),
            ClusterError::PartitionMismatch { stored, asked } => write!(
                f,
                "cluster: this cluster was created with --partitions {stored}, not {asked}; \
                 start every node with --partitions {stored}"
            ),
            ClusterError::DuplicateAddress(a) => write!(
                f,
                "cluster: another live node already announces {a}; give each node its own --announce"
            ),
            ClusterError::LegacyJournal { key, orders } => write!(
                f,
                "cluster: {key} holds {orders} orders written by a single node, which cluster mode \
                 does not read; drain them with that node or move them into the partitions first \
                 (docs/cluster.md, \"Moving a single-node journal\")"
            ),
            ClusterError::Unreachable { url, error } => {
                write!(f, "cluster: Redis at {url} is unreachable: {error}")
            }
            ClusterError::Redis(e) => write!(f, "cluster: Redis error: {e}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// Where a command for an id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node serves the id's partition.
    Local,
    /// Another node does: `-MOVED <slot> <addr>`.
    Moved {
        /// The id's hash slot.
        slot: u16,
        /// The owner's `host:port`.
        addr: String,
    },
    /// This node holds the partition but does not serve it right now
    /// (loading, being handed off, fenced): `-TRYAGAIN`.
    TryAgain,
    /// No node holds the partition (its owner died and the lease has not
    /// run out yet, or the cluster is starting): `-CLUSTERDOWN`, on which
    /// cluster clients refresh the slot map and retry.
    Down,
}

/// The owner of a partition, as the lease table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its node id.
    pub id: String,
    /// Its announced `host:port`.
    pub addr: String,
    /// The epoch it holds the partition under.
    pub epoch: u64,
}

/// The lease table, as last read from Redis (every manager round).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Per partition.
    pub owners: Vec<Option<Owner>>,
    /// Live members at the last look.
    pub members: Vec<Member>,
    /// Per partition, the epoch last seen (0: never taken).
    pub epochs: Vec<u64>,
}

/// Cluster figures for `INFO` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// Partitions of the cluster.
    pub partitions: u16,
    /// Partitions held here (serving or closing).
    pub owned: u16,
    /// Partitions being loaded here.
    pub loading: u16,
    /// Partitions with an owner somewhere.
    pub assigned: u16,
    /// Live nodes in the member list.
    pub known_nodes: usize,
    /// Lease renewals that succeeded.
    pub leases_renewed_total: u64,
    /// Partitions dropped because their lease was lost or ran out.
    pub leases_lost_total: u64,
    /// Partitions taken and loaded here.
    pub takeovers_total: u64,
    /// Partitions handed to a node rendezvous prefers.
    pub handoffs_total: u64,
    /// Partitions dropped because Redis fenced off a write.
    pub fenced_total: u64,
    /// Unix ms of the last takeover, and how long its load took.
    pub last_takeover_unix_ms: u64,
    /// How long the last takeover's load took (ms).
    pub last_takeover_ms: u64,
    /// The lease (ms).
    pub lease_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    renewed: AtomicU64,
    lost: AtomicU64,
    takeovers: AtomicU64,
    handoffs: AtomicU64,
    fenced_drops: AtomicU64,
    last_takeover_unix_ms: AtomicU64,
    last_takeover_ms: AtomicU64,
}

struct Shared {
    config: ClusterConfig,
    me: Member,
    ownership: Arc<Ownership>,
    seeds: router::Seeds,
    routing: RwLock<Routing>,
    counters: Counters,
    stop: AtomicBool,
}

/// A node's membership in the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.shared.me.id)
            .field("announce", &self.shared.me.addr)
            .finish()
    }
}

impl Cluster {
    /// Checks the configuration against Redis (the partition count, which
    /// the first node stores; a live node with the same address), without
    /// taking anything yet. Then build the journal with
    /// [`Cluster::ownership`] and the engine, and call [`Cluster::start`].
    pub fn prepare(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        parse_announce(&config.announce)?;
        let partitions = Partitions::new(config.partitions).map_err(ClusterError::BadPartitions)?;
        let layout = Layout::new(&config.key_prefix, config.stream.as_deref());
        let seeds = router::Seeds::parse(&config.url)
            .map_err(|e| ClusterError::Redis(format!("bad URL: {e}")))?;
        let started = Instant::now();
        let mut router = loop {
            match connect_seeds(&seeds, Duration::from_secs(5)) {
                Ok(router) => break router,
                Err(error) if started.elapsed() >= config.connect_timeout => {
                    return Err(ClusterError::Unreachable {
                        url: router::redacted_urls(&config.url),
                        error: error.to_string(),
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "cluster: cannot reach Redis; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        };
        if router.is_cluster() {
            tracing::info!(masters = ?router.masters(), "cluster: the Redis is a Redis Cluster (INFO cluster: cluster_enabled:1); each partition goes to the master of its slot");
        }
        let redis_error = |e: redis::RedisError| ClusterError::Redis(e.to_string());
        let cluster_slot = layout.cluster_slot();
        router
            .with(cluster_slot, |con| {
                redis::cmd("HSETNX")
                    .arg(layout.config())
                    .arg("partitions")
                    .arg(config.partitions)
                    .query::<()>(con)
            })
            .map_err(redis_error)?;
        let stored: u32 = router
            .with(cluster_slot, |con| {
                redis::cmd("HGET")
                    .arg(layout.config())
                    .arg("partitions")
                    .query(con)
            })
            .map_err(redis_error)?;
        if stored != config.partitions {
            return Err(ClusterError::PartitionMismatch {
                stored,
                asked: config.partitions,
            });
        }
        // A journal written by a single node is not read in cluster mode:
        // refuse rather than leave its orders unserved.
        let legacy = format!("{}due", config.key_prefix);
        let legacy_orders: u64 = router
            .with(slot::key_slot(legacy.as_bytes()), |con| {
                redis::cmd("ZCARD").arg(&legacy).query(con)
            })
            .map_err(redis_error)?;
        if legacy_orders > 0 {
            return Err(ClusterError::LegacyJournal {
                key: legacy,
                orders: legacy_orders,
            });
        }
        let lease_ms = config.lease.as_millis() as u64;
        let members = redis::Script::new(scripts::MEMBERS);
        let same_addr = |con: &mut redis::Connection| {
            membership::heartbeat(con, &members, &layout, None, lease_ms)
                .map(|view| view.members.into_iter().find(|m| m.addr == config.announce))
        };
        if let Some(other) = router.with(cluster_slot, same_addr).map_err(redis_error)? {
            // A node killed a moment ago leaves its entry for one lease:
            // only an entry that is still being refreshed is a live twin.
            tracing::info!(id = %other.id, "cluster: a node with this address was seen; waiting one lease to tell a live twin from a dead one");
            let first = router
                .with(cluster_slot, |con| score_of(con, &layout, &other.id))
                .map_err(redis_error)?;
            std::thread::sleep(config.lease + config.lease / 2);
            let later = router
                .with(cluster_slot, |con| score_of(con, &layout, &other.id))
                .map_err(redis_error)?;
            if later.is_some() && later != first {
                return Err(ClusterError::DuplicateAddress(config.announce.clone()));
            }
        }
        let me = Member {
            id: (0..40)
                .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
                .collect(),
            addr: config.announce.clone(),
        };
        tracing::info!(
            id = %me.id,
            announce = %me.addr,
            partitions = config.partitions,
            lease_ms,
            url = %router::redacted_urls(&config.url),
            "cluster: joining"
        );
        Ok(Cluster {
            shared: Arc::new(Shared {
                ownership: Arc::new(Ownership::new(partitions, layout)),
                routing: RwLock::new(Routing {
                    owners: vec![None; partitions.count() as usize],
                    members: Vec::new(),
                    epochs: vec![0; partitions.count() as usize],
                }),
                config,
                me,
                seeds,
                counters: Counters::default(),
                stop: AtomicBool::new(false),
            }),
            thread: Arc::new(Mutex::new(None)),
        })
    }

    /// The table the journal tags and fences writes with.
    pub fn ownership(&self) -> Arc<Ownership> {
        self.shared.ownership.clone()
    }

    /// Starts the manager thread: heartbeats, takes this node's share of
    /// the partitions, loads them into `engine`, and keeps the leases.
    pub fn start(&self, engine: Engine) {
        let mut thread = self.thread.lock();
        if thread.is_none() {
            let shared = self.shared.clone();
            *thread = Some(
                std::thread::Builder::new()
                    .name("timewheel-cluster".into())
                    .spawn(move || manager::run(&shared, &engine))
                    .expect("spawn cluster thread"),
            );
        }
    }

    /// Stops the manager, gives every lease back and leaves the member
    /// list, so that the others take over at once. Call after the engine
    /// has shut down (its last removals flushed).
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.ownership.wake_manager();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
        manager::leave(&self.shared);
    }

    /// This node's id and announced address.
    pub fn me(&self) -> &Member {
        &self.shared.me
    }

    /// The partitions of the cluster.
    pub fn partitions(&self) -> Partitions {
        self.shared.ownership.partitions()
    }

    /// Where a command for `id` goes.
    pub fn route(&self, id: &[u8]) -> Route {
        let slot = slot::key_slot(id);
        let p = self.partitions().of_slot(slot);
        match self.shared.ownership.state(p) {
            Held::Serving(_) => Route::Local,
            Held::Loading | Held::Closing => Route::TryAgain,
            Held::No => match &self.shared.routing.read().owners[p as usize] {
                Some(owner) if owner.id != self.shared.me.id => Route::Moved {
                    slot,
                    addr: owner.addr.clone(),
                },
                Some(_) => Route::TryAgain,
                None => Route::Down,
            },
        }
    }

    /// The lease table as last read (for `CLUSTER SLOTS` and friends).
    pub fn routing(&self) -> Routing {
        self.shared.routing.read().clone()
    }

    /// Contiguous slot ranges with one owner each, in slot order.
    pub fn slot_ranges(&self) -> Vec<(u16, u16, Owner)> {
        let routing = self.shared.routing.read();
        let parts = self.partitions();
        let mut ranges: Vec<(u16, u16, Owner)> = Vec::new();
        for p in parts.iter() {
            let Some(owner) = &routing.owners[p as usize] else {
                continue;
            };
            let slots = parts.slots(p);
            match ranges.last_mut() {
                Some(last) if last.2.id == owner.id && last.1 + 1 == *slots.start() => {
                    last.1 = *slots.end()
                }
                _ => ranges.push((*slots.start(), *slots.end(), owner.clone())),
            }
        }
        ranges
    }

    /// The figures for `INFO` and `/metrics`.
    pub fn stats(&self) -> ClusterStats {
        let own = &self.shared.ownership;
        let parts = own.partitions();
        let (mut owned, mut loading) = (0, 0);
        for p in parts.iter() {
            match own.state(p) {
                Held::Serving(_) | Held::Closing => owned += 1,
                Held::Loading => loading += 1,
                Held::No => {}
            }
        }
        let routing = self.shared.routing.read();
        let c = &self.shared.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        ClusterStats {
            partitions: parts.count(),
            owned,
            loading,
            assigned: routing.owners.iter().filter(|o| o.is_some()).count() as u16,
            known_nodes: routing.members.len(),
            leases_renewed_total: load(&c.renewed),
            leases_lost_total: load(&c.lost),
            takeovers_total: load(&c.takeovers),
            handoffs_total: load(&c.handoffs),
            fenced_total: load(&c.fenced_drops),
            last_takeover_unix_ms: load(&c.last_takeover_unix_ms),
            last_takeover_ms: load(&c.last_takeover_ms),
            lease_ms: self.shared.config.lease.as_millis() as u64,
        }
    }
}

impl ClusterStats {
    /// Every cluster figure once: name, Prometheus kind, help, value; the
    /// server's figures list (section `Cluster` of `INFO`, `/metrics`)
    /// takes them from here.
    pub fn figures(&self) -> [(&'static str, &'static str, &'static str, u64); 12] {
        [
            ("cluster_enabled", "gauge", "1 in cluster mode.", 1),
            (
                "cluster_partitions",
                "gauge",
                "Partitions of the cluster.",
                self.partitions as u64,
            ),
            (
                "cluster_partitions_owned",
                "gauge",
                "Partitions this node holds.",
                self.owned as u64,
            ),
            (
                "cluster_partitions_loading",
                "gauge",
                "Partitions this node is loading.",
                self.loading as u64,
            ),
            (
                "cluster_partitions_assigned",
                "gauge",
                "Partitions with an owner anywhere, by the lease table.",
                self.assigned as u64,
            ),
            (
                "cluster_known_nodes",
                "gauge",
                "Live nodes in the member list.",
                self.known_nodes as u64,
            ),
            (
                "cluster_leases_renewed_total",
                "counter",
                "Lease renewals that succeeded.",
                self.leases_renewed_total,
            ),
            (
                "cluster_leases_lost_total",
                "counter",
                "Partitions dropped because their lease was lost or ran out.",
                self.leases_lost_total,
            ),
            (
                "cluster_takeovers_total",
                "counter",
                "Partitions taken and loaded by this node.",
                self.takeovers_total,
            ),
            (
                "cluster_handoffs_total",
                "counter",
                "Partitions handed to a node rendezvous prefers.",
                self.handoffs_total,
            ),
            (
                "cluster_fenced_total",
                "counter",
                "Partitions dropped because Redis fenced off a write.",
                self.fenced_total,
            ),
            (
                "cluster_last_takeover_ms",
                "gauge",
                "How long the last takeover's load took (ms).",
                self.last_takeover_ms,
            ),
        ]
    }
}

/// `host:port` with a non-empty host and a port from 1 to 65535.
pub fn parse_announce(announce: &str) -> Result<(&str, u16), ClusterError> {
    let bad = || ClusterError::BadAnnounce(announce.to_string());
    let (host, port) = announce.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.contains(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host, port))
}

/// A router over the Redis of `seeds` (a plain Redis or a Redis Cluster),
/// with the scripts the manager sends by hash loaded on every connection.
fn connect_seeds(seeds: &router::Seeds, timeout: Duration) -> redis::RedisResult<Router> {
    Router::connect(seeds.clone(), timeout, &[scripts::RENEW, scripts::TAKE])
}

fn connect(shared: &Shared, timeout: Duration) -> redis::RedisResult<Router> {
    connect_seeds(&shared.seeds, timeout)
}

fn score_of(
    con: &mut redis::Connection,
    layout: &Layout,
    id: &str,
) -> redis::RedisResult<Option<f64>> {
    redis::cmd("ZSCORE").arg(layout.nodes()).arg(id).query(con)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announce_must_be_host_and_port() {
        assert_eq!(
            parse_announce("127.0.0.1:7000").unwrap(),
            ("127.0.0.1", 7000)
        );
        assert_eq!(
            parse_announce("node-1.internal:1").unwrap(),
            ("node-1.internal", 1)
        );
        for bad in [
            "",
            "127.0.0.1",
            ":7000",
            "host:0",
            "host:65536",
            "host:x",
            "a b:1",
        ] {
            assert!(parse_announce(bad).is_err(), "{bad:?}");
        }
    }
}

//! The durable journal: a Redis sorted set the wheel is rebuilt from.
//!
//! ```text
//!  engine (under the shard lock) ──push──► Queue ──► writer thread ──pipeline──► Redis
//!  waiting clients ◄── acked seq + listeners ◄──────────┘
//! ```
//!
//! Layout (see `docs/journal.md`): `<prefix>due` is a sorted set, member =
//! order id, score = deadline (Unix ms); `<prefix>meta` is a hash with the
//! writer's heartbeat `alive_ms`; `<prefix>dead` is a stream of
//! dead-lettered orders.
//!
//! Ground rules:
//! - Every change a client asks for is pushed while the engine holds the
//!   id's shard lock, before memory changes, so the queue holds the writes
//!   for one id in the order memory saw them; the single writer sends them
//!   in queue order over one connection, and Redis applies a pipeline in
//!   order.
//! - Each write gets a sequence number; `acked` is the highest one Redis
//!   has confirmed, and every write at or below it is durable. A client's
//!   reply waits until its write is acked ([`Journal::status`]).
//! - While Redis is unreachable the journal is *down*: client writes are
//!   refused before anything changes in memory ([`Unavailable`]). Writes
//!   queued before it went down stay queued and are sent, in order, after
//!   the writer reconnects; their clients wait for the answer. Removals of
//!   delivered orders are always queued, and so retried after reconnect.
//! - A delivered order is removed only if its score still equals the
//!   deadline that fired, so a later `ADD` of the same id survives.
//! - The writer never takes an engine lock.
//! - A `rediss://` URL is TLS on every connection, the rebuild's too
//!   ([`RedisTls`]); the server's certificate is always verified.
//! - In cluster mode ([`Journal::connect_cluster`]) each write is tagged,
//!   when it is queued, with the epoch under which this node holds the
//!   id's partition, and is sent inside that partition's fenced script
//!   ([`crate::cluster::scripts::APPLY`]): if the epoch moved, Redis
//!   changes nothing, the write is answered [`AckStatus::Fenced`], and the
//!   partition is reported lost. A client write for a partition this node
//!   does not serve is refused before anything changes.

mod bulk;
mod cluster_writer;
mod restore;
mod writer;

/// The single-node journal's move into the stream, for the layout
/// benchmark (`examples/burst_layouts.rs`).
#[doc(hidden)]
pub use writer::DELIVER_LUA;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::cluster::Ownership;
use crate::id::OrderId;

pub use restore::{Restored, RestoredEntry};

/// Where the journal lives and how patient it is.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// `redis://[:password@]host:port/db`, or `rediss://...` for TLS.
    pub url: String,
    /// Certificates for a `rediss://` URL.
    pub tls: RedisTls,
    /// Prefix of every key the journal writes (default `tw:`).
    pub key_prefix: String,
    /// How long to keep trying to reach Redis at start before giving up.
    pub connect_timeout: Duration,
    /// A Redis reply slower than this counts as Redis being lost.
    pub io_timeout: Duration,
    /// How long shutdown waits to flush queued writes to a Redis that is down.
    pub shutdown_grace: Duration,
    /// Close orders into this Redis Stream (`--stream`): a delivered order
    /// is moved from `due` into it, exactly once; `None`: it is removed.
    pub stream: Option<String>,
    /// Cluster mode (`--journal-replicas`): a client write is acknowledged
    /// only once this many replicas of its Redis master have it (`WAIT`);
    /// 0: once the master has it.
    pub replicas: u32,
    /// How long `WAIT` waits for those replicas before the writes are
    /// undone and answered [`AckStatus::NotReplicated`].
    pub replicas_timeout: Duration,
}

impl JournalConfig {
    /// The defaults for `url`: prefix `tw:`, 30 s to connect, 5 s per
    /// reply, 5 s of shutdown grace, no stream.
    pub fn new(url: impl Into<String>) -> JournalConfig {
        JournalConfig {
            url: url.into(),
            tls: RedisTls::default(),
            key_prefix: "tw:".into(),
            connect_timeout: Duration::from_secs(30),
            io_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
            stream: None,
            replicas: 0,
            replicas_timeout: Duration::from_millis(1000),
        }
    }
}

/// TLS settings for a `rediss://` journal URL. With neither set, the
/// server's certificate is checked against the system's CA certificates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM CA certificate(s) to trust instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key, for a Redis with `tls-auth-clients yes`.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl RedisTls {
    fn is_set(&self) -> bool {
        self.ca_cert.is_some() || self.identity.is_some()
    }

    /// The redis crate's form of these files (PEM bytes).
    fn certificates(&self) -> Result<redis::TlsCertificates, crate::tls::TlsError> {
        let client_tls = match &self.identity {
            Some((cert, key)) => {
                // Parse now, for an error that names the file.
                crate::tls::load_certs(cert)?;
                crate::tls::load_key(key)?;
                Some(redis::ClientTlsConfig {
                    client_cert: crate::tls::read(cert)?,
                    client_key: crate::tls::read(key)?,
                })
            }
            None => None,
        };
        let root_cert = match &self.ca_cert {
            Some(ca) => {
                crate::tls::load_roots(ca)?;
                Some(crate::tls::read(ca)?)
            }
            None => None,
        };
        Ok(redis::TlsCertificates {
            client_tls,
            root_cert,
        })
    }

    /// The rebuild connection's configuration (it speaks TLS itself).
    fn client_config(&self) -> Result<rustls::ClientConfig, crate::tls::TlsError> {
        crate::tls::client_config(
            self.ca_cert.as_deref(),
            self.identity
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )
    }
}

/// `url` with its password (if any) replaced by `***`, for log lines and
/// error messages: `redis://user:secret@host/0` -> `redis://user:***@host/0`.
pub fn redacted(url: &str) -> String {
    if url.contains(',') {
        // Several seeds (`--cluster --redis a,b`): each one masked.
        return url.split(',').map(redacted).collect::<Vec<_>>().join(",");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split_once(':').map_or("", |(user, _)| user);
    if !userinfo.contains(':') {
        // `redis://secret@host`: the userinfo alone is the password.
        return format!("{scheme}://***@{host}{path}");
    }
    format!("{scheme}://{user}:***@{host}{path}")
}

/// Why the journal could not be opened or restored.
#[derive(Debug)]
pub enum JournalError {
    /// The URL does not parse.
    BadUrl(String),
    /// A certificate file for `rediss://` could not be used.
    Tls(String),
    /// Redis could not be reached within the connect timeout.
    Unreachable {
        /// The URL, password masked.
        url: String,
        /// The last connection error.
        error: String,
    },
    /// Redis answered something the journal cannot use.
    Redis(String),
}

impl std::fmt::Display for JournalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalError::BadUrl(e) => write!(f, "journal: bad Redis URL: {e}"),
            JournalError::Tls(e) => write!(f, "journal: TLS: {e}"),
            JournalError::Unreachable { url, error } => {
                write!(f, "journal: Redis at {url} is unreachable: {error}")
            }
            JournalError::Redis(e) => write!(f, "journal: Redis error: {e}"),
        }
    }
}

impl std::error::Error for JournalError {}

/// The journal is down (or shutting down): the write was refused and
/// nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// A write's place in the journal; [`Ack::DURABLE`] for writes that needed
/// no journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ack(u64);

impl Ack {
    /// Nothing to wait for.
    pub const DURABLE: Ack = Ack(0);
}

/// Where a write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Redis confirmed it.
    Durable,
    /// Queued or in flight.
    Waiting,
    /// Shutdown gave up on it: it is not known to be in Redis.
    Failed,
    /// Cluster mode: the partition's epoch moved before it was written (the
    /// partition has a new owner): Redis did not take it.
    Fenced,
    /// Cluster mode with `--journal-replicas N`: fewer than N replicas had
    /// it in time, so it was undone on the master (and the partition is
    /// loaded again from Redis): nothing changed.
    NotReplicated,
}

/// One journal write.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `ZADD due deadline id`: schedule or move.
    Put { id: OrderId, deadline_ms: u64 },
    /// `ZREM due id`: cancelled.
    Cancel { id: OrderId },
    /// Delivered: remove if the score is still `deadline_ms`.
    Done { id: OrderId, deadline_ms: u64 },
    /// Move into the stream: if the score is still `deadline_ms`, remove
    /// it and `XADD` it to the stream, in one script (exactly once).
    Deliver {
        id: OrderId,
        deadline_ms: u64,
        fired_ms: u64,
    },
    /// Every attempt failed: remove as `Done`, and record it in `dead`.
    Dead {
        id: OrderId,
        deadline_ms: u64,
        attempts: u32,
        error: String,
        now_ms: u64,
    },
}

/// The Redis keys of one journal.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub due: String,
    pub meta: String,
    pub dead: String,
    pub stream: Option<String>,
}

impl Keys {
    fn new(config: &JournalConfig) -> Keys {
        let prefix = &config.key_prefix;
        Keys {
            due: format!("{prefix}due"),
            meta: format!("{prefix}meta"),
            dead: format!("{prefix}dead"),
            stream: config.stream.clone(),
        }
    }
}

/// Counters shown by `INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Redis is reachable and writes are accepted.
    pub up: bool,
    /// Writes queued or in flight.
    pub backlog: usize,
    /// Writes Redis confirmed.
    pub writes_total: u64,
    /// Pipelines sent (group commits).
    pub batches_total: u64,
    /// Failed round trips (each one leads to a reconnect).
    pub errors_total: u64,
    /// Client writes refused while down.
    pub refused_total: u64,
    /// Cluster mode: writes Redis refused because the partition's epoch
    /// had moved (fencing).
    pub fenced_total: u64,
    /// Cluster mode: client writes undone because fewer than
    /// `--journal-replicas` replicas had them in time.
    pub not_replicated_total: u64,
    /// Cluster mode: partitions held here whose Redis master the writer
    /// cannot reach (their client writes are refused meanwhile).
    pub partitions_down: u64,
    /// Cluster mode: `--journal-replicas`.
    pub replicas: u32,
    /// Times the writer reconnected after losing Redis.
    pub reconnects_total: u64,
    /// Seconds the journal has been down (0 when up).
    pub down_for_s: u64,
    /// Cluster mode (the figures below are shown only then).
    pub cluster: bool,
    /// Cluster mode: Redis masters the writer sends to (1 for a plain Redis).
    pub redis_masters: u64,
    /// Cluster mode: journal calls a Redis Cluster redirected (`-MOVED`,
    /// `-READONLY`) and that were routed again.
    pub redirects_total: u64,
    /// Cluster mode: times the writer read the Redis Cluster slot map.
    pub slot_map_refreshes_total: u64,
    /// Cluster mode: times the slot map read had other masters than the
    /// last one (a failover seen).
    pub slot_map_changes_total: u64,
    /// Cluster mode: Unix ms of the last such change (0: none seen).
    pub last_slot_map_change_unix_ms: u64,
    /// Cluster mode: each Redis master's figures, as of the writer's last
    /// batch.
    pub masters: Vec<crate::cluster::router::MasterStats>,
    /// What the rebuild at start found.
    pub restored: Restored,
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// The queue between the engine and the writer.
struct QueueState {
    ops: VecDeque<Op>,
    /// Cluster mode: the partition epoch of each op in `ops` (empty
    /// otherwise).
    epochs: VecDeque<u64>,
    /// Sequence number of `ops[0]`.
    head_seq: u64,
    up: bool,
    closed: bool,
}

pub(crate) struct Inner {
    config: JournalConfig,
    keys: Keys,
    queue: Mutex<QueueState>,
    /// Wakes the writer when the queue gets work.
    work: Condvar,
    /// Highest sequence number Redis confirmed.
    acked: AtomicU64,
    /// Writes from this sequence number on were given up (shutdown).
    failed_from: AtomicU64,
    /// Woken (with `ack_lock`) whenever `acked` moves.
    ack_lock: Mutex<()>,
    acked_cv: Condvar,
    listeners: Mutex<Vec<Listener>>,
    down_since: Mutex<Option<Instant>>,
    counters: Counters,
    restored: Mutex<Restored>,
    /// Set by restore; the writer takes it over.
    connection: Mutex<Option<redis::Connection>>,
    client: redis::Client,
    /// Every `--redis` URL (cluster mode: the router's seeds).
    seeds: Vec<redis::ConnectionInfo>,
    /// For the rebuild's own connection, with a `rediss://` URL.
    rebuild_tls: Option<Arc<rustls::ClientConfig>>,
    stopping: AtomicBool,
    /// Cluster mode: who holds which partition under which epoch.
    ownership: Option<Arc<Ownership>>,
    /// Cluster mode: writes settled out of queue order: fenced off, not
    /// replicated, or durable while an earlier write still waits for its
    /// master (see [`Journal::status`]).
    outcomes: Mutex<hashbrown::HashMap<u64, AckStatus>>,
    any_outcome: AtomicBool,
    /// Cluster mode: the writer's router, as of its last batch.
    router: Mutex<crate::cluster::router::RouterStats>,
    router_masters: AtomicU64,
    /// Cluster mode: [`crate::cluster::router::Router::master_stats`].
    masters: Mutex<Vec<crate::cluster::router::MasterStats>>,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    batches: AtomicU64,
    errors: AtomicU64,
    refused: AtomicU64,
    reconnects: AtomicU64,
    fenced: AtomicU64,
    not_replicated: AtomicU64,
}

/// A handle on the journal. Cheap to clone.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("due", &self.inner.keys.due)
            .field("acked", &self.inner.acked.load(Ordering::Relaxed))
            .finish()
    }
}

impl Journal {
    /// Connects to Redis, retrying with backoff (and a log line per try)
    /// until `config.connect_timeout` has passed.
    pub fn connect(config: JournalConfig) -> Result<Journal, JournalError> {
        Journal::open(config, None)
    }

    /// [`Journal::connect`] for cluster mode: writes go to the partition
    /// keys of `ownership`'s layout, each fenced by the partition's epoch.
    /// There is no rebuild at start: partitions are loaded as they are
    /// taken ([`crate::cluster`]).
    pub fn connect_cluster(
        config: JournalConfig,
        ownership: Arc<Ownership>,
    ) -> Result<Journal, JournalError> {
        Journal::open(config, Some(ownership))
    }

    fn open(
        config: JournalConfig,
        ownership: Option<Arc<Ownership>>,
    ) -> Result<Journal, JournalError> {
        let tls_url = config.url.starts_with("rediss://");
        if config.tls.is_set() && !tls_url {
            return Err(JournalError::BadUrl(format!(
                "{}: certificates were given, but the URL is not rediss://",
                redacted(&config.url)
            )));
        }
        let certificates = if config.tls.is_set() {
            let certificates = config
                .tls
                .certificates()
                .map_err(|e| JournalError::Tls(e.to_string()))?;
            Some(certificates)
        } else {
            None
        };
        // Several seeds (cluster mode): the first that answers is used.
        let clients = crate::cluster::router::split_urls(&config.url)
            .into_iter()
            .map(|url| match &certificates {
                Some(certificates) => redis::Client::build_with_tls(url, certificates.clone()),
                None => redis::Client::open(url),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JournalError::BadUrl(e.to_string()))?;
        if clients.is_empty() {
            return Err(JournalError::BadUrl("no Redis URL given".into()));
        }
        let seeds: Vec<redis::ConnectionInfo> = clients
            .iter()
            .map(|c| c.get_connection_info().clone())
            .collect();
        let rebuild_tls = if tls_url {
            let tls = config
                .tls
                .client_config()
                .map_err(|e| JournalError::Tls(e.to_string()))?;
            Some(Arc::new(tls))
        } else {
            None
        };
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        let (client, connection) = loop {
            let mut opened = Err(None);
            for client in &clients {
                match writer::open(client, config.io_timeout) {
                    Ok(connection) => {
                        opened = Ok((client.clone(), connection));
                        break;
                    }
                    Err(error) => opened = Err(Some(error)),
                }
            }
            match opened.map_err(|e| e.expect("at least one URL")) {
                Ok(opened) => break opened,
                Err(error) => {
                    let waited = started.elapsed();
                    if waited >= config.connect_timeout {
                        return Err(JournalError::Unreachable {
                            url: redacted(&config.url),
                            error: format!("{error} (gave up after {:.1} s)", waited.as_secs_f64()),
                        });
                    }
                    tracing::warn!(
                        url = %redacted(&config.url),
                        %error,
                        retry_in_ms = wait.as_millis() as u64,
                        give_up_in_s = (config.connect_timeout - waited).as_secs(),
                        "journal: cannot reach Redis; retrying"
                    );
                    std::thread::sleep(wait.min(config.connect_timeout - waited));
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        };
        let mut connection = connection;
        if ownership.is_none()
            && crate::cluster::router::is_redis_cluster(&mut connection).unwrap_or(false)
        {
            // The single-node keys (`tw:due`, `tw:meta`, the stream) hash
            // to different slots, and its scripts touch several of them.
            return Err(JournalError::Redis(format!(
                "{} is a Redis Cluster: the single-node journal needs a plain Redis; \
                 run with --cluster to spread partitions over its masters",
                redacted(&config.url)
            )));
        }
        tracing::info!(url = %redacted(&config.url), prefix = %config.key_prefix, "journal: connected to Redis");
        let keys = Keys::new(&config);
        Ok(Journal {
            inner: Arc::new(Inner {
                config,
                keys,
                queue: Mutex::new(QueueState {
                    ops: VecDeque::new(),
                    epochs: VecDeque::new(),
                    head_seq: 1,
                    up: true,
                    closed: false,
                }),
                work: Condvar::new(),
                acked: AtomicU64::new(0),
                failed_from: AtomicU64::new(u64::MAX),
                ack_lock: Mutex::new(()),
                acked_cv: Condvar::new(),
                listeners: Mutex::new(Vec::new()),
                down_since: Mutex::new(None),
                counters: Counters::default(),
                restored: Mutex::new(Restored::default()),
                connection: Mutex::new(Some(connection)),
                client,
                seeds,
                rebuild_tls,
                stopping: AtomicBool::new(false),
                ownership,
                outcomes: Mutex::new(hashbrown::HashMap::new()),
                any_outcome: AtomicBool::new(false),
                router: Mutex::new(Default::default()),
                router_masters: AtomicU64::new(0),
                masters: Mutex::new(Vec::new()),
            }),
            writer: Arc::new(Mutex::new(None)),
        })
    }

    /// Reads the whole due set in chunks, oldest deadline first, calling
    /// `each` with every entry; logs progress every second. Call once,
    /// before [`Journal::start`].
    pub fn restore(
        &self,
        now_ms: u64,
        each: impl FnMut(RestoredEntry),
    ) -> Result<Restored, JournalError> {
        let mut guard = self.inner.connection.lock();
        let connection = guard
            .as_mut()
            .ok_or_else(|| JournalError::Redis("restore after start".into()))?;
        let restored = restore::run(
            connection,
            self.inner.client.get_connection_info(),
            self.inner.rebuild_tls.clone(),
            self.inner.config.io_timeout,
            &self.inner.keys,
            now_ms,
            each,
        )?;
        *self.inner.restored.lock() = restored.clone();
        Ok(restored)
    }

    /// Starts the writer thread.
    pub fn start(&self) {
        let mut writer = self.writer.lock();
        if writer.is_none() {
            let inner = self.inner.clone();
            *writer = Some(
                std::thread::Builder::new()
                    .name("timewheel-journal".into())
                    .spawn(move || writer::run(&inner))
                    .expect("spawn journal thread"),
            );
        }
    }

    /// Flushes what is queued (waiting up to `shutdown_grace` for a Redis
    /// that is down), then stops the writer. Writes it could not flush are
    /// marked [`AckStatus::Failed`].
    pub fn close(&self) {
        {
            let mut queue = self.inner.queue.lock();
            queue.closed = true;
            self.inner.work.notify_one();
        }
        self.inner.stopping.store(true, Ordering::SeqCst);
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }

    /// Queues a client's write, unless the journal is down or closed.
    /// Call with the id's shard lock held, before changing memory.
    pub(crate) fn push(&self, op: Op) -> Result<Ack, Unavailable> {
        let mut queue = self.inner.queue.lock();
        if !queue.up || queue.closed {
            drop(queue);
            self.inner.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Unavailable);
        }
        let epoch = match &self.inner.ownership {
            Some(ownership) => match ownership.write_epoch(op.id().as_bytes()) {
                Some(epoch) => Some(epoch),
                None => {
                    drop(queue);
                    self.inner.counters.refused.fetch_add(1, Ordering::Relaxed);
                    return Err(Unavailable);
                }
            },
            None => None,
        };
        Ok(enqueue(&self.inner, &mut queue, op, epoch))
    }

    /// Whether this journal runs in cluster mode.
    pub fn is_cluster(&self) -> bool {
        self.inner.ownership.is_some()
    }

    /// The place of the last write queued (see [`Journal::settled_through`]).
    pub fn tail(&self) -> Ack {
        let queue = self.inner.queue.lock();
        Ack(queue.head_seq + queue.ops.len() as u64 - 1)
    }

    /// Settles a fired order whose close-order task succeeded: with a
    /// stream ([`JournalConfig::stream`]) it is moved from `due` into the
    /// stream, exactly once; without, it is removed from `due`. Never
    /// refused: while Redis is down it waits for reconnect, and if the
    /// process dies first the order is still in `due` and fires again
    /// after restart (the move still happens once).
    pub(crate) fn settle(&self, id: OrderId, deadline_ms: u64, fired_ms: u64) {
        let op = if self.inner.keys.stream.is_some() {
            Op::Deliver {
                id,
                deadline_ms,
                fired_ms,
            }
        } else {
            Op::Done { id, deadline_ms }
        };
        self.push_always(op);
    }

    /// The stream fired orders are moved into, if any.
    pub fn stream_key(&self) -> Option<&str> {
        self.inner.config.stream.as_deref()
    }

    /// Queues a removal of a delivered or dead-lettered order. Never
    /// refused: while Redis is down it waits in the queue for reconnect.
    ///
    /// In cluster mode, a removal for a partition this node no longer holds
    /// is dropped: the order is still in the partition's `due` set, and its
    /// new owner fires it (at least once across failovers).
    pub(crate) fn push_always(&self, op: Op) {
        let epoch = match &self.inner.ownership {
            Some(ownership) => match ownership.settle_epoch(op.id().as_bytes()) {
                Some(epoch) => Some(epoch),
                None => {
                    tracing::debug!(
                        ?op,
                        "journal: partition no longer held; its new owner fires this order"
                    );
                    return;
                }
            },
            None => None,
        };
        let mut queue = self.inner.queue.lock();
        if queue.closed {
            drop(queue);
            tracing::warn!(
                ?op,
                "journal: closed; removal not written, so the order fires again after a restart"
            );
            return;
        }
        enqueue(&self.inner, &mut queue, op, epoch);
    }

    /// Where the write `ack` stands. In cluster mode writes may settle out
    /// of queue order (one partition's master failing over does not hold
    /// up the others), so a later write can be settled before an earlier
    /// one: callers that answer in order check each write.
    pub fn status(&self, ack: Ack) -> AckStatus {
        if self.inner.any_outcome.load(Ordering::Acquire)
            && let Some(&status) = self.inner.outcomes.lock().get(&ack.0)
        {
            status
        } else if ack.0 <= self.inner.acked.load(Ordering::Acquire) {
            AckStatus::Durable
        } else if ack.0 >= self.inner.failed_from.load(Ordering::Acquire) {
            AckStatus::Failed
        } else {
            AckStatus::Waiting
        }
    }

    /// Whether every write up to `ack` is settled (durable, refused, or
    /// given up at shutdown).
    pub fn settled_through(&self, ack: Ack) -> bool {
        ack.0 <= self.inner.acked.load(Ordering::Acquire)
            || self.inner.failed_from.load(Ordering::Acquire) != u64::MAX
    }

    /// Blocks until `ack` is durable (`Ok`) or given up (`Err`).
    pub fn wait(&self, ack: Ack) -> Result<(), Unavailable> {
        let mut guard = self.inner.ack_lock.lock();
        loop {
            match self.status(ack) {
                AckStatus::Durable => return Ok(()),
                AckStatus::Failed | AckStatus::Fenced | AckStatus::NotReplicated => {
                    return Err(Unavailable);
                }
                AckStatus::Waiting => self.inner.acked_cv.wait(&mut guard),
            }
        }
    }

    /// Calls `listener` (on the writer thread) each time writes become
    /// durable or fail. It must be quick and must not block.
    pub fn on_ack(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.inner.listeners.lock().push(Box::new(listener));
    }

    /// Whether Redis is reachable and writes are accepted.
    pub fn is_up(&self) -> bool {
        self.inner.queue.lock().up
    }

    /// Health and counters, for `INFO` and `/metrics`.
    pub fn stats(&self) -> JournalStats {
        let (up, backlog) = {
            let queue = self.inner.queue.lock();
            (queue.up, queue.ops.len())
        };
        let c = &self.inner.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let router = *self.inner.router.lock();
        let partitions_down = self
            .inner
            .ownership
            .as_ref()
            .map_or(0, |o| o.journal_down_count());
        JournalStats {
            up: up && partitions_down == 0,
            backlog: backlog + self.in_flight(),
            writes_total: load(&c.writes),
            batches_total: load(&c.batches),
            errors_total: load(&c.errors),
            refused_total: load(&c.refused),
            fenced_total: load(&c.fenced),
            not_replicated_total: load(&c.not_replicated),
            partitions_down,
            replicas: self.inner.config.replicas,
            reconnects_total: load(&c.reconnects),
            down_for_s: self
                .inner
                .down_since
                .lock()
                .map_or(0, |t| t.elapsed().as_secs()),
            cluster: self.inner.ownership.is_some(),
            redis_masters: self.inner.router_masters.load(Ordering::Relaxed),
            redirects_total: router.redirects,
            slot_map_refreshes_total: router.refreshes,
            slot_map_changes_total: router.map_changes,
            last_slot_map_change_unix_ms: router.last_map_change_unix_ms,
            masters: self.inner.masters.lock().clone(),
            restored: self.inner.restored.lock().clone(),
        }
    }

    /// Writes taken by the writer but not yet confirmed.
    fn in_flight(&self) -> usize {
        let head = self.inner.queue.lock().head_seq;
        let acked = self.inner.acked.load(Ordering::Relaxed);
        (head - 1).saturating_sub(acked) as usize
    }

    /// The key of the sorted set of pending orders.
    pub fn due_key(&self) -> &str {
        &self.inner.keys.due
    }

    /// The settings it was opened with.
    pub fn config(&self) -> &JournalConfig {
        &self.inner.config
    }
}

fn enqueue(inner: &Inner, queue: &mut QueueState, op: Op, epoch: Option<u64>) -> Ack {
    debug_assert_eq!(
        epoch.is_some(),
        inner.ownership.is_some(),
        "epoch={epoch:?}: cluster writes carry an epoch, single-node ones none"
    );
    queue.ops.push_back(op);
    if let Some(epoch) = epoch {
        queue.epochs.push_back(epoch);
    }
    let seq = queue.head_seq + queue.ops.len() as u64 - 1;
    if queue.ops.len() == 1 {
        inner.work.notify_one();
    }
    Ack(seq)
}

impl Op {
    pub(crate) fn id(&self) -> &OrderId {
        match self {
            Op::Put { id, .. }
            | Op::Cancel { id }
            | Op::Done { id, .. }
            | Op::Deliver { id, .. }
            | Op::Dead { id, .. } => id,
        }
    }
}

impl Inner {
    /// Records how the writes `seqs` settled, ahead of the `acked`
    /// watermark (before that moves past them).
    fn settled(&self, seqs: impl IntoIterator<Item = u64>, status: AckStatus) {
        let mut outcomes = self.outcomes.lock();
        let before = outcomes.len();
        outcomes.extend(seqs.into_iter().map(|s| (s, status)));
        let added = (outcomes.len() - before) as u64;
        match status {
            AckStatus::Fenced => self.counters.fenced.fetch_add(added, Ordering::Relaxed),
            AckStatus::NotReplicated => self
                .counters
                .not_replicated
                .fetch_add(added, Ordering::Relaxed),
            _ => 0,
        };
        self.any_outcome.store(true, Ordering::Release);
    }

    /// Forgets outcomes the watermark now covers (durable ones) and
    /// refusals nobody can still be waiting for.
    fn prune_outcomes(&self) {
        if !self.any_outcome.load(Ordering::Acquire) {
            return;
        }
        let acked = self.acked.load(Ordering::Acquire);
        let mut outcomes = self.outcomes.lock();
        let floor = acked.saturating_sub(1 << 20);
        outcomes.retain(|&seq, status| {
            if seq <= acked {
                *status != AckStatus::Durable && seq >= floor
            } else {
                true
            }
        });
        if outcomes.is_empty() {
            self.any_outcome.store(false, Ordering::Release);
        }
    }

    /// Cluster mode: the router's figures, with the writes waiting for
    /// each master (by index into [`crate::cluster::router::Router::masters`]),
    /// for [`Journal::stats`].
    fn publish_router_backlog(&self, router: &crate::cluster::router::Router, backlog: &[u64]) {
        *self.router.lock() = router.stats();
        let mut masters = router.master_stats();
        for (master, &waiting) in masters.iter_mut().zip(backlog) {
            master.backlog = waiting;
        }
        *self.masters.lock() = masters;
        self.router_masters
            .store(router.masters().len() as u64, Ordering::Relaxed);
    }

    /// Publishes that every write up to `seq` is durable.
    fn acked_up_to(&self, seq: u64) {
        self.acked.store(seq, Ordering::Release);
        self.notify();
    }

    fn notify(&self) {
        drop(self.ack_lock.lock());
        self.acked_cv.notify_all();
        for listener in self.listeners.lock().iter() {
            listener();
        }
    }

    /// Cluster mode: `down` partitions' masters do not answer; the
    /// journal counts as down (for `INFO`) while any is.
    fn partitions_down(&self, down: u64) {
        let mut since = self.down_since.lock();
        match (down > 0, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => {
                if let Some(t) = since.take() {
                    tracing::info!(
                        down_for_ms = t.elapsed().as_millis() as u64,
                        "journal: every partition's Redis master answers again"
                    );
                }
            }
            _ => {}
        }
    }

    fn set_up(&self, up: bool) {
        let mut queue = self.queue.lock();
        if queue.up == up {
            return;
        }
        queue.up = up;
        drop(queue);
        let mut since = self.down_since.lock();
        if up {
            if let Some(t) = since.take() {
                tracing::info!(
                    down_for_ms = t.elapsed().as_millis() as u64,
                    "journal: Redis is back; accepting writes again"
                );
            }
        } else {
            *since = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn redacted_hides_only_the_password() {
        let cases = [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://:s3cret@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "redis://app:p@ss@word@redis.internal/2",
                "redis://app:***@redis.internal/2",
            ),
            ("redis://token@host", "redis://***@host"),
            ("rediss://u:pw@host:6380", "rediss://u:***@host:6380"),
            (
                "redis+unix:///tmp/redis.sock?db=1",
                "redis+unix:///tmp/redis.sock?db=1",
            ),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redacted(url), want, "{url}");
        }
    }
}

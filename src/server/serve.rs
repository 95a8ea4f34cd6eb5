//! The whole `timewheel serve` process, wired from its settings: the
//! engine (with its journal and sink), the `/metrics` listener (with the
//! operators' page) and the RESP listener, run until `shutdown` fires. `src/bin/timewheel.rs` only parses
//! flags into a [`ServeConfig`] and calls [`serve`].
//!
//! A fired order goes to [`Delivery`]: it is published on the `fired`
//! channel (best effort, once per firing), then handed to the webhook if
//! there is one. With a stream, the journal moves it into the stream once
//! the handler returns `Ok`.
//!
//! Ground rules:
//! - Nothing listens before the engine is built, so with a journal the
//!   wheel is rebuilt before the first client can connect. Cluster mode
//!   binds first (the bound address is what it announces); its partitions
//!   are loaded one by one after start, and their ids are answered
//!   `-TRYAGAIN` / `-CLUSTERDOWN` until then.
//! - A non-loopback address without a password or client certificates
//!   (mutual TLS) is refused unless the operator said `unsafe_no_auth`:
//!   anyone who reaches the port could cancel every pending order.
//! - With TLS, the clients' port and `/metrics` share one [`Acceptor`]:
//!   one certificate, one client CA, one reload.
//! - A journal without a reliable sink (stream or webhook) is refused
//!   unless the operator said `best_effort_delivery`: a fired order would
//!   leave the journal once pushed to whoever is subscribed, which at a
//!   restart is nobody. The log says at start where fired orders go.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::figures::Sources;
use super::hub::Hub;
use super::tls::{Acceptor, TlsConfig};
use super::{Config, Counters, dashboard, metrics};
use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::engine::{DEFAULT_TICK, Engine};
use crate::handler::{Fired, Handler, HandlerResult, RetryPolicy};
use crate::journal::{Journal, JournalConfig, JournalError};
use crate::sink::{WebhookConfig, WebhookError, WebhookSink};
use crate::tls::TlsError;

/// Address `serve` listens on by default.
pub const DEFAULT_BIND: &str = "127.0.0.1:7379";

/// Workers when a webhook is set and `workers` is not: each waits on one
/// HTTP exchange at a time, so they are many and mostly idle.
pub const WEBHOOK_WORKERS: usize = 64;

/// Everything `timewheel serve` is configured with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// `host:port` to listen on; a host name is resolved, port 0 picks a
    /// free port.
    pub bind: String,
    /// Event loop settings (its `tls` is set by `serve` from [`ServeConfig::tls`]).
    pub server: Config,
    /// Serve `bind` (and `/metrics`) over TLS only; `None`: plain TCP.
    pub tls: Option<TlsConfig>,
    /// Each message reloads the TLS certificate files
    /// ([`reload_on_sighup`]); `None`: never.
    pub reload: Option<Receiver<()>>,
    /// Timers fire within one tick after their deadline.
    pub tick: Duration,
    /// Worker threads; `None`: [`WEBHOOK_WORKERS`] with a webhook, else the
    /// engine's default (one per core).
    pub workers: Option<usize>,
    /// How failed close-order attempts are retried.
    pub retry: RetryPolicy,
    /// The durable journal; `None`: timers live in memory only.
    pub journal: Option<JournalConfig>,
    /// Close orders by `POST`ing them here.
    pub webhook: Option<WebhookConfig>,
    /// Serve `GET /metrics` and the operators' page (`GET /`, `GET
    /// /due.json`) on this address.
    pub metrics_bind: Option<SocketAddr>,
    /// Allow a non-loopback `bind` without a password.
    pub unsafe_no_auth: bool,
    /// Cluster mode (needs `journal`; its URL, key prefix and stream are
    /// the cluster's).
    pub cluster: Option<ClusterSettings>,
    /// Allow a journal whose fired orders only go to subscribers.
    pub best_effort_delivery: bool,
}

/// How a node takes part in a cluster (`--cluster`).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `host:port` other nodes redirect clients to; `None`: the bound
    /// address.
    pub announce: Option<String>,
    /// Partitions; must match the cluster's.
    pub partitions: u32,
    /// Partition lease.
    pub lease: Duration,
}

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        let defaults = ClusterConfig::new("", "");
        ClusterSettings {
            announce: None,
            partitions: defaults.partitions,
            lease: defaults.lease,
        }
    }
}

impl Default for ServeConfig {
    fn default() -> ServeConfig {
        ServeConfig {
            bind: DEFAULT_BIND.into(),
            server: Config::default(),
            tls: None,
            reload: None,
            tick: DEFAULT_TICK,
            workers: None,
            retry: RetryPolicy::default(),
            journal: None,
            webhook: None,
            metrics_bind: None,
            unsafe_no_auth: false,
            cluster: None,
            best_effort_delivery: false,
        }
    }
}

/// Why `serve` could not start or stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// A non-loopback address without a password or `unsafe_no_auth`.
    NoPassword {
        /// The address that was refused.
        bind: SocketAddr,
    },
    /// A journal, but neither a stream nor a webhook, and no
    /// `best_effort_delivery`.
    NoReliableSink,
    /// An address did not resolve or could not be bound.
    Bind {
        /// Which listener (`--bind`, `--metrics-bind`).
        flag: &'static str,
        /// The address as given.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The journal could not be opened or rebuilt from.
    Journal(JournalError),
    /// The webhook URL is not usable.
    Webhook(WebhookError),
    /// The TLS certificate or key could not be used.
    Tls(TlsError),
    /// The event loop failed.
    Io(std::io::Error),
    /// Cluster mode could not start.
    Cluster(ClusterError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::NoPassword { bind } => write!(
                f,
                "refusing to listen on {bind} without a password: anyone who can reach it could \
                 cancel every pending order. Set TIMEWHEEL_PASSWORD (or --requirepass), require \
                 client certificates (--tls-ca-cert), bind to 127.0.0.1, or pass --unsafe-no-auth \
                 if a firewall already keeps strangers out"
            ),
            ServeError::NoReliableSink => f.write_str(
                "refusing to start with --redis but no reliable sink: a fired order would only be \
                 pushed to SUBSCRIBE fired connections and then leave the journal, so one that \
                 fires while nobody listens (at a restart, for instance) would be lost. Give \
                 --stream KEY (exactly once into a Redis Stream) or --webhook URL (at least \
                 once), or pass --best-effort-delivery to accept that loss",
            ),
            ServeError::Bind { flag, addr, error } => write!(f, "{flag} {addr}: {error}"),
            ServeError::Journal(error) => error.fmt(f),
            ServeError::Webhook(error) => error.fmt(f),
            ServeError::Tls(error) => write!(f, "--tls-cert: {error}"),
            ServeError::Io(error) => write!(f, "server failed: {error}"),
            ServeError::Cluster(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ServeError {}

/// Runs the server until `shutdown` fires or is dropped; pending timers
/// stay in the journal (or, without one, are dropped with a warning).
pub fn serve(mut config: ServeConfig, shutdown: Receiver<()>) -> Result<(), ServeError> {
    let bind = resolve("--bind", &config.bind)?;
    let mutual_tls = config
        .tls
        .as_ref()
        .is_some_and(|tls| tls.files.client_ca.is_some());
    let authenticated = config.server.requirepass.is_some() || mutual_tls;
    if !bind.ip().is_loopback() && !authenticated && !config.unsafe_no_auth {
        return Err(ServeError::NoPassword { bind });
    }
    if let Some(journal) = &config.journal
        && config.cluster.is_none()
        && crate::cluster::router::split_urls(&journal.url).len() > 1
    {
        return Err(ServeError::Journal(JournalError::BadUrl(format!(
            "{}: several Redis URLs name nodes of one Redis Cluster, for cluster mode \
             (--cluster); without it, give one URL",
            crate::cluster::router::redacted_urls(&journal.url)
        ))));
    }
    tracing::info!("fired orders go {}", where_fired_orders_go(&config)?);
    let tls = start_tls(&mut config, bind)?;
    let hub = Arc::new(Hub::default());
    let counters = Arc::new(Counters::default());
    let bind_listener = || {
        super::bind(bind).map_err(|error| ServeError::Bind {
            flag: "--bind",
            addr: config.bind.clone(),
            error,
        })
    };
    let (early, cluster) = match &config.cluster {
        Some(settings) => {
            let listener = bind_listener()?;
            let local = listener.local_addr().map_err(ServeError::Io)?;
            let cluster = join_cluster(&config, settings, local)?;
            (Some(listener), Some(cluster))
        }
        None => (None, None),
    };
    let engine = build_engine(&config, hub.clone(), cluster.as_ref())?;
    if let Some(cluster) = &cluster {
        cluster.start(engine.clone());
    }
    if let Some(addr) = config.metrics_bind {
        let (engine, hub, counters) = (engine.clone(), hub.clone(), counters.clone());
        let cluster = cluster.clone();
        let (started, io_threads) = (Instant::now(), config.server.io_threads);
        let acceptor = tls.clone();
        serve_metrics(addr, tls.clone(), move |path| {
            let sources = Sources {
                engine: &engine,
                hub: &hub,
                counters: &counters,
                started,
                io_threads,
                tls: acceptor.as_deref(),
                cluster: cluster.as_ref(),
            };
            dashboard::page(path, &sources)
        })?;
    }
    let listener = match early {
        Some(listener) => listener,
        None => bind_listener()?,
    };
    let local = listener.local_addr().map_err(ServeError::Io)?;
    tracing::info!("listening on {local}");
    let server = Config {
        cluster: cluster.clone(),
        ..config.server
    };
    let result =
        super::run(listener, engine, hub, counters, server, shutdown).map_err(ServeError::Io);
    // The engine has shut down (its last removals flushed): hand the
    // partitions over at once instead of letting the leases run out.
    if let Some(cluster) = cluster {
        cluster.shutdown();
    }
    result
}

/// The clients' TLS acceptor, if `--tls-cert` was given (it goes into
/// `config.server` too), with its SIGHUP reload; a warning when a
/// non-loopback `bind` would be plaintext.
fn start_tls(
    config: &mut ServeConfig,
    bind: SocketAddr,
) -> Result<Option<Arc<Acceptor>>, ServeError> {
    let tls = match config.tls.clone() {
        Some(tls) => Some(Arc::new(Acceptor::new(tls).map_err(ServeError::Tls)?)),
        None => {
            if !bind.ip().is_loopback() {
                tracing::warn!(
                    "no --tls-cert: passwords and order ids cross the network to {bind} unencrypted"
                );
            }
            None
        }
    };
    if let Some(reload) = config.reload.take() {
        reload_tls_on(reload, tls.clone())?;
    }
    if let Some(acceptor) = &tls {
        let client_certificates = if acceptor.mutual() {
            "required"
        } else {
            "not asked"
        };
        tracing::info!(
            client_certificates,
            "TLS on; SIGHUP reloads the certificate files"
        );
    }
    config.server.tls = tls.clone();
    Ok(tls)
}

/// Checks the cluster settings against Redis (see [`Cluster::prepare`]).
fn join_cluster(
    config: &ServeConfig,
    settings: &ClusterSettings,
    local: SocketAddr,
) -> Result<Cluster, ServeError> {
    let Some(journal) = &config.journal else {
        return Err(ServeError::Cluster(ClusterError::Redis(
            "cluster mode needs --redis: the leases and the journal live there".into(),
        )));
    };
    let announce = match &settings.announce {
        Some(announce) => announce.clone(),
        None if local.ip().is_unspecified() => {
            return Err(ServeError::Cluster(ClusterError::BadAnnounce(format!(
                "{local} (bound to every interface: pass --announce HOST:PORT)"
            ))));
        }
        None => local.to_string(),
    };
    Cluster::prepare(ClusterConfig {
        partitions: settings.partitions,
        lease: settings.lease,
        key_prefix: journal.key_prefix.clone(),
        stream: journal.stream.clone(),
        connect_timeout: journal.connect_timeout,
        ..ClusterConfig::new(journal.url.clone(), announce)
    })
    .map_err(ServeError::Cluster)
}

/// A channel that closes on the first SIGINT or SIGTERM: the `shutdown`
/// argument of [`serve`] for a process.
pub fn shutdown_on_signals() -> std::io::Result<Receiver<()>> {
    let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::Builder::new()
        .name("timewheel-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "signal received");
                drop(shutdown_tx);
            }
        })?;
    Ok(shutdown_rx)
}

/// A channel that gets a message on every SIGHUP: the
/// [`ServeConfig::reload`] of a process.
pub fn reload_on_sighup() -> std::io::Result<Receiver<()>> {
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded::<()>();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("timewheel-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                if reload_tx.send(()).is_err() {
                    return;
                }
            }
        })?;
    Ok(reload_rx)
}

/// Reloads `tls` on every message of `reload`, on a thread of its own
/// (reading files must not stall an event loop).
fn reload_tls_on(reload: Receiver<()>, tls: Option<Arc<Acceptor>>) -> Result<(), ServeError> {
    std::thread::Builder::new()
        .name("timewheel-reload".into())
        .spawn(move || {
            for () in reload {
                match &tls {
                    // Logs its outcome; a failure keeps the old certificate.
                    Some(acceptor) => drop(acceptor.reload()),
                    None => tracing::info!("reload asked: nothing to reload (no TLS)"),
                }
            }
        })
        .map(drop)
        .map_err(ServeError::Io)
}

/// Where fired orders go, as the start-up log line says it; refuses a
/// journal without a reliable sink unless `best_effort_delivery`.
fn where_fired_orders_go(config: &ServeConfig) -> Result<String, ServeError> {
    let stream = config.journal.as_ref().and_then(|j| j.stream.as_deref());
    Ok(match (stream, &config.webhook) {
        (Some(stream), _) => format!(
            "into the Redis Stream {stream}, exactly once (and to SUBSCRIBE fired, best effort)"
        ),
        // The URL is in the webhook's own line, with any password masked.
        (None, Some(_)) => {
            "to the webhook, at least once (and to SUBSCRIBE fired, best effort)".to_owned()
        }
        (None, None) if config.journal.is_some() && !config.best_effort_delivery => {
            return Err(ServeError::NoReliableSink);
        }
        (None, None) => "only to SUBSCRIBE fired connections, best effort: an order that fires \
                         while nobody listens is not seen by anyone"
            .to_owned(),
    })
}

/// The first address `addr` resolves to.
fn resolve(flag: &'static str, addr: &str) -> Result<SocketAddr, ServeError> {
    let bind_error = |error| ServeError::Bind {
        flag,
        addr: addr.into(),
        error,
    };
    addr.to_socket_addrs()
        .map_err(bind_error)?
        .next()
        .ok_or_else(|| bind_error(std::io::Error::other("resolves to no address")))
}

fn build_engine(
    config: &ServeConfig,
    hub: Arc<Hub>,
    cluster: Option<&Cluster>,
) -> Result<Engine, ServeError> {
    let workers = match (config.workers, &config.webhook) {
        (Some(workers), _) => Some(workers.max(1)),
        (None, Some(_)) => Some(WEBHOOK_WORKERS),
        (None, None) => None,
    };
    let sink = match &config.webhook {
        Some(webhook) => {
            let connections = workers.unwrap_or(WEBHOOK_WORKERS);
            if let Some(host) = crate::tls::plaintext_to_another_host(&webhook.url, "http") {
                tracing::warn!(
                    host,
                    "the webhook URL is http:// to another host: close-order calls cross the \
                     network unencrypted; use https://"
                );
            }
            let mut sink = WebhookSink::new(WebhookConfig {
                connections,
                ..webhook.clone()
            })
            .map_err(ServeError::Webhook)?;
            if let Some(cluster) = cluster {
                sink = sink.with_epochs(cluster.ownership());
            }
            tracing::info!(
                url = %sink.url(),
                workers = connections,
                signed = webhook.signer.is_some(),
                "closing orders through the webhook"
            );
            Some(sink)
        }
        None => None,
    };
    let mut builder = Engine::builder().tick(config.tick).retry(config.retry);
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    match &config.journal {
        Some(journal) => {
            for url in crate::cluster::router::split_urls(&journal.url) {
                if let Some(host) = crate::tls::plaintext_to_another_host(url, "redis") {
                    tracing::warn!(
                        host,
                        "the journal URL is redis:// to another host: order ids and the password \
                         cross the network unencrypted; use rediss://"
                    );
                }
            }
            let journal = match cluster {
                Some(cluster) => Journal::connect_cluster(journal.clone(), cluster.ownership()),
                None => Journal::connect(journal.clone()),
            }
            .map_err(ServeError::Journal)?;
            builder = builder.journal(journal);
        }
        None => {
            tracing::warn!("no --redis given: timers are kept in memory only and are lost on exit")
        }
    }
    builder
        .build(Delivery { hub, sink })
        .map_err(ServeError::Journal)
}

fn serve_metrics(
    addr: SocketAddr,
    tls: Option<Arc<Acceptor>>,
    pages: impl Fn(&str) -> Option<metrics::Page> + Send + 'static,
) -> Result<(), ServeError> {
    let bind_error = |error| ServeError::Bind {
        flag: "--metrics-bind",
        addr: addr.to_string(),
        error,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    let local = listener.local_addr().map_err(ServeError::Io)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    metrics::spawn(listener, tls, pages).map_err(ServeError::Io)?;
    tracing::info!("metrics on {scheme}://{local}/metrics");
    tracing::info!("what falls due when: {scheme}://{local}/");
    Ok(())
}

/// The server's close-order task: tell `SUBSCRIBE fired` connections (best
/// effort, once per firing), then hand the order to the webhook if there is
/// one. With a stream, the engine moves the order into the stream once this
/// returns `Ok`; with neither, publishing is all there is.
#[derive(Debug)]
pub struct Delivery {
    hub: Arc<Hub>,
    sink: Option<WebhookSink>,
}

impl Handler for Delivery {
    fn handle(&self, fired: &Fired) -> HandlerResult {
        // Retries are not firings: subscribers hear of an order once.
        if fired.attempt == 1 {
            self.hub.publish(fired.id.as_bytes());
        }
        match &self.sink {
            Some(sink) => sink.handle(fired),
            None => Ok(()),
        }
    }
    // `dead_letter`: the default `warn` line (WebhookSink keeps it too).
}

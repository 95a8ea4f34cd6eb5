//! `cargo run --release -- serve` starts the order-timeout server on
//! 127.0.0.1:7379. See `timewheel serve --help` for the flags.
//!
//! Parse flags, install logging, build the settings, `server::serve`: the
//! wiring lives in the library (`src/server/serve.rs`), and every default
//! shown by `--help` is the library's own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use timewheel::journal::RedisTls;
use timewheel::server::serve::{ClusterSettings, DEFAULT_BIND};
use timewheel::server::{self, Config, ServeConfig};
use timewheel::sink::{Signer, WebhookConfig};
use timewheel::tls::ServerFiles;
use timewheel::{JournalConfig, RetryPolicy};

/// Shown under every `--help`: what is set outside the flags.
const ENVIRONMENT_HELP: &str = "Every serve flag can also be set by the environment variable shown \
beside it (TIMEWHEEL_*); a flag on the command line wins. Logs go to stderr, filtered by RUST_LOG \
(default: info; for instance RUST_LOG=timewheel=debug).";

#[derive(Parser, Debug)]
#[command(
    name = "timewheel",
    version,
    about = "Close unpaid orders on time",
    after_help = ENVIRONMENT_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the RESP-compatible protocol (redis-cli and Redis client libraries).
    #[command(after_help = ENVIRONMENT_HELP)]
    Serve(ServeArgs),
}

/// The library's defaults, shown by `--help`.
fn defaults() -> (Config, JournalConfig, WebhookConfig, RetryPolicy) {
    (
        Config::default(),
        JournalConfig::new(""),
        WebhookConfig::new(""),
        RetryPolicy::default(),
    )
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis().min(u64::MAX as u128) as u64
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on (host:port); port 0 picks a free port.
    #[arg(long, default_value = DEFAULT_BIND, env = "TIMEWHEEL_BIND")]
    bind: String,
    /// Tick length in milliseconds: timers fire within one tick after their deadline.
    #[arg(long, default_value_t = ms(timewheel::engine::DEFAULT_TICK), value_parser = clap::value_parser!(u64).range(1..=3_600_000), env = "TIMEWHEEL_TICK_MS")]
    tick_ms: u64,
    /// Worker threads running the close-order task [default: number of cores; 64 with --webhook].
    #[arg(long, env = "TIMEWHEEL_WORKERS")]
    workers: Option<usize>,
    /// I/O threads, each with its own event loop.
    #[arg(long, default_value_t = defaults().0.io_threads as u64, value_parser = clap::value_parser!(u64).range(1..=64), env = "TIMEWHEEL_IO_THREADS")]
    io_threads: u64,
    /// Connections accepted at once; more get `-ERR max number of clients reached`.
    #[arg(long, default_value_t = defaults().0.max_clients, env = "TIMEWHEEL_MAX_CLIENTS")]
    max_clients: usize,
    /// Close a client idle for this many seconds (0: never). Subscribers are exempt.
    #[arg(long, default_value_t = 0, env = "TIMEWHEEL_IDLE_TIMEOUT_S")]
    idle_timeout_s: u64,
    /// Bytes of unread `fired` messages after which a subscriber is disconnected.
    #[arg(long, default_value_t = defaults().0.max_subscriber_backlog, env = "TIMEWHEEL_MAX_SUBSCRIBER_BACKLOG")]
    max_subscriber_backlog: usize,
    /// Password clients must send with AUTH (or HELLO 3 AUTH default PASS).
    /// Prefer the environment variable, so it does not show in `ps`.
    #[arg(long, env = "TIMEWHEEL_PASSWORD", hide_env_values = true)]
    requirepass: Option<String>,
    /// Allow a non-loopback --bind without --requirepass or --tls-ca-cert.
    /// Anyone who can reach the port could then cancel every pending order.
    #[arg(long, env = "TIMEWHEEL_UNSAFE_NO_AUTH")]
    unsafe_no_auth: bool,
    /// Serve --bind over TLS only, with this PEM certificate chain (leaf
    /// first); needs --tls-key. Reloaded, with the key, on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        env = "TIMEWHEEL_TLS_CERT"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "TIMEWHEEL_TLS_KEY"
    )]
    tls_key: Option<PathBuf>,
    /// Require every client (and /metrics scraper) to present a certificate
    /// signed by this PEM CA (mutual TLS). Reloaded on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert",
        env = "TIMEWHEEL_TLS_CA_CERT"
    )]
    tls_ca_cert: Option<PathBuf>,
    /// Close a TLS client that has not finished its handshake this many ms
    /// after connecting.
    #[arg(long, default_value_t = ms(server::tls::DEFAULT_HANDSHAKE_TIMEOUT), value_parser = clap::value_parser!(u64).range(1..=600_000), env = "TIMEWHEEL_TLS_HANDSHAKE_TIMEOUT_MS")]
    tls_handshake_timeout_ms: u64,
    /// Redis URL of the durable journal, e.g. redis://127.0.0.1:6380/0, or
    /// rediss://host:6380/0 for TLS. Without it, timers live in memory only and
    /// are lost on exit. A URL with a password (rediss://:PASSWORD@host/0) is
    /// better passed in the environment, out of `ps`; logs show it masked.
    /// With --cluster on a Redis Cluster, several nodes may be given,
    /// comma-separated: the first that answers is used.
    #[arg(long, env = "TIMEWHEEL_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Trust only this PEM CA certificate for a rediss:// --redis (default:
    /// the system's CA certificates).
    #[arg(
        long,
        value_name = "FILE",
        requires = "redis",
        env = "TIMEWHEEL_REDIS_CA_CERT"
    )]
    redis_ca_cert: Option<PathBuf>,
    /// PEM client certificate for a rediss:// --redis that requires one
    /// (Redis's tls-auth-clients); needs --redis-key.
    #[arg(long, value_name = "FILE", requires_all = ["redis", "redis_key"], env = "TIMEWHEEL_REDIS_CERT")]
    redis_cert: Option<PathBuf>,
    /// PEM private key of --redis-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "redis_cert",
        env = "TIMEWHEEL_REDIS_KEY"
    )]
    redis_key: Option<PathBuf>,
    /// Prefix of the journal's Redis keys (`<prefix>due`, `<prefix>meta`, `<prefix>dead`).
    #[arg(long, default_value_t = defaults().1.key_prefix, env = "TIMEWHEEL_KEY_PREFIX")]
    key_prefix: String,
    /// Give up starting if Redis cannot be reached for this many seconds.
    #[arg(long, default_value_t = defaults().1.connect_timeout.as_secs(), env = "TIMEWHEEL_REDIS_CONNECT_TIMEOUT_S")]
    redis_connect_timeout_s: u64,
    /// Close orders by moving each fired one, exactly once, from the journal into
    /// this Redis Stream (`XADD KEY * id .. deadline_ms .. fired_ms ..`). Needs --redis.
    #[arg(long, requires = "redis", env = "TIMEWHEEL_STREAM")]
    stream: Option<String>,
    /// Close orders by POSTing each fired one to this https:// (or http://) URL:
    /// JSON body {"id","deadline_ms","fired_ms","attempt"}, header Idempotency-Key: <id>.
    /// A 2xx reply means closed; anything else is retried (at least once).
    #[arg(
        long,
        value_name = "URL",
        conflicts_with = "stream",
        env = "TIMEWHEEL_WEBHOOK"
    )]
    webhook: Option<String>,
    /// Trust only this PEM CA certificate for an https:// --webhook (default:
    /// the system's CA certificates).
    #[arg(
        long,
        value_name = "FILE",
        requires = "webhook",
        env = "TIMEWHEEL_WEBHOOK_CA_CERT"
    )]
    webhook_ca_cert: Option<PathBuf>,
    /// Sign every webhook call with this secret (at least 16 bytes): header
    /// Timewheel-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<body>">.
    /// Prefer the environment variable, so it does not show in `ps`.
    #[arg(
        long,
        env = "TIMEWHEEL_WEBHOOK_SECRET",
        hide_env_values = true,
        requires = "webhook"
    )]
    webhook_secret: Option<String>,
    /// During a secret rotation, the secret being retired: calls then carry
    /// a second v1= signed with it.
    #[arg(
        long,
        env = "TIMEWHEEL_WEBHOOK_SECRET_PREVIOUS",
        hide_env_values = true,
        requires = "webhook_secret"
    )]
    webhook_secret_previous: Option<String>,
    /// With --redis and neither --stream nor --webhook: accept that fired orders only go
    /// to `SUBSCRIBE fired` connections, best effort. An order that fires while nobody
    /// listens (at a restart, for instance) then leaves the journal unseen. Without this
    /// flag the server refuses to start in that configuration.
    #[arg(long, env = "TIMEWHEEL_BEST_EFFORT_DELIVERY")]
    best_effort_delivery: bool,
    /// A webhook exchange (connect, request, reply) slower than this is a failed attempt.
    #[arg(long, default_value_t = ms(defaults().2.timeout), value_parser = clap::value_parser!(u64).range(1..=600_000), env = "TIMEWHEEL_WEBHOOK_TIMEOUT_MS")]
    webhook_timeout_ms: u64,
    /// Attempts per order, the first included, before it is dead-lettered.
    #[arg(long, default_value_t = defaults().3.max_attempts, value_parser = clap::value_parser!(u32).range(1..=1000), env = "TIMEWHEEL_MAX_ATTEMPTS")]
    max_attempts: u32,
    /// Wait before the first retry; it doubles per attempt up to --retry-max-ms,
    /// scaled by a random factor in [0.5, 1]. The defaults spread 10 attempts over about an hour.
    #[arg(long, default_value_t = ms(defaults().3.initial), value_parser = clap::value_parser!(u64).range(1..), env = "TIMEWHEEL_RETRY_INITIAL_MS")]
    retry_initial_ms: u64,
    /// Longest wait between two attempts.
    #[arg(long, default_value_t = ms(defaults().3.max), value_parser = clap::value_parser!(u64).range(1..), env = "TIMEWHEEL_RETRY_MAX_MS")]
    retry_max_ms: u64,
    /// Serve the INFO timer and delivery figures in the Prometheus text format
    /// at http://ADDR/metrics, and the operators' page (what falls due when)
    /// at http://ADDR/ (read-only, counters only); https:// with --tls-cert,
    /// with the same certificate and client CA as the clients' port.
    #[arg(long, value_name = "ADDR", env = "TIMEWHEEL_METRICS_BIND")]
    metrics_bind: Option<SocketAddr>,
    /// Cluster mode: share the order ids with the other nodes using the same
    /// --redis, each owning a share of the partitions by lease; ids of
    /// partitions owned elsewhere are answered -MOVED. See docs/cluster.md.
    #[arg(long, requires = "redis", env = "TIMEWHEEL_CLUSTER")]
    cluster: bool,
    /// Cluster mode: HOST:PORT other nodes send clients to [default: the bound address].
    #[arg(
        long,
        value_name = "HOST:PORT",
        requires = "cluster",
        env = "TIMEWHEEL_ANNOUNCE"
    )]
    announce: Option<String>,
    /// Cluster mode: partitions (a power of two), fixed when the cluster is created.
    #[arg(long, default_value_t = ClusterSettings::default().partitions, requires = "cluster", env = "TIMEWHEEL_PARTITIONS")]
    partitions: u32,
    /// Cluster mode: partition lease; a dead node's partitions move after about this long.
    #[arg(long, default_value_t = ms(ClusterSettings::default().lease),
          value_parser = clap::value_parser!(u64).range(100..=600_000), requires = "cluster", env = "TIMEWHEEL_LEASE_MS")]
    lease_ms: u64,
    /// Cluster mode: acknowledge a client write only once this many replicas of its
    /// Redis master have it (`WAIT`); writes that miss it are undone and refused.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=16), requires = "cluster", env = "TIMEWHEEL_JOURNAL_REPLICAS")]
    journal_replicas: u32,
    /// Cluster mode: how long `WAIT` waits for `--journal-replicas` replicas.
    #[arg(long, default_value_t = ms(defaults().1.replicas_timeout),
          value_parser = clap::value_parser!(u64).range(1..=60_000), requires = "cluster", env = "TIMEWHEEL_JOURNAL_REPLICAS_TIMEOUT_MS")]
    journal_replicas_timeout_ms: u64,
    /// A Redis round trip slower than this counts as Redis being lost.
    #[arg(long, default_value_t = ms(defaults().1.io_timeout), value_parser = clap::value_parser!(u64).range(10..), env = "TIMEWHEEL_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: u64,
}

impl ServeArgs {
    /// The settings; an `Err` is a flag value the library refuses (a short
    /// webhook secret).
    fn into_config(self) -> Result<ServeConfig, String> {
        let journal = self.redis.map(|url| JournalConfig {
            key_prefix: self.key_prefix,
            connect_timeout: Duration::from_secs(self.redis_connect_timeout_s),
            io_timeout: Duration::from_millis(self.redis_timeout_ms),
            stream: self.stream,
            replicas: self.journal_replicas,
            replicas_timeout: Duration::from_millis(self.journal_replicas_timeout_ms),
            tls: RedisTls {
                ca_cert: self.redis_ca_cert,
                identity: self.redis_cert.zip(self.redis_key),
            },
            ..JournalConfig::new(url)
        });
        let secrets: Vec<String> = [self.webhook_secret, self.webhook_secret_previous]
            .into_iter()
            .flatten()
            .collect();
        let signer = match secrets.is_empty() {
            true => None,
            false => Some(Signer::new(&secrets).map_err(|e| e.to_string())?),
        };
        let webhook = self.webhook.map(|url| WebhookConfig {
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            ca_cert: self.webhook_ca_cert,
            signer,
            ..WebhookConfig::new(url)
        });
        let tls = self
            .tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| server::tls::TlsConfig {
                files: ServerFiles {
                    cert,
                    key,
                    client_ca: self.tls_ca_cert,
                },
                handshake_timeout: Duration::from_millis(self.tls_handshake_timeout_ms),
            });
        Ok(ServeConfig {
            bind: self.bind,
            server: Config {
                io_threads: self.io_threads as usize,
                max_clients: self.max_clients,
                idle_timeout: (self.idle_timeout_s > 0)
                    .then(|| Duration::from_secs(self.idle_timeout_s)),
                max_subscriber_backlog: self.max_subscriber_backlog,
                requirepass: self.requirepass.filter(|p| !p.is_empty()),
                tls: None,
                cluster: None,
            },
            tls,
            reload: None,
            tick: Duration::from_millis(self.tick_ms),
            workers: self.workers,
            retry: RetryPolicy {
                initial: Duration::from_millis(self.retry_initial_ms),
                max: Duration::from_millis(self.retry_max_ms.max(self.retry_initial_ms)),
                max_attempts: self.max_attempts,
                jitter: true,
            },
            journal,
            webhook,
            metrics_bind: self.metrics_bind,
            unsafe_no_auth: self.unsafe_no_auth,
            cluster: self.cluster.then(|| ClusterSettings {
                announce: self.announce,
                partitions: self.partitions,
                lease: Duration::from_millis(self.lease_ms),
            }),
            best_effort_delivery: self.best_effort_delivery,
        })
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match Cli::parse().command {
        Command::Serve(args) => args.into_config().and_then(|mut config| {
            let shutdown = server::shutdown_on_signals()
                .map_err(|e| format!("cannot install signal handlers: {e}"))?;
            // Always: a stray SIGHUP must not kill the server.
            config.reload = Some(
                server::reload_on_sighup()
                    .map_err(|e| format!("cannot install signal handlers: {e}"))?,
            );
            server::serve(config, shutdown).map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => {
            tracing::info!("bye");
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            // One clear line, not a backtrace, whatever RUST_BACKTRACE says.
            eprintln!("Error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

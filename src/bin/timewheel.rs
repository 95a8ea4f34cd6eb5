//! `cargo run --release -- serve` starts the order-timeout server on
//! 127.0.0.1:7379. See `timewheel serve --help` for the flags.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use timewheel::cluster::{Cluster, ClusterConfig};
use timewheel::server::{self, Config, hub::Hub};
use timewheel::sink::{WebhookConfig, WebhookSink};
use timewheel::{Engine, Fired, Handler, HandlerResult, Journal, JournalConfig, RetryPolicy};

/// Workers when `--webhook` is given and `--workers` is not: each waits on
/// one HTTP exchange at a time, so they are many and mostly idle.
const WEBHOOK_WORKERS: usize = 64;

#[derive(Parser, Debug)]
#[command(name = "timewheel", version, about = "Close unpaid orders on time")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the RESP-compatible protocol (redis-cli, redis clients, nc).
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:7379")]
    bind: SocketAddr,
    /// Tick length in milliseconds: timers fire within one tick after their deadline.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    tick_ms: u64,
    /// Worker threads running the close-order task [default: number of cores; 64 with --webhook].
    #[arg(long)]
    workers: Option<usize>,
    /// I/O threads, each with its own event loop.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    io_threads: u64,
    /// Connections accepted at once; more get `-ERR max number of clients reached`.
    #[arg(long, default_value_t = 10_000)]
    max_clients: usize,
    /// Close a client idle for this many seconds (0: never). Subscribers are exempt.
    #[arg(long, default_value_t = 0)]
    idle_timeout_s: u64,
    /// Bytes of unread `fired` messages after which a subscriber is disconnected.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    max_subscriber_backlog: usize,
    /// Password clients must send with AUTH (or HELLO 3 AUTH default PASS).
    /// Prefer the environment variable, so it does not show in `ps`.
    #[arg(long, env = "TIMEWHEEL_PASSWORD", hide_env_values = true)]
    requirepass: Option<String>,
    /// Allow a non-loopback --bind without --requirepass. Anyone who can reach
    /// the port could then cancel every pending order.
    #[arg(long)]
    unsafe_no_auth: bool,
    /// Redis URL of the durable journal, e.g. redis://127.0.0.1:6379/0. Without
    /// it, timers live in memory only and are lost on exit. A URL with a password
    /// (redis://:PASSWORD@host/0) is better passed in the environment, out of `ps`;
    /// logs show it with the password masked.
    #[arg(long, env = "TIMEWHEEL_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Prefix of the journal's Redis keys (`<prefix>due`, `<prefix>meta`, `<prefix>dead`).
    #[arg(long, default_value = "tw:")]
    key_prefix: String,
    /// Give up starting if Redis cannot be reached for this many seconds.
    #[arg(long, default_value_t = 30)]
    redis_connect_timeout_s: u64,
    /// Close orders by moving each fired one, exactly once, from the journal into
    /// this Redis Stream (`XADD KEY * id .. deadline_ms .. fired_ms ..`). Needs --redis.
    #[arg(long, requires = "redis")]
    stream: Option<String>,
    /// Close orders by POSTing each fired one to this http:// URL: JSON body
    /// {"id","deadline_ms","fired_ms","attempt"}, header Idempotency-Key: <id>.
    /// A 2xx reply means closed; anything else is retried (at least once).
    #[arg(long, value_name = "URL", conflicts_with = "stream")]
    webhook: Option<String>,
    /// A webhook exchange (connect, request, reply) slower than this is a failed attempt.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    webhook_timeout_ms: u64,
    /// Attempts per order, the first included, before it is dead-lettered.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_attempts: u32,
    /// Wait before the first retry; it doubles per attempt up to --retry-max-ms,
    /// scaled by a random factor in [0.5, 1]. The defaults spread 10 attempts over about an hour.
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u64).range(1..))]
    retry_initial_ms: u64,
    /// Longest wait between two attempts.
    #[arg(long, default_value_t = 1_800_000, value_parser = clap::value_parser!(u64).range(1..))]
    retry_max_ms: u64,
    /// Serve the INFO timer and delivery figures in the Prometheus text format
    /// at http://ADDR/metrics (unauthenticated, read-only).
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<SocketAddr>,
    /// Cluster mode: share the order ids with the other nodes using the same
    /// --redis, each owning a share of the partitions by lease; ids of
    /// partitions owned elsewhere are answered -MOVED. See docs/cluster.md.
    #[arg(long, requires = "redis")]
    cluster: bool,
    /// Cluster mode: HOST:PORT other nodes send clients to [default: the bound address].
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    announce: Option<String>,
    /// Cluster mode: partitions (a power of two), fixed when the cluster is created.
    #[arg(long, default_value_t = timewheel::cluster::slot::DEFAULT_PARTITIONS as u32, requires = "cluster")]
    partitions: u32,
    /// Cluster mode: partition lease; a dead node's partitions move after about this long.
    #[arg(long, default_value_t = timewheel::cluster::DEFAULT_LEASE.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(100..=600_000), requires = "cluster")]
    lease_ms: u64,
    /// A Redis round trip slower than this counts as Redis being lost.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(10..))]
    redis_timeout_ms: u64,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One clear line, not a backtrace, whatever RUST_BACKTRACE says.
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let requirepass = args.requirepass.filter(|p| !p.is_empty());
    if !args.bind.ip().is_loopback() && requirepass.is_none() && !args.unsafe_no_auth {
        bail!(
            "refusing to listen on {} without a password: anyone who can reach it could cancel \
             every pending order. Set TIMEWHEEL_PASSWORD (or --requirepass), bind to 127.0.0.1, \
             or pass --unsafe-no-auth if a firewall already keeps strangers out",
            args.bind
        );
    }
    let hub = Arc::new(Hub::default());
    // Without --workers: WEBHOOK_WORKERS with --webhook, else the engine's
    // default (the number of cores).
    let workers = match (args.workers, &args.webhook) {
        (Some(workers), _) => Some(workers.max(1)),
        (None, Some(_)) => Some(WEBHOOK_WORKERS),
        (None, None) => None,
    };
    let sink = match &args.webhook {
        Some(url) => {
            let connections = workers.unwrap_or(WEBHOOK_WORKERS);
            let sink = WebhookSink::new(WebhookConfig {
                timeout: Duration::from_millis(args.webhook_timeout_ms),
                connections,
                ..WebhookConfig::new(url.clone())
            })?;
            tracing::info!(url = %sink.url(), workers = connections, "closing orders through the webhook");
            Some(sink)
        }
        None => None,
    };
    let mut builder = Engine::builder()
        .tick(Duration::from_millis(args.tick_ms))
        .retry(RetryPolicy {
            initial: Duration::from_millis(args.retry_initial_ms),
            max: Duration::from_millis(args.retry_max_ms.max(args.retry_initial_ms)),
            max_attempts: args.max_attempts,
            jitter: true,
        });
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    // Bound first: in cluster mode the address is announced to the others.
    let listener = server::bind(args.bind).with_context(|| format!("bind {}", args.bind))?;
    let local = listener.local_addr()?;
    let cluster = match (&args.redis, args.cluster) {
        (Some(url), true) => {
            let announce = match &args.announce {
                Some(announce) => announce.clone(),
                None if local.ip().is_unspecified() => bail!(
                    "--cluster with --bind {local} needs --announce HOST:PORT: other nodes \
                     send clients to that address"
                ),
                None => local.to_string(),
            };
            Some(Cluster::prepare(ClusterConfig {
                partitions: args.partitions,
                lease: Duration::from_millis(args.lease_ms),
                key_prefix: args.key_prefix.clone(),
                stream: args.stream.clone(),
                connect_timeout: Duration::from_secs(args.redis_connect_timeout_s),
                ..ClusterConfig::new(url.clone(), announce)
            })?)
        }
        _ => None,
    };
    match &args.redis {
        Some(url) => {
            let config = JournalConfig {
                key_prefix: args.key_prefix.clone(),
                connect_timeout: Duration::from_secs(args.redis_connect_timeout_s),
                io_timeout: Duration::from_millis(args.redis_timeout_ms),
                stream: args.stream.clone(),
                ..JournalConfig::new(url.clone())
            };
            let journal = match &cluster {
                Some(cluster) => Journal::connect_cluster(config, cluster.ownership())?,
                None => Journal::connect(config)?,
            };
            builder = builder.journal(journal);
        }
        None => {
            tracing::warn!("no --redis given: timers are kept in memory only and are lost on exit")
        }
    }
    let engine = builder.try_build(ServeHandler {
        hub: hub.clone(),
        sink,
    })?;
    if let Some(cluster) = &cluster {
        cluster.start(engine.clone());
    }

    if let Some(addr) = args.metrics_bind {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("bind --metrics-bind {addr}"))?;
        let local = listener.local_addr()?;
        let (engine, hub, cluster) = (engine.clone(), hub.clone(), cluster.clone());
        server::metrics::spawn(listener, move || {
            let published = hub.published_total.load(Ordering::Relaxed);
            let mut text = server::metrics::render(
                &engine.stats(),
                published,
                engine.journal_stats().as_ref(),
            );
            if let Some(cluster) = &cluster {
                text.push_str(&cluster.stats().metrics_text());
            }
            text
        })?;
        tracing::info!("metrics on http://{local}/metrics");
    }
    tracing::info!("listening on {local}");

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

    let config = Config {
        io_threads: args.io_threads as usize,
        max_clients: args.max_clients,
        idle_timeout: (args.idle_timeout_s > 0).then(|| Duration::from_secs(args.idle_timeout_s)),
        max_subscriber_backlog: args.max_subscriber_backlog,
        requirepass,
        cluster: cluster.clone(),
    };
    server::run(listener, engine, hub, config, shutdown_rx).context("server failed")?;
    // The engine has shut down (its last removals flushed): hand the
    // partitions over at once instead of letting the leases run out.
    if let Some(cluster) = cluster {
        cluster.shutdown();
    }
    tracing::info!("bye");
    Ok(())
}

/// The server's close-order task: tell `SUBSCRIBE fired` connections (best
/// effort, once per firing), then hand the order to the webhook if there is
/// one. With --stream, the engine moves the order into the stream once this
/// returns `Ok`; with neither, publishing is all there is.
struct ServeHandler {
    hub: Arc<Hub>,
    sink: Option<WebhookSink>,
}

impl Handler for ServeHandler {
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

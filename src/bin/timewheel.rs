//! `cargo run --release -- serve` starts the order-timeout server on
//! 127.0.0.1:7379. See `timewheel serve --help` for the flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use timewheel::journal::RedisTls;
use timewheel::server::{self, Config, hub::Hub};
use timewheel::sink::{Signer, WebhookConfig, WebhookSink};
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
    /// Allow a non-loopback --bind without --requirepass or --tls-ca-cert.
    /// Anyone who can reach the port could then cancel every pending order.
    #[arg(long)]
    unsafe_no_auth: bool,
    /// Serve --bind over TLS only, with this PEM certificate chain (leaf
    /// first); needs --tls-key. Reloaded, with the key, on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require every client (and /metrics scraper) to present a certificate
    /// signed by this PEM CA (mutual TLS). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca_cert: Option<PathBuf>,
    /// Close a TLS client that has not finished its handshake this many ms
    /// after connecting.
    #[arg(long, default_value_t = server::tls::DEFAULT_HANDSHAKE_TIMEOUT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    tls_handshake_timeout_ms: u64,
    /// Redis URL of the durable journal, e.g. redis://127.0.0.1:6379/0, or
    /// rediss://host:6380/0 for TLS. Without it, timers live in memory only and
    /// are lost on exit. A URL with a password (rediss://:PASSWORD@host/0) is
    /// better passed in the environment, out of `ps`; logs show it masked.
    #[arg(long, env = "TIMEWHEEL_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Trust only this PEM CA certificate for a rediss:// --redis (default:
    /// the system's CA certificates).
    #[arg(long, value_name = "FILE", requires = "redis")]
    redis_ca_cert: Option<PathBuf>,
    /// PEM client certificate for a rediss:// --redis that requires one
    /// (Redis's tls-auth-clients); needs --redis-key.
    #[arg(long, value_name = "FILE", requires_all = ["redis", "redis_key"])]
    redis_cert: Option<PathBuf>,
    /// PEM private key of --redis-cert.
    #[arg(long, value_name = "FILE", requires = "redis_cert")]
    redis_key: Option<PathBuf>,
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
    /// Close orders by POSTing each fired one to this https:// (or http://) URL:
    /// JSON body {"id","deadline_ms","fired_ms","attempt"}, header Idempotency-Key: <id>.
    /// A 2xx reply means closed; anything else is retried (at least once).
    #[arg(long, value_name = "URL", conflicts_with = "stream")]
    webhook: Option<String>,
    /// Trust only this PEM CA certificate for an https:// --webhook (default:
    /// the system's CA certificates).
    #[arg(long, value_name = "FILE", requires = "webhook")]
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
    /// at http://ADDR/metrics (read-only); https:// with --tls-cert, with the
    /// same certificate and client CA as the clients' port.
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<SocketAddr>,
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
    // A client certificate (mutual TLS) authenticates as well as a password.
    let authenticated = requirepass.is_some() || args.tls_ca_cert.is_some();
    if !args.bind.ip().is_loopback() && !authenticated && !args.unsafe_no_auth {
        bail!(
            "refusing to listen on {} without a password: anyone who can reach it could cancel \
             every pending order. Set TIMEWHEEL_PASSWORD (or --requirepass), require client \
             certificates (--tls-ca-cert), bind to 127.0.0.1, or pass --unsafe-no-auth if a \
             firewall already keeps strangers out",
            args.bind
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = timewheel::tls::ServerFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: args.tls_ca_cert.clone(),
            };
            let timeout = Duration::from_millis(args.tls_handshake_timeout_ms);
            let acceptor = server::tls::Acceptor::new(files, timeout).context("--tls-cert")?;
            Some(Arc::new(acceptor))
        }
        _ => {
            if !args.bind.ip().is_loopback() {
                tracing::warn!(
                    "no --tls-cert: passwords and order ids cross the network to {} unencrypted",
                    args.bind
                );
            }
            None
        }
    };
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
            let secrets: Vec<&str> = [&args.webhook_secret, &args.webhook_secret_previous]
                .into_iter()
                .flatten()
                .map(String::as_str)
                .collect();
            let signer = (!secrets.is_empty())
                .then(|| Signer::new(&secrets))
                .transpose()?;
            let sink = WebhookSink::new(WebhookConfig {
                timeout: Duration::from_millis(args.webhook_timeout_ms),
                connections,
                ca_cert: args.webhook_ca_cert.clone(),
                signer,
                ..WebhookConfig::new(url.clone())
            })?;
            tracing::info!(
                url = %sink.url(),
                workers = connections,
                signed = !secrets.is_empty(),
                "closing orders through the webhook"
            );
            if url.starts_with("http://") {
                tracing::warn!(
                    "the webhook URL is http://: order ids cross the network unencrypted"
                );
            }
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
    match &args.redis {
        Some(url) => {
            let journal = Journal::connect(JournalConfig {
                key_prefix: args.key_prefix.clone(),
                connect_timeout: Duration::from_secs(args.redis_connect_timeout_s),
                io_timeout: Duration::from_millis(args.redis_timeout_ms),
                stream: args.stream.clone(),
                tls: RedisTls {
                    ca_cert: args.redis_ca_cert.clone(),
                    identity: args.redis_cert.clone().zip(args.redis_key.clone()),
                },
                ..JournalConfig::new(url.clone())
            })?;
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

    if let Some(addr) = args.metrics_bind {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("bind --metrics-bind {addr}"))?;
        let local = listener.local_addr()?;
        let (engine, hub, acceptor) = (engine.clone(), hub.clone(), tls.clone());
        server::metrics::spawn_tls(listener, tls.clone(), move || {
            let published = hub.published_total.load(Ordering::Relaxed);
            let mut text = server::metrics::render(
                &engine.stats(),
                published,
                engine.journal_stats().as_ref(),
            );
            if let Some(acceptor) = &acceptor {
                text.push_str(&acceptor.render_metrics());
            }
            text
        })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        tracing::info!("metrics on {scheme}://{local}/metrics");
    }
    let listener = server::bind(args.bind).with_context(|| format!("bind {}", args.bind))?;
    let local = listener.local_addr()?;
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
    tracing::info!("listening on {local}");

    let (shutdown_tx, shutdown_rx) = crossbeam_channel::bounded::<()>(1);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    let reload = tls.clone();
    std::thread::Builder::new()
        .name("timewheel-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    match &reload {
                        // Logs its outcome; a failure keeps the old certificate.
                        Some(acceptor) => drop(acceptor.reload()),
                        None => tracing::info!("SIGHUP: nothing to reload (no --tls-cert)"),
                    }
                    continue;
                }
                tracing::info!(signal, "signal received");
                drop(shutdown_tx);
                break;
            }
        })?;

    let config = Config {
        io_threads: args.io_threads as usize,
        max_clients: args.max_clients,
        idle_timeout: (args.idle_timeout_s > 0).then(|| Duration::from_secs(args.idle_timeout_s)),
        max_subscriber_backlog: args.max_subscriber_backlog,
        requirepass,
        tls,
    };
    server::run(listener, engine, hub, config, shutdown_rx).context("server failed")?;
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

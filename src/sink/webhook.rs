//! The webhook sink: one `POST` per fired order, over kept-alive connections.
//!
//! ```text
//! POST /close HTTP/1.1
//! Content-Type: application/json
//! Idempotency-Key: order-42
//! Timewheel-Signature: t=1763840000,v1=5f0c...   (with a secret, see `sign`)
//!
//! {"id":"order-42","deadline_ms":1763840000000,"fired_ms":1763840000004,"attempt":1}
//! ```
//!
//! Ground rules:
//! - One blocking request per call, on the worker thread that called
//!   [`Handler::handle`]: a slow endpoint holds that worker, never the
//!   ticker (the pool's queue absorbs the difference, see `docs/delivery.md`).
//! - A 2xx status is success, whatever the body. Anything else (another
//!   status, a timeout, a refused or reset connection) is an `Err` with a
//!   one-line message, and the pool retries it; redirects are not followed.
//! - Delivery is at least once: a request that timed out may still have
//!   closed the order, so the retry carries the same `Idempotency-Key` (the
//!   order id) for the endpoint to deduplicate on.
//! - One [`ureq::Agent`] is shared by all workers; it keeps up to
//!   [`WebhookConfig::connections`] idle connections for reuse. The host
//!   name is resolved at most once per [`RESOLVE_TTL`]: ureq's default
//!   resolver starts a thread per request when a timeout is set, which
//!   cost more than the request itself.
//! - `https://` is verified against the system's roots, or only against
//!   [`WebhookConfig::ca_cert`] when set; there is no switch to skip
//!   verification. A TLS failure (unknown issuer, expired certificate,
//!   wrong host name) is a failed attempt like any other
//!   ([`DeliveryError::Tls`]): retried, then dead-lettered with the reason.
//! - With [`WebhookConfig::signer`], every attempt carries a fresh
//!   [`sign::HEADER`](super::sign::HEADER) over the exact body sent.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::sign::{self, Signer};
use crate::handler::{Fired, Handler, HandlerResult};

/// Longest excerpt of a failed response's body kept in the error.
const EXCERPT_BYTES: usize = 200;
/// A response body is read up to this size so that its connection can be
/// reused; a longer one is cut off and the connection dropped.
const BODY_READ_LIMIT: u64 = 64 * 1024;
/// At most one `warn` line per this many ms while deliveries keep failing.
const WARN_EVERY_MS: u64 = 10_000;
/// How long a resolved address of the endpoint is used before the name is
/// looked up again.
pub const RESOLVE_TTL: Duration = Duration::from_secs(10);

/// How to reach the endpoint.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `http://host[:port]/path` or `https://host[:port]/path`.
    pub url: String,
    /// The whole exchange (connect, send, response head and body) must fit
    /// in this; longer counts as a failed attempt. Default 5 s.
    pub timeout: Duration,
    /// Idle connections kept for reuse; size it to the worker count.
    /// Default 64.
    pub connections: usize,
    /// PEM CA certificate(s) that `https://` endpoints are verified
    /// against, instead of the system's roots. Default `None`.
    pub ca_cert: Option<PathBuf>,
    /// Signs every request (the `Timewheel-Signature` header). Default `None`.
    pub signer: Option<Signer>,
}

impl WebhookConfig {
    /// The defaults for `url`: 5 s per exchange, 64 kept connections.
    pub fn new(url: impl Into<String>) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            timeout: Duration::from_secs(5),
            connections: 64,
            ca_cert: None,
            signer: None,
        }
    }
}

/// Why a [`WebhookSink`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    /// The URL does not parse, or has no host.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `http://` nor `https://`.
    UnsupportedScheme {
        /// The URL as given.
        url: String,
    },
    /// A CA certificate was given for a plain `http://` URL: the calls
    /// would go out unencrypted, which is surely not what was meant.
    CaCertWithoutHttps {
        /// The URL as given.
        url: String,
    },
    /// The CA certificate file could not be used.
    Tls(String),
}

impl std::fmt::Display for WebhookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebhookError::InvalidUrl { url, reason } => {
                write!(f, "webhook URL {url:?} is invalid: {reason}")
            }
            WebhookError::UnsupportedScheme { url } => {
                write!(f, "webhook URL {url:?}: expected http:// or https://")
            }
            WebhookError::CaCertWithoutHttps { url } => write!(
                f,
                "a webhook CA certificate was given, but the webhook URL {url:?} is not https://"
            ),
            WebhookError::Tls(e) => write!(f, "webhook TLS: {e}"),
        }
    }
}

impl std::error::Error for WebhookError {}

/// Why one delivery attempt failed. The message is one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// The endpoint answered with a status outside 2xx.
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the response body, for the log and the dead letter.
        body_excerpt: String,
    },
    /// No complete answer within [`WebhookConfig::timeout`].
    Timeout {
        /// The configured timeout.
        after: Duration,
        /// What was going on: connecting, sending, reading.
        phase: String,
    },
    /// Connecting, sending or reading failed (refused, reset, bad reply).
    Transport(String),
    /// The TLS handshake failed: the endpoint's certificate is not trusted,
    /// expired or for another name, or the endpoint does not speak TLS.
    Tls(String),
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeliveryError::Status {
                status,
                body_excerpt,
            } if body_excerpt.is_empty() => write!(f, "HTTP {status}"),
            DeliveryError::Status {
                status,
                body_excerpt,
            } => write!(f, "HTTP {status}: {body_excerpt}"),
            DeliveryError::Timeout { after, phase } => {
                write!(f, "timed out after {} ms ({phase})", after.as_millis())
            }
            DeliveryError::Transport(message) => f.write_str(message),
            DeliveryError::Tls(message) => write!(f, "TLS: {message}"),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// Closes orders by `POST`ing them to an HTTP endpoint.
///
/// ```no_run
/// use timewheel::sink::{WebhookConfig, WebhookSink};
/// let sink = WebhookSink::new(WebhookConfig::new("http://127.0.0.1:8080/close"))?;
/// let engine = timewheel::Engine::builder().workers(32).build(sink)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WebhookSink {
    agent: ureq::Agent,
    url: String,
    timeout: Duration,
    signer: Option<Signer>,
    /// Failed attempts since the last `warn` line, and when that was.
    failures_unreported: AtomicU64,
    last_warn_ms: AtomicU64,
    /// Cluster mode: where the partition epoch of each order comes from.
    epochs: Option<std::sync::Arc<crate::cluster::Ownership>>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// Checks the URL and sets up the connection pool; connects lazily.
    pub fn new(config: WebhookConfig) -> Result<WebhookSink, WebhookError> {
        let uri: ureq::http::Uri =
            config
                .url
                .parse()
                .map_err(|e: ureq::http::uri::InvalidUri| WebhookError::InvalidUrl {
                    url: config.url.clone(),
                    reason: e.to_string(),
                })?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => {
                return Err(WebhookError::UnsupportedScheme {
                    url: config.url.clone(),
                });
            }
            None => {
                return Err(WebhookError::InvalidUrl {
                    url: config.url.clone(),
                    reason: "expected http://host[:port]/path".into(),
                });
            }
        };
        if config.ca_cert.is_some() && !https {
            return Err(WebhookError::CaCertWithoutHttps { url: config.url });
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(WebhookError::InvalidUrl {
                url: config.url.clone(),
                reason: "no host".into(),
            });
        }
        let connections = config.connections.max(1);
        let agent_config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(config.timeout))
            .max_idle_connections(connections)
            .max_idle_connections_per_host(connections)
            .user_agent(concat!("timewheel/", env!("CARGO_PKG_VERSION")))
            .tls_config(tls_config(config.ca_cert.as_deref(), https)?)
            .build();
        let agent = ureq::Agent::with_parts(
            agent_config,
            DefaultConnector::default(),
            CachedResolver::default(),
        );
        Ok(WebhookSink {
            agent,
            url: config.url,
            timeout: config.timeout,
            signer: config.signer,
            failures_unreported: AtomicU64::new(0),
            last_warn_ms: AtomicU64::new(0),
            epochs: None,
        })
    }

    /// Cluster mode: adds the epoch under which this node holds the order's
    /// partition to every call (`"epoch"` in the body, header
    /// `Timewheel-Epoch`; 0 once the partition is no longer held here), so
    /// a receiver can tell a call made after a failover from the original.
    /// Calls stay at least once: a failover may repeat one.
    pub fn with_epochs(
        mut self,
        ownership: std::sync::Arc<crate::cluster::Ownership>,
    ) -> WebhookSink {
        self.epochs = Some(ownership);
        self
    }

    /// The endpoint, as configured.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `POST`; `Ok` on a 2xx status.
    pub fn deliver(&self, fired: &Fired) -> Result<(), DeliveryError> {
        let epoch = self
            .epochs
            .as_ref()
            .map(|own| own.settle_epoch(fired.id.as_bytes()).unwrap_or(0));
        let mut body = json_body(fired);
        let mut request = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", fired.id.as_str());
        if let Some(epoch) = epoch {
            body.pop();
            body.push_str(&format!(",\"epoch\":{epoch}}}"));
            request = request.header("Timewheel-Epoch", epoch);
        }
        // Signed last, over the body exactly as it is sent.
        if let Some(signer) = &self.signer {
            let t = crate::clock::unix_ms() / 1000;
            request = request.header(sign::HEADER, signer.header(t, body.as_bytes()));
        }
        let mut response = request
            .send(body.as_bytes())
            .map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        // Read (a bounded amount of) the body: a connection is reused only
        // once its response has been read to the end.
        let mut bytes = Vec::new();
        let read = response
            .body_mut()
            .as_reader()
            .take(BODY_READ_LIMIT)
            .read_to_end(&mut bytes);
        if (200..300).contains(&status) {
            return Ok(());
        }
        let mut body_excerpt = one_line(&bytes[..bytes.len().min(EXCERPT_BYTES)]);
        if read.is_err() && body_excerpt.is_empty() {
            body_excerpt = "(body unreadable)".into();
        }
        Err(DeliveryError::Status {
            status,
            body_excerpt,
        })
    }

    fn transport_error(&self, error: ureq::Error) -> DeliveryError {
        match error {
            ureq::Error::Timeout(phase) => DeliveryError::Timeout {
                after: self.timeout,
                phase: phase.to_string(),
            },
            ureq::Error::Rustls(e) => DeliveryError::Tls(one_line(e.to_string().as_bytes())),
            ureq::Error::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
            {
                Some(tls) => DeliveryError::Tls(one_line(tls.to_string().as_bytes())),
                None => DeliveryError::Transport(one_line(format!("io: {e}").as_bytes())),
            },
            other => DeliveryError::Transport(one_line(other.to_string().as_bytes())),
        }
    }

    /// Logs failures at `warn`, at most once per [`WARN_EVERY_MS`]: a dead
    /// endpoint must show in the log without a line per retry.
    fn note_failure(&self, fired: &Fired, error: &DeliveryError) {
        self.failures_unreported.fetch_add(1, Ordering::Relaxed);
        let now_ms = crate::clock::unix_ms();
        let last = self.last_warn_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < WARN_EVERY_MS
            || self
                .last_warn_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let failures = self.failures_unreported.swap(0, Ordering::Relaxed);
        tracing::warn!(
            url = %self.url,
            failures,
            last_id = %fired.id,
            last_attempt = fired.attempt,
            %error,
            "webhook deliveries failing; each is retried with backoff, then dead-lettered"
        );
    }
}

impl Handler for WebhookSink {
    fn handle(&self, fired: &Fired) -> HandlerResult {
        self.deliver(fired).map_err(|error| {
            self.note_failure(fired, &error);
            error.into()
        })
    }
}

/// ureq's TLS settings: rustls with our provider, trusting only `ca_cert`
/// when given, else the system's roots (read only for an `https://` URL).
fn tls_config(
    ca_cert: Option<&std::path::Path>,
    https: bool,
) -> Result<ureq::tls::TlsConfig, WebhookError> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let certs = match (ca_cert, https) {
        (_, false) => Vec::new(),
        (Some(path), true) => {
            crate::tls::load_certs(path).map_err(|e| WebhookError::Tls(e.to_string()))?
        }
        (None, true) => crate::tls::system_root_certs(),
    };
    let certs: Vec<Certificate<'static>> = certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(crate::tls::provider())
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

/// ureq's resolver, remembering the last answer for [`RESOLVE_TTL`].
#[derive(Debug, Default)]
struct CachedResolver {
    inner: DefaultResolver,
    /// (scheme and authority, when resolved, addresses).
    last: Mutex<Option<(String, Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for CachedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map_or("", |a| a.as_str())
        );
        if let Some((last_key, at, addrs)) = &*self.last.lock()
            && *last_key == key
            && at.elapsed() < RESOLVE_TTL
        {
            return Ok(addrs.clone());
        }
        // Not under the lock: a slow lookup must not hold up the others.
        let addrs = self.inner.resolve(uri, config, timeout)?;
        *self.last.lock() = Some((key, Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

/// `{"id":"...","deadline_ms":N,"fired_ms":N,"attempt":N}`.
pub fn json_body(fired: &Fired) -> String {
    let mut out = String::with_capacity(96 + fired.id.as_bytes().len());
    out.push_str("{\"id\":");
    push_json_string(&mut out, fired.id.as_str());
    out.push_str(&format!(
        ",\"deadline_ms\":{},\"fired_ms\":{},\"attempt\":{}}}",
        fired.deadline_ms, fired.fired_ms, fired.attempt
    ));
    out
}

/// Appends `s` as a JSON string literal (RFC 8259 section 7). Order ids are
/// printable ASCII, so only `"` and `\` occur in practice; control
/// characters are escaped anyway.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < '\u{20}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bytes as one printable line: lossy UTF-8, control characters (line
/// breaks included) turned into spaces, runs of spaces collapsed.
fn one_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::OrderId;

    fn fired(id: &str) -> Fired {
        Fired {
            id: OrderId::new(id).unwrap(),
            deadline_ms: 1_763_840_000_000,
            fired_ms: 1_763_840_000_004,
            attempt: 3,
        }
    }

    #[test]
    fn body_is_the_documented_json() {
        assert_eq!(
            json_body(&fired("order-42")),
            r#"{"id":"order-42","deadline_ms":1763840000000,"fired_ms":1763840000004,"attempt":3}"#
        );
    }

    #[test]
    fn ids_are_escaped() {
        let id = r#"a"b\c{}'/"#;
        let body = json_body(&fired(id));
        assert_eq!(
            body,
            r#"{"id":"a\"b\\c{}'/","deadline_ms":1763840000000,"fired_ms":1763840000004,"attempt":3}"#
        );
        let mut s = String::new();
        push_json_string(&mut s, "x\n\u{1}\t\u{1f}");
        assert_eq!(s, r#""x\n\u0001\t\u001f""#);
    }

    #[test]
    fn every_printable_ascii_id_survives_a_json_parser() {
        let all: String = (0x21u8..=0x7E).map(char::from).collect();
        for id in [all.as_str(), "\"", "\\", "\\\"", "a"] {
            let body = json_body(&fired(id));
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value["id"], id, "body {body}");
            assert_eq!(value["attempt"], 3);
        }
    }

    #[test]
    fn one_line_flattens_and_trims() {
        assert_eq!(
            one_line(b"  <h1>oops</h1>\r\n\r\n bad\tgateway \n"),
            "<h1>oops</h1> bad gateway"
        );
        assert_eq!(one_line(b""), "");
        assert_eq!(one_line(&[0xff, b'x']), "\u{fffd}x");
    }

    #[test]
    fn errors_are_one_line() {
        let errors = [
            DeliveryError::Status {
                status: 503,
                body_excerpt: "down for maintenance".into(),
            },
            DeliveryError::Status {
                status: 500,
                body_excerpt: String::new(),
            },
            DeliveryError::Timeout {
                after: Duration::from_millis(5000),
                phase: "global".into(),
            },
        ];
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "HTTP 503: down for maintenance",
                "HTTP 500",
                "timed out after 5000 ms (global)"
            ]
        );
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        let make = |url: &str| WebhookSink::new(WebhookConfig::new(url)).map(|_| ());
        assert_eq!(make("http://127.0.0.1:8080/close"), Ok(()));
        assert_eq!(make("http://shop.internal/hooks/close?x=1"), Ok(()));
        assert_eq!(make("https://shop.example/close"), Ok(()));
        assert!(matches!(
            make("ftp://shop.example/close"),
            Err(WebhookError::UnsupportedScheme { .. })
        ));
        let with_ca = |url: &str, ca: &str| {
            WebhookSink::new(WebhookConfig {
                ca_cert: Some(ca.into()),
                ..WebhookConfig::new(url)
            })
            .map(|_| ())
        };
        assert!(matches!(
            with_ca("http://127.0.0.1:8080/close", "/etc/hosts"),
            Err(WebhookError::CaCertWithoutHttps { .. })
        ));
        let missing = with_ca("https://shop.example/close", "/nonexistent/ca.pem");
        assert!(
            matches!(&missing, Err(WebhookError::Tls(e)) if e.contains("/nonexistent/ca.pem")),
            "{missing:?}"
        );
        assert!(matches!(
            make("127.0.0.1:8080/close"),
            Err(WebhookError::InvalidUrl { .. })
        ));
        assert!(matches!(
            make("not a url"),
            Err(WebhookError::InvalidUrl { .. })
        ));
        assert!(matches!(make(""), Err(WebhookError::InvalidUrl { .. })));
    }

    /// Answers `replies` requests on one connection each, in order.
    fn endpoint(replies: &'static [&'static str]) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            for reply in replies {
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                writer.write_all(reply.as_bytes()).unwrap();
            }
        });
        port
    }

    #[test]
    fn a_host_name_is_resolved_and_the_connection_reused() {
        // One connection serves both requests: the second reuses it.
        let port = endpoint(&[
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 13\r\n\r\nupstream\ndown",
        ]);
        let sink =
            WebhookSink::new(WebhookConfig::new(format!("http://localhost:{port}/c"))).unwrap();
        assert_eq!(sink.deliver(&fired("o1")), Ok(()));
        assert_eq!(
            sink.deliver(&fired("o2")).map_err(|e| e.to_string()),
            Err("HTTP 502: upstream down".to_owned())
        );
    }

    #[test]
    fn a_refused_connection_is_a_one_line_transport_error() {
        // Bind then drop: the port is (very likely) closed now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let sink = WebhookSink::new(WebhookConfig {
            timeout: Duration::from_secs(2),
            ..WebhookConfig::new(format!("http://127.0.0.1:{port}/close"))
        })
        .unwrap();
        let error = sink.deliver(&fired("o1")).unwrap_err();
        assert!(matches!(error, DeliveryError::Transport(_)), "{error:?}");
        assert!(!error.to_string().contains('\n'), "{error}");
    }
}

//! TLS on every hop, against real parts: the `timewheel` binary, a private
//! `redis-server --tls-port`, an HTTPS endpoint written here with rustls,
//! and certificates made by the test (`util::certs`).
//!
//! `cargo test --test tls`

mod util;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use util::certs::Pki;
use util::{RedisServer, Resp, TimewheelServer, info_u64, run_timewheel, unix_ms, wait_until};

// ---------------------------------------------------------------------------
// An HTTPS endpoint
// ---------------------------------------------------------------------------

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
struct Request {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTPS/1.1 endpoint on 127.0.0.1 that answers every request `200`,
/// with a certificate issued by `pki`.
struct HttpsEndpoint {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    handshake_errors: Arc<Mutex<Vec<String>>>,
}

impl HttpsEndpoint {
    fn start(pki: &Pki) -> HttpsEndpoint {
        let identity = pki.server("endpoint");
        let config = timewheel::tls::server_config(&timewheel::tls::ServerFiles {
            cert: identity.cert.clone(),
            key: identity.key.clone(),
            client_ca: None,
        })
        .expect("endpoint TLS configuration");
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the endpoint");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handshake_errors = Arc::new(Mutex::new(Vec::new()));
        let (log, errors) = (requests.clone(), handshake_errors.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (config, log, errors) = (config.clone(), log.clone(), errors.clone());
                thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let connection = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(connection, stream);
                    if let Err(e) = serve_https(&mut tls, &log) {
                        errors.lock().unwrap().push(e.to_string());
                    }
                });
            }
        });
        HttpsEndpoint {
            port,
            requests,
            handshake_errors,
        }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/close", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves requests on one TLS connection until the peer closes it.
fn serve_https(tls: &mut impl ReadWrite, log: &Mutex<Vec<Request>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(tls);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        log.lock().unwrap().push(Request { headers, body });
        let writer = reader.get_mut();
        writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")?;
        writer.flush()?;
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// What a receiver does (docs/delivery.md): split the header, recompute
/// HMAC-SHA256 of "<t>.<body>" with `secret`, compare with each `v1`.
fn signature_valid(header: &str, body: &[u8], secret: &str, tolerance_s: u64) -> bool {
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(value.to_owned()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (unix_ms() / 1000).abs_diff(t) > tolerance_s {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    signatures.contains(&expected)
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

const SECRET: &str = "whsec_test_current_5f0c2a9e";
const PREVIOUS: &str = "whsec_test_previous_77d1b3";

#[test]
fn https_webhook_calls_are_signed_with_both_secrets_during_a_rotation() {
    let pki = Pki::new("webhook");
    let endpoint = HttpsEndpoint::start(&pki);
    let url = endpoint.url();
    let server = TimewheelServer::start_with_env(
        &["--webhook", &url, "--webhook-ca-cert", pki.ca()],
        &[
            ("TIMEWHEEL_WEBHOOK_SECRET", SECRET),
            ("TIMEWHEEL_WEBHOOK_SECRET_PREVIOUS", PREVIOUS),
        ],
    );
    let mut c = server.conn();
    for id in ["signed-1", "signed-2"] {
        assert!(c.cmd(&["ADD", id, "20"]).as_int().is_some());
    }
    wait_until("two deliveries", Duration::from_secs(10), || {
        info_u64(&mut c, "delivered_total") == 2
    });
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        let header = &request.headers["timewheel-signature"];
        assert_eq!(header.matches("v1=").count(), 2, "{header}");
        assert!(header.starts_with("t="), "{header}");
        assert!(
            signature_valid(header, &request.body, SECRET, 300),
            "{header}"
        );
        assert!(
            signature_valid(header, &request.body, PREVIOUS, 300),
            "{header}"
        );
        assert!(!signature_valid(
            header,
            &request.body,
            "whsec_someone_else_123",
            300
        ));
        // The signature covers the exact body: one changed byte fails it.
        let mut tampered = request.body.clone();
        tampered[2] ^= 1;
        assert!(!signature_valid(header, &tampered, SECRET, 300), "{header}");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(request.headers["idempotency-key"], body["id"]);
    }
    assert!(
        !server.log().contains(SECRET) && !server.log().contains(PREVIOUS),
        "a secret leaked into the log:\n{}",
        server.log()
    );
}

#[test]
fn a_webhook_whose_certificate_is_not_trusted_is_dead_lettered_with_the_tls_error() {
    let redis = RedisServer::start();
    let endpoint_pki = Pki::new("endpoint");
    let other_pki = Pki::new("other");
    let endpoint = HttpsEndpoint::start(&endpoint_pki);
    let (url, redis_url) = (endpoint.url(), redis.url());
    let server = TimewheelServer::start(&[
        "--redis",
        &redis_url,
        "--webhook",
        &url,
        "--webhook-ca-cert",
        other_pki.ca(),
        "--max-attempts",
        "2",
        "--retry-initial-ms",
        "50",
    ]);
    let mut c = server.conn();
    assert!(c.cmd(&["ADD", "untrusted-1", "20"]).as_int().is_some());
    wait_until("the dead letter", Duration::from_secs(20), || {
        info_u64(&mut c, "dead_letter_total") == 1
    });
    assert_eq!(info_u64(&mut c, "delivered_total"), 0);
    assert_eq!(info_u64(&mut c, "delivery_retries_total"), 1);
    assert!(
        endpoint.requests().is_empty(),
        "no request may cross an untrusted connection"
    );
    assert!(
        !endpoint.handshake_errors.lock().unwrap().is_empty(),
        "the endpoint saw no failed handshake"
    );
    let mut error = String::new();
    wait_until("XADD tw:dead", Duration::from_secs(10), || {
        let Resp::Array(Some(entries)) = redis.cmd(&["XRANGE", "tw:dead", "-", "+"]) else {
            return false;
        };
        let Some(Resp::Array(Some(entry))) = entries.first() else {
            return false;
        };
        let Resp::Array(Some(fields)) = &entry[1] else {
            return false;
        };
        for pair in fields.chunks(2) {
            if pair[0].as_str() == Some("error") {
                error = pair[1].as_str().unwrap_or_default().to_owned();
            }
        }
        true
    });
    assert!(
        error.starts_with("TLS: ") && error.contains("UnknownIssuer"),
        "dead letter error: {error:?}"
    );
}

#[test]
fn webhook_secrets_and_ca_files_are_checked_at_start() {
    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--webhook",
            "https://localhost:1/close",
        ],
        &[("TIMEWHEEL_WEBHOOK_SECRET", "short")],
    );
    assert!(!status.success());
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(!stderr.contains("short"), "the secret is echoed: {stderr}");

    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--webhook",
            "https://localhost:1/close",
            "--webhook-ca-cert",
            "/nonexistent/ca.pem",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

// ---------------------------------------------------------------------------
// The journal over TLS
// ---------------------------------------------------------------------------

#[test]
fn a_journal_on_a_tls_only_redis_keeps_every_timer_across_a_restart() {
    let pki = Pki::new("redis");
    let redis = RedisServer::start_tls(&pki, true);
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let client = redis.tls_client().clone();
    let args = [
        "--redis",
        &url,
        "--redis-ca-cert",
        pki.ca(),
        "--redis-cert",
        client.cert(),
        "--redis-key",
        client.key(),
    ];
    let mut server = TimewheelServer::start(&args);
    let mut c = server.conn();
    const TIMERS: usize = 200;
    for i in 0..TIMERS {
        let reply = c.cmd(&["ADD", &format!("tls-order-{i}"), "600000"]);
        assert!(reply.as_int().is_some(), "ADD: {reply:?}");
    }
    assert_eq!(c.cmd(&["CANCEL", "tls-order-0"]), Resp::Integer(1));
    assert_eq!(
        redis.cmd(&["ZCARD", "tw:due"]),
        Resp::Integer(TIMERS as i64 - 1)
    );
    drop(c);
    assert!(server.terminate(Duration::from_secs(10)).is_some());

    let server = TimewheelServer::start(&args);
    let mut c = server.conn();
    assert_eq!(
        c.cmd(&["COUNT"]),
        Resp::Integer(TIMERS as i64 - 1),
        "log:\n{}",
        server.log()
    );
    let pttl = c.cmd(&["PTTL", "tls-order-7"]).as_int().unwrap();
    assert!((500_000..=600_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(c.cmd(&["PTTL", "tls-order-0"]), Resp::Integer(-2));
    assert!(
        server.log().contains("rediss://127.0.0.1"),
        "{}",
        server.log()
    );
}

#[test]
fn a_tls_redis_that_refuses_the_journal_stops_the_start_with_the_password_masked() {
    let pki = Pki::new("redis");
    let redis = RedisServer::start_tls(&pki, true);
    let url = format!("rediss://:hunter2-not-logged@127.0.0.1:{}/0", redis.port());
    // No client certificate: Redis (tls-auth-clients yes) ends the handshake.
    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--redis",
            &url,
            "--redis-ca-cert",
            pki.ca(),
            "--redis-connect-timeout-s",
            "1",
        ],
        &[],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
    assert!(stderr.contains("rediss://:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password in the log: {stderr}");

    // The right certificate, but a CA that did not sign the server's.
    let other = Pki::new("other");
    let client = redis.tls_client().clone();
    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--redis",
            &redis.url(),
            "--redis-ca-cert",
            other.ca(),
            "--redis-cert",
            client.cert(),
            "--redis-key",
            client.key(),
            "--redis-connect-timeout-s",
            "1",
        ],
        &[],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    // Certificates for a plain redis:// URL are a mistake, not a silent no-op.
    let plain = format!("redis://127.0.0.1:{}/0", redis.port());
    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--redis",
            &plain,
            "--redis-ca-cert",
            pki.ca(),
        ],
        &[],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not rediss://"), "{stderr}");
}

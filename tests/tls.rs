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
        "--best-effort-delivery",
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
            "--best-effort-delivery",
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
            "--best-effort-delivery",
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
            "--best-effort-delivery",
        ],
        &[],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("not rediss://"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Clients over TLS
// ---------------------------------------------------------------------------

/// `timewheel serve` with TLS from `pki`'s `server` certificate, plus `extra`.
fn tls_server(pki: &Pki, extra: &[&str]) -> TimewheelServer {
    let identity = pki.server("timewheel");
    let mut args = vec!["--tls-cert", identity.cert(), "--tls-key", identity.key()];
    args.extend_from_slice(extra);
    TimewheelServer::start(&args)
}

/// Runs `redis-cli --tls` against `port` with `args`; returns its stdout.
fn redis_cli(port: u16, tls_args: &[&str], args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["--tls", "-h", "127.0.0.1", "--sni", "localhost", "-p"])
        .arg(port.to_string())
        .args(tls_args)
        .args(args)
        .output()
        .expect("run redis-cli (Debian package redis-tools)");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The address the server logged for `/metrics`.
fn metrics_addr(server: &TimewheelServer) -> String {
    let log = server.log();
    log.split("metrics on https://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no 'metrics on https://' line:\n{log}"))
        .to_owned()
}

#[test]
fn redis_cli_and_the_redis_crate_run_add_pttl_cancel_subscribe_over_tls() {
    let pki = Pki::new("clients");
    let server = tls_server(&pki, &["--metrics-bind", "127.0.0.1:0"]);
    let port = server.port();
    let ca = ["--cacert", pki.ca()];

    let added = redis_cli(port, &ca, &["ADD", "cli-1", "60000"]);
    assert!(
        added.parse::<u64>().is_ok(),
        "ADD over redis-cli --tls: {added:?}"
    );
    let pttl: i64 = redis_cli(port, &ca, &["PTTL", "cli-1"]).parse().unwrap();
    assert!((50_000..=60_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(redis_cli(port, &ca, &["CANCEL", "cli-1"]), "1");
    assert_eq!(redis_cli(port, &ca, &["CANCEL", "cli-1"]), "0");

    // redis-cli --tls SUBSCRIBE fired: a fired id arrives on its output.
    let mut subscriber = std::process::Command::new("redis-cli")
        .args(["--tls", "--cacert", pki.ca(), "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["SUBSCRIBE", "fired"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run redis-cli");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = subscriber.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    // "subscribe", "fired", "1": subscribed.
    let confirmation: Vec<String> = (0..3)
        .map(|_| lines_rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(confirmation, ["subscribe", "fired", "1"]);
    redis_cli(port, &ca, &["ADD", "cli-sub", "20"]);
    let message: Vec<String> = (0..3)
        .map(|_| lines_rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(message, ["message", "fired", "cli-sub"]);
    let _ = subscriber.kill();
    let _ = subscriber.wait();

    let certificates = || redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(std::fs::read(pki.ca()).unwrap()),
    };
    let url = format!("rediss://localhost:{port}/");
    let client = redis::Client::build_with_tls(url.as_str(), certificates()).unwrap();
    let mut con = client.get_connection().expect("TLS connection");
    let _: i64 = redis::cmd("ADD")
        .arg("crate-1")
        .arg(60_000)
        .query(&mut con)
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("crate-1").query(&mut con).unwrap();
    assert!((50_000..=60_000).contains(&pttl), "PTTL {pttl}");
    let cancelled: i64 = redis::cmd("CANCEL").arg("crate-1").query(&mut con).unwrap();
    assert_eq!(cancelled, 1);

    let mut sub_con = client.get_connection().unwrap();
    let mut pubsub = sub_con.as_pubsub();
    pubsub.subscribe("fired").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _: i64 = redis::cmd("ADD")
        .arg("crate-2")
        .arg(20)
        .query(&mut con)
        .unwrap();
    let message = pubsub.get_message().expect("a fired message over TLS");
    assert_eq!(message.get_channel_name(), "fired");
    assert_eq!(message.get_payload::<String>().unwrap(), "crate-2");
    drop(pubsub);

    // /metrics is served over TLS with the same certificate.
    let addr = metrics_addr(&server);
    let stream = std::net::TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(pki.client_config(None), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, stream);
    tls.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    let _ = tls.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let handshakes: u64 = reply
        .lines()
        .find_map(|l| l.strip_prefix("timewheel_tls_handshakes_total "))
        .unwrap_or_else(|| panic!("no tls_handshakes_total in {reply}"))
        .parse()
        .unwrap();
    // Six redis-cli runs and two redis crate connections.
    assert_eq!(handshakes, 8, "{reply}");
    // A plain-text scrape gets nothing.
    let mut plain = std::net::TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = plain.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/1.1 200"),
        "plain text served /metrics"
    );
}

#[test]
fn mutual_tls_refuses_plaintext_missing_untrusted_and_expired_certificates_while_a_good_client_works()
 {
    let pki = Pki::new("mtls");
    let server = tls_server(&pki, &["--tls-ca-cert", pki.ca()]);
    let port = server.port();
    let good = pki.client("good-client");
    let mut conn = util::RespConn::connect_tls(port, pki.client_config(Some(&good))).unwrap();
    assert!(conn.cmd(&["ADD", "mtls-1", "60000"]).as_int().is_some());

    // Plain text on the TLS port: closed without a RESP reply.
    let mut plain = util::RespConn::connect(port);
    let _ = plain.try_send_raw(b"*1\r\n$4\r\nPING\r\n");
    let reply = plain.try_read_reply();
    assert!(reply.is_err(), "plaintext got {reply:?}");

    // With TLS 1.3 the server checks the client's certificate after the
    // client considers the handshake done: the refusal shows on first use.
    let other = Pki::new("stranger");
    let refused =
        |config: Arc<rustls::ClientConfig>| match util::RespConn::connect_tls(port, config) {
            Err(_) => true,
            Ok(mut c) => {
                c.set_timeout(Duration::from_secs(5));
                c.try_send_raw(&util::encode_command(&["PTTL", "mtls-1"]))
                    .and_then(|()| c.try_read_reply())
                    .is_err()
            }
        };
    let stranger = other.client("stranger");
    let expired = pki.expired_client("expired");
    assert!(refused(pki.client_config(None)), "no client certificate");
    // Trusts the server, presents a certificate from another CA.
    assert!(
        refused(pki.client_config(Some(&stranger))),
        "untrusted certificate"
    );
    assert!(
        refused(pki.client_config(Some(&expired))),
        "expired certificate"
    );
    // redis-cli without a client certificate, too.
    assert_eq!(redis_cli(port, &["--cacert", pki.ca()], &["PING"]), "");
    let cert_args = [
        "--cacert",
        pki.ca(),
        "--cert",
        good.cert(),
        "--key",
        good.key(),
    ];
    assert_eq!(redis_cli(port, &cert_args, &["PING"]), "PONG");

    // The good client never noticed.
    let pttl = conn.cmd(&["PTTL", "mtls-1"]).as_int().unwrap();
    assert!(pttl > 50_000, "PTTL {pttl}");
    let failures = info_u64(&mut conn, "tls_handshake_failures_total");
    assert!(failures >= 5, "{failures} failed handshakes counted");
    let info = util::info(&mut conn);
    assert_eq!(info["tls"], "on");
    assert_eq!(info["tls_client_auth"], "required");
    let log = server.log();
    assert!(
        log.contains("TLS handshake failed; connection closed"),
        "{log}"
    );
}

#[test]
fn slow_handshakes_are_closed_and_random_bytes_never_crash_the_server() {
    let pki = Pki::new("fuzz");
    let server = tls_server(&pki, &["--tls-handshake-timeout-ms", "200"]);
    let port = server.port();
    let mut good = util::RespConn::connect_tls(port, pki.client_config(None)).unwrap();
    assert!(good.cmd(&["ADD", "fuzz-1", "60000"]).as_int().is_some());

    // Connects and says nothing: closed after the handshake timeout (the
    // sweep runs once a second).
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(info_u64(&mut good, "tls_handshake_timeouts_total") >= 1);

    // Random bytes, some behind a plausible TLS record header.
    let mut rng = fastrand::Rng::with_seed(16);
    for i in 0..200 {
        let len = rng.usize(1..4096);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        if i % 2 == 0 && len > 5 {
            bytes[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
            if i % 4 == 0 {
                bytes[5] = 0x01; // ClientHello
            }
        }
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            panic!(
                "connection {i} refused: the server is gone?\n{}",
                server.log()
            );
        };
        let _ = stream.write_all(&bytes);
    }
    let pttl = good.cmd(&["PTTL", "fuzz-1"]).as_int().unwrap();
    assert!(pttl > 50_000, "PTTL {pttl}");
    let mut fresh = util::RespConn::connect_tls(port, pki.client_config(None)).unwrap();
    assert_eq!(
        fresh.cmd(&["PTTL", "fuzz-1"]).as_int().map(|p| p > 0),
        Some(true)
    );
    wait_until(
        "the random connections are closed",
        Duration::from_secs(10),
        || info_u64(&mut fresh, "connected_clients") == 2,
    );
}

#[test]
fn sighup_reloads_the_certificate_for_new_handshakes_and_keeps_open_connections() {
    let old_pki = Pki::new("old");
    let new_pki = Pki::new("new");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |pki: &Pki| {
        let identity = pki.server("timewheel");
        std::fs::copy(&identity.cert, &cert).unwrap();
        std::fs::copy(&identity.key, &key).unwrap();
    };
    install(&old_pki);
    let server = TimewheelServer::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = server.port();
    let mut open = util::RespConn::connect_tls(port, old_pki.client_config(None)).unwrap();
    assert!(open.cmd(&["ADD", "hup-1", "60000"]).as_int().is_some());
    let hup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    install(&new_pki);
    hup();
    wait_until("the reload", Duration::from_secs(10), || {
        server.log().contains("TLS certificate reloaded")
    });
    assert!(
        util::RespConn::connect_tls(port, old_pki.client_config(None)).is_err(),
        "a new handshake still got the old certificate"
    );
    let mut fresh = util::RespConn::connect_tls(port, new_pki.client_config(None)).unwrap();
    assert!(fresh.cmd(&["PTTL", "hup-1"]).as_int().unwrap() > 50_000);
    // The connection made before the reload goes on.
    assert_eq!(open.cmd(&["CANCEL", "hup-1"]), Resp::Integer(1));

    // A broken file: the reload fails, the new certificate stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup();
    wait_until("the failed reload", Duration::from_secs(10), || {
        server.log().contains("TLS reload failed")
    });
    let mut after = util::RespConn::connect_tls(port, new_pki.client_config(None)).unwrap();
    assert_eq!(after.cmd(&["PTTL", "hup-1"]), Resp::Integer(-2));
    assert_eq!(info_u64(&mut after, "tls_cert_reloads_total"), 1);
    assert_eq!(info_u64(&mut after, "tls_cert_reload_failures_total"), 1);
}

// ---------------------------------------------------------------------------
// The verifiers in docs/delivery.md
// ---------------------------------------------------------------------------

/// The fenced code block of `language` in the `### Signatures` section.
fn documented_verifier(language: &str) -> String {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/delivery.md"))
        .expect("read docs/delivery.md");
    let section = docs
        .split("### Signatures")
        .nth(1)
        .expect("docs/delivery.md has a Signatures section");
    let section = section.split("\n## ").next().unwrap();
    let fence = format!("```{language}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("no {language} block under ### Signatures"))
        + fence.len();
    let len = section[start..].find("```").unwrap();
    section[start..start + len].to_owned()
}

/// Each documented verifier, run by its own runtime on a request signed by
/// the real server: the current and the previous secret pass, another
/// secret and a changed body fail. Python is required; PHP, Java and Node
/// run when they are installed.
#[test]
fn the_documented_verifiers_accept_our_signatures_and_nothing_else() {
    let pki = Pki::new("verifiers");
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
    assert!(
        c.cmd(&["ADD", r#"quote"and\slash"#, "20"])
            .as_int()
            .is_some()
    );
    wait_until("the delivery", Duration::from_secs(10), || {
        !endpoint.requests().is_empty()
    });
    let request = endpoint.requests().remove(0);
    let header = request.headers["timewheel-signature"].clone();
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, &request.body).unwrap();

    // Each prints, space-separated, 1 or 0 for: current secret, previous
    // secret, another secret, the body with one byte more.
    let python = format!(
        "import os, sys\n{}\nb = open(sys.argv[1], 'rb').read()\nh, s1, s2 = os.environ['SIG'], os.environ['S1'], os.environ['S2']\n\
         print(*[int(verify(h, x, [s])) for x, s in [(b, s1), (b, s2), (b, 'whsec_wrong_0123456789'), (b + b' ', s1)]])\n",
        documented_verifier("python")
    );
    let php = format!(
        "<?php\n{}\n$b = file_get_contents($argv[1]); $h = getenv('SIG');\n\
         $r = [verify($h, $b, [getenv('S1')]), verify($h, $b, [getenv('S2')]), verify($h, $b, ['whsec_wrong_0123456789']), verify($h, $b . ' ', [getenv('S1')])];\n\
         echo implode(' ', array_map('intval', $r)), \"\\n\";\n",
        documented_verifier("php")
    );
    let java_source = documented_verifier("java");
    let (imports, method): (Vec<&str>, Vec<&str>) =
        java_source.lines().partition(|l| l.starts_with("import "));
    let java = format!(
        "{}\npublic class Verify {{\n{}\npublic static void main(String[] a) throws Exception {{\n\
         byte[] b = java.nio.file.Files.readAllBytes(java.nio.file.Path.of(a[0]));\n\
         byte[] more = java.util.Arrays.copyOf(b, b.length + 1); more[b.length] = ' ';\n\
         String h = System.getenv(\"SIG\");\n\
         boolean[] r = {{ verify(h, b, List.of(System.getenv(\"S1\")), 300), verify(h, b, List.of(System.getenv(\"S2\")), 300),\n\
         verify(h, b, List.of(\"whsec_wrong_0123456789\"), 300), verify(h, more, List.of(System.getenv(\"S1\")), 300) }};\n\
         StringBuilder out = new StringBuilder();\n\
         for (boolean x : r) out.append(out.length() > 0 ? \" \" : \"\").append(x ? 1 : 0);\n\
         System.out.println(out);\n}}\n}}\n",
        imports.join("\n"),
        method.join("\n")
    );
    let node = format!(
        "{}\nconst fs = require('node:fs');\nconst b = fs.readFileSync(process.argv[2]);\nconst {{ SIG: h, S1: s1, S2: s2 }} = process.env;\n\
         console.log([verify(h, b, [s1]), verify(h, b, [s2]), verify(h, b, ['whsec_wrong_0123456789']), verify(h, Buffer.concat([b, Buffer.from(' ')]), [s1])].map(Number).join(' '));\n",
        documented_verifier("javascript")
    );
    let mut ran = Vec::new();
    for (runtime, file, source) in [
        ("python3", "verify.py", python),
        ("php", "verify.php", php),
        ("java", "Verify.java", java),
        ("node", "verify.js", node),
    ] {
        if util::find_on_path(runtime).is_none() {
            assert_ne!(runtime, "python3", "python3 is needed");
            eprintln!("{runtime} not on PATH: its verifier is not run");
            continue;
        }
        let path = dir.path().join(file);
        std::fs::write(&path, source).unwrap();
        let output = std::process::Command::new(runtime)
            .arg(&path)
            .arg(&body)
            .env("SIG", &header)
            .env("S1", SECRET)
            .env("S2", PREVIOUS)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout.trim(),
            "1 1 0 0",
            "{runtime}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        ran.push(runtime);
    }
    eprintln!("documented verifiers run: {ran:?}");
}

/// redis-py, unmodified, with `ssl=True` and a client certificate.
const REDIS_PY_TLS: &str = r#"
import os, time, redis
r = redis.Redis(host="localhost", port=int(os.environ["PORT"]), ssl=True,
                ssl_ca_certs=os.environ["CA"], ssl_certfile=os.environ["CERT"],
                ssl_keyfile=os.environ["KEY"], socket_timeout=10)
assert r.execute_command("ADD", "py-1", 60000) > 0
pttl = r.execute_command("PTTL", "py-1")
assert 50000 < pttl <= 60000, pttl
assert r.execute_command("CANCEL", "py-1") == 1
p = r.pubsub()
p.subscribe("fired")
r.execute_command("ADD", "py-2", 20)
deadline = time.time() + 10
while time.time() < deadline:
    m = p.get_message(timeout=1)
    if m and m["type"] == "message":
        assert m["data"] == b"py-2", m
        print("ok")
        break
"#;

#[test]
fn redis_py_with_ssl_true_and_a_client_certificate_runs_add_pttl_cancel_subscribe() {
    let import = std::process::Command::new("python3")
        .args(["-c", "import redis"])
        .output();
    if !import.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: python3 cannot import redis (CI installs it with pip)");
        return;
    }
    let pki = Pki::new("redis-py");
    let server = tls_server(&pki, &["--tls-ca-cert", pki.ca()]);
    let client = pki.client("redis-py");
    let output = std::process::Command::new("python3")
        .args(["-c", REDIS_PY_TLS])
        .env("PORT", server.port().to_string())
        .env("CA", pki.ca())
        .env("CERT", client.cert())
        .env("KEY", client.key())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
}

//! `timewheel serve --webhook`: the real binary against a loopback HTTP
//! endpoint written here (std only), which fails, stalls or accepts
//! requests depending on the order id.
//!
//! `cargo test --test webhook`

mod util;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use util::{RedisServer, Resp, TimewheelServer, info, info_u64, unix_ms, wait_until};

// ---------------------------------------------------------------------------
// A loopback HTTP endpoint
// ---------------------------------------------------------------------------

/// What the endpoint does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Status(u16),
    /// Waits this long (past the client's timeout), then answers 500.
    Stall(Duration),
}

/// One request as the endpoint saw it.
#[derive(Debug, Clone)]
struct Request {
    arrived_ms: u64,
    method: String,
    path: String,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: serde_json::Value,
    reply: Reply,
}

impl Request {
    fn id(&self) -> &str {
        self.body["id"].as_str().expect("body has a string id")
    }

    fn field(&self, name: &str) -> u64 {
        self.body[name]
            .as_u64()
            .unwrap_or_else(|| panic!("body field {name} is not a number: {}", self.body))
    }

    fn succeeded(&self) -> bool {
        matches!(self.reply, Reply::Status(s) if (200..300).contains(&s))
    }
}

/// Decides the reply from the order id and how many requests for that id
/// the endpoint has seen (1 for the first).
type Policy = dyn Fn(&str, u32) -> Reply + Send + Sync;

/// An HTTP/1.1 endpoint on 127.0.0.1 with keep-alive: a thread per
/// connection, `Content-Length` bodies only (what ureq sends).
struct Endpoint {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    connections: Arc<AtomicUsize>,
}

impl Endpoint {
    fn start(policy: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the endpoint");
        Endpoint::serve(listener, Arc::new(policy))
    }

    fn serve(listener: TcpListener, policy: Arc<Policy>) -> Endpoint {
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let (log, count) = (requests.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let (log, seen, policy) = (log.clone(), seen.clone(), policy.clone());
                thread::spawn(move || serve_connection(stream, &log, &seen, &*policy));
            }
        });
        Endpoint {
            port,
            requests,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/close", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves requests on one connection until the peer closes it.
fn serve_connection(
    stream: TcpStream,
    log: &Mutex<Vec<Request>>,
    seen: &Mutex<HashMap<String, u32>>,
    policy: &Policy,
) {
    let mut writer = stream.try_clone().expect("clone the socket");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let arrived_ms = unix_ms();
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        );
        let mut headers = HashMap::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
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
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let nth = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(id.clone()).or_default();
            *n += 1;
            *n
        };
        let reply = policy(&id, nth);
        log.lock().unwrap().push(Request {
            arrived_ms,
            method,
            path,
            content_type: headers.get("content-type").cloned(),
            idempotency_key: headers.get("idempotency-key").cloned(),
            body,
            reply,
        });
        let status = match reply {
            Reply::Status(status) => status,
            Reply::Stall(wait) => {
                thread::sleep(wait);
                500
            }
        };
        let text = if status == 200 {
            "closed"
        } else {
            "try later\r\n<b>shop busy</b>"
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// One `GET` on a fresh connection; the whole reply, head included.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read the reply");
    reply
}

/// The requests for each id, in arrival order.
fn by_id(requests: &[Request]) -> BTreeMap<String, Vec<Request>> {
    let mut map: BTreeMap<String, Vec<Request>> = BTreeMap::new();
    for r in requests {
        map.entry(r.id().to_owned()).or_default().push(r.clone());
    }
    for list in map.values_mut() {
        list.sort_by_key(|r| r.arrived_ms);
    }
    map
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

const RETRY_INITIAL_MS: u64 = 200;
const RETRY_MAX_MS: u64 = 800;
const TIMEOUT_MS: u64 = 300;

/// The backoff before attempt `failed + 1`, without jitter.
fn backoff_ms(failed: u64) -> u64 {
    (RETRY_INITIAL_MS << (failed - 1)).min(RETRY_MAX_MS)
}

#[test]
fn every_order_is_delivered_at_least_once_after_its_deadline_and_cancelled_ones_never() {
    const OK: usize = 40;
    const FAILING: usize = 10; // 500 twice, then 200
    const STALLING: usize = 5; // no answer within the timeout once, then 200
    const CANCELLED: usize = 10;
    let endpoint = Endpoint::start(|id, nth| {
        if id.starts_with("fail-") && nth <= 2 {
            Reply::Status(500)
        } else if id.starts_with("stall-") && nth == 1 {
            Reply::Stall(Duration::from_millis(3 * TIMEOUT_MS))
        } else {
            Reply::Status(200)
        }
    });
    let url = endpoint.url();
    let server = TimewheelServer::start(&[
        "--webhook",
        &url,
        "--webhook-timeout-ms",
        &TIMEOUT_MS.to_string(),
        "--retry-initial-ms",
        &RETRY_INITIAL_MS.to_string(),
        "--retry-max-ms",
        &RETRY_MAX_MS.to_string(),
        "--max-attempts",
        "6",
        "--workers",
        "8",
        "--metrics-bind",
        "127.0.0.1:0",
    ]);
    let mut subscriber = server.conn();
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "fired"]),
        Resp::Array(Some(vec![
            Resp::bulk("subscribe"),
            Resp::bulk("fired"),
            Resp::Integer(1)
        ]))
    );

    let mut c = server.conn();
    let base = unix_ms() + 1500;
    let mut deadlines = BTreeMap::new();
    let groups = [
        ("ok", OK),
        ("fail", FAILING),
        ("stall", STALLING),
        ("cancel", CANCELLED),
    ];
    for (group, count) in groups {
        for i in 0..count {
            let id = format!("{group}-{i}");
            let deadline = base + (i as u64 % 7) * 40;
            let reply = c.cmd(&["ADDAT", &id, &deadline.to_string()]);
            assert_eq!(reply, Resp::Integer(deadline as i64), "ADDAT {id}");
            deadlines.insert(id, deadline);
        }
    }
    for i in 0..CANCELLED {
        let id = format!("cancel-{i}");
        assert_eq!(c.cmd(&["CANCEL", &id]), Resp::Integer(1), "CANCEL {id}");
    }
    assert!(
        unix_ms() < base,
        "setup took too long: the deadlines are already past"
    );
    let expected = OK + FAILING + STALLING;
    wait_until("every order delivered", Duration::from_secs(40), || {
        info_u64(&mut c, "delivered_total") == expected as u64
    });
    wait_until("the last deadline passed", Duration::from_secs(5), || {
        unix_ms() > base + 500
    });

    let requests = endpoint.requests();
    let by_id = by_id(&requests);
    // Cancelled orders are never requested; every other one succeeded once.
    let delivered: Vec<&String> = by_id
        .iter()
        .filter(|(_, list)| list.iter().any(Request::succeeded))
        .map(|(id, _)| id)
        .collect();
    let want: Vec<&String> = deadlines
        .keys()
        .filter(|id| !id.starts_with("cancel-"))
        .collect();
    assert_eq!(delivered, want, "ids with a 2xx reply");
    assert!(
        by_id.keys().all(|id| !id.starts_with("cancel-")),
        "a cancelled order was requested: {:?}",
        by_id.keys().collect::<Vec<_>>()
    );

    for (id, list) in &by_id {
        let deadline = deadlines[id];
        let attempts: Vec<u64> = list.iter().map(|r| r.field("attempt")).collect();
        let want_attempts: Vec<u64> = match id.split('-').next() {
            Some("fail") => vec![1, 2, 3],
            Some("stall") => vec![1, 2],
            _ => vec![1],
        };
        assert_eq!(attempts, want_attempts, "attempts of {id}");
        assert_eq!(
            list.iter().filter(|r| r.succeeded()).count(),
            1,
            "{id}: exactly one 2xx"
        );
        for r in list {
            assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/close"));
            assert_eq!(r.content_type.as_deref(), Some("application/json"));
            assert_eq!(r.idempotency_key.as_deref(), Some(id.as_str()));
            assert_eq!(r.field("deadline_ms"), deadline, "{id}: {}", r.body);
            let fired_ms = r.field("fired_ms");
            assert!(fired_ms >= deadline, "{id} fired early: {}", r.body);
            assert!(
                r.arrived_ms >= deadline,
                "{id} delivered {} ms before its deadline",
                deadline - r.arrived_ms
            );
            assert_eq!(
                r.body.as_object().map(|o| o.len()),
                Some(4),
                "body has exactly id, deadline_ms, fired_ms, attempt: {}",
                r.body
            );
        }
        // Retries wait at least half the configured backoff (jitter is in
        // [0.5, 1.0]); a stalled attempt first waits for the timeout.
        for pair in list.windows(2) {
            let failed = pair[0].field("attempt");
            let gap = pair[1].arrived_ms - pair[0].arrived_ms;
            let mut floor = backoff_ms(failed) / 2;
            if matches!(pair[0].reply, Reply::Stall(_)) {
                floor += TIMEOUT_MS;
            }
            assert!(
                gap >= floor,
                "{id}: attempt {} came {gap} ms after attempt {failed}, want >= {floor}",
                failed + 1
            );
            assert!(
                gap <= floor * 2 + 5_000,
                "{id}: attempt {} came {gap} ms after attempt {failed}",
                failed + 1
            );
        }
    }

    // Kept-alive connections: far fewer than requests (each stall costs
    // one, as the client drops a connection it gave up on).
    let connections = endpoint.connections.load(Ordering::SeqCst);
    assert!(
        connections <= 8 + STALLING + 4 && connections < requests.len(),
        "{connections} connections for {} requests",
        requests.len()
    );

    let info = info(&mut c);
    let retries = (2 * FAILING + STALLING) as u64;
    for (key, want) in [
        ("fired_total", expected as u64),
        ("delivered_total", expected as u64),
        ("cancelled_total", CANCELLED as u64),
        ("delivery_retries_total", retries),
        ("dead_letter_total", 0),
        ("inflight", 0),
        ("pending", 0),
    ] {
        assert_eq!(info[key], want.to_string(), "INFO {key}: {info:?}");
    }
    // The slowest deliveries waited out a timeout and a backoff.
    let lag: u64 = info["delivery_lag_ms"].parse().unwrap();
    assert!(
        (TIMEOUT_MS + RETRY_INITIAL_MS / 2..60_000).contains(&lag),
        "delivery_lag_ms {lag}"
    );
    let log = server.log();
    assert!(
        log.contains("webhook deliveries failing"),
        "no warn line for failed deliveries:\n{log}"
    );

    // The same figures over GET /metrics.
    let metrics_addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no 'metrics on' line:\n{log}"));
    let metrics = http_get(metrics_addr, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    for key in [
        "delivered_total",
        "delivery_retries_total",
        "dead_letter_total",
        "inflight",
    ] {
        let line = format!("\ntimewheel_{key} {}\n", info[key]);
        assert!(metrics.contains(&line), "no {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains("\ntimewheel_delivery_lag_ms "),
        "{metrics}"
    );

    // Subscribers heard of each firing once, not once per attempt.
    let mut fired = Vec::new();
    subscriber.set_timeout(Duration::from_millis(300));
    while let Ok(push) = subscriber.try_read_reply() {
        let Resp::Array(Some(items)) = push else {
            panic!("unexpected push {push:?}");
        };
        fired.push(items[2].as_str().expect("id").to_owned());
    }
    fired.sort();
    let want: Vec<String> = want.into_iter().cloned().collect();
    assert_eq!(fired, want, "fired messages");
}

#[test]
fn exhausted_attempts_are_dead_lettered_in_redis_with_the_last_error() {
    let redis = RedisServer::start();
    let endpoint = Endpoint::start(|_, _| Reply::Status(503));
    let (url, redis_url) = (endpoint.url(), redis.url());
    let server = TimewheelServer::start(&[
        "--redis",
        &redis_url,
        "--webhook",
        &url,
        "--max-attempts",
        "3",
        "--retry-initial-ms",
        "100",
    ]);
    let mut c = server.conn();
    assert!(c.cmd(&["ADD", "doomed-1", "50"]).as_int().is_some());
    wait_until("the dead letter", Duration::from_secs(20), || {
        info_u64(&mut c, "dead_letter_total") == 1
    });
    let attempts: Vec<u64> = endpoint
        .requests()
        .iter()
        .map(|r| r.field("attempt"))
        .collect();
    assert_eq!(attempts, [1, 2, 3]);

    // Journal writes are asynchronous: poll for the stream entry.
    let mut entries = Vec::new();
    wait_until("XADD tw:dead", Duration::from_secs(10), || {
        let Resp::Array(Some(list)) = redis.cmd(&["XRANGE", "tw:dead", "-", "+"]) else {
            return false;
        };
        entries = list;
        !entries.is_empty()
    });
    assert_eq!(entries.len(), 1, "{entries:?}");
    let Resp::Array(Some(entry)) = &entries[0] else {
        panic!("bad entry {entries:?}");
    };
    let Resp::Array(Some(fields)) = &entry[1] else {
        panic!("bad entry {entries:?}");
    };
    let fields: HashMap<String, String> = fields
        .chunks(2)
        .map(|kv| {
            (
                kv[0].as_str().unwrap().into(),
                kv[1].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(fields["id"], "doomed-1");
    assert_eq!(fields["attempts"], "3");
    assert_eq!(fields["error"], "HTTP 503: try later <b>shop busy</b>");
    assert_eq!(redis.cmd(&["ZCARD", "tw:due"]), Resp::Integer(0));

    let info = info(&mut c);
    for (key, want) in [
        ("delivered_total", "0"),
        ("delivery_retries_total", "2"),
        ("dead_letter_total", "1"),
        ("inflight", "0"),
    ] {
        assert_eq!(info[key], want, "INFO {key}: {info:?}");
    }
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("dead-lettered") && l.contains("doomed-1")),
        "no warn line for the dead letter:\n{log}"
    );
}

#[test]
fn a_refused_connection_is_retried_until_the_endpoint_comes_up() {
    // Reserve a port, then close it: connections are refused until the
    // endpoint binds it again.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/close");
    let server = TimewheelServer::start(&[
        "--webhook",
        &url,
        "--max-attempts",
        "100",
        "--retry-initial-ms",
        "50",
        "--retry-max-ms",
        "100",
    ]);
    let mut c = server.conn();
    assert!(c.cmd(&["ADD", "o-1", "10"]).as_int().is_some());
    wait_until("two refused attempts", Duration::from_secs(20), || {
        info_u64(&mut c, "delivery_retries_total") >= 2
    });
    assert_eq!(info_u64(&mut c, "inflight"), 1);
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the reserved port again");
    let endpoint = Endpoint::serve(listener, Arc::new(|_: &str, _: u32| Reply::Status(204)));
    wait_until("the delivery", Duration::from_secs(20), || {
        info_u64(&mut c, "delivered_total") == 1
    });
    let requests = endpoint.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].field("attempt") >= 3, "{:?}", requests[0].body);
    assert!(
        server.log().contains("Connection refused") || server.log().contains("onnection refused"),
        "the refusal is not in the log:\n{}",
        server.log()
    );
    assert_eq!(info_u64(&mut c, "inflight"), 0);
}

#[test]
fn webhook_and_stream_exclude_each_other_and_other_schemes_are_refused() {
    let (status, stderr) = util::run_timewheel(
        &[
            "serve",
            "--redis",
            "redis://127.0.0.1:1/0",
            "--stream",
            "s",
            "--webhook",
            "http://127.0.0.1:1/close",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    // clap names the flags in the order they were given.
    let line = stderr.lines().next().unwrap_or_default();
    assert!(
        line.contains("cannot be used with")
            && line.contains("'--webhook <URL>'")
            && line.contains("'--stream <STREAM>'"),
        "{stderr}"
    );

    let (status, stderr) = util::run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--webhook",
            "ftp://shop.example/close",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "Error: webhook URL \"ftp://shop.example/close\": expected http:// or https://"
        ),
        "{stderr}"
    );
}

//! The operators' page on the real binary: `GET /due.json` counts a known
//! set of timers in the right buckets, `GET /` renders them in a headless
//! Chromium, and neither ever shows an order id.

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{TimewheelServer, find_on_path, unix_ms};

const SECOND: u64 = 1000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// Ids that must never appear on the page or in its data.
const SECRET: &str = "order-7f3a9c-secret";

/// Offsets from now (ms) of the timers scheduled, each far enough ahead
/// not to fire while the test looks: two in the next minute's seconds, one
/// more in the minute tier, the hour tier, and past a day.
const OFFSETS: [u64; 12] = [
    5_500,
    5_600,
    20_200,
    59_000,
    90 * SECOND,
    90 * SECOND + 1,
    10 * MINUTE,
    2 * HOUR,
    2 * HOUR + 5,
    23 * HOUR + 30 * MINUTE,
    25 * HOUR,
    100 * DAY,
];

fn start() -> (TimewheelServer, String, Vec<u64>) {
    let server = TimewheelServer::start(&["--metrics-bind", "127.0.0.1:0"]);
    let log = server.log();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no 'metrics on' line:\n{log}"))
        .to_owned();
    let mut conn = server.conn();
    let now = unix_ms();
    let deadlines: Vec<u64> = OFFSETS.iter().map(|offset| now + offset).collect();
    for (n, deadline) in deadlines.iter().enumerate() {
        let id = format!("{SECRET}-{n}");
        let reply = conn.cmd(&["ADDAT", &id, &deadline.to_string()]);
        assert_eq!(reply.as_int(), Some(*deadline as i64), "{reply:?}");
    }
    (server, addr, deadlines)
}

/// One request on a fresh connection; the whole reply, head included.
fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read the reply");
    reply
}

fn get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// How many of `deadlines` fall in `[start, start + width)`.
fn within(deadlines: &[u64], start: u64, width: u64) -> u64 {
    deadlines
        .iter()
        .filter(|&&d| (start..start + width).contains(&d))
        .count() as u64
}

fn counts(json: &Value, key: &str) -> Vec<u64> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key} in {json}"))
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect()
}

#[test]
fn due_json_counts_known_timers_in_their_buckets() {
    let (_server, addr, deadlines) = start();
    let reply = get(&addr, "/due.json");
    assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
    assert!(
        reply.contains("Content-Type: application/json\r\n"),
        "{reply}"
    );
    assert!(reply.contains("Cache-Control: no-store\r\n"), "{reply}");
    assert!(!reply.contains(SECRET), "an id in /due.json:\n{reply}");
    let json: Value = serde_json::from_str(body(&reply)).expect("due.json is JSON");

    let from = json["from_ms"].as_u64().unwrap();
    assert_eq!(from % SECOND, 0, "buckets start on a whole second");
    assert!(from <= json["now_ms"].as_u64().unwrap());
    let expected = |width: u64, n: usize| -> Vec<u64> {
        (0..n as u64)
            .map(|i| within(&deadlines, from + i * width, width))
            .collect()
    };
    assert_eq!(counts(&json, "seconds"), expected(SECOND, 60));
    assert_eq!(counts(&json, "minutes"), expected(MINUTE, 60));
    assert_eq!(counts(&json, "hours"), expected(HOUR, 24));
    // Whatever second the request fell in, these hold.
    assert_eq!(counts(&json, "seconds").iter().sum::<u64>(), 4);
    assert_eq!(counts(&json, "minutes").iter().sum::<u64>(), 7);
    assert_eq!(counts(&json, "hours").iter().sum::<u64>(), 10);
    assert_eq!(json["later"], 2);
    assert_eq!(json["pending"], 12);
    assert_eq!(json["overdue"], 0);
    assert_eq!(json["inflight"], 0);
    assert_eq!(json["retrying"], 0);
    // The figures of INFO, by their INFO names.
    let figures = &json["figures"];
    assert_eq!(figures["pending"], 12);
    assert_eq!(figures["journal"], "off");
    assert_eq!(figures["tick_ms"], 10);
    assert!(json.get("partitions").is_none(), "not in cluster mode");

    // The page, /metrics beside it, and the refusals metrics.rs makes.
    let page = get(&addr, "/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html; charset=utf-8\r\n"));
    assert!(page.contains("Content-Security-Policy: default-src 'none';"));
    assert!(page.contains("what falls due when"));
    assert!(get(&addr, "/metrics").contains("\ntimewheel_pending 12\n"));
    assert!(get(&addr, "/due.json?x=1").starts_with("HTTP/1.1 200 OK"));
    assert!(get(&addr, "/nope").starts_with("HTTP/1.1 404"));
    assert!(get(&addr, "/../metrics").starts_with("HTTP/1.1 404"));
    let post = http(
        &addr,
        "POST /due.json HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
}

/// A browser on this machine, if there is one.
fn chromium() -> Option<std::path::PathBuf> {
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .find_map(|name| find_on_path(name))
}

/// The page as a headless browser leaves it after three seconds of
/// virtual time (three refreshes).
fn rendered_dom(browser: &std::path::Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the browser");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let give_up = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("the browser did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().unwrap()
}

/// The text of the element with `id="ID"`, which holds text only.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = format!("id=\"{id}\"");
    dom.split(&start)
        .nth(1)
        .and_then(|rest| rest.split_once('>'))
        .and_then(|(_, rest)| rest.split('<').next())
        .unwrap_or_else(|| panic!("no element {id} in the page:\n{dom}"))
}

#[test]
fn the_page_renders_the_figures_in_a_browser() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium on PATH (apt-get install chromium; .ci/run installs it)");
        return;
    };
    let (_server, addr, _) = start();
    let dom = rendered_dom(&browser, &format!("http://{addr}/"));
    assert!(!dom.contains(SECRET), "an id on the page:\n{dom}");
    assert_eq!(text_of(&dom, "pending"), "12", "{dom}");
    assert_eq!(text_of(&dom, "overdue"), "0");
    assert_eq!(text_of(&dom, "inflight"), "0");
    assert_eq!(text_of(&dom, "retrying"), "0");
    assert_eq!(text_of(&dom, "dead"), "0");
    assert_eq!(text_of(&dom, "journal"), "off");
    assert_eq!(
        text_of(&dom, "pending-sub"),
        "2 timers due in more than 24 h"
    );
    assert!(
        text_of(&dom, "status").starts_with("updated "),
        "{}",
        text_of(&dom, "status")
    );
    // Every bucket is drawn with its count: 60 + 60 + 24 columns.
    let columns: Vec<u64> = dom
        .split("data-count=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(columns.len(), 60 + 60 + 24, "{dom}");
    assert_eq!(columns[..60].iter().sum::<u64>(), 4);
    assert_eq!(columns[60..120].iter().sum::<u64>(), 7);
    assert_eq!(columns[120..].iter().sum::<u64>(), 10);
}

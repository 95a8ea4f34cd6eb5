//! The client libraries of the shops' languages against the real binary,
//! each running the same scenario (see `docs/clients.md`): `ADD`, `PTTL`,
//! `CANCEL`, a pipeline, `SUBSCRIBE fired`, and a consumer group reading the
//! journal's Redis Stream (`--redis .. --stream`).
//!
//! - PHP: `php/check.php`, phpredis `rawCommand` (Debian `php-cli php-redis`)
//! - Node.js: `node/check.js`, ioredis `call` (`npm ci` in `node/`)
//! - Python: `python/check.py`, redis-py, its default pipeline included
//! - Rust: the `redis` crate, in this file
//!
//! Run with `cargo test --test clients`. A language whose runtime or client
//! library is missing is skipped with a line starting `SKIPPED:` (`.ci/run`
//! installs all of them).
#[path = "../util/mod.rs"]
mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use util::{RedisServer, TimewheelServer, unix_ms};

const STREAM: &str = "orders:closed";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// A journal in a private Redis and a server moving fired orders into `STREAM`.
fn start() -> (RedisServer, TimewheelServer) {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = TimewheelServer::start(&["--redis", &url, "--stream", STREAM]);
    (redis, server)
}

/// `true` if `program args` exits 0; otherwise prints why `language` is skipped.
fn available(language: &str, program: &str, args: &[&str], install: &str) -> bool {
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "SKIPPED: the {language} client check ({install}): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: the {language} client check: {program} not runnable ({e}; {install})"
            );
            false
        }
    }
}

/// Runs a client's check script against a fresh server; it must print `ok`.
fn run_check(program: &str, script: &Path) {
    let (redis, server) = start();
    let output = Command::new(program)
        .arg(script)
        .args([
            &server.port().to_string(),
            &redis.port().to_string(),
            STREAM,
        ])
        .output()
        .expect("run the client check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ok"),
        "{} failed ({}):\n{stdout}\n{}\nserver log:\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
}

#[test]
fn php_phpredis() {
    if available(
        "PHP",
        "php",
        &["-r", "exit(extension_loaded('redis') ? 0 : 1);"],
        "apt-get install php-cli php-redis",
    ) {
        run_check("php", &dir().join("php/check.php"));
    }
}

#[test]
fn node_ioredis() {
    let node = dir().join("node");
    if available(
        "Node.js",
        "node",
        &[
            "-e",
            "require(process.argv[1])",
            node.join("node_modules/ioredis").to_str().unwrap(),
        ],
        "apt-get install nodejs npm; npm ci in tests/clients/node",
    ) {
        run_check("node", &node.join("check.js"));
    }
}

#[test]
fn python_redis_py() {
    if available(
        "Python",
        "python3",
        &["-c", "import redis"],
        "pip install redis",
    ) {
        run_check("python3", &dir().join("python/check.py"));
    }
}

#[test]
fn rust_redis_crate() {
    let (redis_server, server) = start();
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", server.port())).unwrap();
    let mut con = client.get_connection().expect("connect");

    // ADD, PTTL, CANCEL.
    let now = unix_ms() as i64;
    let deadline: i64 = redis::cmd("ADD")
        .arg("rs:1")
        .arg(60_000)
        .query(&mut con)
        .unwrap();
    // The server's clock may trail ours by a few ms.
    assert!(deadline >= now + 59_000, "{deadline}");
    let pttl: i64 = redis::cmd("PTTL").arg("rs:1").query(&mut con).unwrap();
    assert!(pttl > 0 && pttl <= 60_000, "{pttl}");
    let cancelled: i64 = redis::cmd("CANCEL").arg("rs:1").query(&mut con).unwrap();
    assert_eq!(cancelled, 1);

    // A pipeline, and the same commands as a transaction (MULTI/EXEC).
    let (a, b, cancelled, count): (i64, i64, i64, i64) = redis::pipe()
        .cmd("ADD")
        .arg("rs:p1")
        .arg(60_000)
        .cmd("ADD")
        .arg("rs:p2")
        .arg(60_000)
        .cmd("CANCEL")
        .arg("rs:p1")
        .cmd("COUNT")
        .query(&mut con)
        .unwrap();
    assert!(a > now && b > now);
    assert_eq!((cancelled, count), (1, 1));
    let (cancelled, count): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("CANCEL")
        .arg("rs:p2")
        .cmd("COUNT")
        .query(&mut con)
        .unwrap();
    assert_eq!((cancelled, count), (1, 0));

    // SUBSCRIBE fired, then an order due now.
    let mut sub_con = client.get_connection().expect("connect");
    let mut pubsub = sub_con.as_pubsub();
    pubsub.subscribe("fired").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _: i64 = redis::cmd("ADD")
        .arg("rs:fired")
        .arg(0)
        .query(&mut con)
        .unwrap();
    let message = pubsub.get_message().expect("a fired message");
    assert_eq!(message.get_channel_name(), "fired");
    assert_eq!(message.get_payload::<String>().unwrap(), "rs:fired");
    drop(pubsub);

    // The stream consumer: the journal's Redis Stream, with a consumer group.
    let journal = redis::Client::open(redis_server.url()).unwrap();
    let mut r = journal.get_connection().unwrap();
    let _: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg(&["CREATE", STREAM, "shop", "0", "MKSTREAM"])
        .query(&mut r);
    let mut closed = None;
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while closed.is_none() && std::time::Instant::now() < end {
        // [[stream, [[entry id, [field, value, ...]], ...]]] or nil on timeout.
        type Entries = Vec<(String, Vec<String>)>;
        let batch: Option<Vec<(String, Entries)>> = redis::cmd("XREADGROUP")
            .arg(&[
                "GROUP",
                "shop",
                "rs-worker",
                "COUNT",
                "100",
                "BLOCK",
                "1000",
            ])
            .arg(&["STREAMS", STREAM, ">"])
            .query(&mut r)
            .unwrap();
        for (_, entries) in batch.unwrap_or_default() {
            for (entry_id, fields) in entries {
                if fields.chunks(2).any(|kv| kv == ["id", "rs:fired"]) {
                    closed = Some(fields);
                }
                let _: i64 = redis::cmd("XACK")
                    .arg(&[STREAM, "shop", &entry_id])
                    .query(&mut r)
                    .unwrap();
            }
        }
    }
    let fields = closed.expect("rs:fired read from the stream");
    assert!(fields.iter().any(|f| f == "deadline_ms"), "{fields:?}");
    let pending: (i64,) = redis::cmd("XPENDING")
        .arg(&[STREAM, "shop"])
        .query(&mut r)
        .map(|v: Vec<redis::Value>| match &v[0] {
            redis::Value::Int(n) => (*n,),
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(pending, (0,));
}

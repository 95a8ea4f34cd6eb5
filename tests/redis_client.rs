//! The real `timewheel serve` binary through the `redis` crate's sync client,
//! as an application would use it: commands and their errors, pipelines,
//! many connections, pub/sub (RESP2 `PubSub` and RESP3 pushes), the client
//! limit, the idle timeout, and shutdown on SIGTERM.
//!
//! Run with `cargo test --test redis_client`.
//!
//! Every test starts its own server (`--tick-ms 10`). Waits poll with a
//! deadline and reads have timeouts; nothing sleeps for a fixed time.

mod util;

use std::collections::{HashMap, HashSet};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, RedisResult, Value};
use util::{TimewheelServer, unix_ms, wait_until};

/// Allowed difference between the test's clock and the server's.
const CLOCK_SLACK_MS: i64 = 1_000;

/// How long any one reply may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> i64 {
    unix_ms() as i64
}

fn url(server: &TimewheelServer) -> String {
    format!("redis://127.0.0.1:{}/", server.port())
}

/// A connection made the way applications make it: `Client::open` and
/// `get_connection` (which pipelines `CLIENT SETINFO` on connect).
fn connect(server: &TimewheelServer) -> Connection {
    let client = redis::Client::open(url(server)).expect("client");
    let con = client
        .get_connection_with_timeout(READ_TIMEOUT)
        .expect("connect");
    con.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    con.set_write_timeout(Some(READ_TIMEOUT)).expect("timeout");
    con
}

/// The error a command returns, which must be an error.
#[track_caller]
fn error_of(result: RedisResult<Value>) -> RedisError {
    match result {
        Err(e) => e,
        Ok(value) => panic!("expected an error, got {value:?}"),
    }
}

/// Checks an error reply: its code (`ERR`, `EXISTS`) and the text after it.
#[track_caller]
fn assert_error(result: RedisResult<Value>, code: &str, detail: &str) {
    let e = error_of(result);
    assert_eq!(e.code(), Some(code), "{e:?}");
    assert_eq!(e.detail(), Some(detail), "{e:?}");
}

fn info(con: &mut Connection) -> redis::InfoDict {
    redis::cmd("INFO").query(con).expect("INFO")
}

#[track_caller]
fn info_u64(con: &mut Connection, key: &str) -> u64 {
    let info = info(con);
    info.get(key)
        .unwrap_or_else(|| panic!("INFO has no numeric {key}: {info:?}"))
}

#[test]
fn commands_and_their_errors() {
    let server = TimewheelServer::start(&[]);
    let mut con = connect(&server);

    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
    assert_eq!(
        redis::cmd("PING")
            .arg("hello")
            .query::<String>(&mut con)
            .unwrap(),
        "hello"
    );

    let at = now_ms() + 600_000;
    let added: i64 = redis::cmd("ADDAT")
        .arg("o:1")
        .arg(at)
        .query(&mut con)
        .unwrap();
    assert_eq!(added, at);
    let before = now_ms();
    let deadline: i64 = redis::cmd("ADD")
        .arg("o:2")
        .arg(60_000)
        .query(&mut con)
        .unwrap();
    assert!(
        (before + 60_000 - CLOCK_SLACK_MS..=now_ms() + 60_000 + CLOCK_SLACK_MS).contains(&deadline),
        "ADD deadline {deadline}"
    );
    assert_error(
        redis::cmd("ADD").arg("o:1").arg(5_000).query(&mut con),
        "EXISTS",
        "o:1 is already scheduled",
    );
    let moved: i64 = redis::cmd("ADDAT")
        .arg("o:1")
        .arg(at + 1)
        .arg("REPLACE")
        .query(&mut con)
        .unwrap();
    assert_eq!(moved, at + 1);

    let left: i64 = redis::cmd("PTTL").arg("o:1").query(&mut con).unwrap();
    assert!(
        (600_000 - CLOCK_SLACK_MS..=600_001 + CLOCK_SLACK_MS).contains(&left),
        "PTTL {left}"
    );
    assert_eq!(
        redis::cmd("PTTL")
            .arg("nobody")
            .query::<i64>(&mut con)
            .unwrap(),
        -2
    );
    assert_eq!(redis::cmd("COUNT").query::<u64>(&mut con).unwrap(), 2);
    assert!(
        redis::cmd("CANCEL")
            .arg("o:1")
            .query::<bool>(&mut con)
            .unwrap()
    );
    assert!(
        !redis::cmd("CANCEL")
            .arg("o:1")
            .query::<bool>(&mut con)
            .unwrap()
    );
    assert_eq!(
        redis::cmd("CANCEL")
            .arg("nobody")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(redis::cmd("COUNT").query::<u64>(&mut con).unwrap(), 1);

    // A past deadline fires at the next tick.
    assert_eq!(
        redis::cmd("ADDAT")
            .arg("past")
            .arg(1_000_000_000_000u64)
            .query::<i64>(&mut con)
            .unwrap(),
        1_000_000_000_000
    );
    wait_until("the past deadline to fire", READ_TIMEOUT, || {
        redis::cmd("PTTL")
            .arg("past")
            .query::<i64>(&mut con)
            .unwrap()
            == -2
    });
    assert!(
        !redis::cmd("CANCEL")
            .arg("past")
            .query::<bool>(&mut con)
            .unwrap()
    );

    let info = info(&mut con);
    for key in [
        "pending",
        "fired_total",
        "cancelled_total",
        "connected_clients",
        "tick_ms",
        "tick_lag_ms",
        "journal",
        "uptime_s",
        "version",
    ] {
        assert!(info.contains_key(&key), "INFO lacks {key}: {info:?}");
    }
    assert_eq!(info.get::<u64>("pending"), Some(1));
    assert_eq!(info.get::<u64>("fired_total"), Some(1));
    assert_eq!(info.get::<u64>("cancelled_total"), Some(1));
    assert_eq!(info.get::<u64>("connected_clients"), Some(1));
    assert_eq!(info.get::<u64>("tick_ms"), Some(10));
    assert_eq!(info.get::<String>("journal").as_deref(), Some("off"));
    assert_eq!(
        info.get::<String>("version").as_deref(),
        Some(env!("CARGO_PKG_VERSION"))
    );

    // Errors are ordinary error results; the connection stays usable.
    const BAD_ID: &str = "invalid id: an order id is 1 to 128 bytes of printable ASCII without spaces (0x21 to 0x7E)";
    const DELAY: &str = "delay must be an integer number of milliseconds, or an integer with a \
                         unit (ms, s, m, h, d), from 0 to 366 days (31622400000 ms); got";
    let (soon, too_long) = (format!("{DELAY} 'soon'"), format!("{DELAY} '31622400001'"));
    let errors: Vec<(redis::Cmd, &str, &str)> = vec![
        (redis::cmd("FOO"), "ERR", "unknown command 'FOO'"),
        (
            redis::cmd("ADD").arg("x").clone(),
            "ERR",
            "wrong number of arguments for 'add' command",
        ),
        (redis::cmd("ADD").arg("x").arg("soon").clone(), "ERR", &soon),
        (
            redis::cmd("ADD").arg("x").arg(31_622_400_001u64).clone(),
            "ERR",
            &too_long,
        ),
        (redis::cmd("ADD").arg("a b").arg(5).clone(), "ERR", BAD_ID),
        (
            redis::cmd("CANCEL").arg("x".repeat(129)).clone(),
            "ERR",
            BAD_ID,
        ),
        (
            redis::cmd("SELECT").arg(1).clone(),
            "ERR",
            "DB index is out of range",
        ),
    ];
    for (cmd, code, detail) in errors {
        assert_error(cmd.query(&mut con), code, detail);
        assert_eq!(
            redis::cmd("PING").query::<String>(&mut con).unwrap(),
            "PONG"
        );
    }

    // What client libraries ask for.
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .unwrap();
    assert_eq!(config, HashMap::from([("save".to_owned(), String::new())]));
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query::<()>(&mut con)
        .unwrap();
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name.as_deref(), Some("worker-1"));
    redis::cmd("SELECT").arg(0).query::<()>(&mut con).unwrap();

    // A URL naming another database fails to connect, as with Redis.
    let client = redis::Client::open(format!("{}1", url(&server))).unwrap();
    let e = client.get_connection_with_timeout(READ_TIMEOUT).err();
    assert!(
        e.as_ref().and_then(|e| e.detail()) == Some("DB index is out of range"),
        "{e:?}"
    );
}

#[test]
fn ten_thousand_commands_in_one_pipeline() {
    const GROUPS: i64 = 2_500;
    let server = TimewheelServer::start(&[]);
    let mut con = connect(&server);
    let base = now_ms() + 600_000;
    let mut pipe = redis::pipe();
    for i in 0..GROUPS {
        let id = format!("p:{i}");
        pipe.cmd("ADDAT").arg(&id).arg(base + i);
        pipe.cmd("PTTL").arg(&id);
        pipe.cmd("CANCEL").arg(&id);
        pipe.cmd("PTTL").arg(&id);
    }
    let replies: Vec<i64> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(replies.len(), 4 * GROUPS as usize);
    for (i, group) in (0..GROUPS).zip(replies.chunks(4)) {
        assert_eq!(group[0], base + i, "ADDAT p:{i}");
        assert!(
            (1..=600_000 + i + CLOCK_SLACK_MS).contains(&group[1]),
            "PTTL p:{i} = {}",
            group[1]
        );
        assert_eq!(group[2..], [1, -2], "CANCEL p:{i}, PTTL p:{i}");
    }
    assert_eq!(redis::cmd("COUNT").query::<u64>(&mut con).unwrap(), 0);

    // An error inside a pipeline is reported; the others still ran.
    let at = now_ms() + 600_000;
    let results: Vec<RedisResult<i64>> = redis::pipe()
        .cmd("ADDAT")
        .arg("e:1")
        .arg(at)
        .cmd("ADD")
        .arg("e:1")
        .arg(5)
        .cmd("COUNT")
        .ignore_errors()
        .query(&mut con)
        .expect("pipeline");
    assert_eq!(results[0].as_ref().ok(), Some(&at));
    let e = results[1].as_ref().expect_err("EXISTS");
    assert_eq!(e.code(), Some("EXISTS"), "{e:?}");
    assert_eq!(results[2].as_ref().ok(), Some(&1));
}

#[test]
fn a_hundred_connections_from_ten_threads() {
    const THREADS: usize = 10;
    const PER_THREAD: usize = 10;
    let server = TimewheelServer::start(&[]);
    let mut watcher = connect(&server);
    let at = now_ms() + 600_000;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut cons: Vec<Connection> = (0..PER_THREAD).map(|_| connect(&server)).collect();
            thread::spawn(move || {
                for round in 0..10 {
                    for (c, con) in cons.iter_mut().enumerate() {
                        let id = format!("c:{t}:{c}:{round}");
                        let added: i64 = redis::cmd("ADDAT").arg(&id).arg(at).query(con).unwrap();
                        assert_eq!(added, at);
                        let left: i64 = redis::cmd("PTTL").arg(&id).query(con).unwrap();
                        assert!(left > 0 && left <= 600_000 + CLOCK_SLACK_MS, "{left}");
                        assert!(redis::cmd("CANCEL").arg(&id).query::<bool>(con).unwrap());
                    }
                }
                cons
            })
        })
        .collect();
    let cons: Vec<Connection> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let info = info(&mut watcher);
    assert_eq!(
        info.get::<usize>("connected_clients"),
        Some(THREADS * PER_THREAD + 1)
    );
    assert_eq!(
        info.get::<usize>("cancelled_total"),
        Some(THREADS * PER_THREAD * 10)
    );
    assert_eq!(info.get::<u64>("pending"), Some(0));
    drop(cons);
    wait_until("the clients to be gone", READ_TIMEOUT, || {
        info_u64(&mut watcher, "connected_clients") == 1
    });
}

#[test]
fn pubsub_gets_fired_timers_and_never_cancelled_ones() {
    const N: usize = 100;
    let server = TimewheelServer::start(&[]);
    let mut sub_con = connect(&server);
    let mut pubsub = sub_con.as_pubsub();
    pubsub.subscribe("fired").expect("subscribe");
    pubsub.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut con = connect(&server);
    assert_eq!(info_u64(&mut con, "subscribers"), 1);

    let due = now_ms() + 1_000;
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("ADDAT").arg(format!("keep:{i}")).arg(due).ignore();
        pipe.cmd("ADDAT").arg(format!("drop:{i}")).arg(due).ignore();
    }
    for i in 0..N {
        pipe.cmd("CANCEL").arg(format!("drop:{i}"));
    }
    pipe.cmd("ADDAT").arg("last").arg(due + 50).ignore();
    let cancelled: Vec<bool> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(cancelled, vec![true; N]);

    let mut kept = HashSet::new();
    let mut last = false;
    while kept.len() < N || !last {
        let msg = pubsub.get_message().expect("a fired message");
        assert_eq!(msg.get_channel_name(), "fired");
        let id: String = msg.get_payload().expect("payload");
        assert!(!id.starts_with("drop:"), "cancelled timer {id} fired");
        if id == "last" {
            last = true;
        } else {
            assert!(id.starts_with("keep:"), "unexpected id {id}");
            assert!(kept.insert(id.clone()), "{id} fired twice");
        }
    }
    pubsub.unsubscribe("fired").expect("unsubscribe");
    // Dropping the PubSub sends UNSUBSCRIBE and PUNSUBSCRIBE and waits for
    // both confirmations (regression: PUNSUBSCRIBE was an unknown command,
    // which left the crate's connection stuck in pub/sub mode for good).
    drop(pubsub);
    // Back to an ordinary connection.
    assert_eq!(redis::cmd("COUNT").query::<u64>(&mut sub_con).unwrap(), 0);
    assert_eq!(info_u64(&mut con, "subscribers"), 0);
    assert_eq!(info_u64(&mut con, "cancelled_total"), N as u64);
}

#[test]
fn resp3_connection_gets_fired_timers_as_pushes() {
    let server = TimewheelServer::start(&[]);
    let client = redis::Client::open(format!("{}?protocol=resp3", url(&server))).unwrap();
    let mut con = client
        .get_connection_with_timeout(READ_TIMEOUT)
        .expect("HELLO 3");
    con.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    con.set_push_sender(tx);
    con.subscribe_resp3("fired").expect("subscribe");
    // In RESP3 a subscribed connection runs any command.
    let at: i64 = redis::cmd("ADDAT")
        .arg("r3")
        .arg(1_000_000_000_000u64)
        .query(&mut con)
        .unwrap();
    assert_eq!(at, 1_000_000_000_000);
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut fired = Vec::new();
    while fired.is_empty() {
        assert!(Instant::now() < deadline, "no push for r3");
        // Pushes are handed over while the connection reads a reply.
        assert_eq!(
            redis::cmd("PING").query::<String>(&mut con).unwrap(),
            "PONG"
        );
        while let Ok(push) = rx.try_recv() {
            if push.kind == redis::PushKind::Message {
                fired.push(push.data);
            }
        }
    }
    assert_eq!(
        fired,
        vec![vec![
            Value::BulkString(b"fired".to_vec()),
            Value::BulkString(b"r3".to_vec())
        ]]
    );
}

#[test]
fn max_clients_refuses_the_next_connection() {
    let server = TimewheelServer::start(&["--max-clients", "2"]);
    let mut first = connect(&server);
    let second = connect(&server);
    // The server sends `-ERR max number of clients reached` and closes, as
    // Redis does; the crate reports whatever its connection setup saw first.
    let client = redis::Client::open(url(&server)).unwrap();
    assert!(client.get_connection_with_timeout(READ_TIMEOUT).is_err());
    assert_eq!(info_u64(&mut first, "rejected_connections"), 1);
    drop(second);
    wait_until("a slot to free", READ_TIMEOUT, || {
        info_u64(&mut first, "connected_clients") == 1
    });
    let mut third = connect(&server);
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut third).unwrap(),
        "PONG"
    );
}

#[test]
fn idle_connection_is_closed_and_a_new_one_works() {
    let server = TimewheelServer::start(&["--idle-timeout-s", "1"]);
    let mut idle = connect(&server);
    let mut active = connect(&server);
    let started = Instant::now();
    wait_until("the idle client to be closed", READ_TIMEOUT, || {
        assert_eq!(
            redis::cmd("PING").query::<String>(&mut active).unwrap(),
            "PONG"
        );
        info_u64(&mut active, "idle_closed_total") == 1
    });
    assert!(started.elapsed() >= Duration::from_millis(900));
    let e = redis::cmd("PING")
        .query::<String>(&mut idle)
        .expect_err("the idle connection is closed");
    assert!(e.is_io_error() || e.is_connection_dropped(), "{e:?}");
    let mut fresh = connect(&server);
    assert_eq!(redis::cmd("COUNT").query::<u64>(&mut fresh).unwrap(), 0);
}

#[test]
fn sigterm_answers_a_sent_pipeline_and_exits_zero() {
    const N: usize = 5_000;
    let mut server = TimewheelServer::start(&[]);
    let mut con = connect(&server);
    let at = now_ms() + 600_000;
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("ADDAT").arg(format!("t:{i}")).arg(at);
    }
    pipe.cmd("COUNT");
    // Sent, not yet read: then the signal.
    con.send_packed_command(&pipe.get_packed_pipeline())
        .expect("send");
    server.send_sigterm();
    for i in 0..N {
        let reply = con.recv_response().expect("reply");
        assert_eq!(reply, Value::Int(at), "ADDAT t:{i}");
    }
    assert_eq!(con.recv_response().expect("COUNT"), Value::Int(N as i64));
    let e = con.recv_response().expect_err("closed after shutdown");
    assert!(e.is_io_error() || e.is_connection_dropped(), "{e:?}");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

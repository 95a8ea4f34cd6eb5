//! RESP3 (`HELLO 3`) against the real binary: raw bytes where the reply is
//! deterministic, then the `redis` crate negotiating RESP3 itself.
//!
//! Run with `cargo test --test resp3`.
mod util;

use std::time::{Duration, Instant};

use util::wire::fired_push;
use util::{Resp, RespConn, TimewheelServer, unix_ms};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The exact `HELLO` reply: a `%7` map in RESP3, a flat `*14` array in RESP2.
fn hello_bytes(proto: u8, id: i64) -> Vec<u8> {
    let header = match proto {
        3 => "%7\r\n".to_owned(),
        _ => "*14\r\n".to_owned(),
    };
    format!(
        "{header}$6\r\nserver\r\n$9\r\ntimewheel\r\n$7\r\nversion\r\n${}\r\n{VERSION}\r\n\
         $5\r\nproto\r\n:{proto}\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        VERSION.len()
    )
    .into_bytes()
}

/// Sends one command and returns the exact bytes of its reply.
fn raw(conn: &mut RespConn, args: &[&str]) -> Vec<u8> {
    conn.send(args);
    conn.read_raw_reply()
}

/// Asserts byte equality, printing both sides readably on failure.
#[track_caller]
fn assert_bytes(got: Vec<u8>, want: impl AsRef<[u8]>) {
    let want = want.as_ref();
    assert_eq!(
        got.escape_ascii().to_string(),
        want.escape_ascii().to_string()
    );
}

fn client_id(conn: &mut RespConn) -> i64 {
    conn.cmd(&["CLIENT", "ID"])
        .as_int()
        .expect("CLIENT ID is an integer")
}

fn now_ms() -> i64 {
    unix_ms() as i64
}

#[test]
fn hello_3_replies_with_a_map_and_hello_2_with_a_flat_array() {
    let server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    let id = client_id(&mut conn);
    // HELLO without a version reports the current protocol: RESP2 by default.
    assert_bytes(raw(&mut conn, &["HELLO"]), hello_bytes(2, id));
    assert_bytes(raw(&mut conn, &["HELLO", "3"]), hello_bytes(3, id));
    assert_bytes(raw(&mut conn, &["HELLO"]), hello_bytes(3, id));
    assert_bytes(raw(&mut conn, &["CLIENT", "GETNAME"]), "_\r\n");
    // And back: the HELLO 2 reply is already RESP2.
    assert_bytes(raw(&mut conn, &["HELLO", "2"]), hello_bytes(2, id));
    assert_bytes(raw(&mut conn, &["CLIENT", "GETNAME"]), "$-1\r\n");
}

#[test]
fn hello_with_an_unknown_version_is_refused_and_changes_nothing() {
    let server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    for version in ["4", "1", "0", "-1", "99999999999"] {
        assert_bytes(
            raw(&mut conn, &["HELLO", version]),
            "-NOPROTO unsupported protocol version\r\n",
        );
    }
    for version in ["three", "3.0", ""] {
        assert_bytes(
            raw(&mut conn, &["HELLO", version]),
            "-ERR Protocol version is not an integer or out of range\r\n",
        );
    }
    assert_bytes(
        raw(&mut conn, &["HELLO", "3", "SETNAME"]),
        "-ERR Syntax error in HELLO option 'SETNAME'\r\n",
    );
    assert_bytes(
        raw(&mut conn, &["HELLO", "3", "AUTH", "default"]),
        "-ERR Syntax error in HELLO option 'AUTH'\r\n",
    );
    // Still RESP2.
    assert_bytes(raw(&mut conn, &["CLIENT", "GETNAME"]), "$-1\r\n");
}

#[test]
fn hello_setname_names_the_connection() {
    let server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    let id = client_id(&mut conn);
    assert_bytes(
        raw(&mut conn, &["HELLO", "3", "SETNAME", "worker-1"]),
        hello_bytes(3, id),
    );
    assert_bytes(raw(&mut conn, &["CLIENT", "GETNAME"]), "$8\r\nworker-1\r\n");
    let info = conn.cmd(&["CLIENT", "INFO"]);
    assert_eq!(
        info.as_str(),
        Some(format!("id={id} name=worker-1 resp=3 sub=0").as_str())
    );
    // Names must not break CLIENT LIST: the same rule for HELLO and CLIENT.
    let bad_name = "-ERR Client names cannot contain spaces, newlines or special characters.\r\n";
    assert_bytes(raw(&mut conn, &["HELLO", "3", "SETNAME", "a b"]), bad_name);
    assert_bytes(raw(&mut conn, &["CLIENT", "SETNAME", "a\nb"]), bad_name);
    assert_bytes(
        raw(&mut conn, &["CLIENT", "SETNAME"]),
        "-ERR wrong number of arguments for 'client|setname' command\r\n",
    );
    assert_bytes(raw(&mut conn, &["CLIENT", "GETNAME"]), "$8\r\nworker-1\r\n");
}

#[test]
fn commands_after_hello_3() {
    let server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    conn.cmd(&["HELLO", "3"]);

    let before = now_ms();
    let deadline = conn.cmd(&["ADD", "order:1", "60000"]).as_int().unwrap();
    // The server's clock reads the wall clock once, then advances by
    // `Instant`: allow it a little skew against ours.
    let skew = 1_000;
    assert!(
        (before + 60_000 - skew..=now_ms() + 60_000 + skew).contains(&deadline),
        "deadline {deadline}, before {before}"
    );
    let pttl = conn.cmd(&["PTTL", "order:1"]).as_int().unwrap();
    assert!((59_000..=60_000).contains(&pttl), "{pttl}");
    assert_bytes(
        raw(&mut conn, &["ADD", "order:1", "1000"]),
        "-EXISTS order:1 is already scheduled\r\n",
    );
    assert_bytes(
        raw(
            &mut conn,
            &["ADDAT", "order:2", &(deadline + 1).to_string()],
        ),
        format!(":{}\r\n", deadline + 1),
    );
    assert_bytes(raw(&mut conn, &["COUNT"]), ":2\r\n");
    assert_bytes(raw(&mut conn, &["CANCEL", "order:1"]), ":1\r\n");
    assert_bytes(raw(&mut conn, &["CANCEL", "order:1"]), ":0\r\n");
    // A missing id is -2, as in Redis; PTTL never answers null.
    assert_bytes(raw(&mut conn, &["PTTL", "order:1"]), ":-2\r\n");
    assert_bytes(raw(&mut conn, &["COUNT"]), ":1\r\n");
    assert_bytes(raw(&mut conn, &["PING"]), "+PONG\r\n");
    assert_bytes(raw(&mut conn, &["PING", "hi"]), "$2\r\nhi\r\n");
    assert_bytes(raw(&mut conn, &["CLIENT", "GETNAME"]), "_\r\n");
    assert_bytes(
        raw(&mut conn, &["SELECT", "zero"]),
        "-ERR value is not an integer or out of range\r\n",
    );

    // INFO stays a bulk string (`$`), not a RESP3 verbatim string (`=`).
    let info = raw(&mut conn, &["INFO"]);
    assert!(info.starts_with(b"$"), "{}", info.escape_ascii());
    let text = String::from_utf8(info).unwrap();
    assert!(text.contains("\r\npending:1\r\n"), "{text}");
    assert!(text.contains("\r\ncancelled_total:1\r\n"), "{text}");

    // CONFIG GET answers with a map in RESP3.
    assert_bytes(
        raw(&mut conn, &["CONFIG", "GET", "appendonly"]),
        "%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
    );
}

#[test]
fn subscribe_confirmation_and_fired_messages_are_pushes() {
    let server = TimewheelServer::start(&[]);
    let mut sub = server.conn();
    sub.cmd(&["HELLO", "3"]);
    assert_bytes(
        raw(&mut sub, &["SUBSCRIBE", "fired"]),
        ">3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    let mut other = server.conn();
    assert!(other.cmd(&["ADD", "order:7", "0"]).as_int().is_some());
    assert_bytes(sub.read_raw_reply(), fired_push("order:7"));

    assert_bytes(
        raw(&mut sub, &["UNSUBSCRIBE"]),
        ">3\r\n$11\r\nunsubscribe\r\n$5\r\nfired\r\n:0\r\n",
    );
    // Not subscribed to anything: the channel is null.
    assert_bytes(
        raw(&mut sub, &["UNSUBSCRIBE"]),
        ">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n",
    );
    other.cmd(&["ADD", "order:8", "0"]);
    wait_until_fired(&mut other, 2);
    // No push for order:8: the next frame is PING's reply.
    assert_bytes(raw(&mut sub, &["PING"]), "+PONG\r\n");
}

/// Polls INFO until `delivered_total` (handler runs, i.e. publish calls) reaches `n`.
fn wait_until_fired(conn: &mut RespConn, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = conn.cmd(&["INFO"]);
        let published = info
            .as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("delivered_total:"))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap();
        if published >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {published} delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn resp3_subscriber_runs_commands_between_pushes() {
    let server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    conn.cmd(&["HELLO", "3"]);
    conn.cmd(&["SUBSCRIBE", "fired"]);

    // The reply comes before the push: the push can only be queued after
    // the timer exists, and replies are written while the command runs.
    assert!(conn.cmd(&["ADD", "a", "0"]).as_int().is_some());
    assert_eq!(conn.read_reply(), push_for("a"));

    // A pipeline of commands whose timers fire while later replies are on
    // their way: replies keep their order, pushes come whole between them.
    let ids: Vec<String> = (0..20).map(|n| format!("p:{n}")).collect();
    let mut pipeline = Vec::new();
    for id in &ids {
        pipeline.extend(util::encode_command(&["ADD", id, "0"]));
        pipeline.extend(util::encode_command(&["PTTL", "missing"]));
        pipeline.extend(util::encode_command(&["PING"]));
    }
    conn.send_raw(&pipeline);
    let mut replies = Vec::new();
    let mut pushed = Vec::new();
    while replies.len() < ids.len() * 3 || pushed.len() < ids.len() {
        match conn.read_reply() {
            Resp::Push(items) => pushed.push(fired_id(&items)),
            other => replies.push(other),
        }
    }
    for chunk in replies.chunks(3) {
        assert!(chunk[0].as_int().is_some_and(|d| d > 0), "{chunk:?}");
        assert_eq!(chunk[1], Resp::Integer(-2));
        assert_eq!(chunk[2], Resp::simple("PONG"));
    }
    pushed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(pushed, want);

    // A timer a little in the future: its push arrives between PINGs.
    conn.cmd(&["ADD", "later", "50"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        conn.send(&["PING"]);
        match conn.read_reply() {
            Resp::Simple(pong) => assert_eq!(pong, "PONG"),
            push => {
                assert_eq!(push, push_for("later"));
                assert_eq!(conn.read_reply(), Resp::simple("PONG"));
                break;
            }
        }
        assert!(Instant::now() < deadline, "no push for 'later'");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
}

fn push_for(id: &str) -> Resp {
    Resp::Push(vec![
        Resp::bulk("message"),
        Resp::bulk("fired"),
        Resp::bulk(id),
    ])
}

fn fired_id(items: &[Resp]) -> String {
    match items {
        [kind, channel, id]
            if *kind == Resp::bulk("message") && *channel == Resp::bulk("fired") =>
        {
            id.as_str().unwrap().to_owned()
        }
        other => panic!("not a fired message: {other:?}"),
    }
}

#[test]
fn resp2_subscriber_may_only_ping_and_unsubscribe() {
    let server = TimewheelServer::start(&[]);
    let mut sub = server.conn();
    assert_bytes(
        raw(&mut sub, &["SUBSCRIBE", "fired"]),
        "*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    for (command, name) in [
        (&["ADD", "x", "1000"][..], "add"),
        (&["COUNT"], "count"),
        (&["HELLO", "3"], "hello"),
    ] {
        assert_bytes(
            raw(&mut sub, command),
            format!(
                "-ERR Can't execute '{name}': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT are \
                 allowed in this context\r\n"
            ),
        );
    }
    assert_bytes(raw(&mut sub, &["PING"]), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_bytes(
        raw(&mut sub, &["PING", "hi"]),
        "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n",
    );

    server.conn().cmd(&["ADD", "x", "0"]);
    assert_bytes(
        sub.read_raw_reply(),
        "*3\r\n$7\r\nmessage\r\n$5\r\nfired\r\n$1\r\nx\r\n",
    );
    assert_bytes(
        raw(&mut sub, &["UNSUBSCRIBE", "fired"]),
        "*3\r\n$11\r\nunsubscribe\r\n$5\r\nfired\r\n:0\r\n",
    );
    assert_bytes(raw(&mut sub, &["COUNT"]), ":0\r\n");
}

#[test]
fn hello_2_while_subscribed_switches_the_push_encoding() {
    let server = TimewheelServer::start(&[]);
    let mut sub = server.conn();
    let id = client_id(&mut sub);
    sub.cmd(&["HELLO", "3"]);
    sub.cmd(&["SUBSCRIBE", "fired"]);
    let mut other = server.conn();
    other.cmd(&["ADD", "r3", "0"]);
    assert_bytes(sub.read_raw_reply(), fired_push("r3"));

    assert_bytes(raw(&mut sub, &["HELLO", "2"]), hello_bytes(2, id));
    other.cmd(&["ADD", "r2", "0"]);
    assert_bytes(
        sub.read_raw_reply(),
        "*3\r\n$7\r\nmessage\r\n$5\r\nfired\r\n$2\r\nr2\r\n",
    );
    // Now a RESP2 subscriber, with RESP2's rules.
    assert!(sub.cmd(&["COUNT"]).is_error());
}

// ---------------------------------------------------------------------------------------------
// The `redis` crate, negotiating RESP3 itself
// ---------------------------------------------------------------------------------------------

#[test]
fn redis_crate_speaks_resp3_and_receives_pushes() {
    use redis::{PushKind, Value};

    let server = TimewheelServer::start(&[]);
    let url = format!("redis://127.0.0.1:{}/?protocol=resp3", server.port());
    let client = redis::Client::open(url).unwrap();
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    let hello: Value = redis::cmd("HELLO").query(&mut con).unwrap();
    let Value::Map(pairs) = hello else {
        panic!("HELLO is not a map: {hello:?}")
    };
    assert!(pairs.contains(&(Value::BulkString(b"proto".to_vec()), Value::Int(3))));

    let deadline: i64 = redis::cmd("ADD")
        .arg("order:1")
        .arg(60_000)
        .query(&mut con)
        .unwrap();
    assert!(deadline > now_ms());
    let pttl: i64 = redis::cmd("PTTL").arg("order:1").query(&mut con).unwrap();
    assert!((0..=60_000).contains(&pttl), "{pttl}");
    let count: i64 = redis::cmd("COUNT").query(&mut con).unwrap();
    assert_eq!(count, 1);
    let cancelled: bool = redis::cmd("CANCEL").arg("order:1").query(&mut con).unwrap();
    assert!(cancelled);
    let missing: i64 = redis::cmd("PTTL").arg("order:1").query(&mut con).unwrap();
    assert_eq!(missing, -2);
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, None);
    let info: redis::InfoDict = redis::cmd("INFO").query(&mut con).unwrap();
    assert_eq!(info.get::<i64>("pending"), Some(0));
    assert_eq!(info.get::<i64>("cancelled_total"), Some(1));
    let err = redis::cmd("ADD")
        .arg("order:2")
        .arg("soon")
        .query::<i64>(&mut con)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("delay must be an integer number of milliseconds"),
        "{err}"
    );

    // Pushes go to the push sender; commands keep working while subscribed.
    let (tx, rx) = std::sync::mpsc::channel();
    con.set_push_sender(tx);
    con.subscribe_resp3("fired").unwrap();
    let _: i64 = redis::cmd("ADD")
        .arg("order:3")
        .arg(0)
        .query(&mut con)
        .unwrap();
    let fired = loop {
        // A sync connection only sees pushes when it reads; wait for one.
        if let Ok(push) = rx.try_recv() {
            if push.kind == PushKind::Message {
                break push;
            }
            assert_eq!(push.kind, PushKind::Subscribe, "{push:?}");
            continue;
        }
        let value = con.recv_response().unwrap();
        assert!(matches!(value, Value::Push { .. }), "{value:?}");
    };
    assert_eq!(
        fired.data,
        vec![
            Value::BulkString(b"fired".to_vec()),
            Value::BulkString(b"order:3".to_vec())
        ]
    );
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

//! Tests of the shared test helpers themselves: the private `redis-server` and the RESP client.
//!
//! Run with `cargo test --test redis_util` (needs `redis-server` on PATH).

mod util;

use std::io::ErrorKind;
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use util::{RedisServer, Resp, RespConn, encode_command};

#[test]
fn zadd_zscore_survive_kill9_and_restart() {
    let mut redis = RedisServer::start();
    assert_ne!(redis.port(), 6379);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/0", redis.port()));

    let mut conn = redis.conn();
    for (name, value) in [
        ("appendonly", "yes"),
        ("appendfsync", "always"),
        ("save", ""),
    ] {
        let want = Resp::Array(Some(vec![Resp::bulk(name), Resp::bulk(value)]));
        assert_eq!(conn.cmd(&["CONFIG", "GET", name]), want);
    }
    assert_eq!(
        conn.cmd(&["ZADD", "due", "1700000000123", "o:1"]),
        Resp::Integer(1)
    );
    assert_eq!(
        conn.cmd(&["ZADD", "due", "1700000000456", "o:2"]),
        Resp::Integer(1)
    );
    assert_eq!(
        conn.cmd(&["ZSCORE", "due", "o:1"]),
        Resp::bulk("1700000000123")
    );
    drop(conn);

    let port = redis.port();
    redis.kill9();
    assert!(
        RespConn::try_connect(port).is_err(),
        "server still up after kill9"
    );

    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(
        redis.cmd(&["ZSCORE", "due", "o:1"]),
        Resp::bulk("1700000000123")
    );
    assert_eq!(
        redis.cmd(&["ZCARD", "due"]),
        Resp::Integer(2),
        "log:\n{}",
        redis.log()
    );
}

#[test]
fn stop_then_restart_keeps_data() {
    let mut redis = RedisServer::start();
    assert_eq!(redis.cmd(&["ZADD", "due", "5", "o:5"]), Resp::Integer(1));
    redis.stop();
    assert!(RespConn::try_connect(redis.port()).is_err());
    redis.restart();
    assert_eq!(
        redis.cmd(&["ZRANGE", "due", "0", "-1"]),
        Resp::Array(Some(vec![Resp::bulk("o:5")]))
    );
    // restart() on a running server stops it first.
    redis.restart();
    assert_eq!(redis.cmd(&["ZCARD", "due"]), Resp::Integer(1));
}

#[test]
fn two_servers_side_by_side() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    assert_eq!(a.cmd(&["SET", "who", "a"]), Resp::ok());
    assert_eq!(b.cmd(&["SET", "who", "b"]), Resp::ok());
    assert_eq!(a.cmd(&["GET", "who"]), Resp::bulk("a"));
    assert_eq!(b.cmd(&["GET", "who"]), Resp::bulk("b"));
    assert_eq!(a.cmd(&["GET", "nothing"]), Resp::nil());
}

#[test]
fn resp3_replies_from_redis() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let Resp::Map(hello) = conn.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3 should answer a map");
    };
    assert!(
        hello.contains(&(Resp::bulk("proto"), Resp::Integer(3))),
        "{hello:?}"
    );
    assert_eq!(conn.cmd(&["ZADD", "due", "1.5", "o:1"]), Resp::Integer(1));
    assert_eq!(
        conn.cmd(&["ZSCORE", "due", "o:1"]),
        Resp::Double("1.5".into())
    );
    assert_eq!(conn.cmd(&["GET", "missing"]), Resp::Null);
    assert!(conn.cmd(&["NOSUCHCOMMAND"]).is_error());
}

#[test]
fn pipelined_and_raw_replies() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let mut pipeline = Vec::new();
    for _ in 0..100 {
        pipeline.extend(encode_command(&["INCR", "n"]));
    }
    conn.send_raw(&pipeline);
    for i in 1..=100 {
        assert_eq!(conn.read_reply(), Resp::Integer(i));
    }
    conn.send_raw(b"PING\r\n");
    assert_eq!(conn.read_raw_reply(), b"+PONG\r\n");
    conn.send(&[b"SET".as_slice(), b"bin", b"\x00\xff\r\n"]);
    assert_eq!(conn.read_reply(), Resp::ok());
    assert_eq!(conn.cmd(&["GET", "bin"]), Resp::bulk(b"\x00\xff\r\n"));
}

#[test]
fn read_reply_times_out_and_reports_eof() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        // First connection: half a reply, then silence until the client gives up.
        let (mut silent, _) = listener.accept().unwrap();
        std::io::Write::write_all(&mut silent, b"$5\r\nhel").unwrap();
        // Second connection: closed right away.
        let (closed, _) = listener.accept().unwrap();
        drop(closed);
        silent
    });

    let mut conn = RespConn::connect(port);
    conn.set_timeout(Duration::from_millis(100));
    let err = conn.try_read_reply().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");

    let mut conn = RespConn::connect(port);
    let err = conn.try_read_reply().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnexpectedEof, "{err}");
    drop(server.join().unwrap());
}

#[test]
fn parser_handles_every_type_and_every_split() {
    let cases: Vec<(&[u8], Resp)> = vec![
        (b"+OK\r\n", Resp::ok()),
        (b"-ERR bad\r\n", Resp::Error("ERR bad".into())),
        (b"!9\r\nERR bad\r\n\r\n", Resp::Error("ERR bad\r\n".into())),
        (b":-42\r\n", Resp::Integer(-42)),
        (b"$0\r\n\r\n", Resp::bulk("")),
        (b"$-1\r\n", Resp::nil()),
        (b"$4\r\na\r\nb\r\n", Resp::bulk("a\r\nb")),
        (b"*-1\r\n", Resp::Array(None)),
        (b"*0\r\n", Resp::Array(Some(vec![]))),
        (
            b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n",
            Resp::Array(Some(vec![
                Resp::Integer(1),
                Resp::Array(Some(vec![Resp::bulk("x")])),
            ])),
        ),
        (b"_\r\n", Resp::Null),
        (
            b"%2\r\n+a\r\n:1\r\n+b\r\n_\r\n",
            Resp::Map(vec![
                (Resp::simple("a"), Resp::Integer(1)),
                (Resp::simple("b"), Resp::Null),
            ]),
        ),
        (b"~1\r\n#t\r\n", Resp::Set(vec![Resp::Boolean(true)])),
        (
            b">2\r\n+message\r\n#f\r\n",
            Resp::Push(vec![Resp::simple("message"), Resp::Boolean(false)]),
        ),
        (b",3.25\r\n", Resp::Double("3.25".into())),
        (b",inf\r\n", Resp::Double("inf".into())),
        (b"=9\r\ntxt:hello\r\n", Resp::Verbatim("txt:hello".into())),
        (
            b"(12345678901234567890\r\n",
            Resp::BigNumber("12345678901234567890".into()),
        ),
    ];
    for (wire, want) in cases {
        assert_eq!(
            Resp::parse(wire),
            Ok(Some((want.clone(), wire.len()))),
            "{wire:?}"
        );
        for cut in 0..wire.len() {
            assert_eq!(Resp::parse(&wire[..cut]), Ok(None), "{wire:?} cut at {cut}");
        }
        let mut two = wire.to_vec();
        two.extend_from_slice(b"+next\r\n");
        assert_eq!(
            Resp::parse(&two),
            Ok(Some((want, wire.len()))),
            "{wire:?} then more"
        );
    }
    for bad in [
        &b"?\r\n"[..],
        b"\r\n",
        b":x\r\n",
        b"$3\r\nabcd\r\n",
        b"#x\r\n",
        b"=-1\r\n",
    ] {
        assert!(Resp::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
#[should_panic(expected = "restart failed: redis-server exited")]
fn restart_on_a_taken_port_fails_with_the_log() {
    let mut redis = RedisServer::start();
    redis.kill9();
    let _squatter = TcpListener::bind(("127.0.0.1", redis.port())).unwrap();
    redis.restart();
}

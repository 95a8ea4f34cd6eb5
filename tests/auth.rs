//! Authentication (`--requirepass`, `TIMEWHEEL_PASSWORD`) and the refusal to
//! listen on a non-loopback address without a password.
//!
//! Run with `cargo test --test auth`.
mod util;

use std::io::ErrorKind;

use util::{Resp, RespConn, TimewheelServer, run_timewheel};

const PASSWORD: &str = "correct horse battery staple";
const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn error(text: &str) -> Resp {
    Resp::Error(text.to_owned())
}

fn protected() -> TimewheelServer {
    TimewheelServer::start(&["--requirepass", PASSWORD])
}

/// `auth_failures_total` from INFO, on an authenticated connection.
fn auth_failures(conn: &mut RespConn) -> u64 {
    let info = conn.cmd(&["INFO"]);
    info.as_str()
        .expect("INFO is a bulk string")
        .lines()
        .find_map(|line| line.strip_prefix("auth_failures_total:"))
        .expect("INFO has auth_failures_total")
        .parse()
        .expect("a number")
}

fn authenticated(server: &TimewheelServer) -> RespConn {
    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["AUTH", PASSWORD]), Resp::ok());
    conn
}

#[test]
fn every_command_but_auth_hello_ping_quit_is_refused_before_auth() {
    let server = protected();
    let mut conn = server.conn();
    let refused: &[&[&str]] = &[
        &["ADD", "order:1", "1000"],
        &["ADDAT", "order:1", "1700000000000"],
        &["CANCEL", "order:1"],
        &["PTTL", "order:1"],
        &["COUNT"],
        &["INFO"],
        &["SUBSCRIBE", "fired"],
        &["UNSUBSCRIBE"],
        &["CONFIG", "GET", "save"],
        &["CLIENT", "ID"],
        &["CLIENT", "SETNAME", "x"],
        &["SELECT", "0"],
        &["COMMAND"],
        &["COMMAND", "DOCS"],
        // Even unknown commands and bad arity: nothing is revealed before AUTH.
        &["FLUSHALL"],
        &["ADD"],
    ];
    for command in refused {
        assert_eq!(conn.cmd(command), error(NOAUTH), "{command:?}");
    }
    // Inline commands are refused the same way.
    conn.send_raw(b"COUNT\r\n");
    assert_eq!(conn.read_reply(), error(NOAUTH));

    assert_eq!(conn.cmd(&["PING"]), Resp::simple("PONG"));
    assert_eq!(conn.cmd(&["PING", "hi"]), Resp::bulk("hi"));
    let hello_noauth = "NOAUTH HELLO must be called with the client already authenticated, \
         otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the \
         client and select the RESP protocol version at the same time";
    assert_eq!(conn.cmd(&["HELLO"]), error(hello_noauth));
    assert_eq!(conn.cmd(&["HELLO", "3"]), error(hello_noauth));
    // The protocol version is checked first, as in Redis.
    assert_eq!(
        conn.cmd(&["HELLO", "4"]),
        error("NOPROTO unsupported protocol version")
    );
    // A refused HELLO 3 left the connection in RESP2.
    assert_eq!(conn.cmd(&["AUTH", PASSWORD]), Resp::ok());
    assert_eq!(conn.cmd(&["CLIENT", "GETNAME"]), Resp::nil());
    // Nothing refused had any effect.
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
    assert_eq!(conn.cmd(&["CLIENT", "GETNAME"]), Resp::nil());

    let mut other = server.conn();
    assert_eq!(other.cmd(&["QUIT"]), Resp::ok());
    let eof = other.try_read_reply().unwrap_err();
    assert_eq!(eof.kind(), ErrorKind::UnexpectedEof, "{eof}");
}

#[test]
fn auth_password_auth_default_password_and_hello_auth_all_work() {
    let server = protected();

    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["AUTH", PASSWORD]), Resp::ok());
    assert!(conn.cmd(&["ADD", "a", "60000"]).as_int().is_some());

    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["auth", "default", PASSWORD]), Resp::ok());
    assert_eq!(conn.cmd(&["PTTL", "a"]).as_int().map(|t| t > 0), Some(true));

    let mut conn = server.conn();
    let Resp::Map(hello) = conn.cmd(&["HELLO", "3", "AUTH", "default", PASSWORD]) else {
        panic!("HELLO 3 AUTH did not answer with a map");
    };
    assert!(hello.contains(&(Resp::bulk("proto"), Resp::Integer(3))));
    assert_eq!(conn.cmd(&["CANCEL", "a"]), Resp::Integer(1));
    assert_eq!(conn.cmd(&["CLIENT", "GETNAME"]), Resp::Null);

    // HELLO 2 AUTH with SETNAME, options in either order.
    let mut conn = server.conn();
    let Resp::Array(Some(hello)) =
        conn.cmd(&["HELLO", "2", "SETNAME", "svc", "AUTH", "default", PASSWORD])
    else {
        panic!("HELLO 2 AUTH did not answer with an array");
    };
    assert!(
        hello
            .windows(2)
            .any(|w| w == [Resp::bulk("proto"), Resp::Integer(2)])
    );
    assert_eq!(conn.cmd(&["CLIENT", "GETNAME"]), Resp::bulk("svc"));

    // Authenticated: a subscriber gets its confirmation.
    let mut conn = authenticated(&server);
    assert_eq!(
        conn.cmd(&["SUBSCRIBE", "fired"]),
        Resp::Array(Some(vec![
            Resp::bulk("subscribe"),
            Resp::bulk("fired"),
            Resp::Integer(1)
        ]))
    );
}

#[test]
fn wrong_password_is_wrongpass_and_counted() {
    let server = protected();
    let mut admin = authenticated(&server);
    assert_eq!(auth_failures(&mut admin), 0);

    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["AUTH", "guess"]), error(WRONGPASS));
    assert_eq!(conn.cmd(&["AUTH", "default", "guess"]), error(WRONGPASS));
    // The right password for a user that does not exist.
    assert_eq!(conn.cmd(&["AUTH", "admin", PASSWORD]), error(WRONGPASS));
    // Case and length matter.
    let upper = PASSWORD.to_uppercase();
    let longer = format!("{PASSWORD}!");
    let shorter = &PASSWORD[..PASSWORD.len() - 1];
    for guess in [upper.as_str(), longer.as_str(), shorter, ""] {
        assert_eq!(conn.cmd(&["AUTH", guess]), error(WRONGPASS), "{guess:?}");
    }
    assert_eq!(
        conn.cmd(&["HELLO", "3", "AUTH", "default", "guess"]),
        error(WRONGPASS)
    );
    // Still unauthenticated, still RESP2.
    assert_eq!(conn.cmd(&["COUNT"]), error(NOAUTH));
    assert_eq!(auth_failures(&mut admin), 8);

    // A failed AUTH after a successful one does not log the client out.
    assert_eq!(conn.cmd(&["AUTH", PASSWORD]), Resp::ok());
    assert_eq!(conn.cmd(&["AUTH", "guess"]), error(WRONGPASS));
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
    assert_eq!(auth_failures(&mut conn), 9);

    // The log says a client failed, never with what. The log is read by a
    // background thread, so give the line a moment to arrive.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = server.log();
    while !log.contains("authentication failed") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        log = server.log();
    }
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains("guess"), "{log}");
}

#[test]
fn ten_failures_close_the_connection() {
    let server = protected();
    let mut conn = server.conn();
    for n in 1..=9 {
        assert_eq!(
            conn.cmd(&["AUTH", "guess"]),
            error(WRONGPASS),
            "failure {n}"
        );
    }
    assert_eq!(conn.cmd(&["PING"]), Resp::simple("PONG"));
    // The tenth failure is answered, then the connection is closed.
    assert_eq!(
        conn.cmd(&["HELLO", "3", "AUTH", "default", "guess"]),
        error(WRONGPASS)
    );
    let closed = conn.try_read_reply().unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::UnexpectedEof, "{closed}");

    // Other connections are not affected, and a new one may try again.
    let mut admin = authenticated(&server);
    assert_eq!(auth_failures(&mut admin), 10);
    assert_eq!(admin.cmd(&["COUNT"]), Resp::Integer(0));
}

#[test]
fn a_client_reconnecting_with_a_wrong_password_is_one_log_line_and_every_failure_counted() {
    let server = protected();
    // 25 connections in a row, each with one wrong password, as a client
    // library retrying its connection does.
    for n in 1..=25 {
        let mut conn = server.conn();
        assert_eq!(
            conn.cmd(&["AUTH", "guess"]),
            error(WRONGPASS),
            "failure {n}"
        );
    }
    let mut admin = authenticated(&server);
    assert_eq!(auth_failures(&mut admin), 25);
    // The line of the first failure is written before its reply; wait for the
    // log reader, then check no second line followed (the interval is 10 s).
    util::wait_until(
        "the authentication failed line",
        std::time::Duration::from_secs(10),
        || server.log().contains("authentication failed"),
    );
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("addr=127.0.0.1") && lines[0].contains("failures=1"),
        "{}",
        lines[0]
    );
}

#[test]
fn password_from_the_environment() {
    let secret = "from-the-env-9f2c";
    let server = TimewheelServer::start_with_env(&[], &[("TIMEWHEEL_PASSWORD", secret)]);
    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["COUNT"]), error(NOAUTH));
    assert_eq!(conn.cmd(&["AUTH", "wrong"]), error(WRONGPASS));
    assert_eq!(conn.cmd(&["AUTH", secret]), Resp::ok());
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
    assert!(!server.log().contains(secret), "{}", server.log());
}

#[test]
fn without_a_password_auth_is_not_needed() {
    let server = TimewheelServer::start(&[]);
    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
    // As in Redis without requirepass: one-argument AUTH is an error,
    // the default user accepts any password.
    assert_eq!(
        conn.cmd(&["AUTH", "x"]),
        error(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?"
        )
    );
    assert_eq!(conn.cmd(&["AUTH", "default", "x"]), Resp::ok());
    assert_eq!(conn.cmd(&["AUTH", "admin", "x"]), error(WRONGPASS));
    assert!(matches!(
        conn.cmd(&["HELLO", "3", "AUTH", "default", "x"]),
        Resp::Map(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Non-loopback addresses
// ---------------------------------------------------------------------------------------------

#[test]
fn non_loopback_bind_without_a_password_is_refused() {
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let (status, stderr) = run_timewheel(&["serve", "--bind", bind], &[]);
        assert!(!status.success(), "{bind}: {status:?}\n{stderr}");
        assert!(
            stderr.contains(&format!("refusing to listen on {bind} without a password")),
            "{stderr}"
        );
        for hint in ["TIMEWHEEL_PASSWORD", "--requirepass", "--unsafe-no-auth"] {
            assert!(stderr.contains(hint), "{hint} missing from:\n{stderr}");
        }
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
    // An empty password is no password.
    let (status, stderr) = run_timewheel(
        &["serve", "--bind", "0.0.0.0:0"],
        &[("TIMEWHEEL_PASSWORD", "")],
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("refusing to listen"), "{stderr}");
}

#[test]
fn non_loopback_bind_with_a_password_or_unsafe_no_auth_starts() {
    let serving = TimewheelServer::start_exact(
        &["serve", "--bind", "0.0.0.0:0", "--requirepass", PASSWORD],
        &[],
    );
    let mut conn = RespConn::connect(serving.port());
    assert_eq!(conn.cmd(&["COUNT"]), error(NOAUTH));
    assert_eq!(conn.cmd(&["AUTH", PASSWORD]), Resp::ok());
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
    drop(serving);

    let serving = TimewheelServer::start_exact(
        &["serve", "--bind", "0.0.0.0:0"],
        &[("TIMEWHEEL_PASSWORD", PASSWORD)],
    );
    let mut conn = RespConn::connect(serving.port());
    assert_eq!(conn.cmd(&["COUNT"]), error(NOAUTH));
    drop(serving);

    let serving =
        TimewheelServer::start_exact(&["serve", "--bind", "0.0.0.0:0", "--unsafe-no-auth"], &[]);
    let mut conn = RespConn::connect(serving.port());
    assert_eq!(conn.cmd(&["COUNT"]), Resp::Integer(0));
}

#[test]
fn redis_crate_authenticates_with_hello_3_auth() {
    let server = protected();
    let encoded = PASSWORD.replace(' ', "%20");
    let url = format!(
        "redis://:{encoded}@127.0.0.1:{}/?protocol=resp3",
        server.port()
    );
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let count: i64 = redis::cmd("COUNT").query(&mut con).unwrap();
    assert_eq!(count, 0);

    let url = format!("redis://:wrong@127.0.0.1:{}/?protocol=resp3", server.port());
    let err = redis::Client::open(url)
        .unwrap()
        .get_connection()
        .err()
        .expect("a wrong password fails to connect");
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
}

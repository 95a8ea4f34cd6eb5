//! `MULTI` / `EXEC` / `DISCARD` against the real binary, in raw bytes: queued
//! commands answer `+QUEUED`, a refused one dooms the transaction
//! (`-EXECABORT`), `EXEC` answers one array in order, and with the journal
//! only once every queued write is in Redis.
//!
//! Run with `cargo test --test transactions`.
mod util;

use std::time::Duration;

use util::wire::CLOCK_SLACK_MS;
use util::{RedisServer, Resp, TimewheelServer, unix_ms};

fn ok() -> Resp {
    Resp::ok()
}

fn queued() -> Resp {
    Resp::simple("QUEUED")
}

fn error_starting(reply: &Resp, prefix: &str) {
    match reply {
        Resp::Error(text) if text.starts_with(prefix) => {}
        other => panic!("expected an error starting {prefix:?}, got {other:?}"),
    }
}

fn array(reply: Resp) -> Vec<Resp> {
    match reply {
        Resp::Array(Some(items)) => items,
        other => panic!("expected an array, got {other:?}"),
    }
}

#[test]
fn exec_runs_the_queued_commands_in_order_and_answers_one_array() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let before = unix_ms() as i64;
    assert_eq!(c.cmd(&["MULTI"]), ok());
    for command in [
        &["ADD", "t:1", "60000"][..],
        &["ADD", "t:2", "30m"],
        &["CANCEL", "t:1"],
        &["PTTL", "t:1"],
        &["ADD", "t:2", "1000"],
        &["COUNT"],
        &["PING"],
    ] {
        assert_eq!(c.cmd(command), queued(), "{command:?}");
    }
    // Nothing ran yet.
    let mut other = server.conn();
    assert_eq!(other.cmd(&["COUNT"]), Resp::Integer(0));

    let replies = array(c.cmd(&["EXEC"]));
    assert_eq!(replies.len(), 7, "{replies:?}");
    // The server's clock is anchored once at its start: allow the usual slack.
    let slack = CLOCK_SLACK_MS as i64;
    let deadline = replies[0].as_int().expect("ADD's deadline");
    assert!(deadline >= before + 60_000 - slack, "{deadline}");
    assert!(replies[1].as_int().unwrap() >= before + 1_800_000 - slack);
    // Each command saw the ones before it.
    assert_eq!(replies[2], Resp::Integer(1));
    assert_eq!(replies[3], Resp::Integer(-2));
    error_starting(&replies[4], "EXISTS");
    assert_eq!(replies[5], Resp::Integer(1));
    assert_eq!(replies[6], Resp::simple("PONG"));
    // The connection is out of the transaction.
    assert_eq!(c.cmd(&["COUNT"]), Resp::Integer(1));
    error_starting(&c.cmd(&["EXEC"]), "ERR EXEC without MULTI");
}

#[test]
fn a_command_refused_while_queueing_aborts_the_whole_transaction() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    for bad in [
        &["ADD", "a:2", "soon"][..],
        &["ADDAT", "a:2", "1796172400"],
        &["NOSUCH", "x"],
        &["CANCEL"],
        &["SUBSCRIBE", "fired"],
    ] {
        assert_eq!(c.cmd(&["MULTI"]), ok());
        assert_eq!(c.cmd(&["ADD", "a:1", "60000"]), queued());
        let refused = c.cmd(bad);
        assert!(refused.is_error(), "{bad:?}: {refused:?}");
        // Later commands still queue, as in Redis; EXEC runs none of them.
        assert_eq!(c.cmd(&["ADD", "a:3", "60000"]), queued());
        assert_eq!(
            c.cmd(&["EXEC"]),
            Resp::Error("EXECABORT Transaction discarded because of previous errors.".into()),
            "{bad:?}"
        );
        assert_eq!(c.cmd(&["COUNT"]), Resp::Integer(0), "{bad:?}");
    }
}

#[test]
fn discard_drops_the_queue_and_misuse_is_a_clear_error() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    error_starting(&c.cmd(&["DISCARD"]), "ERR DISCARD without MULTI");
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["ADD", "d:1", "1000"]), queued());
    error_starting(&c.cmd(&["MULTI"]), "ERR MULTI calls can not be nested");
    error_starting(&c.cmd(&["WATCH", "d:1"]), "ERR WATCH inside MULTI");
    assert_eq!(c.cmd(&["DISCARD"]), ok());
    assert_eq!(c.cmd(&["COUNT"]), Resp::Integer(0));
    error_starting(&c.cmd(&["WATCH", "d:1"]), "ERR WATCH is not supported");
    assert_eq!(c.cmd(&["UNWATCH"]), ok());

    // Inline commands and pipelining work as well: all of it in one write.
    c.send_raw(b"MULTI\r\nADD d:2 5000\r\nPTTL d:2\r\nEXEC\r\n");
    assert_eq!(c.read_reply(), ok());
    assert_eq!(c.read_reply(), queued());
    assert_eq!(c.read_reply(), queued());
    let replies = array(c.read_reply());
    assert!(replies[0].as_int().unwrap() > 0);
    let pttl = replies[1].as_int().unwrap();
    assert!(pttl > 0 && pttl <= 5000, "{pttl}");
}

#[test]
fn the_command_table_lists_the_transaction_commands() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let info = array(c.cmd(&["COMMAND", "INFO", "multi", "exec", "discard", "subscribe"]));
    assert_eq!(info.len(), 4);
    for entry in &info {
        assert!(matches!(entry, Resp::Array(Some(_))), "{entry:?}");
    }
    // SUBSCRIBE carries Redis's no_multi flag.
    let subscribe = array(info[3].clone());
    let flags = array(subscribe[2].clone());
    assert!(flags.contains(&Resp::simple("no_multi")), "{flags:?}");
}

/// With the journal, EXEC answers only once Redis holds every queued write:
/// right after the reply, Redis has them.
#[test]
fn with_the_journal_exec_answers_once_every_write_is_in_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = TimewheelServer::start(&["--redis", &url, "--stream", "orders:closed"]);
    let mut c = server.conn();
    let mut journal = redis.conn();
    for round in 0..20 {
        let (keep, drop) = (format!("j:{round}:keep"), format!("j:{round}:drop"));
        c.send_raw(
            &[
                util::encode_command(&["MULTI"]),
                util::encode_command(&["ADD", &keep, "60000"]),
                util::encode_command(&["ADD", &drop, "60000"]),
                util::encode_command(&["CANCEL", &drop]),
                util::encode_command(&["EXEC"]),
            ]
            .concat(),
        );
        assert_eq!(c.read_reply(), ok());
        for _ in 0..3 {
            assert_eq!(c.read_reply(), queued());
        }
        let replies = array(c.read_reply());
        let deadline = replies[0].as_int().unwrap();
        assert_eq!(replies[2], Resp::Integer(1));
        let score = journal.cmd(&["ZSCORE", "tw:due", &keep]);
        assert_eq!(
            score.as_str().map(|s| s.parse::<i64>().unwrap()),
            Some(deadline),
            "round {round}: {score:?}"
        );
        assert_eq!(journal.cmd(&["ZSCORE", "tw:due", &drop]), Resp::nil());
    }

    // Redis gone: each queued write is refused on its own, inside the array.
    let mut redis = redis;
    redis.stop();
    util::wait_until(
        "the journal to notice Redis is down",
        Duration::from_secs(30),
        || util::info(&mut c)["journal"] == "down",
    );
    assert_eq!(c.cmd(&["MULTI"]), ok());
    assert_eq!(c.cmd(&["ADD", "down:1", "60000"]), queued());
    assert_eq!(c.cmd(&["COUNT"]), queued());
    let replies = array(c.cmd(&["EXEC"]));
    error_starting(&replies[0], "JOURNAL unavailable");
    assert_eq!(replies[1], Resp::Integer(20));
}

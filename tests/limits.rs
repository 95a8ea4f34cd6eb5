//! The connection limits of the real binary: `--max-clients` and
//! `--idle-timeout-s`.
//!
//! Run with `cargo test --test limits`.

mod util;

use std::io;
use std::time::{Duration, Instant};

use util::wire::{expect, expect_closed, read_fired, show};
use util::{RespConn, TimewheelServer, info, info_u64, wait_until};

#[test]
fn max_clients_rejects_with_an_error_line_then_closes() {
    let server = TimewheelServer::start(&["--max-clients", "5"]);
    let mut conns: Vec<RespConn> = (0..5).map(|_| server.conn()).collect();
    for conn in &mut conns {
        expect(conn, b"PING\r\n", b"+PONG\r\n");
    }
    let mut extra = server.conn();
    assert_eq!(
        show(&extra.read_raw_reply()),
        show(b"-ERR max number of clients reached\r\n")
    );
    expect_closed(&mut extra, Duration::from_secs(5));
    let info = info(&mut conns[0]);
    assert_eq!(info["connected_clients"], "5");
    assert_eq!(info["rejected_connections"], "1");

    // A slot frees when a client leaves.
    conns.pop();
    wait_until("a client to leave", Duration::from_secs(10), || {
        info_u64(&mut conns[0], "connected_clients") == 4
    });
    let mut again = server.conn();
    expect(&mut again, b"PING\r\n", b"+PONG\r\n");
    let mut extra = server.conn();
    assert_eq!(
        show(&extra.read_raw_reply()),
        show(b"-ERR max number of clients reached\r\n")
    );
    expect_closed(&mut extra, Duration::from_secs(5));
    assert_eq!(info_u64(&mut again, "rejected_connections"), 2);
}

#[test]
fn idle_clients_are_closed_but_not_active_ones_or_subscribers() {
    let server = TimewheelServer::start(&["--idle-timeout-s", "1"]);
    // The subscriber goes quiet first, so it is idle longer than `idle`.
    let mut sub = server.conn();
    expect(
        &mut sub,
        b"SUBSCRIBE fired\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    let mut idle = server.conn();
    expect(&mut idle, b"PING\r\n", b"+PONG\r\n");
    let quiet_since = Instant::now();
    let mut active = server.conn();

    // The active client sends a request every 200 ms until `idle` is closed.
    idle.set_timeout(Duration::from_millis(200));
    loop {
        match idle.try_read_reply() {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            other => panic!("idle client: {other:?}"),
        }
        expect(&mut active, b"PING\r\n", b"+PONG\r\n");
        assert!(
            quiet_since.elapsed() < Duration::from_secs(10),
            "the idle client was not closed"
        );
    }
    let idle_for = quiet_since.elapsed();
    assert!(
        idle_for >= Duration::from_millis(900),
        "closed after {idle_for:?}"
    );

    let info = info(&mut active);
    assert_eq!(info["idle_closed_total"], "1");
    assert_eq!(info["connected_clients"], "2");
    // The subscriber is still there and still gets messages.
    expect(
        &mut active,
        b"ADDAT after-idle 1000000000000\r\n",
        b":1000000000000\r\n",
    );
    assert_eq!(read_fired(&mut sub), "after-idle");
}

//! Load against the real binary: pipelining, a thousand clients, and a
//! subscriber that stops reading while others stay responsive.
//!
//! Run with `cargo test --test load`. Tests marked "Regression" failed before
//! the server fix that came with them.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use util::wire::{
    CLOCK_SLACK_MS, drain_until_closed, expect, expect_closed, fired_message, inline, int_of, show,
    wait_for_stall, write_in_background,
};
use util::{Resp, RespConn, TimewheelServer, encode_command, info, info_u64, unix_ms, wait_until};

#[test]
fn ten_thousand_pipelined_commands_in_one_write() {
    const GROUPS: u64 = 2_500;
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let base = unix_ms() + 600_000;
    // Four commands per id, alternating framings; each id has its own
    // deadline, so a reply out of order shows.
    let mut pipeline = Vec::new();
    for i in 0..GROUPS {
        let id = format!("p:{i}");
        let at = (base + i).to_string();
        let frame = |args: &[&str]| {
            if i % 2 == 0 {
                inline(args)
            } else {
                encode_command(args)
            }
        };
        pipeline.extend(frame(&["ADDAT", &id, &at]));
        pipeline.extend(frame(&["PTTL", &id]));
        pipeline.extend(frame(&["CANCEL", &id]));
        pipeline.extend(frame(&["PTTL", &id]));
    }
    let started = Instant::now();
    let writer = write_in_background(&c, pipeline);
    for i in 0..GROUPS {
        assert_eq!(
            show(&c.read_raw_reply()),
            show(format!(":{}\r\n", base + i).as_bytes())
        );
        let left = int_of(&c.read_raw_reply());
        assert!(
            (1..=600_000 + i as i64 + CLOCK_SLACK_MS as i64).contains(&left),
            "PTTL p:{i} = {left}"
        );
        assert_eq!(show(&c.read_raw_reply()), ":1\\r\\n", "CANCEL p:{i}");
        assert_eq!(
            show(&c.read_raw_reply()),
            ":-2\\r\\n",
            "PTTL p:{i} after CANCEL"
        );
    }
    writer.join().expect("writer");
    eprintln!(
        "10,000 pipelined commands answered in {:?}",
        started.elapsed()
    );
    expect(&mut c, b"COUNT\r\n", b":0\r\n");
    assert_eq!(info_u64(&mut c, "cancelled_total"), GROUPS);
}

/// Regression: when one read brought in requests whose replies went over
/// the output high-water mark and the socket then took all the output, the
/// remaining requests waited for the client's next write: forever, for a
/// client waiting for its replies.
/// The same for a client that shuts down its sending side after the
/// pipeline (`nc -N`): the server answered what fit, saw the end of input,
/// and closed.
#[test]
fn pipelined_requests_with_large_replies_are_all_answered() {
    const INFOS: usize = 8_000;
    let server = TimewheelServer::start(&[]);
    for half_close in [false, true] {
        let mut c = server.conn();
        // 48 KB of requests, about 6 MB of replies.
        c.send_raw(&inline(&["INFO"]).repeat(INFOS));
        if half_close {
            c.stream().shutdown(Shutdown::Write).expect("shutdown");
        }
        for i in 0..INFOS {
            let reply = c
                .try_read_reply()
                .unwrap_or_else(|e| panic!("INFO #{i} (half-closed: {half_close}): {e}"));
            let text = reply
                .as_str()
                .unwrap_or_else(|| panic!("INFO #{i}: {reply:?}"));
            assert!(text.starts_with("# Server"), "INFO #{i}: {text:?}");
        }
        if half_close {
            expect_closed(&mut c, Duration::from_secs(5));
        } else {
            expect(&mut c, b"PING\r\n", b"+PONG\r\n");
        }
    }
}

#[test]
fn a_thousand_concurrent_connections() {
    const CONNS: usize = 1_000;
    const THREADS: usize = 10;
    let server = TimewheelServer::start(&[]);
    let mut watcher = server.conn();

    // Connect in batches with a round trip each, so the accept backlog
    // never overflows (an overflow costs a one-second SYN retry).
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS / 100 {
        let mut batch: Vec<RespConn> = (0..100).map(|_| server.conn()).collect();
        for conn in &mut batch {
            conn.send_raw(b"PING\r\n");
        }
        for conn in &mut batch {
            assert_eq!(show(&conn.read_raw_reply()), "+PONG\\r\\n");
        }
        conns.extend(batch);
    }
    assert_eq!(
        info_u64(&mut watcher, "connected_clients"),
        CONNS as u64 + 1
    );

    // Each thread drives 100 connections; every connection has a request in
    // flight before any reply is read.
    let at = unix_ms() + 600_000;
    let mut threads = Vec::new();
    for (t, mut group) in (0..THREADS).zip(chunks(conns, CONNS / THREADS)) {
        threads.push(thread::spawn(move || {
            let ids: Vec<String> = (0..group.len()).map(|i| format!("c:{t}:{i}")).collect();
            let step = |group: &mut Vec<RespConn>, args: &dyn Fn(&str) -> Vec<u8>| {
                for (conn, id) in group.iter_mut().zip(&ids) {
                    conn.send_raw(&args(id));
                }
                group
                    .iter_mut()
                    .map(|conn| conn.read_raw_reply())
                    .collect::<Vec<_>>()
            };
            for reply in step(&mut group, &|id| inline(&["ADDAT", id, &at.to_string()])) {
                assert_eq!(show(&reply), show(format!(":{at}\r\n").as_bytes()));
            }
            for reply in step(&mut group, &|id| encode_command(&["PTTL", id])) {
                let left = int_of(&reply);
                assert!(
                    (1..=600_000 + CLOCK_SLACK_MS as i64).contains(&left),
                    "{left}"
                );
            }
            for reply in step(&mut group, &|id| inline(&["CANCEL", id])) {
                assert_eq!(show(&reply), ":1\\r\\n");
            }
            group
        }));
    }
    let conns: Vec<RespConn> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let info = info(&mut watcher);
    assert_eq!(info["connected_clients"], (CONNS + 1).to_string());
    assert_eq!(info["cancelled_total"], CONNS.to_string());
    assert_eq!(info["pending"], "0");
    drop(conns);
    wait_until("1,000 clients to be gone", Duration::from_secs(20), || {
        info_u64(&mut watcher, "connected_clients") == 1
    });
}

/// Splits `items` into groups of `size`.
fn chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut groups = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        groups.push(items.by_ref().take(size).collect());
    }
    groups
}

/// Regression: once its socket was full, a stalled subscriber was never
/// disconnected: the overflow was checked only while its output had room.
#[test]
fn a_subscriber_that_stops_reading_is_disconnected_while_others_stay_responsive() {
    const TIMERS: usize = 50_000;
    // Connections go round-robin to the I/O threads: `stalled` and `probe`
    // share thread 0, the client adding 50,000 timers has thread 1 to itself.
    let server =
        TimewheelServer::start(&["--max-subscriber-backlog", "65536", "--io-threads", "2"]);
    let mut stalled = server.conn();
    expect(
        &mut stalled,
        b"SUBSCRIBE fired\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    // From here on `stalled` never reads.
    let adder = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    let mut probe = server.conn();

    // 128-byte ids: about 8.2 MB of messages, about twice what the socket
    // buffers of both ends took here before the 64 KiB backlog overflowed.
    // They fire PER_TICK at a time (25 KB a tick), so a subscriber that reads
    // keeps up: what disconnects this one is that it stopped reading.
    // Firing starts once the adds are likely done (0.2 s in a release build,
    // 1 to 2 s in a debug build while other tests run); if they take longer,
    // a burst overflows the backlog at once, and the test still holds.
    const PER_TICK: usize = 150;
    let due = unix_ms() + 3_000;
    let deadline = move |i: usize| due + (i / PER_TICK) as u64 * 10;
    let mut pipeline = Vec::with_capacity(TIMERS * 140);
    for i in 0..TIMERS {
        pipeline.extend(inline(&[
            "ADDAT",
            &format!("s:{i:0>126}"),
            &deadline(i).to_string(),
        ]));
    }
    let mut writer = adder.try_clone().expect("clone");
    let writer = thread::spawn(move || writer.write_all(&pipeline).expect("write"));
    let mut reader = adder;
    let reader = thread::spawn(move || {
        let want: Vec<u8> = (0..TIMERS)
            .flat_map(|i| format!(":{}\r\n", deadline(i)).into_bytes())
            .collect();
        let mut got = vec![0; want.len()];
        reader
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        reader.read_exact(&mut got).expect("read the ADDAT replies");
        assert!(got == want, "an ADDAT reply differs");
        reader
    });

    // Meanwhile, another client gets answers promptly.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    loop {
        let asked = Instant::now();
        expect(&mut probe, b"PING\r\n", b"+PONG\r\n");
        let info = info(&mut probe);
        slowest = slowest.max(asked.elapsed());
        let overflows: u64 = info["subscriber_overflow_total"].parse().expect("number");
        let fired: usize = info["fired_total"].parse().expect("number");
        if overflows >= 1 && fired == TIMERS {
            assert_eq!(overflows, 1, "{info:?}");
            assert_eq!(info["subscribers"], "0", "{info:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled subscriber was not disconnected: {info:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    writer.join().expect("writer");
    let _adder = reader.join().expect("reader");
    eprintln!(
        "50,000 timers fired in {:?}; slowest PING + INFO {slowest:?}",
        started.elapsed()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a client waited {slowest:?} while the subscriber was stalled"
    );

    // The stalled subscriber gets what was already sent, then the end.
    let received = drain_until_closed(stalled.stream(), Duration::from_secs(20));
    let all = TIMERS * fired_message(&format!("s:{:0>126}", 0)).len();
    eprintln!("the stalled subscriber had {received} bytes in its socket buffers");
    assert!(received < all, "received {received} of {all} bytes");
    expect(&mut probe, b"COUNT\r\n", b":0\r\n");
    assert_eq!(info_u64(&mut probe, "connected_clients"), 2);
}

/// Regression: messages published while a subscriber's output was over the
/// backlog limit stayed queued after it caught up (the hub wakes the I/O
/// thread only when a queue goes from empty to non-empty), until the queue
/// overflowed and the subscriber was disconnected.
#[test]
fn a_subscriber_that_falls_behind_then_reads_gets_every_message() {
    const PINGS: usize = 600_000;
    const TIMERS: usize = 100;
    let pong = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";
    let server = TimewheelServer::start(&["--max-subscriber-backlog", "65536"]);
    let mut sub = server.conn();
    expect(
        &mut sub,
        b"SUBSCRIBE fired\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    let mut ctl = server.conn();

    // 12 MB of PING replies: about twice what the socket buffers took here,
    // so the server stops reading this client with its output backed up,
    // far more than the 64 KiB backlog unsent.
    let writer = write_in_background(&sub, b"PING\r\n".repeat(PINGS));
    wait_for_stall(&mut ctl);

    // Timers fire while it is behind: fewer bytes than the backlog.
    let mut pipeline = Vec::new();
    for i in 0..TIMERS {
        pipeline.extend(inline(&["ADDAT", &format!("late:{i}"), "1000000000000"]));
    }
    ctl.send_raw(&pipeline);
    for _ in 0..TIMERS {
        assert_eq!(show(&ctl.read_raw_reply()), ":1000000000000\\r\\n");
    }
    wait_until(
        "the timers to be published",
        Duration::from_secs(10),
        || info_u64(&mut ctl, "published_total") == TIMERS as u64,
    );

    // It catches up: every reply and every message arrive.
    let mut pongs = 0;
    let mut ids = HashSet::new();
    while pongs < PINGS || ids.len() < TIMERS {
        let raw = sub.read_raw_reply();
        if raw == pong {
            pongs += 1;
        } else {
            let id = Resp::parse(&raw)
                .ok()
                .flatten()
                .and_then(|(reply, _)| match reply {
                    Resp::Array(Some(items)) if items.len() == 3 => {
                        items[2].as_str().map(str::to_owned)
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("unexpected reply {}", show(&raw)));
            assert_eq!(show(&raw), show(&fired_message(&id)));
            assert!(ids.insert(id));
        }
    }
    writer.join().expect("writer");
    expect(&mut sub, b"PING\r\n", pong);
    assert_eq!(info_u64(&mut ctl, "subscriber_overflow_total"), 0);
}

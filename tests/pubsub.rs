//! `SUBSCRIBE fired` against the real binary: what a subscribed RESP2
//! connection may run, and that subscribers hear every fired timer and never
//! a cancelled one.
//!
//! Run with `cargo test --test pubsub`.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use util::wire::{
    CLOCK_SLACK_MS, expect, expect_both, expect_closed, inline, int_of, read_fired, show,
};
use util::{TimewheelServer, encode_command, info, info_u64, unix_ms, wait_until};

#[test]
fn subscribed_connection_accepts_only_pubsub_commands() {
    let server = TimewheelServer::start(&[]);
    let mut watcher = server.conn();
    let mut s = server.conn();
    expect(
        &mut s,
        b"SUBSCRIBE fired\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    assert_eq!(info_u64(&mut watcher, "subscribers"), 1);
    for (args, name) in [
        (&["ADD", "x", "100"][..], "add"),
        (&["COUNT"], "count"),
        (&["INFO"], "info"),
        (&["cancel", "x"], "cancel"),
    ] {
        expect_both(
            &mut s,
            args,
            format!(
                "-ERR Can't execute '{name}': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT \
                 are allowed in this context\r\n"
            ),
        );
    }
    expect_both(&mut s, &["PING"], b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    expect_both(&mut s, &["ping", "hi"], b"*2\r\n$4\r\npong\r\n$2\r\nhi\r\n");
    // Subscribing again does not count twice; another channel does.
    expect_both(
        &mut s,
        &["SUBSCRIBE", "fired"],
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    expect(
        &mut s,
        encode_command(&["subscribe", "other"]),
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nother\r\n:2\r\n",
    );
    expect(
        &mut s,
        b"UNSUBSCRIBE other\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nother\r\n:1\r\n",
    );
    // Regression: PUNSUBSCRIBE was unknown. No pattern subscriptions exist;
    // it confirms that, as Redis does, so clients leaving pub/sub mode (the
    // redis crate always sends it) can finish.
    expect_both(
        &mut s,
        &["PUNSUBSCRIBE"],
        b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:1\r\n",
    );
    s.send_raw(&encode_command(&["punsubscribe", "f*", "g*"]));
    for pattern in ["f*", "g*"] {
        let want = format!("*3\r\n$12\r\npunsubscribe\r\n$2\r\n{pattern}\r\n:1\r\n");
        assert_eq!(show(&s.read_raw_reply()), show(want.as_bytes()));
    }
    // Still subscribed to fired: still restricted.
    expect(
        &mut s,
        b"COUNT\r\n",
        b"-ERR Can't execute 'count': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT \
          are allowed in this context\r\n",
    );
    expect(
        &mut s,
        encode_command(&["UNSUBSCRIBE"]),
        b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nfired\r\n:0\r\n",
    );
    assert_eq!(info_u64(&mut watcher, "subscribers"), 0);
    // An ordinary connection again.
    expect(&mut s, b"COUNT\r\n", b":0\r\n");
    expect(&mut s, b"PING\r\n", b"+PONG\r\n");
    expect_both(
        &mut s,
        &["UNSUBSCRIBE"],
        b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
    );
    expect_both(
        &mut s,
        &["PUNSUBSCRIBE"],
        b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n",
    );

    // QUIT works while subscribed, and the subscription goes with the connection.
    expect(
        &mut s,
        b"SUBSCRIBE fired\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    expect(&mut s, b"QUIT\r\n", b"+OK\r\n");
    expect_closed(&mut s, Duration::from_secs(5));
    wait_until("the subscriber to be gone", Duration::from_secs(10), || {
        info_u64(&mut watcher, "subscribers") == 0
    });
}

#[test]
fn subscriber_gets_fired_timers_and_never_cancelled_ones() {
    const N: usize = 100;
    let server = TimewheelServer::start(&[]);
    let mut sub = server.conn();
    expect(
        &mut sub,
        b"SUBSCRIBE fired\r\n",
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nfired\r\n:1\r\n",
    );
    let mut ctl = server.conn();

    // Kept and cancelled timers share one deadline; the cancels are in the
    // same write, long before it. A past deadline and a zero delay fire at
    // the next tick, so before all of them.
    let due = unix_ms() + 1_000;
    let mut pipeline = Vec::new();
    pipeline.extend(inline(&["ADDAT", "past", "1000000000000"]));
    pipeline.extend(encode_command(&["ADD", "zero", "0"]));
    for i in 0..N {
        pipeline.extend(inline(&["ADDAT", &format!("keep:{i}"), &due.to_string()]));
        pipeline.extend(encode_command(&[
            "ADDAT",
            &format!("drop:{i}"),
            &due.to_string(),
        ]));
    }
    for i in 0..N {
        pipeline.extend(inline(&["CANCEL", &format!("drop:{i}")]));
    }
    // A later tick: once it has fired, the shared deadline has been processed.
    pipeline.extend(inline(&["ADDAT", "last", &(due + 50).to_string()]));
    let sent = unix_ms();
    ctl.send_raw(&pipeline);
    assert_eq!(show(&ctl.read_raw_reply()), ":1000000000000\\r\\n");
    let zero = int_of(&ctl.read_raw_reply()) as u64;
    assert!(
        (sent - CLOCK_SLACK_MS..=unix_ms() + CLOCK_SLACK_MS).contains(&zero),
        "{zero}"
    );
    for _ in 0..2 * N {
        assert_eq!(
            show(&ctl.read_raw_reply()),
            show(format!(":{due}\r\n").as_bytes())
        );
    }
    for _ in 0..N {
        assert_eq!(show(&ctl.read_raw_reply()), ":1\\r\\n");
    }
    assert_eq!(int_of(&ctl.read_raw_reply()) as u64, due + 50);

    let mut kept = HashSet::new();
    let mut early = HashSet::new();
    let mut last = false;
    while kept.len() < N || !last {
        let id = read_fired(&mut sub);
        assert!(!id.starts_with("drop:"), "cancelled timer {id} fired");
        if id == "last" {
            last = true;
        } else if id == "past" || id == "zero" {
            // Due at the next tick, a second before the others.
            assert!(kept.is_empty() && !last, "{id} fired late");
            assert!(early.insert(id.clone()), "{id} fired twice");
        } else {
            assert!(id.starts_with("keep:"), "unexpected id {id}");
            assert!(kept.insert(id.clone()), "{id} fired twice");
        }
    }
    assert_eq!(early.len(), 2, "{early:?}");
    // Nothing else is on its way: a ping is answered next.
    expect(&mut sub, b"PING\r\n", b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    let info = info(&mut ctl);
    assert_eq!(info["cancelled_total"], N.to_string());
    assert_eq!(info["fired_total"], (N + 3).to_string());
    assert_eq!(info["pending"], "0");
}

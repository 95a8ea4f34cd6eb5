//! The real `timewheel serve` binary over raw TCP: exact reply bytes for
//! every command and every error, inline and RESP, and the errors that keep
//! a connection usable.
//!
//! Run with `cargo test --test commands`. Every test starts its own server
//! (`--tick-ms 10`); nothing sleeps for a fixed time.

mod util;

use std::time::Duration;

use timewheel::MAX_DELAY_MS;
use util::wire::{
    CLOCK_SLACK_MS, expect, expect_both, expect_closed, expect_deadline, inline, int_of, roundtrip,
    show,
};
use util::{TimewheelServer, encode_command, info, info_u64, unix_ms, wait_until};

#[test]
fn ping_in_every_framing_and_case() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    expect(&mut c, b"PING\r\n", b"+PONG\r\n");
    expect(&mut c, b"ping\n", b"+PONG\r\n");
    expect(&mut c, b"  PiNg  \r\n", b"+PONG\r\n");
    expect(&mut c, b"*1\r\n$4\r\npInG\r\n", b"+PONG\r\n");
    expect_both(&mut c, &["PING", "hello"], b"$5\r\nhello\r\n");
    expect_both(&mut c, &["PING", "hello world"], b"$11\r\nhello world\r\n");
    // Blank lines and empty arrays between requests are skipped, as in Redis.
    expect(&mut c, b"\r\n\n*0\r\n*-1\r\nPING\r\n", b"+PONG\r\n");
    // A binary message is echoed as it is.
    expect(
        &mut c,
        encode_command(&[&b"PING"[..], b"a\r\n\0b"]),
        b"$5\r\na\r\n\0b\r\n",
    );
}

#[test]
fn add_addat_pttl_cancel_count_exact_replies() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();

    // ADDAT: the deadline is known in advance, so the reply is exact.
    let at = unix_ms() + 600_000;
    expect(&mut c, format!("ADDAT o:1 {at}\r\n"), format!(":{at}\r\n"));
    expect(
        &mut c,
        encode_command(&["addat", "o:2", &at.to_string()]),
        format!(":{at}\r\n"),
    );
    // Pending without REPLACE: EXISTS, in both framings, for ADD and ADDAT.
    expect_both(
        &mut c,
        &["ADDAT", "o:1", &(at + 5).to_string()],
        b"-EXISTS o:1 is already scheduled\r\n",
    );
    expect_both(
        &mut c,
        &["ADD", "o:2", "5000"],
        b"-EXISTS o:2 is already scheduled\r\n",
    );
    // REPLACE (any case) moves it.
    expect(
        &mut c,
        format!("AddAt o:1 {} rEpLaCe\n", at + 1),
        format!(":{}\r\n", at + 1),
    );
    expect(
        &mut c,
        encode_command(&["ADDAT", "o:2", &(at + 2).to_string(), "REPLACE"]),
        format!(":{}\r\n", at + 2),
    );

    // ADD: the deadline is now + delay.
    expect_deadline(&mut c, b"ADD a:1 60000\r\n", 60_000);
    expect_deadline(&mut c, &encode_command(&["ADD", "a:2", "60000"]), 60_000);
    expect_deadline(&mut c, b"add a:1 120000 replace\n", 120_000);
    expect_deadline(
        &mut c,
        &encode_command(&["ADD", "a:2", "120000", "REPLACE"]),
        120_000,
    );
    // Both ends of the delay range.
    expect_deadline(
        &mut c,
        &inline(&["ADD", "max", &MAX_DELAY_MS.to_string()]),
        MAX_DELAY_MS,
    );
    expect_deadline(&mut c, &encode_command(&["ADD", "zero", "0"]), 0);
    // ADDAT beyond the engine's reach: the error names the unit and the limit.
    let far = (unix_ms() + MAX_DELAY_MS + 60_000).to_string();
    expect_both(
        &mut c,
        &["ADDAT", "far", &far],
        format!(
            "-ERR deadline must be Unix time in milliseconds at most 366 days ahead; \
             got {far}, 366 days ahead\r\n"
        )
        .as_bytes(),
    );

    // PTTL: ms until the deadline, -2 if not pending.
    let before = unix_ms();
    let left = int_of(&roundtrip(&mut c, b"PTTL o:1\r\n")) as u64;
    let most = at + 1 - before + CLOCK_SLACK_MS;
    assert!(
        left <= most && left + CLOCK_SLACK_MS >= at + 1 - unix_ms(),
        "PTTL {left}"
    );
    let left = int_of(&roundtrip(&mut c, &encode_command(&["pttl", "a:1"])));
    assert!(
        (120_000 - CLOCK_SLACK_MS as i64..=120_000).contains(&left),
        "PTTL {left}"
    );
    expect_both(&mut c, &["PTTL", "nobody"], b":-2\r\n");

    // A past deadline fires at the next tick: due now (PTTL 0) or already fired (-2).
    let mut pipeline = inline(&["ADDAT", "past", "1000000000000"]);
    pipeline.extend(inline(&["PTTL", "past"]));
    c.send_raw(&pipeline);
    assert_eq!(show(&c.read_raw_reply()), ":1000000000000\\r\\n");
    let pttl = int_of(&c.read_raw_reply());
    assert!(pttl == 0 || pttl == -2, "PTTL of a due timer: {pttl}");
    wait_until("the past deadline to fire", Duration::from_secs(10), || {
        roundtrip(&mut c, b"PTTL past\r\n") == b":-2\r\n"
    });
    // Fired (and "zero", which was due at once): CANCEL cannot win any more.
    expect_both(&mut c, &["CANCEL", "past"], b":0\r\n");
    wait_until("the zero delay to fire", Duration::from_secs(10), || {
        roundtrip(&mut c, b"PTTL zero\r\n") == b":-2\r\n"
    });
    expect_both(&mut c, &["CANCEL", "zero"], b":0\r\n");

    // COUNT: o:1, o:2, a:1, a:2, max.
    expect_both(&mut c, &["COUNT"], b":5\r\n");
    expect(&mut c, b"CANCEL o:1\r\n", b":1\r\n");
    expect(&mut c, b"CANCEL o:1\r\n", b":0\r\n");
    expect(&mut c, encode_command(&["cancel", "o:2"]), b":1\r\n");
    expect(&mut c, encode_command(&["CANCEL", "o:2"]), b":0\r\n");
    expect_both(&mut c, &["CANCEL", "nobody"], b":0\r\n");
    expect_both(&mut c, &["PTTL", "o:1"], b":-2\r\n");
    expect_both(&mut c, &["count"], b":3\r\n");
    // A cancelled id can be added again without REPLACE.
    expect(&mut c, format!("ADDAT o:1 {at}\r\n"), format!(":{at}\r\n"));

    // Ids: 1..=128 bytes of 0x21..=0x7E.
    let longest = "~".repeat(128);
    expect_deadline(&mut c, &inline(&["ADD", &longest, "600000"]), 600_000);
    let all_printable: String = (0x21u8..=0x7e).map(char::from).collect();
    expect_deadline(&mut c, &inline(&["ADD", &all_printable, "600000"]), 600_000);
    expect_deadline(&mut c, &encode_command(&["ADD", "!", "600000"]), 600_000);
    for id in [&longest, &all_printable] {
        expect(&mut c, inline(&["CANCEL", id]), b":1\r\n");
        expect(&mut c, encode_command(&["CANCEL", id]), b":0\r\n");
    }
}

#[test]
fn info_reports_the_required_fields() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let mut other = server.conn();
    expect(&mut other, b"PING\r\n", b"+PONG\r\n");

    // A bulk string of key:value lines, in both framings.
    for request in [inline(&["INFO"]), encode_command(&["info"])] {
        let raw = roundtrip(&mut c, &request);
        let header_end = raw.iter().position(|&b| b == b'\n').expect("header") + 1;
        let len: usize = std::str::from_utf8(&raw[1..header_end - 2])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a bulk string: {}", show(&raw)));
        assert_eq!(raw[0], b'$');
        assert_eq!(raw.len(), header_end + len + 2);
        let text = std::str::from_utf8(&raw[header_end..header_end + len]).expect("UTF-8");
        for line in text.lines().map(|l| l.trim_end_matches('\r')) {
            assert!(
                line.is_empty() || line.starts_with("# ") || line.contains(':'),
                "bad INFO line {line:?}"
            );
        }
    }
    // Section arguments are accepted.
    let sectioned = c.cmd(&["INFO", "server"]);
    assert!(
        sectioned.as_str().is_some_and(|t| t.contains("version:")),
        "{sectioned:?}"
    );

    let at = unix_ms() + 600_000;
    for id in ["i:1", "i:2", "i:3"] {
        expect(
            &mut c,
            inline(&["ADDAT", id, &at.to_string()]),
            format!(":{at}\r\n"),
        );
    }
    expect(&mut c, b"CANCEL i:3\r\n", b":1\r\n");
    expect(
        &mut c,
        b"ADDAT fire 1000000000000\r\n",
        b":1000000000000\r\n",
    );
    wait_until("fired_total to reach 1", Duration::from_secs(10), || {
        info_u64(&mut c, "fired_total") == 1
    });

    let info = info(&mut c);
    let required = [
        "pending",
        "fired_total",
        "cancelled_total",
        "connected_clients",
        "tick_ms",
        "tick_lag_ms",
        "delivery_lag_ms",
        "journal",
        "uptime_s",
        "version",
        "subscriber_overflow_total",
        "idle_closed_total",
    ];
    for key in required {
        assert!(info.contains_key(key), "INFO lacks {key}: {info:?}");
    }
    assert_eq!(info["pending"], "2");
    assert_eq!(info["fired_total"], "1");
    assert_eq!(info["cancelled_total"], "1");
    assert_eq!(info["connected_clients"], "2");
    assert_eq!(info["tick_ms"], "10");
    assert_eq!(info["journal"], "off");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["subscriber_overflow_total"], "0");
    assert_eq!(info["idle_closed_total"], "0");
    let uptime: u64 = info["uptime_s"].parse().expect("uptime_s is a number");
    assert!(uptime < 600, "uptime_s {uptime}");
    let lag: u64 = info["tick_lag_ms"]
        .parse()
        .expect("tick_lag_ms is a number");
    assert!(lag < 60_000, "tick_lag_ms {lag}");
}

#[test]
fn command_errors_keep_the_connection_usable() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let arity = |name: &str| format!("-ERR wrong number of arguments for '{name}' command\r\n");
    const NOT_INT: &str = "-ERR value is not an integer or out of range\r\n";
    const BAD_ID: &str = "-ERR invalid id: an order id is 1 to 128 bytes of printable ASCII \
                          without spaces (0x21 to 0x7E)\r\n";
    let bad_delay = |got: &str| {
        format!(
            "-ERR delay must be an integer number of milliseconds, or an integer with a unit \
             (ms, s, m, h, d), from 0 to 366 days (31622400000 ms); got '{got}'\r\n"
        )
    };
    let bad_deadline = |got: &str, tail: &str| {
        format!(
            "-ERR deadline must be Unix time in milliseconds, from 1000000000000 (2001-09-09) \
             to 253402300799999 (9999-12-31); got '{got}'{tail}\r\n"
        )
    };
    let too_long_id = "x".repeat(129);
    let too_long_delay = (MAX_DELAY_MS + 1).to_string();
    let long_name = "Z".repeat(100);
    let cases: Vec<(Vec<&[u8]>, String)> = vec![
        (vec![b"FOO"], "-ERR unknown command 'FOO'\r\n".into()),
        (
            vec![b"foo", b"bar", b"1"],
            "-ERR unknown command 'foo'\r\n".into(),
        ),
        // Client bytes are escaped and cut, so they cannot break the reply line.
        (
            vec![b"F\0O\r\nX"],
            "-ERR unknown command 'F\\x00O\\r\\nX'\r\n".into(),
        ),
        (
            vec![long_name.as_bytes()],
            format!("-ERR unknown command '{}...'\r\n", &long_name[..64]),
        ),
        (vec![b"ADD"], arity("add")),
        (vec![b"add", b"x"], arity("add")),
        (vec![b"ADDAT", b"x"], arity("addat")),
        (vec![b"CANCEL"], arity("cancel")),
        (vec![b"CANCEL", b"a", b"b"], arity("cancel")),
        (vec![b"PTTL"], arity("pttl")),
        (vec![b"PTTL", b"a", b"b"], arity("pttl")),
        (vec![b"COUNT", b"x"], arity("count")),
        (vec![b"PING", b"a", b"b"], arity("ping")),
        (vec![b"QUIT", b"now"], arity("quit")),
        (vec![b"SUBSCRIBE"], arity("subscribe")),
        (vec![b"SELECT"], arity("select")),
        (vec![b"ADD", b"x", b"abc"], bad_delay("abc")),
        (vec![b"ADD", b"x", b"-1"], bad_delay("-1")),
        (vec![b"ADD", b"x", b"1.5"], bad_delay("1.5")),
        (vec![b"ADD", b"x", b"+5"], bad_delay("+5")),
        (vec![b"ADD", b"x", b""], bad_delay("")),
        (
            vec![b"ADD", b"x", too_long_delay.as_bytes()],
            bad_delay(&too_long_delay),
        ),
        (vec![b"ADD", b"x", b"367d"], bad_delay("367d")),
        (vec![b"ADD", b"x", b"30min"], bad_delay("30min")),
        (
            vec![b"ADD", b"x", b"99999999999999999999"],
            bad_delay("99999999999999999999"),
        ),
        (vec![b"ADDAT", b"x", b"-5"], bad_deadline("-5", "")),
        (
            vec![b"ADDAT", b"x", b"soon", b"REPLACE"],
            bad_deadline("soon", ", which is not an integer"),
        ),
        (
            vec![b"ADDAT", b"order:2", b"1796172400"],
            bad_deadline("1796172400", ", which looks like seconds: multiply by 1000"),
        ),
        (vec![b"SELECT", b"zero"], NOT_INT.into()),
        (
            vec![b"ADD", b"x", b"5", b"NOW"],
            "-ERR syntax error\r\n".into(),
        ),
        (
            vec![b"ADD", b"x", b"5", b"REPLACE", b"REPLACE"],
            "-ERR syntax error\r\n".into(),
        ),
        // Ids: 1..=128 bytes of 0x21..=0x7E; the id is checked before the delay.
        (vec![b"ADD", b"", b"5"], BAD_ID.into()),
        (vec![b"ADD", too_long_id.as_bytes(), b"5"], BAD_ID.into()),
        (vec![b"ADD", b"a b", b"abc"], BAD_ID.into()),
        (vec![b"ADDAT", b"a\tb", b"5"], BAD_ID.into()),
        (vec![b"ADD", "订单:1".as_bytes(), b"5"], BAD_ID.into()),
        (vec![b"ADD", b"a\0", b"5"], BAD_ID.into()),
        (vec![b"ADD", b"\x7f", b"5"], BAD_ID.into()),
        (vec![b"ADD", "café".as_bytes(), b"5"], BAD_ID.into()),
        (vec![b"CANCEL", b""], BAD_ID.into()),
        (vec![b"PTTL", b"a\r\nb"], BAD_ID.into()),
    ];
    for (args, want) in &cases {
        expect_both(&mut c, args, want);
        expect(&mut c, b"PING\r\n", b"+PONG\r\n");
    }

    // EXISTS leaves the timer as it was.
    let at = unix_ms() + 600_000;
    expect(
        &mut c,
        inline(&["ADDAT", "taken", &at.to_string()]),
        format!(":{at}\r\n"),
    );
    expect_both(
        &mut c,
        &["ADD", "taken", "1"],
        b"-EXISTS taken is already scheduled\r\n",
    );
    let left = int_of(&roundtrip(&mut c, b"PTTL taken\r\n"));
    assert!(left > 500_000, "EXISTS changed the deadline: PTTL {left}");

    // Errors in the middle of a pipeline: every reply, in order.
    let mut pipeline = inline(&["PING"]);
    pipeline.extend(encode_command(&["NOPE"]));
    pipeline.extend(inline(&["ADD", "x"]));
    pipeline.extend(encode_command(&["CANCEL", "taken"]));
    pipeline.extend(inline(&["COUNT"]));
    c.send_raw(&pipeline);
    for want in [
        &b"+PONG\r\n"[..],
        b"-ERR unknown command 'NOPE'\r\n",
        arity("add").as_bytes(),
        b":1\r\n",
        b":0\r\n",
    ] {
        assert_eq!(show(&c.read_raw_reply()), show(want));
    }
    assert_eq!(info_u64(&mut c, "connected_clients"), 1);
}

#[test]
fn redis_client_handshake_commands() {
    let server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let id = int_of(&roundtrip(&mut c, b"CLIENT ID\r\n"));
    assert!(id >= 1);
    let hello = format!(
        "*14\r\n$6\r\nserver\r\n$9\r\ntimewheel\r\n$7\r\nversion\r\n${}\r\n{}\r\n\
         $5\r\nproto\r\n:2\r\n$2\r\nid\r\n:{id}\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n\
         $4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n",
        env!("CARGO_PKG_VERSION").len(),
        env!("CARGO_PKG_VERSION"),
    );
    expect_both(&mut c, &["HELLO"], &hello);
    expect_both(&mut c, &["hello", "2"], &hello);
    expect_both(
        &mut c,
        &["HELLO", "4"],
        b"-NOPROTO unsupported protocol version\r\n",
    );
    expect_both(
        &mut c,
        &["HELLO", "two"],
        b"-ERR Protocol version is not an integer or out of range\r\n",
    );
    // COMMAND is answered from the command table (unit-tested byte for
    // byte in src/protocol/table.rs); here: over the wire, every row.
    let rows = timewheel::protocol::COMMANDS.len();
    expect_both(
        &mut c,
        &["COMMAND", "COUNT"],
        format!(":{rows}\r\n").as_bytes(),
    );
    let all = roundtrip(&mut c, b"COMMAND\r\n");
    assert!(
        all.starts_with(format!("*{rows}\r\n*10\r\n$3\r\nadd\r\n:-3\r\n").as_bytes()),
        "{}",
        show(&all)
    );
    expect_both(
        &mut c,
        &["COMMAND", "GETKEYS", "ADD", "order:1", "1000"],
        b"*1\r\n$7\r\norder:1\r\n",
    );
    let docs = roundtrip(&mut c, b"COMMAND DOCS cancel\r\n");
    assert!(
        docs.starts_with(b"*2\r\n$6\r\ncancel\r\n*8\r\n$7\r\nsummary\r\n"),
        "{}",
        show(&docs)
    );
    expect_both(
        &mut c,
        &["CONFIG", "GET", "save"],
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n",
    );
    expect_both(
        &mut c,
        &["config", "get", "APPENDONLY"],
        b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
    );
    expect_both(&mut c, &["CONFIG", "GET", "maxmemory"], b"*0\r\n");
    expect_both(
        &mut c,
        &["CONFIG", "GET", "*"],
        b"*6\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n\
          $9\r\ndatabases\r\n$1\r\n1\r\n",
    );
    expect_both(
        &mut c,
        &["CONFIG", "GET"],
        b"-ERR wrong number of arguments for 'config|get' command\r\n",
    );
    expect_both(
        &mut c,
        &["CONFIG", "SET", "save", ""],
        b"-ERR CONFIG set is not supported\r\n",
    );
    expect_both(&mut c, &["CLIENT", "SETNAME", "worker-1"], b"+OK\r\n");
    expect_both(&mut c, &["CLIENT", "GETNAME"], b"$8\r\nworker-1\r\n");
    expect_both(
        &mut c,
        &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"],
        b"+OK\r\n",
    );
    expect_both(
        &mut c,
        &["CLIENT", "SETINFO", "LIB-VER", "1.8.1"],
        b"+OK\r\n",
    );
    expect_both(&mut c, &["client", "id"], format!(":{id}\r\n"));
    let line = format!("id={id} name=worker-1 resp=2 sub=0");
    expect_both(
        &mut c,
        &["CLIENT", "INFO"],
        format!("${}\r\n{line}\r\n", line.len()),
    );
    expect_both(
        &mut c,
        &["CLIENT", "KILL", "x"],
        b"-ERR unknown subcommand 'kill'. Try CLIENT HELP.\r\n",
    );
    expect_both(&mut c, &["SELECT", "0"], b"+OK\r\n");
    expect_both(
        &mut c,
        &["SELECT", "1"],
        b"-ERR DB index is out of range\r\n",
    );
    // Still an ordinary connection.
    let at = unix_ms() + 60_000;
    expect(
        &mut c,
        inline(&["ADDAT", "h", &at.to_string()]),
        format!(":{at}\r\n"),
    );
}

#[test]
fn quit_replies_ok_then_closes() {
    let server = TimewheelServer::start(&[]);
    let mut watcher = server.conn();
    // Whatever follows QUIT in the same write is not answered.
    let mut a = server.conn();
    a.send_raw(b"QUIT\r\nPING\r\n");
    assert_eq!(show(&a.read_raw_reply()), "+OK\\r\\n");
    expect_closed(&mut a, Duration::from_secs(5));
    let mut b = server.conn();
    let mut pipeline = encode_command(&["quit"]);
    pipeline.extend(encode_command(&["PING"]));
    b.send_raw(&pipeline);
    assert_eq!(show(&b.read_raw_reply()), "+OK\\r\\n");
    expect_closed(&mut b, Duration::from_secs(5));
    wait_until("QUIT clients to be gone", Duration::from_secs(10), || {
        info_u64(&mut watcher, "connected_clients") == 1
    });
}

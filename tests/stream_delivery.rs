//! `timewheel serve --redis URL --stream KEY`: orders move from the due set
//! into the stream exactly once, even when the server is killed with
//! SIGKILL in the middle of a burst and restarted.
//!
//! `cargo test --test stream_delivery`

mod util;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::thread;
use std::time::Duration;

use util::{RedisServer, Resp, TimewheelServer, encode_command, info, unix_ms, wait_until_every};

const STREAM: &str = "orders:closed";
/// Timers due at the same instant, killed while they fire.
const BURST: usize = 20_000;
/// Timers an hour ahead, which must stay in the due set.
const LATER: usize = 500;

fn int(reply: Resp) -> i64 {
    reply
        .as_int()
        .unwrap_or_else(|| panic!("expected an integer, got {reply:?}"))
}

/// Every entry of the stream as (id, deadline_ms, fired_ms), read in pages.
fn read_stream(redis: &RedisServer) -> Vec<(String, u64, u64)> {
    let mut conn = redis.conn();
    let mut entries = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let Resp::Array(Some(page)) = conn.cmd(&["XRANGE", STREAM, &start, "+", "COUNT", "5000"])
        else {
            panic!("XRANGE failed");
        };
        let Some(last) = page.last() else { break };
        let Resp::Array(Some(last)) = last else {
            panic!("bad entry {last:?}")
        };
        start = format!("({}", last[0].as_str().unwrap());
        for entry in &page {
            let Resp::Array(Some(entry)) = entry else {
                panic!("bad entry {entry:?}")
            };
            let Resp::Array(Some(fields)) = &entry[1] else {
                panic!("bad fields {entry:?}")
            };
            let fields: HashMap<&str, &str> = fields
                .chunks(2)
                .map(|kv| (kv[0].as_str().unwrap(), kv[1].as_str().unwrap()))
                .collect();
            entries.push((
                fields["id"].to_owned(),
                fields["deadline_ms"].parse().unwrap(),
                fields["fired_ms"].parse().unwrap(),
            ));
        }
    }
    entries
}

#[test]
fn kill_9_during_a_burst_then_restart_moves_each_order_into_the_stream_exactly_once() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--stream", STREAM];
    let mut server = TimewheelServer::start(&args);

    // Schedule the burst and the later timers in one pipeline; every reply
    // is an acknowledgement that Redis holds the timer.
    let due = unix_ms() + 4_000;
    let later = due + 3_600_000;
    let burst: Vec<String> = (0..BURST).map(|i| format!("burst-{i}")).collect();
    let kept: Vec<String> = (0..LATER).map(|i| format!("later-{i}")).collect();
    let mut pipeline = Vec::new();
    for id in &burst {
        pipeline.extend(encode_command(&["ADDAT", id, &due.to_string()]));
    }
    for id in &kept {
        pipeline.extend(encode_command(&["ADDAT", id, &later.to_string()]));
    }
    let mut c = server.conn();
    let mut writer = c.stream().try_clone().unwrap();
    let send = thread::spawn(move || writer.write_all(&pipeline).unwrap());
    for (i, want) in std::iter::repeat_n(due, BURST)
        .chain(std::iter::repeat_n(later, LATER))
        .enumerate()
    {
        assert_eq!(c.read_reply(), Resp::Integer(want as i64), "reply {i}");
    }
    send.join().unwrap();
    drop(c);
    let acked_at = unix_ms();

    // Kill as soon as the first orders reach the stream.
    let mut probe = redis.conn();
    wait_until_every(
        "the first stream entry",
        Duration::from_secs(30),
        Duration::from_millis(1),
        || int(probe.cmd(&["XLEN", STREAM])) > 0,
    );
    server.kill9();
    let at_kill = int(probe.cmd(&["XLEN", STREAM]));
    let due_at_kill = int(probe.cmd(&["ZCARD", "tw:due"]));
    eprintln!(
        "acked {} ms before the deadline; at kill: {at_kill} in the stream, {due_at_kill} due",
        due.saturating_sub(acked_at) as i64
    );
    assert!(
        at_kill < BURST as i64,
        "the whole burst was in the stream before the kill: nothing was tested"
    );

    let server = TimewheelServer::start(&args);
    wait_until_every(
        "the due set to hold only the later timers",
        Duration::from_secs(40),
        Duration::from_millis(20),
        || int(probe.cmd(&["ZCARD", "tw:due"])) == LATER as i64,
    );
    let mut c = server.conn();
    wait_until_every(
        "inflight to drain",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || info(&mut c)["inflight"] == "0",
    );

    let entries = read_stream(&redis);
    let mut seen = BTreeSet::new();
    for (id, deadline_ms, fired_ms) in &entries {
        assert!(seen.insert(id.clone()), "{id} is in the stream twice");
        assert_eq!(*deadline_ms, due, "{id}");
        assert!(
            fired_ms >= deadline_ms,
            "{id} fired at {fired_ms}, before {deadline_ms}"
        );
    }
    let want: BTreeSet<String> = burst.iter().cloned().collect();
    assert_eq!(seen.len(), BURST, "stream length");
    assert_eq!(seen, want, "the stream holds exactly the burst");

    let Resp::Array(Some(members)) = redis.cmd(&["ZRANGE", "tw:due", "0", "-1"]) else {
        panic!("ZRANGE failed");
    };
    let pending: BTreeSet<String> = members
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pending, kept.iter().cloned().collect(), "the due set");

    // The rebuild found what the first run had fired but not yet moved.
    let info = info(&mut c);
    let overdue: i64 = info["overdue_at_rebuild"].parse().unwrap();
    eprintln!("overdue_at_rebuild: {overdue}");
    assert!(
        overdue + at_kill <= BURST as i64,
        "overdue_at_rebuild {overdue} + {at_kill} already in the stream > {BURST}"
    );
    assert_eq!(info["pending"], LATER.to_string());
}

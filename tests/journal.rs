//! The Redis journal, end to end: the real `timewheel` binary against a private `redis-server`
//! (AOF, `appendfsync always`), real bytes on real sockets, crashes by `kill -9`.
//!
//! Run with `cargo test --test journal` (needs `redis-server` on PATH). The crash loop prints
//! its seed; `TIMEWHEEL_TEST_SEED=<seed>` replays the same kill moments.
//!
//! How firing is observed across crashes: with `--stream KEY`, a delivered order is moved from
//! `<prefix>due` into a Redis Stream exactly once, so the stream is a durable record of what
//! fired, whichever process fired it. `SUBSCRIBE fired` is only a best-effort extra.

mod util;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use util::{
    PATIENCE, RedisServer, Resp, RespConn, TimewheelServer, encode_command, info, info_u64,
    unix_ms, wait_until,
};

/// The reply to a client write while Redis is unreachable (`docs/protocol.md`).
const JOURNAL_UNAVAILABLE: &str =
    "JOURNAL unavailable: Redis is unreachable, nothing was changed; retry later";
/// Commands per pipelined chunk: well under the server's 4,096 writes waiting per connection.
const CHUNK: usize = 1000;

/// Starts the server on `redis` with the default prefix `tw:` and `extra` flags; fired
/// orders go to subscribers only (`--best-effort-delivery`), which these tests watch.
fn serve(redis: &RedisServer, extra: &[&str]) -> TimewheelServer {
    let url = redis.url();
    let mut args = vec![
        "--redis",
        &url,
        "--redis-timeout-ms",
        "1000",
        "--best-effort-delivery",
    ];
    args.extend_from_slice(extra);
    TimewheelServer::start(&args)
}

/// Sends `commands` pipelined, in chunks, and returns their replies in order.
fn pipeline(conn: &mut RespConn, commands: &[Vec<String>]) -> Vec<Resp> {
    let mut replies = Vec::with_capacity(commands.len());
    for chunk in commands.chunks(CHUNK) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|c| encode_command(c)).collect();
        conn.send_raw(&bytes);
        replies.extend((0..chunk.len()).map(|_| conn.read_reply()));
    }
    replies
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn int(reply: &Resp, what: &str) -> i64 {
    reply
        .as_int()
        .unwrap_or_else(|| panic!("{what}: expected an integer, got {reply:?}"))
}

/// The `id` field of every entry of a Redis Stream, in stream order (paged, so a large stream
/// does not make one huge reply).
fn stream_ids(redis: &RedisServer, key: &str) -> Vec<String> {
    stream_entries(redis, key)
        .into_iter()
        .map(|fields| fields["id"].clone())
        .collect()
}

/// Every entry of a Redis Stream as field -> value, in stream order.
fn stream_entries(redis: &RedisServer, key: &str) -> Vec<HashMap<String, String>> {
    let mut conn = redis.conn();
    let mut entries = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply = conn.cmd(&["XRANGE", key, &start, "+", "COUNT", "1000"]);
        let Resp::Array(Some(page)) = reply else {
            panic!("XRANGE {key}: {reply:?}");
        };
        if page.is_empty() {
            return entries;
        }
        for entry in page {
            let Resp::Array(Some(parts)) = entry else {
                panic!("stream entry: {entry:?}");
            };
            let [entry_id, Resp::Array(Some(fields))] = &parts[..] else {
                panic!("stream entry: {parts:?}");
            };
            start = format!("({}", entry_id.as_str().expect("entry id"));
            let fields: Vec<String> = fields
                .iter()
                .map(|f| f.as_str().expect("field").to_owned())
                .collect();
            entries.push(
                fields
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            );
        }
    }
}

/// `ZSCORE <key> id` for every id (pipelined): the score, or `None` if absent.
fn zscores(redis: &RedisServer, key: &str, ids: &[String]) -> Vec<Option<u64>> {
    let commands: Vec<Vec<String>> = ids.iter().map(|id| args(&["ZSCORE", key, id])).collect();
    pipeline(&mut redis.conn(), &commands)
        .into_iter()
        .map(|reply| match reply {
            Resp::Bulk(None) => None,
            other => Some(
                other
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("ZSCORE: {other:?}")),
            ),
        })
        .collect()
}

fn zcard(redis: &RedisServer, key: &str) -> i64 {
    int(&redis.cmd(&["ZCARD", key]), "ZCARD")
}

/// `PTTL id` on our server for every id (pipelined).
fn pttls(conn: &mut RespConn, ids: &[String]) -> Vec<i64> {
    let commands: Vec<Vec<String>> = ids.iter().map(|id| args(&["PTTL", id])).collect();
    pipeline(conn, &commands)
        .iter()
        .map(|r| int(r, "PTTL"))
        .collect()
}

fn journal_state(conn: &mut RespConn) -> String {
    info(conn).get("journal").cloned().unwrap_or_default()
}

/// Sends one command and reads its reply, reporting a dead connection instead of panicking.
fn try_cmd(conn: &mut RespConn, parts: &[&str]) -> io::Result<Resp> {
    conn.try_send_raw(&encode_command(parts))?;
    conn.try_read_reply()
}

// ---------------------------------------------------------------------------------------------
// A steady writer: ADD (and now and then CANCEL) from its own connection
// ---------------------------------------------------------------------------------------------

/// What one loader was told.
#[derive(Debug, Default)]
struct LoadLog {
    /// ADDs answered with a deadline: (id, deadline).
    acked: Vec<(String, u64)>,
    /// ADDs answered `-JOURNAL unavailable`.
    refused: Vec<String>,
    /// CANCELs answered `:1`.
    cancelled: Vec<String>,
    /// CANCELs of pending ids answered `-JOURNAL unavailable`.
    cancel_refused: Vec<String>,
}

struct Loader {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    handle: JoinHandle<LoadLog>,
}

impl Loader {
    /// ADDs `<name>:<n>` with `delay_ms` one after another on one connection to `port`, and
    /// every fifth time CANCELs the id it added last. The server is expected to stay up: any
    /// reply other than a deadline, `:1` or `-JOURNAL unavailable` fails the test.
    fn start(port: u16, name: &str, delay_ms: u64) -> Loader {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let (stop2, acked2) = (stop.clone(), acked.clone());
        let name = name.to_owned();
        let handle = thread::spawn(move || {
            let mut conn = RespConn::connect(port);
            // Writes in flight when Redis is lost are answered only once it is back.
            conn.set_timeout(Duration::from_secs(60));
            let mut log = LoadLog::default();
            let delay = delay_ms.to_string();
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("{name}:{n}");
                match conn.cmd(&["ADD", &id, &delay]) {
                    Resp::Integer(deadline) => {
                        log.acked.push((id.clone(), deadline as u64));
                        acked2.fetch_add(1, Ordering::Relaxed);
                    }
                    Resp::Error(e) if e == JOURNAL_UNAVAILABLE => {
                        log.refused.push(id);
                        // Do not spin while Redis is down.
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    other => panic!("ADD {id}: unexpected {other:?}"),
                }
                if n.is_multiple_of(5) {
                    match conn.cmd(&["CANCEL", &id]) {
                        Resp::Integer(1) => log.cancelled.push(id),
                        Resp::Error(e) if e == JOURNAL_UNAVAILABLE => log.cancel_refused.push(id),
                        other => panic!("CANCEL {id}: unexpected {other:?}"),
                    }
                }
            }
            log
        });
        Loader {
            stop,
            acked,
            handle,
        }
    }

    fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    fn finish(self) -> LoadLog {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("loader thread panicked")
    }
}

/// The ids a loader added and did not cancel (nor try to cancel).
fn pending_of(log: &LoadLog) -> Vec<(String, u64)> {
    let cancelled: HashSet<&String> = log.cancelled.iter().collect();
    log.acked
        .iter()
        .filter(|(id, _)| !cancelled.contains(id))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn restart_keeps_count_and_pttl() {
    const N: usize = 10_000;
    // PTTL is whole milliseconds of a clock read at a slightly different moment than ours.
    const SLACK_MS: i64 = 20;
    let redis = RedisServer::start();
    let mut tw = serve(&redis, &[]);
    let mut conn = tw.conn();

    let ids: Vec<String> = (0..N).map(|i| format!("r:{i}")).collect();
    let adds: Vec<Vec<String>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| args(&["ADD", id, &(3_600_000 + i as u64 * 1000).to_string()]))
        .collect();
    let deadlines: Vec<i64> = pipeline(&mut conn, &adds)
        .iter()
        .map(|r| int(r, "ADD"))
        .collect();
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), N as i64);

    let before_start = Instant::now();
    let before = pttls(&mut conn, &ids);
    let before_end = Instant::now();
    drop(conn);

    let status = tw
        .terminate(PATIENCE)
        .expect("SIGTERM: server did not exit");
    assert!(status.success(), "exit status {status}; log:\n{}", tw.log());
    assert_eq!(zcard(&redis, "tw:due"), N as i64);

    let tw = serve(&redis, &[]);
    let mut conn = tw.conn();
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), N as i64);
    let info = info(&mut conn);
    assert_eq!(info["rebuilt_timers"], N.to_string(), "{info:?}");
    assert_eq!(info["overdue_at_rebuild"], "0", "{info:?}");
    assert_eq!(info["invalid_journal_entries"], "0", "{info:?}");

    let after_start = Instant::now();
    let after_start_unix = unix_ms() as i64;
    let after = pttls(&mut conn, &ids);
    let after_end_unix = unix_ms() as i64;
    let after_end = Instant::now();

    // Between the two PTTLs of one id, at least (after_start - before_end) and at most
    // (after_end - before_start) passed.
    let min_elapsed = after_start.duration_since(before_end).as_millis() as i64;
    let max_elapsed = after_end.duration_since(before_start).as_millis() as i64;
    for (i, id) in ids.iter().enumerate() {
        let fell = before[i] - after[i];
        assert!(
            (min_elapsed - SLACK_MS..=max_elapsed + SLACK_MS).contains(&fell),
            "{id}: PTTL {} before the restart, {} after; {min_elapsed}..={max_elapsed} ms passed",
            before[i],
            after[i]
        );
        // And it still points at the deadline ADD answered.
        let want = (deadlines[i] - after_end_unix)..=(deadlines[i] - after_start_unix);
        assert!(
            (want.start() - SLACK_MS..=want.end() + SLACK_MS).contains(&after[i]),
            "{id}: PTTL {} after the restart, deadline {} expects {want:?}",
            after[i],
            deadlines[i]
        );
    }
}

#[test]
fn crash_loop_kill9_20_times() {
    const KILLS: usize = 20;
    const CLIENTS: usize = 3;
    const STREAM: &str = "tw:closed";
    let seed = std::env::var("TIMEWHEEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(unix_ms);
    eprintln!("crash loop seed {seed} (TIMEWHEEL_TEST_SEED={seed} replays it)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let redis = RedisServer::start();
    let flags = ["--stream", STREAM, "--workers", "2"];
    let mut tw = serve(&redis, &flags);
    let shared = Arc::new(CrashShared {
        port: AtomicU16::new(tw.port()),
        stop: AtomicBool::new(false),
        published: Mutex::new(HashSet::new()),
    });
    let mut subscribers = vec![subscribe_fired(tw.port(), shared.clone())];
    let clients: Vec<JoinHandle<CrashLog>> = (0..CLIENTS)
        .map(|n| {
            let shared = shared.clone();
            let client_seed = seed.wrapping_add(n as u64 + 1);
            thread::spawn(move || crash_client(n, &shared, client_seed))
        })
        .collect();

    let started = Instant::now();
    for _ in 0..KILLS {
        // The random kill moment: how long this incarnation serves its clients.
        thread::sleep(Duration::from_millis(rng.u64(150..=1000)));
        shared.port.store(0, Ordering::SeqCst);
        tw.kill9();
        tw = serve(&redis, &flags);
        shared.port.store(tw.port(), Ordering::SeqCst);
        subscribers.push(subscribe_fired(tw.port(), shared.clone()));
    }
    thread::sleep(Duration::from_millis(300));
    shared.stop.store(true, Ordering::SeqCst);
    let logs: Vec<CrashLog> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread panicked"))
        .collect();
    eprintln!("{KILLS} kills in {:?}", started.elapsed());

    // Everything acknowledged is due within 3 s; let the last incarnation fire it all.
    wait_until("the due set to empty", PATIENCE, || {
        zcard(&redis, "tw:due") == 0
    });
    let mut conn = tw.conn();
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), 0);
    drop(conn);
    tw.kill9();
    for subscriber in subscribers {
        subscriber.join().expect("subscriber thread panicked");
    }

    let fired = stream_ids(&redis, STREAM);
    let mut fired_set = HashSet::new();
    for id in &fired {
        assert!(fired_set.insert(id.as_str()), "{id} is in the stream twice");
    }
    let mut added = HashSet::new();
    let (mut acked, mut cancelled, mut unknown) = (0, 0, 0);
    for log in &logs {
        let cancelled_here: HashSet<&String> = log.cancelled.iter().collect();
        let maybe_cancelled: HashSet<&String> = log.cancel_unknown.iter().collect();
        for id in &log.cancelled {
            assert!(
                !fired_set.contains(id.as_str()),
                "{id} was cancelled with :1 but fired (seed {seed})"
            );
            assert!(
                !shared.published.lock().unwrap().contains(id),
                "{id} was cancelled with :1 but published on `fired` (seed {seed})"
            );
        }
        for id in &log.acked {
            if !cancelled_here.contains(id) && !maybe_cancelled.contains(id) {
                assert!(
                    fired_set.contains(id.as_str()),
                    "{id} was acknowledged and never cancelled, but never fired (seed {seed})"
                );
            }
        }
        acked += log.acked.len();
        cancelled += log.cancelled.len();
        unknown += log.add_unknown.len() + log.cancel_unknown.len();
        added.extend(log.acked.iter().chain(&log.add_unknown).map(String::as_str));
    }
    for id in &fired {
        assert!(
            added.contains(id.as_str()),
            "{id} fired but was never added"
        );
    }
    eprintln!(
        "acked {acked}, cancelled {cancelled}, unknown {unknown}, fired {}, published {}",
        fired.len(),
        shared.published.lock().unwrap().len()
    );
    // The run must have exercised what it checks.
    assert!(acked >= 200, "only {acked} ADDs acknowledged");
    assert!(cancelled >= 20, "only {cancelled} CANCELs answered :1");
    assert!(unknown >= 1, "no request was cut by a kill");
}

struct CrashShared {
    /// The port of the server alive now; 0 while it is being restarted.
    port: AtomicU16,
    stop: AtomicBool,
    /// Ids seen on `fired` by any incarnation's subscriber (best effort).
    published: Mutex<HashSet<String>>,
}

/// What one crash-loop client was told.
#[derive(Debug, Default)]
struct CrashLog {
    /// ADDs answered with a deadline.
    acked: Vec<String>,
    /// ADDs whose reply was lost in a kill: maybe added, maybe not.
    add_unknown: Vec<String>,
    /// CANCELs answered `:1`.
    cancelled: Vec<String>,
    /// CANCELs whose reply was lost in a kill: maybe cancelled, maybe not.
    cancel_unknown: Vec<String>,
}

/// ADDs unique ids with 1–3 s delays, and CANCELs recent ones, reconnecting to whichever
/// incarnation is alive, until told to stop.
fn crash_client(n: usize, shared: &CrashShared, seed: u64) -> CrashLog {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut log = CrashLog::default();
    let mut conn: Option<RespConn> = None;
    let mut next = 0u64;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(c) = conn.as_mut() else {
            let port = shared.port.load(Ordering::SeqCst);
            match (port != 0).then(|| RespConn::try_connect(port)) {
                Some(Ok(mut c)) => {
                    c.set_timeout(PATIENCE);
                    conn = Some(c);
                }
                _ => thread::sleep(Duration::from_millis(5)),
            }
            continue;
        };
        if log.acked.is_empty() || rng.u32(0..10) < 7 {
            next += 1;
            let id = format!("c{n}:{next}");
            let delay = rng.u64(1000..=3000).to_string();
            match try_cmd(c, &["ADD", &id, &delay]) {
                Ok(Resp::Integer(_)) => log.acked.push(id),
                Ok(other) => panic!("ADD {id}: unexpected {other:?}"),
                Err(_) => {
                    log.add_unknown.push(id);
                    conn = None;
                }
            }
        } else {
            // One of the last few acknowledged: most are still pending.
            let recent = log.acked.len().saturating_sub(20)..log.acked.len();
            let id = log.acked[rng.usize(recent)].clone();
            match try_cmd(c, &["CANCEL", &id]) {
                Ok(Resp::Integer(1)) => log.cancelled.push(id),
                Ok(Resp::Integer(0)) => {}
                Ok(other) => panic!("CANCEL {id}: unexpected {other:?}"),
                Err(_) => {
                    log.cancel_unknown.push(id);
                    conn = None;
                }
            }
        }
    }
    log
}

/// Subscribes to `fired` on `port` and records every id until the server goes away.
fn subscribe_fired(port: u16, shared: Arc<CrashShared>) -> JoinHandle<()> {
    thread::spawn(move || {
        let Ok(mut conn) = RespConn::try_connect(port) else {
            return;
        };
        conn.set_timeout(Duration::from_secs(120));
        if try_cmd(&mut conn, &["SUBSCRIBE", "fired"]).is_err() {
            return;
        }
        while let Ok(reply) = conn.try_read_reply() {
            let Resp::Array(Some(parts)) = reply else {
                panic!("on `fired`: {reply:?}");
            };
            let id = parts[2].as_str().expect("fired id").to_owned();
            shared.published.lock().unwrap().insert(id);
        }
    })
}

#[test]
fn redis_outage_refuses_then_recovers() {
    const STREAM: &str = "tw:closed";
    let mut redis = RedisServer::start();
    let tw = serve(&redis, &["--stream", STREAM]);
    let mut conn = tw.conn();
    let mut fired = tw.conn();
    assert_eq!(
        fired.cmd(&["SUBSCRIBE", "fired"]),
        Resp::Array(Some(vec![
            Resp::bulk("subscribe"),
            Resp::bulk("fired"),
            Resp::Integer(1)
        ]))
    );

    let loaders: Vec<Loader> = (0..2)
        .map(|n| Loader::start(tw.port(), &format!("out{n}"), 600_000))
        .collect();
    let keep = int(&conn.cmd(&["ADD", "keep", "600000"]), "ADD keep") as u64;
    wait_until("some load", PATIENCE, || {
        loaders.iter().all(|l| l.acked() >= 50)
    });

    // Due while Redis is away: fires then, and is settled once Redis is back.
    let early = int(&conn.cmd(&["ADD", "early", "5000"]), "ADD early") as u64;
    redis.stop();
    wait_until("journal:down", PATIENCE, || {
        journal_state(&mut conn) == "down"
    });
    let down_seen = unix_ms();
    assert!(
        early > down_seen,
        "the machine is too slow for this test: Redis took 5 s to go down"
    );
    // The loaders are stuck on their write that was in flight when Redis went: it is answered
    // once Redis is back. New writes are refused at once and change nothing.
    let count = int(&conn.cmd(&["COUNT"]), "COUNT");
    let burst: Vec<String> = (0..100).map(|i| format!("burst:{i}")).collect();
    let adds: Vec<Vec<String>> = burst.iter().map(|id| args(&["ADD", id, "1000"])).collect();
    let mut other = tw.conn();
    for reply in pipeline(&mut other, &adds) {
        assert_eq!(reply, Resp::Error(JOURNAL_UNAVAILABLE.into()));
    }
    assert_eq!(
        conn.cmd(&["ADDAT", "refused", &(unix_ms() + 1000).to_string()]),
        Resp::Error(JOURNAL_UNAVAILABLE.into())
    );
    assert_eq!(
        conn.cmd(&["CANCEL", "keep"]),
        Resp::Error(JOURNAL_UNAVAILABLE.into())
    );
    // Reads still work.
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), count);
    assert!(pttls(&mut conn, &burst).iter().all(|&ms| ms == -2));
    assert_eq!(conn.cmd(&["PTTL", "refused"]), Resp::Integer(-2));
    assert!(int(&conn.cmd(&["PTTL", "keep"]), "PTTL keep") > 0);
    let down = info(&mut conn);
    assert_eq!(down["journal"], "down");
    let refused_total: u64 = down["journal_refused_total"].parse().unwrap();
    assert!(refused_total >= 102, "{down:?}");
    assert!(down["journal_errors_total"].parse::<u64>().unwrap() >= 1);
    assert!(down.contains_key("journal_down_for_s"), "{down:?}");
    // Firing goes on while Redis is down.
    wait_until("`early` to be published", PATIENCE, || {
        fired.read_reply() == published("early")
    });
    assert_eq!(
        journal_state(&mut conn),
        "down",
        "`early` fired during the outage"
    );

    redis.restart();
    wait_until("journal:ok", PATIENCE, || journal_state(&mut conn) == "ok");
    let acked_at_recovery: Vec<usize> = loaders.iter().map(Loader::acked).collect();
    wait_until("the loaders to be acknowledged again", PATIENCE, || {
        loaders
            .iter()
            .zip(&acked_at_recovery)
            .all(|(l, &n)| l.acked() >= n + 20)
    });
    // Timers keep firing, and are settled into the stream.
    int(&conn.cmd(&["ADD", "late", "1000"]), "ADD late");
    let logs: Vec<LoadLog> = loaders.into_iter().map(Loader::finish).collect();
    wait_until("`late` to be published", PATIENCE, || {
        fired.read_reply() == published("late")
    });
    wait_until("`early` and `late` in the stream", PATIENCE, || {
        let ids = stream_ids(&redis, STREAM);
        ids.contains(&"early".to_owned()) && ids.contains(&"late".to_owned())
    });
    assert_eq!(
        stream_ids(&redis, STREAM).len(),
        2,
        "only early and late fire"
    );

    let mut expected_count = 1; // keep
    assert_eq!(zscores(&redis, "tw:due", &["keep".into()]), [Some(keep)]);
    for log in &logs {
        let pending = pending_of(log);
        let ids: Vec<String> = pending.iter().map(|(id, _)| id.clone()).collect();
        let want: Vec<Option<u64>> = pending.iter().map(|&(_, d)| Some(d)).collect();
        assert_eq!(zscores(&redis, "tw:due", &ids), want, "acked ADDs in Redis");
        assert!(
            pttls(&mut conn, &ids).iter().all(|&ms| ms > 0),
            "acked ADDs pending"
        );
        // A refused CANCEL left its timer alone: it is still in `pending`, checked above.
        let pending_ids: HashSet<&String> = ids.iter().collect();
        assert!(log.cancel_refused.iter().all(|id| pending_ids.contains(id)));
        for gone in [&log.cancelled, &log.refused] {
            assert!(zscores(&redis, "tw:due", gone).iter().all(Option::is_none));
            assert!(pttls(&mut conn, gone).iter().all(|&ms| ms == -2));
        }
        expected_count += pending.len() as i64;
    }
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), expected_count);
    assert_eq!(zcard(&redis, "tw:due"), expected_count);
    assert!(
        zscores(&redis, "tw:due", &burst)
            .iter()
            .all(Option::is_none)
    );
    let up = info(&mut conn);
    assert_eq!(up["journal_down_for_s"], "0", "{up:?}");
    assert!(up["journal_reconnects_total"].parse::<u64>().unwrap() >= 1);
}

fn published(id: &str) -> Resp {
    Resp::Array(Some(vec![
        Resp::bulk("message"),
        Resp::bulk("fired"),
        Resp::bulk(id),
    ]))
}

#[test]
fn redis_kill9_aof_restart_loses_nothing_acked() {
    let mut redis = RedisServer::start();
    let mut tw = serve(&redis, &[]);
    let mut conn = tw.conn();
    let loader = Loader::start(tw.port(), "aof", 600_000);
    wait_until("some load", PATIENCE, || loader.acked() >= 300);

    // A crash of Redis itself, under load: what it acknowledged is in its AOF.
    redis.kill9();
    redis.restart();
    wait_until("journal:ok", PATIENCE, || journal_state(&mut conn) == "ok");
    let acked_at_recovery = loader.acked();
    wait_until("more load after the restart", PATIENCE, || {
        loader.acked() >= acked_at_recovery + 100
    });
    let log = loader.finish();
    drop(conn);

    tw.kill9();
    let tw = serve(&redis, &[]);
    let mut conn = tw.conn();
    let pending = pending_of(&log);
    let ids: Vec<String> = pending.iter().map(|(id, _)| id.clone()).collect();
    let want: Vec<Option<u64>> = pending.iter().map(|&(_, d)| Some(d)).collect();
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), ids.len() as i64);
    assert_eq!(zcard(&redis, "tw:due"), ids.len() as i64);
    assert_eq!(zscores(&redis, "tw:due", &ids), want);
    assert!(pttls(&mut conn, &ids).iter().all(|&ms| ms > 0));
    for gone in [&log.cancelled, &log.refused] {
        assert!(pttls(&mut conn, gone).iter().all(|&ms| ms == -2));
    }
    assert_eq!(
        info_u64(&mut conn, "rebuilt_timers"),
        ids.len() as u64,
        "log:\n{}",
        tw.log()
    );
}

#[test]
fn overdue_entries_fire_after_rebuild() {
    const OVERDUE: u64 = 50;
    const STREAM: &str = "tw:closed";
    let redis = RedisServer::start();
    let now = unix_ms();
    // Deadlines 60 s to 55.1 s ago, written out of order; Redis keeps them sorted.
    let deadline = |k: u64| now - 60_000 + k * 100;
    let mut zadd = args(&["ZADD", "tw:due"]);
    for k in (0..OVERDUE).rev() {
        zadd.extend([deadline(k).to_string(), format!("od:{k:02}")]);
    }
    zadd.extend([(now + 600_000).to_string(), "future".into()]);
    assert_eq!(int(&redis.conn().cmd(&zadd), "ZADD"), OVERDUE as i64 + 1);
    // The previous run's last heartbeat was 57 s ago: what was due up to one heartbeat
    // later (56 s ago, k <= 40) may have been delivered by it already.
    let alive = now - 57_000;
    redis.cmd(&["HSET", "tw:meta", "alive_ms", &alive.to_string()]);
    let refired = (0..OVERDUE)
        .filter(|&k| deadline(k) <= alive + 1000)
        .count();
    assert_eq!(refired, 41);

    let started = Instant::now();
    let started_unix = unix_ms();
    // One worker: the stream shows the order in which they were handed over.
    let tw = serve(&redis, &["--stream", STREAM, "--workers", "1"]);
    let mut conn = tw.conn();
    // Already firing: not cancellable.
    assert_eq!(conn.cmd(&["CANCEL", "od:49"]), Resp::Integer(0));
    wait_until("the overdue entries in the stream", PATIENCE, || {
        int(&redis.cmd(&["XLEN", STREAM]), "XLEN") == OVERDUE as i64
    });
    let took = started.elapsed();
    assert!(took < Duration::from_secs(15), "took {took:?}");

    let entries = stream_entries(&redis, STREAM);
    let want: Vec<String> = (0..OVERDUE).map(|k| format!("od:{k:02}")).collect();
    let got: Vec<String> = entries.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(got, want, "oldest first");
    for (k, entry) in entries.iter().enumerate() {
        assert_eq!(entry["deadline_ms"], deadline(k as u64).to_string());
        let fired_ms: u64 = entry["fired_ms"].parse().unwrap();
        assert!(fired_ms >= started_unix, "{entry:?} fired before the start");
    }

    let info = info(&mut conn);
    assert_eq!(
        info["rebuilt_timers"],
        (OVERDUE + 1).to_string(),
        "{info:?}"
    );
    assert_eq!(info["overdue_at_rebuild"], OVERDUE.to_string(), "{info:?}");
    assert_eq!(
        info["refired_after_restart"],
        refired.to_string(),
        "{info:?}"
    );
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), 1);
    assert!(int(&conn.cmd(&["PTTL", "future"]), "PTTL") > 590_000);
    wait_until("only `future` left in Redis", PATIENCE, || {
        zcard(&redis, "tw:due") == 1
    });
    assert_eq!(
        zscores(&redis, "tw:due", &["future".into()]),
        [Some(now + 600_000)]
    );
}

#[test]
fn unreachable_redis_at_start_exits_nonzero() {
    // A port nobody listens on: bound, then released.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_timewheel"))
        .args(["serve", "--bind", "127.0.0.1:0", "--redis", &url])
        .args(["--redis-connect-timeout-s", "1", "--best-effort-delivery"])
        .env("RUST_LOG", "info")
        .env_remove("TIMEWHEEL_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn timewheel");
    let stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || io::read_to_string(stderr).unwrap_or_default());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {PATIENCE:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = started.elapsed();
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(1), "stderr:\n{stderr}");
    assert!(took >= Duration::from_secs(1), "gave up after {took:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // Retried with a line per try, then one clear error line.
    let retries = stderr
        .matches("journal: cannot reach Redis; retrying")
        .count();
    assert!(retries >= 2, "{retries} retry lines; stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("Error: journal: Redis at {url} is unreachable: "))
            && last.contains("(gave up after "),
        "last line {last:?}; stderr:\n{stderr}"
    );
    assert!(!stderr.contains("listening on"), "stderr:\n{stderr}");
}

#[test]
fn info_journal_fields() {
    let redis = RedisServer::start();
    // Left in Redis and counted, not loaded: a space is not allowed in an id.
    let future = (unix_ms() + 600_000).to_string();
    redis.cmd(&["ZADD", "tw:due", &future, "not an id"]);
    let tw = serve(&redis, &[]);
    let mut conn = tw.conn();
    let start = info(&mut conn);
    for (key, value) in [
        ("journal", "ok"),
        ("journal_down_for_s", "0"),
        ("journal_errors_total", "0"),
        ("journal_refused_total", "0"),
        ("journal_reconnects_total", "0"),
        ("rebuilt_timers", "1"),
        ("overdue_at_rebuild", "0"),
        ("refired_after_restart", "0"),
        ("invalid_journal_entries", "1"),
    ] {
        assert_eq!(
            start.get(key).map(String::as_str),
            Some(value),
            "{key}: {start:?}"
        );
    }
    let rebuild_ms: u64 = start["rebuild_ms"].parse().expect("rebuild_ms");
    assert!(rebuild_ms < 10_000, "{start:?}");
    assert_eq!(int(&conn.cmd(&["COUNT"]), "COUNT"), 0);

    let a = int(&conn.cmd(&["ADD", "i:a", "600000"]), "ADD") as u64;
    int(&conn.cmd(&["ADD", "i:b", "600000"]), "ADD");
    assert_eq!(conn.cmd(&["CANCEL", "i:b"]), Resp::Integer(1));
    assert_eq!(conn.cmd(&["CANCEL", "i:b"]), Resp::Integer(0));
    let now = info(&mut conn);
    let writes: u64 = now["journal_writes_total"].parse().unwrap();
    let batches: u64 = now["journal_batches_total"].parse().unwrap();
    assert!(writes >= 3, "{now:?}");
    // Heartbeats are pipelines too, so there may be more batches than writes.
    assert!(batches >= 1, "{now:?}");
    assert_eq!(now["journal_backlog"], "0", "{now:?}");
    assert_eq!(now["journal"], "ok");

    let ids = ["i:a".to_owned(), "i:b".to_owned(), "not an id".to_owned()];
    assert_eq!(
        zscores(&redis, "tw:due", &ids),
        [Some(a), None, Some(future.parse().unwrap())]
    );
    // The heartbeat is written within a second or so.
    wait_until("a recent heartbeat", PATIENCE, || {
        redis
            .cmd(&["HGET", "tw:meta", "alive_ms"])
            .as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|t| t + 10_000 > unix_ms())
    });
}

#[test]
fn shutdown_with_hung_redis_answers_unconfirmed_writes() {
    let redis = RedisServer::start();
    let mut tw = serve(&redis, &[]);
    let mut conn = tw.conn();
    conn.set_timeout(PATIENCE);
    int(&conn.cmd(&["ADD", "before", "600000"]), "ADD before");
    // Redis hangs on writes: each round trip of the journal times out (--redis-timeout-ms).
    assert_eq!(
        redis.cmd(&["CLIENT", "PAUSE", "25000", "WRITE"]),
        Resp::ok()
    );
    conn.send(&["ADD", "unconfirmed", "600000"]);
    let mut other = tw.conn();
    wait_until("journal:down", PATIENCE, || {
        journal_state(&mut other) == "down"
    });
    drop(other);
    tw.send_sigterm();
    let reply = conn.try_read_reply();
    let status = tw.wait_exit(PATIENCE);
    redis.cmd(&["CLIENT", "UNPAUSE"]);
    assert_eq!(
        reply.ok(),
        Some(Resp::Error(
            "JOURNAL unavailable: Redis did not confirm the write before shutdown".into()
        )),
        "log:\n{}",
        tw.log()
    );
    assert!(status.is_some(), "did not exit; log:\n{}", tw.log());
    assert!(
        tw.log()
            .contains("journal: Redis still unreachable at shutdown"),
        "log:\n{}",
        tw.log()
    );
    // What was confirmed is in Redis.
    assert!(zscores(&redis, "tw:due", &["before".into()])[0].is_some());
}

// cargo build --release && cargo run --release --example burst -- 1000000 [always|everysec|off]
//
//! A same-second burst, delivered into a Redis Stream.
//!
//! Starts a private `redis-server` (temporary directory, free port, AOF with
//! the given fsync policy) and the release `timewheel serve --redis ...
//! --stream burst:closed --tick-ms 1000`. It schedules N timers that all
//! fall due at the same whole second D, at least 20 s ahead, then counts
//! `XLEN` from D on and prints how many were in the stream 1 s, 2 s and 5 s
//! after D. It then reads the stream back and prints lateness percentiles.
//! Lateness is the entry's stream id time minus D, so it covers the whole
//! path: wheel, workers, group commit and the Lua move into the stream.
//! Finally it checks that every id is in the stream exactly once and that
//! the due set is empty.

use std::io::Write;
use std::time::{Duration, Instant};

use timewheel::cluster::slot::SLOTS;

#[path = "common/mod.rs"]
mod common;
use common::{
    Aof, Error, Node, load_routed, now_ms, process_cpu_s, redis_cpu_s, start_redis, timewheel_bin,
};

const STREAM: &str = "burst:closed";

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let fsync = args.next().unwrap_or_else(|| "everysec".into());
    let dir = tempfile::tempdir()?;
    let aof = if fsync == "off" {
        Aof::Off
    } else {
        Aof::Fsync(&fsync)
    };
    let (redis_port, _redis) = start_redis(dir.path(), aof)?;
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let mut con = redis::Client::open(url.as_str())?.get_connection()?;
    #[rustfmt::skip]
    let args = ["--tick-ms", "1000", "--redis", &url, "--stream", STREAM];
    let server = Node::start(&timewheel_bin(), &args, "")?;
    let (port, server_pid) = (server.port, server.child.id());

    let deadline_ms = (now_ms() / 1000 + 20 + count / 100_000) * 1000;
    let loading = Instant::now();
    load(port, count, deadline_ms)?;
    println!(
        "scheduled: {count} timers due at {deadline_ms} in {:.1} s (fsync {fsync})",
        loading.elapsed().as_secs_f64()
    );
    let due: u64 = redis::cmd("ZCARD").arg("tw:due").query(&mut con)?;
    assert_eq!(
        due, count,
        "every ADDAT is in the journal before the deadline"
    );

    while now_ms() < deadline_ms {
        std::thread::sleep(Duration::from_millis(5));
    }
    let cpu_at_deadline = (redis_cpu_s(redis_port), process_cpu_s(server_pid));
    // When the last one arrived: (ms after the deadline, CPU seconds of
    // redis-server and of timewheel since the deadline).
    let mut all_in = None;
    let all_in_now = || {
        (
            now_ms() - deadline_ms,
            redis_cpu_s(redis_port) - cpu_at_deadline.0,
            process_cpu_s(server_pid) - cpu_at_deadline.1,
        )
    };
    let mut marks = [(1_000u64, None), (2_000, None), (5_000, None)];
    while now_ms() < deadline_ms + 5_000 + 50 {
        let len: u64 = redis::cmd("XLEN").arg(STREAM).query(&mut con)?;
        let late = now_ms().saturating_sub(deadline_ms);
        if len == count && all_in.is_none() {
            all_in = Some(all_in_now());
        }
        for (at, seen) in marks.iter_mut() {
            if late <= *at {
                *seen = Some(len);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (at, seen) in marks {
        println!(
            "in_stream_after_{}s: {} ({:.1}%)",
            at / 1000,
            seen.unwrap_or(0),
            100.0 * seen.unwrap_or(0) as f64 / count as f64
        );
    }

    // Wait for the rest, then read the stream back.
    let finish_by = Instant::now() + Duration::from_secs(120);
    while redis::cmd("XLEN").arg(STREAM).query::<u64>(&mut con)? < count {
        if Instant::now() > finish_by {
            return Err("not every timer reached the stream within 2 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (all_in_ms, redis_cpu, server_cpu) = match all_in {
        Some(seen) => seen,
        None => all_in_now(),
    };
    println!(
        "all_in_stream_after_ms: {all_in_ms} (polled every 20 ms, then 100 ms); CPU seconds from the \
         deadline until then: redis-server {redis_cpu:.2}, timewheel {server_cpu:.2}"
    );
    let mut lateness = Vec::with_capacity(count as usize);
    let mut seen = vec![false; count as usize];
    let mut start = "-".to_string();
    loop {
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(50_000)
            .query(&mut con)?;
        let Some((last, _)) = page.last() else { break };
        start = format!("({last}");
        for (entry_id, fields) in &page {
            let entered_ms: u64 = entry_id.split('-').next().unwrap_or("0").parse()?;
            lateness.push(entered_ms.saturating_sub(deadline_ms));
            let id = &fields
                .iter()
                .find(|(k, _)| k == "id")
                .ok_or("no id field")?
                .1;
            let n: usize = id.trim_start_matches("b:").parse()?;
            assert!(!seen[n], "{id} is in the stream twice");
            seen[n] = true;
        }
    }
    assert!(seen.iter().all(|&s| s), "every id is in the stream");
    let left: u64 = redis::cmd("ZCARD").arg("tw:due").query(&mut con)?;
    assert_eq!(left, 0, "the due set is empty once all moved");
    lateness.sort_unstable();
    let pct = |p: f64| lateness[((lateness.len() - 1) as f64 * p) as usize];
    println!(
        "lateness_ms: p50 {} p99 {} max {}",
        pct(0.5),
        pct(0.99),
        lateness.last().copied().unwrap_or(0)
    );
    println!("exactly_once: {count} distinct ids, each once; due set empty");
    let info: String = redis::cmd("INFO").query(
        &mut redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?.get_connection()?,
    )?;
    for line in info.lines().filter(|l| l.starts_with("journal_")) {
        println!("timewheel {line}");
    }
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut con)?;
    for line in stats.lines().filter(|l| l.starts_with("cmdstat_")) {
        println!("redis {line}");
    }
    Ok(())
}

/// `ADDAT b:<n> deadline` over 4 connections, 1000 commands in flight each.
fn load(port: u16, count: u64, deadline_ms: u64) -> Result<(), Error> {
    load_routed(
        &[port; SLOTS as usize],
        0..count,
        (4, 1000),
        |_| String::new(),
        |out, n| write!(out, "ADDAT b:{n} {deadline_ms}\r\n"),
    )
}

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

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STREAM: &str = "burst:closed";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let fsync = args.next().unwrap_or_else(|| "everysec".into());
    let dir = tempfile::tempdir()?;
    let redis_port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if fsync == "off" {
                vec!["--appendonly", "no"]
            } else {
                vec!["--appendonly", "yes", "--appendfsync", &fsync]
            })
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()?,
    );
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let client = redis::Client::open(url.as_str())?;
    let mut con = wait_for(|| client.get_connection().ok())?;

    let bin = std::env::var("TIMEWHEEL_BIN").unwrap_or_else(|_| "target/release/timewheel".into());
    let mut server = Command::new(&bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--tick-ms", "1000"])
        .args(["--redis", &url, "--stream", STREAM])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{bin}: {e} (run `cargo build --release` first)"))?;
    let stderr = server.stderr.take().ok_or("no stderr")?;
    let server_pid = server.id();
    let _server = Killed(server);
    let mut lines = BufReader::new(stderr).lines();
    let port: u16 = loop {
        let line = lines.next().ok_or("timewheel exited before listening")??;
        if let Some(addr) = line.split("listening on ").nth(1) {
            break addr.trim().rsplit(':').next().ok_or("no port")?.parse()?;
        }
    };
    // Keep draining the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

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
    let cpu_at_deadline = (redis_cpu_s(&mut con)?, process_cpu_s(server_pid));
    // When the last one arrived: (ms after the deadline, CPU seconds of
    // redis-server and of timewheel since the deadline).
    let mut all_in = None;
    let all_in_now = |con: &mut redis::Connection| -> Result<_, Box<dyn std::error::Error>> {
        Ok((
            now_ms() - deadline_ms,
            redis_cpu_s(con)? - cpu_at_deadline.0,
            process_cpu_s(server_pid) - cpu_at_deadline.1,
        ))
    };
    let mut marks = [(1_000u64, None), (2_000, None), (5_000, None)];
    while now_ms() < deadline_ms + 5_000 + 50 {
        let len: u64 = redis::cmd("XLEN").arg(STREAM).query(&mut con)?;
        let late = now_ms().saturating_sub(deadline_ms);
        if len == count && all_in.is_none() {
            all_in = Some(all_in_now(&mut con)?);
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
        None => all_in_now(&mut con)?,
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
fn load(port: u16, count: u64, deadline_ms: u64) -> std::io::Result<()> {
    const CONNECTIONS: u64 = 4;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                scope.spawn(move || -> std::io::Result<()> {
                    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    let ids: Vec<u64> = (c..count).step_by(CONNECTIONS as usize).collect();
                    for batch in ids.chunks(1000) {
                        let mut out = Vec::with_capacity(batch.len() * 40);
                        for n in batch {
                            write!(out, "ADDAT b:{n} {deadline_ms}\r\n")?;
                        }
                        stream.write_all(&out)?;
                        let mut line = String::new();
                        for _ in batch {
                            line.clear();
                            reader.read_line(&mut line)?;
                            if !line.starts_with(':') {
                                return Err(std::io::Error::other(format!("ADDAT: {line}")));
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("loader thread"))
    })
}

/// Redis's own CPU time (user + system), from `INFO cpu`.
fn redis_cpu_s(con: &mut redis::Connection) -> Result<f64, Box<dyn std::error::Error>> {
    let info: String = redis::cmd("INFO").arg("cpu").query(con)?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum())
}

/// A process's CPU time (user + system) from `/proc/<pid>/stat`, assuming
/// the usual 100 clock ticks per second; 0 where there is no `/proc`.
fn process_cpu_s(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `)`.
    (ticks(11) + ticks(12)) / 100.0
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Result<T, Box<dyn std::error::Error>> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = f() {
            return Ok(value);
        }
        if Instant::now() > until {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process, killed when the example ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

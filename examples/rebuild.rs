// cargo run --release --example rebuild -- redis://127.0.0.1:PORT/0 1000000
//
//! How fast the wheel is rebuilt from the journal after a restart.
//!
//! Fills `rebuild:due` on the given Redis (use a private one: the key is
//! overwritten) with N timers, 16-byte ids and deadlines 600..=1800 s ahead (none overdue, even after a slow fill),
//! then times what a restart does: connect, read the due set in chunks and
//! load it into a new engine. Prints `rebuild_ms`, `timers_per_s` and, as a
//! baseline from the same run, the time a plain redis-rs `ZRANGE` loop over
//! the same chunks takes doing nothing else. docs/benchmarks.md#journal
//! has the figures for 1M and 10M.

use std::time::{Duration, Instant};

use timewheel::{Engine, Fired, Journal, JournalConfig};

const PREFIX: &str = "rebuild:";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The rebuild's own progress lines go to stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: rebuild REDIS_URL [COUNT]")?;
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;

    let client = redis::Client::open(url.as_str())?;
    let mut con = client.get_connection()?;
    let due = format!("{PREFIX}due");
    let filled = Instant::now();
    fill(&mut con, &due, count)?;
    println!(
        "filled: {count} timers in {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    // Baseline: reading the set through redis-rs, same chunks, nothing else.
    let read = Instant::now();
    let mut start = 0isize;
    loop {
        let chunk: Vec<redis::Value> = redis::cmd("ZRANGE")
            .arg(&due)
            .arg(start)
            .arg(start + 49_999)
            .arg("WITHSCORES")
            .query(&mut con)?;
        if chunk.len() < 100_000 {
            break;
        }
        start += 50_000;
    }
    let read_ms = read.elapsed().as_millis();

    let rebuild = Instant::now();
    let journal = Journal::connect(JournalConfig {
        key_prefix: PREFIX.into(),
        ..JournalConfig::new(url.clone())
    })?;
    let engine = Engine::builder()
        .tick(Duration::from_secs(1))
        .workers(1)
        .journal(journal)
        .build(|_: &Fired| Ok(()))?;
    let rebuild_ms = rebuild.elapsed().as_millis().max(1);
    let pending = engine.len();
    engine.shutdown();
    assert_eq!(pending as u64, count, "every journaled timer is back");
    println!("redis_rs_zrange_ms: {read_ms}");
    println!("rebuild_ms: {rebuild_ms}");
    println!(
        "timers_per_s: {}",
        (count as u128 * 1000 / rebuild_ms) as u64
    );
    let _: () = redis::cmd("DEL")
        .arg(&due)
        .arg(format!("{PREFIX}meta"))
        .query(&mut con)?;
    Ok(())
}

/// `ZADD` in pipelined batches of 10k members.
fn fill(con: &mut redis::Connection, due: &str, count: u64) -> redis::RedisResult<()> {
    let _: () = redis::cmd("DEL").arg(due).query(con)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut next = 0u64;
    while next < count {
        let mut pipe = redis::pipe();
        for _ in 0..10 {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(due);
            for _ in 0..1_000 {
                if next == count {
                    break;
                }
                let delay_ms = 600_000 + fastrand::u64(0..1_200_000);
                cmd.arg(now_ms + delay_ms).arg(format!("order:{next:010}"));
                next += 1;
            }
            pipe.add_command(cmd).ignore();
        }
        pipe.exec(con)?;
    }
    Ok(())
}

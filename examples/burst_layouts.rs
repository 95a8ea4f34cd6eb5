// cargo run --release --example burst_layouts -- 1000000 [runs] [both|cluster|single]
//
//! Where a same-second burst's Redis time goes, per journal layout,
//! measured on Redis alone (no timewheel): on a 3-master Redis Cluster and
//! on one Redis, AOF `appendfsync everysec` (no automatic rewrite), side by
//! side in one run.
//!
//! N ids (`b:<n>`) due within the same second, spread over the 128
//! partitions of the cluster layout (`{tw:pNNN}` hash tags, each on the
//! master of its slot), are moved into the partitions' streams
//! (`burst:{tw:pNNN}`, fields id, deadline_ms, fired_ms) by a Lua script
//! per batch of 1024 ids, as the journal does; one connection and thread
//! per master, a partition's script calls in one pipeline. The designs:
//!
//! - `floor`: the script only `XADD`s the ids it is sent;
//! - `apply`: the cluster journal's `APPLY` with `S` ops (src/cluster/
//!   scripts.rs; epoch check, then per run of `S` ops one `ZMSCORE`, an
//!   `XADD` each, one `ZREM`);
//! - `deliver`: the single-node journal's deliver script (`DELIVER_LUA`
//!   of src/journal/writer.rs: `ZMSCORE` of the ids, `XADD` each, one
//!   `ZREM` of them all);
//! - `take`: take by score inside Redis (`ZRANGE due -inf T BYSCORE LIMIT
//!   0 1024`, `XADD` each, `ZREMRANGEBYRANK due 0 n-1`);
//! - `second`: one set per due second (`{tw:pNNN}:s:<second>`, filled with
//!   `SADD`); the script `XADD`s the ids it is sent and the partition's
//!   last call `UNLINK`s the whole set.
//!
//! Before each design every master is emptied (`FLUSHALL`, then
//! `BGREWRITEAOF` so the AOF stays small) and filled for it; only the moves
//! are timed. Prints, per design, the wall time and each master's CPU
//! seconds (`INFO cpu`, all of Redis's threads), then each design's CPU and
//! wall time over the floor's. Checks that every id is in a stream once
//! (`XLEN` sums to N) and that no due key is left.

use std::time::{Duration, Instant};

use timewheel::cluster::scripts::{APPLY, Layout};
use timewheel::cluster::slot::Partitions;

#[path = "common/mod.rs"]
mod common;
use common::{
    Aof, Error, cmd, load_average, now_ms, redis_cpu_s, slot_map, start_redis, start_redis_cluster,
    wait_for,
};

const PARTITIONS: u16 = 128;
const BATCH: usize = 1024;
const DESIGNS: [&str; 5] = ["floor", "apply", "deliver", "take", "second"];

const FLOOR: &str = r"
for i = 1, #ARGV, 3 do
  redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'deadline_ms', ARGV[i + 1],
    'fired_ms', ARGV[i + 2])
end
return #ARGV / 3
";

/// `KEYS` = due, stream; `ARGV` = now, fired, limit.
const TAKE: &str = r"
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0,
  tonumber(ARGV[3]), 'WITHSCORES')
for i = 1, #due, 2 do
  redis.call('XADD', KEYS[2], '*', 'id', due[i], 'deadline_ms', due[i + 1],
    'fired_ms', ARGV[2])
end
if #due > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #due / 2 - 1) end
return #due / 2
";

/// `KEYS` = the second's set, stream; `ARGV[1]` = 1 on the last call.
const SECOND: &str = r"
for i = 2, #ARGV, 3 do
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[i], 'deadline_ms', ARGV[i + 1],
    'fired_ms', ARGV[i + 2])
end
if ARGV[1] == '1' then redis.call('UNLINK', KEYS[1]) end
return (#ARGV - 1) / 3
";

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let count: u64 = args.next().map_or(Ok(1_000_000), |n| n.parse())?;
    let runs: usize = args.next().map_or(Ok(2), |n| n.parse())?;
    let which = args.next().unwrap_or_else(|| "both".into());
    if which != "single" {
        println!("== Redis Cluster, 3 masters (no replicas), AOF everysec; N = {count}");
        let dir = tempfile::tempdir()?;
        let masters = start_redis_cluster(dir.path(), 3, Aof::Fsync("everysec"))?;
        let ports: Vec<u16> = masters.iter().map(|(p, _)| *p).collect();
        run(&ports, true, count, runs)?;
    }
    if which != "cluster" {
        println!("== one Redis, AOF everysec; N = {count}");
        let dir = tempfile::tempdir()?;
        let (port, _redis) = start_redis(dir.path(), Aof::Fsync("everysec"))?;
        run(&[port], false, count, runs)?;
    }
    Ok(())
}

/// What one partition delivers: its ids with their deadlines.
struct Part {
    p: u16,
    master: u16,
    due: Vec<(String, u64)>,
}

fn run(ports: &[u16], cluster: bool, count: u64, runs: usize) -> Result<(), Error> {
    let layout = Layout::new("tw:", Some("burst"));
    let parts = Partitions::new(PARTITIONS as u32)?;
    let map = if cluster {
        Some(slot_map(ports[0]).ok_or("no Redis slot map")?)
    } else {
        None
    };
    let mut work: Vec<Part> = parts
        .iter()
        .map(|p| Part {
            p,
            master: map
                .as_ref()
                .map_or(ports[0], |m| m[layout.slot(p) as usize]),
            due: Vec::new(),
        })
        .collect();
    let second = now_ms() / 1000 - 1;
    for n in 0..count {
        let id = format!("b:{n}");
        let p = parts.of_key(id.as_bytes());
        work[p as usize]
            .due
            .push((id, second * 1000 + fastrand::u64(..1000)));
    }
    for run in 1..=runs {
        let mut figures: Vec<(f64, f64)> = Vec::new();
        for design in DESIGNS {
            for &port in ports {
                reset(port)?;
            }
            fill(&layout, &work, design, second)?;
            let before: Vec<f64> = ports.iter().map(|&p| redis_cpu_s(p)).collect();
            let load = load_average();
            let started = Instant::now();
            deliver(&layout, &work, ports, design, second)?;
            let wall = started.elapsed().as_secs_f64();
            let cpu: Vec<f64> = ports
                .iter()
                .zip(&before)
                .map(|(&p, b)| redis_cpu_s(p) - b)
                .collect();
            check(&layout, &work, design, second, count)?;
            let total: f64 = cpu.iter().sum();
            let per_master: Vec<String> = cpu.iter().map(|c| format!("{c:.2}")).collect();
            println!(
                "run {run} {design:>7}: wall {wall:.2} s; Redis CPU s per master {} (sum {total:.2}, \
                 {:.2} us per entry); load average {load} -> {}",
                per_master.join(", "),
                total * 1e6 / count as f64,
                load_average()
            );
            figures.push((total, wall));
        }
        let (floor_cpu, floor_wall) = figures[0];
        let ratios: Vec<String> = DESIGNS
            .iter()
            .zip(&figures)
            .skip(1)
            .map(|(d, (c, w))| format!("{d} {:.2}x / {:.2}x", c / floor_cpu, w / floor_wall))
            .collect();
        println!(
            "run {run} over the floor (CPU / wall): {}",
            ratios.join("; ")
        );
    }
    Ok(())
}

/// Empties the Redis, rewrites its AOF (small again) and waits for that.
fn reset(port: u16) -> Result<(), Error> {
    cmd::<()>(port, &["FLUSHALL", "SYNC"])?;
    cmd::<()>(port, &["BGREWRITEAOF"])?;
    wait_for("the AOF rewrite", || {
        let text: String = cmd(port, &["INFO", "persistence"]).ok()?;
        (text.contains("aof_rewrite_in_progress:0") && text.contains("aof_rewrite_scheduled:0"))
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn second_key(layout: &Layout, p: u16, second: u64) -> String {
    layout.due(p).replace(":due", &format!(":s:{second}"))
}

/// Writes what `design` needs before the burst, one pipeline per
/// partition.
fn fill(layout: &Layout, work: &[Part], design: &str, second: u64) -> Result<(), Error> {
    per_master(work, |con, part| {
        let mut pipe = redis::pipe();
        for chunk in part.due.chunks(1000) {
            match design {
                "apply" | "deliver" | "take" => {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(layout.due(part.p));
                    for (id, deadline) in chunk {
                        zadd.arg(deadline).arg(id);
                    }
                    pipe.add_command(zadd).ignore();
                }
                "second" => {
                    let mut sadd = redis::cmd("SADD");
                    sadd.arg(second_key(layout, part.p, second));
                    for (id, _) in chunk {
                        sadd.arg(id);
                    }
                    pipe.add_command(sadd).ignore();
                }
                _ => {}
            }
        }
        pipe.cmd("SET").arg(layout.epoch(part.p)).arg(1).ignore();
        pipe.exec(con)
    })
}

/// The timed part: every partition's script calls, one pipeline per
/// partition, the masters in parallel.
fn deliver(
    layout: &Layout,
    work: &[Part],
    ports: &[u16],
    design: &str,
    second: u64,
) -> Result<(), Error> {
    let source = match design {
        "floor" => FLOOR,
        "apply" => APPLY,
        "deliver" => timewheel::journal::DELIVER_LUA,
        "take" => TAKE,
        _ => SECOND,
    };
    let sha: String = cmd(ports[0], &["SCRIPT", "LOAD", source])?;
    for &port in &ports[1..] {
        cmd::<String>(port, &["SCRIPT", "LOAD", source])?;
    }
    let fired = now_ms();
    per_master(work, |con, part| {
        let stream = layout.stream(part.p).unwrap_or_default();
        let mut pipe = redis::pipe();
        let calls = part.due.len().div_ceil(BATCH);
        for (i, chunk) in part.due.chunks(BATCH).enumerate() {
            let mut call = redis::cmd("EVALSHA");
            call.arg(&sha);
            match design {
                "floor" => call.arg(1).arg(&stream),
                "apply" => call
                    .arg(4)
                    .arg(layout.epoch(part.p))
                    .arg(layout.due(part.p))
                    .arg(layout.dead(part.p))
                    .arg(&stream)
                    .arg(1)
                    .arg("-"),
                "deliver" => call.arg(2).arg(layout.due(part.p)).arg(&stream),
                "take" => call
                    .arg(2)
                    .arg(layout.due(part.p))
                    .arg(&stream)
                    .arg((second + 1) * 1000)
                    .arg(fired)
                    .arg(BATCH),
                _ => call
                    .arg(2)
                    .arg(second_key(layout, part.p, second))
                    .arg(&stream)
                    .arg(u8::from(i + 1 == calls)),
            };
            if design != "take" {
                for (id, deadline) in chunk {
                    if design == "apply" {
                        call.arg("S");
                    }
                    call.arg(id).arg(deadline).arg(fired);
                }
            }
            pipe.add_command(call).ignore();
        }
        pipe.exec(con)
    })
}

/// Every id in a stream once, no due key left.
fn check(
    layout: &Layout,
    work: &[Part],
    design: &str,
    second: u64,
    count: u64,
) -> Result<(), Error> {
    let moved = std::sync::atomic::AtomicU64::new(0);
    per_master(work, |con, part| {
        let (len, left): (u64, u64) = redis::pipe()
            .cmd("XLEN")
            .arg(layout.stream(part.p).unwrap_or_default())
            .cmd("EXISTS")
            .arg(layout.due(part.p))
            .arg(second_key(layout, part.p, second))
            .query(con)?;
        assert_eq!(left, 0, "{design}: partition {} left keys", part.p);
        moved.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    })?;
    let moved = moved.into_inner();
    if moved != count {
        return Err(format!("{design}: {moved} in the streams, {count} due").into());
    }
    Ok(())
}

/// Runs `f` on every partition, one thread and connection per master.
fn per_master<F>(work: &[Part], f: F) -> Result<(), Error>
where
    F: Fn(&mut redis::Connection, &Part) -> redis::RedisResult<()> + Sync,
{
    let mut masters: Vec<u16> = work.iter().map(|w| w.master).collect();
    masters.sort_unstable();
    masters.dedup();
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = masters
            .iter()
            .map(|&master| {
                scope.spawn(move || -> redis::RedisResult<()> {
                    let client = redis::Client::open(format!("redis://127.0.0.1:{master}"))?;
                    let mut con = client.get_connection()?;
                    for part in work.iter().filter(|w| w.master == master) {
                        f(&mut con, part)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("master thread"))
    })?;
    Ok(())
}

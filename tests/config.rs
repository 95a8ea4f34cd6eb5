//! `timewheel serve` configured as a container or a new user would: every
//! flag from a `TIMEWHEEL_*` variable, host names in `--bind`, `RUST_LOG` in
//! `--help`, and the refusal to run a journal whose fired orders would go
//! nowhere reliable.
//!
//! Run with `cargo test --test config`.
mod util;

use std::time::Duration;

use util::{RedisServer, TimewheelServer, info, run_timewheel};

/// `--help` of `serve`: every flag but `--help` names its variable, and
/// RUST_LOG is explained.
#[test]
fn help_names_an_environment_variable_for_every_flag_and_rust_log() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_timewheel"))
        .args(["serve", "--help"])
        .output()
        .expect("run timewheel serve --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    // A flag's entry runs from its `--name` line to the next flag's.
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            let name = rest.split([' ', '<']).next().unwrap().to_owned();
            entries.push((name, String::new()));
        } else if let Some((_, text)) = entries.last_mut() {
            text.push_str(trimmed);
            text.push(' ');
        }
    }
    assert!(entries.len() >= 20, "too few flags found in:\n{help}");
    for (name, text) in &entries {
        if name == "help" {
            continue;
        }
        let var = match name.as_str() {
            "requirepass" => "TIMEWHEEL_PASSWORD".to_owned(),
            "redis" => "TIMEWHEEL_REDIS_URL".to_owned(),
            other => format!("TIMEWHEEL_{}", other.replace('-', "_").to_uppercase()),
        };
        assert!(
            text.contains(&format!("[env: {var}")),
            "--{name} does not show {var}: {text}"
        );
    }
    assert!(help.contains("RUST_LOG"), "{help}");
}

#[test]
fn flags_come_from_the_environment() {
    let server = TimewheelServer::start_exact(
        &["serve"],
        &[
            ("TIMEWHEEL_BIND", "127.0.0.1:0"),
            ("TIMEWHEEL_TICK_MS", "25"),
            ("TIMEWHEEL_IO_THREADS", "2"),
            ("TIMEWHEEL_MAX_CLIENTS", "3"),
        ],
    );
    let mut conn = server.conn();
    let info = info(&mut conn);
    assert_eq!(info["tick_ms"], "25", "{info:?}");
    assert_eq!(info["io_threads"], "2", "{info:?}");
    // The fourth connection is one too many.
    let _two = server.conn();
    let _three = server.conn();
    let mut four = server.conn();
    assert_eq!(
        four.read_reply(),
        util::Resp::Error("ERR max number of clients reached".into())
    );
}

#[test]
fn bind_takes_a_host_name() {
    let server = TimewheelServer::start_exact(&["serve", "--bind", "localhost:0"], &[]);
    let mut conn = server.conn();
    assert_eq!(conn.cmd(&["PING"]).as_str(), Some("PONG"));
    let (status, stderr) = run_timewheel(&["serve", "--bind", "localhost"], &[]);
    assert!(!status.success());
    assert!(stderr.contains("Error: --bind localhost:"), "{stderr}");
}

#[test]
fn redis_without_a_reliable_sink_is_refused_unless_best_effort_is_accepted() {
    // Refused before Redis is contacted: port 1 has no Redis.
    let (status, stderr) = run_timewheel(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--redis",
            "redis://127.0.0.1:1/0",
        ],
        &[],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to start with --redis but no reliable sink")
            && stderr.contains("--stream")
            && stderr.contains("--webhook")
            && stderr.contains("--best-effort-delivery"),
        "{stderr}"
    );

    let redis = RedisServer::start();
    let url = redis.url();
    let server = TimewheelServer::start(&["--redis", &url, "--best-effort-delivery"]);
    assert!(
        server
            .log()
            .contains("fired orders go only to SUBSCRIBE fired connections, best effort"),
        "{}",
        server.log()
    );
    drop(server);
    let server = TimewheelServer::start_with_env(
        &["--redis", &url],
        &[("TIMEWHEEL_BEST_EFFORT_DELIVERY", "true")],
    );
    assert!(server.log().contains("best effort"), "{}", server.log());
}

#[test]
fn the_log_says_where_fired_orders_go() {
    let server = TimewheelServer::start(&[]);
    assert!(
        server
            .log()
            .contains("fired orders go only to SUBSCRIBE fired connections, best effort"),
        "{}",
        server.log()
    );
    drop(server);

    let redis = RedisServer::start();
    let url = redis.url();
    let server = TimewheelServer::start(&["--redis", &url, "--stream", "orders:closed"]);
    assert!(
        server
            .log()
            .contains("fired orders go into the Redis Stream orders:closed, exactly once"),
        "{}",
        server.log()
    );
    let mut conn = server.conn();
    // Writes are journaled, and CONFIG GET appendonly says so.
    assert_eq!(
        conn.cmd(&["CONFIG", "GET", "appendonly"]),
        util::Resp::Array(Some(vec![
            util::Resp::bulk("appendonly"),
            util::Resp::bulk("yes")
        ]))
    );
    // And the stream gets the order: nothing went to subscribers only.
    conn.cmd(&["ADD", "cfg:1", "0"]);
    util::wait_until("cfg:1 in the stream", Duration::from_secs(20), || {
        redis.cmd(&["XLEN", "orders:closed"]).as_int() == Some(1)
    });
}

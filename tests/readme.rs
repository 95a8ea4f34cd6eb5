//! The README's shell blocks and docs/delivery.md's Python consumer, run as
//! written against the real binary. A block is found by the HTML comment
//! before it (`<!-- readme-test: NAME -->`, invisible on GitHub).
//!
//! What a test changes, and nothing else: the ports (7379 and 6380 become
//! free ones), the directory `/tmp/tw-redis` (a temporary one), `cargo run
//! --release --` (the binary cargo built for the test), `redis-cli` gets
//! `--no-raw` (the replies as a terminal shows them), and the consumer's
//! `min_idle_time=60000` becomes 0 (a test cannot wait a minute).
//! A number of seven digits or more in the README (a deadline, a PTTL)
//! stands for any number.
//!
//! The embedded Rust examples run as doctests (`src/lib.rs`); the Python,
//! PHP, Node.js and Rust client code in `tests/clients/`.
//!
//! Run with `cargo test --test readme`. Needs `redis-cli` and
//! `redis-server`; the consumer test needs Python's `redis` (skipped, saying
//! so, without it).
mod util;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use util::{RedisServer, TimewheelServer, free_port, wait_until};

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// The fenced block after `<!-- readme-test: NAME -->`, without its fences.
fn block(doc: &str, name: &str) -> String {
    let marker = format!("<!-- readme-test: {name} -->");
    let after = doc
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no block {marker}"))
        .1;
    let mut lines = after.trim_start().lines();
    let fence = lines.next().expect("a fence");
    assert!(
        fence.starts_with("```"),
        "{marker} is not followed by a block"
    );
    lines
        .take_while(|line| !line.starts_with("```"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Each run of 7+ digits becomes `N`.
fn shape(text: &str) -> String {
    let mut out = String::new();
    let mut digits = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if digits.len() >= 7 {
            out.push('N');
        } else {
            out.push_str(&digits);
        }
        digits.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// Ports and paths as the test has them.
struct Subst {
    pairs: Vec<(String, String)>,
}

impl Subst {
    fn apply(&self, line: &str) -> String {
        let mut line = line.replace("redis-cli ", "redis-cli --no-raw ");
        for (from, to) in &self.pairs {
            line = line.replace(from.as_str(), to);
        }
        line
    }
}

/// Runs a `console` block: each `$ ` line in bash, its output compared
/// with the lines that follow it. A `SUBSCRIBE` runs for `subscribe_for`.
fn run_session(session: &str, subst: &Subst, subscribe_for: Duration, log: &dyn Fn() -> String) {
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in session.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => steps.push((command.to_owned(), String::new())),
            None => {
                let (_, expected) = steps.last_mut().expect("output before any command");
                expected.push_str(line);
                expected.push('\n');
            }
        }
    }
    for (command, expected) in steps {
        let mut script = subst.apply(&command);
        if command.contains("SUBSCRIBE") {
            script = format!("timeout {} {script}", subscribe_for.as_secs());
        }
        let output = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .output()
            .expect("run bash");
        let got = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            shape(&got),
            shape(&expected),
            "`{command}` (run as `{script}`) printed:\n{got}\nstderr: {}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            log()
        );
    }
}

fn redis_cli_present() -> bool {
    if util::find_on_path("redis-cli").is_some() {
        return true;
    }
    eprintln!("SKIPPED: redis-cli not on PATH (Debian package redis-tools)");
    false
}

#[test]
fn the_quick_start_session_prints_what_the_readme_shows() {
    if !redis_cli_present() {
        return;
    }
    let readme = read("README.md");
    let start = block(&readme, "start");
    let command = start.split('#').next().unwrap().trim();
    assert_eq!(command, "cargo run --release -- serve", "{start}");
    // The README's default port, 7379, may be taken here: the same server
    // on a free port, chosen through TIMEWHEEL_BIND.
    let server = TimewheelServer::start_exact(&["serve"], &[("TIMEWHEEL_BIND", "127.0.0.1:0")]);
    let subst = Subst {
        pairs: vec![("-p 7379".into(), format!("-p {}", server.port()))],
    };
    run_session(
        &block(&readme, "session"),
        &subst,
        Duration::from_secs(5),
        &|| server.log(),
    );
}

#[test]
fn the_durable_setup_runs_as_written() {
    if !redis_cli_present() {
        return;
    }
    let readme = read("README.md");
    let setup = block(&readme, "durable");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tw-redis");
    let redis_port = free_port();
    let subst = Subst {
        pairs: vec![
            ("6380".into(), redis_port.to_string()),
            ("/tmp/tw-redis".into(), data.display().to_string()),
        ],
    };
    let lines: Vec<&str> = setup.lines().collect();
    assert_eq!(lines.len(), 3, "{setup}");
    // mkdir, then redis-server --daemonize yes: both must succeed as written.
    for line in &lines[..2] {
        let status = Command::new("bash")
            .args(["-c", &subst.apply(line)])
            .status()
            .unwrap();
        assert!(status.success(), "`{line}` failed");
    }
    let stop_redis = Shutdown(redis_port);
    wait_until(
        "the daemonized redis-server",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_ok(),
    );
    let serve = subst.apply(lines[2]);
    let args: Vec<&str> = serve
        .strip_prefix("cargo run --release -- ")
        .unwrap_or_else(|| panic!("{serve}"))
        .split_whitespace()
        .collect();
    let server = TimewheelServer::start_exact(&args, &[("TIMEWHEEL_BIND", "127.0.0.1:0")]);
    let mut subst = subst;
    subst
        .pairs
        .push(("-p 7379".into(), format!("-p {}", server.port())));
    run_session(
        &block(&readme, "durable-session"),
        &subst,
        Duration::from_secs(5),
        &|| server.log(),
    );
    drop(server);
    drop(stop_redis);
}

/// The cluster block: three nodes started as written (ports, Redis and the
/// binary substituted), then `redis-cli -c` against the first one follows
/// `-MOVED` to the owner of `order-42` and gets its deadline.
#[test]
fn the_cluster_block_runs_as_written() {
    if !redis_cli_present() {
        return;
    }
    let readme = read("README.md");
    let cluster = block(&readme, "cluster");
    let (start, query) = cluster
        .split_once("redis-cli")
        .unwrap_or_else(|| panic!("no redis-cli line in\n{cluster}"));
    let query = format!("redis-cli{}", query.split('#').next().unwrap().trim_end());
    let redis = RedisServer::start();
    let ports = [free_port(), free_port(), free_port()];
    let mut pairs = vec![
        ("6380".to_owned(), redis.port().to_string()),
        (
            "cargo run --release --".to_owned(),
            env!("CARGO_BIN_EXE_timewheel").to_owned(),
        ),
    ];
    for (readme_port, port) in ["7001", "7002", "7003"].iter().zip(ports) {
        pairs.push((readme_port.to_string(), port.to_string()));
    }
    let subst = Subst { pairs };
    let script: String = start.lines().map(|line| subst.apply(line) + "\n").collect();
    // The nodes run in a process group of their own, ended with the test.
    let nodes = Command::new("setsid")
        .args(["bash", "-c", &format!("{script}wait")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the nodes");
    let _stop = KillGroup(nodes);
    let query = subst.apply(&query);
    let mut last = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while shape(last.trim()) != "(integer) N" {
        assert!(
            std::time::Instant::now() < deadline,
            "`{query}` printed {last:?}; the nodes ran:\n{script}"
        );
        std::thread::sleep(Duration::from_millis(200));
        let output = Command::new("bash").args(["-c", &query]).output().unwrap();
        last = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
    }
    // It landed in its partition's journal, on the Redis of the block.
    let keys = redis.cmd(&["KEYS", "{tw:p*}:due"]);
    assert!(format!("{keys:?}").contains(":due"), "{keys:?}");
}

/// Kills a process group (led by the child) when the test ends.
struct KillGroup(std::process::Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

/// The TLS block cannot run as written (it names the operator's own
/// certificate files and hosts); every flag it uses must exist.
#[test]
fn the_tls_block_uses_only_real_flags() {
    let readme = read("README.md");
    let tls = block(&readme, "tls");
    let help = Command::new(env!("CARGO_BIN_EXE_timewheel"))
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let serve: String = tls
        .lines()
        .skip_while(|line| !line.starts_with("cargo run"))
        .take_while(|line| !line.starts_with("redis-cli"))
        .collect();
    let flags: Vec<&str> = serve
        .split_whitespace()
        .skip_while(|word| *word != "serve")
        .filter(|word| word.starts_with("--"))
        .collect();
    assert!(flags.len() >= 7, "{serve}");
    for flag in flags {
        assert!(help.contains(flag), "{flag} is not a serve flag:\n{help}");
    }
}

/// `SHUTDOWN NOSAVE` for a daemonized redis-server, when the test ends.
struct Shutdown(u16);

impl Drop for Shutdown {
    fn drop(&mut self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.0.to_string(), "SHUTDOWN", "NOSAVE"])
            .output();
    }
}

#[test]
fn the_python_consumer_closes_every_order_after_a_crash_and_a_dead_peer() {
    let python = Command::new("python3")
        .args(["-c", "import redis"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: python3 cannot import redis (pip install redis)");
        return;
    }
    let consumer = block(&read("docs/delivery.md"), "consumer");
    assert!(consumer.contains("min_idle_time=60000"), "{consumer}");
    let redis = RedisServer::start();
    let script = consumer
        .replace("port=6380", &format!("port={}", redis.port()))
        .replace("min_idle_time=60000", "min_idle_time=0");
    let url = redis.url();
    let server = TimewheelServer::start(&["--redis", &url, "--stream", "orders:closed"]);
    let mut c = server.conn();
    let mut r = redis.conn();
    r.cmd(&["XGROUP", "CREATE", "orders:closed", "shop", "0", "MKSTREAM"]);
    for id in ["c:1", "c:2", "c:3"] {
        c.cmd(&["ADD", id, "0"]);
    }
    wait_until("three entries", Duration::from_secs(20), || {
        r.cmd(&["XLEN", "orders:closed"]).as_int() == Some(3)
    });
    // worker-1 read two and crashed; worker-9 read one and is gone for good.
    let read = |consumer: &str, count: &str| {
        redis.cmd(&[
            "XREADGROUP",
            "GROUP",
            "shop",
            consumer,
            "COUNT",
            count,
            "STREAMS",
            "orders:closed",
            ">",
        ])
    };
    read("worker-1", "2");
    read("worker-9", "1");
    c.cmd(&["ADD", "c:4", "0"]);
    wait_until("the fourth entry", Duration::from_secs(20), || {
        r.cmd(&["XLEN", "orders:closed"]).as_int() == Some(4)
    });

    let mut child = Command::new("python3")
        .args(["-c", &script])
        .env("CONSUMER", "worker-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pending = |r: &mut util::RespConn| match r.cmd(&["XPENDING", "orders:closed", "shop"]) {
        util::Resp::Array(Some(items)) => items[0].as_int(),
        _ => None,
    };
    // Done when nothing is pending and the group has read every entry
    // (`lag` 0): the consumer takes its pending entries before new ones.
    let lag = |r: &mut util::RespConn| match r.cmd(&["XINFO", "GROUPS", "orders:closed"]) {
        util::Resp::Array(Some(groups)) => groups.first().and_then(|group| match group {
            util::Resp::Array(Some(fields)) => fields
                .chunks(2)
                .find(|pair| pair[0].as_str() == Some("lag"))
                .and_then(|pair| pair[1].as_int()),
            _ => None,
        }),
        _ => None,
    };
    let done = std::time::Instant::now() + Duration::from_secs(30);
    while (pending(&mut r) != Some(0) || lag(&mut r) != Some(0)) && std::time::Instant::now() < done
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        pending(&mut r),
        Some(0),
        "entries left pending; consumer printed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for id in ["c:1", "c:2", "c:3", "c:4"] {
        assert!(
            stdout.contains(&format!("closing {id} due ")),
            "{id}:\n{stdout}"
        );
    }
}

#[test]
fn no_shell_block_in_the_docs_uses_port_6379_or_nc() {
    let mut docs = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            docs.push(format!("docs/{name}"));
        }
    }
    for doc in docs {
        let text = read(&doc);
        let mut in_shell = false;
        for (n, line) in text.lines().enumerate() {
            if let Some(lang) = line.strip_prefix("```") {
                in_shell = !in_shell && matches!(lang, "sh" | "console" | "bash");
                continue;
            }
            if in_shell {
                let words: Vec<&str> = line.split_whitespace().collect();
                assert!(
                    !line.contains("6379") && !words.contains(&"nc"),
                    "{doc}:{}: {line}",
                    n + 1
                );
            }
        }
    }
}

#[test]
fn shape_stands_numbers_of_seven_digits_for_any() {
    assert_eq!(shape("(integer) 1796179200000"), "(integer) N");
    assert_eq!(shape("(integer) 1"), "(integer) 1");
    assert_eq!(shape("2) \"1796181002000\"\n"), "2) \"N\"\n");
    assert_eq!(shape("got '1796172400'"), "got 'N'");
}

/// The second cell of the table row for `field` in `doc`.
fn info_definition(doc: &str, field: &str) -> String {
    let prefix = format!("| `{field}` | ");
    let row = read(doc)
        .lines()
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{doc} has no row for {field}"))
        .to_owned();
    let cells = row[prefix.len()..]
        .trim_end()
        .trim_end_matches('|')
        .trim_end();
    cells.split(" | ").next().unwrap().to_owned()
}

#[test]
fn the_delivery_counters_mean_one_thing_in_every_doc() {
    for field in ["delivered_total", "published_total"] {
        let definition = info_definition("docs/delivery.md", field);
        let operations = info_definition("docs/operations.md", field);
        assert!(
            operations.starts_with(&definition),
            "{field}:\ndelivery.md:   {definition}\noperations.md: {operations}"
        );
    }
}

#[test]
fn measured_figures_live_in_benchmarks_md_only() {
    // Figures that once appeared, different, in several docs.
    let figures = [
        "5.5–7 s",
        "5–9 s",
        "1.2–1.5 s",
        "2.6–2.9×",
        "10M in 18 s",
        "0.6 s later",
    ];
    let mut docs = vec!["README.md".to_owned()];
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") && name != "benchmarks.md" {
            docs.push(format!("docs/{name}"));
        }
    }
    for doc in &docs {
        let text = read(doc);
        for figure in figures {
            assert!(
                !text.contains(figure),
                "{doc} quotes {figure}: link benchmarks.md instead"
            );
        }
    }
    let readme = read("README.md");
    assert!(readme.contains("docs/benchmarks.md#journal"));
    assert!(read("docs/delivery.md").contains("benchmarks.md#burst-into-a-stream"));
}

#[test]
fn protocol_md_does_not_say_timers_are_dropped_with_a_journal() {
    let protocol = read("docs/protocol.md");
    let shutdown = protocol
        .split_once("**Shutdown.**")
        .expect("a Shutdown paragraph")
        .1;
    let paragraph = shutdown.split("\n\n").next().unwrap();
    assert!(
        paragraph.contains("Without `--redis`")
            && paragraph.contains("With `--redis` they stay in Redis"),
        "{paragraph}"
    );
}

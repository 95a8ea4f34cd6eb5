//! Shutdown of the real binary on SIGTERM and SIGINT: what was received is
//! answered, then the process exits 0.
//!
//! Run with `cargo test --test shutdown`.

mod util;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use util::wire::{expect, expect_closed, inline, show, wait_for_stall, write_in_background};
use util::{TimewheelServer, encode_command, unix_ms, wait_until};

#[test]
fn sigterm_answers_pipelined_requests_and_exits_zero() {
    const N: usize = 5_000;
    let mut server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let mut quiet = server.conn();
    expect(&mut c, b"PING\r\n", b"+PONG\r\n");
    expect(&mut quiet, b"PING\r\n", b"+PONG\r\n");

    let at = unix_ms() + 600_000;
    let mut pipeline = Vec::new();
    for i in 0..N {
        let args = ["ADDAT", &format!("t:{i}"), &at.to_string()];
        pipeline.extend(if i % 2 == 0 {
            inline(&args)
        } else {
            encode_command(&args)
        });
    }
    pipeline.extend(inline(&["COUNT"]));
    pipeline.extend(encode_command(&["PING"]));
    write_in_background(&c, pipeline).join().expect("write");
    let reader = thread::spawn(move || {
        for i in 0..N {
            assert_eq!(
                show(&c.read_raw_reply()),
                show(format!(":{at}\r\n").as_bytes()),
                "{i}"
            );
        }
        assert_eq!(
            show(&c.read_raw_reply()),
            show(format!(":{N}\r\n").as_bytes())
        );
        assert_eq!(show(&c.read_raw_reply()), "+PONG\\r\\n");
        expect_closed(&mut c, Duration::from_secs(5));
    });

    let started = Instant::now();
    let status = server
        .terminate(Duration::from_secs(5))
        .expect("the server exits within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    eprintln!("exited {:?} after SIGTERM", started.elapsed());
    reader.join().expect("every pipelined request answered");
    expect_closed(&mut quiet, Duration::from_secs(5));
}

/// Regression: shutdown answered only what one turn of the event loop
/// processed, then just flushed; requests behind a backed-up output were
/// dropped and the client saw the connection close early.
#[test]
fn sigterm_answers_requests_waiting_behind_a_full_output_buffer() {
    // 20,000 INFO replies (about 15 MB) back the output up, with the rest of
    // the pipeline received but not yet processed.
    const INFOS: usize = 20_000;
    const ADDS: usize = 2_000;
    let mut server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    let mut ctl = server.conn();
    let at = unix_ms() + 600_000;
    let mut pipeline = inline(&["INFO"]).repeat(INFOS);
    for i in 0..ADDS {
        pipeline.extend(encode_command(&[
            "ADDAT",
            &format!("w:{i}"),
            &at.to_string(),
        ]));
    }
    pipeline.extend(inline(&["COUNT"]));
    let writer = write_in_background(&c, pipeline);
    let processed = wait_for_stall(&mut ctl);
    assert!(
        processed < (INFOS + ADDS) as u64,
        "the server answered everything before it stalled ({processed} commands)"
    );

    server.send_sigterm();
    // Read only once the server is shutting down. It accepts no one new
    // while it still answers this client.
    wait_until(
        "the server to log its shutdown",
        Duration::from_secs(5),
        || server.log().contains("shutting down"),
    );
    wait_until(
        "new connections to be refused",
        Duration::from_secs(5),
        || TcpStream::connect(("127.0.0.1", server.port())).is_err(),
    );
    for i in 0..INFOS {
        let reply = c
            .try_read_reply()
            .unwrap_or_else(|e| panic!("INFO #{i}: {e}"));
        let text = reply
            .as_str()
            .unwrap_or_else(|| panic!("INFO #{i}: {reply:?}"));
        assert!(text.starts_with("# Server"), "INFO #{i}: {text:?}");
    }
    for i in 0..ADDS {
        assert_eq!(
            show(&c.read_raw_reply()),
            show(format!(":{at}\r\n").as_bytes()),
            "{i}"
        );
    }
    assert_eq!(
        show(&c.read_raw_reply()),
        show(format!(":{ADDS}\r\n").as_bytes())
    );
    expect_closed(&mut c, Duration::from_secs(5));
    writer.join().expect("writer");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sigint_stops_the_server_like_sigterm() {
    let mut server = TimewheelServer::start(&[]);
    let mut c = server.conn();
    // Accepted: a connection still in the listen queue at shutdown is reset.
    expect(&mut c, b"PING\r\n", b"+PONG\r\n");
    let at = unix_ms() + 600_000;
    let mut pipeline = inline(&["ADDAT", "i:1", &at.to_string()]);
    pipeline.extend(inline(&["COUNT"]));
    c.send_raw(&pipeline);
    let status = std::process::Command::new("kill")
        .args(["-INT", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    assert_eq!(
        show(&c.read_raw_reply()),
        show(format!(":{at}\r\n").as_bytes())
    );
    assert_eq!(show(&c.read_raw_reply()), ":1\\r\\n");
    expect_closed(&mut c, Duration::from_secs(5));
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("the server exits within 5 s of SIGINT");
    assert!(status.success(), "exit status {status:?}");
}

//! Framing errors and hostile input against the real binary: each gets an
//! error line or a clean close, never a crash or a stall for others.
//!
//! Run with `cargo test --test hostile_input`.

mod util;

use std::net::Shutdown;
use std::time::Duration;

use util::wire::{expect, expect_closed, read_until_closed, show};
use util::{TimewheelServer, info_u64, wait_until};

#[test]
fn framing_errors_reply_then_close() {
    let server = TimewheelServer::start(&[]);
    let seventeen_words = [&b"w "[..]].repeat(17).concat();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"*1\r\n$4097\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$-5\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$x\r\n".to_vec(), "invalid bulk length"),
        (b"*17\r\n".to_vec(), "invalid multibulk length"),
        (b"*99999999\r\n".to_vec(), "invalid multibulk length"),
        (b"*-2\r\n".to_vec(), "invalid multibulk length"),
        (
            b"*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            "expected '$', got '*'",
        ),
        (
            b"*2\r\n$4\r\nPING\r\n:1\r\n".to_vec(),
            "expected '$', got ':'",
        ),
        (b"*1\r\n\0".to_vec(), "expected '$', got '\\x00'"),
        (
            b"*1\r\n$4\r\nPINGxx".to_vec(),
            "expected CRLF after bulk string",
        ),
        (vec![b'a'; 64 * 1024 + 1], "too big inline request"),
        (
            b"PING \"unclosed\r\n".to_vec(),
            "unbalanced quotes in request",
        ),
        (b"PING 'it''s'\n".to_vec(), "unbalanced quotes in request"),
        (
            [&seventeen_words[..], b"\r\n"].concat(),
            "too many arguments in inline request",
        ),
        (
            [&[b'w'; 4097][..], b"\r\n"].concat(),
            "too big argument in inline request",
        ),
        (vec![b'\n'; 64 * 1024 + 1], "too many empty requests"),
    ];
    let bad_frames = cases.len() as u64;
    for (bad, error) in cases {
        let mut c = server.conn();
        // What came before the bad frame is answered; what follows is not.
        let mut request = b"PING\r\n".to_vec();
        request.extend_from_slice(&bad);
        request.extend_from_slice(b"PING\r\n");
        // The server may close before it has read everything.
        let _ = c.try_send_raw(&request);
        assert_eq!(show(&c.read_raw_reply()), "+PONG\\r\\n", "{error}");
        assert_eq!(
            show(&c.read_raw_reply()),
            show(format!("-ERR Protocol error: {error}\r\n").as_bytes())
        );
        expect_closed(&mut c, Duration::from_secs(5));
    }
    let mut c = server.conn();
    expect(&mut c, b"PING\r\n", b"+PONG\r\n");
    assert_eq!(info_u64(&mut c, "connected_clients"), 1);
    assert_eq!(info_u64(&mut c, "protocol_errors_total"), bad_frames);
}

/// What the client sends, and the server's whole output if it is
/// deterministic.
type Hostile = (String, Vec<u8>, Option<&'static [u8]>);

#[test]
fn hostile_input_never_crashes_the_server() {
    let server = TimewheelServer::start(&[]);
    let mut rng = fastrand::Rng::with_seed(0x7133_0003);
    let mut inputs: Vec<Hostile> = vec![
        (
            "a 1 MiB line without newline".into(),
            vec![b'x'; 1 << 20],
            Some(b"-ERR Protocol error: too big inline request\r\n"),
        ),
        (
            "*99999999".into(),
            b"*99999999\r\n".to_vec(),
            Some(b"-ERR Protocol error: invalid multibulk length\r\n"),
        ),
        (
            "i64::MIN elements".into(),
            b"*-9223372036854775808\r\n".to_vec(),
            Some(b"-ERR Protocol error: invalid multibulk length\r\n"),
        ),
        (
            "a bulk of i64::MAX bytes".into(),
            b"*1\r\n$9223372036854775807\r\n".to_vec(),
            Some(b"-ERR Protocol error: invalid bulk length\r\n"),
        ),
        (
            "$-5 inline".into(),
            b"$-5\r\n".to_vec(),
            Some(b"-ERR unknown command '$-5'\r\n"),
        ),
        (
            "$-5 in an array".into(),
            b"*1\r\n$-5\r\n".to_vec(),
            Some(b"-ERR Protocol error: invalid bulk length\r\n"),
        ),
        (
            "nested arrays".into(),
            b"*2\r\n*2\r\n*2\r\n$1\r\nx\r\n".to_vec(),
            Some(b"-ERR Protocol error: expected '$', got '*'\r\n"),
        ),
        (
            "10,000 levels of nesting".into(),
            b"*1\r\n".repeat(10_000),
            Some(b"-ERR Protocol error: expected '$', got '*'\r\n"),
        ),
        ("NUL bytes without newline".into(), vec![0; 4096], Some(b"")),
        (
            "a line of NUL bytes".into(),
            b"\0\0\0\r\n".to_vec(),
            Some(b"-ERR unknown command '\\x00\\x00\\x00'\r\n"),
        ),
        (
            "NUL bytes in RESP".into(),
            b"*2\r\n$4\r\nPI\0G\r\n$1\r\n\0\r\n".to_vec(),
            Some(b"-ERR unknown command 'PI\\x00G'\r\n"),
        ),
        (
            "half a frame, then EOF".into(),
            b"*3\r\n$3\r\nADD\r\n$2\r\nab".to_vec(),
            Some(b""),
        ),
        (
            "100,000 CRs".into(),
            vec![b'\r'; 100_000],
            Some(b"-ERR Protocol error: too big inline request\r\n"),
        ),
        ("every byte value".into(), (0..=255).collect(), None),
    ];
    for i in 0..20 {
        let len = rng.usize(1..16 * 1024);
        let mut bytes: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(len).collect();
        if i % 2 == 0 {
            bytes[0] = b'*';
        }
        inputs.push((format!("random bytes #{i}"), bytes, None));
    }
    for (what, bytes, want) in inputs {
        let mut c = server.conn();
        // The server may close before it has read everything.
        let _ = c.try_send_raw(&bytes);
        let _ = c.stream().shutdown(Shutdown::Write);
        let output = read_until_closed(c.stream(), Duration::from_secs(10), &what);
        if let Some(want) = want {
            assert_eq!(show(&output), show(want), "{what}");
        }
        let mut fresh = server.conn();
        expect(&mut fresh, b"PING\r\n", b"+PONG\r\n");
    }
    let mut c = server.conn();
    wait_until(
        "hostile clients to be gone",
        Duration::from_secs(10),
        || info_u64(&mut c, "connected_clients") == 1,
    );
}

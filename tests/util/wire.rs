//! Raw-bytes helpers for tests that check replies byte for byte: inline and
//! RESP request encodings, exact reply comparison, the `fired` frames.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;
use std::time::Instant;

use super::{Resp, RespConn, encode_command, info_u64, unix_ms, wait_until};

/// Allowed difference between the test's clock and the server's when
/// checking deadlines (the server anchors its clock once at start).
pub const CLOCK_SLACK_MS: u64 = 1_000;

/// An inline request: plain words as they are, others in double quotes with
/// every byte as `\xHH`, so any argument survives the inline form.
pub fn inline<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.as_ref();
        if i > 0 {
            out.push(b' ');
        }
        let plain = !arg.is_empty()
            && arg
                .iter()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\''));
        if plain {
            out.extend_from_slice(arg);
        } else {
            out.push(b'"');
            for b in arg {
                out.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Sends `request` as it is and returns the exact bytes of one reply.
pub fn roundtrip(conn: &mut RespConn, request: &[u8]) -> Vec<u8> {
    conn.send_raw(request);
    conn.read_raw_reply()
}

/// Sends `request` and checks the reply byte for byte.
#[track_caller]
pub fn expect(conn: &mut RespConn, request: impl AsRef<[u8]>, want: impl AsRef<[u8]>) {
    let request = request.as_ref();
    let got = roundtrip(conn, request);
    assert_eq!(
        show(&got),
        show(want.as_ref()),
        "reply to {}",
        show(request)
    );
}

/// Sends the command inline, then as a RESP array; both replies must be `want`.
#[track_caller]
pub fn expect_both<A: AsRef<[u8]>>(conn: &mut RespConn, args: &[A], want: impl AsRef<[u8]>) {
    expect(conn, inline(args), want.as_ref());
    expect(conn, encode_command(args), want.as_ref());
}

/// The value of an integer reply `:n\r\n`.
#[track_caller]
pub fn int_of(reply: &[u8]) -> i64 {
    std::str::from_utf8(reply)
        .ok()
        .and_then(|s| s.strip_prefix(':'))
        .and_then(|s| s.strip_suffix("\r\n"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an integer reply: {}", show(reply)))
}

/// Sends an `ADD`-like request and checks that the deadline it returns is
/// `delay_ms` from now (within [`CLOCK_SLACK_MS`]).
#[track_caller]
pub fn expect_deadline(conn: &mut RespConn, request: &[u8], delay_ms: u64) -> u64 {
    let before = unix_ms();
    let deadline = int_of(&roundtrip(conn, request)) as u64;
    let after = unix_ms();
    let range = before + delay_ms - CLOCK_SLACK_MS..=after + delay_ms + CLOCK_SLACK_MS;
    assert!(
        range.contains(&deadline),
        "{}: deadline {deadline} not in {range:?}",
        show(request)
    );
    deadline
}

/// `message fired <id>` as a RESP2 array.
pub fn fired_message(id: &str) -> Vec<u8> {
    fired_frame('*', id).into_bytes()
}

/// `message fired <id>` as a RESP3 push.
pub fn fired_push(id: &str) -> String {
    fired_frame('>', id)
}

fn fired_frame(kind: char, id: &str) -> String {
    format!(
        "{kind}3\r\n$7\r\nmessage\r\n$5\r\nfired\r\n${}\r\n{id}\r\n",
        id.len()
    )
}

/// Reads one `message fired <id>` push, checks its exact bytes, returns the id.
#[track_caller]
pub fn read_fired(sub: &mut RespConn) -> String {
    let raw = sub.read_raw_reply();
    let id = match Resp::parse(&raw) {
        Ok(Some((Resp::Array(Some(items)), _))) if items.len() == 3 => items[2]
            .as_str()
            .unwrap_or_else(|| panic!("not a fired message: {}", show(&raw)))
            .to_owned(),
        _ => panic!("not a fired message: {}", show(&raw)),
    };
    assert_eq!(show(&raw), show(&fired_message(&id)));
    id
}

/// The server closes the connection within `within` and sends nothing more.
#[track_caller]
pub fn expect_closed(conn: &mut RespConn, within: Duration) {
    conn.set_timeout(within);
    match conn.try_read_reply() {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

/// Writes `bytes` from another thread, so the caller can read replies while
/// a large request is still being sent.
pub fn write_in_background(conn: &RespConn, bytes: Vec<u8>) -> thread::JoinHandle<()> {
    let mut stream = conn.stream().try_clone().expect("clone the socket");
    thread::spawn(move || stream.write_all(&bytes).expect("write the pipeline"))
}

/// Waits until the server stops processing commands (other than the INFO
/// this sends on `ctl`), e.g. because a client's output is backed up; returns
/// `total_commands_processed`.
pub fn wait_for_stall(ctl: &mut RespConn) -> u64 {
    let mut last = info_u64(ctl, "total_commands_processed");
    let mut still = 0;
    wait_until(
        "the server to stop reading",
        Duration::from_secs(60),
        || {
            let now = info_u64(ctl, "total_commands_processed");
            still = if now == last + 1 { still + 1 } else { 0 };
            last = now;
            still >= 5
        },
    );
    last
}

/// Reads and discards until EOF or a reset; returns the byte count. Panics if
/// the connection is still open after `within`.
#[track_caller]
pub fn drain_until_closed(mut stream: &TcpStream, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    let mut total = 0;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "still open after {within:?} ({total} bytes read)"
        );
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return total,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("still open after {within:?} ({total} bytes read): {e}"),
        }
    }
}

/// Everything the server sends until it closes the connection.
#[track_caller]
pub fn read_until_closed(mut stream: &TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut output = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{what}: still open after {within:?}");
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buf) {
            Ok(0) => return output,
            Ok(n) => output.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return output,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("{what}: still open after {within:?}: {e}"),
        }
    }
}

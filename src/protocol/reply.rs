//! Reply encoding: RESP2 by default, RESP3 after `HELLO 3`.
//!
//! Two ways in: build a [`Reply`] tree and [`encode`](Reply::encode) it, or,
//! on the hot path, call the `write_*` functions, which append straight to the
//! output buffer without building anything.
//!
//! # Ground rules
//!
//! - Encoding never fails and never panics; it only appends to `out`.
//! - Simple strings and errors are one line: CR, LF and other ASCII control
//!   bytes in them are written as spaces, so nothing a client sent can break
//!   the framing of a reply.
//! - RESP3-only types degrade the way Redis degrades them for RESP2 clients:
//!   a map is a flat array of 2n items, a push is a plain array, a verbatim
//!   string is a bulk string, null is `$-1`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use super::ProtocolError;

/// Reply protocol of one connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Protocol {
    /// RESP2, the default.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` uses for this protocol.
    pub fn version(self) -> u8 {
        match self {
            Self::Resp2 => 2,
            Self::Resp3 => 3,
        }
    }
}

/// A reply value.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Reply {
    /// `+OK`. Written on one line (see the module rules).
    Simple(Cow<'static, str>),
    /// `-ERR message`: the text starts with the error code. Written on one line.
    Error(Cow<'static, str>),
    /// `:123`.
    Integer(i64),
    /// `$3\r\nfoo`.
    Bulk(Vec<u8>),
    /// `_` in RESP3, `$-1` in RESP2.
    Null,
    /// `*n` followed by the items.
    Array(Vec<Reply>),
    /// `%n` in RESP3; a flat array of keys and values in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// `>n` in RESP3 (out-of-band, e.g. pub/sub messages); an array in RESP2.
    Push(Vec<Reply>),
    /// `=len\r\ntxt:...` in RESP3 (`format` is three bytes, e.g. `*b"txt"`);
    /// a bulk string of `text` in RESP2. Redis sends `INFO` this way.
    Verbatim {
        /// Three-byte format tag: `txt` or `mkd`.
        format: [u8; 3],
        /// The text.
        text: Vec<u8>,
    },
}

impl Reply {
    /// `+OK`.
    pub const OK: Reply = Reply::Simple(Cow::Borrowed("OK"));

    /// A simple string reply.
    pub fn simple(text: impl Into<Cow<'static, str>>) -> Self {
        Self::Simple(text.into())
    }

    /// An error reply; `text` starts with the code, e.g. `"ERR syntax error"`.
    pub fn error(text: impl Into<Cow<'static, str>>) -> Self {
        Self::Error(text.into())
    }

    /// A bulk string reply.
    pub fn bulk(bytes: impl Into<Vec<u8>>) -> Self {
        Self::Bulk(bytes.into())
    }

    /// Appends this reply, encoded for `proto`.
    pub fn encode(&self, proto: Protocol, out: &mut Vec<u8>) {
        match self {
            Self::Simple(text) => write_simple(out, text),
            Self::Error(text) => write_error(out, text),
            Self::Integer(n) => write_integer(out, *n),
            Self::Bulk(bytes) => write_bulk(out, bytes),
            Self::Null => write_null(out, proto),
            Self::Array(items) => {
                write_array_header(out, items.len());
                encode_all(items, proto, out);
            }
            Self::Map(pairs) => {
                write_map_header(out, proto, pairs.len());
                for (key, value) in pairs {
                    key.encode(proto, out);
                    value.encode(proto, out);
                }
            }
            Self::Push(items) => {
                write_push_header(out, proto, items.len());
                encode_all(items, proto, out);
            }
            Self::Verbatim { format, text } => write_verbatim(out, proto, *format, text),
        }
    }
}

fn encode_all(items: &[Reply], proto: Protocol, out: &mut Vec<u8>) {
    for item in items {
        item.encode(proto, out);
    }
}

impl From<i64> for Reply {
    fn from(n: i64) -> Self {
        Self::Integer(n)
    }
}

/// `+text\r\n`, with control bytes in `text` written as spaces.
pub fn write_simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    push_line(out, text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-message\r\n`, with control bytes written as spaces. `message` starts with
/// the error code; anything `Display` works without allocating, e.g. a
/// [`CommandError`](super::CommandError) or `format_args!("ERR ...")`.
pub fn write_error(out: &mut Vec<u8>, message: impl fmt::Display) {
    out.push(b'-');
    // Writing to a Vec cannot fail; an error could only come from a broken
    // Display impl, and then the line is merely cut short.
    let _ = write!(OneLine(out), "{message}");
    out.extend_from_slice(b"\r\n");
}

/// `-ERR Protocol error: <error>\r\n`, as Redis words it.
pub fn write_protocol_error(out: &mut Vec<u8>, error: &ProtocolError) {
    write_error(out, format_args!("ERR Protocol error: {error}"));
}

/// `:n\r\n`.
pub fn write_integer(out: &mut Vec<u8>, n: i64) {
    write_number(out, b':', n < 0, n.unsigned_abs());
}

/// `$len\r\nbytes\r\n`.
pub fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    write_length(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `_\r\n` in RESP3, `$-1\r\n` in RESP2.
pub fn write_null(out: &mut Vec<u8>, proto: Protocol) {
    out.extend_from_slice(match proto {
        Protocol::Resp2 => b"$-1\r\n",
        Protocol::Resp3 => b"_\r\n",
    });
}

/// `*len\r\n`; `len` items must follow.
pub fn write_array_header(out: &mut Vec<u8>, len: usize) {
    write_length(out, b'*', len);
}

/// `%len\r\n` in RESP3, `*2len\r\n` in RESP2; `len` key-value pairs must follow.
pub fn write_map_header(out: &mut Vec<u8>, proto: Protocol, len: usize) {
    match proto {
        Protocol::Resp2 => write_length(out, b'*', len.saturating_mul(2)),
        Protocol::Resp3 => write_length(out, b'%', len),
    }
}

/// `>len\r\n` in RESP3, `*len\r\n` in RESP2; `len` items must follow.
pub fn write_push_header(out: &mut Vec<u8>, proto: Protocol, len: usize) {
    match proto {
        Protocol::Resp2 => write_length(out, b'*', len),
        Protocol::Resp3 => write_length(out, b'>', len),
    }
}

/// `=len\r\nfmt:text\r\n` in RESP3, a bulk string of `text` in RESP2.
pub fn write_verbatim(out: &mut Vec<u8>, proto: Protocol, format: [u8; 3], text: &[u8]) {
    match proto {
        Protocol::Resp2 => write_bulk(out, text),
        Protocol::Resp3 => {
            write_length(out, b'=', text.len().saturating_add(4));
            out.extend_from_slice(&format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `<prefix><len>\r\n`.
fn write_length(out: &mut Vec<u8>, prefix: u8, len: usize) {
    write_number(out, prefix, false, u64::try_from(len).unwrap_or(u64::MAX));
}

/// Decimal digits of `u64::MAX`.
const MAX_DIGITS: usize = 20;

/// `<prefix>[-]<magnitude>\r\n`, for lengths and integers. Digits are made
/// by hand: through `fmt` they cost about 300 instructions per reply, as much
/// as parsing the `ADD` it answers.
fn write_number(out: &mut Vec<u8>, prefix: u8, negative: bool, magnitude: u64) {
    let mut digits = [0u8; MAX_DIGITS];
    let mut start = MAX_DIGITS;
    let mut rest = magnitude;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.push(prefix);
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[start..]);
    out.extend_from_slice(b"\r\n");
}

/// Appends `bytes`, ASCII control bytes (CR and LF among them) as spaces.
fn push_line(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend(
        bytes
            .iter()
            .map(|&b| if b.is_ascii_control() { b' ' } else { b }),
    );
}

/// A `fmt::Write` sink that keeps the text on one line.
struct OneLine<'a>(&'a mut Vec<u8>);

impl fmt::Write for OneLine<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_line(self.0, s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(reply: &Reply, proto: Protocol) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(proto, &mut out);
        out
    }

    /// The same bytes in both protocols.
    fn both(reply: Reply, expected: &[u8]) {
        for proto in [Protocol::Resp2, Protocol::Resp3] {
            assert_eq!(
                encode(&reply, proto).escape_ascii().to_string(),
                expected.escape_ascii().to_string(),
                "{proto:?}"
            );
        }
    }

    /// Different bytes per protocol.
    fn each(reply: Reply, resp2: &[u8], resp3: &[u8]) {
        for (proto, expected) in [(Protocol::Resp2, resp2), (Protocol::Resp3, resp3)] {
            assert_eq!(
                encode(&reply, proto).escape_ascii().to_string(),
                expected.escape_ascii().to_string(),
                "{proto:?}"
            );
        }
    }

    #[test]
    fn scalars() {
        both(Reply::OK, b"+OK\r\n");
        both(Reply::simple(String::from("PONG")), b"+PONG\r\n");
        both(Reply::error("ERR syntax error"), b"-ERR syntax error\r\n");
        both(Reply::Integer(0), b":0\r\n");
        both(Reply::from(-1), b":-1\r\n");
        both(Reply::Integer(i64::MAX), b":9223372036854775807\r\n");
        both(Reply::Integer(i64::MIN), b":-9223372036854775808\r\n");
        both(Reply::bulk(""), b"$0\r\n\r\n");
        both(Reply::bulk(b"a\r\nb".to_vec()), b"$4\r\na\r\nb\r\n");
        each(Reply::Null, b"$-1\r\n", b"_\r\n");
    }

    #[test]
    fn lines_stay_on_one_line() {
        both(Reply::simple("a\r\nb\tc\0d\x7f"), b"+a  b c d \r\n");
        both(Reply::error("ERR x\r\n+OK"), b"-ERR x  +OK\r\n");
        // Non-ASCII UTF-8 is kept.
        both(
            Reply::error("ERR caf\u{e9}"),
            "-ERR caf\u{e9}\r\n".as_bytes(),
        );
        let mut out = Vec::new();
        write_error(&mut out, format_args!("ERR {}", "a\nb"));
        assert_eq!(out, b"-ERR a b\r\n");
        out.clear();
        write_error(&mut out, "");
        assert_eq!(out, b"-\r\n");
    }

    #[test]
    fn aggregates() {
        both(Reply::Array(vec![]), b"*0\r\n");
        both(
            Reply::Array(vec![Reply::Integer(1), Reply::bulk("x")]),
            b"*2\r\n:1\r\n$1\r\nx\r\n",
        );
        each(
            Reply::Map(vec![
                (Reply::bulk("a"), Reply::Integer(1)),
                (Reply::bulk("b"), Reply::Null),
            ]),
            b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
            b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n",
        );
        each(Reply::Map(vec![]), b"*0\r\n", b"%0\r\n");
        each(
            Reply::Push(vec![Reply::bulk("message"), Reply::bulk("c")]),
            b"*2\r\n$7\r\nmessage\r\n$1\r\nc\r\n",
            b">2\r\n$7\r\nmessage\r\n$1\r\nc\r\n",
        );
        each(
            Reply::Array(vec![Reply::Map(vec![(
                Reply::simple("k"),
                Reply::Array(vec![Reply::Null]),
            )])]),
            b"*1\r\n*2\r\n+k\r\n*1\r\n$-1\r\n",
            b"*1\r\n%1\r\n+k\r\n*1\r\n_\r\n",
        );
    }

    #[test]
    fn verbatim() {
        each(
            Reply::Verbatim {
                format: *b"txt",
                text: b"a\r\nb".to_vec(),
            },
            b"$4\r\na\r\nb\r\n",
            b"=8\r\ntxt:a\r\nb\r\n",
        );
        each(
            Reply::Verbatim {
                format: *b"mkd",
                text: Vec::new(),
            },
            b"$0\r\n\r\n",
            b"=4\r\nmkd:\r\n",
        );
    }

    #[test]
    fn hot_path_writers() {
        let mut out = Vec::new();
        write_integer(&mut out, 123);
        write_simple(&mut out, "OK");
        write_bulk(&mut out, b"v");
        write_null(&mut out, Protocol::Resp2);
        write_null(&mut out, Protocol::Resp3);
        write_array_header(&mut out, 2);
        write_map_header(&mut out, Protocol::Resp2, 2);
        write_map_header(&mut out, Protocol::Resp3, 2);
        write_push_header(&mut out, Protocol::Resp2, 3);
        write_push_header(&mut out, Protocol::Resp3, 3);
        write_verbatim(&mut out, Protocol::Resp3, *b"txt", b"hi");
        write_protocol_error(&mut out, &ProtocolError::ExpectedDollar(b'\n'));
        assert_eq!(
            out.escape_ascii().to_string(),
            b":123\r\n+OK\r\n$1\r\nv\r\n$-1\r\n_\r\n*2\r\n*4\r\n%2\r\n*3\r\n>3\r\n=6\r\ntxt:hi\r\n\
              -ERR Protocol error: expected '$', got '\\n'\r\n"
                .escape_ascii()
                .to_string()
        );
    }

    #[test]
    fn protocol_versions() {
        assert_eq!(Protocol::default(), Protocol::Resp2);
        assert_eq!(Protocol::Resp2.version(), 2);
        assert_eq!(Protocol::Resp3.version(), 3);
    }

    #[test]
    fn integers_match_display_at_every_digit_boundary() {
        let mut values = vec![0, i64::MIN, i64::MIN + 1, i64::MAX];
        let mut power: i64 = 1;
        while let Some(next) = power.checked_mul(10) {
            values.extend([power - 1, power, power + 1, -power + 1, -power, -power - 1]);
            power = next;
        }
        values.extend([power - 1, power, power + 1, -power, -power - 1]);
        for n in values {
            let mut out = Vec::new();
            write_integer(&mut out, n);
            assert_eq!(out, format!(":{n}\r\n").into_bytes(), "n={n}");
        }
    }
}

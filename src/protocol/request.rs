//! Request framing: bytes from a client become a [`Request`] (a list of arguments).
//!
//! Two forms, told apart by the first byte, as Redis does:
//!
//! - **RESP**, first byte `*`: an array of bulk strings,
//!   `*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`.
//!   `*0\r\n` and `*-1\r\n` are skipped (no request), like Redis.
//! - **Inline**, anything else: one line ended by `\n` or `\r\n`, split into
//!   words with Redis's `sdssplitargs` rules: blanks (space, tab, CR, VT, FF)
//!   separate words; `"..."` quotes allow the escapes `\n \r \t \b \a \\ \"`
//!   and `\xHH`; `'...'` quotes allow only `\'`; a closing quote must be
//!   followed by a blank or the end of the line. A line without words is skipped.
//!
//! # Ground rules
//!
//! - [`parse_request`] is pure: it looks at a buffer, never keeps state, and
//!   decides only from the bytes it has. Its answer for a buffer is the same
//!   for every extension of that buffer, unless it was `Ok(None)`; so
//!   re-parsing a growing buffer from the start is always correct, and the
//!   caller may read in any chunk sizes.
//! - It never panics and never allocates more than the limits allow: a
//!   declared length is checked against [`MAX_ARGS`] or [`MAX_BULK_LEN`] before
//!   anything is reserved.
//! - Both forms obey the same limits: at most [`MAX_ARGS`] arguments of at most
//!   [`MAX_BULK_LEN`] bytes each, so the layers above can rely on them.
//! - If `buf.len() > MAX_REQUEST_LEN`, the answer is never `Ok(None)`: a
//!   connection buffer never needs to grow beyond [`MAX_REQUEST_LEN`] bytes.
//!
//! Re-parsing from the start on each read costs at most one pass over
//! [`MAX_REQUEST_LEN`] bytes, so a client trickling bytes can only make the
//! server redo bounded work.

use std::fmt;

/// Longest inline line, without its `\n` or `\r\n`. A longer line is an error
/// as soon as it is seen, even before its end arrives.
pub const MAX_INLINE_LEN: usize = 64 * 1024;

/// Longest argument, in either form.
pub const MAX_BULK_LEN: usize = 4 * 1024;

/// Most arguments in one request (the command name included), in either form.
pub const MAX_ARGS: usize = 16;

/// Most bytes of skipped input (blank inline lines, `*0`, `*-1`) in front of
/// one request. Without it a client could make the buffer grow forever.
pub const MAX_SKIPPED_LEN: usize = MAX_INLINE_LEN;

/// Longest number in a `*<n>` or `$<n>` line: enough for any `i64`, and far
/// more than any length we accept, so a longer one is an error.
const MAX_LENGTH_DIGITS: usize = 20;

/// Largest complete RESP request: `*16\r\n`, then 16 times `$4096\r\n`, 4096
/// bytes and `\r\n`.
pub const MAX_FRAME_LEN: usize =
    header_len(MAX_ARGS) + MAX_ARGS * (header_len(MAX_BULK_LEN) + MAX_BULK_LEN + 2);

/// Bound on the bytes [`parse_request`] consumes at once, and on a buffer for
/// which it may answer `Ok(None)`: skipped input, then the larger of a full
/// inline line (with `\r\n`) and a full RESP request.
pub const MAX_REQUEST_LEN: usize = MAX_SKIPPED_LEN + max(MAX_INLINE_LEN + 2, MAX_FRAME_LEN);

/// Length of a `*<n>\r\n` or `$<n>\r\n` line.
const fn header_len(n: usize) -> usize {
    let mut digits = 1;
    let mut rest = n / 10;
    while rest > 0 {
        digits += 1;
        rest /= 10;
    }
    1 + digits + 2
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// One client request: the command name and its arguments, in order.
///
/// A request from [`parse_request`] has 1 to [`MAX_ARGS`] arguments of at most
/// [`MAX_BULK_LEN`] bytes each.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    args: Vec<Vec<u8>>,
}

impl Request {
    /// A request with these arguments. Limits are not checked; meant for tests
    /// and for building requests to [`encode`](Self::encode).
    pub fn new(args: Vec<Vec<u8>>) -> Self {
        Self { args }
    }

    /// All arguments; the first is the command name.
    pub fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    /// The arguments, moved out.
    pub fn into_args(self) -> Vec<Vec<u8>> {
        self.args
    }

    /// The command name as sent (empty if there are no arguments).
    pub fn command_name(&self) -> &[u8] {
        self.args.first().map_or(&[], Vec::as_slice)
    }

    /// The command name in ASCII lowercase, non-UTF-8 bytes replaced by U+FFFD.
    /// For logs and metrics; [`Command::from_request`](super::Command::from_request)
    /// does the matching.
    pub fn command_name_lowercase(&self) -> String {
        String::from_utf8_lossy(self.command_name()).to_ascii_lowercase()
    }

    /// Appends this request as a RESP array of bulk strings.
    pub fn encode(&self, out: &mut Vec<u8>) {
        super::reply::write_array_header(out, self.args.len());
        for arg in &self.args {
            super::reply::write_bulk(out, arg);
        }
    }
}

/// Malformed input. The connection cannot be resynchronised after one: reply
/// `-ERR Protocol error: <Display>` and close it, as Redis does.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ProtocolError {
    /// An inline line longer than [`MAX_INLINE_LEN`].
    TooBigInline,
    /// An inline line with an unclosed quote, or a closing quote followed by
    /// something other than a blank.
    UnbalancedQuotes,
    /// An inline line with more than [`MAX_ARGS`] words.
    TooManyInlineArgs,
    /// An inline word longer than [`MAX_BULK_LEN`].
    TooBigInlineArg,
    /// More than [`MAX_SKIPPED_LEN`] bytes of blank lines or empty arrays in a row.
    TooMuchSkipped,
    /// A `*<n>` line that is not a number in `-1..=MAX_ARGS`.
    InvalidMultibulkLength,
    /// A `$<len>` line that is not a number in `0..=MAX_BULK_LEN`.
    InvalidBulkLength,
    /// An array element that does not start with `$` (the byte found).
    ExpectedDollar(u8),
    /// A bulk string not followed by exactly `\r\n`.
    BulkNotTerminated,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooBigInline => f.write_str("too big inline request"),
            Self::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            Self::TooManyInlineArgs => f.write_str("too many arguments in inline request"),
            Self::TooBigInlineArg => f.write_str("too big argument in inline request"),
            Self::TooMuchSkipped => f.write_str("too many empty requests"),
            Self::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            Self::InvalidBulkLength => f.write_str("invalid bulk length"),
            // escape_ascii keeps the line printable: `\r` shows as `\r`.
            Self::ExpectedDollar(got) => write!(f, "expected '$', got '{}'", got.escape_ascii()),
            Self::BulkNotTerminated => f.write_str("expected CRLF after bulk string"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Parses one request from the front of `buf`.
///
/// - `Ok(Some((request, consumed)))`: drop `consumed` bytes (always > 0, and
///   at most [`MAX_REQUEST_LEN`]) from the front of the buffer, handle the
///   request, and call again: the buffer may hold more (pipelining).
/// - `Ok(None)`: incomplete, read more and call again with the grown buffer.
///   Skipped input in front (blank lines, `*0`) is left in the buffer and
///   skipped again next time.
/// - `Err(_)`: malformed; reply with the error and close the connection.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, ProtocolError> {
    let mut start = 0;
    loop {
        if start > MAX_SKIPPED_LEN {
            return Err(ProtocolError::TooMuchSkipped);
        }
        let rest = buf.get(start..).unwrap_or_default();
        let parsed = match rest.first() {
            None => return Ok(None),
            Some(b'*') => parse_resp(rest)?,
            Some(_) => parse_inline(rest)?,
        };
        match parsed {
            Parsed::Incomplete => return Ok(None),
            Parsed::Skip(len) => start += len,
            Parsed::Request(args, len) => {
                let consumed = start + len;
                debug_assert!(
                    consumed > 0 && consumed <= MAX_REQUEST_LEN && consumed <= buf.len(),
                    "consumed={consumed}, buf.len()={}",
                    buf.len()
                );
                return Ok(Some((Request::new(args), consumed)));
            }
        }
    }
}

/// What one item at the front of a buffer is.
enum Parsed {
    Incomplete,
    /// Nothing to run (blank line, empty array); this many bytes long.
    Skip(usize),
    /// A request with these arguments; this many bytes long.
    Request(Vec<Vec<u8>>, usize),
}

/// One RESP array; `buf` starts with `*`.
fn parse_resp(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some((count, mut pos)) = read_length(buf, 1, ProtocolError::InvalidMultibulkLength)? else {
        return Ok(Parsed::Incomplete);
    };
    if count == 0 || count == -1 {
        return Ok(Parsed::Skip(pos));
    }
    let count = usize::try_from(count)
        .ok()
        .filter(|&n| n <= MAX_ARGS)
        .ok_or(ProtocolError::InvalidMultibulkLength)?;

    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(Parsed::Incomplete),
            Some(b'$') => {}
            Some(&other) => return Err(ProtocolError::ExpectedDollar(other)),
        }
        let Some((len, data_start)) = read_length(buf, pos + 1, ProtocolError::InvalidBulkLength)?
        else {
            return Ok(Parsed::Incomplete);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= MAX_BULK_LEN)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        let data_end = data_start + len;
        let (Some(data), Some(terminator)) = (
            buf.get(data_start..data_end),
            buf.get(data_end..data_end + 2),
        ) else {
            return Ok(Parsed::Incomplete);
        };
        if terminator != b"\r\n" {
            return Err(ProtocolError::BulkNotTerminated);
        }
        args.push(data.to_vec());
        pos = data_end + 2;
    }
    Ok(Parsed::Request(args, pos))
}

/// Reads the number in a `*<n>\r\n` or `$<n>\r\n` line whose digits start at
/// `pos`. Returns the number and the position after `\r\n`, `None` if the line
/// is incomplete, or `error` as soon as the line cannot be a valid number.
fn read_length(
    buf: &[u8],
    pos: usize,
    error: ProtocolError,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(pos..).unwrap_or_default();
    for (i, &b) in rest.iter().enumerate() {
        if b == b'\r' {
            return match rest.get(i + 1) {
                None => Ok(None),
                Some(b'\n') => {
                    let n = rest.get(..i).and_then(parse_i64).ok_or(error)?;
                    Ok(Some((n, pos + i + 2)))
                }
                Some(_) => Err(error),
            };
        }
        if i >= MAX_LENGTH_DIGITS || !(b.is_ascii_digit() || b == b'-') {
            return Err(error);
        }
    }
    Ok(None)
}

/// A decimal `i64` the way Redis's `string2ll` reads it: an optional `-`, then
/// digits without leading zeros ("0" itself is fine, "-0", "+1", "01", " 1" are
/// not), and no overflow.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] => return (!negative).then_some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        // Accumulate negatively so i64::MIN is reachable.
        n = n.checked_mul(10)?.checked_sub(d)?;
    }
    if negative { Some(n) } else { n.checked_neg() }
}

/// One inline line; `buf` does not start with `*`.
fn parse_inline(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    // A line of MAX_INLINE_LEN bytes plus "\r\n" fits in this window; if no
    // '\n' is in it, the line is too long whatever comes next.
    let window = buf.get(..MAX_INLINE_LEN + 2).unwrap_or(buf);
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        // The last byte may be the '\r' of a "\r\n" still on its way.
        let known = window.len() - usize::from(window.last() == Some(&b'\r'));
        return if known > MAX_INLINE_LEN {
            Err(ProtocolError::TooBigInline)
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = window.get(..newline).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_INLINE_LEN {
        return Err(ProtocolError::TooBigInline);
    }
    let args = split_inline(line)?;
    let consumed = newline + 1;
    Ok(if args.is_empty() {
        Parsed::Skip(consumed)
    } else {
        Parsed::Request(args, consumed)
    })
}

/// Blanks between inline words.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x0b | 0x0c)
}

/// Splits an inline line (without its line ending) into words.
fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while line.get(pos).is_some_and(|&b| is_blank(b)) {
            pos += 1;
        }
        if pos >= line.len() {
            return Ok(args);
        }
        if args.len() == MAX_ARGS {
            return Err(ProtocolError::TooManyInlineArgs);
        }
        let mut word = Vec::new();
        pos = read_word(line, pos, &mut word)?;
        args.push(word);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    Unquoted,
    Double,
    Single,
}

/// Reads one word starting at `pos` (not a blank) into `word`; returns the
/// position after it.
fn read_word(line: &[u8], mut pos: usize, word: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    let mut quote = Quote::Unquoted;
    loop {
        let Some(&b) = line.get(pos) else {
            return match quote {
                Quote::Unquoted => Ok(pos),
                Quote::Double | Quote::Single => Err(ProtocolError::UnbalancedQuotes),
            };
        };
        let next = line.get(pos + 1).copied();
        match quote {
            Quote::Unquoted => match b {
                _ if is_blank(b) => return Ok(pos),
                b'"' => quote = Quote::Double,
                b'\'' => quote = Quote::Single,
                _ => push_limited(word, b)?,
            },
            Quote::Double => match (b, next) {
                (b'\\', Some(escaped)) => match (escaped, hex_byte(line.get(pos + 2..pos + 4))) {
                    (b'x', Some(byte)) => {
                        push_limited(word, byte)?;
                        pos += 3;
                    }
                    _ => {
                        push_limited(word, unescape(escaped))?;
                        pos += 1;
                    }
                },
                (b'"', _) => return close_quote(next, pos),
                _ => push_limited(word, b)?,
            },
            Quote::Single => match (b, next) {
                (b'\\', Some(b'\'')) => {
                    push_limited(word, b'\'')?;
                    pos += 1;
                }
                (b'\'', _) => return close_quote(next, pos),
                _ => push_limited(word, b)?,
            },
        }
        pos += 1;
    }
}

/// A closing quote at `pos` must end the word.
fn close_quote(next: Option<u8>, pos: usize) -> Result<usize, ProtocolError> {
    match next {
        Some(b) if !is_blank(b) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(pos + 1),
    }
}

fn push_limited(word: &mut Vec<u8>, b: u8) -> Result<(), ProtocolError> {
    if word.len() >= MAX_BULK_LEN {
        return Err(ProtocolError::TooBigInlineArg);
    }
    word.push(b);
    Ok(())
}

/// The byte after a backslash inside double quotes.
fn unescape(b: u8) -> u8 {
    match b {
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'b' => 0x08,
        b'a' => 0x07,
        other => other,
    }
}

/// Two hex digits, as in `\xHH`.
fn hex_byte(digits: Option<&[u8]>) -> Option<u8> {
    let [hi, lo] = digits? else { return None };
    let hi = char::from(*hi).to_digit(16)?;
    let lo = char::from(*lo).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.to_vec()).collect()
    }

    /// Parses a buffer expected to hold one complete request.
    fn one(buf: &[u8]) -> (Vec<Vec<u8>>, usize) {
        match parse_request(buf) {
            Ok(Some((request, consumed))) => (request.into_args(), consumed),
            other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
        }
    }

    fn err(buf: &[u8]) -> ProtocolError {
        match parse_request(buf) {
            Err(e) => e,
            other => panic!("{:?}: {other:?}", buf.escape_ascii().to_string()),
        }
    }

    fn incomplete(buf: &[u8]) -> bool {
        parse_request(buf) == Ok(None)
    }

    /// All requests in a buffer and the bytes left over.
    fn all(mut buf: &[u8]) -> (Vec<Vec<Vec<u8>>>, usize) {
        let mut requests = Vec::new();
        while let Some((request, consumed)) = parse_request(buf).unwrap() {
            requests.push(request.into_args());
            buf = &buf[consumed..];
        }
        (requests, buf.len())
    }

    fn resp(list: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        Request::new(args(list)).encode(&mut out);
        out
    }

    #[test]
    fn derived_limits() {
        assert_eq!(header_len(0), 4);
        assert_eq!(header_len(9), 4);
        assert_eq!(header_len(10), 5);
        assert_eq!(header_len(MAX_ARGS), b"*16\r\n".len());
        assert_eq!(header_len(MAX_BULK_LEN), b"$4096\r\n".len());
        let big = vec![b'x'; MAX_BULK_LEN];
        let frame = resp(&[&big[..]; MAX_ARGS]);
        assert_eq!(frame.len(), MAX_FRAME_LEN);
        assert_eq!(MAX_FRAME_LEN, 65_685);
        assert_eq!(MAX_REQUEST_LEN, MAX_SKIPPED_LEN + MAX_FRAME_LEN);
        assert_eq!(one(&frame), (args(&[&big[..]; MAX_ARGS]), MAX_FRAME_LEN));
    }

    #[test]
    fn inline_basic() {
        assert_eq!(one(b"PING\r\n"), (args(&[b"PING"]), 6));
        assert_eq!(one(b"PING\n"), (args(&[b"PING"]), 5));
        assert_eq!(
            one(b"ADD o:1 500\r\n"),
            (args(&[b"ADD", b"o:1", b"500"]), 13)
        );
        assert_eq!(
            one(b" \t ADD\t\to:1  500 \r\n"),
            (args(&[b"ADD", b"o:1", b"500"]), 19)
        );
        // CR, VT and FF are blanks too; NUL is an ordinary byte.
        assert_eq!(
            one(b"a\rb\x0bc\x0cd\0e\n"),
            (args(&[b"a", b"b", b"c", b"d\0e"]), 10)
        );
        // Bytes that look like RESP are words when the line does not start with '*'.
        assert_eq!(one(b"$3 foo\n"), (args(&[b"$3", b"foo"]), 7));
        assert_eq!(one(b" *1\n"), (args(&[b"*1"]), 4));
    }

    #[test]
    fn resp_basic() {
        assert_eq!(one(b"*1\r\n$4\r\nPING\r\n"), (args(&[b"PING"]), 14));
        assert_eq!(
            one(b"*3\r\n$3\r\nADD\r\n$0\r\n\r\n$2\r\n\r\n\r\n"),
            (args(&[b"ADD", b"", b"\r\n"]), 27)
        );
        // Binary-safe: the bulk may hold anything, including "\r\n" and '*'.
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(one(&resp(&[&bytes])).0, args(&[&bytes]));
    }

    #[test]
    fn pipelined() {
        let mut buf = b"PING\r\n\r\n".to_vec();
        buf.extend(resp(&[b"ADD", b"x", b"1"]));
        buf.extend(b"*0\r\n*-1\r\nCOUNT\nPTTL x\r\n*1\r\n$4\r\nPI");
        let (requests, left) = all(&buf);
        assert_eq!(
            requests,
            vec![
                args(&[b"PING"]),
                args(&[b"ADD", b"x", b"1"]),
                args(&[b"COUNT"]),
                args(&[b"PTTL", b"x"]),
            ]
        );
        assert_eq!(left, b"*1\r\n$4\r\nPI".len());
    }

    #[test]
    fn every_prefix_is_incomplete() {
        let cases: Vec<Vec<u8>> = vec![
            b"PING\r\n".to_vec(),
            b"PING\n".to_vec(),
            b"SET \"a b\" 'c\\'d' \"\\x41\\n\"\r\n".to_vec(),
            b"\r\n\n  \r\nPING\n".to_vec(),
            b"*0\r\n*-1\r\nPING\n".to_vec(),
            resp(&[b"PING"]),
            resp(&[b"ADD", b"order:1", b"600000", b"REPLACE"]),
            resp(&[b"", b"\r\n", &[b'x'; MAX_BULK_LEN]]),
            resp(&[&b"x"[..]; MAX_ARGS]),
        ];
        for full in cases {
            for end in 0..full.len() {
                assert!(
                    incomplete(&full[..end]),
                    "{:?}",
                    full[..end].escape_ascii().to_string()
                );
            }
            let (request, consumed) = one(&full);
            assert!(!request.is_empty());
            assert_eq!(consumed, full.len());
        }
    }

    #[test]
    fn blank_lines_and_empty_arrays_are_skipped() {
        for skipped in [&b"\n"[..], b"\r\n", b"  \t\r\n", b"*0\r\n", b"*-1\r\n"] {
            assert!(incomplete(skipped));
            let mut buf = skipped.repeat(3);
            buf.extend(b"PING\n");
            assert_eq!(one(&buf), (args(&[b"PING"]), buf.len()));
        }
        // An empty quoted string is a word, not a blank line.
        assert_eq!(one(b"\"\"\n"), (args(&[b""]), 3));
        assert_eq!(one(b"''\n"), (args(&[b""]), 3));
    }

    #[test]
    fn skipped_input_is_bounded() {
        let mut buf = vec![b'\n'; MAX_SKIPPED_LEN];
        assert!(incomplete(&buf));
        buf.extend(b"PING\n");
        assert_eq!(one(&buf), (args(&[b"PING"]), MAX_SKIPPED_LEN + 5));

        let buf = vec![b'\n'; MAX_SKIPPED_LEN + 1];
        assert_eq!(err(&buf), ProtocolError::TooMuchSkipped);
        assert_eq!(
            err(&b"*0\r\n".repeat(MAX_SKIPPED_LEN / 4 + 1)),
            ProtocolError::TooMuchSkipped
        );

        // The largest buffer that can still be incomplete.
        let mut buf = vec![b'\n'; MAX_SKIPPED_LEN];
        let frame = resp(&[&[b'x'; MAX_BULK_LEN][..]; MAX_ARGS]);
        buf.extend(&frame[..frame.len() - 1]);
        assert!(buf.len() < MAX_REQUEST_LEN && incomplete(&buf));
        buf.push(b'\n');
        assert_eq!(one(&buf).1, MAX_REQUEST_LEN);
    }

    #[test]
    fn inline_length_limit() {
        let line = |len: usize| {
            let mut line = b"PING".to_vec();
            line.resize(len, b' ');
            line
        };
        let exact = line(MAX_INLINE_LEN);
        assert!(incomplete(&exact));
        assert!(incomplete(&[&exact[..], b"\r"].concat()));
        assert_eq!(one(&[&exact[..], b"\n"].concat()).1, MAX_INLINE_LEN + 1);
        assert_eq!(one(&[&exact[..], b"\r\n"].concat()).1, MAX_INLINE_LEN + 2);

        let over = line(MAX_INLINE_LEN + 1);
        assert_eq!(err(&over), ProtocolError::TooBigInline);
        assert_eq!(
            err(&[&over[..], b"\n"].concat()),
            ProtocolError::TooBigInline
        );
        assert_eq!(
            err(&[&over[..], b"\r\n"].concat()),
            ProtocolError::TooBigInline
        );
        assert_eq!(
            err(&[&exact[..], b"\r\r"].concat()),
            ProtocolError::TooBigInline
        );
        // A blank line obeys the limit too.
        assert_eq!(
            err(&vec![b' '; MAX_INLINE_LEN + 1]),
            ProtocolError::TooBigInline
        );
    }

    #[test]
    fn inline_argument_limits() {
        let words = |n: usize| [&b"w "[..]].repeat(n).concat();
        assert_eq!(
            one(&[&words(MAX_ARGS)[..], b"\n"].concat()).0.len(),
            MAX_ARGS
        );
        assert_eq!(
            err(&[&words(MAX_ARGS + 1)[..], b"\n"].concat()),
            ProtocolError::TooManyInlineArgs
        );

        let word = |len: usize| vec![b'w'; len];
        for (open, close) in [("", ""), ("\"", "\""), ("'", "'")] {
            let line = |len| [open.as_bytes(), &word(len), close.as_bytes(), b"\n"].concat();
            assert_eq!(one(&line(MAX_BULK_LEN)).0, vec![word(MAX_BULK_LEN)]);
            assert_eq!(err(&line(MAX_BULK_LEN + 1)), ProtocolError::TooBigInlineArg);
        }
    }

    #[test]
    fn inline_quotes() {
        let parse = |line: &[u8]| one(&[line, b"\n"].concat()).0;
        assert_eq!(parse(b"SET \"a b\" 'c d'"), args(&[b"SET", b"a b", b"c d"]));
        assert_eq!(
            parse(br#""\x41\x7e\xfF\n\r\t\b\a\"\\\q""#),
            args(&[b"A~\xff\n\r\t\x08\x07\"\\q"])
        );
        // `\x` without two hex digits is just an escaped 'x'.
        assert_eq!(parse(br#""\xZZ" "\x4""#), args(&[b"xZZ", b"x4"]));
        assert_eq!(parse(br"'it\'s' 'a\nb\\x'"), args(&[b"it's", br"a\nb\\x"]));
        assert_eq!(parse(br#"'"' "'""#), args(&[b"\"", b"'"]));
        // A quote may start mid-word; the closing quote must end it.
        assert_eq!(parse(br#"ab"c d""#), args(&[b"abc d"]));
        assert_eq!(parse(b"\"a\"\t'b'\r"), args(&[b"a", b"b"]));
        for bad in [
            &br#""abc"#[..],
            br"'abc",
            br#""a"b"#,
            br"'a'b",
            br#""abc\""#,
            br#""abc\"#,
            br"'abc\'",
        ] {
            assert_eq!(
                err(&[bad, b"\n"].concat()),
                ProtocolError::UnbalancedQuotes,
                "{}",
                bad.escape_ascii()
            );
        }
        // Without its line ending, a line is not looked at yet.
        assert!(incomplete(b"\"abc"));
    }

    #[test]
    fn multibulk_length() {
        assert_eq!(one(&resp(&[&b"x"[..]; MAX_ARGS])).0.len(), MAX_ARGS);
        for bad in [
            &b"*17\r\n"[..],
            b"*-2\r\n",
            b"*x\r\n",
            b"*\r\n",
            b"*-\r\n",
            b"*01\r\n",
            b"*-0\r\n",
            b"*+1\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*1\n",
            b"*1\rX",
            b"*99999999999999999999\r\n",
            b"*-9223372036854775809\r\n",
            b"*000000000000000000000",
        ] {
            assert_eq!(
                err(bad),
                ProtocolError::InvalidMultibulkLength,
                "{}",
                bad.escape_ascii()
            );
        }
        // Twenty digits may still be a number; the check waits for the CR.
        assert!(incomplete(b"*00000000000000000000"));
        assert!(incomplete(b"*1"));
        assert!(incomplete(b"*1\r"));
    }

    #[test]
    fn bulk_length() {
        let big = vec![b'x'; MAX_BULK_LEN];
        assert_eq!(one(&resp(&[&big])).0, vec![big]);
        for bad in [
            &b"*1\r\n$4097\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$x\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$03\r\n",
            b"*1\r\n$3\n",
            b"*1\r\n$3\rX",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(
                err(bad),
                ProtocolError::InvalidBulkLength,
                "{}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(err(b"*1\r\nPING\r\n"), ProtocolError::ExpectedDollar(b'P'));
        assert_eq!(
            err(b"*2\r\n$1\r\nx\r\n:1\r\n"),
            ProtocolError::ExpectedDollar(b':')
        );
        assert_eq!(err(b"*1\r\n\r\n"), ProtocolError::ExpectedDollar(b'\r'));
    }

    #[test]
    fn bulk_terminator() {
        assert!(incomplete(b"*1\r\n$3\r\nfoo"));
        assert!(incomplete(b"*1\r\n$3\r\nfoo\r"));
        for bad in [
            &b"*1\r\n$3\r\nfooXY"[..],
            b"*1\r\n$3\r\nfoo\n\r",
            b"*1\r\n$3\r\nfoo\rX",
            b"*1\r\n$3\r\nfoox\r\n",
            b"*1\r\n$3\r\nfo\r\n\r\n",
        ] {
            assert_eq!(
                err(bad),
                ProtocolError::BulkNotTerminated,
                "{}",
                bad.escape_ascii()
            );
        }
    }

    #[test]
    fn error_texts() {
        let cases = [
            (ProtocolError::TooBigInline, "too big inline request"),
            (
                ProtocolError::UnbalancedQuotes,
                "unbalanced quotes in request",
            ),
            (
                ProtocolError::TooManyInlineArgs,
                "too many arguments in inline request",
            ),
            (
                ProtocolError::TooBigInlineArg,
                "too big argument in inline request",
            ),
            (ProtocolError::TooMuchSkipped, "too many empty requests"),
            (
                ProtocolError::InvalidMultibulkLength,
                "invalid multibulk length",
            ),
            (ProtocolError::InvalidBulkLength, "invalid bulk length"),
            (ProtocolError::ExpectedDollar(b'x'), "expected '$', got 'x'"),
            (
                ProtocolError::ExpectedDollar(b'\r'),
                r"expected '$', got '\r'",
            ),
            (
                ProtocolError::ExpectedDollar(0xff),
                r"expected '$', got '\xff'",
            ),
            (
                ProtocolError::BulkNotTerminated,
                "expected CRLF after bulk string",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn integers_read_like_redis() {
        let cases: &[(&[u8], Option<i64>)] = &[
            (b"0", Some(0)),
            (b"7", Some(7)),
            (b"-1", Some(-1)),
            (b"1234567890", Some(1_234_567_890)),
            (b"9223372036854775807", Some(i64::MAX)),
            (b"-9223372036854775808", Some(i64::MIN)),
            (b"9223372036854775808", None),
            (b"-9223372036854775809", None),
            (b"99999999999999999999999", None),
            (b"", None),
            (b"-", None),
            (b"-0", None),
            (b"00", None),
            (b"01", None),
            (b"+1", None),
            (b" 1", None),
            (b"1 ", None),
            (b"1e3", None),
            (b"0x10", None),
            (b"1.0", None),
            (b"--1", None),
        ];
        for &(text, expected) in cases {
            assert_eq!(parse_i64(text), expected, "{}", text.escape_ascii());
        }
    }

    #[test]
    fn request_accessors() {
        let request = Request::new(args(&[b"AdD", b"x"]));
        assert_eq!(request.command_name(), b"AdD");
        assert_eq!(request.command_name_lowercase(), "add");
        assert_eq!(
            Request::new(args(&[b"P\xffNG"])).command_name_lowercase(),
            "p\u{fffd}ng"
        );
        assert_eq!(Request::new(Vec::new()).command_name(), b"");
        let mut out = Vec::new();
        request.encode(&mut out);
        assert_eq!(out, b"*2\r\n$3\r\nAdD\r\n$1\r\nx\r\n");
    }
}

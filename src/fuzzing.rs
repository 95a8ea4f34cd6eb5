//! Fuzzing checks, shared by the cargo-fuzz crate in `fuzz/` and by
//! `tests/fuzz_corpus.rs`, which replays the fuzz corpus on every `cargo test`.
//! Not part of the API: these functions panic when a property fails.

use crate::protocol::{
    Command, MAX_ARGS, MAX_BULK_LEN, MAX_REQUEST_LEN, Protocol, ProtocolError, Reply, Request,
    parse_request, write_protocol_error,
};

/// Runs arbitrary bytes through the whole protocol layer and checks:
///
/// - the parser never panics, consumes between 1 and [`MAX_REQUEST_LEN`]
///   bytes per request, and never asks for more input beyond that;
/// - every request respects [`MAX_ARGS`] and [`MAX_BULK_LEN`], and survives
///   a RESP encode/parse round trip;
/// - reading the bytes in chunks (size chosen by the first byte) gives the
///   same requests and the same error as parsing them all at once;
/// - every request becomes a `Command` or a one-line printable error, and
///   replies built from it encode to well-formed RESP2 and RESP3.
pub fn check_parse(data: &[u8]) {
    let chunk = data.first().map_or(1, |&b| usize::from(b % 16) + 1);
    let whole = feed(data, data.len().max(1));
    let chunked = feed(data, chunk);
    assert_eq!(whole.requests, chunked.requests, "chunk={chunk}");
    assert_eq!(whole.error, chunked.error, "chunk={chunk}");
    if whole.error.is_none() {
        assert_eq!(whole.leftover, chunked.leftover, "chunk={chunk}");
    }

    if let Some(error) = whole.error {
        let mut out = Vec::new();
        write_protocol_error(&mut out, &error);
        assert_printable_line(&out);
    }
    for request in whole.requests {
        check_request(request);
    }
}

/// What parsing a stream gave.
struct Outcome {
    requests: Vec<Request>,
    error: Option<ProtocolError>,
    /// Bytes left unparsed (an incomplete request) when there was no error.
    leftover: usize,
}

/// Feeds `data` to the parser `chunk` bytes at a time, as a server would.
fn feed(data: &[u8], chunk: usize) -> Outcome {
    let mut buf = Vec::new();
    let mut requests = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match parse_request(&buf) {
                Ok(Some((request, consumed))) => {
                    assert!(
                        consumed > 0 && consumed <= buf.len() && consumed <= MAX_REQUEST_LEN,
                        "consumed={consumed}, buf.len()={}",
                        buf.len()
                    );
                    buf.drain(..consumed);
                    requests.push(request);
                }
                Ok(None) => {
                    assert!(buf.len() <= MAX_REQUEST_LEN, "buf.len()={}", buf.len());
                    break;
                }
                Err(error) => {
                    return Outcome {
                        requests,
                        error: Some(error),
                        leftover: buf.len(),
                    };
                }
            }
        }
    }
    Outcome {
        requests,
        error: None,
        leftover: buf.len(),
    }
}

fn check_request(request: Request) {
    let args = request.args();
    assert!(
        (1..=MAX_ARGS).contains(&args.len()),
        "args.len()={}",
        args.len()
    );
    for arg in args {
        assert!(arg.len() <= MAX_BULK_LEN, "arg.len()={}", arg.len());
    }

    let mut encoded = Vec::new();
    request.encode(&mut encoded);
    assert_eq!(
        parse_request(&encoded),
        Ok(Some((request.clone(), encoded.len())))
    );

    let name = request.command_name_lowercase();
    let mut items = vec![
        Reply::simple(name.clone()),
        Reply::Map(
            args.iter()
                .map(|arg| (Reply::bulk(arg.clone()), Reply::Integer(arg.len() as i64)))
                .collect(),
        ),
        Reply::Push(vec![
            Reply::Null,
            Reply::Verbatim {
                format: *b"txt",
                text: args.concat(),
            },
        ]),
    ];
    match Command::from_request(request) {
        Ok(command) => {
            let spec = crate::protocol::lookup(name.as_bytes());
            assert_eq!(
                spec.map(|spec| spec.name),
                Some(name.as_str()),
                "{command:?}"
            );
            items.push(Reply::bulk(format!("{command:?}")));
        }
        Err(error) => {
            let line = error.to_string();
            assert_printable_line(line.as_bytes());
            items.push(Reply::error(line));
        }
    }
    let reply = Reply::Array(items);
    for proto in [Protocol::Resp2, Protocol::Resp3] {
        let mut out = Vec::new();
        reply.encode(proto, &mut out);
        assert_eq!(
            skip_value(&out, 0, proto),
            Some(out.len()),
            "{proto:?} {:?}",
            out.escape_ascii().to_string()
        );
    }
}

/// An error text (with or without its `-` and CRLF) is printable ASCII.
fn assert_printable_line(line: &[u8]) {
    let text = line.strip_suffix(b"\r\n").unwrap_or(line);
    assert!(
        text.iter().all(|&b| b == b' ' || b.is_ascii_graphic()),
        "{:?}",
        text.escape_ascii().to_string()
    );
}

/// Walks one encoded reply value starting at `pos`; returns the position after
/// it, or `None` if it is not well-formed for `proto`.
fn skip_value(buf: &[u8], pos: usize, proto: Protocol) -> Option<usize> {
    let kind = *buf.get(pos)?;
    let rest = buf.get(pos + 1..)?;
    let line_len = rest.windows(2).position(|w| w == b"\r\n")?;
    let line = rest.get(..line_len)?;
    if line.contains(&b'\r') || line.contains(&b'\n') {
        return None;
    }
    let after = pos + 1 + line_len + 2;
    let number = || std::str::from_utf8(line).ok()?.parse::<i64>().ok();
    let resp3 = proto == Protocol::Resp3;
    match kind {
        b'+' | b'-' => Some(after),
        b':' => number().map(|_| after),
        b'_' if resp3 => line.is_empty().then_some(after),
        b'$' if !resp3 && line == b"-1" => Some(after),
        b'$' | b'=' => {
            let len = usize::try_from(number()?).ok()?;
            if kind == b'=' && (!resp3 || buf.get(after + 3) != Some(&b':')) {
                return None;
            }
            let end = after.checked_add(len)?;
            (buf.get(end..end + 2)? == b"\r\n").then_some(end + 2)
        }
        b'*' | b'>' | b'%' => {
            if kind != b'*' && !resp3 {
                return None;
            }
            let mut count = usize::try_from(number()?).ok()?;
            if kind == b'%' {
                count = count.checked_mul(2)?;
            }
            (0..count).try_fold(after, |pos, _| skip_value(buf, pos, proto))
        }
        _ => None,
    }
}

//! The wire format: RESP-compatible requests in, RESP2/RESP3 replies out.
//! Pure code, no sockets: the server owns the buffers and the connections.
//!
//! - [`request`]: bytes to a [`Request`] (inline lines or RESP arrays of bulk
//!   strings, like Redis), with [`parse_request`].
//! - [`table`]: the command table, one row per command (name, arity,
//!   flags, key positions, parser); `COMMAND` is answered from it.
//! - [`command`]: a [`Request`] to a typed [`Command`], or a [`CommandError`]
//!   worded like Redis's error for the same mistake.
//! - [`reply`]: a [`Reply`] (or a hot-path `write_*` call) to bytes, in the
//!   connection's [`Protocol`].
//!
//! # Ground rules
//!
//! - Nothing here panics, whatever the input. Nothing allocates beyond the
//!   limits: [`MAX_ARGS`] arguments of [`MAX_BULK_LEN`] bytes, inline lines of
//!   [`MAX_INLINE_LEN`] bytes; declared lengths are checked before anything is
//!   reserved, and a connection buffer never needs more than
//!   [`MAX_REQUEST_LEN`] bytes.
//! - Nothing a client sends can break the framing of a reply: error and
//!   simple-string lines are kept on one line, and echoed client bytes are
//!   escaped.
//! - Inline requests support Redis's double and single quotes (see [`request`]).
//!
//! `fuzz/` fuzzes [`parse_request`] and everything after it through
//! `crate::fuzzing::check_parse`; `tests/fuzz_corpus.rs` replays its corpus.

pub mod command;
pub mod reply;
pub mod request;
pub mod table;

pub use command::{
    Command, CommandError, Credentials, DELAY_UNITS, MAX_DELAY_MS, MAX_ECHO_LEN, MAX_ID_LEN,
    MAX_UNIX_MS, MIN_UNIX_MS, is_valid_id, parse_deadline, parse_delay,
};
pub use reply::{
    Protocol, Reply, write_array_header, write_bulk, write_error, write_integer, write_map_header,
    write_null, write_protocol_error, write_push_header, write_simple, write_verbatim,
};
pub use request::{
    MAX_ARGS, MAX_BULK_LEN, MAX_FRAME_LEN, MAX_INLINE_LEN, MAX_REQUEST_LEN, MAX_SKIPPED_LEN,
    ProtocolError, Request, parse_request,
};
pub use table::{COMMANDS, CommandSpec, Flags, Group, KeyRange, lookup};

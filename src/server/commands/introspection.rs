//! `INFO`, `COMMAND`, `CONFIG`: what the server is and how it is doing.
//!
//! `COMMAND` is answered from the command table
//! ([`crate::protocol::table`]); `CONFIG GET` knows only the settings
//! Redis clients and `redis-benchmark` ask for.

use crate::protocol::{Protocol, write_bulk, write_error, write_map_header};
use crate::server::Shared;
use crate::server::figures::{self, Sources};

/// `COMMAND [subcommand ...]`.
pub(super) fn command(proto: Protocol, args: &[Vec<u8>], out: &mut Vec<u8>) {
    crate::protocol::table::write_command_reply(out, proto, args);
}

/// `CONFIG GET pattern [pattern ...]`: enough for redis-benchmark and
/// client libraries that ask. `appendonly` says whether writes are
/// journaled (`yes` with `--redis`), which is what a client asking wants to
/// know.
pub(super) fn config_get(
    shared: &Shared,
    proto: Protocol,
    patterns: &[Vec<u8>],
    out: &mut Vec<u8>,
) {
    let journaled: &[u8] = if shared.engine.journal_stats().is_some() {
        b"yes"
    } else {
        b"no"
    };
    let known: [(&[u8], &[u8]); 3] = [
        (b"save", b""),
        (b"appendonly", journaled),
        (b"databases", b"1"),
    ];
    let found: Vec<_> = known
        .iter()
        .filter(|(key, _)| {
            patterns
                .iter()
                .any(|p| p.eq_ignore_ascii_case(key) || p == b"*")
        })
        .collect();
    write_map_header(out, proto, found.len());
    for (key, value) in found {
        write_bulk(out, key);
        write_bulk(out, value);
    }
}

/// Any other `CONFIG` subcommand.
pub(super) fn config_other(subcommand: &[u8], out: &mut Vec<u8>) {
    write_error(
        out,
        format_args!("ERR CONFIG {} is not supported", subcommand.escape_ascii()),
    );
}

/// `INFO [section ...]`.
pub(super) fn info(shared: &Shared, wanted: &[Vec<u8>], out: &mut Vec<u8>) {
    let sections = figures::collect(&Sources {
        engine: &shared.engine,
        hub: &shared.hub,
        counters: &shared.counters,
        started: shared.started,
        io_threads: shared.config.io_threads,
        tls: shared.config.tls.as_deref(),
        cluster: shared.config.cluster.as_ref(),
    });
    write_bulk(out, figures::info_text(&sections, wanted).as_bytes());
}

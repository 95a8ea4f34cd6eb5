//! `INFO`, `COMMAND`, `CONFIG`: what the server is and how it is doing.
//!
//! `COMMAND` is answered from the command table
//! ([`crate::protocol::table`]); `CONFIG GET` knows only the settings
//! Redis clients and `redis-benchmark` ask for.

use std::sync::atomic::Ordering;

use crate::protocol::{Protocol, write_bulk, write_error, write_map_header};
use crate::server::Shared;

/// `COMMAND [subcommand ...]`.
pub(super) fn command(proto: Protocol, args: &[Vec<u8>], out: &mut Vec<u8>) {
    crate::protocol::table::write_command_reply(out, proto, args);
}

/// `CONFIG GET pattern [pattern ...]`: enough for redis-benchmark and
/// client libraries that ask.
pub(super) fn config_get(proto: Protocol, patterns: &[Vec<u8>], out: &mut Vec<u8>) {
    const KNOWN: [(&[u8], &[u8]); 3] =
        [(b"save", b""), (b"appendonly", b"no"), (b"databases", b"1")];
    let found: Vec<_> = KNOWN
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
pub(super) fn info(shared: &Shared, out: &mut Vec<u8>) {
    write_bulk(out, info_text(shared).as_bytes());
}

/// The `INFO` text: `key:value` lines under `# Section` headers.
fn info_text(shared: &Shared) -> String {
    let stats = shared.engine.stats();
    let c = &shared.counters;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    let sections: [(&str, Vec<(&str, String)>); 4] = [
        (
            "Server",
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("uptime_s", shared.started.elapsed().as_secs().to_string()),
                ("tick_ms", stats.tick_ms.to_string()),
                ("io_threads", shared.config.io_threads.to_string()),
            ],
        ),
        (
            "Clients",
            vec![
                (
                    "connected_clients",
                    c.connected_clients.load(Ordering::Relaxed).to_string(),
                ),
                (
                    "total_connections_received",
                    load(&c.total_connections).to_string(),
                ),
                (
                    "rejected_connections",
                    load(&c.rejected_connections).to_string(),
                ),
                ("subscribers", shared.hub.len().to_string()),
                (
                    "subscriber_overflow_total",
                    load(&c.subscriber_overflows).to_string(),
                ),
                ("idle_closed_total", load(&c.idle_closed).to_string()),
                ("auth_failures_total", load(&c.auth_failures).to_string()),
                (
                    "protocol_errors_total",
                    load(&c.protocol_errors).to_string(),
                ),
                (
                    "total_commands_processed",
                    load(&c.commands_processed).to_string(),
                ),
            ],
        ),
        (
            "Timers",
            vec![
                ("pending", stats.pending.to_string()),
                ("fired_total", stats.fired_total.to_string()),
                ("cancelled_total", stats.cancelled_total.to_string()),
                ("delivered_total", stats.delivered_total.to_string()),
                ("delivery_retries_total", stats.retries_total.to_string()),
                ("dead_letter_total", stats.dead_letter_total.to_string()),
                ("inflight", stats.inflight.to_string()),
                ("tick_lag_ms", stats.tick_lag_ms.to_string()),
                ("delivery_lag_ms", stats.delivery_lag_ms.to_string()),
                (
                    "published_total",
                    load(&shared.hub.published_total).to_string(),
                ),
            ],
        ),
        ("Journal", journal_info(shared)),
    ];
    let mut text = String::new();
    let cluster = shared.config.cluster.as_ref().map(|cluster| {
        let stats = cluster.stats();
        let mut fields: Vec<(&str, String)> = stats
            .figures()
            .iter()
            .map(|&(name, _, _, value)| (name, value.to_string()))
            .collect();
        fields.push(("cluster_my_id", cluster.me().id.clone()));
        fields.push(("cluster_announce", cluster.me().addr.clone()));
        fields.push(("cluster_lease_ms", stats.lease_ms.to_string()));
        fields.push((
            "cluster_last_takeover_unix_ms",
            stats.last_takeover_unix_ms.to_string(),
        ));
        ("Cluster", fields)
    });
    for (title, fields) in sections.into_iter().chain(cluster) {
        text.push_str(&format!("# {title}\r\n"));
        for (key, value) in fields {
            text.push_str(&format!("{key}:{value}\r\n"));
        }
        text.push_str("\r\n");
    }
    text
}

fn journal_info(shared: &Shared) -> Vec<(&'static str, String)> {
    let Some(j) = shared.engine.journal_stats() else {
        return vec![("journal", "off".into())];
    };
    let r = &j.restored;
    vec![
        ("journal", if j.up { "ok" } else { "down" }.into()),
        ("journal_down_for_s", j.down_for_s.to_string()),
        ("journal_backlog", j.backlog.to_string()),
        ("journal_writes_total", j.writes_total.to_string()),
        ("journal_batches_total", j.batches_total.to_string()),
        ("journal_errors_total", j.errors_total.to_string()),
        ("journal_refused_total", j.refused_total.to_string()),
        ("journal_reconnects_total", j.reconnects_total.to_string()),
        ("rebuilt_timers", r.total.to_string()),
        ("rebuild_ms", r.elapsed_ms.to_string()),
        ("overdue_at_rebuild", r.overdue.to_string()),
        ("refired_after_restart", r.refired.to_string()),
        ("invalid_journal_entries", r.invalid.to_string()),
    ]
}

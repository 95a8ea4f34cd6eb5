//! The server's figures, listed once and rendered twice: as `INFO` text
//! (`key:value` lines under `# Section` headers, as Redis writes it) and
//! as Prometheus text at `/metrics` (`timewheel_<name>` with `HELP` and
//! `TYPE`). A figure added to [`collect`] shows in both.
//!
//! Ground rules:
//! - Reading figures takes no engine lock for longer than one shard at a
//!   time and never blocks on Redis: `INFO` runs on an I/O thread.
//! - Text figures (a version, a state word) are `INFO`-only; every number
//!   is in both, with the same name.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::Counters;
use super::hub::Hub;
use super::tls::Acceptor;
use crate::engine::{Engine, Stats};

/// A Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only goes up (until a restart).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A figure's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    /// In `INFO` and `/metrics`.
    Number(u64, Kind),
    /// In `INFO` only.
    Text(String),
}

/// One named figure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Figure {
    pub name: &'static str,
    pub help: &'static str,
    pub value: Value,
}

/// An `INFO` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Section {
    pub title: &'static str,
    pub figures: Vec<Figure>,
}

/// What the figures are read from.
#[derive(Debug)]
pub(crate) struct Sources<'a> {
    pub engine: &'a Engine,
    pub hub: &'a Hub,
    pub counters: &'a Counters,
    pub started: Instant,
    pub io_threads: usize,
    /// The clients' TLS, with `--tls-cert`.
    pub tls: Option<&'a Acceptor>,
    /// Cluster mode: adds the `Cluster` section.
    pub cluster: Option<&'a crate::cluster::Cluster>,
}

fn counter(name: &'static str, help: &'static str, value: u64) -> Figure {
    Figure {
        name,
        help,
        value: Value::Number(value, Kind::Counter),
    }
}

fn gauge(name: &'static str, help: &'static str, value: u64) -> Figure {
    Figure {
        name,
        help,
        value: Value::Number(value, Kind::Gauge),
    }
}

fn text(name: &'static str, help: &'static str, value: impl Into<String>) -> Figure {
    Figure {
        name,
        help,
        value: Value::Text(value.into()),
    }
}

fn load(n: &AtomicU64) -> u64 {
    n.load(Ordering::Relaxed)
}

/// Every figure, by section, in `INFO` order.
pub(crate) fn collect(sources: &Sources<'_>) -> Vec<Section> {
    let stats = sources.engine.stats();
    vec![
        server_section(sources, &stats),
        clients_section(sources),
        timers_section(sources, &stats),
        journal_section(sources.engine),
        tls_section(sources.tls),
    ]
    .into_iter()
    .chain(sources.cluster.map(cluster_section))
    .collect()
}

/// Cluster mode: the figures of [`crate::cluster::ClusterStats::figures`],
/// and who this node is.
fn cluster_section(cluster: &crate::cluster::Cluster) -> Section {
    let stats = cluster.stats();
    let mut figures: Vec<Figure> = stats
        .figures()
        .into_iter()
        .map(|(name, kind, help, value)| {
            if kind == "counter" {
                counter(name, help, value)
            } else {
                gauge(name, help, value)
            }
        })
        .collect();
    figures.push(text(
        "cluster_my_id",
        "This node's id.",
        cluster.me().id.clone(),
    ));
    figures.push(text(
        "cluster_announce",
        "The address other nodes redirect clients to.",
        cluster.me().addr.clone(),
    ));
    figures.push(gauge(
        "cluster_lease_ms",
        "The partition lease (ms).",
        stats.lease_ms,
    ));
    figures.push(gauge(
        "cluster_last_takeover_unix_ms",
        "When the last takeover happened (Unix ms; 0: never).",
        stats.last_takeover_unix_ms,
    ));
    Section {
        title: "Cluster",
        figures,
    }
}

fn server_section(sources: &Sources<'_>, stats: &Stats) -> Section {
    Section {
        title: "Server",
        figures: vec![
            text("version", "timewheel version.", env!("CARGO_PKG_VERSION")),
            text(
                "process_id",
                "The server's pid.",
                std::process::id().to_string(),
            ),
            gauge(
                "uptime_s",
                "Seconds since the server started.",
                sources.started.elapsed().as_secs(),
            ),
            gauge("tick_ms", "Tick length in milliseconds.", stats.tick_ms),
            gauge(
                "io_threads",
                "I/O threads serving clients.",
                sources.io_threads as u64,
            ),
        ],
    }
}

fn clients_section(sources: &Sources<'_>) -> Section {
    let c = sources.counters;
    Section {
        title: "Clients",
        figures: vec![
            gauge(
                "connected_clients",
                "Client connections open now.",
                c.connected_clients.load(Ordering::Relaxed) as u64,
            ),
            counter(
                "total_connections_received",
                "Client connections accepted.",
                load(&c.total_connections),
            ),
            counter(
                "rejected_connections",
                "Connections refused at --max-clients.",
                load(&c.rejected_connections),
            ),
            gauge(
                "subscribers",
                "Connections subscribed to `fired`.",
                sources.hub.len() as u64,
            ),
            counter(
                "subscriber_overflow_total",
                "Subscribers disconnected for falling too far behind.",
                load(&c.subscriber_overflows),
            ),
            counter(
                "idle_closed_total",
                "Connections closed after --idle-timeout-s.",
                load(&c.idle_closed),
            ),
            counter(
                "auth_failures_total",
                "AUTH and HELLO AUTH attempts with a wrong password.",
                load(&c.auth_failures),
            ),
            counter(
                "protocol_errors_total",
                "Connections closed for a malformed request.",
                load(&c.protocol_errors),
            ),
            counter(
                "total_commands_processed",
                "Requests executed.",
                load(&c.commands_processed),
            ),
        ],
    }
}

fn timers_section(sources: &Sources<'_>, stats: &Stats) -> Section {
    Section {
        title: "Timers",
        figures: vec![
            gauge(
                "pending",
                "Timers waiting in the wheel.",
                stats.pending as u64,
            ),
            counter(
                "fired_total",
                "Timers whose deadline came.",
                stats.fired_total,
            ),
            counter(
                "cancelled_total",
                "CANCELs that answered 1.",
                stats.cancelled_total,
            ),
            counter(
                "delivered_total",
                "Fired orders whose close-order task succeeded.",
                stats.delivered_total,
            ),
            counter(
                "delivery_retries_total",
                "Failed attempts that will be retried.",
                stats.retries_total,
            ),
            counter(
                "dead_letter_total",
                "Orders whose every attempt failed.",
                stats.dead_letter_total,
            ),
            gauge(
                "inflight",
                "Fired orders not yet delivered or dead-lettered.",
                stats.inflight,
            ),
            gauge(
                "tick_lag_ms",
                "How long the oldest unprocessed tick has been due, ms.",
                stats.tick_lag_ms,
            ),
            gauge(
                "delivery_lag_ms",
                "p99 over the last 60 s of delivered minus deadline, ms.",
                stats.delivery_lag_ms,
            ),
            counter(
                "published_total",
                "Fired ids pushed to at least one subscriber.",
                load(&sources.hub.published_total),
            ),
        ],
    }
}

fn journal_section(engine: &Engine) -> Section {
    let Some(j) = engine.journal_stats() else {
        return Section {
            title: "Journal",
            figures: vec![text("journal", "Journal state: ok, down or off.", "off")],
        };
    };
    let r = &j.restored;
    let mut section = Section {
        title: "Journal",
        figures: vec![
            text(
                "journal",
                "Journal state: ok, down or off.",
                if j.up { "ok" } else { "down" },
            ),
            gauge(
                "journal_up",
                "1 while Redis confirms journal writes, 0 while it is unreachable.",
                u64::from(j.up),
            ),
            gauge(
                "journal_down_for_s",
                "Seconds the journal has been down (0 when up).",
                j.down_for_s,
            ),
            gauge(
                "journal_backlog",
                "Journal writes queued or in flight.",
                j.backlog as u64,
            ),
            counter(
                "journal_writes_total",
                "Journal writes Redis confirmed.",
                j.writes_total,
            ),
            counter(
                "journal_batches_total",
                "Pipelines sent to Redis, heartbeats included.",
                j.batches_total,
            ),
            counter(
                "journal_errors_total",
                "Failed journal round trips to Redis.",
                j.errors_total,
            ),
            counter(
                "journal_refused_total",
                "Client writes refused because Redis was unreachable.",
                j.refused_total,
            ),
            counter(
                "journal_reconnects_total",
                "Times the journal reconnected after losing Redis.",
                j.reconnects_total,
            ),
            gauge(
                "rebuilt_timers",
                "Timers read back from the journal at start.",
                r.total,
            ),
            gauge(
                "rebuild_ms",
                "How long the rebuild at start took, ms.",
                r.elapsed_ms,
            ),
            gauge(
                "overdue_at_rebuild",
                "Timers already due when they were read back at start.",
                r.overdue,
            ),
            gauge(
                "refired_after_restart",
                "Overdue timers that may have fired before the restart too.",
                r.refired,
            ),
            gauge(
                "invalid_journal_entries",
                "Journal entries skipped at start as unreadable.",
                r.invalid,
            ),
        ],
    };
    if j.cluster {
        section.figures.extend([
            gauge(
                "journal_redis_masters",
                "Redis masters the journal writes to (1 for a plain Redis).",
                j.redis_masters,
            ),
            counter(
                "journal_redirects_total",
                "Journal calls a Redis Cluster redirected (MOVED, READONLY) and that were sent again.",
                j.redirects_total,
            ),
            counter(
                "journal_slot_map_refreshes_total",
                "Times the journal read the Redis Cluster slot map.",
                j.slot_map_refreshes_total,
            ),
            counter(
                "journal_slot_map_changes_total",
                "Times the Redis Cluster slot map had other masters than before (a failover seen).",
                j.slot_map_changes_total,
            ),
            gauge(
                "journal_last_slot_map_change_unix_ms",
                "When the journal last saw the slot map change, Unix ms (0: never).",
                j.last_slot_map_change_unix_ms,
            ),
            gauge(
                "journal_partitions_down",
                "Partitions held here whose Redis master does not answer (their writes are refused).",
                j.partitions_down,
            ),
            gauge(
                "journal_replicas",
                "Replicas that must confirm a client write before it is acknowledged (--journal-replicas).",
                u64::from(j.replicas),
            ),
            counter(
                "journal_not_replicated_total",
                "Client writes undone and refused because too few replicas confirmed them in time.",
                j.not_replicated_total,
            ),
        ]);
    }
    section
}

fn tls_section(tls: Option<&Acceptor>) -> Section {
    let state = text("tls", "TLS on the clients' port: on or off.", "off");
    let Some(tls) = tls else {
        return Section {
            title: "TLS",
            figures: vec![state],
        };
    };
    let c = &tls.counters;
    Section {
        title: "TLS",
        figures: vec![
            Figure {
                value: Value::Text("on".into()),
                ..state
            },
            text(
                "tls_client_auth",
                "Client certificates: required or no.",
                if tls.mutual() { "required" } else { "no" },
            ),
            counter(
                "tls_handshakes_total",
                "Client TLS handshakes completed.",
                load(&c.handshakes),
            ),
            counter(
                "tls_handshake_failures_total",
                "Client connections closed for a failed TLS handshake.",
                load(&c.handshake_failures),
            ),
            counter(
                "tls_handshake_timeouts_total",
                "Client connections closed for a TLS handshake not finished in time.",
                load(&c.handshake_timeouts),
            ),
            counter(
                "tls_cert_reloads_total",
                "Certificate reloads (SIGHUP) that succeeded.",
                load(&c.reloads),
            ),
            counter(
                "tls_cert_reload_failures_total",
                "Certificate reloads that failed and kept the previous certificate.",
                load(&c.reload_failures),
            ),
        ],
    }
}

/// `INFO` text: every section, or those named in `wanted` (case-insensitive;
/// `all`, `everything` and `default` mean every one).
pub(crate) fn info_text(sections: &[Section], wanted: &[Vec<u8>]) -> String {
    let every = wanted.is_empty()
        || wanted.iter().any(|w| {
            [&b"all"[..], b"everything", b"default"]
                .iter()
                .any(|all| w.eq_ignore_ascii_case(all))
        });
    let mut out = String::new();
    for section in sections {
        if !every
            && !wanted
                .iter()
                .any(|w| w.eq_ignore_ascii_case(section.title.as_bytes()))
        {
            continue;
        }
        let _ = write!(out, "# {}\r\n", section.title);
        for figure in &section.figures {
            let _ = match &figure.value {
                Value::Number(n, _) => write!(out, "{}:{n}\r\n", figure.name),
                Value::Text(t) => write!(out, "{}:{t}\r\n", figure.name),
            };
        }
        out.push_str("\r\n");
    }
    out
}

/// Prometheus text exposition (version 0.0.4) of every number.
pub(crate) fn prometheus_text(sections: &[Section]) -> String {
    let mut out = String::with_capacity(4096);
    for figure in sections.iter().flat_map(|s| &s.figures) {
        let Value::Number(value, kind) = figure.value else {
            continue;
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let name = figure.name;
        let _ = write!(
            out,
            "# HELP timewheel_{name} {}\n# TYPE timewheel_{name} {kind}\ntimewheel_{name} {value}\n",
            figure.help
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Section> {
        vec![
            Section {
                title: "Server",
                figures: vec![text("version", "v", "1.2.3"), gauge("tick_ms", "t", 1000)],
            },
            Section {
                title: "Timers",
                figures: vec![
                    gauge("pending", "Timers waiting in the wheel.", 3),
                    counter("delivered_total", "d", 7),
                ],
            },
        ]
    }

    #[test]
    fn info_lists_every_figure_under_its_section() {
        let text = info_text(&sample(), &[]);
        assert_eq!(
            text,
            "# Server\r\nversion:1.2.3\r\ntick_ms:1000\r\n\r\n\
             # Timers\r\npending:3\r\ndelivered_total:7\r\n\r\n"
        );
        assert_eq!(info_text(&sample(), &[b"ALL".to_vec()]), text);
    }

    #[test]
    fn info_filters_sections_case_insensitively() {
        assert_eq!(
            info_text(&sample(), &[b"timers".to_vec()]),
            "# Timers\r\npending:3\r\ndelivered_total:7\r\n\r\n"
        );
        assert_eq!(info_text(&sample(), &[b"nosuch".to_vec()]), "");
    }

    #[test]
    fn prometheus_has_help_type_and_value_for_each_number() {
        let text = prometheus_text(&sample());
        assert_eq!(
            text,
            "# HELP timewheel_tick_ms t\n# TYPE timewheel_tick_ms gauge\ntimewheel_tick_ms 1000\n\
             # HELP timewheel_pending Timers waiting in the wheel.\n# TYPE timewheel_pending gauge\ntimewheel_pending 3\n\
             # HELP timewheel_delivered_total d\n# TYPE timewheel_delivered_total counter\ntimewheel_delivered_total 7\n"
        );
    }

    #[test]
    fn every_number_of_a_real_server_is_in_both_renderings() {
        let engine = Engine::builder()
            .manual_ticks()
            .workers(0)
            .build(|_: &crate::Fired| Ok(()))
            .expect("no journal to read");
        let hub = Hub::default();
        let counters = Counters::default();
        // With TLS on, so its figures are checked too.
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let tls = Acceptor::new(super::super::tls::TlsConfig {
            files: crate::tls::ServerFiles {
                cert,
                key,
                client_ca: None,
            },
            handshake_timeout: super::super::tls::DEFAULT_HANDSHAKE_TIMEOUT,
        })
        .unwrap();
        let sections = collect(&Sources {
            engine: &engine,
            hub: &hub,
            counters: &counters,
            started: Instant::now(),
            io_threads: 1,
            tls: Some(&tls),
            cluster: None,
        });
        let info = info_text(&sections, &[]);
        let prometheus = prometheus_text(&sections);
        let mut names = std::collections::HashSet::new();
        for figure in sections.iter().flat_map(|s| &s.figures) {
            assert!(names.insert(figure.name), "{} twice", figure.name);
            assert!(
                info.contains(&format!("\r\n{}:", figure.name)),
                "{}",
                figure.name
            );
            if let Value::Number(..) = figure.value {
                assert!(
                    prometheus.contains(&format!("\ntimewheel_{} ", figure.name)),
                    "{}",
                    figure.name
                );
            }
        }
        assert!(info.contains("\r\njournal:off\r\n"), "{info}");
        assert!(!prometheus.contains("journal"), "{prometheus}");
        engine.shutdown();
    }
}

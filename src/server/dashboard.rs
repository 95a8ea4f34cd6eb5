//! The operators' page, "what falls due when": `GET /` (one HTML file with
//! its script and styles inline, `dashboard.html`, embedded at build time)
//! and `GET /due.json` (what the page shows, refreshed every second), on
//! the `/metrics` listener ([`super::metrics`]).
//!
//! `/due.json` holds the census of pending timers by deadline
//! ([`crate::engine::census`]), every number and state word of `INFO`
//! ([`super::figures`], the one list of figures, so the page and `INFO`
//! never disagree on a name), and in cluster mode the partitions this node
//! holds.
//!
//! Ground rules:
//! - Counters only, never an order id: the census never reads an id, and
//!   the figures hold none. The listener's TLS and client-CA rules apply.
//! - The page loads nothing from anywhere else (no external URL, no build
//!   step) and fetches `due.json` relative to itself, so it works behind a
//!   reverse proxy under any path.
//! - Answering costs one census (one shard lock at a time) and one
//!   `INFO`'s worth of figures; the listener's single thread answers one
//!   request at a time, so however many browsers poll, at most one census
//!   runs.

use std::fmt::Write as _;

use super::figures::{self, Sources, Value};
use super::metrics::{PROMETHEUS, Page};
use crate::cluster::Held;
use crate::engine::census::SECOND_MS;

/// The page, as served.
const PAGE: &str = include_str!("dashboard.html");

/// The answer for `path` on the metrics listener: `/`, `/due.json`,
/// `/metrics`; `None` for any other path.
pub(crate) fn page(path: &str, sources: &Sources<'_>) -> Option<Page> {
    match path {
        "/" => Some(Page {
            content_type: "text/html; charset=utf-8",
            body: PAGE.to_owned(),
        }),
        "/due.json" => Some(Page {
            content_type: "application/json",
            body: due_json(sources),
        }),
        "/metrics" => Some(Page {
            content_type: PROMETHEUS,
            body: figures::prometheus_text(&figures::collect(sources)),
        }),
        _ => None,
    }
}

/// The page's data: the census from the start of the current second (so
/// the per-second buckets are wall-clock seconds, as a 1 s tick fires),
/// the figures, and the partitions held here.
pub(crate) fn due_json(sources: &Sources<'_>) -> String {
    let engine = sources.engine;
    let now_ms = engine.now_ms();
    let census = engine.due_histogram(now_ms - now_ms % SECOND_MS);
    let mut json = String::with_capacity(4096);
    let _ = write!(
        json,
        "{{\"now_ms\":{now_ms},\"from_ms\":{},\"pending\":{},\"overdue\":{},\
         \"inflight\":{},\"retrying\":{},\"later\":{},\"delivered_last_minute\":{}",
        census.from_ms,
        census.pending(),
        census.overdue,
        census.inflight,
        census.retrying,
        census.later,
        engine.delivered_last_minute(now_ms),
    );
    for (name, counts) in [
        ("seconds", &census.seconds[..]),
        ("minutes", &census.minutes[..]),
        ("hours", &census.hours[..]),
    ] {
        let _ = write!(json, ",\"{name}\":{counts:?}");
    }
    json.push_str(",\"figures\":{");
    let sections = figures::collect(sources);
    let all = sections.iter().flat_map(|s| s.figures.iter());
    for (n, figure) in all.enumerate() {
        if n > 0 {
            json.push(',');
        }
        let _ = write!(json, "\"{}\":", figure.name);
        match &figure.value {
            Value::Number(value, _) => {
                let _ = write!(json, "{value}");
            }
            Value::Text(text) => push_string(&mut json, text),
            // One value per thing (a Redis master): `{"host:port": n, ...}`.
            Value::Series { values, .. } => {
                json.push('{');
                for (i, (thing, value)) in values.iter().enumerate() {
                    if i > 0 {
                        json.push(',');
                    }
                    push_string(&mut json, thing);
                    let _ = write!(json, ":{value}");
                }
                json.push('}');
            }
        }
    }
    json.push('}');
    if let Some(cluster) = sources.cluster {
        let ownership = cluster.ownership();
        let held = |wanted: fn(&Held) -> bool| -> Vec<u16> {
            cluster
                .partitions()
                .iter()
                .filter(|&p| wanted(&ownership.state(p)))
                .collect()
        };
        let serving = held(|h| matches!(h, Held::Serving(_)));
        let loading = held(|h| matches!(h, Held::Loading));
        let closing = held(|h| matches!(h, Held::Closing));
        let _ = write!(
            json,
            ",\"partitions\":{{\"count\":{},\"serving\":{serving:?},\"loading\":{loading:?},\
             \"closing\":{closing:?}}}",
            cluster.partitions().count()
        );
    }
    json.push('}');
    json
}

/// `text` as a JSON string.
fn push_string(json: &mut String, text: &str) {
    json.push('"');
    for c in text.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(json, "\\u{:04x}", u32::from(c));
            }
            c => json.push(c),
        }
    }
    json.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut json = String::new();
        push_string(&mut json, "a\"b\\c\nd");
        assert_eq!(json, r#""a\"b\\c\u000ad""#);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // The SVG namespace is a name, not something fetched.
        let page = PAGE.replace("http://www.w3.org/2000/svg", "");
        for needle in ["http://", "https://", "src=", "@import", "url(", "//cdn"] {
            assert!(!page.contains(needle), "the page contains {needle:?}");
        }
    }
}

//! Executes one request for one connection and writes its reply.
//!
//! Ground rules:
//! - Every request gets exactly one reply ((P)(UN)SUBSCRIBE: one per
//!   channel, as Redis does), written in the connection's protocol.
//! - A write the journal has not confirmed yet is answered later: it
//!   returns a [`Deferred`] reply and the connection holds it. A write the
//!   journal refuses is answered `-JOURNAL unavailable` at once, and
//!   nothing changed.
//! - Until a connection authenticates, only AUTH, HELLO, PING and QUIT run.
//! - A RESP2 connection that subscribed may only PING, (UN)SUBSCRIBE,
//!   PUNSUBSCRIBE and QUIT; a RESP3 one may run anything, as in Redis 7.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use mio::{Token, Waker};

use super::Shared;
use super::connection::{Deferred, Session};
use super::hub::Subscription;
use crate::engine::ScheduleError;
use crate::journal::{Ack, AckStatus};
use crate::protocol::{
    Command, CommandError, Credentials, Protocol, Request, write_array_header, write_bulk,
    write_error, write_integer, write_map_header, write_null, write_push_header, write_simple,
};

/// The channel fired timers are published on.
pub const FIRED_CHANNEL: &[u8] = b"fired";

/// The reply to a write while the journal cannot reach Redis.
pub const JOURNAL_UNAVAILABLE: &str =
    "JOURNAL unavailable: Redis is unreachable, nothing was changed; retry later";

/// Failed AUTH attempts after which a connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 10;

/// What a command needs to know about the I/O thread running it.
pub struct IoContext<'a> {
    pub token: Token,
    pub notify: &'a Sender<Token>,
    pub waker: &'a Arc<Waker>,
}

pub fn execute(
    shared: &Shared,
    io: &IoContext<'_>,
    session: &mut Session,
    request: Request,
    out: &mut Vec<u8>,
) -> Option<Deferred> {
    shared
        .counters
        .commands_processed
        .fetch_add(1, Ordering::Relaxed);
    // Compared in place: lowercasing into a new Vec cost an allocation per command.
    let name = request.command_name();
    let is_one_of = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    if !session.authenticated && !is_one_of(&[b"auth", b"hello", b"ping", b"quit"]) {
        write_error(out, "NOAUTH Authentication required.");
        return None;
    }
    let subscribed_resp2 = session.protocol == Protocol::Resp2 && !session.channels.is_empty();
    if subscribed_resp2
        && !is_one_of(&[
            b"ping",
            b"subscribe",
            b"unsubscribe",
            b"punsubscribe",
            b"quit",
        ])
    {
        write_error(
            out,
            format_args!(
                "ERR Can't execute '{}': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT are allowed in this context",
                name.to_ascii_lowercase().escape_ascii()
            ),
        );
        return None;
    }
    let command = match Command::from_request(request) {
        Ok(command) => command,
        Err(error) => {
            write_error(out, error);
            return None;
        }
    };
    let engine = &shared.engine;
    let proto = session.protocol;
    match command {
        Command::Ping { message } if subscribed_resp2 => {
            write_array_header(out, 2);
            write_bulk(out, b"pong");
            write_bulk(out, message.as_deref().unwrap_or_default());
        }
        Command::Ping { message: None } => write_simple(out, "PONG"),
        Command::Ping {
            message: Some(message),
        } => write_bulk(out, &message),
        Command::Add {
            id,
            delay_ms,
            replace,
        } => {
            let deadline = engine.now_ms().saturating_add(delay_ms);
            return schedule_reply(out, &id, deadline, replace, shared);
        }
        Command::AddAt {
            id,
            unix_ms,
            replace,
        } => return schedule_reply(out, &id, unix_ms, replace, shared),
        Command::Cancel { id } => match engine.cancel_nowait(&id) {
            Ok((cancelled, ack)) => return reply_when_durable(shared, out, ack, cancelled as i64),
            Err(ScheduleError::JournalUnavailable) => write_error(out, JOURNAL_UNAVAILABLE),
            Err(error) => write_error(out, format_args!("ERR {error}")),
        },
        Command::Pttl { id } => match engine.deadline(&id) {
            Some(deadline) => {
                let left = deadline.saturating_sub(engine.now_ms());
                write_integer(out, left.min(i64::MAX as u64) as i64);
            }
            None => write_integer(out, -2),
        },
        Command::Count => write_integer(out, engine.len() as i64),
        Command::Info { .. } => write_bulk(out, info(shared).as_bytes()),
        Command::Subscribe { channels } => {
            for channel in channels {
                if !session.channels.contains(&channel) {
                    if channel == FIRED_CHANNEL {
                        let subscription = Arc::new(Subscription::new(
                            io.token,
                            proto,
                            shared.config.max_subscriber_backlog,
                            io.notify.clone(),
                            io.waker.clone(),
                        ));
                        shared.hub.subscribe(subscription.clone());
                        session.subscription = Some(subscription);
                    }
                    session.channels.push(channel.clone());
                }
                subscription_reply(
                    out,
                    proto,
                    b"subscribe",
                    Some(&channel),
                    session.channels.len(),
                );
            }
        }
        Command::Unsubscribe { channels } => {
            let channels = if channels.is_empty() {
                session.channels.clone()
            } else {
                channels
            };
            if channels.is_empty() {
                subscription_reply(out, proto, b"unsubscribe", None, 0);
            }
            for channel in channels {
                session.channels.retain(|c| *c != channel);
                if channel == FIRED_CHANNEL
                    && let Some(subscription) = session.subscription.take()
                {
                    shared.hub.unsubscribe(&subscription);
                }
                subscription_reply(
                    out,
                    proto,
                    b"unsubscribe",
                    Some(&channel),
                    session.channels.len(),
                );
            }
        }
        // No pattern is ever subscribed: confirm as Redis does for none.
        Command::Punsubscribe { patterns } => {
            let count = session.channels.len();
            if patterns.is_empty() {
                subscription_reply(out, proto, b"punsubscribe", None, count);
            }
            for pattern in patterns {
                subscription_reply(out, proto, b"punsubscribe", Some(&pattern), count);
            }
        }
        Command::Quit => {
            write_simple(out, "OK");
            session.closing = true;
        }
        Command::Hello {
            protocol,
            auth,
            setname,
        } => {
            if let Some(credentials) = auth
                && !authenticate(shared, session, &credentials, out)
            {
                return None;
            }
            if !session.authenticated {
                write_error(
                    out,
                    "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
                );
                return None;
            }
            if let Some(protocol) = protocol
                && protocol != session.protocol
            {
                session.protocol = protocol;
                // Pushes are encoded per subscription: re-register in the new
                // protocol, and send what was queued (old encoding) before the
                // HELLO reply, which is the last frame in the old protocol.
                if let Some(old) = session.subscription.take() {
                    let new = Arc::new(Subscription::new(
                        io.token,
                        protocol,
                        shared.config.max_subscriber_backlog,
                        io.notify.clone(),
                        io.waker.clone(),
                    ));
                    shared.hub.replace(&old, new.clone());
                    session.subscription = Some(new);
                    if !old.drain_into(out) {
                        // It had already fallen too far behind.
                        shared
                            .counters
                            .subscriber_overflows
                            .fetch_add(1, Ordering::Relaxed);
                        session.closing = true;
                    }
                }
            }
            if let Some(name) = setname {
                session.name = Some(String::from_utf8_lossy(&name).into_owned());
            }
            hello_reply(out, session);
        }
        Command::Auth(credentials) => {
            if shared.config.requirepass.is_none() && credentials.user.is_none() {
                write_error(
                    out,
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                );
            } else if authenticate(shared, session, &credentials, out) {
                write_simple(out, "OK");
            }
        }
        Command::Command { args } => {
            let sub = args.first().map(|a| a.to_ascii_lowercase());
            match sub.as_deref() {
                Some(b"count") => write_integer(out, 0),
                Some(b"docs") => write_map_header(out, proto, 0),
                _ => write_array_header(out, 0),
            }
        }
        Command::ConfigGet { patterns } => {
            // Enough for redis-benchmark and client libraries that ask.
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
        Command::Config { subcommand, .. } => write_error(
            out,
            format_args!("ERR CONFIG {} is not supported", subcommand.escape_ascii()),
        ),
        Command::Client { subcommand, args } => client(session, &subcommand, &args, out),
        Command::Select { db: 0 } => write_simple(out, "OK"),
        Command::Select { .. } => write_error(out, "ERR DB index is out of range"),
    }
    None
}

/// Writes `value` now if `ack` is already durable, or defers it.
fn reply_when_durable(
    shared: &Shared,
    out: &mut Vec<u8>,
    ack: Ack,
    value: i64,
) -> Option<Deferred> {
    match shared.engine.ack_status(ack) {
        AckStatus::Durable => {
            write_integer(out, value);
            None
        }
        _ => Some(Deferred { ack, value }),
    }
}

fn schedule_reply(
    out: &mut Vec<u8>,
    id: &[u8],
    deadline: u64,
    replace: bool,
    shared: &Shared,
) -> Option<Deferred> {
    let engine = &shared.engine;
    let result = if replace {
        engine.upsert_at_nowait(id, deadline)
    } else {
        engine.schedule_at_nowait(id, deadline)
    };
    match result {
        Ok((deadline, ack)) => {
            return reply_when_durable(shared, out, ack, deadline.min(i64::MAX as u64) as i64);
        }
        Err(ScheduleError::AlreadyScheduled { .. }) => write_error(
            out,
            format_args!("EXISTS {} is already scheduled", id.escape_ascii()),
        ),
        Err(ScheduleError::DelayTooLong) => {
            write_error(out, "ERR deadline is more than 366 days away")
        }
        Err(ScheduleError::InvalidId) => write_error(out, "ERR invalid id"),
        Err(ScheduleError::NotScheduled) => write_error(out, "ERR not scheduled"),
        Err(ScheduleError::ShutDown) => write_error(out, "ERR server is shutting down"),
        Err(ScheduleError::JournalUnavailable) => write_error(out, JOURNAL_UNAVAILABLE),
    }
    None
}

/// `subscribe fired 1`-style confirmation, a push in RESP3.
fn subscription_reply(
    out: &mut Vec<u8>,
    proto: Protocol,
    kind: &[u8],
    channel: Option<&[u8]>,
    count: usize,
) {
    write_push_header(out, proto, 3);
    write_bulk(out, kind);
    match channel {
        Some(channel) => write_bulk(out, channel),
        None => write_null(out, proto),
    }
    write_integer(out, count as i64);
}

/// Checks credentials; on failure writes the error and returns `false`.
fn authenticate(
    shared: &Shared,
    session: &mut Session,
    credentials: &Credentials,
    out: &mut Vec<u8>,
) -> bool {
    let user_ok = credentials.user.as_deref().is_none_or(|u| u == b"default");
    let password_ok = match &shared.config.requirepass {
        // Without a password the default user takes any, as in Redis.
        None => true,
        Some(expected) => constant_time_eq(expected.as_bytes(), &credentials.password),
    };
    if user_ok && password_ok {
        session.authenticated = true;
        return true;
    }
    session.auth_failures += 1;
    shared
        .counters
        .auth_failures
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        client = session.id,
        failures = session.auth_failures,
        "authentication failed"
    );
    write_error(
        out,
        "WRONGPASS invalid username-password pair or user is disabled.",
    );
    if session.auth_failures >= MAX_AUTH_FAILURES {
        session.closing = true;
    }
    false
}

/// Compares without an early exit, so timing does not reveal how much of a
/// guess was right (only, at most, the expected length).
fn constant_time_eq(expected: &[u8], given: &[u8]) -> bool {
    let mut diff = (expected.len() != given.len()) as u8;
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(!e);
    }
    diff == 0
}

fn hello_reply(out: &mut Vec<u8>, session: &Session) {
    let proto = session.protocol;
    write_map_header(out, proto, 7);
    write_bulk(out, b"server");
    write_bulk(out, b"timewheel");
    write_bulk(out, b"version");
    write_bulk(out, env!("CARGO_PKG_VERSION").as_bytes());
    write_bulk(out, b"proto");
    write_integer(out, i64::from(proto.version()));
    write_bulk(out, b"id");
    write_integer(out, session.id as i64);
    write_bulk(out, b"mode");
    write_bulk(out, b"standalone");
    write_bulk(out, b"role");
    write_bulk(out, b"master");
    write_bulk(out, b"modules");
    write_array_header(out, 0);
}

fn client(session: &mut Session, subcommand: &[u8], args: &[Vec<u8>], out: &mut Vec<u8>) {
    match subcommand {
        b"setname" => match args {
            // Same rule as HELLO SETNAME: the name must not break CLIENT LIST.
            [name] if name.iter().all(u8::is_ascii_graphic) => {
                session.name = Some(String::from_utf8_lossy(name).into_owned());
                write_simple(out, "OK");
            }
            [_] => write_error(out, CommandError::InvalidClientName),
            _ => write_error(out, CommandError::WrongArity("client|setname")),
        },
        b"getname" => match &session.name {
            Some(name) => write_bulk(out, name.as_bytes()),
            None => write_null(out, session.protocol),
        },
        b"id" => write_integer(out, session.id as i64),
        b"setinfo" | b"no-evict" | b"no-touch" | b"reply" => write_simple(out, "OK"),
        b"info" => write_bulk(out, client_line(session).as_bytes()),
        b"list" => write_bulk(out, format!("{}\n", client_line(session)).as_bytes()),
        _ => write_error(
            out,
            format_args!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                subcommand.escape_ascii()
            ),
        ),
    }
}

fn client_line(session: &Session) -> String {
    format!(
        "id={} name={} resp={} sub={}",
        session.id,
        session.name.as_deref().unwrap_or(""),
        session.protocol.version(),
        session.channels.len()
    )
}

/// The `INFO` text: `key:value` lines under `# Section` headers.
fn info(shared: &Shared) -> String {
    let stats = shared.engine.stats();
    let c = &shared.counters;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    let sections: [(&str, Vec<(&str, String)>); 5] = [
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
        ("TLS", super::tls::info(shared.config.tls.as_deref())),
    ];
    let mut text = String::new();
    for (title, fields) in sections {
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

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"secret", b""));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"", b"x"));
    }
}

//! `PING`, `QUIT`, `HELLO`, `AUTH`, `CLIENT`, `SELECT`: the connection's own
//! state.
//!
//! Authentication compares passwords in constant time, counts failures and
//! closes a connection after [`MAX_AUTH_FAILURES`] of them.

use std::sync::atomic::Ordering;

use super::IoContext;
use super::pubsub::new_subscription;
use crate::protocol::{
    CommandError, Credentials, Protocol, write_array_header, write_bulk, write_error,
    write_integer, write_map_header, write_null, write_simple,
};
use crate::server::Shared;
use crate::server::auth_log::LogLine;
use crate::server::connection::Session;

/// Failed AUTH attempts after which a connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 10;

/// `PING [message]`; in RESP2 subscribed mode, a `pong` array as Redis sends.
pub(super) fn ping(session: &Session, message: Option<Vec<u8>>, out: &mut Vec<u8>) {
    let subscribed_resp2 = session.protocol == Protocol::Resp2 && !session.channels.is_empty();
    match message {
        _ if subscribed_resp2 => {
            write_array_header(out, 2);
            write_bulk(out, b"pong");
            write_bulk(out, message.as_deref().unwrap_or_default());
        }
        None => write_simple(out, "PONG"),
        Some(message) => write_bulk(out, &message),
    }
}

/// `QUIT`: `+OK`, then the connection closes once it is flushed.
pub(super) fn quit(session: &mut Session, out: &mut Vec<u8>) {
    write_simple(out, "OK");
    session.closing = true;
}

/// `HELLO [protover [AUTH user password] [SETNAME name]]`.
pub(super) fn hello(
    shared: &Shared,
    io: &IoContext<'_>,
    session: &mut Session,
    protocol: Option<Protocol>,
    auth: Option<Credentials>,
    setname: Option<Vec<u8>>,
    out: &mut Vec<u8>,
) {
    if let Some(credentials) = auth
        && !authenticate(shared, session, &credentials, out)
    {
        return;
    }
    if !session.authenticated {
        return write_error(
            out,
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(protocol) = protocol
        && protocol != session.protocol
    {
        switch_protocol(shared, io, session, protocol, out);
    }
    if let Some(name) = setname {
        session.name = Some(String::from_utf8_lossy(&name).into_owned());
    }
    hello_reply(out, session);
}

/// Pushes are encoded per subscription: re-register in the new protocol,
/// and send what was queued (old encoding) before the HELLO reply, which is
/// the last frame in the old protocol.
fn switch_protocol(
    shared: &Shared,
    io: &IoContext<'_>,
    session: &mut Session,
    protocol: Protocol,
    out: &mut Vec<u8>,
) {
    session.protocol = protocol;
    let Some(old) = session.subscription.take() else {
        return;
    };
    let new = new_subscription(shared, io, protocol);
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

/// `AUTH [user] password`.
pub(super) fn auth(
    shared: &Shared,
    session: &mut Session,
    credentials: Credentials,
    out: &mut Vec<u8>,
) {
    if shared.config.requirepass.is_none() && credentials.user.is_none() {
        write_error(
            out,
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
    } else if authenticate(shared, session, &credentials, out) {
        write_simple(out, "OK");
    }
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
    log_auth_failure(shared, session);
    write_error(
        out,
        "WRONGPASS invalid username-password pair or user is disabled.",
    );
    if session.auth_failures >= MAX_AUTH_FAILURES {
        session.closing = true;
    }
    false
}

/// One `WARN` line per client address per `AUTH_LOG_INTERVAL`: a client
/// that reconnects after each wrong password does not flood the log.
fn log_auth_failure(shared: &Shared, session: &Session) {
    let line = match session.peer {
        Some(addr) => shared.auth_log.record(addr, std::time::Instant::now()),
        None => Some(LogLine { failures: 1 }),
    };
    if let Some(line) = line {
        let addr = session
            .peer
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        // `failures`: from this address since its previous line, this one included.
        tracing::warn!(
            addr = %addr,
            client = session.id,
            failures = line.failures,
            "authentication failed"
        );
    }
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

/// `CLIENT subcommand [argument ...]`.
pub(super) fn client(
    session: &mut Session,
    subcommand: &[u8],
    args: &[Vec<u8>],
    out: &mut Vec<u8>,
) {
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
            CommandError::UnknownSubcommand {
                command: "client",
                subcommand: subcommand.to_vec(),
            },
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

/// `SELECT db`: only database 0 exists.
pub(super) fn select(db: i64, out: &mut Vec<u8>) {
    if db == 0 {
        write_simple(out, "OK");
    } else {
        write_error(out, "ERR DB index is out of range");
    }
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

//! Executes one request for one connection and writes its reply.
//!
//! Ground rules:
//! - Every request gets exactly one reply ((P)(UN)SUBSCRIBE: one per
//!   channel, as Redis does), written in the connection's protocol.
//! - A write the journal has not confirmed yet is answered later: it
//!   returns a [`Deferred`] reply and the connection holds it. A write the
//!   journal refuses is answered `-JOURNAL unavailable` at once, and
//!   nothing changed.
//! - Which commands run when is the command table's to say
//!   ([`crate::protocol::table`]): until a connection authenticates, only
//!   commands flagged `NO_AUTH` run; a RESP2 connection that subscribed
//!   runs only those flagged `SUBSCRIBED`; a RESP3 one runs anything, as in
//!   Redis 7.
//!
//! - Cluster mode: a command whose key (by the command table) belongs to a
//!   partition this node does not serve is answered `-MOVED`, `-TRYAGAIN`
//!   or `-CLUSTERDOWN` before it is run or queued ([`cluster::route`]).
//! - Between `MULTI` and `EXEC`, requests are checked and queued, not run
//!   (see [`transactions`]).
//!
//! One module per area: [`timers`], [`pubsub`], [`connection`],
//! [`introspection`], [`transactions`], [`cluster`]; this one checks the
//! gates and dispatches.

mod cluster;
mod connection;
mod introspection;
mod pubsub;
mod timers;
mod transactions;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use mio::{Token, Waker};

use super::Shared;
use super::connection::{Deferred, Session};
use crate::protocol::{Command, Flags, Protocol, Request, lookup, write_error};

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
    let spec = lookup(request.command_name());
    let allowed = |flag| spec.is_some_and(|spec| spec.flags.contains(flag));
    if !session.authenticated && !allowed(Flags::NO_AUTH) {
        write_error(out, "NOAUTH Authentication required.");
        return None;
    }
    let subscribed_resp2 = session.protocol == Protocol::Resp2 && !session.channels.is_empty();
    if subscribed_resp2 && !allowed(Flags::SUBSCRIBED) {
        write_error(
            out,
            format_args!(
                "ERR Can't execute '{}': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT are allowed in this context",
                request.command_name().to_ascii_lowercase().escape_ascii()
            ),
        );
        return None;
    }
    if let Some(cluster) = &shared.config.cluster
        && let Some(spec) = spec
        && !cluster::route(cluster, spec, request.args(), out)
    {
        // As any error while queueing: EXEC then answers -EXECABORT.
        if let Some(transaction) = session.transaction.as_mut() {
            transaction.aborted = true;
        }
        return None;
    }
    if session.transaction.is_some() && !transactions::runs_now(spec) {
        transactions::queue(session, spec, request, out);
        return None;
    }
    let command = match Command::from_row(spec, request) {
        Ok(command) => command,
        Err(error) => {
            write_error(out, error);
            return None;
        }
    };
    dispatch(shared, io, session, command, out)
}

/// Runs a parsed command in its area's module.
fn dispatch(
    shared: &Shared,
    io: &IoContext<'_>,
    session: &mut Session,
    command: Command,
    out: &mut Vec<u8>,
) -> Option<Deferred> {
    match command {
        Command::Add {
            id,
            delay_ms,
            replace,
        } => return timers::add(shared, out, &id, delay_ms, replace),
        Command::AddAt {
            id,
            unix_ms,
            replace,
        } => return timers::schedule(shared, out, &id, unix_ms, replace),
        Command::Cancel { id } => return timers::cancel(shared, out, &id),
        Command::Pttl { id } => timers::pttl(shared, out, &id),
        Command::Count => timers::count(shared, out),
        Command::Subscribe { channels } => pubsub::subscribe(shared, io, session, channels, out),
        Command::Unsubscribe { channels } => pubsub::unsubscribe(shared, session, channels, out),
        Command::Punsubscribe { patterns } => pubsub::punsubscribe(session, patterns, out),
        Command::Ping { message } => connection::ping(session, message, out),
        Command::Quit => connection::quit(session, out),
        Command::Hello {
            protocol,
            auth,
            setname,
        } => connection::hello(shared, io, session, protocol, auth, setname, out),
        Command::Auth(credentials) => connection::auth(shared, session, credentials, out),
        Command::Cluster { subcommand, args } => {
            cluster::cluster(shared, session.protocol, &subcommand, &args, out)
        }
        Command::Client { subcommand, args } => {
            connection::client(session, &subcommand, &args, out)
        }
        Command::Select { db } => connection::select(db, out),
        Command::Multi => transactions::multi(session, out),
        Command::Exec => return transactions::exec(shared, io, session, out),
        Command::Discard => transactions::discard(session, out),
        Command::Watch => transactions::watch(session, out),
        Command::Unwatch => crate::protocol::write_simple(out, "OK"),
        Command::Info { sections } => introspection::info(shared, &sections, out),
        Command::Command { args } => introspection::command(session.protocol, &args, out),
        Command::ConfigGet { patterns } => {
            introspection::config_get(shared, session.protocol, &patterns, out)
        }
        Command::Config { subcommand, .. } => introspection::config_other(&subcommand, out),
    }
    None
}

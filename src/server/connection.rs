//! One client connection: its socket, its buffers and its session state.
//!
//! Ground rules:
//! - Memory per connection is bounded: input holds at most one incomplete
//!   request (the parser rejects anything over its limits) plus one read;
//!   output stops growing because we stop reading and parsing while more
//!   than [`OUTPUT_HIGH_WATER`] bytes wait to be sent; a subscriber's
//!   pushes are capped by the hub (see [`super::hub`]).
//! - One call to [`Connection::drive`] does a bounded amount of work, so one
//!   busy client cannot starve the others on its I/O thread.
//! - Replies go out in request order. A write waiting for the journal
//!   holds its reply (and every reply after it) in `held` until Redis has
//!   it; at most [`MAX_HELD`] writes wait per connection, then reading
//!   pauses, so a client's backlog is bounded.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use super::hub::Subscription;
use super::tls::Transport;
use crate::journal::{Ack, AckStatus};
use crate::protocol::{self, Protocol, write_error, write_integer};

/// Stop reading from a client while this much output is unsent.
pub const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// Reads per `drive` call before yielding to other connections.
const READS_PER_DRIVE: usize = 16;

const READ_CHUNK: usize = 64 * 1024;

/// Buffer capacity an idle connection keeps.
const KEPT_CAPACITY: usize = 16 * 1024;

/// Journal writes one connection may have waiting before reading pauses.
pub const MAX_HELD: usize = 4096;

/// Cluster mode: the partition moved to another node before the write
/// reached Redis, which refused it (fencing). Clients retry `TRYAGAIN`.
pub const FENCED: &str = "TRYAGAIN the partition moved to another node before this write was journaled; nothing was changed";

/// Cluster mode with `--journal-replicas N`: fewer than N replicas of the
/// partition's Redis master confirmed the write in time; it was undone.
pub const NOT_REPLICATED: &str = "JOURNAL not replicated: fewer than --journal-replicas replicas of the partition's Redis master confirmed this write in time; it was undone, nothing was changed";

/// The error a write gets when the journal gave up on it at shutdown.
pub const JOURNAL_GAVE_UP: &str =
    "JOURNAL unavailable: Redis did not confirm the write before shutdown";

/// A reply that waits for the journal: written once `ack` is settled.
#[derive(Debug, Clone)]
pub struct Deferred {
    /// The last journal write the reply waits for.
    pub ack: Ack,
    pub reply: Pending,
}

impl Deferred {
    /// The integer of one write (`ADD`'s deadline, `CANCEL`'s 0 or 1).
    pub fn integer(ack: Ack, value: i64) -> Deferred {
        Deferred {
            ack,
            reply: Pending::Integer(value),
        }
    }

    /// Whether every write the reply waits for is settled (in cluster mode
    /// writes to different partitions may settle out of order).
    pub fn is_settled(&self, status: &impl Fn(Ack) -> AckStatus) -> bool {
        match &self.reply {
            Pending::Integer(_) => status(self.ack) != AckStatus::Waiting,
            Pending::Array(parts) => parts.iter().all(|part| match part {
                Part::Ready(_) => true,
                Part::Held(ack, _) => status(*ack) != AckStatus::Waiting,
            }),
        }
    }

    /// Writes the reply once it [is settled](Deferred::is_settled).
    pub fn write(&self, out: &mut Vec<u8>, status: &impl Fn(Ack) -> AckStatus) {
        let integer = |out: &mut Vec<u8>, ack, value| match status(ack) {
            AckStatus::Durable => write_integer(out, value),
            AckStatus::Waiting | AckStatus::Failed => write_error(out, JOURNAL_GAVE_UP),
            AckStatus::Fenced => write_error(out, FENCED),
            AckStatus::NotReplicated => write_error(out, NOT_REPLICATED),
        };
        match &self.reply {
            Pending::Integer(value) => integer(out, self.ack, *value),
            Pending::Array(parts) => {
                protocol::write_array_header(out, parts.len());
                for part in parts {
                    match part {
                        Part::Ready(bytes) => out.extend_from_slice(bytes),
                        Part::Held(ack, value) => integer(out, *ack, *value),
                    }
                }
            }
        }
    }
}

/// What a [`Deferred`] reply writes once its write is settled.
#[derive(Debug, Clone)]
pub enum Pending {
    /// One write's integer; [`JOURNAL_GAVE_UP`] if the journal gave up on it.
    Integer(i64),
    /// `EXEC`'s array: each queued command's reply, in order.
    Array(Vec<Part>),
}

/// One element of an `EXEC` reply.
#[derive(Debug, Clone)]
pub enum Part {
    /// Written as it is.
    Ready(Vec<u8>),
    /// A write's integer, once `ack` is settled.
    Held(Ack, i64),
}

/// A deferred reply and the replies of the requests after it.
#[derive(Debug)]
struct Held {
    reply: Deferred,
    after: Vec<u8>,
}

/// What a command may change about its connection.
#[derive(Debug)]
pub struct Session {
    pub protocol: Protocol,
    pub authenticated: bool,
    pub auth_failures: u32,
    pub name: Option<String>,
    /// Channels subscribed to, in order.
    pub channels: Vec<Vec<u8>>,
    /// Set while subscribed to `fired`.
    pub subscription: Option<Arc<Subscription>>,
    /// Close once the output is flushed (QUIT, protocol error).
    pub closing: bool,
    pub id: u64,
    /// The client's address, for the rate-limited AUTH failure log.
    pub peer: Option<std::net::IpAddr>,
    /// Between `MULTI` and `EXEC`/`DISCARD`: the commands queued so far.
    pub transaction: Option<Transaction>,
}

/// Commands queued after `MULTI`.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Checked for syntax, run at `EXEC` in this order.
    pub queued: Vec<protocol::Command>,
    /// A command was refused while queueing: `EXEC` answers `-EXECABORT`.
    pub aborted: bool,
}

/// What the event loop should do with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Drive {
    /// Waiting for the socket.
    Idle,
    /// Work remains; drive again soon.
    More,
    /// Done: deregister and drop.
    Close,
}

pub struct Connection {
    pub stream: Transport,
    pub session: Session,
    pub last_active: Instant,
    /// Protocol errors since the event loop last collected them.
    pub protocol_errors: u64,
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    eof: bool,
    held: VecDeque<Held>,
    /// Bytes in `held[..].after`.
    held_bytes: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("session", &self.session)
            .field("input", &self.input.len())
            .field("unsent", &self.unsent())
            .field("held", &self.held.len())
            .finish()
    }
}

impl Connection {
    pub fn new(stream: Transport, id: u64, authenticated: bool) -> Connection {
        let peer = stream.peer_addr().ok().map(|addr| addr.ip());
        Connection {
            stream,
            session: Session {
                protocol: Protocol::Resp2,
                authenticated,
                auth_failures: 0,
                name: None,
                channels: Vec::new(),
                subscription: None,
                closing: false,
                id,
                peer,
                transaction: None,
            },
            last_active: Instant::now(),
            protocol_errors: 0,
            input: Vec::new(),
            output: Vec::new(),
            written: 0,
            eof: false,
            held: VecDeque::new(),
            held_bytes: 0,
        }
    }

    /// Replies waiting for the journal.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether the first held reply can go out now.
    pub fn can_release(&self, status: &impl Fn(Ack) -> AckStatus) -> bool {
        self.held
            .front()
            .is_some_and(|h| h.reply.is_settled(status))
    }

    /// Moves held replies whose write is settled into the output, in order.
    fn release_held(&mut self, status: &impl Fn(Ack) -> AckStatus) {
        while let Some(front) = self.held.front() {
            if !front.reply.is_settled(status) {
                break;
            }
            front.reply.write(&mut self.output, status);
            if let Some(held) = self.held.pop_front() {
                self.held_bytes -= held.after.len();
                self.output.extend_from_slice(&held.after);
            }
        }
    }

    pub fn unsent(&self) -> usize {
        self.output.len() - self.written
    }

    /// Nothing left to send: no output, and (TLS) no record waiting for the socket.
    pub fn all_sent(&self) -> bool {
        self.unsent() == 0 && !self.stream.pending()
    }

    /// Appends bytes to send (pushes for a subscriber).
    pub fn output_mut(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Reads, executes and writes until the socket would block, the client
    /// is done, or this turn's budget is spent. `execute` runs one request
    /// and appends its reply, or returns it as [`Deferred`]; `status` says
    /// where a journal write stands.
    pub fn drive(
        &mut self,
        scratch: &mut [u8],
        mut execute: impl FnMut(&mut Session, protocol::Request, &mut Vec<u8>) -> Option<Deferred>,
        status: impl Fn(Ack) -> AckStatus,
    ) -> io::Result<Drive> {
        for _ in 0..READS_PER_DRIVE {
            self.release_held(&status);
            let held_back = self.process_input(&mut execute);
            self.release_held(&status);
            self.flush()?;
            if self.session.closing || self.eof {
                return Ok(if self.all_sent() && self.held.is_empty() {
                    Drive::Close
                } else {
                    Drive::Idle
                });
            }
            if self.held.len() >= MAX_HELD {
                // Resumed when the journal confirms.
                return Ok(Drive::Idle);
            }
            if self.unsent() + self.held_bytes > OUTPUT_HIGH_WATER {
                // Resumed by the next writable event.
                return Ok(Drive::Idle);
            }
            if held_back {
                // The socket took the output: answer what is buffered before
                // reading, as no event may come for it.
                continue;
            }
            let chunk = READ_CHUNK.min(scratch.len());
            let read = &mut scratch[..chunk];
            match self.stream.read(read) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.last_active = Instant::now();
                    self.input.extend_from_slice(&read[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drive::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Drive::More)
    }

    /// Parses and executes every complete request buffered, unless output
    /// is backed up; `true` if it stopped for the output, with input left.
    fn process_input(
        &mut self,
        execute: &mut impl FnMut(&mut Session, protocol::Request, &mut Vec<u8>) -> Option<Deferred>,
    ) -> bool {
        let mut consumed = 0;
        while !self.session.closing && !self.backed_up() {
            // Behind a held reply, replies queue after it.
            let behind_held = !self.held.is_empty();
            let out = match self.held.back_mut() {
                Some(held) => &mut held.after,
                None => &mut self.output,
            };
            let before = out.len();
            let mut deferred = None;
            match protocol::parse_request(&self.input[consumed..]) {
                Ok(Some((request, used))) => {
                    consumed += used;
                    deferred = execute(&mut self.session, request, out);
                }
                Ok(None) => break,
                Err(error) => {
                    protocol::write_protocol_error(out, &error);
                    self.protocol_errors += 1;
                    self.session.closing = true;
                    consumed = self.input.len();
                }
            }
            if behind_held {
                self.held_bytes += out.len() - before;
            }
            if let Some(reply) = deferred {
                self.held.push_back(Held {
                    reply,
                    after: Vec::new(),
                });
            }
        }
        self.input.drain(..consumed);
        self.input.shrink_to(KEPT_CAPACITY.max(self.input.len()));
        !self.session.closing && self.backed_up() && !self.input.is_empty()
    }

    /// Too much is waiting to go out: stop executing requests.
    fn backed_up(&self) -> bool {
        self.unsent() + self.held_bytes > OUTPUT_HIGH_WATER || self.held.len() >= MAX_HELD
    }

    /// Writes as much output as the socket takes.
    pub fn flush(&mut self) -> io::Result<()> {
        // TLS records from an earlier turn go first (a no-op for plain TCP).
        self.stream.flush()?;
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
            // Give back what a burst grew, so idle clients stay small.
            self.output.shrink_to(KEPT_CAPACITY);
        } else if self.written > OUTPUT_HIGH_WATER {
            self.output.drain(..self.written);
            self.written = 0;
        }
        Ok(())
    }
}

//! The network server: a `mio` event loop speaking the RESP-compatible
//! line protocol (see `docs/protocol.md`).
//!
//! ```text
//!  listener ─► I/O thread 0 ─┬─ accepts, hands sockets round-robin ─► I/O thread 1..N
//!                            └─ each I/O thread: own Poll, own connections
//!  engine workers ─► Hub ─► subscriber queues ─► waker ─► owning I/O thread
//!  metrics thread (optional, `metrics.rs`): blocking `GET /metrics`
//!  with TLS (optional, `tls.rs`): every socket wrapped in a rustls session
//! ```
//!
//! Ground rules:
//! - A connection belongs to one I/O thread for its whole life; only that
//!   thread touches its buffers. Other threads reach it through the hub's
//!   queue plus the thread's `Waker`.
//! - Commands run inline on the I/O thread; engine calls take one shard
//!   lock for O(1) work, so they never stall the loop. Journal writes do
//!   not wait either: the reply is held, and the journal's ack listener
//!   wakes the thread, which then drives the connections that wait.
//! - Shutdown (the `shutdown` channel fires or closes): stop accepting,
//!   answer what was already received while clients keep reading it (until
//!   [`SHUTDOWN_FLUSH`] passes without progress, at most
//!   [`SHUTDOWN_MAX`]), then shut the engine down.

mod auth_log;
mod commands;
mod connection;
mod dashboard;
mod figures;
mod hub;
mod metrics;
pub mod serve;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use hashbrown::{HashMap, HashSet};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::engine::Engine;
use connection::{Connection, Drive};
use hub::Hub;
pub use serve::{Delivery, ServeConfig, ServeError, reload_on_sighup, serve, shutdown_on_signals};
use tls::Transport;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// How long shutdown goes on answering requests already sent, and waiting
/// for replies to drain, without any progress (no request answered, no
/// byte read by a client).
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The longest shutdown answers and drains, however steadily clients read.
pub const SHUTDOWN_MAX: Duration = Duration::from_secs(30);

/// Server settings (the `serve` flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// I/O threads, each with its own poll loop; at least 1.
    pub io_threads: usize,
    /// Connections served at once; more are answered
    /// `-ERR max number of clients reached` and closed.
    pub max_clients: usize,
    /// Close connections idle this long (not subscribers); `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Bytes a subscriber may fall behind before it is disconnected.
    pub max_subscriber_backlog: usize,
    /// Password clients must `AUTH` with; `None`: no authentication.
    pub requirepass: Option<String>,
    /// TLS on the listening port (`--tls-cert`); `None`: plain TCP.
    pub tls: Option<Arc<tls::Acceptor>>,
    /// Cluster mode: ids of partitions served elsewhere are redirected.
    pub cluster: Option<crate::cluster::Cluster>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            io_threads: 1,
            max_clients: 10_000,
            idle_timeout: None,
            max_subscriber_backlog: 16 * 1024 * 1024,
            requirepass: None,
            tls: None,
            cluster: None,
        }
    }
}

/// Server-wide counters shown by `INFO`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connected_clients: AtomicUsize,
    pub total_connections: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub commands_processed: AtomicU64,
    pub subscriber_overflows: AtomicU64,
    pub idle_closed: AtomicU64,
    pub auth_failures: AtomicU64,
    pub protocol_errors: AtomicU64,
}

/// State every I/O thread shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub engine: Engine,
    pub hub: Arc<Hub>,
    pub config: Config,
    pub counters: Arc<Counters>,
    /// Failed AUTHs, logged at most once per interval per client address.
    pub(crate) auth_log: auth_log::AuthFailureLog,
    pub started: Instant,
    next_client_id: AtomicU64,
    stopping: AtomicBool,
    /// I/O threads done answering what they had received at shutdown.
    flushed: AtomicUsize,
    /// The engine (and its journal) has shut down: every held reply is
    /// settled, confirmed or given up.
    engine_closed: AtomicBool,
}

/// Runs the server on `listener` until `shutdown` fires or is dropped.
/// `engine`'s handler should publish to `hub` (see [`hub::Hub::publish`]);
/// the engine is shut down before this returns.
pub(crate) fn run(
    listener: std::net::TcpListener,
    engine: Engine,
    hub: Arc<Hub>,
    counters: Arc<Counters>,
    config: Config,
    shutdown: Receiver<()>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener);
    let shared = Arc::new(Shared {
        engine,
        hub,
        config: Config {
            io_threads: config.io_threads.max(1),
            ..config
        },
        counters,
        auth_log: auth_log::AuthFailureLog::default(),
        started: Instant::now(),
        next_client_id: AtomicU64::new(1),
        stopping: AtomicBool::new(false),
        flushed: AtomicUsize::new(0),
        engine_closed: AtomicBool::new(false),
    });

    let (threads, handles) = start_io_threads(&shared, listener)?;
    let _ = shutdown.recv();
    shut_down(&shared, threads, &handles)
}

/// A running I/O thread.
type IoThread = JoinHandle<io::Result<()>>;

/// One I/O thread per `config.io_threads`, the first one also accepting.
fn start_io_threads(
    shared: &Arc<Shared>,
    listener: TcpListener,
) -> io::Result<(Vec<IoThread>, Vec<Handle>)> {
    let mut loops = Vec::new();
    for n in 0..shared.config.io_threads {
        loops.push(IoLoop::new(n, shared.clone())?);
    }
    let handles: Vec<Handle> = loops.iter().map(IoLoop::handle).collect();
    for handle in &handles {
        let waker = handle.waker.clone();
        shared.engine.on_durable(move || {
            let _ = waker.wake();
        });
    }
    let mut threads = Vec::new();
    let mut listener = Some(listener);
    for mut io_loop in loops {
        if let Some(mut listener) = listener.take() {
            io_loop
                .poll
                .registry()
                .register(&mut listener, LISTENER, Interest::READABLE)?;
            io_loop.acceptor = Some((listener, handles.clone()));
        }
        threads.push(
            std::thread::Builder::new()
                .name(format!("timewheel-io-{}", io_loop.index))
                .spawn(move || io_loop.run())?,
        );
    }
    Ok((threads, handles))
}

/// Stops accepting, lets the I/O threads answer what they received, shuts
/// the engine down, then joins the threads.
fn shut_down(shared: &Shared, threads: Vec<IoThread>, handles: &[Handle]) -> io::Result<()> {
    tracing::info!("shutting down: no new connections, answering what was received");
    shared.stopping.store(true, Ordering::SeqCst);
    for handle in handles {
        let _ = handle.waker.wake();
    }
    // Shut the engine down once the I/O threads have answered what they
    // could, but before they close: writes still waiting for a Redis that is
    // down are answered when the journal gives up on them.
    let flush_deadline = Instant::now() + SHUTDOWN_MAX + Duration::from_secs(1);
    while shared.flushed.load(Ordering::SeqCst) < threads.len()
        && !threads.iter().all(JoinHandle::is_finished)
        && Instant::now() < flush_deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let left = shared.engine.shutdown();
    shared.engine_closed.store(true, Ordering::SeqCst);
    for handle in handles {
        let _ = handle.waker.wake();
    }
    let mut result = Ok(());
    for thread in threads {
        match thread.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(io::Error::other("an I/O thread panicked")),
        }
    }
    if shared.engine.journal().is_some() {
        tracing::info!(
            pending = left.len(),
            "timers still pending stay in the journal for the next start"
        );
    } else if !left.is_empty() {
        tracing::warn!(
            pending = left.len(),
            "timers still pending at shutdown are dropped (they are only in memory)"
        );
    }
    result
}

/// How other threads reach an I/O thread.
#[derive(Clone)]
struct Handle {
    waker: Arc<Waker>,
    new_connections: Sender<TcpStream>,
}

struct IoLoop {
    index: usize,
    poll: Poll,
    shared: Arc<Shared>,
    waker: Arc<Waker>,
    connections: HashMap<Token, Connection>,
    next_token: usize,
    new_rx: Receiver<TcpStream>,
    new_tx: Sender<TcpStream>,
    notify_rx: Receiver<Token>,
    notify_tx: Sender<Token>,
    /// Only on thread 0: the listener and every thread's handle.
    acceptor: Option<(TcpListener, Vec<Handle>)>,
    next_target: usize,
    /// Connections with work left over from their last turn.
    ready: Vec<Token>,
    /// Connections with replies held for the journal.
    waiting: HashSet<Token>,
}

impl IoLoop {
    fn new(index: usize, shared: Arc<Shared>) -> io::Result<IoLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (new_tx, new_rx) = crossbeam_channel::unbounded();
        let (notify_tx, notify_rx) = crossbeam_channel::unbounded();
        Ok(IoLoop {
            index,
            poll,
            shared,
            waker,
            connections: HashMap::new(),
            next_token: 0,
            new_rx,
            new_tx,
            notify_rx,
            notify_tx,
            acceptor: None,
            next_target: 0,
            ready: Vec::new(),
            waiting: HashSet::new(),
        })
    }

    fn handle(&self) -> Handle {
        Handle {
            waker: self.waker.clone(),
            new_connections: self.new_tx.clone(),
        }
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; 64 * 1024];
        let mut last_sweep = Instant::now();
        loop {
            let timeout = if self.ready.is_empty() {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if self.shared.stopping.load(Ordering::SeqCst) {
                return self.finish(&mut scratch);
            }
            let mut to_drive = std::mem::take(&mut self.ready);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept()?,
                    WAKER => {}
                    token => to_drive.push(token),
                }
            }
            self.adopt_new_connections()?;
            to_drive.extend(self.take_notified());
            to_drive.extend(self.take_released());
            to_drive.sort_unstable();
            to_drive.dedup();
            for token in to_drive {
                self.drive(token, &mut scratch);
            }
            if last_sweep.elapsed() >= Duration::from_secs(1) {
                last_sweep = Instant::now();
                self.close_idle();
            }
        }
    }

    fn accept(&mut self) -> io::Result<()> {
        let Some((listener, handles)) = &mut self.acceptor else {
            return Ok(());
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _addr)) => {
                    let counters = &self.shared.counters;
                    let connected = counters.connected_clients.fetch_add(1, Ordering::SeqCst);
                    if connected >= self.shared.config.max_clients {
                        counters.connected_clients.fetch_sub(1, Ordering::SeqCst);
                        counters
                            .rejected_connections
                            .fetch_add(1, Ordering::Relaxed);
                        // Best effort: the socket buffer of a fresh connection has
                        // room. A TLS client would only see garbage: just close.
                        if self.shared.config.tls.is_none() {
                            let _ = io::Write::write(
                                &mut stream,
                                b"-ERR max number of clients reached\r\n",
                            );
                        }
                        continue;
                    }
                    counters.total_connections.fetch_add(1, Ordering::Relaxed);
                    let target = &handles[self.next_target % handles.len()];
                    self.next_target += 1;
                    if target.new_connections.send(stream).is_ok() {
                        let _ = target.waker.wake();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors and the like: keep serving existing clients.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return Ok(());
                }
            }
        }
    }

    fn adopt_new_connections(&mut self) -> io::Result<()> {
        while let Ok(stream) = self.new_rx.try_recv() {
            let _ = stream.set_nodelay(true);
            let mut stream = match &self.shared.config.tls {
                None => Transport::Plain(stream),
                Some(acceptor) => match acceptor.accept(stream) {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "TLS session could not be set up; connection closed");
                        self.shared
                            .counters
                            .connected_clients
                            .fetch_sub(1, Ordering::SeqCst);
                        continue;
                    }
                },
            };
            let token = Token(self.next_token);
            self.next_token += 1;
            self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let id = self.shared.next_client_id.fetch_add(1, Ordering::Relaxed);
            let authenticated = self.shared.config.requirepass.is_none();
            self.connections
                .insert(token, Connection::new(stream, id, authenticated));
            // Data may have arrived before registration; look now.
            self.ready.push(token);
        }
        Ok(())
    }

    /// Tokens of subscribers whose queue got messages.
    fn take_notified(&mut self) -> Vec<Token> {
        let mut tokens = Vec::new();
        while let Ok(token) = self.notify_rx.try_recv() {
            if self.connections.contains_key(&token) {
                tokens.push(token);
            }
        }
        tokens
    }

    /// Waiting connections whose first held reply can go out.
    fn take_released(&mut self) -> Vec<Token> {
        let engine = &self.shared.engine;
        let status = |ack| engine.ack_status(ack);
        let connections = &self.connections;
        let mut released = Vec::new();
        self.waiting.retain(|token| match connections.get(token) {
            Some(conn) if conn.can_release(&status) => {
                released.push(*token);
                false
            }
            Some(conn) => conn.held() > 0,
            None => false,
        });
        released
    }

    fn drive(&mut self, token: Token, scratch: &mut [u8]) {
        let Some(conn) = self.connections.get_mut(&token) else {
            return;
        };
        match pump_subscription(conn, self.shared.config.max_subscriber_backlog) {
            Ok(true) => {}
            Ok(false) => {
                self.shared
                    .counters
                    .subscriber_overflows
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    client = conn.session.id,
                    "subscriber fell too far behind; disconnected"
                );
                self.close(token);
                return;
            }
            Err(_) => {
                self.close(token);
                return;
            }
        }
        let io = commands::IoContext {
            token,
            notify: &self.notify_tx,
            waker: &self.waker,
        };
        let shared = &self.shared;
        let outcome = conn.drive(
            scratch,
            |session, request, out| commands::execute(shared, &io, session, request, out),
            |ack| shared.engine.ack_status(ack),
        );
        if conn.held() > 0 {
            self.waiting.insert(token);
        }
        let protocol_errors = std::mem::take(&mut conn.protocol_errors);
        if protocol_errors > 0 {
            self.shared
                .counters
                .protocol_errors
                .fetch_add(protocol_errors, Ordering::Relaxed);
        }
        if let Some(acceptor) = &self.shared.config.tls {
            if conn.stream.take_handshake_done() {
                acceptor.counters.handshakes.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(error) = conn.stream.handshake_failure() {
                acceptor.note_failure(conn.session.id, Some(error));
            }
        }
        match outcome {
            Ok(Drive::Idle) => {}
            Ok(Drive::More) => self.ready.push(token),
            Ok(Drive::Close) | Err(_) => self.close(token),
        }
    }

    fn close(&mut self, token: Token) {
        if let Some(mut conn) = self.connections.remove(&token) {
            if let Some(sub) = conn.session.subscription.take() {
                self.shared.hub.unsubscribe(&sub);
            }
            conn.stream.close_notify();
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.shared
                .counters
                .connected_clients
                .fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn close_idle(&mut self) {
        if let Some(acceptor) = self.shared.config.tls.clone() {
            let timeout = acceptor.handshake_timeout();
            let slow: Vec<(Token, u64)> = self
                .connections
                .iter()
                .filter(|(_, c)| c.stream.handshake_expired(timeout))
                .map(|(t, c)| (*t, c.session.id))
                .collect();
            for (token, client) in slow {
                acceptor.note_failure(client, None);
                self.close(token);
            }
        }
        let Some(timeout) = self.shared.config.idle_timeout else {
            return;
        };
        let idle: Vec<Token> = self
            .connections
            .iter()
            .filter(|(_, c)| c.session.subscription.is_none() && c.last_active.elapsed() > timeout)
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            self.shared
                .counters
                .idle_closed
                .fetch_add(1, Ordering::Relaxed);
            self.close(token);
        }
    }

    /// Shutdown: keep answering what clients already sent, which may wait
    /// behind output the client has still to read, until every connection
    /// is quiet (twice in a row, for bytes still on their way), or nothing
    /// moved for [`SHUTDOWN_FLUSH`], or [`SHUTDOWN_MAX`] has passed; then
    /// close everything.
    fn finish(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        if let Some((mut listener, _)) = self.acceptor.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let started = Instant::now();
        let mut deadline = started + SHUTDOWN_FLUSH;
        let mut quiet_rounds = 0;
        let mut last_progress = None;
        while quiet_rounds < 2 && Instant::now() < deadline {
            self.ready.clear();
            let tokens: Vec<Token> = self.connections.keys().copied().collect();
            for token in tokens {
                self.drive(token, scratch);
            }
            // A client still reading its replies (or requests still being
            // answered) is progress: it moves the deadline, up to the cap.
            let progress = (
                self.shared
                    .counters
                    .commands_processed
                    .load(Ordering::Relaxed),
                self.connections
                    .values()
                    .map(Connection::unsent)
                    .sum::<usize>(),
            );
            if last_progress.replace(progress) != Some(progress) {
                deadline = (Instant::now() + SHUTDOWN_FLUSH).min(started + SHUTDOWN_MAX);
            }
            let quiet = self.ready.is_empty()
                && self
                    .connections
                    .values()
                    .all(|c| c.all_sent() && c.held() == 0);
            quiet_rounds = if quiet { quiet_rounds + 1 } else { 0 };
            std::thread::sleep(Duration::from_millis(5));
        }
        // Replies held for a journal write are settled by the engine's
        // shutdown (confirmed, or given up): wait for it, then send them.
        self.shared.flushed.fetch_add(1, Ordering::SeqCst);
        let mut send_until: Option<Instant> = None;
        loop {
            let tokens: Vec<Token> = self.connections.keys().copied().collect();
            for token in tokens {
                self.drive(token, scratch);
            }
            let held = self.connections.values().any(|c| c.held() > 0);
            let unsent = self.connections.values().any(|c| !c.all_sent());
            if self.shared.engine_closed.load(Ordering::SeqCst) {
                let until = *send_until.get_or_insert_with(|| Instant::now() + SHUTDOWN_FLUSH);
                if !(held || unsent) || Instant::now() >= until {
                    break;
                }
            } else if !held {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let tokens: Vec<Token> = self.connections.keys().copied().collect();
        for token in tokens {
            self.close(token);
        }
        Ok(())
    }
}

/// Moves a subscriber's queued messages into its output while it is less
/// than `limit` bytes behind; `Ok(false)` if the queue overflowed (the client
/// fell too far behind and must be disconnected).
///
/// Runs on every turn of the connection, not only when the hub notifies: the
/// hub notifies only when the queue goes from empty to non-empty, so messages
/// held back while the output was full move once the client has read enough
/// (the socket's writable event brings the connection back here).
fn pump_subscription(conn: &mut Connection, limit: usize) -> io::Result<bool> {
    let Some(sub) = conn.session.subscription.clone() else {
        return Ok(true);
    };
    if conn.unsent() >= limit {
        // Still that far behind after this means the socket is full, and
        // its writable event will bring us back.
        conn.flush()?;
    }
    if conn.unsent() < limit {
        Ok(sub.drain_into(conn.output_mut()))
    } else {
        Ok(!sub.overflowed())
    }
}

/// Binds `addr` (port 0 picks a free port).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr)
}

//! TLS for client connections (and `/metrics`): rustls driven by the `mio`
//! event loop, after rustls' `tlsserver-mio` example.
//!
//! ```text
//!  socket ──read_tls──► ServerConnection ──reader()──► Connection input
//!  Connection output ──writer()──► ServerConnection ──write_tls──► socket
//! ```
//!
//! Ground rules:
//! - [`Transport`] looks like a non-blocking socket to `Connection`: `read`
//!   returns plaintext or `WouldBlock` only once the socket itself would
//!   block (mio's events are edge-triggered), and `write` refuses more
//!   plaintext (`WouldBlock`) while earlier records still wait for the
//!   socket, so output backpressure works as with plain TCP.
//! - A failed handshake (plaintext on the TLS port, an untrusted or
//!   expired client certificate, a missing one under mutual TLS, garbage)
//!   closes that connection only; it is counted and logged at `warn`, at
//!   most one line per [`LOG_EVERY`] with the count of those not logged,
//!   so a scanner cannot flood the log. A handshake not done within the
//!   acceptor's timeout is closed the same way.
//! - [`Acceptor::reload`] (on `SIGHUP`) reads the files again and swaps
//!   the configuration new handshakes use; open connections keep theirs. A
//!   reload that fails keeps the previous certificate and says why.
//! - Never logs key material; a client certificate appears in logs only as
//!   the error rustls gives for it.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use parking_lot::{Mutex, RwLock};
use rustls::{ServerConfig, ServerConnection};

use crate::tls::{ServerFiles, TlsError, server_config};

/// Default for `--tls-handshake-timeout-ms`: a client must finish its
/// handshake this long after connecting.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// At most one `warn` line about failed handshakes per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(1);

/// Largest plaintext handed to rustls in one `write`: a few records, so
/// the TLS bytes waiting for the socket stay bounded.
const MAX_PLAINTEXT_PER_WRITE: usize = 64 * 1024;

/// TLS settings of a listening port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Certificate, key and (for mutual TLS) client CA files.
    pub files: ServerFiles,
    /// A client still handshaking this long after it connected is closed.
    pub handshake_timeout: Duration,
}

/// The server side of TLS: the current configuration and its counters.
#[derive(Debug)]
pub struct Acceptor {
    files: ServerFiles,
    current: RwLock<Arc<ServerConfig>>,
    handshake_timeout: Duration,
    /// What the `# TLS` section of `INFO` and `/metrics` show.
    pub counters: TlsCounters,
    /// When the last `warn` line about a failed handshake went out.
    last_warn: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

/// What `INFO` (section `# TLS`) and `/metrics` show.
#[derive(Debug, Default)]
pub struct TlsCounters {
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Connections closed for a failed handshake.
    pub handshake_failures: AtomicU64,
    /// Connections closed for a handshake not finished in time.
    pub handshake_timeouts: AtomicU64,
    /// Reloads that succeeded.
    pub reloads: AtomicU64,
    /// Reloads that failed (the previous configuration stayed).
    pub reload_failures: AtomicU64,
}

impl Acceptor {
    /// Reads the files now; an error names the file at fault.
    pub fn new(config: TlsConfig) -> Result<Acceptor, TlsError> {
        let TlsConfig {
            files,
            handshake_timeout,
        } = config;
        let config = server_config(&files)?;
        Ok(Acceptor {
            files,
            current: RwLock::new(Arc::new(config)),
            handshake_timeout,
            counters: TlsCounters::default(),
            last_warn: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        })
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// The configuration for a new handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Reads the certificate, key and client CA files again; new
    /// handshakes use them, open connections are untouched. On an error
    /// the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.files) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                self.counters.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                self.counters
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(%error, "TLS reload failed; still serving the previous certificate");
                Err(error)
            }
        }
    }

    /// Wraps a freshly accepted socket.
    pub(crate) fn accept(&self, socket: TcpStream) -> io::Result<Transport> {
        let tls = ServerConnection::new(self.config()).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream {
            socket,
            tls,
            started: Instant::now(),
            just_connected: false,
            failure: None,
        })))
    }

    /// Counts a handshake that failed (`error`) or timed out (`None`), and
    /// logs it unless a line went out less than [`LOG_EVERY`] ago.
    pub(crate) fn note_failure(&self, client: u64, error: Option<&rustls::Error>) {
        let counter = match error {
            Some(_) => &self.counters.handshake_failures,
            None => &self.counters.handshake_timeouts,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        {
            let mut last = self.last_warn.lock();
            if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
                self.unlogged.fetch_add(1, Ordering::Relaxed);
                return;
            }
            *last = Some(Instant::now());
        }
        let not_logged = self.unlogged.swap(0, Ordering::Relaxed);
        match error {
            Some(error) => tracing::warn!(
                client,
                %error,
                not_logged,
                "TLS handshake failed; connection closed"
            ),
            None => tracing::warn!(
                client,
                timeout_ms = self.handshake_timeout.as_millis() as u64,
                not_logged,
                "TLS handshake not finished in time; connection closed"
            ),
        }
    }

    /// How long a client may take to finish its handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }
}

/// A client's byte stream: plain TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

#[derive(Debug)]
pub(crate) struct TlsStream {
    socket: TcpStream,
    tls: ServerConnection,
    /// When the socket was accepted.
    started: Instant,
    /// The handshake finished and nobody has asked yet.
    just_connected: bool,
    /// Why the TLS session failed, once it has.
    failure: Option<rustls::Error>,
}

impl TlsStream {
    /// Sends TLS records until none are left or the socket would block.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.socket) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Records left over from a turn that found the socket full.
        self.flush_tls()?;
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.socket) {
                Ok(0) => return Ok(0),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let was_handshaking = self.tls.is_handshaking();
            if let Err(error) = self.tls.process_new_packets() {
                // Tell the peer why (an alert), best effort.
                let _ = self.flush_tls();
                self.failure = Some(error.clone());
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            // Handshake replies, key updates.
            self.flush_tls()?;
            if was_handshaking && !self.tls.is_handshaking() {
                self.just_connected = true;
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        if self.tls.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = buf.len().min(MAX_PLAINTEXT_PER_WRITE);
        let n = self.tls.writer().write(&buf[..take])?;
        if n == 0 && take > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.flush_tls()?;
        Ok(n)
    }
}

impl Transport {
    /// TLS records produced but not yet taken by the socket.
    pub fn pending(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.tls.wants_write(),
        }
    }

    /// A TLS connection whose handshake has not finished.
    pub fn handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.tls.is_handshaking(),
        }
    }

    /// Still handshaking `timeout` after the connection was accepted.
    pub fn handshake_expired(&self, timeout: Duration) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.tls.is_handshaking() && s.started.elapsed() > timeout,
        }
    }

    /// Whether the handshake finished since the last call (once per connection).
    pub fn take_handshake_done(&mut self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => std::mem::take(&mut s.just_connected),
        }
    }

    /// Why the TLS session failed, if it did.
    pub fn failure(&self) -> Option<&rustls::Error> {
        match self {
            Transport::Plain(_) => None,
            Transport::Tls(s) => s.failure.as_ref(),
        }
    }

    /// A TLS session that failed before its handshake finished.
    pub fn handshake_failure(&self) -> Option<&rustls::Error> {
        self.failure().filter(|_| self.handshaking())
    }

    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        match self {
            Transport::Plain(s) => s.peer_addr(),
            Transport::Tls(s) => s.socket.peer_addr(),
        }
    }

    /// Before closing: a TLS `close_notify`, best effort.
    pub fn close_notify(&mut self) {
        if let Transport::Tls(s) = self
            && !s.tls.is_handshaking()
            && s.failure.is_none()
        {
            s.tls.send_close_notify();
            let _ = s.flush_tls();
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    /// Pushes queued TLS records; never blocks (what the socket does not
    /// take now goes on its next writable event).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(s) => s.flush_tls(),
        }
    }
}

impl mio::event::Source for Transport {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.register(registry, token, interests),
            Transport::Tls(s) => s.socket.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.reregister(registry, token, interests),
            Transport::Tls(s) => s.socket.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.deregister(registry),
            Transport::Tls(s) => s.socket.deregister(registry),
        }
    }
}

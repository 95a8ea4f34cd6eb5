//! Shared helpers for the integration tests (each file in `tests/` does `mod util;`).
//!
//! - [`free_port`]: a port on 127.0.0.1 that was free a moment ago.
//! - [`RedisServer`]: a private `redis-server` (own port, own temporary directory, AOF with
//!   `appendfsync always`), killed when dropped. Never port 6379, never a shared instance.
//! - [`RespConn`] and [`Resp`]: a tiny blocking RESP2/RESP3 client that works against Redis and
//!   against our own server, in plain text or TLS ([`RespConn::connect_tls`]). Every read has a
//!   deadline, so a test fails instead of hanging.
//! - [`redis_cluster::RedisCluster`]: a private Redis Cluster (3 masters, 3 replicas), killed
//!   when dropped.
//! - [`timewheel_cluster`]: `CLUSTER SLOTS`/`INFO` of cluster-mode nodes, a stable-table wait,
//!   and a cluster-aware load client with a ledger.
//! - [`certs::Pki`]: a private CA and certificates made by the test; [`RedisServer::start_tls`]
//!   runs Redis with TLS only (`--port 0 --tls-port P`).
//!
//! Ground rules: helpers panic with a message that says what went wrong (these are tests);
//! the `try_` variants return `io::Result` for tests that expect a failure (a closed connection,
//! a server that is down).
#![allow(dead_code)]

pub mod certs;
pub mod redis_cluster;
pub mod timewheel_cluster;

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod wire;

/// How long any single reply may take before a test gives up.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for something that should happen soon (a
/// reconnect, a firing, a state change) before it fails.
pub const PATIENCE: Duration = Duration::from_secs(30);
/// How long a `redis-server` may take to answer `PING` after it was started.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often readiness is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A port on 127.0.0.1 that the OS considered free when asked. Another process may take it
/// before the caller binds it, so callers that start a server should retry on "address in use".
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of probe listener")
        .port()
}

/// The first executable called `name` in `$PATH`, like `command -v`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

// ---------------------------------------------------------------------------------------------
// RESP values
// ---------------------------------------------------------------------------------------------

/// One RESP2 or RESP3 reply.
#[derive(Clone, PartialEq)]
pub enum Resp {
    /// `+OK`
    Simple(String),
    /// `-ERR ...` (RESP2 error) or `!len` (RESP3 blob error).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo` or `$-1` (`None`).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...` or `*-1` (`None`).
    Array(Option<Vec<Resp>>),
    /// RESP3 `_`.
    Null,
    /// RESP3 `%`, pairs in wire order.
    Map(Vec<(Resp, Resp)>),
    /// RESP3 `~`, elements in wire order.
    Set(Vec<Resp>),
    /// RESP3 `>`.
    Push(Vec<Resp>),
    /// RESP3 `,` kept as text (`inf`, `-inf`, `nan` and exact digits survive).
    Double(String),
    /// RESP3 `#t` / `#f`.
    Boolean(bool),
    /// RESP3 `=`: the whole payload including its format prefix, e.g. `txt:hello`.
    Verbatim(String),
    /// RESP3 `(`, kept as text.
    BigNumber(String),
}

impl Resp {
    pub fn simple(s: &str) -> Resp {
        Resp::Simple(s.to_owned())
    }

    pub fn ok() -> Resp {
        Resp::simple("OK")
    }

    pub fn bulk(bytes: impl AsRef<[u8]>) -> Resp {
        Resp::Bulk(Some(bytes.as_ref().to_vec()))
    }

    pub fn nil() -> Resp {
        Resp::Bulk(None)
    }

    /// The text of a bulk, simple or verbatim string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Resp::Bulk(Some(b)) => std::str::from_utf8(b).ok(),
            Resp::Simple(s) | Resp::Verbatim(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Resp::Integer(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Resp::Error(_))
    }

    /// Parses one reply from the front of `buf`.
    ///
    /// `Ok(None)` means the reply is incomplete (read more, not a failure); `Ok(Some((reply,
    /// n)))` means the first `n` bytes of `buf` were exactly one reply.
    pub fn parse(buf: &[u8]) -> Parsed<Resp> {
        parse_at(buf, 0)
    }
}

/// Bulk strings print as text, so assertion failures are readable.
impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "Simple({s:?})"),
            Resp::Error(s) => write!(f, "Error({s:?})"),
            Resp::Integer(i) => write!(f, "Integer({i})"),
            Resp::Bulk(None) => write!(f, "Bulk(nil)"),
            Resp::Bulk(Some(b)) => match std::str::from_utf8(b) {
                Ok(s) => write!(f, "Bulk({s:?})"),
                Err(_) => write!(f, "Bulk({b:?})"),
            },
            Resp::Array(None) => write!(f, "Array(nil)"),
            Resp::Array(Some(items)) => f.debug_tuple("Array").field(items).finish(),
            Resp::Null => write!(f, "Null"),
            Resp::Map(pairs) => f.debug_tuple("Map").field(pairs).finish(),
            Resp::Set(items) => f.debug_tuple("Set").field(items).finish(),
            Resp::Push(items) => f.debug_tuple("Push").field(items).finish(),
            Resp::Double(s) => write!(f, "Double({s})"),
            Resp::Boolean(b) => write!(f, "Boolean({b})"),
            Resp::Verbatim(s) => write!(f, "Verbatim({s:?})"),
            Resp::BigNumber(s) => write!(f, "BigNumber({s})"),
        }
    }
}

/// The result of parsing from the front of a buffer: `Ok(None)` means incomplete (read more),
/// `Ok(Some((value, end)))` gives the value and the position just after it.
pub type Parsed<T> = Result<Option<(T, usize)>, String>;

/// Encodes a command as a RESP array of bulk strings, the way clients send it.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The line starting at `pos` (without its CRLF) and the position after the CRLF.
fn line_at(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
    Some((&buf[pos..end], end + 2))
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| format!("non-UTF-8 line {bytes:?}"))
}

fn number(bytes: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad number {:?}", String::from_utf8_lossy(bytes)))
}

/// A length-prefixed payload (`$`, `=`, `!`): `None` for length -1.
fn blob_at(buf: &[u8], len: i64, pos: usize) -> Parsed<Option<Vec<u8>>> {
    if len == -1 {
        return Ok(Some((None, pos)));
    }
    let len = usize::try_from(len).map_err(|_| format!("bad length {len}"))?;
    if buf.len() < pos + len + 2 {
        return Ok(None);
    }
    if &buf[pos + len..pos + len + 2] != b"\r\n" {
        return Err(format!("payload of length {len} not followed by CRLF"));
    }
    Ok(Some((Some(buf[pos..pos + len].to_vec()), pos + len + 2)))
}

/// `count` replies starting at `pos`.
fn many_at(buf: &[u8], count: i64, mut pos: usize) -> Parsed<Vec<Resp>> {
    let count = usize::try_from(count).map_err(|_| format!("bad count {count}"))?;
    let mut items = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        match parse_at(buf, pos)? {
            Some((item, next)) => {
                items.push(item);
                pos = next;
            }
            None => return Ok(None),
        }
    }
    Ok(Some((items, pos)))
}

fn parse_at(buf: &[u8], pos: usize) -> Parsed<Resp> {
    let Some((line, next)) = (pos < buf.len()).then(|| line_at(buf, pos)).flatten() else {
        return Ok(None);
    };
    let Some((&kind, rest)) = line.split_first() else {
        return Err("empty line where a reply was expected".to_owned());
    };
    let reply = match kind {
        b'+' => (Resp::Simple(text(rest)?), next),
        b'-' => (Resp::Error(text(rest)?), next),
        b':' => (Resp::Integer(number(rest)?), next),
        b',' => (Resp::Double(text(rest)?), next),
        b'(' => (Resp::BigNumber(text(rest)?), next),
        b'_' if rest.is_empty() => (Resp::Null, next),
        b'#' => match rest {
            b"t" => (Resp::Boolean(true), next),
            b"f" => (Resp::Boolean(false), next),
            _ => return Err(format!("bad boolean {:?}", String::from_utf8_lossy(rest))),
        },
        b'$' | b'=' | b'!' => {
            let Some((blob, next)) = blob_at(buf, number(rest)?, next)? else {
                return Ok(None);
            };
            let reply = match (kind, blob) {
                (b'$', blob) => Resp::Bulk(blob),
                (b'=', Some(blob)) => Resp::Verbatim(text(&blob)?),
                (b'!', Some(blob)) => Resp::Error(text(&blob)?),
                _ => return Err(format!("length -1 is not allowed for {:?}", kind as char)),
            };
            (reply, next)
        }
        b'*' if rest == b"-1" => (Resp::Array(None), next),
        b'*' | b'~' | b'>' => {
            let Some((items, next)) = many_at(buf, number(rest)?, next)? else {
                return Ok(None);
            };
            let reply = match kind {
                b'*' => Resp::Array(Some(items)),
                b'~' => Resp::Set(items),
                _ => Resp::Push(items),
            };
            (reply, next)
        }
        b'%' => {
            let Some((items, next)) = many_at(buf, number(rest)? * 2, next)? else {
                return Ok(None);
            };
            let mut items = items.into_iter();
            let mut pairs = Vec::with_capacity(items.len() / 2);
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            (Resp::Map(pairs), next)
        }
        _ => {
            return Err(format!(
                "unsupported RESP line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
    };
    Ok(Some(reply))
}

// ---------------------------------------------------------------------------------------------
// A raw RESP connection
// ---------------------------------------------------------------------------------------------

/// A blocking RESP connection to 127.0.0.1 that buffers partial replies.
///
/// Works against Redis and against our server; sends exactly the bytes it is given.
pub struct RespConn {
    /// The socket, for timeouts and `shutdown`; `io` reads and writes it.
    stream: TcpStream,
    io: Box<dyn ReadWrite>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl RespConn {
    /// Connects to 127.0.0.1:`port`; panics if that fails.
    pub fn connect(port: u16) -> RespConn {
        RespConn::try_connect(port)
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port} failed: {e}"))
    }

    pub fn try_connect(port: u16) -> io::Result<RespConn> {
        let stream = RespConn::tcp(port)?;
        Ok(RespConn {
            io: Box::new(stream.try_clone()?),
            stream,
            buf: Vec::new(),
            timeout: REPLY_TIMEOUT,
        })
    }

    /// Connects with TLS to 127.0.0.1:`port` (server name `localhost`) and completes the
    /// handshake, so a refused certificate shows here as an error.
    pub fn connect_tls(
        port: u16,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> io::Result<RespConn> {
        let stream = RespConn::tcp(port)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(tls, name).map_err(io::Error::other)?;
        let mut socket = stream.try_clone()?;
        while client.is_handshaking() {
            client.complete_io(&mut socket)?;
        }
        Ok(RespConn {
            io: Box::new(rustls::StreamOwned::new(client, socket)),
            stream,
            buf: Vec::new(),
            timeout: REPLY_TIMEOUT,
        })
    }

    fn tcp(port: u16) -> io::Result<TcpStream> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(stream)
    }

    /// Changes how long [`RespConn::read_reply`] waits for one reply (default [`REPLY_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The socket, e.g. to `shutdown(Shutdown::Write)` it.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes `bytes` as they are (inline commands, pipelines, deliberately broken frames).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", bytes.len()));
    }

    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    /// Sends one command as a RESP array of bulk strings.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&encode_command(args));
    }

    /// Sends one command and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Resp {
        self.send(args);
        self.read_reply()
    }

    /// Reads one reply; panics on timeout, EOF or a protocol error.
    pub fn read_reply(&mut self) -> Resp {
        self.try_read_reply()
            .unwrap_or_else(|e| panic!("reading a reply failed: {e}"))
    }

    /// Reads one reply. EOF before a complete reply is `ErrorKind::UnexpectedEof`, no reply
    /// within the timeout is `ErrorKind::TimedOut`, a malformed reply is `ErrorKind::InvalidData`.
    pub fn try_read_reply(&mut self) -> io::Result<Resp> {
        let n = self.fill_one_reply()?;
        let (reply, _) = Resp::parse(&self.buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            .expect("fill_one_reply buffered a whole reply");
        self.buf.drain(..n);
        Ok(reply)
    }

    /// Reads one reply and returns its exact bytes, for tests that compare the wire format.
    pub fn read_raw_reply(&mut self) -> Vec<u8> {
        let n = self
            .fill_one_reply()
            .unwrap_or_else(|e| panic!("reading a reply failed: {e}"));
        self.buf.drain(..n).collect()
    }

    /// Reads until `buf` starts with one complete reply; returns that reply's length.
    fn fill_one_reply(&mut self) -> io::Result<usize> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match Resp::parse(&self.buf) {
                Ok(Some((_, n))) => return Ok(n),
                Ok(None) => {}
                Err(e) => {
                    let msg = format!("{e}; buffered: {:?}", String::from_utf8_lossy(&self.buf));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.incomplete(io::ErrorKind::TimedOut, "no complete reply within"));
            }
            self.stream.set_read_timeout(Some(remaining))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.io.read(&mut chunk) {
                Ok(0) => {
                    return Err(self.incomplete(io::ErrorKind::UnexpectedEof, "EOF after"));
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(
                        self.incomplete(io::ErrorKind::TimedOut, "no complete reply within")
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn incomplete(&self, kind: io::ErrorKind, what: &str) -> io::Error {
        let msg = format!(
            "{what} {:?}; buffered: {:?}",
            self.timeout,
            String::from_utf8_lossy(&self.buf)
        );
        io::Error::new(kind, msg)
    }
}

/// A plain socket or a TLS stream over one.
trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

// ---------------------------------------------------------------------------------------------
// A private redis-server
// ---------------------------------------------------------------------------------------------

/// A `redis-server` process owned by one test: its own free port on 127.0.0.1, its own
/// temporary directory (AOF, `appendfsync always`, no RDB snapshots), its log in
/// `<dir>/redis.log`. Dropping it kills the process and deletes the directory.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    tls: Option<RedisTls>,
    // Declared last so it is deleted after the process is gone.
    dir: TempDir,
}

/// How a TLS-only `redis-server` is set up (see [`RedisServer::start_tls`]).
struct RedisTls {
    args: Vec<String>,
    /// Trusts the server's CA and presents [`RedisServer::tls_client`].
    client: std::sync::Arc<rustls::ClientConfig>,
    identity: certs::Identity,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING` with `+PONG`.
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// Starts a server that speaks only TLS (`--port 0 --tls-port P`), with a certificate
    /// issued by `pki`; with `auth_clients`, clients must present a certificate from `pki`
    /// (`--tls-auth-clients yes`).
    pub fn start_tls(pki: &certs::Pki, auth_clients: bool) -> RedisServer {
        let server = pki.server("redis-server");
        let identity = pki.client("redis-client");
        #[rustfmt::skip]
        let args = [
            "--tls-cert-file", server.cert(), "--tls-key-file", server.key(),
            "--tls-ca-cert-file", pki.ca(),
            "--tls-auth-clients", if auth_clients { "yes" } else { "no" },
        ];
        RedisServer::start_with(Some(RedisTls {
            args: args.iter().map(|a| a.to_string()).collect(),
            client: pki.client_config(Some(&identity)),
            identity,
        }))
    }

    /// With [`RedisServer::start_tls`]: a client certificate the server accepts.
    pub fn tls_client(&self) -> &certs::Identity {
        &self.tls.as_ref().expect("a TLS server").identity
    }

    fn start_with(tls: Option<RedisTls>) -> RedisServer {
        let binary = find_on_path("redis-server").unwrap_or_else(|| {
            panic!("redis-server not found on PATH; install the Debian package redis-server")
        });
        let dir = tempfile::Builder::new()
            .prefix("timewheel-redis-")
            .tempdir()
            .expect("create a temporary directory for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            binary,
            tls,
            dir,
        };
        // free_port() can race with other tests starting servers: retry on a fresh port.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            server.port = free_port();
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(e) if attempt < ATTEMPTS => {
                    eprintln!(
                        "redis-server on port {} failed ({e}); retrying",
                        server.port
                    )
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// The data directory (holds `appendonlydir/` and `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL, as a crash: nothing is flushed beyond what `appendfsync always` already wrote.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A clean stop: `SHUTDOWN NOSAVE`, then SIGKILL if the process is still alive after
    /// [`STARTUP_TIMEOUT`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(mut conn) = self.try_conn() {
            // On success Redis closes the connection without replying.
            let _ = conn.try_send_raw(&encode_command(&["SHUTDOWN", "NOSAVE"]));
            let _ = conn.try_read_reply();
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        eprintln!(
            "redis-server on port {} ignored SHUTDOWN; killing it",
            self.port
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the server again on the same port and directory, so it replays its AOF.
    /// Stops it cleanly first if it is still running.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("restart failed: {e}");
        }
    }

    /// Sends one command on a fresh connection and returns the reply.
    pub fn cmd<A: AsRef<[u8]>>(&self, args: &[A]) -> Resp {
        self.conn().cmd(args)
    }

    /// A new connection to this server (TLS for a TLS server).
    pub fn conn(&self) -> RespConn {
        self.try_conn()
            .unwrap_or_else(|e| panic!("connect to redis-server on {} failed: {e}", self.port))
    }

    fn try_conn(&self) -> io::Result<RespConn> {
        match &self.tls {
            Some(tls) => RespConn::connect_tls(self.port, tls.client.clone()),
            None => RespConn::try_connect(self.port),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self.dir.path().to_str().expect("temporary dir is UTF-8");
        let log = self.log_path();
        let log = log.to_str().expect("log path is UTF-8");
        let port_args = match &self.tls {
            Some(tls) => {
                let mut args = vec!["--port", "0", "--tls-port", &port];
                args.extend(tls.args.iter().map(String::as_str));
                args
            }
            None => vec!["--port", &port],
        };
        #[rustfmt::skip]
        let args = [
            "--bind", "127.0.0.1", "--dir", dir, "--logfile", log,
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--protected-mode", "no",
        ];
        let child = Command::new(&self.binary)
            .args(port_args)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawning {} failed: {e}", self.binary.display()))?;
        self.child = Some(child);
        let result = self.wait_ready();
        if result.is_err() {
            self.kill9();
        }
        result
    }

    /// Polls until *our* process answers `+PONG` (a PONG from whoever else holds the port does
    /// not count: the pid reported by `INFO server` must be ours).
    fn wait_ready(&mut self) -> Result<(), String> {
        let pid = self.pid().expect("wait_ready needs a child");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.failure(&format!("redis-server exited with {status}")));
            }
            if self.answers_as(pid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let msg = format!("redis-server did not answer PING within {STARTUP_TIMEOUT:?}");
                return Err(self.failure(&msg));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn answers_as(&self, pid: u32) -> bool {
        let Ok(mut conn) = self.try_conn() else {
            return false;
        };
        conn.set_timeout(Duration::from_secs(1));
        if conn.try_send_raw(&encode_command(&["PING"])).is_err()
            || conn.try_read_reply().ok() != Some(Resp::simple("PONG"))
        {
            return false;
        }
        let _ = conn.try_send_raw(&encode_command(&["INFO", "server"]));
        let want = format!("process_id:{pid}");
        conn.try_read_reply()
            .ok()
            .and_then(|r| {
                r.as_str()
                    .map(|info| info.lines().any(|l| l.trim() == want))
            })
            .unwrap_or(false)
    }

    fn failure(&self, what: &str) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "{what} (port {}, dir {}); last log lines:\n{}",
            self.port,
            self.dir.path().display(),
            tail.join("\n")
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The real `timewheel serve` binary, on a free port picked by the server
/// itself (`--bind 127.0.0.1:0`), killed on drop.
pub struct TimewheelServer {
    child: Option<Child>,
    port: u16,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl TimewheelServer {
    /// Starts `timewheel serve` with `--tick-ms 10` and `extra` flags.
    pub fn start(extra: &[&str]) -> TimewheelServer {
        TimewheelServer::start_with_env(extra, &[])
    }

    /// Like [`TimewheelServer::start`], with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> TimewheelServer {
        let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--tick-ms", "10"];
        args.extend_from_slice(extra);
        TimewheelServer::start_exact(&args, env)
    }

    /// Runs the binary with exactly `args` (no default `--bind` or
    /// `--tick-ms`) and waits for its `listening on` line.
    pub fn start_exact(args: &[&str], env: &[(&str, &str)]) -> TimewheelServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_timewheel"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("TIMEWHEEL_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn timewheel");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let port = rest
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok());
                    let _ = port_tx.send(port);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let port = match port_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Some(port)) => port,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "timewheel did not log 'listening on'; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        TimewheelServer {
            child: Some(child),
            port,
            log,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn conn(&self) -> RespConn {
        RespConn::connect(self.port)
    }

    /// Sends SIGTERM (via `kill`) and waits up to `timeout` for the exit;
    /// returns the exit status, or `None` if it did not exit in time.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.send_sigterm();
        self.wait_exit(timeout)
    }

    /// Sends SIGTERM (via `kill`) and returns at once, so a test can act
    /// while the server shuts down; then [`TimewheelServer::wait_exit`].
    pub fn send_sigterm(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit
    /// status, or `None` (and kills it) if it is still running then.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TimewheelServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `timewheel` with `args` to completion (for flag checks that must
/// fail fast); returns (exit status, stderr).
pub fn run_timewheel(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_timewheel"));
    command
        .args(args)
        .env_remove("TIMEWHEEL_PASSWORD")
        .env_remove("RUST_BACKTRACE");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("run timewheel");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Polling and INFO
// ---------------------------------------------------------------------------------------------

/// Polls `check` every 10 ms; panics with `what` if it is still false after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, check: impl FnMut() -> bool) {
    wait_until_every(what, timeout, POLL_INTERVAL, check);
}

/// [`wait_until`], polling every `every`.
#[track_caller]
pub fn wait_until_every(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(every);
    }
}

/// `INFO` of our server (or Redis) as key -> value.
pub fn info(conn: &mut RespConn) -> std::collections::HashMap<String, String> {
    let reply = conn.cmd(&["INFO"]);
    let text = reply.as_str().expect("INFO replies with a bulk string");
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// One numeric `INFO` field; panics if it is missing or not a number.
#[track_caller]
pub fn info_u64(conn: &mut RespConn, key: &str) -> u64 {
    let info = info(conn);
    info.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {key}: {info:?}"))
}

/// The wall clock in Unix milliseconds, as the server's deadlines are written.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

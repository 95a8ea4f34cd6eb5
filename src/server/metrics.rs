//! The read-only HTTP listener (`--metrics-bind`): `GET /metrics`, the
//! figures of `INFO` ([`super::figures`]) in the Prometheus text
//! exposition format (version 0.0.4), and the operators' page, `GET /`
//! and `GET /due.json` ([`super::dashboard`]).
//!
//! Ground rules:
//! - One thread of its own with blocking std sockets, one request per
//!   connection (`Connection: close`), a read timeout per connection: a
//!   stuck scraper delays the next scrape, never the event loop, the
//!   ticker or a worker.
//! - Read-only: it exposes counters, never ids. Bind it where only your
//!   Prometheus and your operators can reach it, or serve it over TLS with
//!   the clients' port certificate ([`spawn`]); with a client CA, scrapers
//!   and browsers need a certificate from it as clients do.
//! - Every answer forbids framing and caching, and the page's content
//!   security policy lets it fetch from this listener only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::server::tls::Acceptor;

/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head read; a longer one is answered 400.
const MAX_HEAD: usize = 8 * 1024;
/// The body of a 404 or 405.
const TRY: &str = "try GET /, GET /due.json or GET /metrics\n";
/// The page's scripts and styles are inline; it may fetch from here only,
/// load nothing else, and be framed by nobody.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// What a path is answered with.
#[derive(Debug)]
pub(crate) struct Page {
    pub content_type: &'static str,
    pub body: String,
}

/// The Prometheus text format's content type.
pub(crate) const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `GET` on `listener` with what `pages` returns for the path
/// (query string removed; `None`: 404), on a thread of its own, for as
/// long as the process runs; over TLS when `tls` is given (then
/// `https://ADDR/metrics`), with the same certificate, client CA and
/// reloads as the clients' port.
pub(crate) fn spawn(
    listener: TcpListener,
    tls: Option<Arc<Acceptor>>,
    pages: impl Fn(&str) -> Option<Page> + Send + 'static,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("timewheel-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let result = match &tls {
                            None => answer_plain(stream, &pages),
                            Some(tls) => answer_tls(stream, tls, &pages),
                        };
                        if let Err(error) = result {
                            tracing::debug!(%error, "metrics request failed");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "metrics: accept failed");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        })
}

fn answer_plain(stream: TcpStream, pages: &impl Fn(&str) -> Option<Page>) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    answer(stream, pages)
}

/// The handshake shares the request's read timeout, so a silent client
/// holds the thread no longer than a slow plain one.
fn answer_tls(
    stream: TcpStream,
    tls: &Acceptor,
    pages: &impl Fn(&str) -> Option<Page>,
) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let connection = rustls::ServerConnection::new(tls.config()).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, stream);
    answer(&mut stream, pages)?;
    stream.conn.send_close_notify();
    stream.flush()
}

/// Reads one request head and answers it; the connection is then closed.
fn answer(mut stream: impl Read + Write, pages: &impl Fn(&str) -> Option<Page>) -> io::Result<()> {
    // Never more than MAX_HEAD + 1 bytes, however long a line is sent.
    let mut reader = BufReader::new(Read::take(&mut stream, MAX_HEAD as u64 + 1));
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut head = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head += n;
        if n == 0 || line == "\r\n" || line == "\n" || head > MAX_HEAD {
            break;
        }
    }
    drop(reader);
    let mut parts = request_line.split_whitespace();
    let page = match (parts.next(), parts.next().and_then(|p| p.split('?').next())) {
        _ if head > MAX_HEAD => Err(("400 Bad Request", "request head too long\n")),
        (Some("GET"), Some(path)) => pages(path).ok_or(("404 Not Found", TRY)),
        (Some("GET"), None) => Err(("404 Not Found", TRY)),
        _ => Err(("405 Method Not Allowed", TRY)),
    };
    let (status, page) = match page {
        Ok(page) => ("200 OK", page),
        Err((status, body)) => (
            status,
            Page {
                content_type: "text/plain; charset=utf-8",
                body: body.to_owned(),
            },
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: {CSP}\r\nConnection: close\r\n\r\n{}",
        page.content_type,
        page.body.len(),
        page.body
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_get_metrics_and_refuses_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(listener, None, |path| {
            (path == "/metrics").then(|| Page {
                content_type: PROMETHEUS,
                body: "timewheel_pending 0\n".to_owned(),
            })
        })
        .unwrap();
        let get = |request: &str| {
            use std::io::Read;
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            stream.read_to_string(&mut reply).unwrap();
            reply
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.ends_with("\r\n\r\ntimewheel_pending 0\n"), "{ok}");
        assert!(get("GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        // A request line longer than MAX_HEAD: read no further, answer 400
        // and close. The close may reset the connection before the client
        // reads the answer (the rest of its request is never read), so
        // a reset counts too; either way the server goes on serving.
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD * 4));
        let mut stream = TcpStream::connect(addr).unwrap();
        let _ = stream.write_all(long.as_bytes());
        let mut reply = Vec::new();
        let read = std::io::Read::read_to_end(&mut stream, &mut reply);
        assert!(
            reply.starts_with(b"HTTP/1.1 400") || read.is_err(),
            "{read:?} {}",
            String::from_utf8_lossy(&reply)
        );
        assert!(get("GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    }
}

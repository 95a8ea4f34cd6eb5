//! A bare RESP2 reader for the rebuild's `ZRANGE ... WITHSCORES` chunks.
//!
//! redis-rs parses every reply into a tree of `Value`s, about 800 ns per
//! element here, which made parsing, not Redis, the slowest stage of a
//! rebuild (1M timers: 2.6 s through redis-rs, 1.0 s for Redis itself).
//! This reads the flat array of bulk strings straight into
//! `(member, deadline)` pairs. It opens its own connection from the same
//! URL (TCP, TLS or Unix socket), authenticates and selects the database, and
//! is used only while rebuilding; everything else goes through redis-rs.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};
use rustls::pki_types::ServerName;

/// Longest bulk string accepted: a member is an order id (128 bytes at
/// most, longer ones are read and then skipped as invalid); a score is a
/// number.
const MAX_BULK: usize = 64 * 1024;

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

pub(super) struct BulkReader {
    reader: BufReader<Box<dyn Stream>>,
    line: Vec<u8>,
}

impl BulkReader {
    /// `tls`: the client configuration for a `rediss://` URL.
    pub(super) fn connect(
        info: &ConnectionInfo,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> io::Result<BulkReader> {
        let stream: Box<dyn Stream> = match info.addr() {
            ConnectionAddr::TcpTls { host, port, .. } => {
                let tls = tls.ok_or_else(|| io::Error::other("rediss:// without a TLS setup"))?;
                let name = ServerName::try_from(host.clone()).map_err(io::Error::other)?;
                let connection =
                    rustls::ClientConnection::new(tls, name).map_err(io::Error::other)?;
                let stream = TcpStream::connect((host.as_str(), *port))?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_write_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                Box::new(rustls::StreamOwned::new(connection, stream))
            }
            ConnectionAddr::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port))?;
                stream.set_read_timeout(Some(timeout))?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            ConnectionAddr::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_read_timeout(Some(timeout))?;
                Box::new(stream)
            }
            other => {
                return Err(io::Error::other(format!(
                    "rebuild reads over TCP or a Unix socket, not {other:?}"
                )));
            }
        };
        let mut reader = BulkReader {
            reader: BufReader::with_capacity(1 << 20, stream),
            line: Vec::new(),
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => reader.send(&[b"AUTH", user.as_bytes(), password.as_bytes()])?,
                None => reader.send(&[b"AUTH", password.as_bytes()])?,
            }
            reader.expect_ok()?;
        }
        if settings.db() != 0 {
            reader.send(&[b"SELECT", settings.db().to_string().as_bytes()])?;
            reader.expect_ok()?;
        }
        Ok(reader)
    }

    /// Sends one command (not flushed through any buffer: written at once).
    pub(super) fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)
    }

    fn expect_ok(&mut self) -> io::Result<()> {
        let line = self.read_line()?;
        if line.first() == Some(&b'+') {
            Ok(())
        } else {
            Err(io::Error::other(String::from_utf8_lossy(line).into_owned()))
        }
    }

    /// Reads one `WITHSCORES` reply into `(member, score)` pairs.
    pub(super) fn read_pairs(&mut self) -> io::Result<Vec<(Vec<u8>, u64)>> {
        let count = self.read_header(b'*', "an array")?;
        if count < 0 || count % 2 != 0 {
            return Err(io::Error::other(format!(
                "odd WITHSCORES reply: {count} items"
            )));
        }
        let mut pairs = Vec::with_capacity(count as usize / 2);
        for _ in 0..count / 2 {
            let member = self.read_bulk()?;
            let score = self.read_bulk()?;
            let score = std::str::from_utf8(&score)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
            pairs.push((member, score.max(0.0).round() as u64));
        }
        Ok(pairs)
    }

    fn read_bulk(&mut self) -> io::Result<Vec<u8>> {
        let len = self.read_header(b'$', "a bulk string")?;
        if !(0..=MAX_BULK as i64).contains(&len) {
            return Err(io::Error::other(format!("bulk string of {len} bytes")));
        }
        let mut bytes = vec![0; len as usize + 2];
        self.reader.read_exact(&mut bytes)?;
        bytes.truncate(len as usize);
        Ok(bytes)
    }

    /// The length in a `*N` or `$N` line, `kind` being `*` or `$`.
    fn read_header(&mut self, kind: u8, what: &str) -> io::Result<i64> {
        let header = self.read_line()?;
        match header.split_first() {
            Some((&first, n)) if first == kind => parse_int(n),
            _ => Err(io::Error::other(format!(
                "expected {what}, got {}",
                String::from_utf8_lossy(header)
            ))),
        }
    }

    /// The next line without its `\r\n`; an error reply becomes an error.
    fn read_line(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        self.reader.read_until(b'\n', &mut self.line)?;
        if !self.line.ends_with(b"\r\n") {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.line.truncate(self.line.len() - 2);
        if self.line.first() == Some(&b'-') {
            return Err(io::Error::other(
                String::from_utf8_lossy(&self.line[1..]).into_owned(),
            ));
        }
        Ok(&self.line)
    }
}

fn parse_int(digits: &[u8]) -> io::Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad length in reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_withscores_reply() {
        let bytes = b"*4\r\n$3\r\no:1\r\n$13\r\n1795400000000\r\n$3\r\no:2\r\n$4\r\n12.6\r\n*0\r\n-ERR boom\r\n";
        let mut reader = BulkReader {
            reader: BufReader::new(Box::new(io::Cursor::new(bytes.to_vec())) as Box<dyn Stream>),
            line: Vec::new(),
        };
        assert_eq!(
            reader.read_pairs().unwrap(),
            vec![(b"o:1".to_vec(), 1_795_400_000_000), (b"o:2".to_vec(), 13)]
        );
        assert!(reader.read_pairs().unwrap().is_empty());
        assert_eq!(reader.read_pairs().unwrap_err().to_string(), "ERR boom");
        assert!(reader.read_pairs().is_err(), "EOF");
    }
}

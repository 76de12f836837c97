//! The `[metrics]` endpoint: `GET /metrics` answered with the counters in the Prometheus text
//! format ([`crate::ctl::export::prometheus`]).
//!
//! It runs on a thread of its own and reads the counters the way `ferrite stats` does, as a
//! client of the control socket, so that it shares no state with the control or the
//! forwarding thread: a slow or stuck scraper holds only this thread. One request per
//! connection, answered with `Connection: close`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::ctl::Client;
use crate::ctl::export::prometheus;

/// Longest a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes of request read.
const REQUEST_MAX: usize = 16 * 1024;

/// Binds `addr` and serves the counters of the server whose control socket is `socket` on a
/// thread of its own, for as long as the process lives.
pub fn spawn(addr: SocketAddr, socket: &Path) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let socket = socket.to_path_buf();
    std::thread::Builder::new()
        .name("ferrite-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => {
                        if let Err(e) = answer(c, &socket) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                    Err(e) => tracing::debug!("metrics accept: {e}"),
                }
            }
        })?;
    Ok(local)
}

fn answer(mut conn: TcpStream, socket: &Path) -> std::io::Result<()> {
    // The whole request (up to its blank line) within READ_TIMEOUT and REQUEST_MAX bytes: a
    // client that trickles bytes or sends headers without end holds the thread no longer.
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut req = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || req.len() >= REQUEST_MAX {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut chunk)? {
            0 => break,
            n => req.extend_from_slice(&chunk[..n]),
        }
    }
    let line = String::from_utf8_lossy(req.split(|&b| b == b'\n').next().unwrap_or(&[]));
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, kind, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else if path != "/metrics" {
        (
            "404 Not Found",
            "text/plain",
            "the counters are at /metrics\n".to_string(),
        )
    } else {
        match Client::connect(socket).and_then(|mut c| c.stats()) {
            Ok(s) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                prometheus(&s),
            ),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain",
                format!("no counters from the server: {e}\n"),
            ),
        }
    };
    let mut w = conn;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

//! A small HTTP/1.1 static file server as a [`Service`]: GET and HEAD, keep-alive,
//! `Content-Length` always, files read from disk straight into the socket's send buffer
//! (memory per connection is bounded by the socket buffers, whatever the file size), 400 for what it
//! cannot parse, 404 for what is not there, 405 for other methods.
//!
//! Paths are resolved under the served directory only: `..` segments, backslashes and NUL
//! are refused, `%XX` escapes are decoded once, and a directory serves its `index.html`.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use smoltcp::iface::SocketSet;
use smoltcp::socket::tcp;

use crate::domain::Service;
use crate::services::Listeners;

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Least free room in a socket's send buffer worth a read from the file.
const CHUNK: usize = 16 * 1024;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The decoded path, starting with `/`.
    pub path: String,
    /// Whether the client wants the connection kept open afterwards.
    pub keep_alive: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// Not an HTTP/1.x request line or header.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

/// Where the head ends (index just past the blank line), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete request head.
pub fn parse_head(head: &[u8]) -> Result<Request, HttpError> {
    let text = core::str::from_utf8(head).map_err(|_| HttpError::Malformed("not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().ok_or(HttpError::Malformed("empty"))?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed("request line"));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(HttpError::Malformed("version")),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Malformed("method"));
    }
    let mut keep_alive = http11;
    for h in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = h.split_once(':').ok_or(HttpError::Malformed("header"))?;
        if name.eq_ignore_ascii_case("connection") {
            let v = value.trim();
            if v.eq_ignore_ascii_case("close") {
                keep_alive = false;
            } else if v.eq_ignore_ascii_case("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    let path = decode(path).ok_or(HttpError::Malformed("path escape"))?;
    if !path.starts_with('/') {
        return Err(HttpError::Malformed("path must start with /"));
    }
    Ok(Request {
        method: method.to_string(),
        path,
        keep_alive,
    })
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = core::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The file under `root` that `path` names, or `None` when the path tries to leave `root`.
pub fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s if s.contains('\\') || s.contains('\0') => return None,
            s => p.push(s),
        }
    }
    if p.is_dir() {
        p.push("index.html");
    }
    Some(p)
}

/// The `Content-Type` for a file name.
pub fn mime(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        Some("pdf") => "application/pdf",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// What a connection is doing.
#[derive(Debug)]
enum Conn {
    /// Collecting a request head.
    Reading,
    /// Sending `out[off..]`, then `body` (if any), then back to reading or closing.
    Writing {
        out: Vec<u8>,
        off: usize,
        body: Option<(File, u64)>,
        keep_alive: bool,
    },
}

/// The static file server.
#[derive(Debug)]
pub struct Http {
    root: PathBuf,
    tcp: Listeners,
    conns: Vec<(Conn, Vec<u8>)>,
    /// Responses sent, by status code class (2xx, 4xx, 5xx).
    pub responses: [u64; 3],
}

impl Http {
    /// Serves `root` on `port` to up to `conns` clients at once.
    pub fn new(sockets: &mut SocketSet<'static>, root: PathBuf, port: u16, conns: usize) -> Self {
        let tcp = Listeners::new(sockets, port, conns, 256 * 1024);
        Self {
            root,
            conns: (0..conns)
                .map(|_| (Conn::Reading, Vec::with_capacity(1024)))
                .collect(),
            tcp,
            responses: [0; 3],
        }
    }

    fn respond(&mut self, req: Result<Request, HttpError>) -> Conn {
        let (status, reason, body, keep_alive, head_only, ctype, len) = match req {
            Err(_) => (400, "Bad Request", None, false, false, "text/plain", 12),
            Ok(r) if r.method != "GET" && r.method != "HEAD" => (
                405,
                "Method Not Allowed",
                None,
                r.keep_alive,
                false,
                "text/plain",
                19,
            ),
            Ok(r) => {
                let head_only = r.method == "HEAD";
                let file = resolve(&self.root, &r.path).and_then(|p| {
                    let f = File::open(&p).ok()?;
                    let meta = f.metadata().ok()?;
                    meta.is_file().then(|| (f, meta.len(), mime(&p)))
                });
                match file {
                    Some((f, len, ctype)) => (
                        200,
                        "OK",
                        Some((f, len)),
                        r.keep_alive,
                        head_only,
                        ctype,
                        len,
                    ),
                    None => (
                        404,
                        "Not Found",
                        None,
                        r.keep_alive,
                        head_only,
                        "text/plain",
                        10,
                    ),
                }
            }
        };
        self.responses[match status {
            200..=299 => 0,
            400..=499 => 1,
            _ => 2,
        }] += 1;
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\nServer: ferrite-http\r\nContent-Type: {ctype}\r\n\
             Content-Length: {len}\r\nConnection: {}\r\n\r\n",
            if keep_alive { "keep-alive" } else { "close" }
        )
        .into_bytes();
        if !head_only && body.is_none() {
            out.extend_from_slice(match status {
                400 => b"bad request\n",
                405 => b"method not allowed\n",
                _ => b"not found\n",
            });
        }
        Conn::Writing {
            out,
            off: 0,
            body: if head_only { None } else { body },
            keep_alive,
        }
    }
}

impl Service for Http {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, _now: Instant) -> bool {
        let mut worked = false;
        for i in 0..self.conns.len() {
            let h = self.tcp.handles[i];
            // Reading: gather the head.
            if matches!(self.conns[i].0, Conn::Reading) {
                let s = sockets.get_mut::<tcp::Socket>(h);
                if !s.is_active() {
                    self.conns[i].1.clear();
                    continue;
                }
                let buf = &mut self.conns[i].1;
                while s.can_recv() && buf.len() < MAX_HEAD {
                    let room = MAX_HEAD - buf.len();
                    let got = s.recv(|b| {
                        let n = b.len().min(room);
                        buf.extend_from_slice(&b[..n]);
                        (n, n)
                    });
                    if !matches!(got, Ok(n) if n > 0) {
                        break;
                    }
                    worked = true;
                }
                let req = match head_end(buf) {
                    Some(end) => {
                        let r = parse_head(&buf[..end]);
                        buf.drain(..end);
                        Some(r)
                    }
                    None if buf.len() >= MAX_HEAD => Some(Err(HttpError::Malformed("too long"))),
                    None if s.state() == tcp::State::CloseWait && !s.can_recv() => {
                        // The client closed without a (complete) request.
                        s.close();
                        buf.clear();
                        None
                    }
                    None => None,
                };
                if let Some(r) = req {
                    self.conns[i].0 = self.respond(r);
                    worked = true;
                }
            }
            // Writing: the head, then the file as the socket has room.
            let s = sockets.get_mut::<tcp::Socket>(h);
            if let Conn::Writing {
                out,
                off,
                body,
                keep_alive,
            } = &mut self.conns[i].0
            {
                if !s.is_active() {
                    self.conns[i].0 = Conn::Reading;
                    self.conns[i].1.clear();
                    continue;
                }
                // The head first.
                while *off < out.len() {
                    match s.send_slice(&out[*off..]) {
                        Ok(n) if n > 0 => {
                            *off += n;
                            worked = true;
                        }
                        _ => break,
                    }
                }
                // Then the file, read straight into the socket's send buffer: one copy.
                while *off == out.len() {
                    let Some((f, left)) = body.as_mut() else {
                        break;
                    };
                    if *left == 0 {
                        *body = None;
                        break;
                    }
                    if s.send_capacity() - s.send_queue() < CHUNK.min(*left as usize) {
                        break;
                    }
                    // (bytes read, whether the file still has what it promised)
                    let read = s.send(|room| {
                        let want = room.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                        match f.read(&mut room[..want]) {
                            Ok(n) => (n, (n, n > 0 || want == 0)),
                            Err(_) => (0, (0, false)),
                        }
                    });
                    match read {
                        Ok((0, true)) => break,
                        Ok((n, true)) => {
                            *left -= n as u64;
                            worked = true;
                        }
                        _ => {
                            // The file shrank or failed under us: the length promised
                            // cannot be kept, so end the connection.
                            s.abort();
                            *body = None;
                            *keep_alive = false;
                            break;
                        }
                    }
                }
                if *off == out.len() && body.is_none() {
                    if !*keep_alive {
                        s.close();
                    }
                    self.conns[i].0 = Conn::Reading;
                    worked = true;
                }
            }
        }
        self.tcp.relisten(sockets);
        worked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse_and_bad_ones_are_refused() {
        let r = parse_head(b"GET /a%20b.txt?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").expect("parse");
        assert_eq!(r.path, "/a b.txt");
        assert!(r.keep_alive);
        let r = parse_head(b"HEAD / HTTP/1.0\r\n\r\n").expect("parse");
        assert!(!r.keep_alive);
        let r = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").expect("parse");
        assert!(!r.keep_alive);
        for bad in [
            &b"GET / HTTP/2\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET noslash HTTP/1.1\r\n\r\n",
            b"GET /%zz HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
        ] {
            assert!(
                parse_head(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn paths_cannot_leave_the_root() {
        let root = Path::new("/srv/www");
        assert_eq!(
            resolve(root, "/a/b.txt"),
            Some(PathBuf::from("/srv/www/a/b.txt"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../x"), None);
        assert_eq!(resolve(root, "/a\\..\\x"), None);
        assert_eq!(mime(Path::new("x.HTML")), "text/html; charset=utf-8");
        assert_eq!(mime(Path::new("x.bin")), "application/octet-stream");
    }

    #[test]
    fn heads_end_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}

//! A xenstore client speaking the wire protocol itself, over the xenstored Unix socket
//! (`/run/xenstored/socket`, dom0) or the kernel's `/dev/xen/xenbus` (any domain).
//!
//! Every message is a 16-byte header `{type, req_id, tx_id, len}` (native-endian `u32`s, as
//! in Xen's `xs_wire.h`) followed by `len` bytes of payload; `len` never exceeds
//! [`PAYLOAD_MAX`]. Requests are answered in order with the same `type` (or `ERROR` and an
//! errno name); watch events (`WATCH_EVENT`) arrive interleaved with answers at any time.
//!
//! A reader thread owns the read side (started by the first request that waits for an
//! answer, or the first look for watch events): it checks every header, refuses (and stops at) a
//! payload over [`PAYLOAD_MAX`], routes watch events to one queue and answers to another. The
//! caller's side sends one request at a time and waits for its answer with a timeout. Nothing
//! the peer sends is trusted: lengths, types, request ids, NUL terminators and UTF-8 are all
//! checked, and a malformed answer is an error, never a panic.
//!
//! Written here rather than taken from a crate: the maintained Rust xenstore clients that
//! speak both transports (`xenstore-rs` 0.8, GPL-3.0-only; `krata-xenstore`, GPL-2.0-or-later
//! and tokio-based) carry licences Ferrite's MIT/Apache-2.0 cannot take, and binding the C
//! `libxenstore` would make the app binaries dynamic and pull C into a domU initramfs. The
//! protocol is small: one header, a dozen message types.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// Largest payload of one message (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;
/// Longest absolute path xenstored accepts (`XENSTORE_ABS_PATH_MAX`).
pub const ABS_PATH_MAX: usize = 3072;
/// The xenstored socket in dom0.
pub const SOCKET_PATH: &str = "/run/xenstored/socket";
/// The kernel's xenstore device (any domain).
pub const XENBUS_PATH: &str = "/dev/xen/xenbus";
/// How long a request waits for its answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most watch events kept unread; beyond that the oldest are dropped (and counted).
pub const EVENT_QUEUE_MAX: usize = 4096;

/// Message types of the wire protocol (`enum xsd_sockmsg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// List a node's children.
    Directory = 1,
    /// Read a node's value.
    Read = 2,
    /// Read a node's permissions.
    GetPerms = 3,
    /// Register a watch.
    Watch = 4,
    /// Remove a watch.
    Unwatch = 5,
    /// Start a transaction.
    TransactionStart = 6,
    /// Commit or abort a transaction.
    TransactionEnd = 7,
    /// The home path of a domain.
    GetDomainPath = 10,
    /// Write a node's value (creating it and its parents).
    Write = 11,
    /// Create a node.
    Mkdir = 12,
    /// Remove a node and its children.
    Rm = 13,
    /// Set a node's permissions.
    SetPerms = 14,
    /// A watch fired (unsolicited).
    WatchEvent = 15,
    /// An error answer: the payload is an errno name.
    Error = 16,
}

impl Op {
    fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Directory,
            2 => Self::Read,
            3 => Self::GetPerms,
            4 => Self::Watch,
            5 => Self::Unwatch,
            6 => Self::TransactionStart,
            7 => Self::TransactionEnd,
            10 => Self::GetDomainPath,
            11 => Self::Write,
            12 => Self::Mkdir,
            13 => Self::Rm,
            14 => Self::SetPerms,
            15 => Self::WatchEvent,
            16 => Self::Error,
            _ => return None,
        })
    }
}

/// What went wrong talking to xenstore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XsError {
    /// Neither transport exists here.
    #[error(
        "no xenstore here: neither {SOCKET_PATH} (start xenstored in dom0) nor {XENBUS_PATH} \
         (a Xen domain with xenfs/xenbus) exists"
    )]
    Unavailable,
    /// Opening or using the transport failed.
    #[error("xenstore {what}: {err}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error, as text.
        err: String,
    },
    /// The connection is gone (the reader stopped).
    #[error("xenstore connection closed: {0}")]
    Closed(String),
    /// No answer in time.
    #[error("xenstore did not answer {op:?} within {ms} ms")]
    Timeout {
        /// The request.
        op: Op,
        /// How long we waited.
        ms: u64,
    },
    /// The peer sent something that is not a valid message.
    #[error("malformed xenstore message: {0}")]
    Malformed(String),
    /// xenstored refused the request with this errno name (`ENOENT`, `EACCES`, `EAGAIN`…).
    #[error("xenstore refused {op:?} {path}: {errno}")]
    Remote {
        /// The request.
        op: Op,
        /// The path (or argument) of the request.
        path: String,
        /// The errno name xenstored sent.
        errno: String,
    },
    /// A request that could not be sent as asked.
    #[error("bad xenstore request: {0}")]
    BadRequest(String),
}

impl XsError {
    /// Whether this is xenstored saying the node does not exist.
    pub fn is_enoent(&self) -> bool {
        matches!(self, XsError::Remote { errno, .. } if errno == "ENOENT")
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> XsError {
    move |e| XsError::Io {
        what,
        err: e.to_string(),
    }
}

/// One message as received: type, request id, transaction id and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Message type (raw; checked when interpreted).
    pub ty: u32,
    /// Request id (echoed by xenstored).
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload, at most [`PAYLOAD_MAX`] bytes.
    pub payload: Vec<u8>,
}

/// Encodes one message.
pub fn encode(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, XsError> {
    if payload.len() > PAYLOAD_MAX {
        return Err(XsError::BadRequest(format!(
            "payload of {} bytes exceeds {PAYLOAD_MAX}",
            payload.len()
        )));
    }
    let mut m = Vec::with_capacity(16 + payload.len());
    for w in [ty, req_id, tx_id, payload.len() as u32] {
        m.extend_from_slice(&w.to_ne_bytes());
    }
    m.extend_from_slice(payload);
    Ok(m)
}

/// Reads one message, refusing a length over [`PAYLOAD_MAX`] before reading the payload.
pub fn read_msg(r: &mut impl Read) -> Result<Msg, XsError> {
    let mut h = [0u8; 16];
    r.read_exact(&mut h)
        .map_err(|e| XsError::Closed(e.to_string()))?;
    let w = |i: usize| u32::from_ne_bytes([h[4 * i], h[4 * i + 1], h[4 * i + 2], h[4 * i + 3]]);
    let len = w(3) as usize;
    if len > PAYLOAD_MAX {
        return Err(XsError::Malformed(format!(
            "payload length {len} exceeds {PAYLOAD_MAX}"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .map_err(|e| XsError::Closed(format!("truncated payload: {e}")))?;
    Ok(Msg {
        ty: w(0),
        req_id: w(1),
        tx_id: w(2),
        payload,
    })
}

/// A fired watch: the path that changed and the token given to [`Xenstore::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node that changed (or the watched path itself, for the event at registration).
    pub path: String,
    /// The watch's token.
    pub token: String,
}

impl WatchEvent {
    fn parse(p: &[u8]) -> Result<Self, XsError> {
        let mut it = p.split(|&b| b == 0);
        let path = it.next().unwrap_or_default();
        let token = it
            .next()
            .ok_or_else(|| XsError::Malformed("watch event without a token".into()))?;
        Ok(Self {
            path: utf8(path)?,
            token: utf8(token)?,
        })
    }
}

fn utf8(b: &[u8]) -> Result<String, XsError> {
    String::from_utf8(b.to_vec()).map_err(|_| XsError::Malformed("text is not UTF-8".into()))
}

/// One permission entry: a domain and what it may do (`n`, `r`, `w`, `b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Perm {
    /// The domain.
    pub domid: u16,
    /// `'n'` none, `'r'` read, `'w'` write, `'b'` both.
    pub access: char,
}

impl Perm {
    /// Owner entry (first in a list): `domid` owns the node; `access` is what every domain
    /// not listed after it may do.
    pub fn owner(domid: u16, others: char) -> Self {
        Self {
            domid,
            access: others,
        }
    }

    /// `domid` may read.
    pub fn read(domid: u16) -> Self {
        Self { domid, access: 'r' }
    }
}

/// A transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxId(pub u32);

/// No transaction.
pub const NO_TX: TxId = TxId(0);

/// One request of a [`Batch`].
#[derive(Debug, Clone)]
struct Req {
    op: Op,
    tx: TxId,
    /// The encoded payload, or why it could not be encoded.
    payload: Result<Vec<u8>, XsError>,
    what: String,
}

impl Req {
    /// Checks an answer to this request: an `ERROR` is the errno, a wrong type is malformed,
    /// and the requests that answer `OK` must say so.
    fn answer(&self, a: Msg) -> Result<Vec<u8>, XsError> {
        let op = self.op;
        if a.ty == Op::Error as u32 {
            let errno = a.payload.split(|&b| b == 0).next().unwrap_or_default();
            return Err(XsError::Remote {
                op,
                path: self.what.clone(),
                errno: String::from_utf8_lossy(errno).into_owned(),
            });
        }
        if a.ty != op as u32 {
            return Err(XsError::Malformed(format!(
                "answer of type {} ({:?}) to a {op:?} request",
                a.ty,
                Op::from_raw(a.ty)
            )));
        }
        let says_ok = matches!(
            op,
            Op::Write | Op::Mkdir | Op::Rm | Op::SetPerms | Op::Watch | Op::Unwatch
        );
        if says_ok && a.payload.strip_suffix(b"\0").unwrap_or(&a.payload) != b"OK" {
            return Err(XsError::Malformed(format!(
                "{op:?} answered {:?}, not OK",
                String::from_utf8_lossy(&a.payload)
            )));
        }
        Ok(a.payload)
    }
}

/// Requests sent together ([`Xenstore::run`], [`Xenstore::send`]): xenstored applies them in
/// order, and they cost one round trip.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    reqs: Vec<Req>,
}

impl Batch {
    /// No requests yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, op: Op, tx: TxId, payload: Result<Vec<u8>, XsError>, what: &str) -> usize {
        self.reqs.push(Req {
            op,
            tx,
            payload,
            what: what.to_owned(),
        });
        self.reqs.len() - 1
    }

    /// Reads `path`; returns the index of its answer.
    pub fn read(&mut self, path: &str) -> usize {
        self.push(Op::Read, NO_TX, path_arg(path), path)
    }

    /// Writes `value` to `path`.
    pub fn write(&mut self, path: &str, value: &[u8]) -> usize {
        let p = path_arg(path).map(|mut p| {
            p.extend_from_slice(value);
            p
        });
        self.push(Op::Write, NO_TX, p, path)
    }

    /// Creates `path` (no error if it exists).
    pub fn mkdir(&mut self, path: &str) -> usize {
        self.push(Op::Mkdir, NO_TX, path_arg(path), path)
    }

    /// Sets `path`'s permissions (the first entry names the owner and the default access).
    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> usize {
        let p = if perms.is_empty() || perms.iter().any(|p| !"nrwb".contains(p.access)) {
            Err(XsError::BadRequest(format!("bad permissions {perms:?}")))
        } else {
            path_arg(path).map(|mut p| {
                for perm in perms {
                    p.extend_from_slice(format!("{}{}", perm.access, perm.domid).as_bytes());
                    p.push(0);
                }
                p
            })
        };
        self.push(Op::SetPerms, NO_TX, p, path)
    }

    /// Registers a watch on `path` (token `token`); xenstored fires it once at once.
    pub fn watch(&mut self, path: &str, token: &str) -> usize {
        let p = path_arg(path).and_then(|mut p| {
            p.extend_from_slice(&path_arg(token)?);
            Ok(p)
        });
        self.push(Op::Watch, NO_TX, p, path)
    }

    /// Number of requests.
    pub fn len(&self) -> usize {
        self.reqs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

struct Conn {
    writer: Box<dyn Write + Send>,
    answers: Receiver<Result<Msg, XsError>>,
    next_id: u32,
    /// The read side until the reader thread is started: by the first request that waits
    /// for its answer or the first look for watch events. A connection that only sends
    /// (an app posting its request) never starts one; its answers wait in the connection
    /// and are skipped if a reader starts later.
    idle_reader: Option<IdleReader>,
}

/// What the reader thread takes when it starts.
struct IdleReader {
    r: Box<dyn Read + Send>,
    answers: Sender<Result<Msg, XsError>>,
    events: std::sync::mpsc::SyncSender<WatchEvent>,
    signal: Option<UnixStream>,
}

impl Conn {
    /// Starts the reader thread unless it runs already.
    fn start_reader(&mut self) {
        if let Some(i) = self.idle_reader.take() {
            // The reader ends when the connection does (a read error or EOF).
            std::thread::Builder::new()
                .name("xenstore-reader".into())
                .spawn(move || reader(i.r, i.answers, i.events, i.signal))
                .map(drop)
                .unwrap_or_default();
        }
    }
}

/// A connection to xenstore.
pub struct Xenstore {
    conn: Mutex<Conn>,
    /// The socket, to shut down on drop so the reader thread ends (`None` on xenbus, whose
    /// reader ends with the process).
    socket: Option<UnixStream>,
    events: Mutex<Receiver<WatchEvent>>,
    /// Readable while watch events may be queued (the reader writes a byte after each).
    signal: UnixStream,
    timeout: Duration,
}

impl std::fmt::Debug for Xenstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xenstore").finish_non_exhaustive()
    }
}

fn reader(
    mut r: impl Read,
    answers: Sender<Result<Msg, XsError>>,
    events: std::sync::mpsc::SyncSender<WatchEvent>,
    signal: Option<UnixStream>,
) {
    loop {
        match read_msg(&mut r) {
            Ok(m) if m.ty == Op::WatchEvent as u32 => match WatchEvent::parse(&m.payload) {
                // A full queue drops the event: the reader of events re-reads state anyway.
                Ok(ev) => {
                    if let Err(mpsc::TrySendError::Disconnected(_)) = events.try_send(ev) {
                        return;
                    }
                    // Non-blocking: a full signal socket is readable already.
                    if let Some(mut s) = signal.as_ref() {
                        let _ = s.write(&[1]);
                    }
                }
                Err(e) => {
                    let _ = answers.send(Err(e));
                    return;
                }
            },
            Ok(m) => {
                if answers.send(Ok(m)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = answers.send(Err(e));
                return;
            }
        }
    }
}

fn path_arg(path: &str) -> Result<Vec<u8>, XsError> {
    if path.is_empty() || path.len() > ABS_PATH_MAX || path.contains('\0') {
        return Err(XsError::BadRequest(format!("bad path {path:?}")));
    }
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    Ok(p)
}

impl Xenstore {
    /// Connects the way the C library does: the xenstored socket when it exists (dom0),
    /// else `/dev/xen/xenbus`.
    pub fn open() -> Result<Self, XsError> {
        if Path::new(SOCKET_PATH).exists() {
            let s =
                UnixStream::connect(SOCKET_PATH).map_err(io("connect to the xenstored socket"))?;
            return Self::from_stream(s);
        }
        if Path::new(XENBUS_PATH).exists() {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(XENBUS_PATH)
                .map_err(io("open /dev/xen/xenbus"))?;
            let r = f.try_clone().map_err(io("dup /dev/xen/xenbus"))?;
            return Self::from_parts(Box::new(f), r);
        }
        Err(XsError::Unavailable)
    }

    /// A client over a connected stream (the xenstored socket, or a test peer).
    pub fn from_stream(s: UnixStream) -> Result<Self, XsError> {
        let r = s.try_clone().map_err(io("dup the socket"))?;
        let sd = s.try_clone().map_err(io("dup the socket"))?;
        let mut xs = Self::from_parts(Box::new(s), r)?;
        xs.socket = Some(sd);
        Ok(xs)
    }

    fn from_parts(
        writer: Box<dyn Write + Send>,
        r: impl Read + Send + 'static,
    ) -> Result<Self, XsError> {
        let (atx, arx) = mpsc::channel();
        let (etx, erx) = mpsc::sync_channel(EVENT_QUEUE_MAX);
        let (signal, sig_w) = UnixStream::pair().map_err(io("make the event signal pair"))?;
        signal
            .set_nonblocking(true)
            .and_then(|()| sig_w.set_nonblocking(true))
            .map_err(io("make the event signal pair"))?;
        let idle_reader = Some(IdleReader {
            r: Box::new(r),
            answers: atx,
            events: etx,
            signal: Some(sig_w),
        });
        Ok(Self {
            signal,
            conn: Mutex::new(Conn {
                writer,
                answers: arx,
                next_id: 1,
                idle_reader,
            }),
            events: Mutex::new(erx),
            socket: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// A descriptor that polls readable when watch events may be queued: poll it with other
    /// descriptors, then call [`Xenstore::clear_event_signal`] and take the events with
    /// [`Xenstore::next_event`] (`Duration::ZERO`).
    pub fn event_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.start_reader();
        std::os::fd::AsFd::as_fd(&self.signal)
    }

    /// Consumes the readiness of [`Xenstore::event_fd`] (bounded; non-blocking).
    pub fn clear_event_signal(&self) {
        let mut b = [0u8; 256];
        for _ in 0..64 {
            match (&self.signal).read(&mut b) {
                Ok(n) if n == b.len() => continue,
                _ => break,
            }
        }
    }

    fn start_reader(&self) {
        self.conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start_reader();
    }

    /// Sets how long requests wait for their answer.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Sends one request and returns the answer's payload (checked to be of type `op`).
    pub fn request(
        &self,
        op: Op,
        tx: TxId,
        payload: &[u8],
        what: &str,
    ) -> Result<Vec<u8>, XsError> {
        let mut b = Batch::new();
        b.push(op, tx, Ok(payload.to_vec()), what);
        self.run(&b)?
            .pop()
            .unwrap_or_else(|| Err(XsError::Closed("no answer".into())))
    }

    /// Sends every request of `b` at once (pipelined: xenstored answers one connection's
    /// requests in order, so `n` requests cost one round trip, not `n`) and waits for all
    /// their answers. The outer error is the connection's; each request has its own result
    /// (a request that could not be encoded is refused locally and not sent).
    pub fn run(&self, b: &Batch) -> Result<Vec<Result<Vec<u8>, XsError>>, XsError> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        c.start_reader();
        let mut out: Vec<Option<Result<Vec<u8>, XsError>>> = Vec::with_capacity(b.reqs.len());
        let mut waiting = std::collections::BTreeMap::new();
        for (i, r) in b.reqs.iter().enumerate() {
            match Self::send_one(&mut c, r) {
                Ok(id) => {
                    waiting.insert(id, i);
                    out.push(None);
                }
                Err(e @ XsError::BadRequest(_)) => out.push(Some(Err(e))),
                Err(e) => return Err(e),
            }
        }
        let deadline = std::time::Instant::now() + self.timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let a = match c.answers.recv_timeout(left) {
                Ok(a) => a?,
                Err(RecvTimeoutError::Timeout) => {
                    let i = waiting.values().next().copied().unwrap_or(0);
                    return Err(XsError::Timeout {
                        op: b.reqs[i].op,
                        ms: self.timeout.as_millis() as u64,
                    });
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(XsError::Closed("the reader stopped".into()));
                }
            };
            // An answer to an earlier request that timed out or was sent without waiting
            // (`Xenstore::send`): skip it.
            let Some(i) = waiting.remove(&a.req_id) else {
                continue;
            };
            out[i] = Some(b.reqs[i].answer(a));
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(XsError::Closed("no answer".into()))))
            .collect())
    }

    /// Sends every request of `b` without waiting for the answers (they are skipped when
    /// they arrive): for writes nothing later depends on.
    pub fn send(&self, b: &Batch) -> Result<(), XsError> {
        let mut c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        for r in &b.reqs {
            match Self::send_one(&mut c, r) {
                Ok(_) | Err(XsError::BadRequest(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn send_one(c: &mut Conn, r: &Req) -> Result<u32, XsError> {
        let payload = r.payload.as_ref().map_err(Clone::clone)?;
        let id = c.next_id;
        c.next_id = c.next_id.wrapping_add(1);
        let m = encode(r.op as u32, id, r.tx.0, payload)?;
        // One message per write: /dev/xen/xenbus takes one message per write call.
        c.writer.write_all(&m).map_err(io("send"))?;
        c.writer.flush().map_err(io("send"))?;
        Ok(id)
    }

    fn ok(&self, op: Op, tx: TxId, payload: &[u8], what: &str) -> Result<(), XsError> {
        let a = self.request(op, tx, payload, what)?;
        if a.strip_suffix(b"\0").unwrap_or(&a) == b"OK" {
            Ok(())
        } else {
            Err(XsError::Malformed(format!(
                "{op:?} answered {:?}, not OK",
                String::from_utf8_lossy(&a)
            )))
        }
    }

    /// Reads a node's value (bytes, at most [`PAYLOAD_MAX`]).
    pub fn read_in(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        self.request(Op::Read, tx, &path_arg(path)?, path)
    }

    /// Reads a node's value.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        self.read_in(NO_TX, path)
    }

    /// Reads a node's value as UTF-8 text.
    pub fn read_string(&self, path: &str) -> Result<String, XsError> {
        utf8(&self.read(path)?)
    }

    /// Reads a node, `None` when it does not exist.
    pub fn read_opt(&self, path: &str) -> Result<Option<Vec<u8>>, XsError> {
        match self.read(path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_enoent() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a node's value, creating it (and missing parents).
    pub fn write_in(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        let mut p = path_arg(path)?;
        p.extend_from_slice(value);
        self.ok(Op::Write, tx, &p, path)
    }

    /// Writes a node's value.
    pub fn write(&self, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.write_in(NO_TX, path, value)
    }

    /// Creates a node (no error if it exists).
    pub fn mkdir_in(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.ok(Op::Mkdir, tx, &path_arg(path)?, path)
    }

    /// Removes a node and everything under it (no error if it does not exist).
    pub fn rm_in(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        match self.ok(Op::Rm, tx, &path_arg(path)?, path) {
            Err(e) if e.is_enoent() => Ok(()),
            r => r,
        }
    }

    /// Removes a node and everything under it.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        self.rm_in(NO_TX, path)
    }

    /// The names of a node's children.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        let a = self.request(Op::Directory, NO_TX, &path_arg(path)?, path)?;
        a.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(utf8)
            .collect()
    }

    /// Sets a node's permissions: the first entry names the owner and the default access.
    pub fn set_perms_in(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        if perms.is_empty() || perms.iter().any(|p| !"nrwb".contains(p.access)) {
            return Err(XsError::BadRequest(format!("bad permissions {perms:?}")));
        }
        let mut p = path_arg(path)?;
        for perm in perms {
            p.extend_from_slice(format!("{}{}", perm.access, perm.domid).as_bytes());
            p.push(0);
        }
        self.ok(Op::SetPerms, tx, &p, path)
    }

    /// Registers a watch on `path` and everything under it. xenstored fires it once at once.
    pub fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let mut p = path_arg(path)?;
        p.extend_from_slice(&path_arg(token)?);
        self.ok(Op::Watch, NO_TX, &p, path)
    }

    /// Removes a watch.
    pub fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let mut p = path_arg(path)?;
        p.extend_from_slice(&path_arg(token)?);
        self.ok(Op::Unwatch, NO_TX, &p, path)
    }

    /// Waits up to `timeout` for a watch event.
    pub fn next_event(&self, timeout: Duration) -> Result<Option<WatchEvent>, XsError> {
        self.start_reader();
        let ev = self.events.lock().unwrap_or_else(|e| e.into_inner());
        match ev.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                Err(XsError::Closed("the reader stopped".into()))
            }
        }
    }

    /// The home path of `domid` (`/local/domain/<domid>`).
    pub fn domain_path(&self, domid: u16) -> Result<String, XsError> {
        let a = self.request(
            Op::GetDomainPath,
            NO_TX,
            &path_arg(&domid.to_string())?,
            "domain path",
        )?;
        utf8(a.strip_suffix(b"\0").unwrap_or(&a))
    }

    /// Starts a transaction.
    pub fn transaction_start(&self) -> Result<TxId, XsError> {
        let a = self.request(Op::TransactionStart, NO_TX, b"\0", "transaction")?;
        let s = utf8(a.strip_suffix(b"\0").unwrap_or(&a))?;
        s.parse()
            .map(TxId)
            .map_err(|_| XsError::Malformed(format!("transaction id {s:?}")))
    }

    /// Ends a transaction: `Ok(true)` committed, `Ok(false)` when xenstored says `EAGAIN`
    /// (another writer raced: run the transaction again).
    pub fn transaction_end(&self, tx: TxId, commit: bool) -> Result<bool, XsError> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        match self.ok(Op::TransactionEnd, tx, arg, "transaction") {
            Ok(()) => Ok(true),
            Err(XsError::Remote { errno, .. }) if errno == "EAGAIN" => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Xenstore {
    fn drop(&mut self) {
        if let Some(s) = &self.socket {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A xenstore-protocol peer on the other end of a socket pair: answers each request
    /// with what `answer` returns (a list of raw messages to send back).
    pub(crate) fn peer(
        answer: impl Fn(&Msg) -> Vec<Vec<u8>> + Send + 'static,
    ) -> (Xenstore, std::thread::JoinHandle<Vec<Msg>>) {
        let (a, mut b) = UnixStream::pair().expect("socketpair");
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Ok(m) = read_msg(&mut b) {
                for out in answer(&m) {
                    if b.write_all(&out).is_err() {
                        return seen;
                    }
                }
                seen.push(m);
            }
            seen
        });
        let mut xs = Xenstore::from_stream(a).expect("client");
        xs.set_timeout(Duration::from_millis(500));
        (xs, h)
    }

    fn reply(m: &Msg, payload: &[u8]) -> Vec<u8> {
        encode(m.ty, m.req_id, m.tx_id, payload).expect("encode")
    }

    /// A small in-memory store that answers like xenstored, for the framing tests.
    /// A client connected to a small in-memory store that answers like xenstored (READ,
    /// WRITE, DIRECTORY, WATCH with its initial event, GET_DOMAIN_PATH; a transaction that
    /// always asks to be retried), as domain 7: relative paths are under `/local/domain/7`.
    pub(crate) fn store_peer() -> (Xenstore, std::thread::JoinHandle<Vec<Msg>>) {
        let db = Mutex::new(std::collections::BTreeMap::<String, Vec<u8>>::new());
        peer(move |m| {
            let mut db = db.lock().expect("db");
            let mut parts = m.payload.splitn(2, |&b| b == 0);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let rest = parts.next().unwrap_or_default().to_vec();
            // The client is domain 7: like xenstored, a relative path is under its home.
            let node = match path.starts_with('/') {
                true => path.clone(),
                false => format!("/local/domain/7/{path}"),
            };
            let err = |e: &str| {
                let mut p = e.as_bytes().to_vec();
                p.push(0);
                encode(Op::Error as u32, m.req_id, 0, &p).expect("encode")
            };
            match Op::from_raw(m.ty) {
                Some(Op::Write) => {
                    db.insert(node, rest);
                    vec![reply(m, b"OK\0")]
                }
                Some(Op::Rm) => {
                    let sub = format!("{node}/");
                    db.retain(|k, _| k != &node && !k.starts_with(&sub));
                    vec![reply(m, b"OK\0")]
                }
                Some(Op::Read) => match db.get(&node) {
                    Some(v) => vec![reply(m, v)],
                    None => vec![err("ENOENT")],
                },
                Some(Op::Directory) => {
                    let prefix = format!("{node}/");
                    let mut out = Vec::new();
                    for k in db.keys().filter_map(|k| k.strip_prefix(&prefix)) {
                        let child = k.split('/').next().unwrap_or_default();
                        let mut c = child.as_bytes().to_vec();
                        c.push(0);
                        if !out.windows(c.len()).any(|w| w == c.as_slice()) {
                            out.extend_from_slice(&c);
                        }
                    }
                    vec![reply(m, &out)]
                }
                Some(Op::Watch) => {
                    let token = rest.split(|&b| b == 0).next().unwrap_or_default().to_vec();
                    let mut ev = path.clone().into_bytes();
                    ev.push(0);
                    ev.extend_from_slice(&token);
                    ev.push(0);
                    vec![
                        reply(m, b"OK\0"),
                        encode(Op::WatchEvent as u32, 0, 0, &ev).expect("encode"),
                    ]
                }
                Some(Op::GetDomainPath) => {
                    vec![reply(m, format!("/local/domain/{path}\0").as_bytes())]
                }
                Some(Op::TransactionStart) => vec![reply(m, b"7\0")],
                Some(Op::TransactionEnd) if m.tx_id == 7 && rest.is_empty() && path == "T" => {
                    vec![err("EAGAIN")]
                }
                _ => vec![err("EINVAL")],
            }
        })
    }

    #[test]
    fn a_batch_answers_each_request_in_its_place_and_unwaited_answers_are_skipped() {
        let (xs, h) = store_peer();
        // Sent without waiting: its OK arrives later and must not be taken for another's.
        let mut b = Batch::new();
        b.write("/a", b"1");
        xs.send(&b).expect("send");
        let mut b = Batch::new();
        b.write("/b", b"2");
        b.read("/missing");
        b.read("/a");
        b.read("/b");
        b.read("bad\0path");
        assert_eq!(b.len(), 5);
        let r = xs.run(&b).expect("batch");
        assert_eq!(r[0], Ok(b"OK\0".to_vec()));
        assert!(r[1].as_ref().is_err_and(|e| e.is_enoent()), "{:?}", r[1]);
        assert_eq!(r[2], Ok(b"1".to_vec()));
        assert_eq!(r[3], Ok(b"2".to_vec()));
        assert!(
            matches!(r[4], Err(XsError::BadRequest(_))),
            "refused locally"
        );
        drop(xs);
        // The bad path never went out: 1 + 4 messages.
        assert_eq!(h.join().expect("peer").len(), 5);
    }

    #[test]
    fn read_write_directory_and_errors() {
        let (xs, h) = store_peer();
        xs.write("/local/domain/3/data/ferrite/mac", b"02:00:00:00:00:03")
            .expect("write");
        xs.write("/local/domain/3/data/ferrite/state", b"1")
            .expect("write");
        assert_eq!(
            xs.read_string("/local/domain/3/data/ferrite/mac")
                .expect("read"),
            "02:00:00:00:00:03"
        );
        let mut d = xs.directory("/local/domain/3/data/ferrite").expect("dir");
        d.sort();
        assert_eq!(d, ["mac", "state"]);
        let e = xs.read("/local/domain/3/nope").expect_err("missing");
        assert!(e.is_enoent(), "{e}");
        assert_eq!(xs.read_opt("/nope").expect("read_opt"), None);
        assert_eq!(xs.domain_path(5).expect("path"), "/local/domain/5");
        let tx = xs.transaction_start().expect("tx");
        assert_eq!(tx, TxId(7));
        assert!(
            !xs.transaction_end(tx, true).expect("end"),
            "EAGAIN means retry"
        );
        drop(xs);
        let seen = h.join().expect("peer");
        // Request ids are distinct and the transaction id travels in the header.
        let mut ids: Vec<u32> = seen.iter().map(|m| m.req_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), seen.len());
        assert_eq!(seen.last().map(|m| m.tx_id), Some(7));
        // Paths go out NUL-terminated, values verbatim after the path's NUL.
        assert_eq!(
            seen[0].payload,
            b"/local/domain/3/data/ferrite/mac\x0002:00:00:00:00:03"
        );
    }

    #[test]
    fn watch_events_arrive_between_answers() {
        let (xs, _h) = store_peer();
        xs.watch("/local/domain/3/data/ferrite", "fe3")
            .expect("watch");
        // The answer to the next request is still matched although an event came first.
        xs.write("/x", b"1").expect("write");
        let ev = xs
            .next_event(Duration::from_secs(2))
            .expect("event")
            .expect("one event");
        assert_eq!(ev.path, "/local/domain/3/data/ferrite");
        assert_eq!(ev.token, "fe3");
        assert_eq!(
            xs.next_event(Duration::from_millis(20)).expect("none"),
            None
        );
    }

    #[test]
    fn oversized_reply_is_refused() {
        let (xs, _h) = peer(|m| {
            // A header claiming 4097 bytes: the client must not read (or allocate) it.
            let mut out = Vec::new();
            for w in [m.ty, m.req_id, 0, PAYLOAD_MAX as u32 + 1] {
                out.extend_from_slice(&w.to_ne_bytes());
            }
            vec![out]
        });
        let e = xs.read("/a").expect_err("oversized");
        assert!(
            matches!(e, XsError::Malformed(ref s) if s.contains("4097")),
            "{e}"
        );
        // The connection is unusable afterwards, and says so.
        assert!(xs.read("/a").is_err());
    }

    #[test]
    fn hostile_replies_are_errors_not_panics() {
        // Wrong type, missing OK, truncated payload, stale request id, garbage watch event.
        let (xs, _h) = peer(|m| match m.payload.first() {
            Some(b'1') => vec![encode(Op::Read as u32, m.req_id, 0, b"x").expect("e")],
            Some(b'2') => vec![encode(m.ty, m.req_id, 0, b"NOPE\0").expect("e")],
            Some(b'3') => vec![
                encode(m.ty, m.req_id.wrapping_sub(1), 0, b"stale").expect("e"),
                encode(m.ty, m.req_id, 0, b"fresh").expect("e"),
            ],
            Some(b'4') => {
                vec![encode(Op::TransactionStart as u32, m.req_id, 0, b"abc\0").expect("e")]
            }
            _ => {
                let mut h = encode(m.ty, m.req_id, 0, &[0u8; 8]).expect("e");
                h.truncate(16 + 3);
                vec![h]
            }
        });
        assert!(matches!(xs.write("1", b"v"), Err(XsError::Malformed(_))));
        assert!(matches!(xs.write("2", b"v"), Err(XsError::Malformed(_))));
        assert_eq!(xs.read("3").expect("fresh answer"), b"fresh");
        assert!(matches!(
            xs.request(Op::TransactionStart, NO_TX, b"4\0", "t")
                .and_then(|a| utf8(&a))
                .map(|s| s.trim_end_matches('\0').parse::<u32>()),
            Ok(Err(_))
        ));
        let e = xs.read("5").expect_err("truncated");
        assert!(
            matches!(e, XsError::Timeout { .. } | XsError::Closed(_)),
            "{e}"
        );
    }

    #[test]
    fn requests_that_cannot_be_sent_are_refused_locally() {
        let (xs, h) = store_peer();
        assert!(matches!(xs.read(""), Err(XsError::BadRequest(_))));
        assert!(matches!(xs.read("a\0b"), Err(XsError::BadRequest(_))));
        let long = "/".repeat(ABS_PATH_MAX + 1);
        assert!(matches!(xs.read(&long), Err(XsError::BadRequest(_))));
        assert!(matches!(
            xs.write("/a", &vec![0u8; PAYLOAD_MAX]),
            Err(XsError::BadRequest(_))
        ));
        assert!(matches!(
            xs.set_perms_in(
                NO_TX,
                "/a",
                &[Perm {
                    domid: 0,
                    access: 'x'
                }]
            ),
            Err(XsError::BadRequest(_))
        ));
        drop(xs);
        assert!(
            h.join().expect("peer").is_empty(),
            "nothing reached the wire"
        );
    }
}

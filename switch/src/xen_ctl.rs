//! The xenstore transport of the handshake: how an app in a domU attaches to a server in dom0
//! (or a driver domain) when no Unix socket can reach it.
//!
//! # Schema (version 3)
//!
//! A domain may run several apps; each has its own directory, named by the app's name. The
//! app (frontend, domain `A`, name `N`) writes only under its own
//! `/local/domain/A/data/ferrite/N/`, which the toolstack makes writable by the guest:
//!
//! | node | value |
//! |---|---|
//! | `attach` | `3 <nonce> <mac> <event-channel> <ref>,<ref>,...` ([`AttachRequest`]) |
//! | `state` | xenbus state number ([`XbState`]): 3 after `attach`, 4 once answered, 5 leaving |
//!
//! `attach` is one line, so the server reads a whole request in one read and never a mix of
//! two handshakes: the schema version, a nonce the app picks anew for every handshake
//! (decimal, not 0), the MAC (`xx:xx:xx:xx:xx:xx`, unicast, not zero), the unbound
//! event-channel port the app allocated for the server, and the references of the
//! *reference-list grant* (comma-separated, 2 to [`MAX_LIST_REFS`]).
//!
//! The reference-list grant is a small read-only grant whose pages hold the references of
//! the port memory: `FRRL` (u32 magic), the count (u32), then the references (u32 each,
//! little-endian). One xenstore node and one small map replace hundreds of references in
//! xenstore: every xenstore round trip from a domU costs a hypervisor event and a dom0
//! context switch, the map costs microseconds.
//!
//! The server (backend, domain `S`) answers under `/local/domain/S/backend/ferrite/A/N/`, a
//! directory it owns and makes readable by `A` alone:
//!
//! | node | value |
//! |---|---|
//! | `answer` | `<nonce> <instance> connected <pool> <port>` or `<nonce> <instance> refused <why>` ([`Answer`]) |
//! | `state` | xenbus state number, written after `answer`: 4 connected, 6 refused |
//!
//! `instance` changes every time the server starts; `pool` is the pool id the app's buffer
//! handles must carry; `port` the switch port number.
//!
//! # One round (DESIGN §5, xenbus numbering)
//!
//! 1. The app lays its rings out in its granted memory, allocates an event channel, and
//!    sends `attach` and `state = 3` (Initialised) by paths relative to its domain's home,
//!    without waiting for the replies (it needs neither its domain id nor a watch).
//! 2. The server, woken by its watch on the app's `state` node, reads `state`, `attach` and
//!    its own `answer` (one round trip), checks every field ([`AttachRequest::parse`], the
//!    name and MAC against its policy, [`RefList::parse`]), maps the reference list and the
//!    port, binds the event channel and adds the port; then it leaves its answer in the
//!    port's header page (`grant_pool::PortAnswer`), rings the app's event channel, and
//!    sends `answer` and `state = 4` (the first time also the directory and its
//!    permissions) without waiting.
//! 3. The app, woken by its event channel, finds the answer in its own memory and is
//!    attached when it names its nonce; it then writes `state = 4` without waiting. It
//!    reads the backend's `answer` only when nothing came that way
//!    ([`Frontend::wait_answer`]): a refusal, or a server that answers only in xenstore.
//!
//! A refusal is `answer` (`refused`, the reason) plus `state = 6` in that app's backend
//! directory only. An app that exits writes `state = 5`. An app killed in a live domain is
//! seen through unmap-notify (its grant's control page; the server detaches it); a killed
//! server likewise (the app's grant shows no mapping and its event channel rings), and the
//! app starts a new round with a new nonce. A server that starts finds apps in `state = 4`
//! (attached to an earlier instance: they start over by themselves once they see it died)
//! and leaves them; it attaches apps in `state = 3` unless its directory holds an answer
//! to that very nonce from an earlier instance (that app is about to start over too).
//!
//! Nothing a domain writes is trusted: every value is length-bounded by xenstore
//! ([`crate::xenstore::PAYLOAD_MAX`]), parsed strictly, range-checked and refused with a
//! reason; a domain that floods its own nodes only delays its own handshake, because the
//! server coalesces events per app, handles at most [`MAX_APPS_PER_DOMAIN`] apps per domain
//! and rescans on a timer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::xenstore::{Batch, Perm, WatchEvent, Xenstore, XsError};

/// Most grant references a frontend may publish (port memory plus the backend's control
/// page): 16 Ki pages is 64 MiB of port memory.
pub const MAX_REFS: usize = 16 * 1024;
/// Most references of the reference-list grant (its pages hold up to [`MAX_REFS`]
/// references; the `xen` backend adds one control page).
pub const MAX_LIST_REFS: usize = 32;
/// Magic of the reference list, `FRRL`.
pub const REF_LIST_MAGIC: u32 = u32::from_le_bytes(*b"FRRL");
/// Most apps one domain may run against one server.
pub const MAX_APPS_PER_DOMAIN: usize = 16;
/// The schema version this module speaks.
pub const VERSION: &[u8] = b"3";
/// Event-channel ports are below this (the FIFO ABI's limit).
pub const MAX_EVTCHN_PORT: u32 = 1 << 17;
/// The frontend directory, relative to the app domain's home.
pub const FRONT_REL: &str = "data/ferrite";

/// xenbus states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum XbState {
    /// No state written.
    Unknown = 0,
    /// Starting; Hello written.
    Initialising = 1,
    /// The server accepted Hello and waits for the grant.
    InitWait = 2,
    /// The grant is published.
    Initialised = 3,
    /// Attached.
    Connected = 4,
    /// Going away.
    Closing = 5,
    /// Gone (or refused).
    Closed = 6,
}

impl XbState {
    /// Parses a `state` node's value.
    pub fn parse(v: &[u8]) -> Result<Self, XenCtlError> {
        Ok(match v {
            b"0" => Self::Unknown,
            b"1" => Self::Initialising,
            b"2" => Self::InitWait,
            b"3" => Self::Initialised,
            b"4" => Self::Connected,
            b"5" => Self::Closing,
            b"6" => Self::Closed,
            _ => return Err(field("state", "not a xenbus state 0..=6")),
        })
    }

    /// The node value.
    pub fn as_value(self) -> &'static [u8] {
        match self {
            Self::Unknown => b"0",
            Self::Initialising => b"1",
            Self::InitWait => b"2",
            Self::Initialised => b"3",
            Self::Connected => b"4",
            Self::Closing => b"5",
            Self::Closed => b"6",
        }
    }
}

/// What went wrong in the xenstore handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XenCtlError {
    /// xenstore itself failed.
    #[error(transparent)]
    Xs(#[from] XsError),
    /// A field the peer wrote is missing or wrong.
    #[error("xenstore node `{node}`: {why}")]
    Field {
        /// The node.
        node: String,
        /// What is wrong with it.
        why: String,
    },
    /// The server refused the app.
    #[error("the server refused the attach: {0}")]
    Refused(String),
    /// The other side did not reach the state in time.
    #[error(
        "timed out after {ms} ms waiting for the server to reach {want:?} (last seen {seen:?})"
    )]
    Timeout {
        /// The state waited for.
        want: XbState,
        /// The last state seen.
        seen: XbState,
        /// How long.
        ms: u64,
    },
}

fn field(node: &str, why: impl Into<String>) -> XenCtlError {
    XenCtlError::Field {
        node: node.into(),
        why: why.into(),
    }
}

/// The directory holding domain `app`'s frontends (one per app name).
pub fn front_root(app: u16) -> String {
    format!("/local/domain/{app}/{FRONT_REL}")
}

/// The frontend directory of app `name` in domain `app`.
pub fn front_path(app: u16, name: &str) -> String {
    format!("/local/domain/{app}/{FRONT_REL}/{name}")
}

/// The backend directory the server in domain `server` keeps for app `name` of domain `app`.
pub fn back_path(server: u16, app: u16, name: &str) -> String {
    format!("/local/domain/{server}/backend/ferrite/{app}/{name}")
}

/// Parses an app name: 1..=32 of `[a-z0-9._-]`.
pub fn parse_name(v: &[u8]) -> Result<String, XenCtlError> {
    let ok = (1..=32).contains(&v.len())
        && v.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
    if !ok {
        return Err(field("name", "must be 1 to 32 of a-z 0-9 . _ -"));
    }
    Ok(String::from_utf8_lossy(v).into_owned())
}

/// Parses `xx:xx:xx:xx:xx:xx`; refuses multicast and all-zero addresses.
pub fn parse_mac(v: &[u8]) -> Result<[u8; 6], XenCtlError> {
    let bad = || {
        field(
            "mac",
            "must be six hex pairs separated by ':', unicast and not zero",
        )
    };
    if v.len() != 17 {
        return Err(bad());
    }
    let mut m = [0u8; 6];
    for (i, part) in v.split(|&c| c == b':').enumerate() {
        // Two hex digits (`from_str_radix` alone would take a sign: "+f").
        if i >= 6 || part.len() != 2 || !part.iter().all(u8::is_ascii_hexdigit) {
            return Err(bad());
        }
        let s = std::str::from_utf8(part).map_err(|_| bad())?;
        m[i] = u8::from_str_radix(s, 16).map_err(|_| bad())?;
    }
    if m[0] & 1 != 0 || m == [0; 6] {
        return Err(bad());
    }
    Ok(m)
}

/// Formats a MAC as the `mac` node holds it.
pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a decimal `u32` with no sign, spaces or leading zeros, at most `max`.
pub fn parse_u32(node: &str, v: &[u8], max: u32) -> Result<u32, XenCtlError> {
    let ok = !v.is_empty()
        && v.len() <= 10
        && v.iter().all(u8::is_ascii_digit)
        && (v.len() == 1 || v[0] != b'0');
    let n = ok
        .then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .flatten()
        .filter(|&n| n <= u64::from(max))
        .ok_or_else(|| field(node, format!("must be a decimal number up to {max}")))?;
    Ok(n as u32)
}

/// The references of an app's port memory, read from its reference-list grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefList(pub Vec<u32>);

impl RefList {
    /// Bytes the list of `n` references takes.
    pub fn bytes(n: usize) -> usize {
        8 + 4 * n
    }

    /// Writes `refs` in the list format into `out` (at least [`RefList::bytes`] long).
    pub fn encode(refs: &[u32], out: &mut [u8]) -> Option<()> {
        let need = Self::bytes(refs.len());
        let out = out.get_mut(..need)?;
        out[0..4].copy_from_slice(&REF_LIST_MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&u32::try_from(refs.len()).ok()?.to_le_bytes());
        for (c, r) in out[8..].chunks_exact_mut(4).zip(refs) {
            c.copy_from_slice(&r.to_le_bytes());
        }
        Some(())
    }

    /// Parses a list copied out of the app's grant: magic, a count from 2 to `max` that fits
    /// the bytes given, no reference twice.
    pub fn parse(raw: &[u8], max: usize) -> Result<Self, XenCtlError> {
        let bad = |why: String| field("grant-list", why);
        let word = |i: usize| -> Option<u32> {
            let b = raw.get(i * 4..i * 4 + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if word(0) != Some(REF_LIST_MAGIC) {
            return Err(bad("the reference list has no FRRL magic".into()));
        }
        let n = word(1).unwrap_or(0) as usize;
        let max = max.min(MAX_REFS);
        if n < 2 || n > max {
            return Err(bad(format!(
                "the reference list holds {n} references; 2 to {max} are accepted"
            )));
        }
        if Self::bytes(n) > raw.len() {
            return Err(bad(format!(
                "{n} references do not fit the {} bytes granted",
                raw.len()
            )));
        }
        let refs: Vec<u32> = (0..n).filter_map(|i| word(2 + i)).collect();
        let mut seen = BTreeSet::new();
        if let Some(r) = refs.iter().find(|r| !seen.insert(**r)) {
            return Err(bad(format!("reference {r} repeats")));
        }
        Ok(Self(refs))
    }
}

/// Parses a decimal `u64` nonce: no sign, spaces or leading zeros, not 0.
fn parse_nonce(v: &[u8]) -> Result<u64, XenCtlError> {
    let ok = !v.is_empty()
        && v.len() <= 20
        && v.iter().all(u8::is_ascii_digit)
        && (v.len() == 1 || v[0] != b'0');
    ok.then(|| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .flatten()
        .filter(|&n| n != 0)
        .ok_or_else(|| field("attach", "the nonce must be a decimal number, not 0"))
}

/// An app's request to attach: the frontend's `attach` node, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// Picked anew by the app for every handshake; the answer names it.
    pub nonce: u64,
    /// App MAC.
    pub mac: [u8; 6],
    /// The app's unbound event-channel port for the server.
    pub event_channel: u32,
    /// References of the reference-list grant, verbatim.
    pub list_refs: Vec<u32>,
}

impl AttachRequest {
    /// The node's value.
    pub fn encode(&self) -> String {
        let refs = self
            .list_refs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{} {} {} {} {refs}",
            String::from_utf8_lossy(VERSION),
            self.nonce,
            fmt_mac(self.mac),
            self.event_channel
        )
    }

    /// The nonce alone, when the field is readable (to name it in a refusal of the rest).
    pub fn nonce_of(v: &[u8]) -> Option<u64> {
        parse_nonce(v.split(|&c| c == b' ').nth(1)?).ok()
    }

    /// Parses and checks an `attach` value: exactly five fields separated by single spaces.
    pub fn parse(v: &[u8]) -> Result<Self, XenCtlError> {
        let parts: Vec<&[u8]> = v.split(|&c| c == b' ').collect();
        let [version, nonce, mac, evtchn, refs] = parts[..] else {
            return Err(field(
                "attach",
                "must be `<version> <nonce> <mac> <event-channel> <refs>`",
            ));
        };
        if version != VERSION {
            return Err(field("attach", "this server speaks version 3"));
        }
        let nonce = parse_nonce(nonce)?;
        let mac = parse_mac(mac)?;
        let event_channel = parse_u32("event-channel", evtchn, MAX_EVTCHN_PORT - 1)?;
        if event_channel == 0 {
            return Err(field("event-channel", "port 0 is never a valid channel"));
        }
        let mut list_refs = Vec::new();
        for part in refs.split(|&c| c == b',') {
            if list_refs.len() == MAX_LIST_REFS {
                return Err(field(
                    "grant-list",
                    format!("more than {MAX_LIST_REFS} references"),
                ));
            }
            list_refs.push(parse_u32("grant-list", part, u32::MAX)?);
        }
        let mut seen = BTreeSet::new();
        if list_refs.len() < 2 || list_refs.iter().any(|r| !seen.insert(*r)) {
            return Err(field(
                "grant-list",
                "needs 2 or more distinct references (control page and list)",
            ));
        }
        Ok(Self {
            nonce,
            mac,
            event_channel,
            list_refs,
        })
    }
}

/// The server's answer to one [`AttachRequest`]: the backend's `answer` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Attached.
    Connected {
        /// The request's nonce.
        nonce: u64,
        /// The server's instance.
        instance: u64,
        /// Pool id the app's buffer handles must carry.
        pool: u8,
        /// Switch port number.
        port: u16,
    },
    /// Refused, with the reason.
    Refused {
        /// The request's nonce (0 when the request was too broken to name one).
        nonce: u64,
        /// The server's instance.
        instance: u64,
        /// Why.
        why: String,
    },
}

impl Answer {
    /// The nonce answered.
    pub fn nonce(&self) -> u64 {
        match self {
            Self::Connected { nonce, .. } | Self::Refused { nonce, .. } => *nonce,
        }
    }

    /// The node's value.
    pub fn encode(&self) -> String {
        match self {
            Self::Connected {
                nonce,
                instance,
                pool,
                port,
            } => format!("{nonce} {instance} connected {pool} {port}"),
            Self::Refused {
                nonce,
                instance,
                why,
            } => {
                let why: String = why.chars().take(512).collect();
                format!("{nonce} {instance} refused {why}")
            }
        }
    }

    /// Parses an `answer` value.
    pub fn parse(v: &[u8]) -> Result<Self, XenCtlError> {
        let bad = || field("answer", "not `<nonce> <instance> connected|refused ...`");
        let mut it = v.splitn(4, |&c| c == b' ');
        let mut num = |max: u64| -> Result<u64, XenCtlError> {
            std::str::from_utf8(it.next().ok_or_else(bad)?)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|&n| n <= max)
                .ok_or_else(bad)
        };
        let nonce = num(u64::MAX)?;
        let instance = num(u64::MAX)?;
        match it.next() {
            Some(b"connected") => {
                let rest = it.next().ok_or_else(bad)?;
                let mut f = rest.split(|&c| c == b' ');
                let pool = parse_u32("answer", f.next().ok_or_else(bad)?, 255)? as u8;
                let port = parse_u32("answer", f.next().ok_or_else(bad)?, 0xffff)? as u16;
                if f.next().is_some() {
                    return Err(bad());
                }
                Ok(Self::Connected {
                    nonce,
                    instance,
                    pool,
                    port,
                })
            }
            Some(b"refused") => Ok(Self::Refused {
                nonce,
                instance,
                why: String::from_utf8_lossy(it.next().unwrap_or_default()).into_owned(),
            }),
            _ => Err(bad()),
        }
    }
}

/// The app names domain `app` has frontend directories for (each checked; at most
/// [`MAX_APPS_PER_DOMAIN`], the rest ignored).
pub fn frontend_names(xs: &Xenstore, app: u16) -> Result<Vec<String>, XenCtlError> {
    let names = match xs.directory(&front_root(app)) {
        Ok(n) => n,
        Err(e) if e.is_enoent() => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(names
        .into_iter()
        .filter(|n| parse_name(n.as_bytes()).is_ok())
        .take(MAX_APPS_PER_DOMAIN)
        .collect())
}

/// The app a frontend watch event is about, when it is about an app's `state` node
/// (`front_root(app)/<name>/state`): the server reads an app only when its state changes.
/// `None` for the app's other nodes; `Some(None)` for the frontend root or an app's
/// directory itself (created or removed: list the domain again).
pub fn event_app(app: u16, path: &str) -> Option<Option<String>> {
    let root = front_root(app);
    let rest = path.strip_prefix(&root)?;
    if rest.is_empty() {
        return Some(None);
    }
    let rest = rest.strip_prefix('/')?;
    match rest.split_once('/') {
        None => Some(None),
        Some((name, "state")) if parse_name(name.as_bytes()).is_ok() => Some(Some(name.into())),
        Some(_) => None,
    }
}

/// What the server reads of one app in one round trip: the frontend's state and request,
/// and its own answer left in the backend directory (by this or an earlier instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendView {
    /// The frontend's state (`Unknown` when missing).
    pub state: XbState,
    /// The `attach` node's raw value (parsed by the caller, who refuses it with a reason).
    pub attach: Option<Vec<u8>>,
    /// The backend's `answer`, when there is a well-formed one.
    pub answer: Option<Answer>,
}

/// The app's side of the handshake. Its own nodes are written by relative paths (xenstored
/// puts them under the connection's domain home), so an app needs its domain id only to
/// read the server's `answer` node in the backend directory, which it does only when the
/// answer did not come by the faster way (the port's header page and the doorbell).
#[derive(Debug)]
pub struct Frontend<'a> {
    xs: &'a Xenstore,
    me: Option<u16>,
    server: u16,
    name: String,
}

/// How often [`Frontend::wait_answer`] reads the backend's `answer` node while nothing
/// faster brought the answer (a refusal, or a server that answers only in xenstore).
pub const ANSWER_TICK: Duration = Duration::from_millis(200);

impl<'a> Frontend<'a> {
    /// The frontend of app `name` towards the server in domain `server`; `me` is this
    /// domain's id when known (else it is read from xenstore when first needed).
    pub fn new(
        xs: &'a Xenstore,
        me: Option<u16>,
        server: u16,
        name: &str,
    ) -> Result<Self, XenCtlError> {
        parse_name(name.as_bytes())?;
        Ok(Self {
            xs,
            me,
            server,
            name: name.to_owned(),
        })
    }

    /// This domain's id, from xenstore (`domid` under the domain's home).
    pub fn own_domid(xs: &Xenstore) -> Result<u16, XenCtlError> {
        let v = xs.read("domid")?;
        Ok(parse_u32("domid", &v, u32::from(u16::MAX))? as u16)
    }

    /// This domain's id: the one given, or read now (one round trip) and kept.
    pub fn me(&mut self) -> Result<u16, XenCtlError> {
        match self.me {
            Some(d) => Ok(d),
            None => {
                let d = Self::own_domid(self.xs)?;
                self.me = Some(d);
                Ok(d)
            }
        }
    }

    /// This domain's id if it is known (given, or read by [`Frontend::me`]).
    pub fn known_domid(&self) -> Option<u16> {
        self.me
    }

    /// The frontend directory, relative to this domain's home.
    fn dir(&self) -> String {
        format!("{FRONT_REL}/{}", self.name)
    }

    /// The backend directory the server writes for this app.
    pub fn back_dir(&mut self) -> Result<String, XenCtlError> {
        let me = self.me()?;
        Ok(back_path(self.server, me, &self.name))
    }

    /// Writes this side's state and waits for the reply.
    pub fn set_state(&self, s: XbState) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .write(&format!("{}/state", self.dir()), s.as_value())?)
    }

    /// Writes this side's state without waiting for the reply (nothing depends on it).
    pub fn post_state(&self, s: XbState) -> Result<(), XenCtlError> {
        let mut b = Batch::new();
        b.write(&format!("{}/state", self.dir()), s.as_value());
        Ok(self.xs.send(&b)?)
    }

    /// Sends `req` (`attach`, then `state = 3`) without waiting for the replies: the
    /// server's answer is what the app waits for ([`Frontend::wait_answer`]).
    pub fn request(&self, req: &AttachRequest) -> Result<(), XenCtlError> {
        let d = self.dir();
        if req.list_refs.len() < 2 || req.list_refs.len() > MAX_LIST_REFS {
            return Err(field(
                "grant-list",
                format!("{} references", req.list_refs.len()),
            ));
        }
        let mut b = Batch::new();
        b.write(&format!("{d}/attach"), req.encode().as_bytes());
        b.write(&format!("{d}/state"), XbState::Initialised.as_value());
        Ok(self.xs.send(&b)?)
    }

    /// Reads the backend's `answer` node (one round trip): the answer to the request with
    /// `nonce`, if the server has written it.
    pub fn answer_now(&mut self, nonce: u64) -> Result<Option<Answer>, XenCtlError> {
        let mut b = Batch::new();
        b.read(&format!("{}/answer", self.back_dir()?));
        match self.xs.run(&b)?.pop() {
            Some(Ok(v)) => Ok(Answer::parse(&v).ok().filter(|a| a.nonce() == nonce)),
            // Until the server creates our directory (readable by us), its parent is not
            // readable: xenstored answers EACCES, which means "nothing written for us yet".
            Some(Err(XsError::Remote { errno, .. })) if errno == "ENOENT" || errno == "EACCES" => {
                Ok(None)
            }
            Some(Err(e)) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Waits up to `timeout` for the answer to the request with `nonce`. `early(d)` waits
    /// up to `d` for the faster way (the app's doorbell) and returns the answer it brought;
    /// between its waits, every [`ANSWER_TICK`], the backend's `answer` node is read. A
    /// refusal (seen only in xenstore) is an error.
    pub fn wait_answer(
        &mut self,
        nonce: u64,
        timeout: Duration,
        mut early: impl FnMut(Duration) -> Option<Answer>,
    ) -> Result<Answer, XenCtlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(XenCtlError::Timeout {
                    want: XbState::Connected,
                    seen: XbState::Unknown,
                    ms: timeout.as_millis() as u64,
                });
            }
            if let Some(a) = early(left.min(ANSWER_TICK)).filter(|a| a.nonce() == nonce) {
                return Ok(a);
            }
            match self.answer_now(nonce)? {
                Some(Answer::Refused { why, .. }) => return Err(XenCtlError::Refused(why)),
                Some(a) => return Ok(a),
                None => {}
            }
        }
    }
}

/// The server's side of the handshake.
#[derive(Debug)]
pub struct Backend<'a> {
    xs: &'a Xenstore,
    me: u16,
    instance: u64,
    max_refs: usize,
}

impl<'a> Backend<'a> {
    /// The backend of the server in domain `me`, started as `instance`.
    pub fn new(xs: &'a Xenstore, me: u16, instance: u64, max_refs: usize) -> Self {
        Self {
            xs,
            me,
            instance,
            max_refs: max_refs.min(MAX_REFS),
        }
    }

    /// The xenstore connection.
    pub fn xenstore(&self) -> &'a Xenstore {
        self.xs
    }

    /// This server's instance.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The most port-memory references accepted.
    pub fn max_refs(&self) -> usize {
        self.max_refs
    }

    /// Watches domains coming and going.
    pub fn watch_domains(&self) -> Result<(), XenCtlError> {
        self.xs.watch("@introduceDomain", "intro")?;
        self.xs.watch("@releaseDomain", "release")?;
        Ok(())
    }

    /// Watches domain `app`'s frontend directories (token `fe<app>`).
    pub fn watch_app(&self, app: u16) -> Result<(), XenCtlError> {
        Ok(self.xs.watch(&front_root(app), &format!("fe{app}"))?)
    }

    /// Stops watching domain `app`.
    pub fn unwatch_app(&self, app: u16) -> Result<(), XenCtlError> {
        Ok(self.xs.unwatch(&front_root(app), &format!("fe{app}"))?)
    }

    /// The domains that exist now, other than this one.
    pub fn domains(&self) -> Result<Vec<u16>, XenCtlError> {
        Ok(self
            .xs
            .directory("/local/domain")?
            .iter()
            .filter_map(|d| d.parse::<u16>().ok())
            .filter(|&d| d != self.me)
            .collect())
    }

    /// Waits up to `timeout` for events; returns, coalesced, the apps whose `state` changed,
    /// the domains to list again (an app directory came or went), and whether domains came
    /// or went.
    pub fn poll(&self, timeout: Duration) -> Result<Events, XenCtlError> {
        let mut evs = Events::default();
        let mut take = |ev: WatchEvent| match ev.token.as_str() {
            "intro" | "release" => evs.domains = true,
            t => {
                if let Some(d) = t.strip_prefix("fe").and_then(|d| d.parse::<u16>().ok()) {
                    match event_app(d, &ev.path) {
                        Some(Some(name)) => {
                            evs.apps.insert((d, name));
                        }
                        Some(None) => {
                            evs.list.insert(d);
                        }
                        None => {}
                    }
                }
            }
        };
        if let Some(ev) = self.xs.next_event(timeout)? {
            take(ev);
            // Coalesce: drain what is queued now, bounded.
            for _ in 0..1024 {
                match self.xs.next_event(Duration::ZERO)? {
                    Some(ev) => take(ev),
                    None => break,
                }
            }
        }
        Ok(evs)
    }

    /// Reads app `name`'s state, request and this backend's answer, in one round trip.
    pub fn view(&self, app: u16, name: &str) -> Result<FrontendView, XenCtlError> {
        self.views(&[(app, name.to_owned())])?
            .pop()
            .unwrap_or_else(|| Err(XsError::Closed("no answer".into()).into()))
    }

    /// [`Backend::view`] of several apps, all in one round trip.
    pub fn views(
        &self,
        apps: &[(u16, String)],
    ) -> Result<Vec<Result<FrontendView, XenCtlError>>, XenCtlError> {
        let mut b = Batch::new();
        for (app, name) in apps {
            let f = front_path(*app, name);
            b.read(&format!("{f}/state"));
            b.read(&format!("{f}/attach"));
            b.read(&format!("{}/answer", back_path(self.me, *app, name)));
        }
        let mut r = self.xs.run(&b)?.into_iter();
        let mut opt = || -> Result<Option<Vec<u8>>, XenCtlError> {
            match r.next() {
                Some(Ok(v)) => Ok(Some(v)),
                Some(Err(e)) if e.is_enoent() => Ok(None),
                Some(Err(e)) => Err(e.into()),
                None => Ok(None),
            }
        };
        let mut out = Vec::with_capacity(apps.len());
        for _ in apps {
            // All three answers are taken whatever the first says, to stay in step.
            let (state, attach, answer) = (opt(), opt(), opt());
            out.push((|| {
                let state = match state? {
                    Some(v) => XbState::parse(&v)?,
                    None => XbState::Unknown,
                };
                Ok(FrontendView {
                    state,
                    attach: attach?,
                    answer: answer?.and_then(|v| Answer::parse(&v).ok()),
                })
            })());
        }
        Ok(out)
    }

    /// Writes `answer` and then `state` (4 for connected, 6 for refused) in app `name`'s
    /// backend directory without waiting for the replies (the app's watch sees the result;
    /// nothing here depends on it); `open` first creates the directory, readable by `app`
    /// alone.
    pub fn post_answer(
        &self,
        app: u16,
        name: &str,
        a: &Answer,
        open: bool,
    ) -> Result<(), XenCtlError> {
        Ok(self.xs.send(&self.answer_batch(app, name, a, open))?)
    }

    /// [`Backend::post_answer`], waiting for the replies (one round trip).
    pub fn answer(&self, app: u16, name: &str, a: &Answer, open: bool) -> Result<(), XenCtlError> {
        for r in self.xs.run(&self.answer_batch(app, name, a, open))? {
            r?;
        }
        Ok(())
    }

    fn answer_batch(&self, app: u16, name: &str, a: &Answer, open: bool) -> Batch {
        let dir = back_path(self.me, app, name);
        let mut b = Batch::new();
        if open {
            b.mkdir(&dir);
            b.set_perms(&dir, &[Perm::owner(self.me, 'n'), Perm::read(app)]);
        }
        b.write(&format!("{dir}/answer"), a.encode().as_bytes());
        let st = match a {
            Answer::Connected { .. } => XbState::Connected,
            Answer::Refused { .. } => XbState::Closed,
        };
        b.write(&format!("{dir}/state"), st.as_value());
        b
    }

    /// Removes the app's backend directory (it left).
    pub fn forget(&self, app: u16, name: &str) -> Result<(), XenCtlError> {
        Ok(self.xs.rm(&back_path(self.me, app, name))?)
    }

    /// Removes every backend directory of domain `app` (its domain is gone).
    pub fn forget_domain(&self, app: u16) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .rm(&format!("/local/domain/{}/backend/ferrite/{app}", self.me))?)
    }
}

/// Watch events, coalesced ([`Backend::poll`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Events {
    /// Apps whose `state` node changed.
    pub apps: BTreeSet<(u16, String)>,
    /// Domains whose app directories came or went.
    pub list: BTreeSet<u16>,
    /// Whether domains came or went.
    pub domains: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_with_a_sign_is_refused() {
        // `from_str_radix` would read "+0" as a hex pair.
        assert!(parse_mac(b"02:00:00:+0:00:0a").is_err());
        assert!(AttachRequest::parse(b"3 1 02:00:00:00:+0:0a 7 100,101").is_err());
    }

    #[test]
    fn fields_are_parsed_strictly() {
        assert_eq!(parse_name(b"app-1.x_y").expect("ok"), "app-1.x_y");
        for bad in [&b""[..], b"App", b"a b", b"a/b", &[b'a'; 33], b"\xff"] {
            assert!(parse_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_mac(b"02:00:00:00:00:0a").expect("ok"),
            [2, 0, 0, 0, 0, 10]
        );
        for bad in [
            &b"01:00:00:00:00:0a"[..], // multicast
            b"00:00:00:00:00:00",
            b"02:00:00:00:00:0g",
            b"02:00:00:00:00",
            b"02:00:00:00:00:0a:",
            b"02-00-00-00-00-0a",
            b"02:00:00:00:000a:",
        ] {
            assert!(
                parse_mac(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_u32("n", b"0", 5).expect("ok"), 0);
        assert_eq!(
            parse_u32("n", b"4294967295", u32::MAX).expect("ok"),
            u32::MAX
        );
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b" 1",
            b"01",
            b"6",
            b"4294967296",
            b"99999999999",
        ] {
            assert!(
                parse_u32("n", bad, 5).is_err() || bad == b"4294967296",
                "{bad:?}"
            );
        }
        assert!(parse_u32("n", b"4294967296", u32::MAX).is_err());
        assert_eq!(XbState::parse(b"4").expect("ok"), XbState::Connected);
        assert!(XbState::parse(b"7").is_err() && XbState::parse(b"").is_err());
    }

    fn request() -> AttachRequest {
        AttachRequest {
            nonce: 99,
            mac: [2, 0, 0, 0, 0, 7],
            event_channel: 42,
            list_refs: vec![40, 41],
        }
    }

    #[test]
    fn a_request_travels_unwaited_and_its_answer_comes_early_or_from_xenstore() {
        let (xs, h) = crate::xenstore::tests::store_peer();
        xs.write("domid", b"7").expect("domid"); // the store's client is domain 7
        // The domain id is not given: the frontend writes relative paths and reads its id
        // only to read the backend's answer.
        let mut fe = Frontend::new(&xs, None, 0, "app-7").expect("name");
        fe.request(&request()).expect("request");
        assert_eq!(fe.answer_now(99).expect("read"), None); // nothing answered yet
        let be = Backend::new(&xs, 0, 5, 1024);
        // The relative writes landed under the domain's home, where the server looks.
        let v = be.view(7, "app-7").expect("view");
        assert_eq!(v.state, XbState::Initialised);
        assert_eq!(v.answer, None);
        let req = AttachRequest::parse(&v.attach.expect("attach")).expect("valid");
        assert_eq!(req, request());
        let a = Answer::Connected {
            nonce: req.nonce,
            instance: 5,
            pool: 3,
            port: 9,
        };
        be.answer(7, "app-7", &a, false).expect("answer");
        let none = |_: Duration| None;
        assert_eq!(
            fe.wait_answer(99, Duration::from_secs(1), none),
            Ok(a.clone())
        );
        // The early way answers without a xenstore read, but only for this nonce.
        let early = a.clone();
        assert_eq!(
            fe.wait_answer(99, Duration::from_secs(1), |_| Some(early.clone())),
            Ok(a.clone())
        );
        let stale = Answer::Connected {
            nonce: 98,
            instance: 4,
            pool: 1,
            port: 1,
        };
        assert_eq!(
            fe.wait_answer(99, Duration::from_secs(1), |_| Some(stale.clone())),
            Ok(a.clone())
        );
        // An answer to another nonce is not this request's.
        fe.request(&AttachRequest {
            nonce: 100,
            ..request()
        })
        .expect("request");
        assert_eq!(fe.answer_now(100).expect("read"), None);
        assert_eq!(be.view(7, "app-7").expect("view").answer, Some(a));
        be.answer(
            7,
            "app-7",
            &Answer::Refused {
                nonce: 100,
                instance: 5,
                why: "no".into(),
            },
            false,
        )
        .expect("answer");
        assert_eq!(
            fe.wait_answer(100, Duration::from_secs(1), none),
            Err(XenCtlError::Refused("no".into()))
        );
        // No answer at all: a timeout after the early way's waits and the xenstore reads.
        let r = fe.wait_answer(101, Duration::from_millis(30), |d| {
            std::thread::sleep(d);
            None
        });
        assert!(matches!(r, Err(XenCtlError::Timeout { .. })), "{r:?}");
        drop(xs);
        // domid written; request 2; answer read 1 + the domain id once; view 3; answer 2;
        // wait 1; early 0; stale early 1; request 2; answer read 1; view 3; answer 2;
        // refused 1; timeout 1. Nothing else.
        let seen = h.join().expect("peer");
        let want = 1 + 2 + 2 + 3 + 2 + 1 + 1 + 2 + 1 + 3 + 2 + 1 + 1;
        assert_eq!(seen.len(), want, "{seen:?}");
    }

    #[test]
    fn hostile_requests_are_refused_with_the_field_named() {
        let good = request().encode();
        assert_eq!(good, "3 99 02:00:00:00:00:07 42 40,41");
        let cases: [(&str, &str); 12] = [
            ("3 99 02:00:00:00:00:07 42 1", "grant-list"), // no list page
            ("3 99 02:00:00:00:00:07 42 5,5", "grant-list"), // repeated
            ("3 99 02:00:00:00:00:07 42 1,2,x", "grant-list"),
            ("3 99 02:00:00:00:00:07 42 ", "grant-list"),
            ("3 99 02:00:00:00:00:07 0 1,2", "event-channel"),
            ("3 99 02:00:00:00:00:07 131072 1,2", "event-channel"),
            ("3 99 ff:ff:ff:ff:ff:ff 42 1,2", "mac"),
            ("2 99 02:00:00:00:00:07 42 1,2", "attach"),
            ("3 0 02:00:00:00:00:07 42 1,2", "attach"),
            ("3 099 02:00:00:00:00:07 42 1,2", "attach"),
            ("3  99 02:00:00:00:00:07 42 1,2", "attach"),
            ("3 99 02:00:00:00:00:07 42 1,2 extra", "attach"),
        ];
        for (v, blamed) in cases {
            match AttachRequest::parse(v.as_bytes()) {
                Err(XenCtlError::Field { node, .. }) => assert_eq!(node, blamed, "{v:?}"),
                other => panic!("{v:?} was not refused: {other:?}"),
            }
        }
        let many = (0..=MAX_LIST_REFS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            AttachRequest::parse(format!("3 9 02:00:00:00:00:07 4 {many}").as_bytes()).is_err()
        );
        assert_eq!(AttachRequest::nonce_of(b"3 77 junk"), Some(77));
        assert_eq!(AttachRequest::nonce_of(b"3 x junk"), None);
    }

    #[test]
    fn answers_round_trip_and_broken_ones_are_refused() {
        for a in [
            Answer::Connected {
                nonce: u64::MAX,
                instance: 1,
                pool: 255,
                port: 65535,
            },
            Answer::Refused {
                nonce: 0,
                instance: 2,
                why: "no [[apps]] entry admits x".into(),
            },
        ] {
            assert_eq!(Answer::parse(a.encode().as_bytes()).expect("valid"), a);
        }
        for bad in [
            "",
            "1 2",
            "1 2 connected 256 1",
            "1 2 connected 1",
            "1 2 maybe",
            "x 2 refused",
        ] {
            assert!(Answer::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_state_events_name_an_app() {
        let root = front_root(4);
        assert_eq!(
            event_app(4, &format!("{root}/web/state")),
            Some(Some("web".into()))
        );
        assert_eq!(event_app(4, &format!("{root}/web/attach")), None);
        assert_eq!(event_app(4, &format!("{root}/web")), Some(None));
        assert_eq!(event_app(4, &root), Some(None));
        assert_eq!(event_app(4, &format!("{root}/Bad/state")), None);
        assert_eq!(event_app(4, "/local/domain/5/data/ferrite/web/state"), None);
    }

    #[test]
    fn reference_lists_round_trip_and_hostile_ones_are_refused() {
        let refs: Vec<u32> = (100..618).collect();
        let mut page = vec![0u8; 4096];
        RefList::encode(&refs, &mut page).expect("fits");
        assert_eq!(RefList::parse(&page, 1024).expect("valid").0, refs);
        // Over the server's limit.
        assert!(RefList::parse(&page, 517).is_err());
        // A count the granted bytes cannot hold.
        let mut p = page.clone();
        p[4..8].copy_from_slice(&5000u32.to_le_bytes());
        assert!(RefList::parse(&p, MAX_REFS).is_err());
        // Wrong magic, too few, a repeated reference.
        let mut p = page.clone();
        p[0] = b'X';
        assert!(RefList::parse(&p, 1024).is_err());
        let mut p = page.clone();
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        assert!(RefList::parse(&p, 1024).is_err());
        let mut p = page.clone();
        p[12..16].copy_from_slice(&100u32.to_le_bytes());
        assert!(RefList::parse(&p, 1024).is_err());
        // Truncated input.
        assert!(RefList::parse(&page[..6], 1024).is_err());
    }

    #[test]
    fn mac_round_trips() {
        let m = [0x02, 0xab, 0, 0x10, 0xff, 1];
        assert_eq!(parse_mac(fmt_mac(m).as_bytes()).expect("ok"), m);
    }
}

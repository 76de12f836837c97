//! The xenstore transport of the handshake: how an app in a domU attaches to a server in dom0
//! (or a driver domain) when no Unix socket can reach it.
//!
//! # Schema (version 2)
//!
//! A domain may run several apps; each has its own directory, named by the app's name. The
//! app (frontend, domain `A`, name `N`) writes only under its own
//! `/local/domain/A/data/ferrite/N/`, which the toolstack makes writable by the guest:
//!
//! | node | value |
//! |---|---|
//! | `version` | `2` |
//! | `mac` | `xx:xx:xx:xx:xx:xx`, unicast, not zero |
//! | `grant-list` | the references of the *reference-list grant*, comma-separated (at most [`MAX_LIST_REFS`]) |
//! | `event-channel` | the unbound event-channel port the app allocated for the server |
//! | `state` | xenbus state number ([`XbState`]) |
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
//! | `instance` | a number that changes every time the server starts |
//! | `max-refs` | the most port-memory references it accepts |
//! | `pool` | the pool id the app's buffer handles must carry |
//! | `port` | the switch port number, once connected |
//! | `error` | why the handshake was refused |
//! | `state` | xenbus state number, written last in every step |
//!
//! # States (DESIGN §5, xenbus numbering)
//!
//! 1. The app writes `version`, `mac` and then `state = 1` (Initialising). xenstored applies
//!    one connection's writes in order, so a server that reads `state = 1` reads this MAC.
//! 2. The server checks name and MAC against its policy, writes `instance`, `max-refs`,
//!    `pool` and `state = 2` (InitWait).
//! 3. The app grants its port memory and the reference list, allocates an event channel,
//!    writes `grant-list`, `event-channel` and `state = 3` (Initialised).
//! 4. The server reads and checks every field ([`read_frontend`], [`RefList::parse`]), maps,
//!    binds the event channel, adds the port and writes `port` and `state = 4` (Connected).
//! 5. Either side going away writes `state = 5/6` when it can; when it cannot (killed), the
//!    other learns through unmap-notify (the grant's control page and an event) or, for the
//!    app, a new `instance`.
//!
//! The app watches only the backend's `state` node, so it wakes once per step, not once per
//! node the server writes. A refusal is `error` plus `state = 6` (Closed) in the backend
//! directory of that app only. Nothing a domain writes is trusted: every value is
//! length-bounded by xenstore ([`crate::xenstore::PAYLOAD_MAX`]), parsed strictly,
//! range-checked and refused with a reason; a domain that floods its own nodes only delays
//! its own handshake, because the server coalesces events per domain, handles at most
//! [`MAX_APPS_PER_DOMAIN`] apps per domain and rescans on a timer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::xenstore::{Perm, WatchEvent, Xenstore, XsError};

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
pub const VERSION: &[u8] = b"2";
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
    /// The server restarted during the handshake.
    #[error("the server restarted (instance {0}); start the handshake again")]
    Restarted(u64),
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
        if i >= 6 || part.len() != 2 {
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

/// What a frontend published, every field checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendInfo {
    /// App MAC.
    pub mac: [u8; 6],
    /// References of the reference-list grant, verbatim.
    pub list_refs: Vec<u32>,
    /// The app's unbound event-channel port for the server.
    pub event_channel: u32,
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

fn read_node(xs: &Xenstore, dir: &str, node: &str) -> Result<Vec<u8>, XenCtlError> {
    xs.read(&format!("{dir}/{node}")).map_err(|e| {
        if e.is_enoent() {
            field(node, "missing")
        } else {
            e.into()
        }
    })
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

/// Reads a frontend's state.
pub fn frontend_state(xs: &Xenstore, app: u16, name: &str) -> Result<XbState, XenCtlError> {
    match xs.read_opt(&format!("{}/state", front_path(app, name)))? {
        None => Ok(XbState::Unknown),
        Some(v) => XbState::parse(&v),
    }
}

/// Reads and checks a frontend's Hello (version, MAC).
pub fn read_hello(xs: &Xenstore, app: u16, name: &str) -> Result<[u8; 6], XenCtlError> {
    let dir = front_path(app, name);
    parse_name(name.as_bytes())?;
    if read_node(xs, &dir, "version")? != VERSION {
        return Err(field("version", "this server speaks version 2"));
    }
    parse_mac(&read_node(xs, &dir, "mac")?)
}

/// Reads and checks everything a frontend published for `Initialised`.
pub fn read_frontend(xs: &Xenstore, app: u16, name: &str) -> Result<FrontendInfo, XenCtlError> {
    let mac = read_hello(xs, app, name)?;
    let mut fe = read_grant(xs, app, name)?;
    fe.mac = mac;
    Ok(fe)
}

/// Reads and checks only what `Initialised` adds to Hello (`grant-list`, `event-channel`);
/// `mac` is left zero: the server keeps the MAC it admitted at Hello, so a MAC rewritten
/// since then changes nothing.
pub fn read_grant(xs: &Xenstore, app: u16, name: &str) -> Result<FrontendInfo, XenCtlError> {
    let dir = front_path(app, name);
    let mac = [0; 6];
    let v = read_node(xs, &dir, "grant-list")?;
    let mut list_refs = Vec::new();
    for part in v.split(|&c| c == b',') {
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
    let event_channel = parse_u32(
        "event-channel",
        &read_node(xs, &dir, "event-channel")?,
        MAX_EVTCHN_PORT - 1,
    )?;
    if event_channel == 0 {
        return Err(field("event-channel", "port 0 is never a valid channel"));
    }
    Ok(FrontendInfo {
        mac,
        list_refs,
        event_channel,
    })
}

/// The app's side of the handshake.
#[derive(Debug)]
pub struct Frontend<'a> {
    xs: &'a Xenstore,
    me: u16,
    server: u16,
    name: String,
}

impl<'a> Frontend<'a> {
    /// The frontend of app `name` in domain `me` towards the server in domain `server`.
    pub fn new(xs: &'a Xenstore, me: u16, server: u16, name: &str) -> Result<Self, XenCtlError> {
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

    fn dir(&self) -> String {
        front_path(self.me, &self.name)
    }

    /// The backend directory the server writes for this app.
    pub fn back_dir(&self) -> String {
        back_path(self.server, self.me, &self.name)
    }

    /// Writes this side's state.
    pub fn set_state(&self, s: XbState) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .write(&format!("{}/state", self.dir()), s.as_value())?)
    }

    /// Step 1: writes Hello and `Initialising`. `again`: this app wrote the same Hello in an
    /// earlier handshake of this connection (the server never removes frontend nodes), so
    /// only the state is written.
    pub fn hello(&self, mac: [u8; 6], again: bool) -> Result<(), XenCtlError> {
        let d = self.dir();
        if !again {
            self.xs.write(&format!("{d}/version"), VERSION)?;
            self.xs
                .write(&format!("{d}/mac"), fmt_mac(mac).as_bytes())?;
        }
        self.set_state(XbState::Initialising)
    }

    /// Watches the backend's `state` node (token `back`); once per connection.
    pub fn watch_backend(&self) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .watch(&format!("{}/state", self.back_dir()), "back")?)
    }

    /// The backend's state and instance (`Unknown`, 0 when the server has written nothing).
    pub fn backend(&self) -> Result<(XbState, u64), XenCtlError> {
        let b = self.back_dir();
        // Until the server creates our directory (readable by us), its parent is not
        // readable: xenstored answers EACCES, which means "nothing written for us yet".
        let read = |node: &str| match self.xs.read(&format!("{b}/{node}")) {
            Ok(v) => Ok(Some(v)),
            Err(XsError::Remote { errno, .. }) if errno == "ENOENT" || errno == "EACCES" => {
                Ok(None)
            }
            Err(e) => Err(e),
        };
        let st = match read("state")? {
            Some(v) => XbState::parse(&v)?,
            None => return Ok((XbState::Unknown, 0)),
        };
        let inst = match read("instance")? {
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            None => 0,
        };
        Ok((st, inst))
    }

    /// Reads a numeric backend node (e.g. `pool`, `port`).
    pub fn backend_u32(&self, node: &str, max: u32) -> Result<u32, XenCtlError> {
        let v = self.xs.read(&format!("{}/{node}", self.back_dir()))?;
        parse_u32(node, &v, max)
    }

    /// Waits until the backend reaches `want` (returns its instance), refuses on `Closed` with
    /// the backend's `error`, and reports a changed instance when `instance` is given. Wakes on
    /// the watch of the backend's `state` ([`Frontend::watch_backend`]); events already
    /// queued are taken together, and a lost event costs at most a 200 ms tick.
    pub fn wait_backend(
        &self,
        want: XbState,
        instance: Option<u64>,
        timeout: Duration,
    ) -> Result<u64, XenCtlError> {
        let deadline = Instant::now() + timeout;
        loop {
            let (st, inst) = self.backend()?;
            if let Some(i) = instance
                && inst != i
                && inst != 0
            {
                return Err(XenCtlError::Restarted(inst));
            }
            if st == want {
                return Ok(inst);
            }
            if st == XbState::Closed {
                let e = self
                    .xs
                    .read_opt(&format!("{}/error", self.back_dir()))?
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_else(|| "closed without a reason".into());
                return Err(XenCtlError::Refused(e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(XenCtlError::Timeout {
                    want,
                    seen: st,
                    ms: timeout.as_millis() as u64,
                });
            }
            if self
                .xs
                .next_event(left.min(Duration::from_millis(200)))?
                .is_some()
            {
                for _ in 0..64 {
                    if self.xs.next_event(Duration::ZERO)?.is_none() {
                        break;
                    }
                }
            }
        }
    }

    /// Step 3: publishes the reference-list grant's references and the event-channel port,
    /// then `Initialised`.
    pub fn publish(&self, list_refs: &[u32], event_channel: u32) -> Result<(), XenCtlError> {
        let d = self.dir();
        if list_refs.len() < 2 || list_refs.len() > MAX_LIST_REFS {
            return Err(field(
                "grant-list",
                format!("{} references", list_refs.len()),
            ));
        }
        let v = list_refs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        self.xs.write(&format!("{d}/grant-list"), v.as_bytes())?;
        self.xs.write(
            &format!("{d}/event-channel"),
            event_channel.to_string().as_bytes(),
        )?;
        self.set_state(XbState::Initialised)
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

    /// Waits up to `timeout` for events; returns the app domains whose frontends changed
    /// (each once) and whether domains came or went.
    pub fn poll(&self, timeout: Duration) -> Result<(BTreeSet<u16>, bool), XenCtlError> {
        let mut dirty = BTreeSet::new();
        let mut domains = false;
        let mut take = |ev: WatchEvent| match ev.token.as_str() {
            "intro" | "release" => domains = true,
            t => {
                if let Some(d) = t.strip_prefix("fe").and_then(|d| d.parse().ok()) {
                    dirty.insert(d);
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
        Ok((dirty, domains))
    }

    /// Writes a backend node for app `name` of domain `app`.
    fn put(&self, app: u16, name: &str, node: &str, v: &[u8]) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .write(&format!("{}/{node}", back_path(self.me, app, name)), v)?)
    }

    /// Creates the app's backend directory, readable by `app` only, with this instance.
    pub fn open(&self, app: u16, name: &str) -> Result<(), XenCtlError> {
        let b = back_path(self.me, app, name);
        self.xs.mkdir_in(crate::xenstore::NO_TX, &b)?;
        self.xs.set_perms_in(
            crate::xenstore::NO_TX,
            &b,
            &[Perm::owner(self.me, 'n'), Perm::read(app)],
        )?;
        // An `error` left from an earlier refusal is not removed: the app reads it only
        // with `state = 6`, which this server writes only together with a new `error`.
        self.put(app, name, "instance", self.instance.to_string().as_bytes())
    }

    /// Answers Hello: `max-refs`, the pool id the app must use in its buffer handles, and
    /// `InitWait`.
    pub fn init_wait(&self, app: u16, name: &str, pool: u8) -> Result<(), XenCtlError> {
        self.open(app, name)?;
        self.put(app, name, "max-refs", self.max_refs.to_string().as_bytes())?;
        self.put(app, name, "pool", pool.to_string().as_bytes())?;
        self.put(app, name, "state", XbState::InitWait.as_value())
    }

    /// Announces a (re)started server to an app that was attached to an earlier instance.
    pub fn restarted(&self, app: u16, name: &str) -> Result<(), XenCtlError> {
        self.open(app, name)?;
        self.put(app, name, "state", XbState::Initialising.as_value())
    }

    /// Reads and checks what the app published for `Initialised` (its MAC was read and
    /// admitted at Hello; see [`read_grant`]).
    pub fn frontend(&self, app: u16, name: &str) -> Result<FrontendInfo, XenCtlError> {
        read_grant(self.xs, app, name)
    }

    /// Answers a mapped grant: `port` and `Connected`.
    pub fn connected(&self, app: u16, name: &str, port: u16) -> Result<(), XenCtlError> {
        self.put(app, name, "port", port.to_string().as_bytes())?;
        self.put(app, name, "state", XbState::Connected.as_value())
    }

    /// Refuses the app with `why` (`Closed`); no other app is touched.
    pub fn refuse(&self, app: u16, name: &str, why: &str) -> Result<(), XenCtlError> {
        let why: String = why.chars().take(512).collect();
        let _ = self.open(app, name);
        self.put(app, name, "error", why.as_bytes())?;
        self.put(app, name, "state", XbState::Closed.as_value())
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Writes a well-formed frontend for app `app-7` of domain 7.
    fn frontend(xs: &Xenstore) {
        let fe = Frontend::new(xs, 7, 0, "app-7").expect("name");
        fe.hello([2, 0, 0, 0, 0, 7], false).expect("hello");
        fe.publish(&[40, 41], 42).expect("publish");
    }

    #[test]
    fn a_published_frontend_reads_back_exactly() {
        let (xs, _h) = crate::xenstore::tests::store_peer();
        frontend(&xs);
        assert_eq!(
            frontend_state(&xs, 7, "app-7").expect("state"),
            XbState::Initialised
        );
        assert_eq!(frontend_names(&xs, 7).expect("names"), vec!["app-7"]);
        let fe = read_frontend(&xs, 7, "app-7").expect("valid frontend");
        assert_eq!(fe.mac, [2, 0, 0, 0, 0, 7]);
        assert_eq!(fe.list_refs, vec![40, 41]);
        assert_eq!(fe.event_channel, 42);
    }

    #[test]
    fn hostile_frontends_are_refused_with_the_node_named() {
        let cases: [(&str, &[u8], &str); 8] = [
            ("grant-list", b"1", "grant-list"),       // no list page
            ("grant-list", b"5,5", "grant-list"),     // repeated
            ("grant-list", b"1,2,x", "grant-list"),   // not a number
            ("grant-list", b"", "grant-list"),        // empty
            ("event-channel", b"0", "event-channel"), // never valid
            ("event-channel", b"131072", "event-channel"),
            ("mac", b"ff:ff:ff:ff:ff:ff", "mac"),
            ("version", b"1", "version"),
        ];
        for (node, value, blamed) in cases {
            let (xs, _h) = crate::xenstore::tests::store_peer();
            frontend(&xs);
            xs.write(&format!("{}/{node}", front_path(7, "app-7")), value)
                .expect("write");
            match read_frontend(&xs, 7, "app-7") {
                Err(XenCtlError::Field { node: n, .. }) => {
                    assert_eq!(n, blamed, "{node}={value:?}")
                }
                other => panic!("{node}={value:?} was not refused: {other:?}"),
            }
        }
        // Too many references in grant-list.
        let (xs, _h) = crate::xenstore::tests::store_peer();
        frontend(&xs);
        let many = (0..=MAX_LIST_REFS)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        xs.write(
            &format!("{}/grant-list", front_path(7, "app-7")),
            many.as_bytes(),
        )
        .expect("write");
        assert!(read_frontend(&xs, 7, "app-7").is_err());
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

//! The xenstore transport of the handshake: how an app in a domU attaches to a server in dom0
//! (or a driver domain) when no Unix socket can reach it.
//!
//! # Schema
//!
//! The app (frontend, domain `A`) writes only under its own `/local/domain/A/data/ferrite/`,
//! which the toolstack makes writable by the guest:
//!
//! | node | value |
//! |---|---|
//! | `version` | `1` |
//! | `name` | the app's name: 1..=32 of `[a-z0-9._-]` |
//! | `mac` | `xx:xx:xx:xx:xx:xx`, unicast, not zero |
//! | `grant-count` | number of grant references, 2..=[`MAX_REFS`] |
//! | `grant-refs/<k>` | references `k*256 ..` as comma-separated decimals (256 per node) |
//! | `event-channel` | the unbound event-channel port the app allocated for the server |
//! | `state` | xenbus state number ([`XbState`]) |
//!
//! The server (backend, domain `S`) answers under `/local/domain/S/backend/ferrite/A/`, a
//! directory it owns and makes readable by `A` alone:
//!
//! | node | value |
//! |---|---|
//! | `instance` | a number that changes every time the server starts |
//! | `max-refs` | the most grant references it accepts |
//! | `pool` | the pool id the app's buffer handles must carry |
//! | `port` | the switch port number, once connected |
//! | `error` | why the handshake was refused |
//! | `state` | xenbus state number |
//!
//! # States (DESIGN §5, xenbus numbering)
//!
//! 1. The app writes `version`, `name`, `mac` and `state = 1` (Initialising).
//! 2. The server checks name and MAC against its policy, writes `instance`, `max-refs`,
//!    `pool` and `state = 2` (InitWait).
//! 3. The app grants its port memory, allocates an event channel, writes `grant-count`,
//!    `grant-refs/*`, `event-channel` and `state = 3` (Initialised).
//! 4. The server reads and checks every field ([`read_frontend`]), maps, binds the event
//!    channel, adds the port and writes `port` and `state = 4` (Connected).
//! 5. Either side going away writes `state = 5/6` when it can; when it cannot (killed), the
//!    other learns through unmap-notify (the grant's control page and an event) or, for the
//!    app, a new `instance`.
//!
//! A refusal is `error` plus `state = 6` (Closed) in the backend directory of that app only.
//! Nothing a domain writes is trusted: every value is length-bounded by xenstore
//! ([`crate::xenstore::PAYLOAD_MAX`]), parsed strictly, range-checked and refused with a
//! reason; a domain that floods its own nodes only delays its own handshake, because the
//! server coalesces events per domain and rescans on a timer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::xenstore::{Perm, WatchEvent, Xenstore, XsError};

/// Most grant references a frontend may publish (port memory plus the backend's control
/// page): 16 Ki pages is 64 MiB of port memory.
pub const MAX_REFS: usize = 16 * 1024;
/// References per `grant-refs/<k>` node.
pub const REFS_PER_NODE: usize = 256;
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

/// The frontend directory of domain `app`.
pub fn front_path(app: u16) -> String {
    format!("/local/domain/{app}/{FRONT_REL}")
}

/// The backend directory the server in domain `server` keeps for domain `app`.
pub fn back_path(server: u16, app: u16) -> String {
    format!("/local/domain/{server}/backend/ferrite/{app}")
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
    /// App name.
    pub name: String,
    /// App MAC.
    pub mac: [u8; 6],
    /// Grant references, verbatim.
    pub refs: Vec<u32>,
    /// The app's unbound event-channel port for the server.
    pub event_channel: u32,
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

/// Reads the frontend's state.
pub fn frontend_state(xs: &Xenstore, app: u16) -> Result<XbState, XenCtlError> {
    match xs.read_opt(&format!("{}/state", front_path(app)))? {
        None => Ok(XbState::Unknown),
        Some(v) => XbState::parse(&v),
    }
}

/// Reads and checks a frontend's Hello (version, name, MAC).
pub fn read_hello(xs: &Xenstore, app: u16) -> Result<(String, [u8; 6]), XenCtlError> {
    let dir = front_path(app);
    if read_node(xs, &dir, "version")? != b"1" {
        return Err(field("version", "this server speaks version 1"));
    }
    let name = parse_name(&read_node(xs, &dir, "name")?)?;
    let mac = parse_mac(&read_node(xs, &dir, "mac")?)?;
    Ok((name, mac))
}

/// Reads and checks everything a frontend published for `Initialised`.
pub fn read_frontend(
    xs: &Xenstore,
    app: u16,
    max_refs: usize,
) -> Result<FrontendInfo, XenCtlError> {
    let dir = front_path(app);
    let (name, mac) = read_hello(xs, app)?;
    let max = max_refs.min(MAX_REFS);
    let count = parse_u32(
        "grant-count",
        &read_node(xs, &dir, "grant-count")?,
        max as u32,
    )? as usize;
    if count < 2 {
        return Err(field("grant-count", "needs at least 2 references"));
    }
    let mut refs = Vec::with_capacity(count);
    for k in 0..count.div_ceil(REFS_PER_NODE) {
        let node = format!("grant-refs/{k}");
        let v = read_node(xs, &dir, &node)?;
        let want = REFS_PER_NODE.min(count - k * REFS_PER_NODE);
        let mut got = 0;
        for part in v.split(|&c| c == b',') {
            if got == want {
                return Err(field(&node, format!("holds more than {want} references")));
            }
            refs.push(parse_u32(&node, part, u32::MAX)?);
            got += 1;
        }
        if got != want {
            return Err(field(
                &node,
                format!("holds {got} references, expected {want}"),
            ));
        }
    }
    let mut seen = BTreeSet::new();
    if let Some(r) = refs.iter().find(|r| !seen.insert(**r)) {
        return Err(field("grant-refs", format!("reference {r} repeats")));
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
        name,
        mac,
        refs,
        event_channel,
    })
}

/// The app's side of the handshake.
#[derive(Debug)]
pub struct Frontend<'a> {
    xs: &'a Xenstore,
    me: u16,
    server: u16,
}

impl<'a> Frontend<'a> {
    /// The frontend of domain `me` towards the server in domain `server`.
    pub fn new(xs: &'a Xenstore, me: u16, server: u16) -> Self {
        Self { xs, me, server }
    }

    /// This domain's id, from xenstore (`domid` under the domain's home).
    pub fn own_domid(xs: &Xenstore) -> Result<u16, XenCtlError> {
        let v = xs.read("domid")?;
        Ok(parse_u32("domid", &v, u32::from(u16::MAX))? as u16)
    }

    fn dir(&self) -> String {
        front_path(self.me)
    }

    /// The backend directory the server writes for this app.
    pub fn back_dir(&self) -> String {
        back_path(self.server, self.me)
    }

    /// Writes this side's state.
    pub fn set_state(&self, s: XbState) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .write(&format!("{}/state", self.dir()), s.as_value())?)
    }

    /// Step 1: clears what an earlier attach left, writes Hello and `Initialising`, and
    /// watches the backend directory (token `back`).
    pub fn hello(&self, name: &str, mac: [u8; 6]) -> Result<(), XenCtlError> {
        parse_name(name.as_bytes())?;
        let d = self.dir();
        self.xs.rm(&format!("{d}/grant-refs"))?;
        for (n, v) in [("version", "1"), ("name", name), ("mac", &fmt_mac(mac))] {
            self.xs.write(&format!("{d}/{n}"), v.as_bytes())?;
        }
        let _ = self.xs.watch(&self.back_dir(), "back");
        self.set_state(XbState::Initialising)
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
            None => XbState::Unknown,
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
    /// the backend's `error`, and reports a changed instance when `instance` is given.
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
            // Any watch event (or a short tick, should one be lost) means "look again".
            let _ = self.xs.next_event(left.min(Duration::from_millis(200)))?;
        }
    }

    /// Step 3: publishes the grant references and event-channel port, then `Initialised`.
    pub fn publish(&self, refs: &[u32], event_channel: u32) -> Result<(), XenCtlError> {
        let d = self.dir();
        if refs.len() < 2 || refs.len() > MAX_REFS {
            return Err(field("grant-count", format!("{} references", refs.len())));
        }
        for (k, chunk) in refs.chunks(REFS_PER_NODE).enumerate() {
            let v = chunk
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            self.xs
                .write(&format!("{d}/grant-refs/{k}"), v.as_bytes())?;
        }
        self.xs.write(
            &format!("{d}/grant-count"),
            refs.len().to_string().as_bytes(),
        )?;
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

    /// Watches domains coming and going and the frontend directory of domain `app`.
    pub fn watch_domains(&self) -> Result<(), XenCtlError> {
        self.xs.watch("@introduceDomain", "intro")?;
        self.xs.watch("@releaseDomain", "release")?;
        Ok(())
    }

    /// Watches domain `app`'s frontend directory (token `fe<app>`).
    pub fn watch_app(&self, app: u16) -> Result<(), XenCtlError> {
        Ok(self.xs.watch(&front_path(app), &format!("fe{app}"))?)
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

    /// Waits up to `timeout` for events; returns the app domains whose frontend changed
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

    /// Writes a backend node for `app`.
    fn put(&self, app: u16, node: &str, v: &[u8]) -> Result<(), XenCtlError> {
        Ok(self
            .xs
            .write(&format!("{}/{node}", back_path(self.me, app)), v)?)
    }

    /// Creates `app`'s backend directory, readable by `app` only, with this instance.
    pub fn open(&self, app: u16) -> Result<(), XenCtlError> {
        let b = back_path(self.me, app);
        self.xs.mkdir_in(crate::xenstore::NO_TX, &b)?;
        self.xs.set_perms_in(
            crate::xenstore::NO_TX,
            &b,
            &[Perm::owner(self.me, 'n'), Perm::read(app)],
        )?;
        self.xs.rm(&format!("{b}/error"))?;
        self.put(app, "instance", self.instance.to_string().as_bytes())
    }

    /// Answers Hello: `max-refs`, the pool id the app must use in its buffer handles, and
    /// `InitWait`.
    pub fn init_wait(&self, app: u16, pool: u8) -> Result<(), XenCtlError> {
        self.open(app)?;
        self.put(app, "max-refs", self.max_refs.to_string().as_bytes())?;
        self.put(app, "pool", pool.to_string().as_bytes())?;
        self.put(app, "state", XbState::InitWait.as_value())
    }

    /// Announces a (re)started server to an app that was attached to an earlier instance.
    pub fn restarted(&self, app: u16) -> Result<(), XenCtlError> {
        self.open(app)?;
        self.put(app, "state", XbState::Initialising.as_value())
    }

    /// Reads and checks the app's grant (state `Initialised`).
    pub fn frontend(&self, app: u16) -> Result<FrontendInfo, XenCtlError> {
        read_frontend(self.xs, app, self.max_refs)
    }

    /// Answers a mapped grant: `port` and `Connected`.
    pub fn connected(&self, app: u16, port: u16) -> Result<(), XenCtlError> {
        self.put(app, "port", port.to_string().as_bytes())?;
        self.put(app, "state", XbState::Connected.as_value())
    }

    /// Refuses `app` with `why` (`Closed`); no other app is touched.
    pub fn refuse(&self, app: u16, why: &str) -> Result<(), XenCtlError> {
        let why: String = why.chars().take(512).collect();
        let _ = self.open(app);
        self.put(app, "error", why.as_bytes())?;
        self.put(app, "state", XbState::Closed.as_value())
    }

    /// Removes `app`'s backend directory (its domain is gone).
    pub fn forget(&self, app: u16) -> Result<(), XenCtlError> {
        Ok(self.xs.rm(&back_path(self.me, app))?)
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

    /// Writes a well-formed frontend for domain 7 with `n` references.
    fn frontend(xs: &Xenstore, n: u32) -> Vec<u32> {
        let fe = Frontend::new(xs, 7, 0);
        fe.hello("app-7", [2, 0, 0, 0, 0, 7]).expect("hello");
        let refs: Vec<u32> = (0..n).map(|i| 1000 + i).collect();
        fe.publish(&refs, 42).expect("publish");
        refs
    }

    #[test]
    fn a_published_frontend_reads_back_exactly() {
        let (xs, _h) = crate::xenstore::tests::store_peer();
        let refs = frontend(&xs, 600);
        assert_eq!(frontend_state(&xs, 7).expect("state"), XbState::Initialised);
        let fe = read_frontend(&xs, 7, MAX_REFS).expect("valid frontend");
        assert_eq!(fe.name, "app-7");
        assert_eq!(fe.mac, [2, 0, 0, 0, 0, 7]);
        assert_eq!(fe.refs, refs, "600 references across 3 nodes, in order");
        assert_eq!(fe.event_channel, 42);
    }

    #[test]
    fn hostile_frontends_are_refused_with_the_node_named() {
        let cases: [(&str, &[u8], &str); 9] = [
            ("grant-count", b"601", "grant-refs/2"), // more claimed than written
            ("grant-count", b"599", "grant-refs/2"), // fewer claimed than written
            ("grant-count", b"99999", "grant-count"), // over the server's limit
            ("grant-count", b"1", "grant-count"),    // too few
            ("grant-refs/1", b"1,2,x", "grant-refs/1"), // not a number
            ("grant-refs/0", b"", "grant-refs/0"),   // empty chunk
            ("event-channel", b"0", "event-channel"),
            ("event-channel", b"131072", "event-channel"),
            ("mac", b"ff:ff:ff:ff:ff:ff", "mac"),
        ];
        for (node, value, blamed) in cases {
            let (xs, _h) = crate::xenstore::tests::store_peer();
            frontend(&xs, 600);
            xs.write(&format!("{}/{node}", front_path(7)), value)
                .expect("write");
            match read_frontend(&xs, 7, 4096) {
                Err(XenCtlError::Field { node: n, .. }) => {
                    assert_eq!(n, blamed, "{node}={value:?}")
                }
                other => panic!("{node}={value:?} was not refused: {other:?}"),
            }
        }
        // A repeated reference is refused even when every count matches.
        let (xs, _h) = crate::xenstore::tests::store_peer();
        frontend(&xs, 3);
        xs.write(&format!("{}/grant-refs/0", front_path(7)), b"5,6,5")
            .expect("write");
        assert!(matches!(
            read_frontend(&xs, 7, 4096),
            Err(XenCtlError::Field { ref node, .. }) if node == "grant-refs"
        ));
    }

    #[test]
    fn mac_round_trips() {
        let m = [0x02, 0xab, 0, 0x10, 0xff, 1];
        assert_eq!(parse_mac(fmt_mac(m).as_bytes()).expect("ok"), m);
    }
}

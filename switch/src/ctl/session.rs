//! The handshake state machine of one control connection, free of any socket I/O.
//!
//! A [`Session`] is fed each received message (raw bytes plus how many descriptors came with
//! it) and answers with a [`Step`]: a reply to send, a reply after which the connection must
//! close, or work for the server (attach a port, report stats, detach). It validates
//! everything that can be validated without touching memory: the message format, the state,
//! the peer's credentials against the [`Policy`], the name, the MAC and the port layout
//! against the [`Limits`]. What needs the memory itself (its size, seals, mapping) is the
//! server's, which reports back with [`Session::attached`] or [`Session::refuse`].
//!
//! States follow xenbus: `Initialising` (connected, nothing said) → `InitWait` (Hello
//! accepted, limits sent, waiting for the grant) → `Initialised` (grant received and valid,
//! being mapped) → `Connected` (port on the switch) → `Closing` (detach or refusal under way)
//! → `Closed`. A connection that stays before `Connected` longer than the policy's timeout
//! is closed with [`ErrorCode::Timeout`].

use std::time::{Duration, Instant};

use super::transport::PeerCred;
use super::wire::{GrantRepr, Limits, Message, Name, Repr, fmt_mac};
use super::{CtlError, ErrorCode};

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected; nothing received yet (a stats-only client stays here).
    Initialising,
    /// Hello accepted, limits sent; waiting for the grant.
    InitWait,
    /// Grant received and valid; the server is mapping it.
    Initialised,
    /// The app's port is on the switch.
    Connected,
    /// Going away (detached or refused); the last answer is being sent.
    Closing,
    /// Gone.
    Closed,
}

/// An app that may attach: who (uid and/or gid), under which name, with which MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedApp {
    /// The peer's uid must be this, when given.
    pub uid: Option<u32>,
    /// The peer's gid must be this, when given.
    pub gid: Option<u32>,
    /// The name the app must say in Hello.
    pub name: String,
    /// The MAC the app must say in Hello, when given (else any unicast MAC).
    pub mac: Option<[u8; 6]>,
}

impl AllowedApp {
    fn admits(&self, peer: &PeerCred, name: &Name, mac: [u8; 6]) -> bool {
        self.uid.is_none_or(|u| u == peer.uid)
            && self.gid.is_none_or(|g| g == peer.gid)
            && (self.uid.is_some() || self.gid.is_some())
            && self.name == name.as_str()
            && self.mac.is_none_or(|m| m == mac)
    }
}

/// What the server allows: which apps, and the limits of their grants.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Apps that may attach.
    pub allowed: Vec<AllowedApp>,
    /// Limits sent in InitWait and enforced on Grant.
    pub limits: Limits,
    /// Descriptors a Grant must carry for its memory and for its notifier: `(2, 2)` on the
    /// shm backend (data and control memfds; two eventfds), `(0, 0)` on Xen.
    pub grant_fds: (u8, u8),
}

/// What the server must do after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this and keep the connection.
    Reply(Repr),
    /// Send this (an `Error` or `Closed`), then close the connection.
    Close(Repr),
    /// A valid grant: check and map the memory (the descriptors that came with it), put the
    /// port on the switch, then call [`Session::attached`] or [`Session::refuse`].
    Attach {
        /// App name.
        name: Name,
        /// App MAC.
        mac: [u8; 6],
        /// The grant, every field within the limits.
        grant: GrantRepr,
    },
    /// Answer with the counters (a `StatsReply`), keep the connection.
    Stats,
    /// Stream the frames of a port to this peer (if it may see them): the connection is
    /// handed to a capture and leaves the control loop.
    Capture {
        /// Switch port.
        port: u16,
        /// Which way.
        direction: super::wire::Direction,
        /// Bytes of each frame at most.
        snaplen: u32,
        /// Frames before the capture ends (0: when the peer goes).
        count: u64,
    },
    /// Take the app's port off the switch, then call [`Session::detached`] and close.
    Detach,
}

/// One control connection's handshake.
#[derive(Debug)]
pub struct Session {
    state: State,
    peer: PeerCred,
    since: Instant,
    timeout: Duration,
    app: Option<(Name, [u8; 6])>,
    port: Option<u16>,
}

fn refused(code: ErrorCode, text: impl Into<String>) -> CtlError {
    CtlError::refused(code, text)
}

impl Session {
    /// A session for a connection from `peer`, opened at `now`.
    pub fn new(peer: PeerCred, policy: &Policy, now: Instant) -> Self {
        Self {
            state: State::Initialising,
            peer,
            since: now,
            timeout: Duration::from_millis(policy.limits.timeout_ms as u64),
            app: None,
            port: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The peer's credentials.
    pub fn peer(&self) -> PeerCred {
        self.peer
    }

    /// The app's name and MAC, once Hello was accepted.
    pub fn app(&self) -> Option<(&Name, [u8; 6])> {
        self.app.as_ref().map(|(n, m)| (n, *m))
    }

    /// The switch port, once connected.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether the handshake has been pending past the timeout at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        matches!(
            self.state,
            State::Initialising | State::InitWait | State::Initialised
        ) && now.saturating_duration_since(self.since) > self.timeout
    }

    /// The answer for a connection that timed out; the session is closing afterwards.
    pub fn timed_out(&mut self) -> Repr {
        self.refuse(refused(
            ErrorCode::Timeout,
            format!(
                "handshake not completed within {} ms (state {:?})",
                self.timeout.as_millis(),
                self.state
            ),
        ))
    }

    fn enter(&mut self, s: State, now: Instant) {
        self.state = s;
        self.since = now;
    }

    /// Handles one received message: `bytes` as received, `fds` acceptable descriptors came
    /// with it, `truncated` as the transport reported, `surplus_fds` when descriptors came
    /// that no message carries (more than [`super::transport::MAX_FDS`], or of a wrong kind).
    pub fn on_message(
        &mut self,
        bytes: &[u8],
        fds: usize,
        truncated: bool,
        surplus_fds: bool,
        policy: &Policy,
        now: Instant,
    ) -> Step {
        match self.handle(bytes, fds, truncated, surplus_fds, policy, now) {
            Ok(step) => step,
            Err(e) => Step::Close(self.refuse(e)),
        }
    }

    fn handle(
        &mut self,
        bytes: &[u8],
        fds: usize,
        truncated: bool,
        surplus_fds: bool,
        policy: &Policy,
        now: Instant,
    ) -> Result<Step, CtlError> {
        if truncated {
            return Err(refused(
                ErrorCode::Malformed,
                format!("message longer than {} bytes", bytes.len()),
            ));
        }
        if surplus_fds {
            return Err(refused(
                ErrorCode::BadFds,
                "descriptors no message carries: too many, or not sealed tmpfs memfds",
            ));
        }
        let repr = Repr::parse(&Message::new_checked(bytes)?)?;
        let kind = repr.kind();
        if fds != 0 && !matches!(repr, Repr::Grant(_)) {
            return Err(refused(
                ErrorCode::BadFds,
                format!("{kind:?} carries no file descriptors, {fds} came"),
            ));
        }
        match (self.state, repr) {
            (State::Initialising, Repr::Hello { name, mac }) => {
                if !policy
                    .allowed
                    .iter()
                    .any(|a| a.admits(&self.peer, &name, mac))
                {
                    return Err(refused(
                        ErrorCode::NotPermitted,
                        format!(
                            "uid {} gid {} may not attach as {name:?} with MAC {}",
                            self.peer.uid,
                            self.peer.gid,
                            fmt_mac(mac)
                        ),
                    ));
                }
                self.app = Some((name, mac));
                self.enter(State::InitWait, now);
                Ok(Step::Reply(Repr::InitWait(policy.limits)))
            }
            (State::InitWait, Repr::Grant(g)) => {
                let (gf, nf) = policy.grant_fds;
                if (g.grant_fds, g.notify_fds) != (gf, nf) || fds != gf as usize + nf as usize {
                    return Err(refused(
                        ErrorCode::BadFds,
                        format!(
                            "a grant carries {gf} memory and {nf} notifier descriptors; \
                             it declared {} and {}, and {fds} came",
                            g.grant_fds, g.notify_fds
                        ),
                    ));
                }
                check_grant(&g, &policy.limits)?;
                let (name, mac) = self
                    .app
                    .clone()
                    .ok_or_else(|| refused(ErrorCode::Internal, "no hello recorded"))?;
                self.enter(State::Initialised, now);
                Ok(Step::Attach {
                    name,
                    mac,
                    grant: g,
                })
            }
            (State::Initialising | State::Connected, Repr::StatsRequest) => Ok(Step::Stats),
            (
                State::Initialising,
                Repr::CaptureRequest {
                    port,
                    direction,
                    snaplen,
                    count,
                },
            ) => Ok(Step::Capture {
                port,
                direction,
                snaplen,
                count,
            }),
            (State::Connected, Repr::Detach) => {
                self.enter(State::Closing, now);
                Ok(Step::Detach)
            }
            (State::Initialising | State::InitWait, Repr::Detach) => {
                self.enter(State::Closed, now);
                Ok(Step::Close(Repr::Closed))
            }
            (s, r) => Err(refused(
                ErrorCode::UnexpectedMessage,
                format!("{:?} is not allowed in state {s:?}", r.kind()),
            )),
        }
    }

    /// The server put the app's port on the switch: the answer to send.
    pub fn attached(&mut self, port: u16, pool: u8, instance: u64) -> Repr {
        self.port = Some(port);
        self.enter(State::Connected, Instant::now());
        Repr::Connected {
            port,
            pool,
            instance,
        }
    }

    /// The server took the app's port off the switch: the answer to send before closing.
    pub fn detached(&mut self) -> Repr {
        self.port = None;
        self.enter(State::Closed, Instant::now());
        Repr::Closed
    }

    /// Refuses the connection with `e`: the `Error` answer to send before closing.
    pub fn refuse(&mut self, e: CtlError) -> Repr {
        let (code, text) = match e {
            CtlError::Refused { code, text } => (code, text),
            other => (ErrorCode::Internal, other.to_string()),
        };
        // A closed session stays closed: the refusal is its last word, not a new state.
        if self.state != State::Closed {
            self.enter(State::Closing, Instant::now());
        }
        Repr::Error { code, text }
    }
}

/// Checks a grant's layout against the limits (not yet against the memory).
pub fn check_grant(g: &GrantRepr, l: &Limits) -> Result<(), CtlError> {
    check_layout(g.layout(), g.refs.len(), l)
}

/// Checks a port layout — `[rx, tx, fill, completion, buffer size, buffer count]`, in
/// `pages` pages of memory — against the limits: the one check for every transport (a
/// socket app's announced grant, a Xen app's port header).
pub fn check_layout(layout: [u32; 6], pages: usize, l: &Limits) -> Result<(), CtlError> {
    let bad = |t: String| Err(refused(ErrorCode::BadLayout, t));
    let [rx, tx, fill, comp, buf_size, buf_count] = layout;
    for (what, v) in [("rx", rx), ("tx", tx), ("fill", fill), ("completion", comp)] {
        if !v.is_power_of_two() || v < 2 || v > l.max_ring {
            return bad(format!(
                "{what} ring size {v} must be a power of two from 2 to {}",
                l.max_ring
            ));
        }
    }
    if !buf_size.is_power_of_two() || buf_size < l.min_buf_size || buf_size > l.max_buf_size {
        return bad(format!(
            "buffer size {buf_size} must be a power of two from {} to {}",
            l.min_buf_size, l.max_buf_size
        ));
    }
    if buf_count == 0 || buf_count > l.max_bufs {
        return bad(format!(
            "buffer count {buf_count} must be from 1 to {}",
            l.max_bufs
        ));
    }
    if pages == 0 || pages as u64 * 4096 > l.max_mem {
        return bad(format!(
            "{pages} pages of port memory: must be at least 1 and at most {} bytes",
            l.max_mem
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allowed: vec![AllowedApp {
                uid: Some(1000),
                gid: None,
                name: "web".into(),
                mac: Some([2, 0, 0, 0, 0, 1]),
            }],
            limits: Limits {
                max_ring: 1024,
                min_buf_size: 2048,
                max_buf_size: 2048,
                max_bufs: 4096,
                max_mem: 1 << 24,
                timeout_ms: 1000,
            },
            grant_fds: (2, 2),
        }
    }

    const PEER: PeerCred = PeerCred {
        pid: 1,
        uid: 1000,
        gid: 1000,
    };

    fn hello(name: &str, mac: [u8; 6]) -> Vec<u8> {
        Repr::Hello {
            name: Name::new(name).unwrap(),
            mac,
        }
        .to_bytes()
    }

    fn grant() -> GrantRepr {
        GrantRepr {
            rx_size: 256,
            tx_size: 256,
            fill_size: 256,
            comp_size: 256,
            buf_size: 2048,
            buf_count: 512,
            domid: 0,
            grant_fds: 2,
            notify_fds: 2,
            notify_port: 0,
            refs: (0..300).collect(),
        }
    }

    fn err_code(s: &Step) -> ErrorCode {
        match s {
            Step::Close(Repr::Error { code, .. }) => *code,
            other => panic!("expected an error answer, got {other:?}"),
        }
    }

    #[test]
    fn happy_path_and_detach() {
        let p = policy();
        let now = Instant::now();
        let mut s = Session::new(PEER, &p, now);
        let st = s.on_message(&hello("web", [2, 0, 0, 0, 0, 1]), 0, false, false, &p, now);
        assert_eq!(st, Step::Reply(Repr::InitWait(p.limits)));
        assert_eq!(s.state(), State::InitWait);
        let g = Repr::Grant(grant()).to_bytes();
        match s.on_message(&g, 4, false, false, &p, now) {
            Step::Attach {
                name,
                mac,
                grant: gr,
            } => {
                assert_eq!(name.as_str(), "web");
                assert_eq!(mac, [2, 0, 0, 0, 0, 1]);
                assert_eq!(gr, grant());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.state(), State::Initialised);
        assert!(matches!(
            s.attached(4, 9, 1),
            Repr::Connected { port: 4, .. }
        ));
        assert_eq!(
            s.on_message(&Repr::StatsRequest.to_bytes(), 0, false, false, &p, now),
            Step::Stats
        );
        assert_eq!(
            s.on_message(&Repr::Detach.to_bytes(), 0, false, false, &p, now),
            Step::Detach
        );
        assert_eq!(s.detached(), Repr::Closed);
        assert_eq!(s.state(), State::Closed);
    }

    #[test]
    fn a_capture_is_asked_for_on_a_fresh_connection_only() {
        let p = policy();
        let now = Instant::now();
        let req = Repr::CaptureRequest {
            port: 2,
            direction: super::super::wire::Direction::Rx,
            snaplen: 96,
            count: 5,
        }
        .to_bytes();
        let mut s = Session::new(PEER, &p, now);
        assert_eq!(
            s.on_message(&req, 0, false, false, &p, now),
            Step::Capture {
                port: 2,
                direction: super::super::wire::Direction::Rx,
                snaplen: 96,
                count: 5
            }
        );
        // Not from an app in its handshake.
        let mut s = Session::new(PEER, &p, now);
        s.on_message(&hello("web", [2, 0, 0, 0, 0, 1]), 0, false, false, &p, now);
        assert!(matches!(
            s.on_message(&req, 0, false, false, &p, now),
            Step::Close(Repr::Error { .. })
        ));
    }

    #[test]
    fn credentials_name_and_mac_must_match_the_policy() {
        let p = policy();
        let now = Instant::now();
        for (peer, name, mac) in [
            (PeerCred { uid: 1001, ..PEER }, "web", [2, 0, 0, 0, 0, 1]),
            (PEER, "db", [2, 0, 0, 0, 0, 1]),
            (PEER, "web", [2, 0, 0, 0, 0, 2]),
        ] {
            let mut s = Session::new(peer, &p, now);
            let st = s.on_message(&hello(name, mac), 0, false, false, &p, now);
            assert_eq!(err_code(&st), ErrorCode::NotPermitted);
            assert_eq!(s.state(), State::Closing);
        }
    }

    #[test]
    fn out_of_order_fds_and_layouts_are_refused() {
        let p = policy();
        let now = Instant::now();
        let g = Repr::Grant(grant()).to_bytes();
        let mut s = Session::new(PEER, &p, now);
        assert_eq!(
            err_code(&s.on_message(&g, 4, false, false, &p, now)),
            ErrorCode::UnexpectedMessage
        );
        let mut s = Session::new(PEER, &p, now);
        let st = s.on_message(&hello("web", [2, 0, 0, 0, 0, 1]), 1, false, false, &p, now);
        assert_eq!(err_code(&st), ErrorCode::BadFds);

        let bad_layouts: [fn(&mut GrantRepr); 6] = [
            |g| g.rx_size = 3,
            |g| g.tx_size = 2048,
            |g| g.buf_size = 1024,
            |g| g.buf_count = 0,
            |g| g.refs = vec![],
            |g| g.refs = vec![0; 5000],
        ];
        for f in bad_layouts {
            let mut s = Session::new(PEER, &p, now);
            s.on_message(&hello("web", [2, 0, 0, 0, 0, 1]), 0, false, false, &p, now);
            let mut gr = grant();
            f(&mut gr);
            let st = s.on_message(&Repr::Grant(gr).to_bytes(), 4, false, false, &p, now);
            assert_eq!(err_code(&st), ErrorCode::BadLayout);
        }
        let mut s = Session::new(PEER, &p, now);
        s.on_message(&hello("web", [2, 0, 0, 0, 0, 1]), 0, false, false, &p, now);
        assert_eq!(
            err_code(&s.on_message(&g, 3, false, false, &p, now)),
            ErrorCode::BadFds
        );
        let mut s = Session::new(PEER, &p, now);
        assert_eq!(
            err_code(&s.on_message(&g, 0, true, false, &p, now)),
            ErrorCode::Malformed
        );
    }

    #[test]
    fn a_stalled_handshake_expires() {
        let p = policy();
        let now = Instant::now();
        let mut s = Session::new(PEER, &p, now);
        assert!(!s.expired(now + Duration::from_millis(500)));
        assert!(s.expired(now + Duration::from_millis(1500)));
        assert!(matches!(
            s.timed_out(),
            Repr::Error {
                code: ErrorCode::Timeout,
                ..
            }
        ));
    }
}

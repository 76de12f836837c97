//! The Ferrite network server: configured ports and app ports on one switch, and the
//! control plane that attaches and detaches apps while the switch runs.
//!
//! Two threads. The **switch thread** owns the [`Switch`] and runs its loop (pinned when
//! configured); it never blocks on the control plane. The **control thread** (the caller of
//! [`serve`]) polls the control socket, every connection and a signal pipe. It hands new and
//! departing ports to the switch through a channel that the switch drains in its
//! housekeeping hook (between bursts and before it sleeps), and wakes a sleeping switch; the
//! forwarding path never takes a lock. An app's doorbell wakes the switch directly: the
//! switch sleeps on it (`Port::wait_fd`).
//!
//! On attach the switch thread offers the app's pool to every NIC port
//! ([`Port::grant_tx_pool`]); a port that accepts transmits the app's frames by handle, with
//! no copy. On detach (or an app's death) the port stays on the switch, its pool mapped and
//! its completions still routed back to it, until every such NIC has revoked the pool (a
//! refused revocation already stops the switch handing the pool's frames over; it is
//! retried from housekeeping while the NIC completes) and one more poll has returned the
//! last buffers: only then is the port removed and its memory unmapped.
//!
//! The server keeps no state that a new handshake cannot rebuild: when it restarts, apps
//! reconnect, grant their memory afresh and the FDB relearns. Under a service manager it
//! reports readiness and feeds a watchdog from the switch thread ([`notify`]); [`supervise`]
//! is Ferrite's own manager, and [`standby`] the lock that keeps one server per control
//! socket and lets a warm spare take over.

mod capture;
mod closer;
pub mod config;
mod loglimit;
pub mod metrics;
pub mod notify;
pub mod ports;
pub mod standby;
pub mod supervise;
mod xen;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use grant_pool::{DomId, GrantBackend, GrantRef, Notifier, PoolId, PortLimits};
use pmd::{Mac, Port, PortStats};
use rustix::event::{PollFd, PollFlags};

use crate::app_port::{AppCounters, AppPort, FirstFrame};
use crate::counters::{DropReason, PortCountersSnapshot};
use crate::ctl::wire::fmt_mac;
use crate::ctl::{
    CtlError, ErrorCode, GrantRepr, Name, Policy, PortCounters, PortStatsRepr, Received, Repr,
    SeqPacket, SeqPacketListener, Session, StatsRepr, Step, Transport,
};
use crate::fdb::PinError;
use crate::forward::{PortId, Switch, SwitchConfig, SwitchError};
use crate::run::IdleConfig;
use closer::Closer;
pub use config::{Config, ConfigError, XenAdmission};

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured port could not be opened.
    #[error(transparent)]
    Port(#[from] ports::PortOpenError),
    /// The switch refused its configuration or a port.
    #[error("switch: {0}")]
    Switch(#[from] SwitchError),
    /// The control socket failed.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    /// Signal handling could not be set up.
    #[error("cannot handle SIGTERM/SIGINT: {0}")]
    Signal(std::io::Error),
    /// The switch thread failed.
    #[error("the switch thread stopped: {0}")]
    SwitchThread(String),
    /// The thread that closes descriptors apps sent could not start.
    #[error("cannot start the descriptor-closing thread: {0}")]
    CloserThread(std::io::Error),
    /// The xenstore transport could not start (`[xen] enable` outside a Xen domain?).
    #[error("xen: {0}")]
    Xen(crate::xen_ctl::XenCtlError),
    /// The Xen grant devices could not be opened.
    #[error("xen grant backend: {0}")]
    XenBackend(String),
    /// The `[metrics]` endpoint could not listen.
    #[error("metrics.listen = {addr}: {source}")]
    Metrics {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Refused control messages logged one by one per window, at most.
const REFUSAL_LOG_BURST: u32 = 10;
/// The window of [`REFUSAL_LOG_BURST`].
const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Work for the switch thread.
enum Cmd {
    Add(Box<dyn Port>, Sender<Result<PortId, SwitchError>>),
    Remove(PortId, Sender<Option<Box<dyn Port>>>),
    Stats(Sender<Vec<PortSnap>>),
    /// Start a capture; the answer says whether it started.
    Capture(crate::Tap, Sender<bool>),
    /// End this capture, if it runs.
    StopCapture(u64),
}

#[derive(Clone)]
struct PortSnap {
    id: PortId,
    name: String,
    mac: Mac,
    stats: PortStats,
    sw: PortCountersSnapshot,
    /// New stations the port sent from that the FDB did not learn (the port's limit).
    not_learned: u64,
}

/// A command the switch thread did not answer in time, whose answer the control thread still
/// waits for: the pool id stays taken until the port is known to be off the switch.
enum Late {
    /// An app port handed to the switch: if it was added after all, it is taken off again.
    Add(Receiver<Result<PortId, SwitchError>>, PoolId),
    /// An app port asked back: when it comes, its memory is unmapped and its pool id freed.
    Remove(Receiver<Option<Box<dyn Port>>>, PoolId),
}

/// An app's pool granted to NIC ports for transmit without a copy.
struct Granted {
    app: PortId,
    pool: PoolId,
    nics: Vec<PortId>,
}

/// An app port on its way out: it stays on the switch (its pool mapped, its completions
/// routed back to it) until every NIC that was granted its pool has let go of it.
struct Drain {
    app: PortId,
    pool: PoolId,
    /// NICs whose revocation is still refused (frames of the pool in flight).
    held: Vec<PortId>,
    /// The housekeeping round in which the last NIC let go; the port leaves in a later one,
    /// after at least one poll has handed the last completions back to it.
    revoked_at: Option<u64>,
    /// No NIC was ever granted the pool: nothing to wait for.
    ungranted: bool,
    since: Instant,
    warned: bool,
    reply: Sender<Option<Box<dyn Port>>>,
}

/// How long a drain may take before the server says so (it keeps waiting: unmapping a pool
/// a NIC still reads is never an option).
const DRAIN_WARN: Duration = Duration::from_secs(1);

/// The switch thread's state between housekeeping calls.
struct SwitchSide {
    nics: Vec<PortId>,
    granted: Vec<Granted>,
    drains: Vec<Drain>,
    round: u64,
}

impl SwitchSide {
    fn new(nics: Vec<PortId>) -> Self {
        Self {
            nics,
            granted: Vec::new(),
            drains: Vec::new(),
            round: 0,
        }
    }

    /// Offers a new app's pool to every NIC port; those that accept transmit its frames by
    /// handle from now on.
    fn grant(&mut self, sw: &mut Switch, app: PortId) {
        let Some(pool) = sw.port(app).and_then(|p| p.pools().first().cloned()) else {
            return;
        };
        let mut nics = Vec::new();
        for &nic in &self.nics {
            if sw.port_mut(nic).is_some_and(|p| p.grant_tx_pool(&pool)) {
                sw.refresh_port(nic);
                nics.push(nic);
            }
        }
        if !nics.is_empty() {
            tracing::info!(
                port = app.0,
                pool = pool.id().0,
                nics = nics.len(),
                "app pool granted to NIC ports: transmit without a copy"
            );
        }
        self.granted.push(Granted {
            app,
            pool: pool.id(),
            nics,
        });
    }

    /// Starts taking app port `app` off the switch; `reply` gets it once no NIC holds
    /// frames of its pool.
    fn remove(&mut self, sw: &mut Switch, app: PortId, reply: Sender<Option<Box<dyn Port>>>) {
        let (pool, held) = match self.granted.iter().position(|g| g.app == app) {
            Some(i) => {
                let g = self.granted.swap_remove(i);
                (g.pool, g.nics)
            }
            None => (PoolId(0), Vec::new()),
        };
        self.drains.push(Drain {
            app,
            pool,
            revoked_at: held.is_empty().then_some(self.round),
            ungranted: held.is_empty(),
            held,
            since: Instant::now(),
            warned: false,
            reply,
        });
        self.step(sw);
    }

    /// Advances every drain: retries refused revocations (the switch polls the NICs'
    /// completions in between) and hands back ports nothing holds any more.
    fn step(&mut self, sw: &mut Switch) {
        let round = self.round;
        let mut i = 0;
        while i < self.drains.len() {
            let d = &mut self.drains[i];
            if d.revoked_at.is_none() {
                let pool = d.pool;
                d.held.retain(|&nic| {
                    let done = sw.port_mut(nic).is_none_or(|p| p.revoke_tx_pool(pool));
                    // Refused or not, the switch stops handing this pool's frames over.
                    sw.refresh_port(nic);
                    !done
                });
                if d.held.is_empty() {
                    d.revoked_at = Some(round);
                } else if !d.warned && d.since.elapsed() > DRAIN_WARN {
                    d.warned = true;
                    tracing::warn!(
                        port = d.app.0,
                        pool = pool.0,
                        nics = d.held.len(),
                        "NIC ports still hold frames of a departing app's pool; its memory stays mapped until they complete"
                    );
                }
            }
            // Without grants the port leaves at once; after a revocation, one round later.
            let leave = match d.revoked_at {
                Some(r) => d.ungranted || r < round,
                None => false,
            };
            if leave {
                let d = self.drains.swap_remove(i);
                if let Err(e) = d.reply.send(sw.remove_port(d.app)) {
                    // Nobody waiting any more: drop it here, no NIC reads it.
                    drop(e.into_inner());
                }
            } else {
                i += 1;
            }
        }
    }

    fn housekeeping(&mut self, sw: &mut Switch, rx: &Receiver<Cmd>) {
        self.round = self.round.wrapping_add(1);
        // Bounded: a burst of commands cannot hold the switch for long.
        for _ in 0..16 {
            let Ok(cmd) = rx.try_recv() else { break };
            match cmd {
                Cmd::Add(p, reply) => {
                    let r = sw.add_port(p);
                    if let Ok(id) = r {
                        self.grant(sw, id);
                    }
                    // Nobody waiting any more (the control thread gave up): take the port
                    // off again rather than keep a port no connection answers for.
                    if let Err(e) = reply.send(r)
                        && let Ok(id) = e.into_inner()
                    {
                        let (dead, _) = crossbeam_channel::bounded(1);
                        self.remove(sw, id, dead);
                    }
                }
                Cmd::Remove(id, reply) => self.remove(sw, id, reply),
                Cmd::Stats(reply) => {
                    let snaps = sw
                        .port_ids()
                        .into_iter()
                        .filter_map(|id| {
                            let p = sw.port(id)?;
                            Some(PortSnap {
                                id,
                                name: p.name().to_owned(),
                                mac: p.mac(),
                                stats: p.stats(),
                                sw: sw.counters(id)?.snapshot(),
                                not_learned: sw.fdb().not_learned(id.0),
                            })
                        })
                        .collect();
                    let _ = reply.send(snaps);
                }
                Cmd::Capture(t, reply) => {
                    let _ = reply.send(sw.start_capture(t));
                }
                Cmd::StopCapture(id) => sw.stop_capture(id),
            }
        }
        self.step(sw);
    }
}

/// An app's port as the control thread remembers it.
struct AppEntry<N> {
    id: PortId,
    pool: PoolId,
    name: String,
    mac: Mac,
    counters: Arc<AppCounters>,
    /// The app's doorbell, shared with its port on the switch (the control thread rings it
    /// once, after posting a Xen app's answer).
    notifier: Arc<N>,
}

struct Conn<N> {
    t: SeqPacket,
    s: Session,
    app: Option<AppEntry<N>>,
    done: bool,
}

/// The descriptors of one control message, if all are acceptable: at most
/// [`crate::ctl::transport::MAX_FDS`], each a sealed tmpfs memfd (the only kind the protocol
/// carries). Otherwise every one goes to `closer` (closing a socket with `SO_LINGER` or a FUSE
/// file can block, so no descriptor an app sent is closed on the control thread) and the
/// message is refused.
fn screen_fds(closer: &Closer, fds: Vec<OwnedFd>) -> Option<Vec<OwnedFd>> {
    let ok = fds.len() <= crate::ctl::transport::MAX_FDS
        && fds
            .iter()
            .all(|fd| grant_pool::shm::check_memfd(fd.as_fd()).is_ok());
    if ok {
        return Some(fds);
    }
    for fd in fds {
        closer.close(fd);
    }
    None
}

/// Names and MACs of the apps attached over the Unix socket.
fn taken_by<N>(conns: &[Conn<N>]) -> Vec<(String, Mac)> {
    conns
        .iter()
        .filter_map(|c| c.app.as_ref())
        .map(|a| (a.name.clone(), a.mac))
        .collect()
}

/// Refuses a name or MAC an attached app (of any transport) already has.
fn check_free(taken: &[(String, Mac)], name: &str, mac: Mac) -> Result<(), CtlError> {
    match taken.iter().find(|(n, m)| n == name || *m == mac) {
        Some((n, m)) => Err(CtlError::refused(
            ErrorCode::Busy,
            format!("{n} ({}) is attached already", fmt_mac(*m)),
        )),
        None => Ok(()),
    }
}

/// Most control connections open at once; more are refused with `Busy`.
pub const MAX_CONNS: usize = 256;
/// Stats requests within this interval of a snapshot are answered from it.
const STATS_EVERY: Duration = Duration::from_millis(20);

/// How long the control thread waits for the switch thread to take a command.
const SWITCH_REPLY: Duration = Duration::from_secs(2);

/// The control thread's state.
struct Control<B: GrantBackend> {
    backend: B,
    /// The last port snapshot and when the switch took it.
    stats_cache: Option<(Instant, Vec<PortSnap>)>,
    closer: Closer,
    policy: Policy,
    limits: PortLimits,
    tx: Sender<Cmd>,
    waker: Arc<crate::run::Waker>,
    first: Arc<FirstFrame>,
    start: Instant,
    instance: u64,
    pools_used: [bool; 256],
    nics: Vec<(PortId, String)>,
    rejections: [u64; ErrorCode::ALL.len()],
    /// Refusals logged one by one up to a few per window, then counted.
    refusal_log: loglimit::LogLimit,
    buf: Vec<u8>,
    /// Each app's rate limit, enforced by the switch.
    rates: config::AppRates,
    /// The apps whose configuration fixes their MAC (see `pmd::Admission::fixed`).
    fixed_macs: Vec<(String, Mac)>,
    /// Commands whose answer came too late (see [`Late`]).
    late: Vec<Late>,
}

impl<B: GrantBackend> Control<B>
where
    B::Mapping: 'static,
    B::Notifier: 'static,
{
    fn command<T>(&self, make: impl FnOnce(Sender<T>) -> Cmd) -> Option<T> {
        self.command_or_late(make).ok()
    }

    /// As [`Control::command`], giving back the answer's channel when the switch did not
    /// answer in time (`Err(None)`: it is gone, the command with it).
    fn command_or_late<T>(
        &self,
        make: impl FnOnce(Sender<T>) -> Cmd,
    ) -> Result<T, Option<Receiver<T>>> {
        let (stx, srx) = crossbeam_channel::bounded(1);
        self.tx.send(make(stx)).map_err(|_| None)?;
        self.waker.wake();
        let deadline = Instant::now() + SWITCH_REPLY;
        // The switch takes commands between bursts or before it sleeps; keep waking it.
        while Instant::now() < deadline {
            match srx.recv_timeout(Duration::from_millis(5)) {
                Ok(v) => return Ok(v),
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(None),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => self.waker.wake(),
            }
        }
        Err(Some(srx))
    }

    /// Settles commands answered late: a port added after its attach gave up is taken off
    /// again, a port given back after its detach gave up is dropped (its memory unmapped), and
    /// their pool ids are free once the port is known to be off the switch. Never waits.
    fn settle_late(&mut self) {
        let mut i = 0;
        while i < self.late.len() {
            let done = match &self.late[i] {
                Late::Add(rx, pool) => match rx.try_recv() {
                    Ok(Ok(id)) => {
                        tracing::warn!(port = id.0, "a port the switch added late is taken off");
                        let (rtx, rrx) = crossbeam_channel::bounded(1);
                        if self.tx.send(Cmd::Remove(id, rtx)).is_ok() {
                            self.waker.wake();
                            self.late[i] = Late::Remove(rrx, *pool);
                        }
                        false
                    }
                    Ok(Err(_)) | Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.pools_used[pool.0 as usize] = false;
                        true
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => false,
                },
                Late::Remove(rx, pool) => match rx.try_recv() {
                    Ok(port) => {
                        drop(port);
                        self.pools_used[pool.0 as usize] = false;
                        true
                    }
                    // The switch thread is gone, and every port with it.
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        self.pools_used[pool.0 as usize] = false;
                        true
                    }
                    Err(crossbeam_channel::TryRecvError::Empty) => false,
                },
            };
            if done {
                self.late.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn count(&mut self, r: &Repr) {
        if let Repr::Error { code, text } = r {
            if let Some(i) = ErrorCode::ALL.iter().position(|c| c == code) {
                self.rejections[i] += 1;
            }
            if self.refusal_log.allow(Instant::now()) {
                tracing::warn!(code = %code, "control message refused: {text}");
            }
        }
    }

    /// Logs how many refusals were held back in a window that has closed.
    fn flush_refusal_log(&mut self) {
        let held = self.refusal_log.take_held(Instant::now());
        if held > 0 {
            tracing::warn!(
                "{held} more control messages refused in {} s, not logged one by one (ferrite stats counts them by reason)",
                self.refusal_log.window().as_secs()
            );
        }
    }

    /// Maps an app's grant and puts its port on the switch. Returns the app and the
    /// descriptors to send with `Connected`: the app's end of the doorbell the server made
    /// (the server never waits on an object the app controls).
    fn attach(
        &mut self,
        name: Name,
        mac: Mac,
        g: GrantRepr,
        fds: Vec<OwnedFd>,
        taken: &[(String, Mac)],
    ) -> Result<(AppEntry<B::Notifier>, Vec<OwnedFd>), CtlError> {
        let busy = |t: String| CtlError::refused(ErrorCode::Busy, t);
        check_free(taken, name.as_str(), mac)?;
        let pool = self
            .free_pool()
            .ok_or_else(|| busy("no pool id left".into()))?;
        let bad_mem = |t: String| CtlError::refused(ErrorCode::BadMemory, t);
        let refs: Vec<GrantRef> = g.refs.iter().map(|&r| GrantRef(r)).collect();
        let dom = DomId(g.domid);
        let mapping = self
            .backend
            .map(dom, &refs, grant_pool::Access::ReadWrite, &fds)
            .map_err(|e| bad_mem(format!("cannot map the grant: {e}")))?;
        let mut notifier = self
            .backend
            .notifier(dom)
            .map_err(|e| CtlError::refused(ErrorCode::Internal, format!("doorbell: {e}")))?;
        let bell = notifier.take_attachments();
        let app = self.add_app(
            name.as_str(),
            mac,
            mapping,
            notifier,
            pool,
            Some(g.layout()),
        )?;
        Ok((app, bell))
    }

    /// The lowest pool id no port uses.
    fn free_pool(&self) -> Option<PoolId> {
        (0..256)
            .find(|&i| !self.pools_used[i])
            .map(|i| PoolId(i as u8))
    }

    /// Puts a mapped app port on the switch: the same path for every transport. `want` is
    /// the layout the app announced (checked against the port header), `None` when the
    /// transport carries none (the header alone, validated against the limits, decides).
    fn add_app(
        &mut self,
        name: &str,
        mac: Mac,
        mapping: B::Mapping,
        notifier: B::Notifier,
        pool: PoolId,
        want: Option<[u32; 6]>,
    ) -> Result<AppEntry<B::Notifier>, CtlError> {
        let busy = |t: String| CtlError::refused(ErrorCode::Busy, t);
        let bad_mem = |t: String| CtlError::refused(ErrorCode::BadMemory, t);
        let want = match want {
            Some(w) => w,
            None => {
                // No announced layout (Xen): the header's, held to the same limits as a
                // socket app's grant.
                let w = AppPort::<B::Mapping, Arc<B::Notifier>>::header_layout(
                    grant_pool::Mapping::region(&mapping),
                )
                .map_err(|e| bad_mem(e.to_string()))?;
                crate::ctl::session::check_layout(
                    w,
                    grant_pool::Mapping::pages(&mapping),
                    &self.policy.limits,
                )?;
                w
            }
        };
        let notifier = Arc::new(notifier);
        let mut port = AppPort::new(
            name,
            mac,
            mapping,
            notifier.clone(),
            pool,
            self.limits,
            want,
            self.first.clone(),
        )
        .map_err(|e| bad_mem(e.to_string()))?;
        let (fps, bps) = self.rates.of(name);
        port.set_rate(fps, bps);
        port.set_mac_fixed(self.fixed_macs.iter().any(|(n, m)| n == name && *m == mac));
        let counters = port.counters();
        let id = match self.command_or_late(|r| Cmd::Add(Box::new(port), r)) {
            Ok(Ok(id)) => id,
            Ok(Err(SwitchError::TooManyPorts)) => {
                return Err(busy("the switch has no room for another port".into()));
            }
            // The app's own doing: a MAC no station may have, or one a station holds.
            Ok(Err(
                e @ SwitchError::Admission {
                    why: PinError::Held(_) | PinError::NotUnicast,
                    ..
                },
            )) => {
                return Err(CtlError::refused(ErrorCode::NotPermitted, e.to_string()));
            }
            // A table that is full, or a port of the MAC's that is still on its way out.
            Ok(Err(e @ SwitchError::Admission { .. })) => return Err(busy(e.to_string())),
            Ok(Err(e)) => return Err(CtlError::refused(ErrorCode::Internal, e.to_string())),
            Err(late) => {
                if let Some(rx) = late {
                    // The switch may still add it: the pool id stays taken until it is off.
                    self.pools_used[pool.0 as usize] = true;
                    self.late.push(Late::Add(rx, pool));
                }
                return Err(CtlError::refused(
                    ErrorCode::Internal,
                    "the switch did not take the port in time",
                ));
            }
        };
        self.pools_used[pool.0 as usize] = true;
        self.stats_cache = None;
        tracing::info!(app = %name, mac = %fmt_mac(mac), port = id.0, pool = pool.0, "app attached");
        Ok(AppEntry {
            id,
            pool,
            name: name.to_owned(),
            mac,
            counters,
            notifier,
        })
    }

    fn detach(&mut self, a: AppEntry<B::Notifier>, why: &str) {
        self.stats_cache = None;
        match self.command_or_late(|r| Cmd::Remove(a.id, r)) {
            Ok(Some(port)) => {
                // Dropped here, off the switch thread: the app's memory is unmapped now.
                drop(port);
                self.pools_used[a.pool.0 as usize] = false;
            }
            Ok(None) => {
                tracing::error!(app = %a.name, "the switch did not know the port");
                self.pools_used[a.pool.0 as usize] = false;
            }
            // The pool id stays taken until the port comes back.
            Err(late) => {
                tracing::error!(app = %a.name, "the switch did not give the port back in time");
                if let Some(rx) = late {
                    self.late.push(Late::Remove(rx, a.pool));
                }
            }
        }
        let c = a.counters.snapshot();
        let kicks = a.counters.kicks();
        tracing::info!(
            app = %a.name,
            port = a.id.0,
            "app detached: {why}; frames to the app {}, from the app {}, doorbell kicks {} ({:.1} per 1000 frames forwarded through the port)",
            c.tx_packets,
            c.rx_packets,
            kicks,
            kicks as f64 * 1000.0 / (c.tx_packets + c.rx_packets).max(1) as f64
        );
    }

    /// The switch's port snapshot, taken at most once per [`STATS_EVERY`] (and afresh after
    /// a port came or went): anyone who can connect may ask for stats before saying who they
    /// are, and a flood of requests must not cost the switch thread more than one snapshot
    /// per interval.
    fn port_snaps(&mut self) -> Vec<PortSnap> {
        if let Some((at, snaps)) = &self.stats_cache
            && at.elapsed() < STATS_EVERY
        {
            return snaps.clone();
        }
        let snaps = self.command(Cmd::Stats).unwrap_or_default();
        self.stats_cache = Some((Instant::now(), snaps.clone()));
        snaps
    }

    fn stats(&mut self, apps: &[(PortId, Arc<AppCounters>)]) -> StatsRepr {
        let snaps = self.port_snaps();
        let ports = snaps
            .into_iter()
            .map(|s| {
                let sum = |rs: &[DropReason]| rs.iter().map(|r| s.sw.dropped(*r)).sum::<u64>();
                let ingress = sum(&DropReason::INGRESS);
                let egress = sum(&DropReason::EGRESS);
                let app = apps.iter().find(|a| a.0 == s.id);
                let mut c = match app {
                    Some(a) => a.1.snapshot(),
                    None => PortCounters {
                        rx_packets: s.stats.rx_packets,
                        rx_bytes: s.stats.rx_bytes,
                        rx_dropped: s.stats.rx_dropped,
                        tx_packets: s.stats.tx_packets,
                        tx_bytes: s.stats.tx_bytes,
                        tx_dropped: s.stats.tx_dropped,
                        errors: s.stats.errors,
                        ..Default::default()
                    },
                };
                c.rx_dropped += ingress;
                // A NIC port's own transmit drops (frames it took but could not send) come on
                // top of the frames the switch could not hand it; an app port's are those.
                c.tx_dropped = egress + if app.is_some() { 0 } else { c.tx_dropped };
                // The switch checks an app's frames' headers (its copy of them): its refusals
                // are the app's rejections.
                c.spoofed += s.sw.dropped(DropReason::Spoofed);
                c.group_source = s.sw.dropped(DropReason::GroupSource);
                c.link_local = s.sw.dropped(DropReason::LinkLocal);
                c.rate_limited = s.sw.dropped(DropReason::RateLimited);
                c.not_learned = s.not_learned;
                c.tx_by_copy = s.sw.tx_copied;
                c.tx_by_handle = s.sw.tx.saturating_sub(s.sw.tx_copied);
                c.flooded = s.sw.flooded;
                if app.is_some() {
                    c.errors += c.spoofed + c.group_source + c.link_local;
                }
                PortStatsRepr {
                    port: s.id.0,
                    app: app.is_some(),
                    name: s.name,
                    mac: s.mac,
                    counters: c,
                }
            })
            .collect();
        StatsRepr {
            uptime_ns: self.start.elapsed().as_nanos() as u64,
            first_frame_ns: self.first.get(),
            instance: self.instance,
            ports,
            rejections: ErrorCode::ALL
                .iter()
                .zip(self.rejections)
                .map(|(c, n)| (*c, n))
                .collect(),
        }
    }

    /// Starts a capture of `port` for connection `c`'s peer, which must be root or the
    /// server's own user (a capture shows every app's traffic on the port), and hands a
    /// second handle on the connection to the capture's thread.
    fn capture(
        &self,
        c: &Conn<B::Notifier>,
        port: u16,
        direction: crate::ctl::wire::Direction,
        snaplen: u32,
        count: u64,
    ) -> Result<(), CtlError> {
        use crate::ctl::wire::Direction;
        let refuse = |code, text: String| CtlError::Refused { code, text };
        let me = rustix::process::geteuid().as_raw();
        let uid = c.t.peer().map(|p| p.uid).unwrap_or(u32::MAX);
        if uid != 0 && uid != me {
            return Err(refuse(
                ErrorCode::NotPermitted,
                format!("uid {uid} may not capture: only root or the server's user (uid {me})"),
            ));
        }
        static CAPTURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = CAPTURES.fetch_add(1, Ordering::Relaxed);
        let (ftx, frx) = crossbeam_channel::bounded(capture::queue_len(snaplen));
        let tap = crate::Tap::new(
            id,
            PortId(port),
            direction.takes(Direction::Rx),
            direction.takes(Direction::Tx),
            snaplen as usize,
            ftx,
        );
        let conn = c.t.try_clone()?;
        match self.command(|r| Cmd::Capture(tap, r)) {
            Some(true) => {}
            Some(false) => {
                return Err(refuse(
                    ErrorCode::Busy,
                    format!("no port {port} on the switch, or another capture runs"),
                ));
            }
            None => {
                return Err(refuse(
                    ErrorCode::Internal,
                    "the switch did not answer".into(),
                ));
            }
        }
        let (tx, waker) = (self.tx.clone(), self.waker.clone());
        let stop = move || {
            let _ = tx.send(Cmd::StopCapture(id));
            waker.wake();
        };
        if let Err(e) = capture::spawn(conn, frx, count, stop) {
            // The thread never ran: take the tap off here.
            let _ = self.tx.send(Cmd::StopCapture(id));
            self.waker.wake();
            return Err(refuse(
                ErrorCode::Internal,
                format!("no capture thread: {e}"),
            ));
        }
        tracing::info!(port, uid, "capture started");
        Ok(())
    }

    /// Reads and answers everything pending on connection `i`.
    fn service(&mut self, conns: &mut [Conn<B::Notifier>], i: usize, xen: &xen::View) {
        // Bounded: a peer flooding the socket gets at most this many messages per round.
        for _ in 0..32 {
            if conns[i].done {
                return;
            }
            let mut fds = Vec::new();
            let mut send_fds: Vec<OwnedFd> = Vec::new();
            let got = conns[i].t.recv(&mut self.buf, &mut fds);
            let (fds, refused_fds) = match screen_fds(&self.closer, fds) {
                Some(fds) => (fds, false),
                None => (Vec::new(), true),
            };
            let (len, truncated, surplus) = match got {
                Ok(Received::Message {
                    len,
                    truncated,
                    surplus_fds,
                }) => (len, truncated, surplus_fds),
                Ok(Received::WouldBlock) => return,
                Ok(Received::Closed) | Err(_) => {
                    conns[i].done = true;
                    return;
                }
            };
            let step = conns[i].s.on_message(
                &self.buf[..len],
                fds.len(),
                truncated,
                surplus || refused_fds,
                &self.policy,
                Instant::now(),
            );
            let (answer, close) = match step {
                Step::Reply(r) => (r, false),
                Step::Close(r) => (r, true),
                Step::Stats => {
                    let mut apps: Vec<(PortId, Arc<AppCounters>)> = conns
                        .iter()
                        .filter_map(|c| c.app.as_ref())
                        .map(|a| (a.id, a.counters.clone()))
                        .collect();
                    apps.extend(xen.counters.iter().cloned());
                    (Repr::StatsReply(self.stats(&apps)), false)
                }
                Step::Capture {
                    port,
                    direction,
                    snaplen,
                    count,
                } => match self.capture(&conns[i], port, direction, snaplen, count) {
                    // The connection is the capture's now: this side lets go of it.
                    Ok(()) => {
                        conns[i].done = true;
                        return;
                    }
                    Err(e) => (conns[i].s.refuse(e), true),
                },
                Step::Attach { name, mac, grant } => {
                    let mut taken = taken_by(conns);
                    taken.extend(xen.taken.iter().cloned());
                    match self.attach(name, mac, grant, fds, &taken) {
                        Ok((a, bell)) => {
                            let r = conns[i].s.attached(a.id.0, a.pool.0, self.instance);
                            conns[i].app = Some(a);
                            send_fds = bell;
                            (r, false)
                        }
                        Err(e) => (conns[i].s.refuse(e), true),
                    }
                }
                Step::Detach => {
                    if let Some(a) = conns[i].app.take() {
                        self.detach(a, "the app asked");
                    }
                    (conns[i].s.detached(), true)
                }
            };
            self.count(&answer);
            let borrowed: Vec<BorrowedFd<'_>> = send_fds.iter().map(|f| f.as_fd()).collect();
            let _ = conns[i].t.send(&answer.to_bytes(), &borrowed);
            if close {
                conns[i].done = true;
                return;
            }
        }
    }
}

/// Runs the server described by `cfg` until SIGTERM/SIGINT or until `stop` is set: on the
/// `xen` grant backend when `[xen] enable` is set, else on `shm`.
pub fn serve(cfg: &Config, stop: Arc<AtomicBool>) -> Result<(), ServerError> {
    serve_prepared(cfg, stop, Vec::new())
}

/// [`serve`] with the configured ports a warm spare made ready before it took over
/// ([`ports::prepare_all`] of the same `cfg`): they are only activated.
pub fn serve_prepared(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    prepared: Vec<ports::Prepared>,
) -> Result<(), ServerError> {
    #[cfg(target_os = "linux")]
    if cfg.xen.enable {
        let be = grant_pool::xen::XenBackend::open()
            .map_err(|e| ServerError::XenBackend(e.to_string()))?;
        return serve_on(cfg, stop, be, prepared);
    }
    serve_on(
        cfg,
        stop,
        grant_pool::shm::ShmBackend::new(DomId::SELF_HOST),
        prepared,
    )
}

/// [`serve`] with a given grant backend.
pub fn serve_with<B: GrantBackend>(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    backend: B,
) -> Result<(), ServerError>
where
    B::Mapping: 'static,
    B::Notifier: 'static,
{
    serve_on(cfg, stop, backend, Vec::new())
}

fn serve_on<B: GrantBackend>(
    cfg: &Config,
    stop: Arc<AtomicBool>,
    backend: B,
    prepared: Vec<ports::Prepared>,
) -> Result<(), ServerError>
where
    B::Mapping: 'static,
    B::Notifier: 'static,
{
    cfg.check()?;
    let start = Instant::now();
    let first = Arc::new(FirstFrame::new(start));
    let (sig_rx, sig_tx) = UnixStream::pair().map_err(ServerError::Signal)?;
    sig_rx.set_nonblocking(true).map_err(ServerError::Signal)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let w = sig_tx.try_clone().map_err(ServerError::Signal)?;
        signal_hook::low_level::pipe::register(sig, w).map_err(ServerError::Signal)?;
    }

    let mut sw = Switch::new(SwitchConfig {
        burst: cfg.server.burst,
        fdb_entries: cfg.server.fdb_entries,
        max_stations_per_port: cfg.max_stations_per_port(),
        core: cfg.server.core,
        idle: IdleConfig {
            housekeeping_polls: 256,
            ..IdleConfig::default()
        },
        ..SwitchConfig::default()
    })?;
    let mut pools_used = [false; 256];
    let mut nics = Vec::new();
    let mut prepared = prepared.into_iter();
    for (i, p) in cfg.ports.iter().enumerate() {
        let pool = PoolId(i as u8);
        let port = match prepared.next() {
            Some(w) => w.activate()?,
            None => ports::open(i, p, pool)?,
        };
        let own = port.own_pools();
        let offloads = port.tx_offloads();
        for (k, used) in pools_used.iter_mut().enumerate() {
            if own.contains(PoolId(k as u8)) {
                *used = true;
            }
        }
        let id = sw.add_port(Box::new(ports::Marked::new(port, first.clone())))?;
        tracing::info!(
            port = %p.name,
            backend = %p.backend,
            id = id.0,
            large_frames = offloads.max_gso_frame,
            partial_csum = offloads.partial_csum,
            "port up"
        );
        nics.push((id, p.name.clone()));
    }

    let listener = SeqPacketListener::bind(
        &cfg.server.socket,
        cfg.socket_mode()?,
        cfg.server.socket_group,
    )?;
    if let Some(addr) = cfg.metrics.addr()? {
        let at = metrics::spawn(addr, &cfg.server.socket).map_err(|e| ServerError::Metrics {
            addr: addr.to_string(),
            source: e,
        })?;
        tracing::info!(%at, "counters for Prometheus at http://{at}/metrics");
    }
    let waker = sw.waker();
    let (tx, rx) = crossbeam_channel::unbounded::<Cmd>();
    let sw_stop = stop.clone();
    let mut side = SwitchSide::new(nics.iter().map(|(id, _)| *id).collect());
    let manager = notify::Notifier::from_env();
    let mut watchdog = notify::Watchdog::from_env(manager.as_ref());
    let switch_thread = std::thread::Builder::new()
        .name("ferrite-switch".into())
        .spawn(move || {
            let r = sw.run_paced(&sw_stop, |s| {
                side.housekeeping(s, &rx);
                watchdog.as_mut().map(notify::Watchdog::tick)
            });
            for id in sw.port_ids() {
                if let (Some(p), Some(c)) = (sw.port(id), sw.counters(id)) {
                    let c = c.snapshot();
                    tracing::info!(
                        "switch counters at exit: port {} '{}': tx {} of which copied {}, rx {}",
                        id.0,
                        p.name(),
                        c.tx,
                        c.tx_copied,
                        c.rx
                    );
                }
            }
            r
        })
        .map_err(|e| ServerError::SwitchThread(e.to_string()))?;

    let instance = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ ((std::process::id() as u64) << 32);
    let mut ctl = Control {
        backend,
        stats_cache: None,
        closer: Closer::spawn().map_err(ServerError::CloserThread)?,
        policy: Policy {
            allowed: cfg.allowed(),
            limits: cfg.limits(),
            grant_fds: (2, 0),
        },
        limits: PortLimits {
            max_ring: cfg.limits.max_ring,
            max_bufs: cfg.limits.max_bufs as usize,
        },
        tx,
        waker: waker.clone(),
        first,
        start,
        instance,
        pools_used,
        nics,
        rejections: [0; ErrorCode::ALL.len()],
        refusal_log: loglimit::LogLimit::new(REFUSAL_LOG_WINDOW, REFUSAL_LOG_BURST, Instant::now()),
        buf: vec![0; crate::ctl::wire::MAX_APP_MSG],
        rates: cfg.app_rates(),
        fixed_macs: cfg.fixed_macs(),
        late: Vec::new(),
    };
    tracing::info!(
        socket = %cfg.server.socket.display(),
        ports = ctl.nics.len(),
        startup_ms = start.elapsed().as_secs_f64() * 1e3,
        "ferrite serving"
    );

    let mut xen = if cfg.xen.enable {
        let x = xen::XenSide::<B::Notifier>::open(
            cfg.xen.domid,
            cfg.xen.max_refs as usize,
            cfg.xen_allowed(),
        )
        .map_err(ServerError::Xen)?;
        tracing::info!(
            domid = cfg.xen.domid,
            "accepting Xen app domains over xenstore"
        );
        Some(x)
    } else {
        None
    };
    if let Some(m) = &manager {
        m.ready(&format!(
            "serving {} ports on {}",
            ctl.nics.len(),
            cfg.server.socket.display()
        ));
    }
    let mut conns: Vec<Conn<B::Notifier>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        if switch_thread.is_finished() {
            break;
        }
        // Poll set: signal pipe, listener, xenstore events, connections. App doorbells are
        // the switch thread's to wait on (Port::wait_fd), not this thread's.
        let (ready_sig, ready_listen, ready_xs, ready_conn) = {
            let mut pfds: Vec<PollFd<'_>> = Vec::with_capacity(3 + conns.len());
            pfds.push(PollFd::new(&sig_rx, PollFlags::IN));
            pfds.push(PollFd::new(&listener, PollFlags::IN));
            let xs_fd = xen.as_ref().map(|x| x.event_fd());
            pfds.push(match &xs_fd {
                Some(fd) => PollFd::from_borrowed_fd(*fd, PollFlags::IN),
                // Nothing to wait for: the signal pipe again, with no events asked.
                None => PollFd::new(&sig_rx, PollFlags::empty()),
            });
            for c in &conns {
                pfds.push(PollFd::new(&c.t, PollFlags::IN));
            }
            let ts = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            let _ = rustix::event::poll(&mut pfds, Some(&ts));
            let r: Vec<bool> = pfds.iter().map(|p| !p.revents().is_empty()).collect();
            let n = conns.len();
            (r[0], r[1], xs_fd.is_some() && r[2], r[3..3 + n].to_vec())
        };
        if ready_sig {
            let mut b = [0u8; 16];
            let _ = std::io::Read::read(&mut &sig_rx, &mut b);
            tracing::info!("signal received: shutting down");
            break;
        }
        ctl.settle_late();
        ctl.flush_refusal_log();
        if let Some(x) = xen.as_mut() {
            if ready_xs || x.rescan_due() {
                x.service(&mut ctl, &taken_by(&conns));
            }
            // Every round (at most the poll's 50 ms apart): a Xen app's death has no
            // connection to close, only its grant's unmap-notify, which the switch flags.
            x.reap(&mut ctl);
        }
        if ready_listen {
            // Bounded per round, like everything a peer can drive.
            for _ in 0..16 {
                match listener.accept() {
                    Ok(Some(mut t)) if conns.len() >= MAX_CONNS => {
                        let r = Repr::Error {
                            code: ErrorCode::Busy,
                            text: format!("{MAX_CONNS} control connections are open already"),
                        };
                        ctl.count(&r);
                        let _ = t.send(&r.to_bytes(), &[]);
                    }
                    Ok(Some(mut t)) => match t.peer() {
                        Ok(peer)
                            if conns.iter().filter(|c| c.s.peer().uid == peer.uid).count()
                                >= cfg.server.max_conns_per_uid =>
                        {
                            let r = Repr::Error {
                                code: ErrorCode::Busy,
                                text: format!(
                                    "uid {} holds {} control connections already",
                                    peer.uid, cfg.server.max_conns_per_uid
                                ),
                            };
                            ctl.count(&r);
                            let _ = t.send(&r.to_bytes(), &[]);
                        }
                        Ok(peer) => {
                            let s = Session::new(peer, &ctl.policy, Instant::now());
                            conns.push(Conn {
                                t,
                                s,
                                app: None,
                                done: false,
                            });
                        }
                        Err(e) => tracing::warn!("connection without credentials: {e}"),
                    },
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!("{e}");
                        break;
                    }
                }
            }
        }
        let view = xen.as_ref().map(|x| x.view()).unwrap_or_default();
        for (i, r) in ready_conn.iter().enumerate() {
            if *r {
                ctl.service(&mut conns, i, &view);
            }
        }
        let now = Instant::now();
        for c in conns.iter_mut() {
            if !c.done && c.s.expired(now) {
                let r = c.s.timed_out();
                ctl.count(&r);
                let _ = c.t.send(&r.to_bytes(), &[]);
                c.done = true;
            }
        }
        // An app that closed its doorbell can no longer be woken: it is gone too.
        for c in conns.iter_mut() {
            if c.app.as_ref().is_some_and(|a| a.counters.granter_gone()) {
                c.done = true;
            }
        }
        // Close finished connections; an app whose connection closed is gone.
        let mut i = 0;
        while i < conns.len() {
            if conns[i].done {
                let mut c = conns.swap_remove(i);
                if let Some(a) = c.app.take() {
                    ctl.detach(a, "its control connection closed");
                }
            } else {
                i += 1;
            }
        }
    }
    if let Some(m) = &manager {
        m.stopping();
    }
    if let Some(x) = xen.as_mut() {
        x.close(&mut ctl);
    }
    stop.store(true, Ordering::SeqCst);
    waker.wake();
    let result = switch_thread
        .join()
        .map_err(|_| ServerError::SwitchThread("it panicked".into()))?;
    drop(conns);
    drop(listener);
    tracing::info!("ferrite stopped");
    result.map_err(ServerError::from)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use pmd::sim::{MacPattern, SimConfig, SimPort, SimProbe};

    use super::*;

    const NIC_MAC: Mac = [0x02, 0xfe, 0, 0, 0, 1];
    const APP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];

    fn sim(name: &str, mac: Mac, pool: u8, dst: Mac, limit: u64) -> (SimPort, Arc<SimProbe>) {
        let mut c = SimConfig::new(name, mac, PoolId(pool));
        c.generate = limit > 0;
        c.limit = Some(limit);
        c.dst = MacPattern::Fixed(dst);
        c.sequence = true;
        c.verify = true;
        c.frame_len = 128;
        let p = SimPort::new(c).expect("sim port");
        let probe = p.probe();
        (p, probe)
    }

    /// A switch with one NIC port (wrapped as the server wraps it) that has announced its
    /// MAC, the switch-thread side and its command channel.
    fn setup() -> (Switch, SwitchSide, PortId, Arc<SimProbe>) {
        let mut sw = Switch::new(SwitchConfig::default()).expect("switch");
        let start = Instant::now();
        let (nic, nic_probe) = sim("nic", NIC_MAC, 0, APP_MAC, 1);
        let first = Arc::new(FirstFrame::new(start));
        let nic_id = sw
            .add_port(Box::new(ports::Marked::new(Box::new(nic), first)))
            .expect("nic added");
        (sw, SwitchSide::new(vec![nic_id]), nic_id, nic_probe)
    }

    fn add(sw: &mut Switch, side: &mut SwitchSide, p: Box<dyn Port>) -> PortId {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        tx.send(Cmd::Add(p, rtx)).expect("send");
        side.housekeeping(sw, &rx);
        rrx.try_recv().expect("reply").expect("added")
    }

    /// A control thread over the shm backend with `limits`, and the commands it sends the
    /// switch thread (which the test answers, or not).
    fn control(
        limits: crate::ctl::wire::Limits,
    ) -> (Control<grant_pool::shm::ShmBackend>, Receiver<Cmd>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let start = Instant::now();
        let ctl = Control {
            backend: grant_pool::shm::ShmBackend::new(DomId::SELF_HOST),
            stats_cache: None,
            closer: Closer::spawn().expect("closer"),
            policy: Policy {
                allowed: Vec::new(),
                limits,
                grant_fds: (2, 0),
            },
            limits: PortLimits {
                max_ring: limits.max_ring,
                max_bufs: limits.max_bufs as usize,
            },
            tx,
            waker: Arc::new(crate::run::Waker::default()),
            first: Arc::new(FirstFrame::new(start)),
            start,
            instance: 1,
            pools_used: [false; 256],
            nics: Vec::new(),
            rejections: [0; ErrorCode::ALL.len()],
            refusal_log: loglimit::LogLimit::new(
                REFUSAL_LOG_WINDOW,
                REFUSAL_LOG_BURST,
                Instant::now(),
            ),
            buf: Vec::new(),
            rates: config::AppRates::default(),
            fixed_macs: Vec::new(),
            late: Vec::new(),
        };
        (ctl, rx)
    }

    const LIMITS: crate::ctl::wire::Limits = crate::ctl::wire::Limits {
        max_ring: 256,
        min_buf_size: 2048,
        max_buf_size: 2048,
        max_bufs: 64,
        max_mem: 1 << 20,
        timeout_ms: 1000,
    };

    /// An app's port laid out in its shm grant (`rings`, `count` buffers of `buf_size`), and
    /// the server's mapping of it.
    fn app_port(
        ctl: &Control<grant_pool::shm::ShmBackend>,
        rings: [u32; 4],
        buf_size: usize,
        count: usize,
    ) -> (grant_pool::shm::ShmGrant, grant_pool::shm::ShmMapping) {
        use grant_pool::{Access, Grant, PoolLayout, PortLayout};
        let app = grant_pool::shm::ShmBackend::new(DomId(1));
        let layout = PortLayout::new(rings, PoolLayout::new(buf_size, count).expect("pool"))
            .expect("layout");
        let grant = app
            .grant(DomId::SELF_HOST, layout.pages(), Access::ReadWrite)
            .expect("grant");
        grant_pool::AppPort::create(grant.memory().clone(), layout, PoolId(0)).expect("port");
        let fds: Vec<OwnedFd> = grant
            .attachments()
            .iter()
            .map(|f| f.try_clone_to_owned().expect("dup"))
            .collect();
        let mapping = ctl
            .backend
            .map(DomId(1), grant.refs(), Access::ReadWrite, &fds)
            .expect("map");
        (grant, mapping)
    }

    /// A MAC the switch will not pin to the app because a station on the wire holds it is the
    /// app's error, said as such (NotPermitted with the switch's reason); a full table or a
    /// port still on its way out is Busy.
    #[test]
    fn a_mac_the_switch_refuses_is_refused_as_not_permitted() {
        for (why, code, says) in [
            (PinError::Held(3), ErrorCode::NotPermitted, "holds the MAC"),
            (PinError::Full, ErrorCode::Busy, "no room"),
            (PinError::Taken(4), ErrorCode::Busy, "pinned to port 4"),
        ] {
            let (mut ctl, cmds) = control(LIMITS);
            let (_grant, mapping) = app_port(&ctl, [64; 4], 2048, 16);
            let notifier = ctl.backend.notifier(DomId(1)).expect("doorbell");
            let pool = ctl.free_pool().expect("a free pool id");
            let switch = std::thread::spawn(move || {
                let Ok(Cmd::Add(_port, reply)) = cmds.recv_timeout(SWITCH_REPLY) else {
                    panic!("no port was sent to the switch");
                };
                let port = "app".into();
                reply
                    .send(Err(SwitchError::Admission { port, why }))
                    .expect("reply");
            });
            match ctl.add_app("claimer", APP_MAC, mapping, notifier, pool, None) {
                Err(CtlError::Refused { code: c, text }) => {
                    assert_eq!(c, code, "{why:?}: {text}");
                    assert!(text.contains(says), "{text}");
                }
                Err(e) => panic!("refused for another reason: {e}"),
                Ok(_) => panic!("admitted"),
            }
            switch.join().expect("switch side");
            assert_eq!(ctl.free_pool(), Some(pool), "the pool id stays free");
        }
    }

    /// A port the switch thread adds after the attach gave up waiting is taken off again,
    /// its memory unmapped, and its pool id kept from other apps until then.
    #[test]
    fn a_port_the_switch_adds_too_late_is_taken_off_and_its_pool_id_freed() {
        let (mut ctl, cmds) = control(LIMITS);
        let (grant, mapping) = app_port(&ctl, [64; 4], 2048, 16);
        let notifier = ctl.backend.notifier(DomId(1)).expect("doorbell");
        let pool = ctl.free_pool().expect("a free pool id");
        let r = ctl.add_app("late", APP_MAC, mapping, notifier, pool, None);
        assert!(
            matches!(
                r,
                Err(CtlError::Refused {
                    code: ErrorCode::Internal,
                    ..
                })
            ),
            "the attach gives up"
        );
        assert_ne!(
            ctl.free_pool(),
            Some(pool),
            "the pool id is not handed out again"
        );
        // The switch thread takes the port now, after all.
        let Ok(Cmd::Add(port, reply)) = cmds.try_recv() else {
            panic!("no port was sent to the switch");
        };
        reply.send(Ok(PortId(9))).expect("reply");
        ctl.settle_late();
        let Ok(Cmd::Remove(id, reply)) = cmds.try_recv() else {
            panic!("the late port was not taken off");
        };
        assert_eq!(id, PortId(9));
        assert_eq!(grant.live_mappings(), 1, "mapped while the switch holds it");
        assert_ne!(ctl.free_pool(), Some(pool));
        reply.send(Some(port)).expect("reply");
        ctl.settle_late();
        assert_eq!(grant.live_mappings(), 0, "unmapped once it came back");
        assert_eq!(ctl.free_pool(), Some(pool), "and its pool id is free");
        assert!(ctl.late.is_empty());
    }

    /// A port that announced no layout (a Xen app: the port header is all the server reads)
    /// is held to the same limits as a socket app's grant: buffer sizes, buffer count,
    /// memory, ring sizes.
    #[test]
    fn a_port_header_outside_the_limits_is_refused_without_an_announced_layout() {
        let cases = [
            ([64; 4], 4096, 16, "buffer size 4096"),
            ([64; 4], 2048, 8, ""),
            ([64, 64, 512, 64], 2048, 16, "fill ring size 512"),
            ([64; 4], 2048, 128, "buffer count 128"),
        ];
        for (rings, buf_size, count, why) in cases {
            let (mut ctl, _cmds) = control(LIMITS);
            if count == 8 {
                // Within every limit but the memory.
                ctl.policy.limits.max_mem = 4096;
            }
            let (_grant, mapping) = app_port(&ctl, rings, buf_size, count);
            let notifier = ctl.backend.notifier(DomId(1)).expect("doorbell");
            let t0 = Instant::now();
            match ctl.add_app("xen-app", APP_MAC, mapping, notifier, PoolId(3), None) {
                Err(CtlError::Refused {
                    code: ErrorCode::BadLayout,
                    text,
                }) => assert!(
                    text.contains(why) && (count != 8 || text.contains("pages of port memory")),
                    "{rings:?} {buf_size} x {count}: {text}"
                ),
                Err(e) => panic!("{rings:?} {buf_size} x {count}: refused for another reason: {e}"),
                Ok(_) => panic!("{rings:?} {buf_size} x {count}: admitted"),
            }
            assert!(
                t0.elapsed() < SWITCH_REPLY,
                "refused before asking the switch"
            );
        }
    }

    #[test]
    fn app_frames_reach_a_granted_nic_by_handle_intact() {
        let (mut sw, mut side, nic, nic_probe) = setup();
        let (app, app_probe) = sim("app", APP_MAC, 1, NIC_MAC, 2000);
        let app = add(&mut sw, &mut side, Box::new(app));
        assert!(
            sw.port(nic).expect("nic").tx_pools().contains(PoolId(1)),
            "the NIC reads the app's pool after the attach"
        );
        for _ in 0..100_000 {
            if SimProbe::get(&nic_probe.sunk) >= 2000 {
                break;
            }
            sw.poll();
        }
        assert_eq!(SimProbe::get(&nic_probe.sunk), 2000, "every frame sent");
        assert_eq!(SimProbe::get(&nic_probe.payload_errors), 0);
        assert_eq!(SimProbe::get(&nic_probe.seq_errors), 0);
        assert_eq!(SimProbe::get(&nic_probe.unreadable), 0);
        let c = sw.counters(nic).expect("counters").snapshot();
        assert_eq!(c.tx_copied, 0, "no frame of the app was copied");
        assert!(sw.counters(app).is_some());
        // Every app buffer came back after the NIC's completions.
        for _ in 0..100 {
            sw.poll();
        }
        assert_eq!(
            SimProbe::get(&app_probe.free),
            SimProbe::get(&app_probe.total)
        );
        assert_eq!(sw.orphans(), 0);
    }

    #[test]
    fn detach_waits_for_the_nic_to_let_go_of_the_pool() {
        let (mut sw, mut side, nic, nic_probe) = setup();
        let (app, app_probe) = sim("app", APP_MAC, 1, NIC_MAC, 1_000_000);
        let app = add(&mut sw, &mut side, Box::new(app));
        for _ in 0..200 {
            sw.poll();
        }
        assert!(SimProbe::get(&nic_probe.sunk) > 0);
        assert_eq!(sw.counters(nic).expect("c").snapshot().tx_copied, 0);
        // The NIC stalls with frames of the app's pool in flight; the app detaches.
        nic_probe.hold_completions.store(true, Relaxed);
        for _ in 0..50 {
            sw.poll();
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let (rtx, rrx) = crossbeam_channel::bounded(1);
        tx.send(Cmd::Remove(app, rtx)).expect("send");
        for _ in 0..20 {
            side.housekeeping(&mut sw, &rx);
            sw.poll();
        }
        assert!(
            rrx.try_recv().is_err(),
            "the app port is not handed back (its pool unmapped) while the NIC holds its frames"
        );
        assert!(sw.port(app).is_some(), "the app port stays on the switch");
        assert!(
            !sw.port(nic).expect("nic").tx_pools().contains(PoolId(1)),
            "no new frame of the pool is handed to the NIC"
        );
        // The NIC completes; the drain finishes within a few rounds.
        nic_probe.hold_completions.store(false, Relaxed);
        let mut back = None;
        for _ in 0..1000 {
            sw.poll();
            side.housekeeping(&mut sw, &rx);
            if let Ok(p) = rrx.try_recv() {
                back = Some(p);
                break;
            }
        }
        let port = back.expect("handed back").expect("the app port");
        assert!(sw.port(app).is_none());
        assert!(!sw.port(nic).expect("nic").tx_pools().contains(PoolId(1)));
        assert_eq!(sw.orphans(), 0, "no buffer came back after its pool left");
        assert_eq!(
            SimProbe::get(&app_probe.free),
            SimProbe::get(&app_probe.total),
            "every app buffer is back with the app"
        );
        assert_eq!(SimProbe::get(&nic_probe.payload_errors), 0);
        assert_eq!(SimProbe::get(&nic_probe.seq_errors), 0);
        drop(port);
    }
}

//! `ferrite supervise`: the server's own supervisor, for hosts without systemd.
//!
//! The supervisor runs `ferrite serve` as a child and speaks to it the way systemd does
//! (`Type=notify`, [`super::notify`]): it binds a Unix datagram socket at an abstract address,
//! names it in the child's `NOTIFY_SOCKET` with a `WATCHDOG_USEC`, takes only messages whose
//! sender (`SO_PASSCRED`) is one of its children, and restarts the server at once when
//!
//! - the child dies, whatever the cause (its pidfd becomes readable);
//! - the child's watchdog pings stop for a whole period after its `READY=1` (it is
//!   SIGKILLed, then restarted);
//! - the child does not say `READY=1` within the start timeout (likewise).
//!
//! **Warm spare** (`--standby`). A second child, `ferrite serve --standby`, starts a moment
//! (`standby_delay`) after the primary is ready, loads the configuration, prepares its
//! ports ([`super::ports::prepare_all`]: pools, rings and sockets made, no NIC taken) and
//! blocks on the server's lock ([`super::standby`]), which the primary holds for its life.
//! The kernel drops the lock first thing when the primary dies, so the spare takes over
//! with no round through the supervisor: it binds the control socket, activates its ports
//! (binds them to their interfaces; an AF_XDP queue it waits for until the kernel has
//! released the dead server's) and says `READY=1`; the supervisor then starts the next
//! spare. A primary killed while no spare is waiting is restarted cold.
//!
//! **Crash loops.** Every death of a child is recorded; when `restart_burst` of them fall
//! within `restart_window`, the next start waits, 500 ms at first and twice as long for
//! each further start in a crash loop (at most 30 s), with a warning each time. A spare's
//! takeover is never delayed: that process is running already.
//!
//! **Stopping.** SIGTERM or SIGINT stops the spare, then the primary, with SIGTERM (the
//! server shuts down cleanly and removes its socket), each SIGKILLed after `stop_timeout`;
//! the supervisor exits once no child is left. Children get SIGKILL as their parent-death
//! signal ([`follow_supervisor`]), so no server outlives a supervisor that is killed.
//!
//! Under systemd, run `ferrite serve` as the service itself (`examples/systemd/`); the
//! supervisor tells a manager it runs under `READY=1` once its first server is ready, but
//! does not feed a watchdog of its own.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};
use rustix::process::{Pid, PidfdFlags, Signal};

use super::notify::{NOTIFY_SOCKET, Notifier, WATCHDOG_PID, WATCHDOG_USEC};

/// The variable that tells a child which process supervises it (see [`follow_supervisor`]).
pub const SUPERVISOR_PID: &str = "FERRITE_SUPERVISOR_PID";

/// First wait before a start in a crash loop.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
/// Longest wait before a start in a crash loop.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest poll: the stop flag is looked at this often.
const TICK: Duration = Duration::from_millis(100);
/// Most notification datagrams taken per round.
const MAX_MESSAGES: usize = 64;

/// How the supervisor runs the server.
#[derive(Debug, Clone)]
pub struct SuperviseConfig {
    /// The `ferrite` binary the children run.
    pub exe: PathBuf,
    /// The server's configuration file.
    pub config: PathBuf,
    /// Keep a warm spare waiting to take over.
    pub standby: bool,
    /// The watchdog period given to the children (`WATCHDOG_USEC`); they ping at half of it.
    pub watchdog: Duration,
    /// How long a child may take to say `READY=1`.
    pub start_timeout: Duration,
    /// How long a child may take to exit after SIGTERM before it is SIGKILLed.
    pub stop_timeout: Duration,
    /// Deaths within `restart_window` that make a crash loop.
    pub restart_burst: u32,
    /// See `restart_burst`.
    pub restart_window: Duration,
    /// Time from a primary's `READY=1` to the start of the next spare (the spare's start-up
    /// does not compete for the cores with the new primary's first frames).
    pub standby_delay: Duration,
}

impl SuperviseConfig {
    /// Defaults for `exe` running the server on `config`: a 1 s watchdog, 30 s to start,
    /// 5 s to stop, a crash loop at 5 deaths in 10 s, a spare 20 ms after a takeover.
    pub fn new(exe: PathBuf, config: PathBuf) -> Self {
        Self {
            exe,
            config,
            standby: false,
            watchdog: Duration::from_secs(1),
            start_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(5),
            restart_burst: 5,
            restart_window: Duration::from_secs(10),
            standby_delay: Duration::from_millis(20),
        }
    }
}

/// Why the supervisor could not run.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The notification socket could not be made.
    #[error("notification socket: {0}")]
    Socket(std::io::Error),
    /// Signal handling could not be set up.
    #[error("cannot handle SIGTERM/SIGINT: {0}")]
    Signal(std::io::Error),
}

/// In a child of the supervisor (`FERRITE_SUPERVISOR_PID` set): dies with SIGKILL when the
/// supervisor dies, and exits at once if it is gone already. Does nothing otherwise.
pub fn follow_supervisor() {
    let Some(sup) = std::env::var(SUPERVISOR_PID)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        tracing::warn!("cannot follow the supervisor's death: {e}");
    }
    // The supervisor may have died before the signal was set.
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(sup) {
        eprintln!("ferrite: the supervisor (pid {sup}) is gone; exiting");
        std::process::exit(1);
    }
}

/// What a child is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The server (or the one about to be).
    Primary,
    /// A warm spare waiting on the lock.
    Spare,
    /// Superseded by a spare that took over; waiting to be reaped.
    Leaving,
}

/// A child server process.
struct Server {
    child: Child,
    pid: i32,
    pidfd: OwnedFd,
    role: Role,
    /// Said `READY=1` since it became primary.
    ready: bool,
    /// When it must say `READY=1` by (a primary that is not ready).
    start_by: Instant,
    /// Its last watchdog ping (or its `READY=1`).
    last_ping: Instant,
    /// SIGKILLed or SIGTERMed by the supervisor: not killed again, its death expected.
    signalled: bool,
    /// When the process was started.
    spawned: Instant,
}

impl Server {
    fn signal(&mut self, sig: Signal) {
        self.signalled = true;
        if let Err(e) = rustix::process::pidfd_send_signal(&self.pidfd, sig) {
            tracing::debug!(pid = self.pid, "signal {sig:?}: {e}");
        }
    }
}

/// The supervisor's state.
struct Supervisor {
    cfg: SuperviseConfig,
    sock: OwnedFd,
    address: String,
    children: Vec<Server>,
    deaths: VecDeque<Instant>,
    backoff: Duration,
    primary_at: Option<Instant>,
    spare_at: Option<Instant>,
    manager: Option<Arc<Notifier>>,
    told_manager: bool,
    restarts: u64,
    strangers: u64,
}

/// Runs the server under supervision until SIGTERM/SIGINT or until `stop` is set; then
/// stops every child and returns.
pub fn supervise(cfg: SuperviseConfig, stop: Arc<AtomicBool>) -> Result<(), SuperviseError> {
    let (sig_rx, sig_tx) = UnixStream::pair().map_err(SuperviseError::Signal)?;
    sig_rx
        .set_nonblocking(true)
        .map_err(SuperviseError::Signal)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let w = sig_tx.try_clone().map_err(SuperviseError::Signal)?;
        signal_hook::low_level::pipe::register(sig, w).map_err(SuperviseError::Signal)?;
    }
    let (sock, address) = bind_notify_socket().map_err(SuperviseError::Socket)?;
    let mut s = Supervisor {
        cfg,
        sock,
        address,
        children: Vec::new(),
        deaths: VecDeque::new(),
        backoff: BACKOFF_FIRST,
        primary_at: Some(Instant::now()),
        spare_at: None,
        manager: Notifier::from_env(),
        told_manager: false,
        restarts: 0,
        strangers: 0,
    };
    tracing::info!(
        config = %s.cfg.config.display(),
        standby = s.cfg.standby,
        watchdog_ms = s.cfg.watchdog.as_millis() as u64,
        notify = %s.address,
        "ferrite supervising"
    );
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let timeout = s
            .next_event()
            .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
        let (sig, msg, dead) = {
            let mut fds = Vec::with_capacity(2 + s.children.len());
            fds.push(PollFd::new(&sig_rx, PollFlags::IN));
            fds.push(PollFd::new(&s.sock, PollFlags::IN));
            for c in &s.children {
                fds.push(PollFd::new(&c.pidfd, PollFlags::IN));
            }
            let ts = rustix::time::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: timeout.subsec_nanos() as i64,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
            let dead: Vec<i32> = fds[2..]
                .iter()
                .zip(&s.children)
                .filter(|(f, _)| !f.revents().is_empty())
                .map(|(_, c)| c.pid)
                .collect();
            (
                !fds[0].revents().is_empty(),
                !fds[1].revents().is_empty(),
                dead,
            )
        };
        if sig {
            let mut b = [0u8; 16];
            let _ = std::io::Read::read(&mut &sig_rx, &mut b);
            tracing::info!("signal received: stopping the server");
            break;
        }
        if msg {
            s.receive();
        }
        for pid in dead {
            s.reap(pid);
        }
        s.check(Instant::now());
    }
    s.shutdown();
    Ok(())
}

/// A datagram socket at a fresh abstract address, passing its senders' credentials.
fn bind_notify_socket() -> std::io::Result<(OwnedFd, String)> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    rustix::net::sockopt::set_socket_passcred(&fd, true)?;
    let mut last = None;
    for attempt in 0..8u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "ferrite-supervise/{}/{:08x}",
            std::process::id(),
            nanos ^ attempt
        );
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes())?;
        match rustix::net::bind(&fd, &addr) {
            Ok(()) => return Ok((fd, format!("@{name}"))),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(|| std::io::Error::other("no address"), Into::into))
}

impl Supervisor {
    fn primary(&mut self) -> Option<&mut Server> {
        self.children.iter_mut().find(|c| c.role == Role::Primary)
    }

    fn has(&self, role: Role) -> bool {
        self.children.iter().any(|c| c.role == role)
    }

    /// The earliest time something must be done.
    fn next_event(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut at = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        for c in self.children.iter().filter(|c| !c.signalled) {
            if c.role == Role::Primary {
                at(if c.ready {
                    c.last_ping + self.cfg.watchdog
                } else {
                    c.start_by
                });
            }
        }
        if let Some(x) = self.primary_at {
            at(x);
        }
        if let Some(x) = self.spare_at {
            at(x);
        }
        t
    }

    /// Starts `ferrite serve` (`--standby` for a spare).
    fn spawn(&mut self, role: Role) {
        let now = Instant::now();
        let mut cmd = Command::new(&self.cfg.exe);
        cmd.arg("serve").arg("--config").arg(&self.cfg.config);
        if role == Role::Spare {
            cmd.arg("--standby");
        }
        cmd.env(NOTIFY_SOCKET, &self.address)
            .env(WATCHDOG_USEC, self.cfg.watchdog.as_micros().to_string())
            .env_remove(WATCHDOG_PID)
            .env(SUPERVISOR_PID, std::process::id().to_string())
            .stdin(Stdio::null());
        let spawned = cmd.spawn().and_then(|child| {
            let pid = child.id() as i32;
            // Not reaped yet: the pid is still this child's.
            let pidfd = Pid::from_raw(pid)
                .ok_or_else(|| std::io::Error::other("pid 0"))
                .and_then(|p| Ok(rustix::process::pidfd_open(p, PidfdFlags::empty())?));
            match pidfd {
                Ok(fd) => Ok((child, pid, fd)),
                Err(e) => {
                    let mut child = child;
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(e)
                }
            }
        });
        match spawned {
            Ok((child, pid, pidfd)) => {
                tracing::info!(pid, role = ?role, "server started");
                self.children.push(Server {
                    child,
                    pid,
                    pidfd,
                    role,
                    ready: false,
                    start_by: now + self.cfg.start_timeout,
                    last_ping: now,
                    signalled: false,
                    spawned: now,
                });
            }
            Err(e) => {
                tracing::error!(exe = %self.cfg.exe.display(), "cannot start the server: {e}");
                self.deaths.push_back(now);
                let at = now + self.start_delay(now).max(BACKOFF_FIRST);
                match role {
                    Role::Spare => self.spare_at = Some(at),
                    _ => self.primary_at = Some(at),
                }
            }
        }
    }

    /// How long the next start must wait: zero unless the recent deaths make a crash loop.
    fn start_delay(&mut self, now: Instant) -> Duration {
        while self
            .deaths
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.cfg.restart_window)
        {
            self.deaths.pop_front();
        }
        if self.deaths.len() < self.cfg.restart_burst as usize {
            self.backoff = BACKOFF_FIRST;
            return Duration::ZERO;
        }
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        tracing::warn!(
            deaths = self.deaths.len(),
            window_s = self.cfg.restart_window.as_secs_f64(),
            wait_ms = d.as_millis() as u64,
            "crash loop: the server keeps dying; waiting before the next start"
        );
        d
    }

    /// Reads the pending notifications (bounded).
    fn receive(&mut self) {
        let mut buf = [0u8; 4096];
        for _ in 0..MAX_MESSAGES {
            let mut space =
                [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let r = rustix::net::recvmsg(
                &self.sock,
                &mut iov,
                &mut cmsg,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            );
            let len = match r {
                Ok(m) => m.bytes,
                Err(rustix::io::Errno::AGAIN) => return,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::warn!("notification socket: {e}");
                    return;
                }
            };
            let pid = cmsg.drain().find_map(|m| match m {
                RecvAncillaryMessage::ScmCredentials(c) => Some(c.pid.as_raw_nonzero().get()),
                _ => None,
            });
            let text = String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned();
            match pid {
                Some(pid) if self.children.iter().any(|c| c.pid == pid) => {
                    self.on_message(pid, &text)
                }
                _ => {
                    if self.strangers == 0 {
                        tracing::warn!(
                            ?pid,
                            "a notification from a process that is not a child was ignored; further ones are only counted"
                        );
                    }
                    self.strangers += 1;
                }
            }
        }
    }

    fn on_message(&mut self, pid: i32, text: &str) {
        let now = Instant::now();
        let Some(i) = self.children.iter().position(|c| c.pid == pid) else {
            return;
        };
        for line in text.lines() {
            match line {
                "READY=1" => self.on_ready(i, now),
                "WATCHDOG=1" => self.children[i].last_ping = now,
                _ => {
                    if let Some(status) = line.strip_prefix("STATUS=") {
                        tracing::debug!(pid, "server status: {status}");
                    }
                }
            }
        }
    }

    fn on_ready(&mut self, i: usize, now: Instant) {
        if self.children[i].role == Role::Spare {
            // It holds the lock: the primary is dead, its death not reaped yet.
            let spare = self.children[i].pid;
            for c in self.children.iter_mut().filter(|c| c.role == Role::Primary) {
                c.role = Role::Leaving;
                self.deaths.push_back(now);
                self.restarts += 1;
                tracing::warn!(
                    pid = c.pid,
                    spare,
                    restarts = self.restarts,
                    "the server is gone (its lock is free); the spare takes over"
                );
            }
            self.children[i].role = Role::Primary;
        }
        let c = &mut self.children[i];
        if c.role != Role::Primary || c.ready {
            return;
        }
        c.ready = true;
        c.last_ping = now;
        tracing::info!(
            pid = c.pid,
            startup_ms = now.duration_since(c.spawned).as_secs_f64() * 1e3,
            "server ready"
        );
        if !self.told_manager
            && let Some(m) = &self.manager
        {
            m.ready("supervising");
            self.told_manager = true;
        }
        if self.cfg.standby && !self.has(Role::Spare) && self.spare_at.is_none() {
            self.spare_at = Some(now + self.cfg.standby_delay);
        }
    }

    /// Reaps child `pid`, whose pidfd says it has exited, and replaces it.
    fn reap(&mut self, pid: i32) {
        let Some(i) = self.children.iter().position(|c| c.pid == pid) else {
            return;
        };
        let status = match self.children[i].child.try_wait() {
            Ok(Some(st)) => st,
            // Readable but not reapable yet: look again next round.
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(pid, "wait: {e}");
                return;
            }
        };
        let c = self.children.swap_remove(i);
        let now = Instant::now();
        match c.role {
            Role::Leaving => tracing::info!(pid, "server {}", describe(status)),
            Role::Spare => {
                tracing::warn!(pid, "spare {}; starting another", describe(status));
                self.deaths.push_back(now);
                let d = self.start_delay(now);
                self.spare_at = Some(now + d.max(self.cfg.standby_delay));
            }
            Role::Primary => {
                self.deaths.push_back(now);
                self.restarts += 1;
                let spare = self.children.iter_mut().find(|c| c.role == Role::Spare);
                match spare {
                    Some(s) => {
                        s.role = Role::Primary;
                        s.ready = false;
                        s.start_by = now + self.cfg.start_timeout;
                        tracing::warn!(
                            pid,
                            spare = s.pid,
                            restarts = self.restarts,
                            "server {}; the spare takes over",
                            describe(status)
                        );
                    }
                    None => {
                        let d = self.start_delay(now);
                        tracing::warn!(
                            pid,
                            restarts = self.restarts,
                            "server {}; restarting",
                            describe(status)
                        );
                        self.primary_at = Some(now + d);
                    }
                }
            }
        }
    }

    /// Kills a primary whose watchdog or start timed out; starts what is due.
    fn check(&mut self, now: Instant) {
        let watchdog = self.cfg.watchdog;
        if let Some(p) = self.primary()
            && !p.signalled
        {
            if p.ready && now.duration_since(p.last_ping) > watchdog {
                tracing::warn!(
                    pid = p.pid,
                    silent_ms = now.duration_since(p.last_ping).as_millis() as u64,
                    "watchdog: no ping from the server's forwarding loop; killing it"
                );
                p.signal(Signal::KILL);
            } else if !p.ready && now > p.start_by {
                tracing::warn!(
                    pid = p.pid,
                    "the server did not get ready in time; killing it"
                );
                p.signal(Signal::KILL);
            }
        }
        if self.primary_at.is_some_and(|t| now >= t) {
            self.primary_at = None;
            if !self.has(Role::Primary) {
                self.spawn(Role::Primary);
            }
        }
        if self.spare_at.is_some_and(|t| now >= t) {
            self.spare_at = None;
            if self.cfg.standby && !self.has(Role::Spare) {
                self.spawn(Role::Spare);
            }
        }
    }

    /// Stops every child: spares first (so none takes over), then the rest.
    fn shutdown(&mut self) {
        if let Some(m) = &self.manager {
            m.stopping();
        }
        for role in [Role::Spare, Role::Primary, Role::Leaving] {
            let deadline = Instant::now() + self.cfg.stop_timeout;
            for c in self.children.iter_mut().filter(|c| c.role == role) {
                c.signal(Signal::TERM);
            }
            let mut killed = false;
            while self.children.iter().any(|c| c.role == role) {
                let now = Instant::now();
                if now >= deadline && !killed {
                    for c in self.children.iter_mut().filter(|c| c.role == role) {
                        tracing::warn!(pid = c.pid, "the server did not stop in time; killing it");
                        c.signal(Signal::KILL);
                    }
                    killed = true;
                }
                let wait = deadline
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(10));
                {
                    let mut fds: Vec<PollFd<'_>> = self
                        .children
                        .iter()
                        .filter(|c| c.role == role)
                        .map(|c| PollFd::from_borrowed_fd(c.pidfd.as_fd(), PollFlags::IN))
                        .collect();
                    let ts = rustix::time::Timespec {
                        tv_sec: wait.as_secs() as i64,
                        tv_nsec: wait.subsec_nanos() as i64,
                    };
                    let _ = rustix::event::poll(&mut fds, Some(&ts));
                }
                self.children.retain_mut(|c| {
                    if c.role != role {
                        return true;
                    }
                    match c.child.try_wait() {
                        Ok(Some(st)) => {
                            tracing::info!(pid = c.pid, "server {}", describe(st));
                            false
                        }
                        Ok(None) => true,
                        Err(_) => false,
                    }
                });
            }
        }
        tracing::info!(restarts = self.restarts, "ferrite supervisor stopped");
    }
}

/// How a child ended, in words (`ended (signal: 9 (SIGKILL))`).
fn describe(st: ExitStatus) -> String {
    format!("ended ({st})")
}

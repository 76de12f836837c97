//! The service manager's notification protocol (`sd_notify(3)`), over rustix.
//!
//! A manager (systemd with `Type=notify`, or `ferrite supervise`) names a Unix datagram
//! socket in `NOTIFY_SOCKET`: a path, or `@name` for an abstract address. The server sends it
//! newline-separated `KEY=VALUE` datagrams: `READY=1` (with `MAINPID=` and `STATUS=`) once
//! its control socket listens and its ports are up, `WATCHDOG=1` from the switch thread
//! while the forwarding loop runs, and `STOPPING=1` on its way out.
//!
//! With `WATCHDOG_USEC` set (and `WATCHDOG_PID` unset or this process), the [`Watchdog`]
//! pings at half that period. It lives on the switch thread and is fed from the run loop's
//! housekeeping hook (every few hundred rounds while busy, and before every sleep), and the
//! loop sleeps no later than the next ping is due: a loop that sleeps for want of frames
//! keeps pinging, a loop that hangs stops, and the manager kills and restarts the server.
//!
//! Sending never blocks: the socket is non-blocking and each send is `MSG_DONTWAIT`. A
//! failed send is counted; the first one is logged.
//!
//! `FERRITE_STALL_SWITCH_FILE=PATH` is a fault for tests of the watchdog: when a ping is due
//! and `PATH` exists, the switch thread removes it and hangs for good (no more pings, no more
//! forwarding; the control thread carries on). It is read once at start and looked at only
//! when a ping is due.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

/// The variable naming the manager's socket.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The variable holding the watchdog period in microseconds.
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The variable naming the process the watchdog is meant for.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";
/// The test fault that hangs the switch thread (see the module docs).
pub const STALL_FILE: &str = "FERRITE_STALL_SWITCH_FILE";

/// A `NOTIFY_SOCKET` value the server cannot use.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Neither a path nor an abstract name.
    #[error("{NOTIFY_SOCKET}={0:?}: expected an absolute path or @name")]
    Address(String),
    /// The socket could not be made.
    #[error("{NOTIFY_SOCKET}: {0}")]
    Io(#[from] std::io::Error),
}

/// The parsed address of a manager's notification socket.
pub fn parse_address(s: &str) -> Result<SocketAddrUnix, NotifyError> {
    let addr = if let Some(name) = s.strip_prefix('@') {
        SocketAddrUnix::new_abstract_name(name.as_bytes())
    } else if s.starts_with('/') {
        SocketAddrUnix::new(s)
    } else {
        return Err(NotifyError::Address(s.to_owned()));
    };
    addr.map_err(|e| NotifyError::Io(e.into()))
}

/// A connection to the manager: an unbound datagram socket and the manager's address.
#[derive(Debug)]
pub struct Notifier {
    fd: OwnedFd,
    addr: SocketAddrUnix,
    failed: AtomicU64,
}

impl Notifier {
    /// A notifier for the socket at `addr` (a path or `@name`).
    pub fn new(addr: &str) -> Result<Self, NotifyError> {
        let addr = parse_address(addr)?;
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| NotifyError::Io(e.into()))?;
        Ok(Self {
            fd,
            addr,
            failed: AtomicU64::new(0),
        })
    }

    /// The notifier `NOTIFY_SOCKET` names; `None` when it is unset or unusable (logged).
    pub fn from_env() -> Option<Arc<Self>> {
        let v = std::env::var(NOTIFY_SOCKET)
            .ok()
            .filter(|v| !v.is_empty())?;
        match Self::new(&v) {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                tracing::warn!("no service manager notifications: {e}");
                None
            }
        }
    }

    /// Sends one message (`KEY=VALUE` lines) without blocking; false when it was not sent.
    pub fn send(&self, state: &str) -> bool {
        match rustix::net::sendto(
            &self.fd,
            state.as_bytes(),
            SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
            &self.addr,
        ) {
            Ok(_) => true,
            Err(e) => {
                if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "a notification to the service manager was not sent ({e}); further failures are only counted"
                    );
                }
                false
            }
        }
    }

    /// Messages that could not be sent.
    pub fn failures(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// `READY=1` with this process's id and a status line.
    pub fn ready(&self, status: &str) -> bool {
        self.send(&format!(
            "READY=1\nMAINPID={}\nSTATUS={status}",
            std::process::id()
        ))
    }

    /// A status line only.
    pub fn status(&self, status: &str) -> bool {
        self.send(&format!("STATUS={status}"))
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> bool {
        self.send("STOPPING=1\nSTATUS=stopping")
    }
}

/// The watchdog period the manager asked of this process: `WATCHDOG_USEC`, unless
/// `WATCHDOG_PID` names another process.
pub fn watchdog_period() -> Option<Duration> {
    let usec: u64 = std::env::var(WATCHDOG_USEC).ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var(WATCHDOG_PID)
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// The switch thread's watchdog pings, at half the manager's period.
#[derive(Debug)]
pub struct Watchdog {
    notifier: Arc<Notifier>,
    interval: Duration,
    next: Instant,
    stall: Option<PathBuf>,
}

impl Watchdog {
    /// Pings through `notifier` every half `period`, the first at the first [`Watchdog::tick`].
    pub fn new(notifier: Arc<Notifier>, period: Duration) -> Self {
        Self {
            notifier,
            interval: period / 2,
            next: Instant::now(),
            stall: std::env::var_os(STALL_FILE).map(PathBuf::from),
        }
    }

    /// The watchdog the environment asks for, if any.
    pub fn from_env(notifier: Option<&Arc<Notifier>>) -> Option<Self> {
        let period = watchdog_period()?;
        let n = notifier?;
        tracing::info!(
            period_ms = period.as_secs_f64() * 1e3,
            "the switch thread pings the service manager's watchdog"
        );
        Some(Self::new(n.clone(), period))
    }

    /// Time between pings.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Pings when a ping is due; returns when the next one is. Called from the forwarding
    /// loop, which must come back by then (it bounds its sleep by it).
    pub fn tick(&mut self) -> Instant {
        let now = Instant::now();
        if now >= self.next {
            self.stall_if_asked();
            self.notifier.send("WATCHDOG=1");
            self.next = now + self.interval;
        }
        self.next
    }

    /// The test fault of the module docs.
    fn stall_if_asked(&self) {
        if let Some(p) = &self.stall
            && std::fs::remove_file(p).is_ok()
        {
            tracing::warn!(
                "{STALL_FILE}: {} found; the switch thread hangs now",
                p.display()
            );
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(dir: &std::path::Path) -> (std::os::unix::net::UnixDatagram, PathBuf) {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let s = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (s, path)
    }

    fn recv(s: &std::os::unix::net::UnixDatagram) -> String {
        let mut b = [0u8; 512];
        let n = s.recv(&mut b).expect("a datagram");
        String::from_utf8_lossy(&b[..n]).into_owned()
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(parse_address("/run/x.sock").is_ok());
        assert!(parse_address("@ferrite/notify").is_ok());
        assert!(matches!(
            parse_address("relative.sock"),
            Err(NotifyError::Address(_))
        ));
        assert!(parse_address("").is_err());
    }

    #[test]
    fn ready_carries_the_pid_and_status() {
        let dir = std::env::temp_dir().join(format!("ferrite-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (s, path) = listener(&dir);
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("notifier");
        assert!(n.ready("serving"));
        let m = recv(&s);
        let lines: Vec<&str> = m.lines().collect();
        assert!(lines.contains(&"READY=1"), "{m}");
        assert!(
            lines.contains(&format!("MAINPID={}", std::process::id()).as_str()),
            "{m}"
        );
        assert!(lines.contains(&"STATUS=serving"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_manager_that_reads_nothing_never_blocks_the_sender_failures_are_counted() {
        let dir = std::env::temp_dir().join(format!("ferrite-notify-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (s, path) = listener(&dir);
        let n = Notifier::new(path.to_str().expect("utf-8")).expect("notifier");
        // The receiver never reads: its queue fills and sends fail at once.
        let mut sent = 0u64;
        for _ in 0..100_000 {
            if n.send("WATCHDOG=1") {
                sent += 1;
            } else {
                break;
            }
        }
        assert!(sent > 0);
        assert!(n.failures() >= 1, "a full queue fails the send");
        drop(s);
        // No one bound any more: refused, counted.
        let before = n.failures();
        assert!(!n.send("WATCHDOG=1"));
        assert_eq!(n.failures(), before + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_watchdog_pings_at_once_then_at_half_the_period() {
        let dir = std::env::temp_dir().join(format!("ferrite-notify-wd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (s, path) = listener(&dir);
        let n = Arc::new(Notifier::new(path.to_str().expect("utf-8")).expect("notifier"));
        let mut w = Watchdog::new(n, Duration::from_secs(2));
        assert_eq!(w.interval(), Duration::from_secs(1));
        let t0 = Instant::now();
        let next = w.tick();
        assert_eq!(recv(&s), "WATCHDOG=1");
        assert!(next > t0 && next <= Instant::now() + Duration::from_secs(1));
        // Not due yet: no second ping, the same deadline.
        assert_eq!(w.tick(), next);
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 64];
        assert!(s.recv(&mut b).is_err(), "no ping before it is due");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

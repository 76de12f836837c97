//! [`AppDomain`]: a process as a Ferrite app domain.
//!
//! It owns one grant holding the port's memory (header, four rings, pool), connects to the
//! server's control socket, handshakes (`Hello` → `InitWait` → `Grant` → `Connected`), and
//! drives a smoltcp interface over a [`RingDevice`] with an adaptive poll loop: busy-poll
//! while there is traffic, then ask for a wakeup and sleep on the server's doorbell (and the
//! control socket) until the next frame or the stack's next timer.
//!
//! When the server dies the control socket closes. The domain detaches the rings but keeps
//! the interface, its sockets and the pool, and re-handshakes with exponential backoff and
//! jitter; between attempts it watches the socket's directory (inotify), so a server that
//! comes back is tried as soon as it creates its socket rather than at the next step. The
//! new server maps the same memory; the rings start afresh, every buffer is the
//! app's again, and a gratuitous ARP teaches the switch where the app is. TCP retransmits
//! whatever was lost, so connections survive.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use grant_pool::PortAnswer;
use grant_pool::lend::{LendError, OwnPool};
use grant_pool::port::{AppPort, PortError, PortLayout};
use grant_pool::shm::ShmBackend;
use grant_pool::{Access, DomId, Grant, GrantBackend, GrantError, Notifier, PoolId};
use rustix::event::{PollFd, PollFlags};
use smoltcp::iface::{Interface, SocketSet};
use switch::ctl::{Client, CtlError, GrantRepr, Name, Received, Transport};
use switch::xen_ctl::{Answer, AttachRequest, Frontend, RefList, XbState, XenCtlError};
use switch::xenstore::Xenstore;

use crate::device::{DeviceError, DeviceStats, PortRings, RingDevice};
use crate::stack::{self, NetConfig};
use crate::transport::{DomBackend, DomGrant, DomNotifier};

/// Everything that can stop an app domain.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The control connection failed or the server refused the handshake.
    #[error("control: {0}")]
    Ctl(#[from] CtlError),
    /// The xenstore handshake failed or the server refused it.
    #[error("xenstore: {0}")]
    Xen(#[from] XenCtlError),
    /// Memory or a doorbell could not be made.
    #[error("grant: {0}")]
    Grant(#[from] GrantError),
    /// The port layout is invalid or the server's limits refuse it.
    #[error("port layout: {0}")]
    Port(#[from] PortError),
    /// The server's limits are smaller than what this app asked for.
    #[error(
        "the server allows at most {what} = {max}, this app asks for {want}; lower the app's setting"
    )]
    Limit {
        /// Which setting.
        what: &'static str,
        /// The server's limit.
        max: u64,
        /// What the app wanted.
        want: u64,
    },
    /// The pool could not be made or renamed.
    #[error("pool: {0}")]
    Pool(#[from] LendError),
    /// The device refused the new rings.
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    /// No server answered within the time allowed.
    #[error("no server at {path} after {secs:.1} s (last error: {last})")]
    NoServer {
        /// The control socket path.
        path: PathBuf,
        /// How long we tried.
        secs: f64,
        /// The last failure.
        last: String,
    },
    /// An app-level failure (bad flag, file, peer).
    #[error("{0}")]
    App(String),
}

/// How an app domain attaches and polls.
#[derive(Debug, Clone)]
pub struct DomainConfig {
    /// The server's control socket.
    pub socket: PathBuf,
    /// The app's name (the server's configuration allows names).
    pub name: String,
    /// The app's addresses.
    pub net: NetConfig,
    /// Descriptors per ring (power of two).
    pub ring_size: u32,
    /// Buffers in the pool.
    pub buf_count: usize,
    /// Bytes per buffer (a power of two). Above an Ethernet frame (2048), the stack sends TCP
    /// segments of up to a buffer whole (segmentation offload) and takes large ones whole.
    pub buf_size: usize,
    /// The IP MTU on the wire (1500; up to 9000 for jumbo frames, within a buffer).
    pub mtu: usize,
    /// How long the loop busy-polls without traffic before it arms need-wakeup and sleeps.
    pub busy_poll: Duration,
    /// Longest sleep while idle.
    pub max_sleep: Duration,
    /// How long the first connection may be retried before giving up; after that, a lost
    /// server is retried without limit (an app outlives server restarts).
    pub first_connect: Duration,
    /// Attach as a Xen frontend (gntalloc, evtchn, xenstore) to the server in this domain,
    /// instead of over the control socket.
    pub xen_server: Option<u16>,
}

/// Buffers in an app's pool by default: 64 KiB each (60 MiB reserved, committed only as
/// frames touch it). A grant names each of its pages and one grant message holds at most
/// 16 372 of them, so this is about the most one app can have; the receive window an app
/// offers grows with it ([`AppDomain::rx_window`]).
pub const LARGE_BUFS: usize = 960;
/// Buffers in an app's pool of 2 KiB buffers (frames of one MTU, no segmentation offload:
/// a Xen app's grant holds at most 64 MiB).
pub const SMALL_BUFS: usize = 4096;

impl DomainConfig {
    /// Defaults for everything but the socket, name and addresses.
    pub fn new(socket: PathBuf, name: String, net: NetConfig) -> Self {
        Self {
            socket,
            name,
            net,
            ring_size: 1024,
            buf_count: LARGE_BUFS,
            buf_size: grant_pool::pool::MAX_BUF_SIZE,
            mtu: 1500,
            busy_poll: Duration::ZERO,
            max_sleep: Duration::from_millis(100),
            first_connect: Duration::from_secs(10),
            xen_server: None,
        }
    }
}

/// What an app does with its sockets, called from the poll loop.
pub trait Service {
    /// Does whatever work the sockets allow now; returns whether anything happened (the loop
    /// keeps busy-polling while it does).
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: std::time::Instant) -> bool;

    /// When the service next needs to run without network input (a timer), if ever.
    fn poll_at(&self) -> Option<std::time::Instant> {
        None
    }

    /// Whether the service is finished (the loop returns).
    fn done(&self) -> bool {
        false
    }
}

/// Connection history of a domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DomainStats {
    /// Successful handshakes.
    pub connects: u64,
    /// Times the server went away while connected.
    pub server_losses: u64,
    /// Failed handshake attempts.
    pub failed_attempts: u64,
    /// Milliseconds from noticing the loss of the last server to being connected again.
    pub last_outage_ms: u64,
    /// The current server's instance number.
    pub instance: u64,
    /// Times the loop slept on the doorbell.
    pub sleeps: u64,
}

/// Exponential backoff with jitter: 1 ms doubling to 100 ms.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(1);
    const CAP: Duration = Duration::from_millis(100);

    fn new(seed: u64) -> Self {
        Self {
            next: Self::FIRST,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next wait: the current step, ±25 % jitter, then the step doubles.
    fn step(&mut self) -> Duration {
        // xorshift64: jitter only, not security.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let base = self.next.as_micros() as u64;
        let jitter = self.rng % (base / 2 + 1);
        let d = Duration::from_micros(base - base / 4 + jitter);
        self.next = (self.next * 2).min(Self::CAP);
        d
    }
}

/// Watches the control socket's directory for the socket's creation, so that an app waiting
/// for a server wakes when one binds the socket rather than at its next backoff step.
#[derive(Debug)]
struct SocketWatch {
    fd: OwnedFd,
    name: std::ffi::OsString,
}

impl SocketWatch {
    /// `None` when inotify is not available (the caller sleeps out its backoff steps).
    fn new(socket: &Path) -> Option<Self> {
        use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
        let name = socket.file_name()?.to_os_string();
        let dir = socket
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let fd = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok()?;
        inotify::add_watch(&fd, dir, WatchFlags::CREATE | WatchFlags::MOVED_TO).ok()?;
        Some(Self { fd, name })
    }

    /// Sleeps up to `d`; returns whether the socket was created meanwhile.
    fn wait(&self, d: Duration) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let ts = rustix::time::Timespec {
            tv_sec: d.as_secs() as i64,
            tv_nsec: d.subsec_nanos() as i64,
        };
        if !matches!(rustix::event::poll(&mut fds, Some(&ts)), Ok(n) if n > 0) {
            return false;
        }
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut events = rustix::fs::inotify::Reader::new(&self.fd, &mut buf);
        let mut created = false;
        // Bounded: the queue holds what the kernel buffered; stop at the first error
        // (EAGAIN once it is empty).
        for _ in 0..1024 {
            match events.next() {
                Ok(e) => {
                    created |= e
                        .file_name()
                        .is_some_and(|n| n.to_bytes() == self.name.as_encoded_bytes());
                }
                Err(_) => break,
            }
        }
        created
    }
}

/// A process acting as a Ferrite app domain.
pub struct AppDomain {
    cfg: DomainConfig,
    layout: PortLayout,
    backend: DomBackend,
    device: RingDevice<DomGrant, DomNotifier>,
    iface: Interface,
    sockets: SocketSet<'static>,
    client: Option<Client>,
    xen: Option<XenLink>,
    epoch: std::time::Instant,
    stats: DomainStats,
    backoff: Backoff,
    watch: Option<SocketWatch>,
    lost_at: Option<std::time::Instant>,
}

impl core::fmt::Debug for AppDomain {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AppDomain")
            .field("name", &self.cfg.name)
            .field("device", &self.device)
            .field("stats", &self.stats)
            .finish()
    }
}

/// The xenstore side of a Xen app domain.
struct XenLink {
    xs: Xenstore,
    /// This domain's id, once read (only a handshake whose answer did not come through the
    /// port needs it).
    me: Option<u16>,
    server: u16,
    connected: bool,
    /// The reference list of the port memory, granted read-only to the server; made once,
    /// published in every handshake.
    list: Option<DomGrant>,
    /// The nonce of the latest request (each handshake takes the next; never 0).
    nonce: u64,
    /// The latest handshake's timings, logged once the attach is timed.
    report: Option<String>,
}

/// How long a Xen app waits for each answer of the server's handshake.
const XEN_STEP: Duration = Duration::from_secs(30);

/// Longest time [`AppDomain::run`] keeps the stack going after the service is done: long
/// enough for a lost FIN to be retransmitted several times over (smoltcp's retransmission
/// timeout starts near 1 s and doubles), bounded so a vanished peer does not hold up the
/// exit for ever. The loop ends as soon as the last segment is acknowledged.
const LINGER: Duration = Duration::from_secs(30);

/// The domain id an app labels its grants with on the `shm` backend (the server is 0).
const APP_DOM: DomId = DomId(1);

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    t ^ ((std::process::id() as u64) << 32)
}

/// Buffers an app configured as `cfg` keeps on a fill ring of `ring` entries: the ring's
/// size, at most a share of the pool; the rest is for transmit. With buffers of several
/// frames the stack sends TCP segments that fill them (segmentation offload), so a quarter of
/// the pool carries as much as a whole window; with buffers of about one frame transmit gets
/// half.
fn fill_target(cfg: &DomainConfig, ring: usize) -> usize {
    let bufs = cfg.buf_count;
    let share = if cfg.buf_size >= 4 * (cfg.mtu + crate::device::ETH_HEADER) {
        bufs - bufs / 4
    } else {
        bufs / 2
    };
    ring.min(share)
}

impl AppDomain {
    /// Makes the port memory and the stack, and connects to the server (retrying for
    /// `cfg.first_connect`).
    pub fn connect(cfg: DomainConfig) -> Result<Self, AppError> {
        let t0 = std::time::Instant::now();
        // Times from t0 at the end of each step, for the ATTACH line.
        let mut steps: Vec<(&str, Duration)> = Vec::new();
        let layout = PortLayout::new(
            [cfg.ring_size; 4],
            grant_pool::PoolLayout::new(cfg.buf_size, cfg.buf_count)
                .map_err(grant_pool::port::PortError::from)?,
        )?;
        // Xen: the grant devices and the xenstore connection first (no round trip: the app
        // writes its nodes by relative paths and needs its domain id only if the answer
        // does not come through the port), then the grants.
        let (backend, server, xs) = match cfg.xen_server {
            None => (
                DomBackend::Shm(ShmBackend::new(APP_DOM)),
                DomId::SELF_HOST,
                None,
            ),
            Some(server) => {
                let b = grant_pool::xen::XenBackend::open()
                    .map_err(|e| AppError::App(format!("xen: {e}")))?;
                steps.push(("grant devices opened", t0.elapsed()));
                let xs = Xenstore::open().map_err(XenCtlError::from)?;
                steps.push(("xenstore opened", t0.elapsed()));
                (DomBackend::Xen(b), DomId(server), Some(xs))
            }
        };
        let t_grant = std::time::Instant::now();
        let grant = backend.grant(server, layout.pages(), Access::ReadWrite)?;
        let list = match cfg.xen_server {
            None => None,
            Some(_) => {
                // The port memory's references, in a page (or a few) of their own.
                let refs: Vec<u32> = grant.refs().iter().map(|r| r.0).collect();
                let bytes = RefList::bytes(refs.len());
                let list = backend.grant(server, bytes.div_ceil(4096), Access::ReadOnly)?;
                let mut raw = vec![0u8; bytes];
                RefList::encode(&refs, &mut raw)
                    .ok_or_else(|| AppError::App("the reference list does not fit".into()))?;
                list.region()
                    .write(0, &raw)
                    .map_err(|e| AppError::App(format!("writing the reference list: {e}")))?;
                Some(list)
            }
        };
        let grant_ms = t_grant.elapsed().as_secs_f64() * 1e3;
        if cfg.xen_server.is_some() {
            steps.push(("port memory and reference list granted", t0.elapsed()));
        }
        let mut xen = xs.map(|xs| XenLink {
            xs,
            me: None,
            server: server.0,
            connected: false,
            list,
            nonce: seed() | 1,
            report: None,
        });
        // Xen: the first request goes out now, and the pool and the stack are built while
        // the server maps and answers.
        let mut sent = None;
        if let Some(x) = xen.as_mut() {
            match xen_request(x, &backend, &grant, layout, &cfg.name, cfg.net.mac) {
                Ok(r) => sent = Some(r),
                Err(e) if retryable(&e) => {
                    tracing::warn!("{}: first request: {e}; retrying", cfg.name);
                }
                Err(e) => return Err(e),
            }
            steps.push(("request sent", t0.elapsed()));
        }
        let pool = OwnPool::new(grant, layout.pool_off(), PoolId(0), layout.pool())?;
        let mut device = RingDevice::with_mtu(pool, cfg.mtu);
        let epoch = std::time::Instant::now();
        let s = seed();
        let iface = stack::interface(&cfg.net, &mut device, smoltcp::time::Instant::ZERO, s);
        let mut d = Self {
            cfg,
            layout,
            backend,
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            client: None,
            xen,
            epoch,
            stats: DomainStats::default(),
            backoff: Backoff::new(s),
            watch: None,
            lost_at: None,
        };
        steps.push(("pool and stack built", t0.elapsed()));
        let deadline = std::time::Instant::now() + d.cfg.first_connect;
        loop {
            let attempt = match sent.take() {
                Some(r) => d.xen_answer(r),
                None => d.handshake(),
            };
            match attempt {
                Ok(()) => {
                    // The figure the Xen test reports: grant + map + handshake, from the
                    // app's start (devices and xenstore opened inside the interval). Taken
                    // before anything is logged: a console write from a busy domU can block
                    // for seconds, so nothing in the interval logs.
                    let attach = t0.elapsed();
                    if let Some(x) = d.xen.as_mut() {
                        if let Some(r) = x.report.take() {
                            tracing::info!("{r}");
                        }
                        if let Some(l) = grant_pool::xen::gntalloc_limit() {
                            tracing::info!("gntalloc allows {l} grants per domain");
                        }
                        let at: Vec<String> = steps
                            .iter()
                            .map(|(what, t)| format!("{what} {:.1}", t.as_secs_f64() * 1e3))
                            .collect();
                        tracing::info!(
                            "{}: ATTACH {:.1} ms (grant + map + handshake over xenstore; of which grant {:.1} ms; steps end at: {})",
                            d.cfg.name,
                            attach.as_secs_f64() * 1e3,
                            grant_ms,
                            at.join(", ")
                        );
                    }
                    return Ok(d);
                }
                Err(e) if std::time::Instant::now() < deadline && retryable(&e) => {
                    d.stats.failed_attempts += 1;
                    d.wait_for_server();
                }
                Err(e) if retryable(&e) => {
                    return Err(AppError::NoServer {
                        path: d.cfg.socket.clone(),
                        secs: d.cfg.first_connect.as_secs_f64(),
                        last: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The sockets, to add the service's sockets to.
    pub fn sockets(&mut self) -> &mut SocketSet<'static> {
        &mut self.sockets
    }

    /// Runs `f` with the interface's context and the sockets (to connect a TCP socket).
    pub fn with_context<R>(
        &mut self,
        f: impl FnOnce(&mut smoltcp::iface::Context, &mut SocketSet<'static>) -> R,
    ) -> R {
        f(self.iface.context(), &mut self.sockets)
    }

    /// The device's counters.
    pub fn device_stats(&self) -> DeviceStats {
        self.device.stats()
    }

    /// Connection history.
    pub fn stats(&self) -> DomainStats {
        self.stats
    }

    /// Hands the freshly laid-out rings of `port` (pool id `pool` as the server named it) and
    /// the doorbell to the device, stocking the fill ring.
    fn attach_rings(
        &mut self,
        pool: PoolId,
        port: AppPort,
        notifier: DomNotifier,
    ) -> Result<(), AppError> {
        self.device.set_pool_id(pool)?;
        let fill_target = self.fill_target();
        self.device.attach(
            PortRings {
                rx: port.rx,
                fill: port.fill,
                tx: port.tx,
                completion: port.comp,
                notifier,
            },
            fill_target,
        )?;
        Ok(())
    }

    /// Buffers the app keeps on its fill ring for the server to fill (see [`fill_target`]).
    fn fill_target(&self) -> usize {
        fill_target(&self.cfg, self.layout.fill().size() as usize)
    }

    /// The largest TCP receive window this port can take in one burst without the server
    /// running out of fill buffers (one full-size segment per buffer). A receive buffer larger
    /// than this invites the peer to send more than the port can hold while the app sleeps:
    /// the excess is dropped and retransmitted.
    pub fn rx_window(&self) -> usize {
        // A full-size TCP/IPv4 segment in a 1514-byte frame.
        const MSS: usize = 1460;
        self.fill_target() * MSS
    }

    /// The configuration.
    pub fn config(&self) -> &DomainConfig {
        &self.cfg
    }

    /// Buffers the app holds right now (the rest are on the server's side of the rings).
    pub fn held_buffers(&self) -> usize {
        self.device.pool().held_count()
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    /// Whether a server has the rings now.
    fn connected(&self) -> bool {
        match &self.xen {
            Some(x) => x.connected,
            None => self.client.is_some(),
        }
    }

    /// One handshake with the server; on success the rings are attached.
    fn handshake(&mut self) -> Result<(), AppError> {
        if self.xen.is_some() {
            return self.handshake_xen();
        }
        let mut c = Client::connect(&self.cfg.socket)?;
        if let Err(e) = c.transport().set_read_timeout(Some(Duration::from_secs(5))) {
            return Err(e.into());
        }
        let name = Name::new(&self.cfg.name)?;
        let limits = c.hello(&name, self.cfg.net.mac)?;
        let l = self.layout;
        let checks = [
            (
                "max_ring",
                limits.max_ring as u64,
                self.cfg.ring_size as u64,
            ),
            (
                "max_bufs",
                limits.max_bufs as u64,
                self.cfg.buf_count as u64,
            ),
            ("max_mem", limits.max_mem, l.bytes() as u64),
            (
                "max_buf_size",
                limits.max_buf_size as u64,
                self.cfg.buf_size as u64,
            ),
        ];
        for (what, max, want) in checks {
            if want > max {
                return Err(AppError::Limit { what, max, want });
            }
        }
        // The previous server (if any) is gone: lay the port out afresh in the same memory.
        let grant = self.device.pool().grant();
        let port = AppPort::create(grant.memory().clone(), l, PoolId(0))?;
        let DomBackend::Shm(shm) = &self.backend else {
            return Err(AppError::App(
                "a Xen doorbell cannot travel over the control socket".into(),
            ));
        };
        let gfds = grant.attachments();
        let repr = GrantRepr {
            rx_size: l.rx().size(),
            tx_size: l.tx().size(),
            fill_size: l.fill().size(),
            comp_size: l.comp().size(),
            buf_size: l.pool().buf_size as u32,
            buf_count: l.pool().count as u32,
            domid: APP_DOM.0,
            grant_fds: gfds.len() as u8,
            notify_fds: 0,
            notify_port: 0,
            refs: grant.refs().iter().map(|r| r.0).collect(),
        };
        let (attached, bell) = c.grant(&repr, &gfds)?;
        drop(gfds);
        // The server made the doorbell; this is the app's end of it.
        let notifier = shm.bind_notifier(DomId::SELF_HOST, 0, &bell)?;
        c.transport().set_nonblocking(true)?;
        self.attach_rings(PoolId(attached.pool), port, DomNotifier::Shm(notifier))?;
        self.client = Some(c);
        self.connected_to(attached.instance);
        Ok(())
    }

    /// The xenstore handshake (`switch::xen_ctl`): the rings laid out afresh and a new event
    /// channel, one request (`attach` with a new nonce, `state = 3`, and a read of the
    /// answer, in one round trip), then the server's answer.
    fn handshake_xen(&mut self) -> Result<(), AppError> {
        let Some(x) = self.xen.as_mut() else {
            return Err(AppError::App("not a Xen app".into()));
        };
        let sent = xen_request(
            x,
            &self.backend,
            self.device.pool().grant(),
            self.layout,
            &self.cfg.name,
            self.cfg.net.mac,
        )?;
        let r = self.xen_answer(sent);
        if let Some(x) = self.xen.as_mut()
            && let Some(line) = x.report.take()
        {
            tracing::info!("{line}");
        }
        r
    }

    /// The second half of [`AppDomain::handshake_xen`]: waits for the server's answer to
    /// the request `sent`, then attaches the rings.
    fn xen_answer(&mut self, sent: XenRequest) -> Result<(), AppError> {
        let Some(x) = self.xen.as_ref() else {
            return Err(AppError::App("not a Xen app".into()));
        };
        let mut fe = Frontend::new(&x.xs, x.me, x.server, &self.cfg.name)?;
        // The server leaves its answer in the port's header page and rings the doorbell;
        // the backend's `answer` node is read only when that does not come (a refusal, or
        // a server that answers only in xenstore).
        let mem = self.device.pool().grant().region();
        let in_port = || {
            let a = PortAnswer::take(&mem).ok().flatten()?;
            Some(Answer::Connected {
                nonce: a.nonce,
                instance: a.instance,
                pool: u8::try_from(a.pool).ok()?,
                port: u16::try_from(a.port).ok()?,
            })
        };
        let answer = fe.wait_answer(sent.nonce, XEN_STEP, |d| {
            if let Some(a) = in_port() {
                return Some(a);
            }
            // A doorbell that cannot be waited on still must not turn this into a busy
            // loop of xenstore reads: then the tick is slept instead.
            if sent.notifier.wait(Some(d)).is_err() {
                std::thread::sleep(d);
            }
            in_port()
        })?;
        let me = fe.known_domid();
        let Answer::Connected { instance, pool, .. } = answer else {
            return Err(AppError::App("a refusal reached the attach".into()));
        };
        // Nothing waits for this write: the server needs it only after its own restart.
        fe.post_state(XbState::Connected)?;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let report = format!(
            "{}: xenstore handshake {:.1} ms: rings and event channel ready {:.1}, request sent {:.1}, server's answer seen {:.1}",
            self.cfg.name,
            ms(sent.t0.elapsed()),
            ms(sent.t_ready),
            ms(sent.t_sent),
            ms(sent.t0.elapsed())
        );
        self.attach_rings(PoolId(pool), sent.port, sent.notifier)?;
        if let Some(x) = self.xen.as_mut() {
            x.me = x.me.or(me);
            x.connected = true;
            x.report = Some(report);
        }
        self.connected_to(instance);
        Ok(())
    }

    /// Bookkeeping of a successful handshake, and a gratuitous ARP so the switch learns
    /// where this app is.
    fn connected_to(&mut self, instance: u64) {
        self.stats.connects += 1;
        self.stats.instance = instance;
        self.backoff.reset();
        self.watch = None;
        let now = self.now();
        stack::send_gratuitous_arp(&self.cfg.net, &mut self.device, now);
        let _ = self.device.flush();
        if let Some(t) = self.lost_at.take() {
            self.stats.last_outage_ms = t.elapsed().as_millis() as u64;
            tracing::info!(
                "{}: REATTACH: reconnected to server instance {} after {} ms",
                self.cfg.name,
                instance,
                self.stats.last_outage_ms
            );
        }
    }

    /// Waits before the next handshake attempt: the next backoff step, cut short when the
    /// control socket is created (then the steps start again from the shortest, since the
    /// server may take a moment to listen).
    fn wait_for_server(&mut self) {
        let d = self.backoff.step();
        if self.watch.is_none() {
            self.watch = SocketWatch::new(&self.cfg.socket);
        }
        match &self.watch {
            Some(w) => {
                if w.wait(d) {
                    self.backoff.reset();
                }
            }
            None => std::thread::sleep(d),
        }
    }

    /// Whether the control connection is still up (non-blocking check).
    fn server_alive(&mut self) -> bool {
        if let Some(x) = &self.xen {
            // A server that died or unmapped cleared its slot in the grant's control page
            // (unmap-notify) and rang our event channel.
            return x.connected && self.device.pool().grant().is_mapped().unwrap_or(false);
        }
        let Some(c) = self.client.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 512];
        let mut fds = Vec::new();
        match c.transport().recv(&mut buf, &mut fds) {
            Ok(Received::WouldBlock) => true,
            Ok(Received::Closed) | Err(_) => false,
            // The server speaks only when asked; anything unasked (an Error or Closed
            // notice) means it is dropping us.
            Ok(Received::Message { .. }) => false,
        }
    }

    fn lose_server(&mut self) {
        tracing::warn!(
            "{}: the server went away; keeping state, reconnecting",
            self.cfg.name
        );
        self.client = None;
        if let Some(x) = self.xen.as_mut() {
            x.connected = false;
        }
        self.device.detach();
        self.stats.server_losses += 1;
        self.lost_at = Some(std::time::Instant::now());
    }

    /// Runs `svc` until it is done or `stop` is set, surviving server restarts.
    pub fn run<S: Service>(&mut self, svc: &mut S, stop: &AtomicBool) -> Result<(), AppError> {
        let mut idle: u32 = 0;
        let mut idle_since: Option<std::time::Instant> = None;
        let mut iter: u32 = 0;
        while !stop.load(Ordering::Relaxed) && !svc.done() {
            if !self.connected() {
                match self.handshake() {
                    Ok(()) => {}
                    Err(e) if retryable(&e) => {
                        self.stats.failed_attempts += 1;
                        // Keep the stack's timers and the service running while we wait.
                        let now = self.now();
                        self.iface.poll(now, &mut self.device, &mut self.sockets);
                        svc.poll(&mut self.sockets, std::time::Instant::now());
                        self.wait_for_server();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let before = activity(&self.device.stats());
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            let worked = svc.poll(&mut self.sockets, std::time::Instant::now());
            if worked {
                // Emit what the service queued without waiting for the next turn.
                let now = self.now();
                self.iface.poll(now, &mut self.device, &mut self.sockets);
            }
            let _ = self.device.flush();
            if self.device.take_error().is_some() {
                self.lose_server();
                continue;
            }
            iter = iter.wrapping_add(1);
            if iter.is_multiple_of(4096) && !self.server_alive() {
                self.lose_server();
                continue;
            }
            if worked || activity(&self.device.stats()) != before {
                idle_since = None;
                continue;
            }
            // Idle: keep polling for a while (the next frame is often close behind), then
            // sleep. The clock is read only every few idle turns.
            idle = idle.wrapping_add(1);
            if !idle.is_multiple_of(16) {
                continue;
            }
            let t = std::time::Instant::now();
            let since = *idle_since.get_or_insert(t);
            if t.duration_since(since) < self.cfg.busy_poll {
                continue;
            }
            self.sleep(svc);
            idle_since = None;
        }
        self.linger(svc);
        Ok(())
    }

    /// After the service is done: keep the stack running briefly so the last segments (a
    /// FIN, an ACK) leave and are retransmitted if lost, then return.
    fn linger<S: Service>(&mut self, svc: &mut S) {
        let until = std::time::Instant::now() + LINGER;
        while std::time::Instant::now() < until && self.connected() {
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            svc.poll(&mut self.sockets, std::time::Instant::now());
            let _ = self.device.flush();
            let quiet = self.sockets.iter().all(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => {
                    t.send_queue() == 0
                        && !matches!(
                            t.state(),
                            smoltcp::socket::tcp::State::FinWait1
                                | smoltcp::socket::tcp::State::Closing
                                | smoltcp::socket::tcp::State::LastAck
                        )
                }
                _ => true,
            });
            if quiet {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sleeps until the server rings, the control socket changes, the stack's or the
    /// service's next timer, or `max_sleep`.
    fn sleep<S: Service>(&mut self, svc: &S) {
        let now = self.now();
        let mut delay = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
            .unwrap_or(self.cfg.max_sleep)
            .min(self.cfg.max_sleep);
        if let Some(t) = svc.poll_at() {
            delay = delay.min(t.saturating_duration_since(std::time::Instant::now()));
        }
        if delay.is_zero() {
            return;
        }
        if self.device.arm_wakeup() {
            self.device.disarm_wakeup();
            return;
        }
        self.stats.sleeps += 1;
        let gone = match (self.client.as_mut(), self.device.notifier()) {
            (Some(c), Some(DomNotifier::Shm(n))) => wait_either(n, c, delay),
            // Xen: the doorbell also rings when the server dies (unmap-notify).
            (None, Some(n)) if self.xen.is_some() => {
                let _ = n.wait(Some(delay));
                true
            }
            _ => true,
        };
        self.device.disarm_wakeup();
        if gone && !self.server_alive() {
            self.lose_server();
        }
    }
}

impl Drop for AppDomain {
    fn drop(&mut self) {
        let st = self.device.stats();
        let frames = st.rx_frames + st.tx_frames;
        tracing::info!(
            "{}: leaving: frames received {}, sent {}, doorbell kicks to the server {} ({:.1} per 1000 frames)",
            self.cfg.name,
            st.rx_frames,
            st.tx_frames,
            st.kicks,
            st.kicks as f64 * 1000.0 / frames.max(1) as f64
        );
        // A Xen app says it is leaving, so the server detaches it at once (a Unix-socket app's
        // closing connection says the same).
        if let Some(x) = &self.xen
            && x.connected
            && let Ok(fe) = Frontend::new(&x.xs, x.me, x.server, &self.cfg.name)
        {
            let _ = fe.set_state(XbState::Closing);
        }
    }
}

/// Sleeps on the doorbell and the control socket together; returns whether the control
/// socket became readable (the server may have gone).
fn wait_either(n: &grant_pool::shm::ShmNotifier, c: &mut Client, delay: Duration) -> bool {
    let bell = n.poll_fd();
    let t = c.transport();
    let ctl = t.as_fd();
    let mut fds = [
        PollFd::new(&bell, PollFlags::IN),
        PollFd::new(&ctl, PollFlags::IN),
    ];
    let ts = rustix::time::Timespec {
        tv_sec: delay.as_secs() as i64,
        tv_nsec: delay.subsec_nanos() as i64,
    };
    let _ = rustix::event::poll(&mut fds, Some(&ts));
    let ctl_ready = !fds[1].revents().is_empty();
    let _ = n.drain();
    ctl_ready
}

/// A Xen attach request sent, its answer not yet seen.
struct XenRequest {
    nonce: u64,
    port: AppPort,
    notifier: DomNotifier,
    t0: std::time::Instant,
    t_ready: Duration,
    t_sent: Duration,
}

/// The first half of a Xen handshake: lays the port out afresh in `grant` (the previous
/// server, if any, is gone), allocates a new event channel, and sends the request with a
/// new nonce, without waiting for xenstored. What the app still has to build can be built
/// while the server works.
fn xen_request(
    x: &mut XenLink,
    backend: &DomBackend,
    grant: &DomGrant,
    layout: PortLayout,
    name: &str,
    mac: [u8; 6],
) -> Result<XenRequest, AppError> {
    x.nonce = x.nonce.wrapping_add(1).max(1);
    let nonce = x.nonce;
    let fe = Frontend::new(&x.xs, x.me, x.server, name)?;
    let Some(list) = x.list.as_ref() else {
        return Err(AppError::App("no reference list".into()));
    };
    let list_refs: Vec<u32> = list.refs().iter().map(|r| r.0).collect();
    let t0 = std::time::Instant::now();
    let port = AppPort::create(grant.memory().clone(), layout, PoolId(0))?;
    let notifier = backend.notifier(DomId(x.server))?;
    let t_ready = t0.elapsed();
    let req = AttachRequest {
        nonce,
        mac,
        event_channel: notifier.port(),
        list_refs,
    };
    fe.request(&req)?;
    Ok(XenRequest {
        nonce,
        port,
        notifier,
        t0,
        t_ready,
        t_sent: t0.elapsed(),
    })
}

fn activity(s: &DeviceStats) -> (u64, u64) {
    (s.rx_frames, s.tx_frames)
}

/// Whether a failed handshake is worth retrying (the server is not there yet, or went away
/// mid-handshake), as opposed to a refusal that will not change.
fn retryable(e: &AppError) -> bool {
    match e {
        AppError::Ctl(CtlError::Closed) | AppError::Ctl(CtlError::Io { .. }) => true,
        // Busy: our old port may still be on the switch for a moment after a restart race.
        AppError::Ctl(CtlError::Remote { code, .. }) => {
            matches!(
                code,
                switch::ctl::ErrorCode::Busy | switch::ctl::ErrorCode::Timeout
            )
        }
        // No server yet, a server that restarted mid-handshake, or xenstore hiccups.
        AppError::Xen(XenCtlError::Timeout { .. } | XenCtlError::Xs(_)) => true,
        _ => false,
    }
}

/// A stop flag set by SIGINT/SIGTERM.
pub fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || s.store(true, Ordering::Relaxed)) {
        tracing::warn!("cannot install the signal handler: {e}");
    }
    stop
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(buf_size: usize, buf_count: usize) -> DomainConfig {
        let net = NetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            ip: smoltcp::wire::Ipv4Cidr::new(smoltcp::wire::Ipv4Address::new(10, 0, 0, 2), 24),
            gateway: None,
            ip6: None,
        };
        let mut c = DomainConfig::new("/nonexistent".into(), "a".into(), net);
        c.buf_size = buf_size;
        c.buf_count = buf_count;
        c
    }

    #[test]
    fn default_pools_fit_one_grant_message() {
        for (size, count) in [
            (grant_pool::pool::MAX_BUF_SIZE, LARGE_BUFS),
            (2048, SMALL_BUFS),
        ] {
            let c = config(size, count);
            let layout = PortLayout::new(
                [c.ring_size; 4],
                grant_pool::PoolLayout::new(size, count).expect("pool layout"),
            )
            .expect("port layout");
            assert!(
                layout.pages() <= switch::ctl::wire::MAX_REFS,
                "{count} buffers of {size}: {} pages",
                layout.pages()
            );
        }
    }

    #[test]
    fn large_buffers_leave_a_quarter_for_transmit() {
        let large = config(grant_pool::pool::MAX_BUF_SIZE, LARGE_BUFS);
        assert_eq!(fill_target(&large, 1024), LARGE_BUFS * 3 / 4);
        assert_eq!(fill_target(&large, 256), 256, "never more than the ring");
        // One frame per buffer: transmit needs as many buffers as the receive side.
        let small = config(2048, 1024);
        assert_eq!(fill_target(&small, 1024), 512);
        // Jumbo frames in 16 KiB buffers: about one frame per buffer too.
        let mut jumbo = config(16384, 1024);
        jumbo.mtu = 9000;
        assert_eq!(fill_target(&jumbo, 1024), 512);
    }
}

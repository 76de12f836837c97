//! The `af_xdp` port: XDP sockets on any Linux interface.
//!
//! # Shape
//!
//! The port's UMEM **is** a Ferrite pool. It maps page-aligned anonymous memory (2 MiB huge
//! pages when the system has them), registers it as the UMEM of one XDP socket bound to one
//! queue of the interface, and owns the pool over it ([`Port::own_pools`] and
//! [`Port::tx_pools`] are that pool). Frames received land in pool buffers and are handed to
//! the caller without a copy; frames of this pool are transmitted without a copy; a caller
//! with a frame in another pool copies it once into a buffer from [`Port::alloc`].
//!
//! The kernel always leaves `XDP_PACKET_HEADROOM` (256) bytes in front of a received frame
//! within its UMEM chunk, while a Ferrite frame starts at byte 0 of its buffer. So the pool is
//! laid over the UMEM shifted by 256 bytes: pool buffer `i` starts at UMEM address
//! `i * chunk + 256`, exactly where the kernel writes chunk `i`'s frame. A frame may then be
//! at most `chunk - 256` bytes (1792 for 2 KiB buffers, plenty for a 1514-byte Ethernet
//! frame); the last 256 bytes of each pool buffer belong to the next chunk's headroom, which
//! this port's program never writes. The mapping has one spare page so that the last buffer
//! lies inside it. Address and handle convert as `idx = addr / chunk`.
//!
//! Rings: the fill ring is topped up in batches from the port's free list on every
//! `rx_burst`; the rx ring feeds `rx_burst`; `tx_burst` writes the tx ring and kicks the
//! kernel with `sendto(MSG_DONTWAIT)` only when the ring's need-wakeup flag asks for it
//! (`XDP_USE_NEED_WAKEUP`; in copy mode the kernel keeps that flag set, since copy-mode
//! transmit runs inside the `sendto`); `tx_done` drains the completion ring in batches and
//! kicks again while frames are still queued. A fill ring flagged need-wakeup is kicked with
//! `recvfrom(MSG_DONTWAIT)`.
//!
//! # The XDP program: written here, not taken from a crate
//!
//! Ferrite loads its own six-instruction redirect program ([`XdpProgram`]) with raw `bpf(2)`
//! calls and attaches it with `BPF_LINK_CREATE`. The maintained alternatives were weighed:
//! `libxdp-sys`/`xsk-rs` build the C libraries libxdp and libbpf (a C toolchain, clang and
//! kernel headers on every build machine) to load a program this small, and `aya` needs its
//! programs compiled for the BPF target by a separate toolchain. The program and the socket
//! set-up are ~400 lines of plain system calls here, readable next to the kernel's
//! `if_xdp.h`, with no build-time dependency. A link-based attachment is detached by the
//! kernel when the last descriptor closes, so a server killed with SIGKILL leaves nothing
//! behind and its restart attaches again (tested).
//!
//! # Queues
//!
//! A port serves one receive queue. Frames the NIC steers (RSS) to a queue without a bound
//! socket are passed to the kernel stack. Either open one port per queue, sharing the
//! program ([`AfXdpConfig::program`], [`AfXdpPort::program`]), or give the NIC one queue
//! (`ethtool -L <if> combined 1`). veth has one queue unless created with `numrxqueues`.
//!
//! # Modes
//!
//! [`AttachMode`] selects native (driver) or generic (skb) XDP; [`BindMode`] selects copy or
//! zero-copy sockets, or tries zero-copy first and falls back to copy with a warning. What
//! this kernel (6.18) does on veth, measured by this crate's tests: native and generic attach
//! both work and redirect into the socket; zero-copy bind is refused (`EOPNOTSUPP`, veth has
//! no zero-copy support), so veth runs in copy mode. Zero-copy needs a driver that supports
//! it (ixgbe, i40e, ice, mlx5, ...).
//!
//! # A Linux peer on veth and its offloads
//!
//! Frames from a physical wire are whole and carry complete checksums. A Linux peer on the
//! other end of a veth may hand the kernel frames that are not: TCP/UDP checksums left to
//! offload (`tx` offload, on by default) reach the socket incomplete, in native and generic
//! mode alike, and XDP offers no per-frame flag saying so. With
//! [`AfXdpConfig::partial_checksums`] (the default) the port recognises such a frame by its
//! checksum field, which then holds the pseudo-header sum alone (what Linux leaves for the
//! device), and marks it partial ([`offload::FrameMeta`]): the switch completes it for a
//! destination that needs it complete, an app's stack takes it as it is. The chance that a
//! complete checksum has that value is 1 in 65536, and completing a correct checksum leaves
//! it unchanged. Without it, run such a peer with `ethtool -K <peer> tx off`.
//!
//! On transmit, an interface with TSO gets TCP segments larger than a chunk whole, with their
//! segment size, through a send-only `AF_PACKET` socket beside the XDP socket (XDP carries no
//! segmentation metadata); the port then takes every frame as it is ([`crate::TxOffloads::ALL`])
//! and transmits from granted pools, copying small frames into a chunk (checksum completed)
//! and handing their handles back at once. On receive, segmentation offload is handled by the
//! kernel in native mode (attaching
//! the program turns the peer's TSO off, so frames arrive MTU-sized); in generic mode the
//! peer must also run with `tso off gso off`, else its super-frames exceed a buffer and are
//! dropped (counted in the kernel's `rx_dropped`). Both facts were measured on this kernel by
//! sending a TCP SYN from a peer with offloads on.
//!
//! The [`Pool`] this port exposes lives in memory the port maps (its UMEM); the pool (and every
//! clone of it) keeps that memory mapped.

mod bpf;
mod ring;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use grant_pool::{BufHandle, BufIdx, Pool, PoolId, PoolLayout, PoolSet, PoolTable};

pub use bpf::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, XdpProgram};
use ring::XskRing;

use crate::linux::vnet::SuperSender;
use crate::linux::{self, CtlSocket, Mmap, OpError};
use crate::{Frame, LinkState, Mac, MacHeader, Port, PortStats, TxOffloads};

/// Bytes the kernel leaves in front of every received frame (`XDP_PACKET_HEADROOM`).
pub const XDP_HEADROOM: usize = 256;

/// Errors opening an `af_xdp` port.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    /// No interface by that name in this network namespace.
    #[error("interface {0:?} not found in this network namespace (check `ip link`)")]
    InterfaceNotFound(String),
    /// The process lacks a capability.
    #[error(
        "permission denied to {op}: AF_XDP needs CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF (or root)"
    )]
    Permission {
        /// What was refused.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interface refused the XDP attach mode.
    #[error("interface {ifname} does not support {mode} XDP ({source}); try AttachMode::Generic")]
    XdpUnsupported {
        /// Interface.
        ifname: String,
        /// Attach mode asked for.
        mode: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another XDP program is attached to the interface.
    #[error(
        "interface {ifname} already has an XDP program attached; detach it first \
         (`ip link set dev {ifname} xdp off`)"
    )]
    XdpBusy {
        /// Interface.
        ifname: String,
    },
    /// The driver cannot bind the socket in zero-copy mode.
    #[error(
        "interface {ifname} queue {queue} does not support AF_XDP zero-copy ({source}); \
         use BindMode::Copy or BindMode::Auto"
    )]
    ZeroCopyUnsupported {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// The queue does not exist on the interface, or is beyond the program's map.
    #[error(
        "queue {queue} is out of range (the interface or XSKMAP has {max} queues; 0 = unknown)"
    )]
    QueueOutOfRange {
        /// Queue asked for.
        queue: u32,
        /// Queues available.
        max: u32,
    },
    /// The verifier rejected the program (should not happen on a kernel with AF_XDP).
    #[error("the kernel rejected Ferrite's XDP program: {source}; verifier log: {log}")]
    ProgramRejected {
        /// The OS error.
        source: std::io::Error,
        /// Verifier output.
        log: String,
    },
    /// Another XDP socket is bound to the queue (or a killed one is still being torn down).
    #[error(
        "queue {queue} of {ifname} is bound by another XDP socket (still busy after {waited_ms} ms)"
    )]
    QueueBusy {
        /// Interface.
        ifname: String,
        /// Queue.
        queue: u32,
        /// How long binding was retried.
        waited_ms: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid af_xdp configuration: {0}")]
    Config(String),
    /// Another system call failed.
    #[error("{}: {}", .0.op, .0.source)]
    Sys(OpError),
}

impl From<OpError> for AfXdpError {
    fn from(e: OpError) -> Self {
        if e.is_permission() {
            AfXdpError::Permission {
                op: e.op,
                source: e.source,
            }
        } else {
            AfXdpError::Sys(e)
        }
    }
}

/// Where the XDP program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): fastest, needs driver support.
    Native,
    /// On socket buffers (`XDP_FLAGS_SKB_MODE`): works on every interface.
    Generic,
}

/// How the socket is bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    /// `XDP_COPY`: the kernel copies frames between its buffers and the UMEM.
    Copy,
    /// `XDP_ZEROCOPY`: the driver DMAs straight into the UMEM; an error where unsupported.
    ZeroCopy,
    /// Zero-copy if the driver supports it, else copy (logged).
    Auto,
}

/// Configuration of an [`AfXdpPort`].
#[derive(Debug, Clone)]
pub struct AfXdpConfig {
    /// Interface name.
    pub ifname: String,
    /// Queue id to bind.
    pub queue: u32,
    /// The id the port's pool (its UMEM) gets.
    pub pool_id: PoolId,
    /// Buffers in the UMEM.
    pub bufs: usize,
    /// Buffer (UMEM chunk) size: 2048 or 4096.
    pub buf_size: usize,
    /// Entries in each of the four rings (power of two, 64..=16384); halved until it is at
    /// most half of `bufs`.
    pub ring_size: u32,
    /// Program attach mode.
    pub attach: AttachMode,
    /// Socket bind mode.
    pub bind: BindMode,
    /// Use `XDP_USE_NEED_WAKEUP` (kick the kernel only when it asks).
    pub need_wakeup: bool,
    /// Try 2 MiB huge pages for the UMEM.
    pub hugepages: bool,
    /// Hold the interface in promiscuous mode while the port is open: the stations behind
    /// the switch (app domains) have MACs of their own, which a NIC would otherwise filter.
    pub promiscuous: bool,
    /// An already attached program to share (several queues of one interface); `None`
    /// attaches a fresh one.
    pub program: Option<Arc<XdpProgram>>,
    /// XSKMAP slots when a fresh program is attached.
    pub max_queues: u32,
    /// Mark partial the TCP/UDP checksums a veth peer left to offload (see the module docs).
    pub partial_checksums: bool,
}

impl AfXdpConfig {
    /// Defaults for queue 0 of `ifname`: 4096 buffers of 2 KiB, 2048-entry rings, native
    /// attach, zero-copy when available, need-wakeup on, huge pages when available.
    pub fn new(ifname: &str, pool_id: PoolId) -> Self {
        Self {
            ifname: ifname.to_owned(),
            queue: 0,
            pool_id,
            bufs: 4096,
            buf_size: 2048,
            ring_size: 2048,
            attach: AttachMode::Native,
            bind: BindMode::Auto,
            need_wakeup: true,
            hugepages: true,
            promiscuous: true,
            program: None,
            max_queues: 64,
            partial_checksums: true,
        }
    }
}

/// Kernel drop and error counters of one XDP socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpKernelStats {
    /// Frames dropped for reasons other than a full ring or empty fill ring.
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the tx ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the rx ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the tx ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// Who holds a buffer of the port's pool.
const FREE: u8 = 0;
const IN_FILL: u8 = 1;
const IN_TX: u8 = 2;
const CALLER: u8 = 3;
/// On the tx ring holding the port's copy of a granted pool's frame: free once sent.
const IN_TX_COPY: u8 = 4;

/// Fill ring refill batch.
const FILL_BATCH: u32 = 64;
/// How long opening a port waits for a queue or an interface's XDP hook still held by a
/// process that has just died.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// Time between attempts while waiting so.
const BUSY_STEP: std::time::Duration = std::time::Duration::from_millis(1);
/// Handles bounced back through `tx_done` (frames refused by `tx_burst`).
const BOUNCE_CAP: usize = 1024;

/// An XDP socket on one queue of one interface.
pub struct AfXdpPort {
    name: String,
    ifname: String,
    queue: u32,
    fill: XskRing,
    comp: XskRing,
    rx: XskRing,
    tx: XskRing,
    xsk: OwnedFd,
    program: Arc<XdpProgram>,
    ctl: CtlSocket,
    zero_copy: bool,
    need_wakeup: bool,
    partial_checksums: bool,
    partial: u64,
    pool: Pool,
    chunk: usize,
    chunk_shift: u32,
    max_frame: usize,
    free: Vec<u32>,
    state: Vec<u8>,
    bounce: Vec<BufHandle>,
    /// Sends frames too large for a chunk (TCP segments of up to 64 KiB) through the kernel
    /// when the interface does TSO; `None` when it does not.
    big: Option<SuperSender>,
    /// Other parties' pools this port copies frames out of ([`Port::grant_tx_pool`]).
    readable: PoolTable,
    /// The own pool and the granted ones.
    tx_set: PoolSet,
    /// A frame being put together (copied, its MAC header and checksum completed).
    scratch: Vec<u8>,
    stats: PortStats,
    kicks: u64,
    _promisc: Option<linux::PromiscGuard>,
    /// Whether huge pages back the UMEM (which the pool's memory handle keeps mapped).
    huge: bool,
}

impl std::fmt::Debug for AfXdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpPort")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .field("zero_copy", &self.zero_copy)
            .finish_non_exhaustive()
    }
}

fn ring_offsets_ok(size: u32) -> bool {
    size.is_power_of_two() && (64..=16384).contains(&size)
}

impl AfXdpPort {
    /// Opens the port: maps the UMEM, creates and binds the socket, attaches (or shares) the
    /// program and fills the fill ring. Runs in the calling thread's network namespace.
    pub fn open(cfg: AfXdpConfig) -> Result<Self, AfXdpError> {
        Self::prepare(cfg)?.activate()
    }

    /// Makes the port's UMEM (registered with a new XDP socket, so its pages are pinned) and
    /// rings and (when configured) holds the interface promiscuous, without attaching a
    /// program to the interface or binding the socket to its queue;
    /// [`PreparedAfXdp::activate`] does both.
    pub fn prepare(cfg: AfXdpConfig) -> Result<PreparedAfXdp, AfXdpError> {
        if cfg.buf_size != 2048 && cfg.buf_size != 4096 {
            return Err(AfXdpError::Config(format!(
                "buf_size {} must be 2048 or 4096 (UMEM chunk sizes)",
                cfg.buf_size
            )));
        }
        if !ring_offsets_ok(cfg.ring_size) {
            return Err(AfXdpError::Config(format!(
                "ring_size {} must be a power of two in 64..=16384",
                cfg.ring_size
            )));
        }
        if cfg.bufs < 128 {
            return Err(AfXdpError::Config(format!(
                "bufs {} must be at least 128 (a 64-entry fill ring plus frames in flight)",
                cfg.bufs
            )));
        }
        // The fill ring holds at most half the buffers, so the other half stays available
        // for frames the caller holds and for transmit: smaller pools get smaller rings.
        let mut cfg = cfg;
        while cfg.bufs < 2 * cfg.ring_size as usize {
            cfg.ring_size /= 2;
        }
        let layout = PoolLayout::new(cfg.buf_size, cfg.bufs)
            .map_err(|e| AfXdpError::Config(e.to_string()))?;
        let ifindex = linux::ifindex(&cfg.ifname)
            .ok_or_else(|| AfXdpError::InterfaceNotFound(cfg.ifname.clone()))?;
        let ctl = CtlSocket::new(&cfg.ifname)?;
        // Promiscuity is counted per holder: a spare's does not disturb the serving port's,
        // and taking it here spares the takeover a wait for the RTNL lock.
        let promisc = if cfg.promiscuous {
            Some(linux::PromiscGuard::new(ifindex)?)
        } else {
            None
        };

        // UMEM: count chunks, plus a spare page so the shifted last pool buffer is mapped.
        let umem_len = cfg.buf_size * cfg.bufs;
        let umem = Mmap::anonymous(umem_len + 4096, cfg.hugepages)?;
        let (huge, umem_addr) = (umem.is_huge(), umem.as_ptr() as u64);
        let pool_mem = umem
            .into_memory()
            .sub(XDP_HEADROOM, umem_len)
            .map_err(|e| AfXdpError::Config(e.to_string()))?;
        let pool = Pool::new(cfg.pool_id, layout, pool_mem)
            .map_err(|e| AfXdpError::Config(e.to_string()))?;

        // SAFETY: plain socket(2); checked below.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        let xsk = linux::owned_fd(fd as i64, "socket(AF_XDP)")?;
        let raw = xsk.as_raw_fd();

        let reg = libc::xdp_umem_reg {
            addr: umem_addr,
            len: umem_len as u64,
            chunk_size: cfg.buf_size as u32,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        linux::setsockopt(
            raw,
            libc::SOL_XDP,
            libc::XDP_UMEM_REG,
            &reg,
            "setsockopt(XDP_UMEM_REG)",
        )?;
        let n = cfg.ring_size;
        for (opt, what) in [
            (libc::XDP_UMEM_FILL_RING, "setsockopt(XDP_UMEM_FILL_RING)"),
            (
                libc::XDP_UMEM_COMPLETION_RING,
                "setsockopt(XDP_UMEM_COMPLETION_RING)",
            ),
            (libc::XDP_RX_RING, "setsockopt(XDP_RX_RING)"),
            (libc::XDP_TX_RING, "setsockopt(XDP_TX_RING)"),
        ] {
            linux::setsockopt(raw, libc::SOL_XDP, opt, &n, what)?;
        }
        // SAFETY: xdp_mmap_offsets is plain integers; all-zero is a valid value.
        let mut off: libc::xdp_mmap_offsets = unsafe { core::mem::zeroed() };
        let got = linux::getsockopt(
            raw,
            libc::SOL_XDP,
            libc::XDP_MMAP_OFFSETS,
            &mut off,
            "getsockopt(XDP_MMAP_OFFSETS)",
        )?;
        if got != core::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(AfXdpError::Config(
                "kernel too old: XDP_MMAP_OFFSETS lacks ring flags (need Linux 5.4+)".into(),
            ));
        }
        let map_ring = |o: &libc::xdp_ring_offset, pgoff: i64, dsize: usize, what| {
            let len = o.desc as usize + n as usize * dsize;
            let m = Mmap::socket_ring(raw, len, pgoff, what)?;
            XskRing::new(m, o, n, dsize).ok_or_else(|| {
                AfXdpError::Config(format!("{what}: ring offsets do not fit the mapping"))
            })
        };
        let fill = map_ring(
            &off.fr,
            libc::XDP_UMEM_PGOFF_FILL_RING as i64,
            8,
            "mmap(fill ring)",
        )?;
        let comp = map_ring(
            &off.cr,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as i64,
            8,
            "mmap(completion ring)",
        )?;
        let rx = map_ring(&off.rx, libc::XDP_PGOFF_RX_RING, 16, "mmap(rx ring)")?;
        let tx = map_ring(&off.tx, libc::XDP_PGOFF_TX_RING, 16, "mmap(tx ring)")?;
        Ok(PreparedAfXdp {
            cfg,
            ctl,
            promisc,
            huge,
            pool,
            xsk,
            fill,
            comp,
            rx,
            tx,
        })
    }
}

/// A port with its UMEM and rings made but no program attached and its socket not bound:
/// it receives and sends nothing. A warm spare server prepares its ports so, while another
/// process serves the interface, and activates them when it takes over.
pub struct PreparedAfXdp {
    cfg: AfXdpConfig,
    ctl: CtlSocket,
    promisc: Option<linux::PromiscGuard>,
    huge: bool,
    pool: Pool,
    xsk: OwnedFd,
    fill: XskRing,
    comp: XskRing,
    rx: XskRing,
    tx: XskRing,
}

impl std::fmt::Debug for PreparedAfXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAfXdp")
            .field("ifname", &self.cfg.ifname)
            .field("queue", &self.cfg.queue)
            .finish_non_exhaustive()
    }
}

impl PreparedAfXdp {
    /// Attaches the program (or joins the shared one) and binds the socket to its queue
    /// (the interface looked up again: it may have been recreated); waits a bounded time
    /// for a program and a queue that a process killed a moment ago still holds.
    pub fn activate(self) -> Result<AfXdpPort, AfXdpError> {
        let Self {
            cfg,
            ctl,
            promisc,
            huge,
            pool,
            xsk,
            fill,
            comp,
            rx,
            tx,
        } = self;
        let ifindex = linux::ifindex(&cfg.ifname)
            .ok_or_else(|| AfXdpError::InterfaceNotFound(cfg.ifname.clone()))?;
        let raw = xsk.as_raw_fd();

        // Program first (the socket is bound to a device with XDP set up).
        let program = match &cfg.program {
            Some(p) => {
                if p.ifindex() != ifindex {
                    return Err(AfXdpError::Config(format!(
                        "the shared program is attached to {}, not {}",
                        p.ifname(),
                        cfg.ifname
                    )));
                }
                p.clone()
            }
            None => {
                let flags = match cfg.attach {
                    AttachMode::Native => XDP_FLAGS_DRV_MODE,
                    AttachMode::Generic => XDP_FLAGS_SKB_MODE,
                };
                Arc::new(XdpProgram::attach(
                    &cfg.ifname,
                    ifindex,
                    flags,
                    cfg.max_queues,
                )?)
            }
        };

        let bind = |flags: u16| {
            let sa = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags
                    | if cfg.need_wakeup {
                        libc::XDP_USE_NEED_WAKEUP
                    } else {
                        0
                    },
                sxdp_ifindex: ifindex,
                sxdp_queue_id: cfg.queue,
                sxdp_shared_umem_fd: 0,
            };
            // SAFETY: `sa` is a valid sockaddr_xdp and its size is passed.
            let r = unsafe {
                libc::bind(
                    raw,
                    (&sa as *const libc::sockaddr_xdp).cast(),
                    core::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r < 0 {
                Err(linux::os_err("bind(AF_XDP)"))
            } else {
                Ok(())
            }
        };
        // A socket of a killed process releases its queue while the kernel tears that
        // process down: a restarted server retries EBUSY for a bounded time.
        let t0 = std::time::Instant::now();
        let bind = |flags: u16| loop {
            match bind(flags) {
                Err(e) if e.errno() == Some(libc::EBUSY) && t0.elapsed() < BUSY_WAIT => {
                    std::thread::sleep(BUSY_STEP);
                }
                r => return r,
            }
        };
        let zc_err = |e: OpError| AfXdpError::ZeroCopyUnsupported {
            ifname: cfg.ifname.clone(),
            queue: cfg.queue,
            source: e.source,
        };
        let queue_err = |e: OpError| match e.errno() {
            Some(libc::EBUSY) => AfXdpError::QueueBusy {
                ifname: cfg.ifname.clone(),
                queue: cfg.queue,
                waited_ms: t0.elapsed().as_millis() as u64,
            },
            Some(libc::EINVAL) => AfXdpError::QueueOutOfRange {
                queue: cfg.queue,
                max: ctl.rx_queues(),
            },
            _ => AfXdpError::from(e),
        };
        let zero_copy = match cfg.bind {
            BindMode::Copy => {
                bind(libc::XDP_COPY).map_err(queue_err)?;
                false
            }
            BindMode::ZeroCopy => {
                bind(libc::XDP_ZEROCOPY).map_err(|e| match e.errno() {
                    Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT) => zc_err(e),
                    _ => queue_err(e),
                })?;
                true
            }
            BindMode::Auto => match bind(libc::XDP_ZEROCOPY) {
                Ok(()) => true,
                Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT)) => {
                    tracing::warn!(
                        ifname = %cfg.ifname,
                        queue = cfg.queue,
                        "AF_XDP zero-copy not supported by the driver ({}); using copy mode",
                        e.source
                    );
                    bind(libc::XDP_COPY).map_err(queue_err)?;
                    false
                }
                Err(e) => return Err(queue_err(e)),
            },
        };
        program.insert(cfg.queue, raw)?;
        // XDP sockets carry no segmentation metadata: with TSO on the interface, a packet
        // socket next to this one sends the super-frames whole.
        let big = if ctl.tso() {
            match SuperSender::new(true).and_then(|b| b.bind(ifindex).map(|()| b)) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(
                        ifname = %cfg.ifname,
                        "no packet socket for TCP segments larger than a chunk ({}: {}); \
                         the switch cuts them",
                        e.op,
                        e.source
                    );
                    None
                }
            }
        } else {
            None
        };

        let mut port = AfXdpPort {
            name: format!("af_xdp:{}:{}", cfg.ifname, cfg.queue),
            ifname: cfg.ifname.clone(),
            queue: cfg.queue,
            fill,
            comp,
            rx,
            tx,
            xsk,
            program,
            ctl,
            zero_copy,
            need_wakeup: cfg.need_wakeup,
            partial_checksums: cfg.partial_checksums,
            partial: 0,
            pool,
            chunk: cfg.buf_size,
            chunk_shift: cfg.buf_size.trailing_zeros(),
            max_frame: cfg.buf_size - XDP_HEADROOM,
            free: (0..cfg.bufs as u32).rev().collect(),
            state: vec![FREE; cfg.bufs],
            bounce: Vec::with_capacity(BOUNCE_CAP),
            big,
            readable: PoolTable::new(),
            tx_set: PoolSet::of(cfg.pool_id),
            scratch: Vec::with_capacity(cfg.buf_size),
            stats: PortStats::default(),
            kicks: 0,
            _promisc: promisc,
            huge,
        };
        port.refill();
        if let Ok(mtu) = port.ctl.mtu()
            && mtu as usize + 18 > port.max_frame
        {
            tracing::warn!(
                ifname = %port.ifname,
                mtu,
                max_frame = port.max_frame,
                "interface MTU allows frames larger than a buffer holds; they will be dropped \
                 (use buf_size 4096 or lower the MTU)"
            );
        }
        Ok(port)
    }
}

impl AfXdpPort {
    /// The port's pool (its UMEM), to register with the switch.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether the socket is bound in zero-copy mode.
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Whether the UMEM is backed by huge pages.
    pub fn is_hugepage_backed(&self) -> bool {
        self.huge
    }

    /// The attached program, to share with ports on other queues of the interface.
    pub fn program(&self) -> Arc<XdpProgram> {
        self.program.clone()
    }

    /// Largest frame this port can receive or send (buffer size minus the XDP headroom).
    pub fn max_frame_len(&self) -> usize {
        self.max_frame
    }

    /// The kernel's drop and error counters for this socket.
    pub fn kernel_stats(&self) -> XdpKernelStats {
        // SAFETY: xdp_statistics is plain integers; all-zero is a valid value.
        let mut s: libc::xdp_statistics = unsafe { core::mem::zeroed() };
        match linux::getsockopt(
            self.xsk.as_raw_fd(),
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            &mut s,
            "getsockopt(XDP_STATISTICS)",
        ) {
            Ok(_) => XdpKernelStats {
                rx_dropped: s.rx_dropped,
                rx_invalid_descs: s.rx_invalid_descs,
                tx_invalid_descs: s.tx_invalid_descs,
                rx_ring_full: s.rx_ring_full,
                rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
                tx_ring_empty_descs: s.tx_ring_empty_descs,
            },
            Err(_) => XdpKernelStats::default(),
        }
    }

    /// The socket's descriptor: readable (`POLLIN`) when received frames are waiting, so an
    /// idle poller can sleep in `poll`/`epoll` on it.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.xsk.as_fd()
    }

    /// Sleeps until a received frame is waiting or `timeout` passes; returns whether one is.
    pub fn wait_rx(&mut self, timeout: std::time::Duration) -> bool {
        self.refill();
        linux::wait_readable(self.xsk.as_raw_fd(), timeout)
    }

    /// Received frames the port marked partial (the sender left the checksum to offload).
    pub fn checksums_partial(&self) -> u64 {
        self.partial
    }

    /// System calls made to wake the kernel so far (tx and fill kicks).
    pub fn kicks(&self) -> u64 {
        self.kicks
    }

    #[inline]
    fn handle(&self, idx: u32) -> BufHandle {
        // idx < bufs <= MAX_BUFS was checked by every caller, so this cannot fail; fall back
        // to the raw encoding to stay panic-free.
        BufHandle::new(self.pool.id(), BufIdx(idx))
            .unwrap_or(BufHandle::from_raw(((self.pool.id().0 as u32) << 24) | idx))
    }

    /// The metadata of the frame in buffer `idx`: partial when the sender left its TCP/UDP
    /// checksum to offload (the field holds the pseudo-header sum alone).
    #[inline]
    fn checksum_state(&mut self, idx: u32, len: usize) -> offload::FrameMeta {
        let buf = self.pool.region();
        let base = self.pool.offset(BufIdx(idx));
        let mut head = [0u8; 118];
        let h = &mut head[..len.min(118)];
        if buf.read(base, h).is_ok() && offload::csum::holds_pseudo_header_sum(h, len) {
            self.partial += 1;
            offload::FrameMeta::partial(0)
        } else {
            offload::FrameMeta::NONE
        }
    }

    /// Moves free buffers into the fill ring. The ring's consumer index is re-read only when
    /// the cached view has less than a batch of room, so refills come in batches.
    #[inline]
    fn refill(&mut self) {
        let avail = self.free.len().min(self.fill.size() as usize) as u32;
        if avail == 0 {
            return;
        }
        let room = self.fill.free(FILL_BATCH.min(avail)).min(avail);
        for i in 0..room {
            let Some(idx) = self.free.pop() else {
                self.fill.submit(i);
                return;
            };
            self.state[idx as usize] = IN_FILL;
            self.fill.put_addr(i, (idx as usize * self.chunk) as u64);
        }
        if room > 0 {
            self.fill.submit(room);
        }
    }

    /// Wakes the driver's receive path when the fill ring asks for it.
    #[inline]
    fn wake_rx(&mut self) {
        if self.need_wakeup && self.fill.needs_wakeup() {
            self.kicks += 1;
            // SAFETY: a zero-length non-blocking receive with no buffer and no address; it
            // only wakes the driver's receive path.
            unsafe {
                libc::recvfrom(
                    self.xsk.as_raw_fd(),
                    core::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    core::ptr::null_mut(),
                    core::ptr::null_mut(),
                )
            };
        }
    }

    /// Kicks the tx ring while the kernel asks for it and frames remain, bounded.
    #[inline]
    fn kick_tx(&mut self) {
        if self.need_wakeup && !self.tx.needs_wakeup() {
            return;
        }
        // Copy-mode transmit sends a bounded batch per call and says EAGAIN when frames
        // remain; a full completion ring also says EAGAIN. Kick again while a kick makes
        // progress, bounded by the ring size.
        let mut rounds = self.tx.size() / 16 + 2;
        let mut before = self.tx.pending();
        loop {
            self.kicks += 1;
            match linux::kick(self.xsk.as_raw_fd()) {
                Ok(()) => return,
                Err(libc::EAGAIN) | Err(libc::EBUSY) => {}
                Err(libc::ENOBUFS) | Err(libc::ENETDOWN) | Err(libc::ENXIO) => return,
                Err(_) => {
                    self.stats.errors += 1;
                    return;
                }
            }
            let after = self.tx.pending();
            rounds -= 1;
            if rounds == 0 || after == 0 || after >= before {
                return;
            }
            before = after;
        }
    }

    /// `tx_burst`, and with `macs` `tx_burst_with_macs`. A frame of the own pool goes on the
    /// tx ring as it is; one of a granted pool is copied into a free chunk, or, too large for
    /// a chunk, sent through the packet socket (after the ring's frames, kicked first), its
    /// handle handed back by the next `tx_done`. A frame that gets a MAC header or has its
    /// checksum left partial is completed on the way.
    fn send(&mut self, frames: &[Frame], macs: Option<&[MacHeader]>) -> usize {
        let want = frames.len().min(self.tx.size() as usize) as u32;
        let mut room = self.tx.free(want).min(want);
        let mut queued = 0u32;
        let mut taken = 0usize;
        for (i, f) in frames.iter().enumerate() {
            let h = f.buf;
            let len = f.len as usize;
            let mac = macs.and_then(|m| m.get(i));
            let meta = offload::FrameMeta::from_bits(f.meta);
            let own = h.pool() == self.pool.id();
            let large = len > self.max_frame;
            if (!large && queued == room) || (!own && self.bounce.len() >= BOUNCE_CAP) {
                break;
            }
            taken += 1;
            let idx = if own {
                let idx = h.idx().0 as usize;
                if self.state.get(idx) != Some(&CALLER) {
                    // A handle the caller does not hold: refuse it, keep nothing.
                    self.stats.errors += 1;
                    continue;
                }
                if len == 0
                    || large
                    || !Self::finish(&self.pool, &mut self.scratch, idx, None, len, mac, meta)
                {
                    self.drop_frame(h);
                    continue;
                }
                idx
            } else {
                self.bounce.push(h);
                if large && queued > 0 {
                    // The ring's frames go first: they were before this one.
                    self.tx.submit(queued);
                    self.kick_tx();
                    room -= queued;
                    queued = 0;
                }
                let Some(src) = self.readable.buf(h).filter(|s| len >= 14 && len <= s.len()) else {
                    self.stats.tx_dropped += 1;
                    self.stats.errors += 1;
                    continue;
                };
                if large {
                    let sent = self
                        .big
                        .as_ref()
                        .is_some_and(|b| b.send(&src, len, mac, meta));
                    if sent {
                        self.stats.tx_packets += 1;
                        self.stats.tx_bytes += len as u64;
                    } else {
                        self.stats.tx_dropped += 1;
                    }
                    continue;
                }
                let Some(idx) = self.free.pop() else {
                    self.stats.tx_dropped += 1;
                    continue;
                };
                let idx = idx as usize;
                self.state[idx] = CALLER;
                if !Self::finish(
                    &self.pool,
                    &mut self.scratch,
                    idx,
                    Some(&src),
                    len,
                    mac,
                    meta,
                ) {
                    self.state[idx] = FREE;
                    self.free.push(idx as u32);
                    self.stats.tx_dropped += 1;
                    self.stats.errors += 1;
                    continue;
                }
                self.state[idx] = IN_TX_COPY;
                idx
            };
            if self.state[idx] == CALLER {
                self.state[idx] = IN_TX;
            }
            let addr = (idx * self.chunk + XDP_HEADROOM) as u64;
            self.tx.put_desc(queued, addr, len as u32);
            queued += 1;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
        }
        if queued > 0 {
            self.tx.submit(queued);
            self.kick_tx();
        }
        taken
    }

    /// Makes chunk `idx` hold the `len`-byte frame to send: copied from `src` when given,
    /// `mac` over its first 12 bytes, its TCP/UDP checksum completed when `meta` says it is
    /// partial. Untouched (no copy) when there is nothing to do.
    fn finish(
        pool: &Pool,
        scratch: &mut Vec<u8>,
        idx: usize,
        src: Option<&grant_pool::Region<'_>>,
        len: usize,
        mac: Option<&MacHeader>,
        meta: offload::FrameMeta,
    ) -> bool {
        let buf = pool.region();
        let base = pool.offset(BufIdx(idx as u32));
        if src.is_none() && mac.is_none() && !meta.is_partial() {
            return true;
        }
        let from = src.map_or((&buf, base), |s| (s, 0));
        if !meta.is_partial() {
            // Straight into the chunk, then the header over it.
            return buf.copy_from(base, from.0, from.1, len).is_ok()
                && mac.is_none_or(|m| buf.write(base, m).is_ok());
        }
        scratch.resize(len, 0);
        let f = &mut scratch[..len];
        if from.0.read(from.1, f).is_err() {
            return false;
        }
        if let Some(m) = mac {
            f[..12].copy_from_slice(m);
        }
        offload::csum::complete_l4_checksum(f);
        buf.write(base, f).is_ok()
    }

    /// Hands an own-pool frame that cannot be sent back through `tx_done`, counted.
    fn drop_frame(&mut self, h: BufHandle) {
        self.stats.tx_dropped += 1;
        self.stats.errors += 1;
        if self.bounce.len() < BOUNCE_CAP {
            self.bounce.push(h);
        } else if !self.give_back(h) {
            self.stats.errors += 1;
        }
    }

    /// Takes back one buffer of the pool, if the caller held it.
    #[inline]
    fn give_back(&mut self, h: BufHandle) -> bool {
        if h.pool() != self.pool.id() {
            return false;
        }
        let idx = h.idx().0 as usize;
        match self.state.get(idx) {
            Some(&CALLER) => {
                self.state[idx] = FREE;
                self.free.push(idx as u32);
                true
            }
            _ => false,
        }
    }
}

impl Port for AfXdpPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.ctl.mac().unwrap_or([0; 6])
    }

    fn link(&self) -> LinkState {
        self.ctl.link_state()
    }

    fn stats(&self) -> PortStats {
        let k = self.kernel_stats();
        let mut s = self.stats;
        s.rx_dropped += k.rx_dropped + k.rx_ring_full;
        s.errors += k.rx_invalid_descs + k.tx_invalid_descs;
        s
    }

    fn tx_pools(&self) -> PoolSet {
        self.tx_set
    }

    /// Everything, when a packet socket can send super-frames; else plain frames only.
    fn tx_offloads(&self) -> TxOffloads {
        if self.big.is_some() {
            TxOffloads::ALL
        } else {
            TxOffloads::NONE
        }
    }

    /// Granted when a packet socket can send super-frames (the port must then take every
    /// frame as it is): small frames are copied into a chunk, large ones go to the kernel.
    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        if self.big.is_none() || pool.id() == self.pool.id() {
            return false;
        }
        self.readable.insert(pool.clone());
        self.tx_set.insert(pool.id());
        true
    }

    /// Frames are copied out during `tx_burst`: nothing reads the pool afterwards.
    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        if pool != self.pool.id() {
            self.readable.remove(pool);
            self.tx_set.remove(pool);
        }
        true
    }

    fn own_pools(&self) -> PoolSet {
        PoolSet::of(self.pool.id())
    }

    fn pools(&self) -> &[Pool] {
        core::slice::from_ref(&self.pool)
    }

    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        self.refill();
        let n = self.rx.ready(out.len().min(u32::MAX as usize) as u32);
        if n == 0 {
            self.wake_rx();
            return 0;
        }
        let mut got = 0;
        for i in 0..n {
            let d = self.rx.desc(i);
            // chunk is a power of two: shift and mask, no division on the burst path.
            let idx = d.addr >> self.chunk_shift;
            let off = (d.addr & (self.chunk as u64 - 1)) as usize;
            let len = d.len as usize;
            if idx >= self.state.len() as u64 || self.state[idx as usize] != IN_FILL {
                // Not a buffer we gave the kernel: never touch it.
                self.stats.errors += 1;
                continue;
            }
            let idx = idx as u32;
            // The frame should start where pool buffer `idx` starts; anything else is moved
            // there if it fits, else dropped.
            let ok = if off == XDP_HEADROOM {
                len <= self.max_frame
            } else if off > XDP_HEADROOM && off + len <= self.chunk {
                let buf = self.pool.region();
                let base = self.pool.offset(BufIdx(idx));
                buf.copy_from(base, &buf, base + off - XDP_HEADROOM, len)
                    .is_ok()
            } else {
                false
            };
            if !ok || len == 0 {
                self.stats.errors += 1;
                self.state[idx as usize] = FREE;
                self.free.push(idx);
                continue;
            }
            let meta = if self.partial_checksums {
                self.checksum_state(idx, len)
            } else {
                offload::FrameMeta::NONE
            };
            self.state[idx as usize] = CALLER;
            out[got] = Frame {
                buf: self.handle(idx),
                len: len as u16,
                meta: meta.bits(),
            };
            got += 1;
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += len as u64;
        }
        self.rx.release(n);
        got
    }

    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.send(frames, None)
    }

    fn tx_burst_with_macs(&mut self, frames: &[Frame], macs: &[MacHeader]) -> usize {
        self.send(frames, Some(macs))
    }

    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        let mut got = 0;
        while got < out.len() {
            let Some(h) = self.bounce.pop() else { break };
            out[got] = h;
            got += 1;
        }
        let n = self
            .comp
            .ready((out.len() - got).min(u32::MAX as usize) as u32);
        for i in 0..n {
            let addr = self.comp.addr(i);
            let idx = addr >> self.chunk_shift;
            match self.state.get(idx as usize) {
                Some(&IN_TX) => {
                    self.state[idx as usize] = CALLER;
                    out[got] = self.handle(idx as u32);
                    got += 1;
                }
                Some(&IN_TX_COPY) => {
                    self.state[idx as usize] = FREE;
                    self.free.push(idx as u32);
                }
                _ => self.stats.errors += 1,
            }
        }
        if n > 0 {
            self.comp.release(n);
        }
        // Frames still queued (copy mode sends a batch per kick): kick again.
        if self.tx.pending() > 0 {
            self.kick_tx();
        }
        got
    }

    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        let mut got = 0;
        while got < out.len() {
            let Some(idx) = self.free.pop() else { break };
            self.state[idx as usize] = CALLER;
            out[got] = self.handle(idx);
            got += 1;
        }
        got
    }

    fn reclaim(&mut self, bufs: &[BufHandle]) {
        for &h in bufs {
            if !self.give_back(h) {
                self.stats.errors += 1;
            }
        }
    }

    fn prepare_wait(&mut self) -> bool {
        // The kernel can deliver only into buffers on the fill ring; with need-wakeup it
        // also waits for a kick before it looks at the ring again.
        self.refill();
        self.wake_rx();
        self.rx.ready(1) > 0
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.xsk.as_fd())
    }
}

impl Drop for AfXdpPort {
    fn drop(&mut self) {
        // The socket's close also clears the slot; doing it first stops redirects at once.
        self.program.remove(self.queue);
        tracing::debug!(ifname = %self.ifname, queue = self.queue, "af_xdp port closed");
    }
}

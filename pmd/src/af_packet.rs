//! The `af_packet` port: `PACKET_MMAP` rings on any Linux interface, the fallback where XDP
//! is not available.
//!
//! # Shape and copies
//!
//! One `AF_PACKET` socket bound to the interface for every protocol (`ETH_P_ALL`), non-
//! blocking, in promiscuous mode (`PACKET_MR_PROMISC`, dropped by the kernel when the socket
//! closes), with a receive and a transmit ring (`PACKET_RX_RING`, `PACKET_TX_RING`) mapped
//! into the process. Transmit bypasses the qdisc layer (`PACKET_QDISC_BYPASS`) and the
//! socket ignores its own outgoing frames (`PACKET_IGNORE_OUTGOING`).
//!
//! The port owns a normal pool of anonymous memory, and:
//!
//! * receive, by default, copies each frame once, from the ring frame into a pool buffer (the
//!   kernel's copy into the ring is the other, unavoidable one), and returns the ring frame at
//!   once. With [`AfPacketConfig::ring_pool`] the receive ring is a pool of its own instead
//!   and frames leave **in place**, as handles to ring frames: the switch copies each once,
//!   straight from the kernel's ring into its destination, and the port gives ring frames back
//!   to the kernel in ring order as their handles come back (a frame lent for long stalls the
//!   ring behind it, so the server lends them only to its own copy-making switch). With
//!   [`AfPacketConfig::rx_frame_size`] at 64 KiB a GSO frame too goes through the ring, written
//!   by the kernel in the softirq of whichever core sent it rather than read by a `recvmsg` on
//!   the polling core, at the cost of a ring frame per small frame;
//! * transmit copies each frame once, from whatever pool it is in into a ring frame, and
//!   kicks the kernel with one `sendto(MSG_DONTWAIT)` per burst. The port can read more
//!   pools than its own ([`Port::grant_tx_pool`], or [`AfPacketPort::add_readable_pool`]
//!   before the port is boxed); they are all in
//!   [`Port::tx_pools`], so the switch hands an app's frame straight to the port and the
//!   frame is copied exactly once on its way out, with no staging copy into the port's pool.
//!   The source buffer is free again when `tx_burst` returns; `tx_done` hands it back.
//!
//! # Ring format
//!
//! `TPACKET_V2` for both rings. V3's block-based receive ring amortises better under load,
//! but the kernel hands a block to user space only when it is full or its retire timer (at
//! least a millisecond) fires, which would put a millisecond into every ping and TCP
//! round-trip at low rates. V2 hands over each frame as soon as it is written, and a burst of
//! V2 frames is read with one status load per frame, so at the rates a software interface
//! reaches the difference in cost is small.
//!
//! VLAN tags the kernel moved out of the frame (receive VLAN offload) are put back during the
//! receive copy. A frame whose TCP/UDP checksum the sending host left to offload (a Linux
//! peer on veth with `tx` offload on) goes on with its checksum partial, as its virtio header
//! says, and is completed only for a destination that needs it.
//!
//! # Offloads and super-frames
//!
//! The socket speaks `PACKET_VNET_HDR`: a `virtio_net_hdr` sits before every frame both
//! ways, saying whether its checksum is partial or verified and, for a frame larger than the
//! MTU, its segment size. Received frames carry that in their [`offload::FrameMeta`]; frames
//! sent with a partial checksum or a segment size go to the kernel so, and it (or the veth
//! peer, which takes them whole) completes and cuts them.
//!
//! The kernel hands a packet socket frames larger than the MTU when segmentation was left to
//! later: a veth peer with TSO/GSO on (Linux's default) sends TCP frames of up to 64 KiB,
//! and GRO merges segments received on a real NIC. The ring's frames stay 2 KiB (a ring of
//! 64 KiB frames would hold an eighth as many frames in the same memory); with
//! [`AfPacketConfig::super_frames`] (the default) the socket sets `PACKET_COPY_THRESH`, so
//! the kernel also queues a frame too large for a ring frame, whole, on the socket's receive
//! queue and flags its (truncated) ring frame `TP_STATUS_COPY`. The port then reads the whole
//! frame with one `recvmsg` straight into a buffer of its pool, whose buffers are 64 KiB for
//! that, and hands it on whole: the switch cuts it only for a destination that cannot take it
//! ([`crate::TxOffloads`]). A VLAN-tagged super-frame is dropped and counted (its tag is not
//! in the frame). Without super-frames every one is dropped; run the peer with `tso` and
//! `gso` off then (`ethtool -K <peer> tso off gso off`).
//!
//! A mapped transmit ring takes every `send` on its socket, so a frame too large for a ring
//! frame goes out through a second packet socket that only sends (bound with protocol 0, it
//! receives nothing), after the ring's pending frames, so that order is kept. The port takes
//! frames of up to 64 KiB whole when the interface has TCP segmentation offload on (veth by
//! default; the kernel drops, rather than cuts, a frame that bypasses the qdisc and would
//! need cutting), else the switch cuts them first.
//!
//! A packet socket sees frames alongside the kernel's own stack, it does not take them from
//! it: give the interface no IP addresses, or the kernel will answer ARP and ICMP for them
//! too. (The `af_xdp` port takes the frames of its queue away from the stack.)
//!
//! The [`Pool`] this port exposes lives in memory the port maps; the pool (and every clone of
//! it) keeps that memory mapped.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use grant_pool::{BufHandle, BufIdx, Memory, Pool, PoolId, PoolLayout, PoolSet, PoolTable};

use crate::linux::vnet::{HEAD, PACKET_VNET_HDR, SuperSender, VNET_LEN, Vnet};
use crate::linux::{self, CtlSocket, Mmap, OpError};
use crate::{Frame, LinkState, Mac, MacHeader, Port, PortStats};

/// Errors opening an `af_packet` port.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    /// No interface by that name in this network namespace.
    #[error("interface {0:?} not found in this network namespace (check `ip link`)")]
    InterfaceNotFound(String),
    /// The process lacks a capability.
    #[error(
        "permission denied to {op}: AF_PACKET needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode)"
    )]
    Permission {
        /// What was refused.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid af_packet configuration: {0}")]
    Config(String),
    /// Another system call failed.
    #[error("{}: {}", .0.op, .0.source)]
    Sys(OpError),
}

impl From<OpError> for AfPacketError {
    fn from(e: OpError) -> Self {
        if e.is_permission() {
            AfPacketError::Permission {
                op: e.op,
                source: e.source,
            }
        } else {
            AfPacketError::Sys(e)
        }
    }
}

/// Configuration of an [`AfPacketPort`].
#[derive(Debug, Clone)]
pub struct AfPacketConfig {
    /// Interface name.
    pub ifname: String,
    /// The id the port's own pool gets.
    pub pool_id: PoolId,
    /// Buffers in the port's pool.
    pub bufs: usize,
    /// Buffer size of the pool (a power of two, 256..=65536; 65536 with `super_frames`).
    pub buf_size: usize,
    /// Frames in the kernel receive ring (a multiple of 32).
    pub rx_frames: u32,
    /// Receive frames of up to 64 KiB (GSO/GRO super-frames, through the socket's receive
    /// queue), whole, into 64 KiB buffers.
    pub super_frames: bool,
    /// Frames in the kernel transmit ring (a multiple of 32).
    pub tx_frames: u32,
    /// Bytes per receive ring frame: a power of two from 2048 to 65536. A frame larger
    /// than a ring frame less its headers is read from the socket's receive queue (with
    /// `super_frames`) or dropped.
    pub rx_frame_size: usize,
    /// Receive in place: the receive ring becomes the pool with this id and frames are
    /// handed out as handles to ring frames (see the module docs).
    pub ring_pool: Option<PoolId>,
    /// Put the interface in promiscuous mode while the port is open.
    pub promiscuous: bool,
    /// Bypass the qdisc layer on transmit.
    pub qdisc_bypass: bool,
}

impl AfPacketConfig {
    /// Defaults for `ifname`: a pool of 4096 buffers of 64 KiB (256 MiB reserved, committed
    /// only as frames touch it), 4096 receive and 1024 transmit ring frames, super-frames,
    /// promiscuous, qdisc bypass.
    pub fn new(ifname: &str, pool_id: PoolId) -> Self {
        Self {
            ifname: ifname.to_owned(),
            pool_id,
            bufs: 4096,
            buf_size: grant_pool::pool::MAX_BUF_SIZE,
            rx_frames: 4096,
            super_frames: true,
            tx_frames: 1024,
            rx_frame_size: FRAME_SIZE,
            ring_pool: None,
            promiscuous: true,
            qdisc_bypass: true,
        }
    }

    /// [`AfPacketConfig::new`] receiving in place: the receive ring is the pool `ring_pool`.
    pub fn in_place(ifname: &str, pool_id: PoolId, ring_pool: PoolId) -> Self {
        Self {
            ring_pool: Some(ring_pool),
            ..Self::new(ifname, pool_id)
        }
    }
}

/// Kernel counters of the socket (`PACKET_STATISTICS`, accumulated: the kernel resets them
/// on every read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketKernelStats {
    /// Frames the socket saw (delivered plus dropped).
    pub packets: u64,
    /// Frames dropped because the receive ring was full.
    pub drops: u64,
}

// linux/if_packet.h values used here.
const TPACKET_V2: i32 = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;
/// Offset of frame data in a V2 transmit frame: `TPACKET2_HDRLEN - sizeof(sockaddr_ll)`.
/// With `PACKET_VNET_HDR` the data is the `virtio_net_hdr`, then the frame.
const TX_DATA_OFF: usize = 32;
/// Offset of the frame in a transmit ring frame.
const TX_FRAME_OFF: usize = TX_DATA_OFF + VNET_LEN;
/// The largest frame a transmit ring frame holds.
const TX_RING_MAX: usize = FRAME_SIZE - TX_FRAME_OFF;
/// `sizeof(struct tpacket2_hdr)`.
const HDR_LEN: usize = 32;
/// Ring frame size: one Ethernet frame plus the V2 header and alignment.
const FRAME_SIZE: usize = 2048;
/// Frames per ring block (64 KiB blocks).
const FRAMES_PER_BLOCK: u32 = 32;
/// `TP_STATUS_COPY`: the frame was too large for a ring frame; the whole of it waits on the
/// socket's receive queue.
const TP_STATUS_COPY: u32 = 1 << 1;
/// `PACKET_COPY_THRESH`.
const PACKET_COPY_THRESH: i32 = 7;
/// Receive queue room asked for, for super-frames waiting to be read.
const SUPER_RCVBUF: i32 = 8 << 20;
/// Bytes of a ring frame before the frame data starts, at least (V2 header, address,
/// alignment).
const RX_DATA_OFF: usize = 66;
/// Where an Ethernet frame starts in a receive ring frame with the virtio header on: the V2
/// header and address aligned to 16 (80), plus the virtio header (90), less the Ethernet
/// header. The kernel puts every Ethernet frame there; the ring pool's buffers start there.
const RX_MAC_OFF: usize = 76;
/// Bytes per receive ring block.
const RX_BLOCK: usize = 64 * 1024;

/// A receive ring frame the port has read: lent out by handle, or done with and waiting for
/// the frames before it to be given back to the kernel too.
const SLOT_IDLE: u8 = 0;
const SLOT_LENT: u8 = 1;
const SLOT_BACK: u8 = 2;

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// `struct tpacket_stats`.
#[repr(C)]
#[derive(Default)]
struct TpacketStats {
    packets: u32,
    drops: u32,
}

/// Who holds a buffer of the port's own pool.
const FREE: u8 = 0;
const CALLER: u8 = 1;
const DONE: u8 = 2;

/// An `AF_PACKET` socket with mapped rings on one interface.
pub struct AfPacketPort {
    name: String,
    sock: OwnedFd,
    /// Sends the frames too large for a transmit ring frame (see the module docs).
    big: SuperSender,
    ctl: CtlSocket,
    /// The receive ring's frames, then the transmit ring's.
    rings: Memory,
    rx_frames: u32,
    rx_frame_size: usize,
    rx_per_block: u32,
    rx_block: usize,
    rx_ring_len: usize,
    tx_frames: u32,
    rx_head: u32,
    /// The oldest receive ring frame not yet given back to the kernel.
    rx_tail: u32,
    /// Ring frames read and not yet given back (from `rx_tail` on).
    rx_held: u32,
    /// `SLOT_*` per receive ring frame.
    rx_slot: Vec<u8>,
    /// The receive ring as a pool, when frames are lent in place.
    ring_pool: Option<Pool>,
    /// The port's own pool, then the ring pool if any.
    pools: Vec<Pool>,
    /// Read super-frames from the receive queue.
    super_frames: bool,
    /// What the port takes whole on transmit.
    offloads: crate::TxOffloads,
    tx_head: u32,
    kick_pending: bool,
    pool: Pool,
    readable: PoolTable,
    tx_set: PoolSet,
    free: Vec<u32>,
    state: Vec<u8>,
    done: Vec<BufHandle>,
    done_cap: usize,
    stats: PortStats,
    kernel: Cell<PacketKernelStats>,
}

impl std::fmt::Debug for AfPacketPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfPacketPort")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A port with its socket, rings and pool made but not yet bound to the interface: it
/// receives and sends nothing. A warm spare server prepares its ports so, while another
/// process serves the interface, and binds them when it takes over.
pub struct PreparedAfPacket {
    port: AfPacketPort,
    ifname: String,
    promiscuous: bool,
}

impl std::fmt::Debug for PreparedAfPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAfPacket")
            .field("ifname", &self.ifname)
            .finish_non_exhaustive()
    }
}

impl PreparedAfPacket {
    /// Binds the socket to its interface (looked up again: it may have been recreated):
    /// from now on it receives every frame there and may send.
    pub fn activate(self) -> Result<AfPacketPort, AfPacketError> {
        let ifindex = linux::ifindex(&self.ifname)
            .ok_or_else(|| AfPacketError::InterfaceNotFound(self.ifname.clone()))?;
        let raw = self.port.sock.as_raw_fd();
        linux::bind_packet(raw, ifindex, libc::ETH_P_ALL as u16, "bind(AF_PACKET)")?;
        self.port.big.bind(ifindex)?;
        if self.promiscuous {
            linux::add_promisc_membership(raw, ifindex)?;
        }
        Ok(self.port)
    }
}

impl AfPacketPort {
    /// Opens the port on `cfg.ifname` in the calling thread's network namespace.
    pub fn open(cfg: AfPacketConfig) -> Result<Self, AfPacketError> {
        Self::prepare(cfg)?.activate()
    }

    /// Makes the port's socket, rings and pool without binding it to the interface (which
    /// must exist); [`PreparedAfPacket::activate`] binds it.
    pub fn prepare(cfg: AfPacketConfig) -> Result<PreparedAfPacket, AfPacketError> {
        let layout = PoolLayout::new(cfg.buf_size, cfg.bufs)
            .map_err(|e| AfPacketError::Config(e.to_string()))?;
        if cfg.super_frames && cfg.buf_size < grant_pool::pool::MAX_BUF_SIZE {
            return Err(AfPacketError::Config(format!(
                "super_frames needs buffers of {} bytes (buf_size is {})",
                grant_pool::pool::MAX_BUF_SIZE,
                cfg.buf_size
            )));
        }
        let rx_frame_size = cfg.rx_frame_size;
        if !rx_frame_size.is_power_of_two() || !(FRAME_SIZE..=RX_BLOCK).contains(&rx_frame_size) {
            return Err(AfPacketError::Config(format!(
                "rx_frame_size {rx_frame_size} must be a power of two from {FRAME_SIZE} to {RX_BLOCK}"
            )));
        }
        // Whole frames per block: ring frame `i` is then `i * rx_frame_size` into the ring,
        // which a pool's buffers need.
        let rx_per_block = (RX_BLOCK / rx_frame_size) as u32;
        if cfg.ring_pool == Some(cfg.pool_id) {
            return Err(AfPacketError::Config(format!(
                "ring_pool must differ from pool_id ({})",
                cfg.pool_id.0
            )));
        }
        for (what, n, per) in [
            ("rx_frames", cfg.rx_frames, rx_per_block),
            ("tx_frames", cfg.tx_frames, FRAMES_PER_BLOCK),
        ] {
            if n == 0 || n % per != 0 || n > 1 << 20 {
                return Err(AfPacketError::Config(format!(
                    "{what} {n} must be a non-zero multiple of {per} up to 2^20"
                )));
            }
        }
        if linux::ifindex(&cfg.ifname).is_none() {
            return Err(AfPacketError::InterfaceNotFound(cfg.ifname.clone()));
        }
        let ctl = CtlSocket::new(&cfg.ifname)?;

        // Protocol 0 until the rings exist, so nothing queues on the socket before that.
        // SAFETY: plain socket(2); checked below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let sock = linux::owned_fd(fd as i64, "socket(AF_PACKET)")?;
        let raw = sock.as_raw_fd();
        let sol = libc::SOL_PACKET;
        let one: i32 = 1;
        // Before the rings: the kernel refuses it once they exist.
        linux::setsockopt(
            raw,
            sol,
            PACKET_VNET_HDR,
            &one,
            "setsockopt(PACKET_VNET_HDR)",
        )?;
        let big = SuperSender::new(cfg.qdisc_bypass)?;
        linux::setsockopt(
            raw,
            sol,
            libc::PACKET_VERSION,
            &TPACKET_V2,
            "setsockopt(PACKET_VERSION, TPACKET_V2)",
        )?;
        if cfg.qdisc_bypass {
            linux::setsockopt(
                raw,
                sol,
                libc::PACKET_QDISC_BYPASS,
                &one,
                "setsockopt(PACKET_QDISC_BYPASS)",
            )?;
        }
        // Older kernels lack these two; both only refine behaviour.
        let _ = linux::setsockopt(
            raw,
            sol,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
            "setsockopt(PACKET_IGNORE_OUTGOING)",
        );
        let _ = linux::setsockopt(raw, sol, libc::PACKET_LOSS, &one, "setsockopt(PACKET_LOSS)");
        if cfg.super_frames {
            linux::setsockopt(
                raw,
                sol,
                PACKET_COPY_THRESH,
                &one,
                "setsockopt(PACKET_COPY_THRESH)",
            )?;
            // Beyond rmem_max only with CAP_NET_ADMIN; the plain request is the fallback.
            if linux::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &SUPER_RCVBUF,
                "setsockopt(SO_RCVBUFFORCE)",
            )
            .is_err()
            {
                let _ = linux::setsockopt(
                    raw,
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUF,
                    &SUPER_RCVBUF,
                    "setsockopt(SO_RCVBUF)",
                );
            }
        }
        let req = |frames: u32, size: usize, per: u32| TpacketReq {
            block_size: size as u32 * per,
            block_nr: frames / per,
            frame_size: size as u32,
            frame_nr: frames,
        };
        linux::setsockopt(
            raw,
            sol,
            libc::PACKET_RX_RING,
            &req(cfg.rx_frames, rx_frame_size, rx_per_block),
            "setsockopt(PACKET_RX_RING)",
        )?;
        linux::setsockopt(
            raw,
            sol,
            libc::PACKET_TX_RING,
            &req(cfg.tx_frames, FRAME_SIZE, FRAMES_PER_BLOCK),
            "setsockopt(PACKET_TX_RING)",
        )?;
        // The kernel maps the receive ring's blocks first, then the transmit ring's, each
        // block rounded up to whole pages.
        let page = 4096;
        let rx_block = (rx_frame_size * rx_per_block as usize).div_ceil(page) * page;
        let rx_ring_len = rx_block * (cfg.rx_frames / rx_per_block) as usize;
        let len = rx_ring_len + cfg.tx_frames as usize * FRAME_SIZE;
        let rings =
            Mmap::socket_ring(raw, len, 0, "mmap(PACKET_RX_RING + PACKET_TX_RING)")?.into_memory();

        // 64 KiB buffers hold MTU-sized frames most of the time: commit pages as touched.
        let pool_mem = if cfg.buf_size > 4096 {
            Mmap::anonymous_lazy(layout.bytes())?
        } else {
            Mmap::anonymous(layout.bytes(), false)?
        };
        let pool = Pool::new(cfg.pool_id, layout, pool_mem.into_memory())
            .map_err(|e| AfPacketError::Config(e.to_string()))?;
        // Buffer `i` of the ring pool is ring frame `i` from where the kernel puts its
        // Ethernet frame on; the last one runs RX_MAC_OFF bytes into the transmit ring, past
        // any frame the kernel writes (at most rx_frame_size - RX_MAC_OFF bytes).
        let ring_pool = match cfg.ring_pool {
            Some(id) => Some(
                PoolLayout::new(rx_frame_size, cfg.rx_frames as usize)
                    .and_then(|l| {
                        let mem = rings.sub(RX_MAC_OFF, rx_ring_len)?;
                        Pool::new(id, l, mem)
                    })
                    .map_err(|e| AfPacketError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let mut pools = vec![pool.clone()];
        pools.extend(ring_pool.clone());
        let mut readable = PoolTable::new();
        readable.insert(pool.clone());
        let done_cap = cfg.tx_frames as usize * 2;
        let mtu = ctl.mtu().ok();
        let offloads = crate::TxOffloads {
            max_gso_frame: if ctl.tso() { u16::MAX as u32 } else { 0 },
            partial_csum: true,
        };
        if let Some(mtu) = mtu
            && !cfg.super_frames
        {
            // Receive frames start 76 bytes into a ring frame (V2 header, address, alignment,
            // virtio header).
            let max = (FRAME_SIZE - RX_DATA_OFF - VNET_LEN).min(cfg.buf_size);
            if mtu as usize + 18 > max {
                tracing::warn!(
                    ifname = %cfg.ifname,
                    mtu,
                    max_frame = max,
                    "interface MTU allows frames larger than the port carries; they will be dropped"
                );
            }
        }
        let port = Self {
            name: format!("af_packet:{}", cfg.ifname),
            sock,
            big,
            ctl,
            rings,
            rx_frames: cfg.rx_frames,
            rx_frame_size,
            rx_per_block,
            rx_block,
            rx_ring_len,
            tx_frames: cfg.tx_frames,
            rx_head: 0,
            rx_tail: 0,
            rx_held: 0,
            rx_slot: vec![SLOT_IDLE; cfg.rx_frames as usize],
            ring_pool,
            pools,
            super_frames: cfg.super_frames,
            offloads,
            tx_head: 0,
            kick_pending: false,
            pool,
            readable,
            tx_set: PoolSet::of(cfg.pool_id),
            free: (0..cfg.bufs as u32).rev().collect(),
            state: vec![FREE; cfg.bufs],
            done: Vec::with_capacity(done_cap),
            done_cap,
            stats: PortStats::default(),
            kernel: Cell::new(PacketKernelStats::default()),
        };
        Ok(PreparedAfPacket {
            port,
            ifname: cfg.ifname,
            promiscuous: cfg.promiscuous,
        })
    }

    /// The port's own pool, to register with the switch.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Lets the port transmit straight from `pool` (it only reads it). The port keeps the
    /// pool's memory mapped until [`AfPacketPort::remove_readable_pool`] or its end.
    pub fn add_readable_pool(&mut self, pool: Pool) {
        let id = pool.id();
        if id == self.pool.id() {
            return;
        }
        self.readable.insert(pool);
        self.tx_set.insert(id);
    }

    /// Stops transmitting from pool `id` (e.g. its app left).
    pub fn remove_readable_pool(&mut self, id: PoolId) {
        if id == self.pool.id() {
            return;
        }
        self.readable.remove(id);
        self.tx_set.remove(id);
    }

    /// The socket's descriptor: readable (`POLLIN`) when received frames are waiting in
    /// the ring, so an idle poller can sleep in `poll`/`epoll` on it.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// Sleeps until a received frame is waiting or `timeout` passes; returns whether one is.
    pub fn wait_rx(&mut self, timeout: std::time::Duration) -> bool {
        linux::wait_readable(self.sock.as_raw_fd(), timeout)
    }

    /// The kernel's counters for this socket, accumulated since the port opened.
    pub fn kernel_stats(&self) -> PacketKernelStats {
        let mut s = TpacketStats::default();
        let mut k = self.kernel.get();
        if linux::getsockopt(
            self.sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut s,
            "getsockopt(PACKET_STATISTICS)",
        )
        .is_ok()
        {
            k.packets += s.packets as u64;
            k.drops += s.drops as u64;
            self.kernel.set(k);
        }
        k
    }

    /// Offset of ring frame `i` of the receive ring.
    #[inline]
    fn rx_off(&self, i: u32) -> usize {
        (i / self.rx_per_block) as usize * self.rx_block
            + (i % self.rx_per_block) as usize * self.rx_frame_size
    }

    /// Offset of ring frame `i` of the transmit ring.
    #[inline]
    fn tx_off(&self, i: u32) -> usize {
        self.rx_ring_len + i as usize * FRAME_SIZE
    }

    /// The status word of the ring frame at `off`.
    #[inline]
    fn status(&self, off: usize) -> &AtomicU32 {
        // Every ring frame offset is the start of a ring frame inside the mapping (the ring
        // indices are kept below the frame counts), so this cannot fail; a failure would be
        // a bug, reported as a zero status word.
        match self.rings.region().atomic_u32(off) {
            Ok(a) => a,
            Err(_) => &ZERO,
        }
    }

    #[inline]
    fn u16_at(&self, off: usize) -> u16 {
        let mut b = [0u8; 2];
        let _ = self.rings.region().read(off, &mut b);
        u16::from_ne_bytes(b)
    }

    /// Reads the super-frame whose truncated copy is the ring frame at hand (`len` bytes)
    /// from the socket's receive queue, whole, into a free pool buffer, with its virtio
    /// header. The frame is taken off the queue in any case, so that the queue stays in step
    /// with the ring; `None` drops it (no super-frames, no buffer, a VLAN tag that is not in
    /// the frame, a length that is not the ring's).
    fn take_super(&mut self, len: usize, vlan: bool) -> Option<Frame> {
        let idx = if self.super_frames {
            self.free.pop()
        } else {
            None
        };
        let base = idx.map_or(0, |i| self.pool.offset(BufIdx(i)));
        let cap = match idx {
            Some(_) => self.pool.layout().buf_size.min(u16::MAX as usize),
            None => 0,
        };
        let mut vnet = [0u8; VNET_LEN];
        let mut iov = [
            libc::iovec {
                iov_base: vnet.as_mut_ptr().cast(),
                iov_len: VNET_LEN,
            },
            libc::iovec {
                iov_base: self.pool.region().as_ptr().wrapping_add(base).cast(),
                iov_len: cap,
            },
        ];
        // SAFETY: an all-zero msghdr is valid; the iovecs are set below.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = 2;
        // Why this is sound: the first iovec is `vnet`, a local array of VNET_LEN bytes; the
        // second is `cap` bytes at buffer `idx` of the port's own pool, which lies inside
        // the pool's mapping (`offset` of an index below the count, `cap` at most the buffer
        // size), is held by the port (taken off the free list) and is read by no one else
        // until it is handed out; with no buffer, `cap` is 0 and nothing is written there.
        // MSG_TRUNC makes the call return the frame's real length, so a frame larger than
        // the buffer is detected below.
        // SAFETY: valid iovecs into memory this port owns, a socket we own (reasoning above).
        let n = unsafe {
            libc::recvmsg(
                self.sock.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        let idx = idx?;
        if n < VNET_LEN as isize || n as usize - VNET_LEN != len || len > cap || vlan {
            self.free.push(idx);
            return None;
        }
        let meta = Vnet::parse(&vnet).meta(len);
        self.state[idx as usize] = CALLER;
        let h = BufHandle::new(self.pool.id(), BufIdx(idx))?;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += len as u64;
        Some(Frame {
            buf: h,
            len: len as u16,
            meta: meta.bits(),
        })
    }

    /// The ring frame after `i`.
    #[inline]
    fn next_rx(&self, i: u32) -> u32 {
        if i + 1 == self.rx_frames { 0 } else { i + 1 }
    }

    /// Gives the kernel back every ring frame from `rx_tail` on that the port is done with,
    /// in ring order, up to the first one still lent out.
    #[inline]
    fn release_rx(&mut self) {
        while self.rx_held > 0 && self.rx_slot[self.rx_tail as usize] == SLOT_BACK {
            self.rx_slot[self.rx_tail as usize] = SLOT_IDLE;
            let off = self.rx_off(self.rx_tail);
            self.status(off).store(TP_STATUS_KERNEL, Ordering::Release);
            self.rx_tail = self.next_rx(self.rx_tail);
            self.rx_held -= 1;
        }
    }

    /// Lends ring frame `i` (at `off`, status `status`) out in place as a buffer of the ring
    /// pool; `None` when it must be copied instead (no ring pool, a VLAN tag to put back, a
    /// super-frame on the receive queue, or a frame not where the kernel always puts it).
    #[inline]
    fn lend_rx(&mut self, i: u32, off: usize, status: u32) -> Option<Frame> {
        let pool = self.ring_pool.as_ref()?.id();
        if status & (TP_STATUS_COPY | TP_STATUS_VLAN_VALID) != 0 {
            return None;
        }
        let mut h = [0u8; 10];
        self.rings.region().read(off + 4, &mut h).ok()?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let snap = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mac = u16::from_ne_bytes([h[8], h[9]]) as usize;
        if snap != len
            || snap < 14
            || mac != RX_MAC_OFF
            || mac + snap > self.rx_frame_size
            || snap > u16::MAX as usize
        {
            return None;
        }
        let mut vnet = [0u8; VNET_LEN];
        self.rings
            .region()
            .read(off + mac - VNET_LEN, &mut vnet)
            .ok()?;
        let buf = BufHandle::new(pool, BufIdx(i))?;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += snap as u64;
        Some(Frame {
            buf,
            len: snap as u16,
            meta: Vnet::parse(&vnet).meta(snap).bits(),
        })
    }

    /// Copies one received ring frame into a pool buffer (or reads the super-frame it stands
    /// for); `None` drops it.
    #[inline]
    fn copy_rx(&mut self, off: usize, status: u32) -> Option<Frame> {
        // The V2 header after the status word, copied out once: tp_len, tp_snaplen, tp_mac.
        let mut h = [0u8; 10];
        if self.rings.region().read(off + 4, &mut h).is_err() {
            self.stats.errors += 1;
            return None;
        }
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let snap = u32::from_ne_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mac = u16::from_ne_bytes([h[8], h[9]]) as usize;
        let vlan = status & TP_STATUS_VLAN_VALID != 0;
        let out_len = snap + if vlan { 4 } else { 0 };
        if status & TP_STATUS_COPY != 0 {
            // Too large for a ring frame: the whole frame waits on the receive queue.
            let f = self.take_super(len, vlan);
            if f.is_none() {
                self.stats.errors += 1;
                self.stats.rx_dropped += 1;
            }
            return f;
        }
        let mut vnet = [0u8; VNET_LEN];
        if snap != len
            || snap < 14
            || mac < HDR_LEN + VNET_LEN
            || self
                .rings
                .region()
                .read(off + mac - VNET_LEN, &mut vnet)
                .is_err()
            || mac + snap > self.rx_frame_size
            || out_len > self.pool.layout().buf_size
            || out_len > u16::MAX as usize
        {
            self.stats.errors += 1;
            self.stats.rx_dropped += 1;
            return None;
        }
        let Some(idx) = self.free.pop() else {
            self.stats.rx_dropped += 1;
            return None;
        };
        let dst = self.pool.region();
        let base = self.pool.offset(BufIdx(idx));
        let src = off + mac;
        let copied = if vlan {
            let tci = self.u16_at(off + 24);
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                self.u16_at(off + 26)
            } else {
                0x8100
            };
            let mut tag = [0u8; 4];
            tag[..2].copy_from_slice(&tpid.to_be_bytes());
            tag[2..].copy_from_slice(&tci.to_be_bytes());
            dst.copy_from(base, &self.rings.region(), src, 12).is_ok()
                && dst.write(base + 12, &tag).is_ok()
                && dst
                    .copy_from(base + 16, &self.rings.region(), src + 12, snap - 12)
                    .is_ok()
        } else {
            dst.copy_from(base, &self.rings.region(), src, snap).is_ok()
        };
        if !copied {
            self.free.push(idx);
            self.stats.errors += 1;
            return None;
        }
        // A locally generated frame whose checksum the sender left to offload (veth from a
        // peer with `tx` offload on) says so in its virtio header (and in
        // TP_STATUS_CSUMNOTREADY): it goes on partial, completed only for a destination
        // that needs it.
        let meta = Vnet::parse(&vnet).meta(out_len);
        self.state[idx as usize] = CALLER;
        let h = BufHandle::new(self.pool.id(), BufIdx(idx))?;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += out_len as u64;
        Some(Frame {
            buf: h,
            len: out_len as u16,
            meta: meta.bits(),
        })
    }

    /// `tx_burst`, and with `macs` `tx_burst_with_macs`: copies each frame into a ring
    /// frame after its virtio header (then `macs[i]` over its first 12 bytes) and kicks the
    /// kernel once; a frame too large for a ring frame goes out on its own (`SuperSender::send`),
    /// after the ring's pending frames.
    fn send(&mut self, frames: &[Frame], macs: Option<&[MacHeader]>) -> usize {
        let mut taken = 0;
        let mut queued = 0;
        let max = frames.len().min(self.done_cap - self.done.len());
        for (i, f) in frames[..max].iter().enumerate() {
            let len = f.len as usize;
            let large = len > TX_RING_MAX;
            let off = self.tx_off(self.tx_head);
            if !large {
                let st = self.status(off).load(Ordering::Acquire);
                if st == TP_STATUS_WRONG_FORMAT {
                    self.stats.errors += 1;
                } else if st != TP_STATUS_AVAILABLE {
                    break; // ring full
                }
            }
            let h = f.buf;
            let own = h.pool() == self.pool.id();
            let held = !own || self.state.get(h.idx().0 as usize) == Some(&CALLER);
            taken += 1;
            if !held {
                // An own-pool handle the caller does not hold: refuse, keep nothing.
                self.stats.errors += 1;
                continue;
            }
            if own {
                self.state[h.idx().0 as usize] = DONE;
            }
            self.done.push(h);
            if large && queued > 0 {
                // The ring's frames go first: they were before this one.
                self.kick();
                queued = 0;
            }
            let mac = macs.and_then(|m| m.get(i));
            let meta = offload::FrameMeta::from_bits(f.meta);
            let src = self.readable.buf(h);
            let Some(src) = src.filter(|s| len >= 14 && len <= s.len()) else {
                self.stats.tx_dropped += 1;
                self.stats.errors += 1;
                continue;
            };
            if large {
                if self.big.send(&src, len, mac, meta) {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += len as u64;
                } else {
                    self.stats.tx_dropped += 1;
                }
                continue;
            }
            let data = off + TX_FRAME_OFF;
            let mut head = [0u8; HEAD];
            let hl = len.min(HEAD);
            let ring = self.rings.region();
            let ok = ring.copy_from(data, &src, 0, len).is_ok()
                && match mac {
                    Some(m) => ring.write(data, m).is_ok(),
                    None => true,
                }
                && (f.meta == 0 || ring.read(data, &mut head[..hl]).is_ok())
                && ring
                    .write(
                        off + TX_DATA_OFF,
                        &Vnet::for_tx(&head[..hl], len, meta).bytes(),
                    )
                    .is_ok()
                && ring
                    .write(off + 4, &((len + VNET_LEN) as u32).to_ne_bytes())
                    .is_ok()
                && ring
                    .write(off + 8, &((len + VNET_LEN) as u32).to_ne_bytes())
                    .is_ok();
            if !ok {
                self.stats.tx_dropped += 1;
                self.stats.errors += 1;
                continue;
            }
            self.status(off)
                .store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.tx_head = if self.tx_head + 1 == self.tx_frames {
                0
            } else {
                self.tx_head + 1
            };
            queued += 1;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += len as u64;
        }
        if queued > 0 {
            self.kick();
        }
        taken
    }

    fn kick(&mut self) {
        match linux::kick(self.sock.as_raw_fd()) {
            Ok(()) => self.kick_pending = false,
            Err(libc::EAGAIN | libc::ENOBUFS | libc::EBUSY | libc::ENETDOWN | libc::EINTR) => {
                self.kick_pending = true
            }
            Err(_) => {
                self.kick_pending = false;
                self.stats.errors += 1;
            }
        }
    }
}

static ZERO: AtomicU32 = AtomicU32::new(0);

impl Port for AfPacketPort {
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
        let mut s = self.stats;
        s.rx_dropped += self.kernel_stats().drops;
        s
    }

    fn tx_pools(&self) -> PoolSet {
        self.tx_set
    }

    fn own_pools(&self) -> PoolSet {
        let mut s = PoolSet::of(self.pool.id());
        if let Some(p) = &self.ring_pool {
            s.insert(p.id());
        }
        s
    }

    fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// The port only reads a frame (to copy it into the kernel's ring), so it can transmit
    /// from any pool mapped into this process: always granted.
    fn tx_offloads(&self) -> crate::TxOffloads {
        self.offloads
    }

    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        if pool.id() == self.pool.id() {
            return false; // another pool under the port's own id: refuse
        }
        self.add_readable_pool(pool.clone());
        true
    }

    /// A frame is copied out during `tx_burst`, so once the pool is removed nothing reads
    /// it any more: always `true`. (Handles of it may still come back from `tx_done`.)
    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        self.remove_readable_pool(pool);
        true
    }

    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        let mut got = 0;
        // Bounded by `out` and by the ring. When every frame is copied, with no free buffer
        // the frame stays in the ring (the kernel counts the drop if the ring fills) rather
        // than being dropped here; in place, only the rare frame that needs a copy is
        // dropped for want of one.
        let in_place = self.ring_pool.is_some();
        while got < out.len()
            && self.rx_held < self.rx_frames
            && (in_place || !self.free.is_empty())
        {
            let i = self.rx_head;
            let off = self.rx_off(i);
            let st = self.status(off).load(Ordering::Acquire);
            if st & TP_STATUS_USER == 0 {
                break;
            }
            let (f, slot) = match self.lend_rx(i, off, st) {
                Some(f) => (Some(f), SLOT_LENT),
                None => (self.copy_rx(off, st), SLOT_BACK),
            };
            self.rx_slot[i as usize] = slot;
            self.rx_head = self.next_rx(i);
            self.rx_held += 1;
            if let Some(f) = f {
                out[got] = f;
                got += 1;
            }
        }
        self.release_rx();
        got
    }

    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.send(frames, None)
    }

    /// Copies each frame into the kernel's ring as `tx_burst` does, and then the MACs the
    /// switch checked over its first 12 bytes there: the frame leaves with them, whatever
    /// the pool's owner wrote into its buffer meanwhile.
    fn tx_burst_with_macs(&mut self, frames: &[Frame], macs: &[MacHeader]) -> usize {
        let n = frames.len().min(macs.len());
        self.send(&frames[..n], Some(macs))
    }

    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        let n = out.len().min(self.done.len());
        let from = self.done.len() - n;
        for (o, &h) in out.iter_mut().zip(&self.done[from..]) {
            *o = h;
            if h.pool() == self.pool.id()
                && let Some(s) = self.state.get_mut(h.idx().0 as usize)
            {
                *s = CALLER;
            }
        }
        self.done.truncate(from);
        if self.kick_pending {
            self.kick();
        }
        n
    }

    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        let mut got = 0;
        while got < out.len() {
            let Some(idx) = self.free.pop() else { break };
            let Some(h) = BufHandle::new(self.pool.id(), BufIdx(idx)) else {
                break;
            };
            self.state[idx as usize] = CALLER;
            out[got] = h;
            got += 1;
        }
        got
    }

    fn reclaim(&mut self, bufs: &[BufHandle]) {
        let ring = self.ring_pool.as_ref().map(|p| p.id());
        for &h in bufs {
            let idx = h.idx().0 as usize;
            if h.pool() == self.pool.id() && self.state.get(idx) == Some(&CALLER) {
                self.state[idx] = FREE;
                self.free.push(idx as u32);
            } else if Some(h.pool()) == ring && self.rx_slot.get(idx) == Some(&SLOT_LENT) {
                self.rx_slot[idx] = SLOT_BACK;
            } else {
                self.stats.errors += 1;
            }
        }
        if ring.is_some() {
            self.release_rx();
        }
    }

    fn wants_poll(&self) -> bool {
        // Buffers to hand back, or a transmit kick the kernel refused for now.
        !self.done.is_empty() || self.kick_pending
    }

    fn prepare_wait(&mut self) -> bool {
        let off = self.rx_off(self.rx_head);
        self.rx_held < self.rx_frames
            && self.status(off).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.sock.as_fd())
    }
}

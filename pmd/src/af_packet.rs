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
//! The kernel's rings are not a Ferrite pool: their frames must go back to the kernel in ring
//! order, so lending one out (to an app, for as long as the app likes) would stall the ring.
//! Hence the port owns a normal pool of anonymous memory and:
//!
//! * receive copies each frame once, from the ring frame into a pool buffer (the kernel's
//!   copy into the ring is the other, unavoidable one), and returns the ring frame at once;
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
//! receive copy. A frame whose TCP/UDP checksum the sending host left to offload
//! (`TP_STATUS_CSUMNOTREADY`: a Linux peer on veth with `tx` offload on) gets its checksum
//! completed in software, as a NIC would have done.
//!
//! # Super-frames
//!
//! The kernel hands a packet socket frames larger than the MTU when segmentation was left to
//! later: a veth peer with TSO/GSO on (Linux's default) sends TCP frames of up to 64 KiB, and
//! GRO merges segments received on a real NIC. The ring's frames stay 2 KiB (a ring of
//! 64 KiB frames would hold an eighth as many frames in the same memory); with
//! [`AfPacketConfig::super_frames`] (the default) the socket sets `PACKET_COPY_THRESH`, so
//! the kernel also queues a frame too large for a ring frame, whole, on the socket's receive
//! queue and flags its (truncated) ring frame `TP_STATUS_COPY`. The port then reads the whole
//! frame with one `recv` into a 64 KiB buffer of its own, and cuts a TCP/IPv4 super-frame
//! into segments of the interface's MTU in software, as the kernel's GSO does
//! ([`crate::gso`]): headers rewritten, both checksums computed (which also completes a
//! checksum the sender left partial). Any other oversized frame (UDP or IPv6 super-frames,
//! VLAN-tagged ones) is dropped and counted. Without it every super-frame is dropped; run the
//! peer with `tso` and `gso` off then (`ethtool -K <peer> tso off gso off`).
//!
//! A packet socket sees frames alongside the kernel's own stack, it does not take them from
//! it: give the interface no IP addresses, or the kernel will answer ARP and ICMP for them
//! too. (The `af_xdp` port takes the frames of its queue away from the stack.)
//!
//! The [`Pool`] this port exposes lives in memory the port maps: it is valid only while the
//! port lives.

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use grant_pool::{BufHandle, BufIdx, Pool, PoolId, PoolLayout, PoolSet, PoolTable, Region};

use crate::gso::TcpV4;
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
    /// Buffer size of the pool (a power of two, 256..=4096).
    pub buf_size: usize,
    /// Frames in the kernel receive ring (a multiple of 32).
    pub rx_frames: u32,
    /// Receive frames of up to 64 KiB (GSO/GRO super-frames, through the socket's receive
    /// queue) and cut TCP/IPv4 ones into MTU-sized segments.
    pub super_frames: bool,
    /// Frames in the kernel transmit ring (a multiple of 32).
    pub tx_frames: u32,
    /// Put the interface in promiscuous mode while the port is open.
    pub promiscuous: bool,
    /// Bypass the qdisc layer on transmit.
    pub qdisc_bypass: bool,
}

impl AfPacketConfig {
    /// Defaults for `ifname`: a pool of 4096 buffers of 2 KiB, 4096 receive and 1024
    /// transmit ring frames, super-frames, promiscuous, qdisc bypass.
    pub fn new(ifname: &str, pool_id: PoolId) -> Self {
        Self {
            ifname: ifname.to_owned(),
            pool_id,
            bufs: 4096,
            buf_size: 2048,
            rx_frames: 4096,
            super_frames: true,
            tx_frames: 1024,
            promiscuous: true,
            qdisc_bypass: true,
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
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 1 << 2;
/// Offset of frame data in a V2 transmit frame: `TPACKET2_HDRLEN - sizeof(sockaddr_ll)`.
const TX_DATA_OFF: usize = 32;
/// `sizeof(struct tpacket2_hdr)`.
const HDR_LEN: usize = 32;
/// Ring frame size: one Ethernet frame plus the V2 header and alignment.
const FRAME_SIZE: usize = 2048;
/// Frames per ring block (64 KiB blocks).
const FRAMES_PER_BLOCK: u32 = 32;
/// Room for one super-frame read from the socket's receive queue (64 KiB of IP packet
/// plus link headers).
const SUPER_FRAME_MAX: usize = 65536 + 64;
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
    ctl: CtlSocket,
    _rings: Mmap,
    ring: Region,
    rx_frames: u32,
    rx_frame_size: usize,
    rx_per_block: u32,
    rx_block: usize,
    rx_ring_len: usize,
    tx_frames: u32,
    rx_head: u32,
    /// Largest IP packet of a segment cut from a super-frame (the MTU, or less when a pool
    /// buffer is smaller).
    max_l3: usize,
    /// The super-frame being cut into segments (in `big`); its ring frame (at `rx_head`)
    /// goes back to the kernel once the last segment is out.
    split: Option<Split>,
    /// A super-frame read from the socket's receive queue (empty without super-frames).
    big: Vec<u8>,
    tx_head: u32,
    kick_pending: bool,
    _pool_mem: Mmap,
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
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
            sll_ifindex: ifindex as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 0,
            sll_addr: [0; 8],
        };
        // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
        let r = unsafe {
            libc::bind(
                raw,
                (&sll as *const libc::sockaddr_ll).cast(),
                core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(linux::os_err("bind(AF_PACKET)").into());
        }
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
        let (rx_frame_size, rx_per_block) = (FRAME_SIZE, FRAMES_PER_BLOCK);
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
        linux::setsockopt(
            raw,
            sol,
            libc::PACKET_VERSION,
            &TPACKET_V2,
            "setsockopt(PACKET_VERSION, TPACKET_V2)",
        )?;
        let one: i32 = 1;
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
        let rings = Mmap::socket_ring(raw, len, 0, "mmap(PACKET_RX_RING + PACKET_TX_RING)")?;
        let ring = rings.region();

        let pool_mem = Mmap::anonymous(layout.bytes(), false)?;
        let pool = Pool::new(cfg.pool_id, layout, pool_mem.region())
            .map_err(|e| AfPacketError::Config(e.to_string()))?;
        let mut readable = PoolTable::new();
        readable.insert(pool);
        let done_cap = cfg.tx_frames as usize * 2;
        let mtu = ctl.mtu().ok();
        let max_l3 = (mtu.unwrap_or(1500) as usize).min(cfg.buf_size - crate::gso::ETH);
        if let Some(mtu) = mtu {
            // Receive frames start 66 bytes into a ring frame (V2 header, address, alignment).
            let max = (FRAME_SIZE - RX_DATA_OFF).min(cfg.buf_size);
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
            ctl,
            _rings: rings,
            ring,
            rx_frames: cfg.rx_frames,
            rx_frame_size,
            rx_per_block,
            rx_block,
            rx_ring_len,
            tx_frames: cfg.tx_frames,
            rx_head: 0,
            max_l3,
            split: None,
            big: if cfg.super_frames {
                vec![0; SUPER_FRAME_MAX]
            } else {
                Vec::new()
            },
            tx_head: 0,
            kick_pending: false,
            _pool_mem: pool_mem,
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

    /// The port's own pool, to register with the switch. Valid while the port lives.
    pub fn pool(&self) -> Pool {
        self.pool
    }

    /// Lets the port transmit straight from `pool` (it only reads it). The caller keeps the
    /// pool's memory mapped until [`AfPacketPort::remove_readable_pool`] or the port's end.
    pub fn add_readable_pool(&mut self, pool: Pool) {
        if pool.id() == self.pool.id() {
            return;
        }
        self.readable.insert(pool);
        self.tx_set.insert(pool.id());
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
        match self.ring.atomic_u32(off) {
            Ok(a) => a,
            Err(_) => &ZERO,
        }
    }

    #[inline]
    fn u16_at(&self, off: usize) -> u16 {
        let mut b = [0u8; 2];
        let _ = self.ring.read(off, &mut b);
        u16::from_ne_bytes(b)
    }

    /// Copies one received ring frame into a pool buffer, or starts cutting it into
    /// segments.
    #[inline]
    fn take_rx(&mut self, off: usize, status: u32) -> Rx {
        match self.copy_rx(off, status) {
            Some(f) => Rx::Frame(f),
            None => match self.split.take() {
                Some(s) => Rx::Split(s),
                None => Rx::Drop,
            },
        }
    }

    /// Reads the super-frame whose truncated copy is the ring frame at hand from the
    /// socket's receive queue into `big` and, when it is TCP/IPv4 of `len` bytes, makes it
    /// `self.split`. Returns whether it did. The frame is taken off the queue in any case,
    /// so the queue stays in step with the ring; a VLAN-tagged one is dropped (its tag is
    /// not in the frame).
    fn start_split(&mut self, len: usize, vlan: bool) -> bool {
        if self.big.is_empty() {
            return false;
        }
        // Why this is sound: `big` is an initialised buffer of `big.len()` bytes owned by
        // this port; the kernel writes at most that many. MSG_TRUNC makes it return the
        // frame's real length, so a frame larger than the buffer is detected below.
        // SAFETY: a buffer of ours, its length, and a socket we own (reasoning above).
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.big.as_mut_ptr().cast(),
                self.big.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 || n as usize != len || vlan {
            return false;
        }
        let head = &self.big[..len.min(crate::gso::ETH + 120)];
        match TcpV4::parse(head, len, self.max_l3) {
            Some(t) => {
                self.split = Some(Split { len, t, next: 0 });
                true
            }
            None => false,
        }
    }

    /// Cuts the super-frame in `self.split` into segments, one pool buffer each, as many as
    /// `out` and the free buffers allow; `self.split` is `None` once the last one is out.
    fn cut(&mut self, out: &mut [Frame]) -> usize {
        let Some(mut sp) = self.split.take() else {
            return 0;
        };
        let h = sp.t.header_len();
        let mut got = 0;
        // Bounded by `out` and by the segment count.
        while got < out.len() && sp.next < sp.t.segments() {
            let Some(idx) = self.free.pop() else { break };
            let k = sp.next;
            sp.next += 1;
            let n = sp.t.segment_payload(k);
            // h + n <= ETH + max_l3 <= buf_size <= 4096 (checked at open).
            let mut tmp = [0u8; 4096];
            let Some(seg) = tmp.get_mut(..h + n) else {
                self.free.push(idx);
                self.stats.errors += 1;
                continue;
            };
            let base = self.pool.offset(BufIdx(idx));
            let at = h + k * sp.t.mss;
            let ok = match (self.big.get(..h), self.big.get(at..at + n)) {
                (Some(hdr), Some(data)) if at + n <= sp.len => {
                    seg[..h].copy_from_slice(hdr);
                    seg[h..].copy_from_slice(data);
                    true
                }
                _ => false,
            } && sp.t.finish(seg, k)
                && self.pool.region().write(base, seg).is_ok();
            let handle = BufHandle::new(self.pool.id(), BufIdx(idx));
            match handle {
                Some(handle) if ok => {
                    self.state[idx as usize] = CALLER;
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += (h + n) as u64;
                    out[got] = Frame::new(handle, (h + n) as u16);
                    got += 1;
                }
                _ => {
                    self.free.push(idx);
                    self.stats.errors += 1;
                }
            }
        }
        if sp.next < sp.t.segments() {
            self.split = Some(sp);
        }
        got
    }

    /// Hands the ring frame at `rx_head` back to the kernel and moves on.
    #[inline]
    fn release_rx(&mut self) {
        let off = self.rx_off(self.rx_head);
        self.status(off).store(TP_STATUS_KERNEL, Ordering::Release);
        self.rx_head = if self.rx_head + 1 == self.rx_frames {
            0
        } else {
            self.rx_head + 1
        };
    }

    /// Copies one received ring frame into a pool buffer. `None` drops it, unless it left a
    /// super-frame to cut in `self.split`.
    #[inline]
    fn copy_rx(&mut self, off: usize, status: u32) -> Option<Frame> {
        // The V2 header after the status word, copied out once: tp_len, tp_snaplen, tp_mac.
        let mut h = [0u8; 10];
        if self.ring.read(off + 4, &mut h).is_err() {
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
            if self.start_split(len, vlan) {
                return None;
            }
            self.stats.errors += 1;
            self.stats.rx_dropped += 1;
            return None;
        }
        if snap != len
            || snap < 14
            || mac < HDR_LEN
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
            dst.copy_from(base, &self.ring, src, 12).is_ok()
                && dst.write(base + 12, &tag).is_ok()
                && dst
                    .copy_from(base + 16, &self.ring, src + 12, snap - 12)
                    .is_ok()
        } else {
            dst.copy_from(base, &self.ring, src, snap).is_ok()
        };
        if !copied {
            self.free.push(idx);
            self.stats.errors += 1;
            return None;
        }
        if status & TP_STATUS_CSUMNOTREADY != 0 {
            // A locally generated frame whose TCP/UDP checksum the sender left to offload
            // (veth from a peer with `tx` offload on): complete it, as a NIC would have.
            let mut tmp = [0u8; 4096 + 4];
            if let Some(b) = tmp.get_mut(..out_len)
                && dst.read(base, b).is_ok()
                && complete_l4_checksum(b)
            {
                let _ = dst.write(base, b);
            }
        }
        self.state[idx as usize] = CALLER;
        let h = BufHandle::new(self.pool.id(), BufIdx(idx))?;
        self.stats.rx_packets += 1;
        self.stats.rx_bytes += out_len as u64;
        Some(Frame::new(h, out_len as u16))
    }

    /// `tx_burst`, and with `macs` `tx_burst_with_macs`: copies each frame into a ring
    /// frame (then `macs[i]` over its first 12 bytes) and kicks the kernel once.
    fn send(&mut self, frames: &[Frame], macs: Option<&[MacHeader]>) -> usize {
        let mut taken = 0;
        let mut queued = 0;
        let max = frames.len().min(self.done_cap - self.done.len());
        for (i, f) in frames[..max].iter().enumerate() {
            let off = self.tx_off(self.tx_head);
            let st = self.status(off).load(Ordering::Acquire);
            if st == TP_STATUS_WRONG_FORMAT {
                self.stats.errors += 1;
            } else if st != TP_STATUS_AVAILABLE {
                break; // ring full
            }
            let h = f.buf;
            let len = f.len as usize;
            let own = h.pool() == self.pool.id();
            let held = !own || self.state.get(h.idx().0 as usize) == Some(&CALLER);
            let src = self.readable.buf(h);
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
            let ok = match src {
                Some(src) if len > 0 && len <= FRAME_SIZE - TX_DATA_OFF && len <= src.len() => {
                    self.ring.copy_from(off + TX_DATA_OFF, &src, 0, len).is_ok()
                        && match macs.and_then(|m| m.get(i)) {
                            // A frame shorter than its MACs cannot carry them: refused.
                            Some(m) => {
                                len >= m.len() && self.ring.write(off + TX_DATA_OFF, m).is_ok()
                            }
                            None => true,
                        }
                        && self
                            .ring
                            .write(off + 4, &(len as u32).to_ne_bytes())
                            .is_ok()
                        && self
                            .ring
                            .write(off + 8, &(len as u32).to_ne_bytes())
                            .is_ok()
                }
                _ => false,
            };
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

/// A super-frame (in the port's `big` buffer) being cut into segments.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// Its length.
    len: usize,
    t: TcpV4,
    /// The next segment to cut.
    next: usize,
}

/// What became of a received ring frame.
enum Rx {
    Frame(Frame),
    Split(Split),
    Drop,
}

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
        PoolSet::of(self.pool.id())
    }

    fn pools(&self) -> &[Pool] {
        core::slice::from_ref(&self.pool)
    }

    /// The port only reads a frame (to copy it into the kernel's ring), so it can transmit
    /// from any pool mapped into this process: always granted.
    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        if pool.id() == self.pool.id() {
            return false; // another pool under the port's own id: refuse
        }
        self.add_readable_pool(*pool);
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
        // Bounded by the ring: each step hands one ring frame back to the kernel (a
        // super-frame once its last segment is out, which may be in a later burst).
        let limit = out.len().min(self.rx_frames as usize);
        let mut seen = 0;
        // With no free buffer the frame stays in the ring (the kernel counts the drop if the
        // ring fills), rather than being dropped here.
        while got < out.len() && !self.free.is_empty() {
            if self.split.is_some() {
                got += self.cut(&mut out[got..]);
                if self.split.is_some() {
                    break; // `out` is full or the buffers ran out: continue next burst
                }
                self.release_rx();
                continue;
            }
            if seen >= limit {
                break;
            }
            let off = self.rx_off(self.rx_head);
            let st = self.status(off).load(Ordering::Acquire);
            if st & TP_STATUS_USER == 0 {
                break;
            }
            seen += 1;
            match self.take_rx(off, st) {
                Rx::Frame(f) => {
                    out[got] = f;
                    got += 1;
                }
                Rx::Split(s) => {
                    self.split = Some(s);
                    continue; // cut it above; the ring frame is released after
                }
                Rx::Drop => {}
            }
            self.release_rx();
        }
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
        for &h in bufs {
            let idx = h.idx().0 as usize;
            if h.pool() == self.pool.id() && self.state.get(idx) == Some(&CALLER) {
                self.state[idx] = FREE;
                self.free.push(idx as u32);
            } else {
                self.stats.errors += 1;
            }
        }
    }

    fn wants_poll(&self) -> bool {
        // Buffers to hand back, a transmit kick the kernel refused for now, or segments of a
        // super-frame still to cut.
        !self.done.is_empty() || self.kick_pending || self.split.is_some()
    }

    fn prepare_wait(&mut self) -> bool {
        if self.split.is_some() {
            return true;
        }
        let off = self.rx_off(self.rx_head);
        self.status(off).load(Ordering::Acquire) & TP_STATUS_USER != 0
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.sock.as_fd())
    }
}

/// One's-complement sum of `data` added to `sum` (not folded).
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut c = data.chunks_exact(2);
    for w in &mut c {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    if let [b] = c.remainder() {
        sum += (*b as u32) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Fills in the TCP or UDP checksum of an Ethernet frame carrying IPv4 or IPv6 (behind at
/// most one VLAN tag). Returns whether it changed the frame. Every offset is checked against
/// the frame; anything it does not understand is left alone.
pub(crate) fn complete_l4_checksum(f: &mut [u8]) -> bool {
    let mut l3 = 14;
    let mut et = match f.get(12..14) {
        Some(e) => u16::from_be_bytes([e[0], e[1]]),
        None => return false,
    };
    if et == 0x8100 || et == 0x88a8 {
        et = match f.get(16..18) {
            Some(e) => u16::from_be_bytes([e[0], e[1]]),
            None => return false,
        };
        l3 = 18;
    }
    let (proto, l4, l4_len, pseudo) = match et {
        0x0800 => {
            let Some(h) = f.get(l3..l3 + 20) else {
                return false;
            };
            let ihl = (h[0] & 0x0f) as usize * 4;
            let tot = u16::from_be_bytes([h[2], h[3]]) as usize;
            if h[0] >> 4 != 4 || ihl < 20 || tot < ihl || l3 + tot > f.len() {
                return false;
            }
            let proto = h[9];
            let len = tot - ihl;
            let mut p = sum16(0, &h[12..20]);
            p += proto as u32 + len as u32;
            (proto, l3 + ihl, len, p)
        }
        0x86dd => {
            let Some(h) = f.get(l3..l3 + 40) else {
                return false;
            };
            let len = u16::from_be_bytes([h[4], h[5]]) as usize;
            if l3 + 40 + len > f.len() {
                return false;
            }
            let proto = h[6];
            let mut p = sum16(0, &h[8..40]);
            p += proto as u32 + len as u32;
            (proto, l3 + 40, len, p)
        }
        _ => return false,
    };
    let at = match proto {
        6 if l4_len >= 20 => l4 + 16,
        17 if l4_len >= 8 => l4 + 6,
        _ => return false,
    };
    f[at] = 0;
    f[at + 1] = 0;
    let mut c = fold(sum16(pseudo, &f[l4..l4 + l4_len]));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::complete_l4_checksum;

    fn verify(f: &[u8], l3: usize) -> bool {
        // Sum over pseudo header and segment must fold to zero.
        let ihl = (f[l3] & 0x0f) as usize * 4;
        let tot = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) as usize;
        let mut s = super::sum16(0, &f[l3 + 12..l3 + 20]);
        s += f[l3 + 9] as u32 + (tot - ihl) as u32;
        super::fold(super::sum16(s, &f[l3 + ihl..l3 + tot])) == 0
    }

    fn ipv4_tcp(vlan: bool, payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0, 5]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let tot = (20 + 20 + payload) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (tot >> 8) as u8,
            tot as u8,
            0,
            1,
            0,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[
            0x30, 0x39, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 2, 0xff, 0xff,
        ]);
        f.extend_from_slice(&[0xde, 0xad, 0, 0]); // checksum garbage, urgent
        f.extend((0..payload).map(|i| (i * 13) as u8));
        f
    }

    #[test]
    fn completes_tcp_over_ipv4_with_and_without_vlan() {
        for vlan in [false, true] {
            for payload in [0, 1, 7, 1000] {
                let mut f = ipv4_tcp(vlan, payload);
                let l3 = if vlan { 18 } else { 14 };
                assert!(!verify(&f, l3));
                assert!(complete_l4_checksum(&mut f));
                assert!(verify(&f, l3), "vlan {vlan} payload {payload}");
            }
        }
    }

    #[test]
    fn leaves_what_it_does_not_understand_alone() {
        let mut f = ipv4_tcp(false, 10);
        f[16] = 0xff; // total length beyond the frame
        let before = f.clone();
        assert!(!complete_l4_checksum(&mut f));
        assert_eq!(f, before);
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert!(!complete_l4_checksum(&mut arp));
        assert!(!complete_l4_checksum(&mut [0u8; 5]));
    }
}

//! The switch proper: its ports, its pool table, and burst forwarding.
//!
//! A burst from one ingress port is forwarded in two passes:
//!
//! 1. **Look up the whole burst.** For each frame: check the handle and length against the
//!    pool table (a flat array indexed by pool id: buffer count, size shift, memory, owner);
//!    copy 16 header bytes out of the buffer (the frame is at least 14 bytes long: the two
//!    MACs and the EtherType, and buffers are at least 256 bytes); learn the source; look up
//!    the destination; append the frame to that destination's queue. Group and unknown
//!    destinations are flooded: the frame is queued to every other port, as the original
//!    handle for the first one that can read its pool and as "copy this" for the rest. A
//!    frame whose destination was learned on its ingress port is dropped (hairpin). The
//!    checks of handle, pool and length are done for the whole burst first, branch-free
//!    over the frames as 64-bit words (`Frame::words`; the common burst is one pool and
//!    all well-formed); only a burst that fails them takes the frame-by-frame path. The
//!    check is the pool's `Blocks` view's (`Blocks::frames`), and the `BlockBurst` it
//!    returns reads the burst's headers with no check or clamp per frame. Bursts are mostly
//!    runs of one flow: the first frame's 12 MAC bytes are compared with each following
//!    frame's, and a burst that is one run is learned and looked up once
//!    (`Fdb::learn_and_look_up_one`) and needs no per-frame destinations at all; any other
//!    burst goes to the FDB as one call (`Fdb::learn_and_look_up_keys`) that reads each
//!    frame's MAC keys straight from its header, checks them in a pass that writes nothing
//!    and learns only the frames whose source needs a write.
//! 2. **Deliver per destination.** First every copy the burst needs is made (the destination
//!    allocates buffers from its own pools once per burst; each frame is copied once), and
//!    only then are handles passed on, so no destination can touch an original while another
//!    is still copying from it. Then each destination gets one `tx_burst`; what it does not
//!    take is dropped as `RingFull` and its buffer goes back to its owner.
//!
//! Two shortcuts cover the common bursts without queueing: a burst whose frames all go to
//! one destination that can read their pool is passed to its `tx_burst` as it came in (zero
//! copy, no per-frame work in pass 2), and one whose destination cannot read the pool is
//! copied straight from the receive array into buffers the destination allocates, the
//! originals going back to their owner as one slice.
//!
//! **Untrusted ports.** A port with an [`Admission`] (an app's) can rewrite its buffers at
//! any time, so its bursts take a path of their own (`Switch::forward_admitted`, chosen once
//! per burst): each frame's 12 MAC bytes are copied once into the switch's own memory, and
//! that copy is all that is looked at (source = the admitted MAC, which is pinned to the
//! port in the FDB, so nothing is learned; destination not a reserved link-local group; the
//! port's rate) and all that leaves: a copy gets the checked bytes written over its first
//! 12, and a frame handed over by handle goes with them ([`Port::tx_burst_with_macs`]). On
//! every port a frame with a group source address is dropped.
//!
//! Buffers going back to their owners are gathered per owner and returned with one `reclaim`
//! call each (a burst from one pool, the common case, is returned as the very slice it
//! arrived in). Every port call is per burst, never per frame; the per-frame work is a few
//! loads, compares and stores, no allocation and no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use grant_pool::{BlockBurst, Blocks, BufHandle, Memory, Pool, PoolId, PoolSet, Region};
use offload::FrameMeta;
use offload::gso::TcpV4;
use pmd::{Admission, Frame, MacHeader, Port, TxOffloads};

use crate::counters::{DropReason, PortCounters, bump};
use crate::fdb::{
    Fdb, FdbStats, GROUP_SOURCE, MAC_MASK, MacKey, PinError, UNKNOWN, is_group, mac_key,
};
use crate::gro::{self, Merge};
use crate::run::{IdleConfig, Waker};

/// The most frames forwarded per burst.
pub const MAX_BURST: usize = 256;
/// The most ports a switch holds.
pub const MAX_PORTS: usize = 1024;
/// Ethernet header bytes: two MACs and the EtherType.
pub const ETH_HEADER: usize = 14;

const FLOOD: u16 = UNKNOWN;
const DROPPED: u16 = u16::MAX - 1;
const HAIRPIN: u16 = u16::MAX - 2;
/// A frame with a group source address: dropped.
const GROUP_SRC: u16 = GROUP_SOURCE;
/// Destinations at or above this are not ports.
const FLOOD_OR_DROP: u16 = GROUP_SRC;
const _: () = assert!(MAX_PORTS < FLOOD_OR_DROP as usize);
/// The reserved link-local group addresses 01:80:c2:00:00:00 to 01:80:c2:00:00:0f (pause,
/// STP, LLDP, 802.1X: IEEE 802.1Q table 8-1) as [`MacKey`]s: `key & LINK_LOCAL_MASK ==
/// LINK_LOCAL`.
const LINK_LOCAL: MacKey = 0x00c2_8001;
const LINK_LOCAL_MASK: MacKey = MAC_MASK & !(0xf << 40);
const NO_OWNER: u16 = u16::MAX;
const POOLS: usize = 256;
/// FDB slots the aging sweep may visit per tick (millisecond) of the switch's clock.
const SWEEP_PER_TICK: usize = 64;
/// The most slots one poll sweeps (bounds the time one poll spends on it).
const SWEEP_STEP: usize = 256;
const STASH: usize = 2 * MAX_BURST;
/// A destination taking frames of at least this many bytes gets the TCP segments of a burst
/// coalesced ([`crate::gro`]).
const GRO_MIN: u32 = 16 * 1024;

/// A port's number within a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

/// Where the switch takes the time from, for aging.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Real time since the switch was built.
    Monotonic,
    /// A clock the caller moves (tests, simulation).
    Manual(ManualClock),
}

/// A clock that only moves when told to. Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0
            .fetch_add(by.as_millis().min(u64::MAX as u128) as u64, Relaxed);
    }

    /// Milliseconds since zero.
    pub fn millis(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// How a switch is built.
#[derive(Debug, Clone)]
pub struct SwitchConfig {
    /// Frames asked of a port per `rx_burst` (1..=[`MAX_BURST`]).
    pub burst: usize,
    /// Most stations the FDB holds.
    pub fdb_entries: usize,
    /// How long a station stays in the FDB after it was last seen (to within 1/64 of this:
    /// the FDB records sightings at that granularity, see [`crate::fdb`]).
    pub aging: Duration,
    /// Whether source MACs are learned (off: every frame is flooded).
    pub learning: bool,
    /// Most stations one port may have learned (0: no limit but `fdb_entries`); new
    /// stations beyond it are not learned and are counted ([`Fdb::not_learned`]). Ports with
    /// an [`Admission`] learn nothing: their one MAC is pinned.
    pub max_stations_per_port: usize,
    /// The core the run loop pins itself to, if any.
    pub core: Option<usize>,
    /// Adaptive idle of the run loop.
    pub idle: IdleConfig,
    /// The time source for aging.
    pub clock: Clock,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            burst: 32,
            fdb_entries: 8192,
            aging: Duration::from_secs(300),
            learning: true,
            max_stations_per_port: 0,
            core: None,
            idle: IdleConfig::default(),
            clock: Clock::Monotonic,
        }
    }
}

/// Why the switch refused a configuration or a port.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The burst size is out of range.
    #[error("burst size {0} must be between 1 and {MAX_BURST}")]
    Burst(usize),
    /// No room for another port.
    #[error("the switch already has {MAX_PORTS} ports; remove one first")]
    TooManyPorts,
    /// A port owns a pool but does not expose its memory.
    #[error("port {port} owns pool {pool} but does not expose its memory (Port::pools)")]
    PoolUnexposed {
        /// The port's name.
        port: String,
        /// The pool.
        pool: u8,
    },
    /// Two ports claim the same pool.
    #[error(
        "port {port} owns pool {pool}, which port {owner} already owns; pool ids must be unique"
    )]
    PoolTaken {
        /// The port's name.
        port: String,
        /// The pool.
        pool: u8,
        /// The name of the port owning it already.
        owner: String,
    },
    /// The run loop could not pin itself.
    #[error("cannot pin the switch to core {0}: no such core or affinity refused")]
    Pin(usize),
    /// An untrusted port's admitted MAC cannot be pinned to it.
    #[error("port {port}: its MAC cannot be pinned: {why}")]
    Admission {
        /// The port's name.
        port: String,
        /// Why.
        why: PinError,
    },
}

/// What the switch knows about one pool: enough to check a handle and find its bytes.
#[derive(Debug, Clone)]
struct PoolSlot {
    mem: Option<Memory>,
    /// `mem` as the pool's buffers, for reading headers without a check per frame.
    blocks: Option<Blocks>,
    /// Buffers in the pool; 0 when the pool is unknown (every handle fails the check).
    count: u32,
    /// log2 of the buffer size.
    shift: u32,
    /// Buffer size in bytes.
    size: u32,
    /// The port buffers go back to.
    owner: u16,
}

const NO_POOL: PoolSlot = PoolSlot {
    mem: None,
    blocks: None,
    count: 0,
    shift: 0,
    size: 0,
    owner: NO_OWNER,
};

impl PoolSlot {
    /// The region of buffer `h` and the frame length check, or `None` for a bad frame.
    #[inline]
    fn buf(&self, h: BufHandle) -> Option<(Region<'_>, usize)> {
        let idx = h.idx().0;
        if idx >= self.count {
            return None;
        }
        Some((self.mem.as_ref()?.region(), (idx as usize) << self.shift))
    }
}

/// What pass 1 found of a burst as a whole.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// The first frame's pool.
    first_pool: u32,
    /// Nonzero when some frame is in another pool.
    mixed: u32,
    /// Some frame carries offload metadata.
    any_meta: bool,
}

/// Frames queued for one destination during a burst.
struct DestQueue {
    frames: [Frame; MAX_BURST],
    n: usize,
    /// Bit `j`: entry `j` is a flooded frame this destination gets a copy of.
    copy: [u64; MAX_BURST / 64],
    copies: usize,
    /// Pools the destination reads (cached `Port::tx_pools`).
    tx_pools: PoolSet,
    /// For a burst of an untrusted port: entry `j`'s checked MACs.
    macs: [MacHeader; MAX_BURST],
    /// For a burst of an untrusted port: some entry goes by handle (with its MACs).
    by_handle: bool,
    /// What the destination takes as it is (cached `Port::tx_offloads`).
    offloads: TxOffloads,
    /// Some entry is a frame the destination does not take as it is: it is cut or
    /// completed as it is copied (`Switch::make_copies_offloaded`).
    work: bool,
}

impl DestQueue {
    fn new(tx_pools: PoolSet, offloads: TxOffloads) -> Self {
        Self {
            frames: [Frame::new(BufHandle::from_raw(0), 0); MAX_BURST],
            n: 0,
            copy: [0; MAX_BURST / 64],
            copies: 0,
            tx_pools,
            macs: [[0; 12]; MAX_BURST],
            by_handle: false,
            offloads,
            work: false,
        }
    }

    /// Queues `f` (with its checked MACs `hdr` for a burst of an untrusted port) and returns
    /// its entry.
    #[inline(always)]
    fn push<const ADMITTED: bool>(&mut self, f: Frame, hdr: &MacHeader) -> usize {
        let j = self.n;
        self.frames[j] = f;
        if ADMITTED {
            self.macs[j] = *hdr;
        }
        self.work |= f.meta != 0 && !self.offloads.takes(f.len, f.meta);
        self.n += 1;
        j
    }
}

pub(crate) struct Slot {
    pub(crate) port: Box<dyn Port>,
    counters: Arc<PortCounters>,
    /// The port has an [`Admission`]: its bursts take `Switch::forward_admitted`.
    admitted: bool,
}

/// A token bucket on the switch's clock (ticks of a millisecond): `rate` units a second,
/// holding up to a tenth of a second's worth, and never less than `floor` units. Tokens are
/// kept in thousandths of a unit, so a tick adds exactly `rate` of them.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: u64,
    depth: u64,
    level: u64,
}

impl Bucket {
    /// A full bucket for `rate` units a second; `None` for a rate of 0 (no limit).
    fn new(rate: u64, floor: u64) -> Option<Self> {
        let depth = (rate / 10).max(floor).saturating_mul(1000);
        (rate > 0).then_some(Self {
            rate,
            depth,
            level: depth,
        })
    }

    fn refill(&mut self, ticks: u64) {
        self.level = self
            .level
            .saturating_add(ticks.saturating_mul(self.rate))
            .min(self.depth);
    }

    fn has(&self, units: u64) -> bool {
        self.level >= units.saturating_mul(1000)
    }

    fn take(&mut self, units: u64) {
        self.level = self.level.saturating_sub(units.saturating_mul(1000));
    }
}

/// Least depth of a frame bucket, in frames.
const RATE_FLOOR_FRAMES: u64 = 64;
/// Least depth of a byte bucket, in bytes (the largest frame).
const RATE_FLOOR_BYTES: u64 = 64 * 1024;

/// What the switch keeps for a port with an [`Admission`].
#[derive(Debug, Clone, Copy)]
struct Admitted {
    /// The admitted source MAC.
    key: MacKey,
    frames: Option<Bucket>,
    bytes: Option<Bucket>,
    /// The tick the buckets were last filled at.
    at: u32,
}

impl Admitted {
    fn new(a: &Admission, now: u32) -> Self {
        Self {
            key: mac_key(&a.mac),
            frames: Bucket::new(a.frames_per_sec, RATE_FLOOR_FRAMES),
            bytes: Bucket::new(a.bytes_per_sec, RATE_FLOOR_BYTES),
            at: now,
        }
    }

    /// Tops the buckets up for the ticks since the last call.
    #[inline]
    fn refill(&mut self, now: u32) {
        let ticks = now.wrapping_sub(self.at) as u64;
        self.at = now;
        for b in [&mut self.frames, &mut self.bytes].into_iter().flatten() {
            b.refill(ticks);
        }
    }

    /// Takes a frame of `len` bytes out of the buckets; `false` (nothing taken) when one
    /// of them is short.
    #[inline]
    fn admit(&mut self, len: u32) -> bool {
        let ok =
            self.frames.is_none_or(|b| b.has(1)) && self.bytes.is_none_or(|b| b.has(len as u64));
        if ok {
            if let Some(b) = &mut self.frames {
                b.take(1);
            }
            if let Some(b) = &mut self.bytes {
                b.take(len as u64);
            }
        }
        ok
    }
}

/// Frames of one burst dropped at its ingress port, by reason.
#[derive(Debug, Default, Clone, Copy)]
struct Ingress {
    runt: u64,
    bad: u64,
    hairpin: u64,
    nodest: u64,
    group_source: u64,
    spoofed: u64,
    link_local: u64,
    rate_limited: u64,
}

impl Ingress {
    #[inline]
    fn any(&self) -> bool {
        (self.runt
            | self.bad
            | self.hairpin
            | self.nodest
            | self.group_source
            | self.spoofed
            | self.link_local
            | self.rate_limited)
            != 0
    }

    fn count(&self, c: &PortCounters) {
        for (reason, k) in [
            (DropReason::Runt, self.runt),
            (DropReason::BadFrame, self.bad),
            (DropReason::Hairpin, self.hairpin),
            (DropReason::NoDestination, self.nodest),
            (DropReason::GroupSource, self.group_source),
            (DropReason::Spoofed, self.spoofed),
            (DropReason::LinkLocal, self.link_local),
            (DropReason::RateLimited, self.rate_limited),
        ] {
            if k > 0 {
                c.add_drop(reason, k);
            }
        }
    }
}

/// An ingress port's last one-run burst: its header, tick and FDB generation, and where
/// it went. Valid only while all three match (`generation` starts at a value the FDB never
/// reaches).
#[derive(Clone, Copy)]
struct Memo {
    w0: u64,
    w1: u32,
    now: u32,
    generation: u64,
    dest: u16,
}

const NO_MEMO: Memo = Memo {
    w0: 0,
    w1: 0,
    now: 0,
    generation: u64::MAX,
    dest: FLOOD,
};

/// Buffers on their way back to their owners, gathered per owner.
struct Returns {
    stash: Vec<Vec<BufHandle>>,
    owners: Vec<u16>,
    orphans: u64,
}

impl Returns {
    #[inline]
    fn put(&mut self, pools: &[PoolSlot; POOLS], h: BufHandle) {
        let owner = pools[h.pool().0 as usize].owner;
        match self.stash.get_mut(owner as usize) {
            Some(s) => {
                if s.is_empty() {
                    self.owners.push(owner);
                }
                s.push(h);
            }
            None => self.orphans += 1,
        }
    }

    fn flush(&mut self, ports: &mut [Option<Slot>]) {
        for &o in &self.owners {
            let s = &mut self.stash[o as usize];
            if let Some(Some(slot)) = ports.get_mut(o as usize) {
                slot.port.reclaim(s);
                bump(&slot.counters.reclaimed, s.len() as u64);
            } else {
                self.orphans += s.len() as u64;
            }
            s.clear();
        }
        self.owners.clear();
    }

    /// Returns `bufs` to their owners: as one slice when they share a pool.
    #[inline(always)]
    fn give(&mut self, pools: &[PoolSlot; POOLS], ports: &mut [Option<Slot>], bufs: &[BufHandle]) {
        let Some(first) = bufs.first() else {
            return;
        };
        let p = first.pool();
        let p0 = first.raw() >> 24;
        if pools_differ(bufs, p0) == 0 {
            let owner = pools[p.0 as usize].owner;
            if let Some(Some(slot)) = ports.get_mut(owner as usize) {
                slot.port.reclaim(bufs);
                bump(&slot.counters.reclaimed, bufs.len() as u64);
            } else {
                self.orphans += bufs.len() as u64;
            }
            return;
        }
        for &h in bufs {
            self.put(pools, h);
        }
        self.flush(ports);
    }
}

/// The L2 switch. See the module docs.
pub struct Switch {
    pub(crate) burst: usize,
    learning: bool,
    pub(crate) core: Option<usize>,
    pub(crate) idle: IdleConfig,
    pub(crate) ports: Vec<Option<Slot>>,
    queues: Vec<DestQueue>,
    flood: Vec<u16>,
    pools: Box<[PoolSlot; POOLS]>,
    fdb: Fdb,
    clock: Clock,
    epoch: Instant,
    now: u32,
    polls: u32,
    /// The tick the sweep credit was last topped up at.
    swept_at: u32,
    /// Slots the aging sweep may still visit (`SWEEP_PER_TICK` a tick, at most twice the
    /// table): sweeping runs once a tick, not on every poll.
    sweep_credit: usize,
    rx: Box<[Frame; MAX_BURST]>,
    dests: Box<[u16; MAX_BURST]>,
    /// For a burst of an untrusted port: each frame's 12 MAC bytes, copied once.
    heads: Box<[MacHeader; MAX_BURST]>,
    /// Per port: its admission state, for ports with an [`Admission`].
    admitted: Vec<Option<Admitted>>,
    /// Per ingress port: its last one-run burst and where it went.
    memo: Vec<Memo>,
    scratch: Box<[Frame; MAX_BURST]>,
    done: Box<[BufHandle; MAX_BURST]>,
    allocated: Box<[BufHandle; MAX_BURST]>,
    active: Vec<u16>,
    free_after: Vec<BufHandle>,
    /// A frame being cut or completed (`make_copies_offloaded`): the whole frame, then one
    /// segment at a time.
    whole: Vec<u8>,
    segment: Vec<u8>,
    /// The entries `make_copies_offloaded` makes, with their MACs.
    made: Vec<(Frame, MacHeader)>,
    returns: Returns,
    pub(crate) waker: Arc<Waker>,
    /// A capture of one port's frames, if one runs (checked once per burst).
    tap: Option<Box<Tap>>,
}

/// One frame a capture took: when, which way, its length and first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// ns since the Unix epoch.
    pub ts_ns: u64,
    /// The frame's whole length.
    pub orig_len: u32,
    /// Frames the capture lost (its queue was full) since the one before.
    pub lost: u32,
    /// Sent to the port (else received from it).
    pub tx: bool,
    /// The frame's first bytes (at most the capture's snaplen).
    pub data: Vec<u8>,
}

/// A capture of the frames one port receives and/or is sent ([`Switch::start_capture`]):
/// each is copied (up to `snaplen` bytes) into a queue another thread drains; when the queue
/// is full the frame is counted as lost, never waited for.
#[derive(Debug)]
pub struct Tap {
    /// The port.
    pub port: PortId,
    /// Frames the port receives.
    pub rx: bool,
    /// Frames sent to the port.
    pub tx: bool,
    /// Bytes of each frame at most.
    pub snaplen: usize,
    /// Where captured frames go.
    pub out: crossbeam_channel::Sender<Captured>,
    /// Names this capture (to end it and not a later one).
    pub id: u64,
    lost: u32,
}

impl Tap {
    /// Capture `id` of `port` (`rx`, `tx`: which ways) into `out`.
    pub fn new(
        id: u64,
        port: PortId,
        rx: bool,
        tx: bool,
        snaplen: usize,
        out: crossbeam_channel::Sender<Captured>,
    ) -> Self {
        Self {
            port,
            rx,
            tx,
            snaplen,
            out,
            id,
            lost: 0,
        }
    }

    /// Copies `frames` (with `macs`, the MACs they leave with, when they go by handle from
    /// an untrusted party's pool) into the queue. Returns `false` once the other end is gone.
    #[cold]
    #[inline(never)]
    fn take(
        &mut self,
        pools: &[PoolSlot; POOLS],
        frames: &[Frame],
        macs: Option<&[MacHeader]>,
        tx: bool,
    ) -> bool {
        let ts_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for (i, f) in frames.iter().enumerate() {
            let mut data = vec![0; usize::from(f.len).min(self.snaplen)];
            let read = pools[f.buf.pool().0 as usize]
                .buf(f.buf)
                .is_some_and(|(m, off)| m.read(off, &mut data).is_ok());
            if !read {
                continue;
            }
            if let (Some(h), true) = (macs.and_then(|m| m.get(i)), data.len() >= 12) {
                data[..12].copy_from_slice(h);
            }
            let c = Captured {
                ts_ns,
                orig_len: u32::from(f.len),
                lost: self.lost,
                tx,
                data,
            };
            match self.out.try_send(c) {
                Ok(()) => self.lost = 0,
                Err(crossbeam_channel::TrySendError::Full(_)) => {
                    self.lost = self.lost.saturating_add(1)
                }
                Err(crossbeam_channel::TrySendError::Disconnected(_)) => return false,
            }
        }
        true
    }
}

/// Frames received (`tx` false) or sent (`tx` true) on port `p`, to the capture if it wants
/// them; a capture whose other end is gone is ended.
#[inline(always)]
fn tap(
    tap: &mut Option<Box<Tap>>,
    pools: &[PoolSlot; POOLS],
    p: usize,
    frames: &[Frame],
    macs: Option<&[MacHeader]>,
    tx: bool,
) {
    if let Some(t) = tap
        && t.port.0 as usize == p
        && (if tx { t.tx } else { t.rx })
        && !frames.is_empty()
        && !t.take(pools, frames, macs, tx)
    {
        *tap = None;
    }
}

impl Switch {
    /// Starts capturing `t.port`'s frames; `false` (and nothing started) when a capture runs
    /// already or the port does not exist.
    pub fn start_capture(&mut self, t: Tap) -> bool {
        if self.tap.is_some() || self.port(t.port).is_none() {
            return false;
        }
        self.tap = Some(Box::new(t));
        true
    }

    /// Ends capture `id`, if it runs (its queue's other end then sees it disconnected).
    pub fn stop_capture(&mut self, id: u64) {
        if self.tap.as_ref().is_some_and(|t| t.id == id) {
            self.tap = None;
        }
    }

    /// The port being captured, if any.
    pub fn capturing(&self) -> Option<PortId> {
        self.tap.as_ref().map(|t| t.port)
    }
}

impl Switch {
    /// A switch with no ports.
    pub fn new(cfg: SwitchConfig) -> Result<Self, SwitchError> {
        if cfg.burst == 0 || cfg.burst > MAX_BURST {
            return Err(SwitchError::Burst(cfg.burst));
        }
        let age = cfg.aging.as_millis().min(u32::MAX as u128 / 2) as u32;
        let mut fdb = Fdb::new(cfg.fdb_entries, age);
        if cfg.max_stations_per_port > 0 {
            fdb.set_port_limit(cfg.max_stations_per_port);
        }
        Ok(Self {
            burst: cfg.burst,
            learning: cfg.learning,
            core: cfg.core,
            idle: cfg.idle,
            ports: Vec::new(),
            queues: Vec::new(),
            flood: Vec::new(),
            pools: Box::new([NO_POOL; POOLS]),
            fdb,
            clock: cfg.clock,
            epoch: Instant::now(),
            now: 0,
            polls: 0,
            swept_at: 0,
            sweep_credit: 0,
            rx: Box::new([Frame::new(BufHandle::from_raw(0), 0); MAX_BURST]),
            dests: Box::new([FLOOD; MAX_BURST]),
            heads: Box::new([[0; 12]; MAX_BURST]),
            admitted: Vec::new(),
            memo: Vec::new(),
            scratch: Box::new([Frame::new(BufHandle::from_raw(0), 0); MAX_BURST]),
            done: Box::new([BufHandle::from_raw(0); MAX_BURST]),
            allocated: Box::new([BufHandle::from_raw(0); MAX_BURST]),
            active: Vec::with_capacity(MAX_PORTS),
            free_after: Vec::with_capacity(MAX_BURST),
            whole: vec![0; u16::MAX as usize],
            segment: Vec::with_capacity(u16::MAX as usize),
            made: Vec::with_capacity(MAX_BURST),
            returns: Returns {
                stash: Vec::new(),
                owners: Vec::with_capacity(MAX_PORTS),
                orphans: 0,
            },
            waker: Arc::new(Waker::default()),
            tap: None,
        })
    }

    /// Adds a port; its pools (`Port::pools`, which must cover `own_pools`) join the switch's
    /// pool table and it joins the flood set.
    pub fn add_port(&mut self, port: Box<dyn Port>) -> Result<PortId, SwitchError> {
        let own = port.own_pools();
        let exposed = port.pools();
        let mut mine: Vec<Pool> = Vec::new();
        for id in 0..POOLS {
            let pid = PoolId(id as u8);
            if !own.contains(pid) {
                continue;
            }
            let Some(pool) = exposed.iter().find(|p| p.id() == pid) else {
                return Err(SwitchError::PoolUnexposed {
                    port: port.name().to_string(),
                    pool: pid.0,
                });
            };
            let owner = self.pools[id].owner;
            if owner != NO_OWNER {
                let owner = self.port(PortId(owner)).map(|p| p.name().to_string());
                return Err(SwitchError::PoolTaken {
                    port: port.name().to_string(),
                    pool: pid.0,
                    owner: owner.unwrap_or_default(),
                });
            }
            mine.push(pool.clone());
        }
        let idx = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.ports.len() < MAX_PORTS => {
                self.ports.push(None);
                self.queues
                    .push(DestQueue::new(PoolSet::EMPTY, TxOffloads::NONE));
                self.memo.push(NO_MEMO);
                self.admitted.push(None);
                self.returns.stash.push(Vec::with_capacity(STASH));
                self.ports.len() - 1
            }
            None => return Err(SwitchError::TooManyPorts),
        };
        // An untrusted port's MAC is its own from now on, before anything else changes.
        let admission = port.admission();
        if let Some(a) = &admission {
            let (key, at) = (mac_key(&a.mac), idx as u16);
            let pinned = if a.fixed {
                self.fdb.pin(key, at)
            } else {
                self.fdb.claim(key, at)
            };
            pinned.map_err(|why| SwitchError::Admission {
                port: port.name().to_string(),
                why,
            })?;
        }
        self.admitted[idx] = admission.map(|a| Admitted::new(&a, self.now));
        for pool in mine {
            let layout = pool.layout();
            let shift = layout.buf_size.trailing_zeros();
            self.pools[pool.id().0 as usize] = PoolSlot {
                blocks: pool.memory().blocks(shift, layout.count as u32).ok(),
                mem: Some(pool.memory().clone()),
                count: layout.count as u32,
                shift,
                size: layout.buf_size as u32,
                owner: idx as u16,
            };
        }
        self.queues[idx] = DestQueue::new(port.tx_pools(), port.tx_offloads());
        self.memo[idx] = NO_MEMO;
        self.flood.push(idx as u16);
        self.ports[idx] = Some(Slot {
            port,
            counters: Arc::new(PortCounters::default()),
            admitted: admission.is_some(),
        });
        Ok(PortId(idx as u16))
    }

    /// Removes a port and returns it. Its stations leave the FDB and its pools leave the
    /// table; buffers it had taken for transmit and still reports done are given back first.
    /// Buffers of its pools that other ports still hold are counted as orphans when they
    /// come back.
    pub fn remove_port(&mut self, id: PortId) -> Option<Box<dyn Port>> {
        let i = id.0 as usize;
        if self.capturing() == Some(id) {
            self.tap = None;
        }
        let mut slot = self.ports.get_mut(i)?.take()?;
        let k = slot.port.tx_done(&mut self.done[..]).min(MAX_BURST);
        self.ports[i] = Some(slot);
        self.returns
            .give(&self.pools, &mut self.ports, &self.done[..k]);
        let slot = self.ports[i].take()?;
        self.fdb.flush_port(id.0);
        for p in self.pools.iter_mut() {
            if p.owner == id.0 {
                *p = NO_POOL;
            }
        }
        self.flood.retain(|&p| p != id.0);
        self.queues[i] = DestQueue::new(PoolSet::EMPTY, TxOffloads::NONE);
        self.memo[i] = NO_MEMO;
        self.admitted[i] = None;
        Some(slot.port)
    }

    /// Re-reads a port's `tx_pools` (after it was granted or lost access to a pool).
    pub fn refresh_port(&mut self, id: PortId) {
        if let Some(Some(slot)) = self.ports.get(id.0 as usize) {
            self.queues[id.0 as usize].tx_pools = slot.port.tx_pools();
            self.queues[id.0 as usize].offloads = slot.port.tx_offloads();
        }
    }

    /// The port `id`, for its name, MAC, link and statistics.
    pub fn port(&self, id: PortId) -> Option<&dyn Port> {
        Some(self.ports.get(id.0 as usize)?.as_ref()?.port.as_ref())
    }

    /// The port `id`, mutable: for grants and revocations between bursts, never on the
    /// burst path. Call [`Switch::refresh_port`] after anything that changes its `tx_pools`.
    pub fn port_mut(&mut self, id: PortId) -> Option<&mut dyn Port> {
        Some(self.ports.get_mut(id.0 as usize)?.as_mut()?.port.as_mut())
    }

    /// Ids of the ports present.
    pub fn port_ids(&self) -> Vec<PortId> {
        (0..self.ports.len())
            .filter(|&i| self.ports[i].is_some())
            .map(|i| PortId(i as u16))
            .collect()
    }

    /// The switch counters of port `id`, shareable with other threads.
    pub fn counters(&self, id: PortId) -> Option<Arc<PortCounters>> {
        Some(self.ports.get(id.0 as usize)?.as_ref()?.counters.clone())
    }

    /// The forwarding database.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// FDB counters.
    pub fn fdb_stats(&self) -> FdbStats {
        self.fdb.stats()
    }

    /// Buffers that came back for a pool no port owns any more.
    pub fn orphans(&self) -> u64 {
        self.returns.orphans
    }

    /// The switch's current time in ticks (milliseconds).
    pub fn now(&self) -> u32 {
        self.now
    }

    /// Whether any port has work that polling will not show (adaptive idle must not park).
    pub(crate) fn any_wants_poll(&self) -> bool {
        self.ports.iter().flatten().any(|s| s.port.wants_poll())
    }

    fn tick(&mut self) {
        self.now = match &self.clock {
            Clock::Manual(c) => c.millis() as u32,
            Clock::Monotonic => {
                if self.polls.is_multiple_of(32) {
                    self.epoch.elapsed().as_millis() as u32
                } else {
                    self.now
                }
            }
        };
        self.polls = self.polls.wrapping_add(1);
    }

    /// One round: every port's finished transmissions go back to their owners, then one
    /// receive burst from every port is forwarded. Returns the frames received.
    pub fn poll(&mut self) -> usize {
        self.tick();
        let mut total = 0;
        for p in 0..self.ports.len() {
            let Some(slot) = self.ports[p].as_mut() else {
                continue;
            };
            let k = slot.port.tx_done(&mut self.done[..]).min(MAX_BURST);
            if k > 0 {
                self.returns
                    .give(&self.pools, &mut self.ports, &self.done[..k]);
            }
            let Some(slot) = self.ports[p].as_mut() else {
                continue;
            };
            let n = slot
                .port
                .rx_burst(&mut self.rx[..self.burst])
                .min(self.burst);
            if n > 0 && self.tap.is_some() {
                tap(&mut self.tap, &self.pools, p, &self.rx[..n], None, false);
            }
            if n > 0 {
                if slot.admitted {
                    self.forward_admitted(p, n);
                } else {
                    self.forward(p, n);
                }
                total += n;
            }
        }
        self.age_fdb();
        total
    }

    /// The FDB's aging sweep, paced by the clock: `SWEEP_PER_TICK` slots for every tick
    /// since the last top-up, visited at most `SWEEP_STEP` a poll. Aged entries are already
    /// invisible to lookups; the sweep only frees their slots, so it need not run on every
    /// poll.
    #[inline]
    fn age_fdb(&mut self) {
        if self.now != self.swept_at {
            let ticks = self.now.wrapping_sub(self.swept_at) as usize;
            self.swept_at = self.now;
            let most = 2 * self.fdb.capacity();
            self.sweep_credit =
                (self.sweep_credit + ticks.saturating_mul(SWEEP_PER_TICK)).min(most);
        }
        if self.sweep_credit > 0 {
            let step = self.sweep_credit.min(SWEEP_STEP);
            self.sweep_credit -= step;
            self.fdb.sweep(self.now, step);
        }
    }

    /// Forwards `self.rx[..n]`, received on port `inp`, a port the switch learns from.
    fn forward(&mut self, inp: usize, n: usize) {
        let inp16 = inp as u16;
        let now = self.now;
        let (mut runt, mut bad) = (0u64, 0);
        let first_pool = self.rx[0].buf.raw() >> 24;
        let ps = &self.pools[first_pool as usize];
        let rx = &self.rx[..n];
        // Whole-burst check (branch-free, vectorised, in the pool's `Blocks` view): one pool,
        // every index in it, every length a whole Ethernet header and at most a buffer.
        let lens = ETH_HEADER as u16..=ps.size.min(u16::MAX as u32) as u16;
        let checked = match (ps.blocks.as_ref(), Frame::words(rx)) {
            (Some(blocks), Some(words)) => blocks.frames(words, PoolId(first_pool as u8), lens),
            _ => None,
        };
        let mut mixed = 0u32;
        // Set when pass 1 found every frame of the burst going to the same place (then
        // `dests` is left unwritten until the scatter below needs it).
        let mut single: Option<u16> = None;
        let any_meta = match &checked {
            Some(burst) => burst.any_meta(),
            None => rx.iter().any(|f| f.meta != 0),
        };
        match checked {
            Some(burst) => {
                // Pass 1, regular burst: read each header and decide. Every frame was checked
                // above, so the header reads need no check of their own.
                // Bursts are mostly runs of one flow: find how far the first frame's 12
                // header bytes repeat, decide once.
                let (h0, run) = run_of_first(&burst);
                let dests = &mut self.dests[..n];
                // The MAC pairs to learn and look up: the first frame's alone when the whole
                // burst is one run, else every frame's (the FDB repeats its answer for a run).
                // Unknown destinations are flooded (UNKNOWN == FLOOD); never back out.
                let hairpin = |d: u16| if d == inp16 { HAIRPIN } else { d };
                if run == n {
                    // The ingress port's last one-run burst with the same header, in the
                    // same tick and FDB generation, went where this one goes: its answer
                    // was taken without writing or counting anything, so it still holds.
                    let memo = &mut self.memo[inp];
                    let d = if memo.w0 == h0.0
                        && memo.w1 == h0.1
                        && memo.now == now
                        && memo.generation == self.fdb.generation()
                    {
                        memo.dest
                    } else {
                        look_up_run(&mut self.fdb, memo, inp16, now, self.learning, h0)
                    };
                    single = Some(hairpin(d));
                } else {
                    look_up_burst(&mut self.fdb, &burst, inp16, now, self.learning, dests);
                }
            }
            None => {
                // Pass 1, a burst with something unusual: check each frame on its own.
                let mut look = Lookup {
                    fdb: &mut self.fdb,
                    learning: self.learning,
                    inp: inp16,
                    now,
                    last_src: u64::MAX,
                };
                let pools = &*self.pools;
                let mut pool_id = first_pool;
                let mut ps = &pools[first_pool as usize];
                for (f, dest) in rx.iter().zip(self.dests[..n].iter_mut()) {
                    let pid = f.buf.raw() >> 24;
                    if pid != pool_id {
                        pool_id = pid;
                        ps = &pools[pid as usize];
                        mixed |= pid ^ first_pool;
                    }
                    let Some((mem, off)) = ps.buf(f.buf) else {
                        // Not a buffer anyone owns: nothing to give back.
                        bad += 1;
                        *dest = DROPPED;
                        continue;
                    };
                    if (f.len as u32).wrapping_sub(ETH_HEADER as u32)
                        > ps.size.wrapping_sub(ETH_HEADER as u32)
                    {
                        if (f.len as usize) < ETH_HEADER {
                            runt += 1;
                        } else {
                            bad += 1;
                        }
                        self.free_after.push(f.buf);
                        *dest = DROPPED;
                        continue;
                    }
                    let mut hdr = [0u8; 16];
                    if mem.read(off, &mut hdr).is_err() {
                        bad += 1;
                        self.free_after.push(f.buf);
                        *dest = DROPPED;
                        continue;
                    }
                    let (w0, w1) = split16(&hdr);
                    *dest = look.decide(w0, w1 as u32);
                }
            }
        }
        let drops = Ingress {
            runt,
            bad,
            ..Ingress::default()
        };
        let shape = Shape {
            first_pool,
            mixed,
            any_meta,
        };
        self.deliver::<false>(inp, n, single, shape, drops);
    }

    /// Forwards `self.rx[..n]`, received on port `inp`, whose frames come from an untrusted
    /// party (see the module docs): each frame's 12 MAC bytes are copied once into
    /// `self.heads`, and every decision on the frame, and every header it leaves with, is
    /// that copy. Nothing is learned (the port's admitted MAC is pinned to it); a frame is
    /// dropped when its source is a group address or not the admitted MAC, when it is sent
    /// to a reserved link-local group (01:80:c2:00:00:0x: pause, STP, LLDP), or when it is
    /// over the port's rate.
    #[inline(never)]
    fn forward_admitted(&mut self, inp: usize, n: usize) {
        let inp16 = inp as u16;
        let now = self.now;
        let mut drops = Ingress::default();
        let Some(adm) = self.admitted.get_mut(inp).and_then(Option::as_mut) else {
            return;
        };
        adm.refill(now);
        let first_pool = self.rx[0].buf.raw() >> 24;
        let mut mixed = 0u32;
        let pools = &*self.pools;
        for i in 0..n {
            let f = self.rx[i];
            let ps = &pools[f.buf.pool().0 as usize];
            mixed |= (f.buf.raw() >> 24) ^ first_pool;
            let Some((mem, off)) = ps.buf(f.buf) else {
                // Not a buffer anyone owns: nothing to give back.
                drops.bad += 1;
                self.dests[i] = DROPPED;
                continue;
            };
            let mut hdr: MacHeader = [0; 12];
            let len = f.len as u32;
            let d = if ps.owner != inp16 {
                // Only its own buffers may come from an untrusted port.
                drops.bad += 1;
                DROPPED
            } else if len.wrapping_sub(ETH_HEADER as u32) > ps.size.wrapping_sub(ETH_HEADER as u32)
            {
                if len < ETH_HEADER as u32 {
                    drops.runt += 1;
                } else {
                    drops.bad += 1;
                }
                DROPPED
            } else if mem.read(off, &mut hdr).is_err() {
                drops.bad += 1;
                DROPPED
            } else {
                // The one read of the header: from here on only `hdr` is looked at.
                self.heads[i] = hdr;
                let (w0, w1) = split12(&hdr);
                let (dst, src) = mac_pair(w0, w1);
                if is_group(src) {
                    drops.group_source += 1;
                    DROPPED
                } else if src != adm.key {
                    drops.spoofed += 1;
                    DROPPED
                } else if dst & LINK_LOCAL_MASK == LINK_LOCAL {
                    drops.link_local += 1;
                    DROPPED
                } else if !adm.admit(len) {
                    drops.rate_limited += 1;
                    DROPPED
                } else if is_group(dst) {
                    FLOOD
                } else {
                    match self.fdb.lookup(dst, now) {
                        Some(p) if p == inp16 => HAIRPIN,
                        Some(p) => p,
                        None => FLOOD,
                    }
                }
            };
            if d == DROPPED {
                self.free_after.push(f.buf);
            }
            self.dests[i] = d;
        }
        let any_meta = self.rx[..n].iter().any(|f| f.meta != 0);
        let shape = Shape {
            first_pool,
            mixed,
            any_meta,
        };
        self.deliver::<true>(inp, n, None, shape, drops);
    }

    /// Pass 2 of a burst whose destinations pass 1 wrote to `self.dests` (or, when
    /// `single`, found to be all the same): delivers every frame under the delivery rule,
    /// counts the burst at its ingress port and returns every buffer no destination keeps.
    /// With `ADMITTED` (a burst of an untrusted port) every copy carries the frame's checked
    /// header from `self.heads`, and every frame handed over by handle goes with it
    /// ([`Port::tx_burst_with_macs`]).
    #[inline(always)]
    fn deliver<const ADMITTED: bool>(
        &mut self,
        inp: usize,
        n: usize,
        single: Option<u16>,
        shape: Shape,
        mut drops: Ingress,
    ) {
        let Shape {
            first_pool,
            mixed,
            any_meta,
        } = shape;
        let inp16 = inp as u16;
        let (d0, differ) = match single {
            Some(d) => (d, 0),
            None => {
                let d0 = self.dests[0];
                (d0, self.dests[..n].iter().fold(0, |a, &d| a | (d ^ d0)))
            }
        };

        let uniform = differ == 0 && d0 < FLOOD_OR_DROP && mixed == 0;
        // Without offload metadata in the burst (pass 1 found none: the common case) no
        // frame needs a look of its own.
        let taken_as_is = |q: &DestQueue, rx: &[Frame]| {
            !any_meta
                || q.offloads == TxOffloads::ALL
                || rx.iter().all(|f| q.offloads.takes(f.len, f.meta))
        };
        if uniform
            && self.queues.get(d0 as usize).is_some_and(|q| {
                !q.tx_pools.contains(PoolId(first_pool as u8)) && taken_as_is(q, &self.rx[..n])
            })
        {
            // The whole burst goes to one destination that cannot read its pool: copy it
            // straight from the receive array, then return the originals as one slice.
            // Segments are coalesced only for an app (a host, whose stack takes the merged
            // segment as it is): a NIC that takes large frames wants them with a segment size
            // to cut on, which a merge does not give.
            let host = self.admitted.get(d0 as usize).is_some_and(Option::is_some);
            if !ADMITTED && host && self.queues[d0 as usize].offloads.max_gso_frame >= GRO_MIN {
                self.copy_burst_gro(inp, d0 as usize, n);
            } else {
                self.copy_burst::<ADMITTED>(inp, d0 as usize, n);
            }
            return;
        }
        if uniform
            && self.queues.get(d0 as usize).is_some_and(|q| {
                q.tx_pools.contains(PoolId(first_pool as u8)) && taken_as_is(q, &self.rx[..n])
            })
        {
            // The whole burst goes to one destination that reads its pool: hand it over as
            // it came in.
            if let Some(Some(slot)) = self.ports.get(inp) {
                bump(&slot.counters.rx, n as u64);
            }
            let Some(Some(slot)) = self.ports.get_mut(d0 as usize) else {
                return;
            };
            let sent = if ADMITTED {
                slot.port
                    .tx_burst_with_macs(&self.rx[..n], &self.heads[..n])
            } else {
                slot.port.tx_burst(&self.rx[..n])
            }
            .min(n);
            bump(&slot.counters.tx, sent as u64);
            if self.tap.is_some() {
                let macs = ADMITTED.then_some(&self.heads[..sent]);
                tap(
                    &mut self.tap,
                    &self.pools,
                    d0 as usize,
                    &self.rx[..sent],
                    macs,
                    true,
                );
            }
            if sent < n {
                slot.counters
                    .add_drop(DropReason::RingFull, (n - sent) as u64);
                let mut rest = [BufHandle::from_raw(0); MAX_BURST];
                for (r, f) in rest.iter_mut().zip(&self.rx[sent..n]) {
                    *r = f.buf;
                }
                self.returns
                    .give(&self.pools, &mut self.ports, &rest[..n - sent]);
            }
            return;
        }

        // Scatter into per-destination queues.
        if let Some(d) = single {
            self.dests[..n].fill(d);
        }
        let mut flooded = 0u64;
        for i in 0..n {
            let f = self.rx[i];
            let d = self.dests[i];
            if d >= FLOOD_OR_DROP {
                match d {
                    FLOOD => {
                        flooded += 1;
                        let hdr = if ADMITTED { self.heads[i] } else { [0; 12] };
                        if !self.flood_frame::<ADMITTED>(inp16, f, &hdr) {
                            drops.nodest += 1;
                        }
                    }
                    HAIRPIN => {
                        drops.hairpin += 1;
                        self.free_after.push(f.buf);
                    }
                    GROUP_SRC => {
                        drops.group_source += 1;
                        self.free_after.push(f.buf);
                    }
                    // Counted, and its buffer on its way back, in pass 1.
                    _ => {}
                }
                continue;
            }
            let Some(q) = self.queues.get_mut(d as usize) else {
                drops.bad += 1;
                self.free_after.push(f.buf);
                continue;
            };
            if q.n == 0 {
                self.active.push(d);
            }
            if ADMITTED {
                q.by_handle |= q.tx_pools.contains(f.buf.pool());
            }
            q.push::<ADMITTED>(f, &self.heads[i]);
        }

        if let Some(Some(slot)) = self.ports.get(inp) {
            let c = &slot.counters;
            bump(&c.rx, n as u64);
            if flooded > 0 {
                bump(&c.flooded, flooded);
            }
            if drops.any() {
                drops.count(c);
            }
        }
        let mixed = mixed != 0;
        let first_pool = first_pool as u8;

        // Pass 2a: every copy, before any handle is passed on.
        for a in 0..self.active.len() {
            let d = self.active[a] as usize;
            let q = &mut self.queues[d];
            if q.work {
                self.make_copies_offloaded::<ADMITTED>(d);
                continue;
            }
            if q.copies == 0 && !mixed && q.tx_pools.contains(PoolId(first_pool)) {
                continue;
            }
            self.make_copies::<ADMITTED>(d);
        }

        // Pass 2b: one tx_burst per destination.
        for a in 0..self.active.len() {
            let d = self.active[a] as usize;
            let q = &mut self.queues[d];
            let queued = q.n;
            q.n = 0;
            let Some(Some(slot)) = self.ports.get_mut(d) else {
                for f in &q.frames[..queued] {
                    self.returns.put(&self.pools, f.buf);
                }
                continue;
            };
            let by_handle = ADMITTED && q.by_handle;
            let sent = if by_handle {
                slot.port
                    .tx_burst_with_macs(&q.frames[..queued], &q.macs[..queued])
            } else {
                slot.port.tx_burst(&q.frames[..queued])
            }
            .min(queued);
            q.by_handle = false;
            bump(&slot.counters.tx, sent as u64);
            if self.tap.is_some() {
                let macs = by_handle.then_some(&q.macs[..sent]);
                tap(&mut self.tap, &self.pools, d, &q.frames[..sent], macs, true);
            }
            if sent < queued {
                slot.counters
                    .add_drop(DropReason::RingFull, (queued - sent) as u64);
                for f in &q.frames[sent..queued] {
                    if self.pools[f.buf.pool().0 as usize].owner == d as u16 {
                        // A copy the destination did not take: its buffer, still unused.
                        slot.port.unalloc(&[f.buf]);
                    } else {
                        self.returns.put(&self.pools, f.buf);
                    }
                }
                self.returns.flush(&mut self.ports);
            }
        }
        self.active.clear();

        if !self.free_after.is_empty() {
            for &h in &self.free_after {
                self.returns.put(&self.pools, h);
            }
            self.free_after.clear();
            self.returns.flush(&mut self.ports);
        }
    }

    /// Delivers `self.rx[..n]` (all from `inp`, all to `d`, which cannot read their pool)
    /// by copying each frame once into a buffer `d` allocates (with `ADMITTED`, each copy
    /// with its checked header from `self.heads`).
    fn copy_burst<const ADMITTED: bool>(&mut self, inp: usize, d: usize, n: usize) {
        if let Some(Some(slot)) = self.ports.get(inp) {
            bump(&slot.counters.rx, n as u64);
        }
        let Some(Some(slot)) = self.ports.get_mut(d) else {
            return;
        };
        let got = slot.port.alloc(&mut self.allocated[..n]).min(n);
        let (mut out, mut fault) = (0, 0u64);
        let frames = self.rx[..got].iter().zip(&self.allocated[..got]);
        for ((f, &c), hdr) in frames.zip(self.heads.iter()) {
            let copied = if ADMITTED {
                copy_frame_as(&self.pools, *f, c, hdr)
            } else {
                copy_frame(&self.pools, *f, c)
            };
            let into = if copied {
                Some(c)
            } else {
                copy_long::<ADMITTED>(&self.pools, slot, *f, c, hdr)
            };
            match into {
                Some(b) => {
                    self.scratch[out] = Frame {
                        buf: b,
                        len: f.len,
                        meta: f.meta,
                    };
                    out += 1;
                }
                None => fault += 1,
            }
        }
        let sent = slot.port.tx_burst(&self.scratch[..out]).min(out);
        if self.tap.is_some() {
            tap(
                &mut self.tap,
                &self.pools,
                d,
                &self.scratch[..sent],
                None,
                true,
            );
        }
        let c = &slot.counters;
        bump(&c.tx, sent as u64);
        bump(&c.tx_copied, out as u64);
        if sent < out || got < n || fault > 0 {
            c.add_drop(DropReason::RingFull, (out - sent) as u64);
            c.add_drop(DropReason::NoBuffer, (n - got) as u64);
            c.add_drop(DropReason::CopyFault, fault);
            for f in &self.scratch[sent..out] {
                slot.port.unalloc(&[f.buf]);
            }
        }
        // Every original goes back to its owner (all from one pool: one call).
        for (h, f) in self.done.iter_mut().zip(&self.rx[..n]) {
            *h = f.buf;
        }
        self.returns
            .give(&self.pools, &mut self.ports, &self.done[..n]);
    }

    /// [`Switch::copy_burst`] for a burst from a trusted port to a destination that takes
    /// large frames: consecutive segments of one TCP flow are coalesced into one frame as they
    /// are copied ([`crate::gro`]). Each frame is copied once, straight from its buffer into
    /// the destination's; only a segment that could be merged and whose checksum nobody has
    /// verified is read once more, to verify it. Buffers the merges leave unused go back with
    /// `Port::unalloc`.
    #[cold]
    #[inline(never)]
    fn copy_burst_gro(&mut self, inp: usize, d: usize, n: usize) {
        if let Some(Some(slot)) = self.ports.get(inp) {
            bump(&slot.counters.rx, n as u64);
        }
        let cap = (self.queues[d].offloads.max_gso_frame as usize).min(u16::MAX as usize);
        let Self {
            ports,
            pools,
            rx,
            allocated,
            scratch,
            done,
            whole,
            returns,
            tap: tap_,
            ..
        } = self;
        let Some(Some(slot)) = ports.get_mut(d) else {
            return;
        };
        let got = slot.port.alloc(&mut allocated[..n]).min(n);
        let (mut used, mut out, mut fault, mut merged) = (0, 0, 0u64, 0u64);
        let mut m: Option<Merge> = None;
        for f in &rx[..n] {
            let len = f.len as usize;
            let meta = FrameMeta::from_bits(f.meta);
            let Some((src, soff)) = pools[f.buf.pool().0 as usize].buf(f.buf) else {
                fault += 1;
                continue;
            };
            let mut head = [0u8; gro::MAX_HEAD];
            let head = &mut head[..len.min(gro::MAX_HEAD)];
            let candidate = src.read(soff, head).is_ok() && gro::mergeable(head, len, meta);
            let good = candidate
                && (meta.needs_no_verify() || {
                    let all = &mut whole[..len];
                    src.read(soff, all).is_ok() && gro::checked(all, meta)
                });
            if candidate && let Some(r) = m.as_mut().and_then(|m| m.take(head, len, good)) {
                let (into, at) = m.as_ref().map_or((f.buf, 0), |m| (m.buf, m.len - r.len()));
                if pools[into.pool().0 as usize]
                    .buf(into)
                    .is_some_and(|(dst, off)| {
                        dst.copy_from(off + at, &src, soff + r.start, r.len())
                            .is_ok()
                    })
                {
                    merged += 1;
                    continue;
                }
                // The merge's buffer refused the write: it cannot be trusted to hold the
                // frame any more.
                fault += 1;
                if let Some(m) = m.take() {
                    scratch[m.slot].len = 0;
                }
                continue;
            }
            finish_merge(&mut m, pools, &mut scratch[..]);
            if used == got {
                continue;
            }
            let c = allocated[used];
            used += 1;
            let copied = copy_frame(pools, *f, c);
            let c = match copied {
                true => c,
                false => match copy_long::<false>(pools, slot, *f, c, &[0; 12]) {
                    Some(b) => b,
                    None => {
                        fault += 1;
                        continue;
                    }
                },
            };
            scratch[out] = Frame {
                buf: c,
                len: f.len,
                meta: f.meta,
            };
            if candidate {
                let cap = cap.min(pools[c.pool().0 as usize].size as usize);
                m = Merge::start(head, len, good, out, c, cap);
            }
            out += 1;
        }
        finish_merge(&mut m, pools, &mut scratch[..]);
        slot.port.unalloc(&allocated[used..got]);
        // A merge whose buffer failed leaves an empty entry: drop it here.
        let mut w = 0;
        for k in 0..out {
            if scratch[k].len == 0 {
                slot.port.unalloc(&[scratch[k].buf]);
            } else {
                scratch[w] = scratch[k];
                w += 1;
            }
        }
        let out = w;
        let sent = slot.port.tx_burst(&scratch[..out]).min(out);
        if tap_.is_some() {
            tap(tap_, pools, d, &scratch[..sent], None, true);
        }
        let nobuf = (n as u64).saturating_sub(merged + fault + out as u64);
        let c = &slot.counters;
        bump(&c.tx, sent as u64 + merged);
        bump(&c.tx_copied, out as u64 + merged);
        if sent < out || nobuf > 0 || fault > 0 {
            c.add_drop(DropReason::RingFull, (out - sent) as u64);
            c.add_drop(DropReason::NoBuffer, nobuf);
            c.add_drop(DropReason::CopyFault, fault);
            for f in &scratch[sent..out] {
                slot.port.unalloc(&[f.buf]);
            }
        }
        returns.flush(ports);
        for (h, f) in done.iter_mut().zip(&rx[..n]) {
            *h = f.buf;
        }
        returns.give(pools, ports, &done[..n]);
    }

    /// Queues a flooded frame to every port but `inp`: the original handle to the first
    /// that can read its pool, a copy to the others (with `ADMITTED`, each entry with the
    /// frame's checked header `hdr`). Returns whether any port gets it.
    fn flood_frame<const ADMITTED: bool>(&mut self, inp: u16, f: Frame, hdr: &MacHeader) -> bool {
        let pool = f.buf.pool();
        let mut given = false;
        let mut any = false;
        for &d in &self.flood {
            if d == inp {
                continue;
            }
            let Some(q) = self.queues.get_mut(d as usize) else {
                continue;
            };
            any = true;
            if q.n == 0 {
                self.active.push(d);
            }
            let j = q.push::<ADMITTED>(f, hdr);
            if !given && q.tx_pools.contains(pool) {
                given = true;
                q.by_handle |= ADMITTED;
            } else {
                q.copy[j / 64] |= 1 << (j % 64);
                q.copies += 1;
            }
        }
        if !given {
            self.free_after.push(f.buf);
        }
        any
    }

    /// Replaces the entries of destination `d` that it cannot read (or that are flooded
    /// copies) with copies in buffers it allocates (with `ADMITTED`, each copy with the
    /// entry's checked header). Originals of unicast frames copied here go back to their
    /// owners at the end of the burst.
    fn make_copies<const ADMITTED: bool>(&mut self, d: usize) {
        let q = &mut self.queues[d];
        let needs = |q: &DestQueue, j: usize| {
            q.copy[j / 64] & (1 << (j % 64)) != 0 || !q.tx_pools.contains(q.frames[j].buf.pool())
        };
        let need = (0..q.n).filter(|&j| needs(q, j)).count();
        if need == 0 {
            return;
        }
        let Some(Some(slot)) = self.ports.get_mut(d) else {
            return;
        };
        let got = slot.port.alloc(&mut self.allocated[..need]).min(need);
        let (mut k, mut w) = (0, 0);
        let (mut copied, mut nobuf, mut fault) = (0u64, 0u64, 0u64);
        for j in 0..q.n {
            let f = q.frames[j];
            let flooded = q.copy[j / 64] & (1 << (j % 64)) != 0;
            if !flooded && q.tx_pools.contains(f.buf.pool()) {
                q.frames[w] = f;
                if ADMITTED {
                    q.macs[w] = q.macs[j];
                }
                w += 1;
                continue;
            }
            if !flooded {
                // A unicast original nobody else gets: free it once the burst's copies are done.
                self.free_after.push(f.buf);
            }
            if k >= got {
                nobuf += 1;
                continue;
            }
            let c = self.allocated[k];
            k += 1;
            let ok = if ADMITTED {
                copy_frame_as(&self.pools, f, c, &q.macs[j])
            } else {
                copy_frame(&self.pools, f, c)
            };
            let into = if ok {
                Some(c)
            } else {
                copy_long::<ADMITTED>(&self.pools, slot, f, c, &q.macs[j])
            };
            if let Some(c) = into {
                q.frames[w] = Frame {
                    buf: c,
                    len: f.len,
                    meta: f.meta,
                };
                if ADMITTED {
                    q.macs[w] = q.macs[j];
                }
                w += 1;
                copied += 1;
            } else {
                fault += 1;
            }
        }
        q.n = w;
        q.copy = [0; MAX_BURST / 64];
        q.copies = 0;
        let c = &slot.counters;
        bump(&c.tx_copied, copied);
        if nobuf + fault > 0 {
            c.add_drop(DropReason::NoBuffer, nobuf);
            c.add_drop(DropReason::CopyFault, fault);
            self.returns.flush(&mut self.ports);
        }
    }
}

impl Switch {
    /// [`Switch::make_copies`] for a destination some of whose entries it does not take as
    /// they are (`TxOffloads`): a frame larger than it takes is cut into segments of the
    /// frame's segment size, and a partial checksum it cannot take is completed, in the copy
    /// made for it. Each such frame is read into the switch's memory once (with its checked
    /// MACs), cut or completed there, and written out; taken only by bursts that carry
    /// such frames. Entries beyond what one burst holds go out early, in order.
    #[cold]
    #[inline(never)]
    fn make_copies_offloaded<const ADMITTED: bool>(&mut self, d: usize) {
        let Self {
            queues,
            ports,
            pools,
            free_after,
            whole,
            segment,
            made,
            returns,
            tap: tap_,
            ..
        } = self;
        let q = &mut queues[d];
        let Some(Some(slot)) = ports.get_mut(d) else {
            return;
        };
        made.clear();
        let (mut copied, mut nobuf, mut fault) = (0u64, 0u64, 0u64);
        let mut by_handle = false;
        for j in 0..q.n {
            let f = q.frames[j];
            let hdr = q.macs[j];
            let flooded = q.copy[j / 64] & (1 << (j % 64)) != 0;
            if !flooded && q.tx_pools.contains(f.buf.pool()) && q.offloads.takes(f.len, f.meta) {
                by_handle = true;
                made.push((f, hdr));
                continue;
            }
            if !flooded {
                free_after.push(f.buf);
            }
            let len = f.len as usize;
            let frame = &mut whole[..len];
            let read = pools[f.buf.pool().0 as usize]
                .buf(f.buf)
                .is_some_and(|(src, off)| src.read(off, frame).is_ok());
            if !read || len < ETH_HEADER {
                fault += 1;
                continue;
            }
            if ADMITTED {
                frame[..12].copy_from_slice(&hdr);
            }
            let mut meta = FrameMeta::from_bits(f.meta);
            let cut = meta.gso_size() != 0 && u32::from(f.len) > q.offloads.max_gso_frame;
            if !cut {
                if meta.is_partial() && !q.offloads.partial_csum {
                    offload::csum::complete_l4_checksum(frame);
                    meta = meta.completed();
                }
                match put(pools, slot, frame, meta) {
                    Some(c) => {
                        made.push((c, hdr));
                        copied += 1;
                    }
                    None => nobuf += 1,
                }
            } else {
                let head = &frame[..len.min(ETH_HEADER + 120)];
                let Some(t) = TcpV4::parse_mss(head, len, meta.gso_size() as usize) else {
                    // Marked for segmentation, but not a TCP/IPv4 frame this can cut.
                    fault += 1;
                    continue;
                };
                let h = t.header_len();
                for k in 0..t.segments() {
                    let at = h + k * t.mss;
                    segment.clear();
                    segment.extend_from_slice(&frame[..h]);
                    segment.extend_from_slice(&frame[at..at + t.segment_payload(k)]);
                    if !t.finish(segment, k) {
                        fault += 1;
                        break;
                    }
                    let Some(c) = put(pools, slot, segment, FrameMeta::SEGMENT) else {
                        nobuf += 1;
                        break;
                    };
                    made.push((c, hdr));
                    copied += 1;
                    if made.len() == MAX_BURST {
                        send_early::<ADMITTED>(slot, d, made, by_handle, pools, returns, tap_);
                    }
                }
            }
            if made.len() == MAX_BURST {
                send_early::<ADMITTED>(slot, d, made, by_handle, pools, returns, tap_);
            }
        }
        for (k, (f, hdr)) in made.iter().enumerate() {
            q.frames[k] = *f;
            q.macs[k] = *hdr;
        }
        q.n = made.len();
        q.by_handle = ADMITTED && by_handle;
        q.copy = [0; MAX_BURST / 64];
        q.copies = 0;
        q.work = false;
        let c = &slot.counters;
        bump(&c.tx_copied, copied);
        if nobuf + fault > 0 {
            c.add_drop(DropReason::NoBuffer, nobuf);
            c.add_drop(DropReason::CopyFault, fault);
        }
        returns.flush(ports);
    }
}

/// Ends merge `m`: writes the merged frame's headers into its buffer and its length and
/// metadata into its output entry (`scratch[m.slot]`).
fn finish_merge(m: &mut Option<Merge>, pools: &[PoolSlot; POOLS], scratch: &mut [Frame]) {
    let Some(mut m) = m.take() else {
        return;
    };
    let (slot, buf, len) = (m.slot, m.buf, m.len);
    if let Some((head, meta)) = m.finish() {
        let ok = pools[buf.pool().0 as usize]
            .buf(buf)
            .is_some_and(|(dst, off)| dst.write(off, head).is_ok());
        scratch[slot].len = if ok { len as u16 } else { 0 };
        scratch[slot].meta = meta.bits();
    }
}

/// Writes `bytes` into a buffer `slot`'s port allocates; the frame, or `None` when it has
/// no buffer (or the write fails: the buffer goes back).
fn put(pools: &[PoolSlot; POOLS], slot: &mut Slot, bytes: &[u8], meta: FrameMeta) -> Option<Frame> {
    let mut c = [BufHandle::from_raw(0)];
    if slot.port.alloc_len(&mut c, bytes.len()) != 1 {
        return None;
    }
    let dp = &pools[c[0].pool().0 as usize];
    let ok = bytes.len() <= dp.size as usize
        && dp
            .buf(c[0])
            .is_some_and(|(dst, off)| dst.write(off, bytes).is_ok());
    if !ok {
        slot.port.unalloc(&c);
        return None;
    }
    Some(Frame {
        buf: c[0],
        len: bytes.len() as u16,
        meta: meta.bits(),
    })
}

/// Sends `made` (a full burst of `make_copies_offloaded`'s entries) to `slot`'s port now, so
/// that the entries after it keep their order; counts it as pass 2b would.
#[allow(clippy::too_many_arguments)]
fn send_early<const ADMITTED: bool>(
    slot: &mut Slot,
    d: usize,
    made: &mut Vec<(Frame, MacHeader)>,
    by_handle: bool,
    pools: &[PoolSlot; POOLS],
    returns: &mut Returns,
    tap_: &mut Option<Box<Tap>>,
) {
    let mut frames = [Frame::new(BufHandle::from_raw(0), 0); MAX_BURST];
    let mut macs = [[0u8; 12]; MAX_BURST];
    for (k, (f, h)) in made.iter().enumerate() {
        frames[k] = *f;
        macs[k] = *h;
    }
    let n = made.len();
    let sent = if ADMITTED && by_handle {
        slot.port.tx_burst_with_macs(&frames[..n], &macs[..n])
    } else {
        slot.port.tx_burst(&frames[..n])
    }
    .min(n);
    if tap_.is_some() {
        let m = (ADMITTED && by_handle).then_some(&macs[..sent]);
        tap(tap_, pools, d, &frames[..sent], m, true);
    }
    bump(&slot.counters.tx, sent as u64);
    if sent < n {
        slot.counters
            .add_drop(DropReason::RingFull, (n - sent) as u64);
        for f in &frames[sent..n] {
            returns.put(pools, f.buf);
        }
    }
    made.clear();
}

/// Copies frame `f` into buffer `to`; false when `to` is not a buffer the switch knows, the
/// frame does not fit it, or its memory refuses the write.
fn copy_frame(pools: &[PoolSlot; POOLS], f: Frame, to: BufHandle) -> bool {
    let sp = &pools[f.buf.pool().0 as usize];
    let dp = &pools[to.pool().0 as usize];
    let (Some((src, soff)), Some((dst, doff))) = (sp.buf(f.buf), dp.buf(to)) else {
        return false;
    };
    let len = f.len as usize;
    len <= dp.size as usize && dst.copy_from(doff, &src, soff, len).is_ok()
}

/// After `first` (a buffer `slot`'s port allocated) failed to take a copy of `f`: gives
/// `first` back and, when `f` is longer than `first` holds, copies it into a buffer the port
/// gives for frames that long ([`pmd::Port::alloc_len`]: a large transmit pool), with `hdr`
/// over its MACs for an untrusted port's frame. `None`: no such buffer, or a fault.
#[cold]
#[inline(never)]
fn copy_long<const ADMITTED: bool>(
    pools: &[PoolSlot; POOLS],
    slot: &mut Slot,
    f: Frame,
    first: BufHandle,
    hdr: &MacHeader,
) -> Option<BufHandle> {
    slot.port.unalloc(&[first]);
    if u32::from(f.len) <= pools[first.pool().0 as usize].size {
        return None;
    }
    let mut c = [BufHandle::from_raw(0)];
    if slot.port.alloc_len(&mut c, f.len as usize) != 1 {
        return None;
    }
    let ok = if ADMITTED {
        copy_frame_as(pools, f, c[0], hdr)
    } else {
        copy_frame(pools, f, c[0])
    };
    if !ok {
        slot.port.unalloc(&c);
        return None;
    }
    Some(c[0])
}

/// [`copy_frame`], then `hdr` (the frame's checked MACs, from the switch's memory) over the
/// copy's first 12 bytes, whatever the original held there while it was copied.
fn copy_frame_as(pools: &[PoolSlot; POOLS], f: Frame, to: BufHandle, hdr: &MacHeader) -> bool {
    if !copy_frame(pools, f, to) {
        return false;
    }
    let dp = &pools[to.pool().0 as usize];
    dp.buf(to)
        .is_some_and(|(dst, doff)| dst.write(doff, hdr).is_ok())
}

/// Learning and lookup for one burst from one ingress port.
struct Lookup<'a> {
    fdb: &'a mut Fdb,
    learning: bool,
    inp: u16,
    now: u32,
    last_src: u64,
}

impl Lookup<'_> {
    /// Learns the source of a header whose first 12 bytes are `w0`, `w1` (little-endian)
    /// and returns where the frame goes: a port, `FLOOD`, `HAIRPIN` or `GROUP_SRC`.
    #[inline(never)]
    fn decide(&mut self, w0: u64, w1: u32) -> u16 {
        let (dst, src) = mac_pair(w0, w1);
        if self.learning && src != self.last_src {
            self.last_src = src;
            self.fdb.learn(src, self.inp, self.now);
        }
        if is_group(src) {
            return GROUP_SRC;
        }
        let d = if is_group(dst) {
            FLOOD
        } else {
            self.fdb.lookup(dst, self.now).unwrap_or(FLOOD)
        };
        if d == self.inp { HAIRPIN } else { d }
    }
}

/// The first 12 header bytes of the burst's first frame (as little-endian words) and how
/// many frames from the first carry the same 12 bytes: a load and a compare per frame. Out
/// of line, so that its registers are its own. `burst` is not empty.
#[inline(never)]
fn run_of_first(burst: &BlockBurst) -> ((u64, u32), usize) {
    let mut heads = burst.heads().map(|h| {
        let (w0, w1) = split16(&h);
        (w0, w1 as u32)
    });
    let Some(h0) = heads.next() else {
        return ((0, 0), 0);
    };
    (h0, 1 + heads.take_while(|&h| h == h0).count())
}

/// Pass 1 of a burst that is one run of the header `h0` (its first 12 bytes as
/// little-endian words) when the ingress port's memo does not hold its answer: learns and
/// looks it up once, and keeps the answer in `memo` when taking it wrote nothing. Out of
/// line: it runs about once a tick per flow.
#[inline(never)]
fn look_up_run(
    fdb: &mut Fdb,
    memo: &mut Memo,
    inp: u16,
    now: u32,
    learning: bool,
    h0: (u64, u32),
) -> u16 {
    let (dst, src) = mac_pair(h0.0, h0.1);
    let (d, pure) = fdb.learn_and_look_up_one(inp, now, learning, dst, src);
    if pure {
        *memo = Memo {
            w0: h0.0,
            w1: h0.1,
            now,
            generation: fdb.generation(),
            dest: d,
        };
    }
    d
}

/// Pass 1 of a checked burst that is not one run: learns and looks up every frame, the
/// FDB reading each frame's MAC keys straight from its header (the 8 bytes at the
/// destination MAC and the 8 at the source MAC: it reads only the low 48 bits of a key),
/// and writes where each frame goes (a port, `FLOOD` or `HAIRPIN`) to `dests`. Out of line,
/// so that its registers are its own.
#[inline(never)]
fn look_up_burst(
    fdb: &mut Fdb,
    burst: &BlockBurst,
    inp: u16,
    now: u32,
    learning: bool,
    dests: &mut [u16],
) {
    // The 8 bytes at each MAC, as little-endian words: the destination's key, the source's.
    // As long as each other, so that the FDB's pass reads the keys with no check.
    let burst = burst.head(dests.len());
    let dests = &mut dests[..burst.len()];
    fdb.learn_and_look_up_keys(inp, now, learning, |i| burst.words_of::<0, 6>(i), dests);
    // Unknown destinations are flooded (UNKNOWN == FLOOD); never back out.
    for d in dests.iter_mut() {
        *d = if *d == inp { HAIRPIN } else { *d };
    }
}

/// Nonzero when some handle in `bufs` names another pool than `p0`.
#[inline]
fn pools_differ(bufs: &[BufHandle], p0: u32) -> u32 {
    let mut acc = [0u32; 8];
    let chunks = bufs.chunks_exact(8);
    for h in chunks.remainder() {
        acc[0] |= (h.raw() >> 24) ^ p0;
    }
    for c in chunks {
        for k in 0..8 {
            acc[k] |= (c[k].raw() >> 24) ^ p0;
        }
    }
    acc.iter().fold(0, |a, &b| a | b)
}

/// The destination and source MAC keys of a header whose first 12 bytes are `w0`, `w1`
/// (little-endian).
#[inline]
fn mac_pair(w0: u64, w1: u32) -> (MacKey, MacKey) {
    (w0 & MAC_MASK, (w0 >> 48) | ((w1 as u64) << 16))
}

/// The 12 MAC bytes of a header as little-endian words (the second in the low 32 bits).
#[inline]
fn split12(h: &MacHeader) -> (u64, u32) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 4];
    a.copy_from_slice(&h[..8]);
    b.copy_from_slice(&h[8..]);
    (u64::from_le_bytes(a), u32::from_le_bytes(b))
}

/// The first 16 header bytes as two little-endian words.
#[inline]
fn split16(h: &[u8; 16]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&h[..8]);
    b.copy_from_slice(&h[8..]);
    (u64::from_le_bytes(a), u64::from_le_bytes(b))
}

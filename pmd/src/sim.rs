//! The `sim` port: an in-memory generator and sink, no privileges needed.
//!
//! One port type does both directions. As a **generator** it builds its frames once, into
//! buffers of its own pool, and `rx_burst` hands out their handles (writing only what varies
//! per frame: round-robin MACs, a sequence number and its payload, when configured). As a
//! **sink**, `tx_burst` counts frames, verifies sequence and payload when asked, and parks the
//! handles until `tx_done` gives them back. `alloc` hands out spare buffers (never the
//! generator's pre-built frames) for a switch that must copy a frame to this port.
//!
//! The generated frame layout (all multi-byte fields big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 0..6 | destination MAC |
//! | 6..12 | source MAC |
//! | 12..14 | EtherType [`SIM_ETHERTYPE`] (IEEE local experimental) |
//! | 14 | generator id (the pool id) |
//! | 15 | flags: [`FLAG_SEQUENCED`] when bytes 16..24 carry a sequence number |
//! | 16..24 | sequence number |
//! | 24.. | payload: byte `j` is [`payload_byte`]`(seq, j)` |
//!
//! A frame is "`len` bytes" as the buffer holds it (no FCS): a 64-byte frame is 64 bytes in
//! the buffer. The port is built to cost a few instructions per frame so that a benchmark
//! through it measures the switch, not the port.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use grant_pool::{
    Blocks, BufHandle, BufIdx, Memory, Pool, PoolError, PoolId, PoolLayout, PoolSet, PoolTable,
};

use crate::{Frame, LinkState, Mac, MacHeader, Port, PortStats};

/// EtherType of generated frames (IEEE 802 local experimental EtherType 1).
pub const SIM_ETHERTYPE: u16 = 0x88b5;
/// Flag byte value: the frame carries a sequence number the sink checks for order.
pub const FLAG_SEQUENCED: u8 = 1;
/// Bytes of header a generated frame carries before its payload.
pub const SIM_HEADER: usize = 24;
/// Shortest frame the generator builds: an Ethernet header.
pub const MIN_FRAME: usize = 14;

/// The payload byte at offset `j` of a frame with sequence number `seq`.
#[inline]
pub fn payload_byte(seq: u64, j: usize) -> u8 {
    (seq.wrapping_mul(0x9e37_79b9) as u8).wrapping_add(j as u8)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// A sim port that cannot be built as configured.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The frame length does not fit the buffers, or is too short for what was asked.
    #[error("frame length {len} must be between {min} and the buffer size {max}")]
    FrameLen {
        /// Length asked for.
        len: usize,
        /// Shortest allowed (24 with sequence numbers, else 14).
        min: usize,
        /// The buffer size.
        max: usize,
    },
    /// A MAC pattern has no addresses.
    #[error("a round-robin MAC pattern needs at least one address")]
    EmptyPattern,
    /// The pool layout is invalid.
    #[error("invalid sim pool: {0}")]
    Pool(#[from] PoolError),
    /// The pool memory could not be allocated.
    #[error("cannot allocate {0} bytes of pool memory; use fewer or smaller buffers")]
    NoMemory(usize),
    /// A completion ring of zero entries was asked for.
    #[error("the tx ring needs at least one entry")]
    TxRing,
}

/// Which MAC addresses generated frames carry, frame by frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacPattern {
    /// The same address in every frame.
    Fixed(Mac),
    /// Frame `i` carries address `i % len`.
    RoundRobin(Vec<Mac>),
    /// The broadcast address.
    Broadcast,
    /// `count` locally administered unicast addresses (`02:fe:…`) that no sim port uses as
    /// its own, so a switch never learns them: unknown unicast.
    UnknownUnicast(u32),
}

impl MacPattern {
    fn len(&self) -> usize {
        match self {
            MacPattern::RoundRobin(v) => v.len(),
            MacPattern::UnknownUnicast(n) => *n as usize,
            _ => 1,
        }
    }

    fn at(&self, i: usize) -> Mac {
        match self {
            MacPattern::Fixed(m) => *m,
            MacPattern::RoundRobin(v) => v[i % v.len()],
            MacPattern::Broadcast => [0xff; 6],
            MacPattern::UnknownUnicast(n) => {
                let i = (i % (*n).max(1) as usize) as u32;
                [0x02, 0xfe, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]
            }
        }
    }
}

/// How a sim port is built.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Name for logs and counters.
    pub name: String,
    /// The port's own MAC.
    pub mac: Mac,
    /// Id of the pool the port owns.
    pub pool: PoolId,
    /// Bytes per buffer (a power of two, 256..=4096).
    pub buf_size: usize,
    /// Buffers holding pre-built frames for the generator.
    pub gen_bufs: usize,
    /// Spare buffers handed out by `alloc` (copy targets).
    pub spare_bufs: usize,
    /// Whether `rx_burst` generates frames at all (a pure sink sets `false`).
    pub generate: bool,
    /// Frames to generate in total; `None` for no limit.
    pub limit: Option<u64>,
    /// Whether the generator only sends what [`SimProbe::release`] allows (tests that
    /// script traffic step by step).
    pub gated: bool,
    /// Length of generated frames in bytes.
    pub frame_len: usize,
    /// Source MACs of generated frames; `None` means the port's own MAC.
    pub src: Option<MacPattern>,
    /// Destination MACs of generated frames.
    pub dst: MacPattern,
    /// Whether each generated frame carries a fresh sequence number and its payload.
    pub sequence: bool,
    /// Whether the sink checks sequence order and payload of every frame it is given.
    pub verify: bool,
    /// Frames the sink holds before `tx_done` returns them; `tx_burst` refuses beyond that.
    pub tx_ring: usize,
    /// Whether the port tracks, buffer by buffer, which ones it holds, so that a buffer
    /// returned twice is refused and counted (`bad_reclaims`). On by default; a benchmark
    /// that wants the port as cheap as a NIC queue turns it off (through the switch it
    /// costs about 30 instructions per frame: `results/callgrind-switch-track.txt` against
    /// `results/callgrind-switch.txt`). Off, `reclaim` still refuses handles of other pools
    /// or past the end of the pool.
    pub track_buffers: bool,
    /// Whether the sink records the 12 MAC bytes each frame it takes leaves with
    /// ([`SimProbe::headers`]): those [`Port::tx_burst_with_macs`] gives, else the buffer's.
    /// For tests; off by default.
    pub record_headers: bool,
}

impl SimConfig {
    /// A port named `name` with MAC `mac` owning pool `pool`, generating 64-byte broadcast
    /// frames without limit; adjust the public fields for anything else.
    pub fn new(name: impl Into<String>, mac: Mac, pool: PoolId) -> Self {
        Self {
            name: name.into(),
            mac,
            pool,
            buf_size: grant_pool::pool::DEFAULT_BUF_SIZE,
            gen_bufs: 512,
            spare_bufs: 1024,
            generate: true,
            limit: None,
            gated: false,
            frame_len: 64,
            src: None,
            dst: MacPattern::Broadcast,
            sequence: false,
            verify: false,
            tx_ring: 1024,
            track_buffers: true,
            record_headers: false,
        }
    }
}

/// Counters and controls of a sim port that stay readable after the port is handed to a
/// switch (cloned `Arc`). Counters are published once per burst.
#[derive(Debug, Default)]
pub struct SimProbe {
    /// Frames generated.
    pub generated: AtomicU64,
    /// Frames the sink took.
    pub sunk: AtomicU64,
    /// Bytes the sink took.
    pub sunk_bytes: AtomicU64,
    /// Frames the sink refused because its tx ring was full.
    pub refused: AtomicU64,
    /// Frames the sink refused because their pool is not one it can read.
    pub unreadable: AtomicU64,
    /// Sequenced frames that arrived out of order or twice.
    pub seq_errors: AtomicU64,
    /// Sequence numbers skipped (frames lost on the way).
    pub lost: AtomicU64,
    /// Frames whose header or payload did not match what the generator wrote.
    pub payload_errors: AtomicU64,
    /// Handles given back with `reclaim` that this port did not lend out.
    pub bad_reclaims: AtomicU64,
    /// Buffers the port holds right now (free for the generator or `alloc`).
    pub free: AtomicU64,
    /// Buffers in the pool.
    pub total: AtomicU64,
    /// While set, `tx_done` returns nothing: the sink's ring fills up (a stalled peer).
    pub hold_completions: AtomicBool,
    /// Frames a gated generator may still send.
    pub credit: AtomicU64,
    /// With [`SimConfig::record_headers`]: the MAC bytes of every frame the sink took, in
    /// order.
    pub headers: std::sync::Mutex<Vec<MacHeader>>,
}

impl SimProbe {
    /// Lets a gated generator send `n` more frames.
    pub fn release(&self, n: u64) {
        self.credit.fetch_add(n, Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// Heap memory for one pool, page aligned and zeroed, freed on drop.
#[derive(Debug)]
struct PoolMem {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: PoolMem is the sole owner of its allocation; the pointer is only used to build a
// memory handle over it and to free the allocation in drop.
unsafe impl Send for PoolMem {}
// SAFETY: as for Send: `&PoolMem` gives no access to the bytes.
unsafe impl Sync for PoolMem {}

impl PoolMem {
    fn new(bytes: usize) -> Result<Self, SimError> {
        let layout =
            Layout::from_size_align(bytes.max(1), 4096).map_err(|_| SimError::NoMemory(bytes))?;
        // SAFETY: the layout has a non-zero size (max(1) above).
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or(SimError::NoMemory(bytes))?;
        Ok(Self { ptr, layout })
    }

    /// The allocation as a handle that owns it.
    fn into_memory(self) -> Memory {
        let (ptr, len) = (self.ptr, self.layout.size());
        // SAFETY: the allocation is `len` bytes, readable and writable, and is freed only when
        // this PoolMem drops, which the handle's `Arc` owns.
        unsafe { Memory::from_raw(ptr, len, std::sync::Arc::new(self)) }
    }
}

impl Drop for PoolMem {
    fn drop(&mut self) {
        // SAFETY: ptr came from alloc_zeroed with this very layout and is freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// The sim port. See the module docs.
pub struct SimPort {
    name: String,
    mac: Mac,
    pool: Pool,
    /// The pool as its buffers, for writing the MACs of generated frames.
    blocks: Blocks,
    pools: [Pool; 1],
    own: PoolSet,
    readable: PoolSet,
    peers: PoolTable,
    gen_bufs: u32,
    gen_free: Vec<BufHandle>,
    spare_free: Vec<BufHandle>,
    /// Bit `i` set: this port holds buffer `i` (it is free, not lent out).
    held: Vec<u64>,
    track: bool,
    generate: bool,
    remaining: u64,
    gated: bool,
    record: bool,
    /// `verify` or `record`: every frame the sink takes is looked at.
    frame_by_frame: bool,
    frame_len: u16,
    src: MacPattern,
    dst: MacPattern,
    vary_macs: bool,
    /// The first 16 bytes of frame `i % macs.len()` (whole periods of the MAC patterns, at
    /// least 64 frames) as `build` writes them without a sequence number (its MACs, then
    /// the EtherType, generator id and flags every frame carries), when the period is
    /// short enough to tabulate and frames are at least 16 bytes long (empty otherwise).
    /// Written as one 16-byte store, so that a reader of any 8 header bytes loads them
    /// straight from it, even while it is still in the core's store buffer; two stores of
    /// 8 and 4 bytes would make a read across both stall.
    macs: Vec<[u8; 16]>,
    next_frame: usize,
    sequence: bool,
    seq: u64,
    verify: bool,
    next_seq: Vec<u64>,
    ring: Vec<BufHandle>,
    ring_head: usize,
    ring_len: usize,
    stats: PortStats,
    local: Local,
    probe: Arc<SimProbe>,
}

#[derive(Default)]
struct Local {
    refused: u64,
    unreadable: u64,
    seq_errors: u64,
    lost: u64,
    payload_errors: u64,
    bad_reclaims: u64,
}

impl SimPort {
    /// Builds the port: allocates its pool and writes the generator's frames.
    pub fn new(cfg: SimConfig) -> Result<Self, SimError> {
        let total = cfg.gen_bufs + cfg.spare_bufs;
        let layout = PoolLayout::new(cfg.buf_size, total)?;
        let min = if cfg.sequence { SIM_HEADER } else { MIN_FRAME };
        if cfg.frame_len < min || cfg.frame_len > cfg.buf_size {
            return Err(SimError::FrameLen {
                len: cfg.frame_len,
                min,
                max: cfg.buf_size,
            });
        }
        if cfg.tx_ring == 0 {
            return Err(SimError::TxRing);
        }
        let src = cfg.src.clone().unwrap_or(MacPattern::Fixed(cfg.mac));
        for p in [&src, &cfg.dst] {
            if p.len() == 0 {
                return Err(SimError::EmptyPattern);
            }
        }
        let mem = PoolMem::new(layout.bytes())?.into_memory();
        let blocks = mem
            .blocks(cfg.buf_size.trailing_zeros(), total as u32)
            .map_err(PoolError::from)?;
        let pool = Pool::new(cfg.pool, layout, mem)?;
        let mut peers = PoolTable::new();
        peers.insert(pool.clone());
        let own = PoolSet::of(cfg.pool);
        let mut gen_free = Vec::with_capacity(total);
        let mut spare_free = Vec::with_capacity(total);
        // Stacks pop from the end: push in reverse so that index 0 goes out first.
        for i in (0..total as u32).rev() {
            let h = pool.handle(BufIdx(i))?;
            if (i as usize) < cfg.gen_bufs {
                gen_free.push(h);
            } else {
                spare_free.push(h);
            }
        }
        let mut held = vec![0u64; total.div_ceil(64)];
        for i in 0..total {
            held[i / 64] |= 1 << (i % 64);
        }
        let vary_macs = src.len() > 1 || cfg.dst.len() > 1;
        let probe = Arc::new(SimProbe::default());
        probe.total.store(total as u64, Relaxed);
        probe.free.store(total as u64, Relaxed);
        let mut port = Self {
            name: cfg.name,
            mac: cfg.mac,
            pools: [pool.clone()],
            pool,
            blocks,
            own,
            readable: own,
            peers,
            gen_bufs: cfg.gen_bufs as u32,
            gen_free,
            spare_free,
            held,
            track: cfg.track_buffers,
            generate: cfg.generate,
            remaining: cfg.limit.unwrap_or(u64::MAX),
            gated: cfg.gated,
            record: cfg.record_headers,
            frame_by_frame: cfg.verify || cfg.record_headers,
            frame_len: cfg.frame_len as u16,
            src,
            dst: cfg.dst,
            vary_macs,
            macs: Vec::new(),
            next_frame: 0,
            sequence: cfg.sequence,
            seq: 0,
            verify: cfg.verify,
            next_seq: vec![0; 256],
            ring: vec![BufHandle::from_raw(0); cfg.tx_ring],
            ring_head: 0,
            ring_len: 0,
            stats: PortStats::default(),
            local: Local::default(),
            probe,
        };
        if vary_macs && !cfg.sequence && cfg.frame_len >= 16 {
            let (a, b) = (port.src.len(), port.dst.len());
            let period = a / gcd(a, b) * b;
            if period <= 1 << 16 {
                // Whole periods up to at least 64 frames, so that a burst is written in one
                // or two stretches even when the pattern is short.
                let len = period * 64usize.div_ceil(period);
                port.macs = (0..len)
                    .map(|i| {
                        let mut m = [0u8; 16];
                        m[..6].copy_from_slice(&port.dst.at(i));
                        m[6..12].copy_from_slice(&port.src.at(i));
                        m[12..14].copy_from_slice(&SIM_ETHERTYPE.to_be_bytes());
                        m[14] = port.pool.id().0;
                        m
                    })
                    .collect();
            }
        }
        for i in 0..cfg.gen_bufs {
            let h = port.pool.handle(BufIdx(i as u32))?;
            port.build(h, i, 0, false);
        }
        Ok(port)
    }

    /// The counters and controls that stay readable after the port is handed away.
    pub fn probe(&self) -> Arc<SimProbe> {
        self.probe.clone()
    }

    /// The port's own pool (to grant to other sim ports with [`SimPort::grant_read`]).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Lets this port read (and so transmit without a copy, and verify) buffers of `pool`,
    /// as a peer's read-only grant would.
    pub fn grant_read(&mut self, pool: Pool) {
        self.readable.insert(pool.id());
        self.peers.insert(pool);
    }

    /// Writes frame `i` of the pattern into buffer `h`: the whole frame, or only its MACs
    /// when `macs_only`.
    fn build(&mut self, h: BufHandle, i: usize, seq: u64, macs_only: bool) {
        let Ok(r) = self.pool.buf(h) else {
            return;
        };
        let mut hdr = [0u8; SIM_HEADER];
        hdr[0..6].copy_from_slice(&self.dst.at(i));
        hdr[6..12].copy_from_slice(&self.src.at(i));
        if macs_only {
            let _ = r.write(0, &hdr[..12]);
            return;
        }
        hdr[12..14].copy_from_slice(&SIM_ETHERTYPE.to_be_bytes());
        hdr[14] = self.pool.id().0;
        hdr[15] = if self.sequence { FLAG_SEQUENCED } else { 0 };
        hdr[16..24].copy_from_slice(&seq.to_be_bytes());
        let len = self.frame_len as usize;
        let n = len.min(SIM_HEADER);
        let _ = r.write(0, &hdr[..n]);
        let mut chunk = [0u8; 256];
        let mut off = SIM_HEADER;
        while off < len {
            let k = (len - off).min(chunk.len());
            for (j, b) in chunk[..k].iter_mut().enumerate() {
                *b = payload_byte(seq, off + j);
            }
            let _ = r.write(off, &chunk[..k]);
            off += k;
        }
    }

    /// Marks `h` as lent out.
    #[inline]
    fn clear_held(held: &mut [u64], h: BufHandle) {
        let i = h.idx().0 as usize;
        if let Some(w) = held.get_mut(i / 64) {
            *w &= !(1u64 << (i % 64));
        }
    }

    fn publish_free(&self) {
        self.probe.free.store(
            (self.gen_free.len() + self.spare_free.len()) as u64,
            Relaxed,
        );
    }

    /// Checks one frame handed to the sink; returns whether the port may take it.
    fn check_frame(&mut self, f: &Frame) -> bool {
        let Some(r) = self.peers.buf(f.buf) else {
            return false;
        };
        let len = f.len as usize;
        let mut hdr = [0u8; SIM_HEADER];
        if len < SIM_HEADER || r.read(0, &mut hdr).is_err() || len > r.len() {
            self.local.payload_errors += 1;
            return true;
        }
        if u16::from_be_bytes([hdr[12], hdr[13]]) != SIM_ETHERTYPE {
            self.local.payload_errors += 1;
            return true;
        }
        let gen_id = hdr[14] as usize;
        let seq = u64::from_be_bytes(hdr[16..24].try_into().unwrap_or([0; 8]));
        if hdr[15] & FLAG_SEQUENCED != 0 {
            let want = self.next_seq[gen_id];
            if seq < want {
                self.local.seq_errors += 1;
            } else {
                self.local.lost += seq - want;
                self.next_seq[gen_id] = seq + 1;
            }
        }
        let mut chunk = [0u8; 256];
        let mut off = SIM_HEADER;
        while off < len {
            let k = (len - off).min(chunk.len());
            if r.read(off, &mut chunk[..k]).is_err()
                || chunk[..k]
                    .iter()
                    .enumerate()
                    .any(|(j, &b)| b != payload_byte(seq, off + j))
            {
                self.local.payload_errors += 1;
                break;
            }
            off += k;
        }
        true
    }

    /// `tx_burst`, and with `macs` (as long as `frames`) `tx_burst_with_macs`: takes as
    /// many of `frames` as the ring has room for.
    #[inline(always)]
    fn sink(&mut self, frames: &[Frame], macs: Option<&[MacHeader]>) -> usize {
        let cap = self.ring.len();
        let space = cap - self.ring_len;
        let limit = frames.len().min(space);
        let mut tail = self.ring_head + self.ring_len;
        if tail >= cap {
            tail -= cap;
        }
        if !self.frame_by_frame && limit > 0 && self.readable.contains(frames[0].buf.pool()) {
            // One pool for the whole burst (the common case): one pass copies the handles
            // into the free ring slots, sums the bytes and checks that every frame is of
            // the first one's pool. The slots only count once `ring_len` covers them, so a
            // burst that fails the check leaves nothing behind.
            let p0 = frames[0].buf.raw() >> 24;
            let first = limit.min(cap - tail);
            let a = Self::take(&mut self.ring[tail..tail + first], &frames[..first], p0);
            let b = if first < limit {
                Self::take(&mut self.ring[..limit - first], &frames[first..limit], p0)
            } else {
                (0, 0)
            };
            if a.0 | b.0 == 0 {
                let bytes = a.1 + b.1;
                self.ring_len += limit;
                self.local.refused += (frames.len() - limit) as u64;
                self.stats.tx_packets += limit as u64;
                self.stats.tx_bytes += bytes;
                self.stats.tx_dropped = self.local.refused;
                self.publish_sink();
                return limit;
            }
        }
        self.tx_each(frames, limit, tail, macs)
    }

    /// Records the MACs frame `f` leaves with: `mac` when given, else its buffer's.
    fn record_header(&self, f: &Frame, mac: Option<&MacHeader>) {
        let h = mac.copied().unwrap_or_else(|| {
            let mut h = [0u8; 12];
            if let Some(r) = self.peers.buf(f.buf) {
                let _ = r.read(0, &mut h);
            }
            h
        });
        if let Ok(mut v) = self.probe.headers.lock() {
            v.push(h);
        }
    }

    fn publish_sink(&self) {
        let p = &self.probe;
        p.sunk.store(self.stats.tx_packets, Relaxed);
        p.sunk_bytes.store(self.stats.tx_bytes, Relaxed);
        p.refused.store(self.local.refused, Relaxed);
        p.unreadable.store(self.local.unreadable, Relaxed);
        if self.verify {
            p.seq_errors.store(self.local.seq_errors, Relaxed);
            p.lost.store(self.local.lost, Relaxed);
            p.payload_errors.store(self.local.payload_errors, Relaxed);
        }
    }
}

impl Port for SimPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn link(&self) -> LinkState {
        LinkState::Up { mbps: 0 }
    }

    fn stats(&self) -> PortStats {
        let mut s = self.stats;
        s.errors = self.local.bad_reclaims
            + self.local.unreadable
            + self.local.seq_errors
            + self.local.payload_errors;
        s
    }

    fn tx_pools(&self) -> PoolSet {
        self.readable
    }

    fn own_pools(&self) -> PoolSet {
        self.own
    }

    fn pools(&self) -> &[Pool] {
        &self.pools
    }

    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        self.grant_read(pool.clone());
        true
    }

    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        if pool == self.pool.id() {
            return true;
        }
        let cap = self.ring.len();
        let in_flight =
            (0..self.ring_len).any(|k| self.ring[(self.ring_head + k) % cap].pool() == pool);
        if in_flight {
            return false;
        }
        self.readable.remove(pool);
        self.peers.remove(pool);
        true
    }

    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        if !self.generate {
            return 0;
        }
        let mut n = out
            .len()
            .min(self.gen_free.len())
            .min(self.remaining.min(usize::MAX as u64) as usize);
        if self.gated {
            n = n.min(self.probe.credit.load(Relaxed).min(usize::MAX as u64) as usize);
            if n > 0 {
                self.probe.credit.fetch_sub(n as u64, Relaxed);
            }
        }
        if n == 0 {
            return 0;
        }
        let start = self.gen_free.len() - n;
        let len = self.frame_len;
        let taken = &self.gen_free[start..];
        match Frame::words_mut(&mut out[..n]) {
            // As pairs of words the stores vectorise.
            Some(words) => {
                for (o, &h) in words.iter_mut().zip(taken) {
                    *o = [h.raw(), len as u32];
                }
            }
            None => {
                for (o, &h) in out[..n].iter_mut().zip(taken) {
                    *o = Frame::new(h, len);
                }
            }
        }
        if self.track {
            for &h in taken {
                Self::clear_held(&mut self.held, h);
            }
        }
        self.gen_free.truncate(start);
        if self.vary_macs && !self.sequence && !self.macs.is_empty() {
            // Only the MACs vary: write the next 16 pre-computed header bytes per frame
            // (the 12 of the MACs and the 4 after them, which stay as they were).
            // In stretches that end where the pattern wraps around: no index check or wrap
            // test per frame.
            let period = self.macs.len();
            let mut at = self.next_frame % period;
            let mut rest = &out[..n];
            while !rest.is_empty() {
                let k = rest.len().min(period - at);
                for (o, m) in rest[..k].iter().zip(&self.macs[at..at + k]) {
                    // Cannot fail: the pool is this port's own, writable memory.
                    let _ = self.blocks.write_head(o.buf.raw() & 0x00ff_ffff, m);
                }
                rest = &rest[k..];
                at = if at + k == period { 0 } else { at + k };
            }
            self.next_frame = self.next_frame.wrapping_add(n);
        } else if self.vary_macs || self.sequence {
            for o in &out[..n] {
                let i = self.next_frame;
                self.next_frame = self.next_frame.wrapping_add(1);
                if self.sequence {
                    let seq = self.seq;
                    self.seq += 1;
                    self.build(o.buf, i, seq, false);
                } else {
                    self.build(o.buf, i, 0, true);
                }
            }
        }
        self.remaining -= n as u64;
        self.stats.rx_packets += n as u64;
        self.stats.rx_bytes += n as u64 * len as u64;
        self.probe.generated.store(self.stats.rx_packets, Relaxed);
        self.publish_free();
        n
    }

    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.sink(frames, None)
    }

    fn tx_burst_with_macs(&mut self, frames: &[Frame], macs: &[MacHeader]) -> usize {
        self.sink(&frames[..frames.len().min(macs.len())], Some(macs))
    }

    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        if self.probe.hold_completions.load(Relaxed) {
            return 0;
        }
        let n = out.len().min(self.ring_len);
        let cap = self.ring.len();
        let first = n.min(cap - self.ring_head);
        out[..first].copy_from_slice(&self.ring[self.ring_head..self.ring_head + first]);
        out[first..n].copy_from_slice(&self.ring[..n - first]);
        self.ring_head += n;
        if self.ring_head >= cap {
            self.ring_head -= cap;
        }
        self.ring_len -= n;
        n
    }

    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        let n = out.len().min(self.spare_free.len());
        let start = self.spare_free.len() - n;
        let taken = &self.spare_free[start..];
        out[..n].copy_from_slice(taken);
        if self.track {
            for &h in taken {
                Self::clear_held(&mut self.held, h);
            }
        }
        self.spare_free.truncate(start);
        self.publish_free();
        n
    }

    fn reclaim(&mut self, bufs: &[BufHandle]) {
        // Whole-burst checks first (branch-free folds the compiler vectorises): every handle
        // names this pool and a buffer in it, and none is held already.
        let base = (self.pool.id().0 as u32) << 24;
        let count = self.pool.layout().count as u32;
        let last = count as i32 - 1;
        // The same pass sorts the burst for the free stacks (see `push_free`).
        let gen_bufs = self.gen_bufs as i32;
        let (mut signs, mut spare, mut gen_) = (0i32, 0i32, 0i32);
        for h in bufs {
            // `i` is the index when the handle names this pool; for another pool it is
            // 2^24 or more, or negative: then `i` or `last - i` is negative (count < 2^24).
            let i = h.raw().wrapping_sub(base) as i32;
            signs |= i | (last - i);
            spare |= gen_bufs - 1 - i;
            gen_ |= i - gen_bufs;
        }
        if signs < 0 {
            return self.reclaim_each(bufs);
        }
        if !self.track {
            self.push_sorted(bufs, spare, gen_);
            self.publish_free();
            return;
        }
        for (k, &h) in bufs.iter().enumerate() {
            let i = h.idx().0 as usize;
            let bit = 1u64 << (i % 64);
            match self.held.get_mut(i / 64) {
                Some(w) if *w & bit == 0 => *w |= bit,
                _ => {
                    // A double return: take the earlier ones, check the rest one by one.
                    self.push_free(&bufs[..k]);
                    return self.reclaim_each(&bufs[k..]);
                }
            }
        }
        self.push_sorted(bufs, spare, gen_);
        self.publish_free();
    }
}

impl SimPort {
    /// Copies the handles of `frames` into `ring` (as long as each other); returns nonzero
    /// when some frame is not of pool `p0`, and the bytes of the frames.
    #[inline]
    fn take(ring: &mut [BufHandle], frames: &[Frame], p0: u32) -> (u32, u64) {
        let (mut other, mut bytes) = (0u32, 0u64);
        match Frame::words(frames) {
            // A 32-bit sum (which vectorises) of at most 2^16 frames of under 2^16 bytes.
            Some(words) if words.len() <= 1 << 16 => {
                let mut sum = 0u32;
                for (r, w) in ring.iter_mut().zip(words) {
                    *r = BufHandle::from_raw(w[0]);
                    other |= (w[0] >> 24) ^ p0;
                    sum += w[1] & 0xffff;
                }
                bytes = sum as u64;
            }
            _ => {
                for (r, f) in ring.iter_mut().zip(frames) {
                    *r = f.buf;
                    other |= (f.buf.raw() >> 24) ^ p0;
                    bytes += f.len as u64;
                }
            }
        }
        (other, bytes)
    }

    /// `tx_burst` frame by frame: mixed pools, unreadable frames, verification, recording.
    #[inline(never)]
    fn tx_each(
        &mut self,
        frames: &[Frame],
        limit: usize,
        mut tail: usize,
        macs: Option<&[MacHeader]>,
    ) -> usize {
        let cap = self.ring.len();
        let mut n = limit;
        let mut bytes = 0u64;
        for (k, f) in frames[..n].iter().enumerate() {
            if !self.readable.contains(f.buf.pool()) {
                self.local.unreadable += 1;
                n = k;
                break;
            }
            if self.verify && !self.check_frame(f) {
                self.local.unreadable += 1;
                n = k;
                break;
            }
            if self.record {
                self.record_header(f, macs.and_then(|m| m.get(k)));
            }
            self.ring[tail] = f.buf;
            tail += 1;
            if tail == cap {
                tail = 0;
            }
            bytes += f.len as u64;
        }
        self.ring_len += n;
        if n == limit {
            self.local.refused += (frames.len() - n) as u64;
        }
        self.stats.tx_packets += n as u64;
        self.stats.tx_bytes += bytes;
        self.stats.tx_dropped = self.local.refused;
        self.publish_sink();
        n
    }

    /// Puts checked, now-held buffers on the free stacks.
    #[inline]
    fn push_free(&mut self, bufs: &[BufHandle]) {
        let gen_bufs = self.gen_bufs as i32;
        let (mut spare, mut gen_) = (0i32, 0i32);
        for h in bufs {
            let i = h.idx().0 as i32;
            spare |= gen_bufs - 1 - i;
            gen_ |= i - gen_bufs;
        }
        self.push_sorted(bufs, spare, gen_);
    }

    /// Puts checked, now-held buffers on the free stacks, given the sign bits (indices fit
    /// 24 bits) of a fold over them: `spare` < 0 when some buffer is a spare one, `gen_` < 0
    /// when some buffer is a generator one.
    #[inline(always)]
    fn push_sorted(&mut self, bufs: &[BufHandle], spare: i32, gen_: i32) {
        let gen_bufs = self.gen_bufs;
        if spare >= 0 {
            self.gen_free.extend_from_slice(bufs);
        } else if gen_ >= 0 {
            self.spare_free.extend_from_slice(bufs);
        } else {
            for &h in bufs {
                if h.idx().0 < gen_bufs {
                    self.gen_free.push(h);
                } else {
                    self.spare_free.push(h);
                }
            }
        }
    }

    /// Takes back buffers one by one, refusing (and counting) any this port did not lend.
    fn reclaim_each(&mut self, bufs: &[BufHandle]) {
        let id = self.pool.id();
        for &h in bufs {
            let i = h.idx().0 as usize;
            let bit = 1u64 << (i % 64);
            match self.held.get_mut(i / 64) {
                Some(w)
                    if h.pool() == id
                        && i < self.pool.layout().count
                        && (!self.track || *w & bit == 0) =>
                {
                    *w |= bit;
                    self.push_free(&[h]);
                }
                _ => {
                    self.local.bad_reclaims += 1;
                    self.probe
                        .bad_reclaims
                        .store(self.local.bad_reclaims, Relaxed);
                }
            }
        }
        self.publish_free();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, pool: u8, f: impl FnOnce(&mut SimConfig)) -> SimPort {
        let mut c = SimConfig::new(name, [2, 0, 0, 0, 0, pool], PoolId(pool));
        c.gen_bufs = 64;
        c.spare_bufs = 64;
        f(&mut c);
        SimPort::new(c).expect("valid sim config")
    }

    fn read(pool: &Pool, f: &Frame) -> Vec<u8> {
        let mut v = vec![0; f.len as usize];
        pool.buf(f.buf)
            .expect("handle of this pool")
            .read(0, &mut v)
            .expect("in bounds");
        v
    }

    #[test]
    fn generator_writes_patterns_and_sequence() {
        let mut g = port("g", 1, |c| {
            c.dst = MacPattern::RoundRobin(vec![[2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 8]]);
            c.sequence = true;
            c.frame_len = 100;
            c.limit = Some(5);
        });
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
        assert_eq!(g.rx_burst(&mut out), 5);
        assert_eq!(g.rx_burst(&mut out[5..]), 0, "limit reached");
        for (i, f) in out[..5].iter().enumerate() {
            let b = read(g.pool(), f);
            assert_eq!(b.len(), 100);
            assert_eq!(b[5], if i % 2 == 0 { 7 } else { 8 });
            assert_eq!(&b[6..12], &[2, 0, 0, 0, 0, 1]);
            assert_eq!(u64::from_be_bytes(b[16..24].try_into().unwrap()), i as u64);
            assert_eq!(b[99], payload_byte(i as u64, 99));
        }
        assert_eq!(g.stats().rx_packets, 5);
    }

    #[test]
    fn sink_verifies_sequence_and_payload() {
        let mut g = port("g", 1, |c| {
            c.sequence = true;
        });
        let mut s = port("s", 2, |c| {
            c.generate = false;
            c.verify = true;
        });
        s.grant_read(g.pool().clone());
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 4];
        assert_eq!(g.rx_burst(&mut out), 4);
        // Drop frame 1 (a gap), corrupt frame 3's payload.
        g.pool()
            .buf(out[3].buf)
            .unwrap()
            .write(40, &[0xaa])
            .unwrap();
        let sent = [out[0], out[2], out[3]];
        assert_eq!(s.tx_burst(&sent), 3);
        let p = s.probe();
        assert_eq!(SimProbe::get(&p.sunk), 3);
        assert_eq!(SimProbe::get(&p.lost), 1);
        assert_eq!(SimProbe::get(&p.payload_errors), 1);
        // Replaying frame 0 is out of order.
        assert_eq!(s.tx_burst(&out[..1]), 1);
        assert_eq!(SimProbe::get(&p.seq_errors), 1);
        let mut done = [BufHandle::from_raw(0); 8];
        assert_eq!(s.tx_done(&mut done), 4);
        g.reclaim(&[out[1].buf]);
        g.reclaim(&done[..3]);
        // out[0] came back twice (it was sunk twice): the second return is refused.
        g.reclaim(&done[3..4]);
        assert_eq!(SimProbe::get(&g.probe().bad_reclaims), 1);
        assert_eq!(SimProbe::get(&g.probe().free), 128);
    }

    #[test]
    fn sink_refuses_unreadable_pools_and_full_ring() {
        let mut g = port("g", 1, |_| {});
        let mut s = port("s", 2, |c| {
            c.generate = false;
            c.tx_ring = 2;
        });
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 4];
        assert_eq!(g.rx_burst(&mut out), 4);
        assert_eq!(s.tx_burst(&out), 0, "pool 1 not granted");
        s.grant_read(g.pool().clone());
        s.probe().hold_completions.store(true, Relaxed);
        assert_eq!(s.tx_burst(&out), 2);
        let mut done = [BufHandle::from_raw(0); 4];
        assert_eq!(s.tx_done(&mut done), 0, "held");
        s.probe().hold_completions.store(false, Relaxed);
        assert_eq!(s.tx_done(&mut done), 2);
        assert_eq!(&done[..2], &[out[0].buf, out[1].buf]);
        assert_eq!(s.stats().tx_dropped, 2);
    }

    #[test]
    fn grant_and_revoke_follow_frames_in_flight() {
        let mut g = port("g", 1, |_| {});
        let mut s = port("s", 2, |c| c.generate = false);
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 2];
        assert_eq!(g.rx_burst(&mut out), 2);
        assert!(s.grant_tx_pool(g.pool()));
        assert_eq!(s.tx_burst(&out), 2);
        assert!(
            !s.revoke_tx_pool(PoolId(1)),
            "frames of pool 1 still in flight"
        );
        let mut done = [BufHandle::from_raw(0); 2];
        assert_eq!(s.tx_done(&mut done), 2);
        assert!(s.revoke_tx_pool(PoolId(1)));
        assert!(!s.tx_pools().contains(PoolId(1)));
        assert_eq!(s.tx_burst(&out), 0, "no longer readable");
    }

    #[test]
    fn round_robin_macs_are_written_into_each_handed_out_buffer() {
        let mut g = port("g", 1, |c| {
            c.dst = MacPattern::RoundRobin(vec![[2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 8]]);
            c.src = Some(MacPattern::RoundRobin(vec![
                [2, 0, 0, 0, 1, 1],
                [2, 0, 0, 0, 1, 2],
                [2, 0, 0, 0, 1, 3],
            ]));
        });
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
        let mut seen = 0;
        // 150 frames: past the end of the generator's table of whole periods (66 frames)
        // twice, so its wrap-around is checked too.
        for _ in 0..30 {
            assert_eq!(g.rx_burst(&mut out[..5]), 5);
            for f in &out[..5] {
                let b = read(g.pool(), f);
                assert_eq!(b[5], 7 + (seen % 2) as u8, "frame {seen} destination");
                assert_eq!(b[11], 1 + (seen % 3) as u8, "frame {seen} source");
                assert_eq!(&b[12..14], &SIM_ETHERTYPE.to_be_bytes());
                assert_eq!(&b[14..16], &[1, 0], "generator id and flags as built");
                assert!(
                    (24..64).all(|j| b[j] == payload_byte(0, j)) && b[16..24] == [0; 8],
                    "frame {seen} after its header"
                );
                seen += 1;
            }
            // Buffers come back in another order than they went out.
            let mut back: Vec<BufHandle> = out[..5].iter().map(|f| f.buf).collect();
            back.reverse();
            g.reclaim(&back);
        }
    }

    #[test]
    fn round_robin_macs_of_short_frames_leave_the_bytes_after_the_frame_alone() {
        // 14-byte frames: the generator writes 12 MAC bytes per frame (not the 16 of its
        // table), and nothing past the frame's EtherType.
        let mut g = port("g", 1, |c| {
            c.frame_len = 14;
            c.dst = MacPattern::RoundRobin(vec![[2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 8]]);
        });
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 4];
        for round in 0..2 {
            assert_eq!(g.rx_burst(&mut out), 4);
            for (k, f) in out.iter().enumerate() {
                let mut b = [0u8; 16];
                let buf = g.pool().buf(f.buf).expect("handle of this pool");
                buf.read(0, &mut b).expect("in bounds");
                assert_eq!(b[5], 7 + (k % 2) as u8, "round {round} frame {k}");
                assert_eq!(&b[6..12], &g.mac());
                assert_eq!(&b[12..14], &SIM_ETHERTYPE.to_be_bytes());
                assert_eq!(&b[14..16], &[0, 0], "round {round} frame {k}");
            }
            let back: Vec<BufHandle> = out.iter().map(|f| f.buf).collect();
            g.reclaim(&back);
        }
    }

    #[test]
    fn a_burst_with_an_unreadable_frame_takes_only_the_frames_before_it() {
        let mut g1 = port("g1", 1, |_| {});
        let mut g2 = port("g2", 2, |_| {});
        let mut s = port("s", 3, |c| {
            c.generate = false;
            c.tx_ring = 4;
        });
        s.grant_read(g1.pool().clone());
        let mut a = [Frame::new(BufHandle::from_raw(0), 0); 3];
        let mut b = [Frame::new(BufHandle::from_raw(0), 0); 1];
        assert_eq!(g1.rx_burst(&mut a), 3);
        assert_eq!(g2.rx_burst(&mut b), 1);
        // Fill the ring so that the burst wraps around its end.
        assert_eq!(s.tx_burst(&a[..3]), 3);
        let mut done = [BufHandle::from_raw(0); 4];
        assert_eq!(s.tx_done(&mut done[..2]), 2);
        let burst = [a[0], a[1], b[0], a[2]];
        assert_eq!(s.tx_burst(&burst), 2, "stops at the frame of pool 2");
        assert_eq!(s.stats().tx_packets, 5);
        assert_eq!(s.stats().tx_bytes, 5 * 64);
        assert_eq!(s.tx_done(&mut done), 3);
        assert_eq!(&done[..3], &[a[2].buf, a[0].buf, a[1].buf]);
        assert_eq!(SimProbe::get(&s.probe().unreadable), 1);
    }

    #[test]
    fn reclaim_refuses_handles_of_other_pools_and_past_the_end() {
        for track in [false, true] {
            let mut g = port("g", 3, |c| c.track_buffers = track);
            let mut bufs = [BufHandle::from_raw(0); 4];
            assert_eq!(g.alloc(&mut bufs), 4);
            let bad = [
                BufHandle::from_raw((2 << 24) | 5),
                BufHandle::from_raw(4 << 24),
                BufHandle::from_raw((3 << 24) | 128),
                BufHandle::from_raw(u32::MAX),
            ];
            // Each bad handle inside a burst of good ones: the good ones are taken back,
            // the bad one refused and counted.
            for (k, &b) in bad.iter().enumerate() {
                g.reclaim(&[bufs[k], b]);
                assert_eq!(SimProbe::get(&g.probe().bad_reclaims), k as u64 + 1);
            }
            assert_eq!(SimProbe::get(&g.probe().free), 128, "track {track}");
        }
    }

    #[test]
    fn alloc_never_hands_out_generator_frames() {
        let mut g = port("g", 3, |_| {});
        let mut bufs = [BufHandle::from_raw(0); 200];
        assert_eq!(g.alloc(&mut bufs), 64);
        assert!(
            bufs[..64]
                .iter()
                .all(|h| h.idx().0 >= 64 && h.pool() == PoolId(3))
        );
        g.reclaim(&bufs[..64]);
        assert_eq!(SimProbe::get(&g.probe().free), 128);
    }
}

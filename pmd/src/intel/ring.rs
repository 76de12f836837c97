//! The descriptor-ring core both families share: one receive and one transmit queue over
//! advanced descriptors (82576 §7.1/§7.2, 82599 §7.1/§7.2).
//!
//! Receive: every slot holds a buffer; the device fills slots from head to tail and sets DD.
//! A burst takes the done slots in order, refills each from the free list in the same pass
//! and moves the tail **once** (RDT = the last slot refilled, so the slot at the tail is
//! always the driver's and a full ring is never mistaken for an empty one).
//!
//! Transmit: a burst writes one descriptor per plain frame (a context descriptor and one per
//! device-contiguous piece for a frame with an offload or a buffer the device does not see
//! as one run), RS on each frame's last, and moves the tail once. Completions are cleaned in
//! batches of up to [`TX_CLEAN_BATCH`] frames: frames finish in order, so the DD bit of the
//! last frame of a batch vouches for the whole batch.

use core::sync::atomic::{Ordering, fence};

use grant_pool::{BufHandle, PoolId, Region};

use offload::FrameMeta;

use super::desc::{
    DescMem, RXD_LEN_SHIFT, RXD_STAT_DD, RXD_STAT_EOP, RXD_STAT_TCPCS, RXD_STAT_UDPCS, TXD_STAT_DD,
    TxContext, tx_cmd, tx_cmd_offload,
};
use super::regs::Regs;
use super::{Family, igb, ixgbe};
use crate::Frame;

/// Largest number of transmit descriptors cleaned per DD check.
pub const TX_CLEAN_BATCH: usize = 32;

const HELD_CALLER: u8 = 0;
const FREE: u8 = 1;
const HELD_DEVICE: u8 = 2;

/// One buffer of the port's own pool: its device address and who holds it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    iova: u64,
    state: u8,
}

/// Empty buffers of the port's own pool with their device addresses, and who holds each
/// buffer (the caller, the free list, or a receive slot).
#[derive(Debug)]
pub struct FreeBufs {
    /// A stack of free buffers: `stack[..top]`. Its size is the pool's, and a buffer can be
    /// free only once, so it never overflows (nothing is allocated after construction).
    stack: Box<[BufHandle]>,
    top: usize,
    slots: Box<[Slot]>,
}

impl FreeBufs {
    /// A free list for a pool whose buffer `i` is at device address `iova[i]`; starts empty.
    pub fn new(iova: &[u64]) -> Self {
        Self {
            stack: vec![BufHandle::from_raw(0); iova.len()].into_boxed_slice(),
            top: 0,
            slots: iova
                .iter()
                .map(|&iova| Slot {
                    iova,
                    state: HELD_CALLER,
                })
                .collect(),
        }
    }

    #[inline(always)]
    fn pop_raw(&mut self) -> Option<BufHandle> {
        let t = self.top.checked_sub(1)?;
        let b = *self.stack.get(t)?;
        self.top = t;
        Some(b)
    }

    /// Takes an empty buffer for a receive slot, with its device address.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<(BufHandle, u64)> {
        let b = self.pop_raw()?;
        // Every handle on the stack was checked against the pool by `push`.
        let s = self.slots.get_mut(b.idx().0 as usize)?;
        s.state = HELD_DEVICE;
        Some((b, s.iova))
    }

    /// Takes an empty buffer for the caller.
    #[inline(always)]
    pub fn take(&mut self) -> Option<BufHandle> {
        let b = self.pop_raw()?;
        if let Some(s) = self.slots.get_mut(b.idx().0 as usize) {
            s.state = HELD_CALLER;
        }
        Some(b)
    }

    /// Gives back an empty buffer the caller holds. A handle outside the pool, a buffer
    /// already free (a double return) or one in a receive slot is refused: `false`.
    #[inline(always)]
    pub fn push(&mut self, b: BufHandle) -> bool {
        match self.slots.get_mut(b.idx().0 as usize) {
            Some(s) if s.state == HELD_CALLER => match self.stack.get_mut(self.top) {
                Some(t) => {
                    s.state = FREE;
                    *t = b;
                    self.top += 1;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// Gives back many buffers of pool `pool` (see [`FreeBufs::push`]); returns how many were
    /// refused (another pool's, a double return, or one in a receive slot).
    #[inline(always)]
    pub fn push_all(&mut self, bufs: &[BufHandle], pool: PoolId) -> usize {
        let mut top = self.top;
        let mut refused = 0;
        for &b in bufs {
            match (
                self.slots.get_mut(b.idx().0 as usize),
                self.stack.get_mut(top),
            ) {
                (Some(s), Some(t)) if s.state == HELD_CALLER && b.pool() == pool => {
                    s.state = FREE;
                    *t = b;
                    top += 1;
                }
                _ => refused += 1,
            }
        }
        self.top = top;
        refused
    }

    /// The device address of buffer `b` (which must be of this pool).
    #[inline(always)]
    pub fn iova(&self, b: BufHandle) -> u64 {
        self.slots.get(b.idx().0 as usize).map_or(0, |s| s.iova)
    }

    /// Free buffers now.
    pub fn len(&self) -> usize {
        self.top
    }

    /// Whether no buffer is free.
    pub fn is_empty(&self) -> bool {
        self.top == 0
    }
}

/// Counters a receive burst reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct RxCounts {
    /// Frames returned.
    pub frames: usize,
    /// Descriptors dropped for an error bit or a frame spanning several buffers.
    pub errors: usize,
}

/// Where a family puts the error bits of its receive write-back (upper quadword).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxErrors {
    /// RXE: CRC, symbol or length error: the frame is dropped.
    pub rxe: u64,
    /// IPE: the IPv4 header checksum is wrong.
    pub ipe: u64,
    /// L4E (TCPE): the TCP/UDP checksum is wrong.
    pub l4e: u64,
}

/// One receive queue.
#[derive(Debug)]
pub struct RxQueue {
    desc: DescMem,
    bufs: Box<[BufHandle]>,
    next: usize,
    mask: usize,
    tail_reg: u32,
    buf_size: u16,
    discarding: bool,
    errors: RxErrors,
    /// The descriptor at `next` starts a frame spanning several buffers.
    chain_next: bool,
}

impl RxQueue {
    /// A queue over `desc` whose tail register is `tail_reg`, for buffers of `buf_size`, on a
    /// device of `family`.
    pub fn new(desc: DescMem, tail_reg: u32, buf_size: u16, family: Family) -> Self {
        let errors = match family {
            Family::Igb => igb::RX_ERRORS,
            Family::Ixgbe => ixgbe::RX_ERRORS,
        };
        let n = desc.count();
        Self {
            desc,
            bufs: vec![BufHandle::from_raw(0); n].into_boxed_slice(),
            next: 0,
            mask: n - 1,
            tail_reg,
            buf_size,
            discarding: false,
            errors,
            chain_next: false,
        }
    }

    /// The ring memory (for RDBAL/RDBAH/RDLEN).
    pub fn desc(&self) -> &DescMem {
        &self.desc
    }

    /// Puts a buffer in every slot before the queue is enabled. Returns `false` when the free
    /// list runs dry (the port then has too few buffers for its rings).
    pub fn fill(&mut self, free: &mut FreeBufs) -> bool {
        for i in 0..self.desc.count() {
            let Some((b, iova)) = free.pop() else {
                return false;
            };
            self.bufs[i] = b;
            self.desc.write(i, 0, iova);
            self.desc.write(i, 1, 0);
        }
        self.next = 0;
        true
    }

    /// The tail value that hands every slot but one to the device (after [`Self::fill`]).
    pub fn initial_tail(&self) -> u32 {
        self.mask as u32
    }

    /// Takes received frames into `out`, refills their slots from `free` and writes the tail
    /// once. A frame is left in the ring when no empty buffer is free to replace it. With
    /// `jumbo`, a frame spanning several buffers is copied into a large buffer (one a burst,
    /// first in it); without, it is dropped.
    #[inline]
    pub fn burst<R: Regs>(
        &mut self,
        regs: &R,
        out: &mut [Frame],
        free: &mut FreeBufs,
        jumbo: Option<&mut Jumbo<'_>>,
    ) -> RxCounts {
        let stop_at_chains = jumbo.is_some();
        if self.chain_next
            && let Some(jb) = jumbo
            && !out.is_empty()
        {
            let c = self.take_chain(regs, &mut out[0], &mut free.slots, jb);
            let mut r = self.burst_run(regs, &mut out[c.frames..], free, stop_at_chains);
            r.frames += c.frames;
            r.errors += c.errors;
            return r;
        }
        self.burst_run(regs, out, free, stop_at_chains)
    }

    /// The frame at `self.next`, which spans several buffers: copied into a large buffer
    /// and written to `out`, or dropped; its descriptors go back to the device with the
    /// buffers they had.
    #[cold]
    #[inline(never)]
    fn take_chain<R: Regs>(
        &mut self,
        regs: &R,
        out: &mut Frame,
        slots: &mut [Slot],
        jb: &mut Jumbo<'_>,
    ) -> RxCounts {
        let (mask, i) = (self.mask, self.next);
        let mut c = RxCounts::default();
        let n = match take_chain(
            &self.desc,
            mask,
            i,
            mask + 1,
            &self.bufs,
            slots,
            jb,
            self.errors,
        ) {
            Chain::Incomplete => return c,
            Chain::Taken(f, n) => {
                *out = f;
                c.frames = 1;
                n
            }
            Chain::Recycled(n) => {
                c.errors = 1;
                n
            }
            Chain::Drop => {
                // Dropped as any frame is: its descriptors go back up to its last, which
                // counts the error.
                let iova = self
                    .bufs
                    .get(i)
                    .and_then(|b| slots.get(b.idx().0 as usize))
                    .map_or(0, |s| s.iova);
                self.desc.write(i, 0, iova);
                self.desc.write(i, 1, 0);
                self.discarding = true;
                1
            }
        };
        self.chain_next = false;
        self.next = (i + n) & mask;
        fence(Ordering::Release);
        regs.write(self.tail_reg, ((self.next + mask) & mask) as u32);
        c
    }

    /// [`RxQueue::burst`] but for a frame spanning several buffers: stops at its first
    /// descriptor (`chain_next`) when `stop_at_chains`, else drops it.
    #[inline(always)]
    fn burst_run<R: Regs>(
        &mut self,
        regs: &R,
        out: &mut [Frame],
        free: &mut FreeBufs,
        stop_at_chains: bool,
    ) -> RxCounts {
        // The family's RXE bit as a constant: one register less in the scan loop (3
        // instructions a frame fewer, callgrind).
        if self.errors.rxe == igb::RX_ERRORS.rxe {
            self.burst_family::<R, { igb::RX_ERRORS.rxe }>(regs, out, free, stop_at_chains)
        } else {
            self.burst_family::<R, { ixgbe::RX_ERRORS.rxe }>(regs, out, free, stop_at_chains)
        }
    }

    /// [`RxQueue::burst_run`] for a family whose RXE bit is `RXE`.
    #[inline(always)]
    fn burst_family<R: Regs, const RXE: u64>(
        &mut self,
        regs: &R,
        out: &mut [Frame],
        free: &mut FreeBufs,
        stop_at_chains: bool,
    ) -> RxCounts {
        // Locals, so that the compiler keeps them in registers across the volatile accesses.
        let desc = self.desc;
        let mask = self.mask;
        let buf_size = self.buf_size;
        // The write-back bits that decide whether a frame goes up: DD, EOP and RXE.
        let take_mask = RXD_STAT_DD | RXD_STAT_EOP | RXE;
        let bufs = &mut *self.bufs;
        let FreeBufs { stack, top, slots } = free;
        // The replacement buffers: the top `want` entries of the free stack, taken from the
        // top down; those not used stay where they are.
        let want = out.len().min(*top);
        let fresh = &stack[*top - want..*top];
        let out = &mut out[..want];
        let mut frames = 0;
        let mut errors = 0;
        let mut i = self.next;
        let mut moved = 0usize;
        let mut discarding = self.discarding;
        // Each round: scan a run of good frames, refill their slots, then deal with at most
        // one dropped descriptor. Bounded by the ring: a refilled slot has DD cleared, so a
        // lap ends at the first slot not done.
        while moved <= mask && frames < want {
            // Scan: frames whose descriptor is done, whole (EOP), error-free and of a sane
            // length go to the caller.
            let start = i;
            let mut run = 0;
            let mut wb = 0;
            while frames + run < want && moved + run <= mask {
                wb = desc.read(i, 1);
                let len = (wb >> RXD_LEN_SHIFT) as u16;
                if wb & take_mask != RXD_STAT_DD | RXD_STAT_EOP
                    || discarding
                    || len.wrapping_sub(1) >= buf_size
                {
                    break;
                }
                // Read the frame only after DD was seen.
                fence(Ordering::Acquire);
                let (Some(o), Some(&b)) = (out.get_mut(frames + run), bufs.get(i)) else {
                    break;
                };
                *o = Frame {
                    buf: b,
                    len,
                    meta: rx_meta(wb),
                };
                run += 1;
                i = (i + 1) & mask;
            }
            // Refill the run's slots from the top of the free stack.
            for j in 0..run {
                let k = (start + j) & mask;
                let (Some(slot), Some(&new)) = (bufs.get_mut(k), fresh.get(want - 1 - frames - j))
                else {
                    break;
                };
                let old = core::mem::replace(slot, new);
                if let Some(s) = slots.get_mut(old.idx().0 as usize) {
                    s.state = HELD_CALLER;
                }
                let iova = match slots.get_mut(new.idx().0 as usize) {
                    Some(s) => {
                        s.state = HELD_DEVICE;
                        s.iova
                    }
                    None => 0,
                };
                desc.write(k, 0, iova);
                desc.write(k, 1, 0);
            }
            frames += run;
            moved += run;
            if frames == want || moved > mask || wb & RXD_STAT_DD == 0 {
                break;
            }
            // The first descriptor of a frame that spans several buffers: left for the next
            // burst, which copies it into a large buffer.
            if stop_at_chains && wb & (RXD_STAT_EOP | self.errors.rxe) == 0 && !discarding {
                self.chain_next = true;
                break;
            }
            // A done descriptor that cannot go to the caller: keep its buffer in the slot and
            // drop the frame (and the rest of a frame spanning several descriptors, up to its
            // EOP). One error per frame.
            errors += usize::from(wb & RXD_STAT_EOP != 0);
            discarding = wb & RXD_STAT_EOP == 0;
            let iova = bufs
                .get(i)
                .and_then(|b| slots.get(b.idx().0 as usize))
                .map_or(0, |s| s.iova);
            desc.write(i, 0, iova);
            desc.write(i, 1, 0);
            i = (i + 1) & mask;
            moved += 1;
        }
        *top -= frames;
        self.discarding = discarding;
        if moved > 0 {
            // Descriptors must be visible to the device before the tail moves; the tail names
            // the last slot handed back.
            fence(Ordering::Release);
            regs.write(self.tail_reg, ((i + mask) & mask) as u32);
            self.next = i;
        }
        RxCounts { frames, errors }
    }

    /// Buffers held by the ring (for teardown).
    pub fn bufs(&self) -> &[BufHandle] {
        &self.bufs
    }
}

/// What a receive queue needs to take a frame that spans several of its buffers (a jumbo
/// frame): it is copied into one buffer of a large pool, as the switch wants one buffer per
/// frame.
#[derive(Debug)]
pub struct Jumbo<'a> {
    /// The receive buffers' memory.
    pub rx: Region<'a>,
    /// Bytes per receive buffer.
    pub rx_size: usize,
    /// The large pool's memory.
    pub large: Region<'a>,
    /// Bytes per large buffer.
    pub large_size: usize,
    /// The large pool's free buffers.
    pub free: &'a mut FreeBufs,
}

/// The metadata of a frame whose last descriptor wrote back `wb`: verified when the device
/// checked both checksums and found them good (RXCSUM), so that nobody checks them again;
/// IPv6 and other frames stay unchecked.
/// The device sets TCPCS or UDPCS for a TCP or UDP frame whose checksum it checked, and an
/// error bit (IPE, L4E: bits 31:29 in either family's layout, whose third is RXE, which
/// never gets this far) when a check failed: verified is "one of the two, no error", a
/// single comparison. An IPv4 header's checksum is checked too (RXCSUM.IPOFLD), with
/// IPE on failure; IPv6 has none.
#[inline(always)]
fn rx_meta(wb: u64) -> u16 {
    let verified = (wb & CSUM_BITS).wrapping_sub(1) < RXD_STAT_TCPCS | RXD_STAT_UDPCS;
    FrameMeta::VERIFIED.bits() * u16::from(verified)
}

/// The L4 "checked" status bits, and every error bit.
const CSUM_BITS: u64 = RXD_STAT_TCPCS | RXD_STAT_UDPCS | (0b111 << 29);

/// What became of a frame spanning several descriptors.
enum Chain {
    /// The device has not written its last descriptor yet: wait.
    Incomplete,
    /// Copied into a large buffer: the frame, and how many descriptors it took.
    Taken(Frame, usize),
    /// Dropped: an error bit, too long, or no large buffer free; nothing handed back yet.
    Drop,
    /// Dropped after its `n` descriptors were handed back to the device (a copy failed).
    Recycled(usize),
}

/// Most descriptors one frame may span (a 64 KiB frame in 1 KiB buffers).
const MAX_CHAIN: usize = 64;

/// Takes the frame whose first descriptor is `i` and spans several (at most `limit`):
/// copies its buffers into a large buffer and hands their slots back to the device with the
/// same buffers.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn take_chain(
    desc: &DescMem,
    mask: usize,
    i: usize,
    limit: usize,
    bufs: &[BufHandle],
    slots: &[Slot],
    jb: &mut Jumbo<'_>,
    errs: RxErrors,
) -> Chain {
    // Each descriptor's length, read once: the copy uses these, so a length the device
    // rewrites meanwhile cannot move it out of the large buffer.
    let mut lens = [0u16; MAX_CHAIN];
    let (mut n, mut total, mut last) = (0, 0usize, 0u64);
    while last == 0 {
        if n >= limit.min(MAX_CHAIN) {
            return Chain::Drop;
        }
        let wb = desc.read((i + n) & mask, 1);
        if wb & RXD_STAT_DD == 0 {
            return Chain::Incomplete;
        }
        let len = (wb >> RXD_LEN_SHIFT) as u16;
        if usize::from(len) > jb.rx_size {
            return Chain::Drop;
        }
        lens[n] = len;
        total += usize::from(len);
        n += 1;
        if wb & RXD_STAT_EOP != 0 {
            last = wb;
        }
    }
    // Read the buffers only after every DD was seen.
    fence(Ordering::Acquire);
    if last & errs.rxe != 0 || total > jb.large_size.min(usize::from(u16::MAX)) {
        return Chain::Drop;
    }
    let Some(b) = jb.free.take() else {
        return Chain::Drop;
    };
    // total <= large_size, so every piece lands inside buffer `b`.
    let mut at = b.idx().0 as usize * jb.large_size;
    let mut ok = true;
    for (k, &len) in lens[..n].iter().enumerate() {
        let s = (i + k) & mask;
        let len = usize::from(len);
        let src = bufs.get(s).map_or(0, |h| h.idx().0 as usize);
        ok &= jb
            .large
            .copy_from(at, &jb.rx, src * jb.rx_size, len)
            .is_ok();
        at += len;
        let iova = slots.get(src).map_or(0, |x| x.iova);
        desc.write(s, 0, iova);
        desc.write(s, 1, 0);
    }
    if !ok {
        jb.free.push(b);
        return Chain::Recycled(n);
    }
    let f = Frame {
        buf: b,
        len: total as u16,
        meta: rx_meta(last),
    };
    Chain::Taken(f, n)
}

/// Where a transmit frame's bytes are for the device, and what it is to do with them.
pub trait TxAddr {
    /// The device address of `f`'s buffer when the whole frame is one run for the device
    /// (one data descriptor), from a table: the per-frame fast path. `None` sends the frame
    /// the long way ([`TxAddr::piece`]), which refuses what cannot be sent.
    fn first(&self, f: &Frame) -> Option<u64>;

    /// The device address of byte `off` of `f`'s buffer and how many bytes from there are
    /// contiguous for the device (at least one, at most to the buffer's end); `None`
    /// refuses the frame (at `off` 0: a length its buffer does not hold).
    fn piece(&self, f: &Frame, off: u32) -> Option<(u64, u32)>;

    /// For a frame whose metadata asks for it (a partial checksum, a segment size): gets
    /// its headers ready for the device and returns the context to send it with. `None`
    /// refuses the frame (headers this device cannot complete or cut).
    fn offload(&self, f: &Frame) -> Option<TxContext>;
}

/// Most descriptors one frame may take: a context descriptor and the data descriptors of
/// 64 KiB in 4 KiB pieces, with room for a piece at each end.
pub const MAX_FRAME_DESCS: usize = 20;

/// One transmit queue.
///
/// A frame takes one data descriptor per device-contiguous piece of its buffer, after a
/// context descriptor when it carries an offload; the device reports status (RS) on each
/// frame's last descriptor only. `bufs[d]` holds the frame's buffer at its last descriptor
/// `d` and [`NO_BUF`] at the others, so plain traffic (one descriptor a frame) is tracked
/// exactly as one buffer per descriptor, and only queues with multi-descriptor frames in
/// flight look for frame ends when cleaning.
#[derive(Debug)]
pub struct TxQueue {
    desc: DescMem,
    bufs: Box<[BufHandle]>,
    /// Next descriptor to write; first descriptor not yet cleaned.
    tail: usize,
    clean: usize,
    /// Descriptors in flight, and how many of them end no frame.
    in_flight: usize,
    extra: usize,
    mask: usize,
    tail_reg: u32,
    /// Frames taken but not sent (offload metadata the device cannot act on for their
    /// headers), given back by the next [`TxQueue::clean`]; at most a ring's worth, never
    /// grown.
    rejected: Vec<BufHandle>,
    /// Frames taken but not sent, so far.
    dropped: u64,
}

/// The mark of a descriptor that ends no frame (a context descriptor, a frame's first or
/// middle piece): buffer 2^24 - 1 of pool 255, which no pool an intel port transmits from
/// has (the port refuses pools of 2^24 buffers), so no frame it takes carries it.
const NO_BUF: BufHandle = BufHandle::from_raw(u32::MAX);

impl TxQueue {
    /// A queue over `desc` whose tail register is `tail_reg`.
    pub fn new(desc: DescMem, tail_reg: u32) -> Self {
        let n = desc.count();
        for i in 0..n {
            desc.write(i, 0, 0);
            desc.write(i, 1, 0);
        }
        Self {
            desc,
            bufs: vec![NO_BUF; n].into_boxed_slice(),
            tail: 0,
            clean: 0,
            in_flight: 0,
            extra: 0,
            mask: n - 1,
            tail_reg,
            rejected: Vec::with_capacity(n),
            dropped: 0,
        }
    }

    /// Frames taken but not sent so far: offload metadata the device cannot act on for the
    /// frame's headers.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The ring memory (for TDBAL/TDBAH/TDLEN).
    pub fn desc(&self) -> &DescMem {
        &self.desc
    }

    /// Frames handed to the device, or dropped, and not yet cleaned.
    pub fn in_flight(&self) -> usize {
        self.in_flight - self.extra + self.rejected.len()
    }

    /// Queues the leading frames of `frames` that fit and that `addr` accepts; writes the
    /// tail once. Returns how many were taken.
    #[inline]
    pub fn burst<R: Regs, A: TxAddr>(&mut self, regs: &R, frames: &[Frame], addr: &A) -> usize {
        let room = self.mask - self.in_flight;
        let desc = self.desc;
        let mask = self.mask;
        let bufs = &mut *self.bufs;
        let mut t = self.tail;
        let mut taken = 0;
        // Plain frames in one run each: one descriptor a frame.
        for f in &frames[..frames.len().min(room)] {
            if FrameMeta::from_bits(f.meta).is_partial() {
                break;
            }
            let Some(a) = addr.first(f) else { break };
            let Some(slot) = bufs.get_mut(t) else { break };
            desc.write(t, 0, a);
            desc.write(t, 1, tx_cmd(u32::from(f.len)));
            *slot = f.buf;
            t = (t + 1) & mask;
            taken += 1;
        }
        let mut used = taken;
        let mut extra = 0;
        if taken < frames.len() {
            // The rest the long way: offloads, several pieces, or a refusal.
            let before = self.rejected.len();
            let rejected = &mut self.rejected;
            let (n, d, e) = burst_long(
                &desc,
                bufs,
                t,
                mask,
                room - used,
                &frames[taken..],
                addr,
                rejected,
            );
            self.dropped += (self.rejected.len() - before) as u64;
            taken += n;
            used += d;
            extra += e;
            t = (t + d) & mask;
        }
        if used > 0 {
            fence(Ordering::Release);
            regs.write(self.tail_reg, t as u32);
            self.tail = t;
            self.in_flight += used;
            self.extra += extra;
        }
        taken
    }

    /// Moves the buffers of finished frames into `out`, a batch at a time; returns how many.
    #[inline]
    pub fn clean(&mut self, out: &mut [BufHandle]) -> usize {
        let mut got = 0;
        if !self.rejected.is_empty() {
            got = self.give_rejected(out);
        }
        while self.in_flight > 0 && got < out.len() {
            let want = self.in_flight.min(TX_CLEAN_BATCH).min(out.len() - got);
            if self.extra > 0 {
                match self.clean_frames(&mut out[got..], want) {
                    0 => break,
                    n => got += n,
                }
                continue;
            }
            // One descriptor a frame: the batch's last descriptor vouches for it.
            let k = want;
            let last = (self.clean + k - 1) & self.mask;
            if self.desc.read(last, 1) & TXD_STAT_DD == 0 {
                break;
            }
            // The k buffers are contiguous in the ring except where it wraps.
            let first = k.min(self.bufs.len() - self.clean);
            out[got..got + first].copy_from_slice(&self.bufs[self.clean..self.clean + first]);
            out[got + first..got + k].copy_from_slice(&self.bufs[..k - first]);
            self.clean = (self.clean + k) & self.mask;
            self.in_flight -= k;
            got += k;
        }
        got
    }

    /// Moves frames taken but not sent into `out`; returns how many.
    #[cold]
    #[inline(never)]
    fn give_rejected(&mut self, out: &mut [BufHandle]) -> usize {
        let n = self.rejected.len().min(out.len());
        for (o, b) in out.iter_mut().zip(self.rejected.drain(..n)) {
            *o = b;
        }
        n
    }

    /// [`TxQueue::clean`] while frames of several descriptors are in flight: up to `want`
    /// frames whose last descriptor is done, in order; returns how many.
    #[cold]
    #[inline(never)]
    fn clean_frames(&mut self, out: &mut [BufHandle], want: usize) -> usize {
        // The descriptor ending the `want`-th frame (or the last frame in flight).
        let (mut d, mut frames, mut end) = (0, 0, None);
        while d < self.in_flight && frames < want {
            let k = (self.clean + d) & self.mask;
            d += 1;
            if self.bufs[k] != NO_BUF {
                frames += 1;
                end = Some((k, d, frames));
            }
        }
        let Some((last, descs, frames)) = end else {
            return 0;
        };
        if self.desc.read(last, 1) & TXD_STAT_DD == 0 {
            return 0;
        }
        let mut n = 0;
        for j in 0..descs {
            let k = (self.clean + j) & self.mask;
            let b = core::mem::replace(&mut self.bufs[k], NO_BUF);
            if b != NO_BUF {
                out[n] = b;
                n += 1;
            }
        }
        self.clean = (self.clean + descs) & self.mask;
        self.in_flight -= descs;
        self.extra -= descs - frames;
        n
    }

    /// Buffers still in flight, oldest first (for teardown and pool unregistration).
    pub fn pending(&self) -> impl Iterator<Item = BufHandle> + '_ {
        (0..self.in_flight)
            .map(move |j| self.bufs[(self.clean + j) & self.mask])
            .filter(|&b| b != NO_BUF)
            .chain(self.rejected.iter().copied())
    }
}

/// [`TxQueue::burst`] for frames that do not go as one descriptor each, from descriptor
/// `t` with `room` free: returns the frames taken, the descriptors they took and how many
/// of those end no frame. A frame whose offload the device cannot act on is taken and put
/// in `rejected` (sent nowhere), so that the frames after it still go.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn burst_long<A: TxAddr>(
    desc: &DescMem,
    bufs: &mut [BufHandle],
    mut t: usize,
    mask: usize,
    room: usize,
    frames: &[Frame],
    addr: &A,
    rejected: &mut Vec<BufHandle>,
) -> (usize, usize, usize) {
    let (mut taken, mut used, mut extra) = (0, 0, 0);
    for f in frames {
        match write_frame(desc, bufs, t, mask, room - used, f, addr) {
            Ok(n) => {
                t = (t + n) & mask;
                used += n;
                extra += n - 1;
            }
            Err(Stop::Unsendable) if rejected.len() < rejected.capacity() => rejected.push(f.buf),
            Err(_) => break,
        }
        taken += 1;
    }
    (taken, used, extra)
}

/// Why [`write_frame`] wrote nothing.
enum Stop {
    /// The address refuses the frame, or the ring has no room: it stays the caller's.
    Refused,
    /// The frame carries offload metadata its headers do not bear out.
    Unsendable,
}

/// Writes frame `f` at descriptor `t` as a context descriptor (when it carries an offload)
/// and one data descriptor per device-contiguous piece, its buffer at the last of them in
/// `bufs`; returns how many descriptors it took, or why it wrote nothing the tail will
/// cover.
#[cold]
#[inline(never)]
fn write_frame<A: TxAddr>(
    desc: &DescMem,
    bufs: &mut [BufHandle],
    t: usize,
    mask: usize,
    room: usize,
    f: &Frame,
    addr: &A,
) -> Result<usize, Stop> {
    let total = u32::from(f.len);
    let ctx = if FrameMeta::from_bits(f.meta).is_partial() {
        Some(addr.offload(f).ok_or(Stop::Unsendable)?)
    } else {
        None
    };
    let mut pieces = [(0u64, 0u32); MAX_FRAME_DESCS];
    let mut n = 0;
    let mut off = 0;
    while off < total {
        let (a, len) = addr.piece(f, off).ok_or(Stop::Refused)?;
        let len = len.min(total - off);
        if len == 0 || n == pieces.len() {
            return Err(Stop::Refused);
        }
        pieces[n] = (a, len);
        n += 1;
        off += len;
    }
    let need = n + usize::from(ctx.is_some());
    if need > room || n == 0 {
        return Err(Stop::Refused);
    }
    let mut k = t;
    if let Some(c) = &ctx {
        let (q0, q1) = c.quadwords();
        desc.write(k, 0, q0);
        desc.write(k, 1, q1);
        *bufs.get_mut(k).ok_or(Stop::Refused)? = NO_BUF;
        k = (k + 1) & mask;
    }
    for (i, &(a, len)) in pieces[..n].iter().enumerate() {
        let last = i + 1 == n;
        desc.write(k, 0, a);
        desc.write(k, 1, tx_cmd_offload(len, total, ctx.as_ref(), i == 0, last));
        *bufs.get_mut(k).ok_or(Stop::Refused)? = if last { f.buf } else { NO_BUF };
        k = (k + 1) & mask;
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::desc::{TXD_DCMD_EOP, TXD_DCMD_RS, TXD_DCMD_TSE, TXD_DTYP_CTXT};
    use crate::intel::{Family, model::Model};
    use grant_pool::PoolId;

    /// Buffers of 64 KiB at device address `idx << 20`, seen by the device in 4 KiB pages
    /// that are not adjacent (as pinned small pages are without an IOMMU).
    struct Scattered;

    impl TxAddr for Scattered {
        fn first(&self, _: &Frame) -> Option<u64> {
            None
        }
        fn piece(&self, f: &Frame, off: u32) -> Option<(u64, u32)> {
            let page = u64::from(off / 4096) * 0x10_0000 + u64::from(f.buf.idx().0) * 0x1000_0000;
            Some((page + u64::from(off % 4096), 4096 - off % 4096))
        }
        fn offload(&self, _: &Frame) -> Option<TxContext> {
            Some(TxContext {
                mac_len: 14,
                ip_len: 20,
                ipv4: true,
                tcp: true,
                l4_len: 32,
                mss: 1448,
            })
        }
    }

    /// A transmit queue of 64 descriptors in ordinary memory (the vector, which the caller
    /// keeps while it uses the queue), and the register model for its tail writes.
    fn queue() -> (Vec<u64>, DescMem, TxQueue, Model) {
        let mut mem = vec![0u64; 64 * 2];
        // Why this is sound: 64 descriptors of 16 bytes in `mem`'s heap buffer, which does
        // not move when the vector does and lives as long as the caller keeps the vector;
        // the register model never reads them (no DMA is started).
        // SAFETY: the invariants stated just above hold here.
        let desc = unsafe { DescMem::new(mem.as_mut_ptr().cast(), 64, 0) };
        let regs = Model::new(Family::Igb, [2, 0, 0, 0, 0, 1]);
        (mem, desc, TxQueue::new(desc, 0xE018), regs)
    }

    fn buf(i: u32) -> BufHandle {
        BufHandle::new(PoolId(1), grant_pool::BufIdx(i)).expect("a handle")
    }

    #[test]
    fn a_frame_in_scattered_pages_takes_a_descriptor_per_page_and_one_completion() {
        let (_mem, desc, mut q, regs) = queue();
        let big = Frame {
            buf: buf(3),
            len: 20_000,
            meta: FrameMeta::partial(1448).bits(),
        };
        let small = Frame::new(buf(4), 100);
        assert_eq!(q.burst(&regs, &[big, small], &Scattered), 2);
        // Context, five data descriptors (20 000 bytes in 4 KiB pages), then the small frame.
        let cmd = |i: usize| desc.read(i, 1) as u32;
        let olinfo = |i: usize| (desc.read(i, 1) >> 32) as u32;
        assert_eq!(cmd(0) & (0xF << 20), TXD_DTYP_CTXT);
        for i in 1..=5 {
            assert_eq!(
                cmd(i) & TXD_DCMD_TSE,
                TXD_DCMD_TSE,
                "every data descriptor: TSE"
            );
            let last = i == 5;
            assert_eq!(cmd(i) & (TXD_DCMD_EOP | TXD_DCMD_RS) != 0, last);
            assert_eq!(
                desc.read(i, 0),
                (i as u64 - 1) * 0x10_0000 + 3 * 0x1000_0000
            );
        }
        assert_eq!(cmd(1) & 0xFFFF, 4096);
        assert_eq!(cmd(5) & 0xFFFF, 20_000 - 4 * 4096);
        assert_eq!(
            olinfo(1) >> 14,
            20_000 - (14 + 20 + 32),
            "PAYLEN: the payload"
        );
        assert_eq!(olinfo(2), 0, "options on the first data descriptor only");
        assert_eq!(cmd(6) & 0xFFFF, 100);
        // Status comes back on each frame's last descriptor; a batch is cleaned once its
        // last frame's is done (frames finish in order).
        let mut out = [BufHandle::from_raw(0); 4];
        desc.write(5, 1, desc.read(5, 1) | TXD_STAT_DD);
        assert_eq!(q.clean(&mut out), 0);
        desc.write(6, 1, desc.read(6, 1) | TXD_STAT_DD);
        assert_eq!(q.clean(&mut out), 2);
        assert_eq!(out[..2], [buf(3), buf(4)]);
        // Every descriptor is free again.
        assert_eq!((q.in_flight, q.extra), (0, 0));
    }

    #[test]
    fn a_frame_that_needs_more_descriptors_than_are_free_waits() {
        let (_mem, _desc, mut q, regs) = queue();
        let big = |i| Frame {
            buf: buf(i),
            len: 60_000,
            meta: FrameMeta::partial(1448).bits(),
        };
        // 16 descriptors each (a context and 15 pages): three fit in 63, the fourth waits.
        let frames = [big(0), big(1), big(2), big(3)];
        assert_eq!(q.burst(&regs, &frames, &Scattered), 3);
        assert_eq!(q.in_flight(), 3);
        assert_eq!(q.burst(&regs, &frames[3..], &Scattered), 0);
    }
}

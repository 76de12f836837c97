//! The descriptor-ring core both families share: one receive and one transmit queue over
//! advanced descriptors (82576 §7.1/§7.2, 82599 §7.1/§7.2).
//!
//! Receive: every slot holds a buffer; the device fills slots from head to tail and sets DD.
//! A burst takes the done slots in order, refills each from the free list in the same pass
//! and moves the tail **once** (RDT = the last slot refilled, so the slot at the tail is
//! always the driver's and a full ring is never mistaken for an empty one).
//!
//! Transmit: a burst writes one descriptor per frame (RS set on each) and moves the tail
//! once. Completions are cleaned in batches of up to [`TX_CLEAN_BATCH`]: descriptors finish
//! in order, so the DD bit of the last descriptor of a batch vouches for the whole batch.

use core::sync::atomic::{Ordering, fence};

use grant_pool::{BufHandle, PoolId};

use super::desc::{
    DescMem, RXD_ERR_RXE, RXD_LEN_SHIFT, RXD_STAT_DD, RXD_STAT_EOP, TXD_STAT_DD, tx_cmd,
};
use super::regs::Regs;
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
}

impl RxQueue {
    /// A queue over `desc` whose tail register is `tail_reg`, for buffers of `buf_size`.
    pub fn new(desc: DescMem, tail_reg: u32, buf_size: u16) -> Self {
        let n = desc.count();
        Self {
            desc,
            bufs: vec![BufHandle::from_raw(0); n].into_boxed_slice(),
            next: 0,
            mask: n - 1,
            tail_reg,
            buf_size,
            discarding: false,
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
    /// once. A frame is left in the ring when no empty buffer is free to replace it.
    #[inline]
    pub fn burst<R: Regs>(&mut self, regs: &R, out: &mut [Frame], free: &mut FreeBufs) -> RxCounts {
        // Locals, so that the compiler keeps them in registers across the volatile accesses.
        let desc = self.desc;
        let mask = self.mask;
        let buf_size = self.buf_size;
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
                if wb & (RXD_STAT_DD | RXD_STAT_EOP | RXD_ERR_RXE) != RXD_STAT_DD | RXD_STAT_EOP
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
                *o = Frame::new(b, len);
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

/// Where a transmit frame's bytes are for the device, or `None` to refuse it.
pub trait TxAddr {
    /// The device address of `f`'s buffer, checked against `f`'s length.
    fn addr(&self, f: &Frame) -> Option<u64>;
}

/// One transmit queue.
#[derive(Debug)]
pub struct TxQueue {
    desc: DescMem,
    bufs: Box<[BufHandle]>,
    tail: usize,
    clean: usize,
    in_flight: usize,
    mask: usize,
    tail_reg: u32,
}

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
            bufs: vec![BufHandle::from_raw(0); n].into_boxed_slice(),
            tail: 0,
            clean: 0,
            in_flight: 0,
            mask: n - 1,
            tail_reg,
        }
    }

    /// The ring memory (for TDBAL/TDBAH/TDLEN).
    pub fn desc(&self) -> &DescMem {
        &self.desc
    }

    /// Frames handed to the device and not yet cleaned.
    pub fn in_flight(&self) -> usize {
        self.in_flight
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
        for f in &frames[..frames.len().min(room)] {
            let Some(a) = addr.addr(f) else { break };
            let Some(slot) = bufs.get_mut(t) else { break };
            desc.write(t, 0, a);
            desc.write(t, 1, tx_cmd(u32::from(f.len)));
            *slot = f.buf;
            t = (t + 1) & mask;
            taken += 1;
        }
        if taken > 0 {
            fence(Ordering::Release);
            regs.write(self.tail_reg, t as u32);
            self.tail = t;
            self.in_flight += taken;
        }
        taken
    }

    /// Moves the buffers of finished descriptors into `out`, a batch at a time; returns how
    /// many.
    #[inline]
    pub fn clean(&mut self, out: &mut [BufHandle]) -> usize {
        let mut got = 0;
        while self.in_flight > 0 && got < out.len() {
            let k = self.in_flight.min(TX_CLEAN_BATCH).min(out.len() - got);
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

    /// Buffers still in flight, oldest first (for teardown and pool unregistration).
    pub fn pending(&self) -> impl Iterator<Item = BufHandle> + '_ {
        (0..self.in_flight).map(move |j| self.bufs[(self.clean + j) & self.mask])
    }
}

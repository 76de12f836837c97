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

use grant_pool::BufHandle;

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

/// Empty buffers of the port's own pool with their device addresses, and who holds each
/// buffer (the caller, the free list, or a receive slot).
#[derive(Debug)]
pub struct FreeBufs {
    stack: Vec<BufHandle>,
    state: Box<[u8]>,
    iova: Box<[u64]>,
}

impl FreeBufs {
    /// A free list for a pool whose buffer `i` is at device address `iova[i]`; starts empty.
    pub fn new(iova: Box<[u64]>) -> Self {
        Self {
            stack: Vec::with_capacity(iova.len()),
            state: vec![HELD_CALLER; iova.len()].into_boxed_slice(),
            iova,
        }
    }

    /// Takes an empty buffer for a receive slot.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<BufHandle> {
        let b = self.stack.pop()?;
        if let Some(s) = self.state.get_mut(b.idx().0 as usize) {
            *s = HELD_DEVICE;
        }
        Some(b)
    }

    /// Takes an empty buffer for the caller.
    #[inline(always)]
    pub fn take(&mut self) -> Option<BufHandle> {
        let b = self.stack.pop()?;
        if let Some(s) = self.state.get_mut(b.idx().0 as usize) {
            *s = HELD_CALLER;
        }
        Some(b)
    }

    /// Records that a receive slot's buffer went to the caller.
    #[inline(always)]
    pub fn to_caller(&mut self, b: BufHandle) {
        if let Some(s) = self.state.get_mut(b.idx().0 as usize) {
            *s = HELD_CALLER;
        }
    }

    /// Gives back an empty buffer the caller holds. A handle outside the pool, a buffer
    /// already free (a double return) or one in a receive slot is refused: `false`.
    #[inline(always)]
    pub fn push(&mut self, b: BufHandle) -> bool {
        match self.state.get_mut(b.idx().0 as usize) {
            Some(s) if *s == HELD_CALLER && self.stack.len() < self.stack.capacity() => {
                *s = FREE;
                self.stack.push(b);
                true
            }
            _ => false,
        }
    }

    /// The device address of buffer `b` (which must be of this pool).
    #[inline(always)]
    pub fn iova(&self, b: BufHandle) -> u64 {
        self.iova.get(b.idx().0 as usize).copied().unwrap_or(0)
    }

    /// Free buffers now.
    pub fn len(&self) -> usize {
        self.stack.len()
    }

    /// Whether no buffer is free.
    pub fn is_empty(&self) -> bool {
        self.stack.is_empty()
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
            let Some(b) = free.pop() else { return false };
            self.bufs[i] = b;
            self.desc.write(i, 0, free.iova(b));
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
        let mut c = RxCounts::default();
        let mut i = self.next;
        let mut moved = false;
        // Bounded by the ring size: a device (or model) that sets DD everywhere cannot keep
        // us here.
        for _ in 0..=self.mask {
            if c.frames == out.len() {
                break;
            }
            let wb = self.desc.read(i, 1);
            if wb & RXD_STAT_DD == 0 {
                break;
            }
            // Read the rest of the frame only after DD was seen.
            fence(Ordering::Acquire);
            let len = (wb >> RXD_LEN_SHIFT) as u16;
            let good = wb & (RXD_STAT_EOP | RXD_ERR_RXE) == RXD_STAT_EOP
                && !self.discarding
                && len != 0
                && len <= self.buf_size;
            if good {
                let Some(fresh) = free.pop() else { break };
                let b = self.bufs[i];
                free.to_caller(b);
                out[c.frames] = Frame::new(b, len);
                c.frames += 1;
                self.bufs[i] = fresh;
            } else {
                // Keep the buffer in the slot; drop the frame (and the rest of a frame that
                // spans several descriptors, up to its EOP). One error per frame.
                c.errors += usize::from(wb & RXD_STAT_EOP != 0);
                self.discarding = wb & RXD_STAT_EOP == 0;
            }
            self.desc.write(i, 0, free.iova(self.bufs[i]));
            self.desc.write(i, 1, 0);
            self.next = i;
            moved = true;
            i = (i + 1) & self.mask;
        }
        if moved {
            // Descriptors must be visible to the device before the tail moves.
            fence(Ordering::Release);
            regs.write(self.tail_reg, self.next as u32);
            self.next = i;
        }
        c
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
        let mut t = self.tail;
        let mut taken = 0;
        for f in frames.iter().take(room) {
            let Some(a) = addr.addr(f) else { break };
            self.desc.write(t, 0, a);
            self.desc.write(t, 1, tx_cmd(u32::from(f.len)));
            self.bufs[t] = f.buf;
            t = (t + 1) & self.mask;
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
            for (j, o) in out[got..got + k].iter_mut().enumerate() {
                *o = self.bufs[(self.clean + j) & self.mask];
            }
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

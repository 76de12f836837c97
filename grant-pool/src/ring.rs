//! Single-producer/single-consumer descriptor rings in shared memory (the AF_XDP model).
//!
//! Layout in the shared region: a [`RingHeader`] whose producer index, consumer index and
//! flags each sit on their own cache line, then `size` descriptors of 8 bytes. Each side keeps
//! a private copy of its own index and a cached copy of the other side's, so the shared lines
//! are touched once per batch: one acquire-load to learn what is new, one release-store to
//! publish a batch.
//!
//! Neither side trusts the other: the index the peer publishes is checked on every load (a
//! producer index more than one ring ahead, or a consumer index ahead of the producer, is
//! [`RingError::IndexAhead`]), every slot access is masked, and descriptors are copied out of
//! shared memory before anyone looks at them.

#[cfg(not(loom))]
use core::sync::atomic::{AtomicU32, Ordering, fence};
use crossbeam_utils::CachePadded;
#[cfg(loom)]
use loom::sync::atomic::{AtomicU32, Ordering, fence};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::pool::{BufHandle, PAGE_SIZE};
#[cfg(not(loom))]
use crate::region::Memory;
use crate::region::OutOfBounds;

/// One ring entry: a buffer handle, the frame length in it and the frame's offload metadata.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Desc {
    /// Raw [`BufHandle`] word: pool in the top 8 bits, buffer index in the low 24.
    pub handle: u32,
    /// Bytes of frame in the buffer (0 for an empty buffer on fill and completion rings).
    pub len: u16,
    /// The frame's offload metadata ([`offload::FrameMeta`]'s bits): 0 for a plain frame and
    /// on fill and completion rings.
    pub meta: u16,
}
const _: () = assert!(core::mem::size_of::<Desc>() == 8);

impl Desc {
    /// A descriptor for `len` bytes in buffer `h`.
    #[inline]
    pub const fn new(h: BufHandle, len: u16) -> Self {
        Self {
            handle: h.raw(),
            len,
            meta: 0,
        }
    }

    /// The buffer this descriptor names (not yet validated).
    #[inline]
    pub const fn buf(&self) -> BufHandle {
        BufHandle::from_raw(self.handle)
    }

    #[inline]
    fn to_u64(self) -> u64 {
        u64::from_ne_bytes(zerocopy::transmute!(self))
    }

    #[inline]
    fn from_u64(v: u64) -> Self {
        zerocopy::transmute!(v.to_ne_bytes())
    }
}

/// The ring's control block at the start of its shared region.
#[repr(C)]
pub struct RingHeader {
    prod: CachePadded<core::sync::atomic::AtomicU32>,
    cons: CachePadded<core::sync::atomic::AtomicU32>,
    flags: CachePadded<core::sync::atomic::AtomicU32>,
}

/// Byte offset of the producer index in a ring's memory.
pub const PROD_OFF: usize = core::mem::offset_of!(RingHeader, prod);
/// Byte offset of the consumer index in a ring's memory.
pub const CONS_OFF: usize = core::mem::offset_of!(RingHeader, cons);
/// Byte offset of the flags word ([`NEED_WAKEUP`]) in a ring's memory.
pub const FLAGS_OFF: usize = core::mem::offset_of!(RingHeader, flags);
/// Byte offset of the first descriptor.
pub const DESC_OFF: usize = core::mem::size_of::<RingHeader>();
const _: () = assert!(CONS_OFF - PROD_OFF >= 64 && FLAGS_OFF - CONS_OFF >= 64);
const _: () = assert!(DESC_OFF.is_multiple_of(8));

/// Flag bit: the consumer is asleep and wants a notification when entries arrive.
pub const NEED_WAKEUP: u32 = 1;

/// The shape of a ring: how many descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    size: u32,
}

/// Something wrong with a ring or what the peer wrote into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The size is not a power of two in 2..=2^20.
    #[error("ring size {0} must be a power of two between 2 and 1048576")]
    Size(u32),
    /// The peer published an index that cannot be right.
    #[error("peer index is impossible: producer {prod}, consumer {cons}, ring size {size}")]
    IndexAhead {
        /// Producer index seen.
        prod: u32,
        /// Consumer index seen.
        cons: u32,
        /// Ring size.
        size: u32,
    },
    /// The region is too small or misaligned for the layout.
    #[error("ring memory: {0}")]
    Bounds(#[from] OutOfBounds),
    /// The region is not 8-byte aligned.
    #[error("ring memory must be 8-byte aligned")]
    Align,
}

impl RingLayout {
    /// A ring of `size` descriptors.
    pub fn new(size: u32) -> Result<Self, RingError> {
        if !size.is_power_of_two() || !(2..=1 << 20).contains(&size) {
            return Err(RingError::Size(size));
        }
        Ok(Self { size })
    }

    /// Number of descriptors.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Bytes of shared memory the ring needs, rounded up to whole pages.
    pub fn bytes(&self) -> usize {
        (DESC_OFF + self.size as usize * 8).div_ceil(PAGE_SIZE) * PAGE_SIZE
    }
}

/// The ring's shared memory as both ends reach it: three atomics and the slots.
///
/// Outside loom this points into a [`Memory`] it keeps mapped (checked once at construction,
/// so the hot path does no bounds checks); under `cfg(loom)` it is loom's own atomics and
/// cells, so the loom model checks the very protocol code below, including slot races.
#[cfg(not(loom))]
#[derive(Debug)]
struct Mem {
    base: *mut u8,
    _keep: Memory,
}

#[cfg(not(loom))]
impl Mem {
    fn new(mem: Memory, layout: RingLayout) -> Result<Self, RingError> {
        mem.region()
            .subregion(0, DESC_OFF + layout.size as usize * 8)?;
        let base = mem.region().as_ptr();
        if !(base as usize).is_multiple_of(8) {
            return Err(RingError::Align);
        }
        if !mem.is_writable() {
            return Err(RingError::Bounds(OutOfBounds::ReadOnly {
                offset: 0,
                len: mem.len(),
            }));
        }
        Ok(Self { base, _keep: mem })
    }

    #[inline]
    fn atomic(&self, off: usize) -> &AtomicU32 {
        // Why this is sound: `off` is one of the header constants (PROD_OFF, CONS_OFF,
        // FLAGS_OFF), inside the region the constructor checked, 4-byte aligned because the
        // region is 8-byte aligned and the offsets are multiples of 64. AtomicU32 permits
        // concurrent access from any party, and the memory stays mapped while the ring lives
        // (it holds a `Memory` handle).
        // SAFETY: a header offset, in bounds and aligned; atomics tolerate concurrent access.
        unsafe { &*self.base.add(off).cast::<AtomicU32>() }
    }

    #[inline]
    fn prod(&self) -> &AtomicU32 {
        self.atomic(PROD_OFF)
    }

    #[inline]
    fn cons(&self) -> &AtomicU32 {
        self.atomic(CONS_OFF)
    }

    #[inline]
    fn flags(&self) -> &AtomicU32 {
        self.atomic(FLAGS_OFF)
    }

    /// Slot `i`, already masked to the ring size.
    #[inline]
    fn read_slot(&self, i: usize) -> u64 {
        // Why this is sound: `i` is masked below the ring size and the constructor checked
        // that the region covers all slots and is 8-byte aligned (DESC_OFF is a multiple of 8),
        // so the pointer is in bounds and aligned. The volatile load copies the slot out once;
        // the peer may rewrite the slot afterwards without affecting the copy we validate.
        // SAFETY: masked slot, in bounds and aligned (reasons above).
        unsafe {
            self.base
                .add(DESC_OFF + i * 8)
                .cast::<u64>()
                .read_volatile()
        }
    }

    #[inline]
    fn write_slot(&self, i: usize, v: u64) {
        // SAFETY: in bounds and aligned as for `read_slot`; the constructor checked that the
        // region is writable, and only the producer writes slots.
        unsafe {
            self.base
                .add(DESC_OFF + i * 8)
                .cast::<u64>()
                .write_volatile(v)
        }
    }
}

#[cfg(loom)]
#[derive(Debug)]
struct LoomInner {
    prod: AtomicU32,
    cons: AtomicU32,
    flags: AtomicU32,
    slots: Box<[loom::cell::UnsafeCell<u64>]>,
}

#[cfg(loom)]
#[derive(Debug, Clone)]
struct Mem(loom::sync::Arc<LoomInner>);

#[cfg(loom)]
impl Mem {
    fn new_loom(size: u32) -> Self {
        Mem(loom::sync::Arc::new(LoomInner {
            prod: AtomicU32::new(0),
            cons: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            slots: (0..size).map(|_| loom::cell::UnsafeCell::new(0)).collect(),
        }))
    }

    fn prod(&self) -> &AtomicU32 {
        &self.0.prod
    }

    fn cons(&self) -> &AtomicU32 {
        &self.0.cons
    }

    fn flags(&self) -> &AtomicU32 {
        &self.0.flags
    }

    fn read_slot(&self, i: usize) -> u64 {
        // SAFETY: loom checks that this read does not race with a write of the same slot;
        // that is exactly what the model is for.
        self.0.slots[i].with(|p| unsafe { *p })
    }

    fn write_slot(&self, i: usize, v: u64) {
        // SAFETY: as for `read_slot`: loom reports a racing access as a failure.
        self.0.slots[i].with_mut(|p| unsafe { *p = v })
    }
}

/// State both ends share: the memory, and the ring size.
#[derive(Debug)]
struct Shared {
    mem: Mem,
    size: u32,
    mask: u32,
}

// SAFETY: `Shared` holds a raw pointer into memory its `Memory` handle keeps mapped; every
// access through it is volatile or atomic, so moving or
// sharing it between threads creates no aliasing reference.
unsafe impl Send for Shared {}
// SAFETY: as for Send.
unsafe impl Sync for Shared {}

impl Shared {
    #[cfg(not(loom))]
    fn new(mem: Memory, layout: RingLayout) -> Result<Self, RingError> {
        Ok(Self {
            mem: Mem::new(mem, layout)?,
            size: layout.size,
            mask: layout.size - 1,
        })
    }

    #[inline]
    fn read_slot(&self, idx: u32) -> Desc {
        Desc::from_u64(self.mem.read_slot((idx & self.mask) as usize))
    }

    #[inline]
    fn write_slot(&self, idx: u32, d: Desc) {
        self.mem.write_slot((idx & self.mask) as usize, d.to_u64())
    }

    #[cfg(not(loom))]
    fn reset(&self) {
        self.mem.prod().store(0, Ordering::Relaxed);
        self.mem.cons().store(0, Ordering::Relaxed);
        self.mem.flags().store(0, Ordering::Release);
    }
}

#[cfg(loom)]
/// A producer and consumer over one loom-modelled ring of `size` slots (loom builds only).
pub fn loom_pair(layout: RingLayout) -> (RingProducer, RingConsumer) {
    let mem = Mem::new_loom(layout.size);
    let sh = |m| Shared {
        mem: m,
        size: layout.size,
        mask: layout.size - 1,
    };
    (
        RingProducer {
            sh: sh(mem.clone()),
            prod: 0,
            cached_cons: 0,
        },
        RingConsumer {
            sh: sh(mem),
            cons: 0,
            cached_prod: 0,
        },
    )
}

/// The producing end of a ring.
#[derive(Debug)]
pub struct RingProducer {
    sh: Shared,
    prod: u32,
    cached_cons: u32,
}

impl RingProducer {
    /// The producer over `mem`. With `init`, the header is reset (indices 0, no flags): only
    /// the side that creates the ring does this, before the peer sees it.
    #[cfg(not(loom))]
    pub fn new(mem: Memory, layout: RingLayout, init: bool) -> Result<Self, RingError> {
        let sh = Shared::new(mem, layout)?;
        if init {
            sh.reset();
        }
        let prod = sh.mem.prod().load(Ordering::Relaxed);
        let cached_cons = sh.mem.cons().load(Ordering::Acquire);
        let mut p = Self {
            sh,
            prod,
            cached_cons,
        };
        // A ring we attach to may hold garbage; refuse an impossible state up front.
        p.refresh()?;
        Ok(p)
    }

    /// Ring size.
    #[inline]
    pub fn size(&self) -> u32 {
        self.sh.size
    }

    #[inline]
    fn refresh(&mut self) -> Result<(), RingError> {
        let cons = self.sh.mem.cons().load(Ordering::Acquire);
        let used = self.prod.wrapping_sub(cons);
        if used > self.sh.size {
            return Err(RingError::IndexAhead {
                prod: self.prod,
                cons,
                size: self.sh.size,
            });
        }
        self.cached_cons = cons;
        Ok(())
    }

    /// Free slots known without touching the consumer's cache line.
    #[inline]
    fn free_cached(&self) -> u32 {
        self.sh.size - self.prod.wrapping_sub(self.cached_cons)
    }

    /// Reserves up to `n` slots; returns how many are available (may be fewer, or 0).
    #[inline]
    pub fn reserve(&mut self, n: u32) -> Result<u32, RingError> {
        let mut free = self.free_cached();
        if free < n {
            self.refresh()?;
            free = self.free_cached();
        }
        Ok(free.min(n))
    }

    /// Writes descriptor `i` of the reserved batch (`i` below what `reserve` returned).
    #[inline]
    pub fn write(&mut self, i: u32, d: Desc) {
        self.sh.write_slot(self.prod.wrapping_add(i), d);
    }

    /// Publishes the first `n` written descriptors with one release-store.
    #[inline]
    pub fn publish(&mut self, n: u32) {
        debug_assert!(n <= self.free_cached());
        self.prod = self.prod.wrapping_add(n);
        self.sh.mem.prod().store(self.prod, Ordering::Release);
    }

    /// Whether the consumer asked to be woken: call after `publish`, kick the notifier if so.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // Order the index store before the flag load (pairs with the fence in
        // `RingConsumer::set_need_wakeup`), so a consumer going to sleep either sees our
        // entries or we see its flag.
        fence(Ordering::SeqCst);
        self.sh.mem.flags().load(Ordering::Relaxed) & NEED_WAKEUP != 0
    }

    /// Reserves, writes and publishes as many of `descs` as fit, in order, with one
    /// release-store; returns how many.
    #[inline]
    pub fn push(&mut self, descs: &[Desc]) -> Result<u32, RingError> {
        let want = u32::try_from(descs.len()).unwrap_or(u32::MAX);
        let n = self.reserve(want)?;
        for (i, d) in descs.iter().take(n as usize).enumerate() {
            self.write(i as u32, *d);
        }
        self.publish(n);
        Ok(n)
    }

    /// Entries published and not yet consumed, as last seen.
    pub fn pending(&mut self) -> Result<u32, RingError> {
        self.refresh()?;
        Ok(self.prod.wrapping_sub(self.cached_cons))
    }
}

/// The consuming end of a ring.
#[derive(Debug)]
pub struct RingConsumer {
    sh: Shared,
    cons: u32,
    cached_prod: u32,
}

impl RingConsumer {
    /// The consumer over `mem`; with `init` the header is reset (see [`RingProducer::new`]).
    #[cfg(not(loom))]
    pub fn new(mem: Memory, layout: RingLayout, init: bool) -> Result<Self, RingError> {
        let sh = Shared::new(mem, layout)?;
        if init {
            sh.reset();
        }
        let cons = sh.mem.cons().load(Ordering::Relaxed);
        Ok(Self {
            sh,
            cons,
            cached_prod: cons,
        })
    }

    /// Ring size.
    #[inline]
    pub fn size(&self) -> u32 {
        self.sh.size
    }

    /// Entries available, up to `n`; loads the producer index only when the cache is empty.
    /// An impossible producer index is an error and consumes nothing.
    #[inline]
    pub fn peek(&mut self, n: u32) -> Result<u32, RingError> {
        let mut avail = self.cached_prod.wrapping_sub(self.cons);
        if avail < n {
            let prod = self.sh.mem.prod().load(Ordering::Acquire);
            let a = prod.wrapping_sub(self.cons);
            if a > self.sh.size {
                return Err(RingError::IndexAhead {
                    prod,
                    cons: self.cons,
                    size: self.sh.size,
                });
            }
            self.cached_prod = prod;
            avail = a;
        }
        Ok(avail.min(n))
    }

    /// Copies descriptor `i` of the peeked batch out of shared memory. The copy is what the
    /// caller validates and uses; the slot is never read twice.
    #[inline]
    pub fn read(&self, i: u32) -> Desc {
        self.sh.read_slot(self.cons.wrapping_add(i))
    }

    /// Releases the first `n` peeked descriptors with one release-store.
    #[inline]
    pub fn release(&mut self, n: u32) {
        debug_assert!(n <= self.cached_prod.wrapping_sub(self.cons));
        self.cons = self.cons.wrapping_add(n);
        self.sh.mem.cons().store(self.cons, Ordering::Release);
    }

    /// Peeks, copies out and releases up to `out.len()` descriptors with one release-store;
    /// returns how many. The copies are unvalidated: the caller checks them.
    #[inline]
    pub fn pop(&mut self, out: &mut [Desc]) -> Result<u32, RingError> {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let n = self.peek(want)?;
        for (i, o) in out.iter_mut().take(n as usize).enumerate() {
            *o = self.read(i as u32);
        }
        self.release(n);
        Ok(n)
    }

    /// Asks the producer for a notification, then re-checks for entries that raced the flag.
    /// Returns `true` when entries are already there (do not sleep).
    pub fn set_need_wakeup(&mut self) -> Result<bool, RingError> {
        self.sh.mem.flags().fetch_or(NEED_WAKEUP, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.peek(1)? > 0)
    }

    /// Withdraws the wakeup request (the consumer is polling again).
    pub fn clear_need_wakeup(&mut self) {
        self.sh
            .mem
            .flags()
            .fetch_and(!NEED_WAKEUP, Ordering::Relaxed);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::region::Memory;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn ring(size: u32) -> (Memory, RingProducer, RingConsumer) {
        let l = RingLayout::new(size).expect("size");
        let m = Memory::local(l.bytes());
        let p = RingProducer::new(m.clone(), l, true).expect("producer");
        let c = RingConsumer::new(m.clone(), l, false).expect("consumer");
        (m, p, c)
    }

    fn d(v: u32) -> Desc {
        Desc {
            handle: v,
            len: (v % 2048) as u16,
            meta: 0,
        }
    }

    #[test]
    fn sizes_must_be_powers_of_two() {
        for bad in [0, 1, 3, 6, 100, 1 << 21] {
            assert_eq!(RingLayout::new(bad), Err(RingError::Size(bad)));
        }
        assert_eq!(RingLayout::new(64).expect("ok").size(), 64);
    }

    #[test]
    fn too_small_misaligned_or_read_only_memory_is_refused() {
        let l = RingLayout::new(64).expect("size");
        let m = Memory::local(l.bytes());
        let short = m.sub(0, DESC_OFF + 63 * 8).expect("inside");
        assert!(matches!(
            RingProducer::new(short, l, true),
            Err(RingError::Bounds(_))
        ));
        let odd = m.sub(4, l.bytes() - 4).expect("inside");
        assert_eq!(
            RingConsumer::new(odd, l, true).err(),
            Some(RingError::Align)
        );
        assert!(RingConsumer::new(m.clone().read_only(), l, false).is_err());
    }

    #[test]
    fn fills_to_capacity_then_drains_in_order() {
        let (_m, mut p, mut c) = ring(8);
        assert_eq!(p.reserve(100), Ok(8));
        for i in 0..8 {
            p.write(i, d(i));
        }
        p.publish(8);
        assert_eq!(p.reserve(1), Ok(0), "a full ring has no room");
        assert_eq!(c.peek(100), Ok(8));
        let got: Vec<_> = (0..8).map(|i| c.read(i)).collect();
        assert_eq!(got, (0..8).map(d).collect::<Vec<_>>());
        c.release(8);
        assert_eq!(c.peek(1), Ok(0));
        assert_eq!(p.reserve(8), Ok(8));
    }

    #[test]
    fn push_and_pop_move_whole_slices() {
        let (_m, mut p, mut c) = ring(8);
        let src: Vec<Desc> = (0..10).map(d).collect();
        assert_eq!(p.push(&src), Ok(8), "only a ring's worth fits");
        let mut out = [Desc::default(); 5];
        assert_eq!(c.pop(&mut out), Ok(5));
        assert_eq!(&out[..], &src[..5]);
        assert_eq!(p.push(&src[8..]), Ok(2));
        let mut rest = [Desc::default(); 16];
        assert_eq!(c.pop(&mut rest), Ok(5));
        assert_eq!(&rest[..5], &src[5..]);
        assert_eq!(c.pop(&mut rest), Ok(0));
    }

    #[test]
    fn wraps_around_u32_max() {
        let l = RingLayout::new(16).expect("size");
        let m = Memory::local(l.bytes());
        let start = u32::MAX - 20;
        m.region()
            .atomic_u32(PROD_OFF)
            .expect("header")
            .store(start, Ordering::Relaxed);
        m.region()
            .atomic_u32(CONS_OFF)
            .expect("header")
            .store(start, Ordering::Relaxed);
        let mut p = RingProducer::new(m.clone(), l, false).expect("producer");
        let mut c = RingConsumer::new(m.clone(), l, false).expect("consumer");
        let mut next_in = 0u32;
        let mut next_out = 0u32;
        // 200 descriptors in batches of 7 carry both indices across the u32 wrap.
        while next_out < 200 {
            let n = p.reserve(7).expect("sane");
            for i in 0..n {
                p.write(i, d(next_in + i));
            }
            p.publish(n);
            next_in += n;
            let k = c.peek(5).expect("sane");
            for i in 0..k {
                assert_eq!(c.read(i), d(next_out + i));
            }
            c.release(k);
            next_out += k;
        }
        let prod = m
            .region()
            .atomic_u32(PROD_OFF)
            .expect("h")
            .load(Ordering::Relaxed);
        assert!(prod < start, "producer index wrapped");
    }

    #[test]
    fn hostile_producer_index_is_refused_and_consumes_nothing() {
        let (m, mut p, mut c) = ring(8);
        p.reserve(2).expect("room");
        p.write(0, d(1));
        p.write(1, d(2));
        p.publish(2);
        let r = m.region();
        let prod = r.atomic_u32(PROD_OFF).expect("header");
        for bogus in [9, 1000, u32::MAX] {
            prod.store(bogus, Ordering::Release);
            assert_eq!(
                c.peek(16),
                Err(RingError::IndexAhead {
                    prod: bogus,
                    cons: 0,
                    size: 8
                })
            );
        }
        prod.store(2, Ordering::Release);
        assert_eq!(c.peek(16), Ok(2), "an honest index is accepted again");
    }

    #[test]
    fn hostile_consumer_index_is_refused_by_the_producer() {
        let (m, mut p, _c) = ring(8);
        let r = m.region();
        let cons = r.atomic_u32(CONS_OFF).expect("header");
        cons.store(5, Ordering::Release); // ahead of the producer (0)
        assert!(matches!(p.reserve(16), Err(RingError::IndexAhead { .. })));
        assert!(matches!(p.pending(), Err(RingError::IndexAhead { .. })));
        cons.store(0, Ordering::Release);
        assert_eq!(p.reserve(16), Ok(8));
    }

    #[test]
    fn attaching_to_an_impossible_ring_fails() {
        let l = RingLayout::new(8).expect("size");
        let m = Memory::local(l.bytes());
        m.region()
            .atomic_u32(PROD_OFF)
            .expect("h")
            .store(100, Ordering::Relaxed);
        assert!(RingProducer::new(m.clone(), l, false).is_err());
    }

    #[test]
    fn need_wakeup_is_seen_by_the_producer_until_cleared() {
        let (_m, mut p, mut c) = ring(8);
        assert!(!p.needs_wakeup());
        assert_eq!(c.set_need_wakeup(), Ok(false), "empty ring: sleep");
        assert!(p.needs_wakeup());
        p.reserve(1).expect("room");
        p.write(0, d(3));
        p.publish(1);
        assert_eq!(
            c.set_need_wakeup(),
            Ok(true),
            "entries arrived: do not sleep"
        );
        c.clear_need_wakeup();
        assert!(!p.needs_wakeup());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Produce(u32),
        Consume(u32),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                (0u32..40).prop_map(Op::Produce),
                (0u32..40).prop_map(Op::Consume)
            ],
            0..200,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Miri interprets every instruction: a few cases there, the full run natively.
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
            ..ProptestConfig::default()
        })]
        /// The ring behaves as a bounded FIFO queue, from any starting index (including
        /// just below the u32 wrap).
        #[test]
        fn ring_is_a_bounded_fifo(size_log in 1u32..7, start in prop_oneof![Just(u32::MAX - 50), any::<u32>()], ops in ops()) {
            let size = 1 << size_log;
            let l = RingLayout::new(size).expect("size");
            let m = Memory::local(l.bytes());
            for off in [PROD_OFF, CONS_OFF] {
                m.region().atomic_u32(off).expect("h").store(start, Ordering::Relaxed);
            }
            let mut p = RingProducer::new(m.clone(), l, false).expect("producer");
            let mut c = RingConsumer::new(m.clone(), l, false).expect("consumer");
            let mut model = VecDeque::new();
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Produce(n) => {
                        let got = p.reserve(n).expect("sane");
                        prop_assert_eq!(got, n.min(size - model.len() as u32));
                        for i in 0..got {
                            p.write(i, d(next));
                            model.push_back(d(next));
                            next += 1;
                        }
                        p.publish(got);
                    }
                    Op::Consume(n) => {
                        let got = c.peek(n).expect("sane");
                        prop_assert_eq!(got, n.min(model.len() as u32));
                        for i in 0..got {
                            prop_assert_eq!(Some(c.read(i)), model.pop_front());
                        }
                        c.release(got);
                    }
                }
                prop_assert_eq!(p.pending().expect("sane"), model.len() as u32);
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_model {
    //! The ring protocol under loom: run with
    //! `RUSTFLAGS="--cfg loom" cargo test -p grant-pool --release --lib loom`.
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;

    fn d(v: u32) -> Desc {
        Desc {
            handle: v,
            len: v as u16,
            meta: 0,
        }
    }

    /// Bounded exploration: every interleaving with up to three preemptions (the spin loops
    /// below make the unbounded space infinite in principle and huge in practice).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(f);
    }

    /// Three descriptors through a two-slot ring, batches of up to two: every interleaving
    /// delivers them all, once, in order, and no slot is read while it is written.
    #[test]
    fn loom_ring_delivers_in_order_without_races() {
        model(|| {
            let (mut p, mut c) = loom_pair(RingLayout::new(2).expect("size"));
            let t = loom::thread::spawn(move || {
                let mut sent = 0;
                while sent < 3 {
                    let n = p.reserve(2).expect("sane");
                    for i in 0..n {
                        p.write(i, d(sent + i));
                    }
                    p.publish(n);
                    sent += n;
                    if n == 0 {
                        loom::thread::yield_now();
                    }
                }
            });
            let mut got = 0;
            while got < 3 {
                let n = c.peek(2).expect("sane");
                for i in 0..n {
                    assert_eq!(c.read(i), d(got + i));
                }
                c.release(n);
                got += n;
                if n == 0 {
                    loom::thread::yield_now();
                }
            }
            t.join().expect("producer");
        });
    }

    /// Need-wakeup never loses a wakeup: a consumer that decides to sleep is always kicked by
    /// a producer that publishes afterwards.
    #[test]
    fn loom_need_wakeup_never_loses_a_wakeup() {
        model(|| {
            let (mut p, mut c) = loom_pair(RingLayout::new(2).expect("size"));
            let kicked = Arc::new(AtomicBool::new(false));
            let k2 = kicked.clone();
            let t = loom::thread::spawn(move || {
                assert_eq!(p.reserve(1), Ok(1));
                p.write(0, d(7));
                p.publish(1);
                if p.needs_wakeup() {
                    k2.store(true, Ordering::SeqCst);
                }
            });
            let sleeps = c.peek(1).expect("sane") == 0 && !c.set_need_wakeup().expect("sane");
            t.join().expect("producer");
            if sleeps {
                assert!(
                    kicked.load(Ordering::SeqCst),
                    "consumer slept and was never kicked"
                );
            }
        });
    }
}

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

use core::sync::atomic::{AtomicU32, Ordering, fence};
use crossbeam_utils::CachePadded;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::pool::{BufHandle, PAGE_SIZE};
use crate::region::{OutOfBounds, Region};

/// One ring entry: a buffer handle and the frame length in it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Desc {
    /// Raw [`BufHandle`] word: pool in the top 8 bits, buffer index in the low 24.
    pub handle: u32,
    /// Bytes of frame in the buffer (0 for an empty buffer on fill and completion rings).
    pub len: u16,
    /// Reserved; producers write 0.
    pub flags: u16,
}
const _: () = assert!(core::mem::size_of::<Desc>() == 8);

impl Desc {
    /// A descriptor for `len` bytes in buffer `h`.
    #[inline]
    pub const fn new(h: BufHandle, len: u16) -> Self {
        Self {
            handle: h.raw(),
            len,
            flags: 0,
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
    prod: CachePadded<AtomicU32>,
    cons: CachePadded<AtomicU32>,
    flags: CachePadded<AtomicU32>,
}

const PROD_OFF: usize = core::mem::offset_of!(RingHeader, prod);
const CONS_OFF: usize = core::mem::offset_of!(RingHeader, cons);
const FLAGS_OFF: usize = core::mem::offset_of!(RingHeader, flags);
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

/// State both ends share: the region and the three atomics in it.
#[derive(Debug)]
struct Shared {
    mem: Region,
    size: u32,
    mask: u32,
}

impl Shared {
    fn new(mem: Region, layout: RingLayout) -> Result<Self, RingError> {
        mem.subregion(0, DESC_OFF + layout.size as usize * 8)?;
        if !(mem.as_ptr() as usize).is_multiple_of(8) {
            return Err(RingError::Align);
        }
        Ok(Self {
            mem,
            size: layout.size,
            mask: layout.size - 1,
        })
    }

    #[inline]
    fn atomic(&self, off: usize) -> &AtomicU32 {
        // The constructor checked the region covers the header and is 8-byte aligned, and the
        // offsets are constants inside the header, so this cannot fail.
        self.mem
            .atomic_u32(off)
            .unwrap_or_else(|_| unreachable!("header checked at construction"))
    }

    #[inline]
    fn slot_ptr(&self, idx: u32) -> *mut u64 {
        let off = DESC_OFF + (idx & self.mask) as usize * 8;
        self.mem.as_ptr().wrapping_add(off) as *mut u64
    }

    #[inline]
    fn read_slot(&self, idx: u32) -> Desc {
        let p = self.slot_ptr(idx);
        // SAFETY: the index is masked to the ring size and the constructor checked that the
        // region covers all `size` slots and is 8-byte aligned (DESC_OFF is a multiple of 8),
        // so `p` is in bounds and aligned. The volatile load copies the slot out once; the
        // peer may rewrite the slot afterwards without affecting the copy we validate.
        Desc::from_u64(unsafe { p.read_volatile() })
    }

    #[inline]
    fn write_slot(&self, idx: u32, d: Desc) {
        let p = self.slot_ptr(idx);
        // SAFETY: in bounds and aligned as for `read_slot`; the region is writable by its
        // constructor's contract, and only the producer writes slots.
        unsafe { p.write_volatile(d.to_u64()) };
    }
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
    pub fn new(mem: Region, layout: RingLayout, init: bool) -> Result<Self, RingError> {
        let sh = Shared::new(mem, layout)?;
        if init {
            sh.atomic(PROD_OFF).store(0, Ordering::Relaxed);
            sh.atomic(CONS_OFF).store(0, Ordering::Relaxed);
            sh.atomic(FLAGS_OFF).store(0, Ordering::Release);
        }
        let prod = sh.atomic(PROD_OFF).load(Ordering::Relaxed);
        let cached_cons = sh.atomic(CONS_OFF).load(Ordering::Acquire);
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
        let cons = self.sh.atomic(CONS_OFF).load(Ordering::Acquire);
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
        self.sh.atomic(PROD_OFF).store(self.prod, Ordering::Release);
    }

    /// Whether the consumer asked to be woken: call after `publish`, kick the notifier if so.
    #[inline]
    pub fn needs_wakeup(&self) -> bool {
        // Order the index store before the flag load (pairs with the fence in
        // `RingConsumer::set_need_wakeup`), so a consumer going to sleep either sees our
        // entries or we see its flag.
        fence(Ordering::SeqCst);
        self.sh.atomic(FLAGS_OFF).load(Ordering::Relaxed) & NEED_WAKEUP != 0
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
    pub fn new(mem: Region, layout: RingLayout, init: bool) -> Result<Self, RingError> {
        let sh = Shared::new(mem, layout)?;
        if init {
            sh.atomic(PROD_OFF).store(0, Ordering::Relaxed);
            sh.atomic(CONS_OFF).store(0, Ordering::Relaxed);
            sh.atomic(FLAGS_OFF).store(0, Ordering::Release);
        }
        let cons = sh.atomic(CONS_OFF).load(Ordering::Relaxed);
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
            let prod = self.sh.atomic(PROD_OFF).load(Ordering::Acquire);
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
        self.sh.atomic(CONS_OFF).store(self.cons, Ordering::Release);
    }

    /// Asks the producer for a notification, then re-checks for entries that raced the flag.
    /// Returns `true` when entries are already there (do not sleep).
    pub fn set_need_wakeup(&mut self) -> Result<bool, RingError> {
        self.sh
            .atomic(FLAGS_OFF)
            .fetch_or(NEED_WAKEUP, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.peek(1)? > 0)
    }

    /// Withdraws the wakeup request (the consumer is polling again).
    pub fn clear_need_wakeup(&mut self) {
        self.sh
            .atomic(FLAGS_OFF)
            .fetch_and(!NEED_WAKEUP, Ordering::Relaxed);
    }
}

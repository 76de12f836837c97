//! [`Memory`] and [`Region`]: memory that another party may write, and bounds-checked views
//! of it.
//!
//! Every access goes through a plain copy ([`copy_shared`]) or an atomic, never through a
//! reference to the bytes, following the rule that no `&`/`&mut` is ever formed into shared
//! memory.
//!
//! Lifetimes are carried by types, as in `vm-memory` (an owning `Arc`'d memory handle and
//! borrowed `VolatileSlice<'a>` views): a [`Memory`] is an owning handle that keeps the bytes
//! mapped (cloning it is one reference-count increment, done when a pool, ring or port is
//! built), and a [`Region`] borrows a `Memory`, so no view can be used after the last
//! handle is gone and the bytes are unmapped.

use core::marker::PhantomData;
use core::ops::RangeInclusive;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;
use std::sync::Arc;

use crate::pool::PoolId;

/// Whatever keeps a [`Memory`]'s bytes mapped (a mapping, an allocation, a device's DMA
/// memory): dropped, and the bytes unmapped or freed, with the last handle over them.
pub trait Backing: Send + Sync + core::fmt::Debug {}

impl<T: Send + Sync + core::fmt::Debug> Backing for T {}

/// An owning handle on a contiguous range of memory, possibly shared with another domain.
///
/// The bytes stay mapped while any handle (or [`Blocks`] built from one) lives: the handle
/// holds an `Arc` of the [`Backing`] that unmaps them. Long-lived holders (pools, rings,
/// ports) keep a `Memory`; code that reads or writes borrows a [`Region`] from one.
#[derive(Clone, Debug)]
pub struct Memory {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    keep: Arc<dyn Backing>,
}

// SAFETY: a Memory is a pointer, a length and an owner that keeps the range mapped; every
// access to the bytes goes through a Region (plain copies of bytes without validity
// invariants, or atomics), so moving a handle to another thread creates no aliasing reference.
unsafe impl Send for Memory {}
// SAFETY: as for Send: `&Memory` hands out only Regions.
unsafe impl Sync for Memory {}

/// A bounds-checked view of a [`Memory`], borrowed from it: `Copy`, free to make, and
/// unusable once the handle it came from is gone.
#[derive(Clone, Copy, Debug)]
pub struct Region<'a> {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    mem: PhantomData<&'a Memory>,
}

// SAFETY: a Region is a pointer and a length into memory its borrowed handle keeps mapped;
// every access through it is a copy of plain bytes or an atomic operation, both defined for a
// range another party writes at the same time (see `copy_shared`).
unsafe impl Send for Region<'_> {}
// SAFETY: as for Send: no method hands out a reference to the bytes, so sharing a Region
// between threads cannot create aliasing `&mut`.
unsafe impl Sync for Region<'_> {}

/// An access a [`Region`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OutOfBounds {
    /// The range is not inside the region.
    #[error("access of {len} bytes at offset {offset} is outside a region of {size} bytes")]
    Range {
        /// Offset asked for.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// Size of the region.
        size: usize,
    },
    /// An atomic access at an address that is not aligned for it.
    #[error("atomic access at offset {offset} is not {align}-byte aligned")]
    Misaligned {
        /// Offset asked for.
        offset: usize,
        /// Alignment the access needs.
        align: usize,
    },
    /// A write into memory mapped read-only (a read-only grant).
    #[error("write of {len} bytes at offset {offset} into read-only memory")]
    ReadOnly {
        /// Offset asked for.
        offset: usize,
        /// Length asked for.
        len: usize,
    },
}

fn check_range(offset: usize, len: usize, size: usize) -> Result<(), OutOfBounds> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OutOfBounds::Range { offset, len, size }),
    }
}

impl Memory {
    /// A handle on `len` writable bytes at `base`, kept mapped by `keep`.
    ///
    /// # Safety
    /// `base..base+len` must be mapped, readable and writable, and stay so until `keep` is
    /// dropped.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize, keep: Arc<dyn Backing>) -> Self {
        // SAFETY: the caller's contract is `with`'s, writable.
        unsafe { Self::with(base, len, true, keep) }
    }

    /// A handle on `len` bytes at `base` mapped without write permission, kept mapped by
    /// `keep`: every write and every atomic access through it is refused with
    /// [`OutOfBounds::ReadOnly`].
    ///
    /// # Safety
    /// `base..base+len` must be mapped and readable, and stay so until `keep` is dropped.
    pub unsafe fn from_raw_read_only(
        base: NonNull<u8>,
        len: usize,
        keep: Arc<dyn Backing>,
    ) -> Self {
        // SAFETY: the caller's contract is `with`'s, read-only.
        unsafe { Self::with(base, len, false, keep) }
    }

    /// The handle itself.
    ///
    /// # Safety
    /// `base..base+len` must be mapped and readable (and writable when `writable`), and stay
    /// so until `keep` is dropped.
    unsafe fn with(base: NonNull<u8>, len: usize, writable: bool, keep: Arc<dyn Backing>) -> Self {
        Self {
            base,
            len,
            writable,
            keep,
        }
    }

    /// `len` zeroed bytes (at least one) of process-private, page-aligned memory: for rings
    /// and pools that live inside one process (tests, benchmarks, a port's private pool).
    pub fn local(len: usize) -> Self {
        let alloc = LocalAlloc::new(len);
        let (base, len) = (alloc.base, alloc.layout.size());
        // SAFETY: the allocation is `len` bytes, readable and writable, and is freed only when
        // the `Arc` that owns it is dropped, which the handle holds.
        unsafe { Self::from_raw(base, len, Arc::new(alloc)) }
    }

    /// The view every access goes through, borrowed from this handle:
    ///
    /// ```
    /// let mem = grant_pool::Memory::local(4096);
    /// mem.region().write(8, &7u64.to_ne_bytes())?;
    /// assert_eq!(mem.region().read_u64(8)?, 7);
    /// # Ok::<(), grant_pool::region::OutOfBounds>(())
    /// ```
    ///
    /// A view cannot be used once its handle is gone (the last handle's drop unmaps):
    ///
    /// ```compile_fail,E0505
    /// let mem = grant_pool::Memory::local(4096);
    /// let view = mem.region();
    /// drop(mem);
    /// let _ = view.read_u64(0);
    /// ```
    #[inline]
    pub fn region(&self) -> Region<'_> {
        Region {
            base: self.base,
            len: self.len,
            writable: self.writable,
            mem: PhantomData,
        }
    }

    /// A handle on a sub-range, keeping the whole range mapped.
    pub fn sub(&self, offset: usize, len: usize) -> Result<Memory, OutOfBounds> {
        let base = self.region().subregion(offset, len)?.base;
        Ok(Self {
            base,
            len,
            writable: self.writable,
            keep: self.keep.clone(),
        })
    }

    /// A handle on the same bytes that also owns `guard`: when the last handle of the new
    /// chain is gone, this handle is dropped first (unmapping the bytes if it was their last),
    /// then `guard` (a mapper's "still mapped" mark, say, freed once the pages are gone).
    pub fn with_guard<G: Backing + 'static>(self, guard: G) -> Memory {
        /// The handle, then the guard (field order is drop order).
        #[derive(Debug)]
        struct Guarded<G> {
            _mem: Memory,
            _guard: G,
        }
        let (base, len, writable) = (self.base, self.len, self.writable);
        Memory {
            base,
            len,
            writable,
            keep: Arc::new(Guarded {
                _mem: self,
                _guard: guard,
            }),
        }
    }

    /// This handle with writes refused from now on (a read-only view of writable memory).
    pub fn read_only(self) -> Self {
        Self {
            writable: false,
            ..self
        }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether writes through this handle are allowed.
    #[inline]
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// How many handles (and [`Blocks`]) share this memory's backing, this one included.
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.keep)
    }
}

impl<'a> Region<'a> {
    /// Whether writes through this region are allowed.
    #[inline]
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// This view with writes refused (a read-only view of writable memory).
    #[inline]
    pub fn read_only(self) -> Self {
        Self {
            writable: false,
            ..self
        }
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The base address, for handing to a device that DMAs into the region (pmd only).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    #[inline]
    fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        check_range(offset, len, self.len)
    }

    #[inline]
    fn check_write(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        self.check(offset, len)?;
        if self.writable {
            Ok(())
        } else {
            Err(OutOfBounds::ReadOnly { offset, len })
        }
    }

    /// A sub-range of this region.
    #[inline]
    pub fn subregion(&self, offset: usize, len: usize) -> Result<Region<'a>, OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: offset+len <= self.len was just checked, so the pointer stays inside the
        // mapping this region was built over, and is non-null because base is.
        let base = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) };
        Ok(Region {
            base,
            len,
            writable: self.writable,
            mem: PhantomData,
        })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    #[inline]
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, dst.len())?;
        // SAFETY: bounds checked above; `dst` is our own memory. A concurrent writer can only
        // tear the bytes, which callers treat as untrusted.
        unsafe { copy_shared(self.base.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    #[inline]
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        self.check_write(offset, src.len())?;
        // SAFETY: bounds and writability checked above; the memory stays mapped for 'a.
        unsafe { copy_shared(src.as_ptr(), self.base.as_ptr().add(offset), src.len()) };
        Ok(())
    }

    /// Copies `len` bytes from `src` at `src_off` into this region at `dst_off`.
    #[inline]
    pub fn copy_from(
        &self,
        dst_off: usize,
        src: &Region<'_>,
        src_off: usize,
        len: usize,
    ) -> Result<(), OutOfBounds> {
        self.check_write(dst_off, len)?;
        src.check(src_off, len)?;
        // SAFETY: both ranges were bounds-checked against mapped regions; `copy_shared`
        // tolerates overlap.
        unsafe {
            copy_shared(
                src.base.as_ptr().add(src_off),
                self.base.as_ptr().add(dst_off),
                len,
            )
        };
        Ok(())
    }

    /// Reads a `u64` (native endian) at `offset`.
    #[inline]
    pub fn read_u64(&self, offset: usize) -> Result<u64, OutOfBounds> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Fills `len` bytes at `offset` with `byte`.
    #[inline]
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
        self.check_write(offset, len)?;
        // SAFETY: bounds and writability checked above; plain bytes have no validity invariant.
        unsafe { core::ptr::write_bytes(self.base.as_ptr().add(offset), byte, len) };
        Ok(())
    }

    /// The atomic `u32` at `offset`, which must be 4-byte aligned, in a writable region.
    ///
    /// Atomics are the one kind of reference into shared memory that is sound: they are
    /// designed for concurrent mutation.
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> Result<&'a AtomicU32, OutOfBounds> {
        self.check_write(offset, 4)?;
        let p = self.base.as_ptr().wrapping_add(offset);
        if !(p as usize).is_multiple_of(core::mem::align_of::<AtomicU32>()) {
            return Err(OutOfBounds::Misaligned { offset, align: 4 });
        }
        // Why this is sound: in bounds and aligned (checked above); AtomicU32 has the layout of
        // u32 and permits concurrent access from any party, so a shared reference to it is
        // sound while the memory stays mapped, which the borrowed handle guarantees for 'a.
        // SAFETY: in bounds, aligned, mapped for 'a; atomics tolerate concurrent access.
        Ok(unsafe { &*(p as *const AtomicU32) })
    }
}

/// Bytes at the start of a block that [`Blocks`] reads and writes: a frame's Ethernet
/// header (two MACs and the EtherType) with room to spare.
pub const BLOCK_HEAD: usize = 16;

/// Memory seen as `count` equal blocks of `1 << shift` bytes (the buffers of a pool), for
/// reading and writing the first [`BLOCK_HEAD`] bytes of a block — a frame header — on a
/// burst path without a bounds check per access. Like a [`Memory`], it keeps the bytes
/// mapped while it lives.
///
/// The bounds are checked once, when the view is made ([`Memory::blocks`]). A block index
/// past the last block is clamped to the last block (one compare, no branch), so no index
/// can reach outside the memory; callers check indices against the pool themselves and use
/// the clamp only as the memory-safety backstop. Like [`Region`], every access is a copy
/// ([`copy_shared`]).
#[derive(Clone, Debug)]
pub struct Blocks {
    base: NonNull<u8>,
    last: u32,
    /// Block size in bytes (`1 << shift`): a multiply needs no shift-count register.
    size: usize,
    writable: bool,
    _keep: Arc<dyn Backing>,
}

// SAFETY: as for Memory: a pointer into memory that `keep` keeps mapped, accessed only
// through copies of plain bytes.
unsafe impl Send for Blocks {}
// SAFETY: as for Send: no method hands out a reference to the bytes.
unsafe impl Sync for Blocks {}

impl Memory {
    /// This memory as `count` blocks of `1 << shift` bytes. Fails when there is no block, a
    /// block is shorter than [`BLOCK_HEAD`], or the blocks do not fit.
    pub fn blocks(&self, shift: u32, count: u32) -> Result<Blocks, OutOfBounds> {
        let range = OutOfBounds::Range {
            offset: 0,
            len: (count as usize).checked_shl(shift).unwrap_or(usize::MAX),
            size: self.len,
        };
        if count == 0 || shift >= usize::BITS - 32 || (1usize << shift) < BLOCK_HEAD {
            return Err(range);
        }
        // count < 2^32 and shift < BITS - 32: the product cannot overflow.
        if (count as usize) << shift > self.len {
            return Err(range);
        }
        Ok(Blocks {
            base: self.base,
            last: count - 1,
            size: 1 << shift,
            writable: self.writable,
            _keep: self.keep.clone(),
        })
    }
}

impl Blocks {
    /// The address of block `idx`, clamped to the last block.
    #[inline]
    fn at(&self, idx: u32) -> *mut u8 {
        let off = idx.min(self.last) as usize * self.size;
        self.base.as_ptr().wrapping_add(off)
    }

    /// Copies the first [`BLOCK_HEAD`] bytes of block `idx` out (of the last block when
    /// `idx` is past it).
    #[inline]
    pub fn head(&self, idx: u32) -> [u8; BLOCK_HEAD] {
        let mut out = [0u8; BLOCK_HEAD];
        // Why this is sound: `at` clamps the index to the last block, `Memory::blocks`
        // checked that every block lies inside the memory and is at least BLOCK_HEAD bytes
        // long, and `keep` keeps it mapped; `out` is our own memory.
        // SAFETY: the invariants stated just above hold here.
        unsafe { copy_shared(self.at(idx), out.as_mut_ptr(), BLOCK_HEAD) };
        out
    }

    /// Writes `bytes` (at most [`BLOCK_HEAD`] of them) at the start of block `idx` (of the
    /// last block when `idx` is past it). Refused for read-only memory.
    #[inline]
    pub fn write_head<const N: usize>(&self, idx: u32, bytes: &[u8; N]) -> Result<(), OutOfBounds> {
        const { assert!(N <= BLOCK_HEAD) };
        if !self.writable {
            return Err(OutOfBounds::ReadOnly { offset: 0, len: N });
        }
        // Why this is sound: as in `head` (N <= BLOCK_HEAD bytes of a block inside the
        // region), and the region is writable (checked above).
        // SAFETY: the invariants stated just above hold here.
        unsafe { copy_shared(bytes.as_ptr(), self.at(idx), N) };
        Ok(())
    }

    /// Blocks in the view.
    #[inline]
    pub fn count(&self) -> u32 {
        self.last + 1
    }

    /// A burst of frames in this view's buffers, given as pairs of words: `[0]` a buffer
    /// handle's raw value (pool id in the top 8 bits, block index in the low 24), `[1]` the
    /// frame's length in its low 16 bits (the high 16 are not looked at) — the layout of a
    /// burst of frames. Checks once, for the whole burst, that every handle names `pool` and
    /// a block of this view, and every length is within `lens`; the burst then reads and
    /// writes heads with no check or clamp per buffer. `None` when some frame fails.
    ///
    /// The check is branch-free, each frame as one 64-bit word (handle low, length high),
    /// which vectorises without separating the halves: the handle less `pool << 24` must be
    /// at most the last block, the length less `lens.start()` at most the span of `lens`. A
    /// difference `d` within its bound `b` (both under 2^31) leaves the top bit of its half
    /// of `d | (b - d)` clear; one out of it (below, wrapped round, or above) sets it. A
    /// borrow from the low half into the high one happens only when the low half is out of
    /// bounds already.
    #[inline]
    pub fn frames<'a>(
        &'a self,
        words: &'a [[u32; 2]],
        pool: PoolId,
        lens: RangeInclusive<u16>,
    ) -> Option<BlockBurst<'a>> {
        let (min, max) = (*lens.start() as u32, *lens.end() as u32);
        let pair = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
        let less = pair((pool.0 as u32) << 24, min);
        // An empty `lens` wraps its span round: every burst fails.
        let most = pair(self.last, max.wrapping_sub(min));
        // Bounds the compiler cannot see through: with the caller's constants folded in, it
        // splits each 64-bit difference into its halves again and the loop costs half as
        // much more (and out of line, the call costs the 2-port benchmark ~1.5% of its
        // rate). `black_box` changes no value, only what the optimiser knows.
        let (less, most) = core::hint::black_box((less, most));
        let (ok, meta) = within(words, less, most);
        ok.then_some(BlockBurst {
            blocks: self,
            words,
            any_meta: meta != 0,
        })
    }
}

/// The check of [`Blocks::frames`]: whether every frame's difference from `less` is within
/// `most`, half by half; and, from the same loads, the OR of every frame's high 16 bits
/// (its offload metadata).
#[inline(always)]
fn within(words: &[[u32; 2]], less: u64, most: u64) -> (bool, u32) {
    let pair = |lo: u32, hi: u32| lo as u64 | (hi as u64) << 32;
    let (acc, meta) = words.iter().fold((0u64, 0u32), |(acc, meta), w| {
        let d = (pair(w[0], w[1]) & pair(!0, 0xffff)).wrapping_sub(less);
        (acc | d | most.wrapping_sub(d), meta | w[1])
    });
    (acc & pair(1 << 31, 1 << 31) == 0, meta >> 16)
}

/// The bits of a buffer handle's raw value that are its block index.
const BLOCK_INDEX: u32 = 0x00ff_ffff;

/// Buffers of a [`Blocks`] view whose indices were all checked once ([`Blocks::frames`]):
/// their heads are read and written with no check per buffer. The words are borrowed
/// immutably for the burst's life, so no index can change after the check.
#[derive(Clone, Copy, Debug)]
pub struct BlockBurst<'a> {
    // By reference: a copy of the view would be written field by field and read back
    // whole, which stalls store forwarding on every burst.
    blocks: &'a Blocks,
    words: &'a [[u32; 2]],
    any_meta: bool,
}

impl<'a> BlockBurst<'a> {
    /// Whether any frame of the burst carries offload metadata (a nonzero high half of its
    /// second word).
    #[inline]
    pub fn any_meta(&self) -> bool {
        self.any_meta
    }

    /// Buffers in the burst.
    #[inline]
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the burst is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The burst's first `n` buffers (all of them when it has fewer).
    #[inline]
    pub fn head(&self, n: usize) -> Self {
        Self {
            blocks: self.blocks,
            words: &self.words[..n.min(self.words.len())],
            any_meta: self.any_meta,
        }
    }

    /// The address of the block of `w`, one of the burst's words.
    #[inline(always)]
    fn at(&self, w: &[u32; 2]) -> *mut u8 {
        let off = (w[0] & BLOCK_INDEX) as usize * self.blocks.size;
        self.blocks.base.as_ptr().wrapping_add(off)
    }

    /// The first [`BLOCK_HEAD`] bytes of each buffer, in order.
    #[inline]
    pub fn heads(&self) -> impl Iterator<Item = [u8; BLOCK_HEAD]> + Clone + use<'a> {
        let burst = *self;
        self.words.iter().map(move |w| {
            let mut out = [0u8; BLOCK_HEAD];
            // Why this is sound: `w` is one of the burst's words, whose block index
            // `Blocks::frames` checked to be at most the last block (and the words cannot
            // have changed since: they are borrowed immutably for 'a); `Memory::blocks`
            // checked that every block lies inside the region and is at least BLOCK_HEAD
            // bytes long; `_keep` keeps it mapped; `out` is our own memory.
            // SAFETY: the invariants stated just above hold here.
            unsafe { copy_shared(burst.at(w), out.as_mut_ptr(), BLOCK_HEAD) };
            out
        })
    }

    /// The little-endian words at byte offsets `A` and `B` (each at most
    /// `BLOCK_HEAD - 8`) of the `i`th buffer: two loads, for a caller that reads header
    /// fields as words. Panics when `i` is not below [`BlockBurst::len`] (a caller
    /// looping up to the length pays no check).
    #[inline(always)]
    pub fn words_of<const A: usize, const B: usize>(&self, i: usize) -> (u64, u64) {
        const { assert!(A + 8 <= BLOCK_HEAD && B + 8 <= BLOCK_HEAD) };
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        let p = self.at(&self.words[i]);
        // Why this is sound: as in `heads` (the block of one of the burst's words, checked
        // to lie inside the region and to be at least BLOCK_HEAD bytes long, and A + 8,
        // B + 8 <= BLOCK_HEAD, asserted above); `a` and `b` are our own memory.
        // SAFETY: the invariants stated just above hold here.
        unsafe {
            copy_shared(p.wrapping_add(A), a.as_mut_ptr(), 8);
            copy_shared(p.wrapping_add(B), b.as_mut_ptr(), 8);
        }
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }
}

/// Copies `len` bytes between two raw ranges (which may overlap), one of them memory another
/// party may write at the same time.
///
/// Not a volatile copy: a plain `memmove`, because frame copies are the hot path and a
/// volatile copy moves a byte or a word at a time. The argument that this is enough: the
/// bytes are plain data with no validity invariant, so a racing writer can only tear them,
/// never make an invalid value; the copy is made exactly once (every decision is taken on
/// the copy, which callers treat as untrusted and validate, so the compiler has no reason
/// and no licence to read the source again); and the other writer is another process or
/// domain, or a device, outside this program, whose stores the compiler cannot see or
/// reorder. No reference to the shared bytes is ever formed.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable.
#[inline]
pub(crate) unsafe fn copy_shared(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: both ranges are valid per the function contract; `copy` permits overlap.
    unsafe { core::ptr::copy(src, dst, len) };
}

/// Process-private, page-aligned, zeroed memory: the backing of [`Memory::local`].
#[derive(Debug)]
struct LocalAlloc {
    base: NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: LocalAlloc owns its allocation; access to the bytes goes through `Region`, whose
// accesses are copies or atomics.
unsafe impl Send for LocalAlloc {}
// SAFETY: as for Send: a `&LocalAlloc` gives no access to the bytes.
unsafe impl Sync for LocalAlloc {}

impl LocalAlloc {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096)
            .unwrap_or_else(|_| panic!("local memory of {len} bytes is too large"));
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { base, layout }
    }
}

impl Drop for LocalAlloc {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accesses_outside_are_refused() {
        let m = Memory::local(64);
        let r = m.region().subregion(8, 32).expect("inside");
        assert!(r.write(30, &[1, 2]).is_ok());
        assert_eq!(
            r.write(31, &[1, 2]),
            Err(OutOfBounds::Range {
                offset: 31,
                len: 2,
                size: 32
            })
        );
        assert!(r.read(usize::MAX, &mut [0u8; 2]).is_err());
        assert!(r.subregion(16, 17).is_err());
        assert!(matches!(
            r.atomic_u32(2),
            Err(OutOfBounds::Misaligned { .. })
        ));
        let mut b = [0u8; 2];
        r.read(30, &mut b).expect("inside");
        assert_eq!(b, [1, 2]);
    }

    #[test]
    fn blocks_read_and_write_heads_within_bounds() {
        let m = Memory::local(4 * 256);
        let r = m.region();
        assert!(
            m.blocks(8, 5).is_err(),
            "five blocks of 256 do not fit 1024 bytes"
        );
        assert!(m.blocks(3, 4).is_err(), "blocks shorter than a head");
        assert!(m.blocks(8, 0).is_err(), "no block");
        let b = m.blocks(8, 4).expect("fits");
        assert_eq!(b.count(), 4);
        b.write_head(2, &[7u8; 12]).expect("writable");
        assert_eq!(r.read_u64(512), Ok(u64::from_ne_bytes([7; 8])));
        assert_eq!(&b.head(2)[..13], &[7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0]);
        // An index past the end is clamped to the last block, never outside the region.
        b.write_head(1000, &[9u8; 4]).expect("clamped");
        assert_eq!(&b.head(3)[..5], &[9, 9, 9, 9, 0]);
        let ro = m.clone().read_only().blocks(8, 4).expect("fits");
        assert!(matches!(
            ro.write_head(0, &[1u8; 2]),
            Err(OutOfBounds::ReadOnly { .. })
        ));
    }

    #[test]
    fn a_burst_is_checked_once_and_then_reads_its_heads() {
        let m = Memory::local(4 * 256);
        let r = m.region();
        for i in 0..4u8 {
            let head: Vec<u8> = (0..16).map(|k| i << 4 | k).collect();
            r.write(i as usize * 256, &head).expect("inside");
        }
        let b = m.blocks(8, 4).expect("fits");
        let pool = PoolId(9);
        // Handles of pool 9, 64-byte frames with something in `meta`.
        let h = |idx: u32| [9 << 24 | idx, 0xdead_0040];
        let words = [h(3), h(0), h(3), h(2)];
        let burst = b.frames(&words, pool, 14..=256).expect("every frame fits");
        assert_eq!(burst.len(), 4);
        let heads: Vec<[u8; BLOCK_HEAD]> = burst.heads().collect();
        for (k, idx) in [3u8, 0, 3, 2].into_iter().enumerate() {
            let want: Vec<u8> = (0..16).map(|j| idx << 4 | j).collect();
            assert_eq!(heads[k][..], want[..], "buffer {k}");
            let le = |at: usize| u64::from_le_bytes(want[at..at + 8].try_into().expect("8"));
            assert_eq!(burst.words_of::<0, 6>(k), (le(0), le(6)));
            assert_eq!(burst.words_of::<8, 2>(k), (le(8), le(2)));
        }
        assert_eq!(burst.head(3).len(), 3);
        assert_eq!(burst.head(9).len(), 4);
        assert_eq!(burst.head(1).heads().last(), Some(heads[0]));
        // One frame past the last block, of another pool or of a length out of range,
        // anywhere, refuses the whole burst.
        for bad in [
            h(4),
            h(0xff_ffff),
            [8 << 24 | 1, 64],
            [10 << 24, 64],
            h(3).map(|w| w & !0xffff | 13),
            [9 << 24, 257],
        ] {
            for at in 0..4 {
                let mut w = words;
                w[at] = bad;
                assert!(b.frames(&w, pool, 14..=256).is_none(), "{bad:x?} at {at}");
            }
        }
        let (lo, hi) = (65, 64);
        assert!(b.frames(&words, pool, lo..=hi).is_none(), "no length fits");
        assert!(b.frames(&[], pool, 14..=256).is_some_and(|e| e.is_empty()));
        // A read-only view reads the same.
        let ro = m.clone().read_only().blocks(8, 4).expect("fits");
        let ro_burst = ro.frames(&words, pool, 64..=64).expect("inside");
        assert_eq!(ro_burst.heads().nth(2), Some(heads[2]));
    }

    #[test]
    fn the_burst_check_matches_the_plain_checks() {
        // The branch-free whole-burst check against the plain per-frame conditions, on
        // bursts with one frame changed to values at and around every bound.
        let plain = |words: &[[u32; 2]], pool: u32, count: u32, lo: u32, hi: u32| {
            words.iter().all(|w| {
                let (raw, len) = (w[0], w[1] & 0xffff);
                raw >> 24 == pool && raw & 0x00ff_ffff < count && len >= lo && len <= hi
            })
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        };
        let m = Memory::local(1 << 22);
        for pool in [0u32, 1, 7, 128, 255] {
            for (count, size) in [(1u32, 256u32), (512, 2048), (1024, 4096)] {
                let shift = size.trailing_zeros();
                let b = m.blocks(shift, count).expect("fits");
                for _ in 0..300 {
                    let n = 1 + rnd(40) as usize;
                    let mut words: Vec<[u32; 2]> = (0..n)
                        .map(|_| {
                            let idx = rnd(count as u64) as u32;
                            let len = 14 + rnd(size as u64 - 13) as u32;
                            [pool << 24 | idx, len | (rnd(1 << 16) as u32) << 16]
                        })
                        .collect();
                    let k = rnd(n as u64) as usize;
                    let p =
                        [pool, pool ^ 1, pool.wrapping_sub(1) & 0xff, 255 - pool][rnd(4) as usize];
                    let idx = [0, 1, count - 1, count, count + 1, 0x00ff_ffff][rnd(6) as usize];
                    let len = [0, 13, 14, 15, size - 1, size, size + 1, 0xffff][rnd(8) as usize];
                    words[k] = [p << 24 | idx, len | words[k][1] & 0xffff_0000];
                    assert_eq!(
                        b.frames(&words, PoolId(pool as u8), 14..=size as u16)
                            .is_some(),
                        plain(&words, pool, count, 14, size),
                        "pool {pool} count {count} size {size} frame {:?}",
                        words[k]
                    );
                }
            }
        }
    }

    #[test]
    fn read_only_views_refuse_writes() {
        let m = Memory::local(64);
        let ro = m.region().read_only();
        let ro_handle = m.clone().read_only();
        assert!(ro_handle.region().write(0, &[1]).is_err());
        assert!(ro_handle.sub(0, 8).is_ok_and(|s| !s.is_writable()));
        assert!(!ro.is_writable());
        assert!(matches!(
            ro.write(0, &[1]),
            Err(OutOfBounds::ReadOnly { .. })
        ));
        assert!(matches!(
            ro.fill(0, 4, 9),
            Err(OutOfBounds::ReadOnly { .. })
        ));
        assert!(ro.atomic_u32(0).is_err());
        assert!(!ro.subregion(4, 4).expect("inside").is_writable());
        m.region().write(0, &[7]).expect("writable");
        assert_eq!(ro.read_u64(0), Ok(7));
    }

    #[test]
    fn handles_keep_the_memory_until_the_last_is_gone() {
        // A pool or port built over part of a mapping keeps all of it: the owner of the
        // first handle can go first.
        let m = Memory::local(8192);
        m.region().write(4096, b"kept").expect("inside");
        let sub = m.sub(4096, 4096).expect("inside");
        let blocks = m.blocks(12, 2).expect("fits");
        assert_eq!(m.handles(), 3);
        drop(m);
        let mut b = [0u8; 4];
        sub.region().read(0, &mut b).expect("inside");
        assert_eq!(&b, b"kept");
        assert_eq!(&blocks.head(1)[..4], b"kept");
        assert_eq!(sub.handles(), 2);
        drop(blocks);
        assert_eq!(sub.handles(), 1);
        assert!(
            sub.sub(1, 4096).is_err(),
            "a sub-range stays inside its parent"
        );
    }
}

//! [`Region`]: a bounds-checked view of memory that another party may write.
//!
//! Every access goes through a volatile copy or an atomic, never through a reference to the
//! bytes, following the rule that no `&`/`&mut` is ever formed into shared memory.

use core::ops::RangeInclusive;
use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;

use crate::pool::PoolId;

/// A contiguous range of memory, possibly shared with another domain.
///
/// `Region` is a raw view: it does not own the memory. Whoever creates it (a mapping, a pool)
/// guarantees the range stays mapped for as long as the `Region` or any copy of it is used;
/// the constructors that take a raw pointer are `unsafe` for exactly that reason.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: a Region is a pointer and a length; every access through it is a volatile copy or an
// atomic operation, both of which are well-defined under concurrent access from other threads
// or processes. Whoever built the region guarantees it stays mapped (see `Region::from_raw`).
unsafe impl Send for Region {}
// SAFETY: as for Send: no method hands out a reference to the bytes, so sharing a Region
// between threads cannot create aliasing `&mut`.
unsafe impl Sync for Region {}

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

impl Region {
    /// Builds a region over `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base+len` must be mapped, readable and (for writes through this region)
    /// writable, and stay so for as long as this region or any copy of it is used.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        Self {
            base,
            len,
            writable: true,
        }
    }

    /// Builds a read-only region over `len` bytes at `base`: every write and every atomic
    /// access through it (and its subregions) is refused with [`OutOfBounds::ReadOnly`].
    ///
    /// # Safety
    /// `base..base+len` must be mapped and readable, and stay so for as long as this region or
    /// any copy of it is used.
    pub unsafe fn from_raw_read_only(base: NonNull<u8>, len: usize) -> Self {
        Self {
            base,
            len,
            writable: false,
        }
    }

    /// Whether writes through this region are allowed.
    #[inline]
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// This region with writes refused from now on (a read-only view of writable memory).
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
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfBounds::Range {
                offset,
                len,
                size: self.len,
            }),
        }
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
    pub fn subregion(&self, offset: usize, len: usize) -> Result<Region, OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: offset+len <= self.len was just checked, so the pointer stays inside the
        // mapping this region was built over, and is non-null because base is.
        let base = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) };
        Ok(Region {
            base,
            len,
            writable: self.writable,
        })
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    #[inline]
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), OutOfBounds> {
        self.check(offset, dst.len())?;
        // SAFETY: bounds checked above; `dst` is our own memory. A concurrent writer can only
        // tear the bytes, which callers treat as untrusted.
        unsafe { copy_volatile(self.base.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    #[inline]
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), OutOfBounds> {
        self.check_write(offset, src.len())?;
        // SAFETY: bounds checked above; the region is writable by the constructor's contract.
        unsafe { copy_volatile(src.as_ptr(), self.base.as_ptr().add(offset), src.len()) };
        Ok(())
    }

    /// Copies `len` bytes from `src` at `src_off` into this region at `dst_off`.
    #[inline]
    pub fn copy_from(
        &self,
        dst_off: usize,
        src: &Region,
        src_off: usize,
        len: usize,
    ) -> Result<(), OutOfBounds> {
        self.check_write(dst_off, len)?;
        src.check(src_off, len)?;
        // SAFETY: both ranges were bounds-checked against mapped regions; `copy_volatile`
        // tolerates overlap.
        unsafe {
            copy_volatile(
                src.base.as_ptr().add(src_off),
                self.base.as_ptr().add(dst_off),
                len,
            )
        };
        Ok(())
    }

    /// Reads a `u64` (native endian) at `offset` with a volatile load.
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
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, OutOfBounds> {
        self.check_write(offset, 4)?;
        let p = self.base.as_ptr().wrapping_add(offset);
        if !(p as usize).is_multiple_of(core::mem::align_of::<AtomicU32>()) {
            return Err(OutOfBounds::Misaligned { offset, align: 4 });
        }
        // Why this is sound: in bounds and aligned (checked above); AtomicU32 has the layout of u32 and
        // permits concurrent access from any party, so a shared reference to it is sound
        // while the mapping lives, which the region's constructor guarantees.
        // SAFETY: in bounds, aligned, mapped; atomics tolerate concurrent access.
        Ok(unsafe { &*(p as *const AtomicU32) })
    }
}

/// Bytes at the start of a block that [`Blocks`] reads and writes: a frame's Ethernet
/// header (two MACs and the EtherType) with room to spare.
pub const BLOCK_HEAD: usize = 16;

/// A region seen as `count` equal blocks of `1 << shift` bytes (the buffers of a pool), for
/// reading and writing the first [`BLOCK_HEAD`] bytes of a block — a frame header — on a
/// burst path without a bounds check per access.
///
/// The bounds are checked once, when the view is made ([`Region::blocks`]). A block index
/// past the last block is clamped to the last block (one compare, no branch), so no index
/// can reach outside the region; callers check indices against the pool themselves and use
/// the clamp only as the memory-safety backstop. Like [`Region`], every access is a volatile
/// copy.
#[derive(Clone, Copy, Debug)]
pub struct Blocks {
    base: NonNull<u8>,
    last: u32,
    /// Block size in bytes (`1 << shift`): a multiply needs no shift-count register.
    size: usize,
    writable: bool,
}

// SAFETY: as for Region: a pointer into a mapping whose creator keeps it mapped, accessed only
// through volatile copies.
unsafe impl Send for Blocks {}
// SAFETY: as for Send: no method hands out a reference to the bytes.
unsafe impl Sync for Blocks {}

impl Region {
    /// This region as `count` blocks of `1 << shift` bytes. Fails when there is no block, a
    /// block is shorter than [`BLOCK_HEAD`], or the blocks do not fit in the region.
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
        // Why this is sound: `at` clamps the index to the last block, `Region::blocks`
        // checked that every block lies inside the region and is at least BLOCK_HEAD bytes
        // long, and the region's creator keeps it mapped; `out` is our own memory.
        // SAFETY: the invariants stated just above hold here.
        unsafe { copy_volatile(self.at(idx), out.as_mut_ptr(), BLOCK_HEAD) };
        out
    }

    /// Writes `bytes` (at most [`BLOCK_HEAD`] of them) at the start of block `idx` (of the
    /// last block when `idx` is past it). Refused for a read-only region.
    #[inline]
    pub fn write_head<const N: usize>(&self, idx: u32, bytes: &[u8; N]) -> Result<(), OutOfBounds> {
        const { assert!(N <= BLOCK_HEAD) };
        if !self.writable {
            return Err(OutOfBounds::ReadOnly { offset: 0, len: N });
        }
        // Why this is sound: as in `head` (N <= BLOCK_HEAD bytes of a block inside the
        // region), and the region is writable (checked above).
        // SAFETY: the invariants stated just above hold here.
        unsafe { copy_volatile(bytes.as_ptr(), self.at(idx), N) };
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
            // have changed since: they are borrowed immutably for 'a); `Region::blocks`
            // checked that every block lies inside the region and is at least BLOCK_HEAD
            // bytes long; the region's creator keeps it mapped; `out` is our own memory.
            // SAFETY: the invariants stated just above hold here.
            unsafe { copy_volatile(burst.at(w), out.as_mut_ptr(), BLOCK_HEAD) };
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
            copy_volatile(p.wrapping_add(A), a.as_mut_ptr(), 8);
            copy_volatile(p.wrapping_add(B), b.as_mut_ptr(), 8);
        }
        (u64::from_le_bytes(a), u64::from_le_bytes(b))
    }
}

/// Copies `len` bytes between two raw ranges (which may overlap).
///
/// Frames are plain bytes with no validity invariant, so a peer writing the source while we
/// copy yields torn data, never an invalid value: callers treat copied-out data as untrusted
/// and validate it. The copy is a `memmove` because frame copies are on the hot path.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable.
#[inline]
pub(crate) unsafe fn copy_volatile(src: *const u8, dst: *mut u8, len: usize) {
    // SAFETY: both ranges are valid per the function contract; `copy` permits overlap.
    unsafe { core::ptr::copy(src, dst, len) };
}

/// Process-private, page-aligned, zeroed memory with a [`Region`] over it: for rings and
/// pools that live inside one process (tests, benchmarks, a port's private pool).
#[derive(Debug)]
pub struct LocalMem {
    base: NonNull<u8>,
    layout: std::alloc::Layout,
}

// SAFETY: LocalMem owns its allocation; access to the bytes goes through `Region`, whose
// accesses are volatile or atomic.
unsafe impl Send for LocalMem {}
// SAFETY: as for Send: `&LocalMem` hands out only Regions.
unsafe impl Sync for LocalMem {}

impl LocalMem {
    /// `len` zeroed bytes (at least one), 4096-byte aligned.
    pub fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len.max(1), 4096)
            .unwrap_or_else(|_| panic!("LocalMem of {len} bytes is too large"));
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let base = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { base, layout }
    }

    /// The memory as a region; valid while `self` lives.
    pub fn region(&self) -> Region {
        // SAFETY: the allocation is `layout.size()` bytes, readable and writable, and lives
        // until `self` is dropped; the caller keeps `self` alive while it uses the region.
        unsafe { Region::from_raw(self.base, self.layout.size()) }
    }
}

impl Drop for LocalMem {
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
        let m = LocalMem::new(64);
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
        let m = LocalMem::new(4 * 256);
        let r = m.region();
        assert!(
            r.blocks(8, 5).is_err(),
            "five blocks of 256 do not fit 1024 bytes"
        );
        assert!(r.blocks(3, 4).is_err(), "blocks shorter than a head");
        assert!(r.blocks(8, 0).is_err(), "no block");
        let b = r.blocks(8, 4).expect("fits");
        assert_eq!(b.count(), 4);
        b.write_head(2, &[7u8; 12]).expect("writable");
        assert_eq!(r.read_u64(512), Ok(u64::from_ne_bytes([7; 8])));
        assert_eq!(&b.head(2)[..13], &[7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0]);
        // An index past the end is clamped to the last block, never outside the region.
        b.write_head(1000, &[9u8; 4]).expect("clamped");
        assert_eq!(&b.head(3)[..5], &[9, 9, 9, 9, 0]);
        let ro = r.read_only().blocks(8, 4).expect("fits");
        assert!(matches!(
            ro.write_head(0, &[1u8; 2]),
            Err(OutOfBounds::ReadOnly { .. })
        ));
    }

    #[test]
    fn a_burst_is_checked_once_and_then_reads_its_heads() {
        let m = LocalMem::new(4 * 256);
        let r = m.region();
        for i in 0..4u8 {
            let head: Vec<u8> = (0..16).map(|k| i << 4 | k).collect();
            r.write(i as usize * 256, &head).expect("inside");
        }
        let b = r.blocks(8, 4).expect("fits");
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
        let ro = r.read_only().blocks(8, 4).expect("fits");
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
        let m = LocalMem::new(1 << 22);
        for pool in [0u32, 1, 7, 128, 255] {
            for (count, size) in [(1u32, 256u32), (512, 2048), (1024, 4096)] {
                let shift = size.trailing_zeros();
                let b = m.region().blocks(shift, count).expect("fits");
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
        let m = LocalMem::new(64);
        let ro = m.region().read_only();
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
}

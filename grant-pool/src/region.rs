//! [`Region`]: a bounds-checked view of memory that another party may write.
//!
//! Every access goes through a volatile copy or an atomic, never through a reference to the
//! bytes, following the rule that no `&`/`&mut` is ever formed into shared memory.

use core::ptr::NonNull;
use core::sync::atomic::AtomicU32;

/// A contiguous range of memory, possibly shared with another domain.
///
/// `Region` is a raw view: it does not own the memory. Whoever creates it (a mapping, a pool)
/// guarantees the range stays mapped for as long as the `Region` or any copy of it is used;
/// the constructors that take a raw pointer are `unsafe` for exactly that reason.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is a pointer and a length; every access through it is a volatile copy or an
// atomic operation, both of which are well-defined under concurrent access from other threads
// or processes. Whoever built the region guarantees it stays mapped (see `Region::from_raw`).
unsafe impl Send for Region {}
// SAFETY: as for Send: no method hands out a reference to the bytes, so sharing a Region
// between threads cannot create aliasing `&mut`.
unsafe impl Sync for Region {}

/// An access outside a [`Region`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset} is outside a region of {size} bytes")]
pub struct OutOfBounds {
    /// Offset asked for.
    pub offset: usize,
    /// Length asked for.
    pub len: usize,
    /// Size of the region.
    pub size: usize,
}

impl Region {
    /// Builds a region over `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base+len` must be mapped, readable and (for writes through this region)
    /// writable, and stay so for as long as this region or any copy of it is used.
    pub unsafe fn from_raw(base: NonNull<u8>, len: usize) -> Self {
        Self { base, len }
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
            _ => Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// A sub-range of this region.
    #[inline]
    pub fn subregion(&self, offset: usize, len: usize) -> Result<Region, OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: offset+len <= self.len was just checked, so the pointer stays inside the
        // mapping this region was built over, and is non-null because base is.
        let base = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(offset)) };
        Ok(Region { base, len })
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
        self.check(offset, src.len())?;
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
        self.check(dst_off, len)?;
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

    /// The atomic `u32` at `offset`, which must be 4-byte aligned.
    ///
    /// Atomics are the one kind of reference into shared memory that is sound: they are
    /// designed for concurrent mutation.
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, OutOfBounds> {
        self.check(offset, 4)?;
        let p = self.base.as_ptr().wrapping_add(offset);
        if !(p as usize).is_multiple_of(core::mem::align_of::<AtomicU32>()) {
            return Err(OutOfBounds {
                offset,
                len: 4,
                size: self.len,
            });
        }
        // SAFETY: in bounds and aligned (checked above); AtomicU32 has the layout of u32 and
        // permits concurrent access from any party, so a shared reference to it is sound
        // while the mapping lives, which the region's constructor guarantees.
        Ok(unsafe { &*(p as *const AtomicU32) })
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

//! The four XDP socket rings (fill, completion, rx, tx), mapped from the kernel.
//!
//! Each ring is a producer index, a consumer index, a flags word and a power-of-two array of
//! descriptors, all in memory the kernel writes concurrently. Indices are read and written
//! with atomics (acquire/release), descriptors with volatile copies; no reference into the
//! ring memory is ever formed except to the atomics. The kernel is trusted not to corrupt our
//! process, but an index it publishes is still clamped to the ring size, so a bug there cannot
//! make us read past the mapping.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::linux::Mmap;

/// One ring, seen from user space.
#[derive(Debug)]
pub(crate) struct XskRing {
    map: Mmap,
    prod_off: usize,
    cons_off: usize,
    flags_off: usize,
    desc_off: usize,
    desc_size: usize,
    size: u32,
    mask: u32,
    cached_prod: u32,
    cached_cons: u32,
}

impl XskRing {
    /// Wraps a mapped ring with the offsets the kernel gave in `XDP_MMAP_OFFSETS`.
    ///
    /// Returns `None` when an offset or the size does not fit the mapping.
    pub(crate) fn new(
        map: Mmap,
        off: &libc::xdp_ring_offset,
        size: u32,
        desc_size: usize,
    ) -> Option<Self> {
        let fits = |o: u64, l: usize| {
            usize::try_from(o)
                .ok()
                .and_then(|o| o.checked_add(l))
                .is_some_and(|end| end <= map.len())
        };
        let aligned = |o: u64| o.is_multiple_of(4);
        if !size.is_power_of_two()
            || !fits(off.producer, 4)
            || !fits(off.consumer, 4)
            || !fits(off.flags, 4)
            || !fits(off.desc, size as usize * desc_size)
            || !(aligned(off.producer) && aligned(off.consumer) && aligned(off.flags))
            || !off.desc.is_multiple_of(8)
        {
            return None;
        }
        let mut r = Self {
            prod_off: off.producer as usize,
            cons_off: off.consumer as usize,
            flags_off: off.flags as usize,
            desc_off: off.desc as usize,
            map,
            desc_size,
            size,
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
        };
        r.cached_prod = r.producer().load(Ordering::Relaxed);
        r.cached_cons = r.consumer().load(Ordering::Relaxed);
        Some(r)
    }

    #[inline]
    fn atomic(&self, off: usize) -> &AtomicU32 {
        // Why this is sound: `off` is one of the offsets checked in `new` to lie within the mapping with
        // 4 bytes to spare and to be 4-byte aligned (the mapping itself is page-aligned); the
        // mapping lives as long as `self`. Atomics are sound over memory the kernel writes.
        // SAFETY: the invariants stated just above hold here.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU32) }
    }

    #[inline]
    fn producer(&self) -> &AtomicU32 {
        self.atomic(self.prod_off)
    }

    #[inline]
    fn consumer(&self) -> &AtomicU32 {
        self.atomic(self.cons_off)
    }

    /// Entries in the ring.
    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    /// Whether the kernel asked to be woken (`XDP_RING_NEED_WAKEUP`).
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.atomic(self.flags_off).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    #[inline]
    fn slot(&self, i: u32) -> *mut u8 {
        let at = self.desc_off + (i & self.mask) as usize * self.desc_size;
        // SAFETY: `i & mask < size` and `desc_off + size * desc_size` was checked to lie
        // within the mapping in `new`.
        unsafe { self.map.as_ptr().add(at) }
    }

    // ---- producer side (fill, tx) ----

    /// Free slots, at least `want` if that many are free (refreshes from the kernel only
    /// when the cached view has fewer).
    #[inline]
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let used = self.cached_prod.wrapping_sub(self.cached_cons);
        let free = self.size.saturating_sub(used);
        if free >= want {
            return free;
        }
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.size
            .saturating_sub(self.cached_prod.wrapping_sub(self.cached_cons))
    }

    /// Writes a `u64` address at position `i` past the producer (fill ring).
    #[inline]
    pub(crate) fn put_addr(&mut self, i: u32, addr: u64) {
        let p = self.slot(self.cached_prod.wrapping_add(i)) as *mut u64;
        // Why this is sound: the slot lies in the mapping (see `slot`), is 8-byte aligned (desc_off is a
        // multiple of 8, descriptors are 8 bytes) and is ours until the producer index
        // passes it.
        // SAFETY: the invariants stated just above hold here.
        unsafe { p.write_volatile(addr) };
    }

    /// Writes a tx descriptor at position `i` past the producer.
    #[inline]
    pub(crate) fn put_desc(&mut self, i: u32, addr: u64, len: u32) {
        let p = self.slot(self.cached_prod.wrapping_add(i)) as *mut libc::xdp_desc;
        // SAFETY: as in `put_addr`; descriptors are 16 bytes, 8-byte aligned.
        unsafe {
            p.write_volatile(libc::xdp_desc {
                addr,
                len,
                options: 0,
            })
        };
    }

    /// Publishes `n` written entries to the kernel.
    #[inline]
    pub(crate) fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    /// Entries published and not yet consumed by the kernel (fresh read).
    #[inline]
    pub(crate) fn pending(&mut self) -> u32 {
        self.cached_cons = self.consumer().load(Ordering::Acquire);
        self.cached_prod
            .wrapping_sub(self.cached_cons)
            .min(self.size)
    }

    // ---- consumer side (rx, completion) ----

    /// Entries ready to consume, at most `max`.
    #[inline]
    pub(crate) fn ready(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(self.size).min(max)
    }

    /// The address at position `i` past the consumer (completion ring).
    #[inline]
    pub(crate) fn addr(&self, i: u32) -> u64 {
        let p = self.slot(self.cached_cons.wrapping_add(i)) as *const u64;
        // SAFETY: in the mapping and aligned (see `put_addr`); the kernel published it before
        // the producer index we acquired.
        unsafe { p.read_volatile() }
    }

    /// The descriptor at position `i` past the consumer (rx ring).
    #[inline]
    pub(crate) fn desc(&self, i: u32) -> libc::xdp_desc {
        let p = self.slot(self.cached_cons.wrapping_add(i)) as *const libc::xdp_desc;
        // SAFETY: as in `addr`; any bit pattern is a valid xdp_desc.
        unsafe { p.read_volatile() }
    }

    /// Gives `n` consumed entries back to the kernel.
    #[inline]
    pub(crate) fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}

//! DMA memory and the addresses the device uses for it.
//!
//! The device reads descriptors and frames by *I/O virtual address* (IOVA). Where that
//! address comes from depends on how the device is reached:
//!
//! * **No IOMMU** (sysfs `resource0`, or VFIO's no-IOMMU mode): the IOVA is the physical
//!   address. It is read once per page from `/proc/self/pagemap` (needs `CAP_SYS_ADMIN` to see
//!   page frame numbers). This is valid only while the page stays where it is, so every page
//!   the device may touch is **pinned**: touched (so it exists), `mlock`ed (so it is never
//!   swapped out) and, where possible, a hugepage (which the kernel does not migrate).
//!   `mlock` alone does not forbid *migration* by memory compaction; set
//!   `vm.compact_unevictable_allowed = 0` to keep the kernel from moving locked pages (the
//!   QEMU test does). A page that moved would make the device DMA into someone else's
//!   memory: this mode is for a dedicated machine or guest, as with any no-IOMMU driver.
//! * **VFIO with an IOMMU**: the driver would instead ask the IOMMU to map each range with
//!   `VFIO_IOMMU_MAP_DMA` (IOVA = virtual address); the IOMMU pins the pages itself and
//!   confines the device to exactly those ranges. [`IovaMap`] is the seam for that.
//! * **The register model** ([`super::model::Model`]): IOVA = virtual address, and the model
//!   refuses DMA outside the ranges it was given.

use core::ptr::NonNull;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::IntelError;

/// 4 KiB: the small page size.
pub const PAGE_4K: usize = 4096;
/// 2 MiB: the x86-64 hugepage size.
pub const PAGE_2M: usize = 2 << 20;

/// Gives the device an address for memory the driver owns, and keeps it valid.
pub trait IovaMap: Send {
    /// Makes `len` bytes at `virt` (a multiple of `page`, page-aligned) reachable by the
    /// device and returns the IOVA of each `page`-sized page, in order.
    fn map(&self, virt: NonNull<u8>, len: usize, page: usize) -> Result<Vec<u64>, IntelError>;

    /// Whether the IOVAs are physical addresses (so small pages are not contiguous).
    fn physical(&self) -> bool;

    /// The device will no longer use `len` bytes at `virt` (an IOMMU would unmap them).
    fn unmap(&self, _virt: NonNull<u8>, _len: usize) {}
}

/// IOVAs from `/proc/self/pagemap`: physical addresses of pinned pages (no IOMMU).
#[derive(Debug, Default, Clone, Copy)]
pub struct Pagemap;

impl IovaMap for Pagemap {
    fn map(&self, virt: NonNull<u8>, len: usize, page: usize) -> Result<Vec<u64>, IntelError> {
        pin(virt, len)?;
        let pm =
            File::open("/proc/self/pagemap").map_err(|e| IntelError::Pagemap(e.to_string()))?;
        let mut out = Vec::with_capacity(len / page);
        for off in (0..len).step_by(page) {
            let va = virt.as_ptr() as usize + off;
            let mut entry = [0u8; 8];
            pm.read_exact_at(&mut entry, (va / PAGE_4K * 8) as u64)
                .map_err(|e| IntelError::Pagemap(e.to_string()))?;
            let e = u64::from_ne_bytes(entry);
            // Bit 63: page present; bits 54:0: page frame number (0 without CAP_SYS_ADMIN).
            let pfn = e & ((1 << 55) - 1);
            if e >> 63 == 0 || pfn == 0 {
                return Err(IntelError::Pagemap(
                    "no page frame numbers in /proc/self/pagemap: run as root (CAP_SYS_ADMIN)"
                        .into(),
                ));
            }
            out.push(pfn * PAGE_4K as u64 + (va % PAGE_4K) as u64);
        }
        Ok(out)
    }

    fn physical(&self) -> bool {
        true
    }
}

/// IOVA = virtual address: for an IOMMU mapping made with that convention, and for the model.
#[derive(Debug, Default, Clone, Copy)]
pub struct Identity;

impl IovaMap for Identity {
    fn map(&self, virt: NonNull<u8>, len: usize, page: usize) -> Result<Vec<u64>, IntelError> {
        Ok((0..len)
            .step_by(page)
            .map(|o| virt.as_ptr() as u64 + o as u64)
            .collect())
    }

    fn physical(&self) -> bool {
        false
    }
}

/// Touches every page of the range (so it exists) and locks it in memory.
pub(crate) fn pin(virt: NonNull<u8>, len: usize) -> Result<(), IntelError> {
    for off in (0..len).step_by(PAGE_4K) {
        let p = virt.as_ptr().wrapping_add(off);
        // Why this is sound: callers pass a range that is mapped readable (DmaMem's own mapping, or a
        // pool region whose owner guarantees the mapping). Only a read: a peer may be writing
        // the same bytes. (For private writable memory mlock below faults pages in for write.)
        // SAFETY: the invariants stated just above hold here.
        unsafe { p.read_volatile() };
    }
    // SAFETY: mlock only changes the residency of the given range, which is mapped.
    let r = unsafe { libc::mlock(virt.as_ptr().cast(), len) };
    if r != 0 {
        return Err(IntelError::Pin(std::io::Error::last_os_error().to_string()));
    }
    Ok(())
}

/// Where DMA memory should come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DmaSource {
    /// Hugepages when the kernel has some free, else pinned 4 KiB pages.
    #[default]
    Auto,
    /// Hugepages only (an error when none are free).
    Hugepages,
    /// Pinned 4 KiB pages only.
    SmallPages,
}

/// A block of pinned memory the device can DMA to and from.
#[derive(Debug)]
pub struct DmaMem {
    virt: NonNull<u8>,
    len: usize,
    page: usize,
    iova: Vec<u64>,
}

// SAFETY: DmaMem owns its mapping; it hands out raw pointers only, and the port using it is
// driven from one thread at a time.
unsafe impl Send for DmaMem {}
// SAFETY: `&DmaMem` gives the address, length and device addresses, never the bytes (those
// are reached through `grant_pool::Memory` handles over it, copies and atomics only).
unsafe impl Sync for DmaMem {}

impl DmaMem {
    /// Allocates at least `len` bytes from `source` and maps them for the device with `map`.
    pub fn alloc(len: usize, source: DmaSource, map: &dyn IovaMap) -> Result<DmaMem, IntelError> {
        if source != DmaSource::SmallPages {
            match Self::mmap(len.next_multiple_of(PAGE_2M), true) {
                Ok((virt, l)) => return Self::finish(virt, l, PAGE_2M, map),
                Err(e) if source == DmaSource::Hugepages => {
                    return Err(IntelError::NoDmaMemory(format!(
                        "{} bytes of hugepages: {e} (reserve some in /proc/sys/vm/nr_hugepages)",
                        len.next_multiple_of(PAGE_2M)
                    )));
                }
                Err(_) => {}
            }
        }
        let (virt, l) = Self::mmap(len.next_multiple_of(PAGE_4K), false)
            .map_err(|e| IntelError::NoDmaMemory(format!("{} bytes of 4 KiB pages: {e}", len)))?;
        Self::finish(virt, l, PAGE_4K, map)
    }

    fn finish(
        virt: NonNull<u8>,
        len: usize,
        page: usize,
        map: &dyn IovaMap,
    ) -> Result<DmaMem, IntelError> {
        let mut mem = DmaMem {
            virt,
            len,
            page,
            iova: Vec::new(),
        };
        // On error `mem` is dropped and unmapped.
        mem.iova = map.map(virt, len, page)?;
        Ok(mem)
    }

    fn mmap(len: usize, huge: bool) -> std::io::Result<(NonNull<u8>, usize)> {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if huge {
            flags |= libc::MAP_HUGETLB;
        }
        // SAFETY: a fresh anonymous mapping; the result is checked below.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let virt = NonNull::new(p.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok((virt, len))
    }

    /// Base virtual address.
    pub fn virt(&self) -> NonNull<u8> {
        self.virt
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the block is empty (never: allocations are at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The page size backing this block (4 KiB or 2 MiB).
    pub fn page(&self) -> usize {
        self.page
    }

    /// The device address of byte `off`.
    pub fn iova(&self, off: usize) -> u64 {
        self.iova[off / self.page] + (off % self.page) as u64
    }

    /// Whether `off..off+len` is contiguous for the device (within one page, or identity).
    pub fn contiguous(&self, off: usize, len: usize) -> bool {
        if len == 0 {
            return true;
        }
        let first = off / self.page;
        let last = (off + len - 1) / self.page;
        (first..last).all(|p| self.iova[p + 1] == self.iova[p] + self.page as u64)
    }
}

impl Drop for DmaMem {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping created in `mmap`; the port stops the device's DMA
        // before it drops its memory.
        unsafe { libc::munmap(self.virt.as_ptr().cast(), self.len) };
    }
}

//! Register access: the [`Regs`] trait and [`Bar`], a mapped BAR0 read and written with
//! volatile 32-bit accesses.
//!
//! Every register access of the driver goes through [`Regs`], so that a register-level model
//! ([`super::model::Model`]) can stand in for the device in tests and benchmarks.

use core::ptr::NonNull;
use std::time::Duration;

/// 32-bit register access to one device, by byte offset into BAR0.
pub trait Regs: Send {
    /// Reads the register at byte offset `reg`.
    fn read(&self, reg: u32) -> u32;

    /// Writes `val` to the register at byte offset `reg`.
    fn write(&self, reg: u32, val: u32);

    /// Waits about `us` microseconds (a model advances its clock instead of sleeping).
    fn delay_us(&self, us: u64) {
        std::thread::sleep(Duration::from_micros(us));
    }

    /// Sets `bits` in `reg` (read-modify-write).
    fn set_bits(&self, reg: u32, bits: u32) {
        self.write(reg, self.read(reg) | bits);
    }

    /// Clears `bits` in `reg` (read-modify-write).
    fn clear_bits(&self, reg: u32, bits: u32) {
        self.write(reg, self.read(reg) & !bits);
    }

    /// Polls `reg` every 100 µs until `(value & mask) == want`, for at most `timeout_ms`.
    /// Returns the last value read on timeout.
    fn wait(&self, reg: u32, mask: u32, want: u32, timeout_ms: u64) -> Result<(), u32> {
        let rounds = timeout_ms.saturating_mul(10).max(1);
        let mut v = self.read(reg);
        for _ in 0..rounds {
            if v & mask == want {
                return Ok(());
            }
            self.delay_us(100);
            v = self.read(reg);
        }
        if v & mask == want { Ok(()) } else { Err(v) }
    }
}

/// A mapped BAR0: device registers in uncached memory, accessed only with volatile loads
/// and stores of aligned 32-bit words.
#[derive(Debug)]
pub struct Bar {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is process-wide; register accesses are volatile loads/stores that the
// device serialises. The driver uses one Bar from one thread at a time (it is owned by the
// port, which is Send but not Sync).
unsafe impl Send for Bar {}

impl Bar {
    /// Maps `len` bytes of `fd` at `offset` (a sysfs `resource0` file or a VFIO device
    /// region) read-write and shared.
    pub fn map(fd: std::os::fd::BorrowedFd<'_>, offset: u64, len: usize) -> std::io::Result<Bar> {
        use std::os::fd::AsRawFd;
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "BAR of size 0",
            ));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "BAR offset"))?;
        // SAFETY: mmap with a null hint creates a new mapping and touches no existing memory;
        // the result is checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Bar { base, len })
    }

    /// Size of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a mapped BAR).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn ptr(&self, reg: u32) -> *mut u32 {
        let off = reg as usize;
        // A register offset outside the BAR or unaligned is a driver bug (offsets are
        // constants); refuse it loudly rather than touch memory past the mapping.
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "register {reg:#x} outside BAR0"
        );
        self.base.as_ptr().wrapping_add(off).cast::<u32>()
    }
}

impl Regs for Bar {
    #[inline(always)]
    fn read(&self, reg: u32) -> u32 {
        let p = self.ptr(reg);
        // SAFETY: `p` is inside the live mapping and 4-byte aligned (checked in `ptr`); MMIO
        // must be read with exactly one volatile 32-bit load.
        unsafe { p.read_volatile() }
    }

    #[inline(always)]
    fn write(&self, reg: u32, val: u32) {
        let p = self.ptr(reg);
        // SAFETY: as in `read`: in bounds, aligned, one volatile 32-bit store.
        unsafe { p.write_volatile(val) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping created in `map`; nothing else refers to
        // it once the Bar is dropped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

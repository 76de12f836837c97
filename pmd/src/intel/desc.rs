//! The advanced receive and transmit descriptors that the 82576 and the 82599/X540/X550
//! share (82576 datasheet §7.1.5 and §7.2.2.3; 82599 datasheet §7.1.6 and §7.2.3.2).
//!
//! A descriptor is 16 bytes in DMA memory that the device reads and writes back. The driver
//! touches it only with volatile 64-bit loads and stores: the device may write it at any
//! time, so no reference to it is ever formed.

/// Bytes per descriptor.
pub const DESC_SIZE: usize = 16;

/// Receive write-back, upper quadword, bits 31:0 (STATUS/ERROR): descriptor done.
pub const RXD_STAT_DD: u64 = 1 << 0;
/// Receive write-back: end of packet (the frame ends in this descriptor's buffer).
pub const RXD_STAT_EOP: u64 = 1 << 1;
/// Receive write-back error bits the driver drops a frame for (82599 §7.1.6.2 RXE, 82576
/// §7.1.5.2 RXE): bit 29 (RXE, CRC or symbol error).
pub const RXD_ERR_RXE: u64 = 1 << 29;
/// Receive write-back: PKT_LEN is bits 47:32 of the upper quadword.
pub const RXD_LEN_SHIFT: u32 = 32;

/// Transmit data descriptor (advanced), CMD_TYPE_LEN: DTYP = 0011b (data).
pub const TXD_DTYP_DATA: u32 = 0b0011 << 20;
/// DCMD.EOP: end of packet.
pub const TXD_DCMD_EOP: u32 = 1 << 24;
/// DCMD.IFCS: insert the frame check sequence.
pub const TXD_DCMD_IFCS: u32 = 1 << 25;
/// DCMD.RS: report status (the device writes DD back when done).
pub const TXD_DCMD_RS: u32 = 1 << 27;
/// DCMD.DEXT: descriptor extension (advanced format).
pub const TXD_DCMD_DEXT: u32 = 1 << 29;
/// OLINFO_STATUS.PAYLEN starts at bit 14.
pub const TXD_PAYLEN_SHIFT: u32 = 14;
/// Transmit write-back: DD in OLINFO_STATUS bit 0, i.e. bit 32 of the upper quadword.
pub const TXD_STAT_DD: u64 = 1 << 32;

/// The command word of a one-buffer data descriptor carrying a whole frame of `len` bytes.
#[inline(always)]
pub const fn tx_cmd(len: u32) -> u64 {
    let cmd = TXD_DTYP_DATA | TXD_DCMD_EOP | TXD_DCMD_IFCS | TXD_DCMD_RS | TXD_DCMD_DEXT | len;
    (cmd as u64) | ((len as u64) << (32 + TXD_PAYLEN_SHIFT))
}

/// A descriptor ring's memory: `count` descriptors at `base` (virtual) / `iova` (device).
#[derive(Debug, Clone, Copy)]
pub struct DescMem {
    base: *mut u64,
    count: usize,
    mask: usize,
    iova: u64,
}

// SAFETY: DescMem is a pointer into DMA memory owned by the port; all accesses are volatile
// and the port that owns the ring is used from one thread at a time.
unsafe impl Send for DescMem {}

impl DescMem {
    /// A ring of `count` descriptors at `base`.
    ///
    /// # Safety
    /// `count` must be a power of two; `base` must be 16-byte aligned and point to
    /// `count * 16` bytes of DMA memory that stay
    /// mapped for as long as this value is used, and `iova` must be the device's address of
    /// the same bytes (contiguous for the device).
    pub unsafe fn new(base: *mut u8, count: usize, iova: u64) -> Self {
        debug_assert!(count.is_power_of_two());
        Self {
            base: base.cast(),
            count,
            mask: count - 1,
            iova,
        }
    }

    /// Number of descriptors.
    #[inline(always)]
    pub fn count(&self) -> usize {
        self.count
    }

    /// The device address of descriptor 0.
    pub fn iova(&self) -> u64 {
        self.iova
    }

    /// Length of the ring in bytes (RDLEN/TDLEN).
    pub fn bytes(&self) -> usize {
        self.count * DESC_SIZE
    }

    /// Reads quadword `q` (0 or 1) of descriptor `i`.
    #[inline(always)]
    pub fn read(&self, i: usize, q: usize) -> u64 {
        debug_assert!(i < self.count && q < 2);
        let i = i & self.mask;
        // SAFETY: i < count (masked above, count is a power of two), q is 0 or 1, so the quadword lies in the ring's
        // memory (constructor contract); volatile because the device writes it.
        unsafe { self.base.add(i * 2 + (q & 1)).read_volatile() }
    }

    /// Writes quadword `q` (0 or 1) of descriptor `i`.
    #[inline(always)]
    pub fn write(&self, i: usize, q: usize, v: u64) {
        debug_assert!(i < self.count && q < 2);
        let i = i & self.mask;
        // SAFETY: as in `read`.
        unsafe { self.base.add(i * 2 + (q & 1)).write_volatile(v) }
    }
}

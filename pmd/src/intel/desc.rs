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

/// Transmit context descriptor (advanced), TYPE_TUCMD_MLHL: DTYP = 0010b (context).
pub const TXD_DTYP_CTXT: u32 = 0b0010 << 20;
/// DCMD.TSE: TCP segmentation (the data descriptors of a frame the device cuts).
pub const TXD_DCMD_TSE: u32 = 1 << 31;
/// OLINFO_STATUS.POPTS.IXSM: insert the IPv4 header checksum.
pub const TXD_POPTS_IXSM: u32 = 1 << 8;
/// OLINFO_STATUS.POPTS.TXSM: insert the TCP/UDP checksum.
pub const TXD_POPTS_TXSM: u32 = 1 << 9;
/// Context VLAN_MACIP_LENS: MACLEN (bytes before the IP header) starts at bit 9; IPLEN is
/// bits 8:0.
pub const TXC_MACLEN_SHIFT: u32 = 9;
/// Context TUCMD.IPV4: the packet is IPv4 (its header checksum and, with TSE, its total
/// length and identification are rewritten per segment).
pub const TXC_TUCMD_IPV4: u32 = 1 << 10;
/// Context TUCMD.L4T = TCP (UDP is 00).
pub const TXC_TUCMD_L4T_TCP: u32 = 1 << 11;
/// Context MSS_L4LEN_IDX: L4LEN (TCP header bytes) starts at bit 8.
pub const TXC_L4LEN_SHIFT: u32 = 8;
/// Context MSS_L4LEN_IDX: MSS starts at bit 16.
pub const TXC_MSS_SHIFT: u32 = 16;

/// Receive write-back status: IPv4 header checksum checked (IPCS).
pub const RXD_STAT_IPCS: u64 = 1 << 6;
/// Receive write-back status: TCP checksum checked (TCPCS / L4I).
pub const RXD_STAT_TCPCS: u64 = 1 << 5;
/// Receive write-back status: UDP checksum checked (UDPCS).
pub const RXD_STAT_UDPCS: u64 = 1 << 4;

/// What the device is to do with a frame beyond sending its bytes: the advanced context
/// descriptor written before its data descriptors (82576 §7.2.2.2.1 / 82599 §7.2.3.2.3),
/// context index 0 (the data descriptors' IDX is 0 too; the 82599's CC bit is needed only
/// with its transmit switch, which this driver leaves off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxContext {
    /// Bytes before the IP header.
    pub mac_len: u16,
    /// IP header bytes.
    pub ip_len: u16,
    /// Whether the IP header is IPv4.
    pub ipv4: bool,
    /// Whether L4 is TCP (else UDP).
    pub tcp: bool,
    /// TCP header bytes (with `mss`).
    pub l4_len: u16,
    /// Payload bytes per segment, 0 for checksum insertion only.
    pub mss: u16,
}

impl TxContext {
    /// The context descriptor's two quadwords.
    #[inline]
    pub const fn quadwords(&self) -> (u64, u64) {
        let lens =
            (self.ip_len as u32 & 0x1ff) | ((self.mac_len as u32 & 0x7f) << TXC_MACLEN_SHIFT);
        let mut tucmd = TXD_DTYP_CTXT | TXD_DCMD_DEXT;
        if self.ipv4 {
            tucmd |= TXC_TUCMD_IPV4;
        }
        if self.tcp {
            tucmd |= TXC_TUCMD_L4T_TCP;
        }
        let mss = if self.mss != 0 {
            ((self.mss as u32) << TXC_MSS_SHIFT) | ((self.l4_len as u32 & 0xff) << TXC_L4LEN_SHIFT)
        } else {
            0
        };
        (lens as u64, tucmd as u64 | ((mss as u64) << 32))
    }

    /// Header bytes the device repeats in every segment (TSO).
    pub const fn header_len(&self) -> usize {
        self.mac_len as usize + self.ip_len as usize + self.l4_len as usize
    }
}

/// The command word of a data descriptor carrying `len` bytes of a frame of `total` bytes
/// sent with context `ctx` (`None`: no offload). Only the frame's `first` descriptor carries
/// the offload options and PAYLEN; its `last` ends the frame (EOP) and asks for status (RS).
#[inline]
pub fn tx_cmd_offload(
    len: u32,
    total: u32,
    ctx: Option<&TxContext>,
    first: bool,
    last: bool,
) -> u64 {
    let mut cmd = TXD_DTYP_DATA | TXD_DCMD_IFCS | TXD_DCMD_DEXT | len;
    if last {
        cmd |= TXD_DCMD_EOP | TXD_DCMD_RS;
    }
    let tso = ctx.is_some_and(|c| c.mss != 0);
    if tso {
        cmd |= TXD_DCMD_TSE;
    }
    let mut olinfo = 0;
    if first {
        // PAYLEN: the whole frame, or with TSE the bytes after the headers.
        let mut paylen = total;
        if let Some(c) = ctx {
            olinfo |= TXD_POPTS_TXSM;
            if tso {
                paylen = total.saturating_sub(c.header_len() as u32);
                if c.ipv4 {
                    olinfo |= TXD_POPTS_IXSM;
                }
            }
        }
        olinfo |= paylen << TXD_PAYLEN_SHIFT;
    }
    (cmd as u64) | ((olinfo as u64) << 32)
}

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

// Why this is sound: DescMem is a pointer into DMA memory owned by the port; all accesses
// are volatile and the port that owns the ring is used from one thread at a time.
// SAFETY: the invariants stated just above hold here.
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
        // Why this is sound: i < count (masked above, count is a power of two), q is 0 or 1,
        // so the quadword lies in the ring's memory (constructor contract); volatile because
        // the device writes it.
        // SAFETY: the invariants stated just above hold here.
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

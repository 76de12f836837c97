//! The `intel` port: a register-level poll-mode driver for Intel's igb (82576) and ixgbe
//! (82599/X540/X550) NICs, after the datasheets' initialisation chapters.
//!
//! * **Device access** ([`pci`], [`vfio`]): by PCI address; BAR0 through VFIO (IOMMU group
//!   and container; DMA mapped with `VFIO_IOMMU_MAP_DMA`, or VFIO's no-IOMMU mode) or
//!   through sysfs `resource0` when there is no IOMMU; bus mastering turned on in the command
//!   register. A device bound to a kernel driver is refused unless
//!   [`IntelConfig::unbind_kernel_driver`] is set.
//! * **DMA memory** ([`dma`]): hugepages when the kernel has some free, else pinned 4 KiB
//!   pages; device addresses from `/proc/self/pagemap`. Descriptor rings never straddle a
//!   page that is not contiguous for the device.
//! * **One ring core** ([`ring`]) over the advanced descriptors both families share: receive
//!   with refill in the same pass and one tail write per burst; transmit with one tail write
//!   per burst and completions cleaned in batches.
//! * **Two register maps** ([`igb`], [`ixgbe`]) with their init sequences, each step
//!   commented with the datasheet section it follows.
//! * **A register-level model** ([`model`]) of the registers the driver touches, standing in
//!   for the device in tests and in the callgrind benchmark. ixgbe has only ever run against
//!   this model; igb runs for real on QEMU's `igb` device (tests/qemu-igb).
//!
//! Transmit DMAs straight from other pools of trusted memory once they are registered with
//! [`IntelPort::register_tx_pool`]: each buffer's device address is computed once, at
//! registration, after the pool's pages are pinned. Without an IOMMU that is sound only
//! because the pages are pinned for as long as they are registered (see [`dma`]). An app's
//! pool is never granted ([`crate::Port::grant_tx_pool`] refuses): the device would read
//! the frame's header, and the app's memory, long after the switch checked them, so the
//! switch copies app frames once into the port's own buffers instead. Granting them would
//! take VFIO with a real IOMMU (the app's pages mapped, and so held, by the IOMMU) and
//! header split on transmit (a first descriptor for the checked header, in server memory).
//!
//! What this module must never do: let the device DMA to memory that is not pinned and
//! registered; panic on anything the device or a peer wrote; allocate on the burst path.

pub mod desc;
pub mod dma;
pub mod igb;
pub mod ixgbe;
pub mod model;
pub mod pci;
pub mod regs;
pub mod ring;
pub mod vfio;

mod port;

pub use port::IntelPort;

use grant_pool::PoolId;

use self::desc::DescMem;
use self::dma::DmaSource;

/// Everything that can go wrong opening or running an Intel port.
#[derive(Debug, thiserror::Error)]
pub enum IntelError {
    /// No device at that address.
    #[error("PCI device {0} not found under /sys/bus/pci/devices (list devices with `lspci -D`)")]
    NotFound(String),
    /// Not a device this driver knows.
    #[error(
        "PCI device {pci} is {vendor:04x}:{device:04x}, not a supported Intel 82576 (igb) or 82599/X540/X550 (ixgbe)"
    )]
    Unsupported {
        /// PCI address.
        pci: String,
        /// Vendor id.
        vendor: u16,
        /// Device id.
        device: u16,
    },
    /// A kernel driver owns the device.
    #[error(
        "PCI device {pci} is bound to the kernel driver `{driver}`; unbind it (echo {pci} > /sys/bus/pci/devices/{pci}/driver/unbind) or set unbind_kernel_driver = true"
    )]
    BoundToDriver {
        /// PCI address.
        pci: String,
        /// The driver's name.
        driver: String,
    },
    /// The process may not touch the device or read physical addresses.
    #[error("no permission: {0}")]
    NoPermission(String),
    /// No DMA memory could be had.
    #[error("no DMA memory: {0}")]
    NoDmaMemory(String),
    /// Physical addresses could not be read.
    #[error("cannot translate DMA memory through /proc/self/pagemap: {0}")]
    Pagemap(String),
    /// Pages could not be locked.
    #[error("cannot pin DMA memory with mlock: {0} (raise RLIMIT_MEMLOCK or run as root)")]
    Pin(String),
    /// A register never reached the value the datasheet says it will.
    #[error("the device did not {what}: register {reg:#07x} reads {value:#010x}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// Register offset.
        reg: u32,
        /// Its last value.
        value: u32,
    },
    /// A PHY access failed.
    #[error("PHY access failed (MDIC = {0:#010x})")]
    Phy(u32),
    /// The configuration cannot work.
    #[error("invalid Intel port configuration: {0}")]
    Config(String),
    /// A pool cannot be registered or unregistered for transmit.
    #[error("transmit pool {pool}: {why}")]
    TxPool {
        /// The pool.
        pool: u8,
        /// Why.
        why: String,
    },
    /// A VFIO step failed.
    #[error("VFIO: {0}")]
    Vfio(String),
    /// Any other I/O error.
    #[error("I/O error: {0}")]
    Io(String),
}

pub(crate) fn timeout(what: &'static str, reg: u32, value: u32) -> IntelError {
    IntelError::Timeout { what, reg, value }
}

/// The two register maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// 82576.
    Igb,
    /// 82599, X540, X550.
    Ixgbe,
}

impl Family {
    /// The family of an Intel device id, if this driver supports it.
    pub fn of(vendor: u16, device: u16) -> Option<Family> {
        if vendor != pci::VENDOR_INTEL {
            return None;
        }
        match device {
            // 82576 copper, fiber, serdes, quad copper, NS, ET2.
            0x10C9 | 0x10E6 | 0x10E7 | 0x10E8 | 0x150A | 0x150D | 0x1518 | 0x1526 => {
                Some(Family::Igb)
            }
            // 82599 (KX4, CX4, SFP, combined backplane, T3 LOM, SFP+ variants), X540, X550.
            0x10F7 | 0x10F8 | 0x10F9 | 0x10FB | 0x10FC | 0x1507 | 0x1514 | 0x1517 | 0x151C
            | 0x1529 | 0x152A | 0x154D | 0x154F | 0x1557 | 0x1558 | 0x1528 | 0x1560 | 0x1563
            | 0x15D1 => Some(Family::Ixgbe),
            _ => None,
        }
    }
}

/// How the driver reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// VFIO when the device is bound to `vfio-pci`, else sysfs `resource0`.
    #[default]
    Auto,
    /// sysfs `resource0` and physical DMA addresses (no IOMMU).
    Sysfs,
    /// VFIO: the IOMMU maps DMA (or VFIO's no-IOMMU mode).
    Vfio,
}

/// How an Intel port is opened.
#[derive(Debug, Clone)]
pub struct IntelConfig {
    /// PCI address, `0000:00:03.0` or `00:03.0`.
    pub pci: String,
    /// Pool id of the port's own buffers (receive buffers; must not clash with other pools).
    pub pool: PoolId,
    /// Receive and transmit queues (RSS spreads received flows over them).
    pub queues: u16,
    /// Descriptors per ring: a power of two from 64 to 4096 (at most 256 without hugepages,
    /// so a ring fits one 4 KiB page).
    pub ring_size: u16,
    /// Buffers in the port's own pool (2 KiB each); at least `queues * ring_size` plus room
    /// for frames the caller holds.
    pub bufs: u32,
    /// Where DMA memory comes from.
    pub dma: DmaSource,
    /// How the device is reached.
    pub access: Access,
    /// Unbind a kernel driver that owns the device instead of refusing it.
    pub unbind_kernel_driver: bool,
    /// Receive every frame (unicast and multicast promiscuous). On by default: the port is
    /// a switch port, and the stations behind it (app domains) have MACs of their own.
    pub promiscuous: bool,
    /// How long `open` waits for the link to come up (0: do not wait).
    pub link_timeout_ms: u64,
    /// Pool id of a pool of 64 KiB transmit buffers (another id than `pool`): with it the
    /// port takes TCP frames of up to 64 KiB whole and the device cuts them into segments
    /// (TSO); without it a switch cuts them first. Off by default.
    pub large_pool: Option<PoolId>,
    /// Buffers in the large transmit pool: at least `ring_size + 16`.
    pub large_bufs: u32,
}

impl Default for IntelConfig {
    fn default() -> Self {
        Self {
            pci: String::new(),
            pool: PoolId(250),
            queues: 1,
            ring_size: 256,
            bufs: 2048,
            dma: DmaSource::Auto,
            access: Access::Auto,
            unbind_kernel_driver: false,
            promiscuous: true,
            link_timeout_ms: 5_000,
            large_pool: None,
            large_bufs: 320,
        }
    }
}

/// What the init sequences need from the port: its rings and receive settings.
#[derive(Debug)]
pub struct Setup<'a> {
    /// Receive rings, one per queue.
    pub rx: &'a [DescMem],
    /// Transmit rings, one per queue.
    pub tx: &'a [DescMem],
    /// Receive tail after the rings were filled.
    pub rx_tail: u32,
    /// Receive buffer size in bytes (a multiple of 1024).
    pub buf_size: u32,
    /// Promiscuous mode.
    pub promisc: bool,
    /// The longest frame to receive, CRC included (0: the standard 1522 bytes). Longer
    /// ones span several buffers.
    pub max_frame: u32,
}

/// The longest frame received when the port has a large pool: an MTU of 9000 bytes behind
/// an Ethernet header, a VLAN tag and the CRC.
pub const MAX_JUMBO_FRAME: u32 = 9000 + 14 + 4 + 4;

/// The device's own counters (accumulated: the registers clear on read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwStats {
    /// Good packets received (GPRC).
    pub rx_packets: u64,
    /// Good octets received (GORC).
    pub rx_bytes: u64,
    /// Good packets transmitted (GPTC).
    pub tx_packets: u64,
    /// Good octets transmitted (GOTC).
    pub tx_bytes: u64,
    /// Packets missed for lack of packet-buffer space (MPC).
    pub rx_missed: u64,
    /// Packets dropped for lack of a receive descriptor (RNBC, igb).
    pub rx_no_desc: u64,
    /// CRC, length and symbol errors.
    pub rx_errors: u64,
}

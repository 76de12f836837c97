//! [`IntelPort`]: the [`Port`] implementation over one device.

use core::cell::Cell;
use core::ptr::NonNull;

use std::sync::Arc;

use grant_pool::{BufHandle, BufIdx, Memory, Pool, PoolId, PoolLayout, PoolSet};

use super::desc::TxContext;
use super::desc::{DESC_SIZE, DescMem};
use super::dma::{DmaMem, IovaMap, Pagemap, pin};
use super::pci::PciDevice;
use super::regs::{Bar, Regs};
use super::ring::{FreeBufs, Jumbo, RxQueue, TxAddr, TxQueue};
use super::vfio::Vfio;
use super::{Access, Family, HwStats, IntelConfig, IntelError, Setup, igb, ixgbe};
use crate::{Frame, LinkState, Mac, Port, PortStats, TxOffloads};
use offload::FrameMeta;

/// The kernel driver that hands a device to user space through VFIO.
const VFIO_DRIVER: &str = "vfio-pci";

/// Bytes per receive buffer.
pub const BUF_SIZE: usize = 2048;

/// Bytes per buffer of the large transmit pool ([`IntelConfig::large_pool`]): a TCP frame of
/// up to 64 KiB that the device cuts into segments itself (TSO).
pub const LARGE_BUF_SIZE: usize = 64 * 1024;

/// Device addresses of one pool's memory, for transmit.
#[derive(Debug, Default)]
struct TxMap {
    /// The device address of each buffer's first byte.
    iova: Box<[u64]>,
    /// Bytes from the start of any buffer that are contiguous for the device (at most the
    /// buffer size).
    first_run: u32,
    /// The device address of each `1 << shift`-byte page of the pool's memory, in order.
    pages: Box<[u64]>,
    shift: u32,
    /// Whether every page follows the one before for the device (an IOMMU, hugepages that
    /// happen to be adjacent, the model): a buffer is then one run.
    contiguous: bool,
    buf_size: u32,
    count: u32,
    /// The pinned range of a registered (foreign) pool, unpinned on unregistration.
    pinned: Option<(usize, usize)>,
    /// The pool's memory, kept mapped while the device may read it, and through which the
    /// headers of a frame with an offload are read and got ready for the device.
    mem: Option<Memory>,
}

impl TxMap {
    fn new(pages: Vec<u64>, page: usize, layout: PoolLayout, mem: Memory) -> Self {
        let contiguous = pages.windows(2).all(|w| w[1] == w[0] + page as u64);
        let bs = layout.buf_size;
        let iova = (0..layout.count)
            .map(|i| {
                pages
                    .get(i * bs / page)
                    .map_or(0, |p| p + (i * bs % page) as u64)
            })
            .collect();
        // The shortest run from a buffer's start to the end of its page (or its own end).
        let first_run = if contiguous {
            bs
        } else {
            (0..layout.count)
                .map(|i| (page - i * bs % page).min(bs))
                .min()
                .unwrap_or(bs)
        };
        Self {
            iova,
            first_run: first_run as u32,
            pages: pages.into_boxed_slice(),
            shift: page.trailing_zeros(),
            contiguous,
            buf_size: layout.buf_size as u32,
            count: layout.count as u32,
            pinned: None,
            mem: Some(mem),
        }
    }
}

/// Every pool the port may transmit from, by pool id (a `u8`, so no lookup is out of range).
#[derive(Debug)]
struct TxTable(Box<[TxMap; 256]>);

impl TxAddr for TxTable {
    #[inline(always)]
    fn first(&self, f: &Frame) -> Option<u64> {
        let m = &self.0[usize::from(f.buf.pool().0)];
        // 1 ..= first_run (at most buf_size) in one comparison.
        if u32::from(f.len).wrapping_sub(1) >= m.first_run {
            return None;
        }
        m.iova.get(f.buf.idx().0 as usize).copied()
    }

    fn piece(&self, f: &Frame, off: u32) -> Option<(u64, u32)> {
        let m = &self.0[usize::from(f.buf.pool().0)];
        let idx = f.buf.idx().0;
        // 1 ..= buf_size in one comparison.
        if u32::from(f.len).wrapping_sub(1) >= m.buf_size || idx >= m.count || off >= m.buf_size {
            return None;
        }
        let at = idx as usize * m.buf_size as usize + off as usize;
        let in_page = at & ((1usize << m.shift) - 1);
        let page = *m.pages.get(at >> m.shift)?;
        let rest = m.buf_size - off;
        let run = if m.contiguous {
            rest
        } else {
            rest.min(((1usize << m.shift) - in_page) as u32)
        };
        Some((page + in_page as u64, run))
    }

    fn offload(&self, f: &Frame) -> Option<TxContext> {
        let m = &self.0[usize::from(f.buf.pool().0)];
        let at = f.buf.idx().0 as usize * m.buf_size as usize;
        let mem = m.mem.as_ref()?.region();
        let len = usize::from(f.len);
        let mut head = [0u8; TX_HEAD];
        let head = &mut head[..len.min(TX_HEAD)];
        mem.read(at, head).ok()?;
        let (ctx, fix) = tx_context(head, len, FrameMeta::from_bits(f.meta))?;
        for (off, v) in fix.into_iter().flatten() {
            mem.write(at + off, &v.to_be_bytes()).ok()?;
        }
        Some(ctx)
    }
}

/// What the receive queues need to copy a frame spanning several receive buffers into a
/// large buffer, when the port has a large pool.
#[inline(always)]
fn jumbo<'a>(pools: &'a [Pool], large: &'a mut Option<FreeBufs>) -> Option<Jumbo<'a>> {
    let (rx, lp) = (pools.first()?, pools.get(1)?);
    Some(Jumbo {
        rx: rx.region(),
        rx_size: rx.layout().buf_size,
        large: lp.region(),
        large_size: lp.layout().buf_size,
        free: large.as_mut()?,
    })
}

/// A 16-bit header field to set before the device reads the frame: (offset, value).
type HeaderFix = Option<(usize, u16)>;

/// Header bytes read to set up an offload: Ethernet with a VLAN tag, IPv6 or IPv4 with
/// options, TCP with options.
const TX_HEAD: usize = 18 + 60 + 60;

/// The context a frame with offload metadata `meta` (partial checksum, maybe a segment
/// size) is sent with, and the header fields to rewrite first, as (offset, value) pairs: for
/// TSO the device adds each segment's length to the TCP checksum's pseudo-header sum itself
/// (so the field must hold the sum without a length) and inserts each IPv4 header checksum
/// (82576 §7.2.4.4, 82599 §7.2.4.5). Both values depend only on the headers, so setting
/// them twice (a frame offered again after a full ring) changes nothing. `None` for a frame
/// the device cannot complete or cut.
fn tx_context(head: &[u8], len: usize, meta: FrameMeta) -> Option<(TxContext, [HeaderFix; 2])> {
    let l4 = offload::csum::L4::parse(head, len)?;
    let vlan = matches!(head.get(12..14)?, [0x81, 0x00] | [0x88, 0xa8]);
    let l3 = if vlan { 18 } else { 14 };
    let ipv4 = head.get(l3)? >> 4 == 4;
    let mut ctx = TxContext {
        mac_len: l3 as u16,
        ip_len: (l4.start - l3) as u16,
        ipv4,
        tcp: l4.proto == 6,
        l4_len: 0,
        mss: 0,
    };
    let gso = meta.gso_size();
    if gso == 0 {
        return Some((ctx, [None, None]));
    }
    // TSO: TCP only, headers the device repeats within the frame, segments that make sense.
    let thl = usize::from(head.get(l4.start + 12)? >> 4) * 4;
    if !ctx.tcp || thl < 20 || l4.start + thl >= len || usize::from(gso) > len {
        return None;
    }
    ctx.l4_len = thl as u16;
    ctx.mss = gso;
    let no_len = !offload::csum::fold(l4.pseudo - l4.len as u32);
    let ip_csum = ipv4.then_some((l3 + 10, 0));
    Some((ctx, [Some((l4.csum_at(), no_len)), ip_csum]))
}

/// An Intel NIC driven from user space: rings, buffers and registers of one device.
///
/// The port owns a pool of receive buffers in DMA memory ([`IntelPort::pool`]); the pool (and
/// every clone of it) keeps that memory mapped. It transmits from its own pool and from
/// any pool registered with [`IntelPort::register_tx_pool`], without copying.
pub struct IntelPort<R: Regs> {
    regs: R,
    family: Family,
    name: String,
    mac: Mac,
    rx: Vec<RxQueue>,
    tx: Vec<TxQueue>,
    free: FreeBufs,
    /// The receive pool, then the large transmit pool when there is one.
    pools: Vec<Pool>,
    /// Free buffers of the large transmit pool.
    large: Option<FreeBufs>,
    tx_table: TxTable,
    tx_set: PoolSet,
    map: Box<dyn IovaMap>,
    hw: Cell<HwStats>,
    rx_errors: u64,
    tx_dropped: u64,
    refused: u64,
    ring_mem: DmaMem,
    /// Also kept mapped by the pools' memory handles (the pools and their clones).
    pool_mem: Vec<Arc<DmaMem>>,
    _dev: Option<PciDevice>,
    _vfio: Option<Vfio>,
}

impl IntelPort<Bar> {
    /// Opens the device at `cfg.pci`: checks it is a supported Intel NIC that no kernel
    /// driver owns (or unbinds the driver if the config says so), maps BAR0 through VFIO or
    /// sysfs `resource0` ([`IntelConfig::access`]), turns bus mastering on, allocates DMA
    /// memory (mapped by the IOMMU, or physical addresses from `/proc/self/pagemap`) and runs
    /// the family's init sequence.
    pub fn open(cfg: &IntelConfig) -> Result<Self, IntelError> {
        let dev = PciDevice::find(&cfg.pci)?;
        let family = Family::of(dev.vendor, dev.device).ok_or_else(|| IntelError::Unsupported {
            pci: dev.addr.clone(),
            vendor: dev.vendor,
            device: dev.device,
        })?;
        let vfio = match cfg.access {
            Access::Vfio => true,
            Access::Sysfs => false,
            Access::Auto => dev.driver().as_deref() == Some(VFIO_DRIVER),
        };
        let name = format!("intel:{}", dev.addr);
        let mut port = if vfio {
            if dev.driver().as_deref() != Some(VFIO_DRIVER) {
                dev.claim(cfg.unbind_kernel_driver, None)?;
                dev.bind(VFIO_DRIVER)?;
            }
            let v = Vfio::open(&dev)?;
            let bar = v.map_bar0()?;
            v.enable_bus_master()?;
            let map = v.iova_map()?;
            let mut p = Self::with_regs(bar, family, Box::new(map), cfg, name)?;
            p._vfio = Some(v);
            p
        } else {
            dev.claim(cfg.unbind_kernel_driver, None)?;
            let bar = dev.map_resource0()?;
            dev.enable_bus_master()?;
            Self::with_regs(bar, family, Box::new(Pagemap), cfg, name)?
        };
        port._dev = Some(dev);
        Ok(port)
    }
}

impl<R: Regs> IntelPort<R> {
    /// Brings up a device reached through `regs` whose DMA addresses come from `map`: the
    /// common path of [`IntelPort::open`] and of tests against the register model.
    pub fn with_regs(
        regs: R,
        family: Family,
        map: Box<dyn IovaMap>,
        cfg: &IntelConfig,
        name: String,
    ) -> Result<Self, IntelError> {
        let rs = usize::from(cfg.ring_size);
        if !rs.is_power_of_two() || !(64..=4096).contains(&rs) {
            return Err(IntelError::Config(format!(
                "ring_size {rs} must be a power of two from 64 to 4096"
            )));
        }
        let queues = usize::from(cfg.queues);
        let max_q = match family {
            Family::Igb => igb::MAX_QUEUES,
            Family::Ixgbe => ixgbe::MAX_QUEUES,
        };
        if queues == 0 || queues > max_q {
            return Err(IntelError::Config(format!(
                "queues = {queues}: this device supports 1 to {max_q}"
            )));
        }
        let bufs = cfg.bufs as usize;
        if bufs < queues * rs + 64 {
            return Err(IntelError::Config(format!(
                "bufs = {bufs} is too few for {queues} receive rings of {rs} (need at least {})",
                queues * rs + 64
            )));
        }
        if bufs >= grant_pool::pool::MAX_BUFS {
            return Err(IntelError::Config(format!("bufs = {bufs} is too many")));
        }
        let layout = PoolLayout::new(BUF_SIZE, bufs)
            .map_err(|e| IntelError::Config(format!("bufs = {bufs}: {e}")))?;

        // Descriptor rings: one 4 KiB-aligned slot each, receive rings first.
        let ring_bytes = rs * DESC_SIZE;
        let stride = ring_bytes.next_multiple_of(4096);
        let ring_mem = DmaMem::alloc(stride * 2 * queues, cfg.dma, &*map)?;
        let desc = |k: usize| -> Result<DescMem, IntelError> {
            let off = k * stride;
            if !ring_mem.contiguous(off, ring_bytes) {
                return Err(IntelError::Config(format!(
                    "a ring of {rs} descriptors spans 4 KiB pages that are not contiguous; \
                     use ring_size <= 256 or hugepages"
                )));
            }
            // Why this is sound: off + ring_bytes <= stride * 2 * queues <= ring_mem.len(); the ring is
            // 4 KiB-aligned (hence 16), `rs` is a power of two, and ring_mem lives in the
            // port as long as the queues do. It is contiguous for the device (checked).
            // SAFETY: the invariants stated just above hold here.
            Ok(unsafe { DescMem::new(ring_mem.virt().as_ptr().add(off), rs, ring_mem.iova(off)) })
        };

        let mut table: Box<[TxMap; 256]> = Box::new(core::array::from_fn(|_| TxMap::default()));
        let mut tx_set = PoolSet::EMPTY;
        let mut pools = Vec::new();
        let mut pool_mem = Vec::new();
        let mut free_lists = Vec::new();
        let large = match cfg.large_pool {
            Some(id) if id == cfg.pool => {
                return Err(IntelError::Config(
                    "the large transmit pool needs a pool id of its own".into(),
                ));
            }
            Some(id) => {
                let n = cfg.large_bufs as usize;
                if n < rs + 16 {
                    return Err(IntelError::Config(format!(
                        "large_bufs = {n} is too few for a transmit ring of {rs} (need at least {})",
                        rs + 16
                    )));
                }
                let l = PoolLayout::new(LARGE_BUF_SIZE, n)
                    .map_err(|e| IntelError::Config(format!("large_bufs = {n}: {e}")))?;
                Some((id, l))
            }
            None => None,
        };
        for (id, layout) in core::iter::once((cfg.pool, layout)).chain(large) {
            let mem = Arc::new(DmaMem::alloc(layout.bytes(), cfg.dma, &*map)?);
            // Why this is sound: mem is a live mapping of mem.len() >= layout.bytes()
            // bytes, readable and writable, unmapped only when its last `Arc` (which the
            // handle holds) is dropped.
            let keep = mem.clone();
            // SAFETY: the invariants stated just above hold here.
            let handle = unsafe { Memory::from_raw(mem.virt(), mem.len(), keep) };
            let pool = Pool::new(id, layout, handle.clone())
                .map_err(|e| IntelError::Config(format!("pool: {e}")))?;
            let bs = layout.buf_size;
            let iova: Box<[u64]> = (0..layout.count).map(|i| mem.iova(i * bs)).collect();
            let mut free = FreeBufs::new(&iova);
            for i in (0..layout.count as u32).rev() {
                if let Ok(h) = pool.handle(BufIdx(i)) {
                    free.push(h);
                }
            }
            let pages = (0..mem.len())
                .step_by(mem.page())
                .map(|o| mem.iova(o))
                .collect();
            table[usize::from(id.0)] = TxMap::new(pages, mem.page(), layout, handle);
            tx_set.insert(id);
            pools.push(pool);
            pool_mem.push(mem);
            free_lists.push(free);
        }
        let large = (free_lists.len() > 1).then(|| free_lists.pop()).flatten();
        let Some(mut free) = free_lists.pop() else {
            return Err(IntelError::Config("no receive pool".into()));
        };

        type RegOf = fn(u32) -> u32;
        let (rdt, tdt): (RegOf, RegOf) = match family {
            Family::Igb => (igb::rdt, igb::tdt),
            Family::Ixgbe => (ixgbe::rdt, ixgbe::tdt),
        };
        let mut rx = Vec::with_capacity(queues);
        let mut tx = Vec::with_capacity(queues);
        for q in 0..queues {
            let mut r = RxQueue::new(desc(q)?, rdt(q as u32), BUF_SIZE as u16, family);
            if !r.fill(&mut free) {
                return Err(IntelError::Config(
                    "too few buffers to fill the rings".into(),
                ));
            }
            rx.push(r);
            tx.push(TxQueue::new(desc(queues + q)?, tdt(q as u32)));
        }

        let rx_descs: Vec<DescMem> = rx.iter().map(|r| *r.desc()).collect();
        let tx_descs: Vec<DescMem> = tx.iter().map(|t| *t.desc()).collect();
        let setup = Setup {
            rx: &rx_descs,
            tx: &tx_descs,
            rx_tail: rx[0].initial_tail(),
            buf_size: BUF_SIZE as u32,
            promisc: cfg.promiscuous,
            max_frame: if large.is_some() {
                super::MAX_JUMBO_FRAME
            } else {
                0
            },
        };
        match family {
            Family::Igb => igb::init(&regs, &setup)?,
            Family::Ixgbe => ixgbe::init(&regs, &setup)?,
        }

        let mut port = IntelPort {
            mac: [0; 6],
            regs,
            family,
            name,
            rx,
            tx,
            free,
            pools,
            large,
            tx_table: TxTable(table),
            tx_set,
            map,
            hw: Cell::new(HwStats::default()),
            rx_errors: 0,
            tx_dropped: 0,
            refused: 0,
            ring_mem,
            pool_mem,
            _dev: None,
            _vfio: None,
        };
        port.mac = match family {
            Family::Igb => igb::mac(&port.regs),
            Family::Ixgbe => ixgbe::mac(&port.regs),
        };
        port.wait_link(cfg.link_timeout_ms);
        Ok(port)
    }

    /// Waits up to `ms` milliseconds for the link; returns whether it is up.
    pub fn wait_link(&self, ms: u64) -> bool {
        for _ in 0..ms.div_ceil(10) {
            if matches!(self.link(), LinkState::Up { .. }) {
                return true;
            }
            self.regs.delay_us(10_000);
        }
        matches!(self.link(), LinkState::Up { .. })
    }

    /// The register family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The register access (for diagnostics).
    pub fn regs(&self) -> &R {
        &self.regs
    }

    /// The port's own pool: its receive buffers.
    pub fn pool(&self) -> &Pool {
        &self.pools[0]
    }

    /// The large transmit pool, when the port has one ([`IntelConfig::large_pool`]).
    pub fn large_pool(&self) -> Option<&Pool> {
        self.pools.get(1)
    }

    /// Number of queues.
    pub fn queues(&self) -> usize {
        self.rx.len()
    }

    /// Empty buffers of the port's own pool now free.
    pub fn free_bufs(&self) -> usize {
        self.free.len()
    }

    /// Lets the device transmit straight from `pool`, memory of this process that no other
    /// party can write or unmap (a benchmark's, another port's): pins its pages and records
    /// each buffer's device address once. Never an app's pool ([`Port::grant_tx_pool`]
    /// refuses those).
    ///
    /// Without an IOMMU this is sound only while the pages stay pinned, which they do until
    /// [`IntelPort::unregister_tx_pool`] or the port is dropped; the registration keeps the
    /// pool's memory mapped until then.
    pub fn register_tx_pool(&mut self, pool: &Pool) -> Result<(), IntelError> {
        let id = pool.id();
        let err = |why: String| IntelError::TxPool { pool: id.0, why };
        if self.tx_set.contains(id) {
            return Err(err("already registered (or the port's own pool)".into()));
        }
        let layout = pool.layout();
        if layout.count >= grant_pool::pool::MAX_BUFS {
            return Err(err(
                "a pool of 2^24 buffers is more than a queue tracks".into()
            ));
        }
        let region = pool.region();
        let len = (layout.buf_size * layout.count).next_multiple_of(4096);
        if region.len() < len || !(region.as_ptr() as usize).is_multiple_of(4096) {
            return Err(err("its memory is not whole 4 KiB pages".into()));
        }
        let virt = NonNull::new(region.as_ptr()).ok_or_else(|| err("null region".into()))?;
        pin(virt, len)?;
        let pages = self.map.map(virt, len, 4096)?;
        self.tx_table.0[usize::from(id.0)] = TxMap {
            pinned: Some((virt.as_ptr() as usize, len)),
            ..TxMap::new(pages, 4096, layout, pool.memory().clone())
        };
        self.tx_set.insert(id);
        Ok(())
    }

    /// Stops transmitting from pool `id`. Refused while frames of that pool are in flight
    /// (the device could still read them): call [`Port::tx_done`] until they are back.
    pub fn unregister_tx_pool(&mut self, id: PoolId) -> Result<(), IntelError> {
        if self.own_pools().contains(id) || !self.tx_set.contains(id) {
            return Err(IntelError::TxPool {
                pool: id.0,
                why: "not a registered foreign pool".into(),
            });
        }
        let busy = self
            .tx
            .iter()
            .map(|t| t.pending().filter(|b| b.pool() == id).count())
            .sum::<usize>();
        if busy > 0 {
            return Err(IntelError::TxPool {
                pool: id.0,
                why: format!("{busy} frames still in flight"),
            });
        }
        let m = core::mem::take(&mut self.tx_table.0[usize::from(id.0)]);
        self.tx_set.remove(id);
        if let Some((va, len)) = m.pinned {
            self.unpin(va, len);
        }
        Ok(())
    }

    fn unpin(&self, va: usize, len: usize) {
        if let Some(p) = NonNull::new(va as *mut u8) {
            self.map.unmap(p, len);
            // SAFETY: munlock only changes residency of a range this port locked.
            unsafe { libc::munlock(p.as_ptr().cast(), len) };
        }
    }

    /// Unicast and multicast promiscuous mode.
    pub fn set_promiscuous(&mut self, on: bool) {
        match self.family {
            Family::Igb => igb::set_promisc(&self.regs, on),
            Family::Ixgbe => ixgbe::set_promisc(&self.regs, on),
        }
    }

    /// Receive every multicast frame.
    pub fn set_allmulti(&mut self, on: bool) {
        match self.family {
            Family::Igb => igb::set_allmulti(&self.regs, on),
            Family::Ixgbe => ixgbe::set_allmulti(&self.regs, on),
        }
    }

    /// Receive frames sent to multicast address `addr`.
    pub fn add_multicast(&mut self, addr: Mac) {
        match self.family {
            Family::Igb => igb::add_multicast(&self.regs, addr),
            Family::Ixgbe => ixgbe::add_multicast(&self.regs, addr),
        }
    }

    /// The device's counters so far.
    pub fn hw_stats(&self) -> HwStats {
        let mut s = self.hw.get();
        match self.family {
            Family::Igb => igb::read_stats(&self.regs, &mut s),
            Family::Ixgbe => ixgbe::read_stats(&self.regs, &mut s),
        }
        self.hw.set(s);
        s
    }

    /// Receives from queue `q` only.
    #[inline]
    pub fn rx_burst_queue(&mut self, q: usize, out: &mut [Frame]) -> usize {
        let Some(r) = self.rx.get_mut(q) else {
            return 0;
        };
        let mut jumbo = jumbo(&self.pools, &mut self.large);
        let c = r.burst(&self.regs, out, &mut self.free, jumbo.as_mut());
        self.rx_errors += c.errors as u64;
        c.frames
    }

    /// Transmits on queue `q` only.
    #[inline]
    pub fn tx_burst_queue(&mut self, q: usize, frames: &[Frame]) -> usize {
        let Some(t) = self.tx.get_mut(q) else {
            return 0;
        };
        let n = t.burst(&self.regs, frames, &self.tx_table);
        self.tx_dropped += (frames.len() - n) as u64;
        n
    }
}

impl<R: Regs> Port for IntelPort<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn link(&self) -> LinkState {
        match self.family {
            Family::Igb => igb::link(&self.regs),
            Family::Ixgbe => ixgbe::link(&self.regs),
        }
    }

    fn stats(&self) -> PortStats {
        let hw = self.hw_stats();
        PortStats {
            rx_packets: hw.rx_packets,
            rx_bytes: hw.rx_bytes,
            rx_dropped: hw.rx_missed + hw.rx_no_desc,
            tx_packets: hw.tx_packets,
            tx_bytes: hw.tx_bytes,
            tx_dropped: self.tx_dropped,
            errors: hw.rx_errors
                + self.rx_errors
                + self.refused
                + self.tx.iter().map(TxQueue::dropped).sum::<u64>(),
        }
    }

    fn tx_pools(&self) -> PoolSet {
        self.tx_set
    }

    /// Partial TCP/UDP checksums always (the device inserts them); frames up to 64 KiB
    /// with a segment size when the port has a large transmit pool (the device cuts them).
    fn tx_offloads(&self) -> TxOffloads {
        TxOffloads {
            max_gso_frame: if self.large.is_some() {
                u16::MAX as u32
            } else {
                0
            },
            partial_csum: true,
        }
    }

    fn own_pools(&self) -> PoolSet {
        let mut s = PoolSet::EMPTY;
        for p in &self.pools {
            s.insert(p.id());
        }
        s
    }

    fn pools(&self) -> &[Pool] {
        &self.pools
    }

    /// Refused: a pool granted through the `Port` trait is another party's (an app's), and
    /// the device would read it by DMA at a time of its own, long after the switch checked
    /// the frame. The party could rewrite the header in between (a spoofed frame on the
    /// wire), or free the memory (a process that punches its memfd leaves a device without
    /// an IOMMU reading freed host memory: pinning keeps the pages, not the process's hold
    /// on them). The switch therefore copies such frames once into the port's own DMA
    /// buffers, with the header it checked. Trusted memory of this process can still be
    /// registered with [`IntelPort::register_tx_pool`].
    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        tracing::debug!(
            "{}: pool {} not granted: frames of another party's pool are copied into the port's DMA buffers",
            self.name,
            pool.id().0
        );
        false
    }

    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        !self.tx_set.contains(pool) || self.unregister_tx_pool(pool).is_ok()
    }

    #[inline(never)]
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        let mut n = 0;
        let mut jumbo = jumbo(&self.pools, &mut self.large);
        for r in self.rx.iter_mut() {
            let c = r.burst(&self.regs, &mut out[n..], &mut self.free, jumbo.as_mut());
            n += c.frames;
            self.rx_errors += c.errors as u64;
            if n == out.len() {
                break;
            }
        }
        n
    }

    #[inline(never)]
    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.tx_burst_queue(0, frames)
    }

    #[inline(never)]
    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        let mut n = 0;
        for t in self.tx.iter_mut() {
            n += t.clean(&mut out[n..]);
        }
        n
    }

    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        let mut n = 0;
        for o in out.iter_mut() {
            let Some(b) = self.free.take() else { break };
            *o = b;
            n += 1;
        }
        n
    }

    /// Buffers of the large transmit pool for frames longer than a receive buffer.
    fn alloc_len(&mut self, out: &mut [BufHandle], len: usize) -> usize {
        let Some(large) = self.large.as_mut().filter(|_| len > BUF_SIZE) else {
            return self.alloc(out);
        };
        let mut n = 0;
        for o in out.iter_mut() {
            let Some(b) = large.take() else { break };
            *o = b;
            n += 1;
        }
        n
    }

    #[inline(never)]
    fn reclaim(&mut self, bufs: &[BufHandle]) {
        let own = self.pools[0].id();
        match &mut self.large {
            None => self.refused += self.free.push_all(bufs, own) as u64,
            Some(large) => {
                for &b in bufs {
                    let ok = if b.pool() == own {
                        self.free.push(b)
                    } else {
                        self.pools.get(1).is_some_and(|p| p.id() == b.pool()) && large.push(b)
                    };
                    self.refused += u64::from(!ok);
                }
            }
        }
    }
}

impl<R: Regs> Drop for IntelPort<R> {
    fn drop(&mut self) {
        // The device must do no more DMA before its memory goes away.
        match self.family {
            Family::Igb => igb::stop(&self.regs),
            Family::Ixgbe => ixgbe::stop(&self.regs),
        }
        let pinned: Vec<(usize, usize)> = self.tx_table.0.iter().filter_map(|m| m.pinned).collect();
        for (va, len) in pinned {
            self.unpin(va, len);
        }
        self.map.unmap(self.ring_mem.virt(), self.ring_mem.len());
        for m in &self.pool_mem {
            self.map.unmap(m.virt(), m.len());
        }
    }
}

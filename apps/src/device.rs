//! [`RingDevice`]: a smoltcp [`Device`] over an app port's four rings, zero-copy.
//!
//! Receive: the server hands the app a buffer of the app's own pool on the rx ring; the
//! [`RxToken`] lends that buffer to smoltcp in place ([`OwnPool::lend`]) and then puts it back
//! on the fill ring for the server to fill again. Transmit: the [`TxToken`] takes a free buffer
//! of the pool (from a local free list that the completion ring refills), lets smoltcp build
//! the frame in place ([`OwnPool::lend_mut`]) and queues it on the tx ring. Ring publishes are
//! batched: a poll of the interface writes descriptors, [`RingDevice::flush`] publishes each
//! ring once and rings the server's doorbell only when it asked for a wakeup.
//!
//! Nothing the server writes is trusted: a descriptor naming a buffer the app did not hand
//! over, another pool, or a bad length is counted in [`DeviceStats`] and skipped; a ring whose
//! indices are impossible detaches the device (the app then re-handshakes).
//!
//! Offloads: a pool of buffers larger than an Ethernet frame (64 KiB by default) lets the
//! stack hand the device TCP segments of up to a buffer (smoltcp's segmentation offload);
//! each goes out as one frame with its segment size in the descriptor
//! ([`offload::FrameMeta`]), and the server, the kernel or the NIC cuts it where the path
//! needs MTU-sized frames. TCP checksums are left partial on transmit (the device writes the
//! pseudo-header sum; whoever cuts or puts the frame on a wire completes it). On receive, TCP
//! and UDP checksums are verified here only for frames the server did not mark verified or
//! partial (made on this host), so that no byte is summed twice.
//!
//! The hot path (receive, transmit, flush) allocates nothing: the free list and the receive
//! batch are sized once.

use core::num::NonZeroUsize;
use grant_pool::lend::{LendError, OwnPool};
use grant_pool::{BufHandle, Desc, Grant, Notifier, RingConsumer, RingError, RingProducer};

use offload::FrameMeta;
use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Descriptors taken from the rx ring or the completion ring in one go.
pub const BATCH: usize = 64;

/// Smallest frame accepted on receive: an Ethernet header.
const MIN_FRAME: usize = 14;
/// An Ethernet header (no VLAN tag).
pub(crate) const ETH_HEADER: usize = 14;
/// The largest frame a descriptor's 16-bit length can carry.
const MAX_FRAME: usize = u16::MAX as usize;

/// Counters of a [`RingDevice`], all monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceStats {
    /// Frames handed to the stack.
    pub rx_frames: u64,
    /// Bytes handed to the stack.
    pub rx_bytes: u64,
    /// Frames queued on the tx ring.
    pub tx_frames: u64,
    /// Bytes queued on the tx ring.
    pub tx_bytes: u64,
    /// Frames the stack built that could not be queued (no free buffer or full tx ring).
    pub tx_dropped: u64,
    /// Descriptors from the server that were refused (bad handle, length, duplicate).
    pub bad_desc: u64,
    /// Doorbells rung towards the server.
    pub kicks: u64,
    /// TCP and UDP frames dropped on receive for a wrong checksum.
    pub rx_bad_csum: u64,
    /// Frames queued whole as TCP segments larger than one MTU (segmentation offload).
    pub tx_gso: u64,
    /// Times the device was detached from a server (its death or a ring it corrupted).
    pub detaches: u64,
}

/// The four ring ends of an attached port and the doorbell to its server.
#[derive(Debug)]
pub struct PortRings<N: Notifier> {
    /// Server → app: filled frames.
    pub rx: RingConsumer,
    /// App → server: empty buffers to receive into.
    pub fill: RingProducer,
    /// App → server: frames to send.
    pub tx: RingProducer,
    /// Server → app: buffers whose frames were sent.
    pub completion: RingConsumer,
    /// Doorbell: `notify` wakes the server, `wait` sleeps until the server rings.
    pub notifier: N,
}

/// Why the device detached itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The server published impossible ring indices.
    #[error("the server corrupted a ring: {0}")]
    Ring(#[from] RingError),
    /// The doorbell failed.
    #[error("the server's doorbell failed: {0}")]
    Notify(String),
}

/// The fill side: empty buffers going to the server.
#[derive(Debug)]
struct FillSide {
    ring: Option<RingProducer>,
    /// Descriptors written after the producer index, not yet published.
    pending: u32,
    /// Held buffers that found no room on the fill ring; they join the free list at the next
    /// flush. Sized for the whole pool, so pushing never allocates.
    spill: Vec<BufHandle>,
}

impl FillSide {
    /// Queues `h` (already handed over); returns false when the ring has no room.
    #[inline]
    fn push(&mut self, h: BufHandle) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return false;
        };
        match ring.reserve(self.pending + 1) {
            Ok(n) if n > self.pending => {
                ring.write(self.pending, Desc::new(h, 0));
                self.pending += 1;
                true
            }
            _ => false,
        }
    }
}

/// The transmit side: free buffers, the tx ring and the completion ring.
#[derive(Debug)]
struct TxSide {
    ring: Option<RingProducer>,
    completion: Option<RingConsumer>,
    pending: u32,
    /// Buffers this side holds that are free for transmit.
    free: Vec<BufHandle>,
    /// Where a frame goes that cannot be queued (counted as dropped).
    scratch: Vec<u8>,
    /// A tx publish, or room made on the completion ring, since the last doorbell check.
    dirty: bool,
}

/// A smoltcp device over the rings of one app port.
pub struct RingDevice<G: Grant, N: Notifier> {
    pool: OwnPool<G>,
    rx: Option<RingConsumer>,
    rx_batch: [Desc; BATCH],
    rx_head: usize,
    rx_len: usize,
    fill: FillSide,
    tx: TxSide,
    notifier: Option<N>,
    stats: DeviceStats,
    mtu: usize,
    /// The largest frame: the wire's MTU, or a whole buffer with segmentation offload.
    max_frame: usize,
    /// TCP frames dropped on receive for a wrong checksum (kept apart from `stats`, which
    /// the transmit token of a receive borrows).
    bad_csum: u64,
    error: Option<DeviceError>,
}

impl<G: Grant, N: Notifier> core::fmt::Debug for RingDevice<G, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RingDevice")
            .field("pool", &self.pool)
            .field("attached", &self.is_attached())
            .field("free", &self.tx.free.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<G: Grant, N: Notifier> RingDevice<G, N> {
    /// A detached device over `pool` for an IP MTU of 1500 ([`RingDevice::with_mtu`]).
    pub fn new(pool: OwnPool<G>) -> Self {
        Self::with_mtu(pool, 1500)
    }

    /// A detached device over `pool`: frames on the wire of up to `ip_mtu` bytes of IP
    /// packet (and at most a buffer), and TCP segments up to a whole buffer (at most 65 535
    /// bytes) when a buffer holds more than that.
    pub fn with_mtu(pool: OwnPool<G>, ip_mtu: usize) -> Self {
        let count = pool.pool().layout().count;
        let buf_size = pool.pool().layout().buf_size;
        let mtu = buf_size.min(ip_mtu + ETH_HEADER);
        let max_frame = buf_size.min(MAX_FRAME);
        Self {
            pool,
            rx: None,
            rx_batch: [Desc::default(); BATCH],
            rx_head: 0,
            rx_len: 0,
            fill: FillSide {
                ring: None,
                pending: 0,
                spill: Vec::with_capacity(count),
            },
            tx: TxSide {
                ring: None,
                completion: None,
                pending: 0,
                free: Vec::with_capacity(count),
                scratch: vec![0; max_frame],
                dirty: false,
            },
            notifier: None,
            stats: DeviceStats::default(),
            mtu,
            max_frame,
            bad_csum: 0,
            error: None,
        }
    }

    /// The pool this device lends from.
    pub fn pool(&self) -> &OwnPool<G> {
        &self.pool
    }

    /// Gives the pool the id a new server assigned (its handles carry it). Only while
    /// detached.
    pub fn set_pool_id(&mut self, id: grant_pool::PoolId) -> Result<(), LendError> {
        if self.is_attached() {
            return Ok(());
        }
        self.pool.set_id(id)
    }

    /// Counters so far.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            rx_bad_csum: self.bad_csum,
            ..self.stats
        }
    }

    /// Whether rings are attached.
    pub fn is_attached(&self) -> bool {
        self.rx.is_some()
    }

    /// Why the device detached itself, if it did (taken: reported once).
    pub fn take_error(&mut self) -> Option<DeviceError> {
        self.error.take()
    }

    /// Attaches freshly initialised rings of a new server connection: every buffer is this
    /// side's again (whatever the previous server held is reclaimed), up to `fill_target`
    /// buffers go on the fill ring and the rest are free for transmit. Frames the stack had
    /// queued for a previous server are gone; TCP retransmits them.
    pub fn attach(&mut self, rings: PortRings<N>, fill_target: usize) -> Result<(), DeviceError> {
        self.detach_quietly();
        self.pool.reclaim_all();
        let pool = self.pool.pool().clone();
        self.tx.free.clear();
        for i in (0..pool.layout().count as u32).rev() {
            if let Ok(h) = pool.handle(grant_pool::BufIdx(i)) {
                self.tx.free.push(h);
            }
        }
        self.rx = Some(rings.rx);
        self.fill.ring = Some(rings.fill);
        self.tx.ring = Some(rings.tx);
        self.tx.completion = Some(rings.completion);
        self.notifier = Some(rings.notifier);
        let want = fill_target.min(self.tx.free.len().saturating_sub(1));
        for _ in 0..want {
            let Some(&h) = self.tx.free.last() else { break };
            if self.pool.hand_over(h).is_err() || !self.fill.push(h) {
                // Full ring (or a buffer we cannot hand over): keep it for transmit.
                let _ = self.pool.take_back(h);
                break;
            }
            self.tx.free.pop();
        }
        self.flush()
    }

    /// Detaches from the server (its connection closed): the rings are dropped, buffers stay
    /// accounted to the server until the next [`RingDevice::attach`] reclaims them.
    pub fn detach(&mut self) {
        if self.is_attached() {
            self.stats.detaches += 1;
        }
        self.detach_quietly();
    }

    fn detach_quietly(&mut self) {
        // Received frames not yet given to the stack were taken back already; they return to
        // the free list (any previous server is gone, so the fill ring is too).
        while self.rx_head < self.rx_len {
            let h = self.rx_batch[self.rx_head].buf();
            self.rx_head += 1;
            if self.pool.holds(h) {
                self.tx.free.push(h);
            }
        }
        self.rx_head = 0;
        self.rx_len = 0;
        self.rx = None;
        self.fill.ring = None;
        self.fill.pending = 0;
        self.tx.ring = None;
        self.tx.completion = None;
        self.tx.pending = 0;
        self.tx.dirty = false;
        self.notifier = None;
    }

    fn fail(&mut self, e: DeviceError) {
        tracing::warn!("detaching the device: {e}");
        self.error = Some(e);
        self.detach();
    }

    /// Publishes queued fill and tx descriptors (one release-store per ring) and rings the
    /// server's doorbell if it asked for a wakeup on either.
    pub fn flush(&mut self) -> Result<(), DeviceError> {
        self.tx.free.append(&mut self.fill.spill);
        let mut kick = false;
        if let Some(ring) = self.fill.ring.as_mut()
            && self.fill.pending > 0
        {
            ring.publish(self.fill.pending);
            self.fill.pending = 0;
            kick |= ring.needs_wakeup();
        }
        if let Some(ring) = self.tx.ring.as_mut() {
            if self.tx.pending > 0 {
                ring.publish(self.tx.pending);
                self.tx.pending = 0;
                self.tx.dirty = true;
            }
            if self.tx.dirty {
                kick |= ring.needs_wakeup();
                self.tx.dirty = false;
            }
        }
        if kick && let Some(n) = self.notifier.as_ref() {
            self.stats.kicks += 1;
            if let Err(e) = n.notify() {
                let e = DeviceError::Notify(e.to_string());
                self.fail(e.clone());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Asks the server for a wakeup on the rx ring (and on the completion ring when no
    /// buffer is free for transmit even after taking back what the completion ring holds).
    /// Returns `true` when there is work already, so the caller must not sleep.
    pub fn arm_wakeup(&mut self) -> bool {
        if self.rx_head < self.rx_len {
            return true;
        }
        if self.tx.free.is_empty() {
            // Completed buffers are not work for the caller: take them back here, or a
            // caller that polls until this returns `false` would spin on them. The room this
            // makes is news for a server that found the ring full: ring it if it sleeps.
            self.reap_completions();
            if self.flush().is_err() {
                return true;
            }
        }
        let mut ready = false;
        if let Some(rx) = self.rx.as_mut() {
            match rx.set_need_wakeup() {
                Ok(r) => ready |= r,
                Err(e) => {
                    self.fail(e.into());
                    return true;
                }
            }
        }
        if self.tx.free.is_empty()
            && let Some(c) = self.tx.completion.as_mut()
        {
            match c.set_need_wakeup() {
                Ok(r) => ready |= r,
                Err(e) => {
                    self.fail(e.into());
                    return true;
                }
            }
        }
        ready
    }

    /// Withdraws the wakeup requests (the app polls again).
    pub fn disarm_wakeup(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            rx.clear_need_wakeup();
        }
        if let Some(c) = self.tx.completion.as_mut() {
            c.clear_need_wakeup();
        }
    }

    /// The server's doorbell, to sleep on (`None` while detached).
    pub fn notifier(&self) -> Option<&N> {
        self.notifier.as_ref()
    }

    /// Takes transmitted buffers back from the completion ring into the free list.
    fn reap_completions(&mut self) {
        let Some(c) = self.tx.completion.as_mut() else {
            return;
        };
        let n = match c.peek(BATCH as u32) {
            Ok(n) => n,
            Err(e) => {
                self.fail(e.into());
                return;
            }
        };
        for i in 0..n {
            let h = c.read(i).buf();
            match self.pool.take_back(h) {
                Ok(()) => self.tx.free.push(h),
                Err(_) => self.stats.bad_desc += 1,
            }
        }
        c.release(n);
        if n > 0 {
            // Room on the completion ring: a server that found it full may hold more of our
            // buffers and sleep; the next flush rings it if it asked for a wakeup.
            self.tx.dirty = true;
        }
    }

    /// Refills the local receive batch from the rx ring; returns whether a frame is ready.
    fn refill_rx(&mut self) -> bool {
        if self.rx_head < self.rx_len {
            return true;
        }
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        let n = match rx.peek(BATCH as u32) {
            Ok(n) => n,
            Err(e) => {
                self.fail(e.into());
                return false;
            }
        };
        let buf_size = self.pool.pool().layout().buf_size;
        let mut kept = 0;
        for i in 0..n {
            // Copied out of the ring once; only the copy is checked and used.
            let d = rx.read(i);
            let h = d.buf();
            match self.pool.take_back(h) {
                Ok(()) => {
                    let len = d.len as usize;
                    if (MIN_FRAME..=buf_size.min(self.max_frame)).contains(&len) {
                        self.rx_batch[kept] = d;
                        kept += 1;
                    } else {
                        // A bad length: the buffer is ours again, put it back to be refilled.
                        self.stats.bad_desc += 1;
                        give_back(&self.pool, &mut self.fill, h);
                    }
                }
                Err(LendError::Pool(_)) if h.pool() != self.pool.pool().id() => {
                    // A buffer of a pool this app cannot read (another domain's): it was
                    // lent to us, give it straight back on the fill ring unread.
                    self.stats.bad_desc += 1;
                    self.fill.push(h);
                }
                Err(_) => self.stats.bad_desc += 1,
            }
        }
        rx.release(n);
        self.rx_head = 0;
        self.rx_len = kept;
        kept > 0
    }

    /// Whether a transmit buffer and a tx slot are available, reaping completions if needed.
    fn tx_ready(&mut self) -> bool {
        if self.tx.ring.is_none() {
            return false;
        }
        if self.tx.free.is_empty() {
            self.reap_completions();
            if self.tx.free.is_empty() {
                return false;
            }
        }
        self.tx_slot()
    }

    /// Whether the tx ring has a slot beyond the pending ones (publishing them if full).
    fn tx_slot(&mut self) -> bool {
        let Some(ring) = self.tx.ring.as_mut() else {
            return false;
        };
        let pending = self.tx.pending;
        match ring.reserve(pending + 1) {
            Ok(n) if n > pending => true,
            Ok(_) if pending > 0 => {
                // Full of our own unpublished frames: publish them and look again.
                let _ = self.flush();
                matches!(self.tx.ring.as_mut().map(|r| r.reserve(1)), Some(Ok(1)))
            }
            Ok(_) => false,
            Err(e) => {
                self.fail(e.into());
                false
            }
        }
    }
}

/// Returns a held buffer to the server on the fill ring, or to the spill list when the fill
/// ring has no room.
#[inline]
fn give_back<G: Grant>(pool: &OwnPool<G>, fill: &mut FillSide, h: BufHandle) {
    if pool.hand_over(h).is_ok() {
        if fill.push(h) {
            return;
        }
        let _ = pool.take_back(h);
    }
    if pool.holds(h) {
        fill.spill.push(h);
    }
}

/// A received frame, lent in place from the app's pool.
pub struct RxToken<'a, G: Grant> {
    pool: &'a OwnPool<G>,
    fill: &'a mut FillSide,
    desc: Desc,
    /// Frames dropped for a wrong checksum.
    bad_csum: &'a mut u64,
}

/// A transmit slot: a free buffer of the app's pool, written in place.
pub struct TxToken<'a, G: Grant> {
    pool: &'a OwnPool<G>,
    tx: &'a mut TxSide,
    stats: &'a mut DeviceStats,
    /// The segment size smoltcp asked for (0: one segment).
    gso_size: u16,
}

/// Whether `b` is neither TCP nor UDP, or one whose checksums are right.
fn l4_checksum_ok(b: &[u8]) -> bool {
    match offload::csum::L4::parse(b, b.len()) {
        Some(_) => offload::csum::verify(b) == Some(true),
        None => true,
    }
}

/// Leaves the TCP checksum of the frame the stack built in `b` partial (the pseudo-header
/// sum: the stack computes no TCP checksum, see [`RingDevice`]'s capabilities) and returns
/// the frame's metadata: partial, with `gso_size` when the frame holds more than one
/// segment. Anything but TCP goes as the stack built it.
fn finish_tx(b: &mut [u8], gso_size: u16) -> FrameMeta {
    match offload::csum::L4::parse(b, b.len()) {
        Some(l4) if l4.proto == 6 => {
            let _ = offload::csum::set_pseudo_header_sum(b);
            let payload = l4
                .len
                .saturating_sub(((b[l4.start + 12] >> 4) as usize) * 4);
            FrameMeta::partial(if payload > gso_size as usize {
                gso_size
            } else {
                0
            })
        }
        _ => FrameMeta::NONE,
    }
}

impl<G: Grant> phy::RxToken for RxToken<'_, G> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        let h = self.desc.buf();
        // The descriptor was checked and the buffer taken back when it came off the rx ring,
        // so the lend is not refused; were it, the stack would see an empty frame (dropped as
        // malformed) rather than anything else.
        let mut f = Some(f);
        let meta = FrameMeta::from_bits(self.desc.meta);
        let bad = self.bad_csum;
        let lent = self.pool.lend(h, self.desc.len as usize, |b| {
            if !meta.needs_no_verify() && !l4_checksum_ok(b) {
                // Dropped: the stack sees an empty frame, which it discards as malformed.
                *bad += 1;
                return f.take().map(|g| g(&[]));
            }
            f.take().map(|g| g(b))
        });
        let r = match (lent, f.take()) {
            (Ok(Some(r)), _) => r,
            (_, Some(g)) => g(&[]),
            (_, None) => unreachable!("the closure ran, so the lend returned its result"),
        };
        // Back to the server for the next frame.
        give_back(self.pool, self.fill, h);
        r
    }
}

impl<G: Grant> phy::TxToken for TxToken<'_, G> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let slot = len <= self.tx.scratch.len()
            && match self
                .tx
                .ring
                .as_mut()
                .map(|r| r.reserve(self.tx.pending + 1))
            {
                Some(Ok(n)) => n > self.tx.pending,
                _ => false,
            };
        let h = if slot { self.tx.free.pop() } else { None };
        let Some(h) = h else {
            // No buffer or no slot: the stack still gets somewhere to write, and the frame is
            // dropped (TCP retransmits; the stack asked through `transmit` only when both
            // were there, so this happens for replies built from `receive`'s token).
            self.stats.tx_dropped += 1;
            let n = len.min(self.tx.scratch.len());
            let mut tmp = core::mem::take(&mut self.tx.scratch);
            let r = f(&mut tmp[..n]);
            self.tx.scratch = tmp;
            return r;
        };
        let mut f = Some(f);
        let gso_size = self.gso_size;
        let mut meta = FrameMeta::NONE;
        let lent = self.pool.lend_mut(h, len, |b| {
            let r = f.take().map(|g| g(&mut *b));
            meta = finish_tx(b, gso_size);
            r
        });
        let r = match (lent, f.take()) {
            (Ok(Some(r)), _) => r,
            (_, Some(g)) => {
                // Not lendable (cannot happen for a free, held buffer): drop via scratch.
                self.tx.free.push(h);
                self.stats.tx_dropped += 1;
                let mut tmp = core::mem::take(&mut self.tx.scratch);
                let r = g(&mut tmp[..len]);
                self.tx.scratch = tmp;
                return r;
            }
            (_, None) => unreachable!("the closure ran, so the lend returned its result"),
        };
        match self.pool.hand_over(h) {
            Ok(()) => {
                if let Some(ring) = self.tx.ring.as_mut() {
                    let d = Desc {
                        meta: meta.bits(),
                        ..Desc::new(h, len as u16)
                    };
                    ring.write(self.tx.pending, d);
                    self.tx.pending += 1;
                }
                self.stats.tx_gso += u64::from(meta.gso_size() != 0);
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += len as u64;
            }
            Err(_) => {
                self.tx.free.push(h);
                self.stats.tx_dropped += 1;
            }
        }
        r
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.gso_size = meta.segmentation_offload_size.map_or(0, |s| s.get());
    }
}

impl<G: Grant, N: Notifier> Device for RingDevice<G, N> {
    type RxToken<'a>
        = RxToken<'a, G>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, G>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.refill_rx() {
            return None;
        }
        // Make a transmit buffer available for a reply if one can be had; the token drops
        // the reply (counted) otherwise.
        let _ = self.tx_ready();
        let desc = self.rx_batch[self.rx_head];
        self.rx_head += 1;
        self.stats.rx_frames += 1;
        self.stats.rx_bytes += desc.len as u64;
        let Self {
            pool,
            fill,
            tx,
            stats,
            bad_csum,
            ..
        } = self;
        Some((
            RxToken {
                pool,
                fill,
                desc,
                bad_csum,
            },
            TxToken {
                pool,
                tx,
                stats,
                gso_size: 0,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        if !self.tx_ready() {
            return None;
        }
        Some(TxToken {
            pool: &self.pool,
            tx: &mut self.tx,
            stats: &mut self.stats,
            gso_size: 0,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = Some(BATCH);
        // TCP checksums are left partial on transmit, and TCP and UDP ones verified by the
        // device on receive (see the module docs): a frame made on this host may come with
        // either left partial. The stack computes UDP, IPv4 and ICMP checksums on transmit
        // and verifies IPv4 and ICMP on receive.
        caps.checksum.tcp = Checksum::None;
        caps.checksum.udp = Checksum::Tx;
        if self.max_frame > self.mtu {
            caps.segmentation.tcpv4 = NonZeroUsize::new(self.max_frame);
        }
        caps
    }
}

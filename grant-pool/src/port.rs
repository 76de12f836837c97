//! The memory of one app port, in one grant: a header page, four rings, then the pool.
//!
//! ```text
//! page 0      header: magic, version, ring sizes, buffer size and count
//! rx ring     server -> app: filled frames
//! tx ring     app -> server: frames to send
//! fill ring   app -> server: empty buffers for rx
//! comp ring   server -> app: transmitted buffers back
//! pool        buf_count buffers of buf_size bytes
//! ```
//!
//! Every part starts on a page boundary; [`PortLayout`] computes all offsets from the six
//! numbers in the header, so no offset is ever read from shared memory. The app (the owner and
//! granter) writes the header and resets the rings with [`AppPort::create`]; the server maps the
//! grant and attaches with [`ServerPort::attach`], which re-validates the header against the
//! mapping's size and its own limits: the header is the app's word, not a fact.
//!
//! The server reads the app-written rings (tx, fill) through [`CheckedConsumer`], which copies
//! each descriptor out once and refuses, and counts in [`RejectCounters`], every descriptor
//! naming another pool, an index past the pool, a length over the buffer size, or a buffer the
//! app does not hold at that moment according to the server's private [`Holders`] table.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::pool::{BufHandle, Holder, Holders, PAGE_SIZE, Pool, PoolError, PoolId, PoolLayout};
use crate::region::{OutOfBounds, Region};
use crate::ring::{Desc, RingConsumer, RingError, RingLayout, RingProducer};

/// "FRPT": marks a port header.
pub const PORT_MAGIC: u32 = 0x4652_5054;
/// Version of the layout below; a server refuses any other.
pub const PORT_VERSION: u32 = 1;

/// The header at the start of a port's memory, as the app writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PortHeader {
    /// [`PORT_MAGIC`].
    pub magic: u32,
    /// [`PORT_VERSION`].
    pub version: u32,
    /// Descriptors in the rx ring.
    pub rx_size: u32,
    /// Descriptors in the tx ring.
    pub tx_size: u32,
    /// Descriptors in the fill ring.
    pub fill_size: u32,
    /// Descriptors in the completion ring.
    pub comp_size: u32,
    /// Bytes per pool buffer.
    pub buf_size: u32,
    /// Buffers in the pool.
    pub buf_count: u32,
}
const _: () = assert!(core::mem::size_of::<PortHeader>() == 32);

/// Something wrong with a port's layout or memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// The header does not start with [`PORT_MAGIC`].
    #[error("port header magic is {0:#x}, not a Ferrite port")]
    Magic(u32),
    /// The header's version is not [`PORT_VERSION`].
    #[error("port layout version {0} is not supported (this build speaks {PORT_VERSION})")]
    Version(u32),
    /// A ring size is invalid.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// The pool layout is invalid.
    #[error("pool: {0}")]
    Pool(#[from] PoolError),
    /// The layout asks for more than the server allows.
    #[error("port layout exceeds the server's limit: {0}")]
    Limit(&'static str),
    /// The memory is smaller than the layout needs.
    #[error("port needs {need} bytes of memory, the mapping has {have}")]
    TooSmall {
        /// Bytes the layout needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Reading or writing the header failed.
    #[error("port memory: {0}")]
    Bounds(#[from] OutOfBounds),
}

/// Sizes of the four rings and the pool of a port, with every offset derived from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortLayout {
    rx: RingLayout,
    tx: RingLayout,
    fill: RingLayout,
    comp: RingLayout,
    pool: PoolLayout,
}

impl PortLayout {
    /// A validated layout: ring sizes `[rx, tx, fill, comp]` and a pool.
    pub fn new(rings: [u32; 4], pool: PoolLayout) -> Result<Self, PortError> {
        let [rx, tx, fill, comp] = rings;
        Ok(Self {
            rx: RingLayout::new(rx)?,
            tx: RingLayout::new(tx)?,
            fill: RingLayout::new(fill)?,
            comp: RingLayout::new(comp)?,
            pool: PoolLayout::new(pool.buf_size, pool.count)?,
        })
    }

    /// Four rings of `ring_size` and `buf_count` buffers of the default 2 KiB.
    pub fn simple(ring_size: u32, buf_count: usize) -> Result<Self, PortError> {
        Self::new(
            [ring_size; 4],
            PoolLayout::new(crate::pool::DEFAULT_BUF_SIZE, buf_count)?,
        )
    }

    /// The layout a header describes (validated; offsets recomputed, never read).
    pub fn from_header(h: &PortHeader) -> Result<Self, PortError> {
        if h.magic != PORT_MAGIC {
            return Err(PortError::Magic(h.magic));
        }
        if h.version != PORT_VERSION {
            return Err(PortError::Version(h.version));
        }
        let pool = PoolLayout::new(h.buf_size as usize, h.buf_count as usize)?;
        Self::new([h.rx_size, h.tx_size, h.fill_size, h.comp_size], pool)
    }

    /// The header describing this layout.
    pub fn header(&self) -> PortHeader {
        PortHeader {
            magic: PORT_MAGIC,
            version: PORT_VERSION,
            rx_size: self.rx.size(),
            tx_size: self.tx.size(),
            fill_size: self.fill.size(),
            comp_size: self.comp.size(),
            buf_size: self.pool.buf_size as u32,
            buf_count: self.pool.count as u32,
        }
    }

    /// The rx ring's layout.
    pub fn rx(&self) -> RingLayout {
        self.rx
    }

    /// The tx ring's layout.
    pub fn tx(&self) -> RingLayout {
        self.tx
    }

    /// The fill ring's layout.
    pub fn fill(&self) -> RingLayout {
        self.fill
    }

    /// The completion ring's layout.
    pub fn comp(&self) -> RingLayout {
        self.comp
    }

    /// The pool's layout.
    pub fn pool(&self) -> PoolLayout {
        self.pool
    }

    /// Byte offset of the rx ring.
    pub fn rx_off(&self) -> usize {
        PAGE_SIZE
    }

    /// Byte offset of the tx ring.
    pub fn tx_off(&self) -> usize {
        self.rx_off() + self.rx.bytes()
    }

    /// Byte offset of the fill ring.
    pub fn fill_off(&self) -> usize {
        self.tx_off() + self.tx.bytes()
    }

    /// Byte offset of the completion ring.
    pub fn comp_off(&self) -> usize {
        self.fill_off() + self.fill.bytes()
    }

    /// Byte offset of the pool.
    pub fn pool_off(&self) -> usize {
        self.comp_off() + self.comp.bytes()
    }

    /// Bytes the whole port needs (a whole number of pages).
    pub fn bytes(&self) -> usize {
        self.pool_off() + self.pool.bytes()
    }

    /// Pages the whole port needs: what to grant.
    pub fn pages(&self) -> usize {
        self.bytes() / PAGE_SIZE
    }

    fn check_mem(&self, mem: &Region) -> Result<(), PortError> {
        if mem.len() < self.bytes() {
            return Err(PortError::TooSmall {
                need: self.bytes(),
                have: mem.len(),
            });
        }
        Ok(())
    }

    fn ring_mem(&self, mem: &Region, off: usize, r: RingLayout) -> Result<Region, PortError> {
        Ok(mem.subregion(off, r.bytes())?)
    }
}

/// The app's end of a port: it produces on tx and fill, consumes rx and completion.
#[derive(Debug)]
pub struct AppPort {
    /// Frames the server delivered.
    pub rx: RingConsumer,
    /// Frames for the server to send.
    pub tx: RingProducer,
    /// Empty buffers for the server to receive into.
    pub fill: RingProducer,
    /// Sent buffers the server gave back.
    pub comp: RingConsumer,
    /// The app's pool.
    pub pool: Pool,
    /// The layout.
    pub layout: PortLayout,
}

impl AppPort {
    /// Lays a port out in `mem` (the app's own grant): writes the header and resets all rings.
    /// Only the app does this, before handing the grant to the server or after the server
    /// that used it has gone.
    pub fn create(mem: Region, layout: PortLayout, pool_id: PoolId) -> Result<Self, PortError> {
        layout.check_mem(&mem)?;
        mem.write(0, layout.header().as_bytes())?;
        Self::build(mem, layout, pool_id, true)
    }

    fn build(mem: Region, l: PortLayout, id: PoolId, init: bool) -> Result<Self, PortError> {
        Ok(Self {
            rx: RingConsumer::new(l.ring_mem(&mem, l.rx_off(), l.rx)?, l.rx, init)?,
            tx: RingProducer::new(l.ring_mem(&mem, l.tx_off(), l.tx)?, l.tx, init)?,
            fill: RingProducer::new(l.ring_mem(&mem, l.fill_off(), l.fill)?, l.fill, init)?,
            comp: RingConsumer::new(l.ring_mem(&mem, l.comp_off(), l.comp)?, l.comp, init)?,
            pool: Pool::new(id, l.pool, mem.subregion(l.pool_off(), l.pool.bytes())?)?,
            layout: l,
        })
    }
}

/// Limits a server puts on what an app may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortLimits {
    /// Largest ring, in descriptors.
    pub max_ring: u32,
    /// Most buffers in the pool.
    pub max_bufs: usize,
}

impl Default for PortLimits {
    fn default() -> Self {
        Self {
            max_ring: 4096,
            max_bufs: 65536,
        }
    }
}

/// Rejected descriptors, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectCounters {
    /// Polls that found the producer index more than one ring ahead (or behind).
    pub index_ahead: u64,
    /// Descriptors naming a pool other than the port's.
    pub bad_pool: u64,
    /// Descriptors whose buffer index is past the pool.
    pub bad_index: u64,
    /// Descriptors whose length exceeds the buffer size.
    pub bad_len: u64,
    /// Descriptors naming a buffer the producer does not hold.
    pub not_held: u64,
}

impl RejectCounters {
    /// All rejections.
    pub fn total(&self) -> u64 {
        self.index_ahead + self.bad_pool + self.bad_index + self.bad_len + self.not_held
    }

    /// The sum of two sets of counters.
    pub fn sum(&self, o: &RejectCounters) -> RejectCounters {
        RejectCounters {
            index_ahead: self.index_ahead + o.index_ahead,
            bad_pool: self.bad_pool + o.bad_pool,
            bad_index: self.bad_index + o.bad_index,
            bad_len: self.bad_len + o.bad_len,
            not_held: self.not_held + o.not_held,
        }
    }
}

/// The consuming end of a ring a distrusted peer produces: every descriptor is copied out
/// once, checked against the pool and the holder table, and either accepted (the buffer moves
/// to the consumer) or refused and counted. Never panics, whatever the peer wrote.
#[derive(Debug)]
pub struct CheckedConsumer {
    ring: RingConsumer,
    pool: PoolId,
    layout: PoolLayout,
    rejects: RejectCounters,
}

impl CheckedConsumer {
    /// Checks descriptors of `ring` against pool `pool` with `layout`.
    pub fn new(ring: RingConsumer, pool: PoolId, layout: PoolLayout) -> Self {
        Self {
            ring,
            pool,
            layout,
            rejects: RejectCounters::default(),
        }
    }

    /// Consumes up to `out.len()` descriptors; the valid ones, whose buffers `holders` says
    /// `from` holds, move to `to` and are copied into `out`. Returns how many were accepted.
    /// Refused descriptors are consumed too (released), so a hostile producer cannot wedge the
    /// ring; an impossible producer index consumes nothing and is counted.
    pub fn consume(
        &mut self,
        holders: &mut Holders,
        from: Holder,
        to: Holder,
        out: &mut [Desc],
    ) -> usize {
        let want = u32::try_from(out.len()).unwrap_or(u32::MAX);
        let n = match self.ring.peek(want) {
            Ok(n) => n,
            Err(_) => {
                self.rejects.index_ahead += 1;
                return 0;
            }
        };
        let mut k = 0;
        for i in 0..n {
            let d = self.ring.read(i);
            if self.check(&d, holders, from, to) {
                out[k] = d;
                k += 1;
            }
        }
        self.ring.release(n);
        k
    }

    #[inline]
    fn check(&mut self, d: &Desc, holders: &mut Holders, from: Holder, to: Holder) -> bool {
        let h = d.buf();
        if h.pool() != self.pool {
            self.rejects.bad_pool += 1;
            return false;
        }
        if self.layout.check_idx(h.idx()).is_err() {
            self.rejects.bad_index += 1;
            return false;
        }
        if self.layout.check_len(d.len as usize).is_err() {
            self.rejects.bad_len += 1;
            return false;
        }
        if holders.transfer(h.idx(), from, to).is_err() {
            self.rejects.not_held += 1;
            return false;
        }
        true
    }

    /// What has been refused so far.
    pub fn rejects(&self) -> RejectCounters {
        self.rejects
    }

    /// The ring underneath (to arm need-wakeup).
    pub fn ring(&mut self) -> &mut RingConsumer {
        &mut self.ring
    }
}

/// The server's end of a port: it consumes tx and fill through [`CheckedConsumer`]s and
/// produces rx and completion, accounting for every buffer of the app's pool in its own
/// [`Holders`] table.
#[derive(Debug)]
pub struct ServerPort {
    /// Frames for the app.
    pub rx: RingProducer,
    /// Frames the app sends.
    pub tx: CheckedConsumer,
    /// Empty buffers the app offers for rx.
    pub fill: CheckedConsumer,
    /// Sent buffers back to the app.
    pub comp: RingProducer,
    /// The app's pool, as mapped by the server.
    pub pool: Pool,
    /// Who holds each buffer of the app's pool, from the server's side: [`Holder::APP`] or
    /// [`Holder::SERVER`]. Private to the server.
    pub holders: Holders,
    /// The layout, re-validated.
    pub layout: PortLayout,
    /// Descriptors the server itself tried to hand back for buffers it did not hold (a bug in
    /// the caller, refused rather than handed over twice).
    pub own_errors: u64,
}

impl ServerPort {
    /// Attaches to an app's port in `mem` (the server's mapping of the app's grant), giving
    /// its pool the id `pool_id`. The header is read once and re-validated against `limits`
    /// and the mapping's size; ring indices are taken as the app left them and checked.
    pub fn attach(mem: Region, pool_id: PoolId, limits: PortLimits) -> Result<Self, PortError> {
        let mut raw = [0u8; core::mem::size_of::<PortHeader>()];
        mem.read(0, &mut raw)?;
        let h = PortHeader::read_from_bytes(&raw).map_err(|_| PortError::Magic(0))?;
        let l = PortLayout::from_header(&h)?;
        for r in [l.rx, l.tx, l.fill, l.comp] {
            if r.size() > limits.max_ring {
                return Err(PortError::Limit("ring size"));
            }
        }
        if l.pool.count > limits.max_bufs {
            return Err(PortError::Limit("buffer count"));
        }
        l.check_mem(&mem)?;
        let pool = Pool::new(
            pool_id,
            l.pool,
            mem.subregion(l.pool_off(), l.pool.bytes())?,
        )?;
        let tx = RingConsumer::new(l.ring_mem(&mem, l.tx_off(), l.tx)?, l.tx, false)?;
        let fill = RingConsumer::new(l.ring_mem(&mem, l.fill_off(), l.fill)?, l.fill, false)?;
        Ok(Self {
            rx: RingProducer::new(l.ring_mem(&mem, l.rx_off(), l.rx)?, l.rx, false)?,
            comp: RingProducer::new(l.ring_mem(&mem, l.comp_off(), l.comp)?, l.comp, false)?,
            tx: CheckedConsumer::new(tx, pool_id, l.pool),
            fill: CheckedConsumer::new(fill, pool_id, l.pool),
            holders: Holders::new(l.pool.count, Holder::APP),
            pool,
            layout: l,
            own_errors: 0,
        })
    }

    /// Takes up to `out.len()` valid frames from the tx ring; their buffers become the
    /// server's.
    #[inline]
    pub fn take_tx(&mut self, out: &mut [Desc]) -> usize {
        self.tx
            .consume(&mut self.holders, Holder::APP, Holder::SERVER, out)
    }

    /// Takes up to `out.len()` valid empty buffers from the fill ring; they become the
    /// server's.
    #[inline]
    pub fn take_fill(&mut self, out: &mut [Desc]) -> usize {
        self.fill
            .consume(&mut self.holders, Holder::APP, Holder::SERVER, out)
    }

    /// Publishes frames on the rx ring. Returns how many leading entries of `descs` were
    /// used up (published, or refused because they name a buffer of this pool the server
    /// does not hold: counted in `own_errors`); stops when the ring is full. Buffers of other
    /// pools (zero-copy delivery) pass through unaccounted here.
    #[inline]
    pub fn give_rx(&mut self, descs: &[Desc]) -> Result<usize, RingError> {
        give(
            &mut self.rx,
            &mut self.holders,
            self.pool.id(),
            &mut self.own_errors,
            descs,
        )
    }

    /// Returns transmitted buffers on the completion ring; as [`ServerPort::give_rx`].
    #[inline]
    pub fn give_comp(&mut self, descs: &[Desc]) -> Result<usize, RingError> {
        give(
            &mut self.comp,
            &mut self.holders,
            self.pool.id(),
            &mut self.own_errors,
            descs,
        )
    }

    /// Rejections on both app-written rings.
    pub fn rejects(&self) -> RejectCounters {
        self.tx.rejects().sum(&self.fill.rejects())
    }

    /// The handle of a buffer of the app's pool (for building descriptors).
    pub fn handle(&self, idx: crate::pool::BufIdx) -> Result<BufHandle, PoolError> {
        self.pool.handle(idx)
    }
}

fn give(
    ring: &mut RingProducer,
    holders: &mut Holders,
    pool: PoolId,
    own_errors: &mut u64,
    descs: &[Desc],
) -> Result<usize, RingError> {
    let want = u32::try_from(descs.len()).unwrap_or(u32::MAX);
    let room = ring.reserve(want)?;
    let mut used = 0usize;
    let mut written = 0u32;
    while written < room && used < descs.len() {
        let d = descs[used];
        used += 1;
        let h = d.buf();
        if h.pool() == pool
            && holders
                .transfer(h.idx(), Holder::SERVER, Holder::APP)
                .is_err()
        {
            *own_errors += 1;
            continue;
        }
        ring.write(written, d);
        written += 1;
    }
    ring.publish(written);
    Ok(used)
}

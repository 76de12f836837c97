//! The memory of one app port, in one grant: a header page, four rings, then the pool.
//!
//! ```text
//! page 0      header: magic, version, ring sizes, buffer size and count;
//!             at ANSWER_OFF the server's answer to the attach (PortAnswer)
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
use crate::region::{Memory, OutOfBounds, Region};
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

/// Byte offset, in a port's header page, of the server's answer to the attach
/// ([`PortAnswer`]), on a cache line of its own after the header.
pub const ANSWER_OFF: usize = 64;
/// Byte offset of the answer's ready word: the server sets it to 1 with a release store
/// after writing the answer; [`AppPort::create`] clears it.
const ANSWER_READY: usize = ANSWER_OFF + core::mem::size_of::<PortAnswer>();

/// The server's answer to an attach request, which it leaves in the header page of the port
/// it has just put on the switch before ringing the app's doorbell (Xen: the app learns it
/// without a xenstore round trip; the transport's own answer is written as well). The app
/// reads it as the server's word, checks the nonce against its own request and the pool id
/// for range; the server never reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct PortAnswer {
    /// The nonce of the request answered.
    pub nonce: u64,
    /// The server's instance.
    pub instance: u64,
    /// The pool id the app's buffer handles must carry (0..=255).
    pub pool: u32,
    /// The switch port number.
    pub port: u32,
}
const _: () = assert!(core::mem::size_of::<PortAnswer>() == 24);
const _: () = assert!(ANSWER_READY + 4 <= PAGE_SIZE && ANSWER_READY.is_multiple_of(4));

impl PortAnswer {
    /// Server side: writes the answer into `mem` (the mapped port), then marks it ready.
    pub fn post(&self, mem: &Region<'_>) -> Result<(), PortError> {
        mem.write(ANSWER_OFF, self.as_bytes())?;
        mem.atomic_u32(ANSWER_READY)?
            .store(1, core::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// App side: the answer in `mem` (the app's own port memory), once the server has
    /// marked it ready.
    pub fn take(mem: &Region<'_>) -> Result<Option<Self>, PortError> {
        if mem
            .atomic_u32(ANSWER_READY)?
            .load(core::sync::atomic::Ordering::Acquire)
            != 1
        {
            return Ok(None);
        }
        let mut raw = [0u8; core::mem::size_of::<PortAnswer>()];
        mem.read(ANSWER_OFF, &mut raw)?;
        Ok(Self::read_from_bytes(&raw).ok())
    }
}

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

    fn check_mem(&self, mem: &Memory) -> Result<(), PortError> {
        if mem.len() < self.bytes() {
            return Err(PortError::TooSmall {
                need: self.bytes(),
                have: mem.len(),
            });
        }
        Ok(())
    }

    fn ring_mem(&self, mem: &Memory, off: usize, r: RingLayout) -> Result<Memory, PortError> {
        Ok(mem.sub(off, r.bytes())?)
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
    pub fn create(mem: Memory, layout: PortLayout, pool_id: PoolId) -> Result<Self, PortError> {
        layout.check_mem(&mem)?;
        let r = mem.region();
        r.write(0, layout.header().as_bytes())?;
        // No answer yet: a server's answer to an earlier request is gone with that server.
        r.fill(ANSWER_OFF, ANSWER_READY + 4 - ANSWER_OFF, 0)?;
        Self::build(mem, layout, pool_id, true)
    }

    fn build(mem: Memory, l: PortLayout, id: PoolId, init: bool) -> Result<Self, PortError> {
        Ok(Self {
            rx: RingConsumer::new(l.ring_mem(&mem, l.rx_off(), l.rx)?, l.rx, init)?,
            tx: RingProducer::new(l.ring_mem(&mem, l.tx_off(), l.tx)?, l.tx, init)?,
            fill: RingProducer::new(l.ring_mem(&mem, l.fill_off(), l.fill)?, l.fill, init)?,
            comp: RingConsumer::new(l.ring_mem(&mem, l.comp_off(), l.comp)?, l.comp, init)?,
            pool: Pool::new(id, l.pool, mem.sub(l.pool_off(), l.pool.bytes())?)?,
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
    /// Descriptors whose offload metadata makes no sense for the frame
    /// ([`offload::FrameMeta::check`]).
    pub bad_meta: u64,
}

impl RejectCounters {
    /// All rejections.
    pub fn total(&self) -> u64 {
        self.index_ahead
            + self.bad_pool
            + self.bad_index
            + self.bad_len
            + self.not_held
            + self.bad_meta
    }

    /// The sum of two sets of counters.
    pub fn sum(&self, o: &RejectCounters) -> RejectCounters {
        RejectCounters {
            index_ahead: self.index_ahead + o.index_ahead,
            bad_pool: self.bad_pool + o.bad_pool,
            bad_index: self.bad_index + o.bad_index,
            bad_len: self.bad_len + o.bad_len,
            not_held: self.not_held + o.not_held,
            bad_meta: self.bad_meta + o.bad_meta,
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
        if offload::FrameMeta::from_bits(d.meta)
            .check(d.len as usize)
            .is_err()
        {
            self.rejects.bad_meta += 1;
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
    pub fn attach(mem: Memory, pool_id: PoolId, limits: PortLimits) -> Result<Self, PortError> {
        let mut raw = [0u8; core::mem::size_of::<PortHeader>()];
        mem.region().read(0, &mut raw)?;
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
        let pool = Pool::new(pool_id, l.pool, mem.sub(l.pool_off(), l.pool.bytes())?)?;
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
    /// pools (zero-copy delivery) pass through unaccounted here. An impossible consumer
    /// index written by the app is [`RingError::IndexAhead`]: nothing is published, the
    /// buffers stay the server's, and the port should be closed.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::BufIdx;
    use crate::region::Memory;

    const POOL: PoolId = PoolId(5);

    fn pair(layout: PortLayout) -> (Memory, AppPort, ServerPort) {
        let m = Memory::local(layout.bytes());
        let app = AppPort::create(m.clone(), layout, POOL).expect("app");
        let srv = ServerPort::attach(m.clone(), POOL, PortLimits::default()).expect("server");
        (m, app, srv)
    }

    fn desc(idx: u32, len: u16) -> Desc {
        Desc::new(BufHandle::new(POOL, BufIdx(idx)).expect("fits"), len)
    }

    fn push(ring: &mut RingProducer, descs: &[Desc]) {
        let n = ring.reserve(descs.len() as u32).expect("sane");
        assert_eq!(n as usize, descs.len(), "room in the ring");
        for (i, d) in descs.iter().enumerate() {
            ring.write(i as u32, *d);
        }
        ring.publish(n);
    }

    #[test]
    fn an_answer_posted_by_the_server_is_read_once_ready_and_cleared_by_a_new_layout() {
        let l = PortLayout::simple(64, 32).expect("layout");
        let m = Memory::local(l.bytes());
        let _app = AppPort::create(m.clone(), l, POOL).expect("app");
        assert_eq!(PortAnswer::take(&m.region()), Ok(None));
        let a = PortAnswer {
            nonce: 0x1234_5678_9abc_def1,
            instance: 77,
            pool: 5,
            port: 3,
        };
        // The fields alone are not an answer: only the ready word makes them one.
        m.region().write(ANSWER_OFF, a.as_bytes()).expect("write");
        assert_eq!(PortAnswer::take(&m.region()), Ok(None));
        a.post(&m.region()).expect("post");
        assert_eq!(PortAnswer::take(&m.region()), Ok(Some(a)));
        // The server's attach leaves the header alone: the answer does not overlap it.
        assert!(ServerPort::attach(m.clone(), POOL, PortLimits::default()).is_ok());
        let _again = AppPort::create(m.clone(), l, POOL).expect("app");
        assert_eq!(PortAnswer::take(&m.region()), Ok(None));
    }

    #[test]
    fn offsets_are_page_aligned_and_disjoint() {
        let l = PortLayout::new(
            [256, 512, 1024, 2048],
            PoolLayout::new(2048, 100).expect("ok"),
        )
        .expect("layout");
        let offs = [
            l.rx_off(),
            l.tx_off(),
            l.fill_off(),
            l.comp_off(),
            l.pool_off(),
        ];
        assert!(offs.iter().all(|o| o % PAGE_SIZE == 0));
        assert!(offs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(l.tx_off() - l.rx_off(), l.rx().bytes());
        assert_eq!(l.bytes(), l.pool_off() + 50 * PAGE_SIZE);
        assert_eq!(PortLayout::from_header(&l.header()), Ok(l));
    }

    #[test]
    fn frames_and_buffers_travel_both_ways_with_accounting() {
        let (_m, mut app, mut srv) = pair(PortLayout::simple(64, 32).expect("layout"));
        // The app offers buffers 0..8 for rx and sends frames in 8 and 9.
        push(
            &mut app.fill,
            &(0..8).map(|i| desc(i, 0)).collect::<Vec<_>>(),
        );
        app.pool
            .buf(desc(8, 0).buf())
            .expect("buf")
            .write(0, b"hello")
            .expect("fits");
        push(&mut app.tx, &[desc(8, 5), desc(9, 60)]);
        let mut out = [Desc::default(); 16];
        assert_eq!(srv.take_fill(&mut out), 8);
        assert_eq!(srv.take_tx(&mut out[8..]), 2);
        assert_eq!(out[8], desc(8, 5));
        let mut b = [0u8; 5];
        srv.pool
            .buf(out[8].buf())
            .expect("buf")
            .read(0, &mut b)
            .expect("fits");
        assert_eq!(&b, b"hello");
        assert_eq!(srv.holders.count(Holder::SERVER), 10);
        // The server delivers a frame into fill buffer 0 and completes the tx buffers.
        assert_eq!(srv.give_rx(&[desc(0, 42)]), Ok(1));
        assert_eq!(srv.give_comp(&[desc(8, 0), desc(9, 0)]), Ok(2));
        assert_eq!(srv.holders.count(Holder::SERVER), 7);
        assert_eq!(app.rx.peek(8), Ok(1));
        assert_eq!(app.rx.read(0), desc(0, 42));
        assert_eq!(app.comp.peek(8), Ok(2));
        assert_eq!(srv.rejects(), RejectCounters::default());
        // A buffer the server does not hold is not handed back twice.
        assert_eq!(srv.give_comp(&[desc(8, 0)]), Ok(1));
        assert_eq!(srv.own_errors, 1);
        assert_eq!(app.comp.peek(8), Ok(2), "nothing new was published");
    }

    /// One hostile descriptor of each kind, each between two honest ones: each is refused
    /// and counted under its own reason, the honest ones pass, nothing panics.
    #[test]
    fn hostile_descriptors_are_refused_and_counted() {
        let (_m, mut app, mut srv) = pair(PortLayout::simple(64, 32).expect("layout"));
        let other_pool = Desc::new(BufHandle::new(PoolId(6), BufIdx(1)).expect("fits"), 10);
        let past_end = desc(32, 10);
        let huge_index = Desc {
            handle: (POOL.0 as u32) << 24 | 0x00ff_ffff,
            len: 0,
            meta: 0,
        };
        let too_long = desc(2, 2049);
        let max_len = desc(3, 2048);
        let meta = |i, len, bits| Desc {
            meta: bits,
            ..desc(i, len)
        };
        // A segment size not below the frame, one without a partial checksum, partial and
        // verified at once, segments of one byte; then a frame of several segments, which
        // passes.
        let gso_too_big = meta(5, 1000, offload::FrameMeta::partial(1000).bits());
        let gso_tiny = meta(9, 2000, offload::FrameMeta::partial(1).bits());
        let gso_not_partial = meta(6, 2000, 1000);
        let contradictory = meta(7, 100, 0xc000);
        let tso = meta(8, 2000, offload::FrameMeta::partial(1000).bits());
        push(
            &mut app.tx,
            &[
                desc(1, 60),
                other_pool,
                past_end,
                huge_index,
                too_long,
                max_len,
                desc(1, 60),
                gso_too_big,
                gso_not_partial,
                contradictory,
                gso_tiny,
                tso,
            ],
        );
        let mut out = [Desc::default(); 16];
        assert_eq!(srv.take_tx(&mut out), 3, "buffers 1, 3 and 8 are accepted");
        assert_eq!(&out[..3], &[desc(1, 60), max_len, tso]);
        let r = srv.tx.rejects();
        assert_eq!(
            r,
            RejectCounters {
                index_ahead: 0,
                bad_pool: 1,
                bad_index: 2,
                bad_len: 1,
                not_held: 1, // buffer 1 offered a second time while the server holds it
                bad_meta: 4,
            }
        );
        assert_eq!(
            app.tx.pending(),
            Ok(0),
            "refused descriptors are consumed too"
        );
        // A buffer offered on fill while it sits in the server's hands (from tx) is refused.
        push(&mut app.fill, &[desc(3, 0), desc(4, 0)]);
        assert_eq!(srv.take_fill(&mut out), 1);
        assert_eq!(out[0], desc(4, 0));
        assert_eq!(srv.fill.rejects().not_held, 1);
        assert_eq!(srv.rejects().total(), 10);
    }

    #[test]
    fn hostile_producer_index_is_counted_and_nothing_is_consumed() {
        let l = PortLayout::simple(64, 32).expect("layout");
        let (m, mut app, mut srv) = pair(l);
        push(&mut app.tx, &[desc(1, 60)]);
        // The app claims 65 entries in a 64-entry ring (and, next, an index behind the
        // consumer).
        let r = m.region();
        let prod = r.atomic_u32(l.tx_off()).expect("tx producer index");
        let mut out = [Desc::default(); 128];
        for bogus in [65, u32::MAX] {
            prod.store(bogus, core::sync::atomic::Ordering::Release);
            assert_eq!(srv.take_tx(&mut out), 0);
        }
        assert_eq!(srv.tx.rejects().index_ahead, 2);
        assert_eq!(srv.holders.count(Holder::SERVER), 0);
        prod.store(1, core::sync::atomic::Ordering::Release);
        assert_eq!(srv.take_tx(&mut out), 1);
    }

    #[test]
    fn hostile_consumer_index_on_rx_stops_delivery_without_losing_buffers() {
        let l = PortLayout::new([2, 64, 64, 64], PoolLayout::new(2048, 32).expect("pool"))
            .expect("layout");
        let (m, mut app, mut srv) = pair(l);
        push(&mut app.fill, &[desc(0, 0), desc(1, 0), desc(2, 0)]);
        let mut out = [Desc::default(); 4];
        assert_eq!(srv.take_fill(&mut out), 3);
        assert_eq!(srv.give_rx(&[desc(0, 60), desc(1, 60)]), Ok(2));
        // The ring is full; the app moves its rx consumer index past anything the server
        // produced, so the server must look at it, and refuses it.
        let r = m.region();
        let cons = r
            .atomic_u32(l.rx_off() + crate::ring::CONS_OFF)
            .expect("rx consumer index");
        cons.store(1000, core::sync::atomic::Ordering::Release);
        assert!(matches!(
            srv.give_rx(&[desc(2, 60)]),
            Err(RingError::IndexAhead { .. })
        ));
        assert_eq!(
            srv.holders.holder(BufIdx(2)),
            Some(Holder::SERVER),
            "the buffer stays the server's, to reuse or reclaim"
        );
        cons.store(2, core::sync::atomic::Ordering::Release);
        assert_eq!(srv.give_rx(&[desc(2, 60)]), Ok(1));
    }

    #[test]
    fn random_garbage_never_panics_and_never_hands_out_a_buffer_twice() {
        let l = PortLayout::simple(64, 16).expect("layout");
        let (m, _app, mut srv) = pair(l);
        let r = m.region();
        // A deterministic xorshift stream stands in for a hostile app writing anything.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut out = [Desc::default(); 64];
        let mut accepted = std::collections::HashSet::new();
        let mut cons = 0u32;
        // Miri interprets every instruction: fewer rounds there.
        for _ in 0..if cfg!(miri) { 60 } else { 2000 } {
            for s in 0..64 {
                let mut raw = next();
                // Half the time: this pool, index 0..32, length 0..4096, so that some
                // descriptors pass and every check gets exercised.
                if raw & 1 == 0 {
                    let handle = (POOL.0 as u64) << 24 | ((raw >> 8) & 31);
                    let len = (raw >> 16) & 0xfff;
                    raw = (raw & 0xffff_0000_0000_0000) | len << 32 | handle;
                }
                r.write(
                    l.tx_off() + crate::ring::DESC_OFF + s * 8,
                    &raw.to_ne_bytes(),
                )
                .expect("in ring");
            }
            // Mostly a plausible producer index (up to a full ring past the consumer), now
            // and then one more than a ring ahead.
            let step = (next() % 72) as u32;
            r.atomic_u32(l.tx_off()).expect("prod").store(
                cons.wrapping_add(step),
                core::sync::atomic::Ordering::Release,
            );
            let before = srv.tx.rejects().index_ahead;
            let n = srv.take_tx(&mut out);
            if srv.tx.rejects().index_ahead == before {
                cons = cons.wrapping_add(step.min(64));
            }
            for d in &out[..n] {
                assert!(d.buf().pool() == POOL && (d.buf().idx().0 as usize) < 16);
                assert!(d.len as usize <= 2048);
                assert!(accepted.insert(d.buf()), "buffer handed out twice");
            }
        }
        assert_eq!(accepted.len(), srv.holders.count(Holder::SERVER));
        assert!(!accepted.is_empty(), "some honest-looking descriptors pass");
        let rj = srv.tx.rejects();
        assert!(
            rj.bad_pool > 0 && rj.bad_index > 0 && rj.bad_len > 0 && rj.not_held > 0,
            "{rj:?}"
        );
        assert!(rj.index_ahead > 0);
    }

    #[test]
    fn a_hostile_header_is_refused() {
        let l = PortLayout::simple(64, 32).expect("layout");
        let m = Memory::local(l.bytes());
        AppPort::create(m.clone(), l, POOL).expect("app");
        let attach = || ServerPort::attach(m.clone(), POOL, PortLimits::default()).err();
        let set = |off: usize, v: u32| m.region().write(off, &v.to_ne_bytes()).expect("hdr");
        set(0, 0xdead);
        assert_eq!(attach(), Some(PortError::Magic(0xdead)));
        set(0, PORT_MAGIC);
        set(4, 2);
        assert_eq!(attach(), Some(PortError::Version(2)));
        set(4, PORT_VERSION);
        set(8, 100);
        assert!(matches!(
            attach(),
            Some(PortError::Ring(RingError::Size(100)))
        ));
        set(8, 1 << 16);
        assert_eq!(attach(), Some(PortError::Limit("ring size")));
        set(8, 64);
        set(28, 33);
        assert!(
            matches!(attach(), Some(PortError::TooSmall { .. })),
            "33 buffers do not fit"
        );
        set(24, 3000);
        assert!(matches!(
            attach(),
            Some(PortError::Pool(PoolError::BufSize(3000)))
        ));
        set(24, 2048);
        set(28, 32);
        assert!(attach().is_none());
        // A mapping shorter than the layout is refused.
        let short = m.sub(0, l.bytes() - PAGE_SIZE).expect("in");
        assert!(matches!(
            ServerPort::attach(short, POOL, PortLimits::default()),
            Err(PortError::TooSmall { .. })
        ));
    }
}

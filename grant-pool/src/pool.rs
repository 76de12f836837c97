//! Pools: granted pages carved into fixed-size buffers, named by [`BufHandle`]s.
//!
//! A pool has one owner domain. Every buffer is, at every moment, held by exactly one party;
//! [`Holders`] is the owner-private table that says which, so that a departed holder's
//! buffers can be reclaimed and a handle offered by a party that does not hold it refused.

use crate::region::{Memory, OutOfBounds, Region};

/// Default buffer size: one Ethernet frame of 1514 bytes plus headroom, two per 4 KiB page.
pub const DEFAULT_BUF_SIZE: usize = 2048;
/// Page size all grants are made of.
pub const PAGE_SIZE: usize = 4096;
/// Largest number of pools a handle can name.
pub const MAX_POOLS: usize = 256;
/// Largest number of buffers one pool can hold.
pub const MAX_BUFS: usize = 1 << 24;
/// The largest buffer: one holds a 64 KiB TCP segment whole (a frame is at most 65 535
/// bytes: lengths are 16 bits).
pub const MAX_BUF_SIZE: usize = 1 << 16;

/// A pool's number, unique within one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolId(pub u8);

/// A buffer's index within its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufIdx(pub u32);

/// Names one buffer: pool in the top 8 bits, index in the low 24. Fits a ring descriptor.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(transparent)]
pub struct BufHandle(u32);

impl BufHandle {
    /// The handle of buffer `idx` in `pool`; `None` when `idx` does not fit 24 bits.
    #[inline]
    pub const fn new(pool: PoolId, idx: BufIdx) -> Option<Self> {
        if (idx.0 as usize) < MAX_BUFS {
            Some(Self(((pool.0 as u32) << 24) | idx.0))
        } else {
            None
        }
    }

    /// Reinterprets a raw descriptor word. Any `u32` is a well-formed handle; whether it names
    /// a real buffer is for the pool to check ([`Pool::check`]).
    #[inline]
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw descriptor word.
    #[inline]
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// The pool this handle names.
    #[inline]
    pub const fn pool(self) -> PoolId {
        PoolId((self.0 >> 24) as u8)
    }

    /// The buffer index within the pool.
    #[inline]
    pub const fn idx(self) -> BufIdx {
        BufIdx(self.0 & 0x00ff_ffff)
    }
}

/// The shape of a pool: how many buffers of which size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLayout {
    /// Bytes per buffer: a power of two from 256 to 4096.
    pub buf_size: usize,
    /// Number of buffers.
    pub count: usize,
}

/// A pool layout or a handle that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The buffer size is not a power of two in 256..=[`MAX_BUF_SIZE`].
    #[error("buffer size {0} must be a power of two between 256 and {MAX_BUF_SIZE}")]
    BufSize(usize),
    /// Too many or zero buffers.
    #[error("buffer count {0} must be between 1 and {MAX_BUFS}")]
    Count(usize),
    /// The handle names another pool.
    #[error("handle names pool {got}, expected pool {want}")]
    WrongPool {
        /// Pool in the handle.
        got: u8,
        /// This pool.
        want: u8,
    },
    /// The handle's index is past the end of the pool.
    #[error("buffer index {idx} is out of range for a pool of {count}")]
    IndexRange {
        /// Index in the handle.
        idx: u32,
        /// Buffers in the pool.
        count: usize,
    },
    /// A length is larger than a buffer.
    #[error("length {len} exceeds the buffer size {buf_size}")]
    Length {
        /// Length asked for.
        len: usize,
        /// Buffer size.
        buf_size: usize,
    },
    /// The memory is smaller than the layout needs.
    #[error(transparent)]
    Bounds(#[from] OutOfBounds),
}

impl PoolLayout {
    /// A validated layout.
    pub fn new(buf_size: usize, count: usize) -> Result<Self, PoolError> {
        if !buf_size.is_power_of_two() || !(256..=MAX_BUF_SIZE).contains(&buf_size) {
            return Err(PoolError::BufSize(buf_size));
        }
        if count == 0 || count > MAX_BUFS {
            return Err(PoolError::Count(count));
        }
        Ok(Self { buf_size, count })
    }

    /// Bytes of memory the layout needs, rounded up to whole pages.
    pub fn bytes(&self) -> usize {
        (self.buf_size * self.count).div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// Pages the layout needs.
    pub fn pages(&self) -> usize {
        self.bytes() / PAGE_SIZE
    }

    /// Checks that `idx` names a buffer of this layout.
    #[inline]
    pub fn check_idx(&self, idx: BufIdx) -> Result<(), PoolError> {
        if (idx.0 as usize) < self.count {
            Ok(())
        } else {
            Err(PoolError::IndexRange {
                idx: idx.0,
                count: self.count,
            })
        }
    }

    /// Checks that `len` fits one buffer.
    #[inline]
    pub fn check_len(&self, len: usize) -> Result<(), PoolError> {
        if len <= self.buf_size {
            Ok(())
        } else {
            Err(PoolError::Length {
                len,
                buf_size: self.buf_size,
            })
        }
    }
}

/// A pool as one party sees it: an id, a layout and the memory the buffers live in (kept
/// mapped while the pool lives).
#[derive(Debug, Clone)]
pub struct Pool {
    id: PoolId,
    layout: PoolLayout,
    mem: Memory,
}

impl Pool {
    /// A pool `id` with `layout` over `mem`, which must be at least `layout.bytes()` long.
    pub fn new(id: PoolId, layout: PoolLayout, mem: Memory) -> Result<Self, PoolError> {
        mem.region().subregion(0, layout.buf_size * layout.count)?;
        Ok(Self { id, layout, mem })
    }

    /// The pool's id.
    #[inline]
    pub fn id(&self) -> PoolId {
        self.id
    }

    /// The pool's layout.
    #[inline]
    pub fn layout(&self) -> PoolLayout {
        self.layout
    }

    /// The memory of the whole pool.
    #[inline]
    pub fn region(&self) -> Region<'_> {
        self.mem.region()
    }

    /// The handle on the pool's memory, for a holder that outlives this pool value.
    #[inline]
    pub fn memory(&self) -> &Memory {
        &self.mem
    }

    /// The handle of buffer `idx`, checked.
    #[inline]
    pub fn handle(&self, idx: BufIdx) -> Result<BufHandle, PoolError> {
        self.layout.check_idx(idx)?;
        // The index fits 24 bits because count <= MAX_BUFS.
        BufHandle::new(self.id, idx).ok_or(PoolError::IndexRange {
            idx: idx.0,
            count: self.layout.count,
        })
    }

    /// Checks that `h` names a buffer of this pool.
    #[inline]
    pub fn check(&self, h: BufHandle) -> Result<(), PoolError> {
        if h.pool() != self.id {
            return Err(PoolError::WrongPool {
                got: h.pool().0,
                want: self.id.0,
            });
        }
        self.layout.check_idx(h.idx())
    }

    /// Byte offset of buffer `idx` within the pool's memory (no check).
    #[inline]
    pub fn offset(&self, idx: BufIdx) -> usize {
        idx.0 as usize * self.layout.buf_size
    }

    /// The memory of the buffer `h` names, checked.
    #[inline]
    pub fn buf(&self, h: BufHandle) -> Result<Region<'_>, PoolError> {
        self.check(h)?;
        Ok(self
            .region()
            .subregion(self.offset(h.idx()), self.layout.buf_size)?)
    }
}

/// A set of pool ids (a 256-bit mask): which pools a port can read or DMA from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSet([u64; 4]);

impl PoolSet {
    /// The empty set.
    pub const EMPTY: PoolSet = PoolSet([0; 4]);

    /// Adds `p`.
    #[inline]
    pub fn insert(&mut self, p: PoolId) {
        self.0[(p.0 >> 6) as usize] |= 1 << (p.0 & 63);
    }

    /// Removes `p`.
    #[inline]
    pub fn remove(&mut self, p: PoolId) {
        self.0[(p.0 >> 6) as usize] &= !(1 << (p.0 & 63));
    }

    /// Whether `p` is in the set.
    #[inline]
    pub fn contains(&self, p: PoolId) -> bool {
        self.0[(p.0 >> 6) as usize] & (1 << (p.0 & 63)) != 0
    }

    /// The set holding only `p`.
    pub fn of(p: PoolId) -> Self {
        let mut s = Self::EMPTY;
        s.insert(p);
        s
    }
}

/// Every pool one party can reach, by id: how the switch finds a buffer's memory.
#[derive(Debug, Clone)]
pub struct PoolTable {
    pools: Vec<Option<Pool>>,
}

impl Default for PoolTable {
    fn default() -> Self {
        Self {
            pools: vec![None; MAX_POOLS],
        }
    }
}

impl PoolTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a pool under its id.
    pub fn insert(&mut self, pool: Pool) {
        let id = pool.id();
        self.pools[id.0 as usize] = Some(pool);
    }

    /// Removes the pool `id`.
    pub fn remove(&mut self, id: PoolId) -> Option<Pool> {
        self.pools[id.0 as usize].take()
    }

    /// The pool `id`, if present.
    #[inline]
    pub fn get(&self, id: PoolId) -> Option<&Pool> {
        self.pools[id.0 as usize].as_ref()
    }

    /// The lowest id not in use.
    pub fn free_id(&self) -> Option<PoolId> {
        self.pools
            .iter()
            .position(Option::is_none)
            .map(|i| PoolId(i as u8))
    }

    /// The memory of buffer `h`, checked.
    #[inline]
    pub fn buf(&self, h: BufHandle) -> Option<Region<'_>> {
        self.get(h.pool())?.buf(h).ok()
    }
}

/// A party that can hold a buffer, as the pool's owner accounts for it. One byte, so a
/// [`Holders`] table costs one byte per buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder(pub u8);

impl Holder {
    /// On the owner's free stack (see [`Holders::with_free_stack`]).
    pub const FREE: Holder = Holder(0);
    /// The pool's owner, in use (not on its free stack).
    pub const OWNER: Holder = Holder(1);
    /// The network server (its switch, in flight between rings and ports).
    pub const SERVER: Holder = Holder(2);
    /// The app domain a port serves.
    pub const APP: Holder = Holder(3);
    /// A ring: published by one side, not yet consumed by the other.
    pub const RING: Holder = Holder(4);
    /// First of the per-queue holders; see [`Holder::queue`].
    pub const QUEUE_BASE: u8 = 16;

    /// NIC queue or port `n` (`n < 240`); `None` when `n` is out of range.
    pub const fn queue(n: u8) -> Option<Holder> {
        match n.checked_add(Self::QUEUE_BASE) {
            Some(v) => Some(Holder(v)),
            None => None,
        }
    }
}

/// A buffer transition [`Holders`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HolderError {
    /// The index is past the end of the pool.
    #[error("buffer index {idx} is out of range for a pool of {count}")]
    IndexRange {
        /// Index given.
        idx: u32,
        /// Buffers in the pool.
        count: usize,
    },
    /// The buffer is held by someone else than the party that offered it.
    #[error("buffer {idx} is held by {held:?}, not by {claimed:?}")]
    NotHeld {
        /// Index given.
        idx: u32,
        /// Who holds it.
        held: Holder,
        /// Who claimed to.
        claimed: Holder,
    },
    /// The free stack is empty.
    #[error("no free buffer")]
    Exhausted,
    /// Allocation must hand the buffer to a party, not to [`Holder::FREE`].
    #[error("a buffer cannot be allocated to FREE; name the party that takes it")]
    AllocToFree,
}

/// The owner-private table saying who holds each buffer of one pool, with a count per holder
/// and (for pools the owner allocates from) a stack of free buffers.
///
/// It lives in the owner's private memory, never in shared memory, so a peer cannot forge it.
/// Every transition names the party that must hold the buffer now, so a handle offered by a
/// party that does not hold it is refused instead of being used twice.
#[derive(Debug, Clone)]
pub struct Holders {
    by_buf: Vec<Holder>,
    counts: Vec<u32>,
    free: Vec<u32>,
}

impl Holders {
    /// A table of `count` buffers (at most [`MAX_BUFS`]), all held by `initial`; with
    /// [`Holder::FREE`] they are all on the free stack, lowest index on top.
    pub fn new(count: usize, initial: Holder) -> Self {
        let count = count.min(MAX_BUFS);
        let mut counts = vec![0u32; 256];
        counts[initial.0 as usize] = count as u32;
        let free = if initial == Holder::FREE {
            (0..count as u32).rev().collect()
        } else {
            Vec::new()
        };
        Self {
            by_buf: vec![initial; count],
            counts,
            free,
        }
    }

    /// A table of `count` buffers, all on the free stack: a pool its owner allocates from.
    pub fn with_free_stack(count: usize) -> Self {
        Self::new(count, Holder::FREE)
    }

    /// Number of buffers.
    #[inline]
    pub fn len(&self) -> usize {
        self.by_buf.len()
    }

    /// Whether the pool has no buffers.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.by_buf.is_empty()
    }

    /// Who holds buffer `idx`, if it exists.
    #[inline]
    pub fn holder(&self, idx: BufIdx) -> Option<Holder> {
        self.by_buf.get(idx.0 as usize).copied()
    }

    /// How many buffers `h` holds.
    #[inline]
    pub fn count(&self, h: Holder) -> usize {
        self.counts[h.0 as usize] as usize
    }

    /// Moves buffer `idx` from `from` to `to`; refused, changing nothing, unless `from` holds
    /// it. Moving to [`Holder::FREE`] pushes it onto the free stack.
    #[inline]
    pub fn transfer(&mut self, idx: BufIdx, from: Holder, to: Holder) -> Result<(), HolderError> {
        let count = self.by_buf.len();
        let slot = self
            .by_buf
            .get_mut(idx.0 as usize)
            .ok_or(HolderError::IndexRange { idx: idx.0, count })?;
        if *slot != from {
            return Err(HolderError::NotHeld {
                idx: idx.0,
                held: *slot,
                claimed: from,
            });
        }
        if from == Holder::FREE {
            // Only `alloc` takes from the free stack; a free buffer named by index would leave
            // a stale stack entry.
            return Err(HolderError::NotHeld {
                idx: idx.0,
                held: *slot,
                claimed: from,
            });
        }
        *slot = to;
        self.counts[from.0 as usize] -= 1;
        self.counts[to.0 as usize] += 1;
        if to == Holder::FREE {
            self.free.push(idx.0);
        }
        Ok(())
    }

    /// Takes a buffer off the free stack for `to`.
    #[inline]
    pub fn alloc(&mut self, to: Holder) -> Result<BufIdx, HolderError> {
        if to == Holder::FREE {
            return Err(HolderError::AllocToFree);
        }
        let i = self.free.pop().ok_or(HolderError::Exhausted)?;
        self.by_buf[i as usize] = to;
        self.counts[Holder::FREE.0 as usize] -= 1;
        self.counts[to.0 as usize] += 1;
        Ok(BufIdx(i))
    }

    /// Returns buffer `idx`, held by `from`, to the free stack.
    #[inline]
    pub fn free(&mut self, idx: BufIdx, from: Holder) -> Result<(), HolderError> {
        self.transfer(idx, from, Holder::FREE)
    }

    /// Every buffer `departed` (not [`Holder::FREE`]) holds, moved to `to` (for a holder that went away: a crashed
    /// app, a reset queue). Calls `each` with every reclaimed index, returns how many.
    pub fn reclaim(&mut self, departed: Holder, to: Holder, mut each: impl FnMut(BufIdx)) -> usize {
        if departed == to || departed == Holder::FREE {
            return 0;
        }
        let mut n = 0;
        for (i, h) in self.by_buf.iter_mut().enumerate() {
            if *h == departed {
                *h = to;
                if to == Holder::FREE {
                    self.free.push(i as u32);
                }
                each(BufIdx(i as u32));
                n += 1;
            }
        }
        self.counts[departed.0 as usize] -= n as u32;
        self.counts[to.0 as usize] += n as u32;
        n
    }

    /// Buffers on the free stack.
    #[inline]
    pub fn free_count(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Memory;
    use proptest::prelude::*;

    #[test]
    fn layouts_are_validated() {
        assert_eq!(PoolLayout::new(1000, 4), Err(PoolError::BufSize(1000)));
        assert_eq!(
            PoolLayout::new(1 << 17, 4),
            Err(PoolError::BufSize(1 << 17))
        );
        assert!(
            PoolLayout::new(1 << 16, 4).is_ok(),
            "64 KiB buffers hold a TSO segment"
        );
        assert_eq!(PoolLayout::new(2048, 0), Err(PoolError::Count(0)));
        let l = PoolLayout::new(2048, 3).expect("ok");
        assert_eq!(l.pages(), 2, "three 2 KiB buffers round up to two pages");
    }

    #[test]
    fn buffers_are_bounds_checked() {
        let l = PoolLayout::new(2048, 4).expect("ok");
        let m = Memory::local(l.bytes());
        let p = Pool::new(PoolId(7), l, m.clone()).expect("pool");
        let h = p.handle(BufIdx(3)).expect("in range");
        let b = p.buf(h).expect("valid");
        assert_eq!(b.len(), 2048);
        b.write(2040, &[1; 8]).expect("inside the buffer");
        assert!(
            b.write(2041, &[1; 8]).is_err(),
            "cannot spill into the next buffer"
        );
        assert!(p.handle(BufIdx(4)).is_err());
        let foreign = BufHandle::new(PoolId(8), BufIdx(0)).expect("fits");
        assert_eq!(
            p.buf(foreign).err(),
            Some(PoolError::WrongPool { got: 8, want: 7 })
        );
        let mut t = PoolTable::new();
        t.insert(p.clone());
        assert!(t.buf(h).is_some());
        assert!(t.buf(BufHandle::from_raw(u32::MAX)).is_none());
        assert_eq!(t.free_id(), Some(PoolId(0)));
        // Memory smaller than the layout is refused.
        assert!(Pool::new(PoolId(1), l, m.sub(0, 4096).expect("in")).is_err());
    }

    #[test]
    fn holders_refuse_a_buffer_the_party_does_not_hold() {
        let mut h = Holders::new(4, Holder::APP);
        assert_eq!(h.transfer(BufIdx(1), Holder::APP, Holder::SERVER), Ok(()));
        assert_eq!(
            h.transfer(BufIdx(1), Holder::APP, Holder::SERVER),
            Err(HolderError::NotHeld {
                idx: 1,
                held: Holder::SERVER,
                claimed: Holder::APP
            }),
            "the same buffer cannot be handed over twice"
        );
        assert!(matches!(
            h.transfer(BufIdx(4), Holder::APP, Holder::SERVER),
            Err(HolderError::IndexRange { .. })
        ));
        assert_eq!((h.count(Holder::APP), h.count(Holder::SERVER)), (3, 1));
    }

    /// Found by `holders_stay_consistent`: allocating "to FREE" popped a buffer off the stack
    /// and left it free but unstacked, lost to every later `alloc`.
    #[test]
    fn alloc_to_free_is_refused_and_loses_nothing() {
        let mut h = Holders::with_free_stack(1);
        assert_eq!(h.alloc(Holder::FREE), Err(HolderError::AllocToFree));
        assert_eq!(h.alloc(Holder::APP), Ok(BufIdx(0)));
    }

    #[test]
    fn a_departed_holders_buffers_are_reclaimed() {
        let mut h = Holders::with_free_stack(6);
        let q = Holder::queue(1).expect("queue");
        let a = h.alloc(Holder::APP).expect("free");
        let b = h.alloc(q).expect("free");
        let c = h.alloc(Holder::APP).expect("free");
        assert_eq!((a, b, c), (BufIdx(0), BufIdx(1), BufIdx(2)));
        let mut got = Vec::new();
        assert_eq!(h.reclaim(Holder::APP, Holder::FREE, |i| got.push(i)), 2);
        assert_eq!(got, vec![a, c]);
        assert_eq!(h.count(Holder::APP), 0);
        assert_eq!(h.free_count(), 5);
        assert_eq!(h.holder(b), Some(q));
        // Freed buffers come back out of the stack.
        let mut seen: Vec<_> = (0..5)
            .map(|_| h.alloc(Holder::OWNER).expect("free"))
            .collect();
        seen.sort();
        assert_eq!(seen, [0, 2, 3, 4, 5].map(BufIdx).to_vec());
        assert_eq!(h.alloc(Holder::OWNER), Err(HolderError::Exhausted));
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            // Miri interprets every instruction: a few cases there, the full run natively.
            cases: if cfg!(miri) { 4 } else { 256 },
            failure_persistence: if cfg!(miri) { None } else { ProptestConfig::default().failure_persistence },
            ..ProptestConfig::default()
        })]
        #[test]
        fn handles_round_trip(pool in any::<u8>(), idx in 0u32..(1 << 24)) {
            let h = BufHandle::new(PoolId(pool), BufIdx(idx)).expect("fits");
            prop_assert_eq!(h.pool(), PoolId(pool));
            prop_assert_eq!(h.idx(), BufIdx(idx));
            prop_assert_eq!(BufHandle::from_raw(h.raw()), h);
        }

        #[test]
        fn indices_past_24_bits_have_no_handle(idx in (1u32 << 24)..) {
            prop_assert!(BufHandle::new(PoolId(0), BufIdx(idx)).is_none());
        }

        /// Whatever sequence of transitions is attempted, every buffer has exactly one
        /// holder, the counts match the table, and the free stack holds exactly the free
        /// buffers, once each.
        #[test]
        fn holders_stay_consistent(
            count in 1usize..40,
            ops in prop::collection::vec((0u8..4, 0u32..45, 0u8..6, 0u8..6), 0..300),
        ) {
            let mut h = Holders::with_free_stack(count);
            let parties = [Holder::FREE, Holder::OWNER, Holder::SERVER, Holder::APP, Holder::RING, Holder(20)];
            for (kind, idx, a, b) in ops {
                let (a, b) = (parties[a as usize], parties[b as usize]);
                match kind {
                    0 => { let _ = h.alloc(b); }
                    1 => { let _ = h.free(BufIdx(idx), a); }
                    2 => {
                        let before = h.holder(BufIdx(idx));
                        let r = h.transfer(BufIdx(idx), a, b);
                        prop_assert_eq!(r.is_ok(), before == Some(a) && a != Holder::FREE);
                    }
                    _ => { h.reclaim(a, b, |_| {}); }
                }
                let mut counts = [0usize; 256];
                for i in 0..count {
                    counts[h.holder(BufIdx(i as u32)).expect("exists").0 as usize] += 1;
                }
                for p in 0..=255u8 {
                    prop_assert_eq!(h.count(Holder(p)), counts[p as usize]);
                }
                let mut free = h.free.clone();
                free.sort_unstable();
                free.dedup();
                prop_assert_eq!(free.len(), h.free.len(), "no buffer is free twice");
                prop_assert_eq!(free.len(), counts[0]);
                for i in free {
                    prop_assert_eq!(h.holder(BufIdx(i)), Some(Holder::FREE));
                }
            }
        }
    }
}

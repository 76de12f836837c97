//! Lending buffers of a pool this domain **owns** to code that wants plain slices.
//!
//! A TCP/IP stack such as smoltcp reads a received frame from a `&[u8]` and writes a frame to
//! send into a `&mut [u8]`. Handing it a slice straight into a pool buffer saves the copy
//! between the ring buffer and the stack, but a slice is a reference, and the rule of this
//! crate is that no reference is formed into memory another party may write. [`OwnPool`] is
//! the one, narrow exception, and only for the **owner** of the pool:
//!
//! * it is built from the owner's [`Grant`], which only the granting side has (a peer that
//!   maps the pages holds a [`crate::grant::Mapping`], from which an `OwnPool` cannot be made):
//!   the server never lends from an app's memory;
//! * it keeps a table of which buffers this side holds right now. The ring protocol moves a
//!   buffer's holder: [`OwnPool::hand_over`] when it is published to the peer (fill or tx
//!   ring), [`OwnPool::take_back`] when the peer returns it (rx or completion ring). Only a
//!   held buffer can be lent, so the owner never lends a buffer the peer may legitimately be
//!   writing (one sitting on the fill ring, say);
//! * it also marks a buffer *lent* for the duration of each lend, and refuses a second lend of
//!   a lent buffer and a hand-over of a lent buffer: inside this process no two slices alias
//!   one buffer mutably. (Several buffers can be lent at once, which a stack needs: smoltcp
//!   builds a reply into a transmit buffer while the received frame is still borrowed.)
//!   The state lives in `Cell`s, so an `OwnPool` is `!Sync`: one thread drives it.
//!
//! **Residual risk, stated plainly.** The peer (the network server) maps the pool read-write,
//! because it must fill receive buffers. A peer that breaks the protocol and writes a buffer
//! while this side holds it races with the lent slice. The bytes are plain `u8`, which have no
//! invalid values, so what a misbehaving peer can achieve is torn or changing frame bytes
//! under a parser that already treats frame contents as hostile; formally it is a data race.
//! This is why the server is part of the *frame-delivery* trusted base of an app that lends
//! (it is anyway: it could deliver any bytes it likes in a well-behaved way), and why an app
//! that does not accept that trust copies the frame out with [`crate::Region::read`] instead.

use core::cell::Cell;

use crate::grant::Grant;
use crate::pool::{BufHandle, Pool, PoolError, PoolId, PoolLayout};

/// Something [`OwnPool`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LendError {
    /// The handle is not a buffer of this pool, or the length does not fit one.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The buffer is held by the peer (it sits on a ring): it cannot be lent or handed over
    /// again until the peer returns it.
    #[error("buffer {0:#x} is held by the peer, not by this side")]
    NotHeld(u32),
    /// The buffer is lent right now (a lend of it is running further up the stack).
    #[error("buffer {0:#x} is already lent")]
    Lent(u32),
    /// The peer returned a buffer this side already holds: a duplicate or invented handle.
    #[error("the peer returned buffer {0:#x}, which it did not hold")]
    AlreadyHeld(u32),
    /// The granted memory is not writable by the owner, or does not cover the pool.
    #[error("the grant does not cover a writable pool of this layout: {0}")]
    Memory(String),
}

/// A pool over memory this domain granted, able to lend its held buffers as slices.
///
/// Owns the grant, so the memory stays mapped for as long as any lend can happen.
pub struct OwnPool<G: Grant> {
    grant: G,
    pool: Pool,
    /// One bit per buffer: set while this side holds it.
    held: Box<[Cell<u64>]>,
    /// One bit per buffer: set while a lend of it runs.
    lent: Box<[Cell<u64>]>,
    held_count: Cell<usize>,
}

/// Clears a buffer's lent bit when the lend ends, however it ends.
struct LendGuard<'a> {
    word: &'a Cell<u64>,
    mask: u64,
}

impl Drop for LendGuard<'_> {
    fn drop(&mut self) {
        self.word.set(self.word.get() & !self.mask);
    }
}

impl<G: Grant> core::fmt::Debug for OwnPool<G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OwnPool")
            .field("pool", &self.pool)
            .field("held", &self.held_count.get())
            .finish()
    }
}

impl<G: Grant> OwnPool<G> {
    /// The pool `id` of `layout` at byte `offset` of the memory `grant` covers. Every buffer
    /// starts held by this side.
    pub fn new(grant: G, offset: usize, id: PoolId, layout: PoolLayout) -> Result<Self, LendError> {
        let mem = grant.memory();
        if !mem.is_writable() {
            return Err(LendError::Memory("the granter's view is read-only".into()));
        }
        let mem = mem
            .sub(offset, layout.buf_size * layout.count)
            .map_err(|e| LendError::Memory(e.to_string()))?;
        let pool = Pool::new(id, layout, mem)?;
        let words = layout.count.div_ceil(64);
        let s = Self {
            grant,
            pool,
            held: (0..words).map(|_| Cell::new(0)).collect(),
            lent: (0..words).map(|_| Cell::new(0)).collect(),
            held_count: Cell::new(0),
        };
        s.reclaim_all();
        Ok(s)
    }

    /// Renames the pool (a new server assigns the id its handles carry). Only between
    /// servers: call it when the previous peer is gone, before any buffer is handed over.
    pub fn set_id(&mut self, id: PoolId) -> Result<(), LendError> {
        self.pool = Pool::new(id, self.pool.layout(), self.pool.memory().clone())?;
        Ok(())
    }

    /// The grant the pool lives in (to send its references and attachments to a peer).
    pub fn grant(&self) -> &G {
        &self.grant
    }

    /// The pool (id, layout, memory) for handle checks and access through its `Region`.
    #[inline]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// How many buffers this side holds.
    #[inline]
    pub fn held_count(&self) -> usize {
        self.held_count.get()
    }

    #[inline]
    fn bit(&self, h: BufHandle) -> Result<(usize, u64), LendError> {
        self.pool.check(h)?;
        let i = h.idx().0 as usize;
        Ok((i / 64, 1u64 << (i % 64)))
    }

    /// Whether this side holds `h` (false for a handle that is not of this pool).
    #[inline]
    pub fn holds(&self, h: BufHandle) -> bool {
        match self.bit(h) {
            Ok((w, m)) => self.held[w].get() & m != 0,
            Err(_) => false,
        }
    }

    /// Records that `h` goes to the peer (published on the fill or tx ring). Refused while
    /// the buffer is lent or not held.
    #[inline]
    pub fn hand_over(&self, h: BufHandle) -> Result<(), LendError> {
        let (w, m) = self.bit(h)?;
        if self.held[w].get() & m == 0 {
            return Err(LendError::NotHeld(h.raw()));
        }
        if self.lent[w].get() & m != 0 {
            return Err(LendError::Lent(h.raw()));
        }
        self.held[w].set(self.held[w].get() & !m);
        self.held_count.set(self.held_count.get() - 1);
        Ok(())
    }

    /// Records that the peer returned `h` (on the rx or completion ring). A handle of another
    /// pool, out of range, or already held is refused and changes nothing.
    #[inline]
    pub fn take_back(&self, h: BufHandle) -> Result<(), LendError> {
        let (w, m) = self.bit(h)?;
        if self.held[w].get() & m != 0 {
            return Err(LendError::AlreadyHeld(h.raw()));
        }
        self.held[w].set(self.held[w].get() | m);
        self.held_count.set(self.held_count.get() + 1);
        Ok(())
    }

    /// Takes every buffer back: the peer is gone (it died or detached) and holds nothing.
    /// Lends in progress are unaffected (they hold buffers this side already held).
    pub fn reclaim_all(&self) {
        let count = self.pool.layout().count;
        for w in self.held.iter() {
            w.set(u64::MAX);
        }
        let tail = count % 64;
        if let (Some(last), true) = (self.held.last(), tail != 0) {
            last.set((1u64 << tail) - 1);
        }
        self.held_count.set(count);
    }

    /// Marks `len` bytes of held buffer `h` lent and returns their start and the guard that
    /// ends the lend.
    #[inline]
    fn start_lend(&self, h: BufHandle, len: usize) -> Result<(*mut u8, LendGuard<'_>), LendError> {
        let (w, m) = self.bit(h)?;
        if self.held[w].get() & m == 0 {
            return Err(LendError::NotHeld(h.raw()));
        }
        if self.lent[w].get() & m != 0 {
            return Err(LendError::Lent(h.raw()));
        }
        self.pool.layout().check_len(len)?;
        self.lent[w].set(self.lent[w].get() | m);
        let guard = LendGuard {
            word: &self.lent[w],
            mask: m,
        };
        // In range: check() above bounded the index, and Pool::new checked that the memory
        // covers count * buf_size bytes.
        let p = self
            .pool
            .region()
            .as_ptr()
            .wrapping_add(self.pool.offset(h.idx()));
        Ok((p, guard))
    }

    /// Calls `f` with the first `len` bytes of held buffer `h` (a received frame), in place.
    #[inline]
    pub fn lend<R>(
        &self,
        h: BufHandle,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R, LendError> {
        let (p, _guard) = self.start_lend(h, len)?;
        // Why this is sound: `p..p+len` lies inside the pool memory (index and length checked by
        // `start_lend` against a layout `Pool::new` verified the memory covers), which stays
        // mapped because `self` owns the grant. This side holds the buffer (held bit checked),
        // so by the ring protocol no other party writes it; within this process no other slice
        // of it exists, because `start_lend` refused a buffer already lent and set the lent bit
        // until `_guard` drops after `f` returns. The peer breaking the protocol is the
        // residual risk stated in the module docs: the bytes are plain u8, no invalid values.
        // SAFETY: in bounds, mapped, held by this side and lent once (reasons above).
        let s = unsafe { core::slice::from_raw_parts(p as *const u8, len) };
        Ok(f(s))
    }

    /// Calls `f` with the first `len` bytes of held buffer `h`, writable in place (to build a
    /// frame before handing the buffer over on the tx ring).
    #[inline]
    pub fn lend_mut<R>(
        &self,
        h: BufHandle,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, LendError> {
        if !self.pool.region().is_writable() {
            return Err(LendError::Memory("the pool memory is read-only".into()));
        }
        let (p, _guard) = self.start_lend(h, len)?;
        // Why this is sound: in bounds and mapped as for `lend`; this side holds the buffer, so by the
        // ring protocol the peer does not touch it until it is handed over (and `hand_over`
        // refuses a lent buffer); the lent bit makes this the only slice of the buffer alive in
        // this process until `_guard` drops; the memory is writable (checked above and by
        // `new`). A protocol-breaking peer is the residual risk the module docs state.
        // SAFETY: in bounds, mapped, writable, held by this side and lent once (reasons above).
        let s = unsafe { core::slice::from_raw_parts_mut(p, len) };
        Ok(f(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{Access, DomId, GrantBackend};
    use crate::pool::{BufIdx, PAGE_SIZE};
    use crate::shm::ShmBackend;

    fn own_pool(count: usize) -> OwnPool<<ShmBackend as GrantBackend>::Grant> {
        let layout = PoolLayout::new(2048, count).expect("layout");
        let be = ShmBackend::new(DomId(1));
        let g = be
            .grant(DomId(0), 1 + layout.pages(), Access::ReadWrite)
            .expect("grant");
        OwnPool::new(g, PAGE_SIZE, PoolId(3), layout).expect("own pool")
    }

    #[test]
    fn lent_bytes_are_the_buffer_in_place() {
        let p = own_pool(8);
        let h = p.pool().handle(BufIdx(5)).expect("handle");
        p.lend_mut(h, 64, |b| b.copy_from_slice(&[0xab; 64]))
            .expect("lend_mut");
        // The bytes are in the granted memory, where the peer's mapping sees them.
        let mut out = [0u8; 64];
        p.pool()
            .buf(h)
            .expect("buf")
            .read(0, &mut out)
            .expect("read");
        assert_eq!(out, [0xab; 64]);
        let sum: u32 = p
            .lend(h, 64, |b| b.iter().map(|&x| x as u32).sum())
            .expect("lend");
        assert_eq!(sum, 0xab * 64);
    }

    #[test]
    fn only_held_buffers_are_lent_and_each_once() {
        let p = own_pool(70);
        assert_eq!(p.held_count(), 70);
        let h = p.pool().handle(BufIdx(65)).expect("handle");
        p.hand_over(h).expect("hand over");
        assert_eq!(p.held_count(), 69);
        assert_eq!(p.lend(h, 10, |_| ()), Err(LendError::NotHeld(h.raw())));
        assert_eq!(p.hand_over(h), Err(LendError::NotHeld(h.raw())));
        p.take_back(h).expect("take back");
        assert_eq!(p.take_back(h), Err(LendError::AlreadyHeld(h.raw())));
        // A second lend of a lent buffer, and handing a lent buffer over, are refused; a lend
        // of another buffer at the same time is fine.
        let other = p.pool().handle(BufIdx(1)).expect("handle");
        p.lend(h, 10, |_| {
            assert_eq!(p.lend_mut(h, 10, |_| ()), Err(LendError::Lent(h.raw())));
            assert_eq!(p.hand_over(h), Err(LendError::Lent(h.raw())));
            p.lend_mut(other, 10, |b| b[0] = 1).expect("other buffer");
        })
        .expect("lend");
        // The lend ended: the buffer can go.
        p.hand_over(h).expect("hand over after lend");
        p.reclaim_all();
        assert_eq!(p.held_count(), 70);
        assert!(p.holds(h));
    }

    #[test]
    fn foreign_handles_and_long_lengths_are_refused() {
        let p = own_pool(4);
        let foreign = BufHandle::new(PoolId(9), BufIdx(0)).expect("handle");
        assert!(matches!(
            p.lend(foreign, 1, |_| ()),
            Err(LendError::Pool(PoolError::WrongPool { .. }))
        ));
        let past = BufHandle::new(PoolId(3), BufIdx(4)).expect("handle");
        assert!(matches!(
            p.take_back(past),
            Err(LendError::Pool(PoolError::IndexRange { .. }))
        ));
        let h = p.pool().handle(BufIdx(0)).expect("handle");
        assert!(matches!(
            p.lend(h, 2049, |_| ()),
            Err(LendError::Pool(PoolError::Length { .. }))
        ));
    }
}

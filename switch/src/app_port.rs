//! The server's side of an app's port: a [`pmd::Port`] over the four rings and the pool the
//! app granted, every word of which the app can write at any time.
//!
//! # Directions
//!
//! - `rx_burst` takes frames the app queued on its **tx** ring. Each descriptor is copied out
//!   once and checked by grant-pool's validating consumer (pool, index, length, and that the
//!   app holds the buffer at that moment); then the frame must be at least an Ethernet
//!   header long (else it is dropped, counted `runt`, and its buffer goes back to the app).
//!   The port does not look at the frame's bytes: the app can rewrite them at any time, so
//!   the switch copies each header once and makes every decision on that copy. The port
//!   says so with [`Port::admission`]: the app's MAC (the only source its frames may carry,
//!   pinned to the port in the switch's FDB) and its rate limit ([`AppPort::set_rate`]).
//! - `tx_burst` publishes frames on the app's **rx** ring. The app reads only its own pool
//!   ([`Port::tx_pools`] is that pool alone), so the switch first copies each frame into a
//!   buffer of the app's pool that it got from `alloc`; a full ring refuses the rest and the
//!   switch counts the drop.
//! - `alloc` takes empty buffers the app offered on its **fill** ring (validated the same way).
//!
//! # How buffers travel back (the rules)
//!
//! Every buffer of the app's pool is, according to the server's private holder table, held
//! by the app or by the server; the server never trusts the app's idea of it.
//!
//! 1. App → server: a buffer becomes the server's when it is taken off the tx or fill ring
//!    after validation (a descriptor naming a buffer the app does not hold is refused and
//!    counted `not_held`).
//! 2. Server → app, with a frame: on the **rx** ring.
//! 3. Server → app, without a frame: on the **completion** ring. That is every app buffer
//!    the switch gives back to this port with `reclaim`: a frame the app sent once the
//!    destination finished with it (or the switch dropped it: spoofed, over the rate, …), a
//!    refused frame (runt), and a
//!    fill buffer the switch took but did not need. When the completion ring is full they
//!    wait in a stash (one slot per buffer of the pool, allocated at attach) and go out with
//!    the next poll.
//! 4. Buffers of other pools never reach the app: `tx_done` has nothing to report, and a fill
//!    or tx descriptor naming another pool is refused (`bad_pool`).
//! 5. When the app goes away the port is removed from the switch and dropped: the mapping
//!    is unmapped, and buffers of the app's pool still in flight elsewhere come back to the
//!    switch as orphans (counted, never touched).
//!
//! # Wakeups
//!
//! After publishing, the server kicks the app's notifier only when the app armed need-wakeup
//! on the ring. In the other direction the port arms need-wakeup on the app's tx ring only
//! when the switch is about to sleep ([`Port::prepare_wait`], which also drains stale rings
//! and then looks once more for work that raced the flag), and withdraws it at the first poll
//! after the sleep: while the switch polls, the app queues frames without a system call. An
//! app that queues frames, or takes buffers off a full completion ring, while the flag is up
//! kicks the server's notifier. That notifier's descriptor is the port's [`Port::wait_fd`]:
//! the switch sleeps in `poll` on it and on every other port's.
//!
//! Buffers stashed for a full completion ring do not keep the switch awake: only the app can
//! make room, and it rings when it does while the switch sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use grant_pool::{
    BufHandle, Desc, Mapping, Notifier, Pool, PoolId, PoolSet, PortLimits, RejectCounters,
    ServerPort,
};
use pmd::{Admission, Frame, LinkState, Mac, Port, PortStats, TxOffloads};

use crate::ctl::PortCounters;
use crate::forward::{ETH_HEADER, MAX_BURST};

/// When the server forwarded its first frame, shared by every port of one server.
#[derive(Debug)]
pub struct FirstFrame {
    start: std::time::Instant,
    ns: AtomicU64,
}

impl FirstFrame {
    /// Nothing forwarded yet; times count from `start`.
    pub fn new(start: std::time::Instant) -> Self {
        Self {
            start,
            ns: AtomicU64::new(u64::MAX),
        }
    }

    /// Records "now" unless a time is recorded already; returns whether this call did.
    pub fn mark(&self) -> bool {
        let ns = self.start.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        self.ns
            .compare_exchange(u64::MAX, ns, Relaxed, Relaxed)
            .is_ok()
    }

    /// Nanoseconds from start to the first forwarded frame, if any.
    pub fn get(&self) -> Option<u64> {
        let v = self.ns.load(Relaxed);
        (v != u64::MAX).then_some(v)
    }
}

/// Counters of an app port, readable from the control thread while the switch runs (the
/// switch thread writes them once per burst).
#[derive(Debug, Default)]
pub struct AppCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    runt: AtomicU64,
    index_ahead: AtomicU64,
    bad_pool: AtomicU64,
    bad_index: AtomicU64,
    bad_len: AtomicU64,
    not_held: AtomicU64,
    bad_meta: AtomicU64,
    /// Buffers the server itself could not hand back (a server bug if ever non-zero).
    own_errors: AtomicU64,
    /// Times the server rang the app's doorbell.
    kicks: AtomicU64,
    /// Times the server found the app's doorbell rung (rings that arrive while one is
    /// pending merge into one).
    kicks_in: AtomicU64,
    /// The granter (the app) is gone: its grant's unmap-notify fired.
    granter_gone: AtomicBool,
}

impl AppCounters {
    /// Times the server rang the app's doorbell (notification suppression keeps this far
    /// below the frames delivered).
    pub fn kicks(&self) -> u64 {
        self.kicks.load(Relaxed)
    }

    /// Times the server found the app's doorbell rung: at most the app's own count of its
    /// kicks, since rings that arrive while one is pending merge.
    pub fn kicks_in(&self) -> u64 {
        self.kicks_in.load(Relaxed)
    }

    /// Whether the switch saw the app go: its grant lost its granter (the app's process
    /// died; its domain's kernel cleared the grant's granter-alive byte), or it closed its
    /// doorbell. The control thread detaches such a port, as it does a socket app whose
    /// connection closed.
    pub fn granter_gone(&self) -> bool {
        self.granter_gone.load(Relaxed)
    }

    /// A copy in the control protocol's shape. The switch's drops (spoofed frames among
    /// them: the switch checks the source MAC) are not the port's: the server adds them.
    pub fn snapshot(&self) -> PortCounters {
        let l = |a: &AtomicU64| a.load(Relaxed);
        let mut c = PortCounters {
            rx_packets: l(&self.rx_packets),
            rx_bytes: l(&self.rx_bytes),
            rx_dropped: l(&self.runt),
            tx_packets: l(&self.tx_packets),
            tx_bytes: l(&self.tx_bytes),
            tx_dropped: l(&self.tx_dropped),
            errors: 0,
            runt: l(&self.runt),
            index_ahead: l(&self.index_ahead),
            bad_pool: l(&self.bad_pool),
            bad_index: l(&self.bad_index),
            bad_len: l(&self.bad_len),
            not_held: l(&self.not_held),
            bad_meta: l(&self.bad_meta),
            kicks_to_app: l(&self.kicks),
            kicks_from_app: l(&self.kicks_in),
            ..PortCounters::default()
        };
        c.errors = c.runt
            + c.index_ahead
            + c.bad_pool
            + c.bad_index
            + c.bad_len
            + c.not_held
            + c.bad_meta
            + l(&self.own_errors);
        c
    }
}

#[inline]
fn set(a: &AtomicU64, v: u64) {
    a.store(v, Relaxed);
}

/// Counts kept privately on the switch thread and published once per burst.
#[derive(Debug, Default, Clone, Copy)]
struct Local {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    tx_dropped: u64,
    runt: u64,
    ring_faults: u64,
    kicks: u64,
    kicks_in: u64,
}

/// An app's port on the switch. `M` keeps the app's memory mapped; `N` rings the app.
pub struct AppPort<M: Mapping, N: Notifier> {
    name: String,
    mac: Mac,
    /// Most frames and bytes a second the app may send (0: no limit).
    rate: (u64, u64),
    /// Whether the configuration fixed `mac` (see [`Admission::fixed`]).
    mac_fixed: bool,
    sp: ServerPort,
    notifier: N,
    pools: [Pool; 1],
    own: PoolSet,
    descs: Box<[Desc; MAX_BURST]>,
    stash: Vec<Desc>,
    /// Fill buffers `alloc` handed out and the switch gave back unused (`unalloc`): served
    /// first by the next `alloc`, never put on the completion ring.
    spare: Vec<BufHandle>,
    empty_polls: u32,
    armed: bool,
    marked: bool,
    local: Local,
    shared: Arc<AppCounters>,
    first: Arc<FirstFrame>,
    // Declared last: dropped after everything that points into the mapping.
    _mapping: M,
}

impl<M: Mapping, N: Notifier> std::fmt::Debug for AppPort<M, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppPort")
            .field("name", &self.name)
            .field("pool", &self.sp.pool.id())
            .finish_non_exhaustive()
    }
}

/// Why an app's memory could not become a port.
#[derive(Debug, thiserror::Error)]
pub enum AppPortError {
    /// The port memory is not a valid port (header, size, limits).
    #[error("port memory: {0}")]
    Port(#[from] grant_pool::PortError),
    /// The port header disagrees with what the app said in its grant message.
    #[error("the port header says {header}, the grant message says {message}")]
    Mismatch {
        /// Field values in the memory's header.
        header: String,
        /// Field values in the message.
        message: String,
    },
}

impl<M: Mapping, N: Notifier> AppPort<M, N> {
    /// Attaches to an app's port in `mapping` (validated by `ServerPort::attach` against
    /// `limits` and the mapping's size) and checks the header against the grant message's
    /// layout `want` (`[rx, tx, fill, comp, buf_size, buf_count]`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        mac: Mac,
        mapping: M,
        notifier: N,
        pool: PoolId,
        limits: PortLimits,
        want: [u32; 6],
        first: Arc<FirstFrame>,
    ) -> Result<Self, AppPortError> {
        let sp = ServerPort::attach(mapping.memory().clone(), pool, limits)?;
        let got = layout_of(&sp.layout.header());
        if got != want {
            return Err(AppPortError::Mismatch {
                header: format!("{got:?}"),
                message: format!("{want:?}"),
            });
        }
        let count = sp.layout.pool().count;
        Ok(Self {
            name: name.to_owned(),
            mac,
            rate: (0, 0),
            mac_fixed: false,
            pools: [sp.pool.clone()],
            own: PoolSet::of(pool),
            sp,
            notifier,
            descs: Box::new([Desc::default(); MAX_BURST]),
            stash: Vec::with_capacity(count),
            spare: Vec::with_capacity(MAX_BURST),
            empty_polls: 0,
            armed: false,
            marked: false,
            local: Local::default(),
            shared: Arc::new(AppCounters::default()),
            first,
            _mapping: mapping,
        })
    }

    /// The layout (`[rx, tx, fill, comp, buf_size, buf_count]`) the port header in `mem`
    /// announces, for transports whose handshake carries none (xenstore). Read once, copied;
    /// [`AppPort::new`] reads and validates the header again, so a change in between is
    /// refused as a mismatch.
    pub fn header_layout(mem: grant_pool::Region) -> Result<[u32; 6], AppPortError> {
        let mut raw = [0u8; core::mem::size_of::<grant_pool::port::PortHeader>()];
        mem.read(0, &mut raw).map_err(grant_pool::PortError::from)?;
        let h = <grant_pool::port::PortHeader as zerocopy::FromBytes>::read_from_bytes(&raw)
            .map_err(|_| grant_pool::PortError::Magic(0))?;
        Ok(layout_of(&h))
    }

    /// Limits the app to `frames_per_sec` frames and `bytes_per_sec` bytes a second (0: no
    /// limit), enforced by the switch from the port's [`Port::admission`]: set it before the
    /// port is added.
    pub fn set_rate(&mut self, frames_per_sec: u64, bytes_per_sec: u64) {
        self.rate = (frames_per_sec, bytes_per_sec);
    }

    /// Says that the configuration gave the app its MAC, so that it takes the MAC over from
    /// a station learned elsewhere ([`Admission::fixed`]): set it before the port is added.
    pub fn set_mac_fixed(&mut self, fixed: bool) {
        self.mac_fixed = fixed;
    }

    /// The counters, shareable with the control thread.
    pub fn counters(&self) -> Arc<AppCounters> {
        self.shared.clone()
    }

    /// The pool id the app's buffers carry.
    pub fn pool_id(&self) -> PoolId {
        self.sp.pool.id()
    }

    /// Buffers of the app's pool the server holds right now (in the switch, in other ports'
    /// queues, or waiting for room on the completion ring).
    pub fn held_by_server(&self) -> usize {
        self.sp.holders.count(grant_pool::Holder::SERVER)
    }

    /// For the fuzz harnesses (`fuzzing` feature): buffers waiting in the stash for room on
    /// the completion ring, and the times the server tried to hand back a buffer it did not
    /// hold (a double hand-out caught by the holder table).
    #[cfg(feature = "fuzzing")]
    #[doc(hidden)]
    pub fn fuzz_accounting(&self) -> (usize, u64) {
        (self.stash.len(), self.sp.own_errors)
    }

    fn publish(&mut self) {
        let r: RejectCounters = self.sp.rejects();
        let s = &self.shared;
        set(&s.rx_packets, self.local.rx_packets);
        set(&s.rx_bytes, self.local.rx_bytes);
        set(&s.tx_packets, self.local.tx_packets);
        set(&s.tx_bytes, self.local.tx_bytes);
        set(&s.tx_dropped, self.local.tx_dropped);
        set(&s.runt, self.local.runt);
        set(&s.index_ahead, r.index_ahead + self.local.ring_faults);
        set(&s.bad_pool, r.bad_pool);
        set(&s.bad_index, r.bad_index);
        set(&s.bad_len, r.bad_len);
        set(&s.not_held, r.not_held);
        set(&s.bad_meta, r.bad_meta);
        set(&s.own_errors, self.sp.own_errors);
        set(&s.kicks, self.local.kicks);
        set(&s.kicks_in, self.local.kicks_in);
    }

    /// Flags the counters when the app's grant lost its granter (checked when idle).
    fn check_granter(&self) {
        if !self._mapping.granter_alive() {
            self.shared.granter_gone.store(true, Relaxed);
        }
    }

    /// Queues a server-held buffer of the app's pool for the completion ring.
    #[inline]
    fn give_back(&mut self, h: BufHandle) {
        // At most one stash slot per buffer: the holder table makes each buffer the
        // server's at most once, and the stash was sized to the pool at attach.
        if self.stash.len() < self.stash.capacity() {
            self.stash.push(Desc::new(h, 0));
        } else {
            self.sp.own_errors += 1;
        }
    }

    /// Publishes stashed buffers on the completion ring, as many as fit.
    fn flush_comp(&mut self) {
        if self.stash.is_empty() {
            return;
        }
        match self.sp.give_comp(&self.stash) {
            Ok(used) => {
                self.stash.drain(..used);
                if used > 0 && self.sp.comp.needs_wakeup() {
                    let _ = self.notifier.notify();
                    self.local.kicks += 1;
                }
            }
            // The app wrote an impossible consumer index on its completion ring: count it,
            // keep the buffers (they are the app's loss, not anybody else's).
            Err(_) => self.local.ring_faults += 1,
        }
    }
}

/// A port header's layout as `[rx, tx, fill, comp, buf_size, buf_count]`.
fn layout_of(h: &grant_pool::port::PortHeader) -> [u32; 6] {
    [
        h.rx_size,
        h.tx_size,
        h.fill_size,
        h.comp_size,
        h.buf_size,
        h.buf_count,
    ]
}

impl<M: Mapping, N: Notifier> Drop for AppPort<M, N> {
    fn drop(&mut self) {
        // Everything of the app's pool goes with the mapping: what the app held, what sat on
        // its rings, and what the server still held (stashed for completion or queued at
        // other ports, which come back to the switch as orphans).
        tracing::info!(
            port = %self.name,
            held_by_server = self.held_by_server(),
            stashed = self.stash.len(),
            "app port unmapped"
        );
    }
}

impl<M: Mapping + 'static, N: Notifier + 'static> Port for AppPort<M, N> {
    fn name(&self) -> &str {
        &self.name
    }

    fn mac(&self) -> Mac {
        self.mac
    }

    fn link(&self) -> LinkState {
        LinkState::Up { mbps: 0 }
    }

    fn stats(&self) -> PortStats {
        let c = self.shared.snapshot();
        PortStats {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            rx_dropped: c.rx_dropped,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            tx_dropped: c.tx_dropped,
            errors: c.errors,
        }
    }

    fn tx_pools(&self) -> PoolSet {
        self.own
    }

    fn own_pools(&self) -> PoolSet {
        self.own
    }

    fn pools(&self) -> &[Pool] {
        &self.pools
    }

    fn tx_offloads(&self) -> TxOffloads {
        // The app's stack takes segments up to a buffer whole and verifies only what is
        // neither partial nor verified.
        TxOffloads {
            max_gso_frame: self.pools[0].layout().buf_size.min(u16::MAX as usize) as u32,
            partial_csum: true,
        }
    }

    fn admission(&self) -> Option<Admission> {
        Some(Admission {
            mac: self.mac,
            frames_per_sec: self.rate.0,
            bytes_per_sec: self.rate.1,
            fixed: self.mac_fixed,
        })
    }

    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        self.flush_comp();
        let n = out.len().min(MAX_BURST);
        let got = self.sp.take_tx(&mut self.descs[..n]);
        let mut k = 0;
        for i in 0..got {
            let d = self.descs[i];
            let h = d.buf();
            if (d.len as usize) < ETH_HEADER {
                self.local.runt += 1;
                self.give_back(h);
                continue;
            }
            out[k] = Frame {
                buf: h,
                len: d.len,
                meta: d.meta,
            };
            self.local.rx_packets += 1;
            self.local.rx_bytes += d.len as u64;
            k += 1;
        }
        if self.armed {
            // The first poll after a sleep: the switch is polling again, so the app need not
            // ring (anything it queued after this store is seen by a later poll, or by
            // `prepare_wait`'s re-check before the next sleep).
            self.armed = false;
            self.sp.tx.ring().clear_need_wakeup();
        }
        if got == 0 {
            self.empty_polls = self.empty_polls.saturating_add(1);
        } else {
            self.empty_polls = 0;
        }
        if got > 0 {
            self.flush_comp();
        }
        // Counters go out with every busy poll and every 64th idle one (rejected
        // descriptors leave a poll empty but must still show up).
        if got > 0 || self.empty_polls % 64 == 1 {
            self.publish();
            if got == 0 {
                self.check_granter();
            }
        }
        k
    }

    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        let n = frames.len().min(MAX_BURST);
        for (d, f) in self.descs[..n].iter_mut().zip(frames) {
            *d = Desc {
                meta: f.meta,
                ..Desc::new(f.buf, f.len)
            };
        }
        let used = match self.sp.give_rx(&self.descs[..n]) {
            Ok(u) => u,
            Err(_) => {
                self.local.ring_faults += 1;
                0
            }
        };
        for f in &frames[..used] {
            self.local.tx_packets += 1;
            self.local.tx_bytes += f.len as u64;
        }
        self.local.tx_dropped += (frames.len() - used) as u64;
        if used > 0 {
            if !self.marked {
                self.marked = true;
                if self.first.mark() {
                    tracing::info!(
                        port = %self.name,
                        ms = self.first.get().unwrap_or(0) as f64 / 1e6,
                        "first frame forwarded"
                    );
                }
            }
            if self.sp.rx.needs_wakeup() {
                let _ = self.notifier.notify();
                self.local.kicks += 1;
            }
        }
        self.publish();
        used
    }

    fn prepare_wait(&mut self) -> bool {
        // Rings that arrived while the switch was busy are stale now (counted: the app's
        // kicks as the server sees them).
        match self.notifier.drain() {
            Ok(true) => {
                self.local.kicks_in += 1;
                self.publish();
            }
            Ok(false) => {}
            // The app closed its doorbell (or it broke): it can no longer ring or be rung.
            // The control thread detaches it; until then the switch does not wait on it.
            Err(_) => self.shared.granter_gone.store(true, Relaxed),
        }
        // A dead app's kernel rang its doorbell too (unmap-notify): look at the grant.
        self.check_granter();
        self.flush_comp();
        self.armed = true;
        // `set_need_wakeup` looks once more for a frame queued before the flag was visible
        // (that one did not ring). An impossible index is the app's fault: counted, and it
        // does not keep the switch awake.
        let frames = match self.sp.tx.ring().set_need_wakeup() {
            Ok(ready) => ready,
            Err(_) => {
                self.local.ring_faults += 1;
                false
            }
        };
        // Buffers still stashed wait for room on the completion ring. The app rings when it
        // makes room while the flag is up; room it made before the flag was visible (that
        // did not ring) shows here, after the flag's fence.
        let room = !self.stash.is_empty() && matches!(self.sp.comp.reserve(1), Ok(1));
        frames || room
    }

    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        // A closed doorbell polls readable for ever: not a reason to wake.
        (!self.shared.granter_gone()).then(|| self.notifier.poll_fd())
    }

    fn tx_done(&mut self, _out: &mut [BufHandle]) -> usize {
        // Frames published on the rx ring are the app's now; nothing comes back this way.
        0
    }

    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        let n = out.len().min(MAX_BURST);
        let kept = self.spare.len().min(n);
        for o in &mut out[..kept] {
            *o = self.spare.pop().unwrap_or(BufHandle::from_raw(0));
        }
        let got = self.sp.take_fill(&mut self.descs[..n - kept]);
        for (o, d) in out[kept..].iter_mut().zip(&self.descs[..got]) {
            *o = d.buf();
        }
        kept + got
    }

    fn unalloc(&mut self, bufs: &[BufHandle]) {
        let own = self.sp.pool.id();
        for &h in bufs {
            if h.pool() == own && self.spare.len() < self.spare.capacity() {
                self.spare.push(h);
            } else if h.pool() == own {
                self.give_back(h);
            }
        }
    }

    fn reclaim(&mut self, bufs: &[BufHandle]) {
        let own = self.sp.pool.id();
        for &h in bufs {
            if h.pool() == own {
                self.give_back(h);
            }
        }
        self.flush_comp();
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grant_pool::shm::ShmBackend;
    use grant_pool::{Access, BufIdx, DomId, Grant, GrantBackend, GrantRef, PortLayout};

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    /// An app's end and the server's end of one port over a real shm grant, in one process.
    fn pair(
        rings: [u32; 4],
        bufs: usize,
    ) -> (
        grant_pool::AppPort,
        grant_pool::shm::ShmGrant,
        AppPort<grant_pool::shm::ShmMapping, grant_pool::shm::ShmNotifier>,
    ) {
        let (app, g, port, _bell) = pair_with(rings, bufs, |m| m);
        (app, g, port)
    }

    /// A mapping whose granter's death the test decides (what the `xen` backend reads from
    /// the grant's control page, cleared by the dead app's unmap-notify).
    struct Watched {
        inner: grant_pool::shm::ShmMapping,
        alive: Arc<AtomicBool>,
    }

    impl Mapping for Watched {
        fn memory(&self) -> &grant_pool::Memory {
            self.inner.memory()
        }
        fn granter(&self) -> DomId {
            self.inner.granter()
        }
        fn access(&self) -> Access {
            self.inner.access()
        }
        fn pages(&self) -> usize {
            self.inner.pages()
        }
        fn granter_alive(&self) -> bool {
            self.alive.load(Relaxed)
        }
    }

    /// [`pair`], with the server's mapping wrapped by `wrap`.
    fn pair_with<M: Mapping>(
        rings: [u32; 4],
        bufs: usize,
        wrap: impl FnOnce(grant_pool::shm::ShmMapping) -> M,
    ) -> (
        grant_pool::AppPort,
        grant_pool::shm::ShmGrant,
        AppPort<M, grant_pool::shm::ShmNotifier>,
        grant_pool::shm::ShmNotifier,
    ) {
        let layout =
            PortLayout::new(rings, grant_pool::PoolLayout::new(2048, bufs).unwrap()).unwrap();
        let app_be = ShmBackend::new(DomId(1));
        let srv_be = ShmBackend::new(DomId(0));
        let grant = app_be
            .grant(DomId(0), layout.pages(), Access::ReadWrite)
            .unwrap();
        let mut app =
            grant_pool::AppPort::create(grant.memory().clone(), layout, PoolId(0)).unwrap();
        app.pool = Pool::new(PoolId(7), layout.pool(), app.pool.memory().clone()).unwrap();
        let fds: Vec<std::os::fd::OwnedFd> = grant
            .attachments()
            .iter()
            .map(|f| f.try_clone_to_owned().unwrap())
            .collect();
        let refs: Vec<GrantRef> = grant.refs().to_vec();
        let mapping = srv_be
            .map(DomId(1), &refs, Access::ReadWrite, &fds)
            .unwrap();
        // The server makes the doorbell and hands the app its end.
        let mut notifier = srv_be.notifier(DomId(1)).unwrap();
        let n = app_be
            .bind_notifier(DomId(0), 0, &notifier.take_attachments())
            .unwrap();
        let h = layout.header();
        let port = AppPort::new(
            "t",
            MAC,
            wrap(mapping),
            notifier,
            PoolId(7),
            PortLimits::default(),
            layout_of(&h),
            Arc::new(FirstFrame::new(std::time::Instant::now())),
        )
        .unwrap();
        (app, grant, port, n)
    }

    fn frame(app: &grant_pool::AppPort, i: u32, src: Mac) -> Desc {
        let h = app.pool.handle(BufIdx(i)).unwrap();
        let mut f = [0u8; 60];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&src);
        app.pool.buf(h).unwrap().write(0, &f).unwrap();
        Desc::new(h, 60)
    }

    /// Buffer `i` as a frame shorter than an Ethernet header.
    fn runt(app: &grant_pool::AppPort, i: u32) -> Desc {
        Desc::new(app.pool.handle(BufIdx(i)).unwrap(), 10)
    }

    fn send(app: &mut grant_pool::AppPort, ds: &[Desc]) {
        let n = app.tx.reserve(ds.len() as u32).unwrap();
        assert_eq!(n as usize, ds.len());
        for (i, d) in ds.iter().enumerate() {
            app.tx.write(i as u32, *d);
        }
        app.tx.publish(n);
    }

    fn completions(app: &mut grant_pool::AppPort) -> Vec<u32> {
        let n = app.comp.peek(64).unwrap();
        let v = (0..n).map(|i| app.comp.read(i).buf().idx().0).collect();
        app.comp.release(n);
        v
    }

    #[test]
    fn refused_frames_wait_for_room_on_a_full_completion_ring() {
        let (mut app, _g, mut port) = pair([8, 8, 8, 2], 32);
        let runts: Vec<Desc> = (0..5).map(|i| runt(&app, i)).collect();
        send(&mut app, &runts);
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 32];
        assert_eq!(port.rx_burst(&mut out), 0);
        assert_eq!(port.counters().snapshot().runt, 5);
        // Two fit on the completion ring, three wait; each poll moves what fits.
        let mut back = completions(&mut app);
        assert_eq!(back.len(), 2);
        for _ in 0..4 {
            port.rx_burst(&mut out);
            back.extend(completions(&mut app));
        }
        back.sort_unstable();
        assert_eq!(back, vec![0, 1, 2, 3, 4], "each buffer back exactly once");
        assert_eq!(port.held_by_server(), 0);
    }

    #[test]
    fn a_full_completion_ring_lets_the_switch_sleep_and_room_made_for_it_wakes_it() {
        let (mut app, _g, mut port) = pair([8, 8, 8, 2], 32);
        let runts: Vec<Desc> = (0..5).map(|i| runt(&app, i)).collect();
        send(&mut app, &runts);
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 32];
        port.rx_burst(&mut out);
        // Two on the completion ring, three stashed. Polling cannot move them until the app
        // makes room, so the switch may sleep (it used to keep polling, never sleeping).
        assert!(!port.wants_poll());
        assert!(!port.prepare_wait(), "nothing the switch can do now");
        assert!(
            app.tx.needs_wakeup(),
            "the app is asked to ring when it makes room"
        );
        // Each time the switch goes back to sleep it moves what fits into the room made.
        assert_eq!(completions(&mut app).len(), 2);
        assert!(!port.prepare_wait());
        assert_eq!(completions(&mut app).len(), 2);
        assert!(!port.prepare_wait());
        assert_eq!(completions(&mut app).len(), 1);
        assert_eq!(port.held_by_server(), 0);
        // The first poll after the sleep withdraws the request.
        port.rx_burst(&mut out);
        assert!(!app.tx.needs_wakeup());
    }

    #[test]
    fn a_polling_switch_does_not_ask_the_app_to_ring() {
        let (mut app, _g, mut port) = pair([8, 8, 8, 8], 32);
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 32];
        for _ in 0..1000 {
            port.rx_burst(&mut out);
        }
        // Only a switch about to sleep asks for a kick: an app ringing a switch that polls
        // pays a system call per frame for nothing.
        assert!(!app.tx.needs_wakeup());
        assert!(!port.prepare_wait());
        assert!(app.tx.needs_wakeup());
        let d = frame(&app, 3, MAC);
        send(&mut app, &[d]);
        assert_eq!(port.rx_burst(&mut out), 1);
        assert!(!app.tx.needs_wakeup());
    }

    #[test]
    fn frames_in_fill_buffers_reach_rx_and_sent_buffers_come_back_on_completion() {
        let (mut app, _g, mut port) = pair([8, 8, 8, 8], 32);
        // The app offers buffers 10..14 on fill; the server takes two with alloc.
        let n = app.fill.reserve(4).unwrap();
        for i in 0..n {
            let h = app.pool.handle(BufIdx(10 + i)).unwrap();
            app.fill.write(i, Desc::new(h, 0));
        }
        app.fill.publish(n);
        let mut got = [BufHandle::from_raw(0); 2];
        assert_eq!(port.alloc(&mut got), 2);
        assert_eq!(got[0].pool(), PoolId(7));
        // One carries a frame to the app (rx), the other is unused and given back.
        assert_eq!(port.tx_burst(&[Frame::new(got[0], 60)]), 1);
        port.reclaim(&[got[1]]);
        let n = app.rx.peek(8).unwrap();
        assert_eq!(n, 1);
        assert_eq!(app.rx.read(0).buf(), got[0]);
        app.rx.release(1);
        assert_eq!(completions(&mut app), vec![got[1].idx().0]);
        // A frame the app sends is the server's until the switch reclaims it, then it comes
        // back on completion; reclaiming it twice does not hand it back twice.
        let d = frame(&app, 3, MAC);
        send(&mut app, &[d]);
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
        assert_eq!(port.rx_burst(&mut out), 1);
        assert_eq!(out[0].buf.idx(), BufIdx(3));
        assert_eq!(port.held_by_server(), 1);
        port.reclaim(&[out[0].buf]);
        port.reclaim(&[out[0].buf]);
        assert_eq!(completions(&mut app), vec![3]);
        assert_eq!(port.held_by_server(), 0);
        assert_eq!(
            port.counters().snapshot().errors,
            1,
            "the double reclaim is counted"
        );
    }

    #[test]
    fn a_completion_batch_the_app_waits_for_rings_once_and_counts_one_kick() {
        let (mut app, _g, mut port) = pair([8, 8, 8, 8], 32);
        let ds: Vec<Desc> = (0..3).map(|i| frame(&app, i, MAC)).collect();
        send(&mut app, &ds);
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
        assert_eq!(port.rx_burst(&mut out), 3);
        // Not armed: buffers go back without a kick.
        port.reclaim(&[out[0].buf]);
        assert_eq!(port.local.kicks, 0);
        assert_eq!(completions(&mut app), vec![0]);
        // Armed: one batch, one kick.
        assert!(!app.comp.set_need_wakeup().unwrap(), "the ring is empty");
        port.reclaim(&[out[1].buf, out[2].buf]);
        assert_eq!(port.local.kicks, 1, "one kick for one batch");
        assert_eq!(completions(&mut app), vec![1, 2]);
    }

    #[test]
    fn a_full_rx_ring_refuses_the_rest() {
        let (mut app, _g, mut port) = pair([2, 8, 8, 8], 32);
        let n = app.fill.reserve(4).unwrap();
        for i in 0..n {
            let h = app.pool.handle(BufIdx(i)).unwrap();
            app.fill.write(i, Desc::new(h, 0));
        }
        app.fill.publish(n);
        let mut got = [BufHandle::from_raw(0); 4];
        assert_eq!(port.alloc(&mut got), 4);
        let frames: Vec<Frame> = got.iter().map(|&h| Frame::new(h, 60)).collect();
        assert_eq!(port.tx_burst(&frames), 2);
        assert_eq!(port.stats().tx_dropped, 2);
    }

    #[test]
    fn a_dead_granter_is_flagged_once_the_port_idles_or_sleeps() {
        let alive = Arc::new(AtomicBool::new(true));
        let a = alive.clone();
        let (mut app, _g, mut port, _bell) =
            pair_with([8, 8, 8, 8], 32, move |m| Watched { inner: m, alive: a });
        let c = port.counters();
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
        // Busy and idle while the app lives: nothing flagged.
        let d = frame(&app, 1, MAC);
        send(&mut app, &[d]);
        assert_eq!(port.rx_burst(&mut out), 1);
        for _ in 0..200 {
            port.rx_burst(&mut out);
        }
        port.prepare_wait();
        assert!(!c.granter_gone());
        // The app dies: an idle poll notices it, as does the switch before it sleeps.
        alive.store(false, Relaxed);
        for _ in 0..64 {
            port.rx_burst(&mut out);
        }
        assert!(c.granter_gone(), "an idle port looks at its granter");
        let (_app, _g, mut port, _bell) = pair_with([8, 8, 8, 8], 32, |m| Watched {
            inner: m,
            alive: Arc::new(AtomicBool::new(false)),
        });
        let c = port.counters();
        assert!(!c.granter_gone());
        port.prepare_wait();
        assert!(c.granter_gone(), "checked before the switch sleeps");
    }

    #[test]
    fn an_app_that_closes_its_doorbell_is_flagged_gone_and_not_waited_on() {
        let (_app, _g, mut port, bell) = pair_with([8, 8, 8, 8], 32, |m| m);
        let c = port.counters();
        port.prepare_wait();
        assert!(!c.granter_gone());
        assert!(port.wait_fd().is_some());
        drop(bell);
        port.prepare_wait();
        assert!(c.granter_gone(), "a closed doorbell is the app's departure");
        assert!(
            port.wait_fd().is_none(),
            "a closed doorbell polls readable for ever: the switch does not wait on it"
        );
    }

    #[test]
    fn kicks_from_the_app_are_counted_when_the_server_drains_its_doorbell() {
        let (_app, _g, mut port, bell) = pair_with([8, 8, 8, 8], 32, |m| m);
        port.prepare_wait();
        assert_eq!(port.counters().snapshot().kicks_from_app, 0);
        // Two rings before the server looks merge into one wakeup.
        bell.notify().expect("ring");
        bell.notify().expect("ring");
        port.prepare_wait();
        bell.notify().expect("ring");
        port.prepare_wait();
        let c = port.counters().snapshot();
        assert_eq!(c.kicks_from_app, 2);
        assert_eq!(c.kicks_to_app, 0);
    }
}

//! A port wrapper that injects faults: it drops, duplicates, corrupts and delays frames in
//! both directions and stalls the port for whole intervals, each decision drawn from a
//! seeded generator so that a failing run can be repeated.
//!
//! Ownership stays exact under every fault: a frame dropped on receive goes back to the inner
//! port, one dropped on transmit comes back to the caller through `tx_done` as if sent; a
//! duplicate is a copy in a buffer allocated from the inner port, which this wrapper gives back
//! itself; delayed frames are held here and released in order of their due time. Corruption
//! flips one byte of a received frame (a buffer the wrapper owns at that moment); transmitted
//! frames are never written, since they may live in another party's pool.
//!
//! Everything is allocated when the wrapper is made: at most [`HELD_MAX`] frames are held or
//! owed each way, and a fault that would need more room is not injected.
//!
//! The injected drops are added to the inner port's `rx_dropped`/`tx_dropped`, so `ferrite
//! stats` shows them; [`FaultPort::probe`] counts each kind.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use grant_pool::{BufHandle, Pool, PoolId, PoolSet, PoolTable};

use crate::{Admission, Frame, LinkState, Mac, MacHeader, Port, PortStats, TxOffloads};

/// Most frames held back, or owed back through `tx_done`, in each direction.
pub const HELD_MAX: usize = 4096;
/// Largest burst the wrapper passes through whole.
const BURST_MAX: usize = 1024;

/// Which faults to inject and how often. Chances are per frame and direction, from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Seed of the generator: the same seed and traffic give the same faults.
    pub seed: u64,
    /// Chance that a frame is dropped.
    pub drop: f64,
    /// Chance that a frame is delivered twice.
    pub duplicate: f64,
    /// Chance that one byte of a received frame is flipped.
    pub corrupt: f64,
    /// Chance that a frame is held back for [`FaultConfig::delay_by`] (later frames may pass it).
    pub delay: f64,
    /// How long a delayed frame is held.
    pub delay_by: Duration,
    /// Every this often, the port stalls: it receives and sends nothing.
    pub stall_every: Option<Duration>,
    /// How long each stall lasts.
    pub stall_for: Duration,
}

impl Default for FaultConfig {
    /// No faults.
    fn default() -> Self {
        Self {
            seed: 1,
            drop: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            delay: 0.0,
            delay_by: Duration::from_micros(500),
            stall_every: None,
            stall_for: Duration::from_millis(10),
        }
    }
}

impl FaultConfig {
    /// Refuses chances outside 0..=1 and a stall that never ends.
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in [
            ("drop", self.drop),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
            ("delay", self.delay),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a chance from 0 to 1, not {p}"));
            }
        }
        if let Some(every) = self.stall_every
            && self.stall_for >= every
        {
            return Err("a stall must be shorter than the interval between stalls".into());
        }
        Ok(())
    }
}

/// Faults injected so far, readable after the port is handed to a switch (cloned `Arc`).
#[derive(Debug, Default)]
pub struct FaultProbe {
    /// Received frames dropped.
    pub rx_dropped: AtomicU64,
    /// Frames to send dropped.
    pub tx_dropped: AtomicU64,
    /// Frames delivered twice (either direction).
    pub duplicated: AtomicU64,
    /// Received frames with a byte flipped.
    pub corrupted: AtomicU64,
    /// Frames held back (either direction).
    pub delayed: AtomicU64,
    /// Stalls begun.
    pub stalls: AtomicU64,
}

impl FaultProbe {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// xorshift64*: small, fast and good enough to draw fault decisions from.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Never zero (a fixed point); spread small seeds.
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with chance `p`.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A frame to send held back, with the MACs it was handed over with.
#[derive(Debug, Clone, Copy)]
struct HeldTx {
    due: Instant,
    frame: Frame,
    mac: Option<MacHeader>,
}

/// A port whose traffic passes through a fault injector (see the module docs).
pub struct FaultPort {
    inner: Box<dyn Port>,
    cfg: FaultConfig,
    rng: Rng,
    /// The inner port's pools: received frames are corrupted and duplicated through them.
    pools: PoolTable,
    held_rx: VecDeque<(Instant, Frame)>,
    held_tx: VecDeque<HeldTx>,
    /// Handles of frames "sent" without reaching the inner port, for the next `tx_done`.
    tx_back: Vec<BufHandle>,
    /// Inner-port buffers holding transmitted duplicates: taken back, not handed up.
    tx_copies: Vec<BufHandle>,
    scratch: Vec<Frame>,
    bytes: Vec<u8>,
    next_stall: Option<Instant>,
    stalled_until: Option<Instant>,
    counts: Arc<FaultProbe>,
}

impl std::fmt::Debug for FaultPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPort")
            .field("inner", &self.inner.name())
            .field("cfg", &self.cfg)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl FaultPort {
    /// Wraps `inner`; `cfg` must pass [`FaultConfig::check`].
    pub fn new(inner: Box<dyn Port>, cfg: FaultConfig) -> Result<Self, String> {
        cfg.check()?;
        let mut pools = PoolTable::new();
        for p in inner.pools() {
            pools.insert(p.clone());
        }
        Ok(Self {
            inner,
            rng: Rng::new(cfg.seed),
            pools,
            held_rx: VecDeque::with_capacity(HELD_MAX),
            held_tx: VecDeque::with_capacity(HELD_MAX),
            tx_back: Vec::with_capacity(HELD_MAX),
            tx_copies: Vec::with_capacity(HELD_MAX),
            scratch: vec![Frame::new(BufHandle::from_raw(0), 0); BURST_MAX],
            bytes: vec![0; 1 << 16],
            next_stall: cfg.stall_every.map(|e| Instant::now() + e),
            stalled_until: None,
            counts: Arc::default(),
            cfg,
        })
    }

    /// The fault counters, shared.
    pub fn probe(&self) -> Arc<FaultProbe> {
        self.counts.clone()
    }

    /// Whether the port is inside a stall now (and starts or ends one as the clock says).
    fn stalled(&mut self, now: Instant) -> bool {
        if let Some(until) = self.stalled_until {
            if now < until {
                return true;
            }
            self.stalled_until = None;
        }
        if let (Some(at), Some(every)) = (self.next_stall, self.cfg.stall_every)
            && now >= at
        {
            self.next_stall = Some(at + every);
            self.stalled_until = Some(now + self.cfg.stall_for);
            bump(&self.counts.stalls);
            return true;
        }
        false
    }

    /// A copy of received frame `f` in a buffer of the inner port, if one is free.
    fn copy_of(&mut self, f: Frame) -> Option<Frame> {
        let mut h = [f.buf];
        if self.inner.alloc(&mut h) != 1 {
            return None;
        }
        let len = (f.len as usize).min(self.bytes.len());
        let ok = match (self.pools.buf(f.buf), self.pools.buf(h[0])) {
            (Some(src), Some(dst)) => {
                src.read(0, &mut self.bytes[..len]).is_ok()
                    && dst.write(0, &self.bytes[..len]).is_ok()
            }
            _ => false,
        };
        if !ok {
            self.inner.unalloc(&h);
            return None;
        }
        Some(Frame { buf: h[0], ..f })
    }

    /// Flips one byte of received frame `f` (a buffer of the inner port this wrapper holds).
    fn corrupt(&mut self, f: Frame) {
        let Some(b) = self.pools.buf(f.buf) else {
            return;
        };
        let at = (self.rng.next() % u64::from(f.len.max(1))) as usize;
        let mut byte = [0u8];
        if b.read(at, &mut byte).is_ok() && b.write(at, &[byte[0] ^ 0xff]).is_ok() {
            bump(&self.counts.corrupted);
        }
    }

    /// Sends the held frames that are due, in order, while the inner port takes them.
    fn release_tx(&mut self, now: Instant) {
        while let Some(h) = self.held_tx.front().copied() {
            if h.due > now {
                break;
            }
            let taken = match h.mac {
                Some(m) => self.inner.tx_burst_with_macs(&[h.frame], &[m]),
                None => self.inner.tx_burst(&[h.frame]),
            };
            if taken == 0 {
                break;
            }
            self.held_tx.pop_front();
        }
    }

    /// Hands `frames` (with `macs`, index for index) to the inner port; returns how many it
    /// took, from the front.
    fn pass(&mut self, frames: &[Frame], macs: Option<&[MacHeader]>) -> usize {
        if frames.is_empty() {
            return 0;
        }
        match macs {
            Some(m) => self.inner.tx_burst_with_macs(frames, m),
            None => self.inner.tx_burst(frames),
        }
    }

    /// `tx_burst`, and with `macs` `tx_burst_with_macs`: runs of frames without a fault go to
    /// the inner port whole; a faulted frame is handled after the run before it was taken.
    fn send(&mut self, frames: &[Frame], macs: Option<&[MacHeader]>) -> usize {
        let now = Instant::now();
        if self.stalled(now) {
            return 0;
        }
        self.release_tx(now);
        let mut start = 0;
        for i in 0..frames.len() {
            let drop = self.tx_back.len() < HELD_MAX && self.rng.chance(self.cfg.drop);
            let delay = !drop && self.held_tx.len() < HELD_MAX && self.rng.chance(self.cfg.delay);
            let dup = !drop
                && !delay
                && self.tx_copies.len() < HELD_MAX
                && self.rng.chance(self.cfg.duplicate);
            if !(drop || delay || dup) {
                continue;
            }
            // The clean run before this frame first.
            let run = &frames[start..i];
            let took = self.pass(run, macs.map(|m| &m[start..i]));
            if took < run.len() {
                return start + took;
            }
            let f = frames[i];
            let mac = macs.and_then(|m| m.get(i).copied());
            if drop {
                bump(&self.counts.tx_dropped);
                self.tx_back.push(f.buf);
            } else if delay {
                bump(&self.counts.delayed);
                self.held_tx.push_back(HeldTx {
                    due: now + self.cfg.delay_by,
                    frame: f,
                    mac,
                });
            } else {
                // The frame, then (its pool permitting) a copy of it.
                let took = self.pass(&[f], mac.as_ref().map(core::slice::from_ref));
                if took == 0 {
                    return i;
                }
                if let Some(c) = self.copy_of(f) {
                    let sent = self.pass(&[c], mac.as_ref().map(core::slice::from_ref));
                    if sent == 1 {
                        bump(&self.counts.duplicated);
                        self.tx_copies.push(c.buf);
                    } else {
                        self.inner.unalloc(&[c.buf]);
                    }
                }
            }
            start = i + 1;
        }
        let run = &frames[start..];
        start + self.pass(run, macs.map(|m| &m[start..]))
    }
}

impl Port for FaultPort {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn mac(&self) -> Mac {
        self.inner.mac()
    }
    fn link(&self) -> LinkState {
        self.inner.link()
    }
    fn stats(&self) -> PortStats {
        let mut s = self.inner.stats();
        s.rx_dropped += FaultProbe::get(&self.counts.rx_dropped);
        s.tx_dropped += FaultProbe::get(&self.counts.tx_dropped);
        s
    }
    fn tx_pools(&self) -> PoolSet {
        self.inner.tx_pools()
    }
    fn own_pools(&self) -> PoolSet {
        self.inner.own_pools()
    }
    fn pools(&self) -> &[Pool] {
        self.inner.pools()
    }
    fn tx_offloads(&self) -> TxOffloads {
        self.inner.tx_offloads()
    }
    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        self.inner.grant_tx_pool(pool)
    }
    fn admission(&self) -> Option<Admission> {
        self.inner.admission()
    }
    /// Frames of `pool` still held here are given up (back through `tx_done`) first: the
    /// pool's owner is leaving.
    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        let back = &mut self.tx_back;
        self.held_tx.retain(|h| {
            let keep = h.frame.buf.pool() != pool;
            if !keep {
                back.push(h.frame.buf);
            }
            keep
        });
        self.inner.revoke_tx_pool(pool)
    }

    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        let now = Instant::now();
        if self.stalled(now) {
            return 0;
        }
        let mut n = 0;
        while n < out.len()
            && let Some(&(due, f)) = self.held_rx.front()
            && due <= now
        {
            out[n] = f;
            n += 1;
            self.held_rx.pop_front();
        }
        let want = (out.len() - n).min(BURST_MAX);
        let mut got = std::mem::take(&mut self.scratch);
        let k = self.inner.rx_burst(&mut got[..want]);
        for (j, &f) in got[..k].iter().enumerate() {
            // Room kept for every frame still to come: a duplicate takes only spare room.
            let spare = out.len() - n - (k - j);
            if self.rng.chance(self.cfg.drop) {
                bump(&self.counts.rx_dropped);
                self.inner.reclaim(&[f.buf]);
                continue;
            }
            if self.rng.chance(self.cfg.corrupt) {
                self.corrupt(f);
            }
            if self.held_rx.len() < HELD_MAX && self.rng.chance(self.cfg.delay) {
                bump(&self.counts.delayed);
                self.held_rx.push_back((now + self.cfg.delay_by, f));
                continue;
            }
            out[n] = f;
            n += 1;
            if spare > 0
                && self.rng.chance(self.cfg.duplicate)
                && let Some(c) = self.copy_of(f)
            {
                bump(&self.counts.duplicated);
                out[n] = c;
                n += 1;
            }
        }
        self.scratch = got;
        n
    }

    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.send(frames, None)
    }

    fn tx_burst_with_macs(&mut self, frames: &[Frame], macs: &[MacHeader]) -> usize {
        self.send(frames, Some(macs))
    }

    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        self.release_tx(Instant::now());
        let mut n = 0;
        while n < out.len()
            && let Some(h) = self.tx_back.pop()
        {
            out[n] = h;
            n += 1;
        }
        let k = self.inner.tx_done(&mut out[n..]);
        // Duplicates this wrapper made go back to the inner port, not to the caller.
        let mut kept = n;
        for j in n..n + k {
            let h = out[j];
            if let Some(at) = self.tx_copies.iter().position(|&c| c == h) {
                self.tx_copies.swap_remove(at);
                self.inner.reclaim(&[h]);
            } else {
                out[kept] = h;
                kept += 1;
            }
        }
        kept
    }

    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        self.inner.alloc(out)
    }
    fn alloc_len(&mut self, out: &mut [BufHandle], len: usize) -> usize {
        self.inner.alloc_len(out, len)
    }
    fn reclaim(&mut self, bufs: &[BufHandle]) {
        self.inner.reclaim(bufs)
    }
    fn unalloc(&mut self, bufs: &[BufHandle]) {
        self.inner.unalloc(bufs)
    }
    fn wants_poll(&self) -> bool {
        !self.held_rx.is_empty() || !self.held_tx.is_empty() || self.inner.wants_poll()
    }
    fn prepare_wait(&mut self) -> bool {
        // Held frames fall due without the inner port seeing any input.
        !self.held_rx.is_empty() || !self.held_tx.is_empty() || self.inner.prepare_wait()
    }
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.wait_fd()
    }
}

impl Drop for FaultPort {
    fn drop(&mut self) {
        // Held received frames belong to the inner port again.
        let held: Vec<BufHandle> = self.held_rx.drain(..).map(|(_, f)| f.buf).collect();
        self.inner.reclaim(&held);
    }
}

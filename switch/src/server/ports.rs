//! Building the configured (NIC) ports from `[[ports]]` entries.

use std::sync::Arc;

use grant_pool::{BufHandle, Pool, PoolId, PoolSet};
use pmd::{Admission, Frame, LinkState, Mac, MacHeader, Port, PortStats, TxOffloads};

use super::config::{PortSection, parse_mac};
use crate::app_port::FirstFrame;

/// A configured port that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("ports[{index}] ({name}, backend {backend}): {message}")]
pub struct PortOpenError {
    /// Index in the config's `ports`.
    pub index: usize,
    /// The port's name.
    pub name: String,
    /// The backend.
    pub backend: String,
    /// What went wrong.
    pub message: String,
}

/// Opens port `i` of the config with pool id `pool`.
pub fn open(i: usize, p: &PortSection, pool: PoolId) -> Result<Box<dyn Port>, PortOpenError> {
    prepare(i, p, pool)?.activate()
}

/// A configured port made ready without holding its NIC: its memory, rings and sockets
/// exist, but it is not bound to its interface (or, for `intel`, the device is not opened).
/// What a warm spare holds while another server runs.
pub struct Prepared {
    index: usize,
    name: String,
    backend: String,
    kind: Kind,
    faults: Option<pmd::fault::FaultConfig>,
}

enum Kind {
    /// Holds nothing another server needs (`sim`).
    Ready(Box<dyn Port>),
    AfPacket(pmd::af_packet::PreparedAfPacket),
    AfXdp(pmd::af_xdp::PreparedAfXdp),
    /// The device's registers are the server's alone: opened at activation.
    Intel(pmd::intel::IntelConfig),
}

impl Prepared {
    /// Takes the NIC: binds the port to its interface or opens the device.
    pub fn activate(self) -> Result<Box<dyn Port>, PortOpenError> {
        let (index, name, backend) = (self.index, self.name, self.backend);
        let err = |m: String| PortOpenError {
            index,
            name: name.clone(),
            backend: backend.clone(),
            message: m,
        };
        let port: Box<dyn Port> = match self.kind {
            Kind::Ready(p) => p,
            Kind::AfPacket(p) => Box::new(p.activate().map_err(|e| err(e.to_string()))?),
            Kind::AfXdp(p) => Box::new(p.activate().map_err(|e| err(e.to_string()))?),
            Kind::Intel(c) => {
                Box::new(pmd::intel::IntelPort::open(&c).map_err(|e| err(e.to_string()))?)
            }
        };
        let Some(f) = self.faults else {
            return Ok(port);
        };
        tracing::warn!(port = %name, faults = ?f, "injecting faults into the port's traffic");
        Ok(Box::new(pmd::fault::FaultPort::new(port, f).map_err(err)?))
    }
}

/// Prepares every configured port, each with the pool id of its place in `cfg.ports`.
pub fn prepare_all(cfg: &super::Config) -> Result<Vec<Prepared>, PortOpenError> {
    cfg.ports
        .iter()
        .enumerate()
        .map(|(i, p)| prepare(i, p, PoolId(i as u8)))
        .collect()
}

/// Prepares port `i` of the config with pool id `pool` (see [`Prepared`]).
pub fn prepare(i: usize, p: &PortSection, pool: PoolId) -> Result<Prepared, PortOpenError> {
    let err = |m: String| PortOpenError {
        index: i,
        name: p.name.clone(),
        backend: p.backend.clone(),
        message: m,
    };
    let ifname = p.ifname.clone().unwrap_or_default();
    let kind = match p.backend.as_str() {
        "sim" => {
            let mac = p
                .mac
                .as_deref()
                .and_then(parse_mac)
                .unwrap_or([0x02, 0xfe, 0xff, 0, 0, i as u8]);
            let mut c = pmd::sim::SimConfig::new(p.name.clone(), mac, pool);
            c.generate = p.generate.unwrap_or(false);
            c.limit = p.limit;
            if let Some(l) = p.frame_len {
                c.frame_len = l;
            }
            if let Some(d) = p.dst.as_deref().and_then(parse_mac) {
                c.dst = pmd::sim::MacPattern::Fixed(d);
            }
            if let Some(b) = p.buf_size {
                c.buf_size = b;
            }
            if let Some(b) = p.bufs {
                c.spare_bufs = b;
            }
            Kind::Ready(Box::new(
                pmd::sim::SimPort::new(c).map_err(|e| err(e.to_string()))?,
            ))
        }
        "af_packet" => {
            // The receive ring is a pool of its own, from the top of the id space down (apps
            // take the lowest free ids): frames go from the kernel's ring straight into the
            // copy the switch makes for their destination.
            let ring = PoolId(u8::MAX - i as u8);
            let mut c = pmd::af_packet::AfPacketConfig::in_place(&ifname, pool, ring);
            if let Some(b) = p.bufs {
                c.bufs = b;
            }
            if let Some(b) = p.buf_size {
                c.buf_size = b;
            }
            Kind::AfPacket(
                pmd::af_packet::AfPacketPort::prepare(c).map_err(|e| err(e.to_string()))?,
            )
        }
        "af_xdp" => {
            let mut c = pmd::af_xdp::AfXdpConfig::new(&ifname, pool);
            if let Some(q) = p.queue {
                c.queue = q;
            }
            if let Some(b) = p.bufs {
                c.bufs = b;
            }
            if let Some(b) = p.buf_size {
                c.buf_size = b;
            }
            Kind::AfXdp(pmd::af_xdp::AfXdpPort::prepare(c).map_err(|e| err(e.to_string()))?)
        }
        "intel" => {
            let mut c = pmd::intel::IntelConfig {
                pci: p.pci.clone().unwrap_or_default(),
                pool,
                ..Default::default()
            };
            if let Some(b) = p.bufs {
                c.bufs = b as u32;
            }
            // The large transmit pool (TSO) takes an id from the top of the id space, as
            // af_packet's ring does.
            if p.tso.unwrap_or(true) {
                c.large_pool = Some(PoolId(u8::MAX - i as u8));
            }
            Kind::Intel(c)
        }
        other => return Err(err(format!("unknown backend '{other}'"))),
    };
    Ok(Prepared {
        index: i,
        name: p.name.clone(),
        backend: p.backend.clone(),
        kind,
        faults: p.faults.as_ref().map(|f| f.config()),
    })
}

/// A configured port as the switch sees it: the port itself, plus the mark of the server's
/// first forwarded frame (one flag test per transmit burst).
///
/// A revocation the port refuses (frames of the pool still in flight) takes the pool out of
/// the `tx_pools` this wrapper reports at once, so that after [`crate::Switch::refresh_port`]
/// the switch copies frames of that pool instead of handing them over while the port
/// drains; a later successful revocation or a new grant clears it.
pub struct Marked {
    inner: Box<dyn Port>,
    marked: bool,
    first: Arc<FirstFrame>,
    withdrawn: PoolSet,
}

impl Marked {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Port>, first: Arc<FirstFrame>) -> Self {
        Self {
            inner,
            marked: false,
            first,
            withdrawn: PoolSet::EMPTY,
        }
    }

    /// Records the server's first forwarded frame once `sent` frames went out.
    #[inline]
    fn mark(&mut self, sent: usize) {
        if sent > 0 && !self.marked {
            self.marked = true;
            if self.first.mark() {
                tracing::info!(
                    port = %self.inner.name(),
                    ms = self.first.get().unwrap_or(0) as f64 / 1e6,
                    "first frame forwarded"
                );
            }
        }
    }
}

impl Port for Marked {
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
        self.inner.stats()
    }
    fn tx_pools(&self) -> PoolSet {
        let mut s = self.inner.tx_pools();
        for k in 0..=u8::MAX {
            if self.withdrawn.contains(PoolId(k)) {
                s.remove(PoolId(k));
            }
        }
        s
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
        let ok = self.inner.grant_tx_pool(pool);
        if ok {
            self.withdrawn.remove(pool.id());
        }
        ok
    }
    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        self.withdrawn.insert(pool);
        let ok = self.inner.revoke_tx_pool(pool);
        if ok {
            self.withdrawn.remove(pool);
        }
        ok
    }
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        self.inner.rx_burst(out)
    }
    fn admission(&self) -> Option<Admission> {
        self.inner.admission()
    }
    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        let n = self.inner.tx_burst(frames);
        self.mark(n);
        n
    }
    fn tx_burst_with_macs(&mut self, frames: &[Frame], macs: &[MacHeader]) -> usize {
        let n = self.inner.tx_burst_with_macs(frames, macs);
        self.mark(n);
        n
    }
    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        self.inner.tx_done(out)
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
        self.inner.wants_poll()
    }
    fn prepare_wait(&mut self) -> bool {
        self.inner.prepare_wait()
    }
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.inner.wait_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A port that takes every offload and counts the buffers that come back by `unalloc`
    /// and by `reclaim`.
    #[derive(Default)]
    struct Capable {
        unalloced: Arc<AtomicUsize>,
        reclaimed: Arc<AtomicUsize>,
    }

    impl Port for Capable {
        fn name(&self) -> &str {
            "capable"
        }
        fn mac(&self) -> Mac {
            [2, 0, 0, 0, 0, 1]
        }
        fn link(&self) -> LinkState {
            LinkState::Down
        }
        fn stats(&self) -> PortStats {
            PortStats::default()
        }
        fn tx_pools(&self) -> PoolSet {
            PoolSet::EMPTY
        }
        fn own_pools(&self) -> PoolSet {
            PoolSet::EMPTY
        }
        fn tx_offloads(&self) -> TxOffloads {
            TxOffloads::ALL
        }
        fn rx_burst(&mut self, _out: &mut [Frame]) -> usize {
            0
        }
        fn tx_burst(&mut self, _frames: &[Frame]) -> usize {
            0
        }
        fn tx_done(&mut self, _out: &mut [BufHandle]) -> usize {
            0
        }
        fn alloc(&mut self, _out: &mut [BufHandle]) -> usize {
            0
        }
        fn alloc_len(&mut self, out: &mut [BufHandle], len: usize) -> usize {
            // Long frames get buffers of a large pool.
            usize::from(len > 2048).min(out.len())
        }
        fn reclaim(&mut self, bufs: &[BufHandle]) {
            self.reclaimed.fetch_add(bufs.len(), Ordering::Relaxed);
        }
        fn unalloc(&mut self, bufs: &[BufHandle]) {
            self.unalloced.fetch_add(bufs.len(), Ordering::Relaxed);
        }
    }

    /// The wrapper every configured port runs in passes on what the port takes, where its
    /// buffers for long frames come from and how it takes back unused buffers: without it a NIC that takes 64 KiB TCP segments had every
    /// one cut in software.
    #[test]
    fn marked_passes_on_offloads_and_unalloc() {
        let inner = Capable::default();
        let (unalloced, reclaimed) = (inner.unalloced.clone(), inner.reclaimed.clone());
        let first = Arc::new(FirstFrame::new(std::time::Instant::now()));
        let mut m = Marked::new(Box::new(inner), first);
        assert_eq!(m.tx_offloads(), TxOffloads::ALL);
        let h = BufHandle::new(PoolId(1), grant_pool::BufIdx(0)).expect("a valid handle");
        m.unalloc(&[h; 3]);
        m.reclaim(&[h]);
        assert_eq!(unalloced.load(Ordering::Relaxed), 3);
        assert_eq!(reclaimed.load(Ordering::Relaxed), 1);
        let mut b = [h];
        assert_eq!(m.alloc_len(&mut b, 60_000), 1, "long frames' buffers");
    }
}

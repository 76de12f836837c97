//! [`XenBackend`]: the [`GrantBackend`] traits over gntalloc, gntdev and evtchn.
//!
//! # Layout of a grant
//!
//! A grant of `n` pages is `n + 1` grant references: reference 0 names a one-page *control
//! page*, always writable by the peer, and references `1..=n` the data pages with the access
//! asked for. Callers pass the references verbatim (the trait's contract), so the extra page
//! is invisible to them. The control page holds, as 32-bit words:
//!
//! | offset | written by | meaning |
//! |---|---|---|
//! | 0 | granter | magic `FRXC` |
//! | 4 | granter | 1 when the data pages are read-only for the peer |
//! | 8 | granter | 1 while the granter lives; its gntalloc unmap-notify clears the byte |
//! | 64 + 4 i | mapper | slot `i`: 1 while a mapping lives; its gntdev unmap-notify clears the byte |
//!
//! Unmap-notify (`SET_UNMAP_NOTIFY`) is how each side learns of the other's death: the kernel
//! clears the armed byte when the mapping goes away, also when the process is killed, and,
//! once a [`Notifier`] towards that peer exists, raises an event on its channel, so a side
//! waiting on the notifier wakes up. A grant or mapping made before the notifier is re-armed
//! with the event when the notifier is made or bound, so the order of the two does not matter.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::XenError;
use super::dev::{Evtchn, ForeignMapping, Gntalloc, Gntdev, GrantedPages, Port};
use crate::grant::{Access, DomId, Grant, GrantBackend, GrantError, GrantRef, Mapping, Notifier};
use crate::region::Memory;

/// Most data pages one grant may hold (the gntalloc module allows 1024 grants per domain by
/// default; raising its `limit` parameter allows up to this many).
pub const MAX_GRANT_PAGES: usize = 1 << 16;

const CTL_MAGIC: u32 = u32::from_le_bytes(*b"FRXC");
const CTL_READ_ONLY: usize = 4;
const CTL_GRANTER_ALIVE: usize = 8;
const CTL_SLOTS_OFF: usize = 64;
const CTL_SLOTS: usize = 64;

fn slot_off(i: usize) -> usize {
    CTL_SLOTS_OFF + 4 * i
}

impl From<XenError> for GrantError {
    fn from(e: XenError) -> Self {
        match e {
            XenError::NoXen | XenError::NoDevice { .. } => GrantError::Unsupported(e.to_string()),
            XenError::GrantLimit { .. } => GrantError::Unsupported(e.to_string()),
            XenError::BadGrant { .. } => GrantError::BadRefs(e.to_string()),
            XenError::Open { path, source } => GrantError::Os { op: path, source },
            XenError::Ioctl { op, source } => GrantError::Os { op, source },
            XenError::Mmap { source, .. } => GrantError::Os { op: "mmap", source },
            XenError::Count(n) => GrantError::PageCount {
                pages: n,
                max: MAX_GRANT_PAGES,
            },
        }
    }
}

/// Something whose unmap-notify can be (re-)armed with an event towards one peer.
#[derive(Debug)]
enum Armed {
    /// Our control page of a grant: the granter-alive byte.
    Granter(Weak<GrantedPages>),
    /// Our mapping of a peer's control page: slot `i`.
    Mapper(Weak<ForeignMapping>, usize),
}

impl Armed {
    /// Arms clear-byte, plus an event on `port` when given. Returns false once the grant or
    /// mapping is gone.
    fn arm(&self, port: Option<Port>) -> bool {
        match self {
            Armed::Granter(w) => w.upgrade().is_some_and(|g| {
                let _ = g
                    .set_unmap_notify(CTL_GRANTER_ALIVE, true, port)
                    .or_else(|_| g.set_unmap_notify(CTL_GRANTER_ALIVE, true, None));
                true
            }),
            Armed::Mapper(w, i) => w.upgrade().is_some_and(|m| {
                let _ = m
                    .set_unmap_notify(slot_off(*i), true, port)
                    .or_else(|_| m.set_unmap_notify(slot_off(*i), true, None));
                true
            }),
        }
    }
}

#[derive(Debug, Default)]
struct Peers {
    /// The local port of the newest notifier towards each peer.
    port: HashMap<DomId, Port>,
    /// Grants and mappings per peer whose unmap-notify should raise that port.
    armed: HashMap<DomId, Vec<Armed>>,
}

/// The Xen grant backend of one process.
#[derive(Debug, Clone)]
pub struct XenBackend {
    gntalloc: Option<Gntalloc>,
    gntdev: Option<Gntdev>,
    peers: Arc<Mutex<Peers>>,
}

impl XenBackend {
    /// Opens the Xen devices. `/dev/xen/gntalloc` is needed to grant and `/dev/xen/gntdev` to
    /// map; one of them may be absent (a domU that only grants need not load `xen-gntdev`).
    /// Fails with a message saying what to do when `/dev/xen` or both devices are missing.
    pub fn open() -> Result<Self, XenError> {
        let gntalloc = Gntalloc::open();
        let gntdev = Gntdev::open();
        match (gntalloc, gntdev) {
            (Err(e), Err(_)) => Err(e),
            (a, d) => Ok(Self {
                gntalloc: a.ok(),
                gntdev: d.ok(),
                peers: Arc::default(),
            }),
        }
    }

    fn remember(&self, peer: DomId, a: Armed) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let port = p.port.get(&peer).copied();
        a.arm(port);
        let v = p.armed.entry(peer).or_default();
        v.retain(|x| match x {
            Armed::Granter(w) => w.strong_count() > 0,
            Armed::Mapper(w, _) => w.strong_count() > 0,
        });
        v.push(a);
    }

    fn new_port(&self, peer: DomId, port: Port) {
        let mut p = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        p.port.insert(peer, port);
        if let Some(v) = p.armed.get_mut(&peer) {
            v.retain(|a| a.arm(Some(port)));
        }
    }
}

/// Pages this domain granted to a peer through gntalloc.
#[derive(Debug)]
pub struct XenGrant {
    peer: DomId,
    access: Access,
    pages: usize,
    refs: Vec<GrantRef>,
    data: GrantedPages,
    ctl: Arc<GrantedPages>,
}

impl XenGrant {
    /// Live mappings the peer reports in the control page (a mapper that died has had its
    /// slot cleared by the kernel's unmap-notify).
    pub fn live_mappings(&self) -> u32 {
        let ctl = self.ctl.region();
        (0..CTL_SLOTS)
            .filter(|&i| {
                ctl.atomic_u32(slot_off(i))
                    .map(|a| a.load(Ordering::Acquire) & 0xff != 0)
                    .unwrap_or(false)
            })
            .count() as u32
    }
}

impl Grant for XenGrant {
    fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    fn memory(&self) -> &Memory {
        self.data.memory()
    }

    fn pages(&self) -> usize {
        self.pages
    }

    fn peer(&self) -> DomId {
        self.peer
    }

    fn access(&self) -> Access {
        self.access
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    fn is_mapped(&self) -> Result<bool, GrantError> {
        Ok(self.live_mappings() > 0)
    }

    fn end_access(self) -> Result<(), (Self, GrantError)> {
        let mappings = self.live_mappings();
        if mappings > 0 {
            return Err((self, GrantError::StillMapped { mappings }));
        }
        drop(self);
        Ok(())
    }
}

/// A peer's granted pages mapped here through gntdev. The pages stay mapped, and this
/// mapper's slot in the control page claimed, until this value and every handle taken from
/// [`Mapping::memory`] are gone.
#[derive(Debug)]
pub struct XenMapping {
    granter: DomId,
    access: Access,
    mem: Memory,
    ctl: Arc<ForeignMapping>,
    pages: usize,
}

/// A mapper's slot in the granter's control page, cleared on drop (after the data pages are
/// unmapped: see `Memory::with_guard`). Its unmap-notify clears it too, when the process
/// dies.
#[derive(Debug)]
struct MapperSlot {
    ctl: Arc<ForeignMapping>,
    slot: usize,
}

impl Drop for MapperSlot {
    fn drop(&mut self) {
        if let Ok(a) = self.ctl.region().atomic_u32(slot_off(self.slot)) {
            a.store(0, Ordering::Release);
        }
    }
}

impl XenMapping {
    /// Whether the granter still lives: its gntalloc unmap-notify clears this byte when its
    /// process dies or it ends the grant.
    pub fn granter_alive(&self) -> bool {
        self.ctl
            .region()
            .atomic_u32(CTL_GRANTER_ALIVE)
            .map(|a| a.load(Ordering::Acquire) & 0xff != 0)
            .unwrap_or(false)
    }
}

impl Mapping for XenMapping {
    fn memory(&self) -> &Memory {
        &self.mem
    }

    fn granter(&self) -> DomId {
        self.granter
    }

    fn granter_alive(&self) -> bool {
        XenMapping::granter_alive(self)
    }

    fn access(&self) -> Access {
        self.access
    }

    fn pages(&self) -> usize {
        self.pages
    }
}

impl GrantBackend for XenBackend {
    type Grant = XenGrant;
    type Mapping = XenMapping;
    type Notifier = XenNotifier;

    fn grant(&self, peer: DomId, pages: usize, access: Access) -> Result<XenGrant, GrantError> {
        if pages == 0 || pages > MAX_GRANT_PAGES {
            return Err(GrantError::PageCount {
                pages,
                max: MAX_GRANT_PAGES,
            });
        }
        let ga = self.gntalloc.as_ref().ok_or_else(|| {
            GrantError::Unsupported(
                "/dev/xen/gntalloc is missing: modprobe xen-gntalloc to grant pages".into(),
            )
        })?;
        let ctl = Arc::new(ga.grant(peer, Access::ReadWrite, 1)?);
        let data = ga.grant(peer, access, pages)?;
        let c = ctl.region();
        let word = |off| {
            c.atomic_u32(off).map_err(|e| GrantError::Os {
                op: "control page",
                source: std::io::Error::other(e.to_string()),
            })
        };
        word(CTL_READ_ONLY)?.store(u32::from(access == Access::ReadOnly), Ordering::Relaxed);
        word(CTL_GRANTER_ALIVE)?.store(1, Ordering::Relaxed);
        word(0)?.store(CTL_MAGIC, Ordering::Release);
        let mut refs = Vec::with_capacity(pages + 1);
        refs.extend_from_slice(ctl.grefs());
        refs.extend_from_slice(data.grefs());
        self.remember(peer, Armed::Granter(Arc::downgrade(&ctl)));
        Ok(XenGrant {
            peer,
            access,
            pages,
            refs,
            data,
            ctl,
        })
    }

    fn map(
        &self,
        granter: DomId,
        refs: &[GrantRef],
        access: Access,
        attach: &[OwnedFd],
    ) -> Result<XenMapping, GrantError> {
        if !attach.is_empty() {
            return Err(GrantError::BadAttachments(format!(
                "Xen grants carry no descriptors, got {}",
                attach.len()
            )));
        }
        let Some((ctl_ref, data_refs)) = refs.split_first() else {
            return Err(GrantError::PageCount {
                pages: 0,
                max: MAX_GRANT_PAGES,
            });
        };
        if data_refs.is_empty() || data_refs.len() > MAX_GRANT_PAGES {
            return Err(GrantError::PageCount {
                pages: data_refs.len(),
                max: MAX_GRANT_PAGES,
            });
        }
        let gd = self.gntdev.as_ref().ok_or_else(|| {
            GrantError::Unsupported(
                "/dev/xen/gntdev is missing: modprobe xen-gntdev to map pages".into(),
            )
        })?;
        let ctl = Arc::new(gd.map(granter, std::slice::from_ref(ctl_ref), Access::ReadWrite)?);
        let c = ctl.region();
        let word = |off| {
            c.atomic_u32(off)
                .map(|a| a.load(Ordering::Acquire))
                .unwrap_or(0)
        };
        if word(0) != CTL_MAGIC {
            return Err(GrantError::BadRefs(
                "the first reference is not a Ferrite grant control page".into(),
            ));
        }
        if access == Access::ReadWrite && word(CTL_READ_ONLY) != 0 {
            return Err(GrantError::ReadOnly);
        }
        // Claim a slot before mapping the data, so the granter never sees "unmapped" while
        // we map.
        let slot = (0..CTL_SLOTS)
            .find(|&i| {
                c.atomic_u32(slot_off(i)).is_ok_and(|a| {
                    a.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                })
            })
            .ok_or_else(|| GrantError::BadRefs("no free mapper slot in the control page".into()))?;
        // Cleared on every way out, mapped or not.
        let claimed = MapperSlot {
            ctl: ctl.clone(),
            slot,
        };
        let data = match gd.map(granter, data_refs, access) {
            Ok(d) => d,
            Err(e) => {
                return Err(match e {
                    // A writable map of read-only grants is refused by the hypervisor.
                    XenError::BadGrant { .. } if access == Access::ReadWrite => GrantError::from(e),
                    e => e.into(),
                });
            }
        };
        self.remember(granter, Armed::Mapper(Arc::downgrade(&ctl), slot));
        let mem = data.memory().clone().with_guard(claimed);
        Ok(XenMapping {
            granter,
            access,
            mem: match access {
                Access::ReadWrite => mem,
                Access::ReadOnly => mem.read_only(),
            },
            ctl,
            pages: data_refs.len(),
        })
    }

    fn notifier(&self, peer: DomId) -> Result<XenNotifier, GrantError> {
        let ev = Evtchn::open()?;
        let port = ev.bind_unbound(peer)?;
        self.new_port(peer, port);
        Ok(XenNotifier { ev, port })
    }

    fn bind_notifier(
        &self,
        peer: DomId,
        port: u32,
        attach: &[OwnedFd],
    ) -> Result<XenNotifier, GrantError> {
        if !attach.is_empty() {
            return Err(GrantError::BadNotifier(format!(
                "event channels carry no descriptors, got {}",
                attach.len()
            )));
        }
        let ev = Evtchn::open()?;
        let local = ev
            .bind_interdomain(peer, port)
            .map_err(|e| GrantError::BadNotifier(format!("domain {} port {port}: {e}", peer.0)))?;
        // Xen raises one event at bind time; swallow it so it is not mistaken for a ring. It is
        // delivered to the vCPU the port is bound to, so on a loaded host it can come later:
        // callers treat any wakeup as "look again" (the rings say what is new).
        if let Some(p) = ev.wait(Some(Duration::from_millis(10)))? {
            ev.unmask(p)?;
        }
        self.new_port(peer, local);
        Ok(XenNotifier { ev, port: local })
    }
}

/// A doorbell over one interdomain event channel, on its own `/dev/xen/evtchn` file.
#[derive(Debug)]
pub struct XenNotifier {
    ev: Evtchn,
    port: Port,
}

impl AsRawFd for XenNotifier {
    fn as_raw_fd(&self) -> RawFd {
        self.ev.as_raw_fd()
    }
}

impl XenNotifier {
    fn consume(&self) -> Result<bool, GrantError> {
        let mut any = false;
        // Only our one port is bound on this file; the bound keeps a confused kernel from
        // looping us.
        for _ in 0..64 {
            match self.ev.take()? {
                Some(p) => {
                    self.ev.unmask(p)?;
                    any = true;
                }
                None => break,
            }
        }
        Ok(any)
    }
}

impl Notifier for XenNotifier {
    fn notify(&self) -> Result<(), GrantError> {
        Ok(self.ev.notify(self.port)?)
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, GrantError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if self.consume()? {
                return Ok(true);
            }
            let left = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    Some(left)
                }
            };
            if let Some(p) = self.ev.wait(left)? {
                self.ev.unmask(p)?;
                return Ok(true);
            }
        }
    }

    fn drain(&self) -> Result<bool, GrantError> {
        self.consume()
    }

    fn port(&self) -> u32 {
        self.port
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }
}

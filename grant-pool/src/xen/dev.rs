//! Thin safe wrappers over `/dev/xen/gntalloc`, `/dev/xen/gntdev` and `/dev/xen/evtchn`.
//!
//! Each device is an open file; each grant allocation or foreign mapping is an RAII value
//! that owns its `mmap` and releases it (unmap, then the driver's dealloc/unmap ioctl) on
//! drop. Memory from these devices is shared with another domain, so it is handed out only
//! as a [`Memory`] handle and its [`Region`] views (copies and atomics), never as a slice.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use zerocopy::{FromBytes, IntoBytes};

use super::XenError;
use super::uapi::*;
use crate::grant::{Access, DomId, GrantRef};
use crate::pool::PAGE_SIZE;
use crate::region::{Backing, Memory, Region};

/// Path of the grant-allocation device (granting side).
pub const GNTALLOC_PATH: &str = "/dev/xen/gntalloc";
/// Path of the grant-mapping device (mapping side).
pub const GNTDEV_PATH: &str = "/dev/xen/gntdev";
/// Path of the event-channel device.
pub const EVTCHN_PATH: &str = "/dev/xen/evtchn";
/// Where the gntalloc module exposes its per-domain grant limit.
pub const GNTALLOC_LIMIT_PATH: &str = "/sys/module/xen_gntalloc/parameters/limit";

/// An event-channel port, local to the domain that bound it (Xen's `evtchn_port_t`).
pub type Port = xen_sys::evtchn_port_t;

fn open_dev(path: &'static str) -> Result<OwnedFd, XenError> {
    if !Path::new("/dev/xen").exists() {
        return Err(XenError::NoXen);
    }
    if !Path::new(path).exists() {
        return Err(XenError::NoDevice { path });
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| XenError::Open { path, source })?;
    Ok(OwnedFd::from(f))
}

/// Issues `request` on `fd` with `arg` as the argument buffer; returns the ioctl's value.
fn ioctl(fd: RawFd, op: &'static str, request: u32, arg: &mut [u8]) -> Result<i32, XenError> {
    // Why this is sound: `arg` is a live, exclusively borrowed buffer of the size the driver reads and
    // writes for `request`: callers build it as the fixed head plus `count` elements (see
    // uapi.rs), and the drivers never touch bytes past that.
    // SAFETY: the invariants stated just above hold here.
    let r = unsafe { libc::ioctl(fd, request as _, arg.as_mut_ptr()) };
    if r < 0 {
        Err(XenError::Ioctl {
            op,
            source: std::io::Error::last_os_error(),
        })
    } else {
        Ok(r)
    }
}

/// An `mmap` of one of the devices: base, length, whether it is writable; unmapped on drop.
#[derive(Debug)]
struct Mmap {
    base: NonNull<u8>,
    len: usize,
    writable: bool,
}

/// What owns one [`Mmap`] (and whatever must be released after it).
trait OwnsMmap: Backing + 'static {
    fn mmap(&self) -> &Mmap;
}

/// A handle on the bytes `owner`'s mapping holds, read-only when mapped so.
fn memory_of<K: OwnsMmap>(owner: &Arc<K>) -> Memory {
    let m = owner.mmap();
    if m.writable {
        // SAFETY: `m` maps `len` bytes at `base` readable and writable until it is dropped,
        // which its owner, kept alive by the handle's clone of `owner`, does last.
        unsafe { Memory::from_raw(m.base, m.len, owner.clone()) }
    } else {
        // SAFETY: as above, mapped readable only, and the handle refuses writes.
        unsafe { Memory::from_raw_read_only(m.base, m.len, owner.clone()) }
    }
}

// SAFETY: the mapping is plain process memory addressed by a pointer; accesses go through
// `Region` (copies and atomics), so moving or sharing the owner across threads is sound.
unsafe impl Send for Mmap {}
// SAFETY: as for Send: `Mmap` has no interior state besides the pointer and length.
unsafe impl Sync for Mmap {}

impl Mmap {
    fn new(fd: RawFd, len: usize, writable: bool, offset: u64) -> Result<Self, XenError> {
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh shared mapping chosen by the kernel (addr = NULL): it cannot alias
        // any Rust object. `offset` is the token the driver returned for these pages.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(XenError::Mmap {
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(XenError::Mmap {
            len,
            source: std::io::Error::from_raw_os_error(libc::EFAULT),
        })?;
        Ok(Self {
            base,
            len,
            writable,
        })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned and nothing else unmaps them.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The grant-allocation device: grants this domain's pages to a peer domain.
#[derive(Debug, Clone)]
pub struct Gntalloc {
    fd: Arc<OwnedFd>,
}

/// The per-domain grant limit of the gntalloc module, if the module says.
pub fn gntalloc_limit() -> Option<usize> {
    std::fs::read_to_string(GNTALLOC_LIMIT_PATH)
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Gntalloc {
    /// Opens `/dev/xen/gntalloc`.
    pub fn open() -> Result<Self, XenError> {
        Ok(Self {
            fd: Arc::new(open_dev(GNTALLOC_PATH)?),
        })
    }

    /// Allocates `pages` zeroed pages, grants them to `peer` and maps them here.
    ///
    /// Fails with [`XenError::GrantLimit`] when the module's per-domain limit is too low, so
    /// the message says how to raise it instead of a bare `ENOSPC`.
    pub fn grant(
        &self,
        peer: DomId,
        access: Access,
        pages: usize,
    ) -> Result<GrantedPages, XenError> {
        if pages == 0 || pages > u32::MAX as usize / 2 {
            return Err(XenError::Count(pages));
        }
        let words = (VAR_HEAD + 4 * pages).div_ceil(8);
        let mut buf = vec![0u64; words];
        let bytes = buf.as_mut_bytes();
        let head = GntallocAllocHeader {
            domid: peer.0,
            flags: match access {
                Access::ReadOnly => 0,
                Access::ReadWrite => GNTALLOC_FLAG_WRITABLE,
            },
            count: pages as u32,
            index: 0,
        };
        head.write_to_prefix(bytes)
            .map_err(|_| XenError::Count(pages))?;
        if let Err(e) = ioctl(
            self.fd.as_raw_fd(),
            "gntalloc ALLOC_GREF",
            IOCTL_GNTALLOC_ALLOC_GREF,
            bytes,
        ) {
            if let XenError::Ioctl { source, .. } = &e
                && source.raw_os_error() == Some(libc::ENOSPC)
            {
                return Err(XenError::GrantLimit {
                    want: pages,
                    limit: gntalloc_limit(),
                });
            }
            return Err(e);
        }
        let (head, rest) =
            GntallocAllocHeader::read_from_prefix(bytes).map_err(|_| XenError::Count(pages))?;
        let grefs: Vec<GrantRef> = rest
            .chunks_exact(4)
            .take(pages)
            .map(|c| GrantRef(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        let granted = Granted {
            fd: self.fd.clone(),
            index: head.index,
            count: head.count,
        };
        let map = Mmap::new(self.fd.as_raw_fd(), pages * PAGE_SIZE, true, head.index)?;
        let inner = Arc::new(GrantedInner { map, granted });
        Ok(GrantedPages {
            mem: memory_of(&inner),
            inner,
            grefs,
        })
    }
}

/// The driver-side allocation, released after the mapping (field order in `GrantedInner`).
#[derive(Debug)]
struct Granted {
    fd: Arc<OwnedFd>,
    index: u64,
    count: u32,
}

impl Drop for Granted {
    fn drop(&mut self) {
        let mut arg = GntallocDeallocGref {
            index: self.index,
            count: self.count,
            pad: 0,
        };
        // Nothing useful can be done about a failure here: the pages are released when the
        // device file closes at the latest.
        let _ = ioctl(
            self.fd.as_raw_fd(),
            "gntalloc DEALLOC_GREF",
            IOCTL_GNTALLOC_DEALLOC_GREF,
            arg.as_mut_bytes(),
        );
    }
}

/// Granted pages' mapping here, then their allocation: unmapped before the grants end.
#[derive(Debug)]
struct GrantedInner {
    map: Mmap,
    granted: Granted,
}

impl OwnsMmap for GrantedInner {
    fn mmap(&self) -> &Mmap {
        &self.map
    }
}

/// Pages this domain granted to a peer, mapped here. When it and every handle taken from
/// [`GrantedPages::memory`] are gone, the pages are unmapped and the grants end; if the peer
/// still maps them, the kernel keeps the pages until it unmaps.
#[derive(Debug)]
pub struct GrantedPages {
    mem: Memory,
    inner: Arc<GrantedInner>,
    grefs: Vec<GrantRef>,
}

impl GrantedPages {
    /// The grant references, one per page, in page order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }

    /// A handle on the pages; a clone keeps them mapped.
    pub fn memory(&self) -> &Memory {
        &self.mem
    }

    /// A view of the pages.
    pub fn region(&self) -> Region<'_> {
        self.mem.region()
    }

    /// Arms unmap-notify: when this domain's mapping goes away (including when the process
    /// dies), clear the byte at `offset` and/or notify `port`, so the peer learns of it.
    pub fn set_unmap_notify(
        &self,
        offset: usize,
        clear_byte: bool,
        port: Option<Port>,
    ) -> Result<(), XenError> {
        if offset >= self.inner.map.len {
            return Err(XenError::Count(offset));
        }
        let granted = &self.inner.granted;
        let mut arg = unmap_notify(granted.index + offset as u64, clear_byte, port);
        ioctl(
            granted.fd.as_raw_fd(),
            "gntalloc SET_UNMAP_NOTIFY",
            IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
            arg.as_mut_bytes(),
        )
        .map(drop)
    }
}

fn unmap_notify(index: u64, clear_byte: bool, port: Option<Port>) -> UnmapNotify {
    UnmapNotify {
        index,
        action: if clear_byte {
            UNMAP_NOTIFY_CLEAR_BYTE
        } else {
            0
        } | if port.is_some() {
            UNMAP_NOTIFY_SEND_EVENT
        } else {
            0
        },
        event_channel_port: port.unwrap_or(0),
    }
}

/// The grant-mapping device: maps pages another domain granted to this one.
#[derive(Debug, Clone)]
pub struct Gntdev {
    fd: Arc<OwnedFd>,
}

impl Gntdev {
    /// Opens `/dev/xen/gntdev`.
    pub fn open() -> Result<Self, XenError> {
        Ok(Self {
            fd: Arc::new(open_dev(GNTDEV_PATH)?),
        })
    }

    /// Maps the pages `refs` name, all granted by `granter`, contiguously.
    ///
    /// The references come from another domain and are not trusted: a reference that is not
    /// a live grant to this domain (or is read-only when `access` is read-write) makes the
    /// hypervisor refuse the map, and this returns an error; nothing is mapped.
    pub fn map(
        &self,
        granter: DomId,
        refs: &[GrantRef],
        access: Access,
    ) -> Result<ForeignMapping, XenError> {
        let n = refs.len();
        if n == 0 || n > u32::MAX as usize / 16 {
            return Err(XenError::Count(n));
        }
        let mut buf = vec![0u64; (VAR_HEAD + 8 * n) / 8];
        let bytes = buf.as_mut_bytes();
        let head = GntdevMapHeader {
            count: n as u32,
            pad: 0,
            index: 0,
        };
        head.write_to_prefix(bytes)
            .map_err(|_| XenError::Count(n))?;
        for (i, r) in refs.iter().enumerate() {
            let g = GntdevGrantRef {
                domid: granter.0.into(),
                gref: r.0,
            };
            let at = VAR_HEAD + 8 * i;
            g.write_to(&mut bytes[at..at + 8])
                .map_err(|_| XenError::Count(n))?;
        }
        ioctl(
            self.fd.as_raw_fd(),
            "gntdev MAP_GRANT_REF",
            IOCTL_GNTDEV_MAP_GRANT_REF,
            bytes,
        )?;
        let (head, _) = GntdevMapHeader::read_from_prefix(bytes).map_err(|_| XenError::Count(n))?;
        let mapped = Mapped {
            fd: self.fd.clone(),
            index: head.index,
            count: head.count,
        };
        // The hypervisor map happens here; a bad reference fails the mmap.
        let map = Mmap::new(
            self.fd.as_raw_fd(),
            n * PAGE_SIZE,
            access == Access::ReadWrite,
            head.index,
        )
        .map_err(|e| match e {
            XenError::Mmap { source, .. } => XenError::BadGrant {
                granter: granter.0,
                source,
            },
            e => e,
        })?;
        let inner = Arc::new(ForeignInner { map, mapped });
        Ok(ForeignMapping {
            mem: memory_of(&inner),
            inner,
        })
    }
}

/// The driver-side map slot, released after the mmap (field order in `ForeignInner`).
#[derive(Debug)]
struct Mapped {
    fd: Arc<OwnedFd>,
    index: u64,
    count: u32,
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let mut arg = GntdevUnmapGrantRef {
            index: self.index,
            count: self.count,
            pad: 0,
        };
        // Failure leaves the slot until the device file closes; nothing else to do.
        let _ = ioctl(
            self.fd.as_raw_fd(),
            "gntdev UNMAP_GRANT_REF",
            IOCTL_GNTDEV_UNMAP_GRANT_REF,
            arg.as_mut_bytes(),
        );
    }
}

/// Another domain's pages' mapping here, then the driver's map slot: unmapped first.
#[derive(Debug)]
struct ForeignInner {
    map: Mmap,
    mapped: Mapped,
}

impl OwnsMmap for ForeignInner {
    fn mmap(&self) -> &Mmap {
        &self.map
    }
}

/// Another domain's pages mapped here; unmapped when it and every handle taken from
/// [`ForeignMapping::memory`] are gone.
#[derive(Debug)]
pub struct ForeignMapping {
    mem: Memory,
    inner: Arc<ForeignInner>,
}

impl ForeignMapping {
    /// A handle on the mapped pages; a clone keeps them mapped.
    pub fn memory(&self) -> &Memory {
        &self.mem
    }

    /// A view of the mapped pages.
    pub fn region(&self) -> Region<'_> {
        self.mem.region()
    }

    /// Arms unmap-notify: when this mapping goes away (including when the process dies),
    /// clear the byte at `offset` in the granter's page and/or notify `port`.
    pub fn set_unmap_notify(
        &self,
        offset: usize,
        clear_byte: bool,
        port: Option<Port>,
    ) -> Result<(), XenError> {
        if offset >= self.inner.map.len {
            return Err(XenError::Count(offset));
        }
        let mapped = &self.inner.mapped;
        let mut arg = unmap_notify(mapped.index + offset as u64, clear_byte, port);
        ioctl(
            mapped.fd.as_raw_fd(),
            "gntdev SET_UNMAP_NOTIFY",
            IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
            arg.as_mut_bytes(),
        )
        .map(drop)
    }
}

/// The event-channel device: binds ports, sends and receives notifications.
///
/// Ports bound through one `Evtchn` are unbound when it is dropped. A received event masks
/// its port until [`Evtchn::unmask`].
#[derive(Debug)]
pub struct Evtchn {
    fd: OwnedFd,
}

impl Evtchn {
    /// Opens `/dev/xen/evtchn` (non-blocking; [`Evtchn::wait`] polls).
    pub fn open() -> Result<Self, XenError> {
        let fd = open_dev(EVTCHN_PATH)?;
        // SAFETY: plain fcntl on a descriptor we own.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        let set = if fl < 0 {
            -1
        } else {
            // SAFETY: plain fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) }
        };
        if set < 0 {
            return Err(XenError::Open {
                path: EVTCHN_PATH,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self { fd })
    }

    /// Allocates a port that domain `remote` may bind; returns the local port.
    pub fn bind_unbound(&self, remote: DomId) -> Result<Port, XenError> {
        let mut arg = EvtchnBindUnboundPort {
            remote_domain: remote.0.into(),
        };
        let p = ioctl(
            self.fd.as_raw_fd(),
            "evtchn BIND_UNBOUND_PORT",
            IOCTL_EVTCHN_BIND_UNBOUND_PORT,
            arg.as_mut_bytes(),
        )?;
        Ok(p as Port)
    }

    /// Binds to `remote`'s unbound port `remote_port`; returns the local port.
    ///
    /// Xen raises one event on the new channel at bind time: consumers must treat an event
    /// as "look again", never as a count.
    pub fn bind_interdomain(&self, remote: DomId, remote_port: Port) -> Result<Port, XenError> {
        let mut arg = EvtchnBindInterdomain {
            remote_domain: remote.0.into(),
            remote_port,
        };
        let p = ioctl(
            self.fd.as_raw_fd(),
            "evtchn BIND_INTERDOMAIN",
            IOCTL_EVTCHN_BIND_INTERDOMAIN,
            arg.as_mut_bytes(),
        )?;
        Ok(p as Port)
    }

    /// Unbinds a local port.
    pub fn unbind(&self, port: Port) -> Result<(), XenError> {
        let mut arg = EvtchnPortArg { port };
        ioctl(
            self.fd.as_raw_fd(),
            "evtchn UNBIND",
            IOCTL_EVTCHN_UNBIND,
            arg.as_mut_bytes(),
        )
        .map(drop)
    }

    /// Sends an event on a local port.
    pub fn notify(&self, port: Port) -> Result<(), XenError> {
        let mut arg = EvtchnPortArg { port };
        ioctl(
            self.fd.as_raw_fd(),
            "evtchn NOTIFY",
            IOCTL_EVTCHN_NOTIFY,
            arg.as_mut_bytes(),
        )
        .map(drop)
    }

    /// Unmasks a port so its next event is delivered.
    pub fn unmask(&self, port: Port) -> Result<(), XenError> {
        let b = port.to_ne_bytes();
        // SAFETY: writes 4 bytes from a local array to a descriptor we own.
        let r = unsafe { libc::write(self.fd.as_raw_fd(), b.as_ptr().cast(), 4) };
        if r != 4 {
            return Err(XenError::Ioctl {
                op: "evtchn unmask (write)",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Takes one pending event without waiting: `Some(port)` (now masked) or `None`.
    pub fn take(&self) -> Result<Option<Port>, XenError> {
        let mut b = [0u8; 4];
        // SAFETY: reads at most 4 bytes into a local array from a descriptor we own.
        let r = unsafe { libc::read(self.fd.as_raw_fd(), b.as_mut_ptr().cast(), 4) };
        if r == 4 {
            return Ok(Some(u32::from_ne_bytes(b)));
        }
        let e = std::io::Error::last_os_error();
        if r < 0 && e.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        Err(XenError::Ioctl {
            op: "evtchn read",
            source: e,
        })
    }

    /// Waits up to `timeout` (forever when `None`) for an event; returns the port (masked
    /// until [`Evtchn::unmask`]) or `None` on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<Option<Port>, XenError> {
        if let Some(p) = self.take()? {
            return Ok(Some(p));
        }
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on our stack, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(XenError::Ioctl {
                op: "evtchn poll",
                source: e,
            });
        }
        self.take()
    }

    /// The descriptor, for callers that multiplex it with others (readable = events pending).
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// A second handle on the same device file (same bound ports).
    pub fn try_clone(&self) -> Result<Self, XenError> {
        // SAFETY: dup of a descriptor we own; the new descriptor is owned by the result.
        let fd = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return Err(XenError::Open {
                path: EVTCHN_PATH,
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` was just returned by dup and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }
}

//! Linux system-call helpers shared by the `af_xdp` and `af_packet` ports: memory mappings,
//! interface lookups (index, MAC, link state) and small socket wrappers.
//!
//! Everything here is set-up or slow-path code; nothing in this module runs on the burst path
//! except the tx kick, which is one `sendto` without allocation.
//!
//! Interface queries go through a [`CtlSocket`], an `AF_INET` datagram socket opened in the
//! network namespace the port was created in. Because a socket stays bound to its namespace,
//! `mac()` and `link()` keep answering for the right interface even when the port is later
//! polled from a thread in another namespace (the reason `/sys/class/net` is not used).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use grant_pool::Memory;

pub(crate) mod vnet;

/// The last OS error, with a short description of what was being done.
pub(crate) fn os_err(op: &'static str) -> OpError {
    OpError {
        op,
        source: io::Error::last_os_error(),
    }
}

/// A failed system call: which operation and the OS error.
#[derive(Debug)]
pub struct OpError {
    /// What was being done (e.g. `"setsockopt(XDP_UMEM_REG)"`).
    pub op: &'static str,
    /// The OS error.
    pub source: io::Error,
}

impl OpError {
    /// Whether the error means the caller lacks a privilege (`EPERM`/`EACCES`).
    pub fn is_permission(&self) -> bool {
        matches!(self.source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
    }

    /// The raw errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Anonymous, page-aligned memory mapped for the life of this value (a UMEM, a pool, or a
/// kernel ring mapped from a socket).
#[derive(Debug)]
pub struct Mmap {
    base: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: Mmap owns a mapping; its address is used to build a memory handle over it (whose
// accesses are copies or atomics), by the AF_XDP rings that own their Mmap (atomics and
// copies of descriptors), and to unmap in Drop, which needs `&mut self`.
unsafe impl Send for Mmap {}
// SAFETY: as above; no method hands out references into the mapping.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of zeroed anonymous memory, populated up front. With `huge`, 2 MiB
    /// huge pages are tried first (`len` rounded up to 2 MiB); when the system has none
    /// available this quietly falls back to 4 KiB pages ([`Mmap::is_huge`] tells which).
    pub fn anonymous(len: usize, huge: bool) -> Result<Self, OpError> {
        Self::anonymous_with(len, huge, libc::MAP_POPULATE)
    }

    /// Maps `len` bytes of zeroed anonymous memory committed only as it is touched: for a
    /// pool of large buffers, most of whose pages a frame never reaches.
    pub fn anonymous_lazy(len: usize) -> Result<Self, OpError> {
        Self::anonymous_with(len, false, libc::MAP_NORESERVE)
    }

    fn anonymous_with(len: usize, huge: bool, extra: libc::c_int) -> Result<Self, OpError> {
        const HUGE: usize = 2 << 20;
        if huge {
            let hlen = len.div_ceil(HUGE) * HUGE;
            // SAFETY: a fresh anonymous private mapping; the kernel picks the address, so no
            // existing memory is affected.
            let p = unsafe {
                libc::mmap(
                    core::ptr::null_mut(),
                    hlen,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE
                        | libc::MAP_ANONYMOUS
                        | libc::MAP_HUGETLB
                        | libc::MAP_POPULATE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED
                && let Some(base) = NonNull::new(p.cast::<u8>())
            {
                return Ok(Self {
                    base,
                    len: hlen,
                    huge: true,
                });
            }
        }
        let len = len.div_ceil(4096).max(1) * 4096;
        // SAFETY: as above, a fresh anonymous private mapping.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err("mmap(anonymous)"));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(OpError {
            op: "mmap(anonymous)",
            source: io::Error::other("kernel returned a null mapping"),
        })?;
        Ok(Self {
            base,
            len,
            huge: false,
        })
    }

    /// Maps `len` bytes of a socket's kernel ring at `offset` (shared, read-write).
    pub fn socket_ring(
        fd: RawFd,
        len: usize,
        offset: i64,
        op: &'static str,
    ) -> Result<Self, OpError> {
        // SAFETY: asks the kernel to map a ring it owns for this socket; the kernel validates
        // offset and length, and the mapping is new memory not aliased by anything of ours.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err(op));
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(OpError {
            op,
            source: io::Error::other("kernel returned a null mapping"),
        })?;
        Ok(Self {
            base,
            len,
            huge: false,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: mappings are at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether huge pages back the mapping.
    pub fn is_huge(&self) -> bool {
        self.huge
    }

    /// Base address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// The mapping as a handle that owns it: unmapped when the last clone is dropped.
    pub fn into_memory(self) -> Memory {
        let (base, len) = (self.base, self.len);
        // SAFETY: the mapping is `len` bytes at `base`, readable and writable, and stays
        // mapped until this Mmap is dropped, which the handle's `Arc` owns.
        unsafe { Memory::from_raw(base, len, std::sync::Arc::new(self)) }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value created; nothing points into it any
        // more: whatever uses its address (a `Memory` handle, an AF_XDP ring) owns this Mmap.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// `struct ifreq`: a 16-byte name and a 24-byte union.
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: [u8; 24],
}

/// `struct ethtool_cmd` (legacy `ETHTOOL_GSET`), enough of it for the link speed.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct EthtoolCmd {
    cmd: u32,
    supported: u32,
    advertising: u32,
    speed: u16,
    duplex: u8,
    port: u8,
    phy_address: u8,
    transceiver: u8,
    autoneg: u8,
    mdio_support: u8,
    maxtxpkt: u32,
    maxrxpkt: u32,
    speed_hi: u16,
    eth_tp_mdix: u8,
    eth_tp_mdix_ctrl: u8,
    lp_advertising: u32,
    reserved: [u32; 2],
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSET: u32 = 1;

/// A datagram socket used only for interface ioctls, bound to the namespace it was made in.
#[derive(Debug)]
pub struct CtlSocket {
    fd: OwnedFd,
    name: [u8; libc::IFNAMSIZ],
}

impl CtlSocket {
    /// Opens the socket for interface `name` (in the calling thread's namespace).
    pub fn new(name: &str) -> Result<Self, OpError> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(os_err("socket(AF_INET) for interface ioctls"));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut n = [0u8; libc::IFNAMSIZ];
        let b = name.as_bytes();
        let l = b.len().min(libc::IFNAMSIZ - 1);
        n[..l].copy_from_slice(&b[..l]);
        Ok(Self { fd, name: n })
    }

    fn ioctl(&self, req: libc::c_ulong, ifr: &mut IfReq, op: &'static str) -> Result<(), OpError> {
        // SAFETY: `ifr` is a valid, writable ifreq-sized buffer for the duration of the call.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, ifr as *mut IfReq) };
        if r < 0 { Err(os_err(op)) } else { Ok(()) }
    }

    fn req(&self) -> IfReq {
        IfReq {
            name: self.name,
            data: [0; 24],
        }
    }

    /// The interface's hardware address (`SIOCGIFHWADDR`).
    pub fn mac(&self) -> Result<[u8; 6], OpError> {
        let mut r = self.req();
        self.ioctl(libc::SIOCGIFHWADDR, &mut r, "ioctl(SIOCGIFHWADDR)")?;
        // struct sockaddr: 2 bytes family, then the address bytes.
        let mut m = [0u8; 6];
        m.copy_from_slice(&r.data[2..8]);
        Ok(m)
    }

    /// Whether the interface is administratively up and its carrier is running.
    pub fn is_running(&self) -> Result<bool, OpError> {
        let mut r = self.req();
        self.ioctl(libc::SIOCGIFFLAGS, &mut r, "ioctl(SIOCGIFFLAGS)")?;
        let flags = i16::from_ne_bytes([r.data[0], r.data[1]]) as i32;
        Ok(flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0)
    }

    /// The interface's link state: up (with its speed) when it is up and running.
    pub fn link_state(&self) -> crate::LinkState {
        match self.is_running() {
            Ok(true) => crate::LinkState::Up {
                mbps: self.speed_mbps(),
            },
            _ => crate::LinkState::Down,
        }
    }

    /// Link speed in Mbit/s, 0 when the driver does not say.
    pub fn speed_mbps(&self) -> u32 {
        let mut cmd = EthtoolCmd {
            cmd: ETHTOOL_GSET,
            ..Default::default()
        };
        let mut r = self.req();
        let p = (&mut cmd as *mut EthtoolCmd as usize).to_ne_bytes();
        r.data[..8].copy_from_slice(&p);
        if self
            .ioctl(SIOCETHTOOL, &mut r, "ioctl(SIOCETHTOOL)")
            .is_err()
        {
            return 0;
        }
        let s = (cmd.speed as u32) | ((cmd.speed_hi as u32) << 16);
        if s == u32::MAX || s == 0xffff { 0 } else { s }
    }

    /// Receive queues (channels) the driver reports (`ETHTOOL_GCHANNELS`), 0 if it does
    /// not say.
    pub fn rx_queues(&self) -> u32 {
        const ETHTOOL_GCHANNELS: u32 = 0x3c;
        // struct ethtool_channels: cmd, 4 maxima, rx, tx, other, combined counts.
        let mut ch = [0u32; 9];
        ch[0] = ETHTOOL_GCHANNELS;
        let mut r = self.req();
        let p = (ch.as_mut_ptr() as usize).to_ne_bytes();
        r.data[..8].copy_from_slice(&p);
        if self
            .ioctl(SIOCETHTOOL, &mut r, "ioctl(SIOCETHTOOL, ETHTOOL_GCHANNELS)")
            .is_err()
        {
            return 0;
        }
        ch[5].max(ch[8])
    }

    /// Whether TCP segmentation offload is on for the interface (`ETHTOOL_GTSO`); false
    /// when the driver does not say.
    pub fn tso(&self) -> bool {
        const ETHTOOL_GTSO: u32 = 0x1e;
        // struct ethtool_value: cmd, data.
        let mut v = [ETHTOOL_GTSO, 0u32];
        let mut r = self.req();
        let p = (v.as_mut_ptr() as usize).to_ne_bytes();
        r.data[..8].copy_from_slice(&p);
        self.ioctl(SIOCETHTOOL, &mut r, "ioctl(SIOCETHTOOL, ETHTOOL_GTSO)")
            .is_ok()
            && v[1] != 0
    }

    /// The interface's MTU.
    pub fn mtu(&self) -> Result<u32, OpError> {
        let mut r = self.req();
        self.ioctl(libc::SIOCGIFMTU, &mut r, "ioctl(SIOCGIFMTU)")?;
        Ok(i32::from_ne_bytes([r.data[0], r.data[1], r.data[2], r.data[3]]).max(0) as u32)
    }
}

/// Binds packet socket `fd` to interface `ifindex` for frames of `protocol` (an ethertype in
/// host order; 0: none, the socket only sends).
pub fn bind_packet(
    fd: RawFd,
    ifindex: u32,
    protocol: u16,
    op: &'static str,
) -> Result<(), OpError> {
    let sll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: `sll` is a valid sockaddr_ll and its size is passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            core::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(os_err(op));
    }
    Ok(())
}

/// `setsockopt` of a plain-old-data value.
pub(crate) fn setsockopt<T>(
    fd: RawFd,
    level: i32,
    name: i32,
    val: &T,
    op: &'static str,
) -> Result<(), OpError> {
    // SAFETY: `val` points to a live `T` of the given size for the duration of the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            core::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(os_err(op)) } else { Ok(()) }
}

/// `getsockopt` into a plain-old-data value; returns the length the kernel wrote.
pub(crate) fn getsockopt<T>(
    fd: RawFd,
    level: i32,
    name: i32,
    val: &mut T,
    op: &'static str,
) -> Result<usize, OpError> {
    let mut len = core::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is a live, writable `T` and `len` says its size; the kernel writes at
    // most `len` bytes.
    let r = unsafe { libc::getsockopt(fd, level, name, (val as *mut T).cast(), &mut len) };
    if r < 0 {
        Err(os_err(op))
    } else {
        Ok(len as usize)
    }
}

/// Asks the kernel to process a socket's TX ring: `sendto(fd, NULL, 0, MSG_DONTWAIT)`.
///
/// Returns the errno on failure. `EAGAIN`, `EBUSY`, `ENOBUFS` and `ENETDOWN` are transient:
/// the frames stay queued and the next kick retries them.
#[inline]
pub(crate) fn kick(fd: RawFd) -> Result<(), i32> {
    // SAFETY: a zero-length send with no buffer and no address; the kernel reads nothing
    // from our memory.
    let r = unsafe {
        libc::sendto(
            fd,
            core::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            core::ptr::null(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

/// Wraps a fresh raw descriptor, or returns the error for `op`.
pub(crate) fn owned_fd(fd: i64, op: &'static str) -> Result<OwnedFd, OpError> {
    if fd < 0 {
        return Err(os_err(op));
    }
    // SAFETY: the caller passes the fresh descriptor a system call just returned, which
    // nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Moves the calling thread into the network namespace `/run/netns/<name>` (as made by
/// `ip netns add`). Sockets the thread opens afterwards live in that namespace; other
/// threads are unaffected.
pub fn enter_netns(name: &str) -> Result<(), OpError> {
    let path = format!("/run/netns/{name}");
    let f = std::fs::File::open(&path).map_err(|source| OpError {
        op: "open /run/netns/<name>",
        source,
    })?;
    // SAFETY: setns(2) with a namespace descriptor we hold open for the call; it changes
    // only the calling thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        Err(os_err("setns(CLONE_NEWNET)"))
    } else {
        Ok(())
    }
}

/// Waits until `fd` is readable or `timeout` passes; returns whether it is readable.
pub(crate) fn wait_readable(fd: RawFd, timeout: std::time::Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd that outlives the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// `struct packet_mreq`.
#[repr(C)]
struct PacketMreq {
    ifindex: i32,
    typ: u16,
    alen: u16,
    address: [u8; 8],
}

/// Puts interface `ifindex` in promiscuous mode through a packet-socket membership on `fd`
/// (an `AF_PACKET` socket). The kernel counts such memberships and drops this one when the
/// socket closes, however the process ends, so nothing is left behind after a crash.
pub(crate) fn add_promisc_membership(fd: RawFd, ifindex: u32) -> Result<(), OpError> {
    let m = PacketMreq {
        ifindex: ifindex as i32,
        typ: libc::PACKET_MR_PROMISC as u16,
        alen: 0,
        address: [0; 8],
    };
    setsockopt(
        fd,
        libc::SOL_PACKET,
        libc::PACKET_ADD_MEMBERSHIP,
        &m,
        "setsockopt(PACKET_ADD_MEMBERSHIP, PROMISC)",
    )
}

/// A packet socket that receives nothing (protocol 0) and holds the interface in
/// promiscuous mode while it is open.
#[derive(Debug)]
pub struct PromiscGuard {
    _fd: OwnedFd,
}

impl PromiscGuard {
    /// Makes interface `ifindex` (in the calling thread's namespace) promiscuous until the
    /// guard is dropped.
    pub fn new(ifindex: u32) -> Result<Self, OpError> {
        // SAFETY: plain socket(2); checked by owned_fd.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        let fd = owned_fd(fd as i64, "socket(AF_PACKET) for promiscuous mode")?;
        add_promisc_membership(fd.as_raw_fd(), ifindex)?;
        Ok(Self { _fd: fd })
    }
}

//! The kernel's `virtio_net_hdr` as packet sockets speak it (`PACKET_VNET_HDR`), and a
//! send-only packet socket that hands the kernel whole super-frames (TCP segments of up to
//! 64 KiB with their segment size, checksums left partial). A veth or a NIC with TSO keeps
//! such a frame whole; otherwise the kernel cuts it once, just before the driver.
//!
//! The `af_packet` port uses both (its ring frames carry the header too); the `af_xdp` port
//! uses the sender for frames too large for its UMEM chunks, since an XDP socket carries no
//! segmentation metadata.

use std::os::fd::{AsRawFd, OwnedFd};

use grant_pool::Region;

use super::{OpError, bind_packet, owned_fd, setsockopt};
use crate::MacHeader;

/// `PACKET_VNET_HDR`.
pub(crate) const PACKET_VNET_HDR: i32 = 15;
/// `sizeof(struct virtio_net_hdr)`.
pub(crate) const VNET_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_F_DATA_VALID: u8 = 2;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;
const VNET_GSO_ECN: u8 = 0x80;
/// Send buffer asked for on the socket that sends super-frames.
const SUPER_SNDBUF: i32 = 8 << 20;
/// Header bytes of a frame read to describe it to the kernel: Ethernet (with a VLAN tag),
/// IPv6 or IPv4 with options, and TCP with options.
pub(crate) const HEAD: usize = 18 + 60 + 60;

/// A send-only `AF_PACKET` socket with a virtio header before every frame.
#[derive(Debug)]
pub(crate) struct SuperSender {
    fd: OwnedFd,
}

impl SuperSender {
    /// Opens the socket (protocol 0: it receives nothing); `qdisc_bypass` sends straight to
    /// the driver. Sends nothing until [`SuperSender::bind`].
    pub(crate) fn new(qdisc_bypass: bool) -> Result<Self, OpError> {
        // SAFETY: plain socket(2); checked by `owned_fd`.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        let fd = owned_fd(fd as i64, "socket(AF_PACKET, sending socket)")?;
        let raw = fd.as_raw_fd();
        let one: i32 = 1;
        setsockopt(
            raw,
            libc::SOL_PACKET,
            PACKET_VNET_HDR,
            &one,
            "setsockopt(PACKET_VNET_HDR)",
        )?;
        if qdisc_bypass {
            setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                &one,
                "setsockopt(PACKET_QDISC_BYPASS)",
            )?;
        }
        if setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &SUPER_SNDBUF,
            "setsockopt(SO_SNDBUFFORCE)",
        )
        .is_err()
        {
            let _ = setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &SUPER_SNDBUF,
                "setsockopt(SO_SNDBUF)",
            );
        }
        Ok(Self { fd })
    }

    /// Binds the socket to interface `ifindex` for sending.
    pub(crate) fn bind(&self, ifindex: u32) -> Result<(), OpError> {
        bind_packet(
            self.fd.as_raw_fd(),
            ifindex,
            0,
            "bind(AF_PACKET, sending socket)",
        )
    }

    /// Sends the `len`-byte frame at the start of `src` (with `mac` over its first 12 bytes)
    /// whole through the socket, its virtio header made from `meta`. The headers go
    /// from a copy on the stack, so the header the kernel gets is the one described;
    /// the rest straight from `src`. Returns whether the kernel took it.
    pub(crate) fn send(
        &self,
        src: &Region,
        len: usize,
        mac: Option<&MacHeader>,
        meta: offload::FrameMeta,
    ) -> bool {
        if len > src.len() {
            return false;
        }
        let mut head = [0u8; HEAD];
        let h = len.min(HEAD);
        if src.read(0, &mut head[..h]).is_err() {
            return false;
        }
        if let Some(m) = mac {
            head[..12].copy_from_slice(m);
        }
        let vnet = Vnet::for_tx(&head[..h], len, meta).bytes();
        let iov = [
            libc::iovec {
                iov_base: vnet.as_ptr() as *mut libc::c_void,
                iov_len: VNET_LEN,
            },
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: h,
            },
            libc::iovec {
                iov_base: src.as_ptr().wrapping_add(h).cast(),
                iov_len: len - h,
            },
        ];
        // SAFETY: an all-zero msghdr is valid; the iovecs are set below.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len();
        // Why this is sound: the kernel only reads through the iovecs: two local arrays of
        // the lengths given, and `len - h` bytes of `src` from offset `h`, inside the region
        // (`len <= src.len()`, checked above), which stays mapped while the caller may
        // read its pool. Its owner may rewrite those bytes meanwhile; the kernel copies
        // whatever they hold, and the headers it acts on came from the copy above.
        // SAFETY: valid read-only iovecs, a socket we own (reasoning above).
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        n == (VNET_LEN + len) as isize
    }
}

/// `struct virtio_net_hdr`, in the host's byte order, which `PACKET_VNET_HDR` puts before
/// every frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Vnet {
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
}

impl Vnet {
    pub(crate) fn parse(b: &[u8; VNET_LEN]) -> Self {
        let w = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: w(2),
            gso_size: w(4),
            csum_start: w(6),
            csum_offset: w(8),
        }
    }

    pub(crate) fn bytes(&self) -> [u8; VNET_LEN] {
        let mut b = [0u8; VNET_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        let words = [
            self.hdr_len,
            self.gso_size,
            self.csum_start,
            self.csum_offset,
        ];
        for (i, v) in words.into_iter().enumerate() {
            b[2 + 2 * i..4 + 2 * i].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// What the kernel says of a received frame of `len` bytes: its checksum partial or
    /// verified, and a TCP segment size when it holds more than one segment. (The checksum's
    /// place is the one its headers give: whoever completes it parses them.)
    pub(crate) fn meta(&self, len: usize) -> offload::FrameMeta {
        let gso = match self.gso_type & !VNET_GSO_ECN {
            VNET_GSO_TCPV4 | VNET_GSO_TCPV6
                if (self.gso_size as usize) < len && self.gso_size <= offload::MAX_GSO_SIZE =>
            {
                self.gso_size
            }
            _ => 0,
        };
        if self.flags & VNET_F_NEEDS_CSUM != 0 {
            offload::FrameMeta::partial(gso)
        } else if self.flags & VNET_F_DATA_VALID != 0 {
            offload::FrameMeta::VERIFIED.with_gso(gso)
        } else {
            offload::FrameMeta::NONE.with_gso(gso)
        }
    }

    /// The header to send a frame of `len` bytes whose headers are `head` with `meta`: the
    /// checksum's start and offset where its headers put them, and for a TCP frame of more
    /// than one segment its type and segment size. A frame whose headers this does not
    /// understand goes with an empty header (the kernel sends it as it is, or refuses a
    /// frame over the MTU).
    pub(crate) fn for_tx(head: &[u8], len: usize, meta: offload::FrameMeta) -> Self {
        let mut v = Self::default();
        if meta == offload::FrameMeta::NONE {
            return v;
        }
        let Some(l4) = offload::csum::L4::parse(head, len) else {
            return v;
        };
        if meta.is_partial() {
            v.flags = VNET_F_NEEDS_CSUM;
            v.csum_start = l4.start as u16;
            v.csum_offset = l4.csum_offset as u16;
        }
        let gso = meta.gso_size();
        if gso != 0 && l4.proto == 6 && (gso as usize) < len {
            let Some(&[off_flags, tcp_flags]) = head.get(l4.start + 12..l4.start + 14) else {
                return v;
            };
            let v6 = [12, 16]
                .iter()
                .any(|&at| head.get(at..at + 2) == Some(&[0x86, 0xdd][..]));
            let ecn = if tcp_flags & 0x80 != 0 {
                VNET_GSO_ECN
            } else {
                0
            };
            v.gso_type = if v6 { VNET_GSO_TCPV6 } else { VNET_GSO_TCPV4 } | ecn;
            v.gso_size = gso;
            v.hdr_len = (l4.start + (off_flags >> 4) as usize * 4) as u16;
        }
        v
    }
}

//! The control protocol's wire format: one message per `SOCK_SEQPACKET` record.
//!
//! Every message starts with a 12-byte [`Header`] (magic, version, kind, total length), all
//! fields little endian, followed by a body whose shape the kind fixes. Parsing follows the
//! smoltcp split: [`Message::new_checked`] validates the header and the body length **once**,
//! after which the accessors cannot fail; [`Repr::parse`] turns a checked message into an
//! owned value after checking every field's meaning; [`Repr::to_bytes`] writes one back.
//!
//! The full byte layout is documented in `docs/control-protocol.md`.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::CtlError;
use super::ErrorCode;

/// First four bytes of every message: `FRCP` (Ferrite control protocol).
pub const MAGIC: u32 = u32::from_le_bytes(*b"FRCP");
/// The protocol version this code speaks.
pub const VERSION: u16 = 4;
/// Largest message an app may send: a grant of 64 Ki pages (256 MiB of port memory, the
/// default `limits.max_mem_mb`) fits.
pub const MAX_APP_MSG: usize = 257 * 1024;
/// Largest message the server sends (a stats reply for [`MAX_STATS_PORTS`] ports).
pub const MAX_SERVER_MSG: usize = 64 * 1024;
/// Longest port or app name in bytes.
pub const NAME_MAX: usize = 32;
/// Longest error text in bytes.
pub const TEXT_MAX: usize = 256;
/// Most ports one stats reply lists.
pub const MAX_STATS_PORTS: usize = 256;
/// Most grant references one grant message carries.
pub const MAX_REFS: usize = (MAX_APP_MSG - HEADER_LEN - size_of::<GrantBody>()) / 4;

/// The fixed header of every message.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: U32,
    /// Protocol version of the sender ([`VERSION`]).
    pub version: U16,
    /// Message kind ([`Kind`]).
    pub kind: U16,
    /// Total length of the message in bytes, header included.
    pub len: U32,
}
/// Bytes of [`Header`].
pub const HEADER_LEN: usize = size_of::<Header>();
const _: () = assert!(HEADER_LEN == 12);

/// The kinds of message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Kind {
    /// App → server: who I am.
    Hello = 1,
    /// Server → app: credentials accepted; these are the limits for your grant.
    InitWait = 2,
    /// App → server: my port's memory and notifiers (three fds attached on Linux).
    Grant = 3,
    /// Server → app: the port is on the switch.
    Connected = 4,
    /// Any client → server: send me the counters.
    StatsRequest = 5,
    /// Server → client: the counters.
    StatsReply = 6,
    /// App → server: take my port off the switch.
    Detach = 7,
    /// Server → app: the port is gone; the connection closes next.
    Closed = 8,
    /// Server → peer: your last message was refused; the connection closes next.
    Error = 9,
    /// Operator → server: stream me the frames a port receives and sends.
    CaptureRequest = 10,
    /// Server → operator: one captured frame (its first bytes follow the fixed part).
    CaptureFrame = 11,
}

impl Kind {
    /// The kind named by a raw header field, if any.
    pub fn from_raw(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Hello,
            2 => Self::InitWait,
            3 => Self::Grant,
            4 => Self::Connected,
            5 => Self::StatsRequest,
            6 => Self::StatsReply,
            7 => Self::Detach,
            8 => Self::Closed,
            9 => Self::Error,
            10 => Self::CaptureRequest,
            11 => Self::CaptureFrame,
            _ => return None,
        })
    }

    /// Bytes of the fixed part of the body.
    fn fixed_len(self) -> usize {
        match self {
            Self::Hello => size_of::<HelloBody>(),
            Self::InitWait => size_of::<InitWaitBody>(),
            Self::Grant => size_of::<GrantBody>(),
            Self::Connected => size_of::<ConnectedBody>(),
            Self::StatsRequest | Self::Detach | Self::Closed => 0,
            Self::StatsReply => size_of::<StatsHead>(),
            Self::Error => size_of::<ErrorBody>(),
            Self::CaptureRequest => size_of::<CaptureRequestBody>(),
            Self::CaptureFrame => size_of::<CaptureFrameBody>(),
        }
    }
}

/// Body of [`Kind::Hello`].
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HelloBody {
    /// The app's MAC address: unicast, not all zeros.
    pub mac: [u8; 6],
    /// Bytes of `name` in use (1..=32).
    pub name_len: u8,
    /// Reserved, 0.
    pub reserved: u8,
    /// The app's name: `[A-Za-z0-9._-]`, zero padded.
    pub name: [u8; NAME_MAX],
}

/// Body of [`Kind::InitWait`]: the limits an app's grant must respect.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InitWaitBody {
    /// Largest ring size (descriptors) per ring.
    pub max_ring: U32,
    /// Smallest buffer size in bytes.
    pub min_buf_size: U32,
    /// Largest buffer size in bytes.
    pub max_buf_size: U32,
    /// Most buffers in the app's pool.
    pub max_bufs: U32,
    /// Largest port memory in bytes.
    pub max_mem: U64,
    /// Milliseconds the app has to send its grant.
    pub timeout_ms: U32,
    /// Reserved, 0.
    pub reserved: U32,
}

/// Fixed part of [`Kind::Grant`]; `nrefs` little-endian `u32` grant references follow.
///
/// The message carries `grant_fds + notify_fds` file descriptors: first the grant's
/// attachments (`Grant::attachments`: on the shm backend the data memfd and the control
/// memfd), then the notifier's (`Notifier::attachments`: on shm two eventfds). On Xen both
/// counts are 0 and the references and `notify_port` say everything.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct GrantBody {
    /// Descriptors in the rx ring (server → app frames).
    pub rx_size: U32,
    /// Descriptors in the tx ring (app → server frames).
    pub tx_size: U32,
    /// Descriptors in the fill ring (app → server empty buffers).
    pub fill_size: U32,
    /// Descriptors in the completion ring (server → app sent buffers).
    pub comp_size: U32,
    /// Bytes per buffer of the app's pool.
    pub buf_size: U32,
    /// Buffers in the app's pool.
    pub buf_count: U32,
    /// The granting domain (Xen domid; on shm the number the app calls itself).
    pub domid: U16,
    /// Descriptors of the grant (first in the message's descriptors).
    pub grant_fds: u8,
    /// Descriptors of the notifier (after the grant's).
    pub notify_fds: u8,
    /// The notifier's port (`Notifier::port`: an event channel on Xen, 0 on shm).
    pub notify_port: U32,
    /// Number of grant references that follow: the pages of the port's memory.
    pub nrefs: U32,
}

/// Body of [`Kind::Connected`].
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ConnectedBody {
    /// The switch port the app now is.
    pub port: U16,
    /// The pool id the server gave the app's pool (the top byte of its buffer handles).
    pub pool: u8,
    /// Reserved, 0.
    pub reserved: u8,
    /// Identifies this server instance (changes at every start).
    pub instance: U64,
}

/// Body of [`Kind::CaptureRequest`].
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CaptureRequestBody {
    /// The switch port to capture (as `ferrite stats` numbers it).
    pub port: U16,
    /// 1: what the port receives, 2: what it is sent, 3: both.
    pub direction: u8,
    /// Reserved, 0.
    pub reserved: u8,
    /// Bytes of each frame to send at most (1..=[`CAPTURE_MAX`]).
    pub snaplen: U32,
    /// Frames to send before the server ends the capture (0: until the peer goes).
    pub count: U64,
}

/// Fixed part of [`Kind::CaptureFrame`]; the frame's first bytes follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct CaptureFrameBody {
    /// When the switch saw the frame, in ns since the Unix epoch.
    pub ts_ns: U64,
    /// The frame's whole length.
    pub orig_len: U32,
    /// Frames the capture lost (it could not keep up) since the one before.
    pub lost: U32,
    /// 1: received by the port, 2: sent to it.
    pub direction: u8,
    /// Reserved, 0.
    pub reserved: [u8; 7],
}

/// The most bytes of one frame a [`Kind::CaptureFrame`] carries.
pub const CAPTURE_MAX: usize = MAX_SERVER_MSG - HEADER_LEN - size_of::<CaptureFrameBody>();

/// Which way frames went through a captured port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received from the port.
    Rx = 1,
    /// Sent to the port.
    Tx = 2,
    /// Both (a request only).
    Both = 3,
}

impl Direction {
    fn from_raw(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Rx,
            2 => Self::Tx,
            3 => Self::Both,
            _ => return None,
        })
    }

    /// Whether frames going way `d` are wanted.
    pub fn takes(self, d: Direction) -> bool {
        self == Self::Both || self == d
    }
}

/// Fixed part of [`Kind::Error`]; `text_len` bytes of UTF-8 text follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ErrorBody {
    /// [`ErrorCode`].
    pub code: U16,
    /// Bytes of text that follow (at most [`TEXT_MAX`]).
    pub text_len: U16,
}

/// Fixed part of [`Kind::StatsReply`]; `nports` [`PortEntry`]s then `nrej` [`RejectEntry`]s
/// follow.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct StatsHead {
    /// Nanoseconds since the server started.
    pub uptime_ns: U64,
    /// Nanoseconds from start to the first forwarded frame; `u64::MAX` when none yet.
    pub first_frame_ns: U64,
    /// Identifies this server instance.
    pub instance: U64,
    /// Number of port entries.
    pub nports: U32,
    /// Number of rejection entries.
    pub nrej: U32,
}

/// One port's counters in a stats reply.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PortEntry {
    /// Switch port number.
    pub port: U16,
    /// 0: a NIC (configured) port, 1: an app port.
    pub kind: u8,
    /// Bytes of `name` in use.
    pub name_len: u8,
    /// Port name, zero padded.
    pub name: [u8; NAME_MAX],
    /// MAC address.
    pub mac: [u8; 6],
    /// Reserved, 0.
    pub reserved: [u8; 2],
    /// Counters, in the order of [`PortCounters`]' fields.
    pub counters: [U64; PORT_COUNTERS],
}

/// One rejection reason's count in a stats reply.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RejectEntry {
    /// [`ErrorCode`] of the reason.
    pub code: U16,
    /// Reserved, 0.
    pub reserved: [u8; 6],
    /// How many control messages or connections were refused for it.
    pub count: U64,
}

/// Number of counters per port in a stats reply.
pub const PORT_COUNTERS: usize = 24;

/// Per-port counters as reported over the control socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Frames the port dropped on receive.
    pub rx_dropped: u64,
    /// Frames sent to the port.
    pub tx_packets: u64,
    /// Bytes sent to the port.
    pub tx_bytes: u64,
    /// Frames refused on transmit (ring full, no buffer).
    pub tx_dropped: u64,
    /// Malformed or rejected input, all reasons.
    pub errors: u64,
    /// App frames whose source MAC was not the app's own.
    pub spoofed: u64,
    /// App frames shorter than an Ethernet header.
    pub runt: u64,
    /// Ring indices the app published that cannot be right.
    pub index_ahead: u64,
    /// Descriptors naming a pool the app may not use.
    pub bad_pool: u64,
    /// Descriptors naming a buffer index out of range.
    pub bad_index: u64,
    /// Descriptors with a length over the buffer size.
    pub bad_len: u64,
    /// Descriptors naming a buffer the app does not hold.
    pub not_held: u64,
    /// Doorbell kicks the server sent the app (event-channel notifications on Xen).
    pub kicks_to_app: u64,
    /// Times the server found the app's doorbell rung (kicks that arrive while one is
    /// pending merge, so this is at most the app's own count).
    pub kicks_from_app: u64,
    /// Frames dropped because their source MAC was a group address (any port).
    pub group_source: u64,
    /// App frames dropped because they were sent to a reserved link-local group address
    /// (01:80:c2:00:00:00 to 01:80:c2:00:00:0f).
    pub link_local: u64,
    /// App frames dropped because the app was over its rate.
    pub rate_limited: u64,
    /// New stations seen on the port but not learned: the port had its most stations.
    pub not_learned: u64,
    /// Descriptors whose offload metadata makes no sense for their frame.
    pub bad_meta: u64,
    /// Frames the switch delivered to the port by copy (into the port's own buffers).
    pub tx_by_copy: u64,
    /// Frames the switch delivered to the port by handle (no copy: the port reads the
    /// frame where it was received).
    pub tx_by_handle: u64,
    /// Frames received from the port that the switch flooded (unknown or group
    /// destination).
    pub flooded: u64,
}

impl PortCounters {
    /// Each counter's name and what it counts, in the order of [`PortCounters::values`].
    pub const FIELDS: [(&'static str, &'static str); PORT_COUNTERS] = [
        ("rx_packets", "Frames received from the port."),
        ("rx_bytes", "Bytes received from the port."),
        (
            "rx_dropped",
            "Frames the port or the switch dropped on receive.",
        ),
        ("tx_packets", "Frames sent to the port."),
        ("tx_bytes", "Bytes sent to the port."),
        (
            "tx_dropped",
            "Frames refused on transmit (ring full, no buffer).",
        ),
        ("errors", "Malformed or rejected input, all reasons."),
        (
            "spoofed",
            "App frames whose source MAC was not the app's own.",
        ),
        ("runt", "App frames shorter than an Ethernet header."),
        (
            "index_ahead",
            "Ring indices the app published that cannot be right.",
        ),
        ("bad_pool", "Descriptors naming a pool the app may not use."),
        (
            "bad_index",
            "Descriptors naming a buffer index out of range.",
        ),
        ("bad_len", "Descriptors with a length over the buffer size."),
        (
            "not_held",
            "Descriptors naming a buffer the app does not hold.",
        ),
        ("kicks_to_app", "Doorbell kicks the server sent the app."),
        (
            "kicks_from_app",
            "Times the server found the app's doorbell rung.",
        ),
        ("group_source", "Frames dropped for a group source MAC."),
        (
            "link_local",
            "App frames to a reserved link-local group address, dropped.",
        ),
        (
            "rate_limited",
            "App frames dropped because the app was over its rate.",
        ),
        (
            "not_learned",
            "New stations not learned: the port had its most stations.",
        ),
        (
            "bad_meta",
            "Descriptors whose offload metadata makes no sense for their frame.",
        ),
        (
            "tx_by_copy",
            "Frames the switch delivered to the port by copy.",
        ),
        (
            "tx_by_handle",
            "Frames the switch delivered to the port by handle, without a copy.",
        ),
        (
            "flooded",
            "Frames received from the port that the switch flooded.",
        ),
    ];

    /// The counters, in the order of [`PortCounters::FIELDS`].
    pub fn values(&self) -> [u64; PORT_COUNTERS] {
        self.to_array()
    }

    fn to_array(self) -> [u64; PORT_COUNTERS] {
        [
            self.rx_packets,
            self.rx_bytes,
            self.rx_dropped,
            self.tx_packets,
            self.tx_bytes,
            self.tx_dropped,
            self.errors,
            self.spoofed,
            self.runt,
            self.index_ahead,
            self.bad_pool,
            self.bad_index,
            self.bad_len,
            self.not_held,
            self.kicks_to_app,
            self.kicks_from_app,
            self.group_source,
            self.link_local,
            self.rate_limited,
            self.not_learned,
            self.bad_meta,
            self.tx_by_copy,
            self.tx_by_handle,
            self.flooded,
        ]
    }

    fn from_array(a: [u64; PORT_COUNTERS]) -> Self {
        Self {
            rx_packets: a[0],
            rx_bytes: a[1],
            rx_dropped: a[2],
            tx_packets: a[3],
            tx_bytes: a[4],
            tx_dropped: a[5],
            errors: a[6],
            spoofed: a[7],
            runt: a[8],
            index_ahead: a[9],
            bad_pool: a[10],
            bad_index: a[11],
            bad_len: a[12],
            not_held: a[13],
            kicks_to_app: a[14],
            kicks_from_app: a[15],
            group_source: a[16],
            link_local: a[17],
            rate_limited: a[18],
            not_learned: a[19],
            bad_meta: a[20],
            tx_by_copy: a[21],
            tx_by_handle: a[22],
            flooded: a[23],
        }
    }
}

/// A message whose header and body length have been checked; accessors cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buf: T,
    kind: Kind,
}

fn malformed(text: impl Into<String>) -> CtlError {
    CtlError::Refused {
        code: ErrorCode::Malformed,
        text: text.into(),
    }
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Checks the header (magic, version, kind, length equal to the buffer's) and that the
    /// body has exactly the length its kind and counts call for.
    pub fn new_checked(buf: T) -> Result<Self, CtlError> {
        let b = buf.as_ref();
        let (h, body) = Header::read_from_prefix(b).map_err(|_| {
            malformed(format!(
                "message of {} bytes is shorter than a header",
                b.len()
            ))
        })?;
        if h.magic.get() != MAGIC {
            return Err(malformed(format!("bad magic {:#010x}", h.magic.get())));
        }
        if h.version.get() != VERSION {
            return Err(CtlError::Refused {
                code: ErrorCode::UnsupportedVersion,
                text: format!(
                    "protocol version {} is not supported (this server speaks {VERSION})",
                    h.version.get()
                ),
            });
        }
        if h.len.get() as usize != b.len() {
            return Err(malformed(format!(
                "header length {} differs from the {} bytes received",
                h.len.get(),
                b.len()
            )));
        }
        let kind = Kind::from_raw(h.kind.get())
            .ok_or_else(|| malformed(format!("unknown message kind {}", h.kind.get())))?;
        let fixed = kind.fixed_len();
        if body.len() < fixed {
            return Err(malformed(format!(
                "{kind:?} body of {} bytes is shorter than {fixed}",
                body.len()
            )));
        }
        let tail = body.len() - fixed;
        let want_tail = match kind {
            Kind::Grant => {
                let (g, _) = GrantBody::read_from_prefix(body).map_err(|_| malformed("grant"))?;
                let n = g.nrefs.get() as usize;
                if n > MAX_REFS {
                    return Err(malformed(format!(
                        "{n} grant references, at most {MAX_REFS}"
                    )));
                }
                n * 4
            }
            Kind::Error => {
                let (e, _) = ErrorBody::read_from_prefix(body).map_err(|_| malformed("error"))?;
                let n = e.text_len.get() as usize;
                if n > TEXT_MAX {
                    return Err(malformed(format!(
                        "error text of {n} bytes, at most {TEXT_MAX}"
                    )));
                }
                n
            }
            Kind::CaptureFrame => {
                if tail > CAPTURE_MAX {
                    return Err(malformed(format!(
                        "a captured frame of {tail} bytes, at most {CAPTURE_MAX}"
                    )));
                }
                tail
            }
            Kind::StatsReply => {
                let (s, _) = StatsHead::read_from_prefix(body).map_err(|_| malformed("stats"))?;
                if s.nports.get() as usize > MAX_STATS_PORTS || s.nrej.get() > 64 {
                    return Err(malformed("stats reply lists too many entries"));
                }
                (s.nports.get() as usize)
                    .saturating_mul(size_of::<PortEntry>())
                    .saturating_add(
                        (s.nrej.get() as usize).saturating_mul(size_of::<RejectEntry>()),
                    )
            }
            _ => 0,
        };
        if tail != want_tail {
            return Err(malformed(format!(
                "{kind:?} body has {tail} trailing bytes, its counts call for {want_tail}"
            )));
        }
        Ok(Self { buf, kind })
    }

    /// The message kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn body(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    fn fixed<B: FromBytes>(&self) -> B {
        // new_checked verified the body holds at least the fixed part of this kind.
        B::read_from_prefix(self.body())
            .map(|(b, _)| b)
            .unwrap_or_else(|_| unreachable!("body length checked in new_checked"))
    }

    fn tail(&self) -> &[u8] {
        &self.body()[self.kind.fixed_len()..]
    }
}

/// An app's name: 1 to 32 bytes of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// A checked name.
    pub fn new(s: &str) -> Result<Self, CtlError> {
        let ok = !s.is_empty()
            && s.len() <= NAME_MAX
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CtlError::Refused {
                code: ErrorCode::BadName,
                text: format!(
                    "name {:?} must be 1 to {NAME_MAX} characters of A-Z a-z 0-9 . _ -",
                    s.escape_debug().to_string()
                ),
            })
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn from_field(len: u8, bytes: &[u8; NAME_MAX]) -> Result<Self, CtlError> {
        let len = len as usize;
        let raw = bytes.get(..len).ok_or_else(|| CtlError::Refused {
            code: ErrorCode::BadName,
            text: format!("name length {len} is over {NAME_MAX}"),
        })?;
        if bytes[len.min(NAME_MAX)..].iter().any(|&b| b != 0) {
            return Err(CtlError::Refused {
                code: ErrorCode::BadName,
                text: "bytes after the name must be zero".into(),
            });
        }
        let s = core::str::from_utf8(raw).map_err(|_| CtlError::Refused {
            code: ErrorCode::BadName,
            text: "name is not UTF-8".into(),
        })?;
        Self::new(s)
    }

    fn to_field(&self) -> (u8, [u8; NAME_MAX]) {
        let mut f = [0u8; NAME_MAX];
        let n = self.0.len().min(NAME_MAX);
        f[..n].copy_from_slice(&self.0.as_bytes()[..n]);
        (n as u8, f)
    }
}

impl core::fmt::Display for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks that `mac` is usable as an app's address: unicast and not all zeros.
pub fn check_mac(mac: [u8; 6]) -> Result<(), CtlError> {
    if mac == [0; 6] || mac[0] & 1 != 0 {
        return Err(CtlError::Refused {
            code: ErrorCode::BadMac,
            text: format!("MAC {} must be unicast and not zero", fmt_mac(mac)),
        });
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// [`Kind::InitWait`]'s content: limits for the app's grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest ring size per ring (a power of two).
    pub max_ring: u32,
    /// Smallest buffer size.
    pub min_buf_size: u32,
    /// Largest buffer size.
    pub max_buf_size: u32,
    /// Most buffers in the pool.
    pub max_bufs: u32,
    /// Largest port memory in bytes.
    pub max_mem: u64,
    /// Milliseconds the app has to complete the handshake.
    pub timeout_ms: u32,
}

/// [`Kind::Grant`]'s content: the app port's shape and where its memory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRepr {
    /// Descriptors in the rx ring.
    pub rx_size: u32,
    /// Descriptors in the tx ring.
    pub tx_size: u32,
    /// Descriptors in the fill ring.
    pub fill_size: u32,
    /// Descriptors in the completion ring.
    pub comp_size: u32,
    /// Bytes per buffer.
    pub buf_size: u32,
    /// Buffers in the pool.
    pub buf_count: u32,
    /// Granting domain.
    pub domid: u16,
    /// How many of the attached descriptors belong to the grant (they come first).
    pub grant_fds: u8,
    /// How many of the attached descriptors belong to the notifier (after the grant's).
    pub notify_fds: u8,
    /// The notifier's port.
    pub notify_port: u32,
    /// Grant references, verbatim as `Grant::refs` gave them: one per page of port memory.
    pub refs: Vec<u32>,
}

impl GrantRepr {
    /// The port layout the grant announces: `[rx, tx, fill, completion, buffer size, buffer
    /// count]`.
    pub fn layout(&self) -> [u32; 6] {
        [
            self.rx_size,
            self.tx_size,
            self.fill_size,
            self.comp_size,
            self.buf_size,
            self.buf_count,
        ]
    }

    /// Bytes of port memory the references name.
    pub fn mem_len(&self) -> u64 {
        self.refs.len() as u64 * 4096
    }
}

/// One port in a stats reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStatsRepr {
    /// Switch port number.
    pub port: u16,
    /// Whether this is an app's port (else a configured NIC port).
    pub app: bool,
    /// Port name.
    pub name: String,
    /// MAC address.
    pub mac: [u8; 6],
    /// Counters.
    pub counters: PortCounters,
}

/// [`Kind::StatsReply`]'s content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatsRepr {
    /// Nanoseconds since the server started.
    pub uptime_ns: u64,
    /// Nanoseconds from start to the first forwarded frame, if any yet.
    pub first_frame_ns: Option<u64>,
    /// This server instance.
    pub instance: u64,
    /// Every port.
    pub ports: Vec<PortStatsRepr>,
    /// Refused control messages/connections by reason.
    pub rejections: Vec<(ErrorCode, u64)>,
}

/// A parsed, owned control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repr {
    /// App → server.
    Hello {
        /// App name.
        name: Name,
        /// App MAC.
        mac: [u8; 6],
    },
    /// Server → app.
    InitWait(Limits),
    /// App → server (with the memory fd and two notifier fds attached).
    Grant(GrantRepr),
    /// Server → app.
    Connected {
        /// Switch port number.
        port: u16,
        /// Pool id of the app's pool.
        pool: u8,
        /// Server instance.
        instance: u64,
    },
    /// Client → server.
    StatsRequest,
    /// Server → client.
    StatsReply(StatsRepr),
    /// App → server.
    Detach,
    /// Server → app.
    Closed,
    /// Server → peer.
    Error {
        /// Why.
        code: ErrorCode,
        /// What a user can act on.
        text: String,
    },
    /// Operator → server.
    CaptureRequest {
        /// Switch port.
        port: u16,
        /// Which way.
        direction: Direction,
        /// Bytes of each frame at most (1..=[`CAPTURE_MAX`]).
        snaplen: u32,
        /// Frames before the server ends the capture (0: no end).
        count: u64,
    },
    /// Server → operator.
    CaptureFrame {
        /// ns since the Unix epoch.
        ts_ns: u64,
        /// The frame's whole length.
        orig_len: u32,
        /// Frames lost since the one before.
        lost: u32,
        /// Received by the port ([`Direction::Rx`]) or sent to it ([`Direction::Tx`]).
        direction: Direction,
        /// The frame's first bytes.
        data: Vec<u8>,
    },
}

fn reserved_zero(ok: bool, what: &str) -> Result<(), CtlError> {
    if ok {
        Ok(())
    } else {
        Err(malformed(format!("{what}: reserved field is not zero")))
    }
}

impl Repr {
    /// The message kind of this value.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Hello { .. } => Kind::Hello,
            Self::InitWait(_) => Kind::InitWait,
            Self::Grant(_) => Kind::Grant,
            Self::Connected { .. } => Kind::Connected,
            Self::StatsRequest => Kind::StatsRequest,
            Self::StatsReply(_) => Kind::StatsReply,
            Self::Detach => Kind::Detach,
            Self::Closed => Kind::Closed,
            Self::Error { .. } => Kind::Error,
            Self::CaptureRequest { .. } => Kind::CaptureRequest,
            Self::CaptureFrame { .. } => Kind::CaptureFrame,
        }
    }

    /// Parses a checked message, validating every field's meaning (names, MACs, reserved
    /// fields, text encoding). Limits that depend on the server's configuration are checked
    /// by the session, not here.
    pub fn parse<T: AsRef<[u8]>>(m: &Message<T>) -> Result<Self, CtlError> {
        Ok(match m.kind() {
            Kind::Hello => {
                let b: HelloBody = m.fixed();
                reserved_zero(b.reserved == 0, "hello")?;
                let name = Name::from_field(b.name_len, &b.name)?;
                check_mac(b.mac)?;
                Self::Hello { name, mac: b.mac }
            }
            Kind::InitWait => {
                let b: InitWaitBody = m.fixed();
                reserved_zero(b.reserved.get() == 0, "init-wait")?;
                Self::InitWait(Limits {
                    max_ring: b.max_ring.get(),
                    min_buf_size: b.min_buf_size.get(),
                    max_buf_size: b.max_buf_size.get(),
                    max_bufs: b.max_bufs.get(),
                    max_mem: b.max_mem.get(),
                    timeout_ms: b.timeout_ms.get(),
                })
            }
            Kind::Grant => {
                let b: GrantBody = m.fixed();
                let refs = m
                    .tail()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Self::Grant(GrantRepr {
                    rx_size: b.rx_size.get(),
                    tx_size: b.tx_size.get(),
                    fill_size: b.fill_size.get(),
                    comp_size: b.comp_size.get(),
                    buf_size: b.buf_size.get(),
                    buf_count: b.buf_count.get(),
                    domid: b.domid.get(),
                    grant_fds: b.grant_fds,
                    notify_fds: b.notify_fds,
                    notify_port: b.notify_port.get(),
                    refs,
                })
            }
            Kind::Connected => {
                let b: ConnectedBody = m.fixed();
                reserved_zero(b.reserved == 0, "connected")?;
                Self::Connected {
                    port: b.port.get(),
                    pool: b.pool,
                    instance: b.instance.get(),
                }
            }
            Kind::StatsRequest => Self::StatsRequest,
            Kind::CaptureRequest => {
                let b: CaptureRequestBody = m.fixed();
                reserved_zero(b.reserved == 0, "capture request")?;
                let direction = Direction::from_raw(b.direction)
                    .ok_or_else(|| malformed(format!("capture direction {}", b.direction)))?;
                let snaplen = b.snaplen.get();
                if snaplen == 0 || snaplen as usize > CAPTURE_MAX {
                    return Err(malformed(format!(
                        "capture snaplen {snaplen}: 1 to {CAPTURE_MAX}"
                    )));
                }
                Self::CaptureRequest {
                    port: b.port.get(),
                    direction,
                    snaplen,
                    count: b.count.get(),
                }
            }
            Kind::CaptureFrame => {
                let b: CaptureFrameBody = m.fixed();
                reserved_zero(b.reserved == [0; 7], "capture frame")?;
                let direction = Direction::from_raw(b.direction)
                    .filter(|d| *d != Direction::Both)
                    .ok_or_else(|| malformed(format!("captured direction {}", b.direction)))?;
                Self::CaptureFrame {
                    ts_ns: b.ts_ns.get(),
                    orig_len: b.orig_len.get(),
                    lost: b.lost.get(),
                    direction,
                    data: m.tail().to_vec(),
                }
            }
            Kind::Detach => Self::Detach,
            Kind::Closed => Self::Closed,
            Kind::Error => {
                let b: ErrorBody = m.fixed();
                let text = core::str::from_utf8(m.tail())
                    .map_err(|_| malformed("error text is not UTF-8"))?
                    .to_owned();
                Self::Error {
                    code: ErrorCode::from_raw(b.code.get()),
                    text,
                }
            }
            Kind::StatsReply => {
                let h: StatsHead = m.fixed();
                let tail = m.tail();
                let np = h.nports.get() as usize;
                let (pe, re) = tail.split_at(np * size_of::<PortEntry>());
                let mut ports = Vec::with_capacity(np);
                for c in pe.chunks_exact(size_of::<PortEntry>()) {
                    let e = PortEntry::read_from_bytes(c).map_err(|_| malformed("port entry"))?;
                    let n = (e.name_len as usize).min(NAME_MAX);
                    // Strict, as error texts are: a lossy reading could grow the name past
                    // NAME_MAX, and the value would not survive being sent on.
                    let name = core::str::from_utf8(&e.name[..n])
                        .map_err(|_| malformed("port name is not UTF-8"))?;
                    ports.push(PortStatsRepr {
                        port: e.port.get(),
                        app: e.kind == 1,
                        name: name.to_owned(),
                        mac: e.mac,
                        counters: PortCounters::from_array(e.counters.map(|v| v.get())),
                    });
                }
                let rejections = re
                    .chunks_exact(size_of::<RejectEntry>())
                    .filter_map(|c| RejectEntry::read_from_bytes(c).ok())
                    .map(|e| (ErrorCode::from_raw(e.code.get()), e.count.get()))
                    .collect();
                let ff = h.first_frame_ns.get();
                Self::StatsReply(StatsRepr {
                    uptime_ns: h.uptime_ns.get(),
                    first_frame_ns: (ff != u64::MAX).then_some(ff),
                    instance: h.instance.get(),
                    ports,
                    rejections,
                })
            }
        })
    }

    /// Parses raw bytes: [`Message::new_checked`] then [`Repr::parse`].
    pub fn from_bytes(b: &[u8]) -> Result<Self, CtlError> {
        Self::parse(&Message::new_checked(b)?)
    }

    /// Bytes [`Repr::to_bytes`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
            + self.kind().fixed_len()
            + match self {
                Self::Grant(g) => g.refs.len() * 4,
                Self::Error { text, .. } => text.len().min(TEXT_MAX),
                Self::CaptureFrame { data, .. } => data.len().min(CAPTURE_MAX),
                Self::StatsReply(s) => {
                    s.ports.len().min(MAX_STATS_PORTS) * size_of::<PortEntry>()
                        + s.rejections.len().min(64) * size_of::<RejectEntry>()
                }
                _ => 0,
            }
    }

    /// Serialises the message (header included) into a new buffer.
    ///
    /// Error texts are cut at [`TEXT_MAX`] bytes and port names at [`NAME_MAX`] (each on a
    /// character boundary), stats replies at [`MAX_STATS_PORTS`] ports.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buffer_len());
        let h = Header {
            magic: MAGIC.into(),
            version: VERSION.into(),
            kind: (self.kind() as u16).into(),
            len: (self.buffer_len() as u32).into(),
        };
        out.extend_from_slice(h.as_bytes());
        match self {
            Self::Hello { name, mac } => {
                let (name_len, name) = name.to_field();
                let b = HelloBody {
                    mac: *mac,
                    name_len,
                    reserved: 0,
                    name,
                };
                out.extend_from_slice(b.as_bytes());
            }
            Self::InitWait(l) => {
                let b = InitWaitBody {
                    max_ring: l.max_ring.into(),
                    min_buf_size: l.min_buf_size.into(),
                    max_buf_size: l.max_buf_size.into(),
                    max_bufs: l.max_bufs.into(),
                    max_mem: l.max_mem.into(),
                    timeout_ms: l.timeout_ms.into(),
                    reserved: 0.into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Self::Grant(g) => {
                let b = GrantBody {
                    rx_size: g.rx_size.into(),
                    tx_size: g.tx_size.into(),
                    fill_size: g.fill_size.into(),
                    comp_size: g.comp_size.into(),
                    buf_size: g.buf_size.into(),
                    buf_count: g.buf_count.into(),
                    domid: g.domid.into(),
                    grant_fds: g.grant_fds,
                    notify_fds: g.notify_fds,
                    notify_port: g.notify_port.into(),
                    nrefs: (g.refs.len() as u32).into(),
                };
                out.extend_from_slice(b.as_bytes());
                for r in &g.refs {
                    out.extend_from_slice(&r.to_le_bytes());
                }
            }
            Self::Connected {
                port,
                pool,
                instance,
            } => {
                let b = ConnectedBody {
                    port: (*port).into(),
                    pool: *pool,
                    reserved: 0,
                    instance: (*instance).into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Self::StatsRequest | Self::Detach | Self::Closed => {}
            Self::CaptureRequest {
                port,
                direction,
                snaplen,
                count,
            } => {
                let b = CaptureRequestBody {
                    port: (*port).into(),
                    direction: *direction as u8,
                    reserved: 0,
                    snaplen: (*snaplen).into(),
                    count: (*count).into(),
                };
                out.extend_from_slice(b.as_bytes());
            }
            Self::CaptureFrame {
                ts_ns,
                orig_len,
                lost,
                direction,
                data,
            } => {
                let b = CaptureFrameBody {
                    ts_ns: (*ts_ns).into(),
                    orig_len: (*orig_len).into(),
                    lost: (*lost).into(),
                    direction: *direction as u8,
                    reserved: [0; 7],
                };
                out.extend_from_slice(b.as_bytes());
                out.extend_from_slice(&data[..data.len().min(CAPTURE_MAX)]);
            }
            Self::Error { code, text } => {
                let mut n = text.len().min(TEXT_MAX);
                while !text.is_char_boundary(n) {
                    n -= 1;
                }
                let b = ErrorBody {
                    code: (*code as u16).into(),
                    text_len: (n as u16).into(),
                };
                out.extend_from_slice(b.as_bytes());
                out.extend_from_slice(&text.as_bytes()[..n]);
                // A cut on a char boundary may be shorter than buffer_len assumed: fix len.
                let len = out.len() as u32;
                out[8..12].copy_from_slice(&len.to_le_bytes());
            }
            Self::StatsReply(s) => {
                let ports = &s.ports[..s.ports.len().min(MAX_STATS_PORTS)];
                let rej = &s.rejections[..s.rejections.len().min(64)];
                let h = StatsHead {
                    uptime_ns: s.uptime_ns.into(),
                    first_frame_ns: s.first_frame_ns.unwrap_or(u64::MAX).into(),
                    instance: s.instance.into(),
                    nports: (ports.len() as u32).into(),
                    nrej: (rej.len() as u32).into(),
                };
                out.extend_from_slice(h.as_bytes());
                for p in ports {
                    let mut name = [0u8; NAME_MAX];
                    let mut n = p.name.len().min(NAME_MAX);
                    while !p.name.is_char_boundary(n) {
                        n -= 1;
                    }
                    name[..n].copy_from_slice(&p.name.as_bytes()[..n]);
                    let e = PortEntry {
                        port: p.port.into(),
                        kind: p.app as u8,
                        name_len: n as u8,
                        name,
                        mac: p.mac,
                        reserved: [0; 2],
                        counters: p.counters.to_array().map(U64::new),
                    };
                    out.extend_from_slice(e.as_bytes());
                }
                for (code, count) in rej {
                    let e = RejectEntry {
                        code: (*code as u16).into(),
                        reserved: [0; 6],
                        count: (*count).into(),
                    };
                    out.extend_from_slice(e.as_bytes());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(r: Repr) {
        let b = r.to_bytes();
        assert_eq!(b.len(), r.buffer_len());
        assert_eq!(Repr::from_bytes(&b).expect("parses"), r);
    }

    #[test]
    fn every_kind_round_trips() {
        roundtrip(Repr::Hello {
            name: Name::new("web-1").unwrap(),
            mac: [2, 0, 0, 0, 0, 1],
        });
        roundtrip(Repr::InitWait(Limits {
            max_ring: 4096,
            min_buf_size: 2048,
            max_buf_size: 2048,
            max_bufs: 8192,
            max_mem: 1 << 26,
            timeout_ms: 2000,
        }));
        roundtrip(Repr::Grant(GrantRepr {
            rx_size: 256,
            tx_size: 256,
            fill_size: 512,
            comp_size: 512,
            buf_size: 2048,
            buf_count: 1024,
            domid: 0,
            grant_fds: 2,
            notify_fds: 2,
            notify_port: 0,
            refs: vec![1, 2, 3],
        }));
        roundtrip(Repr::Connected {
            port: 3,
            pool: 7,
            instance: 99,
        });
        roundtrip(Repr::StatsRequest);
        roundtrip(Repr::CaptureRequest {
            port: 3,
            direction: Direction::Both,
            snaplen: 128,
            count: 10,
        });
        roundtrip(Repr::CaptureFrame {
            ts_ns: 1_700_000_000_000_000_000,
            orig_len: 1514,
            lost: 2,
            direction: Direction::Tx,
            data: vec![7; 128],
        });
        roundtrip(Repr::Detach);
        roundtrip(Repr::Closed);
        roundtrip(Repr::Error {
            code: ErrorCode::BadMac,
            text: "no".into(),
        });
        roundtrip(Repr::StatsReply(StatsRepr {
            uptime_ns: 5,
            first_frame_ns: Some(4),
            instance: 1,
            ports: vec![PortStatsRepr {
                port: 1,
                app: true,
                name: "a".into(),
                mac: [2, 0, 0, 0, 0, 2],
                counters: PortCounters {
                    rx_packets: 1,
                    not_held: 14,
                    kicks_to_app: 15,
                    kicks_from_app: 16,
                    group_source: 17,
                    link_local: 18,
                    rate_limited: 19,
                    not_learned: 20,
                    ..Default::default()
                },
            }],
            rejections: vec![(ErrorCode::Malformed, 3)],
        }));
    }

    fn code_of(b: &[u8]) -> ErrorCode {
        match Repr::from_bytes(b) {
            Err(CtlError::Refused { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = Repr::Detach.to_bytes();
        assert_eq!(code_of(&good[..5]), ErrorCode::Malformed);
        let mut b = good.clone();
        b[0] ^= 1;
        assert_eq!(code_of(&b), ErrorCode::Malformed);
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(code_of(&b), ErrorCode::UnsupportedVersion);
        let mut b = good.clone();
        b[6] = 200;
        assert_eq!(code_of(&b), ErrorCode::Malformed);
        let mut b = good.clone();
        b.push(0);
        assert_eq!(code_of(&b), ErrorCode::Malformed);
    }

    #[test]
    fn counts_that_lie_are_refused() {
        let mut g = Repr::Grant(GrantRepr {
            rx_size: 2,
            tx_size: 2,
            fill_size: 2,
            comp_size: 2,
            buf_size: 2048,
            buf_count: 2,
            domid: 0,
            grant_fds: 2,
            notify_fds: 2,
            notify_port: 0,
            refs: vec![0],
        })
        .to_bytes();
        // nrefs says 2, one is there.
        g[HEADER_LEN + 32] = 2;
        assert_eq!(code_of(&g), ErrorCode::Malformed);
        let mut e = Repr::Error {
            code: ErrorCode::Internal,
            text: "abc".into(),
        }
        .to_bytes();
        e[HEADER_LEN + 2] = 0xff;
        assert_eq!(code_of(&e), ErrorCode::Malformed);
        let mut s = Repr::StatsReply(StatsRepr::default()).to_bytes();
        s[HEADER_LEN + 24..HEADER_LEN + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(code_of(&s), ErrorCode::Malformed);
    }

    #[test]
    fn hostile_hello_fields_are_refused() {
        let good = Repr::Hello {
            name: Name::new("a").unwrap(),
            mac: [2, 0, 0, 0, 0, 1],
        }
        .to_bytes();
        let mut b = good.clone();
        b[HEADER_LEN + 6] = 40; // name_len over 32
        assert_eq!(code_of(&b), ErrorCode::BadName);
        let mut b = good.clone();
        b[HEADER_LEN + 8] = b'/';
        assert_eq!(code_of(&b), ErrorCode::BadName);
        let mut b = good.clone();
        b[HEADER_LEN + 10] = b'x'; // byte after the name
        assert_eq!(code_of(&b), ErrorCode::BadName);
        let mut b = good.clone();
        b[HEADER_LEN] = 1; // multicast
        assert_eq!(code_of(&b), ErrorCode::BadMac);
        let mut b = good.clone();
        b[HEADER_LEN + 7] = 1; // reserved
        assert_eq!(code_of(&b), ErrorCode::Malformed);
    }

    #[test]
    fn a_stats_reply_port_name_that_is_not_utf8_is_refused() {
        let mut b = Repr::StatsReply(StatsRepr {
            ports: vec![PortStatsRepr {
                port: 1,
                app: false,
                name: "a".repeat(NAME_MAX),
                mac: [2, 0, 0, 0, 0, 2],
                counters: PortCounters::default(),
            }],
            ..Default::default()
        })
        .to_bytes();
        // Every byte of the name 0xff: read as replacement characters it would be three
        // times as long, re-emitted cut at 32 bytes, and parse to another name.
        let at = HEADER_LEN + size_of::<StatsHead>() + 4;
        b[at..at + NAME_MAX].fill(0xff);
        assert_eq!(code_of(&b), ErrorCode::Malformed);
    }

    #[test]
    fn a_long_port_name_is_cut_on_a_character_boundary() {
        let r = Repr::StatsReply(StatsRepr {
            ports: vec![PortStatsRepr {
                port: 1,
                app: true,
                name: format!("a{}", "\u{e9}".repeat(20)), // 41 bytes
                mac: [2, 0, 0, 0, 0, 2],
                counters: PortCounters::default(),
            }],
            ..Default::default()
        });
        let Ok(Repr::StatsReply(s)) = Repr::from_bytes(&r.to_bytes()) else {
            panic!("the reply parses");
        };
        // 32 bytes would end inside the 16th 'é'.
        assert_eq!(s.ports[0].name, format!("a{}", "\u{e9}".repeat(15)));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_refuse(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = Repr::from_bytes(&b);
        }

        #[test]
        fn any_body_after_a_good_header_parses_or_refuses(
            kind in 1u16..10, body in proptest::collection::vec(proptest::num::u8::ANY, 0..400)
        ) {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&VERSION.to_le_bytes());
            b.extend_from_slice(&kind.to_le_bytes());
            b.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
            b.extend_from_slice(&body);
            if let Ok(r) = Repr::from_bytes(&b) {
                // Whatever parses re-emits to something that parses to the same value.
                proptest::prop_assert_eq!(Repr::from_bytes(&r.to_bytes()).ok(), Some(r));
            }
        }
    }
}

//! Poll-mode drivers: one burst interface ([`Port`]) and the ports that implement it.
//!
//! A port moves buffer handles, never bytes it does not have to: `rx_burst` hands received
//! frames to the caller, `tx_burst` takes frames to send, `tx_done` gives back the buffers
//! whose transmission finished, so the caller can return them to their owners. This crate is
//! one of the two places allowed `unsafe` (MMIO, DMA, kernel ring mappings); it must never
//! block in a burst call and never allocate on the burst path.

pub mod af_packet;
pub mod af_xdp;
pub mod fault;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub mod intel;
pub mod linux;
pub mod sim;

use grant_pool::{BufHandle, Pool, PoolSet};

/// A frame in flight: the buffer it lives in and its length in bytes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    zerocopy::FromBytes,
    zerocopy::IntoBytes,
    zerocopy::Immutable,
    zerocopy::KnownLayout,
)]
#[repr(C)]
pub struct Frame {
    /// The buffer.
    pub buf: BufHandle,
    /// Bytes of frame at the start of the buffer.
    pub len: u16,
    /// Reserved for the port (e.g. an offload flag); switches pass it through.
    pub meta: u16,
}
const _: () = assert!(core::mem::size_of::<Frame>() == 8);

impl Frame {
    /// `frames` as pairs of words: `[0]` the buffer handle's raw value, `[1]` the length in
    /// the low 16 bits and `meta` in the high 16 (on a little-endian machine; `None` on
    /// others). Loops over a burst that read both halves vectorise over this view where
    /// they would not over the struct.
    #[inline]
    pub fn words(frames: &[Frame]) -> Option<&[[u32; 2]]> {
        use zerocopy::{FromBytes, IntoBytes};
        if cfg!(target_endian = "little") {
            <[[u32; 2]]>::ref_from_bytes(frames.as_bytes()).ok()
        } else {
            None
        }
    }

    /// `frames` as pairs of words to write, as [`Frame::words`] reads them.
    #[inline]
    pub fn words_mut(frames: &mut [Frame]) -> Option<&mut [[u32; 2]]> {
        use zerocopy::{FromBytes, IntoBytes};
        if cfg!(target_endian = "little") {
            <[[u32; 2]]>::mut_from_bytes(frames.as_mut_bytes()).ok()
        } else {
            None
        }
    }

    /// A frame of `len` bytes in `buf`.
    #[inline]
    pub const fn new(buf: BufHandle, len: u16) -> Self {
        Self { buf, len, meta: 0 }
    }
}

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// The first 12 bytes of an Ethernet header: the destination MAC, then the source MAC.
pub type MacHeader = [u8; 12];

/// What a switch enforces on every frame of a port whose frames come from an untrusted party
/// (an app): see [`Port::admission`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The one source MAC the port's frames may carry (unicast): the switch pins it to the
    /// port in its FDB and learns nothing else from the port's frames.
    pub mac: Mac,
    /// Most frames per second the port may send; 0 for no limit.
    pub frames_per_sec: u64,
    /// Most bytes per second the port may send; 0 for no limit.
    pub bytes_per_sec: u64,
    /// Whether the operator gave the port this MAC (in its configuration). Only then may it
    /// take the MAC over from a station the switch learned on another port; a MAC the port
    /// chose itself is refused while such a station holds it.
    pub fixed: bool,
}

/// Link state of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// The link is down.
    Down,
    /// The link is up at this speed in Mbit/s (0 when unknown or not applicable).
    Up {
        /// Speed in Mbit/s.
        mbps: u32,
    },
}

/// Counters every port keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames the port dropped on receive (no buffer, ring full, hardware drop).
    pub rx_dropped: u64,
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames refused on transmit (ring full).
    pub tx_dropped: u64,
    /// Malformed or rejected input (bad descriptors, bad lengths, hostile peers).
    pub errors: u64,
}

/// What a port takes whole on transmit ([`Port::tx_offloads`]), beyond frames of one segment
/// with complete checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxOffloads {
    /// The longest frame carrying a segment size (`offload::FrameMeta::gso_size`) the port
    /// takes whole; a longer one is cut into segments by the switch.
    pub max_gso_frame: u32,
    /// Whether the port takes frames whose TCP/UDP checksum is partial.
    pub partial_csum: bool,
}

impl TxOffloads {
    /// Nothing beyond plain frames.
    pub const NONE: Self = Self {
        max_gso_frame: 0,
        partial_csum: false,
    };
    /// Every frame as it is: large ones up to 64 KiB and partial checksums.
    pub const ALL: Self = Self {
        max_gso_frame: u16::MAX as u32,
        partial_csum: true,
    };

    /// Whether a frame of `len` bytes with metadata `meta` goes to the port as it is.
    #[inline]
    pub fn takes(&self, len: u16, meta: u16) -> bool {
        let m = offload::FrameMeta::from_bits(meta);
        (m.gso_size() == 0 || u32::from(len) <= self.max_gso_frame)
            && (!m.is_partial() || self.partial_csum)
    }
}

/// The burst interface every port implements.
///
/// Buffer ownership: a handle returned by `rx_burst` or `alloc` belongs to the caller; a
/// handle accepted by `tx_burst` belongs to the port until `tx_done` hands it back; the caller
/// returns every buffer to the port that owns its pool with `reclaim`.
pub trait Port: Send {
    /// A short name for logs and counters.
    fn name(&self) -> &str;

    /// The port's MAC address.
    fn mac(&self) -> Mac;

    /// Link state.
    fn link(&self) -> LinkState;

    /// Counters so far.
    fn stats(&self) -> PortStats;

    /// Pools this port can transmit from without a copy (it can read or DMA from them).
    fn tx_pools(&self) -> PoolSet;

    /// Pools this port owns: buffers of these pools are returned to it with `reclaim`.
    fn own_pools(&self) -> PoolSet;

    /// The pools in `own_pools` with their memory as this process maps it, so that a switch
    /// can read frame headers and copy frames between pools. A clone of a `Pool` keeps its
    /// memory mapped, whether or not the port still lives. Called when the port is added, not
    /// on the burst path. The default (no pools) suits a port whose buffers nobody else reads.
    fn pools(&self) -> &[Pool] {
        &[]
    }

    /// What the port takes whole on transmit beyond plain frames (see [`TxOffloads`]);
    /// the switch cuts or completes the rest in the copy it makes for the port. The default
    /// takes neither large frames nor partial checksums.
    fn tx_offloads(&self) -> TxOffloads {
        TxOffloads::NONE
    }

    /// Asks the port to transmit from `pool` (another party's pool, mapped into this process
    /// for as long as the grant lasts) without a copy. A port that can (the `af_packet` port:
    /// it copies each frame into its kernel ring as it takes it) adds it to `tx_pools` and
    /// returns `true`; the default cannot. A port that accepts must implement
    /// [`Port::tx_burst_with_macs`]: the other party can rewrite its buffers at any time, so
    /// the switch hands such frames over with the header it decided on; and it must take
    /// every frame as it is ([`TxOffloads::ALL`]), since frames that go by handle are not
    /// copied, and so not cut or completed, on the way. Not on the burst path.
    fn grant_tx_pool(&mut self, _pool: &Pool) -> bool {
        false
    }

    /// `Some` when the port's frames come from an untrusted party (an app's port): the
    /// switch then takes one copy of each frame's header into its own memory and makes every
    /// decision on that copy, refuses frames whose source is not [`Admission::mac`], pins
    /// that MAC to the port, and limits the port's rate. Read once, when the port is added;
    /// the default, `None`, is a port whose frames the switch learns from (a NIC).
    fn admission(&self) -> Option<Admission> {
        None
    }

    /// Withdraws a grant made with `grant_tx_pool`. Returns `false` while frames of that
    /// pool are still in flight (call `tx_done` and retry): the pool must stay mapped until
    /// this returns `true`.
    fn revoke_tx_pool(&mut self, _pool: grant_pool::PoolId) -> bool {
        true
    }

    /// Receives up to `out.len()` frames into `out`; returns how many.
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize;

    /// Queues frames for transmit, each from a pool in `tx_pools`; returns how many of the
    /// leading frames it took. Frames not taken stay the caller's.
    fn tx_burst(&mut self, frames: &[Frame]) -> usize;

    /// [`Port::tx_burst`] for frames whose buffers another party can rewrite while the port
    /// reads them: frame `i` leaves with `macs[i]` as its first 12 bytes (the destination
    /// and source MAC the switch checked, from the switch's own memory), whatever its buffer
    /// holds there by then, and the rest of it from its buffer. The switch calls it for
    /// frames of an untrusted port ([`Port::admission`]) that it hands over by handle, so a
    /// port that accepts [`Port::grant_tx_pool`] must implement it; `macs` is at least as
    /// long as `frames`. Returns how many of the leading frames it took; the default takes
    /// none.
    fn tx_burst_with_macs(&mut self, _frames: &[Frame], _macs: &[MacHeader]) -> usize {
        0
    }

    /// Buffers whose transmission finished, for the caller to return to their owners.
    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize;

    /// Empty buffers from a pool in `tx_pools`, for a caller that must copy a frame to send.
    fn alloc(&mut self, out: &mut [BufHandle]) -> usize;

    /// [`Port::alloc`] for copies of frames of `len` bytes: a port with a class of larger
    /// buffers for long frames (a large transmit pool) gives those. The default is `alloc`.
    /// A wrapper port must pass it on.
    fn alloc_len(&mut self, out: &mut [BufHandle], len: usize) -> usize {
        let _ = len;
        self.alloc(out)
    }

    /// Takes back buffers of pools this port owns.
    fn reclaim(&mut self, bufs: &[BufHandle]);

    /// Takes back buffers `alloc` handed out that carry no frame (a copy that was not made).
    /// The default is `reclaim`; a port whose `reclaim` means "done with this frame" (an
    /// app's, which returns its buffers on the completion ring) keeps them for its next
    /// `alloc` instead.
    fn unalloc(&mut self, bufs: &[BufHandle]) {
        self.reclaim(bufs)
    }

    /// Whether the port has work that will not show up as polled input (e.g. it is waiting
    /// for a notifier). Used by adaptive idle; a pure poller returns `false`.
    fn wants_poll(&self) -> bool {
        false
    }

    /// Gets the port ready for its caller to sleep until it has input: arms whatever wakeup
    /// the producer of its input needs (a need-wakeup flag, a refilled fill ring) and
    /// consumes stale wakeups. Returns `true` when input is waiting already, so the caller
    /// must poll instead of sleeping. Not on the burst path; a pure poller returns `false`.
    fn prepare_wait(&mut self) -> bool {
        false
    }

    /// The descriptor that polls readable (`POLLIN`) once the port has input, after
    /// [`Port::prepare_wait`]; `None` when the port cannot be waited on (a pure poller), so
    /// a caller that sleeps must do so with a short timeout.
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

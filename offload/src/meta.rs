//! [`FrameMeta`]: what a frame carries beside its bytes (the checksum's state and, for a
//! frame larger than one segment, the segment size), in the 16 bits every ring descriptor
//! and every switch `Frame` already has.
//!
//! The checksum's start and offset are not carried: they are where the frame's own headers
//! say its L4 header and checksum field are ([`crate::csum::L4`]), which every party that
//! completes a checksum or cuts a frame parses and bounds-checks anyway. Carrying them too
//! would give a reader two answers to reconcile (virtio's receiver checks
//! `csum_start` against the headers it parses for the same reason). The GSO type is the
//! frame's protocol; today the one segmented in software is TCP over IPv4.

/// Bits of [`FrameMeta`] holding the segment size.
const GSO_MASK: u16 = 0x3fff;
/// The frame's TCP/UDP checksum field holds the pseudo-header sum; the rest is to be summed.
const PARTIAL: u16 = 0x4000;
/// The frame's checksums were verified (by a NIC, the kernel, or the switch).
const VALID: u16 = 0x8000;

/// The largest segment size a [`FrameMeta`] can carry, and the largest accepted: an MSS for
/// an IP MTU of up to 9000 bytes fits well below it.
pub const MAX_GSO_SIZE: u16 = GSO_MASK;
/// The smallest segment size accepted: the floor Linux puts under the segments it sends
/// (`TCP_MIN_SND_MSS`), whatever MSS the peer announced. A frame of tinier segments would
/// have whoever cuts it make well over a thousand frames, on the wire and on the cutter's
/// core, for one frame sent.
pub const MIN_GSO_SIZE: u16 = 48;

/// A frame's offload state, as 16 bits: a segment size (0: the frame is one segment), and
/// whether its L4 checksum is partial or verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct FrameMeta(u16);

/// Why a [`FrameMeta`] an app wrote is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaError {
    /// Partial and verified at once.
    Contradictory,
    /// A segment size without a partial checksum, below [`MIN_GSO_SIZE`], or not shorter
    /// than the frame.
    GsoSize,
}

impl FrameMeta {
    /// Nothing: a complete frame of one segment whose checksum nobody has verified.
    pub const NONE: Self = Self(0);

    /// The metadata in raw bits (unchecked: see [`FrameMeta::check`]).
    #[inline]
    pub const fn from_bits(b: u16) -> Self {
        Self(b)
    }

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// A frame whose checksum is partial, cut into segments of `gso_size` payload bytes
    /// (0: not to be cut).
    #[inline]
    pub const fn partial(gso_size: u16) -> Self {
        Self(PARTIAL | (gso_size & GSO_MASK))
    }

    /// A frame whose checksums are known good.
    pub const VERIFIED: Self = Self(VALID);

    /// Payload bytes per segment, or 0 for a frame of one segment.
    #[inline]
    pub const fn gso_size(self) -> u16 {
        self.0 & GSO_MASK
    }

    /// Whether the L4 checksum is partial (pseudo-header sum only).
    #[inline]
    pub const fn is_partial(self) -> bool {
        self.0 & PARTIAL != 0
    }

    /// Whether the checksums were verified.
    #[inline]
    pub const fn is_verified(self) -> bool {
        self.0 & VALID != 0
    }

    /// Whether a receiver may take the frame without verifying its checksum: verified, or
    /// partial (a frame made on this host, which no wire has touched).
    #[inline]
    pub const fn needs_no_verify(self) -> bool {
        self.0 & (VALID | PARTIAL) != 0
    }

    /// The same frame, now with its checksum complete (and so verified).
    #[inline]
    pub const fn completed(self) -> Self {
        Self((self.0 & GSO_MASK) | VALID)
    }

    /// The same checksum state for a frame of segments of `gso_size` payload bytes (0: one
    /// segment).
    #[inline]
    pub const fn with_gso(self, gso_size: u16) -> Self {
        Self((self.0 & !GSO_MASK) | (gso_size & GSO_MASK))
    }

    /// The metadata of each segment cut from this frame: complete checksums, one segment.
    pub const SEGMENT: Self = Self(VALID);

    /// Checks metadata an untrusted party wrote for a frame of `len` bytes.
    pub fn check(self, len: usize) -> Result<(), MetaError> {
        if self.is_partial() && self.is_verified() {
            return Err(MetaError::Contradictory);
        }
        let g = self.gso_size() as usize;
        if g != 0 && (!self.is_partial() || g < MIN_GSO_SIZE as usize || g >= len) {
            return Err(MetaError::GsoSize);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_makes_no_sense() {
        let m = FrameMeta::partial(1448);
        assert_eq!(FrameMeta::from_bits(m.bits()), m);
        assert_eq!(
            (m.gso_size(), m.is_partial(), m.is_verified()),
            (1448, true, false)
        );
        assert_eq!(m.check(65_000), Ok(()));
        assert_eq!(
            m.check(1448),
            Err(MetaError::GsoSize),
            "not longer than one segment"
        );
        assert_eq!(
            FrameMeta::from_bits(1448).check(65_000),
            Err(MetaError::GsoSize)
        );
        for tiny in [1, MIN_GSO_SIZE - 1] {
            assert_eq!(
                FrameMeta::partial(tiny).check(65_000),
                Err(MetaError::GsoSize),
                "segments of {tiny} bytes"
            );
        }
        assert_eq!(FrameMeta::partial(MIN_GSO_SIZE).check(65_000), Ok(()));
        assert_eq!(
            FrameMeta::from_bits(0xc000).check(60),
            Err(MetaError::Contradictory)
        );
        assert_eq!(FrameMeta::NONE.check(60), Ok(()));
        assert!(m.needs_no_verify() && FrameMeta::VERIFIED.needs_no_verify());
        assert!(!FrameMeta::NONE.needs_no_verify());
        assert_eq!(m.completed(), FrameMeta::from_bits(0x8000 | 1448));
    }
}

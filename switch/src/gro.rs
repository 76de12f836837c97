//! Receive coalescing (GRO) inside the copy the switch makes for a port that takes large
//! frames (an app's): consecutive TCP/IPv4 segments of one flow in one burst, in order, become
//! one frame of up to the destination's largest, so the app's stack handles (and
//! acknowledges) one segment where the wire carried dozens. Nothing waits: a merge ends with
//! the burst, at the first frame that does not continue it, or at a PSH.
//!
//! A segment continues a merge when it is the same flow with the next sequence number and
//! headers that say the same (IPv4 without options, not a fragment, same TTL and DF; TCP
//! with the same acknowledgement, window, flags ACK or ACK|PSH, and byte-identical options),
//! the rules Linux's GRO applies. Every merged segment's checksums are verified (unless it
//! came marked verified or partial) before its payload joins, so the merged frame is handed
//! on marked verified, its IPv4 header rewritten (length, checksum) and its TCP checksum left
//! as the first segment's: the receiver does not sum it again.

use offload::FrameMeta;
use offload::csum::{fold, sum16, verify};

use grant_pool::BufHandle;

/// Ethernet, IPv4 without options, TCP without options.
const MIN_HEAD: usize = 14 + 20 + 20;
/// Ethernet, IPv4 without options, TCP with the most options: the headers of any frame
/// that can be merged.
pub(crate) const MAX_HEAD: usize = 14 + 20 + 60;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// A frame being grown in its destination buffer.
#[derive(Debug)]
pub(crate) struct Merge {
    /// Where the merged frame sits in the burst's output.
    pub(crate) slot: usize,
    /// Its buffer.
    pub(crate) buf: BufHandle,
    /// Its headers, as the first segment had them.
    head: [u8; MAX_HEAD],
    /// Bytes of headers (Ethernet, IPv4, TCP).
    hlen: usize,
    /// Bytes of frame so far.
    pub(crate) len: usize,
    /// The sequence number the next segment must start at.
    next_seq: u32,
    /// Segments merged.
    segs: u32,
    /// The largest frame the destination takes.
    cap: usize,
    /// A segment with PSH ended it.
    closed: bool,
}

/// `(header length, payload length, flags)` of a segment that can be merged, from its
/// headers `head` (its first bytes, at least its headers) and its length `len`: TCP over
/// IPv4 without IP options, not a fragment, flags ACK or ACK|PSH, some payload, lengths that
/// agree with the frame.
fn shape(head: &[u8], len: usize) -> Option<(usize, usize, u8)> {
    let h = head.get(..MIN_HEAD)?;
    let tot = u16::from_be_bytes([h[16], h[17]]) as usize;
    if h[12..14] != [0x08, 0x00]
        || h[14] != 0x45
        || h[23] != 6
        || u16::from_be_bytes([h[20], h[21]]) & 0x3fff != 0
        || 14 + tot != len
    {
        return None;
    }
    let hlen = 34 + (h[46] >> 4) as usize * 4;
    let flags = h[47];
    if hlen < MIN_HEAD || hlen > head.len() || (flags != ACK && flags != ACK | PSH) {
        return None;
    }
    let payload = len - hlen;
    (payload > 0).then_some((hlen, payload, flags))
}

/// Whether a frame of `len` bytes whose headers are `head` (its first [`MAX_HEAD`] bytes, or
/// all of it) could start or continue a merge; only such a frame needs its checksum known
/// before it is copied.
pub(crate) fn mergeable(head: &[u8], len: usize, meta: FrameMeta) -> bool {
    meta.gso_size() == 0 && shape(head, len).is_some()
}

/// Whether the checksums of the whole frame `seg` are known good: marked so, or summed here.
pub(crate) fn checked(seg: &[u8], meta: FrameMeta) -> bool {
    meta.needs_no_verify() || verify(seg) == Some(true)
}

impl Merge {
    /// Starts a merge with a frame of `len` bytes whose headers are `head` and whose
    /// checksums are `good` (now in `buf`, entry `slot` of the output), for a destination
    /// taking frames of up to `cap` bytes: `None` when it cannot start one (not a mergeable
    /// segment, a PSH, a checksum not known to be right).
    pub(crate) fn start(
        head: &[u8],
        len: usize,
        good: bool,
        slot: usize,
        buf: BufHandle,
        cap: usize,
    ) -> Option<Self> {
        let (hlen, payload, flags) = shape(head, len)?;
        if flags & PSH != 0 || !good {
            return None;
        }
        let mut h = [0u8; MAX_HEAD];
        h[..hlen].copy_from_slice(&head[..hlen]);
        let seq = u32::from_be_bytes([head[38], head[39], head[40], head[41]]);
        Some(Self {
            slot,
            buf,
            head: h,
            hlen,
            len,
            next_seq: seq.wrapping_add(payload as u32),
            segs: 1,
            cap,
            closed: false,
        })
    }

    /// Whether a frame of `len` bytes with headers `head` and checksums `good` continues the
    /// merge: if so, the range of its bytes to append (its payload), and the merge has
    /// counted it.
    pub(crate) fn take(
        &mut self,
        head: &[u8],
        len: usize,
        good: bool,
    ) -> Option<core::ops::Range<usize>> {
        if self.closed || !good {
            return None;
        }
        let (hlen, payload, flags) = shape(head, len)?;
        let (seg, h) = (head, &self.head);
        let same = hlen == self.hlen
            && seg[..12] == h[..12]
            // TTL, protocol; addresses.
            && seg[22..24] == h[22..24]
            && seg[26..34] == h[26..34]
            // DF as the first segment had it.
            && seg[20] & 0x40 == h[20] & 0x40
            // Ports; the sequence number is checked below; ack, data offset.
            && seg[34..38] == h[34..38]
            && seg[42..47] == h[42..47]
            // Window; options.
            && seg[48..50] == h[48..50]
            && seg[54..hlen] == h[54..hlen];
        let seq = u32::from_be_bytes([seg[38], seg[39], seg[40], seg[41]]);
        if !same || seq != self.next_seq || self.len + payload > self.cap {
            return None;
        }
        self.len += payload;
        self.next_seq = seq.wrapping_add(payload as u32);
        self.segs += 1;
        if flags & PSH != 0 {
            self.head[47] |= PSH;
            self.closed = true;
        }
        Some(hlen..len)
    }

    /// The merged frame's headers to write over its first bytes, and its metadata; `None`
    /// when it is still the one segment it started as (left as it was copied).
    pub(crate) fn finish(&mut self) -> Option<(&[u8], FrameMeta)> {
        if self.segs < 2 {
            return None;
        }
        let tot = (self.len - 14) as u16;
        self.head[16..18].copy_from_slice(&tot.to_be_bytes());
        self.head[24..26].copy_from_slice(&[0, 0]);
        let c = fold(sum16(0, &self.head[14..34]));
        self.head[24..26].copy_from_slice(&c.to_be_bytes());
        Some((&self.head[..self.hlen], FrameMeta::VERIFIED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 segment of flow `port` with `payload` bytes (a pattern starting at `seq`)
    /// and `flags`, checksums complete.
    fn seg(port: u16, seq: u32, payload: usize, flags: u8) -> Vec<u8> {
        let data: Vec<u8> = (0..payload).map(|i| (seq as usize + i) as u8).collect();
        offload::frame::Ipv4Frame {
            sport: port,
            seq,
            ack: 9,
            flags,
            window: 0x1000,
            options: offload::frame::TIMESTAMPS.to_vec(),
            ..Default::default()
        }
        .build(&data)
    }

    /// Merges `segs` as the switch does; returns the frames that come out.
    fn run(segs: &[Vec<u8>], cap: usize) -> Vec<(Vec<u8>, FrameMeta)> {
        let mut out: Vec<(Vec<u8>, FrameMeta)> = Vec::new();
        let mut m: Option<Merge> = None;
        let buf = BufHandle::from_raw(0);
        let close = |m: &mut Option<Merge>, out: &mut Vec<(Vec<u8>, FrameMeta)>| {
            if let Some(mut m) = m.take() {
                let slot = m.slot;
                if let Some((h, meta)) = m.finish() {
                    out[slot].0[..h.len()].copy_from_slice(h);
                    out[slot].1 = meta;
                }
            }
        };
        for s in segs {
            let head = &s[..s.len().min(MAX_HEAD)];
            let good = checked(s, FrameMeta::NONE);
            if let Some(r) = m.as_mut().and_then(|m| m.take(head, s.len(), good)) {
                let slot = m.as_ref().expect("merging").slot;
                out[slot].0.extend_from_slice(&s[r]);
                continue;
            }
            close(&mut m, &mut out);
            out.push((s.clone(), FrameMeta::NONE));
            m = Merge::start(head, s.len(), good, out.len() - 1, buf, cap);
        }
        close(&mut m, &mut out);
        out
    }

    fn payloads(frames: &[(Vec<u8>, FrameMeta)]) -> Vec<u8> {
        frames.iter().flat_map(|(f, _)| f[66..].to_vec()).collect()
    }

    #[test]
    fn one_flow_in_order_becomes_one_frame_with_the_same_bytes() {
        let segs: Vec<_> = (0..10u32)
            .map(|k| {
                seg(
                    1000,
                    5000 + k * 1448,
                    1448,
                    if k == 9 { ACK | PSH } else { ACK },
                )
            })
            .collect();
        let out = run(&segs, 65535);
        assert_eq!(out.len(), 1);
        let (f, meta) = &out[0];
        assert_eq!(*meta, FrameMeta::VERIFIED);
        assert_eq!(f.len(), 66 + 10 * 1448);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
        assert_eq!(fold(sum16(0, &f[14..34])), 0, "IPv4 checksum rewritten");
        assert_eq!(f[47], ACK | PSH, "the last segment's PSH");
        assert_eq!(
            payloads(&out),
            payloads(
                &segs
                    .iter()
                    .map(|s| (s.clone(), FrameMeta::NONE))
                    .collect::<Vec<_>>()
            )
        );
    }

    #[test]
    fn anything_else_ends_the_merge_and_passes_unchanged() {
        let mut bad = seg(1000, 1000 + 2 * 100, 100, ACK);
        bad[70] ^= 0xff; // payload corrupted: its checksum is wrong
        let segs = vec![
            seg(1000, 1000, 100, ACK),
            seg(1000, 1100, 100, ACK),
            bad.clone(),                      // bad checksum: not merged
            seg(2000, 1300, 100, ACK),        // another flow
            seg(2000, 1500, 100, ACK),        // a gap in the sequence
            seg(2000, 1600, 100, ACK | 0x01), // FIN
            seg(2000, 1700, 100, ACK),
            seg(2000, 1800, 100, ACK), // merged with the previous one
        ];
        let out = run(&segs, 65535);
        assert_eq!(out.len(), 6);
        assert_eq!(out[0].0.len(), 66 + 200);
        assert_eq!(out[1].0, bad);
        for (o, s) in out[2..5].iter().zip(&segs[3..6]) {
            assert_eq!(o.0, *s, "passed unchanged");
            assert_eq!(o.1, FrameMeta::NONE);
        }
        assert_eq!(out[5].0.len(), 66 + 200, "the last two, merged");
    }

    proptest::proptest! {
        /// Cutting a TCP/IPv4 frame into segments (as the switch does for a port that takes
        /// only MTU-sized frames) and coalescing them again (as it does for an app) gives
        /// the frame back: the same headers (but for the TCP checksum, left as the first
        /// segment's and marked verified) and the same payload.
        #[test]
        fn segmenting_then_coalescing_is_the_identity(
            payload in 1usize..60_000,
            mss in 200usize..9000,
            seq in proptest::prelude::any::<u32>(),
            psh in proptest::prelude::any::<bool>(),
        ) {
            let flags = if psh { ACK | PSH } else { ACK };
            let f = seg(4242, seq, payload, flags);
            let t = offload::gso::TcpV4::parse_mss(&f[..f.len().min(134)], f.len(), mss)
                .expect("a TCP/IPv4 frame");
            let h = t.header_len();
            let segs: Vec<Vec<u8>> = (0..t.segments())
                .map(|k| {
                    let mut s = f[..h].to_vec();
                    let at = h + k * mss;
                    s.extend_from_slice(&f[at..at + t.segment_payload(k)]);
                    assert!(t.finish(&mut s, k));
                    s
                })
                .collect();
            let out = run(&segs, u16::MAX as usize);
            proptest::prop_assert_eq!(out.len(), 1);
            let (m, meta) = &out[0];
            proptest::prop_assert_eq!(m.len(), f.len());
            proptest::prop_assert_eq!(&m[..50], &f[..50]);
            proptest::prop_assert_eq!(&m[52..], &f[52..]);
            proptest::prop_assert_eq!(
                *meta,
                if segs.len() > 1 { FrameMeta::VERIFIED } else { FrameMeta::NONE }
            );
        }
    }

    #[test]
    fn a_merge_stops_at_the_destinations_largest_frame() {
        let segs: Vec<_> = (0..10u32).map(|k| seg(7, k * 1000, 1000, ACK)).collect();
        let out = run(&segs, 66 + 4000);
        assert_eq!(
            out.iter().map(|(f, _)| f.len() - 66).collect::<Vec<_>>(),
            vec![4000, 4000, 2000]
        );
        assert_eq!(
            payloads(&out),
            payloads(
                &segs
                    .iter()
                    .map(|s| (s.clone(), FrameMeta::NONE))
                    .collect::<Vec<_>>()
            )
        );
    }
}

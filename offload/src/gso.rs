//! Segmentation of TCP/IPv4 super-frames in software, as the kernel's GSO does.
//!
//! A Linux host hands a packet socket frames larger than the MTU when segmentation is left
//! to later: a veth peer with TSO/GSO on sends 64 KiB TCP frames, and GRO merges received
//! segments on a real NIC. A port whose buffers hold one MTU-sized frame cuts such a frame
//! into segments: each gets the Ethernet, IPv4 and TCP headers of the original with the
//! IPv4 total length, identification and checksum, the TCP sequence number, the flags (FIN
//! and PSH on the last segment only, CWR on the first only) and the TCP checksum rewritten.
//! The checksum is computed over the whole segment, so a super-frame whose checksum was left
//! partial by the sender comes out complete.
//!
//! Everything here works on byte slices and checks every offset; it never panics on a
//! malformed frame, it refuses it (`None`).

use crate::ETH;
use crate::csum::{fold, sum16};

/// Where the headers of a TCP/IPv4 frame are and what the segments start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpV4 {
    /// IPv4 header length.
    ihl: usize,
    /// TCP header length.
    thl: usize,
    /// TCP payload bytes in the whole frame.
    pub payload: usize,
    /// Payload bytes per segment.
    pub mss: usize,
    seq: u32,
    id: u16,
    flags: u8,
}

impl TcpV4 {
    /// Parses an Ethernet frame carrying TCP over IPv4 (no VLAN tag, no IP fragment) whose
    /// headers are in `head` (at least the first `ETH + 60 + 60` bytes of the frame, or the
    /// whole frame when shorter) and whose length is `len`; each segment is at most `max_l3`
    /// bytes of IP packet. `None` for anything else.
    pub fn parse(head: &[u8], len: usize, max_l3: usize) -> Option<Self> {
        if head.get(12..14)? != [0x08, 0x00] {
            return None;
        }
        let ip = head.get(ETH..ETH + 20)?;
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        // Version 4, TCP, not a fragment (MF clear, offset zero). The total length field of
        // a GSO frame may say 0 or the real length; the frame length is what counts.
        if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 || frag & 0x3fff != 0 {
            return None;
        }
        if tot != 0 && ETH + tot != len {
            return None;
        }
        let tcp = head.get(ETH + ihl..ETH + ihl + 20)?;
        let thl = (tcp[12] >> 4) as usize * 4;
        if thl < 20 || head.len() < ETH + ihl + thl {
            return None;
        }
        let hdr = ETH + ihl + thl;
        let payload = len.checked_sub(hdr)?;
        let mss = max_l3.checked_sub(ihl + thl)?;
        if mss == 0 || payload == 0 {
            return None;
        }
        Some(Self {
            ihl,
            thl,
            payload,
            mss,
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            id: u16::from_be_bytes([ip[4], ip[5]]),
            flags: tcp[13],
        })
    }

    /// [`TcpV4::parse`] for segments of `mss` payload bytes each (the segment size a frame's
    /// metadata gives), whatever the IP packet length this makes.
    pub fn parse_mss(head: &[u8], len: usize, mss: usize) -> Option<Self> {
        let mut t = Self::parse(head, len, usize::MAX / 2)?;
        if mss == 0 {
            return None;
        }
        t.mss = mss;
        Some(t)
    }

    /// Bytes of headers (Ethernet, IPv4, TCP) at the start of the frame and of each segment.
    pub fn header_len(&self) -> usize {
        ETH + self.ihl + self.thl
    }

    /// Number of segments the frame becomes.
    pub fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss)
    }

    /// Payload bytes of segment `k`, which starts `k * mss` bytes into the payload.
    pub fn segment_payload(&self, k: usize) -> usize {
        self.payload.saturating_sub(k * self.mss).min(self.mss)
    }

    /// Rewrites the headers in `seg` (the original frame's headers followed by segment
    /// `k`'s payload, `header_len() + segment_payload(k)` bytes) for segment `k`, with both
    /// checksums computed. Returns `false` (and leaves `seg` partly written) when `seg` is
    /// not that length.
    pub fn finish(&self, seg: &mut [u8], k: usize) -> bool {
        let n = self.segment_payload(k);
        let last = k + 1 == self.segments();
        if n == 0 || seg.len() != self.header_len() + n {
            return false;
        }
        let ip = ETH;
        let tot = (self.ihl + self.thl + n) as u16;
        seg[ip + 2..ip + 4].copy_from_slice(&tot.to_be_bytes());
        let id = self.id.wrapping_add(k as u16);
        seg[ip + 4..ip + 6].copy_from_slice(&id.to_be_bytes());
        seg[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        let c = fold(sum16(0, &seg[ip..ip + self.ihl]));
        seg[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());

        let tcp = ip + self.ihl;
        let seq = self.seq.wrapping_add((k * self.mss) as u32);
        seg[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        const FIN: u8 = 0x01;
        const PSH: u8 = 0x08;
        const CWR: u8 = 0x80;
        let mut flags = self.flags;
        if !last {
            flags &= !(FIN | PSH);
        }
        if k != 0 {
            flags &= !CWR;
        }
        seg[tcp + 13] = flags;
        seg[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let l4_len = self.thl + n;
        let pseudo = sum16(0, &seg[ip + 12..ip + 20]) + 6 + l4_len as u32;
        let c = fold(sum16(pseudo, &seg[tcp..]));
        seg[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csum::holds_pseudo_header_sum;

    /// A TCP/IPv4 frame with `payload` bytes of a counting pattern and the given flags.
    fn frame(payload: usize, flags: u8, tot_field: bool) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let tot = if tot_field { 20 + 32 + payload } else { 0 };
        f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8, 0x12, 0x34, 0x40, 0]);
        f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        // TCP: ports, seq 0xfffffff0 (wraps), ack, data offset 8 (32 bytes), flags.
        f.extend_from_slice(&[0x30, 0x39, 0x14, 0x51, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 7]);
        f.extend_from_slice(&[0x80, flags, 0x01, 0x00, 0xde, 0xad, 0, 0]);
        f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]); // NOP NOP timestamps
        f.extend((0..payload).map(|i| (i % 251) as u8));
        f
    }

    fn verify(seg: &[u8]) {
        let ihl = (seg[ETH] & 0x0f) as usize * 4;
        let tot = u16::from_be_bytes([seg[ETH + 2], seg[ETH + 3]]) as usize;
        assert_eq!(ETH + tot, seg.len(), "IPv4 total length");
        assert_eq!(fold(sum16(0, &seg[ETH..ETH + ihl])), 0, "IPv4 checksum");
        let p = sum16(0, &seg[ETH + 12..ETH + 20]) + 6 + (tot - ihl) as u32;
        assert_eq!(fold(sum16(p, &seg[ETH + ihl..])), 0, "TCP checksum");
    }

    fn cut(f: &[u8], t: &TcpV4) -> Vec<Vec<u8>> {
        let h = t.header_len();
        (0..t.segments())
            .map(|k| {
                let n = t.segment_payload(k);
                let mut s = f[..h].to_vec();
                s.extend_from_slice(&f[h + k * t.mss..h + k * t.mss + n]);
                assert!(t.finish(&mut s, k));
                s
            })
            .collect()
    }

    #[test]
    fn a_super_frame_becomes_valid_mss_segments_carrying_the_same_bytes() {
        for (payload, tot_field) in [(65_000, true), (1448 * 3, false), (1449, true)] {
            let f = frame(payload, 0x18 | 0x01 | 0x80, tot_field); // PSH ACK FIN CWR
            let t = TcpV4::parse(&f[..f.len().min(134)], f.len(), 1500).expect("parses");
            assert_eq!(t.mss, 1448);
            assert_eq!(t.segments(), payload.div_ceil(1448));
            let segs = cut(&f, &t);
            let mut data = Vec::new();
            for (k, s) in segs.iter().enumerate() {
                verify(s);
                assert!(s.len() - ETH <= 1500);
                let seq = u32::from_be_bytes([s[38], s[39], s[40], s[41]]);
                assert_eq!(seq, 0xffff_fff0u32.wrapping_add((k * 1448) as u32));
                let id = u16::from_be_bytes([s[18], s[19]]);
                assert_eq!(id, 0x1234 + k as u16);
                let last = k + 1 == segs.len();
                assert_eq!(s[47] & 0x09 != 0, last, "FIN/PSH only on the last");
                assert_eq!(s[47] & 0x80 != 0, k == 0, "CWR only on the first");
                assert_eq!(s[47] & 0x10, 0x10, "ACK on every segment");
                data.extend_from_slice(&s[66..]);
            }
            assert_eq!(data, f[66..]);
        }
    }

    #[test]
    fn a_checksum_left_to_offload_is_told_from_a_complete_one() {
        let mut f = frame(1000, 0x18, true);
        let t = TcpV4::parse(&f, f.len(), 1500).expect("parses");
        // Complete checksums, as a segment gets them.
        assert!(t.finish(&mut f, 0));
        verify(&f);
        assert!(!holds_pseudo_header_sum(&f[..118], f.len()));
        // What Linux leaves for the device: the folded pseudo-header sum.
        let l4_len = f.len() - ETH - 20;
        let p = sum16(0, &f[ETH + 12..ETH + 20]) + 6 + l4_len as u32;
        f[ETH + 36..ETH + 38].copy_from_slice(&(!fold(p)).to_be_bytes());
        assert!(holds_pseudo_header_sum(&f[..118], f.len()));
        assert!(
            !holds_pseudo_header_sum(&f[..ETH + 36], f.len()),
            "field cut off"
        );
        assert!(
            !holds_pseudo_header_sum(&f[..118], f.len() - 1),
            "length past the frame"
        );
    }

    #[test]
    fn anything_but_unfragmented_tcp_over_ipv4_is_refused() {
        let f = frame(3000, 0x10, true);
        let ok = |f: &[u8]| TcpV4::parse(f, f.len(), 1500).is_some();
        assert!(ok(&f));
        let mut udp = f.clone();
        udp[ETH + 9] = 17;
        assert!(!ok(&udp));
        let mut frag = f.clone();
        frag[ETH + 6] = 0x20; // MF
        assert!(!ok(&frag));
        let mut v6 = f.clone();
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(!ok(&v6));
        let mut badlen = f.clone();
        badlen[ETH + 3] ^= 1;
        assert!(!ok(&badlen));
        let mut tiny_thl = f.clone();
        tiny_thl[ETH + 20 + 12] = 0x40;
        assert!(!ok(&tiny_thl));
        assert!(!ok(&f[..40]));
        // No payload, or an MTU that leaves no room for any: nothing to cut.
        let bare = frame(0, 0x10, true);
        assert!(!ok(&bare));
        assert!(TcpV4::parse(&f, f.len(), 52).is_none());
        // A segment buffer of the wrong length is refused.
        let t = TcpV4::parse(&f, f.len(), 1500).expect("parses");
        let mut short = vec![0u8; 10];
        assert!(!t.finish(&mut short, 0));
    }
}

//! Software segmentation and checksums (`pmd`'s `gso` module, through its `fuzzing` entry
//! points).

use pmd::fuzzing::{checksum as csum, gso_segments, holds_pseudo_header_sum};

use crate::Input;

const ETH: usize = 14;

/// Cuts an arbitrary frame as the AF_PACKET port does. When the port cuts it, every
/// segment is at most the MTU, carries a correct IPv4 header checksum and total length and a
/// correct TCP checksum, the sequence numbers follow the payload, FIN/PSH are on the last
/// segment only and CWR on the first only, and the payloads put together are the frame's.
pub fn segments(data: &[u8]) {
    let mut inp = Input::new(data);
    // What the port allows: an MTU up to its buffer (4096 bytes) less the Ethernet header.
    let max_l3 = 1 + inp.below(4096 - ETH);
    let frame = inp.rest();
    let Some(cut) = gso_segments(frame, max_l3) else {
        return;
    };
    let segs = cut.unwrap_or_else(|k| panic!("segment {k} of a parsed frame was not finished"));
    assert!(!segs.is_empty());
    let ihl = (frame[ETH] & 0x0f) as usize * 4;
    let thl = (frame[ETH + ihl + 12] >> 4) as usize * 4;
    let h = ETH + ihl + thl;
    let seq0 = u32::from_be_bytes(frame[ETH + ihl + 4..ETH + ihl + 8].try_into().expect("4"));
    let flags = frame[ETH + ihl + 13];
    let mut payload = Vec::new();
    for (k, s) in segs.iter().enumerate() {
        assert!(
            s.len() - ETH <= max_l3,
            "segment {k} of {} bytes over the MTU",
            s.len()
        );
        assert_eq!(s[..ETH], frame[..ETH], "Ethernet header");
        let tot = u16::from_be_bytes([s[ETH + 2], s[ETH + 3]]) as usize;
        assert_eq!(ETH + tot, s.len(), "IPv4 total length of segment {k}");
        assert_eq!(
            csum(0, &s[ETH..ETH + ihl]),
            0,
            "IPv4 checksum of segment {k}"
        );
        let pseudo = u32::from(!csum(0, &s[ETH + 12..ETH + 20])) + 6 + (tot - ihl) as u32;
        assert_eq!(
            csum(pseudo, &s[ETH + ihl..]),
            0,
            "TCP checksum of segment {k}"
        );
        let seq = u32::from_be_bytes(s[ETH + ihl + 4..ETH + ihl + 8].try_into().expect("4"));
        assert_eq!(
            seq,
            seq0.wrapping_add(payload.len() as u32),
            "sequence of segment {k}"
        );
        let f = s[ETH + ihl + 13];
        let last = k + 1 == segs.len();
        assert_eq!(
            f & 0x09,
            if last { flags & 0x09 } else { 0 },
            "FIN/PSH of {k}"
        );
        assert_eq!(
            f & 0x80,
            if k == 0 { flags & 0x80 } else { 0 },
            "CWR of {k}"
        );
        assert_eq!(f & 0x76, flags & 0x76, "other flags of {k}");
        payload.extend_from_slice(&s[h..]);
    }
    assert_eq!(
        payload,
        frame[h..],
        "the segments' payloads are the frame's"
    );
}

/// The Internet checksum against a plain one (64-bit sum, folded at the end), on any bytes
/// and any starting sum up to what callers pass; a field holding the checksum of the rest
/// makes the whole sum to zero; the offload test never panics and agrees with a field set
/// to the pseudo-header sum.
pub fn checksum(data: &[u8]) {
    let mut inp = Input::new(data);
    let sum = inp.u32() & 0x3_ffff;
    let len_delta = inp.u16();
    let b = inp.rest();
    let mut plain: u64 = u64::from(sum);
    for c in b.chunks(2) {
        plain += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while plain > 0xffff {
        plain = (plain & 0xffff) + (plain >> 16);
    }
    assert_eq!(
        csum(sum, b),
        !(plain as u16),
        "checksum of {} bytes",
        b.len()
    );
    if b.len().is_multiple_of(2) {
        let c = csum(0, b);
        let mut with = b.to_vec();
        with.extend_from_slice(&c.to_be_bytes());
        assert_eq!(csum(0, &with), 0);
    }
    let head = &b[..b.len().min(118)];
    let len = b.len().wrapping_add(len_delta as usize % 3).wrapping_sub(1);
    let _ = holds_pseudo_header_sum(head, len);
}

//! Internet checksums (RFC 1071) of Ethernet frames carrying TCP or UDP over IPv4 or IPv6,
//! behind at most one VLAN tag: completing a checksum left to offload, writing the
//! pseudo-header sum a partial checksum starts from, verifying one.
//!
//! A *partial* checksum is Linux's `CHECKSUM_PARTIAL` convention, which virtio and
//! `PACKET_VNET_HDR` carry too: the L4 checksum field holds the folded pseudo-header sum
//! (not complemented), and whoever completes it sums from the L4 header to the end of the
//! packet over that value. Every offset is checked against the frame; nothing here panics
//! on a malformed frame.

use crate::ETH;

/// The L4 part of a frame: where it is and what its pseudo header sums to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    /// IP protocol: 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Offset of the L4 header from the start of the frame.
    pub start: usize,
    /// Bytes of L4 header and payload, as the IP header gives them.
    pub len: usize,
    /// Offset of the checksum field within the L4 header (16 for TCP, 6 for UDP).
    pub csum_offset: usize,
    /// The pseudo header's sum (unfolded).
    pub pseudo: u32,
}

impl L4 {
    /// Parses the headers in `head` (the start of a frame of `len` bytes): `None` unless it
    /// is TCP or UDP over IPv4 (not a fragment) or IPv6 (no extension headers), with
    /// lengths that fit the frame.
    pub fn parse(head: &[u8], len: usize) -> Option<Self> {
        let (mut l3, mut et) = (ETH, u16::from_be_bytes(head.get(12..14)?.try_into().ok()?));
        if et == 0x8100 || et == 0x88a8 {
            et = u16::from_be_bytes(head.get(16..18)?.try_into().ok()?);
            l3 = ETH + 4;
        }
        let (proto, start, l4_len, pseudo) = match et {
            0x0800 => {
                let h = head.get(l3..l3 + 20)?;
                let ihl = (h[0] & 0x0f) as usize * 4;
                let tot = u16::from_be_bytes([h[2], h[3]]) as usize;
                let frag = u16::from_be_bytes([h[6], h[7]]);
                if h[0] >> 4 != 4 || ihl < 20 || tot < ihl || l3 + tot > len || frag & 0x3fff != 0 {
                    return None;
                }
                let l4_len = tot - ihl;
                (
                    h[9],
                    l3 + ihl,
                    l4_len,
                    sum16(0, &h[12..20]) + h[9] as u32 + l4_len as u32,
                )
            }
            0x86dd => {
                let h = head.get(l3..l3 + 40)?;
                let plen = u16::from_be_bytes([h[4], h[5]]) as usize;
                if l3 + 40 + plen > len {
                    return None;
                }
                (
                    h[6],
                    l3 + 40,
                    plen,
                    sum16(0, &h[8..40]) + h[6] as u32 + plen as u32,
                )
            }
            _ => return None,
        };
        let csum_offset = match proto {
            6 if l4_len >= 20 => 16,
            17 if l4_len >= 8 => 6,
            _ => return None,
        };
        Some(Self {
            proto,
            start,
            len: l4_len,
            csum_offset,
            pseudo,
        })
    }

    /// Offset of the checksum field from the start of the frame.
    pub fn csum_at(&self) -> usize {
        self.start + self.csum_offset
    }
}

/// Whether the TCP or UDP checksum field of a frame holds the folded pseudo-header sum
/// alone: what Linux leaves there for the device to finish when it sends with checksum
/// offload, as a veth peer with `tx` offload on does. `head` is the start of the frame (up
/// to its first 118 bytes), `len` its length. A complete checksum has that value only by a
/// 1-in-65536 chance, and completing a correct checksum leaves it as it was.
pub fn holds_pseudo_header_sum(head: &[u8], len: usize) -> bool {
    let Some(l4) = L4::parse(head, len) else {
        return false;
    };
    match head.get(l4.csum_at()..l4.csum_at() + 2) {
        Some(c) => u16::from_be_bytes([c[0], c[1]]) == !fold(l4.pseudo),
        None => false,
    }
}

/// Fills in the TCP or UDP checksum of the frame `f` from scratch. Returns whether it
/// changed the frame (false for anything it does not understand, left alone).
pub fn complete_l4_checksum(f: &mut [u8]) -> bool {
    let Some(l4) = L4::parse(f, f.len()) else {
        return false;
    };
    let at = l4.csum_at();
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = fold(sum16(l4.pseudo, &f[l4.start..l4.start + l4.len]));
    if l4.proto == 17 && c == 0 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Writes the folded pseudo-header sum into the TCP or UDP checksum field of `f` (the
/// partial checksum a device or the receiver completes). Returns the L4 part, or `None` for
/// a frame it does not understand (left alone).
pub fn set_pseudo_header_sum(f: &mut [u8]) -> Option<L4> {
    let l4 = L4::parse(f, f.len())?;
    let at = l4.csum_at();
    f[at..at + 2].copy_from_slice(&(!fold(l4.pseudo)).to_be_bytes());
    Some(l4)
}

/// Whether the frame's TCP or UDP checksum, and an IPv4 header's checksum, are correct
/// (`None`: not a frame this understands; a UDP checksum of 0 over IPv4 means none).
pub fn verify(f: &[u8]) -> Option<bool> {
    let l4 = L4::parse(f, f.len())?;
    let ip_ok = match f.get(12..14) {
        Some([0x08, 0x00]) => fold(sum16(0, &f[ETH..l4.start])) == 0,
        _ => true,
    };
    let at = l4.csum_at();
    if l4.proto == 17 && f[at..at + 2] == [0, 0] && l4.start == ETH + 20 {
        return Some(ip_ok);
    }
    Some(ip_ok && fold(sum16(l4.pseudo, &f[l4.start..l4.start + l4.len])) == 0)
}

/// The ones' complement sum of `b` as big-endian 16-bit words, added to `sum` (folded to
/// 17 bits at most, never complemented).
pub fn sum16(sum: u32, b: &[u8]) -> u32 {
    let mut acc = sum as u64;
    let mut it = b.chunks_exact(8);
    for w in &mut it {
        let x = u64::from_be_bytes(w.try_into().expect("8 bytes"));
        acc += (x >> 32) + (x & 0xffff_ffff);
    }
    let mut rest = it.remainder().chunks_exact(2);
    for w in &mut rest {
        acc += u16::from_be_bytes([w[0], w[1]]) as u64;
    }
    if let [x] = rest.remainder() {
        acc += (*x as u64) << 8;
    }
    // Two folds of 64 bits to 32, then 32 to 17.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let s = acc as u32;
    (s & 0xffff) + (s >> 16)
}

/// Folds a sum to 16 bits and complements it: the checksum field's value.
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 frame (with a VLAN tag or not) of `payload` bytes, its TCP checksum 0.
    fn ipv4_tcp(vlan: bool, payload: usize) -> Vec<u8> {
        let data: Vec<u8> = (0..payload).map(|i| (i * 7 % 256) as u8).collect();
        let mut f = crate::frame::Ipv4Frame {
            vlan: vlan.then_some(5),
            flags: 0x18,
            ..Default::default()
        }
        .build(&data);
        let at = L4::parse(&f, f.len()).expect("TCP").csum_at();
        f[at..at + 2].copy_from_slice(&[0, 0]);
        f
    }

    #[test]
    fn sum16_agrees_with_the_two_byte_definition_at_every_length() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 131 % 251) as u8).collect();
        for n in [0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 1499, 3000] {
            let mut s = 0x1_2345u32;
            for w in data[..n].chunks(2) {
                s += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
            }
            assert_eq!(fold(sum16(0x1_2345, &data[..n])), fold(s), "length {n}");
        }
    }

    #[test]
    fn completes_verifies_and_makes_partial_with_and_without_vlan() {
        for vlan in [false, true] {
            let mut f = ipv4_tcp(vlan, 333);
            assert_eq!(verify(&f), Some(false), "checksum still zero");
            assert!(complete_l4_checksum(&mut f));
            assert_eq!(verify(&f), Some(true));
            let l4 = set_pseudo_header_sum(&mut f).expect("TCP");
            assert_eq!(l4.start, if vlan { 38 } else { 34 });
            assert!(holds_pseudo_header_sum(&f, f.len()));
            assert_eq!(verify(&f), Some(false));
            assert!(complete_l4_checksum(&mut f));
            assert_eq!(verify(&f), Some(true));
            f[60] ^= 1;
            assert_eq!(verify(&f), Some(false), "a flipped payload bit");
        }
    }

    #[test]
    fn leaves_what_it_does_not_understand_alone() {
        let mut f = ipv4_tcp(false, 10);
        f[14 + 3] += 1; // total length past the frame
        let before = f.clone();
        assert!(!complete_l4_checksum(&mut f));
        assert!(set_pseudo_header_sum(&mut f).is_none());
        assert_eq!(verify(&f), None);
        assert_eq!(f, before);
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!complete_l4_checksum(&mut arp));
        assert!(!complete_l4_checksum(&mut [0u8; 5]));
    }
}

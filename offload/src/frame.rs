//! Ethernet frames carrying TCP or UDP over IPv4, built with every length and checksum right:
//! for tests, benchmarks and fuzz seeds.

use crate::csum::{complete_l4_checksum, fold, sum16};

/// The headers of a frame to build; [`Ipv4Frame::build`] adds a payload and fills in the
/// lengths and checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Frame {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// An 802.1Q tag's TCI, if tagged.
    pub vlan: Option<u16>,
    /// Source address.
    pub src_ip: [u8; 4],
    /// Destination address.
    pub dst_ip: [u8; 4],
    /// IPv4 identification (DF is always set).
    pub id: u16,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// TCP sequence number.
    pub seq: u32,
    /// TCP acknowledgement number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
    /// TCP window.
    pub window: u16,
    /// TCP options (a multiple of 4 bytes, at most 40).
    pub options: Vec<u8>,
}

impl Default for Ipv4Frame {
    /// TCP from 02:00:00:00:00:01 / 10.0.0.1:12345 to 02:00:00:00:00:02 / 10.0.0.2:80, ACK.
    fn default() -> Self {
        Self {
            dst: [2, 0, 0, 0, 0, 2],
            src: [2, 0, 0, 0, 0, 1],
            vlan: None,
            src_ip: [10, 0, 0, 1],
            dst_ip: [10, 0, 0, 2],
            id: 1,
            proto: 6,
            sport: 12345,
            dport: 80,
            seq: 1,
            ack: 1,
            flags: 0x10,
            window: 0xffff,
            options: Vec::new(),
        }
    }
}

impl Ipv4Frame {
    /// The frame carrying `payload`, both checksums complete.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let mut f = self.dst.to_vec();
        f.extend_from_slice(&self.src);
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let l4 = if self.proto == 6 {
            20 + self.options.len()
        } else {
            8
        };
        let tot = (20 + l4 + payload.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&tot.to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, self.proto, 0, 0]);
        ip.extend_from_slice(&self.src_ip);
        ip.extend_from_slice(&self.dst_ip);
        let c = fold(sum16(0, &ip));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        if self.proto == 6 {
            f.extend_from_slice(&self.seq.to_be_bytes());
            f.extend_from_slice(&self.ack.to_be_bytes());
            f.extend_from_slice(&[((l4 / 4) as u8) << 4, self.flags]);
            f.extend_from_slice(&self.window.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            f.extend_from_slice(&self.options);
        } else {
            f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(payload);
        complete_l4_checksum(&mut f);
        f
    }
}

/// TCP options NOP, NOP and a timestamp (12 bytes), as Linux sends on every segment.
pub const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csum::verify;

    #[test]
    fn builds_frames_whose_lengths_and_checksums_are_right() {
        for (proto, vlan, options) in [
            (6, None, vec![]),
            (6, Some(5), TIMESTAMPS.to_vec()),
            (17, None, vec![]),
        ] {
            let f = Ipv4Frame {
                proto,
                vlan,
                options,
                ..Ipv4Frame::default()
            }
            .build(&[7; 333]);
            assert_eq!(verify(&f), Some(true), "proto {proto} vlan {vlan:?}");
        }
    }
}

//! sockperf's message format, so that the unmodified `sockperf ping-pong` client can measure
//! a Ferrite app (and Ferrite's own ping-pong client can measure anything sockperf serves).
//!
//! Each message starts with a 14-byte header in network byte order:
//!
//! ```text
//! offset 0   u64  sequence number
//! offset 8   u16  flags: 1 = sent by a client, 2 = pong requested, 4 = warm-up message
//! offset 10  u32  length of the whole message, header included
//! ```
//!
//! A server answers a client message that requests a pong (and is not a warm-up) by sending
//! the same bytes back with the client flag cleared; the client discards anything that still
//! has the client flag set, which is why a plain echo is not enough. One UDP datagram may
//! carry several messages back to back; each is answered with its own datagram.

/// Bytes of the header.
pub const HEADER_LEN: usize = 14;
/// Flag: the message was sent by a client.
pub const FLAG_CLIENT: u16 = 1;
/// Flag: the client wants this message answered.
pub const FLAG_PONG: u16 = 2;
/// Flag: a warm-up message, never answered.
pub const FLAG_WARMUP: u16 = 4;
/// Largest message accepted (sockperf's own limit for a UDP payload).
pub const MAX_MSG: usize = 65_507;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sequence number.
    pub seq: u64,
    /// Flags.
    pub flags: u16,
    /// Length of the whole message.
    pub len: u32,
}

impl Header {
    /// Parses the header at the start of `b`; `None` if `b` is shorter than a header or the
    /// length field is shorter than a header, longer than [`MAX_MSG`] or than `b`.
    pub fn parse(b: &[u8]) -> Option<Self> {
        let h = b.get(..HEADER_LEN)?;
        let seq = u64::from_be_bytes(h[0..8].try_into().ok()?);
        let flags = u16::from_be_bytes(h[8..10].try_into().ok()?);
        let len = u32::from_be_bytes(h[10..14].try_into().ok()?);
        let l = len as usize;
        if !(HEADER_LEN..=MAX_MSG).contains(&l) || l > b.len() {
            return None;
        }
        Some(Self { seq, flags, len })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `b` (which must be that long).
    pub fn emit(&self, b: &mut [u8]) {
        if b.len() < HEADER_LEN {
            return;
        }
        b[0..8].copy_from_slice(&self.seq.to_be_bytes());
        b[8..10].copy_from_slice(&self.flags.to_be_bytes());
        b[10..14].copy_from_slice(&self.len.to_be_bytes());
    }

    /// Whether a server answers this message.
    pub fn wants_pong(&self) -> bool {
        self.flags & FLAG_CLIENT != 0
            && self.flags & FLAG_PONG != 0
            && self.flags & FLAG_WARMUP == 0
    }
}

/// The answers to one received datagram: for every message in it that wants a pong, the byte
/// range of the message (to send back) and its header as the server writes it.
pub fn answers(datagram: &[u8]) -> impl Iterator<Item = (core::ops::Range<usize>, Header)> + '_ {
    let mut off = 0usize;
    core::iter::from_fn(move || {
        loop {
            let h = Header::parse(datagram.get(off..)?)?;
            let range = off..off + h.len as usize;
            off = range.end;
            if h.wants_pong() {
                let reply = Header {
                    flags: h.flags & !FLAG_CLIENT,
                    ..h
                };
                return Some((range, reply));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, flags: u16, len: u32) -> Vec<u8> {
        let mut b = vec![0x5a; len as usize];
        Header { seq, flags, len }.emit(&mut b);
        b
    }

    #[test]
    fn a_pong_request_is_answered_with_the_client_flag_cleared() {
        let m = msg(7, FLAG_CLIENT | FLAG_PONG, 64);
        let a: Vec<_> = answers(&m).collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].0, 0..64);
        assert_eq!(a[0].1.flags, FLAG_PONG);
        assert_eq!(a[0].1.seq, 7);
        let mut out = m.clone();
        a[0].1.emit(&mut out);
        assert_eq!(&out[..8], &7u64.to_be_bytes());
        assert_eq!(&out[8..10], &[0, 2]);
        assert_eq!(&out[14..], &m[14..]);
    }

    #[test]
    fn warmups_server_messages_and_no_pong_are_not_answered() {
        for flags in [
            FLAG_CLIENT | FLAG_PONG | FLAG_WARMUP,
            FLAG_PONG,
            FLAG_CLIENT,
        ] {
            assert_eq!(answers(&msg(1, flags, 32)).count(), 0, "flags {flags}");
        }
    }

    #[test]
    fn several_messages_in_one_datagram_are_each_answered_and_garbage_stops_parsing() {
        let mut d = msg(1, FLAG_CLIENT | FLAG_PONG, 20);
        d.extend(msg(2, FLAG_CLIENT, 16));
        d.extend(msg(3, FLAG_CLIENT | FLAG_PONG, 30));
        let seqs: Vec<u64> = answers(&d).map(|(_, h)| h.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        // A length running past the datagram, or shorter than a header, is refused.
        assert_eq!(
            answers(&msg(1, FLAG_CLIENT | FLAG_PONG, 64)[..40]).count(),
            0
        );
        let mut short = msg(1, FLAG_CLIENT | FLAG_PONG, 20);
        short[10..14].copy_from_slice(&3u32.to_be_bytes());
        assert_eq!(answers(&short).count(), 0);
    }
}

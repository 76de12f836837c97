//! Entry points for the fuzz harnesses (`fuzz/`), behind the `fuzzing` feature: the software
//! offloads (`gso`) are private to this crate, and these wrappers call them as the ports do.

/// Cuts `frame` (a whole Ethernet frame) into TCP segments of at most `max_l3` bytes of IP
/// packet as the AF_PACKET port does: `None` when the port would not cut it (not
/// unfragmented TCP over IPv4, no payload, headers too long for `max_l3`), else every
/// segment with its headers rewritten, or `Err(k)` when segment `k` could not be finished.
pub fn gso_segments(frame: &[u8], max_l3: usize) -> Option<Result<Vec<Vec<u8>>, usize>> {
    let len = frame.len();
    let head = &frame[..len.min(offload::ETH + 120)];
    let t = offload::gso::TcpV4::parse(head, len, max_l3)?;
    let h = t.header_len();
    let mut segs = Vec::with_capacity(t.segments());
    for k in 0..t.segments() {
        let n = t.segment_payload(k);
        let at = h + k * t.mss;
        let (Some(hdr), Some(data)) = (frame.get(..h), frame.get(at..at + n)) else {
            return Some(Err(k));
        };
        let mut seg = hdr.to_vec();
        seg.extend_from_slice(data);
        if !t.finish(&mut seg, k) {
            return Some(Err(k));
        }
        segs.push(seg);
    }
    Some(Ok(segs))
}

/// Whether the frame's TCP/UDP checksum field holds the pseudo-header sum alone (what the
/// AF_XDP port checks before completing a checksum left to offload).
pub fn holds_pseudo_header_sum(head: &[u8], len: usize) -> bool {
    offload::csum::holds_pseudo_header_sum(head, len)
}

/// The Internet checksum of `b` with `sum` added (the ports' `fold(sum16(sum, b))`).
pub fn checksum(sum: u32, b: &[u8]) -> u16 {
    offload::csum::fold(offload::csum::sum16(sum, b))
}

//! The example apps' logic as [`Service`]s over smoltcp sockets: TCP+UDP echo, a bulk TCP
//! sink and source that count, time and hash what they move, a sockperf ping-pong responder
//! and a ping-pong client that records a latency histogram. Binaries combine them with
//! [`Pair`] to run several in one app domain.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use crate::domain::Service;
use crate::sockperf;

/// Two services in one domain.
#[derive(Debug)]
pub struct Pair<A, B>(pub A, pub B);

impl<A: Service, B: Service> Service for Pair<A, B> {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let a = self.0.poll(sockets, now);
        let b = self.1.poll(sockets, now);
        a || b
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.0.poll_at(), self.1.poll_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn done(&self) -> bool {
        self.0.done() && self.1.done()
    }
}

/// A TCP socket with `buf` bytes of receive and send buffer.
pub fn tcp_socket(buf: usize) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buf]),
        tcp::SocketBuffer::new(vec![0; buf]),
    );
    s.set_nagle_enabled(false);
    s
}

/// A UDP socket with room for `packets` datagrams of up to 2 KiB each way.
pub fn udp_socket(packets: usize) -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; packets],
            vec![0; packets * 2048],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; packets],
            vec![0; packets * 2048],
        ),
    )
}

/// `n` TCP sockets listening on one port, re-listening as connections end, so that up to `n`
/// clients are served at once; with spares, a socket is added whenever none listens (every
/// socket is busy or still closing), up to `n + spares`.
#[derive(Debug)]
pub struct Listeners {
    port: u16,
    buf: usize,
    max: usize,
    /// The sockets.
    pub handles: Vec<SocketHandle>,
}

impl Listeners {
    /// Adds `n` sockets of `buf` bytes listening on `port`.
    pub fn new(sockets: &mut SocketSet<'static>, port: u16, n: usize, buf: usize) -> Self {
        let mut l = Self {
            port,
            buf,
            max: n,
            handles: Vec::with_capacity(n),
        };
        for _ in 0..n {
            l.add(sockets);
        }
        l
    }

    /// Allows up to `spares` more sockets, each added when no socket listens.
    pub fn with_spares(mut self, spares: usize) -> Self {
        self.max = self.handles.len() + spares;
        self
    }

    fn add(&mut self, sockets: &mut SocketSet<'static>) {
        let mut s = tcp_socket(self.buf);
        let _ = s.listen(self.port);
        self.handles.push(sockets.add(s));
    }

    /// Puts every socket whose connection ended back to listening, and adds a spare when
    /// none listens.
    pub fn relisten(&mut self, sockets: &mut SocketSet<'static>) {
        let mut listening = false;
        for &h in &self.handles {
            let s = sockets.get_mut::<tcp::Socket>(h);
            if s.state() == tcp::State::Closed {
                let _ = s.listen(self.port);
            }
            listening |= s.state() == tcp::State::Listen;
        }
        if !listening && self.handles.len() < self.max {
            self.add(sockets);
        }
    }
}

/// TCP and UDP echo on one port.
#[derive(Debug)]
pub struct Echo {
    tcp: Listeners,
    udp: SocketHandle,
    /// Bytes echoed over TCP.
    pub tcp_bytes: u64,
    /// Datagrams echoed.
    pub udp_datagrams: u64,
}

impl Echo {
    /// Echo on `port`, up to `conns` TCP connections at once.
    pub fn new(sockets: &mut SocketSet<'static>, port: u16, conns: usize) -> Self {
        let tcp = Listeners::new(sockets, port, conns, 64 * 1024);
        let mut u = udp_socket(64);
        let _ = u.bind(port);
        let udp = sockets.add(u);
        Self {
            tcp,
            udp,
            tcp_bytes: 0,
            udp_datagrams: 0,
        }
    }
}

impl Service for Echo {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, _now: Instant) -> bool {
        let mut worked = false;
        let mut buf = [0u8; 4096];
        for &h in &self.tcp.handles {
            let s = sockets.get_mut::<tcp::Socket>(h);
            while s.can_recv() && s.can_send() {
                let room = s.send_capacity() - s.send_queue();
                let want = room.min(buf.len());
                if want == 0 {
                    break;
                }
                match s.recv_slice(&mut buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // The room was checked, so all of it is queued.
                        let _ = s.send_slice(&buf[..n]);
                        self.tcp_bytes += n as u64;
                        worked = true;
                    }
                }
            }
            if !s.may_recv() && s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
                s.close();
                worked = true;
            }
        }
        self.tcp.relisten(sockets);
        let u = sockets.get_mut::<udp::Socket>(self.udp);
        while u.can_recv() && u.can_send() {
            match u.recv_slice(&mut buf) {
                Ok((n, meta)) => {
                    let _ = u.send_slice(&buf[..n], meta.endpoint);
                    self.udp_datagrams += 1;
                    worked = true;
                }
                Err(_) => break,
            }
        }
        worked
    }
}

/// What a bulk transfer moved.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BulkReport {
    /// `sink` or `source`.
    pub role: &'static str,
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds from the connection's first byte to its last.
    pub secs: f64,
    /// Gigabits per second over `secs`.
    pub gbps: f64,
    /// SHA-256 of the bytes, hex (empty when hashing is off).
    pub sha256: String,
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e9
    } else {
        0.0
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes per TCP socket buffer of the bulk services.
pub const BULK_BUF: usize = 1024 * 1024;

/// Sockets a [`BulkSink`] may add to keep listening while finished connections close.
const SINK_SPARES: usize = 6;

/// Receives TCP connections on a port, counting and hashing each until the peer closes.
#[derive(Debug)]
pub struct BulkSink {
    tcp: Listeners,
    hash: bool,
    once: bool,
    /// The transfer being received: its socket, start, last byte, bytes, hash so far.
    cur: Option<(SocketHandle, Instant, Option<Instant>, u64, Sha256)>,
    /// Finished transfers.
    pub reports: Vec<BulkReport>,
    /// Bytes received in the current transfer so far (for progress).
    pub progress: u64,
}

impl BulkSink {
    /// A sink on `port`; `hash` computes SHA-256 of what arrives; `once` finishes after the
    /// first transfer.
    pub fn new(sockets: &mut SocketSet<'static>, port: u16, hash: bool, once: bool) -> Self {
        Self::with_buffer(sockets, port, hash, once, BULK_BUF)
    }

    /// As [`BulkSink::new`], with `buf` bytes of TCP receive buffer (the window it offers:
    /// see `AppDomain::rx_window`).
    pub fn with_buffer(
        sockets: &mut SocketSet<'static>,
        port: u16,
        hash: bool,
        once: bool,
        buf: usize,
    ) -> Self {
        Self {
            // One transfer at a time, and a socket listening meanwhile: a client that
            // connects while earlier connections are still closing is not refused.
            tcp: Listeners::new(sockets, port, 2, buf).with_spares(SINK_SPARES),
            hash,
            once,
            cur: None,
            reports: Vec::new(),
            progress: 0,
        }
    }
}

impl Service for BulkSink {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let mut worked = false;
        if self.cur.is_none() && !self.done() {
            let fresh = self.tcp.handles.iter().copied().find(|&h| {
                // A client may have sent everything, FIN included, while it waited: the
                // sink closes what it has read, so CloseWait means not read yet.
                let state = sockets.get::<tcp::Socket>(h).state();
                matches!(
                    state,
                    tcp::State::SynReceived | tcp::State::Established | tcp::State::CloseWait
                )
            });
            if let Some(h) = fresh {
                self.cur = Some((h, now, None, 0, Sha256::new()));
                self.progress = 0;
            }
        }
        if let Some((h, start, last, bytes, hasher)) = self.cur.as_mut() {
            let s = sockets.get_mut::<tcp::Socket>(*h);
            let hash = self.hash;
            while s.can_recv() {
                let n = s
                    .recv(|b| {
                        let n = b.len();
                        if hash {
                            hasher.update(&*b);
                        }
                        (n, n)
                    })
                    .unwrap_or(0);
                if n == 0 {
                    break;
                }
                if *bytes == 0 {
                    // Time from the first byte, not from the handshake.
                    *start = now;
                }
                *bytes += n as u64;
                *last = Some(now);
                worked = true;
            }
            self.progress = *bytes;
            // The peer finished (FIN received and everything read), or the connection died.
            let finished = !s.can_recv()
                && matches!(
                    s.state(),
                    tcp::State::CloseWait | tcp::State::Closed | tcp::State::TimeWait
                );
            if finished {
                s.close();
                if let Some((_, start, last, bytes, hasher)) = self.cur.take() {
                    let secs = last.unwrap_or(now).duration_since(start).as_secs_f64();
                    self.reports.push(BulkReport {
                        role: "sink",
                        bytes,
                        secs,
                        gbps: gbps(bytes, secs),
                        sha256: if self.hash {
                            hex(&hasher.finalize())
                        } else {
                            String::new()
                        },
                    });
                }
                worked = true;
            }
        }
        self.tcp.relisten(sockets);
        worked
    }

    fn done(&self) -> bool {
        self.once && !self.reports.is_empty()
    }
}

/// A deterministic byte stream, so that sender and receiver can both hash it and a test can
/// recompute it: four xorshift64 generators side by side (seeded from the seed by
/// splitmix64), 32 bytes a step, each generator's word little-endian in turn. The four are
/// independent, so a step costs about what one generator's step does. The stream does not
/// depend on how it is cut into `fill` calls.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: [u64; LANES],
    /// The current step's bytes not handed out yet (the last `left` of `word`).
    word: [u8; STEP],
    left: usize,
}

/// Generators side by side in a [`Pattern`].
const LANES: usize = 4;
/// Bytes per [`Pattern`] step.
const STEP: usize = LANES * 8;

impl Pattern {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let state = core::array::from_fn(|_| {
            // splitmix64: distinct, never-zero starting states for any seed.
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        });
        Self {
            state,
            word: [0; STEP],
            left: 0,
        }
    }

    #[inline(always)]
    fn step(&mut self, out: &mut [u8]) {
        for (lane, o) in self.state.iter_mut().zip(out.chunks_exact_mut(8)) {
            let mut x = *lane;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *lane = x;
            o.copy_from_slice(&x.to_le_bytes());
        }
    }

    /// Fills `buf` with the next bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let first = self.left.min(buf.len());
        buf[..first].copy_from_slice(&self.word[STEP - self.left..STEP - self.left + first]);
        self.left -= first;
        let mut chunks = buf[first..].chunks_exact_mut(STEP);
        for chunk in &mut chunks {
            self.step(chunk);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut word = [0u8; STEP];
            self.step(&mut word);
            self.word = word;
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.left = STEP - n;
        }
    }
}

/// How much a source sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Exactly this many bytes.
    Bytes(u64),
    /// As much as fits in this time.
    Time(Duration),
}

/// Connects to a sink and sends a pattern stream, then closes and waits for all of it to be
/// acknowledged.
#[derive(Debug)]
pub struct BulkSource {
    h: SocketHandle,
    remote: IpEndpoint,
    amount: Amount,
    hash: bool,
    pattern: Pattern,
    hasher: Sha256,
    started: Option<Instant>,
    sent: u64,
    closing: bool,
    connected_once: bool,
    /// The finished transfer.
    pub report: Option<BulkReport>,
    /// Why the transfer failed, if it did.
    pub error: Option<String>,
    /// Bytes accepted by the stack so far (for progress).
    pub progress: u64,
}

impl BulkSource {
    /// A source that will connect from `local_port` to `remote` and send `amount` of the
    /// pattern for `seed`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        remote: IpEndpoint,
        amount: Amount,
        seed: u64,
        hash: bool,
    ) -> Self {
        let mut sock = tcp_socket(BULK_BUF);
        // A peer that vanishes for good ends the transfer instead of hanging it; a server
        // restart is much shorter than this.
        sock.set_timeout(Some(smoltcp::time::Duration::from_secs(60)));
        let h = sockets.add(sock);
        Self {
            h,
            remote,
            amount,
            hash,
            pattern: Pattern::new(seed),
            hasher: Sha256::new(),
            started: None,
            sent: 0,
            closing: false,
            connected_once: false,
            report: None,
            error: None,
            progress: 0,
        }
    }

    /// Starts connecting (call once the domain is up).
    pub fn connect(
        &mut self,
        iface: &mut smoltcp::iface::Context,
        sockets: &mut SocketSet<'static>,
        local_port: u16,
    ) -> Result<(), String> {
        let s = sockets.get_mut::<tcp::Socket>(self.h);
        s.connect(iface, self.remote, local_port)
            .map_err(|e| format!("connect to {}: {e}", self.remote))
    }

    fn remaining(&self, now: Instant) -> u64 {
        match self.amount {
            Amount::Bytes(n) => n - self.sent,
            Amount::Time(d) => match self.started {
                Some(t) if now.duration_since(t) >= d => 0,
                _ => u64::MAX,
            },
        }
    }
}

impl Service for BulkSource {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        if self.report.is_some() || self.error.is_some() {
            return false;
        }
        let s = sockets.get_mut::<tcp::Socket>(self.h);
        let mut worked = false;
        if s.may_send() && self.started.is_none() {
            self.started = Some(now);
            self.connected_once = true;
        }
        if s.may_send() && !self.closing {
            loop {
                let left = self.remaining(now);
                if left == 0 {
                    s.close();
                    self.closing = true;
                    worked = true;
                    break;
                }
                // The pattern is written straight into the socket's send buffer: the only
                // copy after it is the stack's, into the frame.
                let (pattern, hasher, hash) = (&mut self.pattern, &mut self.hasher, self.hash);
                let n = s
                    .send(|free| {
                        let n = free.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        pattern.fill(&mut free[..n]);
                        if hash {
                            hasher.update(&free[..n]);
                        }
                        (n, n)
                    })
                    .unwrap_or_default();
                if n == 0 {
                    break;
                }
                self.sent += n as u64;
                worked = true;
            }
            self.progress = self.sent;
        }
        // Every byte acknowledged by the peer's TCP (the FIN may still be in flight; the
        // domain lingers after the service is done so that it goes out).
        let acked_all = self.closing && s.send_queue() == 0;
        if !acked_all && self.connected_once && s.state() == tcp::State::Closed {
            // Reset or timed out before every byte was acknowledged.
            self.error = Some(format!(
                "the connection to {} ended after {} bytes, {} unacknowledged",
                self.remote,
                self.sent,
                s.send_queue()
            ));
            return true;
        }
        if acked_all {
            let secs = self
                .started
                .map(|t| now.duration_since(t).as_secs_f64())
                .unwrap_or(0.0);
            let hasher = core::mem::take(&mut self.hasher);
            self.report = Some(BulkReport {
                role: "source",
                bytes: self.sent,
                secs,
                gbps: gbps(self.sent, secs),
                sha256: if self.hash {
                    hex(&hasher.finalize())
                } else {
                    String::new()
                },
            });
            worked = true;
        }
        worked
    }

    fn poll_at(&self) -> Option<Instant> {
        match (self.amount, self.started, self.closing) {
            (Amount::Time(d), Some(t), false) => Some(t + d),
            _ => None,
        }
    }

    fn done(&self) -> bool {
        self.report.is_some() || self.error.is_some()
    }
}

/// Answers sockperf ping-pong messages on a UDP port.
#[derive(Debug)]
pub struct SockperfResponder {
    h: SocketHandle,
    /// Messages answered.
    pub answered: u64,
    /// Datagrams that held nothing to answer (warm-ups, malformed, server messages).
    pub ignored: u64,
    buf: Vec<u8>,
}

/// sockperf's default port.
pub const SOCKPERF_PORT: u16 = 11111;

impl SockperfResponder {
    /// A responder on `port`.
    pub fn new(sockets: &mut SocketSet<'static>, port: u16) -> Self {
        let mut u = udp_socket(256);
        let _ = u.bind(port);
        Self {
            h: sockets.add(u),
            answered: 0,
            ignored: 0,
            buf: vec![0; 2048],
        }
    }
}

impl Service for SockperfResponder {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, _now: Instant) -> bool {
        let u = sockets.get_mut::<udp::Socket>(self.h);
        let mut worked = false;
        while u.can_recv() {
            let Ok((n, meta)) = u.recv_slice(&mut self.buf) else {
                break;
            };
            worked = true;
            let mut any = false;
            for (range, reply) in sockperf::answers(&self.buf[..n]) {
                let msg = &self.buf[range];
                let ok = u.send_with(msg.len(), meta.endpoint, |out| {
                    out.copy_from_slice(msg);
                    reply.emit(out);
                    out.len()
                });
                if ok.is_ok() {
                    self.answered += 1;
                    any = true;
                }
            }
            if !any {
                self.ignored += 1;
            }
        }
        worked
    }
}

/// A sockperf-format ping-pong client: one message in flight, round-trip times recorded in
/// an HDR histogram (nanoseconds).
#[derive(Debug)]
pub struct PingPongClient {
    h: SocketHandle,
    remote: IpEndpoint,
    msg_size: usize,
    rounds: u64,
    warmup: u64,
    timeout: Duration,
    seq: u64,
    sent_at: Option<Instant>,
    buf: Vec<u8>,
    /// Round trips measured (after the warm-up).
    pub hist: hdrhistogram::Histogram<u64>,
    /// Requests that got no answer within the timeout.
    pub lost: u64,
    /// Round trips completed, warm-up included.
    pub completed: u64,
}

impl PingPongClient {
    /// A client from `local_port` to `remote`: `rounds` measured round trips after `warmup`
    /// unmeasured ones, messages of `msg_size` bytes, a request lost after `timeout`.
    pub fn new(
        sockets: &mut SocketSet<'static>,
        local_port: u16,
        remote: IpEndpoint,
        msg_size: usize,
        rounds: u64,
        warmup: u64,
    ) -> Result<Self, String> {
        if !(sockperf::HEADER_LEN..=1472).contains(&msg_size) {
            return Err(format!(
                "message size {msg_size} must be from {} to 1472 bytes",
                sockperf::HEADER_LEN
            ));
        }
        let mut u = udp_socket(16);
        u.bind(IpListenEndpoint {
            addr: None,
            port: local_port,
        })
        .map_err(|e| format!("bind UDP port {local_port}: {e}"))?;
        let hist = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| format!("histogram: {e}"))?;
        Ok(Self {
            h: sockets.add(u),
            remote,
            msg_size,
            rounds,
            warmup,
            timeout: Duration::from_millis(200),
            seq: 0,
            sent_at: None,
            buf: vec![0; 2048],
            hist,
            lost: 0,
            completed: 0,
        })
    }

    /// Counts a request as lost when no answer came within `t` (default 200 ms).
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    fn send_next(&mut self, u: &mut udp::Socket<'static>, now: Instant) -> bool {
        self.seq += 1;
        let hdr = sockperf::Header {
            seq: self.seq,
            flags: sockperf::FLAG_CLIENT | sockperf::FLAG_PONG,
            len: self.msg_size as u32,
        };
        let ok = u
            .send_with(self.msg_size, self.remote, |out| {
                out.fill(0);
                hdr.emit(out);
                out.len()
            })
            .is_ok();
        self.sent_at = ok.then_some(now);
        ok
    }
}

impl Service for PingPongClient {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        if self.done() {
            return false;
        }
        let u = sockets.get_mut::<udp::Socket>(self.h);
        let mut worked = false;
        while let Ok((n, meta)) = u.recv_slice(&mut self.buf) {
            worked = true;
            if meta.endpoint != self.remote {
                continue;
            }
            let Some(h) = sockperf::Header::parse(&self.buf[..n]) else {
                continue;
            };
            if h.flags & sockperf::FLAG_CLIENT != 0 || h.seq != self.seq {
                continue;
            }
            if let Some(t) = self.sent_at.take() {
                let rtt = now.duration_since(t).as_nanos() as u64;
                if self.completed >= self.warmup {
                    let _ = self.hist.record(rtt.max(1));
                }
                self.completed += 1;
            }
        }
        match self.sent_at {
            Some(t) if now.duration_since(t) > self.timeout => {
                self.lost += 1;
                self.sent_at = None;
            }
            _ => {}
        }
        if self.sent_at.is_none() && !self.done() && self.send_next(u, now) {
            worked = true;
        }
        worked
    }

    fn poll_at(&self) -> Option<Instant> {
        self.sent_at.map(|t| t + self.timeout)
    }

    fn done(&self) -> bool {
        self.completed + self.lost >= self.rounds + self.warmup
    }
}

/// The histogram's usual percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Percentiles {
    /// Percentiles of a nanosecond histogram.
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// The remote endpoint `ip:port`.
pub fn endpoint(ip: smoltcp::wire::Ipv4Address, port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(ip), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_is_deterministic_and_seed_dependent() {
        let (mut a, mut b, mut c) = (Pattern::new(1), Pattern::new(1), Pattern::new(2));
        let (mut x, mut y, mut z) = ([0u8; 100], [0u8; 100], [0u8; 100]);
        a.fill(&mut x);
        b.fill(&mut y);
        c.fill(&mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn the_pattern_does_not_depend_on_how_it_is_cut() {
        let mut whole = vec![0u8; 1000];
        Pattern::new(7).fill(&mut whole);
        let mut p = Pattern::new(7);
        let mut cut = vec![0u8; 1000];
        let mut at = 0;
        for n in [0, 1, 3, 8, 13, 64, 5, 31, 33, 842] {
            p.fill(&mut cut[at..at + n]);
            at += n;
        }
        assert_eq!(at, 1000);
        assert_eq!(cut, whole);
    }
}

//! Shared pieces of the `af_xdp` and `af_packet` tests: throw-away network namespaces joined
//! by a veth pair, a plain Linux packet socket on the peer side, a reflector and a tiny
//! ARP/ICMP responder driven through a [`Port`].
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use grant_pool::{BufHandle, Pool};
use pmd::{Frame, Port};

/// Experimental ethertype used for test frames.
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// Whether the test can run: root is needed. Without root the test is skipped, unless
/// FERRITE_E2E is set, in which case the missing prerequisite is a failure.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        return true;
    }
    if std::env::var_os("FERRITE_E2E").is_some() {
        panic!("{test}: needs root (network namespaces, AF_XDP/AF_PACKET) and FERRITE_E2E is set");
    }
    eprintln!("{test}: skipped, needs root for network namespaces and AF_XDP/AF_PACKET");
    false
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two fresh namespaces joined by a veth pair: `port_if` in `port_ns` (Ferrite's side) and
/// `peer_if` in `peer_ns` (the Linux side, address 10.77.0.1/24). Removed on drop.
pub struct VethPair {
    /// Namespace of the Ferrite side.
    pub port_ns: String,
    /// Namespace of the Linux side.
    pub peer_ns: String,
    /// Ferrite's interface.
    pub port_if: String,
    /// The Linux peer's interface.
    pub peer_if: String,
    /// The Linux peer's MAC.
    pub peer_mac: [u8; 6],
}

/// The Linux peer's address.
pub const PEER_IP: [u8; 4] = [10, 77, 0, 1];
/// The address the test's responder answers for.
pub const PORT_IP: [u8; 4] = [10, 77, 0, 2];

impl VethPair {
    /// Creates the namespaces and the pair; `extra` is appended to `ip link add` (e.g.
    /// `numrxqueues 2`).
    pub fn new(tag: &str, extra: &[&str]) -> Self {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let port_ns = format!("ferrite-{tag}-{pid}-{n}-a");
        let peer_ns = format!("ferrite-{tag}-{pid}-{n}-b");
        // Interface names: at most 15 bytes, unique per process and pair.
        let port_if = format!("fa{}x{n}", pid % 1_000_000);
        let peer_if = format!("fb{}x{n}", pid % 1_000_000);
        sh(&["ip", "netns", "add", &port_ns]);
        let pair = VethPair {
            port_ns,
            peer_ns,
            port_if,
            peer_if,
            peer_mac: [0; 6],
        };
        sh(&["ip", "netns", "add", &pair.peer_ns]);
        for ns in [&pair.port_ns, &pair.peer_ns] {
            // No IPv6 chatter (router solicitations, DAD) on the test link.
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        let mut args = vec!["ip", "-n", &pair.port_ns, "link", "add", &pair.port_if];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["type", "veth", "peer", "name", &pair.peer_if]);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["netns", &pair.peer_ns]);
        sh(&args);
        sh(&[
            "ip",
            "-n",
            &pair.port_ns,
            "link",
            "set",
            &pair.port_if,
            "up",
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.peer_ns,
            "link",
            "set",
            &pair.peer_if,
            "up",
        ]);
        sh(&[
            "ip",
            "-n",
            &pair.peer_ns,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            &pair.peer_if,
        ]);
        // Offloads off on the Linux side: frames on the wire are whole and checksummed.
        sh(&[
            "ip",
            "netns",
            "exec",
            &pair.peer_ns,
            "ethtool",
            "-K",
            &pair.peer_if,
            "tso",
            "off",
            "gso",
            "off",
            "tx",
            "off",
        ]);
        let mac = sh(&[
            "ip",
            "netns",
            "exec",
            &pair.peer_ns,
            "cat",
            &format!("/sys/class/net/{}/address", pair.peer_if),
        ]);
        let mut pair = pair;
        pair.peer_mac = parse_mac(mac.trim());
        pair
    }

    /// Runs `f` on a thread inside `ns` and returns its result (sockets it opens stay in
    /// that namespace).
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: setns on this (fresh) thread only, with a namespace fd we hold open.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// Runs `f` in the Ferrite side's namespace.
    pub fn in_port_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        Self::in_ns(&self.port_ns, f)
    }

    /// A Linux packet socket on the peer interface, for `ethertype` frames.
    pub fn peer_socket(&self, ethertype: u16) -> RawSock {
        let ifname = self.peer_if.clone();
        Self::in_ns(&self.peer_ns, move || RawSock::open(&ifname, ethertype))
    }

    /// Runs a command inside the peer namespace; returns (success, stdout+stderr).
    pub fn peer_cmd(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.peer_ns])
            .args(args)
            .output()
            .expect("run ip netns exec");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair with them.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.port_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer_ns])
            .status();
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("mac byte");
    }
    m
}

/// A plain Linux `AF_PACKET` socket (no Ferrite code), the independent peer of the tests.
pub struct RawSock {
    fd: OwnedFd,
    ifindex: i32,
}

impl RawSock {
    /// Opens and binds a socket for `ethertype` on `ifname` (current namespace).
    pub fn open(ifname: &str, ethertype: u16) -> Self {
        let c = std::ffi::CString::new(ifname).expect("ifname");
        // SAFETY: valid C string.
        let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
        assert!(ifindex > 0, "no interface {ifname}");
        // SAFETY: plain socket call, checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                ethertype.to_be() as i32,
            )
        };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: i32 = 1;
        let big: i32 = 16 << 20;
        // SAFETY: valid option values of the given sizes.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_IGNORE_OUTGOING,
                (&one as *const i32).cast(),
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const i32).cast(),
                4,
            );
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&big as *const i32).cast(),
                4,
            );
        }
        pmd::linux::bind_packet(fd.as_raw_fd(), ifindex as u32, ethertype, "bind")
            .unwrap_or_else(|e| panic!("bind: {e:?}"));
        RawSock { fd, ifindex }
    }

    /// Sends one whole Ethernet frame; retries briefly while the device queue is full.
    pub fn send(&self, frame: &[u8]) {
        for _ in 0..1000 {
            // SAFETY: `frame` is a valid buffer of its length.
            let r =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if r == frame.len() as isize {
                return;
            }
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)),
                "send: {e}"
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        panic!("send kept failing with ENOBUFS");
    }

    /// Receives one frame into `buf`, waiting at most `timeout`.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Option<usize> {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) };
        if r <= 0 {
            return None;
        }
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        (n >= 0).then_some(n as usize)
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

/// A test frame: dst, src, [`TEST_ETHERTYPE`], 4-byte sequence number, then `len - 18`
/// bytes of a pattern derived from the sequence number.
pub fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    for i in 0..len.saturating_sub(18) {
        f.push((seq as usize).wrapping_mul(31).wrapping_add(i * 7) as u8);
    }
    f
}

/// Frame length for sequence number `seq`: varies between 60 and 1514 bytes.
pub fn test_len(seq: u32) -> usize {
    60 + (seq as usize * 97) % (1514 - 60 + 1)
}

/// Reads a frame's bytes out of its pool.
pub fn frame_bytes(pool: &Pool, f: Frame) -> Vec<u8> {
    let r = pool.buf(f.buf).expect("frame in the port's pool");
    let mut v = vec![0u8; f.len as usize];
    r.read(0, &mut v).expect("frame within its buffer");
    v
}

/// Writes `bytes` into a fresh buffer from `port.alloc` and returns the frame.
pub fn alloc_frame(port: &mut dyn Port, pool: &Pool, bytes: &[u8]) -> Frame {
    let mut h = [BufHandle::from_raw(0)];
    assert_eq!(port.alloc(&mut h), 1, "port has a free buffer");
    pool.buf(h[0])
        .expect("alloc'd buffer in pool")
        .write(0, bytes)
        .expect("fits");
    Frame::new(h[0], bytes.len() as u16)
}

/// Returns every finished transmit buffer to the port.
pub fn reap(port: &mut dyn Port) -> usize {
    let mut done = [BufHandle::from_raw(0); 64];
    let mut total = 0;
    loop {
        let n = port.tx_done(&mut done);
        if n == 0 {
            return total;
        }
        port.reclaim(&done[..n]);
        total += n;
    }
}

/// Polls `port` for up to `timeout`, collecting frames whose ethertype is [`TEST_ETHERTYPE`]
/// (others are reclaimed), until `want` arrived.
pub fn collect(port: &mut dyn Port, pool: &Pool, want: usize, timeout: Duration) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); 32];
    let end = Instant::now() + timeout;
    while got.len() < want && Instant::now() < end {
        let n = port.rx_burst(&mut burst);
        for f in &burst[..n] {
            let b = frame_bytes(pool, *f);
            if b.len() >= 14 && u16::from_be_bytes([b[12], b[13]]) == TEST_ETHERTYPE {
                got.push(b);
            }
            port.reclaim(&[f.buf]);
        }
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    got
}

/// Internet checksum of `data`.
pub fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Turns an ARP request or ICMP echo request for `ip` into its reply, in place. Returns
/// whether `frame` was such a request.
pub fn answer(frame: &mut [u8], mac: [u8; 6], ip: [u8; 4]) -> bool {
    if frame.len() < 42 {
        return false;
    }
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    if et == 0x0806 && frame[20..22] == [0, 1] && frame[38..42] == ip {
        let (sha, spa): ([u8; 6], [u8; 4]) = (
            frame[22..28].try_into().expect("6"),
            frame[28..32].try_into().expect("4"),
        );
        frame[0..6].copy_from_slice(&sha);
        frame[6..12].copy_from_slice(&mac);
        frame[21] = 2;
        frame[22..28].copy_from_slice(&mac);
        frame[28..32].copy_from_slice(&ip);
        frame[32..38].copy_from_slice(&sha);
        frame[38..42].copy_from_slice(&spa);
        return true;
    }
    if et == 0x0800 && frame[0..6] == mac && frame[23] == 1 && frame[30..34] == ip {
        let ihl = (frame[14] & 0x0f) as usize * 4;
        let tot = u16::from_be_bytes([frame[16], frame[17]]) as usize;
        if ihl < 20 || 14 + tot > frame.len() || tot < ihl + 8 || frame[14 + ihl] != 8 {
            return false;
        }
        let src: [u8; 6] = frame[6..12].try_into().expect("6");
        frame[6..12].copy_from_slice(&mac);
        frame[0..6].copy_from_slice(&src);
        let sip: [u8; 4] = frame[26..30].try_into().expect("4");
        frame[26..30].copy_from_slice(&ip);
        frame[30..34].copy_from_slice(&sip);
        let icmp = 14 + ihl;
        frame[icmp] = 0;
        frame[icmp + 2] = 0;
        frame[icmp + 3] = 0;
        let c = csum(&frame[icmp..14 + tot]);
        frame[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
        return true;
    }
    false
}

/// Runs an ARP/ICMP responder for [`PORT_IP`] on `port` until `stop` returns true or
/// `limit` passes. Replies go out of the same buffer they came in (no copy). Returns the
/// number of replies sent.
pub fn respond_until(
    port: &mut dyn Port,
    pool: &Pool,
    limit: Duration,
    stop: &dyn Fn() -> bool,
) -> u64 {
    let mac = port.mac();
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); 64];
    let mut out = Vec::with_capacity(64);
    let mut buf = vec![0u8; 2048];
    let mut sent = 0;
    let end = Instant::now() + limit;
    while Instant::now() < end && !stop() {
        let n = port.rx_burst(&mut burst);
        out.clear();
        for f in &burst[..n] {
            let r = pool.buf(f.buf).expect("rx frame in pool");
            let b = &mut buf[..f.len as usize];
            r.read(0, b).expect("read");
            if answer(b, mac, PORT_IP) {
                r.write(0, b).expect("write");
                out.push(*f);
            } else {
                port.reclaim(&[f.buf]);
            }
        }
        let mut off = 0;
        let t0 = Instant::now();
        while off < out.len() && t0.elapsed() < Duration::from_secs(1) {
            off += port.tx_burst(&out[off..]);
            reap(port);
        }
        for f in &out[off..] {
            port.reclaim(&[f.buf]);
        }
        sent += off as u64;
        reap(port);
        if n == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    sent
}

/// Reflects every frame of [`TEST_ETHERTYPE`] back (MACs swapped, in place) until `frames`
/// were reflected and their transmissions completed, or `limit` passes; returns the number
/// reflected.
pub fn reflect(port: &mut dyn Port, pool: &Pool, frames: u64, limit: Duration) -> u64 {
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); 64];
    let mut pending: Vec<Frame> = Vec::with_capacity(4096);
    let mut done = 0u64;
    let mut completed = 0u64;
    let end = Instant::now() + limit;
    while (done < frames || completed < done) && Instant::now() < end {
        let n = port.rx_burst(&mut burst);
        for f in &burst[..n] {
            let r = pool.buf(f.buf).expect("rx frame in pool");
            let mut hdr = [0u8; 14];
            r.read(0, &mut hdr).expect("header");
            if u16::from_be_bytes([hdr[12], hdr[13]]) != TEST_ETHERTYPE {
                port.reclaim(&[f.buf]);
                continue;
            }
            let mut swapped = [0u8; 12];
            swapped[..6].copy_from_slice(&hdr[6..12]);
            swapped[6..].copy_from_slice(&hdr[..6]);
            r.write(0, &swapped).expect("write");
            pending.push(*f);
        }
        if !pending.is_empty() {
            let t = port.tx_burst(&pending);
            done += t as u64;
            pending.drain(..t);
        }
        completed += reap(port) as u64;
        if n == 0 {
            std::thread::yield_now();
        }
    }
    done
}

/// Drives a reflector test: a Linux packet socket on the peer sends `count` frames of
/// varying length with at most `window` unanswered, and checks every reflected frame comes
/// back intact and in order. Returns (sent, received intact).
pub fn reflector_run(
    pair: &VethPair,
    port: &mut dyn Port,
    pool: &Pool,
    count: u32,
    window: u32,
) -> (u32, u32) {
    use std::sync::Arc;
    let port_mac = port.mac();
    let peer_mac = pair.peer_mac;
    let tx = Arc::new(pair.peer_socket(TEST_ETHERTYPE));
    let rx = tx.clone();
    let received = Arc::new(AtomicU32::new(0));
    let bad = Arc::new(AtomicU32::new(0));
    let (r2, b2) = (received.clone(), bad.clone());
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 2048];
        let mut next = 0u32;
        while next < count {
            let Some(n) = rx.recv(&mut buf, Duration::from_secs(5)) else {
                break;
            };
            let seq = u32::from_be_bytes([buf[14], buf[15], buf[16], buf[17]]);
            let want = test_frame(peer_mac, port_mac, seq, test_len(seq));
            if seq != next || buf[..n] != want[..] {
                b2.fetch_add(1, Ordering::Relaxed);
            }
            next = seq.wrapping_add(1);
            r2.fetch_add(1, Ordering::Relaxed);
        }
    });
    let r3 = received.clone();
    let sender = std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..count {
            while seq.saturating_sub(r3.load(Ordering::Relaxed)) >= window {
                if start.elapsed() > Duration::from_secs(60) {
                    return seq;
                }
                std::thread::sleep(Duration::from_micros(20));
            }
            tx.send(&test_frame(port_mac, peer_mac, seq, test_len(seq)));
        }
        count
    });
    let reflected = reflect(port, pool, count as u64, Duration::from_secs(60));
    let sent = sender.join().expect("sender");
    receiver.join().expect("receiver");
    assert_eq!(
        reflected, sent as u64,
        "port reflected every frame it was sent"
    );
    assert_eq!(
        bad.load(Ordering::Relaxed),
        0,
        "every reflected frame intact and in order"
    );
    (sent, received.load(Ordering::Relaxed))
}

/// A copy of the running test binary that any user can execute (the build directory may not
/// be reachable by an unprivileged user), for running part of a test as `nobody`.
pub fn unprivileged_copy_of_self() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().expect("test binary");
    let name = exe
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let dst = std::env::temp_dir().join(format!("ferrite-probe-{}-{name}", std::process::id()));
    std::fs::copy(&exe, &dst).expect("copy test binary");
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dst
}

/// Runs this test binary's `unprivileged_probe` test as user `nobody` (65534) with no
/// capabilities, and returns everything it printed.
pub fn unprivileged_probe_output() -> String {
    let exe = unprivileged_copy_of_self();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "unprivileged_probe",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("FERRITE_PERM_PROBE", "1")
        .output()
        .expect("run setpriv");
    let _ = std::fs::remove_file(&exe);
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Checks a port's idle sleep: `wait` times out while there is nothing to receive, then
/// wakes for a frame the Linux peer sends, which arrives intact.
pub fn wait_rx_run<P: Port>(
    pair: &VethPair,
    port: &mut P,
    pool: &Pool,
    wait: impl Fn(&mut P, Duration) -> bool,
) {
    let mac = port.mac();
    assert!(
        !wait(port, Duration::from_millis(100)),
        "nothing to receive yet"
    );
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let peer_mac = pair.peer_mac;
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        peer.send(&test_frame(mac, peer_mac, 5, 80));
    });
    assert!(wait(port, Duration::from_secs(10)), "woke for the frame");
    sender.join().expect("sender");
    assert_eq!(
        collect(port, pool, 1, Duration::from_secs(1)),
        vec![test_frame(mac, pair.peer_mac, 5, 80)]
    );
}

/// Sends `count` distinct frames through `port` while the Linux peer does not read, then
/// reads them all: every one must be intact, so the port never reuses memory the kernel
/// still references for a frame in flight. Returns how many the peer got intact.
pub fn late_reader_run(pair: &VethPair, port: &mut dyn Port, pool: &Pool, count: u32) -> u32 {
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let mac = port.mac();
    let mut sent = 0u32;
    let t0 = Instant::now();
    let mut h = [BufHandle::from_raw(0); 1];
    while sent < count && t0.elapsed() < Duration::from_secs(30) {
        reap(port);
        if port.alloc(&mut h) == 0 {
            std::thread::yield_now();
            continue;
        }
        let f = test_frame(pair.peer_mac, mac, sent, 600 + (sent as usize % 700));
        pool.buf(h[0]).expect("buf").write(0, &f).expect("write");
        let fr = Frame::new(h[0], f.len() as u16);
        loop {
            if port.tx_burst(&[fr]) == 1 {
                break;
            }
            reap(port);
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "tx stalled at {sent}"
            );
        }
        sent += 1;
    }
    reap(port);
    let mut buf = vec![0u8; 2048];
    let mut intact = 0;
    for seq in 0..count {
        let Some(n) = peer.recv(&mut buf, Duration::from_secs(2)) else {
            break;
        };
        if buf[..n] == test_frame(pair.peer_mac, mac, seq, 600 + (seq as usize % 700))[..] {
            intact += 1;
        }
    }
    intact
}

/// A 20 000-byte TCP/IPv4 frame from the port to the peer, its checksum partial: DF set,
/// flags ACK|PSH|CWR, a sequence number that wraps during the frame.
pub fn super_frame(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let payload: Vec<u8> = (0..20_000usize).map(|i| (i % 251) as u8).collect();
    let mut f = offload::frame::Ipv4Frame {
        dst,
        src,
        src_ip: PORT_IP,
        dst_ip: PEER_IP,
        id: 0x1234,
        sport: 40000,
        dport: 5201,
        seq: 0xffff_f000,
        ack: 7,
        flags: 0x98,
        window: 0x0100,
        options: offload::frame::TIMESTAMPS.to_vec(),
        ..Default::default()
    }
    .build(&payload);
    offload::csum::set_pseudo_header_sum(&mut f).expect("TCP/IPv4");
    f
}

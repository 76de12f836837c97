//! The `af_xdp` port against a real Linux peer over veth, in throw-away network namespaces.
//! Root only (see `af_common::root_or_skip`).

mod af_common;

use std::time::Duration;

use af_common::*;
use grant_pool::PoolId;
use pmd::af_xdp::{AfXdpConfig, AfXdpError, AfXdpPort, AttachMode, BindMode};
use pmd::{LinkState, Port};

fn open(pair: &VethPair, attach: AttachMode, bind: BindMode) -> Result<AfXdpPort, AfXdpError> {
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(7));
    cfg.attach = attach;
    cfg.bind = bind;
    pair.in_port_ns(move || AfXdpPort::open(cfg))
}

/// Frames a Linux packet socket sends arrive intact in `rx_burst`; frames sent with
/// `tx_burst` arrive intact at the Linux socket; counters, MAC and link match.
fn intact(attach: AttachMode, bufs: usize) {
    let pair = VethPair::new("xi", &[]);
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(7));
    cfg.attach = attach;
    cfg.bind = BindMode::Copy;
    cfg.bufs = bufs;
    let mut port = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect("open af_xdp port");
    assert_eq!(port.pool().layout().count, bufs);
    let pool = port.pool().clone();
    let mac = port.mac();
    let sys_mac = sh(&[
        "ip",
        "netns",
        "exec",
        &pair.port_ns,
        "cat",
        &format!("/sys/class/net/{}/address", pair.port_if),
    ]);
    assert_eq!(
        mac,
        parse_mac(sys_mac.trim()),
        "MAC read from the interface"
    );
    assert!(matches!(port.link(), LinkState::Up { .. }), "veth is up");
    assert!(!port.is_zero_copy());

    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let lens = [60usize, 61, 64, 128, 1000, 1514];
    for (i, &l) in lens.iter().enumerate() {
        peer.send(&test_frame(mac, pair.peer_mac, i as u32, l));
    }
    let got = collect(&mut port, &pool, lens.len(), Duration::from_secs(5));
    assert_eq!(
        got.len(),
        lens.len(),
        "every frame the peer sent was received"
    );
    for (i, (g, &l)) in got.iter().zip(&lens).enumerate() {
        assert_eq!(
            g,
            &test_frame(mac, pair.peer_mac, i as u32, l),
            "frame {i} intact"
        );
    }

    let mut frames = Vec::new();
    for (i, &l) in lens.iter().enumerate() {
        let f = test_frame(pair.peer_mac, mac, 100 + i as u32, l);
        frames.push(alloc_frame(&mut port, &pool, &f));
    }
    assert_eq!(port.tx_burst(&frames), frames.len());
    let mut buf = vec![0u8; 2048];
    let mut back = 0;
    for (i, &l) in lens.iter().enumerate() {
        let n = loop {
            back += reap(&mut port);
            if let Some(n) = peer.recv(&mut buf, Duration::from_millis(100)) {
                break n;
            }
        };
        assert_eq!(
            buf[..n],
            test_frame(pair.peer_mac, mac, 100 + i as u32, l)[..],
            "tx frame {i} intact"
        );
    }
    let t0 = std::time::Instant::now();
    while back < frames.len() && t0.elapsed() < Duration::from_secs(2) {
        back += reap(&mut port);
    }
    assert_eq!(
        back,
        frames.len(),
        "every transmitted buffer came back through tx_done"
    );
    let s = port.stats();
    assert_eq!(s.rx_packets, lens.len() as u64);
    assert_eq!(s.rx_bytes, lens.iter().sum::<usize>() as u64);
    assert_eq!(s.tx_packets, lens.len() as u64);
    assert_eq!(s.errors, 0);
    // Promiscuous while open (app MACs behind the switch), not after.
    let show = || {
        sh(&[
            "ip",
            "-d",
            "-n",
            &pair.port_ns,
            "link",
            "show",
            "dev",
            &pair.port_if,
        ])
    };
    let shown = show();
    assert!(shown.contains("promiscuity 1"), "{shown}");
    drop(port);
    let shown = show();
    assert!(shown.contains("promiscuity 0"), "{shown}");
}

#[test]
fn generic_mode_frames_arrive_intact_both_ways() {
    if root_or_skip("generic_mode_frames_arrive_intact_both_ways") {
        // A small pool: the rings shrink to fit it.
        intact(AttachMode::Generic, 256);
    }
}

#[test]
fn native_mode_frames_arrive_intact_both_ways() {
    if root_or_skip("native_mode_frames_arrive_intact_both_ways") {
        intact(AttachMode::Native, 4096);
    }
}

fn reflect_100k(attach: AttachMode) {
    let pair = VethPair::new("xr", &[]);
    let mut port = open(&pair, attach, BindMode::Copy).expect("open af_xdp port");
    let pool = port.pool().clone();
    let t0 = std::time::Instant::now();
    let (sent, received) = reflector_run(&pair, &mut port, &pool, 100_000, 256);
    eprintln!(
        "{attach:?}: {received} of {sent} reflected in {:?}; {:?}; kicks {}",
        t0.elapsed(),
        port.kernel_stats(),
        port.kicks()
    );
    assert_eq!(sent, 100_000);
    assert_eq!(received, 100_000, "every frame came back to the Linux peer");
    let s = port.stats();
    assert_eq!(s.rx_dropped, 0);
    assert_eq!(s.tx_packets, 100_000);
}

#[test]
fn generic_mode_reflects_100k_frames_without_loss() {
    if root_or_skip("generic_mode_reflects_100k_frames_without_loss") {
        reflect_100k(AttachMode::Generic);
    }
}

#[test]
fn native_mode_reflects_100k_frames_without_loss() {
    if root_or_skip("native_mode_reflects_100k_frames_without_loss") {
        reflect_100k(AttachMode::Native);
    }
}

/// Linux `ping`, including a 10,000-request flood, answered through the port by a small
/// ARP/ICMP responder: zero loss.
#[test]
fn linux_ping_and_flood_ping_get_answers() {
    if !root_or_skip("linux_ping_and_flood_ping_get_answers") {
        return;
    }
    let pair = VethPair::new("xp", &[]);
    let mut port = open(&pair, AttachMode::Native, BindMode::Auto).expect("open af_xdp port");
    let pool = port.pool().clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    let ns = pair.peer_ns.clone();
    let pinger = std::thread::spawn(move || {
        let run = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(args)
                .output()
                .expect("run ping");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let a = run(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.77.0.2"]);
        let b = run(&["ping", "-f", "-c", "10000", "-w", "60", "10.77.0.2"]);
        d2.store(true, std::sync::atomic::Ordering::Relaxed);
        (a, b)
    });
    let replies = respond_until(&mut port, &pool, Duration::from_secs(90), &|| {
        done.load(std::sync::atomic::Ordering::Relaxed)
    });
    let (a, b) = pinger.join().expect("pinger");
    eprintln!("{a}\n{b}");
    assert!(
        a.contains("3 received") && a.contains(" 0% packet loss"),
        "ping: {a}"
    );
    assert!(
        b.contains("10000 received") && b.contains(" 0% packet loss"),
        "flood ping: {b}"
    );
    assert!(replies >= 10_003, "responder sent {replies} replies");
}

/// Zero-copy on veth: this kernel's veth has no AF_XDP zero-copy support; the port says so
/// clearly, and `Auto` falls back to copy mode and works.
#[test]
fn zero_copy_on_veth_is_refused_clearly_and_auto_falls_back() {
    if !root_or_skip("zero_copy_on_veth_is_refused_clearly_and_auto_falls_back") {
        return;
    }
    let pair = VethPair::new("xz", &[]);
    match open(&pair, AttachMode::Native, BindMode::ZeroCopy) {
        Err(e @ AfXdpError::ZeroCopyUnsupported { .. }) => {
            eprintln!("zero-copy on veth: {e}");
            assert!(e.to_string().contains(&pair.port_if), "{e}");
        }
        Err(e) => panic!("unexpected error for zero-copy on veth: {e}"),
        Ok(mut port) => {
            // A kernel whose veth does zero-copy: it must then carry frames.
            assert!(port.is_zero_copy());
            let pool = port.pool().clone();
            let mac = port.mac();
            let peer = pair.peer_socket(TEST_ETHERTYPE);
            peer.send(&test_frame(mac, pair.peer_mac, 1, 100));
            assert_eq!(
                collect(&mut port, &pool, 1, Duration::from_secs(5)).len(),
                1
            );
            return;
        }
    }
    let mut port = open(&pair, AttachMode::Native, BindMode::Auto).expect("auto bind");
    assert!(!port.is_zero_copy(), "fell back to copy mode");
    let pool = port.pool().clone();
    let mac = port.mac();
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    peer.send(&test_frame(mac, pair.peer_mac, 1, 100));
    let got = collect(&mut port, &pool, 1, Duration::from_secs(5));
    assert_eq!(got, vec![test_frame(mac, pair.peer_mac, 1, 100)]);
}

#[test]
fn errors_name_the_problem() {
    if !root_or_skip("errors_name_the_problem") {
        return;
    }
    let pair = VethPair::new("xe", &[]);
    let mut cfg = AfXdpConfig::new("ferrite-nonexistent0", PoolId(1));
    cfg.bind = BindMode::Copy;
    let e = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect_err("no such interface");
    assert!(matches!(e, AfXdpError::InterfaceNotFound(_)), "{e}");

    let _first = open(&pair, AttachMode::Generic, BindMode::Copy).expect("first port");
    // A second, unshared program on the same interface.
    let e = open(&pair, AttachMode::Generic, BindMode::Copy).expect_err("XDP already attached");
    assert!(matches!(e, AfXdpError::XdpBusy { .. }), "{e}");
    assert!(e.to_string().contains("xdp off"), "{e}");

    // A queue the interface does not have, on a shared program.
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(2));
    cfg.bind = BindMode::Copy;
    cfg.queue = 5;
    cfg.program = Some(_first.program());
    let e = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect_err("queue 5 on veth");
    assert!(
        matches!(e, AfXdpError::QueueOutOfRange { queue: 5, .. }),
        "{e}"
    );

    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(2));
    cfg.bufs = 100;
    let e = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect_err("100 buffers");
    assert!(matches!(e, AfXdpError::Config(_)), "{e}");

    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(2));
    cfg.buf_size = 1024;
    let e = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect_err("1 KiB chunks");
    assert!(matches!(e, AfXdpError::Config(_)), "{e}");
}

/// Two queues of one interface share one program; each gets its own socket and pool.
#[test]
fn two_queues_share_one_program() {
    if !root_or_skip("two_queues_share_one_program") {
        return;
    }
    let pair = VethPair::new("xq", &["numrxqueues", "2", "numtxqueues", "2"]);
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(3));
    cfg.bind = BindMode::Copy;
    cfg.attach = AttachMode::Native;
    let q0 = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect("queue 0");
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(4));
    cfg.bind = BindMode::Copy;
    cfg.queue = 1;
    cfg.program = Some(q0.program());
    let q1 = pair
        .in_port_ns(move || AfXdpPort::open(cfg))
        .expect("queue 1");
    assert_ne!(q0.pool().id(), q1.pool().id());
    let shown = sh(&[
        "ip",
        "-n",
        &pair.port_ns,
        "link",
        "show",
        "dev",
        &pair.port_if,
    ]);
    assert!(shown.contains("prog/xdp id"), "program attached: {shown}");
    drop(q0);
    let shown = sh(&[
        "ip",
        "-n",
        &pair.port_ns,
        "link",
        "show",
        "dev",
        &pair.port_if,
    ]);
    assert!(
        shown.contains("prog/xdp id"),
        "still attached for queue 1: {shown}"
    );
    drop(q1);
    let shown = sh(&[
        "ip",
        "-n",
        &pair.port_ns,
        "link",
        "show",
        "dev",
        &pair.port_if,
    ]);
    assert!(
        !shown.contains("prog/xdp"),
        "detached with the last port: {shown}"
    );
    // Both closed: the link is gone and a fresh port attaches again.
    open(&pair, AttachMode::Native, BindMode::Copy).expect("reattach after both closed");
}

/// A server killed with SIGKILL leaves no XDP program behind: a restarted one attaches.
#[test]
fn reattaches_after_the_holder_is_killed() {
    if !root_or_skip("reattaches_after_the_holder_is_killed") {
        return;
    }
    let pair = VethPair::new("xk", &[]);
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.port_ns])
        .arg(&exe)
        .args([
            "--exact",
            "holder_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("FERRITE_XDP_HOLDER_IF", &pair.port_if)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn holder");
    let mut out = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    let t0 = std::time::Instant::now();
    while !seen.contains("holder attached") && t0.elapsed() < Duration::from_secs(20) {
        let mut b = [0u8; 256];
        let n = std::io::Read::read(&mut out, &mut b).unwrap_or(0);
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&b[..n]));
    }
    assert!(seen.contains("holder attached"), "holder output: {seen}");
    let e = open(&pair, AttachMode::Native, BindMode::Copy).expect_err("held by the child");
    assert!(matches!(e, AfXdpError::XdpBusy { .. }), "{e}");
    // SIGKILL: no destructor runs.
    // SAFETY: signals our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    // `ip netns exec` execs the test binary, so the killed pid is the holder itself. At
    // once, as a spare taking over does: the kernel is still tearing the holder down and
    // holds its link and queue for a while; opening waits for them.
    let mut port = open(&pair, AttachMode::Native, BindMode::Copy)
        .unwrap_or_else(|e| panic!("reattach after SIGKILL: {e}"));
    let _ = child.wait();
    let pool = port.pool().clone();
    let mac = port.mac();
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    peer.send(&test_frame(mac, pair.peer_mac, 9, 200));
    assert_eq!(
        collect(&mut port, &pool, 1, Duration::from_secs(5)).len(),
        1
    );
}

/// Not a test on its own: the process `reattaches_after_the_holder_is_killed` starts and
/// kills. Does nothing unless FERRITE_XDP_HOLDER_IF is set.
#[test]
fn holder_process() {
    let Some(ifname) = std::env::var_os("FERRITE_XDP_HOLDER_IF") else {
        return;
    };
    let mut cfg = AfXdpConfig::new(&ifname.to_string_lossy(), PoolId(1));
    cfg.bind = BindMode::Copy;
    let _port = AfXdpPort::open(cfg).expect("holder opens the port");
    // The kernel releases a dead process's files from the highest number down, and each
    // packet socket's release waits for an RCU grace period: like a server's other sockets,
    // these keep the link and queue held for a while after the holder is killed.
    let _slow: Vec<std::os::fd::OwnedFd> = (0..4)
        .map(|_| {
            // SAFETY: plain socket(2); the result is checked before it is owned.
            let fd =
                unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0, "socket(AF_PACKET)");
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
        .collect();
    println!("holder attached");
    std::thread::sleep(Duration::from_secs(30));
}

/// Handles the caller does not hold, or of pools the port cannot send from, never reach the
/// wire and never corrupt the port's accounting; each is counted.
#[test]
fn hostile_handles_are_refused_and_counted() {
    if !root_or_skip("hostile_handles_are_refused_and_counted") {
        return;
    }
    let pair = VethPair::new("xh", &[]);
    let mut port = open(&pair, AttachMode::Generic, BindMode::Copy).expect("open");
    let pool = port.pool().clone();
    let id = pool.id();
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    // A buffer of the port's pool the caller never got (it sits in the fill ring or the
    // free list), one of a foreign pool, one with an index past the pool's end.
    let not_held = pmd::Frame::new(
        grant_pool::BufHandle::new(id, grant_pool::BufIdx(0)).expect("h"),
        60,
    );
    let foreign = pmd::Frame::new(
        grant_pool::BufHandle::new(PoolId(99), grant_pool::BufIdx(0)).expect("h"),
        60,
    );
    let past_end = pmd::Frame::new(
        grant_pool::BufHandle::new(id, grant_pool::BufIdx(1 << 20)).expect("h"),
        60,
    );
    assert_eq!(port.tx_burst(&[not_held, foreign, past_end]), 3);
    let mut done = [grant_pool::BufHandle::from_raw(0); 8];
    let n = port.tx_done(&mut done);
    assert_eq!(
        &done[..n],
        &[foreign.buf],
        "only the foreign handle is handed back"
    );
    let mut buf = [0u8; 2048];
    assert!(
        peer.recv(&mut buf, Duration::from_millis(300)).is_none(),
        "nothing was sent"
    );
    // Reclaiming what the caller does not hold, twice the same buffer, or a foreign one.
    let mut h = [grant_pool::BufHandle::from_raw(0)];
    assert_eq!(port.alloc(&mut h), 1);
    port.reclaim(&[h[0], h[0], foreign.buf]);
    let s = port.stats();
    assert_eq!(s.tx_packets, 0);
    assert_eq!(
        s.errors,
        3 + 2,
        "three refused frames, a double and a foreign reclaim"
    );
    // The port still works: a legitimate frame goes out intact.
    let f = test_frame(pair.peer_mac, port.mac(), 1, 300);
    let fr = alloc_frame(&mut port, &pool, &f);
    assert_eq!(port.tx_burst(&[fr]), 1);
    let n = peer
        .recv(&mut buf, Duration::from_secs(2))
        .expect("legit frame");
    assert_eq!(buf[..n], f[..]);
}

/// An idle poller can sleep on the port: `wait_rx` times out with nothing to receive and
/// wakes when a frame arrives.
#[test]
fn wait_rx_sleeps_until_a_frame_arrives() {
    if !root_or_skip("wait_rx_sleeps_until_a_frame_arrives") {
        return;
    }
    let pair = VethPair::new("xw", &[]);
    let mut port = open(&pair, AttachMode::Native, BindMode::Copy).expect("open");
    let pool = port.pool().clone();
    wait_rx_run(&pair, &mut port, &pool, |p, t| p.wait_rx(t));
}

/// Without privileges the error names what is missing. Runs this test binary again as user
/// `nobody` (65534) for the unprivileged half.
#[test]
fn without_privileges_the_error_names_the_capability() {
    if !root_or_skip("without_privileges_the_error_names_the_capability") {
        return;
    }
    let text = unprivileged_probe_output();
    assert!(text.contains("probe: Permission"), "{text}");
    assert!(
        text.contains("CAP_NET_RAW") && text.contains("CAP_BPF"),
        "{text}"
    );
}

/// Not a test on its own: the unprivileged half of the test above.
#[test]
fn unprivileged_probe() {
    if std::env::var_os("FERRITE_PERM_PROBE").is_none() {
        return;
    }
    let mut cfg = AfXdpConfig::new("lo", PoolId(1));
    cfg.bind = BindMode::Copy;
    cfg.hugepages = false;
    match AfXdpPort::open(cfg) {
        Err(e @ AfXdpError::Permission { .. }) => println!("probe: Permission: {e}"),
        Err(e) => println!("probe: other: {e:?}"),
        Ok(_) => println!("probe: opened"),
    }
}

/// Frames stay intact when the Linux peer reads them only after all were sent (more than
/// the UMEM's spare buffers): a buffer is reused only after its completion.
#[test]
fn frames_stay_intact_when_the_peer_reads_late() {
    if !root_or_skip("frames_stay_intact_when_the_peer_reads_late") {
        return;
    }
    let pair = VethPair::new("xl", &[]);
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(7));
    cfg.bind = BindMode::Copy;
    cfg.bufs = 512;
    let mut port = pair.in_port_ns(move || AfXdpPort::open(cfg)).expect("open");
    let pool = port.pool().clone();
    assert_eq!(late_reader_run(&pair, &mut port, &pool, 3000), 3000);
}

/// A warm spare's port: prepared while another port serves the queue, it takes no frame off
/// it; once the other is gone and it is activated, it receives what arrives from then on.
#[test]
fn a_prepared_port_takes_nothing_until_it_is_activated() {
    if !root_or_skip("a_prepared_port_takes_nothing_until_it_is_activated") {
        return;
    }
    let pair = VethPair::new("xw", &[]);
    let mut serving = open(&pair, AttachMode::Generic, BindMode::Copy).expect("serving port");
    let (pool, mac) = (serving.pool().clone(), serving.mac());
    let mut cfg = AfXdpConfig::new(&pair.port_if, PoolId(8));
    cfg.attach = AttachMode::Generic;
    cfg.bind = BindMode::Copy;
    let prepared = pair
        .in_port_ns(move || AfXdpPort::prepare(cfg))
        .expect("prepare");
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    for i in 0..4 {
        peer.send(&test_frame(mac, pair.peer_mac, i, 100));
    }
    let got = collect(&mut serving, &pool, 4, Duration::from_secs(5));
    assert_eq!(got.len(), 4, "the serving port gets every frame");
    drop(serving);
    let mut port = pair
        .in_port_ns(move || prepared.activate())
        .expect("activate");
    let pool = port.pool().clone();
    for i in 10..14 {
        peer.send(&test_frame(mac, pair.peer_mac, i, 100));
    }
    let got = collect(&mut port, &pool, 5, Duration::from_secs(2));
    let want: Vec<Vec<u8>> = (10..14)
        .map(|i| test_frame(mac, pair.peer_mac, i, 100))
        .collect();
    assert_eq!(got, want, "only the frames sent after the activation");
}

/// On an interface with TSO the port takes every frame as it is and transmits from a pool
/// granted to it: a frame too large for a chunk (a 20 000-byte TCP segment with its segment
/// size, checksum partial) reaches the peer whole through the port's packet socket, a small
/// one is copied into a chunk with its MACs and its partial checksum completed, and every
/// handle comes back. Without TSO it takes neither and refuses the grant.
#[test]
fn sends_large_frames_whole_from_a_granted_pool() {
    use grant_pool::{BufIdx, Pool, PoolLayout};
    use pmd::linux::Mmap;
    use pmd::{Frame, TxOffloads};
    if !root_or_skip("sends_large_frames_whole_from_a_granted_pool") {
        return;
    }
    let pair = VethPair::new("xg", &[]);
    let mut port = open(&pair, AttachMode::Generic, BindMode::Copy).expect("open");
    assert_eq!(port.tx_offloads(), TxOffloads::ALL);
    let layout = PoolLayout::new(65536, 4).expect("layout");
    let mem = Mmap::anonymous(layout.bytes(), false).expect("pool memory");
    let app = Pool::new(PoolId(9), layout, mem.into_memory()).expect("app pool");
    assert!(Port::grant_tx_pool(&mut port, &app));
    assert!(port.tx_pools().contains(PoolId(9)));

    let peer = pair.peer_socket(0x0800);
    let big = super_frame(port.mac(), pair.peer_mac);
    let mut small = super_frame(port.mac(), pair.peer_mac);
    small.truncate(14 + 20 + 32 + 100);
    small[16..18].copy_from_slice(&((20 + 32 + 100) as u16).to_be_bytes());
    small[24..26].fill(0);
    let ip = offload::csum::fold(offload::csum::sum16(0, &small[14..34]));
    small[24..26].copy_from_slice(&ip.to_be_bytes());
    offload::csum::set_pseudo_header_sum(&mut small).expect("TCP/IPv4");
    let mut frames = Vec::new();
    for (i, (b, meta)) in [
        (&big, offload::FrameMeta::partial(1448)),
        (&small, offload::FrameMeta::partial(0)),
    ]
    .into_iter()
    .enumerate()
    {
        let h = app.handle(BufIdx(i as u32)).expect("handle");
        app.buf(h).expect("buf").write(0, b).expect("write");
        let mut f = Frame::new(h, b.len() as u16);
        f.meta = meta.bits();
        frames.push(f);
    }
    // The MACs the switch decided on go over whatever the buffer holds.
    let mut wrong = small.clone();
    wrong[..12].fill(0xee);
    app.buf(frames[1].buf)
        .expect("buf")
        .write(0, &wrong[..12])
        .expect("write");
    let mut macs = [[0u8; 12]; 2];
    for (m, f) in macs.iter_mut().zip([&big, &small]) {
        m.copy_from_slice(&f[..12]);
    }
    assert_eq!(port.tx_burst_with_macs(&frames, &macs), 2);

    let mut want_big = big.clone();
    offload::csum::complete_l4_checksum(&mut want_big);
    let mut want_small = small.clone();
    offload::csum::complete_l4_checksum(&mut want_small);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = std::time::Instant::now();
    while got.len() < 2 && t0.elapsed() < Duration::from_secs(3) {
        if let Some(n) = peer.recv(&mut buf, Duration::from_millis(200))
            && n >= 54
            && buf[23] == 6
        {
            got.push(buf[..n].to_vec());
        }
    }
    assert_eq!(got.len(), 2, "frames at the peer");
    let (a, b) = if got[0].len() > got[1].len() {
        (&mut got[0].clone(), &got[1])
    } else {
        (&mut got[1].clone(), &got[0])
    };
    assert_eq!(a.len(), big.len(), "the large frame arrives whole");
    // veth leaves the super-frame's checksum partial for the peer's stack.
    offload::csum::complete_l4_checksum(a);
    assert_eq!(*a, want_big);
    assert_eq!(
        *b, want_small,
        "the small frame: its MACs and checksum completed"
    );
    let mut done = [grant_pool::BufHandle::from_raw(0); 8];
    let n = port.tx_done(&mut done);
    let mut back: Vec<u32> = done[..n].iter().map(|h| h.raw()).collect();
    back.sort_unstable();
    let mut want: Vec<u32> = frames.iter().map(|f| f.buf.raw()).collect();
    want.sort_unstable();
    assert_eq!(back, want, "both handles handed back");
    assert_eq!(port.stats().tx_packets, 2);
    assert!(Port::revoke_tx_pool(&mut port, PoolId(9)));
    assert!(!port.tx_pools().contains(PoolId(9)));
    drop(port);

    sh(&[
        "ip",
        "netns",
        "exec",
        &pair.port_ns,
        "ethtool",
        "-K",
        &pair.port_if,
        "tso",
        "off",
    ]);
    let mut port = open(&pair, AttachMode::Generic, BindMode::Copy).expect("open");
    assert_eq!(port.tx_offloads(), TxOffloads::NONE);
    assert!(!Port::grant_tx_pool(&mut port, &app));
    drop(port);
}

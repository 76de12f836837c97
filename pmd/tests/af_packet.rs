//! The `af_packet` port against a real Linux peer over veth, in throw-away network
//! namespaces. Root only (see `af_common::root_or_skip`).

mod af_common;

use std::time::{Duration, Instant};

use af_common::*;
use grant_pool::{BufHandle, BufIdx, Pool, PoolId, PoolLayout};
use pmd::af_packet::{AfPacketConfig, AfPacketError, AfPacketPort};
use pmd::linux::Mmap;
use pmd::{Frame, LinkState, Port};

fn open(pair: &VethPair, cfg: impl FnOnce(&mut AfPacketConfig)) -> AfPacketPort {
    let mut c = AfPacketConfig::new(&pair.port_if, PoolId(5));
    cfg(&mut c);
    pair.in_port_ns(move || AfPacketPort::open(c))
        .expect("open af_packet port")
}

#[test]
fn frames_arrive_intact_both_ways() {
    if !root_or_skip("frames_arrive_intact_both_ways") {
        return;
    }
    let pair = VethPair::new("pi", &[]);
    let mut port = open(&pair, |_| {});
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
    assert_eq!(mac, parse_mac(sys_mac.trim()));
    assert!(
        matches!(port.link(), LinkState::Up { mbps: 10000 }),
        "{:?}",
        port.link()
    );

    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let lens = [60usize, 61, 64, 128, 1000, 1514];
    for (i, &l) in lens.iter().enumerate() {
        peer.send(&test_frame(mac, pair.peer_mac, i as u32, l));
    }
    let got = collect(&mut port, &pool, lens.len(), Duration::from_secs(5));
    assert_eq!(got.len(), lens.len());
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
    // The copy into the kernel ring is done: the buffers are back at once.
    assert_eq!(reap(&mut port), frames.len());
    let mut buf = vec![0u8; 2048];
    for (i, &l) in lens.iter().enumerate() {
        let n = peer
            .recv(&mut buf, Duration::from_secs(2))
            .expect("peer got the frame");
        assert_eq!(
            buf[..n],
            test_frame(pair.peer_mac, mac, 100 + i as u32, l)[..],
            "tx frame {i} intact"
        );
    }
    let s = port.stats();
    assert_eq!(s.rx_packets, lens.len() as u64);
    assert_eq!(s.rx_bytes, lens.iter().sum::<usize>() as u64);
    assert_eq!(s.tx_packets, lens.len() as u64);
    assert_eq!(s.errors, 0);
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
    assert!(
        shown.contains("promiscuity 1"),
        "promiscuous while open: {shown}"
    );
    drop(port);
    let shown = show();
    assert!(shown.contains("promiscuity 0"), "not after close: {shown}");
}

/// A VLAN tag the kernel strips into metadata is back in the frame the port delivers.
#[test]
fn vlan_tag_is_restored_on_receive() {
    if !root_or_skip("vlan_tag_is_restored_on_receive") {
        return;
    }
    let pair = VethPair::new("pv", &[]);
    let mut port = open(&pair, |_| {});
    let pool = port.pool().clone();
    let mac = port.mac();
    let peer = pair.peer_socket(0x8100);
    let mut f = Vec::new();
    f.extend_from_slice(&mac);
    f.extend_from_slice(&pair.peer_mac);
    f.extend_from_slice(&[0x81, 0x00, 0x20, 0x2a]); // priority 1, VLAN 42
    f.extend_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    f.extend((0..100u8).map(|i| i ^ 0x5a));
    peer.send(&f);
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); 8];
    let t0 = Instant::now();
    let got = loop {
        let n = port.rx_burst(&mut burst);
        let found = burst[..n]
            .iter()
            .map(|fr| frame_bytes(&pool, *fr))
            .find(|b| b.len() > 16 && b[12..14] == [0x81, 0x00]);
        for fr in &burst[..n] {
            port.reclaim(&[fr.buf]);
        }
        if let Some(b) = found {
            break b;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "tagged frame not received"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(got, f, "tagged frame intact, tag included");
}

#[test]
fn reflects_100k_frames_without_loss() {
    if !root_or_skip("reflects_100k_frames_without_loss") {
        return;
    }
    let pair = VethPair::new("pr", &[]);
    let mut port = open(&pair, |_| {});
    let pool = port.pool().clone();
    let t0 = Instant::now();
    let (sent, received) = reflector_run(&pair, &mut port, &pool, 100_000, 256);
    eprintln!(
        "af_packet: {received} of {sent} reflected in {:?}; {:?}",
        t0.elapsed(),
        port.kernel_stats()
    );
    assert_eq!(sent, 100_000);
    assert_eq!(received, 100_000, "every frame came back to the Linux peer");
    let s = port.stats();
    assert_eq!(s.rx_dropped, 0);
    assert_eq!(s.tx_packets, 100_000);
    assert_eq!(s.errors, 0);
}

#[test]
fn linux_ping_and_flood_ping_get_answers() {
    if !root_or_skip("linux_ping_and_flood_ping_get_answers") {
        return;
    }
    let pair = VethPair::new("pp", &[]);
    let mut port = open(&pair, |_| {});
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

/// Frames in another pool the port was given read access to go out with one copy, straight
/// from that pool; a frame of a pool it cannot read is refused, counted and handed back.
#[test]
fn transmits_straight_from_a_readable_pool() {
    if !root_or_skip("transmits_straight_from_a_readable_pool") {
        return;
    }
    let pair = VethPair::new("pt", &[]);
    let mut port = open(&pair, |_| {});
    let mac = port.mac();
    let layout = PoolLayout::new(2048, 64).expect("layout");
    let mem = Mmap::anonymous(layout.bytes(), false).expect("pool memory");
    let app = Pool::new(PoolId(9), layout, mem.into_memory()).expect("app pool");
    assert!(!port.tx_pools().contains(PoolId(9)));
    // Through the trait, as a switch holding a `dyn Port` grants it.
    assert!(Port::grant_tx_pool(&mut port, &app));
    assert!(port.tx_pools().contains(PoolId(9)));
    assert!(!port.own_pools().contains(PoolId(9)));

    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let mut frames = Vec::new();
    for i in 0..10u32 {
        let h = app.handle(BufIdx(i)).expect("handle");
        let b = test_frame(pair.peer_mac, mac, i, test_len(i));
        app.buf(h).expect("buf").write(0, &b).expect("write");
        frames.push(Frame::new(h, b.len() as u16));
    }
    // One frame from a pool the port cannot read.
    let stranger = Frame::new(BufHandle::new(PoolId(11), BufIdx(0)).expect("handle"), 100);
    frames.push(stranger);
    assert_eq!(port.tx_burst(&frames), frames.len());
    let mut done = [BufHandle::from_raw(0); 32];
    let n = port.tx_done(&mut done);
    let mut back: Vec<u32> = done[..n].iter().map(|h| h.raw()).collect();
    back.sort_unstable();
    let mut want: Vec<u32> = frames.iter().map(|f| f.buf.raw()).collect();
    want.sort_unstable();
    assert_eq!(back, want, "every buffer handed back, the refused one too");
    let mut buf = vec![0u8; 2048];
    for i in 0..10u32 {
        let n = peer
            .recv(&mut buf, Duration::from_secs(2))
            .expect("frame at peer");
        assert_eq!(buf[..n], test_frame(pair.peer_mac, mac, i, test_len(i))[..]);
    }
    assert!(
        peer.recv(&mut buf, Duration::from_millis(200)).is_none(),
        "the refused frame was not sent"
    );
    let s = port.stats();
    assert_eq!(s.tx_packets, 10);
    assert_eq!(s.tx_dropped, 1);
    assert!(Port::revoke_tx_pool(&mut port, PoolId(9)));
    assert!(!port.tx_pools().contains(PoolId(9)));
    drop(port);
}

/// Frames handed over with the MACs a switch checked leave with those MACs, whatever their
/// buffers hold by then (the pool's owner can rewrite them at any time); the rest of each
/// frame comes from its buffer. A frame too short to carry its MACs is refused.
#[test]
fn transmit_with_checked_macs_puts_those_macs_on_the_wire() {
    if !root_or_skip("transmit_with_checked_macs_puts_those_macs_on_the_wire") {
        return;
    }
    let pair = VethPair::new("pm", &[]);
    let mut port = open(&pair, |_| {});
    let mac = port.mac();
    let layout = PoolLayout::new(2048, 64).expect("layout");
    let mem = Mmap::anonymous(layout.bytes(), false).expect("pool memory");
    let app = Pool::new(PoolId(9), layout, mem.into_memory()).expect("app pool");
    assert!(Port::grant_tx_pool(&mut port, &app));
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let spoofed = [0x02, 0x66, 0x66, 0x66, 0x66, 0x66];
    let mut frames = Vec::new();
    let mut macs = Vec::new();
    for i in 0..8u32 {
        let h = app.handle(BufIdx(i)).expect("handle");
        let want = test_frame(pair.peer_mac, mac, i, test_len(i));
        // What the buffer holds when the port reads it: another source.
        let mut held = want.clone();
        held[6..12].copy_from_slice(&spoofed);
        app.buf(h).expect("buf").write(0, &held).expect("write");
        frames.push(Frame::new(h, want.len() as u16));
        let mut m = [0u8; 12];
        m.copy_from_slice(&want[..12]);
        macs.push(m);
    }
    let short = app.handle(BufIdx(20)).expect("handle");
    frames.push(Frame::new(short, 10));
    macs.push([0x02; 12]);
    assert_eq!(port.tx_burst_with_macs(&frames, &macs), frames.len());
    let mut buf = vec![0u8; 2048];
    for i in 0..8u32 {
        let n = peer
            .recv(&mut buf, Duration::from_secs(2))
            .expect("frame at peer");
        assert_eq!(
            buf[..n],
            test_frame(pair.peer_mac, mac, i, test_len(i))[..],
            "frame {i} left with the checked MACs and its own bytes"
        );
    }
    assert!(peer.recv(&mut buf, Duration::from_millis(200)).is_none());
    let s = port.stats();
    assert_eq!(s.tx_packets, 8);
    assert_eq!(s.tx_dropped, 1, "the frame shorter than its MACs");
    let mut done = [BufHandle::from_raw(0); 32];
    assert_eq!(port.tx_done(&mut done), frames.len());
    drop(port);
}

/// With a small ring that is not polled, the kernel drops frames, and the port's counters
/// say so: frames seen = frames delivered + frames dropped.
#[test]
fn kernel_drops_are_counted() {
    if !root_or_skip("kernel_drops_are_counted") {
        return;
    }
    let pair = VethPair::new("pd", &[]);
    let mut port = open(&pair, |c| c.rx_frames = 64);
    let pool = port.pool().clone();
    let mac = port.mac();
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    for i in 0..500 {
        peer.send(&test_frame(mac, pair.peer_mac, i, 60));
    }
    std::thread::sleep(Duration::from_millis(200));
    let got = collect(&mut port, &pool, 500, Duration::from_millis(500));
    let k = port.kernel_stats();
    let s = port.stats();
    assert_eq!(got.len(), 64, "one ring's worth delivered");
    assert!(k.drops >= 436, "{k:?}");
    assert_eq!(s.rx_dropped, k.drops);
    assert_eq!(k.packets, k.drops + 64, "{k:?}");
}

#[test]
fn errors_name_the_problem() {
    if !root_or_skip("errors_name_the_problem") {
        return;
    }
    let pair = VethPair::new("pe", &[]);
    let c = AfPacketConfig::new("ferrite-nonexistent0", PoolId(1));
    let e = pair
        .in_port_ns(move || AfPacketPort::open(c))
        .expect_err("no such interface");
    assert!(matches!(e, AfPacketError::InterfaceNotFound(_)), "{e}");
    let mut c = AfPacketConfig::new(&pair.port_if, PoolId(1));
    c.rx_frames = 100;
    let e = pair
        .in_port_ns(move || AfPacketPort::open(c))
        .expect_err("ring not a multiple of 32");
    assert!(matches!(e, AfPacketError::Config(_)), "{e}");
    for (size, ring, why) in [
        (3000, PoolId(2), "rx_frame_size"),
        (1024, PoolId(2), "rx_frame_size"),
        (2048, PoolId(1), "ring_pool"),
    ] {
        let mut c = AfPacketConfig::in_place(&pair.port_if, PoolId(1), ring);
        c.rx_frame_size = size;
        let e = pair
            .in_port_ns(move || AfPacketPort::open(c))
            .expect_err("a bad receive ring");
        assert!(
            matches!(&e, AfPacketError::Config(m) if m.contains(why)),
            "{size} {ring:?}: {e}"
        );
    }
}

/// A Linux peer with checksum offload on (veth's default) leaves TCP checksums to offload;
/// the port marks such a frame partial (whoever needs the checksum completes it), and it
/// completes to a valid one.
#[test]
fn a_checksum_the_peer_left_partial_is_marked_partial_and_completes() {
    if !root_or_skip("a_checksum_the_peer_left_partial_is_marked_partial_and_completes") {
        return;
    }
    let pair = VethPair::new("pc", &[]);
    pair.peer_cmd(&["ethtool", "-K", &pair.peer_if, "tx", "on"]);
    let mut port = open(&pair, |_| {});
    let pool = port.pool().clone();
    let mac = port.mac();
    let m = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let (ok, out) = pair.peer_cmd(&[
        "ip",
        "neigh",
        "add",
        "10.77.0.2",
        "lladdr",
        &m,
        "dev",
        &pair.peer_if,
    ]);
    assert!(ok, "{out}");
    let ns = pair.peer_ns.clone();
    // A TCP SYN from the peer's kernel (nobody answers; the connect times out).
    let syn = std::thread::spawn(move || {
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "timeout", "1", "bash", "-c"])
            .arg("echo > /dev/tcp/10.77.0.2/80")
            .output()
    });
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); 8];
    let t0 = Instant::now();
    let mut seen = None;
    while seen.is_none() && t0.elapsed() < Duration::from_secs(3) {
        let n = port.rx_burst(&mut burst);
        for f in &burst[..n] {
            let b = frame_bytes(&pool, *f);
            if b.len() >= 54 && b[12..14] == [8, 0] && b[23] == 6 {
                seen = Some((b, offload::FrameMeta::from_bits(f.meta)));
            }
            port.reclaim(&[f.buf]);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = syn.join();
    let (mut b, meta) = seen.expect("TCP SYN from the peer");
    // The peer's kernel left the checksum to offload; the port says so (its virtio header
    // did) rather than summing it, and completing it gives the right checksum.
    assert!(meta.is_partial(), "{meta:?}");
    assert!(offload::csum::holds_pseudo_header_sum(&b, b.len()));
    assert!(offload::csum::complete_l4_checksum(&mut b));
    let tot = u16::from_be_bytes([b[16], b[17]]) as usize;
    let mut ph = Vec::new();
    ph.extend_from_slice(&b[26..34]);
    ph.extend_from_slice(&[0, 6]);
    ph.extend_from_slice(&((tot - 20) as u16).to_be_bytes());
    ph.extend_from_slice(&b[34..14 + tot]);
    assert_eq!(csum(&ph), 0, "TCP checksum of the completed SYN is valid");
}

/// An idle poller can sleep on the port: `wait_rx` times out with nothing to receive and
/// wakes when a frame arrives.
#[test]
fn wait_rx_sleeps_until_a_frame_arrives() {
    if !root_or_skip("wait_rx_sleeps_until_a_frame_arrives") {
        return;
    }
    let pair = VethPair::new("pw", &[]);
    let mut port = open(&pair, |_| {});
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
    assert!(text.contains("CAP_NET_RAW"), "{text}");
}

/// Not a test on its own: the unprivileged half of the test above.
#[test]
fn unprivileged_probe() {
    if std::env::var_os("FERRITE_PERM_PROBE").is_none() {
        return;
    }
    match AfPacketPort::open(AfPacketConfig::new("lo", PoolId(1))) {
        Err(e @ AfPacketError::Permission { .. }) => println!("probe: Permission: {e}"),
        Err(e) => println!("probe: other: {e:?}"),
        Ok(_) => println!("probe: opened"),
    }
}

/// Frames stay intact when the Linux peer reads them only after all were sent (more than
/// the transmit ring holds): ring frames are reused only once the kernel is done with them.
#[test]
fn frames_stay_intact_when_the_peer_reads_late() {
    if !root_or_skip("frames_stay_intact_when_the_peer_reads_late") {
        return;
    }
    let pair = VethPair::new("pl", &[]);
    let mut port = open(&pair, |_| {});
    let pool = port.pool().clone();
    assert_eq!(late_reader_run(&pair, &mut port, &pool, 3000), 3000);
}

/// A warm spare's port: prepared while another port serves the interface, it takes no frame
/// off it; once activated it receives what arrives from then on.
#[test]
fn a_prepared_port_takes_nothing_until_it_is_activated() {
    if !root_or_skip("a_prepared_port_takes_nothing_until_it_is_activated") {
        return;
    }
    let pair = VethPair::new("pw", &[]);
    let mut serving = open(&pair, |_| {});
    let (pool, mac) = (serving.pool().clone(), serving.mac());
    let c = AfPacketConfig::new(&pair.port_if, PoolId(6));
    let prepared = pair
        .in_port_ns(move || AfPacketPort::prepare(c))
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

/// A frame larger than the MTU, sent whole with its segment size (the port's sending socket,
/// `PACKET_VNET_HDR`) out of an interface without TSO, is cut by the kernel's GSO; the
/// segments the peer receives are, byte for byte, those the switch's software segmentation
/// (`offload::gso`) makes of the same frame.
#[test]
fn the_kernel_cuts_a_large_frame_into_the_segments_offload_gso_makes() {
    if !root_or_skip("the_kernel_cuts_a_large_frame_into_the_segments_offload_gso_makes") {
        return;
    }
    let pair = VethPair::new("pg", &[]);
    // veth has TSO on by default: the port takes large frames whole.
    let port = open(&pair, |_| {});
    assert_eq!(port.tx_offloads().max_gso_frame, u16::MAX as u32);
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
    let peer = pair.peer_socket(0x0800);
    // Through the qdisc layer: bypassing it, the kernel drops a frame it would have to cut.
    let mut port = open(&pair, |c| c.qdisc_bypass = false);
    assert_eq!(
        port.tx_offloads().max_gso_frame,
        0,
        "without TSO the port asks the switch to cut large frames"
    );
    let pool = port.pool().clone();
    let f = super_frame(port.mac(), pair.peer_mac);
    let mut fr = alloc_frame(&mut port, &pool, &f);
    fr.meta = offload::FrameMeta::partial(1448).bits();
    assert_eq!(port.tx_burst(&[fr]), 1);

    let t = offload::gso::TcpV4::parse_mss(&f[..134], f.len(), 1448).expect("TCP/IPv4");
    let h = t.header_len();
    let ours: Vec<Vec<u8>> = (0..t.segments())
        .map(|k| {
            let mut s = f[..h].to_vec();
            let at = h + k * t.mss;
            s.extend_from_slice(&f[at..at + t.segment_payload(k)]);
            assert!(t.finish(&mut s, k));
            s
        })
        .collect();
    let mut theirs = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t0 = Instant::now();
    while theirs.len() < ours.len() && t0.elapsed() < Duration::from_secs(3) {
        if let Some(n) = peer.recv(&mut buf, Duration::from_millis(200))
            && n >= 54
            && buf[23] == 6
            && buf[36..38] == [0x14, 0x51]
        {
            let mut s = buf[..n].to_vec();
            // veth leaves the segments' TCP checksums partial, as the kernel's GSO does
            // for a device with checksum offload.
            offload::csum::complete_l4_checksum(&mut s);
            theirs.push(s);
        }
    }
    assert_eq!(theirs.len(), ours.len(), "segments the peer received");
    for (k, (a, b)) in theirs.iter().zip(&ours).enumerate() {
        assert_eq!(a, b, "segment {k}");
    }
    reap(&mut port);
}

/// In place, frames are handles into the kernel's ring: out-of-order returns give ring
/// frames back in ring order, and a ring whose every frame is lent takes nothing more (the
/// kernel counts the drops) until the oldest comes back.
#[test]
fn receives_in_place_and_gives_ring_frames_back_in_ring_order() {
    if !root_or_skip("receives_in_place_and_gives_ring_frames_back_in_ring_order") {
        return;
    }
    let pair = VethPair::new("pn", &[]);
    let ring_id = PoolId(9);
    let mut port = pair
        .in_port_ns({
            let mut c = AfPacketConfig::in_place(&pair.port_if, PoolId(5), ring_id);
            c.rx_frames = 8;
            c.rx_frame_size = 65536;
            move || AfPacketPort::open(c)
        })
        .expect("open af_packet port in place");
    assert!(port.own_pools().contains(ring_id));
    let ring = port
        .pools()
        .iter()
        .find(|p| p.id() == ring_id)
        .expect("the ring is a pool the port exposes")
        .clone();
    assert_eq!(ring.layout().count, 8);
    let mac = port.mac();
    let peer = pair.peer_socket(TEST_ETHERTYPE);
    let mut seq = 0u32;
    let mut send = |n: u32| {
        for _ in 0..n {
            peer.send(&test_frame(mac, pair.peer_mac, seq, test_len(seq)));
            seq += 1;
        }
    };
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); 32];
    // Reads test frames for a while; others (IPv6 router solicitations) go straight back.
    let mut take = |port: &mut AfPacketPort, want: usize| {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_millis(500);
        while got.len() < want && Instant::now() < end {
            let n = port.rx_burst(&mut burst);
            for f in &burst[..n] {
                let b = frame_bytes(&ring, *f);
                if u16::from_be_bytes([b[12], b[13]]) == TEST_ETHERTYPE {
                    got.push((*f, b));
                } else {
                    port.reclaim(&[f.buf]);
                }
            }
            if n == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        got
    };

    send(8);
    let first = take(&mut port, 8);
    assert_eq!(first.len(), 8, "a ring of 8 holds 8 frames");
    for (k, (f, b)) in first.iter().enumerate() {
        assert_eq!(f.buf.pool(), ring_id, "frame {k} lent in place");
        assert_eq!(
            b,
            &test_frame(mac, pair.peer_mac, k as u32, test_len(k as u32))
        );
    }
    let drops = port.kernel_stats().drops;
    send(2);
    assert!(take(&mut port, 1).is_empty(), "every ring frame is lent");
    // All but the oldest back: the ring is still full behind it.
    let rest: Vec<BufHandle> = first[1..].iter().map(|(f, _)| f.buf).collect();
    port.reclaim(&rest);
    send(2);
    assert!(
        take(&mut port, 1).is_empty(),
        "the oldest ring frame holds the rest"
    );
    assert!(
        port.kernel_stats().drops >= drops + 4,
        "the kernel counted the drops"
    );
    port.reclaim(&[first[0].0.buf]);
    let errors = port.stats().errors;
    port.reclaim(&[first[0].0.buf]);
    assert_eq!(
        port.stats().errors,
        errors + 1,
        "a handle returned twice is refused"
    );
    let from = 12; // 8 taken, then 4 dropped
    send(3);
    let again = take(&mut port, 3);
    assert_eq!(again.len(), 3, "the ring takes frames again");
    for (k, (_, b)) in again.iter().enumerate() {
        let s = from + k as u32;
        assert_eq!(b, &test_frame(mac, pair.peer_mac, s, test_len(s)));
    }
}

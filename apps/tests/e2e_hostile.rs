//! End-to-end (root): a hostile app domain against a running Ferrite server with an `af_xdp`
//! or `af_packet` port. This test process is the hostile domain: it sends malformed control
//! messages (garbage, wrong version, truncated, out-of-order, unauthorised, bad MAC, bad
//! layout, missing descriptors), then attaches properly and writes garbage into its rings
//! (descriptors naming other pools, buffers out of range, over-long lengths, buffers it does
//! not hold, spoofed and runt frames, impossible producer indices, random bytes over every
//! ring). Meanwhile a well-behaved app keeps answering the Linux peer every 5 ms (the longest
//! round trip, which bounds the longest stop in forwarding, is printed) and two more carry a
//! TCP stream each, one from the peer and one to it, whose bytes must arrive with their
//! sha256; afterwards the server is alive, has counted the rejections, and still serves.
#![forbid(unsafe_code)]

mod netns;

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use grant_pool::port::{AppPort, PortLayout};
use grant_pool::shm::ShmBackend;
use grant_pool::{Access, DomId, Grant, GrantBackend, Notifier, PoolId, RingProducer};
use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, Offloads, Topology};
use switch::ctl::{
    Client, CtlError, ErrorCode, GrantRepr, Name, Received, Repr, SeqPacket, StatsRepr, Transport,
};

const TOOLS: &[&str] = &[
    "ip",
    "ethtool",
    "taskset",
    "ping",
    "nc",
    "sha256sum",
    "socat",
];
/// Bytes of each TCP stream that runs through the attack.
const STREAM: u64 = 384 << 20;

/// Bytes of the ring header before the first descriptor (three cache-padded words).
const DESC_OFF: usize = grant_pool::ring::DESC_OFF;

/// One control message and the descriptors sent with it.
type Msg<'a> = (&'a [u8], &'a [BorrowedFd<'a>]);

/// A small deterministic generator for garbage.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate().take(6) {
        m[i] = u8::from_str_radix(p, 16).expect("test MAC");
    }
    m
}

/// Sends `bytes` (with `fds`) on a fresh control connection; returns the server's answer:
/// `Some(code)` for an `Error`, `None` when it closed without one. Panics on any other answer.
fn refused(socket: &std::path::Path, msgs: &[Msg<'_>]) -> Option<ErrorCode> {
    let mut t = SeqPacket::connect(socket).expect("connect to the control socket");
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut last = None;
    for (m, fds) in msgs {
        if t.send(m, fds).is_err() {
            return last;
        }
        let mut buf = vec![0u8; 70 * 1024];
        let mut got: Vec<OwnedFd> = Vec::new();
        match t.recv(&mut buf, &mut got) {
            Ok(Received::Message { len, .. }) => match Repr::from_bytes(&buf[..len]) {
                Ok(Repr::Error { code, .. }) => return Some(code),
                Ok(_) => last = None,
                Err(e) => panic!("the server answered with a malformed message: {e}"),
            },
            Ok(Received::Closed) | Err(_) | Ok(Received::WouldBlock) => return None,
        }
    }
    panic!("the server accepted every message of a hostile sequence")
}

fn stats(socket: &std::path::Path) -> StatsRepr {
    Client::connect(socket)
        .and_then(|mut c| c.stats())
        .expect("stats from the server")
}

fn rejections(s: &StatsRepr) -> u64 {
    s.rejections.iter().map(|(_, n)| n).sum()
}

/// Pings `ip` from the peer `n` times at 5 ms intervals; returns replies. The deadline
/// (`-w`) makes ping wait for every reply, not just two round trips after the last request.
fn pings(t: &Topology, ip: &str, n: u32) -> u64 {
    let deadline = (n / 100 + 10).to_string();
    let out = t.p.output([
        "ping",
        "-c",
        &n.to_string(),
        "-i",
        "0.005",
        "-w",
        &deadline,
        ip,
    ]);
    netns::parse_ping(&String::from_utf8_lossy(&out.stdout)).map_or(0, |(_, r)| r)
}

/// The longest `time=` ping printed, in milliseconds.
fn longest_rtt_ms(ping_out: &str) -> Option<f64> {
    ping_out
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
}

fn hostile_app(backend: Backend) {
    if !netns::ready(&format!("hostile_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    let good = AppSpec::numbered("good", 1);
    let evil = AppSpec::numbered("evil", 2);
    let (down, up) = (AppSpec::numbered("down", 3), AppSpec::numbered("up", 4));
    let mut srv = Server::start(
        &t,
        backend,
        &[good.clone(), evil.clone(), down.clone(), up.clone()],
    );
    let good_app = srv.app("ferrite-echo", &good, &["--port", "7"]);
    if let Err(e) = netns::wait_reachable(&t, &good.ip, Duration::from_secs(20)) {
        panic!(
            "{e}\napp log:\n{}\nserver log:\n{}",
            good_app.log(),
            srv.log()
        );
    }
    let sock = srv.socket.clone();
    let before = stats(&sock);

    // Two TCP streams run through the attack: the peer to one app, another app to the peer.
    let file = t.dir.join("down.bin");
    netns::write_pattern_file(&file, STREAM, 0xd0d0);
    let want_down = netns::sha256_file(&file);
    let mut sink = srv.app("ferrite-bulk", &down, &["--listen=5201", "--once"]);
    if let Err(e) = netns::wait_reachable(&t, &down.ip, Duration::from_secs(20)) {
        panic!(
            "{e}
app log:
{}",
            sink.log()
        );
    }
    let received = t.dir.join("up.got");
    let mut peer_sink = netns::peer_receive_file(&t, &received, 5202);
    std::thread::sleep(Duration::from_millis(300));
    let mut sender = netns::peer_send_file(&t, &file, &down.ip, 5201);
    let mut source = srv.app(
        "ferrite-bulk",
        &up,
        &[
            &format!("--connect={}:5202", netns::PEER_IP),
            &format!("--bytes={STREAM}"),
            "--seed=5",
        ],
    );

    // The well-behaved app is pinged all through the attack.
    let mut background = Bg::spawn(
        "ping-during-attack",
        t.dir.path(),
        t.p.cmd("ping")
            .args(["-c", "2000", "-i", "0.005", "-w", "60", &good.ip]),
    );

    // --- Control plane ---
    let mut g = Garbage(0x0bad_cafe_f00d_d00d);
    let hello = |name: &str, mac: [u8; 6]| {
        Repr::Hello {
            name: Name::new(name).expect("name"),
            mac,
        }
        .to_bytes()
    };
    let evil_hello = hello(&evil.name, mac_bytes(&evil.mac));
    let mut wrong_version = evil_hello.clone();
    wrong_version[4..6].copy_from_slice(&999u16.to_le_bytes());
    let mut wrong_len = evil_hello.clone();
    wrong_len[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_kind = evil_hello.clone();
    bad_kind[6..8].copy_from_slice(&0x7777u16.to_le_bytes());
    let small_grant = Repr::Grant(GrantRepr {
        rx_size: 64,
        tx_size: 64,
        fill_size: 64,
        comp_size: 64,
        buf_size: 2048,
        buf_count: 256,
        domid: 1,
        grant_fds: 2,
        notify_fds: 2,
        notify_port: 0,
        refs: Vec::new(),
    })
    .to_bytes();
    let huge_grant = Repr::Grant(GrantRepr {
        rx_size: 1 << 30,
        tx_size: 3,
        fill_size: 64,
        comp_size: 64,
        buf_size: 1 << 30,
        buf_count: u32::MAX,
        domid: 1,
        grant_fds: 2,
        notify_fds: 2,
        notify_port: 0,
        refs: Vec::new(),
    })
    .to_bytes();
    let intruder = hello("intruder", mac_bytes(&evil.mac));
    let multicast = hello(&evil.name, [0x01, 0, 0x5e, 0, 0, 1]);
    let stolen_mac = hello(&evil.name, mac_bytes(&good.mac));
    let garbage = g.bytes(200);
    let oversized = g.bytes(66 * 1024);
    let cases: Vec<(&str, Vec<Msg<'_>>)> = vec![
        ("random bytes", vec![(&garbage, &[])]),
        ("a header and nothing", vec![(&evil_hello[..12], &[])]),
        ("an over-long message", vec![(&oversized, &[])]),
        ("an unsupported version", vec![(&wrong_version, &[])]),
        ("a lying length", vec![(&wrong_len, &[])]),
        ("an unknown kind", vec![(&bad_kind, &[])]),
        ("a grant before hello", vec![(&small_grant, &[])]),
        ("an unlisted name", vec![(&intruder, &[])]),
        ("a multicast MAC", vec![(&multicast, &[])]),
        ("another app's MAC", vec![(&stolen_mac, &[])]),
        (
            "a grant without descriptors",
            vec![(&evil_hello, &[]), (&small_grant, &[])],
        ),
        (
            "a grant over the limits",
            vec![(&evil_hello, &[]), (&huge_grant, &[])],
        ),
        ("hello twice", vec![(&evil_hello, &[]), (&evil_hello, &[])]),
    ];
    let n_cases = cases.len() as u64;
    for (what, msgs) in &cases {
        let code = refused(&sock, msgs);
        eprintln!("hostile control message ({what}): {code:?}");
        assert!(code.is_some(), "no Error answer to {what}");
        assert!(srv.alive(), "the server died on {what}:\n{}", srv.log());
    }
    // Descriptors that are not memory: a grant with sockets where the memfds belong.
    let backend_shm = ShmBackend::new(DomId(1));
    let n1 = backend_shm.notifier(DomId::SELF_HOST).expect("notifier");
    let n2 = backend_shm.notifier(DomId::SELF_HOST).expect("notifier");
    let fake: Vec<BorrowedFd<'_>> = n1
        .attachments()
        .into_iter()
        .chain(n2.attachments())
        .collect();
    let code = refused(&sock, &[(&evil_hello, &[]), (&small_grant, &fake)]);
    eprintln!("hostile control message (sockets for memory): {code:?}");
    assert!(
        srv.alive(),
        "the server died on fake memory:\n{}",
        srv.log()
    );

    let mid = stats(&sock);
    assert!(
        rejections(&mid) >= rejections(&before) + n_cases,
        "the server did not count the refused messages: before {:?}, after {:?}",
        before.rejections,
        mid.rejections
    );

    // --- Data plane: attach properly, then write garbage into the rings. ---
    let layout = PortLayout::simple(256, 512).expect("layout");
    let grant = backend_shm
        .grant(DomId::SELF_HOST, layout.pages(), Access::ReadWrite)
        .expect("grant port memory");
    let mem = grant.region();
    let mut port =
        AppPort::create(grant.memory().clone(), layout, PoolId(0)).expect("lay the port out");
    let mut client = Client::connect(&sock).expect("connect");
    client
        .hello(&Name::new(&evil.name).expect("name"), mac_bytes(&evil.mac))
        .expect("hello");
    let gfds = grant.attachments();
    let repr = GrantRepr {
        rx_size: layout.rx().size(),
        tx_size: layout.tx().size(),
        fill_size: layout.fill().size(),
        comp_size: layout.comp().size(),
        buf_size: layout.pool().buf_size as u32,
        buf_count: layout.pool().count as u32,
        domid: 1,
        grant_fds: gfds.len() as u8,
        notify_fds: 0,
        notify_port: 0,
        refs: grant.refs().iter().map(|r| r.0).collect(),
    };
    let (attached, bell) = client
        .grant(&repr, &gfds)
        .expect("a valid grant is accepted");
    let notifier = backend_shm
        .bind_notifier(DomId::SELF_HOST, 0, &bell)
        .expect("bind the doorbell");
    let pool = attached.pool;

    let publish_raw = |ring: &mut RingProducer, off: usize, descs: &[u8]| {
        let n = (descs.len() / 8) as u32;
        let room = ring.reserve(n).unwrap_or(0);
        if room == 0 {
            return;
        }
        // Fresh rings (producer index 0 after `create`): the batch starts at slot 0. The
        // descriptors are written as raw bytes; whatever the server reads there is ours.
        let _ = mem.write(off + DESC_OFF, &descs[..room as usize * 8]);
        ring.publish(room);
        let _ = notifier.notify();
    };
    let desc = |handle: u32, len: u16| -> [u8; 8] {
        let mut d = [0u8; 8];
        d[..4].copy_from_slice(&handle.to_le_bytes());
        d[4..6].copy_from_slice(&len.to_le_bytes());
        d
    };
    let h = |pool: u8, idx: u32| (u32::from(pool) << 24) | idx;
    // A spoofed frame (the good app's source MAC) and a runt, in buffers the app holds.
    let buf0 = layout.pool_off();
    let mut frame = vec![0xffu8; 6];
    frame.extend_from_slice(&mac_bytes(&good.mac));
    frame.extend_from_slice(&[0x08, 0x06]);
    frame.resize(60, 0);
    mem.write(buf0, &frame).expect("write frame");
    // A PAUSE frame (to a reserved link-local group) and a frame from a group address.
    let evil_mac = mac_bytes(&evil.mac);
    let mut pause = vec![0x01, 0x80, 0xc2, 0, 0, 0x01];
    pause.extend_from_slice(&evil_mac);
    pause.extend_from_slice(&[0x88, 0x08]);
    pause.resize(60, 0);
    mem.write(buf0 + 5 * layout.pool().buf_size, &pause)
        .expect("write frame");
    let mut group = vec![0xffu8; 6];
    group.extend_from_slice(&[0x03, 0, 0, 0, 0, 0x66]);
    group.extend_from_slice(&[0x08, 0x06]);
    group.resize(60, 0);
    mem.write(buf0 + 6 * layout.pool().buf_size, &group)
        .expect("write frame");
    let mut tx_descs = Vec::new();
    tx_descs.extend_from_slice(&desc(h(pool, 5), 60)); // to a reserved group
    tx_descs.extend_from_slice(&desc(h(pool, 6), 60)); // from a group address
    tx_descs.extend_from_slice(&desc(h(pool, 0), 60)); // spoofed source MAC
    tx_descs.extend_from_slice(&desc(h(pool, 1), 6)); // runt
    tx_descs.extend_from_slice(&desc(h(pool.wrapping_add(7), 2), 60)); // another pool
    tx_descs.extend_from_slice(&desc(h(pool, 0x00ff_ffff), 60)); // index past the pool
    tx_descs.extend_from_slice(&desc(h(pool, 3), 60_000)); // longer than a buffer
    tx_descs.extend_from_slice(&desc(h(pool, 0), 60)); // already handed over above
    publish_raw(&mut port.tx, layout.tx_off(), &tx_descs);
    let mut fill_descs = Vec::new();
    fill_descs.extend_from_slice(&desc(h(pool, 4), 0));
    fill_descs.extend_from_slice(&desc(h(pool, 4), 0)); // the same buffer twice
    fill_descs.extend_from_slice(&desc(h(pool, 9_999_999), 0));
    fill_descs.extend_from_slice(&desc(h(0xee, 5), 0));
    publish_raw(&mut port.fill, layout.fill_off(), &fill_descs);
    std::thread::sleep(Duration::from_millis(200));

    // Impossible producer indices (far ahead of the consumer), then random bytes over every
    // ring, kicking the server each time.
    for off in [layout.tx_off(), layout.fill_off()] {
        let _ = mem.write(off, &0x7fff_0000u32.to_le_bytes());
        let _ = notifier.notify();
        std::thread::sleep(Duration::from_millis(50));
    }
    for round in 0..20 {
        for (off, ring) in [
            (layout.rx_off(), layout.rx()),
            (layout.tx_off(), layout.tx()),
            (layout.fill_off(), layout.fill()),
            (layout.comp_off(), layout.comp()),
        ] {
            let junk = g.bytes(ring.bytes());
            let _ = mem.write(off, &junk);
        }
        // And garbage frames in the pool.
        let junk = g.bytes(layout.pool().bytes().min(256 * 1024));
        let _ = mem.write(layout.pool_off(), &junk);
        let _ = notifier.notify();
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            srv.alive(),
            "the server died in garbage round {round}:\n{}",
            srv.log()
        );
    }
    std::thread::sleep(Duration::from_millis(300));

    let after = stats(&sock);
    let evil_counters = after
        .ports
        .iter()
        .find(|p| p.app && p.name == evil.name)
        .map(|p| p.counters);
    let data_rejects = after.ports.iter().map(|p| p.counters.errors).sum::<u64>();
    eprintln!(
        "{}: control rejections {:?}; evil port counters {:?}; all ports' errors {data_rejects}",
        backend.as_str(),
        after.rejections,
        evil_counters
    );
    assert!(
        data_rejects > 0,
        "the server counted none of the garbage descriptors: {:?}",
        after.ports
    );
    let c = evil_counters.expect("the hostile app's port in stats");
    for (what, n) in [
        ("spoofed source", c.spoofed),
        ("runt", c.runt),
        ("reserved link-local destination", c.link_local),
        ("group source", c.group_source),
        ("buffer of another pool", c.bad_pool),
        ("index past the pool", c.bad_index),
        ("length over a buffer", c.bad_len),
        ("buffer not held", c.not_held),
    ] {
        assert!(n > 0, "{what}: not counted on the hostile port: {c:?}");
    }

    // The hostile domain goes away abruptly (its connection and memory dropped).
    drop(client);
    drop(grant);

    // The good app was served all along and still is.
    let code = background.wait_exit(Duration::from_secs(60));
    let log = background.log();
    let (sent, got) = netns::parse_ping(&log).unwrap_or((0, 0));
    // The two streams fill the port, so a request may now and then be dropped in a full ring
    // like any frame (TCP resends its own): at most 1 % of them.
    assert!(
        code == Some(0) && got == 2000 && sent - got <= 20,
        "the good app missed replies during the attack ({got} of {sent}):\n{log}"
    );
    eprintln!(
        "{}: {got} of {sent} echo requests answered during the attack",
        backend.as_str()
    );
    // A request sent while forwarding stood still waits for it: the longest round trip bounds
    // the longest stop. Reported; a stop of a second is a freeze, not scheduling noise.
    let worst = longest_rtt_ms(&log).expect("ping printed round trips");
    eprintln!(
        "{}: longest round trip to the good app during the attack: {worst:.1} ms",
        backend.as_str()
    );
    assert!(
        worst < 1000.0,
        "forwarding stopped for about {worst:.0} ms during the attack:\n{}",
        srv.log()
    );
    assert!(srv.alive(), "the server died:\n{}", srv.log());
    assert_eq!(
        pings(&t, &good.ip, 50),
        50,
        "the good app stopped answering"
    );
    let sent = t.dir.join("echo.in");
    let back = t.dir.join("echo.out");
    netns::write_pattern_file(&sent, 256 * 1024, 3);
    let script = format!(
        "timeout 30 nc -N {} 7 < {} > {}",
        good.ip,
        sent.display(),
        back.display()
    );
    let out = t.p.output(["sh", "-c", &script]);
    assert!(out.status.success(), "TCP echo after the attack failed");
    assert_eq!(netns::sha256_file(&back), netns::sha256_file(&sent));
    // Both streams went through whole.
    assert_eq!(
        sender.wait_exit(Duration::from_secs(180)),
        Some(0),
        "the peer's stream failed:\n{}\napp log:\n{}",
        sender.log(),
        sink.log()
    );
    let log = sink.wait_log(&want_down, Duration::from_secs(60));
    assert!(
        log.contains(&want_down),
        "the app received other bytes than the peer sent:\n{log}"
    );
    assert_eq!(
        source.wait_exit(Duration::from_secs(180)),
        Some(0),
        "the app's stream failed:\n{}",
        source.log()
    );
    assert_eq!(peer_sink.wait_exit(Duration::from_secs(30)), Some(0));
    assert_eq!(
        netns::source_sha256(&source.log()),
        Some(netns::sha256_file(&received)),
        "the peer received other bytes than the app sent"
    );
    eprintln!(
        "{}: two TCP streams of {} MiB each, one each way, intact through the attack",
        backend.as_str(),
        STREAM >> 20
    );
    // A stats client still gets answers: the control plane serves too.
    let last = stats(&sock);
    assert!(rejections(&last) >= rejections(&mid));
    let _ = CtlError::Closed;
}

#[test]
fn hostile_af_xdp() {
    hostile_app(Backend::AfXdp);
}

#[test]
fn hostile_af_packet() {
    hostile_app(Backend::AfPacket);
}

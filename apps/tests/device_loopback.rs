//! The ring device against a loopback of two real ports: two app pools and rings in shm
//! grants, mapped by a "server" side in this process (grant-pool's `ServerPort`), and a tiny
//! forwarder that copies each frame from one app's tx ring into a fill buffer of the other
//! and hands it over on that app's rx ring. Two smoltcp stacks talk TCP and UDP through it.
//!
//! Checks what a user of the device would notice: bytes arrive intact; frames are built in
//! place in the pool (the server reads the stack's frame straight out of the buffer it was
//! handed); every buffer is accounted for (app-held plus server-held equals the pool); and
//! a server that writes garbage descriptors gets them refused and counted, not obeyed.

use std::os::fd::OwnedFd;

use apps::device::{PortRings, RingDevice};
use apps::domain::Service;
use apps::services::{Amount, BulkSink, BulkSource, Echo, endpoint};
use apps::stack::{self, NetConfig};
use grant_pool::lend::OwnPool;
use grant_pool::port::{AppPort, PortLayout, PortLimits, ServerPort};
use grant_pool::shm::{ShmBackend, ShmGrant, ShmMapping, ShmNotifier};
use grant_pool::{Access, BufIdx, Desc, DomId, Grant, GrantBackend, Holder, Notifier, PoolId};
use smoltcp::iface::{Interface, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

const RING: u32 = 256;
const BUFS: usize = 512;

struct App {
    dev: RingDevice<ShmGrant, ShmNotifier>,
    iface: Interface,
    sockets: SocketSet<'static>,
}

struct ServerSide {
    port: ServerPort,
    _map: ShmMapping,
    _bell: ShmNotifier,
}

fn owned(fds: Vec<std::os::fd::BorrowedFd<'_>>) -> Vec<OwnedFd> {
    fds.into_iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect()
}

fn make(id: u8, last: u8) -> (App, ServerSide) {
    let app_be = ShmBackend::new(DomId(1));
    let srv_be = ShmBackend::new(DomId::SELF_HOST);
    let layout = PortLayout::simple(RING, BUFS).expect("layout");
    let grant = app_be
        .grant(DomId::SELF_HOST, layout.pages(), Access::ReadWrite)
        .expect("grant");
    let port = AppPort::create(grant.memory().clone(), layout, PoolId(id)).expect("port");
    let map = srv_be
        .map(
            DomId(1),
            grant.refs(),
            Access::ReadWrite,
            &owned(grant.attachments()),
        )
        .expect("map");
    let sport = ServerPort::attach(
        grant_pool::Mapping::memory(&map).clone(),
        PoolId(id),
        PortLimits::default(),
    )
    .expect("attach");
    let bell = app_be.notifier(DomId::SELF_HOST).expect("notifier");
    let srv_bell = srv_be
        .bind_notifier(DomId(1), 0, &owned(bell.attachments()))
        .expect("bind");
    let pool = OwnPool::new(grant, layout.pool_off(), PoolId(id), layout.pool()).expect("pool");
    let mut dev = RingDevice::new(pool);
    dev.attach(
        PortRings {
            rx: port.rx,
            fill: port.fill,
            tx: port.tx,
            completion: port.comp,
            notifier: bell,
        },
        RING as usize,
    )
    .expect("attach device");
    let net = NetConfig {
        mac: [2, 0, 0, 0, 0, last],
        ip: Ipv4Cidr::new(Ipv4Address::new(10, 9, 0, last), 24),
        gateway: None,
        ip6: None,
    };
    let iface = stack::interface(&net, &mut dev, smoltcp::time::Instant::ZERO, last as u64);
    (
        App {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
        },
        ServerSide {
            port: sport,
            _map: map,
            _bell: srv_bell,
        },
    )
}

/// Moves frames from `from`'s tx ring to `to`'s rx ring (one copy into a fill buffer of
/// `to`, UDP checksums left partial and marked so), returning transmitted buffers on
/// `from`'s completion ring. Returns frames moved and
/// (for the zero-copy check) the source MAC of the first frame read out of `from`'s pool.
fn forward(from: &mut ServerSide, to: &mut ServerSide) -> (usize, Option<[u8; 6]>) {
    let mut tx = [Desc::default(); 64];
    let mut fill = [Desc::default(); 64];
    let n = from.port.take_tx(&mut tx);
    let mut first_src = None;
    if n == 0 {
        return (0, None);
    }
    let m = to.port.take_fill(&mut fill[..n]);
    let mut rx = [Desc::default(); 64];
    for i in 0..n {
        let src = from.port.pool.buf(tx[i].buf()).expect("checked tx buffer");
        if i == 0 {
            let mut mac = [0u8; 6];
            src.read(6, &mut mac).expect("read");
            first_src = Some(mac);
        }
        if i < m {
            let dst = to
                .port
                .pool
                .buf(fill[i].buf())
                .expect("checked fill buffer");
            let len = tx[i].len as usize;
            dst.copy_from(0, &src, 0, len).expect("copy");
            let mut meta = tx[i].meta;
            // A UDP datagram crosses with its checksum left partial, as a Linux sender with
            // checksum offload (veth's default) leaves it, and marked so.
            let mut f = vec![0u8; len];
            dst.read(0, &mut f).expect("read");
            if offload::csum::L4::parse(&f, len).is_some_and(|l4| l4.proto == 17) {
                offload::csum::set_pseudo_header_sum(&mut f).expect("UDP");
                dst.write(0, &f).expect("write");
                meta = offload::FrameMeta::partial(0).bits();
            }
            rx[i] = Desc {
                meta,
                ..Desc::new(fill[i].buf(), tx[i].len)
            };
        }
    }
    // Frames with no fill buffer on the other side are dropped (like a full NIC queue).
    let given = to.port.give_rx(&rx[..m]).expect("rx ring");
    assert_eq!(given, m);
    let done = from.port.give_comp(&tx[..n]).expect("comp ring");
    assert_eq!(done, n);
    (n, first_src)
}

fn step(a: &mut App, sa: &mut ServerSide, b: &mut App, sb: &mut ServerSide, now_ms: i64) -> usize {
    let now = smoltcp::time::Instant::from_millis(now_ms);
    a.iface.poll(now, &mut a.dev, &mut a.sockets);
    b.iface.poll(now, &mut b.dev, &mut b.sockets);
    a.dev.flush().expect("flush a");
    b.dev.flush().expect("flush b");
    let (x, _) = forward(sa, sb);
    let (y, _) = forward(sb, sa);
    x + y
}

/// Every buffer is somewhere: held by the app, held by the server, or on one of the four
/// rings (fill and tx not yet taken by the server, rx and completion not yet by the app).
fn conserved(app: &App, srv: &mut ServerSide) {
    let held_by_app = app.dev.pool().held_count();
    let server_side = srv.port.holders.count(Holder::SERVER);
    let on_fill = srv.port.fill.ring().peek(u32::MAX).expect("fill") as usize;
    let on_tx = srv.port.tx.ring().peek(u32::MAX).expect("tx") as usize;
    let on_rx = srv.port.rx.pending().expect("rx") as usize;
    let on_comp = srv.port.comp.pending().expect("comp") as usize;
    let rings = on_fill + on_tx + on_rx + on_comp;
    assert_eq!(
        held_by_app + server_side + rings,
        BUFS,
        "app holds {held_by_app}, server {server_side}, rings {rings}: buffers leaked"
    );
    // The server's own table agrees: what it counts as the app's is what the app holds plus
    // what sits on the rings between them.
    assert_eq!(srv.port.holders.count(Holder::APP), held_by_app + rings);
}

#[test]
fn tcp_bulk_and_udp_echo_round_trip_through_two_ring_ports() {
    let (mut a, mut sa) = make(1, 1);
    let (mut b, mut sb) = make(2, 2);
    let sink_port = 5001;
    let mut sink = BulkSink::new(&mut b.sockets, sink_port, true, true);
    let mut echo = Echo::new(&mut b.sockets, 7, 2);
    let total = 2 * 1024 * 1024;
    let mut src = BulkSource::new(
        &mut a.sockets,
        endpoint(Ipv4Address::new(10, 9, 0, 2), sink_port),
        Amount::Bytes(total),
        42,
        true,
    );
    src.connect(a.iface.context(), &mut a.sockets, 40000)
        .expect("connect");
    let mut u = apps::services::udp_socket(8);
    u.bind(9000).expect("bind");
    let uh = a.sockets.add(u);
    let t0 = std::time::Instant::now();
    let mut ms = 0;
    let mut udp_sent = false;
    let mut udp_back = None;
    while !(sink.done() && src.done() && udp_back.is_some()) {
        assert!(ms < 60_000, "transfer did not finish in 60 s of stack time");
        step(&mut a, &mut sa, &mut b, &mut sb, ms);
        let now = t0 + std::time::Duration::from_millis(ms as u64);
        src.poll(&mut a.sockets, now);
        sink.poll(&mut b.sockets, now);
        echo.poll(&mut b.sockets, now);
        let s = a.sockets.get_mut::<udp::Socket>(uh);
        if !udp_sent {
            udp_sent = s
                .send_slice(
                    b"ping through the rings",
                    endpoint(Ipv4Address::new(10, 9, 0, 2), 7),
                )
                .is_ok();
        }
        if let Ok((n, _)) = s.recv_slice(&mut [0u8; 64]) {
            udp_back = Some(n);
        }
        ms += 1;
    }
    let sent = src.report.clone().expect("source report");
    let got = sink.reports[0].clone();
    assert_eq!(sent.bytes, total);
    assert_eq!(got.bytes, total);
    assert_eq!(sent.sha256, got.sha256, "bytes changed on the way");
    assert_eq!(udp_back, Some(22));
    // Let the last ACKs and FINs settle, then every buffer must be accounted for.
    for _ in 0..50 {
        step(&mut a, &mut sa, &mut b, &mut sb, ms);
        ms += 1;
    }
    conserved(&a, &mut sa);
    conserved(&b, &mut sb);
    let (da, db) = (a.dev.stats(), b.dev.stats());
    assert!(da.tx_frames > 1000 && db.rx_frames > 1000);
    assert_eq!(da.bad_desc + db.bad_desc, 0);
}

/// Clients that connect while the sink is busy with another transfer are not refused: they
/// are taken one after another as transfers end (the sink keeps a socket listening all along,
/// adding one when every socket is busy or still closing).
#[test]
fn a_bulk_sink_takes_clients_that_connect_during_a_transfer() {
    let (mut a, mut sa) = make(1, 1);
    let (mut b, mut sb) = make(2, 2);
    let sink_port = 5001;
    let mut sink = BulkSink::new(&mut b.sockets, sink_port, true, false);
    let total = 256 * 1024;
    let clients = 4u16;
    let mut srcs: Vec<BulkSource> = (0..clients)
        .map(|i| {
            BulkSource::new(
                &mut a.sockets,
                endpoint(Ipv4Address::new(10, 9, 0, 2), sink_port),
                Amount::Bytes(total),
                7 + u64::from(i),
                true,
            )
        })
        .collect();
    let t0 = std::time::Instant::now();
    let mut ms = 0;
    while !(srcs.iter().all(|s| s.done()) && sink.reports.len() == usize::from(clients))
        && srcs.iter().all(|s| s.error.is_none())
    {
        // One client connects every 2 ms, while the first transfer runs.
        if ms % 2 == 0 && ms / 2 < i64::from(clients) {
            let i = (ms / 2) as u16;
            srcs[usize::from(i)]
                .connect(a.iface.context(), &mut a.sockets, 40000 + i)
                .expect("connect");
        }
        assert!(
            ms < 60_000,
            "transfers did not finish in 60 s of stack time: the sink reported {}",
            sink.reports.len()
        );
        step(&mut a, &mut sa, &mut b, &mut sb, ms);
        let now = t0 + std::time::Duration::from_millis(ms as u64);
        for s in &mut srcs {
            s.poll(&mut a.sockets, now);
        }
        sink.poll(&mut b.sockets, now);
        ms += 1;
    }
    for s in &srcs {
        assert_eq!(s.error, None, "a client was refused");
    }
    let mut sent: Vec<String> = srcs
        .iter()
        .map(|s| s.report.clone().expect("source report").sha256)
        .collect();
    let mut got: Vec<String> = sink.reports.iter().map(|r| r.sha256.clone()).collect();
    sent.sort();
    got.sort();
    assert_eq!(sent, got, "each transfer arrives whole");
}

#[test]
fn frames_are_built_in_place_in_the_pool_buffer() {
    let (mut a, mut sa) = make(3, 1);
    let (_b, mut sb) = make(4, 2);
    // The gratuitous ARP is written by the stack's transmit path straight into a pool
    // buffer: the server reads it out of the buffer it was handed on the tx ring.
    let net = NetConfig {
        mac: [2, 0, 0, 0, 0, 1],
        ip: Ipv4Cidr::new(Ipv4Address::new(10, 9, 0, 1), 24),
        gateway: None,
        ip6: None,
    };
    assert!(stack::send_gratuitous_arp(
        &net,
        &mut a.dev,
        smoltcp::time::Instant::ZERO
    ));
    a.dev.flush().expect("flush");
    let (n, src) = forward(&mut sa, &mut sb);
    assert_eq!(n, 1);
    assert_eq!(src, Some([2, 0, 0, 0, 0, 1]));
    conserved(&a, &mut sa);
}

#[test]
fn garbage_descriptors_from_the_server_are_refused_and_counted() {
    let (mut a, mut sa) = make(5, 1);
    // The server hands over buffers it does not hold (bypassing its own accounting by
    // writing the ring directly), another pool's buffer, and a bad length.
    // The server takes a few empty buffers off the (full) fill ring, so it has room again.
    let mut taken = [Desc::default(); 16];
    assert_eq!(sa.port.take_fill(&mut taken), 16);
    // The fill ring took buffers 0..RING; the app still holds the others.
    let app_held = grant_pool::BufHandle::new(PoolId(5), BufIdx(400)).expect("handle");
    let on_fill = grant_pool::BufHandle::new(PoolId(5), BufIdx(10)).expect("handle");
    let foreign = grant_pool::BufHandle::new(PoolId(77), BufIdx(3)).expect("handle");
    assert!(a.dev.pool().holds(app_held) && !a.dev.pool().holds(on_fill));
    let ring = &mut sa.port.rx;
    assert_eq!(ring.reserve(3).expect("reserve"), 3);
    ring.write(0, Desc::new(app_held, 60));
    ring.write(1, Desc::new(foreign, 60));
    ring.write(2, Desc::new(on_fill, 9000));
    ring.publish(3);
    let before = a.dev.pool().held_count();
    a.iface
        .poll(smoltcp::time::Instant::ZERO, &mut a.dev, &mut a.sockets);
    assert_eq!(a.dev.stats().bad_desc, 3);
    assert_eq!(a.dev.stats().rx_frames, 0);
    // The over-long frame's buffer went straight back to the fill ring, unread.
    a.dev.flush().expect("flush");
    assert_eq!(a.dev.pool().held_count(), before);
    assert!(!a.dev.pool().holds(on_fill));
}

#[test]
fn http_get_and_keep_alive_through_two_ring_ports() {
    let (mut a, mut sa) = make(6, 1);
    let (mut b, mut sb) = make(7, 2);
    let root = std::env::temp_dir().join(format!("ferrite-http-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("index.html"), b"<h1>hi</h1>\n").expect("index");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).expect("big");
    let mut http = apps::http::Http::new(&mut b.sockets, root.clone(), 80, 2);
    let mut c = apps::services::tcp_socket(64 * 1024);
    c.connect(
        a.iface.context(),
        endpoint(Ipv4Address::new(10, 9, 0, 2), 80),
        41000,
    )
    .expect("connect");
    let ch = a.sockets.add(c);
    let reqs = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /big.bin HTTP/1.1\r\n\r\nHEAD /nope HTTP/1.1\r\n\r\n";
    let mut sent = false;
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    let mut ms = 0;
    let want_tail = b"Content-Length: 10\r\nConnection: keep-alive\r\n\r\n";
    while !got.ends_with(want_tail) {
        assert!(
            ms < 60_000,
            "no complete responses; got {} bytes",
            got.len()
        );
        step(&mut a, &mut sa, &mut b, &mut sb, ms);
        http.poll(
            &mut b.sockets,
            t0 + std::time::Duration::from_millis(ms as u64),
        );
        let s = a.sockets.get_mut::<smoltcp::socket::tcp::Socket>(ch);
        if !sent && s.may_send() {
            assert_eq!(s.send_slice(reqs).expect("send"), reqs.len());
            sent = true;
        }
        while let Ok(n) = s.recv(|d| (d.len(), d.to_vec())) {
            if n.is_empty() {
                break;
            }
            got.extend_from_slice(&n);
        }
        ms += 1;
    }
    let text = String::from_utf8_lossy(&got[..200]).to_string();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let first_body = b"\r\n\r\n<h1>hi</h1>\n";
    let at = got
        .windows(first_body.len())
        .position(|w| w == first_body)
        .expect("index body");
    let rest = &got[at + first_body.len()..];
    let head_end = rest
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("second head")
        + 4;
    assert!(rest.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(String::from_utf8_lossy(&rest[..head_end]).contains("Content-Length: 300000"));
    assert_eq!(&rest[head_end..head_end + big.len()], &big[..]);
    assert!(rest[head_end + big.len()..].starts_with(b"HTTP/1.1 404 Not Found\r\n"));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_app_whose_free_buffers_wait_on_the_completion_ring_can_sleep() {
    use smoltcp::phy::{Device, TxToken};
    let (mut a, mut sa) = make(1, 1);
    let now = smoltcp::time::Instant::ZERO;
    // Send until no buffer is free; the server takes every frame but gives none back yet.
    let mut taken = Vec::new();
    while let Some(tok) = a.dev.transmit(now) {
        tok.consume(60, |b| {
            b[..6].fill(0xff);
            b[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        });
        a.dev.flush().expect("flush");
        let mut d = [Desc::default(); 64];
        let n = sa.port.take_tx(&mut d);
        taken.extend_from_slice(&d[..n]);
    }
    assert!(!taken.is_empty());
    // The server finishes with them while it sleeps (it asked to be rung), and puts them on
    // the completion ring.
    assert!(!sa.port.tx.ring().set_need_wakeup().expect("flag"));
    assert_eq!(
        sa.port.give_comp(&taken).expect("comp"),
        taken.len(),
        "the ring holds them all"
    );
    // Buffers on the completion ring are not input: the app takes them back and may sleep
    // (it used to report them as work for ever, and spin), and it tells the sleeping server
    // that it made room on the ring.
    assert!(!a.dev.arm_wakeup(), "nothing to do: the app may sleep");
    assert!(!a.dev.arm_wakeup(), "still nothing");
    a.dev.disarm_wakeup();
    assert!(sa._bell.drain().expect("drain"), "the server was rung");
    assert!(a.dev.transmit(now).is_some(), "the buffers are free again");
    conserved(&a, &mut sa);
}

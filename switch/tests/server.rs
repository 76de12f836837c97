//! The `ferrite` server as a separate process, with apps (this test process) attaching over
//! the control socket with real shm grants.

mod server_app;

use std::time::Duration;

use grant_pool::{BufHandle, BufIdx, Desc, Grant, Notifier, PoolId};
use rustix::process::Signal;
use server_app::*;
use switch::ctl::transport::SeqPacket;
use switch::ctl::wire::{HEADER_LEN, MAGIC};
use switch::ctl::{Client, CtlError, ErrorCode, Name, Received, Repr, Transport};

const A: (&str, &str) = ("app-a", "02:00:00:00:00:0a");
const B: (&str, &str) = ("app-b", "02:00:00:00:00:0b");
const H: (&str, &str) = ("hostile", "02:00:00:00:00:0e");

fn two_apps(name: &str) -> (ServerProc, TestApp, TestApp) {
    let dir = test_dir(name);
    let srv = ServerProc::start(&dir, &config_text(&dir.join("ctl.sock"), &[A, B, H], ""));
    let a = TestApp::connect(&srv.socket, A.0, A.1).expect("a attaches");
    let b = TestApp::connect(&srv.socket, B.0, B.1).expect("b attaches");
    (srv, a, b)
}

#[test]
fn apps_attach_and_forward_frames_across_processes() {
    let (srv, mut a, mut b) = two_apps("happy");
    assert_ne!(
        a.attached.pool, b.attached.pool,
        "each app gets its own pool id"
    );
    assert_ne!(a.attached.port, b.attached.port);
    for i in 0..20u8 {
        check_forwarding(&mut a, &mut b, &[b'a', b'b', i]);
        check_forwarding(&mut b, &mut a, &[b'b', b'a', i]);
    }
    let s = wait_stats(&srv, "20 frames each way", |s| {
        port(s, A.0).is_some_and(|p| p.counters.rx_packets >= 20 && p.counters.tx_packets >= 20)
    });
    let pa = port(&s, A.0).expect("a in stats");
    assert!(pa.app);
    assert_eq!(pa.mac, a.mac);
    assert_eq!(pa.counters.errors, 0);
    assert!(s.first_frame_ns.is_some(), "first forwarded frame recorded");
    // Idle now: the server asks the apps to kick its notifier when they send again.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !a.port.tx.needs_wakeup() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        a.port.tx.needs_wakeup(),
        "need-wakeup armed on an idle tx ring"
    );
    check_forwarding(&mut a, &mut b, b"kicked");
    // b asks to be kicked when frames arrive.
    b.port.rx.set_need_wakeup().expect("arm rx");
    check_forwarding(&mut a, &mut b, b"to a sleeping b");
    // Both directions' doorbells show up in the stats.
    let s = wait_stats(&srv, "a kick from a, a kick to b", |s| {
        port(s, A.0).is_some_and(|p| p.counters.kicks_from_app >= 1)
            && port(s, B.0).is_some_and(|p| p.counters.kicks_to_app >= 1)
    });
    let pa = port(&s, A.0).expect("a in stats");
    assert_eq!(pa.counters.kicks_to_app, 0, "a never asked to be kicked");
    // Detach: Closed, and the port leaves the switch.
    a.client.detach().expect("detach");
    wait_stats(&srv, "a gone", |s| port(s, A.0).is_none());
    assert!(port(&srv.stats(), B.0).is_some());
}

/// Descriptors to attach to a message.
#[derive(Clone, Copy)]
enum Fds {
    None,
    /// Sealed memfds of a real grant (the kind a grant carries).
    Memfds(usize),
    /// Open files of another kind (`/dev/null`).
    Files(usize),
}

/// Messages to send, each with the descriptors to attach.
type Steps = Vec<(Vec<u8>, Fds)>;

/// Sends raw bytes with optional descriptors on a fresh connection; returns the answer.
fn raw_exchange(sock: &std::path::Path, steps: &Steps) -> Result<Repr, CtlError> {
    let mut t = SeqPacket::connect(sock)?;
    let files: Vec<std::os::fd::OwnedFd> = (0..6)
        .map(|_| std::fs::File::open("/dev/null").expect("null").into())
        .collect();
    let (grant, _, _) = prepare(grant_pool::PortLayout::simple(64, 64).expect("layout"));
    let memfds: Vec<std::os::fd::OwnedFd> = grant
        .attachments()
        .iter()
        .cycle()
        .take(6)
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    let mut c = None;
    for (i, (bytes, attach)) in steps.iter().enumerate() {
        let (pool, nfds) = match *attach {
            Fds::None => (&files, 0),
            Fds::Memfds(n) => (&memfds, n),
            Fds::Files(n) => (&files, n),
        };
        let fds: Vec<std::os::fd::BorrowedFd<'_>> =
            pool.iter().map(std::os::fd::AsFd::as_fd).collect();
        if nfds > switch::ctl::transport::MAX_FDS {
            // More than our own sender allows: what a hostile peer would do.
            let mut space =
                [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
            let mut cmsg = rustix::net::SendAncillaryBuffer::new(&mut space);
            assert!(cmsg.push(rustix::net::SendAncillaryMessage::ScmRights(&fds[..nfds])));
            rustix::net::sendmsg(
                &t,
                &[std::io::IoSlice::new(bytes)],
                &mut cmsg,
                rustix::net::SendFlags::empty(),
            )
            .map_err(std::io::Error::from)
            .expect("sendmsg");
        } else {
            t.send(bytes, &fds[..nfds])?;
        }
        let mut buf = vec![0u8; 70000];
        let mut got = Vec::new();
        t.set_read_timeout(Some(Duration::from_secs(5)))?;
        match t.recv(&mut buf, &mut got)? {
            Received::Message { len, .. } => {
                let r = Repr::from_bytes(&buf[..len])?;
                if i + 1 == steps.len() || matches!(r, Repr::Error { .. }) {
                    c = Some(r);
                    break;
                }
            }
            _ => return Err(CtlError::Closed),
        }
    }
    // After an error the server closes the connection.
    if matches!(c, Some(Repr::Error { .. })) {
        let mut buf = vec![0u8; 64];
        let mut got = Vec::new();
        assert_eq!(
            t.recv(&mut buf, &mut got)?,
            Received::Closed,
            "connection closed after the error"
        );
    }
    c.ok_or(CtlError::Closed)
}

fn hello(name: &str, m: &str) -> Vec<u8> {
    Repr::Hello {
        name: Name::new(name).expect("name"),
        mac: mac(m),
    }
    .to_bytes()
}

#[test]
fn hostile_control_messages_get_an_error_and_a_closed_connection_others_carry_on() {
    let (srv, mut a, mut b) = two_apps("hostile-ctl");
    let mut bad_magic = Repr::StatsRequest.to_bytes();
    bad_magic[0] ^= 0xff;
    let mut bad_version = Repr::StatsRequest.to_bytes();
    bad_version[4] = 77;
    let mut bad_kind = Repr::StatsRequest.to_bytes();
    bad_kind[6] = 99;
    let mut bad_len = Repr::StatsRequest.to_bytes();
    bad_len.extend_from_slice(&[0; 3]);
    let mut bad_name = hello(H.0, H.1);
    bad_name[HEADER_LEN + 8] = b'/';
    let mut multicast = hello(H.0, H.1);
    multicast[HEADER_LEN] = 0x03;
    let (_, _, mut grant) = prepare(grant_pool::PortLayout::simple(64, 64).expect("layout"));
    let good_grant = Repr::Grant(grant.clone()).to_bytes();
    grant.rx_size = 3;
    let bad_layout = Repr::Grant(grant.clone()).to_bytes();
    let mut huge = MAGIC.to_le_bytes().to_vec();
    huge.resize(switch::ctl::wire::MAX_APP_MSG + 1000, 0);
    let cases: Vec<(&str, Steps, ErrorCode)> = vec![
        (
            "garbage",
            vec![(vec![1, 2, 3], Fds::None)],
            ErrorCode::Malformed,
        ),
        (
            "bad magic",
            vec![(bad_magic, Fds::None)],
            ErrorCode::Malformed,
        ),
        (
            "bad version",
            vec![(bad_version, Fds::None)],
            ErrorCode::UnsupportedVersion,
        ),
        (
            "unknown kind",
            vec![(bad_kind, Fds::None)],
            ErrorCode::Malformed,
        ),
        (
            "length mismatch",
            vec![(bad_len, Fds::None)],
            ErrorCode::Malformed,
        ),
        (
            "over-long message",
            vec![(huge, Fds::None)],
            ErrorCode::Malformed,
        ),
        ("bad name", vec![(bad_name, Fds::None)], ErrorCode::BadName),
        (
            "multicast mac",
            vec![(multicast, Fds::None)],
            ErrorCode::BadMac,
        ),
        (
            "grant before hello",
            vec![(good_grant.clone(), Fds::Memfds(2))],
            ErrorCode::UnexpectedMessage,
        ),
        (
            "fds with hello",
            vec![(hello(H.0, H.1), Fds::Memfds(2))],
            ErrorCode::BadFds,
        ),
        (
            "too many fds",
            vec![(hello(H.0, H.1), Fds::Memfds(6))],
            ErrorCode::BadFds,
        ),
        (
            "grant with /dev/null for memory",
            vec![
                (hello(H.0, H.1), Fds::None),
                (good_grant.clone(), Fds::Files(2)),
            ],
            ErrorCode::BadFds,
        ),
        (
            "grant with four memfds",
            vec![
                (hello(H.0, H.1), Fds::None),
                (good_grant.clone(), Fds::Memfds(4)),
            ],
            ErrorCode::BadFds,
        ),
        (
            "grant with too few fds",
            vec![(hello(H.0, H.1), Fds::None), (good_grant, Fds::Memfds(1))],
            ErrorCode::BadFds,
        ),
        (
            "ring size not a power of two",
            vec![(hello(H.0, H.1), Fds::None), (bad_layout, Fds::Memfds(2))],
            ErrorCode::BadLayout,
        ),
        (
            "hello twice",
            vec![(hello(H.0, H.1), Fds::None), (hello(H.0, H.1), Fds::None)],
            ErrorCode::UnexpectedMessage,
        ),
        (
            "name not allowed",
            vec![(hello("intruder", H.1), Fds::None)],
            ErrorCode::NotPermitted,
        ),
        (
            "someone else's mac",
            vec![(hello(H.0, A.1), Fds::None)],
            ErrorCode::NotPermitted,
        ),
        (
            "detach before connect",
            vec![
                (Repr::Detach.to_bytes(), Fds::None),
                (Repr::Detach.to_bytes(), Fds::None),
            ],
            ErrorCode::Malformed,
        ),
    ];
    let mut expected = std::collections::HashMap::<ErrorCode, u64>::new();
    for (i, (what, steps, code)) in cases.into_iter().enumerate() {
        let r = raw_exchange(&srv.socket, &steps);
        if what == "detach before connect" {
            // Detach before Connected is allowed: Closed, then the connection is gone.
            assert!(
                matches!(r, Ok(Repr::Closed)) || matches!(r, Err(CtlError::Closed)),
                "{what}: {r:?}"
            );
            continue;
        }
        match r {
            Ok(Repr::Error { code: c, text }) => {
                assert_eq!(c, code, "{what}: {text}");
                assert!(!text.is_empty(), "{what}: the error says why");
            }
            other => panic!("{what}: expected {code:?}, got {other:?}"),
        }
        *expected.entry(code).or_default() += 1;
        // The connected apps are untouched.
        check_forwarding(&mut a, &mut b, &[b'h', i as u8]);
    }
    let s = srv.stats();
    for (code, n) in expected {
        let got = s
            .rejections
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0, |(_, n)| *n);
        assert_eq!(got, n, "rejections counted for {code}");
    }
}

#[test]
fn one_uid_holds_a_bounded_number_of_control_connections() {
    let dir = test_dir("per-uid");
    let srv = ServerProc::start(
        &dir,
        &config_text(&dir.join("ctl.sock"), &[A, B], "max_conns_per_uid = 3"),
    );
    let mut a = TestApp::connect(&srv.socket, A.0, A.1).expect("a attaches");
    let idle: Vec<SeqPacket> = (0..2)
        .map(|_| SeqPacket::connect(&srv.socket).expect("connect"))
        .collect();
    // The server refuses a connection at once, with no request: wait until a fourth is.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        let mut t = SeqPacket::connect(&srv.socket).expect("connect");
        t.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut buf = vec![0u8; 70000];
        let mut fds = Vec::new();
        if let Ok(Received::Message { len, .. }) = t.recv(&mut buf, &mut fds)
            && let Ok(Repr::Error { code, text }) = Repr::from_bytes(&buf[..len])
        {
            break (code, text);
        }
        assert!(std::time::Instant::now() < deadline, "never refused");
    };
    assert_eq!(refused.0, ErrorCode::Busy, "{}", refused.1);
    assert!(refused.1.contains("uid"), "{}", refused.1);
    // The attached app is untouched, and a freed slot is usable again.
    drop(idle);
    let mut b = wait_for(|| TestApp::connect(&srv.socket, B.0, B.1).ok());
    check_forwarding(&mut a, &mut b, b"per-uid");
}

/// Retries `f` (bounded) until it gives a value.
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "gave up waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_stalled_handshake_times_out() {
    let (srv, mut a, mut b) = two_apps("timeout");
    let mut t = SeqPacket::connect(&srv.socket).expect("connect");
    t.send(&hello(H.0, H.1), &[]).expect("hello");
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = vec![0u8; 4096];
    let mut fds = Vec::new();
    let Received::Message { len, .. } = t.recv(&mut buf, &mut fds).expect("init-wait") else {
        panic!("no init-wait");
    };
    assert!(matches!(
        Repr::from_bytes(&buf[..len]),
        Ok(Repr::InitWait(_))
    ));
    // Never send the grant: the 500 ms handshake timeout closes the connection.
    let Received::Message { len, .. } = t.recv(&mut buf, &mut fds).expect("error") else {
        panic!("closed without an error");
    };
    assert!(matches!(
        Repr::from_bytes(&buf[..len]),
        Ok(Repr::Error {
            code: ErrorCode::Timeout,
            ..
        })
    ));
    assert_eq!(t.recv(&mut buf, &mut fds).expect("eof"), Received::Closed);
    check_forwarding(&mut a, &mut b, b"after-timeout");
}

#[test]
fn peer_credentials_must_match_the_config() {
    let dir = test_dir("peercred");
    let (uid, _) = my_ids();
    let socket = dir.join("ctl.sock");
    let cfg = format!(
        "[server]\nsocket = \"{}\"\n[[apps]]\nuid = {}\nname = \"{}\"\nmac = \"{}\"\n",
        socket.display(),
        uid.wrapping_add(1),
        A.0,
        A.1
    );
    let srv = ServerProc::start(&dir, &cfg);
    match TestApp::connect(&srv.socket, A.0, A.1) {
        Err(CtlError::Remote { code, text }) => {
            assert_eq!(code, ErrorCode::NotPermitted);
            assert!(text.contains(&format!("uid {uid}")), "{text}");
        }
        other => panic!("expected NotPermitted, got {:?}", other.map(|a| a.attached)),
    }
}

#[test]
fn a_second_app_with_a_taken_name_is_busy() {
    let (srv, _a, _b) = two_apps("busy");
    match TestApp::connect(&srv.socket, A.0, A.1) {
        Err(CtlError::Remote { code, .. }) => assert_eq!(code, ErrorCode::Busy),
        other => panic!("expected Busy, got {:?}", other.map(|a| a.attached)),
    }
}

/// Every doorbell descriptor an app holds, made blocking and saturated: the server must not
/// wait on any of them. (An eventfd the server reads or writes is at the app's mercy: it
/// clears `O_NONBLOCK` on the shared open file and leaves the counter at 0 or at its
/// maximum; the server's own end of a socketpair is not.)
fn attack_doorbell(app: &TestApp) {
    let mut fds = app.notifier.attachments();
    fds.push(app.notifier.poll_fd());
    for fd in fds {
        let fl = rustix::fs::fcntl_getfl(fd).expect("F_GETFL");
        rustix::fs::fcntl_setfl(fd, fl - rustix::fs::OFlags::NONBLOCK).expect("F_SETFL");
        // An eventfd takes this as its counter, one below the most it holds.
        let _ = rustix::io::write(fd, &0xffff_ffff_ffff_fffe_u64.to_ne_bytes());
        // A socket is filled until it takes no more.
        while rustix::net::send(fd, &[0u8; 4096], rustix::net::SendFlags::DONTWAIT)
            .is_ok_and(|n| n > 0)
        {}
    }
}

#[test]
fn an_app_cannot_freeze_the_server_through_its_doorbell() {
    let (srv, mut a, mut b) = two_apps("doorbell");
    let mut h = TestApp::connect(&srv.socket, H.0, H.1).expect("the hostile app attaches");
    // The hostile app asks to be rung for every frame, makes its doorbell blocking and
    // saturated, and never reads it again.
    h.port.rx.set_need_wakeup().expect("arm rx");
    attack_doorbell(&h);
    for i in 0..10u8 {
        // Broadcasts reach the hostile app: the server rings it.
        a.send([0xff; 6], &[b'b', i]);
        // Idle long enough for the server to drain the doorbells on its way to sleep.
        std::thread::sleep(Duration::from_millis(60));
        check_forwarding(&mut a, &mut b, &[b'a', b'b', i]);
        check_forwarding(&mut b, &mut a, &[b'b', b'a', i]);
    }
    let s = srv.stats();
    assert!(port(&s, H.0).is_some(), "the hostile app is still attached");
}

/// Closing a descriptor can block (a TCP socket with `SO_LINGER` and unsent data waits for
/// the linger time); one sent by an app in a control message must not stall the control
/// thread, which answers every other app meanwhile.
#[test]
fn a_descriptor_that_blocks_on_close_does_not_stall_the_control_thread() {
    let (srv, mut a, mut b) = two_apps("linger");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    // Never accepted, never read: what the socket sends stays queued.
    let tcp = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("tcp");
    tcp.set_nonblocking(true).expect("non-blocking");
    rustix::net::sockopt::set_socket_linger(&tcp, Some(Duration::from_secs(20)))
        .expect("SO_LINGER");
    while std::io::Write::write(&mut &tcp, &[0u8; 65536]).is_ok() {}
    let (_, _, grant) = prepare(grant_pool::PortLayout::simple(64, 64).expect("layout"));
    let mut t = SeqPacket::connect(&srv.socket).expect("connect");
    t.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    t.send(&hello(H.0, H.1), &[]).expect("hello");
    let mut buf = vec![0u8; 70000];
    let mut got = Vec::new();
    assert!(matches!(
        t.recv(&mut buf, &mut got),
        Ok(Received::Message { .. })
    ));
    // The lingering socket where the grant's memory belongs; the server holds its last copy.
    let fds = [
        std::os::fd::AsFd::as_fd(&tcp),
        std::os::fd::AsFd::as_fd(&tcp),
    ];
    t.send(&Repr::Grant(grant).to_bytes(), &fds).expect("grant");
    drop(tcp);
    match t.recv(&mut buf, &mut got) {
        Ok(Received::Message { len, .. }) => assert!(matches!(
            Repr::from_bytes(&buf[..len]),
            Ok(Repr::Error {
                code: ErrorCode::BadFds,
                ..
            })
        )),
        other => panic!("no refusal: {other:?}"),
    }
    // The control thread answers at once, and the switch forwards.
    for i in 0..3u8 {
        let mut c = Client::connect(&srv.socket).expect("connect");
        c.transport()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.stats().expect("stats answered while the close lingers");
        check_forwarding(&mut a, &mut b, &[b'l', i]);
    }
}

#[test]
fn spoofed_source_macs_are_dropped_and_counted() {
    let (srv, mut a, mut b) = two_apps("spoof");
    for i in 0..5u8 {
        a.send_from(mac(B.1), mac("02:00:00:00:00:99"), &[b's', i]);
    }
    // A runt (shorter than an Ethernet header) too.
    let i = a.free.pop().expect("buf");
    let h = a.handle(i);
    a.push_tx(Desc::new(h, 10));
    let s = wait_stats(&srv, "5 spoofed and 1 runt", |s| {
        port(s, A.0).is_some_and(|p| p.counters.spoofed == 5 && p.counters.runt == 1)
    });
    let c = port(&s, A.0).expect("a").counters;
    assert_eq!(c.rx_dropped, 6, "{c:?}");
    assert_eq!(c.errors, 6, "{c:?}");
    // The refused buffers come back on A's completion ring.
    let before = a.free.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a.free.len() < before + 6 && std::time::Instant::now() < deadline {
        a.poll();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(a.free.len(), before + 6, "refused buffers returned");
    assert!(
        b.poll().iter().all(|f| f.get(14) != Some(&b's')),
        "no spoofed frame delivered"
    );
    check_forwarding(&mut a, &mut b, b"honest");
}

#[test]
fn frames_over_an_apps_rate_or_to_link_local_groups_are_dropped_and_counted() {
    let dir = test_dir("rate");
    // 10 frames a second: a bucket of 64 frames (the least), then 10 a second.
    let cfg = config_text(
        &dir.join("ctl.sock"),
        &[A, B],
        "app_max_frames_per_sec = 10",
    );
    let srv = ServerProc::start(&dir, &cfg);
    let mut a = TestApp::connect(&srv.socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&srv.socket, B.0, B.1).expect("b attaches");
    // An LLDP frame and a pause frame: never forwarded.
    a.send(mac("01:80:c2:00:00:0e"), b"lldp");
    a.send(mac("01:80:c2:00:00:01"), b"pause");
    let s = wait_stats(&srv, "2 link-local frames", |s| {
        port(s, A.0).is_some_and(|p| p.counters.link_local == 2)
    });
    assert_eq!(port(&s, A.0).expect("a").counters.errors, 2);
    // 200 frames at once: at most the bucket's 64 and what 10 a second adds pass.
    let dst = b.mac;
    let mut sent = 0;
    while sent < 200 {
        let k = (200 - sent).min(100);
        let ds: Vec<Desc> = (0..k)
            .map(|_| {
                let i = a.free.pop().expect("free buffer");
                let h = a.handle(i);
                let mut f = dst.to_vec();
                f.extend_from_slice(&a.mac);
                f.extend_from_slice(&ETHERTYPE);
                f.extend_from_slice(b"rate");
                f.resize(60, 0);
                a.pool.buf(h).expect("buf").write(0, &f).expect("write");
                Desc::new(h, 60)
            })
            .collect();
        a.push_tx_many(&ds);
        sent += k;
        wait_stats(&srv, "the batch taken", |s| {
            port(s, A.0).is_some_and(|p| p.counters.rx_packets as usize >= sent + 2)
        });
        a.poll();
    }
    let s = wait_stats(&srv, "frames over the rate counted", |s| {
        port(s, A.0).is_some_and(|p| p.counters.rate_limited >= 100)
    });
    let c = port(&s, A.0).expect("a").counters;
    assert!(c.rate_limited <= 200 - 64, "{c:?}");
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        got += b
            .poll()
            .iter()
            .filter(|f| f.get(14..18) == Some(b"rate"))
            .count() as u64;
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        got,
        200 - c.rate_limited,
        "every frame within the rate arrived"
    );
    assert!(
        b.poll().iter().all(|f| f.get(14..18) != Some(b"lldp")),
        "a link-local frame arrived"
    );
    // `ferrite stats` shows them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["stats", "--socket"])
        .arg(&srv.socket)
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = format!(
        "{} dropped: group_source 0 link_local 2 rate_limited {}",
        A.0, c.rate_limited
    );
    assert!(text.contains(&line), "missing {line:?}:\n{text}");
}

#[test]
fn garbage_in_rings_is_counted_and_harms_no_other_app() {
    let (srv, mut a, mut b) = two_apps("garbage");
    let mut h = TestApp::connect(&srv.socket, H.0, H.1).expect("hostile attaches");
    let own = PoolId(h.attached.pool);
    let other = PoolId(a.attached.pool);
    // A descriptor naming A's pool, one past the pool, one longer than a buffer, the same
    // (valid) frame twice in one batch (the second time H no longer holds it), and two whose
    // offload metadata makes no sense: partial and verified at once, a segment size with no
    // partial checksum.
    let i = h.free.pop().expect("buf");
    let twice = h.handle(i);
    let mut f = b.mac.to_vec();
    f.extend_from_slice(&h.mac);
    f.extend_from_slice(&ETHERTYPE);
    f.resize(60, 0);
    h.pool.buf(twice).expect("buf").write(0, &f).expect("write");
    let bad = [
        Desc::new(BufHandle::new(other, BufIdx(0)).expect("h"), 60),
        Desc::new(BufHandle::new(own, BufIdx(4096)).expect("h"), 60),
        Desc::new(h.handle(3), 4000),
        Desc::new(twice, 60),
        Desc::new(twice, 60),
        Desc {
            meta: 0xc000,
            ..Desc::new(h.handle(5), 60)
        },
        Desc {
            meta: 40,
            ..Desc::new(h.handle(6), 60)
        },
    ];
    h.push_tx_many(&bad);
    let s = wait_stats(&srv, "one of each rejection", |s| {
        port(s, H.0).is_some_and(|p| {
            let c = &p.counters;
            c.bad_pool == 1
                && c.bad_index == 1
                && c.bad_len == 1
                && c.not_held == 1
                && c.bad_meta == 2
        })
    });
    // The valid frame went through once, to B.
    assert_eq!(port(&s, H.0).expect("h").counters.rx_packets, 1);
    check_forwarding(&mut a, &mut b, b"unharmed-1");
    // Now an impossible producer index on the tx ring: more than a ring ahead.
    let tx_off = h.layout.tx_off();
    h.grant
        .region()
        .write(tx_off, &0x7fff_0000u32.to_ne_bytes())
        .expect("write");
    // And garbage over every descriptor of the fill ring.
    let fill = h.layout.fill_off() + grant_pool::ring::DESC_OFF;
    let len = h.layout.fill().size() as usize * 8;
    h.grant.region().fill(fill, len, 0xa5).expect("fill");
    wait_stats(&srv, "index_ahead counted", |s| {
        port(s, H.0).is_some_and(|p| p.counters.index_ahead > 0)
    });
    for i in 0..10u8 {
        check_forwarding(&mut a, &mut b, &[b'u', i]);
    }
    // Flood to H's broken fill ring must not hurt either.
    a.send([0xff; 6], b"broadcast");
    assert!(
        b.expect_frame(b"broadcast", Duration::from_secs(5))
            .is_some()
    );
    drop(h);
}

/// Not a test on its own: the body of a child process that attaches as H, keeps frames in
/// flight and then waits to be killed (run by `a_killed_app_is_detached_...`).
#[test]
fn child_app_process() {
    let Some(sock) = std::env::var_os("FERRITE_TEST_CHILD_APP") else {
        return;
    };
    let mut h = TestApp::connect(std::path::Path::new(&sock), H.0, H.1).expect("child attaches");
    // Frames to an unknown station: flooded, in flight when the process dies.
    for i in 0..100u8 {
        h.send(mac("02:00:00:00:00:77"), &[b'k', i]);
    }
    println!("child-attached");
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_killed_app_is_detached_and_others_carry_on() {
    let (srv, mut a, mut b) = two_apps("death");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "child_app_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FERRITE_TEST_CHILD_APP", &srv.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child app");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.contains("child-attached") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut out, &mut line).expect("read");
        assert!(n > 0, "the child app exited before attaching");
    }
    // H is on the switch and receives what A floods.
    wait_stats(&srv, "h attached", |s| port(s, H.0).is_some());
    a.send([0xff; 6], b"to-all");
    wait_stats(&srv, "h got the broadcast", |s| {
        port(s, H.0).is_some_and(|p| p.counters.tx_packets >= 1)
    });
    child.kill().expect("kill");
    let _ = child.wait();
    wait_stats(&srv, "h gone", |s| port(s, H.0).is_none());
    check_forwarding(&mut a, &mut b, b"after-death");
    // Its name and MAC are free again: a new H attaches and traffic reaches it.
    let mut h2 = TestApp::connect(&srv.socket, H.0, H.1).expect("h attaches again");
    check_forwarding(&mut h2, &mut b, b"reborn");
    check_forwarding(&mut a, &mut h2, b"to-reborn");
    // A detached app's connection closing is the same event as a death.
    drop(h2);
    wait_stats(&srv, "h2 gone", |s| port(s, H.0).is_none());
    check_forwarding(&mut b, &mut a, b"still");
}

#[test]
fn sigterm_shuts_down_cleanly_and_removes_the_socket() {
    let (mut srv, a, _b) = two_apps("sigterm");
    srv.signal(Signal::TERM);
    let (st, err) = srv.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "exit status {st:?}: {err}");
    assert!(err.contains("ferrite stopped"), "{err}");
    assert!(!srv.socket.exists(), "socket removed");
    drop(a);
}

#[test]
fn restart_after_sigkill_apps_reattach_and_frames_flow() {
    let (mut srv, mut a, mut b) = two_apps("restart");
    check_forwarding(&mut a, &mut b, b"before");
    let instance = a.attached.instance;
    srv.signal(Signal::KILL);
    let _ = srv.wait_exit(Duration::from_secs(10));
    assert!(
        srv.socket.exists(),
        "a killed server leaves its socket behind"
    );
    // The apps notice: their control connection is closed.
    assert!(matches!(a.client.receive(), Err(CtlError::Closed)));
    let cfg = std::fs::read_to_string(&srv.config).expect("config");
    let dir = srv.dir.clone();
    // Keep the directory: the stale socket in it is what the next server must clear.
    srv.cleanup = false;
    drop(srv);
    let srv2 = ServerProc::start(&dir, &cfg);
    let mut a2 = TestApp::connect(&srv2.socket, A.0, A.1).expect("a again");
    let mut b2 = TestApp::connect(&srv2.socket, B.0, B.1).expect("b again");
    assert_ne!(a2.attached.instance, instance, "a new server instance");
    check_forwarding(&mut a2, &mut b2, b"after");
    let s = srv2.stats();
    assert!(s.first_frame_ns.is_some());
}

#[test]
fn a_second_server_on_a_live_socket_is_refused() {
    let (srv, _a, _b) = two_apps("second");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--config"])
        .arg(&srv.config)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another server is listening"), "{err}");
    // The first server still answers.
    srv.stats();
}

#[test]
fn ferrite_stats_prints_a_table() {
    let (srv, mut a, mut b) = two_apps("stats-cli");
    check_forwarding(&mut a, &mut b, b"x");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["stats", "--socket"])
        .arg(&srv.socket)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "rx_pkts",
        "sim0",
        A.0,
        B.0,
        A.1,
        "first frame forwarded",
        "kicks_out",
        "kicks_in",
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
    let _ = Client::connect(&srv.socket).expect("still serving");
}

#[test]
fn mutated_control_messages_never_stop_the_server() {
    let (mut srv, mut a, mut b) = two_apps("fuzz");
    let (_, _, grant) = prepare(grant_pool::PortLayout::simple(64, 64).expect("layout"));
    let seeds = [
        hello(H.0, H.1),
        Repr::Grant(grant).to_bytes(),
        Repr::StatsRequest.to_bytes(),
        Repr::Detach.to_bytes(),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..300u32 {
        let mut m = seeds[(next() % seeds.len() as u64) as usize].clone();
        for _ in 0..1 + next() % 4 {
            let i = (next() % m.len() as u64) as usize;
            m[i] = next() as u8;
        }
        if next() % 8 == 0 {
            m.truncate((next() % m.len() as u64) as usize);
        }
        let Ok(mut t) = SeqPacket::connect(&srv.socket) else {
            panic!("round {round}: the server stopped accepting");
        };
        let _ = t.send(&m, &[]);
        let _ = t.set_read_timeout(Some(Duration::from_secs(5)));
        let mut buf = vec![0u8; 70000];
        let mut fds = Vec::new();
        // Whatever it was: an answer (error, init-wait, stats, closed) or a closed socket.
        match t.recv(&mut buf, &mut fds) {
            Ok(Received::Message { len, .. }) => {
                assert!(
                    Repr::from_bytes(&buf[..len]).is_ok(),
                    "round {round}: a well-formed answer"
                );
            }
            Ok(Received::Closed) => {}
            other => panic!("round {round}: {other:?}"),
        }
        if round % 50 == 0 {
            check_forwarding(&mut a, &mut b, &[b'f', round as u8]);
        }
    }
    assert!(
        srv.child.try_wait().expect("wait").is_none(),
        "the server is alive"
    );
    check_forwarding(&mut a, &mut b, b"fuzz-end");
}

/// `ferrite serve` admitting A, its stderr going to a file, started in a fresh directory named
/// after `name`; returns once its control socket answers: the process, the directory, the
/// socket and the log file.
fn serve_logging_to_a_file(
    name: &str,
) -> (
    std::process::Child,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = test_dir(name);
    let sock = dir.join("ctl.sock");
    let cfg = dir.join("server.toml");
    std::fs::write(&cfg, config_text(&sock, &[A], "")).expect("config");
    let log = dir.join("stderr.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while Client::connect(&sock).and_then(|mut c| c.stats()).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "server did not come up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, dir, sock, log)
}

#[test]
fn logs_written_to_a_file_carry_no_colour_escapes() {
    let (mut child, dir, _sock, log) = serve_logging_to_a_file("plain-logs");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("port up"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "escape codes in a log file: {text:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ferrite_stats_json_and_watch_report_what_was_sent() {
    let (srv, mut a, mut b) = two_apps("stats-json");
    for i in 0..5u8 {
        check_forwarding(&mut a, &mut b, &[b'j', i]);
    }
    let s = wait_stats(&srv, "5 frames from a", |s| {
        port(s, A.0).is_some_and(|p| p.counters.rx_packets >= 5)
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["stats", "--json", "--socket"])
        .arg(&srv.socket)
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let ports = v["ports"].as_array().expect("ports");
    let pa = ports.iter().find(|p| p["name"] == A.0).expect("a's port");
    let want = port(&s, A.0).expect("a").counters;
    assert_eq!(pa["kind"], "app");
    assert_eq!(pa["mac"], A.1);
    assert!(pa["counters"]["rx_packets"].as_u64() >= Some(want.rx_packets));
    let pb = ports.iter().find(|p| p["name"] == B.0).expect("b's port");
    assert!(pb["counters"]["tx_packets"].as_u64() >= Some(5));
    // An app cannot read another app's pool: every frame reached B by copy.
    assert!(pb["counters"]["tx_by_copy"].as_u64() >= Some(5), "{pb}");
    assert_eq!(pb["counters"]["tx_by_handle"], 0, "{pb}");
    assert!(v["uptime_ns"].as_u64() > Some(0));
    // Rates: two tables, then it stops.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["stats", "--watch", "0.2", "--count", "2", "--socket"])
        .arg(&srv.socket)
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("rx_pkts/s").count(), 2, "{text}");
    assert!(text.contains(A.0));
    // A bad period is refused before anything is asked of the server.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["stats", "--watch", "0", "--socket"])
        .arg(&srv.socket)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("seconds from 0.1"));
}

#[test]
fn the_metrics_endpoint_serves_the_counters_in_the_prometheus_format() {
    use std::io::{Read, Write};
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = test_dir("metrics");
    let extra = format!("\n[metrics]\nlisten = \"127.0.0.1:{http}\"\n");
    let srv = ServerProc::start(&dir, &config_text(&dir.join("ctl.sock"), &[A, B], &extra));
    let mut a = TestApp::connect(&srv.socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&srv.socket, B.0, B.1).expect("b attaches");
    check_forwarding(&mut a, &mut b, b"metrics");
    wait_stats(&srv, "b got it", |s| {
        port(s, B.0).is_some_and(|p| p.counters.tx_packets >= 1)
    });
    let get = |path: &str| {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", http)).expect("connect");
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        let mut r = String::new();
        c.read_to_string(&mut r).expect("read");
        r
    };
    let r = get("/metrics");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    let body = r.split("\r\n\r\n").nth(1).expect("body").to_string();
    assert!(body.contains(&format!(
        "ferrite_port_tx_packets_total{{port=\"{}\",name=\"{}\",kind=\"app\"}}",
        port(&srv.stats(), B.0).expect("b").port,
        B.0
    )));
    assert!(get("/other").starts_with("HTTP/1.1 404"));
    // A client that trickles its request holds the endpoint no longer than the request's
    // time limit (2 s): another scrape meanwhile is answered.
    let slow = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", http)).expect("connect");
        for b in b"GET /metrics HTTP/1.1\r\nX: ".iter().chain(&[b'y'; 16]) {
            if c.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let t0 = std::time::Instant::now();
    assert!(get("/metrics").starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "a trickling client held the endpoint for {:?}",
        t0.elapsed()
    );
    slow.join().expect("slow client");
    // Prometheus's own checker accepts it.
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(mut p) => {
            p.stdin
                .take()
                .expect("stdin")
                .write_all(body.as_bytes())
                .expect("write");
            let out = p.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(e) => {
            assert!(
                std::env::var_os("FERRITE_E2E").is_none(),
                "FERRITE_E2E is set but promtool cannot run: {e}"
            );
            eprintln!("promtool not installed: the exposition was not checked by it");
        }
    }
}

#[test]
fn a_flood_of_refused_messages_is_logged_a_few_lines_at_a_time() {
    let (mut child, dir, sock, log) = serve_logging_to_a_file("refusal-log");
    for _ in 0..50 {
        let r = raw_exchange(&sock, &vec![(vec![1, 2, 3], Fds::None)]);
        assert!(
            matches!(
                r,
                Ok(Repr::Error {
                    code: ErrorCode::Malformed,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let s = Client::connect(&sock)
        .and_then(|mut c| c.stats())
        .expect("stats");
    let malformed = s
        .rejections
        .iter()
        .find(|(c, _)| *c == ErrorCode::Malformed);
    assert_eq!(malformed.map(|m| m.1), Some(50), "every refusal is counted");
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).expect("log");
    let lines = text.matches("control message refused").count();
    assert!((1..=10).contains(&lines), "{lines} refusal lines: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ferrite_capture_writes_pcapng_that_tshark_reads() {
    let (srv, mut a, mut b) = two_apps("capture");
    check_forwarding(&mut a, &mut b, b"before");
    let file = srv.dir.join("a.pcapng");
    // A's port, both ways: frames A sends (the port receives them) and frames to A.
    let mut cap = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["capture", A.0, "-c", "6", "-w"])
        .arg(&file)
        .arg("--socket")
        .arg(&srv.socket)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ferrite capture");
    // Until the capture has its frames: A to B and B to A, a tag each.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0u8;
    while cap.try_wait().expect("wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the capture never ended"
        );
        check_forwarding(&mut a, &mut b, &[b'a', b'b', i]);
        check_forwarding(&mut b, &mut a, &[b'b', b'a', i]);
        i = i.wrapping_add(1);
    }
    let out = cap.wait_with_output().expect("capture");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("6 frames"), "{err}");
    if !std::process::Command::new("tshark")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            std::env::var_os("FERRITE_E2E").is_none(),
            "FERRITE_E2E is set but tshark cannot run"
        );
        eprintln!("tshark not installed: the capture file was not read back");
        return;
    }
    let t = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&file)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "eth.src",
            "-e",
            "eth.dst",
            "-e",
            "frame.len",
            "-e",
            "frame.interface_name",
            "-e",
            "frame.p2p_dir",
            "-e",
            "eth.type",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&t.stdout);
    assert!(
        t.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 6, "{text}");
    for r in &rows {
        assert_eq!(r[3], A.0, "the port's name names the interface: {text}");
        assert_eq!(r[5], "0x88b5", "{text}");
        let (src, dst) = (r[0], r[1]);
        // Received by A's port: sent by A; sent to A's port: from B to A.
        let from_a = src == A.1 && dst == B.1;
        let to_a = src == B.1 && dst == A.1;
        assert!(from_a || to_a, "a frame neither from nor to A: {text}");
        assert_eq!(
            r[4],
            if from_a { "1" } else { "0" },
            "direction flag: {text}"
        );
    }
    // The frames' bytes: each test frame's tag is in it.
    let hex = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&file)
        .args(["-T", "fields", "-e", "data.data"])
        .output()
        .expect("tshark");
    let hex = String::from_utf8_lossy(&hex.stdout);
    assert_eq!(hex.lines().count(), 6, "{hex}");
    assert!(
        hex.lines()
            .all(|l| l.starts_with("6162") || l.starts_with("6261")),
        "payloads carry the tags sent: {hex}"
    );
}

//! The control protocol without the switch: the app-side [`Client`] against a [`Session`]
//! driven over a real `SOCK_SEQPACKET` pair, with real shm grants passed as descriptors.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use grant_pool::shm::{ShmBackend, ShmNotifier};
use grant_pool::{Access, DomId, Grant, GrantBackend, GrantRef, Mapping, Notifier, PortLayout};
use switch::ctl::{
    AllowedApp, Client, CtlError, ErrorCode, GrantRepr, Limits, Name, Policy, Received, Repr,
    SeqPacket, Session, State, Step, Transport,
};

fn policy(uid: u32) -> Policy {
    Policy {
        allowed: vec![AllowedApp {
            uid: Some(uid),
            gid: None,
            name: "web".into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
        }],
        limits: Limits {
            max_ring: 1024,
            min_buf_size: 2048,
            max_buf_size: 2048,
            max_bufs: 4096,
            max_mem: 64 << 20,
            timeout_ms: 5000,
        },
        grant_fds: (2, 0),
    }
}

/// What [`serve_one`] saw: the states it went through, the grant with its descriptors, and
/// its end of the doorbell it made for the app.
type Seen = (
    Vec<State>,
    Option<(GrantRepr, Vec<OwnedFd>)>,
    Option<ShmNotifier>,
);

/// A minimal server side: one session, answering until it closes; returns what it saw.
/// Like the server, it makes the app's doorbell and sends the app's end with `Connected`.
fn serve_one(mut t: SeqPacket, policy: Policy) -> Seen {
    let peer = t.peer().expect("peer");
    let mut s = Session::new(peer, &policy, Instant::now());
    let mut states = vec![s.state()];
    let mut attached = None;
    let mut bell = None;
    let mut buf = vec![0u8; 65536];
    loop {
        let mut fds = Vec::new();
        let mut send: Vec<OwnedFd> = Vec::new();
        let (len, truncated, surplus) = match t.recv(&mut buf, &mut fds).expect("recv") {
            Received::Message {
                len,
                truncated,
                surplus_fds,
            } => (len, truncated, surplus_fds),
            Received::Closed | Received::WouldBlock => return (states, attached, bell),
        };
        let step = s.on_message(
            &buf[..len],
            fds.len(),
            truncated,
            surplus,
            &policy,
            Instant::now(),
        );
        let (answer, close) = match step {
            Step::Reply(r) => (r, false),
            Step::Close(r) => (r, true),
            Step::Attach { grant, .. } => {
                attached = Some((grant, fds));
                let mut n = ShmBackend::new(DomId::SELF_HOST)
                    .notifier(DomId(1))
                    .expect("doorbell");
                send = n.take_attachments();
                bell = Some(n);
                (s.attached(5, 9, 77), false)
            }
            Step::Stats => (Repr::StatsReply(Default::default()), false),
            Step::Capture { .. } => (
                s.refuse(switch::ctl::CtlError::refused(
                    switch::ctl::ErrorCode::NotPermitted,
                    "no captures here",
                )),
                true,
            ),
            Step::Detach => (s.detached(), true),
        };
        states.push(s.state());
        let out: Vec<BorrowedFd<'_>> = send.iter().map(|f| f.as_fd()).collect();
        t.send(&answer.to_bytes(), &out).expect("send");
        if close {
            return (states, attached, bell);
        }
    }
}

#[test]
fn a_grant_travels_with_its_descriptors_and_maps_on_the_other_side() {
    let uid = rustix::process::getuid().as_raw();
    let (app_end, srv_end) = SeqPacket::pair().expect("pair");
    let server = std::thread::spawn(move || serve_one(srv_end, policy(uid)));

    let layout = PortLayout::simple(64, 128).expect("layout");
    let be = ShmBackend::new(DomId(1));
    let grant = be
        .grant(DomId::SELF_HOST, layout.pages(), Access::ReadWrite)
        .expect("grant");
    grant.region().write(4096 * 3, b"app bytes").expect("write");
    let h = layout.header();
    let repr = GrantRepr {
        rx_size: h.rx_size,
        tx_size: h.tx_size,
        fill_size: h.fill_size,
        comp_size: h.comp_size,
        buf_size: h.buf_size,
        buf_count: h.buf_count,
        domid: 1,
        grant_fds: 2,
        notify_fds: 0,
        notify_port: 0,
        refs: grant.refs().iter().map(|r| r.0).collect(),
    };
    let mut c = Client::new(app_end);
    let limits = c
        .hello(&Name::new("web").expect("name"), [2, 0, 0, 0, 0, 1])
        .expect("hello");
    assert_eq!(limits.max_ring, 1024);
    let (att, bell_fds) = c.grant(&repr, &grant.attachments()).expect("grant");
    assert_eq!((att.port, att.pool, att.instance), (5, 9, 77));
    // The app's end of the doorbell the server made came with Connected.
    let app_bell = be
        .bind_notifier(DomId::SELF_HOST, 0, &bell_fds)
        .expect("bind the doorbell");
    assert!(c.stats().expect("stats").ports.is_empty());
    c.detach().expect("detach");
    drop(c);

    let (states, attached, srv_bell) = server.join().expect("server thread");
    assert_eq!(
        states,
        vec![
            State::Initialising,
            State::InitWait,
            State::Connected,
            State::Connected,
            State::Closed
        ]
    );
    let (g, fds) = attached.expect("attach step");
    assert_eq!(g, repr);
    assert_eq!(fds.len(), 2);
    // The descriptors that arrived are the app's memory.
    let srv = ShmBackend::new(DomId::SELF_HOST);
    let refs: Vec<GrantRef> = g.refs.iter().map(|&r| GrantRef(r)).collect();
    let m = srv
        .map(DomId(1), &refs, Access::ReadWrite, &fds)
        .expect("map");
    let mut b = [0u8; 9];
    m.region().read(4096 * 3, &mut b).expect("read");
    assert_eq!(&b, b"app bytes");
    // The doorbell rings both ways.
    let srv_bell = srv_bell.expect("the server made a doorbell");
    app_bell.notify().expect("ring the server");
    assert!(
        srv_bell
            .wait(Some(std::time::Duration::from_secs(5)))
            .expect("wait")
    );
    srv_bell.notify().expect("ring the app");
    assert!(
        app_bell
            .wait(Some(std::time::Duration::from_secs(5)))
            .expect("wait")
    );
}

#[test]
fn a_refused_hello_is_an_error_for_the_client_and_the_end_of_the_connection() {
    let uid = rustix::process::getuid().as_raw();
    let (app_end, srv_end) = SeqPacket::pair().expect("pair");
    let server = std::thread::spawn(move || serve_one(srv_end, policy(uid.wrapping_add(1))));
    let mut c = Client::new(app_end);
    match c.hello(&Name::new("web").expect("name"), [2, 0, 0, 0, 0, 1]) {
        Err(CtlError::Remote { code, text }) => {
            assert_eq!(code, ErrorCode::NotPermitted);
            assert!(text.contains("may not attach"), "{text}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (states, _, _) = server.join().expect("server thread");
    assert_eq!(states.last(), Some(&State::Closing));
    assert!(matches!(c.receive(), Err(CtlError::Closed)));
}

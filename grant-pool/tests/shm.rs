//! The `shm` grant backend across two processes: fd passing, mapping, read-only enforcement,
//! ending access, death detection and notifiers.

mod common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use grant_pool::shm::{self, ShmBackend};
use grant_pool::{
    Access, BufIdx, DomId, Grant, GrantBackend, GrantError, GrantRef, Mapping, Notifier, Pool,
    PoolId, PoolLayout,
};

const APP: DomId = DomId(7);
const SERVER: DomId = DomId(0);

fn encode(refs: &[GrantRef]) -> Vec<u8> {
    refs.iter().flat_map(|r| r.0.to_le_bytes()).collect()
}

fn decode(b: &[u8]) -> Vec<GrantRef> {
    b.chunks_exact(4)
        .map(|c| GrantRef(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

fn recv(sock: &OwnedFd) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = [0u8; 4096];
    let (n, fds) = shm::recv_fds(sock.as_fd(), &mut buf).expect("recv");
    (buf[..n].to_vec(), fds)
}

fn pattern(i: usize) -> u8 {
    (i * 7 + 3) as u8
}

/// The parent grants four pages read-write and sends them over the socket; the child maps
/// them, checks the parent's bytes, writes an answer, unmaps; the parent sees the answer and
/// can then end access.
#[test]
fn grant_is_shared_across_processes() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 4, Access::ReadWrite).expect("grant");
    let r = g.region();
    let bytes: Vec<u8> = (0..4 * 4096).map(pattern).collect();
    r.write(0, &bytes).expect("fill");
    let (child, sock) = common::spawn_child("child_maps_and_answers");
    shm::send_fds(sock.as_fd(), &encode(g.refs()), &g.attachments()).expect("send");
    let (msg, _) = recv(&sock);
    assert_eq!(msg, b"mapped");
    assert!(
        g.is_mapped().expect("state"),
        "the child maps the pages now"
    );
    // The child keeps its mapping until told to let go, so the check above cannot race it.
    shm::send_fds(sock.as_fd(), b"unmap", &[]).expect("send");
    let (msg, _) = recv(&sock);
    assert_eq!(msg, b"unmapped");
    common::join(child);
    let mut answer = [0u8; 6];
    r.read(3 * 4096 + 100, &mut answer).expect("read");
    assert_eq!(&answer, b"answer");
    assert!(!g.is_mapped().expect("state"));
    g.end_access()
        .map_err(|(_, e)| e)
        .expect("unmapped: access ends");
}

#[test]
fn child_maps_and_answers() {
    let Some(sock) = common::child_sock("child_maps_and_answers") else {
        return;
    };
    let (msg, fds) = recv(&sock);
    let refs = decode(&msg);
    let m = ShmBackend::new(SERVER)
        .map(APP, &refs, Access::ReadWrite, &fds)
        .expect("map");
    drop(fds);
    let mut got = vec![0u8; 4 * 4096];
    m.region().read(0, &mut got).expect("read");
    assert!(got.iter().enumerate().all(|(i, b)| *b == pattern(i)));
    m.region().write(3 * 4096 + 100, b"answer").expect("write");
    shm::send_fds(sock.as_fd(), b"mapped", &[]).expect("send");
    let (msg, _) = recv(&sock);
    assert_eq!(msg, b"unmap");
    drop(m);
    shm::send_fds(sock.as_fd(), b"unmapped", &[]).expect("send");
}

/// A child that maps the pages and is killed: the granter learns the mapper is gone.
#[test]
fn death_of_the_mapper_is_detected() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 2, Access::ReadWrite).expect("grant");
    let (mut child, sock) = common::spawn_child("child_maps_and_hangs");
    shm::send_fds(sock.as_fd(), &encode(g.refs()), &g.attachments()).expect("send");
    let (msg, _) = recv(&sock);
    assert_eq!(msg, b"mapped");
    assert!(g.is_mapped().expect("state"));
    let g = match g.end_access() {
        Err((g, GrantError::StillMapped { mappings: 1 })) => g,
        other => panic!("end_access while mapped: {other:?}"),
    };
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(
        !g.is_mapped().expect("state"),
        "a dead mapper counts as unmapped"
    );
    g.end_access().map_err(|(_, e)| e).expect("access ends");
}

#[test]
fn child_maps_and_hangs() {
    let Some(sock) = common::child_sock("child_maps_and_hangs") else {
        return;
    };
    let (msg, fds) = recv(&sock);
    let _m = ShmBackend::new(SERVER)
        .map(APP, &decode(&msg), Access::ReadWrite, &fds)
        .expect("map");
    shm::send_fds(sock.as_fd(), b"mapped", &[]).expect("send");
    // Wait to be killed (bounded: the parent kills us at once).
    std::thread::sleep(Duration::from_secs(30));
    std::process::exit(3);
}

/// A mapper killed while mapped leaves its slots in the control page claimed; a server
/// restarted many times must still map the grant (the slots of the dead are taken over).
#[test]
fn slots_of_killed_mappers_are_taken_over() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 1, Access::ReadWrite).expect("grant");
    let (mut child, sock) = common::spawn_child("child_claims_every_slot_and_hangs");
    shm::send_fds(sock.as_fd(), &encode(g.refs()), &g.attachments()).expect("send");
    let (msg, _) = recv(&sock);
    let held: usize = std::str::from_utf8(&msg)
        .ok()
        .and_then(|m| m.strip_prefix("full "))
        .and_then(|n| n.parse().ok())
        .expect("the child reports how many slots it holds");
    assert!(held > 1, "the child holds {held} slots");
    child.kill().expect("kill");
    child.wait().expect("reap");
    let fds: Vec<OwnedFd> = g
        .attachments()
        .iter()
        .map(|fd| fd.try_clone_to_owned().expect("dup"))
        .collect();
    let m = ShmBackend::new(SERVER)
        .map(APP, g.refs(), Access::ReadWrite, &fds)
        .expect("the slots of a killed mapper are free again");
    assert!(g.is_mapped().expect("state"));
    drop(m);
    assert!(!g.is_mapped().expect("state"));
}

#[test]
fn child_claims_every_slot_and_hangs() {
    let Some(sock) = common::child_sock("child_claims_every_slot_and_hangs") else {
        return;
    };
    let (msg, fds) = recv(&sock);
    let be = ShmBackend::new(SERVER);
    let mut maps = Vec::new();
    while let Ok(m) = be.map(APP, &decode(&msg), Access::ReadWrite, &fds) {
        maps.push(m);
        assert!(maps.len() <= 4096, "the control page has no slot limit");
    }
    shm::send_fds(sock.as_fd(), format!("full {}", maps.len()).as_bytes(), &[]).expect("send");
    std::thread::sleep(Duration::from_secs(30));
    std::process::exit(3);
}

#[test]
fn end_access_fails_while_mapped_and_succeeds_after_unmap() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 3, Access::ReadWrite).expect("grant");
    let fds: Vec<OwnedFd> = g
        .attachments()
        .iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    let m1 = be.map(APP, g.refs(), Access::ReadWrite, &fds).expect("map");
    let m2 = be
        .map(APP, &g.refs()[1..], Access::ReadOnly, &fds)
        .expect("map");
    let g = match g.end_access() {
        Err((g, GrantError::StillMapped { mappings: 2 })) => g,
        other => panic!("expected StillMapped(2), got {other:?}"),
    };
    drop(m1);
    let g = match g.end_access() {
        Err((g, GrantError::StillMapped { mappings: 1 })) => g,
        other => panic!("expected StillMapped(1), got {other:?}"),
    };
    drop(m2);
    assert!(g.end_access().is_ok());
}

/// A pool built over a mapping keeps the pages mapped, and the granter sees them mapped,
/// after the mapping value is gone: the last handle on them unmaps them.
#[test]
fn a_pool_over_a_mapping_keeps_it_mapped_until_the_pool_is_gone() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 2, Access::ReadWrite).expect("grant");
    g.region().write(4096, b"still here").expect("write");
    let fds: Vec<OwnedFd> = g
        .attachments()
        .iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    let m = be.map(APP, g.refs(), Access::ReadWrite, &fds).expect("map");
    let layout = PoolLayout::new(4096, 2).expect("layout");
    let pool = Pool::new(PoolId(3), layout, m.memory().clone()).expect("pool");
    drop(m);
    assert_eq!(g.live_mappings(), 1, "the pool still maps the pages");
    let h = pool.handle(BufIdx(1)).expect("handle");
    let mut b = [0u8; 10];
    pool.buf(h).expect("buf").read(0, &mut b).expect("read");
    assert_eq!(&b, b"still here");
    drop(pool);
    assert_eq!(g.live_mappings(), 0, "the last handle unmapped them");
    assert!(g.end_access().is_ok());
}

/// A read-only grant cannot be written by the mapper: not through the mapping, not by asking
/// for a writable mapping, not by mmapping the descriptor writable, not by reopening the
/// memfd read-write through /proc.
#[test]
fn read_only_grants_cannot_be_written() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 2, Access::ReadOnly).expect("grant");
    g.region()
        .write(10, b"granter")
        .expect("the granter still writes");
    let fds: Vec<OwnedFd> = g
        .attachments()
        .iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    assert!(matches!(
        be.map(APP, g.refs(), Access::ReadWrite, &fds),
        Err(GrantError::ReadOnly)
    ));
    let m = be
        .map(APP, g.refs(), Access::ReadOnly, &fds)
        .expect("map read-only");
    let mut b = [0u8; 7];
    m.region().read(10, &mut b).expect("read");
    assert_eq!(&b, b"granter");
    assert!(
        m.region().write(0, b"x").is_err(),
        "the region refuses writes"
    );
    for fd in [
        fds[0].try_clone().expect("dup"),
        // Reopening the memfd read-write through /proc succeeds, but the write seal still
        // refuses a writable shared mapping.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", fds[0].as_raw_fd()))
            .map(OwnedFd::from)
            .expect("reopening the memfd read-write through /proc"),
    ] {
        // SAFETY: a fresh mapping at a kernel-chosen address, unmapped below if it succeeds.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p != libc::MAP_FAILED {
            // SAFETY: unmapping the mapping just made.
            unsafe { libc::munmap(p, 4096) };
        }
        assert_eq!(p, libc::MAP_FAILED, "a writable shared mapping must fail");
    }
}

/// A grant maps in one piece: a run of consecutive pages, anywhere in the memfd. Anything
/// else would need a mapping per run (a peer could exhaust `vm.max_map_count` with a
/// fragmented list) and is refused.
#[test]
fn a_run_of_consecutive_references_maps_and_any_other_list_is_refused() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 5, Access::ReadWrite).expect("grant");
    for p in 0..5 {
        g.region().write(p * 4096, &[p as u8 + 1]).expect("mark");
    }
    let fds: Vec<OwnedFd> = g
        .attachments()
        .iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    let run = [GrantRef(1), GrantRef(2), GrantRef(3)];
    let m = be.map(APP, &run, Access::ReadWrite, &fds).expect("map");
    assert_eq!(m.pages(), 3);
    let mut seen = Vec::new();
    for p in 0..3 {
        let mut b = [0u8];
        m.region().read(p * 4096, &mut b).expect("read");
        seen.push(b[0]);
    }
    assert_eq!(seen, [2, 3, 4]);
    m.region().write(4096 + 1, b"z").expect("write");
    let mut b = [0u8];
    g.region().read(2 * 4096 + 1, &mut b).expect("read");
    assert_eq!(&b, b"z", "page 1 of the mapping is granted page 2");
    for refs in [
        &[GrantRef(4), GrantRef(1)][..],
        &[GrantRef(0), GrantRef(2)],
        &[GrantRef(1), GrantRef(0)],
        &[GrantRef(3), GrantRef(4), GrantRef(5)],
    ] {
        assert!(
            matches!(
                be.map(APP, refs, Access::ReadWrite, &fds),
                Err(GrantError::BadRefs(_))
            ),
            "{refs:?} must be refused"
        );
    }
}

/// A sealed huge-page memfd passes the seal check, but a mapping of it covers a whole huge
/// page, past the references: only tmpfs memfds with 4 KiB pages are mapped.
#[test]
fn a_huge_page_memfd_is_refused() {
    // SAFETY: plain syscall with a valid NUL-terminated name; result checked.
    let fd = unsafe {
        libc::memfd_create(
            c"huge".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | libc::MFD_HUGETLB,
        )
    };
    assert!(
        fd >= 0,
        "memfd_create(MFD_HUGETLB): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let huge = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: plain syscalls on our descriptor.
    unsafe {
        assert_eq!(libc::ftruncate(huge.as_raw_fd(), 2 << 20), 0);
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        assert_eq!(libc::fcntl(huge.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
    }
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 1, Access::ReadWrite).expect("grant");
    let ctl = g.attachments()[1].try_clone_to_owned().expect("dup");
    match be.map(APP, &[GrantRef(0)], Access::ReadWrite, &[huge, ctl]) {
        Err(GrantError::BadAttachments(why)) => assert!(why.contains("tmpfs"), "{why}"),
        other => panic!("a huge-page memfd was not refused: {other:?}"),
    }
}

#[test]
fn bad_references_and_attachments_are_refused() {
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 2, Access::ReadWrite).expect("grant");
    let fds: Vec<OwnedFd> = g
        .attachments()
        .iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    let bad = |refs: &[GrantRef], fds: &[OwnedFd]| be.map(APP, refs, Access::ReadWrite, fds).err();
    assert!(matches!(
        bad(&[GrantRef(2)], &fds),
        Some(GrantError::BadRefs(_))
    ));
    assert!(matches!(
        bad(&[GrantRef(u32::MAX)], &fds),
        Some(GrantError::BadRefs(_))
    ));
    assert!(matches!(
        bad(&[GrantRef(1), GrantRef(1)], &fds),
        Some(GrantError::BadRefs(_))
    ));
    assert!(matches!(bad(&[], &fds), Some(GrantError::PageCount { .. })));
    assert!(matches!(
        bad(&[GrantRef(0)], &fds[..1]),
        Some(GrantError::BadAttachments(_))
    ));
    // An unsealed memfd (which its sender could shrink under us) is refused.
    let unsealed: OwnedFd = {
        // SAFETY: plain syscall with a valid NUL-terminated name; result checked.
        let fd = unsafe { libc::memfd_create(c"plain".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: plain syscall on our descriptor.
        assert_eq!(unsafe { libc::ftruncate(fd.as_raw_fd(), 8192) }, 0);
        fd
    };
    let mixed = [unsealed, fds[1].try_clone().expect("dup")];
    assert!(matches!(
        bad(&[GrantRef(0)], &mixed),
        Some(GrantError::BadAttachments(_))
    ));
    // The grant is intact after all that.
    assert!(!g.is_mapped().expect("state"));
    assert!(matches!(
        be.grant(SERVER, 0, Access::ReadWrite).err(),
        Some(GrantError::PageCount { .. })
    ));
}

/// A notifier made by the parent and bound by the child rings both ways; the child's exit
/// closes its end, which the parent sees.
#[test]
fn notifiers_ring_across_processes() {
    let be = ShmBackend::new(SERVER);
    let mut n = be.notifier(APP).expect("notifier");
    let (child, sock) = common::spawn_child("child_rings_back");
    let theirs = n.take_attachments();
    assert!(n.attachments().is_empty(), "taken once");
    let borrowed: Vec<_> = theirs.iter().map(|f| f.as_fd()).collect();
    shm::send_fds(sock.as_fd(), &n.port().to_le_bytes(), &borrowed).expect("send");
    drop(borrowed);
    // The child's end lives in the child alone from here.
    drop(theirs);
    assert!(!n.wait(Some(Duration::ZERO)).expect("poll"), "nothing yet");
    n.notify().expect("ring");
    assert!(
        n.wait(Some(Duration::from_secs(20))).expect("wait"),
        "the child answered"
    );
    common::join(child);
    assert!(!n.peer_gone());
    assert!(n.drain().is_err(), "the child's end closed with it");
    assert!(n.peer_gone());
    assert!(n.notify().is_err(), "nobody to ring");
}

#[test]
fn child_rings_back() {
    let Some(sock) = common::child_sock("child_rings_back") else {
        return;
    };
    let (msg, fds) = recv(&sock);
    let port = u32::from_le_bytes(msg[..4].try_into().expect("4 bytes"));
    let be = ShmBackend::new(APP);
    let n = be.bind_notifier(SERVER, port, &fds).expect("bind");
    assert!(
        n.wait(Some(Duration::from_secs(20))).expect("wait"),
        "the parent rang"
    );
    n.notify().expect("ring back");
}

#[test]
fn binding_something_else_than_one_stream_socket_is_refused() {
    let be = ShmBackend::new(APP);
    let refused = |fds: &[OwnedFd], port: u32| {
        matches!(
            be.bind_notifier(SERVER, port, fds).err(),
            Some(GrantError::BadNotifier(_))
        )
    };
    let (a, b) = shm::seqpacket_pair().expect("pair");
    assert!(refused(&[a], 0), "a seqpacket socket");
    let null = OwnedFd::from(std::fs::File::open("/dev/null").expect("null"));
    assert!(refused(&[null], 0), "a file");
    let mut n = be.notifier(SERVER).expect("notifier");
    let end = n.take_attachments();
    assert!(refused(&end, 9), "a port other than 0");
    let two = [end[0].try_clone().expect("dup"), b];
    assert!(refused(&two, 0), "two descriptors");
    assert!(be.bind_notifier(SERVER, 0, &end).is_ok());
}

/// The doorbell never blocks its holder, whatever the peer does with its end: clears
/// `O_NONBLOCK` on it (the flag of its own open file, not ours), floods it, never reads it.
#[test]
fn a_doorbell_never_blocks_whatever_the_peer_does() {
    let server = ShmBackend::new(SERVER);
    let mut n = server.notifier(APP).expect("notifier");
    let theirs = ShmBackend::new(APP)
        .bind_notifier(SERVER, 0, &n.take_attachments())
        .expect("bind");
    let fd = theirs.poll_fd();
    // SAFETY: plain fcntl on a descriptor `theirs` owns.
    unsafe {
        let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        assert_eq!(
            libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK),
            0
        );
    }
    // The peer never reads: our rings fill its queue, and further ones are dropped.
    for _ in 0..100_000 {
        n.notify().expect("a ring never fails while the peer lives");
    }
    // The peer floods us: a drain takes a bounded bite and returns.
    let junk = [1u8; 4096];
    // SAFETY: sending from a local buffer on a descriptor `theirs` owns.
    while unsafe {
        libc::send(
            fd.as_raw_fd(),
            junk.as_ptr().cast(),
            junk.len(),
            libc::MSG_DONTWAIT,
        )
    } > 0
    {}
    assert!(n.drain().expect("drain"));
    assert!(n.drain().expect("drain"), "more left for the next call");
    assert!(n.wait(Some(Duration::ZERO)).expect("poll"));
    drop(theirs);
    let gone = (0..100_000).find_map(|_| n.drain().err());
    assert!(gone.is_some() && n.peer_gone(), "the closed end is seen");
}

#[test]
fn descriptors_and_bytes_travel_together() {
    let (a, b) = shm::seqpacket_pair().expect("pair");
    let be = ShmBackend::new(APP);
    let g = be.grant(SERVER, 1, Access::ReadWrite).expect("grant");
    shm::send_fds(a.as_fd(), b"two fds", &g.attachments()).expect("send");
    let (msg, fds) = recv(&b);
    assert_eq!(msg, b"two fds");
    assert_eq!(fds.len(), 2);
    shm::send_fds(a.as_fd(), b"none", &[]).expect("send");
    let (msg, fds) = recv(&b);
    assert_eq!((msg.as_slice(), fds.len()), (&b"none"[..], 0));
    drop(a);
    let (msg, fds) = recv(&b);
    assert!(msg.is_empty() && fds.is_empty(), "peer closed");
}

/// One binding shared through an `Arc` (as the server shares an app's event channel, which
/// Xen lets it bind only once, between the port and the control thread): a ring from the
/// peer is seen through any holder, and any holder rings the peer.
#[test]
fn a_shared_binding_rings_and_is_rung_through_every_holder() {
    let server = ShmBackend::new(SERVER);
    let mut bell = server.notifier(APP).expect("notifier");
    let n = ShmBackend::new(APP)
        .bind_notifier(SERVER, 0, &bell.take_attachments())
        .expect("bind");
    let bound = std::sync::Arc::new(bell);
    let (port_side, control_side) = (bound.clone(), bound);
    assert_eq!(port_side.port(), control_side.port());
    assert_eq!(port_side.poll_fd().as_raw_fd(), control_side.as_raw_fd());
    n.notify().expect("the app rings");
    assert!(
        control_side
            .wait(Some(Duration::from_secs(5)))
            .expect("wait"),
        "the control thread's holder sees the app's ring"
    );
    assert!(
        !port_side.drain().expect("drain"),
        "consumed once, by either holder"
    );
    port_side.notify().expect("the port rings");
    assert!(
        n.wait(Some(Duration::from_secs(5))).expect("wait"),
        "the app sees the port's ring"
    );
}

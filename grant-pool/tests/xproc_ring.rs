//! One ring in shm-granted memory, two processes, 10 million descriptors: none lost, none
//! duplicated, order kept.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use grant_pool::pool::PAGE_SIZE;
use grant_pool::shm::{self, ShmBackend};
use grant_pool::{
    Access, Desc, DomId, Grant, GrantBackend, GrantRef, Mapping, RingConsumer, RingLayout,
    RingProducer,
};

const COUNT: u64 = 10_000_000;
const RING: u32 = 512;
const LIMIT: Duration = Duration::from_secs(120);

/// Descriptor number `i`: the handle carries the low 32 bits, len and flags the next 32, so
/// a lost, repeated or reordered descriptor changes what the consumer sees.
fn desc(i: u64) -> Desc {
    Desc {
        handle: i as u32,
        len: (i >> 32) as u16 ^ (i as u16),
        meta: (i >> 48) as u16,
    }
}

/// Spins politely: busy for a while, then yields, so that two spinning processes on a busy
/// two-core machine still make progress.
fn idle(spins: &mut u32, deadline: Instant) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
        assert!(Instant::now() < deadline, "no progress within {LIMIT:?}");
    }
}

#[test]
fn ten_million_descriptors_cross_processes_in_order() {
    let layout = RingLayout::new(RING).expect("size");
    let be = ShmBackend::new(DomId(1));
    let g = be
        .grant(DomId(2), layout.bytes() / PAGE_SIZE, Access::ReadWrite)
        .expect("grant");
    let mut p = RingProducer::new(g.memory().clone(), layout, true).expect("producer");
    let (child, sock) = common::spawn_child("child_consumes_ten_million");
    let refs: Vec<u8> = g.refs().iter().flat_map(|r| r.0.to_le_bytes()).collect();
    shm::send_fds(sock.as_fd(), &refs, &g.attachments()).expect("send grant");

    let deadline = Instant::now() + LIMIT;
    let mut next = 0u64;
    let mut batch = 1u32;
    let mut spins = 0;
    while next < COUNT {
        // Batch sizes cycle through 1..=64 so that every alignment against the wrap occurs.
        batch = batch % 64 + 1;
        let want = batch.min((COUNT - next) as u32);
        let n = p.reserve(want).expect("honest consumer");
        if n == 0 {
            idle(&mut spins, deadline);
            continue;
        }
        spins = 0;
        for i in 0..n {
            p.write(i, desc(next + i as u64));
        }
        p.publish(n);
        next += n as u64;
    }
    let mut buf = [0u8; 64];
    let (len, _) = shm::recv_fds(sock.as_fd(), &mut buf).expect("report");
    common::join(child);
    assert_eq!(&buf[..len], format!("ok {COUNT}").as_bytes());
    assert_eq!(p.pending(), Ok(0), "the child consumed everything");
}

#[test]
fn child_consumes_ten_million() {
    let Some(sock) = common::child_sock("child_consumes_ten_million") else {
        return;
    };
    let mut buf = [0u8; 4096];
    let (len, fds) = shm::recv_fds(sock.as_fd(), &mut buf).expect("grant");
    let refs: Vec<GrantRef> = buf[..len]
        .chunks_exact(4)
        .map(|c| GrantRef(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let m = ShmBackend::new(DomId(2))
        .map(DomId(1), &refs, Access::ReadWrite, &fds)
        .expect("map");
    let mut c = RingConsumer::new(
        m.memory().clone(),
        RingLayout::new(RING).expect("size"),
        false,
    )
    .expect("ring");
    let deadline = Instant::now() + LIMIT;
    let mut next = 0u64;
    let mut spins = 0;
    while next < COUNT {
        let n = c.peek(64).expect("honest producer");
        if n == 0 {
            idle(&mut spins, deadline);
            continue;
        }
        spins = 0;
        for i in 0..n {
            let d = c.read(i);
            assert_eq!(
                d,
                desc(next),
                "descriptor {next} lost, repeated or out of order"
            );
            next += 1;
        }
        c.release(n);
    }
    // Nothing beyond the last one: the producer stops at COUNT.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.peek(1), Ok(0), "a descriptor past the end appeared");
    shm::send_fds(sock.as_fd(), format!("ok {next}").as_bytes(), &[]).expect("report");
}

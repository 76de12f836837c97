//! The server's side of an app port (`switch::app_port`) against an app that writes anything
//! anywhere in its port memory: header, ring indices, flags and descriptor slots.

use std::collections::HashSet;
use std::sync::Arc;

use grant_pool::shm::{ShmBackend, ShmGrant, ShmMapping, ShmNotifier};
use grant_pool::{
    Access, BufHandle, BufIdx, Desc, DomId, Grant, GrantBackend, GrantRef, Notifier, PoolId,
    PoolLayout, PortLayout, PortLimits,
};
use pmd::{Frame, Port};
use switch::app_port::{AppPort, FirstFrame};

use crate::Input;

/// The pool id the server gives the app's pool.
const POOL: PoolId = PoolId(7);
/// Ring shapes the input picks from: small rings reach full and wrapped states quickly.
const SHAPES: [([u32; 4], usize); 4] = [
    ([2, 2, 2, 2], 4),
    ([4, 4, 8, 2], 8),
    ([8, 4, 4, 4], 16),
    ([16, 16, 16, 16], 32),
];

/// An app's grant and the server's port over it, in one process.
struct Pair {
    app: grant_pool::AppPort,
    grant: ShmGrant,
    port: AppPort<ShmMapping, ShmNotifier>,
    // The app's end of the doorbell, kept open.
    _bell: ShmNotifier,
}

fn pair(rings: [u32; 4], bufs: usize) -> Pair {
    let layout =
        PortLayout::new(rings, PoolLayout::new(2048, bufs).expect("pool")).expect("layout");
    let app_be = ShmBackend::new(DomId(1));
    let srv_be = ShmBackend::new(DomId(0));
    let grant = app_be
        .grant(DomId(0), layout.pages(), Access::ReadWrite)
        .expect("grant");
    let app = grant_pool::AppPort::create(grant.memory().clone(), layout, POOL).expect("create");
    let fds: Vec<std::os::fd::OwnedFd> = grant
        .attachments()
        .iter()
        .map(|f| f.try_clone_to_owned().expect("dup"))
        .collect();
    let refs: Vec<GrantRef> = grant.refs().to_vec();
    let mapping = srv_be
        .map(DomId(1), &refs, Access::ReadWrite, &fds)
        .expect("map");
    let mut notifier = srv_be.notifier(DomId(1)).expect("notifier");
    let bell = app_be
        .bind_notifier(DomId(0), 0, &notifier.take_attachments())
        .expect("bind");
    let h = layout.header();
    let want = [
        h.rx_size,
        h.tx_size,
        h.fill_size,
        h.comp_size,
        h.buf_size,
        h.buf_count,
    ];
    let port = AppPort::new(
        "fuzz",
        [2, 0, 0, 0, 0, 1],
        mapping,
        notifier,
        POOL,
        PortLimits::default(),
        want,
        Arc::new(FirstFrame::new(std::time::Instant::now())),
    )
    .expect("port");
    Pair {
        app,
        grant,
        port,
        _bell: bell,
    }
}

/// A descriptor as a hostile app writes it: mostly naming a buffer of the pool (one held by
/// the app or not), sometimes another pool, an index past the end or a length too long.
fn desc(inp: &mut Input<'_>, bufs: usize) -> Desc {
    let b = inp.u8();
    let pool = if b & 0xf0 == 0xf0 { inp.u8() } else { POOL.0 };
    let idx = (b & 0x0f) as u32 % (bufs as u32 + 2);
    let len = match inp.u8() % 4 {
        0 => inp.u16(),
        1 => 10,
        _ => 60,
    };
    let raw = (pool as u32) << 24 | idx;
    Desc::new(BufHandle::from_raw(raw), len)
}

/// Checks that `h`, just handed to the switch, is a buffer of the app's pool the switch
/// does not hold already, and takes it.
fn take(held: &mut HashSet<u32>, h: BufHandle, bufs: usize) {
    assert_eq!(h.pool(), POOL, "a handle of another pool handed out");
    assert!(
        (h.idx().0 as usize) < bufs,
        "handle {:#x} past the pool",
        h.raw()
    );
    assert!(
        held.insert(h.raw()),
        "buffer {:#x} handed out twice",
        h.raw()
    );
}

/// Runs operations decoded from `data`: the app's writes (through its ring API or raw into
/// any word of the port's header and rings) interleaved with the switch's calls on the
/// server's port. After every call: no buffer is handed to the switch twice, every buffer
/// the server holds is either with the switch or waiting for room on the completion ring,
/// and the server never tries to hand back a buffer it does not hold.
pub fn hostile_app(data: &[u8]) {
    let mut inp = Input::new(data);
    let (rings, bufs) = SHAPES[inp.below(SHAPES.len())];
    let mut p = pair(rings, bufs);
    let region = p.grant.region();
    let ring_end = p.app.layout.pool_off();
    // Buffers the switch holds (handed out by rx_burst and alloc, not yet given back).
    let mut held: HashSet<u32> = HashSet::new();
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 32];
    let mut handles = [BufHandle::from_raw(0); 32];
    let mut ops = 0;
    while !inp.is_empty() && ops < 500 {
        ops += 1;
        let op = inp.u8();
        match op % 12 {
            0 => {
                // A raw word anywhere in the header and rings.
                let off = (inp.u16() as usize % ring_end) & !3;
                let v = match inp.u8() % 4 {
                    0 => inp.u32(),
                    1 => u32::from(inp.u8()),
                    2 => u32::MAX - u32::from(inp.u8()),
                    _ => region
                        .read_u64(off & !7)
                        .map_or(0, |w| w as u32)
                        .wrapping_add(u32::from(inp.u8() % 8)),
                };
                let _ = region.write(off, &v.to_le_bytes());
            }
            1 | 2 => {
                let n = 1 + inp.below(8) as u32;
                let ring = if op % 12 == 1 {
                    &mut p.app.tx
                } else {
                    &mut p.app.fill
                };
                if let Ok(k) = ring.reserve(n) {
                    for i in 0..k {
                        let d = desc(&mut inp, bufs);
                        ring.write(i, d);
                    }
                    ring.publish(k);
                }
            }
            3 => {
                let n = inp.below(8) as u32;
                if let Ok(k) = p.app.comp.peek(n) {
                    p.app.comp.release(k);
                }
            }
            4 => {
                let n = inp.below(8) as u32;
                if let Ok(k) = p.app.rx.peek(n) {
                    p.app.rx.release(k);
                }
            }
            5 => {
                let n = 1 + inp.below(out.len());
                let got = p.port.rx_burst(&mut out[..n]);
                assert!(got <= n);
                for f in &out[..got] {
                    assert!(f.len >= 14 && f.len <= 2048, "frame of {} bytes", f.len);
                    take(&mut held, f.buf, bufs);
                }
            }
            6 => {
                let n = 1 + inp.below(handles.len());
                let got = p.port.alloc(&mut handles[..n]);
                assert!(got <= n);
                for h in &handles[..got] {
                    take(&mut held, *h, bufs);
                }
            }
            7 => {
                // The switch delivers frames in buffers it holds.
                let n = inp.below(held.len() + 1).min(out.len());
                let mine: Vec<u32> = held.iter().copied().take(n).collect();
                for (f, h) in out.iter_mut().zip(&mine) {
                    *f = Frame::new(BufHandle::from_raw(*h), 60);
                }
                let used = p.port.tx_burst(&out[..mine.len()]);
                assert!(used <= mine.len());
                for h in &mine[..used] {
                    held.remove(h);
                }
            }
            8 => {
                let n = inp.below(held.len() + 1);
                let mine: Vec<u32> = held.iter().copied().take(n).collect();
                let bufs: Vec<BufHandle> = mine.iter().map(|h| BufHandle::from_raw(*h)).collect();
                p.port.reclaim(&bufs);
                for h in &mine {
                    held.remove(h);
                }
            }
            9 => {
                let _ = p.port.prepare_wait();
            }
            10 => {
                // A raw descriptor slot of any ring.
                let ring = inp.below(4);
                let (off, size) = match ring {
                    0 => (p.app.layout.rx_off(), rings[0]),
                    1 => (p.app.layout.tx_off(), rings[1]),
                    2 => (p.app.layout.fill_off(), rings[2]),
                    _ => (p.app.layout.comp_off(), rings[3]),
                };
                let slot = inp.below(size as usize);
                let d = desc(&mut inp, bufs);
                let w = u64::from(d.handle) | u64::from(d.len) << 32;
                let _ = region.write(
                    off + grant_pool::ring::DESC_OFF + slot * 8,
                    &w.to_le_bytes(),
                );
            }
            _ => {
                // Reclaim of buffers of other pools, which the port ignores.
                let h = BufHandle::new(PoolId(3), BufIdx(inp.below(bufs) as u32));
                if let Some(h) = h {
                    p.port.reclaim(&[h]);
                }
            }
        }
        check(&p, &held);
    }
    // The switch gives every buffer back; each is the app's again or waits for completion.
    let all: Vec<BufHandle> = held.drain().map(BufHandle::from_raw).collect();
    p.port.reclaim(&all);
    check(&p, &held);
}

fn check(p: &Pair, held: &HashSet<u32>) {
    let (stashed, own_errors) = p.port.fuzz_accounting();
    assert_eq!(
        own_errors, 0,
        "the server handed back a buffer it did not hold"
    );
    assert_eq!(
        p.port.held_by_server(),
        held.len() + stashed,
        "server-held buffers: {} with the switch, {stashed} stashed",
        held.len()
    );
}

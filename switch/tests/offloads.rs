//! The delivery rule with offloads: a frame larger than one segment goes whole to a port that
//! takes it and is cut into valid segments, once, in the copy made for a port that does not;
//! a partial checksum is completed only for a port that cannot take it; a frame marked for
//! segmentation that cannot be cut is dropped and counted there.

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

mod wrap;

use grant_pool::PoolId;
use offload::FrameMeta;
use offload::csum::{set_pseudo_header_sum, verify};
use pmd::sim::{SimConfig, SimPort};
use pmd::{Frame, Mac, Port, TxOffloads};
use switch::{DropReason, Switch, SwitchConfig};

fn mac(i: u8) -> Mac {
    [0x02, 0, 0, 0, 0x20, i]
}

/// An Ethernet frame from `mac(0)` to `mac(1)` carrying TCP (`proto` 6) or UDP (17) over IPv4
/// with `payload` bytes of a pattern, its checksum partial.
fn frame(proto: u8, payload: usize) -> Vec<u8> {
    segment(proto, 0x10, payload)
}

/// [`frame`] with TCP sequence number `seq` (the pattern follows it).
fn segment(proto: u8, seq: u32, payload: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload)
        .map(|i| ((seq as usize + i) * 31 % 253) as u8)
        .collect();
    let mut f = offload::frame::Ipv4Frame {
        dst: mac(1),
        src: mac(0),
        src_ip: [10, 1, 0, 1],
        dst_ip: [10, 1, 0, 2],
        id: 7,
        proto,
        sport: 1000,
        seq,
        ..Default::default()
    }
    .build(&data);
    set_pseudo_header_sum(&mut f).expect("TCP or UDP over IPv4");
    f
}

/// Frames with their metadata, shared between a test and a port.
type Log = Arc<Mutex<Vec<(Vec<u8>, FrameMeta)>>>;

/// A sim port whose received frames are replaced by the frames the test queues, each with
/// its metadata.
struct Source {
    inner: SimPort,
    queue: Log,
}

/// A sink that records every frame it is given (bytes and metadata) and says it takes what
/// `offloads` says; with `hello`, it first sends one frame from its MAC, so that the switch
/// learns where it is.
struct Recorder {
    inner: SimPort,
    offloads: TxOffloads,
    got: Log,
    hello: bool,
    /// Buffers the switch took from this port to copy into and kept (an app's port hands
    /// buffers given back with `reclaim` to the app as sent: only `unalloc` returns one
    /// unused).
    taken: Arc<AtomicUsize>,
}

impl Port for Source {
    pass_through!();
    fn alloc(&mut self, out: &mut [grant_pool::BufHandle]) -> usize {
        self.inner.alloc(out)
    }
    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.inner.tx_burst(frames)
    }
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        let mut q = self.queue.lock().expect("queue");
        let want = q.len().min(out.len());
        let mut bufs = vec![grant_pool::BufHandle::from_raw(0); want];
        let got = self.inner.alloc(&mut bufs);
        let pool = self.inner.pool().clone();
        for (k, (bytes, meta)) in q.drain(..got).enumerate() {
            pool.buf(bufs[k])
                .expect("own buffer")
                .write(0, &bytes)
                .expect("fits");
            out[k] = Frame {
                buf: bufs[k],
                len: bytes.len() as u16,
                meta: meta.bits(),
            };
        }
        got
    }
}

impl Port for Recorder {
    pass_through!();
    fn alloc(&mut self, out: &mut [grant_pool::BufHandle]) -> usize {
        let n = self.inner.alloc(out);
        self.taken.fetch_add(n, Relaxed);
        n
    }
    fn unalloc(&mut self, bufs: &[grant_pool::BufHandle]) {
        // Handed back unused: not taken after all.
        self.taken.fetch_sub(bufs.len(), Relaxed);
        self.inner.reclaim(bufs)
    }
    fn tx_offloads(&self) -> TxOffloads {
        self.offloads
    }
    /// The sink that takes every frame as it is stands for an app (a host): the switch
    /// coalesces segments only for those.
    fn admission(&self) -> Option<pmd::Admission> {
        (self.offloads == TxOffloads::ALL).then(|| pmd::Admission {
            mac: self.inner.mac(),
            frames_per_sec: 0,
            bytes_per_sec: 0,
            fixed: true,
        })
    }
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        if !std::mem::take(&mut self.hello) {
            return 0;
        }
        let mut b = [grant_pool::BufHandle::from_raw(0)];
        assert_eq!(self.inner.alloc(&mut b), 1);
        let mut f = mac(0).to_vec();
        f.extend_from_slice(&self.inner.mac());
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, 0);
        let pool = self.inner.pool().clone();
        pool.buf(b[0]).expect("own").write(0, &f).expect("fits");
        out[0] = Frame::new(b[0], 60);
        1
    }
    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        let pool = self.inner.pool().clone();
        let mut got = self.got.lock().expect("got");
        for f in frames {
            assert_eq!(f.buf.pool(), pool.id(), "a copy, in the sink's own pool");
            let mut b = vec![0u8; f.len as usize];
            pool.buf(f.buf).expect("own").read(0, &mut b).expect("read");
            got.push((b, FrameMeta::from_bits(f.meta)));
        }
        self.inner.tx_burst(frames)
    }
}

fn sim(i: u8, buf_size: usize) -> SimPort {
    let mut c = SimConfig::new(format!("sim{i}"), mac(i), PoolId(i + 1));
    c.buf_size = buf_size;
    c.generate = false;
    c.gen_bufs = 16;
    c.spare_bufs = 256;
    SimPort::new(c).expect("sim port")
}

/// A switch with the source (port 0), a sink taking every frame as it is (port 1: MAC
/// `mac(1)`, 64 KiB buffers) and one taking only plain frames (port 2, 2 KiB buffers).
fn net() -> (Switch, Log, Log, Log, [switch::PortId; 3], Arc<AtomicUsize>) {
    let mut sw = Switch::new(SwitchConfig::default()).expect("switch");
    let taken: Arc<AtomicUsize> = Arc::default();
    let queue: Log = Arc::default();
    let (whole, cut): (Log, Log) = (Arc::default(), Arc::default());
    let a = sw
        .add_port(Box::new(Source {
            inner: sim(0, 1 << 16),
            queue: queue.clone(),
        }))
        .expect("source");
    let b = sw
        .add_port(Box::new(Recorder {
            inner: sim(1, 1 << 16),
            offloads: TxOffloads::ALL,
            got: whole.clone(),
            hello: true,
            taken: taken.clone(),
        }))
        .expect("whole");
    let c = sw
        .add_port(Box::new(Recorder {
            inner: sim(2, 2048),
            offloads: TxOffloads::NONE,
            got: cut.clone(),
            hello: false,
            taken: Arc::default(),
        }))
        .expect("cut");
    (sw, queue, whole, cut, [a, b, c], taken)
}

fn settle(sw: &mut Switch) {
    for _ in 0..100 {
        sw.poll();
    }
}

/// Lets the whole-frame sink's hello through (the switch learns where it is), then forgets
/// what the sinks saw so far.
fn start(sw: &mut Switch, logs: [&Log; 2]) {
    settle(sw);
    for l in logs {
        l.lock().unwrap().clear();
    }
}

#[test]
fn a_large_frame_goes_whole_where_taken_and_as_valid_segments_elsewhere() {
    let (mut sw, queue, whole, cut, ids, _) = net();
    start(&mut sw, [&whole, &cut]);
    // The frames go to a station nobody has seen: flooded, so both sinks get every frame.
    let to_nobody = |mut f: Vec<u8>| {
        f[5] = 0x77;
        f
    };
    let big = to_nobody(frame(6, 10_000));
    let small = to_nobody(frame(6, 300));
    let udp = to_nobody(frame(17, 3000));
    queue.lock().unwrap().extend([
        (big.clone(), FrameMeta::partial(1448)),
        (small.clone(), FrameMeta::partial(0)),
        // Marked for segmentation, but not TCP: nothing can cut it.
        (udp.clone(), FrameMeta::partial(1000)),
    ]);
    settle(&mut sw);

    let whole = whole.lock().unwrap();
    assert_eq!(
        *whole,
        vec![
            (big.clone(), FrameMeta::partial(1448)),
            (small.clone(), FrameMeta::partial(0)),
            (udp, FrameMeta::partial(1000)),
        ],
        "as they came, metadata and all"
    );

    let cut = cut.lock().unwrap();
    let segs = 10_000usize.div_ceil(1448);
    assert_eq!(cut.len(), segs + 1, "the segments, then the small frame");
    let mut payload = Vec::new();
    for (k, (s, meta)) in cut[..segs].iter().enumerate() {
        assert_eq!(*meta, FrameMeta::SEGMENT, "segment {k}");
        assert!(s.len() <= 14 + 1500, "segment {k} fits the MTU");
        assert_eq!(
            verify(s),
            Some(true),
            "segment {k}: both checksums complete"
        );
        assert_eq!(s[..12], big[..12], "MACs");
        payload.extend_from_slice(&s[54..]);
    }
    assert_eq!(
        payload,
        big[54..],
        "the segments carry the frame's payload, in order"
    );
    let (s, meta) = &cut[segs];
    assert_eq!(verify(s), Some(true), "the partial checksum was completed");
    assert!(meta.is_verified() && !meta.is_partial());
    assert_eq!(
        s[..40],
        small[..40],
        "headers untouched but for the checksum"
    );
    assert_eq!(s[54..], small[54..]);

    let c = sw.counters(ids[2]).expect("cut sink").snapshot();
    assert_eq!(
        c.dropped(DropReason::CopyFault),
        1,
        "the UDP frame, counted"
    );
    assert_eq!(sw.counters(ids[1]).unwrap().snapshot().dropped_total(), 0);
}

#[test]
fn segments_of_one_flow_in_a_burst_reach_a_large_frame_port_as_one_frame() {
    let (mut sw, queue, whole, cut, _ids, taken) = net();
    start(&mut sw, [&whole, &cut]);
    let before = taken.load(Relaxed);
    let seg = |k: u32, len: usize| {
        let mut f = segment(6, 1000 + k * 1448, len);
        assert!(offload::csum::complete_l4_checksum(&mut f));
        (f, FrameMeta::NONE)
    };
    let mut segs: Vec<_> = (0..8).map(|k| seg(k, 1448)).collect();
    // A ninth whose payload was corrupted on the way: not merged, passed as it came.
    let mut bad = seg(8, 1448);
    bad.0[100] ^= 1;
    segs.push(bad.clone());
    queue.lock().unwrap().extend(segs.clone());
    settle(&mut sw);

    let got = whole.lock().unwrap();
    assert_eq!(got.len(), 2, "one merged frame, then the corrupted segment");
    let (f, meta) = &got[0];
    assert_eq!(*meta, FrameMeta::VERIFIED);
    assert_eq!(f.len(), 54 + 8 * 1448);
    assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
    let payload: Vec<u8> = segs[..8]
        .iter()
        .flat_map(|(s, _)| s[54..].to_vec())
        .collect();
    assert_eq!(f[54..], payload[..]);
    assert_eq!(got[1], bad);
    assert!(
        cut.lock().unwrap().is_empty(),
        "unicast: the other sink saw nothing"
    );
    // An app's fill buffer taken and given back with `reclaim` would go to its completion
    // ring, out of the app's receive side for good: the switch keeps one per frame it
    // delivers and hands the rest back unused.
    assert_eq!(
        taken.load(Relaxed) - before,
        got.len(),
        "buffers taken, frames delivered"
    );
}

/// A switch with the source (port 0, 64 KiB buffers) and an intel port on its register
/// model with a large transmit pool (TSO): the switch, the source's queue, the model (to
/// play the wire) and the intel port's id.
fn to_intel_with_tso() -> (Switch, Log, pmd::intel::model::Model, switch::PortId) {
    use pmd::intel::dma::DmaSource;
    use pmd::intel::model::Model;
    use pmd::intel::{Family, IntelConfig, IntelPort};
    let mut sw = Switch::new(SwitchConfig::default()).expect("switch");
    let queue: Log = Arc::default();
    sw.add_port(Box::new(Source {
        inner: sim(0, 1 << 16),
        queue: queue.clone(),
    }))
    .expect("source");
    let model = Model::new(Family::Igb, [2, 0, 0, 0, 0x30, 1]);
    let cfg = IntelConfig {
        pci: "model".into(),
        pool: PoolId(9),
        large_pool: Some(PoolId(10)),
        ring_size: 256,
        bufs: 512,
        dma: DmaSource::SmallPages,
        link_timeout_ms: 1_000,
        ..IntelConfig::default()
    };
    let intel = IntelPort::with_regs(
        model.clone(),
        Family::Igb,
        Box::new(model.clone()),
        &cfg,
        "intel".into(),
    )
    .expect("intel model");
    let id = sw.add_port(Box::new(intel)).expect("intel");
    (sw, queue, model, id)
}

/// A frame from `mac(1)` arrives on the intel port: the switch learns `mac(1)` there.
fn learn_behind(sw: &mut Switch, model: &pmd::intel::model::Model) {
    let mut hello = mac(0).to_vec();
    hello.extend_from_slice(&mac(1));
    hello.extend_from_slice(&[0x88, 0xb5]);
    hello.resize(60, 0);
    assert!(model.receive(0, &hello));
    sw.poll();
}

#[test]
fn a_large_frame_to_an_intel_port_with_tso_goes_whole_and_the_device_cuts_it() {
    let (mut sw, queue, model, id) = to_intel_with_tso();
    let send = |sw: &mut Switch, frames: &[Vec<u8>]| {
        queue
            .lock()
            .unwrap()
            .extend(frames.iter().map(|f| (f.clone(), FrameMeta::partial(1448))));
        let mut wire = Vec::new();
        for _ in 0..20 {
            sw.poll();
            model.transmit(0, &mut |f| wire.push(f.to_vec()));
        }
        wire
    };
    let check = |wire: &[Vec<u8>], frames: &[Vec<u8>]| {
        let per = 20_000usize.div_ceil(1448);
        assert_eq!(wire.len(), per * frames.len());
        for (f, segs) in frames.iter().zip(wire.chunks(per)) {
            let mut payload = Vec::new();
            for s in segs {
                assert_eq!(verify(s), Some(true));
                assert!(s.len() <= 14 + 1500);
                payload.extend_from_slice(&s[54..]);
            }
            assert_eq!(payload, f[54..]);
        }
    };
    // Flooded (nobody has seen mac(1)): copied whole into the port's large buffers.
    let frames: Vec<Vec<u8>> = (0..3).map(|k| segment(6, 1 + k * 20_000, 20_000)).collect();
    check(&send(&mut sw, &frames), &frames);
    // Unicast once the switch learned mac(1) behind the port: the same.
    learn_behind(&mut sw, &model);
    let frames: Vec<Vec<u8>> = (3..6).map(|k| segment(6, 1 + k * 20_000, 20_000)).collect();
    check(&send(&mut sw, &frames), &frames);
    let c = sw.counters(id).expect("intel").snapshot();
    assert_eq!(c.dropped_total(), 0);
    assert_eq!(c.tx, 6, "six frames handed to the port, whole");
}

#[test]
fn segments_to_a_nic_that_takes_large_frames_are_not_coalesced() {
    let (mut sw, queue, model, id) = to_intel_with_tso();
    assert!(sw.port(id).expect("intel").tx_offloads().max_gso_frame >= 16 * 1024);
    // The destination is known behind the port: one burst, one destination.
    learn_behind(&mut sw, &model);
    // Short segments of one flow (several would fit one 2 KiB buffer), complete checksums,
    // in one burst.
    let segs: Vec<Vec<u8>> = (0..6)
        .map(|k| {
            let mut f = segment(6, 1 + k * 400, 400);
            offload::csum::complete_l4_checksum(&mut f);
            f
        })
        .collect();
    queue
        .lock()
        .unwrap()
        .extend(segs.iter().map(|f| (f.clone(), FrameMeta::NONE)));
    let mut wire = Vec::new();
    for _ in 0..20 {
        sw.poll();
        model.transmit(0, &mut |f| wire.push(f.to_vec()));
    }
    assert_eq!(wire, segs, "each segment on the wire as it came");
}

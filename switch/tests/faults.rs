//! The switch forwarding through ports that drop, duplicate, corrupt and delay frames
//! (`pmd::fault`): it keeps forwarding, never loses or double-returns a buffer, and what
//! arrives is what was sent, minus drops, plus duplicates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grant_pool::PoolId;
use pmd::fault::{FaultConfig, FaultPort, FaultProbe};
use pmd::sim::{MacPattern, SimConfig, SimPort, SimProbe};
use switch::{Switch, SwitchConfig};

const FRAMES: u64 = 50_000;

fn sim(i: u8, dst: MacPattern, frames: u64) -> SimPort {
    let mut c = SimConfig::new(format!("sim{i}"), [2, 0, 0, 0, 0x10, i], PoolId(i + 1));
    c.dst = dst;
    c.frame_len = 256;
    c.gated = true;
    c.limit = Some(frames);
    SimPort::new(c).expect("sim config")
}

fn faulty(p: SimPort, seed: u64) -> (Box<FaultPort>, Arc<SimProbe>, Arc<FaultProbe>) {
    let probe = p.probe();
    let cfg = FaultConfig {
        seed,
        drop: 0.02,
        duplicate: 0.02,
        corrupt: 0.02,
        delay: 0.02,
        delay_by: Duration::from_micros(100),
        stall_every: Some(Duration::from_millis(2)),
        stall_for: Duration::from_micros(500),
    };
    let port = FaultPort::new(Box::new(p), cfg).expect("fault config");
    let faults = port.probe();
    (Box::new(port), probe, faults)
}

#[test]
fn forwarding_survives_faulty_ports_and_accounts_for_every_buffer() {
    let (a, pa, fa) = faulty(sim(0, MacPattern::Fixed([2, 0, 0, 0, 0x10, 1]), FRAMES), 11);
    let (b, pb, fb) = faulty(sim(1, MacPattern::Broadcast, 1), 12);
    let mut sw = Switch::new(SwitchConfig::default()).expect("switch");
    let ida = sw.add_port(a).expect("port a");
    let idb = sw.add_port(b).expect("port b");
    // B announces itself (its frame may be lost: A's frames are then flooded to B, the
    // only other port); then A sends.
    let t0 = Instant::now();
    pb.release(1);
    while SimProbe::get(&pa.sunk) == 0 && t0.elapsed() < Duration::from_millis(200) {
        sw.poll();
    }
    assert_eq!(SimProbe::get(&pb.generated), 1);
    pa.release(FRAMES);
    let mut quiet_since: Option<Instant> = None;
    while t0.elapsed() < Duration::from_secs(30) {
        let moved = sw.poll();
        if moved == 0 && SimProbe::get(&pa.generated) == FRAMES {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(50) {
                break;
            }
        } else {
            quiet_since = None;
        }
    }
    assert_eq!(
        SimProbe::get(&pa.generated),
        FRAMES,
        "the generator finished"
    );
    let g = FaultProbe::get;
    for f in [&fa, &fb] {
        assert!(g(&f.rx_dropped) + g(&f.tx_dropped) > 0, "no drops");
        assert!(g(&f.duplicated) > 0 && g(&f.delayed) > 0 && g(&f.stalls) > 0);
    }
    assert!(g(&fa.corrupted) > 0);
    // What the switch took from A: what A generated, minus A's receive drops, plus its
    // duplicates (A's transmit side carries B's one frame at most). What B's sink took: what
    // the switch handed B (B's stalls make the switch drop some), minus B's transmit drops,
    // plus its duplicates.
    let ca = sw.counters(ida).expect("A").snapshot();
    let cb = sw.counters(idb).expect("B").snapshot();
    let within = |v: u64, lo: u64, hi: u64, what: &str| {
        assert!((lo..=hi).contains(&v), "{what}: {v}, expected {lo}..={hi}");
    };
    within(
        ca.rx,
        FRAMES - g(&fa.rx_dropped),
        FRAMES - g(&fa.rx_dropped) + g(&fa.duplicated),
        "frames from A",
    );
    let sunk = SimProbe::get(&pb.sunk);
    within(
        sunk,
        cb.tx - g(&fb.tx_dropped),
        cb.tx - g(&fb.tx_dropped) + g(&fb.duplicated),
        "frames B's sink took",
    );
    assert!(
        sunk > FRAMES / 2,
        "forwarding kept going: {sunk} of {FRAMES}"
    );
    // Nothing held anywhere: every buffer of both pools is back, none came back twice.
    for (name, p) in [("A", &pa), ("B", &pb)] {
        assert_eq!(
            SimProbe::get(&p.bad_reclaims),
            0,
            "{name}: a buffer came back twice"
        );
        assert_eq!(
            SimProbe::get(&p.free),
            SimProbe::get(&p.total),
            "{name}: buffers lost"
        );
    }
    assert_eq!(sw.orphans(), 0);
}

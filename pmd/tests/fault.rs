//! The fault-injecting port wrapper over a sim port: every fault happens, every buffer comes
//! back, and the frames that arrive are the frames sent, minus drops, plus duplicates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grant_pool::{BufHandle, PoolId};
use pmd::fault::{FaultConfig, FaultPort, FaultProbe};
use pmd::sim::{SimConfig, SimPort, SimProbe};
use pmd::{Frame, Port};

const FRAMES: u64 = 20_000;

fn faults(seed: u64) -> FaultConfig {
    FaultConfig {
        seed,
        drop: 0.05,
        duplicate: 0.05,
        corrupt: 0.05,
        delay: 0.05,
        delay_by: Duration::from_micros(200),
        stall_every: Some(Duration::from_millis(3)),
        stall_for: Duration::from_millis(1),
    }
}

/// A sim port that generates `FRAMES` frames and sinks what it is sent, wrapped.
fn wrapped(cfg: FaultConfig) -> (FaultPort, Arc<SimProbe>, Arc<FaultProbe>) {
    let mut c = SimConfig::new("sim", [2, 0, 0, 0, 0, 1], PoolId(1));
    c.limit = Some(FRAMES);
    c.frame_len = 128;
    let sim = SimPort::new(c).expect("sim config");
    let probe = sim.probe();
    let port = FaultPort::new(Box::new(sim), cfg).expect("fault config");
    let faults = port.probe();
    (port, probe, faults)
}

/// Receives everything and sends it straight back, returning every completed buffer, until
/// the generator is done and nothing is held (bounded by time).
fn loop_back(port: &mut FaultPort, sim: &SimProbe) {
    let mut rx = vec![Frame::new(BufHandle::from_raw(0), 0); 64];
    let mut done = vec![BufHandle::from_raw(0); 128];
    let mut pending: Vec<Frame> = Vec::new();
    let t0 = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    while t0.elapsed() < Duration::from_secs(20) {
        let n = port.rx_burst(&mut rx);
        pending.extend_from_slice(&rx[..n]);
        let took = port.tx_burst(&pending);
        pending.drain(..took);
        let d = port.tx_done(&mut done);
        port.reclaim(&done[..d]);
        let idle = n == 0 && d == 0 && pending.is_empty() && !port.wants_poll();
        if idle && SimProbe::get(&sim.generated) == FRAMES {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(20) {
                return;
            }
        } else {
            quiet_since = None;
        }
    }
    panic!("traffic did not settle");
}

#[test]
fn every_fault_happens_and_every_buffer_comes_back() {
    let (mut port, sim, f) = wrapped(faults(7));
    loop_back(&mut port, &sim);
    let get = FaultProbe::get;
    for (what, c) in [
        ("rx drops", &f.rx_dropped),
        ("tx drops", &f.tx_dropped),
        ("duplicates", &f.duplicated),
        ("corruptions", &f.corrupted),
        ("delays", &f.delayed),
        ("stalls", &f.stalls),
    ] {
        assert!(get(c) > 0, "no {what} injected");
    }
    assert_eq!(
        SimProbe::get(&sim.sunk),
        FRAMES - get(&f.rx_dropped) - get(&f.tx_dropped) + get(&f.duplicated),
        "frames sunk: generated, minus drops, plus duplicates"
    );
    let s = port.stats();
    assert!(s.rx_dropped >= get(&f.rx_dropped) && s.tx_dropped >= get(&f.tx_dropped));
    assert_eq!(
        SimProbe::get(&sim.bad_reclaims),
        0,
        "a buffer came back twice"
    );
    assert_eq!(
        SimProbe::get(&sim.free),
        SimProbe::get(&sim.total),
        "buffers lost"
    );
}

#[test]
fn the_same_seed_injects_the_same_faults() {
    let run = |seed| {
        let mut cfg = faults(seed);
        // Time-driven faults depend on the scheduler; the rest on the seed alone.
        cfg.stall_every = None;
        cfg.delay = 0.0;
        let (mut port, sim, f) = wrapped(cfg);
        loop_back(&mut port, &sim);
        [
            FaultProbe::get(&f.rx_dropped),
            FaultProbe::get(&f.tx_dropped),
            FaultProbe::get(&f.duplicated),
            FaultProbe::get(&f.corrupted),
        ]
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

#[test]
fn bad_settings_are_refused() {
    let bad = [
        FaultConfig {
            drop: 1.5,
            ..FaultConfig::default()
        },
        FaultConfig {
            corrupt: -0.1,
            ..FaultConfig::default()
        },
        FaultConfig {
            stall_every: Some(Duration::from_millis(5)),
            stall_for: Duration::from_millis(5),
            ..FaultConfig::default()
        },
    ];
    for cfg in bad {
        assert!(cfg.check().is_err(), "{cfg:?} accepted");
        let sim = SimPort::new(SimConfig::new("sim", [2, 0, 0, 0, 0, 1], PoolId(1))).unwrap();
        assert!(FaultPort::new(Box::new(sim), cfg).is_err());
    }
}

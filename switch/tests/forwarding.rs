//! End-to-end behaviour of the switch over sim ports: frames arrive intact, learning, station
//! moves, aging on an injected clock, flooding, the delivery rule, drops and buffer accounting.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

mod wrap;

use grant_pool::PoolId;
use pmd::Mac;
use pmd::sim::{MacPattern, SimConfig, SimPort, SimProbe};
use switch::{DropReason, ManualClock, PortId, Switch, SwitchConfig};

fn mac(i: u8) -> Mac {
    [0x02, 0, 0, 0, 0x10, i]
}

/// A sim port numbered `i` (MAC `mac(i)`, pool `i + 1`), a verifying sink with sequenced
/// frames, gated: it sends only what the test releases.
fn sim(i: u8, f: impl FnOnce(&mut SimConfig)) -> SimPort {
    let mut c = SimConfig::new(format!("sim{i}"), mac(i), PoolId(i + 1));
    c.gen_bufs = 256;
    c.spare_bufs = 512;
    c.sequence = true;
    c.verify = true;
    c.gated = true;
    f(&mut c);
    SimPort::new(c).expect("valid sim config")
}

struct Net {
    sw: Switch,
    ids: Vec<PortId>,
    probes: Vec<Arc<SimProbe>>,
    clock: ManualClock,
}

impl Net {
    fn new(ports: Vec<SimPort>, f: impl FnOnce(&mut SwitchConfig)) -> Self {
        let clock = ManualClock::new();
        let mut cfg = SwitchConfig {
            clock: switch::Clock::Manual(clock.clone()),
            aging: Duration::from_secs(10),
            ..SwitchConfig::default()
        };
        f(&mut cfg);
        let mut sw = Switch::new(cfg).expect("valid switch config");
        let mut ids = Vec::new();
        let mut probes = Vec::new();
        for p in ports {
            probes.push(p.probe());
            ids.push(sw.add_port(Box::new(p)).expect("port added"));
        }
        Self {
            sw,
            ids,
            probes,
            clock,
        }
    }

    /// Lets port `i` send `n` frames and polls until everything has settled.
    fn send(&mut self, i: usize, n: u64) {
        self.probes[i].release(n);
        self.settle();
    }

    /// Polls until a few rounds pass with no frame received (bounded).
    fn settle(&mut self) {
        let mut quiet = 0;
        for _ in 0..100_000 {
            if self.sw.poll() == 0 {
                quiet += 1;
                if quiet == 3 {
                    return;
                }
            } else {
                quiet = 0;
            }
        }
        panic!("traffic did not settle");
    }

    fn sunk(&self, i: usize) -> u64 {
        SimProbe::get(&self.probes[i].sunk)
    }

    fn counters(&self, i: usize) -> switch::PortCountersSnapshot {
        self.sw
            .counters(self.ids[i])
            .expect("port present")
            .snapshot()
    }

    /// Every sink saw intact, in-order frames and every pool has all its buffers back.
    fn assert_clean(&self) {
        for (i, p) in self.probes.iter().enumerate() {
            assert_eq!(
                SimProbe::get(&p.payload_errors),
                0,
                "port {i}: payload errors"
            );
            assert_eq!(SimProbe::get(&p.seq_errors), 0, "port {i}: sequence errors");
            assert_eq!(
                SimProbe::get(&p.unreadable),
                0,
                "port {i}: unreadable handles"
            );
            assert_eq!(SimProbe::get(&p.bad_reclaims), 0, "port {i}: bad reclaims");
            assert_eq!(
                SimProbe::get(&p.free),
                SimProbe::get(&p.total),
                "port {i}: buffers leaked"
            );
        }
        assert_eq!(self.sw.orphans(), 0);
    }
}

#[test]
fn unicast_frames_arrive_intact_by_copy_and_by_handle() {
    for zero_copy in [false, true] {
        let b = sim(1, |c| c.dst = MacPattern::Broadcast);
        let mut a = sim(0, |c| {
            c.dst = MacPattern::Fixed(mac(1));
            c.frame_len = 1514;
        });
        let c = sim(2, |_| {});
        let mut b = b;
        let mut c = c;
        if zero_copy {
            b.grant_read(a.pool().clone());
            c.grant_read(a.pool().clone());
            a.grant_read(b.pool().clone());
        }
        let mut net = Net::new(vec![a, b, c], |_| {});
        net.send(1, 1); // B announces itself.
        assert_eq!((net.sunk(0), net.sunk(2)), (1, 1));
        net.send(0, 1000);
        assert_eq!(net.sunk(1), 1000, "zero_copy={zero_copy}");
        assert_eq!(net.sunk(2), 1, "unicast leaked to C");
        assert_eq!(SimProbe::get(&net.probes[1].lost), 0);
        assert_eq!(SimProbe::get(&net.probes[1].sunk_bytes), 1514 * 1000);
        let cb = net.counters(1);
        assert_eq!(cb.tx, 1000);
        assert_eq!(cb.tx_copied, if zero_copy { 0 } else { 1000 });
        net.assert_clean();
    }
}

#[test]
fn learning_station_move_and_aging() {
    let x = [0x02, 0xaa, 0, 0, 0, 1];
    let a = sim(0, |c| c.dst = MacPattern::Fixed(x));
    let b = sim(1, |c| c.src = Some(MacPattern::Fixed(x)));
    let c = sim(2, |c| c.src = Some(MacPattern::Fixed(x)));
    let mut net = Net::new(vec![a, b, c], |_| {});

    net.send(0, 5); // X unknown: flooded to B and C.
    assert_eq!((net.sunk(1), net.sunk(2)), (5, 5));
    net.send(1, 1); // X learned on B.
    assert_eq!(
        net.sw.fdb().lookup(switch::fdb::mac_key(&x), net.sw.now()),
        Some(1)
    );
    net.send(0, 10);
    assert_eq!((net.sunk(1), net.sunk(2)), (15, 6));

    net.clock.advance(Duration::from_secs(3));
    net.send(2, 1); // X moves to C.
    assert_eq!(net.sw.fdb_stats().moves, 1);
    net.send(0, 10);
    assert_eq!((net.sunk(1), net.sunk(2)), (16, 16));

    // Nine seconds later X is still known (last seen at 3 s, aging 10 s)...
    net.clock.advance(Duration::from_secs(9));
    net.send(0, 1);
    assert_eq!((net.sunk(1), net.sunk(2)), (16, 17));
    // ...and past 13 s it has aged out: flooded again.
    net.clock.advance(Duration::from_millis(1001));
    net.send(0, 4);
    assert_eq!((net.sunk(1), net.sunk(2)), (20, 21));
    // The FDB holds A's MAC and X; a minute later both have aged and the sweep deletes them.
    net.clock.advance(Duration::from_secs(60));
    for _ in 0..20_000 {
        net.sw.poll();
    }
    assert_eq!(net.sw.fdb().len(), 0);
    assert_eq!(net.sw.fdb_stats().aged, 2);
    net.assert_clean();
}

#[test]
fn flooding_never_returns_to_the_ingress_port() {
    let n = 4;
    let ports = (0..n).map(|i| sim(i, |_| {})).collect();
    let mut net = Net::new(ports, |_| {});
    for i in 0..n as usize {
        net.send(i, 50);
    }
    for i in 0..n as usize {
        assert_eq!(net.sunk(i), 50 * (n as u64 - 1), "port {i}");
        let c = net.counters(i);
        assert_eq!(c.rx, 50);
        assert_eq!(c.flooded, 50);
        // Without grants every flooded frame is a copy: one per other port, never two.
        assert_eq!(c.tx_copied, 150);
    }
    net.assert_clean();
}

#[test]
fn flood_hands_the_original_to_one_reader_and_copies_once_for_the_rest() {
    let a = sim(0, |_| {});
    let mut b = sim(1, |_| {});
    let mut c = sim(2, |_| {});
    b.grant_read(a.pool().clone());
    c.grant_read(a.pool().clone());
    let mut net = Net::new(vec![a, b, c], |_| {});
    net.send(0, 100);
    let (cb, cc) = (net.counters(1), net.counters(2));
    assert_eq!((cb.tx, cc.tx), (100, 100));
    assert_eq!(
        cb.tx_copied + cc.tx_copied,
        100,
        "exactly one copy per frame"
    );
    net.assert_clean();
}

#[test]
fn hairpin_is_dropped_and_counted() {
    // A sends from X to X: after the first frame X is learned on A itself.
    let x = mac(0);
    let a = sim(0, |c| c.dst = MacPattern::Fixed(x));
    let b = sim(1, |_| {});
    let mut net = Net::new(vec![a, b], |_| {});
    net.send(0, 10);
    let ca = net.counters(0);
    assert_eq!(ca.dropped(DropReason::Hairpin), 10);
    assert_eq!(net.sunk(1), 0);
    net.assert_clean();
}

#[test]
fn full_ring_drops_count_and_return_every_buffer() {
    for zero_copy in [false, true] {
        let a = sim(0, |c| c.dst = MacPattern::Fixed(mac(1)));
        let mut b = sim(1, |c| c.tx_ring = 8);
        if zero_copy {
            b.grant_read(a.pool().clone());
        }
        let mut net = Net::new(vec![a, b], |_| {});
        net.probes[1].hold_completions.store(true, Relaxed);
        net.send(0, 100);
        assert_eq!(net.sunk(1), 8);
        let cb = net.counters(1);
        assert_eq!(cb.dropped(DropReason::RingFull), 92);
        // Everything but the 8 frames B holds is back in its pool.
        let held = if zero_copy {
            &net.probes[0]
        } else {
            &net.probes[1]
        };
        assert_eq!(
            SimProbe::get(&held.free) + 8,
            SimProbe::get(&held.total),
            "zero_copy={zero_copy}"
        );
        net.probes[1].hold_completions.store(false, Relaxed);
        net.settle();
        net.assert_clean();
    }
}

#[test]
fn no_buffer_for_a_copy_is_dropped_and_counted() {
    let a = sim(0, |c| c.dst = MacPattern::Fixed(mac(1)));
    // B has 4 spare buffers; with completions held they run out.
    let b = sim(1, |c| c.spare_bufs = 4);
    let mut net = Net::new(vec![a, b], |_| {});
    net.probes[1].hold_completions.store(true, Relaxed);
    net.send(0, 20);
    assert_eq!(net.sunk(1), 4);
    assert_eq!(net.counters(1).dropped(DropReason::NoBuffer), 16);
    net.probes[1].hold_completions.store(false, Relaxed);
    net.settle();
    net.assert_clean();
}

#[test]
fn bursts_of_many_stations_go_where_each_destination_was_learned() {
    // Four ports, each with 8 stations behind it, sending bursts whose every frame has its
    // own source and destination (stations of the next two ports, alternately): bursts
    // that are not one run, so every frame's keys come out of its header into the FDB's
    // pass. Once all 32 stations are learned, every frame goes to its destination's port
    // and nothing is flooded.
    let station = |port: usize, k: usize| -> Mac { [0x02, 0x5b, 0, 0, port as u8, k as u8] };
    let ports: Vec<SimPort> = (0..4)
        .map(|i| {
            sim(i as u8, |c| {
                c.src = Some(MacPattern::RoundRobin(
                    (0..8).map(|k| station(i, k)).collect(),
                ));
                c.dst = MacPattern::RoundRobin(
                    (0..16)
                        .map(|k| station((i + 1 + k % 2) % 4, k / 2))
                        .collect(),
                );
            })
        })
        .collect();
    let mut net = Net::new(ports, |_| {});
    // Learning: every station sends (its frames flood while destinations are unknown).
    for _ in 0..2 {
        for i in 0..4 {
            net.send(i, 16);
        }
    }
    assert_eq!(net.sw.fdb().len(), 32);
    let sunk: Vec<u64> = (0..4).map(|i| net.sunk(i)).collect();
    let flooded: Vec<u64> = (0..4).map(|i| net.counters(i).flooded).collect();
    for i in 0..4 {
        net.probes[i].release(64);
    }
    net.settle();
    for d in 0..4 {
        // 32 frames from each of the two ports before it.
        assert_eq!(net.sunk(d) - sunk[d], 64, "port {d} received");
        assert_eq!(net.counters(d).flooded, flooded[d], "port {d} flooded");
        assert_eq!(net.counters(d).dropped_total(), 0, "port {d} dropped");
    }
    net.assert_clean();
}

#[test]
fn fdb_is_bounded_and_traffic_still_flows() {
    let srcs: Vec<Mac> = (0..100).map(|i| [0x02, 0xbb, 0, 0, 0, i]).collect();
    let a = sim(0, |c| c.src = Some(MacPattern::RoundRobin(srcs.clone())));
    let b = sim(1, |_| {});
    let mut net = Net::new(vec![a, b], |c| c.fdb_entries = 16);
    net.send(0, 200);
    assert_eq!(net.sw.fdb().len(), 16);
    assert!(net.sw.fdb_stats().full > 0);
    assert_eq!(net.sunk(1), 200);
    net.assert_clean();
}

/// The `Port` methods a test wrapper around a sim port (`self.inner`) passes straight
/// through: all but `rx_burst` and the wait hooks.
macro_rules! sim_port_methods_but_rx {
    () => {
        pass_through!();
        fn tx_burst(&mut self, frames: &[pmd::Frame]) -> usize {
            self.inner.tx_burst(frames)
        }
        fn alloc(&mut self, out: &mut [grant_pool::BufHandle]) -> usize {
            self.inner.alloc(out)
        }
    };
}

/// A fault injector around a sim port: every fourth frame it receives is cut to a runt, the
/// next one gets a handle past the end of its pool (the port keeps the real buffer itself),
/// the next one a length longer than a buffer.
struct Faulty {
    inner: SimPort,
    seen: usize,
}

impl pmd::Port for Faulty {
    sim_port_methods_but_rx!();
    fn rx_burst(&mut self, out: &mut [pmd::Frame]) -> usize {
        let n = self.inner.rx_burst(out);
        for f in &mut out[..n] {
            match self.seen % 4 {
                1 => f.len = 9,
                2 => {
                    self.inner.reclaim(&[f.buf]);
                    f.buf = grant_pool::BufHandle::from_raw(f.buf.raw() | 0x00ff_ffff);
                }
                3 => f.len = 4096,
                _ => {}
            }
            self.seen += 1;
        }
        n
    }
}

#[test]
fn runts_and_bad_frames_are_dropped_counted_and_returned() {
    let a = sim(0, |c| c.verify = false);
    let b = sim(1, |_| {});
    let probes = vec![a.probe(), b.probe()];
    let clock = ManualClock::new();
    let mut sw = Switch::new(SwitchConfig {
        clock: switch::Clock::Manual(clock),
        ..SwitchConfig::default()
    })
    .expect("valid config");
    let ia = sw
        .add_port(Box::new(Faulty { inner: a, seen: 0 }))
        .expect("added");
    sw.add_port(Box::new(b)).expect("added");
    probes[0].release(100);
    for _ in 0..100 {
        sw.poll();
    }
    let c = sw.counters(ia).expect("present").snapshot();
    assert_eq!(c.rx, 100);
    assert_eq!(c.dropped(DropReason::Runt), 25);
    assert_eq!(c.dropped(DropReason::BadFrame), 50);
    assert_eq!(SimProbe::get(&probes[1].sunk), 25);
    assert_eq!(SimProbe::get(&probes[1].payload_errors), 0);
    for p in &probes {
        assert_eq!(
            SimProbe::get(&p.bad_reclaims),
            0,
            "a bogus handle was handed back"
        );
        assert_eq!(SimProbe::get(&p.free), SimProbe::get(&p.total), "leak");
    }
}

#[test]
fn removed_port_is_forgotten() {
    let a = sim(0, |c| c.dst = MacPattern::Fixed(mac(1)));
    let b = sim(1, |_| {});
    let c = sim(2, |_| {});
    let mut net = Net::new(vec![a, b, c], |_| {});
    net.send(1, 1);
    net.send(0, 5);
    assert_eq!((net.sunk(1), net.sunk(2)), (5, 1));
    let port = net.sw.remove_port(net.ids[1]).expect("present");
    assert_eq!(port.name(), "sim1");
    net.send(0, 5); // B's MAC is unknown again: flooded to C only.
    assert_eq!(net.sunk(2), 6);
    assert_eq!(net.sw.orphans(), 0);
}

#[test]
fn run_loop_forwards_idles_and_stops() {
    use std::sync::atomic::AtomicBool;
    let a = sim(0, |c| c.dst = MacPattern::Fixed(mac(1)));
    let b = sim(1, |_| {});
    let (pa, pb) = (a.probe(), b.probe());
    let mut sw = Switch::new(SwitchConfig {
        idle: switch::IdleConfig {
            spin_polls: 8,
            yield_polls: 8,
            park: Duration::from_millis(1),
            sleep: Duration::from_millis(1),
            housekeeping_polls: 64,
        },
        ..SwitchConfig::default()
    })
    .expect("valid config");
    sw.add_port(Box::new(a)).expect("added");
    sw.add_port(Box::new(b)).expect("added");
    let waker = sw.waker();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // Housekeeping runs are counted where the test can watch them, so the test stops the
    // loop only after it has seen the loop go idle (stopping as soon as the frames arrive
    // raced the loop's way into its idle phase on a loaded host).
    let chores = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let chores2 = chores.clone();
    let runner = std::thread::spawn(move || {
        sw.run_with(&stop2, |_| {
            chores2.fetch_add(1, Relaxed);
        })
        .expect("runs");
        sw
    });
    pa.release(500);
    waker.wake();
    // Bounded wait for the frames to arrive and for the loop to idle with housekeeping.
    for _ in 0..5000 {
        if SimProbe::get(&pb.sunk) == 500 && chores.load(Relaxed) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Relaxed);
    waker.wake();
    let sw = runner.join().expect("run loop thread");
    assert_eq!(SimProbe::get(&pb.sunk), 500);
    assert!(
        chores.load(Relaxed) > 0,
        "housekeeping never ran while idle"
    );
    assert_eq!(sw.counters(PortId(1)).expect("present").snapshot().tx, 500);
}

#[test]
fn aging_sweep_is_paced_by_the_clock_and_frees_the_table_after_a_jump() {
    let srcs: Vec<Mac> = (0..100).map(|i| [0x02, 0xcc, 0, 0, 0, i]).collect();
    let a = sim(0, |c| c.src = Some(MacPattern::RoundRobin(srcs.clone())));
    let b = sim(1, |_| {});
    let mut net = Net::new(vec![a, b], |c| c.fdb_entries = 1000);
    net.send(0, 100);
    assert_eq!(net.sw.fdb().len(), 100);
    // The clock stands still: however often the switch polls, live entries stay.
    for _ in 0..1000 {
        net.sw.poll();
    }
    assert_eq!(net.sw.fdb().len(), 100);
    // Past the aging time the stations are gone for lookups at once, and the sweep frees
    // their slots within the polls its pace allows (capacity / 256-slot steps, twice over).
    net.clock.advance(Duration::from_secs(11));
    let cap = net.sw.fdb().capacity();
    for _ in 0..(2 * cap).div_ceil(256) + 1 {
        net.sw.poll();
    }
    assert_eq!(net.sw.fdb().len(), 0);
    assert_eq!(net.sw.fdb_stats().aged, 100);
    net.assert_clean();
}

#[test]
fn repeated_bursts_follow_a_move_and_a_removal_within_one_tick() {
    // Port A sends burst after burst of one flow to X, the clock standing still: each
    // burst must see the FDB as it is now, not as it was for the previous identical burst.
    let x = [0x02, 0xdd, 0, 0, 0, 1];
    let a = sim(0, |c| c.dst = MacPattern::Fixed(x));
    let b = sim(1, |c| c.src = Some(MacPattern::Fixed(x)));
    let c = sim(2, |c| c.src = Some(MacPattern::Fixed(x)));
    let mut net = Net::new(vec![a, b, c], |_| {});
    net.send(1, 1); // X on B.
    net.send(0, 8);
    net.send(0, 8);
    assert_eq!((net.sunk(1), net.sunk(2)), (16, 1));
    net.send(2, 1); // X moves to C, same tick.
    net.send(0, 8);
    assert_eq!((net.sunk(1), net.sunk(2)), (17, 9));
    // C leaves: X is forgotten with it, and A's frames are flooded to B.
    let gone = net.sw.remove_port(net.ids[2]).expect("port present");
    drop(gone);
    net.send(0, 8);
    assert_eq!(net.sunk(1), 25);
}

/// A sim port with a doorbell: it can be waited on (`wait_fd` is an eventfd the test rings
/// after releasing frames), so a switch whose every port has one sleeps without a timeout.
struct Belled {
    inner: SimPort,
    bell: std::os::fd::OwnedFd,
    prepared: Arc<std::sync::atomic::AtomicU64>,
}

impl pmd::Port for Belled {
    sim_port_methods_but_rx!();
    fn rx_burst(&mut self, out: &mut [pmd::Frame]) -> usize {
        self.inner.rx_burst(out)
    }
    fn prepare_wait(&mut self) -> bool {
        self.prepared.fetch_add(1, Relaxed);
        let mut b = [0u8; 8];
        let _ = rustix::io::read(&self.bell, &mut b);
        false
    }
    fn wait_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        Some(self.bell.as_fd())
    }
}

fn belled(
    inner: SimPort,
) -> (
    Belled,
    std::os::fd::OwnedFd,
    Arc<std::sync::atomic::AtomicU64>,
) {
    use rustix::event::EventfdFlags;
    let bell =
        rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
    let ring = bell.try_clone().expect("dup");
    let prepared = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p = Belled {
        inner,
        bell,
        prepared: prepared.clone(),
    };
    (p, ring, prepared)
}

/// With every port waitable, the idle loop sleeps in `poll` on the ports' descriptors with
/// an hour's timeout: only a port's doorbell can get frames forwarded, and only the
/// waker's eventfd can get the loop to stop.
#[test]
fn sleeping_run_loop_wakes_on_a_port_doorbell_and_on_the_waker() {
    use std::sync::atomic::AtomicBool;
    let (a, ring_a, prepared_a) = belled(sim(0, |c| c.dst = MacPattern::Fixed(mac(1))));
    let (b, _ring_b, _) = belled(sim(1, |_| {}));
    let (pa, pb) = (a.inner.probe(), b.inner.probe());
    let hour = Duration::from_secs(3600);
    let mut sw = Switch::new(SwitchConfig {
        idle: switch::IdleConfig {
            spin_polls: 8,
            yield_polls: 8,
            park: hour,
            sleep: hour,
            housekeeping_polls: 64,
        },
        ..SwitchConfig::default()
    })
    .expect("valid config");
    sw.add_port(Box::new(a)).expect("added");
    sw.add_port(Box::new(b)).expect("added");
    let waker = sw.waker();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let runner = std::thread::spawn(move || {
        sw.run(&stop2).expect("runs");
        sw
    });
    // Wait until the loop has gone to sleep (it prepared the ports for it).
    for _ in 0..20_000 {
        if prepared_a.load(Relaxed) > 0 && waker.is_parked() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(waker.is_parked(), "the loop never went to sleep");
    for round in 1..=3u64 {
        pa.release(100);
        rustix::io::write(&ring_a, &1u64.to_ne_bytes()).expect("ring");
        for _ in 0..20_000 {
            if SimProbe::get(&pb.sunk) == 100 * round {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(SimProbe::get(&pb.sunk), 100 * round, "round {round}");
    }
    stop.store(true, Relaxed);
    waker.wake();
    let sw = runner.join().expect("run loop thread");
    assert_eq!(sw.counters(PortId(1)).expect("present").snapshot().tx, 300);
}

#[test]
fn a_capture_takes_a_ports_frames_both_ways_loses_what_does_not_fit_and_ends_with_its_reader() {
    let mut net = Net::new(
        vec![
            sim(0, |c| c.dst = MacPattern::Fixed(mac(1))),
            sim(1, |c| c.dst = MacPattern::Fixed(mac(0))),
        ],
        |_| {},
    );
    // Both stations known first (no flooding in what follows).
    net.send(0, 1);
    net.send(1, 1);
    let (tx, rx) = crossbeam_channel::bounded(8);
    let tap = switch::Tap::new(1, net.ids[1], true, true, 20, tx);
    assert!(net.sw.start_capture(tap));
    let (tx2, _rx2) = crossbeam_channel::bounded(8);
    assert!(
        !net.sw
            .start_capture(switch::Tap::new(2, net.ids[0], true, true, 20, tx2)),
        "one capture at a time"
    );
    net.send(0, 3); // sent to port 1
    net.send(1, 2); // received from port 1
    let got: Vec<switch::Captured> = rx.try_iter().collect();
    assert_eq!(got.len(), 5);
    assert_eq!(got.iter().filter(|c| c.tx).count(), 3);
    for c in &got {
        assert_eq!(c.data.len(), 20, "cut at the snaplen");
        assert!(c.orig_len > 20);
        let (src, dst) = if c.tx {
            (mac(0), mac(1))
        } else {
            (mac(1), mac(0))
        };
        assert_eq!((&c.data[6..12], &c.data[..6]), (&src[..], &dst[..]));
    }
    // A queue of 8: of 20 frames, 8 are taken and the rest counted as lost, never waited for.
    net.send(0, 20);
    assert_eq!(rx.try_iter().count(), 8);
    net.send(0, 1);
    let next = rx.try_recv().expect("the next frame");
    assert_eq!(next.lost, 12, "the frames the full queue could not take");
    // Forwarding never noticed.
    assert_eq!(net.probes[1].sunk.load(Relaxed), 1 + 3 + 20 + 1);
    // The reader goes: the next frame ends the capture.
    drop(rx);
    net.send(0, 1);
    assert_eq!(net.sw.capturing(), None);
    // Stopping names the capture: a stale stop leaves a newer one running.
    let (tx, _rx) = crossbeam_channel::bounded(8);
    assert!(
        net.sw
            .start_capture(switch::Tap::new(3, net.ids[0], true, false, 64, tx))
    );
    net.sw.stop_capture(1);
    assert_eq!(net.sw.capturing(), Some(net.ids[0]));
    // A port leaving ends its capture.
    net.sw.remove_port(net.ids[0]);
    assert_eq!(net.sw.capturing(), None);
}

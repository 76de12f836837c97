//! What the switch enforces on ports whose frames come from an untrusted party (an app's
//! port, [`Port::admission`]), and on every port: one copy of each app frame's header, taken
//! once, is what every decision is made on and what every frame leaves with; an app's MAC is
//! pinned to its port; group source addresses, reserved link-local destinations and frames
//! over an app's rate are dropped and counted; a port learns at most its share of the FDB.
//!
//! The app here is a sim generator behind a wrapper that says it is untrusted, and that can
//! rewrite the source MAC in its own buffers at the moments a hostile app could: after its
//! port handed a frame over, or while the switch copies it to other ports.

use std::sync::Arc;
use std::time::Duration;

use grant_pool::{BufHandle, BufIdx, Pool, PoolId, PoolSet};
use pmd::intel::dma::DmaSource;
use pmd::intel::model::Model;
use pmd::intel::{Family, IntelConfig, IntelPort};
use pmd::sim::{MacPattern, SimConfig, SimPort, SimProbe};
use pmd::{Admission, Frame, LinkState, Mac, MacHeader, Port, PortStats};
use switch::fdb::mac_key;
use switch::{DropReason, ManualClock, PortId, Switch, SwitchConfig};

/// The MAC the app was admitted with.
const APP: Mac = [0x02, 0, 0, 0, 0, 0x0a];
/// The MAC a hostile app would rather send from.
const SPOOF: Mac = [0x02, 0, 0, 0, 0, 0x66];
const NIC: Mac = [0x02, 0xfe, 0, 0, 0, 1];
const OTHER: Mac = [0x02, 0xfe, 0, 0, 0, 2];

/// Overwrites the source MAC of every buffer of `pool` with `mac`.
fn rewrite_sources(pool: &Pool, mac: Mac) {
    for i in 0..pool.layout().count as u32 {
        if let Ok(r) = pool.handle(BufIdx(i)).and_then(|h| pool.buf(h)) {
            let _ = r.write(6, &mac);
        }
    }
}

/// An app's port as the switch sees one: untrusted, admitted with [`APP`] (and a rate), its
/// frames from a gated sim generator. With `rewrite`, it writes that source MAC into each
/// frame's buffer after handing the frame over, as an app racing its port's checks would.
struct App {
    inner: SimPort,
    pool: Pool,
    admission: Admission,
    rewrite: Option<Mac>,
}

impl App {
    fn new(pool: u8, dst: MacPattern, f: impl FnOnce(&mut SimConfig)) -> (Self, Arc<SimProbe>) {
        let mut c = SimConfig::new("app", APP, PoolId(pool));
        c.gen_bufs = 256;
        c.spare_bufs = 256;
        c.gated = true;
        c.sequence = true;
        c.frame_len = 128;
        c.dst = dst;
        f(&mut c);
        let inner = SimPort::new(c).expect("sim app");
        let probe = inner.probe();
        let pool = inner.pool().clone();
        let app = Self {
            inner,
            pool,
            admission: Admission {
                mac: APP,
                frames_per_sec: 0,
                bytes_per_sec: 0,
                fixed: false,
            },
            rewrite: None,
        };
        (app, probe)
    }
}

impl Port for App {
    fn name(&self) -> &str {
        "app"
    }
    fn mac(&self) -> Mac {
        self.admission.mac
    }
    fn link(&self) -> LinkState {
        LinkState::Up { mbps: 0 }
    }
    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
    fn tx_pools(&self) -> PoolSet {
        self.inner.own_pools()
    }
    fn own_pools(&self) -> PoolSet {
        self.inner.own_pools()
    }
    fn pools(&self) -> &[Pool] {
        self.inner.pools()
    }
    fn admission(&self) -> Option<Admission> {
        Some(self.admission)
    }
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        let n = self.inner.rx_burst(out);
        if let Some(m) = self.rewrite {
            for f in &out[..n] {
                let _ = self.pool.buf(f.buf).map(|r| r.write(6, &m));
            }
        }
        n
    }
    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.inner.tx_burst(frames)
    }
    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        self.inner.tx_done(out)
    }
    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        self.inner.alloc(out)
    }
    fn reclaim(&mut self, bufs: &[BufHandle]) {
        self.inner.reclaim(bufs)
    }
}

/// A port that, each time the switch asks it for buffers to copy into, first rewrites the
/// source MAC in every buffer of the app's pool: the app's writes landing between the
/// switch's look at a frame and its copies of it.
struct RewriteOnAlloc {
    inner: Box<dyn Port>,
    target: Pool,
    spoof: Mac,
}

impl Port for RewriteOnAlloc {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn mac(&self) -> Mac {
        self.inner.mac()
    }
    fn link(&self) -> LinkState {
        self.inner.link()
    }
    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
    fn tx_pools(&self) -> PoolSet {
        self.inner.tx_pools()
    }
    fn own_pools(&self) -> PoolSet {
        self.inner.own_pools()
    }
    fn pools(&self) -> &[Pool] {
        self.inner.pools()
    }
    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        self.inner.grant_tx_pool(pool)
    }
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        self.inner.rx_burst(out)
    }
    fn tx_burst(&mut self, frames: &[Frame]) -> usize {
        self.inner.tx_burst(frames)
    }
    fn tx_burst_with_macs(&mut self, frames: &[Frame], macs: &[MacHeader]) -> usize {
        self.inner.tx_burst_with_macs(frames, macs)
    }
    fn tx_done(&mut self, out: &mut [BufHandle]) -> usize {
        self.inner.tx_done(out)
    }
    fn alloc(&mut self, out: &mut [BufHandle]) -> usize {
        rewrite_sources(&self.target, self.spoof);
        self.inner.alloc(out)
    }
    fn reclaim(&mut self, bufs: &[BufHandle]) {
        self.inner.reclaim(bufs)
    }
}

/// A sim port numbered `pool` with MAC `mac`: a gated generator of sequenced frames to `dst`
/// and a verifying sink that records the MACs of every frame it takes.
fn sim(mac: Mac, pool: u8, dst: MacPattern, f: impl FnOnce(&mut SimConfig)) -> SimPort {
    let mut c = SimConfig::new(format!("sim{pool}"), mac, PoolId(pool));
    c.gen_bufs = 256;
    c.spare_bufs = 512;
    c.gated = true;
    c.sequence = true;
    c.verify = true;
    c.frame_len = 128;
    c.record_headers = true;
    c.dst = dst;
    f(&mut c);
    SimPort::new(c).expect("sim port")
}

fn switch(clock: &ManualClock, f: impl FnOnce(&mut SwitchConfig)) -> Switch {
    let mut cfg = SwitchConfig {
        clock: switch::Clock::Manual(clock.clone()),
        aging: Duration::from_secs(10),
        ..SwitchConfig::default()
    };
    f(&mut cfg);
    Switch::new(cfg).expect("switch")
}

/// Polls until a few rounds pass with no frame received (bounded).
fn settle(sw: &mut Switch) {
    let mut quiet = 0;
    for _ in 0..100_000 {
        if sw.poll() == 0 {
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

fn sources(p: &SimProbe) -> Vec<Mac> {
    p.headers
        .lock()
        .expect("headers")
        .iter()
        .map(|h| {
            let mut m = [0u8; 6];
            m.copy_from_slice(&h[6..]);
            m
        })
        .collect()
}

fn dropped(sw: &Switch, id: PortId, r: DropReason) -> u64 {
    sw.counters(id).expect("port").snapshot().dropped(r)
}

#[test]
fn an_app_that_rewrites_its_source_after_handing_frames_over_poisons_no_fdb_entry() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let nic = sim(NIC, 1, MacPattern::Fixed(APP), |_| {});
    let nic_probe = nic.probe();
    let nic = sw.add_port(Box::new(nic)).expect("nic");
    let other = sim(OTHER, 2, MacPattern::Broadcast, |_| {});
    let other_probe = other.probe();
    sw.add_port(Box::new(other)).expect("other");
    let (mut app, app_probe) = App::new(3, MacPattern::Fixed(NIC), |_| {});
    app.rewrite = Some(SPOOF);
    let app = sw.add_port(Box::new(app)).expect("app");
    // The NIC is known; the app sends to it, every frame's source rewritten once handed over.
    nic_probe.release(1);
    settle(&mut sw);
    app_probe.release(100);
    settle(&mut sw);
    assert_eq!(
        sw.fdb().lookup(mac_key(&SPOOF), 0),
        None,
        "the FDB learned the MAC the app rewrote its frames to"
    );
    assert_eq!(dropped(&sw, app, DropReason::Spoofed), 100);
    assert_eq!(
        SimProbe::get(&nic_probe.sunk),
        0,
        "no frame with a source other than the app's left"
    );
    // The app's own MAC stays its port's: frames to it are unicast to the app.
    nic_probe.release(10);
    settle(&mut sw);
    assert_eq!(sw.fdb().lookup(mac_key(&APP), 0), Some(app.0));
    assert_eq!(
        SimProbe::get(&other_probe.sunk),
        0,
        "frames to the app's MAC were flooded"
    );
    assert_eq!(SimProbe::get(&app_probe.sunk), 1 + 10);
    assert_eq!(sw.counters(nic).expect("nic").snapshot().flooded, 0);
}

#[test]
fn frames_an_app_sends_leave_by_copy_and_by_handle_with_its_admitted_source() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let (app, app_probe) = App::new(1, MacPattern::Broadcast, |_| {});
    let app_pool = app.pool.clone();
    // A NIC that reads the app's pool (the frame goes to it by handle), then a port whose
    // allocation lets the app rewrite its buffers, then a port that gets a copy.
    let mut nic = sim(NIC, 2, MacPattern::Broadcast, |_| {});
    assert!(nic.grant_tx_pool(&app_pool));
    let nic_probe = nic.probe();
    let app = sw.add_port(Box::new(app)).expect("app");
    let nic = sw.add_port(Box::new(nic)).expect("nic");
    let racer = sim(OTHER, 3, MacPattern::Broadcast, |_| {});
    let racer_probe = racer.probe();
    sw.add_port(Box::new(RewriteOnAlloc {
        inner: Box::new(racer),
        target: app_pool,
        spoof: SPOOF,
    }))
    .expect("racer");
    let copy = sim([0x02, 0xfe, 0, 0, 0, 3], 4, MacPattern::Broadcast, |_| {});
    let copy_probe = copy.probe();
    let copy = sw.add_port(Box::new(copy)).expect("copy");
    app_probe.release(200);
    settle(&mut sw);
    for (who, p) in [
        ("the NIC (by handle)", &nic_probe),
        ("the racing port (copy)", &racer_probe),
        ("another port (copy)", &copy_probe),
    ] {
        let got = sources(p);
        assert_eq!(got.len(), 200, "{who}: every frame arrived");
        assert!(
            got.iter().all(|m| *m == APP),
            "{who} got frames with a source the switch never checked: {:x?}",
            got.iter().find(|m| **m != APP)
        );
        assert_eq!(SimProbe::get(&p.payload_errors), 0, "{who}");
        assert_eq!(SimProbe::get(&p.seq_errors), 0, "{who}");
    }
    assert_eq!(sw.counters(nic).expect("nic").snapshot().tx_copied, 0);
    assert_eq!(sw.counters(copy).expect("copy").snapshot().tx_copied, 200);
    assert_eq!(sw.counters(app).expect("app").snapshot().dropped_total(), 0);
}

#[test]
fn a_unicast_burst_copied_to_one_port_carries_the_checked_header() {
    // The whole burst to one destination that cannot read the app's pool (the shortcut
    // that copies straight from the receive array).
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let (app, app_probe) = App::new(1, MacPattern::Fixed(NIC), |_| {});
    let app_pool = app.pool.clone();
    sw.add_port(Box::new(app)).expect("app");
    let nic = sim(NIC, 2, MacPattern::Fixed(APP), |_| {});
    let nic_probe = nic.probe();
    sw.add_port(Box::new(RewriteOnAlloc {
        inner: Box::new(nic),
        target: app_pool,
        spoof: SPOOF,
    }))
    .expect("nic");
    nic_probe.release(1);
    settle(&mut sw);
    app_probe.release(64);
    settle(&mut sw);
    let got = sources(&nic_probe);
    assert_eq!(got.len(), 64);
    assert!(got.iter().all(|m| *m == APP), "{got:x?}");
}

#[test]
fn wire_frames_cannot_move_an_apps_mac() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    // The NIC's peer claims the app's MAC as its source.
    let nic = sim(NIC, 1, MacPattern::Broadcast, |c| {
        c.src = Some(MacPattern::Fixed(APP));
    });
    let nic_probe = nic.probe();
    let nic = sw.add_port(Box::new(nic)).expect("nic");
    let other = sim(OTHER, 2, MacPattern::Fixed(APP), |_| {});
    let other_probe = other.probe();
    sw.add_port(Box::new(other)).expect("other");
    let (app, app_probe) = App::new(3, MacPattern::Fixed(NIC), |_| {});
    let app = sw.add_port(Box::new(app)).expect("app");
    nic_probe.release(50);
    settle(&mut sw);
    assert_eq!(sw.fdb().lookup(mac_key(&APP), 0), Some(app.0));
    assert_eq!(sw.fdb_stats().moves, 0);
    assert!(sw.fdb_stats().pinned > 0, "the claims are counted");
    // Frames to the app still reach the app, and only the app.
    let at_nic = SimProbe::get(&nic_probe.sunk);
    other_probe.release(20);
    settle(&mut sw);
    assert_eq!(SimProbe::get(&app_probe.sunk), 20 + 50);
    assert_eq!(SimProbe::get(&nic_probe.sunk), at_nic);
    // The pin goes with the port: then the MAC is learned as any station.
    drop(sw.remove_port(app));
    nic_probe.release(1);
    settle(&mut sw);
    assert_eq!(sw.fdb().lookup(mac_key(&APP), 0), Some(nic.0));
}

#[test]
fn an_app_cannot_claim_a_mac_a_station_on_the_wire_holds_unless_its_config_gives_it() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    // A station on the wire uses the MAC first (the gateway, say).
    let nic = sim(NIC, 1, MacPattern::Broadcast, |c| {
        c.src = Some(MacPattern::Fixed(APP));
    });
    let nic_probe = nic.probe();
    let nic = sw.add_port(Box::new(nic)).expect("nic");
    nic_probe.release(1);
    settle(&mut sw);
    assert_eq!(sw.fdb().lookup(mac_key(&APP), 0), Some(nic.0));
    // An app that chose that MAC itself is refused, and the station keeps its traffic.
    let (app, _) = App::new(2, MacPattern::Fixed(NIC), |_| {});
    match sw.add_port(Box::new(app)) {
        Err(switch::SwitchError::Admission { why, .. }) => {
            assert_eq!(why, switch::fdb::PinError::Held(nic.0));
        }
        other => panic!("expected a refused admission, got {:?}", other.map(|p| p.0)),
    }
    assert_eq!(sw.fdb().lookup(mac_key(&APP), 0), Some(nic.0));
    assert_eq!(sw.fdb_stats().pinned, 0);
    // An app whose configuration gives it the MAC takes it over.
    let (mut app, _) = App::new(3, MacPattern::Fixed(NIC), |_| {});
    app.admission.fixed = true;
    let app = sw
        .add_port(Box::new(app))
        .expect("a configured MAC is admitted");
    assert_eq!(sw.fdb().lookup(mac_key(&APP), 0), Some(app.0));
}

#[test]
fn group_source_addresses_are_dropped_and_counted_on_every_port() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let nic = sim(NIC, 1, MacPattern::Fixed(OTHER), |c| {
        c.src = Some(MacPattern::RoundRobin(vec![
            [0xff; 6],
            [0x01, 0x00, 0x5e, 0, 0, 1],
            [0x33, 0x33, 0, 0, 0, 1],
        ]));
    });
    let nic_probe = nic.probe();
    let nic = sw.add_port(Box::new(nic)).expect("nic");
    let other = sim(OTHER, 2, MacPattern::Broadcast, |_| {});
    let other_probe = other.probe();
    sw.add_port(Box::new(other)).expect("other");
    let (mut app, app_probe) = App::new(3, MacPattern::Fixed(OTHER), |_| {});
    app.rewrite = Some([0x03, 0, 0, 0, 0, 0x0a]);
    let app = sw.add_port(Box::new(app)).expect("app");
    // One frame at a time, then whole bursts of them: both ways through the switch.
    for n in [1, 1, 1, 96] {
        nic_probe.release(n);
        settle(&mut sw);
    }
    app_probe.release(40);
    settle(&mut sw);
    assert_eq!(dropped(&sw, nic, DropReason::GroupSource), 99);
    assert_eq!(dropped(&sw, app, DropReason::GroupSource), 40);
    assert_eq!(SimProbe::get(&other_probe.sunk), 0, "none was forwarded");
    assert_eq!(SimProbe::get(&app_probe.sunk), 0);
    // Every buffer is back with its owner.
    assert_eq!(
        SimProbe::get(&nic_probe.free),
        SimProbe::get(&nic_probe.total)
    );
    assert_eq!(
        SimProbe::get(&app_probe.free),
        SimProbe::get(&app_probe.total)
    );
}

#[test]
fn an_app_may_not_send_to_reserved_link_local_groups() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let nic = sim(NIC, 1, MacPattern::Broadcast, |_| {});
    let nic_probe = nic.probe();
    sw.add_port(Box::new(nic)).expect("nic");
    // Pause, STP, LLDP (and the rest of 01:80:c2:00:00:0x), then a group just past them.
    let reserved: Vec<Mac> = (0..16u8).map(|b| [0x01, 0x80, 0xc2, 0, 0, b]).collect();
    let (app, app_probe) = App::new(2, MacPattern::RoundRobin(reserved), |_| {});
    let app = sw.add_port(Box::new(app)).expect("app");
    app_probe.release(64);
    settle(&mut sw);
    assert_eq!(dropped(&sw, app, DropReason::LinkLocal), 64);
    assert_eq!(SimProbe::get(&nic_probe.sunk), 0);
    let group = MacPattern::Fixed([0x01, 0x80, 0xc2, 0, 0, 0x10]);
    let (mut app2, app2_probe) = App::new(3, group, |c| c.mac = [0x02, 0, 0, 0, 0, 0x0b]);
    app2.admission.mac = [0x02, 0, 0, 0, 0, 0x0b];
    let app2 = sw.add_port(Box::new(app2)).expect("app2");
    app2_probe.release(8);
    settle(&mut sw);
    assert_eq!(dropped(&sw, app2, DropReason::LinkLocal), 0);
    assert_eq!(
        SimProbe::get(&nic_probe.sunk),
        8,
        "other groups are flooded"
    );
}

#[test]
fn an_app_over_its_rate_is_dropped_and_counted() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let nic = sim(NIC, 1, MacPattern::Broadcast, |_| {});
    let nic_probe = nic.probe();
    sw.add_port(Box::new(nic)).expect("nic");
    // 1000 frames a second: a bucket of a tenth of a second's worth, 100 frames.
    let (mut app, app_probe) = App::new(2, MacPattern::Fixed(NIC), |_| {});
    app.admission.frames_per_sec = 1000;
    let app = sw.add_port(Box::new(app)).expect("app");
    app_probe.release(250);
    settle(&mut sw);
    assert_eq!(SimProbe::get(&nic_probe.sunk), 100);
    assert_eq!(dropped(&sw, app, DropReason::RateLimited), 150);
    // 30 ms later: 30 more.
    clock.advance(Duration::from_millis(30));
    app_probe.release(100);
    settle(&mut sw);
    assert_eq!(SimProbe::get(&nic_probe.sunk), 130);
    assert_eq!(dropped(&sw, app, DropReason::RateLimited), 220);
    // A second later the bucket is full again, not fuller.
    clock.advance(Duration::from_secs(1));
    app_probe.release(200);
    settle(&mut sw);
    assert_eq!(SimProbe::get(&nic_probe.sunk), 230);

    // Bytes: 200 000 a second of 128-byte frames: a bucket of 64 KiB (the least), 512
    // frames, then 1562.5 frames a second.
    let (mut app2, app2_probe) = App::new(3, MacPattern::Fixed(NIC), |c| {
        c.mac = [0x02, 0, 0, 0, 0, 0x0b];
        c.gen_bufs = 1024;
    });
    app2.admission = Admission {
        mac: [0x02, 0, 0, 0, 0, 0x0b],
        frames_per_sec: 0,
        bytes_per_sec: 200_000,
        fixed: false,
    };
    let app2 = sw.add_port(Box::new(app2)).expect("app2");
    let before = SimProbe::get(&nic_probe.sunk);
    app2_probe.release(600);
    settle(&mut sw);
    assert_eq!(SimProbe::get(&nic_probe.sunk) - before, 512);
    assert_eq!(dropped(&sw, app2, DropReason::RateLimited), 88);
    clock.advance(Duration::from_millis(64));
    app2_probe.release(200);
    settle(&mut sw);
    assert_eq!(SimProbe::get(&nic_probe.sunk) - before, 612);
}

#[test]
fn a_port_learns_at_most_its_share_of_the_fdb_and_counts_the_rest() {
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |c| {
        c.fdb_entries = 1000;
        c.max_stations_per_port = 10;
    });
    // A peer sending from 100 addresses fills its port's share, not the table.
    let many: Vec<Mac> = (0..100u8).map(|i| [0x02, 0xaa, 0, 0, 0, i]).collect();
    let nic = sim(NIC, 1, MacPattern::Fixed(OTHER), |c| {
        c.src = Some(MacPattern::RoundRobin(many));
    });
    let nic_probe = nic.probe();
    let nic = sw.add_port(Box::new(nic)).expect("nic");
    let other = sim(OTHER, 2, MacPattern::Fixed(NIC), |_| {});
    let other_probe = other.probe();
    let other = sw.add_port(Box::new(other)).expect("other");
    nic_probe.release(200);
    settle(&mut sw);
    assert_eq!(sw.fdb().learned_on(nic.0), 10);
    assert_eq!(sw.fdb().not_learned(nic.0), 90 * 2);
    assert_eq!(SimProbe::get(&other_probe.sunk), 200, "traffic still flows");
    // The other port still learns.
    other_probe.release(1);
    settle(&mut sw);
    assert_eq!(sw.fdb().learned_on(other.0), 1);
}

#[test]
fn an_app_frame_to_an_intel_port_is_copied_into_its_dma_buffers_with_the_checked_header() {
    // The intel port (on its register model) is offered the app's pool as the server offers
    // it on attach: it refuses, so the switch copies each frame once into the port's own
    // DMA buffers, and the wire carries the header the switch checked even when the app
    // rewrites its buffer while the switch copies.
    let clock = ManualClock::new();
    let mut sw = switch(&clock, |_| {});
    let (app, app_probe) = App::new(1, MacPattern::Broadcast, |_| {});
    let app_pool = app.pool.clone();
    let model = Model::new(Family::Igb, NIC);
    let cfg = IntelConfig {
        pci: "model".into(),
        pool: PoolId(9),
        queues: 1,
        ring_size: 256,
        bufs: 1024,
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
    sw.add_port(Box::new(app)).expect("app");
    let intel = sw
        .add_port(Box::new(RewriteOnAlloc {
            inner: Box::new(intel),
            target: app_pool.clone(),
            spoof: SPOOF,
        }))
        .expect("intel");
    let granted = sw.port_mut(intel).expect("intel").grant_tx_pool(&app_pool);
    sw.refresh_port(intel);
    assert!(!granted, "the intel port took the app's pool for DMA");
    app_probe.release(100);
    settle(&mut sw);
    let mut wire = Vec::new();
    for _ in 0..10 {
        model.transmit(0, &mut |f| wire.push(f.to_vec()));
        sw.poll();
    }
    assert_eq!(wire.len(), 100);
    assert!(
        wire.iter().all(|f| f[6..12] == APP),
        "a frame left with a source the switch never checked"
    );
    assert_eq!(sw.counters(intel).expect("intel").snapshot().tx_copied, 100);
}

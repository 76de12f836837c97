//! `switch::Switch::poll` with hostile app ports: the bytes of a frame's header change in
//! the app's buffers after the port handed it over, and again while the switch copies it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use grant_pool::{BufHandle, BufIdx, Pool, PoolId, PoolSet};
use pmd::sim::{MacPattern, SimConfig, SimPort, SimProbe};
use pmd::{Admission, Frame, LinkState, Mac, MacHeader, Port, PortStats};
use switch::fdb::mac_key;
use switch::{ManualClock, Switch, SwitchConfig};

use crate::Input;

/// A header's worth of bytes an app writes over frames at hostile moments.
type Scribble = [u8; 14];

/// What a hostile party writes now (nothing while `None`); the harness changes it.
type Pen = Arc<Mutex<Option<Scribble>>>;

fn pen_of(p: &Pen) -> Option<Scribble> {
    *p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a hostile party's writes land.
enum Target {
    /// Over the header of each frame the port just handed to the switch (an app racing its
    /// port's checks; the port is untrusted, admitted with `Admission`).
    OwnFrames(Admission),
    /// Over every buffer of these pools, each time the switch asks the port for buffers to
    /// copy into: an app's writes landing between the switch's look at a frame and its
    /// copies of it (the port itself is a trusted NIC-like one).
    Pools(Vec<Pool>),
}

/// A sim port through which a hostile party writes `pen`'s bytes at the moments `target`
/// says.
struct Scribbler {
    inner: SimPort,
    target: Target,
    pen: Pen,
}

impl Scribbler {
    fn write_over(pool: &Pool, bufs: impl Iterator<Item = BufHandle>, s: &Scribble) {
        for h in bufs {
            let _ = pool.buf(h).map(|r| r.write(0, s));
        }
    }
}

impl Port for Scribbler {
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
    fn admission(&self) -> Option<Admission> {
        match &self.target {
            Target::OwnFrames(a) => Some(*a),
            Target::Pools(_) => None,
        }
    }
    fn grant_tx_pool(&mut self, pool: &Pool) -> bool {
        self.inner.grant_tx_pool(pool)
    }
    fn revoke_tx_pool(&mut self, pool: PoolId) -> bool {
        self.inner.revoke_tx_pool(pool)
    }
    fn rx_burst(&mut self, out: &mut [Frame]) -> usize {
        let n = self.inner.rx_burst(out);
        if let (Target::OwnFrames(_), Some(s)) = (&self.target, pen_of(&self.pen)) {
            Self::write_over(self.inner.pool(), out[..n].iter().map(|f| f.buf), &s);
        }
        n
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
        if let (Target::Pools(pools), Some(s)) = (&self.target, pen_of(&self.pen)) {
            for p in pools {
                let all = (0..p.layout().count as u32).filter_map(|i| p.handle(BufIdx(i)).ok());
                Self::write_over(p, all, &s);
            }
        }
        self.inner.alloc(out)
    }
    fn reclaim(&mut self, bufs: &[BufHandle]) {
        self.inner.reclaim(bufs)
    }
}

const APPS: [Mac; 2] = [[2, 0, 0, 0, 0, 0x0a], [2, 0, 0, 0, 0, 0x0b]];
const NICS: [Mac; 2] = [[2, 0xfe, 0, 0, 0, 1], [2, 0xfe, 0, 0, 0, 2]];

fn scribble(inp: &mut Input<'_>) -> Scribble {
    let mut s = [0u8; 14];
    // Mostly MACs that mean something here (the other app's, a NIC's, broadcast, the
    // reserved groups), sometimes any bytes.
    let macs = [
        APPS[0],
        APPS[1],
        NICS[0],
        NICS[1],
        [0xff; 6],
        [1, 0x80, 0xc2, 0, 0, 1],
    ];
    for half in 0..2 {
        let m = if inp.below(4) == 0 {
            [inp.u8(), inp.u8(), inp.u8(), inp.u8(), inp.u8(), inp.u8()]
        } else {
            macs[inp.below(macs.len())]
        };
        s[half * 6..half * 6 + 6].copy_from_slice(&m);
    }
    s[12..].copy_from_slice(&inp.u16().to_be_bytes());
    s
}

fn sim(name: &str, mac: Mac, pool: u8, dst: MacPattern) -> SimConfig {
    let mut c = SimConfig::new(name, mac, PoolId(pool));
    c.gen_bufs = 64;
    c.spare_bufs = 128;
    c.gated = true;
    c.frame_len = 96;
    c.track_buffers = true;
    c.record_headers = true;
    c.dst = dst;
    c
}

/// Two hostile apps and two NIC-like ports (one of which races the apps' writes against the
/// switch's copies) exchange frames for as long as the input says, the apps scribbling over
/// their frames' headers. Then, with everything delivered and given back: no buffer was
/// lost, handed back twice or read from a pool a port may not read; every frame that left an
/// app carried its admitted source MAC; the FDB answers each app's MAC with its port.
pub fn hostile_apps(data: &[u8]) {
    let mut inp = Input::new(data);
    let clock = ManualClock::new();
    let mut sw = Switch::new(SwitchConfig {
        clock: switch::Clock::Manual(clock.clone()),
        aging: Duration::from_secs(10),
        ..SwitchConfig::default()
    })
    .expect("switch");
    let dst_of = |inp: &mut Input<'_>| match inp.below(4) {
        0 => MacPattern::Broadcast,
        1 => MacPattern::RoundRobin(vec![NICS[0], NICS[1], APPS[0], APPS[1]]),
        2 => MacPattern::UnknownUnicast(3),
        _ => MacPattern::Fixed([APPS[0], APPS[1], NICS[0], NICS[1]][inp.below(4)]),
    };
    let mut apps = Vec::new();
    let mut app_pools = Vec::new();
    // The apps' pens, then the racer's.
    let pens: Vec<Pen> = (0..3).map(|_| Arc::new(Mutex::new(None))).collect();
    let mut probes: Vec<Arc<SimProbe>> = Vec::new();
    for (i, &mac) in APPS.iter().enumerate() {
        let inner = SimPort::new(sim("app", mac, i as u8, dst_of(&mut inp))).expect("app");
        probes.push(inner.probe());
        app_pools.push(inner.pool().clone());
        apps.push(Scribbler {
            inner,
            target: Target::OwnFrames(Admission {
                mac,
                frames_per_sec: 0,
                bytes_per_sec: 0,
                fixed: false,
            }),
            pen: pens[i].clone(),
        });
    }
    let mut nic_ids = Vec::new();
    for (i, &mac) in NICS.iter().enumerate() {
        let mut inner = SimPort::new(sim("nic", mac, 2 + i as u8, dst_of(&mut inp))).expect("nic");
        probes.push(inner.probe());
        let id = if i == 0 {
            // Reads the apps' pools: their frames reach it by handle, with the checked MACs.
            for p in &app_pools {
                inner.grant_read(p.clone());
            }
            sw.add_port(Box::new(inner))
        } else {
            sw.add_port(Box::new(Scribbler {
                inner,
                target: Target::Pools(app_pools.clone()),
                pen: pens[2].clone(),
            }))
        };
        nic_ids.push(id.expect("nic added"));
    }
    let mut app_ids = Vec::new();
    for a in apps {
        app_ids.push(sw.add_port(Box::new(a)).expect("app added"));
    }
    let mut ops = 0;
    while !inp.is_empty() && ops < 200 {
        ops += 1;
        match inp.below(6) {
            0 | 1 => probes[inp.below(probes.len())].release(1 + inp.below(48) as u64),
            2 => {
                let s = (inp.below(4) != 0).then(|| scribble(&mut inp));
                *pens[inp.below(pens.len())]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = s;
            }
            3 => clock.advance(Duration::from_millis(inp.below(3000) as u64)),
            _ => {
                for _ in 0..=inp.below(8) {
                    sw.poll();
                }
                // Whatever the apps wrote, a NIC's MAC, while known, is the NIC's.
                for (k, &id) in nic_ids.iter().enumerate() {
                    let at = sw.fdb().lookup(mac_key(&NICS[k]), sw.now());
                    assert!(
                        at.is_none() || at == Some(id.0),
                        "NIC {k}'s MAC moved to {at:?}"
                    );
                }
            }
        }
    }
    // Let everything in flight arrive and come back.
    let mut quiet = 0;
    for _ in 0..10_000 {
        if sw.poll() == 0 {
            quiet += 1;
            if quiet == 4 {
                break;
            }
        } else {
            quiet = 0;
        }
    }
    assert_eq!(sw.orphans(), 0, "buffers nobody could take back");
    for p in &probes {
        assert_eq!(
            SimProbe::get(&p.bad_reclaims),
            0,
            "a buffer given back twice"
        );
        assert_eq!(
            SimProbe::get(&p.unreadable),
            0,
            "a frame from a pool the port cannot read"
        );
        assert_eq!(
            SimProbe::get(&p.free),
            SimProbe::get(&p.total),
            "every buffer is home"
        );
    }
    for (k, &id) in app_ids.iter().enumerate() {
        assert_eq!(
            sw.fdb().lookup(mac_key(&APPS[k]), sw.now()),
            Some(id.0),
            "app {k}'s MAC is its own"
        );
    }
    for (k, &id) in nic_ids.iter().enumerate() {
        let at = sw.fdb().lookup(mac_key(&NICS[k]), sw.now());
        assert!(
            at.is_none() || at == Some(id.0),
            "NIC {k}'s MAC moved to {at:?}"
        );
    }
    // A frame leaves for the wire only with a source MAC its owner sends from: an app's with
    // its admitted one whatever it wrote, so no NIC took more frames from a MAC than its owner
    // made. (What reaches an app lands in its own pool, which it may scribble over: its sink
    // records the app's own writes.)
    let owners: Vec<(Mac, &Arc<SimProbe>)> = APPS
        .iter()
        .chain(NICS.iter())
        .copied()
        .zip(&probes)
        .collect();
    for p in &probes[APPS.len()..] {
        let headers = p.headers.lock().expect("headers");
        for (mac, owner) in &owners {
            let n = headers.iter().filter(|h| h[6..12] == mac[..]).count() as u64;
            assert!(
                n <= SimProbe::get(&owner.generated),
                "a sink took {n} frames from {mac:x?}, which sent {}",
                SimProbe::get(&owner.generated)
            );
        }
        for h in headers.iter() {
            let src: Mac = h[6..12].try_into().expect("6 bytes");
            assert!(
                owners.iter().any(|(m, _)| *m == src),
                "a frame left from {src:x?}"
            );
        }
    }
}

//! Ferrite on Xen, end to end, as one small binary run in each domain of the QEMU test
//! (`tests/xen/`):
//!
//! - `xen_probe suite` (dom0): the grant-backend conformance suite on the `xen` backend.
//! - `xen_probe server` (dom0): the xenstore handshake backend plus a two-port L2 forwarder
//!   between the app domains' rings (one copy per frame into the destination's own pool, need-
//!   wakeup notification suppression), restartable at any moment.
//! - `xen_probe app` (domU): grants its port memory to dom0, attaches through xenstore, and
//!   runs a reliable stream (sequence numbers, cumulative acks, go-back-N retransmission) to
//!   the peer app through the server; survives the server being killed and restarted.
//!
//! Configuration comes from the environment (the domU kernel command line sets it):
//! `FERRITE_NAME`, `FERRITE_MAC`, `FERRITE_PEER_MAC`, `FERRITE_ROLE` (`send`/`recv`),
//! `FERRITE_FRAMES`, `FERRITE_SERVER_DOM`. Every line it prints is a fact the test log keeps.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use grant_pool::port::{AppPort, PortLayout, PortLimits, ServerPort};
use grant_pool::xen::{XenBackend, XenGrant, XenMapping, XenNotifier};
use grant_pool::{
    Access, BufHandle, BufIdx, Desc, DomId, Grant, GrantBackend, GrantRef, Notifier, PoolId,
};
use switch::xen_ctl::{Backend, Frontend, XbState, XenCtlError, parse_mac};
use switch::xenstore::Xenstore;

const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const KIND_DATA: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_FIN: u8 = 3;
const HDR: usize = 22;
const PAYLOAD: usize = 1000;
const RING: u32 = 256;
const BUFS: usize = 1024;
const WINDOW: u32 = 128;

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

macro_rules! say {
    ($who:expr, $($a:tt)*) => {
        println!("[{} {:9.3}] {}", $who, uptime(), format!($($a)*))
    };
}

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

fn main() {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    let rc = match cmd.as_str() {
        "suite" => suite(),
        "server" => server(),
        "app" => app(),
        _ => {
            eprintln!("usage: xen_probe suite | server | app (configured by FERRITE_* variables)");
            2
        }
    };
    std::process::exit(rc);
}

fn suite() -> i32 {
    let b = match XenBackend::open() {
        Ok(b) => b,
        Err(e) => {
            say!("suite", "SUITE FAIL: {e}");
            return 1;
        }
    };
    let mut failed = 0;
    for (name, r) in grant_pool::xen::suite::run(&b, DomId(0), &b, DomId(0)) {
        match r {
            Ok(()) => say!("suite", "ok   {name}"),
            Err(e) => {
                failed += 1;
                say!("suite", "FAIL {name}: {e}");
            }
        }
    }
    say!(
        "suite",
        "SUITE {}",
        if failed == 0 { "PASS" } else { "FAIL" }
    );
    i32::from(failed != 0)
}

// ---------------------------------------------------------------------------------------
// Frames

fn frame(dst: [u8; 6], src: [u8; 6], kind: u8, seq: u32, out: &mut [u8]) -> usize {
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ETHERTYPE);
    out[14] = kind;
    out[15] = 0;
    out[16..20].copy_from_slice(&seq.to_le_bytes());
    let n = if kind == KIND_DATA { PAYLOAD } else { 0 };
    out[20..22].copy_from_slice(&(n as u16).to_le_bytes());
    for (i, b) in out[HDR..HDR + n].iter_mut().enumerate() {
        *b = pattern(seq, i);
    }
    HDR + n
}

fn pattern(seq: u32, i: usize) -> u8 {
    (seq.wrapping_mul(131) as usize).wrapping_add(i * 7) as u8
}

// ---------------------------------------------------------------------------------------
// Server

struct Attached {
    name: String,
    mac: [u8; 6],
    port: ServerPort,
    notifier: Arc<XenNotifier>,
    stop: Arc<AtomicBool>,
    fill: Vec<Desc>,
    _map: XenMapping,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

enum AppState {
    Hello { pool: u8 },
    Attached(Box<Attached>),
}

struct Server {
    be: XenBackend,
    apps: BTreeMap<u16, AppState>,
    watched: std::collections::BTreeSet<u16>,
    wake_tx: mpsc::Sender<u16>,
    forwarded: u64,
    kicks: u64,
    first_fwd: bool,
    next_report: u64,
}

fn server() -> i32 {
    let who = "server";
    let instance = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let xs = match Xenstore::open() {
        Ok(x) => x,
        Err(e) => {
            say!(who, "FAIL: {e}");
            return 1;
        }
    };
    let be = match XenBackend::open() {
        Ok(b) => b,
        Err(e) => {
            say!(who, "FAIL: {e}");
            return 1;
        }
    };
    let ctl = Backend::new(&xs, 0, instance, 4096);
    if let Err(e) = ctl.watch_domains() {
        say!(who, "FAIL: watch: {e}");
        return 1;
    }
    let (wake_tx, wake_rx) = mpsc::channel();
    let mut s = Server {
        be,
        apps: BTreeMap::new(),
        watched: Default::default(),
        wake_tx,
        forwarded: 0,
        kicks: 0,
        first_fwd: true,
        next_report: 5000,
    };
    say!(who, "started instance {instance}");
    let mut last_scan = Instant::now() - Duration::from_secs(10);
    let mut idle_since = Instant::now();
    let mut descs = vec![Desc::default(); 64];
    loop {
        // Control plane: watch events, coalesced per domain, plus a rescan every second so a
        // lost event (a flooding domain filling the queue) only delays.
        let wait = if s.apps.values().any(|a| matches!(a, AppState::Attached(_))) {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        let (mut dirty, domains) = match ctl.poll(wait) {
            Ok(x) => x,
            Err(e) => {
                say!(who, "FAIL: xenstore: {e}");
                return 1;
            }
        };
        if domains || last_scan.elapsed() > Duration::from_secs(1) {
            last_scan = Instant::now();
            if let Ok(doms) = ctl.domains() {
                for d in &doms {
                    if s.watched.insert(*d) {
                        let _ = ctl.watch_app(*d);
                    }
                    dirty.insert(*d);
                }
                let gone: Vec<u16> = s
                    .apps
                    .keys()
                    .filter(|d| !doms.contains(d))
                    .copied()
                    .collect();
                for d in gone {
                    s.apps.remove(&d);
                    s.watched.remove(&d);
                    let _ = ctl.forget(d);
                    say!(who, "domain {d} gone: port removed");
                }
            }
        }
        for d in dirty {
            s.handle(&ctl, d);
        }
        // Data plane.
        let n = s.forward(&mut descs);
        if n > 0 {
            idle_since = Instant::now();
            continue;
        }
        if idle_since.elapsed() > Duration::from_millis(2) {
            // Arm need-wakeup on every tx ring, then sleep until an app kicks.
            let mut pending = false;
            for a in s.apps.values_mut() {
                if let AppState::Attached(a) = a {
                    pending |= a.port.tx.ring().set_need_wakeup().unwrap_or(true);
                }
            }
            if !pending {
                let _ = wake_rx.recv_timeout(Duration::from_millis(10));
                while wake_rx.try_recv().is_ok() {}
            }
            for a in s.apps.values_mut() {
                if let AppState::Attached(a) = a {
                    a.port.tx.ring().clear_need_wakeup();
                }
            }
        }
    }
}

impl Server {
    fn free_pool(&self) -> u8 {
        let used: Vec<u8> = self
            .apps
            .values()
            .map(|a| match a {
                AppState::Hello { pool } => *pool,
                AppState::Attached(a) => a.port.pool.id().0,
            })
            .collect();
        (1..=255).find(|p| !used.contains(p)).unwrap_or(255)
    }

    fn handle(&mut self, ctl: &Backend<'_>, d: u16) {
        let who = "server";
        let st = match switch::xen_ctl::frontend_state(ctl.xenstore(), d) {
            Ok(s) => s,
            Err(e) => {
                self.apps.remove(&d);
                let _ = ctl.refuse(d, &e.to_string());
                say!(who, "domain {d} refused: {e}");
                return;
            }
        };
        match (st, self.apps.get(&d)) {
            // Hello already answered: the app is still writing; nothing to do.
            (XbState::Initialising, Some(AppState::Hello { .. })) => {}
            (XbState::Initialising, _) => {
                self.apps.remove(&d);
                match switch::xen_ctl::read_hello(ctl.xenstore(), d) {
                    Ok((name, mac)) => {
                        let pool = self.free_pool();
                        if let Err(e) = ctl.init_wait(d, pool) {
                            say!(who, "domain {d}: {e}");
                            return;
                        }
                        self.apps.insert(d, AppState::Hello { pool });
                        say!(
                            who,
                            "domain {d} hello name={name} mac={}: InitWait pool {pool}",
                            switch::xen_ctl::fmt_mac(mac)
                        );
                    }
                    Err(e) => {
                        let _ = ctl.refuse(d, &e.to_string());
                        say!(who, "domain {d} refused: {e}");
                    }
                }
            }
            (XbState::Initialised, Some(AppState::Hello { pool })) => {
                let pool = *pool;
                let t0 = Instant::now();
                match self.attach(ctl, d, pool) {
                    Ok(a) => {
                        let _ = ctl.connected(d, pool.into());
                        say!(
                            who,
                            "domain {d} CONNECTED name={} pages={} map+attach {:.1} ms",
                            a.name,
                            a.port.layout.pages(),
                            t0.elapsed().as_secs_f64() * 1e3
                        );
                        self.apps.insert(d, AppState::Attached(Box::new(a)));
                    }
                    Err(e) => {
                        self.apps.remove(&d);
                        let _ = ctl.refuse(d, &e);
                        say!(who, "domain {d} refused: {e}");
                    }
                }
            }
            (XbState::Initialised | XbState::Connected, None) => {
                // Attached to an earlier server instance: tell it to start again.
                let _ = ctl.restarted(d);
                say!(
                    who,
                    "domain {d} was attached to an earlier instance: asked to re-attach"
                );
            }
            (XbState::Closing | XbState::Closed, Some(_)) => {
                self.apps.remove(&d);
                say!(who, "domain {d} detached");
            }
            _ => {}
        }
    }

    fn attach(&mut self, ctl: &Backend<'_>, d: u16, pool: u8) -> Result<Attached, String> {
        let t0 = Instant::now();
        let fe = ctl.frontend(d).map_err(|e| e.to_string())?;
        let t_read = t0.elapsed();
        let refs: Vec<GrantRef> = fe.refs.iter().map(|&r| GrantRef(r)).collect();
        let map = self
            .be
            .map(DomId(d), &refs, Access::ReadWrite, &[])
            .map_err(|e| format!("mapping the grant: {e}"))?;
        let t_map = t0.elapsed();
        let notifier = Arc::new(
            self.be
                .bind_notifier(DomId(d), fe.event_channel, &[])
                .map_err(|e| format!("binding the event channel: {e}"))?,
        );
        let port = ServerPort::attach(
            grant_pool::Mapping::region(&map),
            PoolId(pool),
            PortLimits::default(),
        )
        .map_err(|e| format!("port memory: {e}"))?;
        say!(
            "server",
            "domain {d} attach: xenstore reads {:.1} ms, map {} pages {:.1} ms, bind+port {:.1} ms",
            t_read.as_secs_f64() * 1e3,
            refs.len(),
            (t_map - t_read).as_secs_f64() * 1e3,
            (t0.elapsed() - t_map).as_secs_f64() * 1e3
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (n2, s2, tx) = (notifier.clone(), stop.clone(), self.wake_tx.clone());
        std::thread::spawn(move || {
            while !s2.load(Ordering::Acquire) {
                match n2.wait(Some(Duration::from_millis(200))) {
                    Ok(true) => {
                        if tx.send(d).is_err() {
                            return;
                        }
                    }
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Attached {
            name: fe.name,
            mac: fe.mac,
            port,
            notifier,
            stop,
            fill: Vec::with_capacity(RING as usize),
            _map: map,
        })
    }

    /// Moves one burst from every app's tx ring to its destination; returns frames moved.
    fn forward(&mut self, descs: &mut [Desc]) -> usize {
        let ids: Vec<u16> = self.apps.keys().copied().collect();
        let mut moved = 0;
        for &src in &ids {
            let n = match self.apps.get_mut(&src) {
                Some(AppState::Attached(a)) => a.port.take_tx(descs),
                _ => 0,
            };
            if n == 0 {
                continue;
            }
            let mut kick_dst = None;
            for d in &descs[..n] {
                let mut hdr = [0u8; 6];
                let ok = match self.apps.get(&src) {
                    Some(AppState::Attached(a)) => a
                        .port
                        .pool
                        .buf(d.buf())
                        .and_then(|r| Ok(r.read(0, &mut hdr)?))
                        .is_ok(),
                    _ => false,
                };
                let dst = ok
                    .then(|| {
                        self.apps.iter().find_map(|(id, s)| match s {
                            AppState::Attached(b) if b.mac == hdr && *id != src => Some(*id),
                            _ => None,
                        })
                    })
                    .flatten();
                if let Some(dst) = dst
                    && self.deliver(src, dst, *d)
                {
                    moved += 1;
                    kick_dst = Some(dst);
                }
                if let Some(AppState::Attached(a)) = self.apps.get_mut(&src) {
                    let _ = a.port.give_comp(&[Desc::new(d.buf(), 0)]);
                }
            }
            if let Some(dst) = kick_dst
                && let Some(AppState::Attached(b)) = self.apps.get(&dst)
                && b.port.rx.needs_wakeup()
            {
                let _ = b.notifier.notify();
                self.kicks += 1;
            }
        }
        self.forwarded += moved as u64;
        if moved > 0 && self.first_fwd {
            self.first_fwd = false;
            say!("server", "FIRST-FORWARD");
        }
        if self.forwarded >= self.next_report {
            self.next_report += 5000;
            say!(
                "server",
                "FWD {} frames, {} rx kicks ({:.1} per 1000 frames)",
                self.forwarded,
                self.kicks,
                self.kicks as f64 * 1000.0 / self.forwarded as f64
            );
        }
        moved
    }

    /// Copies frame `d` of `src` into a fill buffer of `dst` and publishes it on `dst`'s rx.
    fn deliver(&mut self, src: u16, dst: u16, d: Desc) -> bool {
        let Some(AppState::Attached(s)) = self.apps.get(&src) else {
            return false;
        };
        let Ok(from) = s.port.pool.buf(d.buf()) else {
            return false;
        };
        let Some(AppState::Attached(b)) = self.apps.get_mut(&dst) else {
            return false;
        };
        if b.fill.is_empty() {
            let mut got = [Desc::default(); 64];
            let n = b.port.take_fill(&mut got);
            b.fill.extend_from_slice(&got[..n]);
        }
        let Some(f) = b.fill.pop() else {
            return false;
        };
        let ok = b
            .port
            .pool
            .buf(f.buf())
            .ok()
            .is_some_and(|to| to.copy_from(0, &from, 0, d.len as usize).is_ok());
        if ok && b.port.give_rx(&[Desc::new(f.buf(), d.len)]).unwrap_or(0) == 1 {
            return true;
        }
        b.fill.push(f);
        false
    }
}

// ---------------------------------------------------------------------------------------
// App

struct Link {
    port: AppPort,
    notifier: XenNotifier,
    free: Vec<u32>,
    kicks: u64,
}

fn app() -> i32 {
    let name = env("FERRITE_NAME", "app");
    let who = name.clone();
    match run_app(&name) {
        Ok(()) => 0,
        Err(e) => {
            say!(who, "APP {name} RESULT FAIL: {e}");
            1
        }
    }
}

fn attach(
    fe: &Frontend<'_>,
    be: &XenBackend,
    grant: &XenGrant,
    name: &str,
    mac: [u8; 6],
    server: u16,
) -> Result<(Link, u64, f64), String> {
    let t0 = Instant::now();
    // A server that restarts during the handshake shows a new instance: start again.
    for _ in 0..5 {
        match attach_once(fe, be, grant, name, mac, server) {
            Err(XenCtlError::Restarted(_)) => continue,
            Err(e) => return Err(e.to_string()),
            Ok((link, instance)) => return Ok((link, instance, t0.elapsed().as_secs_f64() * 1e3)),
        }
    }
    Err("the server kept restarting during the handshake".into())
}

fn attach_once(
    fe: &Frontend<'_>,
    be: &XenBackend,
    grant: &XenGrant,
    name: &str,
    mac: [u8; 6],
    server: u16,
) -> Result<(Link, u64), XenCtlError> {
    let other = |e: String| XenCtlError::Refused(e);
    fe.hello(name, mac)?;
    let instance = fe.wait_backend(XbState::InitWait, None, Duration::from_secs(60))?;
    let pool = fe.backend_u32("pool", 255)? as u8;
    let layout = PortLayout::simple(RING, BUFS).map_err(|e| other(e.to_string()))?;
    let port =
        AppPort::create(grant.region(), layout, PoolId(pool)).map_err(|e| other(e.to_string()))?;
    let notifier = be
        .notifier(DomId(server))
        .map_err(|e| other(e.to_string()))?;
    let refs: Vec<u32> = grant.refs().iter().map(|r| r.0).collect();
    fe.publish(&refs, notifier.port())?;
    fe.wait_backend(XbState::Connected, Some(instance), Duration::from_secs(30))?;
    let mut link = Link {
        port,
        notifier,
        free: (0..BUFS as u32).collect(),
        kicks: 0,
    };
    link.refill();
    Ok((link, instance))
}

impl Link {
    fn handle(&self, i: u32) -> Option<BufHandle> {
        self.port.pool.handle(BufIdx(i)).ok()
    }

    fn refill(&mut self) {
        let want = (self.free.len() / 2).min(RING as usize) as u32;
        let n = self.port.fill.reserve(want).unwrap_or(0);
        let mut k = 0;
        while k < n {
            let Some(i) = self.free.pop() else { break };
            let Some(h) = self.handle(i) else { break };
            self.port.fill.write(k, Desc::new(h, 0));
            k += 1;
        }
        self.port.fill.publish(k);
    }

    fn reap(&mut self) {
        let n = self.port.comp.peek(RING).unwrap_or(0);
        for i in 0..n {
            let d = self.port.comp.read(i);
            if self.port.pool.check(d.buf()).is_ok() {
                self.free.push(d.buf().idx().0);
            }
        }
        self.port.comp.release(n);
    }

    /// Sends one frame; false when no buffer or ring slot is free.
    fn send(&mut self, dst: [u8; 6], src: [u8; 6], kind: u8, seq: u32) -> bool {
        if self.port.tx.reserve(1).unwrap_or(0) == 0 {
            return false;
        }
        let Some(i) = self.free.pop() else {
            return false;
        };
        let Some(h) = self.handle(i) else {
            return false;
        };
        let mut buf = [0u8; HDR + PAYLOAD];
        let len = frame(dst, src, kind, seq, &mut buf);
        let Ok(r) = self.port.pool.buf(h) else {
            return false;
        };
        if r.write(0, &buf[..len]).is_err() {
            return false;
        }
        self.port.tx.write(0, Desc::new(h, len as u16));
        self.port.tx.publish(1);
        if self.port.tx.needs_wakeup() {
            let _ = self.notifier.notify();
            self.kicks += 1;
        }
        true
    }

    /// Takes received frames: (kind, seq, payload ok) each.
    fn recv(&mut self, out: &mut Vec<(u8, u32, bool)>) {
        let n = self.port.rx.peek(RING).unwrap_or(0);
        for i in 0..n {
            let d = self.port.rx.read(i);
            let mut buf = [0u8; HDR + PAYLOAD];
            let len = (d.len as usize).min(buf.len());
            if let Ok(r) = self.port.pool.buf(d.buf())
                && r.read(0, &mut buf[..len]).is_ok()
                && len >= HDR
                && buf[12..14] == ETHERTYPE
            {
                let seq = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
                let plen = u16::from_le_bytes([buf[20], buf[21]]) as usize;
                let ok = HDR + plen == len && (0..plen).all(|j| buf[HDR + j] == pattern(seq, j));
                out.push((buf[14], seq, ok));
            }
            if self.port.pool.check(d.buf()).is_ok() {
                self.free.push(d.buf().idx().0);
            }
        }
        self.port.rx.release(n);
        if n > 0 {
            self.refill();
        }
    }
}

fn run_app(name: &str) -> Result<(), String> {
    let who = name.to_string();
    let mac = parse_mac(env("FERRITE_MAC", "").as_bytes()).map_err(|e| e.to_string())?;
    let peer = parse_mac(env("FERRITE_PEER_MAC", "").as_bytes()).map_err(|e| e.to_string())?;
    let send = env("FERRITE_ROLE", "recv") == "send";
    let total: u32 = env("FERRITE_FRAMES", "20000")
        .parse()
        .map_err(|_| "FERRITE_FRAMES")?;
    let server: u16 = env("FERRITE_SERVER_DOM", "0")
        .parse()
        .map_err(|_| "FERRITE_SERVER_DOM")?;
    let xs = Xenstore::open().map_err(|e| e.to_string())?;
    let me = Frontend::own_domid(&xs).map_err(|e| e.to_string())?;
    let fe = Frontend::new(&xs, me, server);
    let be = XenBackend::open().map_err(|e| e.to_string())?;
    if let Some(l) = grant_pool::xen::gntalloc_limit() {
        say!(who, "gntalloc limit {l} grants per domain");
    }
    let layout = PortLayout::simple(RING, BUFS).map_err(|e| e.to_string())?;
    let grant = be
        .grant(DomId(server), layout.pages(), Access::ReadWrite)
        .map_err(|e| e.to_string())?;
    say!(
        who,
        "domain {me}: granted {} pages ({} references) to domain {server}",
        grant.pages(),
        grant.refs().len()
    );
    let (mut link, mut instance, ms) = attach(&fe, &be, &grant, name, mac, server)?;
    say!(
        who,
        "ATTACH {ms:.1} ms (grant+map+handshake) instance {instance}"
    );
    let mut reattaches = 0;
    let mut base = 0u32; // sender: lowest unacked; receiver: next expected
    let mut next = 0u32;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut last_progress = Instant::now();
    let mut finished_at: Option<Instant> = None;
    let mut got = Vec::with_capacity(RING as usize);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(240);
    loop {
        if Instant::now() > deadline {
            return Err(format!("stream stalled at {base}/{total}"));
        }
        // Server gone? (its mapping's unmap-notify cleared our control page and rang us)
        if !grant.is_mapped().unwrap_or(false) {
            say!(who, "SERVER-GONE detected (unmap-notify); re-attaching");
            let t = Instant::now();
            let (l, i, ms) = attach(&fe, &be, &grant, name, mac, server)?;
            link = l;
            instance = i;
            reattaches += 1;
            say!(
                who,
                "REATTACH {ms:.1} ms after {:.1} ms down, instance {instance}",
                t.elapsed().as_secs_f64() * 1e3
            );
            next = base;
            last_progress = Instant::now();
        }
        link.reap();
        got.clear();
        link.recv(&mut got);
        let mut progress = !got.is_empty();
        for &(kind, seq, ok) in &got {
            match (send, kind) {
                (true, KIND_ACK) if seq > base && seq <= total => {
                    base = seq;
                    last_progress = Instant::now();
                }
                (false, KIND_DATA) if seq == base => {
                    if !ok {
                        return Err(format!("frame {seq} arrived corrupted"));
                    }
                    for j in 0..PAYLOAD {
                        hash = (hash ^ u64::from(pattern(seq, j))).wrapping_mul(0x100_0000_01b3);
                    }
                    base += 1;
                    last_progress = Instant::now();
                }
                (false, KIND_FIN) => {
                    say!(
                        who,
                        "APP {name} RESULT PASS: received {base}/{total} frames in order, stream hash {hash:016x}, {} kicks sent, {reattaches} re-attach(es)",
                        link.kicks
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        if send {
            if base >= total {
                for _ in 0..8 {
                    link.reap();
                    link.send(peer, mac, KIND_FIN, total);
                }
                let secs = start.elapsed().as_secs_f64();
                say!(
                    who,
                    "APP {name} RESULT PASS: {total} frames delivered and acked in {secs:.1} s, {} kicks sent ({:.1} per 1000 frames), {reattaches} re-attach(es)",
                    link.kicks,
                    link.kicks as f64 * 1000.0 / f64::from(total)
                );
                return Ok(());
            }
            if last_progress.elapsed() > Duration::from_millis(300) {
                next = base; // go-back-N
                last_progress = Instant::now();
            }
            while next < total && next < base + WINDOW && link.send(peer, mac, KIND_DATA, next) {
                next += 1;
                progress = true;
            }
        } else if !got.is_empty() {
            link.send(peer, mac, KIND_ACK, base);
        } else if last_progress.elapsed() > Duration::from_millis(100) && base > 0 {
            // Re-ack while idle so a lost ack cannot stall the sender.
            link.send(peer, mac, KIND_ACK, base);
            last_progress = Instant::now();
            if base >= total {
                finished_at.get_or_insert_with(Instant::now);
            }
        }
        if let Some(f) = finished_at
            && f.elapsed() > Duration::from_secs(5)
        {
            say!(
                who,
                "APP {name} RESULT PASS: received {base}/{total} frames in order (no FIN), stream hash {hash:016x}, {reattaches} re-attach(es)"
            );
            return Ok(());
        }
        if !progress {
            // Sleep until the server delivers (need-wakeup on rx) or 20 ms pass.
            if !link.port.rx.set_need_wakeup().unwrap_or(true) {
                let _ = link.notifier.wait(Some(Duration::from_millis(20)));
            }
            link.port.rx.clear_need_wakeup();
        }
    }
}

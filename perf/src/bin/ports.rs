//! Receive and transmit rates of the Linux ports (`af_xdp` in generic and native mode,
//! `af_packet`) over a veth pair, in packets per second.
//!
//! Topology (made fresh for every measurement in namespaces this program creates and
//! deletes): a generator namespace holding one veth end, a port namespace holding the other,
//! where the port under test runs.
//!
//! - **rx**: a generator (an `AF_PACKET` socket with a `TX_RING` and qdisc bypass, driven
//!   through Ferrite's own `af_packet` port, pinned to core 0) sends frames to the port's
//!   MAC as fast as it can; the port under test (pinned to core 1) receives in bursts of 32
//!   and returns every buffer. Reported: frames received per second, and the rate the
//!   generator offered. On veth, the kernel's receive work (veth, XDP, the copy into the
//!   socket) runs in the softirq of the *sending* core, so the rx figure is bounded by what
//!   one core can push through veth, and the port's own core is not the limit.
//! - **tx**: the port under test sends prebuilt frames in bursts of 32 as fast as the kernel
//!   takes them; reported: frames the port handed to the kernel per second and frames the
//!   peer veth counted as received (`rx_packets` of the peer interface) per second.
//!
//! Frames: 64 bytes (60 + FCS on a wire; 60 here) and 1514 bytes, an experimental ethertype,
//! addressed to the receiver's MAC.
//!
//! Writes `results/ports.json` and `results/ports.md` and prints the table.
//!
//! A second mode, `--instructions`, counts the user-space instructions per frame of each
//! port's receive and transmit loops under callgrind (see [`instructions`]) and writes
//! `results/ports_instructions.{json,md}`.
//!
//! Usage (root): `ports [--secs S] [--out DIR]`, `ports --instructions [--rounds R]`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use grant_pool::{BufHandle, PoolId};
use perf::report::{Machine, Table, results_dir, write_json, write_markdown};
use pmd::af_packet::{AfPacketConfig, AfPacketPort};
use pmd::af_xdp::{AfXdpConfig, AfXdpPort, AttachMode, BindMode};
use pmd::{Frame, Port};
use serde::Serialize;

const GEN_CORE: usize = 0;
const PORT_CORE: usize = 1;
const BURST: usize = 32;
const ETHERTYPE: u16 = 0x88b5;

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && let Some(id) = ids.into_iter().find(|c| c.id == core)
    {
        core_affinity::set_for_current(id);
    }
}

/// Two namespaces and a veth pair between them; removed on drop.
struct Topo {
    gen_ns: String,
    port_ns: String,
    gen_if: String,
    port_if: String,
}

impl Topo {
    fn new(n: u32) -> Self {
        let pid = std::process::id();
        let t = Topo {
            gen_ns: format!("ferrite-ports-{pid}-{n}-g"),
            port_ns: format!("ferrite-ports-{pid}-{n}-p"),
            gen_if: format!("fpg{}x{n}", pid % 100_000),
            port_if: format!("fpp{}x{n}", pid % 100_000),
        };
        for ns in [&t.gen_ns, &t.port_ns] {
            sh(&["ip", "netns", "add", ns]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        sh(&[
            "ip", "-n", &t.port_ns, "link", "add", &t.port_if, "type", "veth", "peer", "name",
            &t.gen_if, "netns", &t.gen_ns,
        ]);
        sh(&["ip", "-n", &t.port_ns, "link", "set", &t.port_if, "up"]);
        sh(&["ip", "-n", &t.gen_ns, "link", "set", &t.gen_if, "up"]);
        t
    }

    fn gen_rx_packets(&self) -> u64 {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.gen_ns,
            "cat",
            &format!("/sys/class/net/{}/statistics/rx_packets", self.gen_if),
        ])
        .trim()
        .parse()
        .unwrap_or(0)
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.port_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.gen_ns])
            .status();
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
enum Kind {
    /// No port: the generator alone, its frames dropped by the receiving kernel.
    NoPort,
    AfPacket,
    AfXdpGeneric,
    AfXdpNative,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::NoPort => "none (generator alone, kernel drops)",
            Kind::AfPacket => "af_packet (TPACKET_V2, qdisc bypass)",
            Kind::AfXdpGeneric => "af_xdp generic, copy",
            Kind::AfXdpNative => "af_xdp native, copy",
        }
    }
}

/// Opens the port under test in the calling thread's namespace.
fn open_port(kind: Kind, ifname: &str) -> Box<dyn Port> {
    match kind {
        Kind::NoPort | Kind::AfPacket => Box::new(
            AfPacketPort::open(AfPacketConfig::new(ifname, PoolId(2))).expect("open af_packet"),
        ),
        Kind::AfXdpGeneric | Kind::AfXdpNative => {
            let mut c = AfXdpConfig::new(ifname, PoolId(2));
            c.bind = BindMode::Auto;
            c.attach = if matches!(kind, Kind::AfXdpNative) {
                AttachMode::Native
            } else {
                AttachMode::Generic
            };
            Box::new(AfXdpPort::open(c).expect("open af_xdp"))
        }
    }
}

/// Fills `n` buffers from `port.alloc` with one frame each.
fn frames(port: &mut dyn Port, n: usize, dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<Frame> {
    let pool = port.pools().first().expect("port exposes its pool").clone();
    let mut hs = vec![BufHandle::from_raw(0); n];
    let got = port.alloc(&mut hs);
    assert_eq!(got, n, "port has {n} free buffers");
    hs.iter()
        .map(|&h| {
            let mut f = vec![0u8; len];
            f[..6].copy_from_slice(&dst);
            f[6..12].copy_from_slice(&src);
            f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
            for (i, b) in f[14..].iter_mut().enumerate() {
                *b = i as u8;
            }
            pool.buf(h).expect("buf").write(0, &f).expect("write");
            Frame::new(h, len as u16)
        })
        .collect()
}

/// Sends `frames` again and again until `stop`; returns frames handed to the kernel.
/// Buffers come back through `tx_done` and are sent again.
fn blast(port: &mut dyn Port, frames: &[Frame], stop: &AtomicBool, count: &AtomicU64) {
    let mut ready: Vec<Frame> = frames.to_vec();
    let mut done = vec![BufHandle::from_raw(0); frames.len()];
    let len = frames.first().map(|f| f.len).unwrap_or(60);
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        if !ready.is_empty() {
            let b = ready.len().min(BURST);
            let t = port.tx_burst(&ready[ready.len() - b..]);
            ready.truncate(ready.len() - t);
            count.fetch_add(t as u64, Ordering::Relaxed);
        }
        let n = port.tx_done(&mut done);
        ready.extend(done[..n].iter().map(|&h| Frame::new(h, len)));
        i = i.wrapping_add(1);
        if i.is_multiple_of(1024) {
            std::thread::yield_now();
        }
    }
}

#[derive(Debug, Serialize)]
struct Row {
    port: Kind,
    direction: &'static str,
    frame_bytes: usize,
    /// Frames per second the measured side achieved (received by the port for rx, handed to
    /// the kernel by the port for tx), millions.
    mpps: f64,
    /// For rx: the rate the generator offered; for tx: the rate the peer veth received.
    other_mpps: f64,
    gbps: f64,
    seconds: f64,
}

fn measure_rx(kind: Kind, len: usize, secs: f64, n: u32) -> Row {
    let topo = Topo::new(n);
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (port_ns, port_if) = (topo.port_ns.clone(), topo.port_if.clone());
    let (s2, r2) = (stop.clone(), received.clone());
    let (mac_tx, mac_rx) = std::sync::mpsc::channel();
    let rx = std::thread::spawn(move || {
        pin(PORT_CORE);
        pmd::linux::enter_netns(&port_ns).expect("enter port namespace");
        if matches!(kind, Kind::NoPort) {
            mac_tx.send([0x02, 0, 0, 0, 0, 0x42]).expect("send mac");
            while !s2.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return pmd::PortStats::default();
        }
        let mut port = open_port(kind, &port_if);
        mac_tx.send(port.mac()).expect("send mac");
        let mut burst = [Frame::new(BufHandle::from_raw(0), 0); BURST];
        let mut hs = [BufHandle::from_raw(0); BURST];
        while !s2.load(Ordering::Relaxed) {
            let k = port.rx_burst(&mut burst);
            for (h, f) in hs.iter_mut().zip(&burst[..k]) {
                *h = f.buf;
            }
            port.reclaim(&hs[..k]);
            r2.fetch_add(k as u64, Ordering::Relaxed);
        }
        port.stats()
    });
    let port_mac = mac_rx.recv().expect("port opened");
    let (gen_ns, gen_if) = (topo.gen_ns.clone(), topo.gen_if.clone());
    let (s3, c3) = (stop.clone(), sent.clone());
    let generator = std::thread::spawn(move || {
        pin(GEN_CORE);
        pmd::linux::enter_netns(&gen_ns).expect("enter generator namespace");
        let mut c = AfPacketConfig::new(&gen_if, PoolId(1));
        c.promiscuous = false;
        c.tx_frames = 4096;
        let mut g = AfPacketPort::open(c).expect("open generator");
        let src = g.mac();
        let fr = frames(&mut g, 256, port_mac, src, len);
        blast(&mut g, &fr, &s3, &c3);
    });
    std::thread::sleep(Duration::from_millis(500));
    let (r0, s0, t0) = (
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (r1, s1, dt) = (
        received.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    generator.join().expect("generator");
    let stats = rx.join().expect("receiver");
    let mpps = (r1 - r0) as f64 / dt / 1e6;
    eprintln!(
        "{} rx {len} B: {mpps:.3} Mpps received, {:.3} Mpps offered; port stats {stats:?}",
        kind.label(),
        (s1 - s0) as f64 / dt / 1e6
    );
    Row {
        port: kind,
        direction: "rx",
        frame_bytes: len,
        mpps,
        other_mpps: (s1 - s0) as f64 / dt / 1e6,
        gbps: mpps * 1e6 * len as f64 * 8.0 / 1e9,
        seconds: dt,
    }
}

fn measure_tx(kind: Kind, len: usize, secs: f64, n: u32) -> Row {
    let topo = Topo::new(n);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (port_ns, port_if) = (topo.port_ns.clone(), topo.port_if.clone());
    let (s2, c2) = (stop.clone(), sent.clone());
    let peer_mac = [0x02, 0, 0, 0, 0, 0x99];
    let tx = std::thread::spawn(move || {
        pin(PORT_CORE);
        pmd::linux::enter_netns(&port_ns).expect("enter port namespace");
        let mut port = open_port(kind, &port_if);
        let src = port.mac();
        let fr = frames(port.as_mut(), 1024, peer_mac, src, len);
        blast(port.as_mut(), &fr, &s2, &c2);
        port.stats()
    });
    std::thread::sleep(Duration::from_millis(500));
    let (c0, p0, t0) = (
        sent.load(Ordering::Relaxed),
        topo.gen_rx_packets(),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, p1, dt) = (
        sent.load(Ordering::Relaxed),
        topo.gen_rx_packets(),
        t0.elapsed().as_secs_f64(),
    );
    stop.store(true, Ordering::Relaxed);
    let stats = tx.join().expect("sender");
    let mpps = (c1 - c0) as f64 / dt / 1e6;
    let peer = (p1 - p0) as f64 / dt / 1e6;
    eprintln!(
        "{} tx {len} B: {mpps:.3} Mpps sent, {peer:.3} Mpps at the peer; port stats {stats:?}",
        kind.label()
    );
    Row {
        port: kind,
        direction: "tx",
        frame_bytes: len,
        mpps,
        other_mpps: peer,
        gbps: mpps * 1e6 * len as f64 * 8.0 / 1e9,
        seconds: dt,
    }
}

fn main() {
    let mut secs = 3.0f64;
    let mut out: Option<PathBuf> = None;
    let mut only: Option<String> = None;
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--count-case") && argv.len() == 6 {
        let kind = match argv[2].as_str() {
            "AfPacket" => Kind::AfPacket,
            "AfXdpGeneric" => Kind::AfXdpGeneric,
            _ => Kind::AfXdpNative,
        };
        let dir = if argv[3] == "rx" { "rx" } else { "tx" };
        let len = argv[4].parse().unwrap_or(60);
        let rounds = argv[5].parse().unwrap_or(4);
        count_case(kind, dir, len, rounds);
        return;
    }
    let mut instr = false;
    let mut rounds = 8usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            "--out" => out = args.next().map(PathBuf::from),
            "--only" => only = args.next(),
            "--instructions" => instr = true,
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            _ => {
                eprintln!(
                    "usage: ports [--secs S] [--out DIR] [--only 'LABEL DIR LEN'] \
                     [--instructions [--rounds R]]"
                );
                std::process::exit(2);
            }
        }
    }
    if instr {
        instructions(out, rounds.clamp(1, 100));
        return;
    }
    let secs = secs.clamp(0.5, 30.0);
    let machine = Machine::detect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    let mut rows = Vec::new();
    let mut n = 0;
    // `--only` runs the cases whose "label dir len" contains the text (e.g. under a
    // profiler) and writes no result files.
    let wanted = |k: Kind, dir: &str, len: usize| {
        only.as_deref()
            .is_none_or(|o| format!("{} {dir} {len}", k.label()).contains(o))
    };
    for len in [60usize, 1514] {
        n += 1;
        if wanted(Kind::NoPort, "rx", len) {
            rows.push(measure_rx(Kind::NoPort, len, secs, n));
        }
    }
    for kind in [Kind::AfPacket, Kind::AfXdpGeneric, Kind::AfXdpNative] {
        for len in [60usize, 1514] {
            n += 1;
            if wanted(kind, "rx", len) {
                rows.push(measure_rx(kind, len, secs, n));
            }
            n += 1;
            if wanted(kind, "tx", len) {
                rows.push(measure_tx(kind, len, secs, n));
            }
        }
    }
    let mut t = Table::new([
        "port",
        "dir",
        "frame B",
        "Mpps",
        "Gbit/s",
        "offered (rx) / at peer (tx) Mpps",
    ]);
    for r in &rows {
        t.push([
            r.port_label().to_string(),
            r.direction.to_string(),
            r.frame_bytes.to_string(),
            format!("{:.3}", r.mpps),
            format!("{:.2}", r.gbps),
            format!("{:.3}", r.other_mpps),
        ]);
    }
    println!("{}\n{}", machine.summary(), t.to_text());
    if only.is_some() {
        return;
    }
    let dir = out.unwrap_or_else(results_dir);
    let preface = "Rates of the Linux ports over one veth pair, each end in its own network \
        namespace. The first rows are the generator alone, with no port on the other end (the \
        kernel drops its frames): the ceiling of the rx rows. rx: a generator (an AF_PACKET TX ring with qdisc bypass, pinned to core 0) \
        sends to the port's MAC as fast as it can; the port (pinned to core 1) receives in \
        bursts of 32 and returns every buffer. On veth the kernel's receive work (veth, XDP, \
        the copy into the socket) runs on the sending core, so rx is bounded by what core 0 \
        pushes through veth; the offered column shows that rate. tx: the port sends prebuilt \
        frames in bursts of 32; 'at peer' is the peer veth's rx_packets. Zero-copy is not \
        available on veth (see pmd::af_xdp), so af_xdp runs in copy mode. Frames of 60 and \
        1514 bytes. See `perf/src/bin/ports.rs`.";
    let preface = format!(
        "{preface}\n\nLoad average when the run started: {load} (on {} cores). A load above \
         the core count means other work shared the cores during the run: the rates are then \
         lower bounds; `results/ports_instructions.md` has the load-independent figures.",
        machine.cores
    );
    write_json(&dir.join("ports.json"), "ports", &machine, &rows).expect("write ports.json");
    write_markdown(
        &dir.join("ports.md"),
        "Linux port rates over veth",
        &machine,
        &preface,
        &t,
    )
    .expect("write ports.md");
}

impl Row {
    fn port_label(&self) -> &'static str {
        self.port.label()
    }
}

/// Frames per round of the instruction-count mode: fits every port's receive ring.
const ROUND: usize = 1024;

/// Receives until `want` frames arrived (or a bound on empty polls); returns how many.
/// Instruction counts are collected inside this function only.
#[inline(never)]
fn ferrite_drain(port: &mut dyn Port, want: usize) -> usize {
    let mut burst = [Frame::new(BufHandle::from_raw(0), 0); BURST];
    let mut hs = [BufHandle::from_raw(0); BURST];
    let mut got = 0;
    let mut empty = 0;
    while got < want && empty < 1000 {
        let k = port.rx_burst(&mut burst);
        if k == 0 {
            empty += 1;
            continue;
        }
        for (h, f) in hs.iter_mut().zip(&burst[..k]) {
            *h = f.buf;
        }
        port.reclaim(&hs[..k]);
        got += k;
    }
    got
}

/// Sends `frames` once, in bursts, collecting every buffer back. Instruction counts are
/// collected inside this function only.
#[inline(never)]
fn ferrite_send(port: &mut dyn Port, frames: &[Frame]) -> usize {
    let mut done = [BufHandle::from_raw(0); BURST];
    let mut sent = 0;
    let mut back = 0;
    let mut spins = 0;
    while (sent < frames.len() || back < sent) && spins < 100_000 {
        if sent < frames.len() {
            let end = (sent + BURST).min(frames.len());
            sent += port.tx_burst(&frames[sent..end]);
        }
        back += port.tx_done(&mut done);
        spins += 1;
    }
    sent
}

/// One case of the instruction-count mode, single-threaded: the generator socket and the
/// port are opened from one thread that visits both namespaces. Prints `frames N`.
fn count_case(kind: Kind, dir: &str, len: usize, rounds: usize) {
    let topo = Topo::new(1);
    pmd::linux::enter_netns(&topo.gen_ns).expect("enter generator namespace");
    let mut c = AfPacketConfig::new(&topo.gen_if, PoolId(1));
    c.promiscuous = false;
    c.tx_frames = 2048;
    let mut g = AfPacketPort::open(c).expect("open generator");
    pmd::linux::enter_netns(&topo.port_ns).expect("enter port namespace");
    let mut port = open_port(kind, &topo.port_if);
    let mut total = 0;
    if dir == "rx" {
        let (dst, src) = (port.mac(), g.mac());
        let fr = frames(&mut g, ROUND, dst, src, len);
        for _ in 0..rounds {
            let sent = ferrite_send(&mut g, &fr);
            assert_eq!(sent, ROUND, "generator sent a round");
            std::thread::sleep(Duration::from_millis(100));
            total += ferrite_drain(port.as_mut(), ROUND);
        }
    } else {
        let dst = g.mac();
        let src = port.mac();
        let fr = frames(port.as_mut(), ROUND, dst, src, len);
        for _ in 0..rounds {
            total += ferrite_send(port.as_mut(), &fr);
        }
    }
    println!("frames {total}");
}

#[derive(Debug, Serialize)]
struct CountRow {
    port: Kind,
    direction: &'static str,
    frame_bytes: usize,
    frames: u64,
    instructions: u64,
    instructions_per_frame: f64,
}

/// Runs every case under `valgrind --tool=callgrind`, counting the user-space instructions
/// the port executes per frame (receive: `rx_burst` + `reclaim`; transmit: `tx_burst` +
/// `tx_done`), with system calls and the kernel's work excluded by construction.
fn instructions(out: Option<PathBuf>, rounds: usize) {
    let machine = Machine::detect();
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    for kind in [Kind::AfPacket, Kind::AfXdpGeneric, Kind::AfXdpNative] {
        for (dir, func) in [("rx", "*ferrite_drain*"), ("tx", "*ferrite_send*")] {
            for len in [60usize, 1514] {
                let o = Command::new("valgrind")
                    .args([
                        "--tool=callgrind",
                        "--callgrind-out-file=/dev/null",
                        &format!("--toggle-collect={func}"),
                    ])
                    .arg(&exe)
                    .args([
                        "--count-case",
                        &format!("{kind:?}"),
                        dir,
                        &len.to_string(),
                        &rounds.to_string(),
                    ])
                    .output()
                    .expect("run valgrind (is it installed?)");
                let so = String::from_utf8_lossy(&o.stdout);
                let se = String::from_utf8_lossy(&o.stderr);
                let frames: u64 = so
                    .lines()
                    .find_map(|l| l.strip_prefix("frames "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let ins: u64 = se
                    .lines()
                    .find_map(|l| l.split("Collected :").nth(1))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                assert!(frames > 0 && ins > 0, "{kind:?} {dir} {len}: {so}\n{se}");
                let per = ins as f64 / frames as f64;
                eprintln!(
                    "{} {dir} {len} B: {per:.0} instructions/frame",
                    kind.label()
                );
                rows.push(CountRow {
                    port: kind,
                    direction: dir,
                    frame_bytes: len,
                    frames,
                    instructions: ins,
                    instructions_per_frame: per,
                });
            }
        }
    }
    let mut t = Table::new(["port", "dir", "frame B", "frames", "instructions/frame"]);
    for r in &rows {
        t.push([
            r.port.label().to_string(),
            r.direction.to_string(),
            r.frame_bytes.to_string(),
            r.frames.to_string(),
            format!("{:.0}", r.instructions_per_frame),
        ]);
    }
    println!("{}\n{}", machine.summary(), t.to_text());
    let preface = "User-space instructions the port executes per frame, counted by \
        `valgrind --tool=callgrind` with collection only inside the receive loop (`rx_burst` + \
        `reclaim`, bursts of 32) or the transmit loop (`tx_burst` + `tx_done`, bursts of 32); \
        the kernel's work (system calls, the copy into or out of the socket, veth) is not \
        counted. Receive: a generator sends rounds of 1024 frames while the port is not \
        polling, then the port drains them. Stable on a noisy machine: the regression signal \
        for the ports' hot paths. See `perf/src/bin/ports.rs` (`--instructions`).";
    let dir = out.unwrap_or_else(results_dir);
    write_json(
        &dir.join("ports_instructions.json"),
        "ports_instructions",
        &machine,
        &rows,
    )
    .expect("write ports_instructions.json");
    write_markdown(
        &dir.join("ports_instructions.md"),
        "Linux ports: instructions per frame",
        &machine,
        preface,
        &t,
    )
    .expect("write ports_instructions.md");
}

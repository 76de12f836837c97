//! Ferrite against the Linux kernel stack, side by side on the same veth, in the same run, on
//! the same pinned cores.
//!
//! Topology (built fresh for every measurement, in namespaces this program creates and
//! deletes): a Linux peer namespace `p` with veth end `vp` (10.77.0.1) and a server namespace
//! `s` with the other end `vf`. On the kernel side `vf` carries 10.77.0.2 and a kernel socket
//! serves; on the Ferrite side the Ferrite server attaches an `af_xdp` or `af_packet` port to
//! `vf` and an app domain (10.77.0.10) serves.
//!
//! Cores (a 2-core machine): everything on the serving side (kernel sink or sockperf server;
//! Ferrite server and app) is pinned to core 1, every peer tool to core 0. On veth the
//! kernel's receive processing runs in the softirq of the sending core, so the kernel side gets
//! some of its work done on core 0 for free; Ferrite's port, switch and app stack all run on
//! core 1. This favours the kernel and is stated with the results.
//!
//! Measured:
//! - TCP bulk: one TCP connection from the peer sends `--bytes` (default 1 GiB) and waits for
//!   the receiver to close; the same sender (this program's `send` mode over a kernel socket in
//!   `p`) drives both sides. Median Gbit/s of `--runs` runs. Offloads off (TSO/GSO/GRO and
//!   checksum offload off on both veth ends) and on.
//! - UDP ping-pong: the unmodified `sockperf ping-pong` client in `p`, 64-byte messages, against
//!   `sockperf server` (kernel) and `ferrite-sockperf` (Ferrite); p50 and p99 as sockperf
//!   reports them (half the round trip).
//!
//! Writes `results/vs_linux.json` and `results/vs_linux.md` and prints the table.
//!
//! Usage: `vs_linux [--bytes N] [--runs R] [--pp-secs S] [--out DIR] [--backends af_xdp,af_packet]
//! [--tests bulk,pingpong] [--offloads off,on]`
//! (root). Internal modes used inside the namespaces: `vs_linux send HOST PORT BYTES`,
//! `vs_linux sink IP PORT`.
#![forbid(unsafe_code)]

#[path = "../../../apps/tests/netns/mod.rs"]
mod netns;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns::{Bg, KERNEL_IP, Offloads, Topology};
use perf::report::{Machine, Table};
use serde::Serialize;

/// Core for the serving side (kernel sink, Ferrite server and app).
const SERVE_CORE: usize = 1;
/// Core for the peer's tools.
const PEER_CORE: usize = 0;
/// TCP port of the bulk sink.
const BULK_PORT: u16 = 5201;
/// UDP port of the ping-pong server.
const PP_PORT: u16 = 11111;

/// Sends `bytes` to `host:port`, half-closes, waits for the receiver's close; prints
/// `bytes seconds gbps`.
fn send(host: &str, port: u16, bytes: u64) -> std::io::Result<()> {
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let mut s = TcpStream::connect((host, port))?;
    // A side that stops taking data (e.g. frames larger than its buffers) fails the run
    // instead of hanging it.
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    s.shutdown(Shutdown::Write)?;
    // The receiver closes after it has read everything: EOF here means all bytes arrived.
    let mut rest = [0u8; 64];
    while s.read(&mut rest)? > 0 {}
    let secs = start.elapsed().as_secs_f64();
    println!("{bytes} {secs:.6} {:.3}", bytes as f64 * 8.0 / secs / 1e9);
    Ok(())
}

/// Accepts one connection on `ip:port`, reads it to EOF, closes; prints the byte count.
fn sink(ip: &str, port: u16) -> std::io::Result<()> {
    let l = TcpListener::bind((ip, port))?;
    println!("listening");
    let (mut s, _) = l.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    drop(s);
    println!("received {total}");
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    test: String,
    side: String,
    offloads: String,
    value: Option<f64>,
    unit: String,
    runs: Vec<f64>,
    note: String,
}

struct Opts {
    bytes: u64,
    runs: usize,
    pp_secs: u32,
    out: PathBuf,
    backends: Vec<String>,
    /// Run the TCP bulk tests.
    bulk: bool,
    /// Run the UDP ping-pong tests.
    pingpong: bool,
    /// Offload settings the bulk tests run with.
    offloads: Vec<Offloads>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        bytes: 1 << 30,
        runs: 3,
        pp_secs: 5,
        out: PathBuf::from("results"),
        backends: vec!["af_xdp".into(), "af_packet".into()],
        bulk: true,
        pingpong: true,
        offloads: vec![Offloads::Off, Offloads::On],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bytes" => o.bytes = val()?.parse().map_err(|e| format!("--bytes: {e}"))?,
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--pp-secs" => o.pp_secs = val()?.parse().map_err(|e| format!("--pp-secs: {e}"))?,
            "--out" => o.out = PathBuf::from(val()?),
            "--backends" => {
                o.backends = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            "--tests" => {
                let v = val()?;
                o.bulk = v.split(',').any(|t| t == "bulk");
                o.pingpong = v.split(',').any(|t| t == "pingpong");
            }
            "--offloads" => {
                o.offloads = val()?
                    .split(',')
                    .map(|t| match t {
                        "off" => Ok(Offloads::Off),
                        "on" => Ok(Offloads::On),
                        _ => Err(format!("--offloads: `{t}` is neither `off` nor `on`")),
                    })
                    .collect::<Result<_, _>>()?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(o)
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s[s.len() / 2])
}

/// One bulk run: `send` in `p` (core 0) to `host:BULK_PORT`; returns Gbit/s.
fn bulk_send(t: &Topology, host: &str, bytes: u64) -> Result<f64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out =
        t.p.cmd_on(PEER_CORE, &me)
            .args(["send", host, &BULK_PORT.to_string(), &bytes.to_string()])
            .output()
            .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "sender failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    text.split_whitespace()
        .nth(2)
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| format!("sender printed {text:?}"))
}

fn kernel_bulk(o: &Opts, off: Offloads) -> Row {
    let mut runs = Vec::new();
    let mut note = String::from("kernel TCP socket in s, this program's sink");
    for _ in 0..o.runs {
        let t = Topology::new(off, 1500);
        t.address_kernel_side();
        let me = std::env::current_exe().expect("current_exe");
        let mut sink = Bg::spawn(
            "sink",
            t.dir.path(),
            t.s.cmd_on(SERVE_CORE, &me)
                .args(["sink", KERNEL_IP, &BULK_PORT.to_string()]),
        );
        sink.wait_log("listening", Duration::from_secs(5));
        match bulk_send(&t, KERNEL_IP, o.bytes) {
            Ok(g) => runs.push(g),
            Err(e) => note = format!("run failed: {e}"),
        }
        let _ = sink.wait_exit(Duration::from_secs(10));
    }
    Row {
        test: "TCP bulk peer -> server".into(),
        side: "Linux kernel".into(),
        offloads: off.label().into(),
        value: median(&runs),
        unit: "Gbit/s".into(),
        runs,
        note,
    }
}

fn kernel_iperf3(o: &Opts, off: Offloads) -> Row {
    let mut runs = Vec::new();
    let mut note = String::from("iperf3 -n, reference for the sender above");
    for _ in 0..o.runs {
        let t = Topology::new(off, 1500);
        t.address_kernel_side();
        let _srv = Bg::spawn(
            "iperf3-server",
            t.dir.path(),
            t.s.cmd_on(SERVE_CORE, "iperf3").args([
                "-s",
                "-1",
                "-B",
                KERNEL_IP,
                "-p",
                &BULK_PORT.to_string(),
            ]),
        );
        let ok = netns::wait_until("iperf3 to listen", Duration::from_secs(5), || {
            let o = t.s.output(["ss", "-ltn"]);
            String::from_utf8_lossy(&o.stdout).contains(&format!(":{BULK_PORT}"))
        });
        if let Err(e) = ok {
            note = e;
            continue;
        }
        let out =
            t.p.cmd_on(PEER_CORE, "iperf3")
                .args([
                    "-c",
                    KERNEL_IP,
                    "-p",
                    &BULK_PORT.to_string(),
                    "-n",
                    &o.bytes.to_string(),
                    "-J",
                ])
                .output();
        match out {
            Ok(out) if out.status.success() => {
                let v: serde_json::Value =
                    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
                match v["end"]["sum_received"]["bits_per_second"].as_f64() {
                    Some(b) => runs.push(b / 1e9),
                    None => note = "iperf3 printed no sum_received".into(),
                }
            }
            Ok(out) => note = format!("iperf3 failed: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => note = format!("iperf3 failed: {e}"),
        }
    }
    Row {
        test: "TCP bulk peer -> server (iperf3)".into(),
        side: "Linux kernel".into(),
        offloads: off.label().into(),
        value: median(&runs),
        unit: "Gbit/s".into(),
        runs,
        note,
    }
}

/// Runs the sockperf ping-pong client in `p` against `host`; returns (p50, p99).
fn pingpong_client(t: &Topology, host: &str, secs: u32) -> Result<(f64, f64), String> {
    let out =
        t.p.cmd_on(PEER_CORE, "sockperf")
            .args([
                "ping-pong",
                "-i",
                host,
                "-p",
                &PP_PORT.to_string(),
                "-t",
                &secs.to_string(),
                "--msg-size",
                "64",
            ])
            .output()
            .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match netns::parse_sockperf(&text) {
        Some((p50, p99, n)) if n > 0 => Ok((p50, p99)),
        _ => Err(format!("sockperf gave no replies: {text}")),
    }
}

fn kernel_pingpong(o: &Opts) -> [Row; 2] {
    let t = Topology::new(Offloads::Off, 1500);
    t.address_kernel_side();
    let _srv = Bg::spawn(
        "sockperf-server",
        t.dir.path(),
        t.s.cmd_on(SERVE_CORE, "sockperf").args([
            "server",
            "-i",
            KERNEL_IP,
            "-p",
            &PP_PORT.to_string(),
        ]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let r = pingpong_client(&t, KERNEL_IP, o.pp_secs);
    pp_rows("Linux kernel", "sockperf server in s", r)
}

fn pp_rows(side: &str, what: &str, r: Result<(f64, f64), String>) -> [Row; 2] {
    let (p50, p99, note) = match r {
        Ok((a, b)) => (Some(a), Some(b), what.to_string()),
        Err(e) => (None, None, e),
    };
    let row = |test: &str, v: Option<f64>| Row {
        test: test.into(),
        side: side.into(),
        offloads: "off".into(),
        value: v,
        unit: "us".into(),
        runs: v.into_iter().collect(),
        note: note.clone(),
    };
    [
        row("UDP ping-pong p50 (sockperf, half RTT)", p50),
        row("UDP ping-pong p99 (sockperf, half RTT)", p99),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") => {
            let (Some(h), Some(p), Some(b)) = (args.get(1), args.get(2), args.get(3)) else {
                eprintln!("usage: vs_linux send HOST PORT BYTES");
                std::process::exit(2);
            };
            let r = p
                .parse()
                .map_err(|e| format!("port: {e}"))
                .and_then(|p| b.parse().map(|b| (p, b)).map_err(|e| format!("bytes: {e}")))
                .and_then(|(p, b)| send(h, p, b).map_err(|e| e.to_string()));
            if let Err(e) = r {
                eprintln!("send: {e}");
                std::process::exit(1);
            }
            return;
        }
        Some("sink") => {
            let (Some(ip), Some(p)) = (args.get(1), args.get(2)) else {
                eprintln!("usage: vs_linux sink IP PORT");
                std::process::exit(2);
            };
            let r = p
                .parse()
                .map_err(|e| format!("port: {e}"))
                .and_then(|p| sink(ip, p).map_err(|e| e.to_string()));
            if let Err(e) = r {
                eprintln!("sink: {e}");
                std::process::exit(1);
            }
            return;
        }
        _ => {}
    }
    let o = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vs_linux: {e}");
            std::process::exit(2);
        }
    };
    if netns::euid() != Some(0) {
        eprintln!("vs_linux: needs root to create network namespaces and veth pairs");
        std::process::exit(1);
    }
    for tool in ["ip", "ethtool", "taskset", "sockperf", "iperf3", "ss"] {
        if !netns::have_tool(tool) {
            eprintln!("vs_linux: missing `{tool}`; run scripts/setup-system.sh");
            std::process::exit(1);
        }
    }
    let machine = Machine::detect();
    let mut rows: Vec<Row> = Vec::new();
    for &off in o.offloads.iter().filter(|_| o.bulk) {
        rows.push(kernel_bulk(&o, off));
        rows.push(kernel_iperf3(&o, off));
        for b in &o.backends {
            rows.push(ferrite::bulk(&o, b, off));
            eprintln!("{:?}", rows.last());
        }
    }
    if o.pingpong {
        rows.extend(kernel_pingpong(&o));
        for b in &o.backends {
            rows.extend(ferrite::pingpong(&o, b));
        }
    }
    write_results(&o, &machine, &rows);
}

fn ratio(rows: &[Row], test: &str, side: &str, off: &str) -> Option<f64> {
    let get = |s: &str| {
        rows.iter()
            .find(|r| r.test == test && r.side == s && r.offloads == off)
            .and_then(|r| r.value)
    };
    Some(get(side)? / get("Linux kernel")?)
}

/// The first line of `s` without terminal escape sequences, for a table cell.
fn one_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    let mut out = String::new();
    let mut esc = false;
    for c in first.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out.replace('|', "/")
}

fn write_results(o: &Opts, machine: &Machine, rows: &[Row]) {
    let mut t = Table::new(["test", "side", "offloads", "value", "unit", "runs", "note"]);
    for r in rows {
        t.push([
            r.test.clone(),
            r.side.clone(),
            r.offloads.clone(),
            r.value
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "n/a".into()),
            r.unit.clone(),
            r.runs
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            one_line(&r.note),
        ]);
    }
    let mut ratios = Table::new([
        "ratio (Ferrite / Linux)",
        "backend",
        "offloads",
        "value",
        "goal",
    ]);
    for b in &o.backends {
        let side = format!("Ferrite {b}");
        for off in ["off", "on"] {
            let v = ratio(rows, "TCP bulk peer -> server", &side, off);
            ratios.push([
                "TCP bulk throughput".to_string(),
                b.clone(),
                off.to_string(),
                v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into()),
                if off == "off" { ">= 1.0" } else { "reported" }.to_string(),
            ]);
        }
        for p in ["p50", "p99"] {
            let test = format!("UDP ping-pong {p} (sockperf, half RTT)");
            let v = ratio(rows, &test, &side, "off");
            ratios.push([
                format!("UDP ping-pong {p}"),
                b.clone(),
                "off".to_string(),
                v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into()),
                "<= 0.8".to_string(),
            ]);
        }
    }
    println!("{}\n", machine.summary());
    println!("{}", t.to_text());
    println!("{}", ratios.to_text());
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("vs_linux: cannot create {}: {e}", o.out.display());
        std::process::exit(1);
    }
    let json = serde_json::json!({
        "machine": machine,
        "bytes_per_bulk_run": o.bytes,
        "runs": o.runs,
        "pingpong_secs": o.pp_secs,
        "cores": {"serving side": SERVE_CORE, "peer tools": PEER_CORE},
        "rows": rows,
    });
    let md = format!(
        "# Ferrite vs the Linux kernel stack on the same veth\n\n\
         Machine: {}\n\nCommand: `{}`\n\n\
         Serving side (kernel sink / sockperf server, or Ferrite server + app) pinned to core \
         {SERVE_CORE}; peer tools pinned to core {PEER_CORE}. On veth the kernel's receive \
         softirq runs on the sending core, which helps the kernel side.\n\n\
         Bulk: {} bytes per run, median of {} runs, one TCP connection, same sender on both \
         sides. Ping-pong: `sockperf ping-pong --msg-size 64 -t {}`, latency as sockperf \
         reports it (half the round trip).\n\n{}\n{}",
        machine.summary(),
        machine.command,
        o.bytes,
        o.runs,
        o.pp_secs,
        t.to_markdown(),
        ratios.to_markdown()
    );
    let json = serde_json::to_string_pretty(&json).unwrap_or_default();
    let files = [
        ("vs_linux.json", json.as_str()),
        ("vs_linux.md", md.as_str()),
    ];
    if let Err(e) = perf::report::write_files(&o.out, &files) {
        eprintln!("vs_linux: {e}");
        std::process::exit(1);
    }
}

/// The Ferrite side: server in `s` with a port on `vf`, app domains as processes.
mod ferrite {
    use super::*;
    use netns::ferrite::{AppSpec, Backend, Server};

    fn backend(name: &str) -> Result<Backend, String> {
        Backend::parse(name).ok_or_else(|| format!("unknown backend {name}"))
    }

    fn one_bulk(b: Backend, off: Offloads, bytes: u64) -> Result<f64, String> {
        let t = Topology::new(off, 1500);
        let app = AppSpec::numbered("bulk", 1);
        let srv = Server::start(&t, b, std::slice::from_ref(&app));
        let port = BULK_PORT.to_string();
        let sink = srv.app(
            "ferrite-bulk",
            &app,
            // The kernel sink reads and discards; so does this one (no hash).
            &[&format!("--listen={port}"), "--once", "--no-hash"],
        );
        netns::wait_reachable(&t, &app.ip, Duration::from_secs(20))
            .map_err(|e| format!("{e}; app log: {}", sink.log()))?;
        bulk_send(&t, &app.ip, bytes).map_err(|e| format!("{e}; app log: {}", sink.log()))
    }

    pub fn bulk(o: &Opts, name: &str, off: Offloads) -> Row {
        let mut runs = Vec::new();
        let mut note =
            String::from("ferrite-bulk sink (--no-hash) in an app domain, server+app on core 1");
        for _ in 0..o.runs {
            match backend(name).and_then(|b| {
                std::panic::catch_unwind(|| one_bulk(b, off, o.bytes))
                    .unwrap_or_else(|_| Err("setup failed (see above)".into()))
            }) {
                Ok(g) => runs.push(g),
                Err(e) => {
                    note = format!("failed: {e}");
                    break;
                }
            }
        }
        Row {
            test: "TCP bulk peer -> server".into(),
            side: format!("Ferrite {name}"),
            offloads: off.label().into(),
            value: median(&runs),
            unit: "Gbit/s".into(),
            runs,
            note,
        }
    }

    fn one_pingpong(b: Backend, secs: u32) -> Result<(f64, f64), String> {
        let t = Topology::new(Offloads::Off, 1500);
        let app = AppSpec::numbered("sockperf", 1);
        let srv = Server::start(&t, b, std::slice::from_ref(&app));
        let sp = srv.app("ferrite-sockperf", &app, &[&format!("--port={PP_PORT}")]);
        netns::wait_reachable(&t, &app.ip, Duration::from_secs(20))
            .map_err(|e| format!("{e}; app log: {}", sp.log()))?;
        pingpong_client(&t, &app.ip, secs)
    }

    pub fn pingpong(o: &Opts, name: &str) -> [Row; 2] {
        let r = backend(name).and_then(|b| {
            std::panic::catch_unwind(|| one_pingpong(b, o.pp_secs))
                .unwrap_or_else(|_| Err("setup failed (see above)".into()))
        });
        pp_rows(
            &format!("Ferrite {name}"),
            "ferrite-sockperf in an app domain, server+app on core 1",
            r,
        )
    }
}

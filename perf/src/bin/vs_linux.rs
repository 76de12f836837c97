//! Ferrite against the Linux kernel stack, side by side on the same veth, in the same run, on
//! the same pinned cores.
//!
//! Topology (built fresh for every row, in namespaces this program creates and deletes; the
//! runs of a row share it): a Linux peer namespace `p` with veth end `vp` (10.77.0.1) and a
//! server namespace `s` with the other end `vf`. On the kernel side `vf` carries 10.77.0.2 and
//! kernel sockets serve; on the Ferrite side the Ferrite server attaches an `af_xdp` or
//! `af_packet` port to `vf` and app domains (10.77.0.11, ...) serve.
//!
//! Cores (a 2-core machine): everything on the serving side (kernel sockets, nginx, sockperf
//! server; Ferrite server and app) is pinned to core 1, every peer tool to core 0. On veth the
//! kernel's receive processing runs in the softirq of the sending core, so the kernel side gets
//! some of its work done on core 0 for free; Ferrite's port, switch and app stack all run on
//! core 1. This favours the kernel and is stated with the results.
//!
//! Measured, each with the veth offloads off (TSO/GSO/GRO, scatter-gather and checksum offload
//! off on both ends) and on (the veth defaults), each Ferrite row on both backends:
//! - TCP bulk peer -> server: one TCP connection from the peer sends `--bytes` (default
//!   256 MiB; 1 GiB with `--full`) and waits for the receiver to close; the same sender (this
//!   program's `send` mode over a kernel socket in `p`) drives both sides: this program's
//!   `sink` in `s`, or `ferrite-bulk --listen` in an app domain. Timed by the sender. iperf3
//!   against the kernel as a reference for the sender.
//! - TCP bulk server -> peer: the same sink in `p` receives from this program's `send` in `s`
//!   (kernel socket on 10.77.0.2) or from `ferrite-bulk --connect` in an app domain. Timed by
//!   the sink, first byte to last.
//! - TCP bulk app -> app: two Ferrite app domains on one server, `ferrite-bulk --connect`
//!   (core 0) to `ferrite-bulk --listen` (core 1) through the switch; the apps use 64 KiB
//!   buffers (TSO) with offloads on and 2 KiB buffers (one frame per segment) with offloads
//!   off. The Linux row is the kernel between two namespaces joined by the veth: `send` in `p`
//!   (core 0) to `sink` in `s` (core 1). Timed by the sink, first byte to last.
//! - Jumbo frames: both bulk tests again with a 9000-byte MTU on both veth ends, the kernel
//!   side and the apps (`--mtu=9000`); the af_xdp rows say why they are not measured (a frame
//!   larger than a UMEM chunk needs XDP multi-buffer).
//! - HTTP download: `curl -o /dev/null` in `p` fetches a `--bytes` file from `ferrite-http` in
//!   an app domain, or from nginx (sendfile on, one worker) in `s`.
//! - HTTP small page: `wrk -t1 -c64 -d5s` in `p` on a small page (under 600 bytes), same
//!   servers.
//! - UDP ping-pong: the unmodified `sockperf ping-pong` client in `p`, 64-byte messages, against
//!   `sockperf server` (kernel) and `ferrite-sockperf` (Ferrite); p50 and p99 as sockperf
//!   reports them (half the round trip).
//!
//! Throughput rows give the median of `--runs` runs. A row that fails keeps its place in the
//! table with `failed: <reason>`; the logs of its topology (server, apps, tools) are copied to
//! `target/vs_linux-logs/<date of the run>/<row>/` with the whole error (and the server's
//! counters) in `error.txt`.
//!
//! Writes `results/vs_linux.json` and `results/vs_linux.md` and prints the table; progress
//! lines go to stderr as each measurement starts.
//!
//! Usage: `vs_linux [--bytes N | --full] [--runs R] [--pp-secs S] [--wrk-secs S]
//! [--wrk-conns C] [--out DIR] [--backends af_xdp,af_packet]
//! [--tests bulk,bulk-out,app2app,http,wrk,pingpong,jumbo] [--offloads off,on]` (root). Internal
//! modes used inside the namespaces: `vs_linux send HOST PORT BYTES`, `vs_linux sink IP PORT`.
#![forbid(unsafe_code)]

#[path = "../../../apps/tests/netns/mod.rs"]
mod netns;

use std::any::Any;
use std::cell::Cell;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, KERNEL_IP, Netns, Offloads, PEER_IP, TempDir, Topology};
use perf::report::{Machine, Table};
use serde::Serialize;

/// Core for the serving side (kernel sockets and servers, Ferrite server and app).
const SERVE_CORE: usize = 1;
/// Core for the peer's tools.
const PEER_CORE: usize = 0;
/// TCP port of the bulk sink.
const BULK_PORT: u16 = 5201;
/// UDP port of the ping-pong server.
const PP_PORT: u16 = 11111;
/// Bytes per bulk transfer and size of the downloaded file by default.
const DEFAULT_BYTES: u64 = 256 << 20;
/// The same with `--full`.
const FULL_BYTES: u64 = 1 << 30;
/// The file the HTTP download fetches.
const BIG_FILE: &str = "big.bin";
/// The page wrk asks for.
const PAGE_FILE: &str = "index.html";
/// A ferrite-bulk source that moves no byte for this long has stalled.
const STALL: Duration = Duration::from_secs(10);
/// A transfer slower than this on average (after a 15 s allowance) is stopped and its row
/// marked failed, so that a crawling transfer cannot hold the run up indefinitely.
const MIN_GBPS: f64 = 0.2;

/// How long a transfer of `bytes` may take (see [`MIN_GBPS`]).
fn deadline_for(bytes: u64) -> Duration {
    Duration::from_secs(15) + Duration::from_secs_f64(bytes as f64 * 8.0 / (MIN_GBPS * 1e9))
}

const T_IN: &str = "TCP bulk peer -> server";
const T_IN_IPERF: &str = "TCP bulk peer -> server (iperf3)";
const T_OUT: &str = "TCP bulk server -> peer";
const T_IN_J: &str = "TCP bulk peer -> server, MTU 9000";
const T_OUT_J: &str = "TCP bulk server -> peer, MTU 9000";
/// The MTU of the jumbo-frame rows (both veth ends, the kernel side and the apps).
const JUMBO_MTU: u32 = 9000;
const T_A2A: &str = "TCP bulk app -> app";
const T_DL: &str = "HTTP download (curl)";
const T_WRK: &str = "HTTP small page (wrk)";
const T_P50: &str = "UDP ping-pong p50 (sockperf, half RTT)";
const T_P99: &str = "UDP ping-pong p99 (sockperf, half RTT)";
const LINUX: &str = "Linux kernel";

/// Sends `bytes` to `host:port`, half-closes, waits for the receiver's close; prints
/// `bytes seconds gbps`. A receiver that takes no data for 10 s, or a transfer past
/// [`deadline_for`], fails it.
fn send(host: &str, port: u16, bytes: u64) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    const STALLED: Duration = Duration::from_secs(10);
    let buf = vec![0x5au8; 1 << 20];
    let start = Instant::now();
    let deadline = start + deadline_for(bytes);
    let mut s = TcpStream::connect_timeout(
        &format!("{host}:{port}")
            .parse()
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("{host}:{port}: {e}")))?,
        Duration::from_secs(10),
    )?;
    // Each blocking call may wait until the deadline, and at most 10 s.
    let arm = |s: &TcpStream| {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = Some(left.clamp(Duration::from_millis(1), STALLED));
        s.set_write_timeout(t).and_then(|()| s.set_read_timeout(t))
    };
    let why = |e: Error, sent: u64| {
        if !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
            return e;
        }
        let secs = start.elapsed().as_secs_f64();
        let what = if Instant::now() >= deadline {
            format!(
                "too slow: {sent} of {bytes} bytes in {secs:.1} s ({:.3} Gbit/s; the limit \
                 is {MIN_GBPS} Gbit/s after a 15 s allowance)",
                sent as f64 * 8.0 / secs / 1e9
            )
        } else if sent < bytes {
            format!("stalled: the receiver took no data for 10 s after {sent} of {bytes} bytes")
        } else {
            "stalled: the receiver did not close within 10 s of the last byte".to_string()
        };
        Error::new(e.kind(), what)
    };
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        arm(&s)?;
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            match s.write(chunk) {
                Ok(0) => return Err(Error::new(ErrorKind::WriteZero, "the receiver closed")),
                Ok(k) => {
                    chunk = &chunk[k..];
                    left -= k as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(why(e, bytes - left)),
            }
            if Instant::now() >= deadline && left > 0 {
                return Err(why(Error::from(ErrorKind::TimedOut), bytes - left));
            }
        }
    }
    s.shutdown(Shutdown::Write)?;
    // The receiver closes after it has read everything: EOF here means all bytes arrived.
    let mut rest = [0u8; 64];
    loop {
        arm(&s)?;
        match s.read(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(why(e, bytes)),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{bytes} {secs:.6} {:.3}", bytes as f64 * 8.0 / secs / 1e9);
    Ok(())
}

/// Accepts one connection on `ip:port`, reads it to EOF, closes; prints
/// `received BYTES SECONDS GBPS`, timed from the first byte read to the last (as
/// `ferrite-bulk --listen` times it).
fn sink(ip: &str, port: u16) -> std::io::Result<()> {
    let l = TcpListener::bind((ip, port))?;
    println!("listening");
    let (mut s, _) = l.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        total += n as u64;
    }
    drop(s);
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let gbps = if secs > 0.0 {
        total as f64 * 8.0 / secs / 1e9
    } else {
        0.0
    };
    println!("received {total} {secs:.6} {gbps:.3}");
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

/// Which measurements to run.
#[derive(Debug, Clone, Copy, Default)]
struct Tests {
    bulk_in: bool,
    bulk_out: bool,
    app2app: bool,
    http: bool,
    wrk: bool,
    pingpong: bool,
    /// Bulk both ways again with a 9000-byte MTU.
    jumbo: bool,
}

impl Tests {
    const NAMES: &'static str =
        "bulk (peer -> server), bulk-out, app2app, http, wrk, pingpong, jumbo, all";

    fn all() -> Self {
        Self {
            bulk_in: true,
            bulk_out: true,
            app2app: true,
            http: true,
            wrk: true,
            pingpong: true,
            jumbo: true,
        }
    }

    fn parse(list: &str) -> Result<Self, String> {
        let mut t = Self::default();
        for name in list.split(',').filter(|s| !s.is_empty()) {
            match name {
                "bulk" | "bulk-in" => t.bulk_in = true,
                "bulk-out" => t.bulk_out = true,
                "app2app" => t.app2app = true,
                "http" => t.http = true,
                "wrk" => t.wrk = true,
                "pingpong" => t.pingpong = true,
                "jumbo" => t.jumbo = true,
                "all" => t = Self::all(),
                other => return Err(format!("--tests: unknown test `{other}` ({})", Self::NAMES)),
            }
        }
        Ok(t)
    }
}

struct Opts {
    bytes: u64,
    runs: usize,
    pp_secs: u32,
    wrk_secs: u32,
    wrk_conns: u32,
    out: PathBuf,
    /// Where the logs of failed rows are copied.
    logs: PathBuf,
    backends: Vec<Backend>,
    tests: Tests,
    /// Offload settings every test runs with.
    offloads: Vec<Offloads>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        bytes: DEFAULT_BYTES,
        runs: 3,
        pp_secs: 5,
        wrk_secs: 5,
        wrk_conns: 64,
        out: PathBuf::from("results"),
        logs: netns::bin_dir()
            .parent()
            .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
            .join("vs_linux-logs"),
        backends: vec![Backend::AfXdp, Backend::AfPacket],
        tests: Tests::all(),
        offloads: vec![Offloads::Off, Offloads::On],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--bytes" => o.bytes = val()?.parse().map_err(|e| format!("--bytes: {e}"))?,
            "--full" => o.bytes = FULL_BYTES,
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--pp-secs" => o.pp_secs = val()?.parse().map_err(|e| format!("--pp-secs: {e}"))?,
            "--wrk-secs" => o.wrk_secs = val()?.parse().map_err(|e| format!("--wrk-secs: {e}"))?,
            "--wrk-conns" => {
                o.wrk_conns = val()?.parse().map_err(|e| format!("--wrk-conns: {e}"))?
            }
            "--out" => o.out = PathBuf::from(val()?),
            "--backends" => {
                o.backends = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|b| {
                        Backend::parse(b).ok_or(format!(
                            "--backends: `{b}` is neither `af_xdp` nor `af_packet`"
                        ))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--tests" => o.tests = Tests::parse(&val()?)?,
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
            "--help" | "-h" => {
                return Err(
                    "usage: vs_linux [--bytes N | --full] [--runs R] [--pp-secs S] \
                     [--wrk-secs S] [--wrk-conns C] [--out DIR] [--backends af_xdp,af_packet] \
                     [--tests bulk,bulk-out,app2app,http,wrk,pingpong,jumbo] [--offloads off,on]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if o.bytes == 0 {
        return Err("--bytes must be at least 1".into());
    }
    if o.wrk_conns == 0 || o.wrk_secs == 0 {
        return Err("--wrk-conns and --wrk-secs must be at least 1".into());
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

// ---------------------------------------------------------------------------------------------
// Progress, failures, logs.

static START: OnceLock<Instant> = OnceLock::new();

/// A progress line on stderr, stamped with the time since the run started.
fn progress(msg: &str) {
    let t = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("vs_linux [{t:6.1} s] {msg}");
}

thread_local! {
    /// Set while a measurement runs under [`guarded`], whose panics become row failures.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Panics inside [`guarded`] say nothing (their message becomes the row's failure); any
/// other panic is reported as usual.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !QUIET.with(Cell::get) {
            default(info);
        }
    }));
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

/// Runs `f`; a panic (the namespace helpers panic on a failed setup step) becomes `Err`.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.unwrap_or_else(|p| Err(panic_text(&*p)))
}

/// `s` without terminal escape sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// The first line of `s` without terminal escape sequences, for a table cell.
fn one_line(s: &str) -> String {
    strip_ansi(s.lines().next().unwrap_or("")).replace('|', "/")
}

/// The last `n` lines of a log, without escape sequences.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    strip_ansi(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// Copies the logs and configuration files of a topology to `<logs>/<slug>` with the error
/// in `error.txt`; returns that directory.
fn keep_logs(o: &Opts, slug: &str, from: &Path, error: &str) -> PathBuf {
    let to = o.logs.join(slug);
    let _ = std::fs::remove_dir_all(&to);
    let _ = std::fs::create_dir_all(&to);
    if let Ok(dir) = std::fs::read_dir(from) {
        for e in dir.flatten() {
            let p = e.path();
            let keep = p
                .extension()
                .is_some_and(|x| x == "log" || x == "toml" || x == "conf");
            if keep && p.is_file() {
                let _ = std::fs::copy(&p, to.join(e.file_name()));
            }
        }
    }
    let _ = std::fs::write(to.join("error.txt"), strip_ansi(error));
    to
}

/// One row's runs so far, and its failure.
#[derive(Debug, Default)]
struct Series {
    values: Vec<f64>,
    error: Option<String>,
    /// Remarks on a run that did not fail it (e.g. wrk's socket errors).
    remarks: Vec<String>,
}

impl Series {
    /// Runs `f` `n` times (run index given), unless the series failed already; stops at the
    /// first failure.
    fn runs(
        &mut self,
        n: usize,
        label: &str,
        unit: &str,
        mut f: impl FnMut(usize) -> Result<f64, String>,
    ) {
        for i in 0..n {
            if self.error.is_some() {
                return;
            }
            progress(&format!("{label}: run {}/{n}", i + 1));
            match guarded(|| f(i)) {
                Ok(v) => {
                    progress(&format!("{label}: {v:.3} {unit}"));
                    self.values.push(v);
                }
                Err(e) => self.fail(label, e),
            }
        }
    }

    fn fail(&mut self, label: &str, e: String) {
        progress(&format!("{label}: FAILED: {}", one_line(&e)));
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn into_row(self, test: &str, side: &str, off: Offloads, unit: &str, what: &str) -> Row {
        let mut note = match &self.error {
            Some(e) => format!("failed: {}", one_line(e)),
            None => what.to_string(),
        };
        for r in &self.remarks {
            note.push_str("; ");
            note.push_str(r);
        }
        Row {
            test: test.into(),
            side: side.into(),
            offloads: off.label().into(),
            value: median(&self.values),
            unit: unit.into(),
            runs: self.values,
            note,
        }
    }
}

/// Builds a fresh topology with offloads `off` and MTU `mtu` and runs `body` in it with `n` series; a
/// failed setup fails every series. The logs of a topology any of whose series failed are
/// kept (see [`keep_logs`]), and the failure says where.
fn in_topology<const N: usize>(
    o: &Opts,
    slug: &str,
    off: Offloads,
    mtu: u32,
    body: impl FnOnce(&Topology, &mut [Series; N]),
) -> [Series; N] {
    let mut series: [Series; N] = std::array::from_fn(|_| Series::default());
    let slug = format!("{slug}-offloads-{}-mtu-{mtu}", off.label());
    match guarded(|| Ok(Topology::new(off, mtu))) {
        Err(e) => {
            for s in &mut series {
                s.fail(&slug, format!("topology: {e}"));
            }
        }
        Ok(t) => {
            // Every step of `body` runs guarded; this catches anything else.
            let r = guarded(|| {
                body(&t, &mut series);
                Ok(())
            });
            if let Err(e) = r {
                for s in series.iter_mut().filter(|s| s.error.is_none()) {
                    s.fail(&slug, e.clone());
                }
            }
            if let Some(e) = series.iter().find_map(|s| s.error.clone()) {
                let dir = keep_logs(o, &slug, t.dir.path(), &e);
                // Shown relative to the working directory (the repository, usually).
                let dir = std::env::current_dir()
                    .ok()
                    .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
                    .unwrap_or(dir);
                progress(&format!("{slug}: logs kept in {}", dir.display()));
                for s in &mut series {
                    if let Some(e) = &mut s.error {
                        let first = one_line(e);
                        *e = format!("{first} (logs: {})\n{e}", dir.display());
                    }
                }
            }
        }
    }
    series
}

/// Runs a setup step under [`guarded`]; its failure fails every series.
fn setup<T, const N: usize>(
    label: &str,
    series: &mut [Series; N],
    f: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    progress(&format!("{label}: setting up"));
    match guarded(f) {
        Ok(v) => Some(v),
        Err(e) => {
            for s in series.iter_mut() {
                s.fail(label, format!("setup: {e}"));
            }
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tools run in the namespaces.

/// Runs this program's `send` mode in `ns` on `core` to `host:BULK_PORT`; returns the
/// sender's Gbit/s (connect to the receiver's close).
fn run_send(ns: &Netns, core: usize, host: &str, bytes: u64) -> Result<f64, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = ns
        .cmd_on(core, &me)
        .args(["send", host, &BULK_PORT.to_string(), &bytes.to_string()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "sender failed: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            text
        ));
    }
    text.split_whitespace()
        .nth(2)
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| format!("sender printed {text:?}"))
}

/// Starts this program's `sink` mode in `ns` on `core`, listening on `ip:BULK_PORT`.
fn start_sink(t: &Topology, ns: &Netns, core: usize, ip: &str, name: &str) -> Result<Bg, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut sink = Bg::spawn(
        name,
        t.dir.path(),
        ns.cmd_on(core, &me)
            .args(["sink", ip, &BULK_PORT.to_string()]),
    );
    sink.wait_log("listening", Duration::from_secs(5));
    Ok(sink)
}

/// Waits for a `sink` to finish and returns its Gbit/s (first byte to last), checking that
/// it received `bytes`.
fn sink_result(sink: &mut Bg, bytes: u64) -> Result<f64, String> {
    let code = sink.wait_exit(Duration::from_secs(10));
    let log = sink.log();
    let line = log
        .lines()
        .find(|l| l.starts_with("received "))
        .ok_or_else(|| {
            format!(
                "the sink reported nothing (exit {code:?}): {}",
                tail(&log, 5)
            )
        })?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let got: u64 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    if got != bytes {
        return Err(format!("the sink received {got} of {bytes} bytes"));
    }
    f.get(3)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the sink printed {line:?}"))
}

/// The last byte count a `ferrite-bulk --progress` log reports.
fn last_progress(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            let rest = strip_ansi(l);
            let rest = rest.split("progress ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Stops an app with SIGTERM (it then prints its device and domain counters) and returns the
/// end of its log.
fn stop_app(app: &mut Bg) -> String {
    app.signal("TERM");
    let _ = netns::wait_until("the app to exit", Duration::from_secs(3), || !app.alive());
    tail(&app.log(), 30)
}

/// Waits for a `ferrite-bulk --connect --progress` source to finish sending `bytes`; fails
/// when it exits with an error, or moves no byte for [`STALL`].
fn wait_source(src: &mut Bg, bytes: u64) -> Result<(), String> {
    let started = Instant::now();
    let deadline = started + deadline_for(bytes);
    let mut last = (0u64, Instant::now());
    loop {
        if !src.alive() {
            let code = src.wait_exit(Duration::from_secs(1));
            if code == Some(0) {
                return Ok(());
            }
            return Err(format!(
                "ferrite-bulk source exited with {code:?} after {} of {bytes} bytes\n\
                 source log:\n{}",
                last_progress(&src.log()),
                tail(&src.log(), 30)
            ));
        }
        let log = src.log();
        let now = last_progress(&log);
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(format!(
                "transfer stalled: no progress for {STALL:?} after {now} of {bytes} bytes\n\
                 source log:\n{}",
                stop_app(src)
            ));
        }
        if Instant::now() > deadline {
            let secs = started.elapsed().as_secs_f64();
            return Err(format!(
                "too slow: {now} of {bytes} bytes in {secs:.1} s ({:.3} Gbit/s; the limit is \
                 {MIN_GBPS} Gbit/s after a 15 s allowance)\nsource log:\n{}",
                now as f64 * 8.0 / secs / 1e9,
                stop_app(src)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `ferrite-bulk` arguments that set the app's buffers for offloads `off`: 2 KiB
/// buffers (one Ethernet frame each, no TSO) with offloads off, the 64 KiB default with them
/// on.
fn buf_args(off: Offloads) -> Vec<String> {
    match off {
        Offloads::Off => vec!["--buf-size=2048".into()],
        Offloads::On => vec![],
    }
}

fn str_args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `curl` in `p` (core 0) downloads `http://host/BIG_FILE`; returns Gbit/s over curl's total
/// time, checking the status and size.
fn curl_download(t: &Topology, host: &str, bytes: u64) -> Result<f64, String> {
    let max = deadline_for(bytes).as_secs();
    let out =
        t.p.cmd_on(PEER_CORE, "curl")
            .args([
                "-sS",
                "--max-time",
                &max.to_string(),
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download} %{time_total}",
                &format!("http://{host}/{BIG_FILE}"),
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run curl: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "curl failed ({}): {} (wrote {text:?})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let f: Vec<&str> = text.split_whitespace().collect();
    let (code, size, secs) = match f[..] {
        [c, s, t] => (
            c,
            s.parse::<u64>().unwrap_or(0),
            t.parse::<f64>().unwrap_or(0.0),
        ),
        _ => return Err(format!("curl printed {text:?}")),
    };
    if code != "200" || size != bytes || secs <= 0.0 {
        return Err(format!(
            "curl got status {code}, {size} of {bytes} bytes in {secs} s"
        ));
    }
    Ok(bytes as f64 * 8.0 / secs / 1e9)
}

/// `curl` in `p` fetches the page once; `Ok` when it answers 200.
fn page_answers(t: &Topology, host: &str) -> bool {
    t.p.output([
        "curl",
        "-sf",
        "--max-time",
        "1",
        "-o",
        "/dev/null",
        &format!("http://{host}/{PAGE_FILE}"),
    ])
    .status
    .success()
}

/// `wrk -t1 -c<conns> -d<secs>s` in `p` (core 0) on the page; returns requests/s and a
/// remark when wrk counted socket errors or non-2xx answers.
fn wrk(t: &Topology, host: &str, o: &Opts) -> Result<(f64, Option<String>), String> {
    let out =
        t.p.cmd_on(PEER_CORE, "wrk")
            .args([
                "-t1",
                &format!("-c{}", o.wrk_conns),
                &format!("-d{}s", o.wrk_secs),
                "--timeout",
                "2s",
                &format!("http://{host}/{PAGE_FILE}"),
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{text}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("wrk printed no Requests/sec: {text}"))?;
    let remarks: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Socket errors") || l.starts_with("Non-2xx"))
        .map(|l| format!("wrk: {l}"))
        .collect();
    Ok((rps, (!remarks.is_empty()).then(|| remarks.join(", "))))
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
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match netns::parse_sockperf(&text) {
        Some((p50, p99, n)) if n > 0 => Ok((p50, p99)),
        _ => Err(format!(
            "sockperf got no replies from {host} in {secs} s\n{}",
            strip_ansi(&text)
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// The rows.

fn side_of(b: Option<Backend>) -> String {
    match b {
        None => LINUX.to_string(),
        Some(b) => format!("Ferrite {}", b.as_str()),
    }
}

fn slug_of(test: &str, b: Option<Backend>) -> String {
    format!("{test}-{}", b.map_or("linux", Backend::as_str))
}

fn label(test: &str, b: Option<Backend>, off: Offloads) -> String {
    format!("{test} | {} | offloads {}", side_of(b), off.label())
}

/// The server's counters, for a failure's details.
fn stats_of(srv: &Server) -> String {
    match srv.try_stats() {
        Some(s) => format!("server stats:\n{s}"),
        None => format!(
            "the server does not answer; its log:\n{}",
            tail(&srv.log(), 30)
        ),
    }
}

/// A Ferrite server on `vf` admitting `apps`, failing (instead of panicking) with its log.
fn start_server(t: &Topology, b: Backend, apps: &[AppSpec]) -> Result<Server, String> {
    Ok(Server::start(t, b, apps))
}

/// The `ferrite-bulk` arguments for MTU `mtu`.
fn mtu_args(mtu: u32) -> Vec<String> {
    if mtu == 1500 {
        vec![]
    } else {
        vec![format!("--mtu={mtu}")]
    }
}

/// The af_xdp row of a jumbo-frame test: not measured, and why.
fn jumbo_not_measured(test: &str, b: Backend, off: Offloads) -> Option<Row> {
    (b == Backend::AfXdp).then(|| Row {
        test: test.into(),
        side: side_of(Some(b)),
        offloads: off.label().into(),
        value: None,
        unit: "Gbit/s".into(),
        runs: vec![],
        note: "not measured: an af_xdp port receives frames of at most one UMEM chunk (no XDP \
               multi-buffer yet)"
            .into(),
    })
}

/// Who sends in a kernel-to-kernel bulk row and who times it.
#[derive(Clone, Copy)]
enum KernelBulk {
    /// The peer sends to a sink on the kernel address in `s`; the sender times.
    PeerToServer,
    /// The peer sends to a sink on the kernel address in `s`; the sink times.
    PeerToServerSinkTimed,
    /// `s` sends to a sink in the peer; the sink times.
    ServerToPeer,
}

/// The Linux row of a bulk test: this program's `send` and `sink` over kernel sockets on the
/// veth, in a topology of its own.
fn kernel_bulk(
    o: &Opts,
    (test, slug): (&str, &str),
    off: Offloads,
    mtu: u32,
    way: KernelBulk,
    note: &str,
) -> Row {
    let l = label(test, None, off);
    let [s] = in_topology(o, &slug_of(slug, None), off, mtu, |t, series| {
        if setup(&l, series, || {
            t.address_kernel_side();
            Ok(())
        })
        .is_none()
        {
            return;
        }
        series[0].runs(o.runs, &l, "Gbit/s", |i| match way {
            KernelBulk::PeerToServer | KernelBulk::PeerToServerSinkTimed => {
                let mut sink = start_sink(t, &t.s, SERVE_CORE, KERNEL_IP, &format!("sink-{i}"))?;
                let g = run_send(&t.p, PEER_CORE, KERNEL_IP, o.bytes)?;
                let timed = sink_result(&mut sink, o.bytes)?;
                Ok(match way {
                    KernelBulk::PeerToServer => g,
                    _ => timed,
                })
            }
            KernelBulk::ServerToPeer => {
                let mut sink = start_sink(t, &t.p, PEER_CORE, PEER_IP, &format!("peer-sink-{i}"))?;
                run_send(&t.s, SERVE_CORE, PEER_IP, o.bytes)?;
                sink_result(&mut sink, o.bytes)
            }
        });
    });
    s.into_row(test, LINUX, off, "Gbit/s", note)
}

/// Bulk TCP peer -> server with MTU `mtu` (1500, or [`JUMBO_MTU`] for the jumbo rows):
/// kernel sink, iperf3 (at 1500), and `ferrite-bulk --listen` per backend.
fn bulk_in(o: &Opts, off: Offloads, mtu: u32, rows: &mut Vec<Row>) {
    let test = if mtu == 1500 { T_IN } else { T_IN_J };
    rows.push(kernel_bulk(
        o,
        (test, "bulk-in"),
        off,
        mtu,
        KernelBulk::PeerToServer,
        "kernel TCP socket in s, this program's sink",
    ));

    if mtu == 1500 {
        let l = label(T_IN_IPERF, None, off);
        let [s] = in_topology(
            o,
            &slug_of("bulk-in-iperf3", None),
            off,
            mtu,
            |t, series| {
                if setup(&l, series, || {
                    t.address_kernel_side();
                    Ok(())
                })
                .is_none()
                {
                    return;
                }
                series[0].runs(o.runs, &l, "Gbit/s", |i| iperf3_once(t, o, i));
            },
        );
        rows.push(s.into_row(
            T_IN_IPERF,
            LINUX,
            off,
            "Gbit/s",
            "iperf3 -n, reference for the sender above",
        ));
    }

    for &b in &o.backends {
        if mtu != 1500
            && let Some(r) = jumbo_not_measured(test, b, off)
        {
            rows.push(r);
            continue;
        }
        let l = label(test, Some(b), off);
        let [s] = in_topology(o, &slug_of("bulk-in", Some(b)), off, mtu, |t, series| {
            let app = AppSpec::numbered("bulk", 1);
            let Some((srv, mut sink)) = setup(&l, series, || {
                let srv = start_server(t, b, std::slice::from_ref(&app))?;
                // The kernel sink reads and discards; so does this one (no hash). It takes
                // one connection after the other, one per run.
                let mut args = vec![format!("--listen={BULK_PORT}"), "--no-hash".into()];
                args.extend(mtu_args(mtu));
                let sink = srv.app("ferrite-bulk", &app, &str_args(&args));
                netns::wait_reachable(t, &app.ip, Duration::from_secs(20))
                    .map_err(|e| format!("{e}\napp log:\n{}", tail(&sink.log(), 30)))?;
                Ok((srv, sink))
            }) else {
                return;
            };
            series[0].runs(o.runs, &l, "Gbit/s", |_| {
                run_send(&t.p, PEER_CORE, &app.ip, o.bytes).map_err(|e| {
                    let stats = stats_of(&srv);
                    format!("{e}\n{stats}\napp log:\n{}", stop_app(&mut sink))
                })
            });
        });
        rows.push(s.into_row(
            test,
            &side_of(Some(b)),
            off,
            "Gbit/s",
            "ferrite-bulk sink (--no-hash) in an app domain, server+app on core 1",
        ));
    }
}

fn iperf3_once(t: &Topology, o: &Opts, i: usize) -> Result<f64, String> {
    let srv = Bg::spawn(
        &format!("iperf3-server-{i}"),
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
    netns::wait_until("iperf3 to listen", Duration::from_secs(5), || {
        let o = t.s.output(["ss", "-ltn"]);
        String::from_utf8_lossy(&o.stdout).contains(&format!(":{BULK_PORT}"))
    })?;
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
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("iperf3 failed: {e}"))?;
    drop(srv);
    if !out.status.success() {
        return Err(format!(
            "iperf3 failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 printed no sum_received".into())
}

/// Bulk TCP server -> peer with MTU `mtu` (1500, or [`JUMBO_MTU`] for the jumbo rows): the
/// sink in `p`, fed by `send` on the kernel IP in `s` or by `ferrite-bulk --connect` in an
/// app domain.
fn bulk_out(o: &Opts, off: Offloads, mtu: u32, rows: &mut Vec<Row>) {
    let test = if mtu == 1500 { T_OUT } else { T_OUT_J };
    rows.push(kernel_bulk(
        o,
        (test, "bulk-out"),
        off,
        mtu,
        KernelBulk::ServerToPeer,
        "this program's send over a kernel TCP socket in s (core 1) -> sink in p (core 0), \
         timed by the sink",
    ));

    for &b in &o.backends {
        if mtu != 1500
            && let Some(r) = jumbo_not_measured(test, b, off)
        {
            rows.push(r);
            continue;
        }
        let l = label(test, Some(b), off);
        let [s] = in_topology(o, &slug_of("bulk-out", Some(b)), off, mtu, |t, series| {
            // One app name and MAC per run: each run's source is a new process, and the
            // server needs no time to let the last one's name go.
            let apps: Vec<AppSpec> = (0..o.runs)
                .map(|i| AppSpec::numbered(&format!("src{i}"), 1 + i as u8))
                .collect();
            let Some(srv) = setup(&l, series, || start_server(t, b, &apps)) else {
                return;
            };
            series[0].runs(o.runs, &l, "Gbit/s", |i| {
                let mut sink = start_sink(t, &t.p, PEER_CORE, PEER_IP, &format!("peer-sink-{i}"))?;
                let mut args = vec![
                    format!("--connect={PEER_IP}:{BULK_PORT}"),
                    format!("--bytes={}", o.bytes),
                    "--no-hash".into(),
                    "--progress".into(),
                    "--progress-ms=500".into(),
                ];
                args.extend(mtu_args(mtu));
                let mut src = srv.app("ferrite-bulk", &apps[i], &str_args(&args));
                wait_source(&mut src, o.bytes)
                    .and_then(|()| sink_result(&mut sink, o.bytes))
                    .map_err(|e| format!("{e}\n{}", stats_of(&srv)))
            });
        });
        rows.push(s.into_row(
            test,
            &side_of(Some(b)),
            off,
            "Gbit/s",
            "ferrite-bulk --connect (--no-hash) in an app domain, server+app on core 1 -> sink \
             in p, timed by the sink",
        ));
    }
}

/// App -> app bulk: two Ferrite apps through the switch; the kernel between two namespaces.
fn app2app(o: &Opts, off: Offloads, rows: &mut Vec<Row>) {
    rows.push(kernel_bulk(
        o,
        (T_A2A, "app2app"),
        off,
        1500,
        KernelBulk::PeerToServerSinkTimed,
        "two namespaces joined by the veth: send in p (core 0) -> sink in s (core 1), timed by \
         the sink",
    ));

    let bufs = buf_args(off);
    let buf_note = match off {
        Offloads::Off => "2 KiB app buffers (no TSO)",
        Offloads::On => "64 KiB app buffers (TSO)",
    };
    for &b in &o.backends {
        let l = label(T_A2A, Some(b), off);
        let [s] = in_topology(o, &slug_of("app2app", Some(b)), off, 1500, |t, series| {
            let sink_app = AppSpec::numbered("sink", 1);
            let sources: Vec<AppSpec> = (0..o.runs)
                .map(|i| AppSpec::numbered(&format!("src{i}"), 2 + i as u8))
                .collect();
            let mut all = vec![sink_app.clone()];
            all.extend(sources.iter().cloned());
            let Some((srv, mut sink)) = setup(&l, series, || {
                let srv = start_server(t, b, &all)?;
                let mut args = vec![format!("--listen={BULK_PORT}"), "--no-hash".into()];
                args.extend(bufs.iter().cloned());
                let mut sink = srv.app_on(SERVE_CORE, "ferrite-bulk", &sink_app, &str_args(&args));
                sink.wait_log("bulk sink on TCP port", Duration::from_secs(20));
                Ok((srv, sink))
            }) else {
                return;
            };
            series[0].runs(o.runs, &l, "Gbit/s", |i| {
                let mut args = vec![
                    format!("--connect={}:{BULK_PORT}", sink_app.ip),
                    format!("--bytes={}", o.bytes),
                    "--no-hash".into(),
                    "--progress".into(),
                    "--progress-ms=500".into(),
                ];
                args.extend(bufs.iter().cloned());
                let mut src = srv.app_on(PEER_CORE, "ferrite-bulk", &sources[i], &str_args(&args));
                wait_source(&mut src, o.bytes).map_err(|e| {
                    let stats = stats_of(&srv);
                    format!("{e}\n{stats}\nsink log:\n{}", stop_app(&mut sink))
                })?;
                // The sink's report for this run (one JSON line per transfer).
                let mut report = None;
                netns::wait_until("the sink's report", Duration::from_secs(10), || {
                    report = sink_reports(&sink.log()).into_iter().nth(i);
                    report.is_some()
                })
                .map_err(|e| format!("{e}\nsink log:\n{}", tail(&sink.log(), 20)))?;
                let (bytes, gbps) = report.unwrap_or_default();
                if bytes != o.bytes {
                    return Err(format!("the sink received {bytes} of {} bytes", o.bytes));
                }
                Ok(gbps)
            });
        });
        rows.push(s.into_row(
            T_A2A,
            &side_of(Some(b)),
            off,
            "Gbit/s",
            &format!(
                "ferrite-bulk --connect (core 0) -> ferrite-bulk --listen (core 1, with the \
                 server) through the switch, --no-hash, {buf_note}, timed by the sink"
            ),
        ));
    }
}

/// `(bytes, gbps)` of each report a `ferrite-bulk` sink printed.
fn sink_reports(log: &str) -> Vec<(u64, f64)> {
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["role"] == "sink")
        .filter_map(|v| Some((v["bytes"].as_u64()?, v["gbps"].as_f64()?)))
        .collect()
}

/// The web root both HTTP servers serve: the page and the download.
struct Www {
    dir: TempDir,
}

impl Www {
    fn new(bytes: u64) -> Self {
        let dir = TempDir::new(&netns::unique("fe-www"));
        let mut page = String::from(
            "<!doctype html>\n<html><head><title>ferrite vs linux</title></head><body>\n",
        );
        while page.len() < 560 {
            page.push_str("<p>a small page for a request-rate benchmark</p>\n");
        }
        page.push_str("</body></html>\n");
        std::fs::write(dir.join(PAGE_FILE), page).expect("write the page");
        netns::write_pattern_file(&dir.join(BIG_FILE), bytes, 0x0123_4567_89ab_cdef);
        Self { dir }
    }

    fn root(&self) -> String {
        self.dir.path().to_string_lossy().into_owned()
    }
}

/// A server stopped with SIGTERM, and killed only if it has not exited within 3 s: nginx's
/// workers outlive a SIGKILLed master.
struct Graceful(Bg);

impl Drop for Graceful {
    fn drop(&mut self) {
        self.0.signal("TERM");
        let _ = netns::wait_until("the server to exit", Duration::from_secs(3), || {
            !self.0.alive()
        });
    }
}

/// The nginx configuration of the Linux rows: one worker, sendfile, no access log,
/// keep-alive for as long as wrk runs, everything it writes in `dir`.
fn nginx_conf(dir: &Path, www: &str) -> String {
    let d = dir.display();
    format!(
        "user root;\nworker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20 access_log off;\n  sendfile on;\n  tcp_nopush on;\n  tcp_nodelay on;\n\
         \x20 keepalive_timeout 65;\n  keepalive_requests 100000000;\n\
         \x20 default_type application/octet-stream;\n  types {{ text/html html; }}\n\
         \x20 client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
         \x20 fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n\
         \x20 scgi_temp_path {d}/nginx-scgi;\n\
         \x20 server {{\n    listen {KERNEL_IP}:80;\n    root {www};\n  }}\n\
         }}\n"
    )
}

/// HTTP rows: the download (`--runs` times) and wrk (once) against one server per side.
fn http(o: &Opts, off: Offloads, www: &Www, rows: &mut Vec<Row>) {
    let (dl, wk) = (o.tests.http, o.tests.wrk);
    let wrk_what = format!(
        "wrk -t1 -c{} -d{}s in p (core 0), {}-byte page",
        o.wrk_conns,
        o.wrk_secs,
        std::fs::metadata(www.dir.join(PAGE_FILE)).map_or(0, |m| m.len())
    );
    let sides: Vec<Option<Backend>> = std::iter::once(None)
        .chain(o.backends.iter().copied().map(Some))
        .collect();
    for b in sides {
        let l = label("HTTP", b, off);
        let [d, w] = in_topology(o, &slug_of("http", b), off, 1500, |t, series| {
            // The server: nginx on the kernel IP, or ferrite-http in an app domain.
            let app = AppSpec::numbered("http", 1);
            let Some((host, procs)) = setup(&l, series, || match b {
                None => {
                    t.address_kernel_side();
                    let conf = t.dir.join("nginx.conf");
                    std::fs::write(&conf, nginx_conf(t.dir.path(), &www.root()))
                        .map_err(|e| format!("cannot write {conf:?}: {e}"))?;
                    let mut nginx = Graceful(Bg::spawn(
                        "nginx",
                        t.dir.path(),
                        t.s.cmd_on(SERVE_CORE, "nginx").args([
                            OsStr::new("-e"),
                            t.dir.join("nginx-error.log").as_os_str(),
                            OsStr::new("-p"),
                            t.dir.path().as_os_str(),
                            OsStr::new("-c"),
                            conf.as_os_str(),
                        ]),
                    ));
                    netns::wait_until("nginx to serve the page", Duration::from_secs(10), || {
                        !nginx.0.alive() || page_answers(t, KERNEL_IP)
                    })?;
                    if !nginx.0.alive() {
                        return Err(format!("nginx exited:\n{}", tail(&nginx.0.log(), 20)));
                    }
                    Ok((KERNEL_IP.to_string(), (None, None, Some(nginx))))
                }
                Some(b) => {
                    let srv = start_server(t, b, std::slice::from_ref(&app))?;
                    let conns = o.wrk_conns.max(16).to_string();
                    let http = srv.app(
                        "ferrite-http",
                        &app,
                        &["--root", &www.root(), "--port", "80", "--conns", &conns],
                    );
                    netns::wait_reachable(t, &app.ip, Duration::from_secs(20))
                        .and_then(|()| {
                            netns::wait_until(
                                "ferrite-http to serve the page",
                                Duration::from_secs(10),
                                || page_answers(t, &app.ip),
                            )
                        })
                        .map_err(|e| format!("{e}\napp log:\n{}", tail(&http.log(), 30)))?;
                    Ok((app.ip.clone(), (Some(srv), Some(http), None)))
                }
            }) else {
                return;
            };
            let with_stats = |e: String| match &procs.0 {
                Some(srv) => format!("{e}\n{}", stats_of(srv)),
                None => e,
            };
            if dl {
                let ld = label(T_DL, b, off);
                series[0].runs(o.runs, &ld, "Gbit/s", |_| {
                    curl_download(t, &host, o.bytes).map_err(with_stats)
                });
            }
            if wk {
                let lw = label(T_WRK, b, off);
                let mut remark = None;
                series[1].runs(1, &lw, "req/s", |_| {
                    let (rps, r) = wrk(t, &host, o).map_err(with_stats)?;
                    remark = r;
                    Ok(rps)
                });
                series[1].remarks.extend(remark);
            }
        });
        let (dl_what, wrk_side) = match b {
            None => (
                format!(
                    "nginx 1 worker, sendfile on, in s (core 1); curl -o /dev/null in p (core 0), \
                     {} bytes",
                    o.bytes
                ),
                "nginx 1 worker in s (core 1)".to_string(),
            ),
            Some(_) => (
                format!(
                    "ferrite-http in an app domain, server+app on core 1; curl -o /dev/null in p \
                     (core 0), {} bytes",
                    o.bytes
                ),
                format!(
                    "ferrite-http --conns {} in an app domain, server+app on core 1",
                    o.wrk_conns.max(16)
                ),
            ),
        };
        if dl {
            rows.push(d.into_row(T_DL, &side_of(b), off, "Gbit/s", &dl_what));
        }
        if wk {
            rows.push(w.into_row(
                T_WRK,
                &side_of(b),
                off,
                "req/s",
                &format!("{wrk_side}; {wrk_what}"),
            ));
        }
    }
}

/// UDP ping-pong: sockperf server (kernel) or ferrite-sockperf, sockperf client in `p`.
fn pingpong(o: &Opts, off: Offloads, rows: &mut Vec<Row>) {
    let sides: Vec<Option<Backend>> = std::iter::once(None)
        .chain(o.backends.iter().copied().map(Some))
        .collect();
    for b in sides {
        let l = label("UDP ping-pong", b, off);
        let [p50, p99] = in_topology(o, &slug_of("pingpong", b), off, 1500, |t, series| {
            let app = AppSpec::numbered("sockperf", 1);
            let Some((host, _procs)) = setup(&l, series, || match b {
                None => {
                    t.address_kernel_side();
                    let srv = Bg::spawn(
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
                    Ok((KERNEL_IP.to_string(), (None, srv)))
                }
                Some(b) => {
                    let srv = start_server(t, b, std::slice::from_ref(&app))?;
                    let sp = srv.app("ferrite-sockperf", &app, &[&format!("--port={PP_PORT}")]);
                    netns::wait_reachable(t, &app.ip, Duration::from_secs(20))
                        .map_err(|e| format!("{e}\napp log:\n{}", tail(&sp.log(), 30)))?;
                    Ok((app.ip.clone(), (Some(srv), sp)))
                }
            }) else {
                return;
            };
            progress(&format!("{l}: {} s", o.pp_secs));
            match guarded(|| pingpong_client(t, &host, o.pp_secs)) {
                Ok((a, z)) => {
                    progress(&format!("{l}: p50 {a:.3} us, p99 {z:.3} us"));
                    series[0].values.push(a);
                    series[1].values.push(z);
                }
                Err(e) => {
                    series[0].fail(&l, e.clone());
                    series[1].error = Some(e);
                }
            }
        });
        let what = match b {
            None => "sockperf server in s",
            Some(_) => "ferrite-sockperf in an app domain, server+app on core 1",
        };
        rows.push(p50.into_row(T_P50, &side_of(b), off, "us", what));
        rows.push(p99.into_row(T_P99, &side_of(b), off, "us", what));
    }
}

// ---------------------------------------------------------------------------------------------

/// Debian packages of the tools the selected tests run.
fn missing_tools(o: &Opts) -> Vec<String> {
    let t = o.tests;
    let mut need = vec![
        ("ip", "iproute2"),
        ("ss", "iproute2"),
        ("ethtool", "ethtool"),
        ("taskset", "util-linux"),
        ("ping", "iputils-ping"),
    ];
    if t.bulk_in {
        need.push(("iperf3", "iperf3"));
    }
    if t.pingpong {
        need.push(("sockperf", "sockperf"));
    }
    if t.http || t.wrk {
        need.push(("curl", "curl"));
        need.push(("nginx", "nginx"));
    }
    if t.wrk {
        need.push(("wrk", "wrk"));
    }
    let mut missing: Vec<String> = need
        .into_iter()
        .filter(|(tool, _)| !netns::have_tool(tool))
        .map(|(tool, pkg)| format!("`{tool}` (Debian package `{pkg}`)"))
        .collect();
    let mut bins = vec!["ferrite"];
    if t.bulk_in || t.bulk_out || t.app2app {
        bins.push("ferrite-bulk");
    }
    if t.http || t.wrk {
        bins.push("ferrite-http");
    }
    if t.pingpong {
        bins.push("ferrite-sockperf");
    }
    let dir = netns::bin_dir();
    for b in bins {
        if !dir.join(b).is_file() {
            missing.push(format!(
                "{} (build it with `cargo build --release --workspace --bins`)",
                dir.join(b).display()
            ));
        }
    }
    missing
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
    let missing = missing_tools(&o);
    if !missing.is_empty() {
        eprintln!(
            "vs_linux: missing {}; scripts/setup-system.sh installs the packages",
            missing.join(", ")
        );
        std::process::exit(1);
    }
    install_panic_hook();
    let machine = Machine::detect();
    // One directory per run, so that a later run keeps the logs a results file points to.
    let mut o = o;
    o.logs = o.logs.join(machine.date.replace(':', "-"));
    progress(&format!(
        "{} bytes per transfer, {} runs, offloads {:?}, backends {:?}",
        o.bytes,
        o.runs,
        o.offloads.iter().map(|f| f.label()).collect::<Vec<_>>(),
        o.backends.iter().map(|b| b.as_str()).collect::<Vec<_>>()
    ));
    let t = o.tests;
    let www = (t.http || t.wrk).then(|| {
        // The download's file only when the download runs.
        let big = if t.http { o.bytes } else { 0 };
        progress(&format!("writing the web root ({big} byte download)"));
        Www::new(big)
    });
    let mut rows: Vec<Row> = Vec::new();
    for &off in &o.offloads {
        if t.bulk_in {
            bulk_in(&o, off, 1500, &mut rows);
        }
        if t.bulk_out {
            bulk_out(&o, off, 1500, &mut rows);
        }
        if t.jumbo {
            bulk_in(&o, off, JUMBO_MTU, &mut rows);
            bulk_out(&o, off, JUMBO_MTU, &mut rows);
        }
        if t.app2app {
            app2app(&o, off, &mut rows);
        }
        if let Some(www) = &www {
            http(&o, off, www, &mut rows);
        }
        if t.pingpong {
            pingpong(&o, off, &mut rows);
        }
    }
    progress("done");
    write_results(&o, &machine, &rows);
}

fn ratio(rows: &[Row], test: &str, side: &str, off: &str) -> Option<f64> {
    let get = |s: &str| {
        rows.iter()
            .find(|r| r.test == test && r.side == s && r.offloads == off)
            .and_then(|r| r.value)
    };
    Some(get(side)? / get(LINUX)?)
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
        "met",
    ]);
    let kinds = [
        (T_IN, "TCP bulk peer -> server"),
        (T_OUT, "TCP bulk server -> peer"),
        (T_IN_J, "TCP bulk peer -> server, MTU 9000"),
        (T_OUT_J, "TCP bulk server -> peer, MTU 9000"),
        (T_A2A, "TCP bulk app -> app"),
        (T_DL, "HTTP download"),
        (T_WRK, "HTTP small page req/s"),
        (T_P50, "UDP ping-pong p50"),
        (T_P99, "UDP ping-pong p99"),
    ];
    for b in &o.backends {
        let side = side_of(Some(*b));
        for off in &o.offloads {
            let off = off.label();
            for (test, name) in kinds {
                if !rows.iter().any(|r| r.test == test && r.offloads == off) {
                    continue;
                }
                // The targets of the bulk-parity work: throughput at least Linux's (small
                // pages at least twice nginx's), ping-pong latency at most 0.6 of Linux's.
                let (at_least, goal) = match test {
                    T_WRK => (true, 2.0),
                    T_P50 | T_P99 => (false, 0.6),
                    _ => (true, 1.0),
                };
                let v = ratio(rows, test, &side, off);
                let met = v.map(|v| if at_least { v >= goal } else { v <= goal });
                ratios.push([
                    name.to_string(),
                    b.as_str().to_string(),
                    off.to_string(),
                    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into()),
                    format!("{} {goal:.1}", if at_least { ">=" } else { "<=" }),
                    match met {
                        Some(true) => "yes",
                        Some(false) => "no",
                        None => "n/a",
                    }
                    .to_string(),
                ]);
            }
        }
    }
    println!("{}\n", machine.summary());
    println!("{}", t.to_text());
    println!("{}", ratios.to_text());
    let failed: Vec<&Row> = rows
        .iter()
        .filter(|r| r.note.starts_with("failed"))
        .collect();
    if !failed.is_empty() {
        println!(
            "{} row(s) failed; their logs are in {}\n",
            failed.len(),
            o.logs.display()
        );
    }
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("vs_linux: cannot create {}: {e}", o.out.display());
        std::process::exit(1);
    }
    let json = serde_json::json!({
        "machine": machine,
        "bytes_per_bulk_run": o.bytes,
        "http_download_bytes": o.bytes,
        "runs": o.runs,
        "pingpong_secs": o.pp_secs,
        "wrk": {"threads": 1, "connections": o.wrk_conns, "secs": o.wrk_secs},
        "cores": {"serving side": SERVE_CORE, "peer tools": PEER_CORE},
        "rows": rows,
    });
    let md = format!(
        "# Ferrite vs the Linux kernel stack on the same veth\n\n\
         Machine: {}\n\nCommand: `{}`\n\n\
         Serving side (kernel sockets, nginx, sockperf server, or Ferrite server + app) pinned \
         to core {SERVE_CORE}; peer tools (and the sending app of app -> app) pinned to core \
         {PEER_CORE}. On veth the kernel's receive softirq runs on the sending core, which helps \
         the kernel side. Offloads: TSO/GSO/GRO, scatter-gather and checksum offload on both \
         veth ends off, or the veth defaults (on).\n\n\
         - TCP bulk peer -> server: {} bytes per run, one TCP connection, the same sender \
         (this program's `send` in the peer namespace) on both sides, timed by the sender.\n\
         - TCP bulk server -> peer: `ferrite-bulk --connect` in an app domain, or `send` over a \
         kernel socket in the server namespace, to this program's `sink` in the peer namespace; \
         timed by the sink (first byte to last).\n\
         - MTU 9000 rows: both bulk tests again with a 9000-byte MTU on both veth ends, the \
         kernel side and the apps (`--mtu=9000`).\n\
         - TCP bulk app -> app: two app domains on one Ferrite server, `ferrite-bulk` source \
         (core 0) to sink (core 1) through the switch, with 2 KiB app buffers (offloads off) or \
         64 KiB (TSO; on); Linux: `send` to `sink` between the two namespaces over the veth. \
         Timed by the sink.\n\
         - HTTP download: `curl -o /dev/null` of a {}-byte file from `ferrite-http` or from \
         nginx (1 worker, sendfile on) on the kernel address.\n\
         - HTTP small page: `wrk -t1 -c{} -d{}s`, same servers.\n\
         - UDP ping-pong: `sockperf ping-pong --msg-size 64 -t {}`, latency as sockperf reports \
         it (half the round trip).\n\n\
         Throughput rows: median of {} runs. A failed row says why and where its logs were \
         kept (not committed).\n\n{}\n{}",
        machine.summary(),
        machine.command,
        o.bytes,
        o.bytes,
        o.wrk_conns,
        o.wrk_secs,
        o.pp_secs,
        o.runs,
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

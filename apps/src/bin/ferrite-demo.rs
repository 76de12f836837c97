//! Ferrite's demo: no privileges, no NIC. Starts the server on its in-memory port, two app
//! domains as separate processes, runs TCP bulk and then UDP ping-pong between them through
//! the switch, prints Gbit/s and a latency histogram, and writes `results/demo.{json,md}`.
//!
//! Every process it starts is stopped when it exits, on Ctrl-C and on failure (and, where
//! `setpriv` exists, killed by the kernel if the demo itself is killed).
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use apps::cli::{self, DomainArgs};
use apps::domain::{AppDomain, Service, stop_on_signals};
use apps::services::{
    Amount, BulkReport, BulkSink, BulkSource, Pair, Percentiles, PingPongClient, SOCKPERF_PORT,
    SockperfResponder, endpoint,
};
use clap::{Parser, Subcommand};
use smoltcp::iface::SocketSet;

/// Runs Ferrite end to end on this machine, unprivileged.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    demo: DemoArgs,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Seconds of TCP bulk transfer.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// UDP ping-pong round trips measured.
    #[arg(long, default_value_t = 20_000)]
    rounds: u64,
    /// Round trips before measuring.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Bytes per ping-pong message (sockperf format).
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Where to write demo.json and demo.md.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// The server binary (default: `ferrite` next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Microseconds the apps busy-poll when idle before they sleep on the doorbell (on a
    /// machine with fewer cores than server and apps, 0 is fastest).
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// One app domain of the demo (started by the demo itself).
    #[command(hide = true)]
    Peer(PeerArgs),
}

#[derive(Debug, clap::Args)]
struct PeerArgs {
    #[command(flatten)]
    domain: DomainArgs,
    /// `sink` (bulk sink and ping-pong responder) or `source` (bulk source, then ping-pong
    /// client).
    #[arg(long)]
    role: String,
    /// The other app's address (source only).
    #[arg(long)]
    peer_ip: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    #[arg(long, default_value_t = 20_000)]
    rounds: u64,
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
}

const BULK_PORT: u16 = 5001;
const NET: &str = "10.99.0";
const A: (&str, &str, u8) = ("demo-a", "02:fe:00:00:99:0a", 10);
const B: (&str, &str, u8) = ("demo-b", "02:fe:00:00:99:0b", 11);

fn main() {
    cli::init_logging();
    let a = Args::parse();
    match a.cmd {
        Some(Cmd::Peer(p)) => peer(p),
        None => {
            if let Err(e) = demo(&a.demo) {
                cli::fail(e);
            }
        }
    }
}

// ----- the app domains ---------------------------------------------------------------------

/// Emits one JSON event line on stdout for the demo to read.
fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

/// The source side: bulk first, then ping-pong, with a progress event once a second.
struct SourceSide {
    bulk: BulkSource,
    pp: PingPongClient,
    last: Instant,
    bulk_reported: bool,
}

impl Service for SourceSide {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let worked = if self.bulk.done() {
            if !self.bulk_reported {
                self.bulk_reported = true;
                emit(serde_json::json!({"event": "bulk", "report": self.bulk.report}));
            }
            self.pp.poll(sockets, now)
        } else {
            self.bulk.poll(sockets, now)
        };
        if now.duration_since(self.last) >= Duration::from_secs(1) {
            self.last = now;
            if self.bulk.done() {
                emit(
                    serde_json::json!({"event": "progress", "phase": "ping-pong",
                    "done": self.pp.completed, "lost": self.pp.lost}),
                );
            } else {
                emit(serde_json::json!({"event": "progress", "phase": "bulk",
                    "bytes": self.bulk.progress}));
            }
        }
        worked
    }

    fn poll_at(&self) -> Option<Instant> {
        let own = if self.bulk.done() {
            self.pp.poll_at()
        } else {
            self.bulk.poll_at()
        };
        let tick = self.last + Duration::from_secs(1);
        Some(own.map_or(tick, |t| t.min(tick)))
    }

    fn done(&self) -> bool {
        self.bulk.done() && self.pp.done()
    }
}

/// The sink side reports each finished transfer as an event.
struct SinkSide {
    inner: Pair<BulkSink, SockperfResponder>,
    reported: usize,
}

impl Service for SinkSide {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let w = self.inner.poll(sockets, now);
        let reports = &self.inner.0.reports;
        for r in &reports[self.reported..] {
            emit(serde_json::json!({"event": "sink", "report": r}));
        }
        self.reported = reports.len();
        w
    }
}

fn peer(p: PeerArgs) {
    let cfg = p.domain.config().unwrap_or_else(|e| cli::fail(e));
    let stop = stop_on_signals();
    let mut d = AppDomain::connect(cfg).unwrap_or_else(|e| cli::fail(e));
    emit(serde_json::json!({"event": "attached", "role": p.role}));
    let result = match p.role.as_str() {
        "sink" => {
            let sink = BulkSink::new(d.sockets(), BULK_PORT, true, false);
            let resp = SockperfResponder::new(d.sockets(), SOCKPERF_PORT);
            let mut svc = SinkSide {
                inner: Pair(sink, resp),
                reported: 0,
            };
            let r = d.run(&mut svc, &stop);
            emit(
                serde_json::json!({"event": "sink-done", "answered": svc.inner.1.answered,
                "device": d.device_stats(), "domain": d.stats()}),
            );
            r
        }
        "source" => {
            let Some(ip) = p.peer_ip else {
                cli::fail("--peer-ip is needed for the source");
            };
            let mut bulk = BulkSource::new(
                d.sockets(),
                endpoint(ip, BULK_PORT),
                Amount::Time(Duration::from_secs_f64(p.secs.max(0.1))),
                7,
                true,
            );
            d.with_context(|cx, s| bulk.connect(cx, s, 40001))
                .unwrap_or_else(|e| cli::fail(e));
            let pp = PingPongClient::new(
                d.sockets(),
                40002,
                endpoint(ip, SOCKPERF_PORT),
                p.msg_size,
                p.rounds,
                p.warmup,
            )
            .unwrap_or_else(|e| cli::fail(e));
            let mut svc = SourceSide {
                bulk,
                pp,
                last: Instant::now(),
                bulk_reported: false,
            };
            let r = d.run(&mut svc, &stop);
            emit(serde_json::json!({
                "event": "pingpong",
                "rtt": Percentiles::of(&svc.pp.hist),
                "lost": svc.pp.lost,
                "buckets": buckets(&svc.pp.hist),
                "device": d.device_stats(),
                "domain": d.stats(),
            }));
            r
        }
        other => cli::fail(format!("--role {other}: must be sink or source")),
    };
    if let Err(e) = result {
        cli::fail(e);
    }
}

/// Log-spaced buckets of a nanosecond histogram: (upper bound in µs, count).
fn buckets(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    let mut out = Vec::new();
    let mut lo = 0u64;
    let mut hi = 1_000u64; // 1 µs
    while lo <= h.max() && out.len() < 40 {
        let n = h.count_between(lo, hi.saturating_sub(1));
        out.push((hi as f64 / 1000.0, n));
        lo = hi;
        hi *= 2;
    }
    out
}

// ----- the orchestrator -------------------------------------------------------------------

/// The processes the demo started; stopped (TERM, then KILL) when dropped.
struct Procs {
    list: Vec<(String, Child)>,
}

impl Procs {
    fn spawn(&mut self, name: &str, cmd: &mut Command) -> Result<usize, String> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        self.list.push((name.to_string(), child));
        Ok(self.list.len() - 1)
    }

    /// A process that exited, with its status; `ok` ones (status 0) only when `all`.
    fn exited(&mut self, all: bool) -> Option<(String, String)> {
        for (name, c) in &mut self.list {
            if let Ok(Some(st)) = c.try_wait()
                && (all || !st.success())
            {
                return Some((name.clone(), st.to_string()));
            }
        }
        None
    }

    /// Stops the processes newest first (apps before the server they are attached to):
    /// SIGTERM, up to 2 s to exit, then SIGKILL.
    fn stop_all(&mut self) {
        while let Some((_, mut c)) = self.list.pop() {
            if let Ok(None) = c.try_wait()
                && let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A command that the kernel kills when the demo dies (`setpriv --pdeathsig`), so that even
/// a SIGKILLed demo leaves no processes behind.
fn guarded(bin: &Path) -> Command {
    let setpriv = Path::new("/usr/bin/setpriv");
    if setpriv.exists() {
        let mut c = Command::new(setpriv);
        c.args(["--pdeathsig", "KILL", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn server_bin(a: &DemoArgs) -> Result<PathBuf, String> {
    if let Some(p) = &a.server_bin {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let dir = me.parent().ok_or("no directory of the demo binary")?;
    let p = dir.join("ferrite");
    if p.exists() {
        return Ok(p);
    }
    // Run through cargo: build the server next to the demo, same profile and target dir.
    let hint = || {
        format!(
            "the server binary {} is not built; run `cargo build --release -p switch` \
             (or pass --server-bin)",
            p.display()
        )
    };
    let cargo = std::env::var_os("CARGO").ok_or_else(hint)?;
    println!("building the server (cargo build -p switch --bin ferrite) ...");
    let mut c = Command::new(cargo);
    c.args(["build", "-p", "switch", "--bin", "ferrite"]);
    // The profile this binary was built with: its directory's name (`debug` is `dev`).
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        None | Some("debug") => "dev",
        Some(name) => name,
    };
    c.args(["--profile", profile]);
    if let Some(target) = dir.parent() {
        c.env("CARGO_TARGET_DIR", target);
    }
    let ok = c.status().map(|s| s.success()).unwrap_or(false);
    if ok && p.exists() { Ok(p) } else { Err(hint()) }
}

fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn write_config(dir: &Path, socket: &Path) -> Result<PathBuf, String> {
    let mut t = String::new();
    t.push_str(&format!(
        "[server]\nsocket = {socket:?}\nsocket_mode = \"0600\"\n\n"
    ));
    t.push_str("[[ports]]\nname = \"sim0\"\nbackend = \"sim\"\ngenerate = false\n\n");
    for (name, mac, _) in [A, B] {
        t.push_str(&format!(
            "[[apps]]\nname = \"{name}\"\nmac = \"{mac}\"\nuid = {}\n\n",
            uid()
        ));
    }
    let p = dir.join("ferrite.toml");
    std::fs::write(&p, t).map_err(|e| format!("write {}: {e}", p.display()))?;
    Ok(p)
}

enum Event {
    Line(&'static str, serde_json::Value),
}

fn reader(name: &'static str, child: &mut Child, tx: mpsc::Sender<Event>) {
    let Some(out) = child.stdout.take() else {
        return;
    };
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && tx.send(Event::Line(name, v)).is_err()
            {
                break;
            }
        }
    });
}

fn peer_cmd(me: &Path, socket: &Path, who: (&str, &str, u8), busy: u64) -> Command {
    let mut c = guarded(me);
    c.arg("peer")
        .arg("--socket")
        .arg(socket)
        .args(["--name", who.0, "--mac", who.1])
        .arg("--ip")
        .arg(format!("{NET}.{}/24", who.2))
        .arg(format!("--busy-poll-us={busy}"))
        .stdout(Stdio::piped());
    c
}

#[derive(Debug, serde::Serialize)]
struct DemoResult {
    machine: Machine,
    bulk: Option<BulkReport>,
    sink: Option<BulkReport>,
    sha256_match: bool,
    rtt_us: Option<Percentiles>,
    lost: u64,
    buckets: Vec<(f64, u64)>,
    msg_size: usize,
}

#[derive(Debug, serde::Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    kernel: String,
    /// UTC, ISO 8601.
    date: String,
    /// `/proc/loadavg` when the demo started: other work on the machine skews the tails.
    loadavg: String,
    command: String,
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Machine {
    fn detect() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            date: utc(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())),
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }
}

fn demo(a: &DemoArgs) -> Result<(), String> {
    let stop: Arc<AtomicBool> = stop_on_signals();
    let server = server_bin(a)?;
    let me = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    let dir = std::env::temp_dir().join(format!("ferrite-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let socket = dir.join("ctl.sock");
    let config = write_config(&dir, &socket)?;
    let mut procs = Procs { list: Vec::new() };
    let result = run_demo(a, &stop, &server, &me, &dir, &socket, &config, &mut procs);
    procs.stop_all();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[allow(clippy::too_many_arguments)]
fn run_demo(
    a: &DemoArgs,
    stop: &AtomicBool,
    server: &Path,
    me: &Path,
    dir: &Path,
    socket: &Path,
    config: &Path,
    procs: &mut Procs,
) -> Result<(), String> {
    println!(
        "Ferrite demo: server on the in-memory NIC, two app domains, TCP bulk then UDP ping-pong"
    );
    let log =
        std::fs::File::create(dir.join("server.log")).map_err(|e| format!("server log: {e}"))?;
    let mut cmd = guarded(server);
    cmd.arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log);
    procs.spawn("server", &mut cmd)?;
    let t0 = Instant::now();
    while !socket.exists() {
        if t0.elapsed() > Duration::from_secs(10) || stop.load(Ordering::Relaxed) {
            return Err(format!(
                "the server did not open its control socket in 10 s; its log:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            ));
        }
        if let Some((n, st)) = procs.exited(true) {
            return Err(format!(
                "{n} exited ({st}); its log:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("  server up ({} ms)", t0.elapsed().as_millis());
    let (tx, rx) = mpsc::channel();
    let mut sink = peer_cmd(me, socket, A, a.busy_poll_us);
    sink.args(["--role", "sink"]);
    let i = procs.spawn("app demo-a (sink, responder)", &mut sink)?;
    reader("a", &mut procs.list[i].1, tx.clone());
    // The source starts once the sink is on the switch, so its first ARP finds it.
    let t1 = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted; all processes stopped".into());
        }
        if let Some((n, st)) = procs.exited(true) {
            return Err(format!("{n} exited ({st})"));
        }
        if t1.elapsed() > Duration::from_secs(15) {
            return Err("the sink app did not attach in 15 s".into());
        }
        if let Ok(Event::Line("a", v)) = rx.recv_timeout(Duration::from_millis(20))
            && v["event"] == "attached"
        {
            println!("  app demo-a attached (bulk sink, sockperf responder)");
            break;
        }
    }
    let mut src = peer_cmd(me, socket, B, a.busy_poll_us);
    src.args(["--role", "source"])
        .arg(format!("--peer-ip={NET}.{}", A.2))
        .arg(format!("--secs={}", a.secs))
        .arg(format!("--rounds={}", a.rounds))
        .arg(format!("--warmup={}", a.warmup))
        .arg(format!("--msg-size={}", a.msg_size));
    let i = procs.spawn("app demo-b (source, client)", &mut src)?;
    reader("b", &mut procs.list[i].1, tx);

    let budget = Duration::from_secs_f64(a.secs + 30.0 + a.rounds as f64 / 1000.0);
    let start = Instant::now();
    let mut res = DemoResult {
        machine: Machine::detect(),
        bulk: None,
        sink: None,
        sha256_match: false,
        rtt_us: None,
        lost: 0,
        buckets: Vec::new(),
        msg_size: a.msg_size,
    };
    let mut last_bytes = 0u64;
    let mut last_t = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted; all processes stopped".into());
        }
        if start.elapsed() > budget {
            return Err(format!("no result after {} s", budget.as_secs()));
        }
        if res.rtt_us.is_some() && res.sink.is_some() {
            break;
        }
        // The source exits (status 0) when done; any failure ends the demo.
        if let Some((n, st)) = procs.exited(false) {
            return Err(format!("{n} failed ({st})"));
        }
        let Ok(Event::Line(who, v)) = rx.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        match (who, v["event"].as_str()) {
            ("b", Some("attached")) => {
                println!("  app demo-b attached (bulk source, ping-pong client)")
            }
            ("b", Some("progress")) => {
                if v["phase"] == "bulk" {
                    let b = v["bytes"].as_u64().unwrap_or(0);
                    let dt = last_t.elapsed().as_secs_f64().max(1e-3);
                    println!(
                        "  bulk       {:>8.1} MB sent, {:>6.2} Gbit/s",
                        b as f64 / 1e6,
                        b.saturating_sub(last_bytes) as f64 * 8.0 / dt / 1e9
                    );
                    last_bytes = b;
                    last_t = Instant::now();
                } else {
                    println!(
                        "  ping-pong  {:>8} round trips, {} lost",
                        v["done"].as_u64().unwrap_or(0),
                        v["lost"].as_u64().unwrap_or(0)
                    );
                }
            }
            ("b", Some("bulk")) => {
                res.bulk = serde_json::from_value::<ReportIn>(v["report"].clone())
                    .ok()
                    .map(ReportIn::into_report);
            }
            ("a", Some("sink")) => {
                res.sink = serde_json::from_value::<ReportIn>(v["report"].clone())
                    .ok()
                    .map(ReportIn::into_report);
            }
            ("b", Some("pingpong")) => {
                res.rtt_us = serde_json::from_value::<PercentilesIn>(v["rtt"].clone())
                    .ok()
                    .map(PercentilesIn::into_percentiles);
                res.lost = v["lost"].as_u64().unwrap_or(0);
                res.buckets = serde_json::from_value(v["buckets"].clone()).unwrap_or_default();
            }
            _ => {}
        }
    }
    res.sha256_match = match (&res.bulk, &res.sink) {
        (Some(s), Some(r)) => s.sha256 == r.sha256 && s.bytes == r.bytes,
        _ => false,
    };
    report(a, &res)
}

#[derive(serde::Deserialize)]
struct ReportIn {
    role: String,
    bytes: u64,
    secs: f64,
    gbps: f64,
    sha256: String,
}

impl ReportIn {
    fn into_report(self) -> BulkReport {
        BulkReport {
            role: if self.role == "sink" {
                "sink"
            } else {
                "source"
            },
            bytes: self.bytes,
            secs: self.secs,
            gbps: self.gbps,
            sha256: self.sha256,
        }
    }
}

#[derive(serde::Deserialize)]
struct PercentilesIn {
    count: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
}

impl PercentilesIn {
    fn into_percentiles(self) -> Percentiles {
        Percentiles {
            count: self.count,
            p50_us: self.p50_us,
            p90_us: self.p90_us,
            p99_us: self.p99_us,
            p999_us: self.p999_us,
            max_us: self.max_us,
            mean_us: self.mean_us,
        }
    }
}

fn report(a: &DemoArgs, r: &DemoResult) -> Result<(), String> {
    let mut md = String::new();
    md.push_str("# Ferrite demo\n\n");
    md.push_str(&format!(
        "Machine: {} ({} cores), Linux {}; {}; load average at start {}.\n\nCommand: `{}` \
         (what `cargo run --release -p apps --bin ferrite-demo` runs)\n\n",
        r.machine.cpu,
        r.machine.cores,
        r.machine.kernel,
        r.machine.date,
        r.machine.loadavg,
        r.machine.command
    ));
    md.push_str("Server on the in-memory (sim) NIC; two app domains (separate processes, own smoltcp stacks) connected through the switch.\n\n");
    if let (Some(s), Some(k)) = (&r.bulk, &r.sink) {
        md.push_str(&format!(
            "## TCP bulk\n\n| sent | received | seconds | Gbit/s | sha256 match |\n|---:|---:|---:|---:|---|\n| {} | {} | {:.2} | {:.3} | {} |\n\n",
            s.bytes, k.bytes, k.secs, k.gbps, if r.sha256_match { "yes" } else { "NO" }
        ));
    }
    if let Some(p) = &r.rtt_us {
        md.push_str(&format!(
            "## UDP ping-pong round trip ({} B sockperf messages, {} samples, {} lost)\n\n| p50 µs | p90 µs | p99 µs | p99.9 µs | max µs | mean µs |\n|---:|---:|---:|---:|---:|---:|\n| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n\n",
            r.msg_size, p.count, r.lost, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us, p.mean_us
        ));
        md.push_str("Round trip = client app → switch → responder app → switch → client app (sockperf reports half of this as latency).\n");
    }
    // Terminal output.
    println!();
    if let (Some(s), Some(k)) = (&r.bulk, &r.sink) {
        println!(
            "TCP bulk: {:.3} Gbit/s ({:.1} MB in {:.2} s), sha256 {} ({})",
            k.gbps,
            k.bytes as f64 / 1e6,
            k.secs,
            if r.sha256_match { "matches" } else { "DIFFERS" },
            &s.sha256[..s.sha256.len().min(16)]
        );
    }
    if let Some(p) = &r.rtt_us {
        println!(
            "UDP ping-pong round trip, {} B, {} samples, {} lost:",
            r.msg_size, p.count, r.lost
        );
        println!(
            "  {:>8} {:>8} {:>8} {:>8} {:>8}",
            "p50", "p90", "p99", "p99.9", "max"
        );
        println!(
            "  {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}  µs",
            p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us
        );
        let total: u64 = r.buckets.iter().map(|b| b.1).sum();
        for (hi, n) in &r.buckets {
            if *n == 0 {
                continue;
            }
            let bar = (*n as f64 / total.max(1) as f64 * 50.0).ceil() as usize;
            println!("  < {:>9.0} µs {:>8} {}", hi, n, "#".repeat(bar));
        }
    }
    std::fs::create_dir_all(&a.results)
        .map_err(|e| format!("create {}: {e}", a.results.display()))?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    let jp = a.results.join("demo.json");
    std::fs::write(&jp, json + "\n").map_err(|e| format!("write {}: {e}", jp.display()))?;
    let mp = a.results.join("demo.md");
    std::fs::write(&mp, md).map_err(|e| format!("write {}: {e}", mp.display()))?;
    println!("\nwrote {} and {}", jp.display(), mp.display());
    if !r.sha256_match {
        return Err("the bytes received differ from the bytes sent".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc(1_795_732_377), "2026-11-26T22:32:57Z");
    }
}

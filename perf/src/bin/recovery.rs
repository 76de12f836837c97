//! The kill campaign (root; veth in test namespaces): the server is SIGKILLed again and again
//! at random moments while TCP connections run through it both ways, and comes back by itself.
//!
//! Traffic, all through one Ferrite port between the Linux peer and four app domains:
//!
//! - peer → app: `socat` sends a pattern file to a `ferrite-bulk` sink, one connection after
//!   another; the sink's SHA-256 of each must be the file's;
//! - app → peer: a `ferrite-bulk` source domain, started afresh for each connection (so apps
//!   attach and detach all through the campaign), sends its pattern to a `socat` listener on
//!   the peer that hashes what arrives; the two hashes must match;
//! - HTTP keep-alive: `wrk` holds 4 connections to a `ferrite-http` domain for the whole
//!   campaign; every socket error and every non-2xx answer counts;
//! - a `ferrite-echo` domain is started and SIGKILLed around the kills.
//!
//! Kills cycle through three moments: anywhere in the traffic (after a random wait), right
//! after an app domain is spawned (while it connects and attaches), and right after an
//! attached app domain is SIGKILLed (while the server tears its port down). The server runs
//! under `ferrite supervise` (by default with a warm spare); the benchmark never restarts it.
//! For each kill it records the time to the first frame the new server forwards. After the
//! last kill every connection must finish.
//!
//! Writes `results/recovery.json` and `results/recovery.md` and prints the tables.
//!
//! Usage: `recovery [--kills N] [--backend af_packet|af_xdp] [--mode standby|supervise]
//! [--gap-ms MS] [--transfer-mb MB] [--seed N] [--out DIR]` (root).
#![forbid(unsafe_code)]

#[path = "../../../apps/tests/netns/mod.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, Offloads, PEER_IP, Topology};
use perf::kill::{Rng, kill_server, quantile, stats, wait_first_frame};
use perf::report::{Machine, Table};
use serde::Serialize;

/// TCP port of the app's bulk sink.
const SINK_PORT: u16 = 5201;
/// TCP port of the peer's listener for the app's bulk source.
const PEER_PORT: u16 = 5202;
/// How long one transfer may take before its connection counts as lost.
const TRANSFER_LIMIT: Duration = Duration::from_secs(180);
/// The latest moment after an app's spawn at which the server is killed.
const ATTACH_WINDOW: Duration = Duration::from_millis(20);
/// The latest moment after an app's SIGKILL at which the server is killed.
const DYING_WINDOW: Duration = Duration::from_millis(2);

struct Opts {
    kills: usize,
    backend: Backend,
    standby: bool,
    gap: Duration,
    transfer: u64,
    seed: u64,
    out: PathBuf,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        kills: 1000,
        backend: Backend::AfPacket,
        standby: true,
        gap: Duration::from_millis(300),
        transfer: 20 * 1000 * 1000,
        seed: Rng::from_clock().state(),
        out: PathBuf::from("results"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--kills" => o.kills = num(val()?)? as usize,
            "--backend" => {
                let v = val()?;
                o.backend = Backend::parse(&v).ok_or(format!("unknown backend {v}"))?;
            }
            "--mode" => {
                o.standby = match val()?.as_str() {
                    "standby" => true,
                    "supervise" => false,
                    m => return Err(format!("unknown mode {m} (standby or supervise)")),
                }
            }
            "--gap-ms" => o.gap = Duration::from_millis(num(val()?)?),
            "--transfer-mb" => o.transfer = num(val()?)?.max(1) * 1000 * 1000,
            "--seed" => o.seed = num(val()?)?,
            "--out" => o.out = PathBuf::from(val()?),
            "-h" | "--help" => {
                return Err("usage: recovery [--kills N] [--backend af_packet|af_xdp] \
                            [--mode standby|supervise] [--gap-ms MS] [--transfer-mb MB] \
                            [--seed N] [--out DIR]"
                    .into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.kills == 0 {
        return Err("--kills must be at least 1".into());
    }
    Ok(o)
}

/// The moment a kill is aimed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Moment {
    /// Anywhere in the traffic.
    Traffic,
    /// 0–20 ms after an app domain's spawn.
    AppAttaching,
    /// 0–2 ms after an attached app domain's SIGKILL.
    AppDying,
}

impl Moment {
    const ALL: [Self; 3] = [Self::Traffic, Self::AppAttaching, Self::AppDying];

    fn label(self) -> &'static str {
        match self {
            Self::Traffic => "mid-traffic (random moment)",
            Self::AppAttaching => "0-20 ms after an app's spawn (attaching)",
            Self::AppDying => "0-2 ms after an app's SIGKILL (detaching)",
        }
    }
}

/// One kill.
#[derive(Debug, Clone, Serialize)]
struct Kill {
    moment: Moment,
    /// From the SIGKILL to the first frame the new server forwarded.
    kill_to_first_ms: f64,
    /// From the SIGKILL to the new server's start (a spare's takeover).
    kill_to_start_ms: f64,
}

/// The transfers of one direction.
#[derive(Debug, Clone, Default, Serialize)]
struct Transfers {
    /// Connections that finished with matching hashes.
    completed: u64,
    /// Bytes those carried.
    bytes: u64,
    /// Connections that failed or did not finish in time.
    lost: u64,
    /// Connections that finished with a hash that does not match.
    corrupted: u64,
    /// Bytes those carried.
    corrupted_bytes: u64,
    /// What went wrong, first few.
    errors: Vec<String>,
}

impl Transfers {
    fn lost(&mut self, why: String) {
        self.lost += 1;
        self.note(why);
    }

    fn note(&mut self, why: String) {
        eprintln!("recovery: {why}");
        if self.errors.len() < 5 {
            self.errors.push(why);
        }
    }

    fn check(&mut self, bytes: u64, sent: &str, got: &str) {
        if sent == got {
            self.completed += 1;
            self.bytes += bytes;
        } else {
            self.corrupted += 1;
            self.corrupted_bytes += bytes;
            self.note(format!("hash mismatch: sent {sent}, received {got}"));
        }
    }
}

/// What `wrk` reported.
#[derive(Debug, Clone, Default, Serialize)]
struct Http {
    requests: u64,
    socket_errors: u64,
    non_2xx: u64,
    summary: String,
}

/// The `sha256 <hex>` of a `ferrite-bulk` report line of `role` (`sink` or `source`), in
/// order of appearance in `log`.
fn bulk_reports(log: &str, role: &str) -> Vec<(u64, String)> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(role)?.strip_prefix(": ")?;
            let bytes = rest.split_whitespace().next()?.parse().ok()?;
            let hash = rest.rsplit_once("sha256 ")?.1.trim().to_string();
            Some((bytes, hash))
        })
        .collect()
}

/// `wrk`'s totals: requests, socket errors (all kinds), non-2xx/3xx answers.
fn parse_wrk(out: &str) -> Http {
    let mut h = Http {
        summary: out
            .lines()
            .filter(|l| l.contains("requests in") || l.contains("errors") || l.contains("Non-2xx"))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; "),
        ..Http::default()
    };
    for l in out.lines().map(str::trim) {
        if l.contains("requests in") {
            h.requests = l
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = l.strip_prefix("Socket errors:") {
            h.socket_errors = rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            h.non_2xx = rest.trim().parse().unwrap_or(0);
        }
    }
    h
}

/// Waits for `bg` to exit; `None` when it has not within `limit` (then it is killed).
fn finish(bg: &mut Bg, limit: Duration) -> Option<i32> {
    let code = bg.wait_exit(limit);
    if code.is_none() {
        bg.kill();
    }
    code
}

/// Peer → app: `socat` sends `file` to the sink, one connection after another, until `stop`.
fn inbound(
    t: &Topology,
    sink: &Bg,
    ip: &str,
    file: &Path,
    want: &str,
    size: u64,
    stop: &AtomicBool,
) -> Transfers {
    let mut r = Transfers::default();
    let mut n = 0;
    // Connections the sink has seen through: its reports come in this order.
    let mut delivered = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut sender = Bg::spawn(
            &format!("in-{n}"),
            t.dir.path(),
            t.p.cmd("socat").args([
                "-u".to_string(),
                format!("OPEN:{}", file.display()),
                format!("TCP:{ip}:{SINK_PORT},bind={PEER_IP}"),
            ]),
        );
        match finish(&mut sender, TRANSFER_LIMIT) {
            Some(0) => {}
            code => {
                r.lost(format!("peer -> app {n}: socat {code:?}: {}", sender.log()));
                continue;
            }
        }
        delivered += 1;
        let mut got = None;
        let _ = netns::wait_until("the sink's report", Duration::from_secs(60), || {
            got = bulk_reports(&sink.log(), "sink")
                .get(delivered - 1)
                .cloned();
            got.is_some()
        });
        match got {
            Some((bytes, hash)) if bytes == size => r.check(bytes, want, &hash),
            Some((bytes, _)) => r.lost(format!("peer -> app {n}: the sink got {bytes} bytes")),
            None => {
                r.lost(format!("peer -> app {n}: no report from the sink"));
                // The sink's reports no longer line up with the transfers.
                break;
            }
        }
    }
    r
}

/// App → peer: a `ferrite-bulk` source domain, started for each connection, sends `size`
/// bytes to a hashing `socat` listener on the peer, until `stop`.
fn outbound(t: &Topology, srv: &Server, spec: &AppSpec, size: u64, stop: &AtomicBool) -> Transfers {
    let mut r = Transfers::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mut listener = Bg::spawn(
            &format!("out-peer-{n}"),
            t.dir.path(),
            t.p.cmd("sh").args([
                "-c".to_string(),
                format!(
                    "socat -u TCP-LISTEN:{PEER_PORT},bind={PEER_IP},reuseaddr STDOUT | sha256sum"
                ),
            ]),
        );
        let listening = netns::wait_until("the peer's listener", Duration::from_secs(10), || {
            let out =
                t.p.output(["ss", "-ltnH", "sport", &format!("= :{PEER_PORT}")]);
            !out.stdout.is_empty()
        });
        if let Err(e) = listening {
            r.lost(format!("app -> peer {n}: {e}"));
            listener.kill();
            continue;
        }
        let mut source = srv.app(
            "ferrite-bulk",
            spec,
            &[
                &format!("--connect={PEER_IP}:{PEER_PORT}"),
                &format!("--bytes={size}"),
                &format!("--seed={n}"),
            ],
        );
        let code = finish(&mut source, TRANSFER_LIMIT);
        let peer = finish(&mut listener, Duration::from_secs(30));
        let sent = bulk_reports(&source.log(), "source").pop();
        let got = listener.log().split_whitespace().next().map(str::to_string);
        match (code, sent, got) {
            (Some(0), Some((bytes, sent)), Some(got)) if peer == Some(0) => {
                r.check(bytes, &sent, &got);
            }
            (code, _, _) => r.lost(format!(
                "app -> peer {n}: source {code:?}, peer {peer:?}: {}",
                source.log().lines().last().unwrap_or("")
            )),
        }
    }
    r
}

struct Campaign {
    kills: Vec<Kill>,
    inbound: Transfers,
    outbound: Transfers,
    http: Http,
    seconds: f64,
}

fn run(o: &Opts) -> Result<Campaign, String> {
    let t = Topology::new(Offloads::Off, 1500);
    let sink_app = AppSpec::numbered("sink", 1);
    let source_app = AppSpec::numbered("source", 2);
    let web_app = AppSpec::numbered("web", 3);
    let churn_app = AppSpec::numbered("churn", 4);
    let apps = [
        sink_app.clone(),
        source_app.clone(),
        web_app.clone(),
        churn_app.clone(),
    ];
    let mut srv = Server::start(&t, o.backend, &apps);
    let mut sup = srv.supervise(o.standby)?;

    let file = t.dir.join("payload.bin");
    netns::write_pattern_file(&file, o.transfer, o.seed);
    let want = netns::sha256_file(&file);
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www).map_err(|e| format!("web root: {e}"))?;
    netns::write_pattern_file(&www.join("page.bin"), 16 * 1024, o.seed ^ 1);

    let sink = srv.app(
        "ferrite-bulk",
        &sink_app,
        &[&format!("--listen={SINK_PORT}")],
    );
    let root = www.to_string_lossy().into_owned();
    let web = srv.app("ferrite-http", &web_app, &["--root", &root, "--port", "80"]);
    for a in [&sink_app, &web_app] {
        netns::wait_reachable(&t, &a.ip, Duration::from_secs(20))
            .map_err(|e| format!("{e}; sink: {}; web: {}", sink.log(), web.log()))?;
    }
    let mut wrk = Bg::spawn(
        "wrk",
        t.dir.path(),
        t.p.cmd("wrk").args([
            "-t1",
            "-c4",
            "-d3600s",
            "--timeout",
            "10s",
            &format!("http://{}/page.bin", web_app.ip),
        ]),
    );

    let stop = AtomicBool::new(false);
    let failure = Mutex::new(None::<String>);
    let started = Instant::now();
    let (kills, inbound, outbound) = std::thread::scope(|s| {
        let stop = &stop;
        let t = &t;
        let srv_ref = &srv;
        let inb = s.spawn(|| inbound(t, &sink, &sink_app.ip, &file, &want, o.transfer, stop));
        let outb = s.spawn(|| outbound(t, srv_ref, &source_app, o.transfer, stop));
        let mut rng = Rng::new(o.seed);
        let mut kills = Vec::with_capacity(o.kills);
        let mut churn: Option<Bg> = None;
        // Traffic first.
        std::thread::sleep(Duration::from_secs(2));
        for i in 0..o.kills {
            let moment = Moment::ALL[i % Moment::ALL.len()];
            std::thread::sleep(rng.up_to(o.gap));
            let Some((old, _)) = stats(&srv.socket) else {
                *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("kill {}: no server answers", i + 1));
                break;
            };
            match moment {
                Moment::Traffic => {}
                Moment::AppAttaching => {
                    if let Some(mut c) = churn.take() {
                        c.kill();
                    }
                    churn = Some(srv.app("ferrite-echo", &churn_app, &["--port", "7"]));
                    std::thread::sleep(rng.up_to(ATTACH_WINDOW));
                }
                Moment::AppDying => {
                    if let Some(mut c) = churn.take() {
                        c.kill();
                    }
                    std::thread::sleep(rng.up_to(DYING_WINDOW));
                }
            }
            let back = kill_server(&srv.socket).and_then(|killed| {
                let (start, first) =
                    wait_first_frame(&srv.socket, old.instance, Duration::from_secs(30))?;
                Ok((killed, start, first))
            });
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            match back {
                Ok((killed, start, first)) => kills.push(Kill {
                    moment,
                    kill_to_first_ms: ms(first.saturating_duration_since(killed)),
                    kill_to_start_ms: ms(start.saturating_duration_since(killed)),
                }),
                Err(e) => {
                    *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(format!("kill {}: {e}", i + 1));
                    break;
                }
            }
            if (i + 1) % 50 == 0 || i + 1 == o.kills {
                let ms: Vec<f64> = kills.iter().map(|k| k.kill_to_first_ms).collect();
                eprintln!(
                    "recovery: {}/{} kills, {:.0} s, kill -> first frame p50 {:.1} ms p99 {:.1} ms",
                    i + 1,
                    o.kills,
                    started.elapsed().as_secs_f64(),
                    quantile(&ms, 0.5).unwrap_or(0.0),
                    quantile(&ms, 0.99).unwrap_or(0.0),
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        let inbound = inb.join().unwrap_or_default();
        let outbound = outb.join().unwrap_or_default();
        (kills, inbound, outbound)
    });
    wrk.signal("INT");
    let _ = finish(&mut wrk, Duration::from_secs(20));
    let http = parse_wrk(&wrk.log());
    let seconds = started.elapsed().as_secs_f64();
    sup.signal("TERM");
    let _ = sup.wait_exit(Duration::from_secs(20));
    if let Some(e) = failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(format!("{e}; supervisor log: {}", sup.log()));
    }
    Ok(Campaign {
        kills,
        inbound,
        outbound,
        http,
        seconds,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("recovery: {e}");
            std::process::exit(2);
        }
    };
    if netns::euid() != Some(0) {
        eprintln!("recovery: needs root to create network namespaces and veth pairs");
        std::process::exit(1);
    }
    for tool in [
        "ip",
        "ethtool",
        "taskset",
        "socat",
        "ss",
        "wrk",
        "sha256sum",
    ] {
        if !netns::have_tool(tool) {
            eprintln!("recovery: missing `{tool}`; run scripts/setup-system.sh");
            std::process::exit(1);
        }
    }
    let machine = Machine::detect();
    let c = match run(&o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("recovery: the campaign stopped: {e}");
            std::process::exit(1);
        }
    };

    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "n/a".into());
    let mut kt = Table::new([
        "kill aimed at",
        "kills",
        "kill -> first frame p50 ms",
        "p99 ms",
        "max ms",
        "of which kill -> new server p50 ms",
        "p99 ms",
    ]);
    let row = |label: &str, ks: &[&Kill]| {
        let first: Vec<f64> = ks.iter().map(|k| k.kill_to_first_ms).collect();
        let start: Vec<f64> = ks.iter().map(|k| k.kill_to_start_ms).collect();
        [
            label.to_string(),
            ks.len().to_string(),
            fmt(quantile(&first, 0.5)),
            fmt(quantile(&first, 0.99)),
            fmt(quantile(&first, 1.0)),
            fmt(quantile(&start, 0.5)),
            fmt(quantile(&start, 0.99)),
        ]
    };
    for m in Moment::ALL {
        let ks: Vec<&Kill> = c.kills.iter().filter(|k| k.moment == m).collect();
        kt.push(row(m.label(), &ks));
    }
    let all: Vec<&Kill> = c.kills.iter().collect();
    kt.push(row("all (goal: p99 < 20 ms)", &all));

    let mut ct = Table::new([
        "connections",
        "finished intact",
        "MB",
        "lost (goal 0)",
        "corrupted (goal 0)",
        "corrupted MB",
    ]);
    for (label, tr) in [
        ("peer -> app bulk (socat -> ferrite-bulk)", &c.inbound),
        ("app -> peer bulk (ferrite-bulk -> socat)", &c.outbound),
    ] {
        ct.push([
            label.to_string(),
            tr.completed.to_string(),
            format!("{:.0}", tr.bytes as f64 / 1e6),
            tr.lost.to_string(),
            tr.corrupted.to_string(),
            format!("{:.0}", tr.corrupted_bytes as f64 / 1e6),
        ]);
    }
    ct.push([
        "HTTP keep-alive (wrk -c4 -> ferrite-http)".to_string(),
        format!("{} requests", c.http.requests),
        "-".into(),
        format!("{} socket errors", c.http.socket_errors),
        format!("{} non-2xx", c.http.non_2xx),
        "-".into(),
    ]);

    let mode = if o.standby {
        "ferrite supervise --standby"
    } else {
        "ferrite supervise"
    };
    println!("{}\n", machine.summary());
    println!(
        "{} kills in {:.0} s, backend {}, restarted by {mode}\n",
        c.kills.len(),
        c.seconds,
        o.backend.as_str()
    );
    println!("{}\n", kt.to_text());
    println!("{}", ct.to_text());
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("recovery: cannot create {}: {e}", o.out.display());
        std::process::exit(1);
    }
    let json = serde_json::json!({
        "machine": machine,
        "backend": o.backend.as_str(),
        "restarted_by": mode,
        "seed": o.seed,
        "gap_ms": o.gap.as_secs_f64() * 1e3,
        "transfer_bytes": o.transfer,
        "seconds": c.seconds,
        "kills": c.kills,
        "peer_to_app": c.inbound,
        "app_to_peer": c.outbound,
        "http": c.http,
    });
    let md = format!(
        "# Kill campaign\n\n\
         Machine: {}\n\nCommand: `{}` (seed {})\n\n\
         {} SIGKILLs of the Ferrite server in {:.0} s (backend {}, restarted by {mode}; the \
         benchmark never restarts it). Through the campaign the Linux peer sends {} MB \
         pattern files to a `ferrite-bulk` sink domain one connection after another, a \
         `ferrite-bulk` source domain started afresh for each connection sends {} MB to a \
         hashing `socat` on the peer, `wrk` keeps 4 HTTP keep-alive connections busy on a \
         `ferrite-http` domain, and a `ferrite-echo` domain is started and killed. Kills wait a \
         random 0 to {} ms, then cycle through three moments: anywhere in the traffic, 0 to 20 \
         ms after an app domain's spawn, and 0 to 2 ms after an attached app domain's SIGKILL. \
         \"kill -> first frame\" runs from the SIGKILL to the first frame the new server \
         forwarded (its `ferrite stats` answer, on the monotonic clock the benchmark shares); \
         \"kill -> new server\" to the new server's start (the spare's takeover, from the same \
         answer's uptime), the rest being ports bound, apps reattached and traffic back. \
         A connection is lost when it fails or does not finish within {} s; corrupted when the \
         receiver's SHA-256 differs from the sender's.\n\n{}\n\n{}\n\nwrk: {}\n",
        machine.summary(),
        machine.command,
        o.seed,
        c.kills.len(),
        c.seconds,
        o.backend.as_str(),
        o.transfer / 1_000_000,
        o.transfer / 1_000_000,
        o.gap.as_millis(),
        TRANSFER_LIMIT.as_secs(),
        kt.to_markdown(),
        ct.to_markdown(),
        c.http.summary,
    );
    let write = |name: &str, text: String| {
        let p = o.out.join(name);
        match std::fs::write(&p, text) {
            Ok(()) => println!("wrote {}", p.display()),
            Err(e) => eprintln!("recovery: cannot write {}: {e}", p.display()),
        }
    };
    write(
        "recovery.json",
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    );
    write("recovery.md", md);
    let intact = c.inbound.lost
        + c.inbound.corrupted
        + c.outbound.lost
        + c.outbound.corrupted
        + c.http.socket_errors
        + c.http.non_2xx
        == 0;
    std::process::exit(if intact { 0 } else { 1 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_report_lines_give_bytes_and_hash_in_order() {
        let log = "info: starting\n\
                   sink: 20000000 bytes in 1.000 s, 0.160 Gbit/s, sha256 abc\n\
                   {\"role\":\"sink\"}\n\
                   sink: 5 bytes in 0.001 s, 0.040 Gbit/s, sha256 def\n\
                   source: 7 bytes in 0.001 s, 0.056 Gbit/s, sha256 123\n";
        assert_eq!(
            bulk_reports(log, "sink"),
            vec![(20_000_000, "abc".to_string()), (5, "def".to_string())]
        );
        assert_eq!(bulk_reports(log, "source"), vec![(7, "123".to_string())]);
    }

    #[test]
    fn wrk_totals_add_every_socket_error() {
        let out = "  4 threads and 4 connections\n\
                   12345 requests in 30.00s, 1.00MB read\n\
                   Socket errors: connect 1, read 2, write 3, timeout 4\n\
                   Non-2xx or 3xx responses: 5\n";
        let h = parse_wrk(out);
        assert_eq!((h.requests, h.socket_errors, h.non_2xx), (12345, 10, 5));
        assert_eq!(
            parse_wrk("  7 requests in 1.00s, 1KB read\n").socket_errors,
            0
        );
    }
}

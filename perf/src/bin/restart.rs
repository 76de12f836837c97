//! Kill to first forwarded frame (root; veth in test namespaces).
//!
//! The Linux peer streams TCP into a `ferrite-bulk` sink in an app domain; the benchmark
//! SIGKILLs the Ferrite server in the middle of the stream, at a random moment, `--restarts`
//! times per backend and mode, and the server comes back:
//!
//! - `harness`: the benchmark starts `ferrite serve` again itself, as soon as the old one is
//!   reaped;
//! - `supervise`: `ferrite supervise` notices the death and starts a new server;
//! - `standby`: `ferrite supervise --standby`: a warm spare, started and waiting on the
//!   server's lock, takes over the moment the server dies.
//!
//! For each kill it records, from the new server's `ferrite stats` answer (its uptime and its
//! first forwarded frame, both on its monotonic clock, which is the benchmark's), the time from
//! the kill to the first frame the new server forwarded, and the new server's own time from
//! its start to that frame. After the last kill the stream must still be moving (the same TCP
//! connection), or the row says it failed.
//!
//! Writes `results/restart.json` and `results/restart.md` and prints the table.
//!
//! Usage: `restart [--restarts N] [--out DIR] [--backends af_xdp,af_packet]
//! [--modes harness,supervise,standby] [--jitter-ms MS]` (root).
#![forbid(unsafe_code)]

#[path = "../../../apps/tests/netns/mod.rs"]
mod netns;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, Offloads, PEER_IP, Topology};
use perf::kill::{Rng, kill_server, quantile, stats, wait_first_frame};
use perf::report::{Machine, Table};
use serde::Serialize;

/// TCP port of the bulk sink.
const BULK_PORT: u16 = 5201;
/// Bytes acknowledged between restarts: the stream is moving when the server is killed.
const BETWEEN: u64 = 20 * 1000 * 1000;

/// How the server comes back after a kill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// The benchmark starts the server again.
    Harness,
    /// `ferrite supervise`.
    Supervise,
    /// `ferrite supervise --standby`.
    Standby,
}

impl Mode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "harness" => Some(Self::Harness),
            "supervise" => Some(Self::Supervise),
            "standby" => Some(Self::Standby),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Harness => "harness restarts it",
            Self::Supervise => "ferrite supervise",
            Self::Standby => "ferrite supervise --standby",
        }
    }
}

struct Opts {
    restarts: usize,
    out: PathBuf,
    backends: Vec<String>,
    modes: Vec<Mode>,
    jitter: Duration,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        restarts: 5,
        out: PathBuf::from("results"),
        backends: vec!["af_xdp".into(), "af_packet".into()],
        modes: vec![Mode::Harness, Mode::Supervise, Mode::Standby],
        jitter: Duration::from_millis(1000),
    };
    let list = |v: String| -> Vec<String> {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--restarts" => o.restarts = val()?.parse().map_err(|e| format!("--restarts: {e}"))?,
            "--out" => o.out = PathBuf::from(val()?),
            "--backends" => o.backends = list(val()?),
            "--modes" => {
                o.modes = list(val()?)
                    .iter()
                    .map(|m| Mode::parse(m).ok_or(format!("unknown mode {m}")))
                    .collect::<Result<_, _>>()?
            }
            "--jitter-ms" => {
                o.jitter =
                    Duration::from_millis(val()?.parse().map_err(|e| format!("--jitter-ms: {e}"))?)
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.restarts == 0 {
        return Err("--restarts must be at least 1".into());
    }
    Ok(o)
}

/// One backend's and mode's figures.
#[derive(Debug, Clone, Serialize)]
struct Row {
    backend: String,
    mode: Mode,
    /// Per kill: ms from the new server's start to its first forwarded frame.
    start_to_first_ms: Vec<f64>,
    /// Per kill: ms from the SIGKILL to the new server's first forwarded frame.
    kill_to_first_ms: Vec<f64>,
    /// Empty when every restart worked and the stream carried on.
    failure: String,
}

/// Bytes the peer's connection to `dst` has had acknowledged (from `ss -tin`).
fn bytes_acked(t: &Topology, dst: &str) -> Option<u64> {
    let out = t.p.output(["ss", "-tinH", "dst", dst]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("bytes_acked:"))
        .and_then(|v| v.parse().ok())
}

/// Who restarts the server.
enum Restarter {
    /// The benchmark, through the topology's server handle.
    Harness,
    /// `ferrite supervise` (the topology's own server stopped).
    Supervisor(Bg),
}

fn measure(
    backend: Backend,
    mode: Mode,
    restarts: usize,
    jitter: Duration,
    row: &mut Row,
) -> Result<(), String> {
    let t = Topology::new(Offloads::Off, 1500);
    let app = AppSpec::numbered("bulk", 1);
    let mut srv = Server::start(&t, backend, std::slice::from_ref(&app));
    let mut by = Restarter::Harness;
    if mode != Mode::Harness {
        by = Restarter::Supervisor(srv.supervise(mode == Mode::Standby)?);
    }
    let log = |by: &Restarter, srv: &Server| match by {
        Restarter::Harness => srv.log(),
        Restarter::Supervisor(b) => b.log(),
    };
    let sink = srv.app("ferrite-bulk", &app, &[&format!("--listen={BULK_PORT}")]);
    netns::wait_reachable(&t, &app.ip, Duration::from_secs(20))
        .map_err(|e| format!("{e}; app log: {}", sink.log()))?;
    let mut sender = Bg::spawn(
        "sender",
        t.dir.path(),
        t.p.cmd("socat").args([
            "-u".to_string(),
            "OPEN:/dev/zero".to_string(),
            format!("TCP:{}:{BULK_PORT},bind={PEER_IP}", app.ip),
        ]),
    );
    let moved = |from: u64, what: &str| {
        netns::wait_until(what, Duration::from_secs(60), || {
            bytes_acked(&t, &app.ip).is_some_and(|b| b >= from + BETWEEN)
        })
    };
    let mut rng = Rng::from_clock();
    let result = (|| {
        moved(0, "the stream to start")?;
        for i in 0..restarts {
            let before = bytes_acked(&t, &app.ip).unwrap_or(0);
            let (old, _) = stats(&srv.socket).ok_or("no stats from the running server")?;
            std::thread::sleep(rng.up_to(jitter));
            let killed = match &by {
                Restarter::Harness => {
                    let at = Instant::now();
                    srv.kill();
                    srv.restart();
                    at
                }
                Restarter::Supervisor(_) => kill_server(&srv.socket)?,
            };
            let (start, first) =
                wait_first_frame(&srv.socket, old.instance, Duration::from_secs(30))?;
            row.start_to_first_ms
                .push((first - start).as_secs_f64() * 1e3);
            row.kill_to_first_ms
                .push(first.saturating_duration_since(killed).as_secs_f64() * 1e3);
            moved(
                before,
                &format!("the stream to carry on after restart {}", i + 1),
            )?;
        }
        Ok(())
    })();
    sender.kill();
    if let Restarter::Supervisor(sup) = &mut by {
        sup.signal("TERM");
        let _ = sup.wait_exit(Duration::from_secs(20));
    }
    result.map_err(|e: String| {
        format!(
            "{e}; app log: {}; server log: {}",
            sink.log(),
            log(&by, &srv)
        )
    })
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().max_by(f64::total_cmp)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_opts(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("restart: {e}");
            std::process::exit(2);
        }
    };
    if netns::euid() != Some(0) {
        eprintln!("restart: needs root to create network namespaces and veth pairs");
        std::process::exit(1);
    }
    for tool in ["ip", "ethtool", "taskset", "socat", "ss"] {
        if !netns::have_tool(tool) {
            eprintln!("restart: missing `{tool}`; run scripts/setup-system.sh");
            std::process::exit(1);
        }
    }
    let machine = Machine::detect();
    let mut rows = Vec::new();
    for name in &o.backends {
        for &mode in &o.modes {
            let mut row = Row {
                backend: name.clone(),
                mode,
                start_to_first_ms: Vec::new(),
                kill_to_first_ms: Vec::new(),
                failure: String::new(),
            };
            let r = Backend::parse(name)
                .ok_or_else(|| format!("unknown backend {name}"))
                .and_then(|b| {
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        measure(b, mode, o.restarts, o.jitter, &mut row)
                    }))
                    .unwrap_or_else(|_| Err("setup failed (see above)".into()))
                });
            if let Err(e) = r {
                row.failure = e.lines().next().unwrap_or("").to_string();
            }
            eprintln!(
                "restart: {} restarted by {}: {} restarts measured{}",
                row.backend,
                row.mode.label(),
                row.kill_to_first_ms.len(),
                if row.failure.is_empty() {
                    String::new()
                } else {
                    format!(", failed: {}", row.failure)
                }
            );
            rows.push(row);
        }
    }

    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "n/a".into());
    let mut t = Table::new([
        "backend",
        "restarted by",
        "kills",
        "kill -> first frame p50 ms",
        "p99 ms",
        "max ms",
        "start -> first frame p50 ms",
        "note",
    ]);
    for r in &rows {
        let k = &r.kill_to_first_ms;
        t.push([
            r.backend.clone(),
            r.mode.label().to_string(),
            k.len().to_string(),
            fmt(quantile(k, 0.5)),
            fmt(quantile(k, 0.99)),
            fmt(max(k)),
            fmt(quantile(&r.start_to_first_ms, 0.5)),
            if r.failure.is_empty() {
                "the stream carried on after every kill".to_string()
            } else {
                format!("failed: {}", r.failure)
            },
        ]);
    }
    println!("{}\n", machine.summary());
    println!("{}", t.to_text());
    if let Err(e) = std::fs::create_dir_all(&o.out) {
        eprintln!("restart: cannot create {}: {e}", o.out.display());
        std::process::exit(1);
    }
    let json = serde_json::json!({
        "machine": machine,
        "restarts_per_row": o.restarts,
        "jitter_ms": o.jitter.as_secs_f64() * 1e3,
        "rows": rows,
    });
    let md = format!(
        "# Kill to first forwarded frame\n\n\
         Machine: {}\n\nCommand: `{}`\n\n\
         The Linux peer streams TCP (`socat` from `/dev/zero`) into a `ferrite-bulk` sink in an \
         app domain over veth; the Ferrite server (switch thread pinned to core 1) is SIGKILLed \
         {} times per row, each time once {} MB more have been acknowledged and after a \
         further random 0 to {} ms. It comes back in one of three ways: the benchmark starts \
         `ferrite serve` again as soon as the old one is reaped (\"harness restarts it\"), \
         `ferrite supervise` restarts it, or `ferrite supervise --standby`'s warm spare (started \
         beforehand, configuration loaded, blocked on the server's lock) takes over. \
         \"kill -> first frame\" runs from the SIGKILL to the first frame the new server \
         forwarded (taken from its `ferrite stats` answer: uptime and first frame, on the \
         monotonic clock the benchmark shares); \"start -> first frame\" is the new server's \
         own measure from the start of its `serve` (for a spare: from its takeover).\n\n{}",
        machine.summary(),
        machine.command,
        o.restarts,
        BETWEEN / 1_000_000,
        o.jitter.as_millis(),
        t.to_markdown(),
    );
    let json = serde_json::to_string_pretty(&json).unwrap_or_default();
    let files = [("restart.json", json.as_str()), ("restart.md", md.as_str())];
    if let Err(e) = perf::report::write_files(&o.out, &files) {
        eprintln!("restart: {e}");
        std::process::exit(1);
    }
}

//! Restart to first forwarded frame (root; veth in test namespaces).
//!
//! The Linux peer streams TCP into a `ferrite-bulk` sink in an app domain; the benchmark
//! SIGKILLs the Ferrite server in the middle of the stream and starts it again, `--restarts`
//! times per backend. For each restart it records the new server's own measure of the time
//! from its start to the first frame it forwarded (`ferrite stats`: "first frame forwarded"),
//! and the time from the kill to that frame. After the last restart the stream must still be
//! moving (the same TCP connection), or the backend's row says it failed.
//!
//! Writes `results/restart.json` and `results/restart.md` and prints the table.
//!
//! Usage: `restart [--restarts N] [--out DIR] [--backends af_xdp,af_packet]` (root).
#![forbid(unsafe_code)]

#[path = "../../../apps/tests/netns/mod.rs"]
mod netns;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, Offloads, PEER_IP, Topology};
use perf::report::{Machine, Table};
use serde::Serialize;

/// TCP port of the bulk sink.
const BULK_PORT: u16 = 5201;
/// Bytes acknowledged between restarts: the stream is moving when the server is killed.
const BETWEEN: u64 = 20 * 1000 * 1000;

struct Opts {
    restarts: usize,
    out: PathBuf,
    backends: Vec<String>,
}

fn parse_opts(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        restarts: 5,
        out: PathBuf::from("results"),
        backends: vec!["af_xdp".into(), "af_packet".into()],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--restarts" => o.restarts = val()?.parse().map_err(|e| format!("--restarts: {e}"))?,
            "--out" => o.out = PathBuf::from(val()?),
            "--backends" => {
                o.backends = val()?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.restarts == 0 {
        return Err("--restarts must be at least 1".into());
    }
    Ok(o)
}

/// One backend's figures.
#[derive(Debug, Clone, Serialize)]
struct Row {
    backend: String,
    /// Per restart: ms from the new server's start to its first forwarded frame.
    start_to_first_ms: Vec<f64>,
    /// Per restart: ms from the SIGKILL to the new server's first forwarded frame.
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

fn measure(backend: Backend, restarts: usize, row: &mut Row) -> Result<(), String> {
    let t = Topology::new(Offloads::Off, 1500);
    let app = AppSpec::numbered("bulk", 1);
    let mut srv = Server::start(&t, backend, std::slice::from_ref(&app));
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
    let result = (|| {
        moved(0, "the stream to start")?;
        for i in 0..restarts {
            let before = bytes_acked(&t, &app.ip).unwrap_or(0);
            srv.kill();
            let killed = Instant::now();
            let started = srv.restart();
            let first = srv.wait_first_frame(Duration::from_secs(30));
            row.start_to_first_ms.push(first.as_secs_f64() * 1e3);
            row.kill_to_first_ms
                .push((started.duration_since(killed) + first).as_secs_f64() * 1e3);
            moved(
                before,
                &format!("the stream to carry on after restart {}", i + 1),
            )?;
        }
        Ok(())
    })();
    sender.kill();
    result.map_err(|e: String| format!("{e}; app log: {}", sink.log()))
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied()
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
        let mut row = Row {
            backend: name.clone(),
            start_to_first_ms: Vec::new(),
            kill_to_first_ms: Vec::new(),
            failure: String::new(),
        };
        let r = Backend::parse(name)
            .ok_or_else(|| format!("unknown backend {name}"))
            .and_then(|b| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    measure(b, o.restarts, &mut row)
                }))
                .unwrap_or_else(|_| Err("setup failed (see above)".into()))
            });
        if let Err(e) = r {
            row.failure = e.lines().next().unwrap_or("").to_string();
        }
        eprintln!("{row:?}");
        rows.push(row);
    }

    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "n/a".into());
    let mut t = Table::new([
        "backend",
        "restarts",
        "start -> first frame, median ms",
        "max ms",
        "kill -> first frame, median ms",
        "max ms",
        "goal",
        "note",
    ]);
    for r in &rows {
        t.push([
            r.backend.clone(),
            r.start_to_first_ms.len().to_string(),
            fmt(median(&r.start_to_first_ms)),
            fmt(max(&r.start_to_first_ms)),
            fmt(median(&r.kill_to_first_ms)),
            fmt(max(&r.kill_to_first_ms)),
            "< 100 ms (start -> first frame)".to_string(),
            if r.failure.is_empty() {
                "the stream carried on after every restart".to_string()
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
        "restarts_per_backend": o.restarts,
        "rows": rows,
    });
    let md = format!(
        "# Restart to first forwarded frame\n\n\
         Machine: {}\n\nCommand: `{}`\n\n\
         The Linux peer streams TCP (`socat` from `/dev/zero`) into a `ferrite-bulk` sink in an \
         app domain over veth; the Ferrite server (switch thread pinned to core 1) is SIGKILLed \
         and started again {} times per backend, with {} MB acknowledged between restarts. \
         \"start -> first frame\" is the new server's own measure (from its start to the first \
         frame it forwarded, `ferrite stats`); \"kill -> first frame\" adds the time from the \
         kill to the new process's spawn (the harness waits for nothing in between).\n\n{}",
        machine.summary(),
        machine.command,
        o.restarts,
        BETWEEN / 1_000_000,
        t.to_markdown(),
    );
    let json = serde_json::to_string_pretty(&json).unwrap_or_default();
    let files = [("restart.json", json.as_str()), ("restart.md", md.as_str())];
    if let Err(e) = perf::report::write_files(&o.out, &files) {
        eprintln!("restart: {e}");
        std::process::exit(1);
    }
}

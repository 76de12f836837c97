//! End to end over the real server process, unprivileged: the `ferrite` server on its
//! in-memory port, app domains as separate processes attached over its control socket.
//!
//! - TCP bulk of 20 MB from one app to another through the switch: the sink's SHA-256 equals
//!   the source's, and the byte counts match;
//! - UDP ping-pong in sockperf's format between two apps: every round trip answered;
//! - restart: the server is SIGKILLed in the middle of a transfer and started again; the same
//!   TCP connection completes and the hashes match. The apps' reconnect time (loss noticed →
//!   connected to the new server) and the time from the restart to bytes flowing again are
//!   printed.
//!
//! When the server binary cannot be built these tests say so and pass, unless
//! `FERRITE_E2E=1`, where a missing prerequisite is a failure.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Proc {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        for out in [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    fn log(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }

    /// Waits for the process to exit; its exit status code.
    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the readers catch up with the last lines.
                std::thread::sleep(Duration::from_millis(50));
                self.drain();
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("stopping {}", self.name);
            self.kill();
        }
    }
}

fn required() -> bool {
    std::env::var_os("FERRITE_E2E").is_some()
}

/// The server binary, built on demand next to this test's binaries.
fn server_bin() -> Option<PathBuf> {
    let bulk = PathBuf::from(env!("CARGO_BIN_EXE_ferrite-bulk"));
    let dir = bulk.parent()?.to_path_buf();
    let p = dir.join("ferrite");
    if p.is_file() {
        return Some(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-q", "-p", "switch", "--bin", "ferrite"]);
    // The profile this binary was built with: its directory's name (`debug` is `dev`).
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        None | Some("debug") => "dev",
        Some(name) => name,
    };
    c.args(["--profile", profile]);
    if let Some(t) = dir.parent() {
        c.env("CARGO_TARGET_DIR", t);
    }
    let ok = c.status().is_ok_and(|s| s.success());
    (ok && p.is_file()).then_some(p)
}

struct Server {
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    dir: PathBuf,
    proc: Option<Proc>,
}

const APPS: [(&str, &str, &str); 2] = [
    ("e2e-a", "02:fe:00:00:77:0a", "10.88.0.10/24"),
    ("e2e-b", "02:fe:00:00:77:0b", "10.88.0.11/24"),
];

impl Server {
    fn start(tag: &str) -> Option<Server> {
        let Some(bin) = server_bin() else {
            assert!(
                !required(),
                "FERRITE_E2E is set but the server binary could not be built"
            );
            eprintln!("skipping: the `ferrite` server binary could not be built");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("ferrite-e2e-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let socket = dir.join("ctl.sock");
        let uid = rustix::process::getuid().as_raw();
        let mut t = format!("[server]\nsocket = {socket:?}\nsocket_mode = \"0600\"\n\n");
        t.push_str("[[ports]]\nname = \"sim0\"\nbackend = \"sim\"\ngenerate = false\n\n");
        for (name, mac, _) in APPS {
            t.push_str(&format!(
                "[[apps]]\nname = \"{name}\"\nmac = \"{mac}\"\nuid = {uid}\n\n"
            ));
        }
        let config = dir.join("ferrite.toml");
        std::fs::write(&config, t).expect("config");
        let mut s = Server {
            bin,
            config,
            socket,
            dir,
            proc: None,
        };
        s.launch();
        Some(s)
    }

    fn launch(&mut self) -> Instant {
        let _ = std::fs::remove_file(&self.socket);
        let at = Instant::now();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve").arg("--config").arg(&self.config);
        let mut p = Proc::spawn("server", &mut cmd);
        while !self.socket.exists() {
            assert!(
                at.elapsed() < Duration::from_secs(10),
                "no control socket after 10 s; server log:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.proc = Some(p);
        at
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    fn log(&mut self) -> String {
        self.proc.as_mut().map(Proc::log).unwrap_or_default()
    }

    /// Milliseconds from the running server's start to its first forwarded frame, from its
    /// log line `first frame forwarded ... ms=N`.
    fn first_frame_ms(&mut self) -> Option<f64> {
        let log = strip_ansi(&self.log());
        log.lines()
            .find(|l| l.contains("first frame forwarded"))
            .and_then(|l| l.split("ms=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    fn app(&self, bin: &str, which: usize, args: &[&str]) -> Proc {
        let (name, mac, ip) = APPS[which];
        let mut cmd = Command::new(bin);
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(["--name", name, "--mac", mac, "--ip", ip])
            .args(args);
        Proc::spawn(name, &mut cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\u{1b}' {
            for d in it.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sha_of(log: &str, role: &str) -> Option<(u64, String)> {
    let l = log.lines().find(|l| l.starts_with(&format!("{role}: ")))?;
    let bytes = l.split_whitespace().nth(1)?.parse().ok()?;
    let sha = l.rsplit(' ').next()?.to_string();
    Some((bytes, sha))
}

/// A counter from the device statistics an app prints when it ends (`"name":value`).
fn device_counter(log: &str, name: &str) -> Option<u64> {
    let at = log.rfind(&format!("\"{name}\":"))? + name.len() + 3;
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

const BULK: &str = env!("CARGO_BIN_EXE_ferrite-bulk");
const SOCKPERF: &str = env!("CARGO_BIN_EXE_ferrite-sockperf");

/// A gigabyte from one app to another through the switch, sha256 intact, in TCP segments
/// of up to 64 KiB both ways through the rings (the apps' default buffers).
#[test]
fn a_gigabyte_between_two_apps_goes_in_large_segments() {
    let Some(srv) = Server::start("gigabyte") else {
        return;
    };
    let total: u64 = 1 << 30;
    let mut sink = srv.app(BULK, 0, &["--listen=5001", "--once"]);
    let mut src = srv.app(
        BULK,
        1,
        &["--connect=10.88.0.10:5001", &format!("--bytes={total}")],
    );
    let code = src.wait(Duration::from_secs(240));
    assert_eq!(
        code,
        Some(0),
        "source failed:\n{}\nsink:\n{}",
        src.log(),
        sink.log()
    );
    assert_eq!(
        sink.wait(Duration::from_secs(30)),
        Some(0),
        "{}",
        sink.log()
    );
    let sent = sha_of(&src.log(), "source").expect("source report");
    assert_eq!(sent.0, total);
    assert_eq!(sha_of(&sink.log(), "sink"), Some(sent));
    let (src_log, sink_log) = (src.log(), sink.log());
    let gso = device_counter(&src_log, "tx_gso").expect("source device stats");
    let frames = device_counter(&sink_log, "rx_frames").expect("sink device stats");
    let bytes = device_counter(&sink_log, "rx_bytes").expect("sink device stats");
    assert!(gso > 0, "the source sent no large segment:\n{src_log}");
    assert!(
        bytes / frames.max(1) > 8192,
        "the sink got {frames} frames for {bytes} bytes: not large segments"
    );
}

#[test]
fn bulk_and_ping_pong_between_two_apps_through_the_server() {
    let Some(mut srv) = Server::start("bulk") else {
        return;
    };
    let total: u64 = 20_000_000;
    let mut sink = srv.app(BULK, 0, &["--listen=5001", "--once"]);
    let mut src = srv.app(
        BULK,
        1,
        &["--connect=10.88.0.10:5001", &format!("--bytes={total}")],
    );
    let code = src.wait(Duration::from_secs(60));
    assert_eq!(
        code,
        Some(0),
        "source failed:\n{}\nsink:\n{}\nserver:\n{}",
        src.log(),
        sink.log(),
        srv.log()
    );
    assert_eq!(
        sink.wait(Duration::from_secs(20)),
        Some(0),
        "sink:\n{}",
        sink.log()
    );
    let sent = sha_of(&src.log(), "source").expect("source report");
    let got = sha_of(&sink.log(), "sink").expect("sink report");
    assert_eq!(sent.0, total);
    assert_eq!(got, sent, "what arrived differs from what was sent");
    eprintln!(
        "bulk: {}",
        sink.seen
            .iter()
            .find(|l| l.starts_with("sink: "))
            .cloned()
            .unwrap_or_default()
    );

    let mut resp = srv.app(SOCKPERF, 0, &["--port=11111"]);
    // Start measuring once the responder is attached (its first log line comes after).
    let t = Instant::now();
    while !resp.log().contains("sockperf responder on UDP port") {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "responder not up:\n{}",
            resp.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut cli = srv.app(
        SOCKPERF,
        1,
        &[
            "--client=10.88.0.10:11111",
            "--rounds=2000",
            "--warmup=100",
            "--port=40000",
            // A loaded machine can stall a process for a while: slow is measured, only a
            // datagram that never comes back is lost.
            "--timeout-ms=3000",
        ],
    );
    assert_eq!(
        cli.wait(Duration::from_secs(60)),
        Some(0),
        "client:\n{}",
        cli.log()
    );
    let log = cli.log();
    let line = log
        .lines()
        .find(|l| l.starts_with("round trip over"))
        .unwrap_or_else(|| panic!("no result line:\n{log}"));
    eprintln!("ping-pong: {line}");
    assert!(line.contains("over 2000 samples (0 lost)"), "{line}");
}

#[test]
fn a_tcp_transfer_survives_a_server_kill_and_restart() {
    let Some(mut srv) = Server::start("restart") else {
        return;
    };
    let total: u64 = 300_000_000;
    let mut sink = srv.app(
        BULK,
        0,
        &["--listen=5001", "--once", "--progress", "--progress-ms=20"],
    );
    let mut src = srv.app(
        BULK,
        1,
        &["--connect=10.88.0.10:5001", &format!("--bytes={total}")],
    );
    // Kill once some tens of MB have arrived.
    let t = Instant::now();
    let mut before = 0u64;
    while before < 30_000_000 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no progress:\n{}\n{}",
            sink.log(),
            src.log()
        );
        if let Ok(l) = sink.lines.recv_timeout(Duration::from_millis(100)) {
            if let Some(b) = l
                .strip_prefix("progress ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
            {
                before = b;
            }
            sink.seen.push(l);
        }
    }
    srv.kill();
    let killed = Instant::now();
    // Nothing can flow while the server is down.
    std::thread::sleep(Duration::from_millis(200));
    let restarted = srv.launch();
    // Time until the sink's byte count moves again.
    let mut resumed = None;
    let mut last = before;
    while resumed.is_none() && restarted.elapsed() < Duration::from_secs(60) {
        if let Ok(l) = sink.lines.recv_timeout(Duration::from_millis(100)) {
            if let Some(b) = l
                .strip_prefix("progress ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                if b > last && Instant::now() > restarted {
                    resumed = Some(restarted.elapsed());
                }
                last = b;
            }
            sink.seen.push(l);
        }
        if sink.child.try_wait().ok().flatten().is_some() {
            resumed.get_or_insert(restarted.elapsed());
        }
    }
    assert_eq!(
        src.wait(Duration::from_secs(120)),
        Some(0),
        "source failed:\n{}\nsink:\n{}\nserver:\n{}",
        src.log(),
        sink.log(),
        srv.log()
    );
    assert_eq!(
        sink.wait(Duration::from_secs(30)),
        Some(0),
        "sink:\n{}",
        sink.log()
    );
    let sent = sha_of(&src.log(), "source").expect("source report");
    let got = sha_of(&sink.log(), "sink").expect("sink report");
    assert_eq!(sent.0, total);
    assert_eq!(got, sent, "the transfer across the restart differs");
    // The restarted server's own measure: its start to its first forwarded frame.
    let first_frame_ms = srv.first_frame_ms();
    let outage = |log: &str| {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["domain"]["last_outage_ms"].as_u64())
    };
    eprintln!(
        "restart: killed at {} MB received; server down {:?}; first frame forwarded {:?} ms \
         after the restarted server started (its log); bytes flowing again {:?} after the \
         restart; apps reconnected {:?} ms (sink) / {:?} ms (source) after noticing the loss",
        before / 1_000_000,
        restarted.duration_since(killed),
        first_frame_ms,
        resumed,
        outage(&sink.log()),
        outage(&src.log()),
    );
    assert!(
        resumed.is_some(),
        "bytes never flowed again after the restart"
    );
}

//! Shared harness for the privileged end-to-end tests: network namespaces, veth pairs, commands
//! inside namespaces, background processes with guaranteed cleanup, bounded waits and file
//! digests.
//!
//! Every test builds its own topology and tears it down on drop, even when it panics:
//!
//! ```text
//!   namespace fe<pid>-<n>-p            namespace fe<pid>-<n>-s
//!   ┌──────────────────────┐           ┌──────────────────────────────┐
//!   │ vp  10.77.0.1/24     │◄── veth ─►│ vf (no address; the Ferrite  │
//!   │ ping, curl, sockperf │           │ server's af_xdp/af_packet    │
//!   └──────────────────────┘           │ port, or a kernel socket)    │
//!                                      └──────────────────────────────┘
//! ```
//!
//! The veth ends are created directly inside their namespaces, so the short names `vp` and `vf`
//! never meet in the root namespace and never collide between tests running in parallel; the
//! namespace names carry the process id and a counter. Addresses live only inside those
//! namespaces.
//!
//! Prerequisites (root, tools) are checked by [`ready`]: without them a test prints why and
//! returns early, unless `FERRITE_E2E` is set (CI), in which case a missing prerequisite fails
//! the test.
#![allow(dead_code)]

pub mod ferrite;

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The peer's address inside the test's own namespace.
pub const PEER_IP: &str = "10.77.0.1";
/// The kernel-socket address in the server namespace (Linux baseline only).
pub const KERNEL_IP: &str = "10.77.0.2";
/// Prefix length of the test subnet.
pub const PREFIX: u8 = 24;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<tag><pid>-<n>`.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{}-{n}", std::process::id())
}

/// Whether `FERRITE_E2E` asks for a strict run (missing prerequisites fail).
pub fn strict() -> bool {
    std::env::var_os("FERRITE_E2E").is_some_and(|v| !v.is_empty() && v != "0")
}

/// The effective user id of this process, from `/proc/self/status`.
pub fn euid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `tool` is an executable on `PATH` (or in the sbin directories root uses).
pub fn have_tool(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .any(|d| d.join(tool).is_file())
}

/// Checks that the test can run: root and every tool in `tools`. Returns `false` (after saying
/// why) when it cannot and `FERRITE_E2E` is unset; panics when it cannot and `FERRITE_E2E` is
/// set.
pub fn ready(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if euid() != Some(0) {
        missing.push("root (id -u must be 0 to create network namespaces)".to_string());
    }
    for t in tools {
        if !have_tool(t) {
            missing.push(format!(
                "the `{t}` tool (scripts/setup-system.sh installs it)"
            ));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("{test}: missing {}", missing.join(", "));
    if strict() {
        panic!("{why}; FERRITE_E2E is set, so this is a failure");
    }
    eprintln!("skipping {why} (set FERRITE_E2E=1 to make this a failure)");
    false
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ip` with these arguments, panicking on failure.
pub fn ip<I, S>(args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args));
}

/// A network namespace, deleted on drop (with every interface and process-less socket in it).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `<unique>-<role>` with its loopback up.
    pub fn new(base: &str, role: &str) -> Self {
        let name = format!("{base}-{role}");
        ip(["netns", "add", &name]);
        let ns = Self { name };
        ns.run(["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `prog` inside this namespace.
    pub fn cmd(&self, prog: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(prog);
        c
    }

    /// A command that runs `prog` inside this namespace pinned to `core` (via `taskset`).
    pub fn cmd_on(&self, core: usize, prog: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .args(["taskset", "-c", &core.to_string()])
            .arg(prog);
        c
    }

    /// Runs `args` (program first) inside the namespace, panicking on failure.
    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = args.into_iter();
        let prog = it.next().expect("a program to run");
        let mut c = self.cmd(prog);
        c.args(it);
        run(&mut c)
    }

    /// Runs `args` inside the namespace and returns its output whatever the exit status.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = args.into_iter();
        let prog = it.next().expect("a program to run");
        let mut c = self.cmd(prog);
        c.args(it).stdin(Stdio::null());
        let shown = format!("{c:?}");
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes started with `ip netns exec` are killed by their own guards first (they
        // are declared after the namespaces, so they drop before them).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Offload settings applied to a veth end with `ethtool -K`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offloads {
    /// TSO, GSO, GRO and tx/rx checksum offload off: every frame on the wire is a real,
    /// checksummed frame of at most the MTU.
    Off,
    /// The veth defaults (TSO/GSO and checksum offload on, GRO on).
    On,
}

impl Offloads {
    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Offloads::Off => "off",
            Offloads::On => "on",
        }
    }
}

/// Applies `o` to `dev` inside `ns`.
pub fn set_offloads(ns: &Netns, dev: &str, o: Offloads) {
    let v = match o {
        Offloads::Off => "off",
        Offloads::On => "on",
    };
    ns.run([
        "ethtool", "-K", dev, "tso", v, "gso", v, "gro", v, "tx", v, "rx", v, "sg", v,
    ]);
}

/// The two-namespace veth topology of every end-to-end test: the Linux peer namespace `p`
/// (veth end `vp`, address [`PEER_IP`]) and the server namespace `s` (veth end `vf`).
pub struct Topology {
    /// Unique base name (namespaces are `<base>-p` and `<base>-s`).
    pub base: String,
    /// The Linux peer's namespace.
    pub p: Netns,
    /// The server's namespace.
    pub s: Netns,
    /// Scratch directory for configs, sockets, logs and files; removed on drop.
    pub dir: TempDir,
}

/// The peer's veth end (in `p`).
pub const VP: &str = "vp";
/// The server's veth end (in `s`).
pub const VF: &str = "vf";

impl Topology {
    /// Creates both namespaces and the veth pair `vp`/`vf` with `mtu`, both ends up, the peer
    /// addressed, offloads set on both ends. `vf` gets no address: a Ferrite port owns it.
    pub fn new(offloads: Offloads, mtu: u32) -> Self {
        let base = unique("fe");
        let dir = TempDir::new(&base);
        let p = Netns::new(&base, "p");
        let s = Netns::new(&base, "s");
        ip([
            "link",
            "add",
            VP,
            "netns",
            p.name(),
            "type",
            "veth",
            "peer",
            "name",
            VF,
            "netns",
            s.name(),
        ]);
        let mtu = mtu.to_string();
        p.run(["ip", "link", "set", "dev", VP, "mtu", &mtu, "up"]);
        s.run(["ip", "link", "set", "dev", VF, "mtu", &mtu, "up"]);
        p.run([
            "ip",
            "addr",
            "add",
            &format!("{PEER_IP}/{PREFIX}"),
            "dev",
            VP,
        ]);
        set_offloads(&p, VP, offloads);
        set_offloads(&s, VF, offloads);
        Self { base, p, s, dir }
    }

    /// Gives `vf` a kernel address ([`KERNEL_IP`]) for the Linux baseline.
    pub fn address_kernel_side(&self) {
        self.s.run([
            "ip",
            "addr",
            "add",
            &format!("{KERNEL_IP}/{PREFIX}"),
            "dev",
            VF,
        ]);
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac_of(ns: &Netns, dev: &str) -> String {
        let out = ns.run(["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/<name>`.
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(name);
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {path:?}: {e}"));
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("FERRITE_E2E_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A background process whose output goes to a log file; killed (SIGKILL) and reaped on drop.
pub struct Bg {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Bg {
    /// Spawns `cmd`, stdout and stderr appended to `<dir>/<name>.log`.
    pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Self {
        let log = dir.join(format!("{name}.log"));
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {log:?}: {e}"));
        let f2 = f.try_clone().expect("clone log file handle");
        let shown = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({shown}): {e}"));
        Self {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file's path.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (a `kill -s` name such as `INT` or `TERM`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code (`None` when it
    /// was killed by a signal), or panics with the log when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut().expect("process already reaped");
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not finish within {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for `needle` to appear in the log; panics with the log otherwise
    /// (or as soon as the process exits without printing it).
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) -> String {
        let what = format!("{} to log {needle:?}", self.name);
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            if !self.alive() {
                panic!(
                    "{} exited before logging {needle:?}; log:\n{log}",
                    self.name
                );
            }
            if Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting for {what}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; `Err` names what was awaited.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sha256 of a file, hex, computed by `sha256sum`.
pub fn sha256_file(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Writes `len` deterministic pseudo-random bytes (xorshift64 from `seed`) to `path`.
pub fn write_pattern_file(path: &Path, len: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        fs::File::create(path).unwrap_or_else(|e| panic!("cannot create {path:?}: {e}")),
    );
    let mut x = seed | 1;
    let mut block = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write pattern file");
        left -= n as u64;
    }
    f.flush().expect("flush pattern file");
}

/// The directory cargo puts this build's binaries in (`target/<profile>`), from the running
/// test executable (`target/<profile>/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary directory");
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("profile directory").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The path of workspace binary `name` from package `package`, built on demand (with the same
/// profile as this test) when it is not there yet.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let dir = bin_dir();
    let path = dir.join(name);
    if path.is_file() {
        return path;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-p", package, "--bin", name]);
    // The profile this binary was built with: its directory's name (`debug` is `dev`).
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        None | Some("debug") => "dev",
        Some(name) => name,
    };
    c.args(["--profile", profile]);
    if let Some(target) = dir.parent() {
        c.env("CARGO_TARGET_DIR", target);
    }
    run(&mut c);
    assert!(path.is_file(), "building {name} did not produce {path:?}");
    path
}

/// Parses sockperf's client summary: `(latency p50, latency p99, received messages)`, latencies
/// in microseconds as sockperf reports them (half the round trip).
pub fn parse_sockperf(out: &str) -> Option<(f64, f64, u64)> {
    let pct = |p: &str| -> Option<f64> {
        out.lines()
            .find(|l| l.contains(&format!("percentile {p} =")))
            .and_then(|l| l.rsplit('=').next())
            .and_then(|v| v.trim().parse().ok())
    };
    let received = out
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .and_then(|l| l.split("ReceivedMessages=").nth(1))
        .and_then(|v| {
            v.trim()
                .trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })?;
    Some((pct("50.000")?, pct("99.000")?, received))
}

/// Parses ping's summary line: `(transmitted, received)`.
pub fn parse_ping(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(',')
        .map(|part| part.split_whitespace().next().and_then(|n| n.parse().ok()));
    Some((nums.next()??, nums.next()??))
}

/// Waits until `ip` answers a ping from the peer namespace (at most `timeout`).
pub fn wait_reachable(t: &Topology, ip: &str, timeout: Duration) -> Result<(), String> {
    wait_until(&format!("{ip} to answer ping"), timeout, || {
        t.p.output(["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
    })
}

/// `socat` in the peer namespace sending `file` from [`PEER_IP`] to `ip:port`, then exiting.
pub fn peer_send_file(t: &Topology, file: &Path, ip: &str, port: u16) -> Bg {
    Bg::spawn(
        "sender",
        t.dir.path(),
        t.p.cmd("socat").args([
            "-u".to_string(),
            format!("OPEN:{}", file.display()),
            format!("TCP:{ip}:{port},bind={PEER_IP}"),
        ]),
    )
}

/// `socat` in the peer namespace taking one connection on [`PEER_IP`]`:port` and writing what
/// arrives to `out`.
pub fn peer_receive_file(t: &Topology, out: &Path, port: u16) -> Bg {
    Bg::spawn(
        "peer-sink",
        t.dir.path(),
        t.p.cmd("socat").args([
            "-u".to_string(),
            format!("TCP-LISTEN:{port},bind={PEER_IP},reuseaddr"),
            format!("CREATE:{}", out.display()),
        ]),
    )
}

/// The SHA-256 a `ferrite-bulk` source reported in its log (`source: ... sha256 <hex>`).
pub fn source_sha256(log: &str) -> Option<String> {
    log.lines()
        .find(|l| l.starts_with("source: "))
        .and_then(|l| l.rsplit("sha256 ").next().map(|s| s.trim().to_string()))
}

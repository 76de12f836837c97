//! The Ferrite side of a topology: the `ferrite` server in the server namespace with one port
//! on `vf` (`af_xdp` or `af_packet`), app domains as processes attached over its control
//! socket, and the server's counters.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Bg, Topology, VF};

/// Core the server's poll loop is pinned to (the serving side of the 2-core machine).
pub const SERVER_CORE: usize = 1;

/// The port backend on `vf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// AF_XDP sockets (copy mode on veth).
    AfXdp,
    /// PACKET_MMAP.
    AfPacket,
}

impl Backend {
    /// The name the server's configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::AfXdp => "af_xdp",
            Backend::AfPacket => "af_packet",
        }
    }

    /// Parses a configuration name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "af_xdp" => Some(Backend::AfXdp),
            "af_packet" => Some(Backend::AfPacket),
            _ => None,
        }
    }
}

/// An app domain the server admits: name, MAC and (for the app itself) its IPv4 address.
#[derive(Debug, Clone)]
pub struct AppSpec {
    /// Name said in the handshake.
    pub name: String,
    /// MAC, `02:fe:00:00:00:NN`.
    pub mac: String,
    /// IPv4 address inside the test subnet.
    pub ip: String,
}

impl AppSpec {
    /// App number `n` (1..=200): MAC `02:fe:00:00:00:<n>`, address `10.77.0.<10+n>`.
    pub fn numbered(name: &str, n: u8) -> Self {
        Self {
            name: name.to_string(),
            mac: format!("02:fe:00:00:00:{n:02x}"),
            ip: format!("10.77.0.{}", 10 + u32::from(n)),
        }
    }
}

/// A running (or killed) Ferrite server and its configuration.
pub struct Server {
    /// The `ferrite` binary.
    pub bin: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The backend of the `vf` port.
    pub backend: Backend,
    ns: String,
    dir: PathBuf,
    starts: u32,
    proc: Option<Bg>,
}

impl Server {
    /// Writes a configuration admitting `apps` (uid 0) and starts the server in `t.s`, pinned
    /// to [`SERVER_CORE`]; returns once its control socket answers.
    pub fn start(t: &Topology, backend: Backend, apps: &[AppSpec]) -> Self {
        let bin = super::workspace_bin("switch", "ferrite");
        let config = t.dir.join("ferrite.toml");
        let socket = t.dir.join("ferrite.sock");
        let mut toml = String::new();
        let _ = writeln!(toml, "[control]\nsocket = {:?}\nmode = 0o600\n", socket);
        let _ = writeln!(
            toml,
            "[[port]]\nname = \"{VF}\"\nbackend = \"{}\"\ninterface = \"{VF}\"\n",
            backend.as_str()
        );
        for a in apps {
            let _ = writeln!(
                toml,
                "[[app]]\nname = \"{}\"\nmac = \"{}\"\nuid = 0\n",
                a.name, a.mac
            );
        }
        std::fs::write(&config, toml).expect("write server configuration");
        let mut s = Self {
            bin,
            config,
            socket,
            backend,
            ns: t.s.name().to_string(),
            dir: t.dir.path().to_path_buf(),
            starts: 0,
            proc: None,
        };
        s.launch();
        s
    }

    /// Starts the server process; returns the instant it was spawned, once the control
    /// socket answers a stats request.
    fn launch(&mut self) -> Instant {
        let _ = std::fs::remove_file(&self.socket);
        self.starts += 1;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .args(["taskset", "-c", &SERVER_CORE.to_string()])
            .arg(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info");
        let at = Instant::now();
        let mut bg = Bg::spawn(&format!("ferrite-{}", self.starts), &self.dir, &mut cmd);
        let ok = super::wait_until("the control socket", Duration::from_secs(10), || {
            self.socket.exists() && self.try_stats().is_some()
        });
        if let Err(e) = ok {
            let alive = bg.alive();
            panic!(
                "ferrite server not ready: {e} (alive: {alive}); log:\n{}",
                bg.log()
            );
        }
        self.proc = Some(bg);
        at
    }

    /// SIGKILLs the server (no cleanup on its side).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts the server again after [`Server::kill`]; returns the instant it was spawned.
    pub fn restart(&mut self) -> Instant {
        self.kill();
        self.launch()
    }

    /// Whether the server process is running.
    pub fn alive(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Bg::alive)
    }

    /// The current server process's log.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Bg::log).unwrap_or_default()
    }

    /// `ferrite stats` output, or `None` when the server does not answer.
    pub fn try_stats(&self) -> Option<String> {
        let out = Command::new(&self.bin)
            .arg("stats")
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ferrite stats` output; panics when the server does not answer.
    pub fn stats(&self) -> String {
        self.try_stats()
            .unwrap_or_else(|| panic!("ferrite stats failed; log:\n{}", self.log()))
    }

    /// Starts app binary `bin` (package `apps`) as `spec`, attached to this server, with
    /// extra arguments; pinned to the serving core.
    pub fn app(&self, bin: &str, spec: &AppSpec, args: &[&str]) -> Bg {
        let path = super::workspace_bin("apps", bin);
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &SERVER_CORE.to_string()])
            .arg(path)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--name", &spec.name, "--mac", &spec.mac, "--ip"])
            .arg(format!("{}/{}", spec.ip, super::PREFIX))
            .args(args)
            .env("RUST_LOG", "info");
        Bg::spawn(&format!("{bin}-{}", spec.name), &self.dir, &mut cmd)
    }
}

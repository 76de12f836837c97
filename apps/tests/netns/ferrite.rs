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
        Self::start_with(t, backend, apps, "")
    }

    /// As [`Server::start`], with `port_toml` (lines such as `faults = { drop = 0.01 }`)
    /// added to the `vf` port's section.
    pub fn start_with(t: &Topology, backend: Backend, apps: &[AppSpec], port_toml: &str) -> Self {
        let bin = super::workspace_bin("switch", "ferrite");
        let config = t.dir.join("ferrite.toml");
        let socket = t.dir.join("ferrite.sock");
        let mut toml = String::new();
        let _ = writeln!(
            toml,
            "[server]\nsocket = {:?}\nsocket_mode = \"0600\"\ncore = {SERVER_CORE}\n",
            socket.display().to_string()
        );
        let _ = writeln!(
            toml,
            "[[ports]]\nname = \"{VF}\"\nbackend = \"{}\"\nifname = \"{VF}\"\n{port_toml}\n",
            backend.as_str()
        );
        for a in apps {
            let _ = writeln!(
                toml,
                "[[apps]]\nuid = 0\nname = \"{}\"\nmac = \"{}\"\n",
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
        // The server pins its switch thread itself (`server.core`); a taskset here would hide
        // the other cores from it.
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info");
        let at = Instant::now();
        let mut bg = Bg::spawn(&format!("ferrite-{}", self.starts), &self.dir, &mut cmd);
        let ok = super::wait_until("the control socket", Duration::from_secs(10), || {
            !bg.alive() || (self.socket.exists() && self.try_stats().is_some())
        })
        .and_then(|()| {
            if bg.alive() {
                Ok(())
            } else {
                Err("the server exited".to_string())
            }
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

    /// Replaces the server with `ferrite supervise` over the same configuration (with a warm
    /// spare when `standby`), allowing any number of restarts; returns the supervisor once a
    /// server it started answers on the control socket.
    pub fn supervise(&mut self, standby: bool) -> Result<Bg, String> {
        self.kill();
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns])
            .arg(&self.bin)
            .arg("supervise")
            .arg("--config")
            .arg(&self.config)
            .args(["--restart-burst", "1000000"])
            .env("RUST_LOG", "info");
        if standby {
            cmd.arg("--standby");
        }
        let sup = Bg::spawn("supervise", &self.dir, &mut cmd);
        super::wait_until("the supervised server", Duration::from_secs(20), || {
            self.try_stats().is_some()
        })
        .map_err(|e| format!("{e}; supervisor log: {}", sup.log()))?;
        Ok(sup)
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
        self.app_on(SERVER_CORE, bin, spec, args)
    }

    /// As [`Server::app`], pinned to `core` instead.
    pub fn app_on(&self, core: usize, bin: &str, spec: &AppSpec, args: &[&str]) -> Bg {
        let path = super::workspace_bin("apps", bin);
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &core.to_string()])
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

/// Parses the time to the first forwarded frame from `ferrite stats` output: the first line
/// mentioning "first": the first number with a unit (`ns`, `us`, `ms`, `s`) after that word.
pub fn parse_first_frame(stats: &str) -> Option<Duration> {
    let line = stats.lines().find_map(|l| {
        let i = l.to_ascii_lowercase().find("first")?;
        Some(&l[i..])
    })?;
    let mut words = line
        .split(|c: char| c.is_whitespace() || c == '=' || c == ':' || c == ',')
        .filter(|w| !w.is_empty())
        .peekable();
    while let Some(w) = words.next() {
        let num_end = w
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(w.len());
        let Ok(v) = w[..num_end].parse::<f64>() else {
            continue;
        };
        let unit = if num_end < w.len() {
            w[num_end..].to_string()
        } else {
            words.peek().map(|u| u.to_string()).unwrap_or_default()
        };
        let secs = match unit.as_str() {
            "ns" => v / 1e9,
            "us" | "µs" => v / 1e6,
            "ms" => v / 1e3,
            "s" => v,
            _ => continue,
        };
        return Some(Duration::from_secs_f64(secs));
    }
    None
}

impl Server {
    /// Waits for the server to report its first forwarded frame; returns the time from the
    /// server's start to that frame as the server measured it.
    pub fn wait_first_frame(&self, timeout: Duration) -> Duration {
        let mut found = None;
        let r = super::wait_until("the first forwarded frame", timeout, || {
            found = self.try_stats().as_deref().and_then(parse_first_frame);
            found.is_some()
        });
        match (r, found) {
            (Ok(()), Some(d)) => d,
            _ => panic!(
                "no first forwarded frame within {timeout:?}; stats:\n{}\nlog:\n{}",
                self.try_stats().unwrap_or_default(),
                self.log()
            ),
        }
    }
}

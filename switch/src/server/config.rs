//! The server's TOML configuration, checked field by field.
//!
//! ```toml
//! [server]
//! socket = "/run/ferrite/ctl.sock"   # control socket path
//! socket_mode = "0660"               # its permissions (octal; at most 0660)
//! socket_group = 1000                # its group (gid), optional
//! core = 1                           # pin the switch to this core, optional
//! burst = 32
//! handshake_timeout_ms = 2000       # 1 to 60000
//! fdb_entries = 8192                 # stations the switch learns, in all: 16 to 1048576
//! max_conns_per_uid = 16             # control connections one uid may hold open
//! max_stations_per_port = 4096       # stations one port may have learned (default: half)
//! app_max_frames_per_sec = 0         # every app's rate limit, 0: none (an [[apps]] entry
//! app_max_bytes_per_sec = 0          #   may set its own: max_frames/bytes_per_sec)
//!
//! [limits]                           # what an app's grant may ask for
//! max_ring = 4096
//! max_bufs = 65536
//! buf_sizes = [2048, 65536]          # min and max buffer size (one value: exactly that)
//! max_mem_mb = 256
//!
//! [[ports]]
//! name = "uplink"
//! backend = "af_packet"              # sim | af_xdp | af_packet | intel
//! ifname = "veth0"                   # af_xdp, af_packet
//! bufs = 4096
//! # tso = false                      # intel: no TCP segmentation by the device
//! # faults = { drop = 0.01, duplicate = 0.001, corrupt = 0.001, delay = 0.01, delay_us = 500,
//! #            stall_every_ms = 1000, stall_ms = 20, seed = 1 }   # fault injection, for tests
//!
//! [[apps]]
//! uid = 1000                         # and/or gid
//! name = "web"
//! mac = "02:00:00:00:00:01"          # optional: any unicast MAC when absent
//! max_frames_per_sec = 100000        # optional: this app's rate limit (0: none)
//! max_bytes_per_sec = 125000000      # optional
//!
//! [metrics]                          # counters for Prometheus at http://LISTEN/metrics
//! listen = "127.0.0.1:9464"
//!
//! [xen]                              # apps in Xen domains, over xenstore (docs/xen.md)
//! enable = true
//! domid = 0                          # the server's own domain (0: dom0)
//! max_refs = 1024                    # most grant references one app may publish
//!
//! [[apps]]
//! xen = true                         # admits an app of this name (and MAC) in the Xen
//! domain = "web-vm"                  # domain the toolstack named so (`xl list`)
//! name = "web-xen"
//! ```
//!
//! Unknown fields are refused. Every error names the field it is about, e.g.
//! `ports[1].backend: unknown backend 'foo' (expected sim, af_xdp, af_packet, intel)`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ctl::{AllowedApp, Limits, Name};

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (with line, column and the offending key).
        message: String,
    },
    /// A field has a value the server cannot use.
    #[error("{field}: {message}")]
    Field {
        /// The field, e.g. `ports[1].backend`.
        field: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

fn field(f: impl Into<String>, m: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: f.into(),
        message: m.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Server-wide settings.
    #[serde(default)]
    pub server: ServerSection,
    /// Limits on apps' grants.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Configured (NIC) ports.
    #[serde(default)]
    pub ports: Vec<PortSection>,
    /// Apps that may attach.
    #[serde(default)]
    pub apps: Vec<AppSection>,
    /// App domains in Xen guests, attached over xenstore.
    #[serde(default)]
    pub xen: XenSection,
    /// The counters over HTTP for Prometheus.
    #[serde(default)]
    pub metrics: MetricsSection,
}

/// `[metrics]`: the counters in the Prometheus text format at `http://LISTEN/metrics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address and port to serve on, e.g. `127.0.0.1:9464` (off when absent).
    pub listen: Option<String>,
}

impl MetricsSection {
    /// The address to serve on, if any.
    pub fn addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|l| {
                l.parse().map_err(|_| {
                    field(
                        "metrics.listen",
                        format!("'{l}' is not an address and port like 127.0.0.1:9464"),
                    )
                })
            })
            .transpose()
    }
}

/// Who may attach as one Xen app: the app's name, in the domain the toolstack named so, with
/// the MAC when the entry fixes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenAdmission {
    /// The app's name (the one the guest writes).
    pub name: String,
    /// The MAC, when fixed.
    pub mac: Option<[u8; 6]>,
    /// The Xen domain's name, as the toolstack wrote it.
    pub domain: String,
}

impl XenAdmission {
    /// Why an app `name` with `mac` in a domain the toolstack calls `domain` is refused by
    /// every one of `allowed`, or `None` when one admits it.
    pub fn refusal(
        allowed: &[XenAdmission],
        name: &str,
        mac: [u8; 6],
        domain: Option<&str>,
    ) -> Option<String> {
        let named: Vec<&XenAdmission> = allowed.iter().filter(|a| a.name == name).collect();
        if named.is_empty() {
            return Some(format!("no [[apps]] entry with xen = true admits {name}"));
        }
        let Some(domain) = domain else {
            return Some(format!(
                "the app's domain has no name in xenstore, and {name} is admitted only by domain"
            ));
        };
        let here: Vec<&&XenAdmission> = named.iter().filter(|a| a.domain == domain).collect();
        if here.is_empty() {
            return Some(format!(
                "{name} is admitted only in another domain, not in {domain:?}"
            ));
        }
        if here.iter().any(|a| a.mac.is_none_or(|m| m == mac)) {
            None
        } else {
            Some(format!("{name} is admitted with another MAC"))
        }
    }
}

/// `[xen]`: the xenstore transport for apps in Xen domains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XenSection {
    /// Accept app domains over xenstore (the server must run in a Xen domain).
    #[serde(default)]
    pub enable: bool,
    /// The server's own domain id (0 in dom0; a driver domain's id otherwise).
    #[serde(default)]
    pub domid: u16,
    /// Most grant references one app may publish.
    #[serde(default = "default_max_refs")]
    pub max_refs: u32,
}

fn default_max_refs() -> u32 {
    1024
}

impl Default for XenSection {
    fn default() -> Self {
        Self {
            enable: false,
            domid: 0,
            max_refs: default_max_refs(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Control socket path.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Control socket permissions, octal text such as `"0660"`.
    #[serde(default = "default_mode")]
    pub socket_mode: String,
    /// Group id the control socket belongs to.
    pub socket_group: Option<u32>,
    /// Core the switch is pinned to.
    pub core: Option<usize>,
    /// Frames per burst.
    #[serde(default = "default_burst")]
    pub burst: usize,
    /// Milliseconds an app has to complete its handshake.
    #[serde(default = "default_timeout")]
    pub handshake_timeout_ms: u32,
    /// Stations the FDB holds.
    #[serde(default = "default_fdb")]
    pub fdb_entries: usize,
    /// Control connections one uid may hold open at once.
    #[serde(default = "default_conns_per_uid")]
    pub max_conns_per_uid: usize,
    /// Most stations one port may have learned (default: half of `fdb_entries`), so that
    /// no port can fill the table for the others; an app's port learns only its own MAC.
    pub max_stations_per_port: Option<usize>,
    /// Most frames a second each app may send, unless its `[[apps]]` entry says otherwise
    /// (0: no limit).
    #[serde(default)]
    pub app_max_frames_per_sec: u64,
    /// Most bytes a second each app may send, unless its `[[apps]]` entry says otherwise
    /// (0: no limit).
    #[serde(default)]
    pub app_max_bytes_per_sec: u64,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/ferrite/ctl.sock")
}
fn default_mode() -> String {
    "0660".into()
}
fn default_burst() -> usize {
    32
}
fn default_timeout() -> u32 {
    2000
}
fn default_fdb() -> usize {
    8192
}
fn default_conns_per_uid() -> usize {
    16
}

/// Most stations an FDB may be configured for.
pub const MAX_FDB_ENTRIES: usize = 1 << 20;
/// Longest handshake timeout, in milliseconds.
pub const MAX_HANDSHAKE_MS: u32 = 60_000;
/// The widest control socket mode: owner and group may connect, nobody else.
pub const WIDEST_SOCKET_MODE: u32 = 0o660;

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            socket_mode: default_mode(),
            socket_group: None,
            core: None,
            burst: default_burst(),
            handshake_timeout_ms: default_timeout(),
            fdb_entries: default_fdb(),
            max_conns_per_uid: default_conns_per_uid(),
            max_stations_per_port: None,
            app_max_frames_per_sec: 0,
            app_max_bytes_per_sec: 0,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest ring.
    #[serde(default = "default_max_ring")]
    pub max_ring: u32,
    /// Most buffers per app pool.
    #[serde(default = "default_max_bufs")]
    pub max_bufs: u32,
    /// Allowed buffer sizes: `[size]` or `[min, max]`.
    #[serde(default = "default_buf_sizes")]
    pub buf_sizes: Vec<u32>,
    /// Largest port memory in MiB.
    #[serde(default = "default_max_mem")]
    pub max_mem_mb: u64,
}

fn default_max_ring() -> u32 {
    4096
}
fn default_max_bufs() -> u32 {
    65536
}
fn default_buf_sizes() -> Vec<u32> {
    vec![2048, grant_pool::pool::MAX_BUF_SIZE as u32]
}
fn default_max_mem() -> u64 {
    256
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_ring: default_max_ring(),
            max_bufs: default_max_bufs(),
            buf_sizes: default_buf_sizes(),
            max_mem_mb: default_max_mem(),
        }
    }
}

/// One `[[ports]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// Port name (logs, stats).
    pub name: String,
    /// `sim`, `af_xdp`, `af_packet` or `intel`.
    pub backend: String,
    /// Interface (af_xdp, af_packet).
    pub ifname: Option<String>,
    /// PCI address (intel).
    pub pci: Option<String>,
    /// Queue (af_xdp).
    pub queue: Option<u32>,
    /// Buffers in the port's own pool.
    pub bufs: Option<usize>,
    /// Buffer size of the port's own pool.
    pub buf_size: Option<usize>,
    /// MAC (sim).
    pub mac: Option<String>,
    /// Whether the sim port generates frames (sim).
    pub generate: Option<bool>,
    /// Frames the sim port generates in total (sim).
    pub limit: Option<u64>,
    /// Length of generated frames (sim).
    pub frame_len: Option<usize>,
    /// Destination MAC of generated frames (sim; broadcast when absent).
    pub dst: Option<String>,
    /// Faults to inject into the port's traffic (tests and experiments; off when absent).
    pub faults: Option<FaultSection>,
    /// TCP segmentation by the device (intel; on when absent): the port keeps a pool of
    /// 64 KiB transmit buffers and takes TCP frames of up to 64 KiB whole.
    pub tso: Option<bool>,
}

/// `[ports.faults]`: faults injected into one port's traffic ([`pmd::fault`]). Chances are
/// per frame and direction.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSection {
    /// Seed of the fault generator.
    #[serde(default = "default_fault_seed")]
    pub seed: u64,
    /// Chance a frame is dropped.
    #[serde(default)]
    pub drop: f64,
    /// Chance a frame is delivered twice.
    #[serde(default)]
    pub duplicate: f64,
    /// Chance one byte of a received frame is flipped.
    #[serde(default)]
    pub corrupt: f64,
    /// Chance a frame is held back for `delay_us`.
    #[serde(default)]
    pub delay: f64,
    /// Microseconds a delayed frame is held.
    #[serde(default = "default_delay_us")]
    pub delay_us: u64,
    /// Milliseconds between stalls (none when absent).
    pub stall_every_ms: Option<u64>,
    /// Milliseconds each stall lasts.
    #[serde(default = "default_stall_ms")]
    pub stall_ms: u64,
}

fn default_fault_seed() -> u64 {
    1
}

fn default_delay_us() -> u64 {
    500
}

fn default_stall_ms() -> u64 {
    10
}

impl FaultSection {
    /// The wrapper's settings.
    pub fn config(&self) -> pmd::fault::FaultConfig {
        pmd::fault::FaultConfig {
            seed: self.seed,
            drop: self.drop,
            duplicate: self.duplicate,
            corrupt: self.corrupt,
            delay: self.delay,
            delay_by: std::time::Duration::from_micros(self.delay_us),
            stall_every: self.stall_every_ms.map(std::time::Duration::from_millis),
            stall_for: std::time::Duration::from_millis(self.stall_ms),
        }
    }
}

/// One `[[apps]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Peer uid that may attach under this name.
    pub uid: Option<u32>,
    /// Peer gid that may attach under this name.
    pub gid: Option<u32>,
    /// The app's name.
    pub name: String,
    /// The app's MAC; any unicast MAC when absent.
    pub mac: Option<String>,
    /// The app runs in a Xen domain and attaches over xenstore (`[xen] enable`); no uid or
    /// gid applies.
    #[serde(default)]
    pub xen: bool,
    /// With `xen`: the Xen domain the app must run in, by the name the toolstack gave it
    /// (`xl list`; the server reads it from `/local/domain/<domid>/name`, which the guest
    /// cannot write). A guest writes whatever app name it likes; only this binds the name
    /// to a domain.
    pub domain: Option<String>,
    /// Most frames a second the app may send (0: no limit); `[server]
    /// app_max_frames_per_sec` when absent.
    pub max_frames_per_sec: Option<u64>,
    /// Most bytes a second the app may send (0: no limit); `[server]
    /// app_max_bytes_per_sec` when absent.
    pub max_bytes_per_sec: Option<u64>,
}

/// Highest frame rate limit accepted (frames a second).
pub const MAX_FRAMES_PER_SEC: u64 = 1_000_000_000;
/// Highest byte rate limit accepted (bytes a second: 8 Tbit/s).
pub const MAX_BYTES_PER_SEC: u64 = 1_000_000_000_000;
/// Lowest non-zero byte rate limit accepted (bytes a second).
pub const MIN_BYTES_PER_SEC: u64 = 1024;

/// Checks a rate limit pair; `at` names the fields (`server.app_max` or `apps[2].max`).
fn check_rate(at: &str, frames: u64, bytes: u64) -> Result<(), ConfigError> {
    if frames > MAX_FRAMES_PER_SEC {
        return Err(field(
            format!("{at}_frames_per_sec"),
            format!("{frames} must be 0 (no limit) or at most {MAX_FRAMES_PER_SEC}"),
        ));
    }
    if bytes != 0 && !(MIN_BYTES_PER_SEC..=MAX_BYTES_PER_SEC).contains(&bytes) {
        return Err(field(
            format!("{at}_bytes_per_sec"),
            format!(
                "{bytes} must be 0 (no limit) or from {MIN_BYTES_PER_SEC} to {MAX_BYTES_PER_SEC} \
                 bytes a second (a limit in bits a second is 8 times this)"
            ),
        ));
    }
    Ok(())
}

/// Each app's rate limit, as frames and bytes a second (0: no limit).
#[derive(Debug, Clone, Default)]
pub struct AppRates {
    default: (u64, u64),
    by_name: Vec<(String, (u64, u64))>,
}

impl AppRates {
    /// The limit of the app named `name`: its `[[apps]]` entry's (the first with that
    /// name), else the `[server]` default.
    pub fn of(&self, name: &str) -> (u64, u64) {
        self.by_name
            .iter()
            .find(|(n, _)| n == name)
            .map_or(self.default, |(_, r)| *r)
    }
}

/// The port backends this server knows.
pub const BACKENDS: [&str; 4] = ["sim", "af_xdp", "af_packet", "intel"];

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        let p = parts.next()?;
        // Two hex digits (`from_str_radix` alone would take a sign: "+f").
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: e,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks `text` (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        c.check()?;
        Ok(c)
    }

    /// Checks every field's meaning.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.metrics.addr()?;
        let s = &self.server;
        if s.socket.as_os_str().is_empty() {
            return Err(field("server.socket", "must not be empty"));
        }
        self.socket_mode()?;
        if s.burst == 0 || s.burst > crate::forward::MAX_BURST {
            return Err(field(
                "server.burst",
                format!(
                    "{} must be from 1 to {}",
                    s.burst,
                    crate::forward::MAX_BURST
                ),
            ));
        }
        if !(1..=MAX_HANDSHAKE_MS).contains(&s.handshake_timeout_ms) {
            return Err(field(
                "server.handshake_timeout_ms",
                format!(
                    "{} must be from 1 to {MAX_HANDSHAKE_MS}",
                    s.handshake_timeout_ms
                ),
            ));
        }
        if !(16..=MAX_FDB_ENTRIES).contains(&s.fdb_entries) {
            return Err(field(
                "server.fdb_entries",
                format!("{} must be from 16 to {MAX_FDB_ENTRIES}", s.fdb_entries),
            ));
        }
        if !(1..=super::MAX_CONNS).contains(&s.max_conns_per_uid) {
            return Err(field(
                "server.max_conns_per_uid",
                format!(
                    "{} must be from 1 to {}",
                    s.max_conns_per_uid,
                    super::MAX_CONNS
                ),
            ));
        }
        if s.fdb_entries == 0 {
            return Err(field("server.fdb_entries", "must be above 0"));
        }
        if let Some(m) = s.max_stations_per_port
            && (m == 0 || m > s.fdb_entries)
        {
            return Err(field(
                "server.max_stations_per_port",
                format!(
                    "{m} must be from 1 to fdb_entries ({}): the most stations one port may have learned",
                    s.fdb_entries
                ),
            ));
        }
        check_rate(
            "server.app_max",
            s.app_max_frames_per_sec,
            s.app_max_bytes_per_sec,
        )?;
        if let Some(c) = s.core {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            if c >= n {
                return Err(field(
                    "server.core",
                    format!("core {c} does not exist (this machine has {n})"),
                ));
            }
        }
        let l = &self.limits;
        if !l.max_ring.is_power_of_two() || !(2..=1 << 20).contains(&l.max_ring) {
            return Err(field(
                "limits.max_ring",
                format!("{} must be a power of two from 2 to 1048576", l.max_ring),
            ));
        }
        if l.max_bufs == 0 || l.max_bufs as usize > grant_pool::pool::MAX_BUFS {
            return Err(field(
                "limits.max_bufs",
                format!(
                    "{} must be from 1 to {}",
                    l.max_bufs,
                    grant_pool::pool::MAX_BUFS
                ),
            ));
        }
        let (lo, hi) = match l.buf_sizes[..] {
            [a] => (a, a),
            [a, b] => (a, b),
            _ => {
                return Err(field("limits.buf_sizes", "give one size or [min, max]"));
            }
        };
        for v in [lo, hi] {
            if !v.is_power_of_two() || !(256..=grant_pool::pool::MAX_BUF_SIZE as u32).contains(&v) {
                return Err(field(
                    "limits.buf_sizes",
                    format!(
                        "{v} must be a power of two from 256 to {}",
                        grant_pool::pool::MAX_BUF_SIZE
                    ),
                ));
            }
        }
        if lo > hi {
            return Err(field("limits.buf_sizes", "min is above max"));
        }
        if l.max_mem_mb == 0 || l.max_mem_mb > 4096 {
            return Err(field("limits.max_mem_mb", "must be from 1 to 4096"));
        }
        if self.ports.len() > 64 {
            return Err(field("ports", "at most 64 configured ports"));
        }
        for (i, p) in self.ports.iter().enumerate() {
            let f = |k: &str| format!("ports[{i}].{k}");
            if p.name.is_empty() || p.name.len() > crate::ctl::wire::NAME_MAX {
                return Err(field(f("name"), "must be 1 to 32 characters"));
            }
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(field(f("name"), format!("'{}' is used twice", p.name)));
            }
            if !BACKENDS.contains(&p.backend.as_str()) {
                return Err(field(
                    f("backend"),
                    format!(
                        "unknown backend '{}' (expected {})",
                        p.backend,
                        BACKENDS.join(", ")
                    ),
                ));
            }
            match p.backend.as_str() {
                "af_xdp" | "af_packet" if p.ifname.as_deref().is_none_or(str::is_empty) => {
                    return Err(field(
                        f("ifname"),
                        format!("the {} backend needs an interface name", p.backend),
                    ));
                }
                b if b != "intel" && p.tso.is_some() => {
                    return Err(field(f("tso"), "only the intel backend has this setting"));
                }
                "intel" if p.pci.as_deref().is_none_or(str::is_empty) => {
                    return Err(field(
                        f("pci"),
                        "the intel backend needs a PCI address such as 0000:00:03.0",
                    ));
                }
                _ => {}
            }
            if let Some(fs) = &p.faults
                && let Err(e) = fs.config().check()
            {
                return Err(field(f("faults"), e));
            }
            for (k, v) in [("mac", &p.mac), ("dst", &p.dst)] {
                if let Some(m) = v
                    && parse_mac(m).is_none()
                {
                    return Err(field(
                        f(k),
                        format!("'{m}' is not a MAC like 02:00:00:00:00:01"),
                    ));
                }
            }
            if let Some(b) = p.buf_size
                && (!b.is_power_of_two() || !(256..=grant_pool::pool::MAX_BUF_SIZE).contains(&b))
            {
                return Err(field(
                    f("buf_size"),
                    format!(
                        "{b} must be a power of two from 256 to {}",
                        grant_pool::pool::MAX_BUF_SIZE
                    ),
                ));
            }
            if let Some(b) = p.bufs
                && (b == 0 || b > grant_pool::pool::MAX_BUFS)
            {
                return Err(field(f("bufs"), format!("{b} is out of range")));
            }
        }
        for (i, a) in self.apps.iter().enumerate() {
            let f = |k: &str| format!("apps[{i}].{k}");
            if a.xen && !self.xen.enable {
                return Err(field(f("xen"), "a Xen app needs [xen] enable = true"));
            }
            if a.xen && (a.uid.is_some() || a.gid.is_some()) {
                return Err(field(
                    f("xen"),
                    "a Xen app is admitted by its domain, name (and MAC); uid and gid do not apply",
                ));
            }
            match (&a.domain, a.xen) {
                (None, true) => {
                    return Err(field(
                        f("domain"),
                        "a Xen app needs the name of the Xen domain it runs in (as `xl list` \
                         shows it): any guest can claim an app name, only the toolstack names \
                         domains",
                    ));
                }
                (Some(_), false) => {
                    return Err(field(
                        f("domain"),
                        "only a Xen app (xen = true) runs in a domain",
                    ));
                }
                (Some(d), true) if d.is_empty() || d.len() > 64 || d.contains('/') => {
                    return Err(field(
                        f("domain"),
                        format!("{d:?} is not a Xen domain name (1 to 64 bytes, no '/')"),
                    ));
                }
                _ => {}
            }
            if !a.xen && a.uid.is_none() && a.gid.is_none() {
                return Err(field(
                    f("uid"),
                    "give a uid, a gid or both: who may attach under this name",
                ));
            }
            if let Err(e) = Name::new(&a.name) {
                return Err(field(f("name"), e.to_string()));
            }
            if a.xen
                && let Err(e) = crate::xen_ctl::parse_name(a.name.as_bytes())
            {
                return Err(field(f("name"), e.to_string()));
            }
            if self.apps[..i].iter().any(|b| b.name == a.name) {
                return Err(field(f("name"), format!("'{}' is used twice", a.name)));
            }
            check_rate(
                &f("max"),
                a.max_frames_per_sec.unwrap_or(0),
                a.max_bytes_per_sec.unwrap_or(0),
            )?;
            if let Some(m) = &a.mac {
                match parse_mac(m) {
                    Some(mac) => {
                        if let Err(e) = crate::ctl::wire::check_mac(mac) {
                            return Err(field(f("mac"), e.to_string()));
                        }
                    }
                    None => {
                        return Err(field(
                            f("mac"),
                            format!("'{m}' is not a MAC like 02:00:00:00:00:01"),
                        ));
                    }
                }
            }
        }
        let m = self.xen.max_refs as usize;
        if !(2..=crate::xen_ctl::MAX_REFS).contains(&m) {
            return Err(field(
                "xen.max_refs",
                format!("{m} must be from 2 to {}", crate::xen_ctl::MAX_REFS),
            ));
        }
        Ok(())
    }

    /// Most stations one port may have learned.
    pub fn max_stations_per_port(&self) -> usize {
        self.server
            .max_stations_per_port
            .unwrap_or(self.server.fdb_entries / 2)
            .max(1)
    }

    /// Each app's rate limit.
    pub fn app_rates(&self) -> AppRates {
        let s = &self.server;
        let default = (s.app_max_frames_per_sec, s.app_max_bytes_per_sec);
        AppRates {
            default,
            by_name: self
                .apps
                .iter()
                .map(|a| {
                    let r = (
                        a.max_frames_per_sec.unwrap_or(default.0),
                        a.max_bytes_per_sec.unwrap_or(default.1),
                    );
                    (a.name.clone(), r)
                })
                .collect(),
        }
    }

    /// The apps whose entry fixes their MAC, with it: they may take it over from a station
    /// learned on another port; an app that chose its own MAC may not.
    pub fn fixed_macs(&self) -> Vec<(String, [u8; 6])> {
        self.apps
            .iter()
            .filter_map(|a| Some((a.name.clone(), parse_mac(a.mac.as_deref()?)?)))
            .collect()
    }

    /// The Xen apps' admissions.
    pub fn xen_allowed(&self) -> Vec<XenAdmission> {
        self.apps
            .iter()
            .filter(|a| a.xen)
            .map(|a| XenAdmission {
                name: a.name.clone(),
                mac: a.mac.as_deref().and_then(parse_mac),
                domain: a.domain.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// The control socket's permission bits.
    pub fn socket_mode(&self) -> Result<u32, ConfigError> {
        let m = self.server.socket_mode.as_str();
        let m = m.strip_prefix("0o").unwrap_or(m);
        // Octal digits only (`from_str_radix` alone would take a sign: "+660").
        let digits = if m.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
            m
        } else {
            ""
        };
        match u32::from_str_radix(digits, 8) {
            Ok(v) if v & !WIDEST_SOCKET_MODE != 0 && v <= 0o777 => Err(field(
                "server.socket_mode",
                format!(
                    "{v:#o} lets others than the owner and the group connect (or sets \
                     execute bits): use at most \"0660\" and a socket_group"
                ),
            )),
            Ok(v) if v <= 0o777 => Ok(v),
            _ => Err(field(
                "server.socket_mode",
                format!(
                    "'{}' is not an octal mode such as \"0660\"",
                    self.server.socket_mode
                ),
            )),
        }
    }

    /// The limits sent to apps.
    pub fn limits(&self) -> Limits {
        let l = &self.limits;
        let (lo, hi) = match l.buf_sizes[..] {
            [a] => (a, a),
            [a, b] => (a, b),
            _ => (2048, 2048),
        };
        Limits {
            max_ring: l.max_ring,
            min_buf_size: lo,
            max_buf_size: hi,
            max_bufs: l.max_bufs,
            // No more than one grant message can describe.
            max_mem: (l.max_mem_mb << 20).min(crate::ctl::wire::MAX_REFS as u64 * 4096),
            timeout_ms: self.server.handshake_timeout_ms,
        }
    }

    /// The allowed apps, as the handshake checks them.
    pub fn allowed(&self) -> Vec<AllowedApp> {
        self.apps
            .iter()
            .filter(|a| !a.xen)
            .map(|a| AllowedApp {
                uid: a.uid,
                gid: a.gid,
                name: a.name.clone(),
                mac: a.mac.as_deref().and_then(parse_mac),
            })
            .collect()
    }
}

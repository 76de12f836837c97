//! Flags every example app shares, and the small helpers their `main`s use.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use smoltcp::wire::{Ipv4Cidr, Ipv6Cidr};

use crate::domain::DomainConfig;
use crate::stack::{NetConfig, parse_mac};

/// How an app attaches to the server and where it lives on the network.
#[derive(Debug, Clone, clap::Args)]
pub struct DomainArgs {
    /// The server's control socket.
    #[arg(long, default_value = "/run/ferrite/ctl.sock")]
    pub socket: PathBuf,
    /// The app's name, as the server's configuration admits it.
    #[arg(long)]
    pub name: String,
    /// The app's MAC, e.g. 02:fe:00:00:00:01 (keep it stable across restarts).
    #[arg(long, value_parser = parse_mac)]
    pub mac: [u8; 6],
    /// The app's IPv4 address, with a prefix length (10.0.0.2/24) or without (see --prefix).
    #[arg(long)]
    pub ip: String,
    /// Prefix length when --ip has none.
    #[arg(long, default_value_t = 24)]
    pub prefix: u8,
    /// Default gateway.
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// An IPv6 address too, with a prefix length (fd00:77::11/64; 64 when absent): the
    /// app then answers on IPv6 as well (neighbours found with NDP, ping -6).
    #[arg(long, value_parser = parse_ip6)]
    pub ip6: Option<Ipv6Cidr>,
    /// Descriptors per ring (a power of two).
    #[arg(long, default_value_t = 1024)]
    pub ring_size: u32,
    /// Buffers in the app's pool [default: 960 of 64 KiB, 4096 of 2 KiB].
    #[arg(long)]
    pub buffers: Option<usize>,
    /// Bytes per buffer: 65536 (the default; TCP segments of up to 64 KiB go whole, the
    /// server or NIC cuts them) or 2048 (one Ethernet frame each; the default with --xen).
    #[arg(long)]
    pub buf_size: Option<usize>,
    /// IP MTU on the wire: 1500, or up to 9000 for jumbo frames (the interface the server's
    /// port is on needs the same MTU).
    #[arg(long, default_value_t = 1500)]
    pub mtu: usize,
    /// Microseconds of idle busy-polling before sleeping on the server's doorbell (0: sleep
    /// as soon as idle). Worth raising only when the app has a core of its own; where the
    /// server and apps share cores, spinning steals the core the next frame needs.
    #[arg(long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// Attach as a Xen frontend (gntalloc, event channel, xenstore) to the server in Xen
    /// domain SERVER_DOMID (0 when given without a value) instead of over --socket.
    #[arg(long, value_name = "SERVER_DOMID", num_args = 0..=1, default_missing_value = "0")]
    pub xen: Option<u16>,
    /// Seconds to keep trying the first connection to the server.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
}

/// Parses `--ip6`: an IPv6 address with an optional prefix length (64 when absent), unicast.
fn parse_ip6(s: &str) -> Result<Ipv6Cidr, String> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (
            a,
            p.parse::<u8>()
                .ok()
                .filter(|p| *p <= 128)
                .ok_or_else(|| format!("{s}: the prefix length must be 0 to 128"))?,
        ),
        None => (s, 64),
    };
    let a: std::net::Ipv6Addr = addr
        .parse()
        .map_err(|_| format!("{s}: not an IPv6 address like fd00:77::11/64"))?;
    if a.is_multicast() || a.is_unspecified() || a.is_loopback() {
        return Err(format!("{s}: not a unicast address an interface can have"));
    }
    Ok(Ipv6Cidr::new(a, prefix))
}

impl DomainArgs {
    /// The network part.
    pub fn net(&self) -> Result<NetConfig, String> {
        let (addr, prefix) = match self.ip.split_once('/') {
            Some((a, p)) => (
                a,
                p.parse::<u8>()
                    .map_err(|_| format!("--ip {}: bad prefix length", self.ip))?,
            ),
            None => (self.ip.as_str(), self.prefix),
        };
        let a: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("--ip {}: not an IPv4 address", self.ip))?;
        if prefix > 32 {
            return Err(format!("prefix length {prefix} is over 32"));
        }
        Ok(NetConfig {
            mac: self.mac,
            ip: Ipv4Cidr::new(a, prefix),
            gateway: self.gateway,
            ip6: self.ip6,
        })
    }

    /// The whole domain configuration.
    pub fn config(&self) -> Result<DomainConfig, String> {
        let mut c = DomainConfig::new(self.socket.clone(), self.name.clone(), self.net()?);
        c.ring_size = self.ring_size;
        let large = grant_pool::pool::MAX_BUF_SIZE;
        c.buf_size = self
            .buf_size
            .unwrap_or(if self.xen.is_some() { 2048 } else { large });
        if !c.buf_size.is_power_of_two() || !(2048..=large).contains(&c.buf_size) {
            return Err(format!(
                "--buf-size {} must be a power of two from 2048 to {large}",
                c.buf_size
            ));
        }
        if !(576..=9000).contains(&self.mtu) || self.mtu + 14 > c.buf_size {
            return Err(format!(
                "--mtu {} must be from 576 to 9000 and fit a buffer ({} bytes)",
                self.mtu, c.buf_size
            ));
        }
        c.mtu = self.mtu;
        c.buf_count = self.buffers.unwrap_or(if c.buf_size > 2048 {
            crate::domain::LARGE_BUFS
        } else {
            crate::domain::SMALL_BUFS
        });
        c.busy_poll = Duration::from_micros(self.busy_poll_us);
        if !(self.connect_timeout >= 0.0 && self.connect_timeout < 1e6) {
            return Err("--connect-timeout must be a number of seconds".into());
        }
        c.first_connect = Duration::from_secs_f64(self.connect_timeout);
        c.xen_server = self.xen;
        Ok(c)
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: not in files, pipes or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Prints `e` and exits with status 1 (for `main`s).
pub fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("error: {e}");
    std::process::exit(1)
}

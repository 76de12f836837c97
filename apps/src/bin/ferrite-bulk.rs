//! A bulk TCP sink or source in a Ferrite app domain: reports bytes, Gbit/s and the SHA-256
//! of what it received or sent.
#![forbid(unsafe_code)]

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use apps::cli::{self, DomainArgs};
use apps::domain::{AppDomain, Service, stop_on_signals};
use apps::services::{Amount, BULK_BUF, BulkReport, BulkSink, BulkSource, endpoint};
use clap::Parser;
use smoltcp::iface::SocketSet;

/// Receives (--listen) or sends (--connect) a TCP byte stream and reports its rate and hash.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    domain: DomainArgs,
    /// Sink: accept connections on this port.
    #[arg(long, conflicts_with = "connect", required_unless_present = "connect")]
    listen: Option<u16>,
    /// Source: connect to this IPv4 address and port.
    #[arg(long)]
    connect: Option<SocketAddrV4>,
    /// Source: bytes to send.
    #[arg(long, conflicts_with = "secs")]
    bytes: Option<u64>,
    /// Source: seconds to send for (default 10 when --bytes is not given).
    #[arg(long)]
    secs: Option<f64>,
    /// Source: seed of the byte pattern sent.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sink: exit after the first transfer.
    #[arg(long)]
    once: bool,
    /// Do not hash (measures the stack alone).
    #[arg(long)]
    no_hash: bool,
    /// Print progress (bytes so far) to stderr once per --progress-ms.
    #[arg(long)]
    progress: bool,
    /// Milliseconds between progress lines.
    #[arg(long, default_value_t = 1000)]
    progress_ms: u64,
}

enum Role {
    Sink(BulkSink),
    Source(BulkSource),
}

struct Bulk {
    role: Role,
    progress: bool,
    every: Duration,
    last: Instant,
    last_bytes: u64,
    printed: usize,
}

impl Bulk {
    fn bytes(&self) -> u64 {
        match &self.role {
            Role::Sink(s) => s.progress,
            Role::Source(s) => s.progress,
        }
    }

    fn reports(&self) -> Vec<BulkReport> {
        match &self.role {
            Role::Sink(s) => s.reports.clone(),
            Role::Source(s) => s.report.iter().cloned().collect(),
        }
    }
}

fn print_report(r: &BulkReport) {
    println!(
        "{}: {} bytes in {:.3} s, {:.3} Gbit/s, sha256 {}",
        r.role, r.bytes, r.secs, r.gbps, r.sha256
    );
    println!("{}", serde_json::json!(r));
}

impl Service for Bulk {
    fn poll(&mut self, sockets: &mut SocketSet<'static>, now: Instant) -> bool {
        let worked = match &mut self.role {
            Role::Sink(s) => s.poll(sockets, now),
            Role::Source(s) => s.poll(sockets, now),
        };
        if self.progress && now.duration_since(self.last) >= self.every {
            let b = self.bytes();
            let secs = now.duration_since(self.last).as_secs_f64();
            eprintln!(
                "progress {} bytes, {:.3} Gbit/s",
                b,
                b.saturating_sub(self.last_bytes) as f64 * 8.0 / secs / 1e9
            );
            self.last = now;
            self.last_bytes = b;
        }
        let reports = self.reports();
        for r in &reports[self.printed..] {
            print_report(r);
        }
        self.printed = reports.len();
        worked
    }

    fn poll_at(&self) -> Option<Instant> {
        let own = match &self.role {
            Role::Sink(s) => s.poll_at(),
            Role::Source(s) => s.poll_at(),
        };
        let tick = self.progress.then(|| self.last + self.every);
        match (own, tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn done(&self) -> bool {
        match &self.role {
            Role::Sink(s) => s.done(),
            Role::Source(s) => s.done(),
        }
    }
}

fn main() {
    cli::init_logging();
    let a = Args::parse();
    let cfg = a.domain.config().unwrap_or_else(|e| cli::fail(e));
    let stop = stop_on_signals();
    let mut d = AppDomain::connect(cfg).unwrap_or_else(|e| cli::fail(e));
    let hash = !a.no_hash;
    let role = match (a.listen, a.connect) {
        (Some(port), _) => {
            // The window never offers more than the port's fill buffers can take.
            let window = BULK_BUF.min(d.rx_window());
            tracing::info!("bulk sink on TCP port {port} (receive window {window} bytes)");
            Role::Sink(BulkSink::with_buffer(
                d.sockets(),
                port,
                hash,
                a.once,
                window,
            ))
        }
        (None, Some(to)) => {
            let amount = match (a.bytes, a.secs) {
                (Some(b), _) => Amount::Bytes(b),
                (None, s) => Amount::Time(Duration::from_secs_f64(s.unwrap_or(10.0).max(0.0))),
            };
            let remote = endpoint(*to.ip(), to.port());
            let mut src = BulkSource::new(d.sockets(), remote, amount, a.seed, hash);
            let local = 49152 + (std::process::id() % 16000) as u16;
            d.with_context(|cx, s| src.connect(cx, s, local))
                .unwrap_or_else(|e| cli::fail(e));
            tracing::info!("bulk source to {to}");
            Role::Source(src)
        }
        (None, None) => cli::fail("give --listen PORT or --connect IP:PORT"),
    };
    let mut bulk = Bulk {
        role,
        progress: a.progress,
        every: Duration::from_millis(a.progress_ms.max(10)),
        last: Instant::now(),
        last_bytes: 0,
        printed: 0,
    };
    if let Err(e) = d.run(&mut bulk, &stop) {
        cli::fail(e);
    }
    if let Role::Source(s) = &bulk.role
        && let Some(e) = &s.error
    {
        cli::fail(e);
    }
    if bulk.reports().is_empty() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        cli::fail("the transfer did not complete");
    }
    eprintln!(
        "{}",
        serde_json::json!({"device": d.device_stats(), "domain": d.stats()})
    );
}

//! TCP and UDP echo in a Ferrite app domain.
#![forbid(unsafe_code)]

use apps::cli::{self, DomainArgs};
use apps::domain::{AppDomain, stop_on_signals};
use apps::services::Echo;
use clap::Parser;

/// Echoes every TCP byte and UDP datagram back to its sender.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    domain: DomainArgs,
    /// The TCP and UDP port.
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// TCP connections served at once.
    #[arg(long, default_value_t = 8)]
    conns: usize,
}

fn main() {
    cli::init_logging();
    let a = Args::parse();
    let cfg = a.domain.config().unwrap_or_else(|e| cli::fail(e));
    let stop = stop_on_signals();
    let mut d = AppDomain::connect(cfg).unwrap_or_else(|e| cli::fail(e));
    let mut echo = Echo::new(d.sockets(), a.port, a.conns);
    tracing::info!("echo on port {} (TCP and UDP)", a.port);
    if let Err(e) = d.run(&mut echo, &stop) {
        cli::fail(e);
    }
    println!(
        "{}",
        serde_json::json!({
            "tcp_bytes": echo.tcp_bytes,
            "udp_datagrams": echo.udp_datagrams,
            "device": d.device_stats(),
            "domain": d.stats(),
        })
    );
}

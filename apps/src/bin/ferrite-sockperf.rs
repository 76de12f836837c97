//! A sockperf ping-pong responder in a Ferrite app domain: the unmodified `sockperf
//! ping-pong` client measures it.
#![forbid(unsafe_code)]

use apps::cli::{self, DomainArgs};
use apps::domain::{AppDomain, stop_on_signals};
use apps::services::{Percentiles, PingPongClient, SOCKPERF_PORT, SockperfResponder, endpoint};
use clap::Parser;

/// Answers sockperf UDP ping-pong messages in sockperf's own server format; with --client,
/// measures a sockperf server instead (round trips into an HDR histogram).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    domain: DomainArgs,
    /// The UDP port (sockperf's default is 11111); the local port in client mode.
    #[arg(long, default_value_t = SOCKPERF_PORT)]
    port: u16,
    /// Client mode: ping-pong against the sockperf server at this address and port.
    #[arg(long)]
    client: Option<std::net::SocketAddrV4>,
    /// Client: measured round trips.
    #[arg(long, default_value_t = 10_000)]
    rounds: u64,
    /// Client: unmeasured round trips first.
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Client: message size in bytes, header included.
    #[arg(long, default_value_t = 64)]
    msg_size: usize,
    /// Client: milliseconds without an answer before a request counts as lost.
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
}

fn main() {
    cli::init_logging();
    let a = Args::parse();
    let cfg = a.domain.config().unwrap_or_else(|e| cli::fail(e));
    let stop = stop_on_signals();
    let mut d = AppDomain::connect(cfg).unwrap_or_else(|e| cli::fail(e));
    if let Some(to) = a.client {
        let mut pp = PingPongClient::new(
            d.sockets(),
            a.port,
            endpoint(*to.ip(), to.port()),
            a.msg_size,
            a.rounds,
            a.warmup,
        )
        .unwrap_or_else(|e| cli::fail(e))
        .with_timeout(std::time::Duration::from_millis(a.timeout_ms.max(1)));
        if let Err(e) = d.run(&mut pp, &stop) {
            cli::fail(e);
        }
        let p = Percentiles::of(&pp.hist);
        println!(
            "round trip over {} samples ({} lost): p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, \
             p99.9 {:.1} us, max {:.1} us",
            p.count, pp.lost, p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us
        );
        println!(
            "{}",
            serde_json::json!({"rtt_us": p, "lost": pp.lost, "device": d.device_stats(),
                "domain": d.stats()})
        );
        return;
    }
    let mut svc = SockperfResponder::new(d.sockets(), a.port);
    tracing::info!("sockperf responder on UDP port {}", a.port);
    if let Err(e) = d.run(&mut svc, &stop) {
        cli::fail(e);
    }
    println!(
        "{}",
        serde_json::json!({
            "answered": svc.answered,
            "ignored": svc.ignored,
            "device": d.device_stats(),
            "domain": d.stats(),
        })
    );
}

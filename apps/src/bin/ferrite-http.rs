//! An HTTP/1.1 static file server in a Ferrite app domain.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use apps::cli::{self, DomainArgs};
use apps::domain::{AppDomain, stop_on_signals};
use apps::http::Http;
use clap::Parser;

/// Serves a directory over HTTP/1.1 (GET, HEAD, keep-alive).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    domain: DomainArgs,
    /// The directory to serve.
    #[arg(long)]
    root: PathBuf,
    /// The TCP port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// Connections served at once.
    #[arg(long, default_value_t = 16)]
    conns: usize,
}

fn main() {
    cli::init_logging();
    let a = Args::parse();
    if !a.root.is_dir() {
        cli::fail(format!("--root {}: not a directory", a.root.display()));
    }
    let cfg = a.domain.config().unwrap_or_else(|e| cli::fail(e));
    let stop = stop_on_signals();
    let mut d = AppDomain::connect(cfg).unwrap_or_else(|e| cli::fail(e));
    let mut http = Http::new(d.sockets(), a.root.clone(), a.port, a.conns);
    tracing::info!("serving {} on port {}", a.root.display(), a.port);
    if let Err(e) = d.run(&mut http, &stop) {
        cli::fail(e);
    }
    println!(
        "{}",
        serde_json::json!({
            "responses_2xx": http.responses[0],
            "responses_4xx": http.responses[1],
            "device": d.device_stats(),
            "domain": d.stats(),
        })
    );
}

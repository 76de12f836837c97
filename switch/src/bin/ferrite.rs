//! `ferrite`: the network server (`ferrite serve --config FILE`) and its counters
//! (`ferrite stats`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::{Parser, Subcommand};
use switch::ctl::wire::fmt_mac;
use switch::ctl::{Client, StatsRepr};
use switch::server::{Config, serve};

/// The Ferrite network server.
#[derive(Parser)]
#[command(name = "ferrite", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server.
    Serve {
        /// The TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Check the configuration and exit.
        #[arg(long)]
        check: bool,
    },
    /// Print every port's counters from a running server.
    Stats {
        /// The server's control socket.
        #[arg(long, short, default_value = "/run/ferrite/ctl.sock")]
        socket: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config, check } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ferrite: {e}");
                    return ExitCode::from(2);
                }
            };
            if check {
                println!("{}: ok", config.display());
                return ExitCode::SUCCESS;
            }
            match serve(&cfg, Arc::new(AtomicBool::new(false))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrite: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Stats { socket } => {
            let r = Client::connect(&socket).and_then(|mut c| c.stats());
            match r {
                Ok(s) => {
                    print!("{}", table(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferrite stats: {}: {e}", socket.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// An app port's kick count; NICs have no doorbell.
fn kicks(app: bool, n: u64) -> String {
    if app { n.to_string() } else { "-".into() }
}

fn table(s: &StatsRepr) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "server instance {:016x}, up {:.1} s, first frame forwarded {}",
        s.instance,
        s.uptime_ns as f64 / 1e9,
        match s.first_frame_ns {
            Some(ns) => format!("{:.3} ms after start", ns as f64 / 1e6),
            None => "not yet".into(),
        }
    );
    let _ = writeln!(
        o,
        "{:>4} {:<4} {:<16} {:<17} {:>10} {:>12} {:>8} {:>10} {:>12} {:>8} {:>7} {:>9} {:>9}",
        "port",
        "kind",
        "name",
        "mac",
        "rx_pkts",
        "rx_bytes",
        "rx_drop",
        "tx_pkts",
        "tx_bytes",
        "tx_drop",
        "errors",
        "kicks_out",
        "kicks_in"
    );
    for p in &s.ports {
        let c = &p.counters;
        let _ = writeln!(
            o,
            "{:>4} {:<4} {:<16} {:<17} {:>10} {:>12} {:>8} {:>10} {:>12} {:>8} {:>7} {:>9} {:>9}",
            p.port,
            if p.app { "app" } else { "nic" },
            p.name,
            fmt_mac(p.mac),
            c.rx_packets,
            c.rx_bytes,
            c.rx_dropped,
            c.tx_packets,
            c.tx_bytes,
            c.tx_dropped,
            c.errors,
            kicks(p.app, c.kicks_to_app),
            kicks(p.app, c.kicks_from_app)
        );
    }
    let _ = writeln!(
        o,
        "kicks_out: doorbell kicks the server sent the app; kicks_in: kicks from the app the \
         server found (merged while pending); event-channel notifications on Xen"
    );
    for p in s.ports.iter().filter(|p| p.app && p.counters.errors > 0) {
        let c = &p.counters;
        let _ = writeln!(
            o,
            "  {} rejected: spoofed {} runt {} index_ahead {} bad_pool {} bad_index {} bad_len {} not_held {}",
            p.name,
            c.spoofed,
            c.runt,
            c.index_ahead,
            c.bad_pool,
            c.bad_index,
            c.bad_len,
            c.not_held
        );
    }
    for p in &s.ports {
        let c = &p.counters;
        if c.group_source + c.link_local + c.rate_limited + c.not_learned > 0 {
            let _ = writeln!(
                o,
                "  {} dropped: group_source {} link_local {} rate_limited {}; stations not learned {}",
                p.name, c.group_source, c.link_local, c.rate_limited, c.not_learned
            );
        }
    }
    let rej: Vec<String> = s
        .rejections
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "control messages refused: {}",
        if rej.is_empty() {
            "none".into()
        } else {
            rej.join(", ")
        }
    );
    o
}

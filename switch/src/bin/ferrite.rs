//! `ferrite`: the network server (`ferrite serve --config FILE`), its supervisor
//! (`ferrite supervise --config FILE`), its counters (`ferrite stats`) and a capture of a
//! port's frames (`ferrite capture`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switch::ctl::wire::fmt_mac;
use switch::ctl::{Client, StatsRepr};
use switch::server::notify::Notifier;
use switch::server::standby::ServerLock;
use switch::server::supervise::{SuperviseConfig, follow_supervisor, supervise};
use switch::server::{Config, ports, serve_prepared};

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
        /// Start as a warm spare: load the configuration and make the ports ready (memory,
        /// rings, sockets; no NIC taken), then wait until the server of the control socket
        /// stops (whatever stops it) and take over.
        #[arg(long)]
        standby: bool,
    },
    /// Run the server as a child and restart it at once when it dies or its watchdog pings
    /// stop (for hosts without systemd). SIGTERM stops the server and the supervisor.
    Supervise {
        /// The server's TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
        /// Keep a warm spare waiting to take over the moment the server dies.
        #[arg(long)]
        standby: bool,
        /// Watchdog period given to the server, in ms (it pings at half of it).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        watchdog_ms: u64,
        /// How long the server may take to get ready, in ms.
        #[arg(long, default_value_t = 30_000)]
        start_timeout_ms: u64,
        /// How long the server may take to stop after SIGTERM before it is killed, in ms.
        #[arg(long, default_value_t = 5000)]
        stop_timeout_ms: u64,
        /// This many deaths within the window make a crash loop: restarts back off.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        restart_burst: u32,
        /// The crash-loop window, in ms.
        #[arg(long, default_value_t = 10_000)]
        restart_window_ms: u64,
        /// Time from a server's readiness to the start of the next spare, in ms.
        #[arg(long, default_value_t = 20)]
        standby_delay_ms: u64,
    },
    /// Capture a port's frames from a running server: pcapng (Wireshark, tshark) with -w,
    /// else one line per frame. Root or the server's own user only.
    Capture {
        /// The port: its name or number, as `ferrite stats` shows them.
        port: String,
        /// Write a pcapng file (`-` for standard output).
        #[arg(short = 'w', long = "write")]
        file: Option<PathBuf>,
        /// Stop after this many frames.
        #[arg(short = 'c', long)]
        count: Option<u64>,
        /// Frames the port receives, is sent, or both.
        #[arg(long, value_enum, default_value = "both")]
        direction: DirectionArg,
        /// Bytes of each frame to keep (at most 65500: a frame of up to 64 KiB is cut there).
        #[arg(long, default_value_t = switch::ctl::wire::CAPTURE_MAX as u32,
              value_parser = clap::value_parser!(u32).range(14..=switch::ctl::wire::CAPTURE_MAX as i64))]
        snaplen: u32,
        /// The server's control socket.
        #[arg(long, short, default_value = "/run/ferrite/ctl.sock")]
        socket: PathBuf,
    },
    /// Print every port's counters from a running server.
    Stats {
        /// The server's control socket.
        #[arg(long, short, default_value = "/run/ferrite/ctl.sock")]
        socket: PathBuf,
        /// Print the counters as one JSON object (every counter by name).
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Print per-second rates every SECONDS until interrupted.
        #[arg(long, value_name = "SECONDS", value_parser = watch_period)]
        watch: Option<f64>,
        /// With --watch: stop after this many tables.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: not in files, pipes or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve {
            config,
            check,
            standby,
        } => {
            follow_supervisor();
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
            // A warm spare makes its ports ready (memory, rings, sockets) before it waits.
            let prepared = if standby {
                match ports::prepare_all(&cfg) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("ferrite: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                Vec::new()
            };
            let _lock = match take_over(&cfg, standby) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("ferrite: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match serve_prepared(&cfg, Arc::new(AtomicBool::new(false)), prepared) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrite: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Supervise {
            config,
            standby,
            watchdog_ms,
            start_timeout_ms,
            stop_timeout_ms,
            restart_burst,
            restart_window_ms,
            standby_delay_ms,
        } => {
            if let Err(e) = Config::load(&config) {
                eprintln!("ferrite: {e}");
                return ExitCode::from(2);
            }
            let exe = match std::env::current_exe() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ferrite supervise: cannot find the ferrite binary: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let ms = Duration::from_millis;
            let sc = SuperviseConfig {
                standby,
                watchdog: ms(watchdog_ms),
                start_timeout: ms(start_timeout_ms),
                stop_timeout: ms(stop_timeout_ms),
                restart_burst,
                restart_window: ms(restart_window_ms),
                standby_delay: ms(standby_delay_ms),
                ..SuperviseConfig::new(exe, config)
            };
            match supervise(sc, Arc::new(AtomicBool::new(false))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ferrite supervise: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Capture {
            port,
            file,
            count,
            direction,
            snaplen,
            socket,
        } => match capture(&socket, &port, file, count, direction, snaplen) {
            Ok(n) => {
                eprintln!("ferrite capture: {n} frames");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferrite capture: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Stats {
            socket,
            json,
            watch,
            count,
        } => {
            let get = || {
                Client::connect(&socket)
                    .and_then(|mut c| c.stats())
                    .map_err(|e| eprintln!("ferrite stats: {}: {e}", socket.display()))
            };
            let Ok(mut last) = get() else {
                return ExitCode::FAILURE;
            };
            let Some(period) = watch else {
                if json {
                    println!("{}", switch::ctl::export::json(&last));
                } else {
                    print!("{}", table(&last));
                }
                return ExitCode::SUCCESS;
            };
            let mut at = std::time::Instant::now();
            for _ in 0..count.unwrap_or(u64::MAX) {
                std::thread::sleep(Duration::from_secs_f64(period));
                let Ok(now) = get() else {
                    return ExitCode::FAILURE;
                };
                let secs = at.elapsed().as_secs_f64();
                at = std::time::Instant::now();
                if now.instance != last.instance {
                    println!("(a new server instance: rates start again)");
                } else {
                    println!("{}", switch::ctl::export::rates(&last, &now, secs));
                }
                last = now;
            }
            ExitCode::SUCCESS
        }
    }
}

/// `ferrite capture --direction`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DirectionArg {
    /// What the port receives.
    Rx,
    /// What is sent to the port.
    Tx,
    /// Both.
    Both,
}

/// Runs `ferrite capture`.
fn capture(
    socket: &std::path::Path,
    port: &str,
    file: Option<PathBuf>,
    count: Option<u64>,
    direction: DirectionArg,
    snaplen: u32,
) -> Result<u64, String> {
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
    use pcap_file::pcapng::blocks::interface_description::{
        InterfaceDescriptionBlock, InterfaceDescriptionOption,
    };
    use switch::ctl::wire::{Direction, Repr};
    let stats = Client::connect(socket)
        .and_then(|mut c| c.stats())
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let p = stats
        .ports
        .iter()
        .find(|p| p.name == port || p.port.to_string() == port)
        .ok_or_else(|| {
            let names: Vec<String> = stats
                .ports
                .iter()
                .map(|p| format!("{} ({})", p.name, p.port))
                .collect();
            format!("no port '{port}'; the server has: {}", names.join(", "))
        })?;
    let dir = match direction {
        DirectionArg::Rx => Direction::Rx,
        DirectionArg::Tx => Direction::Tx,
        DirectionArg::Both => Direction::Both,
    };
    let mut c = Client::connect(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    c.capture(p.port, dir, snaplen, count.unwrap_or(0))
        .map_err(|e| format!("capture: {e}"))?;
    let mut out: Option<PcapNgWriter<Box<dyn std::io::Write>>> = match &file {
        None => None,
        Some(f) => {
            let w: Box<dyn std::io::Write> = if f.as_os_str() == "-" {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::fs::File::create(f).map_err(|e| format!("{}: {e}", f.display()))?)
            };
            let mut w = PcapNgWriter::new(w).map_err(|e| format!("pcapng: {e}"))?;
            let idb = InterfaceDescriptionBlock {
                linktype: pcap_file::DataLink::ETHERNET,
                snaplen,
                options: vec![
                    InterfaceDescriptionOption::IfName(p.name.clone().into()),
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            w.write_pcapng_block(idb)
                .map_err(|e| format!("pcapng: {e}"))?;
            Some(w)
        }
    };
    eprintln!(
        "ferrite capture: port {} ({}), {}; Ctrl-C to stop",
        p.port,
        p.name,
        match dir {
            Direction::Rx => "frames it receives",
            Direction::Tx => "frames sent to it",
            Direction::Both => "both ways",
        }
    );
    let mut n = 0u64;
    while let Some(Repr::CaptureFrame {
        ts_ns,
        orig_len,
        lost,
        direction,
        data,
    }) = c.next_frame().map_err(|e| format!("capture: {e}"))?
    {
        n += 1;
        let tx = direction == Direction::Tx;
        match out.as_mut() {
            Some(w) => {
                let mut options = vec![EnhancedPacketOption::Flags(if tx { 2 } else { 1 })];
                if lost > 0 {
                    options.push(EnhancedPacketOption::DropCount(u64::from(lost)));
                }
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: Duration::from_nanos(ts_ns),
                    original_len: orig_len,
                    data: data.into(),
                    options,
                };
                w.write_pcapng_block(epb)
                    .map_err(|e| format!("pcapng: {e}"))?;
                // Every frame reaches the file at once: an interrupted capture is whole.
                w.get_mut().flush().map_err(|e| format!("write: {e}"))?;
            }
            None => {
                let mac = |b: &[u8]| b.try_into().map(fmt_mac).unwrap_or_default();
                let (dst, src) = (data.get(..6), data.get(6..12));
                let et = data
                    .get(12..14)
                    .map_or(0, |e| u16::from_be_bytes([e[0], e[1]]));
                println!(
                    "{}.{:09} {} {} {} > {} ethertype {et:#06x} length {orig_len}{}",
                    ts_ns / 1_000_000_000,
                    ts_ns % 1_000_000_000,
                    p.name,
                    if tx { "tx" } else { "rx" },
                    src.map(mac).unwrap_or_default(),
                    dst.map(mac).unwrap_or_default(),
                    if lost > 0 {
                        format!(" ({lost} lost before)")
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(n)
}

/// `--watch`'s period: a number of seconds from 0.1 to a day.
fn watch_period(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds from 0.1 to 86400"
        )),
    }
}

/// Takes the server's lock: at once, or (a warm spare) once the server holding it is gone.
fn take_over(
    cfg: &Config,
    standby: bool,
) -> Result<ServerLock, switch::server::standby::LockError> {
    if !standby {
        let l = ServerLock::take(&cfg.server.socket)?;
        l.clear_socket(&cfg.server.socket)?;
        return Ok(l);
    }
    let lock = ServerLock::path_for(&cfg.server.socket);
    tracing::info!(lock = %lock.display(), "standby: waiting for the server to stop");
    if let Some(m) = Notifier::from_env() {
        m.status("standby: waiting for the server to stop");
    }
    let l = ServerLock::wait(&cfg.server.socket)?;
    tracing::info!("standby: the server stopped; taking over");
    l.clear_socket(&cfg.server.socket)?;
    Ok(l)
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
            "  {} rejected: spoofed {} runt {} index_ahead {} bad_pool {} bad_index {} bad_len {} not_held {} bad_meta {}",
            p.name,
            c.spoofed,
            c.runt,
            c.index_ahead,
            c.bad_pool,
            c.bad_index,
            c.bad_len,
            c.not_held,
            c.bad_meta
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

//! Instructions per packet of the Intel port's burst path, counted by callgrind.
//!
//! The driver runs over the register-level model (`pmd::intel::model`): the model plays the
//! wire (it fills receive descriptors and sets DD, and completes transmit descriptors) and
//! only the driver's own functions are counted: `rx_burst`, `tx_burst`, `tx_done` and
//! `reclaim`, each frame received and sent back out (a forwarder's work), at batch 32.
//! Two runs with different packet counts are differenced, so set-up costs cancel.
//!
//! Usage: `intel` measures both families under valgrind and writes results/intel.{json,md};
//! `intel --loop <igb|ixgbe> <bursts>` is the measured program itself.

use std::process::Command;

use grant_pool::{BufHandle, PoolId};
use perf::report::{self, Machine, Table};
use pmd::intel::dma::DmaSource;
use pmd::intel::model::Model;
use pmd::intel::{Family, IntelConfig, IntelPort};
use pmd::{Frame, Port};
use serde::Serialize;

const BATCH: usize = 32;
const TARGET: f64 = 150.0;
const SHORT: u64 = 2_000;
const LONG: u64 = 6_000;

fn family(s: &str) -> Option<Family> {
    match s {
        "igb" => Some(Family::Igb),
        "ixgbe" => Some(Family::Ixgbe),
        _ => None,
    }
}

/// The measured program: `bursts` rounds of receive 32, send them back, clean, reclaim.
fn run_loop(fam: Family, bursts: u64) -> Result<(), String> {
    let m = Model::new(fam, [0x02, 0, 0, 0, 0, 1]);
    let cfg = IntelConfig {
        pci: "model".into(),
        pool: PoolId(1),
        ring_size: 512,
        bufs: 2048,
        dma: DmaSource::SmallPages,
        link_timeout_ms: 1_000,
        ..IntelConfig::default()
    };
    let mut port = IntelPort::with_regs(m.clone(), fam, Box::new(m.clone()), &cfg, "bench".into())
        .map_err(|e| e.to_string())?;
    m.set_logging(false);
    let port: &mut dyn Port = &mut port;
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame[12] = 0x08;
    let mut rx = [Frame::new(BufHandle::from_raw(0), 0); BATCH];
    let mut done = [BufHandle::from_raw(0); 2 * BATCH];
    let (mut got, mut sent) = (0u64, 0u64);
    for _ in 0..bursts {
        for _ in 0..BATCH {
            m.receive(0, &frame);
        }
        let n = port.rx_burst(&mut rx);
        let t = port.tx_burst(&rx[..n]);
        port.reclaim(&rx[t..n].iter().map(|f| f.buf).collect::<Vec<_>>());
        m.transmit_discard(0);
        let d = port.tx_done(&mut done);
        port.reclaim(&done[..d]);
        got += n as u64;
        sent += t as u64;
    }
    if got != bursts * BATCH as u64 || sent != got {
        return Err(format!(
            "expected {} frames each way, got {got} in and {sent} out",
            bursts * BATCH as u64
        ));
    }
    Ok(())
}

/// Runs the loop under callgrind counting only the Port methods matching `func` (a
/// callgrind wildcard; this valgrind honours one `--toggle-collect`); returns the
/// instructions counted.
fn callgrind(fam: &str, bursts: u64, func: &str) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!(
        "ferrite-intel-cg-{}-{fam}-{bursts}",
        std::process::id()
    ));
    let mut c = Command::new("valgrind");
    c.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()));
    c.arg(format!("--toggle-collect=*IntelPort*as pmd::Port>::{func}"));
    c.arg(&exe).args(["--loop", fam, &bursts.to_string()]);
    let o = c
        .output()
        .map_err(|e| format!("valgrind: {e} (install valgrind)"))?;
    if !o.status.success() {
        return Err(format!(
            "callgrind run failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no summary line in the callgrind output".into())
}

#[derive(Serialize)]
struct Row {
    family: String,
    path: String,
    batch: usize,
    instructions_per_packet: f64,
    target: Option<f64>,
}

fn per_packet(fam: &str, func: &str) -> Result<f64, String> {
    let a = callgrind(fam, SHORT, func)?;
    let b = callgrind(fam, LONG, func)?;
    Ok((b as f64 - a as f64) / ((LONG - SHORT) as f64 * BATCH as f64))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--loop") {
        let fam = args.get(2).and_then(|s| family(s));
        let bursts = args.get(3).and_then(|s| s.parse().ok());
        let (Some(fam), Some(bursts)) = (fam, bursts) else {
            eprintln!("usage: intel --loop <igb|ixgbe> <bursts>");
            std::process::exit(2);
        };
        if let Err(e) = run_loop(fam, bursts) {
            eprintln!("intel benchmark loop: {e}");
            std::process::exit(1);
        }
        return;
    }
    let only: Vec<String> = args.iter().skip(1).cloned().collect();
    let mut rows = Vec::new();
    let mut table = Table::new(["family", "path", "batch", "instructions/packet", "target"]);
    for fam in ["igb", "ixgbe"] {
        if !only.is_empty() && !only.iter().any(|o| o == fam) {
            continue;
        }
        // Every Port method the loop calls is rx_burst, tx_burst, tx_done or reclaim.
        let (rx, all) =
            match per_packet(fam, "rx_burst").and_then(|rx| Ok((rx, per_packet(fam, "*")?))) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("intel benchmark: {e}");
                    std::process::exit(1);
                }
            };
        for (name, v, target) in [
            ("rx_burst", rx, None),
            ("tx_burst + tx_done + reclaim", all - rx, None),
            ("rx + tx (whole path)", all, Some(TARGET)),
        ] {
            println!("{fam:6} {name:32} {v:8.1} instructions/packet");
            table.push([
                fam.to_string(),
                name.to_string(),
                BATCH.to_string(),
                format!("{v:.1}"),
                target.map(|t| format!("<= {t}")).unwrap_or_default(),
            ]);
            rows.push(Row {
                family: fam.into(),
                path: name.into(),
                batch: BATCH,
                instructions_per_packet: v,
                target,
            });
        }
    }
    if !only.is_empty() {
        return;
    }
    let machine = Machine::detect();
    let dir = report::results_dir();
    let preface = format!(
        "Instructions per packet of the Intel port's burst functions, counted with \
         `valgrind --tool=callgrind --toggle-collect` on the driver's `rx_burst`, `tx_burst`, \
         `tx_done` and `reclaim` (inclusive of what they call), at batch {BATCH}: every frame \
         received is sent back out, as a forwarder does. The device is the register-level \
         model, which fills receive descriptors and completes transmit descriptors outside \
         the counted functions; a register write (the one tail write per burst) costs a \
         model call here instead of one MMIO store. Runs of {SHORT} and {LONG} bursts are \
         differenced so that set-up cancels. Reference: ixy.rs forwards at ~209 \
         instructions per packet (batch 32); target here <= {TARGET}."
    );
    if let Err(e) =
        report::write_json(&dir.join("intel.json"), "intel", &machine, &rows).and_then(|_| {
            report::write_markdown(
                &dir.join("intel.md"),
                "Intel port: instructions per packet",
                &machine,
                &preface,
                &table,
            )
        })
    {
        eprintln!("intel benchmark: {e}");
        std::process::exit(1);
    }
    println!("{}", table.to_text());
}

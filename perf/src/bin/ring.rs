//! Cross-process ring throughput: one grant-pool SPSC ring in `shm`-granted memory, the
//! producer in this process, the consumer in a child process, pinned to cores 0 and 1 when
//! the machine has two or more.
//!
//! For each batch size the producer reserves, writes and publishes batches of descriptors
//! (numbered, so the consumer checks that none is lost, repeated or reordered) for `--secs`
//! seconds, then a stop descriptor; the consumer peeks, reads and releases batches of the
//! same size and reports how many it received and over how long (first to last descriptor).
//! The whole plan runs `--runs` times over (a fresh child each run); the median per row is
//! reported. Two extra rows measure batch 32 with the producer checking need-wakeup after
//! every publish, as a producer serving a consumer that may sleep does, and batch 32 between
//! two threads of one process, for reference.
//!
//! Writes `results/ring.json`, `results/ring.md` and `results/ring.svg` and prints the table.
//! Both ends spin, so they need their cores to themselves: on a shared machine run it as
//! `chrt -f 1 ring` (root); the policy it ran under is written with the results.
//!
//! Usage: `ring [--secs S] [--runs R] [--ring N] [--batches 1,2,4,...] [--out DIR]`.
//! Internal mode: `ring --child BATCH RING pin|nopin` (the consumer).
//!
//! `ring --inline BATCH COUNT` moves COUNT descriptors through a ring in one thread, a batch
//! produced then a batch consumed, and prints nothing but a checksum: a fixed amount of work
//! for `valgrind --tool=callgrind`, whose instruction count divided by COUNT is the ring's
//! cost per descriptor without any waiting or cache-line transfer.
#![forbid(unsafe_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use grant_pool::pool::PAGE_SIZE;
use grant_pool::shm::{self, ShmBackend};
use grant_pool::{
    Access, Desc, DomId, Grant, GrantBackend, GrantRef, Mapping, RingConsumer, RingLayout,
    RingProducer,
};
use perf::report::{self, Machine, Plot, Series, Table};
use serde::Serialize;

const PRODUCER_CORE: usize = 0;
const CONSUMER_CORE: usize = 1;
/// Flags value of the stop descriptor (numbered descriptors have flags 0).
const STOP: u16 = 0xffff;
/// A run that has not finished after this long is a failure, not a measurement.
const RUN_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Serialize)]
struct Row {
    /// Where the two ends run: "processes" (the figure that matters) or "threads" (the same
    /// ring inside one process, for reference).
    ends: &'static str,
    batch: u32,
    need_wakeup_check: bool,
    ring_size: u32,
    runs: usize,
    /// Median over runs, millions of descriptors per second.
    mdesc_per_s: f64,
    min_mdesc_per_s: f64,
    max_mdesc_per_s: f64,
    /// Descriptors moved in the median run.
    descriptors: u64,
    /// Scheduling policy of the run.
    sched_policy: &'static str,
}

struct Opts {
    secs: f64,
    runs: usize,
    ring: u32,
    batches: Vec<u32>,
    out: PathBuf,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        secs: 0.5,
        runs: 3,
        ring: 4096,
        batches: vec![1, 2, 4, 8, 16, 32, 64, 128, 256],
        out: report::results_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--secs" => o.secs = val()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--ring" => o.ring = val()?.parse().map_err(|e| format!("--ring: {e}"))?,
            "--out" => o.out = PathBuf::from(val()?),
            "--batches" => {
                o.batches = val()?
                    .split(',')
                    .map(|s| s.parse().map_err(|e| format!("--batches: {e}")))
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    if !(o.secs > 0.0 && o.secs <= 30.0) || o.runs == 0 || o.runs > 50 {
        return Err("--secs must be in (0, 30] and --runs in 1..=50".into());
    }
    RingLayout::new(o.ring).map_err(|e| e.to_string())?;
    if o.batches.iter().any(|&b| b == 0 || b > o.ring) {
        return Err("batch sizes must be between 1 and the ring size".into());
    }
    Ok(o)
}

/// Whether to pin: decided once, before anything is pinned (a pinned process or thread sees
/// only its own core in its affinity mask, and its children inherit that mask).
static PINNING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Whether the CPU reports running under a hypervisor (the `hypervisor` flag).
fn virtual_machine() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"))
    })
}

/// The scheduling policy this process runs under, from `/proc/self/stat` (field 41).
fn sched_policy() -> &'static str {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_comm = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
    // Fields after the command name start at field 3; the policy is field 41.
    match after_comm.split_ascii_whitespace().nth(38) {
        Some("0") => "SCHED_OTHER (shares the cores with whatever else runs)",
        Some("1") => "SCHED_FIFO (e.g. `chrt -f 1 ring`: the two ends own their cores)",
        Some("2") => "SCHED_RR",
        Some("3") => "SCHED_BATCH",
        Some("5") => "SCHED_IDLE",
        _ => "unknown",
    }
}

/// Whether both cores exist for this process (call before pinning anything).
fn both_cores_available() -> bool {
    let ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .iter()
        .map(|c| c.id)
        .collect();
    ids.contains(&PRODUCER_CORE) && ids.contains(&CONSUMER_CORE)
}

fn pin(core: usize) -> bool {
    PINNING.get().copied().unwrap_or(false)
        && core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

fn desc(i: u64) -> Desc {
    Desc {
        handle: i as u32,
        len: (i >> 32) as u16,
        meta: 0,
    }
}

/// Spins; on a machine with fewer cores than parties, yields now and then.
#[inline]
fn idle(spins: &mut u32, started: Instant) -> Result<(), String> {
    *spins += 1;
    std::hint::spin_loop();
    if (*spins).is_multiple_of(4096) {
        std::thread::yield_now();
        if started.elapsed() > RUN_LIMIT {
            return Err("the peer made no progress".into());
        }
    }
    Ok(())
}

/// Produces batches of `batch` for `secs` seconds, then the stop descriptor; returns how
/// many numbered descriptors it published and how many wakeups it would have sent.
fn produce(
    p: &mut RingProducer,
    batch: u32,
    secs: f64,
    wakeup_check: bool,
) -> Result<(u64, u64), String> {
    let started = Instant::now();
    let stop_at = started + Duration::from_secs_f64(secs);
    let mut next = 0u64;
    let mut spins = 0u32;
    let mut kicks = 0u64;
    loop {
        // Check the clock once per 1024 batches: the loop itself is what is measured.
        for _ in 0..1024 {
            let k = p.reserve(batch).map_err(|e| e.to_string())?;
            if k < batch {
                idle(&mut spins, started)?;
                continue;
            }
            for i in 0..k {
                p.write(i, desc(next + i as u64));
            }
            p.publish(k);
            next += k as u64;
            if wakeup_check && p.needs_wakeup() {
                kicks += 1;
            }
        }
        if Instant::now() >= stop_at {
            break;
        }
    }
    loop {
        if p.reserve(1).map_err(|e| e.to_string())? == 1 {
            let stop = Desc {
                handle: 0,
                len: 0,
                meta: STOP,
            };
            p.write(0, stop);
            p.publish(1);
            return Ok((next, kicks));
        }
        idle(&mut spins, started)?;
    }
}

/// Consumes batches of up to `batch` until the stop descriptor, checking every descriptor's
/// number; returns how many it received and the nanoseconds from the first to the stop.
fn consume(c: &mut RingConsumer, batch: u32) -> Result<(u64, u64), String> {
    let mut next = 0u64;
    let mut spins = 0;
    let mut first: Option<Instant> = None;
    let started = Instant::now();
    loop {
        let k = c.peek(batch).map_err(|e| e.to_string())?;
        if k == 0 {
            idle(&mut spins, started)?;
            continue;
        }
        first.get_or_insert_with(Instant::now);
        for i in 0..k {
            let d = c.read(i);
            if d != desc(next) {
                if d.meta == STOP {
                    c.release(i + 1);
                    let ns = first.map_or(0, |t| t.elapsed().as_nanos() as u64);
                    return Ok((next, ns));
                }
                return Err(format!("descriptor {next}: got {d:?}"));
            }
            next += 1;
        }
        c.release(k);
    }
}

/// Checks a run's counts and turns them into (descriptors, seconds).
fn settle(produced: u64, kicks: u64, received: u64, ns: u64) -> Result<(u64, f64), String> {
    if received != produced {
        return Err(format!("produced {produced}, consumer received {received}"));
    }
    // The consumer never sleeps here, so a wakeup request would be a bug in the protocol.
    if kicks != 0 {
        return Err(format!("{kicks} wakeups requested by a polling consumer"));
    }
    Ok((received, ns as f64 / 1e9))
}

/// One run with the consumer in a thread of this process, over process-private memory.
fn run_threads(batch: u32, ring: u32, secs: f64, wakeup: bool) -> Result<(u64, f64), String> {
    let layout = RingLayout::new(ring).map_err(|e| e.to_string())?;
    let mem = grant_pool::Memory::local(layout.bytes());
    let mut p = RingProducer::new(mem.clone(), layout, true).map_err(|e| e.to_string())?;
    let mut c = RingConsumer::new(mem.clone(), layout, false).map_err(|e| e.to_string())?;
    let (produced, consumed) = std::thread::scope(|s| {
        let t = s.spawn(move || {
            pin(CONSUMER_CORE);
            consume(&mut c, batch)
        });
        let r = produce(&mut p, batch, secs, wakeup);
        let c = t.join().map_err(|_| "consumer thread panicked".to_string());
        (r, c)
    });
    let (received, ns) = consumed??;
    let (produced, kicks) = produced?;
    settle(produced, kicks, received, ns)
}

/// One run with the consumer in a child process mapping a `shm` grant.
fn run_processes(batch: u32, ring: u32, secs: f64, wakeup: bool) -> Result<(u64, f64), String> {
    let layout = RingLayout::new(ring).map_err(|e| e.to_string())?;
    let be = ShmBackend::new(DomId(1));
    let g = be
        .grant(DomId(2), layout.bytes() / PAGE_SIZE, Access::ReadWrite)
        .map_err(|e| e.to_string())?;
    let mut p = RingProducer::new(g.memory().clone(), layout, true).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    let pinning = PINNING.get().copied().unwrap_or(false);
    cmd.args([
        "--child",
        &batch.to_string(),
        &ring.to_string(),
        if pinning { "pin" } else { "nopin" },
    ]);
    let (mut child, sock) = shm::spawn_connected(&mut cmd).map_err(|e| e.to_string())?;
    let refs: Vec<u8> = g.refs().iter().flat_map(|r| r.0.to_le_bytes()).collect();
    shm::send_fds(sock.as_fd(), &refs, &g.attachments()).map_err(|e| e.to_string())?;
    // Wait for the child to be mapped and pinned before the clock starts.
    let mut buf = [0u8; 128];
    let (n, _) = shm::recv_fds(sock.as_fd(), &mut buf).map_err(|e| e.to_string())?;
    if &buf[..n] != b"ready" {
        return Err(format!("child: {}", String::from_utf8_lossy(&buf[..n])));
    }
    let (produced, kicks) = produce(&mut p, batch, secs, wakeup)?;
    let (n, _) = shm::recv_fds(sock.as_fd(), &mut buf).map_err(|e| e.to_string())?;
    let st = child.wait().map_err(|e| e.to_string())?;
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let mut f = msg.split_ascii_whitespace();
    let (Some("ok"), Some(count), Some(ns)) = (f.next(), f.next(), f.next()) else {
        return Err(format!("child ({st}): {msg}"));
    };
    let count: u64 = count.parse().map_err(|_| format!("child: {msg}"))?;
    let ns: u64 = ns.parse().map_err(|_| format!("child: {msg}"))?;
    settle(produced, kicks, count, ns)
}

/// The consumer process: maps the ring, consumes until the stop descriptor, reports.
fn child(batch: u32, ring: u32) -> Result<(), String> {
    let sock = shm::inherited_socket().ok_or("started without a socket")?;
    let report = |s: &OwnedFd, msg: &str| shm::send_fds(s.as_fd(), msg.as_bytes(), &[]);
    let res = (|| -> Result<(u64, u64), String> {
        let mut buf = [0u8; 4096];
        let (n, fds) = shm::recv_fds(sock.as_fd(), &mut buf).map_err(|e| e.to_string())?;
        let refs: Vec<GrantRef> = buf[..n]
            .chunks_exact(4)
            .map(|c| GrantRef(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect();
        let m = ShmBackend::new(DomId(2))
            .map(DomId(1), &refs, Access::ReadWrite, &fds)
            .map_err(|e| e.to_string())?;
        let layout = RingLayout::new(ring).map_err(|e| e.to_string())?;
        let mut c =
            RingConsumer::new(m.memory().clone(), layout, false).map_err(|e| e.to_string())?;
        pin(CONSUMER_CORE);
        report(&sock, "ready").map_err(|e| e.to_string())?;
        consume(&mut c, batch)
    })();
    let msg = match res {
        Ok((count, ns)) => format!("ok {count} {ns}"),
        Err(e) => format!("error {e}"),
    };
    report(&sock, &msg).map_err(|e| e.to_string())
}

/// The single-threaded protocol loop for instruction counting (see the module docs).
fn inline(batch: u32, count: u64) -> Result<u64, String> {
    let layout = RingLayout::new(4096).map_err(|e| e.to_string())?;
    let mem = grant_pool::Memory::local(layout.bytes());
    let mut p = RingProducer::new(mem.clone(), layout, true).map_err(|e| e.to_string())?;
    let mut c = RingConsumer::new(mem.clone(), layout, false).map_err(|e| e.to_string())?;
    let mut next = 0u64;
    let mut sum = 0u64;
    while next < count {
        let k = p.reserve(batch).map_err(|e| e.to_string())?;
        for i in 0..k {
            p.write(i, desc(next + i as u64));
        }
        p.publish(k);
        let n = c.peek(batch).map_err(|e| e.to_string())?;
        for i in 0..n {
            sum = sum.wrapping_add(c.read(i).handle as u64);
        }
        c.release(n);
        next += n as u64;
    }
    Ok(sum)
}

/// One run of one row of the plan, in M descriptors/s and descriptors moved.
fn once(o: &Opts, batch: u32, wakeup: bool, processes: bool) -> Result<(f64, u64), String> {
    let (n, s) = if processes {
        run_processes(batch, o.ring, o.secs, wakeup)?
    } else {
        run_threads(batch, o.ring, o.secs, wakeup)?
    };
    Ok((n as f64 / s / 1e6, n))
}

/// The row of one plan item from its runs.
fn summarize(
    o: &Opts,
    (batch, wakeup, processes): (u32, bool, bool),
    mut rates: Vec<(f64, u64)>,
) -> Row {
    rates.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (median, descriptors) = rates[rates.len() / 2];
    Row {
        ends: if processes { "processes" } else { "threads" },
        batch,
        need_wakeup_check: wakeup,
        ring_size: o.ring,
        runs: o.runs,
        mdesc_per_s: median,
        min_mdesc_per_s: rates[0].0,
        max_mdesc_per_s: rates[rates.len() - 1].0,
        descriptors,
        sched_policy: sched_policy(),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(Ok(b)), Some(Ok(r))) = (
            args.get(1).map(|s| s.parse()),
            args.get(2).map(|s| s.parse()),
        ) else {
            eprintln!("usage: ring --child BATCH RING pin|nopin");
            std::process::exit(2);
        };
        let _ = PINNING.set(args.get(3).map(String::as_str) == Some("pin"));
        if let Err(e) = child(b, r) {
            eprintln!("ring consumer: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--inline") {
        let (Some(Ok(b)), Some(Ok(n))) = (
            args.get(1).map(|s| s.parse::<u32>()),
            args.get(2).map(|s| s.parse::<u64>()),
        ) else {
            eprintln!("usage: ring --inline BATCH COUNT");
            std::process::exit(2);
        };
        match inline(b.clamp(1, 4096), n) {
            Ok(sum) => println!("checksum {sum}"),
            Err(e) => {
                eprintln!("ring: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!(
                "ring: {e}\nusage: ring [--secs S] [--runs R] [--ring N] [--batches 1,2,4] [--out DIR]"
            );
            std::process::exit(2);
        }
    };
    // Before pinning: a pinned process sees one core.
    let machine = Machine::detect();
    let _ = PINNING.set(both_cores_available());
    let pinned = pin(PRODUCER_CORE);
    // (batch, need-wakeup check, processes): every batch size across processes, then batch
    // 32 with the wakeup check, then batch 32 between two threads for reference.
    let mut plan: Vec<(u32, bool, bool)> = o.batches.iter().map(|&b| (b, false, true)).collect();
    if o.batches.contains(&32) {
        plan.push((32, true, true));
        plan.push((32, false, false));
    }
    // Passes over the whole plan, so that a change of conditions during the run (the host
    // moving a virtual CPU) touches every row alike rather than a few rows entirely.
    let mut rates: Vec<Vec<(f64, u64)>> = vec![Vec::new(); plan.len()];
    for pass in 0..o.runs {
        for (i, &(b, w, procs)) in plan.iter().enumerate() {
            match once(&o, b, w, procs) {
                Ok(r) => {
                    eprintln!(
                        "pass {} {:>9} batch {:>3}{}: {:8.1} M desc/s",
                        pass + 1,
                        if procs { "processes" } else { "threads" },
                        b,
                        if w { " +need-wakeup check" } else { "" },
                        r.0
                    );
                    rates[i].push(r);
                }
                Err(e) => {
                    eprintln!("ring: batch {b}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
    let rows: Vec<Row> = plan
        .iter()
        .zip(rates)
        .map(|(&item, r)| summarize(&o, item, r))
        .collect();
    let mut t = Table::new([
        "ends",
        "batch",
        "need-wakeup check",
        "M desc/s (median)",
        "min",
        "max",
    ]);
    for r in &rows {
        t.push([
            r.ends.to_string(),
            r.batch.to_string(),
            if r.need_wakeup_check { "yes" } else { "no" }.to_string(),
            format!("{:.1}", r.mdesc_per_s),
            format!("{:.1}", r.min_mdesc_per_s),
            format!("{:.1}", r.max_mdesc_per_s),
        ]);
    }
    println!("{}", t.to_text());
    let load_end = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into());
    let preface = format!(
        "{}Load average (1, 5, 15 min) at the start of the run: {}; at the end: {load_end}.\n\n\
         Cross-process SPSC ring: producer in one process, consumer in another, one \
         `shm`-granted ring of {} descriptors; {} run(s) of {} s per row, median \
         reported; every descriptor checked for order by the consumer. The `threads` row is \
         the same ring between two threads of one process, for reference. Ends pinned to \
         cores {PRODUCER_CORE} and {CONSUMER_CORE}: {}. Scheduling policy: {}. Spinning ends \
         need the two cores to themselves: under SCHED_OTHER on a loaded machine the figures \
         measure the scheduler, not the ring. On a virtual machine the figures also depend on \
         where the host places the two virtual CPUs: sharing a last-level cache, cache lines \
         move between the ends several times faster than across core complexes, and \
         placement can change between runs; min and max show the spread within this run.",
        if virtual_machine() {
            "A virtual machine (the CPU reports a hypervisor). "
        } else {
            ""
        },
        machine.load,
        o.ring,
        o.runs,
        o.secs,
        if pinned {
            "yes"
        } else {
            "no (fewer than 2 cores)"
        },
        sched_policy()
    );
    let plot = Plot {
        title: "Cross-process ring throughput".into(),
        x_label: "batch size (descriptors)".into(),
        y_label: "M descriptors/s".into(),
        log2_x: true,
        series: vec![Series {
            name: "two processes".into(),
            points: rows
                .iter()
                .filter(|r| !r.need_wakeup_check && r.ends == "processes")
                .map(|r| (r.batch as f64, r.mdesc_per_s))
                .collect(),
        }],
        footnote: machine.summary(),
    };
    let res = report::write_json(&o.out.join("ring.json"), "ring", &machine, &rows)
        .and_then(|_| {
            report::write_markdown(
                &o.out.join("ring.md"),
                "Cross-process ring throughput",
                &machine,
                &preface,
                &t,
            )
        })
        .and_then(|_| report::write_file(&o.out.join("ring.svg"), &plot.to_svg()));
    if let Err(e) = res {
        eprintln!("ring: {e}");
        std::process::exit(1);
    }
}

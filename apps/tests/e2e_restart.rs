//! End-to-end (root): the Ferrite server is SIGKILLed in the middle of a 500 MB TCP transfer
//! from the Linux peer to an app domain and started again; the same TCP connection completes
//! and the app's sha256 of what arrived matches the file sent. The time from the restart to
//! the first forwarded frame is printed. Both `af_xdp` and `af_packet`.
#![forbid(unsafe_code)]

mod netns;

use std::time::{Duration, Instant};

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Offloads, Topology};

const TOOLS: &[&str] = &[
    "ip",
    "ethtool",
    "taskset",
    "ping",
    "socat",
    "ss",
    "sha256sum",
];
const TOTAL: u64 = 500 * 1000 * 1000;
const KILL_AFTER: u64 = 100 * 1000 * 1000;

/// Bytes the peer's connection to `dst` has had acknowledged (from `ss -tin`), if it exists.
fn bytes_acked(t: &Topology, dst: &str) -> Option<u64> {
    let out = t.p.output(["ss", "-tinH", "dst", dst]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("bytes_acked:"))
        .and_then(|v| v.parse().ok())
}

fn transfer_survives_restart(backend: Backend) {
    if !netns::ready(&format!("restart_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    let file = t.dir.join("payload.bin");
    netns::write_pattern_file(&file, TOTAL, 0x5eed);
    let want = netns::sha256_file(&file);

    let app = AppSpec::numbered("bulk", 1);
    let mut srv = Server::start(&t, backend, std::slice::from_ref(&app));
    let mut sink = srv.app("ferrite-bulk", &app, &["--listen=5201", "--once"]);
    if let Err(e) = netns::wait_reachable(&t, &app.ip, Duration::from_secs(20)) {
        panic!("{e}\napp log:\n{}\nserver log:\n{}", sink.log(), srv.log());
    }

    let mut sender = netns::peer_send_file(&t, &file, &app.ip, 5201);
    let progressed = netns::wait_until(
        "100 MB acknowledged before the kill",
        Duration::from_secs(120),
        || bytes_acked(&t, &app.ip).is_some_and(|b| b >= KILL_AFTER),
    );
    if let Err(e) = progressed {
        panic!(
            "{e}\nsender log:\n{}\napp log:\n{}\nserver stats:\n{}",
            sender.log(),
            sink.log(),
            srv.stats()
        );
    }
    let before = bytes_acked(&t, &app.ip).unwrap_or(0);
    srv.kill();
    let killed = Instant::now();
    let started = srv.restart();
    let first = srv.wait_first_frame(Duration::from_secs(30));
    eprintln!(
        "{}: killed after {} MB acked; new server spawned {:?} after the kill; first forwarded \
         frame {:?} after the new server's start (server's own measure), {:?} after the kill",
        backend.as_str(),
        before / 1_000_000,
        started.duration_since(killed),
        first,
        first + started.duration_since(killed)
    );

    let code = sender.wait_exit(Duration::from_secs(240));
    assert_eq!(code, Some(0), "sender failed:\n{}", sender.log());
    let log = sink.wait_log(&want, Duration::from_secs(60));
    assert!(
        log.contains(&TOTAL.to_string()),
        "sink did not report {TOTAL} bytes:\n{log}"
    );
    assert_eq!(sink.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn restart_af_xdp() {
    transfer_survives_restart(Backend::AfXdp);
}

#[test]
fn restart_af_packet() {
    transfer_survives_restart(Backend::AfPacket);
}

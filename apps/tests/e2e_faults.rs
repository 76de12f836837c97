//! End-to-end (root): the server's NIC port drops, duplicates, corrupts and delays frames
//! both ways (`[ports.faults]`), and TCP between a Linux peer and an app domain still delivers
//! every byte in order both ways (sha256): the apps' stacks and the peer recover from what the
//! port does, the server keeps forwarding, and `ferrite stats` counts the injected drops.
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Offloads, PEER_IP, Topology};

const TOOLS: &[&str] = &["ip", "ethtool", "taskset", "socat", "sha256sum"];
const TOTAL: u64 = 8 * 1000 * 1000;
/// About one frame in 200 dropped, one in 500 duplicated or corrupted, one in 100 delayed
/// by 300 µs (overtaken by the next ones), each way.
const FAULTS: &str = "faults = { drop = 0.005, duplicate = 0.002, corrupt = 0.002, delay = 0.01, \
                      delay_us = 300, seed = 42 }";

/// The `rx_drop` and `tx_drop` columns of the NIC port's row in `ferrite stats`.
fn nic_drops(stats: &str) -> Option<(u64, u64)> {
    let row = stats.lines().find(|l| l.contains(" nic "))?;
    let f: Vec<&str> = row.split_whitespace().collect();
    Some((f.get(6)?.parse().ok()?, f.get(9)?.parse().ok()?))
}

fn both_ways(backend: Backend) {
    if !netns::ready(&format!("faults_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    let file = t.dir.join("payload.bin");
    netns::write_pattern_file(&file, TOTAL, 0xfa17);
    let want = netns::sha256_file(&file);
    let (sink_app, src_app) = (AppSpec::numbered("sink", 1), AppSpec::numbered("src", 2));
    let srv = Server::start_with(&t, backend, &[sink_app.clone(), src_app.clone()], FAULTS);

    // Peer -> app.
    let mut sink = srv.app("ferrite-bulk", &sink_app, &["--listen=5201", "--once"]);
    if let Err(e) = netns::wait_reachable(&t, &sink_app.ip, Duration::from_secs(20)) {
        panic!("{e}\napp log:\n{}\nserver log:\n{}", sink.log(), srv.log());
    }
    let mut sender = netns::peer_send_file(&t, &file, &sink_app.ip, 5201);
    assert_eq!(
        sender.wait_exit(Duration::from_secs(120)),
        Some(0),
        "sender failed:\n{}\napp log:\n{}\nserver stats:\n{}",
        sender.log(),
        sink.log(),
        srv.stats()
    );
    let log = sink.wait_log(&want, Duration::from_secs(60));
    assert!(
        log.contains(&want),
        "the app received other bytes than the peer sent:\n{log}\nserver stats:\n{}",
        srv.stats()
    );
    assert_eq!(sink.wait_exit(Duration::from_secs(10)), Some(0));

    // App -> peer.
    let out = t.dir.join("received.bin");
    let mut peer_sink = netns::peer_receive_file(&t, &out, 5202);
    std::thread::sleep(Duration::from_millis(300));
    let mut source = srv.app(
        "ferrite-bulk",
        &src_app,
        &[
            &format!("--connect={PEER_IP}:5202"),
            &format!("--bytes={TOTAL}"),
            "--seed=9",
        ],
    );
    assert_eq!(
        source.wait_exit(Duration::from_secs(120)),
        Some(0),
        "source failed:\n{}\nserver stats:\n{}",
        source.log(),
        srv.stats()
    );
    assert_eq!(peer_sink.wait_exit(Duration::from_secs(30)), Some(0));
    let sent = netns::source_sha256(&source.log());
    assert_eq!(
        sent,
        Some(netns::sha256_file(&out)),
        "the peer received other bytes than the app sent"
    );

    let stats = srv.stats();
    let (rx_drop, tx_drop) = nic_drops(&stats).unwrap_or((0, 0));
    assert!(
        rx_drop > 0 && tx_drop > 0,
        "no injected drops counted:\n{stats}"
    );
    assert!(
        srv.log().contains("injecting faults"),
        "the server did not say it injects faults"
    );
}

#[test]
fn tcp_survives_a_faulty_port_af_packet() {
    both_ways(Backend::AfPacket);
}

#[test]
fn tcp_survives_a_faulty_port_af_xdp() {
    both_ways(Backend::AfXdp);
}

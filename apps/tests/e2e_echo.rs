//! End-to-end (root): TCP echo through `nc` and UDP ping-pong with the unmodified
//! `sockperf ping-pong` client, from the Linux peer namespace to app domains behind the
//! Ferrite server's `af_xdp` and `af_packet` ports.
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Offloads, Topology};

const TOOLS: &[&str] = &[
    "ip",
    "ethtool",
    "taskset",
    "ping",
    "nc",
    "sockperf",
    "sha256sum",
];

fn tcp_echo_and_udp_pingpong(backend: Backend) {
    if !netns::ready(&format!("echo_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    let echo = AppSpec::numbered("echo", 1);
    let sp = AppSpec::numbered("sockperf", 2);
    let srv = Server::start(&t, backend, &[echo.clone(), sp.clone()]);
    let echo_app = srv.app("ferrite-echo", &echo, &["--port", "7"]);
    let sp_app = srv.app("ferrite-sockperf", &sp, &["--port", "11111"]);
    for (a, bg) in [(&echo, &echo_app), (&sp, &sp_app)] {
        if let Err(e) = netns::wait_reachable(&t, &a.ip, Duration::from_secs(20)) {
            panic!("{e}\napp log:\n{}\nserver log:\n{}", bg.log(), srv.log());
        }
    }

    // TCP: 1 MiB through the echo app and back, byte for byte.
    let sent = t.dir.join("echo.in");
    let back = t.dir.join("echo.out");
    netns::write_pattern_file(&sent, 1 << 20, 42);
    let script = format!(
        "timeout 60 nc -N {} 7 < {} > {}",
        echo.ip,
        sent.display(),
        back.display()
    );
    let out = t.p.output(["sh", "-c", &script]);
    assert!(
        out.status.success(),
        "nc: {}\napp log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        echo_app.log()
    );
    assert_eq!(
        netns::sha256_file(&back),
        netns::sha256_file(&sent),
        "echoed bytes differ ({} of {} bytes came back)",
        std::fs::metadata(&back).map(|m| m.len()).unwrap_or(0),
        1 << 20
    );

    // UDP: the stock sockperf client against the app's sockperf-compatible server.
    let out = t.p.output([
        "sockperf",
        "ping-pong",
        "-i",
        &sp.ip,
        "-p",
        "11111",
        "-t",
        "2",
        "--msg-size",
        "64",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let Some((p50, p99, received)) = netns::parse_sockperf(&text) else {
        panic!(
            "sockperf printed no summary:\n{text}\napp log:\n{}",
            sp_app.log()
        );
    };
    assert!(received > 100, "only {received} replies:\n{text}");
    assert!(
        text.contains("# dropped messages = 0"),
        "sockperf saw drops:\n{text}"
    );
    eprintln!(
        "{}: sockperf ping-pong {received} replies, p50 {p50} us, p99 {p99} us",
        backend.as_str()
    );
}

#[test]
fn echo_af_xdp() {
    tcp_echo_and_udp_pingpong(Backend::AfXdp);
}

#[test]
fn echo_af_packet() {
    tcp_echo_and_udp_pingpong(Backend::AfPacket);
}

//! End-to-end (root): the Linux peer runs with its veth offloads on (TSO, GSO, GRO, checksum
//! offload: Linux's defaults), and files sent over TCP both ways between it and an app domain
//! arrive intact (sha256). On `af_packet` the peer's 64 KiB GSO frames reach the app whole,
//! and the app's 64 KiB TSO segments reach the peer whole (its capture shows them); on
//! `af_xdp` veth segments the peer's frames itself (it drops its peer's GSO features while an
//! XDP program is attached) and the switch cuts the app's, completing checksums where the
//! sender left them partial. With jumbo frames (MTU 9000 on both ends, `af_packet`) a
//! 9000-byte ping goes unfragmented and a transfer arrives intact.
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, Offloads, PEER_IP, Topology, VP};

const TOOLS: &[&str] = &[
    "ip",
    "ethtool",
    "taskset",
    "socat",
    "sha256sum",
    "tcpdump",
    "ping",
];
const TOTAL: u64 = 64 * 1000 * 1000;
/// The largest TCP payload of one 1500-byte IPv4 frame (no options): a captured segment
/// longer than this was not cut into MTU-sized frames.
const MTU_MSS: usize = 1460;

fn transfer_with_offloads_on(backend: Backend) {
    peer_to_app(backend, 1500, &[]);
}

/// The peer sends a file to an app (MTU `mtu` on both veth ends, `app_args` for the app).
fn peer_to_app(backend: Backend, mtu: u32, app_args: &[&str]) {
    if !netns::ready(&format!("offloads_on_{}_mtu{mtu}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::On, mtu);
    let k = t.p.run(["ethtool", "-k", VP]);
    let k = String::from_utf8_lossy(&k.stdout);
    assert!(
        k.contains("tx-checksumming: on") && k.contains("generic-segmentation-offload: on"),
        "offloads not on for {VP}:\n{k}"
    );
    let file = t.dir.join("payload.bin");
    netns::write_pattern_file(&file, TOTAL, 0x0ff1);
    let want = netns::sha256_file(&file);

    let app = AppSpec::numbered("bulk", 1);
    let srv = Server::start(&t, backend, std::slice::from_ref(&app));
    let mut args = vec!["--listen=5201", "--once"];
    args.extend_from_slice(app_args);
    let mut sink = srv.app("ferrite-bulk", &app, &args);
    if let Err(e) = netns::wait_reachable(&t, &app.ip, Duration::from_secs(20)) {
        panic!("{e}\napp log:\n{}\nserver log:\n{}", sink.log(), srv.log());
    }
    if mtu > 1500 {
        // The largest ICMP echo the MTU carries, with fragmentation forbidden.
        let size = (mtu - 28).to_string();
        let out = t.p.output([
            "ping", "-c", "3", "-W", "2", "-M", "do", "-s", &size, &app.ip,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && netns::parse_ping(&text).is_some_and(|(_, got)| got > 0),
            "{size}-byte ping to {}:\n{text}\n{}\nserver stats:\n{}",
            app.ip,
            String::from_utf8_lossy(&out.stderr),
            srv.stats()
        );
    }
    let mut sender = netns::peer_send_file(&t, &file, &app.ip, 5201);
    if let Err(e) = netns::wait_until("the sender to finish", Duration::from_secs(90), || {
        !sender.alive()
    }) {
        panic!(
            "{e}\nsender log:\n{}\napp log:\n{}\nserver stats:\n{}\nss:\n{}\nserver log:\n{}",
            sender.log(),
            sink.log(),
            srv.stats(),
            String::from_utf8_lossy(&t.p.output(["ss", "-tin"]).stdout),
            srv.log()
        );
    }
    let code = sender.wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "sender failed:\n{}\napp log:\n{}\nserver stats:\n{}",
        sender.log(),
        sink.log(),
        srv.stats()
    );
    let log = sink.wait_log(&want, Duration::from_secs(60));
    assert!(
        log.contains(&TOTAL.to_string()),
        "sink did not report {TOTAL} bytes:\n{log}"
    );
    assert_eq!(sink.wait_exit(Duration::from_secs(10)), Some(0));
}

/// An app sends `TOTAL` bytes to a sink on the peer, which captures the transfer; returns
/// how many of the captured TCP segments carried more than one MSS.
fn app_to_peer(backend: Backend) -> usize {
    if !netns::ready(&format!("app_to_peer_{}", backend.as_str()), TOOLS) {
        return 0;
    }
    let t = Topology::new(Offloads::On, 1500);
    let app = AppSpec::numbered("bulk", 1);
    let srv = Server::start(&t, backend, std::slice::from_ref(&app));
    let out = t.dir.join("received.bin");
    let cap = t.dir.join("capture.txt");
    let mut sink = netns::peer_receive_file(&t, &out, 5202);
    // Headers only: the TCP payload length of every segment the peer receives.
    let mut dump = Bg::spawn(
        "tcpdump",
        t.dir.path(),
        t.p.cmd("sh").args([
            "-c".to_string(),
            format!(
                "exec tcpdump -l -nn -s 128 -i {} 'tcp dst port 5202' > {}",
                netns::VP,
                cap.display()
            ),
        ]),
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut source = srv.app(
        "ferrite-bulk",
        &app,
        &[
            &format!("--connect={PEER_IP}:5202"),
            &format!("--bytes={TOTAL}"),
            "--seed=5",
        ],
    );
    assert_eq!(
        source.wait_exit(Duration::from_secs(120)),
        Some(0),
        "source failed:\n{}\npeer sink:\n{}\nserver stats:\n{}\nserver log:\n{}",
        source.log(),
        sink.log(),
        srv.stats(),
        srv.log()
    );
    assert_eq!(
        sink.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        sink.log()
    );
    let sent = netns::source_sha256(&source.log());
    assert_eq!(
        sent,
        Some(netns::sha256_file(&out)),
        "what the peer received differs from what the app sent:\n{}",
        source.log()
    );
    dump.kill();
    let text = std::fs::read_to_string(&cap).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.rsplit("length ").next()?.trim().parse::<usize>().ok())
        .filter(|&n| n > MTU_MSS)
        .count()
}

#[test]
fn app_to_peer_af_xdp() {
    app_to_peer(Backend::AfXdp);
}

#[test]
fn app_to_peer_af_packet_sends_large_segments_whole() {
    let large = app_to_peer(Backend::AfPacket);
    if netns::ready("app_to_peer_af_packet", TOOLS) {
        assert!(
            large > 0,
            "the peer's capture shows no segment larger than one MSS"
        );
    }
}

#[test]
fn jumbo_frames_af_packet() {
    peer_to_app(Backend::AfPacket, 9000, &["--mtu=9000"]);
}

#[test]
fn offloads_on_af_xdp() {
    transfer_with_offloads_on(Backend::AfXdp);
}

#[test]
fn offloads_on_af_packet() {
    transfer_with_offloads_on(Backend::AfPacket);
}

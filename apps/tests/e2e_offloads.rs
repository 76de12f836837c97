//! End-to-end (root): the Linux peer runs with its veth offloads on (TSO, GSO, GRO, checksum
//! offload: Linux's defaults), and a file sent over TCP to an app domain arrives intact (the
//! app's sha256 matches). On `af_packet` the peer's 64 KiB GSO frames reach the port and are
//! cut into MTU-sized segments in software; on `af_xdp` veth segments them itself (it drops
//! its peer's GSO features while an XDP program is attached) and the port completes the
//! checksums the peer left partial.
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Bg, Offloads, PEER_IP, Topology, VP};

const TOOLS: &[&str] = &["ip", "ethtool", "taskset", "socat", "sha256sum"];
const TOTAL: u64 = 64 * 1000 * 1000;

fn transfer_with_offloads_on(backend: Backend) {
    if !netns::ready(&format!("offloads_on_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::On, 1500);
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
    let mut sink = srv.app("ferrite-bulk", &app, &["--listen=5201", "--once"]);
    if let Err(e) = netns::wait_reachable(&t, &app.ip, Duration::from_secs(20)) {
        panic!("{e}\napp log:\n{}\nserver log:\n{}", sink.log(), srv.log());
    }
    let mut sender = Bg::spawn(
        "sender",
        t.dir.path(),
        t.p.cmd("socat").args([
            "-u".to_string(),
            format!("OPEN:{}", file.display()),
            format!("TCP:{}:5201,bind={PEER_IP}", app.ip),
        ]),
    );
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

#[test]
fn offloads_on_af_xdp() {
    transfer_with_offloads_on(Backend::AfXdp);
}

#[test]
fn offloads_on_af_packet() {
    transfer_with_offloads_on(Backend::AfPacket);
}

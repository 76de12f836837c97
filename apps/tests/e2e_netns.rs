//! End-to-end harness checks (root): the namespace/veth topology the Ferrite tests build carries
//! traffic between a Linux peer and a kernel socket, offloads are applied, and everything a
//! test creates is gone after it, even when the test panics.
#![forbid(unsafe_code)]

mod netns;

use std::process::Command;
use std::time::Duration;

use netns::{Bg, KERNEL_IP, Offloads, PEER_IP, Topology, VF, VP};

fn netns_exists(name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn kernel_peers_talk_over_the_veth_and_offloads_are_applied() {
    if !netns::ready(
        "kernel_peers_talk_over_the_veth",
        &["ip", "ethtool", "ping", "socat", "taskset", "sha256sum"],
    ) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    t.address_kernel_side();
    let out =
        t.p.output(["ping", "-c", "3", "-i", "0.05", "-W", "2", KERNEL_IP]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        netns::parse_ping(&text),
        Some((3, 3)),
        "ping output:\n{text}"
    );

    let k = t.p.run(["ethtool", "-k", VP]);
    let k = String::from_utf8_lossy(&k.stdout);
    assert!(
        k.contains("tcp-segmentation-offload: off"),
        "TSO still on for {VP}:\n{k}"
    );

    // A file goes through a kernel TCP connection intact.
    let src = t.dir.join("src.bin");
    let dst = t.dir.join("dst.bin");
    netns::write_pattern_file(&src, 3 << 20, 7);
    let mut sink = Bg::spawn(
        "sink",
        t.dir.path(),
        t.s.cmd("socat").args([
            "-u".to_string(),
            "TCP-LISTEN:5001,reuseaddr".to_string(),
            format!("OPEN:{},creat,trunc", dst.display()),
        ]),
    );
    netns::wait_until("the sink to listen", Duration::from_secs(5), || {
        let o = t.s.output(["ss", "-ltn"]);
        String::from_utf8_lossy(&o.stdout).contains(":5001")
    })
    .expect("sink listening");
    t.p.run([
        "socat".to_string(),
        "-u".to_string(),
        format!("OPEN:{}", src.display()),
        format!("TCP:{KERNEL_IP}:5001,bind={PEER_IP}"),
    ]);
    assert_eq!(sink.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(netns::sha256_file(&src), netns::sha256_file(&dst));
    let _ = VF;
}

#[test]
fn namespaces_are_removed_even_when_the_test_panics() {
    if !netns::ready("namespaces_are_removed", &["ip", "ethtool"]) {
        return;
    }
    let mut names = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t = Topology::new(Offloads::On, 1500);
        names.push(t.p.name().to_string());
        names.push(t.s.name().to_string());
        assert!(netns_exists(t.p.name()) && netns_exists(t.s.name()));
        panic!("deliberate");
    }));
    assert!(r.is_err());
    assert_eq!(names.len(), 2);
    for n in &names {
        assert!(!netns_exists(n), "namespace {n} left behind");
    }
}

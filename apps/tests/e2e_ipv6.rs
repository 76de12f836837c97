//! End-to-end (root): app domains speak IPv6 beside IPv4. The Linux peer finds them with NDP
//! (its solicitations go to solicited-node multicast groups, which the switch floods, and
//! the apps answer), pings them with `ping -6`, fetches a page and a file from `ferrite-http`
//! with `curl -6` (sha256 checked), and has UDP datagrams echoed by `ferrite-echo` (`socat`),
//! through the server's `af_xdp` and `af_packet` ports. (Debian's `sockperf` 3.7 takes no
//! IPv6 address, so the UDP check uses socat.)
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Offloads, Topology, VP};

const TOOLS: &[&str] = &[
    "ip",
    "ethtool",
    "taskset",
    "ping",
    "curl",
    "sha256sum",
    "sockperf",
];
/// The peer's IPv6 address, and the apps' (`::10 + n`).
const PEER6: &str = "fd00:77::1";
const FILE: u64 = 20 * 1000 * 1000;

fn ip6(n: u8) -> String {
    format!("fd00:77::{:x}", 0x10 + u32::from(n))
}

fn ipv6(backend: Backend) {
    if !netns::ready(&format!("ipv6_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::On, 1500);
    // No duplicate address detection: the address is usable at once.
    t.p.run([
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{PEER6}/64"),
        "dev",
        VP,
        "nodad",
    ]);
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www).expect("web root");
    std::fs::write(www.join("index.html"), "<p>over IPv6</p>\n").expect("page");
    netns::write_pattern_file(&www.join("f.bin"), FILE, 0x6666);
    let want = netns::sha256_file(&www.join("f.bin"));

    let http = AppSpec::numbered("http", 1);
    let sp = AppSpec::numbered("echo", 2);
    let srv = Server::start(&t, backend, &[http.clone(), sp.clone()]);
    let root = www.to_string_lossy().into_owned();
    let (a6, s6) = (format!("{}/64", ip6(1)), format!("{}/64", ip6(2)));
    let http_app = srv.app(
        "ferrite-http",
        &http,
        &["--root", &root, "--port", "80", "--ip6", &a6],
    );
    let sp_app = srv.app("ferrite-echo", &sp, &["--port", "7", "--ip6", &s6]);
    for (addr, bg) in [(ip6(1), &http_app), (ip6(2), &sp_app)] {
        let ok = netns::wait_until(
            &format!("{addr} to answer ping -6"),
            Duration::from_secs(20),
            || {
                t.p.output(["ping", "-6", "-c", "1", "-W", "1", &addr])
                    .status
                    .success()
            },
        );
        if let Err(e) = ok {
            panic!("{e}\napp log:\n{}\nserver log:\n{}", bg.log(), srv.log());
        }
    }

    let out =
        t.p.output(["ping", "-6", "-c", "50", "-i", "0.01", "-w", "20", &ip6(1)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(netns::parse_ping(&text), Some((50, 50)), "ping -6:\n{text}");
    // The peer learned the app's MAC by NDP.
    let neigh = t.p.output(["ip", "-6", "neigh", "show", &ip6(1)]);
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    assert!(neigh.contains(&http.mac), "neighbour entry: {neigh}");

    let url = format!("http://[{}]/index.html", ip6(1));
    let out = t.p.output(["curl", "-6", "-sS", "--max-time", "20", &url]);
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "<p>over IPv6</p>\n");
    let got = t.dir.join("f.got");
    let url = format!("http://[{}]/f.bin", ip6(1));
    let out = t.p.output([
        "curl".to_string(),
        "-6".into(),
        "-sS".into(),
        "--max-time".into(),
        "120".into(),
        "-o".into(),
        got.to_string_lossy().into_owned(),
        url.clone(),
    ]);
    assert!(
        out.status.success(),
        "curl {url}: {}\napp log:\n{}\nserver stats:\n{}",
        String::from_utf8_lossy(&out.stderr),
        http_app.log(),
        srv.stats()
    );
    assert_eq!(netns::sha256_file(&got), want, "the file differs");

    // UDP: 20 datagrams, each echoed.
    for i in 0..20 {
        let msg = format!("datagram {i} over IPv6");
        let script = format!("echo '{msg}' | timeout 5 socat -t 2 - UDP6:[{}]:7", ip6(2));
        let out = t.p.output(["sh", "-c", &script]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            msg,
            "UDP echo over IPv6\napp log:\n{}",
            sp_app.log()
        );
    }
}

#[test]
fn ipv6_af_xdp() {
    ipv6(Backend::AfXdp);
}

#[test]
fn ipv6_af_packet() {
    ipv6(Backend::AfPacket);
}

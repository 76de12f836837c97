//! End-to-end (root): a Linux peer pings an app domain through the Ferrite server's `af_xdp`
//! and `af_packet` ports on a veth, then floods it with 10 000 echo requests and loses none.
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Offloads, Topology};

const TOOLS: &[&str] = &["ip", "ethtool", "taskset", "ping"];

fn ping_and_flood(backend: Backend) {
    if !netns::ready(&format!("ping_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    let app = AppSpec::numbered("echo", 1);
    let srv = Server::start(&t, backend, std::slice::from_ref(&app));
    let echo = srv.app("ferrite-echo", &app, &[]);
    if let Err(e) = netns::wait_reachable(&t, &app.ip, Duration::from_secs(20)) {
        panic!("{e}\napp log:\n{}\nserver log:\n{}", echo.log(), srv.log());
    }

    let out =
        t.p.output(["ping", "-c", "20", "-i", "0.01", "-w", "20", &app.ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(netns::parse_ping(&text), Some((20, 20)), "ping:\n{text}");

    // Flood: the next request goes out as soon as a reply comes back (or every 10 ms).
    let out =
        t.p.output(["ping", "-f", "-c", "10000", "-w", "120", "-W", "1", &app.ip]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        netns::parse_ping(&text),
        Some((10_000, 10_000)),
        "flood ping lost replies:\n{text}\nserver stats:\n{}",
        srv.stats()
    );
}

#[test]
fn ping_af_xdp() {
    ping_and_flood(Backend::AfXdp);
}

#[test]
fn ping_af_packet() {
    ping_and_flood(Backend::AfPacket);
}

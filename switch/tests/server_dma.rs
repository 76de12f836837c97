//! The server with an `af_packet` port on a veth pair in throw-away network namespaces: an
//! app's pool is granted to the port on attach, app frames leave on the wire intact, and an
//! app that detaches while its frames flow is taken off only once the port has let go of
//! its pool. Needs root (namespaces); skipped without it unless FERRITE_E2E is set.

mod server_app;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server_app::*;

const A: (&str, &str) = ("app-a", "02:00:00:00:00:0a");

fn root_or_skip(test: &str) -> bool {
    if rustix::process::getuid().is_root() {
        return true;
    }
    if std::env::var_os("FERRITE_E2E").is_some() {
        panic!("{test}: needs root (network namespaces) and FERRITE_E2E is set");
    }
    eprintln!("{test}: skipped, needs root for network namespaces");
    false
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Veth {
    port_ns: String,
    peer_ns: String,
    port_if: String,
    peer_if: String,
    peer_mac: [u8; 6],
}

impl Veth {
    fn new() -> Self {
        let pid = std::process::id();
        let mut v = Veth {
            port_ns: format!("ferrite-dma-{pid}-a"),
            peer_ns: format!("ferrite-dma-{pid}-b"),
            port_if: format!("da{}", pid % 1_000_000),
            peer_if: format!("db{}", pid % 1_000_000),
            peer_mac: [0; 6],
        };
        sh(&["ip", "netns", "add", &v.port_ns]);
        sh(&["ip", "netns", "add", &v.peer_ns]);
        for ns in [&v.port_ns, &v.peer_ns] {
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        sh(&[
            "ip", "-n", &v.port_ns, "link", "add", &v.port_if, "type", "veth", "peer", "name",
            &v.peer_if, "netns", &v.peer_ns,
        ]);
        sh(&["ip", "-n", &v.port_ns, "link", "set", &v.port_if, "up"]);
        sh(&["ip", "-n", &v.peer_ns, "link", "set", &v.peer_if, "up"]);
        sh(&[
            "ip",
            "-n",
            &v.peer_ns,
            "addr",
            "add",
            "10.78.0.1/24",
            "dev",
            &v.peer_if,
        ]);
        let m = sh(&[
            "ip",
            "netns",
            "exec",
            &v.peer_ns,
            "cat",
            &format!("/sys/class/net/{}/address", v.peer_if),
        ]);
        v.peer_mac = mac(m.trim());
        v
    }

    /// The peer announces itself (ARP requests, broadcast): the switch learns its MAC.
    fn announce(&self) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.peer_ns, "ping", "-c", "1", "-W", "1"])
            .arg("10.78.0.9")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.port_ns, &self.peer_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Frames in a pcap file (classic format, Ethernet).
fn pcap_frames(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).unwrap_or_default();
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let incl = u32::from_le_bytes([b[off + 8], b[off + 9], b[off + 10], b[off + 11]]) as usize;
        off += 16;
        if off + incl > b.len() {
            break;
        }
        out.push(b[off..off + incl].to_vec());
        off += incl;
    }
    out
}

/// Sends frames `seqs` from `app` to `dst`, taking completions back as it goes (at most 128
/// frames outstanding of the `base` free buffers, so the tx ring never overflows).
fn send_seqs(app: &mut TestApp, base: usize, dst: [u8; 6], seqs: std::ops::Range<u32>) {
    for s in seqs {
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.free.len() + 128 <= base && Instant::now() < deadline {
            app.poll();
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut p = b"dma!".to_vec();
        p.extend_from_slice(&s.to_be_bytes());
        p.extend((0..200u32).map(|j| (s.wrapping_mul(31).wrapping_add(j)) as u8));
        app.send(dst, &p);
        if s % 32 == 31 {
            app.poll();
        }
    }
}

#[test]
fn app_frames_leave_an_af_packet_port_intact_and_detach_waits_for_the_port() {
    if !root_or_skip("server_dma") {
        return;
    }
    let v = Veth::new();
    let dir = test_dir("dma");
    let socket = dir.join("ctl.sock");
    let cfg_text = config_text(&socket, &[A], "")
        + &format!(
            "[[ports]]\nname = \"wire\"\nbackend = \"af_packet\"\nifname = \"{}\"\n",
            v.port_if
        );
    let cfg = dir.join("ferrite.toml");
    std::fs::write(&cfg, cfg_text).expect("config");
    let child = Command::new("ip")
        .args(["netns", "exec", &v.port_ns, env!("CARGO_BIN_EXE_ferrite")])
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferrite");
    let mut srv = ServerProc {
        child,
        dir: dir.clone(),
        socket: socket.clone(),
        config: cfg,
        cleanup: true,
    };
    srv.wait_ready();

    const N: u32 = 300;
    let pcap = dir.join("wire.pcap");
    let mut dump = Command::new("ip")
        .args(["netns", "exec", &v.peer_ns, "tcpdump", "-n", "-U", "-i"])
        .arg(&v.peer_if)
        .arg("-w")
        .arg(&pcap)
        .args(["-c", &N.to_string(), "ether", "proto", "0x88b5"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump");
    // tcpdump says "listening on" once it captures.
    let mut err = dump.stderr.take().expect("tcpdump stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("listening on") && Instant::now() < deadline {
        match err.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => break,
        }
    }

    let mut app = TestApp::connect(&socket, A.0, A.1).expect("attach");
    let base = app.free.len();
    v.announce();
    send_seqs(&mut app, base, v.peer_mac, 0..N);
    let deadline = Instant::now() + Duration::from_secs(10);
    while dump.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        app.poll();
        std::thread::sleep(Duration::from_millis(10));
    }
    if dump.try_wait().ok().flatten().is_none() {
        let _ = dump.kill();
        let _ = dump.wait();
    }
    let frames = pcap_frames(&pcap);
    assert_eq!(frames.len(), N as usize, "every app frame reached the wire");
    for (i, f) in frames.iter().enumerate() {
        let s = i as u32;
        assert_eq!(&f[..6], &v.peer_mac, "frame {i}: destination");
        assert_eq!(&f[6..12], &app.mac, "frame {i}: source");
        assert_eq!(&f[12..14], &ETHERTYPE);
        assert_eq!(&f[14..18], b"dma!");
        assert_eq!(&f[18..22], &s.to_be_bytes(), "frames in order, none lost");
        let want: Vec<u8> = (0..200u32)
            .map(|j| (s.wrapping_mul(31).wrapping_add(j)) as u8)
            .collect();
        assert_eq!(&f[22..222], &want[..], "frame {i}: payload intact");
    }
    // Every buffer comes back to the app after the port's completions.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.free.len() < base && Instant::now() < deadline {
        app.poll();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(app.free.len(), base, "no app buffer stays with the server");

    // Detach while frames flow; the server takes the port off and carries on.
    send_seqs(&mut app, base, v.peer_mac, N..N + 200);
    app.client.detach().expect("detach");
    wait_stats(&srv, "app gone", |s| port(s, A.0).is_none());
    // A new attach under the same name works (the pool id came free) and frames flow.
    drop(app);
    let mut again = TestApp::connect(&socket, A.0, A.1).expect("reattach");
    let base2 = again.free.len();
    send_seqs(&mut again, base2, v.peer_mac, 0..50);
    let wire = |s: &switch::ctl::StatsRepr| {
        s.ports
            .iter()
            .find(|p| !p.app && p.name.starts_with("af_packet"))
            .map(|p| p.counters)
    };
    let s = wait_stats(&srv, "frames after reattach", |s| {
        wire(s).is_some_and(|c| c.tx_packets >= u64::from(N) + 50)
    });
    assert_eq!(wire(&s).map(|c| c.errors), Some(0));

    srv.signal(rustix::process::Signal::TERM);
    let (status, log) = srv.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "server exit: {status:?}\n{log}");
    assert!(
        log.contains("app pool granted to NIC ports"),
        "the app's pool was granted to the af_packet port:\n{log}"
    );
    // The switch's own count of frames it copied into the af_packet port: the app's frames
    // went by handle. Only frames sent in the instant between the revocation on detach and
    // the port's removal may have been copied (at most the 200 sent then); without the
    // grant every one of the N + 50 others would have been.
    let line = log
        .lines()
        .find(|l| l.contains("switch counters at exit") && l.contains("'af_packet:"))
        .unwrap_or_else(|| panic!("no exit counters for the af_packet port:\n{log}"));
    let num = |after: &str| -> u64 {
        let rest = &line[line.find(after).expect(after) + after.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| panic!("no number after {after:?} in {line}"))
    };
    let (tx, copied) = (num(": tx "), num("copied "));
    eprintln!("af_packet port: tx {tx}, copied {copied}");
    assert!(tx >= u64::from(N) + 50, "{line}");
    assert!(
        copied <= 200,
        "app frames were copied into the port instead of going by handle: {line}"
    );
    assert!(
        !log.contains("did not give the port back") && !log.contains("still hold frames"),
        "detach finished promptly:\n{log}"
    );
}

//! End-to-end (root): `curl` in the Linux peer namespace fetches a small page and a 100 MB
//! file from the `ferrite-http` app domain through the Ferrite server's `af_xdp` and
//! `af_packet` ports; the page is byte-identical and the file's sha256 matches.
#![forbid(unsafe_code)]

mod netns;

use std::time::Duration;

use netns::ferrite::{AppSpec, Backend, Server};
use netns::{Offloads, Topology};

const TOOLS: &[&str] = &["ip", "ethtool", "taskset", "ping", "curl", "sha256sum"];
const BIG: u64 = 100 * 1000 * 1000;

fn curl_page_and_file(backend: Backend) {
    if !netns::ready(&format!("http_{}", backend.as_str()), TOOLS) {
        return;
    }
    let t = Topology::new(Offloads::Off, 1500);
    let www = t.dir.join("www");
    std::fs::create_dir_all(&www).expect("create web root");
    let page = format!(
        "<!doctype html><title>ferrite</title><p>served by an app domain over {}</p>\n",
        backend.as_str()
    );
    std::fs::write(www.join("index.html"), &page).expect("write page");
    netns::write_pattern_file(&www.join("big.bin"), BIG, 0x0123_4567_89ab_cdef);
    let want = netns::sha256_file(&www.join("big.bin"));

    let app = AppSpec::numbered("http", 1);
    let srv = Server::start(&t, backend, std::slice::from_ref(&app));
    let root = www.to_string_lossy().into_owned();
    let http = srv.app("ferrite-http", &app, &["--root", &root, "--port", "80"]);
    if let Err(e) = netns::wait_reachable(&t, &app.ip, Duration::from_secs(20)) {
        panic!("{e}\napp log:\n{}\nserver log:\n{}", http.log(), srv.log());
    }

    let url = format!("http://{}/index.html", app.ip);
    let out = t.p.output(["curl", "-sS", "--max-time", "20", &url]);
    assert!(
        out.status.success(),
        "curl {url}: {}\napp log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        http.log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), page);

    let got = t.dir.join("big.got");
    let url = format!("http://{}/big.bin", app.ip);
    let out = t.p.output([
        "curl".to_string(),
        "-sS".into(),
        "--max-time".into(),
        "240".into(),
        "-o".into(),
        got.to_string_lossy().into_owned(),
        "-w".into(),
        "%{size_download} %{speed_download}".into(),
        url.clone(),
    ]);
    assert!(
        out.status.success(),
        "curl {url}: {}\napp log:\n{}\nserver stats:\n{}",
        String::from_utf8_lossy(&out.stderr),
        http.log(),
        srv.stats()
    );
    eprintln!(
        "{}: 100 MB download (size, bytes/s): {}",
        backend.as_str(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(std::fs::metadata(&got).map(|m| m.len()).ok(), Some(BIG));
    assert_eq!(netns::sha256_file(&got), want, "downloaded file differs");
}

#[test]
fn http_af_xdp() {
    curl_page_and_file(Backend::AfXdp);
}

#[test]
fn http_af_packet() {
    curl_page_and_file(Backend::AfPacket);
}

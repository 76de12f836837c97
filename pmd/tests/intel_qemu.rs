//! The Intel port on QEMU's emulated 82576 (`-device igb`), tests/qemu-igb/run.sh: guests
//! whose NIC is driven only by this driver, reached from a network namespace on the host.
//! 1. the diagnostic responder through sysfs `resource0` (physical DMA addresses): 1000 pings,
//!    every reply transmitted (DMA) from a memfd pool registered as an app's pool would be;
//! 2. the same through VFIO behind an emulated VT-d IOMMU (the pool mapped by the IOMMU);
//! 3. the responder with 4 queues: 8 flows spread by RSS over at least two queues, every ping
//!    answered;
//! 4. the Ferrite server with the intel port and two app domains: 1000 pings, TCP echo,
//!    HTTP download checked by sha256.
//!
//! Root only; with FERRITE_E2E=1 a missing prerequisite fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn skip_or_fail(why: &str) -> bool {
    if std::env::var_os("FERRITE_E2E").is_some() {
        panic!("FERRITE_E2E is set but {why}");
    }
    eprintln!("skipping the QEMU igb test: {why}");
    true
}

/// The cargo profile directory this test was built into (target/<profile>).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/intel_qemu-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

fn build_examples(dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.args([
        "build",
        "--quiet",
        "-p",
        "pmd",
        "--example",
        "intel_diag_responder",
    ]);
    // The profile this binary was built with: its directory's name (`debug` is `dev`).
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        None | Some("debug") => "dev",
        Some(name) => name,
    };
    c.args(["--profile", profile]);
    if let Some(target) = dir.parent() {
        c.env("CARGO_TARGET_DIR", target);
    }
    let st = c.status().expect("run cargo build");
    assert!(st.success(), "building the guest binaries failed");
}

#[test]
fn igb_in_qemu_responder_over_sysfs_vfio_and_rss_then_server_with_apps() {
    if !is_root() && skip_or_fail("the test needs root (namespace, TAP, QEMU)") {
        return;
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
        && skip_or_fail("qemu-system-x86_64 is not installed (scripts/setup-system.sh)")
    {
        return;
    }
    let dir = profile_dir();
    build_examples(&dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/qemu-igb/run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("FERRITE_BIN_DIR", &dir)
        .output()
        .expect("run tests/qemu-igb/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "QEMU igb test failed:\n{text}");
    for sc in ["[sysfs] PASS", "[vfio] PASS", "[rss] PASS", "[server] PASS"] {
        assert!(text.contains(sc), "scenario {sc:?} missing:\n{text}");
    }
    assert_eq!(text.matches(" 1000 received, 0% packet loss").count(), 3);
    assert!(text.contains("200000 bytes echoed intact"));
    assert_eq!(text.matches("tx_from_app_pool=1000").count(), 3);
    assert!(text.contains("1000 echo replies over 8 flows"));
}

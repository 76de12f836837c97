//! `xen_probe suite`: the grant-backend conformance suite on the `xen` backend, run in dom0
//! by the QEMU test (`tests/xen/`), dom0 granting to itself. The server and the apps of that
//! test are the real `ferrite` server and Ferrite apps.
#![forbid(unsafe_code)]

use grant_pool::DomId;
use grant_pool::xen::XenBackend;

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

macro_rules! say {
    ($who:expr, $($a:tt)*) => {
        println!("[{} {:9.3}] {}", $who, uptime(), format!($($a)*))
    };
}

fn main() {
    let rc = match std::env::args().nth(1).as_deref() {
        Some("suite") => suite(),
        _ => {
            eprintln!("usage: xen_probe suite");
            2
        }
    };
    std::process::exit(rc);
}
fn suite() -> i32 {
    let b = match XenBackend::open() {
        Ok(b) => b,
        Err(e) => {
            say!("suite", "SUITE FAIL: {e}");
            return 1;
        }
    };
    let mut failed = 0;
    for (name, r) in grant_pool::xen::suite::run(&b, DomId(0), &b, DomId(0)) {
        match r {
            Ok(()) => say!("suite", "ok   {name}"),
            Err(e) => {
                failed += 1;
                say!("suite", "FAIL {name}: {e}");
            }
        }
    }
    say!(
        "suite",
        "SUITE {}",
        if failed == 0 { "PASS" } else { "FAIL" }
    );
    i32::from(failed != 0)
}

//! The example systemd units (`examples/systemd/`): the keys the restart design relies on,
//! agreement with the example configuration, and `systemd-analyze verify` where it exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use switch::server::Config;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// `section.key` -> values (a key may repeat), from a unit file.
fn parse_unit(text: &str) -> HashMap<String, Vec<String>> {
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        keys.entry(format!("{section}.{}", k.trim()))
            .or_default()
            .push(v.trim().to_owned());
    }
    keys
}

fn one<'a>(u: &'a HashMap<String, Vec<String>>, key: &str) -> &'a str {
    match u.get(key).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("{key}: expected one value, found {other:?}"),
    }
}

/// The core numbers of a `CPUAffinity=` value (`1`, `0 2`, `1-3`, `0,2`).
fn cores(v: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in v.split([' ', ',']).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().expect("core"), b.parse().expect("core"));
                out.extend(a..=b);
            }
            None => out.push(part.parse().expect("core")),
        }
    }
    out
}

#[test]
fn the_server_unit_is_notify_with_a_watchdog_and_restarts_at_once() {
    let text = std::fs::read_to_string(examples().join("systemd/ferrite.service")).expect("unit");
    let u = parse_unit(&text);
    assert_eq!(one(&u, "Service.Type"), "notify");
    assert_eq!(one(&u, "Service.NotifyAccess"), "main");
    assert_eq!(one(&u, "Service.Restart"), "always");
    assert_eq!(one(&u, "Service.RestartSec"), "0");
    let wd = one(&u, "Service.WatchdogSec");
    let secs: f64 = wd
        .strip_suffix("ms")
        .map(|m| m.parse::<f64>().expect("ms") / 1000.0)
        .or_else(|| wd.strip_suffix('s').map(|s| s.parse().expect("s")))
        .expect("WatchdogSec in s or ms");
    assert!(secs > 0.0, "the watchdog is on");
    let exec: Vec<&str> = one(&u, "Service.ExecStart").split_whitespace().collect();
    assert!(exec[0].ends_with("/ferrite"), "{exec:?}");
    assert_eq!(
        exec[1..4],
        ["serve", "--config", "/etc/ferrite/ferrite.toml"]
    );
    assert_eq!(one(&u, "Service.RuntimeDirectoryPreserve"), "yes");
}

#[test]
fn the_units_cpu_affinity_contains_the_example_configs_core() {
    let text = std::fs::read_to_string(examples().join("systemd/ferrite.service")).expect("unit");
    let u = parse_unit(&text);
    let cfg = Config::load(&examples().join("ferrite.toml")).expect("example config");
    let core = cfg.server.core.expect("the example config pins the switch");
    let allowed = cores(one(&u, "Service.CPUAffinity"));
    assert!(
        allowed.contains(&core),
        "CPUAffinity {allowed:?} must contain [server] core = {core}"
    );
}

#[test]
fn the_app_unit_lives_through_server_restarts() {
    let text =
        std::fs::read_to_string(examples().join("systemd/ferrite-web.service")).expect("unit");
    let u = parse_unit(&text);
    assert_eq!(one(&u, "Unit.Wants"), "ferrite.service");
    assert_eq!(one(&u, "Unit.After"), "ferrite.service");
    for k in [
        "Unit.Requires",
        "Unit.BindsTo",
        "Unit.PartOf",
        "Unit.Requisite",
    ] {
        assert!(!u.contains_key(k), "{k} would stop the app with the server");
    }
    // The app attaches to the example config's socket with its name and MAC.
    let cfg = Config::load(&examples().join("ferrite.toml")).expect("example config");
    let exec = one(&u, "Service.ExecStart");
    assert!(
        exec.contains(&format!("--socket {}", cfg.server.socket.display())),
        "{exec}"
    );
    let web = cfg.apps.iter().find(|a| a.name == "web").expect("web app");
    assert!(exec.contains("--name web"), "{exec}");
    assert!(
        exec.contains(&format!("--mac {}", web.mac.as_deref().expect("mac"))),
        "{exec}"
    );
}

#[test]
fn systemd_analyze_verify_finds_nothing_to_say() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: skipped");
        return;
    };
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("ferrite-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // The units name installed binaries; point them at ones that exist here.
    for (unit, bin) in [
        ("ferrite.service", "/usr/local/bin/ferrite"),
        ("ferrite-web.service", "/usr/local/bin/ferrite-http"),
    ] {
        let text = std::fs::read_to_string(examples().join("systemd").join(unit)).expect("unit");
        assert!(text.contains(&format!("ExecStart={bin} ")), "{unit}");
        let text = text.replace(
            &format!("ExecStart={bin} "),
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_ferrite")),
        );
        std::fs::write(dir.join(unit), text).expect("write");
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("ferrite.service"))
        .arg(dir.join("ferrite-web.service"))
        .output()
        .expect("systemd-analyze verify");
    let err = String::from_utf8_lossy(&out.stderr);
    let said: Vec<&str> = err.lines().filter(|l| l.contains(".service")).collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{err}");
    assert!(said.is_empty(), "systemd-analyze: {said:?}");
}

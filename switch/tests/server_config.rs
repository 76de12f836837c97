//! Bad configurations are refused with a message that names the field.

use switch::server::{Config, ConfigError, XenAdmission};

const GOOD: &str = r#"
[server]
socket = "/tmp/ferrite-test.sock"
socket_mode = "0660"
burst = 32

[limits]
max_ring = 1024
buf_sizes = [2048]

[[ports]]
name = "sim0"
backend = "sim"
mac = "02:fe:00:00:00:01"

[[ports]]
name = "up"
backend = "af_packet"
ifname = "veth0"

[[apps]]
uid = 1000
name = "web"
mac = "02:00:00:00:00:01"
"#;

#[test]
fn the_example_config_is_accepted() {
    let c = Config::parse(GOOD, "good.toml").expect("good config");
    assert_eq!(c.ports.len(), 2);
    assert_eq!(c.socket_mode().expect("mode"), 0o660);
    let allowed = c.allowed();
    assert_eq!(allowed[0].mac, Some([2, 0, 0, 0, 0, 1]));
    assert_eq!(c.limits().max_ring, 1024);
    assert_eq!(
        c.fixed_macs(),
        vec![("web".to_string(), [2, 0, 0, 0, 0, 1])]
    );
    let free = GOOD.replacen("mac = \"02:00:00:00:00:01\"\n", "", 1);
    let c = Config::parse(&free, "free.toml").expect("an app with no MAC");
    assert!(
        c.fixed_macs().is_empty(),
        "an app choosing its MAC has none fixed"
    );
}

#[test]
fn server_bounds_and_app_names_are_checked() {
    let with = |extra: &str| {
        let text = GOOD.replace("burst = 32", &format!("burst = 32\n{extra}"));
        Config::parse(&text, "t.toml").err().map(|e| e.to_string())
    };
    for (extra, want) in [
        ("fdb_entries = 0", "server.fdb_entries"),
        ("fdb_entries = 1099511627776", "server.fdb_entries"),
        ("handshake_timeout_ms = 0", "server.handshake_timeout_ms"),
        (
            "handshake_timeout_ms = 3600000",
            "server.handshake_timeout_ms",
        ),
        ("max_conns_per_uid = 0", "server.max_conns_per_uid"),
        ("max_conns_per_uid = 100000", "server.max_conns_per_uid"),
    ] {
        let e = with(extra).unwrap_or_else(|| panic!("{extra} was accepted"));
        assert!(e.contains(want), "{extra}: {e}");
    }
    assert_eq!(with("fdb_entries = 65536\nmax_conns_per_uid = 4"), None);
    for mode in ["0666", "0670", "0760", "0777", "0661"] {
        let text = GOOD.replace("0660", mode);
        let e = Config::parse(&text, "t.toml").expect_err(mode).to_string();
        assert!(e.contains("server.socket_mode"), "{mode}: {e}");
    }
    for mode in ["0600", "0640", "0620"] {
        Config::parse(&GOOD.replace("0660", mode), "t.toml").expect(mode);
    }
    // Two entries under one name would be two apps the switch cannot tell apart.
    let twice = format!("{GOOD}\n[[apps]]\ngid = 1000\nname = \"web\"\n");
    let e = Config::parse(&twice, "t.toml")
        .expect_err("duplicate")
        .to_string();
    assert!(e.contains("apps[1].name") && e.contains("twice"), "{e}");
    // A Xen app's name follows the grammar a Xen app can say (lower case).
    let xen = format!(
        "{GOOD}\n[xen]\nenable = true\n\n[[apps]]\nxen = true\ndomain = \"vm\"\nname = \"Web\"\n"
    );
    let e = Config::parse(&xen, "t.toml")
        .expect_err("upper case")
        .to_string();
    assert!(e.contains("apps[1].name"), "{e}");
    Config::parse(&xen.replace("\"Web\"", "\"web-xen\""), "t.toml").expect("lower case");
}

#[test]
fn bad_configs_are_refused_naming_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"backend = "sim""#,
            r#"backend = "foo""#,
            "ports[0].backend: unknown backend 'foo' (expected sim, af_xdp, af_packet, intel)",
        ),
        (r#"ifname = "veth0""#, "", "ports[1].ifname"),
        (
            r#"name = "up""#,
            r#"name = "sim0""#,
            "ports[1].name: 'sim0' is used twice",
        ),
        (
            r#"mac = "02:fe:00:00:00:01""#,
            r#"mac = "02:fe""#,
            "ports[0].mac",
        ),
        (
            r#"socket_mode = "0660""#,
            r#"socket_mode = "rw""#,
            "server.socket_mode",
        ),
        ("burst = 32", "burst = 0", "server.burst"),
        (
            r#"backend = "sim""#,
            "backend = \"sim\"\ntso = true",
            "ports[0].tso: only the intel backend has this setting",
        ),
        ("burst = 32", "burst = 100000", "server.burst"),
        ("max_ring = 1024", "max_ring = 1000", "limits.max_ring"),
        (
            "buf_sizes = [2048]",
            "buf_sizes = [3000]",
            "limits.buf_sizes",
        ),
        (
            "buf_sizes = [2048]",
            "buf_sizes = [4096, 2048]",
            "limits.buf_sizes",
        ),
        ("uid = 1000", "", "apps[0].uid"),
        (r#"name = "web""#, r#"name = "we b""#, "apps[0].name"),
        (
            r#"mac = "02:00:00:00:00:01""#,
            r#"mac = "01:00:00:00:00:01""#,
            "apps[0].mac",
        ),
        // Schema errors come from the parser: they name the key and its line.
        (
            "burst = 32",
            "burst = 32\nbogus = 1",
            "unknown field `bogus`",
        ),
        ("burst = 32", r#"burst = "many""#, "burst"),
        ("[limits]", "[limitz]", "unknown field `limitz`"),
        (
            r#"ifname = "veth0""#,
            "ifname = \"veth0\"\nqueues = 4",
            "unknown field `queues`",
        ),
    ];
    for (from, to, want) in cases {
        assert!(GOOD.contains(from), "case {from:?} does not apply");
        let text = GOOD.replacen(from, to, 1);
        match Config::parse(&text, "bad.toml") {
            Ok(_) => panic!("accepted a config with {to:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(want), "{to:?}: message {msg:?} lacks {want:?}");
                if want.contains('.') && !want.contains('`') {
                    assert!(matches!(e, ConfigError::Field { .. }), "{e:?}");
                }
            }
        }
    }
}

#[test]
fn rate_limits_and_station_limits_are_read_and_checked() {
    let text = GOOD.replacen(
        "burst = 32",
        "burst = 32\nfdb_entries = 1000\napp_max_frames_per_sec = 5000",
        1,
    );
    let text = text.replacen(
        r#"name = "web""#,
        "name = \"web\"\nmax_bytes_per_sec = 125000000",
        1,
    );
    let c = Config::parse(&text, "rates.toml").expect("config with limits");
    assert_eq!(c.app_rates().of("web"), (5000, 125_000_000));
    assert_eq!(c.app_rates().of("other"), (5000, 0), "the [server] default");
    assert_eq!(c.max_stations_per_port(), 500, "half the table by default");
    let c = Config::parse(GOOD, "good.toml").expect("good config");
    assert_eq!(
        c.app_rates().of("web"),
        (0, 0),
        "no limit unless configured"
    );

    let cases: &[(&str, &str, &str)] = &[
        (
            "burst = 32",
            "burst = 32\napp_max_bytes_per_sec = 100",
            "server.app_max_bytes_per_sec: 100 must be 0 (no limit) or from 1024",
        ),
        (
            "burst = 32",
            "burst = 32\napp_max_frames_per_sec = 2000000000",
            "server.app_max_frames_per_sec: 2000000000 must be 0 (no limit) or at most",
        ),
        (
            r#"name = "web""#,
            "name = \"web\"\nmax_bytes_per_sec = 10",
            "apps[0].max_bytes_per_sec",
        ),
        (
            r#"name = "web""#,
            "name = \"web\"\nmax_frames_per_sec = -1",
            "max_frames_per_sec",
        ),
        (
            "burst = 32",
            "burst = 32\nfdb_entries = 100\nmax_stations_per_port = 101",
            "server.max_stations_per_port: 101 must be from 1 to fdb_entries (100)",
        ),
        (
            "burst = 32",
            "burst = 32\nmax_stations_per_port = 0",
            "server.max_stations_per_port",
        ),
    ];
    for (from, to, want) in cases {
        let text = GOOD.replacen(from, to, 1);
        match Config::parse(&text, "bad.toml") {
            Ok(_) => panic!("accepted a config with {to:?}"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(want), "{to:?}: message {msg:?} lacks {want:?}");
            }
        }
    }
}

#[test]
fn a_missing_file_says_which() {
    let e = Config::load("/nonexistent/ferrite.toml".as_ref()).expect_err("no file");
    assert!(e.to_string().contains("/nonexistent/ferrite.toml"), "{e}");
}

#[test]
fn the_binary_refuses_a_bad_config_with_exit_status_2() {
    let dir = std::env::temp_dir().join(format!("ferrite-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join("bad.toml");
    std::fs::write(
        &p,
        GOOD.replacen(r#"backend = "sim""#, r#"backend = "foo""#, 1),
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ports[0].backend: unknown backend 'foo'"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_port_that_cannot_open_is_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("ferrite-badport-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let p = dir.join("port.toml");
    let cfg = format!(
        "[server]\nsocket = \"{}\"\n[[ports]]\nname = \"up\"\nbackend = \"af_packet\"\nifname = \"ferrite-none0\"\n",
        dir.join("ctl.sock").display()
    );
    std::fs::write(&p, cfg).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ports[0] (up, backend af_packet)"), "{err}");
    assert!(!dir.join("ctl.sock").exists(), "no socket left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = std::env::temp_dir().join(format!("ferrite-notsock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("ctl.sock");
    std::fs::write(&sock, "precious").expect("write");
    let p = dir.join("f.toml");
    std::fs::write(&p, format!("[server]\nsocket = \"{}\"\n", sock.display())).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&sock).expect("still there"),
        "precious"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn xen_apps_are_admitted_by_domain_name_and_mac_only_with_xen_enabled() {
    let xen = format!(
        "{GOOD}\n[xen]\nenable = true\nmax_refs = 600\n\n[[apps]]\nxen = true\ndomain = \"web-vm\"\nname = \"web-xen\"\nmac = \"02:00:00:00:00:10\"\n"
    );
    let c = Config::parse(&xen, "xen.toml").expect("xen config");
    assert!(c.xen.enable);
    assert_eq!(c.xen.domid, 0);
    assert_eq!(c.xen.max_refs, 600);
    let web = XenAdmission {
        name: "web-xen".into(),
        mac: Some([2, 0, 0, 0, 0, 0x10]),
        domain: "web-vm".into(),
    };
    assert_eq!(c.xen_allowed(), vec![web.clone()]);
    // A guest can write any app name: only the domain the toolstack named admits it.
    let mac = [2, 0, 0, 0, 0, 0x10];
    assert_eq!(
        XenAdmission::refusal(std::slice::from_ref(&web), "web-xen", mac, Some("web-vm")),
        None
    );
    for (name, mac, domain, why) in [
        ("web-xen", mac, Some("other-vm"), "another domain"),
        ("web-xen", mac, None, "no name"),
        (
            "web-xen",
            [2, 0, 0, 0, 0, 0x11],
            Some("web-vm"),
            "another MAC",
        ),
        ("db", mac, Some("web-vm"), "no [[apps]] entry"),
    ] {
        let e = XenAdmission::refusal(std::slice::from_ref(&web), name, mac, domain)
            .unwrap_or_else(|| panic!("{name} in {domain:?} admitted"));
        assert!(e.contains(why), "{e}");
    }
    // The socket's admissions do not include the Xen app, and the other way round.
    assert!(c.allowed().iter().all(|a| a.name != "web-xen"));

    let refused = |text: &str, want: &str| match Config::parse(text, "bad.toml") {
        Err(e @ ConfigError::Field { .. }) => assert!(e.to_string().starts_with(want), "{e}"),
        other => panic!("not refused as {want}: {other:?}"),
    };
    // A Xen app without [xen] enable.
    refused(
        &format!("{GOOD}\n[[apps]]\nxen = true\ndomain = \"vm\"\nname = \"web-xen\"\n"),
        "apps[1].xen",
    );
    // A Xen app without its domain, a domain for a socket app, a domain name Xen cannot have.
    let on = format!("{GOOD}\n[xen]\nenable = true\n");
    refused(
        &format!("{on}\n[[apps]]\nxen = true\nname = \"web-xen\"\n"),
        "apps[1].domain",
    );
    refused(
        &format!("{on}\n[[apps]]\nuid = 0\ndomain = \"vm\"\nname = \"w\"\n"),
        "apps[1].domain",
    );
    refused(
        &format!("{on}\n[[apps]]\nxen = true\ndomain = \"a/b\"\nname = \"w\"\n"),
        "apps[1].domain",
    );
    // A Xen app with a uid (uids mean nothing to a Xen domain).
    refused(
        &format!("{GOOD}\n[xen]\nenable = true\n\n[[apps]]\nxen = true\nuid = 0\nname = \"x\"\n"),
        "apps[1].xen",
    );
    // A reference limit out of range.
    refused(
        &format!("{GOOD}\n[xen]\nenable = true\nmax_refs = 1\n"),
        "xen.max_refs",
    );
}

#[test]
fn macs_and_modes_with_a_sign_are_refused() {
    // `from_str_radix` takes a leading '+': "+0" read as a hex pair, "+660" as an octal
    // mode. Neither is what the fields document (six hex pairs; octal digits).
    let refused = |from: &str, to: &str| {
        let text = GOOD.replace(from, to);
        match Config::parse(&text, "t.toml") {
            Err(ConfigError::Field { field, .. }) => field,
            other => panic!("{to:?} accepted: {other:?}"),
        }
    };
    assert_eq!(
        refused("\"02:00:00:00:00:01\"", "\"02:00:00:+0:00:01\""),
        "apps[0].mac"
    );
    assert_eq!(
        refused("\"02:fe:00:00:00:01\"", "\"02:fe:00:00:00:+1\""),
        "ports[0].mac"
    );
    assert_eq!(
        refused("socket_mode = \"0660\"", "socket_mode = \"+660\""),
        "server.socket_mode"
    );
    assert_eq!(
        refused("socket_mode = \"0660\"", "socket_mode = \"0o0o660\""),
        "server.socket_mode"
    );
}

/// A grant of all the port memory the limits advertise fits in one message the server
/// receives (one reference per page): 64 KiB messages refused a 64 MiB grant as malformed
/// while the default limit said 256 MiB. A larger configured limit is advertised as what a
/// message can carry.
#[test]
fn the_advertised_memory_limit_fits_in_one_grant_message() {
    use switch::ctl::wire::{GrantRepr, MAX_APP_MSG, Repr};
    let grant = |mem: u64| {
        Repr::Grant(GrantRepr {
            rx_size: 1024,
            tx_size: 1024,
            fill_size: 1024,
            comp_size: 1024,
            buf_size: 65536,
            buf_count: (mem / 65536) as u32,
            domid: 0,
            grant_fds: 1,
            notify_fds: 0,
            notify_port: 0,
            refs: vec![0; (mem / 4096) as usize],
        })
    };
    let c = Config::parse(GOOD, "good.toml").expect("good config");
    assert_eq!(
        c.limits().max_mem,
        256 << 20,
        "the default limit is advertised whole"
    );
    assert!(grant(c.limits().max_mem).buffer_len() <= MAX_APP_MSG);
    let big = GOOD.replace("max_ring = 1024", "max_ring = 1024\nmax_mem_mb = 4096");
    let c = Config::parse(&big, "big.toml").expect("big config");
    assert!(c.limits().max_mem >= 256 << 20);
    assert!(grant(c.limits().max_mem).buffer_len() <= MAX_APP_MSG);
}

/// A port's fault injection is read, and settings it cannot honour are refused naming the
/// field.
#[test]
fn port_faults_are_read_and_checked() {
    let with = |faults: &str| {
        let text = GOOD.replace(
            "ifname = \"veth0\"",
            &format!("ifname = \"veth0\"\nfaults = {{ {faults} }}"),
        );
        Config::parse(&text, "t.toml")
    };
    let c = with("drop = 0.01, delay = 0.02, delay_us = 100, stall_every_ms = 50, stall_ms = 5")
        .expect("faults accepted");
    let f = c.ports[1].faults.expect("faults read").config();
    assert_eq!((f.drop, f.delay, f.seed), (0.01, 0.02, 1));
    assert_eq!(f.delay_by, std::time::Duration::from_micros(100));
    assert_eq!(f.stall_every, Some(std::time::Duration::from_millis(50)));
    for bad in [
        "drop = 2.0",
        "corrupt = -1.0",
        "stall_every_ms = 5, stall_ms = 5",
        "lose = 0.1",
    ] {
        let e = with(bad).expect_err(bad).to_string();
        assert!(e.contains("ports[1]") || e.contains("lose"), "{bad}: {e}");
    }
}

#[test]
fn the_deployment_guide_configuration_passes_the_check_and_is_the_one_the_guide_shows() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cfg = root.join("examples/deploy/ferrite.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrite"))
        .args(["serve", "--check", "--config"])
        .arg(&cfg)
        .output()
        .expect("run ferrite");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&cfg).expect("config");
    let body = &text[text.find("[server]").expect("a [server] section")..];
    let guide = std::fs::read_to_string(root.join("docs/deploy.md")).expect("guide");
    assert!(
        guide.contains(body),
        "docs/deploy.md must show examples/deploy/ferrite.toml as it is"
    );
}

//! The server's TOML configuration (`switch::server::config`).

use switch::server::config::{
    Config, MAX_BYTES_PER_SEC, MAX_FDB_ENTRIES, MAX_FRAMES_PER_SEC, MAX_HANDSHAKE_MS,
    MIN_BYTES_PER_SEC, WIDEST_SOCKET_MODE, parse_mac,
};

/// Parses arbitrary text as a configuration; never panics, and every configuration it
/// accepts satisfies the bounds the module documents.
pub fn parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = Config::parse(text, "fuzz") else {
        return;
    };
    check_bounds(&c);
}

/// The bounds of an accepted configuration.
pub fn check_bounds(c: &Config) {
    let s = &c.server;
    assert!(!s.socket.as_os_str().is_empty());
    let mode = c.socket_mode().expect("an accepted mode reads back");
    assert_eq!(
        mode & !WIDEST_SOCKET_MODE,
        0,
        "mode {mode:o} wider than 0660"
    );
    let digits = s.socket_mode.strip_prefix("0o").unwrap_or(&s.socket_mode);
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)),
        "socket_mode {:?} is not octal text",
        s.socket_mode
    );
    assert!((1..=switch::MAX_BURST).contains(&s.burst));
    assert!((1..=MAX_HANDSHAKE_MS).contains(&s.handshake_timeout_ms));
    assert!((16..=MAX_FDB_ENTRIES).contains(&s.fdb_entries));
    assert!((1..=switch::server::MAX_CONNS).contains(&s.max_conns_per_uid));
    assert!((1..=s.fdb_entries).contains(&c.max_stations_per_port()));
    let rate_ok = |f: u64, b: u64| {
        f <= MAX_FRAMES_PER_SEC && (b == 0 || (MIN_BYTES_PER_SEC..=MAX_BYTES_PER_SEC).contains(&b))
    };
    assert!(rate_ok(s.app_max_frames_per_sec, s.app_max_bytes_per_sec));
    if let Some(core) = s.core {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(core < n);
    }
    let l = c.limits();
    assert!(l.max_ring.is_power_of_two() && (2..=1 << 20).contains(&l.max_ring));
    for b in [l.min_buf_size, l.max_buf_size] {
        assert!(
            b.is_power_of_two() && (256..=grant_pool::pool::MAX_BUF_SIZE as u32).contains(&b),
            "buffer size {b}"
        );
    }
    assert!(l.min_buf_size <= l.max_buf_size);
    assert!(l.max_bufs >= 1 && l.max_bufs as usize <= grant_pool::pool::MAX_BUFS);
    assert!((1 << 20..=4096 << 20).contains(&l.max_mem));
    assert_eq!(l.timeout_ms, s.handshake_timeout_ms);
    assert!(c.ports.len() <= 64);
    for (i, p) in c.ports.iter().enumerate() {
        assert!((1..=32).contains(&p.name.len()));
        assert!(
            c.ports[..i].iter().all(|q| q.name != p.name),
            "duplicate port"
        );
        assert!(switch::server::config::BACKENDS.contains(&p.backend.as_str()));
        for m in [&p.mac, &p.dst].into_iter().flatten() {
            assert_hex_mac(m);
        }
        if let Some(b) = p.buf_size {
            assert!(b.is_power_of_two() && (256..=4096).contains(&b));
        }
        if let Some(b) = p.bufs {
            assert!((1..=grant_pool::pool::MAX_BUFS).contains(&b));
        }
    }
    let rates = c.app_rates();
    for (i, a) in c.apps.iter().enumerate() {
        switch::ctl::Name::new(&a.name).expect("an accepted app name is a name");
        assert!(
            c.apps[..i].iter().all(|b| b.name != a.name),
            "duplicate app"
        );
        assert!(a.xen || a.uid.is_some() || a.gid.is_some());
        assert!(!a.xen || (c.xen.enable && a.uid.is_none() && a.gid.is_none()));
        if let Some(m) = &a.mac {
            assert_hex_mac(m);
            let mac = parse_mac(m).expect("accepted");
            assert!(mac != [0; 6] && mac[0] & 1 == 0, "app MAC {m} not unicast");
        }
        let (f, b) = rates.of(&a.name);
        assert!(rate_ok(f, b));
    }
    assert!((2..=switch::xen_ctl::MAX_REFS).contains(&(c.xen.max_refs as usize)));
}

/// An accepted MAC is six pairs of hex digits separated by colons.
fn assert_hex_mac(m: &str) {
    let b = m.as_bytes();
    assert!(
        b.len() == 17
            && b.iter().enumerate().all(|(i, c)| if i % 3 == 2 {
                *c == b':'
            } else {
                c.is_ascii_hexdigit()
            }),
        "MAC {m:?} accepted but not six hex pairs"
    );
}

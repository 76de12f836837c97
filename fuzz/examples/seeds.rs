//! Writes the seed inputs of every target into `fuzz/corpus/<target>/seed-*`: one valid
//! input of each shape the harness decodes. `cargo run --release -p fuzz --example seeds`;
//! campaigns add the inputs they find (minimised) beside these.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use switch::ctl::wire::{
    Direction, GrantRepr, Limits, PortCounters, PortStatsRepr, Repr, StatsRepr,
};
use switch::ctl::{ErrorCode, Name};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write");
}

/// A TCP/IPv4 frame with `payload` bytes and TCP flags `flags` (headers 14 + 20 + 32).
fn tcp_frame(payload: usize, flags: u8) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    let tot = 20 + 32 + payload;
    f.extend_from_slice(&[0x45, 0, (tot >> 8) as u8, tot as u8, 0x12, 0x34, 0x40, 0]);
    f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x30, 0x39, 0x14, 0x51, 0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 7]);
    f.extend_from_slice(&[0x80, flags, 0x01, 0x00, 0xde, 0xad, 0, 0]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..payload).map(|i| (i % 251) as u8));
    f
}

fn main() {
    // wire: one message of every kind.
    let msgs = [
        Repr::Hello {
            name: Name::new("web-1").expect("name"),
            mac: [2, 0, 0, 0, 0, 1],
        },
        Repr::InitWait(Limits {
            max_ring: 4096,
            min_buf_size: 2048,
            max_buf_size: 2048,
            max_bufs: 8192,
            max_mem: 1 << 26,
            timeout_ms: 2000,
        }),
        Repr::Grant(GrantRepr {
            rx_size: 256,
            tx_size: 256,
            fill_size: 512,
            comp_size: 512,
            buf_size: 2048,
            buf_count: 1024,
            domid: 0,
            grant_fds: 2,
            notify_fds: 2,
            notify_port: 0,
            refs: vec![1, 2, 3],
        }),
        Repr::Connected {
            port: 3,
            pool: 7,
            instance: 99,
        },
        Repr::StatsRequest,
        Repr::StatsReply(StatsRepr {
            uptime_ns: 5,
            first_frame_ns: Some(4),
            instance: 1,
            ports: vec![PortStatsRepr {
                port: 1,
                app: true,
                name: "uplink".into(),
                mac: [2, 0, 0, 0, 0, 2],
                counters: PortCounters {
                    rx_packets: 1,
                    ..Default::default()
                },
            }],
            rejections: vec![(ErrorCode::Malformed, 3)],
        }),
        Repr::Detach,
        Repr::Closed,
        Repr::Error {
            code: ErrorCode::BadMac,
            text: "MAC 01:00:00:00:00:01 must be unicast".into(),
        },
        Repr::CaptureRequest {
            port: 1,
            direction: Direction::Both,
            snaplen: 128,
            count: 10,
        },
        Repr::CaptureFrame {
            ts_ns: 1_765_000_000_000_000_000,
            orig_len: 60,
            lost: 0,
            direction: Direction::Rx,
            data: vec![0xff; 60],
        },
    ];
    for (i, m) in msgs.iter().enumerate() {
        write("wire", &format!("{i}-{:?}", m.kind()), &m.to_bytes());
    }

    // config: the example configuration and the module's documented one.
    let example = include_str!("../../examples/ferrite.toml");
    write("config", "example", example.as_bytes());
    write(
        "config",
        "full",
        br#"[server]
socket = "/run/ferrite/ctl.sock"
socket_mode = "0660"
socket_group = 1000
burst = 32
handshake_timeout_ms = 2000
fdb_entries = 8192
max_conns_per_uid = 16
max_stations_per_port = 4096
app_max_frames_per_sec = 0
app_max_bytes_per_sec = 0

[limits]
max_ring = 4096
max_bufs = 65536
buf_sizes = [256, 4096]
max_mem_mb = 256

[[ports]]
name = "uplink"
backend = "af_packet"
ifname = "veth0"
bufs = 4096

[[ports]]
name = "gen"
backend = "sim"
mac = "02:00:00:00:00:09"
dst = "ff:ff:ff:ff:ff:ff"
generate = true
frame_len = 64

[[apps]]
uid = 1000
name = "web"
mac = "02:00:00:00:00:01"
max_frames_per_sec = 100000
max_bytes_per_sec = 125000000

[xen]
enable = true
domid = 0
max_refs = 1024

[[apps]]
xen = true
domain = "web-vm"
name = "web-xen"
mac = "02:00:00:00:00:02"
"#,
    );

    // fdb: programs of operations (the harness decodes any bytes).
    let mut fdb = Vec::new();
    fdb.extend_from_slice(&[16, 5]); // max, age index
    fdb.extend_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
    for i in 0u8..12 {
        fdb.extend_from_slice(&[2, 0, 0, 0, 0, i, 0xaa, 0xbb, i % 5]);
    }
    fdb.extend_from_slice(&[0, 0, 0, 0]);
    for i in 0u8..40 {
        fdb.extend_from_slice(&[i.wrapping_mul(37), i % 12, i % 6, 3, 2, 1, 4]);
    }
    write("fdb", "ops", &fdb);
    let bursty: Vec<u8> = (0u16..600)
        .map(|i| (i.wrapping_mul(131) >> 3) as u8)
        .collect();
    write("fdb", "bursts", &bursty);

    // app_port: the app sends and fills, the switch receives, delivers and gives back.
    let mut ap = vec![1u8];
    for round in 0u8..6 {
        ap.extend_from_slice(&[1, 3, round, 2, round + 1, 2, round + 2, 2]); // tx 4 frames
        ap.extend_from_slice(&[2, 3, round + 3, 2, round + 4, 2, round + 5, 2, round + 6, 2]);
        ap.extend_from_slice(&[5, 31, 6, 31, 7, 3, 8, 2, 9, 3, 8, 4, 4, 7]);
    }
    write("app_port", "traffic", &ap);
    let mut hostile = vec![2u8];
    for i in 0u8..30 {
        hostile.extend_from_slice(&[i.wrapping_mul(12), i, i.wrapping_mul(7), 0, 5, 31]);
    }
    write("app_port", "hostile", &hostile);

    // blocks
    let mut bl = vec![3, 20, 7, 60, 0, 0, 6, 1, 0, 12];
    for i in 0u8..12 {
        bl.extend_from_slice(&[i * 4, i % 23, i, 1, 2, 3, 4, 5]);
    }
    write("blocks", "burst", &bl);

    // gso and checksum: super-frames with an MTU of 1500, and checksummed bytes.
    for (name, payload, flags) in [("big", 3000usize, 0x19u8), ("odd", 1449, 0x98)] {
        let mut g = 1499u32.to_le_bytes().to_vec(); // max_l3 = 1 + 1499
        g.extend_from_slice(&tcp_frame(payload, flags));
        write("gso", name, &g);
        let mut c = vec![0, 0, 0, 0, 1, 0];
        c.extend_from_slice(&tcp_frame(payload.min(200), flags));
        write("checksum", name, &c);
    }

    // xen
    write(
        "xen_attach",
        "request",
        b"3 12345 02:00:00:00:00:01 7 100,101,102",
    );
    write(
        "xen_attach",
        "decimal",
        &[0xff, 0xff, 0, 0, b'4', b'0', b'9', b'6'],
    );
    write("xen_answer", "connected", b"12345 77 connected 7 3");
    write(
        "xen_answer",
        "refused",
        b"12345 77 refused the name web is attached already",
    );
    let mut refs = 1024u32.to_le_bytes().to_vec();
    refs.extend_from_slice(b"FRRL");
    refs.extend_from_slice(&4u32.to_le_bytes());
    for r in [8u32, 9, 10, 4000] {
        refs.extend_from_slice(&r.to_le_bytes());
    }
    write("xen_refs", "list", &refs);
    let mut xs = Vec::new();
    for (ty, payload) in [
        (2u32, &b"/local/domain/0/backend\0"[..]),
        (15, b"/local/domain/3/data/ferrite/web/attach\0tok\0"),
        (16, b"ENOENT\0"),
    ] {
        xs.extend_from_slice(&switch::xenstore::encode(ty, 7, 0, payload).expect("encode"));
    }
    write("xenstore", "replies", &xs);

    // session: a whole handshake (Hello, Grant, attached, stats, Detach, detached), and one
    // that times out after its Hello.
    let hello = [0u8, 0, 0, 0, 1, 0, 1, 1];
    let grant = [
        0u8, 2, 4, 4, 4, 4, 1, 2, 0, 0, 1, 0, 0, 0, 0, 0, 2, 1, 2, 1, 1,
    ];
    let mut life = hello.to_vec();
    life.extend_from_slice(&grant);
    life.extend_from_slice(&[2, 0, 5, 0]); // attached as port 5
    life.extend_from_slice(&[0, 4, 1, 0, 1, 1]); // stats
    life.extend_from_slice(&[0, 5, 1, 0, 1, 1, 2]); // detach, detached
    write("session", "life", &life);
    let mut late = hello.to_vec();
    for _ in 0..3 {
        late.extend_from_slice(&[3, 0x1f, 3, 0, 0]); // 799 ms
    }
    late.extend_from_slice(&grant);
    write("session", "timeout", &late);

    // switch_poll: destinations (app 0 to NIC 0, app 1 round robin, NIC 0 round robin, NIC 1
    // broadcast), then traffic; in the second, the apps write a NIC's source and a broadcast
    // destination over their frames, and the racer writes the other app's MAC as they are
    // copied.
    let start = [3u8, 2, 1, 1, 0];
    let release = [
        0u8, 0, 30, 0, 1, 30, 0, 2, 30, 0, 3, 30, 4, 7, 4, 7, 3, 200, 4, 7,
    ];
    let mut quiet = start.to_vec();
    quiet.extend_from_slice(&release);
    write("switch_poll", "traffic", &quiet);
    let mut spoof = start.to_vec();
    spoof.extend_from_slice(&[2, 1, 1, 4, 1, 2, 0x08, 0x00, 0]); // app 0: NIC 0's source
    spoof.extend_from_slice(&[2, 1, 1, 2, 1, 4, 0x88, 0xb5, 1]); // app 1: to NIC 0, from ff:..
    spoof.extend_from_slice(&[2, 1, 1, 0, 1, 1, 0x08, 0x06, 2]); // racer: app 1 over app 0
    spoof.extend_from_slice(&release);
    spoof.extend_from_slice(&release);
    write("switch_poll", "spoof", &spoof);
}

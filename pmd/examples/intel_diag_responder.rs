//! Diagnostic: answers ARP and ICMP echo on an Intel NIC through the `intel` port alone (no
//! switch, no TCP/IP stack). Used by the QEMU igb test to prove the register-level driver
//! end to end; also handy on real hardware.
//!
//! Usage: `intel_diag_responder <pci-address> <ipv4> [seconds] [auto|sysfs|vfio] [queues]`
//!
//! With several queues, RSS spreads flows over them; the counters report frames per queue.
//!
//! ARP replies are written into the received buffer and transmitted from it (zero copy, the
//! port's own pool). ICMP echo replies are written into a buffer of a separate pool in
//! memfd pages, as an app domain's pool is, registered with the port for transmit: the
//! device DMAs them from that pool (pinned and translated by pagemap, or mapped by the
//! IOMMU under VFIO).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use grant_pool::shm::ShmBackend;
use grant_pool::{Access as GrantAccess, BufHandle, BufIdx, DomId, Grant, GrantBackend, Pool};
use grant_pool::{PoolId, PoolLayout};
use pmd::intel::{Access, IntelConfig, IntelPort};
use pmd::{Frame, LinkState, Port};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: {} <pci-address> <ipv4> [seconds] [auto|sysfs|vfio]",
            args[0]
        );
        std::process::exit(2);
    }
    let ip: Ipv4Addr = match args[2].parse() {
        Ok(ip) => ip,
        Err(e) => {
            eprintln!("bad IPv4 address {:?}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let secs: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(60);
    let access = match args.get(4).map(String::as_str) {
        None | Some("auto") => Access::Auto,
        Some("sysfs") => Access::Sysfs,
        Some("vfio") => Access::Vfio,
        Some(other) => {
            eprintln!("bad access mode {other:?}: auto, sysfs or vfio");
            std::process::exit(2);
        }
    };
    let queues: u16 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(1);
    let cfg = IntelConfig {
        pci: args[1].clone(),
        access,
        queues,
        ..IntelConfig::default()
    };
    let mut port = match IntelPort::open(&cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("RESPONDER FAILED: {e}");
            std::process::exit(1);
        }
    };
    // An app-style pool: memfd pages, registered for transmit DMA.
    let app_pool = match app_pool() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("RESPONDER FAILED: app pool: {e}");
            std::process::exit(1);
        }
    };
    let (_grant, app) = app_pool;
    if let Err(e) = port.register_tx_pool(&app) {
        eprintln!("RESPONDER FAILED: {e}");
        std::process::exit(1);
    }
    let mut app_free: Vec<BufHandle> = (0..app.layout().count as u32)
        .filter_map(|i| app.handle(BufIdx(i)).ok())
        .collect();
    let mut tx_app = 0u64;
    let mut per_queue = vec![0u64; port.queues()];
    let link = port.link();
    println!(
        "RESPONDER READY {} access={access:?} mac={} link={} ip={ip}",
        port.name(),
        fmt_mac(port.mac()),
        match link {
            LinkState::Up { mbps } => format!("up/{mbps}"),
            LinkState::Down => "down".into(),
        }
    );
    let stop = Instant::now() + Duration::from_secs(secs);
    let mut rx = [Frame::new(BufHandle::from_raw(0), 0); 32];
    let mut tx: Vec<Frame> = Vec::with_capacity(32);
    let mut done = [BufHandle::from_raw(0); 64];
    let mut drop: Vec<BufHandle> = Vec::with_capacity(32);
    let (mut arp, mut icmp, mut other, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut idle = 0u32;
    let mut report = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    let pool = port.pool().clone();
    while Instant::now() < stop {
        let mut n = 0;
        for q in 0..port.queues() {
            let k = port.rx_burst_queue(q, &mut rx[n..]);
            if let Some(c) = per_queue.get_mut(q) {
                *c += k as u64;
            }
            n += k;
        }
        tx.clear();
        drop.clear();
        for f in &rx[..n] {
            let len = usize::from(f.len);
            let Ok(mem) = pool.buf(f.buf) else {
                drop.push(f.buf);
                continue;
            };
            if mem.read(0, &mut buf[..len]).is_err() {
                drop.push(f.buf);
                continue;
            }
            let reply = answer(&mut buf[..len], port.mac(), ip.octets());
            let answer = match reply {
                Some(Kind::Arp) => {
                    arp += 1;
                    true
                }
                Some(Kind::Icmp) => {
                    icmp += 1;
                    true
                }
                Some(Kind::BadChecksum) => {
                    bad += 1;
                    false
                }
                None => {
                    other += 1;
                    false
                }
            };
            if !answer {
                drop.push(f.buf);
            } else if matches!(reply, Some(Kind::Icmp))
                && let Some(h) = app_free.pop()
            {
                // The reply goes out of the app pool; the received buffer goes back.
                match app.buf(h).and_then(|m| Ok(m.write(0, &buf[..len])?)) {
                    Ok(()) => tx.push(Frame::new(h, f.len)),
                    Err(_) => app_free.push(h),
                }
                drop.push(f.buf);
            } else if mem.write(0, &buf[..len]).is_ok() {
                tx.push(*f);
            } else {
                drop.push(f.buf);
            }
        }
        let sent = port.tx_burst(&tx);
        for f in &tx[..sent] {
            tx_app += u64::from(f.buf.pool() == app.id());
        }
        for f in &tx[sent..] {
            if f.buf.pool() == app.id() {
                app_free.push(f.buf);
            } else {
                drop.push(f.buf);
            }
        }
        let d = port.tx_done(&mut done);
        for &b in &done[..d] {
            if b.pool() == app.id() {
                app_free.push(b);
            } else {
                drop.push(b);
            }
        }
        port.reclaim(&drop);
        if n == 0 && d == 0 {
            idle += 1;
            if idle > 200 {
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            idle = 0;
        }
        if Instant::now() >= report {
            report += Duration::from_secs(2);
            println!(
                "RESPONDER arp={arp} icmp={icmp} bad_checksum={bad} other={other} tx_from_app_pool={tx_app} rx_per_queue={per_queue:?} stats={:?}",
                port.stats()
            );
        }
    }
    println!(
        "RESPONDER DONE arp={arp} icmp={icmp} bad_checksum={bad} other={other} tx_from_app_pool={tx_app} stats={:?}",
        port.stats()
    );
}

/// 256 buffers of 2 KiB in memfd pages, granted as an app domain grants its pool.
fn app_pool() -> Result<(impl Grant, Pool), String> {
    let layout = PoolLayout::new(2048, 256).map_err(|e| e.to_string())?;
    let grant = ShmBackend::new(DomId(1))
        .grant(DomId(0), layout.pages(), GrantAccess::ReadWrite)
        .map_err(|e| e.to_string())?;
    let pool = Pool::new(PoolId(9), layout, grant.memory().clone()).map_err(|e| e.to_string())?;
    Ok((grant, pool))
}

#[derive(Clone, Copy)]
enum Kind {
    Arp,
    Icmp,
    BadChecksum,
}

/// Turns an ARP request for `ip` or an ICMP echo request to `ip` into its reply in place.
fn answer(f: &mut [u8], mac: [u8; 6], ip: [u8; 4]) -> Option<Kind> {
    if f.len() < 42 {
        return None;
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    if ethertype == 0x0806 {
        // ARP request for our address (htype 1, ptype IPv4, op 1).
        if f[14..22] != [0, 1, 8, 0, 6, 4, 0, 1] || f[38..42] != ip {
            return None;
        }
        let (sha, spa) = (
            <[u8; 6]>::try_from(&f[22..28]).ok()?,
            <[u8; 4]>::try_from(&f[28..32]).ok()?,
        );
        f[21] = 2;
        f[22..28].copy_from_slice(&mac);
        f[28..32].copy_from_slice(&ip);
        f[32..38].copy_from_slice(&sha);
        f[38..42].copy_from_slice(&spa);
        f[0..6].copy_from_slice(&sha);
        f[6..12].copy_from_slice(&mac);
        return Some(Kind::Arp);
    }
    if ethertype != 0x0800 || f[14] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0F) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    if ihl < 20 || total < ihl + 8 || 14 + total > f.len() || f[23] != 1 || f[30..34] != ip {
        return None;
    }
    let icmp = 14 + ihl;
    if f[icmp] != 8 {
        return None;
    }
    // Both checksums must verify: a frame the driver corrupted gets no answer.
    if checksum(&f[14..14 + ihl]) != 0 || checksum(&f[icmp..14 + total]) != 0 {
        return Some(Kind::BadChecksum);
    }
    // Echo reply: swap addresses (the IP checksum is unchanged by a swap), type 0, new
    // ICMP checksum.
    let mut src = [0u8; 6];
    src.copy_from_slice(&f[6..12]);
    f[0..6].copy_from_slice(&src);
    f[6..12].copy_from_slice(&mac);
    let mut a = [0u8; 4];
    a.copy_from_slice(&f[26..30]);
    f.copy_within(30..34, 26);
    f[30..34].copy_from_slice(&a);
    f[icmp] = 0;
    f[icmp + 2] = 0;
    f[icmp + 3] = 0;
    let sum = checksum(&f[icmp..14 + total]);
    f[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    Some(Kind::Icmp)
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        s += u32::from(w);
    }
    while s >> 16 != 0 {
        s = (s & 0xFFFF) + (s >> 16);
    }
    !(s as u16)
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

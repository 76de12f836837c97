//! The 82576 (igb) register map and its initialisation sequence, after the Intel 82576 GbE
//! Controller datasheet, chapter 4.5 "Software Initialization and Diagnostics" and the
//! register descriptions of chapter 8.

use super::desc::DescMem;
use super::regs::Regs;
use super::ring::RxErrors;
use super::{HwStats, IntelError, Setup, timeout};
use crate::{LinkState, Mac};

// --- General registers (82576 §8.2) ---
/// Device Control.
pub const CTRL: u32 = 0x0000;
/// CTRL.SLU: set link up (copper: link follows the PHY).
pub const CTRL_SLU: u32 = 1 << 6;
/// CTRL.FRCSPD: force speed.
pub const CTRL_FRCSPD: u32 = 1 << 11;
/// CTRL.FRCDPLX: force duplex.
pub const CTRL_FRCDPLX: u32 = 1 << 12;
/// CTRL.RST: device reset (self-clearing).
pub const CTRL_RST: u32 = 1 << 26;
/// Device Status.
pub const STATUS: u32 = 0x0008;
/// STATUS.LU: link up.
pub const STATUS_LU: u32 = 1 << 1;
/// STATUS.SPEED, bits 7:6.
pub const STATUS_SPEED_SHIFT: u32 = 6;
/// EEPROM/Flash Control.
pub const EECD: u32 = 0x0010;
/// EECD.AUTO_RD: EEPROM auto-read done.
pub const EECD_AUTO_RD: u32 = 1 << 9;
/// Extended Device Control.
pub const CTRL_EXT: u32 = 0x0018;
/// CTRL_EXT.DRV_LOAD: the driver has taken the device.
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
/// MDI Control: PHY register access.
pub const MDIC: u32 = 0x0020;
/// MDIC.OP = write.
pub const MDIC_OP_WRITE: u32 = 0b01 << 26;
/// MDIC.OP = read.
pub const MDIC_OP_READ: u32 = 0b10 << 26;
/// MDIC.R: ready (the access finished).
pub const MDIC_READY: u32 = 1 << 28;
/// MDIC.E: error.
pub const MDIC_ERROR: u32 = 1 << 30;
/// The internal PHY's MDIO address.
pub const PHY_ADDR: u32 = 1;

// --- Interrupts (82576 §8.8) ---
/// Interrupt Mask Clear.
pub const IMC: u32 = 0x00D8;
/// Extended Interrupt Mask Clear.
pub const EIMC: u32 = 0x1528;

// --- Receive (82576 §8.10) ---
/// Receive Control.
pub const RCTL: u32 = 0x0100;
/// RCTL.EN: receiver enable.
pub const RCTL_EN: u32 = 1 << 1;
/// RCTL.UPE: unicast promiscuous.
pub const RCTL_UPE: u32 = 1 << 3;
/// RCTL.MPE: multicast promiscuous.
pub const RCTL_MPE: u32 = 1 << 4;
/// RCTL.BAM: accept broadcast.
pub const RCTL_BAM: u32 = 1 << 15;
/// RCTL.LPE: long packet enable (frames up to RLPML instead of 1522 bytes).
pub const RCTL_LPE: u32 = 1 << 5;
/// RCTL.SECRC: strip the Ethernet CRC.
pub const RCTL_SECRC: u32 = 1 << 26;
/// Receive Checksum Control.
pub const RXCSUM: u32 = 0x5000;
/// RXCSUM.PCSD: write the RSS hash instead of the packet checksum.
pub const RXCSUM_PCSD: u32 = 1 << 13;
/// RXCSUM.IPOFLD: check IPv4 header checksums (IPCS, IPE in the write-back).
pub const RXCSUM_IPOFLD: u32 = 1 << 8;
/// RXCSUM.TUOFLD: check TCP/UDP checksums (TCPCS/UDPCS, TCPE in the write-back).
pub const RXCSUM_TUOFLD: u32 = 1 << 9;
/// Receive Long Packet Maximum Length: the longest frame taken with RCTL.LPE.
pub const RLPML: u32 = 0x5004;
/// The error bits of the 82576's advanced receive write-back (§7.1.5.2, extended
/// status/error field): RXE bit 31, IPE bit 30, TCPE bit 29.
pub const RX_ERRORS: RxErrors = RxErrors {
    rxe: 1 << 31,
    ipe: 1 << 30,
    l4e: 1 << 29,
};
/// Multicast Table Array, 128 registers.
pub const MTA: u32 = 0x5200;
/// Receive Address Low (n < 16).
pub const fn ral(n: u32) -> u32 {
    0x5400 + 8 * n
}
/// Receive Address High (n < 16).
pub const fn rah(n: u32) -> u32 {
    0x5404 + 8 * n
}
/// RAH.AV: address valid.
pub const RAH_AV: u32 = 1 << 31;
/// Multiple Receive Queues Command.
pub const MRQC: u32 = 0x5818;
/// MRQC.Multiple_Receive_Queues_Enable = RSS.
pub const MRQC_RSS: u32 = 0b010;
/// MRQC RSS field enables: IPv4/TCP, IPv4, IPv6/TCP, IPv6, IPv4/UDP.
pub const MRQC_RSS_FIELDS: u32 = (1 << 16) | (1 << 17) | (1 << 19) | (1 << 20) | (1 << 22);
/// Redirection table, 32 registers of 4 one-byte entries.
pub const RETA: u32 = 0x5C00;
/// RSS random key, 10 registers.
pub const RSSRK: u32 = 0x5C80;
/// Split and Replication Receive Control of queue `q`.
pub const fn srrctl(q: u32) -> u32 {
    0xC00C + 0x40 * q
}
/// SRRCTL.DESCTYPE = advanced, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 0b001 << 25;
/// SRRCTL.Drop_En: drop when no descriptor is free instead of stalling the other queues.
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
/// Receive Descriptor Base Address Low of queue `q`.
pub const fn rdbal(q: u32) -> u32 {
    0xC000 + 0x40 * q
}
/// Receive Descriptor Base Address High.
pub const fn rdbah(q: u32) -> u32 {
    0xC004 + 0x40 * q
}
/// Receive Descriptor Length.
pub const fn rdlen(q: u32) -> u32 {
    0xC008 + 0x40 * q
}
/// Receive Descriptor Head.
pub const fn rdh(q: u32) -> u32 {
    0xC010 + 0x40 * q
}
/// Receive Descriptor Tail.
pub const fn rdt(q: u32) -> u32 {
    0xC018 + 0x40 * q
}
/// Receive Descriptor Control.
pub const fn rxdctl(q: u32) -> u32 {
    0xC028 + 0x40 * q
}
/// RXDCTL/TXDCTL.ENABLE.
pub const DCTL_ENABLE: u32 = 1 << 25;

// --- Transmit (82576 §8.12) ---
/// Transmit Control.
pub const TCTL: u32 = 0x0400;
/// TCTL.EN: transmitter enable.
pub const TCTL_EN: u32 = 1 << 1;
/// TCTL.PSP: pad short packets.
pub const TCTL_PSP: u32 = 1 << 3;
/// TCTL.CT: collision threshold, bits 11:4.
pub const TCTL_CT_SHIFT: u32 = 4;
/// TCTL.COLD: collision distance, bits 21:12.
pub const TCTL_COLD_SHIFT: u32 = 12;
/// TCTL.RTLC: re-transmit on late collision.
pub const TCTL_RTLC: u32 = 1 << 24;
/// Transmit Inter Packet Gap.
pub const TIPG: u32 = 0x0410;
/// Transmit Descriptor Base Address Low of queue `q`.
pub const fn tdbal(q: u32) -> u32 {
    0xE000 + 0x40 * q
}
/// Transmit Descriptor Base Address High.
pub const fn tdbah(q: u32) -> u32 {
    0xE004 + 0x40 * q
}
/// Transmit Descriptor Length.
pub const fn tdlen(q: u32) -> u32 {
    0xE008 + 0x40 * q
}
/// Transmit Descriptor Head.
pub const fn tdh(q: u32) -> u32 {
    0xE010 + 0x40 * q
}
/// Transmit Descriptor Tail.
pub const fn tdt(q: u32) -> u32 {
    0xE018 + 0x40 * q
}
/// Transmit Descriptor Control.
pub const fn txdctl(q: u32) -> u32 {
    0xE028 + 0x40 * q
}

// --- Statistics (82576 §8.19; all clear on read) ---
/// CRC Error Count.
pub const CRCERRS: u32 = 0x4000;
/// Receive Error Count.
pub const RXERRC: u32 = 0x400C;
/// Missed Packets Count (no room in the packet buffer).
pub const MPC: u32 = 0x4010;
/// Receive Length Error Count.
pub const RLEC: u32 = 0x4040;
/// Good Packets Received Count.
pub const GPRC: u32 = 0x4074;
/// Good Packets Transmitted Count.
pub const GPTC: u32 = 0x4080;
/// Good Octets Received Count, low (read before high).
pub const GORCL: u32 = 0x4088;
/// Good Octets Received Count, high.
pub const GORCH: u32 = 0x408C;
/// Good Octets Transmitted Count, low (read before high).
pub const GOTCL: u32 = 0x4090;
/// Good Octets Transmitted Count, high.
pub const GOTCH: u32 = 0x4094;
/// Receive No Buffers Count (no free descriptor).
pub const RNBC: u32 = 0x40A0;

// --- PHY registers (IEEE 802.3 clause 22, 82576 §8.23) ---
/// PHY Control (BMCR).
pub const PHY_PCTRL: u32 = 0;
/// PCTRL: auto-negotiation enable.
pub const PCTRL_ANE: u16 = 1 << 12;
/// PCTRL: restart auto-negotiation.
pub const PCTRL_RESTART_AN: u16 = 1 << 9;
/// PCTRL: power down.
pub const PCTRL_POWER_DOWN: u16 = 1 << 11;
/// PHY Status (BMSR).
pub const PHY_PSTATUS: u32 = 1;

/// Queues this driver sets up at most.
pub const MAX_QUEUES: usize = 8;

/// Reads PHY register `reg` through MDIC (82576 §8.2.4).
pub fn phy_read<R: Regs>(regs: &R, reg: u32) -> Result<u16, IntelError> {
    regs.write(MDIC, MDIC_OP_READ | (PHY_ADDR << 21) | (reg << 16));
    let v = mdic_wait(regs)?;
    Ok(v as u16)
}

/// Writes PHY register `reg` through MDIC.
pub fn phy_write<R: Regs>(regs: &R, reg: u32, val: u16) -> Result<(), IntelError> {
    regs.write(
        MDIC,
        MDIC_OP_WRITE | (PHY_ADDR << 21) | (reg << 16) | u32::from(val),
    );
    mdic_wait(regs).map(|_| ())
}

fn mdic_wait<R: Regs>(regs: &R) -> Result<u32, IntelError> {
    regs.wait(MDIC, MDIC_READY, MDIC_READY, 10)
        .map_err(|v| timeout("finish a PHY access (MDIC.R)", MDIC, v))?;
    let v = regs.read(MDIC);
    if v & MDIC_ERROR != 0 {
        return Err(IntelError::Phy(v));
    }
    Ok(v)
}

/// Resets the device and leaves it quiet: §4.5.3 steps 1–2.
pub fn reset<R: Regs>(regs: &R) -> Result<(), IntelError> {
    // §4.5.4 Interrupts during initialization: mask every cause; this driver polls.
    regs.write(IMC, u32::MAX);
    regs.write(EIMC, u32::MAX);
    // §4.5.5 Global reset: stop receive and transmit first so no DMA is in flight, then set
    // CTRL.RST; it clears itself when the reset is done.
    regs.write(RCTL, 0);
    regs.write(TCTL, TCTL_PSP);
    regs.delay_us(10_000);
    regs.set_bits(CTRL, CTRL_RST);
    regs.delay_us(1_000);
    regs.wait(CTRL, CTRL_RST, 0, 100)
        .map_err(|v| timeout("finish its reset (CTRL.RST)", CTRL, v))?;
    // §4.5.3: after reset the EEPROM is read again (MAC address, PHY defaults): wait for
    // EECD.AUTO_RD before touching the registers it loads. Some 82576 implementations
    // (QEMU's among them) never set AUTO_RD; what the driver needs from the EEPROM is the
    // station address, so a valid RAH0 is accepted in its place.
    if let Err(v) = regs.wait(EECD, EECD_AUTO_RD, EECD_AUTO_RD, 20) {
        if regs.read(rah(0)) & RAH_AV == 0 {
            return Err(timeout(
                "finish the EEPROM auto-read (EECD.AUTO_RD, and RAH0 holds no address)",
                EECD,
                v,
            ));
        }
        tracing::debug!("igb: EECD.AUTO_RD not reported; RAH0 is valid, continuing");
    }
    // §4.5.4: the reset unmasked nothing, but masks are cleared again as the datasheet asks.
    regs.write(IMC, u32::MAX);
    regs.write(EIMC, u32::MAX);
    // §8.2.3: tell the firmware a driver owns the device.
    regs.set_bits(CTRL_EXT, CTRL_EXT_DRV_LOAD);
    Ok(())
}

/// §4.5.7 Link setup, copper: let the MAC follow the PHY (CTRL.SLU, no forced speed or
/// duplex) and (re)start PHY auto-negotiation.
pub fn setup_link<R: Regs>(regs: &R) -> Result<(), IntelError> {
    let ctrl = regs.read(CTRL);
    regs.write(CTRL, (ctrl | CTRL_SLU) & !(CTRL_FRCSPD | CTRL_FRCDPLX));
    let pctrl = phy_read(regs, PHY_PCTRL)?;
    phy_write(
        regs,
        PHY_PCTRL,
        (pctrl | PCTRL_ANE | PCTRL_RESTART_AN) & !PCTRL_POWER_DOWN,
    )
}

/// §4.5.8 Statistics: the counters clear on read; read them all once.
pub fn clear_stats<R: Regs>(regs: &R) {
    let mut s = HwStats::default();
    read_stats(regs, &mut s);
}

/// The whole initialisation, §4.5.3 "Initialization Sequence", in the datasheet's order.
pub fn init<R: Regs>(regs: &R, s: &Setup<'_>) -> Result<(), IntelError> {
    if s.rx.is_empty() || s.rx.len() > MAX_QUEUES || s.tx.is_empty() || s.tx.len() > MAX_QUEUES {
        return Err(IntelError::Config(format!(
            "igb supports 1 to {MAX_QUEUES} queues in each direction"
        )));
    }
    reset(regs)?;
    setup_link(regs)?;
    clear_stats(regs);
    init_rx(regs, s)?;
    init_tx(regs, s)?;
    Ok(())
}

/// §4.5.9 Receive initialization.
pub fn init_rx<R: Regs>(regs: &R, s: &Setup<'_>) -> Result<(), IntelError> {
    // Receive address: RAL0/RAH0 were loaded from the EEPROM; make sure entry 0 is valid.
    regs.set_bits(rah(0), RAH_AV);
    // Multicast Table Array: no multicast group until asked for.
    for i in 0..128 {
        regs.write(MTA + 4 * i, 0);
    }
    // §7.1.2 Receive checksum offload: the device checks IPv4 and TCP/UDP checksums and
    // says so in each descriptor's status (the driver passes "verified" on).
    regs.set_bits(RXCSUM, RXCSUM_IPOFLD | RXCSUM_TUOFLD);
    // Multiple queues: RSS spreads flows over the queues (§7.1.1.7); its hash replaces the
    // packet checksum field in the descriptor (RXCSUM.PCSD; the status bits stay).
    if s.rx.len() > 1 {
        setup_rss(regs, s.rx.len() as u32, RETA, RSSRK);
        regs.set_bits(RXCSUM, RXCSUM_PCSD);
        regs.write(MRQC, MRQC_RSS | MRQC_RSS_FIELDS);
    } else {
        regs.write(MRQC, 0);
    }
    for (q, ring) in s.rx.iter().enumerate() {
        let q = q as u32;
        // SRRCTL: advanced one-buffer descriptors, buffer size in 1 KiB units, drop when
        // the queue has no descriptor.
        regs.write(
            srrctl(q),
            SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN | (s.buf_size / 1024),
        );
        program_ring(regs, ring, rdbal(q), rdbah(q), rdlen(q), rdh(q), rdt(q));
        // RXDCTL: prefetch 8, host 8, write-back 4 descriptors; then ENABLE, and poll until
        // the queue reports enabled before the tail may be written.
        regs.write(rxdctl(q), 8 | (8 << 8) | (4 << 16) | DCTL_ENABLE);
        regs.wait(rxdctl(q), DCTL_ENABLE, DCTL_ENABLE, 10)
            .map_err(|v| timeout("enable a receive queue (RXDCTL.ENABLE)", rxdctl(q), v))?;
        regs.write(rdt(q), s.rx_tail);
    }
    // RCTL last: broadcast accepted, CRC stripped, 2 KiB buffers (BSIZE 00), then receive on.
    let mut rctl = RCTL_EN | RCTL_BAM | RCTL_SECRC;
    if s.promisc {
        rctl |= RCTL_UPE | RCTL_MPE;
    }
    // §8.10.1/§8.10.5: frames longer than 1522 bytes, up to RLPML, with RCTL.LPE.
    if s.max_frame > 0 {
        regs.write(RLPML, s.max_frame);
        rctl |= RCTL_LPE;
    }
    regs.write(RCTL, rctl);
    Ok(())
}

/// §4.5.10 Transmit initialization.
pub fn init_tx<R: Regs>(regs: &R, s: &Setup<'_>) -> Result<(), IntelError> {
    // TCTL: pad short frames, collision threshold 15, collision distance 63 (full duplex),
    // re-transmit on late collision; then transmit on.
    regs.write(
        TCTL,
        TCTL_EN | TCTL_PSP | TCTL_RTLC | (0x0F << TCTL_CT_SHIFT) | (0x3F << TCTL_COLD_SHIFT),
    );
    // TIPG for copper: IPGT 8, IPGR1 8, IPGR2 6.
    regs.write(TIPG, 8 | (8 << 10) | (6 << 20));
    for (q, ring) in s.tx.iter().enumerate() {
        let q = q as u32;
        program_ring(regs, ring, tdbal(q), tdbah(q), tdlen(q), tdh(q), tdt(q));
        // TXDCTL: prefetch 8, host 1, write-back 1 (DD comes back for every descriptor
        // with RS, so completions are seen at low rates too); then ENABLE and poll.
        regs.write(txdctl(q), 8 | (1 << 8) | (1 << 16) | DCTL_ENABLE);
        regs.wait(txdctl(q), DCTL_ENABLE, DCTL_ENABLE, 10)
            .map_err(|v| timeout("enable a transmit queue (TXDCTL.ENABLE)", txdctl(q), v))?;
    }
    Ok(())
}

/// Base, length, head and tail of one ring.
pub(super) fn program_ring<R: Regs>(
    regs: &R,
    ring: &DescMem,
    bal: u32,
    bah: u32,
    len: u32,
    head: u32,
    tail: u32,
) {
    regs.write(bal, ring.iova() as u32);
    regs.write(bah, (ring.iova() >> 32) as u32);
    regs.write(len, ring.bytes() as u32);
    regs.write(head, 0);
    regs.write(tail, 0);
}

/// Fills the redirection table round-robin over `queues` and sets a fixed hash key.
pub(super) fn setup_rss<R: Regs>(regs: &R, queues: u32, reta: u32, rssrk: u32) {
    for i in 0..32 {
        let mut v = 0;
        for b in 0..4 {
            v |= ((i * 4 + b) % queues) << (8 * b);
        }
        regs.write(reta + 4 * i, v);
    }
    // A fixed key keeps a flow on the same queue across restarts.
    const KEY: [u32; 10] = [
        0x6d5a_56da,
        0x255b_0ec2,
        0x4167_253d,
        0x43a3_8fb0,
        0xd0ca_2bcb,
        0xae7b_30b4,
        0x77cb_2da3,
        0x8030_f20c,
        0x6a42_b73b,
        0xbeac_01fa,
    ];
    for (i, k) in KEY.iter().enumerate() {
        regs.write(rssrk + 4 * i as u32, *k);
    }
}

/// The station address from RAL0/RAH0 (loaded from the EEPROM at reset).
pub fn mac<R: Regs>(regs: &R) -> Mac {
    mac_from(regs.read(ral(0)), regs.read(rah(0)))
}

pub(super) fn mac_from(lo: u32, hi: u32) -> Mac {
    let l = lo.to_le_bytes();
    let h = hi.to_le_bytes();
    [l[0], l[1], l[2], l[3], h[0], h[1]]
}

/// Link state from STATUS.LU and STATUS.SPEED.
pub fn link<R: Regs>(regs: &R) -> LinkState {
    let s = regs.read(STATUS);
    if s & STATUS_LU == 0 {
        return LinkState::Down;
    }
    let mbps = match (s >> STATUS_SPEED_SHIFT) & 3 {
        0 => 10,
        1 => 100,
        _ => 1000,
    };
    LinkState::Up { mbps }
}

/// Unicast and multicast promiscuous mode (RCTL.UPE/MPE).
pub fn set_promisc<R: Regs>(regs: &R, on: bool) {
    if on {
        regs.set_bits(RCTL, RCTL_UPE | RCTL_MPE);
    } else {
        regs.clear_bits(RCTL, RCTL_UPE | RCTL_MPE);
    }
}

/// Accept every multicast frame (RCTL.MPE).
pub fn set_allmulti<R: Regs>(regs: &R, on: bool) {
    if on {
        regs.set_bits(RCTL, RCTL_MPE);
    } else {
        regs.clear_bits(RCTL, RCTL_MPE);
    }
}

/// Adds `addr` to the multicast table (RCTL.MO = 00: hash = address bits 47:36).
pub fn add_multicast<R: Regs>(regs: &R, addr: Mac) {
    let (reg, bit) = mta_slot(addr);
    regs.set_bits(MTA + 4 * reg, 1 << bit);
}

/// The MTA register and bit of a multicast address (filter offset 00, shared by both
/// families: 82576 §7.1.1.1.2, 82599 §7.1.2.3).
pub(super) fn mta_slot(addr: Mac) -> (u32, u32) {
    let hash = (u32::from(addr[4]) >> 4) | (u32::from(addr[5]) << 4);
    ((hash >> 5) & 0x7F, hash & 0x1F)
}

/// Adds the clear-on-read counters to `s`.
pub fn read_stats<R: Regs>(regs: &R, s: &mut HwStats) {
    s.rx_packets += u64::from(regs.read(GPRC));
    s.tx_packets += u64::from(regs.read(GPTC));
    let lo = regs.read(GORCL);
    s.rx_bytes += u64::from(lo) | (u64::from(regs.read(GORCH)) << 32);
    let lo = regs.read(GOTCL);
    s.tx_bytes += u64::from(lo) | (u64::from(regs.read(GOTCH)) << 32);
    s.rx_missed += u64::from(regs.read(MPC));
    s.rx_no_desc += u64::from(regs.read(RNBC));
    s.rx_errors +=
        u64::from(regs.read(CRCERRS)) + u64::from(regs.read(RXERRC)) + u64::from(regs.read(RLEC));
}

/// Stops receive and transmit and resets the device, so it does no more DMA.
pub fn stop<R: Regs>(regs: &R) {
    regs.write(RCTL, 0);
    regs.write(TCTL, TCTL_PSP);
    regs.delay_us(1_000);
    regs.set_bits(CTRL, CTRL_RST);
    regs.delay_us(1_000);
    regs.clear_bits(CTRL_EXT, CTRL_EXT_DRV_LOAD);
}

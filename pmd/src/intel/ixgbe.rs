//! The 82599/X540/X550 (ixgbe) register map and its initialisation sequence, after the Intel
//! 82599 10 GbE Controller datasheet, §4.6 "Software Initialization and Diagnostics" and the
//! register descriptions of chapter 8 (X540/X550 share the sequence; their copper PHYs bring
//! the link up by themselves, so the AUTOC step is 82599-only).
//!
//! No 82599/X540/X550 is available to this project: this module is exercised against the
//! register-level model in [`super::model`], not against hardware.

use super::igb::{mac_from, mta_slot, program_ring, setup_rss};
use super::regs::Regs;
use super::ring::RxErrors;
use super::{HwStats, IntelError, Setup, timeout};
use crate::{LinkState, Mac};

// --- General (82599 §8.2.3.1) ---
/// Device Control.
pub const CTRL: u32 = 0x0000;
/// CTRL.LRST (link reset) | CTRL.RST (device reset); both self-clearing.
pub const CTRL_RST_MASK: u32 = (1 << 3) | (1 << 26);
/// Device Status.
pub const STATUS: u32 = 0x0008;
/// Extended Device Control.
pub const CTRL_EXT: u32 = 0x0018;
/// CTRL_EXT.NS_DIS: no-snoop disable.
pub const CTRL_EXT_NS_DIS: u32 = 1 << 16;
/// CTRL_EXT.DRV_LOAD.
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
/// EEPROM/Flash Control.
pub const EEC: u32 = 0x10010;
/// EEC.ARD: EEPROM auto-read done.
pub const EEC_ARD: u32 = 1 << 9;

// --- Interrupts (82599 §8.2.3.5) ---
/// Extended Interrupt Mask Clear.
pub const EIMC: u32 = 0x0888;
/// Every interrupt cause EIMC can mask.
pub const EIMC_ALL: u32 = 0x7FFF_FFFF;

// --- Link (82599 §8.2.3.22) ---
/// Auto-Negotiation Control.
pub const AUTOC: u32 = 0x42A0;
/// AUTOC.LMS (link mode select), bits 15:13.
pub const AUTOC_LMS_MASK: u32 = 0b111 << 13;
/// AUTOC.LMS = 10 GbE serial link (KR / SFI), no backplane auto-negotiation.
pub const AUTOC_LMS_10G_SERIAL: u32 = 0b011 << 13;
/// AUTOC.10G_PMA_PMD_PARALLEL, bits 8:7 (00 = XAUI).
pub const AUTOC_10G_PMA_PMD_MASK: u32 = 0b11 << 7;
/// AUTOC.Restart_AN.
pub const AUTOC_AN_RESTART: u32 = 1 << 12;
/// Link Status.
pub const LINKS: u32 = 0x42A4;
/// LINKS.Link_Up.
pub const LINKS_UP: u32 = 1 << 30;
/// LINKS.LINK_SPEED, bits 29:28.
pub const LINKS_SPEED_SHIFT: u32 = 28;

// --- Receive (82599 §8.2.3.8) ---
/// Receive Control.
pub const RXCTRL: u32 = 0x3000;
/// RXCTRL.RXEN.
pub const RXCTRL_RXEN: u32 = 1 << 0;
/// Receive DMA Control.
pub const RDRXCTL: u32 = 0x2F00;
/// RDRXCTL.CRCStrip (must match HLREG0.RXCRCSTRP).
pub const RDRXCTL_CRCSTRIP: u32 = 1 << 1;
/// RDRXCTL.DMAIDONE: DMA initialisation done.
pub const RDRXCTL_DMAIDONE: u32 = 1 << 3;
/// RDRXCTL.RSCFRSTSIZE, bits 21:17 (must be 0).
pub const RDRXCTL_RSCFRSTSIZE: u32 = 0b11111 << 17;
/// RDRXCTL.RSCACKC (must be 1).
pub const RDRXCTL_RSCACKC: u32 = 1 << 25;
/// RDRXCTL.FCOE_WRFIX (must be 1).
pub const RDRXCTL_FCOE_WRFIX: u32 = 1 << 26;
/// Receive packet buffer size of traffic class `n` (8 of them).
pub const fn rxpbsize(n: u32) -> u32 {
    0x3C00 + 4 * n
}
/// 128 KiB: the whole receive packet buffer for traffic class 0.
pub const RXPBSIZE_128KB: u32 = 128 << 10;
/// MAC Core Control 0.
pub const HLREG0: u32 = 0x4240;
/// HLREG0.TXCRCEN: append the CRC on transmit.
pub const HLREG0_TXCRCEN: u32 = 1 << 0;
/// HLREG0.RXCRCSTRP: strip the CRC on receive.
pub const HLREG0_RXCRCSTRP: u32 = 1 << 1;
/// HLREG0.JUMBOEN: receive frames longer than 1518 bytes (up to MAXFRS).
pub const HLREG0_JUMBOEN: u32 = 1 << 2;
/// Max Frame Size: MFS in bits 31:16, the CRC included.
pub const MAXFRS: u32 = 0x4268;
/// HLREG0.TXPADEN: pad short frames.
pub const HLREG0_TXPADEN: u32 = 1 << 10;
/// Filter Control.
pub const FCTRL: u32 = 0x5080;
/// FCTRL.MPE: multicast promiscuous.
pub const FCTRL_MPE: u32 = 1 << 8;
/// FCTRL.UPE: unicast promiscuous.
pub const FCTRL_UPE: u32 = 1 << 9;
/// FCTRL.BAM: accept broadcast.
pub const FCTRL_BAM: u32 = 1 << 10;
/// Multicast Control.
pub const MCSTCTRL: u32 = 0x5090;
/// MCSTCTRL.MFE: multicast filter enable (MO = 00).
pub const MCSTCTRL_MFE: u32 = 1 << 2;
/// Multicast Table Array, 128 registers.
pub const MTA: u32 = 0x5200;
/// Receive Checksum Control.
pub const RXCSUM: u32 = 0x5000;
/// RXCSUM.PCSD: RSS hash in the descriptor instead of the checksum.
pub const RXCSUM_PCSD: u32 = 1 << 13;
/// The error bits of the 82599's advanced receive write-back (§7.1.6.2): RXE bit 29, IPE
/// bit 31, TCPE bit 30. IPCS/L4CS/UDPCS status is always reported.
pub const RX_ERRORS: RxErrors = RxErrors {
    rxe: 1 << 29,
    ipe: 1 << 31,
    l4e: 1 << 30,
};
/// Receive Address Low (n < 128).
pub const fn ral(n: u32) -> u32 {
    0xA200 + 8 * n
}
/// Receive Address High.
pub const fn rah(n: u32) -> u32 {
    0xA204 + 8 * n
}
/// RAH.AV.
pub const RAH_AV: u32 = 1 << 31;
/// Multiple Receive Queues Command.
pub const MRQC: u32 = 0xEC80;
/// MRQC.MRQE = RSS only.
pub const MRQC_RSS: u32 = 0b0001;
/// MRQC RSS field enables: IPv4/TCP, IPv4, IPv6, IPv6/TCP, IPv4/UDP.
pub const MRQC_RSS_FIELDS: u32 = (1 << 16) | (1 << 17) | (1 << 20) | (1 << 21) | (1 << 22);
/// Redirection table, 32 registers.
pub const RETA: u32 = 0xEB00;
/// RSS random key, 10 registers.
pub const RSSRK: u32 = 0xEB80;
/// Receive Descriptor Base Address Low of queue `q` (q < 64).
pub const fn rdbal(q: u32) -> u32 {
    0x1000 + 0x40 * q
}
/// Receive Descriptor Base Address High.
pub const fn rdbah(q: u32) -> u32 {
    0x1004 + 0x40 * q
}
/// Receive Descriptor Length.
pub const fn rdlen(q: u32) -> u32 {
    0x1008 + 0x40 * q
}
/// Rx DCA Control.
pub const fn dca_rxctrl(q: u32) -> u32 {
    0x100C + 0x40 * q
}
/// DCA_RXCTRL bit 12: reserved, resets to 1, must be written 0 (82599 §8.2.3.11.1).
pub const DCA_RXCTRL_BIT12: u32 = 1 << 12;
/// Receive Descriptor Head.
pub const fn rdh(q: u32) -> u32 {
    0x1010 + 0x40 * q
}
/// Split Receive Control.
pub const fn srrctl(q: u32) -> u32 {
    0x1014 + 0x40 * q
}
/// SRRCTL.DESCTYPE = advanced, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 0b001 << 25;
/// SRRCTL.Drop_En.
pub const SRRCTL_DROP_EN: u32 = 1 << 28;
/// Receive Descriptor Tail.
pub const fn rdt(q: u32) -> u32 {
    0x1018 + 0x40 * q
}
/// Receive Descriptor Control.
pub const fn rxdctl(q: u32) -> u32 {
    0x1028 + 0x40 * q
}
/// RXDCTL/TXDCTL.ENABLE.
pub const DCTL_ENABLE: u32 = 1 << 25;

// --- Transmit (82599 §8.2.3.9) ---
/// DMA Tx Control.
pub const DMATXCTL: u32 = 0x4A80;
/// DMATXCTL.TE: transmit enable.
pub const DMATXCTL_TE: u32 = 1 << 0;
/// DCB Transmit Descriptor Plane Control and Status.
pub const RTTDCS: u32 = 0x4900;
/// RTTDCS.ARBDIS: descriptor arbiter disable (while MTQC changes).
pub const RTTDCS_ARBDIS: u32 = 1 << 6;
/// Multiple Transmit Queues Command.
pub const MTQC: u32 = 0x8120;
/// DMA Tx TCP Max Allow Size Requests.
pub const DTXMXSZRQ: u32 = 0x8100;
/// Transmit packet buffer size of traffic class `n`.
pub const fn txpbsize(n: u32) -> u32 {
    0xCC00 + 4 * n
}
/// 40 KiB: the transmit packet buffer for traffic class 0.
pub const TXPBSIZE_40KB: u32 = 40 << 10;
/// Transmit Descriptor Base Address Low of queue `q`.
pub const fn tdbal(q: u32) -> u32 {
    0x6000 + 0x40 * q
}
/// Transmit Descriptor Base Address High.
pub const fn tdbah(q: u32) -> u32 {
    0x6004 + 0x40 * q
}
/// Transmit Descriptor Length.
pub const fn tdlen(q: u32) -> u32 {
    0x6008 + 0x40 * q
}
/// Transmit Descriptor Head.
pub const fn tdh(q: u32) -> u32 {
    0x6010 + 0x40 * q
}
/// Transmit Descriptor Tail.
pub const fn tdt(q: u32) -> u32 {
    0x6018 + 0x40 * q
}
/// Transmit Descriptor Control.
pub const fn txdctl(q: u32) -> u32 {
    0x6028 + 0x40 * q
}

// --- Statistics (82599 §8.2.3.23; clear on read) ---
/// CRC Error Count.
pub const CRCERRS: u32 = 0x4000;
/// Illegal Byte Error Count.
pub const ILLERRC: u32 = 0x4004;
/// Error Byte Count.
pub const ERRBC: u32 = 0x4008;
/// Receive Length Error Count.
pub const RLEC: u32 = 0x4040;
/// Missed Packets Count of packet buffer `n` (8).
pub const fn mpc(n: u32) -> u32 {
    0x3FA0 + 4 * n
}
/// Good Packets Received Count.
pub const GPRC: u32 = 0x4074;
/// Good Packets Transmitted Count.
pub const GPTC: u32 = 0x4080;
/// Good Octets Received Count low (read before high).
pub const GORCL: u32 = 0x4088;
/// Good Octets Received Count high.
pub const GORCH: u32 = 0x408C;
/// Good Octets Transmitted Count low.
pub const GOTCL: u32 = 0x4090;
/// Good Octets Transmitted Count high.
pub const GOTCH: u32 = 0x4094;

/// Queues this driver sets up at most.
pub const MAX_QUEUES: usize = 16;

/// §4.6.3.1–§4.6.3.2: mask interrupts, global reset, wait for the EEPROM and DMA init.
pub fn reset<R: Regs>(regs: &R) -> Result<(), IntelError> {
    // §4.6.3.1 Interrupts during initialization: mask everything (this driver polls).
    regs.write(EIMC, EIMC_ALL);
    // §4.6.3.2 Global reset and general configuration: CTRL.RST together with CTRL.LRST;
    // both clear themselves. The datasheet asks for at least 10 ms before polling.
    regs.write(CTRL, regs.read(CTRL) | CTRL_RST_MASK);
    regs.delay_us(10_000);
    regs.wait(CTRL, CTRL_RST_MASK, 0, 100)
        .map_err(|v| timeout("finish its reset (CTRL.RST)", CTRL, v))?;
    // Interrupts are masked again after the reset (§4.6.3.1).
    regs.write(EIMC, EIMC_ALL);
    // §4.6.3: wait for the EEPROM auto-read (EEC.ARD) ...
    regs.wait(EEC, EEC_ARD, EEC_ARD, 100)
        .map_err(|v| timeout("finish the EEPROM auto-read (EEC.ARD)", EEC, v))?;
    // ... and for the DMA initialisation (RDRXCTL.DMAIDONE).
    regs.wait(RDRXCTL, RDRXCTL_DMAIDONE, RDRXCTL_DMAIDONE, 100)
        .map_err(|v| timeout("finish DMA initialisation (RDRXCTL.DMAIDONE)", RDRXCTL, v))?;
    regs.set_bits(CTRL_EXT, CTRL_EXT_DRV_LOAD);
    Ok(())
}

/// §4.6.4 Link setup (82599, 10 GbE serial): AUTOC.LMS = 10G serial, parallel PMA/PMD =
/// XAUI, then restart auto-negotiation; LINKS reports the result.
pub fn setup_link<R: Regs>(regs: &R) {
    let autoc = regs.read(AUTOC);
    let autoc = (autoc & !(AUTOC_LMS_MASK | AUTOC_10G_PMA_PMD_MASK)) | AUTOC_LMS_10G_SERIAL;
    regs.write(AUTOC, autoc);
    regs.write(AUTOC, autoc | AUTOC_AN_RESTART);
}

/// §4.6.5 Statistics initialization: read the clear-on-read counters once.
pub fn clear_stats<R: Regs>(regs: &R) {
    let mut s = HwStats::default();
    read_stats(regs, &mut s);
}

/// The whole §4.6.3 "Initialization Sequence", in the datasheet's order.
pub fn init<R: Regs>(regs: &R, s: &Setup<'_>) -> Result<(), IntelError> {
    if s.rx.is_empty() || s.rx.len() > MAX_QUEUES || s.tx.is_empty() || s.tx.len() > MAX_QUEUES {
        return Err(IntelError::Config(format!(
            "ixgbe supports 1 to {MAX_QUEUES} queues in each direction here"
        )));
    }
    reset(regs)?;
    setup_link(regs);
    clear_stats(regs);
    init_rx(regs, s)?;
    init_tx(regs, s)?;
    Ok(())
}

/// §4.6.7 Receive initialization.
pub fn init_rx<R: Regs>(regs: &R, s: &Setup<'_>) -> Result<(), IntelError> {
    // Receive stays off while it is configured.
    regs.clear_bits(RXCTRL, RXCTRL_RXEN);
    // §4.6.11.3.1 (no DCB): the whole 128 KiB packet buffer to traffic class 0.
    regs.write(rxpbsize(0), RXPBSIZE_128KB);
    for i in 1..8 {
        regs.write(rxpbsize(i), 0);
    }
    // CRC stripping, set in both places (§8.2.3.8.8: they must agree), and the RDRXCTL
    // fields the datasheet fixes (RSCFRSTSIZE = 0, RSCACKC = 1, FCOE_WRFIX = 1).
    regs.set_bits(HLREG0, HLREG0_RXCRCSTRP);
    // §8.2.3.22.13/§8.2.3.22.8: frames longer than 1518 bytes, up to MAXFRS.MFS, with
    // HLREG0.JUMBOEN.
    if s.max_frame > 0 {
        regs.set_bits(HLREG0, HLREG0_JUMBOEN);
        regs.write(MAXFRS, s.max_frame << 16);
    }
    let rdrxctl = regs.read(RDRXCTL) & !RDRXCTL_RSCFRSTSIZE;
    regs.write(
        RDRXCTL,
        rdrxctl | RDRXCTL_CRCSTRIP | RDRXCTL_RSCACKC | RDRXCTL_FCOE_WRFIX,
    );
    // Filters: broadcast accepted; promiscuous on request; multicast table cleared.
    let mut fctrl = regs.read(FCTRL) | FCTRL_BAM;
    if s.promisc {
        fctrl |= FCTRL_UPE | FCTRL_MPE;
    }
    regs.write(FCTRL, fctrl);
    regs.set_bits(rah(0), RAH_AV);
    for i in 0..128 {
        regs.write(MTA + 4 * i, 0);
    }
    regs.write(MCSTCTRL, MCSTCTRL_MFE);
    // §7.1.2.8 RSS: spread flows over the queues.
    if s.rx.len() > 1 {
        setup_rss(regs, s.rx.len() as u32, RETA, RSSRK);
        regs.set_bits(RXCSUM, RXCSUM_PCSD);
        regs.write(MRQC, MRQC_RSS | MRQC_RSS_FIELDS);
    } else {
        regs.write(MRQC, 0);
    }
    for (q, ring) in s.rx.iter().enumerate() {
        let q = q as u32;
        // SRRCTL: advanced one-buffer descriptors, size in 1 KiB units, drop when full.
        regs.write(
            srrctl(q),
            SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN | (s.buf_size / 1024),
        );
        program_ring(regs, ring, rdbal(q), rdbah(q), rdlen(q), rdh(q), rdt(q));
        // §8.2.3.11.1: DCA_RXCTRL bit 12 must be cleared.
        regs.clear_bits(dca_rxctrl(q), DCA_RXCTRL_BIT12);
    }
    // §4.6.7: no-snoop disable, as the datasheet's sequence sets it.
    regs.set_bits(CTRL_EXT, CTRL_EXT_NS_DIS);
    // Receive on, then each queue: ENABLE, poll until it latches, then the tail.
    regs.set_bits(RXCTRL, RXCTRL_RXEN);
    for q in 0..s.rx.len() as u32 {
        regs.set_bits(rxdctl(q), DCTL_ENABLE);
        regs.wait(rxdctl(q), DCTL_ENABLE, DCTL_ENABLE, 10)
            .map_err(|v| timeout("enable a receive queue (RXDCTL.ENABLE)", rxdctl(q), v))?;
        regs.write(rdh(q), 0);
        regs.write(rdt(q), s.rx_tail);
    }
    Ok(())
}

/// §4.6.8 Transmit initialization.
pub fn init_tx<R: Regs>(regs: &R, s: &Setup<'_>) -> Result<(), IntelError> {
    // CRC insertion and padding of short frames.
    regs.set_bits(HLREG0, HLREG0_TXCRCEN | HLREG0_TXPADEN);
    // §4.6.11.3.1 (no DCB): 40 KiB transmit packet buffer to traffic class 0.
    regs.write(txpbsize(0), TXPBSIZE_40KB);
    for i in 1..8 {
        regs.write(txpbsize(i), 0);
    }
    // Unlimited DMA read request size for TCP segmentation (not used, set as the datasheet
    // recommends for non-DCB).
    regs.write(DTXMXSZRQ, 0xFFFF);
    // MTQC may only change while the descriptor arbiter is off (§8.2.3.9.15).
    regs.set_bits(RTTDCS, RTTDCS_ARBDIS);
    regs.write(MTQC, 0);
    regs.clear_bits(RTTDCS, RTTDCS_ARBDIS);
    for (q, ring) in s.tx.iter().enumerate() {
        let q = q as u32;
        program_ring(regs, ring, tdbal(q), tdbah(q), tdlen(q), tdh(q), tdt(q));
        // TXDCTL: prefetch 36, host 8, write-back 0 (DD written for every RS descriptor).
        regs.write(txdctl(q), 36 | (8 << 8));
    }
    // Transmit DMA on, then each queue: ENABLE and poll.
    regs.set_bits(DMATXCTL, DMATXCTL_TE);
    for q in 0..s.tx.len() as u32 {
        regs.set_bits(txdctl(q), DCTL_ENABLE);
        regs.wait(txdctl(q), DCTL_ENABLE, DCTL_ENABLE, 10)
            .map_err(|v| timeout("enable a transmit queue (TXDCTL.ENABLE)", txdctl(q), v))?;
    }
    Ok(())
}

/// The station address from RAL0/RAH0.
pub fn mac<R: Regs>(regs: &R) -> Mac {
    mac_from(regs.read(ral(0)), regs.read(rah(0)))
}

/// Link state from LINKS.
pub fn link<R: Regs>(regs: &R) -> LinkState {
    let l = regs.read(LINKS);
    if l & LINKS_UP == 0 {
        return LinkState::Down;
    }
    let mbps = match (l >> LINKS_SPEED_SHIFT) & 3 {
        1 => 100,
        2 => 1000,
        3 => 10_000,
        _ => 0,
    };
    LinkState::Up { mbps }
}

/// Unicast and multicast promiscuous mode (FCTRL.UPE/MPE).
pub fn set_promisc<R: Regs>(regs: &R, on: bool) {
    if on {
        regs.set_bits(FCTRL, FCTRL_UPE | FCTRL_MPE);
    } else {
        regs.clear_bits(FCTRL, FCTRL_UPE | FCTRL_MPE);
    }
}

/// Accept every multicast frame (FCTRL.MPE).
pub fn set_allmulti<R: Regs>(regs: &R, on: bool) {
    if on {
        regs.set_bits(FCTRL, FCTRL_MPE);
    } else {
        regs.clear_bits(FCTRL, FCTRL_MPE);
    }
}

/// Adds `addr` to the multicast table (MCSTCTRL.MO = 00).
pub fn add_multicast<R: Regs>(regs: &R, addr: Mac) {
    let (reg, bit) = mta_slot(addr);
    regs.set_bits(MTA + 4 * reg, 1 << bit);
}

/// Adds the clear-on-read counters to `s`.
pub fn read_stats<R: Regs>(regs: &R, s: &mut HwStats) {
    s.rx_packets += u64::from(regs.read(GPRC));
    s.tx_packets += u64::from(regs.read(GPTC));
    let lo = regs.read(GORCL);
    s.rx_bytes += u64::from(lo) | (u64::from(regs.read(GORCH)) << 32);
    let lo = regs.read(GOTCL);
    s.tx_bytes += u64::from(lo) | (u64::from(regs.read(GOTCH)) << 32);
    for i in 0..8 {
        s.rx_missed += u64::from(regs.read(mpc(i)));
    }
    s.rx_errors +=
        u64::from(regs.read(CRCERRS)) + u64::from(regs.read(ILLERRC)) + u64::from(regs.read(RLEC));
}

/// Stops receive and transmit and resets the device.
pub fn stop<R: Regs>(regs: &R) {
    regs.clear_bits(RXCTRL, RXCTRL_RXEN);
    regs.clear_bits(DMATXCTL, DMATXCTL_TE);
    regs.delay_us(1_000);
    regs.write(CTRL, regs.read(CTRL) | CTRL_RST_MASK);
    regs.delay_us(10_000);
    regs.clear_bits(CTRL_EXT, CTRL_EXT_DRV_LOAD);
}

//! A register-level model of the igb and ixgbe registers this driver touches, written from
//! the datasheets, standing in for a device where there is none (tests, the callgrind
//! benchmark, and every ixgbe run of this project).
//!
//! What it models: self-clearing reset bits (CTRL.RST, CTRL.LRST) that take time; the EEPROM
//! auto-read (EECD.AUTO_RD / EEC.ARD) and DMA-init (RDRXCTL.DMAIDONE) completion after a
//! reset; the copper PHY behind MDIC (igb) and AUTOC restart (ixgbe) bringing the link up
//! after a delay; RXDCTL/TXDCTL.ENABLE that latch only for a ring with a length; the
//! clear-on-read statistics; and, on the DMA side, receive into the next free descriptor
//! (DD/EOP/length write-back, or a counted miss) and transmit from head to tail (DD
//! write-back). Time is virtual: [`Regs::delay_us`] advances it.
//!
//! Every DMA the model performs is checked against the ranges the driver mapped through
//! [`IovaMap`] (IOVA = virtual address here), as an IOMMU would: an address outside them is
//! refused and counted, never dereferenced.

use core::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use super::dma::IovaMap;
use super::regs::Regs;
use super::{Family, IntelError, desc, igb, ixgbe};

/// Where transmitted frames go.
type Wire<'a> = Option<&'a mut dyn FnMut(&[u8])>;

/// One register access, as the model saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read of a register and the value returned.
    Read(u32, u32),
    /// A write of a register and the value written.
    Write(u32, u32),
}

/// Faults a test can inject.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// CTRL.RST never clears.
    pub reset_stuck: bool,
    /// The EEPROM auto-read never completes.
    pub eeprom_stuck: bool,
    /// Queue ENABLE bits never latch.
    pub queue_enable_stuck: bool,
    /// The link never comes up.
    pub no_link: bool,
    /// Every received frame is reported with a receive error (RXE: a CRC error).
    pub rx_error: bool,
    /// A frame spanning several buffers has its first descriptor's length written back as
    /// this (a device gone wrong), when set.
    pub rx_first_len: Option<u16>,
}

const BAR_WORDS: usize = 0x20000 / 4;
/// Virtual microseconds a reset takes.
pub const RESET_US: u64 = 2_000;
/// Virtual microseconds from reset done to EEPROM read done.
pub const EEPROM_US: u64 = 3_000;
/// Virtual microseconds auto-negotiation takes.
pub const AUTONEG_US: u64 = 50_000;
/// Virtual microseconds before a queue ENABLE latches.
pub const ENABLE_US: u64 = 200;

#[derive(Debug)]
struct State {
    family: Family,
    regs: Vec<u32>,
    log: Vec<Access>,
    logging: bool,
    now: u64,
    reset_done: u64,
    link_at: Option<u64>,
    enable_at: [u64; 32],
    phy: [u16; 32],
    windows: Vec<(u64, u64)>,
    faults: Faults,
    dma_refused: u64,
    tx_malformed: u64,
    /// Each transmit queue's offload context (the last context descriptor it read).
    ctx: [(u64, u64); 32],
    mac: [u8; 6],
}

/// A modelled device. Clones share one device: give one clone to the port (as [`Regs`] and
/// [`IovaMap`]) and keep one to play the wire.
#[derive(Debug, Clone)]
pub struct Model {
    s: Arc<Mutex<State>>,
}

impl Model {
    /// A powered-up device of `family` with station address `mac` in its EEPROM.
    pub fn new(family: Family, mac: [u8; 6]) -> Model {
        let mut st = State {
            family,
            regs: vec![0; BAR_WORDS],
            log: Vec::new(),
            logging: true,
            now: 0,
            reset_done: 0,
            link_at: None,
            enable_at: [0; 32],
            phy: [0; 32],
            windows: Vec::new(),
            faults: Faults::default(),
            dma_refused: 0,
            tx_malformed: 0,
            ctx: [(0, 0); 32],
            mac,
        };
        st.power_on_defaults();
        Model {
            s: Arc::new(Mutex::new(st)),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a test thread panicked; the state is still usable.
        self.s.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Injects faults.
    pub fn set_faults(&self, f: Faults) {
        self.st().faults = f;
    }

    /// The register accesses so far.
    pub fn log(&self) -> Vec<Access> {
        self.st().log.clone()
    }

    /// Forgets the access log and stops (or resumes) recording.
    pub fn set_logging(&self, on: bool) {
        let mut s = self.st();
        s.log.clear();
        s.logging = on;
    }

    /// The writes so far, in order.
    pub fn writes(&self) -> Vec<(u32, u32)> {
        self.st()
            .log
            .iter()
            .filter_map(|a| match *a {
                Access::Write(r, v) => Some((r, v)),
                Access::Read(..) => None,
            })
            .collect()
    }

    /// A register's value without side effects.
    pub fn peek(&self, reg: u32) -> u32 {
        self.st().get(reg)
    }

    /// Virtual time in microseconds.
    pub fn now_us(&self) -> u64 {
        self.st().now
    }

    /// DMA attempts refused for an address outside the mapped ranges.
    pub fn dma_refused(&self) -> u64 {
        self.st().dma_refused
    }

    /// The wire delivers `frame` to receive queue `q`. Returns `false` when it was dropped
    /// (receive off, queue off, no free descriptor, or a bad descriptor address).
    pub fn receive(&self, q: u32, frame: &[u8]) -> bool {
        self.st().receive(q, frame)
    }

    /// Frames the device refused to send: offload fields that do not match the frame (a
    /// TSO frame whose PAYLEN and header lengths do not add up to its length).
    pub fn tx_malformed(&self) -> u64 {
        self.st().tx_malformed
    }

    /// The device sends what queue `q` holds, passing each frame to `wire` (a TSO frame as
    /// its segments, checksums inserted as the descriptors ask); returns how many frames went
    /// on the wire.
    pub fn transmit(&self, q: u32, wire: &mut dyn FnMut(&[u8])) -> usize {
        self.st().transmit(q, Some(wire))
    }

    /// Like [`Model::transmit`] but without reading the frames' bytes (benchmarks).
    pub fn transmit_discard(&self, q: u32) -> usize {
        self.st().transmit(q, None)
    }
}

impl State {
    fn get(&self, reg: u32) -> u32 {
        self.regs.get(reg as usize / 4).copied().unwrap_or(0)
    }

    fn set(&mut self, reg: u32, v: u32) {
        if let Some(r) = self.regs.get_mut(reg as usize / 4) {
            *r = v;
        }
    }

    fn power_on_defaults(&mut self) {
        self.regs.iter_mut().for_each(|r| *r = 0);
        // An EEPROM that is never read leaves no station address behind.
        let m = if self.faults.eeprom_stuck {
            [0; 6]
        } else {
            self.mac
        };
        let av = if self.faults.eeprom_stuck {
            0
        } else {
            igb::RAH_AV
        };
        let lo = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        let hi = u32::from(m[4]) | (u32::from(m[5]) << 8);
        match self.family {
            Family::Igb => {
                self.set(igb::ral(0), lo);
                self.set(igb::rah(0), hi | av);
                // PCTRL after reset: auto-negotiation enabled, powered.
                self.phy[0] = igb::PCTRL_ANE;
                self.phy[1] = 0x7949;
            }
            Family::Ixgbe => {
                self.set(ixgbe::ral(0), lo);
                self.set(ixgbe::rah(0), hi | av);
                // DCA_RXCTRL bit 12 resets to 1 (the driver must clear it).
                for q in 0..16 {
                    self.set(ixgbe::dca_rxctrl(q), ixgbe::DCA_RXCTRL_BIT12);
                }
            }
        }
        self.link_at = None;
    }

    fn reset_pending(&self) -> bool {
        self.faults.reset_stuck || self.now < self.reset_done
    }

    fn eeprom_done(&self) -> bool {
        !self.faults.eeprom_stuck
            && !self.reset_pending()
            && self.now >= self.reset_done + EEPROM_US
    }

    fn link_up(&self) -> bool {
        !self.faults.no_link && self.link_at.is_some_and(|t| self.now >= t)
    }

    fn is_stat(&self, reg: u32) -> bool {
        match self.family {
            Family::Igb => (0x4000..0x4100).contains(&reg),
            Family::Ixgbe => (0x4000..0x4100).contains(&reg) || (0x3FA0..0x3FC0).contains(&reg),
        }
    }

    fn dctl_index(&self, reg: u32) -> Option<usize> {
        // RXDCTL and TXDCTL sit at offset 0x28 of each 0x40-byte queue block in both maps.
        if reg & 0x3F != 0x28 {
            return None;
        }
        let (rx, tx) = match self.family {
            Family::Igb => (igb::rxdctl(0), igb::txdctl(0)),
            Family::Ixgbe => (ixgbe::rxdctl(0), ixgbe::txdctl(0)),
        };
        for (base, slot) in [(rx, 0usize), (tx, 16usize)] {
            if reg >= base && reg < base + 16 * 0x40 && (reg - base).is_multiple_of(0x40) {
                return Some(slot + ((reg - base) / 0x40) as usize);
            }
        }
        None
    }

    fn read(&mut self, reg: u32) -> u32 {
        let raw = self.get(reg);
        let v = match (self.family, reg) {
            (_, 0 /* CTRL */) => {
                let rst = match self.family {
                    Family::Igb => igb::CTRL_RST,
                    Family::Ixgbe => ixgbe::CTRL_RST_MASK,
                };
                if self.reset_pending() {
                    raw | rst
                } else {
                    raw & !rst
                }
            }
            (Family::Igb, igb::EECD) => {
                if self.eeprom_done() {
                    raw | igb::EECD_AUTO_RD
                } else {
                    raw & !igb::EECD_AUTO_RD
                }
            }
            (Family::Ixgbe, ixgbe::EEC) => {
                if self.eeprom_done() {
                    raw | ixgbe::EEC_ARD
                } else {
                    raw & !ixgbe::EEC_ARD
                }
            }
            (Family::Ixgbe, ixgbe::RDRXCTL) => {
                if self.eeprom_done() {
                    raw | ixgbe::RDRXCTL_DMAIDONE
                } else {
                    raw & !ixgbe::RDRXCTL_DMAIDONE
                }
            }
            (Family::Igb, igb::STATUS) => {
                if self.link_up() {
                    raw | igb::STATUS_LU | (2 << igb::STATUS_SPEED_SHIFT)
                } else {
                    raw & !igb::STATUS_LU
                }
            }
            (Family::Ixgbe, ixgbe::LINKS) => {
                if self.link_up() {
                    ixgbe::LINKS_UP | (3 << ixgbe::LINKS_SPEED_SHIFT)
                } else {
                    0
                }
            }
            _ => match self.dctl_index(reg) {
                Some(i) if raw & igb::DCTL_ENABLE != 0 => {
                    let ring_len = self.get(reg - 0x20);
                    if self.faults.queue_enable_stuck
                        || ring_len == 0
                        || self.now < self.enable_at[i]
                    {
                        raw & !igb::DCTL_ENABLE
                    } else {
                        raw
                    }
                }
                _ => raw,
            },
        };
        if self.is_stat(reg) {
            self.set(reg, 0);
        }
        if self.logging {
            self.log.push(Access::Read(reg, v));
        }
        v
    }

    fn write(&mut self, reg: u32, v: u32) {
        if self.logging {
            self.log.push(Access::Write(reg, v));
        }
        if reg == 0 {
            let rst = match self.family {
                Family::Igb => igb::CTRL_RST,
                Family::Ixgbe => ixgbe::CTRL_RST_MASK,
            };
            if v & rst != 0 {
                // A global reset: every register back to its power-on value.
                self.power_on_defaults();
                self.reset_done = self.now + RESET_US;
                self.set(0, v & !rst);
                return;
            }
        }
        if let Some(i) = self.dctl_index(reg)
            && v & igb::DCTL_ENABLE != 0
            && self.get(reg) & igb::DCTL_ENABLE == 0
        {
            self.enable_at[i] = self.now + ENABLE_US;
        }
        match (self.family, reg) {
            (Family::Igb, igb::MDIC) => {
                let phy_addr = (v >> 21) & 0x1F;
                let r = ((v >> 16) & 0x1F) as usize;
                let mut out = v & !(igb::MDIC_READY | igb::MDIC_ERROR | 0xFFFF);
                if phy_addr != igb::PHY_ADDR {
                    out |= igb::MDIC_ERROR;
                } else if v & igb::MDIC_OP_READ != 0 {
                    out |= u32::from(self.phy[r]);
                } else if v & igb::MDIC_OP_WRITE != 0 {
                    let d = v as u16;
                    if r == igb::PHY_PCTRL as usize && d & igb::PCTRL_RESTART_AN != 0 {
                        self.link_at = Some(self.now + AUTONEG_US);
                    }
                    self.phy[r] = d & !igb::PCTRL_RESTART_AN;
                    out |= v & 0xFFFF;
                }
                self.set(reg, out | igb::MDIC_READY);
            }
            (Family::Ixgbe, ixgbe::AUTOC) => {
                if v & ixgbe::AUTOC_AN_RESTART != 0 {
                    self.link_at = Some(self.now + AUTONEG_US);
                }
                self.set(reg, v & !ixgbe::AUTOC_AN_RESTART);
            }
            _ => self.set(reg, v),
        }
    }

    fn window_ok(&self, addr: u64, len: usize) -> bool {
        let end = addr.saturating_add(len as u64);
        self.windows.iter().any(|&(b, l)| addr >= b && end <= b + l)
    }

    fn ring(&self, q: u32, rx: bool) -> (u32, u32, u32, u32, u32) {
        match (self.family, rx) {
            (Family::Igb, true) => (
                igb::rdbal(q),
                igb::rdlen(q),
                igb::rdh(q),
                igb::rdt(q),
                igb::rxdctl(q),
            ),
            (Family::Igb, false) => (
                igb::tdbal(q),
                igb::tdlen(q),
                igb::tdh(q),
                igb::tdt(q),
                igb::txdctl(q),
            ),
            (Family::Ixgbe, true) => (
                ixgbe::rdbal(q),
                ixgbe::rdlen(q),
                ixgbe::rdh(q),
                ixgbe::rdt(q),
                ixgbe::rxdctl(q),
            ),
            (Family::Ixgbe, false) => (
                ixgbe::tdbal(q),
                ixgbe::tdlen(q),
                ixgbe::tdh(q),
                ixgbe::tdt(q),
                ixgbe::txdctl(q),
            ),
        }
    }

    fn read_u64(&mut self, addr: u64) -> Option<u64> {
        if !self.window_ok(addr, 8) || !addr.is_multiple_of(8) {
            self.dma_refused += 1;
            return None;
        }
        // Why this is sound: `addr..addr+8` lies inside a range the driver mapped for the device
        // (checked above) and is aligned; the driver keeps mapped ranges alive until it
        // unmaps them. Volatile: the driver reads and writes the same memory.
        // SAFETY: the invariants stated just above hold here.
        Some(unsafe { (addr as *const u64).read_volatile() })
    }

    fn write_u64(&mut self, addr: u64, v: u64) -> bool {
        if !self.window_ok(addr, 8) || !addr.is_multiple_of(8) {
            self.dma_refused += 1;
            return false;
        }
        // SAFETY: as in `read_u64`.
        unsafe { (addr as *mut u64).write_volatile(v) };
        true
    }

    fn bump(&mut self, reg: u32, by: u64) {
        let v = self.get(reg).wrapping_add(by as u32);
        self.set(reg, v);
    }

    fn receive(&mut self, q: u32, frame: &[u8]) -> bool {
        let (bal, len_reg, h_reg, t_reg, dctl) = self.ring(q, true);
        let (rx_on, srrctl, miss) = match self.family {
            Family::Igb => (
                self.get(igb::RCTL) & igb::RCTL_EN != 0,
                igb::srrctl(q),
                igb::RNBC,
            ),
            Family::Ixgbe => (
                self.get(ixgbe::RXCTRL) & ixgbe::RXCTRL_RXEN != 0,
                ixgbe::srrctl(q),
                ixgbe::mpc(0),
            ),
        };
        let count = self.get(len_reg) / 16;
        if !rx_on || self.get(dctl) & igb::DCTL_ENABLE == 0 || count == 0 || !self.link_up() {
            return false;
        }
        let mut head = self.get(h_reg) % count;
        let tail = self.get(t_reg) % count;
        let bsize = ((self.get(srrctl) & 0x7F) as usize) * 1024;
        if bsize == 0 {
            return false;
        }
        // A frame longer than one buffer spans several descriptors, EOP on the last.
        let need = frame.len().div_ceil(bsize).max(1) as u32;
        let free = (tail + count - head) % count;
        if free < need {
            self.bump(miss, 1);
            return false;
        }
        let base = u64::from(self.get(bal)) | (u64::from(self.get(bal + 4)) << 32);
        for (k, chunk) in frame.chunks(bsize).enumerate() {
            let d = base + u64::from(head) * 16;
            let Some(buf) = self.read_u64(d) else {
                return false;
            };
            let n = chunk.len();
            if !self.window_ok(buf, n) {
                self.dma_refused += 1;
                return false;
            }
            // SAFETY: `buf..buf+n` lies inside a range the driver mapped (checked above).
            unsafe { core::ptr::copy_nonoverlapping(chunk.as_ptr(), buf as *mut u8, n) };
            let last = k as u32 + 1 == need;
            let status = if last { 2 | self.rx_status(frame) } else { 0 };
            let n = match self.faults.rx_first_len {
                Some(l) if k == 0 && need > 1 => usize::from(l),
                _ => n,
            };
            self.write_u64(d, 0);
            self.write_u64(d + 8, 1 | status | ((n as u64) << 32));
            head = (head + 1) % count;
        }
        self.set(h_reg, head);
        self.bump(0x4074, 1);
        self.bump(0x4088, frame.len() as u64 + 4);
        true
    }

    /// The status and error bits of a received frame's last descriptor: the checksums the
    /// device checks (igb: as RXCSUM asks; ixgbe: always), and RXE when a fault says so.
    fn rx_status(&self, frame: &[u8]) -> u64 {
        let (ip_on, l4_on, errs) = match self.family {
            Family::Igb => {
                let c = self.get(igb::RXCSUM);
                (
                    c & igb::RXCSUM_IPOFLD != 0,
                    c & igb::RXCSUM_TUOFLD != 0,
                    igb::RX_ERRORS,
                )
            }
            Family::Ixgbe => (true, true, ixgbe::RX_ERRORS),
        };
        let mut st = if self.faults.rx_error { errs.rxe } else { 0 };
        let Some(ip) = frame.get(14..34).filter(|_| frame[12..14] == [8, 0]) else {
            return st;
        };
        let ihl = usize::from(ip[0] & 15) * 4;
        let Some(iph) = frame.get(14..14 + ihl) else {
            return st;
        };
        if ip_on {
            st |= desc::RXD_STAT_IPCS;
            if ones_sum(0, iph) != 0xffff {
                st |= errs.ipe;
            }
        }
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        let (Some(l4), 6 | 17) = (frame.get(14 + ihl..14 + tot.max(ihl)), ip[9]) else {
            return st;
        };
        if l4_on && ip[6] & 0x3f == 0 && ip[7] == 0 {
            st |= if ip[9] == 6 {
                desc::RXD_STAT_TCPCS
            } else {
                desc::RXD_STAT_UDPCS
            };
            let udp_none = ip[9] == 17 && l4.get(6..8) == Some(&[0, 0]);
            if !udp_none && ones_sum(pseudo(iph, l4.len()), l4) != 0xffff {
                st |= errs.l4e;
            }
        }
        st
    }

    fn transmit(&mut self, q: u32, mut wire: Wire<'_>) -> usize {
        let (bal, len_reg, h_reg, t_reg, dctl) = self.ring(q, false);
        let tx_on = match self.family {
            Family::Igb => self.get(igb::TCTL) & igb::TCTL_EN != 0,
            Family::Ixgbe => self.get(ixgbe::DMATXCTL) & ixgbe::DMATXCTL_TE != 0,
        };
        let count = self.get(len_reg) / 16;
        if !tx_on || self.get(dctl) & igb::DCTL_ENABLE == 0 || count == 0 {
            return 0;
        }
        let base = u64::from(self.get(bal)) | (u64::from(self.get(bal + 4)) << 32);
        let mut head = self.get(h_reg) % count;
        let tail = self.get(t_reg) % count;
        let mut sent = 0;
        // The frame being gathered from its data descriptors, and its first descriptor's
        // command and options.
        let mut frame: Vec<u8> = Vec::new();
        let mut first: Option<u64> = None;
        while head != tail {
            let d = base + u64::from(head) * 16;
            let (Some(addr), Some(cmd)) = (self.read_u64(d), self.read_u64(d + 8)) else {
                break;
            };
            head = (head + 1) % count;
            if (cmd >> 20) & 0xF == 0b0010 {
                // A context descriptor: kept for the frames after it.
                if let Some(c) = self.ctx.get_mut(q as usize) {
                    *c = (addr, cmd);
                }
                continue;
            }
            let len = (cmd & 0xFFFF) as usize;
            let first_cmd = *first.get_or_insert(cmd);
            if wire.is_some() {
                if !self.window_ok(addr, len) {
                    self.dma_refused += 1;
                } else {
                    let at = frame.len();
                    frame.resize(at + len, 0);
                    // Why this is sound: `addr..addr+len` lies inside a mapped range (checked
                    // above) and `frame[at..]` has room for `len` bytes.
                    // SAFETY: the invariants stated just above hold here.
                    unsafe {
                        core::ptr::copy_nonoverlapping(
                            addr as *const u8,
                            frame[at..].as_mut_ptr(),
                            len,
                        )
                    };
                }
            }
            if cmd & u64::from(desc::TXD_DCMD_RS) != 0 {
                self.write_u64(d + 8, cmd | desc::TXD_STAT_DD);
            }
            if cmd & u64::from(desc::TXD_DCMD_EOP) == 0 {
                continue;
            }
            first = None;
            let Some(w) = wire.as_deref_mut() else {
                sent += 1;
                self.bump(0x4080, 1);
                self.bump(0x4090, len as u64 + 4);
                continue;
            };
            let ctx = self.ctx.get(q as usize).copied().unwrap_or_default();
            let mut out = 0;
            let mut bytes = 0;
            let ok = offload_send(&mut frame, first_cmd, ctx, &mut |f: &[u8]| {
                out += 1;
                bytes += f.len() as u64 + 4;
                w(f)
            });
            if !ok {
                self.tx_malformed += 1;
            }
            frame.clear();
            sent += out;
            self.bump(0x4080, out as u64);
            self.bump(0x4090, bytes);
        }
        self.set(h_reg, head);
        sent
    }
}

/// The ones' complement sum of `b` (big-endian 16-bit words) added to `sum`, folded to 16
/// bits, not complemented.
fn ones_sum(sum: u32, b: &[u8]) -> u16 {
    let mut acc = u64::from(sum);
    for w in b.chunks(2) {
        acc += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum of a TCP/UDP segment of `l4_len` bytes behind IPv4 header `ip`.
fn pseudo(ip: &[u8], l4_len: usize) -> u32 {
    u32::from(ones_sum(0, &ip[12..20])) + u32::from(ip[9]) + l4_len as u32
}

/// Sends `frame` as its first data descriptor's command and options `cmd` and the queue's
/// context `ctx` ask: as it is, with its TCP/UDP (TXSM) and IPv4 (IXSM) checksums inserted,
/// or (TSE) cut into segments of the context's MSS, each with its own IPv4 length,
/// identification and checksum, TCP sequence number, flags and checksum (82576 §7.2.4,
/// 82599 §7.2.4). Returns `false` for a frame the fields do not describe (nothing sent).
fn offload_send(frame: &mut [u8], cmd: u64, ctx: (u64, u64), w: &mut dyn FnMut(&[u8])) -> bool {
    let olinfo = (cmd >> 32) as u32;
    let (txsm, ixsm) = (
        olinfo & desc::TXD_POPTS_TXSM != 0,
        olinfo & desc::TXD_POPTS_IXSM != 0,
    );
    let tse = cmd as u32 & desc::TXD_DCMD_TSE != 0;
    if !txsm && !ixsm && !tse {
        w(frame);
        return true;
    }
    let mac = ((ctx.0 >> 9) & 0x7f) as usize;
    let ipl = (ctx.0 & 0x1ff) as usize;
    let tucmd = ctx.1 as u32;
    let ipv4 = tucmd & desc::TXC_TUCMD_IPV4 != 0;
    let tcp = tucmd & desc::TXC_TUCMD_L4T_TCP != 0;
    let l4 = mac + ipl;
    let csum_at = l4 + if tcp { 16 } else { 6 };
    if frame.len() < csum_at + 2 || ipl < 20 {
        return false;
    }
    // IPv4 header checksum (IXSM), over the header as it goes out.
    let ip_csum = |f: &mut [u8]| {
        f[mac + 10..mac + 12].copy_from_slice(&[0, 0]);
        let c = !ones_sum(0, &f[mac..l4]);
        f[mac + 10..mac + 12].copy_from_slice(&c.to_be_bytes());
    };
    if !tse {
        // The field holds the pseudo-header sum with the length: sum from L4 on.
        let mut c = !ones_sum(0, &frame[l4..]);
        if !tcp && c == 0 {
            c = 0xffff;
        }
        if txsm {
            frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        if ixsm && ipv4 {
            ip_csum(frame);
        }
        w(frame);
        return true;
    }
    let l4len = ((ctx.1 >> 40) & 0xff) as usize;
    let mss = ((ctx.1 >> 48) & 0xffff) as usize;
    let hdr = l4 + l4len;
    let paylen = (olinfo >> desc::TXD_PAYLEN_SHIFT) as usize;
    if !tcp || !txsm || mss == 0 || l4len < 20 || hdr + paylen != frame.len() || paylen == 0 {
        return false;
    }
    let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let id = u16::from_be_bytes([frame[mac + 4], frame[mac + 5]]);
    let flags = frame[l4 + 13];
    let segs = paylen.div_ceil(mss);
    let mut seg = Vec::with_capacity(hdr + mss);
    for k in 0..segs {
        let n = mss.min(paylen - k * mss);
        seg.clear();
        seg.extend_from_slice(&frame[..hdr]);
        seg.extend_from_slice(&frame[hdr + k * mss..hdr + k * mss + n]);
        if ipv4 {
            seg[mac + 2..mac + 4].copy_from_slice(&((ipl + l4len + n) as u16).to_be_bytes());
            seg[mac + 4..mac + 6].copy_from_slice(&id.wrapping_add(k as u16).to_be_bytes());
            if ixsm {
                ip_csum(&mut seg);
            }
        } else {
            seg[mac + 4..mac + 6].copy_from_slice(&((l4len + n) as u16).to_be_bytes());
        }
        seg[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((k * mss) as u32).to_be_bytes());
        let mut fl = flags;
        if k + 1 < segs {
            fl &= !0x09; // FIN, PSH on the last segment only
        }
        if k > 0 {
            fl &= !0x80; // CWR on the first only
        }
        seg[l4 + 13] = fl;
        // The field holds the pseudo-header sum without a length: add this segment's.
        let c = !ones_sum((l4len + n) as u32, &seg[l4..]);
        seg[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        w(&seg);
    }
    true
}

impl Regs for Model {
    fn read(&self, reg: u32) -> u32 {
        self.st().read(reg)
    }

    fn write(&self, reg: u32, val: u32) {
        self.st().write(reg, val)
    }

    fn delay_us(&self, us: u64) {
        let mut s = self.st();
        s.now += us;
    }
}

impl IovaMap for Model {
    fn map(&self, virt: NonNull<u8>, len: usize, page: usize) -> Result<Vec<u64>, IntelError> {
        let base = virt.as_ptr() as u64;
        self.st().windows.push((base, len as u64));
        Ok((0..len).step_by(page).map(|o| base + o as u64).collect())
    }

    fn physical(&self) -> bool {
        false
    }

    fn unmap(&self, virt: NonNull<u8>, len: usize) {
        let base = virt.as_ptr() as u64;
        self.st()
            .windows
            .retain(|&(b, l)| !(b == base && l == len as u64));
    }
}

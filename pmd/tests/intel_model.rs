//! The Intel port against the register-level model: init sequences (order and values) of
//! both families, receive refill and tail writes, transmit cleaning in batches, zero-copy
//! transmit from a registered pool, and the error paths.

use grant_pool::{BufHandle, BufIdx, Pool, PoolId, PoolLayout};
use offload::FrameMeta;
use pmd::intel::dma::DmaSource;
use pmd::intel::model::{Access, Faults, Model};
use pmd::intel::pci::PciDevice;
use pmd::intel::{Family, IntelConfig, IntelError, IntelPort, igb, ixgbe};
use pmd::{Frame, LinkState, Port};

const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

fn cfg(queues: u16) -> IntelConfig {
    IntelConfig {
        pci: "model".into(),
        pool: PoolId(7),
        queues,
        ring_size: 64,
        bufs: 64 * u32::from(queues) + 256,
        dma: DmaSource::SmallPages,
        link_timeout_ms: 1_000,
        promiscuous: false,
        ..IntelConfig::default()
    }
}

fn open(family: Family, queues: u16) -> (IntelPort<Model>, Model) {
    let m = Model::new(family, MAC);
    let p = IntelPort::with_regs(
        m.clone(),
        family,
        Box::new(m.clone()),
        &cfg(queues),
        "model".into(),
    )
    .expect("port comes up on the model");
    (p, m)
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

fn bytes(p: &IntelPort<Model>, f: &Frame) -> Vec<u8> {
    let mut v = vec![0; usize::from(f.len)];
    p.pool().buf(f.buf).unwrap().read(0, &mut v).unwrap();
    v
}

fn pos(log: &[Access], pred: impl Fn(&Access) -> bool) -> usize {
    log.iter()
        .position(pred)
        .unwrap_or_else(|| panic!("access not found in log"))
}

fn pos_after(log: &[Access], from: usize, pred: impl Fn(&Access) -> bool) -> usize {
    from + pos(&log[from..], pred)
}

fn write_pos(log: &[Access], reg: u32, pred: impl Fn(u32) -> bool) -> usize {
    pos(
        log,
        |a| matches!(*a, Access::Write(r, v) if r == reg && pred(v)),
    )
}

fn last_write(m: &Model, reg: u32) -> Option<u32> {
    m.writes()
        .iter()
        .rev()
        .find(|(r, _)| *r == reg)
        .map(|(_, v)| *v)
}

#[test]
fn igb_init_follows_the_datasheet_order() {
    let (p, m) = open(Family::Igb, 1);
    let log = m.log();
    let imc = write_pos(&log, igb::IMC, |v| v == u32::MAX);
    let rst = write_pos(&log, igb::CTRL, |v| v & igb::CTRL_RST != 0);
    let rst_done = pos_after(
        &log,
        rst,
        |a| matches!(*a, Access::Read(igb::CTRL, v) if v & igb::CTRL_RST == 0),
    );
    let eeprom = pos(
        &log,
        |a| matches!(*a, Access::Read(igb::EECD, v) if v & igb::EECD_AUTO_RD != 0),
    );
    let slu = write_pos(&log, igb::CTRL, |v| v & igb::CTRL_SLU != 0);
    let srrctl = write_pos(&log, igb::srrctl(0), |_| true);
    let rdbal = write_pos(&log, igb::rdbal(0), |_| true);
    let enable = write_pos(&log, igb::rxdctl(0), |v| v & igb::DCTL_ENABLE != 0);
    let enabled = pos(
        &log,
        |a| matches!(*a, Access::Read(r, v) if r == igb::rxdctl(0) && v & igb::DCTL_ENABLE != 0),
    );
    let tail = write_pos(&log, igb::rdt(0), |v| v != 0);
    let rctl = write_pos(&log, igb::RCTL, |v| v & igb::RCTL_EN != 0);
    let tctl = write_pos(&log, igb::TCTL, |v| v & igb::TCTL_EN != 0);
    let txen = pos(
        &log,
        |a| matches!(*a, Access::Read(r, v) if r == igb::txdctl(0) && v & igb::DCTL_ENABLE != 0),
    );
    assert!(imc < rst && rst < rst_done && rst_done < eeprom && eeprom < slu);
    assert!(slu < srrctl && srrctl < rdbal && rdbal < enable && enable < enabled);
    assert!(
        enabled < tail,
        "tail written before the queue reported enabled"
    );
    assert!(tail < rctl && rctl < tctl && tctl < txen);
    // Values: advanced one-buffer descriptors, 2 KiB, drop enable; ring of 64 x 16 bytes.
    assert_eq!(
        last_write(&m, igb::srrctl(0)),
        Some(igb::SRRCTL_DESCTYPE_ADV_ONEBUF | igb::SRRCTL_DROP_EN | 2)
    );
    assert_eq!(last_write(&m, igb::rdlen(0)), Some(64 * 16));
    assert_eq!(last_write(&m, igb::rdt(0)), Some(63));
    let rctl = last_write(&m, igb::RCTL).unwrap();
    assert!(rctl & igb::RCTL_BAM != 0 && rctl & igb::RCTL_SECRC != 0);
    assert_eq!(rctl & (igb::RCTL_UPE | igb::RCTL_MPE), 0);
    // The PHY was asked to auto-negotiate, and the link came up after it did.
    let mdic = write_pos(&log, igb::MDIC, |v| {
        v & igb::MDIC_OP_WRITE != 0 && v as u16 & igb::PCTRL_RESTART_AN != 0
    });
    assert!(slu < mdic);
    assert_eq!(p.link(), LinkState::Up { mbps: 1000 });
    assert_eq!(p.mac(), MAC);
}

#[test]
fn ixgbe_init_follows_the_datasheet_order() {
    let (p, m) = open(Family::Ixgbe, 1);
    let log = m.log();
    let eimc = write_pos(&log, ixgbe::EIMC, |v| v == ixgbe::EIMC_ALL);
    let rst = write_pos(&log, ixgbe::CTRL, |v| {
        v & ixgbe::CTRL_RST_MASK == ixgbe::CTRL_RST_MASK
    });
    let ard = pos(
        &log,
        |a| matches!(*a, Access::Read(ixgbe::EEC, v) if v & ixgbe::EEC_ARD != 0),
    );
    let dmaidone = pos(
        &log,
        |a| matches!(*a, Access::Read(ixgbe::RDRXCTL, v) if v & ixgbe::RDRXCTL_DMAIDONE != 0),
    );
    let autoc = write_pos(&log, ixgbe::AUTOC, |v| {
        v & ixgbe::AUTOC_LMS_MASK == ixgbe::AUTOC_LMS_10G_SERIAL && v & ixgbe::AUTOC_AN_RESTART == 0
    });
    let restart = write_pos(&log, ixgbe::AUTOC, |v| v & ixgbe::AUTOC_AN_RESTART != 0);
    let rx_off = write_pos(&log, ixgbe::RXCTRL, |v| v & ixgbe::RXCTRL_RXEN == 0);
    let pb = write_pos(&log, ixgbe::rxpbsize(0), |v| v == ixgbe::RXPBSIZE_128KB);
    let srrctl = write_pos(&log, ixgbe::srrctl(0), |_| true);
    let dca = write_pos(&log, ixgbe::dca_rxctrl(0), |v| {
        v & ixgbe::DCA_RXCTRL_BIT12 == 0
    });
    let rx_on = write_pos(&log, ixgbe::RXCTRL, |v| v & ixgbe::RXCTRL_RXEN != 0);
    let q_on = write_pos(&log, ixgbe::rxdctl(0), |v| v & ixgbe::DCTL_ENABLE != 0);
    let q_latched = pos(
        &log,
        |a| matches!(*a, Access::Read(r, v) if r == ixgbe::rxdctl(0) && v & ixgbe::DCTL_ENABLE != 0),
    );
    let tail = write_pos(&log, ixgbe::rdt(0), |v| v == 63);
    let te = write_pos(&log, ixgbe::DMATXCTL, |v| v & ixgbe::DMATXCTL_TE != 0);
    let tq = write_pos(&log, ixgbe::txdctl(0), |v| v & ixgbe::DCTL_ENABLE != 0);
    assert!(eimc < rst && rst < ard && ard < dmaidone && dmaidone < autoc && autoc < restart);
    assert!(restart < rx_off && rx_off < pb && pb < srrctl && srrctl < dca && dca < rx_on);
    assert!(rx_on < q_on && q_on < q_latched && q_latched < tail);
    assert!(tail < te && te < tq);
    // CRC stripping must agree in HLREG0 and RDRXCTL; the RDRXCTL fixed fields are set.
    assert!(m.peek(ixgbe::HLREG0) & ixgbe::HLREG0_RXCRCSTRP != 0);
    let rdrxctl = m.peek(ixgbe::RDRXCTL);
    assert!(rdrxctl & ixgbe::RDRXCTL_CRCSTRIP != 0);
    assert!(rdrxctl & ixgbe::RDRXCTL_RSCACKC != 0 && rdrxctl & ixgbe::RDRXCTL_FCOE_WRFIX != 0);
    assert!(m.peek(ixgbe::HLREG0) & (ixgbe::HLREG0_TXCRCEN | ixgbe::HLREG0_TXPADEN) != 0);
    assert_eq!(m.peek(ixgbe::txpbsize(0)), ixgbe::TXPBSIZE_40KB);
    assert!(m.peek(ixgbe::FCTRL) & ixgbe::FCTRL_BAM != 0);
    assert_eq!(
        m.peek(ixgbe::srrctl(0)),
        ixgbe::SRRCTL_DESCTYPE_ADV_ONEBUF | ixgbe::SRRCTL_DROP_EN | 2
    );
    assert_eq!(m.peek(ixgbe::MRQC), 0, "one queue: no RSS");
    assert_eq!(p.link(), LinkState::Up { mbps: 10_000 });
    assert_eq!(p.mac(), MAC);
}

fn rx_roundtrip(family: Family) {
    let (mut p, m) = open(family, 1);
    let rdt = match family {
        Family::Igb => igb::rdt(0),
        Family::Ixgbe => ixgbe::rdt(0),
    };
    let sent: Vec<Vec<u8>> = (0..5).map(|i| frame(60 + i * 100, i as u8)).collect();
    for f in &sent {
        assert!(m.receive(0, f));
    }
    m.set_logging(true);
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 32];
    let n = p.rx_burst(&mut out);
    assert_eq!(n, 5);
    for (f, want) in out[..n].iter().zip(&sent) {
        assert_eq!(&bytes(&p, f), want);
    }
    // One tail write for the burst, naming the last refilled slot.
    let tails: Vec<u32> = m
        .writes()
        .iter()
        .filter(|(r, _)| *r == rdt)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(tails, vec![4]);
    // Nothing more, and no tail write for an empty poll.
    m.set_logging(true);
    assert_eq!(p.rx_burst(&mut out), 0);
    assert!(m.writes().iter().all(|(r, _)| *r != rdt));
    p.reclaim(&out[..n].iter().map(|f| f.buf).collect::<Vec<_>>());
    assert_eq!(p.stats().rx_packets, 5);
}

#[test]
fn igb_receive_delivers_frames_intact_with_one_tail_write() {
    rx_roundtrip(Family::Igb);
}

#[test]
fn ixgbe_receive_delivers_frames_intact_with_one_tail_write() {
    rx_roundtrip(Family::Ixgbe);
}

#[test]
fn receive_keeps_refilling_over_many_ring_laps() {
    let (mut p, m) = open(Family::Igb, 1);
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 32];
    let mut got = 0usize;
    for lap in 0..20u8 {
        for i in 0..40u8 {
            assert!(
                m.receive(0, &frame(64, lap ^ i)),
                "ring ran dry at lap {lap}"
            );
        }
        let mut n_lap = 0;
        while n_lap < 40 {
            let n = p.rx_burst(&mut out);
            assert!(n > 0);
            for (k, f) in out[..n].iter().enumerate() {
                assert_eq!(bytes(&p, f), frame(64, lap ^ (n_lap + k) as u8));
            }
            p.reclaim(&out[..n].iter().map(|f| f.buf).collect::<Vec<_>>());
            n_lap += n;
        }
        got += n_lap;
    }
    assert_eq!(got, 800);
    assert_eq!(p.stats().rx_dropped, 0);
}

#[test]
fn receive_without_free_buffers_leaves_frames_in_the_ring() {
    let (mut p, m) = open(Family::Igb, 1);
    // Take every free buffer away, as a slow consumer would.
    let mut held = vec![BufHandle::from_raw(0); 4096];
    let k = p.alloc(&mut held);
    assert_eq!(p.free_bufs(), 0);
    assert!(m.receive(0, &frame(100, 1)));
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
    assert_eq!(
        p.rx_burst(&mut out),
        0,
        "no buffer to refill with: frame stays"
    );
    p.reclaim(&held[..k]);
    assert_eq!(p.rx_burst(&mut out), 1);
    assert_eq!(bytes(&p, &out[0]), frame(100, 1));
}

#[test]
fn a_full_ring_drops_and_counts() {
    let (mut p, m) = open(Family::Igb, 1);
    // 63 descriptors belong to the device; the 64th frame has nowhere to go.
    for i in 0..63 {
        assert!(m.receive(0, &frame(64, i)));
    }
    assert!(!m.receive(0, &frame(64, 99)));
    assert_eq!(p.stats().rx_dropped, 1);
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 64];
    assert_eq!(p.rx_burst(&mut out), 63);
}

#[test]
fn an_oversized_frame_is_dropped_and_the_next_arrives() {
    let (mut p, m) = open(Family::Ixgbe, 1);
    assert!(m.receive(0, &frame(3000, 1)));
    assert!(m.receive(0, &frame(80, 2)));
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
    assert_eq!(p.rx_burst(&mut out), 1);
    assert_eq!(bytes(&p, &out[0]), frame(80, 2));
    assert_eq!(p.stats().errors, 1);
}

fn tx_batches(family: Family) {
    let (mut p, m) = open(family, 1);
    let tdt = match family {
        Family::Igb => igb::tdt(0),
        Family::Ixgbe => ixgbe::tdt(0),
    };
    let mut bufs = vec![BufHandle::from_raw(0); 40];
    assert_eq!(p.alloc(&mut bufs), 40);
    let pool = p.pool().clone();
    let frames: Vec<Frame> = bufs
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let data = frame(60 + i, i as u8);
            pool.buf(b).unwrap().write(0, &data).unwrap();
            Frame::new(b, data.len() as u16)
        })
        .collect();
    m.set_logging(true);
    assert_eq!(p.tx_burst(&frames), 40);
    let tails: Vec<u32> = m
        .writes()
        .iter()
        .filter(|(r, _)| *r == tdt)
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(tails, vec![40], "one tail write per burst");
    // Nothing is done before the device sends.
    let mut done = [BufHandle::from_raw(0); 64];
    assert_eq!(p.tx_done(&mut done), 0);
    let mut wire = Vec::new();
    assert_eq!(m.transmit(0, &mut |f| wire.push(f.to_vec())), 40);
    for (i, w) in wire.iter().enumerate() {
        assert_eq!(w, &frame(60 + i, i as u8));
    }
    // Cleaned in batches: 32 then 8, in order.
    assert_eq!(p.tx_done(&mut done[..32]), 32);
    assert_eq!(p.tx_done(&mut done[32..]), 8);
    assert_eq!(&done[..40], &bufs[..]);
    assert_eq!(p.stats().tx_packets, 40);
}

#[test]
fn igb_transmit_one_tail_write_and_batched_cleaning() {
    tx_batches(Family::Igb);
}

#[test]
fn ixgbe_transmit_one_tail_write_and_batched_cleaning() {
    tx_batches(Family::Ixgbe);
}

#[test]
fn transmit_stops_at_a_full_ring_and_counts() {
    let (mut p, m) = open(Family::Igb, 1);
    let mut bufs = vec![BufHandle::from_raw(0); 80];
    assert_eq!(p.alloc(&mut bufs), 80);
    let frames: Vec<Frame> = bufs.iter().map(|&b| Frame::new(b, 60)).collect();
    assert_eq!(p.tx_burst(&frames), 63, "a ring of 64 holds 63 in flight");
    assert_eq!(p.stats().tx_dropped, 17);
    assert_eq!(m.transmit_discard(0), 63);
    let mut done = [BufHandle::from_raw(0); 80];
    assert_eq!(p.tx_done(&mut done), 63);
    assert_eq!(p.tx_burst(&frames[63..]), 17);
}

/// An app's pool: plain anonymous memory.
fn foreign_pool(id: u8, count: usize) -> Pool {
    let layout = PoolLayout::new(2048, count).unwrap();
    let mem = pmd::linux::Mmap::anonymous(layout.bytes(), false).unwrap();
    Pool::new(PoolId(id), layout, mem.into_memory()).unwrap()
}

#[test]
fn transmit_dmas_straight_from_a_registered_pool() {
    let (mut p, m) = open(Family::Igb, 1);
    let app = foreign_pool(3, 64);
    let h = app.handle(BufIdx(5)).unwrap();
    let data = frame(300, 9);
    app.buf(h).unwrap().write(0, &data).unwrap();
    // Not registered: refused, nothing sent, the frame stays the caller's.
    assert_eq!(p.tx_burst(&[Frame::new(h, 300)]), 0);
    assert!(!p.tx_pools().contains(PoolId(3)));
    p.register_tx_pool(&app).unwrap();
    assert!(p.tx_pools().contains(PoolId(3)));
    assert_eq!(p.tx_burst(&[Frame::new(h, 300)]), 1);
    // In flight: it cannot be unregistered.
    assert!(matches!(
        p.unregister_tx_pool(PoolId(3)),
        Err(IntelError::TxPool { .. })
    ));
    let mut wire = Vec::new();
    assert_eq!(m.transmit(0, &mut |f| wire.push(f.to_vec())), 1);
    assert_eq!(wire, vec![data]);
    assert_eq!(m.dma_refused(), 0);
    let mut done = [BufHandle::from_raw(0); 4];
    assert_eq!(p.tx_done(&mut done), 1);
    assert_eq!(done[0], h, "the app's buffer comes back to the caller");
    p.unregister_tx_pool(PoolId(3)).unwrap();
    assert_eq!(p.tx_burst(&[Frame::new(h, 300)]), 0);
    // Registered again, it is still in flight until completed: not yet unregistered.
    p.register_tx_pool(&app).unwrap();
    assert_eq!(p.tx_burst(&[Frame::new(h, 300)]), 1);
    let port: &mut dyn Port = &mut p;
    assert!(!port.revoke_tx_pool(PoolId(3)), "in flight: not yet");
    assert_eq!(m.transmit(0, &mut |_| {}), 1);
    let mut done = [BufHandle::from_raw(0); 4];
    assert_eq!(port.tx_done(&mut done), 1);
    assert!(port.revoke_tx_pool(PoolId(3)));
    assert!(!port.tx_pools().contains(PoolId(3)));
    // A length beyond the buffer is refused too.
    let own = {
        let mut b = [BufHandle::from_raw(0)];
        p.alloc(&mut b);
        b[0]
    };
    assert_eq!(p.tx_burst(&[Frame::new(own, 2049)]), 0);
    assert_eq!(p.tx_burst(&[Frame::new(own, 0)]), 0);
}

#[test]
fn another_partys_pool_is_never_granted_for_dma() {
    // An app's pool offered through the Port trait, as the server offers it on attach: the
    // device would read the app's memory (header and all) long after the switch checked
    // it, from pages the app can free. Refused, on both families; the switch copies.
    for fam in [Family::Igb, Family::Ixgbe] {
        let (mut p, m) = open(fam, 1);
        let app = foreign_pool(3, 64);
        let h = app.handle(BufIdx(5)).unwrap();
        app.buf(h).unwrap().write(0, &frame(300, 9)).unwrap();
        let port: &mut dyn Port = &mut p;
        assert!(
            !port.grant_tx_pool(&app),
            "{fam:?}: the app's pool was granted"
        );
        assert!(!port.tx_pools().contains(PoolId(3)));
        assert_eq!(port.tx_burst(&[Frame::new(h, 300)]), 0, "nothing by handle");
        assert_eq!(m.transmit(0, &mut |_| {}), 0);
        assert!(port.revoke_tx_pool(PoolId(3)));
    }
}

#[test]
fn reclaim_refuses_foreign_and_double_returns() {
    let (mut p, _m) = open(Family::Igb, 1);
    let before = p.free_bufs();
    let errors = p.stats().errors;
    let foreign = BufHandle::new(PoolId(3), BufIdx(0)).unwrap();
    p.reclaim(&[foreign]);
    assert_eq!(p.free_bufs(), before);
    // Returning a buffer the port already holds would overfill the free list.
    let own = p.pool().handle(BufIdx(0)).unwrap();
    let mut all = vec![BufHandle::from_raw(0); 4096];
    let k = p.alloc(&mut all);
    p.reclaim(&all[..k]);
    p.reclaim(&all[..k]);
    assert_eq!(p.free_bufs(), before);
    assert_eq!(p.stats().errors, errors + 1 + k as u64);
    p.reclaim(&[own]);
    assert_eq!(
        p.stats().errors,
        errors + 2 + k as u64,
        "a buffer already free is refused"
    );
}

#[test]
fn ixgbe_multi_queue_programs_rss_and_every_ring() {
    let (mut p, m) = open(Family::Ixgbe, 4);
    assert_eq!(p.queues(), 4);
    let mrqc = m.peek(ixgbe::MRQC);
    assert_eq!(mrqc & 0xF, ixgbe::MRQC_RSS);
    assert!(mrqc & (1 << 16) != 0, "TCP/IPv4 hashing on");
    assert!(m.peek(ixgbe::RXCSUM) & ixgbe::RXCSUM_PCSD != 0);
    // Redirection table spreads over queues 0..4.
    assert_eq!(m.peek(ixgbe::RETA), 0x0302_0100);
    let bases: Vec<u32> = (0..4).map(|q| m.peek(ixgbe::rdbal(q))).collect();
    for q in 0..4u32 {
        assert!(m.peek(ixgbe::rxdctl(q)) & ixgbe::DCTL_ENABLE != 0);
        assert!(m.peek(ixgbe::txdctl(q)) & ixgbe::DCTL_ENABLE != 0);
        assert_eq!(m.peek(ixgbe::rdt(q)), 63);
        assert!(bases.iter().filter(|&&b| b == bases[q as usize]).count() == 1);
    }
    // A frame steered to queue 2 is received from queue 2.
    assert!(m.receive(2, &frame(90, 4)));
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
    assert_eq!(p.rx_burst_queue(1, &mut out), 0);
    assert_eq!(p.rx_burst_queue(2, &mut out), 1);
    assert_eq!(bytes(&p, &out[0]), frame(90, 4));
}

#[test]
fn promiscuous_and_multicast_filters() {
    let (mut p, m) = open(Family::Igb, 1);
    p.set_promiscuous(true);
    assert_eq!(
        m.peek(igb::RCTL) & (igb::RCTL_UPE | igb::RCTL_MPE),
        igb::RCTL_UPE | igb::RCTL_MPE
    );
    p.set_promiscuous(false);
    assert_eq!(m.peek(igb::RCTL) & (igb::RCTL_UPE | igb::RCTL_MPE), 0);
    p.set_allmulti(true);
    assert!(m.peek(igb::RCTL) & igb::RCTL_MPE != 0);
    // 01:00:5e:00:00:fb: hash = (0x00 >> 4) | (0xfb << 4) = 0xfb0: MTA[0x7d] bit 16.
    p.add_multicast([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    assert_eq!(m.peek(igb::MTA + 4 * 0x7d), 1 << 16);

    let (mut x, xm) = open(Family::Ixgbe, 1);
    x.set_promiscuous(true);
    assert!(xm.peek(ixgbe::FCTRL) & ixgbe::FCTRL_UPE != 0);
    x.add_multicast([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
    assert_eq!(xm.peek(ixgbe::MTA + 4 * 0x7d), 1 << 16);
    assert!(xm.peek(ixgbe::MCSTCTRL) & ixgbe::MCSTCTRL_MFE != 0);
}

fn open_err(family: Family, faults: Faults, c: IntelConfig) -> IntelError {
    let m = Model::new(family, MAC);
    m.set_faults(faults);
    match IntelPort::with_regs(m.clone(), family, Box::new(m), &c, "model".into()) {
        Ok(_) => panic!("port came up despite {faults:?}"),
        Err(e) => e,
    }
}

#[test]
fn stuck_hardware_is_a_clear_error_not_a_hang() {
    for fam in [Family::Igb, Family::Ixgbe] {
        let e = open_err(
            fam,
            Faults {
                reset_stuck: true,
                ..Faults::default()
            },
            cfg(1),
        );
        assert!(matches!(e, IntelError::Timeout { reg: 0, .. }), "{e}");
        assert!(e.to_string().contains("CTRL.RST"));
        let e = open_err(
            fam,
            Faults {
                eeprom_stuck: true,
                ..Faults::default()
            },
            cfg(1),
        );
        assert!(e.to_string().contains("EEPROM"), "{e}");
        let e = open_err(
            fam,
            Faults {
                queue_enable_stuck: true,
                ..Faults::default()
            },
            cfg(1),
        );
        assert!(e.to_string().contains("ENABLE"), "{e}");
    }
    // No link is not an error: the port comes up and says so.
    let m = Model::new(Family::Ixgbe, MAC);
    m.set_faults(Faults {
        no_link: true,
        ..Faults::default()
    });
    let p =
        IntelPort::with_regs(m.clone(), Family::Ixgbe, Box::new(m), &cfg(1), "m".into()).unwrap();
    assert_eq!(p.link(), LinkState::Down);
}

#[test]
fn bad_configurations_are_refused() {
    let mut c = cfg(1);
    c.ring_size = 100;
    assert!(matches!(
        open_err(Family::Igb, Faults::default(), c),
        IntelError::Config(_)
    ));
    let mut c = cfg(1);
    c.bufs = 10;
    assert!(matches!(
        open_err(Family::Igb, Faults::default(), c),
        IntelError::Config(_)
    ));
    let mut c = cfg(1);
    c.queues = 9;
    assert!(matches!(
        open_err(Family::Igb, Faults::default(), c),
        IntelError::Config(_)
    ));
}

#[test]
fn device_lookup_errors() {
    let dir = std::env::temp_dir().join(format!("ferrite-intel-sysfs-{}", std::process::id()));
    let dev = dir.join("0000:00:03.0");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("vendor"), "0x8086\n").unwrap();
    std::fs::write(dev.join("device"), "0x10c9\n").unwrap();
    let drv = dir.join("drivers/igb");
    std::fs::create_dir_all(&drv).unwrap();
    let _ = std::fs::remove_file(dev.join("driver"));
    std::os::unix::fs::symlink(&drv, dev.join("driver")).unwrap();

    assert!(matches!(
        PciDevice::find_in(&dir, "0000:00:04.0"),
        Err(IntelError::NotFound(_))
    ));
    let d = PciDevice::find_in(&dir, "00:03.0").unwrap();
    assert_eq!((d.vendor, d.device), (0x8086, 0x10c9));
    assert_eq!(Family::of(d.vendor, d.device), Some(Family::Igb));
    assert_eq!(Family::of(0x8086, 0x10fb), Some(Family::Ixgbe));
    assert_eq!(Family::of(0x10ec, 0x8168), None);
    let e = d.claim(false, None).unwrap_err();
    assert!(matches!(e, IntelError::BoundToDriver { ref driver, .. } if driver == "igb"));
    assert!(e.to_string().contains("unbind_kernel_driver"));
    std::fs::remove_file(dev.join("driver")).unwrap();
    d.claim(false, None).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let e = IntelPort::open(&IntelConfig {
        pci: "0000:7f:1f.7".into(),
        ..IntelConfig::default()
    })
    .err()
    .unwrap();
    assert!(matches!(e, IntelError::NotFound(_)), "{e}");
}

#[test]
fn the_default_configuration_is_promiscuous_like_a_switch_port() {
    assert!(IntelConfig::default().promiscuous);
    for fam in [Family::Igb, Family::Ixgbe] {
        let m = Model::new(fam, MAC);
        let c = IntelConfig {
            promiscuous: true,
            ..cfg(1)
        };
        let _p = IntelPort::with_regs(m.clone(), fam, Box::new(m.clone()), &c, "m".into()).unwrap();
        match fam {
            Family::Igb => {
                let rctl = m.peek(igb::RCTL);
                assert_eq!(
                    rctl & (igb::RCTL_UPE | igb::RCTL_MPE),
                    igb::RCTL_UPE | igb::RCTL_MPE
                );
                assert!(rctl & igb::RCTL_EN != 0);
            }
            Family::Ixgbe => {
                let fctrl = m.peek(ixgbe::FCTRL);
                assert_eq!(
                    fctrl & (ixgbe::FCTRL_UPE | ixgbe::FCTRL_MPE),
                    ixgbe::FCTRL_UPE | ixgbe::FCTRL_MPE
                );
            }
        }
    }
}

/// A port with a large transmit pool (TSO) on the model.
fn open_large(family: Family) -> (IntelPort<Model>, Model) {
    let m = Model::new(family, MAC);
    let c = IntelConfig {
        large_pool: Some(PoolId(8)),
        large_bufs: 80,
        ..cfg(1)
    };
    let p = IntelPort::with_regs(m.clone(), family, Box::new(m.clone()), &c, "model".into())
        .expect("port comes up on the model");
    (p, m)
}

/// Writes `data` into a buffer the port gives for a frame that long; the frame.
fn put(p: &mut IntelPort<Model>, data: &[u8], meta: FrameMeta) -> Frame {
    let mut b = [BufHandle::from_raw(0)];
    assert_eq!(p.alloc_len(&mut b, data.len()), 1);
    let pool = p.pools().iter().find(|q| q.id() == b[0].pool()).unwrap();
    pool.buf(b[0]).unwrap().write(0, data).unwrap();
    Frame {
        buf: b[0],
        len: data.len() as u16,
        meta: meta.bits(),
    }
}

fn tso(family: Family) {
    let (mut p, m) = open_large(family);
    assert_eq!(p.tx_offloads().max_gso_frame, u16::MAX as u32);
    assert!(p.tx_offloads().partial_csum);
    let payload = frame(40_000, 3);
    let h = offload::frame::Ipv4Frame {
        flags: 0x19, // FIN, PSH, ACK
        seq: 1_000,
        id: 77,
        options: offload::frame::TIMESTAMPS.to_vec(),
        ..Default::default()
    };
    let mut data = h.build(&payload);
    offload::csum::set_pseudo_header_sum(&mut data).unwrap();
    let f = put(&mut p, &data, FrameMeta::partial(1448));
    assert_eq!(
        f.buf.pool(),
        PoolId(8),
        "a long frame goes in a large buffer"
    );
    assert_eq!(p.tx_burst(&[f]), 1);
    let mut wire = Vec::new();
    let n = m.transmit(0, &mut |s| wire.push(s.to_vec()));
    assert_eq!(n, 40_000usize.div_ceil(1448));
    assert_eq!(m.tx_malformed(), 0);
    let hdr = 14 + 20 + 32;
    let mut got = Vec::new();
    for (k, s) in wire.iter().enumerate() {
        assert_eq!(
            offload::csum::verify(s),
            Some(true),
            "segment {k} checksums"
        );
        assert!(s.len() <= hdr + 1448);
        let seq = u32::from_be_bytes(s[38..42].try_into().unwrap());
        assert_eq!(seq, 1_000 + (k * 1448) as u32);
        assert_eq!(u16::from_be_bytes([s[18], s[19]]), 77 + k as u16, "IPv4 id");
        let last = k + 1 == wire.len();
        assert_eq!(
            s[47] & 0x09 != 0,
            last,
            "FIN and PSH on the last segment only"
        );
        got.extend_from_slice(&s[hdr..]);
    }
    assert_eq!(got, payload);
    assert_eq!(p.stats().tx_packets, n as u64, "the device counts segments");
    let mut done = [BufHandle::from_raw(0); 4];
    assert_eq!(p.tx_done(&mut done), 1);
    assert_eq!(done[0], f.buf);
    p.reclaim(&done[..1]);
    assert_eq!(
        p.stats().errors,
        0,
        "the large buffer goes back to its free list"
    );
}

#[test]
fn igb_tso_frames_leave_as_mss_segments_with_every_checksum_right() {
    tso(Family::Igb);
}

#[test]
fn ixgbe_tso_frames_leave_as_mss_segments_with_every_checksum_right() {
    tso(Family::Ixgbe);
}

#[test]
fn partial_checksums_are_completed_by_the_device() {
    for family in [Family::Igb, Family::Ixgbe] {
        let (mut p, m) = open(family, 1);
        assert_eq!(p.tx_offloads().max_gso_frame, 0, "no large pool: no TSO");
        let frames: Vec<Frame> = [6u8, 17]
            .iter()
            .map(|&proto| {
                let mut data = offload::frame::Ipv4Frame {
                    proto,
                    ..Default::default()
                }
                .build(&frame(1000, proto));
                offload::csum::set_pseudo_header_sum(&mut data).unwrap();
                assert_eq!(offload::csum::verify(&data), Some(false));
                put(&mut p, &data, FrameMeta::partial(0))
            })
            .collect();
        assert_eq!(p.tx_burst(&frames), 2);
        let mut wire = Vec::new();
        assert_eq!(m.transmit(0, &mut |s| wire.push(s.to_vec())), 2);
        for s in &wire {
            assert_eq!(offload::csum::verify(s), Some(true), "{family:?}");
        }
    }
}

#[test]
fn a_frame_whose_offload_its_headers_do_not_bear_out_is_dropped_alone() {
    let (mut p, m) = open_large(Family::Igb);
    let not_ip = put(&mut p, &frame(3000, 1), FrameMeta::partial(1448));
    let udp = {
        let mut d = offload::frame::Ipv4Frame {
            proto: 17,
            ..Default::default()
        }
        .build(&frame(3000, 2));
        offload::csum::set_pseudo_header_sum(&mut d).unwrap();
        put(&mut p, &d, FrameMeta::partial(1448))
    };
    let good = put(&mut p, &frame(100, 3), FrameMeta::NONE);
    // Taken, so that the frame after them still goes; counted; given back.
    assert_eq!(p.tx_burst(&[not_ip, udp, good]), 3);
    let mut wire = Vec::new();
    assert_eq!(m.transmit(0, &mut |f| wire.push(f.to_vec())), 1);
    assert_eq!(wire, vec![frame(100, 3)]);
    assert_eq!(p.stats().errors, 2);
    let mut done = [BufHandle::from_raw(0); 8];
    let mut n = 0;
    for _ in 0..3 {
        n += p.tx_done(&mut done[n..]);
    }
    assert_eq!(n, 3, "every buffer comes back");
    let mut back = done[..3].to_vec();
    back.sort_by_key(|b| b.raw());
    let mut want = vec![not_ip.buf, udp.buf, good.buf];
    want.sort_by_key(|b| b.raw());
    assert_eq!(back, want);
}

fn rx_checksums(family: Family) {
    let (mut p, m) = open(family, 1);
    let good = offload::frame::Ipv4Frame::default().build(&frame(500, 1));
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0xff;
    let udp = offload::frame::Ipv4Frame {
        proto: 17,
        ..Default::default()
    }
    .build(&frame(100, 2));
    for f in [&good, &bad, &udp, &frame(60, 3)] {
        assert!(m.receive(0, f));
    }
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
    assert_eq!(
        p.rx_burst(&mut out),
        4,
        "a bad checksum is the stack's to drop"
    );
    let verified: Vec<bool> = out[..4]
        .iter()
        .map(|f| f.meta == FrameMeta::VERIFIED.bits())
        .collect();
    assert_eq!(verified, [true, false, true, false]);
    assert_eq!(bytes(&p, &out[1]), bad);
}

#[test]
fn igb_checksums_the_device_checked_come_up_verified() {
    rx_checksums(Family::Igb);
}

#[test]
fn ixgbe_checksums_the_device_checked_come_up_verified() {
    rx_checksums(Family::Ixgbe);
}

#[test]
fn a_frame_the_device_marks_with_a_receive_error_is_dropped() {
    for family in [Family::Igb, Family::Ixgbe] {
        let (mut p, m) = open(family, 1);
        m.set_faults(Faults {
            rx_error: true,
            ..Faults::default()
        });
        assert!(m.receive(0, &frame(100, 1)));
        let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
        assert_eq!(p.rx_burst(&mut out), 0, "{family:?}");
        assert_eq!(p.stats().errors, 1);
    }
}

fn jumbo_rx(family: Family) {
    let (mut p, m) = open_large(family);
    match family {
        Family::Igb => {
            assert_eq!(m.peek(igb::RLPML), pmd::intel::MAX_JUMBO_FRAME);
            assert_ne!(m.peek(igb::RCTL) & igb::RCTL_LPE, 0);
        }
        Family::Ixgbe => {
            assert_eq!(m.peek(ixgbe::MAXFRS) >> 16, pmd::intel::MAX_JUMBO_FRAME);
            assert_ne!(m.peek(ixgbe::HLREG0) & ixgbe::HLREG0_JUMBOEN, 0);
        }
    }
    let big = offload::frame::Ipv4Frame::default().build(&frame(9000 - 40, 5));
    let small = frame(100, 6);
    for f in [&small, &big, &small] {
        assert!(m.receive(0, f));
    }
    // A burst stops before a frame spanning several buffers; the next takes it first.
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
    assert_eq!(p.rx_burst(&mut out), 1, "{family:?}");
    assert_eq!(p.rx_burst(&mut out[1..]), 2, "{family:?}");
    let large = p.large_pool().unwrap().clone();
    let mut got = vec![0; usize::from(out[1].len)];
    assert_eq!(out[1].buf.pool(), large.id(), "copied into a large buffer");
    large.buf(out[1].buf).unwrap().read(0, &mut got).unwrap();
    assert_eq!(got, big);
    assert_eq!(out[1].meta, FrameMeta::VERIFIED.bits());
    assert_eq!(bytes(&p, &out[0]), small);
    assert_eq!(bytes(&p, &out[2]), small);
    p.reclaim(&out[..3].iter().map(|f| f.buf).collect::<Vec<_>>());
    assert_eq!(p.stats().errors, 0, "every buffer back where it belongs");
    // Round and round: the ring's slots were handed back with their buffers.
    for _ in 0..200 {
        assert!(m.receive(0, &big));
        let mut n = 0;
        for _ in 0..2 {
            n += p.rx_burst(&mut out[n..]);
        }
        assert_eq!(n, 1);
        p.reclaim(&[out[0].buf]);
    }
    assert_eq!(p.stats().errors, 0);
}

#[test]
fn igb_jumbo_frames_spanning_receive_buffers_come_up_whole() {
    jumbo_rx(Family::Igb);
}

#[test]
fn ixgbe_jumbo_frames_spanning_receive_buffers_come_up_whole() {
    jumbo_rx(Family::Ixgbe);
}

#[test]
fn a_spanning_frame_with_a_length_no_buffer_holds_is_dropped_and_the_queue_goes_on() {
    let (mut p, m) = open_large(Family::Igb);
    let big = offload::frame::Ipv4Frame::default().build(&frame(6000, 5));
    m.set_faults(Faults {
        rx_first_len: Some(4000),
        ..Faults::default()
    });
    assert!(m.receive(0, &big));
    m.set_faults(Faults::default());
    let mut out = [Frame::new(BufHandle::from_raw(0), 0); 8];
    let mut n = 0;
    for _ in 0..4 {
        n += p.rx_burst(&mut out[n..]);
    }
    assert_eq!(n, 0, "a length over a 2 KiB buffer: dropped");
    assert_eq!(p.stats().errors, 1);
    // The ring was handed back whole: the next frames arrive.
    for f in [&big, &frame(100, 1)] {
        assert!(m.receive(0, f));
    }
    for _ in 0..4 {
        n += p.rx_burst(&mut out[n..]);
    }
    assert_eq!(n, 2, "the queue stalled");
    assert_eq!(out[0].len as usize, big.len());
}

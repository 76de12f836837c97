//! Random traffic through the switch against a reference model of a learning bridge: every
//! frame goes where the model says, copies are made exactly where the delivery rule says,
//! and no buffer is lost.

use std::collections::HashMap;
use std::sync::Arc;

use grant_pool::PoolId;
use pmd::Mac;
use pmd::sim::{MacPattern, SimConfig, SimPort, SimProbe};
use proptest::prelude::*;
use switch::{DropReason, ManualClock, PortId, Switch, SwitchConfig};

/// Station addresses the traffic uses: a handful, so that learning, moves and hairpins
/// happen often.
fn station(i: u8) -> Mac {
    [0x02, 0x5a, 0, 0, 0, i]
}
const BROADCAST: Mac = [0xff; 6];

#[derive(Debug, Clone)]
struct Scenario {
    /// Per port: the (source, destination) pairs its generator cycles through.
    flows: Vec<Vec<(Mac, Mac)>>,
    /// `reads[d][s]`: port `d` can read port `s`'s pool.
    reads: Vec<Vec<bool>>,
    /// Which port sends each next frame.
    steps: Vec<usize>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..=4).prop_flat_map(|ports| {
        let mac = (0u8..5).prop_map(station);
        let dst = prop_oneof![4 => (0u8..5).prop_map(station), 1 => Just(BROADCAST)];
        let flow = proptest::collection::vec((mac, dst), 1..4);
        (
            proptest::collection::vec(flow, ports),
            proptest::collection::vec(proptest::collection::vec(any::<bool>(), ports), ports),
            proptest::collection::vec(0..ports, 1..40),
        )
            .prop_map(|(flows, reads, steps)| Scenario {
                flows,
                reads,
                steps,
            })
    })
}

/// What a learning bridge does, written plainly.
#[derive(Default)]
struct Model {
    fdb: HashMap<Mac, usize>,
    sunk: Vec<u64>,
    copies: u64,
    hairpins: Vec<u64>,
}

impl Model {
    fn frame(&mut self, sc: &Scenario, from: usize, src: Mac, dst: Mac) {
        let ports = sc.flows.len();
        self.fdb.insert(src, from);
        let group = dst[0] & 1 == 1;
        match self.fdb.get(&dst) {
            Some(&to) if !group && to == from => self.hairpins[from] += 1,
            Some(&to) if !group => {
                self.sunk[to] += 1;
                if !sc.reads[to][from] {
                    self.copies += 1;
                }
            }
            _ => {
                let targets: Vec<usize> = (0..ports).filter(|&p| p != from).collect();
                let zero_copy = targets.iter().any(|&t| sc.reads[t][from]);
                for &t in &targets {
                    self.sunk[t] += 1;
                }
                self.copies += targets.len() as u64 - u64::from(zero_copy);
            }
        }
    }
}

fn run(sc: &Scenario) -> Result<(), TestCaseError> {
    let ports = sc.flows.len();
    let mut sims: Vec<SimPort> = (0..ports)
        .map(|i| {
            let mut c =
                SimConfig::new(format!("p{i}"), station(100 + i as u8), PoolId(i as u8 + 1));
            c.gen_bufs = 64;
            c.spare_bufs = 256;
            c.sequence = true;
            c.verify = true;
            c.gated = true;
            c.src = Some(MacPattern::RoundRobin(
                sc.flows[i].iter().map(|f| f.0).collect(),
            ));
            c.dst = MacPattern::RoundRobin(sc.flows[i].iter().map(|f| f.1).collect());
            SimPort::new(c).expect("valid sim config")
        })
        .collect();
    let pools: Vec<_> = sims.iter().map(|s| s.pool().clone()).collect();
    for (d, sim) in sims.iter_mut().enumerate() {
        for (s, pool) in pools.iter().enumerate() {
            if s != d && sc.reads[d][s] {
                sim.grant_read(pool.clone());
            }
        }
    }
    let probes: Vec<Arc<SimProbe>> = sims.iter().map(|s| s.probe()).collect();
    let mut sw = Switch::new(SwitchConfig {
        clock: switch::Clock::Manual(ManualClock::new()),
        ..SwitchConfig::default()
    })
    .expect("valid config");
    let ids: Vec<PortId> = sims
        .into_iter()
        .map(|s| sw.add_port(Box::new(s)).expect("added"))
        .collect();

    let mut model = Model {
        sunk: vec![0; ports],
        hairpins: vec![0; ports],
        ..Model::default()
    };
    let mut sent = vec![0usize; ports];
    for &p in &sc.steps {
        let k = sent[p];
        sent[p] += 1;
        let (src, dst) = sc.flows[p][k % sc.flows[p].len()];
        model.frame(sc, p, src, dst);
        probes[p].release(1);
        for _ in 0..3 {
            sw.poll();
        }
        for (i, probe) in probes.iter().enumerate() {
            prop_assert_eq!(SimProbe::get(&probe.sunk), model.sunk[i], "port {} sunk", i);
        }
        let mut copies = 0;
        for (i, &id) in ids.iter().enumerate() {
            let c = sw.counters(id).expect("present").snapshot();
            copies += c.tx_copied;
            prop_assert_eq!(c.dropped(DropReason::Hairpin), model.hairpins[i]);
            prop_assert_eq!(c.dropped_total(), model.hairpins[i], "unexpected drops");
        }
        prop_assert_eq!(copies, model.copies, "copies");
    }
    for _ in 0..3 {
        sw.poll();
    }
    for (i, p) in probes.iter().enumerate() {
        prop_assert_eq!(SimProbe::get(&p.payload_errors), 0, "port {} payload", i);
        prop_assert_eq!(SimProbe::get(&p.seq_errors), 0, "port {} order", i);
        prop_assert_eq!(SimProbe::get(&p.unreadable), 0, "port {} unreadable", i);
        prop_assert_eq!(SimProbe::get(&p.bad_reclaims), 0, "port {} bad reclaims", i);
        prop_assert_eq!(
            SimProbe::get(&p.free),
            SimProbe::get(&p.total),
            "port {} leak",
            i
        );
    }
    prop_assert_eq!(sw.orphans(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn switch_matches_a_learning_bridge(sc in scenario()) {
        run(&sc)?;
    }
}

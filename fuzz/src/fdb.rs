//! The forwarding database (`switch::fdb`) against a model: a `HashMap` from MAC to port and
//! the tick the station was last recorded at, with the rules the module documents.

use std::collections::HashMap;

use switch::Fdb;
use switch::fdb::{GROUP_SOURCE, Learned, MAC_MASK, MacKey, PinError, UNKNOWN, is_group};

use crate::Input;

/// One station in the model.
#[derive(Debug, Clone, Copy)]
struct Entry {
    port: u16,
    /// The recorded tick; `None` when pinned.
    tick: Option<u32>,
}

/// The documented behaviour of [`Fdb`], written plainly.
#[derive(Debug)]
struct Model {
    map: HashMap<u64, Entry>,
    max: usize,
    capacity: usize,
    age: u32,
    refresh: u32,
    port_limit: usize,
}

/// The tick learning records for a sighting at `now` (never the pinned mark).
fn stamp(now: u32) -> u32 {
    if now == u32::MAX { now - 1 } else { now }
}

impl Model {
    fn learned(&self) -> usize {
        self.map.values().filter(|e| e.tick.is_some()).count()
    }

    fn learned_on(&self, port: u16) -> usize {
        self.map
            .values()
            .filter(|e| e.tick.is_some() && e.port == port)
            .count()
    }

    fn learn(&mut self, mac: MacKey, port: u16, now: u32) -> Learned {
        if is_group(mac) {
            return Learned::BadSource;
        }
        let k = mac & MAC_MASK;
        match self.map.get(&k).copied() {
            None => {
                if self.learned() >= self.max {
                    return Learned::Full;
                }
                if self.learned_on(port) >= self.port_limit {
                    return Learned::PortFull;
                }
                self.map.insert(
                    k,
                    Entry {
                        port,
                        tick: Some(stamp(now)),
                    },
                );
                Learned::New
            }
            Some(Entry {
                port: p,
                tick: None,
            }) => {
                if p == port {
                    Learned::Fresh
                } else {
                    Learned::Pinned
                }
            }
            Some(Entry {
                port: p,
                tick: Some(t),
            }) => {
                if p != port {
                    if self.learned_on(port) >= self.port_limit {
                        return Learned::PortFull;
                    }
                    self.map.insert(
                        k,
                        Entry {
                            port,
                            tick: Some(stamp(now)),
                        },
                    );
                    Learned::Moved(p)
                } else if now.wrapping_sub(t) > self.refresh {
                    self.map.insert(
                        k,
                        Entry {
                            port,
                            tick: Some(stamp(now)),
                        },
                    );
                    Learned::Refreshed
                } else {
                    Learned::Fresh
                }
            }
        }
    }

    fn alive(&self, e: &Entry, now: u32) -> bool {
        e.tick.is_none_or(|t| now.wrapping_sub(t) <= self.age)
    }

    fn lookup(&self, mac: MacKey, now: u32) -> Option<u16> {
        if is_group(mac) {
            return None;
        }
        let e = self.map.get(&(mac & MAC_MASK))?;
        self.alive(e, now).then_some(e.port)
    }

    fn pin(&mut self, mac: MacKey, port: u16) -> Result<(), PinError> {
        let k = mac & MAC_MASK;
        if is_group(k) || k == 0 || port >= GROUP_SOURCE {
            return Err(PinError::NotUnicast);
        }
        match self.map.get(&k) {
            None if self.map.len() + 1 > self.capacity / 4 * 3 => return Err(PinError::Full),
            Some(Entry {
                port: p,
                tick: None,
            }) if *p != port => return Err(PinError::Taken(*p)),
            _ => {}
        }
        self.map.insert(k, Entry { port, tick: None });
        Ok(())
    }

    /// As `Fdb::claim`: refused while a learned station of the MAC is on another port.
    fn claim(&mut self, mac: MacKey, port: u16) -> Result<(), PinError> {
        let k = mac & MAC_MASK;
        if !is_group(k)
            && k != 0
            && let Some(Entry {
                port: p,
                tick: Some(_),
            }) = self.map.get(&k)
            && *p != port
        {
            return Err(PinError::Held(*p));
        }
        self.pin(mac, port)
    }

    fn sweep_all(&mut self, now: u32) -> usize {
        let before = self.map.len();
        let age = self.age;
        self.map
            .retain(|_, e| e.tick.is_none_or(|t| now.wrapping_sub(t) <= age));
        before - self.map.len()
    }

    fn dead(&self, now: u32) -> usize {
        self.map.values().filter(|e| !self.alive(e, now)).count()
    }
}

const AGES: [u32; 9] = [0, 1, 7, 64, 100, 512, 6400, 300_000, u32::MAX];

/// Runs a sequence of FDB operations decoded from `data` on a small table and on the model,
/// and asserts that every answer, the length and the per-port counts agree.
pub fn against_model(data: &[u8]) {
    let mut inp = Input::new(data);
    let max = 1 + inp.below(40);
    let age = AGES[inp.below(AGES.len())];
    let seed = inp.u64();
    let mut f = Fdb::with_fixed_seed(max, age, seed);
    let mut m = Model {
        map: HashMap::new(),
        max,
        capacity: f.capacity(),
        age,
        refresh: age >> 6,
        port_limit: usize::MAX,
    };
    // Stations: a few MACs the input names (the low bit picks unicast or group); keys carry
    // junk above their 48 bits, as keys read from frame headers do.
    let mut macs = [0u64; 12];
    for k in &mut macs {
        *k = inp.u64();
        if inp.u8() & 3 != 0 {
            *k &= !1;
        }
    }
    let ports = [0u16, 1, 2, 3, 5, GROUP_SOURCE - 1];
    let mut now: u32 = inp.u32();
    let mut ops = 0;
    while !inp.is_empty() && ops < 2000 {
        ops += 1;
        let op = inp.u8();
        let mac = macs[inp.below(macs.len())];
        let port = ports[inp.below(ports.len())];
        match op % 11 {
            0 | 1 => {
                let got = f.learn(mac, port, now);
                let want = m.learn(mac, port, now);
                assert_eq!(got, want, "learn {mac:#x} on {port} at {now}");
            }
            2 => {
                assert_eq!(
                    f.lookup(mac, now),
                    m.lookup(mac, now),
                    "lookup {mac:#x} at {now}"
                );
            }
            3 | 4 => {
                // A burst received on `port`.
                let learn = op & 0x80 == 0;
                let n = 1 + inp.below(8);
                let frames: Vec<(MacKey, MacKey)> = (0..n)
                    .map(|_| (macs[inp.below(macs.len())], macs[inp.below(macs.len())]))
                    .collect();
                let mut out = vec![0xabcd; n];
                f.learn_and_look_up(port, now, learn, &frames, &mut out);
                for (i, &(dst, src)) in frames.iter().enumerate() {
                    if learn {
                        m.learn(src, port, now);
                    }
                    let want = if is_group(src) {
                        GROUP_SOURCE
                    } else {
                        m.lookup(dst, now).unwrap_or(UNKNOWN)
                    };
                    assert_eq!(
                        out[i], want,
                        "burst frame {i} of {frames:x?} on {port} at {now}"
                    );
                }
            }
            5 => {
                let learn = op & 0x80 == 0;
                let dst = macs[inp.below(macs.len())];
                let (got, _) = f.learn_and_look_up_one(port, now, learn, dst, mac);
                if learn {
                    m.learn(mac, port, now);
                }
                let want = if is_group(mac) {
                    GROUP_SOURCE
                } else {
                    m.lookup(dst, now).unwrap_or(UNKNOWN)
                };
                assert_eq!(
                    got, want,
                    "one frame {dst:#x} <- {mac:#x} on {port} at {now}"
                );
            }
            6 if op & 0x80 == 0 => {
                let got = f.pin(mac, port);
                assert_eq!(got, m.pin(mac, port), "pin {mac:#x} to {port}");
            }
            6 => {
                let got = f.claim(mac, port);
                assert_eq!(got, m.claim(mac, port), "claim {mac:#x} on {port}");
            }
            7 => {
                f.flush_port(port);
                m.map.retain(|_, e| e.port != port);
            }
            8 => {
                // A bounded sweep deletes only aged entries; a full one deletes every one.
                let budget = if op & 0x80 == 0 {
                    inp.below(8)
                } else {
                    usize::MAX
                };
                let dead = m.dead(now);
                let before = f.len();
                let got = f.sweep(now, budget);
                assert!(got <= dead, "swept {got} of {dead} aged entries");
                assert_eq!(f.len(), before - got);
                // Bring both to the same state: sweep the rest.
                let rest = f.sweep(now, usize::MAX);
                assert_eq!(got + rest, m.sweep_all(now), "aged entries at {now}");
            }
            9 => {
                let limit = 1 + inp.below(6);
                f.set_port_limit(limit);
                m.port_limit = limit;
            }
            _ => {
                // Time passes: mostly a little, sometimes a lot, sometimes backwards.
                now = match inp.u8() % 8 {
                    0 => now.wrapping_add(inp.u32()),
                    1 => now.wrapping_sub(u32::from(inp.u8())),
                    2 => {
                        now.wrapping_add(age.wrapping_add(u32::from(inp.u8() % 3)).wrapping_sub(1))
                    }
                    3 => now.wrapping_add(age >> 6),
                    _ => now.wrapping_add(u32::from(inp.u8())),
                };
            }
        }
        assert_eq!(f.len(), m.map.len(), "entries after op {}", op % 11);
        for p in ports {
            assert_eq!(f.learned_on(p), m.learned_on(p), "stations learned on {p}");
        }
    }
    // Every live entry is listed once, with its port.
    let mut listed = f.entries(now);
    listed.sort_unstable();
    let mut want: Vec<([u8; 6], u16)> = m
        .map
        .iter()
        .filter(|(_, e)| m.alive(e, now))
        .map(|(k, e)| (switch::fdb::key_mac(*k), e.port))
        .collect();
    want.sort_unstable();
    let got: Vec<([u8; 6], u16)> = listed.iter().map(|(mac, p, _)| (*mac, *p)).collect();
    assert_eq!(got, want, "live entries at {now}");
}

//! Fuzz harnesses for the boundaries Ferrite parses or shares with untrusted peers, as plain
//! `fn(&[u8])` that run on the stable toolchain.
//!
//! Each harness turns arbitrary bytes into input for one component and asserts an
//! invariant of that component (a round trip, a model's answers, a documented bound, no
//! buffer handed out twice), not only that it does not panic. They are driven two ways:
//!
//! - `tests/corpus.rs` (part of the workspace tests) feeds each one the committed corpus in
//!   `corpus/<target>/` and a fixed number of inputs made by [`mutate::Mutator`] from it,
//!   from a fixed seed: the same inputs on every run;
//! - `run.sh TARGET SECONDS` builds `src/bin/afl.rs` with `cargo afl` and runs a
//!   coverage-guided campaign.
//!
//! A harness panics when the invariant breaks; everything else returns.
#![forbid(unsafe_code)]

pub mod app_port;
pub mod blocks;
pub mod config;
pub mod fdb;
pub mod gso;
pub mod mutate;
pub mod session;
pub mod switch_poll;
pub mod wire;
pub mod xen;

/// A harness: takes any bytes, panics only when an invariant breaks.
pub type Harness = fn(&[u8]);

/// Every target by name, in the order of `results/fuzz.md`.
pub const TARGETS: &[(&str, Harness)] = &[
    ("wire", wire::round_trip),
    ("config", config::parse),
    ("fdb", fdb::against_model),
    ("app_port", app_port::hostile_app),
    ("blocks", blocks::frames),
    ("gso", gso::segments),
    ("checksum", gso::checksum),
    ("xen_attach", xen::attach),
    ("xen_answer", xen::answer),
    ("xen_refs", xen::ref_list),
    ("xenstore", xen::xenstore_msg),
    ("session", session::handshake),
    ("switch_poll", switch_poll::hostile_apps),
];

/// The harness named `name`.
pub fn target(name: &str) -> Option<Harness> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

/// Reads the input as a sequence of numbers; past the end every read is 0, so any input
/// is a complete program for a harness that decodes operations from it.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    /// Reads from the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// The next two bytes, little endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes, little endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next eight bytes, little endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.u8() as usize % n
        } else {
            self.u32() as usize % n
        }
    }

    /// The rest of the input.
    pub fn rest(&mut self) -> &'a [u8] {
        let r = self.data.get(self.at..).unwrap_or_default();
        self.at = self.data.len();
        r
    }
}

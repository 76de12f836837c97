//! The lockless batching L2 switch: ports, a learning FDB, burst forwarding under the one
//! delivery rule (pass the handle when the destination can read the buffer's pool, else copy
//! once), and the run loop that polls ports on a pinned core.
//!
//! This crate holds no `unsafe` and trusts nothing a port delivers: every handle it touches is
//! looked up and bounds-checked through `grant_pool`.
#![forbid(unsafe_code)]

pub mod ctl;
pub mod xen_ctl;
pub mod xenstore;

pub mod counters;
pub mod fdb;
pub mod forward;
pub(crate) mod gro;
pub mod run;

pub use counters::{DropReason, PortCounters, PortCountersSnapshot};
pub use fdb::{Fdb, FdbStats};
pub use forward::{
    Captured, Clock, MAX_BURST, MAX_PORTS, ManualClock, PortId, Switch, SwitchConfig, SwitchError,
    Tap,
};
pub use run::{IdleConfig, Waker};
pub mod app_port;
pub mod server;

/// Helpers shared by the unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    /// A xorshift64 generator from a fixed seed: `rnd(n)` is a number below `n`, the same
    /// sequence in every run.
    pub(crate) fn rng() -> impl FnMut(u64) -> u64 {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }
}

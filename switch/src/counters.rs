//! Per-port switch counters, readable from any thread while the switch runs.
//!
//! The switch thread is the only writer: it adds with a relaxed load and store (no
//! read-modify-write instruction, no lock) once per burst; readers see each counter whole.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than an Ethernet header (counted at the ingress port).
    Runt,
    /// A handle naming no known buffer, or a length over the buffer size (ingress).
    BadFrame,
    /// The destination was learned on the ingress port: never sent back out (ingress).
    Hairpin,
    /// Flooded, but there is no other port (ingress).
    NoDestination,
    /// The destination's transmit ring was full (egress).
    RingFull,
    /// The destination had no buffer to copy the frame into (egress).
    NoBuffer,
    /// The copy into the destination's buffer failed: a bad buffer from the destination, a
    /// frame longer than its buffers, or memory it cannot write (egress).
    CopyFault,
    /// From an app's port, with another source MAC than the one the app was admitted with
    /// (ingress).
    Spoofed,
    /// The source MAC is a group (multicast or broadcast) address: no station sends from
    /// one (ingress, any port).
    GroupSource,
    /// From an app's port, to a reserved link-local group address, 01:80:c2:00:00:00 to
    /// 01:80:c2:00:00:0f (pause, STP, LLDP; ingress).
    LinkLocal,
    /// From an app's port, over the app's configured rate (ingress).
    RateLimited,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::Runt,
        DropReason::BadFrame,
        DropReason::Hairpin,
        DropReason::NoDestination,
        DropReason::RingFull,
        DropReason::NoBuffer,
        DropReason::CopyFault,
        DropReason::Spoofed,
        DropReason::GroupSource,
        DropReason::LinkLocal,
        DropReason::RateLimited,
    ];

    /// The reasons counted where a frame enters the switch.
    pub const INGRESS: [DropReason; 8] = [
        DropReason::Runt,
        DropReason::BadFrame,
        DropReason::Hairpin,
        DropReason::NoDestination,
        DropReason::Spoofed,
        DropReason::GroupSource,
        DropReason::LinkLocal,
        DropReason::RateLimited,
    ];

    /// The reasons counted where a frame leaves the switch.
    pub const EGRESS: [DropReason; 3] = [
        DropReason::RingFull,
        DropReason::NoBuffer,
        DropReason::CopyFault,
    ];

    /// A short name for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::BadFrame => "bad_frame",
            DropReason::Hairpin => "hairpin",
            DropReason::NoDestination => "no_destination",
            DropReason::RingFull => "ring_full",
            DropReason::NoBuffer => "no_buffer",
            DropReason::CopyFault => "copy_fault",
            DropReason::Spoofed => "spoofed",
            DropReason::GroupSource => "group_source",
            DropReason::LinkLocal => "link_local",
            DropReason::RateLimited => "rate_limited",
        }
    }
}

/// Counters of one switch port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx: AtomicU64,
    /// Received frames that were flooded (group or unknown destination).
    pub flooded: AtomicU64,
    /// Frames the port accepted for transmit.
    pub tx: AtomicU64,
    /// Of `tx`, frames delivered by copying into the port's buffer.
    pub tx_copied: AtomicU64,
    /// Buffers returned to this port because it owns them.
    pub reclaimed: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

/// A plain copy of [`PortCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCountersSnapshot {
    /// Frames received from the port.
    pub rx: u64,
    /// Received frames that were flooded.
    pub flooded: u64,
    /// Frames the port accepted for transmit.
    pub tx: u64,
    /// Of `tx`, frames delivered by copy.
    pub tx_copied: u64,
    /// Buffers returned to this port.
    pub reclaimed: u64,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub drops: [u64; DropReason::ALL.len()],
}

impl PortCountersSnapshot {
    /// Drops for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Adds `n` to a counter only this thread writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl PortCounters {
    /// The drop counter for `reason`.
    pub fn drop_counter(&self, reason: DropReason) -> &AtomicU64 {
        &self.drops[reason as usize]
    }

    #[inline]
    pub(crate) fn add_drop(&self, reason: DropReason, n: u64) {
        bump(&self.drops[reason as usize], n);
    }

    /// A consistent-enough copy of every counter.
    pub fn snapshot(&self) -> PortCountersSnapshot {
        let mut drops = [0; DropReason::ALL.len()];
        for (d, c) in drops.iter_mut().zip(&self.drops) {
            *d = c.load(Relaxed);
        }
        PortCountersSnapshot {
            rx: self.rx.load(Relaxed),
            flooded: self.flooded.load(Relaxed),
            tx: self.tx.load(Relaxed),
            tx_copied: self.tx_copied.load(Relaxed),
            reclaimed: self.reclaimed.load(Relaxed),
            drops,
        }
    }
}

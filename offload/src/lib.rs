//! What Ferrite knows of a frame beyond its bytes, and the work done on them in software
//! where no device does it: per-frame offload metadata ([`FrameMeta`]), Internet checksums
//! ([`csum`]) and TCP segmentation ([`gso`]). Shared by the ports, the switch and the apps;
//! everything works on byte slices, checks every offset and never panics on a malformed
//! frame.
#![forbid(unsafe_code)]

pub mod csum;
pub mod frame;
pub mod gso;
pub mod meta;

pub use meta::{FrameMeta, MAX_GSO_SIZE, MetaError};

/// Length of an Ethernet header without VLAN tags.
pub const ETH: usize = 14;

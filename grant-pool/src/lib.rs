//! Memory that Ferrite domains share: grants, page pools of fixed-size buffers, and
//! single-producer/single-consumer descriptor rings.
//!
//! This crate is one of the two places in Ferrite allowed to hold `unsafe` code (the other is
//! `pmd`). It exists so that every other crate can treat memory another domain can write as
//! what it is: a byte range read and written only through volatile or atomic accesses whose
//! bounds are checked here, once. It must never hand out a `&`/`&mut` into memory that a peer
//! may write concurrently, never trust an index, length or handle a peer wrote, and never
//! panic on anything a peer wrote.

pub mod grant;
pub mod lend;
pub mod pool;
#[cfg(not(loom))]
pub mod port;
pub mod region;
pub mod ring;
pub mod shm;
#[cfg(target_os = "linux")]
pub mod xen;

pub use grant::{Access, DomId, Grant, GrantBackend, GrantError, GrantRef, Mapping, Notifier};
pub use pool::{
    BufHandle, BufIdx, Holder, HolderError, Holders, Pool, PoolError, PoolId, PoolLayout, PoolSet,
    PoolTable,
};
#[cfg(not(loom))]
pub use port::{
    AppPort, CheckedConsumer, PortError, PortLayout, PortLimits, RejectCounters, ServerPort,
};
pub use region::{LocalMem, Region};
pub use ring::{Desc, RingConsumer, RingError, RingLayout, RingProducer};

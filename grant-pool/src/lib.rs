//! Memory that Ferrite domains share: grants, page pools of fixed-size buffers, and
//! single-producer/single-consumer descriptor rings.
//!
//! This crate is one of the two places in Ferrite allowed to hold `unsafe` code (the other is
//! `pmd`). It exists so that every other crate can treat memory another domain can write as
//! what it is: a byte range read and written only through copies or atomic accesses whose
//! bounds are checked here, once. It must never hand out a `&`/`&mut` into memory that a peer
//! may write concurrently (the one exception, [`lend`], lends only the owner's own buffers
//! and says why), never trust an index, length or handle a peer wrote, and never panic on
//! anything a peer wrote.
//!
//! # Map
//!
//! - [`grant`]: the backend-neutral grant API ([`GrantBackend`], [`Grant`], [`Mapping`],
//!   [`Notifier`]), shaped after Xen's grant tables; [`shm`] implements it with sealed memfds
//!   on any Linux, `xen` with gntalloc/gntdev/evtchn.
//! - [`region`]: [`Memory`], an owning handle that keeps shared memory mapped, and
//!   [`Region`], the bounds-checked view borrowed from it (plain copies and atomics only).
//! - [`pool`]: buffers named by [`BufHandle`] `(pool, index)`, and [`Holders`], the owner's
//!   record of who holds every buffer, so that a departed holder's buffers are reclaimed and a
//!   buffer offered by a party that does not hold it is refused.
//! - [`ring`]: the SPSC descriptor ring (batch reserve/publish, peek/release, one
//!   release-store per batch, need-wakeup).
//! - [`port`]: one app port in one grant (header, rx/tx/fill/completion rings, pool), with
//!   the server's validating consumer and its [`RejectCounters`].
//!
//! # Checking it
//!
//! - Unit, property and cross-process tests: `cargo test -p grant-pool --release`.
//! - The ring protocol under loom (every interleaving up to a preemption bound of 3, slot
//!   accesses checked for races):
//!   `RUSTFLAGS="--cfg loom" cargo test -p grant-pool --release --lib loom`.
//! - The pure parts (region, pool, ring, port: everything that needs no system call) under
//!   miri: `cargo +nightly miri test -p grant-pool --lib -- ring:: pool:: region:: port::`
//!   (install once with `rustup component add --toolchain nightly miri rust-src`). The `shm`
//!   and `xen` backends make system calls miri does not model and are tested natively.

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
    AppPort, CheckedConsumer, PortAnswer, PortError, PortLayout, PortLimits, RejectCounters,
    ServerPort,
};
pub use region::{BLOCK_HEAD, Backing, BlockBurst, Blocks, Memory, Region};
pub use ring::{Desc, RingConsumer, RingError, RingLayout, RingProducer};

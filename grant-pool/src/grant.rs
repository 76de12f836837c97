//! The grant API, shaped after Xen's grant tables.
//!
//! A granting domain grants pages to a peer, read-only or read-write, and gets one
//! [`GrantRef`] per page; the peer maps references into a mapping that unmaps on drop; the
//! granter can end access only while the pages are not mapped; the granter can learn that the
//! mapper went away (Xen's unmap-notify). Backends: `shm` (memfd, any Linux) and `xen`
//! (gntalloc/gntdev/evtchn).

/// A domain's id (Xen's `domid_t`; a process-local number on the `shm` backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomId(pub u16);

/// A grant reference: names one granted page within the granting domain's grant table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GrantRef(pub u32);

/// What a grantee may do with granted pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Map for reading only.
    ReadOnly,
    /// Map for reading and writing.
    ReadWrite,
}

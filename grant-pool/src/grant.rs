//! The grant API, shaped after Xen's grant tables, behind one set of traits.
//!
//! A granting domain grants pages to a peer, read-only or read-write, and gets grant
//! references ([`Grant::refs`]); it sends them, with the grant's [`Grant::attachments`], to
//! the peer over the control socket; the peer maps them with [`GrantBackend::map`] into a
//! [`Mapping`] that unmaps on drop. The granter can end access ([`Grant::end_access`]) only
//! while the pages are not mapped, and can learn that every mapper went away, whether it
//! unmapped or died ([`Grant::is_mapped`]; Xen's unmap-notify). A [`Notifier`] is a
//! bidirectional doorbell between two domains (a Unix socketpair on `shm`, an event channel
//! on Xen), made by one side with [`GrantBackend::notifier`] and joined by the other with
//! [`GrantBackend::bind_notifier`].
//!
//! Callers are written against [`GrantBackend`] only, so a backend is a type parameter:
//! [`crate::shm`] (memfd, any Linux) today, `xen` (gntalloc/gntdev/evtchn) beside it.
//!
//! What travels over the control socket, and nothing else: the grant's references (as
//! numbers, verbatim: a backend may add references of its own, e.g. a control page, so a
//! caller never interprets or reorders them), the notifier's [`Notifier::port`], and the
//! file descriptors from `attachments()` (none on Xen). [`crate::shm::send_fds`] and
//! [`crate::shm::recv_fds`] move the descriptors.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::region::{Memory, Region};

/// A domain's id (Xen's `domid_t`; on the `shm` backend a number the control plane assigns,
/// used only to label grants and check that a mapper names the granter it expects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomId(pub u16);

impl DomId {
    /// The domain that runs the control plane (Xen's dom0).
    pub const SELF_HOST: DomId = DomId(0);
}

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

/// Something a grant backend could not do.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Os {
        /// What was being done.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The pages are still mapped by the peer, so access cannot end yet.
    #[error("the peer still has {mappings} mapping(s) of these pages; unmap them first")]
    StillMapped {
        /// Live mappings the backend counted.
        mappings: u32,
    },
    /// A grant of no pages, or of more than the backend allows.
    #[error("cannot grant {pages} pages: the limit is {max} per grant")]
    PageCount {
        /// Pages asked for.
        pages: usize,
        /// The backend's limit.
        max: usize,
    },
    /// The references do not name pages of the granted memory, or repeat one.
    #[error("bad grant references: {0}")]
    BadRefs(String),
    /// The file descriptors that came with the references are not the ones the backend needs.
    #[error("bad attachments: {0}")]
    BadAttachments(String),
    /// The peer asked for write access to pages granted read-only (or the memory refuses it).
    #[error("write access refused: the pages are granted read-only")]
    ReadOnly,
    /// The notifier's port or attachments are not usable.
    #[error("bad notifier: {0}")]
    BadNotifier(String),
    /// This backend cannot do that on this system (e.g. no `/dev/xen`).
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl GrantError {
    /// The last OS error, labelled with what was being done.
    pub(crate) fn last_os(op: &'static str) -> Self {
        GrantError::Os {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}

/// A grant backend: how this domain grants its pages, maps a peer's, and makes doorbells.
///
/// Implementations: [`crate::shm::ShmBackend`]; a Xen backend over gntalloc/gntdev/evtchn.
/// Callers are generic over `B: GrantBackend` and never name a backend's types directly.
pub trait GrantBackend: Send + Sync {
    /// Pages this domain granted.
    type Grant: Grant;
    /// A peer's pages this domain mapped.
    type Mapping: Mapping;
    /// A doorbell between this domain and a peer.
    type Notifier: Notifier;

    /// Allocates `pages` zeroed pages and grants them to `peer` with `access`. The granter
    /// itself always has read-write access through [`Grant::region`].
    fn grant(&self, peer: DomId, pages: usize, access: Access) -> Result<Self::Grant, GrantError>;

    /// Maps the pages `granter` granted under `refs` (exactly as [`Grant::refs`] gave them),
    /// with the file descriptors that came with them ([`Grant::attachments`]; none on Xen).
    /// Asking for [`Access::ReadWrite`] on a read-only grant fails with
    /// [`GrantError::ReadOnly`]. The backend duplicates what it keeps of `attach`.
    fn map(
        &self,
        granter: DomId,
        refs: &[GrantRef],
        access: Access,
        attach: &[OwnedFd],
    ) -> Result<Self::Mapping, GrantError>;

    /// Makes a new doorbell towards `peer`; send its [`Notifier::port`] and
    /// [`Notifier::attachments`] to the peer, which joins with [`GrantBackend::bind_notifier`].
    fn notifier(&self, peer: DomId) -> Result<Self::Notifier, GrantError>;

    /// Joins the doorbell `peer` made, from the port and descriptors it sent.
    fn bind_notifier(
        &self,
        peer: DomId,
        port: u32,
        attach: &[OwnedFd],
    ) -> Result<Self::Notifier, GrantError>;
}

/// Pages this domain granted to a peer. Dropping a grant while the peer still maps the pages
/// leaves the memory alive until the peer unmaps (the backend never frees mapped pages), but
/// only [`Grant::end_access`] tells the caller whether that was the case.
pub trait Grant: Send + Sync {
    /// The references to send to the peer, verbatim and in order.
    fn refs(&self) -> &[GrantRef];

    /// The granter's own read-write handle on the granted pages (`pages * PAGE_SIZE`
    /// bytes); a clone (for a pool or ring built over the pages) keeps them mapped here.
    fn memory(&self) -> &Memory;

    /// A view of [`Grant::memory`].
    fn region(&self) -> Region<'_> {
        self.memory().region()
    }

    /// Number of pages granted.
    fn pages(&self) -> usize;

    /// The peer this grant is for.
    fn peer(&self) -> DomId;

    /// The access the peer was given.
    fn access(&self) -> Access;

    /// File descriptors that must travel with the references (memfds on `shm`; none on
    /// Xen). Send them with [`crate::shm::send_fds`] in this order.
    fn attachments(&self) -> Vec<BorrowedFd<'_>>;

    /// Whether any mapping of these pages is still alive. A mapper that died counts as
    /// unmapped (Xen: its unmap-notify fired; `shm`: its process is gone).
    fn is_mapped(&self) -> Result<bool, GrantError>;

    /// Ends the peer's access and frees the pages. Fails, giving the grant back, while the
    /// pages are mapped ([`GrantError::StillMapped`]).
    fn end_access(self) -> Result<(), (Self, GrantError)>
    where
        Self: Sized;
}

/// A peer's granted pages, mapped into this domain; unmapped when dropped.
pub trait Mapping: Send + Sync {
    /// A handle on the mapped pages. Read-only when the mapping was made with
    /// [`Access::ReadOnly`]: it refuses writes, and the pages are mapped without write
    /// permission besides. A clone (for a pool or ring built over the pages) keeps them
    /// mapped: they are unmapped when this mapping and every clone are gone.
    fn memory(&self) -> &Memory;

    /// A view of [`Mapping::memory`].
    fn region(&self) -> Region<'_> {
        self.memory().region()
    }

    /// The domain that granted the pages.
    fn granter(&self) -> DomId;

    /// The access this mapping has.
    fn access(&self) -> Access;

    /// Number of pages mapped.
    fn pages(&self) -> usize;

    /// Whether the granter still holds its grant. `false` once the granter is known to
    /// have died or ended the grant (Xen: its gntalloc unmap-notify cleared the grant's
    /// granter-alive byte). Backends that cannot tell (`shm`, whose apps' deaths close
    /// their control connection) say `true`. A single atomic load; callable from the hot
    /// path's idle branch.
    fn granter_alive(&self) -> bool {
        true
    }
}

/// A bidirectional doorbell between two domains: [`Notifier::notify`] rings the peer,
/// [`Notifier::wait`] sleeps until the peer rings. Level of detail is "something happened":
/// several rings may merge into one wakeup. Pollable through its raw fd.
pub trait Notifier: Send + Sync + AsRawFd {
    /// Rings the peer.
    fn notify(&self) -> Result<(), GrantError>;

    /// Waits until the peer rang (returns `true`, after consuming the ring) or `timeout`
    /// passed (`false`). `None` waits without limit; `Some(ZERO)` only polls.
    fn wait(&self, timeout: Option<Duration>) -> Result<bool, GrantError>;

    /// Consumes any pending rings without blocking; returns whether there was one. Call after
    /// the raw fd polled readable.
    fn drain(&self) -> Result<bool, GrantError>;

    /// The number the peer passes to [`GrantBackend::bind_notifier`] (Xen: this end's
    /// event-channel port; `shm`: 0).
    fn port(&self) -> u32;

    /// File descriptors the peer needs to bind (the peer's end of the socketpair on `shm`,
    /// until taken; none on Xen).
    fn attachments(&self) -> Vec<BorrowedFd<'_>>;

    /// Takes the file descriptors the peer needs to bind out of this notifier, so that they
    /// are closed here once sent (on `shm` the peer's death then shows as its end closing).
    fn take_attachments(&mut self) -> Vec<OwnedFd> {
        Vec::new()
    }

    /// The descriptor that polls readable when the peer rang (the raw fd), borrowed for a
    /// poll loop that watches many notifiers.
    fn poll_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `as_raw_fd` names a descriptor this notifier owns and keeps open for as long
        // as it lives; the borrow cannot outlive `&self`.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

/// One binding shared by several holders: a Xen event channel can be bound once per
/// domain, so the server's switch thread (which rings the app) and its control thread (which
/// polls for the app's rings) share the same binding through an `Arc`.
impl<N: Notifier> Notifier for std::sync::Arc<N> {
    fn notify(&self) -> Result<(), GrantError> {
        (**self).notify()
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, GrantError> {
        (**self).wait(timeout)
    }

    fn drain(&self) -> Result<bool, GrantError> {
        (**self).drain()
    }

    fn port(&self) -> u32 {
        (**self).port()
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        (**self).attachments()
    }

    fn poll_fd(&self) -> BorrowedFd<'_> {
        (**self).poll_fd()
    }
}

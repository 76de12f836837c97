//! The grant backends an app domain can run on, behind one type each for its grant and its
//! doorbell: `shm` (a process on the server's host, attached over the control socket) or
//! `xen` (a Xen guest, attached over xenstore). The app's stack and services never see which.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use grant_pool::Memory;
use grant_pool::shm::{ShmBackend, ShmGrant, ShmNotifier};
use grant_pool::xen::{XenBackend, XenGrant, XenNotifier};
use grant_pool::{Access, DomId, Grant, GrantBackend, GrantError, GrantRef, Notifier};

/// Where the app's memory comes from.
#[derive(Debug)]
pub enum DomBackend {
    /// memfd pages shared with a process on the same host.
    Shm(ShmBackend),
    /// gntalloc pages granted to the server's Xen domain.
    Xen(XenBackend),
}

impl DomBackend {
    /// Grants `pages` pages to `peer`.
    pub fn grant(&self, peer: DomId, pages: usize, access: Access) -> Result<DomGrant, GrantError> {
        Ok(match self {
            Self::Shm(b) => DomGrant::Shm(b.grant(peer, pages, access)?),
            Self::Xen(b) => DomGrant::Xen(b.grant(peer, pages, access)?),
        })
    }

    /// A new doorbell towards `peer`.
    pub fn notifier(&self, peer: DomId) -> Result<DomNotifier, GrantError> {
        Ok(match self {
            Self::Shm(b) => DomNotifier::Shm(b.notifier(peer)?),
            Self::Xen(b) => DomNotifier::Xen(b.notifier(peer)?),
        })
    }
}

/// The app's port memory, on either backend.
#[derive(Debug)]
pub enum DomGrant {
    /// memfd pages.
    Shm(ShmGrant),
    /// gntalloc pages.
    Xen(XenGrant),
}

impl Grant for DomGrant {
    fn refs(&self) -> &[GrantRef] {
        match self {
            Self::Shm(g) => g.refs(),
            Self::Xen(g) => g.refs(),
        }
    }

    fn memory(&self) -> &Memory {
        match self {
            Self::Shm(g) => g.memory(),
            Self::Xen(g) => g.memory(),
        }
    }

    fn pages(&self) -> usize {
        match self {
            Self::Shm(g) => g.pages(),
            Self::Xen(g) => g.pages(),
        }
    }

    fn peer(&self) -> DomId {
        match self {
            Self::Shm(g) => g.peer(),
            Self::Xen(g) => g.peer(),
        }
    }

    fn access(&self) -> Access {
        match self {
            Self::Shm(g) => g.access(),
            Self::Xen(g) => g.access(),
        }
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Self::Shm(g) => g.attachments(),
            Self::Xen(g) => g.attachments(),
        }
    }

    fn is_mapped(&self) -> Result<bool, GrantError> {
        match self {
            Self::Shm(g) => g.is_mapped(),
            Self::Xen(g) => g.is_mapped(),
        }
    }

    fn end_access(self) -> Result<(), (Self, GrantError)> {
        match self {
            Self::Shm(g) => g.end_access().map_err(|(g, e)| (Self::Shm(g), e)),
            Self::Xen(g) => g.end_access().map_err(|(g, e)| (Self::Xen(g), e)),
        }
    }
}

/// The app's doorbell, on either backend.
#[derive(Debug)]
pub enum DomNotifier {
    /// An eventfd pair.
    Shm(ShmNotifier),
    /// An event channel.
    Xen(XenNotifier),
}

impl AsRawFd for DomNotifier {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Self::Shm(n) => n.as_raw_fd(),
            Self::Xen(n) => n.as_raw_fd(),
        }
    }
}

impl Notifier for DomNotifier {
    fn notify(&self) -> Result<(), GrantError> {
        match self {
            Self::Shm(n) => n.notify(),
            Self::Xen(n) => n.notify(),
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, GrantError> {
        match self {
            Self::Shm(n) => n.wait(timeout),
            Self::Xen(n) => n.wait(timeout),
        }
    }

    fn drain(&self) -> Result<bool, GrantError> {
        match self {
            Self::Shm(n) => n.drain(),
            Self::Xen(n) => n.drain(),
        }
    }

    fn port(&self) -> u32 {
        match self {
            Self::Shm(n) => n.port(),
            Self::Xen(n) => n.port(),
        }
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            Self::Shm(n) => n.attachments(),
            Self::Xen(n) => n.attachments(),
        }
    }

    fn poll_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Shm(n) => n.poll_fd(),
            Self::Xen(n) => n.poll_fd(),
        }
    }
}

//! The `xen` grant backend: grants with `gntalloc`, maps with `gntdev`, notifies with event
//! channels (`evtchn`), and learns of a peer's death through unmap-notify.
//!
//! The granting domain (an app) allocates its pool and ring pages with
//! [`Gntalloc::grant`] for the mapping domain (the server) and publishes the grant
//! references; the server maps them with [`Gntdev::map`]. Both arm unmap-notify on a status
//! byte in the shared pages, so the death of either side clears that byte and raises an event
//! on the interdomain channel the other side is waiting on.
//!
//! The ioctl ABI is in [`uapi`]; `xen-sys` supplies the Xen ABI types it carries (domain ids,
//! event-channel ports).

pub mod backend;
pub mod dev;
pub mod suite;
pub mod uapi;

pub use backend::{MAX_GRANT_PAGES, XenBackend, XenGrant, XenMapping, XenNotifier};
pub use dev::{Evtchn, ForeignMapping, Gntalloc, Gntdev, GrantedPages, Port, gntalloc_limit};

/// What can go wrong talking to the Xen devices.
#[derive(Debug, thiserror::Error)]
pub enum XenError {
    /// `/dev/xen` does not exist at all.
    #[error(
        "/dev/xen does not exist: this is not running in a Xen domain (dom0 or a PV/PVH domU); \
         use the shm backend outside Xen"
    )]
    NoXen,
    /// A Xen device node is missing.
    #[error(
        "{path} does not exist: load the module (modprobe xen-gntalloc xen-gntdev xen-evtchn) \
         and mount xenfs if needed"
    )]
    NoDevice {
        /// The device path.
        path: &'static str,
    },
    /// A Xen device could not be opened.
    #[error("cannot open {path}: {source} (the Xen devices need root)")]
    Open {
        /// The device path.
        path: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// An ioctl (or read/write on the event device) failed.
    #[error("{op} failed: {source}")]
    Ioctl {
        /// Which operation.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Mapping pages into this process failed.
    #[error("mmap of {len} bytes of grant pages failed: {source}")]
    Mmap {
        /// Bytes asked for.
        len: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hypervisor refused to map a grant: the reference is not a live grant to us.
    #[error("domain {granter} offered a grant reference the hypervisor refused to map: {source}")]
    BadGrant {
        /// The domain that offered the references.
        granter: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gntalloc module's per-domain limit is too low for the request.
    #[error(
        "gntalloc refused {want} more grants (module limit {}): raise it with \
         `echo 65536 > /sys/module/xen_gntalloc/parameters/limit` or load the module with \
         `modprobe xen-gntalloc limit=65536`, or make the pools smaller",
        limit.map_or("unknown".to_string(), |l| l.to_string())
    )]
    GrantLimit {
        /// Pages asked for.
        want: usize,
        /// The module's limit, when readable.
        limit: Option<usize>,
    },
    /// A page count or offset out of range.
    #[error("page count or offset {0} is out of range for this request")]
    Count(usize),
}

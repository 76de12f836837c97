//! The `shm` grant backend: grants are sealed memfds, passed between processes over a Unix
//! socket and mapped by page offset. Runs on any Linux, no privileges.
//!
//! # How the Xen model maps onto memfds
//!
//! - **Grant.** [`ShmBackend::grant`] creates a memfd of `pages` pages, sizes it and seals it
//!   (`F_SEAL_SHRINK | F_SEAL_GROW`, then `F_SEAL_SEAL`), so no party can truncate it under a
//!   mapper (which would turn its accesses into `SIGBUS`). Grant reference `i` is page `i` of
//!   the memfd. A mapper refuses a memfd that lacks these seals.
//! - **Read-only.** A read-only grant hands the peer a descriptor reopened `O_RDONLY` through
//!   `/proc/self/fd`, and seals the memfd with `F_SEAL_FUTURE_WRITE` after the granter mapped
//!   it, so that a writable shared mapping fails even if the peer reopens the file read-write
//!   through its own `/proc/self/fd`. The granter keeps writing through its existing mapping.
//! - **Mapped count and unmap-notify.** Each grant has a second, one-page control memfd (always
//!   read-write) holding mapper slots. A mapping claims a slot with its pid and process start
//!   time before it maps and frees it after it unmaps. [`Grant::is_mapped`] counts claimed
//!   slots whose process still exists with that start time, so a mapper that died counts as
//!   unmapped; [`Grant::end_access`] fails while the count is not zero.
//!
//! # Limits (honest ones)
//!
//! - Ending access cannot revoke: a peer holding the memfd can keep or re-map the pages, and
//!   the memory stays alive as long as any process maps it or holds the descriptor. The
//!   granter's guarantee is only that it stops using the pages itself.
//! - The slots are written by the peer, so a hostile peer can lie about being mapped (it can
//!   only delay its own teardown by that) or claim to be gone while it still maps the pages
//!   (it then keeps memory the granter no longer uses; nothing of the granter is exposed).
//! - Death is detected by pid and start time (`/proc/<pid>/stat`), so both processes must
//!   share a pid namespace. For prompt notice of a peer's death use the control socket
//!   (it closes when the peer dies) or a pidfd of its `SO_PEERCRED` pid.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::grant::{Access, DomId, Grant, GrantBackend, GrantError, GrantRef, Mapping, Notifier};
use crate::pool::PAGE_SIZE;
use crate::region::{Backing, Memory};
use std::sync::Arc;

/// Most pages one grant may hold (1 GiB).
pub const MAX_GRANT_PAGES: usize = 1 << 18;

const CTL_MAGIC: u32 = 0x4652_4743; // "FRGC"
const CTL_SLOTS: usize = (PAGE_SIZE - 16) / 16;
const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// The `shm` grant backend for one process.
#[derive(Debug, Clone, Copy)]
pub struct ShmBackend {
    dom: DomId,
}

impl ShmBackend {
    /// The backend of the process the control plane calls `dom`.
    pub fn new(dom: DomId) -> Self {
        Self { dom }
    }

    /// This process's domain id.
    pub fn dom(&self) -> DomId {
        self.dom
    }
}

/// A memory mapping this module made; unmapped on drop.
#[derive(Debug)]
struct Mmap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: an Mmap is an address range owned by this value; unmapping it from any thread is
// fine, and all access to the bytes goes through `Region`.
unsafe impl Send for Mmap {}
// SAFETY: as for Send; `&Mmap` exposes only the address.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset` shared.
    fn map(
        fd: BorrowedFd<'_>,
        len: usize,
        offset: usize,
        prot: libc::c_int,
    ) -> Result<Self, GrantError> {
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED), so no existing memory is
        // replaced; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(map_err("mmap"));
        }
        Ok(Self {
            base: NonNull::new(p.cast()).ok_or_else(|| GrantError::last_os("mmap"))?,
            len,
        })
    }

    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= self.len && off.is_multiple_of(4));
        // SAFETY: callers pass constant in-bounds, aligned offsets into the control page,
        // which stays mapped while `self` lives; atomics tolerate the peer's writes.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() }
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= self.len && off.is_multiple_of(8));
        // SAFETY: as for `atomic_u32`.
        unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU64>() }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by this value, and nothing can use it after drop: the
        // only handles on it are `Memory` values that own this Mmap through their `Arc`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// A handle on the `len` mapped bytes at `base`, writable or not, owned by `keep`.
///
/// # Safety
/// `keep` must own the `Mmap` of exactly those bytes, mapped readable (and writable when
/// `writable`).
unsafe fn memory_over<K: Backing + 'static>(
    base: NonNull<u8>,
    len: usize,
    writable: bool,
    keep: K,
) -> Memory {
    let keep = Arc::new(keep);
    if writable {
        // SAFETY: `keep` owns the mapping of `len` bytes at `base` (mapped readable and
        // writable by the caller), which stays mapped until `keep` is dropped.
        unsafe { Memory::from_raw(base, len, keep) }
    } else {
        // SAFETY: as above, mapped readable.
        unsafe { Memory::from_raw_read_only(base, len, keep) }
    }
}

/// This mapper's claimed slot in a grant's control page, freed on drop.
#[derive(Debug)]
struct Slot {
    ctl_map: Mmap,
    slot: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.ctl_map
            .atomic_u32(slot_off(self.slot))
            .store(0, Ordering::Release);
    }
}

/// A peer's pages mapped here and the slot that tells the granter so: the pages are
/// unmapped before the slot is freed (field order), so the granter never sees "unmapped"
/// while they are still mapped — which is when the last handle on them is dropped.
#[derive(Debug)]
struct MappedPages {
    _view: Mmap,
    _slot: Slot,
}

fn map_err(op: &'static str) -> GrantError {
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => GrantError::ReadOnly,
        _ => GrantError::Os { op, source: e },
    }
}

fn memfd(name: &str, bytes: usize) -> Result<OwnedFd, GrantError> {
    let cname = CString::new(name).map_err(|_| GrantError::BadRefs("memfd name".into()))?;
    // SAFETY: `cname` is a valid NUL-terminated string; the result is checked.
    let fd =
        unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(GrantError::last_os("memfd_create"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes as libc::off_t) } != 0 {
        return Err(GrantError::last_os("ftruncate"));
    }
    Ok(fd)
}

fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> Result<(), GrantError> {
    // SAFETY: plain fcntl on a valid fd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(GrantError::last_os("fcntl(F_ADD_SEALS)"));
    }
    Ok(())
}

fn seals(fd: BorrowedFd<'_>) -> Result<libc::c_int, GrantError> {
    // SAFETY: plain fcntl on a valid fd.
    let s = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if s < 0 {
        return Err(GrantError::BadAttachments(
            "descriptor is not a sealable memfd".into(),
        ));
    }
    Ok(s)
}

/// `statfs` magic of tmpfs/shmem, where plain memfds live (`linux/magic.h`).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Checks that `fd` is a memfd this backend maps: sealed against shrinking, growing and
/// further sealing, and on tmpfs with 4 KiB pages. A hugetlbfs memfd passes the seal check,
/// but its mappings round up to the huge page size, past what the references cover.
///
/// Safe to call on any descriptor a peer sent: `F_GET_SEALS` fails at once for files that
/// are not memfds, and only a memfd is then asked for its file system, so no call here
/// reaches a file system a peer could serve (FUSE).
pub fn check_memfd(fd: BorrowedFd<'_>) -> Result<(), GrantError> {
    if seals(fd)? & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err(GrantError::BadAttachments(
            "memfd is not sealed against resizing".into(),
        ));
    }
    // SAFETY: zeroed statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable statfs buffer; the fd is valid.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(GrantError::last_os("fstatfs"));
    }
    if st.f_type as i64 != TMPFS_MAGIC {
        return Err(GrantError::BadAttachments(format!(
            "memfd is not on tmpfs (file system magic {:#x}): huge-page memfds are refused",
            st.f_type
        )));
    }
    Ok(())
}

fn file_size(fd: BorrowedFd<'_>) -> Result<usize, GrantError> {
    // SAFETY: zeroed stat is a valid out-parameter; the fd is valid.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(GrantError::last_os("fstat"));
    }
    usize::try_from(st.st_size).map_err(|_| GrantError::BadAttachments("negative size".into()))
}

fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> Result<OwnedFd, GrantError> {
    let path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| GrantError::BadRefs("path".into()))?;
    // SAFETY: valid NUL-terminated path; result checked.
    let r = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(GrantError::last_os("open(/proc/self/fd)"));
    }
    // SAFETY: `r` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// This process's start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After ')' come field 3 (state) onwards; start time is field 22.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Offsets in the control page: magic at 0, slot `i` at 16 + 16 i: pid (u32), pad, start (u64).
fn slot_off(i: usize) -> usize {
    16 + 16 * i
}

/// Memory this process granted to a peer: a sealed memfd and a control page.
#[derive(Debug)]
pub struct ShmGrant {
    peer: DomId,
    access: Access,
    pages: usize,
    refs: Vec<GrantRef>,
    data: OwnedFd,
    /// The descriptor the peer gets: `data` itself, or a read-only reopening of it.
    peer_data: Option<OwnedFd>,
    ctl: OwnedFd,
    mem: Memory,
    ctl_map: Mmap,
}

impl ShmGrant {
    /// Live mappings: claimed slots whose process still runs with the recorded start time.
    /// Slots of dead mappers are freed as they are found.
    pub fn live_mappings(&self) -> u32 {
        sweep_slots(&self.ctl_map)
    }
}

/// Counts the claimed slots of `ctl_map` whose process still runs with the recorded start
/// time, and frees the others (dead mappers, or other processes that took their pids).
fn sweep_slots(ctl_map: &Mmap) -> u32 {
    let mut n = 0;
    for i in 0..CTL_SLOTS {
        let pid_a = ctl_map.atomic_u32(slot_off(i));
        let pid = pid_a.load(Ordering::Acquire);
        if pid == 0 {
            continue;
        }
        let start = ctl_map.atomic_u64(slot_off(i) + 8).load(Ordering::Acquire);
        match start_time(pid) {
            // The start time is written after the pid; 0 means "claiming right now".
            Some(t) if t == start || start == 0 => n += 1,
            // Free the slot unless it changed under us.
            _ => {
                let _ = pid_a.compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
        }
    }
    n
}

/// Claims a free slot of `ctl_map` for `pid`.
fn claim_slot(ctl_map: &Mmap, pid: u32) -> Option<usize> {
    (0..CTL_SLOTS).find(|&i| {
        ctl_map
            .atomic_u32(slot_off(i))
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    })
}

impl Grant for ShmGrant {
    fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    fn memory(&self) -> &Memory {
        &self.mem
    }

    fn pages(&self) -> usize {
        self.pages
    }

    fn peer(&self) -> DomId {
        self.peer
    }

    fn access(&self) -> Access {
        self.access
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        let data = self.peer_data.as_ref().unwrap_or(&self.data);
        vec![data.as_fd(), self.ctl.as_fd()]
    }

    fn is_mapped(&self) -> Result<bool, GrantError> {
        Ok(self.live_mappings() > 0)
    }

    fn end_access(self) -> Result<(), (Self, GrantError)> {
        let mappings = self.live_mappings();
        if mappings > 0 {
            return Err((self, GrantError::StillMapped { mappings }));
        }
        drop(self);
        Ok(())
    }
}

/// A peer's granted memfd pages mapped into this process, in one piece. The pages stay
/// mapped, and the granter sees them mapped, until this value and every handle taken from
/// [`Mapping::memory`] are gone.
#[derive(Debug)]
pub struct ShmMapping {
    granter: DomId,
    access: Access,
    pages: usize,
    mem: Memory,
}

impl Mapping for ShmMapping {
    fn memory(&self) -> &Memory {
        &self.mem
    }

    fn granter(&self) -> DomId {
        self.granter
    }

    fn access(&self) -> Access {
        self.access
    }

    fn pages(&self) -> usize {
        self.pages
    }
}

impl GrantBackend for ShmBackend {
    type Grant = ShmGrant;
    type Mapping = ShmMapping;
    type Notifier = ShmNotifier;

    fn grant(&self, peer: DomId, pages: usize, access: Access) -> Result<ShmGrant, GrantError> {
        if pages == 0 || pages > MAX_GRANT_PAGES {
            return Err(GrantError::PageCount {
                pages,
                max: MAX_GRANT_PAGES,
            });
        }
        let bytes = pages * PAGE_SIZE;
        let data = memfd("ferrite-grant", bytes)?;
        let view = Mmap::map(data.as_fd(), bytes, 0, libc::PROT_READ | libc::PROT_WRITE)?;
        let peer_data = match access {
            Access::ReadWrite => None,
            Access::ReadOnly => {
                add_seals(data.as_fd(), libc::F_SEAL_FUTURE_WRITE)?;
                Some(reopen(data.as_fd(), libc::O_RDONLY)?)
            }
        };
        add_seals(data.as_fd(), REQUIRED_SEALS)?;
        let ctl = memfd("ferrite-grant-ctl", PAGE_SIZE)?;
        add_seals(ctl.as_fd(), REQUIRED_SEALS)?;
        let ctl_map = Mmap::map(
            ctl.as_fd(),
            PAGE_SIZE,
            0,
            libc::PROT_READ | libc::PROT_WRITE,
        )?;
        ctl_map.atomic_u32(0).store(CTL_MAGIC, Ordering::Release);
        Ok(ShmGrant {
            peer,
            access,
            pages,
            refs: (0..pages as u32).map(GrantRef).collect(),
            data,
            peer_data,
            ctl,
            // SAFETY: `view` maps these bytes read-write, and the handle owns it.
            mem: unsafe { memory_over(view.base, view.len, true, view) },
            ctl_map,
        })
    }

    fn map(
        &self,
        granter: DomId,
        refs: &[GrantRef],
        access: Access,
        attach: &[OwnedFd],
    ) -> Result<ShmMapping, GrantError> {
        let [data, ctl] = attach else {
            return Err(GrantError::BadAttachments(format!(
                "expected 2 descriptors (data memfd, control memfd), got {}",
                attach.len()
            )));
        };
        if refs.is_empty() || refs.len() > MAX_GRANT_PAGES {
            return Err(GrantError::PageCount {
                pages: refs.len(),
                max: MAX_GRANT_PAGES,
            });
        }
        for fd in [data, ctl] {
            check_memfd(fd.as_fd())?;
        }
        let file_pages = file_size(data.as_fd())? / PAGE_SIZE;
        // One run of consecutive pages, mapped in one piece: the memfd's size is the peer's
        // choice, the number of references is bounded above.
        let first = refs[0].0;
        if let Some((k, r)) = refs
            .iter()
            .enumerate()
            .find(|&(k, r)| r.0 as u64 != first as u64 + k as u64)
        {
            return Err(GrantError::BadRefs(format!(
                "reference {} at position {k} does not follow {first}: the references must \
                 name consecutive pages",
                r.0
            )));
        }
        let end = first as u64 + refs.len() as u64;
        if end > file_pages as u64 {
            return Err(GrantError::BadRefs(format!(
                "references {first}..{end} reach past the {file_pages} granted pages"
            )));
        }
        if file_size(ctl.as_fd())? < PAGE_SIZE {
            return Err(GrantError::BadAttachments("control memfd too small".into()));
        }
        let ctl_map = Mmap::map(
            ctl.as_fd(),
            PAGE_SIZE,
            0,
            libc::PROT_READ | libc::PROT_WRITE,
        )?;
        if ctl_map.atomic_u32(0).load(Ordering::Acquire) != CTL_MAGIC {
            return Err(GrantError::BadAttachments(
                "control memfd has no grant header".into(),
            ));
        }
        let prot = match access {
            Access::ReadOnly => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        // Claim a slot before mapping, so the granter never sees "unmapped" while we map.
        let pid = std::process::id();
        let start = start_time(pid).unwrap_or(0);
        // Mappers that died without unmapping (a killed server, each time it is restarted)
        // leave their slots claimed until someone sweeps them: when none is free, we do.
        let slot = claim_slot(&ctl_map, pid)
            .or_else(|| {
                sweep_slots(&ctl_map);
                claim_slot(&ctl_map, pid)
            })
            .ok_or_else(|| GrantError::BadAttachments("no free mapper slot".into()))?;
        ctl_map
            .atomic_u64(slot_off(slot) + 8)
            .store(start, Ordering::Release);
        // Freed on every way out, mapped or not.
        let slot = Slot { ctl_map, slot };
        let view = Mmap::map(
            data.as_fd(),
            refs.len() * PAGE_SIZE,
            first as usize * PAGE_SIZE,
            prot,
        )?;
        let writable = access == Access::ReadWrite;
        Ok(ShmMapping {
            granter,
            access,
            pages: refs.len(),
            // SAFETY: `view` maps these bytes with `prot` (writable exactly when `writable`),
            // and the handle owns it through `MappedPages`.
            mem: unsafe {
                memory_over(
                    view.base,
                    view.len,
                    writable,
                    MappedPages {
                        _view: view,
                        _slot: slot,
                    },
                )
            },
        })
    }

    fn notifier(&self, _peer: DomId) -> Result<ShmNotifier, GrantError> {
        let (sock, peer_end) = socket_pair_stream()?;
        Ok(ShmNotifier {
            sock,
            peer_end: Some(peer_end),
            gone: false.into(),
        })
    }

    fn bind_notifier(
        &self,
        _peer: DomId,
        port: u32,
        attach: &[OwnedFd],
    ) -> Result<ShmNotifier, GrantError> {
        if port != 0 {
            return Err(GrantError::BadNotifier(format!(
                "shm notifiers have port 0, got {port}"
            )));
        }
        let [end] = attach else {
            return Err(GrantError::BadNotifier(format!(
                "expected 1 socket, got {} descriptors",
                attach.len()
            )));
        };
        let domain = sockopt_int(end.as_fd(), libc::SO_DOMAIN);
        let kind = sockopt_int(end.as_fd(), libc::SO_TYPE);
        if domain != Some(libc::AF_UNIX) || kind != Some(libc::SOCK_STREAM) {
            return Err(GrantError::BadNotifier(
                "the doorbell is not a Unix stream socket".into(),
            ));
        }
        let sock = end.try_clone().map_err(|e| GrantError::Os {
            op: "dup",
            source: e,
        })?;
        Ok(ShmNotifier {
            sock,
            peer_end: None,
            gone: false.into(),
        })
    }
}

fn socket_pair_stream() -> Result<(OwnedFd, OwnedFd), GrantError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints; the result is checked.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(GrantError::last_os("socketpair"));
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An integer socket option of `fd`, or `None` when `fd` is not a socket.
fn sockopt_int(fd: BorrowedFd<'_>, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = core::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid out-parameters of the sizes given; the fd is valid.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&raw mut v).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// A doorbell between two processes: one end of a Unix stream socketpair. A ring is one byte
/// sent; the peer's ends of the pair carry nothing else.
///
/// Every send and receive passes `MSG_DONTWAIT`, so no call here can block whatever the peer
/// does to its own end or to the flags of a shared file description: a peer that never reads
/// fills its receive queue and further rings are dropped (it has rings pending already).
///
/// The side that must never wait on the peer creates the pair ([`GrantBackend::notifier`])
/// and hands the other end over ([`Notifier::take_attachments`]), so the peer never holds the
/// creator's end: on the control socket the server creates every app's doorbell. The binder
/// takes the creator's word for the pair (a creator could keep a copy of the end it sent).
#[derive(Debug)]
pub struct ShmNotifier {
    sock: OwnedFd,
    /// The creator's copy of the peer's end, until it is sent.
    peer_end: Option<OwnedFd>,
    /// The peer closed its end (seen by `drain`).
    gone: std::sync::atomic::AtomicBool,
}

impl ShmNotifier {
    /// Most bytes (rings) one `drain` consumes: rings merge, and a peer that rings faster
    /// than this leaves the descriptor readable for the next call.
    const DRAIN: usize = 256;

    /// Whether the peer closed its end of the doorbell (found by a `drain` or `wait`).
    pub fn peer_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    fn read_counter(&self) -> Result<bool, GrantError> {
        let mut buf = [0u8; Self::DRAIN];
        loop {
            // SAFETY: receiving at most `buf.len()` bytes into a local buffer from our socket.
            let r = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if r > 0 {
                return Ok(true);
            }
            if r == 0 {
                self.gone.store(true, Ordering::Relaxed);
                return Err(GrantError::BadNotifier(
                    "the peer closed its doorbell".into(),
                ));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(false),
                // The peer closed its end with rings of ours unread.
                Some(libc::ECONNRESET) => {
                    self.gone.store(true, Ordering::Relaxed);
                    return Err(GrantError::BadNotifier(
                        "the peer closed its doorbell".into(),
                    ));
                }
                _ => {
                    return Err(GrantError::Os {
                        op: "recv(doorbell)",
                        source: e,
                    });
                }
            }
        }
    }
}

impl AsRawFd for ShmNotifier {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl Notifier for ShmNotifier {
    fn notify(&self) -> Result<(), GrantError> {
        let v = 1u8;
        loop {
            // SAFETY: sending one byte from a local to our socket.
            let r = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    (&raw const v).cast(),
                    1,
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if r == 1 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                // The peer's queue is full: it has plenty of rings pending already.
                Some(libc::EAGAIN) => return Ok(()),
                Some(libc::EPIPE) | Some(libc::ECONNRESET) => {
                    self.gone.store(true, Ordering::Relaxed);
                    return Err(GrantError::BadNotifier(
                        "the peer closed its doorbell".into(),
                    ));
                }
                _ => {
                    return Err(GrantError::Os {
                        op: "send(doorbell)",
                        source: e,
                    });
                }
            }
        }
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<bool, GrantError> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        loop {
            if self.read_counter()? {
                return Ok(true);
            }
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(GrantError::Os {
                        op: "poll",
                        source: e,
                    });
                }
            }
        }
    }

    fn drain(&self) -> Result<bool, GrantError> {
        self.read_counter()
    }

    fn port(&self) -> u32 {
        0
    }

    fn attachments(&self) -> Vec<BorrowedFd<'_>> {
        self.peer_end.iter().map(|f| f.as_fd()).collect()
    }

    fn take_attachments(&mut self) -> Vec<OwnedFd> {
        self.peer_end.take().into_iter().collect()
    }
}

/// Most descriptors one message may carry.
pub const MAX_FDS: usize = 16;

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec).
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), GrantError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(GrantError::last_os("socketpair"));
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sends one message of `bytes` with `fds` attached (`SCM_RIGHTS`) on a Unix socket.
pub fn send_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> Result<(), GrantError> {
    if fds.len() > MAX_FDS {
        return Err(GrantError::BadAttachments(format!(
            "{} descriptors in one message; the limit is {MAX_FDS}",
            fds.len()
        )));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut cbuf = [0u64; (MAX_FDS * 4 + 64) / 8];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: zeroed msghdr is valid; fields are filled below.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        let payload = (raw.len() * core::mem::size_of::<RawFd>()) as u32;
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points at `cbuf`, which is larger than `space` (at most
        // CMSG_SPACE(64) bytes) and 8-byte aligned, so the first header and its data fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            core::ptr::copy_nonoverlapping(
                raw.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                payload as usize,
            );
        }
    }
    loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(GrantError::Os {
                op: "sendmsg",
                source: e,
            });
        }
    }
}

/// Receives one message into `buf`; returns its length and the descriptors that came with it
/// (close-on-exec). A message with more than [`MAX_FDS`] descriptors, or truncated, is an
/// error and every descriptor received with it is closed. Length 0 with no descriptors means
/// the peer closed the socket.
pub fn recv_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), GrantError> {
    let mut cbuf = [0u64; (MAX_FDS * 4 + 64) / 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: zeroed msghdr is valid; fields are filled below.
    let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = core::mem::size_of_val(&cbuf) as _;
    let n = loop {
        // SAFETY: `msg` points at live buffers for the duration of the call.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(GrantError::Os {
                op: "recvmsg",
                source: e,
            });
        }
    };
    let mut fds = Vec::new();
    // Why this is sound: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk it within
    // msg_controllen, and each SCM_RIGHTS payload holds cmsg_len - CMSG_LEN(0) bytes of fds,
    // each of which is now ours to own.
    // SAFETY: the invariants stated just above hold here.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(c);
                for k in 0..bytes / core::mem::size_of::<RawFd>() {
                    let fd = data
                        .add(k * core::mem::size_of::<RawFd>())
                        .cast::<RawFd>()
                        .read_unaligned();
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(GrantError::BadAttachments(
            "message or its descriptors were truncated".into(),
        ));
    }
    Ok((n, fds))
}

/// Environment variable naming the socket descriptor a child started by [`spawn_connected`]
/// inherits.
pub const SOCKET_ENV: &str = "FERRITE_SOCKET_FD";

/// Starts `cmd` connected to this process by a `SOCK_SEQPACKET` socketpair: returns the
/// child and this end. The child finds its end with [`inherited_socket`]; only the child
/// inherits it (close-on-exec is cleared after the fork, in the child alone).
pub fn spawn_connected(
    cmd: &mut std::process::Command,
) -> Result<(std::process::Child, OwnedFd), GrantError> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = seqpacket_pair()?;
    let fd = theirs.as_raw_fd();
    cmd.env(SOCKET_ENV, fd.to_string());
    // SAFETY: the closure runs in the forked child before exec and calls only fcntl, which is
    // async-signal-safe; `fd` stays open in the parent (owned by `theirs`) until after spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| GrantError::Os {
        op: "spawn",
        source: e,
    })?;
    drop(theirs);
    Ok((child, ours))
}

/// In a child started by [`spawn_connected`]: its end of the socket, once (later calls and
/// processes not started that way get `None`). The descriptor is checked to be a socket and
/// made close-on-exec again.
pub fn inherited_socket() -> Option<OwnedFd> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let fd: RawFd = std::env::var(SOCKET_ENV).ok()?.parse().ok()?;
    if fd < 0 || TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: zeroed stat is a valid out-parameter; fstat only reads the descriptor number.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    // SAFETY: plain fcntl on the inherited descriptor.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: the parent passed this descriptor for us to own (spawn_connected), it is an open
    // socket (checked above), and TAKEN guarantees it is claimed only once in this process.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

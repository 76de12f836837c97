//! The grant-backend conformance suite: what every [`GrantBackend`] must do, run the same way
//! on `shm` (a unit test, anywhere) and on `xen` (in dom0 under the QEMU test, granting to
//! itself, since the suite runs in one process; the cross-domain case is the Xen test's).
//!
//! It lives beside the Xen backend because proving that Xen and `shm` behave alike is what it
//! is for; it names no backend type.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use crate::grant::{Access, DomId, Grant, GrantBackend, GrantError, GrantRef, Mapping, Notifier};
use crate::pool::PAGE_SIZE;

/// One check's outcome: its name and `Err(why)` when it failed.
pub type Outcome = (&'static str, Result<(), String>);

fn own(fds: Vec<BorrowedFd<'_>>) -> Result<Vec<OwnedFd>, String> {
    fds.into_iter()
        .map(|f| f.try_clone_to_owned().map_err(|e| format!("dup: {e}")))
        .collect()
}

fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

fn e2s(e: GrantError) -> String {
    e.to_string()
}

/// Runs every check: `g` grants as domain `gd`, `m` maps as domain `md` (they may be the same
/// backend and domain when the backend allows a domain to map its own grants).
pub fn run<B: GrantBackend>(g: &B, gd: DomId, m: &B, md: DomId) -> Vec<Outcome> {
    vec![
        ("grant, map and share both ways", share(g, gd, m, md)),
        ("mapped grants cannot end access", end_access(g, gd, m, md)),
        ("read-only grants stay read-only", read_only(g, gd, m, md)),
        ("bad references are refused", bad_refs(g, gd, m, md)),
        (
            "notifiers ring both ways and merge",
            notifiers(g, gd, m, md),
        ),
    ]
}

fn map_of<B: GrantBackend>(
    m: &B,
    gd: DomId,
    grant: &B::Grant,
    a: Access,
) -> Result<B::Mapping, GrantError> {
    let fds = own(grant.attachments()).map_err(GrantError::BadAttachments)?;
    m.map(gd, grant.refs(), a, &fds)
}

fn share<B: GrantBackend>(g: &B, gd: DomId, m: &B, md: DomId) -> Result<(), String> {
    let pages = 5;
    let grant = g.grant(md, pages, Access::ReadWrite).map_err(e2s)?;
    ensure(
        grant.pages() == pages && grant.region().len() == pages * PAGE_SIZE,
        || format!("grant region is {} bytes", grant.region().len()),
    )?;
    ensure(grant.peer() == md, || "grant names the wrong peer".into())?;
    let gr = grant.region();
    for p in 0..pages {
        let page: Vec<u8> = (0..PAGE_SIZE).map(|j| (31 * p + j) as u8).collect();
        gr.write(p * PAGE_SIZE, &page).map_err(|e| e.to_string())?;
    }
    let map = map_of(m, gd, &grant, Access::ReadWrite).map_err(e2s)?;
    ensure(map.pages() == pages && map.granter() == gd, || {
        format!("mapping has {} pages from {:?}", map.pages(), map.granter())
    })?;
    let mr = map.region();
    let mut buf = vec![0u8; PAGE_SIZE];
    for p in 0..pages {
        mr.read(p * PAGE_SIZE, &mut buf)
            .map_err(|e| e.to_string())?;
        let bad = (0..PAGE_SIZE)
            .filter(|&j| buf[j] != (31 * p + j) as u8)
            .count();
        ensure(bad == 0, || {
            format!("page {p}: {bad} bytes differ in the mapping")
        })?;
    }
    mr.write(pages * PAGE_SIZE - 6, b"mapper")
        .map_err(|e| e.to_string())?;
    let mut back = [0u8; 6];
    gr.read(pages * PAGE_SIZE - 6, &mut back)
        .map_err(|e| e.to_string())?;
    ensure(&back == b"mapper", || {
        "the granter does not see the mapper's write".into()
    })?;
    ensure(grant.is_mapped().map_err(e2s)?, || {
        "is_mapped is false while mapped".into()
    })
}

fn end_access<B: GrantBackend>(g: &B, gd: DomId, m: &B, md: DomId) -> Result<(), String> {
    let grant = g.grant(md, 2, Access::ReadWrite).map_err(e2s)?;
    ensure(!grant.is_mapped().map_err(e2s)?, || {
        "mapped before anyone mapped".into()
    })?;
    let map = map_of(m, gd, &grant, Access::ReadWrite).map_err(e2s)?;
    let grant = match grant.end_access() {
        Ok(()) => return Err("end_access succeeded while mapped".into()),
        Err((g, GrantError::StillMapped { .. })) => g,
        Err((_, e)) => return Err(format!("end_access failed oddly: {e}")),
    };
    drop(map);
    ensure(!grant.is_mapped().map_err(e2s)?, || {
        "still mapped after the mapping dropped".into()
    })?;
    grant.end_access().map_err(|(_, e)| e.to_string())
}

fn read_only<B: GrantBackend>(g: &B, gd: DomId, m: &B, md: DomId) -> Result<(), String> {
    let grant = g.grant(md, 1, Access::ReadOnly).map_err(e2s)?;
    grant
        .region()
        .write(0, b"granter")
        .map_err(|e| e.to_string())?;
    match map_of(m, gd, &grant, Access::ReadWrite) {
        Err(GrantError::ReadOnly) => {}
        Err(e) => {
            return Err(format!(
                "writable map of a read-only grant: {e}, not ReadOnly"
            ));
        }
        Ok(_) => return Err("writable map of a read-only grant succeeded".into()),
    }
    let map = map_of(m, gd, &grant, Access::ReadOnly).map_err(e2s)?;
    let r = map.region();
    let mut b = [0u8; 7];
    r.read(0, &mut b).map_err(|e| e.to_string())?;
    ensure(&b == b"granter", || {
        "read-only mapping reads wrong bytes".into()
    })?;
    ensure(!r.is_writable() && r.write(0, b"x").is_err(), || {
        "a read-only mapping accepted a write".into()
    })
}

fn bad_refs<B: GrantBackend>(g: &B, gd: DomId, m: &B, md: DomId) -> Result<(), String> {
    let grant = g.grant(md, 2, Access::ReadWrite).map_err(e2s)?;
    let fds = own(grant.attachments())?;
    match m.map(gd, &[], Access::ReadWrite, &fds) {
        Err(GrantError::PageCount { .. } | GrantError::BadRefs(_)) => {}
        other => return Err(format!("empty references: {:?}", other.map(|_| ()))),
    }
    let mut refs: Vec<GrantRef> = grant.refs().to_vec();
    if let Some(last) = refs.last_mut() {
        *last = GrantRef(0x7fff_fff0);
    }
    match m.map(gd, &refs, Access::ReadWrite, &fds) {
        Err(GrantError::BadRefs(_)) => {}
        other => return Err(format!("a forged reference: {:?}", other.map(|_| ()))),
    }
    ensure(!grant.is_mapped().map_err(e2s)?, || {
        "a refused map left the grant mapped".into()
    })
}

fn notifiers<B: GrantBackend>(g: &B, gd: DomId, m: &B, md: DomId) -> Result<(), String> {
    let a = g.notifier(md).map_err(e2s)?;
    let fds = own(a.attachments())?;
    let b = m.bind_notifier(gd, a.port(), &fds).map_err(e2s)?;
    let short = Some(Duration::from_millis(50));
    // Xen raises one event on the binder's port at bind time. The backend swallows it, but on a
    // loaded host it can arrive after the bind returned: let it settle and drain it once. After
    // that, nothing may wake either side without a ring.
    std::thread::sleep(Duration::from_millis(100));
    a.drain().map_err(e2s)?;
    b.drain().map_err(e2s)?;
    ensure(
        !a.wait(short).map_err(e2s)? && !b.wait(short).map_err(e2s)?,
        || "a notifier woke without a ring".into(),
    )?;
    a.notify().map_err(e2s)?;
    ensure(b.wait(Some(Duration::from_secs(5))).map_err(e2s)?, || {
        "a→b ring lost".into()
    })?;
    b.notify().map_err(e2s)?;
    ensure(a.wait(Some(Duration::from_secs(5))).map_err(e2s)?, || {
        "b→a ring lost".into()
    })?;
    for _ in 0..3 {
        a.notify().map_err(e2s)?;
    }
    ensure(b.wait(Some(Duration::from_secs(5))).map_err(e2s)?, || {
        "merged ring lost".into()
    })?;
    std::thread::sleep(Duration::from_millis(20));
    b.drain().map_err(e2s)?;
    ensure(!b.drain().map_err(e2s)?, || {
        "rings did not merge: still pending after drain".into()
    })?;
    ensure(!b.wait(Some(Duration::ZERO)).map_err(e2s)?, || {
        "wait(0) saw a ring".into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shm::ShmBackend;

    #[test]
    fn shm_passes_the_suite() {
        let g = ShmBackend::new(DomId(1));
        let m = ShmBackend::new(DomId(2));
        let failed: Vec<_> = run(&g, DomId(1), &m, DomId(2))
            .into_iter()
            .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }

    /// The same suite on Xen, where this test runs in a Xen domain with the devices loaded
    /// (dom0 under the QEMU test runs it through `xen_probe suite`).
    #[test]
    fn xen_passes_the_suite_where_xen_runs() {
        let b = match crate::xen::XenBackend::open() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        // Outside dom0 the suite needs a peer domain; dom0 grants to itself.
        let caps = std::fs::read_to_string("/proc/xen/capabilities").unwrap_or_default();
        if !caps.contains("control_d") {
            eprintln!("skipping: not dom0");
            return;
        }
        let me = DomId(0);
        let failed: Vec<_> = run(&b, me, &b, me)
            .into_iter()
            .filter_map(|(n, r)| r.err().map(|e| format!("{n}: {e}")))
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}

//! The Linux uapi of `/dev/xen/{gntalloc,gntdev,evtchn}` as `zerocopy` types.
//!
//! Each structure has the layout of its C twin in the kernel's `include/uapi/xen/*.h`, and
//! each ioctl number is computed from the structure's size with the kernel's `_IOC` formula,
//! exactly as the C macros do. The compile-time assertions below pin both to the values the
//! Xen 4.17 / Linux 6.1 ABI has; the `uapi_matches_kernel_headers` test compiles the
//! kernel's own headers with the system C compiler and compares every size and number.
//!
//! The variable-length requests (`MAP_GRANT_REF`, `ALLOC_GREF`) are declared with one array
//! element, as in C; the ioctl number encodes that size (24 bytes). The request actually
//! passed is the 16-byte header followed by `count` elements: see [`super::dev`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `_IOC_NONE`: the direction bits of every Xen device ioctl (the drivers copy both ways
/// themselves).
pub const IOC_NONE: u32 = 0;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;

/// The kernel's `_IOC(dir, type, nr, size)` (asm-generic/ioctl.h, used on x86 and arm64).
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `struct ioctl_gntdev_grant_ref`: one grant to map.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntdevGrantRef {
    /// Domain that granted the page.
    pub domid: u32,
    /// Its grant reference.
    pub gref: u32,
}

/// The fixed head of `struct ioctl_gntdev_map_grant_ref`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntdevMapHeader {
    /// IN: number of grants that follow.
    pub count: u32,
    /// Padding, zero.
    pub pad: u32,
    /// OUT: the offset to pass to `mmap`.
    pub index: u64,
}

/// `struct ioctl_gntdev_map_grant_ref` as declared (one trailing element).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntdevMapGrantRef {
    /// The fixed head.
    pub head: GntdevMapHeader,
    /// The first (declared) element of the variable array.
    pub refs: [GntdevGrantRef; 1],
}

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntdevUnmapGrantRef {
    /// The offset `MAP_GRANT_REF` returned.
    pub index: u64,
    /// Pages to unmap.
    pub count: u32,
    /// Padding, zero.
    pub pad: u32,
}

/// `struct ioctl_gntdev_unmap_notify` and `struct ioctl_gntalloc_unmap_notify` (identical).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct UnmapNotify {
    /// Offset (in the device's mmap offset space) of the byte to clear.
    pub index: u64,
    /// [`UNMAP_NOTIFY_CLEAR_BYTE`] and/or [`UNMAP_NOTIFY_SEND_EVENT`].
    pub action: u32,
    /// Event channel port to notify.
    pub event_channel_port: u32,
}

/// The fixed head of `struct ioctl_gntalloc_alloc_gref`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntallocAllocHeader {
    /// IN: the domain given access.
    pub domid: u16,
    /// IN: [`GNTALLOC_FLAG_WRITABLE`] or 0.
    pub flags: u16,
    /// IN: pages to allocate.
    pub count: u32,
    /// OUT: the offset to pass to `mmap`.
    pub index: u64,
}

/// `struct ioctl_gntalloc_alloc_gref` as declared (one trailing element).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntallocAllocGref {
    /// The fixed head.
    pub head: GntallocAllocHeader,
    /// OUT: the first (declared) element of the grant reference array.
    pub gref_ids: [u32; 1],
    /// Tail padding the C compiler adds (the struct is 8-byte aligned).
    pub pad: u32,
}

/// `struct ioctl_gntalloc_dealloc_gref`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GntallocDeallocGref {
    /// The offset `ALLOC_GREF` returned.
    pub index: u64,
    /// Pages to release.
    pub count: u32,
    /// Tail padding the C compiler adds.
    pub pad: u32,
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// The peer domain.
    pub remote_domain: u32,
    /// The peer's unbound port.
    pub remote_port: u32,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindUnboundPort {
    /// The domain allowed to bind the new port.
    pub remote_domain: u32,
}

/// `struct ioctl_evtchn_notify` and `struct ioctl_evtchn_unbind` (one port).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnPortArg {
    /// The local port.
    pub port: u32,
}

/// gntalloc flag: the grantee may map the pages writable.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;
/// Unmap-notify action: clear the byte at `index` when the mapping goes away.
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// Unmap-notify action: notify `event_channel_port` when the mapping goes away.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// Bytes of the fixed head of the two variable-length requests.
pub const VAR_HEAD: usize = 16;
const _: () = assert!(size_of::<GntdevMapHeader>() == VAR_HEAD);
const _: () = assert!(size_of::<GntallocAllocHeader>() == VAR_HEAD);
const _: () = assert!(core::mem::offset_of!(GntdevMapGrantRef, refs) == VAR_HEAD);
const _: () = assert!(core::mem::offset_of!(GntallocAllocGref, gref_ids) == VAR_HEAD);

/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: u32 = ioc(IOC_NONE, b'G', 0, size_of::<GntdevMapGrantRef>());
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: u32 =
    ioc(IOC_NONE, b'G', 1, size_of::<GntdevUnmapGrantRef>());
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: u32 = ioc(IOC_NONE, b'G', 7, size_of::<UnmapNotify>());
/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub const IOCTL_GNTALLOC_ALLOC_GREF: u32 = ioc(IOC_NONE, b'G', 5, size_of::<GntallocAllocGref>());
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub const IOCTL_GNTALLOC_DEALLOC_GREF: u32 =
    ioc(IOC_NONE, b'G', 6, size_of::<GntallocDeallocGref>());
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: u32 = ioc(IOC_NONE, b'G', 7, size_of::<UnmapNotify>());
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: u32 =
    ioc(IOC_NONE, b'E', 1, size_of::<EvtchnBindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: u32 =
    ioc(IOC_NONE, b'E', 2, size_of::<EvtchnBindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND`.
pub const IOCTL_EVTCHN_UNBIND: u32 = ioc(IOC_NONE, b'E', 3, size_of::<EvtchnPortArg>());
/// `IOCTL_EVTCHN_NOTIFY`.
pub const IOCTL_EVTCHN_NOTIFY: u32 = ioc(IOC_NONE, b'E', 4, size_of::<EvtchnPortArg>());

// The ABI as Xen 4.17 on Linux 6.1 has it (verified there); a layout change above fails the
// build here rather than corrupting a request at run time.
const _: () = assert!(IOCTL_GNTDEV_MAP_GRANT_REF == 0x18_4700);
const _: () = assert!(IOCTL_GNTDEV_UNMAP_GRANT_REF == 0x10_4701);
const _: () = assert!(IOCTL_GNTDEV_SET_UNMAP_NOTIFY == 0x10_4707);
const _: () = assert!(IOCTL_GNTALLOC_ALLOC_GREF == 0x18_4705);
const _: () = assert!(IOCTL_GNTALLOC_DEALLOC_GREF == 0x10_4706);
const _: () = assert!(IOCTL_EVTCHN_BIND_UNBOUND_PORT == 0x4_4502);
const _: () = assert!(IOCTL_EVTCHN_BIND_INTERDOMAIN == 0x8_4501);
const _: () = assert!(IOCTL_EVTCHN_NOTIFY == 0x4_4504);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Every (name, Rust value) pair the C program below prints, in order.
    fn rust_values() -> Vec<(&'static str, u64)> {
        vec![
            (
                "sizeof_gntdev_grant_ref",
                size_of::<GntdevGrantRef>() as u64,
            ),
            (
                "sizeof_gntdev_map_grant_ref",
                size_of::<GntdevMapGrantRef>() as u64,
            ),
            ("offsetof_gntdev_map_refs", VAR_HEAD as u64),
            ("offsetof_gntdev_map_index", 8),
            (
                "sizeof_gntdev_unmap_grant_ref",
                size_of::<GntdevUnmapGrantRef>() as u64,
            ),
            (
                "sizeof_gntdev_unmap_notify",
                size_of::<UnmapNotify>() as u64,
            ),
            (
                "sizeof_gntalloc_alloc_gref",
                size_of::<GntallocAllocGref>() as u64,
            ),
            ("offsetof_gntalloc_gref_ids", VAR_HEAD as u64),
            ("offsetof_gntalloc_index", 8),
            (
                "sizeof_gntalloc_dealloc_gref",
                size_of::<GntallocDeallocGref>() as u64,
            ),
            (
                "sizeof_gntalloc_unmap_notify",
                size_of::<UnmapNotify>() as u64,
            ),
            (
                "sizeof_evtchn_bind_interdomain",
                size_of::<EvtchnBindInterdomain>() as u64,
            ),
            (
                "sizeof_evtchn_bind_unbound_port",
                size_of::<EvtchnBindUnboundPort>() as u64,
            ),
            ("sizeof_evtchn_notify", size_of::<EvtchnPortArg>() as u64),
            (
                "IOCTL_GNTDEV_MAP_GRANT_REF",
                IOCTL_GNTDEV_MAP_GRANT_REF.into(),
            ),
            (
                "IOCTL_GNTDEV_UNMAP_GRANT_REF",
                IOCTL_GNTDEV_UNMAP_GRANT_REF.into(),
            ),
            (
                "IOCTL_GNTDEV_SET_UNMAP_NOTIFY",
                IOCTL_GNTDEV_SET_UNMAP_NOTIFY.into(),
            ),
            (
                "IOCTL_GNTALLOC_ALLOC_GREF",
                IOCTL_GNTALLOC_ALLOC_GREF.into(),
            ),
            (
                "IOCTL_GNTALLOC_DEALLOC_GREF",
                IOCTL_GNTALLOC_DEALLOC_GREF.into(),
            ),
            (
                "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY",
                IOCTL_GNTALLOC_SET_UNMAP_NOTIFY.into(),
            ),
            (
                "IOCTL_EVTCHN_BIND_INTERDOMAIN",
                IOCTL_EVTCHN_BIND_INTERDOMAIN.into(),
            ),
            (
                "IOCTL_EVTCHN_BIND_UNBOUND_PORT",
                IOCTL_EVTCHN_BIND_UNBOUND_PORT.into(),
            ),
            ("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND.into()),
            ("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY.into()),
            ("GNTALLOC_FLAG_WRITABLE", GNTALLOC_FLAG_WRITABLE.into()),
            ("UNMAP_NOTIFY_CLEAR_BYTE", UNMAP_NOTIFY_CLEAR_BYTE.into()),
            ("UNMAP_NOTIFY_SEND_EVENT", UNMAP_NOTIFY_SEND_EVENT.into()),
        ]
    }

    const C_PROBE: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
typedef uint32_t grant_ref_t;
typedef uint16_t domid_t;
#include <xen/gntdev.h>
#include <xen/gntalloc.h>
#include <xen/evtchn.h>
#define P(n, v) printf("%s %llu\n", n, (unsigned long long)(v))
int main(void) {
  P("sizeof_gntdev_grant_ref", sizeof(struct ioctl_gntdev_grant_ref));
  P("sizeof_gntdev_map_grant_ref", sizeof(struct ioctl_gntdev_map_grant_ref));
  P("offsetof_gntdev_map_refs", offsetof(struct ioctl_gntdev_map_grant_ref, refs));
  P("offsetof_gntdev_map_index", offsetof(struct ioctl_gntdev_map_grant_ref, index));
  P("sizeof_gntdev_unmap_grant_ref", sizeof(struct ioctl_gntdev_unmap_grant_ref));
  P("sizeof_gntdev_unmap_notify", sizeof(struct ioctl_gntdev_unmap_notify));
  P("sizeof_gntalloc_alloc_gref", sizeof(struct ioctl_gntalloc_alloc_gref));
  P("offsetof_gntalloc_gref_ids", offsetof(struct ioctl_gntalloc_alloc_gref, gref_ids));
  P("offsetof_gntalloc_index", offsetof(struct ioctl_gntalloc_alloc_gref, index));
  P("sizeof_gntalloc_dealloc_gref", sizeof(struct ioctl_gntalloc_dealloc_gref));
  P("sizeof_gntalloc_unmap_notify", sizeof(struct ioctl_gntalloc_unmap_notify));
  P("sizeof_evtchn_bind_interdomain", sizeof(struct ioctl_evtchn_bind_interdomain));
  P("sizeof_evtchn_bind_unbound_port", sizeof(struct ioctl_evtchn_bind_unbound_port));
  P("sizeof_evtchn_notify", sizeof(struct ioctl_evtchn_notify));
  P("IOCTL_GNTDEV_MAP_GRANT_REF", IOCTL_GNTDEV_MAP_GRANT_REF);
  P("IOCTL_GNTDEV_UNMAP_GRANT_REF", IOCTL_GNTDEV_UNMAP_GRANT_REF);
  P("IOCTL_GNTDEV_SET_UNMAP_NOTIFY", IOCTL_GNTDEV_SET_UNMAP_NOTIFY);
  P("IOCTL_GNTALLOC_ALLOC_GREF", IOCTL_GNTALLOC_ALLOC_GREF);
  P("IOCTL_GNTALLOC_DEALLOC_GREF", IOCTL_GNTALLOC_DEALLOC_GREF);
  P("IOCTL_GNTALLOC_SET_UNMAP_NOTIFY", IOCTL_GNTALLOC_SET_UNMAP_NOTIFY);
  P("IOCTL_EVTCHN_BIND_INTERDOMAIN", IOCTL_EVTCHN_BIND_INTERDOMAIN);
  P("IOCTL_EVTCHN_BIND_UNBOUND_PORT", IOCTL_EVTCHN_BIND_UNBOUND_PORT);
  P("IOCTL_EVTCHN_UNBIND", IOCTL_EVTCHN_UNBIND);
  P("IOCTL_EVTCHN_NOTIFY", IOCTL_EVTCHN_NOTIFY);
  P("GNTALLOC_FLAG_WRITABLE", GNTALLOC_FLAG_WRITABLE);
  P("UNMAP_NOTIFY_CLEAR_BYTE", UNMAP_NOTIFY_CLEAR_BYTE);
  P("UNMAP_NOTIFY_SEND_EVENT", UNMAP_NOTIFY_SEND_EVENT);
  return 0;
}
"#;

    /// The kernel's own uapi headers (linux-libc-dev), compiled by the system C compiler,
    /// agree with every size, offset and ioctl number above.
    #[test]
    fn uapi_matches_kernel_headers() {
        let have = Path::new("/usr/include/xen/gntdev.h").exists()
            && Command::new("cc").arg("--version").output().is_ok();
        if !have {
            assert!(
                std::env::var_os("FERRITE_E2E").is_none(),
                "FERRITE_E2E is set but /usr/include/xen/gntdev.h (linux-libc-dev) or cc is missing"
            );
            eprintln!("skipping: needs cc and the kernel uapi headers in /usr/include/xen");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ferrite-xen-uapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let src = dir.join("probe.c");
        let exe = dir.join("probe");
        std::fs::write(&src, C_PROBE).expect("write probe.c");
        let cc = Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .expect("run cc");
        assert!(
            cc.status.success(),
            "cc failed: {}",
            String::from_utf8_lossy(&cc.stderr)
        );
        let out = Command::new(&exe).output().expect("run probe");
        let _ = std::fs::remove_dir_all(&dir);
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let c: Vec<(String, u64)> = text
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').expect("name value");
                (k.to_string(), v.parse().expect("number"))
            })
            .collect();
        let rust = rust_values();
        assert_eq!(c.len(), rust.len(), "probe printed {} values", c.len());
        for ((cn, cv), (rn, rv)) in c.iter().zip(rust) {
            assert_eq!(cn, rn);
            assert_eq!(
                *cv, rv,
                "{rn}: kernel header says {cv:#x}, Ferrite has {rv:#x}"
            );
        }
    }

    /// The `_IOC` formula reproduces numbers independently known from the kernel ABI.
    #[test]
    fn ioc_formula() {
        // IOCTL_EVTCHN_RESET is _IOC(_IOC_NONE, 'E', 5, 0).
        assert_eq!(ioc(IOC_NONE, b'E', 5, 0), 0x4505);
        // IOCTL_GNTDEV_SET_MAX_GRANTS is _IOC(_IOC_NONE, 'G', 3, 4).
        assert_eq!(ioc(IOC_NONE, b'G', 3, 4), 0x4_4703);
        // A read direction (2) lands in the top two bits: BLKGETSIZE64 is
        // _IOR(0x12, 114, size_t) = 0x80081272.
        assert_eq!(ioc(2, 0x12, 114, 8), 0x8008_1272);
    }
}

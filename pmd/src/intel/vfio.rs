//! Reaching the device through VFIO: the IOMMU group, a container with the type-1 IOMMU,
//! the device's BAR0 region, bus mastering through its config region, and DMA mappings
//! made with `VFIO_IOMMU_MAP_DMA` (IOVA = the process's virtual address).
//!
//! With an IOMMU the device can reach exactly the ranges mapped here: pinning is the
//! kernel's job (the mapping pins the pages) and a stray DMA faults instead of landing in
//! someone else's memory. In VFIO's no-IOMMU mode (`/dev/vfio/noiommu-N`, a kernel built
//! with `CONFIG_VFIO_NOIOMMU`) there is no translation: DMA addresses are physical, from
//! `/proc/self/pagemap`, exactly as on the sysfs path.
//!
//! ioctl numbers and structure layouts are those of `<linux/vfio.h>` (type `';'`, base 100).

use core::ptr::NonNull;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::IntelError;
use super::dma::{IovaMap, Pagemap};
use super::pci::PciDevice;
use super::regs::Bar;

const VFIO_API_VERSION: libc::c_int = 0;
const fn io(nr: u64) -> u64 {
    (b';' as u64) << 8 | nr
}
const GET_API_VERSION: u64 = io(100);
const CHECK_EXTENSION: u64 = io(101);
const SET_IOMMU: u64 = io(102);
const GROUP_GET_STATUS: u64 = io(103);
const GROUP_SET_CONTAINER: u64 = io(104);
const GROUP_GET_DEVICE_FD: u64 = io(106);
const DEVICE_GET_REGION_INFO: u64 = io(108);
const IOMMU_MAP_DMA: u64 = io(113);
const IOMMU_UNMAP_DMA: u64 = io(114);
const TYPE1_IOMMU: libc::c_ulong = 1;
const TYPE1V2_IOMMU: libc::c_ulong = 3;
const NOIOMMU_IOMMU: libc::c_ulong = 8;
const GROUP_FLAGS_VIABLE: u32 = 1;
const BAR0_REGION: u32 = 0;
const CONFIG_REGION: u32 = 7;
const DMA_MAP_READ: u32 = 1;
const DMA_MAP_WRITE: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}
const _: () = assert!(core::mem::size_of::<RegionInfo>() == 32);

#[repr(C)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}
const _: () = assert!(core::mem::size_of::<DmaMap>() == 32);

#[repr(C)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}
const _: () = assert!(core::mem::size_of::<DmaUnmap>() == 24);

fn err(what: &str) -> IntelError {
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        IntelError::NoPermission(format!("VFIO {what}: {e}"))
    } else {
        IntelError::Vfio(format!("{what}: {e}"))
    }
}

/// An open VFIO device: its container (the IOMMU context), group and device fds.
#[derive(Debug)]
pub struct Vfio {
    container: OwnedFd,
    _group: OwnedFd,
    device: OwnedFd,
    noiommu: bool,
}

impl Vfio {
    /// Opens `dev` (bound to `vfio-pci`) through its IOMMU group.
    pub fn open(dev: &PciDevice) -> Result<Vfio, IntelError> {
        let link = std::fs::read_link(dev.dir.join("iommu_group")).map_err(|_| {
            IntelError::Vfio(format!(
                "{} has no IOMMU group (boot with intel_iommu=on / amd_iommu=on, or use a kernel with VFIO no-IOMMU mode)",
                dev.addr
            ))
        })?;
        let group = link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let container = open_rw("/dev/vfio/vfio")?;
        // SAFETY: GET_API_VERSION takes no argument and returns an int.
        let v = unsafe { libc::ioctl(container.as_raw_fd(), GET_API_VERSION as _) };
        if v != VFIO_API_VERSION {
            return Err(IntelError::Vfio(format!("unknown VFIO API version {v}")));
        }
        let (group_fd, noiommu) = match open_rw(&format!("/dev/vfio/{group}")) {
            Ok(f) => (f, false),
            Err(e) => match open_rw(&format!("/dev/vfio/noiommu-{group}")) {
                Ok(f) => (f, true),
                Err(_) => return Err(e),
            },
        };
        let mut st = GroupStatus {
            argsz: core::mem::size_of::<GroupStatus>() as u32,
            ..GroupStatus::default()
        };
        // SAFETY: the argument is a live, correctly sized vfio_group_status.
        if unsafe { libc::ioctl(group_fd.as_raw_fd(), GROUP_GET_STATUS as _, &mut st) } < 0 {
            return Err(err("GROUP_GET_STATUS"));
        }
        if st.flags & GROUP_FLAGS_VIABLE == 0 {
            return Err(IntelError::Vfio(format!(
                "IOMMU group {group} is not viable: bind every device in it to vfio-pci"
            )));
        }
        let cfd: libc::c_int = container.as_raw_fd();
        // SAFETY: the argument points to a live int holding the container fd.
        if unsafe { libc::ioctl(group_fd.as_raw_fd(), GROUP_SET_CONTAINER as _, &cfd) } < 0 {
            return Err(err("GROUP_SET_CONTAINER"));
        }
        let iommu = if noiommu {
            NOIOMMU_IOMMU
        } else {
            // SAFETY: CHECK_EXTENSION takes an integer argument.
            let v2 = unsafe { libc::ioctl(cfd, CHECK_EXTENSION as _, TYPE1V2_IOMMU) } > 0;
            if v2 { TYPE1V2_IOMMU } else { TYPE1_IOMMU }
        };
        // SAFETY: SET_IOMMU takes an integer argument.
        if unsafe { libc::ioctl(cfd, SET_IOMMU as _, iommu) } < 0 {
            return Err(err("SET_IOMMU"));
        }
        let name = std::ffi::CString::new(dev.addr.clone())
            .map_err(|_| IntelError::Vfio("PCI address with a NUL byte".into()))?;
        // SAFETY: the argument is a NUL-terminated string that outlives the call.
        let d = unsafe {
            libc::ioctl(
                group_fd.as_raw_fd(),
                GROUP_GET_DEVICE_FD as _,
                name.as_ptr(),
            )
        };
        if d < 0 {
            return Err(err("GROUP_GET_DEVICE_FD"));
        }
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let device = unsafe { OwnedFd::from_raw_fd(d) };
        Ok(Vfio {
            container,
            _group: group_fd,
            device,
            noiommu,
        })
    }

    /// Whether this is VFIO's no-IOMMU mode (physical DMA addresses).
    pub fn noiommu(&self) -> bool {
        self.noiommu
    }

    fn region(&self, index: u32) -> Result<RegionInfo, IntelError> {
        let mut r = RegionInfo {
            argsz: core::mem::size_of::<RegionInfo>() as u32,
            index,
            ..RegionInfo::default()
        };
        // SAFETY: the argument is a live, correctly sized vfio_region_info.
        if unsafe { libc::ioctl(self.device.as_raw_fd(), DEVICE_GET_REGION_INFO as _, &mut r) } < 0
        {
            return Err(err("DEVICE_GET_REGION_INFO"));
        }
        Ok(r)
    }

    /// Maps BAR0.
    pub fn map_bar0(&self) -> Result<Bar, IntelError> {
        let r = self.region(BAR0_REGION)?;
        Bar::map(self.device.as_fd(), r.offset, r.size as usize)
            .map_err(|e| IntelError::Vfio(format!("mmap BAR0: {e}")))
    }

    /// Sets Memory Space and Bus Master Enable through the config region.
    pub fn enable_bus_master(&self) -> Result<(), IntelError> {
        let r = self.region(CONFIG_REGION)?;
        // SAFETY: dup of an fd we own; the File closes only the duplicate.
        let dup = unsafe { libc::dup(self.device.as_raw_fd()) };
        if dup < 0 {
            return Err(err("dup"));
        }
        // SAFETY: `dup` is a fresh fd owned by nothing else.
        let f = unsafe { File::from_raw_fd(dup) };
        let mut cmd = [0u8; 2];
        f.read_exact_at(&mut cmd, r.offset + 4)
            .map_err(|e| IntelError::Vfio(format!("read PCI command: {e}")))?;
        let v = u16::from_le_bytes(cmd) | (1 << 1) | (1 << 2);
        f.write_all_at(&v.to_le_bytes(), r.offset + 4)
            .map_err(|e| IntelError::Vfio(format!("write PCI command: {e}")))
    }

    /// The DMA mapper for this container.
    pub fn iova_map(&self) -> Result<VfioMap, IntelError> {
        let c = self
            .container
            .try_clone()
            .map_err(|e| IntelError::Vfio(format!("dup container: {e}")))?;
        Ok(VfioMap {
            container: c,
            noiommu: self.noiommu,
        })
    }
}

fn open_rw(path: &str) -> Result<OwnedFd, IntelError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| IntelError::io(std::path::Path::new(path), e))
}

/// DMA mappings through a VFIO container: `VFIO_IOMMU_MAP_DMA` with IOVA = virtual address,
/// or pagemap physical addresses in no-IOMMU mode.
#[derive(Debug)]
pub struct VfioMap {
    container: OwnedFd,
    noiommu: bool,
}

impl IovaMap for VfioMap {
    fn map(&self, virt: NonNull<u8>, len: usize, page: usize) -> Result<Vec<u64>, IntelError> {
        if self.noiommu {
            return Pagemap.map(virt, len, page);
        }
        let va = virt.as_ptr() as u64;
        let m = DmaMap {
            argsz: core::mem::size_of::<DmaMap>() as u32,
            flags: DMA_MAP_READ | DMA_MAP_WRITE,
            vaddr: va,
            iova: va,
            size: len as u64,
        };
        // SAFETY: the argument is a live vfio_iommu_type1_dma_map; the kernel pins and maps
        // the range, which the caller owns and keeps mapped until `unmap`.
        if unsafe { libc::ioctl(self.container.as_raw_fd(), IOMMU_MAP_DMA as _, &m) } < 0 {
            return Err(err("IOMMU_MAP_DMA"));
        }
        Ok((0..len).step_by(page).map(|o| va + o as u64).collect())
    }

    fn physical(&self) -> bool {
        self.noiommu
    }

    fn unmap(&self, virt: NonNull<u8>, len: usize) {
        if self.noiommu {
            return;
        }
        let u = DmaUnmap {
            argsz: core::mem::size_of::<DmaUnmap>() as u32,
            flags: 0,
            iova: virt.as_ptr() as u64,
            size: len as u64,
        };
        // SAFETY: the argument is a live vfio_iommu_type1_dma_unmap.
        unsafe { libc::ioctl(self.container.as_raw_fd(), IOMMU_UNMAP_DMA as _, &u) };
    }
}

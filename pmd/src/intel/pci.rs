//! Reaching a PCI device from user space: find it in sysfs, make sure no kernel driver owns
//! it, map BAR0 and turn on bus mastering.
//!
//! Two ways in: sysfs `resource0` (no IOMMU; root), or VFIO (see [`super::vfio`]).

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::IntelError;
use super::regs::Bar;

/// Intel's PCI vendor id.
pub const VENDOR_INTEL: u16 = 0x8086;

/// A PCI device as sysfs shows it.
#[derive(Debug, Clone)]
pub struct PciDevice {
    /// Domain:bus:device.function, e.g. `0000:00:03.0`.
    pub addr: String,
    /// Its sysfs directory.
    pub dir: PathBuf,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
}

fn read_hex(path: &Path) -> Result<u16, IntelError> {
    let s = fs::read_to_string(path).map_err(|e| IntelError::io(path, e))?;
    u16::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .map_err(|_| IntelError::Io(format!("{}: not a hex id: {s:?}", path.display())))
}

impl PciDevice {
    /// Looks the device up under `/sys/bus/pci/devices`.
    pub fn find(addr: &str) -> Result<PciDevice, IntelError> {
        Self::find_in(Path::new("/sys/bus/pci/devices"), addr)
    }

    /// Looks the device up under `root` (a sysfs devices directory).
    pub fn find_in(root: &Path, addr: &str) -> Result<PciDevice, IntelError> {
        // Accept the short form bus:dev.fn as lspci prints it.
        let addr = if addr.matches(':').count() == 1 {
            format!("0000:{addr}")
        } else {
            addr.to_string()
        };
        if addr.contains('/') || addr.contains("..") {
            return Err(IntelError::NotFound(addr));
        }
        let dir = root.join(&addr);
        if !dir.is_dir() {
            return Err(IntelError::NotFound(addr));
        }
        let vendor = read_hex(&dir.join("vendor"))?;
        let device = read_hex(&dir.join("device"))?;
        Ok(PciDevice {
            addr,
            dir,
            vendor,
            device,
        })
    }

    /// The kernel driver bound to the device, if any.
    pub fn driver(&self) -> Option<String> {
        let link = fs::read_link(self.dir.join("driver")).ok()?;
        Some(link.file_name()?.to_string_lossy().into_owned())
    }

    /// Refuses a device a kernel driver (other than `allowed`) owns, or unbinds it when
    /// `unbind` says so.
    pub fn claim(&self, unbind: bool, allowed: Option<&str>) -> Result<(), IntelError> {
        let Some(drv) = self.driver() else {
            return Ok(());
        };
        if Some(drv.as_str()) == allowed {
            return Ok(());
        }
        if !unbind {
            return Err(IntelError::BoundToDriver {
                pci: self.addr.clone(),
                driver: drv,
            });
        }
        let path = self.dir.join("driver/unbind");
        fs::write(&path, &self.addr).map_err(|e| IntelError::io(&path, e))?;
        if let Some(d) = self.driver() {
            return Err(IntelError::BoundToDriver {
                pci: self.addr.clone(),
                driver: d,
            });
        }
        Ok(())
    }

    /// Binds the device to kernel driver `driver` (e.g. `vfio-pci`) through
    /// `driver_override`; the device must be unbound.
    pub fn bind(&self, driver: &str) -> Result<(), IntelError> {
        let ov = self.dir.join("driver_override");
        fs::write(&ov, driver).map_err(|e| IntelError::io(&ov, e))?;
        let probe = Path::new("/sys/bus/pci/drivers_probe");
        fs::write(probe, &self.addr).map_err(|e| IntelError::io(probe, e))?;
        match self.driver() {
            Some(d) if d == driver => Ok(()),
            other => Err(IntelError::Io(format!(
                "binding {} to {driver} failed (driver now {other:?}; is the {driver} module loaded?)",
                self.addr
            ))),
        }
    }

    /// Maps BAR0 through sysfs `resource0` (memory BAR; no IOMMU involved).
    pub fn map_resource0(&self) -> Result<Bar, IntelError> {
        let path = self.dir.join("resource0");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| IntelError::io(&path, e))?;
        let len = f.metadata().map_err(|e| IntelError::io(&path, e))?.len() as usize;
        Bar::map(f.as_fd(), 0, len).map_err(|e| IntelError::io(&path, e))
    }

    /// Sets Memory Space Enable and Bus Master Enable in the PCI command register (config
    /// space offset 4), so the device can answer MMIO and DMA.
    pub fn enable_bus_master(&self) -> Result<(), IntelError> {
        let path = self.dir.join("config");
        let f: File = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| IntelError::io(&path, e))?;
        let mut cmd = [0u8; 2];
        f.read_exact_at(&mut cmd, 4)
            .map_err(|e| IntelError::io(&path, e))?;
        let v = u16::from_le_bytes(cmd) | (1 << 1) | (1 << 2);
        f.write_all_at(&v.to_le_bytes(), 4)
            .map_err(|e| IntelError::io(&path, e))?;
        Ok(())
    }
}

impl IntelError {
    /// An I/O error on `path`, sorted into "no permission" and the rest.
    pub(crate) fn io(path: &Path, e: std::io::Error) -> IntelError {
        match e.kind() {
            ErrorKind::PermissionDenied => IntelError::NoPermission(format!(
                "{}: {e} (the Intel port needs root, or CAP_SYS_ADMIN and access to the device files)",
                path.display()
            )),
            _ => IntelError::Io(format!("{}: {e}", path.display())),
        }
    }
}

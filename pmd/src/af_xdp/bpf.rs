//! Ferrite's XDP redirect program, loaded with raw `bpf(2)` calls.
//!
//! The program is six eBPF instructions, written out below: look up the receive queue's
//! XDP socket in an `XSKMAP` and redirect the frame to it, or pass it to the kernel stack
//! when no socket is bound on that queue:
//!
//! ```text
//! r2 = *(u32 *)(r1 + 16)      ; xdp_md.rx_queue_index
//! r1 = map_fd ll              ; the XSKMAP (ld_imm64, BPF_PSEUDO_MAP_FD)
//! r3 = 2                      ; flags: XDP_PASS when the slot is empty
//! call bpf_redirect_map       ; helper 51
//! exit
//! ```
//!
//! It is attached with `BPF_LINK_CREATE` (attach type `BPF_XDP`): the attachment is owned by
//! the link descriptor, so when the process exits for any reason (SIGKILL included) the
//! kernel detaches the program and a restarted server can attach again.

use std::os::fd::{AsRawFd, OwnedFd};

use super::AfXdpError;
use crate::linux::{OpError, os_err, owned_fd};

const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_DELETE_ELEM: i64 = 3;
const BPF_PROG_LOAD: i64 = 5;
const BPF_LINK_CREATE: i64 = 28;

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const XDP_PASS: i32 = 2;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, runs on the kernel's socket buffers; works on every
/// interface.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP in the driver's receive path.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The redirect program for an `XSKMAP` whose descriptor is `map_fd`.
fn program(map_fd: i32) -> [Insn; 6] {
    const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
    const LD_IMM_DW: u8 = 0x18; // BPF_LD | BPF_IMM | BPF_DW
    const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
    const CALL: u8 = 0x85; // BPF_JMP | BPF_CALL
    const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT
    [
        insn(LDX_MEM_W, 2, 1, 16, 0),
        insn(LD_IMM_DW, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        insn(MOV64_K, 3, 0, 0, XDP_PASS),
        insn(CALL, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        insn(EXIT, 0, 0, 0, 0),
    ]
}

/// `bpf(cmd, attr, size)` with a 128-byte zeroed attribute block.
fn bpf(cmd: i64, attr: &mut [u8; 128]) -> i64 {
    // SAFETY: the attribute block is 128 readable/writable bytes that outlive the call; every
    // pointer stored inside it (by the callers) points to live memory for the same span.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn put_u32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

fn bpf_err(e: OpError, what: &'static str) -> AfXdpError {
    if e.is_permission() {
        AfXdpError::Permission {
            op: what,
            source: e.source,
        }
    } else {
        AfXdpError::Sys(e)
    }
}

/// Ferrite's redirect program attached to one interface, with its `XSKMAP`.
///
/// Shared (in an `Arc`) by every queue's port on the interface; dropping the last one closes
/// the link and the kernel detaches the program.
#[derive(Debug)]
pub struct XdpProgram {
    map: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    ifindex: u32,
    ifname: String,
    flags: u32,
    max_queues: u32,
}

impl XdpProgram {
    /// Creates the `XSKMAP` (`max_queues` slots), loads the program and attaches it to
    /// `ifname` (index `ifindex`, in the calling thread's namespace) with `flags`
    /// ([`XDP_FLAGS_SKB_MODE`] or [`XDP_FLAGS_DRV_MODE`]).
    pub fn attach(
        ifname: &str,
        ifindex: u32,
        flags: u32,
        max_queues: u32,
    ) -> Result<Self, AfXdpError> {
        let max_queues = max_queues.max(1);
        // Map.
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, BPF_MAP_TYPE_XSKMAP);
        put_u32(&mut a, 4, 4);
        put_u32(&mut a, 8, 4);
        put_u32(&mut a, 12, max_queues);
        a[28..28 + 11].copy_from_slice(b"ferrite_xsk");
        let map = owned_fd(bpf(BPF_MAP_CREATE, &mut a), "bpf(BPF_MAP_CREATE, XSKMAP)")
            .map_err(|e| bpf_err(e, "create the XSKMAP"))?;

        // Program.
        let insns = program(map.as_raw_fd());
        let license = b"Dual MIT/GPL\0";
        let mut log = vec![0u8; 4096];
        let load = |log_level: u32, log: &mut [u8]| {
            let mut a = [0u8; 128];
            put_u32(&mut a, 0, BPF_PROG_TYPE_XDP);
            put_u32(&mut a, 4, insns.len() as u32);
            put_u64(&mut a, 8, insns.as_ptr() as u64);
            put_u64(&mut a, 16, license.as_ptr() as u64);
            put_u32(&mut a, 24, log_level);
            put_u32(&mut a, 28, if log_level > 0 { log.len() as u32 } else { 0 });
            put_u64(
                &mut a,
                32,
                if log_level > 0 {
                    log.as_mut_ptr() as u64
                } else {
                    0
                },
            );
            a[48..48 + 11].copy_from_slice(b"ferrite_xdp");
            put_u32(&mut a, 68, BPF_XDP);
            bpf(BPF_PROG_LOAD, &mut a)
        };
        let prog = match owned_fd(load(0, &mut log), "bpf(BPF_PROG_LOAD)") {
            Ok(p) => p,
            Err(e) if e.is_permission() => return Err(bpf_err(e, "load the XDP program")),
            Err(e) => {
                // Load again with the verifier log, to say why.
                let _ = load(1, &mut log);
                let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                return Err(AfXdpError::ProgramRejected {
                    source: e.source,
                    log: String::from_utf8_lossy(&log[..end]).into_owned(),
                });
            }
        };

        // Link.
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, prog.as_raw_fd() as u32);
        put_u32(&mut a, 4, ifindex);
        put_u32(&mut a, 8, BPF_XDP);
        put_u32(&mut a, 12, flags);
        // The link of a server killed a moment ago is released while the kernel tears that
        // process down: a server taking over retries for a bounded time.
        let t0 = std::time::Instant::now();
        let link = loop {
            match owned_fd(
                bpf(BPF_LINK_CREATE, &mut a),
                "bpf(BPF_LINK_CREATE, BPF_XDP)",
            ) {
                Err(e)
                    if matches!(e.errno(), Some(libc::EBUSY | libc::EEXIST))
                        && t0.elapsed() < super::BUSY_WAIT =>
                {
                    std::thread::sleep(super::BUSY_STEP);
                }
                r => break r,
            }
        };
        let link = match link {
            Ok(l) => l,
            Err(e) => {
                return Err(match e.errno() {
                    Some(libc::EBUSY | libc::EEXIST) => AfXdpError::XdpBusy {
                        ifname: ifname.to_owned(),
                    },
                    Some(libc::EOPNOTSUPP | libc::EINVAL) => AfXdpError::XdpUnsupported {
                        ifname: ifname.to_owned(),
                        mode: mode_name(flags),
                        source: e.source,
                    },
                    _ => bpf_err(e, "attach the XDP program"),
                });
            }
        };
        Ok(Self {
            map,
            _prog: prog,
            _link: link,
            ifindex,
            ifname: ifname.to_owned(),
            flags,
            max_queues,
        })
    }

    /// Puts the XDP socket `xsk_fd` in the map slot of `queue`.
    pub(crate) fn insert(&self, queue: u32, xsk_fd: i32) -> Result<(), AfXdpError> {
        if queue >= self.max_queues {
            return Err(AfXdpError::QueueOutOfRange {
                queue,
                max: self.max_queues,
            });
        }
        let key = queue;
        let val = xsk_fd as u32;
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, self.map.as_raw_fd() as u32);
        put_u64(&mut a, 8, &key as *const u32 as u64);
        put_u64(&mut a, 16, &val as *const u32 as u64);
        put_u64(&mut a, 24, 0); // BPF_ANY
        if bpf(BPF_MAP_UPDATE_ELEM, &mut a) < 0 {
            return Err(bpf_err(
                os_err("bpf(BPF_MAP_UPDATE_ELEM, XSKMAP)"),
                "insert the XDP socket into the XSKMAP",
            ));
        }
        Ok(())
    }

    /// Empties the map slot of `queue` (frames on that queue go to the kernel stack again).
    pub(crate) fn remove(&self, queue: u32) {
        let key = queue;
        let mut a = [0u8; 128];
        put_u32(&mut a, 0, self.map.as_raw_fd() as u32);
        put_u64(&mut a, 8, &key as *const u32 as u64);
        // An already-empty slot (ENOENT) is fine.
        let _ = bpf(BPF_MAP_DELETE_ELEM, &mut a);
    }

    /// The interface index the program is attached to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The attach flags (`XDP_FLAGS_*`).
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// A readable name for attach flags.
pub(crate) fn mode_name(flags: u32) -> &'static str {
    if flags & XDP_FLAGS_DRV_MODE != 0 {
        "native (driver)"
    } else if flags & XDP_FLAGS_SKB_MODE != 0 {
        "generic (skb)"
    } else {
        "default"
    }
}

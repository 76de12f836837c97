//! Moving control messages: the [`Transport`] trait and its Unix `SOCK_SEQPACKET`
//! implementation ([`SeqPacket`], [`SeqPacketListener`]).
//!
//! A `SOCK_SEQPACKET` socket keeps message boundaries (one `send` is one `recv`), carries file
//! descriptors (`SCM_RIGHTS`) and tells the server who the peer is (`SO_PEERCRED`), which is
//! everything the handshake needs. Receiving is defensive: a message longer than the buffer
//! is reported as truncated (and refused by the caller), every received descriptor is
//! close-on-exec, and the control buffer has room for as many descriptors as one message can
//! carry (`SCM_MAX_FD`), so the kernel never closes a surplus on the receiver's behalf: the
//! caller gets every descriptor and decides where to close it (the server closes an app's on
//! a thread of their own, since closing a descriptor can block).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::CtlError;

/// Most file descriptors a message of the protocol carries; a message with more is refused.
pub const MAX_FDS: usize = 4;
/// Room for every descriptor one message can carry (the kernel's `SCM_MAX_FD`).
const FD_ROOM: usize = 253;

/// Who is at the other end of a connection, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id at connect time.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

/// What one receive produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// A message of `len` bytes is at the start of the buffer.
    Message {
        /// Bytes received.
        len: usize,
        /// The message was longer than the buffer (the rest is lost).
        truncated: bool,
        /// More than [`MAX_FDS`] descriptors came (all of them are in `fds`).
        surplus_fds: bool,
    },
    /// Nothing to read now (non-blocking socket).
    WouldBlock,
    /// The peer closed the connection.
    Closed,
}

/// A message transport: one message per call, with optional file descriptors.
///
/// The handshake ([`super::Session`]) never sees the transport; the server's control loop
/// moves bytes between the two. A transport without descriptors (xenstore) passes none and
/// carries grant references in the message instead.
pub trait Transport {
    /// Receives one message into `buf`, appending every received descriptor to `fds`.
    fn recv(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<Received, CtlError>;
    /// Sends one message with `fds` attached.
    fn send(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), CtlError>;
    /// The peer's credentials.
    fn peer(&self) -> Result<PeerCred, CtlError>;
}

/// One connected `SOCK_SEQPACKET` Unix socket.
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
}

impl SeqPacket {
    /// Connects to the server listening at `path` (blocking socket).
    pub fn connect(path: &Path) -> Result<Self, CtlError> {
        let what = || format!("connect {}", path.display());
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| CtlError::io(what(), e))?;
        let addr = SocketAddrUnix::new(path).map_err(|e| CtlError::io(what(), e))?;
        rustix::net::connect(&fd, &addr).map_err(|e| CtlError::io(what(), e))?;
        let s = Self { fd };
        s.room_for_largest_message()?;
        Ok(s)
    }

    /// Lets one send carry the largest message either side may send: a record larger than
    /// the socket's send buffer fails with `EMSGSIZE` (the default buffer is about 208 KiB, a
    /// grant of 256 MiB of port memory about 256 KiB).
    fn room_for_largest_message(&self) -> Result<(), CtlError> {
        let most = super::wire::MAX_APP_MSG.max(super::wire::MAX_SERVER_MSG) + 4096;
        rustix::net::sockopt::set_socket_send_buffer_size(&self.fd, most)
            .map_err(|e| CtlError::io("set send buffer size", e))
    }

    /// A connected pair (for tests and in-process peers).
    pub fn pair() -> Result<(Self, Self), CtlError> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| CtlError::io("socketpair", e))?;
        let (a, b) = (Self { fd: a }, Self { fd: b });
        a.room_for_largest_message()?;
        b.room_for_largest_message()?;
        Ok((a, b))
    }

    /// Switches non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), CtlError> {
        rustix::io::ioctl_fionbio(&self.fd, on).map_err(|e| CtlError::io("set non-blocking", e))
    }

    /// Makes sends give up after `t` (blocking sockets; `None` waits forever).
    pub fn set_write_timeout(&self, t: Option<std::time::Duration>) -> Result<(), CtlError> {
        rustix::net::sockopt::set_socket_timeout(&self.fd, rustix::net::sockopt::Timeout::Send, t)
            .map_err(|e| CtlError::io("set send timeout", e))
    }

    /// A second handle on the same connection (a new descriptor, close-on-exec).
    pub fn try_clone(&self) -> Result<Self, CtlError> {
        let fd = rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)
            .map_err(|e| CtlError::io("duplicate a connection", e))?;
        Ok(Self { fd })
    }

    /// Makes receives give up after `t` (blocking sockets; `None` waits forever).
    pub fn set_read_timeout(&self, t: Option<std::time::Duration>) -> Result<(), CtlError> {
        rustix::net::sockopt::set_socket_timeout(&self.fd, rustix::net::sockopt::Timeout::Recv, t)
            .map_err(|e| CtlError::io("set receive timeout", e))
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Transport for SeqPacket {
    fn recv(&mut self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<Received, CtlError> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(FD_ROOM))];
        let mut cmsg = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(buf)];
        let r = match rustix::net::recvmsg(
            &self.fd,
            &mut iov,
            &mut cmsg,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::TRUNC,
        ) {
            Ok(r) => r,
            Err(rustix::io::Errno::AGAIN) => return Ok(Received::WouldBlock),
            Err(rustix::io::Errno::INTR) => return Ok(Received::WouldBlock),
            Err(rustix::io::Errno::CONNRESET) => return Ok(Received::Closed),
            Err(e) => return Err(CtlError::io("receive", e)),
        };
        let before = fds.len();
        for m in cmsg.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        let surplus = r.flags.contains(ReturnFlags::CTRUNC) || fds.len() - before > MAX_FDS;
        if r.bytes == 0 && fds.len() == before && !surplus {
            // A zero-length record and end of stream look alike; neither is a message.
            return Ok(Received::Closed);
        }
        Ok(Received::Message {
            len: r.bytes.min(buf.len()),
            truncated: r.flags.contains(ReturnFlags::TRUNC) || r.bytes > buf.len(),
            surplus_fds: surplus,
        })
    }

    fn send(&mut self, msg: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), CtlError> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        if fds.len() > MAX_FDS
            || (!fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(fds)))
        {
            return Err(CtlError::io(
                "send",
                std::io::Error::other(format!("at most {MAX_FDS} descriptors per message")),
            ));
        }
        let iov = [IoSlice::new(msg)];
        loop {
            match rustix::net::sendmsg(&self.fd, &iov, &mut cmsg, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::PIPE) | Err(rustix::io::Errno::CONNRESET) => {
                    return Err(CtlError::Closed);
                }
                Err(e) => return Err(CtlError::io("send", e)),
            }
        }
    }

    fn peer(&self) -> Result<PeerCred, CtlError> {
        let c = rustix::net::sockopt::socket_peercred(&self.fd)
            .map_err(|e| CtlError::io("SO_PEERCRED", e))?;
        Ok(PeerCred {
            pid: c.pid.as_raw_nonzero().get(),
            uid: c.uid.as_raw(),
            gid: c.gid.as_raw(),
        })
    }
}

/// The server's listening `SOCK_SEQPACKET` socket; removes its path when dropped.
#[derive(Debug)]
pub struct SeqPacketListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl SeqPacketListener {
    /// Listens at `path` with file mode `mode` and, if given, group `gid`.
    ///
    /// A file left at `path` by a server that crashed is removed first, but only when it is a
    /// socket nobody listens on: a regular file, or a socket another server answers on, is an
    /// error and is left alone.
    pub fn bind(path: &Path, mode: u32, gid: Option<u32>) -> Result<Self, CtlError> {
        let what = |w: &str| format!("{w} {}", path.display());
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(CtlError::io(
                    what("bind"),
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "a file that is not a socket is in the way; remove it or choose another path",
                    ),
                ));
            }
            if SeqPacket::connect(path).is_ok() {
                return Err(CtlError::io(
                    what("bind"),
                    std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "another server is listening on this socket",
                    ),
                ));
            }
            tracing::info!(path = %path.display(), "removing stale control socket");
            std::fs::remove_file(path).map_err(|e| CtlError::io(what("remove stale"), e))?;
        }
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| CtlError::io(what("socket"), e))?;
        // Bound, given its mode and group, and listening, in a directory only this process
        // can write, then renamed into place (never over anything there): the socket never
        // shows at `path` with other permissions or not answering, and no one can swap a link
        // in for it between the bind and the chmod.
        let stage = Stage::new(path).map_err(|e| CtlError::io(what("stage"), e))?;
        let staged = stage.dir.join(Stage::SOCKET);
        let addr = SocketAddrUnix::new(&staged).map_err(|e| CtlError::io(what("address"), e))?;
        rustix::net::bind(&fd, &addr).map_err(|e| CtlError::io(what("bind"), e))?;
        rustix::fs::chmod(&staged, rustix::fs::Mode::from_raw_mode(mode))
            .map_err(|e| CtlError::io(what("chmod"), e))?;
        if let Some(g) = gid {
            rustix::fs::chown(&staged, None, Some(rustix::fs::Gid::from_raw(g)))
                .map_err(|e| CtlError::io(what("chown"), e))?;
        }
        rustix::net::listen(&fd, 64).map_err(|e| CtlError::io(what("listen"), e))?;
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            &staged,
            rustix::fs::CWD,
            path,
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|e| match e {
            rustix::io::Errno::EXIST => CtlError::io(
                what("bind"),
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server took this path while this one started",
                ),
            ),
            e => CtlError::io(what("rename"), e),
        })?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one pending connection (non-blocking: `None` when there is none).
    pub fn accept(&self) -> Result<Option<SeqPacket>, CtlError> {
        match rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
            Ok(fd) => Ok(Some(SeqPacket { fd })),
            Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::INTR) => Ok(None),
            Err(rustix::io::Errno::CONNABORTED) => Ok(None),
            Err(e) => Err(CtlError::io(format!("accept {}", self.path.display()), e)),
        }
    }
}

impl AsFd for SeqPacketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for SeqPacketListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A fresh directory (mode 0700) next to a socket's path, removed with whatever is left in
/// it when dropped.
struct Stage {
    dir: PathBuf,
}

impl Stage {
    /// The socket's name in the directory.
    const SOCKET: &str = "s";

    /// A fresh directory beside `path`, its name short (`.fsK`) so that the
    /// staged socket's path fits wherever `path` fits, less a few bytes.
    fn new(path: &Path) -> std::io::Result<Self> {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        for k in 0..64u32 {
            let dir = parent.join(format!(".fs{k}"));
            match rustix::fs::mkdir(&dir, rustix::fs::Mode::from_raw_mode(0o700)) {
                Ok(()) => return Ok(Self { dir }),
                // Another server staging at the same time, or one killed while it did.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "64 staging directories .fs0 to .fs63 are in the way",
        ))
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(Self::SOCKET));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The control socket shows at its path only with the mode it was given, whatever the
    /// umask (it is bound and set up elsewhere, then renamed into place), and staging leaves
    /// nothing behind.
    #[test]
    fn the_socket_appears_at_its_path_only_with_its_final_mode() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        rustix::process::umask(rustix::fs::Mode::empty());
        let dir = std::env::temp_dir().join(format!("ferrite-sock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("ctl.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        seen.insert(m.permissions().mode() & 0o777);
                    }
                }
                seen
            })
        };
        for _ in 0..300 {
            let l = SeqPacketListener::bind(&path, 0o600, None).expect("bind");
            drop(l);
        }
        stop.store(true, Ordering::Relaxed);
        let seen = watcher.join().expect("watcher");
        assert!(
            seen.iter().all(|&m| m == 0o600),
            "modes seen at the path: {:?}",
            seen.iter().map(|m| format!("{m:o}")).collect::<Vec<_>>()
        );
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        std::fs::remove_dir(&dir).expect("empty");
    }

    /// Staging costs no room in the address: a path of 107 bytes (the most a socket address
    /// holds) binds; a path taken meanwhile is not replaced.
    #[test]
    fn a_socket_path_of_the_longest_length_binds_and_nothing_is_replaced() {
        let base = std::env::temp_dir().join(format!("fl{}", std::process::id()));
        let room = 107 - base.as_os_str().len() - "/".len() - "/s.sock".len();
        let dir = base.join("d".repeat(room));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.sock");
        assert_eq!(path.as_os_str().len(), 107);
        let l = SeqPacketListener::bind(&path, 0o600, None).expect("the longest path binds");
        assert!(SeqPacket::connect(&path).is_ok());
        drop(l);
        // A rename never lands over what is at the path: the kernel refuses, and the file
        // stays.
        let stage = Stage::new(&path).expect("stage");
        std::fs::write(stage.dir.join(Stage::SOCKET), b"staged").expect("staged file");
        std::fs::write(&path, b"someone else's").expect("file at the path");
        let r = rustix::fs::renameat_with(
            rustix::fs::CWD,
            stage.dir.join(Stage::SOCKET),
            rustix::fs::CWD,
            &path,
            rustix::fs::RenameFlags::NOREPLACE,
        );
        assert_eq!(r, Err(rustix::io::Errno::EXIST));
        assert_eq!(std::fs::read(&path).expect("kept"), b"someone else's");
        drop(stage);
        std::fs::remove_dir_all(&base).expect("clean up");
    }

    #[test]
    fn messages_keep_boundaries_and_surplus_fds_are_closed() {
        let (mut a, mut b) = SeqPacket::pair().unwrap();
        a.send(b"one", &[]).unwrap();
        a.send(b"second", &[]).unwrap();
        let mut buf = [0u8; 16];
        let mut fds = Vec::new();
        assert_eq!(
            b.recv(&mut buf, &mut fds).unwrap(),
            Received::Message {
                len: 3,
                truncated: false,
                surplus_fds: false
            }
        );
        let mut small = [0u8; 2];
        assert_eq!(
            b.recv(&mut small, &mut fds).unwrap(),
            Received::Message {
                len: 2,
                truncated: true,
                surplus_fds: false
            }
        );
        // A hostile sender attaching six descriptors: all handed over, and flagged.
        let files: Vec<std::fs::File> = (0..6)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        assert!(
            a.send(b"x", &borrowed).is_err(),
            "our own sender caps descriptors"
        );
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(6))];
        let mut cmsg = SendAncillaryBuffer::new(&mut space);
        assert!(cmsg.push(SendAncillaryMessage::ScmRights(&borrowed)));
        rustix::net::sendmsg(&a.fd, &[IoSlice::new(b"x")], &mut cmsg, SendFlags::empty()).unwrap();
        let r = b.recv(&mut buf, &mut fds).unwrap();
        assert_eq!(
            r,
            Received::Message {
                len: 1,
                truncated: false,
                surplus_fds: true
            }
        );
        assert_eq!(fds.len(), 6);
        b.set_nonblocking(true).unwrap();
        assert_eq!(b.recv(&mut buf, &mut fds).unwrap(), Received::WouldBlock);
        drop(a);
        assert_eq!(b.recv(&mut buf, &mut fds).unwrap(), Received::Closed);
    }
}

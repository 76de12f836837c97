//! One server per control socket, and the warm spare that waits to be it.
//!
//! `ferrite serve` holds an exclusive `flock(2)` on `<socket>.lock` (next to the control
//! socket) for as long as it runs. The kernel drops the lock as the holder dies, whatever
//! kills it, and before the holder's other files (the lock sits at the top of the descriptor
//! table), so the lock says which process may bind the control socket and take the NICs,
//! and nothing else has to: a server that finds it taken refuses to start, and a warm spare
//! (`ferrite serve --standby`) blocks on it and takes over when it is dropped. The holder
//! replaces whatever control socket it finds ([`ServerLock::clear_socket`]): the lock proves
//! that no server listens there, though a killed one's listener may linger a moment.
//!
//! The file is never removed: a spare blocked on the lock of a removed file would take over
//! while a server holding a lock on a new file runs.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// The lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another server holds it.
    #[error(
        "another server is listening on this socket (it holds {0}); stop it first, or start this one with --standby to take over when it stops"
    )]
    Busy(PathBuf),
    /// The lock file could not be opened or locked.
    #[error("lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The lock held by the one server of a control socket; dropped with the process.
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
    path: PathBuf,
}

impl ServerLock {
    /// The lock file of the control socket `socket`.
    pub fn path_for(socket: &Path) -> PathBuf {
        let mut p = socket.as_os_str().to_owned();
        p.push(".lock");
        PathBuf::from(p)
    }

    fn open(socket: &Path) -> Result<(File, PathBuf), LockError> {
        let path = Self::path_for(socket);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| LockError::Io {
                path: path.clone(),
                source,
            })?;
        Ok((on_top(file), path))
    }

    /// Takes the lock of `socket`'s server; [`LockError::Busy`] when a server holds it.
    pub fn take(socket: &Path) -> Result<Self, LockError> {
        let (file, path) = Self::open(socket)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(LockError::Busy(path)),
            Err(e) => Err(LockError::Io {
                path,
                source: e.into(),
            }),
        }
    }

    /// Waits until `socket`'s server is gone (at once if there is none), then holds the lock.
    pub fn wait(socket: &Path) -> Result<Self, LockError> {
        let (file, path) = Self::open(socket)?;
        loop {
            match rustix::fs::flock(&file, FlockOperation::LockExclusive) {
                Ok(()) => return Ok(Self { _file: file, path }),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(LockError::Io {
                        path,
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the control socket a dead server left at `socket`, if any. The lock proves
    /// that no server listens on it, though a killed server's listener may still accept
    /// connections for a moment while the kernel tears the process down.
    pub fn clear_socket(&self, socket: &Path) -> Result<(), LockError> {
        use std::os::unix::fs::FileTypeExt;
        match std::fs::symlink_metadata(socket) {
            Ok(m) if m.file_type().is_socket() => {
                tracing::info!(path = %socket.display(), "removing the control socket of a server that is gone");
                std::fs::remove_file(socket).map_err(|source| LockError::Io {
                    path: socket.to_owned(),
                    source,
                })
            }
            // Nothing there, or something the listener's own checks will refuse.
            _ => Ok(()),
        }
    }
}

/// `file` moved to the highest descriptor number the process may have, when it can be.
///
/// The kernel releases a dead process's files from the highest number down, so the lock is
/// dropped first, before the sockets, whose release waits for RCU grace periods: a spare
/// starts its takeover while they go.
fn on_top(file: File) -> File {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1 << 20)
        .min(1 << 20);
    match rustix::io::fcntl_dupfd_cloexec(&file, limit.saturating_sub(1) as i32) {
        Ok(fd) => File::from(fd),
        Err(_) => file,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_a_waiter_gets_the_lock_when_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("ferrite-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("ctl.sock");
        let first = ServerLock::take(&socket).expect("free");
        assert_eq!(first.path(), dir.join("ctl.sock.lock"));
        assert!(matches!(ServerLock::take(&socket), Err(LockError::Busy(_))));
        let (tx, rx) = mpsc::channel();
        let s = socket.clone();
        let waiter = std::thread::spawn(move || {
            let l = ServerLock::wait(&s).expect("lock");
            tx.send(()).expect("send");
            l
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the spare waits while the first holds the lock"
        );
        drop(first);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the spare takes over");
        let second = waiter.join().expect("joined");
        assert!(matches!(ServerLock::take(&socket), Err(LockError::Busy(_))));
        drop(second);
        ServerLock::take(&socket).expect("free again");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Set in the process `lock_holder_process` runs as.
    const HOLDER_DIR: &str = "FERRITE_TEST_LOCK_HOLDER_DIR";

    /// Not a test on its own: the server stand-in that
    /// `the_lock_comes_free_before_a_killed_holder_is_torn_down` starts and kills. It takes
    /// the lock, then opens packet sockets, whose release each waits for an RCU grace period
    /// (as a server's NIC sockets do).
    #[test]
    fn lock_holder_process() {
        let Some(dir) = std::env::var_os(HOLDER_DIR) else {
            return;
        };
        let dir = PathBuf::from(dir);
        let _lock = ServerLock::take(&dir.join("ctl.sock")).expect("lock");
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
        // A marker the test can see (in /proc/net/unix) until it is released: after the
        // packet sockets, which come later in the descriptor table.
        let marker = rustix::net::socket(AddressFamily::UNIX, SocketType::DGRAM, None)
            .expect("marker socket");
        let name = SocketAddrUnix::new_abstract_name(marker_name(&dir).as_bytes()).expect("name");
        rustix::net::bind(&marker, &name).expect("bind marker");
        let _slow: Vec<_> = (0..16)
            .map(|_| rustix::net::socket(AddressFamily::PACKET, SocketType::RAW, None))
            .collect::<Result<_, _>>()
            .expect("packet sockets");
        println!("holder ready");
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn the_lock_comes_free_before_a_killed_holder_is_torn_down() {
        use std::io::BufRead;
        if !rustix::process::geteuid().is_root() {
            eprintln!(
                "the_lock_comes_free_before_a_killed_holder_is_torn_down: needs root (packet sockets); skipped"
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("ferrite-lock-kill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "--exact",
                "server::standby::tests::lock_holder_process",
                "--nocapture",
            ])
            .env(HOLDER_DIR, &dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn holder");
        let out = child.stdout.take().expect("stdout");
        let ready = std::io::BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("holder ready"));
        assert!(ready, "the holder took the lock");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
        let lock = ServerLock::wait(&dir.join("ctl.sock")).expect("lock");
        // The holder is still being torn down: its marker socket is not released yet.
        let sockets = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
        let marker = format!("@{}", marker_name(&dir));
        let _ = child.wait();
        drop(lock);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            sockets.lines().any(|l| l.ends_with(&marker)),
            "the lock came free only after the killed holder's sockets were released"
        );
    }

    fn marker_name(dir: &Path) -> String {
        format!("ferrite-lock-marker{}", dir.display())
    }
}

//! Running a test's other half in a second process: the test binary re-executes itself with
//! one test selected and the child end of a `SOCK_SEQPACKET` socketpair inherited.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command};

use grant_pool::shm;

const ROLE_ENV: &str = "FERRITE_TEST_CHILD";
const SOCK_ENV: &str = "FERRITE_TEST_SOCK";

/// Starts this test binary again running only `test` (a `#[test]` that calls
/// [`child_sock`]), connected to the parent through the returned socket.
pub fn spawn_child(test: &str) -> (Child, OwnedFd) {
    let (parent, child) = shm::seqpacket_pair().expect("socketpair");
    // The child end must survive exec: clear close-on-exec on it just for the spawn.
    // SAFETY: fcntl on a descriptor we own; no memory is involved.
    let r = unsafe { libc::fcntl(child.as_raw_fd(), libc::F_SETFD, 0) };
    assert_eq!(r, 0, "clearing FD_CLOEXEC");
    let exe = std::env::current_exe().expect("test binary path");
    let proc_ = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, test)
        .env(SOCK_ENV, child.as_raw_fd().to_string())
        .spawn()
        .expect("spawning the child half");
    drop(child);
    (proc_, parent)
}

/// In the child half of `test`: the socket to the parent. `None` when this process is not a
/// child started for `test` (the `#[test]` entry is then not a test in its own right and
/// returns at once).
pub fn child_sock(test: &str) -> Option<OwnedFd> {
    if std::env::var(ROLE_ENV).ok()? != test {
        return None;
    }
    let fd: i32 = std::env::var(SOCK_ENV).ok()?.parse().ok()?;
    // SAFETY: the parent passed us this descriptor number, inherited across exec, and nothing
    // else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits for the child and asserts it succeeded.
pub fn join(mut child: Child) {
    let st = child.wait().expect("waiting for the child");
    assert!(st.success(), "child half failed: {st}");
}

//! Running a test's other half in a second process: the test binary re-executes itself with
//! one test selected, connected to the parent by [`shm::spawn_connected`].

#![allow(dead_code)]

use std::os::fd::OwnedFd;
use std::process::{Child, Command};

use grant_pool::shm;

const ROLE_ENV: &str = "FERRITE_TEST_CHILD";

/// Starts this test binary again running only `test` (a `#[test]` that calls
/// [`child_sock`]), connected to the parent through the returned socket.
pub fn spawn_child(test: &str) -> (Child, OwnedFd) {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, test);
    shm::spawn_connected(&mut cmd).expect("spawning the child half")
}

/// In the child half of `test`: the socket to the parent. `None` when this process is not a
/// child started for `test` (the `#[test]` entry is then not a test in its own right and
/// returns at once).
pub fn child_sock(test: &str) -> Option<OwnedFd> {
    if std::env::var(ROLE_ENV).ok()? != test {
        return None;
    }
    shm::inherited_socket()
}

/// Waits for the child and asserts it succeeded.
pub fn join(mut child: Child) {
    let st = child.wait().expect("waiting for the child");
    assert!(st.success(), "child half failed: {st}");
}

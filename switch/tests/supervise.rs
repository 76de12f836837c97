//! The server under a service manager: the notification protocol against a real datagram
//! socket, and `ferrite supervise` restarting killed and hung servers, with and without a
//! warm spare.

mod server_app;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use server_app::*;
use switch::ctl::Transport;
use switch::ctl::transport::SeqPacket;

const A: (&str, &str) = ("app-a", "02:00:00:00:00:0a");
const B: (&str, &str) = ("app-b", "02:00:00:00:00:0b");

/// Waits (bounded) for `what`; panics with `what` when it does not come.
fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid of the process listening on the control socket (its `SO_PEERCRED`).
fn server_pid(socket: &Path) -> Option<i32> {
    SeqPacket::connect(socket).ok()?.peer().ok().map(|p| p.pid)
}

/// Whether process `pid` exists (a zombie counts).
fn exists(pid: i32) -> bool {
    Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

/// The children of process `pid`.
fn children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn kill(pid: i32, sig: Signal) {
    rustix::process::kill_process(Pid::from_raw(pid).expect("pid"), sig).expect("kill");
}

/// Writes the usual two-app sim config into a fresh directory.
fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = test_dir(name);
    let socket = dir.join("ctl.sock");
    let cfg = dir.join("ferrite.toml");
    std::fs::write(&cfg, config_text(&socket, &[A, B], "")).expect("config");
    (dir, socket, cfg)
}

/// A process whose stderr is collected by a thread, killed when dropped.
struct Proc {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    dir: PathBuf,
}

impl Proc {
    fn spawn(cmd: &mut Command, dir: &Path) -> Self {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferrite");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let l = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                l.lock().expect("log").push_str(&text);
            }
        });
        Self {
            child,
            log,
            dir: dir.to_owned(),
        }
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits (bounded) for the process to exit.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let r = wait_for("the process to exit", within, || {
            self.child.try_wait().expect("try_wait")
        });
        // Let the reader thread take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        r
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // The supervisor's children follow it (parent-death signal).
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn supervise(dir: &Path, cfg: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrite"));
    cmd.args(["supervise", "--config"]).arg(cfg).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(&mut cmd, dir)
}

/// Reads notification datagrams until one satisfies `f` (bounded); returns every message read.
fn read_until(s: &UnixDatagram, within: Duration, mut f: impl FnMut(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        if let Ok(n) = s.recv(&mut b) {
            let m = String::from_utf8_lossy(&b[..n]).into_owned();
            let done = f(&m);
            got.push(m);
            if done {
                return got;
            }
        }
    }
    panic!("no matching notification within {within:?}; got {got:?}");
}

#[test]
fn ready_comes_once_the_socket_listens_pings_follow_and_a_stalled_loop_stops_them() {
    let (dir, socket, cfg) = setup("notify");
    let notify_path = dir.join("notify.sock");
    let stall = dir.join("stall");
    let manager = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let mut srv = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "200000")
            .env("FERRITE_STALL_SWITCH_FILE", &stall),
        &dir,
    );
    let pid = srv.pid();
    let msgs = read_until(&manager, Duration::from_secs(20), |m| {
        m.lines().any(|l| l == "READY=1")
    });
    // READY=1 came: the control socket must listen already.
    assert_eq!(
        server_pid(&socket),
        Some(pid),
        "the control socket answers when READY=1 arrives"
    );
    let ready = msgs.last().expect("ready");
    assert!(
        ready.lines().any(|l| l == format!("MAINPID={pid}")),
        "{ready}"
    );
    assert!(ready.lines().any(|l| l.starts_with("STATUS=")), "{ready}");

    // The forwarding loop pings at half the period while it runs (here idle, sleeping).
    let mut pings = 0;
    read_until(&manager, Duration::from_secs(20), |m| {
        pings += usize::from(m == "WATCHDOG=1");
        pings >= 5
    });
    // Frames still flow while it pings.
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches");
    check_forwarding(&mut a, &mut b, b"while pinging");
    read_until(&manager, Duration::from_secs(20), |m| m == "WATCHDOG=1");

    // Stall the switch thread: it takes the file at its next ping and hangs.
    std::fs::write(&stall, b"").expect("stall file");
    wait_for(
        "the switch thread to take the stall file",
        Duration::from_secs(20),
        || (!stall.exists()).then_some(()),
    );
    manager.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 4096];
    while manager.recv(&mut buf).is_ok() {}
    manager.set_nonblocking(false).expect("blocking");
    // Five intervals of silence.
    manager
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let after = manager.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
    assert_eq!(
        after.as_deref().map(String::from_utf8_lossy),
        None,
        "no ping from a hung forwarding loop"
    );
    // Only the loop hangs: the process and its control thread are alive.
    assert!(srv.child.try_wait().expect("try_wait").is_none());
    assert_eq!(server_pid(&socket), Some(pid));
    check_log_mentions(&srv, "hangs now");
}

fn check_log_mentions(p: &Proc, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "the log never mentioned {what:?}:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_supervisor_restarts_a_killed_server_and_apps_reattach() {
    let (dir, socket, cfg) = setup("sup-kill");
    let sup = supervise(&dir, &cfg, &[], &[]);
    let first = wait_for("the server", Duration::from_secs(20), || {
        server_pid(&socket)
    });
    assert_eq!(
        children(sup.pid() as u32),
        vec![first],
        "the server is the supervisor's child"
    );
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches");
    check_forwarding(&mut a, &mut b, b"before");

    kill(first, Signal::KILL);
    let second = wait_for("a new server", Duration::from_secs(20), || {
        server_pid(&socket).filter(|&p| p != first)
    });
    assert!(!exists(first), "the killed server was reaped");
    assert_eq!(children(sup.pid() as u32), vec![second]);
    drop((a, b));
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches again");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches again");
    check_forwarding(&mut a, &mut b, b"after");
    check_log_mentions(&sup, "restarting");
}

#[test]
fn the_supervisor_kills_and_restarts_a_server_whose_forwarding_loop_hangs() {
    let (dir, socket, cfg) = setup("sup-hang");
    let stall = dir.join("stall");
    let sup = supervise(
        &dir,
        &cfg,
        &["--watchdog-ms", "300"],
        &[("FERRITE_STALL_SWITCH_FILE", &stall)],
    );
    let first = wait_for("the server", Duration::from_secs(20), || {
        server_pid(&socket)
    });
    check_log_mentions(&sup, "server ready");
    std::fs::write(&stall, b"").expect("stall file");
    let second = wait_for("a new server", Duration::from_secs(20), || {
        server_pid(&socket).filter(|&p| p != first)
    });
    assert!(!exists(first), "the hung server was killed and reaped");
    assert!(!stall.exists(), "the first server took the fault");
    check_log_mentions(&sup, "watchdog: no ping");
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches");
    check_forwarding(&mut a, &mut b, b"after the hang");
    assert_eq!(server_pid(&socket), Some(second));
}

#[test]
fn a_warm_spare_takes_over_when_the_server_is_killed() {
    let (dir, socket, cfg) = setup("sup-standby");
    let sup = supervise(&dir, &cfg, &["--standby", "--standby-delay-ms", "0"], &[]);
    let first = wait_for("the server", Duration::from_secs(20), || {
        server_pid(&socket)
    });
    let spare = wait_for("a spare", Duration::from_secs(20), || {
        children(sup.pid() as u32).into_iter().find(|&p| p != first)
    });
    check_log_mentions(&sup, "standby: waiting");
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches");
    check_forwarding(&mut a, &mut b, b"before");

    kill(first, Signal::KILL);
    let second = wait_for("a new server", Duration::from_secs(20), || {
        server_pid(&socket).filter(|&p| p != first)
    });
    assert_eq!(second, spare, "the spare is the new server");
    // And a new spare waits behind it.
    wait_for("another spare", Duration::from_secs(20), || {
        let c = children(sup.pid() as u32);
        (c.len() == 2 && c.contains(&second) && !c.contains(&first)).then_some(())
    });
    drop((a, b));
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches again");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches again");
    check_forwarding(&mut a, &mut b, b"after the takeover");
    check_log_mentions(&sup, "the spare takes over");
}

#[test]
fn sigterm_to_the_supervisor_stops_the_server_and_the_spare_and_leaves_no_child() {
    let (dir, socket, cfg) = setup("sup-term");
    let mut sup = supervise(&dir, &cfg, &["--standby", "--standby-delay-ms", "0"], &[]);
    let first = wait_for("the server", Duration::from_secs(20), || {
        server_pid(&socket)
    });
    let spare = wait_for("a spare", Duration::from_secs(20), || {
        children(sup.pid() as u32).into_iter().find(|&p| p != first)
    });
    kill(sup.pid(), Signal::TERM);
    let st = sup.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{st:?}: {}", sup.log());
    assert!(!exists(first), "no server left");
    assert!(!exists(spare), "no spare left");
    assert!(
        !socket.exists(),
        "the server stopped cleanly: its socket is gone"
    );
    let log = sup.log();
    assert!(log.contains("ferrite stopped"), "{log}");
    assert!(log.contains("ferrite supervisor stopped"), "{log}");
}

#[test]
fn a_server_that_cannot_start_is_restarted_with_backoff_not_in_a_hot_loop() {
    let dir = test_dir("sup-loop");
    let cfg = dir.join("ferrite.toml");
    // A socket in a directory that does not exist: every start fails at once.
    std::fs::write(
        &cfg,
        config_text(&dir.join("missing").join("ctl.sock"), &[A], ""),
    )
    .expect("config");
    let mut sup = supervise(
        &dir,
        &cfg,
        &["--restart-burst", "3", "--restart-window-ms", "60000"],
        &[],
    );
    check_log_mentions(&sup, "crash loop");
    std::thread::sleep(Duration::from_secs(2));
    let starts = sup.log().matches("server started").count();
    // Three quick starts, then 0.5 s, 1 s, 2 s apart; a hot loop would start hundreds.
    assert!((4..=8).contains(&starts), "{starts} starts: {}", sup.log());
    // It still stops at once while it waits.
    kill(sup.pid(), Signal::TERM);
    assert!(sup.wait_exit(Duration::from_secs(10)).success());
}

#[test]
fn a_listener_whose_server_holds_no_lock_is_replaced() {
    // What a spare finds when it takes over: the lock is free, but the killed server's
    // listener still accepts connections while the kernel tears that process down.
    let dir = test_dir("sup-linger");
    let socket = dir.join("ctl.sock");
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let lingering =
        rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
    rustix::net::bind(&lingering, &SocketAddrUnix::new(&socket).expect("addr")).expect("bind");
    rustix::net::listen(&lingering, 4).expect("listen");
    assert!(SeqPacket::connect(&socket).is_ok(), "it accepts");
    let cfg = dir.join("ferrite.toml");
    std::fs::write(&cfg, config_text(&socket, &[A, B], "")).expect("config");
    let mut srv = Proc::spawn(
        Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["serve", "--config"])
            .arg(&cfg),
        &dir,
    );
    // Connecting and reading credentials never waits on the old listener (a stats request
    // to it would wait for ever).
    wait_for(
        "the new server on the socket",
        Duration::from_secs(20),
        || {
            assert!(
                srv.child.try_wait().expect("try_wait").is_none(),
                "the server exited: {}",
                srv.log()
            );
            (server_pid(&socket) == Some(srv.pid())).then_some(())
        },
    );
    let mut a = TestApp::connect(&socket, A.0, A.1).expect("a attaches");
    let mut b = TestApp::connect(&socket, B.0, B.1).expect("b attaches");
    check_forwarding(&mut a, &mut b, b"on the new socket");
    kill(srv.pid(), Signal::TERM);
    let st = srv.wait_exit(Duration::from_secs(10));
    assert!(st.success(), "{}", srv.log());
}

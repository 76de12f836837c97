//! A minimal app for the server tests: grant-pool rings over a real shm grant, the control
//! client, and raw Ethernet frames. No TCP/IP stack: the tests look at frames.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use grant_pool::shm::{ShmBackend, ShmGrant, ShmNotifier};
use grant_pool::{
    Access, AppPort, BufHandle, BufIdx, Desc, DomId, Grant, GrantBackend, Notifier, Pool, PoolId,
    PortLayout,
};
use switch::ctl::client::Attached;
use switch::ctl::{Client, CtlError, GrantRepr, Name, StatsRepr};

/// EtherType of test frames (local experimental).
pub const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// The uid/gid of this process (the server checks them with SO_PEERCRED).
pub fn my_ids() -> (u32, u32) {
    (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    )
}

/// A server process running the `ferrite` binary on a config in its own directory.
pub struct ServerProc {
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub config: PathBuf,
    /// Whether dropping this removes `dir` (a test that restarts in it turns this off).
    pub cleanup: bool,
}

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrite-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// The usual config: one sim sink port and the given apps (`name`, `mac`) for this uid.
pub fn config_text(socket: &Path, apps: &[(&str, &str)], extra: &str) -> String {
    let (uid, _) = my_ids();
    let mut s = format!(
        "[server]\nsocket = \"{}\"\nhandshake_timeout_ms = 500\n{extra}\n[[ports]]\nname = \"sim0\"\nbackend = \"sim\"\n",
        socket.display()
    );
    for (n, m) in apps {
        s += &format!("[[apps]]\nuid = {uid}\nname = \"{n}\"\nmac = \"{m}\"\n");
    }
    s
}

impl ServerProc {
    /// Starts `ferrite serve` on `config` (written into `dir`) and waits until it answers.
    pub fn start(dir: &Path, config: &str) -> Self {
        std::fs::create_dir_all(dir).expect("dir");
        let socket = dir.join("ctl.sock");
        let cfg = dir.join("ferrite.toml");
        std::fs::write(&cfg, config).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_ferrite"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ferrite");
        let s = Self {
            child,
            dir: dir.to_owned(),
            socket,
            config: cfg,
            cleanup: true,
        };
        s.wait_ready();
        s
    }

    /// Waits (bounded) until a stats request succeeds.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Client::connect(&self.socket)
                .and_then(|mut c| c.stats())
                .is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not come up on {}", self.socket.display());
    }

    /// One stats reply.
    pub fn stats(&self) -> StatsRepr {
        Client::connect(&self.socket)
            .and_then(|mut c| c.stats())
            .expect("stats")
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, sig).expect("kill");
    }

    /// Waits (bounded) for the process to exit; returns its status and stderr.
    pub fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (st, err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the server did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if self.cleanup {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A test app attached to the server.
pub struct TestApp {
    pub client: Client,
    pub grant: ShmGrant,
    pub notifier: ShmNotifier,
    pub port: AppPort,
    pub pool: Pool,
    pub layout: PortLayout,
    pub mac: [u8; 6],
    pub attached: Attached,
    /// Buffers this app holds and may use.
    pub free: Vec<u32>,
}

/// Parses `aa:bb:..`.
pub fn mac(s: &str) -> [u8; 6] {
    switch::server::config::parse_mac(s).expect("mac")
}

/// Builds port memory and the grant message for it.
pub fn prepare(layout: PortLayout) -> (ShmGrant, AppPort, GrantRepr) {
    let backend = ShmBackend::new(DomId(1));
    let grant = backend
        .grant(DomId::SELF_HOST, layout.pages(), Access::ReadWrite)
        .expect("grant");
    let port = AppPort::create(grant.memory().clone(), layout, PoolId(0)).expect("port");
    let h = layout.header();
    let repr = GrantRepr {
        rx_size: h.rx_size,
        tx_size: h.tx_size,
        fill_size: h.fill_size,
        comp_size: h.comp_size,
        buf_size: h.buf_size,
        buf_count: h.buf_count,
        domid: 1,
        grant_fds: grant.attachments().len() as u8,
        notify_fds: 0,
        notify_port: 0,
        refs: grant.refs().iter().map(|r| r.0).collect(),
    };
    (grant, port, repr)
}

impl TestApp {
    /// Connects as `name`/`mac` with rings of 256 and 512 buffers.
    pub fn connect(socket: &Path, name: &str, mac_s: &str) -> Result<Self, CtlError> {
        let layout = PortLayout::simple(256, 512).expect("layout");
        let mut client = Client::connect(socket)?;
        let m = mac(mac_s);
        client.hello(&Name::new(name)?, m)?;
        let (grant, port, repr) = prepare(layout);
        let (attached, bell) = client.grant(&repr, &grant.attachments())?;
        let notifier = ShmBackend::new(DomId(1))
            .bind_notifier(DomId::SELF_HOST, 0, &bell)
            .expect("bind the server's doorbell");
        let pool = Pool::new(
            PoolId(attached.pool),
            port.pool.layout(),
            port.pool.memory().clone(),
        )
        .expect("pool");
        let mut app = Self {
            client,
            grant,
            notifier,
            port,
            pool,
            layout,
            mac: m,
            attached,
            free: (0..512).rev().collect(),
        };
        app.post_fill(128);
        Ok(app)
    }

    /// The handle of buffer `i` of this app's pool.
    pub fn handle(&self, i: u32) -> BufHandle {
        self.pool.handle(BufIdx(i)).expect("handle")
    }

    /// Offers `n` free buffers on the fill ring.
    pub fn post_fill(&mut self, n: u32) {
        let k = self.port.fill.reserve(n).expect("fill reserve");
        for j in 0..k {
            let i = self.free.pop().expect("free buffer");
            let h = self.handle(i);
            self.port.fill.write(j, Desc::new(h, 0));
        }
        self.port.fill.publish(k);
    }

    /// Queues one frame from `src` to `dst` carrying `payload` (padded to 60 bytes).
    pub fn send_from(&mut self, src: [u8; 6], dst: [u8; 6], payload: &[u8]) {
        let i = self.free.pop().expect("free buffer");
        let h = self.handle(i);
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE);
        f.extend_from_slice(payload);
        f.resize(f.len().max(60), 0);
        self.pool.buf(h).expect("buf").write(0, &f).expect("write");
        self.push_tx(Desc::new(h, f.len() as u16));
    }

    /// Queues one frame from this app to `dst`.
    pub fn send(&mut self, dst: [u8; 6], payload: &[u8]) {
        self.send_from(self.mac, dst, payload)
    }

    /// Publishes one raw descriptor on the tx ring (whatever it says).
    pub fn push_tx(&mut self, d: Desc) {
        assert_eq!(
            self.port.tx.reserve(1).expect("tx reserve"),
            1,
            "tx ring full"
        );
        self.port.tx.write(0, d);
        self.port.tx.publish(1);
        if self.port.tx.needs_wakeup() {
            let _ = self.notifier.notify();
        }
    }

    /// Publishes raw descriptors on the tx ring in one batch.
    pub fn push_tx_many(&mut self, ds: &[Desc]) {
        let n = ds.len() as u32;
        assert_eq!(
            self.port.tx.reserve(n).expect("tx reserve"),
            n,
            "tx ring full"
        );
        for (i, d) in ds.iter().enumerate() {
            self.port.tx.write(i as u32, *d);
        }
        self.port.tx.publish(n);
        if self.port.tx.needs_wakeup() {
            let _ = self.notifier.notify();
        }
    }

    /// Takes back completed buffers and received frames (whose buffers go back on fill).
    pub fn poll(&mut self) -> Vec<Vec<u8>> {
        let n = self.port.comp.peek(1024).unwrap_or(0);
        for i in 0..n {
            let d = self.port.comp.read(i);
            self.free.push(d.buf().idx().0);
        }
        self.port.comp.release(n);
        let mut frames = Vec::new();
        let n = self.port.rx.peek(1024).unwrap_or(0);
        for i in 0..n {
            let d = self.port.rx.read(i);
            let mut b = vec![0u8; d.len as usize];
            if let Ok(r) = self.pool.buf(d.buf()) {
                let _ = r.read(0, &mut b);
            }
            frames.push(b);
            self.free.push(d.buf().idx().0);
        }
        self.port.rx.release(n);
        if n > 0 {
            self.post_fill(n);
        }
        frames
    }

    /// Polls until a frame whose payload starts with `tag` arrives (bounded); returns it.
    pub fn expect_frame(&mut self, tag: &[u8], within: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(f) = self
                .poll()
                .into_iter()
                .find(|f| f.get(14..14 + tag.len()) == Some(tag))
            {
                return Some(f);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    }
}

/// Sends a tagged frame from `a` to `b` and checks it arrives intact (bounded).
pub fn check_forwarding(a: &mut TestApp, b: &mut TestApp, tag: &[u8]) {
    a.send(b.mac, tag);
    let f = b
        .expect_frame(tag, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("frame {tag:?} from {:?} did not arrive", a.mac));
    assert_eq!(&f[0..6], &b.mac, "destination");
    assert_eq!(&f[6..12], &a.mac, "source");
    assert_eq!(&f[12..14], &ETHERTYPE);
    a.poll();
}

/// The port entry of `name` in a stats reply.
pub fn port<'a>(s: &'a StatsRepr, name: &str) -> Option<&'a switch::ctl::PortStatsRepr> {
    s.ports.iter().find(|p| p.name == name)
}

/// Polls stats until `pred` holds (bounded).
pub fn wait_stats(srv: &ServerProc, what: &str, pred: impl Fn(&StatsRepr) -> bool) -> StatsRepr {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = srv.stats();
        if pred(&s) {
            return s;
        }
        if Instant::now() > deadline {
            panic!("stats never showed {what}: {s:#?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

//! Closing descriptors an app sent, on a thread of their own.
//!
//! Closing a descriptor can block: the last close of a TCP socket with `SO_LINGER` set and
//! data queued waits for the linger time, and closing a FUSE file asks the file system's
//! daemon (which the app may be) to flush it. The control thread therefore never closes a
//! descriptor an app chose; it hands each to the closer, which may block on it without
//! holding up anything else.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crossbeam_channel::Sender;

/// Descriptors waiting to be closed past which the closer is reported stuck.
const STUCK: usize = 1024;

/// The closing thread's inbox.
#[derive(Debug)]
pub(super) struct Closer {
    tx: Sender<OwnedFd>,
    pending: Arc<AtomicUsize>,
}

impl Closer {
    /// Starts the closing thread; it ends when the `Closer` is dropped and its inbox is empty.
    pub(super) fn spawn() -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<OwnedFd>();
        let pending = Arc::new(AtomicUsize::new(0));
        let p = pending.clone();
        std::thread::Builder::new()
            .name("ferrite-closer".into())
            .spawn(move || {
                for fd in rx {
                    drop(fd);
                    p.fetch_sub(1, Relaxed);
                }
            })?;
        Ok(Self { tx, pending })
    }

    /// Hands `fd` to the closing thread; never blocks.
    pub(super) fn close(&self, fd: OwnedFd) {
        let n = self.pending.fetch_add(1, Relaxed) + 1;
        if n == STUCK {
            tracing::warn!(
                pending = n,
                "descriptors apps sent are waiting to be closed: a close is blocked"
            );
        }
        if let Err(e) = self.tx.send(fd) {
            // The thread is gone (it never exits while we hold the sender): keep the
            // descriptor open rather than close it here.
            std::mem::forget(e.into_inner());
        }
    }

    /// Descriptors not closed yet.
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A TCP socket whose last close waits out its `SO_LINGER` time: its data cannot leave
    /// (the peer is never accepted, never reads).
    fn lingering(linger: Duration) -> (std::net::TcpListener, OwnedFd) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let tcp =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        tcp.set_nonblocking(true).expect("non-blocking");
        rustix::net::sockopt::set_socket_linger(&tcp, Some(linger)).expect("SO_LINGER");
        while std::io::Write::write(&mut &tcp, &[0u8; 65536]).is_ok() {}
        (listener, tcp.into())
    }

    #[test]
    fn a_close_that_blocks_holds_up_the_closer_not_the_caller() {
        let closer = Closer::spawn().expect("closer");
        let (_listener, fd) = lingering(Duration::from_secs(2));
        closer.close(fd);
        closer.close(OwnedFd::from(
            std::fs::File::open("/dev/null").expect("null"),
        ));
        // Had `close` closed it here, the linger would be over and nothing pending.
        assert!(
            closer.pending() >= 1,
            "the lingering close is under way elsewhere"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while closer.pending() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(closer.pending(), 0, "every descriptor closed");
    }
}

//! `ferrite capture`: a control connection that asked for a port's frames is handed to a
//! thread of its own, which streams what the switch's tap ([`crate::Tap`]) takes to it as
//! `CaptureFrame` messages. The forwarding thread only ever `try_send`s into the tap's
//! bounded queue (a frame that does not fit is counted as lost); this thread alone waits on
//! the peer, and a peer too slow to read for [`SEND_TIMEOUT`] ends its capture.

use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use rustix::event::{PollFd, PollFlags};

use crate::Captured;
use crate::ctl::transport::{SeqPacket, Transport};
use crate::ctl::wire::{Direction, Repr};

/// Bytes of frames the tap queues, about, before it counts the rest as lost.
pub const QUEUE_BYTES: usize = 16 << 20;

/// Frames the tap queues for a snaplen of `snaplen` bytes: [`QUEUE_BYTES`] worth, 64 to
/// 4096 of them.
pub fn queue_len(snaplen: u32) -> usize {
    (QUEUE_BYTES / (snaplen as usize).max(1)).clamp(64, 4096)
}
/// Longest a send to the peer may block before the capture ends.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the thread looks whether the peer is still there while no frame comes.
const CHECK: Duration = Duration::from_millis(200);

/// Streams `frames` to `conn` until `count` were sent (0: no limit), the peer goes or the tap
/// ends; then calls `done` (which takes the tap off the switch) and closes the connection.
pub fn spawn(
    conn: SeqPacket,
    frames: Receiver<Captured>,
    count: u64,
    done: impl FnOnce() + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ferrite-capture".into())
        .spawn(move || {
            let why = stream(conn, &frames, count);
            tracing::info!("capture ended: {why}");
            done();
        })
        .map(|_| ())
}

fn stream(mut conn: SeqPacket, frames: &Receiver<Captured>, count: u64) -> &'static str {
    if conn.set_nonblocking(false).is_err() || conn.set_write_timeout(Some(SEND_TIMEOUT)).is_err() {
        return "the connection could not be set up";
    }
    let mut sent = 0u64;
    loop {
        match frames.recv_timeout(CHECK) {
            Ok(c) => {
                let m = Repr::CaptureFrame {
                    ts_ns: c.ts_ns,
                    orig_len: c.orig_len,
                    lost: c.lost,
                    direction: if c.tx { Direction::Tx } else { Direction::Rx },
                    data: c.data,
                };
                if conn.send(&m.to_bytes(), &[]).is_err() {
                    return "the peer went (or read too slowly)";
                }
                sent += 1;
                if count > 0 && sent >= count {
                    let _ = conn.send(&Repr::Closed.to_bytes(), &[]);
                    return "the frames asked for were sent";
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // The peer sends nothing during a capture: readable means it closed.
                let mut p = [PollFd::new(&conn, PollFlags::IN)];
                let zero = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if rustix::event::poll(&mut p, Some(&zero)).unwrap_or(0) > 0 {
                    return "the peer went";
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = conn.send(&Repr::Closed.to_bytes(), &[]);
                return "the port left the switch";
            }
        }
    }
}

//! The client side of the control protocol: what an app (or `ferrite stats`) calls.
//!
//! ```no_run
//! # use switch::ctl::{Client, GrantRepr, Name};
//! # fn f(grant: GrantRepr, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<(), switch::ctl::CtlError> {
//! let mut c = Client::connect("/run/ferrite/ctl.sock".as_ref())?;
//! let limits = c.hello(&Name::new("web")?, [0x02, 0, 0, 0, 0, 1])?;
//! // ... lay out the port memory within `limits`, then:
//! let (attached, doorbell) = c.grant(&grant, fds)?; // the grant's attachments go out,
//! // the app's end of the doorbell the server made comes back
//! // ... run; when the server goes away, `c` reads Closed: reconnect and redo the handshake.
//! c.detach()?;
//! # Ok(()) }
//! ```

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use super::transport::{Received, SeqPacket, Transport};
use super::wire::{GrantRepr, Limits, MAX_SERVER_MSG, Name, Repr, StatsRepr};
use super::{CtlError, ErrorCode};

/// What `Connected` told the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The app's switch port.
    pub port: u16,
    /// The pool id the server gave the app's pool: the top byte of the handles of the app's
    /// own buffers in descriptors the server writes.
    pub pool: u8,
    /// The server instance (changes when the server restarts).
    pub instance: u64,
}

/// A control connection from the client side.
#[derive(Debug)]
pub struct Client<T: Transport = SeqPacket> {
    t: T,
    buf: Vec<u8>,
}

impl Client<SeqPacket> {
    /// Connects to the server's control socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, CtlError> {
        Ok(Self::new(SeqPacket::connect(path)?))
    }
}

impl<T: Transport> Client<T> {
    /// A client over an already connected transport.
    pub fn new(t: T) -> Self {
        Self {
            t,
            buf: vec![0; MAX_SERVER_MSG],
        }
    }

    /// The transport (e.g. to poll its descriptor for the server closing the connection).
    pub fn transport(&mut self) -> &mut T {
        &mut self.t
    }

    /// Sends `req` with `fds` and waits for one answer; an `Error` answer becomes
    /// [`CtlError::Remote`].
    pub fn request(&mut self, req: &Repr, fds: &[BorrowedFd<'_>]) -> Result<Repr, CtlError> {
        self.t.send(&req.to_bytes(), fds)?;
        self.receive()
    }

    /// Waits for one message from the server; an `Error` becomes [`CtlError::Remote`].
    /// Descriptors that came with it are closed.
    pub fn receive(&mut self) -> Result<Repr, CtlError> {
        self.receive_with_fds().map(|(r, _)| r)
    }

    /// Waits for one message from the server and the descriptors that came with it.
    fn receive_with_fds(&mut self) -> Result<(Repr, Vec<OwnedFd>), CtlError> {
        let mut fds: Vec<OwnedFd> = Vec::new();
        let len = loop {
            match self.t.recv(&mut self.buf, &mut fds)? {
                Received::Message {
                    len,
                    truncated: false,
                    ..
                } => break len,
                Received::Message { .. } => {
                    return Err(CtlError::refused(
                        ErrorCode::Malformed,
                        "the server sent an over-long message",
                    ));
                }
                Received::WouldBlock => std::thread::yield_now(),
                Received::Closed => return Err(CtlError::Closed),
            }
        };
        match Repr::from_bytes(&self.buf[..len])? {
            Repr::Error { code, text } => Err(CtlError::Remote { code, text }),
            r => Ok((r, fds)),
        }
    }

    /// Says who the app is; returns the limits its grant must respect.
    pub fn hello(&mut self, name: &Name, mac: [u8; 6]) -> Result<Limits, CtlError> {
        match self.request(
            &Repr::Hello {
                name: name.clone(),
                mac,
            },
            &[],
        )? {
            Repr::InitWait(l) => Ok(l),
            r => Err(CtlError::Unexpected(r.kind())),
        }
    }

    /// Grants the port: `fds` are the grant's attachments (`Grant::attachments`), as many as
    /// `g.grant_fds` says. Returns what `Connected` said and the descriptors that came with
    /// it: the app's end of the doorbell the server made, to bind with
    /// `GrantBackend::bind_notifier` (port 0).
    pub fn grant(
        &mut self,
        g: &GrantRepr,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(Attached, Vec<OwnedFd>), CtlError> {
        self.t.send(&Repr::Grant(g.clone()).to_bytes(), fds)?;
        match self.receive_with_fds()? {
            (
                Repr::Connected {
                    port,
                    pool,
                    instance,
                },
                bell,
            ) => Ok((
                Attached {
                    port,
                    pool,
                    instance,
                },
                bell,
            )),
            (r, _) => Err(CtlError::Unexpected(r.kind())),
        }
    }

    /// Asks for every port's counters.
    pub fn stats(&mut self) -> Result<StatsRepr, CtlError> {
        match self.request(&Repr::StatsRequest, &[])? {
            Repr::StatsReply(s) => Ok(s),
            r => Err(CtlError::Unexpected(r.kind())),
        }
    }

    /// Asks for the frames of switch port `port` (see [`Repr::CaptureRequest`]); read them
    /// with [`Client::next_frame`]. The server refuses a peer that is neither root nor its
    /// own user.
    pub fn capture(
        &mut self,
        port: u16,
        direction: super::wire::Direction,
        snaplen: u32,
        count: u64,
    ) -> Result<(), CtlError> {
        let r = Repr::CaptureRequest {
            port,
            direction,
            snaplen,
            count,
        };
        self.t.send(&r.to_bytes(), &[])
    }

    /// The next captured frame (a [`Repr::CaptureFrame`]), or `None` once the capture ended
    /// (the frames asked for came, or the port left the switch).
    pub fn next_frame(&mut self) -> Result<Option<Repr>, CtlError> {
        match self.receive() {
            Ok(f @ Repr::CaptureFrame { .. }) => Ok(Some(f)),
            Ok(Repr::Closed) | Err(CtlError::Closed) => Ok(None),
            Ok(r) => Err(CtlError::Unexpected(r.kind())),
            Err(e) => Err(e),
        }
    }

    /// Takes the port off the switch; the server answers Closed and closes the connection.
    pub fn detach(&mut self) -> Result<(), CtlError> {
        match self.request(&Repr::Detach, &[])? {
            Repr::Closed => Ok(()),
            r => Err(CtlError::Unexpected(r.kind())),
        }
    }
}

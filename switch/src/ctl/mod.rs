//! The control plane: how an app attaches a port to the server, detaches it, and how anyone
//! allowed onto the control socket reads the counters.
//!
//! The protocol (see `docs/control-protocol.md`) is a versioned exchange of small binary
//! messages ([`wire`]) on a Unix `SOCK_SEQPACKET` socket with fd passing ([`transport`]), with
//! states after xenbus ([`State`]): an app says `Hello` with its name and MAC; the server checks
//! the peer's credentials against its configuration and answers `InitWait` with limits; the app
//! sends `Grant` with its port's memory and notifiers; the server validates every field against
//! the limits and the memory it actually received, maps it, puts a port on the switch and
//! answers `Connected`. Anything malformed or hostile gets an `Error` answer and the connection
//! is closed; no other connection notices.
//!
//! The handshake logic ([`session`]) is separate from socket I/O so that another transport
//! (xenstore) can drive the same state machine. Apps use [`client`].

pub mod client;
pub mod export;
pub mod session;
pub mod transport;
pub mod wire;

pub use client::Client;
pub use session::{AllowedApp, Policy, Session, State, Step};
pub use transport::{PeerCred, Received, SeqPacket, SeqPacketListener, Transport};
pub use wire::{GrantRepr, Kind, Limits, Name, PortCounters, PortStatsRepr, Repr, StatsRepr};

/// Why a control message or connection was refused: sent in `Error` answers and counted by
/// the server per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum ErrorCode {
    /// The message is not a well-formed message of this protocol.
    Malformed = 1,
    /// The protocol version is not one this server speaks.
    UnsupportedVersion = 2,
    /// The message is well formed but not allowed in the connection's state.
    UnexpectedMessage = 3,
    /// The peer's uid/gid may not attach with this name and MAC.
    NotPermitted = 4,
    /// The name is not acceptable.
    BadName = 5,
    /// The MAC is not acceptable.
    BadMac = 6,
    /// The port layout (ring sizes, buffer size/count) is outside the limits.
    BadLayout = 7,
    /// The granted memory does not match the layout (size, seals, mapping).
    BadMemory = 8,
    /// The wrong number or kind of file descriptors came with the message.
    BadFds = 9,
    /// The handshake did not complete in time.
    Timeout = 10,
    /// The name or MAC is already attached, or the switch has no room for another port.
    Busy = 11,
    /// The server could not complete a valid request (e.g. mapping failed).
    Internal = 12,
    /// A code this side does not know (from a newer peer).
    Unknown = 0xffff,
}

impl ErrorCode {
    /// Every code a server counts, in wire order.
    pub const ALL: [ErrorCode; 12] = [
        Self::Malformed,
        Self::UnsupportedVersion,
        Self::UnexpectedMessage,
        Self::NotPermitted,
        Self::BadName,
        Self::BadMac,
        Self::BadLayout,
        Self::BadMemory,
        Self::BadFds,
        Self::Timeout,
        Self::Busy,
        Self::Internal,
    ];

    /// The code a raw wire value names ([`ErrorCode::Unknown`] for any other).
    pub fn from_raw(v: u16) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|c| *c as u16 == v)
            .unwrap_or(Self::Unknown)
    }

    /// A short lower-case name for logs and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnexpectedMessage => "unexpected_message",
            Self::NotPermitted => "not_permitted",
            Self::BadName => "bad_name",
            Self::BadMac => "bad_mac",
            Self::BadLayout => "bad_layout",
            Self::BadMemory => "bad_memory",
            Self::BadFds => "bad_fds",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl core::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A message was refused by this side's validation; `code` goes into the `Error` answer.
    #[error("{code}: {text}")]
    Refused {
        /// Why.
        code: ErrorCode,
        /// What was wrong, for the peer and the log.
        text: String,
    },
    /// The server answered with an `Error` message (client side).
    #[error("the server refused: {code}: {text}")]
    Remote {
        /// The server's reason.
        code: ErrorCode,
        /// The server's text.
        text: String,
    },
    /// The peer sent a well-formed message this side did not expect (client side).
    #[error("unexpected {0:?} message from the server")]
    Unexpected(Kind),
    /// The peer closed the connection.
    #[error("the peer closed the control connection")]
    Closed,
    /// A socket operation failed.
    #[error("control socket {what}: {source}")]
    Io {
        /// What was being done (with the socket path when known).
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl CtlError {
    pub(crate) fn io(what: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Self::Io {
            what: what.into(),
            source: source.into(),
        }
    }

    /// A refusal with `code`.
    pub fn refused(code: ErrorCode, text: impl Into<String>) -> Self {
        Self::Refused {
            code,
            text: text.into(),
        }
    }
}

//! App domains: the library that makes a process a Ferrite application with its own TCP/IP
//! stack (smoltcp) over rings and pools it grants to the server.
//!
//! An app owns its pool and rings (one grant), hands them to the server in the control
//! handshake, and drives a smoltcp interface through [`device::RingDevice`], whose tokens read
//! and write the pool buffers in place. It must never trust what the server writes into the
//! rings, and it keeps its TCP/IP state across server restarts: when the server dies, the app
//! keeps its interface, sockets and pool and re-handshakes with backoff.
#![forbid(unsafe_code)]

pub mod cli;
pub mod device;
pub mod domain;
pub mod http;
pub mod services;
pub mod sockperf;
pub mod stack;
pub mod transport;

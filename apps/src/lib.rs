//! App domains: the library that makes a process a Ferrite application with its own TCP/IP
//! stack (smoltcp) over rings and pools it grants to the server.
#![forbid(unsafe_code)]

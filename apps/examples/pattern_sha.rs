//! Prints the SHA-256 of the first BYTES bytes of the pattern stream that `ferrite-bulk`
//! sends for SEED (default 1): the reference a test checks a transferred stream against,
//! computed away from the machines that moved it.
//!
//! Usage: `pattern_sha BYTES [SEED]`
#![forbid(unsafe_code)]

use apps::services::Pattern;
use sha2::{Digest, Sha256};

/// The argument `s` as a number, `default` when absent; exits with a usage error otherwise.
fn number(s: Option<String>, what: &str, default: Option<u64>) -> u64 {
    match (s, default) {
        (Some(s), _) => s.parse().unwrap_or_else(|_| {
            eprintln!("pattern_sha: {what} must be a whole number, got {s:?}");
            std::process::exit(2)
        }),
        (None, Some(d)) => d,
        (None, None) => {
            eprintln!("usage: pattern_sha BYTES [SEED]");
            std::process::exit(2)
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let bytes = number(args.next(), "BYTES", None);
    let seed = number(args.next(), "SEED", Some(1));
    let mut pattern = Pattern::new(seed);
    let mut hasher = Sha256::new();
    // The source fills and sends 64 KiB chunks, a prefix of the last one.
    let mut chunk = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        pattern.fill(&mut chunk);
        let n = left.min(chunk.len() as u64) as usize;
        hasher.update(&chunk[..n]);
        left -= n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("{hex}");
}

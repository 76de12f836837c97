//! The coverage-guided fuzzing binary: `afl TARGET` runs harness `TARGET` (one of
//! `fuzz::TARGETS`) on the inputs afl-fuzz gives it. Built by `fuzz/run.sh` with
//! `cargo afl build` (feature `afl`).
#![forbid(unsafe_code)]

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(harness) = fuzz::target(&name) else {
        let names: Vec<&str> = fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: afl TARGET (one of {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| {
        harness(data);
    });
}

//! Every harness on its committed corpus (`corpus/<target>/`) and on a fixed number of
//! inputs the seeded mutator makes from it: seconds per target, the same inputs every run.

use std::path::PathBuf;

use fuzz::mutate::Mutator;

/// Inputs the mutator makes per target.
const MUTATIONS: usize = 20_000;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("corpus file"))
        .collect()
}

fn run(target: &str, max_len: usize) {
    run_n(target, max_len, MUTATIONS);
}

/// [`run`] with `mutations` inputs from the mutator (for a harness that costs milliseconds).
fn run_n(target: &str, max_len: usize, mutations: usize) {
    let h = fuzz::target(target).expect("a target");
    let inputs = corpus(target);
    assert!(!inputs.is_empty(), "corpus/{target} is empty");
    for i in &inputs {
        h(i);
    }
    let seed = target.bytes().fold(0xcbf2_9ce4_8422_2325u64, |a, b| {
        (a ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut m = Mutator::new(seed, max_len);
    for _ in 0..mutations {
        let input = m.next(&inputs);
        h(&input);
    }
}

#[test]
fn wire() {
    run("wire", 4096);
}

#[test]
fn config() {
    run("config", 4096);
}

#[test]
fn fdb() {
    run("fdb", 2048);
}

#[test]
fn app_port() {
    run("app_port", 1024);
}

#[test]
fn blocks() {
    run("blocks", 512);
}

#[test]
fn gso() {
    run("gso", 9000);
}

#[test]
fn checksum() {
    run("checksum", 2048);
}

#[test]
fn xen_attach() {
    run("xen_attach", 512);
}

#[test]
fn xen_answer() {
    run("xen_answer", 1024);
}

#[test]
fn xen_refs() {
    run("xen_refs", 1024);
}

#[test]
fn xenstore() {
    run("xenstore", 8192);
}

#[test]
fn session() {
    run("session", 1024);
}

#[test]
fn switch_poll() {
    run_n("switch_poll", 512, 4_000);
}

#[test]
fn every_target_has_a_test() {
    let names: Vec<&str> = fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "wire",
            "config",
            "fdb",
            "app_port",
            "blocks",
            "gso",
            "checksum",
            "xen_attach",
            "xen_answer",
            "xen_refs",
            "xenstore",
            "session",
            "switch_poll"
        ]
    );
}

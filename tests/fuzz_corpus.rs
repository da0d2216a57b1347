//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`) through the same
//! functions the cargo-fuzz targets run (`fuzz/targets.rs`): no fuzzing in
//! CI, but every input the fuzzer found interesting stays a regression test.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{target}: {} panics", file.display());
        }
    }
}

#[test]
fn credentials_corpus() {
    replay("credentials", targets::credentials);
}

#[test]
fn token_corpus() {
    replay("token", targets::token);
}

#[test]
fn login_form_corpus() {
    replay("login_form", targets::login_form);
}

#[test]
fn phc_corpus() {
    replay("phc", targets::phc);
}

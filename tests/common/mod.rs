//! Helpers shared by the root integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The built example binary `name` (target/<profile>/examples/<name>);
/// `cargo test` builds the examples before running the tests.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.is_file(),
        "{} not built: run the whole suite (`cargo test` builds the examples) or `cargo build --example {name}` first",
        path.display()
    );
    path
}

/// `../shared/conformance`; fails loudly when missing.
pub fn conformance_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance");
    assert!(
        dir.join("README.md").is_file(),
        "conformance vectors missing at {}",
        dir.display()
    );
    dir
}

/// A CSV file as (header, rows).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    (
        header,
        reader
            .records()
            .map(|r| r.unwrap().iter().map(str::to_string).collect())
            .collect(),
    )
}

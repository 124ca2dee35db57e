//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared/conformance` relative to the repository root. Fails loudly
/// (never skips) when the folder is missing: the vectors are the
/// project's ground truth.
pub fn conformance_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    assert!(
        dir.join("README.md").is_file(),
        "conformance vectors not found at {}: clone the repository next to `shared/` (CI does)",
        dir.display()
    );
    dir
}

/// `../shared/data/5G_trace.csv` relative to the repository root.
pub fn base_trace_path() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/5G_trace.csv");
    assert!(path.is_file(), "base trace not found at {}", path.display());
    path
}

/// Reads a CSV file as (header, rows of strings).
pub fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// Relative/absolute closeness.
pub fn close(got: f64, want: f64, rel: f64, abs: f64) -> bool {
    if got == want {
        return true;
    }
    let diff = (got - want).abs();
    diff <= abs || diff <= rel * want.abs().max(got.abs())
}

//! The `replay` example reproduces every conformance episode's `stats.csv`
//! (run as the built example binary, exactly as a user runs it).

mod common;

use common::{conformance_dir as conformance, example};
use std::path::{Path, PathBuf};
use std::process::Command;

fn read(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_string).collect())
        .collect()
}

fn same_cell(column: &str, got: &str, want: &str) -> bool {
    if got == want {
        return true;
    }
    match (got.parse::<f64>(), want.parse::<f64>()) {
        (Ok(g), Ok(w)) if column.starts_with("response_time") => {
            (g - w).abs() <= 1e-12 + 1e-9 * w.abs()
        }
        (Ok(g), Ok(w)) => g == w || (g - w).abs() <= 1e-15 * w.abs(),
        _ => false,
    }
}

#[test]
fn replay_reproduces_every_episode() {
    let out_dir = std::env::temp_dir().join(format!("dfaas-replay-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut episodes: Vec<PathBuf> = std::fs::read_dir(conformance().join("episodes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    episodes.sort();
    assert_eq!(episodes.len(), 6);
    for dir in &episodes {
        let out = out_dir.join("stats.csv");
        let status = Command::new(example("replay"))
            .arg("--episode")
            .arg(dir)
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success(), "replay failed on {}", dir.display());
        let (got, want) = (read(&out), read(&dir.join("stats.csv")));
        assert_eq!(got[0], want[0], "{}: header", dir.display());
        assert_eq!(got.len(), want.len(), "{}: rows", dir.display());
        for (r, (g, w)) in got.iter().zip(&want).enumerate().skip(1) {
            for ((column, gc), wc) in want[0].iter().zip(g).zip(w) {
                assert!(
                    same_cell(column, gc, wc),
                    "{} row {r} {column}: got {gc}, want {wc}",
                    dir.display()
                );
            }
        }
    }
    // The four-file form gives the same output as --episode (the loop's
    // last run).
    let dir = episodes.last().unwrap();
    let out = out_dir.join("four.csv");
    let mut command = Command::new(example("replay"));
    for (flag, file) in [
        ("--config", "config.yaml"),
        ("--input-rate", "input_rate.csv"),
        ("--bandwidth", "bandwidth.csv"),
        ("--actions", "actions.csv"),
    ] {
        command.arg(flag).arg(dir.join(file));
    }
    assert!(command.arg("--out").arg(&out).status().unwrap().success());
    assert_eq!(read(&out), read(&out_dir.join("stats.csv")));
    std::fs::remove_dir_all(&out_dir).unwrap();
}

#[test]
fn replay_reports_bad_arguments_without_panicking() {
    let output = Command::new(example("replay"))
        .args(["--episode", "/nonexistent/episode"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("config.yaml") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

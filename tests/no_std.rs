//! Dependency promises: `dfaas-core` builds without its default `std`
//! feature (with `json`, which needs only `alloc`) and no dependency of
//! that build turns on a `std` feature; so does `dfaas-infer` (checkpoint
//! parsing and inference); `std` alone pulls in no serde; the facade
//! without its `gpu` feature compiles nothing of wgpu.

use std::path::PathBuf;
use std::process::Command;

fn cargo() -> Command {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(env!("CARGO_MANIFEST_DIR"));
    command
}

/// The output of `cargo tree` with `args`.
fn tree(args: &[&str]) -> String {
    let out = cargo().arg("tree").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dfaas_core_builds_without_std() {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no_std");
    let output = cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "dfaas-core",
            "--no-default-features",
            "--features",
            "json",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "no_std build failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let tree = tree(&[
        "-p",
        "dfaas-core",
        "--no-default-features",
        "--features",
        "json",
        "-e",
        "normal,features",
    ]);
    let with_std: Vec<&str> = tree
        .lines()
        .filter(|l| l.contains("feature \"std\""))
        .collect();
    assert!(
        with_std.is_empty(),
        "dependencies turn std on:\n{}",
        with_std.join("\n")
    );
}

/// `dfaas-infer` without `std`: it builds, and no dependency turns `std` on.
#[test]
fn dfaas_infer_builds_without_std() {
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no_std");
    let output = cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "dfaas-infer",
            "--no-default-features",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "no_std build of dfaas-infer failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = tree(&[
        "-p",
        "dfaas-infer",
        "--no-default-features",
        "-e",
        "normal,features",
    ]);
    assert!(tree.contains("safetensors"), "{tree}");
    let with_std: Vec<&str> = tree
        .lines()
        .filter(|l| l.contains("feature \"std\""))
        .collect();
    assert!(
        with_std.is_empty(),
        "dependencies of dfaas-infer turn std on:\n{}",
        with_std.join("\n")
    );
}

/// `std` alone switches on no optional feature it does not need: no serde.
#[test]
fn std_alone_pulls_in_no_serde() {
    let tree = tree(&[
        "-p",
        "dfaas-core",
        "--no-default-features",
        "--features",
        "std",
        "-e",
        "normal",
    ]);
    // (csv's own `serde_core` is a hard dependency of csv, not a feature.)
    assert!(
        !tree.lines().any(|l| l.contains("── serde v")),
        "std pulls in serde:\n{tree}"
    );
}

/// A CPU-only user of the facade (`--no-default-features`) gets no wgpu.
#[test]
fn the_facade_without_gpu_has_no_wgpu() {
    let tree = tree(&["-p", "dfaas", "--no-default-features", "-e", "normal"]);
    assert!(tree.contains("dfaas-policies"), "{tree}");
    assert!(
        !tree.contains("wgpu") && !tree.contains("dfaas-gpu"),
        "wgpu without the gpu feature:\n{tree}"
    );
}

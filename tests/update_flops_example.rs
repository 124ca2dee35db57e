//! The `update_flops` example's FLOP count of the default preset's update
//! equals a count by hand, and its peak is the one it is given.

mod common;

use common::example;
use std::process::Command;

#[test]
fn update_flops_counts_the_default_update_by_hand() {
    let output = Command::new(example("update_flops"))
        .args([
            "--threads",
            "2",
            "--rounds",
            "1",
            "--ghz",
            "1",
            "--flops-per-cycle",
            "8",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    // The default scenario is a triangle: each agent's observation has 6
    // entries and its Dirichlet 4. Per sample and gradient step, with
    // 64 × 64 hidden layers (forward and ∂W on every layer, ∂X above the
    // first): actor 2·(2·6·64) + 3·(2·64·64) + 3·(2·64·4) = 27 648, critic
    // 2·(2·6·64) + 3·(2·64·64) + 3·(2·64·1) = 26 496; 54 144 FLOP × 1 152
    // samples × 16 steps × 3 policies = 2.994 GFLOP.
    assert!(
        text.contains("3 policies × 16 steps × 1152 samples, 2.994 GFLOP"),
        "{text}"
    );
    // Peak: 2 threads × 8 FLOP/cycle × 1 GHz.
    assert!(text.contains("of the FMA peak 16.0 GFLOP/s"), "{text}");
}

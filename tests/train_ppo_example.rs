//! `train_ppo` and `evaluate` as a user runs them: the same seed gives the
//! same metrics and parameters, a run killed after a checkpoint and
//! continued with `--resume` ends with exactly the parameters of an
//! uninterrupted run, and `evaluate` writes its table and per-episode stats.

mod common;

use common::example;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ARGS: [&str; 10] = [
    "--iterations",
    "8",
    "--checkpoint-every",
    "2",
    "--num-envs",
    "4",
    "--hidden",
    "16,16",
    "--eval-episodes",
    "1",
];

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dfaas-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn train(out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(example("train_ppo"));
    command
        .arg("--out")
        .arg(out)
        .args(ARGS)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// metrics.csv without the wall-time column.
fn metrics(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| *i != 3)
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn final_parameters(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoints/iter_000008/policies.safetensors")).unwrap()
}

#[test]
fn same_seed_same_run_and_resume_after_a_kill_matches() {
    let (a, b, c) = (run_dir("a"), run_dir("b"), run_dir("c"));
    assert!(train(&a, &[]).status().unwrap().success());
    assert!(train(&c, &[]).status().unwrap().success());
    assert_eq!(metrics(&a), metrics(&c), "same seed, same metrics");
    assert_eq!(final_parameters(&a), final_parameters(&c));
    assert_eq!(metrics(&a).len(), 9);

    // `evaluate` reads the run's latest checkpoint.
    let evaluation = Command::new(example("evaluate"))
        .arg("--checkpoint")
        .arg(&a)
        .args(["--episodes", "2"])
        .output()
        .unwrap();
    assert!(
        evaluation.status.success(),
        "{}",
        String::from_utf8_lossy(&evaluation.stderr)
    );
    let folder = a.join("checkpoints/iter_000008/evaluation");
    let table = std::fs::read_to_string(folder.join("evaluation.csv")).unwrap();
    assert_eq!(
        table.lines().count(),
        8,
        "header + ppo + 5 baselines + upper bound:\n{table}"
    );
    for policy in ["ppo", "all_local", "node_margin"] {
        for episode in 0..2 {
            let stats =
                std::fs::read_to_string(folder.join(policy).join(format!("episode_{episode}.csv")))
                    .unwrap();
            assert_eq!(
                stats.lines().count(),
                1 + 288 * 3,
                "{policy} episode {episode}"
            );
        }
    }

    // Kill a run once its second checkpoint is complete, then resume it.
    let mut child = train(&b, &[]).spawn().unwrap();
    let started = Instant::now();
    while !b.join("checkpoints/iter_000004/state.json").is_file()
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    let resumed = Command::new(example("train_ppo"))
        .arg("--out")
        .arg(&b)
        .args(["--resume", "--eval-episodes", "1"])
        .output()
        .unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        final_parameters(&a),
        final_parameters(&b),
        "resumed run ends with the uninterrupted parameters"
    );
    assert_eq!(metrics(&a), metrics(&b));
    for file in [
        "evaluation.csv",
        "learning_curve.svg",
        "agent_shares.svg",
        "env_config.yaml",
    ] {
        assert!(b.join(file).is_file(), "{file} missing");
    }
    for dir in [a, b, c] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let dir = run_dir("bad");
    let out = Command::new(example("train_ppo"))
        .arg("--out")
        .arg(&dir)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no complete checkpoint"));
    let out = Command::new(example("train_ppo"))
        .args(["--backend", "gpu"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("GPU backend"));
    let out = Command::new(example("train_ppo"))
        .args(["--team-reward", "2"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("team-reward"));
    let _ = std::fs::remove_dir_all(&dir);
}

//! `train_ppo` and `evaluate` as a user runs them: the same seed gives the
//! same metrics and parameters, a run killed mid-run and continued with
//! `--resume` (past a corrupt newest checkpoint) ends with exactly the
//! parameters of an uninterrupted run, and `evaluate` writes its table and
//! per-episode stats.

mod common;

use common::example;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// 24 iterations, so that a run killed at its first checkpoints still has
/// most of its work left.
const ARGS: [&str; 10] = [
    "--iterations",
    "24",
    "--checkpoint-every",
    "4",
    "--num-envs",
    "4",
    "--hidden",
    "16,16",
    "--eval-episodes",
    "1",
];

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

/// metrics.csv's rows (header first) without the wall-time column.
fn metrics(dir: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(dir.join("metrics.csv"))
        .unwrap();
    reader
        .records()
        .map(|r| {
            r.unwrap()
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != 3)
                .map(|(_, c)| c.to_string())
                .collect()
        })
        .collect()
}

/// The complete checkpoints of a run, oldest first.
fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("state.json").is_file())
        .collect();
    all.sort();
    all
}

fn final_parameters(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("checkpoints/iter_000024/policies.safetensors")).unwrap()
}

#[test]
fn same_seed_same_run_and_resume_after_a_kill_matches() {
    let temp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        temp.path().join("a"),
        temp.path().join("b"),
        temp.path().join("c"),
    );
    assert!(train(&a, &[]).status().unwrap().success());
    assert!(train(&c, &[]).status().unwrap().success());
    assert_eq!(metrics(&a), metrics(&c), "same seed, same metrics");
    assert_eq!(final_parameters(&a), final_parameters(&c));
    assert_eq!(metrics(&a).len(), 25);

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
    let folder = a.join("checkpoints/iter_000024/evaluation");
    let table = std::fs::read_to_string(folder.join("evaluation.csv")).unwrap();
    assert_eq!(
        table.lines().count(),
        8,
        "header + ppo + 5 baselines + oracle:\n{table}"
    );
    // The oracle, last, scores at least every other row.
    let rewards: Vec<f64> = table
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(
        table.lines().last().unwrap().starts_with("oracle,"),
        "{table}"
    );
    let oracle = rewards[rewards.len() - 1];
    assert!(rewards.iter().all(|&r| r <= oracle), "{table}");
    // Every row's outcomes: the served and rejected shares add up to 100,
    // and the rejected ones to reject_pct.
    let mut rows = table.lines().map(|l| l.split(',').collect::<Vec<_>>());
    let header = rows.next().unwrap();
    let column = |name: &str| header.iter().position(|&c| c == name).unwrap();
    for row in rows {
        let value = |name: &str| row[column(name)].parse::<f64>().unwrap();
        let rejected = value("reject_policy_pct")
            + value("reject_local_overload_pct")
            + value("reject_neighbour_overload_pct");
        assert!(
            (value("served_pct") + rejected - 100.0).abs() < 1e-3,
            "{row:?}"
        );
        assert!((rejected - value("reject_pct")).abs() < 1e-3, "{row:?}");
        assert!(
            (value("served_local_pct") + value("served_neighbour_pct") - value("served_pct")).abs()
                < 1e-3,
            "{row:?}"
        );
    }
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

    // Kill a run once its second checkpoint (iteration 8) is complete — while it still
    // runs, with checkpoints left to write — then damage its newest
    // checkpoint and resume.
    let mut child = train(&b, &[]).spawn().unwrap();
    let started = Instant::now();
    while !b.join("checkpoints/iter_000008/state.json").is_file()
        && started.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be killed"
    );
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status}");
    let left = checkpoints(&b);
    let newest = left.last().unwrap().clone();
    assert!(
        left.len() >= 2 && newest < b.join("checkpoints/iter_000024"),
        "killed mid-run: {left:?}"
    );
    let tensors = newest.join("policies.safetensors");
    let bytes = std::fs::read(&tensors).unwrap();
    std::fs::write(&tensors, &bytes[..bytes.len() / 3]).unwrap();
    let resumed = Command::new(example("train_ppo"))
        .arg("--out")
        .arg(&b)
        .args(["--resume", "--eval-episodes", "1"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&resumed.stdout),
        String::from_utf8_lossy(&resumed.stderr),
    );
    assert!(resumed.status.success(), "{stderr}");
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        stderr.contains("skipping checkpoint") && stderr.contains(&name(&newest)),
        "{stderr}"
    );
    let previous = &left[left.len() - 2];
    assert!(
        stdout.contains(&format!("resuming from {}", previous.display())),
        "{stdout}"
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
}

#[test]
fn bad_arguments_are_clear_errors() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("bad");
    let out = Command::new(example("train_ppo"))
        .arg("--out")
        .arg(&dir)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no complete checkpoint") && !stderr.contains("panicked"),
        "{stderr}"
    );
    // A backend that does not exist: the choices, before any training.
    let out = Command::new(example("train_ppo"))
        .args(["--backend", "tpu"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("tpu")
            && stderr.contains("gpu")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
    let out = Command::new(example("train_ppo"))
        .args(["--team-reward", "2"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("team-reward"));
    let out = Command::new(example("train_ppo"))
        .args(["--layout", "ring"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("ring") && stderr.contains("mappo"),
        "{stderr}"
    );
}

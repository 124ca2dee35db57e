//! The `real` input-rate method on small day files the test writes itself:
//! file and row selection frequencies, distinct days per agent, the
//! evaluation pool, truncation of fractional values, and the error cases.

use dfaas_core::input_rate::day_file_name;
use dfaas_core::{ConfigError, Env, EnvConfig, EnvModel, ResetError};
use std::path::{Path, PathBuf};

/// Writes day `d` with `rows` rows whose 288 values are `10·d + row + 0.7`
/// (or `values(d, row)` when given).
fn write_day(dir: &Path, d: u32, rows: usize, values: Option<&dyn Fn(u32, usize) -> Vec<f64>>) {
    let mut text = String::from("HashOwner,HashApp,HashFunction,sum,mean,std");
    for t in 0..288 {
        text.push_str(&format!(",{t}"));
    }
    text.push('\n');
    for row in 0..rows {
        let v = values.map_or_else(
            || vec![f64::from(10 * d) + row as f64 + 0.7; 288],
            |f| f(d, row),
        );
        text.push_str(&format!("o{d},a{d},f{d}r{row},0,0,0"));
        for x in v {
            text.push_str(&format!(",{x}"));
        }
        text.push('\n');
    }
    std::fs::write(dir.join(day_file_name(d)), text).unwrap();
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dfaas-real-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn env(dir: &Path, evaluation: bool) -> Result<Env, ConfigError> {
    let config = EnvConfig {
        input_rate_method: "real".into(),
        real_traces_dir: Some(dir.display().to_string()),
        evaluation,
        ..EnvConfig::default()
    };
    Ok(Env::new(EnvModel::new(&config.build()?)?))
}

#[test]
fn days_and_rows_are_drawn_uniformly_and_distinct_per_agent() {
    let dir = temp_dir("uniform");
    for d in 1..=14 {
        write_day(&dir, d, 3, None);
    }
    let mut env = env(&dir, false).unwrap();
    env.reset(Some(5)).unwrap();
    let episodes = 2400;
    let (mut day_counts, mut row_counts) = ([0usize; 15], [0usize; 3]);
    for _ in 0..episodes {
        let rates = env.input_rates();
        let (a, b) = (rates[0], rates[288]);
        // 10·day + row + 0.7 truncated toward zero.
        let (day_a, day_b) = (a / 10, b / 10);
        assert_ne!(day_a, day_b, "each agent gets its own day file");
        assert!(
            (1..=12).contains(&day_a) && (1..=12).contains(&day_b),
            "training pool is d01..d12"
        );
        assert!(rates[..288].iter().all(|&v| v == a));
        day_counts[day_a as usize] += 1;
        row_counts[(a % 10) as usize] += 1;
        env.reset(None).unwrap();
    }
    // Each day is agent 0's with probability 1/12 (200 of 2400 expected).
    for &c in &day_counts[1..=12] {
        assert!((140..=260).contains(&c), "{day_counts:?}");
    }
    for &c in &row_counts {
        assert!((700..=900).contains(&c), "{row_counts:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn evaluation_uses_the_last_two_days_in_both_orders() {
    let dir = temp_dir("evaluation");
    for d in 1..=14 {
        write_day(&dir, d, 2, None);
    }
    let mut env = env(&dir, true).unwrap();
    env.set_evaluation_seeds(9, 40);
    env.reset(Some(1)).unwrap();
    let mut orders = [0usize; 2];
    for _ in 0..40 {
        let rates = env.input_rates();
        let (day_a, day_b) = (rates[0] / 10, rates[288] / 10);
        assert!(matches!((day_a, day_b), (13, 14) | (14, 13)));
        orders[usize::from(day_a == 14)] += 1;
        env.reset(None).unwrap();
    }
    assert!(orders[0] > 5 && orders[1] > 5, "{orders:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unusable_rows_and_files_are_typed_errors() {
    // A row whose values are all below 1 fails the episode that draws it.
    let dir = temp_dir("errors");
    for d in 1..=14 {
        let zeros = |_: u32, _: usize| vec![0.0; 288];
        write_day(&dir, d, 1, if d >= 13 { Some(&zeros) } else { None });
    }
    let mut env = env(&dir, true).unwrap();
    env.set_evaluation_seeds(1, 4);
    assert!(matches!(
        env.reset(Some(1)),
        Err(ResetError::UnsupportedTrace { .. })
    ));
    // Evaluation needs its seeds.
    let mut fresh = self::env(&dir, true).unwrap();
    assert_eq!(
        fresh.reset(Some(1)).unwrap_err(),
        ResetError::EvaluationSeedsMissing
    );
    // A missing file names itself; a row of the wrong length is refused.
    std::fs::remove_file(dir.join(day_file_name(7))).unwrap();
    match self::env(&dir, false) {
        Err(ConfigError::Io { path, .. }) => assert!(path.ends_with(&day_file_name(7)), "{path}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    write_day(&dir, 7, 1, Some(&|_, _| vec![5.0; 287]));
    let short = self::env(&dir, false).unwrap_err().to_string();
    assert!(short.contains("d07"), "{short}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn real_needs_288_steps_and_at_most_two_agents_in_evaluation() {
    let config = EnvConfig {
        input_rate_method: "real".into(),
        max_steps: 100,
        ..EnvConfig::default()
    };
    assert_eq!(config.build().unwrap_err().field(), Some("max_steps"));
    let config = EnvConfig {
        input_rate_method: "real".into(),
        evaluation: true,
        ..EnvConfig::with_network(&["a b c"])
    };
    assert_eq!(config.build().unwrap_err().field(), Some("network"));
}

#[test]
fn a_failed_auto_reset_is_reported_and_leaves_the_env_finished() {
    use dfaas_core::{BatchEnv, StepError};
    let dir = temp_dir("auto-reset");
    // Every day: row 0 usable, row 1 all zeros (unusable).
    let rows = |d: u32, row: usize| vec![if row == 0 { f64::from(10 * d) } else { 0.0 }; 288];
    for d in 1..=14 {
        write_day(&dir, d, 2, Some(&rows));
    }
    let config = EnvConfig {
        input_rate_method: "real".into(),
        real_traces_dir: Some(dir.display().to_string()),
        ..EnvConfig::default()
    };
    let model = EnvModel::new(&config.build().unwrap()).unwrap();
    let mut batch = BatchEnv::new(model.clone(), 1).unwrap();
    let seed = (0..).find(|&s| batch.reset(s).is_ok()).unwrap();
    let mut actions = vec![0.0f32; 2 * model.action_width()];
    actions[0] = 1.0;
    actions[model.action_width()] = 1.0;
    let mut failure = None;
    for _ in 0..288 * 50 {
        if let Err(e) = batch.step(&actions) {
            failure = Some(e);
            break;
        }
    }
    match failure {
        Some(StepError::AutoReset {
            env: 0,
            error: ResetError::UnsupportedTrace { agent, .. },
        }) => {
            assert!(agent.starts_with("node_"), "{agent}");
        }
        other => panic!("expected a failed auto-reset (seed {seed}), got {other:?}"),
    }
    assert!(batch.dones()[0]);
    assert_eq!(batch.step(&actions).unwrap_err(), StepError::NeedsReset);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// With `parallel`, the failed auto-reset reported is the first in env
/// order whatever the number of threads (1, 2, 3, 7), and so is every
/// env's state at that point.
#[cfg(feature = "parallel")]
#[test]
fn the_first_failed_auto_reset_in_env_order_is_reported_on_any_thread_count() {
    use dfaas_core::{BatchEnv, StepError};
    let dir = temp_dir("parallel-auto-reset");
    // Every day: 1000 rows, the last all zeros (unusable): an env's episode
    // fails to start with probability about 1/500.
    let rows = |d: u32, row: usize| vec![if row < 999 { f64::from(d) } else { 0.0 }; 288];
    for d in 1..=14 {
        write_day(&dir, d, 1000, Some(&rows));
    }
    let config = EnvConfig {
        input_rate_method: "real".into(),
        real_traces_dir: Some(dir.display().to_string()),
        ..EnvConfig::default()
    };
    let model = EnvModel::new(&config.build().unwrap()).unwrap();
    // 2 agents: runs of at least 512 envs, so 1600 envs make up to 4.
    let envs = 1600;
    let mut actions = vec![0.0f32; envs * 2 * model.action_width()];
    for row in actions.chunks_exact_mut(model.action_width()) {
        row[0] = 1.0;
    }
    // Steps from seed `seed` until an auto-reset fails: the error and the
    // state then (`None` when the first reset fails).
    let run = |seed: u64| {
        let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
        batch.reset(seed).ok()?;
        let failure = (0..288 * 20).find_map(|_| batch.step(&actions).err())?;
        Some((failure, batch.state()))
    };
    let pool = |threads| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    };
    // On one thread, a seed whose first failing step fails several envs.
    let (seed, failure, state) = pool(1)
        .install(|| {
            (0..200).find_map(|seed| {
                let (failure, state) = run(seed)?;
                let failed = state.steps.iter().filter(|&&s| s == 288).count();
                (failed > 1).then_some((seed, failure, state))
            })
        })
        .expect("no seed fails several envs at once");
    let StepError::AutoReset { env, .. } = &failure else {
        panic!("{failure:?}");
    };
    assert_eq!(state.steps.iter().position(|&s| s == 288), Some(*env));
    for threads in [2, 3, 7] {
        let (other, other_state) = pool(threads).install(|| run(seed)).unwrap();
        assert_eq!(other, failure, "{threads} threads");
        assert!(other_state == state, "{threads} threads: states differ");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

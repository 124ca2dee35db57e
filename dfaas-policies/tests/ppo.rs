//! PPO end to end on a small scenario: same seed ⇒ identical metrics, and
//! a short training beats the random policy and improves over its first
//! iteration (no timing assertions).

use dfaas_core::{EnvConfig, EnvModel};
use dfaas_policies::backend::CpuBackend;
use dfaas_policies::baselines::Random;
use dfaas_policies::controller::{evaluate, evaluation_env};
use dfaas_policies::error::{CheckpointError, PpoConfigError, TrainError};
use dfaas_policies::ppo::{Layout, PpoConfig, Trainer};

/// The embedded default's node parameters on a 3-agent topology, with
/// short episodes.
fn env_config() -> EnvConfig {
    EnvConfig {
        max_steps: 48,
        request_memory_mb: Some(516),
        warm_service_time: Some(0.137),
        cold_service_time: Some(0.513),
        ..EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
    }
}

fn ppo_config(iterations: usize) -> PpoConfig {
    PpoConfig {
        hidden: vec![32, 32],
        num_envs: 8,
        rollout_steps: 48,
        minibatch_size: 192,
        iterations,
        seed: 7,
        ..PpoConfig::default()
    }
}

fn trainer(iterations: usize) -> Trainer<CpuBackend> {
    let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
    Trainer::new(model, ppo_config(iterations), CpuBackend::new()).unwrap()
}

#[test]
fn same_seed_gives_identical_metrics() {
    let (mut a, mut b) = (trainer(3), trainer(3));
    for _ in 0..3 {
        let (ma, mb) = (a.train_iteration().unwrap(), b.train_iteration().unwrap());
        assert_eq!(format!("{ma:?}"), format!("{mb:?}"));
    }
    assert_eq!(a.policies(), b.policies());
}

#[test]
fn short_training_beats_random_and_improves() {
    let iterations = 40;
    let mut t = trainer(iterations);
    let first = t.train_iteration().unwrap().mean_reward;
    let mut last = Vec::new();
    for _ in 1..iterations {
        last.push(t.train_iteration().unwrap().mean_reward);
    }
    let late: f64 = last[last.len() - 5..].iter().sum::<f64>() / 5.0;
    assert!(
        late > first + 0.05,
        "late training reward {late:.3} vs first iteration {first:.3}"
    );
    let config = env_config().build().unwrap().config().clone();
    let mut env = evaluation_env(&config, 4, 99).unwrap();
    let ppo = evaluate(&mut t.controller().unwrap(), &mut env).unwrap();
    let mut env = evaluation_env(&config, 4, 99).unwrap();
    let random = evaluate(&mut Random::new(1), &mut env).unwrap();
    assert!(
        ppo.mean_reward > random.mean_reward + 0.1,
        "ppo {:.3} vs random {:.3}",
        ppo.mean_reward,
        random.mean_reward
    );
}

#[test]
fn bad_settings_are_refused() {
    let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
    let field_of = |config: PpoConfig| match Trainer::new(model.clone(), config, CpuBackend::new())
    {
        Err(TrainError::Config(PpoConfigError::Invalid { field, .. })) => field,
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("accepted"),
    };
    let gamma = PpoConfig {
        gamma: 1.5,
        ..ppo_config(1)
    };
    assert_eq!(field_of(gamma), "gamma");
    let minibatch = PpoConfig {
        minibatch_size: 0,
        ..ppo_config(1)
    };
    assert_eq!(field_of(minibatch), "minibatch_size");
    let hidden = PpoConfig {
        hidden: vec![16, 0],
        ..ppo_config(1)
    };
    assert_eq!(field_of(hidden), "hidden");
    // num_envs × rollout_steps overflows usize.
    let huge = PpoConfig {
        num_envs: usize::MAX / 2,
        rollout_steps: 3,
        ..ppo_config(1)
    };
    assert_eq!(field_of(huge), "num_envs");
}

#[test]
fn counters_restored_near_their_limits_are_errors_not_wraps() {
    let mut t = trainer(2);
    t.train_iteration().unwrap();
    let model = t.model().clone();
    let mut state = t.state();
    state.env_steps = u64::MAX - 10;
    let missing = Trainer::restore(model, ppo_config(2), CpuBackend::new(), state, &|_| None);
    // No tensors given: a typed error naming the missing tensor.
    assert!(matches!(
        missing,
        Err(TrainError::Backend {
            policy: 0,
            source: dfaas_policies::error::BackendError::TensorMissing { .. }
        })
    ));
    // With the trainer's own tensors the state loads, and the next
    // iteration refuses to wrap its step counter.
    let dir = tempfile::tempdir().unwrap();
    dfaas_policies::checkpoint::save(&t, dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
    let env_steps = format!("\"env_steps\":{}", t.state().env_steps);
    assert!(text.contains(&env_steps));
    let text = text.replace(&env_steps, &format!("\"env_steps\":{}", u64::MAX - 10));
    std::fs::write(dir.path().join("state.json"), text).unwrap();
    let mut restored = dfaas_policies::checkpoint::load(dir.path(), CpuBackend::new()).unwrap();
    assert!(matches!(
        restored.train_iteration(),
        Err(TrainError::CounterOverflow {
            counter: "env_steps",
            ..
        })
    ));
    assert_eq!(restored.state().env_steps, u64::MAX - 10, "nothing changed");
}

#[test]
fn the_largest_seed_trains() {
    // `seed + 1 + policy` wraps instead of overflowing.
    let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
    let config = PpoConfig {
        seed: u64::MAX,
        ..ppo_config(1)
    };
    let mut t = Trainer::new(model, config, CpuBackend::new()).unwrap();
    assert!(t.train_iteration().unwrap().mean_reward.is_finite());
}

#[test]
fn resuming_a_checkpoint_gives_the_uninterrupted_run() {
    use dfaas_policies::checkpoint;
    let mut straight = trainer(4);
    let mut straight_metrics = Vec::new();
    for _ in 0..4 {
        straight_metrics.push(format!("{:?}", straight.train_iteration().unwrap()));
    }
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let mut first = trainer(4);
    for _ in 0..2 {
        first.train_iteration().unwrap();
    }
    checkpoint::save(&first, &dir.join(checkpoint::folder_name(2))).unwrap();
    drop(first);
    let latest = checkpoint::latest(dir).unwrap();
    let mut resumed = checkpoint::load(&latest, CpuBackend::new()).unwrap();
    assert_eq!(resumed.iteration(), 2);
    let mut resumed_metrics = Vec::new();
    for _ in 0..2 {
        resumed_metrics.push(format!("{:?}", resumed.train_iteration().unwrap()));
    }
    assert_eq!(resumed_metrics, straight_metrics[2..]);
    assert_eq!(resumed.policies(), straight.policies());
    // A damaged checkpoint is a clear error, not a panic.
    let tensors = latest.join("policies.safetensors");
    std::fs::write(&tensors, b"not safetensors").unwrap();
    match checkpoint::load(&latest, CpuBackend::new()) {
        Err(CheckpointError::Tensors { path, .. }) => assert_eq!(path, tensors),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a damaged checkpoint loaded"),
    }
}

#[test]
fn resume_steps_back_over_truncated_and_corrupt_checkpoints() {
    use dfaas_policies::checkpoint;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let mut t = trainer(4);
    for i in 1..=3 {
        t.train_iteration().unwrap();
        checkpoint::save(&t, &dir.join(checkpoint::folder_name(i))).unwrap();
    }
    // Newest: tensors cut short; second newest: state.json cut short.
    let cut = |path: std::path::PathBuf| {
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    };
    cut(dir.join("iter_000003/policies.safetensors"));
    cut(dir.join("iter_000002/state.json"));
    let resumed = checkpoint::load_latest(dir, CpuBackend::new()).unwrap();
    assert_eq!(resumed.from, dir.join("iter_000001"));
    assert_eq!(resumed.trainer.iteration(), 1);
    let skipped: Vec<_> = resumed.skipped.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(skipped, [dir.join("iter_000003"), dir.join("iter_000002")]);
    assert!(matches!(
        resumed.skipped[0].1,
        CheckpointError::Tensors { .. }
    ));
    assert!(matches!(resumed.skipped[1].1, CheckpointError::Json { .. }));
    // Nothing was deleted; with every checkpoint damaged, a typed error.
    cut(dir.join("iter_000001/state.json"));
    assert!(matches!(
        checkpoint::load_latest(dir, CpuBackend::new()),
        Err(CheckpointError::NoneLoads { tried: 3, .. })
    ));
}

#[test]
fn every_layout_learns_and_resumes_exactly() {
    use dfaas_policies::checkpoint;
    for layout in [
        Layout::Independent,
        Layout::Shared,
        Layout::Mappo,
        Layout::Agnostic,
    ] {
        let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
        let config = PpoConfig {
            layout,
            ..ppo_config(30)
        };
        let mut t = Trainer::new(model.clone(), config.clone(), CpuBackend::new()).unwrap();
        let first = t.train_iteration().unwrap().mean_reward;
        for _ in 1..25 {
            t.train_iteration().unwrap();
        }
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path();
        checkpoint::save(&t, dir).unwrap();
        let mut late = 0.0;
        for _ in 0..5 {
            late += t.train_iteration().unwrap().mean_reward / 5.0;
        }
        assert!(
            late > first + 0.05,
            "{layout:?}: late {late:.3} vs first {first:.3}"
        );
        let mut resumed = checkpoint::load(dir, CpuBackend::new()).unwrap();
        for _ in 0..5 {
            resumed.train_iteration().unwrap();
        }
        assert_eq!(resumed.policies(), t.policies(), "{layout:?}: resume");
    }
}

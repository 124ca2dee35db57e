//! PPO trained on the GPU (lavapipe in CI, where `DFAAS_REQUIRE_GPU=1`
//! makes a missing adapter a failure): it learns, one iteration moves only
//! the statistics buffer back and a size-independent number of bytes and
//! submits, the same seed gives the same parameters, and its policies go
//! through a checkpoint to the CPU and back.

use dfaas_core::{EnvConfig, EnvModel, RejectArithmetic};
use dfaas_gpu::GpuContext;
use dfaas_policies::backend::CpuBackend;
use dfaas_policies::baselines::Random;
use dfaas_policies::checkpoint;
use dfaas_policies::controller::{evaluate, evaluation_env};
use dfaas_policies::error::TrainError;
use dfaas_policies::gpu::GpuTrainer;
use dfaas_policies::ppo::{Layout, PpoConfig, Trainer};

fn context() -> Option<GpuContext> {
    let ctx = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)")?;
    eprintln!("adapter: {}", ctx.describe());
    Some(ctx)
}

/// The CPU learning test's scenario, with the exact-integer reject rule
/// the GPU env uses.
fn env_config() -> EnvConfig {
    EnvConfig {
        max_steps: 48,
        request_memory_mb: Some(516),
        warm_service_time: Some(0.137),
        cold_service_time: Some(0.513),
        reject_arithmetic: RejectArithmetic::Exact,
        ..EnvConfig::with_network(&["node_0 node_1 node_2", "node_1 node_2"])
    }
}

fn model() -> EnvModel {
    EnvModel::new(&env_config().build().unwrap()).unwrap()
}

fn ppo_config(iterations: usize) -> PpoConfig {
    PpoConfig {
        hidden: vec![32, 32],
        num_envs: 8,
        rollout_steps: 48,
        minibatch_size: 96,
        iterations,
        seed: 7,
        ..PpoConfig::default()
    }
}

#[test]
fn gpu_training_beats_random_and_improves() {
    let Some(ctx) = context() else { return };
    let iterations = 40;
    let mut t = GpuTrainer::new(model(), ppo_config(iterations), ctx).unwrap();
    let mut curve = Vec::new();
    for _ in 0..iterations {
        curve.push(t.train_iteration().unwrap().mean_reward);
    }
    eprintln!("training curve: {curve:.3?}");
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
    let (early, late) = (mean(&curve[..3]), mean(&curve[iterations - 5..]));
    assert!(late > early + 0.05, "late {late:.3} vs early {early:.3}");
    let config = env_config().build().unwrap().config().clone();
    let cpu = t.to_cpu().unwrap();
    let ppo = evaluate(
        &mut cpu.controller().unwrap(),
        &mut evaluation_env(&config, 4, 99).unwrap(),
    )
    .unwrap();
    let random = evaluate(
        &mut Random::new(1),
        &mut evaluation_env(&config, 4, 99).unwrap(),
    )
    .unwrap();
    eprintln!(
        "evaluation: ppo {:.3}, random {:.3}",
        ppo.mean_reward, random.mean_reward
    );
    assert!(
        ppo.mean_reward > random.mean_reward + 0.2,
        "ppo {:.3} vs random {:.3}",
        ppo.mean_reward,
        random.mean_reward
    );
}

/// Traffic of the second iteration of a fresh run (the first may differ
/// only by what the construction left queued).
fn traffic_of_one_iteration(num_envs: usize, epochs: usize) -> (dfaas_gpu::Traffic, u64) {
    let ctx = context().expect("checked by the caller");
    let config = PpoConfig {
        num_envs,
        epochs,
        rollout_steps: 8,
        minibatch_size: 16,
        ..ppo_config(4)
    };
    let mut t = GpuTrainer::new(model(), config, ctx).unwrap();
    t.train_iteration().unwrap();
    let (before, refreshed) = (t.traffic(), t.refreshed_bytes());
    t.train_iteration().unwrap();
    let mut traffic = t.traffic() - before;
    // Trace-pool refreshes are counted apart (none in this iteration).
    assert_eq!(t.refreshed_bytes(), refreshed);
    traffic.bytes_uploaded -= t.refreshed_bytes() - refreshed;
    (traffic, t.stats_bytes())
}

#[test]
fn an_iteration_reads_back_only_its_statistics_whatever_the_size() {
    if context().is_none() {
        return;
    }
    let (base, stats) = traffic_of_one_iteration(4, 1);
    eprintln!("one iteration: {base:?}, statistics {stats} bytes");
    assert_eq!(base.bytes_read_back, stats, "only the statistics come back");
    // The entropy weight's uniform (48 bytes) and one KL weight per policy.
    assert_eq!(base.bytes_uploaded, 48 + 4 * 3);
    assert_eq!(base.submits, 2, "the iteration and the statistics' copy");
    for (envs, epochs) in [(8, 1), (4, 2), (16, 3)] {
        let (other, other_stats) = traffic_of_one_iteration(envs, epochs);
        assert_eq!(other_stats, stats);
        assert_eq!(other, base, "{envs} envs × {epochs} epochs");
    }
}

#[test]
fn the_trace_pool_is_refreshed_once_per_episode() {
    let Some(ctx) = context() else { return };
    // Episodes of 48 steps, rollouts of 24: the envs start episode 1 at
    // iteration 3, episode 2 at iteration 5; the half of episode j + 1 is
    // refreshed at the first iteration of episode j (j ≥ 1).
    let config = PpoConfig {
        rollout_steps: 24,
        ..ppo_config(6)
    };
    let mut t = GpuTrainer::new(model(), config, ctx).unwrap();
    let (n, s) = (t.model().num_agents(), t.model().max_steps());
    let mut refreshes = Vec::new();
    for _ in 0..6 {
        let (before, bytes) = (t.traffic(), t.refreshed_bytes());
        t.train_iteration().unwrap();
        let uploaded = t.traffic().bytes_uploaded - before.bytes_uploaded;
        let refreshed = t.refreshed_bytes() - bytes;
        assert_eq!(
            uploaded,
            60 + refreshed,
            "the refresh is the only other upload"
        );
        refreshes.push(refreshed);
    }
    let half = (256 * n * s * 4) as u64;
    assert_eq!(refreshes, [0, 0, half, 0, half, 0]);
}

#[test]
fn the_same_seed_gives_the_same_parameters() {
    let Some(ctx) = context() else { return };
    let run = |ctx: GpuContext| {
        let mut t = GpuTrainer::new(model(), ppo_config(3), ctx).unwrap();
        let metrics: Vec<String> = (0..3)
            .map(|_| format!("{:?}", t.train_iteration().unwrap()))
            .collect();
        (metrics, t.to_cpu().unwrap().policies().to_vec())
    };
    let (first, second) = (run(ctx), run(context().unwrap()));
    assert_eq!(first.0, second.0, "metrics");
    assert_eq!(first.1, second.1, "parameters and Adam state");
}

#[test]
fn gpu_policies_go_through_a_checkpoint_to_the_cpu_and_back() {
    let Some(ctx) = context() else { return };
    let mut gpu = GpuTrainer::new(model(), ppo_config(6), ctx).unwrap();
    for _ in 0..2 {
        gpu.train_iteration().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let cpu = gpu.to_cpu().unwrap();
    checkpoint::save(&cpu, dir.path()).unwrap();
    let mut loaded = checkpoint::load(dir.path(), CpuBackend::new()).unwrap();
    assert_eq!(loaded.iteration(), 2);
    assert_eq!(
        loaded.policies(),
        cpu.policies(),
        "the file holds the GPU's policies"
    );
    let (a, b) = (loaded.state(), cpu.state());
    assert_eq!(
        (a.norms, a.kl_coeffs, a.env_steps),
        (b.norms, b.kl_coeffs, b.env_steps)
    );
    // Trained on: the initial policies are gone (the GPU moved them).
    let fresh = Trainer::new(model(), ppo_config(6), CpuBackend::new()).unwrap();
    assert_ne!(fresh.policies(), cpu.policies());
    // Back onto the GPU: the same parameters, Adam state and statistics.
    let back = GpuTrainer::from_cpu(&loaded, context().unwrap()).unwrap();
    let again = back.to_cpu().unwrap();
    assert_eq!(again.policies(), cpu.policies());
    assert_eq!(again.state().norms, cpu.state().norms);
    // Both continue: the CPU from the GPU's parameters, the GPU from the file.
    let m = loaded.train_iteration().unwrap();
    assert_eq!(m.iteration, 3);
    let mut back = back;
    assert_eq!(back.train_iteration().unwrap().iteration, 3);
}

#[test]
fn a_gpu_run_resumed_from_its_checkpoint_on_the_gpu_is_exact() {
    let Some(ctx) = context() else { return };
    // Rollouts of 24 steps in 48-step episodes: checkpoints after 2
    // iterations (mid episode), 3 (pool half of episode 2 refreshed) and 5
    // (both halves refreshed: episodes 2 and 3), each resumed across a
    // refresh.
    let config = PpoConfig {
        rollout_steps: 24,
        ..ppo_config(7)
    };
    let total = 7;
    let mut straight = GpuTrainer::new(model(), config.clone(), ctx).unwrap();
    let want: Vec<String> = (0..total)
        .map(|_| format!("{:?}", straight.train_iteration().unwrap()))
        .collect();
    let want_policies = straight.to_cpu().unwrap().policies().to_vec();
    drop(straight);
    for at in [2, 3, 5] {
        let mut first = GpuTrainer::new(model(), config.clone(), context().unwrap()).unwrap();
        let mut got: Vec<String> = (0..at)
            .map(|_| format!("{:?}", first.train_iteration().unwrap()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        checkpoint::save(&first.to_cpu().unwrap(), dir.path()).unwrap();
        drop(first);
        let loaded = checkpoint::load(dir.path(), CpuBackend::new()).unwrap();
        assert!(
            loaded.state().gpu.is_some(),
            "the checkpoint holds the device state"
        );
        let mut resumed = GpuTrainer::from_cpu(&loaded, context().unwrap()).unwrap();
        got.extend((at..total).map(|_| format!("{:?}", resumed.train_iteration().unwrap())));
        assert_eq!(got, want, "resumed after {at}: metrics of every iteration");
        assert_eq!(resumed.to_cpu().unwrap().policies(), &want_policies[..]);
        // A CPU trainer that trains on drops the device state.
        let mut cpu = loaded;
        cpu.train_iteration().unwrap();
        assert!(cpu.state().gpu.is_none());
    }
}

#[test]
fn a_diverging_run_is_a_typed_error() {
    let Some(ctx) = context() else { return };
    // A learning rate of 1e30 and no clipping: the parameters blow up and
    // a loss becomes infinite or NaN within a few iterations.
    let config = PpoConfig {
        learning_rate: 1e30,
        max_grad_norm: None,
        ..ppo_config(5)
    };
    let mut t = GpuTrainer::new(model(), config, ctx).unwrap();
    let error = (0..5)
        .find_map(|_| t.train_iteration().err())
        .expect("the run diverges");
    assert!(matches!(error, TrainError::NonFinite { .. }), "{error:?}");
}

#[test]
fn an_env_the_device_refuses_is_a_typed_error() {
    let Some(ctx) = context() else { return };
    let reference = EnvConfig {
        reject_arithmetic: RejectArithmetic::Reference,
        ..env_config()
    };
    let model = EnvModel::new(&reference.build().unwrap()).unwrap();
    let error = GpuTrainer::new(model, ppo_config(1), ctx)
        .err()
        .expect("the reference's f64 reject rule is CPU only");
    assert!(matches!(error, TrainError::Gpu(_)), "{error:?}");
}

/// The shared and MAPPO layouts train on the GPU (their glue is checked
/// against the CPU twins in `gpu_rollout`): the curve rises, the
/// evaluation beats random by 0.2, and the policies go through a
/// checkpoint to the CPU, which trains on from them.
#[test]
fn shared_and_mappo_layouts_learn_on_the_gpu() {
    if context().is_none() {
        return;
    }
    let config = env_config().build().unwrap().config().clone();
    let random = evaluate(
        &mut Random::new(1),
        &mut evaluation_env(&config, 4, 99).unwrap(),
    )
    .unwrap();
    for layout in [Layout::Shared, Layout::Mappo] {
        let iterations = 30;
        let ppo = PpoConfig {
            layout,
            ..ppo_config(iterations)
        };
        let mut t = GpuTrainer::new(model(), ppo, context().unwrap()).unwrap();
        let curve: Vec<f64> = (0..iterations)
            .map(|_| t.train_iteration().unwrap().mean_reward)
            .collect();
        eprintln!("{layout:?} training curve: {curve:.3?}");
        let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
        let (early, late) = (mean(&curve[..3]), mean(&curve[iterations - 5..]));
        assert!(
            late > early + 0.05,
            "{layout:?}: late {late:.3} vs early {early:.3}"
        );
        let dir = tempfile::tempdir().unwrap();
        checkpoint::save(&t.to_cpu().unwrap(), dir.path()).unwrap();
        let mut cpu = checkpoint::load(dir.path(), CpuBackend::new()).unwrap();
        let evaluation = evaluate(
            &mut cpu.controller().unwrap(),
            &mut evaluation_env(&config, 4, 99).unwrap(),
        )
        .unwrap();
        eprintln!(
            "{layout:?} evaluation: ppo {:.3}, random {:.3}",
            evaluation.mean_reward, random.mean_reward
        );
        assert!(
            evaluation.mean_reward > random.mean_reward + 0.2,
            "{layout:?}: ppo {:.3} vs random {:.3}",
            evaluation.mean_reward,
            random.mean_reward
        );
        let back = GpuTrainer::from_cpu(&cpu, context().unwrap()).unwrap();
        assert_eq!(back.to_cpu().unwrap().policies(), cpu.policies());
        assert_eq!(cpu.train_iteration().unwrap().iteration, iterations + 1);
    }
}

/// What the GPU trainer does not train yet is a typed error naming the
/// setting: the agnostic layout, a local bias, and a team reward over a
/// union of federations (the CPU mixes it per federation).
#[test]
fn the_agnostic_layout_and_union_team_rewards_are_refused_on_the_gpu() {
    if context().is_none() {
        return;
    }
    let agnostic = PpoConfig {
        layout: Layout::Agnostic,
        ..ppo_config(1)
    };
    let error = GpuTrainer::new(model(), agnostic, context().unwrap())
        .err()
        .expect("agnostic is CPU only");
    assert!(
        matches!(&error, TrainError::Config(e) if e.to_string().contains("layout")),
        "{error:?}"
    );
    let biased = PpoConfig {
        local_bias: 3.0,
        ..ppo_config(1)
    };
    let error = GpuTrainer::new(model(), biased, context().unwrap())
        .err()
        .expect("a local bias is CPU only");
    assert!(
        matches!(&error, TrainError::Config(e) if e.to_string().contains("local_bias")),
        "{error:?}"
    );
    let union = EnvConfig::with_network(&["node_0 node_1", "node_2 node_3"]);
    let model = EnvModel::new(&union.build().unwrap()).unwrap();
    let team = PpoConfig {
        team_reward: 1.0,
        ..ppo_config(1)
    };
    let error = GpuTrainer::new(model.clone(), team, context().unwrap())
        .err()
        .expect("a union's team reward is CPU only");
    assert!(
        matches!(&error, TrainError::Config(e) if e.to_string().contains("team_reward")),
        "{error:?}"
    );
    let selfish = PpoConfig {
        team_reward: 0.0,
        ..ppo_config(1)
    };
    assert!(GpuTrainer::new(model, selfish, context().unwrap()).is_ok());
}

//! The glue of the on-device PPO iteration (`dfaas_gpu::ppo`) against its
//! CPU twins: one iteration's rollout is replayed on a second GPU env (the
//! env kernel ≡ the CPU env is tested in dfaas-gpu) from the actions the
//! device stored, and every stored quantity is recomputed on the host — the
//! normalised observations with the CPU trainer's `RunningNorm`, the
//! team-mixed rewards and dones with `dfaas_core::reward`, the log-densities
//! with `dirichlet::log_prob`, the tallies with the CPU `Tally` — and the
//! last minibatch is checked to hold the samples the host mirror of the
//! permutation names.

use dfaas_core::reward::{team_mean, team_mixed};
use dfaas_core::rng::{seeded, uniform};
use dfaas_core::{EnvConfig, EnvModel, RejectArithmetic, StepMetrics};
use dfaas_gpu::nn::adam::AdamSettings;
use dfaas_gpu::nn::loss::LossSettings;
use dfaas_gpu::nn::mlp::Activation;
use dfaas_gpu::ppo::{GpuPpo, GpuPpoSettings, permuted};
use dfaas_gpu::{GpuBatchEnv, GpuContext, GpuError, TracePool};
use dfaas_policies::controller::Tally;
use dfaas_policies::dirichlet;
use dfaas_policies::engine::{self, Plan};
use dfaas_policies::gae;
use dfaas_policies::gpu::GpuEngine;
use dfaas_policies::ppo::RunningNorm;

#[test]
fn the_device_rollout_and_minibatch_match_their_cpu_twins() {
    check_rollout(true);
}

/// Raw observations and advantages (the reference's inputs; the defaults
/// normalise both).
#[test]
fn without_normalisation_the_rollout_holds_the_raw_observations() {
    check_rollout(false);
}

fn check_rollout(normalize: bool) {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    // Degrees 2, 1, 1 (padding on two agents), short episodes so that an
    // episode ends inside the rollout.
    let built = EnvConfig {
        max_steps: 5,
        reject_arithmetic: RejectArithmetic::Exact,
        ..EnvConfig::with_network(&["a b c", "b", "c"])
    }
    .build()
    .unwrap();
    let model = EnvModel::new(&built).unwrap();
    let (g, d, w) = (model.num_agents(), model.obs_width(), model.action_width());
    let (envs, steps, rows, minibatches, epochs, beta) = (4, 7, 6, 3, 2, 0.25f32);
    let settings = GpuPpoSettings {
        hidden: vec![8],
        activation: Activation::Tanh,
        rollout_steps: steps,
        minibatch_rows: rows,
        minibatches,
        epochs,
        gamma: 0.9,
        lambda: 0.8,
        loss: LossSettings {
            clip: 0.2,
            value_coeff: 0.5,
            value_clip: None,
            entropy_coeff: 0.01,
            kl_coeff: 0.0,
        },
        max_grad_norm: Some(0.5),
        adam: AdamSettings::new(1e-3),
        normalize_observations: normalize,
        team_reward: beta,
        seed: 0xABCD_0123_4567,
    };
    let pool = TracePool::generate(&model, 3, 11).unwrap();
    let env = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
    let mut twin = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
    let ppo = GpuPpo::new(&ctx, &env, &settings).unwrap();
    let mut rng = seeded(5);
    let mut random = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| uniform(&mut rng, -0.5, 0.5) as f32)
            .collect()
    };
    let actor = random(ppo.actor().params().len());
    let critic = random(ppo.critic().params().len());
    ppo.write_parameters(&ctx, &actor, &critic).unwrap();
    // One iteration in the order every backend runs, with KL weights on
    // two policies and off on the third.
    let plan = Plan {
        rollout_steps: steps,
        epochs,
        minibatch_rows: rows,
        minibatches,
        standardise_advantages: normalize,
    };
    let mut device = GpuEngine::new(ctx, env, ppo);
    let stats = engine::iterate(&mut device, &plan, 0.01, &[0.1, 0.0, 0.2]).unwrap();
    let (ctx, engine) = (device.context(), device.ppo());

    let rollout = engine.rollout();
    let obs = rollout.obs.read(ctx).unwrap();
    let actions = rollout.actions.read(ctx).unwrap();
    let alpha = rollout.alpha.read(ctx).unwrap();
    let log_prob = rollout.log_prob.read(ctx).unwrap();
    let rewards = rollout.targets.rewards().read(ctx).unwrap();
    let dones = rollout.targets.dones().read(ctx).unwrap();
    let advantages = rollout.targets.advantages().read(ctx).unwrap();
    let returns = rollout.targets.returns().read(ctx).unwrap();
    let values = rollout.targets.values().read(ctx).unwrap();
    let last_values = rollout.targets.last_values().read(ctx).unwrap();

    let mut norms: Vec<RunningNorm> = (0..g)
        .map(|a| RunningNorm::new(2 + 2 * model.degree(a)))
        .collect();
    let mut metrics = vec![StepMetrics::default(); envs];
    let mut tally = Tally::new(g);
    let mut grad = vec![0f32; w];
    let mut ended = false;
    for t in 0..steps {
        // Observations: the CPU statistics updated with this step's rows,
        // then applied. Tolerance 2e-3: the device merges each step's
        // batch statistics in f32 (Chan et al.), the CPU adds row by row in
        // f64; normalised values are O(1) and clamped to ±10.
        let env_obs = twin.observations(ctx).unwrap();
        for (a, norm) in norms.iter_mut().enumerate() {
            let own = 2 + 2 * model.degree(a);
            let mut block: Vec<f32> = (0..envs)
                .flat_map(|e| env_obs[(e * g + a) * d..][..own].to_vec())
                .collect();
            if normalize {
                norm.update(&block);
                norm.apply(&mut block);
            }
            for e in 0..envs {
                let stored = &obs[((t * g + a) * envs + e) * d..][..d];
                for f in 0..d {
                    let want = if f < own { block[e * own + f] } else { 0.0 };
                    assert!(
                        (stored[f] - want).abs() <= 2e-3,
                        "step {t}, agent {a}, env {e}, feature {f}: {} vs {want}",
                        stored[f]
                    );
                }
            }
        }
        // Actions: on the simplex of the agent's entries; replayed.
        let mut env_actions = vec![0f32; envs * g * w];
        for a in 0..g {
            let used = 2 + model.degree(a);
            for e in 0..envs {
                let row = (t * g + a) * envs + e;
                let x = &actions[row * w..][..w];
                let sum: f32 = x[..used].iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "row {row} sums to {sum}");
                assert!(x[used..].iter().all(|&v| v == 0.0));
                env_actions[(e * g + a) * w..][..w].copy_from_slice(x);
                // Log-density: f32 ln Γ and ψ on the device against f64
                // inside the CPU's; 1e-3 relative to the value's size.
                let cpu =
                    dirichlet::log_prob(&alpha[row * w..][..used], &x[..used], &mut grad[..used]);
                let gpu = log_prob[row];
                assert!(
                    (gpu - cpu).abs() <= 1e-3 * (1.0 + cpu.abs()),
                    "row {row}: log-density {gpu} vs {cpu}"
                );
            }
        }
        twin.step_with_metrics(ctx, &env_actions, &mut metrics)
            .unwrap();
        for m in &metrics {
            tally.add(&model, m);
        }
        let env_rewards = twin.rewards(ctx).unwrap();
        let env_dones = twin.dones(ctx).unwrap();
        for e in 0..envs {
            let r = &env_rewards[e * g..(e + 1) * g];
            let team = team_mean(r);
            for (a, &own) in r.iter().enumerate() {
                let i = t * g * envs + a * envs + e;
                // (1 − β)·own + β·mean: the device may fuse the
                // multiply-add (Vulkan allows it).
                let want = team_mixed(own, team, beta);
                assert!(
                    (rewards[i] - want).abs() <= 1e-6,
                    "reward {i}: {} vs {want}",
                    rewards[i]
                );
                assert_eq!(dones[i], f32::from(u8::from(env_dones[e])));
            }
        }
        ended |= env_dones.iter().any(|&x| x);
    }
    assert!(ended, "an episode ends inside the rollout");
    // The tallies: the same integers as the CPU's, rewards summed in f32
    // on the device against f64 metrics.
    assert_eq!(stats.input, tally.input());
    assert_eq!(stats.rejected, tally.rejected());
    for (a, want) in tally.agent_rewards().iter().enumerate() {
        let got = stats.reward_sums[a] / (steps * envs) as f64;
        assert!((got - want).abs() < 1e-5, "agent {a}: {got} vs {want}");
    }
    assert_eq!(stats.env_steps as usize, steps * envs);
    assert!(!stats.non_finite);
    // The last epoch's KL per policy: 0 where its weight is 0.
    assert_eq!(stats.last_epoch_kl[1], 0.0);
    assert!(
        stats.last_epoch_kl[0] > 0.0 && stats.last_epoch_kl[2] > 0.0,
        "{:?}",
        stats.last_epoch_kl
    );

    // GAE from the stored rewards, dones, values and bootstrap, by the
    // CPU's `gae::advantages` (the same f32 operations: equal within 1e-6),
    // then standardised per policy over its T × E samples (f64 moments on
    // the CPU, a fixed-order f32 sum on the device: within 1e-4).
    let columns = g * envs;
    let samples = gae::Samples {
        steps,
        columns,
        rewards: &rewards,
        values: &values,
        dones: &dones,
        last_values: &last_values,
    };
    let (cpu_advantages, cpu_returns) = gae::advantages(&samples, 0.9, 0.8).unwrap();
    for (i, (&got, &want)) in returns.iter().zip(&cpu_returns).enumerate() {
        assert!(
            (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "return {i}: {got} vs {want}"
        );
    }
    for a in 0..g {
        let index = |t: usize, e: usize| t * columns + a * envs + e;
        let mut own: Vec<f32> = (0..steps * envs)
            .map(|k| cpu_advantages[index(k / envs, k % envs)])
            .collect();
        if normalize {
            gae::standardise(&mut own);
        }
        for (k, want) in own.iter().enumerate() {
            let got = advantages[index(k / envs, k % envs)];
            assert!(
                (got - want).abs() <= 1e-4,
                "policy {a}, sample {k}: {got} vs {want}"
            );
        }
    }

    // The last minibatch (epoch `epochs − 1`, minibatch `minibatches − 1`,
    // iteration 0 of the device clock): exactly the samples the host
    // mirror of the permutation names, gathered bit for bit.
    let loss = engine.loss();
    let (old, adv, ret) = (
        loss.old_log_prob().read(ctx).unwrap(),
        loss.advantages().read(ctx).unwrap(),
        loss.returns().read(ctx).unwrap(),
    );
    let n = (steps * envs) as u32;
    let mut positions = Vec::new();
    for a in 0..g {
        for r in 0..rows {
            let i = ((minibatches - 1) * rows + r) as u32;
            let s = permuted(settings.seed, 0, epochs as u32 - 1, a as u32, n, i) as usize;
            let (t, e) = (s / envs, s % envs);
            let source = t * g * envs + a * envs + e;
            let at = a * rows + r;
            assert_eq!(
                old[at].to_bits(),
                log_prob[source].to_bits(),
                "policy {a}, row {r}"
            );
            assert_eq!(adv[at].to_bits(), advantages[source].to_bits());
            assert_eq!(ret[at].to_bits(), returns[source].to_bits());
            positions.push(s);
        }
    }
    positions.sort_unstable();
    positions.dedup();
    assert!(
        positions.len() > rows,
        "the policies draw different samples"
    );
}

/// The device checks the counts its buffers are sized for: operations out
/// of order or beyond the rollout are refused with a typed error, and the
/// recording is dropped.
#[test]
fn operations_out_of_order_are_refused() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
    let settings = GpuPpoSettings {
        hidden: vec![4],
        activation: Activation::Tanh,
        rollout_steps: 2,
        minibatch_rows: 2,
        minibatches: 1,
        epochs: 1,
        gamma: 0.0,
        lambda: 0.0,
        loss: LossSettings {
            clip: 0.2,
            value_coeff: 0.5,
            value_clip: None,
            entropy_coeff: 0.0,
            kl_coeff: 0.0,
        },
        max_grad_norm: None,
        adam: AdamSettings::new(1e-3),
        normalize_observations: false,
        team_reward: 0.0,
        seed: 1,
    };
    let pool = TracePool::generate(&model, 2, 3).unwrap();
    let env = GpuBatchEnv::new(&ctx, &model, 2, &pool).unwrap();
    let other = GpuBatchEnv::new(&ctx, &model, 2, &pool).unwrap();
    let mut ppo = GpuPpo::new(&ctx, &env, &settings).unwrap();
    let kl = vec![0.0; model.num_agents()];
    let refused = |r: Result<(), GpuError>, what: &str| {
        assert!(
            matches!(
                &r,
                Err(GpuError::Input {
                    field: "iteration",
                    ..
                })
            ),
            "{what}: {r:?}"
        );
    };
    refused(ppo.act(&ctx), "act before begin");
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    refused(ppo.step(&ctx, &env), "step before act");
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    ppo.act(&ctx).unwrap();
    refused(ppo.act(&ctx), "two acts without a step");
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    ppo.act(&ctx).unwrap();
    assert!(
        matches!(
            ppo.step(&ctx, &other),
            Err(GpuError::Input { field: "env", .. })
        ),
        "a step of another env"
    );
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    for _ in 0..2 {
        ppo.act(&ctx).unwrap();
        ppo.step(&ctx, &env).unwrap();
    }
    refused(ppo.act(&ctx), "an act past rollout_steps");
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    for _ in 0..2 {
        ppo.act(&ctx).unwrap();
        ppo.step(&ctx, &env).unwrap();
    }
    ppo.bootstrap(&ctx).unwrap();
    ppo.advantages(&ctx, true).unwrap();
    assert!(
        matches!(
            ppo.finish(&ctx),
            Err(GpuError::Input {
                field: "iteration",
                ..
            })
        ),
        "finish before the updates"
    );
    // The whole sequence is accepted, and a second finish is not.
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    for _ in 0..2 {
        ppo.act(&ctx).unwrap();
        ppo.step(&ctx, &env).unwrap();
    }
    ppo.bootstrap(&ctx).unwrap();
    ppo.advantages(&ctx, true).unwrap();
    ppo.minibatch(&ctx).unwrap();
    refused(ppo.minibatch(&ctx), "a minibatch past epochs × minibatches");
    ppo.begin(&ctx, 0.0, &kl).unwrap();
    for _ in 0..2 {
        ppo.act(&ctx).unwrap();
        ppo.step(&ctx, &env).unwrap();
    }
    ppo.bootstrap(&ctx).unwrap();
    ppo.advantages(&ctx, true).unwrap();
    ppo.minibatch(&ctx).unwrap();
    assert!(!ppo.finish(&ctx).unwrap().non_finite);
    assert!(ppo.finish(&ctx).is_err(), "a second finish");
}

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
use dfaas_core::{BatchMetrics, EnvConfig, EnvModel, RejectArithmetic};
use dfaas_gpu::nn::adam::AdamSettings;
use dfaas_gpu::nn::loss::LossSettings;
use dfaas_gpu::nn::mlp::Activation;
use dfaas_gpu::ppo::{GpuPpo, GpuPpoSettings, PolicyLayout, permuted};
use dfaas_gpu::{GpuBatchEnv, GpuContext, GpuError, TracePool};
use dfaas_policies::controller::Tally;
use dfaas_policies::dirichlet;
use dfaas_policies::engine::{self, Plan};
use dfaas_policies::gae;
use dfaas_policies::gpu::GpuEngine;
use dfaas_policies::ppo::RunningNorm;

#[test]
fn the_device_rollout_and_minibatch_match_their_cpu_twins() {
    check_rollout(true, PolicyLayout::Independent);
}

/// Raw observations and advantages (the reference's inputs; the defaults
/// normalise both).
#[test]
fn without_normalisation_the_rollout_holds_the_raw_observations() {
    check_rollout(false, PolicyLayout::Independent);
}

/// One policy for all agents: inputs with the one-hot agent id under one
/// pooled normaliser, each agent's Dirichlet over its first k + 1 outputs
/// and the last, advantages standardised over all agents' samples.
#[test]
fn the_shared_layout_matches_its_cpu_twins() {
    check_rollout(true, PolicyLayout::Shared);
}

/// Per-agent actors; critics that see every agent's normalised features.
#[test]
fn the_mappo_layout_matches_its_cpu_twins() {
    check_rollout(true, PolicyLayout::Mappo);
}

fn check_rollout(normalize: bool, layout: PolicyLayout) {
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
    let (n, o, w) = (model.num_agents(), model.obs_width(), model.action_width());
    let shared = layout == PolicyLayout::Shared;
    // Policies and agents per policy.
    let (policies, members) = if shared { (1, n) } else { (n, 1) };
    let own = |a: usize| 2 + 2 * model.degree(a);
    // Each agent's Dirichlet entries, in the env's order [local, forward..,
    // reject].
    let entries = |a: usize| -> Vec<usize> {
        let k = model.degree(a);
        if shared {
            (0..=k).chain([w - 1]).collect()
        } else {
            (0..k + 2).collect()
        }
    };
    let (envs, steps, rows, minibatches, epochs, beta) = (4, 7, 6, 3, 2, 0.25f32);
    let settings = GpuPpoSettings {
        layout,
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
    assert_eq!(ppo.policies(), policies);
    let d = ppo.input_width();
    assert_eq!(d, if shared { o + n } else { o });
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
    // some policies and (independent, MAPPO) off on the second.
    let kl = [0.1, 0.0, 0.2];
    let plan = Plan {
        rollout_steps: steps,
        epochs,
        minibatch_rows: rows,
        minibatches,
        standardise_advantages: normalize,
    };
    let mut device = GpuEngine::new(ctx, env, ppo);
    let stats = engine::iterate(&mut device, &plan, 0.01, &kl[..policies]).unwrap();
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

    // The CPU twin of the inputs: each policy's rows (agent a's own
    // features; with the shared layout every agent's observation row and
    // its one-hot id), in the device's row order `a·E + e`.
    let width = |q: usize| if shared { d } else { own(q) };
    let mut norms: Vec<RunningNorm> = (0..policies).map(|q| RunningNorm::new(width(q))).collect();
    let mut metrics = BatchMetrics::default();
    let mut tally = Tally::new(n);
    let mut grad = vec![0f32; w];
    let mut ended = false;
    for t in 0..steps {
        // Observations: the CPU statistics updated with this step's rows,
        // then applied. Tolerance 2e-3: the device merges each step's
        // batch statistics in f32 (Chan et al.), the CPU adds row by row in
        // f64; normalised values are O(1) and clamped to ±10.
        let env_obs = twin.observations(ctx).unwrap();
        for (q, norm) in norms.iter_mut().enumerate() {
            let width = width(q);
            let agents = q * members..(q + 1) * members;
            let mut block: Vec<f32> = Vec::new();
            for a in agents.clone() {
                for e in 0..envs {
                    let row = &env_obs[(e * n + a) * o..][..o];
                    if shared {
                        block.extend_from_slice(row);
                        block.extend((0..n).map(|b| f32::from(u8::from(a == b))));
                    } else {
                        block.extend_from_slice(&row[..width]);
                    }
                }
            }
            if normalize {
                norm.update(&block);
                norm.apply(&mut block);
            }
            for (i, a) in agents.enumerate() {
                for e in 0..envs {
                    let stored = &obs[((t * n + a) * envs + e) * d..][..d];
                    let want = &block[(i * envs + e) * width..][..width];
                    for (f, &got) in stored.iter().enumerate() {
                        let want = want.get(f).copied().unwrap_or(0.0);
                        assert!(
                            (got - want).abs() <= 2e-3,
                            "step {t}, agent {a}, env {e}, input {f}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // Actions: on the simplex of the agent's entries, 0 elsewhere;
        // replayed in the env's order.
        let mut env_actions = vec![0f32; envs * n * w];
        for a in 0..n {
            let used = entries(a);
            for e in 0..envs {
                let row = (t * n + a) * envs + e;
                let x = &actions[row * w..][..w];
                let drawn: Vec<f32> = used.iter().map(|&j| x[j]).collect();
                let sum: f32 = drawn.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "row {row} sums to {sum}");
                assert!(
                    (0..w).all(|j| used.contains(&j) || x[j] == 0.0),
                    "row {row}: {x:?}"
                );
                env_actions[(e * n + a) * w..][..drawn.len()].copy_from_slice(&drawn);
                // Log-density: f32 ln Γ and ψ on the device against f64
                // inside the CPU's; 1e-3 relative to the value's size.
                let concentrations: Vec<f32> = used.iter().map(|&j| alpha[row * w + j]).collect();
                let m = used.len();
                let cpu = dirichlet::log_prob(&concentrations, &drawn, &mut grad[..m]);
                let gpu = log_prob[row];
                assert!(
                    (gpu - cpu).abs() <= 1e-3 * (1.0 + cpu.abs()),
                    "row {row}: log-density {gpu} vs {cpu}"
                );
            }
        }
        twin.step_with_metrics(ctx, &env_actions, &mut metrics)
            .unwrap();
        tally.add(&model, &metrics);
        let env_rewards = twin.rewards(ctx).unwrap();
        let env_dones = twin.dones(ctx).unwrap();
        for e in 0..envs {
            let r = &env_rewards[e * n..(e + 1) * n];
            let team = team_mean(r);
            for (a, &reward) in r.iter().enumerate() {
                let i = t * n * envs + a * envs + e;
                // (1 − β)·own + β·mean: the device may fuse the
                // multiply-add (Vulkan allows it).
                let want = team_mixed(reward, team, beta);
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
    assert_eq!(stats.last_epoch_kl.len(), policies);
    for (q, &k) in stats.last_epoch_kl.iter().enumerate() {
        assert_eq!(k == 0.0, kl[q] == 0.0, "policy {q}: {k}");
    }

    // GAE from the stored rewards, dones, values and bootstrap, by the
    // CPU's `gae::advantages` (the same f32 operations: equal within 1e-6),
    // then standardised per policy over its T × M × E samples (f64 moments
    // on the CPU, a fixed-order f32 sum on the device: within 1e-4).
    let columns = n * envs;
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
    let per_policy = members * envs;
    // Sample `t·M·E + c` of policy q is column `q·M·E + c` at step t.
    let source = |q: usize, s: usize| (s / per_policy) * columns + q * per_policy + s % per_policy;
    for q in 0..policies {
        let mut own: Vec<f32> = (0..steps * per_policy)
            .map(|s| cpu_advantages[source(q, s)])
            .collect();
        if normalize {
            gae::standardise(&mut own);
        }
        for (s, want) in own.iter().enumerate() {
            let got = advantages[source(q, s)];
            assert!(
                (got - want).abs() <= 1e-4,
                "policy {q}, sample {s}: {got} vs {want}"
            );
        }
    }

    // The last minibatch (epoch `epochs − 1`, minibatch `minibatches − 1`,
    // iteration 0 of the device clock): exactly the samples the host
    // mirror of the permutation names, gathered bit for bit — the actor's
    // inputs, the critic's (with MAPPO every agent's stored inputs at the
    // sample's step and env), the sample's Dirichlet entries and the
    // loss's inputs.
    let loss = engine.loss();
    let (old, adv, ret) = (
        loss.old_log_prob().read(ctx).unwrap(),
        loss.advantages().read(ctx).unwrap(),
        loss.returns().read(ctx).unwrap(),
    );
    let actor_in = engine.actor().input().read(ctx).unwrap();
    let critic_in = engine.critic().input().read(ctx).unwrap();
    let mask = engine.minibatch_entries().read(ctx).unwrap();
    let critic_width = critic_in.len() / (policies * rows);
    let count = (steps * per_policy) as u32;
    let mut positions = Vec::new();
    for q in 0..policies {
        for r in 0..rows {
            let i = ((minibatches - 1) * rows + r) as u32;
            let s = permuted(settings.seed, 0, epochs as u32 - 1, q as u32, count, i) as usize;
            let from = source(q, s);
            let (t, column) = (from / columns, from % columns);
            let (a, e) = (column / envs, column % envs);
            let at = q * rows + r;
            assert_eq!(
                old[at].to_bits(),
                log_prob[from].to_bits(),
                "policy {q}, row {r}"
            );
            assert_eq!(adv[at].to_bits(), advantages[from].to_bits());
            assert_eq!(ret[at].to_bits(), returns[from].to_bits());
            assert_eq!(&actor_in[at * d..][..d], &obs[from * d..][..d]);
            let critic_want: Vec<f32> = if layout == PolicyLayout::Mappo {
                (0..n)
                    .flat_map(|b| obs[((t * n + b) * envs + e) * d..][..own(b)].to_vec())
                    .collect()
            } else {
                obs[from * d..][..d].to_vec()
            };
            assert_eq!(
                &critic_in[at * critic_width..][..critic_width],
                &critic_want[..],
                "policy {q}, row {r}: critic input"
            );
            let used = entries(a);
            let want_mask: Vec<u32> = (0..w).map(|j| u32::from(used.contains(&j))).collect();
            assert_eq!(&mask[at * w..][..w], &want_mask[..], "row {r}: entries");
            positions.push((q, s));
        }
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), policies * rows, "distinct samples");
    if policies > 1 {
        let drawn: std::collections::BTreeSet<usize> = positions.iter().map(|p| p.1).collect();
        assert!(drawn.len() > rows, "the policies draw different samples");
    }
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
        layout: PolicyLayout::Independent,
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

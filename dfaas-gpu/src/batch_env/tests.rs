//! GPU batch ≡ CPU `BatchEnv` (exact-integer rejects): same traces, same
//! actions ⇒ identical splits, rejects, observations, dones and steps, and
//! rewards within a stated tolerance — on the reference topologies, random
//! topologies, input rates up to `MAX_INPUT_RATE` on a hub, and pools of
//! several episodes that every env wraps around. Also: pool entries past
//! 2³², state download/upload, other contexts and bad inputs refused.

use super::*;
use crate::Traffic;
use dfaas_core::rng::{Xoshiro128PlusPlus, below, draw_episode_seed, seeded, uniform01};
use dfaas_core::{BatchEnv, BatchMetrics, EnvConfig, StepMetrics};
use std::collections::BTreeMap;

fn context() -> Option<GpuContext> {
    GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)")
}

/// Service times in seconds and a maximum concurrency of 7: rejects at
/// almost every step, and cheap performance tables for large totals.
fn busy(config: &mut EnvConfig) {
    config.request_memory_mb = Some(516);
    config.warm_service_time = Some(0.137);
    config.cold_service_time = Some(0.513);
}

/// The topology with static traces `trace(agent, step)` and exact rejects.
fn static_model(
    lines: &[&str],
    max_steps: usize,
    mut trace: impl FnMut(usize, usize) -> u32,
) -> EnvModel {
    let mut config = EnvConfig {
        max_steps: max_steps as i64,
        input_rate_method: "static".into(),
        ..EnvConfig::with_network(lines)
    };
    busy(&mut config);
    let names: Vec<String> = dfaas_core::Topology::from_adjacency_lines(lines)
        .unwrap()
        .names()
        .to_vec();
    let traces: BTreeMap<String, Vec<i64>> = names
        .iter()
        .enumerate()
        .map(|(a, name)| {
            let values = (0..max_steps).map(|t| i64::from(trace(a, t))).collect();
            (name.clone(), values)
        })
        .collect();
    config.input_rate_trace = Some(traces);
    EnvModel::new(&config.build().unwrap()).unwrap()
}

/// Static random traces in 0..=150 (zeros included).
fn model(lines: &[&str], max_steps: usize, seed: u64) -> EnvModel {
    let mut rng = seeded(seed);
    static_model(lines, max_steps, |_, _| below(&mut rng, 151))
}

/// The default synthetic generator (a new trace per episode seed).
fn synthetic_model(lines: &[&str], max_steps: usize, evaluation: bool) -> EnvModel {
    let mut config = EnvConfig {
        max_steps: max_steps as i64,
        evaluation,
        ..EnvConfig::with_network(lines)
    };
    busy(&mut config);
    EnvModel::new(&config.build().unwrap()).unwrap()
}

/// Dirichlet(1) points, and every 11th row off the simplex (negative
/// entries, sums above 1: the rescale path).
fn random_actions(model: &EnvModel, envs: usize, rng: &mut Xoshiro128PlusPlus) -> Vec<f32> {
    let (n, w) = (model.num_agents(), model.action_width());
    let mut actions = vec![0f32; envs * n * w];
    for (i, row) in actions.chunks_exact_mut(w).enumerate() {
        let k = model.degree(i % n) + 2;
        if i % 11 == 0 {
            row[..k]
                .iter_mut()
                .for_each(|p| *p = (uniform01(rng) * 2.0 - 0.5) as f32);
        } else {
            let draws: Vec<f64> = (0..k).map(|_| -(1.0 - uniform01(rng)).ln()).collect();
            let total: f64 = draws.iter().sum();
            row[..k]
                .iter_mut()
                .zip(&draws)
                .for_each(|(p, d)| *p = (d / total) as f32);
        }
    }
    actions
}

/// Asserts GPU rewards equal the CPU's within 4 ulp and returns how many
/// are bit-identical. Why 4: both divide the same exact integers
/// (|numerator| and rate ≤ 2²⁰ < 2²⁴ are exact in f32); the CPU's division
/// is correctly rounded (≤ ½ ulp from the true quotient), WGSL's `x / y` is
/// only within 2.5 ulp (WGSL spec, for |y| in [2⁻¹²⁶, 2¹²⁶]), so they
/// differ by at most 3 ulp, an ulp being at most 2⁻²³ of the magnitude; the
/// fourth covers measuring relative to the CPU value rather than the true
/// quotient. A zero quotient may come back as a subnormal at most. lavapipe
/// happens to be bit-identical; a real GPU need not be.
fn assert_rewards_close(gpu: &[f32], cpu: &[f32], label: &str) -> usize {
    assert_eq!(gpu.len(), cpu.len(), "{label}: rewards");
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= 4.0 * f32::EPSILON * c.abs().max(f32::MIN_POSITIVE),
            "{label}: reward {i}: GPU {g} vs CPU {c}"
        );
    }
    gpu.iter().zip(cpu).filter(|(g, c)| g == c).count()
}

/// Asserts that the GPU batch shows the CPU batch's last step (`metrics`:
/// the CPU's): splits and rejects, observations (integer-valued) and dones
/// exactly, rewards by [`assert_rewards_close`], whose count it returns.
fn assert_same_step(
    ctx: &GpuContext,
    gpu: &GpuBatchEnv,
    cpu: &BatchEnv,
    metrics: &[StepMetrics],
    label: &str,
) -> usize {
    let model = cpu.model();
    let (n, w) = (model.num_agents(), model.action_width());
    let (splits, rejects) = gpu.splits_and_rejects(ctx).unwrap();
    for (e, m) in metrics.iter().enumerate() {
        for a in 0..n {
            let (k, at) = (model.degree(a), (e * n + a) * w);
            let own = a * w;
            assert_eq!(
                &splits[at..at + k + 2],
                &m.action[own..own + k + 2],
                "{label} env {e} agent {a}: split"
            );
            assert_eq!(
                &rejects[at..=at + k],
                &m.forward_rejects[own..=own + k],
                "{label} env {e} agent {a}: rejects"
            );
        }
    }
    assert_eq!(
        gpu.observations(ctx).unwrap(),
        cpu.observations(),
        "{label}: observations"
    );
    assert_eq!(gpu.dones(ctx).unwrap(), cpu.dones(), "{label}: dones");
    let steps: Vec<u32> = (0..cpu.num_envs())
        .map(|e| cpu.step_index(e) as u32)
        .collect();
    assert_eq!(gpu.state(ctx).unwrap().steps, steps, "{label}: steps");
    assert_rewards_close(&gpu.rewards(ctx).unwrap(), cpu.rewards(), label)
}

/// Steps both batches `steps` times with the same actions (from
/// `actions`), comparing every step, and the full per-step metrics every
/// 7th. Returns (bit-identical rewards, rewards compared).
fn run_both(
    ctx: &GpuContext,
    gpu: &mut GpuBatchEnv,
    cpu: &mut BatchEnv,
    steps: usize,
    mut actions: impl FnMut(usize) -> Vec<f32>,
    label: &str,
) -> (usize, usize) {
    let envs = cpu.num_envs();
    let model = cpu.model().clone();
    assert_eq!(
        gpu.observations(ctx).unwrap(),
        cpu.observations(),
        "{label}: first observations"
    );
    let mut metrics = BatchMetrics::new(&model, envs);
    let mut gpu_metrics = BatchMetrics::new(&model, envs);
    let mut exact = 0;
    for step in 0..steps {
        let acts = actions(step);
        cpu.step_with_metrics(&acts, &mut metrics).unwrap();
        if step % 7 == 0 {
            gpu.step_with_metrics(ctx, &acts, &mut gpu_metrics).unwrap();
            for (e, (g, c)) in gpu_metrics.envs().iter().zip(&metrics.envs()).enumerate() {
                assert_eq!(g, c, "{label} step {step} env {e}: metrics");
            }
        } else {
            gpu.step(ctx, &acts).unwrap();
        }
        exact += assert_same_step(
            ctx,
            gpu,
            cpu,
            &metrics.envs(),
            &format!("{label} step {step}"),
        );
    }
    (exact, steps * envs * model.num_agents())
}

#[test]
fn gpu_batch_equals_cpu_batch_on_reference_topologies() {
    let Some(ctx) = context() else { return };
    eprintln!("adapter: {}", ctx.describe());
    let topologies: [&[&str]; 3] = [
        &["node_0 node_1"],
        &["node_0 node_1 node_2", "node_1 node_2"],
        &[
            "node_0 node_1 node_2",
            "node_3 node_2 node_0",
            "node_1 node_4",
        ],
    ];
    let (envs, max_steps) = (1024, 48);
    for (t, lines) in topologies.iter().enumerate() {
        let model = model(lines, max_steps, 10 + t as u64);
        let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
        cpu.reset(3).unwrap();
        let pool = TracePool::generate(&model, 1, 0).unwrap();
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
        let mut rng = seeded(77 + t as u64);
        let label = format!("{} agents", model.num_agents());
        let (exact, total) = run_both(
            &ctx,
            &mut gpu,
            &mut cpu,
            2 * max_steps + 5,
            |_| random_actions(&model, envs, &mut rng),
            &label,
        );
        eprintln!("{label}: {exact} of {total} rewards bit-identical, all within 4 ulp");
    }
}

/// A CPU batch whose env `i` plays, in its `j`-th episode, the episode
/// seed of pool entry `(i + j·N) mod P` of `TracePool::generate(model, P,
/// pool_seed)` — the GPU's order. Evaluation mode moves every env through
/// one seed list by steps of 1, so the list holds the pool's seeds in the
/// order 0, s, 2s, … (s = N mod P, which generates ℤ_P when gcd(N, P) = 1)
/// and env `i` starts at the position `k` with `k·s ≡ i (mod P)`. Also
/// returns the pool's seeds.
fn cpu_twin(
    model: &EnvModel,
    envs: usize,
    pool_len: usize,
    pool_seed: u64,
) -> (BatchEnv, Vec<u32>) {
    let mut master = seeded(pool_seed);
    let seeds: Vec<u32> = (0..pool_len)
        .map(|_| draw_episode_seed(&mut master))
        .collect();
    let order: Vec<usize> = (0..pool_len)
        .map(|k| k * (envs % pool_len) % pool_len)
        .collect();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..pool_len).collect::<Vec<_>>(),
        "gcd({envs}, {pool_len}) must be 1"
    );
    let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
    cpu.set_evaluation_seeds(0, pool_len);
    let mut state = cpu.state();
    state.evaluation_seeds = order.iter().map(|&entry| seeds[entry]).collect();
    state.evaluation_cursor = (0..envs)
        .map(|i| {
            order
                .iter()
                .position(|&entry| entry == i % pool_len)
                .unwrap()
        })
        .collect();
    cpu.restore(state).unwrap();
    cpu.reset(0).unwrap();
    (cpu, seeds)
}

#[test]
fn multi_episode_pools_wrap_around_like_the_cpu() {
    let Some(ctx) = context() else { return };
    let lines = ["node_0 node_1 node_2", "node_1 node_2"];
    // P > 1, P not dividing N, strides N mod P of 1 and 4.
    for (envs, pool_len, max_steps) in [(10usize, 3usize, 5usize), (1024, 5, 6)] {
        let model = synthetic_model(&lines, max_steps, true);
        let pool_seed = 40 + pool_len as u64;
        let pool = TracePool::generate(&model, pool_len, pool_seed).unwrap();
        let (mut cpu, seeds) = cpu_twin(&model, envs, pool_len, pool_seed);
        // The pool holds the generator's episodes of those seeds, all
        // different (so a wrong entry cannot go unnoticed).
        let len = model.num_agents() * max_steps;
        for (k, &seed) in seeds.iter().enumerate() {
            let mut expected = vec![0u32; len];
            model.generate_episode(seed, &mut expected).unwrap();
            assert_eq!(pool.episode(k).unwrap(), &expected[..], "pool entry {k}");
            for other in 0..k {
                assert_ne!(pool.episode(other), pool.episode(k));
            }
        }
        assert_eq!(pool.episode(pool_len), None);
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
        let label = format!("{envs} envs, pool of {pool_len}");
        // Every env plays P + 2 episodes: each wraps around the pool.
        let episodes = pool_len + 2;
        let mut rng = seeded(envs as u64);
        let (mut exact, mut total) = (0, 0);
        for j in 0..episodes {
            for i in 0..envs {
                let entry = (i + j * envs) % pool_len;
                assert_eq!(cpu.episode_seed(i), seeds[entry], "{label}: CPU twin");
            }
            let (e, t) = run_both(
                &ctx,
                &mut gpu,
                &mut cpu,
                max_steps,
                |_| random_actions(&model, envs, &mut rng),
                &format!("{label} episode {j}"),
            );
            (exact, total) = (exact + e, total + t);
        }
        assert_eq!(
            gpu.state(&ctx).unwrap().episodes,
            vec![episodes as u64; envs]
        );
        eprintln!("{label}: {exact} of {total} rewards bit-identical");
    }
}

#[test]
fn a_refreshed_pool_half_is_read_by_the_next_episode_only() {
    let Some(ctx) = context() else { return };
    let model = synthetic_model(&["node_0 node_1 node_2", "node_1 node_2"], 4, false);
    let (envs, pool_len, steps) = (6usize, 5usize, 4usize);
    let (n, ow) = (model.num_agents(), model.obs_width());
    let pools: Vec<TracePool> = (1..=3)
        .map(|seed| TracePool::generate(&model, pool_len, seed).unwrap())
        .collect();
    assert_ne!(pools[0], pools[1]);
    let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pools[0]).unwrap();
    // The input rate each env's agents observe at step `t` of episode `j`,
    // from pool `p`: entry (i + j·N) mod P.
    let check = |gpu: &GpuBatchEnv, j: usize, t: usize, p: usize| {
        let obs = gpu.observations(&ctx).unwrap();
        for i in 0..envs {
            let episode = pools[p].episode((i + j * envs) % pool_len).unwrap();
            for a in 0..n {
                assert_eq!(
                    obs[(i * n + a) * ow],
                    episode[a * steps + t] as f32,
                    "episode {j}, step {t}, env {i}, agent {a}: pool {p}"
                );
            }
        }
    };
    let bytes = gpu.refresh_pool(&ctx, 1, &pools[1]).unwrap();
    assert_eq!(bytes, (pool_len * n * steps * 4) as u64);
    let mut rng = seeded(3);
    check(&gpu, 0, 0, 0);
    for t in 1..steps {
        gpu.step(&ctx, &random_actions(&model, envs, &mut rng))
            .unwrap();
        check(&gpu, 0, t, 0);
    }
    gpu.step(&ctx, &random_actions(&model, envs, &mut rng))
        .unwrap();
    check(&gpu, 1, 0, 1);
    // While episode 1 plays pool 1, episode 2's half (the first) changes.
    gpu.refresh_pool(&ctx, 2, &pools[2]).unwrap();
    for t in 1..steps {
        gpu.step(&ctx, &random_actions(&model, envs, &mut rng))
            .unwrap();
        check(&gpu, 1, t, 1);
    }
    gpu.step(&ctx, &random_actions(&model, envs, &mut rng))
        .unwrap();
    check(&gpu, 2, 0, 2);
    // A pool of another size is refused; nothing changes.
    let small = TracePool::generate(&model, pool_len - 1, 9).unwrap();
    assert!(matches!(
        gpu.refresh_pool(&ctx, 3, &small),
        Err(GpuError::Input { field: "pool", .. })
    ));
    for t in 1..steps {
        gpu.step(&ctx, &random_actions(&model, envs, &mut rng))
            .unwrap();
        check(&gpu, 2, t, 2);
    }
    gpu.step(&ctx, &random_actions(&model, envs, &mut rng))
        .unwrap();
    check(&gpu, 3, 0, 1);
}

/// Actions that forward most of every leaf's requests to the hub (agent
/// 0), every 4th leaf row summing above 1 (rescaled); the hub's own rows
/// as [`random_actions`].
fn hub_actions(model: &EnvModel, envs: usize, rng: &mut Xoshiro128PlusPlus) -> Vec<f32> {
    let (n, w) = (model.num_agents(), model.action_width());
    let mut actions = random_actions(model, envs, rng);
    for (i, row) in actions.chunks_exact_mut(w).enumerate() {
        if i % n == 0 {
            continue;
        }
        let (u, v) = (uniform01(rng) as f32, uniform01(rng) as f32);
        let forward = 0.85 + 0.15 * u;
        row[..3].copy_from_slice(&if i % 4 == 1 {
            [0.4 * v, forward + 0.1, 0.1 * u]
        } else {
            [(1.0 - forward) * v, forward, (1.0 - forward) * (1.0 - v)]
        });
    }
    actions
}

#[test]
fn rates_near_the_limit_on_a_hub_equal_the_cpu() {
    let Some(ctx) = context() else { return };
    // The hub has 5 neighbours and receives forwards from all of them: its
    // total reaches 6 · 2²⁰; its performance table covers that many totals.
    let lines = ["hub l1 l2 l3 l4 l5"];
    let (envs, max_steps) = (64, 6);
    let mut rng = seeded(8);
    let model = static_model(&lines, max_steps, |agent, step| match (agent, step) {
        (2, 3) => 0,
        (0, 4) => 17,
        (_, 1) => MAX_INPUT_RATE,
        _ => MAX_INPUT_RATE - below(&mut rng, 4096),
    });
    assert_eq!(model.degree(0), 5);
    let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
    cpu.reset(1).unwrap();
    let pool = TracePool::generate(&model, 1, 0).unwrap();
    let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
    let mut rng = seeded(9);
    let mut actions = Vec::new();
    let (exact, total) = run_both(
        &ctx,
        &mut gpu,
        &mut cpu,
        2 * max_steps + 1,
        |_| {
            actions.push(hub_actions(&model, envs, &mut rng));
            actions[actions.len() - 1].clone()
        },
        "hub",
    );
    eprintln!("hub: {exact} of {total} rewards bit-identical");
    // The run reached what 32-bit products cannot hold: hub totals above
    // 2²², rejects·entry products there above 2³², and rescaled splits
    // whose count·rate products are above 2³².
    let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
    cpu.reset(1).unwrap();
    let mut metrics = BatchMetrics::new(&model, envs);
    let (mut hub_total, mut reject_product, mut rescale_product) = (0u64, 0u64, 0u64);
    let w = model.action_width();
    for acts in &actions {
        cpu.step_with_metrics(acts, &mut metrics).unwrap();
        for (e, m) in metrics.envs().iter().enumerate() {
            let total = u64::from(m.incoming_rate[0]);
            hub_total = hub_total.max(total);
            let largest_entry = (1..=5)
                .map(|leaf| u64::from(m.action[leaf * w + 1]))
                .chain([u64::from(m.action[0])])
                .max()
                .unwrap_or(0);
            reject_product =
                reject_product.max(u64::from(m.incoming_rate_reject[0]) * largest_entry);
            for a in 0..model.num_agents() {
                let row = &acts[(e * model.num_agents() + a) * w..][..model.degree(a) + 2];
                let rate = m.input_rate[a];
                let whole: Vec<u64> = row
                    .iter()
                    .map(|p| (p.clamp(0.0, 1.0) * rate as f32) as u64)
                    .collect();
                if whole.iter().sum::<u64>() > u64::from(rate) {
                    let top = whole.iter().copied().max().unwrap_or(0);
                    rescale_product = rescale_product.max(top * u64::from(rate));
                }
            }
        }
    }
    assert!(hub_total > 1 << 22, "hub total {hub_total}");
    assert!(reject_product >= 1 << 32, "reject product {reject_product}");
    assert!(
        rescale_product >= 1 << 32,
        "rescale product {rescale_product}"
    );
}

#[test]
fn pool_entries_stay_exact_past_2_pow_32() {
    let Some(ctx) = context() else { return };
    let (envs, pool_len, max_steps) = (3usize, 7usize, 4usize);
    let model = synthetic_model(&["a b"], max_steps, false);
    let (n, ow) = (model.num_agents(), model.obs_width());
    let pool = TracePool::generate(&model, pool_len, 5).unwrap();
    for k in 0..pool_len {
        for other in 0..k {
            assert_ne!(pool.episode(other), pool.episode(k), "distinct entries");
        }
    }
    let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
    // Computed independently of the env, in u128.
    let entry = |e: usize, episode: u64| {
        ((e as u128 + u128::from(episode) * envs as u128) % pool_len as u128) as usize
    };
    let rate = |entry: usize, a: usize, t: usize| pool.episode(entry).unwrap()[a * max_steps + t];
    let actions = vec![0.25f32; envs * n * model.action_width()];
    let first = (1u64 << 32) / 3 + 5;
    // With 32-bit arithmetic, e + episode·envs would wrap to other entries.
    let wrapped = |e: usize, episode: u64| {
        (e as u32).wrapping_add((episode as u32).wrapping_mul(envs as u32)) as usize % pool_len
    };
    assert!((0..envs).all(|e| wrapped(e, first) != entry(e, first)));
    assert!((0..envs).all(|e| wrapped(e, first + 1) != entry(e, first + 1)));
    // Past 2³² episodes with a carry into the high word, and a high word
    // set from the start.
    for start in [first, u64::from(u32::MAX), (5 << 32) + 7] {
        let mut state = gpu.state(&ctx).unwrap();
        state.steps = vec![max_steps as u32 - 1; envs];
        state.episodes = vec![start; envs];
        gpu.restore(&ctx, &state).unwrap();
        assert_eq!(gpu.state(&ctx).unwrap(), state, "{start}: restored");
        let mut metrics = BatchMetrics::default();
        gpu.step_with_metrics(&ctx, &actions, &mut metrics).unwrap();
        for (e, m) in metrics.envs().iter().enumerate() {
            let expected: Vec<u32> = (0..n)
                .map(|a| rate(entry(e, start), a, max_steps - 1))
                .collect();
            assert_eq!(m.input_rate, expected, "{start}: env {e}, last step");
        }
        assert_eq!(gpu.dones(&ctx).unwrap(), vec![true; envs]);
        let next = start + 1;
        for t in 0..max_steps {
            let obs = gpu.observations(&ctx).unwrap();
            gpu.step_with_metrics(&ctx, &actions, &mut metrics).unwrap();
            for (e, m) in metrics.envs().iter().enumerate() {
                let at = |a: usize| (e * n + a) * ow;
                let expected: Vec<u32> = (0..n).map(|a| rate(entry(e, next), a, t)).collect();
                assert_eq!(m.input_rate, expected, "{start}: env {e} step {t}");
                assert_eq!(m.step, t);
                for (a, &r) in expected.iter().enumerate() {
                    let previous = if t == 0 {
                        1.0
                    } else {
                        rate(entry(e, next), a, t - 1) as f32
                    };
                    assert_eq!(obs[at(a)], r as f32, "{start}: env {e} step {t}");
                    assert_eq!(obs[at(a) + 1], previous, "{start}: env {e} step {t}");
                }
            }
        }
        let after = gpu.state(&ctx).unwrap();
        assert_eq!(after.episodes, vec![start + 2; envs], "{start}");
        assert_eq!(after.steps, vec![0; envs]);
    }
}

/// A change that makes a state unfit for its batch.
type Corruption = fn(&mut GpuEnvState);

#[test]
fn state_restores_exactly_and_bad_states_change_nothing() {
    let Some(ctx) = context() else { return };
    let model = synthetic_model(&["node_0 node_1 node_2", "node_1 node_2"], 6, false);
    let envs = 16;
    let pool = TracePool::generate(&model, 3, 2).unwrap();
    let mut original = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
    let mut copy = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
    let mut rng = seeded(3);
    for _ in 0..9 {
        original
            .step(&ctx, &random_actions(&model, envs, &mut rng))
            .unwrap();
    }
    let saved = original.state(&ctx).unwrap();
    assert_eq!(saved.steps, vec![3; envs]);
    assert_eq!(saved.episodes, vec![1; envs]);
    copy.restore(&ctx, &saved).unwrap();
    assert_eq!(copy.state(&ctx).unwrap(), saved);
    // Same device, same kernel, same inputs: the continuations are equal
    // bit for bit, rewards included.
    for step in 0..14 {
        let actions = random_actions(&model, envs, &mut rng);
        original.step(&ctx, &actions).unwrap();
        copy.step(&ctx, &actions).unwrap();
        assert_eq!(
            copy.state(&ctx).unwrap(),
            original.state(&ctx).unwrap(),
            "step {step}"
        );
    }
    let before = copy.state(&ctx).unwrap();
    let bad: [(&str, Corruption); 9] = [
        ("steps", |s| s.steps.push(0)),
        ("steps", |s| s.steps[3] = 6),
        ("episodes", |s| {
            s.episodes.pop();
        }),
        ("dones", |s| s.dones.clear()),
        ("observations", |s| s.observations.push(0.0)),
        ("observations", |s| s.observations[5] = f32::NAN),
        ("rewards", |s| s.rewards[0] = f32::INFINITY),
        ("splits", |s| {
            s.splits.pop();
        }),
        ("rejects", |s| s.rejects.push(0)),
    ];
    for (field, corrupt) in bad {
        let mut state = saved.clone();
        corrupt(&mut state);
        match copy.restore(&ctx, &state) {
            Err(GpuError::Input { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected a typed error, got {other:?}"),
        }
        assert_eq!(copy.state(&ctx).unwrap(), before, "{field}: unchanged");
    }
}

#[test]
fn traffic_per_step_is_counted_and_the_device_path_uploads_nothing() {
    let Some(ctx) = context() else { return };
    let model = model(&["a b c", "b c"], 6, 3);
    let pool = TracePool::generate(&model, 2, 0).unwrap();
    let (n, w, ow) = (3, model.action_width(), model.obs_width());
    for envs in [64usize, 128] {
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
        let actions = vec![0.25f32; envs * n * w];
        let before = ctx.traffic();
        gpu.step(&ctx, &actions).unwrap();
        let step = ctx.traffic() - before;
        // One submit; the host's actions are the only upload.
        assert_eq!(
            step,
            Traffic {
                submits: 1,
                bytes_uploaded: (envs * n * w * 4) as u64,
                bytes_read_back: 0
            }
        );
        // The device path (actions already on the device): one submit and
        // no bytes either way, whatever the number of envs.
        let before = ctx.traffic();
        for _ in 0..5 {
            gpu.advance(&ctx).unwrap();
        }
        assert_eq!(
            ctx.traffic() - before,
            Traffic {
                submits: 5,
                ..Traffic::default()
            }
        );
        let before = ctx.traffic();
        let observations = gpu.observations(&ctx).unwrap();
        assert_eq!(observations.len(), envs * n * ow);
        assert_eq!(
            ctx.traffic() - before,
            Traffic {
                submits: 1,
                bytes_uploaded: 0,
                bytes_read_back: (envs * n * ow * 4) as u64
            }
        );
    }
}

#[test]
fn another_context_is_refused() {
    let Some(ctx) = context() else { return };
    let other = GpuContext::new().unwrap();
    let model = model(&["a b"], 4, 1);
    let pool = TracePool::generate(&model, 1, 0).unwrap();
    let mut gpu = GpuBatchEnv::new(&ctx, &model, 2, &pool).unwrap();
    let actions = vec![0.5f32; 2 * 2 * model.action_width()];
    let state = gpu.state(&ctx).unwrap();
    let mut metrics = BatchMetrics::new(&model, 2);
    let refused = |result: Result<(), GpuError>| {
        assert_eq!(
            result,
            Err(GpuError::ContextMismatch {
                built_on: ctx.id(),
                called_with: other.id(),
            })
        );
    };
    refused(gpu.step(&other, &actions));
    refused(gpu.step_with_metrics(&other, &actions, &mut metrics));
    refused(gpu.advance(&other));
    refused(gpu.reset(&other));
    refused(gpu.wait(&other));
    refused(gpu.restore(&other, &state));
    refused(gpu.observations(&other).map(drop));
    refused(gpu.rewards(&other).map(drop));
    refused(gpu.dones(&other).map(drop));
    refused(gpu.splits_and_rejects(&other).map(drop));
    refused(gpu.state(&other).map(drop));
    // The env still works on its own context, unchanged.
    assert_eq!(gpu.state(&ctx).unwrap(), state);
    gpu.step(&ctx, &actions).unwrap();
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(ctx) = context() else { return };
    let model = model(&["a b"], 8, 1);
    let pool = TracePool::generate(&model, 2, 0).unwrap();
    let mut gpu = GpuBatchEnv::new(&ctx, &model, 4, &pool).unwrap();
    assert!(matches!(
        gpu.step(&ctx, &[0.5; 3]),
        Err(GpuError::Input {
            field: "actions",
            ..
        })
    ));
    let mut nan = vec![0.25f32; 4 * 2 * model.action_width()];
    nan[5] = f32::NAN;
    assert!(matches!(
        gpu.step(&ctx, &nan),
        Err(GpuError::Input {
            field: "actions",
            ..
        })
    ));
    let reference = EnvConfig {
        reject_arithmetic: RejectArithmetic::Reference,
        ..model.built().config().clone()
    };
    let reference = EnvModel::new(&reference.build().unwrap()).unwrap();
    assert!(matches!(
        GpuBatchEnv::new(&ctx, &reference, 4, &pool),
        Err(GpuError::Input {
            field: "reject_arithmetic",
            ..
        })
    ));
    let served = EnvConfig {
        reward: dfaas_core::reward::RewardKind::Served,
        ..model.built().config().clone()
    };
    let served = EnvModel::new(&served.build().unwrap()).unwrap();
    assert!(matches!(
        GpuBatchEnv::new(&ctx, &served, 4, &pool),
        Err(GpuError::Input {
            field: "reward",
            ..
        })
    ));
    assert!(TracePool::generate(&model, 0, 0).is_err());
    // A pool of another model: other episode length, or rates beyond this
    // model's performance tables (totals up to 2·150 here).
    let longer = TracePool::generate(&self::model(&["a b"], 9, 1), 1, 0).unwrap();
    assert!(matches!(
        GpuBatchEnv::new(&ctx, &model, 4, &longer),
        Err(GpuError::Input { field: "pool", .. })
    ));
    let busier = static_model(&["a b"], 8, |a, t| if (a, t) == (1, 2) { 400 } else { 1 });
    let busier = TracePool::generate(&busier, 1, 0).unwrap();
    assert!(matches!(
        GpuBatchEnv::new(&ctx, &model, 4, &busier),
        Err(GpuError::Input { field: "pool", .. })
    ));
    // A batch larger than the device's buffers is refused, not a panic.
    for too_many in [
        ctx.device.limits().max_storage_buffer_binding_size as usize,
        usize::MAX,
    ] {
        assert!(matches!(
            GpuBatchEnv::new(&ctx, &model, too_many, &pool),
            Err(GpuError::Input {
                field: "num_envs",
                ..
            })
        ));
    }
    assert!(matches!(
        GpuBatchEnv::new(&ctx, &model, 0, &pool),
        Err(GpuError::Input { .. })
    ));
}

/// Adjacency lines of a random graph on `n` nodes (isolated nodes allowed).
fn random_lines(n: usize, edges: &[bool]) -> Vec<String> {
    let mut lines: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
    let mut e = 0;
    for (i, line) in lines.iter_mut().enumerate() {
        for j in i + 1..n {
            if edges[e % edges.len()] {
                line.push_str(&format!(" n{j}"));
            }
            e += 1;
        }
    }
    lines
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

    /// Any topology (isolated nodes, uneven degrees, several tables): the
    /// GPU batch equals the CPU batch, metrics included.
    #[test]
    fn gpu_batch_equals_cpu_batch_on_random_topologies(
        n in 1usize..7,
        edges in proptest::collection::vec(proptest::prelude::any::<bool>(), 1..21),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let Some(ctx) = context() else { return Ok(()) };
        let lines = random_lines(n, &edges);
        let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let model = model(&line_refs, 8, seed);
        let envs = 64;
        let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
        cpu.reset(seed).unwrap();
        let pool = TracePool::generate(&model, 1, 0).unwrap();
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
        let (mut cpu_metrics, mut gpu_metrics) = (BatchMetrics::default(), BatchMetrics::default());
        let mut rng = seeded(seed ^ 1);
        for step in 0..17 {
            let actions = random_actions(&model, envs, &mut rng);
            cpu.step_with_metrics(&actions, &mut cpu_metrics).unwrap();
            gpu.step_with_metrics(&ctx, &actions, &mut gpu_metrics).unwrap();
            proptest::prop_assert_eq!(&gpu_metrics, &cpu_metrics, "step {}", step);
            proptest::prop_assert_eq!(gpu.observations(&ctx).unwrap(), cpu.observations().to_vec());
            proptest::prop_assert_eq!(gpu.dones(&ctx).unwrap(), cpu.dones().to_vec());
        }
    }
}

/// Generated federations of 100 and 1000 nodes.
mod generated;

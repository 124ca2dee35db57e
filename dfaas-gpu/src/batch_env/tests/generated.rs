//! The GPU batch on generated federations of 100 and 1000 nodes
//! (`network_generator`, per-node RAM from `node_ram_gb_range`): every step
//! is sane on its own (splits sum to the input rates, rejects within the
//! splits, padding zero, rewards finite in [−1, 1], dones at the episode
//! ends) and equal to the CPU batch, with the comparison helpers of the
//! parent module.

use super::*;
use dfaas_core::NetworkGenerator;

/// `generator`'s federation with RAM drawn from [2, 8) GB per node, the
/// service times of [`busy`] and static random traces in 0..=150 (also
/// returned, `[agent][step]`).
fn generated_model(
    generator: NetworkGenerator,
    max_steps: usize,
    seed: u64,
) -> (EnvModel, Vec<Vec<u32>>) {
    let n = generator.num_nodes().unwrap();
    let mut rng = seeded(seed);
    let traces: Vec<Vec<u32>> = (0..n)
        .map(|_| (0..max_steps).map(|_| below(&mut rng, 151)).collect())
        .collect();
    let mut config = EnvConfig {
        network_generator: Some(generator),
        node_ram_gb_range: Some(vec![2.0, 8.0]),
        max_steps: max_steps as i64,
        input_rate_method: "static".into(),
        input_rate_trace: Some(
            traces
                .iter()
                .enumerate()
                .map(|(a, t)| {
                    (
                        format!("node_{a}"),
                        t.iter().map(|&v| i64::from(v)).collect(),
                    )
                })
                .collect(),
        ),
        ..EnvConfig::default()
    };
    busy(&mut config);
    let built = config.build().unwrap();
    // Heterogeneous capacities, as configured.
    let mut capacities: Vec<u32> = built
        .node_params()
        .iter()
        .map(|p| p.maximum_concurrency)
        .collect();
    capacities.sort_unstable();
    capacities.dedup();
    assert!(n < 100 || capacities.len() > 3, "capacities {capacities:?}");
    (EnvModel::new(&built).unwrap(), traces)
}

/// Checks the GPU batch's last step, `step` of every env's episode, on its
/// own terms.
fn assert_sane(ctx: &GpuContext, gpu: &GpuBatchEnv, traces: &[Vec<u32>], step: usize, label: &str) {
    let model = gpu.model();
    let (n, w) = (model.num_agents(), model.action_width());
    let envs = gpu.num_envs();
    let (splits, rejects) = gpu.splits_and_rejects(ctx).unwrap();
    assert_eq!(splits.len(), envs * n * w, "{label}");
    assert_eq!(traces.len(), n, "{label}");
    for e in 0..envs {
        for (a, trace) in traces.iter().enumerate() {
            let (k, at) = (model.degree(a), (e * n + a) * w);
            let row = &splits[at..at + w];
            let total: u64 = row.iter().map(|&c| u64::from(c)).sum();
            assert_eq!(
                total,
                u64::from(trace[step]),
                "{label} env {e} agent {a}: split total"
            );
            assert!(
                row[k + 2..].iter().all(|&c| c == 0),
                "{label} env {e} agent {a}: padding"
            );
            for j in 0..=k {
                assert!(
                    rejects[at + j] <= row[j],
                    "{label} env {e} agent {a}: rejects of entry {j}: split {:?}, rejects {:?}",
                    &row[..k + 2],
                    &rejects[at..=at + k]
                );
            }
        }
    }
    let rewards = gpu.rewards(ctx).unwrap();
    assert!(
        rewards
            .iter()
            .all(|r| r.is_finite() && (-1.0..=1.0).contains(r)),
        "{label}: rewards"
    );
    let observations = gpu.observations(ctx).unwrap();
    assert!(
        observations
            .iter()
            .all(|o| o.is_finite() && *o >= 0.0 && o.fract() == 0.0),
        "{label}: observations"
    );
    let done = step + 1 == model.max_steps();
    assert_eq!(gpu.dones(ctx).unwrap(), vec![done; envs], "{label}: dones");
}

/// Steps the GPU batch alone for two episodes and a bit with random
/// actions, checking every step with [`assert_sane`]; then a fresh GPU
/// batch against the CPU batch for as many steps with [`run_both`].
fn check_generated(ctx: &GpuContext, generator: NetworkGenerator, envs: usize, max_steps: usize) {
    let label = format!("{generator:?}");
    let (model, traces) = generated_model(generator, max_steps, 21);
    let steps = 2 * max_steps + 3;
    let pool = TracePool::generate(&model, 1, 0).unwrap();
    let mut gpu = GpuBatchEnv::new(ctx, &model, envs, &pool).unwrap();
    let mut rng = seeded(5);
    for step in 0..steps {
        gpu.step(ctx, &random_actions(&model, envs, &mut rng))
            .unwrap();
        assert_sane(
            ctx,
            &gpu,
            &traces,
            step % max_steps,
            &format!("{label} step {step}"),
        );
    }
    let mut gpu = GpuBatchEnv::new(ctx, &model, envs, &pool).unwrap();
    let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
    cpu.reset(9).unwrap();
    let (exact, total) = run_both(
        ctx,
        &mut gpu,
        &mut cpu,
        steps,
        |_| random_actions(&model, envs, &mut rng),
        &label,
    );
    eprintln!("{label}: {exact} of {total} rewards bit-identical, all within 4 ulp");
}

#[test]
fn gpu_batch_on_generated_100_node_federations_equals_the_cpu() {
    let Some(ctx) = context() else { return };
    for generator in [
        NetworkGenerator::RandomGeometric {
            nodes: 100,
            radius: 0.15,
            seed: 3,
        },
        NetworkGenerator::BarabasiAlbert {
            nodes: 100,
            m: 3,
            seed: 3,
        },
    ] {
        check_generated(&ctx, generator, 16, 8);
    }
}

/// A step runs one invocation per (env, agent) for the per-agent work, so
/// no invocation runs more than one agent's loops: 1000-node federations
/// (and a hub of 62 neighbours) step like the CPU batch also on lavapipe,
/// which ends every loop of an invocation after 65 535 iterations in all
/// (the one-invocation-per-env kernel before gave wrong splits past about
/// 600 ring nodes there).
#[test]
fn gpu_batch_on_generated_1000_node_federations_steps_sanely_and_equals_the_cpu() {
    let Some(ctx) = context() else { return };
    for generator in [
        NetworkGenerator::RandomGeometric {
            nodes: 1000,
            radius: 0.04,
            seed: 4,
        },
        NetworkGenerator::BarabasiAlbert {
            nodes: 1000,
            m: 2,
            seed: 4,
        },
        NetworkGenerator::StarOfStars {
            hubs: 16,
            leaves_per_hub: 47,
            hub_links: dfaas_core::config::HubLinks::Mesh,
        },
    ] {
        check_generated(&ctx, generator, 4, 6);
    }
}

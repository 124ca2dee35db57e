//! GPU batch ≡ CPU `BatchEnv` (exact-integer rejects): same traces, same
//! actions ⇒ identical splits, rejects, observations and dones, and the
//! same rewards, on the 2-, 3- and 5-agent topologies, 1024 envs, more than
//! two episodes each (auto-reset included).

use super::*;
use dfaas_core::rng::{below, seeded, uniform01};
use dfaas_core::{BatchEnv, EnvConfig, StepMetrics};
use std::collections::BTreeMap;

/// The topology with static random traces (zeros included), service times
/// in seconds (rejects at almost every step) and exact rejects.
fn model(lines: &[&str], max_steps: usize, seed: u64) -> EnvModel {
    let mut config = EnvConfig {
        max_steps: max_steps as i64,
        input_rate_method: "static".into(),
        ..EnvConfig::with_network(lines)
    };
    config.request_memory_mb = Some(516);
    config.warm_service_time = Some(0.137);
    config.cold_service_time = Some(0.513);
    let names: Vec<String> = dfaas_core::Topology::from_adjacency_lines(lines)
        .unwrap()
        .names()
        .to_vec();
    let mut rng = seeded(seed);
    let traces: BTreeMap<String, Vec<i64>> = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                (0..max_steps)
                    .map(|_| i64::from(below(&mut rng, 151)))
                    .collect(),
            )
        })
        .collect();
    config.input_rate_trace = Some(traces);
    EnvModel::new(&config.build().unwrap()).unwrap()
}

fn random_actions(
    model: &EnvModel,
    envs: usize,
    rng: &mut dfaas_core::rng::Xoshiro128PlusPlus,
) -> Vec<f32> {
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

#[test]
fn gpu_batch_equals_cpu_batch_on_reference_topologies() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
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
        let (n, w) = (model.num_agents(), model.action_width());
        let mut cpu = BatchEnv::new(model.clone(), envs);
        cpu.reset(3).unwrap();
        let pool = TracePool::generate(&model, 1, 0).unwrap();
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
        assert_eq!(
            gpu.observations(&ctx).unwrap(),
            cpu.observations(),
            "{n} agents: first observations"
        );
        let mut metrics = vec![StepMetrics::new(&model); envs];
        let mut gpu_metrics = vec![StepMetrics::new(&model); envs];
        let mut rng = seeded(77 + t as u64);
        let (mut rewards_exact, mut rewards_total) = (0usize, 0usize);
        for step in 0..2 * max_steps + 5 {
            let actions = random_actions(&model, envs, &mut rng);
            cpu.step_with_metrics(&actions, &mut metrics).unwrap();
            // Every few steps, the full per-step metrics must agree too.
            if step % 7 == 0 {
                gpu.step_with_metrics(&ctx, &actions, &mut gpu_metrics)
                    .unwrap();
                assert_eq!(
                    gpu_metrics, metrics,
                    "{n} agents step {step}: per-step metrics"
                );
            } else {
                gpu.step(&ctx, &actions).unwrap();
            }
            let (splits, rejects) = gpu.splits_and_rejects(&ctx).unwrap();
            for (e, m) in metrics.iter().enumerate() {
                for a in 0..n {
                    let k = model.degree(a);
                    let at = (e * n + a) * w;
                    assert_eq!(
                        &splits[at..at + k + 2],
                        &m.action[at - e * n * w..at - e * n * w + k + 2],
                        "{n} agents step {step} env {e} agent {a}: split"
                    );
                    assert_eq!(
                        rejects[at], m.incoming_rate_local_reject[a],
                        "step {step} env {e} agent {a}: local rejects"
                    );
                    assert_eq!(
                        &rejects[at + 1..=at + k],
                        &m.forward_rejects[a * w + 1..=a * w + k],
                        "step {step} env {e} agent {a}: forward rejects"
                    );
                }
            }
            assert_eq!(
                gpu.observations(&ctx).unwrap(),
                cpu.observations(),
                "{n} agents step {step}: observations"
            );
            assert_eq!(
                gpu.dones(&ctx).unwrap(),
                cpu.dones(),
                "{n} agents step {step}: dones"
            );
            for (g, c) in gpu.rewards(&ctx).unwrap().iter().zip(cpu.rewards()) {
                rewards_total += 1;
                rewards_exact += usize::from(g == c);
                // WGSL division is within 2.5 ulp, not correctly rounded.
                assert!(
                    (g - c).abs() <= 4.0 * f32::EPSILON * c.abs().max(1e-30),
                    "{n} agents step {step}: reward {g} vs {c}"
                );
            }
        }
        eprintln!(
            "{n} agents: {rewards_exact} of {rewards_total} rewards bit-identical, all within 4 ulp"
        );
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
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
    assert!(TracePool::generate(&model, 0, 0).is_err());
    // A batch larger than the device's buffers is refused, not a panic.
    let too_many = ctx.device.limits().max_storage_buffer_binding_size as usize;
    assert!(matches!(
        GpuBatchEnv::new(&ctx, &model, too_many, &pool),
        Err(GpuError::Input {
            field: "num_envs",
            ..
        })
    ));
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
        let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else { return Ok(()) };
        let lines = random_lines(n, &edges);
        let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let model = model(&line_refs, 8, seed);
        let envs = 64;
        let mut cpu = BatchEnv::new(model.clone(), envs);
        cpu.reset(seed).unwrap();
        let pool = TracePool::generate(&model, 1, 0).unwrap();
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
        let (mut cpu_metrics, mut gpu_metrics) = (vec![StepMetrics::new(&model); envs], vec![StepMetrics::new(&model); envs]);
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

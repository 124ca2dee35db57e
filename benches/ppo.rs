//! PPO throughput: inference (agent actions per second from the trained
//! policies' deterministic controller) and training (agent-steps per second
//! of one iteration, sampling + learning) with the default and the
//! reference presets, on the embedded default scenario.
//!
//! ```text
//! cargo bench --bench ppo
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dfaas::core::{BatchEnv, EnvModel};
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::controller::Controller;
use dfaas::policies::ppo::{PpoConfig, Trainer};
use std::hint::black_box;
use std::time::Duration;

fn model() -> EnvModel {
    EnvModel::new(&dfaas::default_config().build().unwrap()).unwrap()
}

fn bench_inference(c: &mut Criterion) {
    let model = model();
    let trainer = Trainer::new(model.clone(), PpoConfig::default(), CpuBackend::new()).unwrap();
    let mut group = c.benchmark_group("ppo_inference");
    for envs in [1usize, 64, 4096] {
        let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
        batch.reset(1).unwrap();
        let obs = batch.observations().to_vec();
        let mut actions = vec![0f32; envs * model.num_agents() * model.action_width()];
        let mut controller = trainer.controller().unwrap();
        group.throughput(Throughput::Elements((envs * model.num_agents()) as u64));
        group.bench_function(BenchmarkId::new("actions", envs), |b| {
            b.iter(|| {
                controller
                    .act(&model, black_box(&obs), &mut actions)
                    .unwrap()
            });
        });
    }
    group.finish();
}

fn bench_training(c: &mut Criterion) {
    let mut group = c.benchmark_group("ppo_training");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for (name, config) in [
        ("default", PpoConfig::default()),
        ("reference", PpoConfig::reference()),
    ] {
        let agent_steps = config.num_envs * config.rollout_steps * 3;
        let mut trainer = Trainer::new(model(), config, CpuBackend::new()).unwrap();
        group.throughput(Throughput::Elements(agent_steps as u64));
        group.bench_function(BenchmarkId::new("iteration", name), |b| {
            b.iter(|| trainer.train_iteration().unwrap());
        });
    }
    group.finish();
}

/// The CPU backend's matrix product (matrixmultiply) against plain loops,
/// at the reference preset's sizes: a minibatch of 144 through a 256-wide
/// hidden layer. The loops are the alternative the CPU backend was chosen
/// against.
fn bench_gemm(c: &mut Criterion) {
    use dfaas::policies::gemm::{Op, gemm};
    let (m, k, n) = (144usize, 256usize, 256usize);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.02).collect();
    let mut out = vec![0f32; m * n];
    let mut group = c.benchmark_group("gemm_144x256x256");
    group.throughput(Throughput::Elements((2 * m * k * n) as u64));
    group.bench_function("matrixmultiply", |bench| {
        bench.iter(|| {
            gemm(
                m,
                k,
                n,
                1.0,
                black_box(&a),
                Op::Plain,
                black_box(&b),
                Op::Transposed,
                0.0,
                &mut out,
            )
            .unwrap()
        });
    });
    group.bench_function("plain_loops", |bench| {
        bench.iter(|| {
            for i in 0..m {
                for j in 0..n {
                    let row = &a[i * k..(i + 1) * k];
                    let col = &b[j * k..(j + 1) * k];
                    out[i * n + j] = row.iter().zip(col).map(|(x, y)| x * y).sum();
                }
            }
            black_box(&out);
        });
    });
    group.finish();
}

criterion_group!(benches, bench_inference, bench_training, bench_gemm);
criterion_main!(benches);

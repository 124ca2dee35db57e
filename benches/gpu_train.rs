//! Training iterations (sampling + learning) on the GPU trainer and the CPU
//! trainer with the `gpu` preset's learning settings (32-step rollouts, 4
//! minibatches per epoch, 4 epochs, 2 × 64), throughput in agent-steps.
//! Sizes from 1 024 envs up to `DFAAS_BENCH_MAX_ENVS` (default 4 096; the
//! CPU up to 16 384). Without any adapter the GPU group is skipped with a
//! message.
//!
//! ```text
//! cargo bench --bench gpu_train
//! DFAAS_BENCH_MAX_ENVS=262144 cargo bench --bench gpu_train
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dfaas::core::{EnvConfig, EnvModel, RejectArithmetic};
use dfaas::gpu::GpuContext;
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::gpu::GpuTrainer;
use dfaas::policies::ppo::{PpoConfig, Trainer};
use std::time::Duration;

fn model() -> EnvModel {
    let config = EnvConfig {
        reject_arithmetic: RejectArithmetic::Exact,
        ..dfaas::default_config()
    };
    EnvModel::new(&config.build().unwrap()).unwrap()
}

/// The `gpu` preset at `envs` envs, keeping its 4 minibatches per epoch.
fn config(envs: usize) -> PpoConfig {
    let preset = PpoConfig::gpu();
    PpoConfig {
        num_envs: envs,
        minibatch_size: envs * preset.rollout_steps / 4,
        iterations: 1_000_000,
        ..preset
    }
}

fn sizes() -> Vec<usize> {
    let max: usize = std::env::var("DFAAS_BENCH_MAX_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    [1024usize, 4096, 16_384, 65_536, 262_144]
        .into_iter()
        .filter(|&e| e <= max)
        .collect()
}

fn bench(c: &mut Criterion) {
    let model = model();
    let n = model.num_agents();
    let mut group = c.benchmark_group("train_iteration_gpu_preset");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for envs in sizes() {
        let config = config(envs);
        group.throughput(Throughput::Elements(
            (envs * config.rollout_steps * n) as u64,
        ));
        match GpuContext::new() {
            Ok(ctx) => {
                eprintln!("adapter: {}", ctx.describe());
                let mut gpu = GpuTrainer::new(model.clone(), config.clone(), ctx).unwrap();
                group.bench_function(BenchmarkId::new("gpu", envs), |b| {
                    b.iter(|| gpu.train_iteration().unwrap());
                });
            }
            Err(e) => eprintln!("skipping the GPU benchmark at {envs} envs: {e}"),
        }
        if envs <= 16_384 {
            let mut cpu = Trainer::new(model.clone(), config, CpuBackend::new()).unwrap();
            group.bench_function(BenchmarkId::new("cpu", envs), |b| {
                b.iter(|| cpu.train_iteration().unwrap());
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! GPU batch-env throughput (agent-steps per second, env only, actions kept
//! on the device) for 1 024 … 262 144 envs on the 3-agent topology, with
//! the CPU `BatchEnv` in the same run for the ratio. Set
//! `DFAAS_BENCH_MAX_ENVS` to go up to 1 048 576 on a real GPU. Without any
//! adapter the GPU group is skipped with a message.
//!
//! ```text
//! cargo bench --bench gpu_env
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dfaas::core::{BatchEnv, EnvConfig, EnvModel};
use dfaas::gpu::{GpuBatchEnv, GpuContext, TracePool};
use std::time::Duration;

fn model() -> EnvModel {
    let config = EnvConfig {
        network: vec!["node_0 node_1 node_2".into(), "node_1 node_2".into()],
        ..dfaas::default_config()
    };
    EnvModel::new(&config.build().unwrap()).unwrap()
}

fn sizes() -> Vec<usize> {
    let max: usize = std::env::var("DFAAS_BENCH_MAX_ENVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(262_144);
    [1024usize, 16_384, 65_536, 262_144, 1_048_576]
        .into_iter()
        .filter(|&e| e <= max)
        .collect()
}

fn bench(c: &mut Criterion) {
    let model = model();
    let n = model.num_agents() as u64;
    let mut group = c.benchmark_group("env_only_3_agents");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    match GpuContext::new() {
        Ok(ctx) => {
            eprintln!("adapter: {}", ctx.describe());
            let pool = TracePool::generate(&model, 64, 1).unwrap();
            for envs in sizes() {
                let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool).unwrap();
                gpu.step(&ctx, &dfaas_support::random_actions(&model, envs, 7))
                    .unwrap();
                group.throughput(Throughput::Elements(envs as u64 * n));
                group.bench_function(BenchmarkId::new("gpu", envs), |b| {
                    b.iter(|| {
                        gpu.advance(&ctx).unwrap();
                        gpu.wait(&ctx).unwrap();
                    });
                });
            }
        }
        Err(e) => eprintln!("skipping the GPU benchmarks: {e}"),
    }
    for envs in sizes().into_iter().filter(|&e| e <= 65_536) {
        let mut cpu = BatchEnv::new(model.clone(), envs).unwrap();
        cpu.reset(1).unwrap();
        let acts = dfaas_support::random_actions(&model, envs, 7);
        group.throughput(Throughput::Elements(envs as u64 * n));
        group.bench_function(BenchmarkId::new("cpu", envs), |b| {
            b.iter(|| cpu.step(&acts).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

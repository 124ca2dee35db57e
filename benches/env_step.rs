//! Environment throughput in agent-steps per second: `Env` and `BatchEnv`
//! (1, 64, 4096 envs) on the reference's 2-, 3- and 5-agent topologies,
//! per-step metrics off and on, and the cost of building the performance
//! tables. Actions come from a seeded pool of Dirichlet(1) draws, as in the
//! reference's own speed measurement.
//!
//! ```text
//! cargo bench --bench env_step
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dfaas::core::{BatchEnv, BatchMetrics, Env, EnvConfig, EnvModel};
use std::hint::black_box;

const AGENTS: [usize; 3] = [2, 3, 5];
const POOL: usize = 64;

fn model(lines: &[&str]) -> EnvModel {
    EnvModel::new(&EnvConfig::with_network(lines).build().unwrap()).unwrap()
}

/// `POOL` action batches for `envs` envs, Dirichlet(1) per agent.
fn action_pool(model: &EnvModel, envs: usize) -> Vec<Vec<f32>> {
    (0..POOL as u64)
        .map(|i| dfaas_support::random_actions(model, envs, 7 + i))
        .collect()
}

fn bench_batch(c: &mut Criterion) {
    for agents in AGENTS {
        let (name, lines) = (
            format!("{agents}_agents"),
            dfaas_support::reference_topology(agents).unwrap(),
        );
        let model = model(lines);
        let n = model.num_agents();
        let mut group = c.benchmark_group(format!("batch_env/{name}"));
        for envs in [1usize, 64, 4096] {
            let pool = action_pool(&model, envs);
            let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
            batch.reset(1).unwrap();
            group.throughput(Throughput::Elements((envs * n) as u64));
            let mut i = 0;
            group.bench_function(BenchmarkId::new("metrics_off", envs), |b| {
                b.iter(|| {
                    batch.step(black_box(&pool[i % POOL])).unwrap();
                    i += 1;
                });
            });
            let mut metrics = BatchMetrics::new(&model, envs);
            group.bench_function(BenchmarkId::new("metrics_on", envs), |b| {
                b.iter(|| {
                    batch
                        .step_with_metrics(black_box(&pool[i % POOL]), &mut metrics)
                        .unwrap();
                    i += 1;
                });
            });
        }
        group.finish();
    }
}

fn bench_single(c: &mut Criterion) {
    let mut group = c.benchmark_group("env");
    for agents in AGENTS {
        let (name, lines) = (
            format!("{agents}_agents"),
            dfaas_support::reference_topology(agents).unwrap(),
        );
        let model = model(lines);
        let pool = action_pool(&model, 1);
        let mut env = Env::new(model.clone());
        env.reset(Some(1)).unwrap();
        group.throughput(Throughput::Elements(model.num_agents() as u64));
        let mut i = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                if env.step(black_box(&pool[i % POOL])).unwrap().done {
                    env.reset(None).unwrap();
                }
                i += 1;
            });
        });
    }
    group.finish();
}

fn bench_tables(c: &mut Criterion) {
    let mut group = c.benchmark_group("perf_tables");
    for agents in AGENTS {
        let (name, lines) = (
            format!("{agents}_agents"),
            dfaas_support::reference_topology(agents).unwrap(),
        );
        let built = EnvConfig::with_network(lines).build().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| EnvModel::new(black_box(&built)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_batch, bench_single, bench_tables);
criterion_main!(benches);

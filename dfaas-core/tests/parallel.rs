//! `BatchEnv` with the `parallel` feature: 1, 2, 3 and 7 threads (whatever
//! the machine has) give the same observations, rewards, dones, terminal
//! observations, metrics and state, bit for bit, over several auto-resets.
#![cfg(feature = "parallel")]

use dfaas_core::config::NetworkGenerator;
use dfaas_core::{BatchEnv, BatchEnvState, BatchMetrics, EnvConfig, EnvModel, StepMetrics};

/// A 100-node ring with 40-step episodes: 90 envs make 9 runs of 10
/// (without metrics; with them runs are whole windows of 1024 envs).
fn ring() -> EnvModel {
    let config = EnvConfig {
        network_generator: Some(NetworkGenerator::Ring { nodes: 100 }),
        max_steps: 40,
        ..EnvConfig::default()
    };
    EnvModel::new(&config.build().unwrap()).unwrap()
}

/// The default 3-agent scenario with 7-step episodes: 2 100 envs make
/// three runs with metrics (1024, 1024 and 52 envs).
fn three_agents() -> EnvModel {
    let config = EnvConfig {
        max_steps: 7,
        ..EnvConfig::default()
    };
    EnvModel::new(&config.build().unwrap()).unwrap()
}

/// Everything `steps` steps of `envs` envs of `model` produce (metrics
/// every `metrics_every`-th step; past 1 000 envs, three of them two steps
/// ahead), stepped on `threads` threads.
fn run(
    model: &EnvModel,
    envs: usize,
    steps: usize,
    metrics_every: usize,
    threads: usize,
) -> (Vec<Vec<f32>>, Vec<StepMetrics>, BatchEnvState) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let (n, w) = (model.num_agents(), model.action_width());
        let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
        batch.reset(5).unwrap();
        let mut metrics = BatchMetrics::new(model, envs);
        let mut outputs = Vec::new();
        let mut seen = Vec::new();
        if envs > 1000 {
            // Envs 1000..1003 two steps ahead: a lane block stepped env by
            // env at their episodes' ends, inside a window of lane blocks.
            let mut state = batch.state();
            state.steps[1000..1003].fill(2);
            batch.restore(state).unwrap();
        }
        for step in 0..steps {
            let actions: Vec<f32> = (0..envs * n * w)
                .map(|i| ((i * 31 + step * 7) % 11) as f32 / 10.0)
                .collect();
            if step % metrics_every == 0 {
                batch.step_with_metrics(&actions, &mut metrics).unwrap();
                seen.extend(metrics.envs());
            } else {
                batch.step(&actions).unwrap();
            }
            let dones: Vec<f32> = batch
                .dones()
                .iter()
                .map(|&d| f32::from(u8::from(d)))
                .collect();
            outputs.push(batch.observations().to_vec());
            outputs.push(batch.rewards().to_vec());
            outputs.push(dones);
            outputs.push(batch.final_observations().to_vec());
        }
        (outputs, seen, batch.state())
    })
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// [`run`] on 2, 3 and 7 threads gives what it gives on one, bit for bit.
fn same_on_any_thread_count(model: &EnvModel, envs: usize, steps: usize, metrics_every: usize) {
    let one = run(model, envs, steps, metrics_every, 1);
    for threads in [2, 3, 7] {
        let other = run(model, envs, steps, metrics_every, threads);
        assert!(
            bits(&one.0) == bits(&other.0),
            "{threads} threads: outputs differ"
        );
        assert!(one.1 == other.1, "{threads} threads: metrics differ");
        assert!(one.2 == other.2, "{threads} threads: states differ");
    }
}

#[test]
fn any_thread_count_gives_the_same_steps() {
    same_on_any_thread_count(&ring(), 90, 130, 3);
}

/// With metrics every step, 2 100 envs step in runs of whole windows, each
/// recording into its part of every row: the same on any thread count.
#[test]
fn metrics_recorded_in_runs_are_the_same_on_any_thread_count() {
    same_on_any_thread_count(&three_agents(), 2100, 12, 1);
}

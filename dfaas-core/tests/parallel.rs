//! `BatchEnv` with the `parallel` feature: 1, 2, 3 and 7 threads (whatever
//! the machine has) give the same observations, rewards, dones, terminal
//! observations, metrics and state, bit for bit, over several auto-resets.
#![cfg(feature = "parallel")]

use dfaas_core::config::NetworkGenerator;
use dfaas_core::{BatchEnv, BatchEnvState, BatchMetrics, EnvConfig, EnvModel, StepMetrics};

/// A 100-node ring with 40-step episodes: 90 envs make 9 runs of 10.
fn model() -> EnvModel {
    let config = EnvConfig {
        network_generator: Some(NetworkGenerator::Ring { nodes: 100 }),
        max_steps: 40,
        ..EnvConfig::default()
    };
    EnvModel::new(&config.build().unwrap()).unwrap()
}

/// Everything a run of 130 steps produces, stepped on `threads` threads.
fn run(threads: usize) -> (Vec<Vec<f32>>, Vec<StepMetrics>, BatchEnvState) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let model = model();
        let (n, w) = (model.num_agents(), model.action_width());
        let envs = 90;
        let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
        batch.reset(5).unwrap();
        let mut metrics = BatchMetrics::new(&model, envs);
        let mut outputs = Vec::new();
        let mut seen = Vec::new();
        for step in 0..130usize {
            let actions: Vec<f32> = (0..envs * n * w)
                .map(|i| ((i * 31 + step * 7) % 11) as f32 / 10.0)
                .collect();
            if step % 3 == 0 {
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

#[test]
fn any_thread_count_gives_the_same_steps() {
    let one = run(1);
    let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
        v.iter()
            .map(|r| r.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    for threads in [2, 3, 7] {
        let other = run(threads);
        assert!(
            bits(&one.0) == bits(&other.0),
            "{threads} threads: outputs differ"
        );
        assert!(one.1 == other.1, "{threads} threads: metrics differ");
        assert!(one.2 == other.2, "{threads} threads: states differ");
    }
}

//! Environment-only throughput of the GPU batch against the CPU `BatchEnv`
//! in the same run: the reference's 3-agent topology (or 2, 5), Dirichlet(1)
//! actions uploaded once and reused, episodes from a pool of 64. Prints one
//! table and the adapter's name; runs on any Vulkan adapter.
//!
//! ```text
//! cargo run --release --example gpu_env_throughput
//! cargo run --release --example gpu_env_throughput -- --envs 1024,16384,1048576 --steps 200
//! ```

use anyhow::{Result, bail};
use clap::Parser;
use dfaas::core::{BatchEnv, EnvConfig, EnvModel};
use dfaas::gpu::{GpuBatchEnv, GpuContext, TracePool};
use std::time::Instant;

/// Measure GPU and CPU batch-env throughput (agent-steps per second).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Agents: 2, 3 or 5 (the reference's topologies).
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Batch sizes to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 4096, 16384, 65536, 262144, 1048576])]
    envs: Vec<usize>,
    /// Steps per measurement (after 10 warm-up steps).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Largest batch also measured on the CPU (one core).
    #[arg(long, default_value_t = 65536)]
    cpu_max_envs: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let Some(lines) = dfaas_support::reference_topology(args.agents) else {
        bail!("--agents must be 2, 3 or 5, got {}", args.agents);
    };
    if args.steps == 0 || args.envs.contains(&0) {
        bail!("--steps and every --envs value must be > 0");
    }
    // The embedded default's node parameters on the chosen topology.
    let config = EnvConfig {
        network: lines.iter().map(|l| l.to_string()).collect(),
        ..dfaas::default_config()
    };
    let model = EnvModel::new(&config.build()?)?;
    let ctx = GpuContext::new()?;
    println!("adapter: {}", ctx.describe());
    let pool = TracePool::generate(&model, 64, 1)?;
    let n = model.num_agents();
    println!(
        "{:>9} {:>18} {:>18} {:>8}",
        "envs", "GPU agent-steps/s", "CPU agent-steps/s", "GPU/CPU"
    );
    for &envs in &args.envs {
        let acts = dfaas_support::random_actions(&model, envs, 7);
        let mut gpu = GpuBatchEnv::new(&ctx, &model, envs, &pool)?;
        gpu.step(&ctx, &acts)?;
        for _ in 0..10 {
            gpu.advance(&ctx)?;
        }
        gpu.wait(&ctx)?;
        let start = Instant::now();
        for _ in 0..args.steps {
            gpu.advance(&ctx)?;
        }
        gpu.wait(&ctx)?;
        let gpu_rate = (args.steps * envs * n) as f64 / start.elapsed().as_secs_f64();
        let cpu_rate = if envs <= args.cpu_max_envs {
            let mut cpu = BatchEnv::new(model.clone(), envs)?;
            cpu.reset(1)?;
            let cpu_steps = (args.steps / 4).max(5);
            let start = Instant::now();
            for _ in 0..cpu_steps {
                cpu.step(&acts)?;
            }
            Some((cpu_steps * envs * n) as f64 / start.elapsed().as_secs_f64())
        } else {
            None
        };
        match cpu_rate {
            Some(c) => println!(
                "{envs:>9} {gpu_rate:>18.4e} {c:>18.4e} {:>8.2}",
                gpu_rate / c
            ),
            None => println!("{envs:>9} {gpu_rate:>18.4e} {:>18} {:>8}", "-", "-"),
        }
    }
    Ok(())
}

//! Plain throughput measurement of the CPU `BatchEnv` (no criterion): steps
//! the reference's 2-, 3- or 5-agent topology (or a generated ring) with a
//! pool of Dirichlet(1) actions on `--threads` threads and prints
//! agent-steps per second (median of the repeats).
//!
//! ```text
//! cargo run --release --example env_throughput -- --agents 3 --envs 4096 --steps 200
//! cargo run --release --example env_throughput -- --ring 100 --envs 256 --threads 1
//! ```

use anyhow::{Result, bail};
use clap::Parser;
use dfaas::core::config::NetworkGenerator;
use dfaas::core::{BatchEnv, BatchMetrics, EnvConfig, EnvModel};
use std::time::Instant;

/// Measure CPU BatchEnv throughput in agent-steps per second.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Agents: 2, 3 or 5 (the reference's topologies).
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// A generated ring of this many nodes instead (`network_generator:
    /// {kind: ring}`).
    #[arg(long)]
    ring: Option<i64>,
    /// Threads the batch steps on (a rayon pool of this size; default:
    /// every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Environments in the batch.
    #[arg(long, default_value_t = 4096)]
    envs: usize,
    /// Batch steps per repeat.
    #[arg(long, default_value_t = 288)]
    steps: usize,
    /// Repeats (the median is printed).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Record every per-step metric.
    #[arg(long)]
    metrics: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.envs == 0 || args.steps == 0 || args.repeats == 0 {
        bail!("--envs, --steps and --repeats must be > 0");
    }
    let config = match args.ring {
        Some(nodes) => EnvConfig {
            network_generator: Some(NetworkGenerator::Ring { nodes }),
            ..EnvConfig::default()
        },
        None => {
            let Some(lines) = dfaas_support::reference_topology(args.agents) else {
                bail!("--agents must be 2, 3 or 5, got {}", args.agents);
            };
            EnvConfig::with_network(lines)
        }
    };
    let model = EnvModel::new(&config.build()?)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        bail!("--threads must be at least 1");
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?
        .install(|| measure(&args, &model, threads))
}

/// Steps a batch of `model` as `args` say and prints the median rate.
fn measure(args: &Args, model: &EnvModel, threads: usize) -> Result<()> {
    let n = model.num_agents();
    let pool: Vec<Vec<f32>> = (0..16)
        .map(|i| dfaas_support::random_actions(model, args.envs, 7 + i))
        .collect();
    let mut batch = BatchEnv::new(model.clone(), args.envs)?;
    batch.reset(1)?;
    let mut metrics = BatchMetrics::new(model, args.envs);
    let mut rates = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        let start = Instant::now();
        for step in 0..args.steps {
            let actions = &pool[step % pool.len()];
            if args.metrics {
                batch.step_with_metrics(actions, &mut metrics)?;
            } else {
                batch.step(actions)?;
            }
        }
        rates.push((args.steps * args.envs * n) as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{} agents, {} envs, {} thread(s), metrics {}: {:.2} M agent-steps/s (median of {})",
        n,
        args.envs,
        threads,
        if args.metrics { "on" } else { "off" },
        rates[rates.len() / 2] / 1e6,
        rates.len()
    );
    Ok(())
}

//! Runs one episode of a configuration with a heuristic policy and writes
//! the reference's per-step `stats.csv` (gzip when the name ends in `.gz`),
//! like the reference's `python dfaas_env.py`.
//!
//! ```text
//! cargo run --release --example episode
//! cargo run --release --example episode -- --policy random --out stats.csv.gz
//! ```

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use dfaas::core::rng::{seeded, uniform01};
use dfaas::core::stats::StatsWriter;
use dfaas::core::{Env, EnvConfig, EnvModel};
use std::io::Write;
use std::path::PathBuf;

/// Heuristic policies.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Policy {
    /// Process everything locally (the reference's APL).
    AllLocal,
    /// Uniform on the simplex (Dirichlet(1)), from the episode's seed.
    Random,
}

/// Run one DFaaS episode with a heuristic policy and write its per-step
/// statistics.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Environment configuration (YAML or JSON); default: the embedded
    /// 3-agent scenario in the seconds regime.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Base bandwidth trace (CSV with a `Throughput` column); default: the
    /// configuration's `bandwidth_base_trace_path`, else the flat fallback.
    #[arg(long)]
    base_trace: Option<PathBuf>,
    /// Policy to run.
    #[arg(long, value_enum, default_value_t = Policy::AllLocal)]
    policy: Policy,
    /// Seed of the episode (reset seed) and of the random policy.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Statistics file; gzip-compressed when it ends in `.gz`.
    #[arg(long, default_value = "stats.csv")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => EnvConfig::from_file(path)?,
        None => dfaas::default_config(),
    };
    if let Some(path) = &args.base_trace {
        config.bandwidth_base_trace_path = Some(path.display().to_string());
    }
    let built = config.build().context("building the configuration")?;
    let model = EnvModel::new(&built)?;
    let (n, width) = (model.num_agents(), model.action_width());
    let degrees: Vec<usize> = (0..n).map(|a| model.degree(a)).collect();
    let mut env = Env::new(model);
    env.reset(Some(args.seed))?;
    let mut rng = seeded(args.seed);
    let mut actions = vec![0f32; n * width];
    let mut stats = StatsWriter::new(env.model(), Vec::new())?;
    let (mut reward_sum, mut requests, mut rejected, mut steps) =
        (vec![0f64; n], 0u64, 0u64, 0usize);
    loop {
        actions.fill(0.0);
        for (a, &k) in degrees.iter().enumerate() {
            let row = &mut actions[a * width..a * width + k + 2];
            match args.policy {
                Policy::AllLocal => row[0] = 1.0,
                Policy::Random => {
                    let draws: Vec<f64> = (0..k + 2)
                        .map(|_| -(1.0 - uniform01(&mut rng)).ln())
                        .collect();
                    let total: f64 = draws.iter().sum();
                    for (p, d) in row.iter_mut().zip(&draws) {
                        *p = (d / total) as f32;
                    }
                }
            }
        }
        let done = env.step(&actions)?.done;
        let m = env.metrics();
        stats.write_step(env.model(), m)?;
        for a in 0..n {
            reward_sum[a] += m.reward[a];
            requests += u64::from(m.input_rate[a]);
            rejected += u64::from(m.action[a * width + degrees[a] + 1] + m.incoming_rate_reject[a]);
        }
        steps += 1;
        if done {
            break;
        }
    }
    let csv_bytes = stats.finish()?;
    dfaas::io::write_atomically(&args.out, |out| {
        if args.out.extension().is_some_and(|e| e == "gz") {
            let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            gz.write_all(&csv_bytes)?;
            gz.finish().map(drop)
        } else {
            out.write_all(&csv_bytes)
        }
    })?;
    let names = built.topology().names();
    println!(
        "{steps} steps, policy {:?}, seed {}",
        args.policy, args.seed
    );
    for (name, sum) in names.iter().zip(&reward_sum) {
        println!("  {name}: mean reward {:.4}", sum / steps as f64);
    }
    println!(
        "  rejected {:.1} % of {requests} requests; wrote {}",
        100.0 * rejected as f64 / requests.max(1) as f64,
        args.out.display()
    );
    Ok(())
}

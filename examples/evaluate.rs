//! Evaluates a trained checkpoint and every baseline on the environment's
//! evaluation episodes: prints a table per policy (mean reward, reject %,
//! local/forward % overall and per agent) and writes the reference's
//! per-step `stats.csv` of every episode.
//!
//! ```text
//! cargo run --release --example evaluate -- --checkpoint runs/default
//! ```
//!
//! With `--config FILE`, on another federation: a policy of the agnostic
//! layout acts for any node; the other layouts only for the topology they
//! were trained on (same agents and degrees).

use anyhow::{Context, Result};
use clap::Parser;
use dfaas::core::stats::StatsWriter;
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::baselines;
use dfaas::policies::checkpoint;
use dfaas::policies::controller::{
    Controller, Evaluation, evaluate_with, evaluation_env, evaluation_seed, write_evaluation_csv,
};
use dfaas::policies::oracle::{Oracle, OracleSettings, SplitLog};
use dfaas::policies::ppo::PpoController;
use std::io::Write as _;
use std::path::PathBuf;

/// Evaluate a PPO checkpoint and every baseline on the evaluation episodes.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// A checkpoint folder (`…/checkpoints/iter_NNNNNN`) or a run folder
    /// (its latest checkpoint is used).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluation episodes.
    #[arg(long, default_value_t = 6)]
    episodes: usize,
    /// Seed of the evaluation episode list; default: the one `train_ppo`
    /// used (its seed + 1000003).
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder for `<policy>/episode_<i>.csv` and `evaluation.csv`;
    /// default: `evaluation/` inside the checkpoint folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate on this environment configuration (YAML/JSON) instead of
    /// the one the checkpoint was trained on.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Candidate splits the oracle scores per step at most.
    #[arg(long, default_value_t = OracleSettings::default().max_scores)]
    oracle_budget: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dir = if args.checkpoint.join("state.json").is_file() {
        args.checkpoint.clone()
    } else {
        checkpoint::latest(&args.checkpoint.join("checkpoints")).with_context(|| {
            format!(
                "{}: neither a checkpoint nor a run folder with checkpoints",
                args.checkpoint.display()
            )
        })?
    };
    let trainer = checkpoint::load(&dir, CpuBackend::new())?;
    let built = match &args.config {
        Some(path) => dfaas::core::EnvConfig::from_file(path)
            .and_then(|c| c.build())
            .with_context(|| format!("--config {}", path.display()))?,
        None => trainer.model().built().clone(),
    };
    let ppo = PpoController::new(dfaas::infer::Policy::from_safetensors(
        &std::fs::read(dir.join("policies.safetensors"))
            .with_context(|| format!("reading {}", dir.display()))?,
    )?);
    if !ppo.fits(&dfaas::core::EnvModel::new(&built)?) {
        anyhow::bail!(
            "--config: the checkpoint's {} policies act only on the topology they were trained on (same agents and degrees); train with --layout agnostic to evaluate on other federations",
            trainer.config().layout.name()
        );
    }
    let seed = args.seed.unwrap_or(evaluation_seed(trainer.config().seed));
    let out = args.out.clone().unwrap_or_else(|| dir.join("evaluation"));
    let names = built.topology().names().to_vec();
    let fresh_env = || evaluation_env(built.config(), args.episodes, seed);

    // Every controller's splits seed the oracle's search; it runs last.
    let mut log = SplitLog::new();
    let mut results: Vec<Evaluation> = Vec::new();
    let mut controllers: Vec<Box<dyn Controller + '_>> = vec![Box::new(ppo)];
    controllers.extend(baselines::all(seed));
    for controller in &mut controllers {
        results.push(evaluate_into(
            controller.as_mut(),
            fresh_env()?,
            &out,
            &mut log,
        )?);
    }
    drop(controllers);
    let settings = OracleSettings {
        max_scores: args.oracle_budget,
        ..OracleSettings::default()
    };
    let mut oracle = Oracle::new(settings, std::mem::take(&mut log));
    results.push(evaluate_into(&mut oracle, fresh_env()?, &out, &mut log)?);

    println!(
        "checkpoint {} (iteration {}), {} evaluation episodes",
        dir.display(),
        trainer.iteration(),
        args.episodes
    );
    for r in &results {
        let o = &r.outcomes;
        println!(
            "\n{}: mean reward {:.4}, rejected {:.2} %, local {:.2} %, forwarded {:.2} %",
            r.policy, r.mean_reward, r.reject_pct, r.local_pct, r.forward_pct
        );
        println!(
            "  served {:.2} % (locally {:.2} %, by a neighbour {:.2} %; mean response time {:.1} ms); rejected by the policy {:.2} %, by overload at the node {:.2} %, at the neighbour {:.2} %",
            o.served_pct(),
            o.served_local_pct,
            o.served_neighbour_pct,
            o.served_response_ms,
            o.rejected_by_policy_pct,
            o.rejected_local_overload_pct,
            o.rejected_neighbour_overload_pct
        );
        println!(
            "  {:<10} {:>11} {:>8} {:>10} {:>9} {:>9} {:>10}",
            "agent", "mean_reward", "local_%", "forward_%", "reject_%", "served_%", "served_ms"
        );
        for (name, a) in names.iter().zip(&r.per_agent) {
            println!(
                "  {name:<10} {:>11.4} {:>8.2} {:>10.2} {:>9.2} {:>9.2} {:>10.1}",
                a.mean_reward,
                a.local_pct,
                a.forward_pct,
                a.reject_pct,
                a.outcomes.served_pct(),
                a.outcomes.served_response_ms
            );
        }
    }
    write_evaluation_csv(&out.join("evaluation.csv"), &results)?;
    println!("\nwrote {}", out.display());
    Ok(())
}

/// Runs `controller` on `env`'s episodes, writes `<out>/<policy>/episode_<i>.csv`
/// and records its splits into `log`.
fn evaluate_into(
    controller: &mut dyn Controller,
    mut env: dfaas::core::BatchEnv,
    out: &std::path::Path,
    log: &mut SplitLog,
) -> Result<Evaluation> {
    let policy_dir = out.join(controller.name());
    std::fs::create_dir_all(&policy_dir)
        .with_context(|| format!("creating {}", policy_dir.display()))?;
    let mut writers: Vec<StatsWriter<Vec<u8>>> = (0..env.num_envs())
        .map(|_| StatsWriter::new(env.model(), Vec::new()))
        .collect::<std::io::Result<_>>()?;
    let result = evaluate_with(controller, &mut env, |i, model, metrics| {
        log.record(i, metrics);
        writers[i].write_step(model, metrics)
    })?;
    for (i, writer) in writers.into_iter().enumerate() {
        let bytes = writer.finish()?;
        let path = policy_dir.join(format!("episode_{i}.csv"));
        dfaas::io::write_atomically(&path, |w| w.write_all(&bytes))?;
    }
    Ok(result)
}

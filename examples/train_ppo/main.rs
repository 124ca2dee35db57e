//! Trains multi-agent PPO on a DFaaS scenario, evaluates it against every
//! baseline, and writes a run folder.
//!
//! ```text
//! cargo run --release --example train_ppo
//! cargo run --release --example train_ppo -- --preset reference --iterations 20 --out runs/reference
//! ```
//!
//! The run folder holds `env_config.yaml` (the built environment
//! configuration), `ppo_config.txt`, `metrics.csv` (one row per iteration),
//! `evaluation.csv` (one row per policy), `learning_curve.svg` and
//! `agent_shares.svg` (the PPO policy's split per agent).

mod plots;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use dfaas::core::{EnvConfig, EnvModel};
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::baselines::{self, AllLocal, NodeMargin, Random, Recalc, Static6040};
use dfaas::policies::controller::{Controller, Evaluation, evaluate, evaluation_env};
use dfaas::policies::ppo::{PpoConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Hyperparameter presets.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// The project's defaults (chosen by measurement; see the README).
    Default,
    /// The reference's RLlib settings (2×256 tanh, 30 epochs, minibatch 144, …).
    Reference,
}

/// Policy layouts.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Layout {
    /// One actor and one critic per agent (the reference).
    Independent,
    /// One policy shared by all agents with an agent-id input (not built yet).
    Shared,
    /// Independent actors with a centralised critic (not built yet).
    Mappo,
}

/// Compute backends.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum BackendChoice {
    /// Plain Rust on the CPU.
    Cpu,
    /// wgpu compute kernels (not built yet).
    Gpu,
    /// The GPU when one is available, else the CPU.
    Auto,
}

/// Train multi-agent PPO on a DFaaS scenario and compare it with the baselines.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Run folder (created; files in it are replaced atomically).
    #[arg(long, default_value = "runs/default")]
    out: PathBuf,
    /// Environment configuration (YAML or JSON); default: the embedded
    /// 3-agent scenario in the seconds regime.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Hyperparameter preset.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    preset: Preset,
    /// Training iterations (default: the preset's).
    #[arg(long)]
    iterations: Option<usize>,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Policy layout.
    #[arg(long, value_enum, default_value_t = Layout::Independent)]
    layout: Layout,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Evaluation episodes (the env's evaluation seeds).
    #[arg(long, default_value_t = 6)]
    eval_episodes: usize,
    /// Override: learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Override: hidden layer widths, e.g. `64,64`.
    #[arg(long, value_delimiter = ',')]
    hidden: Option<Vec<usize>>,
    /// Override: SGD epochs per iteration.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override: minibatch size.
    #[arg(long)]
    minibatch: Option<usize>,
    /// Override: environments per rollout.
    #[arg(long)]
    num_envs: Option<usize>,
    /// Override: discount γ.
    #[arg(long)]
    gamma: Option<f32>,
    /// Override: GAE λ.
    #[arg(long)]
    lambda: Option<f32>,
    /// Override: initial entropy coefficient.
    #[arg(long)]
    entropy: Option<f32>,
    /// Override: weight of the team reward in [0, 1].
    #[arg(long)]
    team_reward: Option<f32>,
}

fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    dfaas::io::write_atomically(path, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

fn run(args: Args) -> Result<()> {
    if args.layout != Layout::Independent {
        bail!(
            "--layout {:?}: only `independent` is implemented so far",
            args.layout
        );
    }
    if args.backend == BackendChoice::Gpu {
        bail!("--backend gpu: the GPU backend is not implemented yet (use cpu or auto)");
    }
    if args.eval_episodes == 0 {
        bail!("--eval-episodes must be > 0");
    }
    let env_config = match &args.config {
        Some(path) => EnvConfig::from_file(path)?,
        None => dfaas::default_config(),
    };
    let built = env_config
        .build()
        .context("building the environment configuration")?;
    let mut config = match args.preset {
        Preset::Default => PpoConfig::default(),
        Preset::Reference => PpoConfig::reference(),
    };
    if let Some(iterations) = args.iterations {
        config.iterations = iterations;
    }
    if let Some(v) = args.lr {
        config.learning_rate = v;
    }
    if let Some(v) = &args.hidden {
        config.hidden.clone_from(v);
    }
    if let Some(v) = args.epochs {
        config.epochs = v;
    }
    if let Some(v) = args.minibatch {
        config.minibatch_size = v;
    }
    if let Some(v) = args.num_envs {
        config.num_envs = v;
    }
    if let Some(v) = args.gamma {
        config.gamma = v;
    }
    if let Some(v) = args.lambda {
        config.lambda = v;
    }
    if let Some(v) = args.entropy {
        config.entropy_coeff = v;
    }
    if let Some(v) = args.team_reward {
        if !(0.0..=1.0).contains(&v) {
            bail!("--team-reward must be in [0, 1], got {v}");
        }
        config.team_reward = v;
    }
    config.seed = args.seed;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_file(
        &args.out.join("env_config.yaml"),
        &built.config().to_yaml()?,
    )?;
    write_file(&args.out.join("ppo_config.txt"), &format!("{config:#?}\n"))?;

    let model = EnvModel::new(&built)?;
    let names = built.topology().names().to_vec();
    let mut trainer =
        Trainer::new(model, config.clone(), CpuBackend::new()).map_err(anyhow::Error::msg)?;
    let mut metrics = String::from("iteration,env_steps,agent_steps,wall_seconds,mean_reward");
    for name in &names {
        write!(metrics, ",reward_{name}")?;
    }
    metrics.push_str(",reject_pct,policy_loss,value_loss,entropy,kl,clip_fraction,entropy_coeff\n");
    let bar = ProgressBar::new(config.iterations as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} iterations, {elapsed} {msg}",
    )?);
    let start = Instant::now();
    let mut curve = Vec::with_capacity(config.iterations);
    for _ in 0..config.iterations {
        let m = trainer.train_iteration().map_err(anyhow::Error::msg)?;
        curve.push((m.iteration, m.mean_reward));
        let wall = start.elapsed().as_secs_f64();
        write!(
            metrics,
            "{},{},{},{wall:.3},{:.6}",
            m.iteration, m.env_steps, m.agent_steps, m.mean_reward
        )?;
        for r in &m.agent_rewards {
            write!(metrics, ",{r:.6}")?;
        }
        writeln!(
            metrics,
            ",{:.4},{:.6},{:.6},{:.6},{:.6},{:.4},{:.6}",
            m.reject_pct,
            m.policy_loss,
            m.value_loss,
            m.entropy,
            m.kl,
            m.clip_fraction,
            m.entropy_coeff
        )?;
        bar.set_message(format!(
            "reward {:.3}, {:.0} agent-steps/s",
            m.mean_reward,
            m.agent_steps as f64 / wall
        ));
        bar.inc(1);
    }
    bar.finish();
    let train_seconds = start.elapsed().as_secs_f64();
    write_file(&args.out.join("metrics.csv"), &metrics)?;

    // ---- Evaluation: PPO and every baseline on the same episodes ----
    let eval_seed = args.seed.wrapping_add(1_000_003);
    let mut results: Vec<Evaluation> = Vec::new();
    let mut controllers: Vec<Box<dyn Controller>> = vec![
        Box::new(AllLocal),
        Box::new(Random::new(args.seed)),
        Box::new(Static6040),
        Box::new(Recalc::default()),
        Box::new(NodeMargin::default()),
    ];
    {
        let mut env = evaluation_env(built.config(), args.eval_episodes, eval_seed)
            .map_err(anyhow::Error::msg)?;
        results.push(evaluate(&mut trainer.controller(), &mut env).map_err(anyhow::Error::msg)?);
    }
    for c in &mut controllers {
        let mut env = evaluation_env(built.config(), args.eval_episodes, eval_seed)
            .map_err(anyhow::Error::msg)?;
        results.push(evaluate(c.as_mut(), &mut env).map_err(anyhow::Error::msg)?);
    }
    let mut env = evaluation_env(built.config(), args.eval_episodes, eval_seed)
        .map_err(anyhow::Error::msg)?;
    results.push(baselines::upper_bound(&mut env).map_err(anyhow::Error::msg)?);

    let mut csv = String::from("policy,mean_reward,reject_pct,local_pct,forward_pct\n");
    println!(
        "\n{:<14} {:>11} {:>9} {:>8} {:>10}",
        "policy", "mean_reward", "reject_%", "local_%", "forward_%"
    );
    for r in &results {
        writeln!(
            csv,
            "{},{:.6},{:.4},{:.4},{:.4}",
            r.policy, r.mean_reward, r.reject_pct, r.local_pct, r.forward_pct
        )?;
        println!(
            "{:<14} {:>11.4} {:>9.2} {:>8.2} {:>10.2}",
            r.policy, r.mean_reward, r.reject_pct, r.local_pct, r.forward_pct
        );
    }
    write_file(&args.out.join("evaluation.csv"), &csv)?;
    write_file(
        &args.out.join("learning_curve.svg"),
        &plots::learning_curve(&curve, &results)?,
    )?;
    write_file(
        &args.out.join("agent_shares.svg"),
        &plots::agent_shares("ppo", &names, &results[0].per_agent)?,
    )?;
    let agent_steps =
        trainer.iteration() as f64 * (config.rollout_steps * config.num_envs * names.len()) as f64;
    println!(
        "\ntrained {} iterations in {train_seconds:.1} s ({:.0} agent-steps/s); wrote {}",
        trainer.iteration(),
        agent_steps / train_seconds,
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    dfaas::exit_code(run(Args::parse()))
}

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
//! `checkpoints/iter_NNNNNN/` (see `dfaas_policies::checkpoint`),
//! `evaluation.csv` (one row per policy), `learning_curve.svg` and
//! `agent_shares.svg` (the PPO policy's split per agent). A killed run
//! continues with `--resume` and ends exactly as if never interrupted.

mod plots;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use dfaas::core::{EnvConfig, EnvModel};
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::baselines::{self, AllLocal, NodeMargin, Random, Recalc, Static6040};
use dfaas::policies::checkpoint;
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
    /// One policy shared by all agents, with an agent-id input.
    Shared,
    /// Independent actors with centralised critics (MAPPO).
    Mappo,
}

/// Hidden activations.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum ActivationChoice {
    /// Hyperbolic tangent.
    Tanh,
    /// max(0, x).
    Relu,
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
    /// Override: hidden activation.
    #[arg(long, value_enum)]
    activation: Option<ActivationChoice>,
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
    /// Save a checkpoint every N iterations (and after the last one).
    #[arg(long, default_value_t = 50)]
    checkpoint_every: usize,
    /// Continue the run in `--out` from its latest checkpoint (same random
    /// streams: the result equals an uninterrupted run); `--iterations` may
    /// raise the total.
    #[arg(long)]
    resume: bool,
}

fn write_file(path: &std::path::Path, text: &str) -> Result<()> {
    dfaas::io::write_atomically(path, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// The preset with the command line's overrides.
fn hyperparameters(args: &Args) -> Result<PpoConfig> {
    let mut config = match args.preset {
        Preset::Default => PpoConfig::default(),
        Preset::Reference => PpoConfig::reference(),
    };
    config.seed = args.seed;
    config.layout = match args.layout {
        Layout::Independent => dfaas::policies::ppo::Layout::Independent,
        Layout::Shared => dfaas::policies::ppo::Layout::Shared,
        Layout::Mappo => dfaas::policies::ppo::Layout::Mappo,
    };
    if let Some(v) = args.iterations {
        config.iterations = v;
    }
    if let Some(v) = args.lr {
        config.learning_rate = v;
    }
    if let Some(v) = args.activation {
        config.activation = match v {
            ActivationChoice::Tanh => dfaas::policies::mlp::Activation::Tanh,
            ActivationChoice::Relu => dfaas::policies::mlp::Activation::Relu,
        };
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
    Ok(config)
}

/// `metrics.csv`'s header for these agents.
fn metrics_header(names: &[String]) -> String {
    let mut header = String::from("iteration,env_steps,agent_steps,wall_seconds,mean_reward");
    for name in names {
        header.push_str(&format!(",reward_{name}"));
    }
    header.push_str(",reject_pct,policy_loss,value_loss,entropy,kl,clip_fraction,entropy_coeff\n");
    header
}

/// What a run has logged so far: `metrics.csv`'s text, the learning curve
/// `(iteration, mean reward)` and the wall time reached.
struct Logged {
    metrics: String,
    curve: Vec<(usize, f64)>,
    wall_seconds: f64,
}

/// On resume: the rows of an earlier `metrics.csv` up to `iteration`.
fn earlier_metrics(path: &std::path::Path, names: &[String], iteration: usize) -> Result<Logged> {
    let mut kept = metrics_header(names);
    let (mut curve, mut wall) = (Vec::new(), 0.0);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        let (Some(Ok(i)), Some(Ok(w)), Some(Ok(r))) = (
            cells.first().map(|c| c.parse::<usize>()),
            cells.get(3).map(|c| c.parse::<f64>()),
            cells.get(4).map(|c| c.parse::<f64>()),
        ) else {
            bail!("{}: malformed row `{line}`", path.display());
        };
        if i <= iteration {
            kept.push_str(line);
            kept.push('\n');
            curve.push((i, r));
            wall = w;
        }
    }
    Ok(Logged {
        metrics: kept,
        curve,
        wall_seconds: wall,
    })
}

fn run(args: Args) -> Result<()> {
    if args.backend == BackendChoice::Gpu {
        bail!("--backend gpu: the GPU backend is not implemented yet (use cpu or auto)");
    }
    if args.eval_episodes == 0 || args.checkpoint_every == 0 {
        bail!("--eval-episodes and --checkpoint-every must be > 0");
    }
    if args.backend == BackendChoice::Auto {
        println!("backend: cpu (the GPU training backend is not built yet)");
    }
    let checkpoints = args.out.join("checkpoints");
    let (mut trainer, built) = if args.resume {
        if args.config.is_some() {
            bail!("--resume continues the run's own configuration; drop --config");
        }
        let latest = checkpoint::latest(&checkpoints).with_context(|| {
            format!(
                "--resume: no complete checkpoint in {}",
                checkpoints.display()
            )
        })?;
        let trainer = checkpoint::load(&latest, CpuBackend::new()).map_err(anyhow::Error::msg)?;
        println!(
            "resuming from {} (iteration {})",
            latest.display(),
            trainer.iteration()
        );
        let built = trainer.model().built().clone();
        (trainer, built)
    } else {
        let env_config = match &args.config {
            Some(path) => EnvConfig::from_file(path)?,
            None => dfaas::default_config(),
        };
        let built = env_config
            .build()
            .context("building the environment configuration")?;
        let config = hyperparameters(&args)?;
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        write_file(
            &args.out.join("env_config.yaml"),
            &built.config().to_yaml()?,
        )?;
        write_file(&args.out.join("ppo_config.txt"), &format!("{config:#?}\n"))?;
        let trainer = Trainer::new(EnvModel::new(&built)?, config, CpuBackend::new())
            .map_err(anyhow::Error::msg)?;
        (trainer, built)
    };
    let mut config = trainer.config().clone();
    if args.resume {
        if let Some(v) = args.iterations {
            config.iterations = v;
        }
    }
    let names = built.topology().names().to_vec();
    let metrics_path = args.out.join("metrics.csv");
    let Logged {
        mut metrics,
        mut curve,
        wall_seconds: wall_before,
    } = if args.resume {
        earlier_metrics(&metrics_path, &names, trainer.iteration())?
    } else {
        Logged {
            metrics: metrics_header(&names),
            curve: Vec::new(),
            wall_seconds: 0.0,
        }
    };

    // ---- Training ----
    let bar = ProgressBar::new(config.iterations as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} iterations, {elapsed} {msg}",
    )?);
    bar.set_position(trainer.iteration() as u64);
    let start = Instant::now();
    let first_iteration = trainer.iteration();
    while trainer.iteration() < config.iterations {
        let m = trainer.train_iteration().map_err(anyhow::Error::msg)?;
        curve.push((m.iteration, m.mean_reward));
        let wall = wall_before + start.elapsed().as_secs_f64();
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
        if m.iteration % args.checkpoint_every == 0 || m.iteration == config.iterations {
            write_file(&metrics_path, &metrics)?;
            checkpoint::save(
                &trainer,
                &checkpoints.join(checkpoint::folder_name(m.iteration)),
            )
            .map_err(anyhow::Error::msg)?;
        }
        bar.set_message(format!("reward {:.3}", m.mean_reward));
        bar.inc(1);
    }
    bar.finish();
    let train_seconds = start.elapsed().as_secs_f64();
    write_file(&metrics_path, &metrics)?;

    // ---- Evaluation: PPO and every baseline on the same episodes ----
    let eval_seed = config.seed.wrapping_add(1_000_003);
    let fresh_env = || {
        evaluation_env(built.config(), args.eval_episodes, eval_seed).map_err(anyhow::Error::msg)
    };
    let mut results: Vec<Evaluation> = Vec::new();
    results
        .push(evaluate(&mut trainer.controller(), &mut fresh_env()?).map_err(anyhow::Error::msg)?);
    let baselines: Vec<Box<dyn Controller>> = vec![
        Box::new(AllLocal),
        Box::new(Random::new(config.seed)),
        Box::new(Static6040),
        Box::new(Recalc::default()),
        Box::new(NodeMargin::default()),
    ];
    for mut c in baselines {
        results.push(evaluate(c.as_mut(), &mut fresh_env()?).map_err(anyhow::Error::msg)?);
    }
    results.push(baselines::upper_bound(&mut fresh_env()?).map_err(anyhow::Error::msg)?);

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
    let iterations = trainer.iteration() - first_iteration;
    let agent_steps = (iterations * config.rollout_steps * config.num_envs * names.len()) as f64;
    println!(
        "\ntrained {iterations} iterations in {train_seconds:.1} s ({:.0} agent-steps/s); wrote {}",
        agent_steps / train_seconds.max(1e-9),
        args.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    dfaas::exit_code(run(Args::parse()))
}

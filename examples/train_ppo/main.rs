//! Trains multi-agent PPO on a DFaaS scenario, evaluates it against every
//! baseline, and writes a run folder.
//!
//! ```text
//! cargo run --release --example train_ppo
//! cargo run --release --example train_ppo -- --preset reference --iterations 20 --out runs/reference
//! cargo run --release --example train_ppo -- --backend gpu --iterations 40 --out runs/gpu
//! ```
//!
//! `--backend auto` (the default) trains on a hardware GPU when there is
//! one, else on the CPU (never on a software adapter such as lavapipe;
//! `--backend gpu` takes any adapter). The GPU trains every layout with
//! the exact-integer reject rule (the reference's f64 rule is
//! CPU only: a configuration asking for it is switched, with a note).
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
use dfaas::core::{EnvConfig, EnvModel, RejectArithmetic};
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::baselines;
use dfaas::policies::checkpoint;
use dfaas::policies::controller::{
    Controller, evaluate, evaluate_with, evaluation_env, evaluation_seed, write_evaluation_csv,
};
use dfaas::policies::mlp::Activation;
use dfaas::policies::oracle::{Oracle, OracleSettings, SplitLog};
use dfaas::policies::ppo::{IterationMetrics, Layout, PpoConfig, Trainer};
#[cfg(feature = "gpu")]
use dfaas::{gpu::GpuContext, policies::gpu::GpuTrainer};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Hyperparameter presets.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// The project's defaults (chosen by measurement; see the README).
    Default,
    /// The reference's RLlib settings (2×256 tanh, 30 epochs, minibatch 144, …).
    Reference,
    /// The defaults at GPU scale (4096 envs, 32-step rollouts, 4 minibatches
    /// per epoch).
    Gpu,
}

/// Compute backends.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum BackendChoice {
    /// Plain Rust on the CPU.
    Cpu,
    /// The whole iteration as wgpu kernels, on any adapter.
    Gpu,
    /// A hardware GPU when one is available, else the CPU.
    Auto,
}

/// The training run on the backend chosen.
enum Run {
    Cpu(Box<Trainer<CpuBackend>>),
    #[cfg(feature = "gpu")]
    Gpu(Box<GpuTrainer>),
}

impl Run {
    fn iteration(&self) -> usize {
        match self {
            Self::Cpu(t) => t.iteration(),
            #[cfg(feature = "gpu")]
            Self::Gpu(t) => t.iteration(),
        }
    }

    fn train_iteration(&mut self) -> Result<IterationMetrics> {
        Ok(match self {
            Self::Cpu(t) => t.train_iteration()?,
            #[cfg(feature = "gpu")]
            Self::Gpu(t) => t.train_iteration()?,
        })
    }

    /// The run as a CPU trainer (the GPU's policies read back): what
    /// checkpoints store and evaluation runs.
    fn on_cpu(self) -> Result<Trainer<CpuBackend>> {
        Ok(match self {
            Self::Cpu(t) => *t,
            #[cfg(feature = "gpu")]
            Self::Gpu(t) => t.to_cpu()?,
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Self::Cpu(t) => checkpoint::save(t, dir)?,
            #[cfg(feature = "gpu")]
            Self::Gpu(t) => checkpoint::save(&t.to_cpu()?, dir)?,
        }
        Ok(())
    }
}

/// The device to train on: `None` for the CPU.
#[cfg(feature = "gpu")]
type Device = Option<GpuContext>;
#[cfg(not(feature = "gpu"))]
type Device = Option<std::convert::Infallible>;

/// Resolves `--backend`, printing what it picked.
fn device(choice: BackendChoice) -> Result<Device> {
    #[cfg(feature = "gpu")]
    {
        let found = match choice {
            BackendChoice::Cpu => None,
            BackendChoice::Gpu => Some(GpuContext::new().context("--backend gpu")?),
            BackendChoice::Auto => match GpuContext::new() {
                Ok(ctx) if !ctx.is_software() => Some(ctx),
                Ok(ctx) => {
                    println!(
                        "backend: cpu ({} is a software adapter; --backend gpu trains on it)",
                        ctx.describe()
                    );
                    return Ok(None);
                }
                Err(why) => {
                    println!("backend: cpu (no GPU adapter: {why})");
                    return Ok(None);
                }
            },
        };
        match &found {
            Some(ctx) => println!("backend: gpu on {}", ctx.describe()),
            None => println!("backend: cpu"),
        }
        Ok(found)
    }
    #[cfg(not(feature = "gpu"))]
    {
        if choice == BackendChoice::Gpu {
            bail!("--backend gpu: this build has no GPU support (feature `gpu`)");
        }
        println!("backend: cpu");
        Ok(None)
    }
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
    /// Policy layout: independent (one actor and critic per agent, the
    /// reference), shared (one policy with an agent-id input), mappo
    /// (centralised critics), agnostic (one policy for nodes of any degree
    /// in any federation: train it on a `union` of federations).
    #[arg(long, default_value = "independent")]
    layout: Layout,
    /// With `--layout agnostic`: the policy also reads each node's gossip
    /// (its capacity; its neighbours' previous input rates, capacities and
    /// degrees — what Recalc and Node-Margin read).
    #[arg(long)]
    gossip: bool,
    /// Fixed bias added to the actor's local output before softplus: a
    /// positive one starts every policy keeping most requests local (e.g.
    /// 3: a node of 3 neighbours starts at about 52 % local instead of
    /// 20 %). CPU only.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    local_bias: f32,
    /// CPU threads for the envs' steps and the policies' updates (default:
    /// every core; results do not depend on it).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    backend: BackendChoice,
    /// Evaluation episodes (the env's evaluation seeds).
    #[arg(long, default_value_t = 6)]
    eval_episodes: usize,
    /// Candidate splits the oracle scores per evaluation step at most.
    #[arg(long, default_value_t = OracleSettings::default().max_scores)]
    oracle_budget: usize,
    /// Override: learning rate.
    #[arg(long)]
    lr: Option<f32>,
    /// Override: hidden activation (tanh or relu).
    #[arg(long)]
    activation: Option<Activation>,
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
    /// Override: final entropy coefficient (reached after the decay).
    #[arg(long)]
    entropy_final: Option<f32>,
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

fn write_file(path: &Path, text: &str) -> Result<()> {
    dfaas::io::write_atomically(path, |w| w.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}

/// The preset with the command line's overrides.
fn hyperparameters(args: &Args) -> Result<PpoConfig> {
    let mut config = match args.preset {
        Preset::Default => PpoConfig::default(),
        Preset::Reference => PpoConfig::reference(),
        Preset::Gpu => PpoConfig::gpu(),
    };
    config.seed = args.seed;
    config.layout = args.layout;
    config.gossip = args.gossip;
    config.local_bias = args.local_bias;
    if let Some(v) = args.iterations {
        config.iterations = v;
    }
    if let Some(v) = args.lr {
        config.learning_rate = v;
    }
    if let Some(v) = args.activation {
        config.activation = v;
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
    if let Some(v) = args.entropy_final {
        config.entropy_coeff_final = v;
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
fn metrics_header(names: &[String]) -> Vec<String> {
    let mut header: Vec<String> = ["iteration", "env_steps", "agent_steps", "wall_seconds"]
        .map(String::from)
        .into();
    header.push("mean_reward".into());
    header.extend(names.iter().map(|name| format!("reward_{name}")));
    header.extend(
        [
            "reject_pct",
            "policy_loss",
            "value_loss",
            "entropy",
            "kl",
            "clip_fraction",
            "entropy_coeff",
        ]
        .map(String::from),
    );
    header
}

/// One row of `metrics.csv`.
fn metrics_row(m: &IterationMetrics, wall: f64) -> Vec<String> {
    let mut row = vec![
        m.iteration.to_string(),
        m.env_steps.to_string(),
        m.agent_steps.to_string(),
        format!("{wall:.3}"),
        format!("{:.6}", m.mean_reward),
    ];
    row.extend(m.agent_rewards.iter().map(|r| format!("{r:.6}")));
    row.extend([
        format!("{:.4}", m.reject_pct),
        format!("{:.6}", m.policy_loss),
        format!("{:.6}", m.value_loss),
        format!("{:.6}", m.entropy),
        format!("{:.6}", m.kl),
        format!("{:.4}", m.clip_fraction),
        format!("{:.6}", m.entropy_coeff),
    ]);
    row
}

/// `metrics.csv` as written so far: rows, the learning curve `(iteration,
/// mean reward)` and the wall time reached.
struct Logged {
    rows: Vec<Vec<String>>,
    curve: Vec<(usize, f64)>,
    wall_seconds: f64,
}

impl Logged {
    fn push(&mut self, m: &IterationMetrics, wall: f64) {
        self.curve.push((m.iteration, m.mean_reward));
        self.rows.push(metrics_row(m, wall));
        self.wall_seconds = wall;
    }

    /// Writes `metrics.csv` (header first) atomically.
    fn write(&self, path: &Path, names: &[String]) -> Result<()> {
        let mut csv = csv::Writer::from_writer(Vec::new());
        csv.write_record(metrics_header(names))?;
        for row in &self.rows {
            csv.write_record(row)?;
        }
        let bytes = csv.into_inner().map_err(|e| e.into_error())?;
        dfaas::io::write_atomically(path, |w| w.write_all(&bytes))
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// On resume: the rows of an earlier `metrics.csv` up to `iteration`.
fn earlier_metrics(path: &Path, iteration: usize) -> Result<Logged> {
    let mut logged = Logged {
        rows: Vec::new(),
        curve: Vec::new(),
        wall_seconds: 0.0,
    };
    if !path.is_file() {
        return Ok(logged);
    }
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("reading {}", path.display()))?;
        let cell = |i: usize| record.get(i).unwrap_or("");
        let (Ok(i), Ok(wall), Ok(reward)) = (
            cell(0).parse::<usize>(),
            cell(3).parse::<f64>(),
            cell(4).parse::<f64>(),
        ) else {
            bail!("{}: row {}: malformed", path.display(), line + 2);
        };
        if i <= iteration {
            logged.curve.push((i, reward));
            logged.rows.push(record.iter().map(String::from).collect());
            logged.wall_seconds = wall;
        }
    }
    Ok(logged)
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.eval_episodes == 0 || args.checkpoint_every == 0 {
        bail!("--eval-episodes and --checkpoint-every must be > 0");
    }
    if let Some(threads) = args.threads {
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("starting the thread pool")?;
    }
    let device = device(args.backend)?;
    let checkpoints = args.out.join("checkpoints");
    let (trainer, built) = if args.resume {
        if args.config.is_some() {
            bail!("--resume continues the run's own configuration; drop --config");
        }
        let checkpoint::Resumed {
            trainer,
            from,
            skipped,
        } = checkpoint::load_latest(&checkpoints, CpuBackend::new())
            .context("--resume: no complete checkpoint loads")?;
        for (path, why) in skipped {
            eprintln!(
                "warning: skipping checkpoint {} ({:#})",
                path.display(),
                anyhow::Error::new(why)
            );
        }
        println!(
            "resuming from {} (iteration {})",
            from.display(),
            trainer.iteration()
        );
        let built = trainer.model().built().clone();
        (trainer, built)
    } else {
        let mut env_config = match &args.config {
            Some(path) => EnvConfig::from_file(path)?,
            None => dfaas::default_config(),
        };
        if device.is_some() && env_config.reject_arithmetic == RejectArithmetic::Reference {
            println!(
                "note: the GPU env uses the exact-integer reject rule (reject_arithmetic: exact)"
            );
            env_config.reject_arithmetic = RejectArithmetic::Exact;
        }
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
        let trainer = Trainer::new(EnvModel::new(&built)?, config, CpuBackend::new())?;
        (trainer, built)
    };
    let mut config = trainer.config().clone();
    let mut run = match device {
        None => Run::Cpu(Box::new(trainer)),
        #[cfg(feature = "gpu")]
        Some(ctx) => Run::Gpu(Box::new(GpuTrainer::from_cpu(&trainer, ctx)?)),
    };
    if args.resume
        && let Some(v) = args.iterations
    {
        config.iterations = v;
    }
    let names = built.topology().names().to_vec();
    let metrics_path = args.out.join("metrics.csv");
    let mut logged = if args.resume {
        earlier_metrics(&metrics_path, run.iteration())?
    } else {
        Logged {
            rows: Vec::new(),
            curve: Vec::new(),
            wall_seconds: 0.0,
        }
    };

    // ---- Training ----
    let bar = ProgressBar::new(config.iterations as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} iterations, {elapsed} {msg}",
    )?);
    bar.set_position(run.iteration() as u64);
    let start = Instant::now();
    let (first_iteration, wall_before) = (run.iteration(), logged.wall_seconds);
    while run.iteration() < config.iterations {
        let m = run.train_iteration()?;
        logged.push(&m, wall_before + start.elapsed().as_secs_f64());
        if m.iteration % args.checkpoint_every == 0 || m.iteration == config.iterations {
            logged.write(&metrics_path, &names)?;
            run.save(&checkpoints.join(checkpoint::folder_name(m.iteration)))?;
        }
        bar.set_message(format!("reward {:.3}", m.mean_reward));
        bar.inc(1);
    }
    bar.finish();
    let train_seconds = start.elapsed().as_secs_f64();
    logged.write(&metrics_path, &names)?;
    let trainer = run.on_cpu()?;

    // ---- Evaluation: PPO and every baseline on the same episodes ----
    let eval_seed = evaluation_seed(config.seed);
    let fresh_env = || evaluation_env(built.config(), args.eval_episodes, eval_seed);
    // Every controller's splits seed the oracle's search.
    let mut log = SplitLog::new();
    let mut results = Vec::new();
    let mut controllers: Vec<Box<dyn Controller>> = vec![Box::new(trainer.controller()?)];
    controllers.extend(baselines::all(config.seed));
    for c in &mut controllers {
        results.push(evaluate_with(c.as_mut(), &mut fresh_env()?, |i, _, m| {
            log.record(i, m);
            Ok(())
        })?);
    }
    let oracle_settings = OracleSettings {
        max_scores: args.oracle_budget,
        ..OracleSettings::default()
    };
    let oracle_start = Instant::now();
    results.push(evaluate(
        &mut Oracle::new(oracle_settings, log),
        &mut fresh_env()?,
    )?);
    let oracle_seconds = oracle_start.elapsed().as_secs_f64();

    println!(
        "\n{:<14} {:>11} {:>9} {:>8} {:>10} {:>9} {:>10}",
        "policy", "mean_reward", "reject_%", "local_%", "forward_%", "served_%", "served_ms"
    );
    for r in &results {
        println!(
            "{:<14} {:>11.4} {:>9.2} {:>8.2} {:>10.2} {:>9.2} {:>10.1}",
            r.policy,
            r.mean_reward,
            r.reject_pct,
            r.local_pct,
            r.forward_pct,
            r.outcomes.served_pct(),
            r.outcomes.served_response_ms
        );
    }
    let oracle = results.last().map_or(0.0, |r| r.mean_reward);
    println!(
        "\nppo / oracle: {:.4} (the oracle: centralised local search per step, a lower bound on the optimum; {:.1} s)",
        results[0].mean_reward / oracle,
        oracle_seconds
    );
    let evaluation_csv = args.out.join("evaluation.csv");
    write_evaluation_csv(&evaluation_csv, &results)
        .with_context(|| format!("writing {}", evaluation_csv.display()))?;
    write_file(
        &args.out.join("learning_curve.svg"),
        &plots::learning_curve(&logged.curve, &results)?,
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

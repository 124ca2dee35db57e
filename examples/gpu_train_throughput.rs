//! Training throughput (sampling + learning, agent-steps per second) of the
//! GPU trainer against the CPU trainer in the same run, on the embedded
//! default scenario with the exact-integer reject rule, for a list of env
//! counts and both presets' learning settings (`default`: minibatches of
//! 1 152 samples, 288-step rollouts; `gpu`: 4 minibatches per epoch,
//! 32-step rollouts). Prints one table and the adapter's name; runs on any
//! Vulkan adapter, with a cap on the iterations per cell.
//!
//! With `--race N`, a second table: the CPU trainer trains `N` iterations
//! of the `--race-settings` at `--race-envs` envs, its policy is evaluated
//! (the evaluation episodes of `evaluate`), and the GPU trainer of the same
//! configuration trains until its evaluation (every `⌈N/10⌉` iterations)
//! reaches the CPU's, at most `4·N` iterations: the training seconds each
//! took (evaluations not counted).
//!
//! ```text
//! cargo run --release --example gpu_train_throughput
//! cargo run --release --example gpu_train_throughput -- --envs 4096,16384,65536,262144 --iterations 2
//! cargo run --release --example gpu_train_throughput -- --envs 16 --settings gpu --race 20 --race-envs 16 --race-settings gpu
//! ```

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use dfaas::core::{EnvModel, RejectArithmetic};
use dfaas::gpu::GpuContext;
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::controller::{evaluate, evaluation_env, evaluation_seed};
use dfaas::policies::gpu::GpuTrainer;
use dfaas::policies::ppo::{PpoConfig, Trainer};
use std::time::{Duration, Instant};

/// The learning settings measured.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Settings {
    /// `PpoConfig::default()` with `--envs` envs.
    Default,
    /// `PpoConfig::gpu()` with `--envs` envs (4 minibatches per epoch).
    Gpu,
}

/// Measure GPU and CPU training throughput (agent-steps per second).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Env counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 64, 256])]
    envs: Vec<usize>,
    /// Learning settings to measure.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [Settings::Default, Settings::Gpu])]
    settings: Vec<Settings>,
    /// Timed iterations per cell (after one untimed warm-up iteration).
    #[arg(long, default_value_t = 2)]
    iterations: usize,
    /// Largest env count also measured on the CPU.
    #[arg(long, default_value_t = 16384)]
    cpu_max_envs: usize,
    /// CPU iterations of the race to the CPU's final evaluation reward (0:
    /// no race).
    #[arg(long, default_value_t = 0)]
    race: usize,
    /// Envs of the race.
    #[arg(long, default_value_t = 4096)]
    race_envs: usize,
    /// Learning settings of the race.
    #[arg(long, value_enum, default_value_t = Settings::Gpu)]
    race_settings: Settings,
    /// Evaluation episodes of the race.
    #[arg(long, default_value_t = 4)]
    race_episodes: usize,
}

/// The settings for `envs` envs: the preset's, its minibatches scaled so
/// that an epoch keeps the preset's number of them.
fn config(settings: Settings, envs: usize) -> PpoConfig {
    let preset = match settings {
        Settings::Default => PpoConfig::default(),
        Settings::Gpu => PpoConfig::gpu(),
    };
    let minibatches = (preset.num_envs * preset.rollout_steps / preset.minibatch_size).max(1);
    PpoConfig {
        num_envs: envs,
        minibatch_size: (envs * preset.rollout_steps / minibatches).max(1),
        iterations: 1_000,
        ..preset
    }
}

/// Agent-steps per second over `iterations` iterations after one warm-up.
fn rate(
    mut iterate: impl FnMut() -> Result<()>,
    iterations: usize,
    agent_steps: usize,
) -> Result<f64> {
    iterate()?;
    let start = Instant::now();
    for _ in 0..iterations {
        iterate()?;
    }
    Ok((iterations * agent_steps) as f64 / start.elapsed().as_secs_f64())
}

/// The outcome of [`race`].
struct Race {
    /// The CPU trainer's training time for its iterations.
    cpu_time: Duration,
    /// Its final evaluation reward.
    target: f64,
    /// The GPU trainer's training time until its evaluation reached
    /// `target`, the iterations it took and the reward it reached (`None`:
    /// not within `4 × iterations`).
    gpu: Option<(Duration, usize, f64)>,
}

/// The CPU trainer's training time for `config.iterations` iterations and
/// its final evaluation reward, then the GPU trainer's until it reaches it.
fn race(
    model: &EnvModel,
    env_config: &dfaas::core::EnvConfig,
    config: &PpoConfig,
    episodes: usize,
) -> Result<Race> {
    let eval = || evaluation_env(env_config, episodes, evaluation_seed(config.seed));
    let iterations = config.iterations;
    let mut cpu = Trainer::new(model.clone(), config.clone(), CpuBackend::new())?;
    let start = Instant::now();
    for _ in 0..iterations {
        cpu.train_iteration()?;
    }
    let cpu_time = start.elapsed();
    let target = evaluate(&mut cpu.controller()?, &mut eval()?)?.mean_reward;
    let mut gpu = GpuTrainer::new(model.clone(), config.clone(), GpuContext::new()?)?;
    let every = iterations.div_ceil(10).max(1);
    let mut gpu_time = Duration::ZERO;
    for done in 1..=4 * iterations {
        let start = Instant::now();
        gpu.train_iteration()?;
        gpu_time += start.elapsed();
        if done % every == 0 || done == 4 * iterations {
            let reward = evaluate(&mut gpu.to_cpu()?.controller()?, &mut eval()?)?.mean_reward;
            if reward >= target {
                return Ok(Race {
                    cpu_time,
                    target,
                    gpu: Some((gpu_time, done, reward)),
                });
            }
        }
    }
    Ok(Race {
        cpu_time,
        target,
        gpu: None,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 || args.envs.contains(&0) {
        bail!("--iterations and every --envs value must be > 0");
    }
    if args.race > 0 && (args.race_envs == 0 || args.race_episodes == 0) {
        bail!("--race-envs and --race-episodes must be > 0");
    }
    let env_config = dfaas::core::EnvConfig {
        reject_arithmetic: RejectArithmetic::Exact,
        ..dfaas::default_config()
    };
    let model = EnvModel::new(&env_config.build()?)?;
    let adapter = GpuContext::new()?.describe();
    println!("adapter: {adapter}");
    println!(
        "{:>8} {:>9} {:>18} {:>18} {:>8}",
        "settings", "envs", "GPU agent-steps/s", "CPU agent-steps/s", "GPU/CPU"
    );
    let n = model.num_agents();
    for &settings in &args.settings {
        for &envs in &args.envs {
            let config = config(settings, envs);
            let agent_steps = envs * config.rollout_steps * n;
            let mut gpu = GpuTrainer::new(model.clone(), config.clone(), GpuContext::new()?)?;
            let gpu_rate = rate(
                || Ok(gpu.train_iteration().map(drop)?),
                args.iterations,
                agent_steps,
            )?;
            let cpu_rate = if envs <= args.cpu_max_envs {
                let mut cpu = Trainer::new(model.clone(), config, CpuBackend::new())?;
                Some(rate(
                    || Ok(cpu.train_iteration().map(drop)?),
                    args.iterations,
                    agent_steps,
                )?)
            } else {
                None
            };
            let (cpu_cell, ratio) = match cpu_rate {
                Some(c) => (format!("{c:.3e}"), format!("{:.2}", gpu_rate / c)),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:>8} {envs:>9} {gpu_rate:>18.3e} {cpu_cell:>18} {ratio:>8}",
                format!("{settings:?}").to_lowercase()
            );
        }
    }
    if args.race > 0 {
        let config = PpoConfig {
            iterations: args.race,
            ..config(args.race_settings, args.race_envs)
        };
        let Race {
            cpu_time,
            target,
            gpu,
        } = race(&model, &env_config, &config, args.race_episodes)?;
        println!();
        println!(
            "race to the CPU's evaluation reward ({} settings, {} envs, {} CPU iterations, {} episodes)",
            format!("{:?}", args.race_settings).to_lowercase(),
            args.race_envs,
            args.race,
            args.race_episodes
        );
        println!(
            "CPU: {target:.4} after {:.1} s of training",
            cpu_time.as_secs_f64()
        );
        match gpu {
            Some((time, iterations, reward)) => println!(
                "GPU: {reward:.4} after {:.1} s of training ({iterations} iterations); GPU/CPU time {:.2}",
                time.as_secs_f64(),
                time.as_secs_f64() / cpu_time.as_secs_f64()
            ),
            None => println!("GPU: not reached in {} iterations", 4 * args.race),
        }
    }
    Ok(())
}

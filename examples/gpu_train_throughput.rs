//! Training throughput (sampling + learning, agent-steps per second) of the
//! GPU trainer against the CPU trainer in the same run, on the embedded
//! default scenario with the exact-integer reject rule, for a list of env
//! counts and both presets' learning settings (`default`: minibatches of
//! 1 152 samples, 288-step rollouts; `gpu`: 4 minibatches per epoch,
//! 32-step rollouts). Prints one table and the adapter's name; runs on any
//! Vulkan adapter, with a cap on the iterations per cell.
//!
//! ```text
//! cargo run --release --example gpu_train_throughput
//! cargo run --release --example gpu_train_throughput -- --envs 4096,16384,65536,262144 --iterations 2
//! ```

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use dfaas::core::{EnvModel, RejectArithmetic};
use dfaas::gpu::GpuContext;
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::gpu::GpuTrainer;
use dfaas::policies::ppo::{PpoConfig, Trainer};
use std::time::Instant;

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

fn main() -> Result<()> {
    let args = Args::parse();
    if args.iterations == 0 || args.envs.contains(&0) {
        bail!("--iterations and every --envs value must be > 0");
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
    Ok(())
}

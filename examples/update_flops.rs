//! Achieved f32 FLOP/s of the CPU trainer's update (the learning phase of a
//! PPO iteration) against the cores' FMA peak.
//!
//! The default preset on the embedded 3-agent scenario: one policy per
//! agent (its observation in, 64×64 tanh, its Dirichlet's entries out, and
//! a critic of the same widths), each taking `epochs × minibatches` = 16
//! gradient steps on minibatches of 1 152 samples per iteration, the
//! policies in parallel on the pool as `train_ppo` runs them (each step's
//! actor and critic halves joined). The samples are the policies' own:
//! actions drawn from their initial concentrations.
//!
//! FLOPs counted are the matrix products' (2·m·k·n each): per sample and
//! layer `in → out`, 2·in·out forward, 2·in·out for ∂W and, above the
//! first layer, 2·in·out for ∂X; the element-wise work (tanh, softplus,
//! the Dirichlet's ψ, ψ′ and ln Γ, Adam) is not counted. Peak: `threads ×
//! --flops-per-cycle × --ghz` (32 f32 FLOPs per cycle: two 256-bit FMA
//! pipes, as on AMD Zen 2–4 and Intel since Haswell; the clock defaults to
//! /proc/cpuinfo's `cpu MHz`). Prints the median of `--rounds` timed
//! rounds.
//!
//! ```text
//! cargo run --release --example update_flops
//! cargo run --release --example update_flops -- --threads 1
//! ```

use anyhow::{Context, Result};
use clap::Parser;
use dfaas::core::EnvModel;
use dfaas::policies::backend::{
    Backend, CpuBackend, CpuPolicy, LossCoefficients, Minibatch, PolicySpec,
};
use dfaas::policies::dirichlet;
use dfaas::policies::ppo::PpoConfig;
use rayon::prelude::*;
use std::time::Instant;

/// Achieved f32 FLOP/s of the CPU trainer's update (default preset)
/// against the cores' FMA peak.
#[derive(Parser, Debug)]
struct Args {
    /// Threads of the pool (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed rounds (one iteration's update each).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// f32 FLOPs per cycle and core at peak (FMA pipes × lanes × 2).
    #[arg(long, default_value_t = 32.0)]
    flops_per_cycle: f64,
    /// Clock in GHz (default: /proc/cpuinfo's first `cpu MHz`).
    #[arg(long)]
    ghz: Option<f64>,
}

/// One policy with its minibatch's samples.
struct Learner {
    policy: CpuPolicy,
    obs: Vec<f32>,
    actions: Vec<f32>,
    alpha: Vec<f32>,
    log_prob: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
}

impl Learner {
    /// A freshly initialised policy for an agent of `degree` neighbours and
    /// `rows` samples drawn from it.
    fn new(config: &PpoConfig, degree: usize, rows: usize, seed: u64) -> Result<Self> {
        let (obs_dim, action_dim) = (2 + 2 * degree, 2 + degree);
        let spec = PolicySpec {
            obs_dim,
            critic_obs_dim: obs_dim,
            action_dim,
            per_entry: false,
            hidden: config.hidden.clone(),
            activation: config.activation,
            learning_rate: config.learning_rate,
            local_bias: config.local_bias,
        };
        let mut backend = CpuBackend::new();
        let policy = backend.init_policy(&spec, seed)?;
        let mut rng = dfaas::core::rng::seeded(seed + 1);
        let obs: Vec<f32> = (0..rows * obs_dim)
            .map(|_| dfaas::core::rng::standard_normal(&mut rng) as f32)
            .collect();
        let mut alpha = vec![0f32; rows * action_dim];
        backend.concentrations(&policy, &obs, rows, None, &mut alpha)?;
        let mut actions = vec![0f32; rows * action_dim];
        let mut grad = vec![0f32; action_dim];
        let mut log_prob = Vec::with_capacity(rows);
        for (a, x) in alpha
            .chunks_exact(action_dim)
            .zip(actions.chunks_exact_mut(action_dim))
        {
            dirichlet::sample(a, &mut rng, x)?;
            log_prob.push(dirichlet::log_prob(a, x, &mut grad));
        }
        let advantages = (0..rows)
            .map(|_| dfaas::core::rng::standard_normal(&mut rng) as f32)
            .collect();
        let returns = (0..rows)
            .map(|_| dfaas::core::rng::uniform(&mut rng, 0.0, 1.0) as f32)
            .collect();
        Ok(Self {
            policy,
            obs,
            actions,
            alpha,
            log_prob,
            advantages,
            returns,
        })
    }

    /// Matrix-product FLOPs of one gradient step on `rows` samples.
    fn flops(&self, config: &PpoConfig, rows: usize) -> f64 {
        let spec = &self.policy.spec;
        let network = |input: usize, output: usize| {
            let mut widths = vec![input];
            widths.extend(&config.hidden);
            widths.push(output);
            widths
                .windows(2)
                .enumerate()
                .map(|(l, w)| {
                    let products = if l == 0 { 2.0 } else { 3.0 };
                    products * 2.0 * (w[0] * w[1]) as f64
                })
                .sum::<f64>()
        };
        rows as f64 * (network(spec.obs_dim, spec.action_dim) + network(spec.critic_obs_dim, 1))
    }

    /// `steps` gradient steps on the minibatch.
    fn learn(&mut self, steps: usize, c: &LossCoefficients) -> Result<()> {
        let mut backend = CpuBackend::new();
        let mb = Minibatch {
            size: self.returns.len(),
            obs: &self.obs,
            critic_obs: &self.obs,
            actions: &self.actions,
            old_alpha: &self.alpha,
            old_log_prob: &self.log_prob,
            advantages: &self.advantages,
            returns: &self.returns,
            mask: None,
        };
        for _ in 0..steps {
            backend.update(&mut self.policy, &mb, c)?;
        }
        Ok(())
    }
}

/// The clock in GHz from /proc/cpuinfo, if it says.
fn cpuinfo_ghz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some(mhz / 1000.0)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(threads) = args.threads {
        pool = pool.num_threads(threads);
    }
    let pool = pool.build().context("building the thread pool")?;
    let config = PpoConfig::default();
    let model = EnvModel::new(&dfaas::default_config().build()?)?;
    let rows = config.minibatch_size;
    let samples = config.num_envs * config.rollout_steps;
    let steps = config.epochs * (samples / rows);
    let c = config.loss_coefficients(config.entropy_coeff, config.kl_coeff);
    let mut learners = (0..model.num_agents())
        .map(|a| Learner::new(&config, model.degree(a), rows, 7 + a as u64))
        .collect::<Result<Vec<_>>>()?;
    let flops: f64 = learners.iter().map(|l| l.flops(&config, rows)).sum::<f64>() * steps as f64;
    let round = |learners: &mut [Learner]| -> Result<f64> {
        let start = Instant::now();
        pool.install(|| {
            learners
                .par_iter_mut()
                .map(|l| l.learn(steps, &c))
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(start.elapsed().as_secs_f64())
    };
    round(&mut learners)?;
    let mut seconds = (0..args.rounds.max(1))
        .map(|_| round(&mut learners))
        .collect::<Result<Vec<f64>>>()?;
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let threads = pool.current_num_threads();
    let ghz = args
        .ghz
        .or_else(cpuinfo_ghz)
        .context("no clock: pass --ghz")?;
    let peak = threads as f64 * args.flops_per_cycle * ghz;
    let achieved = flops / median / 1e9;
    println!(
        "update of one iteration: {} policies × {steps} steps × {rows} samples, {:.3} GFLOP \
         (matrix products)",
        learners.len(),
        flops / 1e9
    );
    println!(
        "{threads} threads: median {:.1} ms of {} rounds, {achieved:.1} GFLOP/s = {:.1}% of \
         the FMA peak {peak:.1} GFLOP/s ({threads} × {} FLOP/cycle × {ghz:.3} GHz)",
        median * 1e3,
        seconds.len(),
        100.0 * achieved / peak,
        args.flops_per_cycle
    );
    Ok(())
}

//! The PPO iteration, written once for every backend.
//!
//! An [`Engine`] holds a run's environments, policies and rollout storage
//! and provides the operations an iteration is made of. [`iterate`] is
//! their order, the same on every backend, read top to bottom: `sample`
//! (act, step × `rollout_steps`) → `targets` (bootstrap, GAE, advantage
//! standardisation) → `update` (per epoch a shuffle, then its minibatches)
//! → the summary. `train_iteration` (crate-private) adds the schedule around it, also
//! shared: the counters, the entropy decay, the KL adaptation and the
//! iteration's metrics.
//!
//! The CPU engine ([`cpu::CpuEngine`]) computes each operation when it is
//! called, except the update's: those it queues per policy and runs at
//! `finish`, one thread per group of policies (policies update
//! independently, so this is the same computation as running them in
//! order). The GPU engine (`crate::gpu::GpuEngine`, feature `gpu`) records
//! each operation into one command buffer that `finish` submits, and reads
//! back one statistics buffer. Each numeric operation has its CPU twin:
//! the CPU engine's operation is the twin of the GPU kernel's, and the
//! kernel tests compare them.

pub mod cpu;

use crate::error::TrainError;
use crate::ppo::{IterationMetrics, PpoConfig};

/// The operations of one PPO iteration on one backend's storage, called in
/// [`iterate`]'s order.
pub trait Engine {
    /// Starts an iteration with entropy weight `entropy_coeff` and one KL
    /// weight per policy.
    ///
    /// # Errors
    /// [`TrainError`] of the backend.
    fn begin(&mut self, entropy_coeff: f32, kl_coeffs: &[f32]) -> Result<(), TrainError>;

    /// Acts on the envs' current observations: normalises them (updating
    /// the running statistics when configured), runs every actor, draws
    /// each agent's action from its Dirichlet into the envs' actions and
    /// stores the sample (inputs, action, concentrations, and its
    /// log-density and the critic's value, unless [`Engine::bootstrap`]
    /// computes them).
    ///
    /// # Errors
    /// [`TrainError`] of the backend.
    fn act(&mut self) -> Result<(), TrainError>;

    /// Steps every env with the actions drawn; stores each agent's reward
    /// (team mixed) and the dones, and tallies the step.
    ///
    /// # Errors
    /// [`TrainError`] of the envs or the backend.
    fn step(&mut self) -> Result<(), TrainError>;

    /// The critic's values of the observations after the rollout, which
    /// GAE bootstraps from, and the samples' values and log-densities
    /// where [`Engine::act`] left them.
    ///
    /// # Errors
    /// [`TrainError`] of the backend.
    fn bootstrap(&mut self) -> Result<(), TrainError>;

    /// GAE advantages and value targets of every policy; with
    /// `standardise`, each policy's advantages standardised.
    ///
    /// # Errors
    /// [`TrainError`] of the backend.
    fn advantages(&mut self, standardise: bool) -> Result<(), TrainError>;

    /// A fresh permutation of each policy's samples for epoch `epoch`.
    ///
    /// # Errors
    /// [`TrainError`] of the backend.
    fn shuffle(&mut self, epoch: usize) -> Result<(), TrainError>;

    /// One gradient step of every policy on minibatch `index` of the
    /// current permutation.
    ///
    /// # Errors
    /// [`TrainError`] of the backend.
    fn minibatch(&mut self, index: usize) -> Result<(), TrainError>;

    /// Ends the iteration: what it measured.
    ///
    /// # Errors
    /// [`TrainError`] of the backend (on the CPU, of the queued updates).
    fn finish(&mut self) -> Result<Summary, TrainError>;
}

/// The shape of an iteration: steps, epochs and minibatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Steps of every env (T).
    pub rollout_steps: usize,
    /// Passes over the rollout.
    pub epochs: usize,
    /// Samples per policy in a minibatch.
    pub minibatch_rows: usize,
    /// Minibatches per epoch.
    pub minibatches: usize,
    /// Whether each policy's advantages are standardised.
    pub standardise_advantages: bool,
}

impl Plan {
    /// `config`'s plan for policies of `samples` samples per iteration
    /// (`num_envs × rollout_steps × agents per policy`): minibatches of
    /// `min(minibatch_size, samples)` rows, as many whole ones per epoch as
    /// the rollout holds. The samples beyond them sit that epoch out (each
    /// epoch draws a fresh permutation, so they do not stay out).
    #[must_use]
    pub fn new(config: &PpoConfig, samples: usize) -> Self {
        let rows = config.minibatch_size.min(samples).max(1);
        Self {
            rollout_steps: config.rollout_steps,
            epochs: config.epochs,
            minibatch_rows: rows,
            minibatches: samples / rows,
            standardise_advantages: config.normalize_advantages,
        }
    }
}

/// What one iteration measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Env steps of the rollout (`rollout_steps × num_envs`).
    pub env_steps: u64,
    /// Each agent's env reward summed over them.
    pub reward_sums: Vec<f64>,
    /// Each agent's input requests over the rollout.
    pub input: Vec<u64>,
    /// Each agent's rejected requests (in its split, at its node, at its
    /// neighbours) over the rollout.
    pub rejected: Vec<u64>,
    /// Mean over the updates of every policy.
    pub policy_loss: f64,
    /// Mean over the updates of every policy (before its weight).
    pub value_loss: f64,
    /// Mean over the updates of every policy.
    pub entropy: f64,
    /// Mean over the updates of every policy: KL(old ‖ new).
    pub kl: f64,
    /// Mean over the updates of every policy.
    pub clip_fraction: f64,
    /// Each policy's mean KL over the last epoch's updates.
    pub last_epoch_kl: Vec<f64>,
    /// Whether a loss statistic or a gradient norm was NaN or infinite.
    pub non_finite: bool,
}

impl Summary {
    /// Each agent's mean reward per env step.
    #[must_use]
    pub fn agent_rewards(&self) -> Vec<f64> {
        let steps = self.env_steps.max(1) as f64;
        self.reward_sums.iter().map(|r| r / steps).collect()
    }

    /// The mean per-agent reward per env step.
    #[must_use]
    pub fn mean_reward(&self) -> f64 {
        self.reward_sums.iter().sum::<f64>()
            / (self.env_steps.max(1) as f64 * self.reward_sums.len().max(1) as f64)
    }

    /// Rejected % of all input.
    #[must_use]
    pub fn reject_pct(&self) -> f64 {
        crate::controller::pct(self.rejected.iter().sum(), self.input.iter().sum())
    }
}

/// One iteration on `engine`: sample → targets → update → summary.
///
/// # Errors
/// The first [`TrainError`] of an operation.
pub fn iterate<E: Engine + ?Sized>(
    engine: &mut E,
    plan: &Plan,
    entropy_coeff: f32,
    kl_coeffs: &[f32],
) -> Result<Summary, TrainError> {
    engine.begin(entropy_coeff, kl_coeffs)?;
    sample(engine, plan)?;
    targets(engine, plan)?;
    update(engine, plan)?;
    engine.finish()
}

/// `rollout_steps` steps of every env with actions from the policies.
fn sample<E: Engine + ?Sized>(engine: &mut E, plan: &Plan) -> Result<(), TrainError> {
    for _ in 0..plan.rollout_steps {
        engine.act()?;
        engine.step()?;
    }
    Ok(())
}

/// Advantages and value targets, bootstrapped at the rollout's end.
fn targets<E: Engine + ?Sized>(engine: &mut E, plan: &Plan) -> Result<(), TrainError> {
    engine.bootstrap()?;
    engine.advantages(plan.standardise_advantages)
}

/// `epochs` passes of shuffled minibatches.
fn update<E: Engine + ?Sized>(engine: &mut E, plan: &Plan) -> Result<(), TrainError> {
    for epoch in 0..plan.epochs {
        engine.shuffle(epoch)?;
        for index in 0..plan.minibatches {
            engine.minibatch(index)?;
        }
    }
    Ok(())
}

/// What a trainer carries from one iteration to the next besides its
/// engine: the counters and each policy's KL coefficient.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Schedule {
    /// Iterations done.
    pub iteration: usize,
    /// Env steps done.
    pub env_steps: u64,
    /// Current KL coefficient per policy.
    pub kl_coeffs: Vec<f32>,
}

/// One training iteration of `engine` under `config`'s schedule: the
/// entropy weight of this iteration, [`iterate`], then the counters and
/// the KL adaptation; the metrics of `agents` agents.
///
/// # Errors
/// [`TrainError::CounterOverflow`] before anything runs; the first error
/// of an operation; [`TrainError::NonFinite`] when the update diverged
/// (the counters have then moved on, as the engine has).
pub(crate) fn train_iteration<E: Engine + ?Sized>(
    engine: &mut E,
    config: &PpoConfig,
    plan: &Plan,
    schedule: &mut Schedule,
    agents: usize,
) -> Result<IterationMetrics, TrainError> {
    let (env_steps, iteration) = next_counters(config, schedule.env_steps, schedule.iteration)?;
    let entropy_coeff = entropy_coeff_at(config, schedule.iteration);
    let summary = iterate(engine, plan, entropy_coeff, &schedule.kl_coeffs)?;
    schedule.env_steps = env_steps;
    schedule.iteration = iteration;
    if summary.non_finite {
        return Err(TrainError::NonFinite { iteration });
    }
    for (k, &kl) in schedule.kl_coeffs.iter_mut().zip(&summary.last_epoch_kl) {
        *k = adapt_kl_coeff(*k, kl, config.kl_target);
    }
    Ok(IterationMetrics {
        iteration,
        env_steps,
        agent_steps: env_steps.saturating_mul(agents as u64),
        agent_rewards: summary.agent_rewards(),
        mean_reward: summary.mean_reward(),
        reject_pct: summary.reject_pct(),
        policy_loss: summary.policy_loss,
        value_loss: summary.value_loss,
        entropy: summary.entropy,
        kl: summary.kl,
        clip_fraction: summary.clip_fraction,
        entropy_coeff: f64::from(entropy_coeff),
    })
}

/// The entropy coefficient after `iteration` iterations: linear from
/// `entropy_coeff` to `entropy_coeff_final` over the decay fraction of the
/// run, then constant.
pub(crate) fn entropy_coeff_at(c: &PpoConfig, iteration: usize) -> f32 {
    if c.entropy_decay_fraction <= 0.0 {
        return c.entropy_coeff;
    }
    let progress = iteration as f32 / (c.entropy_decay_fraction * c.iterations.max(1) as f32);
    let t = progress.min(1.0);
    c.entropy_coeff + (c.entropy_coeff_final - c.entropy_coeff) * t
}

/// The step and iteration counters after one more iteration from
/// `env_steps` and `iteration`. Counters restored from a state may be near
/// their limits: checked before anything changes.
pub(crate) fn next_counters(
    c: &PpoConfig,
    env_steps: u64,
    iteration: usize,
) -> Result<(u64, usize), TrainError> {
    let added = (c.rollout_steps * c.num_envs) as u64;
    let next_steps = env_steps
        .checked_add(added)
        .ok_or(TrainError::CounterOverflow {
            counter: "env_steps",
            value: env_steps,
            added,
        })?;
    let next_iteration = iteration
        .checked_add(1)
        .ok_or(TrainError::CounterOverflow {
            counter: "iteration",
            value: iteration as u64,
            added: 1,
        })?;
    Ok((next_steps, next_iteration))
}

/// RLlib's KL-coefficient rule, after an iteration whose last epoch had
/// mean KL `kl`: ×1.5 when `kl > 2·target`, ×0.5 when `kl < target/2`,
/// unchanged otherwise (and a coefficient of 0 — the penalty off — stays 0).
pub(crate) fn adapt_kl_coeff(coeff: f32, kl: f64, target: f32) -> f32 {
    let target = f64::from(target);
    if coeff <= 0.0 {
        coeff
    } else if kl > 2.0 * target {
        coeff * 1.5
    } else if kl < 0.5 * target {
        coeff * 0.5
    } else {
        coeff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_coefficient_follows_rllibs_rule() {
        // Target 0.25 (exact in binary): ×1.5 above 0.5, ×0.5 below 0.125,
        // unchanged at the bounds and between them.
        let steps = [
            (1.0, 0.3),
            (0.5, 0.3),
            (0.3, 0.3),
            (0.125, 0.3),
            (0.1, 0.15),
            (0.6, 0.225),
        ];
        let mut coeff = 0.2f32;
        for (kl, want) in steps {
            coeff = adapt_kl_coeff(coeff, kl, 0.25);
            assert!(
                (coeff - want).abs() < 1e-7,
                "after KL {kl}: {coeff}, want {want}"
            );
        }
        assert_eq!(
            adapt_kl_coeff(0.0, 10.0, 0.25),
            0.0,
            "the penalty stays off"
        );
    }

    #[test]
    fn a_plan_takes_whole_minibatches_and_never_more_rows_than_the_rollout() {
        let config = PpoConfig {
            minibatch_size: 1000,
            ..PpoConfig::default()
        };
        let plan = Plan::new(&config, 4608);
        assert_eq!((plan.minibatch_rows, plan.minibatches), (1000, 4));
        let small = Plan::new(&config, 600);
        assert_eq!((small.minibatch_rows, small.minibatches), (600, 1));
    }

    /// An engine that writes down the operations it is given.
    #[derive(Default)]
    struct Recorder(Vec<String>);

    impl Engine for Recorder {
        fn begin(&mut self, entropy: f32, kl: &[f32]) -> Result<(), TrainError> {
            self.0.push(format!("begin {entropy} {kl:?}"));
            Ok(())
        }
        fn act(&mut self) -> Result<(), TrainError> {
            self.0.push("act".into());
            Ok(())
        }
        fn step(&mut self) -> Result<(), TrainError> {
            self.0.push("step".into());
            Ok(())
        }
        fn bootstrap(&mut self) -> Result<(), TrainError> {
            self.0.push("bootstrap".into());
            Ok(())
        }
        fn advantages(&mut self, standardise: bool) -> Result<(), TrainError> {
            self.0.push(format!("advantages {standardise}"));
            Ok(())
        }
        fn shuffle(&mut self, epoch: usize) -> Result<(), TrainError> {
            self.0.push(format!("shuffle {epoch}"));
            Ok(())
        }
        fn minibatch(&mut self, index: usize) -> Result<(), TrainError> {
            self.0.push(format!("minibatch {index}"));
            Ok(())
        }
        fn finish(&mut self) -> Result<Summary, TrainError> {
            self.0.push("finish".into());
            Ok(Summary {
                last_epoch_kl: vec![1.0, 1e-9],
                ..Summary::default()
            })
        }
    }

    #[test]
    fn an_iteration_is_sample_targets_update_in_this_order() {
        let plan = Plan {
            rollout_steps: 2,
            epochs: 2,
            minibatch_rows: 4,
            minibatches: 2,
            standardise_advantages: false,
        };
        let mut engine = Recorder::default();
        iterate(&mut engine, &plan, 0.5, &[0.25]).unwrap();
        let want = [
            "begin 0.5 [0.25]",
            "act",
            "step",
            "act",
            "step",
            "bootstrap",
            "advantages false",
            "shuffle 0",
            "minibatch 0",
            "minibatch 1",
            "shuffle 1",
            "minibatch 0",
            "minibatch 1",
            "finish",
        ];
        assert_eq!(engine.0, want);
    }

    #[test]
    fn the_schedule_advances_the_counters_and_adapts_each_policys_kl() {
        let config = PpoConfig {
            num_envs: 3,
            rollout_steps: 5,
            kl_target: 0.01,
            ..PpoConfig::default()
        };
        let plan = Plan::new(&config, 15);
        let mut schedule = Schedule {
            iteration: 4,
            env_steps: 60,
            kl_coeffs: vec![0.2, 0.2],
        };
        let metrics =
            train_iteration(&mut Recorder::default(), &config, &plan, &mut schedule, 2).unwrap();
        assert_eq!((metrics.iteration, metrics.env_steps), (5, 75));
        assert_eq!(metrics.agent_steps, 150);
        // KL 1.0 > 2·target: ×1.5; KL 1e-9 < target/2: ×0.5.
        assert_eq!(schedule.kl_coeffs, vec![0.2 * 1.5, 0.2 * 0.5]);
        assert_eq!((schedule.iteration, schedule.env_steps), (5, 75));
    }
}

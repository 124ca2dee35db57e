//! Multi-agent PPO, written once over a [`Backend`], read top to bottom:
//! configuration, rollout, GAE, the update, evaluation.
//!
//! Layout: one independent policy (actor + critic) per agent, as the
//! reference trains them. Each agent's actor sees its own observation
//! `[input_rate, prev_input_rate, prev_forward_to.., prev_forward_rejects_to..]`
//! and outputs the concentrations of a Dirichlet over `[local, forward..,
//! reject]`.
//!
//! Random streams (all seeded from [`PpoConfig::seed`]): the env batch is
//! reset with `seed`; policy `a` is initialised from `seed + 1 + a`
//! (wrapping: every `u64` is a valid seed); action
//! sampling uses a stream seeded `seed ^ 0x5EED`, and agent `a`'s minibatch
//! shuffles one seeded `seed ^ 0x5EED ^ ((a + 1) << 32)`. The agents'
//! updates run in parallel (one thread per core), each on its own policy and
//! stream, and their statistics are summed in agent order: a seed gives the
//! same metrics bit for bit, whatever the number of cores.

use crate::backend::{Backend, LossCoefficients, Minibatch, PolicySpec, UpdateStats};
use crate::controller::{Controller, Tally, check_batch};
use crate::dirichlet;
use crate::error::{BackendError, ControlError, PpoConfigError, TrainError, UnknownName};
use crate::gae;
use crate::mlp::Activation;
use dfaas_core::reward::{team_mean, team_mixed};
use dfaas_core::rng::{Xoshiro128PlusPlus, below, seeded};
use dfaas_core::{BatchEnv, EnvModel, StepMetrics};

/// Largest `num_envs × rollout_steps` (samples of one agent per iteration).
const MAX_SAMPLES: usize = 1 << 31;

/// Which agents share which networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One actor and one critic per agent, each seeing its own observation
    /// (the reference).
    #[default]
    Independent,
    /// One actor and one critic for all agents: the observation padded to
    /// the widest agent plus a one-hot agent id; each agent's Dirichlet uses
    /// the outputs `[local, forward_1..k, reject]` of its own neighbours.
    Shared,
    /// Independent actors; each agent's critic sees every agent's
    /// observation (centralised critic, MAPPO).
    Mappo,
}

impl std::str::FromStr for Layout {
    type Err = UnknownName;

    /// `independent`, `shared` or `mappo`.
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        match name {
            "independent" => Ok(Self::Independent),
            "shared" => Ok(Self::Shared),
            "mappo" => Ok(Self::Mappo),
            _ => Err(UnknownName {
                setting: "layout",
                got: name.into(),
                choices: "independent, shared, mappo",
            }),
        }
    }
}

/// PPO hyperparameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PpoConfig {
    /// Policy layout.
    #[serde(default)]
    pub layout: Layout,
    /// Hidden layer widths of actor and critic.
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Discount γ.
    pub gamma: f32,
    /// GAE λ.
    pub lambda: f32,
    /// PPO ratio clip ε.
    pub clip: f32,
    /// Value-loss weight.
    pub value_coeff: f32,
    /// Cap of the squared value error (RLlib's `vf_clip_param`).
    pub value_clip: Option<f32>,
    /// Entropy coefficient at the start.
    pub entropy_coeff: f32,
    /// Entropy coefficient at the end of the decay.
    pub entropy_coeff_final: f32,
    /// Share of all training agent-steps over which the entropy coefficient
    /// decays linearly (0: constant).
    pub entropy_decay_fraction: f32,
    /// Initial KL penalty coefficient (0 disables the penalty), adapted
    /// after each iteration as RLlib does: ×1.5 when KL > 2·target, ×0.5
    /// when KL < target/2.
    pub kl_coeff: f32,
    /// KL target of the adaptation.
    pub kl_target: f32,
    /// SGD epochs per iteration.
    pub epochs: usize,
    /// Minibatch size (samples of one agent's policy).
    pub minibatch_size: usize,
    /// Environments stepped together.
    pub num_envs: usize,
    /// Steps per env per iteration.
    pub rollout_steps: usize,
    /// Global gradient-norm cap.
    pub max_grad_norm: Option<f32>,
    /// Standardise advantages over each policy's batch (RLlib does).
    pub normalize_advantages: bool,
    /// Normalise observations with running mean/variance (the reference
    /// feeds raw counts).
    pub normalize_observations: bool,
    /// Weight β of the team reward: each agent learns from
    /// `(1 − β)·own reward + β·mean reward of all agents`. 0 is the
    /// reference (selfish agents); 1 aligns every agent with the mean
    /// per-agent reward the evaluation reports.
    pub team_reward: f32,
    /// Training iterations.
    pub iterations: usize,
    /// Seed of every random stream.
    pub seed: u64,
}

impl PpoConfig {
    /// The reference's settings: RLlib's fully connected net (2 × 256,
    /// tanh), learning rate 5e-5, γ 0.7, λ 0.3, clip 0.3, value weight 1
    /// with squared error capped at 10, entropy 0.02 decaying to 1e-6 over
    /// 70 % of training, adaptive KL from 0.2 (target 0.01), 30 epochs of
    /// minibatches of 144 over one 288-step episode per iteration, no
    /// gradient clipping, raw observations, standardised advantages.
    #[must_use]
    pub fn reference() -> Self {
        Self {
            layout: Layout::Independent,
            hidden: vec![256, 256],
            activation: Activation::Tanh,
            learning_rate: 5e-5,
            gamma: 0.7,
            lambda: 0.3,
            clip: 0.3,
            value_coeff: 1.0,
            value_clip: Some(10.0),
            entropy_coeff: 0.02,
            entropy_coeff_final: 1e-6,
            entropy_decay_fraction: 0.7,
            kl_coeff: 0.2,
            kl_target: 0.01,
            epochs: 30,
            minibatch_size: 144,
            num_envs: 1,
            rollout_steps: 288,
            max_grad_norm: None,
            normalize_advantages: true,
            normalize_observations: false,
            team_reward: 0.0,
            iterations: 100,
            seed: 42,
        }
    }
}

impl PpoConfig {
    /// The project's defaults at GPU scale: 4096 envs, rollouts of 32 steps
    /// (not tied to the episode length: the critic bootstraps their end),
    /// 4 minibatches of 32 768 samples per policy per epoch, 4 epochs, γ =
    /// λ = 0 as the defaults (so the short rollouts lose nothing), 2 × 64
    /// networks and 100 iterations (13 million env steps).
    #[must_use]
    pub fn gpu() -> Self {
        Self {
            num_envs: 4096,
            rollout_steps: 32,
            minibatch_size: 32_768,
            iterations: 100,
            ..Self::default()
        }
    }

    /// Checks every setting; the error names the field and the value.
    ///
    /// # Errors
    /// [`PpoConfigError`] naming the first setting out of its range.
    pub fn validate(&self) -> Result<(), PpoConfigError> {
        let check = |ok: bool, field: &'static str, value: String, rule: &'static str| {
            if ok {
                Ok(())
            } else {
                Err(PpoConfigError::Invalid { field, value, rule })
            }
        };
        check(
            self.num_envs > 0,
            "num_envs",
            self.num_envs.to_string(),
            "must be > 0",
        )?;
        check(
            self.rollout_steps > 0,
            "rollout_steps",
            self.rollout_steps.to_string(),
            "must be > 0",
        )?;
        check(
            self.num_envs
                .checked_mul(self.rollout_steps)
                .is_some_and(|samples| samples <= MAX_SAMPLES),
            "num_envs",
            format!("{} (× rollout_steps {})", self.num_envs, self.rollout_steps),
            "num_envs × rollout_steps must be <= 2^31 samples per iteration",
        )?;
        check(
            self.minibatch_size > 0,
            "minibatch_size",
            self.minibatch_size.to_string(),
            "must be > 0",
        )?;
        check(
            self.epochs > 0,
            "epochs",
            self.epochs.to_string(),
            "must be > 0",
        )?;
        check(
            self.hidden.iter().all(|&w| w > 0),
            "hidden",
            format!("{:?}", self.hidden),
            "widths must be > 0",
        )?;
        let unit = |v: f32| (0.0..=1.0).contains(&v);
        check(
            unit(self.gamma),
            "gamma",
            self.gamma.to_string(),
            "must be in [0, 1]",
        )?;
        check(
            unit(self.lambda),
            "lambda",
            self.lambda.to_string(),
            "must be in [0, 1]",
        )?;
        check(
            unit(self.team_reward),
            "team_reward",
            self.team_reward.to_string(),
            "must be in [0, 1]",
        )?;
        check(
            unit(self.entropy_decay_fraction),
            "entropy_decay_fraction",
            self.entropy_decay_fraction.to_string(),
            "must be in [0, 1]",
        )?;
        check(
            self.learning_rate.is_finite() && self.learning_rate > 0.0,
            "learning_rate",
            self.learning_rate.to_string(),
            "must be finite and > 0",
        )?;
        check(
            self.clip > 0.0 && self.clip < 1.0,
            "clip",
            self.clip.to_string(),
            "must be in (0, 1)",
        )?;
        for (field, v) in [
            ("value_coeff", self.value_coeff),
            ("entropy_coeff", self.entropy_coeff),
            ("entropy_coeff_final", self.entropy_coeff_final),
            ("kl_coeff", self.kl_coeff),
            ("kl_target", self.kl_target),
        ] {
            check(
                v.is_finite() && v >= 0.0,
                field,
                v.to_string(),
                "must be finite and >= 0",
            )?;
        }
        for (field, v) in [
            ("value_clip", self.value_clip),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if let Some(v) = v {
                check(
                    v.is_finite() && v > 0.0,
                    field,
                    v.to_string(),
                    "must be finite and > 0 when set",
                )?;
            }
        }
        Ok(())
    }
}

impl Default for PpoConfig {
    /// The project's defaults (see the README for how they were chosen).
    fn default() -> Self {
        Self {
            layout: Layout::Independent,
            hidden: vec![64, 64],
            activation: Activation::Tanh,
            learning_rate: 1e-3,
            gamma: 0.0,
            lambda: 0.0,
            clip: 0.2,
            value_coeff: 0.5,
            value_clip: None,
            entropy_coeff: 0.003,
            entropy_coeff_final: 1e-6,
            entropy_decay_fraction: 0.7,
            kl_coeff: 0.0,
            kl_target: 0.01,
            epochs: 4,
            minibatch_size: 1152,
            num_envs: 16,
            rollout_steps: 288,
            max_grad_norm: Some(0.5),
            normalize_advantages: true,
            normalize_observations: true,
            team_reward: 1.0,
            iterations: 300,
            seed: 42,
        }
    }
}

/// Running mean and variance of observations (Welford, per feature).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunningNorm {
    count: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl RunningNorm {
    /// Statistics of `count` rows with per-feature `mean` and sums of
    /// squared deviations `m2`.
    #[cfg(feature = "gpu")]
    pub(crate) fn from_parts(count: f64, mean: Vec<f64>, m2: Vec<f64>) -> Self {
        Self { count, mean, m2 }
    }

    /// Rows seen, per-feature means and sums of squared deviations.
    #[cfg(feature = "gpu")]
    pub(crate) fn parts(&self) -> (f64, &[f64], &[f64]) {
        (self.count, &self.mean, &self.m2)
    }

    /// No rows seen yet, `dim` features.
    #[must_use]
    pub fn new(dim: usize) -> Self {
        Self {
            count: 0.0,
            mean: vec![0.0; dim],
            m2: vec![0.0; dim],
        }
    }

    /// Adds `rows` (`[row][dim]`) to the statistics, one row at a time
    /// (Welford, f64).
    pub fn update(&mut self, rows: &[f32]) {
        let dim = self.mean.len();
        for row in rows.chunks_exact(dim) {
            self.count += 1.0;
            for ((m, s), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(row) {
                let delta = f64::from(x) - *m;
                *m += delta / self.count;
                *s += delta * (f64::from(x) - *m);
            }
        }
    }

    /// Normalises `rows` in place: `(x − mean) / max(std, 1e-4)` clamped to
    /// [−10, 10] (std 1 before two rows were seen).
    pub fn apply(&self, rows: &mut [f32]) {
        let dim = self.mean.len();
        for row in rows.chunks_exact_mut(dim) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.m2) {
                let std = if self.count > 1.0 {
                    (s / self.count).sqrt()
                } else {
                    1.0
                };
                *x = ((f64::from(*x) - m) / std.max(1e-4)).clamp(-10.0, 10.0) as f32;
            }
        }
    }
}

/// Everything a [`Trainer`] carries between iterations besides its
/// policies (which checkpoints store as tensors).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Iterations done.
    pub iteration: usize,
    /// Env steps done.
    pub env_steps: u64,
    /// Current KL coefficient per agent.
    pub kl_coeffs: Vec<f32>,
    /// Observation statistics per agent.
    pub norms: Vec<RunningNorm>,
    /// The action-sampling stream.
    pub rng: Xoshiro128PlusPlus,
    /// Each agent's minibatch-shuffling stream.
    pub shuffle_rngs: Vec<Xoshiro128PlusPlus>,
    /// The environments.
    pub env: dfaas_core::BatchEnvState,
    /// A GPU run's device state (its envs, streams and counters), so that
    /// it resumes exactly on the GPU; absent for a CPU run, and dropped
    /// once a CPU trainer trains on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRunState>,
}

/// The device state of a GPU run (`dfaas_policies::gpu`, feature `gpu`)
/// beyond its policies: `GpuBatchEnv`'s state (f32 values as their bits,
/// so that a checkpoint keeps them exactly), the action streams, the device
/// clock and the trace-pool position.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuRunState {
    /// Environments of the run.
    pub num_envs: usize,
    /// Step of each env within its episode.
    pub steps: Vec<u32>,
    /// Episodes each env finished since the run's envs were reset.
    pub episodes: Vec<u64>,
    /// Whether each env's last step ended an episode.
    pub dones: Vec<bool>,
    /// Observations `[env][agent][obs_width]`, as `f32::to_bits`.
    pub observation_bits: Vec<u32>,
    /// Rewards of the last step `[env][agent]`, as `f32::to_bits`.
    pub reward_bits: Vec<u32>,
    /// Splits of the last step `[env][agent][action_width]`.
    pub splits: Vec<u32>,
    /// Rejects of the last step `[env][agent][action_width]`.
    pub rejects: Vec<u32>,
    /// Each action row's Xoshiro128++ state `[agent·env][4]`.
    pub streams: Vec<u32>,
    /// The device clock `[step, minibatch, epoch, iteration]`.
    pub clock: Vec<u32>,
    /// Steps each env took since the run's envs were reset.
    pub steps_done: u64,
    /// The latest episode whose trace-pool half holds its own episodes.
    pub pool_ready: u64,
}

/// One iteration's numbers (a row of `metrics.csv`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IterationMetrics {
    /// 1-based iteration.
    pub iteration: usize,
    /// Env steps so far.
    pub env_steps: u64,
    /// Agent steps so far.
    pub agent_steps: u64,
    /// Mean per-step reward of each agent in this iteration's rollout.
    pub agent_rewards: Vec<f64>,
    /// Mean per-agent per-step reward.
    pub mean_reward: f64,
    /// Rejected % of the rollout's requests.
    pub reject_pct: f64,
    /// Mean over agents and updates.
    pub policy_loss: f64,
    /// Mean over agents and updates.
    pub value_loss: f64,
    /// Mean over agents and updates.
    pub entropy: f64,
    /// Mean over agents and updates.
    pub kl: f64,
    /// Mean over agents and updates.
    pub clip_fraction: f64,
    /// Entropy coefficient used.
    pub entropy_coeff: f64,
}

/// One policy's advantages and value targets, `[step][env][member]`.
type Targets = (Vec<f32>, Vec<f32>);

/// Per-policy rollout storage, `[step][env][member][..]`.
#[derive(Debug, Clone, Default)]
struct Rollout {
    obs: Vec<f32>,
    critic_obs: Vec<f32>,
    /// `[..][action_dim]`, 1 where the sample's Dirichlet uses the output
    /// (shared layout only).
    mask: Vec<u8>,
    actions: Vec<f32>,
    alpha: Vec<f32>,
    log_prob: Vec<f32>,
    values: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<f32>,
}

/// The trainer: environments, one policy per agent, and their state.
pub struct Trainer<B: Backend> {
    config: PpoConfig,
    env: BatchEnv,
    backend: B,
    policies: Vec<B::Policy>,
    specs: Vec<PolicySpec>,
    /// Agents of each policy.
    members: Vec<Vec<usize>>,
    /// For each agent, its policy's outputs forming its Dirichlet, in the
    /// order `[local, forward_1..k, reject]`.
    entries: Vec<Vec<usize>>,
    norms: Vec<RunningNorm>,
    kl_coeffs: Vec<f32>,
    rng: Xoshiro128PlusPlus,
    shuffle_rngs: Vec<Xoshiro128PlusPlus>,
    iteration: usize,
    env_steps: u64,
    metrics: Vec<StepMetrics>,
    /// The device state of the GPU run this trainer holds, if any.
    gpu: Option<GpuRunState>,
}

impl<B: Backend + Clone + Send> Trainer<B>
where
    B::Policy: Send,
{
    /// A trainer of `model` with `config` on `backend`.
    ///
    /// # Errors
    /// [`TrainError`]: an invalid configuration, a policy the backend
    /// cannot build, a failed first reset.
    pub fn new(model: EnvModel, config: PpoConfig, backend: B) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Config)?;
        let n = model.num_agents();
        let (ow, width) = (model.obs_width(), model.action_width());
        let spec = |obs_dim: usize, critic_obs_dim: usize, action_dim: usize| PolicySpec {
            obs_dim,
            critic_obs_dim,
            action_dim,
            hidden: config.hidden.clone(),
            activation: config.activation,
            learning_rate: config.learning_rate,
        };
        let own = |a: usize| 2 + 2 * model.degree(a);
        let all_own: usize = (0..n).map(own).sum();
        let (specs, members, entries): (Vec<PolicySpec>, Vec<Vec<usize>>, Vec<Vec<usize>>) =
            match config.layout {
                Layout::Independent | Layout::Mappo => (
                    (0..n)
                        .map(|a| {
                            let critic = if config.layout == Layout::Mappo {
                                all_own
                            } else {
                                own(a)
                            };
                            spec(own(a), critic, 2 + model.degree(a))
                        })
                        .collect(),
                    (0..n).map(|a| vec![a]).collect(),
                    (0..n).map(|a| (0..2 + model.degree(a)).collect()).collect(),
                ),
                Layout::Shared => (
                    vec![spec(ow + n, ow + n, width)],
                    vec![(0..n).collect()],
                    (0..n)
                        .map(|a| (0..=model.degree(a)).chain([width - 1]).collect())
                        .collect(),
                ),
            };
        let count = specs.len();
        let policies = specs
            .iter()
            .enumerate()
            .map(|(p, s)| {
                let seed = config.seed.wrapping_add(1).wrapping_add(p as u64);
                backend
                    .init_policy(s, seed)
                    .map_err(|source| TrainError::Backend { policy: p, source })
            })
            .collect::<Result<_, _>>()?;
        let mut env = BatchEnv::new(model.clone(), config.num_envs).map_err(TrainError::Env)?;
        env.reset(config.seed).map_err(TrainError::Reset)?;
        Ok(Self {
            norms: specs.iter().map(|s| RunningNorm::new(s.obs_dim)).collect(),
            kl_coeffs: vec![config.kl_coeff; count],
            rng: seeded(config.seed ^ 0x5EED),
            shuffle_rngs: (0..count as u64)
                .map(|a| seeded(config.seed ^ 0x5EED ^ ((a + 1) << 32)))
                .collect(),
            metrics: vec![StepMetrics::new(&model); config.num_envs],
            config,
            env,
            backend,
            policies,
            specs,
            members,
            entries,
            iteration: 0,
            env_steps: 0,
            gpu: None,
        })
    }

    /// The state to save besides the policies.
    #[must_use]
    pub fn state(&self) -> TrainerState {
        TrainerState {
            iteration: self.iteration,
            env_steps: self.env_steps,
            kl_coeffs: self.kl_coeffs.clone(),
            norms: self.norms.clone(),
            rng: self.rng.clone(),
            shuffle_rngs: self.shuffle_rngs.clone(),
            env: self.env.state(),
            gpu: self.gpu.clone(),
        }
    }

    /// A trainer continuing from a saved `state`, its policies read with
    /// `tensor` (names `agent{a}.{tensor name}`).
    ///
    /// # Errors
    /// [`TrainError`]: a state or tensor that does not fit `model` and
    /// `config`, named.
    pub fn restore(
        model: EnvModel,
        config: PpoConfig,
        backend: B,
        state: TrainerState,
        tensor: &dyn Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<Self, TrainError> {
        let mut trainer = Self::new(model, config, backend)?;
        let n = trainer.specs.len(); // policies
        let invalid = |field: String, reason: String| Err(TrainError::State { field, reason });
        for (field, len) in [
            ("kl_coeffs", state.kl_coeffs.len()),
            ("norms", state.norms.len()),
            ("shuffle_rngs", state.shuffle_rngs.len()),
        ] {
            if len != n {
                return invalid(field.into(), format!("{len} entries for {n} policies"));
            }
        }
        if let Some((p, &k)) = state
            .kl_coeffs
            .iter()
            .enumerate()
            .find(|(_, k)| !(k.is_finite() && **k >= 0.0))
        {
            return invalid(
                format!("kl_coeffs[{p}]"),
                format!("must be finite and >= 0, got {k}"),
            );
        }
        for (p, norm) in state.norms.iter().enumerate() {
            let dim = trainer.specs[p].obs_dim;
            if norm.mean.len() != dim || norm.m2.len() != dim {
                return invalid(
                    format!("norms[{p}]"),
                    format!(
                        "{} means and {} variances, the policy has {dim} features",
                        norm.mean.len(),
                        norm.m2.len()
                    ),
                );
            }
            if !(norm.count.is_finite() && norm.count >= 0.0) {
                return invalid(
                    format!("norms[{p}].count"),
                    format!("must be finite and >= 0, got {}", norm.count),
                );
            }
        }
        let mut policies = Vec::with_capacity(n);
        for (p, spec) in trainer.specs.iter().enumerate() {
            let policy = trainer
                .backend
                .load_policy(spec, &|name| tensor(&format!("policy{p}.{name}")))
                .map_err(|source| TrainError::Backend { policy: p, source })?;
            policies.push(policy);
        }
        trainer.policies = policies;
        trainer.env.restore(state.env).map_err(TrainError::Env)?;
        trainer.iteration = state.iteration;
        trainer.env_steps = state.env_steps;
        trainer.kl_coeffs = state.kl_coeffs;
        trainer.norms = state.norms;
        trainer.rng = state.rng;
        trainer.shuffle_rngs = state.shuffle_rngs;
        trainer.gpu = state.gpu;
        Ok(trainer)
    }

    /// Replaces what was learned — policies, observation statistics, KL
    /// coefficients and counters — with a GPU run's, and keeps its device
    /// state for its checkpoints (lengths as [`Trainer::state`]'s); the
    /// environments and random streams stay this trainer's.
    #[cfg(feature = "gpu")]
    pub(crate) fn adopt(
        &mut self,
        policies: Vec<B::Policy>,
        norms: Vec<RunningNorm>,
        kl_coeffs: Vec<f32>,
        iteration: usize,
        env_steps: u64,
        gpu: GpuRunState,
    ) {
        self.policies = policies;
        self.norms = norms;
        self.kl_coeffs = kl_coeffs;
        self.iteration = iteration;
        self.env_steps = env_steps;
        self.gpu = Some(gpu);
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PpoConfig {
        &self.config
    }

    /// The environment model.
    #[must_use]
    pub fn model(&self) -> &EnvModel {
        self.env.model()
    }

    /// Iterations done.
    #[must_use]
    pub fn iteration(&self) -> usize {
        self.iteration
    }

    /// The policies (one per agent).
    #[must_use]
    pub fn policies(&self) -> &[B::Policy] {
        &self.policies
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Concentrations and values of policy `p` for `rows` input rows
    /// (buffers resized to fit).
    fn act_policy(
        &mut self,
        p: usize,
        actor: &[f32],
        critic: &[f32],
        rows: usize,
        alpha: &mut Vec<f32>,
        values: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        alpha.resize(rows * self.specs[p].action_dim, 0.0);
        values.resize(rows, 0.0);
        self.backend
            .act(&self.policies[p], actor, critic, rows, alpha, values)
    }

    /// Actor and critic inputs of every policy for `observations`
    /// (`[env][agent][obs_width]`), rows `[env][member]`; normalised (and,
    /// with `learn`, the statistics updated first) when configured.
    fn inputs(&mut self, observations: &[f32], learn: bool) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
        let model = self.env.model();
        let (n, ow) = (model.num_agents(), model.obs_width());
        let envs = observations.len() / (n * ow);
        let row = |e: usize, a: usize| &observations[(e * n + a) * ow..(e * n + a + 1) * ow];
        let mut actor: Vec<Vec<f32>> = Vec::with_capacity(self.members.len());
        for (p, members) in self.members.iter().enumerate() {
            let mut rows = Vec::with_capacity(envs * members.len() * self.specs[p].obs_dim);
            for e in 0..envs {
                for &a in members {
                    match self.config.layout {
                        Layout::Shared => {
                            rows.extend_from_slice(row(e, a));
                            rows.extend((0..n).map(|b| f32::from(u8::from(a == b))));
                        }
                        Layout::Independent | Layout::Mappo => {
                            rows.extend_from_slice(&row(e, a)[..2 + 2 * model.degree(a)]);
                        }
                    }
                }
            }
            if self.config.normalize_observations {
                if learn {
                    self.norms[p].update(&rows);
                }
                self.norms[p].apply(&mut rows);
            }
            actor.push(rows);
        }
        let critic = match self.config.layout {
            Layout::Independent | Layout::Shared => actor.clone(),
            Layout::Mappo => {
                // Every agent's critic sees all agents' (normalised) inputs.
                let widths: Vec<usize> = self.specs.iter().map(|s| s.obs_dim).collect();
                let global: Vec<f32> = (0..envs)
                    .flat_map(|e| {
                        actor
                            .iter()
                            .zip(&widths)
                            .flat_map(move |(rows, &w)| rows[e * w..(e + 1) * w].iter().copied())
                    })
                    .collect();
                vec![global; n]
            }
        };
        (actor, critic)
    }

    /// One iteration, read top to bottom: `sample` a rollout of
    /// `rollout_steps` steps in every env, `targets` (GAE), `update` every
    /// policy for `epochs` passes of minibatches (in parallel), then the
    /// iteration's metrics.
    ///
    /// # Errors
    /// [`TrainError`] of the environments or a backend.
    pub fn train_iteration(&mut self) -> Result<IterationMetrics, TrainError> {
        let (env_steps, iteration) = next_counters(&self.config, self.env_steps, self.iteration)?;
        // A GPU run's device state no longer matches once the CPU trains.
        self.gpu = None;
        let (rollouts, tally) = self.sample()?;
        let targets = self.targets(&rollouts)?;
        let entropy_coeff = entropy_coeff_at(&self.config, self.iteration);
        let sums = self.update(&rollouts, &targets, entropy_coeff)?;
        self.env_steps = env_steps;
        self.iteration = iteration;
        let n = self.env.model().num_agents();
        Ok(IterationMetrics {
            iteration: self.iteration,
            env_steps: self.env_steps,
            agent_steps: self.env_steps.saturating_mul(n as u64),
            agent_rewards: tally.agent_rewards(),
            mean_reward: tally.mean_reward(),
            reject_pct: tally.reject_pct(),
            policy_loss: sums.mean(|s| s.policy_loss),
            value_loss: sums.mean(|s| s.value_loss),
            entropy: sums.mean(|s| s.entropy),
            kl: sums.mean(|s| s.kl),
            clip_fraction: sums.mean(|s| s.clip_fraction),
            entropy_coeff: f64::from(entropy_coeff),
        })
    }

    /// Sampling: `rollout_steps` steps of every env with actions drawn from
    /// the policies' Dirichlets; returns each policy's rollout and the
    /// rollout's reward and split sums.
    fn sample(&mut self) -> Result<(Vec<Rollout>, Tally), TrainError> {
        let model = self.env.model().clone();
        let (n, w) = (model.num_agents(), model.action_width());
        let (steps, envs) = (self.config.rollout_steps, self.config.num_envs);
        let shared = self.config.layout == Layout::Shared;
        let policies = self.policies.len();
        let mut rollouts = vec![Rollout::default(); policies];
        let mut actions = vec![0f32; envs * n * w];
        let (mut alpha, mut values) = (Vec::new(), Vec::new());
        let (mut sub_alpha, mut sample, mut grad) = (
            Vec::new(),
            vec![0f32; dirichlet::MAX_ENTRIES],
            vec![0f32; dirichlet::MAX_ENTRIES],
        );
        let mut tally = Tally::new(n);
        for _ in 0..steps {
            let observations = self.env.observations().to_vec();
            let (actor, critic) = self.inputs(&observations, true);
            for p in 0..policies {
                let (rows, k) = (envs * self.members[p].len(), self.specs[p].action_dim);
                self.act_policy(p, &actor[p], &critic[p], rows, &mut alpha, &mut values)
                    .map_err(|source| TrainError::Backend { policy: p, source })?;
                let r = &mut rollouts[p];
                r.obs.extend_from_slice(&actor[p]);
                r.critic_obs.extend_from_slice(&critic[p]);
                r.alpha.extend_from_slice(&alpha);
                r.values.extend_from_slice(&values);
                for e in 0..envs {
                    for (i, &a) in self.members[p].iter().enumerate() {
                        let row_alpha = &alpha[(e * self.members[p].len() + i) * k..][..k];
                        let used = &self.entries[a];
                        sub_alpha.clear();
                        sub_alpha.extend(used.iter().map(|&j| row_alpha[j]));
                        let m = used.len();
                        dirichlet::sample(&sub_alpha, &mut self.rng, &mut sample[..m]).map_err(
                            |e| TrainError::Backend {
                                policy: p,
                                source: e.into(),
                            },
                        )?;
                        let env_row = &mut actions[(e * n + a) * w..(e * n + a + 1) * w];
                        env_row.fill(0.0);
                        env_row[..m].copy_from_slice(&sample[..m]);
                        let start = r.actions.len();
                        r.actions.resize(start + k, 0.0);
                        for (&j, &x) in used.iter().zip(&sample[..m]) {
                            r.actions[start + j] = x;
                        }
                        if shared {
                            r.mask.extend((0..k).map(|j| u8::from(used.contains(&j))));
                        }
                        r.log_prob.push(dirichlet::log_prob(
                            &sub_alpha,
                            &sample[..m],
                            &mut grad[..m],
                        ));
                    }
                }
            }
            self.env
                .step_with_metrics(&actions, &mut self.metrics)
                .map_err(TrainError::Env)?;
            for m in &self.metrics {
                tally.add(&model, m);
            }
            let beta = self.config.team_reward;
            for e in 0..envs {
                let rewards = &self.env.rewards()[e * n..(e + 1) * n];
                let team = team_mean(rewards);
                let done = f32::from(u8::from(self.env.dones()[e]));
                for (r, members) in rollouts.iter_mut().zip(&self.members) {
                    for &a in members {
                        r.rewards.push(team_mixed(rewards[a], team, beta));
                        r.dones.push(done);
                    }
                }
            }
        }
        Ok((rollouts, tally))
    }

    /// Targets: each policy's advantages and value targets by GAE,
    /// bootstrapped with the values of the observations after the rollout.
    fn targets(&mut self, rollouts: &[Rollout]) -> Result<Vec<Targets>, TrainError> {
        let (steps, envs) = (self.config.rollout_steps, self.config.num_envs);
        let observations = self.env.observations().to_vec();
        let (actor, critic) = self.inputs(&observations, false);
        let (mut alpha, mut values) = (Vec::new(), Vec::new());
        let mut targets = Vec::with_capacity(rollouts.len());
        for (p, r) in rollouts.iter().enumerate() {
            let rows = envs * self.members[p].len();
            self.act_policy(p, &actor[p], &critic[p], rows, &mut alpha, &mut values)
                .map_err(|source| TrainError::Backend { policy: p, source })?;
            let c = &self.config;
            let samples = gae::Samples {
                steps,
                columns: rows,
                rewards: &r.rewards,
                values: &r.values,
                dones: &r.dones,
                last_values: &values,
            };
            let (mut advantages, returns) =
                gae::advantages(&samples, c.gamma, c.lambda).map_err(|e| TrainError::Backend {
                    policy: p,
                    source: e.into(),
                })?;
            if c.normalize_advantages {
                gae::standardise(&mut advantages);
            }
            targets.push((advantages, returns));
        }
        Ok(targets)
    }

    /// The update: `epochs` passes of shuffled minibatches for every policy
    /// (in parallel, one thread per core, each policy on its own stream),
    /// then each policy's KL adaptation; returns the update statistics in
    /// policy order.
    fn update(
        &mut self,
        rollouts: &[Rollout],
        targets: &[Targets],
        entropy_coeff: f32,
    ) -> Result<UpdateSums, TrainError> {
        let policies = self.policies.len();
        let mut jobs: Vec<PolicyUpdate<'_, B>> = self
            .policies
            .iter_mut()
            .zip(&mut self.shuffle_rngs)
            .zip(&mut self.kl_coeffs)
            .zip(rollouts)
            .zip(targets)
            .zip(&self.specs)
            .map(
                |(((((policy, rng), kl_coeff), rollout), (advantages, returns)), spec)| {
                    PolicyUpdate {
                        policy,
                        rng,
                        kl_coeff,
                        rollout,
                        advantages,
                        returns,
                        spec,
                        stats: Vec::new(),
                        outcome: Ok(()),
                    }
                },
            )
            .collect();
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(policies)
            .max(1);
        let config = &self.config;
        let per_thread = policies.div_ceil(threads);
        std::thread::scope(|scope| {
            for group in jobs.chunks_mut(per_thread) {
                let mut backend = self.backend.clone();
                scope.spawn(move || {
                    for job in group {
                        job.outcome = job.run(&mut backend, config, entropy_coeff);
                    }
                });
            }
        });
        let mut sums = UpdateSums::default();
        for (p, job) in jobs.iter_mut().enumerate() {
            std::mem::replace(&mut job.outcome, Ok(()))
                .map_err(|source| TrainError::Backend { policy: p, source })?;
            job.stats.iter().for_each(|s| sums.add(s));
        }
        Ok(sums)
    }

    /// The trained policies acting deterministically (the Dirichlet mean).
    #[must_use]
    pub fn controller(&mut self) -> PpoController<'_, B> {
        PpoController {
            trainer: self,
            obs: Vec::new(),
            alpha: Vec::new(),
            values: Vec::new(),
        }
    }
}

/// One policy's share of an update: its parameters, streams and samples.
struct PolicyUpdate<'a, B: Backend> {
    policy: &'a mut B::Policy,
    rng: &'a mut Xoshiro128PlusPlus,
    kl_coeff: &'a mut f32,
    rollout: &'a Rollout,
    advantages: &'a [f32],
    returns: &'a [f32],
    spec: &'a PolicySpec,
    stats: Vec<UpdateStats>,
    /// The first backend error of [`PolicyUpdate::run`], if any.
    outcome: Result<(), BackendError>,
}

impl<B: Backend> PolicyUpdate<'_, B> {
    /// `epochs` passes of shuffled minibatches, then the KL adaptation.
    fn run(
        &mut self,
        backend: &mut B,
        c: &PpoConfig,
        entropy_coeff: f32,
    ) -> Result<(), BackendError> {
        let coefficients = LossCoefficients {
            clip: c.clip,
            value_coeff: c.value_coeff,
            value_clip: c.value_clip,
            entropy_coeff,
            kl_coeff: *self.kl_coeff,
            max_grad_norm: c.max_grad_norm,
        };
        let (d, k) = (self.spec.obs_dim, self.spec.action_dim);
        let r = self.rollout;
        let mut kl_last_epoch = 0.0;
        for epoch in 0..c.epochs {
            let order = permutation(self.rng, self.advantages.len());
            let (mut epoch_kl, mut updates) = (0.0, 0u32);
            for indices in order.chunks(c.minibatch_size) {
                let gather = |source: &[f32], width: usize| -> Vec<f32> {
                    indices
                        .iter()
                        .flat_map(|&i| source[i * width..(i + 1) * width].iter().copied())
                        .collect()
                };
                let mask: Vec<u8> = indices
                    .iter()
                    .flat_map(|&i| {
                        r.mask
                            .get(i * k..(i + 1) * k)
                            .unwrap_or(&[])
                            .iter()
                            .copied()
                    })
                    .collect();
                let minibatch = Minibatch {
                    size: indices.len(),
                    obs: &gather(&r.obs, d),
                    critic_obs: &gather(&r.critic_obs, self.spec.critic_obs_dim),
                    actions: &gather(&r.actions, k),
                    old_alpha: &gather(&r.alpha, k),
                    old_log_prob: &gather(&r.log_prob, 1),
                    advantages: &gather(self.advantages, 1),
                    returns: &gather(self.returns, 1),
                    mask: (!r.mask.is_empty()).then_some(&mask[..]),
                };
                let stats = backend.update(self.policy, &minibatch, &coefficients)?;
                epoch_kl += f64::from(stats.kl);
                updates += 1;
                self.stats.push(stats);
            }
            if epoch + 1 == c.epochs {
                kl_last_epoch = epoch_kl / f64::from(updates.max(1));
            }
        }
        *self.kl_coeff = adapt_kl_coeff(*self.kl_coeff, kl_last_epoch, c.kl_target);
        Ok(())
    }
}

/// The entropy coefficient after `iteration` iterations: linear from
/// `entropy_coeff` to `entropy_coeff_final` over the decay fraction of the
/// run, then constant (the schedule of every backend's trainer).
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

/// Means of update statistics.
#[derive(Debug, Default)]
struct UpdateSums {
    count: f64,
    all: Vec<UpdateStats>,
}

impl UpdateSums {
    fn add(&mut self, s: &UpdateStats) {
        self.count += 1.0;
        self.all.push(*s);
    }

    fn mean(&self, field: impl Fn(&UpdateStats) -> f32) -> f64 {
        self.all.iter().map(|s| f64::from(field(s))).sum::<f64>() / self.count.max(1.0)
    }
}

/// A uniform random permutation of `0..n` (Fisher–Yates on `rng`).
fn permutation(rng: &mut Xoshiro128PlusPlus, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, below(rng, (i + 1) as u32) as usize);
    }
    order
}

/// The trained policies as a [`Controller`] (deterministic: Dirichlet mean).
pub struct PpoController<'a, B: Backend> {
    trainer: &'a mut Trainer<B>,
    obs: Vec<f32>,
    alpha: Vec<f32>,
    values: Vec<f32>,
}

impl<B: Backend + Clone + Send> Controller for PpoController<'_, B>
where
    B::Policy: Send,
{
    fn name(&self) -> &str {
        "ppo"
    }

    fn act(
        &mut self,
        model: &EnvModel,
        observations: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        // The policies are made for the trainer's model: `model` must have
        // its layout.
        let own = self.trainer.model();
        let degrees = |m: &EnvModel| (0..m.num_agents()).map(|a| m.degree(a)).collect::<Vec<_>>();
        if degrees(model) != degrees(own) {
            return Err(crate::error::ShapeError::Length {
                field: "model (agents and degrees)",
                expected: own.num_agents(),
                got: model.num_agents(),
            }
            .into());
        }
        let envs = check_batch(own, observations, actions)?;
        let (n, w) = (model.num_agents(), model.action_width());
        let (actor, critic) = self.trainer.inputs(observations, false);
        let t = &mut *self.trainer;
        for (p, members) in t.members.iter().enumerate() {
            let (rows, k) = (envs * members.len(), t.specs[p].action_dim);
            self.alpha.resize(rows * k, 0.0);
            self.values.resize(rows, 0.0);
            t.backend
                .act(
                    &t.policies[p],
                    &actor[p],
                    &critic[p],
                    rows,
                    &mut self.alpha,
                    &mut self.values,
                )
                .map_err(ControlError::Backend)?;
            for e in 0..envs {
                for (i, &a) in members.iter().enumerate() {
                    let row_alpha = &self.alpha[(e * members.len() + i) * k..][..k];
                    self.obs.clear();
                    self.obs.extend(t.entries[a].iter().map(|&j| row_alpha[j]));
                    let env_row = &mut actions[(e * n + a) * w..(e * n + a + 1) * w];
                    env_row.fill(0.0);
                    dirichlet::mean(&self.obs, &mut env_row[..self.obs.len()]);
                }
            }
        }
        Ok(())
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
    fn the_trainer_adapts_its_kl_coefficient_each_iteration() {
        // One shared policy and one epoch: the iteration's mean KL is the
        // last epoch's, so the rule can be checked from the metrics.
        let built = dfaas_core::EnvConfig {
            max_steps: 16,
            ..dfaas_core::EnvConfig::default()
        }
        .build()
        .unwrap();
        let config = PpoConfig {
            layout: Layout::Shared,
            hidden: vec![8],
            num_envs: 2,
            rollout_steps: 16,
            minibatch_size: 16,
            epochs: 1,
            kl_coeff: 0.2,
            kl_target: 1e-4,
            learning_rate: 1e-2,
            ..PpoConfig::default()
        };
        let model = EnvModel::new(&built).unwrap();
        let mut t = Trainer::new(model, config, crate::backend::CpuBackend::new()).unwrap();
        let mut moved = 0;
        for _ in 0..6 {
            let before = f64::from(t.state().kl_coeffs[0]);
            let kl = t.train_iteration().unwrap().kl;
            let after = f64::from(t.state().kl_coeffs[0]);
            let target = f64::from(1e-4f32);
            let factor = if kl > 2.0 * target {
                1.5
            } else if kl < 0.5 * target {
                0.5
            } else {
                1.0
            };
            // f32 products: equal to 1e-6 relative.
            assert!(
                (after - before * factor).abs() <= 1e-6 * before,
                "KL {kl}: {before} → {after}"
            );
            moved += usize::from(factor != 1.0);
        }
        assert!(moved > 0, "the coefficient never moved");
    }
}

//! Multi-agent PPO on the CPU: the configuration, the [`Trainer`] (a
//! [`CpuEngine`] under the schedule of [`crate::engine`], where the
//! iteration is written once for every backend), its state, and the
//! trained policies as a [`Controller`].
//!
//! Layouts: one independent policy (actor + critic) per agent, as the
//! reference trains them; one shared by all agents (an agent id appended,
//! actions masked to the agent's entries); MAPPO (per-agent actors, critics
//! that see every agent's inputs). Each agent's actor sees its own
//! observation `[input_rate, prev_input_rate, prev_forward_to..,
//! prev_forward_rejects_to..]` and outputs the concentrations of a
//! Dirichlet over `[local, forward.., reject]`. The agnostic layout
//! ([`Layout::Agnostic`]) shares one actor that scores each entry from its
//! own row of features, so it acts for any node of any federation.
//!
//! Random streams (all seeded from [`PpoConfig::seed`]): the env batch is
//! reset with `seed`; policy `a` is initialised from `seed + 1 + a`
//! (wrapping: every `u64` is a valid seed); action
//! sampling uses a stream seeded `seed ^ 0x5EED`, and policy `a`'s minibatch
//! shuffles one seeded `seed ^ 0x5EED ^ ((a + 1) << 32)`. The policies'
//! updates run in parallel (one thread per core), each on its own policy and
//! stream, and their statistics are summed in policy order: a seed gives the
//! same metrics bit for bit, whatever the number of cores.

use crate::backend::{Backend, LossCoefficients};
use crate::controller::{Controller, check_batch};
use crate::engine::cpu::CpuEngine;
use crate::engine::{Schedule, train_iteration};
use crate::error::{CheckpointError, ControlError, PpoConfigError, TrainError, UnknownName};
use crate::gossip::Gossip;
use crate::mlp::Activation;
use dfaas_core::EnvModel;
use dfaas_core::rng::Xoshiro128PlusPlus;

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
    /// One actor and one critic for all agents that know nothing of the
    /// topology: no agent id, and the actor scores each entry of an
    /// agent's Dirichlet from that entry's row
    /// ([`dfaas_infer::agnostic::entry_rows`]: the agent's own rates,
    /// order-free summaries of its neighbours' features, the entry's kind
    /// and, for a forward, that neighbour's features); the critic reads
    /// the local row. The policy acts for nodes with any number of
    /// neighbours, in federations it never saw.
    Agnostic,
}

impl Layout {
    /// The layout's name in configurations and checkpoints.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Independent => "independent",
            Self::Shared => "shared",
            Self::Mappo => "mappo",
            Self::Agnostic => "agnostic",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = UnknownName;

    /// `independent`, `shared`, `mappo` or `agnostic`.
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        match name {
            "independent" => Ok(Self::Independent),
            "shared" => Ok(Self::Shared),
            "mappo" => Ok(Self::Mappo),
            "agnostic" => Ok(Self::Agnostic),
            _ => Err(UnknownName {
                setting: "layout",
                got: name.into(),
                choices: "independent, shared, mappo, agnostic",
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
    /// Whether the agnostic actor and critic also read each node's gossip
    /// ([`crate::gossip`]: its capacity; its neighbours' previous input
    /// rates, capacities and degrees — what Recalc and Node-Margin read),
    /// through [`dfaas_infer::agnostic::gossip_rows`]. Only with
    /// [`Layout::Agnostic`]; the reference's agents see no gossip.
    #[serde(default)]
    pub gossip: bool,
    /// Fixed bias added to every actor's local output before softplus
    /// (the local entry's concentration is `softplus(output + bias)`):
    /// with a positive one a policy starts by keeping most of its requests
    /// local — all-local is close to Node-Margin — rather than splitting
    /// them evenly over its `k + 2` entries. 0 is the reference's actor.
    #[serde(default)]
    pub local_bias: f32,
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
    /// `(1 − β)·own reward + β·mean reward of its federation` (all agents,
    /// unless the topology is a `union` of federations: then those of its
    /// connected component). 0 is the reference (selfish agents); 1 aligns
    /// every agent with the mean per-agent reward the evaluation reports.
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
            gossip: false,
            local_bias: 0.0,
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
    /// Features per entry row of the agnostic layout:
    /// [`dfaas_infer::agnostic::GOSSIP_ROW_WIDTH`] with [`PpoConfig::gossip`],
    /// else [`dfaas_infer::agnostic::ENTRY_WIDTH`].
    #[must_use]
    pub fn row_width(&self) -> usize {
        if self.gossip {
            dfaas_infer::agnostic::GOSSIP_ROW_WIDTH
        } else {
            dfaas_infer::agnostic::ENTRY_WIDTH
        }
    }

    /// The loss weights of an update under these settings, with this
    /// iteration's entropy weight and a policy's KL weight.
    #[must_use]
    pub fn loss_coefficients(&self, entropy_coeff: f32, kl_coeff: f32) -> LossCoefficients {
        LossCoefficients {
            clip: self.clip,
            value_coeff: self.value_coeff,
            value_clip: self.value_clip,
            entropy_coeff,
            kl_coeff,
            max_grad_norm: self.max_grad_norm,
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
            !self.gossip || self.layout == Layout::Agnostic,
            "gossip",
            format!("true (layout {})", self.layout.name()),
            "only the agnostic layout reads gossip",
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
        check(
            self.local_bias.is_finite(),
            "local_bias",
            self.local_bias.to_string(),
            "must be finite",
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
            gossip: false,
            local_bias: 0.0,
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

    /// The per-feature means and variances it normalises with: variance
    /// `m2 / count`, or 1 before two rows were seen (so that
    /// `max(√variance, 1e-4)` is [`RunningNorm::apply`]'s divisor, bit for
    /// bit).
    #[must_use]
    pub fn mean_and_variance(&self) -> (Vec<f64>, Vec<f64>) {
        let variance = self
            .m2
            .iter()
            .map(|s| {
                if self.count > 1.0 {
                    s / self.count
                } else {
                    1.0
                }
            })
            .collect();
        (self.mean.clone(), variance)
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

/// The trainer: a [`CpuEngine`] (environments, one policy per agent or
/// one shared, rollout storage) and the schedule around it.
pub struct Trainer<B: Backend> {
    config: PpoConfig,
    engine: CpuEngine<B>,
    schedule: Schedule,
    /// The device state of the GPU run this trainer holds, if any.
    gpu: Option<GpuRunState>,
}

impl<B: Backend + Clone + Send + Sync> Trainer<B>
where
    B::Policy: Send + Sync,
{
    /// A trainer of `model` with `config` on `backend`.
    ///
    /// # Errors
    /// [`TrainError`]: an invalid configuration, a policy the backend
    /// cannot build, a failed first reset.
    pub fn new(model: EnvModel, config: PpoConfig, backend: B) -> Result<Self, TrainError> {
        config.validate().map_err(TrainError::Config)?;
        let engine = CpuEngine::new(model, config.clone(), backend)?;
        Ok(Self {
            schedule: Schedule {
                iteration: 0,
                env_steps: 0,
                kl_coeffs: vec![config.kl_coeff; engine.specs.len()],
            },
            config,
            engine,
            gpu: None,
        })
    }

    /// Each policy's observation statistics.
    pub(crate) fn norms(&self) -> &[RunningNorm] {
        &self.engine.norms
    }

    /// The state to save besides the policies.
    #[must_use]
    pub fn state(&self) -> TrainerState {
        TrainerState {
            iteration: self.schedule.iteration,
            env_steps: self.schedule.env_steps,
            kl_coeffs: self.schedule.kl_coeffs.clone(),
            norms: self.engine.norms.clone(),
            rng: self.engine.rng.clone(),
            shuffle_rngs: self.engine.shuffle_rngs.clone(),
            env: self.engine.env().state(),
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
        let engine = &mut trainer.engine;
        let n = engine.specs.len(); // policies
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
            let dim = engine.specs[p].actor_input();
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
        for (p, spec) in engine.specs.iter().enumerate() {
            let policy = engine
                .backend()
                .load_policy(spec, &|name| tensor(&format!("policy{p}.{name}")))
                .map_err(|source| TrainError::Backend { policy: p, source })?;
            policies.push(policy);
        }
        engine.policies = policies;
        engine
            .env_mut()
            .restore(state.env)
            .map_err(TrainError::Env)?;
        engine.norms = state.norms;
        engine.rng = state.rng;
        engine.shuffle_rngs = state.shuffle_rngs;
        trainer.schedule = Schedule {
            iteration: state.iteration,
            env_steps: state.env_steps,
            kl_coeffs: state.kl_coeffs,
        };
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
        schedule: Schedule,
        gpu: GpuRunState,
    ) {
        self.engine.policies = policies;
        self.engine.norms = norms;
        self.schedule = schedule;
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
        self.engine.env().model()
    }

    /// Iterations done.
    #[must_use]
    pub fn iteration(&self) -> usize {
        self.schedule.iteration
    }

    /// The schedule (counters and KL coefficients).
    #[cfg(feature = "gpu")]
    pub(crate) fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The policies (one per agent).
    #[must_use]
    pub fn policies(&self) -> &[B::Policy] {
        &self.engine.policies
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> &B {
        self.engine.backend()
    }

    /// One iteration ([`crate::engine::iterate`] on the CPU engine, with
    /// the shared schedule): sample, targets, update, then the metrics.
    ///
    /// # Errors
    /// [`TrainError`] of the environments or a backend;
    /// [`TrainError::NonFinite`] when an update diverged.
    pub fn train_iteration(&mut self) -> Result<IterationMetrics, TrainError> {
        // A GPU run's device state no longer matches once the CPU trains.
        self.gpu = None;
        let agents = self.engine.env().model().num_agents();
        let plan = *self.engine.plan();
        train_iteration(
            &mut self.engine,
            &self.config,
            &plan,
            &mut self.schedule,
            agents,
        )
    }

    /// The trained policies acting deterministically (the Dirichlet mean),
    /// through the inference crate's forward pass: the actions of this
    /// controller are those a server answers from the checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError`] when the policies do not convert
    /// ([`crate::checkpoint::inference_policy`]).
    pub fn controller(&self) -> Result<PpoController, CheckpointError> {
        Ok(PpoController::new(crate::checkpoint::inference_policy(
            self,
        )?))
    }
}

/// The trained policies as a [`Controller`] (deterministic: the Dirichlet
/// mean of [`dfaas_infer::Policy::act`]), for the trainer's topology — or,
/// for a policy of the agnostic layout, for any federation
/// ([`dfaas_infer::Policy::act_node`]).
#[derive(Debug, Clone)]
pub struct PpoController {
    policy: dfaas_infer::Policy,
}

impl PpoController {
    /// The controller of a loaded inference policy (e.g. a checkpoint's
    /// `policies.safetensors`).
    #[must_use]
    pub fn new(policy: dfaas_infer::Policy) -> Self {
        Self { policy }
    }

    /// Whether it can act on `model`: always for the agnostic layout;
    /// otherwise when `model` has the policy's agents and degrees.
    #[must_use]
    pub fn fits(&self, model: &EnvModel) -> bool {
        let agents = self.policy.agents();
        self.policy.layout() == dfaas_infer::Layout::Agnostic
            || (model.num_agents() == agents.len()
                && (0..model.num_agents()).all(|a| model.degree(a) == agents[a].degree()))
    }
}

/// Fewest envs per thread worth a copy of the policy (below twice this,
/// the controller acts on the calling thread).
const MIN_ENVS_PER_THREAD: usize = 64;

/// `policy`'s deterministic actions for whole envs' rows of `model`
/// (lengths checked by the caller), row by row.
fn act_rows(
    policy: &mut dfaas_infer::Policy,
    model: &EnvModel,
    observations: &[f32],
    actions: &mut [f32],
) -> Result<(), ControlError> {
    let agnostic = policy.layout() == dfaas_infer::Layout::Agnostic;
    let gossip = policy.gossip().then(|| Gossip::new(model));
    let mut node_gossip = Vec::new();
    let (n, ow, w) = (model.num_agents(), model.obs_width(), model.action_width());
    for (row, (observation, action)) in observations
        .chunks_exact(ow)
        .zip(actions.chunks_exact_mut(w))
        .enumerate()
    {
        let a = row % n;
        let k = model.degree(a);
        action.fill(0.0);
        if agnostic {
            let told = gossip.as_ref().map(|g| {
                let env = &observations[(row - a) * ow..(row - a + n) * ow];
                g.write(model, env, a, &mut node_gossip);
                node_gossip.as_slice()
            });
            policy.act_node(&observation[..2 + 2 * k], told, &mut action[..k + 2])?;
        } else {
            policy.act(a, observation, &mut action[..k + 2])?;
        }
    }
    Ok(())
}

impl Controller for PpoController {
    fn name(&self) -> &str {
        "ppo"
    }

    fn act(
        &mut self,
        model: &EnvModel,
        observations: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError> {
        // Unless agnostic, the policies are made for the trainer's model:
        // `model` must have its layout.
        if !self.fits(model) {
            return Err(crate::error::ShapeError::Length {
                field: "model (agents and degrees)",
                expected: self.policy.agents().len(),
                got: model.num_agents(),
            }
            .into());
        }
        let envs = check_batch(model, observations, actions)?;
        let (ow, w) = (model.obs_width(), model.action_width());
        // Large batches: contiguous runs of whole envs on the current rayon
        // pool's threads, each with its own copy of the policy (its
        // scratch); every row is computed alone, so the actions do not
        // depend on the split. The first error in env order is returned.
        let threads = rayon::current_num_threads().min(envs / MIN_ENVS_PER_THREAD.max(1));
        if threads < 2 {
            return act_rows(&mut self.policy, model, observations, actions);
        }
        use rayon::prelude::*;
        let per_thread = envs.div_ceil(threads);
        let per_obs = per_thread * model.num_agents() * ow;
        let per_action = per_thread * model.num_agents() * w;
        let policy = &self.policy;
        actions
            .par_chunks_mut(per_action)
            .zip(observations.par_chunks(per_obs))
            .map(|(actions, observations)| {
                act_rows(&mut policy.clone(), model, observations, actions)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Training on pools of 1, 2, 3 and 7 threads gives the same metrics
    /// and policies bit for bit: the env steps, the policies' updates (one
    /// task each) and each update's actor and critic halves (joined) are
    /// split over the threads, never summed differently. Independent (three
    /// policies) and agnostic (one per-entry policy, a masked actor).
    #[test]
    fn training_is_alike_on_any_thread_count() {
        use crate::backend::CpuBackend;
        let env_config = dfaas_core::EnvConfig::with_network(&["a b c", "b c", "c d"]);
        let model = EnvModel::new(&env_config.build().unwrap()).unwrap();
        for layout in [Layout::Independent, Layout::Agnostic] {
            let config = PpoConfig {
                layout,
                hidden: vec![16, 16],
                num_envs: 20,
                rollout_steps: 24,
                minibatch_size: 120,
                epochs: 2,
                ..PpoConfig::default()
            };
            let train = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let t = Trainer::new(model.clone(), config.clone(), CpuBackend::new());
                    let mut t = t.unwrap();
                    let metrics: Vec<IterationMetrics> =
                        (0..3).map(|_| t.train_iteration().unwrap()).collect();
                    (metrics, t.engine.policies.clone())
                })
            };
            let one = train(1);
            let untrained = Trainer::new(model.clone(), config.clone(), CpuBackend::new());
            assert!(
                untrained.unwrap().engine.policies != one.1,
                "{layout:?}: trained"
            );
            for threads in [2, 3, 7] {
                assert!(train(threads) == one, "{layout:?} on {threads} threads");
            }
        }
    }

    /// The deterministic action the trainer's own batched forward pass
    /// (matrixmultiply, as sampling computes the concentrations) gives:
    /// α/Σα over each agent's entries, written into the env's rows.
    fn batched_mean_actions(
        t: &mut Trainer<crate::backend::CpuBackend>,
        observations: &[f32],
        envs: usize,
    ) -> Vec<f32> {
        let model = t.model().clone();
        let (n, w) = (model.num_agents(), model.action_width());
        let mut actions = vec![0f32; envs * n * w];
        let e = &mut t.engine;
        let (actor, _) = e.inputs(observations, false).unwrap();
        let mut alpha = Vec::new();
        for (p, inputs) in actor.iter().enumerate() {
            let members = e.members[p].len();
            e.concentrations(p, inputs, envs * members, &mut alpha)
                .unwrap();
            let k = e.specs[p].action_dim;
            for env in 0..envs {
                for (i, &a) in e.members[p].iter().enumerate() {
                    let row = &alpha[(env * members + i) * k..][..k];
                    let entries: Vec<f32> = e.entries[a].iter().map(|&j| row[j]).collect();
                    let total: f32 = entries.iter().sum();
                    let out = &mut actions[(env * n + a) * w..];
                    for (o, x) in out.iter_mut().zip(&entries) {
                        *o = x / total;
                    }
                }
            }
        }
        actions
    }

    /// A batch large enough to be split over threads gives the actions
    /// of the calling thread alone, bit for bit, on 1, 2, 3 and 7 threads
    /// (a split that leaves a short last run included), and its first
    /// error in env order.
    #[test]
    fn the_controller_acts_alike_on_any_thread_count() {
        let env_config = dfaas_core::EnvConfig::with_network(&["a b c", "b c", "c d"]);
        let model = EnvModel::new(&env_config.build().unwrap()).unwrap();
        let config = PpoConfig {
            hidden: vec![8],
            num_envs: 2,
            rollout_steps: 48,
            minibatch_size: 96,
            ..PpoConfig::default()
        };
        let mut t = Trainer::new(model, config, crate::backend::CpuBackend::new()).unwrap();
        t.train_iteration().unwrap();
        let envs = 301;
        let mut env = crate::controller::evaluation_env(&env_config, envs, 5).unwrap();
        let model = env.model().clone();
        let mut controller = t.controller().unwrap();
        let on = |threads: usize, obs: &[f32], c: &mut PpoController| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut actions = vec![0f32; envs * model.num_agents() * model.action_width()];
            let result = pool.install(|| c.act(&model, obs, &mut actions));
            (result.map_err(|e| e.to_string()), actions)
        };
        for _ in 0..5 {
            let obs = env.observations().to_vec();
            let (ok, one) = on(1, &obs, &mut controller);
            ok.unwrap();
            for threads in [2, 3, 7] {
                assert_eq!(on(threads, &obs, &mut controller), (Ok(()), one.clone()));
            }
            env.step(&one).unwrap();
        }
        // A NaN in env 200 and another in env 290: the first is reported.
        let mut obs = env.observations().to_vec();
        let per_env = model.num_agents() * model.obs_width();
        obs[200 * per_env + 1] = f32::NAN;
        obs[290 * per_env] = f32::NAN;
        let (one, _) = on(1, &obs, &mut controller);
        assert!(one.is_err());
        for threads in [2, 3, 7] {
            assert_eq!(on(threads, &obs, &mut controller).0, one);
        }
    }

    /// The controller (the inference crate's forward pass) acts as the
    /// trainer's batched forward pass bit for bit on evaluation episodes,
    /// in every layout, with ReLU, raw inputs and a layer wider than one
    /// 256-input block too.
    #[test]
    fn the_controller_acts_as_the_trainers_forward_pass() {
        let network = [
            "node_0 node_1 node_2",
            "node_3 node_2 node_0",
            "node_1 node_4",
        ];
        let small = |layout| PpoConfig {
            layout,
            hidden: vec![16, 16],
            num_envs: 4,
            rollout_steps: 48,
            minibatch_size: 96,
            seed: 9,
            ..PpoConfig::default()
        };
        let configs = [
            small(Layout::Independent),
            small(Layout::Shared),
            small(Layout::Mappo),
            small(Layout::Agnostic),
            PpoConfig {
                activation: Activation::Relu,
                normalize_observations: false,
                hidden: vec![300, 8],
                ..small(Layout::Shared)
            },
            PpoConfig {
                activation: Activation::Relu,
                normalize_observations: false,
                ..small(Layout::Agnostic)
            },
            PpoConfig {
                gossip: true,
                ..small(Layout::Agnostic)
            },
            PpoConfig {
                gossip: true,
                normalize_observations: false,
                ..small(Layout::Agnostic)
            },
            PpoConfig {
                gossip: true,
                local_bias: 3.0,
                ..small(Layout::Agnostic)
            },
            PpoConfig {
                local_bias: -1.5,
                ..small(Layout::Independent)
            },
            PpoConfig {
                local_bias: 2.0,
                ..small(Layout::Shared)
            },
        ];
        for config in configs {
            let env_config = dfaas_core::EnvConfig::with_network(&network);
            let model = EnvModel::new(&env_config.build().unwrap()).unwrap();
            let mut t =
                Trainer::new(model, config.clone(), crate::backend::CpuBackend::new()).unwrap();
            for _ in 0..2 {
                t.train_iteration().unwrap();
            }
            let mut env = crate::controller::evaluation_env(&env_config, 3, 5).unwrap();
            let model = env.model().clone();
            let mut controller = t.controller().unwrap();
            let mut actions = vec![0f32; 3 * model.num_agents() * model.action_width()];
            for step in 0..model.max_steps() {
                let obs = env.observations().to_vec();
                controller.act(&model, &obs, &mut actions).unwrap();
                let want = batched_mean_actions(&mut t, &obs, 3);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&actions),
                    bits(&want),
                    "{:?} step {step}",
                    config.layout
                );
                env.step(&actions).unwrap();
            }
        }
    }
}

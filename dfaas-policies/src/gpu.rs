//! PPO trained on the GPU (feature `gpu`): [`GpuEngine`] provides the
//! operations of [`crate::engine`]'s iteration by recording them with
//! `dfaas_gpu::ppo::GpuPpo` — the whole iteration (rollout on a
//! `GpuBatchEnv`, GAE, every update) as one command buffer — and
//! [`GpuTrainer`] runs it under the schedule the CPU trainer runs (the
//! same entropy decay, KL adaptation and counters, written once in
//! `engine`). Per iteration the host uploads the entropy and KL weights and
//! reads back one statistics buffer.
//!
//! Policies start as the CPU trainer's (same seeds, same initial
//! parameters) and go back to a CPU [`Trainer`] for checkpoints and
//! evaluation ([`GpuTrainer::to_cpu`]): one file format for both backends.
//! A run continued on the other backend keeps its parameters, Adam state,
//! observation statistics, KL coefficients and counters; its episodes and
//! random streams start afresh.
//!
//! Every layout trains on the GPU, its policies run as one grouped network
//! (`independent` and `mappo`: one group per agent, padded to the widest;
//! `shared`: one group). Minibatches as [`Plan::new`] plans them for both
//! backends.

use crate::adam::Adam;
use crate::backend::{CpuBackend, CpuPolicy};
use crate::engine::{Engine, Plan, Schedule, Summary, train_iteration};
use crate::error::{PpoConfigError, TrainError};
use crate::mlp::{Activation, Mlp};
use crate::ppo::{GpuRunState, IterationMetrics, Layout, PpoConfig, RunningNorm, Trainer};
use dfaas_core::EnvModel;
use dfaas_gpu::nn::adam::AdamSettings;
use dfaas_gpu::nn::loss::LossSettings;
use dfaas_gpu::nn::mlp::Activation as GpuActivation;
use dfaas_gpu::ppo::{GpuPpo, GpuPpoSettings, PolicyLayout};
use dfaas_gpu::{GpuBatchEnv, GpuContext, GpuEnvState, GpuError, TracePool, Traffic};

/// Largest trace pool, in bytes of input rates per half (the env holds two:
/// the one in play and the one refreshed for the next episodes).
const POOL_BYTES: usize = 32 << 20;

/// The operations of an iteration on one GPU: a [`GpuBatchEnv`] and the
/// [`GpuPpo`] built for it, on their context.
pub struct GpuEngine {
    ctx: GpuContext,
    env: GpuBatchEnv,
    ppo: GpuPpo,
}

impl GpuEngine {
    /// The engine of `ppo`, built for `env`, on `ctx`. Every operation
    /// checks the three belong together ([`GpuError::ContextMismatch`],
    /// or [`GpuError::Input`] for another env).
    #[must_use]
    pub fn new(ctx: GpuContext, env: GpuBatchEnv, ppo: GpuPpo) -> Self {
        Self { ctx, env, ppo }
    }

    /// The context.
    #[must_use]
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// The environments.
    #[must_use]
    pub fn env(&self) -> &GpuBatchEnv {
        &self.env
    }

    /// The on-device iteration (its networks, optimisers and rollout).
    #[must_use]
    pub fn ppo(&self) -> &GpuPpo {
        &self.ppo
    }
}

impl Engine for GpuEngine {
    fn begin(&mut self, entropy_coeff: f32, kl_coeffs: &[f32]) -> Result<(), TrainError> {
        self.ppo
            .begin(&self.ctx, entropy_coeff, kl_coeffs)
            .map_err(TrainError::Gpu)
    }

    fn act(&mut self) -> Result<(), TrainError> {
        self.ppo.act(&self.ctx).map_err(TrainError::Gpu)
    }

    fn step(&mut self) -> Result<(), TrainError> {
        self.ppo.step(&self.ctx, &self.env).map_err(TrainError::Gpu)
    }

    fn bootstrap(&mut self) -> Result<(), TrainError> {
        self.ppo.bootstrap(&self.ctx).map_err(TrainError::Gpu)
    }

    fn advantages(&mut self, standardise: bool) -> Result<(), TrainError> {
        self.ppo
            .advantages(&self.ctx, standardise)
            .map_err(TrainError::Gpu)
    }

    /// No commands: the device's permutation is a function of the
    /// iteration and epoch words of its clock, and the clock moves to the
    /// next epoch after each epoch's last minibatch.
    fn shuffle(&mut self, _epoch: usize) -> Result<(), TrainError> {
        Ok(())
    }

    /// The device takes minibatches in order: `index` is the clock's.
    fn minibatch(&mut self, _index: usize) -> Result<(), TrainError> {
        self.ppo.minibatch(&self.ctx).map_err(TrainError::Gpu)
    }

    fn finish(&mut self) -> Result<Summary, TrainError> {
        let stats = self.ppo.finish(&self.ctx).map_err(TrainError::Gpu)?;
        Ok(Summary {
            env_steps: (self.ppo.rollout_steps() * self.env.num_envs()) as u64,
            reward_sums: stats.reward_sums,
            input: stats.input,
            rejected: stats.rejected,
            policy_loss: stats.policy_loss,
            value_loss: stats.value_loss,
            entropy: stats.entropy,
            kl: stats.kl,
            clip_fraction: stats.clip_fraction,
            last_epoch_kl: stats.last_epoch_kl,
            non_finite: stats.non_finite,
        })
    }
}

/// A PPO run on one GPU.
pub struct GpuTrainer {
    config: PpoConfig,
    model: EnvModel,
    engine: GpuEngine,
    plan: Plan,
    schedule: Schedule,
    /// The policies' shapes on the CPU (unpadded), per policy.
    shapes: Vec<(Mlp, Mlp)>,
    /// The grouped networks' shapes (padded widths).
    padded: (Mlp, Mlp),
    /// Episodes in the trace pool.
    pool_episodes: usize,
    /// The schedule's env steps when the envs were reset: all envs step
    /// together, so `(env_steps − this) / num_envs` is the steps each
    /// took since (one episode counter for all).
    env_steps_at_reset: u64,
    /// The latest episode whose pool half holds its own fresh episodes.
    pool_ready: u64,
    /// Bytes of trace-pool refreshes uploaded so far.
    refreshed_bytes: u64,
}

impl GpuTrainer {
    /// A run of `model` with `config` on `ctx`'s device, starting from the
    /// policies a CPU [`Trainer`] of the same configuration starts from.
    ///
    /// # Errors
    /// [`TrainError`]: an invalid configuration, an env the device refuses (e.g. the reference's f64 reject
    /// arithmetic), sizes beyond the device.
    pub fn new(model: EnvModel, config: PpoConfig, ctx: GpuContext) -> Result<Self, TrainError> {
        let cpu = Trainer::new(model, config, CpuBackend::new())?;
        Self::from_cpu(&cpu, ctx)
    }

    /// A run continuing `cpu`'s: its policies, Adam state, observation
    /// statistics, KL coefficients and counters — and, when `cpu` holds a
    /// GPU run's device state of the same size (a GPU checkpoint), its
    /// envs, action streams and counters, so that the run continues
    /// exactly (on the same device). Otherwise the episodes and random
    /// streams start afresh.
    ///
    /// # Errors
    /// As [`GpuTrainer::new`].
    pub fn from_cpu(cpu: &Trainer<CpuBackend>, ctx: GpuContext) -> Result<Self, TrainError> {
        let config = cpu.config().clone();
        let model = cpu.model().clone();
        let gpu = |e: GpuError| TrainError::Gpu(e);
        let (n, s) = (model.num_agents(), model.max_steps());
        let episodes = (4 * config.num_envs)
            .max(256)
            .min((POOL_BYTES / (4 * n * s)).max(1));
        let pool = TracePool::generate(&model, episodes, pool_seed(config.seed, 0)).map_err(gpu)?;
        let mut env = GpuBatchEnv::new(&ctx, &model, config.num_envs, &pool).map_err(gpu)?;
        // Episode 1 reads the other half: its own episodes from the start.
        let second =
            TracePool::generate(&model, episodes, pool_seed(config.seed, 1)).map_err(gpu)?;
        env.refresh_pool(&ctx, 1, &second).map_err(gpu)?;
        if config.team_reward != 0.0 && model.built().topology().components().iter().any(|&c| c > 0)
        {
            return Err(TrainError::Config(PpoConfigError::Invalid {
                field: "team_reward",
                value: config.team_reward.to_string(),
                rule: "the GPU trainer mixes one team reward over all agents: with a union of federations, use 0 or train on the CPU",
            }));
        }
        if config.local_bias != 0.0 {
            return Err(TrainError::Config(PpoConfigError::Invalid {
                field: "local_bias",
                value: config.local_bias.to_string(),
                rule: "the GPU trainer's kernels have no local bias yet: use 0 or train on the CPU",
            }));
        }
        let (layout, members) = match config.layout {
            Layout::Independent => (PolicyLayout::Independent, 1),
            Layout::Shared => (PolicyLayout::Shared, n),
            Layout::Mappo => (PolicyLayout::Mappo, 1),
            Layout::Agnostic => {
                return Err(TrainError::Config(PpoConfigError::Invalid {
                    field: "layout",
                    value: "agnostic".into(),
                    rule: "the GPU trainer has no kernels for the agnostic layout yet: train it on the CPU (--backend cpu)",
                }));
            }
        };
        let plan = Plan::new(&config, config.num_envs * config.rollout_steps * members);
        let settings = GpuPpoSettings {
            layout,
            hidden: config.hidden.clone(),
            activation: match config.activation {
                Activation::Tanh => GpuActivation::Tanh,
                Activation::Relu => GpuActivation::Relu,
            },
            rollout_steps: config.rollout_steps,
            minibatch_rows: plan.minibatch_rows,
            minibatches: plan.minibatches,
            epochs: config.epochs,
            gamma: config.gamma,
            lambda: config.lambda,
            loss: LossSettings {
                clip: config.clip,
                value_coeff: config.value_coeff,
                value_clip: config.value_clip,
                entropy_coeff: config.entropy_coeff,
                kl_coeff: config.kl_coeff,
            },
            max_grad_norm: config.max_grad_norm,
            adam: AdamSettings::new(config.learning_rate),
            normalize_observations: config.normalize_observations,
            team_reward: config.team_reward,
            seed: config.seed ^ 0x6770_755F_5EED,
        };
        let ppo = GpuPpo::new(&ctx, &env, &settings).map_err(gpu)?;
        let padded_mlp = |widths: &[usize]| {
            Mlp::new(widths, config.activation).map_err(|e| TrainError::Backend {
                policy: 0,
                source: e.into(),
            })
        };
        let padded = (
            padded_mlp(ppo.actor().widths())?,
            padded_mlp(ppo.critic().widths())?,
        );
        let shapes = cpu
            .policies()
            .iter()
            .map(|p| (p.actor.clone(), p.critic.clone()))
            .collect();
        let state = cpu.state();
        let schedule = cpu.schedule().clone();
        let mut trainer = Self {
            model,
            engine: GpuEngine::new(ctx, env, ppo),
            plan,
            env_steps_at_reset: schedule.env_steps,
            schedule,
            shapes,
            padded,
            pool_episodes: episodes,
            pool_ready: 1,
            refreshed_bytes: 0,
            config,
        };
        trainer.upload(cpu.policies(), &state.norms).map_err(gpu)?;
        if let Some(device) = state
            .gpu
            .as_ref()
            .filter(|d| d.num_envs == trainer.config.num_envs)
        {
            trainer.restore_device(device)?;
        }
        Ok(trainer)
    }

    /// Writes a GPU run's device state: envs, streams, clock, and the
    /// trace-pool halves its episodes read (regenerated from their seeds).
    fn restore_device(&mut self, device: &GpuRunState) -> Result<(), TrainError> {
        let gpu = |e: GpuError| TrainError::Gpu(e);
        let floats = |bits: &[u32]| bits.iter().map(|&b| f32::from_bits(b)).collect();
        let env_state = GpuEnvState {
            steps: device.steps.clone(),
            episodes: device.episodes.clone(),
            dones: device.dones.clone(),
            observations: floats(&device.observation_bits),
            rewards: floats(&device.reward_bits),
            splits: device.splits.clone(),
            rejects: device.rejects.clone(),
        };
        let GpuEngine { ctx, env, ppo } = &mut self.engine;
        env.restore(ctx, &env_state).map_err(gpu)?;
        ppo.streams().write(ctx, &device.streams).map_err(gpu)?;
        ppo.clock().write(ctx, &device.clock).map_err(gpu)?;
        // Each half holds the latest refreshed episode of its parity (the
        // first pool for episodes 0 and 1).
        let ready = device.pool_ready;
        for episode in [ready.saturating_sub(1), ready] {
            if episode >= 2 {
                let seed = pool_seed(self.config.seed, episode);
                let pool =
                    TracePool::generate(&self.model, self.pool_episodes, seed).map_err(gpu)?;
                env.refresh_pool(ctx, episode, &pool).map_err(gpu)?;
            }
        }
        let num_envs = self.config.num_envs as u64;
        self.env_steps_at_reset = self
            .schedule
            .env_steps
            .saturating_sub(device.steps_done.saturating_mul(num_envs));
        self.pool_ready = ready;
        Ok(())
    }

    /// Writes the CPU policies (padded into the grouped layout), their Adam
    /// state, the observation statistics and the iteration into the engine.
    fn upload(&self, policies: &[CpuPolicy], norms: &[RunningNorm]) -> Result<(), GpuError> {
        let (ctx, ppo) = (&self.engine.ctx, &self.engine.ppo);
        let (actor, critic) = &self.padded;
        let grouped = |part: fn(&CpuPolicy) -> (&Mlp, &[f32]), big: &Mlp| -> Vec<f32> {
            policies
                .iter()
                .flat_map(|p| {
                    let (small, values) = part(p);
                    pad(small, values, big)
                })
                .collect()
        };
        let actor_params = grouped(|p| (&p.actor, &p.actor_params), actor);
        let critic_params = grouped(|p| (&p.critic, &p.critic_params), critic);
        ppo.write_parameters(ctx, &actor_params, &critic_params)?;
        let (actor_adam, critic_adam) = ppo.optimisers();
        actor_adam
            .m()
            .write(ctx, &grouped(|p| (&p.actor, &p.actor_adam.m), actor))?;
        actor_adam
            .v()
            .write(ctx, &grouped(|p| (&p.actor, &p.actor_adam.v), actor))?;
        critic_adam
            .m()
            .write(ctx, &grouped(|p| (&p.critic, &p.critic_adam.m), critic))?;
        critic_adam
            .v()
            .write(ctx, &grouped(|p| (&p.critic, &p.critic_adam.v), critic))?;
        let steps = |t: u64| u32::try_from(t).unwrap_or(u32::MAX);
        actor_adam.set_steps(ctx, steps(policies[0].actor_adam.t))?;
        critic_adam.set_steps(ctx, steps(policies[0].critic_adam.t))?;
        let d = ppo.input_width();
        let mut stats = vec![0f32; norms.len() * d * 3];
        for (a, norm) in norms.iter().enumerate() {
            let (count, mean, m2) = norm.parts();
            for f in 0..mean.len() {
                let at = (a * d + f) * 3;
                stats[at] = count as f32;
                stats[at + 1] = mean[f] as f32;
                stats[at + 2] = m2[f] as f32;
            }
        }
        ppo.observation_statistics().write(ctx, &stats)?;
        ppo.clock()
            .write(ctx, &[0, 0, 0, self.schedule.iteration as u32])
    }

    /// One iteration on the device ([`crate::engine::iterate`] on the
    /// [`GpuEngine`], with the CPU trainer's schedule); the metrics as the
    /// CPU trainer's.
    ///
    /// # Errors
    /// [`TrainError::CounterOverflow`]; [`TrainError::Gpu`];
    /// [`TrainError::NonFinite`] when a loss or gradient became NaN or
    /// infinite (the parameters are then not to be trusted).
    pub fn train_iteration(&mut self) -> Result<IterationMetrics, TrainError> {
        self.refresh_pool()?;
        train_iteration(
            &mut self.engine,
            &self.config,
            &self.plan,
            &mut self.schedule,
            self.model.num_agents(),
        )
    }

    /// Steps each env took since this trainer reset them.
    fn steps_done(&self) -> u64 {
        (self.schedule.env_steps - self.env_steps_at_reset) / self.config.num_envs as u64
    }

    /// Before an iteration: when the envs play episode `j`, the pool half
    /// of episode `j + 1` gets fresh episodes from the model's generator
    /// (seeded per episode), so no pool is replayed for more than one
    /// episode of every env. Not when a rollout is longer than an episode
    /// (it would reach the half it refreshes): the pool is then replayed.
    fn refresh_pool(&mut self) -> Result<(), TrainError> {
        let steps = self.model.max_steps() as u64;
        if self.config.rollout_steps as u64 > steps {
            return Ok(());
        }
        let next = self.steps_done() / steps + 1;
        if next > self.pool_ready {
            let gpu = |e: GpuError| TrainError::Gpu(e);
            let seed = pool_seed(self.config.seed, next);
            let pool = TracePool::generate(&self.model, self.pool_episodes, seed).map_err(gpu)?;
            let GpuEngine { ctx, env, .. } = &mut self.engine;
            self.refreshed_bytes += env.refresh_pool(ctx, next, &pool).map_err(gpu)?;
            self.pool_ready = next;
        }
        Ok(())
    }

    /// Bytes of trace-pool refreshes uploaded so far (part of
    /// [`GpuTrainer::traffic`]'s uploads): one pool half, `episodes ×
    /// agents × max_steps × 4` bytes, per episode of the envs.
    #[must_use]
    pub fn refreshed_bytes(&self) -> u64 {
        self.refreshed_bytes
    }

    /// A CPU trainer holding this run's policies, Adam state, observation
    /// statistics, KL coefficients and counters (its environments freshly
    /// reset): for checkpoints ([`crate::checkpoint::save`]) and evaluation.
    ///
    /// # Errors
    /// [`TrainError::Gpu`] when the read-back fails; as [`Trainer::new`].
    pub fn to_cpu(&self) -> Result<Trainer<CpuBackend>, TrainError> {
        let gpu = |e: GpuError| TrainError::Gpu(e);
        let (ctx, ppo) = (&self.engine.ctx, &self.engine.ppo);
        let (actor_adam, critic_adam) = ppo.optimisers();
        let read = |v: &dfaas_gpu::nn::DeviceVec<f32>| v.read(ctx).map_err(gpu);
        let actor = read(ppo.actor().params())?;
        let critic = read(ppo.critic().params())?;
        let (actor_m, actor_v) = (read(actor_adam.m())?, read(actor_adam.v())?);
        let (critic_m, critic_v) = (read(critic_adam.m())?, read(critic_adam.v())?);
        let actor_steps = u64::from(actor_adam.steps(ctx).map_err(gpu)?);
        let critic_steps = u64::from(critic_adam.steps(ctx).map_err(gpu)?);
        let stats = read(ppo.observation_statistics())?;
        let (big_actor, big_critic) = &self.padded;
        let (pa, pc) = (big_actor.num_params(), big_critic.num_params());
        let lr = self.config.learning_rate;
        let adam = |small: &Mlp, big: &Mlp, m: &[f32], v: &[f32], t: u64| Adam {
            m: unpad(small, big, m),
            v: unpad(small, big, v),
            t,
            ..Adam::new(0, lr)
        };
        let mut cpu = Trainer::new(self.model.clone(), self.config.clone(), CpuBackend::new())?;
        let specs: Vec<_> = cpu.policies().iter().map(|p| p.spec.clone()).collect();
        let policies = self
            .shapes
            .iter()
            .zip(specs)
            .enumerate()
            .map(|(a, ((small_actor, small_critic), spec))| {
                let (ra, rc) = (a * pa..(a + 1) * pa, a * pc..(a + 1) * pc);
                CpuPolicy {
                    spec,
                    actor_params: unpad(small_actor, big_actor, &actor[ra.clone()]),
                    critic_params: unpad(small_critic, big_critic, &critic[rc.clone()]),
                    actor_adam: adam(
                        small_actor,
                        big_actor,
                        &actor_m[ra.clone()],
                        &actor_v[ra],
                        actor_steps,
                    ),
                    critic_adam: adam(
                        small_critic,
                        big_critic,
                        &critic_m[rc.clone()],
                        &critic_v[rc],
                        critic_steps,
                    ),
                    actor: small_actor.clone(),
                    critic: small_critic.clone(),
                }
            })
            .collect();
        let d = ppo.input_width();
        let norms = self
            .shapes
            .iter()
            .enumerate()
            .map(|(a, (small_actor, _))| {
                let row = |f: usize, i: usize| f64::from(stats[(a * d + f) * 3 + i]);
                let dim = small_actor.input();
                RunningNorm::from_parts(
                    row(0, 0),
                    (0..dim).map(|f| row(f, 1)).collect(),
                    (0..dim).map(|f| row(f, 2)).collect(),
                )
            })
            .collect();
        let env = self.engine.env.state(ctx).map_err(gpu)?;
        let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect();
        let device = GpuRunState {
            num_envs: self.config.num_envs,
            steps: env.steps,
            episodes: env.episodes,
            dones: env.dones,
            observation_bits: bits(&env.observations),
            reward_bits: bits(&env.rewards),
            splits: env.splits,
            rejects: env.rejects,
            streams: ppo.streams().read(ctx).map_err(gpu)?,
            clock: ppo.clock().read(ctx).map_err(gpu)?,
            steps_done: self.steps_done(),
            pool_ready: self.pool_ready,
        };
        cpu.adopt(policies, norms, self.schedule.clone(), device);
        Ok(cpu)
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &PpoConfig {
        &self.config
    }

    /// The environment model.
    #[must_use]
    pub fn model(&self) -> &EnvModel {
        &self.model
    }

    /// Iterations done.
    #[must_use]
    pub fn iteration(&self) -> usize {
        self.schedule.iteration
    }

    /// The adapter in use, e.g. `NVIDIA H100 (Vulkan, DiscreteGpu)`.
    #[must_use]
    pub fn adapter(&self) -> String {
        self.engine.ctx.describe()
    }

    /// Submits, bytes uploaded and bytes read back so far.
    #[must_use]
    pub fn traffic(&self) -> Traffic {
        self.engine.ctx.traffic()
    }

    /// Bytes read back per iteration (the statistics buffer).
    #[must_use]
    pub fn stats_bytes(&self) -> u64 {
        self.engine.ppo.stats_bytes()
    }
}

/// The seed of the trace-pool episodes of the envs' `episode`-th episode.
fn pool_seed(seed: u64, episode: u64) -> u64 {
    dfaas_core::rng::env_master_seed(seed ^ 0x7261_6365_5F70_6F6F, episode)
}

/// `values` of network `small` placed into the layout of `big` (same
/// layers, each at least as wide): every weight and bias at its own
/// `(out, in)` position, zeros elsewhere.
fn pad(small: &Mlp, values: &[f32], big: &Mlp) -> Vec<f32> {
    let mut out = vec![0f32; big.num_params()];
    for (s, b) in small.tensors().iter().zip(big.tensors()) {
        let (rows, cols) = (s.1[0], s.1.get(1).copied().unwrap_or(1));
        let big_cols = b.1.get(1).copied().unwrap_or(1);
        for r in 0..rows {
            let (from, to) = (s.2 + r * cols, b.2 + r * big_cols);
            out[to..to + cols].copy_from_slice(&values[from..from + cols]);
        }
    }
    out
}

/// The inverse of [`pad`]: `small`'s values read from `big`'s layout.
fn unpad(small: &Mlp, big: &Mlp, values: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; small.num_params()];
    for (s, b) in small.tensors().iter().zip(big.tensors()) {
        let (rows, cols) = (s.1[0], s.1.get(1).copied().unwrap_or(1));
        let big_cols = b.1.get(1).copied().unwrap_or(1);
        for r in 0..rows {
            let (to, from) = (s.2 + r * cols, b.2 + r * big_cols);
            out[to..to + cols].copy_from_slice(&values[from..from + cols]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_keeps_every_weight_at_its_position_and_unpads_exactly() {
        let small = Mlp::new(&[4, 3, 2], Activation::Tanh).unwrap();
        let big = Mlp::new(&[6, 3, 5], Activation::Tanh).unwrap();
        let values: Vec<f32> = (0..small.num_params()).map(|i| i as f32 + 1.0).collect();
        let padded = pad(&small, &values, &big);
        // layer0.weight [3][4] in [3][6]: row 1, column 2 of the small one.
        assert_eq!(padded[6 + 2], values[4 + 2]);
        assert_eq!(padded[4], 0.0, "padded input column");
        // layer1.bias [2] after layer1.weight [5][3]: offset 3·6 + 3 + 15.
        assert_eq!(padded[18 + 3 + 15 + 1], values[12 + 3 + 6 + 1]);
        assert_eq!(unpad(&small, &big, &padded), values);
        assert_eq!(
            padded.iter().filter(|&&v| v != 0.0).count(),
            values.len(),
            "nothing else is written"
        );
    }
}

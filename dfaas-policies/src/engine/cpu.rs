//! [`CpuEngine`]: the operations of a PPO iteration on the CPU — a
//! [`BatchEnv`] stepped on the host and a [`Backend`]'s policies.
//!
//! Every operation runs when it is called, except the update's
//! ([`Engine::shuffle`], [`Engine::minibatch`]): those are queued per
//! policy and run at [`Engine::finish`], one rayon task per policy (on
//! the current pool, where large batches of envs step too),
//! each policy's queue in order on its own shuffle stream; statistics are
//! summed in policy order, so a seed gives the same results bit for bit
//! whatever the number of cores.

use super::{Engine, Plan, Summary};
use crate::backend::{Backend, LossCoefficients, Minibatch, PolicySpec, UpdateStats};
use crate::controller::Tally;
use crate::dirichlet;
use crate::error::{BackendError, TrainError};
use crate::gae;
use crate::gossip::Gossip;
use crate::ppo::{Layout, PpoConfig, RunningNorm};
use dfaas_core::reward::{team_mean, team_mixed};
use dfaas_core::rng::{Xoshiro128PlusPlus, below, seeded};
use dfaas_core::{BatchEnv, BatchMetrics, EnvModel};
use dfaas_infer::agnostic::{entry_rows, gossip_rows};

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
    /// Log-density of each action (computed at `bootstrap`).
    log_prob: Vec<f32>,
    /// The critic's values of the samples (computed at `bootstrap`).
    values: Vec<f32>,
    rewards: Vec<f32>,
    dones: Vec<f32>,
    /// The critic's values after the rollout, `[env][member]`.
    last_values: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
}

/// The connected components of a model's topology (one per federation of
/// a `union`): the team reward an agent mixes in is its own federation's
/// mean reward.
#[derive(Debug, Clone)]
struct Components {
    /// Component of each agent.
    of_agent: Vec<u32>,
    /// Agents of each component.
    sizes: Vec<u32>,
}

impl Components {
    fn of(model: &EnvModel) -> Self {
        let of_agent = model.built().topology().components();
        let mut sizes = vec![0; of_agent.iter().max().map_or(0, |&c| c as usize + 1)];
        for &c in &of_agent {
            sizes[c as usize] += 1;
        }
        Self { of_agent, sizes }
    }

    /// The mean reward of each component for one env's agent `rewards`
    /// (agent order; for one component exactly [`team_mean`]).
    fn means(&self, rewards: &[f32], out: &mut Vec<f32>) {
        out.clear();
        if self.sizes.len() == 1 {
            out.push(team_mean(rewards));
            return;
        }
        out.resize(self.sizes.len(), 0.0);
        for (&c, &r) in self.of_agent.iter().zip(rewards) {
            out[c as usize] += r;
        }
        for (mean, &size) in out.iter_mut().zip(&self.sizes) {
            *mean /= size as f32;
        }
    }
}

/// Each policy's input rows (`[policy]`, then `[row][width]` flat).
type PolicyRows = Vec<Vec<f32>>;

/// An update operation, queued until [`Engine::finish`].
#[derive(Debug, Clone, Copy)]
enum UpdateOp {
    Shuffle,
    Minibatch(usize),
}

/// The CPU's environments, policies and rollout storage.
pub struct CpuEngine<B: Backend> {
    config: PpoConfig,
    env: BatchEnv,
    backend: B,
    pub(crate) policies: Vec<B::Policy>,
    pub(crate) specs: Vec<PolicySpec>,
    /// Agents of each policy.
    pub(crate) members: Vec<Vec<usize>>,
    /// For each agent, its policy's outputs forming its Dirichlet, in the
    /// order `[local, forward_1..k, reject]`.
    pub(crate) entries: Vec<Vec<usize>>,
    pub(crate) norms: Vec<RunningNorm>,
    pub(crate) rng: Xoshiro128PlusPlus,
    /// Each node's gossip source, when the agnostic layout reads it.
    gossip: Option<Gossip>,
    pub(crate) shuffle_rngs: Vec<Xoshiro128PlusPlus>,
    metrics: BatchMetrics,
    /// Each agent's federation, whose mean reward is its team reward.
    components: Components,
    plan: Plan,
    // The iteration in progress.
    rollouts: Vec<Rollout>,
    tally: Tally,
    /// The envs' actions `[env][agent][action_width]`.
    actions: Vec<f32>,
    coefficients: Vec<LossCoefficients>,
    queue: Vec<UpdateOp>,
    /// Scratch of one policy's act: concentrations, one agent's
    /// concentrations over its entries.
    alpha: Vec<f32>,
    sub_alpha: Vec<f32>,
}

impl<B: Backend + Clone + Send + Sync> CpuEngine<B>
where
    B::Policy: Send + Sync,
{
    /// The engine of `model` with `config` on `backend`: policies
    /// initialised from their seeds, envs reset with `config.seed`.
    ///
    /// # Errors
    /// [`TrainError`]: a policy the backend cannot build, envs that cannot
    /// be built or reset.
    pub(crate) fn new(model: EnvModel, config: PpoConfig, backend: B) -> Result<Self, TrainError> {
        let n = model.num_agents();
        let (ow, width) = (model.obs_width(), model.action_width());
        let spec = |obs_dim: usize, critic_obs_dim: usize, action_dim: usize| PolicySpec {
            obs_dim,
            critic_obs_dim,
            action_dim,
            per_entry: config.layout == Layout::Agnostic,
            hidden: config.hidden.clone(),
            activation: config.activation,
            learning_rate: config.learning_rate,
            local_bias: config.local_bias,
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
                Layout::Shared | Layout::Agnostic => (
                    vec![if config.layout == Layout::Shared {
                        spec(ow + n, ow + n, width)
                    } else {
                        let row = config.row_width();
                        spec(width * row, row, width)
                    }],
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
        let samples = config.num_envs * config.rollout_steps * members[0].len();
        Ok(Self {
            norms: specs
                .iter()
                .map(|s| RunningNorm::new(s.actor_input()))
                .collect(),
            components: Components::of(&model),
            gossip: config.gossip.then(|| Gossip::new(&model)),
            rng: seeded(config.seed ^ 0x5EED),
            shuffle_rngs: (0..count as u64)
                .map(|a| seeded(config.seed ^ 0x5EED ^ ((a + 1) << 32)))
                .collect(),
            metrics: BatchMetrics::new(&model, config.num_envs),
            plan: Plan::new(&config, samples),
            tally: Tally::new(n),
            actions: vec![0f32; config.num_envs * n * width],
            rollouts: Vec::new(),
            coefficients: Vec::new(),
            queue: Vec::new(),
            alpha: Vec::new(),
            sub_alpha: Vec::new(),
            config,
            env,
            backend,
            policies,
            specs,
            members,
            entries,
        })
    }

    /// The iteration's plan.
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The environments.
    pub(crate) fn env(&self) -> &BatchEnv {
        &self.env
    }

    /// The environments, to restore.
    pub(crate) fn env_mut(&mut self) -> &mut BatchEnv {
        &mut self.env
    }

    /// The backend.
    pub(crate) fn backend(&self) -> &B {
        &self.backend
    }

    /// Concentrations `[rows][action_dim]` of policy `p` for its actor
    /// inputs (`alpha` resized to fit).
    pub(crate) fn concentrations(
        &mut self,
        p: usize,
        actor: &[f32],
        rows: usize,
        alpha: &mut Vec<f32>,
    ) -> Result<(), BackendError> {
        let k = self.specs[p].action_dim;
        alpha.resize(rows * k, 0.0);
        // Which outputs each row's Dirichlet uses (rows `[env][member]`):
        // a per-entry actor scores only those.
        let mask: Option<Vec<u8>> = self.specs[p].per_entry.then(|| {
            let members = &self.members[p];
            (0..rows)
                .flat_map(|row| {
                    let used = &self.entries[members[row % members.len()]];
                    (0..k).map(move |j| u8::from(used.contains(&j)))
                })
                .collect()
        });
        self.backend
            .concentrations(&self.policies[p], actor, rows, mask.as_deref(), alpha)
    }

    /// Actor and critic inputs of every policy for `observations`
    /// (`[env][agent][obs_width]`), rows `[env][member]`; normalised (and,
    /// with `learn`, the statistics updated first) when configured.
    ///
    /// In the agnostic layout a sample's input is its `action_width` entry
    /// rows (with gossip, [`gossip_rows`]), each agent's rows at its
    /// entries' positions and zeros in the others (masked out); the
    /// statistics are those of the real rows, and the critic's input is
    /// the (normalised) local row.
    ///
    /// # Errors
    /// [`BackendError::EntryRows`] when an observation does not fit the
    /// entry rows (not reachable with the env's observations).
    pub(crate) fn inputs(
        &mut self,
        observations: &[f32],
        learn: bool,
    ) -> Result<(PolicyRows, PolicyRows), BackendError> {
        let model = self.env.model();
        let (n, ow, width) = (model.num_agents(), model.obs_width(), model.action_width());
        let envs = observations.len() / (n * ow);
        let row = |e: usize, a: usize| &observations[(e * n + a) * ow..(e * n + a + 1) * ow];
        let mut actor: Vec<Vec<f32>> = Vec::with_capacity(self.members.len());
        // The agnostic layout's real entry rows, for the statistics, and
        // a node's gossip.
        let (mut real, mut told) = (Vec::new(), Vec::new());
        let entry_width = self.config.row_width();
        for (p, members) in self.members.iter().enumerate() {
            let mut rows = Vec::with_capacity(envs * members.len() * self.specs[p].obs_dim);
            for e in 0..envs {
                for &a in members {
                    let own = &row(e, a)[..2 + 2 * model.degree(a)];
                    match self.config.layout {
                        Layout::Shared => {
                            rows.extend_from_slice(row(e, a));
                            rows.extend((0..n).map(|b| f32::from(u8::from(a == b))));
                        }
                        Layout::Independent | Layout::Mappo => rows.extend_from_slice(own),
                        Layout::Agnostic => {
                            let start = real.len();
                            real.resize(start + self.entries[a].len() * entry_width, 0.0);
                            let written = match &self.gossip {
                                Some(gossip) => {
                                    let env = &observations[e * n * ow..(e + 1) * n * ow];
                                    gossip.write(model, env, a, &mut told);
                                    gossip_rows(own, &told, &mut real[start..])
                                }
                                None => entry_rows(own, &mut real[start..]),
                            };
                            written.map_err(BackendError::EntryRows)?;
                            let sample = rows.len();
                            rows.resize(sample + width * entry_width, 0.0);
                            for (entry, &j) in real[start..]
                                .chunks_exact(entry_width)
                                .zip(&self.entries[a])
                            {
                                rows[sample + j * entry_width..][..entry_width]
                                    .copy_from_slice(entry);
                            }
                        }
                    }
                }
            }
            if self.config.normalize_observations {
                if learn {
                    let seen = if self.config.layout == Layout::Agnostic {
                        &real
                    } else {
                        &rows
                    };
                    self.norms[p].update(seen);
                }
                self.norms[p].apply(&mut rows);
            }
            actor.push(rows);
        }
        let critic = match self.config.layout {
            Layout::Independent | Layout::Shared => actor.clone(),
            Layout::Agnostic => actor
                .iter()
                .map(|rows| {
                    rows.chunks_exact(width * entry_width)
                        .flat_map(|sample| sample[..entry_width].iter().copied())
                        .collect()
                })
                .collect(),
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
        Ok((actor, critic))
    }
}

impl<B: Backend + Clone + Send + Sync> Engine for CpuEngine<B>
where
    B::Policy: Send + Sync,
{
    fn begin(&mut self, entropy_coeff: f32, kl_coeffs: &[f32]) -> Result<(), TrainError> {
        self.coefficients = kl_coeffs
            .iter()
            .map(|&kl_coeff| self.config.loss_coefficients(entropy_coeff, kl_coeff))
            .collect();
        self.rollouts = vec![Rollout::default(); self.policies.len()];
        self.tally = Tally::new(self.env.model().num_agents());
        self.queue.clear();
        Ok(())
    }

    fn act(&mut self) -> Result<(), TrainError> {
        let (n, w) = (
            self.env.model().num_agents(),
            self.env.model().action_width(),
        );
        let envs = self.config.num_envs;
        let masked = matches!(self.config.layout, Layout::Shared | Layout::Agnostic);
        let observations = self.env.observations().to_vec();
        let (actor, critic) = self
            .inputs(&observations, true)
            .map_err(|source| TrainError::Backend { policy: 0, source })?;
        let (mut alpha, mut sub_alpha) = (
            std::mem::take(&mut self.alpha),
            std::mem::take(&mut self.sub_alpha),
        );
        let mut sample = [0f32; dirichlet::MAX_ENTRIES];
        for p in 0..self.policies.len() {
            let (rows, k) = (envs * self.members[p].len(), self.specs[p].action_dim);
            self.concentrations(p, &actor[p], rows, &mut alpha)
                .map_err(|source| TrainError::Backend { policy: p, source })?;
            let r = &mut self.rollouts[p];
            r.obs.extend_from_slice(&actor[p]);
            // The values of these inputs and the actions' log-densities come
            // at `bootstrap`, in parallel.
            r.critic_obs.extend_from_slice(&critic[p]);
            r.alpha.extend_from_slice(&alpha);
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
                    let env_row = &mut self.actions[(e * n + a) * w..(e * n + a + 1) * w];
                    env_row.fill(0.0);
                    env_row[..m].copy_from_slice(&sample[..m]);
                    let start = r.actions.len();
                    r.actions.resize(start + k, 0.0);
                    for (&j, &x) in used.iter().zip(&sample[..m]) {
                        r.actions[start + j] = x;
                    }
                    if masked {
                        r.mask.extend((0..k).map(|j| u8::from(used.contains(&j))));
                    }
                }
            }
        }
        (self.alpha, self.sub_alpha) = (alpha, sub_alpha);
        Ok(())
    }

    fn step(&mut self) -> Result<(), TrainError> {
        self.env
            .step_with_metrics(&self.actions, &mut self.metrics)
            .map_err(TrainError::Env)?;
        let model = self.env.model();
        self.tally.add(model, &self.metrics);
        let n = model.num_agents();
        let beta = self.config.team_reward;
        let mut teams = Vec::new();
        for e in 0..self.config.num_envs {
            let rewards = &self.env.rewards()[e * n..(e + 1) * n];
            self.components.means(rewards, &mut teams);
            let done = f32::from(u8::from(self.env.dones()[e]));
            for (r, members) in self.rollouts.iter_mut().zip(&self.members) {
                for &a in members {
                    let team = teams[self.components.of_agent[a] as usize];
                    r.rewards.push(team_mixed(rewards[a], team, beta));
                    r.dones.push(done);
                }
            }
        }
        Ok(())
    }

    fn bootstrap(&mut self) -> Result<(), TrainError> {
        let observations = self.env.observations().to_vec();
        let (_, last_inputs) = self
            .inputs(&observations, false)
            .map_err(|source| TrainError::Backend { policy: 0, source })?;
        // Each sample's log-density under the policy that drew it and the
        // critic's values of every sample and of the observations after the
        // rollout, in chunks of rows on the current pool, each on its own
        // backend (a value does not depend on its batch, so both equal
        // step-by-step ones bit for bit). The first error in policy order
        // is returned.
        let mut chunks: Vec<BootstrapChunk<'_, B::Policy>> = Vec::new();
        for (p, ((((r, policy), spec), members), last)) in self
            .rollouts
            .iter_mut()
            .zip(&self.policies)
            .zip(&self.specs)
            .zip(&self.members)
            .zip(&last_inputs)
            .enumerate()
        {
            let (k, width) = (spec.action_dim, spec.critic_obs_dim);
            let Rollout {
                critic_obs,
                alpha,
                actions,
                values,
                log_prob,
                last_values,
                ..
            } = r;
            let rows = alpha.len() / k;
            values.resize(rows, 0.0);
            log_prob.resize(rows, 0.0);
            last_values.resize(last.len() / width, 0.0);
            chunks.push(BootstrapChunk {
                policy: p,
                params: policy,
                critic_obs: last,
                values: last_values,
                densities: None,
            });
            let pieces = values
                .chunks_mut(BOOTSTRAP_ROWS)
                .zip(log_prob.chunks_mut(BOOTSTRAP_ROWS))
                .zip(critic_obs.chunks(BOOTSTRAP_ROWS * width))
                .zip(alpha.chunks(BOOTSTRAP_ROWS * k))
                .zip(actions.chunks(BOOTSTRAP_ROWS * k));
            for (c, ((((values, log_prob), critic_obs), alpha), actions)) in pieces.enumerate() {
                chunks.push(BootstrapChunk {
                    policy: p,
                    params: policy,
                    critic_obs,
                    values,
                    densities: Some(Densities {
                        first: c * BOOTSTRAP_ROWS,
                        members,
                        action_dim: k,
                        alpha,
                        actions,
                        log_prob,
                    }),
                });
            }
        }
        use rayon::prelude::*;
        let (entries, backend) = (&self.entries, &self.backend);
        let outcomes: Vec<(usize, Result<(), BackendError>)> = chunks
            .into_par_iter()
            .map(|chunk| (chunk.policy, chunk.run(&mut backend.clone(), entries)))
            .collect();
        for (policy, outcome) in outcomes {
            outcome.map_err(|source| TrainError::Backend { policy, source })?;
        }
        Ok(())
    }

    fn advantages(&mut self, standardise: bool) -> Result<(), TrainError> {
        let c = &self.config;
        for (p, r) in self.rollouts.iter_mut().enumerate() {
            let samples = gae::Samples {
                steps: c.rollout_steps,
                columns: r.last_values.len(),
                rewards: &r.rewards,
                values: &r.values,
                dones: &r.dones,
                last_values: &r.last_values,
            };
            let (mut advantages, returns) =
                gae::advantages(&samples, c.gamma, c.lambda).map_err(|e| TrainError::Backend {
                    policy: p,
                    source: e.into(),
                })?;
            if standardise {
                gae::standardise(&mut advantages);
            }
            r.advantages = advantages;
            r.returns = returns;
        }
        Ok(())
    }

    fn shuffle(&mut self, _epoch: usize) -> Result<(), TrainError> {
        self.queue.push(UpdateOp::Shuffle);
        Ok(())
    }

    fn minibatch(&mut self, index: usize) -> Result<(), TrainError> {
        self.queue.push(UpdateOp::Minibatch(index));
        Ok(())
    }

    fn finish(&mut self) -> Result<Summary, TrainError> {
        let policies = self.policies.len();
        let rows = self.plan.minibatch_rows;
        let queue = &self.queue;
        let mut jobs: Vec<PolicyUpdate<'_, B>> = self
            .policies
            .iter_mut()
            .zip(&mut self.shuffle_rngs)
            .zip(&self.rollouts)
            .zip(&self.specs)
            .zip(&self.coefficients)
            .map(
                |((((policy, rng), rollout), spec), coefficients)| PolicyUpdate {
                    policy,
                    rng,
                    rollout,
                    spec,
                    coefficients,
                    order: Vec::new(),
                    stats: Vec::new(),
                    last_epoch_kl: 0.0,
                    outcome: Ok(()),
                },
            )
            .collect();
        // One task per policy on the current rayon pool (the pool the envs
        // step in), each on its own backend.
        {
            use rayon::prelude::*;
            let backends: Vec<B> = (0..policies).map(|_| self.backend.clone()).collect();
            jobs.par_iter_mut()
                .zip(backends)
                .for_each(|(job, mut backend)| job.outcome = job.run(&mut backend, queue, rows));
        }
        let mut all: Vec<UpdateStats> = Vec::new();
        let mut last_epoch_kl = Vec::with_capacity(policies);
        for (p, job) in jobs.iter_mut().enumerate() {
            std::mem::replace(&mut job.outcome, Ok(()))
                .map_err(|source| TrainError::Backend { policy: p, source })?;
            all.extend_from_slice(&job.stats);
            last_epoch_kl.push(job.last_epoch_kl);
        }
        let mean = |field: fn(&UpdateStats) -> f32| {
            all.iter().map(|s| f64::from(field(s))).sum::<f64>() / (all.len().max(1) as f64)
        };
        let non_finite = all.iter().any(|s| {
            ![s.policy_loss, s.value_loss, s.entropy, s.kl, s.grad_norm]
                .iter()
                .all(|v| v.is_finite())
        });
        Ok(Summary {
            env_steps: self.tally.steps(),
            reward_sums: self.tally.reward_sums().to_vec(),
            input: self.tally.input().to_vec(),
            rejected: self.tally.rejected().to_vec(),
            policy_loss: mean(|s| s.policy_loss),
            value_loss: mean(|s| s.value_loss),
            entropy: mean(|s| s.entropy),
            kl: mean(|s| s.kl),
            clip_fraction: mean(|s| s.clip_fraction),
            last_epoch_kl,
            non_finite,
        })
    }
}

/// One policy's share of an update: its parameters, stream and samples.
struct PolicyUpdate<'a, B: Backend> {
    policy: &'a mut B::Policy,
    rng: &'a mut Xoshiro128PlusPlus,
    rollout: &'a Rollout,
    spec: &'a PolicySpec,
    coefficients: &'a LossCoefficients,
    /// The current epoch's permutation of the samples.
    order: Vec<usize>,
    stats: Vec<UpdateStats>,
    /// Mean KL over the last epoch's updates.
    last_epoch_kl: f64,
    /// The first backend error of [`PolicyUpdate::run`], if any.
    outcome: Result<(), BackendError>,
}

impl<B: Backend> PolicyUpdate<'_, B> {
    /// The queued operations in order, on minibatches of `rows` samples.
    fn run(
        &mut self,
        backend: &mut B,
        queue: &[UpdateOp],
        rows: usize,
    ) -> Result<(), BackendError> {
        let (mut epoch_kl, mut updates) = (0.0, 0u32);
        for op in queue {
            match *op {
                UpdateOp::Shuffle => {
                    self.order = permutation(self.rng, self.rollout.advantages.len());
                    (epoch_kl, updates) = (0.0, 0);
                }
                UpdateOp::Minibatch(index) => {
                    let stats = self.step(backend, index, rows)?;
                    epoch_kl += f64::from(stats.kl);
                    updates += 1;
                    self.stats.push(stats);
                }
            }
        }
        self.last_epoch_kl = epoch_kl / f64::from(updates.max(1));
        Ok(())
    }

    /// One gradient step on minibatch `index` (`rows` samples) of the
    /// current permutation.
    fn step(
        &mut self,
        backend: &mut B,
        index: usize,
        rows: usize,
    ) -> Result<UpdateStats, BackendError> {
        let (d, k) = (self.spec.obs_dim, self.spec.action_dim);
        let r = self.rollout;
        let indices = &self.order[index * rows..(index + 1) * rows];
        let gather = |source: &[f32], width: usize| gather_rows(source, width, indices);
        let mask = gather_rows(&r.mask, if r.mask.is_empty() { 0 } else { k }, indices);
        let minibatch = Minibatch {
            size: indices.len(),
            obs: &gather(&r.obs, d),
            critic_obs: &gather(&r.critic_obs, self.spec.critic_obs_dim),
            actions: &gather(&r.actions, k),
            old_alpha: &gather(&r.alpha, k),
            old_log_prob: &gather(&r.log_prob, 1),
            advantages: &gather(&r.advantages, 1),
            returns: &gather(&r.returns, 1),
            mask: (!r.mask.is_empty()).then_some(&mask[..]),
        };
        backend.update(self.policy, &minibatch, self.coefficients)
    }
}

/// Rows of [`Engine::bootstrap`] [`CpuEngine`] computes together.
const BOOTSTRAP_ROWS: usize = 1024;

/// One chunk of [`Engine::bootstrap`]: the critic's values of some rows
/// of one policy, and the log-densities of their actions.
struct BootstrapChunk<'a, P> {
    policy: usize,
    params: &'a P,
    critic_obs: &'a [f32],
    values: &'a mut [f32],
    /// None for the observations after the rollout (no actions).
    densities: Option<Densities<'a>>,
}

/// Samples whose actions' log-densities a [`BootstrapChunk`] computes.
struct Densities<'a> {
    /// Index of the chunk's first sample in the rollout (rows
    /// `[step][env][member]`).
    first: usize,
    /// The policy's agents.
    members: &'a [usize],
    /// The width of the concentrations' and actions' rows.
    action_dim: usize,
    alpha: &'a [f32],
    actions: &'a [f32],
    log_prob: &'a mut [f32],
}

impl<P> BootstrapChunk<'_, P> {
    /// Computes the chunk on `backend`; `entries` are each agent's.
    fn run<B: Backend<Policy = P>>(
        self,
        backend: &mut B,
        entries: &[Vec<usize>],
    ) -> Result<(), BackendError> {
        if let Some(d) = self.densities {
            let k = d.action_dim;
            let (mut alpha, mut x) = (Vec::new(), Vec::new());
            let mut grad = [0f32; dirichlet::MAX_ENTRIES];
            let rows = d.alpha.chunks_exact(k).zip(d.actions.chunks_exact(k));
            for (i, ((row_alpha, action), log_prob)) in rows.zip(d.log_prob.iter_mut()).enumerate()
            {
                let used = &entries[d.members[(d.first + i) % d.members.len()]];
                alpha.clear();
                alpha.extend(used.iter().map(|&j| row_alpha[j]));
                x.clear();
                x.extend(used.iter().map(|&j| action[j]));
                *log_prob = dirichlet::log_prob(&alpha, &x, &mut grad[..used.len()]);
            }
        }
        let rows = self.values.len();
        backend.values(self.params, self.critic_obs, rows, self.values)
    }
}

/// Rows `indices` of `source` (`[row][width]`), in that order. Rows of at
/// most [`GATHER_BLOCK`] values are first copied as whole blocks where the
/// source has one (a block's tail lands in the next rows' places, which
/// are written after it), then the others exactly: fixed-size moves
/// instead of a copy call per row, as a minibatch gathers thousands of
/// short rows.
fn gather_rows<T: Copy + Default>(source: &[T], width: usize, indices: &[usize]) -> Vec<T> {
    let len = indices.len() * width;
    let mut rows = vec![T::default(); len + GATHER_BLOCK];
    let blocked = |i: usize| width <= GATHER_BLOCK && i * width + GATHER_BLOCK <= source.len();
    for (j, &i) in indices.iter().enumerate() {
        if blocked(i) {
            let block = &source[i * width..][..GATHER_BLOCK];
            rows[j * width..][..GATHER_BLOCK].copy_from_slice(block);
        }
    }
    for (j, &i) in indices.iter().enumerate() {
        if !blocked(i) {
            rows[j * width..][..width].copy_from_slice(&source[i * width..][..width]);
        }
    }
    rows.truncate(len);
    rows
}

/// The block [`gather_rows`] copies short rows in.
const GATHER_BLOCK: usize = 8;

/// A uniform random permutation of `0..n` (Fisher–Yates on `rng`).
fn permutation(rng: &mut Xoshiro128PlusPlus, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, below(rng, (i + 1) as u32) as usize);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Team rewards of a union: each agent's federation's mean, by hand;
    /// one federation: exactly [`team_mean`].
    #[test]
    fn gathered_rows_are_the_rows_in_order() {
        let mut rng = dfaas_core::rng::seeded(4);
        for width in 0..=11 {
            for rows in [0, 1, 3, 40] {
                let source: Vec<f32> = (0..rows * width).map(|v| v as f32 + 0.5).collect();
                // Repeats, the last row (no whole block after it) and any order.
                let indices: Vec<usize> = if rows == 0 {
                    Vec::new()
                } else {
                    (0..2 * rows)
                        .map(|j| {
                            if j % 5 == 0 {
                                rows - 1
                            } else {
                                below(&mut rng, rows as u32) as usize
                            }
                        })
                        .collect()
                };
                let want: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| source[i * width..(i + 1) * width].to_vec())
                    .collect();
                assert_eq!(
                    gather_rows(&source, width, &indices),
                    want,
                    "width {width}, {rows} rows"
                );
            }
        }
    }

    #[test]
    fn team_means_are_per_federation() {
        let config = dfaas_core::EnvConfig::with_network(&["a b", "c d", "d e", "f"]);
        let model = EnvModel::new(&config.build().unwrap()).unwrap();
        let components = Components::of(&model);
        assert_eq!(components.of_agent, [0, 0, 1, 1, 1, 2]);
        let mut means = Vec::new();
        components.means(&[1.0, 0.5, 0.25, 0.5, 0.75, -1.0], &mut means);
        assert_eq!(means, [0.75, 0.5, -1.0]);
        let one = dfaas_core::EnvConfig::with_network(&["a b c", "b c"]);
        let model = EnvModel::new(&one.build().unwrap()).unwrap();
        let rewards = [0.1, 0.7, 0.3];
        Components::of(&model).means(&rewards, &mut means);
        assert_eq!(means, [team_mean(&rewards)]);
    }
}

//! [`GpuPpo`]: one PPO iteration of multi-agent policies (any
//! [`PolicyLayout`]) as one command buffer on the device — the rollout on a [`GpuBatchEnv`] (running
//! observation statistics, actor and critic forward, Dirichlet draws
//! written straight into the env's action buffer, team-reward mixing and
//! the rollout's tallies), GAE with per-policy standardisation, then
//! `epochs × minibatches` updates (gather by an on-device permutation,
//! forward, Dirichlet terms, loss, backward, global-norm clipping, Adam).
//! Each operation ([`GpuPpo::begin`], [`GpuPpo::act`], [`GpuPpo::step`],
//! [`GpuPpo::bootstrap`], [`GpuPpo::advantages`], [`GpuPpo::minibatch`],
//! [`GpuPpo::finish`]) records its commands into the iteration's one
//! compute pass; `finish` submits it and reads back one statistics buffer
//! ([`GpuPpo::stats_bytes`]). The host uploads only the entropy and KL
//! weights. The order of the operations and the PPO schedule (entropy
//! decay, KL adaptation, counters) are the caller's: `dfaas_policies`'
//! engine writes them once for the CPU and the GPU.
//!
//! Policies: P actor–critic pairs run as one grouped network of padded
//! widths (an agent's unused inputs are 0 and its unused outputs masked, so
//! padding changes nothing) — with [`PolicyLayout::Independent`] one per
//! agent; [`PolicyLayout::Shared`] one for all, its input the observation
//! and a one-hot agent id, each agent's Dirichlet over its own entries (the
//! first `k + 1` outputs and the last); [`PolicyLayout::Mappo`] one per
//! agent whose critic sees every agent's (normalised) own features.
//! Minibatch rows per policy: `minibatch_rows`; per epoch `minibatches` of
//! them from a fresh permutation of each policy's `T × E × agents per
//! policy` samples (samples past `minibatches × minibatch_rows` sit that
//! epoch out).

use crate::batch_env::GpuBatchEnv;
use crate::nn::adam::{AdamSettings, GpuAdam};
use crate::nn::clip::GlobalNormClip;
use crate::nn::dirichlet::{Concentrations, DirichletKernel};
use crate::nn::gae::Gae;
use crate::nn::loss::{LossBuffers, LossSettings, PpoLoss};
use crate::nn::mlp::{Activation, GroupedMlp};
use crate::nn::sampler::DirichletSampler;
use crate::nn::{DeviceVec, bind_at, linear_grid, pipeline, uniform, word};
use crate::{GpuContext, GpuError};

/// Words per agent of the rollout tally: reward sum (f32 bits), input
/// requests and rejected requests (u64 each, low word first).
const TALLY: usize = 5;
/// Sums of the updates before the per-policy KL sums: policy loss, value
/// loss, entropy, KL, clip fraction, grad norm, updates, non-finite flag.
const ACC: usize = 8;
/// Words of the device clock: step, minibatch, epoch, iteration.
const CLOCK: usize = 4;

/// Which agents share which networks (`dfaas_policies::ppo::Layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyLayout {
    /// One actor and critic per agent, each seeing the agent's own
    /// observation.
    #[default]
    Independent,
    /// One actor and critic for all agents, seeing the observation row and
    /// a one-hot agent id.
    Shared,
    /// One actor per agent on its own observation; its critic sees every
    /// agent's own features, in agent order.
    Mappo,
}

/// The settings of a [`GpuPpo`] (those of `dfaas_policies::PpoConfig` the
/// device uses).
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPpoSettings {
    /// Which agents share which networks.
    pub layout: PolicyLayout,
    /// Hidden widths of actor and critic.
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Steps per env per iteration (T).
    pub rollout_steps: usize,
    /// Samples per policy in a minibatch (R).
    pub minibatch_rows: usize,
    /// Minibatches per epoch.
    pub minibatches: usize,
    /// Passes over the rollout per iteration.
    pub epochs: usize,
    /// Discount γ.
    pub gamma: f32,
    /// GAE λ.
    pub lambda: f32,
    /// The loss's coefficients (entropy and KL weights are set per
    /// iteration by [`GpuPpo::begin`]).
    pub loss: LossSettings,
    /// Global gradient-norm cap per policy; `None`: none.
    pub max_grad_norm: Option<f32>,
    /// Adam's settings.
    pub adam: AdamSettings,
    /// Running mean/variance normalisation of the observations.
    pub normalize_observations: bool,
    /// Team-reward weight β in [0, 1].
    pub team_reward: f32,
    /// Seed of the action streams and the minibatch permutations.
    pub seed: u64,
}

/// Uniform parameters, mirrored field for field in `rollout.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    envs: u32,
    agents: u32,
    obs_width: u32,
    width: u32,
    steps: u32,
    rows: u32,
    minibatches: u32,
    epochs: u32,
    normalize: u32,
    seed_lo: u32,
    seed_hi: u32,
    half_bits: u32,
    beta: f32,
    policies: u32,
    members: u32,
    policy_layout: u32,
    in_width: u32,
    critic_width: u32,
    _pad: [u32; 3],
}

/// One glue entry point: pipeline, bind group, workgroups.
#[derive(Debug)]
struct Glue {
    pipeline: wgpu::ComputePipeline,
    group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

impl Glue {
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// The rollout storage of a [`GpuPpo`] (T steps, N agents, E envs, D the
/// actors' input width, W the action width; row `a·E + e` is agent a in
/// env e).
#[derive(Debug, Clone, Copy)]
pub struct Rollout<'a> {
    /// The actors' inputs `[T][N·E][D]` (normalised when asked; 0 on
    /// padded features).
    pub obs: &'a DeviceVec<f32>,
    /// The actions drawn `[T][N·E][W]`, in output positions (0 on an
    /// agent's unused entries).
    pub actions: &'a DeviceVec<f32>,
    /// Their concentrations `[T][N·E][W]`.
    pub alpha: &'a DeviceVec<f32>,
    /// Their log-densities `[T][N·E]`.
    pub log_prob: &'a DeviceVec<f32>,
    /// GAE's inputs (rewards after team mixing, dones, values, the
    /// bootstrap) and outputs (advantages, returns), `[T][N·E]`.
    pub targets: &'a Gae,
}

/// What one iteration measured, decoded from the statistics buffer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuIterationStats {
    /// Sum of each agent's env rewards over the rollout's env steps.
    pub reward_sums: Vec<f64>,
    /// Each agent's input requests over the rollout.
    pub input: Vec<u64>,
    /// Each agent's rejected requests (rejected in its split, at its node,
    /// at its neighbours) over the rollout.
    pub rejected: Vec<u64>,
    /// Means over the updates (each a mean over its rows, all policies).
    pub policy_loss: f64,
    /// Value loss (before its weight).
    pub value_loss: f64,
    /// Entropy of the new policies.
    pub entropy: f64,
    /// KL(old ‖ new).
    pub kl: f64,
    /// Share of samples whose ratio was clipped.
    pub clip_fraction: f64,
    /// Gradient norm before clipping (mean over the policies).
    pub grad_norm: f64,
    /// Each policy's mean KL over the last epoch's updates (for the KL
    /// adaptation), in policy order.
    pub last_epoch_kl: Vec<f64>,
    /// Updates run.
    pub updates: u32,
    /// Whether a loss statistic or a gradient norm was NaN or infinite.
    pub non_finite: bool,
}

/// The on-device PPO iteration for one [`GpuBatchEnv`]; usable only with
/// the context and env it was built for.
#[derive(Debug)]
pub struct GpuPpo {
    context: u64,
    agents: usize,
    policies: usize,
    in_width: usize,
    epochs: usize,
    minibatches: usize,
    normalize_observations: bool,
    actor_act: GroupedMlp,
    critic_act: GroupedMlp,
    actor_train: GroupedMlp,
    critic_train: GroupedMlp,
    act_alpha: Concentrations,
    sampler_alpha: Concentrations,
    sampler: DirichletSampler,
    act_dirichlet: DirichletKernel,
    gae: Gae,
    train_alpha: Concentrations,
    train_dirichlet: DirichletKernel,
    loss: PpoLoss,
    clip: GlobalNormClip,
    actor_adam: GpuAdam,
    critic_adam: GpuAdam,
    norm: DeviceVec<f32>,
    roll_obs: DeviceVec<f32>,
    roll_actions: DeviceVec<f32>,
    roll_alpha: DeviceVec<f32>,
    roll_logp: DeviceVec<f32>,
    clock: DeviceVec<u32>,
    out: DeviceVec<u32>,
    norm_update: Glue,
    observe: Glue,
    observe_last: Glue,
    store_actions: Glue,
    store_values: Glue,
    store_rewards: Glue,
    tally_step: Glue,
    tick_step: Glue,
    store_last: Glue,
    gather: Glue,
    accumulate: Glue,
    finish: Glue,
    steps: usize,
    /// The env's observation buffer: [`GpuPpo::step`] takes only that env.
    env_obs: wgpu::Buffer,
    recording: Option<Recording>,
}

/// Smallest h ≥ 1 with 4^h ≥ `n`: the half width of the permutation of `n`
/// samples.
#[must_use]
pub fn half_bits(n: u32) -> u32 {
    let mut h = 1;
    while h < 16 && (1u64 << (2 * h)) < u64::from(n) {
        h += 1;
    }
    h
}

/// lowbias32, as `mix` in `rollout.wgsl`.
fn mix(v: u32) -> u32 {
    let mut x = v;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Position `i` (< `n`) of the permutation of policy `policy`'s `n`
/// samples in epoch `epoch` of iteration `iteration` (the iteration counter
/// of the device clock) — the host mirror of `permuted` in `rollout.wgsl`:
/// a 4-round Feistel network on `2·half_bits(n)` bits, cycle-walking below
/// `n`.
#[must_use]
pub fn permuted(seed: u64, iteration: u32, epoch: u32, policy: u32, n: u32, i: u32) -> u32 {
    let h = half_bits(n);
    let mask = (1u32 << h) - 1;
    let base =
        mix(seed as u32 ^ mix((seed >> 32) as u32 ^ mix(iteration ^ mix(epoch ^ mix(policy)))));
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> h, x & mask);
        for round in 0..4 {
            let next = l ^ (mix(r ^ mix(base.wrapping_add(round))) & mask);
            l = r;
            r = next;
        }
        x = (l << h) | r;
        if x < n {
            return x;
        }
    }
}

impl GpuPpo {
    /// The iteration for `env` with `settings`; the networks start at zero
    /// parameters: write them with [`GpuPpo::write_parameters`].
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for an env of another context;
    /// [`GpuError::Input`] naming the setting when a size is 0, the
    /// minibatches ask for more samples than a rollout has, or a buffer
    /// exceeds the device.
    pub fn new(
        ctx: &GpuContext,
        env: &GpuBatchEnv,
        settings: &GpuPpoSettings,
    ) -> Result<Self, GpuError> {
        ctx.check(env.context())?;
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        let model = env.model();
        let (n, e) = (model.num_agents(), env.num_envs());
        let (o, w) = (model.obs_width(), model.action_width());
        let own = |a: usize| 2 + 2 * model.degree(a);
        // Policies, agents per policy, actor and critic input widths.
        let (g, members, d, c) = match settings.layout {
            PolicyLayout::Independent => (n, 1, o, o),
            PolicyLayout::Shared => (1, n, o + n, o + n),
            PolicyLayout::Mappo => (n, 1, o, (0..n).map(own).sum()),
        };
        let (t, r) = (settings.rollout_steps, settings.minibatch_rows);
        for (field, value) in [
            ("rollout_steps", t),
            ("minibatch_rows", r),
            ("minibatches", settings.minibatches),
            ("epochs", settings.epochs),
        ] {
            if value == 0 {
                return Err(input(field, "must be positive, got 0".into()));
            }
        }
        let samples = t
            .checked_mul(e)
            .and_then(|s| s.checked_mul(members))
            .filter(|&s| u32::try_from(s).is_ok())
            .ok_or_else(|| {
                input(
                    "rollout_steps",
                    format!(
                        "{t} steps × {e} envs × {members} agents per policy exceed 2^32 samples"
                    ),
                )
            })?;
        if settings.minibatches.saturating_mul(r) > samples {
            return Err(input(
                "minibatches",
                format!(
                    "{} minibatches of {r} rows need more than the rollout's {samples} samples per policy",
                    settings.minibatches
                ),
            ));
        }
        let actor_widths: Vec<usize> = std::iter::once(d)
            .chain(settings.hidden.iter().copied())
            .chain([w])
            .collect();
        let critic_widths: Vec<usize> = std::iter::once(c)
            .chain(settings.hidden.iter().copied())
            .chain([1])
            .collect();
        let act = settings.activation;
        let actor_act = GroupedMlp::new(ctx, &actor_widths, act, g, members * e)?;
        let critic_act = GroupedMlp::new(ctx, &critic_widths, act, g, members * e)?;
        let actor_train = GroupedMlp::new(ctx, &actor_widths, act, g, r)?;
        let critic_train = GroupedMlp::new(ctx, &critic_widths, act, g, r)?;

        let (rows, train_rows) = (n * e, g * r);
        let sampler = DirichletSampler::new(ctx, rows, w, settings.seed)?;
        let act_dirichlet = DirichletKernel::new(ctx, rows, w)?;
        // The training rows' entries follow their samples (`gather`).
        let train_dirichlet = DirichletKernel::new(ctx, train_rows, w)?;
        // Agent a's Dirichlet: its first 2 + degree outputs, or with the
        // shared layout its first 1 + degree and the last.
        let act_mask: Vec<u32> = (0..n)
            .flat_map(|a| {
                let k = model.degree(a);
                let shared = settings.layout == PolicyLayout::Shared;
                (0..e).flat_map(move |_| {
                    (0..w).map(move |j| {
                        u32::from(if shared {
                            j <= k || j == w - 1
                        } else {
                            j < k + 2
                        })
                    })
                })
            })
            .collect();
        sampler.mask().write(ctx, &act_mask)?;
        act_dirichlet.mask().write(ctx, &act_mask)?;
        let act_alpha = Concentrations::new(ctx, actor_act.output(), act_dirichlet.alpha())?;
        let sampler_alpha = Concentrations::new(ctx, actor_act.output(), sampler.alpha())?;
        let train_alpha = Concentrations::new(ctx, actor_train.output(), train_dirichlet.alpha())?;
        let gae = Gae::new(ctx, t, rows, settings.gamma, settings.lambda, g)?;
        let loss = PpoLoss::new(
            ctx,
            LossBuffers {
                logits: actor_train.output(),
                dirichlet: &train_dirichlet,
                d_logits: actor_train.d_output(),
                values: critic_train.output(),
                d_values: critic_train.d_output(),
            },
            settings.loss,
            g,
        )?;
        let clip = GlobalNormClip::new(
            ctx,
            &[actor_train.grads(), critic_train.grads()],
            g,
            settings.max_grad_norm,
        )?;
        let actor_adam = GpuAdam::new(
            ctx,
            actor_train.params(),
            actor_train.grads(),
            settings.adam,
        )?;
        let critic_adam = GpuAdam::new(
            ctx,
            critic_train.params(),
            critic_train.grads(),
            settings.adam,
        )?;

        let degrees: Vec<u32> = (0..n).map(|a| model.degree(a) as u32).collect();
        let degrees = DeviceVec::from_slice(ctx, "degrees", &degrees)?;
        let norm = DeviceVec::<f32>::zeros(ctx, "norm", g * d * 3)?;
        let roll_obs = DeviceVec::<f32>::zeros(ctx, "rollout.obs", checked(&[t, rows, d])?)?;
        let roll_actions =
            DeviceVec::<f32>::zeros(ctx, "rollout.actions", checked(&[t, rows, w])?)?;
        let roll_alpha = DeviceVec::<f32>::zeros(ctx, "rollout.alpha", checked(&[t, rows, w])?)?;
        let roll_logp = DeviceVec::<f32>::zeros(ctx, "rollout.log_prob", checked(&[t, rows])?)?;
        let clock = DeviceVec::<u32>::zeros(ctx, "clock", CLOCK)?;
        let tally = DeviceVec::<u32>::zeros(ctx, "tally", n * TALLY)?;
        let acc = DeviceVec::<f32>::zeros(ctx, "acc", ACC + g)?;
        let out = DeviceVec::<u32>::zeros(ctx, "stats", n * TALLY + ACC + g)?;

        let params = Params {
            envs: word("num_envs", e)?,
            agents: word("agents", n)?,
            obs_width: o as u32,
            width: w as u32,
            steps: word("rollout_steps", t)?,
            rows: word("minibatch_rows", r)?,
            minibatches: word("minibatches", settings.minibatches)?,
            epochs: word("epochs", settings.epochs)?,
            normalize: u32::from(settings.normalize_observations),
            seed_lo: settings.seed as u32,
            seed_hi: (settings.seed >> 32) as u32,
            half_bits: half_bits(samples as u32),
            beta: settings.team_reward,
            policies: g as u32,
            members: members as u32,
            policy_layout: match settings.layout {
                PolicyLayout::Independent => 0,
                PolicyLayout::Shared => 1,
                PolicyLayout::Mappo => 2,
            },
            in_width: d as u32,
            critic_width: c as u32,
            _pad: [0; 3],
        };
        let uniform = uniform(ctx, "ppo", &params);
        let source = include_str!("rollout.wgsl");
        let buffers = env.buffers();
        let glue = |entry: &str, bindings: &[(u32, &wgpu::Buffer)], workgroups: [u32; 3]| {
            let pipeline = pipeline(ctx, entry, source, entry);
            let mut all = vec![(0u32, &uniform)];
            all.extend_from_slice(bindings);
            let group = bind_at(ctx, entry, &pipeline, &all);
            Glue {
                pipeline,
                group,
                workgroups,
            }
        };
        let per_element = |field, len| linear_grid(ctx, field, len, 64);
        let observe_bindings = [
            (1, degrees.buffer()),
            (2, buffers.obs),
            (3, norm.buffer()),
            (4, actor_act.input().buffer()),
            (5, critic_act.input().buffer()),
            (6, roll_obs.buffer()),
            (7, clock.buffer()),
        ];
        let observe_grid = per_element("num_envs", rows * d.max(c))?;
        let norm_update = glue(
            "norm_update",
            &[(1, degrees.buffer()), (2, buffers.obs), (3, norm.buffer())],
            [word("num_envs", g * d)?, 1, 1],
        );
        let observe = glue("observe", &observe_bindings, observe_grid);
        // The same bindings: the rollout store is in its code, not taken.
        let observe_last = glue("observe_last", &observe_bindings, observe_grid);
        let store_actions = glue(
            "store_actions",
            &[
                (1, degrees.buffer()),
                (7, clock.buffer()),
                (8, sampler.samples().buffer()),
                (9, act_dirichlet.alpha().buffer()),
                (10, act_dirichlet.actions().buffer()),
                (11, buffers.actions),
                (12, roll_actions.buffer()),
                (13, roll_alpha.buffer()),
            ],
            per_element("num_envs", rows * w)?,
        );
        let row_grid = per_element("num_envs", rows)?;
        let store_values = glue(
            "store_values",
            &[
                (7, clock.buffer()),
                (14, act_dirichlet.values().buffer()),
                (15, critic_act.output().buffer()),
                (16, roll_logp.buffer()),
                (17, gae.values().buffer()),
            ],
            row_grid,
        );
        let store_rewards = glue(
            "store_rewards",
            &[
                (7, clock.buffer()),
                (18, buffers.rewards),
                (19, buffers.state),
                (20, gae.rewards().buffer()),
                (21, gae.dones().buffer()),
            ],
            row_grid,
        );
        let tally_step = glue(
            "tally_step",
            &[
                (1, degrees.buffer()),
                (18, buffers.rewards),
                (22, buffers.counts),
                (23, buffers.rejects),
                (24, tally.buffer()),
            ],
            [n as u32, 1, 1],
        );
        let tick_step = glue("tick_step", &[(7, clock.buffer())], [1, 1, 1]);
        let store_last = glue(
            "store_last",
            &[
                (15, critic_act.output().buffer()),
                (25, gae.last_values().buffer()),
            ],
            row_grid,
        );
        let gather = glue(
            "gather",
            &[
                (1, degrees.buffer()),
                (6, roll_obs.buffer()),
                (7, clock.buffer()),
                (12, roll_actions.buffer()),
                (13, roll_alpha.buffer()),
                (16, roll_logp.buffer()),
                (26, gae.advantages().buffer()),
                (27, gae.returns().buffer()),
                (28, actor_train.input().buffer()),
                (29, critic_train.input().buffer()),
                (30, train_dirichlet.actions().buffer()),
                (31, train_dirichlet.old_alpha().buffer()),
                (32, loss.old_log_prob().buffer()),
                (33, loss.advantages().buffer()),
                (34, loss.returns().buffer()),
                (40, train_dirichlet.mask().buffer()),
            ],
            per_element("minibatch_rows", train_rows)?,
        );
        let accumulate = glue(
            "accumulate",
            &[
                (7, clock.buffer()),
                (35, loss.stats().buffer()),
                (36, loss.group_kl().buffer()),
                (37, clip.norms().buffer()),
                (38, acc.buffer()),
            ],
            [1, 1, 1],
        );
        let finish = glue(
            "finish",
            &[
                (7, clock.buffer()),
                (24, tally.buffer()),
                (38, acc.buffer()),
                (39, out.buffer()),
            ],
            [1, 1, 1],
        );
        Ok(Self {
            context: ctx.id(),
            agents: n,
            policies: g,
            in_width: d,
            epochs: settings.epochs,
            minibatches: settings.minibatches,
            normalize_observations: settings.normalize_observations,
            actor_act,
            critic_act,
            actor_train,
            critic_train,
            act_alpha,
            sampler_alpha,
            sampler,
            act_dirichlet,
            gae,
            train_alpha,
            train_dirichlet,
            loss,
            clip,
            actor_adam,
            critic_adam,
            norm,
            roll_obs,
            roll_actions,
            roll_alpha,
            roll_logp,
            clock,
            out,
            norm_update,
            observe,
            observe_last,
            store_actions,
            store_values,
            store_rewards,
            tally_step,
            tick_step,
            store_last,
            gather,
            accumulate,
            finish,
            steps: t,
            env_obs: buffers.obs.clone(),
            recording: None,
        })
    }

    /// Policies (groups of the networks).
    #[must_use]
    pub fn policies(&self) -> usize {
        self.policies
    }

    /// Width of the actors' input (D).
    #[must_use]
    pub fn input_width(&self) -> usize {
        self.in_width
    }

    /// Steps of every env per iteration (T).
    #[must_use]
    pub fn rollout_steps(&self) -> usize {
        self.steps
    }

    /// Bytes of the statistics buffer, the one read back per iteration.
    #[must_use]
    pub fn stats_bytes(&self) -> u64 {
        (self.out.len() * 4) as u64
    }

    /// The actor network (grouped, padded widths) whose parameters
    /// `[policies][params]` the updates train.
    #[must_use]
    pub fn actor(&self) -> &GroupedMlp {
        &self.actor_train
    }

    /// The critic network (grouped, padded widths).
    #[must_use]
    pub fn critic(&self) -> &GroupedMlp {
        &self.critic_train
    }

    /// Adam of the actor and of the critic (moments and step counts).
    #[must_use]
    pub fn optimisers(&self) -> (&GpuAdam, &GpuAdam) {
        (&self.actor_adam, &self.critic_adam)
    }

    /// Observation statistics `[P][D][3]`: count, mean, M2 per policy and
    /// (padded) actor input.
    #[must_use]
    pub fn observation_statistics(&self) -> &DeviceVec<f32> {
        &self.norm
    }

    /// The last iteration's rollout, as stored on the device.
    #[must_use]
    pub fn rollout(&self) -> Rollout<'_> {
        Rollout {
            obs: &self.roll_obs,
            actions: &self.roll_actions,
            alpha: &self.roll_alpha,
            log_prob: &self.roll_logp,
            targets: &self.gae,
        }
    }

    /// The loss, holding the last minibatch's inputs
    /// ([`PpoLoss::old_log_prob`], [`PpoLoss::advantages`],
    /// [`PpoLoss::returns`], `[P][R]`).
    #[must_use]
    pub fn loss(&self) -> &PpoLoss {
        &self.loss
    }

    /// The last minibatch's Dirichlet entries `[P·R][W]`: 1 where the
    /// gathered sample's agent uses the output.
    #[must_use]
    pub fn minibatch_entries(&self) -> &DeviceVec<u32> {
        self.train_dirichlet.mask()
    }

    /// Each action row's Xoshiro128++ stream `[N·E][4]`.
    #[must_use]
    pub fn streams(&self) -> &DeviceVec<u32> {
        self.sampler.state()
    }

    /// The device clock `[step, minibatch, epoch, iteration]`; set the
    /// iteration word to continue a run's permutations.
    #[must_use]
    pub fn clock(&self) -> &DeviceVec<u32> {
        &self.clock
    }

    /// Writes the actor's and critic's parameters (`[policies][params]`
    /// each, the grouped layout) into the networks that act and those that train.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Input`] for wrong lengths.
    pub fn write_parameters(
        &self,
        ctx: &GpuContext,
        actor: &[f32],
        critic: &[f32],
    ) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        self.actor_train.params().write(ctx, actor)?;
        self.actor_act.params().write(ctx, actor)?;
        self.critic_train.params().write(ctx, critic)?;
        self.critic_act.params().write(ctx, critic)
    }

    /// Starts recording an iteration with entropy weight `entropy_coeff`
    /// and KL weights `kl_coeffs` (one per policy); the operations that
    /// follow — [`GpuPpo::act`] and [`GpuPpo::step`] `rollout_steps`
    /// times, [`GpuPpo::bootstrap`], [`GpuPpo::advantages`],
    /// `epochs × minibatches` of [`GpuPpo::minibatch`] — record into one
    /// command buffer that [`GpuPpo::finish`] submits. The order is the
    /// caller's (`dfaas_policies::engine` writes it once for every
    /// backend); the device checks only the counts its buffers are sized
    /// for. A `begin` during a recording drops the unsubmitted one.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Input`] for weights that
    /// are not finite or not one per policy.
    pub fn begin(
        &mut self,
        ctx: &GpuContext,
        entropy_coeff: f32,
        kl_coeffs: &[f32],
    ) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        self.loss.set_coefficients(ctx, entropy_coeff, kl_coeffs)?;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ppo") });
        let pass = encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("ppo"),
                timestamp_writes: None,
            })
            .forget_lifetime();
        self.recording = Some(Recording {
            encoder,
            pass,
            counts: Counts::default(),
        });
        Ok(())
    }

    /// Records acting on the envs' observations: the observation
    /// statistics merged with them (when normalising), the policies'
    /// inputs, actor and critic forward, a Dirichlet draw per agent
    /// written into the env's action buffer, and the sample stored
    /// (inputs, actions, concentrations, log-density, value).
    ///
    /// # Errors
    /// [`GpuError::Input`] (`field: "iteration"`) outside a recording or
    /// past `rollout_steps` acts; [`GpuError::ContextMismatch`].
    pub fn act(&mut self, ctx: &GpuContext) -> Result<(), GpuError> {
        self.record(
            ctx,
            "act",
            |ppo, c| {
                expect(c.acts == c.steps, "act", "follows the previous act's step")?;
                expect(c.acts < ppo.steps, "act", "is called rollout_steps times")?;
                c.acts += 1;
                Ok(())
            },
            |ppo, pass| {
                if ppo.normalize_observations {
                    ppo.norm_update.record(pass);
                }
                ppo.observe.record(pass);
                ppo.actor_act.encode_forward(ctx, pass)?;
                ppo.critic_act.encode_forward(ctx, pass)?;
                ppo.act_alpha.encode(ctx, pass)?;
                ppo.sampler_alpha.encode(ctx, pass)?;
                ppo.sampler.encode(ctx, pass)?;
                ppo.store_actions.record(pass);
                ppo.act_dirichlet.encode_log_density(ctx, pass)?;
                ppo.store_values.record(pass);
                Ok(())
            },
        )
    }

    /// Records one step of `env` with the actions drawn, the rewards (team
    /// mixed) and dones stored, the rollout's tallies and the step clock.
    ///
    /// # Errors
    /// [`GpuError::Input`] (`field: "iteration"`) unless it follows an
    /// [`GpuPpo::act`]; [`GpuError::ContextMismatch`] for another env.
    pub fn step(&mut self, ctx: &GpuContext, env: &GpuBatchEnv) -> Result<(), GpuError> {
        ctx.check(env.context())?;
        if *env.buffers().obs != self.env_obs {
            return Err(GpuError::Input {
                field: "env",
                reason: "not the env this iteration was built for".into(),
            });
        }
        self.record(
            ctx,
            "step",
            |_, c| {
                expect(c.steps + 1 == c.acts, "step", "follows an act")?;
                c.steps += 1;
                Ok(())
            },
            |ppo, pass| {
                env.record_step(pass);
                ppo.store_rewards.record(pass);
                ppo.tally_step.record(pass);
                ppo.tick_step.record(pass);
                Ok(())
            },
        )
    }

    /// Records the critic's values of the observations after the rollout
    /// (GAE's bootstrap).
    ///
    /// # Errors
    /// [`GpuError::Input`] (`field: "iteration"`) before the rollout's
    /// last step or a second time.
    pub fn bootstrap(&mut self, ctx: &GpuContext) -> Result<(), GpuError> {
        self.record(
            ctx,
            "bootstrap",
            |ppo, c| {
                expect(
                    c.steps == ppo.steps,
                    "bootstrap",
                    "follows rollout_steps steps",
                )?;
                expect(!c.bootstrapped, "bootstrap", "is called once")?;
                c.bootstrapped = true;
                Ok(())
            },
            |ppo, pass| {
                ppo.observe_last.record(pass);
                ppo.critic_act.encode_forward(ctx, pass)?;
                ppo.store_last.record(pass);
                Ok(())
            },
        )
    }

    /// Records GAE and, with `standardise`, the standardisation of each
    /// policy's advantages.
    ///
    /// # Errors
    /// [`GpuError::Input`] (`field: "iteration"`) unless it follows
    /// [`GpuPpo::bootstrap`], once.
    pub fn advantages(&mut self, ctx: &GpuContext, standardise: bool) -> Result<(), GpuError> {
        self.record(
            ctx,
            "advantages",
            |_, c| {
                expect(c.bootstrapped, "advantages", "follows bootstrap")?;
                expect(!c.advantaged, "advantages", "is called once")?;
                c.advantaged = true;
                Ok(())
            },
            |ppo, pass| ppo.gae.encode(ctx, pass, standardise),
        )
    }

    /// Records one update of every policy: gather the next minibatch of
    /// the epoch's permutation (a function of the device clock's
    /// iteration and epoch, which rolls after `minibatches`), forward,
    /// Dirichlet terms, loss, backward, global-norm clipping, Adam, and
    /// the update's statistics.
    ///
    /// # Errors
    /// [`GpuError::Input`] (`field: "iteration"`) before
    /// [`GpuPpo::advantages`] or past `epochs × minibatches` updates.
    pub fn minibatch(&mut self, ctx: &GpuContext) -> Result<(), GpuError> {
        self.record(
            ctx,
            "minibatch",
            |ppo, c| {
                expect(c.advantaged, "minibatch", "follows advantages")?;
                expect(
                    c.updates < ppo.epochs * ppo.minibatches,
                    "minibatch",
                    "is called epochs × minibatches times",
                )?;
                c.updates += 1;
                Ok(())
            },
            |ppo, pass| {
                ppo.gather.record(pass);
                ppo.actor_train.encode_forward(ctx, pass)?;
                ppo.critic_train.encode_forward(ctx, pass)?;
                ppo.train_alpha.encode(ctx, pass)?;
                ppo.train_dirichlet.encode(ctx, pass)?;
                ppo.loss.encode(ctx, pass)?;
                ppo.actor_train.encode_backward(ctx, pass)?;
                ppo.critic_train.encode_backward(ctx, pass)?;
                ppo.clip.encode(ctx, pass)?;
                ppo.actor_adam.encode(ctx, pass)?;
                ppo.critic_adam.encode(ctx, pass)?;
                ppo.accumulate.record(pass);
                Ok(())
            },
        )
    }

    /// Ends the recording: the statistics are finished, the acting
    /// networks take the trained parameters, the one command buffer is
    /// submitted and the statistics buffer read back.
    ///
    /// # Errors
    /// [`GpuError::Input`] (`field: "iteration"`) outside a recording or
    /// before all of its `epochs × minibatches` updates;
    /// [`GpuError::Readback`].
    pub fn finish(&mut self, ctx: &GpuContext) -> Result<GpuIterationStats, GpuError> {
        ctx.check(self.context)?;
        let Recording {
            mut encoder,
            mut pass,
            counts,
        } = self.recording.take().ok_or_else(|| outside("finish"))?;
        expect(
            counts.updates == self.epochs * self.minibatches,
            "finish",
            "follows epochs × minibatches updates",
        )?;
        self.finish.record(&mut pass);
        drop(pass);
        for (from, to) in [
            (self.actor_train.params(), self.actor_act.params()),
            (self.critic_train.params(), self.critic_act.params()),
        ] {
            encoder.copy_buffer_to_buffer(from.buffer(), 0, to.buffer(), 0, None);
        }
        ctx.submit(encoder);
        let words = self.out.read(ctx)?;
        Ok(self.decode(&words))
    }

    /// Checks the recording's counts with `admit`, then records `commands`
    /// into its pass. On an error the recording is dropped.
    fn record(
        &mut self,
        ctx: &GpuContext,
        call: &'static str,
        admit: impl FnOnce(&Self, &mut Counts) -> Result<(), GpuError>,
        commands: impl FnOnce(&Self, &mut wgpu::ComputePass<'static>) -> Result<(), GpuError>,
    ) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        let mut recording = self.recording.take().ok_or_else(|| outside(call))?;
        admit(self, &mut recording.counts)?;
        commands(self, &mut recording.pass)?;
        self.recording = Some(recording);
        Ok(())
    }

    fn decode(&self, words: &[u32]) -> GpuIterationStats {
        let (n, g) = (self.agents, self.policies);
        let wide = |lo: u32, hi: u32| u64::from(hi) << 32 | u64::from(lo);
        let tally: Vec<&[u32]> = words[..n * TALLY].chunks_exact(TALLY).collect();
        let acc: Vec<f64> = words[n * TALLY..]
            .iter()
            .map(|&w| f64::from(f32::from_bits(w)))
            .collect();
        let updates = acc[6];
        let mean = |i: usize| acc[i] / updates.max(1.0);
        GpuIterationStats {
            reward_sums: tally
                .iter()
                .map(|t| f64::from(f32::from_bits(t[0])))
                .collect(),
            input: tally.iter().map(|t| wide(t[1], t[2])).collect(),
            rejected: tally.iter().map(|t| wide(t[3], t[4])).collect(),
            policy_loss: mean(0),
            value_loss: mean(1),
            entropy: mean(2),
            kl: mean(3),
            clip_fraction: mean(4),
            grad_norm: mean(5),
            last_epoch_kl: acc[ACC..ACC + g]
                .iter()
                .map(|k| k / self.minibatches as f64)
                .collect(),
            updates: updates as u32,
            non_finite: acc[7] != 0.0,
        }
    }
}

/// An iteration being recorded: its encoder, the one compute pass every
/// operation records into, and how many of each it holds.
#[derive(Debug)]
struct Recording {
    encoder: wgpu::CommandEncoder,
    pass: wgpu::ComputePass<'static>,
    counts: Counts,
}

/// Operations recorded so far in an iteration.
#[derive(Debug, Default)]
struct Counts {
    acts: usize,
    steps: usize,
    bootstrapped: bool,
    advantaged: bool,
    updates: usize,
}

/// `Ok` when `holds`, else the [`GpuError::Input`] saying that `call`
/// `rule`.
fn expect(holds: bool, call: &str, rule: &str) -> Result<(), GpuError> {
    if holds {
        Ok(())
    } else {
        Err(GpuError::Input {
            field: "iteration",
            reason: format!("{call} {rule}; the recording is dropped"),
        })
    }
}

/// The error of `call` without a [`GpuPpo::begin`].
fn outside(call: &str) -> GpuError {
    GpuError::Input {
        field: "iteration",
        reason: format!("{call} outside a recording: call begin first"),
    }
}

/// The product of `sizes`, or [`GpuError::Input`].
fn checked(sizes: &[usize]) -> Result<usize, GpuError> {
    crate::nn::checked_product("rollout", sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_permutation_is_a_bijection_for_every_size() {
        for n in [1u32, 2, 3, 5, 16, 17, 100, 1000, 4097] {
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let x = permuted(0xDEAD_BEEF_0042, 3, 1, 2, n, i);
                assert!(x < n, "n {n}: {i} ↦ {x}");
                assert!(!seen[x as usize], "n {n}: {x} twice");
                seen[x as usize] = true;
            }
        }
    }

    #[test]
    fn permutations_differ_by_epoch_and_policy() {
        let n = 1000;
        let order = |epoch, policy| {
            (0..n)
                .map(|i| permuted(7, 0, epoch, policy, n, i))
                .collect::<Vec<_>>()
        };
        assert_ne!(order(0, 0), order(1, 0));
        assert_ne!(order(0, 0), order(0, 1));
        assert_ne!(order(0, 0), (0..n).collect::<Vec<_>>());
    }
}

//! [`GpuBatchEnv`]: N environments stepped by one WGSL kernel, with the
//! contract of `dfaas_core::BatchEnv` (auto-reset, flat
//! `[env][agent][..]` slices) and its integer results (exact-integer
//! rejects).
//!
//! Input rates come from a [`TracePool`] generated ahead on the CPU with
//! the model's own generator: env `i` plays pool entry `(i + j·N) mod P` in
//! its `j`-th episode, so new episodes never wait for the CPU. The pool is
//! held twice on the device: episodes of even `j` read the first half, odd
//! ones the second, so [`GpuBatchEnv::refresh_pool`] can replace the half
//! the envs' next episodes will read while they play the other. Everything
//! stays on the device between steps; only what the caller asks for is
//! read back (per-step metrics are derived on the host from the read-back
//! integer state, with the CPU's own code). Pipelines, buffers and the bind
//! group are built once. [`GpuBatchEnv::state`] and
//! [`GpuBatchEnv::restore`] read back and write everything that changes
//! (checkpoints, or starting at any episode counter).

use crate::{GpuContext, GpuError};
use dfaas_core::input_rate::MAX_INPUT_RATE;
use dfaas_core::{BatchMetrics, EnvModel, RejectArithmetic, StepError, StepMetrics};

/// Uniform parameters, mirrored field for field in `shader.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    envs: u32,
    agents: u32,
    width: u32,
    obs_width: u32,
    max_steps: u32,
    pool_size: u32,
    /// `envs mod pool_size`: how far an env moves in the pool per episode.
    pool_stride: u32,
    degrees: u32,
    in_offsets: u32,
    in_senders: u32,
    in_index: u32,
    table_offsets: u32,
    tables: u32,
    /// Words of one pool half (`pool_size · agents · max_steps`).
    pool_half: u32,
}

/// Words of the per-env state, as in `shader.wgsl`: step, episode counter
/// (u64: low, high), done, pool entry.
const STATE_WORDS: usize = 5;
const STEP: usize = 0;
const EPISODE_LOW: usize = 1;
const EPISODE_HIGH: usize = 2;
const DONE: usize = 3;
const ENTRY: usize = 4;

/// Episodes of input rates generated ahead, `[episode][agent][step]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePool {
    episodes: usize,
    rates: Vec<u32>,
}

impl TracePool {
    /// `episodes` episodes of `model`'s generator, the episode seeds drawn
    /// from a stream seeded `seed` (as an env's master stream draws them):
    /// entry `j` is `model.generate_episode` of the `j`-th seed drawn by
    /// `dfaas_core::rng::draw_episode_seed` from `rng::seeded(seed)`.
    ///
    /// # Errors
    /// [`GpuError::Input`] when an episode cannot be generated (an unusable
    /// `real` trace) or `episodes` is 0.
    pub fn generate(model: &EnvModel, episodes: usize, seed: u64) -> Result<Self, GpuError> {
        if episodes == 0 {
            return Err(GpuError::Input {
                field: "episodes",
                reason: "a pool needs at least one episode".into(),
            });
        }
        let len = model.num_agents() * model.max_steps();
        let mut rates = vec![0u32; episodes * len];
        let mut master = dfaas_core::rng::seeded(seed);
        for chunk in rates.chunks_exact_mut(len) {
            let episode_seed = dfaas_core::rng::draw_episode_seed(&mut master);
            model
                .generate_episode(episode_seed, chunk)
                .map_err(|e| GpuError::Input {
                    field: "pool",
                    reason: e.to_string(),
                })?;
        }
        Ok(Self { episodes, rates })
    }

    /// Number of episodes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.episodes
    }

    /// Whether the pool is empty (never, once built).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.episodes == 0
    }

    /// Input rates of entry `entry`, `[agent][step]` (requests per step);
    /// `None` past the last entry.
    #[must_use]
    pub fn episode(&self, entry: usize) -> Option<&[u32]> {
        let len = self.rates.len() / self.episodes;
        self.rates.get(entry * len..(entry + 1) * len)
    }
}

/// Everything of a [`GpuBatchEnv`] that changes while it runs, read back by
/// [`GpuBatchEnv::state`] and written by [`GpuBatchEnv::restore`]; the
/// layouts are those of the env's accessors.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuEnvState {
    /// Step of each env within its episode, `0..max_steps`.
    pub steps: Vec<u32>,
    /// Episodes each env finished since the last reset: env `i` plays pool
    /// entry `(i + episodes[i]·num_envs) mod pool_len` (the counter wraps
    /// at 2⁶⁴).
    pub episodes: Vec<u64>,
    /// Whether each env's episode ended at the last step.
    pub dones: Vec<bool>,
    /// Observations `[env][agent][obs_width]`.
    pub observations: Vec<f32>,
    /// Rewards of the last step `[env][agent]`.
    pub rewards: Vec<f32>,
    /// Splits of the last step `[env][agent][action_width]`.
    pub splits: Vec<u32>,
    /// Rejects of the last step `[env][agent][action_width]`.
    pub rejects: Vec<u32>,
}

/// The device buffers of a [`GpuBatchEnv`], in the layouts of its
/// accessors; `state` holds [`STATE_WORDS`] words per env (its done flag at
/// [`DONE`]).
pub(crate) struct EnvBuffers<'a> {
    pub actions: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    pub rejects: &'a wgpu::Buffer,
    pub obs: &'a wgpu::Buffer,
    pub rewards: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
}

/// The batch on the device, usable only with the [`GpuContext`] it was
/// built on.
#[derive(Debug)]
pub struct GpuBatchEnv {
    model: EnvModel,
    /// The pool halves on the host (what each device half holds).
    pools: [TracePool; 2],
    pool_buffer: wgpu::Buffer,
    params: Params,
    context: u64,
    /// The kernels of a step, in order, and whether each runs per (env,
    /// agent) rather than per env (see `shader.wgsl`).
    step_kernels: Vec<(wgpu::ComputePipeline, bool)>,
    /// The kernels of a reset, likewise.
    reset_kernels: Vec<(wgpu::ComputePipeline, bool)>,
    bind_group: wgpu::BindGroup,
    actions: wgpu::Buffer,
    counts: wgpu::Buffer,
    rejects: wgpu::Buffer,
    obs: wgpu::Buffer,
    rewards: wgpu::Buffer,
    state: wgpu::Buffer,
}

/// The flattened static description the kernel reads, and the offsets of
/// its sections: degrees, the model's CSR incoming lists, one performance
/// table per distinct table of the model (nodes sharing a table share the
/// section) and each node's table offset.
fn topology_words(model: &EnvModel) -> (Vec<u32>, [u32; 6]) {
    let n = model.num_agents();
    let incoming = model.incoming();
    let words32 = |values: &[usize]| values.iter().map(|&v| v as u32).collect::<Vec<u32>>();
    let degrees: Vec<usize> = (0..n).map(|a| model.degree(a)).collect();
    let mut tables: Vec<u32> = Vec::new();
    let mut table_offsets = Vec::with_capacity(n);
    let mut uploaded: Vec<(&dfaas_core::PerfTable, u32)> = Vec::new();
    for node in 0..n {
        let table = model.perf_table(node);
        let offset = match uploaded.iter().find(|(t, _)| std::ptr::eq(*t, table)) {
            Some(&(_, offset)) => offset,
            None => {
                let offset = tables.len() as u32;
                tables.extend_from_slice(table.rejects());
                uploaded.push((table, offset));
                offset
            }
        };
        table_offsets.push(offset);
    }
    let mut words = Vec::new();
    let mut section = |values: &[u32]| {
        let start = words.len() as u32;
        words.extend_from_slice(values);
        start
    };
    let sections = [
        section(&words32(&degrees)),
        section(&words32(incoming.offsets)),
        section(&words32(incoming.senders)),
        section(&words32(incoming.action_index)),
        section(&table_offsets),
        section(&tables),
    ];
    (words, sections)
}

/// `Ok` when every total node `node` can receive from `pool` — its own
/// largest rate plus its senders' — is covered by its performance table
/// (whose totals are `u32`, within the kernel's exact arithmetic).
fn check_pool_fits(model: &EnvModel, pool: &TracePool) -> Result<(), GpuError> {
    let (n, s) = (model.num_agents(), model.max_steps());
    let mut largest = vec![0u64; n];
    for episode in pool.rates.chunks_exact(n * s) {
        for (a, trace) in episode.chunks_exact(s).enumerate() {
            let top = trace.iter().copied().max().unwrap_or(0);
            largest[a] = largest[a].max(u64::from(top));
        }
    }
    if let Some(v) = largest.iter().find(|&&v| v > u64::from(MAX_INPUT_RATE)) {
        return Err(GpuError::Input {
            field: "pool",
            reason: format!("rate {v} is above {MAX_INPUT_RATE}"),
        });
    }
    let incoming = model.incoming();
    for (node, own) in largest.iter().enumerate() {
        let senders = &incoming.senders[incoming.offsets[node]..incoming.offsets[node + 1]];
        let total = own + senders.iter().map(|&x| largest[x]).sum::<u64>();
        let covered = model.perf_table(node).max_total();
        if total > u64::from(covered) {
            return Err(GpuError::Input {
                field: "pool",
                reason: format!(
                    "node {} may receive {total} requests; its performance table covers {covered} (a pool of another model?)",
                    model.built().topology().names()[node]
                ),
            });
        }
    }
    Ok(())
}

impl GpuBatchEnv {
    /// `num_envs` environments of `model` playing episodes of `pool`, on
    /// `ctx`'s device (every later call must pass the same `ctx`).
    ///
    /// The kernel's integer arithmetic is exact for node totals below 2³²;
    /// the pool must stay within `dfaas_core::input_rate::MAX_INPUT_RATE`
    /// (2²⁰ requests per agent and step) and within the model's
    /// performance tables, so every total is at most 63 · 2²⁰.
    ///
    /// # Errors
    /// [`GpuError::Input`] when the model uses the reference's f64 reject
    /// arithmetic (CPU only), the pool does not fit the model (shape, a rate
    /// above `MAX_INPUT_RATE`, a node total beyond its performance table),
    /// or a buffer would exceed the device's limits;
    /// [`GpuError::Shader`] if the WGSL cannot be specialised.
    pub fn new(
        ctx: &GpuContext,
        model: &EnvModel,
        num_envs: usize,
        pool: &TracePool,
    ) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if model.built().reject_arithmetic() != RejectArithmetic::Exact {
            return Err(input(
                "reject_arithmetic",
                "the GPU uses the exact-integer rule; set reject_arithmetic: exact".into(),
            ));
        }
        if !model.built().reward().is_reference() {
            return Err(input(
                "reward",
                "the GPU computes the reference's per-agent reward only; train `reward: served` on the CPU".into(),
            ));
        }
        let (n, s) = (model.num_agents(), model.max_steps());
        if num_envs == 0 || pool.rates.len() != pool.episodes.saturating_mul(n * s) {
            return Err(input(
                "pool",
                format!(
                    "{} values for {} episodes of {n} agents × {s} steps, {num_envs} envs",
                    pool.rates.len(),
                    pool.episodes
                ),
            ));
        }
        check_pool_fits(model, pool)?;
        let (words, sections) = topology_words(model);
        // Every buffer must fit the device's limits (lavapipe: 128 MiB per
        // storage binding) and u32 word indices, or wgpu would fail later
        // without a typed error.
        let largest = ctx.largest_buffer();
        let bytes = |words: usize| (words as u64).saturating_mul(4);
        let widest = num_envs.saturating_mul(n * model.action_width().max(model.obs_width()));
        for (field, bytes) in [
            ("num_envs", bytes(widest)),
            ("num_envs", bytes(num_envs.saturating_mul(STATE_WORDS))),
            ("pool", bytes(pool.rates.len().saturating_mul(2))),
            ("model", bytes(words.len())),
        ] {
            if bytes > largest {
                return Err(input(
                    field,
                    format!(
                        "needs a {bytes}-byte buffer; this device allows {largest} (use fewer envs, a smaller pool or lower rates)"
                    ),
                ));
            }
        }
        let params = Params {
            envs: num_envs as u32,
            agents: n as u32,
            width: model.action_width() as u32,
            obs_width: model.obs_width() as u32,
            max_steps: s as u32,
            pool_size: pool.episodes as u32,
            pool_stride: (num_envs % pool.episodes) as u32,
            degrees: sections[0],
            in_offsets: sections[1],
            in_senders: sections[2],
            in_index: sections[3],
            table_offsets: sections[4],
            tables: sections[5],
            pool_half: pool.rates.len() as u32,
        };
        let device = &ctx.device;
        let init = |label: &str, bytes: &[u8], usage: wgpu::BufferUsages| {
            ctx.buffer_with(label, bytes, usage)
        };
        let zeroed = |label: &str, words: usize, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: (words.max(1) * 4) as u64,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let readable = U::STORAGE | U::COPY_SRC;
        let params_buf = init("env.params", bytemuck::bytes_of(&params), U::UNIFORM);
        let topology = init("env.topology", bytemuck::cast_slice(&words), U::STORAGE);
        let both_halves = [pool.rates.as_slice(), pool.rates.as_slice()].concat();
        let pool_buf = init(
            "env.pool",
            bytemuck::cast_slice(&both_halves),
            U::STORAGE | U::COPY_DST,
        );
        let wide = num_envs * n * model.action_width();
        let actions = zeroed("env.actions", wide, U::STORAGE | U::COPY_DST);
        let writable = readable | U::COPY_DST;
        let counts = zeroed("env.counts", wide, writable);
        let rejects = zeroed("env.rejects", wide, writable);
        let obs = zeroed("env.obs", num_envs * n * model.obs_width(), writable);
        let rewards = zeroed("env.rewards", num_envs * n, writable);
        let state = zeroed("env.state", num_envs * STATE_WORDS, writable);
        let module = ctx.shader("env", include_str!("shader.wgsl"), model.action_width())?;
        // The kernel's signature, shared by both entry points: binding 0 the
        // uniform parameters, 1–3 read-only inputs, 4–8 the state.
        let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let read_only = wgpu::BufferBindingType::Storage { read_only: true };
        let read_write = wgpu::BufferBindingType::Storage { read_only: false };
        let entries: Vec<wgpu::BindGroupLayoutEntry> =
            std::iter::once(entry(0, wgpu::BufferBindingType::Uniform))
                .chain((1..=3).map(|b| entry(b, read_only)))
                .chain((4..=8).map(|b| entry(b, read_write)))
                .collect();
        let bind_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("env.layout"),
            entries: &entries,
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("env.pipeline_layout"),
            bind_group_layouts: &[Some(&bind_layout)],
            immediate_size: 0,
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
        };
        let kernels = |names: &[(&str, bool)]| -> Vec<(wgpu::ComputePipeline, bool)> {
            names
                .iter()
                .map(|&(name, per_agent)| (pipeline(name), per_agent))
                .collect()
        };
        let step_kernels = kernels(&[
            ("split_agent", true),
            ("serve_agent", true),
            ("reward_agent", true),
            ("advance_env", false),
            ("observe_agent", true),
        ]);
        let reset_kernels = kernels(&[("reset_env", false), ("observe_agent", true)]);
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("env.bindings"),
            layout: &bind_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: params_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: topology.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: pool_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: actions.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: counts.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 5,
                    resource: rejects.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 6,
                    resource: obs.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 7,
                    resource: rewards.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 8,
                    resource: state.as_entire_binding(),
                },
            ],
        });
        let env = Self {
            model: model.clone(),
            pools: [pool.clone(), pool.clone()],
            pool_buffer: pool_buf,
            params,
            context: ctx.id(),
            step_kernels,
            reset_kernels,
            bind_group,
            actions,
            counts,
            rejects,
            obs,
            rewards,
            state,
        };
        env.dispatch(ctx, &env.reset_kernels);
        Ok(env)
    }

    fn dispatch(&self, ctx: &GpuContext, kernels: &[(wgpu::ComputePipeline, bool)]) {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("env") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("env"),
                timestamp_writes: None,
            });
            self.record(&mut pass, kernels);
        }
        ctx.submit(encoder);
    }

    /// Records `kernels` in order, each over every env or every (env,
    /// agent) pair (64 invocations per workgroup, rows of at most 65 535
    /// workgroups).
    fn record(&self, pass: &mut wgpu::ComputePass<'_>, kernels: &[(wgpu::ComputePipeline, bool)]) {
        pass.set_bind_group(0, &self.bind_group, &[]);
        for (pipeline, per_agent) in kernels {
            let invocations = if *per_agent {
                self.params.envs * self.params.agents
            } else {
                self.params.envs
            };
            let groups = invocations.div_ceil(64);
            let (x, y) = (groups.min(65_535), groups.div_ceil(65_535));
            pass.set_pipeline(pipeline);
            pass.dispatch_workgroups(x, y, 1);
        }
    }

    /// Records one step of every env with the actions in its action buffer
    /// into `pass` (the device path of a trainer, [`crate::ppo`]).
    pub(crate) fn record_step(&self, pass: &mut wgpu::ComputePass<'_>) {
        self.record(pass, &self.step_kernels);
    }

    /// The env's device buffers, for kernels that read its state and write
    /// its actions.
    pub(crate) fn buffers(&self) -> EnvBuffers<'_> {
        EnvBuffers {
            actions: &self.actions,
            counts: &self.counts,
            rejects: &self.rejects,
            obs: &self.obs,
            rewards: &self.rewards,
            state: &self.state,
        }
    }

    /// Replaces the pool half that episode `episode` (counted from the
    /// last reset) reads with `pool`, which must have the same number of
    /// episodes and fit the model; returns the bytes uploaded. Refresh the
    /// half of episode `j + 1` while the envs play episode `j`: the half
    /// in play is never touched then. Queued after every submitted
    /// command, before any later one.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Input`] for a pool of
    /// another size or one that does not fit the model (nothing changes).
    pub fn refresh_pool(
        &mut self,
        ctx: &GpuContext,
        episode: u64,
        pool: &TracePool,
    ) -> Result<u64, GpuError> {
        ctx.check(self.context)?;
        if pool.rates.len() != self.pools[0].rates.len() {
            return Err(GpuError::Input {
                field: "pool",
                reason: format!(
                    "{} episodes; the env's pool has {}",
                    pool.episodes, self.pools[0].episodes
                ),
            });
        }
        check_pool_fits(&self.model, pool)?;
        let half = (episode & 1) as usize;
        let offset = (half * pool.rates.len() * 4) as u64;
        ctx.upload(&self.pool_buffer, offset, bytemuck::cast_slice(&pool.rates));
        self.pools[half] = pool.clone();
        Ok((pool.rates.len() * 4) as u64)
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &EnvModel {
        &self.model
    }

    /// Number of environments.
    #[must_use]
    pub fn num_envs(&self) -> usize {
        self.params.envs as usize
    }

    /// The id of the context the env was built on.
    pub(crate) fn context(&self) -> u64 {
        self.context
    }

    /// Starts every env's first episode again (episode counters to 0: env
    /// `i` plays pool entry `i mod pool_len`).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the env's.
    pub fn reset(&mut self, ctx: &GpuContext) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        self.dispatch(ctx, &self.reset_kernels);
        Ok(())
    }

    /// Steps every env with `actions` (`[env][agent][action_width]`).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the env's;
    /// [`GpuError::Input`] for a wrong length or a non-finite entry;
    /// nothing changes then.
    pub fn step(&mut self, ctx: &GpuContext, actions: &[f32]) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        let expected = (self.params.envs * self.params.agents * self.params.width) as usize;
        if actions.len() != expected {
            return Err(GpuError::Input {
                field: "actions",
                reason: format!("expected {expected} values, got {}", actions.len()),
            });
        }
        if let Some(i) = actions.iter().position(|p| !p.is_finite()) {
            return Err(GpuError::Input {
                field: "actions",
                reason: format!("entry {i} is {}", actions[i]),
            });
        }
        ctx.upload(&self.actions, 0, bytemuck::cast_slice(actions));
        self.dispatch(ctx, &self.step_kernels);
        Ok(())
    }

    /// As [`GpuBatchEnv::step`], also writing every per-step metric of every
    /// env into `metrics` (resized to the batch when needed) — the same
    /// values as `BatchEnv::step_with_metrics`. Off the hot path: it reads
    /// the state back and derives the metrics on the host.
    ///
    /// # Errors
    /// As [`GpuBatchEnv::step`]; [`GpuError::Input`] when the state read
    /// back is not a step's; [`GpuError::Readback`].
    pub fn step_with_metrics(
        &mut self,
        ctx: &GpuContext,
        actions: &[f32],
        metrics: &mut BatchMetrics,
    ) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        let observations = self.observations(ctx)?;
        let state: Vec<u32> = ctx.read_buffer(&self.state)?;
        self.step(ctx, actions)?;
        let (counts, rejects) = self.splits_and_rejects(ctx)?;
        let (n, s) = (self.model.num_agents(), self.model.max_steps());
        let (wide, ow) = (n * self.model.action_width(), n * self.model.obs_width());
        metrics.resize(&self.model, self.params.envs as usize);
        let mut rates = vec![0u32; n];
        let mut record = StepMetrics::new(&self.model);
        let invalid = |error: StepError| GpuError::Input {
            field: "metrics",
            reason: error.to_string(),
        };
        for (e, words) in state.chunks_exact(STATE_WORDS).enumerate() {
            let (t, entry) = (words[STEP] as usize, words[ENTRY] as usize);
            for (a, r) in rates.iter_mut().enumerate() {
                let pool = &self.pools[(words[EPISODE_LOW] & 1) as usize];
                *r = pool.rates[(entry * n + a) * s + t];
            }
            record
                .record(
                    &self.model,
                    t,
                    &observations[e * ow..(e + 1) * ow],
                    &rates,
                    &counts[e * wide..(e + 1) * wide],
                    &rejects[e * wide..(e + 1) * wide],
                )
                .map_err(invalid)?;
            metrics.set_env(e, &record).map_err(invalid)?;
        }
        Ok(())
    }

    /// Steps every env with the actions already on the device (those of the
    /// last [`GpuBatchEnv::step`]): for throughput measurements, and for a
    /// policy that writes its actions on the device.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the env's.
    pub fn advance(&mut self, ctx: &GpuContext) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        self.dispatch(ctx, &self.step_kernels);
        Ok(())
    }

    /// Waits until the device has finished every submitted step.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the env's;
    /// [`GpuError::Readback`] if the device is lost.
    pub fn wait(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|e| GpuError::Readback(e.to_string()))
    }

    /// Observations `[env][agent][obs_width]` (read back).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn observations(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        ctx.check(self.context)?;
        ctx.read_buffer(&self.obs)
    }

    /// Rewards of the last step `[env][agent]` (read back).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn rewards(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        ctx.check(self.context)?;
        ctx.read_buffer(&self.rewards)
    }

    /// Whether each env's episode ended at the last step (read back).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn dones(&self, ctx: &GpuContext) -> Result<Vec<bool>, GpuError> {
        ctx.check(self.context)?;
        Ok(ctx
            .read_buffer::<u32>(&self.state)?
            .chunks_exact(STATE_WORDS)
            .map(|w| w[DONE] != 0)
            .collect())
    }

    /// The last step's splits `[env][agent][action_width]` and rejects
    /// (entry 0: the agent's local rejects; entries 1..=k: rejects of its
    /// forwards), read back: the integer state, for checks and metrics.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn splits_and_rejects(&self, ctx: &GpuContext) -> Result<(Vec<u32>, Vec<u32>), GpuError> {
        ctx.check(self.context)?;
        Ok((
            ctx.read_buffer(&self.counts)?,
            ctx.read_buffer(&self.rejects)?,
        ))
    }

    /// Everything that changes while the batch runs, read back, for
    /// [`GpuBatchEnv::restore`] on this env or another one of the same
    /// model, size and pool.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn state(&self, ctx: &GpuContext) -> Result<GpuEnvState, GpuError> {
        ctx.check(self.context)?;
        let words: Vec<u32> = ctx.read_buffer(&self.state)?;
        let (splits, rejects) = self.splits_and_rejects(ctx)?;
        let per_env = || words.chunks_exact(STATE_WORDS);
        Ok(GpuEnvState {
            steps: per_env().map(|w| w[STEP]).collect(),
            episodes: per_env()
                .map(|w| u64::from(w[EPISODE_HIGH]) << 32 | u64::from(w[EPISODE_LOW]))
                .collect(),
            dones: per_env().map(|w| w[DONE] != 0).collect(),
            observations: self.observations(ctx)?,
            rewards: self.rewards(ctx)?,
            splits,
            rejects,
        })
    }

    /// Writes `state` (from [`GpuBatchEnv::state`], or made by hand): the
    /// batch then continues exactly as the one it was taken from. Env `i`'s
    /// pool entry is derived as `(i + episodes[i]·num_envs) mod pool_len`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Input`] naming the first
    /// field that does not fit this batch (a length, a step not below
    /// `max_steps`, a non-finite observation or reward); nothing changes
    /// then.
    pub fn restore(&mut self, ctx: &GpuContext, state: &GpuEnvState) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        let envs = self.params.envs as usize;
        let n = envs * self.model.num_agents();
        let (wide, ow) = (n * self.model.action_width(), n * self.model.obs_width());
        let lengths: [(&'static str, usize, usize); 7] = [
            ("steps", state.steps.len(), envs),
            ("episodes", state.episodes.len(), envs),
            ("dones", state.dones.len(), envs),
            ("observations", state.observations.len(), ow),
            ("rewards", state.rewards.len(), n),
            ("splits", state.splits.len(), wide),
            ("rejects", state.rejects.len(), wide),
        ];
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if let Some((field, got, expected)) = lengths.iter().find(|(_, got, want)| got != want) {
            return Err(input(
                field,
                format!("expected {expected} values, got {got}"),
            ));
        }
        let max_steps = self.params.max_steps;
        if let Some((e, t)) = state
            .steps
            .iter()
            .enumerate()
            .find(|(_, t)| **t >= max_steps)
        {
            return Err(input(
                "steps",
                format!("env {e}: step {t} is not below max_steps {max_steps}"),
            ));
        }
        for (field, values) in [
            ("observations", &state.observations),
            ("rewards", &state.rewards),
        ] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(input(field, format!("entry {i} is {}", values[i])));
            }
        }
        let pool = self.pools[0].episodes as u128;
        let mut words = vec![0u32; envs * STATE_WORDS];
        for (e, w) in words.chunks_exact_mut(STATE_WORDS).enumerate() {
            let episode = state.episodes[e];
            w[STEP] = state.steps[e];
            w[EPISODE_LOW] = episode as u32;
            w[EPISODE_HIGH] = (episode >> 32) as u32;
            w[DONE] = u32::from(state.dones[e]);
            w[ENTRY] = ((e as u128 + u128::from(episode) * envs as u128) % pool) as u32;
        }
        ctx.upload(&self.state, 0, bytemuck::cast_slice(&words));
        ctx.upload(&self.obs, 0, bytemuck::cast_slice(&state.observations));
        ctx.upload(&self.rewards, 0, bytemuck::cast_slice(&state.rewards));
        ctx.upload(&self.counts, 0, bytemuck::cast_slice(&state.splits));
        ctx.upload(&self.rejects, 0, bytemuck::cast_slice(&state.rejects));
        Ok(())
    }
}

#[cfg(test)]
mod tests;

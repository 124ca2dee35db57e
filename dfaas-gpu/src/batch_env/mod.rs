//! [`GpuBatchEnv`]: N environments stepped by one WGSL kernel, with the
//! contract of `dfaas_core::BatchEnv` (auto-reset, flat
//! `[env][agent][..]` slices) and its integer results (exact-integer
//! rejects).
//!
//! Input rates come from a [`TracePool`] generated ahead on the CPU with
//! the model's own generator: env `i` plays pool entry `(i + j·N) mod P` in
//! its `j`-th episode, so new episodes never wait for the CPU. Everything
//! stays on the device between steps; only what the caller asks for is
//! read back (per-step metrics are derived on the host from the read-back
//! integer state, with the CPU's own code). Pipelines, buffers and the bind
//! group are built once.

use crate::{GpuContext, GpuError};
use dfaas_core::{EnvModel, RejectArithmetic, StepMetrics};
use wgpu::util::DeviceExt;

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
    degrees: u32,
    in_offsets: u32,
    in_senders: u32,
    in_index: u32,
    table_offsets: u32,
    tables: u32,
    _pad: [u32; 2],
}

/// Episodes of input rates generated ahead, `[episode][agent][step]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePool {
    episodes: usize,
    rates: Vec<u32>,
}

impl TracePool {
    /// `episodes` episodes of `model`'s generator, the episode seeds drawn
    /// from a stream seeded `seed` (as an env's master stream draws them).
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
}

/// The batch on the device.
#[derive(Debug)]
pub struct GpuBatchEnv {
    model: EnvModel,
    pool: TracePool,
    params: Params,
    step_pipeline: wgpu::ComputePipeline,
    reset_pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    actions: wgpu::Buffer,
    counts: wgpu::Buffer,
    rejects: wgpu::Buffer,
    obs: wgpu::Buffer,
    rewards: wgpu::Buffer,
    state: wgpu::Buffer,
}

/// The flattened static description the kernel reads.
fn topology_words(model: &EnvModel) -> (Vec<u32>, [u32; 6]) {
    let topology = model.built().topology();
    let n = model.num_agents();
    let mut words = Vec::new();
    let section = |words: &mut Vec<u32>, values: &[u32]| {
        let start = words.len() as u32;
        words.extend_from_slice(values);
        start
    };
    let degrees: Vec<u32> = (0..n).map(|a| model.degree(a) as u32).collect();
    let mut in_offsets = vec![0u32];
    let (mut in_senders, mut in_index) = (Vec::new(), Vec::new());
    for node in 0..n {
        let mut senders: Vec<u32> = topology.neighbours(node).to_vec();
        senders.sort_unstable();
        for s in senders {
            let position = topology
                .neighbours(s as usize)
                .iter()
                .position(|&m| m as usize == node)
                .unwrap_or(0);
            in_senders.push(s);
            in_index.push(1 + position as u32);
        }
        in_offsets.push(in_senders.len() as u32);
    }
    let mut table_offsets = Vec::with_capacity(n);
    let mut tables = Vec::new();
    for node in 0..n {
        table_offsets.push(tables.len() as u32);
        tables.extend_from_slice(model.perf_table(node).rejects());
    }
    let sections = [
        section(&mut words, &degrees),
        section(&mut words, &in_offsets),
        section(&mut words, &in_senders),
        section(&mut words, &in_index),
        section(&mut words, &table_offsets),
        section(&mut words, &tables),
    ];
    (words, sections)
}

impl GpuBatchEnv {
    /// `num_envs` environments of `model` playing episodes of `pool`.
    ///
    /// # Errors
    /// [`GpuError::Input`] when the model uses the reference's f64 reject
    /// arithmetic (CPU only), a rate exceeds what the kernel handles
    /// (65 535), a node has more than 62 neighbours, or the pool does not
    /// fit the model.
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
        let (n, s) = (model.num_agents(), model.max_steps());
        if num_envs == 0 || pool.rates.len() != pool.episodes * n * s {
            return Err(input(
                "pool",
                format!(
                    "{} values for {} episodes of {n} agents × {s} steps, {num_envs} envs",
                    pool.rates.len(),
                    pool.episodes
                ),
            ));
        }
        if let Some(v) = pool.rates.iter().find(|&&v| v > crate::split::MAX_RATE) {
            return Err(input(
                "pool",
                format!("rate {v} is above {}", crate::split::MAX_RATE),
            ));
        }
        // Every buffer must fit the device's limits (lavapipe: 128 MiB per
        // storage binding), or wgpu would fail later without a typed error.
        let limits = ctx.device.limits();
        let largest = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let widest = (num_envs * n * model.action_width().max(model.obs_width())) as u64 * 4;
        for (field, bytes) in [("num_envs", widest), ("pool", pool.rates.len() as u64 * 4)] {
            if bytes > largest {
                return Err(input(
                    field,
                    format!(
                        "needs a {bytes}-byte buffer; this device allows {largest} (use fewer envs or a smaller pool)"
                    ),
                ));
            }
        }
        if num_envs > u32::MAX as usize / 3 {
            return Err(input("num_envs", format!("{num_envs} is too many")));
        }
        let (words, sections) = topology_words(model);
        let params = Params {
            envs: num_envs as u32,
            agents: n as u32,
            width: model.action_width() as u32,
            obs_width: model.obs_width() as u32,
            max_steps: s as u32,
            pool_size: pool.episodes as u32,
            degrees: sections[0],
            in_offsets: sections[1],
            in_senders: sections[2],
            in_index: sections[3],
            table_offsets: sections[4],
            tables: sections[5],
            _pad: [0; 2],
        };
        let device = &ctx.device;
        let init = |label: &str, bytes: &[u8], usage: wgpu::BufferUsages| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage,
            })
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
        let pool_buf = init("env.pool", bytemuck::cast_slice(&pool.rates), U::STORAGE);
        let wide = num_envs * n * model.action_width();
        let actions = zeroed("env.actions", wide, U::STORAGE | U::COPY_DST);
        let counts = zeroed("env.counts", wide, readable);
        let rejects = zeroed("env.rejects", wide, readable);
        let obs = zeroed("env.obs", num_envs * n * model.obs_width(), readable);
        let rewards = zeroed("env.rewards", num_envs * n, readable);
        let state = zeroed("env.state", num_envs * 3, readable);
        let module = ctx.shader("env", include_str!("shader.wgsl"), model.action_width());
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
        let step_pipeline = pipeline("step");
        let reset_pipeline = pipeline("reset");
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
            pool: pool.clone(),
            params,
            step_pipeline,
            reset_pipeline,
            bind_group,
            actions,
            counts,
            rejects,
            obs,
            rewards,
            state,
        };
        env.dispatch(ctx, &env.reset_pipeline);
        Ok(env)
    }

    fn dispatch(&self, ctx: &GpuContext, pipeline: &wgpu::ComputePipeline) {
        let groups = self.params.envs.div_ceil(64);
        let (x, y) = (groups.min(65_535), groups.div_ceil(65_535));
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("env") });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("env"),
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &self.bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        ctx.queue.submit([encoder.finish()]);
    }

    /// Starts every env's first episode again (episode counters to 0).
    pub fn reset(&mut self, ctx: &GpuContext) {
        self.dispatch(ctx, &self.reset_pipeline);
    }

    /// Steps every env with `actions` (`[env][agent][action_width]`).
    ///
    /// # Errors
    /// [`GpuError::Input`] for a wrong length or a non-finite entry; nothing
    /// changes then.
    pub fn step(&mut self, ctx: &GpuContext, actions: &[f32]) -> Result<(), GpuError> {
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
        ctx.queue
            .write_buffer(&self.actions, 0, bytemuck::cast_slice(actions));
        self.advance(ctx);
        Ok(())
    }

    /// As [`GpuBatchEnv::step`], also filling `metrics[i]` (made with
    /// `StepMetrics::new`) with every per-step metric of env `i` — the same
    /// values as `BatchEnv::step_with_metrics`. Off the hot path: it reads
    /// the state back and derives the metrics on the host.
    ///
    /// # Errors
    /// As [`GpuBatchEnv::step`]; [`GpuError::Input`] when `metrics` does not
    /// hold one record per env; [`GpuError::Readback`].
    pub fn step_with_metrics(
        &mut self,
        ctx: &GpuContext,
        actions: &[f32],
        metrics: &mut [StepMetrics],
    ) -> Result<(), GpuError> {
        let envs = self.params.envs as usize;
        if metrics.len() != envs {
            return Err(GpuError::Input {
                field: "metrics",
                reason: format!("expected {envs} records, got {}", metrics.len()),
            });
        }
        let observations = self.observations(ctx)?;
        let state: Vec<u32> = ctx.read_buffer(&self.state)?;
        self.step(ctx, actions)?;
        let (counts, rejects) = self.splits_and_rejects(ctx)?;
        let (n, s) = (self.model.num_agents(), self.model.max_steps());
        let (wide, ow) = (n * self.model.action_width(), n * self.model.obs_width());
        let mut rates = vec![0u32; n];
        for (e, m) in metrics.iter_mut().enumerate() {
            let (t, episode) = (state[3 * e] as usize, state[3 * e + 1] as usize);
            let entry = (e + episode * envs) % self.pool.episodes;
            for (a, r) in rates.iter_mut().enumerate() {
                *r = self.pool.rates[(entry * n + a) * s + t];
            }
            m.observation
                .copy_from_slice(&observations[e * ow..(e + 1) * ow]);
            m.record(
                &self.model,
                t,
                &rates,
                &counts[e * wide..(e + 1) * wide],
                &rejects[e * wide..(e + 1) * wide],
            );
        }
        Ok(())
    }

    /// Steps every env with the actions already on the device (those of the
    /// last [`GpuBatchEnv::step`]): for throughput measurements, and for a
    /// policy that writes its actions on the device.
    pub fn advance(&mut self, ctx: &GpuContext) {
        self.dispatch(ctx, &self.step_pipeline);
    }

    /// Waits until the device has finished every submitted step.
    ///
    /// # Errors
    /// [`GpuError::Readback`] if the device is lost.
    pub fn wait(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|e| GpuError::Readback(e.to_string()))
    }

    /// Observations `[env][agent][obs_width]` (read back).
    ///
    /// # Errors
    /// [`GpuError::Readback`].
    pub fn observations(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        ctx.read_buffer(&self.obs)
    }

    /// Rewards of the last step `[env][agent]` (read back).
    ///
    /// # Errors
    /// [`GpuError::Readback`].
    pub fn rewards(&self, ctx: &GpuContext) -> Result<Vec<f32>, GpuError> {
        ctx.read_buffer(&self.rewards)
    }

    /// Whether each env's episode ended at the last step (read back).
    ///
    /// # Errors
    /// [`GpuError::Readback`].
    pub fn dones(&self, ctx: &GpuContext) -> Result<Vec<bool>, GpuError> {
        Ok(ctx
            .read_buffer::<u32>(&self.state)?
            .chunks_exact(3)
            .map(|s| s[2] != 0)
            .collect())
    }

    /// The last step's splits `[env][agent][action_width]` and rejects
    /// (entry 0: the agent's local rejects; entries 1..=k: rejects of its
    /// forwards), read back: the integer state, for checks and metrics.
    ///
    /// # Errors
    /// [`GpuError::Readback`].
    pub fn splits_and_rejects(&self, ctx: &GpuContext) -> Result<(Vec<u32>, Vec<u32>), GpuError> {
        Ok((
            ctx.read_buffer(&self.counts)?,
            ctx.read_buffer(&self.rejects)?,
        ))
    }
}

#[cfg(test)]
mod tests;

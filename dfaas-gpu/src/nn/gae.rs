//! [`Gae`]: generalised advantage estimation on the device — the twin of
//! `dfaas_policies::gae::{advantages, standardise}` — over a rollout stored
//! `[step][column]`, one invocation per column for the reverse scan, and
//! the standardisation of the advantages by a fixed-order reduction, per
//! group of columns (e.g. one policy per agent: column `c` in group
//! `c / (columns / groups)`).

use super::{
    DeviceVec, bind, bind_at, checked_product, encode_on, linear_grid, pipeline, run_on, uniform,
    word,
};
use crate::{GpuContext, GpuError};

/// Uniform parameters, mirrored field for field in `gae.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    steps: u32,
    columns: u32,
    gamma: f32,
    lambda: f32,
    groups: u32,
    group_columns: u32,
    _pad0: u32,
    _pad1: u32,
}

/// GAE for rollouts of `steps × columns` samples with fixed γ and λ: its
/// inputs ([`Gae::rewards`], [`Gae::values`], [`Gae::dones`] — 1.0 where a
/// step ended an episode — all `[step][column]`, and
/// [`Gae::last_values`] `[column]`, the bootstrap) and outputs
/// ([`Gae::advantages`], [`Gae::returns`], `[step][column]`) live on the
/// device; usable only with the [`GpuContext`] it was built on.
#[derive(Debug)]
pub struct Gae {
    context: u64,
    scan: wgpu::ComputePipeline,
    moments: wgpu::ComputePipeline,
    apply: wgpu::ComputePipeline,
    scan_group: wgpu::BindGroup,
    moments_group: wgpu::BindGroup,
    apply_group: wgpu::BindGroup,
    scan_grid: [u32; 3],
    groups_grid: [u32; 3],
    apply_grid: [u32; 3],
    rewards: DeviceVec<f32>,
    values: DeviceVec<f32>,
    dones: DeviceVec<f32>,
    last_values: DeviceVec<f32>,
    advantages: DeviceVec<f32>,
    returns: DeviceVec<f32>,
}

impl Gae {
    /// GAE over `steps × columns` samples with discount `gamma` and
    /// `lambda` (both in [0, 1]), the columns split into `groups` equal
    /// groups of consecutive columns, each standardised on its own.
    ///
    /// # Errors
    /// [`GpuError::Input`] for no samples, γ or λ outside [0, 1], `groups`
    /// 0 or not dividing `columns`, or sizes beyond the device's buffers
    /// and dispatch limits.
    pub fn new(
        ctx: &GpuContext,
        steps: usize,
        columns: usize,
        gamma: f32,
        lambda: f32,
        groups: usize,
    ) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        for (field, value) in [("gamma", gamma), ("lambda", lambda)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(input(field, format!("must be in [0, 1], got {value}")));
            }
        }
        if steps == 0 || columns == 0 {
            return Err(input(
                "samples",
                format!("{steps} steps × {columns} columns: must not be empty"),
            ));
        }
        if groups == 0 || !columns.is_multiple_of(groups) {
            return Err(input(
                "groups",
                format!("{groups} groups must be ≥ 1 and divide the {columns} columns"),
            ));
        }
        let len = checked_product("samples", &[steps, columns])?;
        let params = Params {
            steps: word("steps", steps)?,
            columns: word("columns", columns)?,
            gamma,
            lambda,
            groups: word("groups", groups)?,
            group_columns: word("columns", columns / groups)?,
            _pad0: 0,
            _pad1: 0,
        };
        word("samples", len)?;
        let scan_grid = linear_grid(ctx, "columns", columns, 64)?;
        let groups_grid = linear_grid(ctx, "groups", groups, 1)?;
        let apply_grid = linear_grid(ctx, "samples", len, 256)?;
        let vector = |field| DeviceVec::<f32>::zeros(ctx, field, len);
        let (rewards, values, dones) = (vector("rewards")?, vector("values")?, vector("dones")?);
        let (advantages, returns) = (vector("advantages")?, vector("returns")?);
        let last_values = DeviceVec::zeros(ctx, "last_values", columns)?;
        let moments_buf = DeviceVec::<f32>::zeros(ctx, "gae.moments", 2 * groups)?;
        let uniform_buf = uniform(ctx, "gae", &params);
        let source = include_str!("gae.wgsl");
        let scan = pipeline(ctx, "gae.scan", source, "scan");
        let moments = pipeline(ctx, "gae.moments", source, "standardise_moments");
        let apply = pipeline(ctx, "gae.apply", source, "standardise_apply");
        let buffers = [
            &uniform_buf,
            rewards.buffer(),
            values.buffer(),
            dones.buffer(),
            last_values.buffer(),
            advantages.buffer(),
            returns.buffer(),
            moments_buf.buffer(),
        ];
        // Each entry point uses a subset of the module's bindings.
        let scan_group = bind(ctx, "gae.scan", &scan, &buffers[..7]);
        let numbered = |at: &[u32]| -> Vec<(u32, &wgpu::Buffer)> {
            at.iter().map(|&b| (b, buffers[b as usize])).collect()
        };
        let moments_group = bind_at(ctx, "gae.moments", &moments, &numbered(&[0, 5, 7]));
        let apply_group = bind_at(ctx, "gae.apply", &apply, &numbered(&[0, 5, 7]));
        Ok(Self {
            context: ctx.id(),
            scan,
            moments,
            apply,
            scan_group,
            moments_group,
            apply_group,
            scan_grid,
            groups_grid,
            apply_grid,
            rewards,
            values,
            dones,
            last_values,
            advantages,
            returns,
        })
    }

    /// Rewards `[step][column]`.
    #[must_use]
    pub fn rewards(&self) -> &DeviceVec<f32> {
        &self.rewards
    }

    /// Critic values of the observations acted on, `[step][column]`.
    #[must_use]
    pub fn values(&self) -> &DeviceVec<f32> {
        &self.values
    }

    /// 1.0 where the step ended an episode, else 0.0, `[step][column]`.
    #[must_use]
    pub fn dones(&self) -> &DeviceVec<f32> {
        &self.dones
    }

    /// Values after the rollout (the bootstrap), `[column]`.
    #[must_use]
    pub fn last_values(&self) -> &DeviceVec<f32> {
        &self.last_values
    }

    /// Advantages `[step][column]` (each group standardised when asked).
    #[must_use]
    pub fn advantages(&self) -> &DeviceVec<f32> {
        &self.advantages
    }

    /// Value targets `[step][column]` (from the raw advantages).
    #[must_use]
    pub fn returns(&self) -> &DeviceVec<f32> {
        &self.returns
    }

    /// Records the scan and, with `standardise`, the standardisation of
    /// each group's advantages into `pass`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn encode(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
        standardise: bool,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| {
            self.record(pass, standardise)
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, standardise: bool) {
        pass.set_pipeline(&self.scan);
        pass.set_bind_group(0, &self.scan_group, &[]);
        let [x, y, z] = self.scan_grid;
        pass.dispatch_workgroups(x, y, z);
        // The CPU leaves a single advantage as it is.
        if standardise && self.advantages.len() > 1 {
            pass.set_pipeline(&self.moments);
            pass.set_bind_group(0, &self.moments_group, &[]);
            let [x, y, z] = self.groups_grid;
            pass.dispatch_workgroups(x, y, z);
            pass.set_pipeline(&self.apply);
            pass.set_bind_group(0, &self.apply_group, &[]);
            let [x, y, z] = self.apply_grid;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Submits the scan (and, with `standardise`, the standardisation).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn run(&self, ctx: &GpuContext, standardise: bool) -> Result<(), GpuError> {
        run_on(ctx, self.context, "gae", |pass| {
            self.record(pass, standardise)
        })
    }
}

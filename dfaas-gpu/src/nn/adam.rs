//! [`GpuAdam`]: Adam with PyTorch's bias correction on a parameter vector
//! and its gradients in device memory — the twin of
//! `dfaas_policies::adam::Adam::step`, elementwise (so one optimiser over
//! G groups' concatenated parameters equals G CPU optimisers).

use super::{DeviceVec, bind, bind_at, encode_on, linear_grid, pipeline, run_on, uniform, word};
use crate::{GpuContext, GpuError};

/// Adam's settings (PyTorch's defaults but the learning rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamSettings {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Denominator guard.
    pub eps: f32,
}

impl AdamSettings {
    /// `lr` with β₁ = 0.9, β₂ = 0.999, eps = 1e-8 (as `Adam::new`).
    #[must_use]
    pub fn new(lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Uniform parameters, mirrored field for field in `adam.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    _pad: [u32; 3],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

/// Adam bound to one parameter vector and its gradients (of the same
/// length), with its moments `m`, `v` (zeros at first) and step count on
/// the device; usable only with the [`GpuContext`] it was built on.
#[derive(Debug)]
pub struct GpuAdam {
    context: u64,
    tick: wgpu::ComputePipeline,
    update: wgpu::ComputePipeline,
    tick_group: wgpu::BindGroup,
    update_group: wgpu::BindGroup,
    workgroups: [u32; 3],
    m: DeviceVec<f32>,
    v: DeviceVec<f32>,
    state: DeviceVec<u32>,
}

impl GpuAdam {
    /// Adam with `settings` for `params` (updated in place) from `grads`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] when a vector lives on another context
    /// than `ctx`; [`GpuError::Input`] when `params` is empty, `grads` is
    /// not as long or is `params` itself, a setting is not finite (or `lr < 0`, β outside [0, 1),
    /// `eps ≤ 0`), or the vectors exceed the device's dispatch limits.
    pub fn new(
        ctx: &GpuContext,
        params: &DeviceVec<f32>,
        grads: &DeviceVec<f32>,
        settings: AdamSettings,
    ) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if params.is_empty() {
            return Err(input("params", "must not be empty".into()));
        }
        if std::ptr::eq(params, grads) {
            return Err(input("grads", "must be another vector than params".into()));
        }
        params.check(ctx.id(), "params", params.len())?;
        grads.check(ctx.id(), "grads", params.len())?;
        let AdamSettings {
            lr,
            beta1,
            beta2,
            eps,
        } = settings;
        for (field, value, ok) in [
            ("lr", lr, lr >= 0.0),
            ("beta1", beta1, (0.0..1.0).contains(&beta1)),
            ("beta2", beta2, (0.0..1.0).contains(&beta2)),
            ("eps", eps, eps > 0.0),
        ] {
            if !(value.is_finite() && ok) {
                return Err(input(field, format!("out of range: {value}")));
            }
        }
        let len = params.len();
        let workgroups = linear_grid(ctx, "params", len, 256)?;
        let m = DeviceVec::zeros(ctx, "adam.m", len)?;
        let v = DeviceVec::zeros(ctx, "adam.v", len)?;
        let state = DeviceVec::<u32>::from_slice(ctx, "adam.t", &[0])?;
        let uniform_buf = uniform(
            ctx,
            "adam",
            &Params {
                len: word("params", len)?,
                _pad: [0; 3],
                lr,
                beta1,
                beta2,
                eps,
            },
        );
        let source = include_str!("adam.wgsl");
        let tick = pipeline(ctx, "adam.tick", source, "tick");
        let update = pipeline(ctx, "adam.update", source, "update");
        let tick_group = bind_at(ctx, "adam.tick", &tick, &[(5, state.buffer())]);
        let update_group = bind(
            ctx,
            "adam.update",
            &update,
            &[
                &uniform_buf,
                params.buffer(),
                grads.buffer(),
                m.buffer(),
                v.buffer(),
                state.buffer(),
            ],
        );
        Ok(Self {
            context: ctx.id(),
            tick,
            update,
            tick_group,
            update_group,
            workgroups,
            m,
            v,
            state,
        })
    }

    /// First moments.
    #[must_use]
    pub fn m(&self) -> &DeviceVec<f32> {
        &self.m
    }

    /// Second moments.
    #[must_use]
    pub fn v(&self) -> &DeviceVec<f32> {
        &self.v
    }

    /// Steps taken (read back).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn steps(&self, ctx: &GpuContext) -> Result<u32, GpuError> {
        ctx.check(self.context)?;
        Ok(self.state.read(ctx)?[0])
    }

    /// Sets the step count (e.g. when loading a checkpoint, with the
    /// moments written through [`GpuAdam::m`] and [`GpuAdam::v`]).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn set_steps(&self, ctx: &GpuContext, steps: u32) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        self.state.write(ctx, &[steps])
    }

    /// Records one step (the count incremented, then every element
    /// updated) into `pass`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn encode(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| self.record(pass))
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.tick);
        pass.set_bind_group(0, &self.tick_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
        pass.set_pipeline(&self.update);
        pass.set_bind_group(0, &self.update_group, &[]);
        let [x, y, z] = self.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Submits one step.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn step(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "adam", |pass| self.record(pass))
    }
}

//! The actor head on the device: [`Concentrations`] (`softplus(x) + 1e-7`,
//! the twin of the CPU backend's concentrations) and [`DirichletKernel`]
//! (log-density, entropy and KL(old ‖ new) with their gradients with
//! respect to the new concentrations — the twins of
//! `dfaas_policies::dirichlet::{log_prob, entropy, kl}`).
//!
//! Both evaluate in f32 (the CPU in f64), with `ln Γ`, ψ and ψ′ in WGSL:
//! shifted up to 10 by their recurrences, then asymptotic series. Accuracy
//! is relative to the size of the terms summed: near the 1e-7 floor ψ(α) ≈
//! −1/α and ψ′(α) ≈ 1/α², and for large α the `ln Γ` terms of the entropy
//! and the KL reach hundreds while their sum may be near 0.

use super::{
    DeviceVec, Dispatch, bind_at, checked_product, encode_on, linear_grid, pipeline, run_on,
    uniform, word,
};
use crate::{GpuContext, GpuError};

/// Uniform parameters, mirrored field for field in `dirichlet.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Rows {
    rows: u32,
    width: u32,
    len: u32,
    _pad: u32,
}

/// `alpha[i] = softplus(logits[i]) + 1e-7` elementwise (softplus as the
/// CPU backend: `x` above 20, else `ln(1 + eˣ)`), between two vectors of
/// the same length; usable only with the [`GpuContext`] it was built on.
#[derive(Debug)]
pub struct Concentrations {
    context: u64,
    dispatch: Dispatch,
}

impl Concentrations {
    /// The map from `logits` to `alpha` (e.g. a
    /// [`super::mlp::GroupedMlp::output`] into a
    /// [`DirichletKernel::alpha`]).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] when a vector lives on another
    /// context; [`GpuError::Input`] when they differ in length, are the
    /// same vector, or are empty, or exceed the dispatch limits.
    pub fn new(
        ctx: &GpuContext,
        logits: &DeviceVec<f32>,
        alpha: &DeviceVec<f32>,
    ) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if logits.is_empty() {
            return Err(input("logits", "must not be empty".into()));
        }
        if std::ptr::eq(logits, alpha) {
            return Err(input("alpha", "must be another vector than logits".into()));
        }
        logits.check(ctx.id(), "logits", logits.len())?;
        alpha.check(ctx.id(), "alpha", logits.len())?;
        let pipeline = pipeline(
            ctx,
            "concentrations",
            include_str!("dirichlet.wgsl"),
            "concentrations_main",
        );
        let params = uniform(
            ctx,
            "concentrations",
            &Rows {
                len: word("logits", logits.len())?,
                ..Rows::default()
            },
        );
        let bind_group = bind_at(
            ctx,
            "concentrations",
            &pipeline,
            &[(0, &params), (1, logits.buffer()), (2, alpha.buffer())],
        );
        Ok(Self {
            context: ctx.id(),
            dispatch: Dispatch {
                pipeline,
                bind_group,
                grid: linear_grid(ctx, "logits", logits.len(), 256)?,
            },
        })
    }

    /// Records the map into `pass`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn encode(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| self.dispatch.record(pass))
    }

    /// Submits the map.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn run(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "concentrations", |pass| {
            self.dispatch.record(pass)
        })
    }
}

/// Log-density, entropy and KL of `rows` Dirichlet distributions of up to
/// `width` entries, with their inputs and outputs on the device; usable
/// only with the [`GpuContext`] it was built on.
///
/// Inputs, `[rows][width]`: [`DirichletKernel::alpha`] (the new
/// concentrations, > 0), [`DirichletKernel::actions`] (points of the
/// simplex; entries floored at 1e-30 inside logarithms, as the CPU),
/// [`DirichletKernel::old_alpha`] (the old concentrations of the KL) and
/// [`DirichletKernel::mask`] (1: the entry is part of the row's
/// distribution, 0: left out, as a masked sample of a shared policy;
/// all ones at first). Outputs: [`DirichletKernel::values`] `[rows][3]`
/// (ln p(x | α), H(Dir(α)), KL(Dir(α_old) ‖ Dir(α)), nats; NaN for a row
/// without entries, as the CPU) and
/// [`DirichletKernel::grads`] `[3][rows][width]` (their gradients with
/// respect to α in the same order; 0 on left-out entries).
#[derive(Debug)]
pub struct DirichletKernel {
    context: u64,
    dispatch: Dispatch,
    log_density: Dispatch,
    alpha: DeviceVec<f32>,
    actions: DeviceVec<f32>,
    old_alpha: DeviceVec<f32>,
    mask: DeviceVec<u32>,
    values: DeviceVec<f32>,
    grads: DeviceVec<f32>,
}

impl DirichletKernel {
    /// Buffers and pipeline for `rows` rows of `width` entries.
    ///
    /// # Errors
    /// [`GpuError::Input`] for `rows` or `width` of 0, or sizes that
    /// overflow or exceed the device's buffers or dispatch limits.
    pub fn new(ctx: &GpuContext, rows: usize, width: usize) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if rows == 0 {
            return Err(input("rows", "must be positive, got 0".into()));
        }
        if width == 0 {
            return Err(input("width", "must be positive, got 0".into()));
        }
        let wide = checked_product("rows", &[rows, width])?;
        let alpha = DeviceVec::zeros(ctx, "alpha", wide)?;
        let actions = DeviceVec::zeros(ctx, "actions", wide)?;
        let old_alpha = DeviceVec::zeros(ctx, "old_alpha", wide)?;
        let mask = DeviceVec::from_slice(ctx, "mask", &vec![1u32; wide])?;
        let values = DeviceVec::zeros(ctx, "rows", checked_product("rows", &[rows, 3])?)?;
        let grads = DeviceVec::zeros(ctx, "rows", checked_product("rows", &[wide, 3])?)?;
        // The gradients' last index, 3·rows·width − 1, must fit a u32.
        word("rows", grads.len())?;
        let pipeline = pipeline(
            ctx,
            "dirichlet",
            include_str!("dirichlet.wgsl"),
            "dirichlet_main",
        );
        let params = uniform(
            ctx,
            "dirichlet",
            &Rows {
                rows: word("rows", rows)?,
                width: word("width", width)?,
                len: word("rows", wide)?,
                _pad: 0,
            },
        );
        let bind_group = bind_at(
            ctx,
            "dirichlet",
            &pipeline,
            &[
                (0, &params),
                (3, alpha.buffer()),
                (4, actions.buffer()),
                (5, old_alpha.buffer()),
                (6, mask.buffer()),
                (7, values.buffer()),
                (8, grads.buffer()),
            ],
        );
        let log_density_pipeline = super::pipeline(
            ctx,
            "dirichlet.log_density",
            include_str!("dirichlet.wgsl"),
            "log_density_main",
        );
        let log_density_group = bind_at(
            ctx,
            "dirichlet.log_density",
            &log_density_pipeline,
            &[
                (0, &params),
                (3, alpha.buffer()),
                (4, actions.buffer()),
                (6, mask.buffer()),
                (7, values.buffer()),
            ],
        );
        // One invocation per row, 64 per workgroup.
        let workgroups = linear_grid(ctx, "rows", rows, 64)?;
        Ok(Self {
            context: ctx.id(),
            dispatch: Dispatch {
                pipeline,
                bind_group,
                grid: workgroups,
            },
            log_density: Dispatch {
                pipeline: log_density_pipeline,
                bind_group: log_density_group,
                grid: workgroups,
            },
            alpha,
            actions,
            old_alpha,
            mask,
            values,
            grads,
        })
    }

    /// New concentrations `[rows][width]`.
    #[must_use]
    pub fn alpha(&self) -> &DeviceVec<f32> {
        &self.alpha
    }

    /// Actions `[rows][width]`.
    #[must_use]
    pub fn actions(&self) -> &DeviceVec<f32> {
        &self.actions
    }

    /// Old concentrations `[rows][width]` (of the KL).
    #[must_use]
    pub fn old_alpha(&self) -> &DeviceVec<f32> {
        &self.old_alpha
    }

    /// Which entries form each row's distribution `[rows][width]` (1 or 0).
    #[must_use]
    pub fn mask(&self) -> &DeviceVec<u32> {
        &self.mask
    }

    /// `[rows][3]`: log-density, entropy, KL of the last run.
    #[must_use]
    pub fn values(&self) -> &DeviceVec<f32> {
        &self.values
    }

    /// `[3][rows][width]`: the gradients of log-density, entropy and KL
    /// with respect to [`DirichletKernel::alpha`], of the last run.
    #[must_use]
    pub fn grads(&self) -> &DeviceVec<f32> {
        &self.grads
    }

    /// Records the evaluation into `pass`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn encode(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| self.dispatch.record(pass))
    }

    /// Records the log-densities only (`values[3·row]`, the same bits as
    /// [`DirichletKernel::encode`]'s; the entropy, KL and gradients are not
    /// touched) into `pass` — what acting needs.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn encode_log_density(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| {
            self.log_density.record(pass)
        })
    }

    /// Submits the evaluation.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn run(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "dirichlet", |pass| {
            self.dispatch.record(pass)
        })
    }
}

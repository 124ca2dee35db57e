//! [`PpoLoss`]: the PPO loss of a minibatch and its gradients on the
//! device — the twin of `dfaas_policies::backend::{actor_loss_gradient,
//! value_loss_gradient}`: the clipped surrogate, the entropy bonus and the
//! KL penalty differentiated to the actor's logits, the capped squared
//! value error differentiated to the critic's values, and their means over
//! the minibatch by a fixed-order reduction.
//!
//! The rows may hold several independent minibatches (groups, e.g. one
//! policy per agent) stored group-major: row `r` belongs to group `r / R`
//! with `R = rows / groups`; each group's gradients are its own means, with
//! its own KL weight.
//!
//! It reads the actor's Dirichlet through a [`DirichletKernel`] (its
//! log-density, entropy, KL and their gradients with respect to α, and its
//! mask), whose concentrations the caller computes from the same logits
//! with a [`super::dirichlet::Concentrations`]: one pass records
//! `Concentrations` → [`DirichletKernel`] → [`PpoLoss`], and the
//! gradients land in the caller's vectors (e.g. the MLPs' `d_output`s).

use super::dirichlet::DirichletKernel;
use super::{DeviceVec, bind_at, checked_product, encode_on, linear_grid, pipeline, run_on, word};
use crate::{GpuContext, GpuError};

/// Number of entries of [`PpoLoss::stats`].
pub const STATS: usize = 5;

/// The loss's coefficients (those of `dfaas_policies::backend::
/// LossCoefficients` that the loss uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSettings {
    /// PPO ratio clip ε (≥ 0).
    pub clip: f32,
    /// Value-loss weight.
    pub value_coeff: f32,
    /// Cap of the squared value error (≥ 0); `None`: no cap.
    pub value_clip: Option<f32>,
    /// Entropy bonus weight (changeable per call:
    /// [`PpoLoss::set_coefficients`]).
    pub entropy_coeff: f32,
    /// KL penalty weight of every group at construction, 0 disables it
    /// (changeable per group and call).
    pub kl_coeff: f32,
}

/// Uniform parameters, mirrored field for field in `loss.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    width: u32,
    has_cap: u32,
    groups: u32,
    clip: f32,
    value_coeff: f32,
    value_clip: f32,
    inv_group_rows: f32,
    entropy_coeff: f32,
    inv_rows: f32,
    group_rows: u32,
    _pad: u32,
}

/// The vectors a [`PpoLoss`] reads and writes, all on one context.
#[derive(Debug, Clone, Copy)]
pub struct LossBuffers<'a> {
    /// The actor's outputs `[rows][width]` (before softplus).
    pub logits: &'a DeviceVec<f32>,
    /// The Dirichlet evaluated at the concentrations of `logits` (its
    /// `values`, `grads` and `mask` are read).
    pub dirichlet: &'a DirichletKernel,
    /// Written: ∂L/∂logits `[rows][width]` (0 on left-out entries).
    pub d_logits: &'a DeviceVec<f32>,
    /// The critic's values `[rows]`.
    pub values: &'a DeviceVec<f32>,
    /// Written: ∂L/∂values `[rows]` (`c_v`·2·(V − ret)/R, R the rows of a
    /// group; 0 where capped).
    pub d_values: &'a DeviceVec<f32>,
}

/// The PPO loss of `groups` minibatches of `R = rows / groups` samples each
/// (group-major rows): inputs
/// ([`PpoLoss::old_log_prob`], [`PpoLoss::advantages`],
/// [`PpoLoss::returns`], all `[rows]`, and the [`LossBuffers`] it was built
/// on), outputs (the gradients into [`LossBuffers::d_logits`] and
/// [`LossBuffers::d_values`], the means into [`PpoLoss::stats`] and
/// [`PpoLoss::group_kl`]); usable only with the [`GpuContext`] it was built
/// on.
#[derive(Debug)]
pub struct PpoLoss {
    context: u64,
    settings: LossSettings,
    params: Params,
    uniform: wgpu::Buffer,
    rows_pipeline: wgpu::ComputePipeline,
    means_pipeline: wgpu::ComputePipeline,
    group_kl_pipeline: wgpu::ComputePipeline,
    rows_group: wgpu::BindGroup,
    means_group: wgpu::BindGroup,
    group_kl_group: wgpu::BindGroup,
    rows_grid: [u32; 3],
    groups_grid: [u32; 3],
    kl_coeffs: Vec<f32>,
    kl_coeffs_buf: DeviceVec<f32>,
    group_kl: DeviceVec<f32>,
    old_log_prob: DeviceVec<f32>,
    advantages: DeviceVec<f32>,
    returns: DeviceVec<f32>,
    stats: DeviceVec<f32>,
}

/// `Ok` when every coefficient is finite, ε and the cap ≥ 0.
fn check_settings(settings: &LossSettings) -> Result<(), GpuError> {
    let mut checks = vec![
        ("clip", settings.clip, settings.clip >= 0.0),
        ("value_coeff", settings.value_coeff, true),
        ("entropy_coeff", settings.entropy_coeff, true),
        ("kl_coeff", settings.kl_coeff, true),
    ];
    if let Some(cap) = settings.value_clip {
        checks.push(("value_clip", cap, cap >= 0.0));
    }
    for (field, value, ok) in checks {
        if !(value.is_finite() && ok) {
            return Err(GpuError::Input {
                field,
                reason: format!("must be finite (and ≥ 0 for clip and value_clip), got {value}"),
            });
        }
    }
    Ok(())
}

/// `Ok` when there is one finite KL weight per group.
fn check_kl_coeffs(kl_coeffs: &[f32], groups: usize) -> Result<(), GpuError> {
    if kl_coeffs.len() != groups {
        return Err(GpuError::Input {
            field: "kl_coeffs",
            reason: format!("{} weights for {groups} groups", kl_coeffs.len()),
        });
    }
    if let Some(bad) = kl_coeffs.iter().find(|c| !c.is_finite()) {
        return Err(GpuError::Input {
            field: "kl_coeffs",
            reason: format!("must be finite, got {bad}"),
        });
    }
    Ok(())
}

impl PpoLoss {
    /// The loss over `buffers` with `settings`, its rows split into
    /// `groups` minibatches of equal size (every group's KL weight
    /// `settings.kl_coeff` to begin with); the rows and the width are the
    /// [`LossBuffers::dirichlet`] kernel's.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] when a vector lives on another
    /// context than `ctx`; [`GpuError::Input`] naming the field when a
    /// setting is out of range (not finite, ε or the cap < 0), `groups` is
    /// 0 or does not divide the rows, a vector's length does not fit the
    /// kernel's rows and width, an output vector is also an input (or the
    /// other output), or sizes exceed the device.
    pub fn new(
        ctx: &GpuContext,
        buffers: LossBuffers<'_>,
        settings: LossSettings,
        groups: usize,
    ) -> Result<Self, GpuError> {
        check_settings(&settings)?;
        let dirichlet = buffers.dirichlet;
        let rows = dirichlet.values().len() / 3;
        if groups == 0 || !rows.is_multiple_of(groups) {
            return Err(GpuError::Input {
                field: "groups",
                reason: format!("{groups} groups must be ≥ 1 and divide the {rows} rows"),
            });
        }
        let group_rows = rows / groups;
        let width = dirichlet.alpha().len() / rows;
        let (ctx_id, wide) = (ctx.id(), dirichlet.alpha().len());
        dirichlet.values().check(ctx_id, "dirichlet", rows * 3)?;
        buffers.logits.check(ctx_id, "logits", wide)?;
        buffers.d_logits.check(ctx_id, "d_logits", wide)?;
        buffers.values.check(ctx_id, "values", rows)?;
        buffers.d_values.check(ctx_id, "d_values", rows)?;
        let read = [
            buffers.logits,
            buffers.values,
            dirichlet.values(),
            dirichlet.grads(),
        ];
        for (field, written, other) in [
            ("d_logits", buffers.d_logits, buffers.d_values),
            ("d_values", buffers.d_values, buffers.d_logits),
        ] {
            if read
                .iter()
                .chain([&other])
                .any(|v| std::ptr::eq(*v, written))
            {
                return Err(GpuError::Input {
                    field,
                    reason: "must be another vector than the loss's other vectors".into(),
                });
            }
        }
        let params = Params {
            rows: word("rows", rows)?,
            width: word("width", width)?,
            has_cap: u32::from(settings.value_clip.is_some()),
            groups: word("groups", groups)?,
            clip: settings.clip,
            value_coeff: settings.value_coeff,
            value_clip: settings.value_clip.unwrap_or(0.0),
            // The CPU's `scale` of a group's minibatch, the same bits.
            inv_group_rows: 1.0 / group_rows as f32,
            entropy_coeff: settings.entropy_coeff,
            inv_rows: 1.0 / rows as f32,
            group_rows: word("rows", group_rows)?,
            _pad: 0,
        };
        let terms_len = checked_product("rows", &[rows, STATS])?;
        // The terms' last index, 5·rows − 1, must fit a u32.
        word("rows", terms_len)?;
        let vector = |field| DeviceVec::<f32>::zeros(ctx, field, rows);
        let (old_log_prob, advantages, returns) = (
            vector("old_log_prob")?,
            vector("advantages")?,
            vector("returns")?,
        );
        let terms = DeviceVec::<f32>::zeros(ctx, "loss.terms", terms_len)?;
        let stats = DeviceVec::<f32>::zeros(ctx, "loss.stats", STATS)?;
        let kl_coeffs = vec![settings.kl_coeff; groups];
        let kl_coeffs_buf = DeviceVec::from_slice(ctx, "kl_coeffs", &kl_coeffs)?;
        let group_kl = DeviceVec::<f32>::zeros(ctx, "loss.group_kl", groups)?;
        // COPY_DST: the coefficients are rewritten between calls.
        let uniform = ctx.buffer_with(
            "loss",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        );
        let source = include_str!("loss.wgsl");
        let rows_pipeline = pipeline(ctx, "loss.rows", source, "loss_rows");
        let means_pipeline = pipeline(ctx, "loss.means", source, "loss_means");
        let group_kl_pipeline = pipeline(ctx, "loss.group_kl", source, "loss_group_kl");
        let rows_group = bind_at(
            ctx,
            "loss.rows",
            &rows_pipeline,
            &[
                (0, &uniform),
                (1, buffers.logits.buffer()),
                (2, dirichlet.values().buffer()),
                (3, dirichlet.grads().buffer()),
                (4, dirichlet.mask().buffer()),
                (5, old_log_prob.buffer()),
                (6, advantages.buffer()),
                (7, buffers.values.buffer()),
                (8, returns.buffer()),
                (9, buffers.d_logits.buffer()),
                (10, buffers.d_values.buffer()),
                (11, terms.buffer()),
                (13, kl_coeffs_buf.buffer()),
            ],
        );
        let means_group = bind_at(
            ctx,
            "loss.means",
            &means_pipeline,
            &[(0, &uniform), (11, terms.buffer()), (12, stats.buffer())],
        );
        let group_kl_group = bind_at(
            ctx,
            "loss.group_kl",
            &group_kl_pipeline,
            &[(0, &uniform), (11, terms.buffer()), (14, group_kl.buffer())],
        );
        Ok(Self {
            context: ctx_id,
            settings,
            params,
            uniform,
            rows_pipeline,
            means_pipeline,
            group_kl_pipeline,
            rows_group,
            means_group,
            group_kl_group,
            rows_grid: linear_grid(ctx, "rows", rows, 64)?,
            groups_grid: linear_grid(ctx, "groups", groups, 1)?,
            kl_coeffs,
            kl_coeffs_buf,
            group_kl,
            old_log_prob,
            advantages,
            returns,
            stats,
        })
    }

    /// The settings in use; `kl_coeff` is group 0's KL weight (all of
    /// them: [`PpoLoss::kl_coeffs`]).
    #[must_use]
    pub fn settings(&self) -> LossSettings {
        self.settings
    }

    /// Number of groups (minibatches of `rows / groups` rows).
    #[must_use]
    pub fn groups(&self) -> usize {
        self.kl_coeffs.len()
    }

    /// The KL weight of each group in use, `[groups]`.
    #[must_use]
    pub fn kl_coeffs(&self) -> &[f32] {
        &self.kl_coeffs
    }

    /// Sets the entropy weight and each group's KL weight (`[groups]`) of
    /// the following calls (the trainer's entropy schedule and adaptive
    /// KL): two uploads, the uniform parameters (48 bytes) and the weights
    /// (4·groups bytes), both counted; nothing rebuilt.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Input`] naming
    /// `entropy_coeff` when it is not finite, `kl_coeffs` when it is not
    /// one finite weight per group (nothing is changed then).
    pub fn set_coefficients(
        &mut self,
        ctx: &GpuContext,
        entropy_coeff: f32,
        kl_coeffs: &[f32],
    ) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        check_kl_coeffs(kl_coeffs, self.groups())?;
        let settings = LossSettings {
            entropy_coeff,
            kl_coeff: kl_coeffs[0],
            ..self.settings
        };
        check_settings(&settings)?;
        self.settings = settings;
        self.params.entropy_coeff = entropy_coeff;
        self.kl_coeffs.copy_from_slice(kl_coeffs);
        ctx.upload(&self.uniform, 0, bytemuck::bytes_of(&self.params));
        self.kl_coeffs_buf.write(ctx, kl_coeffs)?;
        Ok(())
    }

    /// Log-densities of the actions under the old policy `[rows]`.
    #[must_use]
    pub fn old_log_prob(&self) -> &DeviceVec<f32> {
        &self.old_log_prob
    }

    /// Advantages `[rows]` (standardised if wanted).
    #[must_use]
    pub fn advantages(&self) -> &DeviceVec<f32> {
        &self.advantages
    }

    /// Value targets `[rows]`.
    #[must_use]
    pub fn returns(&self) -> &DeviceVec<f32> {
        &self.returns
    }

    /// `[STATS]`, means over all rows of the last call (the mean of the
    /// groups' means): policy loss `−min(r·A, clip(r)·A)`, value loss
    /// `min((V − R)², cap)` (before `c_v`), entropy, KL(old ‖ new) (0 on
    /// the rows of a group whose KL weight is 0), clip fraction.
    #[must_use]
    pub fn stats(&self) -> &DeviceVec<f32> {
        &self.stats
    }

    /// `[groups]`, each group's mean KL(old ‖ new) over its rows in the
    /// last call (0 for a group whose KL weight is 0).
    #[must_use]
    pub fn group_kl(&self) -> &DeviceVec<f32> {
        &self.group_kl
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.rows_pipeline);
        pass.set_bind_group(0, &self.rows_group, &[]);
        let [x, y, z] = self.rows_grid;
        pass.dispatch_workgroups(x, y, z);
        pass.set_pipeline(&self.means_pipeline);
        pass.set_bind_group(0, &self.means_group, &[]);
        pass.dispatch_workgroups(1, 1, 1);
        pass.set_pipeline(&self.group_kl_pipeline);
        pass.set_bind_group(0, &self.group_kl_group, &[]);
        let [x, y, z] = self.groups_grid;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Records the loss (gradients, then the means and the groups' KL
    /// means) into `pass`, after the
    /// [`DirichletKernel`]'s evaluation.
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

    /// Submits the loss.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn run(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "loss", |pass| self.record(pass))
    }
}

//! [`GlobalNormClip`]: the L2 norm of each group's gradients over one or
//! more vectors (e.g. a policy's actor and critic) and their scaling to a
//! cap — the twin of `dfaas_policies::adam::clip_global_norm`, per group.
//!
//! Each part is laid out `[G][len]` (group `g`'s gradients at
//! `g·len..(g + 1)·len`, as a [`super::mlp::GroupedMlp`]'s). The squares
//! are summed by a fixed-order tree reduction in f32 (the CPU sums in f64):
//! the norm is the same bits run to run on one device.

use super::{DeviceVec, bind_at, encode_on, grid, linear_grid, pipeline, run_on, uniform, word};
use crate::{GpuContext, GpuError};

/// Uniform parameters, mirrored field for field in `clip.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    part_len: u32,
    chunk_offset: u32,
    total_chunks: u32,
    has_max: u32,
    max_norm: f32,
    groups: u32,
    _pad: [u32; 2],
}

/// Entries summed by one workgroup of the first stage.
const CHUNK: usize = 1024;

/// One part's dispatches: its partial sums and its scaling.
#[derive(Debug)]
struct Part {
    partial_group: wgpu::BindGroup,
    partial_workgroups: [u32; 3],
    scale_group: wgpu::BindGroup,
    scale_workgroups: [u32; 3],
}

/// Norm and clipping of G groups' gradients over fixed parts; usable only
/// with the [`GpuContext`] it was built on.
#[derive(Debug)]
pub struct GlobalNormClip {
    context: u64,
    clips: bool,
    partial: wgpu::ComputePipeline,
    finish: wgpu::ComputePipeline,
    scale: wgpu::ComputePipeline,
    parts: Vec<Part>,
    finish_group: wgpu::BindGroup,
    finish_workgroups: [u32; 3],
    norms: DeviceVec<f32>,
}

impl GlobalNormClip {
    /// Clipping of `groups` groups' gradients in `parts` (each `[groups][len]`
    /// for its own `len`) to the joint norm `max_norm` per group; `None`:
    /// the norms only, nothing scaled.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] when a part lives on another context;
    /// [`GpuError::Input`] for no part, `groups` of 0, a part that is empty
    /// or not a multiple of `groups` long, the same vector twice, a cap
    /// that is not finite and positive, or sizes beyond the device's
    /// dispatch limits.
    pub fn new(
        ctx: &GpuContext,
        parts: &[&DeviceVec<f32>],
        groups: usize,
        max_norm: Option<f32>,
    ) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if parts.is_empty() {
            return Err(input("parts", "needs at least one vector".into()));
        }
        if groups == 0 {
            return Err(input("groups", "must be positive, got 0".into()));
        }
        if let Some(max) = max_norm.filter(|m| !(m.is_finite() && *m > 0.0)) {
            return Err(input(
                "max_norm",
                format!("must be finite and > 0, got {max}"),
            ));
        }
        let mut lens = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            part.check(ctx.id(), "parts", part.len())?;
            if part.is_empty() || part.len() % groups != 0 {
                return Err(input(
                    "parts",
                    format!(
                        "part {i}: {} values are not a positive multiple of {groups} groups",
                        part.len()
                    ),
                ));
            }
            if parts[..i]
                .iter()
                .any(|earlier| std::ptr::eq(*earlier, *part))
            {
                return Err(input("parts", format!("part {i} is given twice")));
            }
            lens.push(part.len() / groups);
        }
        let chunks: Vec<usize> = lens.iter().map(|l| l.div_ceil(CHUNK)).collect();
        let total: usize = chunks.iter().sum();
        let partials = DeviceVec::<f32>::zeros(
            ctx,
            "parts",
            total
                .checked_mul(groups)
                .ok_or_else(|| input("parts", "too many values".into()))?,
        )?;
        let norms = DeviceVec::zeros(ctx, "groups", groups)?;
        let scales = DeviceVec::<f32>::zeros(ctx, "groups", groups)?;
        let source = include_str!("clip.wgsl");
        let partial = pipeline(ctx, "clip.partial", source, "partial");
        let finish = pipeline(ctx, "clip.finish", source, "finish");
        let scale = pipeline(ctx, "clip.scale", source, "scale");
        let (total32, groups32) = (word("parts", total)?, word("groups", groups)?);
        let mut offset = 0usize;
        let mut built = Vec::with_capacity(parts.len());
        for ((part, &len), &n_chunks) in parts.iter().zip(&lens).zip(&chunks) {
            let params = uniform(
                ctx,
                "clip.part",
                &Params {
                    part_len: word("parts", len)?,
                    chunk_offset: word("parts", offset)?,
                    total_chunks: total32,
                    groups: groups32,
                    ..Params::default()
                },
            );
            built.push(Part {
                partial_group: bind_at(
                    ctx,
                    "clip.partial",
                    &partial,
                    &[(0, &params), (1, part.buffer()), (2, partials.buffer())],
                ),
                partial_workgroups: grid(ctx, "parts", [n_chunks, groups, 1])?,
                scale_group: bind_at(
                    ctx,
                    "clip.scale",
                    &scale,
                    &[(0, &params), (1, part.buffer()), (4, scales.buffer())],
                ),
                scale_workgroups: linear_grid(ctx, "parts", part.len(), 256)?,
            });
            offset += n_chunks;
        }
        let finish_params = uniform(
            ctx,
            "clip.finish",
            &Params {
                total_chunks: total32,
                has_max: u32::from(max_norm.is_some()),
                max_norm: max_norm.unwrap_or(0.0),
                groups: groups32,
                ..Params::default()
            },
        );
        let finish_workgroups = grid(ctx, "groups", [groups, 1, 1])?;
        let finish_group = bind_at(
            ctx,
            "clip.finish",
            &finish,
            &[
                (0, &finish_params),
                (2, partials.buffer()),
                (3, norms.buffer()),
                (4, scales.buffer()),
            ],
        );
        Ok(Self {
            context: ctx.id(),
            clips: max_norm.is_some(),
            partial,
            finish,
            scale,
            parts: built,
            finish_group,
            finish_workgroups,
            norms,
        })
    }

    /// Each group's gradient norm before scaling `[G]`, from the last run.
    #[must_use]
    pub fn norms(&self) -> &DeviceVec<f32> {
        &self.norms
    }

    /// Records the norms and, with a cap, the scaling into `pass`.
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
        pass.set_pipeline(&self.partial);
        for part in &self.parts {
            pass.set_bind_group(0, &part.partial_group, &[]);
            let [x, y, z] = part.partial_workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
        pass.set_pipeline(&self.finish);
        pass.set_bind_group(0, &self.finish_group, &[]);
        let [x, y, z] = self.finish_workgroups;
        pass.dispatch_workgroups(x, y, z);
        if self.clips {
            pass.set_pipeline(&self.scale);
            for part in &self.parts {
                pass.set_bind_group(0, &part.scale_group, &[]);
                let [x, y, z] = part.scale_workgroups;
                pass.dispatch_workgroups(x, y, z);
            }
        }
    }

    /// Submits the norms and, with a cap, the scaling.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn run(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "clip", |pass| self.record(pass))
    }
}

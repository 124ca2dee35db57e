//! The numeric operations of a PPO update as WGSL kernels, each the twin of
//! a CPU operation of `dfaas-policies` (and tested against it there, in
//! `dfaas-policies/tests/gpu_kernels.rs`):
//!
//! * [`mlp::GroupedMlp`] — G dense networks of equal (padded) widths, one
//!   dispatch per layer for all groups: forward keeping the activations,
//!   backward to the parameter gradients (`dfaas_policies::mlp::Mlp`);
//! * [`adam::GpuAdam`] — Adam with PyTorch's bias correction
//!   (`dfaas_policies::adam::Adam::step`);
//! * [`clip::GlobalNormClip`] — the global gradient norm per group by a
//!   fixed-order tree reduction, and the scaling to a cap
//!   (`dfaas_policies::adam::clip_global_norm`);
//! * [`dirichlet::Concentrations`] and [`dirichlet::DirichletKernel`] —
//!   `softplus(x) + 1e-7` and the Dirichlet log-density, entropy and KL
//!   with their gradients (`dfaas_policies::dirichlet`);
//! * [`sampler::DirichletSampler`] — a Dirichlet draw per row from its own
//!   Xoshiro128++ stream on the device, Gamma by Marsaglia–Tsang with the
//!   α < 1 boost (`dfaas_policies::dirichlet::sample`, in distribution);
//! * [`gae::Gae`] — GAE as a reverse scan per column and the
//!   standardisation of advantages (`dfaas_policies::gae`);
//! * [`loss::PpoLoss`] — the clipped surrogate, entropy and KL terms
//!   differentiated to the actor's logits, the capped value loss to the
//!   critic's values, and their means by a fixed-order reduction
//!   (`dfaas_policies::backend::{actor_loss_gradient, value_loss_gradient}`).
//!
//! Tensors live in [`DeviceVec`]s: flat, row-major, `f32` or `u32`, on one
//! [`GpuContext`]'s device. Every reduction sums in a fixed order (no float
//! atomics), so a kernel gives the same bits run to run on one device.
//! Pipelines, uniform buffers and bind groups are made once, when a kernel
//! object is built; a call then records dispatches (`encode*`, several
//! kernels in one submit through [`submit_pass`]) or submits them (the
//! plain methods).

pub mod adam;
pub mod clip;
pub mod dirichlet;
pub mod gae;
pub mod loss;
pub mod mlp;
pub mod sampler;

use crate::{GpuContext, GpuError};
use std::marker::PhantomData;

/// A flat vector of `T` (`f32` or `u32`) in a storage buffer of one
/// [`GpuContext`]'s device; every upload and read-back goes through the
/// context (counted in its [`crate::Traffic`]).
#[derive(Debug)]
pub struct DeviceVec<T> {
    buffer: wgpu::Buffer,
    len: usize,
    context: u64,
    element: PhantomData<T>,
}

impl<T: bytemuck::Pod> DeviceVec<T> {
    /// The buffer size for `len` elements, checked against the device.
    fn size(ctx: &GpuContext, field: &'static str, len: usize) -> Result<u64, GpuError> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .and_then(|b| u64::try_from(b).ok());
        let largest = ctx.largest_buffer();
        match bytes {
            // Copies move whole 4-byte words.
            Some(b) if b <= largest => Ok(b.max(4).next_multiple_of(4)),
            _ => Err(GpuError::Input {
                field,
                reason: format!(
                    "{len} values of {} bytes exceed this device's {largest}-byte buffers",
                    size_of::<T>()
                ),
            }),
        }
    }

    /// A vector of `len` zeros on `ctx`'s device (nothing uploaded).
    ///
    /// # Errors
    /// [`GpuError::Input`] naming `field` when `len` values exceed the
    /// device's largest binding (or 4 GiB).
    pub fn zeros(ctx: &GpuContext, field: &'static str, len: usize) -> Result<Self, GpuError> {
        let size = Self::size(ctx, field, len)?;
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(field),
            size,
            usage: usages(),
            mapped_at_creation: false,
        });
        Ok(Self {
            buffer,
            len,
            context: ctx.id(),
            element: PhantomData,
        })
    }

    /// `values` uploaded to `ctx`'s device.
    ///
    /// # Errors
    /// As [`DeviceVec::zeros`].
    pub fn from_slice(
        ctx: &GpuContext,
        field: &'static str,
        values: &[T],
    ) -> Result<Self, GpuError> {
        Self::size(ctx, field, values.len())?;
        let buffer = if values.is_empty() {
            ctx.buffer_with(field, &[0; 4], usages())
        } else {
            ctx.buffer_with(field, bytemuck::cast_slice(values), usages())
        };
        Ok(Self {
            buffer,
            len: values.len(),
            context: ctx.id(),
            element: PhantomData,
        })
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no element.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The storage buffer (`STORAGE | COPY_SRC | COPY_DST`), for binding in
    /// the caller's own kernels.
    #[must_use]
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }

    /// Overwrites every element with `values`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the vector's;
    /// [`GpuError::Input`] when `values` is not [`DeviceVec::len`] long.
    pub fn write(&self, ctx: &GpuContext, values: &[T]) -> Result<(), GpuError> {
        ctx.check(self.context)?;
        if values.len() != self.len {
            return Err(GpuError::Input {
                field: "values",
                reason: format!("expected {} values, got {}", self.len, values.len()),
            });
        }
        if !values.is_empty() {
            ctx.upload(&self.buffer, 0, bytemuck::cast_slice(values));
        }
        Ok(())
    }

    /// The elements, read back (after every submitted command).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`]; [`GpuError::Readback`].
    pub fn read(&self, ctx: &GpuContext) -> Result<Vec<T>, GpuError> {
        ctx.check(self.context)?;
        let mut values: Vec<T> = ctx.read_buffer(&self.buffer)?;
        values.truncate(self.len);
        Ok(values)
    }

    /// `Ok` when the vector lives on context `context` and holds `len`
    /// elements.
    pub(crate) fn check(
        &self,
        context: u64,
        field: &'static str,
        len: usize,
    ) -> Result<(), GpuError> {
        if self.context != context {
            return Err(GpuError::ContextMismatch {
                built_on: context,
                called_with: self.context,
            });
        }
        if self.len != len {
            return Err(GpuError::Input {
                field,
                reason: format!("expected {len} values, got {}", self.len),
            });
        }
        Ok(())
    }
}

fn usages() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// A compute pipeline of `source`'s entry point `entry` (the bind group
/// layout derived from the shader).
pub(crate) fn pipeline(
    ctx: &GpuContext,
    label: &str,
    source: &str,
    entry: &str,
) -> wgpu::ComputePipeline {
    let module = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
    ctx.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        })
}

/// A bind group of `pipeline`'s group 0 with `buffers` at bindings 0, 1, …
pub(crate) fn bind(
    ctx: &GpuContext,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
) -> wgpu::BindGroup {
    let numbered: Vec<(u32, &wgpu::Buffer)> = (0u32..).zip(buffers.iter().copied()).collect();
    bind_at(ctx, label, pipeline, &numbered)
}

/// A bind group of `pipeline`'s group 0 with each buffer at its binding
/// (for entry points that use a subset of their module's bindings).
pub(crate) fn bind_at(
    ctx: &GpuContext,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[(u32, &wgpu::Buffer)],
) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
        .iter()
        .map(|&(binding, buffer)| wgpu::BindGroupEntry {
            binding,
            resource: buffer.as_entire_binding(),
        })
        .collect();
    ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    })
}

/// Workgroups of `size` invocations for `len` elements, as `[x, y, 1]`
/// with `x` within the device's limit (the kernels index `(y·x_count +
/// x)·size + local`).
///
/// # Errors
/// [`GpuError::Input`] naming `field` when even that exceeds the device.
pub(crate) fn linear_grid(
    ctx: &GpuContext,
    field: &'static str,
    len: usize,
    size: usize,
) -> Result<[u32; 3], GpuError> {
    let limit = ctx.device.limits().max_compute_workgroups_per_dimension as usize;
    let groups = len.div_ceil(size).max(1);
    let x = groups.min(limit);
    grid(ctx, field, [x, groups.div_ceil(x), 1])
}

/// A uniform buffer holding `value` (counted as uploaded).
pub(crate) fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, label: &str, value: &T) -> wgpu::Buffer {
    ctx.buffer_with(
        label,
        bytemuck::bytes_of(value),
        wgpu::BufferUsages::UNIFORM,
    )
}

/// Workgroups `[x, y, z]`, each within the device's per-dimension limit.
///
/// # Errors
/// [`GpuError::Input`] naming `field` otherwise.
pub(crate) fn grid(
    ctx: &GpuContext,
    field: &'static str,
    dims: [usize; 3],
) -> Result<[u32; 3], GpuError> {
    let limit = ctx.device.limits().max_compute_workgroups_per_dimension;
    let mut out = [0u32; 3];
    for (o, &d) in out.iter_mut().zip(&dims) {
        *o = u32::try_from(d)
            .ok()
            .filter(|&d| d <= limit)
            .ok_or_else(|| GpuError::Input {
                field,
                reason: format!(
                    "needs {dims:?} workgroups; this device allows {limit} per dimension"
                ),
            })?;
    }
    Ok(out)
}

/// The product of `values` in checked arithmetic, or [`GpuError::Input`] naming `field`.
pub(crate) fn checked_product(field: &'static str, values: &[usize]) -> Result<usize, GpuError> {
    values
        .iter()
        .try_fold(1usize, |acc, &v| acc.checked_mul(v))
        .ok_or_else(|| GpuError::Input {
            field,
            reason: format!("the product of {values:?} overflows"),
        })
}

/// `value` as a WGSL `u32`, or [`GpuError::Input`] naming `field`.
pub(crate) fn word(field: &'static str, value: usize) -> Result<u32, GpuError> {
    u32::try_from(value).map_err(|_| GpuError::Input {
        field,
        reason: format!("{value} does not fit a 32-bit index"),
    })
}

/// Records `record`'s dispatches (the kernels' `encode*` methods) into one
/// compute pass and submits it — one counted submit, e.g. for a backward
/// pass, the clipping and the Adam step of an update together. Nothing is
/// submitted when `record` fails.
///
/// # Errors
/// The first error of `record`.
pub fn submit_pass(
    ctx: &GpuContext,
    label: &str,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>) -> Result<(), GpuError>,
) -> Result<(), GpuError> {
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(label),
            timestamp_writes: None,
        });
        record(&mut pass)?;
    }
    ctx.submit(encoder);
    Ok(())
}

/// One compute dispatch of a kernel object — a pipeline, its bind group and
/// its workgroup grid — made once, recorded at every call.
#[derive(Debug)]
struct Dispatch {
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
}

impl Dispatch {
    /// Records the dispatch into `pass`.
    fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.grid;
        pass.dispatch_workgroups(x, y, z);
    }
}

/// A kernel's `encode*`: checks that `ctx` is the context `built_on`, then
/// records `record`'s dispatches into the caller's `pass`.
fn encode_on(
    ctx: &GpuContext,
    built_on: u64,
    pass: &mut wgpu::ComputePass<'_>,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>),
) -> Result<(), GpuError> {
    ctx.check(built_on)?;
    record(pass);
    Ok(())
}

/// A kernel's plain call: checks that `ctx` is the context `built_on`, then
/// submits `record`'s dispatches in one pass.
fn run_on(
    ctx: &GpuContext,
    built_on: u64,
    label: &str,
    record: impl FnOnce(&mut wgpu::ComputePass<'_>),
) -> Result<(), GpuError> {
    ctx.check(built_on)?;
    submit_pass(ctx, label, |pass| {
        record(pass);
        Ok(())
    })
}

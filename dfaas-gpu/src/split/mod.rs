//! The split kernel: every row's input rate split by its action on the GPU,
//! with the semantics (and results) of `dfaas_core::split::split_requests`.

use crate::{GpuContext, GpuError};
use dfaas_core::input_rate::MAX_INPUT_RATE;

/// Uniform parameters, mirrored field for field in `shader.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    width: u32,
}

/// Largest number of entries per row.
pub const MAX_ENTRIES: usize = 64;

/// The compiled split pipeline, usable only with the [`GpuContext`] it was
/// built on.
#[derive(Debug)]
pub struct SplitKernel {
    pipeline: wgpu::ComputePipeline,
    context: u64,
}

impl SplitKernel {
    /// Compiles the kernel on `ctx`'s device.
    ///
    /// # Errors
    /// [`GpuError::Shader`] if the shared WGSL cannot be specialised.
    pub fn new(ctx: &GpuContext) -> Result<Self, GpuError> {
        let module = ctx.shader("split", include_str!("shader.wgsl"), MAX_ENTRIES)?;
        let pipeline = ctx
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("split"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        Ok(Self {
            pipeline,
            context: ctx.id(),
        })
    }

    /// Splits row `r`'s `rates[r]` by its first `lengths[r]` action entries
    /// (`actions` is `[rows][width]`); returns the counts `[rows][width]`
    /// (zeros after each row's length).
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the kernel's;
    /// [`GpuError::Input`] for inconsistent sizes, a length outside
    /// `1..=width`, a rate above `dfaas_core::input_rate::MAX_INPUT_RATE`
    /// (2²⁰ requests; the largest the envs accept) or a non-finite action;
    /// [`GpuError::Readback`] if the result cannot be read.
    pub fn run(
        &self,
        ctx: &GpuContext,
        actions: &[f32],
        lengths: &[u32],
        rates: &[u32],
        width: usize,
    ) -> Result<Vec<u32>, GpuError> {
        ctx.check(self.context)?;
        let rows = rates.len();
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if width == 0 || width > MAX_ENTRIES {
            return Err(input(
                "width",
                format!("must be in 1..={MAX_ENTRIES}, got {width}"),
            ));
        }
        if lengths.len() != rows || actions.len() != rows * width {
            return Err(input(
                "actions",
                format!(
                    "{} actions and {} lengths for {rows} rows of width {width}",
                    actions.len(),
                    lengths.len()
                ),
            ));
        }
        if let Some((r, l)) = lengths
            .iter()
            .enumerate()
            .find(|(_, l)| !(1..=width as u32).contains(l))
        {
            return Err(input(
                "lengths",
                format!("row {r}: {l} is not in 1..={width}"),
            ));
        }
        if let Some((r, v)) = rates.iter().enumerate().find(|(_, v)| **v > MAX_INPUT_RATE) {
            return Err(input(
                "rates",
                format!("row {r}: {v} is above {MAX_INPUT_RATE}"),
            ));
        }
        if let Some(i) = actions.iter().position(|p| !p.is_finite()) {
            return Err(input("actions", format!("entry {i} is {}", actions[i])));
        }
        if rows == 0 {
            return Ok(Vec::new());
        }
        let largest = ctx.largest_buffer();
        if (rows * width * 4) as u64 > largest {
            return Err(input(
                "actions",
                format!("{rows} rows of width {width} exceed this device's {largest}-byte buffers"),
            ));
        }
        let device = &ctx.device;
        let storage =
            |label: &str, bytes: &[u8]| ctx.buffer_with(label, bytes, wgpu::BufferUsages::STORAGE);
        let actions_buf = storage("split.actions", bytemuck::cast_slice(actions));
        let lengths_buf = storage("split.lengths", bytemuck::cast_slice(lengths));
        let rates_buf = storage("split.rates", bytemuck::cast_slice(rates));
        let size = (rows * width * 4) as u64;
        let counts_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("split.counts"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let params = Params {
            rows: rows as u32,
            width: width as u32,
        };
        let params_buf = ctx.buffer_with(
            "split.params",
            bytemuck::bytes_of(&params),
            wgpu::BufferUsages::UNIFORM,
        );
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("split.bindings"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: actions_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: lengths_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: rates_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: counts_buf.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: params_buf.as_entire_binding(),
                },
            ],
        });
        let groups = (rows as u32).div_ceil(64);
        let (x, y) = (groups.min(65_535), groups.div_ceil(65_535));
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("split"),
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("split"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
        ctx.submit(encoder);
        ctx.read_buffer(&counts_buf)
    }
}

#[cfg(test)]
mod tests;

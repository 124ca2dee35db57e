//! [`GroupedMlp`]: G dense networks of the same widths (one per policy or
//! agent) evaluated and differentiated together, one dispatch per layer and
//! pass for all groups — the GPU twin of `dfaas_policies::mlp::Mlp`.
//!
//! Layouts (flat, row-major, `f32`):
//! * parameters and gradients `[G][P]`: each group's `P` values laid out
//!   exactly as `Mlp`'s flat vector — layer after layer, the weights
//!   `[out][in]` then the biases `[out]`;
//! * the input `[G][batch][widths[0]]` (narrower inputs zero-padded);
//! * layer `l`'s output `[G][batch][widths[l + 1]]`: the hidden activation
//!   applied on hidden layers, linear on the last ([`GroupedMlp::output`]);
//! * ∂L/∂output `[G][batch][widths[L]]` ([`GroupedMlp::d_output`]).
//!
//! The backward pass sums each gradient over the batch by one invocation in
//! ascending sample order (deterministic, no atomics); it overwrites the
//! gradients.

use super::{DeviceVec, bind, checked_product, encode_on, grid, pipeline, run_on, uniform, word};
use crate::{GpuContext, GpuError};

/// Hidden-layer activation (the output layer is linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `dfaas_policies::mlp::fast_tanh`: the same rational approximation,
    /// coefficients and clamp.
    Tanh,
    /// max(0, x).
    Relu,
}

impl Activation {
    fn code(self) -> u32 {
        match self {
            Self::Tanh => 1,
            Self::Relu => 2,
        }
    }
}

/// Uniform parameters of one dispatch, mirrored field for field in
/// `mlp.wgsl` (element `(r, c)` of an operand at `offset + g·group + r·row
/// + c·col`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Gemm {
    m: u32,
    n: u32,
    k: u32,
    mode: u32,
    a: [u32; 4],
    b: [u32; 4],
    c: [u32; 4],
    aux_offset: u32,
    aux_group: u32,
    act: u32,
    bias_offset: u32,
}

const FORWARD: u32 = 0;
const WEIGHT_GRAD: u32 = 1;
const DELTA: u32 = 2;
const TILE: usize = 16;

/// One recorded dispatch: its bind group and workgroup counts.
#[derive(Debug)]
struct Step {
    bind_group: wgpu::BindGroup,
    workgroups: [u32; 3],
}

/// G networks of widths `[input, hidden.., output]` with their parameters,
/// gradients and activations on the device, for a fixed batch size; usable
/// only with the [`GpuContext`] it was built on.
#[derive(Debug)]
pub struct GroupedMlp {
    widths: Vec<usize>,
    groups: usize,
    batch: usize,
    context: u64,
    pipeline: wgpu::ComputePipeline,
    params: DeviceVec<f32>,
    grads: DeviceVec<f32>,
    /// Input of every layer, then the output: `[G][batch][widths[l]]`.
    activations: Vec<DeviceVec<f32>>,
    /// ∂L/∂(output of layer l), `[G][batch][widths[l + 1]]`; the last is
    /// ∂L/∂output.
    deltas: Vec<DeviceVec<f32>>,
    forward: Vec<Step>,
    backward: Vec<Step>,
}

impl GroupedMlp {
    /// `groups` networks of `widths` with `activation` on the hidden
    /// layers, for batches of `batch` rows per group; parameters,
    /// activations and gradients start at zero.
    ///
    /// # Errors
    /// [`GpuError::Input`] for fewer than 2 widths, a width, `groups` or
    /// `batch` of 0, sizes that overflow or exceed the device's buffers
    /// (naming the field), or more workgroups than the device dispatches.
    pub fn new(
        ctx: &GpuContext,
        widths: &[usize],
        activation: Activation,
        groups: usize,
        batch: usize,
    ) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if widths.len() < 2 || widths.contains(&0) {
            return Err(input(
                "widths",
                format!("needs at least 2 widths, none 0; got {widths:?}"),
            ));
        }
        if groups == 0 {
            return Err(input("groups", "must be positive, got 0".into()));
        }
        if batch == 0 {
            return Err(input("batch", "must be positive, got 0".into()));
        }
        let per_group = widths
            .windows(2)
            .try_fold(0usize, |total, w| {
                w[0].checked_add(1)
                    .and_then(|inputs| inputs.checked_mul(w[1]))
                    .and_then(|layer| layer.checked_add(total))
            })
            .ok_or_else(|| {
                input(
                    "widths",
                    format!("{widths:?}: the parameter count overflows"),
                )
            })?;
        let params = DeviceVec::zeros(
            ctx,
            "params",
            checked_product("params", &[groups, per_group])?,
        )?;
        let grads = DeviceVec::zeros(ctx, "grads", params.len())?;
        let activations = widths
            .iter()
            .map(|&w| {
                DeviceVec::zeros(ctx, "batch", checked_product("batch", &[groups, batch, w])?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let deltas = widths[1..]
            .iter()
            .map(|&w| {
                DeviceVec::zeros(ctx, "batch", checked_product("batch", &[groups, batch, w])?)
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every index below is at most a buffer's length, so fits u32.
        let w32 = |v: usize| word("widths", v);
        let (p, b) = (w32(per_group)?, word("batch", batch)?);
        let pipeline = pipeline(ctx, "mlp", include_str!("mlp.wgsl"), "main");
        let act = activation.code();
        let layers = widths.len() - 1;
        let mut offset = 0usize;
        let mut forward = Vec::with_capacity(layers);
        let mut backward: Vec<Vec<Step>> = Vec::with_capacity(layers);
        for l in 0..layers {
            let (n_in, n_out) = (widths[l], widths[l + 1]);
            let (i, o, w_off) = (w32(n_in)?, w32(n_out)?, w32(offset)?);
            let bias = w32(offset + n_out * n_in)?;
            let tiles = |v: usize| v.div_ceil(TILE);
            let gemm = Gemm {
                m: b,
                n: o,
                k: i,
                mode: FORWARD,
                a: [0, b * i, i, 1],
                b: [w_off, p, 1, i],
                c: [0, b * o, o, 1],
                aux_offset: bias,
                aux_group: p,
                act: if l + 1 < layers { act } else { 0 },
                bias_offset: 0,
            };
            forward.push(Step {
                bind_group: bind(
                    ctx,
                    "mlp.forward",
                    &pipeline,
                    &[
                        &uniform(ctx, "mlp.forward", &gemm),
                        activations[l].buffer(),
                        params.buffer(),
                        params.buffer(),
                        activations[l + 1].buffer(),
                    ],
                ),
                workgroups: grid(ctx, "batch", [tiles(n_out), tiles(batch), groups])?,
            });
            // dW[o][i] = Σ_b δ[b][o]·X[b][i], db[o] = Σ_b δ[b][o].
            let weight_grad = Gemm {
                m: o,
                n: i,
                k: b,
                mode: WEIGHT_GRAD,
                a: [0, b * o, 1, o],
                b: [0, b * i, i, 1],
                c: [w_off, p, i, 1],
                aux_offset: 0,
                aux_group: 0,
                act: 0,
                bias_offset: bias,
            };
            let mut steps = vec![Step {
                bind_group: bind(
                    ctx,
                    "mlp.weight_grad",
                    &pipeline,
                    &[
                        &uniform(ctx, "mlp.weight_grad", &weight_grad),
                        deltas[l].buffer(),
                        activations[l].buffer(),
                        params.buffer(),
                        grads.buffer(),
                    ],
                ),
                workgroups: grid(ctx, "widths", [tiles(n_in + 1), tiles(n_out), groups])?,
            }];
            if l > 0 {
                // δ_prev[b][i] = Σ_o δ[b][o]·W[o][i] · act′(X[b][i]).
                let delta = Gemm {
                    m: b,
                    n: i,
                    k: o,
                    mode: DELTA,
                    a: [0, b * o, o, 1],
                    b: [w_off, p, i, 1],
                    c: [0, b * i, i, 1],
                    aux_offset: 0,
                    aux_group: b * i,
                    act,
                    bias_offset: 0,
                };
                steps.push(Step {
                    bind_group: bind(
                        ctx,
                        "mlp.delta",
                        &pipeline,
                        &[
                            &uniform(ctx, "mlp.delta", &delta),
                            deltas[l].buffer(),
                            params.buffer(),
                            activations[l].buffer(),
                            deltas[l - 1].buffer(),
                        ],
                    ),
                    workgroups: grid(ctx, "batch", [tiles(n_in), tiles(batch), groups])?,
                });
            }
            backward.push(steps);
            offset += n_out * n_in + n_out;
        }
        // The backward pass walks the layers from the last.
        let backward = backward.into_iter().rev().flatten().collect();
        Ok(Self {
            widths: widths.to_vec(),
            groups,
            batch,
            context: ctx.id(),
            pipeline,
            params,
            grads,
            activations,
            deltas,
            forward,
            backward,
        })
    }

    /// Layer widths `[input, hidden.., output]`.
    #[must_use]
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// Number of groups G.
    #[must_use]
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// Rows per group in a pass.
    #[must_use]
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Parameters per group (as `Mlp::num_params`).
    #[must_use]
    pub fn params_per_group(&self) -> usize {
        self.params.len() / self.groups
    }

    /// Parameters `[G][P]` (write them with [`DeviceVec::write`]).
    #[must_use]
    pub fn params(&self) -> &DeviceVec<f32> {
        &self.params
    }

    /// ∂L/∂params `[G][P]` of the last backward pass.
    #[must_use]
    pub fn grads(&self) -> &DeviceVec<f32> {
        &self.grads
    }

    /// The input `[G][batch][widths[0]]` (zero-padded rows).
    #[must_use]
    pub fn input(&self) -> &DeviceVec<f32> {
        &self.activations[0]
    }

    /// The output of the last forward pass `[G][batch][output]`.
    #[must_use]
    pub fn output(&self) -> &DeviceVec<f32> {
        &self.activations[self.widths.len() - 1]
    }

    /// Output of hidden layer `l` (`0..layers − 1`) of the last forward
    /// pass, `[G][batch][widths[l + 1]]`, after the activation; `None` past
    /// the hidden layers.
    #[must_use]
    pub fn hidden(&self, l: usize) -> Option<&DeviceVec<f32>> {
        self.activations[1..self.widths.len() - 1].get(l)
    }

    /// ∂L/∂output `[G][batch][output]`, read by [`GroupedMlp::backward`].
    #[must_use]
    pub fn d_output(&self) -> &DeviceVec<f32> {
        &self.deltas[self.widths.len() - 2]
    }

    /// Records the forward pass (one dispatch per layer) into `pass`.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`] for another context than the
    /// network's.
    pub fn encode_forward(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| {
            self.record(pass, &self.forward)
        })
    }

    /// Records the backward pass (per layer from the last: the weight and
    /// bias gradients, then ∂L/∂input of the layer but the first) into
    /// `pass`; it reads the activations of the last forward pass and
    /// [`GroupedMlp::d_output`].
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn encode_backward(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass<'_>,
    ) -> Result<(), GpuError> {
        encode_on(ctx, self.context, pass, |pass| {
            self.record(pass, &self.backward)
        })
    }

    fn record(&self, pass: &mut wgpu::ComputePass<'_>, steps: &[Step]) {
        pass.set_pipeline(&self.pipeline);
        for step in steps {
            pass.set_bind_group(0, &step.bind_group, &[]);
            let [x, y, z] = step.workgroups;
            pass.dispatch_workgroups(x, y, z);
        }
    }

    /// Submits the forward pass of [`GroupedMlp::input`].
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn forward(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "mlp.forward", |pass| {
            self.record(pass, &self.forward);
        })
    }

    /// Submits the backward pass of [`GroupedMlp::d_output`].
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn backward(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "mlp.backward", |pass| {
            self.record(pass, &self.backward);
        })
    }
}

//! [`DirichletSampler`]: one point of the simplex per row from Dir(α), each
//! row from its own random stream on the device — the twin, in
//! distribution (the streams differ), of `dfaas_policies::dirichlet::sample`.
//!
//! Row `r` of a sampler seeded with `seed` runs the Xoshiro128++ stream of
//! `dfaas_core::rng::seeded(env_master_seed(seed, r))` (its state expanded
//! from that seed by SplitMix64 on the host, as `seed_from_u64` does). Gamma
//! draws are Marsaglia–Tsang's, with the boost `Gamma(α + 1)·U^(1/α)` for
//! α < 1, on normals by Marsaglia's polar method and uniforms of 23 random
//! bits; they are kept as logarithms and normalised in log space, so
//! concentrations at the 1e-7 floor stay finite. A draw counts as 0 where
//! the CPU's f64 draw would round to 0, and when every draw of a row does,
//! the mass goes to its largest concentration, as on the CPU.

use super::{
    DeviceVec, Dispatch, bind, checked_product, encode_on, linear_grid, pipeline, run_on, uniform,
    word,
};
use crate::{GpuContext, GpuError};
use dfaas_core::rng::env_master_seed;

/// Uniform parameters, mirrored field for field in `sampler.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Rows {
    rows: u32,
    width: u32,
    _pad: [u32; 2],
}

/// Dirichlet draws for `rows` rows of up to `width` entries, with inputs,
/// outputs and streams on the device; usable only with the [`GpuContext`]
/// it was built on.
///
/// Inputs, `[rows][width]`: [`DirichletSampler::alpha`] (concentrations,
/// finite; an entry with α ≤ 0 draws 0, as the CPU's) and
/// [`DirichletSampler::mask`] (1: the entry is part of the row's
/// distribution, 0: left out; all ones at first). Output:
/// [`DirichletSampler::samples`] `[rows][width]` (a point of the simplex
/// over the used entries, 0 on left-out ones; all 0 for a row without
/// entries). Streams: [`DirichletSampler::state`] `[rows][4]`, each call
/// continuing them.
#[derive(Debug)]
pub struct DirichletSampler {
    context: u64,
    dispatch: Dispatch,
    alpha: DeviceVec<f32>,
    mask: DeviceVec<u32>,
    samples: DeviceVec<f32>,
    state: DeviceVec<u32>,
}

/// The Xoshiro128++ state of row `row`'s stream: the 16 bytes that
/// SplitMix64 seeded with `env_master_seed(seed, row)` produces (two
/// outputs, little-endian), as `Xoshiro128PlusPlus::seed_from_u64` fills
/// them.
fn row_state(seed: u64, row: u64) -> [u32; 4] {
    let start = env_master_seed(seed, row);
    // SplitMix64's k-th output from state `start` is the mix of
    // `start + k·φ`, i.e. `env_master_seed(start, k)`.
    let (first, second) = (env_master_seed(start, 1), env_master_seed(start, 2));
    [
        first as u32,
        (first >> 32) as u32,
        second as u32,
        (second >> 32) as u32,
    ]
}

impl DirichletSampler {
    /// Buffers, streams seeded from `seed` and pipeline for `rows` rows of
    /// `width` entries.
    ///
    /// # Errors
    /// [`GpuError::Input`] for `rows` or `width` of 0, or sizes that
    /// overflow or exceed the device's buffers or dispatch limits.
    pub fn new(ctx: &GpuContext, rows: usize, width: usize, seed: u64) -> Result<Self, GpuError> {
        let input = |field: &'static str, reason: String| GpuError::Input { field, reason };
        if rows == 0 {
            return Err(input("rows", "must be positive, got 0".into()));
        }
        if width == 0 {
            return Err(input("width", "must be positive, got 0".into()));
        }
        let wide = checked_product("rows", &[rows, width])?;
        // Every index, `rows·width − 1` and `4·rows − 1`, must fit a u32.
        word("rows", wide)?;
        word("rows", checked_product("rows", &[rows, 4])?)?;
        let alpha = DeviceVec::zeros(ctx, "alpha", wide)?;
        let mask = DeviceVec::from_slice(ctx, "mask", &vec![1u32; wide])?;
        let samples = DeviceVec::zeros(ctx, "samples", wide)?;
        let words: Vec<u32> = (0..rows as u64).flat_map(|r| row_state(seed, r)).collect();
        let state = DeviceVec::from_slice(ctx, "state", &words)?;
        let workgroups = linear_grid(ctx, "rows", rows, 64)?;
        let params = uniform(
            ctx,
            "dirichlet_sampler",
            &Rows {
                rows: word("rows", rows)?,
                width: word("width", width)?,
                _pad: [0; 2],
            },
        );
        let pipeline = pipeline(
            ctx,
            "dirichlet_sampler",
            include_str!("sampler.wgsl"),
            "sample_main",
        );
        let bind_group = bind(
            ctx,
            "dirichlet_sampler",
            &pipeline,
            &[
                &params,
                alpha.buffer(),
                mask.buffer(),
                samples.buffer(),
                state.buffer(),
            ],
        );
        Ok(Self {
            context: ctx.id(),
            dispatch: Dispatch {
                pipeline,
                bind_group,
                grid: workgroups,
            },
            alpha,
            mask,
            samples,
            state,
        })
    }

    /// Concentrations `[rows][width]`.
    #[must_use]
    pub fn alpha(&self) -> &DeviceVec<f32> {
        &self.alpha
    }

    /// Which entries form each row's distribution `[rows][width]` (1 or 0).
    #[must_use]
    pub fn mask(&self) -> &DeviceVec<u32> {
        &self.mask
    }

    /// `[rows][width]`: the points drawn by the last run.
    #[must_use]
    pub fn samples(&self) -> &DeviceVec<f32> {
        &self.samples
    }

    /// `[rows][4]`: each row's Xoshiro128++ state (little-endian words of
    /// `Xoshiro128PlusPlus::from_seed`), read back or written for a
    /// checkpoint.
    #[must_use]
    pub fn state(&self) -> &DeviceVec<u32> {
        &self.state
    }

    /// Records one draw per row into `pass`.
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

    /// Submits one draw per row.
    ///
    /// # Errors
    /// [`GpuError::ContextMismatch`].
    pub fn run(&self, ctx: &GpuContext) -> Result<(), GpuError> {
        run_on(ctx, self.context, "dirichlet_sampler", |pass| {
            self.dispatch.record(pass);
        })
    }
}

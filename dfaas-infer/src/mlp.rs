//! The forward pass of a dense network, one row at a time, with the
//! trainer's arithmetic.
//!
//! Parameters are one flat `f32` slice, layer after layer, each layer its
//! weights `[out][in]` (row-major) then its biases `[out]` — the layout of
//! `dfaas_policies::mlp::Mlp` and of the checkpoint's
//! `layer{i}.weight` / `layer{i}.bias` tensors.
//!
//! **Order of operations.** The trainer computes a layer as
//! `Z = bias + X·Wᵀ` through matrixmultiply's `sgemm` with `α = β = 1`. Its
//! micro-kernels accumulate each output's products from 0 in input order
//! (with fused multiply-adds on CPUs with FMA, separate products and sums
//! otherwise), in blocks of 256 inputs, and add each block's sum to the
//! output, which starts at the bias. [`forward_row`] does exactly that, so
//! its result equals the trainer's bit for bit when both use the same
//! [`Accumulation`] (tested against the trainer in `dfaas-policies`).

use crate::error::ShapeError;

/// Inputs accumulated per block before the block's sum is added to the
/// output (matrixmultiply's `S_KC` for f32).
pub const BLOCK: usize = 256;

/// Hidden-layer activation (the output layer is linear).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// [`fast_tanh`].
    Tanh,
    /// max(0, x).
    Relu,
}

impl Activation {
    /// The activation's name as the trainer writes it (`tanh`, `relu`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tanh => "tanh",
            Self::Relu => "relu",
        }
    }

    /// The activation of `name` (`tanh` or `relu`), if known.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tanh" => Some(Self::Tanh),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// The activation of `z`.
    #[must_use]
    #[inline]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            Self::Tanh => fast_tanh(z),
            Self::Relu => z.max(0.0),
        }
    }

    /// [`Activation::apply`] to every entry of `values`, in place: one
    /// loop per activation, which the compiler vectorises, in 8 lanes
    /// where the CPU has AVX (detected at run time with `std`). The same
    /// operations on every entry either way, so the same bits.
    pub fn apply_in_place(self, values: &mut [f32]) {
        #[cfg(all(feature = "std", any(target_arch = "x86", target_arch = "x86_64")))]
        {
            if std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: the CPU has AVX, the only feature the function enables.
                #[allow(unsafe_code)]
                unsafe {
                    x86::apply_in_place(self, values);
                }
                return;
            }
        }
        self.apply_each(values);
    }

    /// The loop of [`Activation::apply_in_place`].
    #[inline]
    fn apply_each(self, values: &mut [f32]) {
        match self {
            Self::Tanh => values.iter_mut().for_each(|v| *v = fast_tanh(*v)),
            Self::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
    }
}

/// tanh by a rational minimax approximation (odd degree-13 numerator,
/// even degree-6 denominator, as in Eigen's fast float tanh): absolute
/// error below 5·10⁻⁷ and relative error below 4·10⁻⁶ against the exact
/// tanh over every f32 (tested on [−10, 10] and tiny values; the input is
/// clamped to ±7.9988, where the result is 1 within that bound),
/// branch-free and vectorisable. The trainer's activation is this function.
#[must_use]
#[inline]
pub fn fast_tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.998_811_7;
    let x = x.clamp(-CLAMP, CLAMP);
    let x2 = x * x;
    let mut p = x2 * -2.760_768_5e-16 + 2.000_188e-13;
    p = x2 * p + -8.604_672e-11;
    p = x2 * p + 5.122_297e-8;
    p = x2 * p + 1.485_722_4e-5;
    p = x2 * p + 6.372_619_3e-4;
    p = x2 * p + 4.893_524_6e-3;
    p *= x;
    let mut q = x2 * 1.198_258_4e-6 + 1.185_347_1e-4;
    q = x2 * q + 2.268_434_6e-3;
    q = x2 * q + 4.893_525e-3;
    p / q
}

/// How a dot product accumulates its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulation {
    /// `acc = fma(x, w, acc)`: one rounding per step (matrixmultiply's
    /// kernels on x86-64 with FMA and AVX2 or AVX-512, and on AArch64).
    Fused,
    /// `acc = acc + x·w`: two roundings per step (its AVX-only and
    /// portable kernels).
    Separate,
}

impl Accumulation {
    /// The accumulation of the trainer's matrix products on this machine:
    /// the kernel matrixmultiply picks at run time (FMA + AVX2 or AVX-512F
    /// on x86-64, NEON on AArch64 → [`Accumulation::Fused`]; anything else
    /// → [`Accumulation::Separate`]).
    #[cfg(feature = "std")]
    #[must_use]
    pub fn host() -> Self {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                || (std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("avx2"))
            {
                return Self::Fused;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                return Self::Fused;
            }
        }
        #[allow(unreachable_code)]
        Self::Separate
    }

    /// [`Accumulation::host`] with `std`; without it (no run-time feature
    /// detection) [`Accumulation::Fused`], what every current x86-64 and
    /// AArch64 trainer uses.
    #[must_use]
    pub fn matching_trainer() -> Self {
        #[cfg(feature = "std")]
        {
            Self::host()
        }
        #[cfg(not(feature = "std"))]
        {
            Self::Fused
        }
    }
}

/// `x·w + acc` rounded once (IEEE fused multiply-add).
#[inline]
fn fma(x: f32, w: f32, acc: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.mul_add(w, acc)
    }
    #[cfg(not(feature = "std"))]
    {
        libm::fmaf(x, w, acc)
    }
}

/// A dense network over borrowed parameters: widths `[input, hidden..,
/// output]`, the hidden activation, and the flat parameters.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    widths: &'a [usize],
    params: &'a [f32],
    activation: Activation,
}

impl<'a> Dense<'a> {
    /// A network of layer widths `widths` over `params` (layout in the
    /// module docs).
    ///
    /// # Errors
    /// [`ShapeError`] for fewer than 2 widths, a width of 0, or `params` not
    /// holding exactly `Σ out·(in + 1)` values (checked arithmetic).
    pub fn new(
        widths: &'a [usize],
        params: &'a [f32],
        activation: Activation,
    ) -> Result<Self, ShapeError> {
        if widths.len() < 2 {
            return Err(ShapeError::TooFewLayers { got: widths.len() });
        }
        if let Some(layer) = widths.iter().position(|&w| w == 0) {
            return Err(ShapeError::ZeroWidth { layer });
        }
        let expected = param_count(widths).ok_or(ShapeError::Overflow)?;
        if params.len() != expected {
            return Err(ShapeError::Length {
                field: "params",
                expected,
                got: params.len(),
            });
        }
        Ok(Self {
            widths,
            params,
            activation,
        })
    }

    /// Input width.
    #[must_use]
    pub fn input(&self) -> usize {
        self.widths.first().copied().unwrap_or(0)
    }

    /// Output width.
    #[must_use]
    pub fn output(&self) -> usize {
        self.widths.last().copied().unwrap_or(0)
    }

    /// The widest layer (the scratch length [`Dense::forward_row`] needs).
    #[must_use]
    pub fn widest(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(0)
    }

    /// The output of one input row `x` ([`Dense::input`] values), computed
    /// in `a` and `b` (each at least [`Dense::widest`] long); the result is
    /// a prefix of one of them. Allocates nothing.
    ///
    /// # Errors
    /// [`ShapeError::Length`] when `x` or a scratch buffer does not fit
    /// (nothing computed).
    pub fn forward_row<'s>(
        &self,
        x: &[f32],
        accumulation: Accumulation,
        a: &'s mut [f32],
        b: &'s mut [f32],
    ) -> Result<&'s [f32], ShapeError> {
        if x.len() != self.input() {
            return Err(ShapeError::Length {
                field: "x",
                expected: self.input(),
                got: x.len(),
            });
        }
        let widest = self.widest();
        for (field, len) in [("scratch a", a.len()), ("scratch b", b.len())] {
            if len < widest {
                return Err(ShapeError::Length {
                    field,
                    expected: widest,
                    got: len,
                });
            }
        }
        a[..x.len()].copy_from_slice(x);
        let layers = self.widths.len() - 1;
        let (mut src, mut dst) = (a, b);
        let mut offset = 0;
        for l in 0..layers {
            let (n_in, n_out) = (self.widths[l], self.widths[l + 1]);
            let weights = &self.params[offset..offset + n_out * n_in];
            let bias = &self.params[offset + n_out * n_in..offset + n_out * n_in + n_out];
            offset += n_out * n_in + n_out;
            let (input, out) = (&src[..n_in], &mut dst[..n_out]);
            match accumulation {
                Accumulation::Fused => fused_layer(weights, bias, input, out),
                Accumulation::Separate => layer(weights, bias, input, out, |x, w, acc| acc + x * w),
            }
            if l + 1 < layers {
                for z in out.iter_mut() {
                    *z = self.activation.apply(*z);
                }
            }
            core::mem::swap(&mut src, &mut dst);
        }
        Ok(&src[..self.output()])
    }
}

/// Outputs computed together by [`layer`]: independent accumulation
/// chains, so that a multiply-add's latency overlaps the others'.
const ROWS: usize = 8;

/// One linear layer, `out[o] = bias[o] + Σ_blocks Σ_{i ∈ block} x[i]·w[o][i]`
/// with `step(x, w, acc)` accumulating each block from 0 in input order
/// (the module's order of operations), [`ROWS`] outputs at a time. Each
/// output's arithmetic is the same whatever the grouping.
#[inline(always)]
fn layer(
    weights: &[f32],
    bias: &[f32],
    input: &[f32],
    out: &mut [f32],
    step: impl Fn(f32, f32, f32) -> f32,
) {
    let n_in = input.len();
    let n_out = out.len();
    let mut o = 0;
    while o < n_out {
        // A last group of fewer rows repeats its last row (computed, not
        // written), so that every group runs ROWS chains.
        let len = ROWS.min(n_out - o);
        let row = |r: usize| o + r.min(len - 1);
        let w: [&[f32]; ROWS] = core::array::from_fn(|r| &weights[row(r) * n_in..][..n_in]);
        let mut total: [f32; ROWS] = core::array::from_fn(|r| bias[row(r)]);
        let mut start = 0;
        while start < n_in {
            let end = (start + BLOCK).min(n_in);
            let mut acc = [0f32; ROWS];
            for i in start..end {
                let x = input[i];
                for r in 0..ROWS {
                    acc[r] = step(x, w[r][i], acc[r]);
                }
            }
            for r in 0..ROWS {
                total[r] += acc[r];
            }
            start = end;
        }
        out[o..o + len].copy_from_slice(&total[..len]);
        o += len;
    }
}

/// [`layer`] with fused multiply-adds: the CPU's FMA instruction where it
/// has one (detected at run time with `std`), else [`fma`].
fn fused_layer(weights: &[f32], bias: &[f32], input: &[f32], out: &mut [f32]) {
    #[cfg(all(feature = "std", any(target_arch = "x86", target_arch = "x86_64")))]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA, the only feature the function enables.
            #[allow(unsafe_code)]
            unsafe {
                x86::fused_layer(weights, bias, input, out);
            }
            return;
        }
    }
    layer(weights, bias, input, out, fma);
}

/// The FMA build of [`layer`] and the AVX build of the activations' loop
/// (the only `unsafe` of the crate: calling them needs the CPU feature,
/// checked by [`fused_layer`] and [`Activation::apply_in_place`]).
#[cfg(all(feature = "std", any(target_arch = "x86", target_arch = "x86_64")))]
mod x86 {
    /// [`super::layer`] with `f32::mul_add` compiled to the FMA instruction.
    #[target_feature(enable = "fma")]
    pub(super) fn fused_layer(weights: &[f32], bias: &[f32], input: &[f32], out: &mut [f32]) {
        super::layer(weights, bias, input, out, f32::mul_add);
    }

    /// `Activation::apply_each` compiled for AVX's 8-lane registers.
    #[target_feature(enable = "avx")]
    pub(super) fn apply_in_place(activation: super::Activation, values: &mut [f32]) {
        activation.apply_each(values);
    }
}

/// `Σ out·(in + 1)` over the layers, `None` on overflow.
#[must_use]
pub fn param_count(widths: &[usize]) -> Option<usize> {
    widths.windows(2).try_fold(0usize, |total, w| {
        w[0].checked_add(1)
            .and_then(|inputs| inputs.checked_mul(w[1]))
            .and_then(|layer| layer.checked_add(total))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// The bounds the doc comment of [`fast_tanh`] states (measured: 4.19e-7
    /// absolute, 3.34e-6 relative).
    const ABS_BOUND: f64 = 5e-7;
    const REL_BOUND: f64 = 4e-6;

    #[test]
    fn activations_in_place_are_the_scalar_ones_bit_for_bit() {
        // Lengths around the 8 lanes, values across the clamp, signed
        // zeros, infinities and NaN.
        let pool: Vec<f32> = (-2000..2000)
            .map(|i| i as f32 * 0.006_1)
            .chain([0.0, -0.0, 1e-30, -1e-30, 7.998, 8.5, -9.0, 1e30])
            .chain([f32::INFINITY, f32::NEG_INFINITY, f32::NAN])
            .collect();
        for activation in [Activation::Tanh, Activation::Relu] {
            for len in [0, 1, 7, 8, 9, 17, pool.len()] {
                let mut values = pool[pool.len() - len..].to_vec();
                let want: Vec<u32> = values
                    .iter()
                    .map(|&v| activation.apply(v).to_bits())
                    .collect();
                activation.apply_in_place(&mut values);
                let got: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{activation:?}, {len} values");
            }
        }
    }

    #[test]
    fn fast_tanh_error_bounds() {
        // Every f32 in [−10, 10] in steps of 2⁻¹⁴ (plus the tiny values
        // 2⁻ⁱ), against f64 tanh.
        let (mut abs, mut rel) = (0f64, 0f64);
        let tiny = (1..126).map(|i| 2f32.powi(-i));
        for x in (-163_840..=163_840)
            .map(|i| i as f32 / 16_384.0)
            .chain(tiny)
        {
            let (got, want) = (f64::from(fast_tanh(x)), f64::from(x).tanh());
            abs = abs.max((got - want).abs());
            if want != 0.0 {
                rel = rel.max(((got - want) / want).abs());
            }
        }
        assert!(abs < ABS_BOUND, "absolute error {abs:e}");
        assert!(rel < REL_BOUND, "relative error {rel:e}");
        // Saturation: ±1 within the bound beyond the clamp, and odd.
        assert_eq!(fast_tanh(100.0), fast_tanh(8.0));
        assert_eq!(fast_tanh(-3.0), -fast_tanh(3.0));
    }

    /// A 2-3-2 network computed by hand.
    #[test]
    fn forward_by_hand() {
        let widths = [2, 3, 2];
        // layer 0: W [3][2], b [3]; layer 1: W [2][3], b [2]
        let params = [
            1.0, 0.0, 0.0, 1.0, 1.0, -1.0, 0.5, 0.0, -0.5, //
            1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 0.25, -0.25,
        ];
        let net = Dense::new(&widths, &params, Activation::Relu).unwrap();
        let (mut a, mut b) = ([0f32; 3], [0f32; 3]);
        let out = net
            .forward_row(&[2.0, 1.0], Accumulation::Separate, &mut a, &mut b)
            .unwrap();
        // hidden = relu([2.5, 1.0, 0.5]) ; out = [4.25, 1.75]
        assert_eq!(out, &[4.25, 1.75]);
    }

    /// Fused and separate accumulation differ where a product's rounding
    /// matters, and each is what its name says.
    #[test]
    fn accumulations_are_what_they_say() {
        let x = 1.0 + f32::EPSILON;
        let widths = [2, 1];
        let params = [-1.0, x, 0.0];
        let net = Dense::new(&widths, &params, Activation::Tanh).unwrap();
        let (mut a, mut b) = ([0f32; 2], [0f32; 2]);
        let input = [1.0 + 2.0 * f32::EPSILON, x];
        let fused = net
            .forward_row(&input, Accumulation::Fused, &mut a, &mut b)
            .unwrap()[0];
        let separate = net
            .forward_row(&input, Accumulation::Separate, &mut a, &mut b)
            .unwrap()[0];
        // −(1 + 2ε) + x² with x² = 1 + 2ε + ε²: fused keeps ε², separate
        // rounds x² first and gets 0.
        assert_eq!(separate, 0.0);
        assert_eq!(fused, f32::EPSILON * f32::EPSILON);
    }

    /// Inputs past [`BLOCK`] are summed per block, each block's sum added
    /// to the output in turn.
    #[test]
    fn blocks_of_256_inputs() {
        let n = BLOCK + 3;
        let widths = [n, 1];
        let mut params: Vec<f32> = vec![1.0; n];
        params.push(0.0);
        let net = Dense::new(&widths, &params, Activation::Relu).unwrap();
        // First block sums to 2²⁴ (exact), the second adds 3 × 1: as
        // blocks 2²⁴ + 3 → 16777220 (rounded to even), one running sum
        // would stay at 2²⁴.
        let mut x = vec![0f32; n];
        x[0] = 16_777_216.0;
        x[BLOCK..].fill(1.0);
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        let out = net
            .forward_row(&x, Accumulation::Separate, &mut a, &mut b)
            .unwrap()[0];
        assert_eq!(out, 16_777_220.0);
    }

    /// Layers wider than one group of rows and one block of inputs: each
    /// output equals a plain row-by-row loop (written here) in either
    /// accumulation, bit for bit.
    #[test]
    fn grouped_rows_equal_a_plain_loop() {
        let widths = [300, 19, 3];
        let count = param_count(&widths).unwrap();
        // Values of many magnitudes, so that the order of operations shows.
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32 - 0.5) * 2f32.powi((state % 16) as i32 - 8)
        };
        let params: Vec<f32> = (0..count).map(|_| next()).collect();
        let x: Vec<f32> = (0..300).map(|_| next()).collect();
        let net = Dense::new(&widths, &params, Activation::Relu).unwrap();
        for accumulation in [Accumulation::Fused, Accumulation::Separate] {
            let mut h = [0f32; 19];
            for (o, z) in h.iter_mut().enumerate() {
                let row = &params[o * 300..(o + 1) * 300];
                let mut out = params[19 * 300 + o];
                for block in 0..2 {
                    let mut acc = 0f32;
                    for i in block * BLOCK..((block + 1) * BLOCK).min(300) {
                        acc = match accumulation {
                            Accumulation::Fused => libm::fmaf(x[i], row[i], acc),
                            Accumulation::Separate => acc + x[i] * row[i],
                        };
                    }
                    out += acc;
                }
                *z = out.max(0.0);
            }
            let second = &params[19 * 301..];
            let want: Vec<f32> = (0..3)
                .map(|o| {
                    let mut acc = 0f32;
                    for i in 0..19 {
                        acc = match accumulation {
                            Accumulation::Fused => libm::fmaf(h[i], second[o * 19 + i], acc),
                            Accumulation::Separate => acc + h[i] * second[o * 19 + i],
                        };
                    }
                    second[3 * 19 + o] + acc
                })
                .collect();
            let (mut a, mut b) = (vec![0f32; 300], vec![0f32; 300]);
            let got = net.forward_row(&x, accumulation, &mut a, &mut b).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(&want), "{accumulation:?}");
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        assert_eq!(
            Dense::new(&[3], &[], Activation::Tanh).unwrap_err(),
            ShapeError::TooFewLayers { got: 1 }
        );
        assert_eq!(
            Dense::new(&[3, 0, 1], &[], Activation::Tanh).unwrap_err(),
            ShapeError::ZeroWidth { layer: 1 }
        );
        assert_eq!(
            Dense::new(&[usize::MAX, 2], &[], Activation::Tanh).unwrap_err(),
            ShapeError::Overflow
        );
        let params = [0f32; 8];
        assert!(Dense::new(&[3, 2], &params[..7], Activation::Tanh).is_err());
        let net = Dense::new(&[3, 2], &params, Activation::Tanh).unwrap();
        let (mut a, mut b) = ([0f32; 3], [0f32; 2]);
        assert_eq!(
            net.forward_row(&[0.0; 3], Accumulation::Fused, &mut a, &mut b)
                .unwrap_err(),
            ShapeError::Length {
                field: "scratch b",
                expected: 3,
                got: 2
            }
        );
        let mut b = [0f32; 3];
        assert!(
            net.forward_row(&[0.0; 2], Accumulation::Fused, &mut a, &mut b)
                .is_err()
        );
    }
}

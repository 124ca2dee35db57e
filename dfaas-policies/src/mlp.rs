//! A multilayer perceptron on the CPU: dense layers with a hidden
//! activation and a linear output, batched forward and backward passes.
//!
//! Layout: a batch is row-major `[batch][features]`; the parameters are one
//! flat `f32` vector, layer after layer, each layer its weights
//! `[out][in]` (row-major) then its biases `[out]`. Products go through
//! [`gemm`] on strided operands (matrixmultiply), without
//! copies or transposes.

use crate::error::{ShapeError, UnknownName, length, product};
use crate::gemm::{Op, gemm};
use rand_core::Rng;

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// Hyperbolic tangent (RLlib's default for fully connected nets).
    Tanh,
    /// max(0, x).
    Relu,
}

impl std::str::FromStr for Activation {
    type Err = UnknownName;

    /// `tanh` or `relu`.
    fn from_str(name: &str) -> Result<Self, UnknownName> {
        match name {
            "tanh" => Ok(Self::Tanh),
            "relu" => Ok(Self::Relu),
            _ => Err(UnknownName {
                setting: "activation",
                got: name.into(),
                choices: "tanh, relu",
            }),
        }
    }
}

/// tanh by a rational minimax approximation (the one implementation,
/// shared with inference: `dfaas_infer::mlp::fast_tanh`).
pub use dfaas_infer::mlp::fast_tanh;

impl Activation {
    /// The same activation in the inference crate (whose `apply_in_place`
    /// the forward pass calls: one definition of each).
    #[must_use]
    pub fn shared(self) -> dfaas_infer::mlp::Activation {
        match self {
            Self::Tanh => dfaas_infer::mlp::Activation::Tanh,
            Self::Relu => dfaas_infer::mlp::Activation::Relu,
        }
    }

    /// Derivative expressed through the activation's output `a`.
    fn derivative_from_output(self, a: f32) -> f32 {
        match self {
            Self::Tanh => 1.0 - a * a,
            Self::Relu => f32::from(u8::from(a > 0.0)),
        }
    }
}

/// Shape of an MLP: layer widths `[input, hidden.., output]` and the hidden
/// activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    widths: Vec<usize>,
    activation: Activation,
}

/// Activations kept by [`Mlp::forward`] for [`Mlp::backward`].
#[derive(Debug, Clone, Default)]
pub struct MlpCache {
    batch: usize,
    /// Input of every layer (`layers[0]` is the network input).
    layers: Vec<Vec<f32>>,
    /// Output of the last layer `[batch][output]`.
    pub output: Vec<f32>,
    /// Gradient buffers of the backward pass.
    delta: Vec<f32>,
    delta_prev: Vec<f32>,
}

/// `rows` copies of `row` into `out` (replaced), in doubling copies: a
/// few large copies rather than one small copy per row.
fn fill_rows(out: &mut Vec<f32>, row: &[f32], rows: usize) {
    let len = rows * row.len();
    out.clear();
    out.reserve(len);
    if rows > 0 {
        out.extend_from_slice(row);
    }
    while out.len() < len {
        let more = out.len().min(len - out.len());
        out.extend_from_within(..more);
    }
}

impl Mlp {
    /// An MLP with layer widths `[input, hidden.., output]`.
    ///
    /// # Errors
    /// [`ShapeError`] for fewer than 2 widths, a width of 0, or a parameter
    /// count that overflows `usize`.
    pub fn new(widths: &[usize], activation: Activation) -> Result<Self, ShapeError> {
        if widths.len() < 2 {
            return Err(ShapeError::OutOfRange {
                field: "widths (layers)",
                min: 2,
                max: usize::MAX,
                got: widths.len(),
            });
        }
        if let Some(&w) = widths.iter().find(|&&w| w == 0) {
            return Err(ShapeError::OutOfRange {
                field: "widths",
                min: 1,
                max: usize::MAX,
                got: w,
            });
        }
        // Σ out·(in + 1) in checked arithmetic.
        widths
            .windows(2)
            .try_fold(0usize, |total, w| {
                w[0].checked_add(1)
                    .and_then(|inputs| inputs.checked_mul(w[1]))
                    .and_then(|layer| layer.checked_add(total))
            })
            .ok_or_else(|| ShapeError::Overflow {
                field: "widths (parameters)",
                detail: format!("{widths:?}"),
            })?;
        Ok(Self {
            widths: widths.to_vec(),
            activation,
        })
    }

    /// Input width.
    #[must_use]
    pub fn input(&self) -> usize {
        self.widths[0]
    }

    /// Output width.
    #[must_use]
    pub fn output(&self) -> usize {
        *self.widths.last().unwrap_or(&0)
    }

    /// Number of parameters.
    #[must_use]
    pub fn num_params(&self) -> usize {
        self.widths.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    /// `(name, shape, offset)` of each weight and bias tensor in the flat
    /// parameter vector: `layer{i}.weight` `[out, in]`, `layer{i}.bias` `[out]`.
    #[must_use]
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, usize)> {
        let mut out = Vec::new();
        let mut offset = 0;
        for (i, w) in self.widths.windows(2).enumerate() {
            out.push((format!("layer{i}.weight"), vec![w[1], w[0]], offset));
            offset += w[1] * w[0];
            out.push((format!("layer{i}.bias"), vec![w[1]], offset));
            offset += w[1];
        }
        out
    }

    /// Initial parameters: every unit's incoming weights normal, scaled to
    /// norm 1 (hidden layers) or `output_scale` (output layer), as RLlib's
    /// `normc_initializer`; biases 0.
    pub fn init<R: Rng + ?Sized>(&self, rng: &mut R, output_scale: f32) -> Vec<f32> {
        let mut params = Vec::with_capacity(self.num_params());
        let layers = self.widths.len() - 1;
        for (l, w) in self.widths.windows(2).enumerate() {
            let scale = if l + 1 == layers { output_scale } else { 1.0 };
            for _ in 0..w[1] {
                let row: Vec<f64> = (0..w[0])
                    .map(|_| dfaas_core::rng::standard_normal(rng))
                    .collect();
                let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                params.extend(row.iter().map(|v| (v / norm) as f32 * scale));
            }
            params.extend(std::iter::repeat_n(0.0, w[1]));
        }
        params
    }

    /// Forward pass of `batch` rows of `x` (`[batch][input]`) with
    /// `params` ([`Mlp::num_params`] values); the output is in
    /// `cache.output`.
    ///
    /// # Errors
    /// [`ShapeError`] when `params` or `x` do not fit (nothing computed).
    pub fn forward(
        &self,
        params: &[f32],
        x: &[f32],
        batch: usize,
        cache: &mut MlpCache,
    ) -> Result<(), ShapeError> {
        length("params", self.num_params(), params.len())?;
        length("x", product("x", &[batch, self.widths[0]])?, x.len())?;
        let layers = self.widths.len() - 1;
        cache.batch = batch;
        cache.layers.resize_with(layers, Vec::new);
        cache.layers[0].clear();
        cache.layers[0].extend_from_slice(&x[..batch * self.widths[0]]);
        let mut offset = 0;
        for l in 0..layers {
            let (n_in, n_out) = (self.widths[l], self.widths[l + 1]);
            let weights = &params[offset..offset + n_out * n_in];
            let bias = &params[offset + n_out * n_in..offset + n_out * n_in + n_out];
            offset += n_out * n_in + n_out;
            // The layer's output (the next layer's input, or the network's)
            // in the cache's own buffer, starting from the biases.
            let (inputs, next) = cache.layers.split_at_mut(l + 1);
            let z = next.first_mut().unwrap_or(&mut cache.output);
            fill_rows(z, bias, batch);
            // Z[b][o] += Σ_i X[b][i]·W[o][i]
            gemm(
                batch,
                n_in,
                n_out,
                1.0,
                &inputs[l],
                Op::Plain,
                weights,
                Op::Transposed,
                1.0,
                z,
            )?;
            if l + 1 < layers {
                self.activation.shared().apply_in_place(z);
            }
        }
        Ok(())
    }

    /// Backward pass: given ∂L/∂output (`[batch][output]`) for the batch of
    /// the last [`Mlp::forward`] (with `cache` from it), writes ∂L/∂params
    /// into `grads` (overwritten).
    ///
    /// # Errors
    /// [`ShapeError`] when a slice does not fit, or `cache` is not from a
    /// forward pass of this network (nothing computed).
    pub fn backward(
        &self,
        params: &[f32],
        cache: &mut MlpCache,
        d_output: &[f32],
        grads: &mut [f32],
    ) -> Result<(), ShapeError> {
        let layers = self.widths.len() - 1;
        let batch = cache.batch;
        length("params", self.num_params(), params.len())?;
        length("grads", self.num_params(), grads.len())?;
        length("d_output", batch * self.output(), d_output.len())?;
        length("cache (layers)", layers, cache.layers.len())?;
        for (l, layer) in cache.layers.iter().enumerate() {
            length("cache (activations)", batch * self.widths[l], layer.len())?;
        }
        let offsets: Vec<usize> = self
            .widths
            .windows(2)
            .scan(0, |acc, w| {
                let start = *acc;
                *acc += w[1] * w[0] + w[1];
                Some(start)
            })
            .collect();
        cache.delta.clear();
        cache
            .delta
            .extend_from_slice(&d_output[..batch * self.output()]);
        for l in (0..layers).rev() {
            let (n_in, n_out) = (self.widths[l], self.widths[l + 1]);
            let offset = offsets[l];
            let (dw, rest) =
                grads[offset..offset + n_out * n_in + n_out].split_at_mut(n_out * n_in);
            // dW[o][i] = Σ_b δ[b][o]·X[b][i]
            gemm(
                n_out,
                batch,
                n_in,
                1.0,
                &cache.delta,
                Op::Transposed,
                &cache.layers[l],
                Op::Plain,
                0.0,
                dw,
            )?;
            rest.fill(0.0);
            for row in cache.delta.chunks_exact(n_out) {
                for (db, d) in rest.iter_mut().zip(row) {
                    *db += d;
                }
            }
            if l == 0 {
                break;
            }
            // δ_prev[b][i] = Σ_o δ[b][o]·W[o][i] · act′(X[b][i])
            // (Every entry is written: β = 0 reads nothing.)
            cache.delta_prev.resize(batch * n_in, 0.0);
            gemm(
                batch,
                n_out,
                n_in,
                1.0,
                &cache.delta,
                Op::Plain,
                &params[offset..offset + n_out * n_in],
                Op::Plain,
                0.0,
                &mut cache.delta_prev,
            )?;
            for (d, &a) in cache.delta_prev.iter_mut().zip(&cache.layers[l]) {
                *d *= self.activation.derivative_from_output(a);
            }
            std::mem::swap(&mut cache.delta, &mut cache.delta_prev);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfaas_core::rng::{seeded, uniform};

    /// L = Σ_b Σ_o c[o]·out[b][o]²/2 — a loss with a non-trivial gradient.
    fn loss(mlp: &Mlp, params: &[f32], x: &[f32], batch: usize) -> f64 {
        let mut cache = MlpCache::default();
        mlp.forward(params, x, batch, &mut cache).unwrap();
        cache
            .output
            .chunks(mlp.output())
            .flat_map(|r| {
                r.iter()
                    .enumerate()
                    .map(|(o, v)| 0.5 * (o as f64 + 1.0) * f64::from(*v).powi(2))
            })
            .sum()
    }

    #[test]
    fn rows_are_filled_with_copies_of_the_row() {
        let row = [1.5f32, -2.0, 7.0];
        let mut out = vec![9.0; 4];
        for rows in [0, 1, 2, 3, 5, 64, 1152, 1153] {
            fill_rows(&mut out, &row, rows);
            assert_eq!(out, row.repeat(rows), "{rows} rows");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for activation in [Activation::Tanh, Activation::Relu] {
            let mlp = Mlp::new(&[5, 9, 7, 3], activation).unwrap();
            let mut rng = seeded(11);
            let params = mlp.init(&mut rng, 0.5);
            let batch = 4;
            let x: Vec<f32> = (0..batch * 5)
                .map(|_| uniform(&mut rng, -2.0, 2.0) as f32)
                .collect();
            let mut cache = MlpCache::default();
            mlp.forward(&params, &x, batch, &mut cache).unwrap();
            let d_out: Vec<f32> = cache
                .output
                .chunks(3)
                .flat_map(|r| {
                    r.iter()
                        .enumerate()
                        .map(|(o, v)| (o as f32 + 1.0) * v)
                        .collect::<Vec<_>>()
                })
                .collect();
            let mut grads = vec![0f32; mlp.num_params()];
            mlp.backward(&params, &mut cache, &d_out, &mut grads)
                .unwrap();
            for j in (0..params.len()).step_by(7) {
                let h = 1e-2f32;
                let mut plus = params.clone();
                let mut minus = params.clone();
                plus[j] += h;
                minus[j] -= h;
                let numeric = (loss(&mlp, &plus, &x, batch) - loss(&mlp, &minus, &x, batch))
                    / f64::from(2.0 * h);
                let analytic = f64::from(grads[j]);
                assert!(
                    (numeric - analytic).abs() <= 2e-2 * (1.0 + numeric.abs()),
                    "{activation:?} param {j}: analytic {analytic}, numeric {numeric}"
                );
            }
        }
    }

    /// The trainer's batched forward (matrixmultiply) and inference's
    /// row-at-a-time one give the same bits, for layers wider than one
    /// 256-input block too.
    #[test]
    fn forward_equals_inference_bit_for_bit() {
        use dfaas_infer::mlp::{Accumulation, Dense};
        let mut rng = seeded(5);
        for (widths, activation) in [
            (vec![6, 64, 64, 3], Activation::Tanh),
            (vec![9, 256, 256, 5], Activation::Tanh),
            (vec![300, 7, 2], Activation::Relu),
            (vec![2, 600, 1], Activation::Tanh),
        ] {
            let mlp = Mlp::new(&widths, activation).unwrap();
            let mut params = mlp.init(&mut rng, 0.5);
            // Non-zero biases, so that their addition is exercised.
            for (_, shape, offset) in mlp.tensors().iter().filter(|t| t.1.len() == 1) {
                for b in &mut params[*offset..offset + shape[0]] {
                    *b = uniform(&mut rng, -1.0, 1.0) as f32;
                }
            }
            let batch = 37;
            let x: Vec<f32> = (0..batch * widths[0])
                .map(|_| uniform(&mut rng, -3.0, 3.0) as f32)
                .collect();
            let mut cache = MlpCache::default();
            mlp.forward(&params, &x, batch, &mut cache).unwrap();
            let net = Dense::new(&widths, &params, activation.shared()).unwrap();
            let widest = net.widest();
            let (mut a, mut b) = (vec![0f32; widest], vec![0f32; widest]);
            let out = mlp.output();
            for (row, want) in x.chunks(widths[0]).zip(cache.output.chunks(out)) {
                let got = net
                    .forward_row(row, Accumulation::host(), &mut a, &mut b)
                    .unwrap();
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(got), bits(want), "{widths:?}");
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        assert!(Mlp::new(&[4], Activation::Tanh).is_err());
        assert!(Mlp::new(&[4, 0, 2], Activation::Tanh).is_err());
        assert!(matches!(
            Mlp::new(&[usize::MAX, 2, 1], Activation::Tanh),
            Err(ShapeError::Overflow { .. })
        ));
        let mlp = Mlp::new(&[3, 4, 2], Activation::Relu).unwrap();
        let params = vec![0.1f32; mlp.num_params()];
        let mut cache = MlpCache::default();
        assert_eq!(
            mlp.forward(&params, &[0.0; 5], 2, &mut cache),
            Err(ShapeError::Length {
                field: "x",
                expected: 6,
                got: 5
            })
        );
        assert!(mlp.forward(&params[1..], &[0.0; 6], 2, &mut cache).is_err());
        assert!(
            mlp.forward(&params, &[0.0; 6], usize::MAX, &mut cache)
                .is_err()
        );
        // A backward pass without its forward pass.
        let mut grads = vec![0f32; mlp.num_params()];
        let mut fresh = MlpCache::default();
        assert!(mlp.backward(&params, &mut fresh, &[], &mut grads).is_err());
        mlp.forward(&params, &[0.5; 6], 2, &mut cache).unwrap();
        assert!(
            mlp.backward(&params, &mut cache, &[1.0; 3], &mut grads)
                .is_err()
        );
        mlp.backward(&params, &mut cache, &[1.0; 4], &mut grads)
            .unwrap();
    }

    #[test]
    fn normc_init_scales_each_unit() {
        let mlp = Mlp::new(&[8, 16, 4], Activation::Tanh).unwrap();
        let params = mlp.init(&mut seeded(1), 0.01);
        let last = &mlp.tensors()[2];
        let row: f32 = params[last.2..last.2 + 16]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt();
        assert!((row - 0.01).abs() < 1e-6);
        assert_eq!(params.len(), 8 * 16 + 16 + 16 * 4 + 4);
    }
}

//! Adam and global-norm gradient clipping.

/// Adam (Kingma & Ba) with bias correction, as PyTorch's default.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment (0.9).
    pub beta1: f32,
    /// Decay of the second moment (0.999).
    pub beta2: f32,
    /// Denominator guard (1e-8).
    pub eps: f32,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
}

impl Adam {
    /// Adam for `n` parameters.
    #[must_use]
    pub fn new(n: usize, lr: f32) -> Self {
        Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One step: `params −= lr · m̂ / (√v̂ + eps)`.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        self.t += 1;
        let t = self.t as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2 = 1.0 - self.beta2.powi(t);
        let step = self.lr / bias1;
        let bias2_sqrt = bias2.sqrt();
        for (((p, &g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            *m = self.beta1 * *m + (1.0 - self.beta1) * g;
            *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
            *p -= step * *m / (v.sqrt() / bias2_sqrt + self.eps);
        }
    }
}

/// Scales the gradients so that their joint L2 norm is at most `max_norm`;
/// returns the norm before scaling.
pub fn clip_global_norm(grads: &mut [&mut [f32]], max_norm: Option<f32>) -> f32 {
    let norm = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&g| f64::from(g) * f64::from(g))
        .sum::<f64>()
        .sqrt() as f32;
    if let Some(max) = max_norm
        && norm > max
        && norm.is_finite()
    {
        let scale = max / norm;
        grads
            .iter_mut()
            .for_each(|g| g.iter_mut().for_each(|v| *v *= scale));
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_minimises_a_quadratic() {
        let mut x = vec![3.0f32, -2.0];
        let mut adam = Adam::new(2, 0.1);
        for _ in 0..500 {
            let g: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
            adam.step(&mut x, &g);
        }
        assert!(x.iter().all(|v| v.abs() < 1e-2), "{x:?}");
    }

    #[test]
    fn first_adam_step_moves_each_parameter_by_lr() {
        let mut x = vec![1.0f32, 1.0];
        Adam::new(2, 0.01).step(&mut x, &[5.0, -0.001]);
        assert!((x[0] - 0.99).abs() < 1e-6 && (x[1] - 1.01).abs() < 1e-4);
    }

    #[test]
    fn clipping_scales_to_the_norm() {
        let (mut a, mut b) = (vec![3.0f32], vec![4.0f32]);
        let norm = clip_global_norm(&mut [&mut a, &mut b], Some(1.0));
        assert_eq!(norm, 5.0);
        assert!((a[0] - 0.6).abs() < 1e-6 && (b[0] - 0.8).abs() < 1e-6);
    }
}

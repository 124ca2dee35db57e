//! The public entry points driven with arbitrary sizes and values: each
//! returns an error or a result, never panics.

use dfaas_core::{EnvConfig, EnvModel};
use dfaas_policies::backend::{Backend, CpuBackend, LossCoefficients, Minibatch, PolicySpec};
use dfaas_policies::baselines;
use dfaas_policies::dirichlet;
use dfaas_policies::gemm::{Op, gemm};
use dfaas_policies::mlp::{Activation, Mlp, MlpCache};
use dfaas_policies::special::{digamma, trigamma};
use proptest::prelude::*;

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![6 => 0usize..6, 1 => any::<usize>(), 1 => Just(1usize << 32)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn gemm_never_panics(m in size(), k in size(), n in size(),
                         a_len in 0usize..40, b_len in 0usize..40, c_len in 0usize..40,
                         ta in any::<bool>(), tb in any::<bool>()) {
        let (a, b) = (vec![1f32; a_len], vec![1f32; b_len]);
        let mut c = vec![0f32; c_len];
        let op = |t: bool| if t { Op::Transposed } else { Op::Plain };
        if gemm(m, k, n, 1.0, &a, op(ta), &b, op(tb), 0.0, &mut c).is_ok() {
            // Every touched entry of c is k (a product of ones).
            prop_assert!(c[..m * n].iter().all(|&v| v == k as f32));
        }
    }

    #[test]
    fn mlps_never_panic(widths in prop::collection::vec(size(), 0..4),
                        params_len in 0usize..200, x_len in 0usize..40, batch in size()) {
        if let Ok(mlp) = Mlp::new(&widths, Activation::Tanh) {
            let params = vec![0.1f32; params_len];
            let x = vec![0.5f32; x_len];
            let mut cache = MlpCache::default();
            if mlp.forward(&params, &x, batch, &mut cache).is_ok() {
                let mut grads = vec![0f32; params_len];
                let d = vec![1f32; cache.output.len()];
                mlp.backward(&params, &mut cache, &d, &mut grads).unwrap();
            }
        }
    }

    #[test]
    fn dirichlet_and_special_functions_never_panic(
        alpha in prop::collection::vec(prop_oneof![0.0f32..10.0, any::<f32>()], 0..70),
        out_len in 0usize..70, x in any::<f64>(), seed in any::<u64>(),
    ) {
        let mut out = vec![0f32; out_len];
        let mut rng = dfaas_core::rng::seeded(seed);
        let _ = dirichlet::sample(&alpha, &mut rng, &mut out);
        let mut grad = vec![0f32; alpha.len()];
        let _ = dirichlet::log_prob(&alpha, &out, &mut grad);
        let _ = dirichlet::entropy(&alpha, &mut grad);
        let _ = (digamma(x), trigamma(x), digamma(-x.abs()), trigamma(x.abs()));
    }

    #[test]
    fn backends_refuse_what_does_not_fit(
        obs_len in 0usize..60, critic_len in 0usize..60, alpha_len in 0usize..30,
        values_len in 0usize..10, batch in size(), n in 0usize..8, short in 0usize..9,
        masked in any::<bool>(),
    ) {
        let spec = PolicySpec {
            obs_dim: 4, critic_obs_dim: 4, action_dim: 3, per_entry: false, hidden: vec![5],
            activation: Activation::Relu, learning_rate: 1e-3, local_bias: 0.0,
        };
        let mut backend = CpuBackend::new();
        let mut policy = backend.init_policy(&spec, 1).unwrap();
        let (mut alpha, mut values) = (vec![0f32; alpha_len], vec![0f32; values_len]);
        let _ = backend.act(&policy, &vec![0.1; obs_len], &vec![0.1; critic_len], batch, None,
                            &mut alpha, &mut values);
        // A minibatch of `n` samples with one slice (`short`) a value short.
        let len = |i: usize, full: usize| if i == short { full.saturating_sub(1) } else { full };
        let (obs, critic) = (vec![0.2f32; len(0, n * 4)], vec![0.2f32; len(1, n * 4)]);
        let (actions, old_alpha) = (vec![1.0 / 3.0; len(2, n * 3)], vec![1f32; len(3, n * 3)]);
        let (logp, adv, ret) = (vec![0f32; len(4, n)], vec![1f32; len(5, n)], vec![0f32; len(6, n)]);
        let mask = vec![1u8; len(7, n * 3)];
        let mb = Minibatch { size: n, obs: &obs, critic_obs: &critic, actions: &actions,
            old_alpha: &old_alpha, old_log_prob: &logp, advantages: &adv, returns: &ret,
            mask: masked.then_some(&mask[..]) };
        let c = LossCoefficients { clip: 0.2, value_coeff: 0.5, value_clip: None,
            entropy_coeff: 0.01, kl_coeff: 0.1, max_grad_norm: Some(0.5) };
        let before = policy.clone();
        let fits = mb.check(&spec).is_ok();
        let result = backend.update(&mut policy, &mb, &c);
        prop_assert_eq!(result.is_ok(), fits);
        if !fits {
            prop_assert_eq!(&policy, &before, "a refused update changes nothing");
        }
    }

    /// A per-entry actor (the agnostic layout) with masks of any length:
    /// an error or a value, never a panic; a refused update changes
    /// nothing, and masked acting fits exactly when the slices do.
    #[test]
    fn per_entry_backends_refuse_what_does_not_fit(
        obs_len in 0usize..80, mask_len in 0usize..30, batch in 0usize..6, n in 0usize..6,
        used in proptest::collection::vec(any::<bool>(), 18),
    ) {
        let spec = PolicySpec {
            obs_dim: 12, critic_obs_dim: 4, action_dim: 3, per_entry: true, hidden: vec![5],
            activation: Activation::Tanh, learning_rate: 1e-3, local_bias: 0.0,
        };
        let mut backend = CpuBackend::new();
        let mut policy = backend.init_policy(&spec, 2).unwrap();
        let mask: Vec<u8> = (0..mask_len).map(|i| u8::from(used[i % used.len()])).collect();
        let (mut alpha, mut values) = (vec![0f32; batch * 3], vec![0f32; batch]);
        let acted = backend.act(&policy, &vec![0.3; obs_len], &vec![0.1; batch * 4], batch,
                                Some(&mask), &mut alpha, &mut values);
        prop_assert_eq!(acted.is_ok(), obs_len == batch * 12 && mask_len == batch * 3);
        let (obs, critic) = (vec![0.2f32; n * 12], vec![0.2f32; n * 4]);
        let actions = vec![0.5f32; n * 3];
        let (logp, adv, ret) = (vec![0f32; n], vec![1f32; n], vec![0f32; n]);
        let mb = Minibatch { size: n, obs: &obs, critic_obs: &critic, actions: &actions,
            old_alpha: &actions, old_log_prob: &logp, advantages: &adv, returns: &ret,
            mask: Some(&mask[..]) };
        let c = LossCoefficients { clip: 0.2, value_coeff: 0.5, value_clip: None,
            entropy_coeff: 0.01, kl_coeff: 0.1, max_grad_norm: Some(0.5) };
        let before = policy.clone();
        let fits = mb.check(&spec).is_ok();
        let result = backend.update(&mut policy, &mb, &c);
        prop_assert_eq!(result.is_ok(), fits, "{:?}", result);
        if !fits {
            prop_assert_eq!(&policy, &before, "a refused update changes nothing");
        }
    }

    #[test]
    fn controllers_refuse_what_does_not_fit(obs_len in 0usize..80, actions_len in 0usize..80,
                                            seed in any::<u64>()) {
        let model = EnvModel::new(&EnvConfig::with_network(&["a b c", "b c"]).build().unwrap()).unwrap();
        let obs = vec![10f32; obs_len];
        for mut c in baselines::all(seed) {
            let mut actions = vec![0f32; actions_len];
            let _ = c.act(&model, &obs, &mut actions);
        }
    }
}

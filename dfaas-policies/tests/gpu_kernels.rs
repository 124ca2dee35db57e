//! Every WGSL kernel of `dfaas_gpu::nn` against its CPU twin — the CPU
//! backend's own operation in this crate — on random inputs, on every
//! adapter there is (lavapipe in CI, where `DFAAS_REQUIRE_GPU=1` makes a
//! missing adapter a failure instead of a skip).
//!
//! Tolerances are absolute + relative (`|gpu − cpu| ≤ atol + rtol·|cpu|`),
//! stated per comparison with their reason: the GPU sums in another order
//! than the CPU (matrixmultiply's blocking, f64 accumulators), and WGSL's
//! division, `sqrt`, `exp` and `log` are not correctly rounded (Vulkan
//! allows a few ulp).

use dfaas_core::rng::{Xoshiro128PlusPlus, env_master_seed, seeded, standard_normal, uniform};
use dfaas_gpu::nn::DeviceVec;
use dfaas_gpu::nn::adam::{AdamSettings, GpuAdam};
use dfaas_gpu::nn::clip::GlobalNormClip;
use dfaas_gpu::nn::dirichlet::{Concentrations, DirichletKernel};
use dfaas_gpu::nn::gae::Gae;
use dfaas_gpu::nn::loss::{LossBuffers, LossSettings, PpoLoss};
use dfaas_gpu::nn::mlp::{self as gpu_mlp, GroupedMlp};
use dfaas_gpu::nn::sampler::DirichletSampler;
use dfaas_gpu::{GpuContext, GpuError};
use dfaas_policies::adam::{Adam, clip_global_norm};
use dfaas_policies::backend::{
    Backend, CONCENTRATION_EPSILON, CpuBackend, LossCoefficients, Minibatch, PolicySpec,
    actor_loss_gradient, value_loss_gradient,
};
use dfaas_policies::dirichlet;
use dfaas_policies::gae;
use dfaas_policies::mlp::{Activation, Mlp, MlpCache};
use dfaas_policies::special::{digamma, ln_gamma, trigamma};
use rand_core::{Rng, SeedableRng};

fn context() -> Option<GpuContext> {
    let ctx = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)")?;
    eprintln!("adapter: {}", ctx.describe());
    Some(ctx)
}

/// Asserts `|gpu − cpu| ≤ atol + rtol·|cpu|` entry by entry, naming the
/// first entry that is not; prints the largest absolute error.
fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], atol: f64, rtol: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut worst = 0f64;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let (g, c) = (f64::from(g), f64::from(c));
        let error = (g - c).abs();
        worst = worst.max(error);
        assert!(
            error <= atol + rtol * c.abs(),
            "{what}[{i}]: gpu {g}, cpu {c} (error {error:e}, allowed {atol:e} + {rtol:e}·|cpu|)"
        );
    }
    eprintln!("{what}: largest absolute error {worst:e}");
}

/// The entries row `r` of a random mask uses: at least two, every third
/// row all of them, sorted.
fn random_used(
    rng: &mut dfaas_core::rng::Xoshiro128PlusPlus,
    r: usize,
    width: usize,
) -> Vec<usize> {
    let mut used: Vec<usize> = (0..width)
        .filter(|_| r.is_multiple_of(3) || uniform(rng, 0.0, 1.0) < 0.6)
        .collect();
    for j in 0..width {
        if used.len() < 2 && !used.contains(&j) {
            used.push(j);
        }
    }
    used.sort_unstable();
    used
}

/// Largest magnitude of `values` (the scale of a tensor's absolute
/// tolerance).
fn scale(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max)
}

#[test]
fn grouped_mlp_matches_the_cpu_mlp_forward_and_backward() {
    let Some(ctx) = context() else { return };
    let cases: [(&[usize], Activation, usize, usize); 3] = [
        (&[7, 64, 64, 5], Activation::Tanh, 3, 70),
        (&[5, 33, 3], Activation::Relu, 2, 300),
        (&[12, 256, 256, 9], Activation::Tanh, 2, 40),
    ];
    let mut rng = seeded(21);
    for (widths, activation, groups, batch) in cases {
        let mlp = Mlp::new(widths, activation).unwrap();
        let (n_in, n_out, per_group) = (mlp.input(), mlp.output(), mlp.num_params());
        let mut params = Vec::with_capacity(groups * per_group);
        let mut x = Vec::with_capacity(groups * batch * n_in);
        let mut d_out = Vec::with_capacity(groups * batch * n_out);
        for g in 0..groups {
            // RLlib's initialisation with random biases (the bias paths
            // matter), inputs of a few units, the last group's input padded
            // with zeros as a narrower agent's would be.
            let mut group = mlp.init(&mut rng, 1.0);
            for (name, shape, offset) in mlp.tensors() {
                if name.ends_with("bias") {
                    for b in &mut group[offset..offset + shape[0]] {
                        *b = uniform(&mut rng, -0.5, 0.5) as f32;
                    }
                }
            }
            params.extend(group);
            for _ in 0..batch {
                for i in 0..n_in {
                    let padded = g + 1 == groups && i + 2 >= n_in;
                    x.push(if padded {
                        0.0
                    } else {
                        uniform(&mut rng, -3.0, 3.0) as f32
                    });
                }
            }
            d_out.extend((0..batch * n_out).map(|_| standard_normal(&mut rng) as f32));
        }
        let mut cpu_out = Vec::new();
        let mut cpu_grads = vec![0f32; groups * per_group];
        for g in 0..groups {
            let mut cache = MlpCache::default();
            let p = &params[g * per_group..(g + 1) * per_group];
            mlp.forward(
                p,
                &x[g * batch * n_in..(g + 1) * batch * n_in],
                batch,
                &mut cache,
            )
            .unwrap();
            cpu_out.extend_from_slice(&cache.output);
            mlp.backward(
                p,
                &mut cache,
                &d_out[g * batch * n_out..(g + 1) * batch * n_out],
                &mut cpu_grads[g * per_group..(g + 1) * per_group],
            )
            .unwrap();
        }
        let gpu_activation = match activation {
            Activation::Tanh => gpu_mlp::Activation::Tanh,
            Activation::Relu => gpu_mlp::Activation::Relu,
        };
        let net = GroupedMlp::new(&ctx, widths, gpu_activation, groups, batch).unwrap();
        assert_eq!(net.params_per_group(), per_group);
        net.params().write(&ctx, &params).unwrap();
        net.input().write(&ctx, &x).unwrap();
        net.forward(&ctx).unwrap();
        let gpu_out = net.output().read(&ctx).unwrap();
        let what = format!("{widths:?} {activation:?} output");
        // Sums of up to 256 products in another order, through the same
        // tanh approximation (WGSL's division within 2.5 ulp): tight enough
        // that a tanh coefficient off by 2e-5 fails.
        assert_close(&what, &gpu_out, &cpu_out, 1e-6 * scale(&cpu_out), 1e-5);
        net.d_output().write(&ctx, &d_out).unwrap();
        net.backward(&ctx).unwrap();
        let gpu_grads = net.grads().read(&ctx).unwrap();
        let what = format!("{widths:?} {activation:?} gradients");
        // Sums over up to 300 samples in another order (matrixmultiply
        // blocks them), each through up to 256-term products.
        assert_close(
            &what,
            &gpu_grads,
            &cpu_grads,
            2e-5 * scale(&cpu_grads),
            1e-4,
        );
        // Fixed-order sums: the same bits on a second run.
        net.forward(&ctx).unwrap();
        net.backward(&ctx).unwrap();
        assert_eq!(
            net.grads().read(&ctx).unwrap(),
            gpu_grads,
            "{what}: run to run"
        );
    }
}

#[test]
fn gpu_adam_matches_the_cpu_adam_step() {
    let Some(ctx) = context() else { return };
    let n = 5_000;
    let lr = 3e-3f32;
    let mut rng = seeded(8);
    let mut cpu_params: Vec<f32> = (0..n).map(|_| standard_normal(&mut rng) as f32).collect();
    let mut cpu = Adam::new(n, lr);
    let params = DeviceVec::from_slice(&ctx, "params", &cpu_params).unwrap();
    let grads = DeviceVec::zeros(&ctx, "grads", n).unwrap();
    let gpu = GpuAdam::new(&ctx, &params, &grads, AdamSettings::new(lr)).unwrap();
    for step in 0..6 {
        if step == 4 {
            // Far into a run (checkpoint resume): βᵗ no longer near 1.
            cpu.t = 1_000;
            gpu.set_steps(&ctx, 1_000).unwrap();
        }
        // Gradients over eight decades (and exact zeros).
        let g: Vec<f32> = (0..n)
            .map(|i| match i % 5 {
                0 => 0.0,
                r => (standard_normal(&mut rng) * 10f64.powi(2 * r as i32 - 6)) as f32,
            })
            .collect();
        grads.write(&ctx, &g).unwrap();
        gpu.step(&ctx).unwrap();
        cpu.step(&mut cpu_params, &g);
        assert_eq!(u64::from(gpu.steps(&ctx).unwrap()), cpu.t);
        // The moments: the same products and sums (a driver may fuse
        // them into FMAs).
        assert_close("m", &gpu.m().read(&ctx).unwrap(), &cpu.m, 0.0, 1e-6);
        assert_close("v", &gpu.v().read(&ctx).unwrap(), &cpu.v, 0.0, 1e-6);
        // A step of about lr whose division and square root may each be
        // off by a few ulp: 1e-5·lr per step taken, and the rounding of
        // the parameter itself.
        let steps = step as f64 + 1.0;
        assert_close(
            &format!("params after step {step}"),
            &params.read(&ctx).unwrap(),
            &cpu_params,
            1e-5 * f64::from(lr) * steps,
            3e-7,
        );
    }
}

#[test]
fn gae_matches_the_cpu_scan_and_standardisation() {
    let Some(ctx) = context() else { return };
    // γ, λ ≠ 0; episode ends inside the rollout (about one step in 9);
    // rollouts that end mid-episode bootstrap from `last_values`. Several
    // shapes: more columns than one workgroup, a single step, a single
    // column; groups of columns standardised on their own (more samples
    // than a workgroup, a few, one each: left as they are).
    for (steps, columns, gamma, lambda, groups) in [
        (32, 300, 0.99, 0.95, 1),
        (1, 70, 0.7, 0.3, 1),
        (288, 1, 0.5, 1.0, 1),
        (20, 45, 0.0, 0.0, 1),
        (32, 300, 0.99, 0.95, 3),
        (20, 45, 0.9, 0.8, 5),
        (1, 6, 0.9, 0.8, 6),
    ] {
        let mut rng = seeded(21);
        let len = steps * columns;
        let rewards: Vec<f32> = (0..len)
            .map(|_| uniform(&mut rng, -1.0, 1.0) as f32)
            .collect();
        let values: Vec<f32> = (0..len).map(|_| standard_normal(&mut rng) as f32).collect();
        let dones: Vec<f32> = (0..len)
            .map(|_| f32::from(u8::from(uniform(&mut rng, 0.0, 1.0) < 0.11)))
            .collect();
        let last_values: Vec<f32> = (0..columns)
            .map(|_| standard_normal(&mut rng) as f32)
            .collect();
        let samples = gae::Samples {
            steps,
            columns,
            rewards: &rewards,
            values: &values,
            dones: &dones,
            last_values: &last_values,
        };
        let (cpu_advantages, cpu_returns) = gae::advantages(&samples, gamma, lambda).unwrap();
        let kernel = Gae::new(&ctx, steps, columns, gamma, lambda, groups).unwrap();
        kernel.rewards().write(&ctx, &rewards).unwrap();
        kernel.values().write(&ctx, &values).unwrap();
        kernel.dones().write(&ctx, &dones).unwrap();
        kernel.last_values().write(&ctx, &last_values).unwrap();
        let label = format!("{steps}×{columns}, γ {gamma}, λ {lambda}, {groups} groups");
        for standardise in [false, true] {
            kernel.run(&ctx, standardise).unwrap();
            // The scan: the same f32 operations in the same order (products
            // rounded before they are added): equal up to a driver's
            // rounding of the same expressions, 1e-6 of the tensor's scale.
            let returns = kernel.returns().read(&ctx).unwrap();
            assert_close(
                &format!("returns {label}"),
                &returns,
                &cpu_returns,
                1e-6 * scale(&cpu_returns),
                1e-6,
            );
            let advantages = kernel.advantages().read(&ctx).unwrap();
            if standardise {
                // The CPU takes mean and variance in f64, the GPU in f32
                // (each invocation's strided slice, then a tree): about
                // len/256 roundings of 6e-8 each on the moments. The CPU
                // standardises each group's samples (its columns, every
                // step) on their own.
                let k = columns / groups;
                let mut want = cpu_advantages.clone();
                for g in 0..groups {
                    let at: Vec<usize> = (0..steps)
                        .flat_map(|t| (g * k..(g + 1) * k).map(move |c| t * columns + c))
                        .collect();
                    let mut group: Vec<f32> = at.iter().map(|&i| cpu_advantages[i]).collect();
                    gae::standardise(&mut group);
                    for (&i, &a) in at.iter().zip(&group) {
                        want[i] = a;
                    }
                }
                assert_close(
                    &format!("standardised {label}"),
                    &advantages,
                    &want,
                    2e-5,
                    1e-5,
                );
            } else {
                assert_close(
                    &format!("advantages {label}"),
                    &advantages,
                    &cpu_advantages,
                    1e-6 * scale(&cpu_advantages),
                    1e-6,
                );
            }
        }
        // Run to run: the same bits.
        kernel.run(&ctx, true).unwrap();
        let again = kernel.advantages().read(&ctx).unwrap();
        kernel.run(&ctx, true).unwrap();
        assert_eq!(again, kernel.advantages().read(&ctx).unwrap());
    }
    assert!(Gae::new(&ctx, 0, 4, 0.9, 0.9, 1).is_err());
    assert!(matches!(
        Gae::new(&ctx, 4, 4, 1.5, 0.9, 1),
        Err(GpuError::Input { field: "gamma", .. })
    ));
    for groups in [0, 3] {
        assert!(matches!(
            Gae::new(&ctx, 4, 4, 0.9, 0.9, groups),
            Err(GpuError::Input {
                field: "groups",
                ..
            })
        ));
    }
    assert!(Gae::new(&ctx, usize::MAX, 2, 0.9, 0.9, 1).is_err());
}

#[test]
fn global_norm_clip_matches_the_cpu_clip() {
    let Some(ctx) = context() else { return };
    // Two parts per group (actor and critic gradients), the first spread
    // over three workgroups of the first stage; group norms from 1e-3 to
    // 1e3 around the cap of 2.
    let (groups, actor_len, critic_len) = (5, 2_500, 70);
    let mut rng = seeded(4);
    let mut actor = Vec::new();
    let mut critic = Vec::new();
    for g in 0..groups {
        let magnitude = 10f64.powi(g as i32 - 2) / 40.0;
        actor.extend((0..actor_len).map(|_| (standard_normal(&mut rng) * magnitude) as f32));
        critic.extend((0..critic_len).map(|_| (standard_normal(&mut rng) * magnitude) as f32));
    }
    for max_norm in [Some(2.0f32), None] {
        let (mut cpu_actor, mut cpu_critic) = (actor.clone(), critic.clone());
        let cpu_norms: Vec<f32> = cpu_actor
            .chunks_exact_mut(actor_len)
            .zip(cpu_critic.chunks_exact_mut(critic_len))
            .map(|(a, c)| clip_global_norm(&mut [a, c], max_norm))
            .collect();
        let gpu_actor = DeviceVec::from_slice(&ctx, "actor", &actor).unwrap();
        let gpu_critic = DeviceVec::from_slice(&ctx, "critic", &critic).unwrap();
        let clip = GlobalNormClip::new(&ctx, &[&gpu_actor, &gpu_critic], groups, max_norm).unwrap();
        clip.run(&ctx).unwrap();
        // f32 tree sums of 2 570 squares against the CPU's f64 sum.
        let label = format!("{max_norm:?}");
        assert_close(
            &format!("norms ({label})"),
            &clip.norms().read(&ctx).unwrap(),
            &cpu_norms,
            0.0,
            2e-6,
        );
        // The scale max/norm inherits the norm's error (and WGSL's
        // division); unscaled groups stay bit for bit.
        for (what, gpu, cpu) in [
            ("actor", &gpu_actor, &cpu_actor),
            ("critic", &gpu_critic, &cpu_critic),
        ] {
            assert_close(
                &format!("clipped {what} ({label})"),
                &gpu.read(&ctx).unwrap(),
                cpu,
                0.0,
                5e-6,
            );
        }
        if max_norm.is_none() {
            assert_eq!(gpu_actor.read(&ctx).unwrap(), actor);
        }
    }
}

#[test]
fn softplus_concentrations_match_the_cpu_backend() {
    let Some(ctx) = context() else { return };
    // The CPU backend's concentrations come out of `act`: an actor whose
    // logits span [−34, 34] over its inputs (ReLU layer of width 1 with
    // weight 1, then output j = (60 + j)·x − 30 − j/2 for x in [0, 1]),
    // across the floor (logits far below 0), the ln(1 + eˣ) branch and the
    // identity branch above 20.
    let k = 8;
    let spec = PolicySpec {
        obs_dim: 1,
        critic_obs_dim: 1,
        action_dim: k,
        per_entry: false,
        hidden: vec![1],
        activation: Activation::Relu,
        learning_rate: 1e-3,
        local_bias: 0.0,
    };
    let mut backend = CpuBackend::new();
    let mut policy = backend.init_policy(&spec, 1).unwrap();
    policy.actor_params[0] = 1.0;
    policy.actor_params[1] = 0.0;
    for j in 0..k {
        policy.actor_params[2 + j] = 60.0 + j as f32;
        policy.actor_params[2 + k + j] = -30.0 - j as f32 / 2.0;
    }
    let rows = 4_096;
    let mut rng = seeded(17);
    let obs: Vec<f32> = (0..rows)
        .map(|_| uniform(&mut rng, 0.0, 1.0) as f32)
        .collect();
    let (mut cpu_alpha, mut values) = (vec![0f32; rows * k], vec![0f32; rows]);
    backend
        .act(&policy, &obs, &obs, rows, None, &mut cpu_alpha, &mut values)
        .unwrap();
    // The logits `act` mapped: the actor's forward pass, the same call.
    let mut cache = MlpCache::default();
    policy
        .actor
        .forward(&policy.actor_params, &obs, rows, &mut cache)
        .unwrap();
    let logits = DeviceVec::from_slice(&ctx, "logits", &cache.output).unwrap();
    let alpha = DeviceVec::zeros(&ctx, "alpha", rows * k).unwrap();
    Concentrations::new(&ctx, &logits, &alpha)
        .unwrap()
        .run(&ctx)
        .unwrap();
    // WGSL's exp may be off by 3 + 2|x| ulp (Vulkan), 43 ulp ≈ 5e-6 at
    // |x| = 20; the series for ln(1 + u) is exact to f32 rounding.
    assert_close("alpha", &alpha.read(&ctx).unwrap(), &cpu_alpha, 0.0, 1e-5);
}

/// Asserts `|gpu − cpu| ≤ 1e-6 + rtol·terms` for one value, where `terms`
/// is the sum of the magnitudes of the terms the value adds up; returns
/// `|gpu − cpu| / terms`.
fn check_terms(what: &str, row: usize, gpu: f32, cpu: f32, terms: f64, rtol: f64) -> f64 {
    let (g, c) = (f64::from(gpu), f64::from(cpu));
    let error = (g - c).abs();
    assert!(
        error <= 1e-6 + rtol * terms,
        "{what}, row {row}: gpu {g}, cpu {c} (error {error:e}, terms {terms:e})"
    );
    error / terms
}

#[test]
fn dirichlet_log_prob_entropy_kl_and_gradients_match_the_cpu() {
    let Some(ctx) = context() else { return };
    let (rows, width) = (3_000, 6);
    let mut rng = seeded(33);
    let log_uniform = |rng: &mut _, lo: f64, hi: f64| uniform(rng, lo.ln(), hi.ln()).exp() as f32;
    let mut alpha = vec![0f32; rows * width];
    let mut old_alpha = vec![0f32; rows * width];
    let mut actions = vec![0.37f32; rows * width];
    let mut mask = vec![0u32; rows * width];
    let mut used_of = Vec::with_capacity(rows);
    for r in 0..rows {
        let used = random_used(&mut rng, r, width);
        for &j in &used {
            let i = r * width + j;
            mask[i] = 1;
            // α from the 1e-7 floor to 100: the whole range, the floor
            // itself (softplus of very negative logits), near 1, large.
            alpha[i] = match r % 4 {
                0 => log_uniform(&mut rng, 1e-7, 100.0),
                1 => 1e-7 * (1.0 + uniform(&mut rng, 0.0, 1e-2) as f32),
                2 => uniform(&mut rng, 0.5, 2.0) as f32,
                _ => uniform(&mut rng, 20.0, 100.0) as f32,
            };
            // At the floor, or mixed with moderate ones.
            if r % 4 == 1 && j % 2 == 0 {
                alpha[i] = log_uniform(&mut rng, 0.1, 10.0);
            }
            old_alpha[i] = if r % 5 == 0 {
                alpha[i]
            } else {
                alpha[i] * uniform(&mut rng, -0.7, 0.7).exp() as f32
            };
        }
        let a: Vec<f32> = used.iter().map(|&j| alpha[r * width + j]).collect();
        let mut x = vec![0f32; used.len()];
        dirichlet::sample(&a, &mut rng, &mut x).unwrap();
        for (&j, &v) in used.iter().zip(&x) {
            actions[r * width + j] = v;
        }
        used_of.push(used);
    }
    let kernel = DirichletKernel::new(&ctx, rows, width).unwrap();
    kernel.alpha().write(&ctx, &alpha).unwrap();
    kernel.old_alpha().write(&ctx, &old_alpha).unwrap();
    kernel.actions().write(&ctx, &actions).unwrap();
    kernel.mask().write(&ctx, &mask).unwrap();
    kernel.run(&ctx).unwrap();
    let values = kernel.values().read(&ctx).unwrap();
    let grads = kernel.grads().read(&ctx).unwrap();
    let wide = rows * width;
    let mut worst = [0f64; 6];
    for (r, used) in used_of.iter().enumerate() {
        let pick = |v: &[f32]| -> Vec<f32> { used.iter().map(|&j| v[r * width + j]).collect() };
        let (a, b, x) = (pick(&alpha), pick(&old_alpha), pick(&actions));
        let m = used.len();
        let (mut g_lp, mut g_h, mut g_kl) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
        let cpu = [
            dirichlet::log_prob(&a, &x, &mut g_lp),
            dirichlet::entropy(&a, &mut g_h),
            dirichlet::kl(&b, &a, &mut g_kl),
        ];
        // The tolerances' scales: the values' term magnitudes, and the
        // gradients' below (`a0 − k` counts as `a0 + k`, as there).
        let f = |v: f32| f64::from(v);
        let a0: f64 = a.iter().copied().map(f).sum();
        let b0: f64 = b.iter().copied().map(f).sum();
        let ln_x: Vec<f64> = x
            .iter()
            .map(|&v| f(v).max(dirichlet::MIN_ENTRY).ln())
            .collect();
        let k = m as f64;
        let terms = term_magnitudes(&a, &b, &x);
        for (v, name) in ["log_prob", "entropy", "kl"].iter().enumerate() {
            let ratio = check_terms(
                name,
                r,
                values[3 * r + v],
                cpu[v],
                1.0 + terms[v],
                VALUE_RTOL,
            );
            worst[v] = worst[v].max(ratio);
        }
        for (i, &j) in used.iter().enumerate() {
            let (ai, bi) = (f(a[i]), f(b[i]));
            let grad_terms = [
                digamma(a0).abs() + digamma(ai).abs() + ln_x[i].abs(),
                (a0 + k) * trigamma(a0) + ((ai - 1.0) * trigamma(ai)).abs(),
                digamma(ai).abs() + digamma(a0).abs() + digamma(bi).abs() + digamma(b0).abs(),
            ];
            for (v, (name, cpu_grad)) in
                [("d log_prob", &g_lp), ("d entropy", &g_h), ("d kl", &g_kl)]
                    .iter()
                    .enumerate()
            {
                // ψ's shifts and its logarithm cancel near its root: a
                // floor of 3 (≈ ln 10 + 1/10, the size of the shifted
                // terms) on the scales of the gradients made of ψ; ψ′ sums
                // positive terms only.
                let floor = if v == 1 { 0.0 } else { 3.0 };
                let gpu_grad = grads[v * wide + r * width + j];
                let ratio = check_terms(
                    name,
                    r,
                    gpu_grad,
                    cpu_grad[i],
                    floor + grad_terms[v],
                    GRAD_RTOL,
                );
                worst[3 + v] = worst[3 + v].max(ratio);
            }
        }
        for j in (0..width).filter(|j| !used.contains(j)) {
            for v in 0..3 {
                assert_eq!(
                    grads[v * wide + r * width + j],
                    0.0,
                    "row {r}: left-out entry {j}"
                );
            }
        }
    }
    eprintln!("largest error / terms: log_prob, entropy, kl, their gradients: {worst:?}");

    // The log-density alone (acting): the same bits as the full
    // evaluation's, nothing else written.
    let marker = vec![-7.0f32; rows * 3];
    kernel.values().write(&ctx, &marker).unwrap();
    let before = ctx.traffic();
    dfaas_gpu::nn::submit_pass(&ctx, "log density", |pass| {
        kernel.encode_log_density(&ctx, pass)
    })
    .unwrap();
    assert_eq!((ctx.traffic() - before).submits, 1);
    let log_density = kernel.values().read(&ctx).unwrap();
    for r in 0..rows {
        assert_eq!(
            log_density[3 * r].to_bits(),
            values[3 * r].to_bits(),
            "row {r}"
        );
        assert_eq!(&log_density[3 * r + 1..3 * r + 3], &[-7.0, -7.0], "row {r}");
    }
    assert_eq!(
        kernel.grads().read(&ctx).unwrap(),
        grads,
        "gradients untouched"
    );
}

/// The magnitudes of the terms that the log-density of `x` under Dir(`a`),
/// the entropy of Dir(`a`) and KL(Dir(`b`) ‖ Dir(`a`)) sum (CPU functions,
/// f64): the scales of their tolerances. `a0 − k` counts as `a0 + k`: a0 is
/// summed in f32 on the GPU, so the difference keeps an error relative to
/// a0.
fn term_magnitudes(a: &[f32], b: &[f32], x: &[f32]) -> [f64; 3] {
    let f = |v: f32| f64::from(v);
    let a0: f64 = a.iter().copied().map(f).sum();
    let b0: f64 = b.iter().copied().map(f).sum();
    let k = a.len() as f64;
    [
        ln_gamma(a0).abs()
            + a.iter()
                .zip(x)
                .map(|(&ai, &xi)| {
                    ((f(ai) - 1.0) * f(xi).max(dirichlet::MIN_ENTRY).ln()).abs()
                        + ln_gamma(f(ai)).abs()
                })
                .sum::<f64>(),
        ln_gamma(a0).abs()
            + (a0 + k) * digamma(a0).abs()
            + a.iter()
                .map(|&ai| ln_gamma(f(ai)).abs() + ((f(ai) - 1.0) * digamma(f(ai))).abs())
                .sum::<f64>(),
        ln_gamma(a0).abs()
            + ln_gamma(b0).abs()
            + a.iter()
                .zip(b)
                .map(|(&ai, &bi)| {
                    ln_gamma(f(ai)).abs()
                        + ln_gamma(f(bi)).abs()
                        + ((f(bi) - f(ai)) * (digamma(f(bi)) - digamma(b0))).abs()
                })
                .sum::<f64>(),
    ]
}

/// Relative tolerances on the sum of the magnitudes of a value's terms:
/// f32 `ln Γ`, ψ and ψ′ (shifted by up to 10 terms, WGSL `log` within a
/// few ulp) against the CPU's f64. The values need more: f32 `ln Γ` of
/// α near 1–2 is the difference of Stirling's series at α + n and the
/// logarithm of the shift product, both near 14 (measured on lavapipe:
/// 3.5e-6 for the values, 3.2e-7 for the gradients).
const VALUE_RTOL: f64 = 1e-5;
const GRAD_RTOL: f64 = 2e-6;

#[test]
fn an_update_in_one_submit_matches_the_cpu_backward_clip_and_adam() {
    let Some(ctx) = context() else { return };
    // Forward, backward, clipping and Adam recorded into one pass: one
    // submit and no upload, then the parameters against the CPU's
    // `Mlp::backward`, `clip_global_norm` and `Adam::step` per group.
    let (widths, groups, batch, lr, cap) = ([6usize, 32, 4], 3, 50, 1e-3f32, 0.5f32);
    let mlp = Mlp::new(&widths, Activation::Tanh).unwrap();
    let per_group = mlp.num_params();
    let mut rng = seeded(12);
    let params: Vec<f32> = (0..groups).flat_map(|_| mlp.init(&mut rng, 1.0)).collect();
    let x: Vec<f32> = (0..groups * batch * 6)
        .map(|_| uniform(&mut rng, -2.0, 2.0) as f32)
        .collect();
    let d_out: Vec<f32> = (0..groups * batch * 4)
        .map(|_| standard_normal(&mut rng) as f32)
        .collect();
    let mut cpu_params = params.clone();
    let mut cpu_norms = Vec::new();
    for g in 0..groups {
        let p = &mut cpu_params[g * per_group..(g + 1) * per_group];
        let mut cache = MlpCache::default();
        mlp.forward(p, &x[g * batch * 6..(g + 1) * batch * 6], batch, &mut cache)
            .unwrap();
        let mut grads = vec![0f32; per_group];
        mlp.backward(
            p,
            &mut cache,
            &d_out[g * batch * 4..(g + 1) * batch * 4],
            &mut grads,
        )
        .unwrap();
        cpu_norms.push(clip_global_norm(&mut [&mut grads], Some(cap)));
        Adam::new(per_group, lr).step(p, &grads);
    }
    let gpu_activation = gpu_mlp::Activation::Tanh;
    let net = GroupedMlp::new(&ctx, &widths, gpu_activation, groups, batch).unwrap();
    let clip = GlobalNormClip::new(&ctx, &[net.grads()], groups, Some(cap)).unwrap();
    let adam = GpuAdam::new(&ctx, net.params(), net.grads(), AdamSettings::new(lr)).unwrap();
    net.params().write(&ctx, &params).unwrap();
    net.input().write(&ctx, &x).unwrap();
    net.d_output().write(&ctx, &d_out).unwrap();
    let before = ctx.traffic();
    dfaas_gpu::nn::submit_pass(&ctx, "update", |pass| {
        net.encode_forward(&ctx, pass)?;
        net.encode_backward(&ctx, pass)?;
        clip.encode(&ctx, pass)?;
        adam.encode(&ctx, pass)
    })
    .unwrap();
    let traffic = ctx.traffic() - before;
    assert_eq!((traffic.submits, traffic.bytes_uploaded), (1, 0));
    // Every group's norm is above the cap (so the scaling is exercised).
    assert!(cpu_norms.iter().all(|&n| n > cap), "{cpu_norms:?}");
    // The norms inherit the gradients' tolerance of the MLP test (1e-4
    // relative). Adam's first step moves each parameter by
    // lr·g/(|g| + eps) — invariant to the clipping scale but for eps (the
    // scaling itself is the clipping test's) — so 1e-2·lr covers a
    // relative gradient error of 1e-4 down to |g| ≈ 1e-6.
    assert_close(
        "norms",
        &clip.norms().read(&ctx).unwrap(),
        &cpu_norms,
        0.0,
        1e-4,
    );
    assert_close(
        "params after the update",
        &net.params().read(&ctx).unwrap(),
        &cpu_params,
        1e-2 * f64::from(lr),
        3e-7,
    );
}

#[test]
fn kernels_refuse_what_does_not_fit_with_typed_errors() {
    let Some(ctx) = context() else { return };
    let field = |e: GpuError| match e {
        GpuError::Input { field, .. } => field,
        other => panic!("expected an input error, got {other}"),
    };
    let tanh = gpu_mlp::Activation::Tanh;
    assert_eq!(
        field(GroupedMlp::new(&ctx, &[3], tanh, 1, 1).unwrap_err()),
        "widths"
    );
    assert_eq!(
        field(GroupedMlp::new(&ctx, &[3, 0, 1], tanh, 1, 1).unwrap_err()),
        "widths"
    );
    assert_eq!(
        field(GroupedMlp::new(&ctx, &[3, 1], tanh, 0, 1).unwrap_err()),
        "groups"
    );
    assert_eq!(
        field(GroupedMlp::new(&ctx, &[3, 1], tanh, 1, 0).unwrap_err()),
        "batch"
    );
    // Parameters beyond any buffer, and a parameter count that overflows.
    let wide = [1 << 16, 1 << 16, 1];
    assert_eq!(
        field(GroupedMlp::new(&ctx, &wide, tanh, 1, 1).unwrap_err()),
        "params"
    );
    let huge = [usize::MAX, 2, 1];
    assert_eq!(
        field(GroupedMlp::new(&ctx, &huge, tanh, 1, 1).unwrap_err()),
        "widths"
    );
    let net = GroupedMlp::new(&ctx, &[3, 4, 2], tanh, 2, 5).unwrap();
    assert_eq!(
        field(net.input().write(&ctx, &[0.0; 29]).unwrap_err()),
        "values"
    );
    let params = DeviceVec::zeros(&ctx, "params", 10).unwrap();
    let short = DeviceVec::zeros(&ctx, "grads", 9).unwrap();
    let settings = AdamSettings::new(1e-3);
    assert_eq!(
        field(GpuAdam::new(&ctx, &params, &short, settings).unwrap_err()),
        "grads"
    );
    assert_eq!(
        field(GpuAdam::new(&ctx, &params, &params, settings).unwrap_err()),
        "grads"
    );
    let grads = DeviceVec::zeros(&ctx, "grads", 10).unwrap();
    let nan_lr = AdamSettings::new(f32::NAN);
    assert_eq!(
        field(GpuAdam::new(&ctx, &params, &grads, nan_lr).unwrap_err()),
        "lr"
    );
    assert_eq!(
        field(GlobalNormClip::new(&ctx, &[&short], 2, None).unwrap_err()),
        "parts"
    );
    assert_eq!(
        field(GlobalNormClip::new(&ctx, &[&grads, &grads], 2, None).unwrap_err()),
        "parts"
    );
    assert_eq!(
        field(GlobalNormClip::new(&ctx, &[&grads], 2, Some(f32::NAN)).unwrap_err()),
        "max_norm"
    );
    assert_eq!(
        field(Concentrations::new(&ctx, &params, &short).unwrap_err()),
        "alpha"
    );
    assert_eq!(
        field(Concentrations::new(&ctx, &params, &params).unwrap_err()),
        "alpha"
    );
    assert_eq!(
        field(DirichletKernel::new(&ctx, 4, 0).unwrap_err()),
        "width"
    );
    assert_eq!(
        field(DirichletKernel::new(&ctx, usize::MAX, 2).unwrap_err()),
        "rows"
    );
    // Another context's vectors and kernels are refused, not misused.
    let other = GpuContext::new().unwrap();
    let theirs = DeviceVec::zeros(&other, "grads", 10).unwrap();
    assert!(matches!(
        GpuAdam::new(&ctx, &params, &theirs, settings),
        Err(GpuError::ContextMismatch { .. })
    ));
    assert!(matches!(
        net.forward(&other),
        Err(GpuError::ContextMismatch { .. })
    ));
    assert!(matches!(
        params.read(&other),
        Err(GpuError::ContextMismatch { .. })
    ));
}

/// Mean, variance and fourth central moment of Beta(a, a0 − a), the
/// marginal of a Dirichlet entry with concentration `a` of total `a0`
/// (the fourth from the raw moments E[Xᵏ] = Π_{j<k} (a + j)/(a0 + j)).
fn beta_moments(a: f64, a0: f64) -> (f64, f64, f64) {
    let mut raw = [0f64; 4];
    let mut r = 1.0;
    for (j, slot) in raw.iter_mut().enumerate() {
        r *= (a + j as f64) / (a0 + j as f64);
        *slot = r;
    }
    let m = raw[0];
    let mu4 = raw[3] - 4.0 * m * raw[2] + 6.0 * m * m * raw[1] - 3.0 * m.powi(4);
    (m, a * (a0 - a) / (a0 * a0 * (a0 + 1.0)), mu4)
}

/// z bound of the moment tests: two-sided p ≈ 7e-6 per test under the
/// normal approximation.
const MOMENT_Z: f64 = 4.5;

/// Asserts that the sample mean and the sample variance of `values` (draws
/// of Beta(a, a0 − a)) lie within [`MOMENT_Z`] standard errors of the exact
/// ones: σ/√n for the mean, √((μ₄ − σ⁴(n − 3)/(n − 1))/n) for the variance.
fn assert_moments(what: &str, values: &[f64], a: f64, a0: f64) {
    let n = values.len() as f64;
    let (mean, var, mu4) = beta_moments(a, a0);
    let m = values.iter().sum::<f64>() / n;
    let s2 = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0);
    let (se_mean, se_var) = (
        (var / n).sqrt(),
        ((mu4 - var * var * (n - 3.0) / (n - 1.0)) / n).sqrt(),
    );
    let (z_mean, z_var) = ((m - mean) / se_mean, (s2 - var) / se_var);
    eprintln!("{what}: z of the mean {z_mean:.2}, of the variance {z_var:.2}");
    assert!(
        z_mean.abs() <= MOMENT_Z && z_var.abs() <= MOMENT_Z,
        "{what}: mean {m:e} (exact {mean:e}, z {z_mean:.2}), variance {s2:e} \
         (exact {var:e}, z {z_var:.2})"
    );
}

/// The two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b| (sorts both).
fn ks_statistic(a: &mut [f64], b: &mut [f64]) -> f64 {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0, 0, 0f64);
    while i < a.len() && j < b.len() {
        // Step both ECDFs past the next value (ties on both sides at once).
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    d
}

#[test]
fn dirichlet_sampler_matches_the_cpu_sampler_in_distribution() {
    let Some(ctx) = context() else { return };
    // Each case fills ROWS rows of one sampler (padded to WIDTH with
    // left-out entries of concentration 3), drawn CALLS times: 40 000
    // draws per case, the later ones from the continued streams.
    const WIDTH: usize = 4;
    const ROWS: usize = 4_000;
    const CALLS: usize = 10;
    const DRAWS: usize = ROWS * CALLS;
    let cases: [(&[f32], &[u32], bool); 6] = [
        (&[0.5, 2.0, 5.5], &[1, 1, 1], true),
        (&[1e-3, 1e-3, 1.0, 10.0], &[1, 1, 1, 1], true),
        (&[1.0, 1.0], &[1, 1], true),
        (&[30.0, 60.0, 90.0, 1e-7], &[1, 1, 1, 1], true),
        (&[0.3, 7.0, 2.5, 4.0], &[1, 0, 1, 0], true),
        // At the floor nearly every f64 draw underflows: the mass goes to
        // the largest concentration (entry 1), on the CPU and on the GPU —
        // not Dir(α)'s moments, so compared with the CPU only.
        (&[1e-7, 2e-7, 1e-7], &[1, 1, 1], false),
    ];
    let rows = ROWS * cases.len();
    let (mut alpha, mut mask) = (vec![3f32; rows * WIDTH], vec![0u32; rows * WIDTH]);
    for (c, &(a, m, _)) in cases.iter().enumerate() {
        for r in c * ROWS..(c + 1) * ROWS {
            alpha[r * WIDTH..r * WIDTH + a.len()].copy_from_slice(a);
            mask[r * WIDTH..r * WIDTH + m.len()].copy_from_slice(m);
        }
    }
    let seed = 91;
    let sampler = DirichletSampler::new(&ctx, rows, WIDTH, seed).unwrap();
    sampler.alpha().write(&ctx, &alpha).unwrap();
    sampler.mask().write(&ctx, &mask).unwrap();
    // Row r runs dfaas_core's stream seeded(env_master_seed(seed, r)).
    let state = sampler.state().read(&ctx).unwrap();
    for r in [0, 1, rows - 1] {
        let bytes: Vec<u8> = state[4 * r..4 * r + 4]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let mut device = Xoshiro128PlusPlus::from_seed(bytes.try_into().unwrap());
        let mut host = seeded(env_master_seed(seed, r as u64));
        for _ in 0..8 {
            assert_eq!(device.next_u32(), host.next_u32(), "row {r}'s stream");
        }
    }
    // gpu[case][entry]: the draws of each used entry.
    let mut gpu: Vec<Vec<Vec<f64>>> = cases
        .iter()
        .map(|(a, ..)| vec![Vec::with_capacity(DRAWS); a.len()])
        .collect();
    let mut calls = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        sampler.run(&ctx).unwrap();
        let x = sampler.samples().read(&ctx).unwrap();
        for (r, row) in x.chunks(WIDTH).enumerate() {
            let (c, used) = (r / ROWS, mask[r * WIDTH..(r + 1) * WIDTH].to_vec());
            // On the simplex: entries finite and ≥ 0, left-out ones exactly
            // 0, the sum 1 within 4e-6 (four quotients of WGSL's exp, 3 ulp,
            // and division, 2.5 ulp, and their f32 sum).
            let sum: f64 = row.iter().map(|&v| f64::from(v)).sum();
            assert!((sum - 1.0).abs() <= 4e-6, "row {r}: {row:?} sums to {sum}");
            for (j, (&v, &u)) in row.iter().zip(&used).enumerate() {
                assert!(v.is_finite() && v >= 0.0, "row {r}: {row:?}");
                if u == 0 {
                    assert!(v == 0.0, "row {r}: left-out entry {j} is {v}");
                } else if j < cases[c].0.len() {
                    gpu[c][j].push(f64::from(v));
                }
            }
        }
        calls.push(x);
    }
    // Successive calls continue the streams: hardly a row repeats (the
    // floor case's one-hot rows aside).
    let moving = ROWS * (cases.len() - 1);
    let equal_rows = |a: &[f32], b: &[f32]| {
        a.chunks(WIDTH)
            .zip(b.chunks(WIDTH))
            .take(moving)
            .filter(|(x, y)| x.iter().zip(*y).all(|(u, v)| u.to_bits() == v.to_bits()))
            .count()
    };
    assert_eq!(
        equal_rows(&calls[0], &calls[1]),
        0,
        "rows drawn again by the second call"
    );
    assert_ne!(sampler.state().read(&ctx).unwrap(), state);
    // The same seed gives the same bits; another seed, other draws.
    for (other_seed, same) in [(seed, true), (seed + 1, false)] {
        let twin = DirichletSampler::new(&ctx, rows, WIDTH, other_seed).unwrap();
        twin.alpha().write(&ctx, &alpha).unwrap();
        twin.mask().write(&ctx, &mask).unwrap();
        for call in &calls[..2] {
            twin.run(&ctx).unwrap();
            let x = twin.samples().read(&ctx).unwrap();
            if same {
                assert_eq!(x, *call, "seed {other_seed}: the same bits");
            } else {
                assert_eq!(equal_rows(&x, call), 0, "seed {other_seed}: rows repeated");
            }
        }
    }
    // The CPU sampler, over each case's used entries.
    let mut rng = seeded(17);
    let ks_critical = {
        // Two-sample KS at significance 0.001: c(α)·√((n + m)/(n·m)),
        // c(α) = √(−ln(α/2)/2) ≈ 1.9495, ≈ 0.0138 for n = m = 40 000 (the
        // kernel without the α < 1 boost at α = 0.5 gives 0.020).
        let c = (-(0.001f64 / 2.0).ln() / 2.0).sqrt();
        let n = DRAWS as f64;
        c * (2.0 / n).sqrt()
    };
    for (c, &(a, m, exact)) in cases.iter().enumerate() {
        let used: Vec<usize> = (0..a.len()).filter(|&j| m[j] != 0).collect();
        let a_used: Vec<f32> = used.iter().map(|&j| a[j]).collect();
        let mut cpu = vec![Vec::with_capacity(DRAWS); used.len()];
        let mut out = vec![0f32; used.len()];
        for _ in 0..DRAWS {
            dirichlet::sample(&a_used, &mut rng, &mut out).unwrap();
            for (column, &v) in cpu.iter_mut().zip(&out) {
                column.push(f64::from(v));
            }
        }
        let a0: f64 = a_used.iter().map(|&v| f64::from(v)).sum();
        for (k, &j) in used.iter().enumerate() {
            let what = format!("α {a:?} mask {m:?} entry {j}");
            assert_eq!(gpu[c][j].len(), DRAWS, "{what}: draws");
            if !exact {
                // The fallback: every draw underflows in all but a few rows
                // (about 3e-4 of them), on either side.
                for (side, x) in [("gpu", &gpu[c][j]), ("cpu", &cpu[k])] {
                    let ones = x.iter().filter(|&&v| v == 1.0).count();
                    let fallback = if j == 1 {
                        ones >= DRAWS - DRAWS / 1000
                    } else {
                        ones <= DRAWS / 1000
                    };
                    assert!(fallback, "{what} ({side}): {ones} draws of 1");
                }
            } else {
                // The same bounds hold for the CPU's draws (a check of the
                // bounds themselves).
                assert_moments(&format!("{what} (gpu)"), &gpu[c][j], f64::from(a[j]), a0);
                assert_moments(&format!("{what} (cpu)"), &cpu[k], f64::from(a[j]), a0);
            }
            // Values below f32's smallest normal count as 0 on both sides
            // (a GPU may flush subnormals; the CPU rounds f64 ratios into
            // them).
            let flush = |v: &mut f64| {
                if *v < f64::from(f32::MIN_POSITIVE) {
                    *v = 0.0;
                }
            };
            let mut g = gpu[c][j].clone();
            g.iter_mut().for_each(flush);
            cpu[k].iter_mut().for_each(flush);
            let d = ks_statistic(&mut g, &mut cpu[k]);
            eprintln!("{what}: KS {d:.4} (critical {ks_critical:.4})");
            assert!(d <= ks_critical, "{what}: KS statistic {d} > {ks_critical}");
        }
    }
    // Sizes that do not fit and other contexts are typed errors.
    let field = |e: GpuError| match e {
        GpuError::Input { field, .. } => field,
        other => panic!("expected an input error, got {other}"),
    };
    assert_eq!(
        field(DirichletSampler::new(&ctx, 0, 3, 1).unwrap_err()),
        "rows"
    );
    assert_eq!(
        field(DirichletSampler::new(&ctx, 3, 0, 1).unwrap_err()),
        "width"
    );
    assert_eq!(
        field(DirichletSampler::new(&ctx, usize::MAX, 2, 1).unwrap_err()),
        "rows"
    );
    assert_eq!(
        field(DirichletSampler::new(&ctx, 1 << 30, 4, 1).unwrap_err()),
        "rows"
    );
    let other = GpuContext::new().unwrap();
    assert!(matches!(
        sampler.run(&other),
        Err(GpuError::ContextMismatch { .. })
    ));
}

/// Log-ratio margin kept from the clip boundaries ln(1 ± ε): the ratios
/// are placed on the CPU's log-densities, and the GPU's differ by at most
/// `VALUE_RTOL`·Σ|terms| (the Dirichlet test), asserted below to stay
/// under half this margin — so no clip decision can differ.
const CLIP_MARGIN: f64 = 1e-2;

/// Random inputs of the loss tests.
struct LossCase {
    logits: Vec<f32>,
    old_alpha: Vec<f32>,
    actions: Vec<f32>,
    mask: Vec<u32>,
    mask_u8: Vec<u8>,
    used_of: Vec<Vec<usize>>,
    old_log_prob: Vec<f32>,
    advantages: Vec<f32>,
    values: Vec<f32>,
    returns: Vec<f32>,
}

/// `rows` random samples of `width` outputs (a random mask of at least two
/// entries a row), their ratios placed away from the clip boundaries.
fn loss_case(rows: usize, width: usize, clip: f32, seed: u64) -> LossCase {
    let wide = rows * width;
    let mut rng = seeded(seed);
    let mut logits = vec![0f32; wide];
    let mut old_alpha = vec![0f32; wide];
    let mut actions = vec![0.37f32; wide];
    let (mut mask, mut mask_u8) = (vec![0u32; wide], vec![0u8; wide]);
    let mut used_of = Vec::with_capacity(rows);
    let mut old_log_prob = Vec::with_capacity(rows);
    let (lo, hi) = (f64::from(1.0 - clip).ln(), f64::from(1.0 + clip).ln());
    for r in 0..rows {
        let used = random_used(&mut rng, r, width);
        // Logits in [−5, 5] everywhere (left-out entries too: they must
        // not count), α = softplus + 1e-7 as the CPU backend (below 20:
        // ln(1 + eˣ)).
        for l in &mut logits[r * width..(r + 1) * width] {
            *l = uniform(&mut rng, -5.0, 5.0) as f32;
        }
        let a: Vec<f32> = used
            .iter()
            .map(|&j| logits[r * width + j].exp().ln_1p() + CONCENTRATION_EPSILON)
            .collect();
        let mut x = vec![0f32; used.len()];
        dirichlet::sample(&a, &mut rng, &mut x).unwrap();
        for ((&j, &v), &ai) in used.iter().zip(&x).zip(&a) {
            let i = r * width + j;
            (mask[i], mask_u8[i], actions[i]) = (1, 1, v);
            old_alpha[i] = ai * uniform(&mut rng, -0.7, 0.7).exp() as f32;
        }
        let log_prob = dirichlet::log_prob(&a, &x, &mut vec![0f32; used.len()]);
        // ln r spread over [−0.6, 0.6]: below 1 − ε, inside, above 1 + ε,
        // never within CLIP_MARGIN of a boundary.
        let log_ratio = loop {
            let d = uniform(&mut rng, -0.6, 0.6);
            if (d - lo).abs() > CLIP_MARGIN && (d - hi).abs() > CLIP_MARGIN {
                break d;
            }
        };
        old_log_prob.push(log_prob - log_ratio as f32);
        used_of.push(used);
    }
    let advantages: Vec<f32> = (0..rows)
        .map(|_| standard_normal(&mut rng) as f32)
        .collect();
    let values: Vec<f32> = (0..rows)
        .map(|_| 2.0 * standard_normal(&mut rng) as f32)
        .collect();
    let returns: Vec<f32> = (0..rows)
        .map(|_| 2.0 * standard_normal(&mut rng) as f32)
        .collect();
    LossCase {
        logits,
        old_alpha,
        actions,
        mask,
        mask_u8,
        used_of,
        old_log_prob,
        advantages,
        values,
        returns,
    }
}

#[test]
fn ppo_loss_matches_the_cpu_actor_and_value_loss_gradients() {
    let Some(ctx) = context() else { return };
    let (rows, width, clip) = (500, 5, 0.2f32);
    let wide = rows * width;
    let LossCase {
        logits,
        old_alpha,
        actions,
        mask,
        mask_u8,
        used_of,
        old_log_prob,
        advantages,
        values,
        returns,
    } = loss_case(rows, width, clip, 71);

    let logits_d = DeviceVec::from_slice(&ctx, "logits", &logits).unwrap();
    let kernel = DirichletKernel::new(&ctx, rows, width).unwrap();
    kernel.actions().write(&ctx, &actions).unwrap();
    kernel.old_alpha().write(&ctx, &old_alpha).unwrap();
    kernel.mask().write(&ctx, &mask).unwrap();
    let concentrations = Concentrations::new(&ctx, &logits_d, kernel.alpha()).unwrap();
    let d_logits = DeviceVec::zeros(&ctx, "d_logits", wide).unwrap();
    let values_d = DeviceVec::from_slice(&ctx, "values", &values).unwrap();
    let d_values = DeviceVec::zeros(&ctx, "d_values", rows).unwrap();
    let buffers = LossBuffers {
        logits: &logits_d,
        dirichlet: &kernel,
        d_logits: &d_logits,
        values: &values_d,
        d_values: &d_values,
    };
    for value_clip in [None, Some(4.0f32)] {
        let settings = LossSettings {
            clip,
            value_coeff: 0.5,
            value_clip,
            entropy_coeff: 0.0,
            kl_coeff: 0.0,
        };
        let mut loss = PpoLoss::new(&ctx, buffers, settings, 1).unwrap();
        loss.old_log_prob().write(&ctx, &old_log_prob).unwrap();
        loss.advantages().write(&ctx, &advantages).unwrap();
        loss.returns().write(&ctx, &returns).unwrap();
        for (entropy_coeff, kl_coeff) in [(0.01f32, 0.0f32), (0.003, 0.3)] {
            let before = ctx.traffic();
            loss.set_coefficients(&ctx, entropy_coeff, &[kl_coeff])
                .unwrap();
            // One uniform and one KL weight rewritten, nothing rebuilt.
            assert_eq!((ctx.traffic() - before).bytes_uploaded, 48 + 4);
            let pass = || {
                let before = ctx.traffic();
                dfaas_gpu::nn::submit_pass(&ctx, "loss", |pass| {
                    concentrations.encode(&ctx, pass)?;
                    kernel.encode(&ctx, pass)?;
                    loss.encode(&ctx, pass)
                })
                .unwrap();
                let traffic = ctx.traffic() - before;
                assert_eq!((traffic.submits, traffic.bytes_uploaded), (1, 0));
                (
                    d_logits.read(&ctx).unwrap(),
                    d_values.read(&ctx).unwrap(),
                    loss.stats().read(&ctx).unwrap(),
                )
            };
            let (gpu_d, gpu_dv, stats) = pass();
            // One group: its KL mean is the overall one, the same sum in
            // the same order.
            let group_kl = loss.group_kl().read(&ctx).unwrap();
            assert_eq!(group_kl.len(), 1);
            assert_eq!(group_kl[0].to_bits(), stats[3].to_bits(), "group KL");
            // The Dirichlet kernel's rows [log-density, entropy, KL].
            let gpu_rows = kernel.values().read(&ctx).unwrap();
            // The same bits run to run (fixed-order reduction), into
            // outputs cleared in between.
            d_logits.write(&ctx, &vec![0.0; wide]).unwrap();
            d_values.write(&ctx, &vec![0.0; rows]).unwrap();
            loss.stats().write(&ctx, &[0.0; 5]).unwrap();
            let again = pass();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&gpu_d), bits(&again.0), "d_logits run to run");
            assert_eq!(bits(&gpu_dv), bits(&again.1), "d_values run to run");
            assert_eq!(bits(&stats), bits(&again.2), "stats run to run");

            let c = LossCoefficients {
                clip,
                value_coeff: settings.value_coeff,
                value_clip,
                entropy_coeff,
                kl_coeff,
                max_grad_norm: None,
            };
            let mb = Minibatch {
                size: rows,
                obs: &[],
                critic_obs: &[],
                actions: &actions,
                old_alpha: &old_alpha,
                old_log_prob: &old_log_prob,
                advantages: &advantages,
                returns: &returns,
                mask: Some(&mask_u8),
            };
            let mut cpu_d = vec![0f32; wide];
            let terms = actor_loss_gradient(&logits, &mb, width, &c, &mut cpu_d).unwrap();
            let mut cpu_dv = vec![0f32; rows];
            let value_loss = value_loss_gradient(&values, &returns, &c, &mut cpu_dv).unwrap();
            let what = format!("cap {value_clip:?}, c_H {entropy_coeff}, c_KL {kl_coeff}");

            // Per row, with the CPU's f32 functions: the log-density's
            // term scale (as the Dirichlet test), the surrogate's terms,
            // and the bounds that follow.
            let f = |v: f32| f64::from(v);
            let (mut policy_bound, mut policy_scale) = (0f64, 0f64);
            let (mut entropy_scale, mut kl_scale) = (0f64, 0f64);
            // The means of the GPU's own row terms (f64), against which
            // the reduction alone is checked.
            let mut own = [0f64; 3];
            let (mut clipped, mut worst_lp, mut worst_d) = (0usize, 0f64, 0f64);
            let d_scale = scale(&cpu_d);
            for (r, used) in used_of.iter().enumerate() {
                let pick =
                    |v: &[f32]| -> Vec<f32> { used.iter().map(|&j| v[r * width + j]).collect() };
                let a: Vec<f32> = used
                    .iter()
                    .map(|&j| logits[r * width + j].exp().ln_1p() + CONCENTRATION_EPSILON)
                    .collect();
                let (b, x) = (pick(&old_alpha), pick(&actions));
                let m = used.len();
                let (mut g_lp, mut g_h, mut g_kl) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
                let log_prob = dirichlet::log_prob(&a, &x, &mut g_lp);
                dirichlet::entropy(&a, &mut g_h);
                dirichlet::kl(&b, &a, &mut g_kl);
                let [lp_terms, entropy_terms, kl_terms] = term_magnitudes(&a, &b, &x);
                entropy_scale += entropy_terms;
                kl_scale += kl_terms;
                // |Δ ln π| ≤ VALUE_RTOL·(1 + terms) (the Dirichlet test);
                // the ratio inherits the row's Δ as a relative error,
                // exp(ln π + Δ) = r·(1 + Δ + …), plus WGSL's exp (a few
                // ulp, 1e-6 with the roundings around it).
                let lp_seen = (f(gpu_rows[3 * r]) - f(log_prob)).abs();
                assert!(
                    lp_seen <= VALUE_RTOL * (1.0 + lp_terms),
                    "{what}, row {r}: log-density off by {lp_seen:e}"
                );
                worst_lp = worst_lp.max(lp_seen);
                let lp_error = lp_seen + 1e-6;
                let gpu_ratio = (f(gpu_rows[3 * r]) - f(old_log_prob[r])).exp();
                let gpu_clipped = gpu_ratio.clamp(1.0 - f(clip), 1.0 + f(clip));
                own[0] -= (gpu_ratio * f(advantages[r])).min(gpu_clipped * f(advantages[r]));
                own[1] += f(gpu_rows[3 * r + 1]);
                own[2] += f(gpu_rows[3 * r + 2]);
                let ratio = f(log_prob - old_log_prob[r]).exp();
                let advantage = f(advantages[r]);
                let clip_hi = ratio.clamp(1.0 - f(clip), 1.0 + f(clip));
                let unclipped = ratio * advantage <= clip_hi * advantage;
                clipped += usize::from(ratio < 1.0 - f(clip) || ratio > 1.0 + f(clip));
                policy_scale += (ratio * advantage).abs();
                let d_log_prob = if unclipped { -ratio * advantage } else { 0.0 };
                if unclipped {
                    policy_bound += lp_error * (ratio * advantage).abs();
                }
                for (i, &j) in used.iter().enumerate() {
                    let e = r * width + j;
                    let sigma = 1.0 / (1.0 + (-f(logits[e])).exp());
                    // The ratio's relative error on the surrogate's part;
                    // the gradients' (GRAD_RTOL on terms of up to a few
                    // tens, f32 ψ, ψ′) as 1e-4 of each part; 1e-6 of the
                    // tensor's scale for the f32 roundings of the sum.
                    let parts = [
                        (d_log_prob * f(g_lp[i])).abs(),
                        (f(entropy_coeff) * f(g_h[i])).abs(),
                        (f(kl_coeff) * f(g_kl[i])).abs(),
                    ];
                    let allowed = 1e-6 * d_scale
                        + (lp_error * parts[0] + D_RTOL * parts.iter().sum::<f64>()) * sigma
                            / rows as f64;
                    let error = (f(gpu_d[e]) - f(cpu_d[e])).abs();
                    assert!(
                        error <= allowed,
                        "{what}: d_logits[{e}] gpu {} cpu {} (error {error:e}, allowed {allowed:e})",
                        gpu_d[e],
                        cpu_d[e]
                    );
                    worst_d = worst_d.max(error / allowed);
                }
                for j in (0..width).filter(|j| !used.contains(j)) {
                    assert_eq!(gpu_d[r * width + j], 0.0, "{what}: left-out entry");
                }
            }
            assert!(worst_lp < CLIP_MARGIN / 2.0, "{what}: {worst_lp:e}");
            eprintln!(
                "{what}: log-density error {worst_lp:e}, d_logits error/allowed {worst_d:.3}"
            );
            // Both clip sides and both branches of the surrogate occur.
            assert!(clipped > rows / 10 && clipped < rows * 9 / 10, "{clipped}");
            let n = rows as f64;
            // d_values: the CPU's f32 operations in its order (one
            // rounding of slack for a compiler's reassociation).
            assert_close(&format!("{what}: d_values"), &gpu_dv, &cpu_dv, 0.0, 1e-6);
            if value_clip.is_some() {
                let capped = cpu_dv.iter().filter(|&&d| d == 0.0).count();
                assert!(capped > rows / 10 && capped < rows * 9 / 10, "{capped}");
            }
            // The means: the rows' errors bounded above, plus 1e-5
            // relative for the f32 sums (a tree against the CPU's running
            // sum of 500 terms).
            let stat = |name: &str, gpu: f32, cpu: f32, allowed: f64| {
                let error = (f(gpu) - f(cpu)).abs();
                assert!(
                    error <= allowed,
                    "{what}: {name} gpu {gpu} cpu {cpu} (error {error:e}, allowed {allowed:e})"
                );
                eprintln!("{what}: {name} error {error:e} (allowed {allowed:e})");
            };
            stat(
                "policy loss",
                stats[0],
                terms.policy_loss,
                1e-7 + policy_bound / n + 1e-5 * policy_scale / n,
            );
            stat("value loss", stats[1], value_loss, 1e-5 * f(value_loss));
            // The reduction alone: the GPU's means against the f64 means
            // of its own row terms — a tree of 500 f32 terms, within
            // 2e-6 of the mean magnitude (1e-5 for the surrogate, whose
            // f32 exp the f64 recomputation does not share).
            let entropy_magnitude: f64 = (0..rows).map(|r| f(gpu_rows[3 * r + 1]).abs()).sum();
            stat(
                "policy loss (own rows)",
                stats[0],
                (own[0] / n) as f32,
                1e-5 * policy_scale / n,
            );
            stat(
                "entropy (own rows)",
                stats[2],
                (own[1] / n) as f32,
                2e-6 * entropy_magnitude / n,
            );
            stat(
                "entropy",
                stats[2],
                terms.entropy,
                1e-7 + (VALUE_RTOL + 1e-5) * (1.0 + entropy_scale / n),
            );
            if kl_coeff == 0.0 {
                assert_eq!((stats[3], terms.kl), (0.0, 0.0), "{what}: KL off");
            } else {
                stat(
                    "kl",
                    stats[3],
                    terms.kl,
                    1e-7 + (VALUE_RTOL + 1e-5) * (1.0 + kl_scale / n),
                );
                let kl_magnitude: f64 = (0..rows).map(|r| f(gpu_rows[3 * r + 2]).abs()).sum();
                stat(
                    "kl (own rows)",
                    stats[3],
                    (own[2] / n) as f32,
                    1e-7 + 2e-6 * kl_magnitude / n,
                );
            }
            // The same clip decisions: the GPU's count is exact (a sum of
            // ones), then scaled by 1/rows; the CPU adds 1/rows in f32 (up
            // to 500 roundings).
            let count = clipped as f32 * (1.0 / rows as f32);
            assert_eq!(stats[4].to_bits(), count.to_bits(), "{what}: clip count");
            stat("clip fraction", stats[4], terms.clip_fraction, 1e-5);
        }
    }

    // Typed errors.
    let settings = LossSettings {
        clip,
        value_coeff: 0.5,
        value_clip: None,
        entropy_coeff: 0.0,
        kl_coeff: 0.0,
    };
    let field = |e: GpuError| match e {
        GpuError::Input { field, .. } => field,
        other => panic!("expected an input error, got {other}"),
    };
    let aliased = LossBuffers {
        d_logits: &logits_d,
        ..buffers
    };
    assert_eq!(
        field(PpoLoss::new(&ctx, aliased, settings, 1).unwrap_err()),
        "d_logits"
    );
    let short = DeviceVec::zeros(&ctx, "values", rows - 1).unwrap();
    let misfit = LossBuffers {
        values: &short,
        ..buffers
    };
    assert_eq!(
        field(PpoLoss::new(&ctx, misfit, settings, 1).unwrap_err()),
        "values"
    );
    for groups in [0, 3] {
        assert_eq!(
            field(PpoLoss::new(&ctx, buffers, settings, groups).unwrap_err()),
            "groups"
        );
    }
    let nan_clip = LossSettings {
        clip: f32::NAN,
        ..settings
    };
    assert_eq!(
        field(PpoLoss::new(&ctx, buffers, nan_clip, 1).unwrap_err()),
        "clip"
    );
    let mut loss = PpoLoss::new(&ctx, buffers, settings, 1).unwrap();
    assert_eq!(
        field(
            loss.set_coefficients(&ctx, 0.0, &[f32::INFINITY])
                .unwrap_err()
        ),
        "kl_coeffs"
    );
    assert_eq!(
        field(loss.set_coefficients(&ctx, 0.0, &[0.1, 0.1]).unwrap_err()),
        "kl_coeffs"
    );
    assert_eq!(
        field(loss.set_coefficients(&ctx, f32::NAN, &[0.1]).unwrap_err()),
        "entropy_coeff"
    );
    assert_eq!(loss.settings(), settings);
    assert_eq!(loss.kl_coeffs(), &[settings.kl_coeff]);
    let other = GpuContext::new().unwrap();
    assert!(matches!(
        loss.run(&other),
        Err(GpuError::ContextMismatch { .. })
    ));
}

/// The gradients' relative error on each part of ∂L/∂logits: GRAD_RTOL on
/// term sums of up to a few tens (ψ and ψ′ of α down to softplus(−5) ≈
/// 7e-3, where ψ′ ≈ 2e4), and WGSL's `exp` in the sigmoid.
const D_RTOL: f64 = 1e-4;

#[test]
fn ppo_loss_groups_match_the_cpu_loss_of_each_group() {
    let Some(ctx) = context() else { return };
    // 3 groups of R = 50 rows (group-major), each with its own KL weight,
    // one of them 0: each group against the CPU loss of its own minibatch.
    let (rows, width, clip, groups) = (150, 5, 0.2f32, 3);
    let (group_rows, wide) = (rows / groups, rows * width);
    let (entropy_coeff, kl_coeffs) = (0.003f32, [0.3f32, 0.0, 0.05]);
    let case = loss_case(rows, width, clip, 72);
    let logits_d = DeviceVec::from_slice(&ctx, "logits", &case.logits).unwrap();
    let kernel = DirichletKernel::new(&ctx, rows, width).unwrap();
    kernel.actions().write(&ctx, &case.actions).unwrap();
    kernel.old_alpha().write(&ctx, &case.old_alpha).unwrap();
    kernel.mask().write(&ctx, &case.mask).unwrap();
    let concentrations = Concentrations::new(&ctx, &logits_d, kernel.alpha()).unwrap();
    let d_logits = DeviceVec::zeros(&ctx, "d_logits", wide).unwrap();
    let values_d = DeviceVec::from_slice(&ctx, "values", &case.values).unwrap();
    let d_values = DeviceVec::zeros(&ctx, "d_values", rows).unwrap();
    let buffers = LossBuffers {
        logits: &logits_d,
        dirichlet: &kernel,
        d_logits: &d_logits,
        values: &values_d,
        d_values: &d_values,
    };
    let settings = LossSettings {
        clip,
        value_coeff: 0.5,
        value_clip: Some(4.0),
        entropy_coeff: 0.0,
        kl_coeff: 0.1,
    };
    let mut loss = PpoLoss::new(&ctx, buffers, settings, groups).unwrap();
    assert_eq!((loss.groups(), loss.kl_coeffs()), (groups, &[0.1; 3][..]));
    loss.old_log_prob().write(&ctx, &case.old_log_prob).unwrap();
    loss.advantages().write(&ctx, &case.advantages).unwrap();
    loss.returns().write(&ctx, &case.returns).unwrap();
    let before = ctx.traffic();
    loss.set_coefficients(&ctx, entropy_coeff, &kl_coeffs)
        .unwrap();
    // The uniform and the 3 KL weights.
    assert_eq!((ctx.traffic() - before).bytes_uploaded, 48 + 4 * 3);
    assert_eq!(loss.kl_coeffs(), &kl_coeffs);
    assert_eq!(loss.settings().kl_coeff, kl_coeffs[0]);
    let pass = || {
        dfaas_gpu::nn::submit_pass(&ctx, "loss", |pass| {
            concentrations.encode(&ctx, pass)?;
            kernel.encode(&ctx, pass)?;
            loss.encode(&ctx, pass)
        })
        .unwrap();
        (
            d_logits.read(&ctx).unwrap(),
            d_values.read(&ctx).unwrap(),
            loss.stats().read(&ctx).unwrap(),
            loss.group_kl().read(&ctx).unwrap(),
        )
    };
    let (gpu_d, gpu_dv, stats, group_kl) = pass();
    let gpu_rows = kernel.values().read(&ctx).unwrap();
    // The same bits run to run (fixed-order reductions).
    loss.group_kl().write(&ctx, &[0.0; 3]).unwrap();
    let again = pass();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&gpu_d), bits(&again.0), "d_logits run to run");
    assert_eq!(bits(&stats), bits(&again.2), "stats run to run");
    assert_eq!(bits(&group_kl), bits(&again.3), "group KL run to run");

    let f = |v: f32| f64::from(v);
    let stat = |name: &str, gpu: f32, cpu: f64, allowed: f64| {
        let error = (f(gpu) - cpu).abs();
        assert!(
            error <= allowed,
            "{name}: gpu {gpu} cpu {cpu} (error {error:e}, allowed {allowed:e})"
        );
        eprintln!("{name}: error {error:e} (allowed {allowed:e})");
    };
    // Means over all rows from the CPU's groups (R equal: the mean of
    // their means) and from the GPU's own KL rows.
    let (mut value_loss, mut clip_fraction, mut own_kl, mut kl_magnitude) =
        (0f64, 0f64, 0f64, 0f64);
    let mut worst_d = 0f64;
    for (g, &kl_coeff) in kl_coeffs.iter().enumerate() {
        let rows_of = g * group_rows..(g + 1) * group_rows;
        let (lo, hi) = (rows_of.start, rows_of.end);
        let c = LossCoefficients {
            clip,
            value_coeff: settings.value_coeff,
            value_clip: settings.value_clip,
            entropy_coeff,
            kl_coeff,
            max_grad_norm: None,
        };
        let mb = Minibatch {
            size: group_rows,
            obs: &[],
            critic_obs: &[],
            actions: &case.actions[lo * width..hi * width],
            old_alpha: &case.old_alpha[lo * width..hi * width],
            old_log_prob: &case.old_log_prob[rows_of.clone()],
            advantages: &case.advantages[rows_of.clone()],
            returns: &case.returns[rows_of.clone()],
            mask: Some(&case.mask_u8[lo * width..hi * width]),
        };
        let mut cpu_d = vec![0f32; group_rows * width];
        let logits = &case.logits[lo * width..hi * width];
        let terms = actor_loss_gradient(logits, &mb, width, &c, &mut cpu_d).unwrap();
        let mut cpu_dv = vec![0f32; group_rows];
        let group_value_loss = value_loss_gradient(
            &case.values[rows_of.clone()],
            &case.returns[rows_of.clone()],
            &c,
            &mut cpu_dv,
        )
        .unwrap();
        value_loss += f(group_value_loss) / groups as f64;
        clip_fraction += f(terms.clip_fraction) / groups as f64;
        let what = format!("group {g}, c_KL {kl_coeff}");
        // d_values: the CPU's f32 operations in its order, scaled by 1/R
        // (one rounding of slack for a compiler's reassociation).
        assert_close(
            &format!("{what}: d_values"),
            &gpu_dv[rows_of.clone()],
            &cpu_dv,
            0.0,
            1e-6,
        );
        // d_logits entry by entry, with the bound of the one-group test
        // (the ratio's error from the log-density's on the surrogate's
        // part, D_RTOL on each part, 1e-6 of the scale for the sum's
        // roundings), each part over R rows.
        let d_scale = scale(&cpu_d);
        let (mut kl_scale, mut group_own_kl) = (0f64, 0f64);
        for r in rows_of.clone() {
            let used = &case.used_of[r];
            let pick = |v: &[f32]| -> Vec<f32> { used.iter().map(|&j| v[r * width + j]).collect() };
            let a: Vec<f32> = used
                .iter()
                .map(|&j| case.logits[r * width + j].exp().ln_1p() + CONCENTRATION_EPSILON)
                .collect();
            let (b, x) = (pick(&case.old_alpha), pick(&case.actions));
            let m = used.len();
            let (mut g_lp, mut g_h, mut g_kl) = (vec![0f32; m], vec![0f32; m], vec![0f32; m]);
            let log_prob = dirichlet::log_prob(&a, &x, &mut g_lp);
            dirichlet::entropy(&a, &mut g_h);
            dirichlet::kl(&b, &a, &mut g_kl);
            let [lp_terms, _, kl_terms] = term_magnitudes(&a, &b, &x);
            kl_scale += kl_terms;
            let lp_seen = (f(gpu_rows[3 * r]) - f(log_prob)).abs();
            assert!(
                lp_seen <= VALUE_RTOL * (1.0 + lp_terms),
                "{what}, row {r}: log-density off by {lp_seen:e}"
            );
            let lp_error = lp_seen + 1e-6;
            if kl_coeff != 0.0 {
                group_own_kl += f(gpu_rows[3 * r + 2]);
                kl_magnitude += f(gpu_rows[3 * r + 2]).abs();
            }
            let ratio = f(log_prob - case.old_log_prob[r]).exp();
            let advantage = f(case.advantages[r]);
            let clipped = ratio.clamp(1.0 - f(clip), 1.0 + f(clip));
            let unclipped = ratio * advantage <= clipped * advantage;
            let d_log_prob = if unclipped { -ratio * advantage } else { 0.0 };
            for (i, &j) in used.iter().enumerate() {
                let e = r * width + j;
                let sigma = 1.0 / (1.0 + (-f(case.logits[e])).exp());
                let parts = [
                    (d_log_prob * f(g_lp[i])).abs(),
                    (f(entropy_coeff) * f(g_h[i])).abs(),
                    (f(kl_coeff) * f(g_kl[i])).abs(),
                ];
                let allowed = 1e-6 * d_scale
                    + (lp_error * parts[0] + D_RTOL * parts.iter().sum::<f64>()) * sigma
                        / group_rows as f64;
                let cpu = cpu_d[e - lo * width];
                let error = (f(gpu_d[e]) - f(cpu)).abs();
                assert!(
                    error <= allowed,
                    "{what}: d_logits[{e}] gpu {} cpu {cpu} (error {error:e}, allowed {allowed:e})",
                    gpu_d[e]
                );
                worst_d = worst_d.max(error / allowed);
            }
            for j in (0..width).filter(|j| !used.contains(j)) {
                assert_eq!(gpu_d[r * width + j], 0.0, "{what}: left-out entry");
            }
        }
        own_kl += group_own_kl;
        if kl_coeff == 0.0 {
            assert_eq!((group_kl[g], terms.kl), (0.0, 0.0), "{what}: KL off");
        } else {
            let n = group_rows as f64;
            // Against the CPU: the rows' KL errors (the Dirichlet test's
            // VALUE_RTOL on their terms) plus 1e-5 for the f32 sums.
            stat(
                &format!("{what}: kl"),
                group_kl[g],
                f(terms.kl),
                1e-7 + (VALUE_RTOL + 1e-5) * (1.0 + kl_scale / n),
            );
            // The reduction alone: a tree of R f32 terms against their
            // f64 mean, within 2e-6 of the mean magnitude.
            let magnitude: f64 = rows_of.map(|r| f(gpu_rows[3 * r + 2]).abs()).sum();
            stat(
                &format!("{what}: kl (own rows)"),
                group_kl[g],
                group_own_kl / n,
                1e-7 + 2e-6 * magnitude / n,
            );
        }
    }
    eprintln!("d_logits error/allowed {worst_d:.3}");
    let n = rows as f64;
    // Over all rows: the groups' means averaged (1e-5 relative for the f32
    // sums); the KL over every row, 0 on the group without it.
    stat("value loss", stats[1], value_loss, 1e-5 * value_loss);
    stat("clip fraction", stats[4], clip_fraction, 1e-5);
    stat(
        "kl (own rows)",
        stats[3],
        own_kl / n,
        1e-7 + 2e-6 * kl_magnitude / n,
    );
    // Not the same as one minibatch of 150: the groups' gradients are 3
    // times those of a single group's mean over all rows.
    let mut single = vec![0f32; rows];
    let c = LossCoefficients {
        clip,
        value_coeff: settings.value_coeff,
        value_clip: settings.value_clip,
        entropy_coeff,
        kl_coeff: 0.0,
        max_grad_norm: None,
    };
    value_loss_gradient(&case.values, &case.returns, &c, &mut single).unwrap();
    let nonzero = single.iter().position(|&d| d != 0.0).unwrap();
    assert!((f(gpu_dv[nonzero]) / f(single[nonzero]) - 3.0).abs() < 1e-5);
}

// Adam with PyTorch's bias correction, elementwise, exactly in the order of
// dfaas_policies::adam::Adam::step:
//   m ← β₁m + (1 − β₁)g;  v ← β₂v + (1 − β₂)g²;
//   p ← p − (lr / (1 − β₁ᵗ))·m / (√v / √(1 − β₂ᵗ) + eps)
// with βᵗ by binary exponentiation as Rust's `f32::powi` (compiler-rt's
// __powisf2). The step count t lives on the device (`state[0]`): `tick`
// (one invocation) increments it before `update` reads it.

struct Adam {
    len: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    lr: f32, beta1: f32, beta2: f32, eps: f32,
}

@group(0) @binding(0) var<uniform> p: Adam;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<u32>;

fn powi(base: f32, exponent: u32) -> f32 {
    var a = base;
    var b = exponent;
    var r = 1.0;
    loop {
        if ((b & 1u) == 1u) {
            r *= a;
        }
        b /= 2u;
        if (b == 0u) {
            break;
        }
        a *= a;
    }
    return r;
}

@compute @workgroup_size(1)
fn tick() {
    state[0] += 1u;
}

@compute @workgroup_size(256)
fn update(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (wg.y * count.x + wg.x) * 256u + local;
    if (i >= p.len) {
        return;
    }
    let t = state[0];
    let bias1 = 1.0 - powi(p.beta1, t);
    let bias2 = 1.0 - powi(p.beta2, t);
    let step_size = p.lr / bias1;
    let bias2_sqrt = sqrt(bias2);
    let g = grads[i];
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] - step_size * mi / (sqrt(vi) / bias2_sqrt + p.eps);
}

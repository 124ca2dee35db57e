// Softplus concentrations and the Dirichlet log-density, entropy and KL
// with their gradients, in f32 — the twins of dfaas_policies'
// `softplus(x) + 1e-7` (backend.rs) and dirichlet::{log_prob, entropy, kl}
// (which evaluate in f64).
//
// ln Γ: shifted up to x ≥ 10 (ln Γ(x) = ln Γ(x + n) − ln Π(x + i)), then
// Stirling's series; ψ and ψ′: the CPU's recurrences and asymptotic series
// (special.rs). Defined for x > 0 (concentrations are at least 1e-7).

const FLOOR: f32 = 1e-7;
const MIN_ENTRY: f32 = 1e-30;
const HALF_LN_TWO_PI: f32 = 0.9189385;

struct Rows {
    rows: u32, width: u32, len: u32, _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Rows;
// softplus: logits in, concentrations out ([len]).
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> concentrations: array<f32>;
// Dirichlet: inputs [rows][width]; values [rows][3] (log-density,
// entropy, KL); gradients [3][rows][width] (same order).
@group(0) @binding(3) var<storage, read> alpha: array<f32>;
@group(0) @binding(4) var<storage, read> actions: array<f32>;
@group(0) @binding(5) var<storage, read> old_alpha: array<f32>;
@group(0) @binding(6) var<storage, read> mask: array<u32>;
@group(0) @binding(7) var<storage, read_write> values: array<f32>;
@group(0) @binding(8) var<storage, read_write> grads: array<f32>;

// ln(1 + u) for u in [0, 1]: 2·atanh(s), s = u/(2 + u) ≤ 1/3, by its
// series to s¹⁵ (truncation below 2e-9 relative).
fn log1p_unit(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let s2 = s * s;
    var q = 1.0 / 15.0;
    q = s2 * q + 1.0 / 13.0;
    q = s2 * q + 1.0 / 11.0;
    q = s2 * q + 1.0 / 9.0;
    q = s2 * q + 1.0 / 7.0;
    q = s2 * q + 1.0 / 5.0;
    q = s2 * q + 1.0 / 3.0;
    q = s2 * q + 1.0;
    return 2.0 * s * q;
}

// backend.rs's softplus: x above 20, else ln(1 + eˣ) (as x + ln(1 + e⁻ˣ)
// for x > 0, so that the series argument stays in [0, 1]).
fn softplus(x: f32) -> f32 {
    if (x > 20.0) {
        return x;
    }
    if (x > 0.0) {
        return x + log1p_unit(exp(-x));
    }
    return log1p_unit(exp(x));
}

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

fn ln_gamma(x0: f32) -> f32 {
    if (!(x0 > 0.0)) {
        return nan();
    }
    var x = x0;
    var product = 1.0;
    while (x < 10.0) {
        product *= x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0)));
    return (x - 0.5) * log(x) - x + HALF_LN_TWO_PI + series - log(product);
}

fn digamma(x0: f32) -> f32 {
    if (!(x0 > 0.0)) {
        return nan();
    }
    var x = x0;
    var shift = 0.0;
    while (x < 10.0) {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv2 * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0
        - inv2 * (1.0 / 240.0 - inv2 * (1.0 / 132.0)))));
    return shift + log(x) - 0.5 * inv - series;
}

fn trigamma(x0: f32) -> f32 {
    if (!(x0 > 0.0)) {
        return nan();
    }
    var x = x0;
    var shift = 0.0;
    while (x < 10.0) {
        shift += 1.0 / (x * x);
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = inv + 0.5 * inv2 + inv * inv2 * (1.0 / 6.0 - inv2 * (1.0 / 30.0
        - inv2 * (1.0 / 42.0 - inv2 * (1.0 / 30.0 - inv2 * (5.0 / 66.0)))));
    return shift + series;
}

@compute @workgroup_size(256)
fn concentrations_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (wg.y * count.x + wg.x) * 256u + local;
    if (i < p.len) {
        concentrations[i] = softplus(logits[i]) + FLOOR;
    }
}

// One invocation per row; entries with mask 0 are left out of the
// distribution (their gradients are 0).
@compute @workgroup_size(64)
fn dirichlet_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = (wg.y * count.x + wg.x) * 64u + local;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.width;
    let entropy_base = p.rows * p.width;
    let kl_base = 2u * entropy_base;
    var used = 0.0;
    var a0 = 0.0;
    var old0 = 0.0;
    for (var j = 0u; j < p.width; j++) {
        if (mask[base + j] != 0u) {
            used += 1.0;
            a0 += alpha[base + j];
            old0 += old_alpha[base + j];
        }
    }
    let psi0 = digamma(a0);
    let tri0 = trigamma(a0);
    let lg0 = ln_gamma(a0);
    let psi_old0 = digamma(old0);
    var log_prob = lg0;
    var entropy = -lg0 + (a0 - used) * psi0;
    var kl = ln_gamma(old0) - lg0;
    for (var j = 0u; j < p.width; j++) {
        let i = base + j;
        if (mask[i] == 0u) {
            grads[i] = 0.0;
            grads[entropy_base + i] = 0.0;
            grads[kl_base + i] = 0.0;
            continue;
        }
        let a = alpha[i];
        let lg = ln_gamma(a);
        let psi = digamma(a);
        let ln_x = log(max(actions[i], MIN_ENTRY));
        log_prob += (a - 1.0) * ln_x - lg;
        grads[i] = psi0 - psi + ln_x;
        entropy += lg - (a - 1.0) * psi;
        grads[entropy_base + i] = (a0 - used) * tri0 - (a - 1.0) * trigamma(a);
        // KL(old ‖ new): the new concentrations are `alpha`.
        let b = old_alpha[i];
        let centred = digamma(b) - psi_old0;
        kl += lg - ln_gamma(b) + (b - a) * centred;
        grads[kl_base + i] = psi - psi0 - centred;
    }
    values[3u * row] = log_prob;
    values[3u * row + 1u] = entropy;
    values[3u * row + 2u] = kl;
}

// As `dirichlet_main`, the log-density only (values[3·row], the same
// operations in the same order; the entropy, KL and gradients are left as
// they are): what acting needs.
@compute @workgroup_size(64)
fn log_density_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = (wg.y * count.x + wg.x) * 64u + local;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.width;
    var a0 = 0.0;
    for (var j = 0u; j < p.width; j++) {
        if (mask[base + j] != 0u) {
            a0 += alpha[base + j];
        }
    }
    var log_prob = ln_gamma(a0);
    for (var j = 0u; j < p.width; j++) {
        let i = base + j;
        if (mask[i] != 0u) {
            let a = alpha[i];
            let ln_x = log(max(actions[i], MIN_ENTRY));
            log_prob += (a - 1.0) * ln_x - ln_gamma(a);
        }
    }
    values[3u * row] = log_prob;
}

// Dirichlet sampling, one invocation per row, each row from its own
// Xoshiro128++ stream (state [rows][4] words, loaded at the start and stored
// back at the end, so the next dispatch continues it) — the device twin, in
// distribution, of dfaas_policies::dirichlet::sample:
//
// * uniforms: 23 random bits (the output's top ones) as (2k + 1)/2²⁴, in
//   the open interval (0, 1) and exact in f32;
// * normals: Marsaglia's polar method on two such uniforms mapped to
//   (−1, 1) (no trigonometry), the second deviate kept for the next call
//   within the dispatch;
// * Gamma(a, 1) by Marsaglia–Tsang for a ≥ 1, and for a < 1 the boost
//   Gamma(a + 1)·U^(1/a); each draw is kept as its logarithm
//   (ln d + 3 ln t, plus ln U / a), so concentrations at the 1e-7 floor
//   give finite values (about −10⁸) instead of 0/0;
// * normalisation in log space: x_j = exp(l_j − max l) / Σ exp(l_k − max l).
//   A log-draw below UNDERFLOW counts as 0, as the CPU's f64 draw rounds
//   to 0 there; when every used entry's does, the mass goes to the largest
//   concentration (the last of equal ones, as the CPU's `max_by`).
//
// Entries with mask 0 are left out (sample 0); an entry with α ≤ 0 draws
// 0, as the CPU's failed `Gamma::new`. Each rejection loop stops after
// MAX_TRIES proposals (for a valid α the chance of needing more is below
// 0.22⁶⁴ for the polar method and 0.05⁶⁴ for Marsaglia–Tsang).

const UNDERFLOW: f32 = -745.1332; // ln(2⁻¹⁰⁷⁵): below, an f64 rounds to 0
const LEFT_OUT: f32 = -3.0e38; // the log-draw of a left-out entry
const MAX_TRIES: u32 = 64u;

struct Rows {
    rows: u32, width: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Rows;
@group(0) @binding(1) var<storage, read> alpha: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;
@group(0) @binding(3) var<storage, read_write> samples: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<u32>;

var<private> s: vec4<u32>;
var<private> spare: f32;
var<private> has_spare: bool;

fn rotl(x: u32, k: u32) -> u32 {
    return (x << k) | (x >> (32u - k));
}

// Xoshiro128++ (as rand_xoshiro's Xoshiro128PlusPlus::next_u32).
fn next_u32() -> u32 {
    let result = rotl(s.x + s.w, 7u) + s.x;
    let t = s.y << 9u;
    s.z ^= s.x;
    s.w ^= s.y;
    s.y ^= s.z;
    s.x ^= s.w;
    s.z ^= t;
    s.w = rotl(s.w, 11u);
    return result;
}

fn uniform_open() -> f32 {
    return f32((next_u32() >> 8u) | 1u) * (1.0 / 16777216.0);
}

fn normal() -> f32 {
    if (has_spare) {
        has_spare = false;
        return spare;
    }
    for (var i = 0u; i < MAX_TRIES; i++) {
        let a = 2.0 * uniform_open() - 1.0;
        let b = 2.0 * uniform_open() - 1.0;
        let q = a * a + b * b;
        if (q < 1.0) {
            let f = sqrt(-2.0 * log(q) / q);
            spare = b * f;
            has_spare = true;
            return a * f;
        }
    }
    return 0.0;
}

// ln of a Gamma(a, 1) draw for a ≥ 1 (Marsaglia–Tsang); ln d if every
// proposal is rejected.
fn ln_gamma_large(a: f32) -> f32 {
    let d = a - 1.0 / 3.0;
    let c = 1.0 / sqrt(9.0 * d);
    for (var i = 0u; i < MAX_TRIES; i++) {
        let x = normal();
        let t = 1.0 + c * x;
        if (t <= 0.0) {
            continue;
        }
        let v = t * t * t;
        let u = uniform_open();
        let x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2 || log(u) < 0.5 * x2 + d * (1.0 - v + log(v))) {
            return log(d) + 3.0 * log(t);
        }
    }
    return log(d);
}

// ln of a Gamma(a, 1) draw, a > 0.
fn ln_gamma_draw(a: f32) -> f32 {
    if (a >= 1.0) {
        return ln_gamma_large(a);
    }
    return ln_gamma_large(a + 1.0) + log(uniform_open()) / a;
}

@compute @workgroup_size(64)
fn sample_main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = (wg.y * count.x + wg.x) * 64u + local;
    if (row >= p.rows) {
        return;
    }
    let at = 4u * row;
    s = vec4<u32>(state[at], state[at + 1u], state[at + 2u], state[at + 3u]);
    has_spare = false;
    let base = row * p.width;
    // Pass 1: the log-draws (kept in `samples`), their largest, and the
    // fallback entry.
    var top = LEFT_OUT;
    var drawn = false;
    var best = p.width;
    var best_alpha = 0.0;
    for (var j = 0u; j < p.width; j++) {
        let i = base + j;
        var l = LEFT_OUT;
        if (mask[i] != 0u) {
            let a = alpha[i];
            if (best == p.width || a >= best_alpha) {
                best = j;
                best_alpha = a;
            }
            if (a > 0.0) {
                l = ln_gamma_draw(a);
                if (l >= UNDERFLOW) {
                    top = max(top, l);
                    drawn = true;
                }
            }
        }
        samples[i] = l;
    }
    // Pass 2: normalise, or give the mass to the fallback entry.
    if (drawn) {
        var total = 0.0;
        for (var j = 0u; j < p.width; j++) {
            let l = samples[base + j];
            if (l >= UNDERFLOW) {
                total += exp(l - top);
            }
        }
        for (var j = 0u; j < p.width; j++) {
            let l = samples[base + j];
            samples[base + j] = select(0.0, exp(l - top) / total, l >= UNDERFLOW);
        }
    } else {
        for (var j = 0u; j < p.width; j++) {
            samples[base + j] = select(0.0, 1.0, j == best);
        }
    }
    state[at] = s.x;
    state[at + 1u] = s.y;
    state[at + 2u] = s.z;
    state[at + 3u] = s.w;
}

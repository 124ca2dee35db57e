// One layer's product for every group g (workgroup z): a 16×16 tile of
// C[g] per workgroup, the k dimension walked in 16-wide tiles through
// workgroup memory, each output element summed by one invocation in
// ascending k (a fixed order: deterministic).
//
//   C[g](m, n) = epilogue(Σ_k A[g](m, k) · B[g](k, n))
//
// with X(r, c) at `x_offset + g·x_group + r·x_row + c·x_col` for A, B, C.
// Modes:
//   FORWARD:      C = act(Σ + aux[aux_offset + g·aux_group + n]) (the bias)
//   WEIGHT_GRAD:  one more column n = p.n where B is 1 (the bias gradient),
//                 written at `bias_offset + g·c_group + m`
//   DELTA:        C = Σ · act′(aux(m, n)), aux laid out as C (the layer
//                 input, the activation's output)
// act: 0 identity, 1 fast tanh (the CPU's rational approximation), 2 relu.

const TILE: u32 = 16u;
const FORWARD: u32 = 0u;
const WEIGHT_GRAD: u32 = 1u;
const DELTA: u32 = 2u;

struct Gemm {
    m: u32, n: u32, k: u32, mode: u32,
    a_offset: u32, a_group: u32, a_row: u32, a_col: u32,
    b_offset: u32, b_group: u32, b_row: u32, b_col: u32,
    c_offset: u32, c_group: u32, c_row: u32, c_col: u32,
    aux_offset: u32, aux_group: u32, act: u32, bias_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Gemm;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> aux: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

var<workgroup> a_tile: array<array<f32, 16>, 16>;
var<workgroup> b_tile: array<array<f32, 16>, 16>;

// dfaas_policies::mlp::fast_tanh: the same clamp and coefficients.
fn fast_tanh(z: f32) -> f32 {
    let x = clamp(z, -7.9988117, 7.9988117);
    let x2 = x * x;
    var q = x2 * -2.7607685e-16 + 2.000188e-13;
    q = x2 * q + -8.604672e-11;
    q = x2 * q + 5.122297e-8;
    q = x2 * q + 1.4857224e-5;
    q = x2 * q + 6.3726193e-4;
    q = x2 * q + 4.8935246e-3;
    q *= x;
    var d = x2 * 1.1982584e-6 + 1.1853471e-4;
    d = x2 * d + 2.2684346e-3;
    d = x2 * d + 4.893525e-3;
    return q / d;
}

fn activate(z: f32) -> f32 {
    switch p.act {
        case 1u: { return fast_tanh(z); }
        case 2u: { return max(z, 0.0); }
        default: { return z; }
    }
}

// The activation's derivative through its output `y`.
fn derivative(y: f32) -> f32 {
    switch p.act {
        case 1u: { return 1.0 - y * y; }
        case 2u: { return select(0.0, 1.0, y > 0.0); }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(16, 16, 1)
fn main(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_id) local: vec3<u32>,
) {
    let g = wg.z;
    let row = wg.y * TILE + local.y;
    let col = wg.x * TILE + local.x;
    // The bias gradient is one more column of C, where B is 1.
    let n_cols = select(p.n, p.n + 1u, p.mode == WEIGHT_GRAD);
    let a_base = p.a_offset + g * p.a_group;
    let b_base = p.b_offset + g * p.b_group;
    var sum = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += TILE) {
        let ka = k0 + local.x;
        var av = 0.0;
        if (row < p.m && ka < p.k) {
            av = a[a_base + row * p.a_row + ka * p.a_col];
        }
        a_tile[local.y][local.x] = av;
        let kb = k0 + local.y;
        var bv = 0.0;
        if (kb < p.k && col < n_cols) {
            if (col == p.n) {
                bv = 1.0;
            } else {
                bv = b[b_base + kb * p.b_row + col * p.b_col];
            }
        }
        b_tile[local.y][local.x] = bv;
        workgroupBarrier();
        let steps = min(TILE, p.k - k0);
        for (var kk = 0u; kk < steps; kk++) {
            sum += a_tile[local.y][kk] * b_tile[kk][local.x];
        }
        workgroupBarrier();
    }
    if (row >= p.m || col >= n_cols) {
        return;
    }
    let c_base = p.c_offset + g * p.c_group;
    switch p.mode {
        case 0u: {
            let bias = aux[p.aux_offset + g * p.aux_group + col];
            c[c_base + row * p.c_row + col * p.c_col] = activate(sum + bias);
        }
        case 1u: {
            if (col == p.n) {
                c[p.bias_offset + g * p.c_group + row] = sum;
            } else {
                c[c_base + row * p.c_row + col * p.c_col] = sum;
            }
        }
        default: {
            let at = row * p.c_row + col * p.c_col;
            let y = aux[p.aux_offset + g * p.aux_group + at];
            c[c_base + at] = sum * derivative(y);
        }
    }
}

// The PPO loss of a minibatch and its gradients, in f32 — the twin of
// dfaas_policies::backend::{actor_loss_gradient, value_loss_gradient}.
//
// `loss_rows`, one invocation per row: the ratio r = exp(ln π − ln π_old)
// from the Dirichlet kernel's log-density, the clipped surrogate
// −min(r·A, clip(r)·A) and d/d ln π = −r·A where r·A ≤ clip(r)·A (else 0);
// ∂L/∂logits = (d ln π·g_logp − c_H·g_ent + c_KL·g_kl)·sigmoid(logit)/R
// on the row's entries (0 on left-out ones); the capped squared value error
// min((V − R)², cap) and c_v·2·(V − R)/R where (V − R)² < cap (or always
// without a cap). The rows are `groups` minibatches of R = rows/groups rows,
// stored group-major (row r in group r / R), each with its own KL weight
// c_KL = kl_coeffs[group]: the gradients are each group's means. Each row's
// terms go to `terms` [5][rows]; `loss_means`, one workgroup, sums every
// term in a fixed order (each invocation a strided slice in increasing
// index, then a tree) into `stats`: policy loss, value loss, entropy, KL,
// clip fraction (means over all rows); `loss_group_kl`, one workgroup per
// group, sums each group's KL terms the same way into `group_kl` (means
// over the group's rows).

struct Params {
    rows: u32,
    width: u32,
    has_cap: u32,
    groups: u32,
    clip: f32,
    value_coeff: f32,
    value_clip: f32,
    inv_group_rows: f32, // 1/R
    entropy_coeff: f32,
    inv_rows: f32,       // 1/rows
    group_rows: u32,     // R
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;          // [rows][width]
@group(0) @binding(2) var<storage, read> dirichlet_values: array<f32>; // [rows][3]
@group(0) @binding(3) var<storage, read> dirichlet_grads: array<f32>;  // [3][rows][width]
@group(0) @binding(4) var<storage, read> mask: array<u32>;            // [rows][width]
@group(0) @binding(5) var<storage, read> old_log_prob: array<f32>;    // [rows]
@group(0) @binding(6) var<storage, read> advantages: array<f32>;      // [rows]
@group(0) @binding(7) var<storage, read> values: array<f32>;          // [rows]
@group(0) @binding(8) var<storage, read> returns: array<f32>;         // [rows]
@group(0) @binding(9) var<storage, read_write> d_logits: array<f32>;  // [rows][width]
@group(0) @binding(10) var<storage, read_write> d_values: array<f32>; // [rows]
@group(0) @binding(11) var<storage, read_write> terms: array<f32>;    // [5][rows]
@group(0) @binding(12) var<storage, read_write> stats: array<f32>;    // [5]
@group(0) @binding(13) var<storage, read> kl_coeffs: array<f32>;      // [groups]
@group(0) @binding(14) var<storage, read_write> group_kl: array<f32>; // [groups]

const STATS: u32 = 5u;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(64)
fn loss_rows(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = (wg.y * count.x + wg.x) * 64u + local;
    if (row >= p.rows) {
        return;
    }
    let n = p.rows;
    let log_prob = dirichlet_values[3u * row];
    let ratio = exp(log_prob - old_log_prob[row]);
    let clipped = clamp(ratio, 1.0 - p.clip, 1.0 + p.clip);
    let advantage = advantages[row];
    let unclipped_term = ratio * advantage;
    let clipped_term = clipped * advantage;
    let d_log_prob = select(0.0, -ratio * advantage, unclipped_term <= clipped_term);
    // Without the KL weight the KL is neither reported nor differentiated
    // (as the CPU, which does not evaluate it then).
    let kl_coeff = kl_coeffs[row / p.group_rows];
    let kl_on = kl_coeff != 0.0;
    terms[row] = -min(unclipped_term, clipped_term);
    terms[2u * n + row] = dirichlet_values[3u * row + 1u];
    terms[3u * n + row] = select(0.0, dirichlet_values[3u * row + 2u], kl_on);
    terms[4u * n + row] = select(0.0, 1.0, abs(ratio - clipped) > 0.0);
    let wide = n * p.width;
    for (var j = 0u; j < p.width; j++) {
        let i = row * p.width + j;
        if (mask[i] == 0u) {
            d_logits[i] = 0.0;
            continue;
        }
        var d_alpha = d_log_prob * dirichlet_grads[i] - p.entropy_coeff * dirichlet_grads[wide + i];
        if (kl_on) {
            d_alpha += kl_coeff * dirichlet_grads[2u * wide + i];
        }
        d_logits[i] = d_alpha * sigmoid(logits[i]) * p.inv_group_rows;
    }
    let error = values[row] - returns[row];
    let squared = error * error;
    let capped = p.has_cap != 0u;
    terms[n + row] = select(squared, min(squared, p.value_clip), capped);
    let followed = !capped || squared < p.value_clip;
    d_values[row] = select(0.0, p.value_coeff * 2.0 * error * p.inv_group_rows, followed);
}

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn loss_means(@builtin(local_invocation_index) local: u32) {
    for (var t = 0u; t < STATS; t++) {
        var sum = 0.0;
        for (var i = local; i < p.rows; i += 256u) {
            sum += terms[t * p.rows + i];
        }
        partial[local] = sum;
        workgroupBarrier();
        for (var width = 128u; width > 0u; width /= 2u) {
            if (local < width) {
                partial[local] += partial[local + width];
            }
            workgroupBarrier();
        }
        if (local == 0u) {
            stats[t] = partial[0] * p.inv_rows;
        }
        workgroupBarrier();
    }
}

// One workgroup per group (workgroups beyond the groups do nothing).
@compute @workgroup_size(256)
fn loss_group_kl(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let group = wg.y * count.x + wg.x;
    if (group >= p.groups) {
        return;
    }
    let first = 3u * p.rows + group * p.group_rows;
    var sum = 0.0;
    for (var i = local; i < p.group_rows; i += 256u) {
        sum += terms[first + i];
    }
    partial[local] = sum;
    workgroupBarrier();
    for (var width = 128u; width > 0u; width /= 2u) {
        if (local < width) {
            partial[local] += partial[local + width];
        }
        workgroupBarrier();
    }
    if (local == 0u) {
        group_kl[group] = partial[0] * p.inv_group_rows;
    }
}

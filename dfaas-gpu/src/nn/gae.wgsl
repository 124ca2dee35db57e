// Generalised advantage estimation over a rollout stored [step][column], the
// twin of dfaas_policies::gae::advantages (same f32 operations in the same
// order): one invocation per column runs the reverse scan
//   δ_t = r_t + γ·V_{t+1}·(1 − done_t) − V_t,  A_t = δ_t + γλ·(1 − done_t)·A_{t+1}
// from V after the last step = last_values[column], and writes the value
// targets A_t + V_t. `standardise_*` turn the advantages of each group
// (column c in group c / (columns/groups), all steps) into
// (A − mean_g)/max(std_g, 1e-8): one workgroup per group sums its samples in
// a fixed order (each invocation a strided slice in increasing sample
// index, step-major, then a tree), so the result is the same bits run to
// run; a group of one sample is left as it is.

struct Gae {
    steps: u32,
    columns: u32,
    gamma: f32,
    lambda: f32,
    groups: u32,
    group_columns: u32, // columns / groups
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Gae;
@group(0) @binding(1) var<storage, read> rewards: array<f32>;
@group(0) @binding(2) var<storage, read> values: array<f32>;
@group(0) @binding(3) var<storage, read> dones: array<f32>;
@group(0) @binding(4) var<storage, read> last_values: array<f32>;
@group(0) @binding(5) var<storage, read_write> advantages: array<f32>;
@group(0) @binding(6) var<storage, read_write> returns: array<f32>;
@group(0) @binding(7) var<storage, read_write> moments: array<f32>; // [groups][mean, 1 / max(std, 1e-8)]

@compute @workgroup_size(64)
fn scan(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let c = (wg.y * count.x + wg.x) * 64u + local;
    if (c >= p.columns) {
        return;
    }
    var next_advantage = 0.0;
    var next_value = last_values[c];
    for (var s = p.steps; s > 0u; s--) {
        let i = (s - 1u) * p.columns + c;
        let live = 1.0 - dones[i];
        // Every product rounded before it is added, as the CPU computes
        // them (the bitcast round trips keep a compiler from fusing a
        // multiply-add); products with `live` (0 or 1) are exact.
        let discounted = bitcast<f32>(bitcast<u32>(p.gamma * next_value)) * live;
        let delta = rewards[i] + discounted - values[i];
        let carried = bitcast<f32>(bitcast<u32>(p.gamma * p.lambda * live * next_advantage));
        next_advantage = delta + carried;
        advantages[i] = next_advantage;
        returns[i] = next_advantage + values[i];
        next_value = values[i];
    }
}

var<workgroup> partial: array<f32, 256>;

// Σ over the `len` advantages of the group whose first column is `first`
// of (a − centre) or its square, by workgroup invocation `local` of 256,
// into partial[0] (all invocations must call it).
fn workgroup_sum(local: u32, len: u32, first: u32, centre: f32, squared: bool) {
    let k = p.group_columns;
    var sum = 0.0;
    for (var j = local; j < len; j += 256u) {
        let i = (j / k) * p.columns + first + j % k;
        let d = advantages[i] - centre;
        sum += select(d, d * d, squared);
    }
    partial[local] = sum;
    workgroupBarrier();
    for (var width = 128u; width > 0u; width /= 2u) {
        if (local < width) {
            partial[local] += partial[local + width];
        }
        workgroupBarrier();
    }
}

// One workgroup per group (workgroups beyond the groups do nothing).
@compute @workgroup_size(256)
fn standardise_moments(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let group = wg.y * count.x + wg.x;
    if (group >= p.groups) {
        return;
    }
    let len = p.steps * p.group_columns;
    let first = group * p.group_columns;
    let n = f32(len);
    workgroup_sum(local, len, first, 0.0, false);
    let mean = partial[0] / n;
    workgroupBarrier();
    workgroup_sum(local, len, first, mean, true);
    if (local == 0u) {
        // (A − 0)·1 = A: the CPU leaves a single sample as it is.
        let single = len < 2u;
        moments[2u * group] = select(mean, 0.0, single);
        moments[2u * group + 1u] = select(1.0 / max(sqrt(partial[0] / n), 1e-8), 1.0, single);
    }
}

@compute @workgroup_size(256)
fn standardise_apply(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (wg.y * count.x + wg.x) * 256u + local;
    if (i >= p.steps * p.columns) {
        return;
    }
    let group = (i % p.columns) / p.group_columns;
    advantages[i] = (advantages[i] - moments[2u * group]) * moments[2u * group + 1u];
}

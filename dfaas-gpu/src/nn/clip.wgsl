// Global-norm clipping per group g, as dfaas_policies::adam::clip_global_norm
// over the group's gradients in every part (e.g. actor and critic):
//   `partial`: each workgroup sums the squares of 1024 consecutive entries
//       of one group's slice of one part (4 per invocation in ascending
//       order, then a tree over the workgroup);
//   `finish`:  one workgroup per group sums its partial sums (strided per
//       invocation, then a tree): norm = √Σ; scale = max/norm where a cap
//       is set and norm > max and norm is finite, else 1;
//   `scale`:   every entry of a part multiplied by its group's scale.
// Every sum has a fixed order: the same bits run to run.

const CHUNK: u32 = 1024u;

struct Clip {
    part_len: u32, chunk_offset: u32, total_chunks: u32, has_max: u32,
    max_norm: f32, groups: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Clip;
@group(0) @binding(1) var<storage, read_write> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> norms: array<f32>;
@group(0) @binding(4) var<storage, read_write> scales: array<f32>;

var<workgroup> tree: array<f32, 256>;

// Sums `tree` into tree[0] in a fixed order (all 256 invocations call it).
fn reduce(local: u32) {
    for (var width = 128u; width > 0u; width /= 2u) {
        if (local < width) {
            tree[local] += tree[local + width];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn partial(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let chunk = wg.x;
    let g = wg.y;
    let base = g * p.part_len;
    var sum = 0.0;
    for (var j = 0u; j < 4u; j++) {
        let i = chunk * CHUNK + j * 256u + local;
        if (i < p.part_len) {
            let x = grads[base + i];
            sum += x * x;
        }
    }
    tree[local] = sum;
    workgroupBarrier();
    reduce(local);
    if (local == 0u) {
        partials[g * p.total_chunks + p.chunk_offset + chunk] = tree[0];
    }
}

@compute @workgroup_size(256)
fn finish(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let g = wg.x;
    var sum = 0.0;
    for (var i = local; i < p.total_chunks; i += 256u) {
        sum += partials[g * p.total_chunks + i];
    }
    tree[local] = sum;
    workgroupBarrier();
    reduce(local);
    if (local == 0u) {
        let norm = sqrt(tree[0]);
        norms[g] = norm;
        let finite = (bitcast<u32>(norm) & 0x7f800000u) != 0x7f800000u;
        var scale = 1.0;
        if (p.has_max == 1u && norm > p.max_norm && finite) {
            scale = p.max_norm / norm;
        }
        scales[g] = scale;
    }
}

@compute @workgroup_size(256)
fn scale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) count: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let i = (wg.y * count.x + wg.x) * 256u + local;
    if (i < p.part_len * p.groups) {
        grads[i] *= scales[i / p.part_len];
    }
}

// The split kernel: one invocation per row, `split_into` (split.wgsl,
// prepended) on the row's first `lengths[r]` entries.

struct Params {
    rows: u32,
    width: u32,
}

@group(0) @binding(0) var<storage, read> actions: array<f32>;        // [rows][width]
@group(0) @binding(1) var<storage, read> lengths: array<u32>;        // entries used per row, 1..=width
@group(0) @binding(2) var<storage, read> rates: array<u32>;          // [rows]
@group(0) @binding(3) var<storage, read_write> counts: array<u32>;   // [rows][width]
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = id.x + id.y * groups.x * 64u;
    if (r >= params.rows) {
        return;
    }
    let n = lengths[r];
    let base = r * params.width;
    split_into(base, n, rates[r]);
    for (var j = n; j < params.width; j++) {
        counts[base + j] = 0u;
    }
}

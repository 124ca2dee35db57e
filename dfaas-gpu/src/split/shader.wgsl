// Split of input rates by actions, exactly as dfaas_core::split:
// products in f32 truncated toward zero; a positive remainder handed out
// in stable descending order of the fractional parts (cycling); truncated
// counts above the rate rescaled by the exact largest-remainder rule.
// One invocation per row. Rates must stay below 65536 (count·rate then
// fits in 32 bits).

struct Params {
    rows: u32,
    width: u32,
}

@group(0) @binding(0) var<storage, read> actions: array<f32>;        // [rows][width]
@group(0) @binding(1) var<storage, read> lengths: array<u32>;        // entries used per row, 1..=width
@group(0) @binding(2) var<storage, read> rates: array<u32>;          // [rows]
@group(0) @binding(3) var<storage, read_write> counts: array<u32>;   // [rows][width]
@group(0) @binding(4) var<uniform> params: Params;

const MAX_ENTRIES: u32 = 64u;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let r = id.x + id.y * groups.x * 64u;
    if (r >= params.rows) {
        return;
    }
    let n = lengths[r];
    let rate = rates[r];
    let rate_f = f32(rate);
    let base = r * params.width;
    var whole: array<u32, MAX_ENTRIES>;
    var frac: array<f32, MAX_ENTRIES>;
    var assigned = 0u;
    for (var j = 0u; j < n; j++) {
        let p = clamp(actions[base + j], 0.0, 1.0);
        // The bitcast round trip keeps the rounded product: the fractional
        // part must not be computed by a fused multiply-add.
        let product = bitcast<f32>(bitcast<u32>(p * rate_f));
        let w = u32(product);
        whole[j] = w;
        frac[j] = product - f32(w);
        assigned += w;
    }
    if (assigned > rate) {
        // Rescale: share = c·rate / assigned, one more to the largest
        // remainders (ties: earlier entry).
        var remainder: array<u32, MAX_ENTRIES>;
        var given = 0u;
        for (var j = 0u; j < n; j++) {
            let product = whole[j] * rate;
            let share = product / assigned;
            remainder[j] = product - share * assigned;
            whole[j] = share;
            given += share;
        }
        let extra = rate - given;
        for (var j = 0u; j < n; j++) {
            var rank = 0u;
            for (var i = 0u; i < n; i++) {
                rank += select(0u, 1u, remainder[i] > remainder[j] || (remainder[i] == remainder[j] && i < j));
            }
            counts[base + j] = whole[j] + select(0u, 1u, rank < extra);
        }
    } else {
        let remaining = rate - assigned;
        let full = remaining / n;
        let extra = remaining % n;
        for (var j = 0u; j < n; j++) {
            var rank = 0u;
            for (var i = 0u; i < n; i++) {
                rank += select(0u, 1u, frac[i] > frac[j] || (frac[i] == frac[j] && i < j));
            }
            counts[base + j] = whole[j] + full + select(0u, 1u, rank < extra);
        }
    }
    for (var j = n; j < params.width; j++) {
        counts[base + j] = 0u;
    }
}

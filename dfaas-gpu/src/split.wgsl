// Split of `total` requests by the `n` action entries at `actions[base..]`
// into `counts[base..]`, exactly as dfaas_core::split: products in f32
// truncated toward zero; a positive remainder handed out in stable
// descending order of the fractional parts (cycling); truncated counts above
// the total rescaled by the exact largest-remainder rule. Totals must stay
// below 65536 (count·total then fits in 32 bits). The including shader
// declares `actions: array<f32>` and `counts: array<u32>`.

const MAX_ENTRIES: u32 = 64u;

fn split_into(base: u32, n: u32, total: u32) {
    let total_f = f32(total);
    var whole: array<u32, MAX_ENTRIES>;
    var frac: array<f32, MAX_ENTRIES>;
    var assigned = 0u;
    for (var j = 0u; j < n; j++) {
        let p = clamp(actions[base + j], 0.0, 1.0);
        // The bitcast round trip keeps the rounded product: the fractional
        // part must not be computed by a fused multiply-add.
        let product = bitcast<f32>(bitcast<u32>(p * total_f));
        let w = u32(product);
        whole[j] = w;
        frac[j] = product - f32(w);
        assigned += w;
    }
    if (assigned > total) {
        var remainder: array<u32, MAX_ENTRIES>;
        var given = 0u;
        for (var j = 0u; j < n; j++) {
            let product = whole[j] * total;
            let share = product / assigned;
            remainder[j] = product - share * assigned;
            whole[j] = share;
            given += share;
        }
        let extra = total - given;
        for (var j = 0u; j < n; j++) {
            var rank = 0u;
            for (var i = 0u; i < n; i++) {
                rank += select(0u, 1u, remainder[i] > remainder[j] || (remainder[i] == remainder[j] && i < j));
            }
            counts[base + j] = whole[j] + select(0u, 1u, rank < extra);
        }
    } else {
        let remaining = total - assigned;
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
}

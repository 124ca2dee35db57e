// Shared functions, prepended to every kernel of this crate.
//
// Exact 64-bit integer arithmetic (WGSL has no u64): `mul_wide` and
// `div_wide`, for the largest-remainder rules of the split rescale and of
// the reject distribution, whose products `entry·count` reach 2^52.
//
// Split of `total` requests by the `n` action entries at `actions[base..]`
// into `counts[base..]`, exactly as dfaas_core::split: products in f32
// truncated toward zero; a positive remainder handed out in stable
// descending order of the fractional parts (cycling); truncated counts above
// the total rescaled by the exact largest-remainder rule. Equal to the CPU
// for n <= MAX_ENTRIES and n·total < 2^32 (the truncated sum fits in 32
// bits): every total up to 2^26, where the callers accept up to
// MAX_INPUT_RATE = 2^20. The including shader declares
// `actions: array<f32>` and `counts: array<u32>`.

const MAX_ENTRIES: u32 = 64u;

// a·b exactly, as (low, high) 32-bit words: 16-bit limbs, so that every
// partial product fits in 32 bits.
fn mul_wide(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let middle = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let low = (middle << 16u) | (p00 & 0xffffu);
    let high = a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (middle >> 16u);
    return vec2<u32>(low, high);
}

// (quotient, remainder) of the 64-bit `n` = (low, high) by `d` > 0, exactly,
// provided high < d (the quotient then fits in 32 bits): one 32-bit division
// when high is 0, else restoring long division, one quotient bit per round.
fn div_wide(n: vec2<u32>, d: u32) -> vec2<u32> {
    if (n.y == 0u) {
        let q = n.x / d;
        return vec2<u32>(q, n.x - q * d);
    }
    // Invariant: r < d. The shifted remainder 2r + bit < 2d may need a 33rd
    // bit (`carry`); subtracting d then brings it back below d, and the
    // wrapping 32-bit subtraction gives that value exactly.
    var r = n.y;
    var q = 0u;
    for (var i = 32u; i > 0u; i--) {
        let bit = i - 1u;
        let carry = r >> 31u;
        r = (r << 1u) | ((n.x >> bit) & 1u);
        if (carry == 1u || r >= d) {
            r -= d;
            q |= 1u << bit;
        }
    }
    return vec2<u32>(q, r);
}

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
        // whole[j] <= assigned, so whole[j]·total / assigned fits in 32 bits.
        var remainder: array<u32, MAX_ENTRIES>;
        var given = 0u;
        for (var j = 0u; j < n; j++) {
            let division = div_wide(mul_wide(whole[j], total), assigned);
            whole[j] = division.x;
            remainder[j] = division.y;
            given += division.x;
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

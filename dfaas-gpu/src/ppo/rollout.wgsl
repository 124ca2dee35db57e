// The glue of one on-device PPO iteration (dfaas_gpu::ppo): everything that
// moves data between the env, the networks and the rollout storage, so that
// the whole iteration is one command buffer. N = agents, E = envs, P =
// policies of M agents each (independent and MAPPO: P = N, M = 1; shared:
// P = 1, M = N), O = the env's observation width, D = the actors' input
// width (O, or O + N with the shared layout's agent id), C = the critics'
// (D, or with MAPPO every agent's own features in agent order), W = action
// width, T = rollout steps, R = minibatch rows per policy. A row `a·E + e`
// is agent a in env e; policy q holds rows q·M·E .. (q + 1)·M·E, and its
// sample `t·M·E + c` is row `q·M·E + c` at step t. The step, minibatch and
// epoch counters live on the device (`clock`), so no kernel needs an upload
// between dispatches.

struct Params {
    envs: u32,
    agents: u32,
    obs_width: u32,
    width: u32,
    steps: u32,
    rows: u32,         // R
    minibatches: u32,  // per epoch
    epochs: u32,
    normalize: u32,    // 1: running mean/variance normalisation
    seed_lo: u32,
    seed_hi: u32,
    half_bits: u32,    // h: the permutation domain is 4^h >= T·E
    beta: f32,         // team-reward weight
    policies: u32,     // P
    members: u32,      // M
    policy_layout: u32, // 0 independent, 1 shared, 2 MAPPO
    in_width: u32,     // D
    critic_width: u32, // C
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const SHARED: u32 = 1u;
const MAPPO: u32 = 2u;

// Words of `clock`.
const STEP: u32 = 0u;
const MINIBATCH: u32 = 1u;
const EPOCH: u32 = 2u;
const ITERATION: u32 = 3u;

// Words of `tally` per agent: reward sum (f32 bits), input (u64 lo, hi),
// rejected (u64 lo, hi).
const TALLY: u32 = 5u;
// Entries of `acc` before the per-policy KL sums: policy loss, value loss,
// entropy, KL, clip fraction, grad norm, updates, non-finite flag.
const ACC: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> degrees: array<u32>;          // [N]
@group(0) @binding(2) var<storage, read> env_obs: array<f32>;          // [E][N][O]
@group(0) @binding(3) var<storage, read_write> norm: array<f32>;       // [P][D][3]: count, mean, M2
@group(0) @binding(4) var<storage, read_write> actor_in: array<f32>;   // [N·E][D]
@group(0) @binding(5) var<storage, read_write> critic_in: array<f32>;  // [N·E][C]
@group(0) @binding(6) var<storage, read_write> roll_obs: array<f32>;   // [T][N·E][D]
@group(0) @binding(7) var<storage, read_write> clock: array<u32>;      // [4]
@group(0) @binding(8) var<storage, read> samples: array<f32>;          // [N·E][W]
@group(0) @binding(9) var<storage, read> act_alpha: array<f32>;        // [N·E][W]
@group(0) @binding(10) var<storage, read_write> dir_actions: array<f32>; // [N·E][W]
@group(0) @binding(11) var<storage, read_write> env_actions: array<f32>; // [E][N][W]
@group(0) @binding(12) var<storage, read_write> roll_actions: array<f32>; // [T][N·E][W]
@group(0) @binding(13) var<storage, read_write> roll_alpha: array<f32>;   // [T][N·E][W]
@group(0) @binding(14) var<storage, read> act_dir_values: array<f32>;  // [N·E][3]
@group(0) @binding(15) var<storage, read> critic_out: array<f32>;      // [N·E]
@group(0) @binding(16) var<storage, read_write> roll_logp: array<f32>; // [T][N·E]
@group(0) @binding(17) var<storage, read_write> gae_values: array<f32>; // [T][N·E]
@group(0) @binding(18) var<storage, read> env_rewards: array<f32>;     // [E][N]
@group(0) @binding(19) var<storage, read> env_state: array<u32>;       // [E][5]
@group(0) @binding(20) var<storage, read_write> gae_rewards: array<f32>; // [T][N·E]
@group(0) @binding(21) var<storage, read_write> gae_dones: array<f32>;   // [T][N·E]
@group(0) @binding(22) var<storage, read> env_counts: array<u32>;      // [E][N][W]
@group(0) @binding(23) var<storage, read> env_rejects: array<u32>;     // [E][N][W]
@group(0) @binding(24) var<storage, read_write> tally: array<u32>;     // [N][TALLY]
@group(0) @binding(25) var<storage, read_write> gae_last: array<f32>;  // [N·E]
@group(0) @binding(26) var<storage, read> gae_advantages: array<f32>;  // [T][N·E]
@group(0) @binding(27) var<storage, read> gae_returns: array<f32>;     // [T][N·E]
@group(0) @binding(28) var<storage, read_write> train_actor_in: array<f32>;  // [P][R][D]
@group(0) @binding(29) var<storage, read_write> train_critic_in: array<f32>; // [P][R][C]
@group(0) @binding(30) var<storage, read_write> train_actions: array<f32>;   // [P·R][W]
@group(0) @binding(31) var<storage, read_write> train_old_alpha: array<f32>; // [P·R][W]
@group(0) @binding(32) var<storage, read_write> loss_old_logp: array<f32>;   // [P·R]
@group(0) @binding(33) var<storage, read_write> loss_advantages: array<f32>; // [P·R]
@group(0) @binding(34) var<storage, read_write> loss_returns: array<f32>;    // [P·R]
@group(0) @binding(35) var<storage, read> loss_stats: array<f32>;      // [5]
@group(0) @binding(36) var<storage, read> group_kl: array<f32>;        // [P]
@group(0) @binding(37) var<storage, read> clip_norms: array<f32>;      // [P]
@group(0) @binding(38) var<storage, read_write> acc: array<f32>;       // [ACC + P]
@group(0) @binding(39) var<storage, read_write> out: array<u32>;       // [N·TALLY + ACC + P]
@group(0) @binding(40) var<storage, read_write> train_mask: array<u32>; // [P·R][W]

fn linear(wg: vec3<u32>, count: vec3<u32>, local: u32, size: u32) -> u32 {
    return (wg.y * count.x + wg.x) * size + local;
}

// Observation features agent a uses: input rates and, per neighbour, the
// previous forward and its rejects.
fn features(a: u32) -> u32 {
    return 2u + 2u * degrees[a];
}

// Whether actor input f of policy q is one of its features (the others are
// padding, 0, with no statistics): the agent's own features, or with the
// shared layout every one of the D (the observation row and the agent id).
fn input_used(q: u32, f: u32) -> bool {
    if (p.policy_layout == SHARED) {
        return f < p.in_width;
    }
    return f < features(q);
}

// Actor input f of row `a·E + e` before normalisation: the env's
// observation, then (shared layout) the one-hot agent id.
fn raw_input(a: u32, e: u32, f: u32) -> f32 {
    if (f >= p.obs_width) {
        return select(0.0, 1.0, f - p.obs_width == a);
    }
    return env_obs[(e * p.agents + a) * p.obs_width + f];
}

// Whether action entry j is one of agent a's Dirichlet entries: `[local,
// forward_1..k, reject]` as the first k + 2 outputs, or with the shared
// layout the first k + 1 and the last (the reject output of every agent).
fn entry_used(a: u32, j: u32) -> bool {
    let k = degrees[a];
    if (p.policy_layout == SHARED) {
        return j <= k || j == p.width - 1u;
    }
    return j < k + 2u;
}

// ---- Observation statistics -------------------------------------------

var<workgroup> partial: array<f32, 256>;

fn workgroup_total(local: u32) -> f32 {
    workgroupBarrier();
    for (var width = 128u; width > 0u; width /= 2u) {
        if (local < width) {
            partial[local] += partial[local + width];
        }
        workgroupBarrier();
    }
    return partial[0];
}

// One workgroup per (policy, actor input): this step's mean and M2 over
// the policy's M·E rows (two passes, fixed order), merged into the running
// ones (Chan et al.).
@compute @workgroup_size(256)
fn norm_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let q = wg.x / p.in_width;
    let f = wg.x % p.in_width;
    // Padded inputs keep no statistics (every invocation still reaches
    // the barriers).
    let used = input_used(q, f);
    let columns = p.members * p.envs;
    var sum = 0.0;
    for (var c = local; c < columns; c += 256u) {
        sum += raw_input(q * p.members + c / p.envs, c % p.envs, f);
    }
    partial[local] = sum;
    let n_b = f32(columns);
    let mean_b = workgroup_total(local) / n_b;
    workgroupBarrier();
    var squares = 0.0;
    for (var c = local; c < columns; c += 256u) {
        let d = raw_input(q * p.members + c / p.envs, c % p.envs, f) - mean_b;
        squares += d * d;
    }
    partial[local] = squares;
    let m2_b = workgroup_total(local);
    if (local == 0u && used) {
        let at = (q * p.in_width + f) * 3u;
        let n_a = norm[at];
        let n = n_a + n_b;
        let delta = mean_b - norm[at + 1u];
        norm[at] = n;
        norm[at + 1u] = norm[at + 1u] + delta * (n_b / n);
        norm[at + 2u] = norm[at + 2u] + m2_b + delta * delta * (n_a * n_b / n);
    }
}

// Actor input f of agent a in env e: normalised with its policy's
// statistics (as the CPU's RunningNorm::apply) when asked; 0 on padding.
fn input_feature(a: u32, e: u32, f: u32) -> f32 {
    let q = a / p.members;
    if (!input_used(q, f)) {
        return 0.0;
    }
    let x = raw_input(a, e, f);
    if (p.normalize == 0u) {
        return x;
    }
    let at = (q * p.in_width + f) * 3u;
    let count = norm[at];
    let deviation = select(1.0, sqrt(norm[at + 2u] / count), count > 1.0);
    return clamp((x - norm[at + 1u]) / max(deviation, 1e-4), -10.0, 10.0);
}

// MAPPO critic input c: agent b's own feature f, where c runs over every
// agent's own features in agent order; `vec2(b, f)`.
fn critic_source(c: u32) -> vec2<u32> {
    var rest = c;
    var b = 0u;
    loop {
        let own = features(b);
        if (rest < own || b + 1u == p.agents) {
            break;
        }
        rest -= own;
        b += 1u;
    }
    return vec2<u32>(b, rest);
}

// Invocation i (over [N·E][max(D, C)]) writes actor input i (the actors'
// and, but with MAPPO, the critics') and, with MAPPO, critic input i.
fn observe_into(i: u32, store: bool) {
    let wide = max(p.in_width, p.critic_width);
    let rows = p.agents * p.envs;
    if (i >= rows * wide) {
        return;
    }
    let row = i / wide;
    let f = i % wide;
    let a = row / p.envs;
    let e = row % p.envs;
    if (f < p.in_width) {
        let x = input_feature(a, e, f);
        let at = row * p.in_width + f;
        actor_in[at] = x;
        if (p.policy_layout != MAPPO) {
            critic_in[at] = x;
        }
        if (store) {
            roll_obs[clock[STEP] * rows * p.in_width + at] = x;
        }
    }
    if (p.policy_layout == MAPPO && f < p.critic_width) {
        let source = critic_source(f);
        critic_in[row * p.critic_width + f] = input_feature(source.x, e, source.y);
    }
}

// The networks' inputs from the env's observations, the actors' kept in
// the rollout at the current step.
@compute @workgroup_size(64)
fn observe(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    observe_into(linear(wg, count, local, 64u), true);
}

// As `observe`, for the bootstrap after the rollout (nothing stored).
@compute @workgroup_size(64)
fn observe_last(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    observe_into(linear(wg, count, local, 64u), false);
}

// ---- Acting -----------------------------------------------------------

// Each drawn entry into the Dirichlet kernel's actions (for its
// log-density) and the rollout (output positions); and the env's action
// buffer [E][N][W] in the env's order `[local, forward_1..k, reject]`,
// taking the reject from the last output with the shared layout, 0 past it.
@compute @workgroup_size(64)
fn store_actions(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = linear(wg, count, local, 64u);
    let wide = p.agents * p.envs * p.width;
    if (i >= wide) {
        return;
    }
    let row = i / p.width;
    let j = i % p.width;
    let a = row / p.envs;
    let e = row % p.envs;
    let x = samples[i];
    dir_actions[i] = x;
    let at = clock[STEP] * wide + i;
    roll_actions[at] = x;
    roll_alpha[at] = act_alpha[i];
    let k = degrees[a];
    var action = 0.0;
    if (j <= k) {
        action = x;
    } else if (j == k + 1u) {
        let reject = select(k + 1u, p.width - 1u, p.policy_layout == SHARED);
        action = samples[row * p.width + reject];
    }
    env_actions[(e * p.agents + a) * p.width + j] = action;
}

// Each row's log-density and critic value into the rollout.
@compute @workgroup_size(64)
fn store_values(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let row = linear(wg, count, local, 64u);
    let rows = p.agents * p.envs;
    if (row >= rows) {
        return;
    }
    let at = clock[STEP] * rows + row;
    roll_logp[at] = act_dir_values[3u * row];
    gae_values[at] = critic_out[row];
}

// Each row's learning reward (1 − β)·own + β·(the env's mean, agents summed
// in order) and done flag into the rollout, as dfaas_core::reward.
@compute @workgroup_size(64)
fn store_rewards(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let row = linear(wg, count, local, 64u);
    let rows = p.agents * p.envs;
    if (row >= rows) {
        return;
    }
    let agent = row / p.envs;
    let e = row % p.envs;
    var sum = 0.0;
    for (var a = 0u; a < p.agents; a++) {
        sum += env_rewards[e * p.agents + a];
    }
    let mean = sum / f32(p.agents);
    let own = env_rewards[e * p.agents + agent];
    let at = clock[STEP] * rows + row;
    gae_rewards[at] = (1.0 - p.beta) * own + p.beta * mean;
    gae_dones[at] = select(0.0, 1.0, env_state[e * 5u + 3u] != 0u);
}

var<workgroup> partial_in: array<vec2<u32>, 256>;
var<workgroup> partial_out: array<vec2<u32>, 256>;

// a + b for a u64 `a` as (lo, hi) words and a u32 `b`.
fn add_wide(a: vec2<u32>, b: u32) -> vec2<u32> {
    let sum = a.x + b;
    return vec2<u32>(sum, a.y + select(0u, 1u, sum < a.x));
}

// a + b for two u64 as (lo, hi) words.
fn add_wide2(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let low = add_wide(a, b.x);
    return vec2<u32>(low.x, low.y + b.y);
}

// One workgroup per agent: the step's env rewards, input requests and
// rejected requests (rejected in the split, at the agent's node, at its
// neighbours) summed over the envs into the agent's tally.
@compute @workgroup_size(256)
fn tally_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let g = wg.x;
    let k = degrees[g];
    var reward = 0.0;
    var input = vec2<u32>(0u, 0u);
    var rejected = vec2<u32>(0u, 0u);
    for (var e = local; e < p.envs; e += 256u) {
        reward += env_rewards[e * p.agents + g];
        let base = (e * p.agents + g) * p.width;
        // One env's sums stay below 2^32 (at most 64 entries of 2^20).
        var env_input = 0u;
        for (var j = 0u; j < k + 2u; j++) {
            env_input += env_counts[base + j];
        }
        var env_rejected = env_counts[base + k + 1u];
        for (var j = 0u; j <= k; j++) {
            env_rejected += env_rejects[base + j];
        }
        input = add_wide(input, env_input);
        rejected = add_wide(rejected, env_rejected);
    }
    partial[local] = reward;
    partial_in[local] = input;
    partial_out[local] = rejected;
    let total = workgroup_total(local);
    if (local == 0u) {
        let at = g * TALLY;
        tally[at] = bitcast<u32>(bitcast<f32>(tally[at]) + total);
        var inputs = vec2<u32>(tally[at + 1u], tally[at + 2u]);
        var rejects = vec2<u32>(tally[at + 3u], tally[at + 4u]);
        for (var i = 0u; i < 256u; i++) {
            inputs = add_wide2(inputs, partial_in[i]);
            rejects = add_wide2(rejects, partial_out[i]);
        }
        tally[at + 1u] = inputs.x;
        tally[at + 2u] = inputs.y;
        tally[at + 3u] = rejects.x;
        tally[at + 4u] = rejects.y;
    }
}

@compute @workgroup_size(1)
fn tick_step() {
    clock[STEP] = min(clock[STEP] + 1u, p.steps);
}

// The critic's values of the observations after the rollout (the
// bootstrap of GAE).
@compute @workgroup_size(64)
fn store_last(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let row = linear(wg, count, local, 64u);
    if (row < p.agents * p.envs) {
        gae_last[row] = critic_out[row];
    }
}

// ---- Minibatches ------------------------------------------------------

// lowbias32: a 32-bit integer hash (Wellons' constants).
fn mix(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

// Round key r of the permutation of policy g's samples in this epoch.
fn round_key(g: u32, r: u32) -> u32 {
    let k = mix(p.seed_lo ^ mix(p.seed_hi ^ mix(clock[ITERATION] ^ mix(clock[EPOCH] ^ mix(g)))));
    return mix(k + r);
}

// Position `i` of a pseudo-random permutation of 0..n (n = T·M·E): a 4-round
// Feistel network on 2h bits, cycle-walking until the value is below n
// (dfaas_gpu::ppo::permuted, the host mirror).
fn permuted(i: u32, n: u32, g: u32) -> u32 {
    let h = p.half_bits;
    let mask = (1u << h) - 1u;
    var x = i;
    loop {
        var l = x >> h;
        var r = x & mask;
        for (var round = 0u; round < 4u; round++) {
            let next = l ^ (mix(r ^ round_key(g, round)) & mask);
            l = r;
            r = next;
        }
        x = (l << h) | r;
        if (x < n) {
            break;
        }
    }
    return x;
}

// One invocation per (policy, row) of the minibatch: the sample at
// permuted position `minibatch·R + row` gathered into the training
// networks' inputs (with MAPPO the critic's from every agent's stored
// inputs at the sample's step and env), its agent's Dirichlet entries, and
// the loss's inputs.
@compute @workgroup_size(64)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) count: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let i = linear(wg, count, local, 64u);
    if (i >= p.policies * p.rows) {
        return;
    }
    let q = i / p.rows;
    let r = i % p.rows;
    let columns = p.members * p.envs;
    let s = permuted(clock[MINIBATCH] * p.rows + r, p.steps * columns, q);
    let t = s / columns;
    let c = s % columns;
    let rows = p.agents * p.envs;
    let src_row = t * rows + q * columns + c;
    let a = q * p.members + c / p.envs;
    let e = c % p.envs;
    let obs_from = src_row * p.in_width;
    for (var f = 0u; f < p.in_width; f++) {
        let x = roll_obs[obs_from + f];
        train_actor_in[i * p.in_width + f] = x;
        if (p.policy_layout != MAPPO) {
            train_critic_in[i * p.in_width + f] = x;
        }
    }
    if (p.policy_layout == MAPPO) {
        for (var f = 0u; f < p.critic_width; f++) {
            let source = critic_source(f);
            let at = (t * rows + source.x * p.envs + e) * p.in_width + source.y;
            train_critic_in[i * p.critic_width + f] = roll_obs[at];
        }
    }
    for (var j = 0u; j < p.width; j++) {
        train_actions[i * p.width + j] = roll_actions[src_row * p.width + j];
        train_old_alpha[i * p.width + j] = roll_alpha[src_row * p.width + j];
        train_mask[i * p.width + j] = select(0u, 1u, entry_used(a, j));
    }
    loss_old_logp[i] = roll_logp[src_row];
    loss_advantages[i] = gae_advantages[src_row];
    loss_returns[i] = gae_returns[src_row];
}

// Not NaN or ±∞, tested on the bits (a comparison may be folded away by a
// compiler that assumes finite floats).
fn finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// After an update: its statistics summed (and the last epoch's KL per
// policy), a flag raised on any non-finite value, the minibatch and epoch
// counters advanced.
@compute @workgroup_size(1)
fn accumulate() {
    var bad = false;
    for (var s = 0u; s < 5u; s++) {
        acc[s] += loss_stats[s];
        bad = bad || !finite(loss_stats[s]);
    }
    var norms = 0.0;
    for (var q = 0u; q < p.policies; q++) {
        norms += clip_norms[q];
        if (clock[EPOCH] + 1u == p.epochs) {
            acc[ACC + q] += group_kl[q];
        }
    }
    bad = bad || !finite(norms);
    acc[5] += norms / f32(p.policies);
    acc[6] += 1.0;
    if (bad) {
        acc[7] = 1.0;
    }
    clock[MINIBATCH] += 1u;
    if (clock[MINIBATCH] == p.minibatches) {
        clock[MINIBATCH] = 0u;
        clock[EPOCH] += 1u;
    }
}

// The iteration's statistics into `out` (the one buffer read back), the
// sums and counters reset for the next iteration.
@compute @workgroup_size(1)
fn finish() {
    let tallies = p.agents * TALLY;
    for (var i = 0u; i < tallies; i++) {
        out[i] = tally[i];
        tally[i] = 0u;
    }
    for (var i = 0u; i < ACC + p.policies; i++) {
        out[tallies + i] = bitcast<u32>(acc[i]);
        acc[i] = 0.0;
    }
    clock[STEP] = 0u;
    clock[MINIBATCH] = 0u;
    clock[EPOCH] = 0u;
    clock[ITERATION] += 1u;
}

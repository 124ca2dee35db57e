// One step of every environment of a batch, in five kernels (see `split_agent`; the
// split is `split_into` of split.wgsl, prepended), with
// the semantics of dfaas_core::BatchEnv (exact-integer rejects): split,
// incoming lists in sender order, performance-table look-up, reject
// distribution, reward, next observation, episode bookkeeping and
// auto-reset onto the next trace of the pool. Integer arithmetic is exact
// for every node total below 2^32 (products through mul_wide/div_wide).

struct Params {
    envs: u32,
    agents: u32,
    width: u32,        // action entries per agent: 2 + max degree
    obs_width: u32,    // 2 + 2·max degree
    max_steps: u32,
    pool_size: u32,
    pool_stride: u32,  // envs mod pool_size
    // Sections of `topology` (offsets in u32 words).
    degrees: u32,
    in_offsets: u32,
    in_senders: u32,
    in_index: u32,
    table_offsets: u32,
    tables: u32,
    pool_half: u32,    // words of one pool half: pool_size · agents · max_steps
}

// Words of `state` per env.
const STEP: u32 = 0u;           // step within the episode
const EPISODE_LOW: u32 = 1u;    // episodes finished since the reset, a u64:
const EPISODE_HIGH: u32 = 2u;   //   low and high words
const DONE: u32 = 3u;           // 1 when the last step ended an episode
const ENTRY: u32 = 4u;          // pool entry played: (e + episode·envs) mod pool_size
const STATE_WORDS: u32 = 5u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> topology: array<u32>;        // static sections, see Params
@group(0) @binding(2) var<storage, read> pool: array<u32>;            // [2][pool][agent][step]
@group(0) @binding(3) var<storage, read> actions: array<f32>;         // [env][agent][width]
@group(0) @binding(4) var<storage, read_write> counts: array<u32>;    // [env][agent][width]
@group(0) @binding(5) var<storage, read_write> rejects: array<u32>;   // [env][agent][width]: 0 local, 1..=k forwards
@group(0) @binding(6) var<storage, read_write> obs: array<f32>;       // [env][agent][obs_width]
@group(0) @binding(7) var<storage, read_write> rewards: array<f32>;   // [env][agent]
@group(0) @binding(8) var<storage, read_write> state: array<u32>;     // [env][STATE_WORDS]

fn degree(a: u32) -> u32 {
    return topology[params.degrees + a];
}

// Input rate of agent `a` at step `t` of env `e`'s current episode: from
// the pool half of the episode's parity (the host refreshes the other).
fn rate(e: u32, a: u32, t: u32) -> u32 {
    let entry = state[e * STATE_WORDS + ENTRY];
    let half = (state[e * STATE_WORDS + EPISODE_LOW] & 1u) * params.pool_half;
    return pool[half + (entry * params.agents + a) * params.max_steps + t];
}

// Node `node`'s incoming list (own local count first, then every positive
// forward, senders in agent order), its rejects from the table, and their
// exact largest-remainder distribution.
fn serve(e: u32, node: u32) {
    var list: array<u32, MAX_ENTRIES>;
    var slot: array<u32, MAX_ENTRIES>;      // index into counts/rejects
    let own = (e * params.agents + node) * params.width;
    list[0] = counts[own];
    slot[0] = own;
    var len = 1u;
    var total = list[0];
    for (var x = topology[params.in_offsets + node]; x < topology[params.in_offsets + node + 1u]; x++) {
        let sender = topology[params.in_senders + x];
        let s = (e * params.agents + sender) * params.width + topology[params.in_index + x];
        let c = counts[s];
        if (c > 0u) {
            list[len] = c;
            slot[len] = s;
            len += 1u;
            total += c;
        }
    }
    let q = topology[params.tables + topology[params.table_offsets + node] + total];
    if (q == 0u || total == 0u) {
        return;
    }
    // list[j] <= total, so list[j]·q / total fits in 32 bits.
    var remainder: array<u32, MAX_ENTRIES>;
    var share: array<u32, MAX_ENTRIES>;
    var given = 0u;
    for (var j = 0u; j < len; j++) {
        let division = div_wide(mul_wide(list[j], q), total);
        share[j] = division.x;
        remainder[j] = division.y;
        given += division.x;
    }
    let extra = q - given;
    for (var j = 0u; j < len; j++) {
        var rank = 0u;
        for (var i = 0u; i < len; i++) {
            rank += select(0u, 1u, remainder[i] > remainder[j] || (remainder[i] == remainder[j] && i < j));
        }
        rejects[slot[j]] = share[j] + select(0u, 1u, rank < extra);
    }
}

// Observation of agent `a` of env `e` for its env's current step `t`
// (after the step's bookkeeping, or a reset): `t == 0` starts an episode
// (the previous rate repeats 1, no previous forwards), otherwise the
// previous step is `t − 1`.
fn observe(e: u32, a: u32) {
    let t = state[e * STATE_WORDS + STEP];
    let first = t == 0u;
    let prev = select(t - 1u, 0u, first);
    let k = degree(a);
    let o = (e * params.agents + a) * params.obs_width;
    let c = (e * params.agents + a) * params.width;
    obs[o] = f32(rate(e, a, t));
    obs[o + 1u] = select(f32(rate(e, a, prev)), 1.0, first);
    for (var j = 1u; j <= k; j++) {
        obs[o + 1u + j] = select(f32(counts[c + j]), 0.0, first);
        obs[o + 1u + k + j] = select(f32(rejects[c + j]), 0.0, first);
    }
    for (var j = 2u + 2u * k; j < params.obs_width; j++) {
        obs[o + j] = 0.0;
    }
}

// The flat index of an invocation of a dispatch of `groups` workgroups
// (2-D when one dimension does not hold them all).
fn invocation(id: vec3<u32>, groups: vec3<u32>) -> u32 {
    return id.x + id.y * groups.x * 64u;
}

// A step is five kernels, each over every env (`…_env`) or every
// (env, agent) pair (`…_agent`, invocation e·agents + a): each invocation
// then runs at most one agent's loops, whatever the federation's size
// (software adapters end an invocation's loops after 65 535 iterations).
// They run in this order; a dispatch sees every write of the ones before.

// 1. Agent `a`'s split of its rate into counts, its rejects zeroed.
@compute @workgroup_size(64)
fn split_agent(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(id, groups);
    if (i >= params.envs * params.agents) {
        return;
    }
    let e = i / params.agents;
    let a = i % params.agents;
    let t = state[e * STATE_WORDS + STEP];
    split_into(i * params.width, degree(a) + 2u, rate(e, a, t));
    for (var j = 0u; j < params.width; j++) {
        rejects[i * params.width + j] = 0u;
    }
}

// 2. Node `node`'s rejects, written into its senders' reject slots (each
// slot has one receiver, so no two invocations write the same word).
@compute @workgroup_size(64)
fn serve_agent(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(id, groups);
    if (i >= params.envs * params.agents) {
        return;
    }
    serve(i / params.agents, i % params.agents);
}

// 3. Agent `a`'s reward: the WGSL twin of dfaas_core::reward::{numerator,
// of_agent} (tested against the CPU batch, which uses them).
@compute @workgroup_size(64)
fn reward_agent(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(id, groups);
    if (i >= params.envs * params.agents) {
        return;
    }
    let e = i / params.agents;
    let a = i % params.agents;
    let k = degree(a);
    let c = i * params.width;
    var forwarded = 0u;
    var forward_rejected = 0u;
    for (var j = 1u; j <= k; j++) {
        forwarded += counts[c + j];
        forward_rejected += rejects[c + j];
    }
    let numerator = i32(counts[c]) - i32(rejects[c]) + i32(forwarded) - i32(forward_rejected) - i32(counts[c + k + 1u]);
    let total = rate(e, a, state[e * STATE_WORDS + STEP]);
    rewards[i] = select(f32(numerator) / f32(total), 0.0, total == 0u);
}

// 4. Env `e`'s episode bookkeeping: the next step, or the end of the
// episode and the next trace of the pool.
@compute @workgroup_size(64)
fn advance_env(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = invocation(id, groups);
    if (e >= params.envs) {
        return;
    }
    let at = e * STATE_WORDS;
    let next = state[at + STEP] + 1u;
    if (next == params.max_steps) {
        state[at + STEP] = 0u;
        let low = state[at + EPISODE_LOW] + 1u;
        state[at + EPISODE_LOW] = low;
        state[at + EPISODE_HIGH] += select(0u, 1u, low == 0u);
        state[at + DONE] = 1u;
        // (entry + envs) mod pool_size, without overflow: entry and the
        // stride are both below pool_size.
        let entry = state[at + ENTRY];
        let gap = params.pool_size - params.pool_stride;
        state[at + ENTRY] = select(entry + params.pool_stride, entry - gap, entry >= gap);
    } else {
        state[at + STEP] = next;
        state[at + DONE] = 0u;
    }
}

// 5. Agent `a`'s observation of its env's new step (also after a reset).
@compute @workgroup_size(64)
fn observe_agent(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = invocation(id, groups);
    if (i >= params.envs * params.agents) {
        return;
    }
    observe(i / params.agents, i % params.agents);
}

// A reset is `reset_env`, then `observe_agent`.
@compute @workgroup_size(64)
fn reset_env(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let e = invocation(id, groups);
    if (e >= params.envs) {
        return;
    }
    let at = e * STATE_WORDS;
    state[at + STEP] = 0u;
    state[at + EPISODE_LOW] = 0u;
    state[at + EPISODE_HIGH] = 0u;
    state[at + DONE] = 0u;
    state[at + ENTRY] = e % params.pool_size;
}

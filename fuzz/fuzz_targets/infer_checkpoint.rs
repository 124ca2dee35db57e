//! Arbitrary bytes as a checkpoint's `policies.safetensors` for inference:
//! loading returns a policy or a typed error, and a loaded policy's
//! actions are errors or values — never a panic. Seed the corpus with a
//! real checkpoint's `policies.safetensors`.
#![no_main]

use dfaas_infer::{Policy, explore_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut policy = match Policy::from_safetensors(data) {
        Ok(policy) => policy,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let observation = [f32::from(data.first().copied().unwrap_or(0)); 128];
    let mut action = [0f32; 64];
    for agent in 0..policy.agents().len() {
        let (own, k) = (
            policy.agents()[agent].observation_len(),
            policy.agents()[agent].action_len(),
        );
        let _ = policy.act(agent, &observation[..own], &mut action[..k]);
        let mut rng = explore_stream(1, agent as u64);
        let _ = policy.act_explore(agent, &observation[..own], &mut rng, &mut action[..k]);
        // Wrong lengths are errors, not panics.
        let _ = policy.act(agent, &observation[..own + 1], &mut action[..k]);
    }
    // Any node (an agnostic policy; others answer with an error).
    let k = usize::from(data.last().copied().unwrap_or(0)) % 64;
    let _ = policy.act_node(
        &observation[..2 + 2 * k.min(62)],
        None,
        &mut action[..2 + k.min(62)],
    );
    let _ = policy.act_node(&observation[..2 * k + 1], None, &mut action[..k.max(1)]);
    // Gossip of any length (a policy trained with gossip needs 1 + 3k
    // values, one trained without takes none).
    let _ = policy.act_node(
        &observation[..2 + 2 * k.min(62)],
        Some(&observation[..(1 + 3 * k).min(observation.len())]),
        &mut action[..2 + k.min(62)],
    );
});

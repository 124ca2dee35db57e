//! Arbitrary action values (NaN, ±∞, negative, huge, wrong length) stepped
//! through every topology shape: typed errors or valid steps, never a
//! panic, and the conservation of requests holds after every valid step.
#![no_main]

use dfaas_core::{Env, EnvConfig, EnvModel};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let topologies: [&[&str]; 4] = [
        &["a b"],
        &["a b c", "b c"],
        &["a b c", "d"],
        &["n0 n1 n2", "n3 n2 n0", "n1 n4"],
    ];
    let lines = topologies[usize::from(data[0]) % topologies.len()];
    let config = EnvConfig { max_steps: 8, ..EnvConfig::with_network(lines) };
    let Ok(built) = config.build() else { return };
    let Ok(model) = EnvModel::new(&built) else { return };
    let width = model.num_agents() * model.action_width();
    let mut env = Env::new(model);
    if env.reset(Some(u64::from(data[1]))).is_err() {
        return;
    }
    let values: Vec<f32> = data[2..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    for chunk in values.chunks(width.max(1)) {
        match env.step(chunk) {
            Ok(outcome) => {
                assert!(outcome.rewards.iter().all(|r| (-1.0..=1.0).contains(r)));
                let done = outcome.done;
                let m = env.metrics();
                let w = env.model().action_width();
                for a in 0..env.model().num_agents() {
                    let k = env.model().degree(a);
                    assert_eq!(m.action[a * w..a * w + k + 2].iter().sum::<u32>(), m.input_rate[a]);
                }
                if done {
                    let _ = env.reset(None);
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});

//! Arbitrary bytes drive environments built once per process: resets with
//! any seed, steps with any action values (NaN, ±∞, negative, huge, wrong
//! length), metrics records of any shape, and restores of saved states
//! with bytes written over them. Typed errors or valid steps, never a
//! panic; requests are conserved and rewards stay in [−1, 1] after every
//! valid step. Each batch has a twin stepped alike with the metrics: 9
//! envs, so both run one 8-env lane block and one env by the per-env
//! step, and the twin must end every step in the same state (recording
//! changes nothing).
#![no_main]

use dfaas_core::{BatchEnv, BatchMetrics, EnvConfig, EnvModel};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

/// Envs per batch: one lane block and one more.
const ENVS: usize = 9;

/// One batch of `ENVS` envs per topology shape (isolated node, uneven
/// degrees), twice: the plain step's, and its twin with metrics.
fn batches() -> Vec<(BatchEnv, BatchEnv)> {
    let topologies: [&[&str]; 4] = [
        &["a b"],
        &["a b c", "b c"],
        &["a b c", "d"],
        &["n0 n1 n2", "n3 n2 n0", "n1 n4"],
    ];
    topologies
        .iter()
        .map(|lines| {
            let config = EnvConfig {
                max_steps: 8,
                ..EnvConfig::with_network(lines)
            };
            let model = EnvModel::new(&config.build().expect("valid config")).expect("model");
            let batch = BatchEnv::new(model, ENVS).expect("a small batch");
            (batch.clone(), batch)
        })
        .collect()
}

thread_local! {
    static BATCHES: RefCell<Vec<(BatchEnv, BatchEnv)>> = RefCell::new(batches());
}

/// Reads little-endian values off the front of the input.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn word(&mut self) -> Option<u32> {
        let (w, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_le_bytes(*w))
    }
}

fn check_step(batch: &BatchEnv, metrics: &BatchMetrics) {
    let model = batch.model();
    let w = model.action_width();
    assert!(batch.rewards().iter().all(|r| (-1.0..=1.0).contains(r)));
    assert!(metrics.env(metrics.num_envs()).is_err());
    for m in &metrics.envs() {
        for a in 0..model.num_agents() {
            let k = model.degree(a);
            assert_eq!(
                m.action[a * w..a * w + k + 2].iter().sum::<u32>(),
                m.input_rate[a]
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let Some(which) = input.byte() else { return };
    BATCHES.with(|cell| {
        let mut batches = cell.borrow_mut();
        let count = batches.len();
        let (batch, twin) = &mut batches[usize::from(which) % count];
        let seed = u64::from(input.word().unwrap_or(0));
        batch.reset(seed).expect("synthetic episodes always start");
        twin.reset(seed).expect("synthetic episodes always start");
        let stride = batch.model().num_agents() * batch.model().action_width();
        let mut metrics = BatchMetrics::default();
        while let Some(op) = input.byte() {
            match op % 4 {
                // A step with `len` actions (often the right number).
                0 | 1 => {
                    let len = match input.byte().unwrap_or(0) {
                        0..=200 => ENVS * stride,
                        other => usize::from(other) % (3 * stride),
                    };
                    let actions: Vec<f32> = (0..len)
                        .map(|_| f32::from_bits(input.word().unwrap_or(0x3e80_0000)))
                        .collect();
                    let plain = batch.step(&actions);
                    let recorded = twin.step_with_metrics(&actions, &mut metrics);
                    assert_eq!(plain, recorded);
                    assert_eq!(
                        batch.state(),
                        twin.state(),
                        "recording metrics changes nothing"
                    );
                    if recorded.is_ok() {
                        check_step(twin, &metrics);
                    }
                }
                // Metrics of another shape (one env) are resized.
                2 => {
                    let actions = vec![0.25f32; ENVS * stride];
                    let mut one = BatchMetrics::new(twin.model(), 1);
                    let plain = batch.step(&actions);
                    let recorded = twin.step_with_metrics(&actions, &mut one);
                    assert_eq!(plain, recorded);
                    assert_eq!(batch.state(), twin.state());
                    if recorded.is_ok() {
                        assert_eq!(one.num_envs(), ENVS);
                        check_step(twin, &one);
                    }
                }
                // Restore the batch's own state with one value overwritten.
                _ => {
                    let mut state = batch.state();
                    let value = input.word().unwrap_or(u32::MAX);
                    let rates = state.input_rates.len();
                    match input.byte().unwrap_or(0) % 4 {
                        0 => state.input_rates[value as usize % rates] = value,
                        1 => state.steps[value as usize % ENVS] = value as usize,
                        2 => state.evaluation_cursor[value as usize % ENVS] = value as usize,
                        _ => {
                            state.obs.truncate(value as usize % (state.obs.len() + 1));
                        }
                    }
                    let before = batch.state();
                    if batch.restore(state.clone()).is_err() {
                        assert_eq!(batch.state(), before, "a refused state changes nothing");
                    } else {
                        twin.restore(state)
                            .expect("the same state restores the twin");
                    }
                    // A restored batch may be past its episode: reset then.
                    let actions = vec![0.25f32; ENVS * stride];
                    let plain = batch.step(&actions);
                    let recorded = twin.step_with_metrics(&actions, &mut metrics);
                    assert_eq!(plain, recorded);
                    if plain.is_err() {
                        batch.reset(seed).expect("synthetic episodes always start");
                        twin.reset(seed).expect("synthetic episodes always start");
                    }
                    assert_eq!(batch.state(), twin.state());
                }
            }
        }
    });
});

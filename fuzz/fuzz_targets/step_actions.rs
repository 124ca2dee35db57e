//! Arbitrary bytes drive environments built once per process: resets with
//! any seed, steps with any action values (NaN, ±∞, negative, huge, wrong
//! length), metrics records of any shape, and restores of saved states
//! with bytes written over them. Typed errors or valid steps, never a
//! panic; requests are conserved and rewards stay in [−1, 1] after every
//! valid step.
#![no_main]

use dfaas_core::{BatchEnv, EnvConfig, EnvModel, StepMetrics};
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;

/// One batch of 2 envs per topology shape (isolated node, uneven degrees).
fn batches() -> Vec<BatchEnv> {
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
            BatchEnv::new(model, 2).expect("a batch of 2")
        })
        .collect()
}

thread_local! {
    static BATCHES: RefCell<Vec<BatchEnv>> = RefCell::new(batches());
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

fn check_step(batch: &BatchEnv, metrics: &[StepMetrics]) {
    let model = batch.model();
    let w = model.action_width();
    assert!(batch.rewards().iter().all(|r| (-1.0..=1.0).contains(r)));
    for m in metrics {
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
        let batch = &mut batches[usize::from(which) % count];
        let seed = u64::from(input.word().unwrap_or(0));
        batch.reset(seed).expect("synthetic episodes always start");
        let stride = batch.model().num_agents() * batch.model().action_width();
        let mut metrics = vec![StepMetrics::default(); 2];
        while let Some(op) = input.byte() {
            match op % 4 {
                // A step with `len` actions (often the right number).
                0 | 1 => {
                    let len = match input.byte().unwrap_or(0) {
                        0..=200 => 2 * stride,
                        other => usize::from(other) % (3 * stride),
                    };
                    let actions: Vec<f32> = (0..len)
                        .map(|_| f32::from_bits(input.word().unwrap_or(0x3e80_0000)))
                        .collect();
                    if batch.step_with_metrics(&actions, &mut metrics).is_ok() {
                        check_step(batch, &metrics);
                    }
                }
                // A metrics slice of the wrong length.
                2 => {
                    let actions = vec![0.25f32; 2 * stride];
                    let mut one = vec![StepMetrics::default()];
                    assert!(batch.step_with_metrics(&actions, &mut one).is_err());
                }
                // Restore the batch's own state with one value overwritten.
                _ => {
                    let mut state = batch.state();
                    let value = input.word().unwrap_or(u32::MAX);
                    let rates = state.input_rates.len();
                    match input.byte().unwrap_or(0) % 4 {
                        0 => state.input_rates[value as usize % rates] = value,
                        1 => state.steps[value as usize % 2] = value as usize,
                        2 => state.evaluation_cursor[value as usize % 2] = value as usize,
                        _ => {
                            state.obs.truncate(value as usize % (state.obs.len() + 1));
                        }
                    }
                    let before = batch.state();
                    if batch.restore(state).is_err() {
                        assert_eq!(batch.state(), before, "a refused state changes nothing");
                    }
                    // A restored batch may be past its episode: reset then.
                    if batch.step(&vec![0.25f32; 2 * stride]).is_err() {
                        batch.reset(seed).expect("synthetic episodes always start");
                    }
                }
            }
        }
    });
});

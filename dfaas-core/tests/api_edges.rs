//! The public entry points driven with arbitrary sizes and values: each
//! returns an error or a result, never panics (tests run in release, where
//! integer overflow would wrap silently, so a wrong result is checked too).

use dfaas_core::rejects::{RejectArithmetic, distribute_rejects};
use dfaas_core::reward;
use dfaas_core::split::split_requests;
use dfaas_core::{BatchEnv, EnvConfig, EnvModel, StepMetrics, network_delay_ms};
use proptest::prelude::*;

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => 0.0f32..=1.0,
        1 => any::<f32>(),
        1 => Just(f32::NAN),
        1 => Just(-0.5f32),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn split_requests_never_panics(
        action in prop::collection::vec(any_f32(), 0..80),
        counts_len in 0usize..80,
        rate in prop_oneof![0u32..1000, any::<u32>()],
    ) {
        let mut counts = vec![0u32; counts_len];
        if split_requests(&action, rate, &mut counts).is_ok() {
            prop_assert_eq!(counts.iter().map(|&c| u64::from(c)).sum::<u64>(), u64::from(rate));
        }
    }

    #[test]
    fn distribute_rejects_never_panics(
        incoming in prop::collection::vec(prop_oneof![0u32..2000, any::<u32>()], 0..80),
        out_len in 0usize..80,
        total_delta in -3i64..3,
        rejects in prop_oneof![0u32..2000, any::<u32>()],
        reference in any::<bool>(),
    ) {
        let sum: u64 = incoming.iter().map(|&e| u64::from(e)).sum();
        let total = u32::try_from((sum as i64 + total_delta).max(0)).unwrap_or(u32::MAX);
        let mut out = vec![0u32; out_len];
        let arithmetic = if reference { RejectArithmetic::Reference } else { RejectArithmetic::Exact };
        if distribute_rejects(arithmetic, &incoming, total, rejects, &mut out).is_ok() {
            prop_assert_eq!(out.iter().map(|&r| u64::from(r)).sum::<u64>(), u64::from(rejects));
            prop_assert!(out.iter().zip(&incoming).all(|(r, e)| r <= e));
        }
    }

    #[test]
    fn reward_never_panics(
        split in prop::collection::vec(any::<u32>(), 0..70),
        rejects in prop::collection::vec(any::<u32>(), 0..70),
        rate in any::<u32>(),
        bytes in any::<u64>(),
        delay in any::<f64>(),
        bandwidth in any::<f64>(),
    ) {
        if let Ok(numerator) = reward::numerator(&split, &rejects) {
            let _ = reward::of_agent(numerator, rate);
            let _ = reward::of_agent_f64(numerator, rate);
        }
        let _ = network_delay_ms(delay, bytes, bandwidth);
    }

    #[test]
    fn metrics_records_of_any_shape_never_panic(
        rates in prop::collection::vec(0u32..200, 0..6),
        counts in prop::collection::vec(0u32..200, 0..20),
        rejects in prop::collection::vec(0u32..200, 0..20),
        obs in prop::collection::vec(any::<f32>(), 0..20),
        step in any::<usize>(),
    ) {
        let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
        let mut m = StepMetrics::default();
        let _ = m.record(&model, step % model.max_steps(), &obs, &rates, &counts, &rejects);
    }

    #[test]
    fn restoring_arbitrary_states_never_panics(
        field in 0usize..5,
        index in any::<usize>(),
        value in any::<u32>(),
    ) {
        let model = EnvModel::new(&EnvConfig { max_steps: 6, ..EnvConfig::default() }.build().unwrap()).unwrap();
        let mut batch = BatchEnv::new(model, 2).unwrap();
        batch.reset(1).unwrap();
        let before = batch.state();
        let mut state = before.clone();
        match field {
            0 => { let n = state.input_rates.len(); state.input_rates[index % n] = value; }
            1 => state.steps[index % 2] = value as usize,
            2 => state.evaluation_cursor[index % 2] = value as usize,
            3 => state.rewards.truncate(index % 5),
            _ => state.masters.truncate(index % 3),
        }
        if batch.restore(state).is_err() {
            prop_assert_eq!(batch.state(), before);
        }
        let actions = vec![0.25f32; 2 * batch.model().num_agents() * batch.model().action_width()];
        let _ = batch.step(&actions);
    }
}

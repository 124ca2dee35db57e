//! The public entry points driven with arbitrary sizes and values: each
//! returns an error or a result, never panics (tests run in release, where
//! integer overflow would wrap silently, so a wrong result is checked too).

use dfaas_core::rejects::{RejectArithmetic, distribute_rejects};
use dfaas_core::reward;
use dfaas_core::split::split_requests;
use dfaas_core::{
    BatchEnv, BatchMetrics, EnvConfig, EnvModel, StepError, StepMetrics, network_delay_ms,
};
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

    /// A record of any shape set into any env: the record reads back, or a
    /// typed error and nothing changed.
    #[test]
    fn batch_metrics_take_records_of_any_shape_or_refuse_them(
        lengths in prop::collection::vec(prop_oneof![12 => Just(None), 1 => (0usize..12).prop_map(Some)], 19),
        env in 0usize..6,
        value in any::<u32>(),
        time in any::<f64>(),
        step in any::<usize>(),
    ) {
        let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
        let mut metrics = BatchMetrics::new(&model, 4);
        let mut record = StepMetrics::new(&model);
        record.step = step;
        let counts = [
            &mut record.input_rate,
            &mut record.action,
            &mut record.incoming_rate,
            &mut record.incoming_rate_local,
            &mut record.incoming_rate_forward,
            &mut record.incoming_rate_reject,
            &mut record.incoming_rate_local_reject,
            &mut record.incoming_rate_forward_reject,
            &mut record.forward_reject_rate,
            &mut record.forward_rejects,
        ];
        for (field, length) in counts.into_iter().zip(&lengths) {
            let length = length.unwrap_or(field.len());
            field.clear();
            field.resize(length, value);
        }
        let times = [
            &mut record.reward,
            &mut record.response_time_avg_local,
            &mut record.response_time_avg_forwarded,
            &mut record.response_time_avg_forwarded_to,
            &mut record.network_forward_delay_avg,
            &mut record.network_forward_delay_avg_to,
            &mut record.network_return_delay_avg,
            &mut record.network_return_delay_avg_to,
        ];
        for (field, length) in times.into_iter().zip(&lengths[10..]) {
            let length = length.unwrap_or(field.len());
            field.clear();
            field.resize(length, time);
        }
        let observation = lengths[18].unwrap_or(record.observation.len());
        record.observation = vec![time as f32; observation];
        let before = metrics.clone();
        match metrics.set_env(env, &record) {
            Ok(()) => {
                let back = metrics.env(env).unwrap();
                // Bit for bit (a NaN time compares unequal to itself).
                prop_assert_eq!(format!("{back:?}"), format!("{record:?}"));
            }
            Err(StepError::EnvIndex { .. } | StepError::InputLength { .. }) => {
                prop_assert_eq!(format!("{metrics:?}"), format!("{before:?}"));
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
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

    /// A step's state recorded again gives the batch's own metrics; the
    /// same state with one value made inconsistent is refused, naming it,
    /// and leaves the record untouched.
    #[test]
    fn recorded_step_states_match_the_batch_and_corruptions_are_refused(
        weights in prop::collection::vec(0.0f32..1.0, 6),
        steps in 1usize..6,
        target in any::<usize>(),
        delta in 1u32..1000,
        kind in 0usize..3,
    ) {
        let model = EnvModel::new(&EnvConfig::default().build().unwrap()).unwrap();
        let (n, w) = (model.num_agents(), model.action_width());
        prop_assert_eq!(weights.len(), n * w);
        let mut batch = BatchEnv::new(model.clone(), 1).unwrap();
        batch.reset(7).unwrap();
        let mut metrics = BatchMetrics::default();
        for _ in 0..steps {
            batch.step_with_metrics(&weights, &mut metrics).unwrap();
        }
        let m = &metrics.env(0).unwrap();
        let mut again = StepMetrics::default();
        again.record(&model, m.step, &m.observation, &m.input_rate, &m.action, &m.forward_rejects).unwrap();
        prop_assert_eq!(&again, m);

        let (mut rates, mut counts, mut rejects) = (m.input_rate.clone(), m.action.clone(), m.forward_rejects.clone());
        let agent = target % n;
        let entry = agent * w + target % (model.degree(agent) + 1);
        let past_table = model.perf_table(agent).max_total() + 1;
        match kind {
            0 => counts[agent * w + target % (model.degree(agent) + 2)] += delta,
            1 => rejects[entry] = counts[entry] + delta,
            _ => {
                // A consistent split whose node total is past the table.
                rates[agent] += past_table;
                counts[agent * w] += past_table;
            }
        }
        let result = again.record(&model, m.step, &m.observation, &rates, &counts, &rejects);
        match (kind, result) {
            (0, Err(StepError::SplitTotal { agent: a, .. })) => prop_assert_eq!(a, agent),
            (1, Err(StepError::InputValue { field: "rejects", index, .. })) => prop_assert_eq!(index, entry),
            (2, Err(StepError::InputValue { field: "incoming_rate", index, .. })) => prop_assert_eq!(index, agent),
            (kind, other) => prop_assert!(false, "corruption {kind}: {other:?}"),
        }
        prop_assert_eq!(&again, m);
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

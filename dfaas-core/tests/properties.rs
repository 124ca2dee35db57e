//! Invariants over random topologies, configurations, traces and actions:
//! requests conserved at every node and step, rejects never exceed what
//! arrives, rewards in [−1, 1], observations in their bounds, same seed ⇒
//! same trajectory, and `BatchEnv` ≡ N × `Env`.

use dfaas_core::rng::env_master_seed;
use dfaas_core::{
    BatchEnv, Env, EnvConfig, EnvModel, PerfModelRegime, RejectArithmetic, StepError,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A random scenario: topology lines, configuration and an action stream.
#[derive(Debug, Clone)]
struct Scenario {
    config: EnvConfig,
    /// Raw action entries, reused cyclically (finite, possibly off the simplex).
    actions: Vec<f32>,
}

fn topology() -> impl Strategy<Value = Vec<String>> {
    (1usize..=6).prop_flat_map(|n| {
        proptest::collection::vec(any::<bool>(), n * (n - 1) / 2).prop_map(move |edges| {
            let mut lines: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let mut e = 0;
            for (i, line) in lines.iter_mut().enumerate() {
                for j in i + 1..n {
                    if edges[e] {
                        line.push_str(&format!(" n{j}"));
                    }
                    e += 1;
                }
            }
            lines
        })
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        topology(),
        1i64..=30,
        0usize..3,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(
            prop_oneof![4 => 0.0f32..1.0, 1 => -1.0f32..2.0, 1 => Just(0.0f32)],
            1..64,
        ),
        proptest::collection::vec(0i64..200, 1..64),
    )
        .prop_map(
            |(network, max_steps, method, build_seed, seconds, exact, actions, rates)| {
                let names: Vec<String> = network
                    .iter()
                    .map(|l| l.split_whitespace().next().unwrap().to_string())
                    .collect();
                let mut config = EnvConfig {
                    max_steps,
                    build_seed,
                    ..EnvConfig::with_network(&network)
                };
                config.perfmodel_regime = if seconds {
                    PerfModelRegime::Seconds
                } else {
                    PerfModelRegime::Reference
                };
                config.reject_arithmetic = if exact {
                    RejectArithmetic::Exact
                } else {
                    RejectArithmetic::Reference
                };
                config.input_rate_method = match method {
                    0 => "synthetic-sinusoidal",
                    1 => "synthetic-normal",
                    _ => "static",
                }
                .to_string();
                if method == 2 {
                    // Static traces, zeros included (the reference crashes on 0).
                    let traces: BTreeMap<String, Vec<i64>> = names
                        .iter()
                        .enumerate()
                        .map(|(a, n)| {
                            (
                                n.clone(),
                                (0..max_steps as usize)
                                    .map(|t| rates[(a * 7 + t) % rates.len()])
                                    .collect(),
                            )
                        })
                        .collect();
                    config.input_rate_trace = Some(traces);
                }
                Scenario { config, actions }
            },
        )
}

fn actions_for(model: &EnvModel, stream: &[f32], step: usize) -> Vec<f32> {
    let len = model.num_agents() * model.action_width();
    (0..len)
        .map(|i| stream[(i * 31 + step * 7) % stream.len()])
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_at_every_node_and_step(s in scenario(), seed in any::<u64>()) {
        let built = s.config.build().unwrap();
        let model = EnvModel::new(&built).unwrap();
        let (n, w, ow) = (model.num_agents(), model.action_width(), model.obs_width());
        let max_rate = built.input_rate().max_rate().unwrap();
        let mut env = Env::new(model.clone());
        env.reset(Some(seed)).unwrap();
        for step in 0..built.max_steps() {
            let obs_before = env.observations().to_vec();
            let actions = actions_for(&model, &s.actions, step);
            let outcome = env.step(&actions).unwrap();
            let done = outcome.done;
            let outcome_rewards = outcome.rewards.to_vec();
            prop_assert_eq!(done, step + 1 == built.max_steps());
            for &r in &outcome_rewards {
                prop_assert!((-1.0..=1.0).contains(&r), "reward {}", r);
            }
            let m = env.metrics();
            prop_assert_eq!(&m.observation, &obs_before);
            for a in 0..n {
                let k = model.degree(a);
                let split = &m.action[a * w..a * w + k + 2];
                prop_assert_eq!(split.iter().sum::<u32>(), m.input_rate[a], "split conserves the input");
                // What a node receives: its local share plus the forwards sent to it.
                prop_assert!(m.incoming_rate_reject[a] <= m.incoming_rate[a]);
                prop_assert!(m.incoming_rate_local_reject[a] <= m.incoming_rate_local[a]);
                prop_assert!(m.incoming_rate_forward_reject[a] <= m.incoming_rate_forward[a]);
                // Independently of the step's CSR lists: from the topology,
                // node a receives its own local share and, from every agent
                // b that has a as its i-th neighbour, b's i-th forward.
                let topology = built.topology();
                let received: u32 = (0..n)
                    .filter_map(|b| {
                        let i = topology.neighbours(b).iter().position(|&x| x as usize == a)?;
                        Some(m.action[b * w + 1 + i])
                    })
                    .sum();
                prop_assert_eq!(m.incoming_rate[a], split[0] + received);
                // Its rejects are its table's at that total.
                let table = model.perf_table(a).rejects();
                prop_assert_eq!(m.incoming_rate_reject[a], table[m.incoming_rate[a] as usize]);
                // The reward, rewritten with l + Σf + r = R:
                // (R − 2r − local rejects − forward rejects) / R.
                let rate = f64::from(m.input_rate[a]);
                if rate > 0.0 {
                    let lost = 2 * split[k + 1] + m.forward_rejects[a * w] + m.forward_reject_rate[a];
                    prop_assert!((m.reward[a] - (rate - f64::from(lost)) / rate).abs() < 1e-12);
                    prop_assert!((f64::from(outcome_rewards[a]) - m.reward[a]).abs() < 1e-6);
                }
                for (rejected, sent) in m.forward_rejects[a * w + 1..=a * w + k].iter().zip(&split[1..=k]) {
                    prop_assert!(rejected <= sent);
                }
                prop_assert!((-1.0..=1.0).contains(&m.reward[a]));
                // At step 0 `prev_input_rate` is 1 (spec §5), above an
                // all-zero static trace's largest rate.
                for x in &obs_before[a * ow..(a + 1) * ow] {
                    prop_assert!(x.is_finite() && *x >= 0.0 && *x <= max_rate.max(1) as f32);
                }
            }
            let sent: u32 = (0..n).map(|a| m.action[a * w + 1..=a * w + model.degree(a)].iter().sum::<u32>()).sum();
            let received: u32 = m.incoming_rate_forward.iter().sum();
            prop_assert_eq!(sent, received, "every forward arrives somewhere");
            let fr_sent: u32 = m.forward_reject_rate.iter().sum();
            let fr_received: u32 = m.incoming_rate_forward_reject.iter().sum();
            prop_assert_eq!(fr_sent, fr_received);
        }
    }

    #[test]
    fn same_seed_same_trajectory_and_batch_equals_single_envs(s in scenario(), seed in any::<u64>(), num_envs in 1usize..4) {
        let built = s.config.build().unwrap();
        let model = EnvModel::new(&built).unwrap();
        let (n, ow) = (model.num_agents(), model.obs_width());
        let mut batch = BatchEnv::new(model.clone(), num_envs).unwrap();
        batch.reset(seed).unwrap();
        let mut singles: Vec<Env> = (0..num_envs).map(|_| Env::new(model.clone())).collect();
        let mut twins: Vec<Env> = (0..num_envs).map(|_| Env::new(model.clone())).collect();
        for (i, (e, t)) in singles.iter_mut().zip(&mut twins).enumerate() {
            e.reset(Some(env_master_seed(seed, i as u64))).unwrap();
            t.reset(Some(env_master_seed(seed, i as u64))).unwrap();
        }
        // Two and a half episodes, crossing auto-resets (with their terminal
        // observations).
        for step in 0..(2 * built.max_steps() + built.max_steps() / 2 + 1) {
            let per_env: Vec<Vec<f32>> = (0..num_envs).map(|i| actions_for(&model, &s.actions, step * 3 + i)).collect();
            batch.step(&per_env.concat()).unwrap();
            for i in 0..num_envs {
                let outcome = singles[i].step(&per_env[i]).unwrap();
                let (rewards, done) = (outcome.rewards.to_vec(), outcome.done);
                let twin = twins[i].step(&per_env[i]).unwrap();
                prop_assert_eq!(twin.rewards, &rewards[..], "same seed, same rewards");
                prop_assert_eq!(twin.observations, singles[i].observations());
                prop_assert_eq!(&batch.rewards()[i * n..(i + 1) * n], &rewards[..]);
                prop_assert_eq!(batch.dones()[i], done);
                if done {
                    // The terminal observation, kept across the auto-reset.
                    prop_assert_eq!(&batch.final_observations()[i * n * ow..(i + 1) * n * ow], singles[i].observations());
                    singles[i].reset(None).unwrap();
                    twins[i].reset(None).unwrap();
                }
                prop_assert_eq!(&batch.observations()[i * n * ow..(i + 1) * n * ow], singles[i].observations());
                prop_assert_eq!(batch.episode_seed(i), singles[i].episode_seed());
            }
        }
    }

    #[test]
    fn bad_actions_are_refused_and_change_nothing(s in scenario(), seed in any::<u64>(), bad in prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)]) {
        let built = s.config.build().unwrap();
        let model = EnvModel::new(&built).unwrap();
        let mut env = Env::new(model.clone());
        env.reset(Some(seed)).unwrap();
        let before = env.observations().to_vec();
        let mut actions = actions_for(&model, &s.actions, 0);
        actions[0] = bad;
        let refused = env.step(&actions).unwrap_err();
        prop_assert!(matches!(refused, StepError::NonFiniteAction { index: 0, .. }), "{:?}", refused);
        prop_assert_eq!(env.observations(), &before[..]);
        prop_assert_eq!(env.step_index(), 0);
        let short = env.step(&actions[1..]).unwrap_err();
        prop_assert!(matches!(short, StepError::ActionLength { .. }), "{:?}", short);
    }
}

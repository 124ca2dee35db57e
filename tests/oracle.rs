//! The oracle on the embedded default scenario: at every step of every
//! evaluation episode its team reward (as the environment reports it) is
//! at least that of every other controller — the heuristics and a PPO
//! policy — and equals what its search computed (the actions it writes
//! reproduce the splits it chose).

use dfaas::core::{BatchEnv, EnvModel};
use dfaas::policies::backend::CpuBackend;
use dfaas::policies::baselines;
use dfaas::policies::controller::{Controller, evaluate_with, evaluation_env};
use dfaas::policies::oracle::{Oracle, OracleSettings, SplitLog};
use dfaas::policies::ppo::{PpoConfig, Trainer};
use std::collections::BTreeMap;

const EPISODES: usize = 2;

/// A team reward per `(env, step)`.
type StepRewards = BTreeMap<(usize, usize), f64>;

fn fresh_env() -> BatchEnv {
    evaluation_env(&dfaas::default_config(), EPISODES, 17).unwrap()
}

/// Runs `controller`, logging its splits into `log` (when given); returns
/// each `(env, step)`'s team reward (sum of the agents' rewards).
fn run(controller: &mut dyn Controller, log: Option<&mut SplitLog>) -> StepRewards {
    let mut rewards = BTreeMap::new();
    let mut log = log;
    evaluate_with(controller, &mut fresh_env(), |env, _, m| {
        rewards.insert((env, m.step), m.reward.iter().sum::<f64>());
        if let Some(log) = log.as_deref_mut() {
            log.record(env, m);
        }
        Ok(())
    })
    .unwrap();
    rewards
}

#[test]
fn the_oracle_is_at_least_every_controller_at_every_step() {
    let model = EnvModel::new(&dfaas::default_config().build().unwrap()).unwrap();
    let config = PpoConfig {
        iterations: 3,
        ..PpoConfig::default()
    };
    let mut trainer = Trainer::new(model.clone(), config, CpuBackend::new()).unwrap();
    for _ in 0..3 {
        trainer.train_iteration().unwrap();
    }
    let mut controllers: Vec<Box<dyn Controller>> = vec![Box::new(trainer.controller().unwrap())];
    controllers.extend(baselines::all(3));
    let mut log = SplitLog::new();
    let others: Vec<(String, StepRewards)> = controllers
        .iter_mut()
        .map(|c| (c.name().to_string(), run(c.as_mut(), Some(&mut log))))
        .collect();
    let mut oracle = Oracle::new(OracleSettings::default(), log);
    let rewards = run(&mut oracle, None);
    let steps = model.max_steps();
    assert_eq!(rewards.len(), EPISODES * steps);
    // The search's own values, `[step][env]`, are the env's rewards.
    let searches = oracle.searches();
    assert_eq!(searches.len(), EPISODES * steps);
    let mut improved = 0;
    for (i, search) in searches.iter().enumerate() {
        let (step, env) = (i / EPISODES, i % EPISODES);
        assert_eq!(
            search.team_reward,
            rewards[&(env, step)],
            "env {env} step {step}"
        );
        improved += usize::from(search.team_reward > search.best_logged);
    }
    for (name, theirs) in &others {
        for (key, &value) in theirs {
            assert!(
                rewards[key] >= value,
                "{name} at (env, step) {key:?}: {value} above the oracle's {}",
                rewards[key]
            );
        }
    }
    // The search does more than pick the best logged split.
    assert!(improved > steps, "improved on {improved} steps only");
}

//! [`Controller`]: anything that turns a batch of observations into a batch
//! of actions — the trained PPO policy and every baseline — and the
//! evaluation that runs one over the environment's evaluation episodes:
//! its seeds ([`evaluation_seed`]), its environments ([`evaluation_env`]),
//! its report ([`write_evaluation_csv`]).

use crate::error::{ControlError, EvaluateError, ShapeError, length, product};
use dfaas_core::{BatchEnv, EnvConfig, EnvModel, StepMetrics};
use std::path::Path;

/// A policy acting on whole batches of environments.
pub trait Controller {
    /// Name used in reports (`ppo`, `all_local`, …).
    fn name(&self) -> &str;

    /// Writes actions `[env][agent][action_width]` for observations
    /// `[env][agent][obs_width]` of `model`'s layout.
    ///
    /// # Errors
    /// [`ControlError::Shape`] when the slices do not fit `model`
    /// ([`check_batch`]); nothing is written then.
    fn act(
        &mut self,
        model: &EnvModel,
        observations: &[f32],
        actions: &mut [f32],
    ) -> Result<(), ControlError>;
}

/// The number of envs of a batch of `observations` and `actions` of
/// `model`'s layout.
///
/// # Errors
/// [`ShapeError`] when `observations` is not a whole number of envs or
/// `actions` does not hold as many.
pub fn check_batch(
    model: &EnvModel,
    observations: &[f32],
    actions: &[f32],
) -> Result<usize, ShapeError> {
    let per_env = model.num_agents() * model.obs_width();
    let envs = observations.len() / per_env.max(1);
    length("observations", envs * per_env, observations.len())?;
    let wide = product("actions", &[envs, model.num_agents(), model.action_width()])?;
    length("actions", wide, actions.len())?;
    Ok(envs)
}

/// Aggregates of a controller over evaluation episodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Controller name.
    pub policy: String,
    /// Mean per-agent per-step reward.
    pub mean_reward: f64,
    /// Rejected requests (reject actions + model rejects), % of input.
    pub reject_pct: f64,
    /// Requests the split kept local, % of input.
    pub local_pct: f64,
    /// Requests the split forwarded, % of input.
    pub forward_pct: f64,
    /// Per agent: (mean reward, local %, forward %, reject %).
    pub per_agent: Vec<AgentShare>,
}

/// One agent's share of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AgentShare {
    /// Mean per-step reward.
    pub mean_reward: f64,
    /// % of its input it kept local.
    pub local_pct: f64,
    /// % it forwarded.
    pub forward_pct: f64,
    /// % of its input rejected (its reject action + model rejects of its
    /// local and forwarded requests).
    pub reject_pct: f64,
}

/// Running sums while stepping.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    steps: u64,
    reward: Vec<f64>,
    input: Vec<u64>,
    local: Vec<u64>,
    forward: Vec<u64>,
    rejected: Vec<u64>,
}

impl Tally {
    /// Sums for `agents` agents.
    #[must_use]
    pub fn new(agents: usize) -> Self {
        Self {
            steps: 0,
            reward: vec![0.0; agents],
            input: vec![0; agents],
            local: vec![0; agents],
            forward: vec![0; agents],
            rejected: vec![0; agents],
        }
    }

    /// Adds one env step.
    pub fn add(&mut self, model: &EnvModel, m: &StepMetrics) {
        let w = model.action_width();
        self.steps += 1;
        for a in 0..model.num_agents() {
            let k = model.degree(a);
            let split = &m.action[a * w..a * w + k + 2];
            self.reward[a] += m.reward[a];
            self.input[a] += u64::from(m.input_rate[a]);
            self.local[a] += u64::from(split[0]);
            self.forward[a] += split[1..=k].iter().map(|&c| u64::from(c)).sum::<u64>();
            self.rejected[a] += u64::from(split[k + 1])
                + u64::from(m.incoming_rate_local_reject[a])
                + u64::from(m.forward_reject_rate[a]);
        }
    }

    /// Env steps tallied so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Each agent's reward summed over the env steps so far.
    #[must_use]
    pub fn reward_sums(&self) -> &[f64] {
        &self.reward
    }

    /// Each agent's input requests so far.
    #[must_use]
    pub fn input(&self) -> &[u64] {
        &self.input
    }

    /// Each agent's rejected requests so far (rejected in its split, at its
    /// node, at its neighbours).
    #[must_use]
    pub fn rejected(&self) -> &[u64] {
        &self.rejected
    }

    /// Mean per-agent per-step reward so far.
    #[must_use]
    pub fn mean_reward(&self) -> f64 {
        self.reward.iter().sum::<f64>() / (self.steps.max(1) as f64 * self.reward.len() as f64)
    }

    /// Mean reward of each agent.
    #[must_use]
    pub fn agent_rewards(&self) -> Vec<f64> {
        self.reward
            .iter()
            .map(|r| r / self.steps.max(1) as f64)
            .collect()
    }

    /// Rejected % of all input so far.
    #[must_use]
    pub fn reject_pct(&self) -> f64 {
        pct(self.rejected.iter().sum(), self.input.iter().sum())
    }

    /// The evaluation summary under `policy`'s name.
    #[must_use]
    pub fn summary(&self, policy: &str) -> Evaluation {
        let total: u64 = self.input.iter().sum();
        let per_agent = (0..self.reward.len())
            .map(|a| AgentShare {
                mean_reward: self.reward[a] / self.steps.max(1) as f64,
                local_pct: pct(self.local[a], self.input[a]),
                forward_pct: pct(self.forward[a], self.input[a]),
                reject_pct: pct(self.rejected[a], self.input[a]),
            })
            .collect();
        Evaluation {
            policy: policy.to_string(),
            mean_reward: self.mean_reward(),
            reject_pct: self.reject_pct(),
            local_pct: pct(self.local.iter().sum(), total),
            forward_pct: pct(self.forward.iter().sum(), total),
            per_agent,
        }
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// The seed of the evaluation episode list of a run trained with
/// `training_seed` (`train_ppo` and `evaluate` both use it).
#[must_use]
pub fn evaluation_seed(training_seed: u64) -> u64 {
    training_seed.wrapping_add(1_000_003)
}

/// The evaluation environment of `config`: evaluation mode, `episodes`
/// envs, each on its own evaluation episode (seeds drawn from `seed`).
///
/// # Errors
/// [`EvaluateError`]: no episodes, a configuration that does not build, a
/// failed reset.
pub fn evaluation_env(
    config: &EnvConfig,
    episodes: usize,
    seed: u64,
) -> Result<BatchEnv, EvaluateError> {
    if episodes == 0 {
        return Err(EvaluateError::NoEpisodes);
    }
    let built = EnvConfig {
        evaluation: true,
        ..config.clone()
    }
    .build()
    .map_err(EvaluateError::Config)?;
    let model = EnvModel::new(&built).map_err(EvaluateError::Config)?;
    let mut env = BatchEnv::new(model, episodes).map_err(EvaluateError::Step)?;
    env.set_evaluation_seeds(seed, episodes);
    env.reset(seed).map_err(EvaluateError::Reset)?;
    Ok(env)
}

/// Runs `controller` for one episode in every env of `env` (fresh from
/// [`evaluation_env`]) and summarises.
///
/// # Errors
/// [`EvaluateError`] of a step or of the controller.
pub fn evaluate(
    controller: &mut dyn Controller,
    env: &mut BatchEnv,
) -> Result<Evaluation, EvaluateError> {
    evaluate_with(controller, env, |_, _, _| Ok(()))
}

/// As [`evaluate`], calling `on_step(env index, model, metrics)` after every
/// step of every env (to write per-step statistics).
///
/// # Errors
/// As [`evaluate`]; [`EvaluateError::Record`] with the first error of
/// `on_step`.
pub fn evaluate_with(
    controller: &mut dyn Controller,
    env: &mut BatchEnv,
    mut on_step: impl FnMut(usize, &EnvModel, &StepMetrics) -> std::io::Result<()>,
) -> Result<Evaluation, EvaluateError> {
    let model = env.model().clone();
    let (envs, n) = (env.num_envs(), model.num_agents());
    let mut actions = vec![0f32; envs * n * model.action_width()];
    let mut metrics = vec![StepMetrics::new(&model); envs];
    let mut tally = Tally::new(n);
    for _ in 0..model.max_steps() {
        controller
            .act(&model, env.observations(), &mut actions)
            .map_err(|source| EvaluateError::Control {
                policy: controller.name().to_string(),
                source,
            })?;
        env.step_with_metrics(&actions, &mut metrics)
            .map_err(EvaluateError::Step)?;
        for (i, m) in metrics.iter().enumerate() {
            tally.add(&model, m);
            on_step(i, &model, m).map_err(EvaluateError::Record)?;
        }
    }
    Ok(tally.summary(controller.name()))
}

/// Writes `evaluation.csv` atomically: one row per evaluation, columns
/// `policy,mean_reward,reject_pct,local_pct,forward_pct`.
///
/// # Errors
/// The I/O error of writing `path`.
pub fn write_evaluation_csv(path: &Path, results: &[Evaluation]) -> std::io::Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    csv.write_record([
        "policy",
        "mean_reward",
        "reject_pct",
        "local_pct",
        "forward_pct",
    ])?;
    for r in results {
        csv.write_record([
            r.policy.clone(),
            format!("{:.6}", r.mean_reward),
            format!("{:.4}", r.reject_pct),
            format!("{:.4}", r.local_pct),
            format!("{:.4}", r.forward_pct),
        ])?;
    }
    let bytes = csv.into_inner().map_err(|e| e.into_error())?;
    dfaas_core::io::write_atomically(path, |w| std::io::Write::write_all(w, &bytes))
}

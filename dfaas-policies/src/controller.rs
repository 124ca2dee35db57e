//! [`Controller`]: anything that turns a batch of observations into a batch
//! of actions — the trained PPO policy and every baseline — and the
//! evaluation that runs one over the environment's evaluation episodes:
//! its seeds ([`evaluation_seed`]), its environments ([`evaluation_env`]),
//! its report ([`write_evaluation_csv`]).

use crate::error::{ControlError, EvaluateError, ShapeError, length, product};
use dfaas_core::{BatchEnv, BatchMetrics, EnvConfig, EnvModel, PerfModelRegime, StepMetrics};
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
    /// Where the arriving requests went (served where, rejected why).
    pub outcomes: Outcomes,
    /// Per agent: (mean reward, local %, forward %, reject %, outcomes).
    pub per_agent: Vec<AgentShare>,
}

/// Where arriving requests went, in % of them: served at their node or by
/// the neighbour they were forwarded to, or rejected — by the policy's own
/// reject action, by overload at their node, or by overload at the
/// neighbour. The five add up to 100 (for input > 0).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcomes {
    /// Kept local and served there.
    pub served_local_pct: f64,
    /// Forwarded and served by the neighbour.
    pub served_neighbour_pct: f64,
    /// Rejected by the split's reject entry.
    pub rejected_by_policy_pct: f64,
    /// Kept local and rejected by the node's overload.
    pub rejected_local_overload_pct: f64,
    /// Forwarded and rejected by the neighbour's overload.
    pub rejected_neighbour_overload_pct: f64,
    /// Mean response time of the served requests (ms): the serving node's
    /// response time, plus the forward and return network delays for those
    /// a neighbour served; 0 when none was served.
    pub served_response_ms: f64,
}

impl Outcomes {
    /// Served (at the node or by a neighbour), % of the arriving requests.
    #[must_use]
    pub fn served_pct(&self) -> f64 {
        self.served_local_pct + self.served_neighbour_pct
    }
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
    /// Where its input went.
    pub outcomes: Outcomes,
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
    /// Per agent: local requests rejected by the node's overload.
    local_overload: Vec<u64>,
    /// Per agent: forwarded requests rejected by the neighbours' overload.
    neighbour_overload: Vec<u64>,
    /// Per agent: requests of the split's reject entry.
    policy_rejects: Vec<u64>,
    /// Per agent: Σ over its served requests of their response time (ms).
    served_ms: Vec<f64>,
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
            local_overload: vec![0; agents],
            neighbour_overload: vec![0; agents],
            policy_rejects: vec![0; agents],
            served_ms: vec![0.0; agents],
        }
    }

    /// Adds one step of every env of a batch (env by env, in order).
    pub fn add(&mut self, model: &EnvModel, m: &BatchMetrics) {
        self.steps += m.num_envs() as u64;
        // Response times: the model's units (seconds, or the reference's
        // milliseconds) to ms; network delays are in ms.
        let ms = match model.built().config().perfmodel_regime {
            PerfModelRegime::Seconds => 1000.0,
            PerfModelRegime::Reference => 1.0,
        };
        let sum = |values: &[u32]| values.iter().map(|&v| u64::from(v)).sum::<u64>();
        for a in 0..model.num_agents() {
            let k = model.degree(a);
            for &r in m.reward(a) {
                self.reward[a] += r;
            }
            let local_overload = sum(m.incoming_rate_local_reject(a));
            let neighbour_overload = sum(m.forward_reject_rate(a));
            let policy_rejects = sum(m.action(a, k + 1));
            self.input[a] += sum(m.input_rate(a));
            self.local[a] += sum(m.action(a, 0));
            self.forward[a] += (1..=k).map(|j| sum(m.action(a, j))).sum::<u64>();
            self.rejected[a] += policy_rejects + local_overload + neighbour_overload;
            self.policy_rejects[a] += policy_rejects;
            self.local_overload[a] += local_overload;
            self.neighbour_overload[a] += neighbour_overload;
            let served =
                |j: usize, e: usize| f64::from(m.action(a, j)[e] - m.forward_rejects(a, j)[e]);
            for (e, &local_time) in m.response_time_avg_local(a).iter().enumerate() {
                let mut time = served(0, e) * local_time * ms;
                for j in 1..=k {
                    time += served(j, e)
                        * (m.response_time_avg_forwarded_to(a, j)[e] * ms
                            + m.network_forward_delay_avg_to(a, j)[e]
                            + m.network_return_delay_avg_to(a, j)[e]);
                }
                self.served_ms[a] += time;
            }
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

    /// The outcomes of the requests of the agents `agents`.
    fn outcomes(&self, agents: core::ops::Range<usize>) -> Outcomes {
        let sum = |v: &[u64]| -> u64 { v[agents.clone()].iter().sum() };
        let input = sum(&self.input);
        let (local_overload, neighbour_overload) =
            (sum(&self.local_overload), sum(&self.neighbour_overload));
        let served = sum(&self.local) + sum(&self.forward) - local_overload - neighbour_overload;
        let served_ms: f64 = self.served_ms[agents.clone()].iter().sum();
        Outcomes {
            served_response_ms: if served == 0 {
                0.0
            } else {
                served_ms / served as f64
            },
            served_local_pct: pct(sum(&self.local) - local_overload, input),
            served_neighbour_pct: pct(sum(&self.forward) - neighbour_overload, input),
            rejected_by_policy_pct: pct(sum(&self.policy_rejects), input),
            rejected_local_overload_pct: pct(local_overload, input),
            rejected_neighbour_overload_pct: pct(neighbour_overload, input),
        }
    }

    /// The evaluation summary under `policy`'s name.
    #[must_use]
    pub fn summary(&self, policy: &str) -> Evaluation {
        let n = self.reward.len();
        let total: u64 = self.input.iter().sum();
        let per_agent = (0..n)
            .map(|a| AgentShare {
                mean_reward: self.reward[a] / self.steps.max(1) as f64,
                local_pct: pct(self.local[a], self.input[a]),
                forward_pct: pct(self.forward[a], self.input[a]),
                reject_pct: pct(self.rejected[a], self.input[a]),
                outcomes: self.outcomes(a..a + 1),
            })
            .collect();
        Evaluation {
            policy: policy.to_string(),
            mean_reward: self.mean_reward(),
            reject_pct: self.reject_pct(),
            local_pct: pct(self.local.iter().sum(), total),
            forward_pct: pct(self.forward.iter().sum(), total),
            outcomes: self.outcomes(0..n),
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
    let mut metrics = BatchMetrics::new(&model, envs);
    let mut record = StepMetrics::new(&model);
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
        tally.add(&model, &metrics);
        for i in 0..envs {
            metrics
                .copy_env(i, &mut record)
                .map_err(EvaluateError::Step)?;
            on_step(i, &model, &record).map_err(EvaluateError::Record)?;
        }
    }
    Ok(tally.summary(controller.name()))
}

/// Writes `evaluation.csv` atomically: one row per evaluation, columns
/// `policy,mean_reward,reject_pct,local_pct,forward_pct`, then the
/// [`Outcomes`]: `served_pct,served_local_pct,served_neighbour_pct,
/// reject_policy_pct,reject_local_overload_pct,reject_neighbour_overload_pct`
/// (all in % of the arriving requests), and `served_response_ms`.
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
        "served_pct",
        "served_local_pct",
        "served_neighbour_pct",
        "reject_policy_pct",
        "reject_local_overload_pct",
        "reject_neighbour_overload_pct",
        "served_response_ms",
    ])?;
    for r in results {
        let o = &r.outcomes;
        csv.write_record([
            r.policy.clone(),
            format!("{:.6}", r.mean_reward),
            format!("{:.4}", r.reject_pct),
            format!("{:.4}", r.local_pct),
            format!("{:.4}", r.forward_pct),
            format!("{:.4}", o.served_pct()),
            format!("{:.4}", o.served_local_pct),
            format!("{:.4}", o.served_neighbour_pct),
            format!("{:.4}", o.rejected_by_policy_pct),
            format!("{:.4}", o.rejected_local_overload_pct),
            format!("{:.4}", o.rejected_neighbour_overload_pct),
            format!("{:.3}", o.served_response_ms),
        ])?;
    }
    let bytes = csv.into_inner().map_err(|e| e.into_error())?;
    dfaas_core::io::write_atomically(path, |w| std::io::Write::write_all(w, &bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfaas_core::EnvConfig;

    #[test]
    fn outcomes_split_the_arriving_requests_by_where_they_went() {
        let built = EnvConfig::with_network(&["a b"]).build().unwrap();
        let model = EnvModel::new(&built).unwrap();
        let mut m = StepMetrics::new(&model);
        // Agent a: 10 requests split [local 5, forward 3, reject 2]; its
        // node rejects 1 local, b rejects 1 of the 3 forwarded. Agent b: 20
        // requests all local, 5 rejected by its node's overload.
        m.input_rate = vec![10, 20];
        m.action = vec![5, 3, 2, 20, 0, 0];
        m.incoming_rate_local_reject = vec![1, 5];
        m.forward_reject_rate = vec![1, 0];
        m.forward_rejects = vec![1, 1, 0, 5, 0, 0];
        // Node response times 0.2 s (a) and 0.5 s (b); a's forward to b
        // adds 3 ms there and 1 ms back.
        m.response_time_avg_local = vec![0.2, 0.5];
        m.response_time_avg_forwarded_to = vec![0.0, 0.5, 0.0, 0.0, 0.0, 0.0];
        m.network_forward_delay_avg_to = vec![0.0, 3.0, 0.0, 0.0, 0.0, 0.0];
        m.network_return_delay_avg_to = vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let mut batch = BatchMetrics::new(&model, 1);
        batch.set_env(0, &m).unwrap();
        let mut tally = Tally::new(2);
        tally.add(&model, &batch);
        let e = tally.summary("x");
        let close = |got: f64, want: f64| assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let a = e.per_agent[0].outcomes;
        close(a.served_local_pct, 40.0);
        close(a.served_neighbour_pct, 20.0);
        close(a.rejected_by_policy_pct, 20.0);
        close(a.rejected_local_overload_pct, 10.0);
        close(a.rejected_neighbour_overload_pct, 10.0);
        // a served 4 locally (200 ms each) and 2 at b (500 + 3 + 1 ms).
        close(a.served_response_ms, (4.0 * 200.0 + 2.0 * 504.0) / 6.0);
        let b = e.per_agent[1].outcomes;
        close(b.served_pct(), 75.0);
        close(b.served_response_ms, 500.0);
        close(
            e.outcomes.served_response_ms,
            (1808.0 + 15.0 * 500.0) / 21.0,
        );
        close(b.rejected_local_overload_pct, 25.0);
        // Overall, of 30: served 19 locally and 2 by a neighbour, rejected
        // 2 by the policy, 6 by overload at the node, 1 at the neighbour.
        let o = e.outcomes;
        close(o.served_local_pct, 100.0 * 19.0 / 30.0);
        close(o.served_neighbour_pct, 100.0 * 2.0 / 30.0);
        close(o.rejected_by_policy_pct, 100.0 * 2.0 / 30.0);
        close(o.rejected_local_overload_pct, 20.0);
        close(o.rejected_neighbour_overload_pct, 100.0 / 30.0);
        close(o.served_pct() + e.reject_pct, 100.0);
    }
}

//! `dfaas._dfaas`: the Rust environment for Python. A thin layer: it
//! converts numpy arrays and raises; the PettingZoo/Gymnasium classes are
//! pure Python (`python/dfaas`).
//!
//! Every Rust error becomes a Python exception carrying the Rust message:
//! `FileNotFoundError`/`OSError` for files that cannot be read, `ValueError`
//! for everything else (bad configuration, wrong shapes, non-finite
//! actions). A Rust panic surfaces as pyo3's `PanicException`, never an
//! abort.

use dfaas::core::replay::{Episode, EpisodeFiles};
use dfaas::core::stats::{Cell, StatsLayout, StatsWriter};
use dfaas::core::{BatchMetrics, ConfigError, EnvConfig, EnvModel, StepMetrics};
use numpy::{
    PyArray1, PyArray2, PyArray3, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::path::Path;

/// A configuration error as the Python exception that fits it.
fn config_error(error: &ConfigError) -> PyErr {
    match error {
        ConfigError::Io { message, .. } if message.contains("No such file") => {
            PyFileNotFoundError::new_err(error.to_string())
        }
        ConfigError::Io { .. } => PyOSError::new_err(error.to_string()),
        _ => PyValueError::new_err(error.to_string()),
    }
}

/// Any other Rust error as `ValueError` with its message (and its causes).
fn value_error(error: &dyn std::error::Error) -> PyErr {
    PyValueError::new_err(error_chain(error))
}

/// `error`'s message followed by its causes'.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// A built environment model: topology, performance tables, traces.
#[pyclass(module = "dfaas._dfaas", frozen)]
struct Model {
    model: EnvModel,
}

impl Model {
    fn build(config: &EnvConfig) -> PyResult<Self> {
        let built = config.build().map_err(|e| config_error(&e))?;
        let model = EnvModel::new(&built).map_err(|e| config_error(&e))?;
        Ok(Self { model })
    }
}

#[pymethods]
impl Model {
    /// The embedded default scenario (3 agents, seconds regime).
    #[staticmethod]
    fn default() -> PyResult<Self> {
        Self::build(&dfaas::default_config())
    }

    /// A configuration file (JSON when the name ends in `.json`, else
    /// YAML) with the reference's keys.
    #[staticmethod]
    fn from_file(path: &str) -> PyResult<Self> {
        Self::build(&EnvConfig::from_file(path).map_err(|e| config_error(&e))?)
    }

    /// A configuration as JSON text with the reference's keys.
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Self> {
        Self::build(&EnvConfig::from_json(text).map_err(|e| config_error(&e))?)
    }

    /// A recorded episode in the conformance vectors' format (a folder
    /// with `config.yaml`, `input_rate.csv`, `bandwidth.csv`,
    /// `actions.csv`): the model with its input rates and bandwidths as
    /// static traces and the reference's f64 reject rule, and its actions
    /// `[steps, agents, action_width]`.
    #[staticmethod]
    fn from_episode<'py>(
        py: Python<'py>,
        folder: &str,
    ) -> PyResult<(Self, Bound<'py, PyArray3<f32>>)> {
        let episode = Episode::load(&EpisodeFiles::in_folder(Path::new(folder)))
            .map_err(|e| config_error(&e))?;
        let model = EnvModel::new(&episode.built).map_err(|e| config_error(&e))?;
        let (n, w) = (model.num_agents(), model.action_width());
        let steps = episode.actions.len() / (n * w);
        let actions = PyArray1::from_slice(py, &episode.actions).reshape([steps, n, w])?;
        Ok((Self { model }, actions))
    }

    /// Agent names, in agent order.
    fn agents(&self) -> Vec<String> {
        self.model.built().topology().names().to_vec()
    }

    /// Names of agent `agent`'s neighbours, in neighbour order (the order
    /// of its forward entries and observation features).
    fn neighbours(&self, agent: usize) -> PyResult<Vec<String>> {
        let topology = self.model.built().topology();
        if agent >= topology.names().len() {
            return Err(PyValueError::new_err(format!(
                "agent index {agent} out of range (the model has {} agents)",
                topology.names().len()
            )));
        }
        Ok(topology
            .neighbours(agent)
            .iter()
            .map(|&b| topology.names()[b as usize].clone())
            .collect())
    }

    /// Entries per agent of the padded observation rows.
    #[getter]
    fn obs_width(&self) -> usize {
        self.model.obs_width()
    }

    /// Entries per agent of the padded action rows (`2 + max degree`).
    #[getter]
    fn action_width(&self) -> usize {
        self.model.action_width()
    }

    /// Steps per episode.
    #[getter]
    fn max_steps(&self) -> usize {
        self.model.max_steps()
    }

    /// Largest input rate an agent can receive (requests per step).
    #[getter]
    fn max_input_rate(&self) -> u32 {
        self.model.max_input_rate()
    }
}

/// One environment: `dfaas_core::Env`, with the episode's per-step
/// metrics kept for [`Env::stats`] and [`Env::write_stats_csv`].
#[pyclass(module = "dfaas._dfaas")]
struct Env {
    env: dfaas::core::Env,
    agents: usize,
    obs_width: usize,
    /// The current episode's steps.
    episode: Vec<StepMetrics>,
    /// The padded action rows the dict step fills.
    actions: Vec<f32>,
    /// Agent names and each agent's observation keys, as Python strings.
    names: Vec<Py<PyString>>,
    keys: Vec<Vec<Py<PyString>>>,
}

/// The observation key names of agent `a`, in observation-row order.
fn observation_keys(model: &EnvModel, a: usize) -> Vec<String> {
    let topology = model.built().topology();
    let names: Vec<&str> = topology
        .neighbours(a)
        .iter()
        .map(|&b| topology.names()[b as usize].as_str())
        .collect();
    ["input_rate".to_string(), "prev_input_rate".to_string()]
        .into_iter()
        .chain(names.iter().map(|n| format!("prev_forward_to_{n}")))
        .chain(names.iter().map(|n| format!("prev_forward_rejects_to_{n}")))
        .collect()
}

#[pymethods]
impl Env {
    #[new]
    fn new(py: Python<'_>, model: &Model) -> Self {
        let model = model.model.clone();
        let names = model
            .built()
            .topology()
            .names()
            .iter()
            .map(|n| PyString::new(py, n).unbind())
            .collect();
        let keys = (0..model.num_agents())
            .map(|a| {
                observation_keys(&model, a)
                    .iter()
                    .map(|k| PyString::new(py, k).unbind())
                    .collect()
            })
            .collect();
        Self {
            names,
            keys,
            agents: model.num_agents(),
            obs_width: model.obs_width(),
            actions: vec![0.0; model.num_agents() * model.action_width()],
            env: dfaas::core::Env::new(model),
            episode: Vec::new(),
        }
    }

    /// Every agent's observation key names, in observation-row order
    /// (`input_rate`, `prev_input_rate`, `prev_forward_to_<n>`..,
    /// `prev_forward_rejects_to_<n>`..).
    fn observation_keys(&self) -> Vec<Vec<String>> {
        let model = self.env.model();
        (0..self.agents)
            .map(|a| observation_keys(model, a))
            .collect()
    }

    /// One step with `actions`, a dict from every agent's name to its
    /// `k + 2` shares (a float32 array or any sequence of numbers), for
    /// PettingZoo's dicts. Returns `(observations, rewards, done)`:
    /// `observations[agent][key]` a `(1,)` float32 array, `rewards[agent]`
    /// a float.
    fn step_dicts<'py>(
        &mut self,
        py: Python<'py>,
        actions: &Bound<'py, PyDict>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>, bool)> {
        let model = self.env.model();
        let width = model.action_width();
        if actions.len() != self.agents {
            return Err(PyValueError::new_err(format!(
                "actions: {} entries, expected one per agent ({})",
                actions.len(),
                self.agents
            )));
        }
        for (a, name) in self.names.iter().enumerate() {
            let name = name.bind(py);
            let k = model.degree(a) + 2;
            let action = actions.get_item(name)?.ok_or_else(|| {
                PyValueError::new_err(format!("actions: missing for agent {name}"))
            })?;
            let row = &mut self.actions[a * width..a * width + k];
            if let Ok(array) = action.cast::<numpy::PyArray1<f32>>() {
                let array = array.readonly();
                let values = array.as_slice()?;
                if values.len() != k {
                    return Err(PyValueError::new_err(format!(
                        "actions[{name:?}]: shape ({},), expected ({k},) ([local, forward to each neighbour, reject])",
                        values.len()
                    )));
                }
                row.copy_from_slice(values);
            } else {
                let values: Vec<f32> = action.extract().map_err(|_| {
                    PyValueError::new_err(format!(
                        "actions[{name:?}]: expected {k} numbers ([local, forward to each neighbour, reject])"
                    ))
                })?;
                if values.len() != k {
                    return Err(PyValueError::new_err(format!(
                        "actions[{name:?}]: shape ({},), expected ({k},) ([local, forward to each neighbour, reject])",
                        values.len()
                    )));
                }
                row.copy_from_slice(&values);
            }
        }
        let outcome = self.env.step(&self.actions).map_err(|e| value_error(&e))?;
        let (observations, rewards) = (PyDict::new(py), PyDict::new(py));
        for (a, (name, agent_keys)) in self.names.iter().zip(&self.keys).enumerate() {
            let row = &outcome.observations[a * self.obs_width..];
            let entries = PyDict::new(py);
            for (key, &value) in agent_keys.iter().zip(row) {
                entries.set_item(key.bind(py), PyArray1::from_slice(py, &[value]))?;
            }
            observations.set_item(name, entries)?;
            rewards.set_item(name, f64::from(outcome.rewards[a]))?;
        }
        let done = outcome.done;
        self.episode.push(self.env.metrics().clone());
        Ok((observations, rewards, done))
    }

    /// Starts an episode: `seed` reseeds the master stream (`None`:
    /// continue it), `episode_seed` overrides the episode's own seed (the
    /// reference's `override_seed`). Returns the observations
    /// `[agents, obs_width]`.
    #[pyo3(signature = (seed=None, episode_seed=None))]
    fn reset<'py>(
        &mut self,
        py: Python<'py>,
        seed: Option<u64>,
        episode_seed: Option<u32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let obs = match episode_seed {
            Some(e) => self.env.reset_with_episode_seed(e, seed),
            None => self.env.reset(seed),
        }
        .map_err(|e| value_error(&e))?;
        let obs = PyArray1::from_slice(py, obs).reshape([self.agents, self.obs_width]);
        self.episode.clear();
        obs
    }

    /// One step with `actions` `[agents, action_width]` (float32, each row
    /// `[local, forward_1..k, reject, padding]`; off-simplex rows follow
    /// the environment's documented rule). Returns `(observations
    /// [agents, obs_width], rewards [agents], done)`.
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyArray1<f32>>, bool)> {
        let width = self.env.model().action_width();
        let shape = actions.shape();
        if shape != [self.agents, width] {
            return Err(PyValueError::new_err(format!(
                "actions: shape {shape:?}, expected [{}, {width}] (agents × action width)",
                self.agents
            )));
        }
        let outcome = self
            .env
            .step(actions.as_slice()?)
            .map_err(|e| value_error(&e))?;
        let obs = PyArray1::from_slice(py, outcome.observations)
            .reshape([self.agents, self.obs_width])?;
        let rewards = PyArray1::from_slice(py, outcome.rewards);
        let done = outcome.done;
        self.episode.push(self.env.metrics().clone());
        Ok((obs, rewards, done))
    }

    /// The current episode's per-step metrics as the reference's stats
    /// table: a dict of equal-length columns, one row per (step, agent) —
    /// `step` (int64), `agent` (names), then every column of its
    /// `stats.csv` in its order (float64; NaN where the reference leaves
    /// the cell empty).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let model = self.env.model();
        let layout = StatsLayout::new(model);
        let names: Vec<&str> = layout.names().collect();
        let agent_names = model.built().topology().names();
        let rows = self.episode.len() * self.agents;
        let mut steps = Vec::with_capacity(rows);
        let mut agents = Vec::with_capacity(rows);
        let mut columns = vec![Vec::with_capacity(rows); names.len()];
        for metrics in &self.episode {
            for (a, name) in agent_names.iter().enumerate() {
                steps.push(metrics.step as i64);
                agents.push(name.clone());
                for (column, cell) in columns.iter_mut().zip(layout.row(model, metrics, a)) {
                    column.push(match cell {
                        Cell::Int(v) => v as f64,
                        Cell::Float(v) => v,
                        Cell::Empty => f64::NAN,
                    });
                }
            }
        }
        let out = PyDict::new(py);
        out.set_item("step", PyArray1::from_vec(py, steps))?;
        out.set_item("agent", agents)?;
        for (name, column) in names.iter().zip(columns) {
            out.set_item(*name, PyArray1::from_vec(py, column))?;
        }
        Ok(out)
    }

    /// Writes the current episode's `stats.csv` (the reference's format)
    /// to `path`, atomically.
    fn write_stats_csv(&self, path: &str) -> PyResult<()> {
        let model = self.env.model();
        dfaas::io::write_atomically(Path::new(path), |out| {
            let mut writer = StatsWriter::new(model, out)?;
            for metrics in &self.episode {
                writer.write_step(model, metrics)?;
            }
            writer.finish().map(drop)
        })
        .map_err(|e| PyOSError::new_err(format!("{path}: {e}")))
    }

    /// Draws the evaluation episode seeds from `master_seed` (needed
    /// before the first reset of a model in evaluation mode): the episodes
    /// `dfaas_policies::controller::evaluation_env` plays, in turn.
    fn set_evaluation_seeds(&mut self, master_seed: u64, episodes: usize) {
        self.env.set_evaluation_seeds(master_seed, episodes);
    }

    /// Step index within the episode (`max_steps` when it is over).
    #[getter]
    fn step_index(&self) -> usize {
        self.env.step_index()
    }

    /// The seed of the current episode.
    #[getter]
    fn episode_seed(&self) -> u32 {
        self.env.episode_seed()
    }
}

/// `num_envs` environments stepped together with auto-reset:
/// `dfaas_core::BatchEnv`, recording every per-step metric when made with
/// `record_metrics=True` ([`BatchEnv::metrics`]).
#[pyclass(module = "dfaas._dfaas")]
struct BatchEnv {
    batch: dfaas::core::BatchEnv,
    shape: [usize; 3],
    /// The last step's metrics, when recorded.
    metrics: Option<BatchMetrics>,
}

impl BatchEnv {
    /// One step of every env with `actions` (checked by the caller's
    /// shape test), recording the metrics when asked to.
    fn advance(&mut self, actions: &[f32]) -> PyResult<()> {
        match &mut self.metrics {
            Some(metrics) => self.batch.step_with_metrics(actions, metrics),
            None => self.batch.step(actions),
        }
        .map_err(|e| value_error(&e))
    }
}

/// Rows of one value per env (`row(r)`, `rows` of them) as an env-major
/// array `[env][row]`.
fn env_major<'m, T: Copy + Default + 'm>(
    envs: usize,
    rows: usize,
    row: impl Fn(usize) -> &'m [T],
) -> Vec<T> {
    let mut out = vec![T::default(); envs * rows];
    for r in 0..rows {
        for (e, &value) in row(r).iter().enumerate() {
            out[e * rows + r] = value;
        }
    }
    out
}

/// Sets `out[name]` to the rows `row(r)` as an env-major array of `shape`
/// (`[envs, ..]`, the rest multiplying to the number of rows).
fn set_rows<'m, T: numpy::Element + Copy + Default + 'm>(
    out: &Bound<'_, PyDict>,
    name: &str,
    shape: &[usize],
    row: impl Fn(usize) -> &'m [T],
) -> PyResult<()> {
    let values = env_major(shape[0], shape[1..].iter().product(), row);
    out.set_item(
        name,
        PyArray1::from_vec(out.py(), values).reshape(shape.to_vec())?,
    )
}

/// A metric of one value per agent.
type PerAgent<T> = for<'a> fn(&'a BatchMetrics, usize) -> &'a [T];
/// A metric of one value per action entry.
type PerEntry<T> = for<'a> fn(&'a BatchMetrics, usize, usize) -> &'a [T];

#[pymethods]
impl BatchEnv {
    #[new]
    #[pyo3(signature = (model, num_envs, record_metrics=false))]
    fn new(model: &Model, num_envs: usize, record_metrics: bool) -> PyResult<Self> {
        let model = model.model.clone();
        let shape = [num_envs, model.num_agents(), model.obs_width()];
        if num_envs == 0 {
            return Err(PyValueError::new_err("num_envs: must be > 0, got 0"));
        }
        let metrics = record_metrics.then(|| BatchMetrics::new(&model, num_envs));
        let batch = dfaas::core::BatchEnv::new(model, num_envs).map_err(|e| value_error(&e))?;
        Ok(Self {
            batch,
            shape,
            metrics,
        })
    }

    /// The last step's per-step metrics (zeros before the first step): a
    /// dict from each metric's name (`StepMetrics`' fields) to an array,
    /// `[envs, agents]` for one value per agent, `[envs, agents,
    /// action_width]` for one per action entry (`action`,
    /// `forward_rejects`, the `*_to` ones), `[envs, agents, obs_width]` for
    /// `observation` (what each agent stepped from), `[envs]` for `step`.
    /// Counts are uint32, times and rewards float64.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Some(m) = &self.metrics else {
            return Err(PyValueError::new_err(
                "metrics: not recorded; make the BatchEnv with record_metrics=True",
            ));
        };
        let [envs, agents, ow] = self.shape;
        let w = self.batch.model().action_width();
        let out = PyDict::new(py);
        let steps: Vec<u64> = m.step().iter().map(|&t| t as u64).collect();
        out.set_item("step", PyArray1::from_vec(py, steps))?;
        let counts: [(&str, PerAgent<u32>); 8] = [
            ("input_rate", BatchMetrics::input_rate),
            ("incoming_rate", BatchMetrics::incoming_rate),
            ("incoming_rate_local", BatchMetrics::incoming_rate_local),
            ("incoming_rate_forward", BatchMetrics::incoming_rate_forward),
            ("incoming_rate_reject", BatchMetrics::incoming_rate_reject),
            (
                "incoming_rate_local_reject",
                BatchMetrics::incoming_rate_local_reject,
            ),
            (
                "incoming_rate_forward_reject",
                BatchMetrics::incoming_rate_forward_reject,
            ),
            ("forward_reject_rate", BatchMetrics::forward_reject_rate),
        ];
        for (name, field) in counts {
            set_rows(&out, name, &[envs, agents], |a| field(m, a))?;
        }
        let times: [(&str, PerAgent<f64>); 5] = [
            ("reward", BatchMetrics::reward),
            (
                "response_time_avg_local",
                BatchMetrics::response_time_avg_local,
            ),
            (
                "response_time_avg_forwarded",
                BatchMetrics::response_time_avg_forwarded,
            ),
            (
                "network_forward_delay_avg",
                BatchMetrics::network_forward_delay_avg,
            ),
            (
                "network_return_delay_avg",
                BatchMetrics::network_return_delay_avg,
            ),
        ];
        for (name, field) in times {
            set_rows(&out, name, &[envs, agents], |a| field(m, a))?;
        }
        let entry_counts: [(&str, PerEntry<u32>); 2] = [
            ("action", BatchMetrics::action),
            ("forward_rejects", BatchMetrics::forward_rejects),
        ];
        for (name, field) in entry_counts {
            set_rows(&out, name, &[envs, agents, w], |r| field(m, r / w, r % w))?;
        }
        let entry_times: [(&str, PerEntry<f64>); 3] = [
            (
                "response_time_avg_forwarded_to",
                BatchMetrics::response_time_avg_forwarded_to,
            ),
            (
                "network_forward_delay_avg_to",
                BatchMetrics::network_forward_delay_avg_to,
            ),
            (
                "network_return_delay_avg_to",
                BatchMetrics::network_return_delay_avg_to,
            ),
        ];
        for (name, field) in entry_times {
            set_rows(&out, name, &[envs, agents, w], |r| field(m, r / w, r % w))?;
        }
        out.set_item(
            "observation",
            PyArray1::from_slice(out.py(), m.observations()).reshape([envs, agents, ow])?,
        )?;
        Ok(out)
    }

    /// Resets every env (env `i` from the master seed derived from `seed`
    /// and `i`); returns the observations `[envs, agents, obs_width]`.
    fn reset<'py>(&mut self, py: Python<'py>, seed: u64) -> PyResult<Bound<'py, PyArray3<f32>>> {
        let obs = self.batch.reset(seed).map_err(|e| value_error(&e))?;
        PyArray1::from_slice(py, obs).reshape(self.shape)
    }

    /// One step of every env with `actions` `[envs, agents, action_width]`
    /// (float32). Envs whose episode ends start their next one in the same
    /// step. Returns `(observations [envs, agents, obs_width], rewards
    /// [envs, agents], dones [envs], final observations [envs, agents,
    /// obs_width] or None)` — the final observations, only when an env is
    /// done, are the terminal ones of the envs that are (other rows are
    /// stale).
    #[allow(clippy::type_complexity)]
    fn step<'py>(
        &mut self,
        py: Python<'py>,
        actions: numpy::PyReadonlyArray3<'py, f32>,
    ) -> PyResult<(
        Bound<'py, PyArray3<f32>>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray1<bool>>,
        Option<Bound<'py, PyArray3<f32>>>,
    )> {
        let [envs, agents, _] = self.shape;
        let width = self.batch.model().action_width();
        let shape = actions.shape();
        if shape != [envs, agents, width] {
            return Err(PyValueError::new_err(format!(
                "actions: shape {shape:?}, expected [{envs}, {agents}, {width}] (envs × agents × action width)"
            )));
        }
        self.advance(actions.as_slice()?)?;
        let obs = PyArray1::from_slice(py, self.batch.observations()).reshape(self.shape)?;
        let rewards = PyArray1::from_slice(py, self.batch.rewards()).reshape([envs, agents])?;
        let dones = PyArray1::from_slice(py, self.batch.dones());
        let finals = if self.batch.dones().contains(&true) {
            Some(PyArray1::from_slice(py, self.batch.final_observations()).reshape(self.shape)?)
        } else {
            None
        };
        Ok((obs, rewards, dones, finals))
    }

    /// As [`BatchEnv::step`], writing into caller-owned arrays instead of
    /// new ones: `observations` `[envs, agents, obs_width]`, `rewards`
    /// `[envs, agents]`, `dones` `[envs]` (contiguous). Returns whether an
    /// env's episode ended (then [`BatchEnv::final_observations`] holds the
    /// terminal observations).
    fn step_into(
        &mut self,
        actions: numpy::PyReadonlyArray3<'_, f32>,
        mut observations: numpy::PyReadwriteArray3<'_, f32>,
        mut rewards: numpy::PyReadwriteArray2<'_, f32>,
        mut dones: numpy::PyReadwriteArray1<'_, bool>,
    ) -> PyResult<bool> {
        let [envs, agents, _] = self.shape;
        let width = self.batch.model().action_width();
        let check = |field: &str, got: &[usize], want: &[usize]| {
            if got == want {
                Ok(())
            } else {
                Err(PyValueError::new_err(format!(
                    "{field}: shape {got:?}, expected {want:?}"
                )))
            }
        };
        check("actions", actions.shape(), &[envs, agents, width])?;
        check("observations", observations.shape(), &self.shape)?;
        check("rewards", rewards.shape(), &[envs, agents])?;
        check("dones", dones.shape(), &[envs])?;
        self.advance(actions.as_slice()?)?;
        observations
            .as_slice_mut()?
            .copy_from_slice(self.batch.observations());
        rewards
            .as_slice_mut()?
            .copy_from_slice(self.batch.rewards());
        dones.as_slice_mut()?.copy_from_slice(self.batch.dones());
        Ok(self.batch.dones().contains(&true))
    }

    /// The terminal observations `[envs, agents, obs_width]` of the envs
    /// whose episode ended at the last step (other rows are stale).
    fn final_observations<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray3<f32>>> {
        PyArray1::from_slice(py, self.batch.final_observations()).reshape(self.shape)
    }

    /// Steps every env `steps` times with the same `actions` `[envs,
    /// agents, action_width]` (recording the metrics when the batch does)
    /// and returns nothing: the Rust batch's own rate, without Python's
    /// per-step work (for benchmarks beside [`BatchEnv::step`]).
    fn step_repeatedly(
        &mut self,
        actions: numpy::PyReadonlyArray3<'_, f32>,
        steps: usize,
    ) -> PyResult<()> {
        let [envs, agents, _] = self.shape;
        let width = self.batch.model().action_width();
        if actions.shape() != [envs, agents, width] {
            return Err(PyValueError::new_err(format!(
                "actions: shape {:?}, expected [{envs}, {agents}, {width}]",
                actions.shape()
            )));
        }
        let actions = actions.as_slice()?;
        for _ in 0..steps {
            self.advance(actions)?;
        }
        Ok(())
    }

    /// The seed of each env's current episode (the reference's
    /// `override_seed` reproduces it in a single env).
    fn episode_seeds(&self) -> Vec<u32> {
        (0..self.shape[0])
            .map(|i| self.batch.episode_seed(i))
            .collect()
    }
}

/// A trained policy for inference: `dfaas_infer::Policy`, loaded from a
/// `train_ppo` checkpoint (its `policies.safetensors`).
#[pyclass(module = "dfaas._dfaas")]
struct Policy {
    policy: dfaas::infer::Policy,
    /// `2 + max degree`: the padded action width.
    action_width: usize,
}

/// `path`'s `policies.safetensors`: the file itself, a checkpoint folder
/// holding one, or a run folder (its latest complete checkpoint).
fn checkpoint_file(path: &Path) -> PyResult<std::path::PathBuf> {
    const FILE: &str = "policies.safetensors";
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.join(FILE).is_file() {
        return Ok(path.join(FILE));
    }
    let runs = path.join("checkpoints");
    let folder = if runs.is_dir() {
        runs
    } else {
        path.to_path_buf()
    };
    dfaas::policies::checkpoint::latest(&folder)
        .map(|latest| latest.join(FILE))
        .ok_or_else(|| {
            PyFileNotFoundError::new_err(format!(
                "{}: no {FILE}, checkpoint folder or run folder with a complete checkpoint",
                path.display()
            ))
        })
}

#[pymethods]
impl Policy {
    /// Loads `path`: a `policies.safetensors` file, a checkpoint folder
    /// holding one, or a `train_ppo` run folder (its latest complete
    /// checkpoint).
    #[staticmethod]
    fn load(path: &str) -> PyResult<Self> {
        let file = checkpoint_file(Path::new(path))?;
        let bytes = std::fs::read(&file)
            .map_err(|e| PyOSError::new_err(format!("{}: {e}", file.display())))?;
        let policy = dfaas::infer::Policy::from_safetensors(&bytes).map_err(|e| {
            PyValueError::new_err(format!("{}: {}", file.display(), error_chain(&e)))
        })?;
        let action_width = policy
            .agents()
            .iter()
            .map(dfaas::infer::Agent::action_len)
            .max()
            .unwrap_or(2);
        Ok(Self {
            policy,
            action_width,
        })
    }

    /// Agent names, in agent order.
    fn agents(&self) -> Vec<String> {
        self.policy
            .agents()
            .iter()
            .map(|a| a.name.clone())
            .collect()
    }

    /// The padded observation width the policy's rows have.
    #[getter]
    fn obs_width(&self) -> usize {
        self.policy.obs_width()
    }

    /// The padded action width of [`Policy::act`]'s rows (`2 + max
    /// degree`).
    #[getter]
    fn action_width(&self) -> usize {
        self.action_width
    }

    /// The deterministic actions (each agent's Dirichlet mean, as the
    /// trainer's evaluation acts) for observations `[..., agents,
    /// obs_width]` (float32, environment units, the padded rows `Env` and
    /// `VectorEnv` give): `[..., agents, action_width]`, each row `[local,
    /// forward_1..k, reject]` then zeros.
    fn act<'py>(
        &mut self,
        py: Python<'py>,
        observations: numpy::PyReadonlyArrayDyn<'py, f32>,
    ) -> PyResult<Bound<'py, numpy::PyArrayDyn<f32>>> {
        let shape = observations.shape().to_vec();
        let (agents, width) = (self.policy.agents().len(), self.policy.obs_width());
        if shape.len() < 2 || shape[shape.len() - 2..] != [agents, width] {
            return Err(PyValueError::new_err(format!(
                "observations: shape {shape:?}, expected [..., {agents}, {width}] (agents × observation width)"
            )));
        }
        let rows = observations.as_slice()?;
        let mut out = vec![0f32; rows.len() / width * self.action_width];
        for (r, (obs, action)) in rows
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(self.action_width))
            .enumerate()
        {
            let agent = r % agents;
            let k = self.policy.agents()[agent].action_len();
            self.policy
                .act(agent, obs, &mut action[..k])
                .map_err(|e| PyValueError::new_err(format!("observations row {r}: {e}")))?;
        }
        let mut out_shape = shape;
        let last = out_shape.len() - 1;
        out_shape[last] = self.action_width;
        PyArray1::from_vec(py, out).reshape(out_shape)
    }

    /// The trainer's layout: `independent`, `shared`, `mappo` or
    /// `agnostic`.
    #[getter]
    fn layout(&self) -> &'static str {
        self.policy.layout().name()
    }

    /// Whether the (agnostic) policy was trained with gossip: then
    /// `act_node` needs each node's gossip.
    #[getter]
    fn gossip(&self) -> bool {
        self.policy.gossip()
    }

    /// The deterministic action of a node with any number `k` of
    /// neighbours, for a policy of the agnostic layout: `observation` is
    /// the node's own `2 + 2k` values (float32, environment units:
    /// `[input_rate, prev_input_rate, prev_forward_to_1..k,
    /// prev_forward_rejects_to_1..k]`), the result its `2 + k` shares
    /// `[local, forward_1..k, reject]`. A policy trained with gossip
    /// (`Policy.gossip`) needs `gossip`, `1 + 3k` float32 values: the
    /// node's capacity, then each neighbour's previous input rate,
    /// capacity and degree; one trained without takes none.
    #[pyo3(signature = (observation, gossip=None))]
    fn act_node<'py>(
        &mut self,
        py: Python<'py>,
        observation: numpy::PyReadonlyArray1<'py, f32>,
        gossip: Option<numpy::PyReadonlyArray1<'py, f32>>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let obs = observation.as_slice()?;
        let gossip = gossip.as_ref().map(|g| g.as_slice()).transpose()?;
        let Some(k) = dfaas::infer::agnostic::degree_of(obs.len()) else {
            return Err(PyValueError::new_err(format!(
                "observation: {} values, expected 2 + 2k for a node of k neighbours",
                obs.len()
            )));
        };
        let mut action = vec![0f32; 2 + k];
        self.policy
            .act_node(obs, gossip, &mut action)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyArray1::from_vec(py, action))
    }
}

/// The seed of the evaluation episodes of a run trained with
/// `training_seed` (`train_ppo` and `evaluate` use it).
#[pyfunction]
fn evaluation_seed(training_seed: u64) -> u64 {
    dfaas::policies::controller::evaluation_seed(training_seed)
}

/// Panics inside Rust, for the test that a panic reaches Python as an
/// exception (pyo3's `PanicException`) and not as an abort.
#[pyfunction]
fn _panic_for_tests() {
    panic!("a Rust panic, raised on purpose by dfaas._dfaas._panic_for_tests");
}

#[pymodule]
fn _dfaas(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Model>()?;
    module.add_class::<Env>()?;
    module.add_class::<BatchEnv>()?;
    module.add_class::<Policy>()?;
    module.add_function(wrap_pyfunction!(evaluation_seed, module)?)?;
    module.add_function(wrap_pyfunction!(_panic_for_tests, module)?)?;
    Ok(())
}

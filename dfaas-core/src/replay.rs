//! Replay of a recorded episode in the file formats of the conformance
//! episodes: a built `config.yaml`, `input_rate.csv` (`step`, one column
//! per agent), `bandwidth.csv` (`step`, one column per link named
//! `u--v`) and `actions.csv` (`step`, `agent`, space-separated action).
//!
//! The configuration's concrete values are used as given; input rates
//! become a `static` trace, bandwidths `static-trace` links (so no base
//! trace file is needed), and rejects use the reference's f64 arithmetic.

use crate::alloc_prelude::*;
use crate::config::EnvConfig;
use crate::error::ConfigError;
use crate::rejects::RejectArithmetic;
use crate::{BuiltConfig, Env, EnvModel, StepMetrics};
use alloc::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The four files of one episode.
#[derive(Debug, Clone)]
pub struct EpisodeFiles {
    /// Built configuration (YAML or JSON).
    pub config: PathBuf,
    /// `input_rate.csv`.
    pub input_rate: PathBuf,
    /// `bandwidth.csv`.
    pub bandwidth: PathBuf,
    /// `actions.csv`.
    pub actions: PathBuf,
}

impl EpisodeFiles {
    /// The files `config.yaml`, `input_rate.csv`, `bandwidth.csv` and
    /// `actions.csv` of a folder.
    #[must_use]
    pub fn in_folder(dir: &Path) -> Self {
        Self {
            config: dir.join("config.yaml"),
            input_rate: dir.join("input_rate.csv"),
            bandwidth: dir.join("bandwidth.csv"),
            actions: dir.join("actions.csv"),
        }
    }
}

/// A loaded episode: its built configuration and its actions.
#[derive(Debug, Clone)]
pub struct Episode {
    /// The configuration with static input and bandwidth traces.
    pub built: BuiltConfig,
    /// Actions `[step][agent][action_width]` in the model's padded layout.
    pub actions: Vec<f32>,
}

fn io_error(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Io {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Reads a CSV file into its header and rows.
fn read_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>), ConfigError> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| io_error(path, e.to_string()))?;
    let header = reader
        .headers()
        .map_err(|e| io_error(path, e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| io_error(path, e.to_string()))?;
        rows.push(record.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

fn parse<T: core::str::FromStr>(
    path: &Path,
    row: usize,
    column: &str,
    cell: &str,
) -> Result<T, ConfigError> {
    cell.trim().parse().map_err(|_| {
        io_error(
            path,
            format!("row {}, column {column}: cannot parse `{cell}`", row + 2),
        )
    })
}

/// Integral value of a cell such as `59` or `59.0`.
fn parse_count(path: &Path, row: usize, column: &str, cell: &str) -> Result<i64, ConfigError> {
    let value: f64 = parse(path, row, column, cell)?;
    if value.fract() != 0.0 || !value.is_finite() {
        return Err(io_error(
            path,
            format!(
                "row {}, column {column}: `{cell}` is not an integer",
                row + 2
            ),
        ));
    }
    Ok(value as i64)
}

impl Episode {
    /// Loads and validates an episode.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file (and row/column) or field at fault.
    pub fn load(files: &EpisodeFiles) -> Result<Self, ConfigError> {
        let mut config = EnvConfig::from_file(&files.config)?;
        let max_steps = usize::try_from(config.max_steps).unwrap_or(0);

        let (header, rows) = read_csv(&files.input_rate)?;
        let mut traces: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (r, row) in rows.iter().enumerate() {
            for (name, cell) in header.iter().zip(row).skip(1) {
                traces.entry(name.clone()).or_default().push(parse_count(
                    &files.input_rate,
                    r,
                    name,
                    cell,
                )?);
            }
        }
        config.input_rate_method = "static".into();
        config.input_rate_trace = Some(traces);
        config.reject_arithmetic = RejectArithmetic::Reference;

        let (header, rows) = read_csv(&files.bandwidth)?;
        let links = config.network_links.get_or_insert_with(BTreeMap::new);
        for (c, name) in header.iter().enumerate().skip(1) {
            let Some((u, v)) = name.split_once("--") else {
                return Err(io_error(
                    &files.bandwidth,
                    format!("column `{name}` is not named u--v"),
                ));
            };
            let trace = rows
                .iter()
                .enumerate()
                .map(|(r, row)| {
                    parse::<f64>(
                        &files.bandwidth,
                        r,
                        name,
                        row.get(c).map_or("", String::as_str),
                    )
                })
                .collect::<Result<Vec<f64>, _>>()?;
            let (u, v) = if links.get(v).is_some_and(|row| row.contains_key(u)) {
                (v, u)
            } else {
                (u, v)
            };
            let link = links
                .entry(u.to_string())
                .or_default()
                .entry(v.to_string())
                .or_default();
            link.bandwidth_mbps_method = "static-trace".into();
            link.bandwidth_mbps = Some(trace);
        }
        let built = config.build()?;
        let topology = built.topology();
        let width = 2 + topology.max_degree();
        let n = topology.num_agents();

        let (header, rows) = read_csv(&files.actions)?;
        let column = |name: &str| {
            header
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| io_error(&files.actions, format!("no `{name}` column")))
        };
        let (step_col, agent_col, action_col) =
            (column("step")?, column("agent")?, column("action")?);
        let mut actions = vec![0.0f32; max_steps * n * width];
        let mut seen = vec![false; max_steps * n];
        for (r, row) in rows.iter().enumerate() {
            let cell = |c: usize| row.get(c).map_or("", String::as_str);
            let step: usize = parse(&files.actions, r, "step", cell(step_col))?;
            let agent = topology.index_of(cell(agent_col)).ok_or_else(|| {
                io_error(
                    &files.actions,
                    format!("row {}: unknown agent `{}`", r + 2, cell(agent_col)),
                )
            })?;
            let values = cell(action_col)
                .split_whitespace()
                .map(|v| parse::<f64>(&files.actions, r, "action", v).map(|x| x as f32))
                .collect::<Result<Vec<f32>, _>>()?;
            let k = topology.degree(agent);
            if step >= max_steps || values.len() != k + 2 {
                return Err(io_error(
                    &files.actions,
                    format!(
                        "row {}: step {step} (max_steps {max_steps}) with {} entries, expected {}",
                        r + 2,
                        values.len(),
                        k + 2
                    ),
                ));
            }
            let start = (step * n + agent) * width;
            actions[start..start + k + 2].copy_from_slice(&values);
            seen[step * n + agent] = true;
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(io_error(
                &files.actions,
                format!(
                    "no action for step {} agent {}",
                    missing / n,
                    topology.names()[missing % n]
                ),
            ));
        }
        Ok(Self { built, actions })
    }

    /// Steps the episode from its recorded traces, calling `on_step` with
    /// the metrics of every step.
    ///
    /// # Errors
    /// [`ConfigError`] if the model cannot be built; a step error (an
    /// action that is not finite) as [`ConfigError::Invalid`].
    pub fn replay(
        &self,
        mut on_step: impl FnMut(&EnvModel, &StepMetrics),
    ) -> Result<(), ConfigError> {
        let mut env = Env::new(EnvModel::new(&self.built)?);
        env.reset(Some(0))
            .map_err(|e| ConfigError::invalid("reset", e, "cannot start the episode"))?;
        let stride = env.model().num_agents() * env.model().action_width();
        for step_actions in self.actions.chunks_exact(stride) {
            env.step(step_actions)
                .map_err(|e| ConfigError::invalid("actions", e, "cannot step"))?;
            on_step(env.model(), env.metrics());
        }
        Ok(())
    }
}

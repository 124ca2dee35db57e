//! Per-step statistics in the reference's `stats.csv` format: one row per
//! step per agent (agents in agent order within a step), columns `step`,
//! `agent`, then every metric the reference keeps, named after its keys and
//! sorted by name. A cell is empty when the agent has no such key (the
//! `observation_prev_*` keys exist only for its own neighbours).

use crate::metrics::StepMetrics;
use crate::model::EnvModel;
use std::io::Write;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

/// Where a column's value comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    Count(fn(&StepMetrics) -> &[u32]),
    Time(fn(&StepMetrics) -> &[f64]),
    /// Per-neighbour count, `[agent][action_width]`, neighbour `node`.
    CountTo(fn(&StepMetrics) -> &[u32], usize),
    /// Per-neighbour time/delay, neighbour `node`.
    TimeTo(fn(&StepMetrics) -> &[f64], usize),
    ActionLocal,
    ActionReject,
    ActionForward,
    /// Observation entry `index` (only for agents that have it).
    Observation(ObservationEntry),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ObservationEntry {
    InputRate,
    PrevInputRate,
    PrevForwardTo(usize),
    PrevForwardRejectsTo(usize),
}

/// A value of one cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// An integer count.
    Int(i64),
    /// A float (reward, times, delays).
    Float(f64),
    /// The agent has no such key.
    Empty,
}

impl core::fmt::Display for Cell {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Cell::Int(v) => write!(f, "{v}"),
            Cell::Float(v) => write!(f, "{v:?}"),
            Cell::Empty => Ok(()),
        }
    }
}

/// The column layout of a model's `stats.csv`.
#[derive(Debug, Clone)]
pub struct StatsLayout {
    columns: Vec<(String, Source)>,
}

impl StatsLayout {
    /// Columns for `model`, sorted by name (`step` and `agent` excluded).
    #[must_use]
    pub fn new(model: &EnvModel) -> Self {
        let topology = model.built().topology();
        let names = topology.names();
        let mut columns: Vec<(String, Source)> = vec![
            ("action_local".into(), Source::ActionLocal),
            ("action_forward".into(), Source::ActionForward),
            ("action_reject".into(), Source::ActionReject),
            ("incoming_rate".into(), Source::Count(|m| &m.incoming_rate)),
            (
                "incoming_rate_local".into(),
                Source::Count(|m| &m.incoming_rate_local),
            ),
            (
                "incoming_rate_forward".into(),
                Source::Count(|m| &m.incoming_rate_forward),
            ),
            (
                "incoming_rate_reject".into(),
                Source::Count(|m| &m.incoming_rate_reject),
            ),
            (
                "incoming_rate_local_reject".into(),
                Source::Count(|m| &m.incoming_rate_local_reject),
            ),
            (
                "incoming_rate_forward_reject".into(),
                Source::Count(|m| &m.incoming_rate_forward_reject),
            ),
            (
                "forward_reject_rate".into(),
                Source::Count(|m| &m.forward_reject_rate),
            ),
            ("reward".into(), Source::Time(|m| &m.reward)),
            (
                "response_time_avg_local".into(),
                Source::Time(|m| &m.response_time_avg_local),
            ),
            (
                "response_time_avg_forwarded".into(),
                Source::Time(|m| &m.response_time_avg_forwarded),
            ),
            (
                "network_forward_delay_avg".into(),
                Source::Time(|m| &m.network_forward_delay_avg),
            ),
            (
                "network_return_delay_avg".into(),
                Source::Time(|m| &m.network_return_delay_avg),
            ),
            (
                "observation_input_rate".into(),
                Source::Observation(ObservationEntry::InputRate),
            ),
            (
                "observation_prev_input_rate".into(),
                Source::Observation(ObservationEntry::PrevInputRate),
            ),
        ];
        for node in topology.nodes_with_neighbours() {
            let n = &names[node];
            columns.push((
                format!("action_forward_to_{n}"),
                Source::CountTo(|m| &m.action, node),
            ));
            columns.push((
                format!("forward_rejects_to_{n}"),
                Source::CountTo(|m| &m.forward_rejects, node),
            ));
            columns.push((
                format!("response_time_avg_forwarded_to_{n}"),
                Source::TimeTo(|m| &m.response_time_avg_forwarded_to, node),
            ));
            columns.push((
                format!("network_forward_delay_avg_to_{n}"),
                Source::TimeTo(|m| &m.network_forward_delay_avg_to, node),
            ));
            columns.push((
                format!("network_return_delay_avg_to_{n}"),
                Source::TimeTo(|m| &m.network_return_delay_avg_to, node),
            ));
            columns.push((
                format!("observation_prev_forward_to_{n}"),
                Source::Observation(ObservationEntry::PrevForwardTo(node)),
            ));
            columns.push((
                format!("observation_prev_forward_rejects_to_{n}"),
                Source::Observation(ObservationEntry::PrevForwardRejectsTo(node)),
            ));
        }
        columns.sort_by(|a, b| a.0.cmp(&b.0));
        Self { columns }
    }

    /// Column names after `step` and `agent`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|(n, _)| n.as_str())
    }

    /// The cells of `agent`'s row for one step.
    #[must_use]
    pub fn row(&self, model: &EnvModel, metrics: &StepMetrics, agent: usize) -> Vec<Cell> {
        let topology = model.built().topology();
        let (w, ow) = (model.action_width(), model.obs_width());
        let k = model.degree(agent);
        // Position (1-based, as in actions) of `node` among the agent's neighbours.
        let position = |node: usize| {
            topology
                .neighbours(agent)
                .iter()
                .position(|&m| m as usize == node)
        };
        self.columns
            .iter()
            .map(|(_, source)| match *source {
                Source::Count(f) => Cell::Int(i64::from(f(metrics)[agent])),
                Source::Time(f) => Cell::Float(f(metrics)[agent]),
                Source::CountTo(f, node) => Cell::Int(
                    position(node).map_or(0, |p| i64::from(f(metrics)[agent * w + 1 + p])),
                ),
                Source::TimeTo(f, node) => {
                    Cell::Float(position(node).map_or(0.0, |p| f(metrics)[agent * w + 1 + p]))
                }
                Source::ActionLocal => Cell::Int(i64::from(metrics.action[agent * w])),
                Source::ActionReject => Cell::Int(i64::from(metrics.action[agent * w + k + 1])),
                Source::ActionForward => Cell::Int(
                    metrics.action[agent * w + 1..=agent * w + k]
                        .iter()
                        .map(|&c| i64::from(c))
                        .sum(),
                ),
                Source::Observation(entry) => {
                    let obs = &metrics.observation[agent * ow..(agent + 1) * ow];
                    let index = match entry {
                        ObservationEntry::InputRate => Some(0),
                        ObservationEntry::PrevInputRate => Some(1),
                        ObservationEntry::PrevForwardTo(node) => position(node).map(|p| 2 + p),
                        ObservationEntry::PrevForwardRejectsTo(node) => {
                            position(node).map(|p| 2 + k + p)
                        }
                    };
                    index.map_or(Cell::Empty, |i| Cell::Int(obs[i] as i64))
                }
            })
            .collect()
    }
}

/// Writes `stats.csv` rows as steps happen.
pub struct StatsWriter<W: Write> {
    layout: StatsLayout,
    out: csv::Writer<W>,
}

impl<W: Write> StatsWriter<W> {
    /// Writes the header for `model` to `out`.
    ///
    /// # Errors
    /// I/O errors of `out`.
    pub fn new(model: &EnvModel, out: W) -> std::io::Result<Self> {
        let layout = StatsLayout::new(model);
        let mut out = csv::Writer::from_writer(out);
        let mut header = vec!["step".to_string(), "agent".to_string()];
        header.extend(layout.names().map(str::to_string));
        out.write_record(&header)?;
        Ok(Self { layout, out })
    }

    /// Writes one row per agent for the step in `metrics`.
    ///
    /// # Errors
    /// I/O errors of the writer.
    pub fn write_step(&mut self, model: &EnvModel, metrics: &StepMetrics) -> std::io::Result<()> {
        for (agent, name) in model.built().topology().names().iter().enumerate() {
            let mut record = vec![metrics.step.to_string(), name.clone()];
            record.extend(
                self.layout
                    .row(model, metrics, agent)
                    .iter()
                    .map(ToString::to_string),
            );
            self.out.write_record(&record)?;
        }
        Ok(())
    }

    /// Flushes and returns the inner writer.
    ///
    /// # Errors
    /// I/O errors on flush.
    pub fn finish(self) -> std::io::Result<W> {
        self.out.into_inner().map_err(|e| e.into_error())
    }
}

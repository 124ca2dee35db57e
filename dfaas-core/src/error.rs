//! Typed errors. Every message names the field (or agent) and the value
//! that failed, e.g.
//! `network_links.node_0.node_1.access_delay_ms: must be >= 0, got -5`.

use crate::alloc_prelude::*;
use core::fmt;

/// An invalid or unreadable environment configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Occurs when the text is not valid YAML/JSON or a value has the wrong
    /// type (the parser's message names the key path and the line).
    Parse {
        /// `"yaml"` or `"json"`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// Occurs when a key is not a configuration key.
    UnknownKey {
        /// Path of the unknown key, e.g. `perfmodel_params.node_0.foo`.
        field: String,
    },
    /// Occurs when an entry that must exist is absent (a node of the
    /// network missing from a per-node table, a link missing from
    /// `network_links`).
    Missing {
        /// Path of the table, e.g. `perfmodel_params`.
        field: String,
        /// What is missing, e.g. `node 'node_2'`.
        what: String,
    },
    /// Occurs when a value is out of its valid range or inconsistent with
    /// another value.
    Invalid {
        /// Path of the field, e.g. `perfmodel_params.node_0.cold_service_time`.
        field: String,
        /// The offending value as text.
        value: String,
        /// What the value must satisfy.
        reason: String,
    },
    /// Occurs when a file named by the configuration cannot be read.
    Io {
        /// The file or folder.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(field: impl Into<String>, what: impl Into<String>) -> Self {
        Self::Missing {
            field: field.into(),
            what: what.into(),
        }
    }

    /// The field (key path) the error is about, when there is one.
    #[must_use]
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownKey { field }
            | Self::Missing { field, .. }
            | Self::Invalid { field, .. } => Some(field),
            Self::Parse { .. } | Self::Io { .. } => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { format, message } => write!(f, "invalid {format}: {message}"),
            Self::UnknownKey { field } => {
                write!(
                    f,
                    "{field}: unknown key (check its spelling against the documented keys)"
                )
            }
            Self::Missing { field, what } => write!(f, "{field}: {what} is missing"),
            Self::Invalid {
                field,
                value,
                reason,
            } => write!(f, "{field}: {reason}, got {value}"),
            Self::Io { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// An action batch or state that a step cannot accept. Nothing is changed
/// when a step returns an error.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StepError {
    /// Occurs when the action slice has the wrong length.
    ActionLength {
        /// Expected number of `f32` values.
        expected: usize,
        /// Given number.
        got: usize,
    },
    /// Occurs when an action entry is NaN or infinite.
    NonFiniteAction {
        /// Environment index in the batch (0 for a single env).
        env: usize,
        /// Agent name.
        agent: String,
        /// Entry index in the agent's action `[local, forwards.., reject]`.
        index: usize,
        /// The value.
        value: f32,
    },
    /// Occurs when `step` is called before the first `reset`, or after the
    /// last step of an episode of a single [`crate::Env`].
    NeedsReset,
    /// Occurs when an env index of a [`crate::BatchMetrics`] is not below
    /// its number of envs.
    EnvIndex {
        /// The index given.
        env: usize,
        /// Number of envs.
        num_envs: usize,
    },
    /// Occurs when a [`crate::BatchEnv`] of that many envs would not fit in
    /// memory's address range.
    TooManyEnvs {
        /// The number asked for.
        num_envs: usize,
    },
    /// Occurs when a slice given to [`crate::StepMetrics::record`] does not
    /// fit the model.
    InputLength {
        /// The slice.
        field: &'static str,
        /// Its length for this model.
        expected: usize,
        /// The given length.
        got: usize,
    },
    /// Occurs when the split given to [`crate::StepMetrics::record`] for an
    /// agent, `[local, forwards.., reject]`, does not sum to its input rate.
    SplitTotal {
        /// Agent index.
        agent: usize,
        /// The split's sum.
        sum: u64,
        /// The agent's input rate.
        rate: u32,
    },
    /// Occurs when a value given to [`crate::StepMetrics::record`] is not a
    /// step's state: more rejects than requests in an entry, or a node
    /// total beyond the model's response-time table.
    InputValue {
        /// The slice (`rejects`) or derived quantity (`incoming_rate`).
        field: &'static str,
        /// Entry (`rejects`) or node (`incoming_rate`) index.
        index: usize,
        /// The value.
        value: u64,
        /// The largest value accepted there.
        max: u64,
    },
    /// Occurs when a saved [`crate::batch::BatchEnvState`] does not fit the
    /// batch it is restored into.
    StateShape {
        /// The field that does not fit.
        field: &'static str,
        /// Its size in this batch.
        expected: usize,
        /// Its size in the saved state.
        got: usize,
    },
    /// Occurs when a saved [`crate::batch::BatchEnvState`] has the right
    /// shapes but a value this batch cannot continue from (an input rate
    /// above the model's tables, a cursor past the evaluation seeds).
    StateValue {
        /// The field.
        field: &'static str,
        /// Index of the first offending entry.
        index: usize,
        /// Its value.
        value: u64,
        /// The largest value accepted there.
        max: u64,
    },
    /// Occurs when an env of a [`crate::BatchEnv`] finished its episode and
    /// its next one could not start.
    AutoReset {
        /// Environment index.
        env: usize,
        /// Why the reset failed.
        error: ResetError,
    },
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ActionLength { expected, got } => {
                write!(f, "actions: expected {expected} values, got {got}")
            }
            Self::NonFiniteAction {
                env,
                agent,
                index,
                value,
            } => write!(
                f,
                "actions[env {env}][{agent}][{index}]: must be finite, got {value}"
            ),
            Self::NeedsReset => write!(
                f,
                "step: the episode is over or never started; call reset first"
            ),
            Self::EnvIndex { env, num_envs } => write!(
                f,
                "env: must be below the batch's {num_envs} envs, got {env}"
            ),
            Self::InputLength {
                field,
                expected,
                got,
            } => write!(f, "{field}: expected {expected} values, got {got}"),
            Self::TooManyEnvs { num_envs } => write!(
                f,
                "num_envs: {num_envs} environments do not fit in memory's address range"
            ),
            Self::SplitTotal { agent, sum, rate } => write!(
                f,
                "counts: agent {agent}'s split sums to {sum}, not to its input rate {rate}"
            ),
            Self::InputValue {
                field,
                index,
                value,
                max,
            } => write!(f, "{field}[{index}]: must be <= {max}, got {value}"),
            Self::StateValue {
                field,
                index,
                value,
                max,
            } => write!(
                f,
                "state.{field}[{index}]: must be <= {max} for this batch, got {value}"
            ),
            // The reset error itself is the `source()`.
            Self::AutoReset { env, .. } => {
                write!(f, "env {env}: its next episode could not start")
            }
            Self::StateShape {
                field,
                expected,
                got,
            } => write!(
                f,
                "state.{field}: {got} entries do not fit this batch ({expected}); restore into a batch of the same model and size"
            ),
        }
    }
}

impl core::error::Error for StepError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Self::AutoReset { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A reset that cannot produce an episode.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ResetError {
    /// Occurs in evaluation mode when no evaluation seeds were drawn
    /// (call `set_evaluation_seeds` first).
    EvaluationSeedsMissing,
    /// Occurs when the first reset gives no seed.
    SeedMissing,
    /// Occurs when the `real` method is asked for input rates without its
    /// day files (an `EnvModel` loads them; a hand-made `GeneratorInputs`
    /// may not).
    RealTracesMissing,
    /// Occurs when a `real` trace row is unusable (spec §4: all values below
    /// 1 or all above 150).
    UnsupportedTrace {
        /// Agent name.
        agent: String,
        /// The row's identifier (`<HashFunction>-dXX`).
        trace: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for ResetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EvaluationSeedsMissing => write!(
                f,
                "reset: evaluation mode needs evaluation seeds; call set_evaluation_seeds first"
            ),
            Self::SeedMissing => write!(f, "reset: the first reset must give a seed"),
            Self::RealTracesMissing => {
                write!(f, "input_rate_method real: no day files were loaded")
            }
            Self::UnsupportedTrace {
                agent,
                trace,
                reason,
            } => {
                write!(f, "input_rate[{agent}]: trace {trace}: {reason}")
            }
        }
    }
}

impl core::error::Error for ResetError {}

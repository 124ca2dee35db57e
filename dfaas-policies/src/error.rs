//! The crate's error types. Each names the field (or file) and the value
//! that failed, and chains its cause through `source()`, e.g.
//! `checkpoint runs/x/iter_000050: restoring the trainer` ← `state.norms[1]:
//! 4 features, the policy has 6`.

use dfaas_core::{ConfigError, ResetError, StepError};
use std::path::PathBuf;

/// A slice or size that does not fit the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// Occurs when a slice has the wrong length.
    #[error("{field}: expected {expected} values, got {got}")]
    Length {
        /// The slice.
        field: &'static str,
        /// Its length for this shape.
        expected: usize,
        /// The given length.
        got: usize,
    },
    /// Occurs when a size's product overflows `usize`.
    #[error("{field}: the size overflows ({detail})")]
    Overflow {
        /// The size.
        field: &'static str,
        /// The factors.
        detail: String,
    },
    /// Occurs when a size is outside what the operation handles.
    #[error("{field}: must be in {min}..={max}, got {got}")]
    OutOfRange {
        /// The size.
        field: &'static str,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
        /// Given.
        got: usize,
    },
}

/// The product of `factors`, or a [`ShapeError::Overflow`] naming `field`.
pub(crate) fn product(field: &'static str, factors: &[usize]) -> Result<usize, ShapeError> {
    factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| ShapeError::Overflow {
            field,
            detail: format!("{factors:?}"),
        })
}

/// `Ok` when `got == expected`, else [`ShapeError::Length`].
pub(crate) fn length(field: &'static str, expected: usize, got: usize) -> Result<(), ShapeError> {
    if got == expected {
        Ok(())
    } else {
        Err(ShapeError::Length {
            field,
            expected,
            got,
        })
    }
}

/// A name that is not one of a setting's choices (e.g. `--layout`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: unknown `{got}`, expected one of {choices}")]
pub struct UnknownName {
    /// The setting.
    pub setting: &'static str,
    /// The given name.
    pub got: String,
    /// The accepted names.
    pub choices: &'static str,
}

/// A PPO setting out of its range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PpoConfigError {
    /// Occurs when a setting breaks its rule.
    #[error("{field}: {rule}, got {value}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Its value as text.
        value: String,
        /// What it must satisfy.
        rule: &'static str,
    },
}

/// A backend operation that cannot run on its inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Occurs when an input slice or the policy spec does not fit.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Occurs when an observation does not fit the agnostic layout's entry
    /// rows ([`dfaas_infer::agnostic::entry_rows`]).
    #[error("entry rows of the agnostic layout")]
    EntryRows(#[source] dfaas_infer::ShapeError),
    /// Occurs when a checkpoint lacks a tensor of the policy.
    #[error("tensor {name} is missing")]
    TensorMissing {
        /// Its name.
        name: String,
    },
    /// Occurs when a tensor has the wrong number of values.
    #[error("tensor {name}: {got} values, expected {expected} (shape {shape:?})")]
    TensorSize {
        /// Its name.
        name: String,
        /// Values for the policy's shape.
        expected: usize,
        /// Values found.
        got: usize,
        /// The policy's shape of it.
        shape: Vec<usize>,
    },
    /// Occurs when a tensor holds a value it cannot (NaN or ±∞; a step
    /// count that is not a whole number ≥ 0).
    #[error("tensor {name}[{index}]: {rule}, got {value}")]
    TensorValue {
        /// Its name.
        name: String,
        /// Index of the first such value.
        index: usize,
        /// The value.
        value: f32,
        /// What it must be.
        rule: &'static str,
    },
}

/// A controller that cannot act on the given batch.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Occurs when observations or actions do not fit the model.
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// Occurs when the policy's backend refuses the batch.
    #[error("the policy's backend refused the batch")]
    Backend(#[source] BackendError),
    /// Occurs when the inference policy refuses an observation (a
    /// non-finite value).
    #[error("the trained policy refused the observation")]
    Act(#[from] dfaas_infer::ActError),
}

/// A trainer that cannot be built, restored or stepped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// Occurs when a PPO setting is out of range.
    #[error("invalid PPO configuration")]
    Config(#[source] PpoConfigError),
    /// Occurs when the environments cannot be reset.
    #[error("resetting the environments")]
    Reset(#[source] ResetError),
    /// Occurs when the environments refuse a step or a saved state.
    #[error("stepping or restoring the environments")]
    Env(#[source] StepError),
    /// Occurs when a policy's backend refuses an operation.
    #[error("policy {policy}")]
    Backend {
        /// Index of the policy.
        policy: usize,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// Occurs when a saved trainer state does not fit the configuration.
    #[error("state.{field}: {reason}")]
    State {
        /// The field of the state.
        field: String,
        /// Why it does not fit.
        reason: String,
    },
    /// Occurs when a loss statistic or a gradient norm of an iteration was
    /// NaN or infinite (the parameters are then not to be trusted).
    #[error(
        "iteration {iteration}: a loss or gradient became NaN or infinite (try a lower learning rate)"
    )]
    NonFinite {
        /// The 1-based iteration.
        iteration: usize,
    },
    /// Occurs when the GPU refuses an operation.
    #[cfg(feature = "gpu")]
    #[error("on the GPU")]
    Gpu(#[source] dfaas_gpu::GpuError),
    /// Occurs when a counter restored from a state would overflow.
    #[error("{counter}: {value} + {added} overflows")]
    CounterOverflow {
        /// `env_steps` or `iteration`.
        counter: &'static str,
        /// Its value.
        value: u64,
        /// What the iteration adds.
        added: u64,
    },
}

/// A checkpoint that cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Occurs when a file or folder cannot be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Occurs when a file or folder cannot be written.
    #[error("writing {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Occurs when `state.json` is not a valid trainer state.
    #[error("{}: not a valid checkpoint state", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Occurs when `state.json` has another format tag.
    #[error("{}: format `{found}`, expected `{}`", path.display(), crate::checkpoint::FORMAT)]
    Format {
        /// The file.
        path: PathBuf,
        /// Its tag.
        found: String,
    },
    /// Occurs when a trainer's policies do not load as an inference
    /// policy.
    #[error("the trained policies do not load for inference")]
    Inference(#[source] dfaas_infer::LoadError),
    /// Occurs when `policies.safetensors` cannot be parsed or written.
    #[error("{}: not a valid safetensors file", path.display())]
    Tensors {
        /// The file.
        path: PathBuf,
        /// The safetensors error.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// Occurs when the saved environment configuration does not build.
    #[error("{}: env_config", path.display())]
    EnvConfig {
        /// The file.
        path: PathBuf,
        /// The build error.
        #[source]
        source: ConfigError,
    },
    /// Occurs when the saved state does not fit its own configuration.
    #[error("restoring the trainer{}", of_folder(path))]
    Restore {
        /// The checkpoint folder (empty for [`crate::checkpoint::from_bytes`]).
        path: PathBuf,
        /// Why.
        #[source]
        source: TrainError,
    },
    /// Occurs when a run folder holds no checkpoint that loads.
    #[error("{}: no complete checkpoint loads ({tried} tried)", dir.display())]
    NoneLoads {
        /// The folder of checkpoints.
        dir: PathBuf,
        /// How many were tried.
        tried: usize,
    },
}

/// ` of checkpoint <path>`, or nothing for an empty path.
fn of_folder(path: &std::path::Path) -> String {
    if path.as_os_str().is_empty() {
        String::new()
    } else {
        format!(" of checkpoint {}", path.display())
    }
}

impl CheckpointError {
    /// The same error with its file names taken relative to `dir`.
    pub(crate) fn located(self, dir: &std::path::Path) -> Self {
        match self {
            Self::Json { path, source } => Self::Json {
                path: dir.join(path),
                source,
            },
            Self::Format { path, found } => Self::Format {
                path: dir.join(path),
                found,
            },
            Self::Tensors { path, source } => Self::Tensors {
                path: dir.join(path),
                source,
            },
            Self::EnvConfig { path, source } => Self::EnvConfig {
                path: dir.join(path),
                source,
            },
            Self::Restore { path, source } => Self::Restore {
                path: dir.join(path),
                source,
            },
            other => other,
        }
    }
}

/// An evaluation that cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvaluateError {
    /// Occurs when `episodes` is 0.
    #[error("episodes: must be > 0, got 0")]
    NoEpisodes,
    /// Occurs when the evaluation configuration does not build.
    #[error("building the evaluation environment")]
    Config(#[source] ConfigError),
    /// Occurs when the evaluation environments cannot be reset.
    #[error("resetting the evaluation environments")]
    Reset(#[source] ResetError),
    /// Occurs when the environments refuse a step.
    #[error("stepping the evaluation environments")]
    Step(#[source] StepError),
    /// Occurs when the controller cannot act.
    #[error("policy {policy}")]
    Control {
        /// The controller's name.
        policy: String,
        /// Why.
        #[source]
        source: ControlError,
    },
    /// Occurs when the per-step callback fails (writing statistics).
    #[error("recording a step")]
    Record(#[source] std::io::Error),
}

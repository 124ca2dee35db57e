//! Checkpoints of a [`Trainer`]: a folder holding
//!
//! * `policies.safetensors` — every policy's actor and critic parameters
//!   and Adam moments, named `policy{p}.{actor|critic}.layer{i}.{weight|bias}`
//!   (`[out, in]` / `[out]`, f32), with `.adam_m` / `.adam_v` twins and
//!   `policy{p}.{actor|critic}.adam_t` (`[1]`); policy `p` is agent `p`'s
//!   in the independent and MAPPO layouts, the only one in the shared
//!   layout (the standard safetensors layout: an 8-byte header length, a
//!   JSON header, little-endian data);
//! * `state.json` — the PPO configuration, the built environment
//!   configuration, and the trainer's state: iteration, step counts, KL
//!   coefficients, observation statistics, its random stream, and the
//!   environments' full state (streams, episodes, observations).
//!
//! Each file is written atomically, `state.json` last: a folder without it
//! is incomplete and ignored by [`latest`]; [`load_latest`] also steps over
//! complete-looking folders whose files are truncated or corrupt, back to
//! the newest that loads. Loading a checkpoint and training on gives
//! exactly the run that was never interrupted.

use crate::backend::Backend;
use crate::error::CheckpointError;
use crate::mlp::Activation;
use crate::ppo::{PpoConfig, Trainer, TrainerState};
use dfaas_core::EnvConfig;
use dfaas_core::io::write_atomically;
use dfaas_infer::metadata::{
    AgentMetadata, CONCENTRATION, InferenceMetadata, METADATA_KEY, METADATA_VERSION,
    norm_mean_name, norm_var_name,
};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Format tag of `state.json`.
pub const FORMAT: &str = "dfaas-ppo-checkpoint/1";

#[derive(serde::Serialize, serde::Deserialize)]
struct StateFile {
    format: String,
    ppo_config: PpoConfig,
    env_config: EnvConfig,
    state: TrainerState,
}

/// Writes `trainer`'s checkpoint into `dir` (created).
///
/// # Errors
/// [`CheckpointError`] of writing or serialising, naming the file.
pub fn save<B: Backend + Clone + Send + Sync>(
    trainer: &Trainer<B>,
    dir: &Path,
) -> Result<(), CheckpointError>
where
    B::Policy: Send + Sync,
{
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CheckpointError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_error(dir))?;
    let path = dir.join("policies.safetensors");
    let bytes = policies_file(trainer, &path)?;
    write_atomically(&path, |w| w.write_all(&bytes)).map_err(write_error(&path))?;
    let state = StateFile {
        format: FORMAT.into(),
        ppo_config: trainer.config().clone(),
        env_config: trainer.model().built().config().clone(),
        state: trainer.state(),
    };
    let path = dir.join("state.json");
    let json = serde_json::to_vec(&state).map_err(|source| CheckpointError::Json {
        path: path.clone(),
        source,
    })?;
    write_atomically(&path, |w| w.write_all(&json)).map_err(write_error(&path))
}

/// The bytes of `trainer`'s `policies.safetensors` (`path` names it in
/// errors).
fn policies_file<B: Backend + Clone + Send + Sync>(
    trainer: &Trainer<B>,
    path: &Path,
) -> Result<Vec<u8>, CheckpointError>
where
    B::Policy: Send + Sync,
{
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (a, policy) in trainer.policies().iter().enumerate() {
        for (name, shape, values) in trainer.backend().tensors(policy) {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((format!("policy{a}.{name}"), Dtype::F32, shape, bytes));
        }
    }
    if trainer.config().normalize_observations {
        for (p, norm) in trainer.norms().iter().enumerate() {
            let (mean, var) = norm.mean_and_variance();
            for (name, values) in [(norm_mean_name(p), mean), (norm_var_name(p), var)] {
                let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                tensors.push((name, Dtype::F64, vec![values.len()], bytes));
            }
        }
    }
    let inference = serde_json::to_string(&inference_metadata(trainer)).map_err(|source| {
        CheckpointError::Json {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let tensor_error = |source| CheckpointError::Tensors {
        path: path.to_path_buf(),
        source,
    };
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(tensor_error)?;
    // One entry only: safetensors writes its metadata map in hash order,
    // so a second entry would make equal checkpoints differ byte for byte.
    // (The `format` entry written before is not read by anything; the
    // format tag that loading checks is `state.json`'s.)
    let metadata = HashMap::from([(METADATA_KEY.to_string(), inference)]);
    safetensors::serialize(views, Some(metadata)).map_err(tensor_error)
}

/// `trainer`'s actors as an inference policy: what its checkpoint's
/// `policies.safetensors` loads to, without the file.
///
/// # Errors
/// [`CheckpointError::Tensors`] when the tensors cannot be serialised;
/// [`CheckpointError::Inference`] when they do not load.
pub fn inference_policy<B: Backend + Clone + Send + Sync>(
    trainer: &Trainer<B>,
) -> Result<dfaas_infer::Policy, CheckpointError>
where
    B::Policy: Send + Sync,
{
    let bytes = policies_file(trainer, Path::new("policies.safetensors"))?;
    dfaas_infer::Policy::from_safetensors(&bytes).map_err(CheckpointError::Inference)
}

/// What inference needs besides the tensors (`dfaas_infer::metadata`).
fn inference_metadata<B: Backend + Clone + Send + Sync>(trainer: &Trainer<B>) -> InferenceMetadata
where
    B::Policy: Send + Sync,
{
    let config = trainer.config();
    let topology = trainer.model().built().topology();
    let names = topology.names();
    InferenceMetadata {
        version: METADATA_VERSION,
        layout: config.layout.name().into(),
        gossip: config.gossip,
        local_bias: config.local_bias,
        activation: match config.activation {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        }
        .into(),
        concentration: CONCENTRATION.into(),
        normalize_observations: config.normalize_observations,
        max_input_rate: trainer.model().max_input_rate(),
        agents: (0..names.len())
            .map(|a| AgentMetadata {
                name: names[a].clone(),
                neighbours: topology
                    .neighbours(a)
                    .iter()
                    .map(|&j| names[j as usize].clone())
                    .collect(),
            })
            .collect(),
    }
}

/// Rebuilds the trainer saved in `dir` on `backend`.
///
/// # Errors
/// [`CheckpointError`]: a missing or malformed file, a tensor that does not
/// fit, or a state that does not fit the configuration, named.
pub fn load<B: Backend + Clone + Send + Sync>(
    dir: &Path,
    backend: B,
) -> Result<Trainer<B>, CheckpointError>
where
    B::Policy: Send + Sync,
{
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| CheckpointError::Read { path, source })
    };
    let (state, tensors) = (read("state.json")?, read("policies.safetensors")?);
    from_bytes(&state, &tensors, backend).map_err(|e| e.located(dir))
}

/// Rebuilds a trainer from the bytes of a checkpoint's `state.json` and
/// `policies.safetensors` (what [`load`] reads); errors name the files as
/// `state.json` / `policies.safetensors`.
///
/// # Errors
/// As [`load`].
pub fn from_bytes<B: Backend + Clone + Send + Sync>(
    state: &[u8],
    tensors: &[u8],
    backend: B,
) -> Result<Trainer<B>, CheckpointError>
where
    B::Policy: Send + Sync,
{
    let state_path = PathBuf::from("state.json");
    let state: StateFile =
        serde_json::from_slice(state).map_err(|source| CheckpointError::Json {
            path: state_path.clone(),
            source,
        })?;
    if state.format != FORMAT {
        return Err(CheckpointError::Format {
            path: state_path,
            found: state.format,
        });
    }
    let tensors = SafeTensors::deserialize(tensors).map_err(|source| CheckpointError::Tensors {
        path: PathBuf::from("policies.safetensors"),
        source,
    })?;
    let lookup = |name: &str| -> Option<Vec<f32>> {
        let view = tensors.tensor(name).ok()?;
        (view.dtype() == Dtype::F32).then(|| {
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    };
    let env_error = |source| CheckpointError::EnvConfig {
        path: state_path.clone(),
        source,
    };
    let built = state.env_config.build().map_err(env_error)?;
    let model = dfaas_core::EnvModel::new(&built).map_err(env_error)?;
    Trainer::restore(model, state.ppo_config, backend, state.state, &lookup).map_err(|source| {
        CheckpointError::Restore {
            path: PathBuf::new(),
            source,
        }
    })
}

/// The complete checkpoints under `dir` (sub-folders named `iter_NNNNNN`
/// holding a `state.json`), oldest first.
///
/// # Errors
/// [`CheckpointError::Read`] when `dir` cannot be listed.
pub fn complete(dir: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CheckpointError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut complete: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("iter_"))
                && p.join("state.json").is_file()
        })
        .collect();
    complete.sort();
    Ok(complete)
}

/// The latest complete checkpoint under `dir`, if any.
#[must_use]
pub fn latest(dir: &Path) -> Option<PathBuf> {
    complete(dir).ok()?.pop()
}

/// A trainer from the newest checkpoint under `dir` that loads.
pub struct Resumed<B: Backend> {
    /// The trainer.
    pub trainer: Trainer<B>,
    /// The checkpoint it came from.
    pub from: PathBuf,
    /// Newer checkpoints that did not load (truncated, corrupt), newest
    /// first, with why.
    pub skipped: Vec<(PathBuf, CheckpointError)>,
}

/// Loads the newest checkpoint under `dir` that loads, trying older ones
/// when the newest are truncated or corrupt (they are reported in
/// [`Resumed::skipped`], never deleted).
///
/// # Errors
/// [`CheckpointError::NoneLoads`] when none loads (or none exists), and
/// [`CheckpointError::Read`] when `dir` cannot be listed.
pub fn load_latest<B: Backend + Clone + Send + Sync>(
    dir: &Path,
    backend: B,
) -> Result<Resumed<B>, CheckpointError>
where
    B::Policy: Send + Sync,
{
    let candidates = complete(dir)?;
    let tried = candidates.len();
    let mut skipped = Vec::new();
    for path in candidates.into_iter().rev() {
        match load(&path, backend.clone()) {
            Ok(trainer) => {
                return Ok(Resumed {
                    trainer,
                    from: path,
                    skipped,
                });
            }
            Err(e) => skipped.push((path, e)),
        }
    }
    Err(CheckpointError::NoneLoads {
        dir: dir.to_path_buf(),
        tried,
    })
}

/// The folder name of the checkpoint after `iteration` iterations.
#[must_use]
pub fn folder_name(iteration: usize) -> String {
    format!("iter_{iteration:06}")
}

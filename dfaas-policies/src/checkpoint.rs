//! Checkpoints of a [`Trainer`]: a folder holding
//!
//! * `policies.safetensors` — every policy's actor and critic parameters
//!   and Adam moments, named `policy{p}.{actor|critic}.layer{i}.{weight|bias}`
//!   (`[out, in]` / `[out]`, f32), with `.adam_m` / `.adam_v` twins and
//!   `policy{p}.{actor|critic}.adam_t` (`[1]`); policy `p` is agent `p`'s
//!   in the independent and MAPPO layouts, the only one in the shared
//!   layout; loadable with PyTorch's `safetensors.torch.load_file`;
//! * `state.json` — the PPO configuration, the built environment
//!   configuration, and the trainer's state: iteration, step counts, KL
//!   coefficients, observation statistics, its random stream, and the
//!   environments' full state (streams, episodes, observations).
//!
//! Each file is written atomically, `state.json` last: a folder without it
//! is incomplete and ignored by [`latest`]. Loading a checkpoint and
//! training on gives exactly the run that was never interrupted.

use crate::backend::Backend;
use crate::ppo::{PpoConfig, Trainer, TrainerState};
use dfaas_core::EnvConfig;
use dfaas_core::io::write_atomically;
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
/// I/O or serialisation errors, naming the file.
pub fn save<B: Backend + Clone + Send>(trainer: &Trainer<B>, dir: &Path) -> Result<(), String>
where
    B::Policy: Send,
{
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (a, policy) in trainer.policies().iter().enumerate() {
        for (name, shape, values) in trainer.backend().tensors(policy) {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((format!("policy{a}.{name}"), shape, bytes));
        }
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("{name}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = HashMap::from([("format".to_string(), FORMAT.to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())?;
    let path = dir.join("policies.safetensors");
    write_atomically(&path, |w| w.write_all(&bytes)).map_err(|e| e.to_string())?;
    let state = StateFile {
        format: FORMAT.into(),
        ppo_config: trainer.config().clone(),
        env_config: trainer.model().built().config().clone(),
        state: trainer.state(),
    };
    let json = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
    write_atomically(&dir.join("state.json"), |w| w.write_all(&json)).map_err(|e| e.to_string())
}

/// Rebuilds the trainer saved in `dir` on `backend`.
///
/// # Errors
/// A missing or malformed file, a tensor that does not fit, or a state that
/// does not fit the configuration, named.
pub fn load<B: Backend + Clone + Send>(dir: &Path, backend: B) -> Result<Trainer<B>, String>
where
    B::Policy: Send,
{
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let state: StateFile = serde_json::from_slice(&read("state.json")?)
        .map_err(|e| format!("{}: {e}", dir.join("state.json").display()))?;
    if state.format != FORMAT {
        return Err(format!(
            "state.json: format `{}`, expected `{FORMAT}`",
            state.format
        ));
    }
    let bytes = read("policies.safetensors")?;
    let tensors =
        SafeTensors::deserialize(&bytes).map_err(|e| format!("policies.safetensors: {e}"))?;
    let lookup = |name: &str| -> Option<Vec<f32>> {
        let view = tensors.tensor(name).ok()?;
        (view.dtype() == Dtype::F32).then(|| {
            view.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    };
    let built = state
        .env_config
        .build()
        .map_err(|e| format!("state.json env_config: {e}"))?;
    let model = dfaas_core::EnvModel::new(&built).map_err(|e| e.to_string())?;
    Trainer::restore(model, state.ppo_config, backend, state.state, &lookup)
}

/// The latest complete checkpoint under `dir` (sub-folders named
/// `iter_NNNNNN` holding a `state.json`).
#[must_use]
pub fn latest(dir: &Path) -> Option<PathBuf> {
    let mut complete: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("iter_"))
                && p.join("state.json").is_file()
        })
        .collect();
    complete.sort();
    complete.pop()
}

/// The folder name of the checkpoint after `iteration` iterations.
#[must_use]
pub fn folder_name(iteration: usize) -> String {
    format!("iter_{iteration:06}")
}

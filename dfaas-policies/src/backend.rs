//! The numeric operations PPO needs, behind one small trait so that the
//! algorithm ([`crate::ppo`]) is written once: [`Backend::act`] (actor and
//! critic forward for a batch) and [`Backend::update`] (one minibatch step:
//! loss, gradients, clipping, Adam). [`CpuBackend`] implements it with
//! [`crate::mlp`] on the CPU; a GPU backend implements the same trait.
//!
//! The loss of one minibatch (means over its samples), as RLlib's PPO:
//! `−min(r·A, clip(r, 1−ε, 1+ε)·A) + c_v·min((V − R)², v_clip) − c_H·H +
//! c_KL·KL(old ‖ new)`, where `r = exp(log π − log π_old)` and the actor's
//! concentrations are `softplus(output) + 1e-7` (the reference's patched
//! RLlib Dirichlet).

use crate::adam::{Adam, clip_global_norm};
use crate::dirichlet;
use crate::error::{BackendError, ShapeError, length, product};
use crate::mlp::{Activation, Mlp, MlpCache};

/// Floor added to the concentrations.
pub const CONCENTRATION_EPSILON: f32 = 1e-7;

/// Shapes of one policy (an actor and a critic).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// Actor input width.
    pub obs_dim: usize,
    /// Critic input width (the actor's for independent critics; all agents'
    /// observations for a centralised critic).
    pub critic_obs_dim: usize,
    /// Dirichlet dimension (`2 + degree`).
    pub action_dim: usize,
    /// Whether the actor scores each Dirichlet entry on its own: one
    /// network from `obs_dim / action_dim` inputs (the entry's row) to one
    /// output, applied to each of a sample's `action_dim` rows (the
    /// agnostic layout). Otherwise one network maps a sample's `obs_dim`
    /// inputs to its `action_dim` outputs.
    pub per_entry: bool,
    /// Hidden layer widths (both networks).
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Fixed bias added to the actor's local output (entry 0) before
    /// softplus: with a positive one a policy starts by keeping most of
    /// its requests local ([`crate::ppo::PpoConfig::local_bias`]).
    pub local_bias: f32,
}

impl PolicySpec {
    /// Input width of the actor network: a sample's `obs_dim`, or one
    /// entry row's `obs_dim / action_dim` when [`PolicySpec::per_entry`].
    #[must_use]
    pub fn actor_input(&self) -> usize {
        if self.per_entry {
            self.obs_dim / self.action_dim.max(1)
        } else {
            self.obs_dim
        }
    }

    /// Rows the actor network computes for `samples` samples.
    fn actor_rows(&self, samples: usize) -> usize {
        if self.per_entry {
            samples * self.action_dim
        } else {
            samples
        }
    }
}

/// One minibatch, row-major `[sample][..]`; [`Minibatch::check`] tells
/// whether its slices fit a policy.
#[derive(Debug, Clone, Copy)]
pub struct Minibatch<'a> {
    /// Number of samples.
    pub size: usize,
    /// Actor inputs `[size][obs_dim]`.
    pub obs: &'a [f32],
    /// Critic inputs `[size][critic_obs_dim]`.
    pub critic_obs: &'a [f32],
    /// Actions taken `[size][action_dim]`.
    pub actions: &'a [f32],
    /// Concentrations that produced them `[size][action_dim]`.
    pub old_alpha: &'a [f32],
    /// Their log-densities.
    pub old_log_prob: &'a [f32],
    /// Advantages (already standardised if wanted).
    pub advantages: &'a [f32],
    /// Value targets.
    pub returns: &'a [f32],
    /// Which outputs form each sample's Dirichlet, `[size][action_dim]` (1 =
    /// used), for a policy shared by agents with different numbers of
    /// neighbours; `None`: every output. Unused entries of `actions` and
    /// `old_alpha` are ignored.
    pub mask: Option<&'a [u8]>,
}

impl Minibatch<'_> {
    /// Checks every slice's length against `size` and the policy's widths.
    ///
    /// # Errors
    /// [`ShapeError`] naming the first slice that does not fit.
    pub fn check(&self, spec: &PolicySpec) -> Result<(), ShapeError> {
        let n = self.size;
        let k = spec.action_dim;
        length(
            "minibatch.obs",
            product("minibatch.obs", &[n, spec.obs_dim])?,
            self.obs.len(),
        )?;
        length(
            "minibatch.critic_obs",
            product("minibatch.critic_obs", &[n, spec.critic_obs_dim])?,
            self.critic_obs.len(),
        )?;
        length("minibatch.returns", n, self.returns.len())?;
        self.check_actor(k)
    }

    /// Checks the slices the actor's loss reads (actions, old
    /// concentrations, old log-densities, advantages, mask) against `size`
    /// and `action_dim`.
    fn check_actor(&self, action_dim: usize) -> Result<(), ShapeError> {
        let (n, k) = (self.size, action_dim);
        let wide = product("minibatch.actions", &[n, k])?;
        length("minibatch.actions", wide, self.actions.len())?;
        length("minibatch.old_alpha", wide, self.old_alpha.len())?;
        length("minibatch.old_log_prob", n, self.old_log_prob.len())?;
        length("minibatch.advantages", n, self.advantages.len())?;
        if let Some(mask) = self.mask {
            length("minibatch.mask", wide, mask.len())?;
        }
        if k > dirichlet::MAX_ENTRIES {
            return Err(ShapeError::OutOfRange {
                field: "action_dim",
                min: 1,
                max: dirichlet::MAX_ENTRIES,
                got: k,
            });
        }
        Ok(())
    }
}

/// Coefficients of the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossCoefficients {
    /// PPO ratio clip ε.
    pub clip: f32,
    /// Value-loss weight.
    pub value_coeff: f32,
    /// Cap of the squared value error (RLlib's `vf_clip_param`); `None`: no cap.
    pub value_clip: Option<f32>,
    /// Entropy bonus weight.
    pub entropy_coeff: f32,
    /// KL penalty weight (0 disables it).
    pub kl_coeff: f32,
    /// Global gradient-norm cap; `None`: no clipping.
    pub max_grad_norm: Option<f32>,
}

/// Statistics of one update (means over the minibatch).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UpdateStats {
    /// Clipped surrogate loss.
    pub policy_loss: f32,
    /// Value loss (before its weight).
    pub value_loss: f32,
    /// Entropy of the new policy.
    pub entropy: f32,
    /// KL(old ‖ new).
    pub kl: f32,
    /// Share of samples whose ratio was clipped.
    pub clip_fraction: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
}

/// The operations PPO runs on a device.
pub trait Backend {
    /// One policy's parameters and optimiser state on this backend.
    type Policy: Clone;

    /// A freshly initialised policy (RLlib's initialisation) from `seed`.
    ///
    /// # Errors
    /// [`BackendError::Shape`] for widths of 0 or sizes that overflow.
    fn init_policy(&self, spec: &PolicySpec, seed: u64) -> Result<Self::Policy, BackendError>;

    /// Concentrations `[batch][action_dim]` for actor inputs
    /// `[batch][obs_dim]`. `mask` (`[batch][action_dim]`, 1 = used), when
    /// given, names the outputs each sample's Dirichlet uses: a per-entry
    /// actor then scores only those rows, and the others' concentrations
    /// are unspecified. Each sample is computed alone, so its
    /// concentrations do not depend on the batch it is in.
    ///
    /// # Errors
    /// [`BackendError::Shape`] naming a slice that does not fit.
    fn concentrations(
        &mut self,
        policy: &Self::Policy,
        obs: &[f32],
        batch: usize,
        mask: Option<&[u8]>,
        alpha: &mut [f32],
    ) -> Result<(), BackendError>;

    /// The critic's values `[batch]` for critic inputs
    /// `[batch][critic_obs_dim]`, each sample computed alone (a value does
    /// not depend on the batch it is in).
    ///
    /// # Errors
    /// [`BackendError::Shape`] naming a slice that does not fit.
    fn values(
        &mut self,
        policy: &Self::Policy,
        critic_obs: &[f32],
        batch: usize,
        values: &mut [f32],
    ) -> Result<(), BackendError>;

    /// [`Backend::concentrations`] and [`Backend::values`] of one batch.
    ///
    /// # Errors
    /// [`BackendError::Shape`] naming a slice that does not fit (the
    /// output lengths are checked before anything is computed).
    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        policy: &Self::Policy,
        obs: &[f32],
        critic_obs: &[f32],
        batch: usize,
        mask: Option<&[u8]>,
        alpha: &mut [f32],
        values: &mut [f32],
    ) -> Result<(), BackendError> {
        length("values", batch, values.len())?;
        self.concentrations(policy, obs, batch, mask, alpha)?;
        self.values(policy, critic_obs, batch, values)
    }

    /// One gradient step on a minibatch.
    ///
    /// # Errors
    /// [`BackendError::Shape`] when the minibatch does not fit the policy
    /// ([`Minibatch::check`]); the policy is unchanged then.
    fn update(
        &mut self,
        policy: &mut Self::Policy,
        minibatch: &Minibatch<'_>,
        coefficients: &LossCoefficients,
    ) -> Result<UpdateStats, BackendError>;

    /// Named tensors of a policy's parameters and optimiser state: `(name,
    /// shape, values)`, for checkpoints.
    fn tensors(&self, policy: &Self::Policy) -> Vec<(String, Vec<usize>, Vec<f32>)>;

    /// A policy of `spec` rebuilt from the tensors [`Backend::tensors`]
    /// wrote, looked up by name.
    ///
    /// # Errors
    /// A missing tensor, one of the wrong size or with a non-finite value,
    /// named.
    fn load_policy(
        &self,
        spec: &PolicySpec,
        tensor: &dyn Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<Self::Policy, BackendError>;
}

/// A policy on the CPU: actor and critic MLPs, their parameters and Adam.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuPolicy {
    /// The shapes it was made for.
    pub spec: PolicySpec,
    /// Actor network shape.
    pub actor: Mlp,
    /// Critic network shape.
    pub critic: Mlp,
    /// Actor parameters.
    pub actor_params: Vec<f32>,
    /// Critic parameters.
    pub critic_params: Vec<f32>,
    /// Actor optimiser.
    pub actor_adam: Adam,
    /// Critic optimiser.
    pub critic_adam: Adam,
}

/// The CPU backend: plain Rust, deterministic for a seed. An update's
/// actor and critic halves run as one `rayon::join` (on the current pool),
/// each on its own scratch, so the result does not depend on the threads.
#[derive(Debug, Default, Clone)]
pub struct CpuBackend {
    actor: ActorScratch,
    critic: CriticScratch,
}

/// The actor's buffers of one forward and backward pass.
#[derive(Debug, Default, Clone)]
struct ActorScratch {
    cache: MlpCache,
    /// The outputs `[samples][action_dim]` of the last forward.
    outputs: Vec<f32>,
    /// Whether the last forward computed only the entry rows a mask marks
    /// (`used_rows`, their inputs `gathered`) rather than every row.
    compacted: bool,
    used_rows: Vec<usize>,
    gathered: Vec<f32>,
    /// ∂L/∂outputs of the last update: `[samples][action_dim]`, or the
    /// computed rows only when compacted.
    d_outputs: Vec<f32>,
    grads: Vec<f32>,
}

/// The critic's buffers of one forward and backward pass.
#[derive(Debug, Default, Clone)]
struct CriticScratch {
    cache: MlpCache,
    d_values: Vec<f32>,
    grads: Vec<f32>,
}

fn softplus(x: f32) -> f32 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl CpuBackend {
    /// A CPU backend.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

/// Adds `spec.local_bias` to the local output (entry 0) of every sample's
/// `outputs` (`[samples][action_dim]`): the actor's outputs as the loss
/// and the concentrations see them (a constant shift, so ∂L/∂outputs is
/// the same before and after it).
fn shift_local(outputs: &mut [f32], spec: &PolicySpec) {
    if spec.local_bias != 0.0 {
        for local in outputs.iter_mut().step_by(spec.action_dim.max(1)) {
            *local += spec.local_bias;
        }
    }
}

impl ActorScratch {
    /// The actor's forward pass over `samples` samples into `outputs`
    /// (`[samples][action_dim]`). A per-entry actor with a `mask` computes
    /// only the rows it marks (the padding of agents with fewer neighbours
    /// is skipped; those outputs are 0).
    fn forward(
        &mut self,
        policy: &CpuPolicy,
        obs: &[f32],
        samples: usize,
        mask: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        let spec = &policy.spec;
        let rows = spec.actor_rows(samples);
        self.used_rows.clear();
        self.compacted = false;
        let (Some(mask), true) = (mask, spec.per_entry) else {
            policy
                .actor
                .forward(&policy.actor_params, obs, rows, &mut self.cache)?;
            self.outputs.clone_from(&self.cache.output);
            shift_local(&mut self.outputs, spec);
            return Ok(());
        };
        length("mask", rows, mask.len())?;
        let width = spec.actor_input();
        length("obs", rows * width, obs.len())?;
        self.compacted = true;
        self.used_rows.extend((0..rows).filter(|&r| mask[r] != 0));
        self.gathered.clear();
        for &r in &self.used_rows {
            self.gathered
                .extend_from_slice(&obs[r * width..(r + 1) * width]);
        }
        policy.actor.forward(
            &policy.actor_params,
            &self.gathered,
            self.used_rows.len(),
            &mut self.cache,
        )?;
        self.outputs.clear();
        self.outputs.resize(rows, 0.0);
        for (&r, &o) in self.used_rows.iter().zip(&self.cache.output) {
            self.outputs[r] = o;
        }
        shift_local(&mut self.outputs, spec);
        Ok(())
    }

    /// The actor's half of an update: forward, the loss terms (returned)
    /// and ∂L/∂params into `grads`.
    fn gradient(
        &mut self,
        policy: &CpuPolicy,
        mb: &Minibatch<'_>,
        c: &LossCoefficients,
    ) -> Result<ActorTerms, BackendError> {
        let (n, k) = (mb.size, policy.spec.action_dim);
        self.forward(policy, mb.obs, n, mb.mask)?;
        self.d_outputs.resize(n * k, 0.0);
        let terms = actor_loss_gradient(&self.outputs, mb, k, c, &mut self.d_outputs)?;
        if self.compacted {
            // Rows are in increasing order, so each moves down or stays.
            for (i, &r) in self.used_rows.iter().enumerate() {
                self.d_outputs[i] = self.d_outputs[r];
            }
            self.d_outputs.truncate(self.used_rows.len());
        }
        self.grads.resize(policy.actor_params.len(), 0.0);
        policy.actor.backward(
            &policy.actor_params,
            &mut self.cache,
            &self.d_outputs,
            &mut self.grads,
        )?;
        Ok(terms)
    }
}

impl CriticScratch {
    /// The critic's half of an update: forward, the value loss (returned,
    /// before its weight) and ∂L/∂params into `grads`.
    fn gradient(
        &mut self,
        policy: &CpuPolicy,
        mb: &Minibatch<'_>,
        c: &LossCoefficients,
    ) -> Result<f32, BackendError> {
        policy.critic.forward(
            &policy.critic_params,
            mb.critic_obs,
            mb.size,
            &mut self.cache,
        )?;
        self.d_values.resize(mb.size, 0.0);
        let value_loss =
            value_loss_gradient(&self.cache.output, mb.returns, c, &mut self.d_values)?;
        self.grads.resize(policy.critic_params.len(), 0.0);
        policy.critic.backward(
            &policy.critic_params,
            &mut self.cache,
            &self.d_values,
            &mut self.grads,
        )?;
        Ok(value_loss)
    }
}

impl Backend for CpuBackend {
    type Policy = CpuPolicy;

    fn init_policy(&self, spec: &PolicySpec, seed: u64) -> Result<CpuPolicy, BackendError> {
        if spec.action_dim > dirichlet::MAX_ENTRIES || spec.action_dim == 0 {
            return Err(ShapeError::OutOfRange {
                field: "action_dim",
                min: 1,
                max: dirichlet::MAX_ENTRIES,
                got: spec.action_dim,
            }
            .into());
        }
        if spec.per_entry && !spec.obs_dim.is_multiple_of(spec.action_dim) {
            return Err(ShapeError::Length {
                field: "obs_dim (a whole number of entry rows)",
                expected: spec.action_dim * spec.actor_input(),
                got: spec.obs_dim,
            }
            .into());
        }
        let mut rng = dfaas_core::rng::seeded(seed);
        let widths = |input: usize, output: usize| {
            let mut w = vec![input];
            w.extend(&spec.hidden);
            w.push(output);
            w
        };
        let actor_output = if spec.per_entry { 1 } else { spec.action_dim };
        let actor = Mlp::new(&widths(spec.actor_input(), actor_output), spec.activation)?;
        let critic = Mlp::new(&widths(spec.critic_obs_dim, 1), spec.activation)?;
        let actor_params = actor.init(&mut rng, 0.01);
        let critic_params = critic.init(&mut rng, 0.01);
        Ok(CpuPolicy {
            spec: spec.clone(),
            actor_adam: Adam::new(actor_params.len(), spec.learning_rate),
            critic_adam: Adam::new(critic_params.len(), spec.learning_rate),
            actor,
            critic,
            actor_params,
            critic_params,
        })
    }

    fn concentrations(
        &mut self,
        policy: &CpuPolicy,
        obs: &[f32],
        batch: usize,
        mask: Option<&[u8]>,
        alpha: &mut [f32],
    ) -> Result<(), BackendError> {
        let k = policy.spec.action_dim;
        length("alpha", product("alpha", &[batch, k])?, alpha.len())?;
        self.actor.forward(policy, obs, batch, mask)?;
        for (a, &o) in alpha.iter_mut().zip(&self.actor.outputs) {
            *a = softplus(o) + CONCENTRATION_EPSILON;
        }
        Ok(())
    }

    fn values(
        &mut self,
        policy: &CpuPolicy,
        critic_obs: &[f32],
        batch: usize,
        values: &mut [f32],
    ) -> Result<(), BackendError> {
        length("values", batch, values.len())?;
        policy.critic.forward(
            &policy.critic_params,
            critic_obs,
            batch,
            &mut self.critic.cache,
        )?;
        values.copy_from_slice(&self.critic.cache.output);
        Ok(())
    }

    fn update(
        &mut self,
        policy: &mut CpuPolicy,
        mb: &Minibatch<'_>,
        c: &LossCoefficients,
    ) -> Result<UpdateStats, BackendError> {
        mb.check(&policy.spec)?;
        let (actor, critic) = (&mut self.actor, &mut self.critic);
        let (actor_terms, value_loss) = {
            let policy = &*policy;
            rayon::join(
                || actor.gradient(policy, mb, c),
                || critic.gradient(policy, mb, c),
            )
        };
        let (actor_terms, value_loss) = (actor_terms?, value_loss?);
        let grad_norm = clip_global_norm(
            &mut [&mut self.actor.grads, &mut self.critic.grads],
            c.max_grad_norm,
        );
        policy
            .actor_adam
            .step(&mut policy.actor_params, &self.actor.grads);
        policy
            .critic_adam
            .step(&mut policy.critic_params, &self.critic.grads);
        Ok(UpdateStats {
            policy_loss: actor_terms.policy_loss,
            value_loss,
            entropy: actor_terms.entropy,
            kl: actor_terms.kl,
            clip_fraction: actor_terms.clip_fraction,
            grad_norm,
        })
    }

    fn tensors(&self, policy: &CpuPolicy) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (net, mlp, params, adam) in [
            (
                "actor",
                &policy.actor,
                &policy.actor_params,
                &policy.actor_adam,
            ),
            (
                "critic",
                &policy.critic,
                &policy.critic_params,
                &policy.critic_adam,
            ),
        ] {
            for (name, shape, offset) in mlp.tensors() {
                let len: usize = shape.iter().product();
                out.push((
                    format!("{net}.{name}"),
                    shape.clone(),
                    params[offset..offset + len].to_vec(),
                ));
                out.push((
                    format!("{net}.{name}.adam_m"),
                    shape.clone(),
                    adam.m[offset..offset + len].to_vec(),
                ));
                out.push((
                    format!("{net}.{name}.adam_v"),
                    shape,
                    adam.v[offset..offset + len].to_vec(),
                ));
            }
            // Adam's step count (exact in f32 up to 2^24 updates).
            out.push((format!("{net}.adam_t"), vec![1], vec![adam.t as f32]));
        }
        out
    }

    fn load_policy(
        &self,
        spec: &PolicySpec,
        tensor: &dyn Fn(&str) -> Option<Vec<f32>>,
    ) -> Result<CpuPolicy, BackendError> {
        let mut policy = self.init_policy(spec, 0)?;
        let CpuPolicy {
            spec: _,
            actor,
            critic,
            actor_params,
            critic_params,
            actor_adam,
            critic_adam,
        } = &mut policy;
        for (net, mlp, params, adam) in [
            ("actor", &*actor, actor_params, actor_adam),
            ("critic", &*critic, critic_params, critic_adam),
        ] {
            for (name, shape, offset) in mlp.tensors() {
                let len: usize = shape.iter().product();
                for (suffix, target) in [
                    ("", &mut **params),
                    (".adam_m", &mut adam.m[..]),
                    (".adam_v", &mut adam.v[..]),
                ] {
                    let name = format!("{net}.{name}{suffix}");
                    let Some(values) = tensor(&name) else {
                        return Err(BackendError::TensorMissing { name });
                    };
                    if values.len() != len {
                        return Err(BackendError::TensorSize {
                            name,
                            expected: len,
                            got: values.len(),
                            shape: shape.clone(),
                        });
                    }
                    if let Some((index, &value)) =
                        values.iter().enumerate().find(|(_, v)| !v.is_finite())
                    {
                        return Err(BackendError::TensorValue {
                            name,
                            index,
                            value,
                            rule: "must be finite",
                        });
                    }
                    target[offset..offset + len].copy_from_slice(&values);
                }
            }
            let name = format!("{net}.adam_t");
            let t = tensor(&name).and_then(|v| v.first().copied());
            match t {
                // A whole, non-negative step count (exact in f32 up to 2²⁴).
                Some(t) if t.is_finite() && t >= 0.0 && t.fract() == 0.0 => adam.t = t as u64,
                Some(value) => {
                    return Err(BackendError::TensorValue {
                        name,
                        index: 0,
                        value,
                        rule: "must be a whole number >= 0",
                    });
                }
                None => return Err(BackendError::TensorMissing { name }),
            }
        }
        Ok(policy)
    }
}

/// Means over a minibatch of the actor's loss terms.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ActorTerms {
    /// Clipped surrogate loss `−min(r·A, clip(r)·A)`.
    pub policy_loss: f32,
    /// Entropy of the new policy.
    pub entropy: f32,
    /// KL(old ‖ new) (0 when the KL weight is 0).
    pub kl: f32,
    /// Share of samples whose ratio was clipped.
    pub clip_fraction: f32,
}

/// The actor's part of the PPO loss of a minibatch (means over its
/// samples: clipped surrogate, `− c_H·H + c_KL·KL`), from the actor's
/// outputs `[size][action_dim]` (before softplus): writes ∂L/∂outputs into
/// `d_outputs` (same shape; 0 on masked-out entries) and returns the
/// terms. The step [`CpuBackend::update`] takes.
///
/// # Errors
/// [`ShapeError`] when the minibatch or the slices do not fit `action_dim`.
pub fn actor_loss_gradient(
    outputs: &[f32],
    mb: &Minibatch<'_>,
    action_dim: usize,
    c: &LossCoefficients,
    d_outputs: &mut [f32],
) -> Result<ActorTerms, ShapeError> {
    let (n, k) = (mb.size, action_dim);
    let wide = product("outputs", &[n, k])?;
    length("outputs", wide, outputs.len())?;
    length("d_outputs", wide, d_outputs.len())?;
    mb.check_actor(k)?;
    let scale = 1.0 / n as f32;
    let mut terms = ActorTerms::default();
    let (mut alpha, mut action, mut old_alpha) = (
        Vec::with_capacity(k),
        Vec::with_capacity(k),
        Vec::with_capacity(k),
    );
    let (mut g_logp, mut g_ent, mut g_kl) = (vec![0f32; k], vec![0f32; k], vec![0f32; k]);
    let mut used: Vec<usize> = Vec::with_capacity(k);
    d_outputs.fill(0.0);
    for s in 0..n {
        let out = &outputs[s * k..(s + 1) * k];
        used.clear();
        match mb.mask {
            Some(mask) => used.extend((0..k).filter(|&j| mask[s * k + j] != 0)),
            None => used.extend(0..k),
        }
        let m = used.len();
        alpha.clear();
        alpha.extend(
            used.iter()
                .map(|&j| softplus(out[j]) + CONCENTRATION_EPSILON),
        );
        action.clear();
        action.extend(used.iter().map(|&j| mb.actions[s * k + j]));
        let (log_prob, entropy) =
            dirichlet::log_prob_and_entropy(&alpha, &action, &mut g_logp[..m], &mut g_ent[..m]);
        let kl = if c.kl_coeff != 0.0 {
            old_alpha.clear();
            old_alpha.extend(used.iter().map(|&j| mb.old_alpha[s * k + j]));
            dirichlet::kl(&old_alpha, &alpha, &mut g_kl[..m])
        } else {
            g_kl.fill(0.0);
            0.0
        };
        let advantage = mb.advantages[s];
        let ratio = (log_prob - mb.old_log_prob[s]).exp();
        let clipped = ratio.clamp(1.0 - c.clip, 1.0 + c.clip);
        let (unclipped_term, clipped_term) = (ratio * advantage, clipped * advantage);
        // d(−min(rA, clip(r)A))/d log π: −rA where the unclipped term is the minimum.
        let d_log_prob = if unclipped_term <= clipped_term {
            -ratio * advantage
        } else {
            0.0
        };
        terms.policy_loss -= unclipped_term.min(clipped_term) * scale;
        terms.entropy += entropy * scale;
        terms.kl += kl * scale;
        if (ratio - clipped).abs() > 0.0 {
            terms.clip_fraction += scale;
        }
        for (i, &j) in used.iter().enumerate() {
            let d_alpha =
                d_log_prob * g_logp[i] - c.entropy_coeff * g_ent[i] + c.kl_coeff * g_kl[i];
            d_outputs[s * k + j] = d_alpha * sigmoid(out[j]) * scale;
        }
    }
    Ok(terms)
}

/// The critic's part of the loss: the mean of `min((V − R)², cap)` over
/// the samples; writes `c_v`·its gradient with respect to `values` into
/// `d_values` (0 where the cap is active) and returns the mean (before
/// `c_v`). The step [`CpuBackend::update`] takes.
///
/// # Errors
/// [`ShapeError`] when the slices are not equally long.
pub fn value_loss_gradient(
    values: &[f32],
    returns: &[f32],
    c: &LossCoefficients,
    d_values: &mut [f32],
) -> Result<f32, ShapeError> {
    length("returns", values.len(), returns.len())?;
    length("d_values", values.len(), d_values.len())?;
    let scale = 1.0 / values.len() as f32;
    let mut value_loss = 0.0;
    for ((d, &value), &target) in d_values.iter_mut().zip(values).zip(returns) {
        let error = value - target;
        let squared = error * error;
        let capped = c.value_clip.map_or(squared, |cap| squared.min(cap));
        value_loss += capped * scale;
        let active = c.value_clip.is_none_or(|cap| squared < cap);
        *d = if active {
            c.value_coeff * 2.0 * error * scale
        } else {
            0.0
        };
    }
    Ok(value_loss)
}

/// The loss [`CpuBackend::update`] minimises, evaluated without updating
/// (for gradient checks).
///
/// # Errors
/// As [`Backend::update`].
pub fn loss(
    policy: &CpuPolicy,
    mb: &Minibatch<'_>,
    c: &LossCoefficients,
) -> Result<f64, BackendError> {
    mb.check(&policy.spec)?;
    let (n, k) = (mb.size, policy.spec.action_dim);
    let mut cache = MlpCache::default();
    policy.actor.forward(
        &policy.actor_params,
        mb.obs,
        policy.spec.actor_rows(n),
        &mut cache,
    )?;
    let mut total = 0f64;
    let mut scratch = vec![0f32; k];
    for s in 0..n {
        let used: Vec<usize> = (0..k)
            .filter(|&j| mb.mask.is_none_or(|m| m[s * k + j] != 0))
            .collect();
        let pick = |v: &[f32]| -> Vec<f32> { used.iter().map(|&j| v[s * k + j]).collect() };
        let alpha: Vec<f32> = used
            .iter()
            .map(|&j| {
                let bias = if j == 0 { policy.spec.local_bias } else { 0.0 };
                softplus(cache.output[s * k + j] + bias) + CONCENTRATION_EPSILON
            })
            .collect();
        let m = used.len();
        let log_prob = dirichlet::log_prob(&alpha, &pick(mb.actions), &mut scratch[..m]);
        let ratio = f64::from((log_prob - mb.old_log_prob[s]).exp());
        let a = f64::from(mb.advantages[s]);
        let clip = f64::from(c.clip);
        total -= (ratio * a).min(ratio.clamp(1.0 - clip, 1.0 + clip) * a);
        total -=
            f64::from(c.entropy_coeff) * f64::from(dirichlet::entropy(&alpha, &mut scratch[..m]));
        if c.kl_coeff != 0.0 {
            total += f64::from(c.kl_coeff)
                * f64::from(dirichlet::kl(
                    &pick(mb.old_alpha),
                    &alpha,
                    &mut scratch[..m],
                ));
        }
    }
    policy
        .critic
        .forward(&policy.critic_params, mb.critic_obs, n, &mut cache)?;
    for s in 0..n {
        let e = f64::from(cache.output[s] - mb.returns[s]);
        let sq = e * e;
        total += f64::from(c.value_coeff) * c.value_clip.map_or(sq, |cap| sq.min(f64::from(cap)));
    }
    Ok(total / n.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfaas_core::rng::{seeded, uniform};

    #[test]
    fn ppo_loss_gradient_matches_finite_differences() {
        gradient_check(false);
    }

    /// The agnostic layout's actor: one network scoring each of a
    /// sample's 3 entry rows (4 inputs each).
    #[test]
    fn per_entry_loss_gradient_matches_finite_differences() {
        gradient_check(true);
    }

    /// With a local bias (the loss sees the local output shifted).
    #[test]
    fn loss_gradient_with_a_local_bias_matches_finite_differences() {
        gradient_check_with(false, 1.5);
        gradient_check_with(false, -0.8);
        gradient_check_with(true, 0.7);
    }

    fn gradient_check(per_entry: bool) {
        gradient_check_with(per_entry, 0.0);
    }

    fn gradient_check_with(per_entry: bool, local_bias: f32) {
        let d = if per_entry { 12 } else { 4 };
        let spec = PolicySpec {
            obs_dim: d,
            critic_obs_dim: d,
            action_dim: 3,
            per_entry,
            hidden: vec![8, 8],
            activation: Activation::Tanh,
            learning_rate: 1e-3,
            local_bias,
        };
        let mut backend = CpuBackend::new();
        let mut policy = backend.init_policy(&spec, 5).unwrap();
        // Larger output weights so that the ratio moves away from 1.
        policy.actor_params.iter_mut().for_each(|p| *p *= 3.0);
        let mut rng = seeded(9);
        let n = 6;
        let obs: Vec<f32> = (0..n * d)
            .map(|_| uniform(&mut rng, -1.0, 1.0) as f32)
            .collect();
        let mut alpha = vec![0f32; n * 3];
        let mut values = vec![0f32; n];
        backend
            .act(&policy, &obs, &obs, n, None, &mut alpha, &mut values)
            .unwrap();
        let mut actions = vec![0f32; n * 3];
        let mut old_log_prob = vec![0f32; n];
        let mut scratch = [0f32; 3];
        for s in 0..n {
            dirichlet::sample(
                &alpha[s * 3..s * 3 + 3],
                &mut rng,
                &mut actions[s * 3..s * 3 + 3],
            )
            .unwrap();
            // An old policy slightly different from the current one.
            old_log_prob[s] = dirichlet::log_prob(
                &alpha[s * 3..s * 3 + 3],
                &actions[s * 3..s * 3 + 3],
                &mut scratch,
            ) - 0.05 * s as f32;
        }
        let old_alpha: Vec<f32> = alpha.iter().map(|a| a * 1.1).collect();
        let advantages: Vec<f32> = (0..n)
            .map(|s| if s % 2 == 0 { 1.0 } else { -0.7 })
            .collect();
        let returns: Vec<f32> = (0..n).map(|s| s as f32 * 0.3 - 0.5).collect();
        let c = LossCoefficients {
            clip: 0.3,
            value_coeff: 0.5,
            value_clip: Some(10.0),
            entropy_coeff: 0.02,
            kl_coeff: 0.2,
            max_grad_norm: None,
        };
        // Sample s uses all 3 outputs when even, outputs {0, 2} when odd
        // (an agent with fewer neighbours under a shared policy).
        let mask: Vec<u8> = (0..n)
            .flat_map(|s| if s % 2 == 0 { [1, 1, 1] } else { [1, 0, 1] })
            .collect();
        let mut masked_actions = actions.clone();
        for s in (1..n).step_by(2) {
            let (x0, x2) = (actions[s * 3], actions[s * 3 + 2]);
            masked_actions[s * 3] = x0 / (x0 + x2);
            masked_actions[s * 3 + 1] = 0.0;
            masked_actions[s * 3 + 2] = x2 / (x0 + x2);
        }
        for masked in [false, true] {
            let mb = Minibatch {
                size: n,
                obs: &obs,
                critic_obs: &obs,
                actions: if masked { &masked_actions } else { &actions },
                old_alpha: &old_alpha,
                old_log_prob: &old_log_prob,
                advantages: &advantages,
                returns: &returns,
                mask: masked.then_some(&mask[..]),
            };
            // Analytic gradients: run the update with a zero learning rate.
            let mut probe = policy.clone();
            probe.actor_adam.lr = 0.0;
            probe.critic_adam.lr = 0.0;
            backend.update(&mut probe, &mb, &c).unwrap();
            let (ga, gc) = (backend.actor.grads.clone(), backend.critic.grads.clone());
            for (grads, is_actor) in [(&ga, true), (&gc, false)] {
                let len = grads.len();
                for j in (0..len).step_by(5) {
                    let h = 2e-3f32;
                    let mut plus = policy.clone();
                    let mut minus = policy.clone();
                    if is_actor {
                        plus.actor_params[j] += h;
                        minus.actor_params[j] -= h;
                    } else {
                        plus.critic_params[j] += h;
                        minus.critic_params[j] -= h;
                    }
                    let numeric = (loss(&plus, &mb, &c).unwrap() - loss(&minus, &mb, &c).unwrap())
                        / f64::from(2.0 * h);
                    let analytic = f64::from(grads[j]);
                    assert!(
                        (numeric - analytic).abs()
                            <= 2e-2 * (1e-2 + numeric.abs().max(analytic.abs())) + 1e-4,
                        "{} param {j}: analytic {analytic}, numeric {numeric}",
                        if is_actor { "actor" } else { "critic" }
                    );
                }
            }
        }
    }
}

//! The inference crate (`dfaas-infer`) against the trainer: a checkpoint's
//! `policies.safetensors` alone gives the trainer's deterministic actions
//! bit for bit on the evaluation episodes, in every layout (the controller
//! runs the same forward pass on the trainer's in-memory policies; the
//! unit test `the_controller_acts_as_the_trainers_forward_pass` checks it
//! against the batched forward pass of sampling); checkpoints without
//! inference metadata are refused with a typed error.

use dfaas_core::{EnvConfig, EnvModel};
use dfaas_infer::{LoadError, Policy};
use dfaas_policies::backend::CpuBackend;
use dfaas_policies::checkpoint;
use dfaas_policies::controller::{Controller, evaluation_env, evaluation_seed};
use dfaas_policies::mlp::Activation;
use dfaas_policies::ppo::{Layout, PpoConfig, Trainer};
use safetensors::tensor::SafeTensors;
use std::collections::HashMap;

/// Five nodes of degrees 3, 2, 2, 2, 1 (the shared layout pads).
fn env_config() -> EnvConfig {
    EnvConfig::with_network(&[
        "node_0 node_1 node_2",
        "node_3 node_2 node_0",
        "node_1 node_4",
    ])
}

fn trained(config: PpoConfig) -> (Trainer<CpuBackend>, Vec<u8>) {
    let built = env_config().build().unwrap();
    let model = EnvModel::new(&built).unwrap();
    let mut trainer = Trainer::new(model, config, CpuBackend::new()).unwrap();
    for _ in 0..2 {
        trainer.train_iteration().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&trainer, dir.path()).unwrap();
    let bytes = std::fs::read(dir.path().join("policies.safetensors")).unwrap();
    (trainer, bytes)
}

fn small(layout: Layout) -> PpoConfig {
    PpoConfig {
        layout,
        hidden: vec![16, 16],
        num_envs: 4,
        rollout_steps: 48,
        minibatch_size: 96,
        iterations: 2,
        seed: 9,
        ..PpoConfig::default()
    }
}

/// Runs the trainer's controller over 3 evaluation episodes and checks every
/// agent's inference action against it, bit for bit; returns the count.
fn assert_equal_on_evaluation(config: PpoConfig) -> usize {
    let (trainer, bytes) = trained(config.clone());
    let mut policy = Policy::from_safetensors(&bytes).unwrap();
    let mut env = evaluation_env(&env_config(), 3, evaluation_seed(config.seed)).unwrap();
    let model = env.model().clone();
    let (n, ow, w) = (model.num_agents(), model.obs_width(), model.action_width());
    let mut actions = vec![0f32; env.num_envs() * n * w];
    let mut controller = trainer.controller().unwrap();
    let mut compared = 0;
    for step in 0..model.max_steps() {
        controller
            .act(&model, env.observations(), &mut actions)
            .unwrap();
        for e in 0..env.num_envs() {
            for a in 0..n {
                let k = model.degree(a);
                let obs = &env.observations()[(e * n + a) * ow..(e * n + a + 1) * ow];
                let want = &actions[(e * n + a) * w..(e * n + a) * w + k + 2];
                // The agent's own values and the padded row give the same.
                for observation in [&obs[..2 + 2 * k], obs] {
                    let mut got = vec![0f32; k + 2];
                    policy.act(a, observation, &mut got).unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&got),
                        bits(want),
                        "{:?} step {step} env {e} agent {a}: {got:?} vs {want:?}",
                        config.layout
                    );
                }
                compared += 1;
            }
        }
        env.step(&actions).unwrap();
    }
    compared
}

#[test]
fn inference_equals_the_trainer_bit_for_bit_independent() {
    assert_eq!(
        assert_equal_on_evaluation(small(Layout::Independent)),
        288 * 3 * 5
    );
}

#[test]
fn inference_equals_the_trainer_bit_for_bit_shared() {
    assert_eq!(
        assert_equal_on_evaluation(small(Layout::Shared)),
        288 * 3 * 5
    );
}

#[test]
fn inference_equals_the_trainer_bit_for_bit_mappo() {
    assert_eq!(
        assert_equal_on_evaluation(small(Layout::Mappo)),
        288 * 3 * 5
    );
}

#[test]
fn inference_equals_the_trainer_bit_for_bit_with_a_local_bias() {
    let config = PpoConfig {
        local_bias: 2.5,
        ..small(Layout::Shared)
    };
    assert_eq!(assert_equal_on_evaluation(config), 288 * 3 * 5);
}

/// An untrained policy with a local bias of 3 keeps about
/// `softplus(3) / (softplus(3) + (k + 1)·softplus(0))` local (its outputs
/// start near 0), against `1 / (k + 2)` without.
#[test]
fn a_local_bias_starts_a_policy_keeping_requests_local() {
    let softplus = |x: f64| x.exp().ln_1p();
    for (layout, bias) in [(Layout::Independent, 3.0), (Layout::Agnostic, 3.0)] {
        for bias in [0.0, bias] {
            let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
            let config = PpoConfig {
                local_bias: bias,
                ..small(layout)
            };
            let trainer = Trainer::new(model, config, CpuBackend::new()).unwrap();
            let dir = tempfile::tempdir().unwrap();
            checkpoint::save(&trainer, dir.path()).unwrap();
            let bytes = std::fs::read(dir.path().join("policies.safetensors")).unwrap();
            let mut policy = Policy::from_safetensors(&bytes).unwrap();
            // Agent 0 has 3 neighbours.
            let mut action = [0f32; 5];
            policy
                .act(0, &[20.0, 20.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0], &mut action)
                .unwrap();
            let local = softplus(f64::from(bias));
            let want = local / (local + 4.0 * softplus(0.0));
            assert!(
                (f64::from(action[0]) - want).abs() < 0.03,
                "{layout:?} bias {bias}: {action:?}, local {want}"
            );
        }
    }
}

#[test]
fn inference_equals_the_trainer_bit_for_bit_agnostic() {
    assert_eq!(
        assert_equal_on_evaluation(small(Layout::Agnostic)),
        288 * 3 * 5
    );
}

/// An agnostic policy trained on the 5-node federation acts on federations
/// it never saw: the controller on a 7-node ring-with-hub and on a 2-node
/// pair gives, for every node, `act_node` of its own observation; and
/// reordering a node's neighbours reorders its forward shares only.
#[test]
fn an_agnostic_policy_acts_on_any_federation() {
    let (trainer, bytes) = trained(small(Layout::Agnostic));
    let mut policy = Policy::from_safetensors(&bytes).unwrap();
    assert_eq!(policy.layout(), dfaas_infer::Layout::Agnostic);
    let mut controller = trainer.controller().unwrap();
    for network in [
        &[
            "node_0 node_1 node_2 node_3 node_4 node_5 node_6",
            "node_1 node_2",
            "node_2 node_3",
            "node_3 node_4",
            "node_4 node_5",
            "node_5 node_6",
            "node_6 node_1",
        ][..],
        &["a b"][..],
    ] {
        let config = EnvConfig::with_network(network);
        let mut env = evaluation_env(&config, 2, 7).unwrap();
        let model = env.model().clone();
        let (n, ow, w) = (model.num_agents(), model.obs_width(), model.action_width());
        let mut actions = vec![0f32; env.num_envs() * n * w];
        for _ in 0..40 {
            controller
                .act(&model, env.observations(), &mut actions)
                .unwrap();
            for row in 0..env.num_envs() * n {
                let k = model.degree(row % n);
                let obs = &env.observations()[row * ow..][..2 + 2 * k];
                let mut got = vec![0f32; k + 2];
                policy.act_node(obs, None, &mut got).unwrap();
                assert_eq!(got, actions[row * w..][..k + 2]);
                let sum: f32 = got.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{got:?}");
            }
            env.step(&actions).unwrap();
        }
    }
    // Node with 3 neighbours; neighbours reordered (2, 0, 1).
    let obs = [30.0, 28.0, 4.0, 0.0, 6.0, 1.0, 0.0, 3.0];
    let reordered = [30.0, 28.0, 6.0, 4.0, 0.0, 3.0, 1.0, 0.0];
    let (mut a, mut b) = ([0f32; 5], [0f32; 5]);
    policy.act_node(&obs, None, &mut a).unwrap();
    policy.act_node(&reordered, None, &mut b).unwrap();
    for (new, old) in [(0, 0), (1, 3), (2, 1), (3, 2), (4, 4)] {
        assert!((a[old] - b[new]).abs() <= 1e-6, "{a:?} vs {b:?}");
    }
    // A node of 62 neighbours is served; 63 do not fit an action.
    let mut wide = vec![0f32; 64];
    policy
        .act_node(&vec![1.0; 2 + 2 * 62], None, &mut wide)
        .unwrap();
    let mut too_wide = vec![0f32; 65];
    assert!(matches!(
        policy.act_node(&vec![1.0; 2 + 2 * 63], None, &mut too_wide),
        Err(dfaas_infer::ActError::NodeLengths { .. })
    ));
    assert!(matches!(
        policy.act_node(&[1.0, 2.0, 3.0], None, &mut [0.0; 3]),
        Err(dfaas_infer::ActError::NodeLengths { .. })
    ));
    assert!(matches!(
        policy.act_node(&[1.0, f32::NAN], None, &mut [0.0; 2]),
        Err(dfaas_infer::ActError::ObservationValue { index: 1, .. })
    ));
}

/// An agnostic policy trained with gossip: its checkpoint says so; it acts
/// as the trainer's controller on a federation it never saw given each
/// node's gossip from `dfaas_policies::gossip`; a neighbour's load changes
/// its action; and gossip missing, of the wrong length or not finite, or
/// given to a policy trained without it, is a typed error.
#[test]
fn an_agnostic_policy_with_gossip_reads_its_neighbours() {
    use dfaas_infer::ActError;
    use dfaas_policies::gossip::Gossip;
    let (trainer, bytes) = trained(PpoConfig {
        gossip: true,
        local_bias: 1.5,
        ..small(Layout::Agnostic)
    });
    let mut policy = Policy::from_safetensors(&bytes).unwrap();
    assert!(policy.gossip());
    let mut controller = trainer.controller().unwrap();
    let config = EnvConfig::with_network(&["a b c d", "b c", "c d e", "e f"]);
    let mut env = evaluation_env(&config, 2, 7).unwrap();
    let model = env.model().clone();
    let gossip = Gossip::new(&model);
    let (n, ow, w) = (model.num_agents(), model.obs_width(), model.action_width());
    let mut actions = vec![0f32; env.num_envs() * n * w];
    let mut told = Vec::new();
    for _ in 0..40 {
        controller
            .act(&model, env.observations(), &mut actions)
            .unwrap();
        for row in 0..env.num_envs() * n {
            let (e, a) = (row / n, row % n);
            let k = model.degree(a);
            let obs = &env.observations()[row * ow..][..2 + 2 * k];
            gossip.write(
                &model,
                &env.observations()[e * n * ow..][..n * ow],
                a,
                &mut told,
            );
            let mut got = vec![0f32; k + 2];
            policy.act_node(obs, Some(&told), &mut got).unwrap();
            assert_eq!(got, actions[row * w..][..k + 2]);
        }
        env.step(&actions).unwrap();
    }
    // Node with 2 neighbours, the first idle or loaded past its capacity.
    let obs = [60.0, 58.0, 10.0, 10.0, 0.0, 0.0];
    let (idle, loaded) = (
        [22.0, 0.0, 22.0, 2.0, 20.0, 22.0, 2.0],
        [22.0, 80.0, 22.0, 2.0, 20.0, 22.0, 2.0],
    );
    let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
    policy.act_node(&obs, Some(&idle), &mut a).unwrap();
    policy.act_node(&obs, Some(&loaded), &mut b).unwrap();
    assert_ne!(a, b, "the neighbour's load is read");
    assert_eq!(
        policy.act_node(&obs, None, &mut a),
        Err(ActError::GossipLength {
            expected: 7,
            got: 0
        })
    );
    assert_eq!(
        policy.act_node(&obs, Some(&idle[..6]), &mut a),
        Err(ActError::GossipLength {
            expected: 7,
            got: 6
        })
    );
    let mut nan = idle;
    nan[4] = f32::NAN;
    assert!(matches!(
        policy.act_node(&obs, Some(&nan), &mut a),
        Err(ActError::GossipValue { index: 4, .. })
    ));
    assert!(matches!(
        policy.act(0, &[1.0; 8], &mut [0.0; 5]),
        Err(ActError::GossipLength { got: 0, .. })
    ));
    let (_, plain) = trained(small(Layout::Agnostic));
    let mut plain = Policy::from_safetensors(&plain).unwrap();
    assert!(!plain.gossip());
    assert_eq!(
        plain.act_node(&obs, Some(&idle), &mut a),
        Err(ActError::GossipLength {
            expected: 0,
            got: 7
        })
    );
    // Gossip is the agnostic layout's only.
    let config = PpoConfig {
        gossip: true,
        ..small(Layout::Shared)
    };
    let error = config.validate().unwrap_err();
    assert_eq!(
        error.to_string(),
        "gossip: only the agnostic layout reads gossip, got true (layout shared)"
    );
    let model = EnvModel::new(&env_config().build().unwrap()).unwrap();
    assert!(Trainer::new(model, config, CpuBackend::new()).is_err());
}

/// Policies tied to their topology refuse to act for any node.
#[test]
fn act_node_needs_the_agnostic_layout() {
    let (_, bytes) = trained(small(Layout::Independent));
    let mut policy = Policy::from_safetensors(&bytes).unwrap();
    assert!(matches!(
        policy.act_node(&[1.0, 2.0], None, &mut [0.0; 2]),
        Err(dfaas_infer::ActError::NotAgnostic {
            layout: "independent"
        })
    ));
}

/// ReLU, raw observations, and a hidden layer wider than one 256-input
/// block of the trainer's matrix products.
#[test]
fn inference_equals_the_trainer_with_relu_raw_inputs_and_wide_layers() {
    let config = PpoConfig {
        activation: Activation::Relu,
        normalize_observations: false,
        hidden: vec![300, 8],
        ..small(Layout::Shared)
    };
    assert_eq!(assert_equal_on_evaluation(config), 288 * 3 * 5);
}

#[test]
fn the_metadata_names_the_topology() {
    let (_, bytes) = trained(small(Layout::Independent));
    let policy = Policy::from_safetensors(&bytes).unwrap();
    let names: Vec<&str> = policy.agents().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["node_0", "node_1", "node_2", "node_3", "node_4"]);
    assert_eq!(
        policy.agents()[0].neighbours,
        ["node_1", "node_2", "node_3"]
    );
    assert_eq!(policy.agents()[4].neighbours, ["node_1"]);
    assert_eq!(policy.layout(), dfaas_infer::Layout::Independent);
    let built = env_config().build().unwrap();
    let model = EnvModel::new(&built).unwrap();
    assert_eq!(policy.max_input_rate(), model.max_input_rate());
}

/// The same tensors re-serialised with only the `format` entry, as
/// checkpoints were written before inference metadata existed.
fn without_inference_metadata(bytes: &[u8]) -> Vec<u8> {
    let tensors = SafeTensors::deserialize(bytes).unwrap();
    let views: Vec<_> = tensors.tensors();
    let metadata = HashMap::from([("format".to_string(), checkpoint::FORMAT.to_string())]);
    safetensors::serialize(views, Some(metadata)).unwrap()
}

#[test]
fn old_checkpoints_are_a_typed_error() {
    let (trainer, bytes) = trained(small(Layout::Independent));
    let old = without_inference_metadata(&bytes);
    let err = Policy::from_safetensors(&old).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::MissingMetadata {
                key: "dfaas.inference"
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("before inference metadata existed")
    );
    // The trainer still loads the extended checkpoints.
    let dir = tempfile::tempdir().unwrap();
    checkpoint::save(&trainer, dir.path()).unwrap();
    let loaded = checkpoint::load(dir.path(), CpuBackend::new()).unwrap();
    assert_eq!(loaded.iteration(), trainer.iteration());
}

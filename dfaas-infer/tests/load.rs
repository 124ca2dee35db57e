//! Loading checkpoints and acting: typed errors for every way a file can
//! be wrong (never a panic), and the actions' basic contracts. (That the
//! actions equal the trainer's is tested in `dfaas-policies`, against real
//! checkpoints.)

mod common;

use common::{TOPOLOGY, Tensor, checkpoint, entries, metadata, serialize, tensors};
use dfaas_infer::{ActError, LoadError, Policy, explore_stream};
use proptest::prelude::*;
use safetensors::tensor::Dtype;

fn load_with(meta: &dfaas_infer::metadata::InferenceMetadata, t: &[Tensor]) -> LoadError {
    Policy::from_safetensors(&serialize(t, Some(entries(meta)))).unwrap_err()
}

#[test]
fn a_checkpoint_loads_with_its_topology() {
    let policy = Policy::from_safetensors(&checkpoint(&metadata("independent", TOPOLOGY))).unwrap();
    assert_eq!(policy.agents().len(), 4);
    assert_eq!(policy.agent_index("node_3"), Some(3));
    assert_eq!(
        policy.agents()[0].neighbours,
        ["node_1", "node_2", "node_3"]
    );
    assert_eq!(policy.agents()[3].action_len(), 3);
    assert_eq!(policy.obs_width(), 8);
    assert_eq!(policy.max_input_rate(), 150);
}

#[test]
fn actions_lie_on_the_simplex_and_repeat() {
    for layout in ["independent", "shared", "mappo"] {
        let mut policy =
            Policy::from_safetensors(&checkpoint(&metadata(layout, TOPOLOGY))).unwrap();
        let obs = [90.0, 70.0, 5.0, 4.0, 3.0, 1.0, 0.0, 2.0];
        let (mut first, mut again) = ([0f32; 5], [0f32; 5]);
        policy.act(0, &obs, &mut first).unwrap();
        policy.act(0, &obs, &mut again).unwrap();
        assert_eq!(first, again, "{layout}");
        assert!(
            (first.iter().sum::<f32>() - 1.0).abs() < 1e-6,
            "{layout}: {first:?}"
        );
        assert!(
            first.iter().all(|&p| p > 0.0 && p < 1.0),
            "{layout}: {first:?}"
        );
        // Padded and own observations agree (node_3 has one neighbour).
        let own = [90.0, 70.0, 5.0, 1.0];
        let padded = [90.0, 70.0, 5.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let (mut a, mut b) = ([0f32; 3], [0f32; 3]);
        policy.act(3, &own, &mut a).unwrap();
        policy.act(3, &padded, &mut b).unwrap();
        assert_eq!(a, b, "{layout}");
    }
}

#[test]
fn exploring_streams_are_seeded_per_request() {
    let mut policy = Policy::from_safetensors(&checkpoint(&metadata("shared", TOPOLOGY))).unwrap();
    let obs = [90.0, 70.0, 5.0, 4.0, 3.0, 1.0, 0.0, 2.0];
    let draw = |policy: &mut Policy, seed, counter| {
        let mut action = [0f32; 5];
        policy
            .act_explore(0, &obs, &mut explore_stream(seed, counter), &mut action)
            .unwrap();
        action
    };
    let first = draw(&mut policy, 7, 0);
    assert_eq!(first, draw(&mut policy, 7, 0));
    assert_ne!(first, draw(&mut policy, 7, 1));
    assert_ne!(first, draw(&mut policy, 8, 0));
    // The samples' mean approaches the deterministic action.
    let mut mean = [0f64; 5];
    let n = 20_000;
    for c in 0..n {
        let a = draw(&mut policy, 7, c);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-5 && a.iter().all(|&p| p >= 0.0));
        for (m, p) in mean.iter_mut().zip(a) {
            *m += f64::from(p) / n as f64;
        }
    }
    let mut det = [0f32; 5];
    policy.act(0, &obs, &mut det).unwrap();
    for (m, d) in mean.iter().zip(det) {
        assert!((m - f64::from(d)).abs() < 0.01, "{mean:?} vs {det:?}");
    }
}

#[test]
fn bad_requests_are_typed_errors_and_write_nothing() {
    let mut policy =
        Policy::from_safetensors(&checkpoint(&metadata("independent", TOPOLOGY))).unwrap();
    let mut action = [7f32; 5];
    assert_eq!(
        policy.act(4, &[0.0; 8], &mut action),
        Err(ActError::UnknownAgent {
            agent: 4,
            agents: 4
        })
    );
    assert_eq!(
        policy.act(0, &[0.0; 7], &mut action),
        Err(ActError::ObservationLength {
            agent: 0,
            own: 8,
            padded: 8,
            got: 7
        })
    );
    assert_eq!(
        policy.act(1, &[0.0; 6], &mut action),
        Err(ActError::ActionLength {
            agent: 1,
            expected: 4,
            got: 5
        })
    );
    let mut obs = [1f32; 8];
    obs[5] = f32::NAN;
    assert!(matches!(
        policy.act(0, &obs, &mut action),
        Err(ActError::ObservationValue { index: 5, .. })
    ));
    obs[5] = f32::INFINITY;
    let err = policy
        .act_explore(0, &obs, &mut explore_stream(1, 1), &mut action)
        .unwrap_err();
    assert_eq!(err.to_string(), "observation[5]: must be finite, got inf");
    assert_eq!(action, [7.0; 5]);
}

#[test]
fn checkpoints_without_inference_metadata_are_refused() {
    let meta = metadata("independent", TOPOLOGY);
    let t = tensors(&meta, &[4], 1);
    for entries in [
        None,
        Some([("format".into(), "dfaas-ppo-checkpoint/1".into())].into()),
    ] {
        let err = Policy::from_safetensors(&serialize(&t, entries)).unwrap_err();
        assert!(matches!(
            err,
            LoadError::MissingMetadata {
                key: "dfaas.inference"
            }
        ));
    }
    let bad_json = [("dfaas.inference".to_string(), "{\"version\": 1".to_string())].into();
    let err = Policy::from_safetensors(&serialize(&t, Some(bad_json))).unwrap_err();
    assert!(matches!(err, LoadError::MetadataJson { .. }), "{err}");
}

#[test]
fn metadata_that_does_not_fit_names_the_field() {
    let good = metadata("independent", TOPOLOGY);
    let t = tensors(&good, &[4], 1);
    let field = |meta: &dfaas_infer::metadata::InferenceMetadata| match load_with(meta, &t) {
        LoadError::Metadata { field, .. } => field,
        other => panic!("{other}"),
    };
    let mut m = good.clone();
    m.version = 2;
    assert_eq!(field(&m), "version");
    let mut m = good.clone();
    m.layout = "central".into();
    assert_eq!(field(&m), "layout");
    let err = load_with(&m, &t).to_string();
    assert_eq!(
        err,
        "metadata layout: must be independent, shared, mappo or agnostic, got central"
    );
    let mut m = good.clone();
    m.activation = "gelu".into();
    assert_eq!(field(&m), "activation");
    let mut m = good.clone();
    m.concentration = "exp".into();
    assert_eq!(field(&m), "concentration");
    let mut m = good.clone();
    m.max_input_rate = 0;
    assert_eq!(field(&m), "max_input_rate");
    let mut m = good.clone();
    m.agents[2].name = "node_1".into();
    assert_eq!(field(&m), "agents[2].name");
    let mut m = good.clone();
    m.agents[1].neighbours[1] = "node_9".into();
    assert_eq!(field(&m), "agents[1].neighbours[1]");
    let mut m = good.clone();
    m.agents[1].neighbours[0] = "node_1".into();
    assert_eq!(field(&m), "agents[1].neighbours[0]");
    let mut m = good.clone();
    m.agents.clear();
    assert_eq!(field(&m), "agents");
    // Gossip rows are the agnostic layout's only.
    let mut m = good.clone();
    m.gossip = true;
    assert_eq!(field(&m), "gossip");
    // A local bias past f32's range is refused: by the JSON parser ("number
    // out of range") or, where serde_json reads it as infinite (that
    // depends on the features a build unifies), by the check naming it.
    let json = serde_json::to_string(&good).unwrap().replace(
        "\"max_input_rate\"",
        "\"local_bias\":1e39,\"max_input_rate\"",
    );
    let meta = [("dfaas.inference".to_string(), json)].into();
    match Policy::from_safetensors(&serialize(&t, Some(meta))).unwrap_err() {
        LoadError::Metadata { field, .. } => assert_eq!(field, "local_bias"),
        LoadError::MetadataJson { message, .. } => assert!(message.contains("out of range")),
        other => panic!("{other}"),
    }
}

#[test]
fn tensors_that_do_not_fit_are_named() {
    let meta = metadata("independent", TOPOLOGY);
    let good = tensors(&meta, &[4], 1);
    let edit = |name: &str, f: &dyn Fn(&mut Tensor)| {
        let mut t = good.clone();
        f(t.iter_mut().find(|t| t.0 == name).unwrap());
        load_with(&meta, &t)
    };
    let drop = |name: &str| {
        let t: Vec<Tensor> = good.iter().filter(|t| t.0 != name).cloned().collect();
        load_with(&meta, &t)
    };
    assert!(
        matches!(drop("policy1.actor.layer1.bias"), LoadError::MissingTensor { name } if name == "policy1.actor.layer1.bias")
    );
    assert!(matches!(
        drop("policy0.actor.layer0.weight"),
        LoadError::MissingTensor { .. }
    ));
    assert!(
        matches!(drop("policy2.obs_norm.var"), LoadError::MissingTensor { name } if name == "policy2.obs_norm.var")
    );
    // The last layer's width is not the agent's action length.
    assert!(matches!(
        drop("policy3.actor.layer1.weight"),
        LoadError::TensorShape { .. }
    ));
    let err = edit("policy0.actor.layer0.weight", &|t| t.2 = vec![8, 4]);
    assert!(matches!(err, LoadError::TensorShape { .. }), "{err}");
    let err = edit("policy0.actor.layer0.bias", &|t| {
        t.1 = Dtype::I32;
    });
    assert!(matches!(err, LoadError::TensorDtype { .. }), "{err}");
    let err = edit("policy1.actor.layer0.weight", &|t| {
        t.3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    assert!(
        matches!(err, LoadError::TensorValue { index: 1, .. }),
        "{err}"
    );
    let err = edit("policy1.obs_norm.var", &|t| {
        t.3[8..16].copy_from_slice(&(-1f64).to_le_bytes());
    });
    assert_eq!(
        err.to_string(),
        "tensor policy1.obs_norm.var[1]: must be finite and >= 0, got -1"
    );
    // The wrong dtype for a normaliser.
    let err = edit("policy0.obs_norm.mean", &|t| {
        t.1 = Dtype::F32;
        t.2 = vec![16];
    });
    assert!(
        matches!(
            err,
            LoadError::TensorDtype {
                expected: "F64",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn truncated_files_are_errors() {
    let bytes = checkpoint(&metadata("shared", TOPOLOGY));
    for len in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1] {
        assert!(Policy::from_safetensors(&bytes[..len]).is_err(), "{len}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Any bytes changed anywhere: an error or a policy whose actions are
    /// errors or finite points of the simplex — never a panic.
    #[test]
    fn altered_files_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        obs in prop::collection::vec(-1e6f32..1e6, 8),
    ) {
        let mut bytes = checkpoint(&metadata("independent", TOPOLOGY));
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(mut policy) = Policy::from_safetensors(&bytes) {
            for agent in 0..policy.agents().len() {
                let k = policy.agents()[agent].degree();
                let mut action = vec![0f32; 2 + k];
                if policy.act(agent, &obs[..2 + 2 * k], &mut action).is_ok() {
                    prop_assert!(action.iter().all(|p| p.is_finite() || p.is_nan()));
                }
            }
        }
    }
}

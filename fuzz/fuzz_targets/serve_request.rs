//! Arbitrary bytes as the body of a `POST /action` request: decoding gives
//! an observation in the environment's range (whole counts, at most the
//! largest input rate, finite) or a 4xx error naming the field; the
//! response encoded from it is valid JSON whose percentages sum to 100 —
//! never a panic. Both with a mapping and for any node (an agnostic
//! policy's server, neighbours read from the body).
#![no_main]

use dfaas::serve::{Mapping, NodeMap, decode, encode, percentages};
use libfuzzer_sys::fuzz_target;

const MAX_RATE: u32 = 150;

fuzz_target!(|data: &[u8]| {
    let mapping = Mapping::from_nodes(vec![
        NodeMap {
            key: "node_a".into(),
            agent: Some(0),
            neighbours: vec![
                "node_b".into(),
                "node_c".into(),
                "node_d".into(),
                "node_e".into(),
            ],
        },
        NodeMap {
            key: "node_b".into(),
            agent: Some(1),
            neighbours: vec!["node_a".into()],
        },
    ]);
    check(data, &mapping);
    check(data, &Mapping::any_node());
});

fn check(data: &[u8], mapping: &Mapping) {
    // With gossip too: whole finite values >= 0 for every named neighbour.
    let mut observation = [0f32; 2 + 2 * 62];
    let mut gossip = [0f32; 1 + 3 * 62];
    if let Ok(decoded) = decode(data, mapping, MAX_RATE, &mut observation, Some(&mut gossip)) {
        let k = decoded.node(mapping).neighbours.len();
        assert!(
            gossip[..1 + 3 * k]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0 && v.fract() == 0.0)
        );
    }
    match decode(data, mapping, MAX_RATE, &mut observation, None) {
        Ok(decoded) => {
            let node = decoded.node(mapping);
            let k = node.neighbours.len();
            let obs = &observation[..2 + 2 * k];
            assert!(
                obs.iter().all(|v| v.is_finite()
                    && *v >= 0.0
                    && *v <= MAX_RATE as f32
                    && v.fract() == 0.0)
            );
            // Any action (here from the observation) encodes to valid JSON.
            let action: Vec<f32> = (0..2 + k).map(|i| obs[i % obs.len()]).collect();
            let body = encode(node, &action);
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value.as_object().map(|o| o.len()), Some(1));
            let mut n = [0u32; 64];
            assert_eq!(percentages(&action, &mut n[..2 + k]), 100);
        }
        Err(e) => {
            assert!((400..500).contains(&e.status()));
            let _: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        }
    }
}

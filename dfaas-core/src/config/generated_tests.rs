//! Generated federations through the configuration: `network_generator`
//! and `node_ram_gb_range` parse, build, write out as concrete values that
//! build back identically, refuse bad input with errors naming the field,
//! and give environments that step.

use super::*;
use crate::rng::{seeded, uniform};
use crate::{BatchEnv, ConfigError, Env, EnvModel};

/// Actions giving every entry of an agent's `[local, forwards.., reject]`
/// the same share, for `envs` envs.
fn even_actions(model: &EnvModel, envs: usize) -> Vec<f32> {
    let (n, w) = (model.num_agents(), model.action_width());
    let mut actions = vec![0f32; envs * n * w];
    for (i, row) in actions.chunks_exact_mut(w).enumerate() {
        let k = model.degree(i % n) + 2;
        row[..k].iter_mut().for_each(|p| *p = 1.0 / k as f32);
    }
    actions
}

fn field_of<T: core::fmt::Debug>(result: Result<T, ConfigError>) -> String {
    match result {
        Err(e) => e.field().unwrap_or("<none>").to_string(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[test]
fn a_generator_in_yaml_builds_and_the_concrete_config_rebuilds_identically() {
    let yaml = "network_generator: {kind: random_geometric, nodes: 20, seed: 1, radius: 0.3}\n";
    let config = EnvConfig::from_yaml(yaml).unwrap();
    let generator = NetworkGenerator::RandomGeometric {
        nodes: 20,
        radius: 0.3,
        seed: 1,
    };
    assert_eq!(config.network_generator, Some(generator.clone()));
    let built = config.build().unwrap();
    assert_eq!(built.topology().num_agents(), 20);
    let concrete = built.config();
    assert_eq!(concrete.network, generator.lines().unwrap());
    assert_eq!(concrete.network_generator, None);
    let text = concrete.to_yaml().unwrap();
    assert!(!text.contains("network_generator"), "{text}");
    assert!(text.contains("node_19"), "{text}");
    let again = EnvConfig::from_yaml(&text).unwrap().build().unwrap();
    assert_eq!(again, built);
    // The same as writing the lines by hand.
    let by_hand = EnvConfig::with_network(&generator.lines().unwrap())
        .build()
        .unwrap();
    assert_eq!(by_hand.topology(), built.topology());
    assert_eq!(by_hand.links(), built.links());
}

#[test]
fn configs_with_each_kind_of_generator_round_trip_through_yaml_and_json() {
    let texts = [
        "{kind: ring, nodes: 12}",
        "{kind: union, parts: [{kind: ring, nodes: 4}, {kind: barabasi_albert, nodes: 9, m: 2, seed: 3}]}",
        "{kind: grid, rows: 3, cols: 5}",
        "{kind: random_geometric, nodes: 30, radius: 0.25, seed: 4}",
        // An integer radius is a number too.
        "{kind: random_geometric, nodes: 3, radius: 1, seed: 4}",
        "{kind: barabasi_albert, nodes: 40, m: 2, seed: 9}",
        "{kind: star_of_stars, hubs: 3, leaves_per_hub: 4}",
        "{kind: star_of_stars, hubs: 5, leaves_per_hub: 4, hub_links: ring}",
    ];
    for text in texts {
        let yaml = format!("network_generator: {text}\nmax_steps: 10\n");
        let config = EnvConfig::from_yaml(&yaml).unwrap_or_else(|e| panic!("{text}: {e}"));
        let generator = config.network_generator.clone().unwrap();
        let written = config.to_yaml().unwrap();
        assert!(
            written.contains(&format!("kind: {}", generator.kind())),
            "{written}"
        );
        assert_eq!(EnvConfig::from_yaml(&written).unwrap(), config, "{text}");
        let json = config.to_json().unwrap();
        assert_eq!(EnvConfig::from_json(&json).unwrap(), config, "{text}");
        let built = config.build().unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            built.topology().num_agents(),
            generator.num_nodes().unwrap(),
            "{text}"
        );
        let rebuilt = EnvConfig::from_yaml(&built.config().to_yaml().unwrap())
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(rebuilt, built, "{text}");
    }
    // Without the new keys, nothing new is written.
    let plain = EnvConfig::default().to_yaml().unwrap();
    assert!(!plain.contains("network_generator") && !plain.contains("node_ram_gb_range"));
}

#[test]
fn unknown_generator_kinds_and_fields_are_refused() {
    // The parser's message names the offending key or kind.
    for (text, named) in [
        ("{kind: torus, nodes: 12}", "torus"),
        ("{kind: ring, nodes: 12, radius: 0.1}", "radius"),
        ("{kind: random_geometric, nodes: 12, radius: 0.1}", "seed"),
        ("{nodes: 12}", "kind"),
    ] {
        let yaml = format!("network_generator: {text}\n");
        match EnvConfig::from_yaml(&yaml) {
            Err(ConfigError::Parse { message, .. }) => {
                std::eprintln!("{text}: {message}");
                assert!(message.contains(named), "{text}: {message}");
            }
            other => panic!("{text}: expected a parse error, got {other:?}"),
        }
    }
}

#[test]
fn a_generator_and_a_network_together_are_an_error_naming_both() {
    let config = EnvConfig {
        network_generator: Some(NetworkGenerator::Ring { nodes: 5 }),
        ..EnvConfig::with_network(&["a b", "b c"])
    };
    let error = config.build().unwrap_err();
    assert_eq!(error.field(), Some("network_generator"));
    let message = error.to_string();
    assert!(
        message.contains("network or network_generator") && message.contains("ring"),
        "{message}"
    );
    // The default network may stay (it is what a file without `network`
    // holds).
    let with_default = EnvConfig {
        network_generator: Some(NetworkGenerator::Ring { nodes: 5 }),
        ..EnvConfig::default()
    };
    assert_eq!(with_default.build().unwrap().topology().num_agents(), 5);
}

#[test]
fn bad_generator_parameters_fail_the_build_naming_field_and_value() {
    for (yaml, field, value) in [
        (
            "{kind: random_geometric, nodes: 20, seed: 1, radius: -0.3}",
            "network_generator.radius",
            "-0.3",
        ),
        ("{kind: ring, nodes: 1}", "network_generator.nodes", "1"),
        (
            "{kind: barabasi_albert, nodes: 200, m: 40, seed: 1}",
            "network_generator.m",
            "40",
        ),
        (
            "{kind: star_of_stars, hubs: 2, leaves_per_hub: 62}",
            "network_generator.leaves_per_hub",
            "62",
        ),
        (
            "{kind: grid, rows: -2, cols: 3}",
            "network_generator.rows",
            "-2",
        ),
    ] {
        let config = EnvConfig::from_yaml(&format!("network_generator: {yaml}\n")).unwrap();
        match config.build() {
            Err(ConfigError::Invalid {
                field: f, value: v, ..
            }) => {
                assert_eq!((f.as_str(), v.as_str()), (field, value), "{yaml}");
            }
            other => panic!("{yaml}: expected an Invalid error, got {other:?}"),
        }
    }
}

#[test]
fn thousand_node_generated_federations_build_and_step() {
    for generator in [
        NetworkGenerator::RandomGeometric {
            nodes: 1000,
            radius: 0.04,
            seed: 5,
        },
        NetworkGenerator::BarabasiAlbert {
            nodes: 1000,
            m: 2,
            seed: 5,
        },
    ] {
        let config = EnvConfig {
            network_generator: Some(generator.clone()),
            max_steps: 6,
            node_ram_gb_range: Some(vec![2.0, 8.0]),
            ..EnvConfig::default()
        };
        let built = config.build().unwrap();
        let model = EnvModel::new(&built).unwrap();
        assert_eq!(model.num_agents(), 1000);
        assert!(model.action_width() <= crate::split::MAX_ACTIONS);

        let mut env = Env::new(model.clone());
        env.reset(Some(3)).unwrap();
        let actions = even_actions(&model, 1);
        for step in 0..6 {
            let outcome = env.step(&actions).unwrap();
            assert!(
                outcome
                    .rewards
                    .iter()
                    .all(|r| r.is_finite() && (-1.0..=1.0).contains(r)),
                "{generator:?} step {step}"
            );
            assert!(outcome.observations.iter().all(|o| o.is_finite()));
            assert_eq!(outcome.done, step == 5);
        }

        let envs = 3;
        let mut batch = BatchEnv::new(model.clone(), envs).unwrap();
        batch.reset(11).unwrap();
        let actions = even_actions(&model, envs);
        let mut done_seen = false;
        for _ in 0..8 {
            batch.step(&actions).unwrap();
            assert!(batch.rewards().iter().all(|r| r.is_finite()));
            done_seen |= batch.dones().iter().all(|&d| d);
        }
        assert!(
            done_seen,
            "{generator:?}: every env ends its episode at step 6"
        );
        // Requests arrive: the federation is not idle.
        assert!((0..envs).all(|e| batch.input_rates(e).iter().any(|&r| r > 0)));
    }
}

#[test]
fn node_ram_is_drawn_per_node_within_the_range_and_recorded() {
    let config = EnvConfig {
        network_generator: Some(NetworkGenerator::Ring { nodes: 50 }),
        node_ram_gb_range: Some(vec![2.0, 8.0]),
        request_memory_mb: Some(256),
        ..EnvConfig::default()
    };
    let built = config.build().unwrap();
    let ram = built.config().node_ram_gb.clone().unwrap();
    assert_eq!(ram.len(), 50);
    assert!(ram.values().all(|&r| (2.0..8.0).contains(&r)), "{ram:?}");
    // The documented stream: one uniform draw per node in agent order.
    let mut rng = seeded(config.build_seed ^ NODE_RAM_STREAM);
    for name in built.topology().names() {
        assert_eq!(ram[name], uniform(&mut rng, 2.0, 8.0), "{name}");
    }
    // Capacities follow: floor(ram · 1024 / 256) differ between nodes.
    let capacities: Vec<u32> = built
        .node_params()
        .iter()
        .map(|p| p.maximum_concurrency)
        .collect();
    for (name, capacity) in built.topology().names().iter().zip(&capacities) {
        assert_eq!(*capacity, libm::floor(ram[name] * 4.0) as u32, "{name}");
    }
    let mut distinct = capacities.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() > 10, "{capacities:?}");
    // The concrete config holds the table, not the range, and rebuilds.
    assert_eq!(built.config().node_ram_gb_range, None);
    let text = built.config().to_yaml().unwrap();
    assert!(!text.contains("node_ram_gb_range"));
    assert_eq!(EnvConfig::from_yaml(&text).unwrap().build().unwrap(), built);
    // The other drawn values do not move; another build_seed draws other
    // RAM.
    let plain = EnvConfig {
        node_ram_gb_range: None,
        ..config.clone()
    }
    .build()
    .unwrap();
    assert_eq!(
        plain.config().warm_service_time,
        built.config().warm_service_time
    );
    assert_eq!(plain.input_size_bytes(), built.input_size_bytes());
    assert_eq!(plain.links(), built.links());
    let other = EnvConfig {
        build_seed: 43,
        ..config.clone()
    }
    .build()
    .unwrap();
    assert_ne!(other.config().node_ram_gb, built.config().node_ram_gb);
    assert_eq!(config.build().unwrap(), built);
    // A range of one value gives every node that value.
    let fixed = EnvConfig {
        node_ram_gb_range: Some(vec![3.0, 3.0]),
        ..config
    }
    .build()
    .unwrap();
    assert!(
        fixed
            .config()
            .node_ram_gb
            .as_ref()
            .unwrap()
            .values()
            .all(|&r| r == 3.0)
    );
}

#[test]
fn bad_ram_ranges_and_both_ram_keys_are_errors() {
    let base = || EnvConfig {
        node_ram_gb_range: Some(vec![2.0, 8.0]),
        ..EnvConfig::default()
    };
    for range in [
        vec![0.0, 4.0],
        vec![5.0, 4.0],
        vec![1.0],
        vec![1.0, f64::INFINITY],
    ] {
        let config = EnvConfig {
            node_ram_gb_range: Some(range.clone()),
            ..base()
        };
        assert_eq!(field_of(config.build()), "node_ram_gb_range", "{range:?}");
    }
    let both = EnvConfig {
        node_ram_gb: Some(
            [("node_0", 4.0), ("node_1", 4.0)]
                .into_iter()
                .map(|(n, r)| (n.to_string(), r))
                .collect(),
        ),
        ..base()
    };
    let error = both.build().unwrap_err();
    assert_eq!(error.field(), Some("node_ram_gb_range"));
    assert!(
        error
            .to_string()
            .contains("node_ram_gb or node_ram_gb_range")
    );
    // A range too small for one request: a typed error, not a panic.
    let tiny = EnvConfig {
        node_ram_gb_range: Some(vec![0.01, 0.02]),
        request_memory_mb: Some(512),
        ..EnvConfig::default()
    };
    assert_eq!(
        field_of(tiny.build()),
        "perfmodel_params.node_0.maximum_concurrency"
    );
    let parsed = EnvConfig::from_yaml("node_ram_gb_range: [1.5, 6]\n").unwrap();
    assert_eq!(parsed.node_ram_gb_range, Some(vec![1.5, 6.0]));
}

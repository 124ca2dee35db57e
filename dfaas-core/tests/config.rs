//! Configuration: the reference's file shapes load, built configurations
//! write back and read back identically, bad configurations give typed
//! errors naming the field and the value.

mod common;

use dfaas_core::bandwidth::load_base_trace;
use dfaas_core::{ConfigError, EnvConfig, PerfModelRegime};
use std::path::PathBuf;

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/configs")
}

fn base_trace() -> Vec<f64> {
    load_base_trace(&common::base_trace_path()).unwrap()
}

#[test]
fn reference_shapes_load_and_build() {
    let mut count = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        let config =
            EnvConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let built = config
            .build_with_base_trace(&base_trace())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(built.topology().num_agents() >= 2);
        count += 1;
    }
    assert_eq!(count, 9);
}

#[test]
fn a_missing_base_trace_file_is_a_clear_error_and_no_path_uses_the_fallback() {
    let config = EnvConfig::from_file(configs_dir().join("full_default.yaml")).unwrap();
    match config.build() {
        Err(ConfigError::Io { path, .. }) => assert_eq!(path, "dataset/5G_trace.csv"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    let fallback = EnvConfig {
        bandwidth_base_trace_path: None,
        ..config.clone()
    }
    .build()
    .unwrap();
    let trace = &fallback.links()[0].bandwidth_mbps;
    assert!(trace.iter().all(|&v| (90.0..=110.0).contains(&v)));
    let with_file = EnvConfig {
        bandwidth_base_trace_path: Some(common::base_trace_path().display().to_string()),
        ..config
    }
    .build()
    .unwrap();
    assert_eq!(with_file.links(), config_with_trace().links());
}

fn config_with_trace() -> dfaas_core::BuiltConfig {
    EnvConfig::from_file(configs_dir().join("full_default.yaml"))
        .unwrap()
        .build_with_base_trace(&base_trace())
        .unwrap()
}

#[test]
fn built_configs_write_back_and_read_back_identically() {
    for name in [
        "full_default.yaml",
        "five_agents.yaml",
        "two_agents_step_change.yaml",
    ] {
        let built = EnvConfig::from_file(configs_dir().join(name))
            .unwrap()
            .build_with_base_trace(&base_trace())
            .unwrap();
        let yaml = built.config().to_yaml().unwrap();
        let again = EnvConfig::from_yaml(&yaml).unwrap().build().unwrap();
        assert_eq!(again, built, "{name} via YAML");
        let json = built.config().to_json().unwrap();
        let again = EnvConfig::from_json(&json).unwrap().build().unwrap();
        assert_eq!(again, built, "{name} via JSON");
    }
}

#[test]
fn conformance_configs_keep_their_concrete_values() {
    let dir = common::conformance_dir().join("episodes");
    for (name, warm, cold, max_conc) in [
        ("three_nodes_s", 0.411, 0.667, 6),
        ("two_nodes_ms", 137.0, 513.0, 7),
    ] {
        let built = EnvConfig::from_file(dir.join(name).join("config.yaml"))
            .unwrap()
            .build()
            .unwrap();
        for p in built.node_params() {
            assert_eq!(
                (
                    p.warm_service_time,
                    p.cold_service_time,
                    p.maximum_concurrency
                ),
                (warm, cold, max_conc)
            );
        }
    }
}

#[test]
fn regimes_decide_the_units_of_drawn_service_times() {
    let seconds = EnvConfig::default().build().unwrap();
    let reference = EnvConfig {
        perfmodel_regime: PerfModelRegime::Reference,
        ..EnvConfig::default()
    }
    .build()
    .unwrap();
    let (s, r) = (seconds.node_params()[0], reference.node_params()[0]);
    assert!((0.1..=0.5).contains(&s.warm_service_time));
    assert!((100.0..=500.0).contains(&r.warm_service_time) && r.warm_service_time.fract() == 0.0);
    assert_eq!(s.warm_service_time, r.warm_service_time / 1000.0);
    assert!(s.cold_service_time >= s.warm_service_time);
}

#[test]
fn giving_one_value_keeps_the_other_draws() {
    let drawn = EnvConfig::default().build().unwrap();
    let given = EnvConfig {
        request_memory_mb: Some(512),
        ..EnvConfig::default()
    }
    .build()
    .unwrap();
    assert_eq!(given.config().request_memory_mb, Some(512));
    assert_eq!(given.input_size_bytes(), drawn.input_size_bytes());
    assert_eq!(
        given.node_params()[0].warm_service_time,
        drawn.node_params()[0].warm_service_time
    );
    assert_eq!(given.node_params()[0].maximum_concurrency, 8);
}

fn error_of(yaml: &str) -> ConfigError {
    match EnvConfig::from_yaml(yaml).and_then(|c| c.build()) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e,
    }
}

fn assert_invalid(yaml: &str, field: &str, value: &str) {
    let e = error_of(yaml);
    assert_eq!(e.field(), Some(field), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(field) && text.contains(value),
        "`{text}` should name {field} and {value}"
    );
}

#[test]
fn bad_configs_give_typed_errors_naming_field_and_value() {
    let missing = error_of("network: [\"a b c\"]\nnode_ram_gb: {a: 4, b: 4}\n");
    assert!(
        matches!(&missing, ConfigError::Missing { field, what } if field == "node_ram_gb" && what.contains("'c'")),
        "{missing}"
    );
    let missing = error_of("network: [\"a b\"]\nperfmodel_params: {a: {}}\n");
    assert!(
        matches!(&missing, ConfigError::Missing { field, .. } if field == "perfmodel_params"),
        "{missing}"
    );
    assert_invalid(
        "network: [\"a b\"]\nnetwork_links: {a: {b: {access_delay_ms: -5}}}\n",
        "network_links.a.b.access_delay_ms",
        "-5",
    );
    assert_invalid(
        "network: [\"a b\"]\nperfmodel_params: {a: {warm_service_time: 0.5, cold_service_time: 0.2}, b: {}}\n",
        "perfmodel_params.a.cold_service_time",
        "0.2",
    );
    let unknown = error_of("network: [\"a b\"]\nmax_stepz: 3\n");
    assert_eq!(
        unknown,
        ConfigError::UnknownKey {
            field: "max_stepz".into()
        }
    );
    let unknown = error_of("network: [\"a b\"]\nnetwork_links: {a: {b: {delay: 3}}}\n");
    assert_eq!(
        unknown,
        ConfigError::UnknownKey {
            field: "network_links.a.b.delay".into()
        }
    );
    assert_invalid(
        "network: [\"a b\"]\nmax_steps: 3\nnetwork_links: {a: {b: {bandwidth_mbps_method: static-trace, bandwidth_mbps: [1, 2]}}}\n",
        "network_links.a.b.bandwidth_mbps",
        "2 values",
    );
    assert_invalid(
        "network: [\"a b\"]\nnetwork_links: {a: {z: {}}}\n",
        "network_links.a.z",
        "z",
    );
    assert_invalid(
        "network: [\"a b\"]\nnetwork_links: {a: {b: {bandwidth_mbps_random_noise: 1.5}}}\n",
        "network_links.a.b.bandwidth_mbps_random_noise",
        "1.5",
    );
    assert_invalid(
        "network: [\"a b\"]\nnetwork_links: {a: {b: {bandwidth_mbps_mean: 0}}}\n",
        "network_links.a.b.bandwidth_mbps_mean",
        "0",
    );
    assert_invalid(
        "network: [\"a b\"]\nnetwork_links: {a: {b: {bandwidth_mbps_method: carrier-pigeon}}}\n",
        "network_links.a.b.bandwidth_mbps_method",
        "carrier-pigeon",
    );
    assert_invalid("max_steps: 0\n", "max_steps", "0");
    // Sizes whose bit count would overflow (`bytes·8` in u64) or lose
    // exactness in f64 are refused.
    assert_invalid(
        "request_input_data_size_bytes: 18446744073709551615\n",
        "request_input_data_size_bytes",
        "18446744073709551615",
    );
    assert_invalid(
        "request_output_data_size_bytes_range: [100, 1.0e17]\n",
        "request_output_data_size_bytes_range",
        "100000000000000000",
    );
    // Ranges that almost never give warm <= cold end with an error.
    assert_invalid(
        "warm_service_time_range: [0, 1000000000000]\ncold_service_time_range: [0, 0]\n",
        "warm_service_time_range",
        "no warm <= cold pair",
    );
    assert_invalid(
        "warm_service_time_range: [500, 100]\n",
        "warm_service_time_range",
        "500",
    );
    assert_invalid(
        "input_rate_method: synthetic-constant\nnetwork: [\"a b c\"]\n",
        "input_rate_method",
        "synthetic-constant",
    );
    assert_invalid(
        "network: [\"a b\"]\nperfmodel_params: {a: {maximum_concurrency: 0}, b: {}}\n",
        "perfmodel_params.a.maximum_concurrency",
        "0",
    );
    assert!(matches!(
        error_of("max_steps: [1, 2]\n"),
        ConfigError::Parse { format: "yaml", .. }
    ));
    assert!(matches!(
        error_of("network: [\n"),
        ConfigError::Parse { .. }
    ));
}

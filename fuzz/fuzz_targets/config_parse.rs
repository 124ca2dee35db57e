//! Arbitrary bytes as a YAML or JSON configuration: parsing and building
//! return typed errors, never panic.
#![no_main]

use dfaas_core::EnvConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [EnvConfig::from_yaml(text), EnvConfig::from_json(text)] {
        if let Ok(mut config) = parsed {
            // Keep the work per input bounded: the parser is the target.
            config.max_steps = config.max_steps.clamp(-5, 64);
            config.bandwidth_base_trace_path = None;
            config.real_traces_dir = None;
            if let Ok(built) = config.build() {
                let _ = built.config().to_yaml();
            }
        }
    }
});

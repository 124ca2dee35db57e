//! Arbitrary bytes as a checkpoint's `state.json` and
//! `policies.safetensors`: loading returns a trainer or a typed error,
//! never a panic. The first two bytes give the length of the state part
//! (seed the corpus with a real checkpoint's files, see `fuzz/README.md`).
#![no_main]

use dfaas_policies::backend::CpuBackend;
use dfaas_policies::checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (state, tensors) = rest.split_at(split);
    if let Err(e) = checkpoint::from_bytes(state, tensors, CpuBackend::new()) {
        let _ = e.to_string();
    }
});

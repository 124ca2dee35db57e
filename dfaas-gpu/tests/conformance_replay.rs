//! The conformance episodes replayed on the GPU: every split, reject and
//! observation equals the CPU `Env` with the same (exact-integer) reject
//! rule, every reward within 4 ulp of it. Against the reference itself (the CPU replay with its f64
//! rule, which reproduces its `stats.csv`): every split is identical, every
//! node rejects the same number of requests, and the split of those rejects
//! over a node's incoming list differs only where the two rules break a tie
//! differently (counted and printed).

use dfaas_core::replay::{Episode, EpisodeFiles};
use dfaas_core::{Env, EnvConfig, EnvModel, RejectArithmetic};
use dfaas_gpu::{GpuBatchEnv, GpuContext, TracePool};
use std::path::PathBuf;

#[test]
fn conformance_episodes_replay_on_the_gpu() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/episodes");
    assert!(
        dir.is_dir(),
        "conformance vectors missing at {}",
        dir.display()
    );
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 6);
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let episode = Episode::load(&EpisodeFiles::in_folder(&path)).unwrap();
        let mut reference = Vec::new();
        episode
            .replay(|_, metrics| reference.push(metrics.clone()))
            .unwrap();
        let exact = EnvConfig {
            reject_arithmetic: RejectArithmetic::Exact,
            ..episode.built.config().clone()
        };
        let model = EnvModel::new(&exact.build().unwrap()).unwrap();
        let (n, w) = (model.num_agents(), model.action_width());
        let pool = TracePool::generate(&model, 1, 0).unwrap();
        let mut gpu = GpuBatchEnv::new(&ctx, &model, 1, &pool).unwrap();
        let mut cpu = Env::new(model.clone());
        cpu.reset(Some(0)).unwrap();
        let mut tie_breaks = 0usize;
        for (step, actions) in episode.actions.chunks_exact(n * w).enumerate() {
            let outcome = cpu.step(actions).unwrap();
            let (cpu_obs, cpu_rewards, last) = (
                outcome.observations.to_vec(),
                outcome.rewards.to_vec(),
                outcome.done,
            );
            gpu.step(&ctx, actions).unwrap();
            let (splits, rejects) = gpu.splits_and_rejects(&ctx).unwrap();
            let (m, r) = (cpu.metrics(), &reference[step]);
            for a in 0..n {
                let (k, at) = (model.degree(a), a * w);
                let at_step = format!("{name} step {step} agent {a}");
                assert_eq!(
                    &splits[at..at + k + 2],
                    &m.action[at..at + k + 2],
                    "{at_step}: split"
                );
                assert_eq!(
                    rejects[at], m.incoming_rate_local_reject[a],
                    "{at_step}: local rejects"
                );
                assert_eq!(
                    &rejects[at + 1..=at + k],
                    &m.forward_rejects[at + 1..=at + k],
                    "{at_step}: forward rejects"
                );
                assert_eq!(
                    &splits[at..at + k + 2],
                    &r.action[at..at + k + 2],
                    "{at_step}: reference split"
                );
                assert_eq!(
                    m.incoming_rate_reject[a], r.incoming_rate_reject[a],
                    "{at_step}: reference rejects at the node"
                );
                let ours =
                    std::iter::once(rejects[at]).chain(rejects[at + 1..=at + k].iter().copied());
                let theirs = std::iter::once(r.incoming_rate_local_reject[a])
                    .chain(r.forward_rejects[at + 1..=at + k].iter().copied());
                tie_breaks += ours.zip(theirs).filter(|(x, y)| x != y).count();
            }
            // After the last step the GPU has auto-reset; the CPU `Env` shows
            // its terminal observation instead.
            if !last {
                assert_eq!(
                    gpu.observations(&ctx).unwrap(),
                    cpu_obs,
                    "{name} step {step}: observations"
                );
            }
            // Within 4 ulp, not bit for bit: both divide the same exact
            // integers, the CPU correctly rounded (≤ ½ ulp), WGSL's `x / y`
            // only within 2.5 ulp (WGSL spec), so ≤ 3 ulp apart (an ulp is
            // at most 2⁻²³ of the magnitude), plus one for measuring from
            // the CPU value; a zero quotient may at most become a subnormal.
            for (a, (g, c)) in gpu
                .rewards(&ctx)
                .unwrap()
                .iter()
                .zip(&cpu_rewards)
                .enumerate()
            {
                assert!(
                    (g - c).abs() <= 4.0 * f32::EPSILON * c.abs().max(f32::MIN_POSITIVE),
                    "{name} step {step} agent {a}: reward {g} vs {c}"
                );
            }
        }
        eprintln!(
            "{name}: {} steps equal on the GPU and the CPU; {tie_breaks} reject entries split differently by the reference's f64 rule",
            reference.len()
        );
    }
}

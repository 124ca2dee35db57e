//! Distribution-level conformance of the random generators: the project's
//! RNG differs from the reference's, so the statistics of 2000 episodes (or
//! build seeds) are compared with the reference's, with exactly the tests
//! recommended by `../shared/conformance/generators/README.md` (|z| <= 6,
//! pooled standard deviations, continuity-corrected proportions, KS for
//! bandwidth).

mod common;

use dfaas_core::InputRateMethod;
use dfaas_core::bandwidth::{generate_trace, load_base_trace};
use dfaas_core::input_rate::{GeneratorInputs, Sinusoids, generate_unscaled, scale_down};
use dfaas_core::rng::seeded;
use std::collections::HashMap;

const N: usize = 2000;
const STEPS: usize = 288;
const Z_MAX: f64 = 6.0;

/// Per-row statistics of a sample.
#[derive(Default)]
struct Sample {
    values: Vec<f64>,
    /// For `total` rows: whether scale-down was active.
    scaled: Vec<bool>,
}

impl Sample {
    fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }
    fn std(&self) -> f64 {
        let m = self.mean();
        (self.values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (self.values.len() - 1) as f64)
            .sqrt()
    }
    fn frac(&self, target: f64) -> f64 {
        self.values.iter().filter(|&&v| v == target).count() as f64 / self.values.len() as f64
    }
    fn scaled_frac(&self) -> f64 {
        self.scaled.iter().filter(|&&s| s).count() as f64 / self.scaled.len() as f64
    }
}

fn proportion_z(p: f64, p_ref: f64, n_ref: f64, n: f64) -> Option<f64> {
    let pooled = (n_ref * p_ref + n * p) / (n_ref + n);
    if pooled <= 0.0 || pooled >= 1.0 {
        return None;
    }
    let k = 1.0 / n_ref + 1.0 / n;
    Some(((p - p_ref).abs() - 0.5 * k).max(0.0) / (pooled * (1.0 - pooled) * k).sqrt())
}

/// Assigns each slot of an episode to the phase k maximising
/// Σ_t x[t]·sin(2πt/288 + 2πk/n); `None` if that is not a permutation.
fn phase_assignment(traces: &[u32], n: usize) -> Option<Vec<usize>> {
    let mut assignment = Vec::with_capacity(n);
    for j in 0..n {
        let trace = &traces[j * STEPS..(j + 1) * STEPS];
        let score = |k: usize| -> f64 {
            trace
                .iter()
                .enumerate()
                .map(|(t, &x)| {
                    let angle = 2.0 * std::f64::consts::PI * t as f64 / STEPS as f64
                        + 2.0 * std::f64::consts::PI * k as f64 / n as f64;
                    f64::from(x) * angle.sin()
                })
                .sum()
        };
        let best = (0..n)
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap();
        assignment.push(best);
    }
    let mut seen = assignment.clone();
    seen.sort_unstable();
    seen.dedup();
    (seen.len() == n).then_some(assignment)
}

fn method_of(name: &str) -> InputRateMethod {
    match name {
        "synthetic-sinusoidal" => InputRateMethod::SyntheticSinusoidal,
        "synthetic-normal" => InputRateMethod::SyntheticNormal,
        "synthetic-constant" => InputRateMethod::SyntheticConstant,
        "synthetic-linear-growth" => InputRateMethod::SyntheticLinearGrowth,
        "synthetic-double-linear-growth" => InputRateMethod::SyntheticDoubleLinearGrowth,
        "synthetic-step-change" => InputRateMethod::SyntheticStepChange,
        other => panic!("unknown method {other}"),
    }
}

/// Generates N episodes of `n` agents and collects every view's samples.
fn collect(method: &InputRateMethod, n: usize) -> HashMap<(String, i64, i64), Sample> {
    let sinusoids = Sinusoids::new(n, STEPS);
    let names: Vec<String> = (0..n).map(|i| format!("node_{i}")).collect();
    let inputs = GeneratorInputs {
        method,
        num_agents: n,
        max_steps: STEPS,
        sinusoids: &sinusoids,
        real: None,
        evaluation: false,
        agent_names: &names,
    };
    let scales = matches!(
        method,
        InputRateMethod::SyntheticSinusoidal | InputRateMethod::SyntheticNormal
    );
    let mut samples: HashMap<(String, i64, i64), Sample> = HashMap::new();
    let mut traces = vec![0u32; n * STEPS];
    for episode in 0..N {
        let mut rng = seeded(0x5EED_0000 + episode as u64);
        generate_unscaled(&inputs, &mut rng, &mut traces).unwrap();
        let pre_totals: Vec<u32> = (0..STEPS)
            .map(|t| (0..n).map(|j| traces[j * STEPS + t]).sum())
            .collect();
        if scales {
            scale_down(&mut traces, n, STEPS);
        }
        let overall = samples.entry(("overall".into(), -1, -1)).or_default();
        overall.values.extend(traces.iter().map(|&v| f64::from(v)));
        overall
            .scaled
            .extend(pre_totals.iter().map(|&s| scales && s > 63 * n as u32));
        for t in 0..STEPS {
            let total: u32 = (0..n).map(|j| traces[j * STEPS + t]).sum();
            let row = samples.entry(("total".into(), -1, t as i64)).or_default();
            row.values.push(f64::from(total));
            row.scaled.push(scales && pre_totals[t] > 63 * n as u32);
            for j in 0..n {
                samples
                    .entry(("slot".into(), j as i64, t as i64))
                    .or_default()
                    .values
                    .push(f64::from(traces[j * STEPS + t]));
            }
        }
        if matches!(method, InputRateMethod::SyntheticSinusoidal) {
            let phases = phase_assignment(&traces, n)
                .unwrap_or_else(|| panic!("episode {episode}: phases are not a permutation"));
            for (j, &k) in phases.iter().enumerate() {
                for t in 0..STEPS {
                    samples
                        .entry(("phase".into(), k as i64, t as i64))
                        .or_default()
                        .values
                        .push(f64::from(traces[j * STEPS + t]));
                }
            }
        }
    }
    samples
}

fn check_method(name: &str) {
    let path = common::conformance_dir()
        .join("generators")
        .join(format!("input_rate_{name}.csv"));
    let (header, rows) = common::read_csv(&path);
    let col = |row: &[String], c: &str| -> Option<f64> {
        let i = header.iter().position(|h| h == c).unwrap();
        row[i].parse().ok()
    };
    let method = method_of(name);
    let mut blocks: Vec<usize> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    blocks.dedup();
    for n in blocks {
        let samples = collect(&method, n);
        let all = &samples[&("overall".to_string(), -1, -1)];
        assert!(
            all.values.iter().all(|&v| (1.0..=150.0).contains(&v)),
            "{name} n={n}: values outside [1, 150]"
        );
        let mut worst: (f64, String) = (0.0, String::new());
        let mut note = |z: f64, what: String| {
            assert!(z.is_finite(), "{what}: z is {z}");
            if z.abs() > worst.0 {
                worst = (z.abs(), what);
            }
        };
        for row in rows.iter().filter(|r| r[0] == n.to_string()) {
            let (view, index, step) = (
                row[1].clone(),
                row[2].parse::<i64>().unwrap(),
                row[3].parse::<i64>().unwrap(),
            );
            let sample = samples
                .get(&(view.clone(), index, step))
                .unwrap_or_else(|| panic!("{name} n={n}: no sample for {view} {index} {step}"));
            let n_ref = col(row, "episodes").unwrap();
            let nn = N as f64;
            let at = |what: &str| format!("{name} n={n} {view} {index} step {step} {what}");
            let (m, s) = (sample.mean(), sample.std());
            let (m_ref, s_ref) = (col(row, "mean").unwrap(), col(row, "std").unwrap());
            if view == "overall" {
                let k = (1.0 / n_ref + 1.0 / nn).sqrt();
                for (value, reference, se) in [
                    (m, m_ref, "mean_se1"),
                    (s, s_ref, "std_se1"),
                    (
                        sample.scaled_frac(),
                        col(row, "scaled_frac").unwrap(),
                        "scaled_frac_se1",
                    ),
                    (
                        sample.frac(1.0),
                        col(row, "frac_at_1").unwrap(),
                        "frac_at_1_se1",
                    ),
                    (
                        sample.frac(150.0),
                        col(row, "frac_at_150").unwrap(),
                        "frac_at_150_se1",
                    ),
                ] {
                    let se1 = col(row, se).unwrap();
                    if se1 == 0.0 {
                        assert_eq!(value, reference, "{}", at(se));
                    } else {
                        note((value - reference) / (se1 * k), at(se));
                    }
                }
                continue;
            }
            if s_ref == 0.0 && s == 0.0 {
                assert_eq!(m, m_ref, "{}", at("mean (deterministic)"));
            } else {
                let pooled = ((n_ref * s_ref * s_ref + nn * s * s) / (n_ref + nn)).sqrt();
                note(
                    (m - m_ref) / (pooled * (1.0 / n_ref + 1.0 / nn).sqrt()),
                    at("mean"),
                );
            }
            if s_ref >= 0.5 {
                let se1 = col(row, "std_se1").unwrap();
                note(
                    (s - s_ref) / (se1 * (1.0 / n_ref + 1.0 / nn).sqrt()),
                    at("std"),
                );
            }
            if view == "total" {
                if !sample.scaled.is_empty()
                    && let Some(z) = proportion_z(
                        sample.scaled_frac(),
                        col(row, "scaled_frac").unwrap(),
                        n_ref,
                        nn,
                    )
                {
                    note(z, at("scaled_frac"));
                }
            } else {
                for (target, c) in [(1.0, "frac_at_1"), (150.0, "frac_at_150")] {
                    if let Some(z) =
                        proportion_z(sample.frac(target), col(row, c).unwrap(), n_ref, nn)
                    {
                        note(z, at(c));
                    }
                }
            }
        }
        assert!(
            worst.0 <= Z_MAX,
            "largest |z| = {:.2} at {}",
            worst.0,
            worst.1
        );
    }
}

#[test]
fn sinusoidal_matches_the_reference_distribution() {
    check_method("synthetic-sinusoidal");
}

#[test]
fn normal_matches_the_reference_distribution() {
    check_method("synthetic-normal");
}

#[test]
fn two_agent_methods_match_the_reference() {
    for name in [
        "synthetic-double-linear-growth",
        "synthetic-constant",
        "synthetic-linear-growth",
        "synthetic-step-change",
    ] {
        check_method(name);
    }
}

#[test]
fn generated_bandwidth_matches_the_reference_distribution() {
    let dir = common::conformance_dir().join("generators");
    let (header, rows) = common::read_csv(&dir.join("bandwidth_generated.csv"));
    let (_, pmf) = common::read_csv(&dir.join("bandwidth_generated_pmf.csv"));
    let base = load_base_trace(&common::base_trace_path()).unwrap();
    let col = |row: &[String], c: &str| -> f64 {
        row[header.iter().position(|h| h == c).unwrap()]
            .parse()
            .unwrap()
    };
    for row in &rows {
        let (mean, noise) = (
            col(row, "bandwidth_mbps_mean"),
            col(row, "bandwidth_mbps_random_noise"),
        );
        let traces: Vec<Vec<f64>> = (1..=N as u64)
            .map(|seed| generate_trace(&base, STEPS, mean, noise, seed))
            .collect();
        let values: Vec<f64> = traces.iter().flatten().copied().collect();
        assert!(values.iter().all(|&v| v >= 0.0 && v.fract() == 0.0));
        let (n_ref, n) = (col(row, "values"), values.len() as f64);
        // 1. Kolmogorov–Smirnov against the reference's empirical CDF.
        let reference_cdf: Vec<(f64, f64)> = pmf
            .iter()
            .filter(|r| {
                r[0].parse::<f64>().unwrap() == mean && r[1].parse::<f64>().unwrap() == noise
            })
            .map(|r| (r[2].parse().unwrap(), r[4].parse().unwrap()))
            .collect();
        let max_value = values
            .iter()
            .copied()
            .fold(0.0, f64::max)
            .max(reference_cdf.last().unwrap().0);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let (mut d, mut below, mut r) = (0.0f64, 0usize, 0usize);
        let mut f_ref = 0.0;
        for v in 0..=max_value as i64 {
            let v = v as f64;
            while below < sorted.len() && sorted[below] <= v {
                below += 1;
            }
            while r < reference_cdf.len() && reference_cdf[r].0 <= v {
                f_ref = reference_cdf[r].1;
                r += 1;
            }
            d = d.max((below as f64 / n - f_ref).abs());
        }
        let d_crit = 2.2252 * (1.0 / n_ref + 1.0 / n).sqrt();
        assert!(
            d <= d_crit,
            "mean {mean} noise {noise}: KS D = {d:.5} > {d_crit:.5}"
        );
        // 2. Mean.
        let m = values.iter().sum::<f64>() / n;
        let z = (m - col(row, "mean")) / (col(row, "std") * (1.0 / n_ref + 1.0 / n).sqrt());
        assert!(
            z.abs() <= Z_MAX,
            "mean {mean} noise {noise}: mean z = {z:.2}"
        );
        // 3. Lag-1 autocorrelation within a trace.
        let lag1: f64 = traces
            .iter()
            .map(|t| {
                let mu = t.iter().sum::<f64>() / t.len() as f64;
                let num: f64 = t.windows(2).map(|w| (w[0] - mu) * (w[1] - mu)).sum();
                let den: f64 = t.iter().map(|x| (x - mu).powi(2)).sum();
                num / den
            })
            .sum::<f64>()
            / N as f64;
        let z = (lag1 - col(row, "lag1_autocorr_mean"))
            / (col(row, "lag1_autocorr_sd") * (1.0 / 10000.0 + 1.0 / N as f64).sqrt());
        assert!(
            z.abs() <= Z_MAX,
            "mean {mean} noise {noise}: lag-1 z = {z:.2}"
        );
    }
}

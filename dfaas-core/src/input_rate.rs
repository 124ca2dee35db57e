//! Input-rate generators (spec §4): one trace per agent of `max_steps`
//! integers, drawn at every reset from the episode's RNG stream.
//!
//! Synthetic values are clipped to [1, 150]; `real` traces are used as
//! read (not clipped), `static` traces as given. Draw order per method:
//! * sinusoidal: n noise ratios U(0.05, 0.1); then per agent `max_steps`
//!   standard normals; then a shuffle of the n traces among the agents;
//!   then [`scale_down`];
//! * normal: per agent `max_steps` standard normals; then scale-down;
//! * double linear growth: start/end of line 1, start/end of line 2
//!   (integers in [1, 150)), then a shuffle of the two agents;
//! * real: n distinct day files (partial shuffle of the pool), then one
//!   row per agent in agent order.

use crate::alloc_prelude::*;
use crate::config::InputRateMethod;
use crate::error::ResetError;
use crate::rng::{Xoshiro128PlusPlus, below, inclusive, shuffle, standard_normal, uniform};

/// Lowest and highest synthetic input rate.
pub const RATE_MIN: u32 = 1;
/// See [`RATE_MIN`].
pub const RATE_MAX: u32 = 150;
/// Largest input rate the environment accepts from any method: static
/// traces are checked against it at build, real day-file values are below
/// 10⁶, synthetic ones at most [`RATE_MAX`]. Products of a rate with an
/// action entry are exact in f32 below 2²⁴.
pub const MAX_INPUT_RATE: u32 = 1 << 20;
/// Per-agent capacity of scale-down: the sum over agents is capped at
/// `63·n` at every step.
pub const SCALE_DOWN_PER_AGENT: u32 = 63;

/// The deterministic sinusoids `65·sin(2π·t/max_steps + 2π·i/n) + 70`,
/// `[i][t]`, computed once per (n, max_steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Sinusoids {
    max_steps: usize,
    values: Vec<f64>,
}

impl Sinusoids {
    /// Tabulates the n phase-shifted sinusoids.
    #[must_use]
    pub fn new(num_agents: usize, max_steps: usize) -> Self {
        let two_pi = 2.0 * core::f64::consts::PI;
        let mut values = Vec::with_capacity(num_agents * max_steps);
        for i in 0..num_agents {
            let phase = i as f64 * (two_pi / num_agents as f64);
            for t in 0..max_steps {
                values.push(65.0 * libm::sin(two_pi * t as f64 / max_steps as f64 + phase) + 70.0);
            }
        }
        Self { max_steps, values }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.max_steps..(i + 1) * self.max_steps]
    }
}

/// Rounds half to even and clips to `[RATE_MIN, RATE_MAX]`.
fn round_clip(x: f64) -> u32 {
    libm::rint(x).clamp(f64::from(RATE_MIN), f64::from(RATE_MAX)) as u32
}

/// Everything a generator reads besides its RNG.
pub struct GeneratorInputs<'a> {
    /// The method.
    pub method: &'a InputRateMethod,
    /// Number of agents.
    pub num_agents: usize,
    /// Steps per episode.
    pub max_steps: usize,
    /// Sinusoid table (for `synthetic-sinusoidal`).
    pub sinusoids: &'a Sinusoids,
    /// Day files (for `real`).
    pub real: Option<&'a RealTraces>,
    /// Evaluation mode (chooses the `real` pool).
    pub evaluation: bool,
    /// Agent names (for error messages).
    pub agent_names: &'a [String],
}

/// Fills `out` (`[agent][step]`, `num_agents·max_steps` values) with one
/// episode's input rates.
///
/// # Errors
/// [`ResetError::UnsupportedTrace`] when a `real` row has all values
/// below 1 or all above 150 (the episode fails, as in the reference).
pub fn generate(
    inputs: &GeneratorInputs<'_>,
    rng: &mut Xoshiro128PlusPlus,
    out: &mut [u32],
) -> Result<(), ResetError> {
    generate_unscaled(inputs, rng, out)?;
    if matches!(
        inputs.method,
        InputRateMethod::SyntheticSinusoidal | InputRateMethod::SyntheticNormal
    ) {
        scale_down(out, inputs.num_agents, inputs.max_steps);
    }
    Ok(())
}

/// As [`generate`] without the final [`scale_down`] of the sinusoidal and
/// normal methods (the same draws: scale-down draws nothing).
///
/// # Errors
/// As [`generate`].
pub fn generate_unscaled(
    inputs: &GeneratorInputs<'_>,
    rng: &mut Xoshiro128PlusPlus,
    out: &mut [u32],
) -> Result<(), ResetError> {
    let (n, steps) = (inputs.num_agents, inputs.max_steps);
    debug_assert_eq!(out.len(), n * steps);
    match inputs.method {
        InputRateMethod::SyntheticSinusoidal => {
            let ratios: Vec<f64> = (0..n).map(|_| uniform(rng, 0.05, 0.1)).collect();
            for (i, ratio) in ratios.iter().enumerate() {
                let base = inputs.sinusoids.row(i);
                for (o, b) in out[i * steps..(i + 1) * steps].iter_mut().zip(base) {
                    *o = round_clip(b + ratio * (65.0 * standard_normal(rng)));
                }
            }
            permute_rows(rng, out, n, steps);
        }
        InputRateMethod::SyntheticNormal => {
            for o in out.iter_mut() {
                let x = 61.0 + 32.0 * standard_normal(rng);
                *o = libm::trunc(x).clamp(f64::from(RATE_MIN), f64::from(RATE_MAX)) as u32;
            }
        }
        InputRateMethod::SyntheticConstant => {
            out[..steps].fill(5);
            out[steps..].fill(100);
        }
        InputRateMethod::SyntheticLinearGrowth => {
            out[..steps].fill(5);
            linspace_rounded(1.0, 150.0, &mut out[steps..]);
        }
        InputRateMethod::SyntheticDoubleLinearGrowth => {
            let (s1, e1) = (inclusive(rng, 1, 149), inclusive(rng, 1, 149));
            let (s2, e2) = (inclusive(rng, 1, 149), inclusive(rng, 1, 149));
            let mut first = vec![0u32; steps];
            let mut second = vec![0u32; steps];
            linspace_rounded(s1 as f64, e1 as f64, &mut first);
            linspace_rounded(s2 as f64, e2 as f64, &mut second);
            let cap = SCALE_DOWN_PER_AGENT as i64;
            for (b, &a) in second.iter_mut().zip(&first) {
                *b = (i64::from(*b)).min(2 * cap - i64::from(a)).min(cap).max(1) as u32;
            }
            let mut order = [0usize, 1];
            shuffle(rng, &mut order);
            out[order[0] * steps..(order[0] + 1) * steps].copy_from_slice(&first);
            out[order[1] * steps..(order[1] + 1) * steps].copy_from_slice(&second);
        }
        InputRateMethod::SyntheticStepChange => {
            let change = steps / 2;
            out[..change].fill(5);
            out[change..steps].fill(70);
            out[steps..steps + change].fill(100);
            out[steps + change..].fill(30);
        }
        InputRateMethod::Static(traces) => {
            for (i, trace) in traces.iter().enumerate() {
                out[i * steps..(i + 1) * steps].copy_from_slice(trace);
            }
        }
        InputRateMethod::Real { .. } => {
            let real = inputs.real.ok_or(ResetError::RealTracesMissing)?;
            real.pick(rng, inputs.agent_names, inputs.evaluation, out)?;
        }
    }
    Ok(())
}

/// numpy's `round(linspace(start, stop, len))`: `i·step + start`, the last
/// value exactly `stop`, rounded half to even.
fn linspace_rounded(start: f64, stop: f64, out: &mut [u32]) {
    let len = out.len();
    if len == 0 {
        return;
    }
    if len == 1 {
        out[0] = libm::rint(start) as u32;
        return;
    }
    let step = (stop - start) / (len - 1) as f64;
    for (i, o) in out.iter_mut().enumerate() {
        let value = if i == len - 1 {
            stop
        } else {
            i as f64 * step + start
        };
        *o = libm::rint(value) as u32;
    }
}

/// Shuffles the n rows of `out` (each `steps` long).
fn permute_rows(rng: &mut Xoshiro128PlusPlus, out: &mut [u32], n: usize, steps: usize) {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(rng, &mut order);
    let original = out.to_vec();
    for (dst, &src) in order.iter().enumerate() {
        out[dst * steps..(dst + 1) * steps]
            .copy_from_slice(&original[src * steps..(src + 1) * steps]);
    }
}

/// Scale-down (spec §4): at a step where the sum over the n agents
/// exceeds `63·n`, every value becomes `round(x·63n/sum)` clipped to
/// [1, 150], then the total is fixed to exactly `63·n` by adding (or
/// removing) 1 per agent in agent order, repeatedly, skipping agents at
/// the bound. `traces` is `[agent][step]`.
pub fn scale_down(traces: &mut [u32], n: usize, steps: usize) {
    let capacity = u64::from(SCALE_DOWN_PER_AGENT) * n as u64;
    for t in 0..steps {
        let sum: u64 = (0..n).map(|i| u64::from(traces[i * steps + t])).sum();
        if sum <= capacity {
            continue;
        }
        let mut total: i64 = 0;
        for i in 0..n {
            let x = traces[i * steps + t];
            let scaled = (u64::from(x) * capacity) as f64 / sum as f64;
            let v = round_clip(scaled);
            traces[i * steps + t] = v;
            total += i64::from(v);
        }
        let mut diff = capacity as i64 - total;
        while diff != 0 {
            let before = diff;
            for i in 0..n {
                let v = &mut traces[i * steps + t];
                if diff > 0 && *v < RATE_MAX {
                    *v += 1;
                    diff -= 1;
                } else if diff < 0 && *v > RATE_MIN {
                    *v -= 1;
                    diff += 1;
                }
                if diff == 0 {
                    break;
                }
            }
            if diff == before {
                break; // every agent at its bound: cannot fix further
            }
        }
    }
}

/// One Azure Functions 2019 day file: rows of 288 values with the
/// function's hash.
#[derive(Debug, Clone, PartialEq)]
pub struct DayFile {
    /// Day number, 1..=14.
    pub day: u32,
    /// `(HashFunction, values)` per row.
    pub rows: Vec<(String, Vec<u32>)>,
}

/// The 14 pre-processed day files of the `real` method (spec §4): files
/// 1–12 are the training pool, 13–14 the evaluation pool.
#[derive(Debug, Clone, PartialEq)]
pub struct RealTraces {
    days: Vec<DayFile>,
}

/// File name of day `d` (1..=14).
#[must_use]
pub fn day_file_name(d: u32) -> String {
    format!("invocations_per_function_md.anon.http.scaled.selected.d{d:02}.csv")
}

impl RealTraces {
    /// Wraps 14 day files already in memory.
    ///
    /// # Errors
    /// [`crate::ConfigError`] unless there are exactly 14 files, each with
    /// at least one row of 288 values.
    pub fn new(days: Vec<DayFile>) -> Result<Self, crate::ConfigError> {
        if days.len() != 14 {
            return Err(crate::ConfigError::invalid(
                "real_traces",
                days.len(),
                "needs exactly 14 day files",
            ));
        }
        for d in &days {
            if d.rows.is_empty() {
                return Err(crate::ConfigError::invalid(
                    format!("real_traces.d{:02}", d.day),
                    0,
                    "needs at least one row",
                ));
            }
            if let Some((hash, row)) = d.rows.iter().find(|(_, r)| r.len() != 288) {
                return Err(crate::ConfigError::invalid(
                    format!("real_traces.d{:02}.{hash}", d.day),
                    format!("{} values", row.len()),
                    "must hold 288 values (max_steps must be 288)",
                ));
            }
        }
        Ok(Self { days })
    }

    /// Reads the 14 files `invocations_per_function_md.anon.http.scaled.
    /// selected.dXX.csv` from `dir`: columns `HashOwner, HashApp,
    /// HashFunction, sum, mean, std, 0..287`; the values (from column `0`
    /// to the last column) are truncated toward zero.
    ///
    /// # Errors
    /// [`crate::ConfigError::Io`] naming the file when one is missing or
    /// malformed.
    #[cfg(feature = "std")]
    pub fn load(dir: &std::path::Path) -> Result<Self, crate::ConfigError> {
        let mut days = Vec::with_capacity(14);
        for d in 1..=14 {
            let path = dir.join(day_file_name(d));
            let io = |message: String| crate::ConfigError::Io {
                path: path.display().to_string(),
                message,
            };
            let mut reader = csv::Reader::from_path(&path).map_err(|e| io(e.to_string()))?;
            let headers = reader.headers().map_err(|e| io(e.to_string()))?.clone();
            let hash_col = headers
                .iter()
                .position(|h| h == "HashFunction")
                .ok_or_else(|| io("no HashFunction column".into()))?;
            let first = headers
                .iter()
                .position(|h| h == "0")
                .ok_or_else(|| io("no value column `0`".into()))?;
            let mut rows = Vec::new();
            for (line, record) in reader.records().enumerate() {
                let record = record.map_err(|e| io(e.to_string()))?;
                let mut values = Vec::with_capacity(record.len().saturating_sub(first));
                for cell in record.iter().skip(first) {
                    let x: f64 = cell
                        .trim()
                        .parse()
                        .map_err(|_| io(format!("row {}: `{cell}` is not a number", line + 2)))?;
                    if !(0.0..1e6).contains(&x) {
                        return Err(io(format!("row {}: value {x} outside [0, 1e6)", line + 2)));
                    }
                    values.push(libm::trunc(x) as u32);
                }
                rows.push((record.get(hash_col).unwrap_or("").to_string(), values));
            }
            days.push(DayFile { day: d, rows });
        }
        Self::new(days)
    }

    /// Largest value over all files.
    #[must_use]
    pub fn max_rate(&self) -> u32 {
        self.days
            .iter()
            .flat_map(|d| d.rows.iter().flat_map(|(_, r)| r.iter().copied()))
            .max()
            .unwrap_or(0)
    }

    /// Picks a distinct day file per agent and a row of each, writing the
    /// traces into `out` (`[agent][step]`).
    fn pick(
        &self,
        rng: &mut Xoshiro128PlusPlus,
        agent_names: &[String],
        evaluation: bool,
        out: &mut [u32],
    ) -> Result<(), ResetError> {
        let n = agent_names.len();
        let mut pool: Vec<usize> = if evaluation {
            vec![12, 13]
        } else {
            (0..12).collect()
        };
        for i in 0..n.min(pool.len()) {
            let j = i + below(rng, (pool.len() - i) as u32) as usize;
            pool.swap(i, j);
        }
        for agent in 0..n {
            let day = &self.days[pool[agent]];
            let (hash, values) = &day.rows[below(rng, day.rows.len() as u32) as usize];
            if values.iter().all(|&v| v < RATE_MIN) || values.iter().all(|&v| v > RATE_MAX) {
                return Err(ResetError::UnsupportedTrace {
                    agent: agent_names[agent].clone(),
                    trace: format!("{hash}-d{:02}", day.day),
                    reason: "all values below 1 or all above 150".into(),
                });
            }
            out[agent * 288..(agent + 1) * 288].copy_from_slice(values);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_down_hand_made_cases() {
        // n = 2, (5, 163): 5·126/168 = 3.75 → 4, 163·126/168 = 122.25 → 122.
        let mut t = [5, 163];
        scale_down(&mut t, 2, 1);
        assert_eq!(t, [4, 122]);
        // Tie: 5·126/252 = 2.5 → 2 (half to even); 247·126/252 = 123.5 → 124.
        let mut t = [5, 247];
        scale_down(&mut t, 2, 1);
        assert_eq!(t, [2, 124]);
        // Clipping forces the fix-up: (1, 1, 400) over capacity 189 scales to
        // (0→1, 0→1, 189→150); 37 are added in agent order, skipping 150.
        let mut t = [1, 1, 400];
        scale_down(&mut t, 3, 1);
        assert_eq!(t, [20, 19, 150]);
        // Under capacity: untouched.
        let mut t = [60, 66];
        scale_down(&mut t, 2, 1);
        assert_eq!(t, [60, 66]);
    }

    #[test]
    fn linspace_matches_numpy_rounding() {
        let mut out = [0u32; 288];
        linspace_rounded(1.0, 150.0, &mut out);
        assert_eq!(out[0], 1);
        assert_eq!(out[287], 150);
        // i = 1: 149/287 + 1 = 1.519… → 2.
        assert_eq!(out[1], 2);
    }
}

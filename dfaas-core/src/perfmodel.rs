//! The steady-state serverless performance model (spec §7): Mahmoudi and
//! Khazaei's birth–death chain of warm instances, "faster solution"
//! variant, in f64, with the reference's order of operations wherever it
//! changes bits.
//!
//! Units: the model takes the numbers it is given. `arrival_rate` is in
//! requests per unit of time; service and idle times in that unit (seconds
//! in the seconds regime, the reference's milliseconds in the reference
//! regime — see [`crate::PerfModelRegime`]). `avg_resp_time` comes out in the
//! unit of the service times, `rejection_rate` in requests per unit time.
//!
//! Where the reference crashes or returns NaN this module defines the
//! result instead:
//! * `arrival_rate == 0`: nothing arrives, every output is 0;
//! * a served share `q = B(m−1) − B(m)` that is not positive (λ·Tw above
//!   ~1e16): the m-th instance adds no kill rate (the reference divides by
//!   zero);
//! * `maximum_concurrency == 0`: everything is rejected and the utilisation
//!   is 0 (the reference returns NaN);
//! * warm or cold service time not positive or not finite, idle time
//!   negative or not finite, arrival rate negative or not finite:
//!   [`PerfModelError`].
//!
//! The stationary distribution is computed in product form (detailed
//! balance of the birth–death chain), which is more accurate than the
//! reference's dense solve; when some rates are zero the chain's topmost
//! closed class carries the distribution (the reference's solve would be
//! singular or clip negative values).

use crate::alloc_prelude::*;
use core::fmt;

/// Parameters of one node's performance model.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PerfModelParams {
    /// Warm service time of one request (> 0; seconds or ms by regime).
    pub warm_service_time: f64,
    /// Cold-start service time (>= warm; same unit).
    pub cold_service_time: f64,
    /// Idle time before an instance is killed (>= 0; same unit).
    pub idle_time_before_kill: f64,
    /// Maximum number of concurrent instances.
    pub maximum_concurrency: u32,
}

/// Every output of the model (named after the reference's result keys),
/// plus the chain's size and the first and last stationary probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerfModelOutput {
    /// Average number of instances (warm, idle or busy).
    pub avg_server_count: f64,
    /// Average instances plus running cold starts.
    pub avg_server_count_total: f64,
    /// Average number of requests in service.
    pub avg_running_count: f64,
    /// Average requests served by warm instances.
    pub avg_running_warm_count: f64,
    /// Average requests in cold starts.
    pub avg_running_cold_count: f64,
    /// Average idle instances.
    pub avg_idle_count: f64,
    /// Probability that a request meets a cold start.
    pub cold_prob: f64,
    /// Warm running / instances (0 with no instance).
    pub avg_utilization: f64,
    /// Average response time (unit of the service times).
    pub avg_resp_time: f64,
    /// Probability that a request is rejected.
    pub rejection_prob: f64,
    /// Rejected requests per unit time (unit of the arrival rate).
    pub rejection_rate: f64,
    /// Number of states of the chain (limit S + 1); 0 when nothing arrives.
    pub num_states: usize,
    /// Stationary probability of state 0.
    pub steady_state_prob_first: f64,
    /// Stationary probability of the last state.
    pub steady_state_prob_last: f64,
}

/// Names of the model's outputs, in the column order of the conformance
/// file `perfmodel.csv`.
pub const OUTPUT_COLUMNS: [&str; 11] = [
    "avg_server_count",
    "avg_server_count_total",
    "avg_running_count",
    "avg_running_warm_count",
    "avg_running_cold_count",
    "avg_idle_count",
    "cold_prob",
    "avg_utilization",
    "avg_resp_time",
    "rejection_prob",
    "rejection_rate",
];

impl PerfModelOutput {
    /// The outputs in [`OUTPUT_COLUMNS`] order.
    #[must_use]
    pub fn values(&self) -> [f64; 11] {
        [
            self.avg_server_count,
            self.avg_server_count_total,
            self.avg_running_count,
            self.avg_running_warm_count,
            self.avg_running_cold_count,
            self.avg_idle_count,
            self.cold_prob,
            self.avg_utilization,
            self.avg_resp_time,
            self.rejection_prob,
            self.rejection_rate,
        ]
    }

    /// Requests the env rejects: the rejection rate rounded half to even.
    #[must_use]
    pub fn rejected_requests(&self) -> f64 {
        libm::rint(self.rejection_rate)
    }
}

/// Inputs the model has no meaning for.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfModelError {
    /// The parameter's name.
    pub field: &'static str,
    /// Its value.
    pub value: f64,
    /// What it must satisfy.
    pub reason: &'static str,
}

impl fmt::Display for PerfModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}, got {}", self.field, self.reason, self.value)
    }
}

impl core::error::Error for PerfModelError {}

fn check(
    field: &'static str,
    value: f64,
    ok: bool,
    reason: &'static str,
) -> Result<(), PerfModelError> {
    if ok {
        Ok(())
    } else {
        Err(PerfModelError {
            field,
            value,
            reason,
        })
    }
}

/// Per-state quantities of the chain, before solving it.
struct Chain {
    server_counts: Vec<f64>,
    block_rates: Vec<f64>,
    kill_rates: Vec<f64>,
    cold_probs: Vec<f64>,
    running_counts: Vec<f64>,
    running_warm_counts: Vec<f64>,
    running_cold_counts: Vec<f64>,
    resp_times: Vec<f64>,
    /// Whether the state limit reached the maximum concurrency.
    reached_max: bool,
}

/// Evaluates the model for `arrival_rate` requests per unit time.
///
/// # Errors
/// [`PerfModelError`] for parameters the model has no meaning for (see the
/// module documentation).
pub fn evaluate(
    arrival_rate: f64,
    params: &PerfModelParams,
) -> Result<PerfModelOutput, PerfModelError> {
    let (tw, tc, ti) = (
        params.warm_service_time,
        params.cold_service_time,
        params.idle_time_before_kill,
    );
    check(
        "arrival_rate",
        arrival_rate,
        arrival_rate.is_finite() && arrival_rate >= 0.0,
        "must be finite and >= 0",
    )?;
    check(
        "warm_service_time",
        tw,
        tw.is_finite() && tw > 0.0,
        "must be finite and > 0",
    )?;
    check(
        "cold_service_time",
        tc,
        tc.is_finite() && tc > 0.0,
        "must be finite and > 0",
    )?;
    check(
        "idle_time_before_kill",
        ti,
        ti.is_finite() && ti >= 0.0,
        "must be finite and >= 0",
    )?;
    if arrival_rate == 0.0 {
        return Ok(PerfModelOutput::default());
    }
    let chain = build_chain(arrival_rate, params);
    let pi = rates(&chain, 1.0 / tc).stationary_distribution();
    Ok(summarise(chain, &pi))
}

fn build_chain(lambda: f64, p: &PerfModelParams) -> Chain {
    let (tw, tc, ti) = (
        p.warm_service_time,
        p.cold_service_time,
        p.idle_time_before_kill,
    );
    let max_conc = p.maximum_concurrency;
    let warm_service_rate = 1.0 / tw;
    let rho = lambda / warm_service_rate;
    let mut server_max = max_conc.min(30);
    let mut chain = Chain {
        server_counts: vec![0.0],
        block_rates: vec![lambda],
        kill_rates: vec![0.0],
        cold_probs: vec![1.0],
        running_counts: vec![lambda * 1.0 * tc],
        running_warm_counts: vec![0.0],
        running_cold_counts: vec![lambda * 1.0 * tc],
        resp_times: vec![tc],
        reached_max: false,
    };
    let mut pblock_old = 1.0;
    let mut kill_rate = 0.0;
    // Erlang-B by the recurrence inv(m) = 1 + inv(m−1)·(m/ρ), B = 1/inv.
    let mut erlang_inv = 1.0;
    let mut m: u32 = 0;
    while m < server_max {
        m += 1;
        erlang_inv = 1.0 + erlang_inv * (f64::from(m) / rho);
        let prob_block = 1.0 / erlang_inv;
        let block_rate = prob_block * lambda;
        let prob_mth_server = pblock_old - prob_block;
        pblock_old = prob_block;

        let served = lambda * prob_mth_server;
        if served > 0.0 {
            // 1 − expon.cdf(Ti, scale = 1/(λq)), as scipy computes it.
            let scale = 1.0 / served;
            let cdf = -libm::expm1(-(ti / scale));
            let prob_kill_mth = 1.0 - cdf;
            if prob_kill_mth > 0.0 {
                let exp_request_before_kill = 1.0 / prob_kill_mth;
                let big_l = served;
                let big_t = ti + tw;
                let e = libm::exp(-big_l * big_t);
                let avg_inter_arrival = (-big_t * e) + (1.0 - e) / big_l;
                let inter_kill_time = ti + (exp_request_before_kill - 1.0) * avg_inter_arrival;
                kill_rate += 1.0 / inter_kill_time;
            }
        }

        let running_count_warm = lambda * (1.0 - prob_block) * tw;
        let mut running_count_cold = lambda * prob_block * tc;
        let mut running_count = running_count_warm + running_count_cold;
        let mut resp_time = (prob_block * tc) + ((1.0 - prob_block) * tw);
        if m == max_conc {
            resp_time = tw;
            running_count_cold = 0.0;
            running_count = running_count_warm;
        }

        chain.server_counts.push(f64::from(m));
        chain.block_rates.push(block_rate);
        chain.kill_rates.push(kill_rate);
        chain.cold_probs.push(prob_block);
        chain.running_counts.push(running_count);
        chain.resp_times.push(resp_time);
        chain.running_warm_counts.push(running_count_warm);
        chain.running_cold_counts.push(running_count_cold);

        if block_rate > kill_rate {
            server_max = (m + 30).min(max_conc);
        }
    }
    chain.reached_max = server_max == max_conc;
    chain
}

/// Transition rates of the model's birth–death chain: from state `i` up
/// with `up[i]`, down with `down[i]` (`down[0] = 0`; `up` has one entry
/// fewer than there are states).
#[derive(Debug, Clone, PartialEq)]
pub struct ChainRates {
    /// `b_i·c/(b_i + c)`, c = cold service rate, b_i = blocking rate.
    pub up: Vec<f64>,
    /// The cumulative kill rate of each state.
    pub down: Vec<f64>,
}

/// The chain of the model for `arrival_rate` (> 0).
///
/// # Errors
/// As [`evaluate`].
pub fn chain_rates(
    arrival_rate: f64,
    params: &PerfModelParams,
) -> Result<ChainRates, PerfModelError> {
    evaluate(arrival_rate, params)?;
    let chain = build_chain(arrival_rate, params);
    Ok(rates(&chain, 1.0 / params.cold_service_time))
}

fn rates(chain: &Chain, cold_service_rate: f64) -> ChainRates {
    let n = chain.block_rates.len();
    let up = chain.block_rates[..n - 1]
        .iter()
        .map(|&b| (b * cold_service_rate) / (b + cold_service_rate))
        .collect();
    ChainRates {
        up,
        down: chain.kill_rates.clone(),
    }
}

impl ChainRates {
    /// Stationary distribution in product form (detailed balance). When
    /// some rates are zero, the topmost closed class of the chain carries
    /// all the mass.
    #[must_use]
    pub fn stationary_distribution(&self) -> Vec<f64> {
        let (up, down) = (&self.up, &self.down);
        let n = down.len();
        let linked = |j: usize| up[j - 1] > 0.0 && down[j] > 0.0;
        // Topmost closed class [lo, hi]: a maximal run of two-way links with
        // no way out above (up[hi] = 0 or the top) and none below
        // (down[lo] = 0 or the bottom).
        let mut hi = n - 1;
        let lo = loop {
            let mut lo = hi;
            while lo > 0 && linked(lo) {
                lo -= 1;
            }
            let closed_above = hi == n - 1 || up[hi] <= 0.0;
            let closed_below = lo == 0 || down[lo] <= 0.0;
            if (closed_above && closed_below) || lo == 0 {
                break lo;
            }
            hi = lo - 1; // [lo, hi] leaks downward; the closed class lies lower
        };
        let mut pi = vec![0.0; n];
        pi[lo] = 1.0;
        const RESCALE_AT: f64 = 1e250;
        for i in lo..hi {
            let next = pi[i] * (up[i] / down[i + 1]);
            pi[i + 1] = next;
            if next > RESCALE_AT {
                for w in &mut pi[lo..=i + 1] {
                    *w /= RESCALE_AT;
                }
            }
        }
        let total: f64 = pi[lo..=hi].iter().sum();
        for w in &mut pi[lo..=hi] {
            *w /= total;
        }
        pi
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn summarise(mut chain: Chain, pi: &[f64]) -> PerfModelOutput {
    let last = pi.len() - 1;
    let (mut rejection_prob, mut rejection_rate) = (0.0, 0.0);
    if chain.reached_max {
        rejection_prob = chain.cold_probs[last] * pi[last];
        chain.cold_probs[last] = 0.0;
        rejection_rate = chain.block_rates[last] * pi[last];
        chain.block_rates[last] = 0.0;
    }
    let avg_server_count = dot(&chain.server_counts, pi);
    let avg_running_count = dot(&chain.running_counts, pi);
    let avg_running_warm_count = dot(&chain.running_warm_counts, pi);
    let avg_running_cold_count = dot(&chain.running_cold_counts, pi);
    let avg_utilization = if avg_server_count > 0.0 {
        avg_running_warm_count / avg_server_count
    } else {
        0.0
    };
    PerfModelOutput {
        avg_server_count,
        avg_server_count_total: avg_server_count + avg_running_cold_count,
        avg_running_count,
        avg_running_warm_count,
        avg_running_cold_count,
        avg_idle_count: avg_server_count - avg_running_warm_count,
        cold_prob: dot(&chain.cold_probs, pi),
        avg_utilization,
        avg_resp_time: dot(&chain.resp_times, pi),
        rejection_prob,
        rejection_rate,
        num_states: pi.len(),
        steady_state_prob_first: pi[0],
        steady_state_prob_last: pi[last],
    }
}

/// One node's model precomputed for every total incoming count
/// `0..=max_total`, so a step only looks up.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfTable {
    params: PerfModelParams,
    rejects: Vec<u32>,
    response_time: Vec<f64>,
}

impl PerfTable {
    /// Evaluates the model for every total `0..=max_total` (at most
    /// [`PerfTable::MAX_TOTAL`]).
    ///
    /// # Errors
    /// [`PerfModelError`] when the parameters are invalid or `max_total` is
    /// above [`PerfTable::MAX_TOTAL`].
    pub fn new(params: PerfModelParams, max_total: u32) -> Result<Self, PerfModelError> {
        let mut table = Self {
            params,
            rejects: vec![0],
            response_time: vec![0.0],
        };
        evaluate(1.0, &params)?;
        table.extend_to(max_total)?;
        Ok(table)
    }

    /// The largest total a node can receive: [`MAX_INPUT_RATE`] from itself
    /// and from each of at most 62 neighbours.
    ///
    /// [`MAX_INPUT_RATE`]: crate::input_rate::MAX_INPUT_RATE
    pub const MAX_TOTAL: u32 = crate::input_rate::MAX_INPUT_RATE * 63;

    /// Makes the table cover totals up to `max_total` (parameters were
    /// checked by [`PerfTable::new`]).
    ///
    /// # Errors
    /// [`PerfModelError`] when `max_total` is above [`PerfTable::MAX_TOTAL`]
    /// (the table is unchanged then).
    pub fn extend_to(&mut self, max_total: u32) -> Result<(), PerfModelError> {
        if max_total > Self::MAX_TOTAL {
            return Err(PerfModelError {
                field: "max_total",
                value: f64::from(max_total),
                reason: "must be <= 66060288 (63 senders at the largest input rate)",
            });
        }
        for total in self.rejects.len() as u32..=max_total {
            let out = evaluate(f64::from(total), &self.params).unwrap_or_default();
            let rejected = out.rejected_requests().clamp(0.0, f64::from(total));
            self.rejects.push(rejected as u32);
            self.response_time.push(out.avg_resp_time);
        }
        Ok(())
    }

    /// Largest total the table covers.
    #[must_use]
    pub fn max_total(&self) -> u32 {
        (self.rejects.len() - 1) as u32
    }

    /// The parameters the table was built from.
    #[must_use]
    pub fn params(&self) -> &PerfModelParams {
        &self.params
    }

    /// Rejected requests (rounded rejection rate) per total, index = total.
    #[must_use]
    pub fn rejects(&self) -> &[u32] {
        &self.rejects
    }

    /// Average response time per total (0 at total 0).
    #[must_use]
    pub fn response_times(&self) -> &[f64] {
        &self.response_time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(tw: f64, tc: f64, m: u32) -> PerfModelParams {
        PerfModelParams {
            warm_service_time: tw,
            cold_service_time: tc,
            idle_time_before_kill: 30.0,
            maximum_concurrency: m,
        }
    }

    #[test]
    fn seconds_regime_matches_erlang_b_rejection() {
        // Spec §7: in seconds the chain sits in state M and the rejection
        // rate is λ·ErlangB(λ·Tw, M).
        let p = params(0.1, 0.25, 13);
        let lambda = 120.0;
        let out = evaluate(lambda, &p).unwrap();
        let rho: f64 = lambda * 0.1;
        let mut inv = 1.0;
        for m in 1..=13 {
            inv = 1.0 + inv * (f64::from(m) / rho);
        }
        let expected = lambda / inv;
        assert!((out.rejection_rate - expected).abs() / expected < 4e-6);
        assert!((out.avg_resp_time - 0.1).abs() < 1e-9);
    }

    #[test]
    fn defined_results_where_the_reference_crashes() {
        assert_eq!(
            evaluate(0.0, &params(0.137, 0.513, 7)).unwrap(),
            PerfModelOutput::default()
        );
        let huge = evaluate(1e17, &params(100.0, 250.0, 4)).unwrap();
        assert!(huge.values().iter().all(|v| v.is_finite()));
        assert!(evaluate(1.0, &params(0.0, 250.0, 4)).is_err());
        assert!(evaluate(1.0, &params(100.0, 0.0, 4)).is_err());
        assert!(evaluate(-1.0, &params(100.0, 250.0, 4)).is_err());
        let none = evaluate(5.0, &params(0.1, 0.25, 0)).unwrap();
        assert_eq!(none.rejection_rate, 5.0);
        assert_eq!(none.avg_utilization, 0.0);
    }

    #[test]
    fn table_rounds_half_to_even_and_never_exceeds_the_total() {
        let t = PerfTable::new(params(0.5, 0.7, 4), 300).unwrap();
        for (total, &r) in t.rejects().iter().enumerate() {
            assert!(r as usize <= total);
        }
        assert_eq!(t.rejects()[0], 0);
        assert_eq!(t.response_times()[0], 0.0);
        assert!(t.rejects()[300] > 250);
        // A table past any node's largest total is refused, not allocated.
        let mut t = t;
        let too_far = PerfTable::MAX_TOTAL + 1;
        assert_eq!(t.extend_to(too_far).unwrap_err().field, "max_total");
        assert_eq!(t.max_total(), 300, "unchanged");
        assert!(PerfTable::new(params(0.5, 0.7, 4), u32::MAX).is_err());
    }

    /// The product form against a dense LU solve (nalgebra) of the same
    /// generator, with the reference's normalisation row `Q[:, 0] = 1`.
    #[test]
    fn product_form_matches_a_dense_solve() {
        for (tw, tc, m) in [
            (0.1, 0.25, 4),
            (0.411, 0.667, 6),
            (137.0, 513.0, 7),
            (421.0, 685.0, 14),
            (0.2, 0.3, 32),
        ] {
            for lambda in [1.0, 7.0, 40.0, 63.0, 150.0, 400.0] {
                let rates = chain_rates(lambda, &params(tw, tc, m)).unwrap();
                let n = rates.down.len();
                let mut q = nalgebra::DMatrix::<f64>::zeros(n, n);
                for i in 0..n {
                    let mut out = 0.0;
                    if i > 0 {
                        q[(i, i - 1)] = rates.down[i];
                        out += rates.down[i];
                    }
                    if i + 1 < n {
                        q[(i, i + 1)] = rates.up[i];
                        out += rates.up[i];
                    }
                    q[(i, i)] = -out;
                }
                q.column_mut(0).fill(1.0);
                let mut y = nalgebra::DVector::<f64>::zeros(n);
                y[0] = 1.0;
                let dense = q.transpose().lu().solve(&y).expect("regular chain");
                let product = rates.stationary_distribution();
                for (a, b) in product.iter().zip(dense.iter()) {
                    let b = b.max(0.0);
                    assert!(
                        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-13,
                        "Tw={tw} M={m} λ={lambda}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_rates_put_the_mass_on_the_topmost_closed_class() {
        // State 1 cannot go down: states 0 is transient, mass on [1, 2].
        let r = ChainRates {
            up: vec![1.0, 2.0],
            down: vec![0.0, 0.0, 4.0],
        };
        assert_eq!(r.stationary_distribution(), vec![0.0, 2.0 / 3.0, 1.0 / 3.0]);
        // No way up from 0: all mass on state 0.
        let r = ChainRates {
            up: vec![0.0, 2.0],
            down: vec![0.0, 1.0, 1.0],
        };
        assert_eq!(r.stationary_distribution()[0], 1.0);
    }
}

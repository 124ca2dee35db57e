//! The reference's performance model, split and reject distribution,
//! checked row by row against the conformance vectors.

mod common;

use dfaas_core::perfmodel::{self, OUTPUT_COLUMNS, PerfModelParams};
use dfaas_core::rejects::{distribute_exact, distribute_reference};
use dfaas_core::split::{SplitError, split_requests};

fn column(header: &[String], name: &str) -> usize {
    header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"))
}

fn numbers(cell: &str) -> Vec<f64> {
    cell.split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

fn params(row: &[String], header: &[String]) -> (f64, PerfModelParams) {
    let get = |name: &str| row[column(header, name)].parse::<f64>().unwrap();
    (
        get("arrival_rate"),
        PerfModelParams {
            warm_service_time: get("warm_service_time"),
            cold_service_time: get("cold_service_time"),
            idle_time_before_kill: get("idle_time_before_kill"),
            maximum_concurrency: get("maximum_concurrency") as u32,
        },
    )
}

#[test]
fn perfmodel_matches_every_row_within_tolerance() {
    let (header, rows) = common::read_csv(&common::conformance_dir().join("perfmodel.csv"));
    assert_eq!(rows.len(), 1302);
    let mut half_rows = 0;
    for (r, row) in rows.iter().enumerate() {
        let (lambda, p) = params(row, &header);
        let out = perfmodel::evaluate(lambda, &p).unwrap_or_else(|e| panic!("row {r}: {e}"));
        for (name, got) in OUTPUT_COLUMNS.iter().zip(out.values()) {
            let want: f64 = row[column(&header, name)].parse().unwrap();
            assert!(
                common::close(got, want, 1e-9, 1e-12),
                "row {r} {name}: got {got:e}, want {want:e} ({p:?}, λ={lambda})"
            );
        }
        for (name, got) in [
            ("steady_state_prob_first", out.steady_state_prob_first),
            ("steady_state_prob_last", out.steady_state_prob_last),
        ] {
            let want: f64 = row[column(&header, name)].parse().unwrap();
            assert!(
                common::close(got, want, 1e-9, 1e-12),
                "row {r} {name}: got {got:e}, want {want:e}"
            );
        }
        assert_eq!(
            out.num_states,
            row[column(&header, "num_states")].parse::<usize>().unwrap(),
            "row {r}"
        );
        let rounded: f64 = row[column(&header, "rejection_rate_rounded")]
            .parse()
            .unwrap();
        let reference_rate: f64 = row[column(&header, "rejection_rate")].parse().unwrap();
        if reference_rate.fract() == 0.5 {
            half_rows += 1; // exactly x.5 in the reference: one ulp decides (README)
        } else {
            assert_eq!(out.rejected_requests(), rounded, "row {r}: rounded rejects");
        }
    }
    assert_eq!(half_rows, 3, "the README lists three exactly-half rows");
}

#[test]
fn perfmodel_defines_a_result_where_the_reference_crashes() {
    let (header, rows) = common::read_csv(&common::conformance_dir().join("perfmodel_errors.csv"));
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let (lambda, p) = params(row, &header);
        match perfmodel::evaluate(lambda, &p) {
            // λ = 0: nothing arrives, every output is 0.
            Ok(out) if lambda == 0.0 => assert!(out.values().iter().all(|&v| v == 0.0)),
            // A served share of exactly 0 (λ·Tw ≈ 1e19): finite outputs.
            Ok(out) => assert!(
                out.values().iter().all(|v| v.is_finite()),
                "{row:?}: {out:?}"
            ),
            // A zero service time has no meaning: a typed error naming it.
            Err(e) => assert!(
                e.field.ends_with("service_time") && e.value == 0.0,
                "{row:?}: {e}"
            ),
        }
    }
}

#[test]
fn split_matches_every_row_in_f32() {
    let (header, rows) = common::read_csv(&common::conformance_dir().join("split.csv"));
    assert_eq!(rows.len(), 763);
    for (r, row) in rows.iter().enumerate() {
        let rate: u32 = row[column(&header, "input_rate")].parse().unwrap();
        let action: Vec<f32> = numbers(&row[column(&header, "action")])
            .iter()
            .map(|&p| p as f32)
            .collect();
        let want: Vec<u32> = numbers(&row[column(&header, "counts")])
            .iter()
            .map(|&c| c as u32)
            .collect();
        let mut got = vec![0u32; action.len()];
        split_requests(&action, rate, &mut got).unwrap();
        assert_eq!(got, want, "row {r}: R={rate} action={action:?}");
    }
}

#[test]
fn split_of_invalid_actions_follows_the_documented_policy() {
    let (header, rows) = common::read_csv(&common::conformance_dir().join("split_invalid.csv"));
    for row in &rows {
        let rate: u32 = row[column(&header, "input_rate")].parse().unwrap();
        let action: Vec<f32> = row[column(&header, "action")]
            .split_whitespace()
            .map(|p| p.parse::<f32>().unwrap())
            .collect();
        let outcome = &row[column(&header, "outcome")];
        let mut got = vec![0u32; action.len()];
        let split = split_requests(&action, rate, &mut got);
        if action.iter().any(|p| !p.is_finite()) {
            assert!(
                matches!(split, Err(SplitError::NonFinite { .. })),
                "non-finite actions are refused: {row:?}"
            );
            continue;
        }
        split.unwrap();
        assert_eq!(
            got.iter().sum::<u32>(),
            rate,
            "counts always sum to the rate: {row:?}"
        );
        // Where the reference returns non-negative counts, ours are the same.
        if let Some(counts) = outcome.strip_prefix("counts ") {
            let reference = numbers(counts);
            if reference.iter().all(|&c| c >= 0.0) {
                let want: Vec<u32> = reference.iter().map(|&c| c as u32).collect();
                assert_eq!(got, want, "{row:?}");
            }
        }
    }
}

#[test]
fn rejects_match_the_reference_in_f64_and_the_exact_rule_elsewhere() {
    let (header, rows) = common::read_csv(&common::conformance_dir().join("rejects.csv"));
    assert_eq!(rows.len(), 433);
    let mut differing = 0;
    for (r, row) in rows.iter().enumerate() {
        let incoming: Vec<u32> = numbers(&row[column(&header, "incoming")])
            .iter()
            .map(|&c| c as u32)
            .collect();
        let rate: f64 = row[column(&header, "rejection_rate")].parse().unwrap();
        let total_rejects: u32 = row[column(&header, "rejects_total")].parse().unwrap();
        assert_eq!(
            rate.round_ties_even(),
            f64::from(total_rejects),
            "row {r}: half-to-even rounding"
        );
        let want: Vec<u32> = numbers(&row[column(&header, "rejects")])
            .iter()
            .map(|&c| c as u32)
            .collect();
        let total: u32 = incoming.iter().sum();
        let mut got = vec![0u32; incoming.len()];
        distribute_reference(&incoming, total, total_rejects, &mut got).unwrap();
        assert_eq!(got, want, "row {r} (reference arithmetic): {incoming:?}");
        distribute_exact(&incoming, total, total_rejects, &mut got).unwrap();
        if row[column(&header, "differs_from_exact")] == "1" {
            differing += 1;
            assert_ne!(got, want, "row {r}: marked as differing");
        } else {
            assert_eq!(got, want, "row {r} (exact arithmetic): {incoming:?}");
        }
    }
    assert_eq!(differing, 13);
}

//! Evaluates the serverless performance model on rows of a CSV file.
//!
//! ```text
//! cargo run --release --example perfmodel -- --in ../shared/conformance/perfmodel.csv --out out.csv
//! ```
//!
//! The input needs the columns `arrival_rate, warm_service_time,
//! cold_service_time, idle_time_before_kill, maximum_concurrency` (any
//! others, such as `regime`, are ignored). The output holds those five
//! columns, then every output of the model named as in the conformance
//! file `perfmodel.csv`, then `error` (empty unless the row's inputs have
//! no meaning for the model; its outputs are then empty).

use anyhow::{Context, Result, bail};
use clap::Parser;
use dfaas::core::perfmodel::{self, OUTPUT_COLUMNS, PerfModelParams};
use std::path::PathBuf;

const INPUT_COLUMNS: [&str; 5] = [
    "arrival_rate",
    "warm_service_time",
    "cold_service_time",
    "idle_time_before_kill",
    "maximum_concurrency",
];
const EXTRA_COLUMNS: [&str; 4] = [
    "rejection_rate_rounded",
    "num_states",
    "steady_state_prob_first",
    "steady_state_prob_last",
];

/// Evaluate the DFaaS serverless performance model on every row of a CSV file.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Input CSV with the five input columns.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output CSV (written atomically).
    #[arg(long, default_value = "perfmodel_out.csv")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut reader = csv::Reader::from_path(&args.input)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let header = reader.headers()?.clone();
    let mut positions = [0usize; 5];
    for (p, name) in positions.iter_mut().zip(INPUT_COLUMNS) {
        *p = match header.iter().position(|h| h == name) {
            Some(i) => i,
            None => bail!("{}: no `{name}` column", args.input.display()),
        };
    }
    let mut out = csv::Writer::from_writer(Vec::new());
    out.write_record(
        INPUT_COLUMNS
            .iter()
            .chain(&OUTPUT_COLUMNS)
            .chain(&EXTRA_COLUMNS)
            .chain(&["error"]),
    )?;
    let mut rows = 0;
    for (line, record) in reader.records().enumerate() {
        let record = record?;
        let mut inputs = [0f64; 5];
        for ((value, &p), name) in inputs.iter_mut().zip(&positions).zip(INPUT_COLUMNS) {
            let cell = record.get(p).unwrap_or("");
            *value = cell.trim().parse().with_context(|| {
                format!(
                    "{} row {}: {name} `{cell}` is not a number",
                    args.input.display(),
                    line + 2
                )
            })?;
        }
        let concurrency = inputs[4];
        if concurrency < 0.0 || concurrency.fract() != 0.0 || concurrency > f64::from(u32::MAX) {
            bail!(
                "{} row {}: maximum_concurrency must be a whole number >= 0, got {concurrency}",
                args.input.display(),
                line + 2
            );
        }
        let params = PerfModelParams {
            warm_service_time: inputs[1],
            cold_service_time: inputs[2],
            idle_time_before_kill: inputs[3],
            maximum_concurrency: concurrency as u32,
        };
        let mut cells: Vec<String> = positions
            .iter()
            .map(|&p| record.get(p).unwrap_or("").to_string())
            .collect();
        match perfmodel::evaluate(inputs[0], &params) {
            Ok(o) => {
                cells.extend(o.values().iter().map(|v| format!("{v:?}")));
                cells.push(format!("{}", o.rejected_requests()));
                cells.push(o.num_states.to_string());
                cells.push(format!("{:?}", o.steady_state_prob_first));
                cells.push(format!("{:?}", o.steady_state_prob_last));
                cells.push(String::new());
            }
            Err(e) => {
                cells.extend(std::iter::repeat_n(
                    String::new(),
                    OUTPUT_COLUMNS.len() + EXTRA_COLUMNS.len(),
                ));
                cells.push(e.to_string());
            }
        }
        out.write_record(&cells)?;
        rows += 1;
    }
    let bytes = out.into_inner().map_err(|e| e.into_error())?;
    dfaas::io::write_atomically(&args.out, |w| std::io::Write::write_all(w, &bytes))?;
    println!("evaluated {rows} rows; wrote {}", args.out.display());
    Ok(())
}

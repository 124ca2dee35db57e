//! Replays one recorded episode and writes the reference's per-step
//! `stats.csv` (same columns, same row order).
//!
//! ```text
//! cargo run --release --example replay -- --episode ../shared/conformance/episodes/three_nodes_s --out stats.csv
//! cargo run --release --example replay -- --config C --input-rate I --bandwidth B --actions A --out stats.csv
//! ```

use anyhow::{Context, Result, bail};
use clap::Parser;
use dfaas::core::replay::{Episode, EpisodeFiles};
use dfaas::core::stats::StatsWriter;
use std::path::PathBuf;

/// Replay a recorded DFaaS episode (the conformance episodes' file formats)
/// and write its per-step statistics.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Folder holding config.yaml, input_rate.csv, bandwidth.csv and actions.csv.
    #[arg(long, conflicts_with_all = ["config", "input_rate", "bandwidth", "actions"])]
    episode: Option<PathBuf>,
    /// Built configuration (YAML, or JSON by extension).
    #[arg(long, requires_all = ["input_rate", "bandwidth", "actions"])]
    config: Option<PathBuf>,
    /// Input rates: `step`, then one column per agent.
    #[arg(long)]
    input_rate: Option<PathBuf>,
    /// Bandwidths: `step`, then one column per link named `u--v`.
    #[arg(long)]
    bandwidth: Option<PathBuf>,
    /// Actions: `step,agent,action` with space-separated entries.
    #[arg(long)]
    actions: Option<PathBuf>,
    /// Where to write the statistics (written atomically).
    #[arg(long, default_value = "stats.csv")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let files = match (
        &args.episode,
        &args.config,
        &args.input_rate,
        &args.bandwidth,
        &args.actions,
    ) {
        (Some(dir), ..) => EpisodeFiles::in_folder(dir),
        (None, Some(config), Some(input_rate), Some(bandwidth), Some(actions)) => EpisodeFiles {
            config: config.clone(),
            input_rate: input_rate.clone(),
            bandwidth: bandwidth.clone(),
            actions: actions.clone(),
        },
        _ => bail!(
            "give either --episode DIR or all of --config, --input-rate, --bandwidth and --actions"
        ),
    };
    let episode = Episode::load(&files).context("loading the episode")?;
    // Episodes are small: collect the CSV in memory, then write it atomically.
    let mut writer: Option<StatsWriter<Vec<u8>>> = None;
    let mut failure: Option<std::io::Error> = None;
    let mut steps = 0;
    episode.replay(|model, metrics| {
        if failure.is_some() {
            return;
        }
        if writer.is_none() {
            match StatsWriter::new(model, Vec::new()) {
                Ok(w) => writer = Some(w),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(w) = &mut writer {
            failure = w.write_step(model, metrics).err();
        }
        steps += 1;
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    let bytes = writer
        .map(StatsWriter::finish)
        .transpose()?
        .unwrap_or_default();
    dfaas::io::write_atomically(&args.out, |out| std::io::Write::write_all(out, &bytes))?;
    println!("replayed {steps} steps; wrote {}", args.out.display());
    Ok(())
}

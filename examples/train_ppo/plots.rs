//! SVG plots of a run (rendered to strings, written atomically by the
//! caller): the learning curve and each agent's split.

use anyhow::{Result, anyhow};
use dfaas::policies::controller::{AgentShare, Evaluation};
use plotters::prelude::*;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn plot_error<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// Mean per-agent reward of the training rollouts per iteration, with the
/// evaluation reward of every policy as a horizontal line.
pub fn learning_curve(rewards: &[(usize, f64)], evaluations: &[Evaluation]) -> Result<String> {
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let last = rewards.last().map_or(1, |r| r.0).max(1);
    let values = rewards
        .iter()
        .map(|r| r.1)
        .chain(evaluations.iter().map(|e| e.mean_reward));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.05).max(0.01);
    let mut chart = ChartBuilder::on(&root)
        .caption("Mean per-agent reward", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0usize..last, (lo - pad)..(hi + pad))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("iteration")
        .y_desc("reward")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(LineSeries::new(
            rewards.iter().copied(),
            BLACK.stroke_width(2),
        ))
        .map_err(plot_error)?
        .label("PPO (training rollouts)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.stroke_width(2)));
    for (i, e) in evaluations.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                [(0, e.mean_reward), (last, e.mean_reward)],
                colour.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(format!("{} (evaluation) {:.3}", e.policy, e.mean_reward))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    drop(chart);
    drop(root);
    Ok(svg)
}

/// Bars per agent: % of its input kept local and forwarded (stacked,
/// they partition the input) and % of it rejected (its reject action plus
/// model rejects), side by side.
pub fn agent_shares(policy: &str, names: &[String], shares: &[AgentShare]) -> Result<String> {
    let mut svg = String::new();
    let root = SVGBackend::with_string(&mut svg, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let n = names.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{policy}: each agent's requests (%)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..n, 0.0..100.0)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(names.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x.fract() - 0.5).abs() < 1e-6 {
                names.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("% of the agent's input")
        .draw()
        .map_err(plot_error)?;
    let parts: [(&str, RGBColor); 3] = [
        ("local", COLOURS[0]),
        ("forwarded", COLOURS[1]),
        ("rejected (action + model)", COLOURS[3]),
    ];
    for (p, (label, colour)) in parts.iter().enumerate() {
        let colour = *colour;
        let bars = shares.iter().enumerate().map(move |(i, s)| {
            let x = i as f64;
            let ((x0, x1), (y0, y1)) = match p {
                0 => ((x + 0.1, x + 0.48), (0.0, s.local_pct)),
                1 => (
                    (x + 0.1, x + 0.48),
                    (s.local_pct, s.local_pct + s.forward_pct),
                ),
                _ => ((x + 0.52, x + 0.9), (0.0, s.reject_pct)),
            };
            Rectangle::new([(x0, y0), (x1, y1)], colour.filled())
        });
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    drop(chart);
    drop(root);
    Ok(svg)
}

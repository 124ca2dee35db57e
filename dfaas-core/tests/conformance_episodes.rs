//! Every conformance episode replayed cell by cell against the reference's
//! `stats.csv`: integers exactly, delays and rewards to 1e-15 relative,
//! response times to 1e-9 relative (1e-12 absolute), as the vectors'
//! README recommends.

mod common;

use dfaas_core::replay::{Episode, EpisodeFiles};
use dfaas_core::stats::{Cell, StatsLayout};

fn episode_names() -> Vec<String> {
    let dir = common::conformance_dir().join("episodes");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        6,
        "expected the six conformance episodes in {}",
        dir.display()
    );
    names
}

/// Totals of one replayed episode, as `episodes/index.json` lists them.
#[derive(Default, Debug, PartialEq)]
struct Totals {
    requests: u64,
    action_rejects: u64,
    model_rejects: u64,
    model_local_rejects: u64,
    model_forward_rejects: u64,
    node_steps_with_model_rejects: u64,
}

fn check_episode(name: &str) -> Totals {
    let dir = common::conformance_dir().join("episodes").join(name);
    let episode =
        Episode::load(&EpisodeFiles::in_folder(&dir)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (header, rows) = common::read_csv(&dir.join("stats.csv"));
    let mut produced: Vec<(usize, String, Vec<Cell>)> = Vec::new();
    let mut layout_names: Option<Vec<String>> = None;
    let mut totals = Totals::default();
    episode
        .replay(|model, metrics| {
            let w = model.action_width();
            for a in 0..model.num_agents() {
                totals.requests += u64::from(metrics.input_rate[a]);
                totals.action_rejects += u64::from(metrics.action[a * w + model.degree(a) + 1]);
                totals.model_rejects += u64::from(metrics.incoming_rate_reject[a]);
                totals.model_local_rejects += u64::from(metrics.incoming_rate_local_reject[a]);
                totals.model_forward_rejects += u64::from(metrics.incoming_rate_forward_reject[a]);
                totals.node_steps_with_model_rejects +=
                    u64::from(metrics.incoming_rate_reject[a] > 0);
            }
            let layout = StatsLayout::new(model);
            layout_names.get_or_insert_with(|| layout.names().map(str::to_string).collect());
            for (agent, agent_name) in model.built().topology().names().iter().enumerate() {
                produced.push((
                    metrics.step,
                    agent_name.clone(),
                    layout.row(model, metrics, agent),
                ));
            }
        })
        .unwrap();
    let columns = layout_names.unwrap();
    assert_eq!(header[2..], columns[..], "{name}: column set and order");
    assert_eq!(rows.len(), produced.len(), "{name}: row count");
    for (row, (step, agent, cells)) in rows.iter().zip(&produced) {
        assert_eq!(
            row[0].parse::<usize>().unwrap(),
            *step,
            "{name}: step order"
        );
        assert_eq!(&row[1], agent, "{name}: agent order");
        for ((column, want), got) in columns.iter().zip(&row[2..]).zip(cells) {
            let at = format!("{name} step {step} {agent} {column}");
            match got {
                Cell::Empty => assert!(want.is_empty(), "{at}: expected `{want}`, got empty"),
                Cell::Int(v) => {
                    let w: f64 = want.parse().unwrap_or_else(|_| panic!("{at}: `{want}`"));
                    assert_eq!(*v as f64, w, "{at}");
                }
                Cell::Float(v) => {
                    let w: f64 = want.parse().unwrap_or_else(|_| panic!("{at}: `{want}`"));
                    let ok = if column.starts_with("response_time") {
                        common::close(*v, w, 1e-9, 1e-12)
                    } else {
                        common::close(*v, w, 1e-15, 0.0)
                    };
                    assert!(ok, "{at}: got {v:?}, want {w:?}");
                }
            }
        }
    }
    totals
}

#[test]
fn every_conformance_episode_replays_exactly() {
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::conformance_dir().join("episodes/index.json")).unwrap(),
    )
    .unwrap();
    for name in episode_names() {
        let totals = check_episode(&name);
        let entry = index
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name.as_str())
            .unwrap();
        let field = |key: &str| {
            entry[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: {key}"))
        };
        let expected = Totals {
            requests: field("requests"),
            action_rejects: field("action_rejects"),
            model_rejects: field("model_rejects"),
            model_local_rejects: field("model_local_rejects"),
            model_forward_rejects: field("model_forward_rejects"),
            node_steps_with_model_rejects: field("node_steps_with_model_rejects"),
        };
        assert_eq!(totals, expected, "{name}: totals of index.json");
    }
}

//! The `perfmodel` example reproduces the conformance `perfmodel.csv`
//! within the README's tolerance (relative 1e-9, absolute 1e-12; rounded
//! rejects exactly except on the three exactly-half rows).

mod common;

use common::{example, read_csv as read};
use std::process::Command;

#[test]
fn perfmodel_example_reproduces_the_conformance_grid() {
    let input = common::conformance_dir().join("perfmodel.csv");
    let out = std::env::temp_dir().join(format!("dfaas-perfmodel-{}.csv", std::process::id()));
    let status = Command::new(example("perfmodel"))
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let (want_header, want) = read(&input);
    let (got_header, got) = read(&out);
    assert_eq!(got.len(), want.len());
    let mut compared = 0;
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        let half = w[want_header
            .iter()
            .position(|h| h == "rejection_rate")
            .unwrap()]
        .parse::<f64>()
        .unwrap()
        .fract()
            == 0.5;
        for (c, name) in got_header.iter().enumerate() {
            if name == "error" {
                assert!(g[c].is_empty(), "row {r}: {}", g[c]);
                continue;
            }
            let Some(wc) = want_header.iter().position(|h| h == name) else {
                panic!("unknown column {name}")
            };
            let (gv, wv): (f64, f64) = (g[c].parse().unwrap(), w[wc].parse().unwrap());
            if name == "rejection_rate_rounded" && half {
                continue;
            }
            let ok = gv == wv || (gv - wv).abs() <= 1e-12 || (gv - wv).abs() <= 1e-9 * wv.abs();
            assert!(ok, "row {r} {name}: got {gv:e}, want {wv:e}");
            compared += 1;
        }
    }
    assert!(compared > 1302 * 15);
    std::fs::remove_file(&out).unwrap();
}

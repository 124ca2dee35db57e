//! GPU split ≡ CPU split, on every adapter there is (lavapipe in CI), for
//! rates up to `MAX_INPUT_RATE` (rescales with products above 2³²).

use super::*;
use dfaas_core::rng::{below, seeded, uniform01};
use dfaas_core::split::split_requests;

#[test]
fn gpu_split_equals_the_cpu_split() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    eprintln!("adapter: {}", ctx.describe());
    let kernel = SplitKernel::new(&ctx).unwrap();
    let (rows, width) = (70_000usize, 8usize);
    let mut rng = seeded(5);
    let mut actions = vec![0f32; rows * width];
    let mut lengths = vec![0u32; rows];
    let mut rates = vec![0u32; rows];
    for r in 0..rows {
        let n = 1 + below(&mut rng, width as u32) as usize;
        lengths[r] = n as u32;
        rates[r] = match r % 3 {
            0 => below(&mut rng, 151),
            1 => below(&mut rng, MAX_INPUT_RATE + 1),
            _ => below(&mut rng, 8),
        };
        let row = &mut actions[r * width..r * width + n];
        match r % 5 {
            // Off the simplex: negative, above 1, all zero.
            0 => row
                .iter_mut()
                .for_each(|p| *p = (uniform01(&mut rng) * 3.0 - 1.0) as f32),
            1 => row.fill(0.0),
            // Dirichlet(1) points, with exact ties every few rows.
            _ => {
                let draws: Vec<f64> = (0..n).map(|_| -(1.0 - uniform01(&mut rng)).ln()).collect();
                let total: f64 = draws.iter().sum();
                for (p, d) in row.iter_mut().zip(&draws) {
                    *p = (d / total) as f32;
                }
                if r % 7 == 0 {
                    row.fill(1.0 / n as f32);
                }
            }
        }
    }
    let gpu = kernel.run(&ctx, &actions, &lengths, &rates, width).unwrap();
    for r in 0..rows {
        let n = lengths[r] as usize;
        let mut cpu = vec![0u32; n];
        split_requests(&actions[r * width..r * width + n], rates[r], &mut cpu).unwrap();
        assert_eq!(
            &gpu[r * width..r * width + n],
            &cpu[..],
            "row {r}: rate {} action {:?}",
            rates[r],
            &actions[r * width..r * width + n]
        );
        assert!(gpu[r * width + n..(r + 1) * width].iter().all(|&c| c == 0));
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    let kernel = SplitKernel::new(&ctx).unwrap();
    assert!(matches!(
        kernel.run(&ctx, &[0.5, 0.5], &[2], &[MAX_INPUT_RATE + 1], 2),
        Err(GpuError::Input { field: "rates", .. })
    ));
    assert!(matches!(
        kernel.run(&ctx, &[0.5, f32::NAN], &[2], &[7], 2),
        Err(GpuError::Input {
            field: "actions",
            ..
        })
    ));
    assert!(matches!(
        kernel.run(&ctx, &[0.5, 0.5], &[3], &[7], 2),
        Err(GpuError::Input {
            field: "lengths",
            ..
        })
    ));
    assert!(matches!(
        kernel.run(&ctx, &[0.5], &[1], &[7], 2),
        Err(GpuError::Input {
            field: "actions",
            ..
        })
    ));
}

#[test]
fn another_context_is_refused() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    let other = GpuContext::new().unwrap();
    let kernel = SplitKernel::new(&ctx).unwrap();
    assert_eq!(
        kernel.run(&other, &[0.5, 0.5], &[2], &[7], 2),
        Err(GpuError::ContextMismatch {
            built_on: ctx.id(),
            called_with: other.id(),
        })
    );
    assert_eq!(kernel.run(&ctx, &[0.5, 0.5], &[2], &[7], 2), Ok(vec![4, 3]));
}

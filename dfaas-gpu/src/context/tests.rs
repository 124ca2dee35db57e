//! The context's own contracts: WGSL specialisation is checked, ids are
//! unique, and the shared 64-bit helpers of `split.wgsl` are exact.

use super::*;
use dfaas_core::rng::{below, seeded};
use wgpu::util::DeviceExt;

#[test]
fn specialisation_rewrites_the_one_placeholder_and_refuses_anything_else() {
    let shared = include_str!("../split.wgsl");
    let eight = specialise(shared, 8).unwrap();
    assert!(eight.contains("const MAX_ENTRIES: u32 = 8u;"));
    assert!(!eight.contains(MAX_ENTRIES_LINE));
    assert_eq!(eight.len() + 1, shared.len(), "only `64` became `8`");
    for (source, entries) in [
        ("fn f() {}", 8),
        (&*format!("{MAX_ENTRIES_LINE}\n{MAX_ENTRIES_LINE}"), 8),
        (shared, 0),
        (shared, MAX_ENTRIES + 1),
    ] {
        assert!(
            matches!(specialise(source, entries), Err(GpuError::Shader(_))),
            "{entries} entries, {} source bytes",
            source.len()
        );
    }
}

#[test]
fn contexts_have_distinct_ids_and_check_them() {
    let Some(first) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)")
    else {
        return;
    };
    let second = GpuContext::new().unwrap();
    assert_ne!(first.id(), second.id());
    assert_eq!(first.check(first.id()), Ok(()));
    assert_eq!(
        second.check(first.id()),
        Err(GpuError::ContextMismatch {
            built_on: first.id(),
            called_with: second.id(),
        })
    );
}

/// Cases `(a, b, d)` with `d` above the high word of `a·b`: the edges of
/// both helpers (zeros, all ones, limb boundaries, the tightest divisor,
/// the 32-bit fast path), then random ones over the whole range.
fn wide_cases() -> Vec<[u32; 3]> {
    let high = |a: u32, b: u32| ((u64::from(a) * u64::from(b)) >> 32) as u32;
    let mut cases = vec![
        [0, 0, 1],
        [u32::MAX, u32::MAX, u32::MAX],
        [u32::MAX, u32::MAX, high(u32::MAX, u32::MAX) + 1],
        [0xffff, 0xffff, 1],
        [0x1_0000, 0x1_0000, 2],
        [0x1_0000, 0x1_0000, 1 << 31],
        [0xffff_0000, 0x0000_ffff, 0xffff],
        [0x8000_0000, 2, 2],
        [0x8000_0000, 2, 3],
        [7, 9, 63],
        [1 << 20, 5 << 20, (6 << 20) + 1],
    ];
    let mut rng = seeded(11);
    for i in 0..4096 {
        // Alternate full-range operands with env-sized ones (≤ 2^26).
        let bits = if i % 2 == 0 { u32::MAX } else { (1 << 26) - 1 };
        let (a, b) = (below(&mut rng, bits) + 1, below(&mut rng, bits) + 1);
        let h = high(a, b);
        let d = match i % 3 {
            0 => h + 1,
            1 => h + 1 + below(&mut rng, u32::MAX - h),
            _ => a.max(b),
        };
        cases.push([a, b, d.max(h + 1)]);
    }
    cases
}

/// A kernel applying `mul_wide` then `div_wide` to every case.
const WIDE_KERNEL: &str = "
@group(0) @binding(0) var<storage, read> cases: array<u32>;          // [case][a, b, d]
@group(0) @binding(1) var<storage, read_write> counts: array<u32>;   // [case][low, high, q, r]
@group(0) @binding(2) var<storage, read> actions: array<f32>;        // named by split_into, unused

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let c = id.x;
    if (c * 3u >= arrayLength(&cases)) {
        return;
    }
    let product = mul_wide(cases[3u * c], cases[3u * c + 1u]);
    let division = div_wide(product, cases[3u * c + 2u]);
    counts[4u * c] = product.x;
    counts[4u * c + 1u] = product.y;
    counts[4u * c + 2u] = division.x;
    counts[4u * c + 3u] = division.y;
}
";

#[test]
fn wide_products_and_divisions_are_exact() {
    let Some(ctx) = GpuContext::new_or_skip().expect("a GPU adapter (DFAAS_REQUIRE_GPU=1)") else {
        return;
    };
    let cases = wide_cases();
    let module = ctx.shader("wide", WIDE_KERNEL, 1).unwrap();
    let pipeline = ctx
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("wide"),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
    let flat: Vec<u32> = cases.iter().flatten().copied().collect();
    let input = ctx
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wide.cases"),
            contents: bytemuck::cast_slice(&flat),
            usage: wgpu::BufferUsages::STORAGE,
        });
    let output = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("wide.out"),
        size: (cases.len() * 16) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("wide"),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: input.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: output.as_entire_binding(),
            },
        ],
    });
    let mut encoder = ctx
        .device
        .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups((cases.len() as u32).div_ceil(64), 1, 1);
    }
    ctx.submit(encoder);
    let got: Vec<u32> = ctx.read_buffer(&output).unwrap();
    for (case, out) in cases.iter().zip(got.chunks_exact(4)) {
        let [a, b, d] = *case;
        let product = u64::from(a) * u64::from(b);
        let expected = [
            product as u32,
            (product >> 32) as u32,
            (product / u64::from(d)) as u32,
            (product % u64::from(d)) as u32,
        ];
        assert_eq!(out, expected, "a = {a}, b = {b}, d = {d}");
    }
}

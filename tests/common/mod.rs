//! Backends every test body runs on: the CPU path and one engine per adapter found.

#![allow(dead_code)]

use std::io::Write;
use std::sync::OnceLock;

use sigmax::planner::{self, DType, DeviceCaps};
use sigmax::{
    AdapterChoice, Backend, BufferRegion, Engine, EngineOptions, EntropyUnit, MaskRegion, Op,
    SoftmaxOptions,
};

/// The storage binding size that test engines plan with, the common 128 MiB, so that inputs
/// above it take the chunked path on every adapter.
pub const TEST_BINDING_BYTES: u64 = 128 << 20;

/// The CPU backend and one GPU engine per adapter that runs compute shaders, built once per
/// test binary. With `CI=true` in the environment, finding no adapter fails the run.
pub fn backends() -> &'static [Backend] {
    static BACKENDS: OnceLock<Vec<Backend>> = OnceLock::new();
    BACKENDS.get_or_init(|| {
        let mut backends = vec![Backend::cpu().unwrap()];
        backends.extend(
            gpu_engines(EngineOptions {
                max_storage_binding_bytes: Some(TEST_BINDING_BYTES),
                ..Default::default()
            })
            .into_iter()
            .map(Backend::Gpu),
        );
        backends
    })
}

/// One engine per adapter that runs compute shaders, created with `options` (whose adapter
/// choice is replaced).
pub fn gpu_engines(options: EngineOptions) -> Vec<Engine> {
    let adapters = sigmax::list_adapters();
    let engines: Vec<Engine> = adapters
        .iter()
        .enumerate()
        .filter(|(_, adapter)| adapter.compute)
        .map(|(index, adapter)| {
            let options = EngineOptions {
                adapter: AdapterChoice::Index(index),
                ..options.clone()
            };
            Engine::new(options).unwrap_or_else(|error| {
                panic!(
                    "cannot open adapter {index} ({}): {error}",
                    adapter.info.name
                )
            })
        })
        .collect();
    if engines.is_empty() {
        let message = "no GPU adapter found; install one with `apt-get install mesa-vulkan-drivers libvulkan1`";
        if std::env::var("CI").is_ok_and(|value| value == "true") {
            panic!("{message} (CI=true forbids skipping the GPU tests)");
        }
        // The harness captures eprintln!, so the warning goes to stderr directly.
        let warning = format!("warning: {message}; GPU tests run on the CPU path only");
        let _ = writeln!(std::io::stderr(), "{warning}");
    }
    engines
}

/// Deterministic pseudo-random f32 in [low, high), from a 64-bit LCG.
pub fn random_values(count: usize, seed: u64, low: f32, high: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            low + unit * (high - low)
        })
        .collect()
}

/// Runs `op` with the output filled with NaN first, so that an element no invocation wrote
/// shows up as NaN. GPU backends go through the launcher on buffers the test owns.
pub fn run_into_nan(
    backend: &Backend,
    op: Op,
    input: &[f32],
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    let mut output = vec![f32::NAN; input.len()];
    match backend {
        Backend::Reference | Backend::Cpu(_) | Backend::Auto(_) if op.is_elementwise() => {
            backend.elementwise_into(op, input, &mut output).unwrap()
        }
        Backend::Reference | Backend::Cpu(_) | Backend::Auto(_) => {
            let options = SoftmaxOptions {
                log: op == Op::LogSoftmax,
                ..SoftmaxOptions::default()
            };
            backend
                .softmax_with_into(input, rows, cols, &options, &mut output)
                .unwrap()
        }
        Backend::Gpu(engine) => {
            let options = SoftmaxOptions {
                log: op == Op::LogSoftmax,
                ..SoftmaxOptions::default()
            };
            let launch = Launch {
                op,
                options: &options,
                entropy: None,
                mask: None,
                plan: None,
            };
            run_on_buffers(engine, &launch, input, rows, cols, &mut output)
        }
    }
    output
}

/// Runs softmax on `backend` once per kernel variant the planner can pick: with the caps of
/// an adapter on CPU cores and of a GPU, whose row-length thresholds differ, each with
/// workgroup reductions and, where the device has them, subgroup reductions. Returns each
/// result with a label naming backend, kernel and reduction.
pub fn softmax_each_variant(
    backend: &Backend,
    input: &[f32],
    rows: usize,
    cols: usize,
) -> Vec<(String, Vec<f32>)> {
    softmax_each_variant_with(backend, input, rows, cols, &SoftmaxOptions::default())
}

/// As `softmax_each_variant`, with `options`.
pub fn softmax_each_variant_with(
    backend: &Backend,
    input: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
) -> Vec<(String, Vec<f32>)> {
    rows_each_variant(backend, input, None, rows, cols, options, None)
}

/// As `softmax_each_variant_with`, with an additive mask of the input's length or one row.
pub fn masked_each_variant(
    backend: &Backend,
    input: &[f32],
    mask: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
) -> Vec<(String, Vec<f32>)> {
    rows_each_variant(backend, input, Some(mask), rows, cols, options, None)
}

/// As `softmax_each_variant_with`, for the entropy in `unit`: one value per row.
pub fn entropy_each_variant(
    backend: &Backend,
    input: &[f32],
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    unit: EntropyUnit,
) -> Vec<(String, Vec<f32>)> {
    rows_each_variant(backend, input, None, rows, cols, options, Some(unit))
}

/// Runs softmax, or with `entropy` the entropy, once per kernel variant.
fn rows_each_variant(
    backend: &Backend,
    input: &[f32],
    mask: Option<&[f32]>,
    rows: usize,
    cols: usize,
    options: &SoftmaxOptions,
    entropy: Option<EntropyUnit>,
) -> Vec<(String, Vec<f32>)> {
    let Backend::Gpu(engine) = backend else {
        let output = match (entropy, mask) {
            (Some(unit), _) => backend.entropy(input, rows, cols, options, unit),
            (None, Some(mask)) => backend.softmax_masked(input, mask, rows, cols, options),
            (None, None) => backend.softmax_with(input, rows, cols, options),
        };
        return vec![(backend.name(), output.unwrap())];
    };
    let has_subgroups = engine.caps().subgroups;
    let mut results = Vec::new();
    for cpu_adapter in [true, false] {
        for subgroups in [false, true] {
            if subgroups && !has_subgroups {
                continue;
            }
            let caps = DeviceCaps {
                cpu_adapter,
                subgroups,
                ..*engine.caps()
            };
            let (rows, cols) = (rows as u64, cols as u64);
            let plan = planner::plan(Op::Softmax, DType::F32, rows, cols, &caps).unwrap();
            let label = format!("{} {:?} {:?}", backend.name(), plan.kernel, plan.reduction);
            let outputs = if entropy.is_some() { rows } else { rows * cols };
            let mut output = vec![f32::NAN; outputs as usize];
            let op = if entropy.is_some() {
                Op::Entropy
            } else {
                options.op()
            };
            let launch = Launch {
                op,
                options,
                entropy,
                mask,
                plan: Some(&plan),
            };
            run_on_buffers(
                engine,
                &launch,
                input,
                rows as usize,
                cols as usize,
                &mut output,
            );
            results.push((label, output));
        }
    }
    results
}

/// What `run_on_buffers` records: `op`, with `options` for the row ops, the entropy `unit`
/// for `Op::Entropy`, a softmax mask, and a plan, or the engine's own plan.
struct Launch<'a> {
    op: Op,
    options: &'a SoftmaxOptions,
    entropy: Option<EntropyUnit>,
    mask: Option<&'a [f32]>,
    plan: Option<&'a planner::Plan>,
}

/// Runs a launch on buffers through the launchers.
fn run_on_buffers(
    engine: &Engine,
    launch: &Launch<'_>,
    input: &[f32],
    rows: usize,
    cols: usize,
    output: &mut [f32],
) {
    let _gl_context = engine.lock_gl_context();
    let input_buffer = engine.upload("test input", input).unwrap();
    let output_buffer = engine.upload("test output", output).unwrap();
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("test"),
        });
    let from = BufferRegion::whole(&input_buffer);
    let to = BufferRegion::whole(&output_buffer);
    let (rows, cols) = (rows as u64, cols as u64);
    let options = launch.options;
    let mask_buffer = launch
        .mask
        .map(|mask| engine.upload("test mask", mask).unwrap());
    let mask = mask_buffer
        .as_ref()
        .zip(launch.mask)
        .map(|(buffer, mask)| MaskRegion {
            values: BufferRegion::whole(buffer),
            broadcast: mask.len() as u64 != rows * cols,
        });
    match (launch.entropy, launch.plan, mask) {
        _ if launch.op.is_elementwise() => {
            engine.record_elementwise(&mut encoder, launch.op, from, to, input.len() as u64)
        }
        (None, Some(plan), Some(mask)) => engine.record_softmax_masked_planned(
            &mut encoder,
            from,
            mask,
            to,
            rows,
            cols,
            options,
            plan,
        ),
        (None, None, Some(mask)) => {
            engine.record_softmax_masked(&mut encoder, from, mask, to, rows, cols, options)
        }
        (Some(unit), Some(plan), _) => {
            engine.record_entropy_planned(&mut encoder, from, to, rows, cols, options, unit, plan)
        }
        (Some(unit), None, _) => {
            engine.record_entropy(&mut encoder, from, to, rows, cols, options, unit)
        }
        (None, None, None) => {
            engine.record_softmax_with(&mut encoder, from, to, rows, cols, options)
        }
        (None, Some(plan), None) => {
            engine.record_softmax_planned(&mut encoder, from, to, rows, cols, options, plan)
        }
    }
    .unwrap();
    engine.queue().submit([encoder.finish()]);
    engine.read_f32(&output_buffer, 0, output).unwrap();
}

/// Asserts that no element is NaN, naming the first one.
pub fn assert_all_written(output: &[f32], context: &str) {
    if let Some(index) = output.iter().position(|v| v.is_nan()) {
        panic!(
            "{context}: element {index} of {} is NaN (never written?)",
            output.len()
        );
    }
}

/// Asserts |got - expected| <= tolerance everywhere, naming the worst element.
pub fn assert_close(got: &[f32], expected: &[f32], tolerance: f64, context: &str) {
    assert_eq!(got.len(), expected.len(), "{context}: length");
    let stats = sigmax::verify::compare(got, expected, 0.0);
    let index = stats.max_abs_index;
    assert!(
        stats.max_abs <= tolerance,
        "{context}: element {index}: got {:e}, expected {:e}, error {:e} > {tolerance:e}",
        got[index],
        expected[index],
        stats.max_abs
    );
}

/// Reads a .npy file shipped in tests/data.
pub fn test_data(name: &str) -> sigmax::io::Array {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    sigmax::io::read_npy(&path).unwrap()
}

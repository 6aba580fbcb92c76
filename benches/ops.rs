//! Kernel time of the GPU launchers, run time of the CPU backend and of the f64 reference,
//! and a copy of the same bytes, per case.
//!
//! GPU time covers record, submit and the wait for the device, with input and output already
//! on the device, so upload and readback are excluded. The CPU backend and the copy run on
//! every core into a preallocated output. The reference is the oracle that both backends are
//! checked against, not a fast path. benches/README.md explains how to read the numbers.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use sigmax::cpu::Cpu;
use sigmax::planner::{self, DType, Kernel};
use sigmax::verify::Bound;
use sigmax::{BufferRegion, Engine, EngineOptions, Op, SoftmaxOptions};

/// Every case's element count is divided by this when the `CI` environment variable is set.
const CI_SHRINK: usize = 16;

/// Bytes each element moves through memory: one f32 read and one f32 written.
const BYTES_PER_ELEMENT: u64 = 8;

/// One op on one shape. Sigmoid cases use `rows = 1`.
struct Case {
    op: Op,
    rows: usize,
    cols: usize,
    /// Whether the planner must choose the split softmax kernel, which rows longer than
    /// `planner::BLOCK_LEN` (16384) take. `check_plan` enforces it both ways.
    split: bool,
}

impl Case {
    fn elements(&self) -> usize {
        self.rows * self.cols
    }

    /// Returns the benchmark parameter: the element count for sigmoid, `ROWSxCOLS` for softmax.
    fn label(&self) -> String {
        match self.op {
            op if op.is_elementwise() => self.elements().to_string(),
            _ => format!("{}x{}", self.rows, self.cols),
        }
    }

    /// Returns the op and shape for panic messages, such as `Softmax 1x1048576`.
    fn name(&self) -> String {
        format!("{:?} {}", self.op, self.label())
    }
}

/// Returns the sigmoid cases, then the softmax cases, each divided by `shrink`: the shapes of
/// `sigmax bench`, from two-class rows to an LLM vocabulary row (151,936 columns).
fn cases(shrink: usize) -> (Vec<Case>, Vec<Case>) {
    let case = |op, rows, cols, split| Case {
        op,
        rows,
        cols,
        split,
    };
    let sigmoid = vec![case(Op::Sigmoid, 1, (1 << 24) / shrink, false)];
    // Multi-row cases shrink their row count and keep their row length, so each stays on its
    // kernel. The one-row case shrinks its row, which stays longer than
    // `planner::BLOCK_LEN` (16,384) at both sizes.
    let softmax = vec![
        case(Op::Softmax, 4096 / shrink, 4096, false),
        case(Op::Softmax, (1 << 20) / shrink, 16, false),
        case(Op::Softmax, 16_384 / shrink, 1000, false),
        case(Op::Softmax, 1, (1 << 24) / shrink, true),
        case(Op::Softmax, 65_536 / shrink, 2, false),
        case(Op::Softmax, 256 / shrink, 151_936, true),
    ];
    (sigmoid, softmax)
}

/// Runs the CPU reference of `case` into `output`.
fn run_cpu(case: &Case, input: &[f32], output: &mut [f32]) -> sigmax::Result<()> {
    match case.op {
        Op::Sigmoid => sigmax::reference::sigmoid_into(input, output),
        Op::Softmax => sigmax::reference::softmax_into(input, case.rows, case.cols, output),
        op => panic!("the bench has no case for {}", op.name()),
    }
}

/// Runs `case` on the fast CPU backend into `output`.
fn run_fast_cpu(cpu: &Cpu, case: &Case, input: &[f32], output: &mut [f32]) -> sigmax::Result<()> {
    match case.op {
        Op::Sigmoid => cpu.elementwise_into(Op::Sigmoid, input, output),
        Op::Softmax => {
            let options = SoftmaxOptions::default();
            cpu.softmax_with_into(input, case.rows, case.cols, &options, output)
        }
        op => panic!("the bench has no case for {}", op.name()),
    }
}

/// Records `case` into a new encoder and submits it, without waiting for the device.
fn submit_gpu(
    engine: &Engine,
    case: &Case,
    input: &wgpu::Buffer,
    output: &wgpu::Buffer,
) -> sigmax::Result<()> {
    let mut encoder = engine
        .device()
        .create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("bench"),
        });
    let from = BufferRegion::whole(input);
    let to = BufferRegion::whole(output);
    match case.op {
        Op::Sigmoid => engine.record_sigmoid(&mut encoder, from, to, case.elements() as u64)?,
        Op::Softmax => {
            engine.record_softmax(&mut encoder, from, to, case.rows as u64, case.cols as u64)?
        }
        op => panic!("the bench has no case for {}", op.name()),
    }
    engine.queue().submit([encoder.finish()]);
    Ok(())
}

fn wait_for_device(engine: &Engine) {
    if let Err(error) = engine.device().poll(wgpu::PollType::wait_indefinitely()) {
        panic!("waiting for the device failed: {error}");
    }
}

/// Panics unless a softmax case plans to the kernel that `case.split` names, so that a
/// change of shape or of the planner cannot silently move a case off the path it benches.
fn check_plan(engine: &Engine, case: &Case) {
    if case.op != Op::Softmax {
        return;
    }
    let plan = planner::plan(
        Op::Softmax,
        DType::F32,
        case.rows as u64,
        case.cols as u64,
        engine.caps(),
    )
    .unwrap_or_else(|error| panic!("{}: planning failed: {error}", case.name()));
    let split = matches!(plan.kernel, Kernel::SoftmaxSplit { .. });
    assert_eq!(
        split,
        case.split,
        "{}: the planner chose {:?}",
        case.name(),
        plan.kernel
    );
}

/// Runs one dispatch, which compiles the case's pipelines on first use, and panics unless its
/// output is within the op's documented bound of the CPU reference, so that no timing is
/// reported for a wrong kernel.
fn warm_up_and_verify(
    engine: &Engine,
    case: &Case,
    input: &[f32],
    input_buffer: &wgpu::Buffer,
    output_buffer: &wgpu::Buffer,
) {
    let name = case.name();
    submit_gpu(engine, case, input_buffer, output_buffer)
        .unwrap_or_else(|error| panic!("{name}: warm-up dispatch failed: {error}"));
    wait_for_device(engine);

    let mut got = vec![0.0; case.elements()];
    engine
        .read_f32(output_buffer, 0, &mut got)
        .unwrap_or_else(|error| panic!("{name}: reading the warm-up output failed: {error}"));
    let mut expected = vec![0.0; case.elements()];
    run_cpu(case, input, &mut expected)
        .unwrap_or_else(|error| panic!("{name}: CPU reference failed: {error}"));

    let bound = Bound::of(case.op);
    if let Some(index) = bound.first_violation(&got, &expected) {
        panic!(
            "{name}: GPU output {} at element {index} is outside the bound ({bound}) of the reference {}",
            got[index], expected[index]
        );
    }
}

/// Benches `case` on the GPU (when `engine` is present), on the CPU backend, as a copy on the
/// CPU, and on the CPU reference, in `group`.
fn bench_case(
    group: &mut BenchmarkGroup<'_, WallTime>,
    engine: Option<&Engine>,
    cpu: &Cpu,
    case: &Case,
) {
    let input = sigmax::bench::bench_input(case.elements());
    let mut output = vec![0.0f32; case.elements()];
    group.throughput(Throughput::Bytes(
        BYTES_PER_ELEMENT * case.elements() as u64,
    ));

    if let Some(engine) = engine {
        check_plan(engine, case);
        let upload = |label: &str, data: &[f32]| {
            engine
                .upload(label, data)
                .unwrap_or_else(|error| panic!("uploading `{label}` failed: {error}"))
        };
        let input_buffer = upload("bench input", &input);
        let output_buffer = upload("bench output", &output);
        warm_up_and_verify(engine, case, &input, &input_buffer, &output_buffer);

        // Dispatches of one sample run back to back and the device is waited on once at the
        // end, so the time per dispatch measures throughput, not the latency of a lone dispatch.
        group.bench_function(BenchmarkId::new("gpu", case.label()), |bencher| {
            bencher.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    if let Err(error) = submit_gpu(engine, case, &input_buffer, &output_buffer) {
                        panic!("{}: dispatch failed: {error}", case.name());
                    }
                }
                wait_for_device(engine);
                start.elapsed()
            });
        });
    }

    // The CPU backend, checked against the reference like the GPU.
    let mut expected = vec![0.0f32; case.elements()];
    run_cpu(case, &input, &mut expected)
        .unwrap_or_else(|error| panic!("{}: CPU reference failed: {error}", case.name()));
    run_fast_cpu(cpu, case, &input, &mut output)
        .unwrap_or_else(|error| panic!("{}: CPU backend failed: {error}", case.name()));
    let bound = Bound::of(case.op);
    if let Some(index) = bound.first_violation(&output, &expected) {
        panic!(
            "{}: CPU backend output {} at element {index} is outside the bound ({bound}) of the reference {}",
            case.name(),
            output[index],
            expected[index]
        );
    }
    group.bench_function(BenchmarkId::new("cpu", case.label()), |bencher| {
        bencher.iter(|| {
            if let Err(error) = run_fast_cpu(cpu, case, black_box(&input), black_box(&mut output)) {
                panic!("{}: CPU backend failed: {error}", case.name());
            }
        });
    });
    group.bench_function(BenchmarkId::new("cpu-memcpy", case.label()), |bencher| {
        bencher.iter(|| {
            if let Err(error) = cpu.copy_into(black_box(&input), black_box(&mut output)) {
                panic!("{}: copy failed: {error}", case.name());
            }
        });
    });

    group.bench_function(BenchmarkId::new("cpu-reference", case.label()), |bencher| {
        bencher.iter(|| {
            if let Err(error) = run_cpu(case, black_box(&input), black_box(&mut output)) {
                panic!("{}: CPU reference failed: {error}", case.name());
            }
        });
    });
}

fn bench_ops(criterion: &mut Criterion) {
    let shrink = if std::env::var_os("CI").is_some() {
        CI_SHRINK
    } else {
        1
    };
    let (sigmoid_cases, softmax_cases) = cases(shrink);
    let cpu = Cpu::new(None).unwrap_or_else(|error| panic!("starting the CPU backend: {error}"));

    let engine = match Engine::new(EngineOptions::default()) {
        Ok(engine) => {
            let info = engine.adapter_info();
            eprintln!(
                "ops bench: GPU adapter `{}` ({:?}, driver `{} {}`)",
                info.name, info.backend, info.driver, info.driver_info
            );
            Some(engine)
        }
        Err(error) => {
            eprintln!(
                "ops bench: creating the GPU engine failed, so only the CPU reference is benched: {error}"
            );
            None
        }
    };

    for (group_name, group_cases) in [("sigmoid", &sigmoid_cases), ("softmax", &softmax_cases)] {
        let mut group = criterion.benchmark_group(group_name);
        // Flat sampling gives every sample the same iteration count, so a case of 100 ms per
        // call can fit 10 samples in `measurement_time`. Linear sampling would need at least
        // 1 + 2 + ... + 10 = 55 calls.
        group.sampling_mode(SamplingMode::Flat);
        for case in group_cases {
            bench_case(&mut group, engine.as_ref(), &cpu, case);
        }
        group.finish();
    }
}

// About 6 s per benchmark, four per case.
criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench_ops
}
criterion_main!(benches);

//! `sigmax bench`: GPU kernel, GPU end-to-end and CPU times per shape, each beside a copy of
//! the same bytes from the same run, as a table and optionally as JSON.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use sigmax::bench::{self, Measurement};
use sigmax::{Backend, Op, io};

/// The shapes benchmarked when none is given: the elementwise op at 16M elements, and softmax
/// from two-class rows to an LLM vocabulary row (151,936 columns).
pub const DEFAULT_CASES: [(Op, &[usize]); 7] = [
    (Op::Sigmoid, &[16_777_216]),
    (Op::Softmax, &[4096, 4096]),
    (Op::Softmax, &[1_048_576, 16]),
    (Op::Softmax, &[16_384, 1000]),
    (Op::Softmax, &[1, 16_777_216]),
    (Op::Softmax, &[65_536, 2]),
    (Op::Softmax, &[256, 151_936]),
];

/// Parses `ROWSxCOLS` or `N` (any number of `x`-separated dimensions).
pub fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let shape: Result<Vec<usize>, _> = text.split('x').map(|part| part.trim().parse()).collect();
    match shape {
        Ok(shape) if shape.contains(&0) => Err(format!(
            "shape `{text}` has no elements; benchmark a shape whose dimensions are all 1 or more"
        )),
        Ok(shape) if !shape.is_empty() => Ok(shape),
        _ => Err(format!(
            "invalid shape `{text}`: expected dimensions separated by `x`, such as 4096x4096 or 16777216"
        )),
    }
}

/// One row of the JSON output. Scripts read these names: keep them stable.
#[derive(Serialize)]
struct Record<'a> {
    op: &'a str,
    shape: &'a [usize],
    backend: &'a str,
    adapter: &'a str,
    kernel_ms: f64,
    end_to_end_ms: f64,
    gbps: f64,
    copy_gbps: f64,
    copy_ratio: f64,
    timer: &'a str,
    temperature: f32,
}

/// Returns the op's name as the CLI and the JSON spell it.
pub fn op_name(op: Op) -> &'static str {
    op.name()
}

/// Measures every case on `gpu` (when there is one) and on the CPU.
pub fn run(
    gpu: Option<&Backend>,
    cpu: bool,
    cases: &[(Op, Vec<usize>)],
    temperature: f32,
    runs: usize,
) -> sigmax::Result<Vec<Measurement>> {
    let cpu_backend = sigmax::cpu::Cpu::new(None)?;
    let mut measurements = Vec::new();
    for (op, shape) in cases {
        if let Some(Backend::Gpu(engine)) = gpu {
            log::info!(
                "measuring {} {shape:?} on {}",
                op_name(*op),
                engine.adapter_info().name
            );
            measurements.push(bench::measure_gpu(engine, *op, shape, temperature, runs)?);
            // Free this shape's buffers before the next, larger one.
            engine.release_pooled_buffers();
        }
        if cpu {
            log::info!("measuring {} {shape:?} on the CPU", op_name(*op));
            measurements.push(bench::measure_cpu(
                &cpu_backend,
                *op,
                shape,
                temperature,
                runs,
            )?);
        }
    }
    Ok(measurements)
}

/// Prints the table of measurements on stdout.
pub fn print_table(measurements: &[Measurement]) {
    println!(
        "{:<11} {:<16} {:<8} {:>10} {:>14} {:>8} {:>10} {:>11}",
        "op", "shape", "backend", "kernel ms", "end-to-end ms", "GB/s", "copy GB/s", "copy ratio"
    );
    for m in measurements {
        let shape: Vec<String> = m.shape.iter().map(|d| d.to_string()).collect();
        println!(
            "{:<11} {:<16} {:<8} {:>10.3} {:>14.3} {:>8.2} {:>10.2} {:>11.2}",
            op_name(m.op),
            shape.join("x"),
            m.backend,
            m.kernel_ms,
            m.end_to_end_ms,
            m.gbps,
            m.copy_gbps,
            m.copy_ratio
        );
    }
    let adapters: std::collections::BTreeSet<String> = measurements
        .iter()
        .map(|m| {
            format!(
                "{}: {} (kernel time from {})",
                m.backend, m.adapter, m.timer
            )
        })
        .collect();
    for line in adapters {
        println!("{line}");
    }
    println!(
        "GB/s counts 8 bytes per element; copy GB/s is a copy of the same bytes on the same device in this run."
    );
}

/// Writes the measurements as a JSON array to `path`.
pub fn write_json(path: &Path, measurements: &[Measurement]) -> sigmax::Result<()> {
    let records: Vec<Record> = measurements
        .iter()
        .map(|m| Record {
            op: op_name(m.op),
            shape: &m.shape,
            backend: &m.backend,
            adapter: &m.adapter,
            kernel_ms: m.kernel_ms,
            end_to_end_ms: m.end_to_end_ms,
            gbps: m.gbps,
            copy_gbps: m.copy_gbps,
            copy_ratio: m.copy_ratio,
            timer: m.timer,
            temperature: m.temperature,
        })
        .collect();
    io::write_atomic(path, |out| {
        serde_json::to_writer_pretty(&mut *out, &records)?;
        writeln!(out)
    })
}

//! `sigmax bench`: GPU kernel, GPU end-to-end and CPU times per shape, each beside a copy of
//! the same bytes from the same run, as a table and optionally as JSON.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
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
    let parts: Vec<&str> = text.split('x').map(str::trim).collect();
    let too_large = parts.iter().find(|part| {
        !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && part.parse::<usize>().is_err()
    });
    if let Some(part) = too_large {
        return Err(format!(
            "dimension {part} in shape `{text}` is too large; dimensions are at most {}",
            usize::MAX
        ));
    }
    let shape: Result<Vec<usize>, _> = parts.iter().map(|part| part.parse()).collect();
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
                op.name(),
                engine.adapter_info().name
            );
            measurements.push(bench::measure_gpu(engine, *op, shape, temperature, runs)?);
            // Free this shape's buffers before the next, larger one.
            engine.release_pooled_buffers();
        }
        if cpu {
            log::info!("measuring {} {shape:?} on the CPU", op.name());
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
            m.op.name(),
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
            op: m.op.name(),
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

/// One measurement of another tool, read from JSON in the schema of `--json`.
#[derive(Debug, Deserialize)]
pub struct BaselineRecord {
    op: String,
    shape: Vec<usize>,
    backend: String,
    #[serde(default)]
    adapter: String,
    kernel_ms: f64,
}

/// Reads a baseline file written by `sigmax bench --json` or benches/compare_python.py.
pub fn read_baseline(path: &Path) -> sigmax::Result<Vec<BaselineRecord>> {
    let text = std::fs::read_to_string(path).map_err(|error| sigmax::Error::File {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    let records: Vec<BaselineRecord> =
        serde_json::from_str(&text).map_err(|error| sigmax::Error::File {
            path: path.to_owned(),
            message: format!(
                "not a baseline: {error}; give a JSON array of objects with op, shape, \
                 backend and kernel_ms, as `sigmax bench --json` writes"
            ),
        })?;
    let invalid =
        |record: &&BaselineRecord| !record.kernel_ms.is_finite() || record.kernel_ms <= 0.0;
    if let Some(record) = records.iter().find(invalid) {
        return Err(sigmax::Error::File {
            path: path.to_owned(),
            message: format!(
                "kernel_ms {} of {} {:?} is invalid: it must be a positive number of ms",
                record.kernel_ms, record.op, record.shape
            ),
        });
    }
    Ok(records)
}

/// Prints, for each measurement with baseline times for the same op and shape, the speedup
/// against each baseline tool: its time over ours, so that above 1 means faster than it.
pub fn print_baseline(measurements: &[Measurement], baseline: &[BaselineRecord]) {
    println!();
    println!(
        "{:<11} {:<16} {:<8} {:>10}  {:<10} {:>12} {:>9}",
        "op", "shape", "backend", "kernel ms", "baseline", "baseline ms", "speedup"
    );
    let mut unmatched = true;
    for m in measurements {
        let shape: Vec<String> = m.shape.iter().map(|d| d.to_string()).collect();
        // Elementwise shapes compare by element count, as 1-D and 2-D sigmoid are the same op.
        let elements: usize = m.shape.iter().product();
        let same_shape = |record: &BaselineRecord| {
            record.shape == m.shape
                || (m.op.is_elementwise() && record.shape.iter().product::<usize>() == elements)
        };
        for record in baseline
            .iter()
            .filter(|r| r.op == m.op.name() && same_shape(r))
        {
            unmatched = false;
            println!(
                "{:<11} {:<16} {:<8} {:>10.3}  {:<10} {:>12.3} {:>8.2}x",
                m.op.name(),
                shape.join("x"),
                m.backend,
                m.kernel_ms,
                record.backend,
                record.kernel_ms,
                record.kernel_ms / m.kernel_ms
            );
        }
    }
    if unmatched {
        println!("(no baseline measurement has the op and shape of any row above)");
    }
    let tools: std::collections::BTreeSet<String> = baseline
        .iter()
        .map(|record| format!("{}: {}", record.backend, record.adapter))
        .collect();
    for line in tools {
        println!("{line}");
    }
}

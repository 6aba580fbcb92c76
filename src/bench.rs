//! Timing of ops for `sigmax bench`: kernel time and end-to-end time on a GPU engine, time on
//! the CPU, each next to a copy of the same bytes measured in the same run.
//!
//! Throughput counts 8 bytes per element, one f32 read and one written, so that an op and a
//! copy of its input compare directly: a copy of n f32 also reads 4n and writes 4n bytes.

use std::time::Instant;

use crate::cpu::Cpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::kernels::BufferRegion;
use crate::options::SoftmaxOptions;
use crate::planner::{F32_BYTES, Op};

/// Bytes of memory traffic per element: one f32 read and one f32 written.
pub const BYTES_PER_ELEMENT: f64 = 8.0;

/// Medians of one op on one shape on one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The op.
    pub op: Op,
    /// Shape: `[n]` for sigmoid, `[rows, cols]` for softmax.
    pub shape: Vec<usize>,
    /// `cpu`, or the GPU backend such as `vulkan`.
    pub backend: String,
    /// Adapter name, or `cpu, N threads` for the CPU backend.
    pub adapter: String,
    /// Median kernel time in milliseconds: the dispatches alone on a GPU, the op on
    /// preallocated slices on the CPU.
    pub kernel_ms: f64,
    /// Median time from host input to host output in milliseconds, upload and readback
    /// included. Equal to `kernel_ms` on the CPU.
    pub end_to_end_ms: f64,
    /// Kernel throughput in GB/s (10^9 bytes) at 8 bytes per element.
    pub gbps: f64,
    /// Throughput of a copy of the same bytes in the same run: `copy_buffer_to_buffer` on a
    /// GPU, a memcpy on the host.
    pub copy_gbps: f64,
    /// `gbps / copy_gbps`.
    pub copy_ratio: f64,
    /// The timer behind `kernel_ms`: `timestamp queries`, `device poll` or `host clock`.
    pub timer: &'static str,
    /// The softmax temperature; 1 for the elementwise ops.
    pub temperature: f32,
}

/// Returns the median of `samples`, which must not be empty.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn gigabytes_per_second(elements: usize, milliseconds: f64) -> f64 {
    BYTES_PER_ELEMENT * elements as f64 / (milliseconds * 1e6)
}

/// Deterministic logits in [-20, 20), so that every run measures the same data.
pub fn bench_input(elements: usize) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..elements)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 40.0 - 20.0
        })
        .collect()
}

/// Rows and columns of `shape` for `op`: elementwise ops see one flat row.
fn rows_cols(op: Op, shape: &[usize]) -> (usize, usize) {
    let elements = shape.iter().product();
    match shape.split_last() {
        Some((&cols, rest)) if !op.is_elementwise() => (rest.iter().product(), cols),
        _ => (1, elements),
    }
}

/// Returns the softmax options of `op` at `temperature`: log-softmax for `Op::LogSoftmax`.
fn softmax_options(op: Op, temperature: f32) -> Result<SoftmaxOptions> {
    if op == Op::Entropy {
        // TODO: the entropy writes one f32 per row, which the 8 bytes per element and the
        // copy of the same bytes do not describe.
        return Err(Error::InvalidArgument(
            "the bench does not measure the entropy yet; measure softmax or log-softmax".to_owned(),
        ));
    }
    let options = SoftmaxOptions {
        log: op == Op::LogSoftmax,
        temperature,
        ..SoftmaxOptions::default()
    };
    options.validate()?;
    Ok(options)
}

/// Times `op` on `shape` on the CPU, `runs` times after one warm-up run, next to a memcpy of
/// the same bytes.
/// Softmax ops run at `temperature`, which the elementwise ops ignore.
pub fn measure_cpu(
    cpu: &Cpu,
    op: Op,
    shape: &[usize],
    temperature: f32,
    runs: usize,
) -> Result<Measurement> {
    let (rows, cols) = rows_cols(op, shape);
    let input = bench_input(rows * cols);
    let mut output = vec![0.0f32; input.len()];
    let options = softmax_options(op, temperature)?;
    let run_op = |output: &mut [f32]| {
        if op.is_elementwise() {
            cpu.elementwise_into(op, &input, output)
        } else {
            cpu.softmax_with_into(&input, rows, cols, &options, output)
        }
    };

    run_op(&mut output)?;
    let mut op_ms = Vec::new();
    let mut copy_ms = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        run_op(&mut output)?;
        op_ms.push(started.elapsed().as_secs_f64() * 1e3);

        let started = Instant::now();
        cpu.copy_into(std::hint::black_box(&input), &mut output)?;
        std::hint::black_box(&output);
        copy_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }

    let kernel_ms = median(op_ms);
    let gbps = gigabytes_per_second(input.len(), kernel_ms);
    let copy_gbps = gigabytes_per_second(input.len(), median(copy_ms));
    Ok(Measurement {
        op,
        shape: shape.to_vec(),
        backend: "cpu".to_owned(),
        adapter: format!("cpu, {} threads", cpu.threads()),
        kernel_ms,
        end_to_end_ms: kernel_ms,
        gbps,
        copy_gbps,
        copy_ratio: gbps / copy_gbps,
        temperature: if op.is_elementwise() {
            1.0
        } else {
            temperature
        },
        timer: "host clock",
    })
}

/// Records work into an encoder and returns its GPU time in milliseconds: from timestamp
/// queries where the device has them, else from the host clock around submit and a blocking
/// poll.
struct GpuTimer<'a> {
    engine: &'a Engine,
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
}

impl<'a> GpuTimer<'a> {
    fn new(engine: &'a Engine) -> Self {
        let needed =
            wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS;
        let queries = engine.device().features().contains(needed).then(|| {
            let device = engine.device();
            let set = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolved = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("bench timestamps"),
                size: 2 * size_of::<u64>() as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolved)
        });
        GpuTimer { engine, queries }
    }

    fn name(&self) -> &'static str {
        if self.queries.is_some() {
            "timestamp queries"
        } else {
            "device poll"
        }
    }

    fn time(&self, record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>) -> Result<f64> {
        let device = self.engine.device();
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("bench"),
        });
        if let Some((set, _)) = &self.queries {
            encoder.write_timestamp(set, 0);
        }
        record(&mut encoder)?;
        if let Some((set, resolved)) = &self.queries {
            encoder.write_timestamp(set, 1);
            encoder.resolve_query_set(set, 0..2, resolved, 0);
        }

        let started = Instant::now();
        self.engine.queue().submit([encoder.finish()]);
        device.poll(wgpu::PollType::wait_indefinitely())?;
        let host_ms = started.elapsed().as_secs_f64() * 1e3;

        match &self.queries {
            None => Ok(host_ms),
            Some((_, resolved)) => {
                let mut ticks = [0u64; 2];
                self.engine.read_buffer(resolved, 0, &mut ticks)?;
                let nanoseconds = ticks[1].saturating_sub(ticks[0]) as f64
                    * self.engine.queue().get_timestamp_period() as f64;
                Ok(nanoseconds / 1e6)
            }
        }
    }
}

/// Times `op` on `shape` on `engine`, `runs` times after one warm-up run that compiles the
/// pipelines: the kernel alone, the slice-in, Vec-out call, and a device copy of the same
/// bytes.
/// Softmax ops run at `temperature`, which the elementwise ops ignore.
pub fn measure_gpu(
    engine: &Engine,
    op: Op,
    shape: &[usize],
    temperature: f32,
    runs: usize,
) -> Result<Measurement> {
    let (rows, cols) = rows_cols(op, shape);
    let host_input = bench_input(rows * cols);
    let mut host_output = vec![0.0f32; host_input.len()];
    let input = engine.upload("bench input", &host_input)?;
    let output = engine.upload("bench output", &host_output)?;
    let elements = host_input.len() as u64;
    let timer = GpuTimer::new(engine);
    let _gl_context = engine.lock_gl_context();

    let options = softmax_options(op, temperature)?;
    let record_op = |encoder: &mut wgpu::CommandEncoder| {
        let (from, to) = (BufferRegion::whole(&input), BufferRegion::whole(&output));
        if op.is_elementwise() {
            engine.record_elementwise(encoder, op, from, to, elements)
        } else {
            engine.record_softmax_with(encoder, from, to, rows as u64, cols as u64, &options)
        }
    };
    let record_copy = |encoder: &mut wgpu::CommandEncoder| {
        encoder.copy_buffer_to_buffer(&input, 0, &output, 0, elements * F32_BYTES);
        Ok(())
    };
    let run_end_to_end = |host_output: &mut [f32]| {
        if op.is_elementwise() {
            engine.elementwise_into(op, &host_input, host_output)
        } else {
            engine.softmax_with_into(&host_input, rows, cols, &options, host_output)
        }
    };

    timer.time(record_op)?;
    timer.time(record_copy)?;
    run_end_to_end(&mut host_output)?;

    let mut kernel_ms = Vec::new();
    let mut copy_ms = Vec::new();
    let mut end_to_end_ms = Vec::new();
    for _ in 0..runs.max(1) {
        kernel_ms.push(timer.time(record_op)?);
        copy_ms.push(timer.time(record_copy)?);
        let started = Instant::now();
        run_end_to_end(&mut host_output)?;
        end_to_end_ms.push(started.elapsed().as_secs_f64() * 1e3);
    }

    let info = engine.adapter_info();
    let kernel_ms = median(kernel_ms);
    let gbps = gigabytes_per_second(host_input.len(), kernel_ms);
    let copy_gbps = gigabytes_per_second(host_input.len(), median(copy_ms));
    Ok(Measurement {
        op,
        shape: shape.to_vec(),
        backend: info.backend.to_string(),
        adapter: info.name.clone(),
        kernel_ms,
        end_to_end_ms: median(end_to_end_ms),
        gbps,
        copy_gbps,
        copy_ratio: gbps / copy_gbps,
        temperature: if op.is_elementwise() {
            1.0
        } else {
            temperature
        },
        timer: timer.name(),
    })
}

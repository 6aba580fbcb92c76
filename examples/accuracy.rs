//! Measures the max error of every op against the f64 reference, on the CPU path and on every
//! adapter found, and prints a Markdown table: the numbers behind the accuracy table of
//! README.md.
//!
//! ```sh
//! cargo run --release --example accuracy
//! cargo run --release --example accuracy -- --quick   # 16x fewer elements
//! cargo run --release --example accuracy -- --cpu     # the CPU backend alone
//! ```
//!
//! Errors count as the bound of each op counts them (`sigmax::verify::Bound`): ULP, or for
//! log outputs ULP of max(|y|, 1), with references below the bound's tiny threshold passing
//! on absolute error.

use sigmax::verify::Bound;
use sigmax::{Backend, Engine, EngineOptions, EntropyUnit, Op, SoftmaxOptions, reference};

/// Inputs of the elementwise ops: `count` finite f32 spread over the whole range (uniform over
/// bit patterns, so every exponent gets the same share), then every multiple of 2^-12 in
/// [-30, 30].
fn elementwise_inputs(count: usize) -> Vec<f32> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut values = Vec::with_capacity(count + 245_761);
    while values.len() < count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let value = f32::from_bits((state >> 32) as u32);
        if value.is_finite() {
            values.push(value);
        }
    }
    values.extend((-30 * 4096..=30 * 4096).map(|i| i as f32 / 4096.0));
    values
}

/// Uniform values in [-spread, spread).
fn uniform(count: usize, seed: u64, spread: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * spread
        })
        .collect()
}

/// A named set of softmax rows.
struct Rows {
    name: String,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

fn softmax_inputs(shrink: usize) -> Vec<Rows> {
    let mut sets = Vec::new();
    let mut add = |name: &str, rows: usize, cols: usize, data: Vec<f32>| {
        sets.push(Rows {
            name: name.to_owned(),
            rows,
            cols,
            data,
        })
    };

    let rows = 1024 / shrink;
    add("uniform ±30", rows, 4099, uniform(rows * 4099, 1, 30.0));
    add("uniform ±1e4", rows, 1000, uniform(rows * 1000, 2, 1e4));
    // Ties: every row constant, a different constant per row.
    let constants = uniform(rows, 3, 1e4);
    let ties = constants.iter().flat_map(|&c| vec![c; 777]).collect();
    add("all equal", rows, 777, ties);

    // One dominant entry 40 above the others, which sit in [-1, 1].
    let mut dominant = uniform(rows * 1000, 4, 1.0);
    for row in 0..rows {
        dominant[row * 1000 + (row * 37) % 1000] = 40.0;
    }
    add("one dominant", rows, 1000, dominant);

    add(
        "tiny rows ±30",
        262_144 / shrink,
        16,
        uniform(262_144 / shrink * 16, 5, 30.0),
    );
    let long = (1 << 24) / shrink;
    add("one long row ±30", 1, long, uniform(long, 6, 30.0));
    add("one long row ±1e4", 1, long, uniform(long, 7, 1e4));
    sets
}

fn worst(op: Op, got: &[f32], expected: &[f32]) -> f64 {
    Bound::of(op).worst(got, expected).0
}

fn main() -> sigmax::Result<()> {
    let quick = std::env::args().any(|arg| arg == "--quick");
    let shrink = if quick { 16 } else { 1 };
    let cpu_only = std::env::args().any(|arg| arg == "--cpu");
    let mut backends = vec![Backend::cpu()?];
    let adapters = if cpu_only {
        Vec::new()
    } else {
        sigmax::list_adapters()
    };
    for (index, _) in adapters.iter().enumerate() {
        let options = EngineOptions {
            adapter: sigmax::AdapterChoice::Index(index),
            ..Default::default()
        };
        backends.push(Backend::Gpu(Engine::new(options)?));
    }
    let names: Vec<String> = backends.iter().map(Backend::name).collect();

    println!("| op | options | input | {} |", names.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(names.len()));

    let elementwise = elementwise_inputs(10_000_000 / shrink);
    for op in [Op::Sigmoid, Op::LogSigmoid, Op::Silu] {
        let mut expected = vec![0.0; elementwise.len()];
        reference::elementwise_into(op, &elementwise, &mut expected)?;
        let mut cells = Vec::new();
        for backend in &backends {
            let got = backend.elementwise(op, &elementwise)?;
            cells.push(format!("{:.2}", worst(op, &got, &expected)));
        }
        println!(
            "| {} | | {} finite f32 over the whole range, and [-30, 30] at steps of 2^-12 | {} |",
            op.name(),
            elementwise.len() - 245_761,
            cells.join(" | ")
        );
    }

    let option_sets = [
        ("", 1.0, 1.0),
        ("T = 0.1", 0.1, 1.0),
        ("T = 2.5", 2.5, 1.0),
        ("T = 100", 100.0, 1.0),
        ("S = 0.125", 1.0, 0.125),
    ];
    for rows in softmax_inputs(shrink) {
        for log in [false, true] {
            for (label, temperature, scale) in option_sets {
                let options = SoftmaxOptions {
                    log,
                    temperature,
                    scale,
                    ..SoftmaxOptions::default()
                };
                let expected = reference::softmax_with(&rows.data, rows.rows, rows.cols, &options)?;
                let mut cells = Vec::new();
                for backend in &backends {
                    let got = backend.softmax_with(&rows.data, rows.rows, rows.cols, &options)?;
                    cells.push(format!("{:.2}", worst(options.op(), &got, &expected)));
                }
                println!(
                    "| {} | {label} | {} [{}, {}] | {} |",
                    options.op().name(),
                    rows.name,
                    rows.rows,
                    rows.cols,
                    cells.join(" | ")
                );
            }
        }
        // Additive masks: biases in ±50 with every seventh entry -inf, of the input's shape,
        // and one row of biases in ±5 for every row.
        let mut full = uniform(rows.data.len(), 8, 50.0);
        full.iter_mut()
            .step_by(7)
            .for_each(|m| *m = f32::NEG_INFINITY);
        let row = uniform(rows.cols, 9, 5.0);
        for (mask_label, mask) in [("mask", &full), ("row mask", &row)] {
            for log in [false, true] {
                for (label, temperature, scale) in [("", 1.0, 1.0), ("T = 2.5", 2.5, 1.0)] {
                    let options = SoftmaxOptions {
                        log,
                        temperature,
                        scale,
                        ..SoftmaxOptions::default()
                    };
                    let (r, c) = (rows.rows, rows.cols);
                    let expected = reference::softmax_masked(&rows.data, mask, r, c, &options)?;
                    let mut cells = Vec::new();
                    for backend in &backends {
                        let got = backend.softmax_masked(&rows.data, mask, r, c, &options)?;
                        cells.push(format!("{:.2}", worst(options.op(), &got, &expected)));
                    }
                    let label = format!("{mask_label} {label}");
                    println!(
                        "| {} | {} | {} [{r}, {c}] | {} |",
                        options.op().name(),
                        label.trim(),
                        rows.name,
                        cells.join(" | ")
                    );
                }
            }
        }
        for (label, temperature, scale) in option_sets {
            let options = SoftmaxOptions {
                temperature,
                scale,
                ..SoftmaxOptions::default()
            };
            let unit = EntropyUnit::Nats;
            let expected = reference::entropy(&rows.data, rows.rows, rows.cols, &options, unit)?;
            let mut cells = Vec::new();
            for backend in &backends {
                let got = backend.entropy(&rows.data, rows.rows, rows.cols, &options, unit)?;
                cells.push(format!("{:.2}", worst(Op::Entropy, &got, &expected)));
            }
            println!(
                "| entropy | {label} | {} [{}, {}] | {} |",
                rows.name,
                rows.rows,
                rows.cols,
                cells.join(" | ")
            );
        }
    }
    Ok(())
}

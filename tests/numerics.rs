//! Non-finite inputs, log-softmax, temperature and scale, on every backend and every kernel
//! variant, against vectors whose expected values come from an f64 computation.

mod common;

use common::{backends, entropy_each_variant, masked_each_variant, softmax_each_variant_with};
use sigmax::verify::{Bound, ulp_distance};
use sigmax::{Backend, EntropyUnit, MaskedRows, Op, SoftmaxOptions};

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;

/// Row lengths that reach each softmax kernel: one invocation per row (scalar, then vec4),
/// one workgroup per row on GPU caps, and split rows (vec4, then scalar).
const PADDED_LENGTHS: [usize; 4] = [0, 40, 20_000, 20_001];

/// Checks one element against its expected value: within the op's bound, NaN where NaN is
/// expected, and the same infinity where one is expected.
fn check(op: Op, got: f32, expected: f32, context: &str) {
    let bound = Bound::of(op);
    let passes = if expected.is_nan() {
        got.is_nan()
    } else if expected.is_infinite() {
        got == expected
    } else {
        bound.first_violation(&[got], &[expected]).is_none()
    };
    assert!(
        passes,
        "{context}: got {got:e}, expected {expected:e} ({} ULP), bound {bound}",
        ulp_distance(got, expected)
    );
}

/// Runs softmax with `options` on `row` padded with -inf to each of `PADDED_LENGTHS` (or not
/// padded, for 0), on every backend and kernel variant. The padding changes nothing: a -inf
/// logit gets 0 (log-softmax: -inf), unless the row is all NaN.
fn assert_softmax_row(row: &[f32], expected: &[f64], options: &SoftmaxOptions) {
    let op = options.op();
    let pad_value = match (options.log, expected.iter().all(|e| e.is_nan())) {
        (_, true) => NAN,
        (false, false) => 0.0,
        (true, false) => -INF,
    };
    for len in PADDED_LENGTHS {
        let cols = len.max(row.len());
        let mut input = row.to_vec();
        input.resize(cols, -INF);
        for backend in backends() {
            for (label, got) in softmax_each_variant_with(backend, &input, 1, cols, options) {
                let context = format!("{op:?} of {row:?} padded to {cols} on {label}");
                for (index, &value) in got.iter().enumerate() {
                    let want = expected.get(index).map_or(pad_value, |&e| e as f32);
                    check(op, value, want, &format!("{context}, element {index}"));
                }
            }
        }
    }
}

fn softmax() -> SoftmaxOptions {
    SoftmaxOptions::default()
}

fn log_softmax() -> SoftmaxOptions {
    SoftmaxOptions::log()
}

#[test]
fn softmax_non_finite_vectors() {
    let cases: &[(&[f32], &[f64])] = &[
        (
            &[1.0, 2.0, 3.0],
            &[0.09003057317038046, 0.24472847105479764, 0.6652409557748218],
        ),
        (&[0.0, INF], &[f64::NAN; 2]),
        (&[INF, 1.0, 2.0], &[f64::NAN; 3]),
        (&[2.0, 1.0, NAN], &[f64::NAN; 3]),
        (&[-INF, -INF, NAN], &[f64::NAN; 3]),
        (&[-INF, 0.0], &[0.0, 1.0]),
        (&[3.4e38, -3.4e38], &[1.0, 0.0]),
        (&[-1e30, 1e30, 0.0], &[0.0, 1.0, 0.0]),
        (&[1000.0, 1000.0], &[0.5, 0.5]),
        (&[-1000.0, -1000.0], &[0.5, 0.5]),
        (
            &[-400.0, -400.0, 0.0, -400.0, -400.0, -400.0, -400.0],
            &[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        ),
        (&[-1000.0, -1000.0, -1000.0], &[1.0 / 3.0; 3]),
        (&[5.0], &[1.0]),
    ];
    for (row, expected) in cases {
        assert_softmax_row(row, expected, &softmax());
    }
}

#[test]
fn softmax_rows_of_only_neg_inf() {
    assert_softmax_row(&[-INF, -INF, -INF], &[f64::NAN; 3], &softmax());
    assert_softmax_row(&[-INF, -INF, -INF], &[f64::NAN; 3], &log_softmax());
    let zero = SoftmaxOptions {
        masked_rows: MaskedRows::Zero,
        ..softmax()
    };
    assert_softmax_row(&[-INF, -INF, -INF], &[0.0; 3], &zero);
    let log_zero = SoftmaxOptions {
        masked_rows: MaskedRows::Zero,
        ..log_softmax()
    };
    assert_softmax_row(&[-INF, -INF, -INF], &[f64::NEG_INFINITY; 3], &log_zero);
    // A row with +inf or NaN stays NaN under `Zero`.
    assert_softmax_row(&[-INF, INF], &[f64::NAN; 2], &zero);
}

#[test]
fn softmax_two_rows_one_masked() {
    // A row of only -inf next to a finite row, in one call.
    let input = [-INF, -INF, -INF, 1.0, 2.0, 3.0];
    let expected = [
        0.09003057317038046f64,
        0.24472847105479764,
        0.6652409557748218,
    ];
    for backend in backends() {
        for (label, got) in softmax_each_variant_with(backend, &input, 2, 3, &softmax()) {
            for index in 0..3 {
                check(Op::Softmax, got[index], NAN, &format!("{label}, row 0"));
                check(
                    Op::Softmax,
                    got[3 + index],
                    expected[index] as f32,
                    &format!("{label}, row 1"),
                );
            }
        }
    }
}

#[test]
fn log_softmax_vectors() {
    let ln2 = -std::f64::consts::LN_2;
    let cases: &[(&[f32], &[f64])] = &[
        (&[1e8, 1e8], &[ln2, ln2]),
        (&[1e4, 1e4], &[ln2, ln2]),
        (
            &[-5.204, 7.8325],
            &[-13.036502179312517, -2.1793125178442733e-6],
        ),
        (&[88.72284], &[0.0]),
        (&[0.0, -200.0], &[-0.0, -200.0]),
        (&[-INF, 0.0], &[f64::NEG_INFINITY, 0.0]),
        (&[0.0, INF], &[f64::NAN; 2]),
        (&[1.0, NAN], &[f64::NAN; 2]),
        // x - max overflows f32: the exact -6.8e38 rounds to -inf.
        (&[3.4e38, -3.4e38], &[0.0, f64::NEG_INFINITY]),
    ];
    for (row, expected) in cases {
        assert_softmax_row(row, expected, &log_softmax());
    }
    // At T = 10 the same difference, -6.8e37, is finite again.
    let cooled = SoftmaxOptions {
        temperature: 10.0,
        ..log_softmax()
    };
    let expected = -(3.4e38f32 as f64 * 2.0) / 10.0;
    assert_softmax_row(&[3.4e38, -3.4e38], &[0.0, expected], &cooled);
}

/// Runs the elementwise `op` on every backend and checks each element.
fn assert_elementwise(op: Op, input: &[f32], expected: &[f64]) {
    for backend in backends() {
        let got = backend.elementwise(op, input).unwrap();
        for (index, (&g, &e)) in got.iter().zip(expected).enumerate() {
            let context = format!("{op:?}({}) on {}", input[index], backend.name());
            check(op, g, e as f32, &context);
        }
    }
}

#[test]
fn sigmoid_vectors() {
    let input = [
        -1662.7, 3212.5, -1093.7, 2063.8, 91.39, -1471.0, 1823.2, 1935.3, 0.0, -0.5,
    ];
    let expected = [
        0.0,
        1.0,
        0.0,
        1.0,
        1.0,
        0.0,
        1.0,
        1.0,
        0.5,
        0.37754066879814546,
    ];
    assert_elementwise(Op::Sigmoid, &input, &expected);
    assert_elementwise(
        Op::Sigmoid,
        &[-18.0, -20.0],
        &[1.522997951276035e-8, 2.0611536181902033e-9],
    );
    assert_elementwise(Op::Sigmoid, &[INF, -INF, NAN], &[1.0, 0.0, f64::NAN]);
}

#[test]
fn sigmoid_never_negative() {
    let input: Vec<f32> = (0..2000).map(|i| -(i as f32) * 0.25).collect();
    for backend in backends() {
        let got = backend.sigmoid(&input).unwrap();
        let index = got.iter().position(|&y| y < 0.0 || y.is_sign_negative());
        assert_eq!(index, None, "{}: negative sigmoid", backend.name());
    }
}

#[test]
fn log_sigmoid_and_silu_vectors() {
    let input = [
        -100.0f32, -85.0, -20.0, -1.0, -1e-3, -1e-26, -3e-37, 0.0, 3e-37, 1e-3, 1.0, 20.0, 100.0,
    ];
    let log_sigmoid: Vec<f64> = input
        .iter()
        .map(|&x| {
            let x = x as f64;
            x.min(0.0) - (-x.abs()).exp().ln_1p()
        })
        .collect();
    let silu: Vec<f64> = input
        .iter()
        .map(|&x| {
            let x = x as f64;
            x / (1.0 + (-x).exp())
        })
        .collect();
    assert_elementwise(Op::LogSigmoid, &input, &log_sigmoid);
    assert_elementwise(Op::Silu, &input, &silu);
    assert_elementwise(
        Op::LogSigmoid,
        &[INF, -INF, NAN],
        &[0.0, f64::NEG_INFINITY, f64::NAN],
    );
    // SiLU(-inf) is -inf times 0, NaN, as in PyTorch.
    assert_elementwise(
        Op::Silu,
        &[INF, -INF, NAN],
        &[f64::INFINITY, f64::NAN, f64::NAN],
    );
}

/// `rows` rows of `cols` logits, uniform in [-spread, spread), from a fixed generator.
fn spread_logits(rows: usize, cols: usize, spread: f32) -> Vec<f32> {
    common::random_values(rows * cols, 7, -spread, spread)
}

#[test]
fn temperature_and_scale_within_bound() {
    let temperatures = [
        (0.1, 1.0),
        (2.5, 1.0),
        (100.0, 1.0),
        (1.0, 0.125),
        (0.7, 0.35),
    ];
    for (rows, cols) in [(64, 4099), (3, 20_000)] {
        let input = spread_logits(rows, cols, 90.0);
        for (temperature, scale) in temperatures {
            for log in [false, true] {
                let options = SoftmaxOptions {
                    log,
                    temperature,
                    scale,
                    ..SoftmaxOptions::default()
                };
                let expected =
                    sigmax::reference::softmax_with(&input, rows, cols, &options).unwrap();
                let bound = Bound::of(options.op());
                for backend in backends() {
                    for (label, got) in
                        softmax_each_variant_with(backend, &input, rows, cols, &options)
                    {
                        if let Some(index) = bound.first_violation(&got, &expected) {
                            panic!(
                                "{label} T = {temperature} S = {scale} log = {log} [{rows}, {cols}]: \
                                 element {index}: got {:e}, expected {:e}, outside {bound}",
                                got[index], expected[index]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn softmax_rows_negative_or_max_led() {
    // The CPU backend forms x - max with Fast2Sum when every |x| is at least |max| (rows of
    // negative values) or at most max (rows led by their max), and with TwoSum otherwise.
    let cols = 1000;
    let base = spread_logits(4, cols, 30.0);
    let negative: Vec<f32> = base.iter().map(|&x| -x.abs() - 1.0).collect();
    let led: Vec<f32> = base
        .chunks(cols)
        .flat_map(|row| {
            let mut row = row.to_vec();
            row[cols / 2] = 31.0;
            row
        })
        .collect();
    for input in [negative, led] {
        for options in [softmax(), log_softmax()] {
            let expected = sigmax::reference::softmax_with(&input, 4, cols, &options).unwrap();
            let bound = Bound::of(options.op());
            for backend in backends() {
                for (label, got) in softmax_each_variant_with(backend, &input, 4, cols, &options) {
                    if let Some(index) = bound.first_violation(&got, &expected) {
                        panic!(
                            "{label} {options:?}: element {index}: got {:e}, expected {:e}",
                            got[index], expected[index]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn invalid_temperature_is_rejected() {
    for temperature in [0.0, -2.0, NAN, INF] {
        let options = SoftmaxOptions {
            temperature,
            ..SoftmaxOptions::default()
        };
        for backend in backends() {
            let result = backend.softmax_with(&[1.0, 2.0], 1, 2, &options);
            let message = result.unwrap_err().to_string();
            assert!(
                message.contains("temperature"),
                "{}: {message}",
                backend.name()
            );
        }
    }
}

#[test]
fn same_input_gives_identical_bits() {
    let (rows, cols) = (4, 70_000);
    let input = spread_logits(rows, cols, 30.0);
    for backend in backends() {
        let Backend::Gpu(_) = backend else { continue };
        for options in [softmax(), log_softmax()] {
            let first = backend.softmax_with(&input, rows, cols, &options).unwrap();
            for run in 1..3 {
                let again = backend.softmax_with(&input, rows, cols, &options).unwrap();
                let differs = first
                    .iter()
                    .zip(&again)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(differs, None, "{}: run {run} differs", backend.name());
            }
        }
    }
}

/// Runs the entropy on every backend and kernel variant and checks each row's value.
fn assert_entropy(
    input: &[f32],
    rows: usize,
    cols: usize,
    expected: &[f64],
    options: &SoftmaxOptions,
    unit: EntropyUnit,
) {
    for backend in backends() {
        for (label, got) in entropy_each_variant(backend, input, rows, cols, options, unit) {
            for (row, (&g, &e)) in got.iter().zip(expected).enumerate() {
                let context = format!("entropy of row {row} of [{rows}, {cols}] on {label}");
                check(Op::Entropy, g, e as f32, &context);
            }
        }
    }
}

#[test]
fn entropy_of_constant_rows_is_log_cols() {
    for cols in [1, 3, 40, 20_000, 20_001] {
        let input = vec![2.5f32; 2 * cols];
        let nats = (cols as f64).ln();
        assert_entropy(&input, 2, cols, &[nats; 2], &softmax(), EntropyUnit::Nats);
        let bits = (cols as f64).log2();
        assert_entropy(&input, 2, cols, &[bits; 2], &softmax(), EntropyUnit::Bits);
    }
}

#[test]
fn entropy_of_non_finite_rows() {
    for cols in [4, 40, 20_000] {
        let mut input = vec![-INF; 5 * cols];
        // Row 0: [1, 2, 3] and -inf padding. Row 1: one finite logit. Row 2: all -inf.
        // Row 3: NaN. Row 4: +inf.
        input[..3].copy_from_slice(&[1.0, 2.0, 3.0]);
        input[cols] = 7.0;
        input[3 * cols + 1] = NAN;
        input[4 * cols] = INF;
        let p = [
            0.09003057317038046f64,
            0.24472847105479764,
            0.6652409557748218,
        ];
        let h = -p.iter().map(|p| p * p.ln()).sum::<f64>();
        let expected = [h, 0.0, f64::NAN, f64::NAN, f64::NAN];
        assert_entropy(&input, 5, cols, &expected, &softmax(), EntropyUnit::Nats);
        let zero = SoftmaxOptions {
            masked_rows: MaskedRows::Zero,
            ..softmax()
        };
        let expected = [h, 0.0, 0.0, f64::NAN, f64::NAN];
        assert_entropy(&input, 5, cols, &expected, &zero, EntropyUnit::Nats);
    }
}

#[test]
fn entropy_when_differences_overflow() {
    let input = [3.4e38f32, -3.4e38, -1e38, 3.4e38];
    assert_entropy(&input, 2, 2, &[0.0, 0.0], &softmax(), EntropyUnit::Nats);
    let cooled = SoftmaxOptions {
        temperature: 10.0,
        ..softmax()
    };
    assert_entropy(&input, 2, 2, &[0.0, 0.0], &cooled, EntropyUnit::Nats);
}

#[test]
fn entropy_within_bound_with_temperature() {
    for (rows, cols) in [(64, 300), (8, 9000), (3, 40_000)] {
        let input = spread_logits(rows, cols, 20.0);
        for temperature in [1.0, 0.3, 4.0] {
            let options = SoftmaxOptions {
                temperature,
                ..softmax()
            };
            let expected =
                sigmax::reference::entropy(&input, rows, cols, &options, EntropyUnit::Nats)
                    .unwrap();
            let expected: Vec<f64> = expected.iter().map(|&e| e as f64).collect();
            assert_entropy(&input, rows, cols, &expected, &options, EntropyUnit::Nats);
        }
    }
}

#[test]
fn mask_within_bound() {
    let option_sets = [(1.0, 1.0), (2.5, 1.0), (0.3, 0.125)];
    for (rows, cols) in [(64, 300), (3, 20_000), (2, 20_001)] {
        let input = spread_logits(rows, cols, 30.0);
        // A full mask of additive biases, with every seventh entry masked out, and a
        // broadcast row of biases.
        let mut full = common::random_values(rows * cols, 11, -50.0, 50.0);
        full.iter_mut().step_by(7).for_each(|m| *m = -INF);
        let row = common::random_values(cols, 12, -5.0, 5.0);
        for mask in [&full[..], &row[..]] {
            for (temperature, scale) in option_sets {
                for log in [false, true] {
                    let options = SoftmaxOptions {
                        log,
                        temperature,
                        scale,
                        ..softmax()
                    };
                    let expected =
                        sigmax::reference::softmax_masked(&input, mask, rows, cols, &options)
                            .unwrap();
                    let bound = Bound::of(options.op());
                    for backend in backends() {
                        for (label, got) in
                            masked_each_variant(backend, &input, mask, rows, cols, &options)
                        {
                            if let Some(index) = bound.first_violation(&got, &expected) {
                                panic!(
                                    "{label} mask of {} T = {temperature} S = {scale} log = {log} \
                                     [{rows}, {cols}]: element {index}: got {:e}, expected {:e}",
                                    mask.len(),
                                    got[index],
                                    expected[index]
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn mask_non_finite_entries() {
    let input = [
        1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0, 1.0, INF, 3.0, 1.0, 2.0, 3.0,
    ];
    let mask = [
        0.0, -INF, 0.0, 0.0, NAN, 0.0, INF, 0.0, 0.0, 0.0, -INF, 0.0, -INF, -INF, -INF,
    ];
    // Row 0 excludes its second logit, row 1 and 2 have NaN and +inf in the mask, row 3 has
    // +inf masked by -inf, which is NaN, and row 4 is fully masked.
    let e = std::f64::consts::E;
    let first = 1.0 / (1.0 + e * e) as f32;
    let expected = [
        [first, 0.0, 1.0 - first],
        [NAN; 3],
        [NAN; 3],
        [NAN; 3],
        [NAN; 3],
    ];
    for backend in backends() {
        for (label, got) in masked_each_variant(backend, &input, &mask, 5, 3, &softmax()) {
            for (index, &value) in got.iter().enumerate() {
                let want = expected[index / 3][index % 3];
                check(
                    Op::Softmax,
                    value,
                    want,
                    &format!("{label}, element {index}"),
                );
            }
        }
    }
}

#[test]
fn mask_of_large_values() {
    // Masks of 1e8 round the logits away in f32; a mask and a logit of 3e38 overflow to +inf,
    // which makes the row NaN, as it does in PyTorch.
    let input = spread_logits(6, 8, 9.0);
    let mut row = vec![0.0f32; 8];
    row[3] = 1e8;
    row[5] = 1e8;
    let big = [3e38f32, 1.0, 1.0, 2.0];
    let big_mask = [3e38f32, 0.0];
    let cases: [(&[f32], &[f32], usize, usize); 2] =
        [(&input, &row, 6, 8), (&big, &big_mask, 2, 2)];

    for (input, mask, rows, cols) in cases {
        for options in [softmax(), log_softmax()] {
            let expected =
                sigmax::reference::softmax_masked(input, mask, rows, cols, &options).unwrap();
            for backend in backends() {
                for (label, got) in masked_each_variant(backend, input, mask, rows, cols, &options)
                {
                    for (index, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                        check(
                            options.op(),
                            g,
                            e,
                            &format!("{label}, element {index} of {input:?}"),
                        );
                    }
                }
            }
        }
    }

    let expected = sigmax::reference::softmax_masked(&big, &big_mask, 2, 2, &softmax()).unwrap();
    assert!(expected[0].is_nan(), "{expected:?}");
    assert!(expected[1].is_nan(), "{expected:?}");
}

#[test]
fn many_short_rows_with_non_finite_values() {
    // Blocks of short rows, some with -inf, NaN, +inf or only -inf, and some large, as the
    // CPU backend runs 16 short rows at a time.
    for cols in [2, 5, 16, 40, 64] {
        let rows = 67;
        let mut input = common::random_values(rows * cols, 21, -40.0, 40.0);
        input[3 * cols] = -INF;
        input[17 * cols + 1] = NAN;
        input[33 * cols] = INF;
        input[40 * cols..41 * cols].fill(-INF);
        input[50 * cols] = 3.4e38;
        input[50 * cols + 1] = -3.4e38;
        for options in [softmax(), log_softmax()] {
            let expected = sigmax::reference::softmax_with(&input, rows, cols, &options).unwrap();
            for backend in backends() {
                for (label, got) in softmax_each_variant_with(backend, &input, rows, cols, &options)
                {
                    for (index, (&g, &e)) in got.iter().zip(&expected).enumerate() {
                        check(
                            options.op(),
                            g,
                            e,
                            &format!("{label} [{rows}, {cols}], element {index}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn rows_longer_than_cpu_block() {
    // Longer than sigmax::cpu::ROW_BLOCK, so the CPU backend runs them as blocks.
    let (rows, cols) = (3, sigmax::cpu::ROW_BLOCK + 1001);
    let mut input = common::random_values(rows * cols, 31, -30.0, 30.0);
    input[5] = -INF;
    input[cols + 7] = NAN;
    input[2 * cols + 123_456] = 3.4e38;
    let mask = common::random_values(cols, 32, -5.0, 5.0);
    for backend in backends() {
        for options in [softmax(), log_softmax()] {
            let expected = sigmax::reference::softmax_with(&input, rows, cols, &options).unwrap();
            let got = backend.softmax_with(&input, rows, cols, &options).unwrap();
            let mut in_place = input.clone();
            backend
                .softmax_in_place(&mut in_place, rows, cols, &options)
                .unwrap();
            let masked_expected =
                sigmax::reference::softmax_masked(&input, &mask, rows, cols, &options).unwrap();
            let masked = backend
                .softmax_masked(&input, &mask, rows, cols, &options)
                .unwrap();
            for index in (0..rows * cols)
                .step_by(97)
                .chain([5, cols + 7, 2 * cols + 123_456])
            {
                let context = format!("{} {options:?} element {index}", backend.name());
                check(options.op(), got[index], expected[index], &context);
                check(
                    options.op(),
                    in_place[index],
                    expected[index],
                    &format!("{context} in place"),
                );
                check(
                    options.op(),
                    masked[index],
                    masked_expected[index],
                    &format!("{context} masked"),
                );
            }
        }
        let expected =
            sigmax::reference::entropy(&input, rows, cols, &softmax(), EntropyUnit::Nats).unwrap();
        let got = backend
            .entropy(&input, rows, cols, &softmax(), EntropyUnit::Nats)
            .unwrap();
        for row in 0..rows {
            check(
                Op::Entropy,
                got[row],
                expected[row],
                &format!("{} entropy of row {row}", backend.name()),
            );
        }
    }
}

//! Sigmoid and softmax on every backend: the CPU path and each adapter found.

mod common;

use common::{
    assert_all_written, assert_close, backends, random_values, run_into_nan, softmax_each_variant,
    test_data,
};
use sigmax::verify::{Bound, ulp_distance};
use sigmax::{Backend, EngineOptions, Op, reference};

#[test]
fn digits_softmax_reproduces_sklearn() {
    let logits = test_data("digits_logits.npy");
    let proba = test_data("digits_proba.npy");
    let (rows, cols) = logits.rows_cols();
    assert_eq!((rows, cols), (1797, 10));
    for backend in backends() {
        let got = backend.softmax(&logits.data, rows, cols).unwrap();
        assert_close(&got, &proba.data, 1e-6, &backend.name());
    }
}

#[test]
fn breast_cancer_sigmoid_reproduces_sklearn() {
    let logits = test_data("bc_logits.npy");
    let proba = test_data("bc_proba.npy");
    assert_eq!(proba.shape, [569, 2]);
    let positive: Vec<f32> = proba.data.chunks(2).map(|row| row[1]).collect();
    for backend in backends() {
        let got = backend.sigmoid(&logits.data).unwrap();
        assert_close(&got, &positive, 1e-6, &backend.name());
    }
}

/// Three rows of random logits in [-10, 10] with a dominant max at the first, a middle and
/// the last position.
fn rows_with_max_positions(cols: usize, seed: u64) -> Vec<f32> {
    let mut input = random_values(3 * cols, seed, -10.0, 10.0);
    for (row, position) in [0, cols / 2, cols - 1].into_iter().enumerate() {
        input[row * cols + position] = 15.0;
    }
    input
}

/// Checks every kernel variant on `backend` at `cols`: every element is written, rows sum to
/// 1, and results match the reference.
fn check_softmax_rows(backend: &Backend, cols: usize) {
    let input = rows_with_max_positions(cols, cols as u64);
    let expected = reference::softmax(&input, 3, cols).unwrap();
    for (label, got) in softmax_each_variant(backend, &input, 3, cols) {
        let context = format!("{label} cols = {cols}");
        assert_all_written(&got, &context);
        for (row, values) in got.chunks(cols).enumerate() {
            let sum: f64 = values.iter().map(|&p| p as f64).sum();
            assert!(
                (sum - 1.0).abs() <= 1e-5,
                "{context} row {row} sums to {sum}"
            );
        }
        assert_close(&got, &expected, 4e-7, &context);
    }
}

#[test]
fn softmax_every_cols_up_to_600() {
    for backend in backends() {
        for cols in 1..=600 {
            check_softmax_rows(backend, cols);
        }
    }
}

#[test]
fn softmax_cols_around_thresholds() {
    let block_len = sigmax::planner::BLOCK_LEN as usize;
    let small_cpu = sigmax::planner::SMALL_ROW_MAX_COLS_CPU as usize;
    let small_gpu = sigmax::planner::SMALL_ROW_MAX_COLS_GPU as usize;
    // 65,536 and BLOCK_LEN + 4 take the vec4 form of the split path; 65,537 the scalar one.
    let mut cols_list = vec![4095, 4096, 4097, 65_536, 65_537, block_len + 4];
    for threshold in [small_gpu, small_cpu, block_len] {
        cols_list.extend([threshold - 1, threshold, threshold + 1]);
    }
    for backend in backends() {
        for &cols in &cols_list {
            check_softmax_rows(backend, cols);
        }
    }
}

#[test]
fn softmax_many_rows_fold_grid() {
    // 65,537 rows of 40 run one workgroup per row where the planner picks the row kernel.
    for (rows, cols) in [(65_536, 2), (65_537, 2), (65_537, 40)] {
        let input = random_values(rows * cols, rows as u64, -30.0, 30.0);
        let expected = reference::softmax(&input, rows, cols).unwrap();
        for backend in backends() {
            let context = format!("{} [{rows}, {cols}]", backend.name());
            let got = run_into_nan(backend, Op::Softmax, &input, rows, cols);
            assert_all_written(&got, &context);
            assert_close(&got, &expected, 4e-7, &context);
            for (label, got) in softmax_each_variant(backend, &input, rows, cols) {
                assert_all_written(&got, &label);
                assert_close(&got, &expected, 4e-7, &format!("{label} [{rows}, {cols}]"));
            }
        }
    }
}

#[test]
fn sigmoid_past_workgroup_limit() {
    let input = random_values(16_776_961, 1, -40.0, 40.0);
    let expected = reference::sigmoid(&input);
    for backend in backends() {
        let got = run_into_nan(backend, Op::Sigmoid, &input, input.len(), 1);
        assert_all_written(&got, &backend.name());
        assert_close(&got, &expected, 1e-7, &backend.name());
    }
}

#[test]
fn sigmoid_folded_grid() {
    // With at most 1,000 workgroups per dimension, 16,776,961 elements need a grid 17 high.
    let engines = common::gpu_engines(EngineOptions {
        max_workgroups_per_dimension: Some(1_000),
        ..Default::default()
    });
    let input = random_values(16_776_961, 7, -40.0, 40.0);
    let expected = reference::sigmoid(&input);
    for engine in engines {
        let backend = Backend::Gpu(engine);
        let got = run_into_nan(&backend, Op::Sigmoid, &input, input.len(), 1);
        assert_all_written(&got, &backend.name());
        assert_close(&got, &expected, 1e-7, &backend.name());
    }
}

#[test]
fn sigmoid_above_binding_size() {
    // One element more than a 128 MiB binding holds.
    let input = random_values(33_554_433, 2, -40.0, 40.0);
    let expected = reference::sigmoid(&input);
    for backend in backends() {
        let got = run_into_nan(backend, Op::Sigmoid, &input, input.len(), 1);
        assert_all_written(&got, &backend.name());
        assert_close(&got, &expected, 1e-7, &backend.name());
    }
}

#[test]
fn softmax_one_long_row() {
    let cols = 16_777_216;
    let mut input = random_values(cols, 3, -20.0, 20.0);
    input[cols - 3] = 25.0;
    let expected = reference::softmax(&input, 1, cols).unwrap();
    for backend in backends() {
        let got = run_into_nan(backend, Op::Softmax, &input, 1, cols);
        assert_all_written(&got, &backend.name());
        assert_close(&got, &expected, 4e-7, &backend.name());
        let sum: f64 = got.iter().map(|&p| p as f64).sum();
        assert!(
            (sum - 1.0).abs() <= 1e-5,
            "{}: row sums to {sum}",
            backend.name()
        );
    }
}

/// Engines whose 2 MiB bindings hold 524,284 elements, fewer than one row of the long-row
/// tests, so that chunks hold parts of rows.
fn engines_with_small_bindings() -> Vec<Backend> {
    let options = EngineOptions {
        max_storage_binding_bytes: Some(2 << 20),
        ..Default::default()
    };
    common::gpu_engines(options)
        .into_iter()
        .map(Backend::Gpu)
        .collect()
}

/// Runs every split-row variant on `rows` rows of `input` and checks the documented bound and
/// that every element is written.
fn check_long_rows(backends: &[Backend], input: &[f32], rows: usize, case: &str) {
    let cols = input.len() / rows;
    let expected = reference::softmax(input, rows, cols).unwrap();
    let bound = Bound::of(Op::Softmax);
    for backend in backends {
        for (label, got) in softmax_each_variant(backend, input, rows, cols) {
            let context = format!("{label} {case}");
            assert_all_written(&got, &context);
            assert_close(&got, &expected, 4e-7, &context);
            if let Some(index) = bound.first_violation(&got, &expected) {
                panic!(
                    "{context}: element {index}: got {:e}, expected {:e}, outside {bound}",
                    got[index], expected[index]
                );
            }
        }
    }
}

#[test]
fn softmax_rows_longer_than_binding() {
    let backends = engines_with_small_bindings();
    let (rows, cols) = (3, 1_500_001);
    let mut input = random_values(rows * cols, 4, -20.0, 20.0);
    input[cols - 1] = 30.0;
    input[cols + 600_000] = 30.0;
    check_long_rows(
        &backends,
        &input,
        rows,
        "max at the end of row 0 and inside row 1",
    );
}

#[test]
fn softmax_split_output_past_binding() {
    // Rows longer than one block but shorter than a binding, 3.8 MiB of them in all: chunks
    // hold whole rows, and the merge must not bind the whole output.
    let backends = engines_with_small_bindings();
    let (rows, cols) = (50, 20_000);
    let input = random_values(rows * cols, 5, -20.0, 20.0);
    check_long_rows(&backends, &input, rows, "50 rows of 20,000");
}

#[test]
fn softmax_long_row_max_positions() {
    let backends = engines_with_small_bindings();
    let cols = 1_500_001;
    let base = random_values(cols, 8, -20.0, 20.0);
    let cases = [
        ("max in the first chunk", vec![3]),
        ("max in the last chunk", vec![cols - 2]),
        ("max duplicated across chunks", vec![10, 700_000, cols - 1]),
    ];
    for (case, positions) in cases {
        let mut input = base.clone();
        for position in positions {
            input[position] = 25.0;
        }
        check_long_rows(&backends, &input, 1, case);
    }
}

#[test]
fn softmax_long_row_partials_span_30_orders() {
    // Logits fall by 69 along the row, so block sums range from about 1 to about 1e-30 and
    // the merge rescales partials across 30 orders of magnitude.
    let backends = engines_with_small_bindings();
    let cols = 1_200_000;
    let noise = random_values(cols, 9, -0.5, 0.5);
    let input: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, &n)| -69.0 * i as f32 / cols as f32 + n)
        .collect();
    check_long_rows(
        &backends,
        &input,
        1,
        "partials across 30 orders of magnitude",
    );
}

#[test]
fn sigmoid_extreme_values() {
    let input = [
        10_000.0, -10_000.0, 100.0, -100.0, 88.8, -88.8, -18.0, -18.25, -18.5625, -20.0, 0.0,
    ];
    let expected = reference::sigmoid(&input);
    for backend in backends() {
        let got = backend.sigmoid(&input).unwrap();
        for ((&x, &y), &want) in input.iter().zip(&got).zip(&expected) {
            let context = format!(
                "{}: sigmoid({x}) = {y:e}, expected {want:e}",
                backend.name()
            );
            assert!(y.is_finite(), "{context}");
            assert!((0.0..=1.0).contains(&y), "{context}");
            assert!(y.is_sign_positive(), "{context}");
            let tiny = y.abs() < 1e-37 && want.abs() < 1e-37;
            assert!(tiny || ulp_distance(y, want) <= 4, "{context}");
        }
    }
}

#[test]
fn sigmoid_is_two_class_softmax() {
    let logits = random_values(2_000, 5, -30.0, 30.0);
    let pairs: Vec<f32> = logits.iter().flat_map(|&x| [0.0, x]).collect();
    let bound = Bound::of(Op::Softmax);
    for backend in backends() {
        let sigmoid = backend.sigmoid(&logits).unwrap();
        let softmax = backend.softmax(&pairs, logits.len(), 2).unwrap();
        let second: Vec<f32> = softmax.chunks(2).map(|pair| pair[1]).collect();
        let violation = bound.first_violation(&sigmoid, &second);
        assert_eq!(
            violation,
            None,
            "{}: sigmoid(x) != softmax([0, x])[1]",
            backend.name()
        );
    }
}

#[test]
fn results_within_documented_bounds() {
    let (rows, cols) = (64, 1_000);
    let input = random_values(rows * cols, 6, -60.0, 60.0);
    let expected_sigmoid = reference::sigmoid(&input);
    let expected_softmax = reference::softmax(&input, rows, cols).unwrap();
    for backend in backends() {
        let sigmoid = backend.sigmoid(&input).unwrap();
        let softmax = backend.softmax(&input, rows, cols).unwrap();
        let name = backend.name();
        let sigmoid_violation = Bound::of(Op::Sigmoid).first_violation(&sigmoid, &expected_sigmoid);
        assert_eq!(sigmoid_violation, None, "{name}: sigmoid");
        let softmax_violation = Bound::of(Op::Softmax).first_violation(&softmax, &expected_softmax);
        assert_eq!(softmax_violation, None, "{name}: softmax");
    }
}

#[test]
fn softmax_within_bound_every_variant() {
    // Uniform logits over [-20, 20), the benches' input. Where a TwoSum or compensation term
    // was left unguarded, llvmpipe's reassociation put one element of [4096, 4096] at 5 ULP,
    // which the absolute checks elsewhere do not see.
    let bound = Bound::of(Op::Softmax);
    for (rows, cols) in [(4096, 4096), (8192, 16), (2, 70_000)] {
        let input = sigmax::bench::bench_input(rows * cols);
        let expected = reference::softmax(&input, rows, cols).unwrap();
        for backend in backends() {
            for (label, got) in softmax_each_variant(backend, &input, rows, cols) {
                if let Some(index) = bound.first_violation(&got, &expected) {
                    let ulp = ulp_distance(got[index], expected[index]);
                    panic!(
                        "{label} [{rows}, {cols}]: element {index}: got {:e}, expected {:e}, {ulp} ULP, outside {bound}",
                        got[index], expected[index]
                    );
                }
            }
        }
    }
}

#[test]
fn zero_size_inputs_return_empty() {
    for backend in backends() {
        for (rows, cols) in [(0, 5), (10, 0)] {
            let got = backend.softmax(&[], rows, cols).unwrap();
            assert!(got.is_empty(), "{}: [{rows}, {cols}]", backend.name());
        }
        assert!(
            backend.sigmoid(&[]).unwrap().is_empty(),
            "{}",
            backend.name()
        );
    }
}

#[test]
fn wrong_length_is_an_error() {
    for backend in backends() {
        let result = backend.softmax(&[1.0, 2.0, 3.0], 2, 2);
        assert!(
            matches!(result, Err(sigmax::Error::InvalidArgument(_))),
            "{}",
            backend.name()
        );
    }
}

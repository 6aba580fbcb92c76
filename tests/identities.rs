//! The identities that tie the ops together, as property tests on every backend:
//! sigmoid(x) = softmax([0, x])[1], sigmoid(-x) = 1 - sigmoid(x), shift invariance of softmax,
//! exp(log_softmax) = softmax, the limits of softmax(x / T) as T goes to 0 and to infinity,
//! and the range of the entropy.

mod common;

use common::backends;
use proptest::prelude::*;
use sigmax::{EntropyUnit, SoftmaxOptions};

/// Returns the spacing of f32 values at the magnitude of `x`.
fn ulp(x: f32) -> f64 {
    let x = x.abs();
    (x.next_up() - x) as f64
}

fn config() -> ProptestConfig {
    // Every case runs on every adapter, and GL adapters serialise their calls.
    ProptestConfig::with_cases(48)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sigmoid_is_two_class_softmax(x in prop::collection::vec(-60.0f32..60.0, 1..64)) {
        let pairs: Vec<f32> = x.iter().flat_map(|&v| [0.0, v]).collect();
        for backend in backends() {
            let sigmoid = backend.sigmoid(&x).unwrap();
            let softmax = backend.softmax(&pairs, x.len(), 2).unwrap();
            for (index, &s) in sigmoid.iter().enumerate() {
                let p = softmax[2 * index + 1];
                // Each is within its bound (2 and 4 ULP) of the same exact value.
                let tolerance = 6.0 * ulp(s) + 1e-37;
                prop_assert!(
                    (s as f64 - p as f64).abs() <= tolerance,
                    "{}: x = {}: sigmoid {s:e}, softmax {p:e}", backend.name(), x[index]
                );
            }
        }
    }

    #[test]
    fn sigmoid_is_symmetric(x in prop::collection::vec(-40.0f32..40.0, 1..64)) {
        let negated: Vec<f32> = x.iter().map(|v| -v).collect();
        for backend in backends() {
            let positive = backend.sigmoid(&x).unwrap();
            let negative = backend.sigmoid(&negated).unwrap();
            for (index, (&s, &t)) in positive.iter().zip(&negative).enumerate() {
                let tolerance = 2.0 * ulp(s) + 2.0 * ulp(t) + 1e-37;
                prop_assert!(
                    (t as f64 - (1.0 - s as f64)).abs() <= tolerance,
                    "{}: x = {}: sigmoid(x) {s:e}, sigmoid(-x) {t:e}", backend.name(), x[index]
                );
            }
        }
    }

    #[test]
    fn softmax_ignores_row_shift(
        steps in prop::collection::vec(-4096i32..4096, 2..300),
        shift in -1000i32..1000,
    ) {
        // Multiples of 1/64 below 2^17 in magnitude, so that adding an integer is exact.
        let x: Vec<f32> = steps.iter().map(|&s| s as f32 / 64.0).collect();
        let shifted: Vec<f32> = x.iter().map(|&v| v + shift as f32).collect();
        for backend in backends() {
            let p = backend.softmax(&x, 1, x.len()).unwrap();
            let q = backend.softmax(&shifted, 1, x.len()).unwrap();
            for (index, (&a, &b)) in p.iter().zip(&q).enumerate() {
                // Both are within 4 ULP of the same exact value.
                let tolerance = 8.0 * ulp(a) + 2e-37;
                prop_assert!(
                    (a as f64 - b as f64).abs() <= tolerance,
                    "{}: element {index}: {a:e} against {b:e} after adding {shift}",
                    backend.name()
                );
            }
        }
    }

    #[test]
    fn exp_of_log_softmax_is_softmax(x in prop::collection::vec(-50.0f32..50.0, 1..300)) {
        for backend in backends() {
            let p = backend.softmax(&x, 1, x.len()).unwrap();
            let log_p = backend.softmax_with(&x, 1, x.len(), &SoftmaxOptions::log()).unwrap();
            for (index, (&a, &l)) in p.iter().zip(&log_p).enumerate() {
                // log_p is within 4 ULP of max(|log p|, 1), which exp turns into a relative
                // error; p is within 4 ULP.
                let log_error = 4.0 * ulp(l.abs().max(1.0));
                let tolerance = a as f64 * (log_error * 1.01 + 4.0 * f32::EPSILON as f64) + 1e-30;
                let from_log = (l as f64).exp();
                prop_assert!(
                    (from_log - a as f64).abs() <= tolerance,
                    "{}: element {index}: exp(log-softmax) {from_log:e}, softmax {a:e}",
                    backend.name()
                );
            }
        }
    }

    #[test]
    fn low_temperature_is_one_hot(
        steps in prop::collection::hash_set(-200i32..200, 2..50),
    ) {
        // Distinct logits at least 0.1 apart: at T = 1e-3 every other class is below e^-100.
        let x: Vec<f32> = steps.iter().map(|&s| s as f32 / 10.0).collect();
        let argmax = (0..x.len()).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap();
        let options = SoftmaxOptions { temperature: 1e-3, ..SoftmaxOptions::default() };
        for backend in backends() {
            let p = backend.softmax_with(&x, 1, x.len(), &options).unwrap();
            for (index, &value) in p.iter().enumerate() {
                let expected = if index == argmax { 1.0 } else { 0.0 };
                prop_assert!(
                    (value - expected).abs() <= 1e-30,
                    "{}: element {index} is {value:e}", backend.name()
                );
            }
        }
    }

    #[test]
    fn high_temperature_is_uniform(x in prop::collection::vec(-10.0f32..10.0, 1..300)) {
        let options = SoftmaxOptions { temperature: 1e7, ..SoftmaxOptions::default() };
        let uniform = 1.0 / x.len() as f64;
        for backend in backends() {
            let p = backend.softmax_with(&x, 1, x.len(), &options).unwrap();
            for (index, &value) in p.iter().enumerate() {
                // |x / T| <= 1e-6, so each probability is within about 2e-6 of uniform.
                prop_assert!(
                    (value as f64 - uniform).abs() <= 3e-6 * uniform,
                    "{}: element {index} is {value:e}, uniform is {uniform:e}", backend.name()
                );
            }
        }
    }

    #[test]
    fn entropy_lies_between_zero_and_log_cols(
        x in prop::collection::vec(-30.0f32..30.0, 1..300),
        constant in -100.0f32..100.0,
    ) {
        let cols = x.len();
        let log_cols = (cols as f64).ln();
        let mut rows = x.clone();
        rows.extend(std::iter::repeat_n(constant, cols));
        let options = SoftmaxOptions::default();
        for backend in backends() {
            let h = backend.entropy(&rows, 2, cols, &options, EntropyUnit::Nats).unwrap();
            // Within the bound of 4 ULP of max(H, 1) of the interval's ends.
            let slack = 4.0 * ulp(log_cols.max(1.0) as f32);
            prop_assert!(
                h[0] as f64 >= -slack && h[0] as f64 <= log_cols + slack,
                "{}: H = {} outside [0, {log_cols}]", backend.name(), h[0]
            );
            prop_assert!(
                (h[1] as f64 - log_cols).abs() <= slack,
                "{}: H of a constant row = {}, log(cols) = {log_cols}", backend.name(), h[1]
            );
        }
    }
}

//! In-place forms on every backend: the same bits as the forms with a separate output.

mod common;

use common::{backends, random_values};
use sigmax::{Op, SoftmaxOptions};

#[test]
fn elementwise_in_place_matches() {
    let input = random_values(70_001, 3, -40.0, 40.0);
    for backend in backends() {
        for op in [Op::Sigmoid, Op::LogSigmoid, Op::Silu] {
            let expected = backend.elementwise(op, &input).unwrap();
            let mut data = input.clone();
            backend.elementwise_in_place(op, &mut data).unwrap();
            let differs = data
                .iter()
                .zip(&expected)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(differs, None, "{} {op:?}", backend.name());
        }
    }
}

#[test]
fn softmax_in_place_matches() {
    for (rows, cols) in [(300, 7), (40, 1000), (3, 20_000), (2, 40_001)] {
        let input = random_values(rows * cols, 4, -30.0, 30.0);
        for backend in backends() {
            for options in [SoftmaxOptions::default(), SoftmaxOptions::log()] {
                let expected = backend.softmax_with(&input, rows, cols, &options).unwrap();
                let mut data = input.clone();
                backend
                    .softmax_in_place(&mut data, rows, cols, &options)
                    .unwrap();
                let differs = data
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(
                    differs,
                    None,
                    "{} [{rows}, {cols}] {options:?}",
                    backend.name()
                );
            }
        }
    }
}

#[test]
fn in_place_rejects_wrong_length() {
    for backend in backends() {
        let mut data = vec![0.0; 10];
        let result = backend.softmax_in_place(&mut data, 3, 4, &SoftmaxOptions::default());
        assert!(result.is_err(), "{}", backend.name());
    }
}

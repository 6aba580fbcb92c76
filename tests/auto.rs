//! `Backend::Auto`: whichever backend it picks, results meet the bounds and match that
//! backend's bits.

mod common;

use sigmax::verify::Bound;
use sigmax::{Backend, Op, SoftmaxOptions};

fn auto_backend() -> Backend {
    let gpu = common::gpu_engines(Default::default()).into_iter().next();
    Backend::Auto(Box::new(sigmax::auto::Auto::new(gpu).unwrap()))
}

#[test]
fn auto_results_within_bounds() {
    let backend = auto_backend();
    for (rows, cols) in [(3, 7), (512, 1000)] {
        let input = common::random_values(rows * cols, 9, -30.0, 30.0);
        let expected = sigmax::reference::softmax(&input, rows, cols).unwrap();
        let got = backend.softmax(&input, rows, cols).unwrap();
        let bound = Bound::of(Op::Softmax);
        assert_eq!(
            bound.first_violation(&got, &expected),
            None,
            "[{rows}, {cols}]"
        );

        let expected = sigmax::reference::sigmoid(&input);
        let got = backend.sigmoid(&input).unwrap();
        let bound = Bound::of(Op::Sigmoid);
        assert_eq!(
            bound.first_violation(&got, &expected),
            None,
            "{} elements",
            input.len()
        );
    }
}

#[test]
fn auto_in_place_matches_separate_output() {
    let backend = auto_backend();
    let input = common::random_values(40_000, 10, -30.0, 30.0);
    let options = SoftmaxOptions::log();
    let expected = backend.softmax_with(&input, 40, 1000, &options).unwrap();
    let mut data = input.clone();
    backend
        .softmax_in_place(&mut data, 40, 1000, &options)
        .unwrap();
    assert_eq!(data, expected);
}

//! The f64 reference: every op accumulated in f64 and rounded once to f32. It is the oracle
//! that GPU results are checked against, written for clarity, not speed.

use crate::error::{Error, Result};

/// Sigmoid of one value in f64, in the form that cannot overflow.
fn sigmoid_f64(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    }
}

/// Writes sigmoid(input) into `output`.
pub fn sigmoid_into(input: &[f32], output: &mut [f32]) -> Result<()> {
    check_len("output", output.len(), input.len())?;
    for (y, &x) in output.iter_mut().zip(input) {
        *y = sigmoid_f64(x as f64) as f32;
    }
    Ok(())
}

/// Returns sigmoid(input).
pub fn sigmoid(input: &[f32]) -> Vec<f32> {
    input
        .iter()
        .map(|&x| sigmoid_f64(x as f64) as f32)
        .collect()
}

/// Writes the softmax of each of the `rows` rows of `cols` elements of `input` into `output`.
pub fn softmax_into(input: &[f32], rows: usize, cols: usize, output: &mut [f32]) -> Result<()> {
    let elements = shape_elements(rows, cols)?;
    check_len("input", input.len(), elements)?;
    check_len("output", output.len(), elements)?;
    if elements == 0 {
        return Ok(());
    }
    for (x, y) in input.chunks_exact(cols).zip(output.chunks_exact_mut(cols)) {
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        for (out, &v) in y.iter_mut().zip(x) {
            *out = ((v as f64 - max).exp() / sum) as f32;
        }
    }
    Ok(())
}

/// Returns the softmax of each of the `rows` rows of `cols` elements of `input`.
pub fn softmax(input: &[f32], rows: usize, cols: usize) -> Result<Vec<f32>> {
    let mut output = vec![0.0; input.len()];
    softmax_into(input, rows, cols, &mut output)?;
    Ok(output)
}

/// Returns rows * cols, or an error when it overflows.
pub(crate) fn shape_elements(rows: usize, cols: usize) -> Result<usize> {
    rows.checked_mul(cols)
        .ok_or_else(|| Error::TooLarge(format!("shape [{rows}, {cols}] overflows usize")))
}

pub(crate) fn check_len(name: &str, len: usize, expected: usize) -> Result<()> {
    if len != expected {
        return Err(Error::InvalidArgument(format!(
            "{name} contains {len} elements, but the shape needs {expected}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_matches_closed_forms() {
        assert_eq!(sigmoid(&[0.0]), [0.5]);
        assert_eq!(sigmoid(&[-10_000.0, 10_000.0]), [0.0, 1.0]);
        let expected = 1.0 / (1.0 + (-2.0f64).exp());
        assert_eq!(sigmoid(&[2.0])[0], expected as f32);
    }

    #[test]
    fn softmax_two_class_is_sigmoid() {
        for x in [-30.0f32, -2.5, 0.0, 0.75, 18.0] {
            let p = softmax(&[0.0, x], 1, 2).unwrap();
            assert_eq!(p[1], sigmoid(&[x])[0], "x = {x}");
        }
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let input: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 20.0).collect();
        let output = softmax(&input, 4, 10).unwrap();
        for row in output.chunks(10) {
            let sum: f64 = row.iter().map(|&p| p as f64).sum();
            assert!((sum - 1.0).abs() < 1e-6, "row sums to {sum}");
        }
    }

    #[test]
    fn softmax_rejects_wrong_length() {
        assert!(softmax(&[1.0, 2.0, 3.0], 2, 2).is_err());
    }
}

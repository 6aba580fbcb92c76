//! Error between a result and the reference: max absolute, relative and ULP error, each with
//! the index of the worst element, and the documented bound of each op.

use std::fmt;

use crate::planner::Op;

/// Distance in units in the last place between two f32: the number of representable f32
/// values between them, counting +0 and -0 as one value. NaN against anything is `u32::MAX`
/// unless both are NaN (distance 0).
pub fn ulp_distance(a: f32, b: f32) -> u32 {
    if a.is_nan() || b.is_nan() {
        return if a.is_nan() && b.is_nan() {
            0
        } else {
            u32::MAX
        };
    }
    // Map the sign-magnitude bit patterns onto a monotonic integer line.
    let ordered = |x: f32| {
        let bits = x.to_bits() as i64;
        if bits & 0x8000_0000 != 0 {
            -(bits & 0x7fff_ffff)
        } else {
            bits
        }
    };
    (ordered(a) - ordered(b))
        .unsigned_abs()
        .min(u32::MAX as u64) as u32
}

/// The worst error of each kind, with the flat index of the element where it occurs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Max |got - expected|.
    pub max_abs: f64,
    /// Index of the element with `max_abs`.
    pub max_abs_index: usize,
    /// Max |got - expected| / |expected| over elements whose expected magnitude is at least
    /// the `floor` passed to [`compare`].
    pub max_rel: f64,
    /// Index of the element with `max_rel`.
    pub max_rel_index: usize,
    /// Max ULP distance over elements whose expected magnitude is at least the `floor` passed
    /// to [`compare`].
    pub max_ulp: u32,
    /// Index of the element with `max_ulp`.
    pub max_ulp_index: usize,
}

/// Compares `got` with `expected` element by element. Relative and ULP errors skip elements
/// whose expected magnitude is below `floor`, such as results that an adapter may flush to
/// zero. Both slices must have the same length.
pub fn compare(got: &[f32], expected: &[f32], floor: f32) -> ErrorStats {
    assert_eq!(
        got.len(),
        expected.len(),
        "compared slices differ in length"
    );
    let mut stats = ErrorStats::default();
    for (index, (&g, &e)) in got.iter().zip(expected).enumerate() {
        let abs = if g.is_nan() || e.is_nan() {
            if g.is_nan() && e.is_nan() {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (g as f64 - e as f64).abs()
        };
        if abs > stats.max_abs {
            stats.max_abs = abs;
            stats.max_abs_index = index;
        }
        if e.abs() < floor {
            continue;
        }
        if e != 0.0 && abs / (e as f64).abs() > stats.max_rel {
            stats.max_rel = abs / (e as f64).abs();
            stats.max_rel_index = index;
        }
        let ulp = ulp_distance(g, e);
        if ulp > stats.max_ulp {
            stats.max_ulp = ulp;
            stats.max_ulp_index = index;
        }
    }
    stats
}

/// An accuracy bound: at most `max_ulp` ULP from the reference, counted in ULP of
/// max(|reference|, `ulp_floor`). Where the reference is below `tiny` in magnitude, an
/// absolute error up to `tiny_abs` also passes, because results there may be flushed to zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    /// Max ULP distance.
    pub max_ulp: u32,
    /// Magnitude below which `tiny_abs` also applies.
    pub tiny: f32,
    /// Absolute error that passes where the reference is below `tiny`.
    pub tiny_abs: f32,
    /// Magnitude below which errors count in ULP of this value: 1 for log outputs, whose
    /// error is absolute near 0, and 0 for the others.
    pub ulp_floor: f32,
}

impl Bound {
    /// Returns the documented bound of `op` against the f64 reference, on every backend and
    /// with any temperature, scale and mask:
    ///
    /// | op | bound |
    /// |---|---|
    /// | sigmoid | 2 ULP, or 1e-37 absolute where the reference is below 1e-37 |
    /// | SiLU | 3 ULP, or 1e-37 absolute where the reference is below 1e-37 |
    /// | softmax | 4 ULP, or 1e-37 absolute where the reference is below 1e-30 |
    /// | log-softmax, log-sigmoid, entropy | 4 ULP of max(\|y\|, 1) |
    pub fn of(op: Op) -> Bound {
        let (max_ulp, tiny, ulp_floor) = match op {
            Op::Sigmoid => (2, 1e-37, 0.0),
            Op::Silu => (3, 1e-37, 0.0),
            Op::Softmax => (4, 1e-30, 0.0),
            Op::LogSigmoid | Op::LogSoftmax | Op::Entropy => (4, 0.0, 1.0),
        };
        Bound {
            max_ulp,
            tiny,
            tiny_abs: 1e-37,
            ulp_floor,
        }
    }

    /// Returns the index of the first element of `got` outside the bound, if any.
    pub fn first_violation(&self, got: &[f32], expected: &[f32]) -> Option<usize> {
        got.iter()
            .zip(expected)
            .position(|(&g, &e)| !self.holds(g, e))
    }

    /// Returns the largest error in the units of the bound (ULP, or ULP of `ulp_floor`) with
    /// its index. Elements that pass by the absolute rule for tiny references count as 0.
    pub fn worst(&self, got: &[f32], expected: &[f32]) -> (f64, usize) {
        let mut worst = (0.0, 0);
        for (index, (&g, &e)) in got.iter().zip(expected).enumerate() {
            let error = (g as f64 - e as f64).abs();
            let units = if e.abs() < self.tiny && error <= self.tiny_abs as f64 {
                0.0
            } else if e.abs() < self.ulp_floor {
                error / (self.ulp_floor.next_up() - self.ulp_floor) as f64
            } else {
                ulp_distance(g, e) as f64
            };
            if units > worst.0 {
                worst = (units, index);
            }
        }
        worst
    }

    fn holds(&self, got: f32, expected: f32) -> bool {
        let error = (got as f64 - expected as f64).abs();
        let tiny_and_close = expected.abs() < self.tiny && error <= self.tiny_abs as f64;
        let floor_ulp = (self.ulp_floor.next_up() - self.ulp_floor) as f64;
        let near_floor =
            expected.abs() < self.ulp_floor && error <= self.max_ulp as f64 * floor_ulp;
        tiny_and_close || near_floor || ulp_distance(got, expected) <= self.max_ulp
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ulp_floor > 0.0 {
            return write!(
                f,
                "{} ULP of max(|reference|, {})",
                self.max_ulp, self.ulp_floor
            );
        }
        write!(
            f,
            "{} ULP, or {:e} absolute where the reference is below {:e}",
            self.max_ulp, self.tiny_abs, self.tiny
        )
    }
}

/// Formats a flat index as a multi-dimensional index of a C-order array of `shape`.
pub fn format_index(flat: usize, shape: &[usize]) -> String {
    if shape.len() <= 1 {
        return format!("[{flat}]");
    }
    let mut index = vec![0; shape.len()];
    let mut rest = flat;
    for (axis, &dim) in shape.iter().enumerate().rev() {
        if dim > 0 {
            index[axis] = rest % dim;
            rest /= dim;
        }
    }
    let parts: Vec<String> = index.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_distance_counts_representable_values() {
        assert_eq!(ulp_distance(1.0, 1.0), 0);
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3);
        assert_eq!(ulp_distance(0.0, -0.0), 0);
        assert_eq!(ulp_distance(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulp_distance(f32::NAN, f32::NAN), 0);
        assert_eq!(ulp_distance(f32::NAN, 1.0), u32::MAX);
    }

    #[test]
    fn compare_reports_worst_index() {
        let expected = [1.0, 2.0, 4.0];
        let got = [1.0, 2.5, 4.0];
        let stats = compare(&got, &expected, 0.0);
        assert_eq!(stats.max_abs, 0.5);
        assert_eq!(stats.max_abs_index, 1);
        assert_eq!(stats.max_rel, 0.25);
        assert_eq!(stats.max_ulp_index, 1);
    }

    #[test]
    fn compare_skips_relative_errors_below_floor() {
        let stats = compare(&[0.0, 1.0], &[1e-40, 1.0], 1e-37);
        assert_eq!(stats.max_rel, 0.0);
        assert_eq!(stats.max_ulp, 0);
        assert!(stats.max_abs > 0.0);
    }

    #[test]
    fn bound_is_absolute_below_tiny() {
        let bound = Bound {
            max_ulp: 2,
            tiny: 1e-30,
            tiny_abs: 1e-37,
            ulp_floor: 0.0,
        };
        assert!(bound.first_violation(&[0.0], &[1e-38]).is_none());
        assert!(bound.first_violation(&[0.0], &[1e-36]).is_some());
        assert_eq!(bound.first_violation(&[1.0, 0.5], &[1.0, 0.25]), Some(1));
    }

    #[test]
    fn log_bound_counts_ulp_of_one_near_zero() {
        let bound = Bound::of(Op::LogSoftmax);
        let ulp_of_one = 1.0f32.next_up() - 1.0;
        assert!(bound.first_violation(&[4.0 * ulp_of_one], &[0.0]).is_none());
        assert!(bound.first_violation(&[5.0 * ulp_of_one], &[0.0]).is_some());
        assert!(
            bound
                .first_violation(&[f32::NEG_INFINITY], &[f32::NEG_INFINITY])
                .is_none()
        );
    }

    #[test]
    fn format_index_uses_c_order() {
        assert_eq!(format_index(13, &[4, 10]), "[1, 3]");
        assert_eq!(format_index(7, &[9]), "[7]");
        assert_eq!(format_index(23, &[2, 3, 4]), "[1, 2, 3]");
    }
}

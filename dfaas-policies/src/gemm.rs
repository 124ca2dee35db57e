//! `C = α·op(A)·op(B) + β·C` for row-major `f32` buffers, through
//! matrixmultiply. The only `unsafe` of the crate: the pointer call is made
//! after checking (with checked arithmetic) that every index it can touch
//! lies inside its slice.

use crate::error::{ShapeError, product};

/// How a buffer is read as a matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The buffer is the `rows × cols` matrix, row-major.
    Plain,
    /// The buffer holds the transpose (`cols × rows`, row-major).
    Transposed,
}

/// Strides `(row, column)` of a `rows × cols` operand stored as `op` says.
fn strides(op: Op, rows: usize, cols: usize) -> (usize, usize) {
    match op {
        Op::Plain => (cols, 1),
        Op::Transposed => (1, rows),
    }
}

/// `c[m×n] = alpha·op(a)[m×k]·op(b)[k×n] + beta·c` (row-major `c`).
///
/// # Errors
/// [`ShapeError`] when a size product overflows or a slice is shorter
/// than its matrix (checked before the `unsafe` call; nothing is written).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    op_a: Op,
    b: &[f32],
    op_b: Op,
    beta: f32,
    c: &mut [f32],
) -> Result<(), ShapeError> {
    for (field, rows, cols, len) in [
        ("a", m, k, a.len()),
        ("b", k, n, b.len()),
        ("c", m, n, c.len()),
    ] {
        let needed = product(field, &[rows, cols])?;
        if len < needed {
            return Err(ShapeError::Length {
                field,
                expected: needed,
                got: len,
            });
        }
    }
    // Strides are passed as isize: every size fits (a slice never holds
    // more than isize::MAX elements).
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (rsa, csa) = strides(op_a, m, k);
    let (rsb, csb) = strides(op_b, k, n);
    #[allow(unsafe_code)]
    // SAFETY: with the strides above, the largest index read from `a` is
    // (m−1)·rsa + (k−1)·csa = m·k − 1 < a.len() (both layouts), likewise
    // k·n − 1 < b.len(), and the largest written to `c` is m·n − 1 < c.len();
    // `c` does not alias `a` or `b` (exclusive borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_layouts_match_a_naive_product() {
        let (m, k, n) = (3, 4, 2);
        let a: Vec<f32> = (0..m * k).map(|v| v as f32 * 0.5 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|v| 2.0 - v as f32 * 0.25).collect();
        let at = |i: usize, j: usize, op: Op, rows: usize, cols: usize, data: &[f32]| match op {
            Op::Plain => data[i * cols + j],
            Op::Transposed => data[j * rows + i],
        };
        for op_a in [Op::Plain, Op::Transposed] {
            for op_b in [Op::Plain, Op::Transposed] {
                let mut c = vec![1.0f32; m * n];
                gemm(m, k, n, 2.0, &a, op_a, &b, op_b, 0.5, &mut c).unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = 0.5
                            + 2.0
                                * (0..k)
                                    .map(|l| at(i, l, op_a, m, k, &a) * at(l, j, op_b, k, n, &b))
                                    .sum::<f32>();
                        assert!((c[i * n + j] - want).abs() < 1e-5, "{op_a:?} {op_b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_that_overflow_or_do_not_fit_are_errors() {
        let (a, b) = ([1f32; 4], [1f32; 4]);
        let mut c = [0f32; 4];
        // m·k wraps to 0 in usize: it must not pass the bounds check.
        let huge = 1usize << (usize::BITS / 2);
        assert!(matches!(
            gemm(
                huge,
                huge,
                1,
                1.0,
                &a,
                Op::Plain,
                &b,
                Op::Plain,
                0.0,
                &mut c
            ),
            Err(ShapeError::Overflow { field: "a", .. })
        ));
        assert_eq!(
            gemm(2, 3, 2, 1.0, &a, Op::Plain, &b, Op::Plain, 0.0, &mut c),
            Err(ShapeError::Length {
                field: "a",
                expected: 6,
                got: 4
            })
        );
        assert_eq!(c, [0.0; 4], "nothing written");
    }
}

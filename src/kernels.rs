//! The ground floor: numeric kernels the models and the stores share, with
//! no other lore module beneath them. The dot product (vector search and
//! attention), and the encoder's hot path: a safe front to the `gemm`
//! crate (the same GEMM candle uses, with its AVX-512 kernels enabled at
//! runtime), and row-wise kernels written so the compiler vectorises them (no
//! branches, no libm calls): erf-GELU, softmax and layer norm, on a
//! polynomial `exp`. candle's erf is a scalar libm call per element, and its
//! element-wise ops each allocate and make a pass; fusing them here is what
//! lifts the encoder above the stock candle BERT.

use rayon::prelude::*;

/// Dot product over 16 independent lanes, so the compiler vectorises it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Elements per parallel task.
const TASK: usize = 16 * 1024;

/// `exp(x)` for f32 by range reduction and a degree-6 polynomial; relative
/// error below 2e-7 on the range the encoder uses.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Ties-to-even rounds in one vector instruction; `round` does not.
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    // Cody–Waite split of ln 2 keeps the reduction exact enough.
    let r = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (0.166_666_67
                    + r * (0.041_666_668 + r * (0.008_333_334 + r * 0.001_388_889)))));
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `erf(x)` (Abramowitz & Stegun 7.1.26, absolute error below 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Runs `$body` compiled for AVX-512 when the CPU has it (16 lanes instead
/// of the 8 the x86-64-v3 baseline gives), else as built.
macro_rules! dispatch {
    ($generic:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            #[target_feature(enable = "avx512f")]
            unsafe fn wide(xs: &mut [f32], n: usize) {
                $generic(xs, n)
            }
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { wide($($arg),*) };
        }
        $generic($($arg),*)
    }};
}

/// `x ← gelu_erf(x)`, in parallel.
pub fn gelu(xs: &mut [f32]) {
    xs.par_chunks_mut(TASK).for_each(|block| {
        let len = block.len();
        gelu_block(block, len)
    });
}

fn gelu_block(xs: &mut [f32], len: usize) {
    dispatch!(gelu_generic(xs, len))
}

#[inline(always)]
fn gelu_generic(xs: &mut [f32], _len: usize) {
    for x in xs {
        let v = *x;
        *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of each row of `cols` columns, in place (serial: called per
/// attention head, which is already a parallel task).
pub fn softmax_rows(xs: &mut [f32], cols: usize) {
    dispatch!(softmax_generic(xs, cols))
}

#[inline(always)]
fn softmax_generic(xs: &mut [f32], cols: usize) {
    for row in xs.chunks_exact_mut(cols) {
        let max = lanes(row, f32::NEG_INFINITY, f32::max);
        // Separate passes without a loop-carried sum, so each vectorises.
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let inv = 1.0 / lanes(row, 0.0, |a, b| a + b);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Reduces `xs` with `op` over 16 independent lanes (vectorisable), then
/// across the lanes.
#[inline(always)]
fn lanes(xs: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    lanes_map(xs, init, |x| x, op)
}

/// [`lanes`] over `map(x)`.
#[inline(always)]
fn lanes_map(xs: &[f32], init: f32, map: impl Fn(f32) -> f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let mut blocks = xs.chunks_exact(16);
    for block in &mut blocks {
        for (a, x) in acc.iter_mut().zip(block) {
            *a = op(*a, map(*x));
        }
    }
    let tail = blocks.remainder().iter().fold(init, |a, x| op(a, map(*x)));
    acc.iter().fold(tail, |a, x| op(a, *x))
}

/// Layer norm of each row of `gamma.len()` columns, in place, in parallel.
pub fn layer_norm_rows(xs: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let cols = gamma.len();
    let rows_per_task = (TASK / cols).max(1);
    xs.par_chunks_mut(rows_per_task * cols).for_each(|block| {
        for row in block.chunks_exact_mut(cols) {
            let mean = lanes(row, 0.0, |a, b| a + b) / cols as f32;
            row.iter_mut().for_each(|x| *x -= mean);
            let var = lanes_map(row, 0.0, |x| x * x, |a, b| a + b) / cols as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *x = *x * inv * g + b;
            }
        }
    });
}

/// Fills each row of `dst` with `bias`, plus the matching row of `residual`
/// when given: the starting value a GEMM then accumulates onto.
pub fn fill_rows(dst: &mut [f32], bias: &[f32], residual: Option<&[f32]>) {
    let cols = bias.len();
    let rows_per_task = (TASK / cols).max(1);
    let block = rows_per_task * cols;
    match residual {
        Some(residual) => dst
            .par_chunks_mut(block)
            .zip(residual.par_chunks(block))
            .for_each(|(d, r)| {
                for (drow, rrow) in d.chunks_exact_mut(cols).zip(r.chunks_exact(cols)) {
                    for ((x, b), r) in drow.iter_mut().zip(bias).zip(rrow) {
                        *x = b + r;
                    }
                }
            }),
        None => dst.par_chunks_mut(block).for_each(|d| {
            for drow in d.chunks_exact_mut(cols) {
                drow.copy_from_slice(bias);
            }
        }),
    }
}

/// A read-only matrix view: element (i, j) is at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// Backing data.
    pub data: &'a [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// A dense row-major `rows × cols` matrix.
    pub fn dense(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// Columns `start..start + cols` of rows `first..first + rows`.
    pub fn block(self, first: usize, rows: usize, start: usize, cols: usize) -> Self {
        View {
            data: &self.data[first * self.row_stride + start * self.col_stride..],
            rows,
            cols,
            ..self
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        View {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn last_index(&self) -> usize {
        (self.rows.max(1) - 1) * self.row_stride + (self.cols.max(1) - 1) * self.col_stride
    }
}

/// `dst (+)= a × b`, where `dst` is row-major with `dst_stride` between rows;
/// with `accumulate` the product is added to what `dst` holds. `threads` = 1
/// runs on the calling thread.
pub fn matmul(
    dst: &mut [f32],
    dst_stride: usize,
    a: View<'_>,
    b: View<'_>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_stride + n <= dst.len(),
        "dst too small"
    );
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "view out of bounds"
    );
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every element gemm touches inside the
    // three slices, and `dst` is borrowed mutably so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            assert!(rel < 1e-6, "x={x} rel={rel}");
        }
    }

    #[test]
    fn gelu_matches_the_exact_formula() {
        let mut xs: Vec<f32> = (-1000..1000).map(|i| i as f32 / 100.0).collect();
        let exact: Vec<f64> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2))
            })
            .collect();
        gelu(&mut xs);
        for (got, want) in xs.iter().zip(exact) {
            assert!((*got as f64 - want).abs() < 2e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn matmul_matches_naive_with_strides_and_accumulation() {
        let a: Vec<f32> = (0..12).map(|i| i as f32).collect(); // 3×4
        let b: Vec<f32> = (0..8).map(|i| (i as f32) * 0.5).collect(); // 4×2
        let mut dst = vec![1.0; 6];
        matmul(
            &mut dst,
            2,
            View::dense(&a, 3, 4),
            View::dense(&b, 4, 2),
            true,
            1,
        );
        for i in 0..3 {
            for j in 0..2 {
                let want: f32 = 1.0 + (0..4).map(|p| a[i * 4 + p] * b[p * 2 + j]).sum::<f32>();
                assert_eq!(dst[i * 2 + j], want);
            }
        }
        // a × aᵀ through a transposed view.
        let mut gram = vec![0.0; 9];
        let view = View::dense(&a, 3, 4);
        matmul(&mut gram, 3, view, view.t(), false, 2);
        assert_eq!(gram[1], (0..4).map(|p| a[p] * a[4 + p]).sum::<f32>());
    }

    #[test]
    fn softmax_and_layer_norm_rows() {
        let mut xs = vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
        softmax_rows(&mut xs, 3);
        assert!((xs[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((xs[3] - 1.0 / 3.0).abs() < 1e-6);
        let mut ys = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm_rows(&mut ys, &[1.0; 4], &[0.0; 4], 0.0);
        assert!(ys.iter().sum::<f32>().abs() < 1e-5);
        assert!((ys.iter().map(|y| y * y).sum::<f32>() / 4.0 - 1.0).abs() < 1e-4);
    }

    /// Reference erf by Simpson integration of exp(-t²) in f64.
    fn libm_erf(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut sum = f(0.0) + f(x);
        for i in 1..n {
            let w = if i % 2 == 1 { 4.0 } else { 2.0 };
            sum += w * f(i as f64 * h);
        }
        sum * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }
}

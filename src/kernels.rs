//! The ground floor: numeric kernels the models and the stores share, with
//! no other lore module beneath them. The dot product (vector search and
//! attention), and the encoder's hot path: a safe front to the `gemm`
//! crate (the same GEMM candle uses, with its AVX-512 kernels enabled at
//! runtime), and row-wise kernels written so the compiler vectorises them (no
//! branches, no libm calls): erf-GELU, softmax and layer norm, on a
//! polynomial `exp`. candle's erf is a scalar libm call per element, and its
//! element-wise ops each allocate and make a pass; fusing them here is what
//! lifts the encoder above the stock candle BERT. The 8-bit products
//! (`Int8Weights`, `matmul_int8`, `matvec_int8`) sum exactly in i32 on AMX
//! tiles where the CPU and the OS allow them (`tdpbusd`, through inline
//! assembly), else with AVX-512 VNNI, else in portable code: the same
//! integers everywhere. A decoder prompt's causal attention
//! (`attend_causal`) lives here too.

mod q4k;
mod q5_0;

pub use q4k::{Q4kWeights, blocks_ready, matvec_q4k};
pub use q5_0::{Q50Weights, matvec_q5_0};

use std::ops::Range;
use std::sync::Mutex;

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

/// `exp(x)` for f32 by range reduction and a degree-5 polynomial (a
/// Chebyshev fit on [−ln 2 / 2, ln 2 / 2]); relative error below 3e-7 on
/// the range the encoder uses.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // n = round(x · log2 e), ties to even, as a float and as an integer,
    // both read off 1.5 · 2^23 + n (see `ROUNDER`): `as i32` would check
    // each lane for NaN and range one by one and undo the vectorising.
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    // Cody–Waite split of ln 2 keeps the reduction exact enough.
    let r = n.mul_add(-1.428_606_8e-6, n.mul_add(-0.693_145_75, x));
    // Written as fused multiply-adds: Rust never fuses `a * b + c` itself.
    let p = 0.008_371_912_f32;
    let p = p.mul_add(r, 0.041_894_703);
    let p = p.mul_add(r, 0.166_664_56);
    let p = p.mul_add(r, 0.499_990_86);
    let p = p.mul_add(r, 1.0);
    let p = p.mul_add(r, 1.000_000_1);
    let scale = f32::from_bits(rounded_bits(shifted).wrapping_add(127) << 23);
    p * scale
}

/// [`exp`] to bf16's precision (relative error below 5e-4, where bf16
/// keeps 8 bits) for `x ≤ 0`: a degree-3 polynomial and one term of ln 2,
/// for attention's weights on AMX.
#[inline(always)]
fn exp_coarse(x: f32) -> f32 {
    // Softmax's arguments are at most 0: only the floor needs a clamp.
    let x = fmax(x, -87.0);
    let shifted = x.mul_add(std::f32::consts::LOG2_E, ROUNDER);
    let n = shifted - ROUNDER;
    let r = n.mul_add(-std::f32::consts::LN_2, x);
    let p = 0.167_781_98_f32;
    let p = p.mul_add(r, 0.504_304_5);
    let p = p.mul_add(r, 0.999_971_3);
    let p = p.mul_add(r, 0.999_948_2);
    let scale = f32::from_bits(rounded_bits(shifted).wrapping_add(127) << 23);
    p * scale
}

/// 1.5 · 2^23: a float in [2^23, 2^24) has a spacing of 1, so adding this
/// to any `v` with |v| < 2^22 rounds `v` to an integer (ties to even) and
/// leaves it, two's complement, in the low bits of the sum.
const ROUNDER: f32 = 12_582_912.0;

/// The integer `round(v)` out of `v + ROUNDER` (wrapping, as u32 bits).
#[inline(always)]
fn rounded_bits(shifted: f32) -> u32 {
    shifted.to_bits().wrapping_sub(ROUNDER.to_bits())
}

/// `erf(x)` as a rational function of x on [−4, 4] (±1 beyond, to f32
/// precision), the fit Eigen uses: one division and no `exp`; absolute
/// error below 1e-6.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p.mul_add(x2, 2.770_681_4e-8);
    let p = p.mul_add(x2, -2.101_024e-6);
    let p = p.mul_add(x2, -5.692_506_4e-5);
    let p = p.mul_add(x2, -7.349_906e-4);
    let p = p.mul_add(x2, -2.954_600_2e-3);
    let p = p.mul_add(x2, -1.609_603_3e-2);
    let q = -1.456_607_2e-5_f32;
    let q = q.mul_add(x2, -2.133_740_6e-4);
    let q = q.mul_add(x2, -1.682_827e-3);
    let q = q.mul_add(x2, -7.373_329e-3);
    let q = q.mul_add(x2, -1.426_474e-2);
    x * p / q
}

/// Defines `fn $name` to run `$generic` compiled for AVX-512 when the CPU
/// has it (16 lanes instead of the 8 the x86-64-v3 baseline gives), else
/// as built.
macro_rules! wide {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $generic:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                #[target_feature(enable = "avx512f")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                // SAFETY: the CPU supports AVX-512F, checked just above.
                return unsafe { wide($($arg),*) };
            }
            $generic($($arg),*)
        }
    };
}

/// [`exp_rows`] that leaves `xs` as it was and writes the exponentials in
/// bf16 to `out`'s rows of `stride` (zero past `cols`): attention's
/// weights, ready for [`matmul_bf16`].
pub fn exp_rows_bf16(xs: &[f32], cols: usize, out: &mut [u16], stride: usize, inv: &mut [f32]) {
    assert!(cols <= stride && xs.len() / cols.max(1) <= out.len() / stride.max(1));
    #[cfg(target_arch = "x86_64")]
    if bf16x::ready() {
        // SAFETY: the CPU has the instructions (checked); the shapes are
        // asserted above.
        return unsafe { bf16x::exp_rows(xs, cols, out, stride, inv) };
    }
    exp_rows_bf16_wide(xs, cols, out, stride, inv);
}

wide!(fn exp_rows_bf16_wide(xs: &[f32], cols: usize, out: &mut [u16], stride: usize, inv: &mut [f32]) = exp_rows_bf16_generic);

#[inline(always)]
fn exp_rows_bf16_generic(xs: &[f32], cols: usize, out: &mut [u16], stride: usize, inv: &mut [f32]) {
    let rows = xs
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(stride))
        .zip(inv);
    for ((row, out), inv) in rows {
        let max = lanes(row, f32::NEG_INFINITY, fmax);
        let mut acc = [0.0f32; 16];
        let mut blocks = row.chunks_exact(16);
        let mut outs = out[..cols].chunks_exact_mut(16);
        for (block, o) in (&mut blocks).zip(&mut outs) {
            for ((a, x), o) in acc.iter_mut().zip(block).zip(o) {
                let e = exp_coarse(*x - max);
                *a += e;
                *o = bf16_bits(e);
            }
        }
        let tail = blocks.remainder();
        let mut last = [f32::NEG_INFINITY; 16];
        last[..tail.len()].copy_from_slice(tail);
        for (a, x) in acc.iter_mut().zip(&mut last) {
            *x = exp_coarse(*x - max);
            *a += *x;
        }
        for (o, x) in outs.into_remainder().iter_mut().zip(last) {
            *o = bf16_bits(x);
        }
        out[cols..].fill(0);
        *inv = 1.0 / acc.iter().sum::<f32>();
    }
}

/// `max(a, b)` as one `maxps`: the encoder's values are never NaN, and
/// `f32::max`'s NaN rule costs a compare and a blend per lane.
#[inline(always)]
fn fmax(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `min(a, b)` as one `minps` (see [`fmax`]).
#[inline(always)]
fn fmin(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

/// `x ← gelu_erf(x)`, in parallel or on this thread.
pub fn gelu(xs: &mut [f32], parallel: bool) {
    if parallel {
        xs.par_chunks_mut(TASK).for_each(gelu_block);
    } else {
        xs.chunks_mut(TASK).for_each(gelu_block);
    }
}

wide!(fn gelu_block(xs: &mut [f32]) = gelu_generic);

#[inline(always)]
fn gelu_generic(xs: &mut [f32]) {
    for x in xs {
        let v = *x;
        *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of each row of `cols` columns, in place (serial: called per
/// attention head, which is already a parallel task).
pub fn softmax_rows(xs: &mut [f32], cols: usize) {
    for row in xs.chunks_exact_mut(cols) {
        let mut inv = [0.0];
        exp_rows(row, cols, &mut inv);
        row.iter_mut().for_each(|x| *x *= inv[0]);
    }
}

wide!(
    /// Softmax without its last step: each row of `cols` columns becomes
    /// `exp(x − max)`, and `inv` gets one over each row's sum. Attention
    /// scales its `d` outputs per row by `inv` rather than its `cols`
    /// weights.
    pub fn exp_rows(xs: &mut [f32], cols: usize, inv: &mut [f32]) = exp_rows_generic
);

#[inline(always)]
fn exp_rows_generic(xs: &mut [f32], cols: usize, inv: &mut [f32]) {
    for (row, inv) in xs.chunks_exact_mut(cols).zip(inv) {
        let max = lanes(row, f32::NEG_INFINITY, fmax);
        // The sum over 16 lanes, written out so the exponentials and the
        // sum vectorise in one pass.
        let mut acc = [0.0f32; 16];
        let mut blocks = row.chunks_exact_mut(16);
        for block in &mut blocks {
            for (a, x) in acc.iter_mut().zip(block) {
                *x = exp(*x - max);
                *a += *x;
            }
        }
        // The last partial block, padded with −∞ (whose exponential is
        // under 1e-37), also 16 lanes wide.
        let tail = blocks.into_remainder();
        let mut last = [f32::NEG_INFINITY; 16];
        last[..tail.len()].copy_from_slice(tail);
        for (a, x) in acc.iter_mut().zip(&mut last) {
            *x = exp(*x - max);
            *a += *x;
        }
        tail.copy_from_slice(&last[..tail.len()]);
        *inv = 1.0 / acc.iter().sum::<f32>();
    }
}

/// The smallest and largest of `xs` and 0, in one pass over 16 lanes.
#[inline(always)]
fn range(xs: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0.0f32; 16], [0.0f32; 16]);
    let mut blocks = xs.chunks_exact(16);
    let mut step = |block: &[f32]| {
        for ((l, h), &x) in lo.iter_mut().zip(&mut hi).zip(block) {
            *l = fmin(*l, x);
            *h = fmax(*h, x);
        }
    };
    for block in &mut blocks {
        step(block);
    }
    let mut last = [0.0; 16];
    last[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    step(&last);
    (
        lo.into_iter().fold(0.0, fmin),
        hi.into_iter().fold(0.0, fmax),
    )
}

/// Reduces `xs` with `op` over 16 independent lanes (vectorisable), then
/// across the lanes.
#[inline(always)]
fn lanes(xs: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    lanes_map(xs, init, |x| x, op)
}

/// [`lanes`] over `map(x)`. The last partial block is padded with `init`,
/// so every step runs 16 lanes wide: `map(init)` must leave `op`'s result
/// as it is (as 0 does for a sum, of squares or not, or a largest
/// magnitude).
#[inline(always)]
fn lanes_map(xs: &[f32], init: f32, map: impl Fn(f32) -> f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let mut blocks = xs.chunks_exact(16);
    let mut step = |block: &[f32]| {
        for (a, x) in acc.iter_mut().zip(block) {
            *a = op(*a, map(*x));
        }
    };
    for block in &mut blocks {
        step(block);
    }
    let mut last = [init; 16];
    last[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    step(&last);
    acc.iter().fold(init, |a, x| op(a, *x))
}

/// Layer norm of each row of `gamma.len()` columns, in place, in parallel
/// or on this thread.
pub fn layer_norm_rows(xs: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32, parallel: bool) {
    let cols = gamma.len();
    let rows_per_task = (TASK / cols).max(1);
    let run = |block: &mut [f32]| {
        for row in block.chunks_exact_mut(cols) {
            let mean = lanes(row, 0.0, |a, b| a + b) / cols as f32;
            row.iter_mut().for_each(|x| *x -= mean);
            let var = lanes_map(row, 0.0, |x| x * x, |a, b| a + b) / cols as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((x, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                *x = *x * inv * g + b;
            }
        }
    };
    if parallel {
        xs.par_chunks_mut(rows_per_task * cols).for_each(run);
    } else {
        xs.chunks_mut(rows_per_task * cols).for_each(run);
    }
}

/// Fills each row of `dst` with `bias`, plus the matching row of `residual`
/// when given: the starting value a GEMM then accumulates onto. In
/// parallel or on this thread.
pub fn fill_rows(dst: &mut [f32], bias: &[f32], residual: Option<&[f32]>, parallel: bool) {
    let cols = bias.len();
    let rows_per_task = (TASK / cols).max(1);
    let block = rows_per_task * cols;
    let fill = |(d, r): (&mut [f32], Option<&[f32]>)| match r {
        Some(r) => {
            for (drow, rrow) in d.chunks_exact_mut(cols).zip(r.chunks_exact(cols)) {
                for ((x, b), r) in drow.iter_mut().zip(bias).zip(rrow) {
                    *x = b + r;
                }
            }
        }
        None => d
            .chunks_exact_mut(cols)
            .for_each(|row| row.copy_from_slice(bias)),
    };
    match (residual, parallel) {
        (Some(residual), true) => dst
            .par_chunks_mut(block)
            .zip(residual.par_chunks(block))
            .for_each(|(d, r)| fill((d, Some(r)))),
        (None, true) => dst.par_chunks_mut(block).for_each(|d| fill((d, None))),
        (Some(residual), false) => dst
            .chunks_mut(block)
            .zip(residual.chunks(block))
            .for_each(|(d, r)| fill((d, Some(r)))),
        (None, false) => dst.chunks_mut(block).for_each(|d| fill((d, None))),
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

    /// Element `(i, j)`.
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
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

/// A weight matrix in int8: one
/// symmetric scale per output, each output's sum of quantized weights
/// (which undoes the shift that makes the inputs unsigned), and the
/// weights packed for VNNI: for each block of 16 outputs and each group of
/// 4 inputs, 64 bytes holding the 4 weights of output 0, then output 1...
/// A quarter of the f32 bytes, and four times the multiply-adds per
/// instruction.
#[derive(Debug, PartialEq)]
pub struct Int8Weights {
    packed: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    /// Inputs per output, and the same rounded up to a group of 4.
    k: usize,
    groups: usize,
}

/// Outputs per packed block (the i32 lanes of one register).
const OUT_LANES: usize = 16;

impl Int8Weights {
    /// `w`, row-major `[out, k]`, quantized row by row.
    pub fn new(w: &[f32], k: usize) -> Int8Weights {
        assert!(
            k > 0 && w.len().is_multiple_of(k),
            "weights are not rows of {k}"
        );
        let mut weights = Int8Weights::zeros(w.len() / k, k);
        weights.set_rows(0, w);
        weights
    }

    /// `n` outputs of `k` inputs, read `block` rows at a time (a multiple
    /// of 16), the blocks in parallel: `read(first, count)` returns rows
    /// `first..first + count`, row-major. The weights are never whole in
    /// f32, which for a vocabulary-sized matrix is hundreds of megabytes.
    pub fn from_blocks<E: Send>(
        n: usize,
        k: usize,
        block: usize,
        read: impl Fn(usize, usize) -> std::result::Result<Vec<f32>, E> + Sync,
    ) -> std::result::Result<Int8Weights, E> {
        assert!(
            k > 0 && block > 0 && block.is_multiple_of(OUT_LANES),
            "empty rows, or blocks that split a group of outputs"
        );
        let mut weights = Int8Weights::zeros(n, k);
        let block_bytes = weights.groups * 64 * (block / OUT_LANES);
        weights
            .packed
            .par_chunks_mut(block_bytes)
            .zip(weights.scales.par_chunks_mut(block))
            .zip(weights.sums.par_chunks_mut(block))
            .enumerate()
            .try_for_each(|(i, ((packed, scales), sums))| {
                let first = i * block;
                let count = scales.len();
                let rows = read(first, count)?;
                assert_eq!(rows.len(), count * k, "a block of the wrong size");
                quantize_rows(packed, scales, sums, &rows, k);
                Ok(())
            })?;
        Ok(weights)
    }

    /// Writes the weights as they are packed, little-endian: inputs,
    /// outputs and packed bytes as u64, then the packed bytes, the scales
    /// and the sums. [`Int8Weights::read_from`] reads them back.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for v in [self.k, self.scales.len(), self.packed.len()] {
            out.write_all(&(v as u64).to_le_bytes())?;
        }
        out.write_all(bytemuck::cast_slice(&self.packed))?;
        for v in &self.scales {
            out.write_all(&v.to_le_bytes())?;
        }
        for v in &self.sums {
            out.write_all(&v.to_le_bytes())?;
        }
        Ok(())
    }

    /// Reads what [`Int8Weights::write_to`] wrote, taking at most `limit`
    /// bytes: a header whose sizes disagree with each other or exceed
    /// `limit` is an error before anything is allocated.
    pub fn read_from(input: &mut impl std::io::Read, limit: u64) -> std::io::Result<Int8Weights> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut word = [0u8; 8];
        let mut header = [0u64; 3];
        for v in &mut header {
            input.read_exact(&mut word)?;
            *v = u64::from_le_bytes(word);
        }
        let [k, n, packed] = header;
        let need = 24u64
            .checked_add(packed)
            .and_then(|b| b.checked_add(n.checked_mul(8)?))
            .ok_or_else(|| bad("sizes overflow"))?;
        if k == 0 || n == 0 || need > limit {
            return Err(bad("sizes past the end of the file"));
        }
        let (k, n) = (k as usize, n as usize);
        let mut weights = Int8Weights::zeros(n, k);
        if weights.packed.len() as u64 != packed {
            return Err(bad("packed bytes of another shape"));
        }
        input.read_exact(bytemuck::cast_slice_mut(&mut weights.packed))?;
        let mut four = [0u8; 4];
        for v in &mut weights.scales {
            input.read_exact(&mut four)?;
            *v = f32::from_le_bytes(four);
        }
        for v in &mut weights.sums {
            input.read_exact(&mut four)?;
            *v = i32::from_le_bytes(four);
        }
        Ok(weights)
    }

    /// Bytes [`Int8Weights::write_to`] writes.
    pub fn stored_bytes(&self) -> u64 {
        24 + self.packed.len() as u64 + 8 * self.scales.len() as u64
    }

    /// `n` outputs of zero weights, padded to whole tiles of blocks.
    fn zeros(n: usize, k: usize) -> Int8Weights {
        let groups = k.div_ceil(4);
        let blocks = n.div_ceil(OUT_LANES * BLOCKS) * BLOCKS;
        Int8Weights {
            packed: vec![0i8; blocks * groups * 64],
            scales: vec![1.0; n],
            sums: vec![0; n],
            k,
            groups,
        }
    }

    /// Quantizes `rows` (row-major) into outputs `first..`, where `first`
    /// starts a group of 16 outputs.
    fn set_rows(&mut self, first: usize, rows: &[f32]) {
        debug_assert!(first.is_multiple_of(OUT_LANES));
        let count = rows.len() / self.k;
        let start = first / OUT_LANES * self.groups * 64;
        let (scales, sums) = (
            &mut self.scales[first..first + count],
            &mut self.sums[first..first + count],
        );
        quantize_rows(&mut self.packed[start..], scales, sums, rows, self.k);
    }

    /// Outputs: rows of the weight.
    pub fn outputs(&self) -> usize {
        self.scales.len()
    }

    /// Inputs per output: columns of the weight.
    pub fn inputs(&self) -> usize {
        self.k
    }
}

/// `out = round(row / scale)` in -127..=127, with the scale that maps the
/// largest magnitude to 127 (returned; 1 for a row of zeros).
fn quantize(row: &[f32], out: &mut [i8]) -> f32 {
    let max = lanes_map(row, 0.0, f32::abs, f32::max);
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let inv = 1.0 / scale;
    for (o, &v) in out.iter_mut().zip(row) {
        // Rounded through `ROUNDER` (the low byte of the wrapped integer
        // is the value in two's complement): `as i8` on a float would not
        // vectorise.
        *o = rounded_bits((v * inv).clamp(-127.0, 127.0) + ROUNDER) as i8;
    }
    scale
}

/// Quantizes `rows` (row-major, `k` columns) into packed groups of 16
/// outputs from the start of `packed`, with each output's scale and sum;
/// the groups of 16 run in parallel.
fn quantize_rows(packed: &mut [i8], scales: &mut [f32], sums: &mut [i32], rows: &[f32], k: usize) {
    let groups = k.div_ceil(4);
    let block_bytes = groups * 64;
    packed
        .par_chunks_mut(block_bytes)
        .zip(scales.par_chunks_mut(OUT_LANES))
        .zip(sums.par_chunks_mut(OUT_LANES))
        .zip(rows.par_chunks(OUT_LANES * k))
        .for_each(|(((packed, scales), sums), rows)| {
            let mut q = vec![0i8; groups * 4];
            for (lane, row) in rows.chunks_exact(k).enumerate() {
                scales[lane] = quantize(row, &mut q[..k]);
                sums[lane] = q[..k].iter().map(|&v| i32::from(v)).sum();
                for (g, four) in q.chunks_exact(4).enumerate() {
                    packed[g * 64 + lane * 4..][..4].copy_from_slice(four);
                }
            }
        });
}

wide!(
    /// `out = round(row / scale) + zero` in 0..=255 over the row's own
    /// range, which always holds 0 exactly; returns `(scale, zero)`.
    fn quantize_unsigned(row: &[f32], out: &mut [u8]) -> (f32, i32) = quantize_unsigned_generic
);

#[inline(always)]
fn quantize_unsigned_generic(row: &[f32], out: &mut [u8]) -> (f32, i32) {
    let (lo, hi) = range(row);
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
    let inv = 1.0 / scale;
    for (o, &v) in out.iter_mut().zip(row) {
        // Rounded through `ROUNDER` (in 0..=255, so the low byte holds it):
        // `as u8` would not vectorise.
        *o = rounded_bits((v * inv + zero).clamp(0.0, 255.0) + ROUNDER) as u8;
    }
    (scale, zero as i32)
}

/// What an 8-bit product lands on.
#[derive(Clone, Copy)]
pub enum Onto<'a> {
    /// `dst` as it stands: `dst += x × wᵀ`.
    Dst,
    /// A bias per output, plus a matrix the shape of `dst` when given:
    /// `dst = bias + residual + x × wᵀ`, written in the same pass as the
    /// product, so `dst` is never read (a batch's outputs are far bigger
    /// than the caches; a separate fill would read them back from memory).
    Bias(&'a [f32], Option<&'a [f32]>),
}

/// `x × wᵀ` onto `onto` in 8 bits: each row of `x` (`m × k`) is quantized
/// to unsigned bytes over its own range, the weights to signed bytes per
/// output; products are summed exactly in i32, then scaled back.
/// The integer sums are the same on every CPU; AVX-512 VNNI computes them
/// fastest. With `parallel`, the outputs are shared among rayon's threads
/// in spans of whole tiles, each over every row: each thread reads its
/// share of the weights, a call of a few rows (a prompt's last words)
/// runs on every core, and no thread is left with a short block of rows.
/// Without, on the calling thread (one sequence of a batch per core).
pub fn matmul_int8(dst: &mut [f32], x: &[f32], w: &Int8Weights, parallel: bool, onto: Onto<'_>) {
    let (k, n) = (w.k, w.outputs());
    let m = x.len() / k;
    assert!(x.len() == m * k && dst.len() == m * n, "shapes differ");
    if let Onto::Bias(bias, residual) = onto {
        assert!(
            bias.len() == n && residual.is_none_or(|r| r.len() == dst.len()),
            "shapes differ"
        );
    }
    let width = w.groups * 4;
    let blocks = w.packed.len() / (w.groups * 64);
    // Rows of a tile: AMX's 16 where it runs, else VNNI's 6.
    #[cfg(target_arch = "x86_64")]
    let tile = if amx_fits(w) { TILE_ROWS } else { ROWS };
    #[cfg(not(target_arch = "x86_64"))]
    let tile = ROWS;
    let out = Columns {
        ptr: dst.as_mut_ptr(),
        n,
    };
    // The input bytes live as long as the thread: at the feed-forward's
    // width they are too big for malloc to keep, and a fresh mapping per
    // call costs its page faults.
    // Serially a chunk of rows is quantized and multiplied at a time, so
    // its bytes are still in cache; in parallel every row first, as each
    // span reads them all. The buffers are taken out of the thread's
    // keeping, not borrowed: while this thread waits for the spans, rayon
    // may hand it another product (another model's, an embedding's).
    let chunk = if parallel { m } else { int8_chunk_rows(tile) };
    let (mut xu, mut ranges) = INT8_INPUT.take();
    for first in (0..m).step_by(chunk.max(1)) {
        let rows = chunk.min(m - first);
        let padded = rows.div_ceil(tile) * tile;
        grow(&mut xu, padded * width);
        let xu = &mut xu[..padded * width];
        ranges.clear();
        ranges.resize(rows, (1.0, 0));
        let x = &x[first * k..(first + rows) * k];
        quantize_input((xu, width), &mut ranges, x, k, parallel);
        let input = Quantized {
            bytes: xu,
            ranges: &ranges,
            tile,
            first,
        };
        if parallel {
            let threads = rayon::current_num_threads().max(1);
            let per = (blocks / BLOCKS).div_ceil(INT8_SPANS_PER_THREAD * threads) * BLOCKS;
            let spans: Vec<Range<usize>> = (0..blocks)
                .step_by(per.max(BLOCKS))
                .map(|b| b..(b + per.max(BLOCKS)).min(blocks))
                .collect();
            spans
                .into_par_iter()
                .for_each(|span| int8_span(out, &input, w, span, onto));
        } else {
            int8_span(out, &input, w, 0..blocks, onto);
        }
    }
    INT8_INPUT.set((xu, ranges));
}

/// Spans of outputs per thread in a parallel [`matmul_int8`]: a few, so a
/// thread slowed by other work leaves its last span to another.
const INT8_SPANS_PER_THREAD: usize = 2;

/// A row's range in unsigned bytes: `x ≈ scale · (u − zero)`.
type RowRange = (f32, i32);

/// Rows of a [`matmul_int8`] in unsigned bytes, padded to whole tiles of
/// `tile` rows, each row's `(scale, zero)`, and the first one's row in
/// the product.
struct Quantized<'a> {
    bytes: &'a [u8],
    ranges: &'a [RowRange],
    tile: usize,
    first: usize,
}

/// `xu`'s rows (`width` bytes) ← `x`'s rows (`k` wide) in unsigned bytes,
/// with their ranges. What lies past a row's `k` bytes, or past the rows,
/// meets zero weights or is never read, so it is left as it was.
fn quantize_input(
    (xu, width): (&mut [u8], usize),
    ranges: &mut [RowRange],
    x: &[f32],
    k: usize,
    parallel: bool,
) {
    let one = |((row, out), range): ((&[f32], &mut [u8]), &mut RowRange)| {
        *range = quantize_unsigned(row, out);
    };
    if parallel && x.len() > PARALLEL_QUANTIZE_ROWS * k {
        x.par_chunks_exact(k)
            .zip(xu.par_chunks_exact_mut(width))
            .zip(ranges.par_iter_mut())
            .for_each(one);
    } else {
        x.chunks_exact(k)
            .zip(xu.chunks_exact_mut(width))
            .zip(ranges.iter_mut())
            .for_each(one);
    }
}

/// Rows from which a parallel [`matmul_int8`] quantizes its input on
/// every thread.
const PARALLEL_QUANTIZE_ROWS: usize = 64;

/// Rows [`int8_span`] sums and scales back at a time, so their sums are
/// still in cache when they are read: whole tiles of VNNI's 6 rows, and
/// of AMX's 16 in pairs (AMX takes two row tiles at a time).
fn int8_chunk_rows(tile: usize) -> usize {
    if tile == ROWS { 48 } else { 4 * tile }
}

/// The outputs of the blocks `span` of every row of `input`, scaled back
/// onto `onto` in `out`'s columns of the span.
fn int8_span(
    out: Columns,
    input: &Quantized<'_>,
    w: &Int8Weights,
    span: Range<usize>,
    onto: Onto<'_>,
) {
    let (n, width) = (w.outputs(), w.groups * 4);
    let outputs = span.start * OUT_LANES..(span.end * OUT_LANES).min(n);
    if outputs.is_empty() {
        return;
    }
    let stride = span.len() * OUT_LANES;
    let chunk_rows = int8_chunk_rows(input.tile);
    let m = input.ranges.len();
    let (scales, weight_sums) = (&w.scales[outputs.clone()], &w.sums[outputs.clone()]);
    INT8_SCRATCH.with_borrow_mut(|sums| {
        grow(sums, chunk_rows * stride);
        for first in (0..m).step_by(chunk_rows) {
            let rows = chunk_rows.min(m - first);
            let padded = rows.div_ceil(input.tile) * input.tile;
            let sums = &mut sums[..padded * stride];
            let bytes = &input.bytes[first * width..(first + padded) * width];
            int8_sums(sums, bytes, w, &span);
            for r in 0..rows {
                let (row, at_row) = (first + r, input.first + first + r);
                let accs = &sums[r * stride..r * stride + outputs.len()];
                // SAFETY: `at_row` is a row of the product and `outputs`
                // within `n`, so inside `dst`; this span's task alone
                // writes these columns, and `matmul_int8` holds `dst`
                // borrowed meanwhile.
                let dst = unsafe { out.row(at_row, outputs.clone()) };
                let (scale, zero) = input.ranges[row];
                match onto {
                    Onto::Dst => scale_back(dst, accs, scales, weight_sums, scale, zero),
                    Onto::Bias(bias, residual) => {
                        let at = at_row * n;
                        let residual =
                            residual.map(|res| &res[at + outputs.start..at + outputs.end]);
                        let bias = &bias[outputs.clone()];
                        scale_onto(
                            dst,
                            accs,
                            scales,
                            weight_sums,
                            (scale, zero),
                            bias,
                            residual,
                        )
                    }
                }
            }
        }
    });
}

/// A matrix of rows `n` floats wide, handed to tasks that each write
/// their own columns of every row.
#[derive(Clone, Copy)]
struct Columns {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: only used to hand disjoint column spans of one borrowed buffer
// to rayon tasks ([`matmul_int8`]).
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    /// Columns `cols` of row `row`.
    ///
    /// # Safety
    /// They are inside the buffer, and nothing else reads or writes them
    /// while the slice lives.
    unsafe fn row<'a>(self, row: usize, cols: Range<usize>) -> &'a mut [f32] {
        debug_assert!(cols.end <= self.n);
        // SAFETY: in bounds and unshared, by the caller.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(row * self.n + cols.start), cols.len())
        }
    }
}

thread_local! {
    /// [`matmul_int8`]'s input bytes and row ranges.
    static INT8_INPUT: std::cell::RefCell<(Vec<u8>, Vec<RowRange>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
    /// [`int8_span`]'s sums.
    static INT8_SCRATCH: std::cell::RefCell<Vec<i32>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// Makes `v` at least `len` long (new elements zero; old ones kept, as
/// whoever reads them writes them first).
pub(crate) fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

wide!(
    /// `out += scale · weight_scale · (acc − zero · weight_sum)` per
    /// output: a row's exact integer sums back in floats.
    fn scale_back(
        out: &mut [f32],
        accs: &[i32],
        weight_scales: &[f32],
        weight_sums: &[i32],
        scale: f32,
        zero: i32
    ) = scale_back_generic
);

wide!(
    /// `out = bias + residual + scale · weight_scale · (acc − zero ·
    /// weight_sum)` per output: [`scale_back`] onto a bias and a residual
    /// row rather than onto `out`.
    fn scale_onto(
        out: &mut [f32],
        accs: &[i32],
        weight_scales: &[f32],
        weight_sums: &[i32],
        range: (f32, i32),
        bias: &[f32],
        residual: Option<&[f32]>
    ) = scale_onto_generic
);

#[inline(always)]
fn scale_onto_generic(
    out: &mut [f32],
    accs: &[i32],
    weight_scales: &[f32],
    weight_sums: &[i32],
    (scale, zero): (f32, i32),
    bias: &[f32],
    residual: Option<&[f32]>,
) {
    let product = |acc: i32, weight_scale: f32, weight_sum: i32| {
        scale * weight_scale * (acc - zero * weight_sum) as f32
    };
    let outputs = out
        .iter_mut()
        .zip(accs)
        .zip(weight_scales)
        .zip(weight_sums)
        .zip(bias);
    match residual {
        Some(residual) => {
            for (((((d, &acc), &ws), &wsum), &b), &r) in outputs.zip(residual) {
                *d = b + r + product(acc, ws, wsum);
            }
        }
        None => {
            for ((((d, &acc), &ws), &wsum), &b) in outputs {
                *d = b + product(acc, ws, wsum);
            }
        }
    }
}

#[inline(always)]
fn scale_back_generic(
    out: &mut [f32],
    accs: &[i32],
    weight_scales: &[f32],
    weight_sums: &[i32],
    scale: f32,
    zero: i32,
) {
    let outputs = out.iter_mut().zip(accs).zip(weight_scales).zip(weight_sums);
    for (((d, &acc), &weight_scale), &weight_sum) in outputs {
        *d += scale * weight_scale * (acc - zero * weight_sum) as f32;
    }
}

/// `dst += x × wᵀ` for one input row (a decoded token): [`matmul_int8`]'s
/// arithmetic without its tiles of rows, the outputs taken in blocks of
/// 256 from a shared cursor by candle's barrier pool and the calling
/// thread. A token runs some 170 of these back to back, microseconds
/// apart; the pool's workers wait for the next one by spinning briefly
/// rather than by yielding, as rayon's idle threads do: under load a
/// yield hands the core to a search for a whole slice, and the token
/// waits for it. Through `lore serve` on 2 cores this took decoding from
/// 34 to 41 tokens/s alone and from 19 to 29–34 under 8 searching clients.
pub fn matvec_int8(dst: &mut [f32], x: &[f32], w: &Int8Weights) {
    let (k, n) = (w.k, w.outputs());
    assert!(x.len() == k && dst.len() == n, "shapes differ");
    let mut xu = vec![0u8; w.groups * 4];
    let (scale, zero) = quantize_unsigned(x, &mut xu[..k]);
    let mut sums = vec![0i32; w.packed.len() / (w.groups * 4)];
    by_blocks(&mut sums, |out, first| int8_row_sums(out, &xu, w, first));
    scale_back(dst, &sums[..n], &w.scales, &w.sums, scale, zero);
}

/// Output blocks per parallel task of a one-row product (whole tiles).
const MATVEC_TASK_BLOCKS: usize = 4 * BLOCKS;

/// A one-row product's outputs (`out`, whole blocks of 16) shared out in
/// tasks of [`MATVEC_TASK_BLOCKS`] blocks, taken from a shared cursor by
/// candle's barrier pool and the calling thread: `sums(part, first)` fills
/// `part`, whole blocks from block `first`. Every decoded token's products
/// run through it (`matvec_int8`, `matvec_q4k`, `matvec_q5_0`).
fn by_blocks<T: Send>(out: &mut [T], sums: impl Fn(&mut [T], usize) + Sync) {
    let tasks: Vec<Mutex<&mut [T]>> = out
        .chunks_mut(MATVEC_TASK_BLOCKS * OUT_LANES)
        .map(Mutex::new)
        .collect();
    candle_core::utils::barrier_pool().execute_chunked(tasks.len(), |range| {
        for task in range {
            let mut part = tasks[task].lock().unwrap_or_else(|e| e.into_inner());
            sums(&mut part, task * MATVEC_TASK_BLOCKS);
        }
    });
}

/// `out[j] = Σ_p xu[p] · w[first·16 + j][p]` for the outputs of the blocks
/// from `first` that `out` holds (whole tiles of blocks).
fn int8_row_sums(out: &mut [i32], xu: &[u8], w: &Int8Weights, first: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        // SAFETY: the CPU has AVX-512F/BW/VNNI (checked above);
        // `matvec_int8` sized the slices.
        return unsafe { int8_row_sums_vnni(out, xu, w, first) };
    }
    for (j, sum) in out.iter_mut().enumerate() {
        *sum = portable_sum(xu, w, first * OUT_LANES + j);
    }
}

/// [`int8_row_sums`] with VNNI: 4 blocks of 16 outputs at a time, each
/// block's weights read as one contiguous stream.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VNNI; `xu` holds `groups × 4` bytes
/// and `out` whole tiles of blocks from `first`, all within the weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn int8_row_sums_vnni(out: &mut [i32], xu: &[u8], w: &Int8Weights, first: usize) {
    use std::arch::x86_64::*;
    let groups = w.groups;
    let blocks = out.len() / OUT_LANES;
    assert!(
        xu.len() == groups * 4
            && out.len() == blocks * OUT_LANES
            && blocks.is_multiple_of(BLOCKS)
            && (first + blocks) * groups * 64 <= w.packed.len()
    );
    let (x, packed) = (xu.as_ptr(), w.packed.as_ptr());
    for b in (0..blocks).step_by(BLOCKS) {
        let mut acc = [_mm512_setzero_si512(); BLOCKS];
        for g in 0..groups {
            // SAFETY: byte g * 4 + 3 < groups * 4 = xu.len().
            let four = unsafe { std::ptr::read_unaligned(x.add(g * 4).cast::<i32>()) };
            let xv = _mm512_set1_epi32(four);
            for (c, sum) in acc.iter_mut().enumerate() {
                // SAFETY: block first + b + c is within the weights
                // (asserted) and group g < groups.
                let wv = unsafe {
                    _mm512_loadu_si512(packed.add(((first + b + c) * groups + g) * 64).cast())
                };
                *sum = _mm512_dpbusd_epi32(*sum, xv, wv);
            }
        }
        for (c, sum) in acc.iter().enumerate() {
            let at = (b + c) * OUT_LANES;
            let dst = &mut out[at..at + OUT_LANES];
            // SAFETY: `dst` holds 16 i32s.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), *sum) };
        }
    }
}

/// `sums[i][j] = Σ_p xu[i][p] · w[j][p]`, exactly, for rows of `xu` of
/// `groups × 4` bytes and the outputs of the blocks `span` (whole tiles
/// of them); `sums` has a row of those outputs per input row.
fn int8_sums(sums: &mut [i32], xu: &[u8], w: &Int8Weights, span: &Range<usize>) {
    assert!(
        span.start.is_multiple_of(BLOCKS)
            && span.len().is_multiple_of(BLOCKS)
            && span.end * w.groups * 64 <= w.packed.len(),
        "not whole tiles of blocks"
    );
    #[cfg(target_arch = "x86_64")]
    if amx_fits(w) && (xu.len() / (w.groups * 4)).is_multiple_of(TILE_ROWS) {
        // SAFETY: AMX is ready (checked), the groups fill whole tiles,
        // and `matmul_int8` padded the rows to whole tiles.
        return unsafe { int8_sums_amx(sums, xu, w, span) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        // SAFETY: the CPU has AVX-512F/BW/VNNI (checked above; VNNI
        // implies F); `matmul_int8` sized the slices.
        return unsafe { int8_sums_vnni(sums, xu, w, span) };
    }
    int8_sums_portable(sums, xu, w, span);
}

/// The shape of an [`int8_sums`] call: groups of 4 inputs, bytes per row
/// of `xu`, its rows, blocks of 16 outputs in the span, and i32s per row
/// of sums.
fn sums_shape(
    xu: &[u8],
    w: &Int8Weights,
    span: &Range<usize>,
) -> (usize, usize, usize, usize, usize) {
    let groups = w.groups;
    let width = groups * 4;
    let blocks = span.len();
    (groups, width, xu.len() / width, blocks, blocks * OUT_LANES)
}

/// [`int8_sums`] without VNNI: the same integers.
fn int8_sums_portable(sums: &mut [i32], xu: &[u8], w: &Int8Weights, span: &Range<usize>) {
    let width = w.groups * 4;
    let stride = span.len() * OUT_LANES;
    for (x, out) in xu.chunks_exact(width).zip(sums.chunks_exact_mut(stride)) {
        for (j, sum) in out.iter_mut().enumerate() {
            *sum = portable_sum(x, w, span.start * OUT_LANES + j);
        }
    }
}

/// `Σ_p x[p] · w[j][p]` for the packed output `j`, one product at a time.
fn portable_sum(x: &[u8], w: &Int8Weights, j: usize) -> i32 {
    let (block, lane) = (j / OUT_LANES, j % OUT_LANES);
    (0..w.groups * 4)
        .map(|p| {
            let weight = w.packed[(block * w.groups + p / 4) * 64 + lane * 4 + p % 4];
            i32::from(x[p]) * i32::from(weight)
        })
        .sum()
}

/// One VNNI tile: 6 input rows × 4 blocks of 16 outputs, 24 accumulators
/// held in registers (of 32) beside the 4 weight vectors and a broadcast,
/// and no sum ever reduced across lanes. Inputs and weights are padded to
/// whole tiles, so every tile is full and its loops have constant bounds.
const ROWS: usize = 6;
const BLOCKS: usize = 4;

/// [`int8_sums`] with VNNI: each step broadcasts 4 input bytes of a row
/// and multiplies them with the packed weights of 16 outputs.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VNNI; `xu` holds whole tiles of
/// rows of `groups × 4` bytes, the span whole tiles of blocks, and
/// `sums` a row of the span's outputs per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn int8_sums_vnni(sums: &mut [i32], xu: &[u8], w: &Int8Weights, span: &Range<usize>) {
    use std::arch::x86_64::*;
    let (groups, width, m, blocks, stride) = sums_shape(xu, w, span);
    assert!(
        sums.len() == m * stride
            && w.packed.len() >= span.end * groups * 64
            && m.is_multiple_of(ROWS)
            && blocks.is_multiple_of(BLOCKS)
    );
    let x = xu.as_ptr();
    // SAFETY: the span's blocks are inside the weights (asserted).
    let packed = unsafe { w.packed.as_ptr().add(span.start * groups * 64) };
    for b in (0..blocks).step_by(BLOCKS) {
        for i in (0..m).step_by(ROWS) {
            let mut acc = [[_mm512_setzero_si512(); BLOCKS]; ROWS];
            for g in 0..groups {
                let mut wv = [_mm512_setzero_si512(); BLOCKS];
                for (c, v) in wv.iter_mut().enumerate() {
                    // SAFETY: block b + c < blocks and group g < groups
                    // (asserted shapes), so the 64 bytes are in the span.
                    *v = unsafe {
                        _mm512_loadu_si512(packed.add(((b + c) * groups + g) * 64).cast())
                    };
                }
                for (r, row) in acc.iter_mut().enumerate() {
                    // SAFETY: row i + r < m and byte g * 4 + 3 < width, so
                    // the 4 bytes are in `xu`.
                    let four = unsafe {
                        std::ptr::read_unaligned(x.add((i + r) * width + g * 4).cast::<i32>())
                    };
                    let xv = _mm512_set1_epi32(four);
                    for (sum, wc) in row.iter_mut().zip(&wv) {
                        *sum = _mm512_dpbusd_epi32(*sum, xv, *wc);
                    }
                }
            }
            for (r, row) in acc.iter().enumerate() {
                for (c, sum) in row.iter().enumerate() {
                    let at = (i + r) * stride + (b + c) * OUT_LANES;
                    let out = &mut sums[at..at + OUT_LANES];
                    // SAFETY: `out` holds 16 i32s.
                    unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), *sum) };
                }
            }
        }
    }
}

/// Whether this process may run AMX tiles: the CPU has AMX-TILE and
/// AMX-INT8, and Linux granted the tile state (`arch_prctl`; without it
/// the first tile instruction faults). Asked once. `LORE_AMX=0` keeps to
/// VNNI (to measure one against the other).
#[cfg(target_arch = "x86_64")]
fn amx_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        if std::env::var_os("LORE_AMX").is_some_and(|v| v == "0") {
            return false;
        }
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        let (tile, int8) = (edx >> 24 & 1 == 1, edx >> 25 & 1 == 1);
        tile && int8 && request_tile_state()
    })
}

/// Whether `w`'s products can run on AMX tiles: AMX is ready and its
/// inputs fill whole tiles of 64 bytes.
#[cfg(target_arch = "x86_64")]
fn amx_fits(w: &Int8Weights) -> bool {
    w.groups.is_multiple_of(TILE_ROWS) && amx_ready()
}

/// Asks Linux for the AMX tile data state (`ARCH_REQ_XCOMP_PERM`).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call that takes two integers and touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_state() -> bool {
    false
}

/// Rows of one AMX tile (and bytes of each of its rows).
#[cfg(target_arch = "x86_64")]
const TILE_ROWS: usize = 16;

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes
/// (four i32 accumulators, two input tiles, two weight tiles).
#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

#[cfg(target_arch = "x86_64")]
const TILES: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// [`int8_sums`] with AMX: `tdpbusd` multiplies a tile of 16 input rows ×
/// 64 bytes by the packed weights of 16 outputs × 64 inputs (the VNNI
/// layout is already the tile's: a block's 16 groups are 16 rows of 64
/// bytes) into 16 × 16 i32 sums, 16,384 multiply-adds per instruction.
/// Two row tiles × two blocks at a time: four accumulators.
///
/// # Safety
/// [`amx_ready`] must have said yes; `xu` holds whole tiles of 16 rows of
/// `groups × 4` bytes with `groups` a multiple of 16, the span whole
/// tiles of blocks, and `sums` a row of the span's outputs per row.
#[cfg(target_arch = "x86_64")]
unsafe fn int8_sums_amx(sums: &mut [i32], xu: &[u8], w: &Int8Weights, span: &Range<usize>) {
    use std::arch::asm;
    let (groups, width, m, blocks, stride) = sums_shape(xu, w, span);
    assert!(
        sums.len() == m * stride
            && groups.is_multiple_of(TILE_ROWS)
            && m.is_multiple_of(TILE_ROWS)
            && blocks.is_multiple_of(2)
            && w.packed.len() >= span.end * groups * 64
    );
    let (x, out) = (xu.as_ptr(), sums.as_mut_ptr());
    // SAFETY: the span's blocks are inside the weights (asserted).
    let packed = unsafe { w.packed.as_ptr().add(span.start * groups * 64) };
    let steps = groups / TILE_ROWS;
    let row_tiles = m / TILE_ROWS;
    // SAFETY: the configuration is 64 valid bytes; every load and store
    // below reads or writes 16 rows of 64 bytes inside the slices, by the
    // asserted shapes (a block holds `groups` rows of 64 bytes, an input
    // row `width` bytes, a row of sums `stride` i32s).
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &TILES, options(nostack, readonly));
        for i in (0..row_tiles).step_by(2) {
            let pair = i + 1 < row_tiles;
            for b in (0..blocks).step_by(2) {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for s in 0..steps {
                    let a0 = x.add(i * TILE_ROWS * width + s * 64);
                    let b0 = packed.add((b * groups + s * TILE_ROWS) * 64);
                    let b1 = packed.add(((b + 1) * groups + s * TILE_ROWS) * 64);
                    asm!(
                        "tileloadd tmm4, [{a0} + {width}*1]",
                        "tileloadd tmm6, [{b0} + {sixty_four}*1]",
                        "tileloadd tmm7, [{b1} + {sixty_four}*1]",
                        "tdpbusd tmm0, tmm4, tmm6",
                        "tdpbusd tmm1, tmm4, tmm7",
                        a0 = in(reg) a0, b0 = in(reg) b0, b1 = in(reg) b1,
                        width = in(reg) width, sixty_four = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                    if pair {
                        let a1 = a0.add(TILE_ROWS * width);
                        asm!(
                            "tileloadd tmm5, [{a1} + {width}*1]",
                            "tdpbusd tmm2, tmm5, tmm6",
                            "tdpbusd tmm3, tmm5, tmm7",
                            a1 = in(reg) a1, width = in(reg) width,
                            options(nostack, readonly),
                        );
                    }
                }
                let row_bytes = stride * 4;
                let c0 = out.add(i * TILE_ROWS * stride + b * OUT_LANES);
                let c1 = c0.add(OUT_LANES);
                asm!(
                    "tilestored [{c0} + {row_bytes}*1], tmm0",
                    "tilestored [{c1} + {row_bytes}*1], tmm1",
                    c0 = in(reg) c0, c1 = in(reg) c1, row_bytes = in(reg) row_bytes,
                    options(nostack),
                );
                if pair {
                    let c2 = c0.add(TILE_ROWS * stride);
                    let c3 = c2.add(OUT_LANES);
                    asm!(
                        "tilestored [{c2} + {row_bytes}*1], tmm2",
                        "tilestored [{c3} + {row_bytes}*1], tmm3",
                        c2 = in(reg) c2, c3 = in(reg) c3, row_bytes = in(reg) row_bytes,
                        options(nostack),
                    );
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

/// `x` in bf16, rounded to the nearest (ties to even): the top half of its
/// bits after rounding.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

/// `v` as bf16 rows of `stride` values (zero past `v.cols`, and in the
/// rows of `dst` past `v.rows`): the left operand of [`matmul_bf16`].
pub fn bf16_rows(dst: &mut [u16], stride: usize, v: View<'_>) {
    dst.fill(0);
    for (i, row) in dst.chunks_exact_mut(stride).take(v.rows).enumerate() {
        let out = &mut row[..v.cols];
        if v.col_stride == 1 {
            bf16_slice(out, &v.data[i * v.row_stride..][..v.cols]);
        } else {
            for (j, out) in out.iter_mut().enumerate() {
                *out = bf16_bits(v.at(i, j));
            }
        }
    }
}

/// `out ← xs` in bf16.
fn bf16_slice(out: &mut [u16], xs: &[f32]) {
    assert!(out.len() == xs.len());
    #[cfg(target_arch = "x86_64")]
    if bf16x::ready() {
        // SAFETY: the CPU has the instructions (checked); equal lengths.
        return unsafe { bf16x::slice(out, xs) };
    }
    bf16_slice_wide(out, xs);
}

wide!(fn bf16_slice_wide(out: &mut [u16], xs: &[f32]) = bf16_slice_generic);

#[inline(always)]
fn bf16_slice_generic(out: &mut [u16], xs: &[f32]) {
    out.iter_mut().zip(xs).for_each(|(o, &x)| *o = bf16_bits(x));
}

/// `v` (`k × n`) in bf16 as AMX's right operand: for each block of 16
/// columns, each pair of rows `2p, 2p + 1` as 16 pairs (a tile row of 64
/// bytes); zero past `v`'s rows and columns, up to `k` rows (even) and
/// `n` columns (whole blocks).
pub fn bf16_pairs(dst: &mut [u16], k: usize, n: usize, v: View<'_>) {
    assert!(k.is_multiple_of(2) && n.is_multiple_of(16) && dst.len() == k * n);
    assert!(v.rows <= k && v.cols <= n && v.last_index() < v.data.len());
    dst.fill(0);
    let (rows, cols) = (v.rows, v.cols);
    if v.row_stride == 1 && rows.is_multiple_of(2) {
        // A transposed matrix (keys): each pair is two neighbours in a
        // stored row, and a stored row is one column of the result.
        #[cfg(target_arch = "x86_64")]
        if bf16x::ready() {
            // SAFETY: the CPU has the instructions (checked); the shapes
            // are asserted above.
            return unsafe { bf16x::stored_rows_as_columns(dst, k, v) };
        }
        for col in 0..cols {
            let stored = &v.data[col * v.col_stride..][..rows];
            let out = &mut dst[col / 16 * k * 16..][..k * 16];
            for (p, two) in stored.chunks_exact(2).enumerate() {
                let at = p * 32 + col % 16 * 2;
                out[at] = bf16_bits(two[0]);
                out[at + 1] = bf16_bits(two[1]);
            }
        }
    } else if v.col_stride == 1 {
        // Row-major (values): a pair is the same column of two rows.
        #[cfg(target_arch = "x86_64")]
        if bf16x::ready() {
            // SAFETY: the CPU has the instructions (checked); the shapes
            // are asserted above.
            return unsafe { bf16x::row_pairs(dst, k, v) };
        }
        for row in 0..rows {
            let stored = &v.data[row * v.row_stride..][..cols];
            for (block, chunk) in stored.chunks(16).enumerate() {
                let out = &mut dst[block * k * 16 + row / 2 * 32 + row % 2..];
                for (j, &x) in chunk.iter().enumerate() {
                    out[j * 2] = bf16_bits(x);
                }
            }
        }
    } else {
        for row in 0..rows {
            for col in 0..cols {
                dst[col / 16 * k * 16 + row / 2 * 32 + col % 16 * 2 + row % 2] =
                    bf16_bits(v.at(row, col));
            }
        }
    }
}

/// The bf16 conversions in AVX512-BF16's instructions (one `vcvtneps2bf16`
/// per 16 values, rounding to the nearest as [`bf16_bits`] does) and a
/// softmax on `vscalefps`: attention's operands where the CPU has them
/// (every CPU with AMX-BF16 does).
#[cfg(target_arch = "x86_64")]
mod bf16x {
    use super::{ROUNDER, View};
    use std::arch::x86_64::*;

    /// Whether this CPU has the instructions.
    pub fn ready() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }

    /// The first `n` (at most 16) of 16 lanes.
    #[inline(always)]
    fn first(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// 16 floats in bf16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    fn bf16(x: __m512) -> __m256i {
        // SAFETY: both are 256 plain bits.
        unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(x)) }
    }

    /// [`super::exp_coarse`] on 16 lanes, scaled by `vscalefps`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    fn exp_coarse(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
        let rounder = _mm512_set1_ps(ROUNDER);
        let shifted = _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), rounder);
        let n = _mm512_sub_ps(shifted, rounder);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-std::f32::consts::LN_2), x);
        let p = _mm512_fmadd_ps(_mm512_set1_ps(0.167_781_98), r, _mm512_set1_ps(0.504_304_5));
        let p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.999_971_3));
        let p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.999_948_2));
        _mm512_scalef_ps(p, n)
    }

    /// [`super::exp_rows_bf16`].
    ///
    /// # Safety
    /// The CPU has AVX512-BF16 ([`ready`]); `cols <= stride`, and `out`
    /// holds a row of `stride` for each row of `cols` in `xs`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn exp_rows(
        xs: &[f32],
        cols: usize,
        out: &mut [u16],
        stride: usize,
        inv: &mut [f32],
    ) {
        let (full, tail) = (cols / 16 * 16, first(cols % 16));
        let rows = xs
            .chunks_exact(cols)
            .zip(out.chunks_exact_mut(stride))
            .zip(inv);
        for ((row, out), inv) in rows {
            let (p, o) = (row.as_ptr(), out.as_mut_ptr());
            let floor = _mm512_set1_ps(f32::NEG_INFINITY);
            // SAFETY (every access below): offsets below `full` are whole
            // blocks of 16 inside the row; the last block's lanes past
            // `cols` are masked off.
            let mut m = floor;
            for j in (0..full).step_by(16) {
                m = _mm512_max_ps(m, unsafe { _mm512_loadu_ps(p.add(j)) });
            }
            m = _mm512_max_ps(m, unsafe { _mm512_mask_loadu_ps(floor, tail, p.add(full)) });
            let max = _mm512_set1_ps(_mm512_reduce_max_ps(m));
            let mut acc = _mm512_setzero_ps();
            for j in (0..full).step_by(16) {
                let e = exp_coarse(_mm512_sub_ps(unsafe { _mm512_loadu_ps(p.add(j)) }, max));
                acc = _mm512_add_ps(acc, e);
                unsafe { _mm256_storeu_si256(o.add(j).cast(), bf16(e)) };
            }
            if cols > full {
                let x = unsafe { _mm512_maskz_loadu_ps(tail, p.add(full)) };
                let e = _mm512_maskz_mov_ps(tail, exp_coarse(_mm512_sub_ps(x, max)));
                acc = _mm512_add_ps(acc, e);
                unsafe { _mm256_mask_storeu_epi16(o.add(full).cast(), tail, bf16(e)) };
            }
            out[cols..].fill(0);
            *inv = 1.0 / _mm512_reduce_add_ps(acc);
        }
    }

    /// [`super::bf16_slice`].
    ///
    /// # Safety
    /// The CPU has AVX512-BF16 ([`ready`]); `out` and `xs` are as long.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn slice(out: &mut [u16], xs: &[f32]) {
        let (full, tail) = (xs.len() / 16 * 16, first(xs.len() % 16));
        let (p, o) = (xs.as_ptr(), out.as_mut_ptr());
        // SAFETY: whole blocks inside both; the last one masked.
        for j in (0..full).step_by(16) {
            unsafe { _mm256_storeu_si256(o.add(j).cast(), bf16(_mm512_loadu_ps(p.add(j)))) };
        }
        unsafe {
            let x = _mm512_maskz_loadu_ps(tail, p.add(full));
            _mm256_mask_storeu_epi16(o.add(full).cast(), tail, bf16(x));
        }
    }

    /// [`super::bf16_pairs`] of a transposed view (`v.row_stride == 1`,
    /// `v.rows` even): stored row `j` of `v` is column `j` of the
    /// operand; its pairs are converted 16 at a time and scattered down
    /// the column.
    ///
    /// # Safety
    /// The CPU has AVX512-BF16 ([`ready`]); [`super::bf16_pairs`]'s
    /// assertions hold (`v` fits `k` rows and `dst.len() / k` columns).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn stored_rows_as_columns(dst: &mut [u16], k: usize, v: View<'_>) {
        let rows = v.rows;
        // Pair `p` of a column lands 16 pairs (64 bytes) below pair `p - 1`.
        let down = _mm512_mullo_epi32(
            _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            _mm512_set1_epi32(16),
        );
        for col in 0..v.cols {
            let stored = &v.data[col * v.col_stride..][..rows];
            let column = col / 16 * k * 16 + col % 16 * 2;
            for start in (0..rows).step_by(32) {
                let n = (rows - start).min(32);
                let (lo, hi) = (first(n.min(16)), first(n.saturating_sub(16)));
                // SAFETY: `stored` holds `rows` values; lanes past them are
                // masked off. The pairs written are below `k / 2`, each
                // inside the column's block of `k × 16`.
                unsafe {
                    let p = stored.as_ptr().add(start);
                    let low = _mm512_maskz_loadu_ps(lo, p);
                    let high = _mm512_maskz_loadu_ps(hi, p.wrapping_add(16));
                    let pairs =
                        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                    let base = dst.as_mut_ptr().add(column + start * 16);
                    _mm512_mask_i32scatter_epi32::<4>(base.cast(), first(n / 2), down, pairs);
                }
            }
        }
    }

    /// [`super::bf16_pairs`] of a row-major view (`v.col_stride == 1`):
    /// rows `2p` and `2p + 1` converted 16 columns at a time and
    /// interleaved into one 64-byte tile row.
    ///
    /// # Safety
    /// The CPU has AVX512-BF16 ([`ready`]); [`super::bf16_pairs`]'s
    /// assertions hold.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub unsafe fn row_pairs(dst: &mut [u16], k: usize, v: View<'_>) {
        let weave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        for pair in 0..v.rows.div_ceil(2) {
            let (a, b) = (2 * pair, 2 * pair + 1);
            for block in 0..v.cols.div_ceil(16) {
                let width = first((v.cols - block * 16).min(16));
                // SAFETY: the loads read columns below `v.cols` of rows
                // below `v.rows` (masked); the store is the tile row of
                // `pair` in the block's `k × 16`.
                unsafe {
                    let at = |row: usize| v.data.as_ptr().add(row * v.row_stride + block * 16);
                    let top = _mm512_maskz_loadu_ps(width, at(a));
                    let bottom = if b < v.rows {
                        _mm512_maskz_loadu_ps(width, at(b))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let both =
                        std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(bottom, top));
                    let out = dst.as_mut_ptr().add(block * k * 16 + pair * 32);
                    _mm512_storeu_si512(out.cast(), _mm512_permutexvar_epi16(weave, both));
                }
            }
        }
    }
}

/// Whether this process may run AMX's bf16 products (AMX-BF16 on top of
/// [`amx_ready`]).
#[cfg(target_arch = "x86_64")]
pub fn amx_bf16_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| amx_ready() && std::arch::x86_64::__cpuid_count(7, 0).edx >> 22 & 1 == 1)
}

/// No AMX off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn amx_bf16_ready() -> bool {
    false
}

/// `dst = a × b` on AMX tiles (`tdpbf16ps`: bf16 products summed in
/// f32): `a` is `m × k` bf16 rows ([`bf16_rows`]), `b` `k × n` as
/// [`bf16_pairs`] packs it, `dst` `m × n` with rows `dst_stride` apart;
/// `m` and `n` whole tiles of 16, `k` of 32. Attention's two products run
/// here where the CPU has AMX-BF16: 16 times the f32 GEMM's multiply-adds
/// per instruction, at bf16's 8 bits of mantissa for the operands.
pub fn matmul_bf16(
    dst: &mut [f32],
    dst_stride: usize,
    a: &[u16],
    b: &[u16],
    (m, k, n): (usize, usize, usize),
) {
    assert!(
        m.is_multiple_of(16) && k.is_multiple_of(32) && n.is_multiple_of(16),
        "shapes are not whole tiles"
    );
    assert!(a.len() == m * k && b.len() == k * n, "shapes differ");
    assert!(
        m == 0 || (m - 1) * dst_stride + n <= dst.len(),
        "dst too small"
    );
    assert!(amx_bf16_ready(), "no AMX-BF16");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AMX-BF16 is ready (asserted), the shapes are whole tiles
    // and inside the slices (asserted).
    unsafe {
        matmul_bf16_amx(dst.as_mut_ptr(), dst_stride, a, b, (m, k, n))
    }
}

/// [`matmul_bf16`]'s tiles: one accumulator per 16 × 16 block of `dst`.
///
/// # Safety
/// AMX-BF16 must be ready and the shapes checked as [`matmul_bf16`] does.
#[cfg(target_arch = "x86_64")]
unsafe fn matmul_bf16_amx(
    dst: *mut f32,
    dst_stride: usize,
    a: &[u16],
    b: &[u16],
    (m, k, n): (usize, usize, usize),
) {
    use std::arch::asm;
    let (a_row_bytes, dst_row_bytes) = (k * 2, dst_stride * 4);
    // SAFETY: every tile loaded or stored is 16 rows of 64 bytes inside
    // `a`, `b` or `dst`, by the shapes the caller checked.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &TILES, options(nostack, readonly));
        for i in 0..m / 16 {
            // Two blocks of 16 columns at a time share each load of `a`.
            for block in (0..n / 16).step_by(2) {
                let pair = block + 1 < n / 16;
                asm!("tilezero tmm0", "tilezero tmm1", options(nostack, nomem));
                for step in 0..k / 32 {
                    let a_tile = a.as_ptr().add(i * 16 * k + step * 32);
                    let b_tile = b.as_ptr().add(block * k * 16 + step * 16 * 32);
                    asm!(
                        "tileloadd tmm4, [{a} + {a_row_bytes}*1]",
                        "tileloadd tmm6, [{b} + {sixty_four}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        a = in(reg) a_tile, b = in(reg) b_tile,
                        a_row_bytes = in(reg) a_row_bytes, sixty_four = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                    if pair {
                        asm!(
                            "tileloadd tmm7, [{b} + {sixty_four}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            b = in(reg) b_tile.add(k * 16), sixty_four = in(reg) 64usize,
                            options(nostack, readonly),
                        );
                    }
                }
                let c = dst.add(i * 16 * dst_stride + block * 16);
                asm!(
                    "tilestored [{c} + {row_bytes}*1], tmm0",
                    c = in(reg) c, row_bytes = in(reg) dst_row_bytes,
                    options(nostack),
                );
                if pair {
                    asm!(
                        "tilestored [{c} + {row_bytes}*1], tmm1",
                        c = in(reg) c.add(16), row_bytes = in(reg) dst_row_bytes,
                        options(nostack),
                    );
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

/// One KV head's keys and values (`[position][dim]` each), and the query
/// rows that attend to them: a decoder's prompt over its cache.
pub struct Causal<'a> {
    /// Cached keys, a row of `dim` per position.
    pub keys: &'a [f32],
    /// Cached values, laid out as the keys.
    pub values: &'a [f32],
    /// Values per head.
    pub dim: usize,
    /// The cached position of each query row.
    pub positions: &'a [usize],
    /// Each row sees only this many latest positions, when given.
    pub window: Option<usize>,
}

impl Causal<'_> {
    /// The positions the row at `p` attends to.
    fn visible(&self, p: usize) -> std::ops::Range<usize> {
        self.window.map_or(0, |w| (p + 1).saturating_sub(w))..p + 1
    }

    /// Scales each row of `scores` (rows `cols` wide, one per position)
    /// by `scale` where its position sees the key, and sets it to −∞
    /// where it does not; rows past the positions are left as they are.
    fn mask(&self, scores: &mut [f32], cols: usize, scale: f32) {
        for (row, &p) in scores.chunks_exact_mut(cols).zip(self.positions) {
            let seen = self.visible(p);
            row[..seen.start].fill(f32::NEG_INFINITY);
            row[seen.clone()].iter_mut().for_each(|s| *s *= scale);
            row[seen.end..].fill(f32::NEG_INFINITY);
        }
    }
}

/// Attention of each query head in `queries` (`[rows][dim]` each, one row
/// per position of `kv.positions`) over the keys and values up to each
/// row's own position: `out` gets `[head][row][dim]`. Keys past the
/// block's last position are never read, so a prompt computes half the
/// scores a full product would; the masked scores that remain become
/// −∞ in the pass that scales them.
pub fn attend_causal(out: &mut [f32], queries: &[&[f32]], kv: &Causal<'_>) {
    let (rows, dim) = (kv.positions.len(), kv.dim);
    assert!(out.len() == queries.len() * rows * dim, "shapes differ");
    assert!(
        queries.iter().all(|q| q.len() == rows * dim),
        "shapes differ"
    );
    let keys = kv.positions.iter().max().map_or(0, |&p| p + 1);
    assert!(keys * dim <= kv.keys.len() && keys * dim <= kv.values.len());
    let scale = 1.0 / (dim as f32).sqrt();
    let (k, v) = (
        View::dense(kv.keys, keys, dim),
        View::dense(kv.values, keys, dim),
    );
    ATTEND_SCRATCH.with_borrow_mut(|(scores, block, inv)| {
        grow(scores, rows * keys);
        grow(block, rows * dim);
        grow(inv, rows);
        let (scores, block) = (&mut scores[..rows * keys], &mut block[..rows * dim]);
        for (q, out) in queries.iter().zip(out.chunks_exact_mut(rows * dim)) {
            matmul(scores, keys, View::dense(q, rows, dim), k.t(), false, 1);
            kv.mask(scores, keys, scale);
            exp_rows(scores, keys, &mut inv[..rows]);
            matmul(block, dim, View::dense(scores, rows, keys), v, false, 1);
            normalise(out, block, inv, dim);
        }
    });
}

/// `out`'s rows ← `block`'s rows times their `inv` (the softmax's
/// division, on the `dim` outputs of a row rather than its weights).
fn normalise(out: &mut [f32], block: &[f32], inv: &[f32], dim: usize) {
    let rows = out.chunks_exact_mut(dim).zip(block.chunks_exact(dim));
    for ((out, values), &inv) in rows.zip(inv) {
        out.iter_mut().zip(values).for_each(|(o, v)| *o = v * inv);
    }
}

thread_local! {
    /// [`attend_causal`]'s scores, outputs and softmax sums, kept by each
    /// thread.
    static ATTEND_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorisable rounding gives what `round_ties_even` gives, signs
    /// and ties included, and saturates at ±127.
    #[test]
    fn weights_quantize_to_the_nearest_even_integer() {
        let row = [
            1.0,
            -1.0,
            0.5,
            -0.5,
            1.5 / 127.0,
            -2.5 / 127.0,
            0.3,
            -0.7,
            0.0,
            0.999,
        ];
        let mut q = [0i8; 10];
        let scale = quantize(&row, &mut q);
        let expected: Vec<i8> = row
            .iter()
            .map(|v| (v / scale).round_ties_even().clamp(-127.0, 127.0) as i8)
            .collect();
        assert_eq!(q.to_vec(), expected);
        assert_eq!((q[0], q[1]), (127, -127));
        assert_eq!((q[4], q[5]), (2, -2), "ties go to the even integer");
    }

    #[test]
    fn exponentials_are_within_their_bounds() {
        // The coarse one only meets arguments of at most 0 (x − max).
        let cases = [(exp as fn(f32) -> f32, 8000, 1e-6), (exp_coarse, 0, 5e-4)];
        for (f, end, bound) in cases {
            for i in -8000..end {
                let x = i as f32 / 100.0;
                let rel = (f(x) - x.exp()).abs() / x.exp();
                assert!(rel < bound, "x={x} rel={rel}");
            }
        }
    }

    /// `a × b` read straight off the bf16 operands, as the tiles sum them.
    fn bf16_reference(a: &[u16], b: &[u16], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let f = |bits: u16| f32::from_bits(u32::from(bits) << 16);
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        f(a[i * k + p]) * f(b[j / 16 * k * 16 + p / 2 * 32 + j % 16 * 2 + p % 2])
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn bf16_operands_and_tiles_give_the_f32_product() {
        // Attention's two shapes: queries × keysᵀ (keys stored row by row,
        // so a transposed view) and weights × values, neither whole tiles.
        let (len, d): (usize, usize) = (37, 32);
        let q: Vec<f32> = (0..len * d)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
            .collect();
        let keys: Vec<f32> = (0..len * d)
            .map(|i| ((i * 5 % 19) as f32 - 9.0) / 8.0)
            .collect();
        let (rows, padded) = (len.next_multiple_of(16), len.next_multiple_of(32));
        let mut qa = vec![0; rows * d];
        bf16_rows(&mut qa, d, View::dense(&q, len, d));
        let mut kb = vec![0; d * rows];
        bf16_pairs(&mut kb, d, rows, View::dense(&keys, len, d).t());
        let mut vb = vec![0; padded * d];
        bf16_pairs(&mut vb, padded, d, View::dense(&keys, len, d));
        let mut want = vec![0.0; len * len];
        matmul(
            &mut want,
            len,
            View::dense(&q, len, d),
            View::dense(&keys, len, d).t(),
            false,
            1,
        );
        let got = bf16_reference(&qa, &kb, (rows, d, rows));
        for i in 0..len {
            for j in 0..len {
                let (g, w) = (got[i * rows + j], want[i * len + j]);
                assert!(
                    (g - w).abs() < 0.02 * (1.0 + w.abs()),
                    "({i}, {j}): {g} vs {w}"
                );
            }
        }
        // The weights: exponentials in bf16, padded with zeros.
        let mut scores = got.clone();
        for row in scores.chunks_exact_mut(rows) {
            row[len..].fill(f32::NEG_INFINITY);
        }
        let (mut pa, mut inv) = (vec![1; rows * padded], vec![0.0; rows]);
        exp_rows_bf16(&scores, rows, &mut pa, padded, &mut inv);
        let mut exact = scores.clone();
        let mut exact_inv = vec![0.0; rows];
        exp_rows(&mut exact, rows, &mut exact_inv);
        for (i, (row, e)) in pa
            .chunks_exact(padded)
            .zip(exact.chunks_exact(rows))
            .enumerate()
        {
            // Padded keys weigh next to nothing, columns past them nothing.
            let weight = |x: u16| f32::from_bits(u32::from(x) << 16);
            assert!(row[len..rows].iter().all(|&x| weight(x) < 1e-30));
            assert!(
                row[rows..].iter().all(|&x| x == 0),
                "row {i} is not padded with zeros"
            );
            // Weights to bf16's precision (8 bits), sums to the coarse
            // exponential's.
            for (&b, &e) in row.iter().zip(&e[..len]) {
                assert!((weight(b) - e).abs() <= 5e-3 * e, "{} vs {e}", weight(b));
            }
            assert!((inv[i] - exact_inv[i]).abs() <= 5e-4 * exact_inv[i]);
        }
        let values = bf16_reference(&pa, &vb, (rows, padded, d));
        if amx_bf16_ready() {
            let mut tiles = vec![f32::NAN; rows * rows];
            matmul_bf16(&mut tiles, rows, &qa, &kb, (rows, d, rows));
            assert_eq!(tiles, got);
            let mut tiles = vec![f32::NAN; rows * d];
            matmul_bf16(&mut tiles, d, &pa, &vb, (rows, padded, d));
            for (t, v) in tiles.iter().zip(&values) {
                assert!((t - v).abs() <= 1e-5 * (1.0 + v.abs()), "{t} vs {v}");
            }
        } else {
            eprintln!("no AMX-BF16 here: the tiles are not run");
        }
    }

    /// A prompt's causal attention gives what the textbook formula gives:
    /// rows at contiguous and scattered positions, with and without a
    /// window.
    #[test]
    fn causal_attention_matches_the_formula() {
        let (dim, cached) = (64usize, 150usize);
        let wave = |i: usize, a: usize, b: usize| ((i * a % b) as f32 - b as f32 / 2.0) / 9.0;
        let keys: Vec<f32> = (0..cached * dim).map(|i| wave(i, 5, 19)).collect();
        let values: Vec<f32> = (0..cached * dim).map(|i| wave(i, 3, 17)).collect();
        let contiguous: Vec<usize> = (100..141).collect();
        let scattered = vec![3, 40, 41, 77, 149, 120];
        for positions in [&contiguous, &scattered] {
            for window in [None, Some(30)] {
                let rows = positions.len();
                let queries: Vec<Vec<f32>> = (0..2)
                    .map(|h| (0..rows * dim).map(|i| wave(i + h, 7, 23)).collect())
                    .collect();
                let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
                let kv = Causal {
                    keys: &keys,
                    values: &values,
                    dim,
                    positions,
                    window,
                };
                let mut want = vec![0.0f32; 2 * rows * dim];
                for (h, q) in queries.iter().enumerate() {
                    for (r, &p) in positions.iter().enumerate() {
                        let seen = kv.visible(p);
                        let query = &q[r * dim..(r + 1) * dim];
                        let scores: Vec<f64> = seen
                            .clone()
                            .map(|j| {
                                let key = &keys[j * dim..(j + 1) * dim];
                                let dot: f64 =
                                    query.iter().zip(key).map(|(a, b)| f64::from(a * b)).sum();
                                dot / (dim as f64).sqrt()
                            })
                            .collect();
                        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                        for (j, s) in seen.zip(&scores) {
                            let w = (s - max).exp() / total;
                            for c in 0..dim {
                                want[(h * rows + r) * dim + c] +=
                                    (w * f64::from(values[j * dim + c])) as f32;
                            }
                        }
                    }
                }
                let mut got = vec![f32::NAN; want.len()];
                attend_causal(&mut got, &refs, &kv);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "window {window:?}, value {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// The AVX512-BF16 kernels give the portable ones' bf16 bits, on
    /// shapes with partial blocks (a view's rows and columns, a row's
    /// tail).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn bf16_instructions_agree_with_the_portable_kernels() {
        if !bf16x::ready() {
            eprintln!("no AVX512-BF16 here: nothing to compare");
            return;
        }
        let data: Vec<f32> = (0..45 * 70)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let portable_pairs = |k: usize, n: usize, v: View<'_>| {
            let mut want = vec![7u16; k * n];
            want.fill(0);
            for row in 0..v.rows {
                for col in 0..v.cols {
                    want[col / 16 * k * 16 + row / 2 * 32 + col % 16 * 2 + row % 2] =
                        bf16_bits(v.at(row, col));
                }
            }
            want
        };
        for (rows, cols) in [(45, 70), (32, 37), (7, 16), (44, 1)] {
            let v = View {
                data: &data,
                rows,
                cols,
                row_stride: 70,
                col_stride: 1,
            };
            let (k, n) = (rows.next_multiple_of(2), cols.next_multiple_of(16));
            let mut got = vec![7u16; k * n];
            // SAFETY: checked `ready`; `v` fits `k × n`.
            unsafe { bf16x::row_pairs(&mut got, k, v) };
            assert_eq!(got, portable_pairs(k, n, v), "rows {rows} × {cols}");
            // Keys: a transposed view, an even number of rows.
            let t = View {
                data: &data,
                rows: cols.next_multiple_of(2).min(70),
                cols: rows,
                row_stride: 1,
                col_stride: 70,
            };
            let (k, n) = (t.rows, t.cols.next_multiple_of(16));
            let mut got = vec![0u16; k * n];
            // SAFETY: as above.
            unsafe { bf16x::stored_rows_as_columns(&mut got, k, t) };
            assert_eq!(
                got,
                portable_pairs(k, n, t),
                "transposed {} × {}",
                t.rows,
                t.cols
            );
        }
        for len in [1, 16, 37, 256] {
            let xs = &data[..len];
            let (mut got, mut want) = (vec![0u16; len], vec![0u16; len]);
            // SAFETY: checked `ready`; equal lengths.
            unsafe { bf16x::slice(&mut got, xs) };
            bf16_slice_generic(&mut want, xs);
            assert_eq!(got, want, "{len} values");
            let stride = len.next_multiple_of(32);
            let rows = data.len() / len;
            let (mut got, mut want) = (vec![9u16; rows * stride], vec![9u16; rows * stride]);
            let (mut inv, mut inv_want) = (vec![0.0; rows], vec![0.0; rows]);
            let xs = &data[..rows * len];
            // SAFETY: checked `ready`; a row of `stride` for each.
            unsafe { bf16x::exp_rows(xs, len, &mut got, stride, &mut inv) };
            exp_rows_bf16_generic(xs, len, &mut want, stride, &mut inv_want);
            assert_eq!(got, want, "exponentials of rows of {len}");
            for (a, b) in inv.iter().zip(&inv_want) {
                assert!((a - b).abs() <= 1e-6 * b, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn erf_is_within_its_bound() {
        for i in -800..800 {
            let x = i as f32 / 100.0;
            let err = (erf(x) as f64 - libm_erf(x as f64)).abs();
            assert!(err < 1e-6, "x={x} err={err}");
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
        gelu(&mut xs, true);
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
    fn int8_products_are_close_to_f32_and_exact_in_their_integers() {
        // 70 columns: a 64-byte block and a tail; 6 rows, 9 outputs: partial blocks.
        let (m, k, n) = (6, 70, 9);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let mut want = vec![0.5; m * n];
        let mut got = want.clone();
        matmul(
            &mut want,
            n,
            View::dense(&x, m, k),
            View::dense(&w, n, k).t(),
            true,
            1,
        );
        let quantized = Int8Weights::new(&w, k);
        matmul_int8(&mut got, &x, &quantized, false, Onto::Dst);
        let largest = want.iter().fold(0.0f32, |a, b| a.max(b.abs()));
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 0.02 * largest, "{a} vs {b}");
        }
        // Whatever the CPU, the integer sums are exact.
        let width = quantized.groups * 4;
        let xu: Vec<u8> = (0..m * width).map(|i| (i * 31 % 256) as u8).collect();
        let stride = quantized.packed.len() / width;
        let all = 0..stride / OUT_LANES;
        let mut fast = vec![0; m * stride];
        int8_sums(&mut fast, &xu, &quantized, &all);
        // The portable path, which this CPU may not take, gives the same.
        let mut portable = vec![0; m * stride];
        int8_sums_portable(&mut portable, &xu, &quantized, &all);
        assert_eq!(portable, fast);
        let mut q = vec![0i8; k];
        for j in 0..n {
            quantize(&w[j * k..][..k], &mut q);
            for i in 0..m {
                let exact: i32 = (0..k)
                    .map(|p| i32::from(xu[i * width + p]) * i32::from(q[p]))
                    .sum();
                assert_eq!(fast[i * stride + j], exact);
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn amx_sums_equal_the_portable_ones() {
        if !amx_ready() {
            eprintln!("no AMX here: nothing to compare");
            return;
        }
        // Three row tiles (a pair and a lone one), inputs of 5 tiles of 64
        // bytes, outputs of 5 blocks (padded to a whole tile of blocks).
        let (m, k, n) = (3 * TILE_ROWS, 5 * 64, 5 * OUT_LANES);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31 % 255) as f32 - 127.0) / 64.0)
            .collect();
        let w = Int8Weights::new(&w, k);
        assert!(amx_fits(&w));
        let xu: Vec<u8> = (0..m * k).map(|i| (i * 13 % 256) as u8).collect();
        let stride = w.packed.len() / k;
        let mut amx = vec![0i32; m * stride];
        let mut portable = vec![0i32; m * stride];
        let all = 0..stride / OUT_LANES;
        // SAFETY: AMX is ready and the shapes are whole tiles.
        unsafe { int8_sums_amx(&mut amx, &xu, &w, &all) };
        int8_sums_portable(&mut portable, &xu, &w, &all);
        assert_eq!(amx, portable);
        assert!(portable.iter().any(|&s| s != 0));
        // A span of the blocks gives those columns of the sums.
        let span = BLOCKS..2 * BLOCKS;
        let width = span.len() * OUT_LANES;
        let mut part = vec![0i32; m * width];
        // SAFETY: as above; the span is a whole tile of blocks.
        unsafe { int8_sums_amx(&mut part, &xu, &w, &span) };
        for (row, got) in part.chunks_exact(width).enumerate() {
            let start = row * stride + span.start * OUT_LANES;
            assert_eq!(got, &portable[start..start + width]);
        }
    }

    #[test]
    fn int8_weights_read_back_what_was_written_and_refuse_a_bad_header() {
        let (n, k) = (40, 24);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 3.0)
            .collect();
        let weights = Int8Weights::new(&w, k);
        let mut bytes = Vec::new();
        weights.write_to(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, weights.stored_bytes());
        let back = Int8Weights::read_from(&mut bytes.as_slice(), bytes.len() as u64).unwrap();
        assert_eq!(back, weights);
        // Sizes past the limit, an absurd length, another shape, a short read.
        assert!(Int8Weights::read_from(&mut bytes.as_slice(), bytes.len() as u64 - 1).is_err());
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Int8Weights::read_from(&mut huge.as_slice(), u64::MAX).is_err());
        let mut other = bytes.clone();
        other[0..8].copy_from_slice(&(k as u64 + 8).to_le_bytes());
        assert!(Int8Weights::read_from(&mut other.as_slice(), u64::MAX).is_err());
        let short = &bytes[..bytes.len() - 3];
        assert!(Int8Weights::read_from(&mut &short[..], u64::MAX).is_err());
    }

    #[test]
    fn int8_products_in_parallel_equal_the_serial_ones() {
        // Rows past a chunk and a partial one; outputs in several spans
        // and a partial last one.
        let (m, k, n) = (3 * int8_chunk_rows(ROWS) + 5, 40, 40 * OUT_LANES + 7);
        let operands = |rows: usize, k: usize| {
            let x: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 7 % 17) as f32 - 8.0) / 4.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 3 % 7) as f32 - 3.0) / 2.0)
                .collect();
            (x, Int8Weights::new(&w, k))
        };
        // Also a few rows (a prompt's last words), and inputs of whole AMX
        // tiles (where AMX runs).
        for (rows, k) in [(m, k), (3, k), (37, 128)] {
            let (x, w) = operands(rows, k);
            let mut serial = vec![0.25; rows * n];
            let mut parallel = serial.clone();
            matmul_int8(&mut serial, &x, &w, false, Onto::Dst);
            matmul_int8(&mut parallel, &x, &w, true, Onto::Dst);
            assert_eq!(serial, parallel, "{rows} rows of {k}");
        }
        let (x, quantized) = operands(m, k);
        // Onto a bias and a residual: the same numbers as onto a `dst`
        // filled with them first, serial or not, with or without the
        // residual; whatever `dst` held is not read.
        let bias: Vec<f32> = (0..n).map(|j| j as f32 / 8.0 - 1.0).collect();
        let residual: Vec<f32> = (0..m * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        for residual in [Some(&residual[..]), None] {
            let mut filled = vec![0.0; m * n];
            fill_rows(&mut filled, &bias, residual, false);
            matmul_int8(&mut filled, &x, &quantized, false, Onto::Dst);
            for parallel in [false, true] {
                let mut onto = vec![f32::NAN; m * n];
                matmul_int8(
                    &mut onto,
                    &x,
                    &quantized,
                    parallel,
                    Onto::Bias(&bias, residual),
                );
                assert_eq!(onto, filled);
            }
        }
    }

    /// Parallel products from two threads outside the pool at once (two
    /// models, or an embedding beside an answer): a pool thread that waits
    /// for its own product's spans may be handed the other product, and
    /// both come out as they do one at a time.
    #[test]
    fn products_that_wait_on_the_pool_may_run_others_meanwhile() {
        let (m, k, n) = (150, 128, 40 * OUT_LANES);
        let inputs: Vec<Vec<f32>> = (0..2)
            .map(|s| {
                (0..m * k)
                    .map(|i| (((i + s) * 7 % 17) as f32 - 8.0) / 4.0)
                    .collect()
            })
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 3 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let w = Int8Weights::new(&w, k);
        let product = |x: &Vec<f32>, parallel: bool| {
            let mut y = vec![0.0; m * n];
            matmul_int8(&mut y, x, &w, parallel, Onto::Dst);
            y
        };
        std::thread::scope(|threads| {
            for x in &inputs {
                let want = product(x, false);
                threads.spawn(move || {
                    for _ in 0..50 {
                        assert_eq!(rayon::scope(|_| product(x, true)), want);
                    }
                });
            }
        });
    }

    #[test]
    fn one_row_products_equal_the_tiled_ones() {
        // Outputs over several tasks and a last partial one.
        let (k, n) = (72, 16 * MATVEC_TASK_BLOCKS * 2 + 40);
        let x: Vec<f32> = (0..k).map(|i| ((i * 7 % 17) as f32 - 8.0) / 4.0).collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 3 % 7) as f32 - 3.0) / 2.0)
            .collect();
        let quantized = Int8Weights::new(&w, k);
        let mut tiled = vec![0.5; n];
        let mut row = tiled.clone();
        matmul_int8(&mut tiled, &x, &quantized, false, Onto::Dst);
        matvec_int8(&mut row, &x, &quantized);
        assert_eq!(tiled, row);
        // The portable sums agree with the fast ones.
        let mut xu = vec![0u8; quantized.groups * 4];
        quantize_unsigned(&x, &mut xu[..k]);
        let blocks = 2 * BLOCKS;
        let (mut fast, mut portable) = (vec![0; blocks * 16], vec![0; blocks * 16]);
        int8_row_sums(&mut fast, &xu, &quantized, BLOCKS);
        for (j, sum) in portable.iter_mut().enumerate() {
            *sum = portable_sum(&xu, &quantized, BLOCKS * OUT_LANES + j);
        }
        assert_eq!(fast, portable);
    }

    #[test]
    fn softmax_and_layer_norm_rows() {
        let mut xs = vec![1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0];
        softmax_rows(&mut xs, 3);
        assert!((xs[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((xs[3] - 1.0 / 3.0).abs() < 1e-6);
        let mut ys = vec![1.0, 2.0, 3.0, 4.0];
        layer_norm_rows(&mut ys, &[1.0; 4], &[0.0; 4], 0.0, false);
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

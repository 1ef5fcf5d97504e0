//! A decoded token's product on a GGUF's own 5-bit blocks (`Q5_0`, most of
//! the default model's weights), as `q4k` does for `Q4_K`: 0.69 bytes a
//! weight read instead of int8's 1. A block of 32 weights is `d · (v −
//! 16)` with `v` of 5 bits; the low 4 bits are packed as `q4k` packs its
//! nibbles and the fifth bits kept beside them as masks, one bit per
//! packed byte's nibble, added back as 16 before the products. Each output
//! is `Σ_block s_x · d · (Σ v·x − 16 · Σ x)`, with the input rounded to
//! int8 per 32 inputs.

use half::f16;

use super::q4k::{
    Activations, Blocks, LANES, SUB, SUB_BYTES, matvec_blocks, place_sub, whole_rows,
};

/// Bytes of one GGUF `Q5_0` block: `d`, 4 bytes of fifth bits, 16 bytes of
/// nibbles.
const BLOCK_BYTES: usize = 22;

/// A `Q5_0` weight `[n, k]` repacked by blocks of 16 outputs.
pub struct Q50Weights {
    /// Per block of outputs and block of 32 inputs: four 64-byte registers
    /// of the low 4 bits (as `q4k::place_sub` lays them out).
    nibbles: Vec<u8>,
    /// Per block of outputs, block of inputs and register: the fifth bits
    /// of its low nibbles, then of its high ones, bit `p` for byte `p`.
    bits: Vec<u64>,
    /// Per block of outputs and block of inputs: the 16 outputs' `d`.
    factors: Vec<f16>,
    outputs: usize,
    inputs: usize,
}

impl Q50Weights {
    /// `n` outputs of `k` inputs from a GGUF `Q5_0` tensor's bytes (row
    /// after row of 22-byte blocks); `None` when `k` is not whole blocks
    /// or the bytes are not `n` such rows.
    pub fn from_blocks(data: &[u8], n: usize, k: usize) -> Option<Q50Weights> {
        use rayon::prelude::*;
        let row_bytes = whole_rows(data, (n, k), SUB, BLOCK_BYTES)?;
        let (blocks, per_row) = (n.div_ceil(LANES), k / SUB);
        let mut weights = Q50Weights {
            nibbles: vec![0; blocks * per_row * SUB_BYTES],
            bits: vec![0; blocks * per_row * 8],
            factors: vec![f16::ZERO; blocks * per_row * LANES],
            outputs: n,
            inputs: k,
        };
        weights
            .nibbles
            .par_chunks_mut(per_row * SUB_BYTES)
            .zip(weights.bits.par_chunks_mut(per_row * 8))
            .zip(weights.factors.par_chunks_mut(per_row * LANES))
            .enumerate()
            .for_each(|(block, ((nibbles, bits), factors))| {
                let rows = block * LANES..((block + 1) * LANES).min(n);
                for (o, row) in rows.enumerate() {
                    let row = &data[row * row_bytes..(row + 1) * row_bytes];
                    for (j, bytes) in row.chunks_exact(BLOCK_BYTES).enumerate() {
                        let values = block_values(bytes);
                        place_sub(&values, o, &mut nibbles[j * SUB_BYTES..(j + 1) * SUB_BYTES]);
                        for i in 0..4 {
                            for b in 0..4 {
                                let at = 4 * o + b;
                                let low = u64::from(values[4 * i + b] >> 4);
                                let high = u64::from(values[4 * (i + 4) + b] >> 4);
                                bits[j * 8 + 2 * i] |= low << at;
                                bits[j * 8 + 2 * i + 1] |= high << at;
                            }
                        }
                        factors[j * LANES + o] = f16::from_le_bytes([bytes[0], bytes[1]]);
                    }
                }
            });
        Some(weights)
    }
}

/// A block's 32 values of 5 bits, in input order: input `l`'s low 4 bits
/// are byte `l`'s low nibble (`l < 16`) or byte `l − 16`'s high one, its
/// fifth bit is bit `l` of the 4 bytes after `d`.
fn block_values(block: &[u8]) -> [u8; SUB] {
    let high = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
    let qs = &block[6..BLOCK_BYTES];
    std::array::from_fn(|l| {
        let low = if l < 16 { qs[l] & 0xF } else { qs[l - 16] >> 4 };
        low | ((((high >> l) & 1) as u8) << 4)
    })
}

/// `dst = x × wᵀ` for one input row (a decoded token) on `Q5_0` blocks.
pub fn matvec_q5_0(dst: &mut [f32], x: &[f32], w: &Q50Weights) {
    matvec_blocks(dst, x, w);
}

impl Blocks for Q50Weights {
    const BLOCK: usize = SUB;

    fn shape(&self) -> (usize, usize) {
        (self.outputs, self.inputs)
    }

    fn sums_portable(&self, out: &mut [f32], a: &Activations, first: usize) {
        block_sums_portable(out, a, self, first);
    }

    #[cfg(target_arch = "x86_64")]
    unsafe fn sums_vnni(&self, out: &mut [f32], a: &Activations, first: usize) {
        // SAFETY: the caller's contract is this function's.
        unsafe { block_sums_vnni(out, a, self, first) }
    }
}

/// The outputs of the blocks of outputs from `first` that `out` holds, one
/// output at a time.
fn block_sums_portable(out: &mut [f32], a: &Activations, w: &Q50Weights, first: usize) {
    let per_row = w.inputs / SUB;
    for (b, lanes) in out.chunks_exact_mut(LANES).enumerate() {
        let block = first + b;
        for (o, dst) in lanes.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for j in 0..per_row {
                let at = block * per_row + j;
                let packed = &w.nibbles[at * SUB_BYTES..][..SUB_BYTES];
                let x = &a.values[j * SUB..][..SUB];
                let mut t = 0i32;
                for i in 0..4 {
                    let (low, high) = (w.bits[at * 8 + 2 * i], w.bits[at * 8 + 2 * i + 1]);
                    for b in 0..4 {
                        let p = 4 * o + b;
                        let byte = packed[i * 64 + p];
                        let v0 = (byte & 0xF) | ((((low >> p) & 1) as u8) << 4);
                        let v1 = (byte >> 4) | ((((high >> p) & 1) as u8) << 4);
                        t += i32::from(v0) * i32::from(x[4 * i + b]);
                        t += i32::from(v1) * i32::from(x[4 * (i + 4) + b]);
                    }
                }
                let d = w.factors[at * LANES + o].to_f32() * a.scales[j];
                acc = d.mul_add((t - 16 * a.sums[j]) as f32, acc);
            }
            *dst = acc;
        }
    }
}

/// [`block_sums_portable`] with VNNI: 16 outputs a register, four blocks of them
/// at a time so each input broadcast serves all four.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VNNI; `out` holds whole blocks of
/// outputs from `first`, all within the weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block_sums_vnni(out: &mut [f32], a: &Activations, w: &Q50Weights, first: usize) {
    use std::arch::x86_64::*;
    const GROUP: usize = 4;
    let per_row = w.inputs / SUB;
    let blocks = out.len() / LANES;
    assert!(
        out.len() == blocks * LANES
            && (first + blocks) * per_row * SUB_BYTES <= w.nibbles.len()
            && a.values.len() == per_row * SUB
    );
    let nibbles = w.nibbles.as_ptr();
    let factors = w.factors.as_ptr();
    let x = a.values.as_ptr();
    let low = _mm512_set1_epi8(0x0F);
    let sixteen = _mm512_set1_epi8(16);
    let mut b = 0;
    while b < blocks {
        let count = GROUP.min(blocks - b);
        let mut acc = [_mm512_setzero_ps(); GROUP];
        for j in 0..per_row {
            let mut t = [_mm512_setzero_si512(); GROUP];
            let mut u = [_mm512_setzero_si512(); GROUP];
            for i in 0..4 {
                // SAFETY: inputs 32j + 4i … 32j + 4(i + 4) + 3 < k.
                let (xa, xb) = unsafe {
                    (
                        _mm512_set1_epi32(std::ptr::read_unaligned(
                            x.add(j * SUB + 4 * i).cast::<i32>(),
                        )),
                        _mm512_set1_epi32(std::ptr::read_unaligned(
                            x.add(j * SUB + 4 * (i + 4)).cast::<i32>(),
                        )),
                    )
                };
                for (c, (t, u)) in t.iter_mut().zip(&mut u).enumerate().take(count) {
                    let at = (first + b + c) * per_row + j;
                    // SAFETY: block first + b + c is within the weights.
                    let v =
                        unsafe { _mm512_loadu_si512(nibbles.add(at * SUB_BYTES + i * 64).cast()) };
                    let (fifth_lo, fifth_hi) = (w.bits[at * 8 + 2 * i], w.bits[at * 8 + 2 * i + 1]);
                    let lo = _mm512_and_si512(v, low);
                    let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                    let lo = _mm512_mask_add_epi8(lo, fifth_lo, lo, sixteen);
                    let hi = _mm512_mask_add_epi8(hi, fifth_hi, hi, sixteen);
                    *t = _mm512_dpbusd_epi32(*t, lo, xa);
                    *u = _mm512_dpbusd_epi32(*u, hi, xb);
                }
            }
            let offset = _mm512_set1_epi32(16 * a.sums[j]);
            let scale = _mm512_set1_ps(a.scales[j]);
            for c in 0..count {
                let at = ((first + b + c) * per_row + j) * LANES;
                // SAFETY: 16 `d` of this block, within `factors`.
                let d = unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(factors.add(at).cast())) };
                let sum = _mm512_sub_epi32(_mm512_add_epi32(t[c], u[c]), offset);
                acc[c] = _mm512_fmadd_ps(_mm512_mul_ps(d, scale), _mm512_cvtepi32_ps(sum), acc[c]);
            }
        }
        for (c, acc) in acc.iter().enumerate().take(count) {
            let dst = &mut out[(b + c) * LANES..(b + c + 1) * LANES];
            // SAFETY: `dst` holds 16 f32s.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), *acc) };
        }
        b += count;
    }
}

#[cfg(test)]
mod tests {
    use super::super::q4k::tests::{
        assert_other_shapes_refused, assert_paths_agree, assert_row_product,
    };
    use super::*;
    use candle_core::quantized::GgmlDType;

    /// Rows of 7 blocks, not whole 256s (the default model's 896), and a
    /// partial last block of outputs.
    #[test]
    fn a_row_times_q5_0_weights_is_the_dequantized_product() {
        assert_row_product(
            GgmlDType::Q5_0,
            Q50Weights::from_blocks,
            (5 * LANES + 3, 7 * SUB),
        );
    }

    /// On a partial group of output blocks.
    #[test]
    fn q5_0_paths_agree_to_the_bit() {
        assert_paths_agree(
            GgmlDType::Q5_0,
            Q50Weights::from_blocks,
            (6 * LANES, 3 * SUB),
        );
    }

    #[test]
    fn q5_0_blocks_of_another_shape_are_refused() {
        assert_other_shapes_refused(GgmlDType::Q5_0, Q50Weights::from_blocks);
    }
}

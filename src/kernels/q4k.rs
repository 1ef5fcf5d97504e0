//! A decoded token's product on a GGUF's own 4-bit weights (`Q4_K`), for
//! the decoder's one-row products. One row reads every weight once and
//! does little else with it, so it runs at the speed memory delivers the
//! weights: in int8 a 1.5B model is 1.5 GB a token, the 4-bit blocks it
//! was shipped in are 0.56 bytes a weight. The blocks are repacked at load
//! (`Q4kWeights::from_blocks`) so one register holds 16 outputs' nibbles,
//! and are multiplied as they are, never rounded again: each output is
//! `Σ_super s_x · (d · Σ_sub sc · Σ q·x − dmin · Σ_sub m · Σ x)`, with the
//! input rounded to int8 per 256 inputs (`Activations`). The integers are
//! exact (AVX-512 VNNI, else portable code) and the float steps are the
//! same fused multiply-adds in the same order on both paths, so they give
//! the same bits. What `q5_0` shares with it lives here: the packed layout
//! (`place_sub`), the input's rounding (`Activations`), the one-row product
//! over any repacked format (`Blocks`, `matvec_blocks`: the choice of the
//! VNNI or the portable path, and the outputs shared out among the threads
//! by `by_whole_blocks`, over the parent's `by_blocks`, which `matvec_int8`
//! uses too), `blocks_ready`, and the formats' shared tests.

use half::f16;

/// Weights per super-block, each with its own `d` and `dmin`.
const SUPER: usize = 256;
/// Weights per sub-block, each with its own 6-bit scale and min.
pub(super) const SUB: usize = 32;
/// Sub-blocks per super-block.
const SUBS: usize = SUPER / SUB;
/// Bytes of one GGUF `Q4_K` block: `d`, `dmin`, 12 bytes of scales and
/// mins, 128 bytes of nibbles.
const BLOCK_BYTES: usize = 144;
/// Outputs per packed block: the i32 lanes of one AVX-512 register.
pub(super) const LANES: usize = 16;
/// Packed bytes per block of outputs and sub-block: four registers, each
/// 16 outputs × 4 inputs in the low nibbles and 4 more in the high ones.
pub(super) const SUB_BYTES: usize = LANES * SUB / 2;

/// A `Q4_K` weight `[n, k]` repacked by blocks of 16 outputs.
pub struct Q4kWeights {
    /// Per block of outputs, super-block and sub-block: four 64-byte
    /// registers; byte `4o + b` of register `i` holds output `o`'s input
    /// `4i + b` of the sub-block in its low nibble and `4(i + 4) + b` in
    /// its high one.
    nibbles: Vec<u8>,
    /// Per block and super-block: the 8 sub-blocks' scales for the 16
    /// outputs, then their 8 mins (256 bytes).
    scales: Vec<u8>,
    /// Per block and super-block: the 16 outputs' `d`, then their `dmin`.
    factors: Vec<f16>,
    outputs: usize,
    inputs: usize,
}

impl Q4kWeights {
    /// `n` outputs of `k` inputs from a GGUF `Q4_K` tensor's bytes (row
    /// after row of 144-byte blocks); `None` when `k` is not whole blocks
    /// or the bytes are not `n` such rows.
    pub fn from_blocks(data: &[u8], n: usize, k: usize) -> Option<Q4kWeights> {
        use rayon::prelude::*;
        let row_bytes = whole_rows(data, (n, k), SUPER, BLOCK_BYTES)?;
        let (blocks, supers) = (n.div_ceil(LANES), k / SUPER);
        let mut weights = Q4kWeights {
            nibbles: vec![0; blocks * supers * SUBS * SUB_BYTES],
            scales: vec![0; blocks * supers * 2 * SUBS * LANES],
            factors: vec![f16::ZERO; blocks * supers * 2 * LANES],
            outputs: n,
            inputs: k,
        };
        weights
            .nibbles
            .par_chunks_mut(supers * SUBS * SUB_BYTES)
            .zip(weights.scales.par_chunks_mut(supers * 2 * SUBS * LANES))
            .zip(weights.factors.par_chunks_mut(supers * 2 * LANES))
            .enumerate()
            .for_each(|(block, ((nibbles, scales), factors))| {
                let rows = block * LANES..((block + 1) * LANES).min(n);
                for (o, row) in rows.enumerate() {
                    let row = &data[row * row_bytes..(row + 1) * row_bytes];
                    for (s, bytes) in row.chunks_exact(BLOCK_BYTES).enumerate() {
                        let at = s * SUBS * SUB_BYTES;
                        pack_block(bytes, o, &mut nibbles[at..at + SUBS * SUB_BYTES]);
                        let at = s * 2 * SUBS * LANES;
                        for j in 0..SUBS {
                            let (sc, m) = scale_min(j, &bytes[4..16]);
                            scales[at + j * LANES + o] = sc;
                            scales[at + (SUBS + j) * LANES + o] = m;
                        }
                        let at = s * 2 * LANES;
                        factors[at + o] = f16::from_le_bytes([bytes[0], bytes[1]]);
                        factors[at + LANES + o] = f16::from_le_bytes([bytes[2], bytes[3]]);
                    }
                }
            });
        Some(weights)
    }

    fn supers(&self) -> usize {
        self.inputs / SUPER
    }
}

/// The bytes of one row of `k` inputs in GGUF blocks of `block` inputs
/// and `block_bytes` bytes, when `data` is exactly `n` such rows and `k`
/// whole blocks; `None` otherwise.
pub(super) fn whole_rows(
    data: &[u8],
    (n, k): (usize, usize),
    block: usize,
    block_bytes: usize,
) -> Option<usize> {
    let row_bytes = k / block * block_bytes;
    (n > 0 && k > 0 && k.is_multiple_of(block) && data.len() == n * row_bytes).then_some(row_bytes)
}

/// Sub-block `j`'s 6-bit scale and min, from a block's 12 packed bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// One 144-byte block of output `o` into its place in a block of outputs'
/// packed super-block. The block's input `64c + l` (`l < 32`) is the low
/// nibble of its byte `32c + l`, input `64c + 32 + l` the high one.
fn pack_block(block: &[u8], o: usize, packed: &mut [u8]) {
    let mut q = [0u8; SUPER];
    for (c, bytes) in block[16..].chunks_exact(SUB).enumerate() {
        for (l, &byte) in bytes.iter().enumerate() {
            q[64 * c + l] = byte & 0xF;
            q[64 * c + SUB + l] = byte >> 4;
        }
    }
    for (j, sub) in q.chunks_exact(SUB).enumerate() {
        place_sub(sub, o, &mut packed[j * SUB_BYTES..(j + 1) * SUB_BYTES]);
    }
}

/// Output `o`'s 32 values (`sub`, their low 4 bits) into a block of outputs'
/// four registers for them: input `4i + b` in the low nibble of register
/// `i`'s byte `4o + b`, input `4(i + 4) + b` in its high nibble.
pub(super) fn place_sub(sub: &[u8], o: usize, packed: &mut [u8]) {
    for i in 0..4 {
        for b in 0..4 {
            packed[i * 64 + 4 * o + b] =
                (sub[4 * i + b] & 0xF) | ((sub[4 * (i + 4) + b] & 0xF) << 4);
        }
    }
}

/// An input row rounded to int8 per group of inputs (a multiple of 32),
/// with each run of 32's sum.
pub(super) struct Activations {
    pub(super) values: Vec<i8>,
    /// Per group: what one unit of `values` stands for.
    pub(super) scales: Vec<f32>,
    /// Per 32 inputs: the sum of their `values`.
    pub(super) sums: Vec<i32>,
}

impl Activations {
    /// `x` in groups of `group` inputs; its length must be whole groups.
    pub(super) fn new(x: &[f32], group: usize) -> Activations {
        assert!(group.is_multiple_of(SUB) && x.len().is_multiple_of(group));
        let mut values = vec![0i8; x.len()];
        let mut scales = Vec::with_capacity(x.len() / group);
        for (chunk, out) in x.chunks_exact(group).zip(values.chunks_exact_mut(group)) {
            let max = chunk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let inverse = if max > 0.0 { 127.0 / max } else { 0.0 };
            for (q, v) in out.iter_mut().zip(chunk) {
                *q = (v * inverse).round().clamp(-127.0, 127.0) as i8;
            }
            scales.push(scale);
        }
        let sums = values
            .chunks_exact(SUB)
            .map(|sub| sub.iter().map(|&v| i32::from(v)).sum())
            .collect();
        Activations {
            values,
            scales,
            sums,
        }
    }
}

/// Whether this CPU multiplies repacked blocks with VNNI. Without it the
/// blocks' portable code does more per weight than the int8 copy's, so
/// the decoder keeps no blocks there.
pub fn blocks_ready() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A weight repacked from a GGUF's blocks by blocks of 16 outputs, which a
/// one-row product reads as it is: what `matvec_blocks` needs of each
/// format.
pub(super) trait Blocks: Sync {
    /// Inputs per GGUF block; the input row is rounded to int8 per block.
    const BLOCK: usize;
    /// Outputs and inputs.
    fn shape(&self) -> (usize, usize);
    /// The outputs of the blocks of outputs from `first` that `out` holds,
    /// one output at a time.
    fn sums_portable(&self, out: &mut [f32], a: &Activations, first: usize);
    /// The same with AVX-512 VNNI.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, BW and VNNI ([`blocks_ready`]); `out`
    /// holds whole blocks of outputs from `first`, all within the weights.
    #[cfg(target_arch = "x86_64")]
    unsafe fn sums_vnni(&self, out: &mut [f32], a: &Activations, first: usize);
}

impl Blocks for Q4kWeights {
    const BLOCK: usize = SUPER;

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

/// `dst = x × wᵀ` for one input row (a decoded token) on `Q4_K` blocks.
pub fn matvec_q4k(dst: &mut [f32], x: &[f32], w: &Q4kWeights) {
    matvec_blocks(dst, x, w);
}

/// `dst = x × wᵀ` for one input row on any repacked blocks, the outputs
/// taken in blocks of 256 by candle's barrier pool, as `matvec_int8`'s are.
pub(super) fn matvec_blocks<W: Blocks>(dst: &mut [f32], x: &[f32], w: &W) {
    assert!((dst.len(), x.len()) == w.shape(), "shapes differ");
    let a = Activations::new(x, W::BLOCK);
    by_whole_blocks(dst, |out, first| block_sums(out, &a, w, first));
}

/// `dst`'s outputs computed by blocks of 16 through [`super::by_blocks`],
/// into a buffer of whole blocks: `sums(out, first)` fills `out`, whole
/// blocks from block `first`.
fn by_whole_blocks(dst: &mut [f32], sums: impl Fn(&mut [f32], usize) + Sync) {
    let mut out = vec![0.0f32; dst.len().div_ceil(LANES) * LANES];
    super::by_blocks(&mut out, sums);
    let n = dst.len();
    dst.copy_from_slice(&out[..n]);
}

/// The outputs of the blocks from `first` that `out` holds.
fn block_sums<W: Blocks>(out: &mut [f32], a: &Activations, w: &W, first: usize) {
    #[cfg(target_arch = "x86_64")]
    if blocks_ready() {
        // SAFETY: the CPU has AVX-512F/BW/VNNI (checked above); `out`
        // holds whole blocks from `first` (`by_whole_blocks` sized it).
        return unsafe { w.sums_vnni(out, a, first) };
    }
    w.sums_portable(out, a, first);
}

/// [`block_sums`] one output at a time.
fn block_sums_portable(out: &mut [f32], a: &Activations, w: &Q4kWeights, first: usize) {
    let supers = w.supers();
    for (b, lanes) in out.chunks_exact_mut(LANES).enumerate() {
        let block = first + b;
        for (o, dst) in lanes.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for s in 0..supers {
                let at = block * supers + s;
                let (mut isum, mut imin) = (0i32, 0i32);
                for j in 0..SUBS {
                    let packed = &w.nibbles[(at * SUBS + j) * SUB_BYTES..][..SUB_BYTES];
                    let x = &a.values[s * SUPER + j * SUB..][..SUB];
                    let mut t = 0i32;
                    for i in 0..4 {
                        for b in 0..4 {
                            let byte = packed[i * 64 + 4 * o + b];
                            t += i32::from(byte & 0xF) * i32::from(x[4 * i + b]);
                            t += i32::from(byte >> 4) * i32::from(x[4 * (i + 4) + b]);
                        }
                    }
                    let scales = &w.scales[at * 2 * SUBS * LANES..];
                    isum += t * i32::from(scales[j * LANES + o]);
                    imin += i32::from(scales[(SUBS + j) * LANES + o]) * a.sums[s * SUBS + j];
                }
                let d = w.factors[at * 2 * LANES + o].to_f32() * a.scales[s];
                let dmin = w.factors[at * 2 * LANES + LANES + o].to_f32() * a.scales[s];
                acc = d.mul_add(isum as f32, acc);
                acc = (-dmin).mul_add(imin as f32, acc);
            }
            *dst = acc;
        }
    }
}

/// [`block_sums`] with VNNI: 16 outputs a register, four blocks of them
/// at a time so each input broadcast serves all four.
///
/// # Safety
/// The CPU must have AVX-512F, BW and VNNI; `out` holds whole blocks of
/// outputs from `first`, all within the weights.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn block_sums_vnni(out: &mut [f32], a: &Activations, w: &Q4kWeights, first: usize) {
    use std::arch::x86_64::*;
    const GROUP: usize = 4;
    let supers = w.supers();
    let blocks = out.len() / LANES;
    assert!(
        out.len() == blocks * LANES
            && (first + blocks) * supers * SUBS * SUB_BYTES <= w.nibbles.len()
            && a.values.len() == supers * SUPER
    );
    let nibbles = w.nibbles.as_ptr();
    let scales = w.scales.as_ptr();
    let factors = w.factors.as_ptr();
    let x = a.values.as_ptr();
    let low = _mm512_set1_epi8(0x0F);
    let mut b = 0;
    while b < blocks {
        let count = GROUP.min(blocks - b);
        let mut acc = [_mm512_setzero_ps(); GROUP];
        for s in 0..supers {
            let mut isum = [_mm512_setzero_si512(); GROUP];
            let mut imin = [_mm512_setzero_si512(); GROUP];
            for j in 0..SUBS {
                let mut t = [_mm512_setzero_si512(); GROUP];
                let mut u = [_mm512_setzero_si512(); GROUP];
                let xs = s * SUPER + j * SUB;
                for i in 0..4 {
                    // SAFETY: inputs xs + 4i … xs + 4(i + 4) + 3 < k.
                    let (xa, xb) = unsafe {
                        (
                            _mm512_set1_epi32(std::ptr::read_unaligned(
                                x.add(xs + 4 * i).cast::<i32>(),
                            )),
                            _mm512_set1_epi32(std::ptr::read_unaligned(
                                x.add(xs + 4 * (i + 4)).cast::<i32>(),
                            )),
                        )
                    };
                    for (c, (t, u)) in t.iter_mut().zip(&mut u).enumerate().take(count) {
                        let at = (((first + b + c) * supers + s) * SUBS + j) * SUB_BYTES + i * 64;
                        // SAFETY: block first + b + c is within the weights.
                        let v = unsafe { _mm512_loadu_si512(nibbles.add(at).cast()) };
                        let lo = _mm512_and_si512(v, low);
                        let hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
                        *t = _mm512_dpbusd_epi32(*t, lo, xa);
                        *u = _mm512_dpbusd_epi32(*u, hi, xb);
                    }
                }
                let sum = _mm512_set1_epi32(a.sums[s * SUBS + j]);
                for c in 0..count {
                    let at = ((first + b + c) * supers + s) * 2 * SUBS * LANES;
                    // SAFETY: 16 scales and 16 mins of this block, within
                    // `scales`.
                    let (sc, m) = unsafe {
                        (
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(
                                scales.add(at + j * LANES).cast(),
                            )),
                            _mm512_cvtepu8_epi32(_mm_loadu_si128(
                                scales.add(at + (SUBS + j) * LANES).cast(),
                            )),
                        )
                    };
                    let t = _mm512_add_epi32(t[c], u[c]);
                    isum[c] = _mm512_add_epi32(isum[c], _mm512_mullo_epi32(t, sc));
                    imin[c] = _mm512_add_epi32(imin[c], _mm512_mullo_epi32(m, sum));
                }
            }
            let scale = _mm512_set1_ps(a.scales[s]);
            for c in 0..count {
                let at = ((first + b + c) * supers + s) * 2 * LANES;
                // SAFETY: 16 `d` and 16 `dmin` of this block, within
                // `factors`.
                let (d, dmin) = unsafe {
                    (
                        _mm512_cvtph_ps(_mm256_loadu_si256(factors.add(at).cast())),
                        _mm512_cvtph_ps(_mm256_loadu_si256(factors.add(at + LANES).cast())),
                    )
                };
                let d = _mm512_mul_ps(d, scale);
                let dmin = _mm512_mul_ps(dmin, scale);
                acc[c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(isum[c]), acc[c]);
                acc[c] = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(imin[c]), acc[c]);
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
pub(super) mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// A tensor of `n × k` quantized by candle to `dtype` from smooth
    /// varied values, and its values dequantized again.
    pub(in crate::kernels) fn quantized(
        n: usize,
        k: usize,
        dtype: GgmlDType,
    ) -> (QTensor, Vec<f32>) {
        let values: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0 + (i % 7) as f32 * 0.01)
            .collect();
        let t = Tensor::from_vec(values, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let dequantized = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        (q, dequantized)
    }

    pub(in crate::kernels) fn input(k: usize) -> Vec<f32> {
        (0..k)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 7.0)
            .collect()
    }

    /// Each of `y` is its row of `dequantized` times `x`, within 1 % of
    /// the products' magnitude (the input's rounding to int8).
    pub(in crate::kernels) fn assert_dequantized_product(
        y: &[f32],
        dequantized: &[f32],
        x: &[f32],
    ) {
        let k = x.len();
        for (o, &got) in y.iter().enumerate() {
            let row = &dequantized[o * k..(o + 1) * k];
            let want: f32 = row.iter().zip(x).map(|(w, x)| w * x).sum();
            let norm: f32 = row.iter().zip(x).map(|(w, x)| (w * x).abs()).sum();
            assert!(
                (got - want).abs() <= 0.01 * norm,
                "output {o}: {got} against {want}"
            );
        }
    }

    /// How a format's weights are built from a GGUF tensor's bytes.
    pub(in crate::kernels) type FromBlocks<W> = fn(&[u8], usize, usize) -> Option<W>;

    /// `n × k` weights quantized to `dtype` and repacked by `from` multiply
    /// a row as the dequantized weights do.
    pub(in crate::kernels) fn assert_row_product<W: Blocks>(
        dtype: GgmlDType,
        from: FromBlocks<W>,
        (n, k): (usize, usize),
    ) {
        let (q, dequantized) = quantized(n, k, dtype);
        let w = from(&q.data().unwrap(), n, k).unwrap();
        let x = input(k);
        let mut y = vec![0.0; n];
        matvec_blocks(&mut y, &x, &w);
        assert_dequantized_product(&y, &dequantized, &x);
    }

    /// The vectorised and the portable paths give the same bits.
    pub(in crate::kernels) fn assert_paths_agree<W: Blocks>(
        dtype: GgmlDType,
        from: FromBlocks<W>,
        (n, k): (usize, usize),
    ) {
        let (q, _) = quantized(n, k, dtype);
        let w = from(&q.data().unwrap(), n, k).unwrap();
        let a = Activations::new(&input(k), W::BLOCK);
        let mut fast = vec![0.0; n];
        let mut portable = vec![0.0; n];
        block_sums(&mut fast, &a, &w, 0);
        w.sums_portable(&mut portable, &a, 0);
        assert_eq!(fast, portable);
    }

    /// Bytes that are not whole rows of whole blocks make no weights.
    pub(in crate::kernels) fn assert_other_shapes_refused<W: Blocks>(
        dtype: GgmlDType,
        from: FromBlocks<W>,
    ) {
        let block = W::BLOCK;
        let (q, _) = quantized(LANES, block, dtype);
        let data = q.data().unwrap();
        assert!(from(&data, LANES, block).is_some());
        assert!(from(&data, LANES + 1, block).is_none());
        assert!(from(&data[1..], LANES, block).is_none());
        assert!(from(&data, LANES / 2, 2 * block).is_some());
        assert!(from(&data, LANES, block / 2).is_none());
    }

    /// A partial last block of outputs and several super-blocks.
    #[test]
    fn a_row_times_q4k_weights_is_the_dequantized_product() {
        assert_row_product(
            GgmlDType::Q4K,
            Q4kWeights::from_blocks,
            (3 * LANES + 5, 3 * SUPER),
        );
    }

    #[test]
    fn q4k_paths_agree_to_the_bit() {
        assert_paths_agree(
            GgmlDType::Q4K,
            Q4kWeights::from_blocks,
            (5 * LANES, 2 * SUPER),
        );
    }

    #[test]
    fn blocks_of_another_shape_are_refused() {
        assert_other_shapes_refused(GgmlDType::Q4K, Q4kWeights::from_blocks);
    }
}

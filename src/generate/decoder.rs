//! lore's own forward pass for decoder-only GGUF models (the `qwen2`,
//! `qwen3`, `llama` and `gemma3` families) over candle tensors and
//! quantized weights. The families differ in a few switches read from the
//! file: per-head query/key norms (qwen3, gemma3), norms after attention
//! and the feed-forward, a scaled embedding, a GELU gate and sliding-window
//! layers with their own rotary base (gemma3).
//!
//! Why not candle-transformers' quantized models: their every matmul is a
//! quantized row-by-row dot product, which is right for decoding one token and
//! slow for a prompt. Here a [`Linear`] runs in int8 on weights
//! requantized at load (`generator.int8_weights`, the VNNI kernels the
//! encoder uses; the GGUF's copy is then dropped): a GEMM over a prompt
//! chunk's rows, a product per output block for one decoded token.
//! Without it, it picks per call: with many
//! rows it dequantizes the weight and runs one f32 GEMM; with few it uses
//! the quantized kernel. Formats that have no SIMD dot product in
//! candle (Q4_1, Q5_0, Q5_1) are requantized to Q8_0 at load. The KV cache is
//! one growing buffer per KV head, and attention reads it in place:
//! decoding one task per query head on candle's worker pool; a prompt one
//! task per KV head and block of rows on rayon's, each block reading the
//! keys up to its last row only (`kernels::attend_causal`).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Result, Tensor};

use rayon::prelude::*;

use crate::kernels::{
    Causal, Int8Weights, Onto, Q4kWeights, Q50Weights, attend_causal, blocks_ready, dot,
    matmul_int8, matvec_int8, matvec_q4k, matvec_q5_0, softmax_rows,
};

/// Rows from which a matmul dequantizes its weight and runs a GEMM.
const GEMM_MIN_ROWS: usize = 16;

/// Query rows per task of a prompt's attention: a block's keys stop at
/// its last row's position, so smaller blocks skip more of the masked
/// half; each block repacks its keys and values.
const ATTEND_ROWS: usize = 64;

/// Shape of the model, from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct Shape {
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// NeoX-style rotation (halves) rather than interleaved pairs.
    pub rope_neox: bool,
    /// Layers that attend only to the latest positions (gemma3).
    pub sliding: Option<Sliding>,
    /// The token embedding is multiplied by this (gemma3: √hidden).
    pub embed_scale: Option<f64>,
    /// The feed-forward gate is GELU (tanh form), not SiLU (gemma3).
    pub gelu: bool,
}

/// Sliding-window attention: every layer but each `pattern`-th sees only
/// the last `window` positions, with rotary base `rope_base`.
#[derive(Debug, Clone)]
pub struct Sliding {
    pub window: usize,
    pub pattern: usize,
    pub rope_base: f32,
}

impl Shape {
    fn read(content: &gguf_file::Content, arch: &str) -> Result<Self> {
        let get = |key: &str| {
            content
                .metadata
                .get(&format!("{arch}.{key}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("GGUF has no {arch}.{key}")))
        };
        let hidden = get("embedding_length")?.to_u32()? as usize;
        let heads = get("attention.head_count")?.to_u32()? as usize;
        let kv_heads = get("attention.head_count_kv")?.to_u32()? as usize;
        let head_dim = match get("attention.key_length") {
            Ok(v) => v.to_u32()? as usize,
            Err(_) => hidden / heads,
        };
        if let Ok(rope_dim) = get("rope.dimension_count") {
            let rope_dim = rope_dim.to_u32()? as usize;
            if rope_dim != head_dim {
                candle_core::bail!(
                    "partial rotary embeddings ({rope_dim} of {head_dim}) are not supported"
                );
            }
        }
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            candle_core::bail!("{heads} attention heads do not group over {kv_heads} KV heads");
        }
        let gemma = arch == "gemma3";
        let sliding = if gemma {
            Some(Sliding {
                window: get("attention.sliding_window")?.to_u32()? as usize,
                pattern: get("attention.sliding_window_type")
                    .and_then(|v| v.to_u32())
                    .map_or(6, |n| n as usize)
                    .max(1),
                rope_base: get("rope.local_freq_base")
                    .and_then(|v| v.to_f32())
                    .unwrap_or(10_000.0),
            })
        } else {
            None
        };
        Ok(Shape {
            layers: get("block_count")?.to_u32()? as usize,
            heads,
            kv_heads,
            head_dim,
            rms_eps: get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64,
            rope_base: get("rope.freq_base")
                .and_then(|v| v.to_f32())
                .unwrap_or(if gemma { 1_000_000.0 } else { 10_000.0 }),
            rope_neox: arch != "llama",
            sliding,
            embed_scale: gemma.then(|| (hidden as f64).sqrt()),
            gelu: gemma,
        })
    }
}

/// A weight matrix `[out, in]` with an optional bias.
struct Linear {
    product: Product,
    /// A `Q4_K` or `Q5_0` weight's own blocks beside its int8 copy, for a
    /// product of one row (a decoded token): such a product reads every
    /// weight once, and these are 0.56 or 0.69 bytes a weight against
    /// int8's 1.
    row: Option<Row>,
    /// Rows of the weight: the length of an output.
    outputs: usize,
    bias: Option<Tensor>,
}

/// A GGUF weight's own blocks, repacked for one row's product.
enum Row {
    Q4k(Q4kWeights),
    Q5_0(Q50Weights),
}

/// How a [`Linear`] multiplies: the int8 copy or the GGUF's own weight,
/// never both (a decoded token's blocks, [`Linear::row`], aside).
enum Product {
    /// In int8, on weights requantized at load.
    Int8(Int8Weights),
    /// On the GGUF's own weight: candle's quantized kernel for a few rows,
    /// the weight dequantized into one f32 GEMM for many.
    Gguf {
        weight: Arc<QTensor>,
        quantized: QMatMul,
    },
}

/// Rows of a weight dequantized at a time while it is requantized to int8.
const INT8_LOAD_ROWS: usize = 1024;

impl Linear {
    /// With `int8`, a quantized weight is requantized to int8 (one scale per
    /// output) and the GGUF's copy dropped; every product runs on it but a
    /// decoded token's on a weight that keeps its own blocks
    /// ([`row_weights`]).
    fn new(weight: QTensor, bias: Option<Tensor>, int8: bool) -> Result<Self> {
        let (outputs, _) = weight.shape().dims2()?;
        let row = if int8 { row_weights(&weight)? } else { None };
        let product = if int8 && weight.dtype() != GgmlDType::F32 {
            Product::Int8(int8_weights(&weight)?)
        } else {
            let weight = Arc::new(requantize(weight)?);
            Product::Gguf {
                quantized: QMatMul::from_arc(weight.clone())?,
                weight,
            }
        };
        Ok(Linear {
            product,
            row,
            outputs,
            bias,
        })
    }

    /// Its int8 weights, when it has them.
    fn int8(&self) -> Option<&Int8Weights> {
        match &self.product {
            Product::Int8(w) => Some(w),
            Product::Gguf { .. } => None,
        }
    }

    /// `x` is `[rows, in]`; returns `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rows = x.dim(0)?;
        let y = match (&self.product, &self.row) {
            (Product::Int8(int8), row) => {
                // One row (a decoded token) on the GGUF's own blocks when
                // the weight keeps them, else on the int8 copy; more rows
                // on every core in int8.
                let x = x.flatten_all()?.to_vec1()?;
                let mut y = vec![0.0f32; rows * self.outputs];
                match row {
                    Some(Row::Q4k(w)) if rows == 1 => matvec_q4k(&mut y, &x, w),
                    Some(Row::Q5_0(w)) if rows == 1 => matvec_q5_0(&mut y, &x, w),
                    _ if rows == 1 => matvec_int8(&mut y, &x, int8),
                    _ => matmul_int8(&mut y, &x, int8, true, Onto::Dst),
                }
                Tensor::from_vec(y, (rows, self.outputs), &Device::Cpu)?
            }
            (Product::Gguf { weight, .. }, _)
                if rows >= GEMM_MIN_ROWS && weight.dtype() != GgmlDType::F32 =>
            {
                let w = weight.dequantize(&Device::Cpu)?;
                x.matmul(&w.t()?)?
            }
            (Product::Gguf { quantized, .. }, _) => quantized.forward(x)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `weight` (quantized, `[out, in]`) in int8, dequantized
/// [`INT8_LOAD_ROWS`] rows at a time from its own blocks.
fn int8_weights(weight: &QTensor) -> Result<Int8Weights> {
    let (n, k) = weight.shape().dims2()?;
    let dtype = weight.dtype();
    if !k.is_multiple_of(dtype.block_size()) {
        candle_core::bail!("rows of {k} are not whole {dtype:?} blocks");
    }
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    let data = weight.data()?;
    Int8Weights::from_blocks(n, k, INT8_LOAD_ROWS, |first, count| {
        let bytes = &data[first * row_bytes..(first + count) * row_bytes];
        let storage = QStorage::from_data(bytes.into(), &Device::Cpu, dtype)?;
        QTensor::new(storage, (count, k))?
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()
    })
}

/// `weight`'s own blocks repacked for one row's product, when it is
/// `Q4_K` or `Q5_0` and the CPU multiplies them faster than int8
/// ([`blocks_ready`]).
fn row_weights(weight: &QTensor) -> Result<Option<Row>> {
    if !keeps_blocks(weight.dtype()) {
        return Ok(None);
    }
    let (n, k) = weight.shape().dims2()?;
    let dtype = weight.dtype();
    let row = match dtype {
        GgmlDType::Q4K => Q4kWeights::from_blocks(&weight.data()?, n, k).map(Row::Q4k),
        GgmlDType::Q5_0 => Q50Weights::from_blocks(&weight.data()?, n, k).map(Row::Q5_0),
        _ => return Ok(None),
    };
    match row {
        Some(row) => Ok(Some(row)),
        None => candle_core::bail!("a {dtype:?} weight of {n} × {k} is not whole blocks"),
    }
}

/// Whether a weight of `dtype` keeps its own blocks for decoding.
fn keeps_blocks(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4K | GgmlDType::Q5_0) && blocks_ready()
}

/// Formats whose dot product candle runs without SIMD are converted to Q8_0,
/// which has one; the values they hold fit Q8_0 with no visible loss.
fn requantize(weight: QTensor) -> Result<QTensor> {
    let slow = matches!(
        weight.dtype(),
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    );
    let k = *weight.shape().dims().last().unwrap_or(&0);
    if !slow || !k.is_multiple_of(GgmlDType::Q8_0.block_size()) {
        return Ok(weight);
    }
    QTensor::quantize(&weight.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// Per-head RMS norms of queries and keys, before the rotation.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// Norm of the attention output, before the residual.
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Norm of the feed-forward output, before the residual.
    post_ffn_norm: Option<Tensor>,
    /// Attends to this many latest positions only (sliding layers).
    window: Option<usize>,
    cache: Cache,
}

/// Keys and values of the positions seen so far: per KV head, a buffer of
/// `[position][head_dim]`.
#[derive(Default)]
struct Cache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

impl Cache {
    /// Keeps the first `positions` positions (`dim` floats each per head).
    fn truncate(&mut self, positions: usize, dim: usize) {
        self.keys
            .iter_mut()
            .chain(&mut self.values)
            .for_each(|b| b.truncate(positions * dim));
    }

    /// Appends `k` and `v`, both `[1, kv_heads, rows, head_dim]`.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let kv_heads = k.dim(1)?;
        self.keys.resize_with(kv_heads, Vec::new);
        self.values.resize_with(kv_heads, Vec::new);
        for (buffers, t) in [(&mut self.keys, k), (&mut self.values, v)] {
            let data = t.flatten_all()?.to_vec1::<f32>()?;
            let per_head = data.len() / kv_heads;
            for (buffer, chunk) in buffers.iter_mut().zip(data.chunks_exact(per_head)) {
                buffer.extend_from_slice(chunk);
            }
        }
        Ok(())
    }

    /// Writes `k` and `v` (`[1, kv_heads, rows, head_dim]`) over the cached
    /// `positions`, one per row.
    fn put(&mut self, k: &Tensor, v: &Tensor, positions: &[usize], dim: usize) -> Result<()> {
        for (buffers, t) in [(&mut self.keys, k), (&mut self.values, v)] {
            let data = t.flatten_all()?.to_vec1::<f32>()?;
            let per_head = data.len() / buffers.len().max(1);
            for (buffer, head) in buffers.iter_mut().zip(data.chunks_exact(per_head)) {
                for (&at, row) in positions.iter().zip(head.chunks_exact(dim)) {
                    buffer[at * dim..(at + 1) * dim].copy_from_slice(row);
                }
            }
        }
        Ok(())
    }

    /// Keys and values of positions `start..end`, every head's, one row
    /// per position.
    fn rows(&self, start: usize, end: usize, dim: usize) -> Vec<Vec<f32>> {
        (start..end)
            .map(|p| {
                self.keys
                    .iter()
                    .chain(&self.values)
                    .flat_map(|b| &b[p * dim..(p + 1) * dim])
                    .copied()
                    .collect()
            })
            .collect()
    }

    /// Attention of the query rows at `positions` (`q` is `[heads][rows]
    /// [dim]`) over the cache, each row seeing the positions up to its own
    /// (the last `window` of them, when given); returns `[rows][heads *
    /// dim]`. One task per KV head and block of [`ATTEND_ROWS`] rows, on
    /// rayon's threads, each for every query head of the group.
    fn attend_rows(
        &self,
        q: &[f32],
        positions: &[usize],
        (heads, dim): (usize, usize),
        window: Option<usize>,
    ) -> Vec<f32> {
        let rows = positions.len();
        let group = heads / self.keys.len().max(1);
        let tasks: Vec<(usize, usize)> = (0..self.keys.len())
            .flat_map(|g| (0..rows).step_by(ATTEND_ROWS).map(move |first| (g, first)))
            .collect();
        let done: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(g, first)| {
                let block = first..(first + ATTEND_ROWS).min(rows);
                let queries: Vec<&[f32]> = (g * group..(g + 1) * group)
                    .map(|h| &q[(h * rows + block.start) * dim..(h * rows + block.end) * dim])
                    .collect();
                let kv = Causal {
                    keys: &self.keys[g],
                    values: &self.values[g],
                    dim,
                    positions: &positions[block],
                    window,
                };
                let mut out = vec![0.0f32; queries.len() * kv.positions.len() * dim];
                attend_causal(&mut out, &queries, &kv);
                out
            })
            .collect();
        let mut out = vec![0.0f32; rows * heads * dim];
        for (&(g, first), done) in tasks.iter().zip(&done) {
            let block_rows = ATTEND_ROWS.min(rows - first);
            for (i, head) in done.chunks_exact(block_rows * dim).enumerate() {
                let h = g * group + i;
                for (r, row) in head.chunks_exact(dim).enumerate() {
                    let at = (first + r) * heads * dim + h * dim;
                    out[at..at + dim].copy_from_slice(row);
                }
            }
        }
        out
    }

    /// Attention of one query row `q` (`[heads * head_dim]`) over every
    /// cached position (the last `window` of them, when given); returns
    /// `[heads * head_dim]`.
    fn attend_one(&self, q: &[f32], heads: usize, dim: usize, window: Option<usize>) -> Vec<f32> {
        let group = heads / self.keys.len();
        let scale = 1.0 / (dim as f32).sqrt();
        let positions = self.keys.first().map_or(0, |k| k.len() / dim);
        let first = window.map_or(0, |w| positions.saturating_sub(w)) * dim;
        let outputs: Vec<OnceLock<Vec<f32>>> = (0..heads).map(|_| OnceLock::new()).collect();
        candle_core::utils::barrier_pool().execute_chunked(heads, |range| {
            for h in range {
                let (keys, values) = (
                    &self.keys[h / group][first..],
                    &self.values[h / group][first..],
                );
                let query = &q[h * dim..(h + 1) * dim];
                let mut weights: Vec<f32> = keys
                    .chunks_exact(dim)
                    .map(|key| dot(query, key) * scale)
                    .collect();
                let len = weights.len();
                softmax_rows(&mut weights, len);
                let mut out = vec![0.0f32; dim];
                for (w, value) in weights.iter().zip(values.chunks_exact(dim)) {
                    out.iter_mut().zip(value).for_each(|(o, v)| *o += w * v);
                }
                let _ = outputs[h].set(out);
            }
        });
        outputs
            .into_iter()
            .flat_map(|o| o.into_inner().unwrap_or_default())
            .collect()
    }
}

/// The keys and values of a run of cached positions ([`Decoder::span`]),
/// to append again later, at the same or another position.
pub struct Kept {
    /// The position of the first, as computed.
    start: usize,
    /// Positions held.
    positions: usize,
    /// Per layer: keys, then values.
    layers: Vec<(PerHead, PerHead)>,
}

impl Kept {
    /// Positions held.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|(k, v)| k.iter().chain(v))
            .map(|b| b.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Writes it, little-endian: start and positions as u64, then every
    /// layer's keys and values, head by head.
    pub fn write_to(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for v in [self.start, self.positions] {
            out.write_all(&(v as u64).to_le_bytes())?;
        }
        for (keys, values) in &self.layers {
            for buffer in keys.iter().chain(values) {
                for x in buffer {
                    out.write_all(&x.to_le_bytes())?;
                }
            }
        }
        Ok(())
    }
}

impl Decoder {
    /// Reads a [`Kept`] that [`Kept::write_to`] wrote for this model: its
    /// positions must fit the context and its size this model's layers,
    /// KV heads and head size, else it is an error before anything is
    /// allocated.
    pub fn read_kept(&self, input: &mut impl std::io::Read, limit: u64) -> std::io::Result<Kept> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        let start = u64::from_le_bytes(word);
        input.read_exact(&mut word)?;
        let positions = u64::from_le_bytes(word);
        let context = self.cos.dim(0).map_err(|e| bad(&e.to_string()))? as u64;
        if start.saturating_add(positions) > context {
            return Err(bad("positions past the context"));
        }
        let (layers, heads, dim) = (self.layers.len(), self.shape.kv_heads, self.shape.head_dim);
        let floats = positions as usize * dim;
        let need = (layers * 2 * heads * floats * 4) as u64;
        if need.saturating_add(16) > limit {
            return Err(bad("more keys and values than the file holds"));
        }
        let mut buffer = || -> std::io::Result<Vec<f32>> {
            let mut bytes = vec![0u8; floats * 4];
            input.read_exact(&mut bytes)?;
            Ok(bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect())
        };
        let mut kept = Kept {
            start: start as usize,
            positions: positions as usize,
            layers: Vec::with_capacity(layers),
        };
        for _ in 0..layers {
            let keys = (0..heads)
                .map(|_| buffer())
                .collect::<std::io::Result<_>>()?;
            let values = (0..heads)
                .map(|_| buffer())
                .collect::<std::io::Result<_>>()?;
            kept.layers.push((keys, values));
        }
        Ok(kept)
    }
}

/// One buffer per KV head.
type PerHead = Vec<Vec<f32>>;

/// A loaded model with its KV cache: feed it tokens, get next-token logits.
pub struct Decoder {
    shape: Shape,
    embed: QTensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    /// Rotary tables of the sliding layers, when their base differs.
    local: Option<(Tensor, Tensor)>,
    /// The rotary frequencies behind `cos` and `sin`, and `local`'s.
    inverse: Vec<f32>,
    local_inverse: Option<Vec<f32>>,
    /// Positions already in the KV cache.
    position: usize,
}

/// Reads tensors from one GGUF file.
struct Reader<'a, R> {
    content: &'a gguf_file::Content,
    file: &'a mut R,
    /// Weights kept in int8 too, for every product.
    int8: bool,
    /// Int8 weights kept from an earlier load, by [`Decoder::int8_weights`]
    /// name; taken instead of requantizing when their shape is the GGUF's.
    cached: HashMap<String, Int8Weights>,
}

impl<R: std::io::Read + std::io::Seek> Reader<'_, R> {
    fn q(&mut self, name: &str) -> Result<QTensor> {
        self.content.tensor(self.file, name, &Device::Cpu)
    }

    fn f32(&mut self, name: &str) -> Result<Tensor> {
        self.q(name)?.dequantize(&Device::Cpu)
    }

    fn optional(&mut self, name: &str) -> Result<Option<Tensor>> {
        if self.content.tensor_infos.contains_key(name) {
            self.f32(name).map(Some)
        } else {
            Ok(None)
        }
    }

    fn linear(&mut self, prefix: &str) -> Result<Linear> {
        self.linear_of(prefix, &format!("{prefix}.weight"))
    }

    /// The product named `name` (its bias at `name`'s prefix) on the GGUF
    /// tensor `tensor`: from the cached int8 weights when they fit it.
    fn linear_of(&mut self, name: &str, tensor: &str) -> Result<Linear> {
        let bias = self.optional(&format!("{name}.bias"))?;
        let shape = self
            .content
            .tensor_infos
            .get(tensor)
            .map(|info| (info.shape.dims().to_vec(), info.ggml_dtype));
        if let (true, Some(w), Some((dims, dtype))) = (self.int8, self.cached.remove(name), shape)
            && dtype != GgmlDType::F32
            && dims == [w.outputs(), w.inputs()]
        {
            let row = if keeps_blocks(dtype) {
                row_weights(&self.q(tensor)?)?
            } else {
                None
            };
            return Ok(Linear {
                outputs: w.outputs(),
                product: Product::Int8(w),
                row,
                bias,
            });
        }
        Linear::new(self.q(tensor)?, bias, self.int8)
    }
}

impl Decoder {
    /// Builds the model of architecture `arch` from an opened GGUF file;
    /// with `int8_weights`, its matrix products run in int8.
    pub fn load<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        file: &mut R,
        arch: &str,
        context_length: usize,
        int8_weights: bool,
        cached: HashMap<String, Int8Weights>,
    ) -> Result<Self> {
        let shape = Shape::read(content, arch)?;
        let mut r = Reader {
            content,
            file,
            int8: int8_weights,
            cached,
        };
        let embed = r.q("token_embd.weight")?;
        let output = if content.tensor_infos.contains_key("output.weight") {
            r.linear("output")?
        } else {
            r.linear_of("output", "token_embd.weight")?
        };
        let layers = (0..shape.layers)
            .map(|i| {
                let p = format!("blk.{i}");
                Ok(Layer {
                    attn_norm: r.f32(&format!("{p}.attn_norm.weight"))?,
                    q: r.linear(&format!("{p}.attn_q"))?,
                    k: r.linear(&format!("{p}.attn_k"))?,
                    v: r.linear(&format!("{p}.attn_v"))?,
                    o: r.linear(&format!("{p}.attn_output"))?,
                    q_norm: r.optional(&format!("{p}.attn_q_norm.weight"))?,
                    k_norm: r.optional(&format!("{p}.attn_k_norm.weight"))?,
                    post_attn_norm: r.optional(&format!("{p}.post_attention_norm.weight"))?,
                    ffn_norm: r.f32(&format!("{p}.ffn_norm.weight"))?,
                    gate: r.linear(&format!("{p}.ffn_gate"))?,
                    up: r.linear(&format!("{p}.ffn_up"))?,
                    down: r.linear(&format!("{p}.ffn_down"))?,
                    post_ffn_norm: r.optional(&format!("{p}.post_ffw_norm.weight"))?,
                    window: shape
                        .sliding
                        .as_ref()
                        .filter(|s| !(i + 1).is_multiple_of(s.pattern))
                        .map(|s| s.window),
                    cache: Cache::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let inverse = inverse_frequencies(shape.head_dim, shape.rope_base);
        let local_inverse = shape
            .sliding
            .as_ref()
            .map(|s| inverse_frequencies(shape.head_dim, s.rope_base));
        let (cos, sin) = rope_tables(&inverse, context_length)?;
        let local = match &local_inverse {
            Some(inverse) => Some(rope_tables(inverse, context_length)?),
            None => None,
        };
        Ok(Decoder {
            norm: r.f32("output_norm.weight")?,
            shape,
            embed,
            layers,
            output,
            cos,
            sin,
            local,
            inverse,
            local_inverse,
            position: 0,
        })
    }

    /// Every int8 weight, named as [`Decoder::load`] finds it again in
    /// `cached`: `output`, then `blk.N.attn_q` and the rest per layer.
    pub fn int8_weights(&self) -> Vec<(String, &Int8Weights)> {
        let mut named = Vec::new();
        named.extend(self.output.int8().map(|w| ("output".to_string(), w)));
        for (i, layer) in self.layers.iter().enumerate() {
            let linears = [
                ("attn_q", &layer.q),
                ("attn_k", &layer.k),
                ("attn_v", &layer.v),
                ("attn_output", &layer.o),
                ("ffn_gate", &layer.gate),
                ("ffn_up", &layer.up),
                ("ffn_down", &layer.down),
            ];
            for (name, linear) in linears {
                named.extend(linear.int8().map(|w| (format!("blk.{i}.{name}"), w)));
            }
        }
        named
    }

    /// Forgets every cached position from `position` on: what follows is
    /// computed from the shared prefix (a fork of the cache). Every layer
    /// is cut, even at the cached length: a forward pass that
    /// failed part way has appended to some layers only.
    pub fn truncate(&mut self, position: usize) {
        self.position = self.position.min(position);
        let dim = self.shape.head_dim;
        for layer in &mut self.layers {
            layer.cache.truncate(self.position, dim);
        }
    }

    /// Bytes of keys and values cached.
    pub fn cache_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.cache.keys.iter().chain(&l.cache.values))
            .map(|b| b.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Positions cached.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The keys and values of cached positions `start..end`, to append
    /// later with [`Decoder::append`].
    pub fn span(&self, start: usize, end: usize) -> Kept {
        let dim = self.shape.head_dim;
        let end = end.min(self.position);
        let start = start.min(end);
        let copy = |buffers: &[Vec<f32>]| {
            buffers
                .iter()
                .map(|b| b[start * dim..end * dim].to_vec())
                .collect()
        };
        Kept {
            start,
            positions: end - start,
            layers: self
                .layers
                .iter()
                .map(|l| (copy(&l.cache.keys), copy(&l.cache.values)))
                .collect(),
        }
    }

    /// Appends `kept` after the cached positions. Its keys are turned to
    /// their new positions: rotary embeddings compose, so a key rotated
    /// for position `p` and then by `shift` is the key for `p + shift`.
    /// The values carry no position. What `kept` attended to when it was
    /// computed stays what it attended to: that is the approximation a
    /// moved span makes; in place (no shift) nothing changes.
    pub fn append(&mut self, kept: &Kept) {
        let shift = self.position as i64 - kept.start as i64;
        let dim = self.shape.head_dim;
        for (layer, (keys, values)) in self.layers.iter_mut().zip(&kept.layers) {
            let inverse = match (&self.local_inverse, layer.window) {
                (Some(local), Some(_)) => local,
                _ => &self.inverse,
            };
            let cache = &mut layer.cache;
            cache.keys.resize_with(keys.len(), Vec::new);
            cache.values.resize_with(values.len(), Vec::new);
            for (buffer, head) in cache.keys.iter_mut().zip(keys) {
                let from = buffer.len();
                buffer.extend_from_slice(head);
                if shift != 0 {
                    rotate(
                        &mut buffer[from..],
                        dim,
                        inverse,
                        shift,
                        self.shape.rope_neox,
                    );
                }
            }
            for (buffer, head) in cache.values.iter_mut().zip(values) {
                buffer.extend_from_slice(head);
            }
        }
        self.position += kept.positions;
    }

    /// The cache as it was when `kept` (a span from position 0) was taken.
    pub fn restore(&mut self, kept: &Kept) {
        self.truncate(0);
        self.append(kept);
    }

    /// Rows of the output layer: the logits' length.
    pub fn vocab(&self) -> usize {
        self.output.outputs
    }

    /// The embeddings of `tokens` (`[rows, hidden]`), scaled where the
    /// family scales them.
    fn embed_tokens(&self, tokens: &[u32]) -> Result<Tensor> {
        let x = self.embed.embedding(&Tensor::new(tokens, &Device::Cpu)?)?;
        match self.shape.embed_scale {
            Some(scale) => x * scale,
            None => Ok(x),
        }
    }

    /// Recomputes part of the last `tokens.len()` cached positions, a
    /// source's body placed from the cache ([`Decoder::append`]), so that
    /// it attends to what now precedes it (CacheBlend, Yao et al. 2024).
    /// The first two layers are computed again for every position; the
    /// positions whose keys and values the second layer changed most, a
    /// `share` of them, go on through every other layer; the rest keep
    /// what they were computed with. Each recomputed position attends to
    /// the cache up to itself, so the result depends only on what precedes
    /// the body and on the body. Returns the positions taken through
    /// every layer.
    pub fn blend(&mut self, tokens: &[u32], share: f32) -> Result<usize> {
        let n = tokens.len();
        let end = self.position;
        if n == 0 || n > end {
            return Ok(0);
        }
        let start = end - n;
        let dim = self.shape.head_dim;
        let mut x = self.embed_tokens(tokens)?;
        let mut rows: Vec<usize> = (start..end).collect();
        let tables = |rows: &[usize]| -> Result<(Rope, Option<Rope>)> {
            let at = Tensor::new(
                rows.iter().map(|&p| p as u32).collect::<Vec<_>>(),
                &Device::Cpu,
            )?;
            let rope = |(cos, sin): (&Tensor, &Tensor)| -> Result<Rope> {
                Ok(Rope {
                    cos: cos.index_select(&at, 0)?,
                    sin: sin.index_select(&at, 0)?,
                    neox: self.shape.rope_neox,
                })
            };
            let local = match &self.local {
                Some((cos, sin)) => Some(rope((cos, sin))?),
                None => None,
            };
            Ok((rope((&self.cos, &self.sin))?, local))
        };
        let (mut global, mut local) = tables(&rows)?;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let before = (i == 1).then(|| layer.cache.rows(start, end, dim));
            let rope = match (&local, layer.window) {
                (Some(local), Some(_)) => local,
                _ => &global,
            };
            x = layer.block(&x, &self.shape, rope, &rows, Write::At)?;
            if let Some(before) = before {
                let after = layer.cache.rows(start, end, dim);
                let keep = most_changed(&before, &after, share);
                x = x.index_select(&Tensor::new(keep.as_slice(), &Device::Cpu)?, 0)?;
                rows = keep.iter().map(|&r| start + r as usize).collect();
                (global, local) = tables(&rows)?;
            }
        }
        Ok(rows.len())
    }

    /// Runs `tokens` after the cached positions; returns the logits that
    /// follow the last one.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Tensor> {
        let rows = tokens.len();
        let pos = self.position;
        let eps = self.shape.rms_eps as f32;
        let mut x = self.embed_tokens(tokens)?;
        let rope = |(cos, sin): (&Tensor, &Tensor)| -> Result<Rope> {
            Ok(Rope {
                cos: cos.narrow(0, pos, rows)?,
                sin: sin.narrow(0, pos, rows)?,
                neox: self.shape.rope_neox,
            })
        };
        let global = rope((&self.cos, &self.sin))?;
        let local = match &self.local {
            Some((cos, sin)) => Some(rope((cos, sin))?),
            None => None,
        };
        let positions: Vec<usize> = (pos..pos + rows).collect();
        for layer in &mut self.layers {
            let rope = match (&local, layer.window) {
                (Some(local), Some(_)) => local,
                _ => &global,
            };
            x = layer.block(&x, &self.shape, rope, &positions, Write::Append)?;
        }
        self.position += rows;
        let last = x.narrow(0, rows - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        self.output.forward(&last)?.squeeze(0)
    }
}

/// `x` through the RMS norm `weight` (over its last dimension), if any.
fn norm_if(x: Tensor, weight: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    match weight {
        Some(w) => candle_nn::ops::rms_norm(&x.contiguous()?, w, eps),
        None => Ok(x),
    }
}

struct Rope {
    cos: Tensor,
    sin: Tensor,
    neox: bool,
}

impl Rope {
    /// `x` is `[1, heads, rows, head_dim]`, contiguous.
    fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.neox {
            candle_nn::rotary_emb::rope(x, &self.cos, &self.sin)
        } else {
            candle_nn::rotary_emb::rope_i(x, &self.cos, &self.sin)
        }
    }
}

/// Where a pass puts the keys and values it computes.
#[derive(Clone, Copy)]
enum Write {
    /// After the cached positions.
    Append,
    /// Over the cached positions of the rows.
    At,
}

impl Layer {
    /// One transformer block over the rows of `x` (`[rows, hidden]`):
    /// attention, then the feed-forward, each added to the residual.
    fn block(
        &mut self,
        x: &Tensor,
        shape: &Shape,
        rope: &Rope,
        positions: &[usize],
        write: Write,
    ) -> Result<Tensor> {
        let eps = shape.rms_eps as f32;
        let h = candle_nn::ops::rms_norm(x, &self.attn_norm, eps)?;
        let attended = self.attention(&h, shape, rope, positions, write)?;
        let x = (x + norm_if(attended, self.post_attn_norm.as_ref(), eps)?)?;
        let h = candle_nn::ops::rms_norm(&x, &self.ffn_norm, eps)?;
        let gate = self.gate.forward(&h)?;
        let gate = if shape.gelu {
            gate.gelu()?
        } else {
            gate.silu()?
        };
        let fed = self.down.forward(&(gate * self.up.forward(&h)?)?)?;
        x + norm_if(fed, self.post_ffn_norm.as_ref(), eps)?
    }

    /// `h` is `[rows, hidden]`, its rows at cached `positions`; returns the
    /// attention output `[rows, hidden]`.
    fn attention(
        &mut self,
        h: &Tensor,
        shape: &Shape,
        rope: &Rope,
        positions: &[usize],
        write: Write,
    ) -> Result<Tensor> {
        let rows = h.dim(0)?;
        let (heads, kv_heads, dim) = (shape.heads, shape.kv_heads, shape.head_dim);
        let split =
            |t: Tensor, n: usize| t.reshape((1, rows, n, dim))?.transpose(1, 2)?.contiguous();
        let eps = shape.rms_eps as f32;
        let q = norm_if(split(self.q.forward(h)?, heads)?, self.q_norm.as_ref(), eps)?;
        let k = norm_if(
            split(self.k.forward(h)?, kv_heads)?,
            self.k_norm.as_ref(),
            eps,
        )?;
        let q = rope.apply(&q.contiguous()?)?;
        let k = rope.apply(&k.contiguous()?)?;
        let v = split(self.v.forward(h)?, kv_heads)?;
        match write {
            Write::Append => self.cache.append(&k, &v)?,
            Write::At => self.cache.put(&k, &v, positions, dim)?,
        }
        let q = q.flatten_all()?.to_vec1::<f32>()?;
        let out = if rows == 1 && matches!(write, Write::Append) {
            self.cache.attend_one(&q, heads, dim, self.window)
        } else {
            self.cache
                .attend_rows(&q, positions, (heads, dim), self.window)
        };
        self.o
            .forward(&Tensor::from_vec(out, (rows, heads * dim), &Device::Cpu)?)
    }
}

/// The rows whose keys and values changed most between `before` and
/// `after` (squared distance), a `share` of them (at least one), in
/// their order.
fn most_changed(before: &[Vec<f32>], after: &[Vec<f32>], share: f32) -> Vec<u32> {
    let change = |(b, a): (&Vec<f32>, &Vec<f32>)| -> f32 {
        b.iter().zip(a).map(|(x, y)| (x - y) * (x - y)).sum()
    };
    let changes: Vec<f32> = before.iter().zip(after).map(change).collect();
    let count = ((changes.len() as f32 * share).ceil() as usize).clamp(1, changes.len().max(1));
    let mut order: Vec<u32> = (0..changes.len() as u32).collect();
    order.sort_by(|&a, &b| changes[b as usize].total_cmp(&changes[a as usize]));
    order.truncate(count);
    order.sort_unstable();
    order
}

/// Rotary frequencies: `base^(-2i / head_dim)` for each pair of dimensions.
fn inverse_frequencies(head_dim: usize, base: f32) -> Vec<f32> {
    (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect()
}

/// Rotary embedding tables `[positions, head_dim / 2]`.
fn rope_tables(inverse: &[f32], positions: usize) -> Result<(Tensor, Tensor)> {
    let inv = Tensor::new(inverse, &Device::Cpu)?.reshape((1, inverse.len()))?;
    let t = Tensor::arange(0u32, positions as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((positions, 1))?;
    let angles = t.matmul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Rotates each key of `keys` (`[positions][dim]`) by `shift` positions,
/// with the pairs of dimensions candle's `rope` (halves, `neox`) or
/// `rope_i` (neighbours) rotate.
fn rotate(keys: &mut [f32], dim: usize, inverse: &[f32], shift: i64, neox: bool) {
    let half = dim / 2;
    let (cos, sin): (Vec<f32>, Vec<f32>) = inverse
        .iter()
        .map(|&f| {
            let angle = shift as f32 * f;
            (angle.cos(), angle.sin())
        })
        .unzip();
    for key in keys.chunks_exact_mut(dim) {
        for i in 0..half {
            let (a, b) = if neox {
                (i, i + half)
            } else {
                (2 * i, 2 * i + 1)
            };
            let (x, y) = (key[a], key[b]);
            key[a] = x * cos[i] - y * sin[i];
            key[b] = x * sin[i] + y * cos[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key rotated for position `p` and then by `shift` is the key
    /// rotated for `p + shift`, in both pairings, either way.
    #[test]
    fn rotating_a_key_moves_it_to_another_position() {
        let dim = 64;
        let inverse = inverse_frequencies(dim, 10_000.0);
        let (cos, sin) = rope_tables(&inverse, 512).unwrap();
        let key: Vec<f32> = (0..dim)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let at = |p: usize, neox: bool| -> Vec<f32> {
            let rope = Rope {
                cos: cos.narrow(0, p, 1).unwrap(),
                sin: sin.narrow(0, p, 1).unwrap(),
                neox,
            };
            let x = Tensor::from_slice(&key, (1, 1, 1, dim), &Device::Cpu).unwrap();
            rope.apply(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for neox in [true, false] {
            for (p, shift) in [(3usize, 400i64), (450, -300), (100, 0)] {
                let mut moved = at(p, neox);
                rotate(&mut moved, dim, &inverse, shift, neox);
                let expected = at((p as i64 + shift) as usize, neox);
                for (a, b) in moved.iter().zip(&expected) {
                    assert!(
                        (a - b).abs() < 1e-3,
                        "{p} by {shift} (neox {neox}): {a} vs {b}"
                    );
                }
            }
        }
    }

    fn model(name: &str, arch: &str) -> Decoder {
        model_with(name, arch, false)
    }

    fn model_with(name: &str, arch: &str, int8_weights: bool) -> Decoder {
        model_from(name, arch, int8_weights, HashMap::new())
    }

    fn model_from(
        name: &str,
        arch: &str,
        int8_weights: bool,
        cached: HashMap<String, Int8Weights>,
    ) -> Decoder {
        let mut config = crate::config::Config::default();
        config.generator.model = Some(name.into());
        let path = config.generator_path();
        let mut file = std::fs::File::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/install-models.sh)", path.display()));
        let content = gguf_file::Content::read(&mut file).unwrap();
        Decoder::load(&content, &mut file, arch, 2048, int8_weights, cached).unwrap()
    }

    /// Weights kept from one load and handed to the next give the same
    /// model: the same weights under the same names, the same logits; a
    /// kept weight of another shape is not taken.
    #[test]
    fn int8_weights_kept_from_a_load_give_the_same_model() {
        let mut first = model_with("light", "llama", true);
        let copy = |w: &Int8Weights| {
            let mut bytes = Vec::new();
            w.write_to(&mut bytes).unwrap();
            Int8Weights::read_from(&mut bytes.as_slice(), u64::MAX).unwrap()
        };
        let mut kept: HashMap<String, Int8Weights> = first
            .int8_weights()
            .into_iter()
            .map(|(name, w)| (name, copy(w)))
            .collect();
        assert!(kept.len() > 7 * first.layers.len(), "{} kept", kept.len());
        // One weight of the wrong shape: requantized from the GGUF instead.
        kept.insert("blk.0.attn_q".into(), Int8Weights::new(&[0.5; 64], 8));
        let mut second = model_from("light", "llama", true, kept);
        let names =
            |d: &Decoder| -> Vec<String> { d.int8_weights().into_iter().map(|(n, _)| n).collect() };
        assert_eq!(names(&first), names(&second));
        for ((_, a), (_, b)) in first.int8_weights().into_iter().zip(second.int8_weights()) {
            assert_eq!(a, b);
        }
        let tokens: Vec<u32> = (0..24).map(|i| 100 + 37 * i).collect();
        let a = first.forward(&tokens).unwrap();
        let b = second.forward(&tokens).unwrap();
        assert_eq!(max_abs_diff(&a, &b), 0.0);
    }

    fn light_model() -> Decoder {
        model("light", "llama")
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// The prompt path (dequantized GEMM, attention over cache tensors) and
    /// the decoding path (quantized dot products, direct attention over the
    /// cache) compute the same logits.
    #[test]
    fn prompt_and_decode_paths_agree() {
        let mut model = light_model();
        let (batched, stepped) = prompt_and_steps(&mut model, 40, 20);
        let scale: f32 = batched.abs().unwrap().max(0).unwrap().to_scalar().unwrap();
        let diff = max_abs_diff(&batched, &stepped);
        assert!(
            diff < 0.05 * scale,
            "logits differ by {diff} (scale {scale})"
        );
        let argmax = |t: &Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
        assert_eq!(argmax(&batched), argmax(&stepped));
    }

    /// With int8 weights on the default model a prompt multiplies the int8
    /// copy of its `Q5_0` and `Q4_K` weights and a decoded token their own
    /// blocks (`matvec_q5_0`, `matvec_q4k`): the two still agree.
    /// Measured: cosine 0.9986 between the logits (0.9991 when decoding
    /// read the int8 copy too);
    /// on token ids that are no text the best tokens lie close, so each
    /// path's best is asked to be among the other's best three.
    #[test]
    fn decoding_on_the_gguf_blocks_agrees_with_the_int8_prompt() {
        let mut model = model_with("default", "qwen2", true);
        assert_eq!(
            model.layers.iter().all(|l| l.gate.row.is_some()),
            blocks_ready()
        );
        assert_eq!(
            model.layers.iter().any(|l| l.down.row.is_some()),
            blocks_ready()
        );
        let (batched, stepped) = prompt_and_steps(&mut model, 40, 20);
        let cos = cosine(&batched, &stepped);
        assert!(cos > 0.998, "cosine {cos}");
        assert!(best(&stepped, 3).contains(&best(&batched, 1)[0]));
        assert!(best(&batched, 3).contains(&best(&stepped, 1)[0]));
    }

    /// The last logits of `len` tokens as one prompt, and again as a
    /// prompt of `prompt` tokens and the rest decoded one at a time.
    fn prompt_and_steps(model: &mut Decoder, len: u32, prompt: usize) -> (Tensor, Tensor) {
        let tokens: Vec<u32> = (0..len).map(|i| 100 + 37 * i).collect();
        let batched = model.forward(&tokens).unwrap();
        model.truncate(0);
        model.forward(&tokens[..prompt]).unwrap();
        let mut stepped = None;
        for &t in &tokens[prompt..] {
            stepped = Some(model.forward(&[t]).unwrap());
        }
        (batched, stepped.unwrap())
    }

    /// The cosine between two vectors of logits.
    fn cosine(a: &Tensor, b: &Tensor) -> f32 {
        let (a, b): (Vec<f32>, Vec<f32>) = (a.to_vec1().unwrap(), b.to_vec1().unwrap());
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>() / (norm(&a) * norm(&b))
    }

    /// The ids of the `n` largest logits, largest first.
    fn best(t: &Tensor, n: usize) -> Vec<usize> {
        let mut order: Vec<(usize, f32)> = t
            .to_vec1::<f32>()
            .unwrap()
            .into_iter()
            .enumerate()
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        order.into_iter().take(n).map(|(i, _)| i).collect()
    }

    /// A span computed elsewhere and moved in place: blended through every
    /// position it gives the logits of a prompt computed in place; blended
    /// in part it comes closer to them than not blended at all.
    #[test]
    fn a_blended_span_comes_back_to_the_prompt_computed_in_place() {
        let mut model = model_with("default", "qwen2", true);
        let head: Vec<u32> = (0..24).map(|i| 300 + 41 * i).collect();
        let other: Vec<u32> = (0..30).map(|i| 900 + 29 * i).collect();
        let body: Vec<u32> = (0..48).map(|i| 2000 + 31 * i).collect();
        let tail: Vec<u32> = (0..12).map(|i| 5000 + 17 * i).collect();
        // Computed in place, piece by piece as a prefill cuts a prompt.
        let fresh = {
            model.truncate(0);
            for piece in [&head, &other, &body] {
                model.forward(piece).unwrap();
            }
            model.forward(&tail).unwrap()
        };
        // The body computed right after the head, then placed after `other`.
        model.truncate(0);
        model.forward(&head).unwrap();
        model.forward(&body).unwrap();
        let kept = model.span(head.len(), head.len() + body.len());
        let moved = |model: &mut Decoder, share: Option<f32>| {
            model.truncate(head.len());
            model.forward(&other).unwrap();
            model.append(&kept);
            if let Some(share) = share {
                let recomputed = model.blend(&body, share).unwrap();
                assert_eq!(recomputed, (body.len() as f32 * share).ceil() as usize);
            }
            model.forward(&tail).unwrap()
        };
        let scale: f32 = fresh.abs().unwrap().max(0).unwrap().to_scalar().unwrap();
        let whole = max_abs_diff(&fresh, &moved(&mut model, Some(1.0)));
        assert!(whole < 1e-3 * scale, "whole blend: {whole} (scale {scale})");
        let none = max_abs_diff(&fresh, &moved(&mut model, None));
        let part = max_abs_diff(&fresh, &moved(&mut model, Some(0.25)));
        assert!(part < none, "a quarter blended: {part}, none: {none}");
    }

    /// The same for gemma3 past its 512-position sliding window: the
    /// windowed mask of a prompt chunk and the windowed read of decoding
    /// agree, with its query/key and post norms.
    #[test]
    fn sliding_window_layers_agree_between_prompt_and_decode() {
        let mut model = model("gemma", "gemma3");
        assert_eq!(model.shape.sliding.as_ref().map(|s| s.window), Some(512));
        let (batched, stepped) = prompt_and_steps(&mut model, 600, 580);
        // The 270M model is more sensitive to the two paths' rounding: its
        // logits differ by 5-7 % of their scale at any length, inside the
        // window or past it (decoding quantizes each row of activations,
        // so a last-bit change in the cache moves them by that much). Its
        // two best tokens here are 0.04-0.16 apart, so each path's best
        // is asked to be among the other's best three, not the same.
        let scale: f32 = batched.abs().unwrap().max(0).unwrap().to_scalar().unwrap();
        let diff = max_abs_diff(&batched, &stepped);
        assert!(
            diff < 0.1 * scale,
            "logits differ by {diff} (scale {scale})"
        );
        assert!(best(&stepped, 3).contains(&best(&batched, 1)[0]));
        assert!(best(&batched, 3).contains(&best(&stepped, 1)[0]));
    }

    /// In int8 a prompt gives logits close to the GGUF path's (f32 on
    /// dequantized weights), and the same next token, on the default model
    /// and the light one; so does the token decoded after it (int8 one-row
    /// products against the GGUF's quantized kernels).
    #[test]
    fn int8_weights_agree_with_the_gguf_path() {
        for (name, arch) in [("default", "qwen2"), ("light", "llama")] {
            let text: Vec<u32> = (0..96).map(|i| 200 + 53 * i).collect();
            let mut runs = Vec::new();
            for int8 in [false, true] {
                let mut model = model_with(name, arch, int8);
                let prompt = model.forward(&text).unwrap();
                let next = model.forward(&[text[5]]).unwrap();
                runs.push((prompt, next));
            }
            let argmax = |t: &Tensor| t.argmax(0).unwrap().to_scalar::<u32>().unwrap();
            for (f32, int8) in [(&runs[0].0, &runs[1].0), (&runs[0].1, &runs[1].1)] {
                assert_ne!(
                    max_abs_diff(f32, int8),
                    0.0,
                    "{name}: the prompt ran in f32"
                );
                // Measured on the prompt: cosine 0.9959 on the default model
                // (its largest logit moves by 9 % of the scale), where the
                // GGUF decode path's 8-bit inputs give 0.9996.
                let cos = cosine(f32, int8);
                assert!(
                    cos > 0.99,
                    "{name}: cosine {cos} between int8 and f32 logits"
                );
                // On token ids that are no text the distribution is flat
                // (the light model's top logits lie close): int8's choice
                // is among the GGUF path's three best.
                let chosen = argmax(int8) as usize;
                let three = best(f32, 3);
                assert!(three.contains(&chosen), "{name}: {chosen} not in {three:?}");
            }
        }
    }

    #[test]
    fn truncating_to_zero_forgets_the_cache() {
        let mut model = light_model();
        let first = model.forward(&[1, 2, 3]).unwrap();
        model.forward(&[4, 5]).unwrap();
        model.truncate(0);
        let again = model.forward(&[1, 2, 3]).unwrap();
        assert_eq!(max_abs_diff(&first, &again), 0.0);
    }

    /// A truncated cache continues exactly as if the dropped positions had
    /// never been seen: the fork self-consistency and prefix reuse rely on.
    #[test]
    fn truncate_forks_the_cache_at_a_shared_prefix() {
        let mut model = light_model();
        model.forward(&[1, 2, 3, 4]).unwrap();
        let first = model.forward(&[5]).unwrap();
        model.forward(&[9, 9]).unwrap();
        model.truncate(4);
        assert_eq!(model.position, 4);
        let again = model.forward(&[5]).unwrap();
        assert_eq!(max_abs_diff(&first, &again), 0.0);
    }
}

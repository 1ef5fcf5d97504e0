//! BERT-family sentence encoder (all-MiniLM-L6-v2 by default) on candle:
//! tokenize, run the encoder, mean-pool over the tokens, L2-normalise.
//!
//! Two forward passes share the weights format:
//! - [`Backend::Packed`] (default): the sequences of a batch are packed end to
//!   end with no padding; the dense layers run as one large GEMM over all
//!   tokens, Q/K/V as one fused projection (Q pre-scaled), attention per
//!   sequence, and erf-GELU through the vectorised kernel in
//!   `kernels`. Its [`Int8`] says which inputs run the dense layers in
//!   8-bit integers (short queries, documents, both or neither).
//! - [`Backend::Reference`]: candle-transformers' `BertModel` on padded,
//!   length-sorted batches, as in candle's example. Kept as the baseline for
//!   `lore bench` and as a parity oracle in tests.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use rayon::prelude::*;

use super::{Embedder, EmbedderInfo, Precision, normalize};
use crate::chunk::Sizer;
use crate::error::{Error, Result};
use crate::kernels::{
    Int8Weights, Onto, View, amx_bf16_ready, bf16_pairs, bf16_rows, exp_rows, exp_rows_bf16,
    fill_rows, gelu, grow, layer_norm_rows, matmul, matmul_bf16, matmul_int8,
};
use crate::types::content_hash;

const WEIGHTS: &str = "model.safetensors";

fn model_error(dir: &Path, reason: String) -> Error {
    Error::Model {
        path: dir.to_path_buf(),
        reason,
    }
}

/// The small files of a model directory, read to identify it.
struct ModelFiles {
    config: BertConfig,
    config_bytes: Vec<u8>,
    tokenizer: Vec<u8>,
    weights_len: u64,
}

impl ModelFiles {
    fn read(dir: &Path) -> Result<ModelFiles> {
        let missing = |name: &str, e: std::io::Error| {
            model_error(
                dir,
                format!(
                    "cannot read {name}: {e} (run scripts/install-models.sh, or set embedder.path)"
                ),
            )
        };
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| missing(name, e));
        let config_bytes = read("config.json")?;
        let tokenizer = read("tokenizer.json")?;
        let weights_len = std::fs::metadata(dir.join(WEIGHTS))
            .map_err(|e| missing(WEIGHTS, e))?
            .len();
        let config = serde_json::from_slice(&config_bytes)
            .map_err(|e| model_error(dir, format!("config.json: {e}")))?;
        Ok(ModelFiles {
            config,
            config_bytes,
            tokenizer,
            weights_len,
        })
    }

    /// `<dir name>-<fingerprint>`: another model gives another id.
    fn id(&self, dir: &Path) -> String {
        let name = dir
            .file_name()
            .map_or_else(|| "bert".into(), |n| n.to_string_lossy().into_owned());
        let mut bytes = self.config_bytes.clone();
        bytes.extend_from_slice(&self.tokenizer);
        bytes.extend_from_slice(&self.weights_len.to_le_bytes());
        format!("{name}-{}", &content_hash(&bytes)[..8])
    }
}

/// Which forward pass to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Packed sequences, fused kernels (fast), with the dense layers in
    /// int8 for the inputs [`Int8`] names.
    Packed(Int8),
    /// candle-transformers' padded `BertModel` (baseline).
    Reference,
}

/// Which inputs of the packed pass run their dense layers in int8.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Int8 {
    /// Search queries up to 64 tokens (longer ones run in f32), on the
    /// calling thread.
    pub queries: bool,
    /// Documents ([`Embedder::embed`]), on rayon's threads.
    pub documents: bool,
}

impl Int8 {
    /// Everything in f32.
    pub const OFF: Int8 = Int8 {
        queries: false,
        documents: false,
    };
}

enum Model {
    Packed(PackedBert),
    Reference(BertModel),
}

/// Bytes of input kept per token the model may see. Real text runs 3–6
/// bytes a token; the margin only cuts inputs nobody could embed whole
/// anyway (an 11 MB query is not tokenized to keep its first 256 tokens).
const MAX_TOKEN_BYTES: usize = 128;

/// A loaded BERT sentence encoder.
pub struct BertEmbedder {
    model: Model,
    tokenizer: Tokenizer,
    max_tokens: usize,
    dir: PathBuf,
    id: String,
    dim: usize,
    batch_size: usize,
}

impl BertEmbedder {
    /// The id and dimension of the model in `dir`, without loading weights
    /// (documents: f32; the caller sets the precision it loads with).
    pub fn identify(dir: &Path) -> Result<EmbedderInfo> {
        let files = ModelFiles::read(dir)?;
        Ok(EmbedderInfo {
            id: files.id(dir),
            dim: files.config.hidden_size,
            documents: Precision::F32,
        })
    }

    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from
    /// `dir`; inputs are truncated to `max_tokens`.
    pub fn load(dir: &Path, max_tokens: usize, batch_size: usize) -> Result<Self> {
        Self::load_with(dir, max_tokens, batch_size, Backend::Packed(Int8::OFF))
    }

    /// Like [`BertEmbedder::load`], choosing the forward pass.
    pub fn load_with(
        dir: &Path,
        max_tokens: usize,
        batch_size: usize,
        backend: Backend,
    ) -> Result<Self> {
        let model_err = |reason: String| model_error(dir, reason);
        let files = ModelFiles::read(dir)?;
        let mut tokenizer = Tokenizer::from_bytes(&files.tokenizer)
            .map_err(|e| model_err(format!("tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..TruncationParams::default()
            }))
            .map_err(|e| model_err(format!("tokenizer truncation: {e}")))?;
        tokenizer.with_padding(None);
        let weights = dir.join(WEIGHTS);
        // SAFETY: the weights file is mapped read-only; lore never writes it and
        // users are told not to modify a model while it is in use.
        let vb =
            unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu) }
                .map_err(|e| model_err(format!("model.safetensors: {e}")))?;
        let model = match backend {
            Backend::Packed(int8) => {
                PackedBert::load(&weights, vb, &files.config, int8).map(Model::Packed)
            }
            Backend::Reference => BertModel::load(vb, &files.config).map(Model::Reference),
        }
        .map_err(|e| model_err(format!("model.safetensors: {e}")))?;
        Ok(BertEmbedder {
            model,
            tokenizer,
            max_tokens,
            dir: dir.to_path_buf(),
            id: files.id(dir),
            dim: files.config.hidden_size,
            batch_size,
        })
    }

    /// Tokens per text as the model sees them (special tokens included,
    /// after truncation).
    pub fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>> {
        let encodings = self
            .tokenizer
            .encode_batch(self.cut(texts), true)
            .map_err(|e| Error::Inference(format!("tokenizer: {e}")))?;
        Ok(encodings.iter().map(Encoding::len).collect())
    }

    /// `texts` cut to what truncation could keep: no token spans more than
    /// [`MAX_TOKEN_BYTES`], so tokenizing a huge input costs no more than
    /// tokenizing the part the model will see.
    fn cut<'t>(&self, texts: &[&'t str]) -> Vec<&'t str> {
        let max = self.max_tokens * MAX_TOKEN_BYTES;
        texts.iter().map(|t| crate::types::prefix(t, max)).collect()
    }

    /// Runs one batch of encodings through the model; returns pooled,
    /// normalised vectors in batch order.
    fn forward(&self, batch: &[&Encoding], query: bool) -> Result<Vec<Vec<f32>>> {
        let mut vectors = match &self.model {
            Model::Packed(model) => model.forward(batch, query)?,
            Model::Reference(model) => reference_forward(model, batch)?,
        };
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
}

/// Padded forward pass through candle-transformers' `BertModel`, with mean
/// pooling over the attention mask.
fn reference_forward(model: &BertModel, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>> {
    {
        let max_len = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(batch.len() * max_len);
        let mut mask = Vec::with_capacity(batch.len() * max_len);
        for enc in batch {
            ids.extend(enc.get_ids());
            mask.extend(enc.get_attention_mask());
            ids.extend(std::iter::repeat_n(0u32, max_len - enc.len()));
            mask.extend(std::iter::repeat_n(0u32, max_len - enc.len()));
        }
        let shape = (batch.len(), max_len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        let types = ids.zeros_like()?;
        let hidden = model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1.0, f64::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        Ok(pooled.to_vec2()?)
    }
}

/// Below this many tokens a forward pass runs on the calling thread.
const SMALL_BATCH_TOKENS: usize = 8;

/// Up to this many tokens a query's dense layers run in int8 when
/// [`Int8::queries`] is on (longer ones in f32).
const INT8_TOKENS: usize = 64;

/// One encoder layer with weights laid out for the packed pass: matrices
/// row-major `[in, out]`, Q/K/V fused, Q pre-scaled by `1/sqrt(d_head)`.
struct Layer {
    qkv_w: Weight,
    qkv_b: Vec<f32>,
    out_w: Weight,
    out_b: Vec<f32>,
    ln1: (Vec<f32>, Vec<f32>),
    ff1_w: Weight,
    ff1_b: Vec<f32>,
    ff2_w: Weight,
    ff2_b: Vec<f32>,
    ln2: (Vec<f32>, Vec<f32>),
}

/// BERT encoder running packed (unpadded) batches on plain buffers.
struct PackedBert {
    /// The inputs that run the int8 dense layers.
    int8: Int8,
    word: WordTable,
    vocab: usize,
    position: Vec<f32>,
    token_type: Vec<f32>,
    ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    intermediate: usize,
    max_positions: usize,
    eps: f32,
}

/// Working buffers of one forward pass, sized for `tokens` tokens.
#[derive(Default)]
struct Scratch {
    /// This pass runs its dense layers in int8.
    int8: bool,
    /// This pass splits its work over rayon's threads.
    parallel: bool,
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

/// A dense layer's weight, `[out, in]` as stored, and its bias.
fn linear(
    vb: &VarBuilder,
    prefix: &str,
    inp: usize,
    out: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let w = vb.get((out, inp), &format!("{prefix}.weight"))?;
    let b = vb.get(out, &format!("{prefix}.bias"))?;
    Ok((w, b))
}

/// A dense layer's weight: row-major `[in, out]` in f32, and in int8 when
/// some inputs run in int8.
struct Weight {
    f32: Vec<f32>,
    int8: Option<Int8Weights>,
    out: usize,
}

impl Weight {
    /// From a stored `[out, in]` weight.
    fn new(w: &Tensor, int8: bool) -> candle_core::Result<Weight> {
        let (out, inp) = w.dims2()?;
        Ok(Weight {
            f32: flat(&w.t()?.contiguous()?)?,
            int8: int8
                .then(|| Ok::<_, candle_core::Error>(Int8Weights::new(&flat(w)?, inp)))
                .transpose()?,
            out,
        })
    }

    /// `dst = bias + residual + x × W`, in int8 (when asked and held) or
    /// as an f32 GEMM, on `threads` threads.
    fn apply(
        &self,
        dst: &mut [f32],
        x: &[f32],
        onto: (&[f32], Option<&[f32]>),
        threads: usize,
        int8: bool,
    ) {
        let (bias, residual) = onto;
        if let Some(weights) = self.int8.as_ref().filter(|_| int8) {
            return matmul_int8(dst, x, weights, threads > 1, Onto::Bias(bias, residual));
        }
        fill_rows(dst, bias, residual, threads > 1);
        let k = self.f32.len() / self.out;
        let a = View::dense(x, x.len() / k, k);
        let b = View::dense(&self.f32, k, self.out);
        matmul(dst, self.out, a, b, true, threads);
    }
}

fn norm(vb: &VarBuilder, prefix: &str, size: usize) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
    Ok((
        vb.get(size, &format!("{prefix}.weight"))?.to_vec1()?,
        vb.get(size, &format!("{prefix}.bias"))?.to_vec1()?,
    ))
}

/// A raw pointer that may cross threads; each task writes a disjoint block.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: only used to hand disjoint column blocks of one buffer to rayon
// tasks (see `PackedBert::attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The element `offset` places in. (A method, so closures capture the
    /// whole `Send` wrapper rather than the raw pointer inside it.)
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The word-embedding table, the largest tensor of a small encoder (47 MB
/// of all-MiniLM-L6-v2's 90). Stored as f32 its rows are read from the
/// weights file as texts use them (a query reads a dozen), so it takes no
/// memory; otherwise it is converted and held.
enum WordTable {
    /// The open weights file and where the table starts in it.
    File {
        file: std::fs::File,
        start: u64,
    },
    Owned(Vec<f32>),
}

impl WordTable {
    /// The table `name` of `rows × h` in the safetensors file `path`: read
    /// in place when it is f32, else copied out of `vb`.
    fn load(
        path: &Path,
        vb: &VarBuilder,
        name: &str,
        (rows, h): (usize, usize),
    ) -> candle_core::Result<WordTable> {
        let file = std::fs::File::open(path)?;
        // SAFETY: mapped read-only to read the header; lore never writes a
        // model, and users are told not to modify one while it is in use.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let start = match safetensors::SafeTensors::deserialize(&map) {
            Ok(tensors) => tensors.tensor(name).ok().and_then(|view| {
                let fits = view.dtype() == safetensors::Dtype::F32
                    && view.shape() == [rows, h]
                    && view.data().len() == rows * h * 4;
                fits.then(|| (view.data().as_ptr() as usize - map.as_ptr() as usize) as u64)
            }),
            Err(_) => None,
        };
        Ok(match start {
            Some(start) => WordTable::File { file, start },
            None => WordTable::Owned(flat(
                &vb.get((rows, h), "embeddings.word_embeddings.weight")?,
            )?),
        })
    }

    /// Writes row `id` (checked against the vocabulary by the caller) into
    /// `out`.
    fn row(&self, id: usize, out: &mut [f32]) -> Result<()> {
        let h = out.len();
        match self {
            WordTable::File { file, start } => {
                use std::os::unix::fs::FileExt;
                // Straight into `out`, then from little-endian in place.
                let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
                file.read_exact_at(bytes, start + (id * h * 4) as u64)
                    .map_err(|e| Error::Inference(format!("reading the word embeddings: {e}")))?;
                for v in out.iter_mut() {
                    *v = f32::from_bits(u32::from_le(v.to_bits()));
                }
            }
            WordTable::Owned(table) => out.copy_from_slice(&table[id * h..][..h]),
        }
        Ok(())
    }
}

impl PackedBert {
    fn load(
        weights: &Path,
        vb: VarBuilder,
        config: &BertConfig,
        int8: Int8,
    ) -> candle_core::Result<Self> {
        let int8_weights = int8.queries || int8.documents;
        const WORD: &str = "embeddings.word_embeddings.weight";
        let (vb, word_name) = if vb.contains_tensor(WORD) {
            (vb, WORD.to_string())
        } else {
            (vb.pp("bert"), format!("bert.{WORD}"))
        };
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (q_w, q_b) = linear(&vb, &format!("{p}.attention.self.query"), h, h)?;
            let (k_w, k_b) = linear(&vb, &format!("{p}.attention.self.key"), h, h)?;
            let (v_w, v_b) = linear(&vb, &format!("{p}.attention.self.value"), h, h)?;
            let (out_w, out_b) = linear(&vb, &format!("{p}.attention.output.dense"), h, h)?;
            let (ff1_w, ff1_b) = linear(
                &vb,
                &format!("{p}.intermediate.dense"),
                h,
                config.intermediate_size,
            )?;
            let (ff2_w, ff2_b) = linear(
                &vb,
                &format!("{p}.output.dense"),
                config.intermediate_size,
                h,
            )?;
            layers.push(Layer {
                qkv_w: Weight::new(&Tensor::cat(&[(q_w * scale)?, k_w, v_w], 0)?, int8_weights)?,
                qkv_b: flat(&Tensor::cat(&[(q_b * scale)?, k_b, v_b], 0)?)?,
                out_w: Weight::new(&out_w, int8_weights)?,
                out_b: flat(&out_b)?,
                ln1: norm(&vb, &format!("{p}.attention.output.LayerNorm"), h)?,
                ff1_w: Weight::new(&ff1_w, int8_weights)?,
                ff1_b: flat(&ff1_b)?,
                ff2_w: Weight::new(&ff2_w, int8_weights)?,
                ff2_b: flat(&ff2_b)?,
                ln2: norm(&vb, &format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let type_table = vb.get(
            (config.type_vocab_size, h),
            "embeddings.token_type_embeddings.weight",
        )?;
        Ok(PackedBert {
            int8,
            word: WordTable::load(weights, &vb, &word_name, (config.vocab_size, h))?,
            vocab: config.vocab_size,
            position: flat(&vb.get(
                (config.max_position_embeddings, h),
                "embeddings.position_embeddings.weight",
            )?)?,
            token_type: type_table.get(0)?.to_vec1()?,
            ln: norm(&vb, "embeddings.LayerNorm", h)?,
            layers,
            heads,
            hidden: h,
            intermediate: config.intermediate_size,
            max_positions: config.max_position_embeddings,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// Mean-pooled (not yet normalised) outputs, one per sequence; a short
    /// `query` in int8 when [`Int8::queries`] is on, documents when
    /// [`Int8::documents`] is.
    fn forward(&self, batch: &[&Encoding], query: bool) -> Result<Vec<Vec<f32>>> {
        let seqs: Vec<&[u32]> = batch
            .iter()
            .map(|e| {
                if e.is_empty() {
                    &[0u32][..]
                } else {
                    e.get_ids()
                }
            })
            .collect();
        if let Some(long) = seqs.iter().find(|s| s.len() > self.max_positions) {
            return Err(Error::Inference(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                long.len(),
                self.max_positions
            )));
        }
        if seqs
            .iter()
            .flat_map(|s| s.iter())
            .any(|&id| id as usize >= self.vocab)
        {
            return Err(Error::Inference(
                "token id outside the model's vocabulary".into(),
            ));
        }
        let tokens: usize = seqs.iter().map(|s| s.len()).sum();
        let int8 = if query {
            self.int8.queries && tokens <= INT8_TOKENS
        } else {
            self.int8.documents
        };
        // Splitting a query's int8 products across threads costs more than
        // it saves: it runs on the calling thread.
        let parallel = tokens >= SMALL_BATCH_TOKENS && !(query && int8);
        let groups = sequence_groups(&seqs);
        if parallel && groups.len() >= rayon::current_num_threads() {
            // Each group goes through every layer on one core, its values
            // in that core's cache, rather than each product over the
            // whole batch on every core (a batch's Q, K and V alone are
            // 19 MB for 16 chunks).
            let pooled: Vec<Vec<Vec<f32>>> = groups
                .par_iter()
                .map(|group| self.run(group, int8, false))
                .collect::<Result<_>>()?;
            return Ok(pooled.into_iter().flatten().collect());
        }
        self.run(&seqs, int8, parallel)
    }

    /// Every layer over `seqs`, then each one's mean.
    fn run(&self, seqs: &[&[u32]], int8: bool, parallel: bool) -> Result<Vec<Vec<f32>>> {
        let h = self.hidden;
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let tokens: usize = lens.iter().sum();
        let mut s = Scratch {
            int8,
            parallel,
            x: vec![0.0; tokens * h],
            qkv: vec![0.0; tokens * 3 * h],
            context: vec![0.0; tokens * h],
        };
        self.embed_tokens(seqs, &mut s.x, s.parallel)?;
        for layer in &self.layers {
            self.layer(layer, &lens, &mut s);
        }
        let mut pooled = Vec::with_capacity(lens.len());
        let mut offset = 0;
        for &len in &lens {
            let mut mean = vec![0.0f32; h];
            for row in s.x[offset * h..(offset + len) * h].chunks_exact(h) {
                mean.iter_mut().zip(row).for_each(|(m, x)| *m += x);
            }
            mean.iter_mut().for_each(|m| *m /= len as f32);
            pooled.push(mean);
            offset += len;
        }
        Ok(pooled)
    }

    /// Word + position + token-type embeddings, then layer norm.
    fn embed_tokens(&self, seqs: &[&[u32]], x: &mut [f32], parallel: bool) -> Result<()> {
        let h = self.hidden;
        let mut rows = x.chunks_exact_mut(h);
        for seq in seqs {
            for (pos, &id) in seq.iter().enumerate() {
                let Some(row) = rows.next() else {
                    return Ok(());
                };
                self.word.row(id as usize, row)?;
                let position = &self.position[pos * h..][..h];
                for ((r, p), t) in row.iter_mut().zip(position).zip(&self.token_type) {
                    *r = *r + p + t;
                }
            }
        }
        layer_norm_rows(x, &self.ln.0, &self.ln.1, self.eps, parallel);
        Ok(())
    }

    fn layer(&self, l: &Layer, lens: &[usize], s: &mut Scratch) {
        let (int8, parallel) = (s.int8, s.parallel);
        let threads = if parallel {
            rayon::current_num_threads()
        } else {
            1
        };
        // Q, K, V in one product.
        l.qkv_w
            .apply(&mut s.qkv, &s.x, (&l.qkv_b, None), threads, int8);
        self.attention(&s.qkv, lens, &mut s.context, (parallel, int8));
        // The rest of the layer works row by row: blocks of rows go through
        // it whole, so their intermediate values stay in the core's cache.
        let h = self.hidden;
        let block =
            |(x, context): (&mut [f32], &[f32])| self.rows_after_attention(l, x, context, int8);
        if parallel {
            s.x.par_chunks_mut(ROW_BLOCK * h)
                .zip(s.context.par_chunks(ROW_BLOCK * h))
                .for_each(block);
        } else {
            s.x.chunks_mut(ROW_BLOCK * h)
                .zip(s.context.chunks(ROW_BLOCK * h))
                .for_each(block);
        }
    }

    /// Output projection onto bias + residual, layer norm, feed-forward
    /// (up-projection, GELU, down-projection onto bias + residual), layer
    /// norm: `x ← layer(x, context)` for a block of rows, on this thread.
    fn rows_after_attention(&self, l: &Layer, x: &mut [f32], context: &[f32], int8: bool) {
        let rows = x.len() / self.hidden;
        ROW_SCRATCH.with_borrow_mut(|(tmp, inner)| {
            grow(tmp, rows * self.hidden);
            grow(inner, rows * self.intermediate);
            let (tmp, inner) = (
                &mut tmp[..rows * self.hidden],
                &mut inner[..rows * self.intermediate],
            );
            l.out_w.apply(tmp, context, (&l.out_b, Some(x)), 1, int8);
            layer_norm_rows(tmp, &l.ln1.0, &l.ln1.1, self.eps, false);
            l.ff1_w.apply(inner, tmp, (&l.ff1_b, None), 1, int8);
            gelu(inner, false);
            l.ff2_w.apply(x, inner, (&l.ff2_b, Some(tmp)), 1, int8);
            layer_norm_rows(x, &l.ln2.0, &l.ln2.1, self.eps, false);
        });
    }

    /// Self-attention of each packed sequence over itself only; one task per
    /// (sequence, head), each writing its own column block of `context`.
    /// With `int8`, and where the CPU has AMX-BF16 and the heads are whole
    /// tiles wide, its products run in bf16 ([`attend_bf16`]); an f32 pass
    /// stays f32.
    fn attention(
        &self,
        qkv: &[f32],
        lens: &[usize],
        context: &mut [f32],
        (parallel, int8): (bool, bool),
    ) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let bf16 = int8 && d.is_multiple_of(32) && amx_bf16_ready();
        let mut tasks = Vec::with_capacity(lens.len() * heads);
        let mut offset = 0;
        for &len in lens {
            tasks.extend((0..heads).map(|head| (offset, len, head)));
            offset += len;
        }
        let total = context.len();
        let out = SharedMut(context.as_mut_ptr());
        let all = View {
            data: qkv,
            rows: qkv.len() / (3 * h),
            cols: 3 * h,
            row_stride: 3 * h,
            col_stride: 1,
        };
        let run = |(first, len, head): (usize, usize, usize)| {
            let q = all.block(first, len, head * d, d);
            let k = all.block(first, len, h + head * d, d);
            let v = all.block(first, len, 2 * h + head * d, d);
            ATTENTION_SCRATCH.with_borrow_mut(|(scores, block, inv)| {
                // Whole tiles of 16 rows for AMX (the rows past `len` are
                // computed and not read).
                let rows = if bf16 { len.next_multiple_of(16) } else { len };
                grow(scores, rows * rows);
                grow(block, rows * d);
                grow(inv, rows);
                let (scores, block, inv) = (
                    &mut scores[..rows * rows],
                    &mut block[..rows * d],
                    &mut inv[..rows],
                );
                if bf16 {
                    attend_bf16((q, k, v), scores, block, inv);
                } else {
                    matmul(scores, len, q, k.t(), false, 1);
                    exp_rows(scores, len, inv);
                    matmul(block, d, View::dense(scores, len, len), v, false, 1);
                }
                let rows = block.chunks_exact(d).zip(inv.iter()).take(len);
                for (row, (values, &inv)) in rows.enumerate() {
                    let start = (first + row) * h + head * d;
                    assert!(start + d <= total);
                    // SAFETY: in bounds (asserted); this task alone writes rows
                    // first..first+len, columns head*d..(head+1)*d of `context`,
                    // and no reference to `context` is alive meanwhile.
                    let out = unsafe { std::slice::from_raw_parts_mut(out.at(start), d) };
                    // The softmax's division, on the `d` outputs of the row
                    // rather than its `len` weights.
                    out.iter_mut().zip(values).for_each(|(o, v)| *o = v * inv);
                }
            });
        };
        if parallel {
            tasks.into_par_iter().for_each(run);
        } else {
            tasks.into_iter().for_each(run);
        }
    }
}

/// Tokens a group of sequences gathers before it goes through the layers
/// on one core ([`sequence_groups`]): about what a core's L2 holds of a
/// small encoder's values (Q, K and V, the context and the rows are
/// 2 MB for 256 MiniLM tokens).
const GROUP_TOKENS: usize = 256;

/// `seqs` cut, in order, into runs of at least [`GROUP_TOKENS`] tokens
/// (the last may hold fewer): a batch's units of work per core.
fn sequence_groups<'a>(seqs: &[&'a [u32]]) -> Vec<Vec<&'a [u32]>> {
    let mut groups = Vec::new();
    let (mut group, mut tokens) = (Vec::new(), 0);
    for &seq in seqs {
        group.push(seq);
        tokens += seq.len();
        if tokens >= GROUP_TOKENS {
            groups.push(std::mem::take(&mut group));
            tokens = 0;
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// Rows per block of [`BertEmbedder::rows_after_attention`]: its
/// feed-forward values (64 × 1,536 floats for MiniLM) fit a core's L2.
const ROW_BLOCK: usize = 64;

/// One head's attention on AMX's bf16 tiles: `block` gets `exp(q kᵀ −
/// max) v` and `inv` one over each row's sum, for whole tiles of 16 rows
/// (the sizes of the slices); keys padded to whole tiles take no weight.
fn attend_bf16(
    (q, k, v): (View<'_>, View<'_>, View<'_>),
    scores: &mut [f32],
    block: &mut [f32],
    inv: &mut [f32],
) {
    let (len, d) = (q.rows, q.cols);
    let rows = inv.len();
    let keys = len.next_multiple_of(32);
    BF16_SCRATCH.with_borrow_mut(|[qa, kb, pa, vb]| {
        grow(qa, rows * d);
        grow(kb, d * rows);
        grow(pa, rows * keys);
        grow(vb, keys * d);
        let (qa, kb) = (&mut qa[..rows * d], &mut kb[..d * rows]);
        let (pa, vb) = (&mut pa[..rows * keys], &mut vb[..keys * d]);
        bf16_rows(qa, d, q);
        bf16_pairs(kb, d, rows, k.t());
        matmul_bf16(scores, rows, qa, kb, (rows, d, rows));
        for row in scores.chunks_exact_mut(rows) {
            row[len..].fill(f32::NEG_INFINITY);
        }
        exp_rows_bf16(scores, rows, pa, keys, inv);
        bf16_pairs(vb, keys, d, v);
        matmul_bf16(block, d, pa, vb, (rows, keys, d));
    });
}

thread_local! {
    /// [`attend_bf16`]'s operands in bf16: queries, keys, weights, values.
    static BF16_SCRATCH: RefCell<[Vec<u16>; 4]> = const {
        RefCell::new([Vec::new(), Vec::new(), Vec::new(), Vec::new()])
    };

    /// [`BertEmbedder::rows_after_attention`]'s projected rows and
    /// feed-forward values.
    static ROW_SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const {
        RefCell::new((Vec::new(), Vec::new()))
    };

    /// An attention task's scores, outputs and softmax sums: kept by each
    /// thread, so a head's 256 KB of scores is not mapped afresh.
    static ATTENTION_SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const {
        RefCell::new((Vec::new(), Vec::new(), Vec::new()))
    };
}

impl Embedder for BertEmbedder {
    fn id(&self) -> &str {
        &self.id
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(self.cut(texts), true)
            .map_err(|e| Error::Inference(format!("tokenizer: {e}")))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for group in order.chunks(self.batch_size) {
            let batch: Vec<&Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            for (&i, vector) in group.iter().zip(self.forward(&batch, false)?) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn embed_query(&self, query: &str) -> Result<Vec<f32>> {
        let encoding = self
            .tokenizer
            .encode(self.cut(&[query])[0], true)
            .map_err(|e| Error::Inference(format!("tokenizer: {e}")))?;
        let mut vectors = self.forward(&[&encoding], true)?;
        vectors
            .pop()
            .ok_or_else(|| Error::Inference("the encoder returned no vector".into()))
    }

    fn documents(&self) -> Precision {
        match &self.model {
            Model::Packed(model) => Precision::int8_if(model.int8.documents),
            Model::Reference(_) => Precision::F32,
        }
    }

    fn sizer(&self) -> Result<Sizer> {
        let tokenizer =
            Tokenizer::from_file(self.dir.join("tokenizer.json")).map_err(|e| Error::Model {
                path: self.dir.clone(),
                reason: format!("tokenizer.json: {e}"),
            })?;
        Sizer::from_tokenizer(tokenizer)
    }
}

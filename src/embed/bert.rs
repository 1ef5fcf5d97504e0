//! BERT-family sentence encoder (all-MiniLM-L6-v2 by default) on candle:
//! tokenize, sort by length so batches carry little padding, run the encoder,
//! mean-pool over the attention mask, L2-normalise.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::{Encoding, Tokenizer, TruncationParams};

use super::{Embedder, EmbedderInfo, normalize};
use crate::chunk::Sizer;
use crate::error::{Error, Result};
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

/// A loaded BERT sentence encoder.
pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dir: PathBuf,
    id: String,
    dim: usize,
    batch_size: usize,
}

impl BertEmbedder {
    /// The id and dimension of the model in `dir`, without loading weights.
    pub fn identify(dir: &Path) -> Result<EmbedderInfo> {
        let files = ModelFiles::read(dir)?;
        Ok(EmbedderInfo {
            id: files.id(dir),
            dim: files.config.hidden_size,
        })
    }

    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from
    /// `dir`; inputs are truncated to `max_tokens`.
    pub fn load(dir: &Path, max_tokens: usize, batch_size: usize) -> Result<Self> {
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
        let model = BertModel::load(vb, &files.config)
            .map_err(|e| model_err(format!("model.safetensors: {e}")))?;
        Ok(BertEmbedder {
            model,
            tokenizer,
            dir: dir.to_path_buf(),
            id: files.id(dir),
            dim: files.config.hidden_size,
            batch_size,
        })
    }

    /// Runs one batch of encodings through the model; returns pooled,
    /// normalised vectors in batch order.
    fn forward(&self, batch: &[&Encoding]) -> Result<Vec<Vec<f32>>> {
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
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1.0, f64::MAX)?;
        let pooled = summed.broadcast_div(&counts)?;
        let mut vectors: Vec<Vec<f32>> = pooled.to_vec2()?;
        vectors.iter_mut().for_each(|v| normalize(v));
        Ok(vectors)
    }
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
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Inference(format!("tokenizer: {e}")))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].len()));
        let mut out = vec![Vec::new(); texts.len()];
        for group in order.chunks(self.batch_size) {
            let batch: Vec<&Encoding> = group.iter().map(|&i| &encodings[i]).collect();
            for (&i, vector) in group.iter().zip(self.forward(&batch)?) {
                out[i] = vector;
            }
        }
        Ok(out)
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

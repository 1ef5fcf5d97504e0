//! A SentencePiece vocabulary in a GGUF file (`tokenizer.ggml.model =
//! llama`, as Gemma's) turned into a `tokenizers` BPE tokenizer, which
//! candle's `TokenizerFromGguf` does not build. The merges are derived
//! from the pieces and their scores the way Hugging Face converts
//! SentencePiece models: every split of a piece into two pieces of the
//! vocabulary is a merge, ranked by the merged piece's score. Spaces are
//! `▁`; bytes that no piece covers fall back to the `<0xNN>` pieces.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};

/// SentencePiece's word boundary.
const SPACE: &str = "▁";

/// `token_type` of a piece: 1 normal, 2 unknown, 3 control, 4 user
/// defined, 5 unused, 6 byte.
const NORMAL: u32 = 1;
const BYTE: u32 = 6;

fn array<'a>(content: &'a Content, key: &str) -> Result<&'a Vec<Value>, String> {
    match content.metadata.get(key) {
        Some(Value::Array(values)) => Ok(values),
        _ => Err(format!("no {key}")),
    }
}

/// The tokenizer of a SentencePiece GGUF vocabulary.
pub fn tokenizer(content: &Content) -> Result<Tokenizer, String> {
    let pieces: Vec<String> = array(content, "tokenizer.ggml.tokens")?
        .iter()
        .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let scores: Vec<f32> = array(content, "tokenizer.ggml.scores")?
        .iter()
        .map(|v| v.to_f32().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let types: Vec<u32> = array(content, "tokenizer.ggml.token_type")?
        .iter()
        .map(|v| v.to_i32().map(|t| t as u32).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if scores.len() != pieces.len() || types.len() != pieces.len() {
        return Err("tokens, scores and token types differ in length".into());
    }
    let vocab: Vocab = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| (p.clone(), i as u32))
        .collect();
    let mut merges: Vec<(f32, u32, u32, &str, &str)> = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        if types[i] != NORMAL {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                merges.push((scores[i], l, r, left, right));
            }
        }
    }
    // Highest score first; within one score, by the halves' ids.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges = merges
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    let unk = content
        .metadata
        .get("tokenizer.ggml.unknown_token_id")
        .and_then(|v| v.to_u32().ok())
        .and_then(|id| pieces.get(id as usize));
    if let Some(unk) = unk {
        builder = builder.unk_token(unk.clone());
    }
    let mut tokenizer = Tokenizer::new(builder.build().map_err(|e| e.to_string())?);
    let space_prefix = content
        .metadata
        .get("tokenizer.ggml.add_space_prefix")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(true);
    let replace = Replace::new(" ", SPACE).map_err(|e| e.to_string())?;
    let normalizer: NormalizerWrapper = if space_prefix {
        NormalizerSequence::new(vec![Prepend::new(SPACE.into()).into(), replace.into()]).into()
    } else {
        replace.into()
    };
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(|e| e.to_string())?;
    let decoder: DecoderWrapper = DecoderSequence::new(vec![
        Replace::new(SPACE, " ").map_err(|e| e.to_string())?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])
    .into();
    tokenizer.with_decoder(Some(decoder));
    let specials: Vec<AddedToken> = pieces
        .iter()
        .zip(&types)
        .filter(|(_, t)| !matches!(**t, NORMAL | BYTE))
        .map(|(p, _)| AddedToken::from(p.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(specials)
        .map_err(|e| e.to_string())?;
    Ok(tokenizer)
}

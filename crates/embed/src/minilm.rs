//! all-MiniLM-L6-v2 on candle: WordPiece tokens (no padding, truncated at 256 pieces including
//! [CLS]/[SEP]), BERT (6 layers, 384 wide), mean pooling over the attention mask, L2 normalisation.
//! A batch is sorted by length and cut into buckets so that few pad tokens are computed; pad tokens
//! are masked in attention and in pooling, so a text's vector does not depend on its batch.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{Tokenizer, TruncationParams};

use crate::model::{ModelInfo, MINILM};
use crate::{Embedder, Error, Result};

/// Most texts in one forward pass.
const BUCKET_MAX: usize = 32;
/// A bucket grows while its padded size stays within this factor of its real tokens.
const PAD_SLACK: f64 = 1.25;

/// The all-MiniLM-L6-v2 embedder.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    info: ModelInfo,
    device: Device,
}

impl std::fmt::Debug for MiniLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniLm")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl MiniLm {
    /// Verifies the pinned files in `dir` (size and sha256), then memory-maps the weights.
    pub fn load(dir: &Path) -> Result<Self> {
        let info = MINILM.verify(dir)?;
        let config_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| Error::Corrupt {
            path: config_path,
            reason: e.to_string(),
        })?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        // The shipped tokenizer pads to and truncates at 128; the model's window is 256.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MINILM.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let device = Device::Cpu;
        let weights = dir.join("model.safetensors");
        // SAFETY: the weights file was just verified against its pinned sha256 and lives in the
        // model directory, which only `kyrodb model install` writes (by renaming a finished folder
        // into place, never rewriting a file in place). Modifying it while mapped is outside the
        // contract, as for any memory-mapped database file.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device)? };
        let model = BertModel::load(vb, &config)?;
        Ok(MiniLm {
            model,
            tokenizer,
            info,
            device,
        })
    }

    fn encode(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// One forward pass over texts of similar length; rows of `out` in bucket order.
    fn forward_bucket(&self, encs: &[&tokenizers::Encoding]) -> Result<Vec<Vec<f32>>> {
        let len = encs.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
        let b = encs.len();
        let mut ids = vec![0u32; b * len];
        let mut mask = vec![0u32; b * len];
        for (i, e) in encs.iter().enumerate() {
            ids[i * len..i * len + e.len()].copy_from_slice(e.get_ids());
            mask[i * len..i * len + e.len()].copy_from_slice(e.get_attention_mask());
        }
        let ids = Tensor::from_vec(ids, (b, len), &self.device)?;
        let mask = Tensor::from_vec(mask, (b, len), &self.device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?; // [b, len, dim]
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, len, 1]
        let summed = hidden.broadcast_mul(&m)?.sum(1)?; // [b, dim]
        let counts = m.sum(1)?.clamp(1e-9f32, f32::MAX)?; // [b, 1]
        let mean = summed.broadcast_div(&counts)?;
        let mut rows: Vec<Vec<f32>> = mean.to_vec2()?;
        for r in &mut rows {
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            r.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(rows)
    }
}

/// Cuts `lens` (sorted ascending) into buckets `[start, end)`: at most [`BUCKET_MAX`] texts, padded
/// size (longest × count) within [`PAD_SLACK`] of the real tokens.
pub(crate) fn buckets(lens: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < lens.len() {
        let mut end = start + 1;
        let mut real = lens[start];
        while end < lens.len() && end - start < BUCKET_MAX {
            let padded = lens[end] * (end - start + 1);
            if padded as f64 > PAD_SLACK * (real + lens[end]) as f64 {
                break;
            }
            real += lens[end];
            end += 1;
        }
        out.push((start, end));
        start = end;
    }
    out
}

impl Embedder for MiniLm {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let encs: Vec<tokenizers::Encoding> = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<_>>()?;
        let mut order: Vec<usize> = (0..encs.len()).collect();
        order.sort_by_key(|&i| encs[i].len());
        let lens: Vec<usize> = order.iter().map(|&i| encs[i].len()).collect();
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); encs.len()];
        for (start, end) in buckets(&lens) {
            let bucket: Vec<&tokenizers::Encoding> =
                order[start..end].iter().map(|&i| &encs[i]).collect();
            let rows = self.forward_bucket(&bucket)?;
            for (&i, row) in order[start..end].iter().zip(rows) {
                out[i] = row;
            }
        }
        Ok(out)
    }

    fn token_count(&self, text: &str) -> Result<usize> {
        Ok(self.encode(text)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_everything_in_order_and_bound_padding() {
        let lens = [2, 2, 3, 5, 6, 6, 7, 40, 41, 200, 256];
        let b = buckets(&lens);
        assert_eq!(b.first().unwrap().0, 0);
        assert_eq!(b.last().unwrap().1, lens.len());
        for w in b.windows(2) {
            assert_eq!(w[0].1, w[1].0);
        }
        for &(s, e) in &b {
            let real: usize = lens[s..e].iter().sum();
            assert!(lens[e - 1] * (e - s) <= (real as f64 * PAD_SLACK).ceil() as usize);
        }
        // Short and long texts never share a bucket.
        assert!(b.iter().all(|&(s, e)| !(lens[s] < 10 && lens[e - 1] > 100)));
        let many = vec![10; 100];
        assert!(buckets(&many).iter().all(|&(s, e)| e - s <= BUCKET_MAX));
        assert!(buckets(&[]).is_empty());
    }
}

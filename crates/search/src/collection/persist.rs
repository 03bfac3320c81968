//! Graph files: writing a checkpoint, and finishing a load that started from one.

use super::*;

impl Collection {
    /// Ends the attach load of a collection that started from a graph file: rows of the file that
    /// no stored document claimed are removed from the graphs and freed.
    pub(crate) fn finish_load(&self, source: String) {
        *self.graph_source.lock() = source;
        let mut st = self.state.write();
        let mut text_source = self.text_source.lock();
        match st.text.finish_load() {
            Some((adopted, analysed)) => {
                *text_source = format!(
                    "checkpoint: {adopted} documents' postings adopted (text hash verified), {analysed} analysed"
                )
            }
            None if *text_source == "new" => {
                *text_source = "rebuilt: no usable checkpoint file (see graph_source)".into()
            }
            None => {}
        }
        drop(text_source);
        let Some(p) = st.preload.take() else {
            return;
        };
        let mut dropped = 0;
        for (_, r) in p.rows {
            if st.rows.get(r as usize).is_some_and(Option::is_none) {
                for v in &self.vectors {
                    v.hnsw.remove(r);
                }
                dropped += 1;
            }
        }
        // Every row slot without a document is free (whether or not the file named it).
        let free: Vec<u32> = (0..st.rows.len() as u32)
            .filter(|r| st.rows[*r as usize].is_none())
            .collect();
        st.free = free;
        if dropped > 0 {
            tracing::info!(collection = %self.name, dropped, "graph file rows without a stored document removed");
        }
    }

    /// Writes the graphs and their row table to `path` atomically (under the read lock, so rows and
    /// graphs agree).
    pub(crate) fn checkpoint(&self, path: &std::path::Path) -> Result<()> {
        let bytes = {
            let st = self.state.read();
            let rows: Vec<(u32, u64)> = st
                .rows
                .iter()
                .enumerate()
                .filter_map(|(r, row)| Some((r as u32, row.as_ref()?.key)))
                .collect();
            let graphs: Vec<(&str, &Hnsw)> = self
                .vectors
                .iter()
                .map(|v| (v.name.as_str(), &v.hnsw))
                .collect();
            let text = st.text.encode(&self.schema().text_analysis(), |r| {
                Some(st.rows.get(r as usize)?.as_ref()?.key)
            });
            crate::checkpoint::encode(&rows, &graphs, &text).map_err(|source| {
                Error::Storage(kyrodb_storage::Error::Io {
                    path: path.to_owned(),
                    source,
                })
            })?
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| {
                Error::Storage(kyrodb_storage::Error::Io {
                    path: dir.to_owned(),
                    source,
                })
            })?;
        }
        kyrodb_storage::write_file_atomic(path, &bytes)?;
        Ok(())
    }
}

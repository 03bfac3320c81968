//! The engine's applier seam: every committed change to the collection's keyspace, in order.

use super::*;

impl Applier for Collection {
    fn apply(&self, seq: u64, changes: &[Change<'_>]) {
        let schema = self.schema();
        let mut st = self.state.write();
        for c in changes {
            match c {
                Change::Put { key, value, .. } => match Document::decode(value, &schema) {
                    Ok(doc) => st.put(*key, seq, doc, &self.vectors),
                    Err(e) => {
                        tracing::error!(collection = %self.name, key, %e, "stored document does not decode; not indexed");
                        if let Some(&r) = st.by_key.get(key) {
                            st.remove_row(r, &self.vectors);
                        }
                    }
                },
                Change::Delete { key } => {
                    if let Some(&r) = st.by_key.get(key) {
                        st.remove_row(r, &self.vectors);
                    }
                }
            }
        }
        drop(st);
        if let Some(s) = self.env.upgrade() {
            s.wake_indexer();
        }
    }
}

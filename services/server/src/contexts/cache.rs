//! Context versions already read, as the protos ReadContext answers with. A version never
//! changes, and an entry is keyed by the context's creation time as well as its name
//! and version, so a context deleted and created again under the same name cannot be
//! answered from its predecessor's entries: nothing here ever needs invalidating. Which
//! version a read wants is still asked of the database on every read (see the store's
//! `context_read_target`); only the document is served from here.

use std::sync::Arc;

use agentry_proto::v1 as pb;

/// Name, the context's `create_time`, version.
pub type VersionKey = (String, i64, i64);

/// Bounded by the bytes of the documents it holds.
pub struct VersionCache {
    entries: quick_cache::sync::Cache<VersionKey, Arc<pb::ContextVersion>, Weight>,
}

#[derive(Clone)]
struct Weight;

/// Per entry beyond its document: name, author, description, hash, the map's own share.
const OVERHEAD: u64 = 512;

impl quick_cache::Weighter<VersionKey, Arc<pb::ContextVersion>> for Weight {
    fn weight(&self, key: &VersionKey, version: &Arc<pb::ContextVersion>) -> u64 {
        OVERHEAD + key.0.len() as u64 + version.size_bytes.max(0) as u64
    }
}

impl VersionCache {
    /// Holds documents of up to `bytes` in all.
    pub fn new(bytes: u64) -> Self {
        let estimated_items = (bytes / 4096).clamp(64, 1 << 20) as usize;
        Self {
            entries: quick_cache::sync::Cache::with_weighter(estimated_items, bytes, Weight),
        }
    }

    pub fn get(&self, key: &VersionKey) -> Option<pb::ContextVersion> {
        self.entries.get(key).map(|found| (*found).clone())
    }

    pub fn insert(&self, key: VersionKey, version: pb::ContextVersion) {
        self.entries.insert(key, Arc::new(version));
    }
}

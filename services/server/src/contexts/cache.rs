//! Context versions already read, as the encoded responses ReadContext answers with. A version never
//! changes, and an entry is keyed by the context's creation time as well as its name
//! and version, so a context deleted and created again under the same name cannot be
//! answered from its predecessor's entries: nothing here ever needs invalidating. Which
//! version a read wants is still asked of the database on every read (see the store's
//! `context_read_target`); only the document is served from here.

use prost::bytes::Bytes;

/// Name, the context's `create_time`, version.
pub type VersionKey = (String, i64, i64);

/// Bounded by the bytes of the documents it holds.
pub struct VersionCache {
    entries: quick_cache::sync::Cache<VersionKey, Bytes, Weight>,
}

#[derive(Clone)]
struct Weight;

/// Per entry beyond its key and response (which holds the document, name, author, hash
/// and the rest): the map's own share.
const OVERHEAD: u64 = 128;

impl quick_cache::Weighter<VersionKey, Bytes> for Weight {
    fn weight(&self, key: &VersionKey, version: &Bytes) -> u64 {
        OVERHEAD + key.0.len() as u64 + version.len() as u64
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

    /// The encoded `pb::ContextVersion`.
    pub fn get(&self, key: &VersionKey) -> Option<Bytes> {
        self.entries.get(key)
    }

    pub fn insert(&self, key: VersionKey, version: Bytes) {
        self.entries.insert(key, version);
    }
}

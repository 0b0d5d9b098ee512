//! API key secrets. A secret reads `agk_{workspace}_{key id, 32 hex}_{43 random chars}`,
//! so the server finds the key row by its primary key and then compares SHA-256 hashes in
//! constant time. Keys carry 256 bits of randomness, so a fast hash is enough; only the
//! hash is ever stored.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::names::is_slug;

pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn new_secret(workspace: &str, key_id: &uuid::Uuid) -> String {
    format!("agk_{workspace}_{}_{}", key_id.simple(), random_token())
}

pub fn new_root_secret() -> String {
    format!("agk_root_{}", random_token())
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
}

/// The (workspace, key id) a workspace key claims to be, if it is shaped like one.
pub fn parse_secret(secret: &str) -> Option<(String, String)> {
    let mut parts = secret.splitn(4, '_');
    let (prefix, workspace, key, rest) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if prefix != "agk" || !is_slug(workspace) || rest.is_empty() {
        return None;
    }
    let key = uuid::Uuid::try_parse(key).ok()?;
    Some((workspace.to_owned(), key.hyphenated().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_name_their_key_and_hash_stably() {
        let id = uuid::Uuid::now_v7();
        let secret = new_secret("acme", &id);
        assert_eq!(
            parse_secret(&secret),
            Some(("acme".into(), id.hyphenated().to_string()))
        );
        assert!(hashes_equal(&hash(&secret), &hash(&secret)));
        assert!(!hashes_equal(&hash(&secret), &hash("other")));
        assert_eq!(parse_secret("Bearer nonsense"), None);
        assert_eq!(parse_secret("agk_root_abc"), None);
    }
}

//! List pagination: page sizes and opaque, tamper-proof page tokens.
//!
//! A token is `base64url(cursor ‖ mac)` where `mac = HMAC-SHA256(key, scope ‖ 0 ‖ cursor)`
//! and `scope` names the method, the parent and every filter of the request. A token is
//! therefore only accepted by the request that produced it, in the workspace it was made
//! for, and a cursor edited by the client fails the MAC. The key is shared by all replicas
//! through the database (`server_settings`), so any replica can continue any listing.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, Reason, Result};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
const MAC_LEN: usize = 16;

/// Validates `page_size`: negative is INVALID_ARGUMENT, 0 takes the default and anything
/// above the maximum is clamped to it (AIP-158).
pub fn page_size(raw: i32) -> Result<usize> {
    match raw {
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        n => Ok((n as usize).min(MAX_PAGE_SIZE)),
    }
}

/// The key's HMAC state with its pads already hashed; each MAC starts from a copy
/// (task tokens are page tokens too: every worker call checks one).
#[derive(Clone)]
pub struct PageTokens {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageTokens { key: <redacted> }")
    }
}

impl PageTokens {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        let key = key.into();
        Self {
            keyed: Hmac::<Sha256>::new_from_slice(&key).expect("hmac takes any key length"),
        }
    }

    fn mac(&self, scope: &str, cursor: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.keyed.clone();
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(cursor);
        let full = mac.finalize().into_bytes();
        let mut out = [0; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    pub fn encode(&self, scope: &str, cursor: &str) -> String {
        let mut bytes = cursor.as_bytes().to_vec();
        bytes.extend_from_slice(&self.mac(scope, cursor.as_bytes()));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor inside `token`, or `None` for the first page.
    pub fn decode(&self, scope: &str, token: &str) -> Result<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::InvalidArgument {
            reason: Reason::InvalidPageToken.as_str(),
            message: "page_token is not one this list returned for this request".into(),
            violations: vec![crate::FieldViolation::new(
                "page_token",
                "invalid, tampered or from another request",
            )],
        };
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() < MAC_LEN {
            return Err(invalid());
        }
        let (cursor, mac) = bytes.split_at(bytes.len() - MAC_LEN);
        let expected = self.mac(scope, cursor);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], mac)) {
            return Err(invalid());
        }
        String::from_utf8(cursor.to_vec())
            .map(Some)
            .map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_only_in_its_own_scope() {
        let tokens = PageTokens::new(b"k".to_vec());
        let t = tokens.encode("ListProjects workspaces/a", "web");
        assert_eq!(
            tokens
                .decode("ListProjects workspaces/a", &t)
                .unwrap()
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            tokens
                .decode("ListProjects workspaces/b", &t)
                .unwrap_err()
                .reason(),
            "INVALID_PAGE_TOKEN"
        );
    }

    #[test]
    fn tampered_tokens_are_rejected() {
        let tokens = PageTokens::new(b"k".to_vec());
        let t = tokens.encode("s", "cursor-1");
        let mut bytes = URL_SAFE_NO_PAD.decode(&t).unwrap();
        bytes[0] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(bytes);
        assert!(tokens.decode("s", &tampered).is_err());
        assert!(tokens.decode("s", "!!!").is_err());
        assert!(tokens.decode("s", "AAAA").is_err());
        assert_eq!(tokens.decode("s", "").unwrap(), None);
    }

    #[test]
    fn page_sizes_default_clamp_and_reject_negatives() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(5000).unwrap(), 1000);
        assert!(page_size(-1).is_err());
    }
}

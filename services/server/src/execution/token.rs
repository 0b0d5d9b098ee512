//! Task tokens: what PollTask hands a worker to name its lease by in every later call.
//! A token is the lease as JSON with a format tag first, `{"v":1,...}`, signed by the
//! page-token key ([`PageTokens`]) under its own scope. Tokens issued before the tag
//! (untagged) read as version 1, so a worker holding one across an upgrade keeps its
//! lease (and an earlier server, reading the lease, ignores the tag); a version this
//! server does not know is refused like a forged token.

use agentry_core::{page::PageTokens, run::Lease};
use serde::Serialize;
use serde_json::Value;

const SCOPE: &str = "task";
/// The format version this server writes and the newest it reads.
const VERSION: u64 = 1;

#[derive(Serialize)]
struct Tagged<'a> {
    v: u64,
    #[serde(flatten)]
    lease: &'a Lease,
}

pub(super) fn encode(pages: &PageTokens, lease: &Lease) -> String {
    let tagged = Tagged { v: VERSION, lease };
    let json = serde_json::to_string(&tagged).expect("a lease serializes");
    pages.encode(SCOPE, &json)
}

/// The lease a token names, if this service issued it (in a format it reads).
pub(super) fn decode(pages: &PageTokens, token: &str) -> Option<Lease> {
    let json = pages.decode(SCOPE, token).ok()??;
    let mut value: Value = serde_json::from_str(&json).ok()?;
    match value.as_object_mut()?.remove("v") {
        None => {}
        Some(v) if v.as_u64() == Some(VERSION) => {}
        Some(_) => return None,
    }
    serde_json::from_value(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            workspace: "w".into(),
            project: "p".into(),
            session: "s".into(),
            run: "r".into(),
            attempt: 2,
            epoch: 3,
            agent: "a".into(),
            agent_revision: 4,
        }
    }

    #[test]
    fn a_token_is_tagged_and_reads_back() {
        let pages = PageTokens::new(*b"key");
        let token = encode(&pages, &lease());
        let json = pages.decode(SCOPE, &token).unwrap().unwrap();
        assert!(json.starts_with("{\"v\":1,\"workspace\":"), "{json}");
        assert_eq!(decode(&pages, &token), Some(lease()));
        // A replica still on the earlier server ignores the tag.
        assert_eq!(serde_json::from_str::<Lease>(&json).unwrap(), lease());
    }

    #[test]
    fn an_untagged_token_of_an_earlier_server_still_reads() {
        let pages = PageTokens::new(*b"key");
        let untagged = serde_json::to_string(&lease()).unwrap();
        assert_eq!(
            decode(&pages, &pages.encode(SCOPE, &untagged)),
            Some(lease())
        );
        // Tokens from before the lease named its agent revision.
        let older =
            r#"{"workspace":"w","project":"p","session":"s","run":"r","attempt":2,"epoch":3}"#;
        let old = decode(&pages, &pages.encode(SCOPE, older)).unwrap();
        assert_eq!((old.run.as_str(), old.agent.as_str()), ("r", ""));
    }

    #[test]
    fn an_unknown_version_another_scope_or_key_is_refused() {
        let pages = PageTokens::new(*b"key");
        let json = serde_json::to_string(&Tagged {
            v: 2,
            lease: &lease(),
        })
        .unwrap();
        assert_eq!(decode(&pages, &pages.encode(SCOPE, &json)), None);
        let token = encode(&pages, &lease());
        assert_eq!(decode(&PageTokens::new(*b"other"), &token), None);
        let listed = pages.encode("list", &serde_json::to_string(&lease()).unwrap());
        assert_eq!(decode(&pages, &listed), None);
    }
}

//! Task tokens: what PollTask hands a worker to name its lease by in every later call.
//! A token is the lease as a versioned record (`{"v":1,...}`, [`record`]), signed by the
//! page-token key ([`PageTokens`]) under its own scope. Tokens issued before the tag
//! (untagged) read as version 1, so a worker holding one across an upgrade keeps its
//! lease (and an earlier server, reading the lease, ignores the tag); a version this
//! server does not know is refused like a forged token.

use agentry_core::{page::PageTokens, record, run::Lease};

const SCOPE: &str = "task";

pub(super) fn encode(pages: &PageTokens, lease: &Lease) -> String {
    pages.encode(SCOPE, &record::to_record(lease))
}

/// The lease a token names, if this service issued it (in a format it reads).
pub(super) fn decode(pages: &PageTokens, token: &str) -> Option<Lease> {
    let json = pages.decode(SCOPE, token).ok()??;
    record::record("task_token", &json).ok()
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
        let json = record::to_record(&lease()).replacen("\"v\":1", "\"v\":2", 1);
        assert_eq!(decode(&pages, &pages.encode(SCOPE, &json)), None);
        let token = encode(&pages, &lease());
        assert_eq!(decode(&PageTokens::new(*b"other"), &token), None);
        let listed = pages.encode("list", &serde_json::to_string(&lease()).unwrap());
        assert_eq!(decode(&pages, &listed), None);
    }
}

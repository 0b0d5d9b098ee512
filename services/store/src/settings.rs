//! Server-wide settings shared by every replica through the database: the page token
//! key, and the hash of the generated root key when the operator configured none.

use agentry_core::{Result, apikey};
use sea_query::{Expr, OnConflict, Query};

use crate::{Store, tables::ServerSettings};

#[derive(sqlx::FromRow)]
struct Setting {
    value: String,
}

impl Store {
    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let stmt = Query::select()
            .column(ServerSettings::Value)
            .from(ServerSettings::Table)
            .and_where(Expr::col(ServerSettings::Key).eq(key))
            .to_owned();
        Ok(self
            .db
            .fetch_optional::<Setting>(&stmt)
            .await?
            .map(|s| s.value))
    }

    /// Inserts `value` unless the key exists; true when this call inserted it.
    async fn insert_setting(&self, key: &str, value: &str) -> Result<bool> {
        let stmt = Query::insert()
            .into_table(ServerSettings::Table)
            .columns([ServerSettings::Key, ServerSettings::Value])
            .values_panic([key.into(), value.into()])
            .on_conflict(
                OnConflict::column(ServerSettings::Key)
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        Ok(self.db.execute(&stmt).await? == 1)
    }

    /// The HMAC key for page tokens, created by whichever replica starts first.
    pub async fn page_token_key(&self) -> Result<String> {
        self.insert_setting("page_token_key", &apikey::random_token())
            .await?;
        self.setting("page_token_key")
            .await?
            .ok_or_else(|| agentry_core::Error::internal("page_token_key vanished"))
    }

    /// The stored root key hash, generating a root key when there is none yet. Returns
    /// the hash and, only on the start that generated it, the secret itself.
    pub async fn root_key_hash(&self) -> Result<(Vec<u8>, Option<String>)> {
        if let Some(hex) = self.setting("root_key_sha256").await? {
            return Ok((from_hex(&hex), None));
        }
        let secret = apikey::new_root_secret();
        let hash = apikey::hash(&secret);
        if self
            .insert_setting("root_key_sha256", &to_hex(&hash))
            .await?
        {
            return Ok((hash, Some(secret)));
        }
        // Another replica generated one at the same moment; theirs was printed.
        let hex = self.setting("root_key_sha256").await?.unwrap_or_default();
        Ok((from_hex(&hex), None))
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
}

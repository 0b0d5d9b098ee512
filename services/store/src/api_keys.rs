//! API keys. Only the SHA-256 of a secret is stored; DeleteApiKey revokes (the row stays,
//! so that a revoked key is told apart from an unknown one and audit names resolve).

use agentry_core::{
    Error, Result, apikey,
    model::{ApiKey, CreatedApiKey, Page, Role},
    names::ApiKeyName,
    port::{ApiKeyStore, KeyRecord, NewApiKey},
    time::now_micros,
};
use async_trait::async_trait;
use sea_query::{Expr, Query, SelectStatement};

use crate::{
    PageRequest, Store, keyset_page,
    mutation::{Mutation, mutate},
    rows::{columns, decode, insert_row, values},
    tables::ApiKeys,
    workspaces::read_workspace,
};

#[derive(sqlx::FromRow)]
struct KeyRow {
    workspace_id: String,
    key_id: String,
    display_name: String,
    role: String,
    secret_hash: Vec<u8>,
    create_time: i64,
    expire_time: Option<i64>,
    revoke_time: Option<i64>,
}

decode!(KeyRow => KeyRecord, |row| {
    let role = Role::parse(&row.role)
        .ok_or_else(|| Error::internal(format!("unknown role {:?}", row.role)))?;
    Ok(Self {
        key: ApiKey {
            workspace: row.workspace_id,
            id: row.key_id,
            display_name: row.display_name,
            role,
            create_time: row.create_time,
            expire_time: row.expire_time,
        },
        secret_hash: row.secret_hash,
        revoke_time: row.revoke_time,
    })
});

decode!(KeyRow => ApiKey, |row| Ok(KeyRecord::try_from(row)?.key));

columns!(
    /// The columns a new key sets (all but `revoke_time`), in the order inserts bind.
    INSERTED: ApiKeys [
        WorkspaceId, KeyId, DisplayName, Role, SecretHash, CreateTime, ExpireTime
    ]
);

fn select() -> SelectStatement {
    Query::select()
        .columns(INSERTED.into_iter().chain([ApiKeys::RevokeTime]))
        .from(ApiKeys::Table)
        .to_owned()
}

fn by_id(workspace: &str, key: &str) -> SelectStatement {
    select()
        .and_where(Expr::col(ApiKeys::WorkspaceId).eq(workspace))
        .and_where(Expr::col(ApiKeys::KeyId).eq(key))
        .to_owned()
}

#[async_trait]
impl ApiKeyStore for Store {
    async fn create_api_key(&self, m: &Mutation, new: NewApiKey) -> Result<CreatedApiKey> {
        let id = uuid::Uuid::now_v7();
        let secret = apikey::new_secret(&new.workspace, &id);
        let created: CreatedApiKey = mutate!(self, m, |tx| async {
            read_workspace(tx, &new.workspace).await?;
            let key = ApiKey {
                workspace: new.workspace.clone(),
                id: id.hyphenated().to_string(),
                display_name: new.display_name.clone(),
                role: new.role,
                create_time: now_micros(),
                expire_time: new.expire_time,
            };
            let insert = insert_row(
                ApiKeys::Table,
                INSERTED,
                values![
                    key.workspace,
                    key.id,
                    key.display_name,
                    key.role.as_str(),
                    apikey::hash(&secret),
                    key.create_time,
                    key.expire_time,
                ],
            );
            tx.execute(&insert).await?;
            Ok(CreatedApiKey {
                key,
                secret: secret.clone(),
            })
        })?;
        Ok(created)
    }

    async fn list_api_keys(&self, workspace: &str, page: &PageRequest) -> Result<Page<ApiKey>> {
        let stmt = select()
            .and_where(Expr::col(ApiKeys::WorkspaceId).eq(workspace))
            .and_where(Expr::col(ApiKeys::RevokeTime).is_null())
            .to_owned();
        keyset_page::<KeyRow, ApiKey>(&self.db, stmt, ApiKeys::KeyId, page, |k| k.id.clone()).await
    }

    async fn delete_api_key(&self, m: &Mutation, name: &ApiKeyName) -> Result<()> {
        mutate!(self, m, |tx| async {
            let row: Option<KeyRow> = tx
                .fetch_optional(&by_id(&name.workspace, &name.key))
                .await?;
            match row {
                Some(row) if row.revoke_time.is_none() => {}
                _ => return Err(Error::not_found(name.to_string())),
            }
            tx.execute(
                &Query::update()
                    .table(ApiKeys::Table)
                    .value(ApiKeys::RevokeTime, now_micros())
                    .and_where(Expr::col(ApiKeys::WorkspaceId).eq(name.workspace.as_str()))
                    .and_where(Expr::col(ApiKeys::KeyId).eq(name.key.as_str()))
                    .to_owned(),
            )
            .await?;
            Ok(())
        })
    }

    async fn find_api_key(&self, workspace: &str, key: &str) -> Result<Option<KeyRecord>> {
        let row: Option<KeyRow> = self.db.fetch_optional(&by_id(workspace, key)).await?;
        row.map(KeyRecord::try_from).transpose()
    }
}

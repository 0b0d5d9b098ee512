//! API key handlers. The secret leaves the server once, in CreateApiKeyResponse.

use agentry_core::{
    Error, Result,
    model::{ApiKey, Role},
    names::{ApiKeyName, WorkspaceName},
    port::NewApiKey,
    time::now_micros,
};
use agentry_proto::v1 as pb;

use crate::{
    auth::Action,
    call::Call,
    convert::{self, timestamp},
    request::required,
};

fn role_to_proto(role: Role) -> pb::Role {
    match role {
        Role::Root => pb::Role::Root,
        Role::Admin => pb::Role::Admin,
        Role::Developer => pb::Role::Developer,
        Role::Reader => pb::Role::Reader,
        Role::Worker => pb::Role::Worker,
    }
}

fn role(value: i32) -> Result<Role> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Developer) => Ok(Role::Developer),
        Ok(pb::Role::Reader) => Ok(Role::Reader),
        Ok(pb::Role::Worker) => Ok(Role::Worker),
        Ok(pb::Role::Root) => Err(Error::invalid(
            "api_key.role",
            "ROLE_ROOT keys come from the server configuration",
        )),
        Ok(pb::Role::Unspecified) | Err(_) => Err(Error::invalid(
            "api_key.role",
            "one of ROLE_ADMIN, ROLE_DEVELOPER, ROLE_READER, ROLE_WORKER",
        )),
    }
}

pub(crate) fn to_proto(k: ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        name: format!("workspaces/{}/apiKeys/{}", k.workspace, k.id),
        display_name: k.display_name,
        role: role_to_proto(k.role) as i32,
        create_time: timestamp(k.create_time),
        expire_time: k.expire_time.and_then(timestamp),
    }
}

pub async fn create_api_key(
    ctx: &Call<'_>,
    req: pb::CreateApiKeyRequest,
) -> Result<pb::CreateApiKeyResponse> {
    let parent: WorkspaceName = ctx.authorize("parent", &req.parent, Action::ManageKeys)?;
    let key = required("api_key", req.api_key.clone())?;
    let expire_time = key
        .expire_time
        .as_ref()
        .map(|t| convert::micros("api_key.expire_time", t))
        .transpose()?;
    if expire_time.is_some_and(|t| t <= now_micros()) {
        return Err(Error::invalid(
            "api_key.expire_time",
            "must be in the future",
        ));
    }
    let new = NewApiKey {
        workspace: parent.workspace.clone(),
        display_name: convert::text("api_key.display_name", key.display_name)?,
        role: role(key.role)?,
        expire_time,
    };
    let m = ctx.mutation_in(&parent.workspace, format!("{parent}/apiKeys"), &req)?;
    let created = ctx.store.create_api_key(&m, new).await?;
    Ok(pb::CreateApiKeyResponse {
        api_key: Some(to_proto(created.key)),
        secret: created.secret,
    })
}

pub async fn delete_api_key(ctx: &Call<'_>, req: pb::DeleteApiKeyRequest) -> Result<()> {
    let name: ApiKeyName = ctx.authorize("name", &req.name, Action::ManageKeys)?;
    let m = ctx.mutation_of(&name, &req)?;
    ctx.store.delete_api_key(&m, &name).await?;
    ctx.keys.forget_key(&name.to_string());
    Ok(())
}

//! Authentication and authorization.
//!
//! A tower layer in front of every `agentry.*` service resolves the bearer key into a
//! [`Principal`] and puts it in the request extensions; a call without a valid key never
//! reaches a handler (health and reflection are outside the layer's prefix). Handlers
//! then call [`Principal::check`] with the workspace taken from the resource name, before
//! any lookup, so that a key of one tenant cannot even learn whether another tenant's
//! names exist.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use agentry_core::{
    Error, Reason, Result, apikey, model::Role, names::ApiKeyName, port::Storage, time::now_micros,
};
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::{
    error::to_status,
    layer::{StateLayer, WithState},
};

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub role: Role,
    /// `None` for ROOT.
    pub workspace: Option<String>,
    /// The key's resource name, or `root`: what the audit log records.
    pub name: String,
}

/// What a call wants to do, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Get/List of workspaces (own), projects, agents, instances.
    Read,
    /// Workspace settings other than quotas.
    ManageWorkspace,
    ManageProjects,
    ManageKeys,
    /// Agents and instances.
    Develop,
    HeartbeatInstance,
    /// Creating contexts and appending versions.
    WriteContext,
    /// Creating, listing and deleting workspaces, and changing quotas.
    Operate,
    /// Sessions and runs: create, delete, cancel, decide approvals.
    Execute,
    /// The worker protocol: leasing and executing runs.
    Work,
    /// Reading the audit log.
    ReadAudit,
}

impl Action {
    fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Self::Read => true,
            Self::ManageWorkspace | Self::ManageProjects | Self::ManageKeys | Self::ReadAudit => {
                role == Admin
            }
            Self::Develop => matches!(role, Admin | Developer),
            Self::HeartbeatInstance | Self::WriteContext => {
                matches!(role, Admin | Developer | Worker)
            }
            Self::Operate => false,
            Self::Execute => matches!(role, Admin | Developer),
            Self::Work => role == Worker,
        }
    }
}

impl Principal {
    pub fn root() -> Self {
        Self {
            role: Role::Root,
            workspace: None,
            name: "root".into(),
        }
    }

    /// Authorizes `action` on `workspace`. The workspace is checked first, so the answer
    /// for a foreign workspace is the same whatever exists in it.
    pub fn check(&self, workspace: &str, action: Action) -> Result<()> {
        if self.role == Role::Root {
            return Ok(());
        }
        if self.workspace.as_deref() != Some(workspace) {
            return Err(Error::new(
                Reason::WorkspaceMismatch,
                format!("this API key does not belong to workspaces/{workspace}"),
            ));
        }
        self.check_role(action)
    }

    /// A name in a request field (an instance, a context, a filter) must be of the
    /// caller's workspace too: another tenant's is PERMISSION_DENIED, like any name.
    pub fn check_reference(&self, own: &str, referenced: &str) -> Result<()> {
        if own == referenced {
            Ok(())
        } else {
            self.check(referenced, Action::Read)
        }
    }

    /// Authorizes an action that names no workspace (ListWorkspaces, CreateWorkspace).
    pub fn check_role(&self, action: Action) -> Result<()> {
        if self.role == Role::Root || action.allows(self.role) {
            Ok(())
        } else {
            Err(Error::new(
                Reason::RoleNotAllowed,
                format!("role {} may not do this", self.role.as_str()),
            ))
        }
    }
}

/// Keys verified in the last `ttl`, by secret hash, so that a busy client does not pay
/// a key lookup per call. Revoking a key or deleting a workspace forgets its entries on
/// this replica at once; another replica may accept a revoked key for up to `ttl`.
/// Expiry is checked on every hit.
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<Vec<u8>, CachedKey>>,
}

struct CachedKey {
    principal: Principal,
    expire_time: Option<i64>,
    verified: Instant,
}

const KEY_CACHE_CAPACITY: usize = 10_000;

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, hash: &[u8]) -> Option<(Principal, Option<i64>)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(hash)?;
        (entry.verified.elapsed() < self.ttl).then(|| (entry.principal.clone(), entry.expire_time))
    }

    fn put(&self, hash: Vec<u8>, principal: Principal, expire_time: Option<i64>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= KEY_CACHE_CAPACITY {
            entries.clear();
        }
        entries.insert(
            hash,
            CachedKey {
                principal,
                expire_time,
                verified: Instant::now(),
            },
        );
    }

    /// Forgets a revoked key (`workspaces/{w}/apiKeys/{k}`).
    pub fn forget_key(&self, key_name: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.principal.name != key_name);
    }

    /// Forgets every key of a deleted workspace.
    pub fn forget_workspace(&self, workspace: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, e| e.principal.workspace.as_deref() != Some(workspace));
    }
}

/// Resolves bearer secrets into principals.
pub struct Authenticator {
    store: Arc<dyn Storage>,
    root_hash: Vec<u8>,
    cache: Arc<KeyCache>,
    /// True once the server drains: new calls are refused (UNAVAILABLE), so that a
    /// client retries them on a server that will still be there to answer.
    stopping: watch::Receiver<bool>,
}

impl Authenticator {
    pub fn new(
        store: Arc<dyn Storage>,
        root_hash: Vec<u8>,
        cache: Arc<KeyCache>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            store,
            root_hash,
            cache,
            stopping,
        }
    }

    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Principal> {
        let unauthenticated = Error::new;
        let Some(header) = authorization else {
            return Err(unauthenticated(
                Reason::MissingCredentials,
                "send `authorization: Bearer <api key>`",
            ));
        };
        let secret = match header.split_once(' ') {
            Some((scheme, secret))
                if scheme.eq_ignore_ascii_case("bearer") && !secret.trim().is_empty() =>
            {
                secret.trim()
            }
            _ => {
                return Err(unauthenticated(
                    Reason::MissingCredentials,
                    "send `authorization: Bearer <api key>`",
                ));
            }
        };
        let hash = apikey::hash(secret);
        if apikey::hashes_equal(&hash, &self.root_hash) {
            return Ok(Principal::root());
        }
        let expired = || unauthenticated(Reason::ApiKeyExpired, "the API key has expired");
        if let Some((principal, expire_time)) = self.cache.get(&hash) {
            if expire_time.is_some_and(|t| t <= now_micros()) {
                return Err(expired());
            }
            return Ok(principal);
        }
        let invalid = || unauthenticated(Reason::InvalidApiKey, "the API key is not valid");
        let (workspace, key) = apikey::parse_secret(secret).ok_or_else(invalid)?;
        let record = self
            .store
            .find_api_key(&workspace, &key)
            .await?
            .ok_or_else(invalid)?;
        if !apikey::hashes_equal(&hash, &record.secret_hash) {
            return Err(invalid());
        }
        if record.revoke_time.is_some() {
            return Err(unauthenticated(
                Reason::ApiKeyRevoked,
                "the API key was revoked",
            ));
        }
        if record.key.expire_time.is_some_and(|t| t <= now_micros()) {
            return Err(expired());
        }
        let principal = Principal {
            role: record.key.role,
            name: ApiKeyName {
                workspace: workspace.clone(),
                key,
            }
            .to_string(),
            workspace: Some(workspace),
        };
        self.cache
            .put(hash, principal.clone(), record.key.expire_time);
        Ok(principal)
    }
}

/// The principal the auth layer attached to a request.
pub fn principal<T>(request: &tonic::Request<T>) -> std::result::Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            to_status(Error::new(
                Reason::MissingCredentials,
                "no credentials were checked for this call",
            ))
        })
}

/// Tower layer that authenticates every call under `/agentry.`.
pub type AuthLayer = StateLayer<Authenticator>;

pub type AuthService<S> = WithState<S, Authenticator>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, std::result::Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner().poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let mut inner = self.take_ready();
        let auth = self.state.clone();
        Box::pin(async move {
            let path = request.uri().path().to_owned();
            if !path.starts_with("/agentry.") {
                return inner.call(request).await;
            }
            if *auth.stopping.borrow() {
                // A call accepted now would be cut at the end of the grace period.
                return Ok(crate::error::unavailable(
                    "the server is shutting down; retry the call",
                )
                .into_http());
            }
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match auth.authenticate(header).await {
                Ok(principal) => {
                    if let Some(call) = request.extensions().get::<Arc<crate::observe::CallInfo>>()
                    {
                        call.set_principal(&principal);
                    }
                    request.extensions_mut().insert(principal);
                    inner.call(request).await
                }
                Err(error) => {
                    tracing::debug!(method = %path, reason = error.reason(), "unauthenticated call");
                    Ok(to_status(error).into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer as _, ServiceExt as _};

    use super::*;

    /// A service that answers every call it is handed with an empty OK.
    fn answering() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = Infallible,
        Future = impl Send,
    > + Clone
    + Send
    + 'static {
        tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(http::Response::new(tonic::body::Body::empty()))
        })
    }

    fn grpc_status(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_draining_server_refuses_new_calls_with_unavailable() {
        let dir = std::env::temp_dir().join(format!("agentry-drain-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("a.db").display());
        let store: Arc<dyn Storage> =
            Arc::new(agentry_store::Store::connect(&url, 1).await.unwrap());
        let (stop, stopping) = watch::channel(false);
        let auth = Authenticator::new(
            store,
            vec![0; 32],
            Arc::new(KeyCache::new(Duration::ZERO)),
            stopping,
        );
        let service = AuthLayer::new(Arc::new(auth)).layer(answering());
        let call = |path: &str| {
            http::Request::builder()
                .uri(format!("http://agentry{path}"))
                .body(())
                .unwrap()
        };
        let api = "/agentry.v1.RegistryService/GetWorkspace";
        let before = service.clone().oneshot(call(api)).await.unwrap();
        assert_eq!(grpc_status(&before), Some("16"), "no key: UNAUTHENTICATED");

        stop.send(true).unwrap();
        let during = service.clone().oneshot(call(api)).await.unwrap();
        assert_eq!(grpc_status(&during), Some("14"), "draining: UNAVAILABLE");
        let health = service
            .oneshot(call("/grpc.health.v1.Health/Check"))
            .await
            .unwrap();
        assert_eq!(
            grpc_status(&health),
            None,
            "health still answers while draining"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}

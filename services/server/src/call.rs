//! [`Call`]: what a unary handler is given besides its request: the server's shared
//! state (a [`RequestCtx`], through `Deref`) and the caller the auth layer
//! authenticated.

use std::ops::Deref;

use agentry_core::{Result, names::validate_slug};

use crate::{
    auth::{Action, Principal},
    convert::Mask,
    request::{RequestCtx, required},
    resource::{ChildName, ResourceName, UpdateRequest},
};

pub struct Call<'a> {
    ctx: &'a RequestCtx,
    /// Who is calling.
    pub caller: Principal,
}

impl<'a> Call<'a> {
    pub fn new(ctx: &'a RequestCtx, caller: Principal) -> Self {
        Self { ctx, caller }
    }

    /// The resource named in request field `field`, in whose workspace the caller may do
    /// `action` ([`Principal::authorize`]).
    pub fn authorize<N: ResourceName>(&self, field: &str, text: &str, action: Action) -> Result<N> {
        self.caller.authorize(field, text, action)
    }

    /// For a create: the parent named in the request's `parent`, in whose workspace the
    /// caller may do `action`, and the new resource's name, whose id (request field
    /// `id_field`) must be a slug.
    pub fn new_name<N: ChildName>(
        &self,
        parent: &str,
        id_field: &str,
        id: &str,
        action: Action,
    ) -> Result<(N::Parent, N)> {
        let parent = self.authorize("parent", parent, action)?;
        validate_slug(id_field, id)?;
        let name = N::child(&parent, id.to_owned());
        Ok((parent, name))
    }

    /// The resource an update request carries (required), its name checked for `action`,
    /// and its mask checked against the `updatable` fields, of which `nested` may be named
    /// by a sub-path.
    pub fn update<R: UpdateRequest, N: ResourceName>(
        &self,
        req: &R,
        action: Action,
        updatable: &[&str],
        nested: &[&str],
    ) -> Result<(R::Resource, N, Mask)> {
        let resource = required(R::FIELD, req.resource())?;
        let name = self.authorize(&format!("{}.name", R::FIELD), R::name(&resource), action)?;
        let mask = Mask::new(R::FIELD, req.mask(), updatable, nested)?;
        Ok((resource, name, mask))
    }
}

impl Deref for Call<'_> {
    type Target = RequestCtx;

    fn deref(&self) -> &RequestCtx {
        self.ctx
    }
}

//! [`Call`]: what a unary handler is given besides its request: the server's shared
//! state (a [`RequestCtx`], through `Deref`) and the caller the auth layer
//! authenticated.

use std::ops::Deref;

use agentry_core::{Result, names::validate_slug, port::Mutation};
use agentry_proto::RequestId;
use prost::{Message, Name};

use crate::{
    auth::{Action, Principal},
    convert::Mask,
    request::{RequestCtx, required},
    resource::{ChildName, CreateRequest, ResourceName, UpdateRequest},
};

/// What a create is about: the parent, the new resource's name and the write.
pub type Created<N> = (<N as ChildName>::Parent, N, Mutation);

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

    /// For a create: the parent the request names, in whose workspace the caller may do
    /// `action`, the new resource's name, whose id must be a slug, and the write.
    pub fn create<R>(&self, req: &R, action: Action) -> Result<Created<R::Name>>
    where
        R: CreateRequest + Message + Name + RequestId,
    {
        let parent = self.authorize("parent", req.parent(), action)?;
        validate_slug(R::ID_FIELD, req.id())?;
        let name = <R::Name as ChildName>::child(&parent, req.id().to_owned());
        let m = self.mutation_of(&name, req)?;
        Ok((parent, name, m))
    }

    /// The resource an update request carries (required), its name checked for `action`,
    /// and its mask checked against the fields the request may update.
    pub fn update<R: UpdateRequest>(
        &self,
        req: &R,
        action: Action,
    ) -> Result<(R::Resource, R::Name, Mask)> {
        let resource = required(R::FIELD, req.resource())?;
        let name = self.authorize(&format!("{}.name", R::FIELD), R::name(&resource), action)?;
        let mask = Mask::new(R::FIELD, req.mask(), R::UPDATABLE, R::NESTED)?;
        Ok((resource, name, mask))
    }
}

impl Deref for Call<'_> {
    type Target = RequestCtx;

    fn deref(&self) -> &RequestCtx {
        self.ctx
    }
}

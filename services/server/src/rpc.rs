//! Generates a service's struct (over the shared [`crate::request::RequestCtx`]) and its
//! tonic service impl, whose unary methods hand a [`crate::call::Call`] (that state and
//! the principal the auth layer attached) and the request to a plain async function,
//! whose domain error becomes a status in one place. An `@stream` method hands the state,
//! the resource the request names (the caller authorized as its
//! [`crate::standard::ByName`] says) and the request to a function that returns the
//! stream; what else a service needs is written by hand in `@extra`.

macro_rules! rpc {
    (
        $service:ident for $name:ident;
        $($module:ident :: $method:ident($request:ty) -> $response:ty;)*
        $(@stream $smodule:ident :: $smethod:ident($srequest:ty) -> $stream:ident of $item:ty;)*
        $(@extra { $($extra:item)* })?
    ) => {
        /// The service, over the server's shared state.
        pub struct $name {
            ctx: std::sync::Arc<$crate::request::RequestCtx>,
        }

        impl $name {
            pub fn new(ctx: std::sync::Arc<$crate::request::RequestCtx>) -> Self {
                Self { ctx }
            }
        }

        #[tonic::async_trait]
        impl $service for $name {
            $(
                async fn $method(&self, request: tonic::Request<$request>) -> Result<tonic::Response<$response>, tonic::Status> {
                    let principal = $crate::auth::principal(&request)?;
                    $crate::observe::note_request(&request);
                    let call = $crate::call::Call::new(&self.ctx, principal);
                    $module::$method(&call, request.into_inner())
                        .await
                        .map(tonic::Response::new)
                        .map_err($crate::error::to_status)
                }
            )*
            $(
                type $stream = std::pin::Pin<Box<
                    dyn futures::Stream<Item = Result<$item, tonic::Status>> + Send
                >>;

                async fn $smethod(&self, request: tonic::Request<$srequest>) -> Result<tonic::Response<Self::$stream>, tonic::Status> {
                    let principal = $crate::auth::principal(&request)?;
                    let request = request.into_inner();
                    let name = principal
                        .authorize(
                            "name",
                            $crate::standard::ByName::name(&request),
                            <$srequest as $crate::standard::ByName>::ACTION,
                        )
                        .map_err($crate::error::to_status)?;
                    $smodule::$smethod(self.ctx.clone(), name, request)
                        .await
                        .map(|stream| tonic::Response::new(Box::pin(stream) as Self::$stream))
                        .map_err($crate::error::to_status)
                }
            )*
            $($($extra)*)?
        }
    };
}

pub(crate) use rpc;

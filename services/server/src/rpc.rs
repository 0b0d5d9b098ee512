//! Generates a tonic service impl whose unary methods take the principal the auth layer
//! attached and hand the request to a plain async function, whose domain error becomes a
//! status in one place. Streaming methods are written by hand after the list.

macro_rules! rpc {
    (
        $service:ident for $ty:ty;
        $($module:ident :: $method:ident($request:ty) -> $response:ty;)*
        $(@extra { $($extra:item)* })?
    ) => {
        #[tonic::async_trait]
        impl $service for $ty {
            $(
                async fn $method(&self, request: tonic::Request<$request>) -> Result<tonic::Response<$response>, tonic::Status> {
                    let principal = $crate::auth::principal(&request)?;
                    $crate::observe::note_request(&request);
                    $module::$method(&self.ctx, &principal, request.into_inner())
                        .await
                        .map(tonic::Response::new)
                        .map_err($crate::error::to_status)
                }
            )*
            $($($extra)*)?
        }
    };
}

pub(crate) use rpc;

//! Services whose capabilities are not built yet. Each RPC answers `UNIMPLEMENTED` naming
//! what is missing and which capability brings it, so clients fail clearly, not mysteriously.
//! Every service in `berth.v1` is built now; the macro stays for the next one designed ahead.

/// The placeholder for every service that is not built yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct NotBuilt;

/// `not_built_service! { pb::x_server::X, "what", "issue"; {} method(Req) -> Resp; … }`
#[allow(unused_macros)]
macro_rules! not_built_service {
    (
        $trait:path, $what:literal, $arrives:literal;
        { $($extra:tt)* }
        $( $method:ident($req:ty) -> $resp:ty; )*
    ) => {
        #[tonic::async_trait]
        impl $trait for $crate::service::not_built::NotBuilt {
            $($extra)*
            $(
                async fn $method(
                    &self,
                    _req: ::tonic::Request<$req>,
                ) -> Result<::tonic::Response<$resp>, ::tonic::Status> {
                    Err($crate::error::not_built(
                        concat!($what, " (", stringify!($method), ")"),
                        $arrives,
                    ))
                }
            )*
        }
    };
}

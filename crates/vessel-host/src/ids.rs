//! Newtypes for the integers that cross the ABI: context ids, callout
//! tokens and queue tokens (ABI reference §2, §4.5), and the id of a VM.
//!
//! Their fields are private: build one with `new` (the raw value the guest
//! or the embedder knows) and read it with `get`.

use std::fmt;

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($inner:ty), $new_vis:vis) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) $inner);

        impl $name {
            /// The id with this raw value.
            $new_vis const fn new(raw: $inner) -> Self {
                Self(raw)
            }

            /// The raw integer.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_newtype!(
    /// A context id, allocated per VM. 0 is the VM context; root contexts and
    /// stream contexts count up from 1 (ABI reference §11.9).
    ContextId(u32), pub
);
id_newtype!(
    /// The token of an HTTP call, gRPC call, gRPC stream or (Higress 0.2.100)
    /// Redis call. The low two bits give the kind (0 HTTP, 1 gRPC call, 2 gRPC
    /// stream, 3 Redis) and tokens step by 4 per VM, as in Envoy (ABI
    /// reference §4.5).
    Token(u32), pub
);
id_newtype!(
    /// A shared-queue token; process-wide, keyed by (vm_id, name) (ABI reference §11.15).
    QueueToken(u32), pub
);
id_newtype!(
    /// A process-unique id of one [`Vm`](crate::Vm) instance, used to route
    /// queue notifications to the VM that registered the queue. Only a
    /// [`HostEnv`](crate::HostEnv) makes them ([`Vm::instance_id`](crate::Vm::instance_id)).
    VmInstanceId(u64), pub(crate)
);

/// The kind of a callout, encoded in the low two bits of its [`Token`].
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CalloutKind {
    /// `proxy_http_call`.
    Http,
    /// `proxy_grpc_call` (unary).
    GrpcCall,
    /// `proxy_grpc_stream`.
    GrpcStream,
    /// `proxy_redis_call` (Higress 0.2.100).
    Redis,
}

impl Token {
    /// The callout kind this token encodes.
    pub const fn kind(self) -> Option<CalloutKind> {
        match self.0 & 3 {
            0 => Some(CalloutKind::Http),
            1 => Some(CalloutKind::GrpcCall),
            2 => Some(CalloutKind::GrpcStream),
            _ => Some(CalloutKind::Redis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_kind_follows_low_bits() {
        assert_eq!(Token(4).kind(), Some(CalloutKind::Http));
        assert_eq!(Token(9).kind(), Some(CalloutKind::GrpcCall));
        assert_eq!(Token(10).kind(), Some(CalloutKind::GrpcStream));
        assert_eq!(Token(7).kind(), Some(CalloutKind::Redis));
    }
}

//! Ids, crypto and wire types that several cmesh actors need.
//!
//! Kept small on purpose: anything only one actor uses lives in that actor's crate.

pub mod address;
pub mod cmtp;
pub mod event_name;
pub mod genesis;
pub mod hash;
pub mod jcs;
pub mod jwt;
pub mod keys;
pub mod method;
pub mod rpc;
pub mod time;

pub use address::Address;
pub use cmtp::{CmtpError, Status};
pub use hash::keccak256;
pub use keys::{Signature65, SigningKey};
pub use method::Method;

/// `impl From<E> for $target` for every redb error type `E` (each converts into
/// `redb::Error`), wrapping it in `$variant`, so `?` works on any redb call. The crate
/// using it must depend on redb.
#[macro_export]
macro_rules! redb_errors_into {
    ($target:ty, $variant:path) => {
        $crate::redb_errors_into!(@each $target, $variant,
            redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);
    };
    (@each $target:ty, $variant:path, $($ty:ty),*) => {$(
        impl From<$ty> for $target {
            fn from(err: $ty) -> Self {
                $variant(err.into())
            }
        }
    )*};
}

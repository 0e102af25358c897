//! # cmesh-sdk: cmesh applications in Rust
//!
//! A cmesh application is a WebAssembly module whose exported functions are its methods
//! (docs/ABI.md). This crate hides that ABI: declare methods with [`method!`] as ordinary
//! Rust functions with typed parameters and a typed result, and use [`storage`] and
//! [`env`] inside them.
//!
//! ```no_run
//! use cmesh_sdk::{emit, method, storage, Key, Result};
//!
//! method! {
//!     /// `hello_world(name)`: "Hello, <name>!"; a write also counts the greeting.
//!     fn hello_world(name: String) -> Result<String> {
//!         if !cmesh_sdk::env::is_view() {
//!             let key = Key::named(b'g', &name).map_err(|e| format!("name is {e}"))?;
//!             let count = storage::get::<u64>(&key).unwrap_or(0) + 1;
//!             storage::set(&key, &count);
//!             emit("greeted", &serde_json::json!({ "name": name, "count": count }));
//!         }
//!         Ok(format!("Hello, {name}!"))
//!     }
//! }
//! ```
//!
//! Build with `cargo build --release --target wasm32-unknown-unknown` as a `cdylib`
//! (see apps/ and scripts/build-apps).
//!
//! * **Arguments** come as JSON: positional `["Dexter"]` or named `{"name":"Dexter"}`
//!   (details in [`args`]). Parameters of type `Option<T>` may be left out.
//! * **Results** are returned as JSON. A method returning `Result<T, E>` with `E: Display`
//!   fails the call with `E`'s text on `Err` (the caller sees `app panicked: <text>`);
//!   a panic does the same with its message. A failed call leaves no trace.
//! * Outside wasm32 the host functions don't exist (calling one panics), so the pure
//!   parts (keys, ranges, argument decoding) can be unit-tested natively.

use core::fmt;

pub mod args;
pub mod env;
mod host;
pub mod key;
pub mod storage;

pub use env::{emit, Address, Id};
pub use key::{Key, KeyError, KeyRange};
pub use serde;
pub use serde_json;

/// A method's failure: its message is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error(message.into())
    }
}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.0
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Error {
        Error(format!("invalid key: {e}"))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error(e.to_string())
    }
}

/// `Result<T, cmesh_sdk::Error>` by default.
pub type Result<T, E = Error> = core::result::Result<T, E>;

/// Returns `Err(Error)` with a formatted message: `bail!("no such key `{key}`")`.
#[macro_export]
macro_rules! bail {
    ($($fmt:tt)+) => {
        return ::core::result::Result::Err($crate::Error::new(::std::format!($($fmt)+)).into())
    };
}

/// `ensure!(cond, "message {}", x)`: [`bail!`] unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            $crate::bail!($($fmt)+);
        }
    };
}

/// `log!("seen {}", n)`: logs a formatted line (see [`env::log`]).
#[macro_export]
macro_rules! log {
    ($($fmt:tt)+) => {
        $crate::env::log(&::std::format!($($fmt)+))
    };
}

/// Declares one or more methods: each becomes an exported `() -> ()` function of that name
/// which decodes the call's arguments into the parameters, runs the body and sets the
/// result to the JSON of the returned value.
///
/// ```no_run
/// cmesh_sdk::method! {
///     /// Doc comments and other attributes are kept.
///     fn add(a: i64, b: Option<i64>) -> i64 {
///         a + b.unwrap_or(1)
///     }
///
///     fn checked_div(a: i64, b: i64) -> cmesh_sdk::Result<i64> {
///         cmesh_sdk::ensure!(b != 0, "division by zero");
///         Ok(a / b)
///     }
///
///     fn ping() {}  // returns `null`
/// }
/// ```
///
/// `add` is called as `add:[2, 3]`, `add:{"a": 2}`, ... Exports are always `pub` (a
/// visibility written before `fn` is accepted and ignored). Parameters are plain identifiers
/// whose types implement `serde::de::DeserializeOwned`; the return type implements
/// `serde::Serialize`, or is a `Result<T: Serialize, E: Display>`. Inside the body,
/// `return` and `?` work as in any function. The method's own name is taken by the
/// export: to call shared logic from several methods, put it in a normal function.
#[macro_export]
macro_rules! method {
    ($(
        $(#[$attr:meta])*
        $vis:vis fn $name:ident ( $( $param:ident : $ty:ty ),* $(,)? ) $( -> $ret:ty )? $body:block
    )*) => {$(
        $(#[$attr])*
        #[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
        pub extern "C" fn $name() {
            fn __cmesh_body($( $param: $ty ),*) $( -> $ret )? $body

            const __CMESH_PARAMS: &[&str] = &[$( ::core::stringify!($param) ),*];
            $crate::__private::run(::core::stringify!($name), __CMESH_PARAMS, |#[allow(unused_variables)] args| {
                $( let $param: $ty = args.next_arg()?; )*
                #[allow(unused_imports)]
                use $crate::__private::{ViaResult as _, ViaSerialize as _};
                (&&$crate::__private::Ret(__cmesh_body($( $param ),*))).into_output()
            });
        }
    )*};
}

/// Used by the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use core::fmt::Display;

    use serde::Serialize;

    use crate::{args::Args, env, Error};

    /// The glue of one call: panic hook, input, arguments, output or failure.
    pub fn run(
        method: &'static str,
        params: &'static [&'static str],
        f: impl FnOnce(&mut Args) -> Result<Vec<u8>, Error>,
    ) {
        install_panic_hook();
        let result = Args::parse(method, params, &env::input()).and_then(|mut args| f(&mut args));
        match result {
            Ok(output) => env::output(&output),
            Err(e) => env::abort(e.message()),
        }
    }

    /// Sends panic messages to the caller through the `panic` host function.
    fn install_panic_hook() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let payload = info.payload();
                let msg = (payload.downcast_ref::<&str>().copied())
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("panic");
                let msg = match info.location() {
                    Some(at) => format!("{msg} (at {}:{})", at.file(), at.line()),
                    None => msg.to_string(),
                };
                env::abort(&msg)
            }))
        });
    }

    fn json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(value).map_err(|e| Error::new(format!("result is not JSON: {e}")))
    }

    /// "Autoref specialization": `(&&Ret(v)).into_output()` picks [`ViaResult`] when `v`
    /// is a `Result<T, E: Display>`, and [`ViaSerialize`] for any other `Serialize` value.
    pub struct Ret<T>(pub T);

    pub trait ViaResult {
        fn into_output(self) -> Result<Vec<u8>, Error>;
    }

    impl<T: Serialize, E: Display> ViaResult for &&Ret<Result<T, E>> {
        fn into_output(self) -> Result<Vec<u8>, Error> {
            match &self.0 {
                Ok(value) => json(value),
                Err(e) => Err(Error::new(e.to_string())),
            }
        }
    }

    pub trait ViaSerialize {
        fn into_output(self) -> Result<Vec<u8>, Error>;
    }

    impl<T: Serialize> ViaSerialize for &Ret<T> {
        fn into_output(self) -> Result<Vec<u8>, Error> {
            json(&self.0)
        }
    }
}

#[cfg(test)]
#[allow(clippy::needless_borrow)] // `&&` is how the autoref dispatch is written
mod tests {
    use super::__private::{Ret, ViaResult as _, ViaSerialize as _};
    use super::*;

    #[test]
    fn results_become_output_or_failure() {
        assert_eq!((&&Ret("hi")).into_output().unwrap(), b"\"hi\"");
        assert_eq!((&&Ret(())).into_output().unwrap(), b"null");
        assert_eq!((&&Ret(Some(vec![1, 2]))).into_output().unwrap(), b"[1,2]");
        assert_eq!((&&Ret(Ok::<u8, Error>(7))).into_output().unwrap(), b"7");
        assert_eq!(
            (&&Ret(Err::<u8, _>("no such key")))
                .into_output()
                .unwrap_err()
                .message(),
            "no such key"
        );
        assert_eq!(
            (&&Ret(Err::<u8, _>(KeyError::Nul)))
                .into_output()
                .unwrap_err()
                .message(),
            "contains a NUL byte"
        );
        // A map with non-string keys can't be JSON: the call fails instead of panicking.
        let map: std::collections::BTreeMap<Vec<u8>, u8> = [(vec![1], 1)].into();
        assert!((&&Ret(map))
            .into_output()
            .unwrap_err()
            .message()
            .starts_with("result is not JSON"));
    }

    #[test]
    fn bail_and_ensure() {
        fn check(n: u32) -> Result<u32> {
            ensure!(n < 10, "{n} is too big");
            if n == 0 {
                bail!("zero");
            }
            Ok(n)
        }
        assert_eq!(check(3), Ok(3));
        assert_eq!(check(0).unwrap_err().message(), "zero");
        assert_eq!(check(12).unwrap_err().to_string(), "12 is too big");
        let e: Error = Key::named(1, &"x".repeat(40)).unwrap_err().into();
        assert_eq!(e.message(), "invalid key: 40 bytes long, at most 31 allowed");
    }

    // The macro expands and type-checks natively (the exports just aren't `no_mangle`).
    method! {
        /// Adds.
        fn add(a: i64, b: Option<i64>) -> i64 { a + b.unwrap_or(1) }
        fn checked_div(a: i64, b: i64,) -> Result<i64> {
            ensure!(b != 0, "division by zero");
            Ok(a / b)
        }
        pub fn ping() {}
        fn early(flag: bool) -> core::result::Result<&'static str, String> {
            if flag {
                return Err("flagged".into());
            }
            Ok("fine")
        }
    }

    #[test]
    fn methods_expand() {
        let _: [extern "C" fn(); 4] = [add, checked_div, ping, early];
    }
}

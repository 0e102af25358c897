//! The registrar as an actix actor.
//!
//! Why an actor: it gives the registrar one owner and one queue, so writes are applied one
//! at a time in arrival order. redb commits block for about a millisecond (fsync), so run
//! it on its own [`Arbiter`](actix::Arbiter), never on the one driving NATS:
//!
//! ```no_run
//! # use actix::Actor;
//! # use cmesh_registrar::{RegistrarActor, RegistrarError};
//! # fn start(data: &std::path::Path) -> Result<(), RegistrarError> {
//! let registrar = RegistrarActor::open(&data.join("registrar.redb"), vec!["mcom".into()])?;
//! let arbiter = actix::Arbiter::new();
//! let addr = RegistrarActor::start_in_arbiter(&arbiter.handle(), move |_| registrar);
//! # drop(addr); Ok(()) }
//! ```

use cmesh_common::time::unix_millis;
use std::path::Path;

use actix::{Actor, Context, Handler};
use cmesh_common::CmtpError;
use tracing::info;

use super::error::RegistrarError;
use super::messages::{List, Register, Release, Resolve, Transfer, Written};
use super::names::NamePolicy;
use super::record::NameRecord;
use super::store::RegistrarStore;

/// Owns the [`RegistrarStore`] and answers the messages in [`super::messages`].
#[derive(Debug)]
pub struct RegistrarActor {
    store: RegistrarStore,
    clock: fn() -> u64,
}

impl RegistrarActor {
    /// Opens (or creates) the redb file at `path`, serving `tlds` (e.g. `["mcom"]`).
    /// Fails on an empty or invalid TLD list, an unopenable file, or an incompatible one.
    pub fn open(path: &Path, tlds: Vec<String>) -> Result<Self, RegistrarError> {
        let policy = NamePolicy::new(tlds)?;
        Ok(Self::with_store(RegistrarStore::open(path, policy)?))
    }

    /// An actor over an already open store.
    pub fn with_store(store: RegistrarStore) -> Self {
        RegistrarActor {
            store,
            clock: unix_millis,
        }
    }

    /// Replaces the clock (unix milliseconds) used for `registered_at` / `updated_at`.
    pub fn with_clock(mut self, clock: fn() -> u64) -> Self {
        self.clock = clock;
        self
    }

    pub fn store(&self) -> &RegistrarStore {
        &self.store
    }
}

impl Actor for RegistrarActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        info!(path = %self.store.path().display(), "registrar started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        info!(path = %self.store.path().display(), "registrar stopped");
    }
}

impl Handler<Register> for RegistrarActor {
    type Result = Result<Written, CmtpError>;

    fn handle(&mut self, msg: Register, _ctx: &mut Self::Context) -> Self::Result {
        let now = (self.clock)();
        Ok(self.store.register(msg.caller, &msg.name, &msg.target, now)?)
    }
}

impl Handler<Resolve> for RegistrarActor {
    type Result = Result<NameRecord, CmtpError>;

    fn handle(&mut self, msg: Resolve, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.store.resolve(&msg.name)?)
    }
}

impl Handler<Transfer> for RegistrarActor {
    type Result = Result<Written, CmtpError>;

    fn handle(&mut self, msg: Transfer, _ctx: &mut Self::Context) -> Self::Result {
        let now = (self.clock)();
        Ok(self.store.transfer(msg.caller, &msg.name, msg.to, now)?)
    }
}

impl Handler<Release> for RegistrarActor {
    type Result = Result<Written, CmtpError>;

    fn handle(&mut self, msg: Release, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.store.release(msg.caller, &msg.name)?)
    }
}

impl Handler<List> for RegistrarActor {
    type Result = Result<Vec<NameRecord>, CmtpError>;

    fn handle(&mut self, msg: List, _ctx: &mut Self::Context) -> Self::Result {
        Ok(self.store.list(msg.owner)?)
    }
}

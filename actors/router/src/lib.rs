//! The cmesh router: the NATS front door, FQMN parsing, dispatch to the protected
//! services, and the registrar.

pub mod forward;
pub mod fqmn;
pub mod gateway;
pub mod micro;
pub mod registrar;
pub mod request;
pub mod router;
pub mod services;
mod state;

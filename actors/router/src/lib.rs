//! The cmesh router: the NATS front door (gateway, micro), FQMN parsing, dispatch to the
//! protected services, and forwarding to other nodes.

mod context_methods;
pub mod forward;
pub mod fqmn;
pub mod gateway;
pub mod micro;
pub mod request;
pub mod router;
pub mod services;

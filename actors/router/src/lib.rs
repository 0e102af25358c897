//! The cmesh router: the NATS front door (gateway, micro), FQMN parsing, dispatch to the
//! protected services (the mesh registry among them, through this node's consensus node).

mod context_methods;
pub mod fqmn;
pub mod gateway;
pub mod micro;
pub mod registry;
pub mod request;
pub mod router;
pub mod services;

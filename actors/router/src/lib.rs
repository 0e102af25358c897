//! cmesh-router

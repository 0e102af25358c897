//! cmesh-events

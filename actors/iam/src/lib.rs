//! cmesh-iam

//! `cmesh bench fqmn` (in progress).

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct FqmnArgs {
    /// NATS server URL
    #[arg(long = "nats", env = "CMESH_NATS_URL", default_value = crate::config::DEFAULT_NATS_URL)]
    pub nats_url: String,
}

pub async fn fqmn(_args: FqmnArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet")
}

//! Logs on stderr through tracing: level from RUST_LOG, plain or JSON.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Plain,
    Json,
}

/// `default_level` applies when RUST_LOG is unset: a node logs at info, client commands
/// only warn so that their output stays readable.
pub fn init(format: Format, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Plain => builder.init(),
        Format::Json => builder.json().init(),
    }
}

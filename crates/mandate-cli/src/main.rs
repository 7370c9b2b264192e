//! `mandate`: the authority server and its command line.

mod approvals;
mod args;
mod attest;
mod commands;
mod demo;
mod demo_upstreams;
mod mcp_bridge;
mod memory;
mod output;
mod policy;
mod proxy;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

// The request path allocates small objects from every worker thread; the
// system allocator spent a sixth of the gateway's CPU time on them
// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = args::Cli::parse();
    // The demo tells its own story; the server's info lines would bury it.
    let default_level = if matches!(cli.command, args::Command::Demo(_)) {
        "error"
    } else {
        "info"
    };
    // `serve` sets up its own, once its configuration says where traces go.
    if !matches!(cli.command, args::Command::Serve(_))
        && let Err(e) = telemetry::init(default_level, None)
    {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    match commands::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

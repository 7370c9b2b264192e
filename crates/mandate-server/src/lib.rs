//! The Mandate authority over HTTP: wiring of the store, the authority key
//! and the API routes. Domain logic lives in `mandate-core`.

mod api;
mod config;
mod datadir;
mod problem;
mod replay;
mod state;

pub use api::router;
pub use config::{Config, ConfigError, DEFAULT_DATA_DIR, DEFAULT_LISTEN};
pub use datadir::{DataDir, DataDirError, init_admin};
pub use problem::Problem;
pub use state::AppState;

use std::future::Future;
use std::sync::Arc;

use mandate_core::{OsRandom, SystemClock};
use tokio::net::TcpListener;

/// Starts the authority: opens the data dir, binds, prints where it
/// listens, serves until `shutdown` resolves, then drains.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let data = DataDir::open(&config.data_dir).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen.to_string(), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(config.listen.to_string(), e))?;
    let issuer = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let has_principals = !data
        .store
        .principals()
        .await
        .map_err(DataDirError::Store)?
        .is_empty();
    let state = AppState::new(
        data.store,
        Arc::new(data.key),
        Arc::new(SystemClock),
        Arc::new(OsRandom),
        &config,
        issuer.clone(),
    );
    // Printed on stdout, one line, so people and scripts can find the address.
    println!(
        "mandate listening on http://{local} (issuer {issuer}, data {})",
        config.data_dir.display()
    );
    if !has_principals {
        println!(
            "no principals yet: run `mandate init --data {}` to create the first admin",
            config.data_dir.display()
        );
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Io)?;
    tracing::info!("mandate stopped");
    Ok(())
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot listen on `{0}`: {1}")]
    Bind(String, std::io::Error),
    #[error("server error: {0}")]
    Io(std::io::Error),
}

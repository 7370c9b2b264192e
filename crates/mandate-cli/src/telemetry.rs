//! Where the process's diagnostics go: log lines to stderr (`MANDATE_LOG`
//! filters them), and for `mandate serve`, when configured, traces over
//! OTLP/HTTP (ADR 0025).
//!
//! The traces are the spans of the request path: a request's span at each
//! front door (`decide_request`, `gateway_request`, `mcp_request`) and one
//! per stage under it (`verify`, `decide`, `record`, `forward`). They are
//! `debug` spans, so without an exporter they are disabled where they are
//! written and cost nothing; with one, only spans of Mandate's own crates
//! are exported, never log events (which name missions and principals).

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The exporter, kept to flush what is batched when the process stops.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Log lines to stderr at `default_level` unless `MANDATE_LOG` says
/// otherwise; with `otlp_traces_url`, the request path's spans go there too.
pub fn init(default_level: &str, otlp_traces_url: Option<&str>) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(
            EnvFilter::try_from_env("MANDATE_LOG").unwrap_or_else(|_| default_level.into()),
        );
    let provider = otlp_traces_url.map(provider).transpose()?;
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("mandate"))
            .with_filter(
                filter_fn(|m| m.is_span() && m.target().starts_with("mandate_"))
                    .with_max_level_hint(LevelFilter::DEBUG),
            )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("cannot set up logging")?;
    Ok(Telemetry { provider })
}

/// Spans batched and sent to `url` (OTLP/HTTP, protobuf) from a thread of
/// the exporter's own.
fn provider(url: &str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .with_context(|| format!("cannot export traces to `{url}`"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("mandate").build())
        .build())
}

impl Telemetry {
    /// Sends what is batched and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: the last traces could not be sent: {e}");
        }
    }
}

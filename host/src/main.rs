//! The `mediation-host` command: `run` the host, or `check` a configuration file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mediation_host::config::{ConfigError, LogFormat};
use mediation_host::host::Config;
use mediation_host::host::Host;
use mediation_host::packet_log::Sink;
use mediation_host::reload;
use mediation_host::shutdown::StopSignals;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// WebAssembly-extensible protocol mediation host: bridges WebSocket, SSE and HTTP
/// clients to message brokers, in both directions.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host until SIGTERM or SIGINT. SIGHUP reloads the routes.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Check a configuration file and print every problem in it.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { config } => match Config::load(&config).and_then(|c| {
            mediation_host::host::check_adapters(&c).map_err(|e| ConfigError { file: Some(config.clone()), ..e })?;
            Ok(c)
        }) {
            Ok(c) => {
                println!(
                    "{}: ok ({} entrypoints, {} endpoints, {} routes)",
                    config.display(),
                    c.entrypoints.len(),
                    c.endpoints.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => run(config),
    }
}

fn run(path: PathBuf) -> ExitCode {
    let loaded = reload::modified(&path);
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.host.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Before the host starts, so that a signal during startup is handled, not fatal.
        let signals = StopSignals::install().and_then(|stop| Ok((stop, signal(SignalKind::hangup())?)));
        let (mut stop_signals, hangup) = match signals {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot install the signal handlers");
                return ExitCode::FAILURE;
            }
        };
        let poll = Duration::from_millis(config.host.reload_poll_ms);
        let host = match Host::start(config, Sink::Stdout).await {
            Ok(host) => host,
            Err(e) => {
                tracing::error!(error = %e, "the host did not start");
                return ExitCode::FAILURE;
            }
        };
        let stop_watching = CancellationToken::new();
        let signal = tokio::select! {
            signal = stop_signals.recv() => signal,
            () = reload::watch(&host, path, poll, loaded, hangup, stop_watching.clone()) => "reload watcher ended",
        };
        stop_watching.cancel();
        tracing::info!(signal, "shutting down");
        host.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn init_logging(format: LogFormat) {
    // The AMQP client logs every failed connection attempt at ERROR, three lines each,
    // which the rabbitmq endpoint already reports once, redacted; `MEDIATION_LOG` can
    // turn it back on (`info,lapin=debug`).
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDIATION_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,lapin=off"));
    // Colours only for a person at a terminal, never for a log shipper.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

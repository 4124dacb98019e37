//! `dynamiq-sidecar` binary: parses the command line and hands over to [`dynamiq_sidecar::app`]
//! or the offline tools. Exit status: 0 done, 1 runtime failure, 2 configuration error.

/// mimalloc instead of glibc's malloc: ingest allocates and frees many short-lived buffers across
/// threads, where glibc spent a quarter of the CPU under load (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use dynamiq_sidecar::app::config::Config;
use dynamiq_sidecar::app::{self, EnvSecrets};
use dynamiq_sidecar::cli::{self, BufferCommand, Cli, Command};
use dynamiq_sidecar::tools::{self, ToolError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none()
        && let Some(runtime_api) = std::env::var(dynamiq_sidecar::lambda::RUNTIME_API_ENV)
            .ok()
            .filter(|v| !v.is_empty())
    {
        return lambda(&runtime_api);
    }
    match cli.command() {
        Command::Run(args) => {
            let config = match cli::load_run_config(&args) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            dynamiq_sidecar::logging::init(&config.log);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(app::run(config, EnvSecrets::from_env())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(app::AppError::Config(e)) => config_error(e),
                Err(e) => {
                    tracing::error!(error = %e, "dynamiq-sidecar failed");
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::CheckConfig(args) => match cli::load_config(&args, Vec::new()) {
            Ok(config) => {
                print!("{}", config.to_toml());
                eprintln!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => config_error(e),
        },
        Command::Buffer { command } => buffer_tool(command),
        Command::Convert(args) => convert(&args),
    }
}

fn convert(args: &cli::ConvertArgs) -> ExitCode {
    use std::io::{Read, Write};
    let is_stdio = |p: &std::path::Path| p.as_os_str() == "-";
    let input = if is_stdio(&args.input) {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf).map(|_| buf)
    } else {
        std::fs::read(&args.input)
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.input.display());
            return ExitCode::from(1);
        }
    };
    let (output, report) =
        match dynamiq_sidecar::convert::files::convert_file(&input, args.from, args.to) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", args.input.display());
                return ExitCode::from(1);
            }
        };
    let written = if is_stdio(&args.output) {
        std::io::stdout().lock().write_all(&output)
    } else {
        std::fs::write(&args.output, &output)
    };
    if let Err(e) = written {
        eprintln!("error: cannot write {}: {e}", args.output.display());
        return ExitCode::from(1);
    }
    for problem in &report.problems {
        eprintln!("warning: {problem}");
    }
    eprintln!("converted {} of {} item(s)", report.written, report.read);
    ExitCode::SUCCESS
}

/// Runs as an AWS Lambda extension (see [`dynamiq_sidecar::lambda`]).
fn lambda(runtime_api: &str) -> ExitCode {
    use dynamiq_sidecar::lambda::{self, LambdaError};
    let config_file = std::env::var_os(dynamiq_sidecar::app::config::CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let layer = std::path::PathBuf::from(lambda::LAYER_CONFIG);
            layer.is_file().then_some(layer)
        });
    let args = cli::ConfigArgs {
        config: config_file,
    };
    // Logging first, from the environment's log settings (the file is read after registration).
    let mut log = dynamiq_sidecar::logging::LogConfig::default();
    if let Ok(level) = std::env::var("DYNAMIQ_SIDECAR_LOG_LEVEL") {
        log.level = level;
    }
    if std::env::var("DYNAMIQ_SIDECAR_LOG_FORMAT").as_deref() == Ok("json") {
        log.format = dynamiq_sidecar::logging::LogFormat::Json;
    }
    dynamiq_sidecar::logging::init(&log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let load = move || cli::load_config(&args, Vec::new());
    match runtime.block_on(lambda::run(runtime_api, load, EnvSecrets::from_env())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(LambdaError::Config(e)) => config_error(e),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn config_error(e: dynamiq_sidecar::config::ConfigError) -> ExitCode {
    eprintln!("configuration error: {e}");
    ExitCode::from(2)
}

fn buffer_tool(command: BufferCommand) -> ExitCode {
    let args = match &command {
        BufferCommand::Inspect { config, .. }
        | BufferCommand::Export { config }
        | BufferCommand::ReplayDeadLetters { config } => config.clone(),
    };
    let config = match cli::load_config(&args, Vec::new()) {
        Ok(c) => c,
        Err(e) => return config_error(e),
    };
    match run_buffer_tool(command, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_buffer_tool(command: BufferCommand, config: &Config) -> Result<(), ToolError> {
    match command {
        BufferCommand::Inspect { json, .. } => {
            tools::inspect(config, json, &mut std::io::stdout().lock())
        }
        BufferCommand::Export { .. } => {
            let n = tools::export(config, &mut std::io::stdout().lock())?;
            eprintln!("exported {n} run(s) not yet delivered");
            Ok(())
        }
        BufferCommand::ReplayDeadLetters { .. } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    ToolError::from_message(format!("cannot start the async runtime: {e}"))
                })?;
            let report = runtime.block_on(tools::replay_dead_letters(config))?;
            eprintln!(
                "replayed {} run(s) from {} dead-letter file(s); they are forwarded when the sidecar runs",
                report.runs, report.files
            );
            Ok(())
        }
    }
}

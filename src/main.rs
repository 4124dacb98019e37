//! `dynamiq-sidecar` binary: parses the command line and hands over to [`dynamiq_sidecar::app`]
//! or the offline tools. Exit status: 0 done, 1 runtime failure, 2 configuration error.

use std::process::ExitCode;

use clap::Parser;
use dynamiq_sidecar::app::{self, EnvSecrets};
use dynamiq_sidecar::cli::{self, BufferCommand, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = match cli::load_run_config(&args) {
                Ok(c) => c,
                Err(e) => return config_error(e),
            };
            cli::init_logging(&config);
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
    }
}

fn config_error(e: dynamiq_sidecar::config::ConfigError) -> ExitCode {
    eprintln!("configuration error: {e}");
    ExitCode::from(2)
}

fn buffer_tool(command: BufferCommand) -> ExitCode {
    let _ = command;
    eprintln!("buffer tools are not wired yet");
    ExitCode::from(1)
}

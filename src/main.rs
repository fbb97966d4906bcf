//! Parse the command line, dispatch, map the outcome to an exit code.

use clap::Parser;
use foreman::app;
use foreman::cli::{Cli, Command, LogFormat};
use foreman::model::SweepKind;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Tests drive crash points through FAILPOINTS; release builds lack the feature.
    #[cfg(feature = "failpoints")]
    let _scenario = fail::FailScenario::setup();
    let cli = Cli::parse();
    // The demo prints its own story; its logs would only repeat it.
    let quiet = if matches!(cli.command, Command::Demo) {
        cli.quiet + 2
    } else {
        cli.quiet
    };
    foreman::logging::init(cli.verbose, quiet, cli.log_format);
    let explicit = cli.config.is_some();
    let path = app::config_path(cli.config);
    let result = match &cli.command {
        Command::Run => app::run(&path),
        Command::Sweep(a) => app::one_sweep(&path, a, SweepKind::Manual),
        Command::ScanOrphans(a) => app::one_sweep(&path, a, SweepKind::Startup),
        Command::CheckConfig => app::check_config(&path),
        Command::Explain(a) => app::explain(&path, a),
        Command::Log(a) => app::log(&path, a),
        Command::Twin(a) => Ok(app::twin(&path, a)),
        Command::Silence(a) => app::silence(&path, a),
        Command::Wellbeing(a) => app::wellbeing(&path, a),
        Command::Review(a) => app::review(&path, explicit, a),
        Command::Demo => foreman::demo::run(),
        Command::Completions(a) => Ok(app::completions(a.shell)),
        Command::Man(a) => app::man(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // In the log's format, so `journalctl -p err` shows why a
            // start failed.
            match cli
                .log_format
                .unwrap_or_else(foreman::logging::default_format)
            {
                // An error may quote executor text: escaped like every log
                // field, so it cannot forge a line or reach the terminal.
                LogFormat::Journal => {
                    eprintln!("<3>foreman: {}", foreman::logging::escaped(&e.to_string()))
                }
                LogFormat::Json => eprintln!(
                    "{}",
                    serde_json::json!({"level": "ERROR", "fields": {"message": format!("foreman: {e}")}, "target": "foreman"})
                ),
                LogFormat::Text => {
                    eprintln!("foreman: {}", foreman::logging::escaped(&e.to_string()))
                }
            }
            ExitCode::from(e.exit_code())
        }
    }
}

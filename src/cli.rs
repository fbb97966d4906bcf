//! The command line (clap derive). Parsing only; `main` dispatches.

use clap::{ArgAction, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "foreman",
    version,
    about = "Watchdog for a task executor whose tasks run as OS processes"
)]
pub struct Cli {
    /// Configuration file [default: $FOREMAN_CONFIG, else /etc/foreman/foreman.toml]
    #[arg(long, global = true, env = "FOREMAN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Less log output (-q warnings and errors only, -qq errors only)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,
    /// Log format: text on a terminal; under systemd (JOURNAL_STREAM), lines
    /// with syslog priorities and no timestamp; json for log shippers
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human lines with timestamps (colour on a terminal)
    Text,
    /// For journald: `<N>` syslog priority prefixes, no timestamp, no colour
    Journal,
    /// One JSON object per line
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: startup orphan scan, then a sweep every `interval` until SIGTERM/SIGINT
    Run,
    /// One sweep now, then exit
    Sweep(ActArgs),
    /// The startup orphan scan alone
    ScanOrphans(ActArgs),
    /// Parse and validate the configuration; print it with defaults filled in
    CheckConfig,
    /// Why a finding was made and what was done, with the verdict judged again
    Explain(ExplainArgs),
    /// The activity log, queried: findings (or sweeps), newest last
    Log(LogArgs),
    /// An instant, read-only health snapshot; exit code as a Nagios check
    Twin(TwinArgs),
    /// Hold actions and alerts for a droid type, a task or a host for a
    /// while (findings are still recorded, outcome `silenced`); list or
    /// clear silences
    Silence(SilenceArgs),
    /// The wellbeing sweep now: every droid type and Foreman itself; files
    /// one initiative when something is wrong (exit 1), none when all is well
    Wellbeing(WellbeingArgs),
    /// Self-test: run the real detection against a sandbox of real
    /// processes (or, with --live, check this deployment); exit 1 if a check fails
    Review(ReviewArgs),
    /// Watch a scratch executor with real processes for a few seconds
    Demo,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the man page (roff) to stdout: foreman(1), or with SUBCOMMAND
    /// foreman-SUBCOMMAND(1); with --dir, write every page there
    Man(ManArgs),
}

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// The subcommand whose page to print (e.g. sweep for foreman-sweep(1))
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "dir")]
    pub subcommand: Option<String>,
    /// Write foreman.1 and foreman-SUBCOMMAND.1 for every subcommand into DIR
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ActArgs {
    /// Judge and print what would happen; change nothing anywhere
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The finding's id (`id` in `sweep --json`, `finding_id` in logs and alerts)
    pub finding_id: i64,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Only what was seen since then: a duration back from now ("1h",
    /// "2days") or an RFC 3339 time
    #[arg(long, value_name = "DURATION|TIME")]
    pub since: Option<String>,
    /// Only findings of this kind (repeat for several)
    #[arg(long, value_name = "KIND")]
    pub kind: Vec<String>,
    /// Only findings of this task
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Only findings of this droid type
    #[arg(long = "type", value_name = "TYPE")]
    pub droid_type: Option<String>,
    /// List sweeps instead of findings
    #[arg(long, conflicts_with_all = ["kind", "task", "droid_type"])]
    pub sweeps: bool,
    /// List `foreman review` runs instead of findings
    #[arg(long, conflicts_with_all = ["kind", "task", "droid_type", "sweeps"])]
    pub reviews: bool,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
    /// Keep printing what is committed from now on (checks once a second)
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, clap::Args)]
pub struct TwinArgs {
    /// One JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    /// Take a snapshot every INTERVAL (seconds like 1 or 0.5, or "2s")
    /// until Ctrl-C: redrawn in place on a terminal, one after another
    /// elsewhere
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "2s")]
    pub watch: Option<String>,
    /// Full rows, not cut to the terminal's width (the default off a
    /// terminal)
    #[arg(long)]
    pub wide: bool,
    /// How far back failures look [default: `[twin] window`, 1h]
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Every host's Foreman and RUNNING tasks (kind = "postgres" with a fleet)
    #[arg(long)]
    pub fleet: bool,
    /// List every failure of the window, not only the latest 20 (the counts
    /// by type and kind always cover all)
    #[arg(long)]
    pub all_failures: bool,
}

#[derive(Debug, clap::Args)]
pub struct WellbeingArgs {
    /// Print the checks and the initiative that would be filed; record and
    /// file nothing
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Run as this schedule slot (e.g. 2026-11-23T06:00), to redo a slot
    /// that was missed: a slot already recorded is never filed twice
    #[arg(long, value_name = "SLOT")]
    pub slot: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Keep the sandbox's temp directory (executors, logs) and print its path
    #[arg(long, conflicts_with = "live")]
    pub keep: bool,
    /// Run one check only (by its name, e.g. pid-reuse-detected)
    #[arg(long, value_name = "NAME")]
    pub only: Option<String>,
    /// Record nothing in the configured activity log (the sandbox's own logs only)
    #[arg(long)]
    pub sandbox_only: bool,
    /// Read-only checks of the real deployment instead of the sandbox
    #[arg(long)]
    pub live: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").args(["droid_type", "task", "host", "list", "clear", "clear_all"]).required(true)))]
pub struct SilenceArgs {
    /// Silence this droid type
    #[arg(long = "type", value_name = "TYPE")]
    pub droid_type: Option<String>,
    /// Silence this task (its id)
    #[arg(long, value_name = "ID")]
    pub task: Option<String>,
    /// Silence this host (every task of it)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// How long (e.g. 2h, 30m, or bare seconds)
    #[arg(long = "for", value_name = "DURATION")]
    pub length: Option<String>,
    /// Why, shown with every finding it holds
    #[arg(long)]
    pub reason: Option<String>,
    /// The silences and maintenance windows in force
    #[arg(long)]
    pub list: bool,
    /// End the silence with this id now
    #[arg(long, value_name = "ID")]
    pub clear: Option<i64>,
    /// End every silence now
    #[arg(long)]
    pub clear_all: bool,
    /// JSON instead of text
    #[arg(long)]
    pub json: bool,
}

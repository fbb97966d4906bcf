//! The man pages: `foreman(1)` and one `foreman-<sub>(1)` per subcommand,
//! generated from the command line itself (clap_mangen) so they never
//! drift from it. The main page gets the sections clap knows nothing of
//! (EXIT STATUS, FILES, ENVIRONMENT, SIGNALS, SEE ALSO), written here as
//! plain roff: the `roff` crate is only clap_mangen's dependency, not ours.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One rendered page: its file name (`foreman-sweep.1`) and its roff.
pub struct Page {
    pub file_name: String,
    pub roff: Vec<u8>,
}

/// The command line as the pages describe it: built (so global options
/// such as --config reach every subcommand's page) without clap's `help`
/// subcommand, which has no page of its own.
fn command() -> clap::Command {
    let mut cmd = crate::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// The names of the subcommands that get a page, in the command line's order.
fn subcommand_names(cmd: &clap::Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect()
}

/// Every page: the main one first, then one per subcommand.
pub fn all() -> Result<Vec<Page>> {
    let cmd = command();
    let mut pages = vec![main_page(&cmd)?];
    for name in subcommand_names(&cmd) {
        pages.push(sub_page(&cmd, &name)?);
    }
    Ok(pages)
}

/// The page of one subcommand, or `None` when there is no such subcommand.
pub fn for_subcommand(name: &str) -> Result<Option<Page>> {
    let cmd = command();
    if !subcommand_names(&cmd).iter().any(|n| n == name) {
        return Ok(None);
    }
    sub_page(&cmd, name).map(Some)
}

/// The main page alone.
pub fn main() -> Result<Page> {
    main_page(&command())
}

/// Writes every page into `dir` (created if needed); returns the paths.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for page in all()? {
        let path = dir.join(&page.file_name);
        std::fs::write(&path, &page.roff).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The version in every page's footer: subcommands have none of their own.
fn source() -> String {
    format!("foreman {}", env!("CARGO_PKG_VERSION"))
}

fn sub_page(cmd: &clap::Command, name: &str) -> Result<Page> {
    let sub = cmd
        .find_subcommand(name)
        .with_context(|| format!("no subcommand {name}"))?
        .clone();
    // The page's name is foreman-<sub> (its title, NAME and file name);
    // the synopsis keeps the bin name clap gave it, "foreman <sub>", which
    // is what one types.
    let page_name = format!("foreman-{name}");
    let man = clap_mangen::Man::new(sub.display_name(page_name.clone()))
        .title(page_name.to_uppercase())
        .source(source())
        .manual("Foreman Manual");
    let mut roff = Vec::new();
    man.render(&mut roff)
        .with_context(|| format!("rendering the man page of {name}"))?;
    roff.extend_from_slice(
        b".SH \"SEE ALSO\"\n\\fBforeman\\fR(1), /usr/share/doc/foreman/operations.md\n",
    );
    Ok(Page {
        file_name: format!("{page_name}.1"),
        roff,
    })
}

fn main_page(cmd: &clap::Command) -> Result<Page> {
    let man = clap_mangen::Man::new(cmd.clone())
        .source(source())
        .manual("Foreman Manual");
    let mut parts: Vec<Vec<u8>> = Vec::new();
    // Rendered section by section, so the hand-written ones go before
    // VERSION, where a reader looks for them.
    type Render = fn(&clap_mangen::Man, &mut dyn Write) -> std::io::Result<()>;
    let sections: [Render; 6] = [
        clap_mangen::Man::render_title,
        clap_mangen::Man::render_name_section,
        clap_mangen::Man::render_synopsis_section,
        clap_mangen::Man::render_description_section,
        clap_mangen::Man::render_options_section,
        clap_mangen::Man::render_subcommands_section,
    ];
    for render in sections {
        let mut part = Vec::new();
        render(&man, &mut part).context("rendering the man page")?;
        parts.push(part);
    }
    parts.push(extra_sections(&subcommand_names(cmd)).into_bytes());
    let mut part = Vec::new();
    man.render_version_section(&mut part)
        .context("rendering the man page")?;
    parts.push(part);
    Ok(Page {
        file_name: "foreman.1".into(),
        roff: join_parts(parts),
    })
}

/// Every part clap_mangen renders starts with the same preamble (a string
/// definition for apostrophes); the page needs it once, before `.TH`.
fn join_parts(parts: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut preamble: Option<Vec<u8>> = None;
    for part in parts {
        match &preamble {
            None => {
                let at = part.windows(4).position(|w| w == b".TH ").unwrap_or(0);
                preamble = Some(part[..at].to_vec());
                out.extend_from_slice(&part);
            }
            Some(p) => out.extend_from_slice(part.strip_prefix(p.as_slice()).unwrap_or(&part)),
        }
    }
    out
}

/// Text for a roff text line: backslashes and dashes escaped, and a
/// leading dot or apostrophe kept from reading as a request.
fn escape(text: &str) -> String {
    let text = text.replace('\\', r"\\").replace('-', r"\-");
    if text.starts_with('.') || text.starts_with('\'') {
        format!(r"\&{text}")
    } else {
        text
    }
}

/// A `.TP` item: a bold tag, then its paragraph.
fn item(out: &mut String, tag: &str, text: &str) {
    out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", escape(tag), escape(text)));
}

fn extra_sections(subcommands: &[String]) -> String {
    let mut s = String::new();
    // As README's "Exit codes" lists them.
    s.push_str(".SH \"EXIT STATUS\"\n");
    item(&mut s, "0", "Success: done and nothing failed; check-config: valid (and the executor fits the default queries); run: stopped by SIGTERM/SIGINT after the sweep in flight.");
    item(&mut s, "1", "sweep, scan-orphans: an action this sweep decided on ended in error. explain: judged again, a different verdict. wellbeing: issues found, an initiative filed. review: a check failed.");
    item(&mut s, "2", "Usage or configuration error: an invalid, missing or unreadable configuration file (file:line:column: key: message), an unknown finding, a --slot the schedule never fires.");
    item(&mut s, "3", "Runtime error: the executor unreachable or unfit (check-config: its database unreadable or its tasks table lacking a column the default queries need; /proc cannot show its processes), the activity log unusable, another Foreman holding the lock, review's sandbox not built.");
    item(&mut s, "130", "run: a second SIGTERM/SIGINT, exited without waiting for the sweep in flight; review: interrupted.");
    s.push_str(&format!(
        ".PP\n{}\n",
        escape("twin exits as a Nagios check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN. Alerts that could not be delivered never change an exit status: they stay queued and are retried.")
    ));

    s.push_str(".SH FILES\n");
    item(&mut s, "/etc/foreman/foreman.toml", "The configuration, unless --config or FOREMAN_CONFIG names another. Never read from the current directory.");
    item(&mut s, "/var/lib/foreman/foreman.db", "The activity log (SQLite; [activity] path): every sweep, finding, action, alert and review.");
    item(&mut s, "/var/lib/foreman/foreman.db.lock", "Beside the activity log: the exclusive lock every acting command holds, so one Foreman acts at a time.");
    item(&mut s, "/usr/share/doc/foreman/", "operations.md (running it as a service) and foreman.toml.example (every key, commented, with its default).");

    s.push_str(".SH ENVIRONMENT\n");
    item(
        &mut s,
        "FOREMAN_CONFIG",
        "The configuration file when --config is not given.",
    );
    item(
        &mut s,
        "RUST_LOG",
        "Log filter (e.g. foreman=debug); wins over -v and -q.",
    );
    item(
        &mut s,
        "NO_COLOR",
        "When set, no colour even on a terminal.",
    );
    item(&mut s, "JOURNAL_STREAM", "Set by systemd: the default log format becomes journal (syslog priorities, no timestamps).");
    item(
        &mut s,
        "FOREMAN_HTTP_TOKEN",
        "The bearer token of the HTTP listener's POST /events (the variable is [http] token_env).",
    );
    item(&mut s, "the executor's url_env", "kind = \"postgres\": the environment variable named by [executor] url_env holds the database URL.");
    item(&mut s, "CREDENTIALS_DIRECTORY", "Under systemd, credentials (LoadCredential=) are files there, e.g. /run/credentials/foreman.service/pg-url: give that path as [executor] url_file instead of putting the URL in the environment.");

    s.push_str(".SH SIGNALS\n");
    item(&mut s, "SIGTERM, SIGINT", "run: finish the sweep (the job) in flight, then stop (exit 0). A second one exits at once (exit 130).");
    item(&mut s, "SIGHUP", "run: reload the configuration. An invalid file is logged at ERROR and the running configuration stays in force; a valid one applies from the next sweep.");

    s.push_str(".SH \"SEE ALSO\"\n");
    let pages: Vec<String> = subcommands
        .iter()
        .map(|n| format!("\\fBforeman\\-{}\\fR(1)", escape(n)))
        .collect();
    s.push_str(&pages.join(",\n"));
    s.push('\n');
    s.push_str(&format!(
        ".PP\n{}\n",
        escape("/usr/share/doc/foreman/operations.md, /usr/share/doc/foreman/README.md")
    ));
    s
}

//! `foreman review --live`: read-only checks of the real deployment.

use super::CheckResult;
use crate::config::Config;

pub fn run(_config: &Config) -> Vec<CheckResult> {
    Vec::new()
}

//! Foreman: the watchdog of a task executor whose tasks run as OS processes.
//!
//! Data flows one way: executor → snapshot → probe → judge → decide →
//! activity log → actions. See ARCHITECTURE.md.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod activity;
pub mod alert;
pub mod app;
pub mod child;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod decide;
pub mod demo;
pub mod executor;
pub mod exit;
pub mod explain;
pub mod fleet;
pub mod fleet_twin;
pub mod heartbeat;
pub mod http;
pub mod judge;
pub mod lock;
pub mod logging;
pub mod manpages;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod observation;
pub mod outbox;
pub mod probe;
pub mod progress;
pub mod query;
pub mod recovery;
pub mod report;
pub mod review;
pub mod sandbox;
pub mod schedule;
pub mod silence;
pub mod status;
pub mod strays;
pub mod sweep;
pub mod twin;
pub mod watch;
pub mod wellbeing;

#[cfg(test)]
mod parsers_properties_tests;
#[cfg(test)]
mod properties_tests;

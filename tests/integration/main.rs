//! Integration tests: real processes, real SQLite files, the real binary.
//! One test binary (see ripgrep); modules by subject.

mod acting;
mod activity;
mod alerts;
mod browser;
mod cli;
mod commands;
mod common;
mod events;
mod explain;
mod files;
mod fleet;
mod health;
mod heartbeat;
mod http_client;
mod linux;
mod listener;
mod load;
mod log;
mod manpages;
mod monitor;
mod page_attacks;
mod page_http;
mod pg;
mod plans_cap;
mod postgres;
mod processes;
mod receiver;
mod review;
mod review_daemon;
mod review_live;
mod service;
mod silence;
mod sinks;
mod status_page;
mod strays;
mod trust;
mod twin;
mod wellbeing;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Every test that spawns processes holds this for reading; the PID-reuse
/// test holds it for writing, so no other spawn can take the pid it forces.
static PROCESS_LOCK: RwLock<()> = RwLock::new(());

pub fn spawning() -> RwLockReadGuard<'static, ()> {
    PROCESS_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    PROCESS_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

//! The execution monitor: state-transition events pulled from snapshot
//! diffs and pushed to `POST /events`, recorded once; a view per plan
//! (counts, health score, stalled tasks) for twin, HTTP and the metrics.
//!
//! Pull and push meet in one bounded queue (`queue`): a sweep puts its
//! events in the activity log's inbox first and they are fed in when there
//! is room; a push that finds the queue full is refused (503).

pub mod diff;
pub mod event;
pub mod queue;
pub mod store;
pub mod view;

pub use event::{Event, EventType, Source};
pub use store::{Batch, Pulled};
pub use view::MonitorView;

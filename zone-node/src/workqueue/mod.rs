//! Work queues: how a node serialises (or bounds) work without locks.
//!
//! - [`memory`]: per-key in-memory queues with a concurrency level (1 serial, N parallel,
//!   0 unbounded), in two forms: a task is done when it returns, or when it signals completion.
//!   With the ring sending every message about a resource to one node, a serial queue keyed by
//!   the resource id is all the synchronisation that resource needs (ZStack's lock-free design).
//! - [`db`]: a database-backed queue for the few tasks that must be ordered across nodes: one
//!   task of a queue runs at a time, zone-wide, under a lease.

pub mod db;
pub mod memory;

pub use db::DbQueue;
pub use memory::{Completion, WorkQueues};

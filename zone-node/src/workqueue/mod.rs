//! Work queues: how a node serialises (or bounds) work without locks.
//!
//! [`memory`]: per-key in-memory queues with a concurrency level (1 serial, N parallel,
//! 0 unbounded), in two forms: a task is done when it returns, or when it signals completion.
//! With the ring sending every message about a resource to one node, a serial queue keyed by the
//! resource id is all the synchronisation that resource needs (ZStack's lock-free design).
//!
//! There is no database-backed queue: nothing in a zone needs one. Every task is about one
//! resource (serialised by its ring owner's queue) or is idempotent zone-wide (the host sweep, the
//! token purge, orphan recovery, all decided by version-checked or conditional writes). The
//! earlier `DbQueue` had no caller and was removed; migration 0005 drops its tables.

pub mod memory;

pub use memory::WorkQueues;

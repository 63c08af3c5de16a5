//! Work queues: how a node serialises (or bounds) work without locks.
//!
//! [`memory`]: per-key serial in-memory queues. With the ring sending every message about a
//! resource to one node, a serial queue keyed by the resource id is all the synchronisation that
//! resource needs (ZStack's lock-free design). Every service runs its resources one task at a
//! time, so that is the only form: the concurrency levels (N parallel, 0 unbounded) and the
//! "done when it signals" form that ZStack's queues also offer had no user and were removed; a
//! service that needs them can bring them back with a test of its own.
//!
//! There is no database-backed queue: nothing in a zone needs one. Every task is about one
//! resource (serialised by its ring owner's queue) or is idempotent zone-wide (the host sweep, the
//! token purge, orphan recovery, all decided by version-checked or conditional writes). The
//! earlier `DbQueue` had no caller and was removed; migration 0005 drops its tables.

pub mod memory;

pub use memory::WorkQueues;

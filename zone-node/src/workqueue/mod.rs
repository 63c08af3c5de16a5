//! Work queues.

//! Per-key serial in-memory work queues: one task of a key runs at a time, in submission order.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Task = Box<dyn FnOnce(Completion) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Queue {
    /// Whether a task of this key runs now.
    running: bool,
    pending: VecDeque<Task>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    /// Tasks submitted since the queues were made: a node leaving watches it to know when
    /// messages have stopped arriving.
    submitted: u64,
}

struct Inner {
    // A std mutex: it is never held across an await, and every critical section is a few map
    // operations, far below the 500 µs a task may block the runtime.
    state: Mutex<State>,
    /// Woken whenever a task finishes, for [`WorkQueues::wait_idle`].
    finished: Notify,
}

/// The set of in-memory work queues of one node. Cheap to clone.
#[derive(Clone)]
pub struct WorkQueues {
    inner: Arc<Inner>,
}

impl Default for WorkQueues {
    fn default() -> Self {
        Self::new()
    }
}

/// Held by a running task: its key's slot is released when the task's future ends or is dropped,
/// so a task that fails or panics never wedges its queue.
struct Completion {
    release: Option<(Arc<Inner>, String)>,
}

impl Completion {
    fn finish(&mut self) {
        if let Some((inner, key)) = self.release.take() {
            WorkQueues { inner }.release(&key);
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.finish();
    }
}

impl WorkQueues {
    pub fn new() -> WorkQueues {
        WorkQueues { inner: Arc::new(Inner { state: Mutex::new(State::default()), finished: Notify::new() }) }
    }

    /// Queues `task` on `key`: it starts when every task submitted on `key` before it has ended.
    pub fn submit<F, Fut>(&self, key: &str, task: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task: Task = Box::new(move |completion| {
            Box::pin(async move {
                task().await;
                drop(completion);
            })
        });
        let start = {
            let mut state = self.inner.state.lock().expect("work queue mutex poisoned");
            state.submitted += 1;
            let queue = state
                .queues
                .entry(key.to_owned())
                .or_insert_with(|| Queue { running: false, pending: VecDeque::new() });
            if queue.running {
                queue.pending.push_back(task);
                None
            } else {
                queue.running = true;
                Some(task)
            }
        };
        if let Some(task) = start {
            self.spawn(key.to_owned(), task);
        }
    }

    fn spawn(&self, key: String, task: Task) {
        let completion = Completion { release: Some((self.inner.clone(), key)) };
        tokio::spawn(task(completion));
    }

    fn release(&self, key: &str) {
        let next = {
            let mut state = self.inner.state.lock().expect("work queue mutex poisoned");
            let Some(queue) = state.queues.get_mut(key) else { return };
            // The next task inherits the slot; with none waiting the key's queue goes away.
            let next = queue.pending.pop_front();
            if next.is_none() {
                state.queues.remove(key);
            }
            next
        };
        if let Some(task) = next {
            self.spawn(key.to_owned(), task);
        }
        self.inner.finished.notify_waiters();
    }

    /// How many tasks were ever submitted.
    pub fn submitted(&self) -> u64 {
        self.inner.state.lock().expect("work queue mutex poisoned").submitted
    }

    /// Keys with at least one running task.
    pub fn busy_keys(&self) -> Vec<String> {
        let state = self.inner.state.lock().expect("work queue mutex poisoned");
        state.queues.iter().filter(|(_, q)| q.running).map(|(k, _)| k.clone()).collect()
    }

    /// Tasks running and waiting on `key`.
    pub fn depth(&self, key: &str) -> (usize, usize) {
        let state = self.inner.state.lock().expect("work queue mutex poisoned");
        state.queues.get(key).map(|q| (usize::from(q.running), q.pending.len())).unwrap_or((0, 0))
    }

    /// Waits until no task runs on any key for which `matches` is true.
    pub async fn wait_idle(&self, matches: impl Fn(&str) -> bool) {
        loop {
            // Register interest before checking, so a release between the check and the wait is
            // not missed.
            let notified = self.inner.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.busy_keys().iter().any(|k| matches(k)) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Runs `tasks` tasks on one key and returns the highest concurrency seen.
    async fn peak(tasks: usize) -> usize {
        let q = WorkQueues::new();
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..tasks {
            let (active, peak, done) = (active.clone(), peak.clone(), done.clone());
            q.submit("vm-1", move || async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        q.wait_idle(|_| true).await;
        assert_eq!(done.load(Ordering::SeqCst), tasks);
        peak.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn one_task_of_a_key_at_a_time() {
        assert_eq!(peak(20).await, 1);
    }

    #[tokio::test]
    async fn serial_queue_keeps_order() {
        let q = WorkQueues::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..50 {
            let seen = seen.clone();
            q.submit("k", move || async move {
                tokio::task::yield_now().await;
                seen.lock().unwrap().push(i);
            });
        }
        q.wait_idle(|_| true).await;
        assert_eq!(*seen.lock().unwrap(), (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_panicking_task_releases_its_key_and_keys_are_independent() {
        let q = WorkQueues::new();
        q.submit("a", || async { panic!("a task that fails") });
        let ran = Arc::new(AtomicUsize::new(0));
        for key in ["a", "b"] {
            let ran = ran.clone();
            q.submit(key, move || async move {
                ran.fetch_add(1, Ordering::SeqCst);
            });
        }
        q.wait_idle(|_| true).await;
        assert_eq!(ran.load(Ordering::SeqCst), 2);
        assert!(q.busy_keys().is_empty());
    }

    #[tokio::test]
    async fn wait_idle_only_waits_for_matching_keys() {
        let q = WorkQueues::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        q.submit("slow", move || async move {
            let _ = rx.await;
        });
        // "fast" is idle even though "slow" is busy.
        tokio::time::timeout(Duration::from_secs(1), q.wait_idle(|k| k == "fast")).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), q.wait_idle(|k| k == "slow")).await.is_err());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), q.wait_idle(|k| k == "slow")).await.unwrap();
    }
}

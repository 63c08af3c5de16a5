//! Per-key in-memory work queues with a concurrency level.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Task = Box<dyn FnOnce(Completion) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

struct Queue {
    /// Tasks allowed to run at once; 0 = unbounded.
    level: usize,
    running: usize,
    pending: VecDeque<Task>,
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
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

/// Handed to a task of the "completion signal" form: the task's slot in its queue is released
/// when [`Completion::done`] is called or the handle is dropped, whichever comes first, so a task
/// that fails or panics never wedges its queue.
pub struct Completion {
    release: Option<(Arc<Inner>, String)>,
}

impl Completion {
    pub fn done(mut self) {
        self.finish();
    }

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

    /// Queues `task` on `key`; the task is done when its future returns. `level` sets the queue's
    /// concurrency when the queue is created (1 = serial, N = parallel, 0 = unbounded).
    pub fn submit<F, Fut>(&self, key: &str, level: usize, task: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.submit_with_completion(key, level, move |completion| async move {
            task().await;
            drop(completion);
        })
    }

    /// Queues `task` on `key`; the task is done when it calls [`Completion::done`] (or drops the
    /// handle), which may be long after its future returned, e.g. from a callback.
    pub fn submit_with_completion<F, Fut>(&self, key: &str, level: usize, task: F)
    where
        F: FnOnce(Completion) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task: Task = Box::new(move |c| Box::pin(task(c)));
        let start = {
            let mut state = self.inner.state.lock().expect("work queue mutex poisoned");
            let queue = state.queues.entry(key.to_owned()).or_insert_with(|| Queue {
                level,
                running: 0,
                pending: VecDeque::new(),
            });
            if queue.level == 0 || queue.running < queue.level {
                queue.running += 1;
                Some(task)
            } else {
                queue.pending.push_back(task);
                None
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
            queue.running = queue.running.saturating_sub(1);
            match queue.pending.pop_front() {
                Some(task) => {
                    queue.running += 1;
                    Some(task)
                }
                None => {
                    if queue.running == 0 {
                        state.queues.remove(key);
                    }
                    None
                }
            }
        };
        if let Some(task) = next {
            self.spawn(key.to_owned(), task);
        }
        self.inner.finished.notify_waiters();
    }

    /// Keys with at least one running task.
    pub fn busy_keys(&self) -> Vec<String> {
        let state = self.inner.state.lock().expect("work queue mutex poisoned");
        state.queues.iter().filter(|(_, q)| q.running > 0).map(|(k, _)| k.clone()).collect()
    }

    /// Tasks running and waiting on `key`.
    pub fn depth(&self, key: &str) -> (usize, usize) {
        let state = self.inner.state.lock().expect("work queue mutex poisoned");
        state.queues.get(key).map(|q| (q.running, q.pending.len())).unwrap_or((0, 0))
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

    /// Runs `tasks` tasks on one key at `level` and returns the highest concurrency seen.
    async fn peak(level: usize, tasks: usize) -> usize {
        let q = WorkQueues::new();
        let active = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..tasks {
            let (active, peak, done) = (active.clone(), peak.clone(), done.clone());
            q.submit("vm-1", level, move || async move {
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
    async fn serial_parallel_and_unbounded() {
        assert_eq!(peak(1, 20).await, 1);
        assert_eq!(peak(3, 20).await, 3);
        assert_eq!(peak(0, 20).await, 20);
    }

    #[tokio::test]
    async fn serial_queue_keeps_order() {
        let q = WorkQueues::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..50 {
            let seen = seen.clone();
            q.submit("k", 1, move || async move {
                tokio::task::yield_now().await;
                seen.lock().unwrap().push(i);
            });
        }
        q.wait_idle(|_| true).await;
        assert_eq!(*seen.lock().unwrap(), (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn completion_form_holds_the_slot_until_signalled() {
        let q = WorkQueues::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<Completion>();
        q.submit_with_completion("k", 1, move |c| async move {
            // Returns at once, but keeps the queue busy until someone calls done().
            let _ = tx.send(c);
        });
        let second_ran = Arc::new(AtomicUsize::new(0));
        let flag = second_ran.clone();
        q.submit("k", 1, move || async move {
            flag.fetch_add(1, Ordering::SeqCst);
        });
        let completion = rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(second_ran.load(Ordering::SeqCst), 0, "second task ran before completion");
        assert_eq!(q.depth("k"), (1, 1));
        completion.done();
        q.wait_idle(|_| true).await;
        assert_eq!(second_ran.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dropped_completion_releases_and_keys_are_independent() {
        let q = WorkQueues::new();
        q.submit_with_completion("a", 1, |c| async move { drop(c) });
        let ran = Arc::new(AtomicUsize::new(0));
        for key in ["a", "b"] {
            let ran = ran.clone();
            q.submit(key, 1, move || async move {
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
        q.submit("slow", 1, move || async move {
            let _ = rx.await;
        });
        // "fast" is idle even though "slow" is busy.
        tokio::time::timeout(Duration::from_secs(1), q.wait_idle(|k| k == "fast")).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(50), q.wait_idle(|k| k == "slow")).await.is_err());
        tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), q.wait_idle(|k| k == "slow")).await.unwrap();
    }
}

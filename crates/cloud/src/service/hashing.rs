//! Password hashing (Argon2: administrator passwords, security answers) is deliberately slow and
//! memory-hungry, and some of it runs for requests nobody has authenticated. It goes through one
//! bounded pool: `threads` worker threads of its own (so the memory Argon2 keeps is that of
//! `threads` hashes, not of every blocking thread that ever ran one), at most `queue` more hashes
//! waiting, and anything beyond refused at once as [`Busy`], so a flood costs a bounded amount of
//! CPU and memory.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;
use tokio::sync::oneshot;

/// The pool is full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("password checks are queued beyond their limit; try again shortly")]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;

pub struct HashingPool {
    jobs: SyncSender<Job>,
    /// Hashes running or waiting.
    admitted: AtomicUsize,
    capacity: usize,
    /// The most that were ever admitted at once, for the tests and the closing figures.
    peak: AtomicUsize,
}

impl std::fmt::Debug for HashingPool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HashingPool")
            .field("capacity", &self.capacity)
            .field("admitted", &self.admitted.load(Ordering::Relaxed))
            .finish()
    }
}

/// Lets a place go when the admitted work ends, however it ends.
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One worker: takes jobs until the pool is gone. A job that panics loses its answer (its caller
/// hears [`Busy`]), not the worker.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        let next = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(job) => {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
            Err(_) => return,
        }
    }
}

impl HashingPool {
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Arc<Self>> {
        let threads = threads.max(1);
        // Room for every admitted job, so admission alone decides: a job may wait in the channel
        // before a worker takes it even while a worker is free.
        let (sender, receiver) = sync_channel::<Job>(threads + queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("writeback-hash-{index}"))
                .spawn(move || work(&receiver))?;
        }
        Ok(Arc::new(Self {
            jobs: sender,
            admitted: AtomicUsize::new(0),
            capacity: threads + queue,
            peak: AtomicUsize::new(0),
        }))
    }

    /// Runs `work` on one of the pool's threads once one is free, or refuses at once when the
    /// queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel) + 1;
        let _admission = Admission(&self.admitted);
        if admitted > self.capacity {
            return Err(Busy);
        }
        self.peak.fetch_max(admitted, Ordering::AcqRel);
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = answer.send(work());
        });
        self.jobs.try_send(job).map_err(|_| Busy)?;
        answered.await.map_err(|_| Busy)
    }

    /// The most hashes ever running or waiting at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn beyond_its_threads_and_queue_the_pool_refuses_at_once() {
        let pool = HashingPool::new(2, 3).unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let pool = pool.clone();
            tasks.spawn(async move {
                pool.run(|| std::thread::sleep(Duration::from_millis(200)))
                    .await
            });
        }
        let mut done = 0;
        let mut refused = 0;
        while let Some(result) = tasks.join_next().await {
            match result.unwrap() {
                Ok(()) => done += 1,
                Err(Busy) => refused += 1,
            }
        }
        assert_eq!(done, 5);
        assert_eq!(refused, 15);
        assert_eq!(pool.peak(), 5);
        pool.run(|| ()).await.unwrap();
    }
}

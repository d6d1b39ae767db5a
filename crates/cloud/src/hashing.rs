//! Password hashing (Argon2: administrator passwords, security answers) is deliberately slow and
//! memory-hungry, and some of it runs for requests nobody has authenticated. It goes through one
//! bounded pool: at most `threads` hashes run at once, at most `queue` more wait, and anything
//! beyond is refused at once as [`Busy`], so a flood costs a bounded amount of CPU and memory
//! instead of an unbounded number of blocking threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use thiserror::Error;
use tokio::sync::Semaphore;

/// The pool is full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("password checks are queued beyond their limit; try again shortly")]
pub struct Busy;

#[derive(Debug)]
pub struct HashingPool {
    running: Semaphore,
    /// Hashes running or waiting.
    admitted: AtomicUsize,
    capacity: usize,
    /// The most that were ever admitted at once, for the metrics and the tests.
    peak: AtomicUsize,
}

/// Lets a slot go when the admitted work ends, however it ends.
struct Admission<'a>(&'a AtomicUsize);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashingPool {
    pub fn new(threads: usize, queue: usize) -> Arc<Self> {
        let threads = threads.max(1);
        Arc::new(Self {
            running: Semaphore::new(threads),
            admitted: AtomicUsize::new(0),
            capacity: threads + queue,
            peak: AtomicUsize::new(0),
        })
    }

    /// Runs `work` on a blocking thread once one of the pool's places is free, or refuses at once
    /// when the queue is full.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel) + 1;
        let admission = Admission(&self.admitted);
        if admitted > self.capacity {
            drop(admission);
            return Err(Busy);
        }
        self.peak.fetch_max(admitted, Ordering::AcqRel);
        let _permit = self.running.acquire().await.map_err(|_| Busy)?;
        let result = tokio::task::spawn_blocking(work).await.map_err(|_| Busy);
        drop(admission);
        result
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
        let pool = HashingPool::new(2, 3);
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

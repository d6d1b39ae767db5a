//! Whether the agent can use its directory, checked with one small read at an interval and told
//! to the cloud, which shows it as the directory's health.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use writeback_directory::Directory;
use writeback_proto::frame::AgentStatus;

use crate::executor::Executor;

/// Before the first check the directory counts as reachable: a reachable directory is the common
/// case, and the first check runs at once.
pub fn channel() -> (watch::Sender<AgentStatus>, watch::Receiver<AgentStatus>) {
    watch::channel(AgentStatus {
        directory_reachable: true,
        detail: None,
    })
}

/// Reads the domain policy every `interval` (the read the executor needs anyway, so a success
/// means writeback can work) and publishes each change of reachability.
pub async fn watch<D: Directory>(
    executor: Arc<Executor<D>>,
    interval: Duration,
    status: watch::Sender<AgentStatus>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = match executor.directory().domain_policy().await {
            Ok(_) => AgentStatus {
                directory_reachable: true,
                detail: None,
            },
            Err(error) => AgentStatus {
                directory_reachable: false,
                detail: Some(error.to_string()),
            },
        };
        let changed = status.send_if_modified(|current| {
            if current.directory_reachable == now.directory_reachable {
                return false;
            }
            *current = now.clone();
            true
        });
        if changed {
            match &now.detail {
                Some(detail) => {
                    tracing::error!(%detail, event_id = 33001, "the directory cannot be used")
                }
                None => tracing::info!(event_id = 31022, "the directory can be used again"),
            }
        }
        if status.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use writeback_directory::DirectoryError;
    use writeback_directory::fake::FakeDirectory;

    use super::*;
    use crate::executor::Guards;
    use crate::journal::Journal;
    use crate::state::KeyRing;

    #[tokio::test]
    async fn a_change_of_reachability_is_published_once() {
        let executor = Arc::new(Executor::new(
            FakeDirectory::default(),
            Journal::in_memory(Duration::from_secs(3600)),
            KeyRing::default(),
            Guards::default(),
            Arc::new(writeback_proto::time::UnixMillis::now),
        ));
        let (sender, mut receiver) = channel();
        tokio::spawn(watch(executor.clone(), Duration::from_millis(20), sender));
        let directory = executor.directory();

        directory.fail_with(Some(DirectoryError::Unavailable(
            "connection refused".into(),
        )));
        tokio::time::timeout(Duration::from_secs(5), receiver.changed())
            .await
            .unwrap()
            .unwrap();
        let status = receiver.borrow_and_update().clone();
        assert!(!status.directory_reachable);
        assert!(status.detail.unwrap().contains("connection refused"));

        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(
            !receiver.has_changed().unwrap(),
            "no news while nothing changes"
        );

        directory.fail_with(None);
        tokio::time::timeout(Duration::from_secs(5), receiver.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(receiver.borrow_and_update().directory_reachable);
    }
}

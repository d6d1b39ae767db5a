//! Whether the agent can use its directory, checked with one small read at an interval and told
//! to the cloud, which shows it as the directory's health.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use writeback_directory::Directory;
use writeback_proto::frame::AgentStatus;
use writeback_proto::result::PolicyRequirements;

use crate::executor::Executor;

/// Before the first check the directory counts as reachable: a reachable directory is the common
/// case, and the first check runs at once.
pub fn channel() -> (watch::Sender<AgentStatus>, watch::Receiver<AgentStatus>) {
    watch::channel(AgentStatus {
        directory_reachable: true,
        detail: None,
        password_policy: None,
        lockout: None,
    })
}

/// Reads the domain policy every `interval` (the read the executor needs anyway, so a success
/// means writeback can work) and publishes each change of reachability. When a DC of `urls`
/// cannot be used because its certificate is not trusted, the detail says what it presented and
/// the setting that would trust it.
pub async fn watch<D: Directory>(
    executor: Arc<Executor<D>>,
    urls: Vec<String>,
    interval: Duration,
    status: watch::Sender<AgentStatus>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let directory = executor.directory();
        let now = match executor.read_domain_policy().await {
            Ok(policy) => AgentStatus {
                directory_reachable: true,
                detail: None,
                password_policy: Some(PolicyRequirements::from(&policy)),
                lockout: directory.lockout_policy().await.ok(),
            },
            Err(error) => {
                let mut detail = error.to_string();
                for url in &urls {
                    if let Some(advice) =
                        crate::certificate::certificate_advice(url, &detail, interval).await
                    {
                        detail = format!("{detail}. {advice}");
                        break;
                    }
                }
                AgentStatus {
                    directory_reachable: false,
                    detail: Some(detail),
                    password_policy: None,
                    lockout: None,
                }
            }
        };
        let mut reachability_changed = false;
        status.send_if_modified(|current| {
            reachability_changed = current.directory_reachable != now.directory_reachable;
            // A policy read while the directory is unreachable is unknown, not changed: the last
            // one known stays on show.
            let policy_changed = (now.password_policy.is_some()
                && current.password_policy != now.password_policy)
                || (now.lockout.is_some() && current.lockout != now.lockout);
            if !reachability_changed && !policy_changed {
                return false;
            }
            let kept_policy = current.password_policy.take();
            let kept_lockout = current.lockout.take();
            *current = AgentStatus {
                password_policy: now.password_policy.clone().or(kept_policy),
                lockout: now.lockout.or(kept_lockout),
                ..now.clone()
            };
            true
        });
        if reachability_changed {
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
    async fn the_policy_and_each_change_of_reachability_are_published_once() {
        let executor = Arc::new(Executor::new(
            FakeDirectory::default(),
            Journal::in_memory(Duration::from_secs(3600)),
            KeyRing::default(),
            Guards::default(),
            Arc::new(writeback_proto::time::UnixMillis::now),
        ));
        let (sender, mut receiver) = channel();
        tokio::spawn(watch(
            executor.clone(),
            vec!["ldaps://dc.example.test".into()],
            Duration::from_millis(20),
            sender,
        ));
        let directory = executor.directory();
        tokio::time::timeout(Duration::from_secs(5), receiver.changed())
            .await
            .unwrap()
            .unwrap();
        let first = receiver.borrow_and_update().clone();
        assert!(first.directory_reachable);
        let policy = first
            .password_policy
            .expect("the domain policy is published");
        assert_eq!(
            first.lockout.map(|lockout| lockout.threshold),
            Some(0),
            "the lockout policy is published with it"
        );

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
        assert_eq!(
            status.password_policy.as_ref(),
            Some(&policy),
            "the last known policy stays while the directory cannot be read"
        );

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

//! Directory sync against a DC of its own, where the service account also holds Replicating
//! Directory Changes: deltas are read with DirSync, and the DC can be crashed and restarted
//! without disturbing the other sync tests. The two tests take turns, since one of them stops
//! the DC the other is reading.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

mod sync_support;

use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell};
use writeback_proto::sync::SyncPhase;
use writeback_testkit::logs::{strong_password, unique_user};
use writeback_testkit::stack::StackOptions;
use writeback_testkit::{DomainController, NewUser, Stack};

use sync_support::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
static DC_WITH_DIRSYNC: OnceCell<Arc<DomainController>> = OnceCell::const_new();

async fn dc_with_dirsync() -> Arc<DomainController> {
    DC_WITH_DIRSYNC
        .get_or_init(|| async {
            let dc = tokio::task::spawn_blocking(DomainController::shared)
                .await
                .unwrap()
                .unwrap();
            dc.grant_replicating_directory_changes().await.unwrap();
            dc
        })
        .await
        .clone()
}

#[tokio::test]
async fn with_replicating_directory_changes_deltas_are_read_with_dirsync() {
    let _turn = ONE_AT_A_TIME.lock().await;
    dc_with_dirsync().await;
    let mut stack = Stack::start().await.unwrap();
    let status = changes_reach_the_cloud(&mut stack).await;
    assert!(
        matches!(
            status.cursor.unwrap().phase,
            SyncPhase::Delta {
                dirsync_cookie: Some(_),
                ..
            }
        ),
        "the cursor carries a DirSync cookie"
    );
    membership_changes_reach_the_cloud(&stack).await;
    let log = stack.agent_log();
    assert!(
        log.contains("directory changes are read with DirSync from here on"),
        "{log}"
    );
    assert!(!log.contains("DirSync is not available"), "{log}");
}

#[tokio::test]
async fn a_dc_crashed_in_the_middle_of_a_full_sync_of_2000_users_comes_back_to_exactly_the_right_set()
 {
    let _turn = ONE_AT_A_TIME.lock().await;
    let dc = dc_with_dirsync().await;
    let ou = bulk_ou(&dc, "Crash", 2000).await;
    dc.delegate_writeback_rights(&ou).await.unwrap();
    let stack = Stack::start_with(StackOptions {
        allowed_ous: vec![ou.clone()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let interrupted_at = first_users_stored(&stack).await;
    let crashing = dc.clone();
    tokio::task::spawn_blocking(move || crashing.crash_and_restart())
        .await
        .unwrap()
        .unwrap();
    eprintln!(
        "DC crashed with {} users stored, and restarted",
        interrupted_at.users
    );
    assert_interrupted_part_way(&interrupted_at);

    // Changes right after the restart, while the agent is still waiting to retry.
    churn(&stack, &ou, "crash").await;
    cloud_ends_with_exactly_the_users_in(&stack, &ou).await;

    // The agent's other directory connection, the one writeback uses, is back too.
    let name = unique_user("aftercrash");
    let old_password = strong_password();
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .create_user(&NewUser::new(&name, &old_password).in_container(&ou))
        .await
        .unwrap();
    stack.reset_and_prove(&name, &old_password).await.unwrap();
}

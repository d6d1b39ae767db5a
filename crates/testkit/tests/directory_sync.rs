//! Directory sync end to end: a Samba AD DC changed over LDAP by an administrator, the real
//! `writeback-agent` process syncing it, and the cloud's copy read back through the admin API.
//! Every change must be visible in the cloud within 5 seconds (the requirement; the agent
//! polls once a second by default, and these tests use that default).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

mod sync_support;

use writeback_proto::result::ResultCode;
use writeback_proto::sync::SyncPhase;
use writeback_testkit::logs::{strong_password, unique_user};
use writeback_testkit::stack::StackOptions;
use writeback_testkit::{NewUser, Stack};

use sync_support::*;

#[tokio::test]
async fn creates_modifies_renames_moves_and_deletes_reach_the_cloud() {
    let mut stack = Stack::start().await.unwrap();
    let status = changes_reach_the_cloud(&mut stack).await;
    assert!(
        matches!(
            status.cursor.unwrap().phase,
            SyncPhase::Delta {
                dirsync_cookie: None,
                ..
            }
        ),
        "without Replicating Directory Changes, deltas are polled by USN"
    );
    assert!(
        stack
            .agent_log()
            .contains("DirSync is not available to the service account"),
        "the agent says why it polls"
    );
}

#[tokio::test]
async fn group_membership_changes_reach_the_cloud_directly_and_through_nesting() {
    let stack = Stack::start().await.unwrap();
    membership_changes_reach_the_cloud(&stack).await;
}

#[tokio::test]
async fn an_agent_killed_in_the_middle_of_a_full_sync_of_2000_users_ends_with_exactly_the_right_set()
 {
    let dc = tokio::task::spawn_blocking(writeback_testkit::DomainController::shared)
        .await
        .unwrap()
        .unwrap();
    let bulk_ou = bulk_ou(&dc, "Bulk", 2000).await;
    let mut stack = Stack::start_with(StackOptions {
        allowed_ous: vec![bulk_ou.clone()],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let interrupted_at = first_users_stored(&stack).await;
    stack.kill_agent().await.unwrap();
    eprintln!("agent killed with {} users stored", interrupted_at.users);
    assert_interrupted_part_way(&interrupted_at);

    // While the agent is down, some users go and others come.
    churn(&stack, &bulk_ou, "bulk").await;
    stack.start_agent().await.unwrap();
    cloud_ends_with_exactly_the_users_in(&stack, &bulk_ou).await;
}

/// A stack whose agent syncs once at connection and then effectively never again, so the cloud's
/// copy stays as it was at the last sync.
async fn stack_without_deltas() -> Stack {
    Stack::start_with(StackOptions {
        sync_poll_interval_ms: Some(3_600_000),
        ..StackOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_reset_reaches_a_user_renamed_after_the_last_sync() {
    let dc = tokio::task::spawn_blocking(writeback_testkit::DomainController::shared)
        .await
        .unwrap()
        .unwrap();
    let name = unique_user("rename");
    let old_password = strong_password();
    let dn = dc
        .admin()
        .await
        .unwrap()
        .create_user(&NewUser::new(&name, &old_password))
        .await
        .unwrap();
    let stack = stack_without_deltas().await;
    within_bound("initial full sync", || async {
        the_user(&stack, &name).await
    })
    .await;

    let mut admin = stack.dc.admin().await.unwrap();
    let new_name = unique_user("moved");
    rename_account(&stack, &mut admin, &dn, &new_name).await;
    assert_eq!(
        the_user(&stack, &name)
            .await
            .unwrap()
            .user
            .distinguished_name,
        dn,
        "the cloud has not seen the rename"
    );

    let new_password = strong_password();
    let response = stack
        .reset(&name, &new_password, false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    stack
        .dc
        .bind_as(&new_name, &new_password)
        .await
        .unwrap()
        .unwrap();
    assert!(
        stack
            .dc
            .bind_as(&new_name, &old_password)
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn a_full_resync_from_the_cli_removes_users_that_no_longer_exist() {
    let dc = tokio::task::spawn_blocking(writeback_testkit::DomainController::shared)
        .await
        .unwrap()
        .unwrap();
    let name = unique_user("gone");
    let dn = dc
        .admin()
        .await
        .unwrap()
        .create_user(&NewUser::new(&name, &strong_password()))
        .await
        .unwrap();
    let stack = stack_without_deltas().await;
    within_bound("initial full sync", || async {
        the_user(&stack, &name).await
    })
    .await;
    stack.dc.admin().await.unwrap().delete(&dn).await.unwrap();
    assert!(the_user(&stack, &name).await.is_some(), "no delta has run");

    stack.cli_login().await.unwrap();
    let answer = cli(&stack, &["sync", "full", "corp"]).await;
    assert!(answer.contains("started"), "{answer}");
    within_bound("full resync removes the deleted user", || async {
        the_user(&stack, &name).await.is_none().then_some(())
    })
    .await;
    let status = cli(&stack, &["sync", "status", "corp"]).await;
    assert!(status.contains("last full sync"), "{status}");
    let listing = cli(&stack, &["users", "corp", "--search", &name]).await;
    assert!(listing.contains("no synced user matches"), "{listing}");
}

/// Runs the CLI, which must succeed, and returns what it printed.
async fn cli(stack: &Stack, arguments: &[&str]) -> String {
    let output = stack.cli(arguments).await.unwrap();
    assert!(
        output.status.success(),
        "writeback {arguments:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// With only the four delegated rights, the service account sees neither tombstones nor DirSync:
/// a deleted user, and one moved out of the allowed OUs, still leave the cloud within 60 s, by
/// the agent's reconciliation of the anchors in scope (every 30 s by default, as here).
#[tokio::test]
async fn with_only_the_four_rights_deleted_and_moved_users_leave_the_cloud_within_a_minute() {
    let dc = writeback_testkit::DomainController::shared().unwrap();
    let account = unique_user("svc-four");
    dc.create_four_rights_service_account(&account)
        .await
        .unwrap();
    let stack = Stack::start_with(StackOptions {
        service_account: account,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut admin = dc.admin().await.unwrap();
    let deleted = unique_user("fourdel");
    let moved = unique_user("fourmove");
    let kept = unique_user("fourkept");
    let mut dns = Vec::new();
    for name in [&deleted, &moved, &kept] {
        dns.push(
            admin
                .create_user(&NewUser::new(name, &strong_password()))
                .await
                .unwrap(),
        );
        stack.wait_until_synced(name, |_| true).await.unwrap();
    }
    admin.delete(&dns[0]).await.unwrap();
    admin
        .move_to(&dns[1], writeback_testkit::domain_controller::ELSEWHERE_OU)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while the_user(&stack, &deleted).await.is_some() || the_user(&stack, &moved).await.is_some() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "still in the cloud after 60 s: deleted {:?}, moved {:?}",
            the_user(&stack, &deleted).await.is_some(),
            the_user(&stack, &moved).await.is_some()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    eprintln!(
        "deleted and moved users left the cloud after {} ms",
        started.elapsed().as_millis()
    );
    assert!(
        the_user(&stack, &kept).await.is_some(),
        "a user still in scope stays"
    );
}

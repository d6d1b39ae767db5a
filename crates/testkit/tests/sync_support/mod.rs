//! What the directory sync test binaries share: probes of the cloud's copy, bounded by the
//! issue's 5 seconds, and the change scenarios every delta mechanism must carry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    reason = "test code: a failed step should stop the test; each test binary uses part of this"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};
use writeback_cli::UserSearch;
use writeback_proto::api::{DirectoryUser, DirectoryUserDetail, SyncStatus};
use writeback_proto::sync::{ObjectAnchor, SyncPhase};
use writeback_testkit::domain_controller::{BASE_DN, DNS_DOMAIN, ELSEWHERE_OU, STAFF_OU};
use writeback_testkit::logs::{strong_password, unique_user};
use writeback_testkit::{DomainController, NewUser, Stack};

/// The bound on how long a directory change may take to reach the cloud.
pub const VISIBLE_WITHIN: Duration = Duration::from_secs(5);

/// Polls `probe` until it yields a value or `VISIBLE_WITHIN` passes; returns the value and how
/// long it took.
pub async fn within_bound<T, F, Fut>(what: &str, mut probe: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            let elapsed = started.elapsed();
            eprintln!(
                "{what}: visible in the cloud after {} ms",
                elapsed.as_millis()
            );
            return (value, elapsed);
        }
        if started.elapsed() > VISIBLE_WITHIN {
            panic!("{what}: not visible in the cloud within {VISIBLE_WITHIN:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Renames a user the way an administrator does in AD: CN, logon name and UPN.
pub async fn rename_account(
    stack: &Stack,
    admin: &mut writeback_testkit::domain_controller::AdminSession,
    dn: &str,
    new_name: &str,
) -> String {
    let renamed_dn = admin.rename(dn, new_name).await.unwrap();
    admin
        .replace(&renamed_dn, "sAMAccountName", new_name)
        .await
        .unwrap();
    admin
        .replace(
            &renamed_dn,
            "userPrincipalName",
            &stack.dc.user_principal_name(new_name),
        )
        .await
        .unwrap();
    renamed_dn
}

pub async fn find(stack: &Stack, text: &str) -> Vec<DirectoryUser> {
    let search = UserSearch {
        text: Some(text.to_owned()),
        ..UserSearch::default()
    };
    stack.client.users(&stack.directory, &search).await.unwrap()
}

pub async fn the_user(stack: &Stack, sam_account_name: &str) -> Option<DirectoryUser> {
    find(stack, sam_account_name)
        .await
        .into_iter()
        .find(|user| {
            user.user
                .sam_account_name
                .eq_ignore_ascii_case(sam_account_name)
        })
}

pub async fn detail(stack: &Stack, key: &str) -> Option<DirectoryUserDetail> {
    stack.client.user(&stack.directory, key).await.ok()
}

pub async fn group_members(stack: &Stack, group: &str) -> BTreeSet<String> {
    let search = UserSearch {
        group: Some(group.to_owned()),
        limit: Some(1000),
        ..UserSearch::default()
    };
    stack
        .client
        .users(&stack.directory, &search)
        .await
        .unwrap()
        .into_iter()
        .map(|user| user.user.sam_account_name)
        .collect()
}

/// The anchors of the users under `container`, read by the administrator straight from the DC.
pub async fn anchors_in(stack: &Stack, container: &str) -> BTreeSet<ObjectAnchor> {
    let settings = LdapConnSettings::new().set_no_tls_verify(true);
    let (driver, mut ldap) = LdapConnAsync::with_settings(settings, &stack.dc.ldaps_url())
        .await
        .unwrap();
    ldap3::drive!(driver);
    ldap.simple_bind(
        &format!("Administrator@{DNS_DOMAIN}"),
        &stack.dc.admin_password,
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    let adapters: Vec<Box<dyn ldap3::adapters::Adapter<'_, &str, Vec<&str>>>> = vec![
        Box::new(ldap3::adapters::EntriesOnly::new()),
        Box::new(ldap3::adapters::PagedResults::new(500)),
    ];
    let mut stream = ldap
        .streaming_search_with(
            adapters,
            container,
            Scope::Subtree,
            "(&(objectCategory=person)(objectClass=user))",
            vec!["objectGUID"],
        )
        .await
        .unwrap();
    let mut anchors = BTreeSet::new();
    while let Some(entry) = stream.next().await.unwrap() {
        let entry = SearchEntry::construct(entry);
        let bytes = entry
            .bin_attrs
            .get("objectGUID")
            .map(|values| values[0].clone())
            .or_else(|| {
                entry
                    .attrs
                    .get("objectGUID")
                    .map(|values| values[0].clone().into_bytes())
            })
            .unwrap();
        anchors.insert(ObjectAnchor::from_bytes(bytes.try_into().unwrap()));
    }
    stream.finish().await.success().unwrap();
    anchors
}

pub async fn cloud_anchors(stack: &Stack) -> BTreeSet<ObjectAnchor> {
    let search = UserSearch {
        limit: Some(1000),
        ..UserSearch::default()
    };
    let mut anchors = BTreeSet::new();
    // The API pages by search text; the bulk users share a prefix, so list them by their digits.
    for digit in 0..10 {
        let search = UserSearch {
            text: Some(format!("{digit}@")),
            ..search.clone()
        };
        for user in stack.client.users(&stack.directory, &search).await.unwrap() {
            anchors.insert(user.user.anchor);
        }
    }
    anchors
}

/// Create, modify, rename, move out of scope and back in (across a cloud restart), delete: each
/// visible in the cloud within the bound. Returns the sync status at the end.
pub async fn changes_reach_the_cloud(stack: &mut Stack) -> SyncStatus {
    let mut admin = stack.dc.admin().await.unwrap();
    let name = unique_user("sync");
    let dn = admin
        .create_user(&NewUser::new(&name, &strong_password()))
        .await
        .unwrap();

    let (created, _) = within_bound("create", || async { the_user(stack, &name).await }).await;
    assert_eq!(created.user.distinguished_name, dn);
    assert!(created.user.enabled);
    let anchor = created.user.anchor;

    admin
        .replace(&dn, "displayName", "Synced Person")
        .await
        .unwrap();
    admin
        .replace(&dn, "mail", &format!("{name}@mail.example.org"))
        .await
        .unwrap();
    within_bound("modify", || async {
        the_user(stack, &name).await.filter(|user| {
            user.user.display_name.as_deref() == Some("Synced Person")
                && user.user.mail.as_deref() == Some(&format!("{name}@mail.example.org"))
        })
    })
    .await;
    assert_eq!(
        find(stack, "mail.example.org").await.len(),
        1,
        "searchable by mail"
    );

    let new_name = unique_user("renamed");
    let renamed_dn = rename_account(stack, &mut admin, &dn, &new_name).await;
    let (renamed, _) = within_bound("rename", || async {
        the_user(stack, &new_name).await.filter(|user| {
            user.user.user_principal_name.as_deref()
                == Some(stack.dc.user_principal_name(&new_name).as_str())
        })
    })
    .await;
    assert_eq!(renamed.user.anchor, anchor, "a rename keeps the anchor");
    assert_eq!(renamed.user.distinguished_name, renamed_dn);
    assert!(the_user(stack, &name).await.is_none());

    let outside_dn = admin.move_to(&renamed_dn, ELSEWHERE_OU).await.unwrap();
    within_bound("move out of scope", || async {
        the_user(stack, &new_name).await.is_none().then_some(())
    })
    .await;

    // The cloud goes away and comes back; changes made meanwhile still arrive.
    stack.stop_cloud().await;
    let inside_dn = admin.move_to(&outside_dn, STAFF_OU).await.unwrap();
    stack.restart_cloud().await.unwrap();
    stack.wait_for_agent(true).await.unwrap();
    let (moved_back, _) = within_bound("move into scope (across a cloud restart)", || async {
        the_user(stack, &new_name).await
    })
    .await;
    assert_eq!(moved_back.user.anchor, anchor);
    assert_eq!(moved_back.user.distinguished_name, inside_dn);

    admin.delete(&inside_dn).await.unwrap();
    within_bound("delete", || async {
        detail(stack, &anchor.to_string())
            .await
            .is_none()
            .then_some(())
    })
    .await;

    let status = stack.client.sync_status(&stack.directory).await.unwrap();
    assert!(status.last_full_sync_completed_at.is_some());
    assert!(matches!(
        status.cursor.as_ref().unwrap().phase,
        SyncPhase::Delta { .. }
    ));
    assert!(status.cursor_age_ms.is_some());
    status
}

/// A new OU under the domain root holding `count` users named `prefix00000`…
pub async fn bulk_ou(dc: &std::sync::Arc<DomainController>, name: &str, count: usize) -> String {
    let ou = format!("OU={name},{BASE_DN}");
    dc.admin()
        .await
        .unwrap()
        .add_organizational_unit(&ou)
        .await
        .unwrap();
    let loader = dc.clone();
    let container = ou.clone();
    let prefix = name.to_lowercase();
    tokio::task::spawn_blocking(move || loader.bulk_load_users(&container, &prefix, count))
        .await
        .unwrap()
        .unwrap();
    ou
}

/// Polls the store itself (no HTTP in between, so as soon as possible) until the first users of
/// a full sync are stored.
pub async fn first_users_stored(stack: &Stack) -> SyncStatus {
    let store = stack.cloud.as_ref().unwrap().state.store.clone();
    loop {
        let status = store
            .sync_status(&stack.directory, writeback_proto::time::UnixMillis::now())
            .await
            .unwrap();
        if status.users > 0 {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn assert_interrupted_part_way(status: &SyncStatus) {
    assert!(
        status.last_full_sync_completed_at.is_none() && status.users < 2000,
        "the full sync was interrupted part-way ({} users stored)",
        status.users
    );
    assert!(matches!(
        status.cursor.as_ref().unwrap().phase,
        SyncPhase::Full { .. }
    ));
}

/// Deletes the first 20 bulk users of `ou` and adds 5 others.
pub async fn churn(stack: &Stack, ou: &str, prefix: &str) {
    let mut admin = stack.dc.admin().await.unwrap();
    for index in 0..20 {
        admin
            .delete(&format!("CN={prefix}{index:05},{ou}"))
            .await
            .unwrap();
    }
    for index in 0..5 {
        admin
            .create_user(
                &NewUser::new(&format!("late{prefix}{index:05}"), &strong_password())
                    .in_container(ou),
            )
            .await
            .unwrap();
    }
}

/// Waits for a completed full sync whose users are exactly the DC's users under `ou`, with none
/// duplicated and no sync errors.
pub async fn cloud_ends_with_exactly_the_users_in(stack: &Stack, ou: &str) {
    let expected = anchors_in(stack, ou).await;
    let started = Instant::now();
    loop {
        let status = stack.client.sync_status(&stack.directory).await.unwrap();
        if status.last_full_sync_completed_at.is_some() && status.users == expected.len() as u64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the resumed full sync did not complete: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cloud_anchors(stack).await, expected);
    let status = stack.client.sync_status(&stack.directory).await.unwrap();
    assert_eq!(status.users, expected.len() as u64, "nothing duplicated");
    assert_eq!(status.error_count, 0, "{:?}", status.recent_errors);
}

/// Group membership added and removed, directly and through a nested group, and un-nesting.
pub async fn membership_changes_reach_the_cloud(stack: &Stack) {
    let mut admin = stack.dc.admin().await.unwrap();
    let name = unique_user("member");
    let user_dn = admin
        .create_user(&NewUser::new(&name, &strong_password()))
        .await
        .unwrap();
    let outer_name = unique_user("Outer");
    let inner_name = unique_user("Inner");
    let outer = admin.create_group(&outer_name, STAFF_OU).await.unwrap();
    let inner = admin.create_group(&inner_name, STAFF_OU).await.unwrap();
    admin.add_member(&outer, &inner).await.unwrap();
    within_bound("groups created", || async {
        let groups = stack
            .client
            .groups(&stack.directory, Some(&inner_name))
            .await
            .unwrap();
        groups
            .iter()
            .any(|group| group.group.name == inner_name)
            .then_some(())
    })
    .await;

    admin.add_member(&inner, &user_dn).await.unwrap();
    let (member, _) = within_bound("member added", || async {
        detail(stack, &name)
            .await
            .filter(|user| !user.direct_groups.is_empty())
    })
    .await;
    let names = |groups: &[writeback_proto::api::GroupRef]| {
        groups
            .iter()
            .map(|group| group.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&member.direct_groups),
        std::slice::from_ref(&inner_name)
    );
    assert_eq!(
        names(&member.nested_groups),
        std::slice::from_ref(&outer_name)
    );
    assert_eq!(
        group_members(stack, &outer_name).await,
        BTreeSet::from([name.clone()])
    );

    admin.remove_member(&inner, &user_dn).await.unwrap();
    within_bound("member removed", || async {
        detail(stack, &name)
            .await
            .filter(|user| user.direct_groups.is_empty() && user.nested_groups.is_empty())
    })
    .await;
    assert!(group_members(stack, &outer_name).await.is_empty());

    // Membership through nesting changes when the nesting does.
    admin.add_member(&inner, &user_dn).await.unwrap();
    admin.remove_member(&outer, &inner).await.unwrap();
    within_bound("nesting removed", || async {
        detail(stack, &name)
            .await
            .filter(|user| user.direct_groups.len() == 1 && user.nested_groups.is_empty())
    })
    .await;
}

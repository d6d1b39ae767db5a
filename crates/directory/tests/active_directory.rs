//! The directory crate against a real Samba AD domain controller, bound as a service account that
//! holds only the four delegated rights of REFERENCE.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use writeback_directory::{
    ActiveDirectory, Directory, DirectoryError, DirectorySettings, EffectivePolicy,
    PasswordLastSet, ResetOptions, effective_policy,
};
use writeback_policy::{PolicyReason, PolicySource};
use writeback_proto::operation::UserRef;
use writeback_testkit::domain_controller::{ELSEWHERE_OU, RESTRICTED_OU, SERVICE_ACCOUNT};
use writeback_testkit::logs::{password_like, strong_password, unique_user};
use writeback_testkit::{DomainController, NewPasswordSettings, NewUser};

fn unique(prefix: &str) -> String {
    unique_user(prefix)
}

fn dc() -> Arc<DomainController> {
    DomainController::shared().expect("test domain controller")
}

fn settings(dc: &DomainController, bind_name: &str, password: &str) -> DirectorySettings {
    DirectorySettings {
        urls: vec![dc.ldaps_url()],
        trust: writeback_tls::Trust::CaFile(dc.ca_file.clone()),
        bind_name: dc.user_principal_name(bind_name),
        bind_password: SecretString::from(password.to_owned()),
        search_base: writeback_testkit::domain_controller::BASE_DN.into(),
        connect_timeout: Duration::from_secs(10),
        operation_timeout: Duration::from_secs(10),
    }
}

fn service_directory(dc: &DomainController) -> ActiveDirectory {
    ActiveDirectory::new(settings(dc, SERVICE_ACCOUNT, &dc.service_account_password)).unwrap()
}

async fn create(dc: &DomainController, user: NewUser) -> String {
    dc.admin().await.unwrap().create_user(&user).await.unwrap()
}

fn by_name(name: &str) -> UserRef {
    UserRef::logon_name(name).unwrap()
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

/// The stamp a taken-over request is judged by: every password write adds one to its version,
/// and the service account can read it.
#[tokio::test]
async fn every_password_write_moves_the_stamp_by_one() {
    let dc = dc();
    let old_password = strong_password();
    let name = unique("dstamp");
    create(&dc, NewUser::new(&name, &old_password)).await;
    let directory = service_directory(&dc);

    let before = directory.find_user(&by_name(&name)).await.unwrap();
    let before_stamp = before.password_stamp.expect("a set password has a stamp");
    directory
        .reset_password(
            &before,
            &secret(&strong_password()),
            ResetOptions::default(),
        )
        .await
        .unwrap();
    let after = directory.find_user(&by_name(&name)).await.unwrap();
    let after_stamp = after.password_stamp.unwrap();
    assert_eq!(after_stamp.version, before_stamp.version + 1);
    assert!(after_stamp.changed_at >= before_stamp.changed_at);
    directory.unlock(&after).await.unwrap();
    let unlocked = directory.find_user(&by_name(&name)).await.unwrap();
    assert_eq!(
        unlocked.password_stamp,
        Some(after_stamp),
        "an unlock is not a password write"
    );
}

#[tokio::test]
async fn a_reset_lands_the_new_password_and_retires_the_old_one() {
    let dc = dc();
    let old_password = strong_password();
    let new_password = strong_password();
    let name = unique("dreset");
    create(&dc, NewUser::new(&name, &old_password)).await;
    let directory = service_directory(&dc);

    let account = directory.find_user(&by_name(&name)).await.unwrap();
    directory
        .reset_password(&account, &secret(&new_password), ResetOptions::default())
        .await
        .unwrap();

    assert_eq!(dc.bind_as(&name, &new_password).await.unwrap(), Ok(()));
    assert_eq!(
        dc.bind_as(&name, &old_password).await.unwrap(),
        Err("52e".into())
    );
    let after = directory.find_user(&by_name(&name)).await.unwrap();
    assert!(matches!(
        after.password_last_set,
        PasswordLastSet::At { .. }
    ));
}

#[tokio::test]
async fn users_are_found_by_upn_and_metacharacters_find_nobody() {
    let dc = dc();
    let old_password = strong_password();
    let name = unique("dfind");
    create(
        &dc,
        NewUser::new(&name, &old_password).display_name("Find Me"),
    )
    .await;
    let directory = service_directory(&dc);

    let account = directory
        .find_user(&by_name(&dc.user_principal_name(&name)))
        .await
        .unwrap();
    assert_eq!(account.sam_account_name, name);
    assert_eq!(account.display_name.as_deref(), Some("Find Me"));
    assert!(account.object_guid.is_some());
    for hostile in ["*)(uid=*", "*", "dfind*", "*)(|(sAMAccountName=*", "\\2a"] {
        assert_eq!(
            directory.find_user(&by_name(hostile)).await,
            Err(DirectoryError::UserNotFound),
            "{hostile}"
        );
    }
}

#[tokio::test]
async fn effective_policy_is_the_domain_policy_or_a_readable_pso() {
    let dc = dc();
    let old_password = strong_password();
    let plain = unique("dpol");
    create(&dc, NewUser::new(&plain, &old_password)).await;
    let governed = unique("dpso");
    let governed_dn = create(&dc, NewUser::new(&governed, &old_password)).await;
    let pso = dc
        .admin()
        .await
        .unwrap()
        .create_password_settings(
            &NewPasswordSettings {
                name: unique("pso-read"),
                min_length: 12,
                complexity: false,
                history_length: 3,
                min_age_days: 2,
                lockout_threshold: 0,
                max_age_days: 42,
            },
            &governed_dn,
        )
        .await
        .unwrap();

    let service = service_directory(&dc);
    let account = service.find_user(&by_name(&plain)).await.unwrap();
    let domain_policy = service.domain_policy().await.unwrap();
    let EffectivePolicy::Known(domain) =
        effective_policy(&service, &account, domain_policy.clone())
            .await
            .unwrap()
    else {
        panic!("a user without a PSO has the domain policy");
    };
    assert_eq!(
        (domain.min_length, domain.complexity, domain.source.clone()),
        (7, true, PolicySource::Domain)
    );

    // The four delegated rights do not include reading PSOs: the agent must notice.
    let account = service.find_user(&by_name(&governed)).await.unwrap();
    assert_eq!(
        account.resultant_pso.as_deref().map(str::to_lowercase),
        Some(pso.to_lowercase())
    );
    assert!(matches!(
        effective_policy(&service, &account, domain_policy.clone())
            .await
            .unwrap(),
        EffectivePolicy::Unreadable { .. }
    ));

    // An account allowed to read it gets the fine-grained values.
    let administrator =
        ActiveDirectory::new(settings(&dc, "Administrator", &dc.admin_password)).unwrap();
    let account = administrator.find_user(&by_name(&governed)).await.unwrap();
    let EffectivePolicy::Known(fine) = effective_policy(&administrator, &account, domain_policy)
        .await
        .unwrap()
    else {
        panic!("the administrator can read PSOs");
    };
    assert_eq!(
        (fine.min_length, fine.complexity, fine.history_length),
        (12, false, 3)
    );
    assert_eq!(fine.min_age, Duration::from_secs(2 * 86_400));
    assert!(matches!(fine.source, PolicySource::FineGrained(_)));
}

#[tokio::test]
async fn a_change_is_verified_and_policed_by_the_domain_controller() {
    let dc = dc();
    let first_password = strong_password();
    let wrong_password = strong_password();
    let second_password = strong_password();
    let name = unique("dchange");
    create(&dc, NewUser::new(&name, &first_password)).await;
    let directory = service_directory(&dc);
    let account = directory.find_user(&by_name(&name)).await.unwrap();

    assert_eq!(
        directory
            .change_password(
                &account,
                &secret(&wrong_password),
                &secret(&second_password)
            )
            .await,
        Err(DirectoryError::WrongCurrentPassword)
    );
    directory
        .change_password(
            &account,
            &secret(&first_password),
            &secret(&second_password),
        )
        .await
        .unwrap();
    assert_eq!(dc.bind_as(&name, &second_password).await.unwrap(), Ok(()));
    let refused = directory
        .change_password(
            &account,
            &secret(&second_password),
            &secret(&first_password),
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(DirectoryError::PolicyRestriction {
                reason: Some(PolicyReason::InHistory),
                ..
            })
        ),
        "{refused:?}"
    );
}

#[tokio::test]
async fn unlock_clears_a_lockout_produced_by_failed_binds() {
    let dc = dc();
    let lock_password = strong_password();
    let name = unique("dlock");
    let dn = create(&dc, NewUser::new(&name, &lock_password)).await;
    let pso = NewPasswordSettings {
        name: unique("pso-lock"),
        min_length: 7,
        complexity: true,
        history_length: 0,
        min_age_days: 0,
        lockout_threshold: 3,
        max_age_days: 42,
    };
    dc.admin()
        .await
        .unwrap()
        .create_password_settings(&pso, &dn)
        .await
        .unwrap();
    for attempt in 0..3 {
        assert_eq!(
            dc.bind_as(&name, &password_like(&format!("Bad-{{unique}}-{attempt}")))
                .await
                .unwrap(),
            Err("52e".into())
        );
    }
    assert_eq!(
        dc.bind_as(&name, &lock_password).await.unwrap(),
        Err("775".into())
    );
    let directory = service_directory(&dc);
    let account = directory.find_user(&by_name(&name)).await.unwrap();
    assert!(account.locked_out);

    directory.unlock(&account).await.unwrap();
    assert_eq!(dc.bind_as(&name, &lock_password).await.unwrap(), Ok(()));
    assert!(
        !directory
            .find_user(&by_name(&name))
            .await
            .unwrap()
            .locked_out
    );
}

#[tokio::test]
async fn without_delegated_rights_the_domain_controller_refuses() {
    let dc = dc();
    let old_password = strong_password();
    let new_password = strong_password();
    let name = unique("dnoright");
    create(
        &dc,
        NewUser::new(&name, &old_password).in_container(RESTRICTED_OU),
    )
    .await;
    let directory = service_directory(&dc);
    let account = directory.find_user(&by_name(&name)).await.unwrap();
    let refused = directory
        .reset_password(&account, &secret(&new_password), ResetOptions::default())
        .await;
    assert!(
        matches!(refused, Err(DirectoryError::InsufficientAccess(_))),
        "{refused:?}"
    );
    assert_eq!(dc.bind_as(&name, &old_password).await.unwrap(), Ok(()));
}

#[tokio::test]
async fn account_state_is_read_from_the_directory() {
    let dc = dc();
    let old_password = strong_password();
    let disabled = unique("ddis");
    create(
        &dc,
        NewUser::new(&disabled, &old_password)
            .disabled()
            .in_container(ELSEWHERE_OU),
    )
    .await;
    let protected = unique("dprot");
    let protected_dn = create(&dc, NewUser::new(&protected, &old_password)).await;
    dc.admin()
        .await
        .unwrap()
        .replace(&protected_dn, "adminCount", "1")
        .await
        .unwrap();

    let directory = service_directory(&dc);
    let account = directory.find_user(&by_name(&disabled)).await.unwrap();
    assert!(account.disabled && !account.protected);
    assert!(account.distinguished_name.ends_with(ELSEWHERE_OU));
    let account = directory.find_user(&by_name(&protected)).await.unwrap();
    assert!(account.protected && !account.disabled);
}

#[tokio::test]
async fn a_wrong_service_password_is_a_configuration_error() {
    let dc = dc();
    let directory = ActiveDirectory::new(settings(
        &dc,
        SERVICE_ACCOUNT,
        &password_like("Not-The-Password-{unique}"),
    ))
    .unwrap();
    let error = directory.check_connection().await.unwrap_err();
    assert!(
        matches!(&error, DirectoryError::Configuration(message) if message.contains("invalid credentials")),
        "{error:?}"
    );
    let plain = DirectorySettings {
        urls: vec![dc.ldaps_url(), format!("ldap://{}", dc.address)],
        ..settings(&dc, SERVICE_ACCOUNT, &dc.service_account_password)
    };
    assert!(matches!(
        ActiveDirectory::new(plain),
        Err(DirectoryError::Configuration(_))
    ));
}

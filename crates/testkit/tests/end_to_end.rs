//! Writeback end to end: admin API (HTTPS, loopback) -> cloud relay -> `writeback-agent` process
//! (WSS, dialled out) -> Samba AD DC (LDAPS), with a service account that holds only the four
//! delegated rights of REFERENCE.md. Each test runs its own cloud and agent against the binary's
//! one DC, with its own users; the proof of every write is a bind as the user.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::{Method, StatusCode};
use secrecy::SecretString;
use tokio_tungstenite::tungstenite::Message;
use writeback_proto::PolicyReason;
use writeback_proto::api::{ChangePasswordRequest, OperationResponse, ResetPasswordRequest};
use writeback_proto::ids::RequestId;
use writeback_proto::result::{OutcomeWarning, ResultCode};
use writeback_testkit::domain_controller::{ELSEWHERE_OU, RESTRICTED_OU, SERVICE_ACCOUNT};
use writeback_testkit::logs::{password_like, strong_password, unique_user};
use writeback_testkit::{NewPasswordSettings, NewUser, Stack};

async fn create_user(stack: &Stack, user: NewUser) -> String {
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .create_user(&user)
        .await
        .unwrap()
}

async fn user_with_password(stack: &Stack, prefix: &str) -> (String, String) {
    stack.user_with_password(prefix).await.unwrap()
}

async fn bind(stack: &Stack, name: &str, password: &str) -> Result<(), String> {
    stack.dc.bind_as(name, password).await.unwrap()
}

async fn change(stack: &Stack, name: &str, current: &str, new: &str) -> OperationResponse {
    let request = ChangePasswordRequest {
        current_password: SecretString::from(current.to_owned()),
        new_password: SecretString::from(new.to_owned()),
    };
    let response = stack
        .client
        .change_password(&stack.directory, name, &request)
        .await
        .unwrap();
    stack
        .assert_audited(&response, "change_password", name)
        .await
        .unwrap();
    response
}

fn policy_reason(response: &OperationResponse) -> Option<PolicyReason> {
    match &response.result {
        ResultCode::PolicyViolation { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[tokio::test]
async fn a_reset_lands_in_the_directory_the_new_password_binds_and_the_old_one_fails() {
    let stack = Stack::start().await.unwrap();
    let (name, old) = user_with_password(&stack, "reset").await;
    let new = strong_password();

    let response = stack.reset(&name, &new, false, false).await.unwrap();

    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(bind(&stack, &name, &new).await, Ok(()));
    assert_eq!(bind(&stack, &name, &old).await, Err("52e".into()));
    // The user principal name addresses the same user.
    let newer = strong_password();
    let response = stack
        .reset(&stack.dc.user_principal_name(&name), &newer, false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success);
    assert_eq!(bind(&stack, &name, &newer).await, Ok(()));
}

#[tokio::test]
async fn must_change_sets_pwd_last_set_to_zero_and_the_bind_says_773() {
    let stack = Stack::start().await.unwrap();
    let (name, _) = user_with_password(&stack, "mustchg").await;
    let new = strong_password();

    let response = stack.reset(&name, &new, true, false).await.unwrap();

    assert_eq!(response.result, ResultCode::Success);
    assert!(response.warnings.is_empty(), "{:?}", response.warnings);
    assert_eq!(bind(&stack, &name, &new).await, Err("773".into()));
    let dn = format!(
        "CN={name},{}",
        writeback_testkit::domain_controller::STAFF_OU
    );
    let pwd_last_set = stack
        .dc
        .admin()
        .await
        .unwrap()
        .read(&dn, "pwdLastSet")
        .await
        .unwrap();
    assert_eq!(pwd_last_set.as_deref(), Some("0"));
}

/// What had no effect is said beside the success, in the API, the CLI and the audit log: a
/// must-change on an account whose password never expires (the user is then never asked, as the
/// bind shows), and an unlock of an account that was not locked.
#[tokio::test]
async fn a_success_says_what_part_of_it_had_no_effect_in_the_directory() {
    let stack = Stack::start().await.unwrap();
    let (name, _) = user_with_password(&stack, "neverexp").await;
    let dn = format!(
        "CN={name},{}",
        writeback_testkit::domain_controller::STAFF_OU
    );
    // NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD.
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .replace(&dn, "userAccountControl", "66048")
        .await
        .unwrap();
    let new = strong_password();

    let response = stack.reset(&name, &new, true, false).await.unwrap();

    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(
        response
            .warnings
            .iter()
            .map(|warning| warning.code)
            .collect::<Vec<_>>(),
        [OutcomeWarning::MustChangeIgnored]
    );
    assert!(response.warnings[0].message.contains("never expires"));
    // The DC does not ask: the new password signs in at once.
    assert_eq!(bind(&stack, &name, &new).await, Ok(()));
    let audited = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            request_id: Some(response.request_id.to_string()),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        audited.entries[0].detail.as_deref(),
        Some("warning: must_change_ignored")
    );

    let unlocked = stack.client.unlock(&stack.directory, &name).await.unwrap();
    assert_eq!(unlocked.result, ResultCode::Success);
    assert_eq!(
        unlocked
            .warnings
            .iter()
            .map(|warning| warning.code)
            .collect::<Vec<_>>(),
        [OutcomeWarning::WasNotLocked]
    );

    stack.cli_login().await.unwrap();
    let directory = stack.directory.to_string();
    let output = stack.cli(&["unlock", &directory, &name]).await.unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains("warning:    The account was not locked out")
            && printed.contains("(was_not_locked)"),
        "{printed}"
    );
}

#[tokio::test]
async fn unlock_clears_a_real_lockout_and_touches_nothing_else() {
    let stack = Stack::start().await.unwrap();
    let name = unique_user("unlock");
    let password = strong_password();
    create_user(&stack, NewUser::new(&name, &password)).await;
    stack.lock_out(&name, &password).await.unwrap();

    let response = stack.client.unlock(&stack.directory, &name).await.unwrap();
    stack
        .assert_audited(&response, "unlock", &name)
        .await
        .unwrap();

    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(
        bind(&stack, &name, &password).await,
        Ok(()),
        "same password, no longer locked"
    );
}

#[tokio::test]
async fn a_reset_with_unlock_clears_the_lockout_in_the_same_modify() {
    let stack = Stack::start().await.unwrap();
    let name = unique_user("rstunlk");
    let password = strong_password();
    create_user(&stack, NewUser::new(&name, &password)).await;
    stack.lock_out(&name, &password).await.unwrap();
    let new = strong_password();

    let response = stack.reset(&name, &new, false, true).await.unwrap();

    assert_eq!(response.result, ResultCode::Success);
    assert_eq!(bind(&stack, &name, &new).await, Ok(()));
}

#[tokio::test]
async fn passwords_that_break_the_domain_policy_are_refused_with_the_specific_reason() {
    let stack = Stack::start().await.unwrap();
    let name = unique_user("policy");
    let old = strong_password();
    create_user(
        &stack,
        NewUser::new(&name, &old).display_name("Quentin Marvelous"),
    )
    .await;
    let cases = [
        (
            password_like("S{unique}")
                .chars()
                .take(5)
                .collect::<String>(),
            PolicyReason::TooShort,
        ),
        (
            password_like("onlylowercaseletters{unique}")
                .to_lowercase()
                .replace(|c: char| c.is_ascii_digit(), "x"),
            PolicyReason::NotComplex,
        ),
        (
            password_like(&format!("{name}-Xy{{unique}}!")),
            PolicyReason::NotComplex,
        ),
        (
            password_like("Marvelous-{unique}-9!"),
            PolicyReason::NotComplex,
        ),
        (
            password_like("I-love-Contoso-{unique}"),
            PolicyReason::Banned,
        ),
    ];
    for (password, reason) in cases {
        writeback_testkit::logs::remember_secret(&password);
        let response = stack.reset(&name, &password, false, false).await.unwrap();
        assert_eq!(
            policy_reason(&response),
            Some(reason),
            "{password}: {response:?}"
        );
        let ResultCode::PolicyViolation {
            requirements: Some(requirements),
            ..
        } = &response.result
        else {
            panic!("the domain policy is readable, so its requirements are reported");
        };
        assert_eq!(requirements.min_length, 7);
        if reason == PolicyReason::TooShort {
            assert!(
                response.message.contains("at least 7 characters"),
                "{}",
                response.message
            );
        }
    }
    assert_eq!(
        bind(&stack, &name, &old).await,
        Ok(()),
        "nothing was written"
    );
}

#[tokio::test]
async fn a_change_is_verified_by_the_directory_which_enforces_history() {
    let stack = Stack::start().await.unwrap();
    let (name, first) = user_with_password(&stack, "change").await;
    let second = strong_password();

    let wrong = change(&stack, &name, &password_like("Not-It-{unique}!"), &second).await;
    assert_eq!(
        wrong.result,
        ResultCode::WrongCurrentPassword,
        "{}",
        wrong.message
    );

    let changed = change(&stack, &name, &first, &second).await;
    assert_eq!(changed.result, ResultCode::Success, "{}", changed.message);
    assert_eq!(bind(&stack, &name, &second).await, Ok(()));
    assert_eq!(bind(&stack, &name, &first).await, Err("52e".into()));

    let reused = change(&stack, &name, &second, &first).await;
    assert_eq!(
        policy_reason(&reused),
        Some(PolicyReason::InHistory),
        "{reused:?}"
    );
    assert!(
        reused.message.contains("last 24 passwords"),
        "{}",
        reused.message
    );
    assert_eq!(bind(&stack, &name, &second).await, Ok(()));
}

#[tokio::test]
async fn a_change_before_the_minimum_age_is_refused_as_too_young() {
    let stack = Stack::start().await.unwrap();
    let name = unique_user("young");
    let first = strong_password();
    let dn = create_user(&stack, NewUser::new(&name, &first)).await;
    // A fine-grained policy the service account cannot read: the verdict comes from the DC.
    let settings = NewPasswordSettings {
        name: unique_user("pso-young-"),
        min_length: 7,
        complexity: true,
        history_length: 5,
        min_age_days: 1,
        lockout_threshold: 0,
        max_age_days: 42,
    };
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .create_password_settings(&settings, &dn)
        .await
        .unwrap();
    let second = strong_password();

    let response = change(&stack, &name, &first, &second).await;

    assert_eq!(
        policy_reason(&response),
        Some(PolicyReason::TooYoung),
        "{response:?}"
    );
    assert_eq!(bind(&stack, &name, &first).await, Ok(()));
}

#[tokio::test]
async fn the_service_account_is_not_an_administrator_and_without_the_reset_right_the_answer_is_permission_denied()
 {
    let stack = Stack::start().await.unwrap();
    let service_dn = format!(
        "CN={SERVICE_ACCOUNT},CN=Users,{}",
        writeback_testkit::domain_controller::BASE_DN
    );
    let mut admin = stack.dc.admin().await.unwrap();
    assert_eq!(
        admin.read(&service_dn, "memberOf").await.unwrap(),
        None,
        "member of no group"
    );
    assert_eq!(admin.read(&service_dn, "adminCount").await.unwrap(), None);

    let name = unique_user("noright");
    let old = strong_password();
    create_user(
        &stack,
        NewUser::new(&name, &old).in_container(RESTRICTED_OU),
    )
    .await;
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();

    assert_eq!(
        response.result,
        ResultCode::PermissionDenied,
        "{}",
        response.message
    );
    assert!(
        response.message.contains("Reset Password"),
        "{}",
        response.message
    );
    assert_eq!(bind(&stack, &name, &old).await, Ok(()));
}

#[tokio::test]
async fn protected_and_out_of_scope_accounts_are_refused_by_the_agent() {
    let stack = Stack::start().await.unwrap();
    let (protected, protected_password) = user_with_password(&stack, "prot").await;
    let protected_dn = format!(
        "CN={protected},{}",
        writeback_testkit::domain_controller::STAFF_OU
    );
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .replace(&protected_dn, "adminCount", "1")
        .await
        .unwrap();
    let outside = unique_user("outside");
    let outside_password = strong_password();
    create_user(
        &stack,
        NewUser::new(&outside, &outside_password).in_container(ELSEWHERE_OU),
    )
    .await;

    let response = stack
        .reset(&protected, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::ProtectedAccount);
    let response = stack
        .reset(&outside, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::OutOfScope);
    let response = stack
        .client
        .unlock(&stack.directory, &outside)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::OutOfScope);

    assert_eq!(bind(&stack, &protected, &protected_password).await, Ok(()));
    assert_eq!(bind(&stack, &outside, &outside_password).await, Ok(()));
}

#[tokio::test]
async fn a_disabled_account_is_refused() {
    let stack = Stack::start().await.unwrap();
    let name = unique_user("disabled");
    create_user(&stack, NewUser::new(&name, &strong_password()).disabled()).await;
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::AccountDisabled);
}

#[tokio::test]
async fn a_repeated_request_id_is_applied_once() {
    let stack = Stack::start().await.unwrap();
    let (name, _) = user_with_password(&stack, "idem").await;
    let first = strong_password();
    let key = RequestId::generate().unwrap();
    let request = |password: &str| ResetPasswordRequest {
        new_password: SecretString::from(password.to_owned()),
        must_change: false,
        unlock: false,
    };

    let answer = stack
        .client
        .reset_password(&stack.directory, &name, &request(&first), Some(key))
        .await
        .unwrap();
    assert_eq!(answer.result, ResultCode::Success);
    assert_eq!(answer.request_id, key);
    stack
        .assert_audited(&answer, "reset_password", &name)
        .await
        .unwrap();
    // Someone else changes the password directly in the directory.
    let meanwhile = strong_password();
    let dn = format!(
        "CN={name},{}",
        writeback_testkit::domain_controller::STAFF_OU
    );
    let mut admin = stack.dc.admin().await.unwrap();
    admin.replace_password(&dn, &meanwhile).await.unwrap();

    let repeat = stack
        .client
        .reset_password(&stack.directory, &name, &request(&first), Some(key))
        .await
        .unwrap();

    assert_eq!(
        repeat.result,
        ResultCode::Success,
        "the first outcome is returned"
    );
    assert_eq!(
        bind(&stack, &name, &meanwhile).await,
        Ok(()),
        "the repeat did not touch the directory"
    );
    assert_eq!(bind(&stack, &name, &first).await, Err("52e".into()));
    // The same id for a different operation is refused rather than applied.
    let unlock_path = writeback_cli::user_path(&stack.directory, &name, "unlock");
    let raw = stack
        .client
        .send(
            Method::POST,
            &unlock_path,
            None,
            Vec::new(),
            &[("idempotency-key", key.to_string())],
        )
        .await
        .unwrap();
    assert_eq!(raw.status, StatusCode::UNPROCESSABLE_ENTITY);
    let reused: OperationResponse = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(reused.result, ResultCode::RequestIdReused);
    assert_eq!(bind(&stack, &name, &meanwhile).await, Ok(()));
}

#[tokio::test]
async fn a_killed_agent_means_agent_unavailable_and_a_restarted_one_works_with_no_manual_step() {
    let mut stack = Stack::start().await.unwrap();
    let (name, old) = user_with_password(&stack, "agentgone").await;

    stack.kill_agent().await.unwrap();
    let started = std::time::Instant::now();
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        response.result,
        ResultCode::AgentUnavailable,
        "{}",
        response.message
    );
    println!("agent unavailable answered in {} ms", elapsed.as_millis());
    assert_eq!(bind(&stack, &name, &old).await, Ok(()));

    stack.start_agent().await.unwrap();
    let new = strong_password();
    let response = stack.reset(&name, &new, false, false).await.unwrap();
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(bind(&stack, &name, &new).await, Ok(()));
}

#[tokio::test]
async fn after_a_cloud_restart_the_agent_reconnects_by_itself() {
    let mut stack = Stack::start().await.unwrap();
    let (name, _) = user_with_password(&stack, "cloudgone").await;

    stack.restart_cloud().await.unwrap();
    stack.wait_for_agent(true).await.unwrap();
    let new = strong_password();
    let response = stack.reset(&name, &new, false, false).await.unwrap();

    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(bind(&stack, &name, &new).await, Ok(()));
}

/// A reset whose answer was lost when the cloud restarted is retried with the same
/// Idempotency-Key. The first attempt named a user the cloud had not synced yet by logon name;
/// by the retry the user is synced and the cloud names them by anchor. The retry is the same
/// request: the agent's journal answers it and nothing is written again.
#[tokio::test]
async fn a_retry_after_a_cloud_restart_is_applied_once_though_the_user_was_synced_in_between() {
    let mut stack = Stack::start_with(writeback_testkit::stack::StackOptions {
        sync_poll_interval_ms: Some(3_600_000),
        ..writeback_testkit::stack::StackOptions::default()
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stack
        .client
        .sync_status(&stack.directory)
        .await
        .unwrap()
        .last_full_sync_completed_at
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "no first full sync");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (name, old_password) = user_with_password(&stack, "restarted").await;
    assert!(
        stack.client.user(&stack.directory, &name).await.is_err(),
        "the cloud has not synced the new user"
    );
    let before = stack.dc.password_writes(&name).await.unwrap();
    let new_password = strong_password();
    let request = ResetPasswordRequest {
        new_password: SecretString::from(new_password.clone()),
        must_change: false,
        unlock: false,
    };
    let key = RequestId::generate().unwrap();
    let first = stack
        .client
        .reset_password(&stack.directory, &name, &request, Some(key))
        .await
        .unwrap();
    assert_eq!(first.result, ResultCode::Success, "{}", first.message);

    stack.restart_cloud().await.unwrap();
    stack.wait_for_agent(true).await.unwrap();
    stack
        .client
        .request_full_sync(&stack.directory)
        .await
        .unwrap();
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    let retried = stack
        .client
        .reset_password(&stack.directory, &name, &request, Some(key))
        .await
        .unwrap();

    assert_eq!(retried.result, ResultCode::Success, "{}", retried.message);
    assert_eq!(retried.request_id, key);
    assert_eq!(
        stack.dc.password_writes(&name).await.unwrap(),
        before + 1,
        "one write"
    );
    stack
        .dc
        .assert_password_replaced(&name, &new_password, &old_password)
        .await
        .unwrap();
}

#[tokio::test]
async fn filter_metacharacters_in_a_user_name_are_taken_literally() {
    let stack = Stack::start().await.unwrap();
    user_with_password(&stack, "meta").await;
    for hostile in ["*)(uid=*", "*", "meta*", "*)(|(sAMAccountName=*"] {
        let response = stack
            .reset(hostile, &strong_password(), false, false)
            .await
            .unwrap();
        assert_eq!(response.result, ResultCode::UserNotFound, "{hostile}");
    }
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let stack = Stack::start().await.unwrap();
    let (name, old) = user_with_password(&stack, "badinput").await;
    let path = writeback_cli::user_path(&stack.directory, &name, "reset-password");
    let password = strong_password();
    let body = format!(r#"{{"new_password":"{password}"}}"#).into_bytes();
    let send = |method,
                path: String,
                content_type: Option<&'static str>,
                body: Vec<u8>,
                headers: Vec<(&'static str, String)>| {
        let client = &stack.client;
        async move {
            client
                .send(method, &path, content_type, body, &headers)
                .await
                .unwrap()
        }
    };
    let error_code = |raw: &writeback_cli::RawResponse| -> String {
        let value: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
        value["error"]["code"].as_str().unwrap().to_owned()
    };

    let raw = send(
        Method::POST,
        path.clone(),
        Some("text/plain"),
        body.clone(),
        vec![],
    )
    .await;
    assert_eq!(
        (raw.status, error_code(&raw)),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type".into()
        )
    );

    let raw = send(
        Method::POST,
        path.clone(),
        Some("application/json"),
        br#"{"new_password": "#.to_vec(),
        vec![],
    )
    .await;
    assert_eq!(
        (raw.status, error_code(&raw)),
        (StatusCode::BAD_REQUEST, "invalid_request".into())
    );

    let raw = send(
        Method::POST,
        path.clone(),
        Some("application/json"),
        format!(r#"{{"new_password":"{password}","admin":true}}"#).into_bytes(),
        vec![],
    )
    .await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);
    assert!(
        !String::from_utf8_lossy(&raw.body).contains(&password),
        "the body is not echoed"
    );

    let huge = format!(r#"{{"new_password":"{}"}}"#, "x".repeat(64 * 1024)).into_bytes();
    let raw = send(
        Method::POST,
        path.clone(),
        Some("application/json"),
        huge,
        vec![],
    )
    .await;
    assert_eq!(
        (raw.status, error_code(&raw)),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );

    let long = format!(r#"{{"new_password":"{}"}}"#, "Aa1!".repeat(80)).into_bytes();
    let raw = send(
        Method::POST,
        path.clone(),
        Some("application/json"),
        long,
        vec![],
    )
    .await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);

    let raw = send(
        Method::POST,
        path.clone(),
        Some("application/json"),
        body.clone(),
        vec![("idempotency-key", "not-hex".into())],
    )
    .await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);

    let unknown = writeback_cli::user_path(&"elsewhere".parse().unwrap(), &name, "reset-password");
    let raw = send(
        Method::POST,
        unknown,
        Some("application/json"),
        body.clone(),
        vec![],
    )
    .await;
    assert_eq!(
        (raw.status, error_code(&raw)),
        (StatusCode::NOT_FOUND, "unknown_directory".into())
    );

    let raw = send(
        Method::POST,
        "/api/v1/directories/Not_Valid/users/x/unlock".into(),
        None,
        vec![],
        vec![],
    )
    .await;
    assert_eq!(raw.status, StatusCode::BAD_REQUEST);

    let anonymous = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap();
    let raw = anonymous
        .send(
            Method::POST,
            &path,
            Some("application/json"),
            body.clone(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (raw.status, error_code(&raw)),
        (StatusCode::UNAUTHORIZED, "unauthenticated".into())
    );
    let forged = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap()
    .with_token(SecretString::from("wbs_forged"));
    let raw = forged
        .send(Method::POST, &path, Some("application/json"), body, &[])
        .await
        .unwrap();
    assert_eq!(
        (raw.status, error_code(&raw)),
        (StatusCode::UNAUTHORIZED, "session_expired".into())
    );

    assert_eq!(
        bind(&stack, &name, &old).await,
        Ok(()),
        "nothing was changed"
    );
}

#[tokio::test]
async fn a_wrong_administrator_password_is_refused() {
    let stack = Stack::start().await.unwrap();
    let client = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap();
    let wrong = password_like("Wrong-Admin-{unique}!");
    let refused = client
        .sign_in(
            writeback_testkit::stack::ADMIN_EMAIL,
            SecretString::from(wrong),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("invalid_credentials"),
        "{refused}"
    );
}

async fn raw_agent_socket(stack: &Stack) -> writeback_agent::transport::CloudSocket {
    let trust = writeback_tls::Trust::Pinned(stack.fingerprint);
    writeback_agent::transport::connect(&stack.url(), &trust)
        .await
        .unwrap()
}

async fn next_text(socket: &mut writeback_agent::transport::CloudSocket) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => return Some(text.to_string()),
            Ok(Message::Close(frame)) => {
                return frame
                    .map(|frame| format!("close:{}:{}", u16::from(frame.code), frame.reason));
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn malformed_oversized_and_unknown_version_frames_are_refused_and_the_relay_keeps_serving() {
    let stack = Stack::start().await.unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "malformed frame"),
        (
            br#"{"v":99,"msg":{"type":"heartbeat","sent_at":1}}"#.to_vec(),
            "unsupported protocol version 99",
        ),
        (
            br#"{"v":1,"msg":{"type":"request","surprise":true}}"#.to_vec(),
            "malformed frame",
        ),
        (
            format!(r#"{{"v":1,"msg":"{}"}}"#, "x".repeat(70 * 1024)).into_bytes(),
            "larger than the limit",
        ),
    ];
    for (frame, expected) in cases {
        let mut socket = raw_agent_socket(&stack).await;
        let challenge = next_text(&mut socket).await.unwrap();
        assert!(challenge.contains(r#""type":"challenge""#), "{challenge}");
        socket
            .send(Message::Text(String::from_utf8(frame).unwrap().into()))
            .await
            .unwrap();
        let answer = next_text(&mut socket).await.unwrap();
        assert!(
            answer.contains("protocol_error") && answer.contains(expected),
            "{expected}: {answer}"
        );
        let closing = next_text(&mut socket).await;
        assert!(
            closing
                .as_deref()
                .is_none_or(|text| text.starts_with("close:")),
            "{closing:?}"
        );
    }
    // Far beyond the limit, the WebSocket layer itself cuts the connection.
    let mut socket = raw_agent_socket(&stack).await;
    next_text(&mut socket).await.unwrap();
    let _ = socket
        .send(Message::Binary(vec![b'x'; 1024 * 1024].into()))
        .await;
    let answer = next_text(&mut socket).await;
    assert!(
        answer
            .as_deref()
            .is_none_or(|text| text.starts_with("close:1009")),
        "{answer:?}"
    );

    // The real agent was never disturbed.
    let (name, _) = user_with_password(&stack, "afterbad").await;
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success);
}

#[tokio::test]
async fn a_registration_token_is_single_use() {
    let stack = Stack::start().await.unwrap();
    let store = stack.cloud.as_ref().unwrap().state.store.clone();
    let (token, _) = writeback_cloud::create_registration_token(
        &store,
        &stack.directory,
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let register = |data_dir: std::path::PathBuf| {
        let token = secrecy::ExposeSecret::expose_secret(&token).to_owned();
        let url = stack.url();
        let pin = stack.fingerprint.to_string();
        async move {
            tokio::process::Command::new(
                writeback_testkit::logs::binary("writeback-agent").unwrap(),
            )
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "register", "--cloud", &url, "--pin", &pin, "--token", &token,
            ])
            .output()
            .await
            .unwrap()
        }
    };
    let first = register(stack.work.join("second-agent")).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = register(stack.work.join("third-agent")).await;
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("invalid, already used or expired"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // A wrong pin is refused before anything is sent.
    let wrong_pin =
        tokio::process::Command::new(writeback_testkit::logs::binary("writeback-agent").unwrap())
            .arg("--data-dir")
            .arg(stack.work.join("fourth-agent"))
            .args([
                "register",
                "--cloud",
                &stack.url(),
                "--pin",
                &"00".repeat(32),
                "--token",
                "wbr_unused",
            ])
            .output()
            .await
            .unwrap();
    assert!(!wrong_pin.status.success());
    assert!(String::from_utf8_lossy(&wrong_pin.stderr).contains("does not match the pinned"));
}

#[tokio::test]
async fn the_cli_signs_in_and_resets_a_password() {
    let stack = Stack::start().await.unwrap();
    let (name, old) = user_with_password(&stack, "clireset").await;
    let new = strong_password();
    let new_password_file = stack.work.join("new-password");
    std::fs::write(&new_password_file, &new).unwrap();
    let new_password_file = new_password_file.display().to_string();
    let directory = stack.directory.to_string();
    stack.cli_login().await.unwrap();
    let reset = stack
        .cli(&[
            "reset",
            &directory,
            &name,
            "--password-file",
            &new_password_file,
        ])
        .await
        .unwrap();
    let output = String::from_utf8_lossy(&reset.stdout);
    assert!(
        reset.status.success(),
        "{output}{}",
        String::from_utf8_lossy(&reset.stderr)
    );
    assert!(output.contains("The password was reset"), "{output}");
    assert_eq!(bind(&stack, &name, &new).await, Ok(()));
    assert_eq!(bind(&stack, &name, &old).await, Err("52e".into()));

    let agents = stack.cli(&["agents"]).await.unwrap();
    assert!(String::from_utf8_lossy(&agents.stdout).contains("connected"));
    let refused = stack
        .cli(&[
            "reset",
            &directory,
            "nobody-here",
            "--password-file",
            &new_password_file,
        ])
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("user_not_found"));
}

/// Resets work through a DC that serves a certificate like Samba's own generated one, once the
/// agent pins it (`directory.tls_pin`) instead of trusting a CA.
#[tokio::test]
async fn resets_work_through_a_dc_trusted_by_its_pinned_certificate() {
    let mut stack = Stack::start().await.unwrap();
    let proxy = writeback_testkit::tls_proxy::AutogeneratedCertificateProxy::start(&stack.dc)
        .await
        .unwrap();
    let path = stack.agent_config_path().to_owned();
    let pinned = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| {
            if line.starts_with("url =") {
                format!("url = \"{}\"", proxy.url())
            } else if line.starts_with("ca_file") {
                format!("tls_pin = \"{}\"", proxy.fingerprint)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, pinned).unwrap();
    stack.kill_agent().await.unwrap();
    stack.start_agent().await.unwrap();
    let (name, password) = user_with_password(&stack, "pinned").await;
    stack.reset_and_prove(&name, &password).await.unwrap();
}

/// An agent that falls silent without closing its connection (stopped, as a hung host or a cut
/// network would leave it) is judged gone from its missed heartbeats, so requests are answered
/// "agent unavailable" at once instead of waiting for it; once it runs again it reconnects by
/// itself and resets work.
#[tokio::test]
async fn a_silent_agent_is_judged_gone_by_its_heartbeats_and_comes_back_by_itself() {
    let stack = Stack::start().await.unwrap();
    let pid = stack.agent_pid().unwrap().to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {pid}");
    };
    signal("-STOP");
    let stopped = std::time::Instant::now();
    stack.wait_for_agent(false).await.unwrap();
    eprintln!(
        "a silent agent was judged gone after {:?}",
        stopped.elapsed()
    );
    let (name, password) = user_with_password(&stack, "silent").await;
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::AgentUnavailable);
    signal("-CONT");
    stack.wait_for_agent(true).await.unwrap();
    stack.reset_and_prove(&name, &password).await.unwrap();
}

/// Every reset is audited with its trace: the cloud's part, the relay, and the agent's lookup,
/// checks and write at the DC it used, adding up to the total; the agent's log and the cloud's
/// carry the same request id, and the CLI prints the trace.
#[tokio::test]
async fn a_resets_trace_names_every_hop_and_adds_up_to_its_total() {
    let stack = Stack::start().await.unwrap();
    let (name, _) = user_with_password(&stack, "trace").await;
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    let request_id = response.request_id.to_string();
    let page = stack
        .client
        .audit(&writeback_proto::api::AuditQuery {
            target: Some(name.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let entry = page
        .entries
        .iter()
        .find(|entry| entry.request_id.as_deref() == Some(request_id.as_str()))
        .expect("the reset is audited");
    let trace = entry.trace.as_ref().expect("the reset has a trace");
    let hops: Vec<&str> = trace.hops.iter().map(|hop| hop.hop.as_str()).collect();
    assert_eq!(
        hops,
        [
            "cloud",
            "relay",
            "agent_lookup",
            "agent_checks",
            "agent_write"
        ]
    );
    let sum: u64 = trace.hops.iter().map(|hop| hop.micros).sum();
    assert!(
        sum.abs_diff(trace.total_us) <= 1000,
        "hops {sum} µs against a total of {} µs",
        trace.total_us
    );
    assert!(trace.hops.iter().all(|hop| hop.micros > 0), "{trace:?}");
    assert_eq!(
        trace.domain_controller.as_deref(),
        Some(stack.dc.address.to_string().as_str())
    );
    assert!(stack.agent_log().contains(&request_id));
    stack.cli_login().await.unwrap();
    let cli = stack.cli(&["audit", "--target", &name]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&cli.stdout).contains("agent_write"),
        "{}",
        String::from_utf8_lossy(&cli.stdout)
    );
}

/// The cloud node the agent registered with is gone: the agent tries it, then the next node in
/// `cloud_urls`, connects there, and writeback works.
#[tokio::test]
async fn an_agent_whose_registered_cloud_node_is_gone_connects_through_another() {
    let mut stack = Stack::start().await.unwrap();
    stack.kill_agent().await.unwrap();
    let state_path = stack.work.join("agent/agent.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    // Nothing listens on the discard port.
    let gone = "https://127.0.0.1:9";
    state["cloud_url"] = gone.into();
    writeback_testkit::stack::write_private(&state_path, &state.to_string()).unwrap();
    let config = std::fs::read_to_string(stack.agent_config_path()).unwrap();
    std::fs::write(
        stack.agent_config_path(),
        format!("cloud_urls = [\"{}\"]\n{config}", stack.url()),
    )
    .unwrap();
    stack.start_agent().await.unwrap();

    let log = stack.agent_log();
    assert!(
        log.contains("cannot hold a connection to the cloud") && log.contains(gone),
        "the gone node was tried first"
    );
    let (name, old_password) = user_with_password(&stack, "othernode").await;
    stack.reset_and_prove(&name, &old_password).await.unwrap();
}

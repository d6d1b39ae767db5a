//! The portal and administrator sign-in under attack, over HTTP against the real stack (cloud,
//! agent process, Samba DC, SMTP server): one proof replayed twenty times at once, bursts of
//! fifty against every limit, portal sign-ins held below the directory's lockout, the hashing
//! pool under two hundred parallel answer checks, a flood of flows, and a client that sends its
//! body slowly.
//!
//! Each burst comes from its own client address: the cloud trusts 127.0.0.1 as a proxy here, so
//! `X-Forwarded-For` names the client, and the per-address limits of one burst do not leak into
//! the next.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use writeback_cloud::CloudConfig;
use writeback_cloud::config::RateLimit;
use writeback_testkit::Stack;
use writeback_testkit::logs::password_like;
use writeback_testkit::mail::{MailServer, code_in};
use writeback_testkit::portal::{ANSWERS, PortalClient, settings};
use writeback_testkit::stack::{ADMIN_EMAIL, StackOptions};
use writeback_testkit::web::WebClient;

/// Trusts the test's own loopback address as a proxy, so each burst names its client address.
fn behind_a_proxy(config: &mut CloudConfig) {
    config.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
}

async fn start(configure: fn(&mut CloudConfig)) -> (Stack, MailServer) {
    let work = std::env::temp_dir().join(format!(
        "writeback-attacks-mail-{}-{}",
        std::process::id(),
        writeback_testkit::logs::unique_user("")
    ));
    let mail = MailServer::start(&work).await.unwrap();
    let stack = Stack::start_with(StackOptions {
        smtp_port: Some(mail.port),
        configure_cloud: Some(configure),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    (stack, mail)
}

/// The form fields of a proof: a code, or the three answers.
fn proof_fields<'a>(
    csrf: &'a str,
    code: Option<&'a str>,
    answers: &[&'a str],
) -> Vec<(&'a str, &'a str)> {
    let mut fields = vec![("csrf", csrf)];
    if let Some(code) = code {
        fields.push(("code", code));
    }
    for (index, answer) in answers.iter().enumerate() {
        fields.push((["answer_0", "answer_1", "answer_2"][index], answer));
    }
    fields
}

/// How many audit entries record `action` ending in `result` for `target`.
async fn audited(stack: &Stack, target: &str, action: &str, result: &str) -> usize {
    stack
        .client
        .audit(&writeback_cli::AuditQuery {
            target: Some(target.to_owned()),
            operation: Some(action.to_owned()),
            limit: Some(1000),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap()
        .entries
        .iter()
        .filter(|entry| {
            entry.result_code == result
                && entry
                    .target
                    .as_deref()
                    .is_some_and(|entry_target| entry_target.eq_ignore_ascii_case(target))
        })
        .count()
}

/// A new user with `methods_required` set in the policy, signed in from `address` and with an
/// email address and the security questions registered: `(name, password, mail address,
/// their signed-in client)`.
async fn registered_user(
    stack: &Stack,
    mail: &MailServer,
    methods_required: u8,
    prefix: &str,
    address: &str,
) -> (String, String, String, PortalClient) {
    stack
        .client
        .update_self_service_settings(&settings(methods_required))
        .await
        .unwrap();
    let (name, password) = stack.user_with_password(prefix).await.unwrap();
    let mail_address = format!("{name}@mail.example.test");
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    let mut owner = PortalClient::from_address(stack, address);
    assert_eq!(
        owner.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    let registered = owner.register_email(mail, &mail_address, 1).await;
    assert_eq!(registered.status, StatusCode::SEE_OTHER);
    owner.register_questions().await;
    (name, password, mail_address, owner)
}

/// Sends the same form from `clients` all at once; the statuses, in order.
async fn all_at_once(
    clients: Vec<PortalClient>,
    path: &'static str,
    fields: Vec<(String, String)>,
) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let fields = fields.clone();
        tasks.spawn(async move {
            let borrowed: Vec<(&str, &str)> = fields
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let answer = client.send(Method::POST, path, Some(&borrowed)).await;
            (index, answer.status)
        });
    }
    let mut statuses = vec![StatusCode::OK; tasks.len()];
    while let Some(done) = tasks.join_next().await {
        let (index, status) = done.unwrap();
        statuses[index] = status;
    }
    statuses
}

fn owned(fields: &[(&str, &str)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn count(statuses: &[StatusCode], wanted: StatusCode) -> usize {
    statuses.iter().filter(|status| **status == wanted).count()
}

#[tokio::test]
async fn one_proof_sent_twenty_times_at_once_counts_once() {
    let (stack, mail) = start(behind_a_proxy).await;
    let (name, password, address, _owner) =
        registered_user(&stack, &mail, 2, "twice-", "198.51.100.10").await;

    // The same mailed code, twenty times at once, with two methods required.
    let mut attacker = PortalClient::from_address(&stack, "198.51.100.11");
    attacker.identify("reset", &name).await;
    assert_eq!(attacker.start_method("email").await, StatusCode::SEE_OTHER);
    let message = mail
        .wait_for(&address, "verification code", 1)
        .await
        .unwrap();
    let code = code_in(&message.body).unwrap();
    let csrf = attacker.csrf("/portal/verify/proof").await;
    let twins: Vec<PortalClient> = (0..20).map(|_| attacker.twin(&stack)).collect();
    let statuses = all_at_once(
        twins,
        "/portal/verify/proof",
        owned(&proof_fields(&csrf, Some(&code), &[])),
    )
    .await;
    let passed = audited(
        &stack,
        &format!("corp\\{name}"),
        "self_service_verify",
        "success",
    )
    .await;
    eprintln!(
        "20 parallel posts of one right email code: statuses {statuses:?}; proofs counted {passed}"
    );
    assert_eq!(passed, 1, "one code is one proof");
    let closed = attacker
        .send(Method::GET, "/portal/new-password", None)
        .await;
    assert_eq!(closed.status, StatusCode::SEE_OTHER);
    assert_eq!(closed.headers["location"], "/portal/verify");
    let methods = attacker.send(Method::GET, "/portal/verify", None).await;
    assert!(
        WebClient::body(&methods).contains("Step 2 of 2"),
        "{}",
        WebClient::body(&methods)
    );

    // The same right answers, twenty times at once, to unlock.
    let mut unlocker = PortalClient::from_address(&stack, "198.51.100.12");
    unlocker.identify("unlock", &name).await;
    assert_eq!(
        unlocker.start_method("security_questions").await,
        StatusCode::SEE_OTHER
    );
    let csrf = unlocker.csrf("/portal/verify/proof").await;
    let twins: Vec<PortalClient> = (0..20).map(|_| unlocker.twin(&stack)).collect();
    let statuses = all_at_once(
        twins,
        "/portal/verify/proof",
        owned(&proof_fields(&csrf, None, &ANSWERS)),
    )
    .await;
    let passed = audited(
        &stack,
        &format!("corp\\{name}"),
        "self_service_verify",
        "success",
    )
    .await;
    eprintln!(
        "20 parallel posts of the right answers: statuses {statuses:?}; proofs counted {} (1 before)",
        passed
    );
    assert_eq!(passed, 2, "the answers counted once more, not twenty times");
    let closed = unlocker
        .send(Method::GET, "/portal/new-password", None)
        .await;
    assert_eq!(closed.headers["location"], "/portal/verify");
    let csrf = unlocker.csrf("/portal/verify").await;
    let request_id = "0123456789abcdef0123456789abcdef";
    let refused = unlocker
        .send(
            Method::POST,
            "/portal/unlock",
            Some(&[("csrf", &csrf), ("request_id", request_id)]),
        )
        .await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    assert_eq!(refused.headers["location"], "/portal/verify");
    assert_eq!(stack.dc.bind_as(&name, &password).await.unwrap(), Ok(()));
}

/// Limits low enough to reach, each burst from its own address.
fn tight_limits(config: &mut CloudConfig) {
    behind_a_proxy(config);
    config.limits.proof_failures_per_account = RateLimit::new(5, 3600);
    config.limits.proof_failures_per_address = RateLimit::new(20, 3600);
    config.limits.proof_failures_global = RateLimit::new(1000, 60);
    config.limits.codes_per_account = RateLimit::new(10, 600);
    config.limits.codes_per_address = RateLimit::new(1000, 600);
    config.limits.admin_failures_per_account = RateLimit::new(5, 900);
    config.limits.admin_failures_per_address = RateLimit::new(20, 900);
}

/// `count` flows for `name` from `address`, each at the proof page of `method`.
async fn flows_at_proof(
    stack: &Stack,
    address: &str,
    name: &str,
    method: &str,
    count: usize,
) -> Vec<(PortalClient, String)> {
    let mut flows = Vec::new();
    for _ in 0..count {
        let mut client = PortalClient::from_address(stack, address);
        client.identify("reset", name).await;
        assert_eq!(client.start_method(method).await, StatusCode::SEE_OTHER);
        let csrf = client.csrf("/portal/verify/proof").await;
        flows.push((client, csrf));
    }
    flows
}

/// Posts one proof from each flow, all at once.
async fn prove_all_at_once(
    flows: Vec<(PortalClient, String)>,
    code: Option<&str>,
    answers: &[&str],
) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for (mut client, csrf) in flows {
        let code = code.map(str::to_owned);
        let answers: Vec<String> = answers.iter().map(|answer| (*answer).to_owned()).collect();
        tasks.spawn(async move {
            let answers: Vec<&str> = answers.iter().map(String::as_str).collect();
            let fields = proof_fields(&csrf, code.as_deref(), &answers);
            client
                .send(Method::POST, "/portal/verify/proof", Some(&fields))
                .await
                .status
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.unwrap());
    }
    statuses
}

#[tokio::test]
async fn fifty_parallel_attempts_get_exactly_the_limit_through() {
    let (stack, mail) = start(tight_limits).await;
    let (name, _, _, _owner) = registered_user(&stack, &mail, 1, "burst-", "198.51.100.20").await;

    // Codes sent: fifty flows for one name ask for a mail at once; ten are sent (to a name with
    // no address the "sending" is recorded all the same, so the limit cannot tell them apart).
    let flooded = format!("codes-{name}");
    let mut flows = Vec::new();
    for _ in 0..50 {
        let mut client = PortalClient::from_address(&stack, "198.51.100.21");
        client.identify("reset", &flooded).await;
        flows.push(client);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in flows {
        tasks.spawn(async move { client.start_method("email").await });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.unwrap());
    }
    let sent = audited(&stack, &flooded, "self_service_send_code", "no_address").await;
    eprintln!(
        "codes: 50 parallel requests, {sent} sent, {} refused with 429",
        count(&statuses, StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(sent, 10);
    assert_eq!(count(&statuses, StatusCode::SEE_OTHER), 10);
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 40);

    // Wrong answers: fifty flows for a name that matches nobody, at once; five are checked.
    let nobody = format!("nobody-{name}");
    let flows = flows_at_proof(&stack, "198.51.100.22", &nobody, "security_questions", 50).await;
    let statuses = prove_all_at_once(flows, None, &["wrong one", "wrong two", "wrong three"]).await;
    let checked = audited(
        &stack,
        &nobody,
        "self_service_verify",
        "invalid_verification",
    )
    .await;
    eprintln!(
        "answers: 50 parallel wrong answers, {checked} checked, {} refused with 429",
        count(&statuses, StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(checked, 5);
    assert_eq!(
        count(&statuses, StatusCode::UNPROCESSABLE_ENTITY)
            + count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        50
    );

    // Wrong codes, from one address for fifty different names: the address's twenty are checked.
    let mut flows = Vec::new();
    for index in 0..50 {
        flows.extend(
            flows_at_proof(
                &stack,
                "198.51.100.23",
                &format!("{nobody}-{index}"),
                "authenticator_app",
                1,
            )
            .await,
        );
    }
    let statuses = prove_all_at_once(flows, Some("000000"), &[]).await;
    let mut checked = 0;
    for index in 0..50 {
        checked += audited(
            &stack,
            &format!("{nobody}-{index}"),
            "self_service_verify",
            "invalid_verification",
        )
        .await;
    }
    eprintln!(
        "codes checked: 50 parallel wrong codes from one address, {checked} checked, {} refused with 429",
        count(&statuses, StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(checked, 20);
    assert_eq!(count(&statuses, StatusCode::TOO_MANY_REQUESTS), 30);

    // Administrator passwords: fifty wrong ones at once; five are checked.
    let wrong = password_like("Wrong-Admin-{unique}!");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let client = writeback_cli::ApiClient::new(
            &stack.url(),
            &writeback_tls::Trust::Pinned(stack.fingerprint),
        )
        .unwrap();
        let wrong = wrong.clone();
        tasks.spawn(async move {
            client
                .sign_in(ADMIN_EMAIL, secrecy::SecretString::from(wrong), None)
                .await
                .unwrap_err()
                .to_string()
        });
    }
    let mut refusals = Vec::new();
    while let Some(done) = tasks.join_next().await {
        refusals.push(done.unwrap());
    }
    let checked = refusals
        .iter()
        .filter(|refusal| refusal.contains("invalid_credentials"))
        .count();
    let throttled = refusals
        .iter()
        .filter(|refusal| refusal.contains("too_many_attempts"))
        .count();
    let audited_wrong = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            actor: Some(ADMIN_EMAIL.to_owned()),
            operation: Some("sign_in".into()),
            limit: Some(1000),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap()
        .entries
        .iter()
        .filter(|entry| entry.result_code == "invalid_credentials")
        .count();
    eprintln!(
        "administrator passwords: 50 parallel wrong ones, {checked} checked, {throttled} refused as too many"
    );
    assert_eq!(checked, 5);
    assert_eq!(throttled, 45);
    assert_eq!(audited_wrong, 5);
    // The right password is refused too until the window has passed: the limit holds against
    // the guesser who finally guesses right.
    let right = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap()
    .sign_in(
        ADMIN_EMAIL,
        secrecy::SecretString::from(stack.admin_password.clone()),
        Some(stack.admin_authenticator.fresh_code().await),
    )
    .await
    .unwrap_err();
    assert!(right.to_string().contains("too_many_attempts"), "{right}");
}

#[tokio::test]
async fn portal_sign_ins_stay_below_the_directory_lockout_and_never_bind_when_they_should_not() {
    let (stack, _mail) = start(tight_limits).await;
    stack.dc.grant_read_password_settings().await.unwrap();
    let (name, password) = stack.user_with_password("lockout-").await.unwrap();
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    let pso = writeback_testkit::NewPasswordSettings {
        name: writeback_testkit::logs::unique_user("pso-three-"),
        min_length: 7,
        complexity: true,
        history_length: 0,
        min_age_days: 0,
        lockout_threshold: 3,
        max_age_days: 42,
    };
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .create_password_settings(
            &pso,
            &format!(
                "CN={name},{}",
                writeback_testkit::domain_controller::STAFF_OU
            ),
        )
        .await
        .unwrap();
    stack.wait_for_lockout_threshold(3).await.unwrap();

    // Self-service off: a wrong password posted to the sign-in page never reaches the DC.
    let mut client = PortalClient::from_address(&stack, "198.51.100.30");
    let wrong = password_like("Wrong-{unique}-1!");
    let off = client.sign_in(&name, &wrong).await;
    assert_eq!(off.status, StatusCode::FORBIDDEN);
    assert_eq!(stack.dc.bad_password_count(&name).await.unwrap(), 0);

    // Unknown names, wrong passwords, and (below) a locked account: the same page, word for word.
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    let mut unknown = PortalClient::from_address(&stack, "198.51.100.31");
    let unknown_page = unknown.sign_in("no-such-person-here", &wrong).await;
    let mut known = PortalClient::from_address(&stack, "198.51.100.32");
    let known_page = known.sign_in(&name, &wrong).await;
    assert_eq!(unknown_page.status, known_page.status);
    let text = |page: &writeback_cli::RawResponse| {
        WebClient::body(page)
            .replace("no-such-person-here", "NAME")
            .replace(&name, "NAME")
            .split("name=\"csrf\" value=\"")
            .enumerate()
            .map(|(index, part)| {
                if index == 0 {
                    part.to_owned()
                } else {
                    part.split_once('"')
                        .map_or(String::new(), |(_, rest)| rest.to_owned())
                }
            })
            .collect::<String>()
    };
    assert_eq!(text(&unknown_page), text(&known_page));
    assert_eq!(stack.dc.bad_password_count(&name).await.unwrap(), 1);

    // Fifty wrong passwords at once: with a lockout threshold of 3, one more bind is allowed
    // (two in all); the DC counts two and the account is not locked.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut client = PortalClient::from_address(&stack, "198.51.100.33");
        let name = name.clone();
        let wrong = wrong.clone();
        tasks.spawn(async move { client.sign_in(&name, &wrong).await.status });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        statuses.push(done.unwrap());
    }
    let bad = stack.dc.bad_password_count(&name).await.unwrap();
    eprintln!(
        "portal sign-ins: 50 parallel wrong passwords under a lockout threshold of 3: {} refused as wrong, {} as too many; the DC counted {bad}",
        count(&statuses, StatusCode::UNAUTHORIZED),
        count(&statuses, StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(bad, 2, "Writeback alone stays below the threshold");
    assert_eq!(count(&statuses, StatusCode::UNAUTHORIZED), 1);
    assert_eq!(
        stack.dc.bind_as(&name, &password).await.unwrap(),
        Ok(()),
        "not locked out"
    );

    // A locked account with its right password reads exactly like a wrong password.
    let (locked, locked_password) = stack.user_with_password("locked-").await.unwrap();
    stack.wait_until_synced(&locked, |_| true).await.unwrap();
    stack.lock_out(&locked, &locked_password).await.unwrap();
    let mut client = PortalClient::from_address(&stack, "198.51.100.34");
    let locked_page = client.sign_in(&locked, &locked_password).await;
    assert_eq!(locked_page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        text(&locked_page).replace(&locked, "NAME"),
        text(&unknown_page)
    );
}

fn pool_under_load(config: &mut CloudConfig) {
    behind_a_proxy(config);
    config.limits.proof_failures_per_account = RateLimit::new(10_000, 3600);
    config.limits.proof_failures_per_address = RateLimit::new(10_000, 3600);
    config.limits.proof_failures_global = RateLimit::new(10_000, 60);
    config.resources.hashing_threads = 2;
    config.resources.hashing_queue = 16;
    config.resources.portal_max_flows = 1_000;
}

/// The resident memory of this process, in KiB.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn floods_stay_bounded_and_sign_nobody_out() {
    let (stack, mail) = start(pool_under_load).await;
    let (name, _, _, mut signed_in) =
        registered_user(&stack, &mail, 1, "flood-", "198.51.100.40").await;

    // Two hundred answer checks at once, each for another name: the pool runs two and queues
    // sixteen, and refuses the rest at once with "try again shortly".
    let state = stack.cloud.as_ref().unwrap().state.clone();
    let mut flows = Vec::new();
    for index in 0..200 {
        flows.extend(
            flows_at_proof(
                &stack,
                "198.51.100.41",
                &format!("hash-{index}-{name}"),
                "security_questions",
                1,
            )
            .await,
        );
    }
    let before = resident_kib();
    let started = Instant::now();
    let statuses = prove_all_at_once(flows, None, &["one", "two", "three"]).await;
    let checked = count(&statuses, StatusCode::UNPROCESSABLE_ENTITY);
    let busy = count(&statuses, StatusCode::SERVICE_UNAVAILABLE);
    eprintln!(
        "hashing: 200 parallel answer checks: {checked} checked, {busy} told to try again shortly, peak {} admitted of {} places, {:.1} s, resident memory {} KiB -> {} KiB",
        state.hashing.peak(),
        state.hashing.capacity(),
        started.elapsed().as_secs_f64(),
        before,
        resident_kib()
    );
    assert_eq!(checked + busy, 200);
    assert!(busy > 0, "the queue limit was reached");
    assert!(state.hashing.peak() <= state.hashing.capacity());

    // Ten thousand new flows: the oldest flows make room; the signed-in user stays signed in.
    let csrf = signed_in.csrf("/portal/identify").await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..10 {
        let mut client = signed_in.twin(&stack);
        let csrf = csrf.clone();
        tasks.spawn(async move {
            for index in 0..1_000 {
                let answer = client
                    .send(
                        Method::POST,
                        "/portal/identify",
                        Some(&[
                            ("csrf", &csrf),
                            ("purpose", "reset"),
                            ("account", &format!("flood-{worker}-{index}")),
                        ]),
                    )
                    .await;
                assert_eq!(answer.status, StatusCode::SEE_OTHER);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let (flows, sessions) = state
        .portal
        .counts(writeback_proto::time::UnixMillis::now())
        .await;
    eprintln!("10,000 identify requests: {flows} flows and {sessions} sessions held");
    assert!(flows <= 1_000);
    let account = signed_in.send(Method::GET, "/portal/account", None).await;
    assert_eq!(account.status, StatusCode::OK, "still signed in");
}

fn slow_clients_cut(config: &mut CloudConfig) {
    config.resources.body_timeout_seconds = 2;
}

#[tokio::test]
async fn a_client_that_sends_its_body_slowly_is_cut_off() {
    let stack = Stack::start_with(StackOptions {
        configure_cloud: Some(slow_clients_cut),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut stream = writeback_testkit::web::tls_stream(&stack).await.unwrap();
    stream
        .write_all(
            b"POST /api/v1/sessions HTTP/1.1\r\nHost: writeback\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // One byte every half second would take half an hour; the server gives up after two seconds.
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => {
                let read = read.unwrap_or(0);
                if read == 0 {
                    break;
                }
                answer.extend_from_slice(&buffer[..read]);
            }
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if stream.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
        // A hang guard, far above the timeout: the test fails rather than waits for ever.
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the slow body was never cut"
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    eprintln!(
        "slow body: cut after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_too_slow"), "{answer}");
}

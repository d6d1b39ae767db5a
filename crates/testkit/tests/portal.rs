//! The self-service portal in headless Chromium against the real stack (cloud, agent process,
//! Samba DC) and a real SMTP server, with a screenshot of every page in
//! `target/test-artifacts/screenshots/portal/`; and the portal's defences at the HTTP level:
//! enumeration, CSRF, rate limits and expiry.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use writeback_cloud::service::totp;
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_proto::time::UnixMillis;
use writeback_testkit::Stack;
use writeback_testkit::browser::Browser;
use writeback_testkit::logs::{password_like, remember_secret, strong_password};
use writeback_testkit::mail::{MailServer, code_in};
use writeback_testkit::portal::{PortalClient, settings};
use writeback_testkit::sms::SmsProvider;
use writeback_testkit::stack::{ADMIN_EMAIL, StackOptions};
use writeback_testkit::web::WebClient;

async fn start() -> (Stack, MailServer) {
    let work = std::env::temp_dir().join(format!("writeback-portal-mail-{}", std::process::id()));
    let mail = MailServer::start(&work).await.unwrap();
    let stack = Stack::start_with(StackOptions {
        smtp_port: Some(mail.port),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    (stack, mail)
}

/// A code for a step after `used` that the server accepts now.
fn fresh_code(secret: &[u8], used: &mut u64) -> String {
    let step = totp::step_at(UnixMillis::now()).max(*used + 1);
    *used = step;
    totp::code_at_step(secret, step)
}

async fn title(browser: &Browser) -> String {
    browser.text("#title").await.unwrap().unwrap_or_default()
}

async fn notice(browser: &Browser) -> String {
    browser.text("#notice").await.unwrap().unwrap_or_default()
}

async fn sign_in(browser: &Browser, url: &str, name: &str, password: &str) {
    browser
        .goto(&format!("{url}/portal/sign-in"))
        .await
        .unwrap();
    browser.fill("#account", name).await.unwrap();
    browser.fill("#password", password).await.unwrap();
    browser.press("#submit").await.unwrap();
}

/// Types `password` twice on a new-password or change page and submits it.
async fn submit_new_password(browser: &Browser, password: &str) {
    browser.fill("#new_password", password).await.unwrap();
    browser.fill("#confirm_password", password).await.unwrap();
    browser.press("#submit").await.unwrap();
}

/// Registers `address` on the signed-in account page with the code mailed to it.
async fn register_email(browser: &Browser, mail: &MailServer, address: &str) {
    browser.fill("#email", address).await.unwrap();
    browser.press("#add-email").await.unwrap();
    let message = mail
        .wait_for(address, "Confirm your email", 1)
        .await
        .unwrap();
    browser
        .fill("#email-code", &code_in(&message.body).unwrap())
        .await
        .unwrap();
    browser.press("#confirm-email").await.unwrap();
}

/// Starts a reset or unlock for `name` and proves it with the methods given, in order.
async fn identify(browser: &Browser, url: &str, purpose: &str, name: &str) {
    browser
        .goto(&format!("{url}/portal/identify?purpose={purpose}"))
        .await
        .unwrap();
    browser.fill("#account", name).await.unwrap();
    browser.press("#next").await.unwrap();
}

async fn prove_by_email(browser: &Browser, mail: &MailServer, address: &str, index: usize) {
    browser.press("#method-email").await.unwrap();
    let message = mail
        .wait_for(address, "verification code", index)
        .await
        .unwrap();
    let code = code_in(&message.body).expect("a code in the mail");
    browser.fill("#code", &code).await.unwrap();
    browser.press("#verify").await.unwrap();
}

#[tokio::test]
async fn every_portal_flow_runs_to_its_end_in_a_real_browser_and_lands_in_the_directory() {
    let (stack, mail) = start().await;
    let url = stack.url();
    stack
        .client
        .update_self_service_settings(&settings(2))
        .await
        .unwrap();
    let (name, password) = stack.user_with_password("portal-").await.unwrap();
    let address = format!("{name}@mail.example.test");
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    stack.wait_for_password_policy().await.unwrap();
    let browser = Browser::launch("portal").await.unwrap();

    browser.goto(&format!("{url}/portal")).await.unwrap();
    assert_eq!(title(&browser).await, "What do you need?");
    browser.screenshot("home").await.unwrap();

    // A wrong password is refused in the same words as an unknown name.
    let wrong = password_like("Wrong-{unique}-1!");
    sign_in(&browser, &url, &name, &wrong).await;
    assert_eq!(
        notice(&browser).await,
        "The user name or password is not correct."
    );
    browser.screenshot("sign-in-refused").await.unwrap();
    sign_in(&browser, &url, "nobody-at-all", &wrong).await;
    assert_eq!(
        notice(&browser).await,
        "The user name or password is not correct."
    );

    // Sign in (pass-through to the DC) and register three methods.
    sign_in(&browser, &url, &name, &password).await;
    assert!(browser.url().await.unwrap().ends_with("/portal/account"));
    assert!(browser.text("#no-methods").await.unwrap().is_some());
    browser.screenshot("account-empty").await.unwrap();

    browser.fill("#email", &address).await.unwrap();
    browser.press("#add-email").await.unwrap();
    browser.screenshot("account-email-code").await.unwrap();
    let message = mail
        .wait_for(&address, "Confirm your email", 1)
        .await
        .unwrap();
    let code = code_in(&message.body).unwrap();
    browser.fill("#email-code", &code).await.unwrap();
    browser.press("#confirm-email").await.unwrap();
    assert!(browser.page_text().await.unwrap().contains(&address));

    browser.press("#add-authenticator").await.unwrap();
    browser.screenshot("authenticator").await.unwrap();
    let key = browser.text("#manual-key").await.unwrap().unwrap();
    remember_secret(&key.replace(' ', ""));
    let secret = totp::decode_base32(&key.replace(' ', "")).unwrap();
    let mut used_step = 0;
    browser.fill("#code", "000000").await.unwrap();
    browser.press("#confirm").await.unwrap();
    assert!(notice(&browser).await.contains("not right"));
    browser
        .fill("#code", &fresh_code(&secret, &mut used_step))
        .await
        .unwrap();
    browser.press("#confirm").await.unwrap();

    browser.press("#add-questions").await.unwrap();
    browser.screenshot("questions").await.unwrap();
    for (slot, answer) in ["Rex the dog", "Springfield", "Volvo"].iter().enumerate() {
        browser
            .evaluate(&format!(
                "document.getElementById('question-{slot}').value = '{slot}'"
            ))
            .await
            .unwrap();
        browser
            .fill(&format!("#answer-{slot}"), answer)
            .await
            .unwrap();
    }
    browser.press("#save").await.unwrap();
    let account_text = browser.page_text().await.unwrap();
    for label in ["Email", "Authenticator app", "Security questions"] {
        assert!(
            account_text.contains(label),
            "{label} registered: {account_text}"
        );
    }
    browser.screenshot("account-registered").await.unwrap();
    browser.press("#sign-out").await.unwrap();

    // Forgot password: email code, then the authenticator, then a refused password with its
    // reason, then one that lands.
    identify(&browser, &url, "reset", &name).await;
    browser.screenshot("methods").await.unwrap();
    prove_by_email(&browser, &mail, &address, 1).await;
    browser.screenshot("methods-second-step").await.unwrap();
    browser.press("#method-authenticator_app").await.unwrap();
    browser.screenshot("proof-authenticator").await.unwrap();
    browser
        .fill("#code", &fresh_code(&secret, &mut used_step))
        .await
        .unwrap();
    browser.press("#verify").await.unwrap();
    assert_eq!(title(&browser).await, "Choose a new password");
    let checklist = browser.text("#checklist").await.unwrap().unwrap();
    assert!(checklist.contains("At least 7 characters"), "{checklist}");
    assert!(checklist.contains("bans (Contoso)"), "{checklist}");
    // The live checklist judges with the server's own lists: a common password with digits and
    // symbols around it (the server says, as the lists are too large to send), then a banned
    // word (the page knows).
    let ticked = |rule: &'static str| {
        let browser = &browser;
        async move {
            browser
                .attribute(&format!("[data-rule=\"{rule}\"]"), "class")
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    let ticked_once_answered = |rule: &'static str, expected: &'static str| {
        let ticked = &ticked;
        async move {
            let mut shown = String::new();
            for _ in 0..100 {
                shown = ticked(rule).await;
                if shown == expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            shown
        }
    };
    browser.fill("#new_password", "Dragon2024!").await.unwrap();
    assert_eq!(ticked_once_answered("not-common", "unmet").await, "unmet");
    assert_eq!(ticked("not-banned").await, "met");
    browser
        .fill("#new_password", "Contoso-Harbour-71")
        .await
        .unwrap();
    assert_eq!(ticked_once_answered("not-common", "met").await, "met");
    assert_eq!(ticked("not-banned").await, "unmet");
    browser.screenshot("new-password-typing").await.unwrap();
    // The page shows the server's own strength judgement (zxcvbn, with the person's words) for
    // each password typed, and ticks the rule by it.
    let words = browser
        .attribute("[data-rule=\"no-name\"]", "data-argument")
        .await
        .unwrap()
        .unwrap_or_default();
    let words: Vec<&str> = words.split(',').filter(|word| !word.is_empty()).collect();
    for typed in [
        "abc",
        "Aaaa1111!",
        "Tr0ub4dor&3",
        "jdoe2026!",
        "correct horse battery staple",
        "Harbour-Violet-73",
    ] {
        browser.fill("#new_password", typed).await.unwrap();
        let server = writeback_cloud::service::self_service::checks::strength(typed, &words).score;
        let mut shown = None;
        for _ in 0..100 {
            shown = browser
                .attribute("[data-rule=\"strength\"]", "data-score")
                .await
                .unwrap();
            if shown.as_deref() == Some(server.to_string().as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(shown, Some(server.to_string()), "{typed}");
        let expected = if server >= 2 { "met" } else { "unmet" };
        assert_eq!(ticked("strength").await, expected, "{typed}");
    }
    let advice = browser
        .text("[data-rule=\"strength\"] .feedback")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(advice.contains("Strength 4 of 4"), "{advice}");
    browser
        .fill("#new_password", "Contoso-Harbour-71")
        .await
        .unwrap();
    let banned = remember_secret("Contoso-Harbour-71");
    browser.fill("#confirm_password", &banned).await.unwrap();
    browser.press("#submit").await.unwrap();
    assert!(
        notice(&browser).await.contains("not allowed"),
        "{}",
        notice(&browser).await
    );
    browser.screenshot("new-password-refused").await.unwrap();
    let short = password_like("A1-{unique}")
        .chars()
        .take(5)
        .collect::<String>();
    remember_secret(&short);
    submit_new_password(&browser, &short).await;
    assert!(
        notice(&browser).await.contains("at least 7 characters"),
        "{}",
        notice(&browser).await
    );
    assert_eq!(
        stack.dc.bind_as(&name, &password).await.unwrap(),
        Ok(()),
        "nothing changed"
    );
    let new_password = strong_password();
    submit_new_password(&browser, &new_password).await;
    assert_eq!(title(&browser).await, "Your password was changed");
    browser.screenshot("reset-done").await.unwrap();
    stack
        .dc
        .assert_password_replaced(&name, &new_password, &password)
        .await
        .unwrap();
    mail.wait_for(&address, "Your password was changed", 1)
        .await
        .unwrap();

    // Unlock without reset, with the security questions.
    stack.lock_out(&name, &new_password).await.unwrap();
    identify(&browser, &url, "unlock", &name).await;
    browser.press("#method-security_questions").await.unwrap();
    browser.screenshot("proof-questions").await.unwrap();
    for (slot, answer) in ["REX, the dog!", "springfield", "volvo"].iter().enumerate() {
        browser
            .fill(&format!("#answer-{slot}"), answer)
            .await
            .unwrap();
    }
    browser.press("#verify").await.unwrap();
    prove_by_email(&browser, &mail, &address, 2).await;
    assert_eq!(title(&browser).await, "Unlock your account");
    browser.screenshot("unlock").await.unwrap();
    browser.press("#submit").await.unwrap();
    assert_eq!(title(&browser).await, "Your account is unlocked");
    browser.screenshot("unlock-done").await.unwrap();
    assert_eq!(
        stack.dc.bind_as(&name, &new_password).await.unwrap(),
        Ok(())
    );

    // Unlocking again: done, and the page says there was nothing to unlock.
    identify(&browser, &url, "unlock", &name).await;
    browser.press("#method-security_questions").await.unwrap();
    for (slot, answer) in ["REX, the dog!", "springfield", "volvo"].iter().enumerate() {
        browser
            .fill(&format!("#answer-{slot}"), answer)
            .await
            .unwrap();
    }
    browser.press("#verify").await.unwrap();
    prove_by_email(&browser, &mail, &address, 3).await;
    browser.press("#submit").await.unwrap();
    assert_eq!(title(&browser).await, "Your account was not locked");
    browser.screenshot("unlock-not-locked").await.unwrap();

    // Signed-in change: a wrong current password is refused, then a real change.
    sign_in(&browser, &url, &name, &new_password).await;
    browser.press("#change").await.unwrap();
    let changed = strong_password();
    browser.fill("#current_password", &wrong).await.unwrap();
    submit_new_password(&browser, &changed).await;
    assert!(
        notice(&browser)
            .await
            .contains("current password is not correct"),
        "{}",
        notice(&browser).await
    );
    browser.screenshot("change-refused").await.unwrap();
    browser
        .fill("#current_password", &new_password)
        .await
        .unwrap();
    submit_new_password(&browser, &changed).await;
    assert_eq!(title(&browser).await, "Your password was changed");
    stack
        .dc
        .assert_password_replaced(&name, &changed, &new_password)
        .await
        .unwrap();
    mail.wait_for(&address, "Your password was changed", 2)
        .await
        .unwrap();

    // An administrator's reset with "must change": every administrator and the user are told,
    // and the portal sends the user straight to the change page.
    let temporary = strong_password();
    stack.reset(&name, &temporary, true, false).await.unwrap();
    mail.wait_for(ADMIN_EMAIL, "Password reset by an administrator", 1)
        .await
        .unwrap();
    mail.wait_for(&address, "Your password was changed", 3)
        .await
        .unwrap();
    sign_in(&browser, &url, &name, &temporary).await;
    assert!(browser.url().await.unwrap().ends_with("/portal/change"));
    assert!(notice(&browser).await.contains("must be changed"));
    browser.screenshot("must-change").await.unwrap();
    let chosen = strong_password();
    browser.fill("#current_password", &temporary).await.unwrap();
    submit_new_password(&browser, &chosen).await;
    assert_eq!(title(&browser).await, "Your password was changed");
    assert_eq!(stack.dc.bind_as(&name, &chosen).await.unwrap(), Ok(()));

    // Every step is in the audit log.
    let entries = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            actor: Some(format!("self-service: corp\\{name}")),
            limit: Some(500),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap()
        .entries;
    for action in [
        "self_service_identify",
        "self_service_send_code",
        "self_service_verify",
        "self_service_register",
        "verify_password",
        "reset_password",
        "unlock",
        "change_password",
    ] {
        assert!(
            entries.iter().any(|entry| entry.action == action),
            "{action} audited"
        );
    }

    // At rest: the data directory and the database files are the service's alone, and none of
    // them holds an authenticator key (the administrator's or the user's), a password, an
    // answer or a one-time code.
    let data = stack.work.join("cloud");
    let mut stored = Vec::new();
    assert_eq!(mode(&data), 0o700);
    for file in ["writeback.db", "writeback.db-wal", "writeback.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{file}");
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(stored.len() > 10_000, "the database was read");
    let mut secrets: Vec<Vec<u8>> = vec![
        secret.clone(),
        key.replace(' ', "").into_bytes(),
        stack.admin_authenticator.key.clone(),
        totp::base32(&stack.admin_authenticator.key).into_bytes(),
    ];
    for text in [
        &password,
        &new_password,
        &changed,
        &temporary,
        &chosen,
        &stack.admin_password,
        "Rex the dog",
        "rex the dog",
        "Springfield",
        "springfield",
    ] {
        secrets.push(text.as_bytes().to_vec());
    }
    for (index, secret) in secrets.iter().enumerate() {
        assert!(
            !stored
                .windows(secret.len())
                .any(|window| window == secret.as_slice()),
            "secret {index} is readable in the database files"
        );
    }
    let mut codes = vec![code.clone()];
    for index in 1..=2 {
        let message = mail
            .wait_for(&address, "verification code", index)
            .await
            .unwrap();
        codes.push(code_in(&message.body).unwrap());
    }
    for code in &codes {
        let found = stored.windows(code.len() + 2).any(|window| {
            &window[1..=code.len()] == code.as_bytes()
                && !window[0].is_ascii_alphanumeric()
                && !window[code.len() + 1].is_ascii_alphanumeric()
        });
        assert!(!found, "a one-time code is readable in the database files");
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_phone_is_registered_and_a_password_reset_with_texted_codes_through_the_provider() {
    let work = std::env::temp_dir().join(format!("writeback-portal-sms-{}", std::process::id()));
    let sms = SmsProvider::start(&work).await.unwrap();
    let stack = Stack::start_with(StackOptions {
        sms: sms.config(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let url = stack.url();
    stack
        .client
        .update_self_service_settings(&SelfServiceSettings {
            methods: vec![VerificationMethod::Sms],
            ..settings(1)
        })
        .await
        .unwrap();
    let (name, password) = stack.user_with_password("phone-").await.unwrap();
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    let browser = Browser::launch("portal-sms").await.unwrap();

    // Registration: a number without its country code is refused with how to write it, then a
    // wrong code, then the code the provider received.
    sign_in(&browser, &url, &name, &password).await;
    browser.fill("#phone", "07700 900123").await.unwrap();
    browser.press("#add-phone").await.unwrap();
    assert!(
        notice(&browser).await.contains("international format"),
        "{}",
        notice(&browser).await
    );
    browser.screenshot("phone-refused").await.unwrap();
    browser.fill("#phone", "+44 7700 900-123").await.unwrap();
    browser.press("#add-phone").await.unwrap();
    browser.screenshot("phone-code").await.unwrap();
    let number = "+447700900123";
    let text = sms.wait_for(number, 1).await.unwrap();
    assert_eq!(text.from, "Writeback");
    let code = code_in(&text.text).expect("a code in the text");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    browser.fill("#phone-code", wrong).await.unwrap();
    browser.press("#confirm-phone").await.unwrap();
    assert!(notice(&browser).await.contains("not right"));
    browser.fill("#phone-code", &code).await.unwrap();
    browser.press("#confirm-phone").await.unwrap();
    let account_text = browser.page_text().await.unwrap();
    assert!(
        account_text.contains("Mobile phone") && account_text.contains(number),
        "{account_text}"
    );
    browser.screenshot("phone-registered").await.unwrap();
    browser.press("#sign-out").await.unwrap();
    // The new phone is told of the change, with when and from where.
    let notice = sms.wait_for(number, 2).await.unwrap();
    assert!(
        notice.text.contains("Mobile phone +447700900123 was added")
            && notice.text.contains("from 127.0.0.1")
            && notice.text.contains(" UTC"),
        "{}",
        notice.text
    );

    // Forgot password with the texted code, through to a bind with the new password.
    identify(&browser, &url, "reset", &name).await;
    browser.press("#method-sms").await.unwrap();
    assert_eq!(title(&browser).await, "Enter the code we texted");
    browser.screenshot("proof-sms").await.unwrap();
    let text = sms.wait_for(number, 3).await.unwrap();
    browser
        .fill("#code", &code_in(&text.text).unwrap())
        .await
        .unwrap();
    browser.press("#verify").await.unwrap();
    assert_eq!(title(&browser).await, "Choose a new password");
    let new_password = strong_password();
    submit_new_password(&browser, &new_password).await;
    assert_eq!(title(&browser).await, "Your password was changed");
    stack
        .dc
        .assert_password_replaced(&name, &new_password, &password)
        .await
        .unwrap();

    // A provider that refuses the text: the person sees the same page (the failure is the
    // provider's, logged for the administrator) and no code from it can work.
    sms.refuse(true);
    identify(&browser, &url, "reset", &name).await;
    browser.press("#method-sms").await.unwrap();
    assert_eq!(title(&browser).await, "Enter the code we texted");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !sms.rejected().contains(&StatusCode::SERVICE_UNAVAILABLE) {
        assert!(
            Instant::now() < deadline,
            "the cloud never tried the provider"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sms.count_to(number), 3);
    assert!(
        sms.rejected()
            .iter()
            .all(|status| *status == StatusCode::SERVICE_UNAVAILABLE),
        "every request was well formed and authorised: {:?}",
        sms.rejected()
    );
}

#[tokio::test]
async fn the_clear_pages_say_why_once_the_person_has_proven_who_they_are() {
    let (mut stack, mail) = start().await;
    let url = stack.url();
    stack
        .client
        .update_self_service_settings(&settings(2))
        .await
        .unwrap();
    let browser = Browser::launch("portal-pages").await.unwrap();

    // Not enough methods: only an email registered where two methods are required.
    let (name, password) = stack.user_with_password("few-").await.unwrap();
    let address = format!("{name}@mail.example.test");
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    sign_in(&browser, &url, &name, &password).await;
    register_email(&browser, &mail, &address).await;
    identify(&browser, &url, "reset", &name).await;
    prove_by_email(&browser, &mail, &address, 1).await;
    assert_eq!(title(&browser).await, "Not enough methods registered");
    browser.screenshot("not-enough-methods").await.unwrap();

    // Disabled: proven by the email code, then told.
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    let (disabled, disabled_password) = stack.user_with_password("off-").await.unwrap();
    stack.wait_until_synced(&disabled, |_| true).await.unwrap();
    let disabled_address = format!("{disabled}@mail.example.test");
    sign_in(&browser, &url, &disabled, &disabled_password).await;
    register_email(&browser, &mail, &disabled_address).await;
    let dn = format!(
        "CN={disabled},{}",
        writeback_testkit::domain_controller::STAFF_OU
    );
    stack
        .dc
        .admin()
        .await
        .unwrap()
        .replace(&dn, "userAccountControl", "514")
        .await
        .unwrap();
    stack
        .wait_until_synced(&disabled, |user| !user.enabled)
        .await
        .unwrap();
    identify(&browser, &url, "reset", &disabled).await;
    prove_by_email(&browser, &mail, &disabled_address, 1).await;
    assert_eq!(title(&browser).await, "Your account is disabled");
    browser.screenshot("account-disabled").await.unwrap();

    // Out of scope: self-service only for a group the user is not in.
    stack
        .client
        .update_self_service_settings(&SelfServiceSettings {
            scope: SelfServiceScope::Group {
                group: "Domain Admins".into(),
            },
            ..settings(1)
        })
        .await
        .unwrap();
    // Out of scope, the portal never binds: a wrong password leaves the DC's count alone, and
    // the right one reads exactly like a wrong one.
    let bad_before = stack.dc.bad_password_count(&name).await.unwrap();
    sign_in(&browser, &url, &name, &password_like("Wrong-{unique}-1!")).await;
    assert_eq!(
        notice(&browser).await,
        "The user name or password is not correct."
    );
    sign_in(&browser, &url, &name, &password).await;
    assert_eq!(title(&browser).await, "Sign in");
    assert_eq!(
        notice(&browser).await,
        "The user name or password is not correct."
    );
    assert_eq!(
        stack.dc.bad_password_count(&name).await.unwrap(),
        bad_before,
        "no bind reached the directory"
    );
    browser.screenshot("out-of-scope").await.unwrap();

    // Too many attempts: five wrong codes, then a block for known and unknown names alike.
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    for target in [name.as_str(), "nobody-registered-here"] {
        identify(&browser, &url, "reset", target).await;
        browser.press("#method-authenticator_app").await.unwrap();
        for _ in 0..5 {
            browser.fill("#code", "123456").await.unwrap();
            browser.press("#verify").await.unwrap();
        }
        assert_eq!(title(&browser).await, "Too many attempts", "{target}");
        identify(&browser, &url, "reset", target).await;
        assert_eq!(
            title(&browser).await,
            "Too many attempts",
            "{target} stays blocked"
        );
    }
    browser.screenshot("too-many-attempts").await.unwrap();

    // Service unavailable, at once, from the health of the directory.
    let (other, other_password) = stack.user_with_password("down-").await.unwrap();
    stack.wait_until_synced(&other, |_| true).await.unwrap();
    stack.kill_agent().await.unwrap();
    stack.wait_for_agent(false).await.unwrap();
    let started = Instant::now();
    sign_in(&browser, &url, &other, &other_password).await;
    assert_eq!(
        title(&browser).await,
        "The on-premises service is unavailable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    browser.goto(&format!("{url}/portal")).await.unwrap();
    assert!(notice(&browser).await.contains("cannot be reached"));
    browser.screenshot("service-unavailable").await.unwrap();
}

/// Identifies as `name` and returns the method page.
async fn identify_over_http(client: &mut WebClient, name: &str) -> writeback_cli::RawResponse {
    let page = client
        .send(Method::GET, "/portal/identify?purpose=reset", None, &[])
        .await;
    let csrf = WebClient::csrf(&page);
    let answer = client
        .send(
            Method::POST,
            "/portal/identify",
            Some(&[("csrf", &csrf), ("purpose", "reset"), ("account", name)]),
            &[],
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SEE_OTHER,
        "{}",
        WebClient::body(&answer)
    );
    client.send(Method::GET, "/portal/verify", None, &[]).await
}

/// The page without what differs between any two visits: the CSRF tokens.
fn without_tokens(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .enumerate()
        .map(|(index, part)| {
            if index == 0 {
                part.to_owned()
            } else {
                part.split_once('"')
                    .map_or(String::new(), |(_, rest)| rest.to_owned())
            }
        })
        .collect()
}

#[tokio::test]
async fn the_portal_resists_enumeration_forgery_floods_and_stale_sessions() {
    let (stack, mail) = start().await;
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    let (name, password) = stack.user_with_password("http-").await.unwrap();
    stack.wait_until_synced(&name, |_| true).await.unwrap();

    // Headers: CSP with scripts from here only and no inline script, strict cookies.
    let mut client = WebClient::new(&stack);
    let page = client
        .send(Method::GET, "/portal/identify", None, &[])
        .await;
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(page.headers["cache-control"], "no-store");
    let cookie = page.headers["set-cookie"].to_str().unwrap();
    for attribute in ["__Host-", "Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }

    // Enumeration: an existing and an unknown account get the same pages, word for word.
    let mut known = WebClient::new(&stack);
    let mut unknown = WebClient::new(&stack);
    let known_page = identify_over_http(&mut known, &name).await;
    let unknown_page = identify_over_http(&mut unknown, "no-such-user-anywhere").await;
    assert_eq!(known_page.status, unknown_page.status);
    assert_eq!(
        without_tokens(&WebClient::body(&known_page)),
        without_tokens(&WebClient::body(&unknown_page))
    );
    for client in [&mut known, &mut unknown] {
        let csrf = WebClient::csrf(&client.send(Method::GET, "/portal/verify", None, &[]).await);
        let answer = client
            .send(
                Method::POST,
                "/portal/verify/start",
                Some(&[("csrf", &csrf), ("method", "email")]),
                &[],
            )
            .await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER);
    }
    let known_proof = known
        .send(Method::GET, "/portal/verify/proof", None, &[])
        .await;
    let unknown_proof = unknown
        .send(Method::GET, "/portal/verify/proof", None, &[])
        .await;
    assert_eq!(
        without_tokens(&WebClient::body(&known_proof)),
        without_tokens(&WebClient::body(&unknown_proof))
    );

    // CSRF: a wrong token, a cross-site post, and JSON are refused and change nothing.
    let mut forger = WebClient::new(&stack);
    let _ = forger
        .send(Method::GET, "/portal/identify", None, &[])
        .await;
    let forged = forger
        .send(
            Method::POST,
            "/portal/identify",
            Some(&[("csrf", "forged"), ("purpose", "reset"), ("account", &name)]),
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let page = forger
        .send(Method::GET, "/portal/identify", None, &[])
        .await;
    let csrf = WebClient::csrf(&page);
    let cross_site = forger
        .send(
            Method::POST,
            "/portal/identify",
            Some(&[("csrf", &csrf), ("purpose", "reset"), ("account", &name)]),
            &[("sec-fetch-site", "cross-site".into())],
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let signed_in_forgery = forger
        .send(
            Method::POST,
            "/portal/sign-in",
            Some(&[
                ("csrf", "forged"),
                ("account", &name),
                ("password", &password),
            ]),
            &[],
        )
        .await;
    assert_eq!(signed_in_forgery.status, StatusCode::FORBIDDEN);

    // Stale or made-up flows: the session has ended, nothing else.
    let mut stale = WebClient::new(&stack);
    stale
        .cookies
        .push(("__Host-writeback-portal-flow".into(), "wbf_made_up".into()));
    let ended = stale.send(Method::GET, "/portal/verify", None, &[]).await;
    assert_eq!(ended.status, StatusCode::GONE);

    // The mail limit: ten codes in ten minutes, then a block, for a name with no address too.
    let mut flood = WebClient::new(&stack);
    identify_over_http(&mut flood, "flooded-nobody").await;
    let mut statuses = Vec::new();
    for _ in 0..11 {
        let csrf = WebClient::csrf(&flood.send(Method::GET, "/portal/verify", None, &[]).await);
        let answer = flood
            .send(
                Method::POST,
                "/portal/verify/start",
                Some(&[("csrf", &csrf), ("method", "email")]),
                &[],
            )
            .await;
        statuses.push(answer.status);
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(statuses.len(), 11, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));
    assert_eq!(mail.count_to("flooded-nobody").unwrap(), 0);
}

#[tokio::test]
async fn the_sms_sender_hands_texts_over_https_and_reports_a_refusal_without_the_text() {
    use writeback_cloud::outbound::sms::SmsSender;
    use writeback_cloud::service::notify::TextMessage;
    let work = std::env::temp_dir().join(format!("writeback-sms-sender-{}", std::process::id()));
    let sms = SmsProvider::start(&work).await.unwrap();
    let text = TextMessage {
        to: "+15550109999".into(),
        body: "Your code is 424242.".into(),
    };

    let sender = SmsSender::from_config(&sms.config()).unwrap().unwrap();
    sender.send(&text).await.unwrap();
    assert_eq!(
        sms.texts(),
        vec![writeback_testkit::sms::ReceivedText {
            to: "+15550109999".into(),
            from: "Writeback".into(),
            text: "Your code is 424242.".into(),
        }]
    );

    let wrong_token = work.join("wrong-token");
    writeback_config::write_private_file(&wrong_token, b"not-the-token").unwrap();
    let failure = |config: writeback_cloud::config::SmsConfig| {
        let text = text.clone();
        async move {
            SmsSender::from_config(&config)
                .unwrap()
                .unwrap()
                .send(&text)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let refused = failure(writeback_cloud::config::SmsConfig {
        token_file: Some(wrong_token),
        ..sms.config()
    })
    .await;
    assert!(refused.contains("HTTP 401"), "{refused}");
    assert!(!refused.contains("424242"), "{refused}");
    assert_eq!(sms.rejected(), vec![StatusCode::UNAUTHORIZED]);

    // A provider whose certificate the configured authority did not issue is never sent a text.
    let other = writeback_tls::LocalCertificateAuthority::generate("Another authority").unwrap();
    let other_ca = work.join("other-ca.pem");
    std::fs::write(&other_ca, other.certificate_pem()).unwrap();
    let untrusted = failure(writeback_cloud::config::SmsConfig {
        ca_file: Some(other_ca),
        ..sms.config()
    })
    .await;
    assert!(untrusted.contains("TLS"), "{untrusted}");
    assert_eq!(sms.texts().len(), 1);
}

/// Posts to every step after identification, as a flow that has not earned them: each answer
/// must send the person back (a redirect to an earlier step) or refuse, and never be the step.
async fn every_later_step_refuses(client: &mut PortalClient, csrf: &str, wanted_back: &str) {
    let request_id = "00112233445566778899aabbccddeeff";
    let password = password_like("Never-Set-{unique}-9!");
    for (method, path, form) in [
        (Method::GET, "/portal/new-password", None),
        (
            Method::POST,
            "/portal/new-password",
            Some(vec![
                ("csrf", csrf),
                ("request_id", request_id),
                ("new_password", password.as_str()),
                ("confirm_password", password.as_str()),
            ]),
        ),
        (
            Method::POST,
            "/portal/unlock",
            Some(vec![("csrf", csrf), ("request_id", request_id)]),
        ),
    ] {
        let answer = client.send(method.clone(), path, form.as_deref()).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{method} {path}");
        assert_eq!(WebClient::location(&answer), wanted_back, "{method} {path}");
    }
}

#[tokio::test]
async fn no_step_opens_before_the_one_before_it_is_earned() {
    let (stack, mail) = start().await;
    let (name, password) = stack.user_with_password("steps-").await.unwrap();
    let address = format!("{name}@mail.example.test");
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    let mut owner = PortalClient::new(&stack);
    assert_eq!(
        owner.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        owner.register_email(&mail, &address, 1).await.status,
        StatusCode::SEE_OTHER
    );
    owner.register_questions().await;
    let mut codes_mailed = 0;

    for required in [1u8, 2] {
        stack
            .client
            .update_self_service_settings(&settings(required))
            .await
            .unwrap();
        for purpose in ["reset", "unlock"] {
            // Identified only: no proof page without a challenge, nothing after it.
            let mut client = PortalClient::new(&stack);
            client.identify(purpose, &name).await;
            let csrf = WebClient::csrf(&client.send(Method::GET, "/portal/verify", None).await);
            let proof = client
                .send(
                    Method::POST,
                    "/portal/verify/proof",
                    Some(&[("csrf", &csrf), ("code", "123456")]),
                )
                .await;
            assert_eq!(WebClient::location(&proof), "/portal/verify");
            let shown = client.send(Method::GET, "/portal/verify/proof", None).await;
            assert_eq!(WebClient::location(&shown), "/portal/verify");
            every_later_step_refuses(&mut client, &csrf, "/portal/verify").await;

            // One proof where two are required: still nothing after it.
            if required == 2 {
                codes_mailed += 1;
                client.prove_by_email(&mail, &address, codes_mailed).await;
                every_later_step_refuses(&mut client, &csrf, "/portal/verify").await;
            }
        }
    }

    // A reset proven in full does not unlock, and an unlock does not set a password: each is
    // sent back to its own final page.
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    for purpose in ["reset", "unlock"] {
        let mut client = PortalClient::new(&stack);
        client.identify(purpose, &name).await;
        codes_mailed += 1;
        client.prove_by_email(&mail, &address, codes_mailed).await;
        let csrf = WebClient::csrf(&client.send(Method::GET, "/portal/new-password", None).await);
        let request_id = "00112233445566778899aabbccddeeff";
        let wrong_password = password_like("Wrong-Door-{unique}-7!");
        let answer = if purpose == "reset" {
            client
                .send(
                    Method::POST,
                    "/portal/unlock",
                    Some(&[("csrf", &csrf), ("request_id", request_id)]),
                )
                .await
        } else {
            client
                .send(
                    Method::POST,
                    "/portal/new-password",
                    Some(&[
                        ("csrf", &csrf),
                        ("request_id", request_id),
                        ("new_password", &wrong_password),
                        ("confirm_password", &wrong_password),
                    ]),
                )
                .await
        };
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{purpose}");
        assert_eq!(
            WebClient::location(&answer),
            "/portal/new-password",
            "{purpose}"
        );
    }

    // Without a session, a flow cookie opens none of the signed-in steps.
    let mut flow_only = PortalClient::new(&stack);
    flow_only.identify("reset", &name).await;
    let csrf = WebClient::csrf(&flow_only.send(Method::GET, "/portal/verify", None).await);
    let change = flow_only.send(Method::GET, "/portal/change", None).await;
    assert_eq!(WebClient::location(&change), "/portal/sign-in");
    for path in [
        "/portal/change",
        "/portal/account/email",
        "/portal/account/phone",
        "/portal/account/code",
        "/portal/account/authenticator",
        "/portal/account/questions",
        "/portal/account/remove",
        "/portal/account/confirm-identity",
        "/portal/account/confirm-identity/proof",
    ] {
        let answer = flow_only
            .send(Method::POST, path, Some(&[("csrf", &csrf)]))
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
    }

    // Signed in again later, without a fresh proof: no method can be added, replaced or removed.
    let mut later = PortalClient::new(&stack);
    assert_eq!(
        later.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    let page = later.send(Method::GET, "/portal/account", None).await;
    assert!(WebClient::body(&page).contains("first confirm it is you"));
    let csrf = WebClient::csrf(&page);
    let other_address = format!("other-{address}");
    for (path, fields) in [
        (
            "/portal/account/email",
            vec![("csrf", csrf.as_str()), ("email", other_address.as_str())],
        ),
        (
            "/portal/account/phone",
            vec![("csrf", csrf.as_str()), ("phone", "+447700900999")],
        ),
        (
            "/portal/account/remove",
            vec![("csrf", csrf.as_str()), ("method", "email")],
        ),
        (
            "/portal/account/code",
            vec![("csrf", csrf.as_str()), ("code", "123456")],
        ),
    ] {
        let answer = later.send(Method::POST, path, Some(&fields)).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
        assert!(
            WebClient::body(&answer).contains("first confirm it is you"),
            "{path}"
        );
    }
    for path in ["/portal/account/authenticator", "/portal/account/questions"] {
        let answer = later.send(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{path}");
    }
    let step_up = later
        .send(
            Method::POST,
            "/portal/account/confirm-identity/proof",
            Some(&[("csrf", &csrf), ("code", "123456")]),
        )
        .await;
    assert_eq!(
        WebClient::location(&step_up),
        "/portal/account",
        "no challenge to answer"
    );
    assert_eq!(mail.count_to(&other_address).unwrap(), 0);

    // Nothing changed anywhere: the password, and the one method.
    assert_eq!(stack.dc.bind_as(&name, &password).await.unwrap(), Ok(()));
    let account = later.send(Method::GET, "/portal/account", None).await;
    assert!(WebClient::body(&account).contains(&address));
}

#[tokio::test]
async fn changing_methods_needs_a_fresh_proof_and_every_address_is_told() {
    let (stack, mail) = start().await;
    stack
        .client
        .update_self_service_settings(&settings(1))
        .await
        .unwrap();
    let (name, password) = stack.user_with_password("change-").await.unwrap();
    let first = format!("{name}@mail.example.test");
    let second = format!("{name}@second.example.test");
    stack.wait_until_synced(&name, |_| true).await.unwrap();

    // The first method needs only the directory password.
    let mut client = PortalClient::new(&stack);
    assert_eq!(
        client.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        client.register_email(&mail, &first, 1).await.status,
        StatusCode::SEE_OTHER
    );
    let added = mail
        .wait_for(&first, "Your self-service methods changed", 1)
        .await
        .unwrap();
    assert!(
        added.body.contains(&format!("Email {first} was added")),
        "{}",
        added.body
    );

    // A later session must prove the registered address before replacing it.
    let mut later = PortalClient::new(&stack);
    assert_eq!(
        later.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    let refused = later.register_email(&mail, &second, 1).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        mail.count_to(&second).unwrap(),
        0,
        "no code went to the new address"
    );
    let csrf = WebClient::csrf(&later.send(Method::GET, "/portal/account", None).await);
    let started = later
        .send(
            Method::POST,
            "/portal/account/confirm-identity",
            Some(&[("csrf", &csrf), ("method", "email")]),
        )
        .await;
    assert_eq!(
        WebClient::location(&started),
        "/portal/account/confirm-identity"
    );
    let code = code_in(
        &mail
            .wait_for(&first, "verification code", 1)
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = later
        .send(
            Method::POST,
            "/portal/account/confirm-identity/proof",
            Some(&[("csrf", &csrf), ("code", wrong)]),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let proved = later
        .send(
            Method::POST,
            "/portal/account/confirm-identity/proof",
            Some(&[("csrf", &csrf), ("code", &code)]),
        )
        .await;
    assert_eq!(proved.status, StatusCode::OK);
    assert!(WebClient::body(&proved).contains("For the next 10 minutes"));
    assert_eq!(
        later.register_email(&mail, &second, 1).await.status,
        StatusCode::SEE_OTHER
    );

    // Both the old and the new address hear of it, with when and from where.
    for address in [&first, &second] {
        let index = if address == &first { 2 } else { 1 };
        let told = mail
            .wait_for(address, "Your self-service methods changed", index)
            .await
            .unwrap();
        assert!(
            told.body.contains(&format!(
                "Email {second} replaced the one registered before"
            )) && told.body.contains("from 127.0.0.1")
                && told.body.contains(" UTC"),
            "{address}: {}",
            told.body
        );
    }

    // An administrator clears the methods of someone who lost them: the address is told, and
    // the person registers anew with the password alone.
    let cleared = stack
        .client
        .clear_self_service_methods(&stack.directory, &name)
        .await
        .unwrap();
    assert_eq!(cleared.removed, 1);
    let told = mail
        .wait_for(&second, "Your self-service methods changed", 2)
        .await
        .unwrap();
    assert!(
        told.body.contains("removed by an administrator"),
        "{}",
        told.body
    );
    let mut fresh = PortalClient::new(&stack);
    assert_eq!(
        fresh.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        fresh.register_email(&mail, &first, 2).await.status,
        StatusCode::SEE_OTHER
    );
}

/// The strength endpoint the page asks while the user types: JSON only, bounded input, and a
/// burst of the costliest passwords gets answers (a score, or "busy" from the bounded pool), never
/// an error or a hang.
#[tokio::test]
async fn the_strength_endpoint_takes_only_bounded_json_and_stays_bounded_under_a_burst() {
    let stack = Stack::start().await.unwrap();
    // Each request on a connection of its own, so that a burst really runs at once.
    let (url, fingerprint) = (stack.url(), stack.fingerprint);
    let ask = move |content_type: Option<&'static str>, body: String| {
        let url = url.clone();
        async move {
            writeback_cli::ApiClient::new(&url, &writeback_tls::Trust::Pinned(fingerprint))
                .unwrap()
                .send(
                    Method::POST,
                    "/portal/strength",
                    content_type,
                    body.into_bytes(),
                    &[],
                )
                .await
                .unwrap()
        }
    };
    let json = Some("application/json");
    let answer = ask(
        json,
        r#"{"password": "Harbour-Violet-73", "words": ["jdoe"]}"#.into(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let judged: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(judged["score"], 4);
    assert_eq!(judged["listed"], false);
    let common = ask(json, r#"{"password": "Dragon2024!"}"#.into()).await;
    let judged: serde_json::Value = serde_json::from_slice(&common.body).unwrap();
    assert_eq!(judged["listed"], true, "{judged}");
    assert_eq!(
        answer
            .headers
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap(),
        "no-store"
    );
    let refused = [
        (
            Some("text/plain"),
            r#"{"password": "x"}"#.to_owned(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (json, "not json".to_owned(), StatusCode::BAD_REQUEST),
        (
            json,
            r#"{"password": "x", "extra": 1}"#.to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json,
            serde_json::json!({ "password": "x", "words": vec!["w"; 21] }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json,
            serde_json::json!({ "password": "x", "words": ["w".repeat(65)] }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (content_type, body, status) in refused {
        assert_eq!(
            ask(content_type, body.clone()).await.status,
            status,
            "{body}"
        );
    }
    // The costliest input zxcvbn is given: 64 characters with no pattern, the rest ignored.
    let crafted: String = (0..2000)
        .map(|index| char::from(b'!' + (index * 7 % 90) as u8))
        .collect();
    let burst = (0..64)
        .map(|_| {
            let body = serde_json::json!({ "password": crafted.clone() }).to_string();
            tokio::spawn(ask.clone()(json, body))
        })
        .collect::<Vec<_>>();
    let mut scored = 0;
    for answer in burst {
        let answer = answer.await.unwrap();
        match answer.status {
            StatusCode::OK => scored += 1,
            StatusCode::SERVICE_UNAVAILABLE => {}
            other => panic!("{other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    assert!(scored > 0, "at least the pool's share is answered");
}

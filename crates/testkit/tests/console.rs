//! The admin console in headless Chromium against the real stack (cloud, agent process, Samba
//! DC), with a screenshot of every page in `target/test-artifacts/screenshots/console/`; and the
//! console's defences at the HTTP level: CSRF, content types, cookies, headers, codes used once,
//! throttled second factors.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use secrecy::SecretString;
use writeback_cloud::service::totp;
use writeback_proto::api::{SelfServiceScope, SelfServiceSettings, VerificationMethod};
use writeback_proto::time::UnixMillis;
use writeback_testkit::Stack;
use writeback_testkit::browser::Browser;
use writeback_testkit::domain_controller::STAFF_OU;
use writeback_testkit::logs::{password_like, remember_secret, strong_password};
use writeback_testkit::stack::ADMIN_EMAIL;

/// The administrator who walks through the console, enrolling an authenticator there.
const CONSOLE_ADMIN: &str = "console-admin@example.test";
use writeback_testkit::web::WebClient;

/// A code for a step after `used` (the step of the last accepted code) that the server accepts
/// now: the current step, or the next one when the current one is used.
fn fresh_code(secret: &[u8], used: &mut u64) -> String {
    let step = totp::step_at(UnixMillis::now()).max(*used + 1);
    *used = step;
    totp::code_at_step(secret, step)
}

/// The text of `#outcome` and the request id it names.
async fn outcome(browser: &Browser) -> (String, String, String) {
    let text = browser
        .text("#outcome")
        .await
        .unwrap()
        .expect("an outcome banner");
    let result = browser
        .attribute("#outcome", "data-result")
        .await
        .unwrap()
        .unwrap();
    let request_id = text
        .split("Request ")
        .nth(1)
        .map(|rest| rest.trim_end_matches('.').trim().to_owned())
        .expect("the banner names the request");
    (text, result, request_id)
}

async fn assert_audited_by_request(stack: &Stack, request_id: &str, operation: &str, result: &str) {
    let page = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            request_id: Some(request_id.to_owned()),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(
        page.entries.iter().any(|entry| entry.action == operation
            && entry.actor == CONSOLE_ADMIN
            && entry.result_code == result
            && entry.origin.as_deref() == Some("127.0.0.1")),
        "no audit entry for request {request_id}: {:?}",
        page.entries
    );
}

#[tokio::test]
async fn an_administrator_runs_writeback_from_the_console() {
    let stack = Stack::start().await.unwrap();
    // An administrator created on the cloud's host, who sets up an authenticator at first
    // sign-in in the console.
    let console_password = strong_password();
    writeback_cloud::create_administrator(
        &stack.cloud.as_ref().unwrap().state.store,
        CONSOLE_ADMIN,
        &SecretString::from(console_password.clone()),
    )
    .await
    .unwrap();
    let url = stack.url();
    let (name, old_password) = stack.user_with_password("console").await.unwrap();
    let group = format!("{name}-team");
    {
        let mut admin = stack.dc.admin().await.unwrap();
        let group_dn = admin.create_group(&group, STAFF_OU).await.unwrap();
        admin
            .add_member(&group_dn, &format!("CN={name},{STAFF_OU}"))
            .await
            .unwrap();
    }
    let browser = Browser::launch("console").await.unwrap();

    // Signed out, every page leads to the sign-in page.
    browser
        .goto(&format!("{url}/console/agents"))
        .await
        .unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console/sign-in"));
    browser.screenshot("sign-in").await.unwrap();

    browser.fill("#email", CONSOLE_ADMIN).await.unwrap();
    browser
        .fill("#password", &password_like("Not-The-Admin-{unique}!"))
        .await
        .unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(
        browser
            .page_text()
            .await
            .unwrap()
            .contains("The email or password is not correct.")
    );
    assert_eq!(
        browser
            .attribute("#email", "value")
            .await
            .unwrap()
            .as_deref(),
        Some(CONSOLE_ADMIN),
        "the email is kept"
    );
    browser.screenshot("sign-in-refused").await.unwrap();

    // First sign-in: the password, then enrolment of an authenticator.
    browser.fill("#password", &console_password).await.unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(
        browser
            .url()
            .await
            .unwrap()
            .ends_with("/console/sign-in/enrol")
    );
    let key = browser.text("#manual-key").await.unwrap().unwrap();
    remember_secret(&key.replace(' ', ""));
    let secret = totp::decode_base32(&key).expect("the key is base32");
    assert_eq!(secret.len(), totp::SECRET_BYTES);
    assert!(
        browser
            .attribute("img.qr", "src")
            .await
            .unwrap()
            .unwrap()
            .starts_with("data:image/svg+xml;base64,")
    );
    browser.screenshot("enrol-authenticator").await.unwrap();
    let mut used_step = 0;
    let right = fresh_code(&secret, &mut used_step);
    let wrong = format!(
        "{:06}",
        (right.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    browser.fill("#code", &wrong).await.unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(
        browser
            .page_text()
            .await
            .unwrap()
            .contains("That code does not match")
    );
    browser.screenshot("enrol-wrong-code").await.unwrap();
    browser.fill("#code", &right).await.unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console"));

    // Overview: the directory's health, once the agent has reported the directory reachable.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = browser
            .attribute("#directory-corp [data-health]", "data-health")
            .await
            .unwrap();
        if health.as_deref() == Some("healthy") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "corp never showed healthy: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        browser.goto(&format!("{url}/console")).await.unwrap();
    }
    assert!(browser.page_text().await.unwrap().contains("1 of 1"));
    browser.screenshot("overview").await.unwrap();

    // Users: search, then the user's page.
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    browser
        .goto(&format!("{url}/console/users?directory=corp&q={name}"))
        .await
        .unwrap();
    let link = browser
        .attribute("#users tbody a", "href")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link, format!("/console/directories/corp/users/{name}"));
    browser.screenshot("users-search").await.unwrap();
    browser.goto(&format!("{url}{link}")).await.unwrap();
    let state = browser.text("#account-state").await.unwrap().unwrap();
    assert!(
        state.contains("enabled") && !state.contains("locked"),
        "{state}"
    );
    assert!(browser.page_text().await.unwrap().contains(&group));
    browser.screenshot("user").await.unwrap();

    // A reset the directory refuses shows the reason, and changes nothing.
    let too_short = remember_secret("Ab1!x");
    browser.fill("#new_password", &too_short).await.unwrap();
    browser.fill("#confirm_password", &too_short).await.unwrap();
    browser.press("#reset").await.unwrap();
    let (text, result, request_id) = outcome(&browser).await;
    assert_eq!(result, "policy_violation", "{text}");
    assert!(text.contains("too short"), "{text}");
    assert_audited_by_request(&stack, &request_id, "reset_password", "policy_violation").await;
    assert_eq!(
        stack.dc.bind_as(&name, &old_password).await.unwrap(),
        Ok(())
    );
    browser.screenshot("reset-refused").await.unwrap();

    // Two different passwords are caught before anything is sent.
    browser
        .fill("#new_password", &strong_password())
        .await
        .unwrap();
    browser
        .fill("#confirm_password", &strong_password())
        .await
        .unwrap();
    browser.press("#reset").await.unwrap();
    let (text, result, _) = outcome(&browser).await;
    assert_eq!(result, "passwords_differ", "{text}");
    assert_eq!(
        stack.dc.bind_as(&name, &old_password).await.unwrap(),
        Ok(())
    );

    // Then a reset that works: the new password binds, the old one no longer does.
    let new_password = strong_password();
    browser.fill("#new_password", &new_password).await.unwrap();
    browser
        .fill("#confirm_password", &new_password)
        .await
        .unwrap();
    browser
        .set_checked("input[name=must_change]", false)
        .await
        .unwrap();
    browser.press("#reset").await.unwrap();
    let (text, result, request_id) = outcome(&browser).await;
    assert_eq!(result, "success", "{text}");
    assert!(text.contains("The password was reset"), "{text}");
    assert_audited_by_request(&stack, &request_id, "reset_password", "success").await;
    stack
        .dc
        .assert_password_replaced(&name, &new_password, &old_password)
        .await
        .unwrap();
    browser.screenshot("reset-done").await.unwrap();

    // A locked account shows as locked once synced, and the console unlocks it.
    stack.lock_out(&name, &new_password).await.unwrap();
    stack
        .wait_until_synced(&name, |user| user.locked_out)
        .await
        .unwrap();
    browser.goto(&format!("{url}{link}")).await.unwrap();
    assert!(
        browser
            .text("#account-state")
            .await
            .unwrap()
            .unwrap()
            .contains("locked out")
    );
    browser.screenshot("user-locked").await.unwrap();
    browser.press("#unlock").await.unwrap();
    let (text, result, request_id) = outcome(&browser).await;
    assert_eq!(result, "success", "{text}");
    assert_audited_by_request(&stack, &request_id, "unlock", "success").await;
    assert_eq!(
        stack.dc.bind_as(&name, &new_password).await.unwrap(),
        Ok(())
    );
    browser.screenshot("unlocked").await.unwrap();
    // Unlocking again is done, and the page says there was nothing to unlock.
    browser.press("#unlock").await.unwrap();
    let (text, result, _) = outcome(&browser).await;
    assert_eq!(result, "success", "{text}");
    let warning = browser
        .text("[data-warning=\"was_not_locked\"]")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(warning.contains("was not locked out"), "{warning}");

    // Groups, and a group's members.
    browser
        .goto(&format!("{url}/console/groups?directory=corp&q={group}"))
        .await
        .unwrap();
    assert!(
        browser
            .text("#groups")
            .await
            .unwrap()
            .unwrap()
            .contains(&group)
    );
    browser.screenshot("groups").await.unwrap();
    let members = browser
        .attribute("#groups tbody a", "href")
        .await
        .unwrap()
        .unwrap();
    browser.goto(&format!("{url}{members}")).await.unwrap();
    assert!(
        browser
            .text("#users")
            .await
            .unwrap()
            .unwrap()
            .contains(&name)
    );
    browser.screenshot("group-members").await.unwrap();

    // Agents: the connected one, a new registration token.
    browser
        .goto(&format!("{url}/console/agents"))
        .await
        .unwrap();
    let agent_row = format!("#agent-{}", stack.agent_id);
    let row = browser.text(&agent_row).await.unwrap().unwrap();
    assert!(
        row.contains("Connected") && row.contains("127.0.0.1"),
        "{row}"
    );
    browser.screenshot("agents").await.unwrap();
    browser.fill("#directory", "branch").await.unwrap();
    browser
        .press("form[action='/console/agents/register'] button")
        .await
        .unwrap();
    let token = browser.text("#registration-token").await.unwrap().unwrap();
    assert!(token.starts_with("wbr_"), "{token}");
    remember_secret(&token);
    assert!(
        browser
            .page_text()
            .await
            .unwrap()
            .contains(&stack.fingerprint.to_string())
    );
    browser.screenshot("registration-token").await.unwrap();

    // Settings: audit retention.
    browser
        .goto(&format!("{url}/console/settings"))
        .await
        .unwrap();
    assert_eq!(
        browser.evaluate("document.title").await.unwrap(),
        "Settings · Writeback console"
    );
    assert_eq!(
        browser
            .evaluate("document.querySelectorAll('#self-service').length")
            .await
            .unwrap(),
        1,
        "the self-service form appears once"
    );
    browser
        .set_checked("input[value=days]", true)
        .await
        .unwrap();
    browser
        .fill("input[name=retention_days]", "400")
        .await
        .unwrap();
    browser
        .press("form[action='/console/settings/audit'] button")
        .await
        .unwrap();
    assert!(
        browser
            .text("#notice")
            .await
            .unwrap()
            .unwrap()
            .contains("400 days")
    );
    assert_eq!(
        stack.client.audit_settings().await.unwrap().retention_days,
        Some(400)
    );
    browser.screenshot("settings").await.unwrap();
    browser
        .set_checked("input[name=scope][value=everyone]", true)
        .await
        .unwrap();
    browser
        .set_checked("input[name=method_sms]", true)
        .await
        .unwrap();
    browser.press("#self-service button").await.unwrap();
    assert!(
        browser
            .text("#notice")
            .await
            .unwrap()
            .unwrap()
            .contains("self-service settings apply"),
        "{}",
        browser.page_text().await.unwrap()
    );
    let self_service = stack.client.self_service_settings().await.unwrap();
    assert_eq!(self_service.scope, SelfServiceScope::Everyone);
    assert!(self_service.methods.contains(&VerificationMethod::Sms));
    browser.screenshot("self-service-settings").await.unwrap();

    // The audit log, filtered: this session's resets, refused and done.
    browser
        .goto(&format!(
            "{url}/console/audit?operation=reset_password&target={name}"
        ))
        .await
        .unwrap();
    let log = browser.text("#audit").await.unwrap().unwrap();
    assert!(
        log.contains("policy_violation") && log.contains("success"),
        "{log}"
    );
    assert!(
        !log.contains("unlock\t"),
        "the filter keeps only resets: {log}"
    );
    assert_eq!(
        browser
            .attribute("#export-csv", "href")
            .await
            .unwrap()
            .as_deref(),
        Some(
            format!("/console/audit/export?format=csv&target={name}&operation=reset_password")
                .as_str()
        )
    );
    browser.screenshot("audit-log").await.unwrap();

    // Revoking the agent disconnects it at once.
    browser
        .goto(&format!("{url}/console/agents"))
        .await
        .unwrap();
    browser
        .set_checked(&format!("{agent_row} input[name=confirm]"), true)
        .await
        .unwrap();
    browser
        .press(&format!("{agent_row} button.danger"))
        .await
        .unwrap();
    assert!(
        browser
            .text("#notice")
            .await
            .unwrap()
            .unwrap()
            .contains("revoked")
    );
    stack.wait_for_agent(false).await.unwrap();
    assert!(
        browser
            .text(&agent_row)
            .await
            .unwrap()
            .unwrap()
            .contains("Revoked")
    );
    browser.screenshot("agent-revoked").await.unwrap();

    // Signing out ends the session; signing in again asks for the code, once enrolled.
    browser.press("header form button").await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console/sign-in"));
    browser.goto(&format!("{url}/console")).await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console/sign-in"));
    browser.fill("#email", CONSOLE_ADMIN).await.unwrap();
    browser.fill("#password", &console_password).await.unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(
        browser
            .url()
            .await
            .unwrap()
            .ends_with("/console/sign-in/code")
    );
    browser.fill("#code", &right).await.unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(
        browser.page_text().await.unwrap().contains("already used"),
        "the enrolment code does not work twice"
    );
    browser.screenshot("second-factor-refused").await.unwrap();
    browser
        .fill("#code", &fresh_code(&secret, &mut used_step))
        .await
        .unwrap();
    browser.press("button[type=submit]").await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console"));
    browser.screenshot("signed-in-again").await.unwrap();

    let screenshots = std::fs::read_dir(browser.screenshot_directory())
        .unwrap()
        .count();
    assert!(screenshots >= 20, "{screenshots} screenshots");
}

/// The console's HTTP answers, with the console's two sign-in steps.
struct ConsoleClient(WebClient);

impl std::ops::Deref for ConsoleClient {
    type Target = WebClient;
    fn deref(&self) -> &WebClient {
        &self.0
    }
}

impl std::ops::DerefMut for ConsoleClient {
    fn deref_mut(&mut self) -> &mut WebClient {
        &mut self.0
    }
}

impl ConsoleClient {
    fn new(stack: &Stack) -> Self {
        Self(WebClient::new(stack))
    }

    /// The password step: the path of the code page it leads to and that page's CSRF token.
    async fn enter_password(&mut self, email: &str, password: &str) -> (String, String) {
        let page = self.send(Method::GET, "/console/sign-in", None, &[]).await;
        let csrf = WebClient::csrf(&page);
        let after_password = self
            .send(
                Method::POST,
                "/console/sign-in",
                Some(&[("csrf", &csrf), ("email", email), ("password", password)]),
                &[],
            )
            .await;
        assert_eq!(
            after_password.status,
            StatusCode::SEE_OTHER,
            "{}",
            WebClient::body(&after_password)
        );
        let code_path = WebClient::location(&after_password);
        let code_page = self.send(Method::GET, &code_path, None, &[]).await;
        (code_path, WebClient::csrf(&code_page))
    }

    /// Password, then code; returns the final answer.
    async fn sign_in(
        &mut self,
        email: &str,
        password: &str,
        code: &str,
    ) -> writeback_cli::RawResponse {
        let (code_path, csrf) = self.enter_password(email, password).await;
        self.send(
            Method::POST,
            &code_path,
            Some(&[("csrf", &csrf), ("code", code)]),
            &[],
        )
        .await
    }
}

/// A new administrator with an authenticator the test holds, sealed into the store as the
/// cloud itself would: `(password, TOTP secret)`.
async fn enrolled_administrator(stack: &Stack, email: &str) -> (String, Vec<u8>) {
    let state = &stack.cloud.as_ref().unwrap().state;
    let password = strong_password();
    writeback_cloud::create_administrator(
        &state.store,
        email,
        &SecretString::from(password.clone()),
    )
    .await
    .unwrap();
    let administrator = state
        .store
        .administrator_by_email(email)
        .await
        .unwrap()
        .unwrap();
    let secret = totp::new_secret().unwrap();
    let sealed = state
        .secrets
        .seal(
            writeback_store::SecretOwner::Administrator {
                id: administrator.id,
            },
            &secret,
        )
        .unwrap();
    state
        .store
        .enrol_totp(administrator.id, &sealed, 0)
        .await
        .unwrap();
    (password, secret.to_vec())
}

#[tokio::test]
async fn the_console_refuses_forged_replayed_and_malformed_requests() {
    let stack = Stack::start().await.unwrap();
    let store = stack.cloud.as_ref().unwrap().state.store.clone();
    // A second administrator whose authenticator the test holds, enrolled directly.
    let email = "second@example.test";
    let (password, secret) = enrolled_administrator(&stack, email).await;
    let mut used_step = 0;

    let mut console = ConsoleClient::new(&stack);
    let page = console
        .send(Method::GET, "/console/sign-in", None, &[])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let headers = &page.headers;
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("default-src 'none'") && !policy.contains("script-src"),
        "{policy}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let cookie = headers["set-cookie"].to_str().unwrap();
    for attribute in ["__Host-", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }

    // Signed out: pages redirect, unknown pages are HTML 404s.
    let agents = console
        .send(Method::GET, "/console/agents", None, &[])
        .await;
    assert_eq!(agents.status, StatusCode::SEE_OTHER);
    assert_eq!(WebClient::location(&agents), "/console/sign-in");
    let missing = console
        .send(Method::GET, "/console/nothing-here", None, &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(WebClient::body(&missing).contains("no such page"));

    // A sign-in form without the token of this browser's cookie is refused, and audits nothing.
    let everything = writeback_store::AuditFilter {
        limit: 10_000,
        ..Default::default()
    };
    let before = store.audit_entries(&everything).await.unwrap().len();
    let forged = console
        .send(
            Method::POST,
            "/console/sign-in",
            Some(&[
                ("csrf", "forged"),
                ("email", email),
                ("password", &password),
            ]),
            &[],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(
        store.audit_entries(&everything).await.unwrap().len(),
        before
    );

    // Sign in: password and a code.
    let code = fresh_code(&secret, &mut used_step);
    let signed_in = console.sign_in(email, &password, &code).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        WebClient::body(&signed_in)
    );
    assert_eq!(WebClient::location(&signed_in), "/console");
    let agents_page = console
        .send(Method::GET, "/console/agents", None, &[])
        .await;
    assert_eq!(agents_page.status, StatusCode::OK);
    let csrf = WebClient::csrf(&agents_page);

    // A signed-in form with a wrong token, the wrong content type, from another site, or too
    // large: refused, and no token is issued.
    let tokens_issued = || async {
        store
            .audit_entries(&writeback_store::AuditFilter {
                action: Some("create_registration_token".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    };
    let issued_before = tokens_issued().await;
    let register = "/console/agents/register";
    let wrong_token = console
        .send(
            Method::POST,
            register,
            Some(&[("csrf", "x"), ("directory", "evil")]),
            &[],
        )
        .await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    let cross_site = console
        .send(
            Method::POST,
            register,
            Some(&[("csrf", &csrf), ("directory", "evil")]),
            &[("sec-fetch-site", "cross-site".into())],
        )
        .await;
    assert_eq!(cross_site.status, StatusCode::FORBIDDEN);
    let json = console
        .client
        .send(
            Method::POST,
            register,
            Some("application/json"),
            format!("{{\"csrf\":\"{csrf}\",\"directory\":\"evil\"}}").into_bytes(),
            &[(
                "cookie",
                console
                    .cookies
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )],
        )
        .await
        .unwrap();
    assert_eq!(json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = "x".repeat(100 * 1024);
    let too_large = console
        .send(
            Method::POST,
            register,
            Some(&[("csrf", &csrf), ("directory", &huge)]),
            &[],
        )
        .await;
    assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
    let unknown_field = console
        .send(
            Method::POST,
            register,
            Some(&[("csrf", &csrf), ("directory", "evil"), ("admin", "1")]),
            &[],
        )
        .await;
    assert_eq!(unknown_field.status, StatusCode::BAD_REQUEST);
    assert_eq!(tokens_issued().await, issued_before, "nothing was issued");

    // The same form with its token works.
    let issued = console
        .send(
            Method::POST,
            register,
            Some(&[("csrf", &csrf), ("directory", "branch")]),
            &[],
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED);
    remember_secret(
        WebClient::body(&issued)
            .split("id=\"registration-token\">")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .unwrap(),
    );
    assert_eq!(tokens_issued().await, issued_before + 1);

    // Revoking needs the confirmation box.
    let unconfirmed = console
        .send(
            Method::POST,
            "/console/agents/revoke",
            Some(&[("csrf", &csrf), ("agent_id", &stack.agent_id.to_string())]),
            &[],
        )
        .await;
    assert_eq!(unconfirmed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(stack.agent_connected(), "nothing was revoked");

    // The audit export, as a file.
    let csv = console
        .send(
            Method::GET,
            "/console/audit/export?format=csv&operation=create_registration_token",
            None,
            &[],
        )
        .await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv_text = WebClient::body(&csv);
    assert!(
        csv_text.starts_with("id,time,actor,operation"),
        "{csv_text}"
    );
    assert!(
        csv_text.contains("second@example.test,create_registration_token,branch"),
        "{csv_text}"
    );
    let json = console
        .send(
            Method::GET,
            "/console/audit/export?format=json&actor=second",
            None,
            &[],
        )
        .await;
    let page: writeback_proto::api::AuditPage = serde_json::from_slice(&json.body).unwrap();
    assert!(page.entries.iter().all(|entry| entry.actor == email));

    // Sign out: the session cookie no longer opens anything, even replayed by hand.
    let session_cookies = console.cookies.clone();
    let signed_out = console
        .send(
            Method::POST,
            "/console/sign-out",
            Some(&[("csrf", &csrf)]),
            &[],
        )
        .await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    console.cookies = session_cookies;
    let after = console
        .send(Method::GET, "/console/agents", None, &[])
        .await;
    assert_eq!(after.status, StatusCode::SEE_OTHER);

    // A code is used once: the same code again is refused.
    let mut replay = ConsoleClient::new(&stack);
    let refused = replay.sign_in(email, &password, &code).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(WebClient::body(&refused).contains("already used"));

    // The API wants the code too, once one is enrolled.
    let api = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap();
    let missing_code = api
        .sign_in(email, SecretString::from(password.clone()), None)
        .await
        .unwrap_err();
    assert!(
        missing_code.to_string().contains("second_factor_required"),
        "{missing_code}"
    );
    let session = api
        .sign_in(
            email,
            SecretString::from(password.clone()),
            Some(fresh_code(&secret, &mut used_step)),
        )
        .await
        .unwrap();
    remember_secret(secrecy::ExposeSecret::expose_secret(&session.token));

    // Five wrong codes end the challenge; then even the right code is refused for a while, in
    // the console and through the API alike.
    let mut guesser = ConsoleClient::new(&stack);
    let (code_path, csrf) = guesser.enter_password(email, &password).await;
    let right_now = totp::code_at(&secret, UnixMillis::now());
    let wrong_code = format!(
        "{:06}",
        (right_now.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    let mut last = None;
    for _ in 0..writeback_cloud::service::administrator_sign_in::MAX_CHALLENGE_FAILURES {
        last = Some(
            guesser
                .send(
                    Method::POST,
                    &code_path,
                    Some(&[("csrf", &csrf), ("code", &wrong_code)]),
                    &[],
                )
                .await,
        );
    }
    let last = last.unwrap();
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(WebClient::body(&last).contains("Too many wrong codes"));
    let throttled = api
        .sign_in(
            email,
            SecretString::from(password.clone()),
            Some(fresh_code(&secret, &mut used_step)),
        )
        .await
        .unwrap_err();
    assert!(
        throttled.to_string().contains("too_many_attempts"),
        "{throttled}"
    );

    // An administrator without an authenticator gets no session from the API: they enrol
    // first, and the enrolment's challenge opens nothing by itself.
    let newcomer = "newcomer@example.test";
    let newcomer_password = strong_password();
    writeback_cloud::create_administrator(
        &stack.cloud.as_ref().unwrap().state.store,
        newcomer,
        &SecretString::from(newcomer_password.clone()),
    )
    .await
    .unwrap();
    let refused = api
        .sign_in(
            newcomer,
            SecretString::from(newcomer_password.clone()),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("second_factor_enrolment_required"),
        "{refused}"
    );
    let enrolment = api
        .begin_enrolment(newcomer, SecretString::from(newcomer_password.clone()))
        .await
        .unwrap();
    let challenge = secrecy::ExposeSecret::expose_secret(&enrolment.challenge).to_owned();
    remember_secret(&challenge);
    remember_secret(secrecy::ExposeSecret::expose_secret(&enrolment.key));
    let mut bearer = ConsoleClient::new(&stack);
    bearer
        .cookies
        .push(("__Host-writeback-console".into(), challenge.clone()));
    let refused = bearer.send(Method::GET, "/console/agents", None, &[]).await;
    assert_eq!(refused.status, StatusCode::SEE_OTHER);
    let as_token = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap()
    .with_token(SecretString::from(challenge));
    assert!(
        as_token
            .agents()
            .await
            .unwrap_err()
            .to_string()
            .contains("session_expired"),
        "a challenge is no session"
    );
    let key = totp::decode_base32(secrecy::ExposeSecret::expose_secret(&enrolment.key)).unwrap();
    let now_code = totp::code_at(&key, UnixMillis::now());
    let wrong = format!(
        "{:06}",
        (now_code.parse::<u32>().unwrap() + 500_000) % 1_000_000
    );
    let wrong_answer = api
        .answer_challenge(&enrolment.challenge, &wrong)
        .await
        .unwrap_err();
    assert!(
        wrong_answer.to_string().contains("invalid_second_factor"),
        "{wrong_answer}"
    );
    let session = api
        .answer_challenge(&enrolment.challenge, &now_code)
        .await
        .unwrap();
    remember_secret(secrecy::ExposeSecret::expose_secret(&session.token));
    let enrolled = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap()
    .with_token(session.token);
    assert!(enrolled.agents().await.is_ok());
}

#[tokio::test]
async fn the_self_service_policy_is_edited_through_the_api_the_cli_and_the_console() {
    let stack = Stack::start().await.unwrap();
    let defaults = stack.client.self_service_settings().await.unwrap();
    assert_eq!(
        defaults.scope,
        SelfServiceScope::Nobody,
        "off until turned on"
    );

    // Through the API: a policy with mistakes is refused whole, naming each, and nothing is stored.
    let wrong = SelfServiceSettings {
        scope: SelfServiceScope::Group {
            group: String::new(),
        },
        methods_required: 2,
        methods: vec![VerificationMethod::Email],
        ..SelfServiceSettings::default()
    };
    let refused = stack
        .client
        .update_self_service_settings(&wrong)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("Name the group") && refused.contains("2 methods are required"),
        "{refused}"
    );
    assert_eq!(
        stack.client.self_service_settings().await.unwrap(),
        defaults
    );

    // Through the CLI: only what is named changes.
    stack.cli_login().await.unwrap();
    let questions = stack.work.join("questions.txt");
    std::fs::write(
        &questions,
        "Your first pet?\nThe street you grew up on?\nYour first teacher?\n",
    )
    .unwrap();
    let questions = questions.display().to_string();
    let output = stack
        .cli(&[
            "settings",
            "self-service",
            "--scope",
            "group:Staff",
            "--methods",
            "email,security_questions",
            "--methods-required",
            "2",
            "--questions-file",
            &questions,
            "--banned-words",
            "contoso,writeback",
        ])
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("members of Staff") && shown.contains("email, security_questions"),
        "{shown}"
    );
    let stored = stack.client.self_service_settings().await.unwrap();
    assert_eq!(
        stored.scope,
        SelfServiceScope::Group {
            group: "Staff".into()
        }
    );
    assert_eq!(stored.security_questions.len(), 3);
    assert_eq!(stored.banned_words, ["contoso", "writeback"]);
    assert_eq!(
        stored.minimum_strength, defaults.minimum_strength,
        "untouched"
    );

    // Through the console, as an administrator with an authenticator.
    let email = "third@example.test";
    let (password, secret) = enrolled_administrator(&stack, email).await;
    let mut console = ConsoleClient::new(&stack);
    let mut used_step = 0;
    let code = fresh_code(&secret, &mut used_step);
    let signed_in = console.sign_in(email, &password, &code).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let page = console
        .send(Method::GET, "/console/settings", None, &[])
        .await;
    let body = WebClient::body(&page);
    assert!(
        body.contains("Your first pet?") && body.contains("value=\"Staff\""),
        "the form shows the stored policy"
    );
    let csrf = WebClient::csrf(&page);
    let form = |helpdesk: &'static str| {
        vec![
            ("scope", "everyone"),
            ("group", ""),
            ("method_email", "on"),
            ("method_authenticator_app", "on"),
            ("methods_required", "1"),
            ("security_questions", ""),
            ("questions_asked", "3"),
            ("unlock_without_reset", "on"),
            ("writeback_enabled", "on"),
            ("banned_words", "contoso\r\nfabrikam"),
            ("minimum_strength", "3"),
            ("helpdesk", helpdesk),
            ("reconfirm_days", "90"),
            ("notify_user_on_reset", "on"),
        ]
    };
    let mut refused_form = form("http://help.example.test");
    refused_form.push(("csrf", &csrf));
    let refused = console
        .send(
            Method::POST,
            "/console/settings/self-service",
            Some(&refused_form),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = WebClient::body(&refused);
    assert!(
        body.contains("https://") && body.contains("Nothing was changed"),
        "{body}"
    );
    assert!(
        body.contains("fabrikam"),
        "the refused form comes back as sent"
    );
    assert_eq!(stack.client.self_service_settings().await.unwrap(), stored);

    let mut accepted_form = form("Call the IT helpdesk on 1234.");
    accepted_form.push(("csrf", &csrf));
    let accepted = console
        .send(
            Method::POST,
            "/console/settings/self-service",
            Some(&accepted_form),
            &[],
        )
        .await;
    assert_eq!(
        accepted.status,
        StatusCode::OK,
        "{}",
        WebClient::body(&accepted)
    );
    let saved = stack.client.self_service_settings().await.unwrap();
    assert_eq!(saved.scope, SelfServiceScope::Everyone);
    assert_eq!(
        saved.methods,
        [
            VerificationMethod::Email,
            VerificationMethod::AuthenticatorApp
        ]
    );
    assert_eq!(saved.banned_words, ["contoso", "fabrikam"]);
    assert_eq!(saved.minimum_strength, 3);
    assert_eq!(saved.reconfirm_days, 90);
    assert!(saved.notify_user_on_reset && !saved.notify_admins_on_admin_reset);
    assert_eq!(saved.helpdesk, "Call the IT helpdesk on 1234.");

    // Each change is audited with who made it and what changed.
    let audit = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            operation: Some("update_settings".into()),
            target: Some("self_service".into()),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap();
    let by_console = audit
        .entries
        .iter()
        .find(|entry| entry.actor == email)
        .expect("the console's change");
    let detail = by_console.detail.as_deref().unwrap();
    assert!(
        detail.contains("scope") && detail.contains("helpdesk"),
        "{detail}"
    );
    assert!(
        audit.entries.iter().any(|entry| entry.actor == ADMIN_EMAIL),
        "the CLI's change"
    );
    assert_eq!(
        audit.entries.len(),
        2,
        "refused changes store nothing: {:?}",
        audit.entries
    );
}

/// Whether `email` is listed as enabled, through the API.
async fn listed_enabled(stack: &Stack, email: &str) -> Option<bool> {
    stack
        .client
        .administrators()
        .await
        .unwrap()
        .administrators
        .into_iter()
        .find(|administrator| administrator.email == email)
        .map(|administrator| administrator.enabled)
}

#[tokio::test]
async fn administrators_are_managed_from_the_api_the_cli_and_the_console_but_never_the_last() {
    let stack = Stack::start().await.unwrap();
    let colleague = "colleague@example.test";
    let (password, secret) = enrolled_administrator(&stack, colleague).await;
    let mut used_step = 0;
    let colleague_api = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap();
    let session = colleague_api
        .sign_in(
            colleague,
            SecretString::from(password.clone()),
            Some(fresh_code(&secret, &mut used_step)),
        )
        .await
        .unwrap();
    remember_secret(secrecy::ExposeSecret::expose_secret(&session.token));
    let colleague_api = colleague_api.with_token(session.token);
    assert!(colleague_api.agents().await.is_ok());

    // The API lists both, with the colleague's open session.
    let listed = stack.client.administrators().await.unwrap().administrators;
    let entry = listed
        .iter()
        .find(|administrator| administrator.email == colleague)
        .unwrap();
    assert!(entry.enabled && entry.second_factor);
    assert_eq!(entry.sessions, 1);

    // The API disables the colleague: their session ends at once and they cannot sign in.
    let disabled = stack
        .client
        .change_administrator(colleague, writeback_cli::AdministratorAction::Disable)
        .await
        .unwrap();
    assert!(disabled.changed);
    assert_eq!(disabled.sessions_ended, 1);
    assert!(colleague_api.agents().await.is_err(), "the session ended");
    let refused = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap()
    .sign_in(
        colleague,
        SecretString::from(password.clone()),
        // Refused at the password already: the code is never looked at.
        Some("000000".into()),
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("invalid_credentials"),
        "{refused}"
    );
    assert_eq!(listed_enabled(&stack, colleague).await, Some(false));

    // The CLI enables them again, lists them and ends their sessions.
    stack.cli_login().await.unwrap();
    let enabled = stack
        .cli(&["administrators", "enable", colleague])
        .await
        .unwrap();
    assert!(enabled.status.success(), "{enabled:?}");
    assert_eq!(listed_enabled(&stack, colleague).await, Some(true));
    let list = stack.cli(&["administrators"]).await.unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    assert!(
        listing.contains(colleague) && listing.contains(ADMIN_EMAIL),
        "{listing}"
    );
    let signed_in_again = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap()
    .sign_in(
        colleague,
        SecretString::from(password.clone()),
        Some(fresh_code(&secret, &mut used_step)),
    )
    .await
    .unwrap();
    remember_secret(secrecy::ExposeSecret::expose_secret(&signed_in_again.token));
    let ended = stack
        .cli(&["administrators", "end-sessions", colleague])
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&ended.stdout).contains("1 sessions ended"),
        "{ended:?}"
    );

    // The console deletes them, after the box is ticked.
    let mut console = ConsoleClient::new(&stack);
    let signed_in = console
        .sign_in(
            ADMIN_EMAIL,
            &stack.admin_password,
            &stack.admin_authenticator.fresh_code().await,
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let page = console
        .send(Method::GET, "/console/administrators", None, &[])
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(WebClient::body(&page).contains(colleague));
    let csrf = WebClient::csrf(&page);
    let unconfirmed = console
        .send(
            Method::POST,
            "/console/administrators/change",
            Some(&[("csrf", &csrf), ("email", colleague), ("action", "delete")]),
            &[],
        )
        .await;
    assert_eq!(unconfirmed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let deleted = console
        .send(
            Method::POST,
            "/console/administrators/change",
            Some(&[
                ("csrf", &csrf),
                ("email", colleague),
                ("action", "delete"),
                ("confirm", "on"),
            ]),
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(listed_enabled(&stack, colleague).await, None);

    // The last enabled administrator can be neither disabled nor deleted, anywhere.
    let last = stack
        .client
        .change_administrator(ADMIN_EMAIL, writeback_cli::AdministratorAction::Disable)
        .await
        .unwrap_err();
    assert!(last.to_string().contains("last_administrator"), "{last}");
    let refused = stack
        .cli(&["administrators", "delete", ADMIN_EMAIL])
        .await
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("last enabled administrator"),
        "{refused:?}"
    );
    let refused = console
        .send(
            Method::POST,
            "/console/administrators/change",
            Some(&[
                ("csrf", &csrf),
                ("email", ADMIN_EMAIL),
                ("action", "disable"),
                ("confirm", "on"),
            ]),
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(listed_enabled(&stack, ADMIN_EMAIL).await, Some(true));

    // Every change is in the audit log, by whom and about whom.
    let entries = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            target: Some(colleague.to_owned()),
            limit: Some(100),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap()
        .entries;
    for action in [
        "disable_administrator",
        "enable_administrator",
        "end_administrator_sessions",
        "delete_administrator",
    ] {
        assert!(
            entries
                .iter()
                .any(|entry| entry.action == action && entry.actor == ADMIN_EMAIL),
            "{action} audited: {entries:?}"
        );
    }
}

#[tokio::test]
async fn writeback_login_enrols_an_authenticator_in_the_terminal() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stack = Stack::start().await.unwrap();
    let email = "terminal@example.test";
    let password = strong_password();
    writeback_cloud::create_administrator(
        &stack.cloud.as_ref().unwrap().state.store,
        email,
        &SecretString::from(password.clone()),
    )
    .await
    .unwrap();
    let password_file = stack.work.join("terminal-password");
    writeback_testkit::stack::write_private(&password_file, &password).unwrap();
    let session_file = stack.work.join("terminal-session.json");
    let mut login =
        tokio::process::Command::new(writeback_testkit::logs::binary("writeback").unwrap())
            .arg("--session-file")
            .arg(&session_file)
            .args([
                "login",
                "--url",
                &stack.url(),
                "--pin",
                &stack.fingerprint.to_string(),
            ])
            .args(["--email", email, "--password-file"])
            .arg(&password_file)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let mut stdout = BufReader::new(login.stdout.take().unwrap()).lines();
    let mut shown = Vec::new();
    let key = loop {
        let line = stdout.next_line().await.unwrap().expect("the key is shown");
        shown.push(line.clone());
        if let Some(key) = line.strip_prefix("key: ") {
            break key.to_owned();
        }
    };
    remember_secret(&key);
    let screen = shown.join("\n");
    assert!(
        screen.contains('\u{2580}') || screen.contains('\u{2588}'),
        "a QR code is drawn:\n{screen}"
    );
    assert!(screen.contains("otpauth://totp/"), "{screen}");
    let code = totp::code_at(&totp::decode_base32(&key).unwrap(), UnixMillis::now());
    let mut stdin = login.stdin.take().unwrap();
    stdin
        .write_all(format!("{code}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let mut rest = Vec::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = login.wait().await.unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter()
            .any(|line| line.contains("authenticator enrolled")),
        "{rest:?}"
    );
    let listed =
        tokio::process::Command::new(writeback_testkit::logs::binary("writeback").unwrap())
            .arg("--session-file")
            .arg(&session_file)
            .arg("administrators")
            .output()
            .await
            .unwrap();
    assert!(listed.status.success());
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.contains(email) && listing.contains("authenticator"),
        "{listing}"
    );
}

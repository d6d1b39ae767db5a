//! Operating Writeback through the CLI and the API, against the real product and a real DC: agent
//! revocation, each directory's health, the audit log's filters, export and retention, metrics.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::process::Output;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use writeback_proto::api::{AuditPage, HealthState, RegistrationTokenResponse};
use writeback_proto::result::ResultCode;
use writeback_proto::sync::PasswordExpiry;
use writeback_proto::time::UnixMillis;
use writeback_store::AuditEvent;
use writeback_testkit::logs::{self, strong_password};
use writeback_testkit::mail::MailServer;
use writeback_testkit::sms::SmsProvider;
use writeback_testkit::stack::{StackOptions, spawn_agent, write_agent_config, write_private};
use writeback_testkit::web::WebClient;
use writeback_testkit::{NewPasswordSettings, NewUser, Stack};

async fn user_with_password(stack: &Stack, prefix: &str) -> (String, String) {
    stack.user_with_password(prefix).await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(output)
}

async fn health_of(stack: &Stack, directory: &str) -> (HealthState, String) {
    let health = stack
        .client
        .directory_health(&directory.parse().unwrap())
        .await
        .unwrap();
    (health.state, health.summary)
}

async fn wait_for_health(stack: &Stack, directory: &str, wanted: HealthState) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (state, summary) = health_of(stack, directory).await;
        if state == wanted {
            return summary;
        }
        assert!(
            Instant::now() < deadline,
            "{directory} stayed {state:?} ({summary}), never {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_revoked_agent_is_disconnected_at_once_and_cannot_reconnect() {
    let stack = Stack::start().await.unwrap();
    stack.cli_login().await.unwrap();
    let (name, old) = user_with_password(&stack, "revoked").await;
    let agent_id = stack.agent_id.to_string();

    let started = Instant::now();
    let revoke = stack.cli(&["agents", "revoke", &agent_id]).await.unwrap();
    succeeded(&revoke);
    stack.wait_for_agent(false).await.unwrap();
    println!(
        "revoked agent disconnected {} ms after the command started",
        started.elapsed().as_millis()
    );

    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::AgentUnavailable);
    assert_eq!(stack.dc.bind_as(&name, &old).await.unwrap(), Ok(()));

    // The agent dials again every second at most; every attempt is refused.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!stack.agent_connected());
    let log = stack.agent_log();
    let refusals = log.matches("an administrator revoked this agent").count();
    assert!(refusals >= 2, "{refusals} refusals logged:\n{log}");
    assert!(log.contains("register this agent again with a new token"));

    let agents = succeeded(&stack.cli(&["agents"]).await.unwrap());
    assert!(
        agents.contains(&agent_id) && agents.contains("revoked"),
        "{agents}"
    );
    let health = stack
        .cli(&["health", stack.directory.as_str()])
        .await
        .unwrap();
    assert_eq!(health.status.code(), Some(1));
    assert!(
        stdout(&health).contains("not_configured"),
        "{}",
        stdout(&health)
    );
    let audit = succeeded(
        &stack
            .cli(&["audit", "--operation", "revoke_agent", "--format", "json"])
            .await
            .unwrap(),
    );
    let page: AuditPage = serde_json::from_str(&audit).unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].target.as_deref(), Some(agent_id.as_str()));
    assert_eq!(page.entries[0].origin.as_deref(), Some("127.0.0.1"));
}

/// Registers an agent for `directory` through the CLI and runs it with its directory URL pointing
/// at a closed port, its events also sent to a journal socket the test listens on.
async fn run_agent_without_its_directory(
    stack: &Stack,
    directory: &str,
) -> (tokio::process::Child, std::os::unix::net::UnixDatagram) {
    let registration = succeeded(
        &stack
            .cli(&["--json", "agents", "register", directory])
            .await
            .unwrap(),
    );
    let registration: RegistrationTokenResponse = serde_json::from_str(&registration).unwrap();
    let work = stack.work.join(format!("agent-{directory}"));
    std::fs::create_dir_all(&work).unwrap();
    let log_file = logs::logs_directory()
        .unwrap()
        .join(format!("agent-{directory}-{}.log", std::process::id()));
    let config = write_agent_config(&stack.dc, &work, &log_file, &StackOptions::default()).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let journal_path = work.join("journal.socket");
    let journal = std::os::unix::net::UnixDatagram::bind(&journal_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let text = text
        .replace(&stack.dc.ldaps_url(), "ldaps://127.0.0.1:9")
        .replace(
            "[log]\n",
            &format!(
                "[log]\nsystem_log = \"journal\"\nsystem_log_socket = {:?}\n",
                journal_path.display().to_string()
            ),
        );
    std::fs::write(&config, text).unwrap();
    let token_file = work.join("token");
    write_private(
        &token_file,
        secrecy::ExposeSecret::expose_secret(&registration.token),
    )
    .unwrap();
    let agent = logs::binary("writeback-agent").unwrap();
    let register = tokio::process::Command::new(&agent)
        .arg("--config")
        .arg(&config)
        .args(["register", "--cloud", &stack.url(), "--pin"])
        .arg(stack.fingerprint.to_string())
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .await
        .unwrap();
    succeeded(&register);
    (spawn_agent(&config, None).unwrap(), journal)
}

/// Journal entries received until one carries `EVENT_ID=<event_id>`.
fn journal_until(journal: &std::os::unix::net::UnixDatagram, event_id: u32) -> Vec<String> {
    let mut entries = Vec::new();
    let mut buffer = vec![0u8; 65536];
    loop {
        let length = journal
            .recv(&mut buffer)
            .expect("a journal entry within 10 s");
        let entry = String::from_utf8_lossy(&buffer[..length]).into_owned();
        let done = entry.contains(&format!("\nEVENT_ID={event_id}\n"));
        entries.push(entry);
        if done {
            return entries;
        }
    }
}

#[tokio::test]
async fn health_follows_the_agents_and_their_directory() {
    let mut stack = Stack::start().await.unwrap();
    stack.cli_login().await.unwrap();
    let (name, _) = user_with_password(&stack, "health").await;
    let corp = stack.directory.to_string();

    let health = stack.cli(&["health", &corp]).await.unwrap();
    assert!(stdout(&health).contains("healthy"), "{}", stdout(&health));
    assert_eq!(health.status.code(), Some(0));

    let branch = "branch";
    let _register_only = succeeded(&stack.cli(&["agents", "register", branch]).await.unwrap());
    assert_eq!(
        health_of(&stack, branch).await.0,
        HealthState::NotConfigured
    );
    let (_branch_agent, journal) = run_agent_without_its_directory(&stack, branch).await;
    let summary = wait_for_health(&stack, branch, HealthState::DirectoryUnreachable).await;
    // The agent's events reach the system journal too, with their ids as fields.
    let entries = journal_until(&journal, 33001);
    assert!(
        entries.iter().any(
            |entry| entry.contains("SYSLOG_IDENTIFIER=writeback-agent\n")
                && entry.contains("EVENT_ID=31015\n")
        ),
        "{entries:?}"
    );
    let service_password = &stack.dc.service_account_password;
    assert!(
        !entries
            .iter()
            .any(|entry| entry.contains(service_password.as_str()))
    );
    assert!(summary.contains("writeback-agent doctor"), "{summary}");
    let agents = succeeded(&stack.cli(&["agents"]).await.unwrap());
    assert!(agents.contains("directory unreachable"), "{agents}");

    stack.kill_agent().await.unwrap();
    wait_for_health(&stack, &corp, HealthState::NoAgentConnected).await;
    let response = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::AgentUnavailable);

    stack.start_agent().await.unwrap();
    let summary = wait_for_health(&stack, &corp, HealthState::Degraded).await;
    assert!(summary.contains("1 writebacks failed"), "{summary}");

    stack
        .restart_cloud_with(|config| config.minimum_agent_version = "99.0.0".into())
        .await
        .unwrap();
    stack.wait_for_agent(true).await.unwrap();
    let summary = wait_for_health(&stack, &corp, HealthState::AgentOutdated).await;
    assert!(summary.contains("99.0.0"), "{summary}");

    let all = stack.cli(&["--json", "health"]).await.unwrap();
    assert_eq!(all.status.code(), Some(1), "not every directory is healthy");
    let all: Vec<writeback_proto::api::DirectoryHealth> =
        serde_json::from_str(&stdout(&all)).unwrap();
    let names: Vec<&str> = all.iter().map(|health| health.directory.as_str()).collect();
    assert_eq!(names, [branch, corp.as_str()]);
}

#[tokio::test]
async fn the_audit_log_filters_exports_and_keeps_only_what_retention_allows() {
    let stack = Stack::start().await.unwrap();
    stack.cli_login().await.unwrap();
    let (name, _) = user_with_password(&stack, "audited").await;
    let reset = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(reset.result, ResultCode::Success);
    let refused = stack.reset(&name, "Xy7#", false, false).await.unwrap();
    assert!(matches!(refused.result, ResultCode::PolicyViolation { .. }));
    let intruder = writeback_cli::ApiClient::new(
        &stack.url(),
        &writeback_tls::Trust::Pinned(stack.fingerprint),
    )
    .unwrap();
    assert!(
        intruder
            .sign_in("intruder@example.test", strong_password().into(), None)
            .await
            .is_err()
    );

    let csv = succeeded(
        &stack
            .cli(&["audit", "--target", &name, "--format", "csv"])
            .await
            .unwrap(),
    );
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(lines[0].starts_with("id,time,actor,operation,directory,target"));
    assert!(
        lines[1].contains(",reset_password,") && lines[1].contains(",failure,policy_violation,")
    );
    assert!(lines[2].contains(",success,success,") && lines[2].ends_with(",127.0.0.1"));
    assert!(!csv.contains("Xy7#"), "no password in the log: {csv}");

    let failures = succeeded(
        &stack
            .cli(&[
                "audit",
                "--operation",
                "reset_password",
                "--outcome",
                "failure",
                "--format",
                "json",
            ])
            .await
            .unwrap(),
    );
    let failures: AuditPage = serde_json::from_str(&failures).unwrap();
    assert_eq!(failures.entries.len(), 1);
    assert_eq!(failures.entries[0].result_code, "policy_violation");
    assert_eq!(
        failures.entries[0].request_id.as_deref(),
        Some(refused.request_id.to_string().as_str())
    );

    let sign_ins = succeeded(
        &stack
            .cli(&["audit", "--operation", "sign_in", "--outcome", "failure"])
            .await
            .unwrap(),
    );
    assert!(sign_ins.contains("intruder@example.test"), "{sign_ins}");
    assert!(sign_ins.contains("invalid_credentials"), "{sign_ins}");

    let future = (UnixMillis::now().0 + 3_600_000).to_string();
    let later = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            since: Some(future),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(later.entries.is_empty());
    for (query, complaint) in [
        ("outcome=maybe", "`outcome` must be success or failure"),
        ("since=yesterday", "RFC 3339"),
        ("operation=reset%27%20OR%201", "must be a code"),
        ("colour=red", "unknown field"),
        ("format=xml", "`format` must be json or csv"),
    ] {
        let raw = stack
            .client
            .send(
                Method::GET,
                &format!("/api/v1/audit?{query}"),
                None,
                Vec::new(),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(raw.status, StatusCode::BAD_REQUEST, "{query}");
        let body = String::from_utf8_lossy(&raw.body);
        assert!(body.contains(complaint), "{query}: {body}");
    }

    // Nothing in the API edits or removes an entry.
    let before = stack.client.audit(&Default::default()).await.unwrap();
    for method in [Method::DELETE, Method::PUT, Method::PATCH] {
        let raw = stack
            .client
            .send(method.clone(), "/api/v1/audit", None, Vec::new(), &[])
            .await
            .unwrap();
        assert_eq!(raw.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(
        stack.client.audit(&Default::default()).await.unwrap(),
        before
    );

    let store = stack.cloud.as_ref().unwrap().state.store.clone();
    let three_days_ago = UnixMillis(UnixMillis::now().0 - 3 * 86_400_000);
    store
        .append_audit(&AuditEvent {
            at: three_days_ago,
            actor: "old@example.test".into(),
            action: "sign_in".into(),
            directory: None,
            target: None,
            request_id: None,
            result_code: "success".into(),
            detail: None,
            origin: None,
            trace: None,
        })
        .await
        .unwrap();
    let old = || writeback_cli::AuditQuery {
        actor: Some("old@example.test".into()),
        ..Default::default()
    };
    assert_eq!(stack.client.audit(&old()).await.unwrap().entries.len(), 1);
    let set = succeeded(
        &stack
            .cli(&["settings", "audit", "--retention-days", "1"])
            .await
            .unwrap(),
    );
    assert!(set.contains("1 days"), "{set}");
    assert!(stack.client.audit(&old()).await.unwrap().entries.is_empty());
    let recent = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            target: Some(name.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(recent.entries.len(), 2, "recent entries stay");
    let change = succeeded(
        &stack
            .cli(&["audit", "--operation", "update_settings"])
            .await
            .unwrap(),
    );
    assert!(change.contains("for ever -> 1 days"), "{change}");
    let refused = stack
        .cli(&["settings", "audit", "--retention-days", "0"])
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("between 1 and 3650"));
}

async fn scrape(address: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn the_cloud_and_the_agent_serve_prometheus_metrics() {
    let mut stack = Stack::start().await.unwrap();
    let (name, _) = user_with_password(&stack, "metrics").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent_metrics = format!("127.0.0.1:{port}");
    let config = std::fs::read_to_string(stack.agent_config_path()).unwrap();
    std::fs::write(
        stack.agent_config_path(),
        format!("metrics_listen = {agent_metrics:?}\n{config}"),
    )
    .unwrap();
    stack.kill_agent().await.unwrap();

    // Out of the box the public listener has no /metrics at all; the cloud serves them on a
    // listener of its own, or on the public one to a scraper with the configured token.
    let (url, fingerprint) = (stack.url(), stack.fingerprint);
    let scraper =
        || writeback_cli::ApiClient::new(&url, &writeback_tls::Trust::Pinned(fingerprint)).unwrap();
    let unconfigured = scraper()
        .send(Method::GET, "/metrics", None, Vec::new(), &[])
        .await
        .unwrap();
    assert_eq!(unconfigured.status, StatusCode::NOT_FOUND);
    let cloud_metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cloud_metrics = format!("127.0.0.1:{cloud_metrics_port}");
    let token = strong_password();
    let token_file = stack.work.join("metrics-token");
    writeback_config::write_private_file(&token_file, token.as_bytes()).unwrap();
    let listen = cloud_metrics.clone();
    stack
        .restart_cloud_with(move |config| {
            config.metrics_listen = Some(listen);
            config.metrics_token_file = Some(token_file);
        })
        .await
        .unwrap();
    stack.start_agent().await.unwrap();

    let reset = stack
        .reset(&name, &strong_password(), false, false)
        .await
        .unwrap();
    assert_eq!(reset.result, ResultCode::Success);
    let refused = stack.reset(&name, "Xy7#", false, false).await.unwrap();
    assert!(matches!(refused.result, ResultCode::PolicyViolation { .. }));

    // The sync lag is a gauge only once the agent has confirmed a cursor (its first sync's
    // first batch), which a DC busy with the other tests' agents may take a while to allow.
    let store = stack.cloud.as_ref().unwrap().state.store.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store
        .sync_status(&stack.directory, UnixMillis::now())
        .await
        .unwrap()
        .cursor_age_ms
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the agent never confirmed a cursor"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for wrong in [None, Some("not-the-token".to_owned())] {
        let headers: Vec<(&str, String)> = wrong
            .map(|wrong| vec![("authorization", format!("Bearer {wrong}"))])
            .unwrap_or_default();
        let refused = scraper()
            .send(Method::GET, "/metrics", None, Vec::new(), &headers)
            .await
            .unwrap();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    }
    let raw = scraper()
        .send(
            Method::GET,
            "/metrics",
            None,
            Vec::new(),
            &[("authorization", format!("Bearer {token}"))],
        )
        .await
        .unwrap();
    assert_eq!(raw.status, StatusCode::OK);
    let own_listener = scrape(&cloud_metrics).await;
    assert!(
        own_listener.starts_with("HTTP/1.1 200 OK")
            && own_listener.contains("writeback_agents_connected{directory=\"corp\"} 1\n"),
        "{own_listener}"
    );
    let cloud = String::from_utf8_lossy(&raw.body).into_owned();
    for line in [
        "writeback_operations_total{directory=\"corp\",operation=\"reset_password\",result=\"success\"} 1\n",
        "writeback_operations_total{directory=\"corp\",operation=\"reset_password\",result=\"policy_violation\"} 1\n",
        "writeback_operation_duration_seconds_count{operation=\"reset_password\"} 2\n",
        "writeback_agents_connected{directory=\"corp\"} 1\n",
        "writeback_requests_in_flight{directory=\"corp\"} 0\n",
        "writeback_directory_healthy{directory=\"corp\",state=\"healthy\"} 1\n",
    ] {
        assert!(cloud.contains(line), "{line} missing from:\n{cloud}");
    }
    assert!(
        cloud.contains("writeback_sync_lag_seconds{directory=\"corp\"} "),
        "{cloud}"
    );
    assert!(!cloud.contains(&name), "metrics name no users");

    let agent = scrape(&agent_metrics).await;
    for line in [
        "writeback_agent_operations_total{operation=\"reset_password\",result=\"success\"} 1\n",
        "writeback_agent_operations_total{operation=\"reset_password\",result=\"policy_violation\"} 1\n",
        "writeback_agent_connected 1\n",
        "writeback_agent_directory_reachable 1\n",
        "writeback_agent_requests_in_flight 0\n",
    ] {
        assert!(agent.contains(line), "{line} missing from:\n{agent}");
    }
    assert!(agent.contains("writeback_agent_sync_changes_total "));
}

/// The published API description tells the truth: schemathesis (from PyPI, installed by
/// `cargo xtask test` into `target/tools/schemathesis`) sends generated valid and invalid requests
/// to every operation of a live stack, signed in, and checks every answer's status, content type,
/// headers and body against `/api/v1/openapi.json`. The run is bounded (a fixed seed, a few
/// examples per operation) and must find nothing.
///
/// What the run is told: the stack's directory and one real user, so that requests reach the
/// agent and the DC; which documented refusals a well-formed request may get, where the rule
/// is more than a schema can say (a writeback refused by the directory's policy or the account's
/// state, 422; self-service settings whose fields contradict each other, 400; a sign-in
/// challenge it made up, 410); that a body larger than the API takes is refused with 413, as
/// documented; not to sign out the session it runs on; and to send what it does to one
/// administrator to a colleague, so that ending that administrator's sessions does not end its
/// own. Its coverage phase is left out: in schemathesis 4.32.5 it stops with an internal error
/// (a `KeyError` in its own schema walk) on this document.
#[tokio::test]
async fn every_api_answer_matches_the_published_openapi_document() {
    let tool = logs::target_directory()
        .unwrap()
        .join("tools/schemathesis/bin/schemathesis");
    assert!(
        tool.exists(),
        "{} is missing: `cargo xtask test` installs it",
        tool.display()
    );
    let stack = Stack::start().await.unwrap();
    let (user, _) = user_with_password(&stack, "conform").await;
    let code = stack.admin_authenticator.fresh_code().await;
    let session = stack
        .client
        .sign_in(
            writeback_testkit::stack::ADMIN_EMAIL,
            secrecy::SecretString::from(stack.admin_password.clone()),
            Some(code),
        )
        .await
        .unwrap();
    let token = secrecy::ExposeSecret::expose_secret(&session.token).to_owned();
    logs::remember_secret(&token);
    // The operations on one administrator are sent for a colleague: sent for the signed-in
    // administrator, ending their sessions would end the run's own, and every later answer would
    // be 401 whatever the request.
    let colleague = "colleague@example.test";
    writeback_cloud::create_administrator(
        &stack.cloud.as_ref().unwrap().state.store,
        colleague,
        &secrecy::SecretString::from(strong_password()),
    )
    .await
    .unwrap();
    let config = stack.work.join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"[parameters]
"path.directory" = "{directory}"
"path.user" = "{user}"
"path.email" = "{colleague}"

[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-tag = "writeback"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

[[operations]]
include-path = "/api/v1/settings/self-service"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401"]

[[operations]]
include-path = "/api/v1/sessions/challenge"
checks.positive_data_acceptance.expected-statuses = ["201", "400", "401", "410", "429"]

[[operations]]
include-name = "DELETE /api/v1/sessions/current"
enabled = false
"#,
            directory = stack.directory,
        ),
    )
    .unwrap();
    // Run in the stack's own directory, where schemathesis keeps its cache, not in the sources.
    let output = tokio::process::Command::new(&tool)
        .current_dir(&stack.work)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", stack.url()))
        .args(["--checks", "all"])
        .args(["--max-examples", "50", "--seed", "1", "--workers", "2"])
        .args(["--phases", "examples,fuzzing"])
        .args(["--tls-verify", "false", "--no-color"])
        // Hypothesis's one health check that times the machine: on a loaded CI runner, generating
        // the examples is slower, which says nothing about the API.
        .args(["--suppress-health-check", "too_slow"])
        // A writeback waits for a real DC; its own deadline answers 504 long before this.
        .args(["--request-timeout", "60"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--report", "junit", "--report-junit-path"])
        .arg(
            logs::logs_directory()
                .unwrap()
                .join("schemathesis-junit.xml"),
        )
        .output()
        .await
        .unwrap();
    let printed = format!(
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let kept = logs::logs_directory()
        .unwrap()
        .join("schemathesis-output.log");
    std::fs::write(&kept, &printed).unwrap();
    assert!(
        output.status.success(),
        "schemathesis found failures (all it printed is in {}):\n{}",
        kept.display(),
        schemathesis_findings(&printed)
    );
}

/// The part of schemathesis's report that names what failed: from its first FAILURES or ERRORS
/// heading to the WARNINGS or SUMMARY heading after it; all of it when it has no such heading.
fn schemathesis_findings(printed: &str) -> &str {
    // The line on which the first of `headings` found in `text` starts.
    let heading_line = |text: &str, headings: &[&str]| {
        let found = headings
            .iter()
            .filter_map(|heading| text.find(heading))
            .min()?;
        Some(text[..found].rfind('\n').map_or(0, |newline| newline + 1))
    };
    let Some(start) = heading_line(printed, &["= FAILURES =", "= ERRORS ="]) else {
        return printed;
    };
    let findings = &printed[start..];
    let end = heading_line(&findings[1..], &["= WARNINGS =", "= SUMMARY ="])
        .map_or(findings.len(), |end| end + 1);
    &findings[..end]
}

/// Runs one of the product's binaries as `binary OPTION PLACE COMMAND FILE`.
async fn run_binary(
    binary: &str,
    option: &str,
    place: &std::path::Path,
    command: &str,
    file: &std::path::Path,
) -> Output {
    tokio::process::Command::new(logs::binary(binary).unwrap())
        .arg(option)
        .arg(place)
        .arg(command)
        .arg(file)
        .output()
        .await
        .unwrap()
}

/// `writeback-cloud backup` while the cloud runs and `restore` into a fresh data directory, with
/// the files the backup names kept apart and put back: the restored cloud still knows its agent,
/// a user's registered methods, its settings and its audit log, and a reset works through it.
/// The agent's own state goes the same way through `writeback-agent backup` and `restore`.
#[tokio::test]
async fn a_backup_restored_into_a_fresh_data_directory_serves_as_before() {
    let mut stack = Stack::start().await.unwrap();
    let settings = writeback_testkit::portal::settings(1);
    stack
        .client
        .update_self_service_settings(&settings)
        .await
        .unwrap();
    let (name, password) = user_with_password(&stack, "backup").await;
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    let mut portal = writeback_testkit::portal::PortalClient::new(&stack);
    assert_eq!(
        portal.sign_in(&name, &password).await.status,
        StatusCode::SEE_OTHER
    );
    portal.register_questions().await;
    let password = {
        let reset = strong_password();
        let response = stack.reset(&name, &reset, false, false).await.unwrap();
        assert_eq!(response.result, ResultCode::Success, "{}", response.message);
        reset
    };
    let anchor = stack
        .client
        .user(&stack.directory, &name)
        .await
        .unwrap()
        .user
        .anchor
        .to_string();
    let methods_of = |stack: &Stack| {
        let store = stack.cloud.as_ref().unwrap().state.store.clone();
        let anchor = anchor.clone();
        async move {
            store
                .self_service_methods(writeback_store::MethodOwner {
                    directory: "corp",
                    user_anchor: &anchor,
                })
                .await
                .unwrap()
        }
    };
    let methods_before = methods_of(&stack).await;
    assert!(!methods_before.is_empty());

    let data_dir = stack.work.join("cloud");
    let backup = stack.work.join("cloud-backup.db");
    let told = succeeded(
        &run_binary(
            "writeback-cloud",
            "--data-dir",
            &data_dir,
            "backup",
            &backup,
        )
        .await,
    );
    for apart in ["secrets.key", "tls/cert.pem", "tls/key.pem"] {
        assert!(told.contains(apart), "the backup names {apart}: {told}");
    }
    // Taken again, it is refused rather than written over.
    let again = run_binary(
        "writeback-cloud",
        "--data-dir",
        &data_dir,
        "backup",
        &backup,
    )
    .await;
    assert!(!again.status.success());

    let agent_backup = stack.work.join("agent-backup.json");
    let agent_config = stack.agent_config_path().to_owned();
    succeeded(
        &run_binary(
            "writeback-agent",
            "--config",
            &agent_config,
            "backup",
            &agent_backup,
        )
        .await,
    );

    // The old host is gone: a fresh data directory for each, from the backups and the files
    // kept apart.
    stack.stop_cloud().await;
    stack.kill_agent().await.unwrap();
    let fresh = stack.work.join("restored-cloud");
    std::fs::create_dir_all(fresh.join("tls")).unwrap();
    for kept in ["secrets.key", "tls/cert.pem", "tls/key.pem"] {
        std::fs::copy(data_dir.join(kept), fresh.join(kept)).unwrap();
    }
    succeeded(&run_binary("writeback-cloud", "--data-dir", &fresh, "restore", &backup).await);
    std::fs::remove_dir_all(stack.work.join("agent")).unwrap();
    succeeded(
        &run_binary(
            "writeback-agent",
            "--config",
            &agent_config,
            "restore",
            &agent_backup,
        )
        .await,
    );
    stack
        .restart_cloud_with(|config| config.data_dir = fresh)
        .await
        .unwrap();
    stack.start_agent().await.unwrap();

    let agents = stack.client.agents().await.unwrap();
    assert!(
        agents
            .iter()
            .any(|agent| agent.agent_id == stack.agent_id && agent.connected)
    );
    assert_eq!(
        stack.client.self_service_settings().await.unwrap().methods,
        settings.methods
    );
    assert_eq!(methods_of(&stack).await, methods_before);
    let audit = stack
        .client
        .audit(&writeback_proto::api::AuditQuery {
            target: Some(name.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .entries
            .iter()
            .any(|entry| entry.action == "reset_password" && entry.result_code == "success"),
        "{audit:?}"
    );
    stack.reset_and_prove(&name, &password).await.unwrap();
}

/// The SHA-1 corpus line Have I Been Pwned would publish for `password`.
fn corpus_line(password: &str, count: u32) -> String {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(password.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02X}")).collect();
    format!("{hex}:{count}")
}

/// An administrator imports a breached-password corpus with `writeback-cloud breached import`
/// while the cloud runs: a reset to a password in it, through the API and the CLI, is refused
/// with its own reason, audited, and never reaches the DC (the user's password is unchanged); a
/// password on the built-in list of common ones is refused the same way; any other password
/// lands.
#[tokio::test]
async fn passwords_in_an_imported_breached_corpus_or_the_common_list_are_refused_and_never_sent() {
    let stack = Stack::start().await.unwrap();
    let (name, password) = user_with_password(&stack, "breach").await;
    let breached = strong_password();
    let corpus = stack.work.join("breached-sha1.txt");
    let mut lines: Vec<String> = (0..50_000)
        .map(|n| corpus_line(&format!("someone-else-{n}"), n + 1))
        .collect();
    lines.insert(25_000, corpus_line(&breached, 3));
    std::fs::write(&corpus, lines.join("\r\n")).unwrap();

    let data_dir = stack.work.join("cloud");
    let import = tokio::process::Command::new(logs::binary("writeback-cloud").unwrap())
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["breached", "import"])
        .arg(&corpus)
        .output()
        .await
        .unwrap();
    let told = succeeded(&import);
    assert!(
        told.contains("SHA-1 50001 hashes (50001 distinct)"),
        "{told}"
    );
    assert!(told.contains("bytes per entry"), "{told}");
    // The running cloud looks at the file every few seconds; ask it now rather than wait.
    let screen = stack.cloud.as_ref().unwrap().state.screen.clone();
    let corpus_seen = tokio::task::spawn_blocking(move || screen.refresh())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(corpus_seen.entries, 50_001);

    let refused = stack.reset(&name, &breached, false, false).await.unwrap();
    assert!(
        matches!(
            refused.result,
            ResultCode::PolicyViolation {
                reason: writeback_policy::PolicyReason::Breached,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .message
            .contains("appears in lists of breached or common passwords"),
        "{}",
        refused.message
    );
    // A common password with digits and a symbol stuck on, which the log scan looks for too.
    let common = logs::remember_secret("Sunshine2026!");
    let refused_common = stack.reset(&name, &common, false, false).await.unwrap();
    assert!(
        matches!(
            refused_common.result,
            ResultCode::PolicyViolation {
                reason: writeback_policy::PolicyReason::Common,
                ..
            }
        ),
        "{refused_common:?}"
    );

    stack.cli_login().await.unwrap();
    let password_file = stack.work.join("breached-password");
    write_private(&password_file, &breached).unwrap();
    let directory = stack.directory.to_string();
    let cli = stack
        .cli(&[
            "reset",
            &directory,
            &name,
            "--password-file",
            &password_file.display().to_string(),
        ])
        .await
        .unwrap();
    assert!(!cli.status.success());
    assert!(
        stdout(&cli).contains("breached or common")
            || String::from_utf8_lossy(&cli.stderr).contains("breached or common"),
        "{}{}",
        stdout(&cli),
        String::from_utf8_lossy(&cli.stderr)
    );

    // Nothing was sent: the DC still has the password the user had.
    assert_eq!(stack.dc.bind_as(&name, &password).await.unwrap(), Ok(()));
    assert!(stack.dc.bind_as(&name, &breached).await.unwrap().is_err());
    let page = stack
        .client
        .audit(&writeback_cli::AuditQuery {
            request_id: Some(refused.request_id.to_string()),
            ..writeback_cli::AuditQuery::default()
        })
        .await
        .unwrap();
    assert!(
        page.entries
            .iter()
            .any(|entry| entry.result_code == "policy_violation"
                && entry.detail.as_deref() == Some("breached")),
        "{:?}",
        page.entries
    );
    stack.reset_and_prove(&name, &password).await.unwrap();
}

/// The password expiry the cloud holds for `name`, once synced with its address and as
/// `expected` says.
async fn synced_expiry(
    stack: &Stack,
    name: &str,
    expected: impl Fn(&PasswordExpiry) -> bool,
) -> (PasswordExpiry, UnixMillis) {
    stack
        .wait_until_synced(name, |user| {
            user.mail.is_some() && expected(&user.password_expiry)
        })
        .await
        .unwrap();
    let user = stack
        .client
        .user(&stack.directory, name)
        .await
        .unwrap()
        .user;
    (
        user.password_expiry,
        user.password_last_set.unwrap_or(UnixMillis(0)),
    )
}

/// Expiry reminders against the DC, with a short maximum age from a fine-grained policy and the
/// domain's own, the time passed in: each user is mailed (and texted, where a phone is
/// registered) once per threshold, in the order the thresholds are reached; nobody whose
/// password never expires or must be changed anyway hears anything; each reminder is audited;
/// and the console's list of passwords expiring soon names the right users.
#[tokio::test]
async fn expiry_reminders_reach_the_right_users_once_per_threshold() {
    let work = std::env::temp_dir().join(format!("writeback-expiry-{}", std::process::id()));
    let mail = MailServer::start(&work).await.unwrap();
    let sms = SmsProvider::start(&work).await.unwrap();
    let stack = Stack::start_with(StackOptions {
        smtp_port: Some(mail.port),
        sms: sms.config(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let mut admin = stack.dc.admin().await.unwrap();
    let mut create = async |prefix: &str| {
        let name = logs::unique_user(prefix);
        let dn = admin
            .create_user(&NewUser::new(&name, &strong_password()))
            .await
            .unwrap();
        (name, dn)
    };
    let (short, short_dn) = create("exp-short-").await;
    let (texted, texted_dn) = create("exp-text-").await;
    let (domain, domain_dn) = create("exp-domain-").await;
    let (never, never_dn) = create("exp-never-").await;
    let (must, must_dn) = create("exp-must-").await;
    admin
        .replace(&never_dn, "userAccountControl", "66048")
        .await
        .unwrap();
    admin.replace(&must_dn, "pwdLastSet", "0").await.unwrap();
    for (dn, label) in [(&short_dn, "short"), (&texted_dn, "text")] {
        admin
            .create_password_settings(
                &NewPasswordSettings {
                    name: logs::unique_user(&format!("pso-exp-{label}-")),
                    min_length: 7,
                    complexity: true,
                    history_length: 0,
                    min_age_days: 0,
                    lockout_threshold: 0,
                    max_age_days: 10,
                },
                dn,
            )
            .await
            .unwrap();
    }
    // Addresses last: a fine-grained policy changes no user object, so it is this change that
    // brings each user's expiry under its policy to the cloud.
    for (name, dn) in [
        (&short, &short_dn),
        (&texted, &texted_dn),
        (&domain, &domain_dn),
        (&never, &never_dn),
        (&must, &must_dn),
    ] {
        admin
            .replace(dn, "mail", &format!("{name}@example.org"))
            .await
            .unwrap();
    }
    let domain_max_age_ms = admin
        .read(writeback_testkit::domain_controller::BASE_DN, "maxPwdAge")
        .await
        .unwrap()
        .and_then(|ticks| ticks.parse::<i64>().ok())
        .map(|ticks| ticks.unsigned_abs() / 10_000)
        .unwrap();

    let at = |expiry: &PasswordExpiry| matches!(expiry, PasswordExpiry::At(_));
    const DAY: u64 = 86_400_000;
    let within_twenty_days = |expiry: &PasswordExpiry| matches!(expiry, PasswordExpiry::At(at) if at.0 < UnixMillis::now().0 + 20 * DAY);
    let (short_expiry, short_set) = synced_expiry(&stack, &short, within_twenty_days).await;
    let (texted_expiry, texted_set) = synced_expiry(&stack, &texted, within_twenty_days).await;
    let (domain_expiry, domain_set) = synced_expiry(&stack, &domain, at).await;
    let is_never = |expiry: &PasswordExpiry| *expiry == PasswordExpiry::Never;
    synced_expiry(&stack, &never, is_never).await;
    synced_expiry(&stack, &must, is_never).await;
    // The PSO's ten days and the domain's own maximum age, from when each password was set (the
    // DC's FILETIME has more precision than pwdLastSet's milliseconds).
    let near = |expiry: PasswordExpiry, expected: u64| match expiry {
        PasswordExpiry::At(at) => at.0.abs_diff(expected) < 1_000,
        _ => false,
    };
    assert!(
        near(short_expiry, short_set.0 + 10 * DAY),
        "{short_expiry:?}"
    );
    assert!(
        near(texted_expiry, texted_set.0 + 10 * DAY),
        "{texted_expiry:?}"
    );
    assert!(
        near(domain_expiry, domain_set.0 + domain_max_age_ms),
        "{domain_expiry:?} for a maximum age of {domain_max_age_ms} ms"
    );

    let state = &stack.cloud.as_ref().unwrap().state;
    let anchor_of = async |name: &str| {
        stack
            .client
            .user(&stack.directory, name)
            .await
            .unwrap()
            .user
            .anchor
            .to_string()
    };
    state
        .store
        .register_self_service_method(
            writeback_store::MethodOwner {
                directory: "corp",
                user_anchor: &anchor_of(&texted).await,
            },
            &writeback_store::RegisteredMethod {
                method: "sms".into(),
                value: Some("+447700900456".into()),
                secret: None,
                registered_at: UnixMillis::now(),
            },
        )
        .await
        .unwrap();

    let pass = async |after: UnixMillis, days_and_hours: (u64, u64)| {
        let now = UnixMillis(after.0 + days_and_hours.0 * DAY + days_and_hours.1 * 3_600_000);
        writeback_cloud::service::expiry::send_due_reminders(state, now)
            .await
            .unwrap()
    };
    let soon = writeback_cloud::service::expiry::expiring_soon(
        state,
        UnixMillis(short_set.0 + 2 * DAY),
        1_000,
    )
    .await
    .unwrap();
    let listed: Vec<&str> = soon
        .iter()
        .map(|soon| soon.password.user.user.sam_account_name.as_str())
        .collect();
    assert!(listed.contains(&short.as_str()) && listed.contains(&texted.as_str()));
    for unlisted in [&domain, &never, &must] {
        assert!(
            !listed.contains(&unlisted.as_str()),
            "{unlisted}: {listed:?}"
        );
    }

    // Eight days left: the 14-day reminder. Again an hour later: nothing new.
    pass(short_set, (2, 0)).await;
    pass(short_set, (2, 1)).await;
    // Six and a half days left: the 7-day one; twelve hours left: the 1-day one, once.
    pass(short_set, (3, 12)).await;
    pass(short_set, (9, 12)).await;
    pass(short_set, (9, 14)).await;
    // Expired: nothing more. The domain's users reach their 14 days much later.
    pass(short_set, (11, 0)).await;
    pass(
        domain_set,
        ((domain_max_age_ms / DAY).saturating_sub(13), 0),
    )
    .await;

    let subjects = |name: &str| {
        mail.messages()
            .unwrap()
            .into_iter()
            .filter(|mail| mail.to.contains(&format!("{name}@example.org")))
            .map(|mail| mail.subject)
            .collect::<Vec<_>>()
    };
    let wait_for_mail = async |name: &str, count: usize| {
        if count > 0 {
            mail.wait_for(&format!("{name}@example.org"), "expires", count)
                .await
                .unwrap();
        }
    };
    wait_for_mail(&short, 3).await;
    wait_for_mail(&texted, 3).await;
    wait_for_mail(&domain, 1).await;
    assert_eq!(
        subjects(&short),
        [
            "Your password expires in 8 days",
            "Your password expires in 7 days",
            "Your password expires in 1 day"
        ]
    );
    assert_eq!(subjects(&texted).len(), 3);
    assert_eq!(subjects(&domain), ["Your password expires in 13 days"]);
    assert!(subjects(&never).is_empty());
    assert!(subjects(&must).is_empty());
    let body = mail
        .wait_for(&format!("{short}@example.org"), "expires", 1)
        .await
        .unwrap()
        .body;
    assert!(body.contains("/portal/change"), "{body}");
    let texts = sms.wait_for("+447700900456", 3).await.unwrap();
    assert!(texts.text.contains("expires in 1 day"), "{}", texts.text);
    assert_eq!(
        sms.texts()
            .iter()
            .filter(|text| text.text.contains("expires"))
            .count(),
        3
    );

    // The console's overview lists the passwords expiring within the largest threshold (from
    // now: the two under the ten-day policy), with the reminders their owners got.
    let mut console = WebClient::console_signed_in(&stack, &stack.url(), stack.fingerprint).await;
    let overview = console.send(Method::GET, "/console", None, &[]).await;
    assert_eq!(overview.status, StatusCode::OK);
    let overview = WebClient::body(&overview);
    for listed in [&short, &texted] {
        let row = overview
            .split(&format!("<tr data-user=\"{listed}\">"))
            .nth(1)
            .and_then(|rest| rest.split("</tr>").next())
            .unwrap_or_else(|| panic!("{listed} is not listed:\n{overview}"));
        assert!(row.contains("14 days, 7 days, 1 day"), "{row}");
    }
    for unlisted in [&domain, &never, &must] {
        assert!(!overview.contains(&format!("data-user=\"{unlisted}\"")));
    }

    for (name, reminders) in [
        (&short, 3),
        (&texted, 3),
        (&domain, 1),
        (&never, 0),
        (&must, 0),
    ] {
        let page = stack
            .client
            .audit(&writeback_cli::AuditQuery {
                operation: Some("expiry_reminder".into()),
                target: Some(name.clone()),
                ..writeback_cli::AuditQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.entries.len(), reminders, "{name}: {:?}", page.entries);
    }
}

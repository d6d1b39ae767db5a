//! A reset whose agent dies on the way is applied at most once, and nobody is told "success"
//! unless the directory holds the new password. The agent is stopped at each kill point (the
//! `fail` crate, compiled in by `cargo xtask test` through the agent's `kill-points` feature):
//! after it received the request, just before its write, after the write and before its journal,
//! and after the journal and before its answer. With one agent the same agent comes back; with
//! two the other takes the request over. Each time the writes are counted from the directory
//! itself (the version of the password's replication metadata), the new password must bind and
//! the old one must not, and a retry with the same Idempotency-Key changes nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::time::Duration;

use secrecy::SecretString;
use writeback_proto::api::{HealthState, InFlightStage, OperationResponse, ResetPasswordRequest};
use writeback_proto::ids::RequestId;
use writeback_proto::result::ResultCode;
use writeback_testkit::Stack;
use writeback_testkit::logs::strong_password;
use writeback_testkit::stack::StackOptions;

/// The exit code of an agent stopped at a kill point.
const KILLED_AT_KILL_POINT: i32 = 86;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agents {
    One,
    Two,
}

/// A stack whose first agent carries `kill_points` and, with [`Agents::Two`], a second agent
/// without them. The armed agent connected first, so it gets the first request.
async fn stack_with(agents: Agents, kill_points: &str, options: StackOptions) -> Stack {
    let mut stack = Stack::start_with(options).await.unwrap();
    stack.kill_agent().await.unwrap();
    stack
        .start_agent_with_kill_points(kill_points)
        .await
        .unwrap();
    if agents == Agents::Two {
        stack.start_second_agent().await.unwrap();
    }
    stack
}

fn reset_request(password: &str) -> ResetPasswordRequest {
    ResetPasswordRequest {
        new_password: SecretString::from(password.to_owned()),
        must_change: false,
        unlock: false,
    }
}

/// A reset of `name` to `password` with the Idempotency-Key `key`, sent on a connection of its
/// own while the test goes on.
fn reset_in_background(
    stack: &Stack,
    name: &str,
    password: &str,
    key: RequestId,
) -> tokio::task::JoinHandle<Result<OperationResponse, writeback_cli::ClientError>> {
    let client = stack.client.on_another_connection();
    let (directory, name) = (stack.directory.clone(), name.to_owned());
    let request = reset_request(password);
    tokio::spawn(async move {
        client
            .reset_password(&directory, &name, &request, Some(key))
            .await
    })
}

/// Waits for the armed agent to stop at its kill point; with one agent, starts it again without
/// kill points, as a service manager would.
async fn the_armed_agent_dies(stack: &mut Stack, agents: Agents, kill_point: &str) {
    let status = stack
        .agent_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|error| {
            panic!("the agent did not stop at {kill_point} ({error}); it must be built with --features writeback-agent/kill-points, as cargo xtask test builds it")
        });
    assert_eq!(status.code(), Some(KILLED_AT_KILL_POINT), "{status}");
    if agents == Agents::One {
        stack.start_agent().await.unwrap();
    }
}

/// The answer is true: success, and then the directory holds the new password, written once.
async fn assert_written_once(
    stack: &Stack,
    response: &OperationResponse,
    name: &str,
    writes_before: u32,
    old_password: &str,
    new_password: &str,
) {
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    assert_eq!(
        stack.dc.password_writes(name).await.unwrap(),
        writes_before + 1,
        "exactly one write"
    );
    assert_eq!(stack.dc.bind_as(name, new_password).await.unwrap(), Ok(()));
    assert!(stack.dc.bind_as(name, old_password).await.unwrap().is_err());
}

async fn crash_at(kill_point: &str, agents: Agents) {
    let mut stack = stack_with(
        agents,
        &format!("{kill_point}=return"),
        StackOptions::default(),
    )
    .await;
    let (name, old_password) = stack.user_with_password("crash").await.unwrap();
    let writes_before = stack.dc.password_writes(&name).await.unwrap();
    let new_password = strong_password();
    let key = RequestId::generate().unwrap();

    let reset = reset_in_background(&stack, &name, &new_password, key);
    the_armed_agent_dies(&mut stack, agents, kill_point).await;
    let response = reset.await.unwrap().unwrap();
    assert_written_once(
        &stack,
        &response,
        &name,
        writes_before,
        &old_password,
        &new_password,
    )
    .await;
    stack
        .assert_audited(&response, "reset_password", &name)
        .await
        .unwrap();

    // The same Idempotency-Key again: the same answer, and still one write.
    let again = stack
        .client
        .reset_password(
            &stack.directory,
            &name,
            &reset_request(&new_password),
            Some(key),
        )
        .await
        .unwrap();
    assert_eq!(again.result, ResultCode::Success, "{}", again.message);
    assert_eq!(
        stack.dc.password_writes(&name).await.unwrap(),
        writes_before + 1
    );
}

#[tokio::test]
async fn one_agent_killed_after_receipt() {
    crash_at("after-receipt", Agents::One).await;
}

#[tokio::test]
async fn one_agent_killed_before_the_write() {
    crash_at("before-write", Agents::One).await;
}

#[tokio::test]
async fn one_agent_killed_after_the_write_before_the_journal() {
    crash_at("after-write", Agents::One).await;
}

#[tokio::test]
async fn one_agent_killed_after_the_journal_before_the_answer() {
    crash_at("after-journal", Agents::One).await;
}

#[tokio::test]
async fn two_agents_one_killed_after_receipt() {
    crash_at("after-receipt", Agents::Two).await;
}

#[tokio::test]
async fn two_agents_one_killed_before_the_write() {
    crash_at("before-write", Agents::Two).await;
}

#[tokio::test]
async fn two_agents_one_killed_after_the_write_before_the_journal() {
    crash_at("after-write", Agents::Two).await;
}

#[tokio::test]
async fn two_agents_one_killed_after_the_journal_before_the_answer() {
    crash_at("after-journal", Agents::Two).await;
}

/// The client gives up first: the agent stalls at `kill_point` past the cloud's deadline, the
/// client is told "timeout", the stalled agent is then killed, and the client retries with the
/// same Idempotency-Key. The stall blocks one of the agent's threads, which can also stop its
/// heartbeats; the 2 s deadline ends before the cloud, having judged it gone (1.5 s), may hand
/// the request to another agent (1 s later).
async fn retry_after_timeout(kill_point: &str, agents: Agents) {
    let options = StackOptions {
        configure_cloud: Some(|config| config.request_timeout_seconds = 2),
        ..StackOptions::default()
    };
    let mut stack = stack_with(agents, &format!("{kill_point}=sleep(8000)"), options).await;
    let (name, old_password) = stack.user_with_password("stall").await.unwrap();
    let writes_before = stack.dc.password_writes(&name).await.unwrap();
    let new_password = strong_password();
    let key = RequestId::generate().unwrap();
    let request = reset_request(&new_password);

    let first = stack
        .client
        .reset_password(&stack.directory, &name, &request, Some(key))
        .await
        .unwrap();
    assert_eq!(first.result, ResultCode::Timeout, "{}", first.message);
    stack.kill_agent().await.unwrap();
    if agents == Agents::One {
        stack.start_agent().await.unwrap();
    }
    let retried = stack
        .client
        .reset_password(&stack.directory, &name, &request, Some(key))
        .await
        .unwrap();
    assert_written_once(
        &stack,
        &retried,
        &name,
        writes_before,
        &old_password,
        &new_password,
    )
    .await;
}

#[tokio::test]
async fn one_agent_retry_after_a_timeout_before_the_write() {
    retry_after_timeout("before-write", Agents::One).await;
}

#[tokio::test]
async fn one_agent_retry_after_a_timeout_after_the_write() {
    retry_after_timeout("after-write", Agents::One).await;
}

#[tokio::test]
async fn two_agents_retry_after_a_timeout_before_the_write() {
    retry_after_timeout("before-write", Agents::Two).await;
}

#[tokio::test]
async fn two_agents_retry_after_a_timeout_after_the_write() {
    retry_after_timeout("after-write", Agents::Two).await;
}

/// Two agents where two are wanted is healthy; one of them gone is "degraded", told in the API
/// and shown per agent with the node it is connected to and its load.
#[tokio::test]
async fn a_directory_with_fewer_healthy_agents_than_its_minimum_is_degraded() {
    let options = StackOptions {
        configure_cloud: Some(|config| {
            config.minimum_healthy_agents = 2;
            config.node_name = "node-a".into();
        }),
        ..StackOptions::default()
    };
    let mut stack = Stack::start_with(options).await.unwrap();
    stack.start_second_agent().await.unwrap();
    // Until both have said they can use the directory, an agent that has not said yet counts.
    let both = stack
        .client
        .directory_health(&stack.directory)
        .await
        .unwrap();
    assert_eq!(both.state, HealthState::Healthy, "{}", both.summary);
    assert_eq!((both.agents_healthy, both.agents_minimum), (2, 2));
    let agents = stack.client.agents().await.unwrap();
    assert_eq!(agents.len(), 2);
    assert!(
        agents
            .iter()
            .all(|agent| agent.connected && agent.node.as_deref() == Some("node-a"))
    );

    stack.kill_agent().await.unwrap();
    let one = stack
        .client
        .directory_health(&stack.directory)
        .await
        .unwrap();
    assert_eq!(one.state, HealthState::Degraded, "{}", one.summary);
    assert_eq!((one.agents_connected, one.agents_healthy), (1, 1));
    assert!(one.summary.contains("fewer than the 2"), "{}", one.summary);
    let agents = stack.client.agents().await.unwrap();
    let gone = agents
        .iter()
        .find(|agent| agent.agent_id == stack.agent_id)
        .unwrap();
    assert!(!gone.connected && gone.node.is_none());
}

/// While an operation runs, the API and the CLI show it with the agent that has it and how far
/// it got (the agent stalls for a second at its write); once answered, it is gone from the list.
#[tokio::test]
async fn a_running_operation_is_shown_live_with_its_agent_and_stage() {
    let stack = stack_with(
        Agents::One,
        "before-write=sleep(1000)",
        StackOptions::default(),
    )
    .await;
    let (name, _) = stack.user_with_password("live").await.unwrap();
    let key = RequestId::generate().unwrap();
    let reset = reset_in_background(&stack, &name, &strong_password(), key);
    let started = std::time::Instant::now();
    let seen = loop {
        let running = stack.client.operations_in_flight().await.unwrap();
        if let Some(operation) = running.iter().find(|operation| {
            operation.request_id == key && operation.stage == InFlightStage::Writing
        }) {
            break operation.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never seen writing: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen.operation, "reset_password");
    assert_eq!(seen.agent_id, stack.agent_id);
    // By the name typed, or by anchor once the user was synced.
    assert!(
        seen.user == name
            || seen
                .user
                .parse::<writeback_proto::sync::ObjectAnchor>()
                .is_ok(),
        "{}",
        seen.user
    );
    let answered = reset.await.unwrap().unwrap();
    assert_eq!(answered.result, ResultCode::Success, "{}", answered.message);
    assert!(
        stack
            .client
            .operations_in_flight()
            .await
            .unwrap()
            .is_empty()
    );
}

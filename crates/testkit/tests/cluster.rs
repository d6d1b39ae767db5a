//! Several cloud nodes on one PostgreSQL database, the bus between them, and the real agent and
//! DC: a request entering a node without the agent crosses the bus and lands; the agent's node
//! stopping moves the agent to another node and writeback goes on.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code: a failed step should stop the test"
)]

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use secrecy::SecretString;
use writeback_cli::ApiClient;
use writeback_proto::api::{AgentSummary, AuditQuery, ResetPasswordRequest};
use writeback_proto::result::ResultCode;
use writeback_store::postgres_server::PostgresServer;
use writeback_testkit::logs;
use writeback_testkit::portal::PortalClient;
use writeback_testkit::stack::{Stack, StackOptions};
use writeback_testkit::web::WebClient;

async fn cluster_stack() -> Stack {
    cluster_stack_on_its_database().await.0
}

/// A stack on a new PostgreSQL database, and that database's URL.
async fn cluster_stack_on_its_database() -> (Stack, String) {
    let server = tokio::task::spawn_blocking(PostgresServer::shared)
        .await
        .unwrap()
        .unwrap();
    let database_url = server.fresh_database().await.unwrap();
    let stack = Stack::start_with(StackOptions {
        database_url: Some(database_url.clone()),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    (stack, database_url)
}

/// The stack's agent as `client`'s node sees it, once it is seen connected to `node`.
async fn agent_seen_on(client: &ApiClient, stack: &Stack, node: &str) -> AgentSummary {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let agents = client.agents().await.unwrap();
        if let Some(agent) = agents.into_iter().find(|agent| {
            agent.agent_id == stack.agent_id
                && agent.connected
                && agent.node.as_deref() == Some(node)
        }) {
            return agent;
        }
        assert!(
            Instant::now() < deadline,
            "the agent was not seen connected to {node} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The console's Agents page on `node`, signed in there as the stack's administrator.
async fn console_agents_page(stack: &Stack, node: &writeback_cloud::RunningCloud) -> String {
    let mut console = WebClient::console_signed_in(
        stack,
        &format!("https://{}", node.address),
        node.fingerprint,
    )
    .await;
    let agents = console
        .send(Method::GET, "/console/agents", None, &[])
        .await;
    assert_eq!(agents.status, StatusCode::OK);
    WebClient::body(&agents)
}

/// Resets `name` through `client`'s node and proves it in the directory: the new password binds
/// and the old one is refused.
async fn reset_through(
    client: &ApiClient,
    stack: &Stack,
    name: &str,
    old_password: &str,
) -> writeback_proto::ids::RequestId {
    let new_password = logs::strong_password();
    let request = ResetPasswordRequest {
        new_password: SecretString::from(new_password.clone()),
        must_change: false,
        unlock: false,
    };
    let response = client
        .reset_password(&stack.directory, name, &request, None)
        .await
        .unwrap();
    assert_eq!(response.result, ResultCode::Success, "{}", response.message);
    stack
        .dc
        .assert_password_replaced(name, &new_password, old_password)
        .await
        .unwrap();
    let entries = client
        .audit(&AuditQuery {
            request_id: Some(response.request_id.to_string()),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .entries;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].result_code, "success");
    response.request_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_entering_a_node_without_the_agent_crosses_the_bus_and_lands() {
    let stack = cluster_stack().await;
    let (node_b, client_b) = stack.start_node("node-b").await.unwrap();
    let seen = agent_seen_on(&client_b, &stack, "node-0").await;
    assert_eq!(seen.directory_reachable, Some(true));
    // Every node, with its agents, from either node.
    let nodes = client_b.nodes().await.unwrap();
    let named: Vec<(&str, bool, u64)> = nodes
        .iter()
        .map(|node| (node.name.as_str(), node.this_node, node.agents))
        .collect();
    assert_eq!(named, [("node-0", false, 1), ("node-b", true, 0)]);
    stack.cli_login().await.unwrap();
    let listed = stack.cli(&["nodes"]).await.unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("node-0") && listed.contains("node-b") && listed.contains("(answered)"),
        "{listed}"
    );
    let agents_page = console_agents_page(&stack, &node_b).await;
    assert!(
        agents_page.contains("Cloud nodes")
            && agents_page.contains("node-0")
            && agents_page.contains("node-b"),
        "{agents_page}"
    );

    let (name, old_password) = stack.user_with_password("crossing").await.unwrap();
    let request_id = reset_through(&client_b, &stack, &name, &old_password).await;
    // The audit log is the cluster's: the agent's node reads node-b's entry too. Its trace names
    // the bus among its hops, and they add up to the whole.
    let query = AuditQuery {
        request_id: Some(request_id.to_string()),
        ..AuditQuery::default()
    };
    let entries = stack.client.audit(&query).await.unwrap().entries;
    assert_eq!(entries.len(), 1);
    let trace = entries[0].trace.clone().expect("a reset's trace");
    let hops: Vec<&str> = trace.hops.iter().map(|hop| hop.hop.as_str()).collect();
    assert_eq!(
        hops,
        [
            "cloud",
            "bus",
            "relay",
            "agent_lookup",
            "agent_checks",
            "agent_write"
        ],
        "{trace:?}"
    );
    let sum: u64 = trace.hops.iter().map(|hop| hop.micros).sum();
    assert!(sum.abs_diff(trace.total_us) <= 1000, "{trace:?}");

    // Both ways: a node started later learns of the agent from the others at once.
    let (_node_c, client_c) = stack.start_node("node-c").await.unwrap();
    agent_seen_on(&client_c, &stack, "node-0").await;
    let (name, old_password) = stack.user_with_password("crossing").await.unwrap();
    reset_through(&client_c, &stack, &name, &old_password).await;
    node_b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_agents_node_stops_the_agent_moves_to_another_and_writeback_goes_on() {
    let mut stack = cluster_stack().await;
    let (node_b, client_b) = stack.start_node("node-b").await.unwrap();
    let node_b_url = format!("https://{}", node_b.address);
    // The agent knows both nodes, as it would know a cluster's.
    stack.kill_agent().await.unwrap();
    let config = std::fs::read_to_string(stack.agent_config_path()).unwrap();
    std::fs::write(
        stack.agent_config_path(),
        format!("cloud_urls = [\"{node_b_url}\"]\n{config}"),
    )
    .unwrap();
    stack.start_agent().await.unwrap();
    agent_seen_on(&client_b, &stack, "node-0").await;

    stack.stop_cloud().await;
    let moved = Instant::now();
    agent_seen_on(&client_b, &stack, "node-b").await;
    eprintln!(
        "the agent was connected to node-b {} ms after node-0 stopped",
        moved.elapsed().as_millis()
    );
    let (name, old_password) = stack.user_with_password("moved").await.unwrap();
    reset_through(&client_b, &stack, &name, &old_password).await;
}

/// The portal on a cluster: a person signed in on one node is signed in on every node, as a load
/// balancer may send each of their pages to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_session_started_on_one_node_is_served_by_another() {
    let stack = cluster_stack().await;
    let (node_b, _client_b) = stack.start_node("node-b").await.unwrap();
    stack
        .client
        .update_self_service_settings(&writeback_testkit::portal::settings(1))
        .await
        .unwrap();
    let (name, password) = stack.user_with_password("portalnode").await.unwrap();
    stack.wait_until_synced(&name, |_| true).await.unwrap();

    let mut on_first = PortalClient::new(&stack);
    let signed_in = on_first.sign_in(&name, &password).await;
    assert_eq!(signed_in.status, StatusCode::SEE_OTHER);
    let mut on_second =
        PortalClient::for_url(&format!("https://{}", node_b.address), node_b.fingerprint);
    on_second.web.cookies = on_first.web.cookies.clone();
    let account = on_second.send(Method::GET, "/portal/account", None).await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(WebClient::body(&account).contains(&name));

    // Signing out on the second node ends the session on the first.
    let csrf = WebClient::csrf(&account);
    on_second
        .send(Method::POST, "/portal/sign-out", Some(&[("csrf", &csrf)]))
        .await;
    let after = on_first.send(Method::GET, "/portal/account", None).await;
    assert_ne!(after.status, StatusCode::OK);
}

/// A client retries with the same Idempotency-Key through another node (a load balancer sent it
/// elsewhere): it is the same request there, answered without a second write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_through_another_node_writes_nothing_more() {
    let mut stack = cluster_stack().await;
    let (_node_b, client_b) = stack.start_node("node-b").await.unwrap();
    agent_seen_on(&client_b, &stack, "node-0").await;
    let (name, old_password) = stack.user_with_password("retried").await.unwrap();
    let before = stack.dc.password_writes(&name).await.unwrap();
    let new_password = logs::strong_password();
    let request = ResetPasswordRequest {
        new_password: SecretString::from(new_password.clone()),
        must_change: false,
        unlock: false,
    };
    let key = writeback_proto::ids::RequestId::generate().unwrap();
    let first = stack
        .client
        .reset_password(&stack.directory, &name, &request, Some(key))
        .await
        .unwrap();
    assert_eq!(first.result, ResultCode::Success, "{}", first.message);
    // The agent that wrote it is gone and another serves the directory: its journal cannot
    // recognise the retry, so only the cluster's ledger keeps it from writing again.
    stack.kill_agent().await.unwrap();
    stack.start_second_agent().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client_b
        .agents()
        .await
        .unwrap()
        .iter()
        .any(|agent| agent.connected && agent.agent_id != stack.agent_id)
    {
        assert!(
            Instant::now() < deadline,
            "node-b did not see the second agent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first attempt may have named the user before they were synced; the retry comes after.
    stack.wait_until_synced(&name, |_| true).await.unwrap();
    let retried = client_b
        .reset_password(&stack.directory, &name, &request, Some(key))
        .await
        .unwrap();
    assert_eq!(retried.result, ResultCode::Success, "{}", retried.message);
    assert_eq!(retried.request_id, first.request_id);
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

/// Any role that may connect to the database may send on its channels: a node announcing
/// itself, or an agent with a key of its own, in the clear, is not believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_forged_on_the_bus_is_dropped() {
    let (stack, database_url) = cluster_stack_on_its_database().await;
    let (_node_b, client_b) = stack.start_node("node-b").await.unwrap();
    agent_seen_on(&client_b, &stack, "node-0").await;
    let intruder = writeback_store::Store::open_postgres(&database_url)
        .await
        .unwrap();
    let node = writeback_proto::ids::NodeId::generate().unwrap();
    for _ in 0..5 {
        let alive = format!("{{\"type\":\"alive\",\"node\":\"{node}\",\"name\":\"intruder\"}}");
        intruder.publish("writeback_nodes", &alive).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let nodes = client_b.nodes().await.unwrap();
    assert!(
        nodes.iter().all(|node| node.name != "intruder"),
        "{nodes:?}"
    );
    assert_eq!(nodes.len(), 2, "{nodes:?}");
}

//! `cargo xtask bench cluster`: three cloud nodes on one throwaway PostgreSQL database with the
//! bus between them, two agent processes (both connected to `node-0`) and one Samba DC, on this
//! machine. Each figure is measured beside its baseline in the same run:
//!
//! * `forwarded_ratio_p50`: resets entering a node without the agents (they cross the bus) against
//!   resets entering the agents' node, interleaved; target ≤ 1.05.
//! * `concurrent_ratio`: resets per second with 32 in flight through the product (spread over the
//!   three nodes) against 32 in flight straight to the same DC (32 warm LDAPS connections as the
//!   agents' service account), in alternating phases; target ≥ 0.90.
//! * `failover_p99_ms`, `lost`, `doubled`: a steady stream of resets (8 users, one reset at a time
//!   each, entering the nodes in turn) while one agent process is killed: the p99 latency, how many
//!   requests did not end in success, and how many writes the directory shows beyond the
//!   successes (from each user's `unicodePwd` stamp); targets ≤ 2,000 ms, 0 and 0.
//! * `idle_agent_kib`: what one more idle agent connection costs a node: a `writeback-cloud`
//!   process of its own, its resident memory with `--agents` simulated agents connected (each
//!   registered, through the real handshake and heartbeating) against none; target ≤ 32.
//!
//! It ends with one line: `cluster nodes=3 agents=2 forwarded_ratio_p50=… concurrent_ratio=…
//! failover_p99_ms=… lost=… doubled=… idle_agent_kib=…`. `--idle-only` measures the last alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use secrecy::SecretString;
use writeback_cli::ApiClient;
use writeback_devtools::{argument, percentile_ms};
use writeback_directory::{Directory, ResetOptions};
use writeback_proto::api::ResetPasswordRequest;
use writeback_proto::identity::IdentityKeyPair;
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::operation::UserRef;
use writeback_proto::result::ResultCode;
use writeback_proto::sealing::{SealingKeyPair, SealingPublicKey};
use writeback_proto::session::{AgentAction, AgentPurpose, AgentSession, SessionSettings};
use writeback_proto::time::UnixMillis;
use writeback_store::NewAgent;
use writeback_store::postgres_server::PostgresServer;
use writeback_testkit::logs::{strong_password, unique_user};
use writeback_testkit::stack::StackOptions;
use writeback_testkit::{NewUser, Stack};

/// A cloud node the bench sends requests to.
#[derive(Debug, Clone)]
struct Node {
    url: String,
    fingerprint: writeback_tls::Fingerprint,
}

/// The `fraction` percentile of `samples`, in milliseconds, sorting them first.
fn p(samples: &mut [Duration], fraction: f64) -> f64 {
    samples.sort();
    percentile_ms(samples, fraction)
}

async fn reset_through(
    client: &ApiClient,
    directory: &DirectoryName,
    user: &str,
) -> Result<(Duration, ResultCode)> {
    let request = ResetPasswordRequest {
        new_password: SecretString::from(strong_password()),
        must_change: false,
        unlock: false,
    };
    let started = Instant::now();
    let response = client
        .reset_password(directory, user, &request, None)
        .await?;
    Ok((started.elapsed(), response.result))
}

async fn create_users(stack: &Stack, prefix: &str, count: usize) -> Result<Vec<String>> {
    let mut admin = stack.dc.admin().await?;
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        let name = unique_user(prefix);
        admin
            .create_user(&NewUser::new(&name, &strong_password()))
            .await?;
        names.push(name);
    }
    Ok(names)
}

/// Resets through `node` and through `local` in turn, after a warm-up; p50 of each.
async fn forwarded(stack: &Stack, node: &ApiClient, iterations: usize) -> Result<(f64, f64)> {
    let users = create_users(stack, "fwd", 2).await?;
    let (mut local, mut crossing) = (Vec::new(), Vec::new());
    for round in 0..iterations + 10 {
        let (took_local, local_result) =
            reset_through(&stack.client, &stack.directory, &users[0]).await?;
        let (took_crossing, crossing_result) =
            reset_through(node, &stack.directory, &users[1]).await?;
        ensure!(
            local_result == ResultCode::Success && crossing_result == ResultCode::Success,
            "a reset failed: {local_result:?} / {crossing_result:?}"
        );
        if round >= 10 {
            local.push(took_local);
            crossing.push(took_crossing);
        }
    }
    let (local_p50, crossing_p50) = (p(&mut local, 0.5), p(&mut crossing, 0.5));
    println!(
        "  forwarded: entering the agents' node p50 {local_p50:.2} ms, entering another node p50 {crossing_p50:.2} ms ({iterations} each)"
    );
    Ok((local_p50, crossing_p50))
}

/// Resets per second with `in_flight` at once: straight to the DC, then through the product
/// (requests entering the nodes in turn), alternating `phases` times each.
async fn concurrent(
    stack: &Stack,
    nodes: &[Node],
    in_flight: usize,
    per_worker: usize,
    phases: usize,
) -> Result<(f64, f64)> {
    let direct_users = create_users(stack, "cdir", in_flight).await?;
    let product_users = create_users(stack, "cpro", in_flight).await?;
    let mut directories = Vec::with_capacity(in_flight);
    for name in &direct_users {
        let directory = stack.dc.service_directory()?;
        let account = directory.find_user(&UserRef::logon_name(name)?).await?;
        directories.push((Arc::new(directory), account));
    }
    let (mut direct_time, mut product_time) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..phases {
        let started = Instant::now();
        let workers: Vec<_> = directories
            .iter()
            .cloned()
            .map(|(directory, account)| {
                tokio::spawn(async move {
                    for _ in 0..per_worker {
                        let password = SecretString::from(strong_password());
                        directory
                            .reset_password(&account, &password, ResetOptions::default())
                            .await?;
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect();
        for worker in workers {
            worker.await??;
        }
        direct_time += started.elapsed();

        let started = Instant::now();
        let workers: Vec<_> = product_users
            .iter()
            .enumerate()
            .map(|(index, name)| {
                let node = &nodes[index % nodes.len()];
                let client = stack.client_for(&node.url, node.fingerprint);
                let directory = stack.directory.clone();
                let name = name.clone();
                tokio::spawn(async move {
                    let client = client?;
                    for _ in 0..per_worker {
                        let (_, result) = reset_through(&client, &directory, &name).await?;
                        ensure!(result == ResultCode::Success, "a reset failed: {result:?}");
                    }
                    Ok::<(), anyhow::Error>(())
                })
            })
            .collect();
        for worker in workers {
            worker.await??;
        }
        product_time += started.elapsed();
    }
    let total = (in_flight * per_worker * phases) as f64;
    let (direct_rate, product_rate) = (
        total / direct_time.as_secs_f64(),
        total / product_time.as_secs_f64(),
    );
    println!(
        "  concurrent: {in_flight} in flight, {total} resets each way: straight to the DC {direct_rate:.1}/s, through the product {product_rate:.1}/s"
    );
    Ok((direct_rate, product_rate))
}

/// The version of `name`'s password stamp: how many times it was written.
async fn password_version(
    directory: &writeback_directory::ActiveDirectory,
    name: &str,
) -> Result<u32> {
    let account = directory.find_user(&UserRef::logon_name(name)?).await?;
    Ok(account.password_stamp.map_or(0, |stamp| stamp.version))
}

struct Failover {
    p99_ms: f64,
    lost: u64,
    doubled: u64,
}

/// A steady stream of resets while the first agent process is killed, `kill_after` into it.
async fn failover(
    stack: &mut Stack,
    nodes: &[Node],
    users: usize,
    length: Duration,
    kill_after: Duration,
) -> Result<Failover> {
    let names = create_users(stack, "fail", users).await?;
    let directory = stack.dc.service_directory()?;
    let mut before = Vec::with_capacity(users);
    for name in &names {
        before.push(password_version(&directory, name).await?);
    }
    let lost = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let streams: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let clients: Result<Vec<ApiClient>> = nodes
                .iter()
                .map(|node| stack.client_for(&node.url, node.fingerprint))
                .collect();
            let directory_name = stack.directory.clone();
            let name = name.clone();
            let lost = lost.clone();
            tokio::spawn(async move {
                let clients = clients?;
                let mut latencies = Vec::new();
                let mut successes = 0u32;
                let mut turn = index;
                while started.elapsed() < length {
                    let client = &clients[turn % clients.len()];
                    turn += 1;
                    let (took, result) = reset_through(client, &directory_name, &name).await?;
                    latencies.push(took);
                    if result == ResultCode::Success {
                        successes += 1;
                    } else {
                        eprintln!("  failover: {name}: {result:?} after {took:?}");
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok::<_, anyhow::Error>((latencies, successes))
            })
        })
        .collect();
    tokio::time::sleep(kill_after).await;
    let pid = stack.agent_pid().context("the first agent runs")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    ensure!(killed.success(), "could not kill the agent");
    let mut latencies = Vec::new();
    let mut successes = Vec::new();
    for stream in streams {
        let (stream_latencies, stream_successes) = stream.await??;
        latencies.extend(stream_latencies);
        successes.push(stream_successes);
    }
    let mut doubled = 0u64;
    for ((name, before), successes) in names.iter().zip(&before).zip(&successes) {
        let writes = password_version(&directory, name).await? - before;
        if writes > *successes {
            eprintln!("  failover: {name}: {writes} writes for {successes} successes");
            doubled += u64::from(writes - successes);
        }
    }
    let requests = latencies.len();
    let p50 = p(&mut latencies, 0.5);
    let p99 = p(&mut latencies, 0.99);
    let max = percentile_ms(&latencies, 1.0);
    println!(
        "  failover: {requests} resets from {users} users over {:.1} s, agent killed at {:.1} s: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
        length.as_secs_f64(),
        kill_after.as_secs_f64()
    );
    Ok(Failover {
        p99_ms: p99,
        lost: lost.load(Ordering::Relaxed),
        doubled,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let iterations = argument("--iterations", 100)?;
    let agents = argument("--agents", 5_000)?;
    if std::env::args().any(|argument| argument == "--idle-only") {
        let server = tokio::task::spawn_blocking(PostgresServer::start).await??;
        let idle_kib = idle_agent_kib(&server, agents).await?;
        println!("cluster agents={agents} idle_agent_kib={idle_kib:.1}");
        return Ok(());
    }
    println!(
        "cluster bench: 3 nodes, 2 agents, {iterations} resets each way, {agents} simulated idle agents"
    );
    let server = tokio::task::spawn_blocking(PostgresServer::start).await??;
    let mut stack = Stack::start_with(StackOptions {
        database_url: Some(server.fresh_database().await?),
        ..StackOptions::default()
    })
    .await?;
    stack.start_second_agent().await?;
    let (node_b, client_b) = stack.start_node("node-b").await?;
    let (node_c, client_c) = stack.start_node("node-c").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client_b
        .agents()
        .await?
        .iter()
        .filter(|agent| agent.connected)
        .count()
        < 2
    {
        if Instant::now() > deadline {
            bail!("node-b did not see both agents within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (local_p50, crossing_p50) = forwarded(&stack, &client_b, iterations).await?;
    drop((client_b, client_c));
    let nodes: Vec<Node> = [
        (stack.address, stack.fingerprint),
        (node_b.address, node_b.fingerprint),
        (node_c.address, node_c.fingerprint),
    ]
    .into_iter()
    .map(|(address, fingerprint)| Node {
        url: format!("https://{address}"),
        fingerprint,
    })
    .collect();
    let (direct_rate, product_rate) = concurrent(&stack, &nodes, 32, 5, 2).await?;
    let failed_over = failover(
        &mut stack,
        &nodes,
        8,
        Duration::from_secs(8),
        Duration::from_secs(3),
    )
    .await?;
    let idle_kib = idle_agent_kib(&server, agents).await?;

    node_b.stop().await;
    node_c.stop().await;
    println!(
        "cluster nodes=3 agents=2 forwarded_ratio_p50={:.2} concurrent_ratio={:.2} failover_p99_ms={:.0} lost={} doubled={} idle_agent_kib={idle_kib:.1}",
        crossing_p50 / local_p50,
        product_rate / direct_rate,
        failed_over.p99_ms,
        failed_over.lost,
        failed_over.doubled,
    );
    Ok(())
}

/// The resident memory of process `pid`, in KiB.
fn resident_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// One idle agent: the real handshake, then heartbeats, until the connection ends. Says when it
/// is ready.
async fn simulated_agent(
    url: Arc<str>,
    trust: Arc<writeback_tls::Trust>,
    agent_id: AgentId,
    identity: Arc<IdentityKeyPair>,
    sealing_key: SealingPublicKey,
    ready: tokio::sync::mpsc::Sender<()>,
) -> Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = writeback_agent::transport::connect(&url, &trust).await?;
    let mut session = AgentSession::new(
        AgentPurpose::Work { agent_id },
        identity,
        sealing_key,
        env!("CARGO_PKG_VERSION").into(),
        SessionSettings::default(),
        UnixMillis::now(),
    );
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        let actions = tokio::select! {
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => session.on_frame(text.as_bytes(), UnixMillis::now()),
                Some(Ok(Message::Binary(bytes))) => session.on_frame(&bytes, UnixMillis::now()),
                Some(Ok(_)) => Vec::new(),
                Some(Err(error)) => bail!("the connection failed: {error}"),
                None => bail!("the cloud closed the connection"),
            },
            _ = ticker.tick() => session.on_tick(UnixMillis::now()),
        };
        for action in actions {
            match action {
                AgentAction::Send(message) => {
                    socket
                        .send(Message::Text(
                            writeback_proto::frame::encode(&message)?.into(),
                        ))
                        .await?;
                }
                AgentAction::Ready { .. } => {
                    let _ = ready.send(()).await;
                }
                AgentAction::Close { reason } => bail!("closed: {reason}"),
                // Idle: it is given nothing to do, and syncs nothing.
                _ => {}
            }
        }
    }
}

/// What one more idle agent connection costs a node: a `writeback-cloud` process of its own on a
/// database of its own, its resident memory with `count` simulated agents connected against a
/// tenth of them (so that what the first connections warm up is not counted).
async fn idle_agent_kib(server: &PostgresServer, count: usize) -> Result<f64> {
    let url = server.fresh_database().await?;
    let store = writeback_store::Store::open_postgres(&url).await?;
    let now = UnixMillis::now();
    let directory = store.ensure_directory(&"idle".parse()?, now).await?;
    let mut agents = Vec::with_capacity(count);
    for number in 0..count {
        let identity = Arc::new(IdentityKeyPair::generate()?);
        let agent = NewAgent {
            agent_id: AgentId::generate()?,
            name: format!("idle-{number}"),
            version: env!("CARGO_PKG_VERSION").into(),
            identity_key: identity.public_key(),
        };
        let token = format!("idle-agent-token-{number}").into_bytes();
        let expires = now.saturating_add(Duration::from_secs(3600));
        store
            .create_registration_token(&token, directory.id, now, expires)
            .await?;
        store.redeem_registration_token(&token, &agent, now).await?;
        agents.push((agent.agent_id, identity));
    }
    store.close().await;

    let work = std::env::temp_dir().join(format!("writeback-idle-node-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut node =
        tokio::process::Command::new(writeback_testkit::logs::binary("writeback-cloud")?)
            .arg("--data-dir")
            .arg(&work)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("WRITEBACK_CLOUD_DATABASE_URL", &url)
            .env("WRITEBACK_CLOUD_NODE_NAME", "idle-node")
            .env("WRITEBACK_CLOUD_RESOURCES__MAX_CONNECTIONS", "20000")
            .env("WRITEBACK_CLOUD_LOG__LEVEL", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
    let pid = node.id().context("the node runs")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "the idle node did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fingerprint = writeback_tls::Fingerprint::of_pem_file(&work.join("tls/cert.pem"))?;
    let trust = Arc::new(writeback_tls::Trust::Pinned(fingerprint));
    let url: Arc<str> = format!("https://127.0.0.1:{port}").into();
    let sealing_key = SealingKeyPair::generate().public_key().clone();

    let (ready_sender, mut ready) = tokio::sync::mpsc::channel(count.max(1));
    let warm = (count / 10).max(1);
    let mut connected = 0;
    let mut tasks = Vec::with_capacity(count);
    let mut baseline = None;
    for (index, (agent_id, identity)) in agents.into_iter().enumerate() {
        tasks.push(tokio::spawn(simulated_agent(
            url.clone(),
            trust.clone(),
            agent_id,
            identity,
            sealing_key.clone(),
            ready_sender.clone(),
        )));
        // Connect in waves, so that handshakes do not all time out at once.
        if (index + 1) % 200 == 0 || index + 1 == count || index + 1 == warm {
            while connected < index + 1 {
                tokio::time::timeout(Duration::from_secs(60), ready.recv())
                    .await
                    .context("simulated agents did not connect within 60 s")?;
                connected += 1;
            }
            if index + 1 == warm {
                tokio::time::sleep(Duration::from_secs(2)).await;
                baseline = Some(resident_kib(pid)?);
            }
        }
    }
    // Idle for a while: heartbeats only.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let full = resident_kib(pid)?;
    let baseline = baseline.context("the baseline was taken")?;
    let failed = tasks.iter().filter(|task| task.is_finished()).count();
    ensure!(
        failed == 0,
        "{failed} simulated agents lost their connection"
    );
    let per_agent = full.saturating_sub(baseline) as f64 / (count - warm) as f64;
    println!(
        "  idle agents: node resident {baseline} KiB with {warm} agents, {full} KiB with {count}: {per_agent:.1} KiB per agent"
    );
    for task in tasks {
        task.abort();
    }
    node.kill().await?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(per_agent)
}

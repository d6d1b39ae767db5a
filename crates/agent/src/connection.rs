//! The agent's outbound connection: dial, authenticate, serve requests, heartbeat, stream directory
//! sync; when the connection ends for any reason, back off and dial again. The decisions are made by
//! [`AgentSession`]; this is only its IO.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use writeback_directory::{Directory, DirectorySync};
use writeback_proto::frame::{self, AgentMessage, AgentStatus, RejectReason};
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::operation::Response;
use writeback_proto::session::{AgentAction, AgentPurpose, AgentSession, SessionSettings};
use writeback_proto::sync::{SyncBatch, SyncStart};
use writeback_proto::time::UnixMillis;

use crate::backoff::{Backoff, random_jitter};
use crate::executor::{Announcement, Announcer, Executor};
use crate::metrics::AgentMetrics;
use crate::state::AgentState;
use crate::sync::{self, OutgoingBatch, SYNC_WINDOW, SyncLink, SyncSettings};
use crate::transport::{self, CloudSocket};
use crate::{AgentError, VERSION};

/// A connection that lasted this long counts as healthy: the next failure starts the backoff over.
const HEALTHY_CONNECTION: Duration = Duration::from_secs(60);

/// What the connection reports besides operation results: the directory's reachability, told to
/// the cloud, and the metrics it keeps.
#[derive(Debug, Clone)]
pub struct Reporting {
    pub directory_status: watch::Receiver<AgentStatus>,
    pub metrics: Arc<AgentMetrics>,
}

#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub sealing_key_rotation: Duration,
    /// Cloud nodes besides the registered one, tried in turn when a node cannot be reached.
    pub other_cloud_urls: Vec<String>,
}

/// Holds the connection to the cloud until `shutdown` resolves, reconnecting whenever it drops.
pub async fn run<D: Directory + DirectorySync + 'static>(
    state: Arc<AgentState>,
    save_state: impl Fn(&AgentState) -> Result<(), AgentError>,
    executor: Arc<Executor<D>>,
    sync: Option<SyncSettings>,
    reporting: Reporting,
    policy: ReconnectPolicy,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Backoff::new(policy.initial_delay, policy.max_delay);
    let mut cloud_urls = vec![state.cloud_url.clone()];
    for url in &policy.other_cloud_urls {
        if !cloud_urls.contains(url) {
            cloud_urls.push(url.clone());
        }
    }
    let mut node = 0;
    loop {
        if state.rotate_if_due(policy.sealing_key_rotation, UnixMillis::now()) {
            match save_state(&state) {
                Ok(()) => {
                    tracing::info!(key_id = ?state.current_sealing_key().map(|key| key.key_id), event_id = 31018, "rotated the sealing key")
                }
                Err(error) => {
                    tracing::error!(%error, "rotated the sealing key but could not save it")
                }
            }
        }
        let started = UnixMillis::now();
        let cloud_url = cloud_urls.get(node).unwrap_or(&state.cloud_url);
        let ended = tokio::select! {
            ended = serve_once(&state, cloud_url, executor.clone(), sync.as_ref(), reporting.clone()) => ended,
            () = &mut shutdown => return,
        };
        reporting.metrics.connected.store(false, Ordering::Relaxed);
        match ended {
            Ok(reason) => {
                tracing::warn!(%reason, event_id = 32002, "connection to the cloud ended")
            }
            Err(error) => {
                tracing::warn!(%error, cloud = %cloud_url, event_id = 32001, "cannot hold a connection to the cloud");
                // This node may be gone: the next try goes to the next one.
                node = (node + 1) % cloud_urls.len();
            }
        }
        if UnixMillis::now().duration_since(started) >= HEALTHY_CONNECTION {
            backoff.reset();
        }
        let delay = backoff.next_delay(random_jitter());
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            event_id = 32014,
            "reconnecting to the cloud"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return,
        }
    }
}

/// The sync task of one connection. Dropping it stops the task and discards its unsent batches.
struct RunningSync {
    task: tokio::task::JoinHandle<()>,
    batches: mpsc::Receiver<(OutgoingBatch, OwnedSemaphorePermit)>,
}

impl Drop for RunningSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningSync {
    /// `window` belongs to the connection, so batches of a replaced sync that are still awaiting
    /// their acknowledgement keep counting against it.
    fn start<D: Directory + DirectorySync + 'static>(
        executor: Arc<Executor<D>>,
        start: SyncStart,
        settings: SyncSettings,
        window: Arc<Semaphore>,
    ) -> Self {
        let (batches, receiver) = mpsc::channel(SYNC_WINDOW);
        let link = SyncLink { batches, window };
        let task = tokio::spawn(async move {
            sync::run(executor.directory(), start, &settings, &link).await;
        });
        Self {
            task,
            batches: receiver,
        }
    }
}

/// The next batch of the running sync, if there is one; otherwise waits forever.
async fn next_batch(
    running: &mut Option<RunningSync>,
) -> Option<(OutgoingBatch, OwnedSemaphorePermit)> {
    match running {
        Some(running) => running.batches.recv().await,
        None => std::future::pending().await,
    }
}

/// One connection, from dial to close. `Ok` carries why a working connection ended.
async fn serve_once<D: Directory + DirectorySync + 'static>(
    state: &AgentState,
    cloud_url: &str,
    executor: Arc<Executor<D>>,
    sync_settings: Option<&SyncSettings>,
    reporting: Reporting,
) -> Result<String, AgentError> {
    let Reporting {
        mut directory_status,
        metrics,
    } = reporting;
    let trust = state.cloud_trust.to_trust()?;
    let mut socket = transport::connect(cloud_url, &trust).await?;
    let sealing_key = state
        .current_sealing_key()
        .ok_or_else(|| AgentError::State("no sealing key".into()))?;
    let mut session = AgentSession::new(
        AgentPurpose::Work {
            agent_id: state.agent_id,
        },
        state.identity.clone(),
        sealing_key,
        VERSION.into(),
        SessionSettings::default(),
        UnixMillis::now(),
    );
    let (results, mut finished) = mpsc::channel::<Response>(64);
    let (announcements, mut announced) = mpsc::channel::<Announcement>(64);
    let announcer = Announcer::on(announcements);
    let mut ticker = tokio::time::interval(writeback_proto::session::TICK);
    let mut running_sync: Option<RunningSync> = None;
    let sync_window = Arc::new(Semaphore::new(SYNC_WINDOW));
    let mut batch_sequence = 0u64;
    loop {
        let actions = tokio::select! {
            incoming = socket.next() => match feed(&mut session, incoming) {
                Ok(actions) => actions,
                Err(reason) => return Ok(reason),
            },
            Some(response) = finished.recv() => vec![AgentAction::Send(AgentMessage::Response(response))],
            Some(announcement) = announced.recv() => {
                let message = AgentMessage::AboutToWrite {
                    request_id: announcement.request_id,
                    before: announcement.before,
                };
                let sent = send(&mut socket, &message).await;
                let _ = announcement.written.send(sent.is_ok());
                sent?;
                Vec::new()
            }
            Some((batch, permit)) = next_batch(&mut running_sync) => {
                // Returned when the cloud acknowledges a batch.
                permit.forget();
                batch_sequence += 1;
                metrics.sync_changes.add(&[], batch.changes.len() as u64);
                vec![AgentAction::Send(AgentMessage::SyncBatch(SyncBatch {
                    sequence: batch_sequence,
                    changes: batch.changes,
                    cursor: batch.cursor,
                    completes_full_sync: batch.completes == sync::Completes::FullSync,
                    completes_reconciliation: batch.completes == sync::Completes::Reconciliation,
                }))]
            }
            _ = ticker.tick() => session.on_tick(UnixMillis::now()),
            Ok(()) = directory_status.changed(), if session.is_ready() => {
                vec![AgentAction::Send(AgentMessage::Status(directory_status.borrow_and_update().clone()))]
            }
        };
        for action in actions {
            match action {
                AgentAction::Send(message) => send(&mut socket, &message).await?,
                AgentAction::Ready { heartbeat_interval } => {
                    tracing::info!(agent_id = %state.agent_id, directory = %state.directory, cloud = %cloud_url, heartbeat_s = heartbeat_interval.as_secs(), event_id = 31015, "connected to the cloud");
                    metrics.connected.store(true, Ordering::Relaxed);
                    let status = directory_status.borrow_and_update().clone();
                    send(&mut socket, &AgentMessage::Status(status)).await?;
                }
                AgentAction::Execute(request) => {
                    fail::fail_point!("after-receipt", |_| crate::executor::crash("after-receipt"));
                    let executor = executor.clone();
                    let announcer = announcer.clone();
                    let results = results.clone();
                    let metrics = metrics.clone();
                    // Requests run concurrently; a result for a connection that has since closed
                    // is dropped here but kept in the journal for the cloud's resend.
                    tokio::spawn(async move {
                        let operation = request.operation.kind();
                        let started = std::time::Instant::now();
                        metrics.requests_in_flight.fetch_add(1, Ordering::Relaxed);
                        let verdict = executor.execute(&request, &announcer).await;
                        metrics.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
                        metrics
                            .operations
                            .increment(&[operation.as_str(), verdict.result.code()]);
                        metrics
                            .operation_seconds
                            .observe(&[operation.as_str()], started.elapsed().as_secs_f64());
                        let _ = results
                            .send(Response {
                                request_id: request.request_id,
                                result: verdict.result,
                                warnings: verdict.warnings,
                                trace: verdict.trace,
                            })
                            .await;
                    });
                }
                AgentAction::StartSync(start) => match sync_settings {
                    Some(settings) => {
                        // Replacing the running sync aborts it and discards its unsent batches.
                        running_sync = Some(RunningSync::start(
                            executor.clone(),
                            start,
                            settings.clone(),
                            sync_window.clone(),
                        ));
                    }
                    None => tracing::info!(
                        "the cloud asked for directory sync, which is disabled in this agent's configuration"
                    ),
                },
                AgentAction::SyncAcknowledged { .. } => sync_window.add_permits(1),
                AgentAction::Rejected { reason, message } => {
                    let hint = match reason {
                        RejectReason::UnknownAgent | RejectReason::Revoked => {
                            " (register this agent again with a new token)"
                        }
                        _ => "",
                    };
                    tracing::error!(?reason, %message, event_id = 32009, "the cloud refused this agent{hint}");
                }
                AgentAction::Close { reason } => {
                    let _ = socket.close(None).await;
                    return Ok(reason);
                }
                AgentAction::Registered { .. } => {}
            }
        }
    }
}

/// Hands one received WebSocket message to the session. `Err` says why the connection ended.
fn feed(
    session: &mut AgentSession,
    incoming: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<Vec<AgentAction>, String> {
    match incoming {
        Some(Ok(Message::Text(text))) => Ok(session.on_frame(text.as_bytes(), UnixMillis::now())),
        Some(Ok(Message::Binary(bytes))) => Ok(session.on_frame(&bytes, UnixMillis::now())),
        Some(Ok(Message::Close(frame))) => {
            let reason = frame
                .map(|frame| frame.reason.to_string())
                .unwrap_or_default();
            Err(format!("the cloud closed the connection: {reason}"))
        }
        Some(Ok(_)) => Ok(Vec::new()),
        Some(Err(error)) => Err(format!("connection error: {error}")),
        None => Err("the connection was closed".into()),
    }
}

async fn send(socket: &mut CloudSocket, message: &AgentMessage) -> Result<(), AgentError> {
    let text = frame::encode(message).map_err(|error| AgentError::Transport(error.to_string()))?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|error| AgentError::Transport(format!("sending to the cloud failed: {error}")))
}

/// Registers with the cloud using a one-time token; returns the agent's new id and directory.
pub async fn register(
    cloud_url: &str,
    trust: &writeback_tls::Trust,
    token: SecretString,
    name: String,
    identity: Arc<writeback_proto::identity::IdentityKeyPair>,
    sealing_key: writeback_proto::sealing::SealingPublicKey,
) -> Result<(AgentId, DirectoryName), AgentError> {
    let mut socket = transport::connect(cloud_url, trust).await?;
    let mut session = AgentSession::new(
        AgentPurpose::Register { token, name },
        identity,
        sealing_key,
        VERSION.into(),
        SessionSettings::default(),
        UnixMillis::now(),
    );
    let mut ticker = tokio::time::interval(writeback_proto::session::TICK);
    loop {
        let actions = tokio::select! {
            incoming = socket.next() => feed(&mut session, incoming)
                .map_err(|reason| AgentError::Transport(format!("registration interrupted: {reason}")))?,
            _ = ticker.tick() => session.on_tick(UnixMillis::now()),
        };
        for action in actions {
            match action {
                AgentAction::Send(message) => send(&mut socket, &message).await?,
                AgentAction::Registered {
                    agent_id,
                    directory,
                } => {
                    let _ = socket.close(None).await;
                    return Ok((agent_id, directory));
                }
                AgentAction::Rejected { message, .. } => return Err(AgentError::Rejected(message)),
                AgentAction::Close { reason } => return Err(AgentError::Transport(reason)),
                AgentAction::Ready { .. }
                | AgentAction::Execute(_)
                | AgentAction::StartSync(_)
                | AgentAction::SyncAcknowledged { .. } => {}
            }
        }
    }
}

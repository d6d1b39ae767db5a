//! One agent's WebSocket connection: the IO around [`CloudSession`], which makes every decision.

use std::collections::VecDeque;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use tokio::sync::mpsc;
use writeback_proto::frame::{self, CloudMessage, MAX_FRAME_BYTES, RejectReason};
use writeback_proto::ids::{DirectoryName, random_bytes};
use writeback_proto::session::{CloudAction, CloudSession, RegisteredIdentity, SessionSettings};
use writeback_proto::sync::SyncBatch;
use writeback_proto::time::UnixMillis;

use crate::service::agents::redeem;
use crate::service::directory_sync;
use crate::service::relay::{AgentConnection, sync};
use crate::service::state::{AppState, stopped};
use crate::web::client::Origin;

/// WebSocket close code for "message too big" (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;

/// How often an agent's heartbeat is written to the store: each one (every 500 ms) would be a
/// write per agent twice a second, which thousands of agents would turn into the store's whole
/// load. The connection itself is judged by every heartbeat, in memory.
const HEARTBEAT_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// What an agent connection reads into at a time.
const AGENT_SOCKET_READ_BUFFER: usize = 4 * 1024;

pub async fn upgrade(
    State(state): State<AppState>,
    Origin(origin): Origin,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Frames a little over the protocol limit reach the decoder and get a clear protocol error;
    // far larger ones are cut off by the WebSocket layer itself.
    // An idle agent sends a heartbeat of a few dozen bytes twice a second: small buffers keep
    // thousands of connections cheap (the defaults are 128 KiB each way), and a large frame
    // still arrives whole, read in more pieces.
    upgrade
        .max_message_size(MAX_FRAME_BYTES * 2)
        .max_frame_size(MAX_FRAME_BYTES * 2)
        .read_buffer_size(AGENT_SOCKET_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| serve(socket, state, origin))
}

async fn serve(mut socket: WebSocket, state: AppState, origin: Option<String>) {
    let Ok(nonce) = random_bytes::<32>() else {
        tracing::error!("no randomness for an agent challenge; refusing the connection");
        return;
    };
    let settings = SessionSettings {
        heartbeat_interval: state.config.heartbeat_interval(),
        ..SessionSettings::default()
    };
    let (mut session, challenge) = CloudSession::new(nonce, UnixMillis::now(), settings);
    let (outbound, mut outbound_queue) = mpsc::channel::<CloudMessage>(64);
    let mut registered: Option<AgentConnection> = None;
    let mut heartbeat_recorded = UnixMillis(0);
    // Boxed, as the relay's frames are: a channel allocates room for 32 items at its creation, for
    // every connection, most of which never sync.
    let mut sync_batches: Option<mpsc::Sender<Box<SyncBatch>>> = None;
    let mut sync_applier: Option<tokio::task::JoinHandle<()>> = None;
    let mut agent_directory: Option<DirectoryName> = None;
    let mut ticker = tokio::time::interval(writeback_proto::session::TICK);
    let mut stopping = state.stopping.clone();
    let mut actions = VecDeque::from([CloudAction::Send(challenge)]);

    let close_reason = 'connection: loop {
        while let Some(action) = actions.pop_front() {
            match action {
                CloudAction::Send(message) => {
                    if let Err(reason) = send(&mut socket, &message).await {
                        break 'connection reason;
                    }
                }
                CloudAction::LookUpIdentity(agent_id) => match state.store.agent(&agent_id).await {
                    Ok(record) => {
                        agent_directory = record.as_ref().map(|record| record.directory.clone());
                        actions.extend(session.on_identity(record.map(|record| {
                            RegisteredIdentity {
                                key: record.identity_key,
                                revoked: record.revoked_at.is_some(),
                            }
                        })));
                    }
                    Err(error) => {
                        tracing::error!(%error, %agent_id, "cannot look up an agent");
                        actions.extend(session.on_lookup_failed());
                    }
                },
                CloudAction::Redeem(registration) => {
                    let outcome = redeem(&state, &registration, origin.clone()).await;
                    actions.extend(session.on_registration(outcome));
                }
                CloudAction::Authenticated(agent) => {
                    let Some(directory) = agent_directory.clone() else {
                        break 'connection "authenticated agent has no directory".to_owned();
                    };
                    let now = UnixMillis::now();
                    if let Err(error) = state
                        .store
                        .record_agent_connected(
                            &agent.agent_id,
                            &agent.version,
                            origin.as_deref(),
                            now,
                        )
                        .await
                    {
                        tracing::error!(%error, "cannot record an agent connection");
                    }
                    heartbeat_recorded = now;
                    tracing::info!(agent_id = %agent.agent_id, %directory, version = %agent.version, sealing_key = %agent.sealing_key.key_id, "agent connected");
                    let connection = state.relay.connect(&agent, directory, outbound.clone());
                    let (batches, queue) = mpsc::channel(sync::QUEUED_BATCHES);
                    sync_batches = Some(batches);
                    sync_applier = Some(tokio::spawn(directory_sync::apply_batches(
                        state.clone(),
                        connection.clone(),
                        queue,
                    )));
                    registered = Some(connection);
                }
                CloudAction::HeartbeatReceived { .. } => {
                    let now = UnixMillis::now();
                    if let Some(connection) = &registered
                        && now.duration_since(heartbeat_recorded) >= HEARTBEAT_RECORD_INTERVAL
                    {
                        heartbeat_recorded = now;
                        if let Err(error) = state
                            .store
                            .record_agent_heartbeat(&connection.agent_id, now)
                            .await
                        {
                            tracing::error!(%error, "cannot record a heartbeat");
                        }
                    }
                }
                CloudAction::StatusReported(status) => {
                    if let Some(connection) = &registered {
                        if !status.directory_reachable {
                            tracing::warn!(agent_id = %connection.agent_id, detail = ?status.detail, "the agent cannot reach its directory");
                        }
                        state.relay.report_status(connection, status);
                    }
                }
                CloudAction::AboutToWrite { request_id, before } => {
                    if let Some(connection) = &registered {
                        state.relay.about_to_write(connection, request_id, before);
                    }
                }
                CloudAction::Deliver(response) => {
                    if let Some(connection) = &registered {
                        state.relay.deliver(connection, response);
                    }
                }
                CloudAction::ApplySync(batch) => {
                    let queued = match &sync_batches {
                        Some(batches) => batches.try_send(Box::new(batch)).is_ok(),
                        None => false,
                    };
                    if !queued {
                        actions.push_back(CloudAction::Send(CloudMessage::ProtocolError {
                            message: format!(
                                "more than {} sync batches sent without acknowledgement",
                                sync::QUEUED_BATCHES
                            ),
                        }));
                        actions.push_back(CloudAction::Close {
                            reason: "the agent overran the sync window".into(),
                        });
                    }
                }
                CloudAction::Close { reason } => break 'connection reason,
            }
        }
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => actions.extend(session.on_frame(text.as_bytes(), UnixMillis::now())),
                Some(Ok(Message::Binary(bytes))) => actions.extend(session.on_frame(&bytes, UnixMillis::now())),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break 'connection "the agent closed the connection".to_owned(),
                Some(Err(error)) => {
                    let reason = format!("unreadable WebSocket message: {error}");
                    let code = if error.to_string().contains("too long") || error.to_string().contains("too big") {
                        CLOSE_TOO_BIG
                    } else {
                        CLOSE_POLICY
                    };
                    close(&mut socket, code, &reason).await;
                    break 'connection reason;
                }
            },
            Some(message) = outbound_queue.recv() => actions.push_back(CloudAction::Send(message)),
            _ = ticker.tick() => actions.extend(session.on_tick(UnixMillis::now())),
            () = revoked(registered.as_ref()) => {
                let reason = RejectReason::Revoked;
                let _ = send(&mut socket, &CloudMessage::Rejected { reason, message: reason.describe().into() }).await;
                break 'connection "the agent was revoked".to_owned();
            }
            () = stopped(&mut stopping) => {
                close(&mut socket, CLOSE_GOING_AWAY, "the cloud is shutting down").await;
                break 'connection "the cloud is shutting down".to_owned();
            }
        }
    };

    close(&mut socket, CLOSE_POLICY, &close_reason).await;
    // The batches already received are stored before the agent's next connection may sync.
    drop(sync_batches);
    drop(outbound_queue);
    if let Some(applier) = sync_applier {
        let _ = applier.await;
    }
    match &registered {
        Some(connection) => {
            state.relay.disconnect(connection);
            tracing::info!(agent_id = %connection.agent_id, reason = %close_reason, "agent disconnected");
            if let Err(error) = state
                .store
                .record_agent_error(&connection.agent_id, &close_reason)
                .await
            {
                tracing::error!(%error, "cannot record an agent disconnection");
            }
        }
        None => {
            tracing::info!(reason = %close_reason, "agent connection ended before authentication")
        }
    }
}

async fn revoked(connection: Option<&AgentConnection>) {
    match connection {
        Some(connection) => connection.revoked().await,
        None => std::future::pending().await,
    }
}

async fn send(socket: &mut WebSocket, message: &CloudMessage) -> Result<(), String> {
    let text = frame::encode(message).map_err(|error| error.to_string())?;
    socket
        .send(Message::Text(Utf8Bytes::from(text)))
        .await
        .map_err(|error| format!("sending to the agent failed: {error}"))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    // A close reason may be at most 123 bytes.
    let mut reason = reason.to_owned();
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

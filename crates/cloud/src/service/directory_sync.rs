//! Applying an agent's sync batches to the store, one applier per connection and one at a time
//! per directory (see [`crate::service::relay::sync`]).

use tokio::sync::mpsc;
use writeback_proto::frame::CloudMessage;
use writeback_proto::ids::DirectoryName;
use writeback_proto::sync::{SyncBatch, SyncStart};
use writeback_proto::time::UnixMillis;

use crate::service::relay::AgentConnection;
use crate::service::state::AppState;

/// Runs for the life of one agent connection (and until its last received batch is stored).
pub async fn apply_batches(
    state: AppState,
    connection: AgentConnection,
    mut batches: mpsc::Receiver<Box<SyncBatch>>,
) {
    let directory = connection.directory.clone();
    let lock = state.relay.sync.lock_for(&directory);
    let _turn = tokio::select! {
        guard = lock.lock_owned() => guard,
        () = connection.closed() => return,
    };
    state.relay.sync.set_owner(&connection);
    match state.store.sync_start(&directory).await {
        Ok(start) => {
            tracing::info!(agent_id = %connection.agent_id, %directory, full = start.full, resume = start.cursor.is_some(), "directory sync starting");
            if !connection
                .send(CloudMessage::SyncStart(Box::new(start)))
                .await
            {
                state.relay.sync.clear_owner(&connection);
                return;
            }
        }
        Err(error) => {
            tracing::error!(%error, %directory, "cannot read the sync cursor; directory sync waits for the next connection");
            state.relay.sync.clear_owner(&connection);
            return;
        }
    }
    while let Some(batch) = batches.recv().await {
        let started = std::time::Instant::now();
        match state
            .store
            .apply_sync_batch(&directory, &batch, UnixMillis::now())
            .await
        {
            Ok(()) => {
                tracing::debug!(%directory, summary = %batch.summary(), elapsed_us = started.elapsed().as_micros() as u64, "sync batch stored");
                // The connection may be gone; the batch is stored either way.
                let _ = connection
                    .send(CloudMessage::SyncAck {
                        sequence: batch.sequence,
                    })
                    .await;
            }
            Err(error) => {
                // Not acknowledged, so the agent stops; on its next connection it resumes from
                // the last cursor that was stored.
                tracing::error!(%error, %directory, summary = %batch.summary(), "cannot store a sync batch; asking the agent to reconnect");
                let _ = connection
                    .send(CloudMessage::ProtocolError {
                        message: "the cloud could not store a sync batch; reconnect and resume"
                            .into(),
                    })
                    .await;
                break;
            }
        }
    }
    state.relay.sync.clear_owner(&connection);
}

/// Asks the agent syncing `directory`, if one is connected, to start a full sync now. Otherwise
/// the stored request starts one when an agent connects.
pub async fn request_full_sync(
    state: &AppState,
    directory: &DirectoryName,
) -> Result<bool, writeback_store::StoreError> {
    state.store.request_full_sync(directory).await?;
    let Some(owner) = state.relay.sync.owner(directory) else {
        return Ok(false);
    };
    let start = state.store.sync_start(directory).await?;
    Ok(owner
        .send(CloudMessage::SyncStart(Box::new(SyncStart {
            cursor: start.cursor,
            full: true,
        })))
        .await)
}

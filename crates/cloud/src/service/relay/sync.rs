//! Applying an agent's sync batches. One applier per authenticated connection, and one at a time
//! per directory: an applier holds its directory's sync lock from before it tells the agent where
//! to start until its last batch is stored. So a reconnecting agent starts from the cursor its
//! previous connection committed last, batches are stored strictly in order, and of several agents
//! of one directory only one syncs; another takes over when it goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use writeback_proto::ids::DirectoryName;

use super::connection::AgentConnection;

/// Batches queued for the applier; the agent never has more than its window in flight.
pub const QUEUED_BATCHES: usize = 32;

/// The directories being synced, and by which connection.
#[derive(Debug, Default)]
pub struct SyncOwners {
    locks: Mutex<HashMap<DirectoryName, Arc<tokio::sync::Mutex<()>>>>,
    owners: Mutex<HashMap<DirectoryName, AgentConnection>>,
}

impl SyncOwners {
    pub fn lock_for(&self, directory: &DirectoryName) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(directory.clone())
            .or_default()
            .clone()
    }

    /// The connection syncing `directory` now, if any.
    pub fn owner(&self, directory: &DirectoryName) -> Option<AgentConnection> {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(directory)
            .cloned()
    }

    pub fn set_owner(&self, connection: &AgentConnection) {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection.directory.clone(), connection.clone());
    }

    pub fn clear_owner(&self, connection: &AgentConnection) {
        let mut owners = self.owners.lock().unwrap_or_else(PoisonError::into_inner);
        if owners
            .get(&connection.directory)
            .is_some_and(|owner| owner.connection_id == connection.connection_id)
        {
            owners.remove(&connection.directory);
        }
    }
}

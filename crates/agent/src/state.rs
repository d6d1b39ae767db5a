//! The agent's identity on disk: `agent.json`, mode 0600, written atomically. It holds the agent
//! id, the cloud's address and how to trust it, the Ed25519 identity key and the sealing keys
//! (current first, the previous one kept until the next rotation).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use writeback_proto::identity::IdentityKeyPair;
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_proto::sealing::SealingKeyPair;
use writeback_proto::time::UnixMillis;
use writeback_tls::{Fingerprint, Trust};
use zeroize::Zeroize;

use crate::AgentError;

/// How the agent trusts the cloud's certificate, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudTrust {
    SystemRoots,
    CaFile(PathBuf),
    /// SHA-256 fingerprint of the cloud's certificate.
    Pinned(String),
}

impl CloudTrust {
    pub fn to_trust(&self) -> Result<Trust, AgentError> {
        Ok(match self {
            Self::SystemRoots => Trust::SystemRoots,
            Self::CaFile(path) => Trust::CaFile(path.clone()),
            Self::Pinned(text) => Trust::Pinned(
                text.parse::<Fingerprint>()
                    .map_err(|error| AgentError::State(error.to_string()))?,
            ),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredState {
    agent_id: AgentId,
    directory: DirectoryName,
    cloud_url: String,
    cloud_trust: CloudTrust,
    identity_key: String,
    sealing_keys: Vec<StoredSealingKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSealingKey {
    secret: String,
    created_at: UnixMillis,
}

impl Drop for StoredState {
    fn drop(&mut self) {
        self.identity_key.zeroize();
        for key in &mut self.sealing_keys {
            key.secret.zeroize();
        }
    }
}

/// The sealing keys the agent can open passwords with, shared between the connection loop (which
/// rotates them) and the executor (which opens with them).
#[derive(Debug, Clone, Default)]
pub struct KeyRing(Arc<RwLock<Vec<(SealingKeyPair, UnixMillis)>>>);

impl KeyRing {
    pub fn with<T>(&self, read: impl FnOnce(&[(SealingKeyPair, UnixMillis)]) -> T) -> T {
        let keys = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&keys)
    }

    fn replace(&self, keys: Vec<(SealingKeyPair, UnixMillis)>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
    }
}

#[derive(Debug)]
pub struct AgentState {
    pub agent_id: AgentId,
    pub directory: DirectoryName,
    pub cloud_url: String,
    pub cloud_trust: CloudTrust,
    pub identity: Arc<IdentityKeyPair>,
    pub keys: KeyRing,
}

impl AgentState {
    pub fn new(
        agent_id: AgentId,
        directory: DirectoryName,
        cloud_url: String,
        cloud_trust: CloudTrust,
        identity: IdentityKeyPair,
        sealing: SealingKeyPair,
        now: UnixMillis,
    ) -> Self {
        let keys = KeyRing::default();
        keys.replace(vec![(sealing, now)]);
        Self {
            agent_id,
            directory,
            cloud_url,
            cloud_trust,
            identity: Arc::new(identity),
            keys,
        }
    }

    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let metadata = std::fs::metadata(path).map_err(|source| AgentError::Io {
            context: format!(
                "reading {} (has this agent been registered?)",
                path.display()
            ),
            source,
        })?;
        if metadata.permissions().mode() & 0o077 != 0 {
            return Err(AgentError::State(format!(
                "{} holds private keys but others may read it; run chmod 600 on it",
                path.display()
            )));
        }
        let mut text = std::fs::read_to_string(path).map_err(|source| AgentError::Io {
            context: format!("reading {}", path.display()),
            source,
        })?;
        let parsed = serde_json::from_str::<StoredState>(&text);
        text.zeroize();
        let stored = parsed.map_err(|error| {
            AgentError::State(format!(
                "{} is not a valid agent state: {error}",
                path.display()
            ))
        })?;
        let identity_bytes = decode_key(&stored.identity_key, "identity key")?;
        let identity = IdentityKeyPair::from_secret_bytes(&identity_bytes);
        let mut sealing = Vec::new();
        for key in &stored.sealing_keys {
            let bytes = decode_key(&key.secret, "sealing key")?;
            sealing.push((
                SealingKeyPair::from_secret_bytes(&bytes)
                    .map_err(|error| AgentError::State(error.to_string()))?,
                key.created_at,
            ));
        }
        if sealing.is_empty() {
            return Err(AgentError::State(format!(
                "{} holds no sealing key",
                path.display()
            )));
        }
        let keys = KeyRing::default();
        keys.replace(sealing);
        Ok(Self {
            agent_id: stored.agent_id,
            directory: stored.directory.clone(),
            cloud_url: stored.cloud_url.clone(),
            cloud_trust: stored.cloud_trust.clone(),
            identity: Arc::new(identity),
            keys,
        })
    }

    /// Writes the state atomically (temporary file, then rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), AgentError> {
        let io = |context: String| move |source| AgentError::Io { context, source };
        let stored = StoredState {
            agent_id: self.agent_id,
            directory: self.directory.clone(),
            cloud_url: self.cloud_url.clone(),
            cloud_trust: self.cloud_trust.clone(),
            identity_key: STANDARD.encode(*self.identity.secret_bytes()),
            sealing_keys: self.keys.with(|keys| {
                keys.iter()
                    .map(|(key, created_at)| StoredSealingKey {
                        secret: STANDARD.encode(*key.secret_bytes()),
                        created_at: *created_at,
                    })
                    .collect()
            }),
        };
        let mut text = serde_json::to_string_pretty(&stored)
            .map_err(|error| AgentError::State(error.to_string()))?;
        drop(stored);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let temporary = path.with_extension("json.tmp");
        let written = writeback_config::write_private_file(&temporary, text.as_bytes());
        text.zeroize();
        written.map_err(io(format!("writing {}", temporary.display())))?;
        std::fs::rename(&temporary, path).map_err(io(format!("replacing {}", path.display())))
    }

    /// Generates a new sealing key when the current one is older than `max_age`, keeping the
    /// previous one. Returns whether it rotated.
    pub fn rotate_if_due(&self, max_age: std::time::Duration, now: UnixMillis) -> bool {
        let due = self.keys.with(|keys| {
            keys.first()
                .is_none_or(|(_, created_at)| now.duration_since(*created_at) >= max_age)
        });
        if due {
            let previous = self.keys.with(|keys| keys.first().cloned());
            let keys = std::iter::once((SealingKeyPair::generate(), now))
                .chain(previous)
                .collect();
            self.keys.replace(keys);
        }
        due
    }

    pub fn current_sealing_key(&self) -> Option<writeback_proto::sealing::SealingPublicKey> {
        self.keys
            .with(|keys| keys.first().map(|(key, _)| key.public_key().clone()))
    }
}

fn decode_key(text: &str, what: &str) -> Result<zeroize::Zeroizing<[u8; 32]>, AgentError> {
    let bytes = zeroize::Zeroizing::new(
        STANDARD
            .decode(text)
            .map_err(|_| AgentError::State(format!("the stored {what} is not base64")))?,
    );
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(AgentError::State(format!(
            "the stored {what} has the wrong length"
        )));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn state() -> AgentState {
        AgentState::new(
            AgentId::generate().unwrap(),
            "corp".parse().unwrap(),
            "https://cloud.example:8443".into(),
            CloudTrust::Pinned("ab".repeat(32)),
            IdentityKeyPair::generate().unwrap(),
            SealingKeyPair::generate(),
            UnixMillis(1_000),
        )
    }

    fn temporary_path(name: &str) -> PathBuf {
        std::env::temp_dir()
            .join(format!(
                "writeback-agent-state-{}-{name}",
                std::process::id()
            ))
            .join("agent.json")
    }

    #[test]
    fn state_round_trips_through_a_private_file() {
        let path = temporary_path("round-trip");
        let original = state();
        original.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = AgentState::load(&path).unwrap();
        assert_eq!(loaded.agent_id, original.agent_id);
        assert_eq!(loaded.identity.public_key(), original.identity.public_key());
        assert_eq!(loaded.current_sealing_key(), original.current_sealing_key());
        assert_eq!(loaded.cloud_trust, original.cloud_trust);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_state_file_readable_by_others_is_refused() {
        let path = temporary_path("permissions");
        state().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = AgentState::load(&path).unwrap_err();
        assert!(error.to_string().contains("chmod 600"), "{error}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn sealing_keys_rotate_when_due_and_keep_the_previous_one() {
        let state = state();
        let first = state.current_sealing_key().unwrap();
        let day = Duration::from_secs(86_400);
        assert!(!state.rotate_if_due(
            day,
            UnixMillis(1_000).saturating_add(Duration::from_secs(60))
        ));
        assert!(state.rotate_if_due(day, UnixMillis(1_000).saturating_add(day)));
        let second = state.current_sealing_key().unwrap();
        assert_ne!(first, second);
        let held: Vec<_> = state.keys.with(|keys| {
            keys.iter()
                .map(|(key, _)| key.public_key().clone())
                .collect()
        });
        assert_eq!(held, vec![second, first]);
    }
}

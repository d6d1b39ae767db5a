//! Secrets the cloud must read back (administrators' authenticator keys, and what checks each
//! self-service method) are sealed before they reach the store, with a key kept outside the
//! database: a copy of the database alone opens none of them.
//!
//! The key file holds one key per line, `<id> <base64 key>`, the current one first; it is created
//! 0600 at first start. A sealed value is `wbk1`, the key id, a random nonce and the
//! XChaCha20-Poly1305 ciphertext of the secret, with the row it belongs to as associated data,
//! so a value copied to another row does not open. Rotation ([`rotate`]) adds a new key, re-seals
//! every value under it in one transaction, then drops the old key; the file holds both keys
//! until the transaction commits, so a crash at any point leaves everything openable.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use writeback_proto::ids::random_bytes;
use writeback_store::{SecretOwner, Store};
use zeroize::Zeroizing;

use crate::service::error::CloudError;

const MAGIC: &[u8; 4] = b"wbk1";
const KEY_ID_BYTES: usize = 4;
const NONCE_BYTES: usize = 24;
const HEADER_BYTES: usize = MAGIC.len() + KEY_ID_BYTES + NONCE_BYTES;

/// The keys of the key file; the first seals, all of them open.
pub struct SecretKeys {
    keys: Vec<(u32, Zeroizing<[u8; 32]>)>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.keys.iter().map(|(id, _)| *id).collect();
        formatter
            .debug_struct("SecretKeys")
            .field("key_ids", &ids)
            .finish()
    }
}

fn invalid(message: impl Into<String>) -> CloudError {
    CloudError::InvalidInput(message.into())
}

fn internal(error: impl std::fmt::Display) -> CloudError {
    CloudError::Internal(error.to_string())
}

/// What a sealed value is bound to.
fn associated_data(owner: SecretOwner<'_>) -> Vec<u8> {
    let label = match owner {
        SecretOwner::Administrator { id } => format!("administrator\0{id}"),
        SecretOwner::Method {
            directory,
            user_anchor,
            method,
        } => format!("method\0{directory}\0{user_anchor}\0{method}"),
        SecretOwner::PortalEntry { kind, key } => {
            let key: String = key.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("portal\0{kind}\0{key}")
        }
        SecretOwner::BusMessage { channel } => format!("bus\0{channel}"),
    };
    [b"writeback sealed secret\0".as_slice(), label.as_bytes()].concat()
}

/// Whether `value` is sealed at all (a value written before sealing existed is not).
pub fn is_sealed(value: &[u8]) -> bool {
    value.len() > HEADER_BYTES && value.starts_with(MAGIC)
}

impl SecretKeys {
    /// One new random key.
    pub fn generate() -> Result<Self, CloudError> {
        Ok(Self {
            keys: vec![(1, new_key()?)],
        })
    }

    /// The keys in `path`, or a new key written there (0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, CloudError> {
        if path.exists() {
            let text =
                Zeroizing::new(
                    std::fs::read_to_string(path).map_err(|source| CloudError::Io {
                        context: format!("reading the secrets key {}", path.display()),
                        source,
                    })?,
                );
            return Self::parse(&text)
                .map_err(|problem| invalid(format!("{}: {problem}", path.display())));
        }
        let keys = Self::generate()?;
        keys.write(path)?;
        tracing::info!(path = %path.display(), "created the key that seals stored secrets");
        Ok(keys)
    }

    fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
            let (id, encoded) = line
                .split_once(' ')
                .ok_or("each line must be `<id> <base64 key>`")?;
            let id: u32 = id.parse().map_err(|_| "a key id is not a number")?;
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(encoded.trim())
                    .map_err(|_| "a key is not base64")?,
            );
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| "a key is not 32 bytes")?;
            keys.push((id, Zeroizing::new(key)));
        }
        if keys.is_empty() {
            return Err("the file holds no key".into());
        }
        Ok(Self { keys })
    }

    fn write(&self, path: &Path) -> Result<(), CloudError> {
        let text = Zeroizing::new(
            self.keys
                .iter()
                .map(|(id, key)| format!("{id} {}\n", STANDARD.encode(key.as_slice())))
                .collect::<String>(),
        );
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CloudError::Io {
                context: format!("creating {}", parent.display()),
                source,
            })?;
        }
        writeback_config::write_private_file(path, text.as_bytes()).map_err(|source| {
            CloudError::Io {
                context: format!("writing the secrets key {}", path.display()),
                source,
            }
        })
    }

    fn current(&self) -> Result<&(u32, Zeroizing<[u8; 32]>), CloudError> {
        self.keys
            .first()
            .ok_or_else(|| internal("no key to seal with"))
    }

    /// Seals `secret` for `owner` under the current key.
    pub fn seal(&self, owner: SecretOwner<'_>, secret: &[u8]) -> Result<Vec<u8>, CloudError> {
        let (id, key) = self.current()?;
        let nonce = random_bytes::<NONCE_BYTES>().map_err(internal)?;
        let ciphertext = XChaCha20Poly1305::new(key.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &associated_data(owner),
                },
            )
            .map_err(|_| internal("sealing a secret failed"))?;
        Ok([MAGIC.as_slice(), &id.to_be_bytes(), &nonce, &ciphertext].concat())
    }

    /// Opens a value sealed for `owner` under any key of the file.
    pub fn open(
        &self,
        owner: SecretOwner<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CloudError> {
        if !is_sealed(sealed) {
            return Err(internal("a stored secret is not sealed"));
        }
        let id_bytes: [u8; KEY_ID_BYTES] = sealed[MAGIC.len()..MAGIC.len() + KEY_ID_BYTES]
            .try_into()
            .map_err(internal)?;
        let id = u32::from_be_bytes(id_bytes);
        let (_, key) = self
            .keys
            .iter()
            .find(|(known, _)| *known == id)
            .ok_or_else(|| {
                internal(format!(
                    "a stored secret is sealed with key {id}, which the key file does not hold"
                ))
            })?;
        let nonce = &sealed[MAGIC.len() + KEY_ID_BYTES..HEADER_BYTES];
        XChaCha20Poly1305::new(key.as_ref().into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: &sealed[HEADER_BYTES..],
                    aad: &associated_data(owner),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                internal("a stored secret does not open: it was changed, or moved from another row")
            })
    }

    fn sealed_with_current(&self, value: &[u8]) -> bool {
        self.keys.first().is_some_and(|(id, _)| {
            is_sealed(value) && value[MAGIC.len()..MAGIC.len() + KEY_ID_BYTES] == id.to_be_bytes()
        })
    }

    /// These keys with a new current one in front.
    fn with_new_key(&self) -> Result<Self, CloudError> {
        let next = self.keys.iter().map(|(id, _)| *id).max().unwrap_or(0) + 1;
        let mut keys = vec![(next, new_key()?)];
        keys.extend(self.keys.iter().map(|(id, key)| (*id, key.clone())));
        Ok(Self { keys })
    }

    fn only_current(&self) -> Result<Self, CloudError> {
        let (id, key) = self.current()?;
        Ok(Self {
            keys: vec![(*id, key.clone())],
        })
    }
}

fn new_key() -> Result<Zeroizing<[u8; 32]>, CloudError> {
    random_bytes::<32>().map(Zeroizing::new).map_err(internal)
}

/// Seals every stored secret that is not sealed under the current key: values from before
/// sealing existed, and values under an older key. Returns how many changed.
pub async fn reseal(store: &Store, keys: &SecretKeys) -> Result<usize, CloudError> {
    store
        .rewrite_secrets(|owner, value| {
            if keys.sealed_with_current(value) {
                return Ok(None);
            }
            let clear = if is_sealed(value) {
                keys.open(owner, value)?
            } else {
                Zeroizing::new(value.to_vec())
            };
            keys.seal(owner, &clear).map(Some)
        })
        .await?
}

/// Replaces the key in `path` with a new one and re-seals every stored secret under it. What a
/// cluster's portal remembers between pages is ended rather than re-sealed: it lives minutes,
/// and its people start again.
pub async fn rotate(store: &Store, path: &Path) -> Result<usize, CloudError> {
    let both = SecretKeys::load_or_create(path)?.with_new_key()?;
    both.write(path)?;
    let changed = reseal(store, &both).await?;
    store.remove_all_portal_entries().await?;
    both.only_current()?.write(path)?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: SecretOwner<'static> = SecretOwner::Administrator { id: 1 };

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_row_and_key() {
        let keys = SecretKeys::generate().unwrap();
        let sealed = keys.seal(ADMIN, b"JBSWY3DPEHPK3PXP").unwrap();
        assert!(
            !sealed
                .windows(16)
                .any(|window| window == b"JBSWY3DPEHPK3PXP")
        );
        assert_eq!(
            keys.open(ADMIN, &sealed).unwrap().as_slice(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert!(
            keys.open(SecretOwner::Administrator { id: 2 }, &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(keys.open(ADMIN, &tampered).is_err());
        assert!(
            SecretKeys::generate()
                .unwrap()
                .open(ADMIN, &sealed)
                .is_err()
        );
        assert!(keys.open(ADMIN, b"clear secret").is_err());
    }

    #[test]
    fn the_key_file_round_trips_and_refuses_nonsense() {
        let keys = SecretKeys::generate().unwrap().with_new_key().unwrap();
        let directory = std::env::temp_dir().join(format!("writeback-keys-{}", std::process::id()));
        let path = directory.join("secrets.key");
        keys.write(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = SecretKeys::load_or_create(&path).unwrap();
        let sealed = keys.seal(ADMIN, b"secret").unwrap();
        assert_eq!(loaded.open(ADMIN, &sealed).unwrap().as_slice(), b"secret");
        for nonsense in ["", "1", "x abc", "1 not-base64!", "1 AAAA"] {
            assert!(SecretKeys::parse(nonsense).is_err(), "{nonsense:?}");
        }
        std::fs::remove_dir_all(directory).unwrap();
    }

    #[tokio::test]
    async fn rotation_reseals_everything_under_a_new_key_and_clear_values_get_sealed() {
        let store = Store::in_memory().await.unwrap();
        let id = store
            .create_administrator(
                "admin@example.test",
                "hash",
                writeback_proto::time::UnixMillis(1),
            )
            .await
            .unwrap();
        store.enrol_totp(id, b"clear-admin-key", 1).await.unwrap();
        let directory =
            std::env::temp_dir().join(format!("writeback-rotate-{}", std::process::id()));
        let path = directory.join("secrets.key");
        let first = SecretKeys::load_or_create(&path).unwrap();
        assert_eq!(reseal(&store, &first).await.unwrap(), 1);
        assert_eq!(
            reseal(&store, &first).await.unwrap(),
            0,
            "nothing left in clear"
        );
        let sealed = store.totp_state(id).await.unwrap().unwrap().secret;
        let owner = SecretOwner::Administrator { id };
        assert_eq!(
            first.open(owner, &sealed).unwrap().as_slice(),
            b"clear-admin-key"
        );

        assert_eq!(rotate(&store, &path).await.unwrap(), 1);
        let second = SecretKeys::load_or_create(&path).unwrap();
        assert_eq!(second.keys.len(), 1);
        let resealed = store.totp_state(id).await.unwrap().unwrap().secret;
        assert_eq!(
            second.open(owner, &resealed).unwrap().as_slice(),
            b"clear-admin-key"
        );
        assert!(
            first.open(owner, &resealed).is_err(),
            "the old key opens nothing now"
        );
        std::fs::remove_dir_all(directory).unwrap();
    }
}

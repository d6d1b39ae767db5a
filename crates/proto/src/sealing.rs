//! Passwords sealed to the agent (DESIGN.md §3): HPKE base mode, DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, ChaCha20-Poly1305. The associated data binds each ciphertext to one request id,
//! one operation, one user and one field, so a relay, a log or a database that sees it cannot
//! open it, and an agent will not open it for any other request.

use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::OsRng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::ProtoError;
use crate::encoding::transcript;
use crate::ids::RequestId;
pub use crate::operation::SealedSecret;
use crate::operation::{OperationKind, UserRef};

type Kem = X25519HkdfSha256;
type Kdf = HkdfSha256;
type Aead = ChaCha20Poly1305;

const INFO: &[u8] = b"writeback/v1 sealed password";
const AAD_LABEL: &str = "writeback/v1 sealed password context";

/// The agent's public sealing key, announced (signed) at every connection.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealingPublicKey {
    pub key_id: String,
    #[serde(with = "crate::encoding::array")]
    pub public_key: [u8; 32],
}

impl fmt::Debug for SealingPublicKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "SealingPublicKey({})", self.key_id)
    }
}

impl SealingPublicKey {
    fn from_bytes(public_key: [u8; 32]) -> Self {
        let digest = Sha256::digest(public_key);
        let key_id = digest
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { key_id, public_key }
    }
}

/// The agent's private sealing key. Only the agent holds it; it never leaves the agent's host.
#[derive(Clone)]
pub struct SealingKeyPair {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: SealingPublicKey,
}

impl fmt::Debug for SealingKeyPair {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "SealingKeyPair({})", self.public.key_id)
    }
}

impl SealingKeyPair {
    pub fn generate() -> Self {
        let (secret, public) = Kem::gen_keypair(&mut OsRng);
        Self::from_parts(secret, &public)
    }

    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Result<Self, ProtoError> {
        let secret = <Kem as hpke::Kem>::PrivateKey::from_bytes(bytes).map_err(|_| {
            ProtoError::InvalidValue {
                what: "sealing key",
                problem: "not an X25519 private key".into(),
            }
        })?;
        let public = Kem::sk_to_pk(&secret);
        Ok(Self::from_parts(secret, &public))
    }

    fn from_parts(
        secret: <Kem as hpke::Kem>::PrivateKey,
        public: &<Kem as hpke::Kem>::PublicKey,
    ) -> Self {
        let mut public_bytes = [0u8; 32];
        public_bytes.copy_from_slice(&public.to_bytes());
        Self {
            secret,
            public: SealingPublicKey::from_bytes(public_bytes),
        }
    }

    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        bytes.copy_from_slice(&self.secret.to_bytes());
        bytes
    }

    pub fn public_key(&self) -> &SealingPublicKey {
        &self.public
    }

    /// Opens `sealed` if, and only if, it was sealed to this key for exactly `context`.
    pub fn open(
        &self,
        context: &SealContext<'_>,
        sealed: &SealedSecret,
    ) -> Result<SecretString, ProtoError> {
        if sealed.key_id != self.public.key_id {
            return Err(ProtoError::UnknownSealingKey {
                got: sealed.key_id.clone(),
                held: self.public.key_id.clone(),
            });
        }
        let encapsulated = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.encapsulated_key)
            .map_err(|_| ProtoError::Open)?;
        let plaintext = hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &self.secret,
            &encapsulated,
            INFO,
            &sealed.ciphertext,
            &context.associated_data(),
        )
        .map(Zeroizing::new)
        .map_err(|_| ProtoError::Open)?;
        crate::secret::secret_from_utf8(&plaintext).ok_or(ProtoError::Open)
    }
}

/// Which secret of an operation a ciphertext holds, so an old password cannot be swapped in for a
/// new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretField {
    NewPassword,
    CurrentPassword,
}

impl SecretField {
    /// The field's name, as bound into the associated data and as the API's bodies name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewPassword => "new_password",
            Self::CurrentPassword => "current_password",
        }
    }
}

/// Everything a sealed secret is bound to.
#[derive(Debug, Clone, Copy)]
pub struct SealContext<'a> {
    pub request_id: RequestId,
    pub operation: OperationKind,
    pub user: &'a UserRef,
    pub field: SecretField,
}

impl SealContext<'_> {
    fn associated_data(&self) -> Vec<u8> {
        transcript(
            AAD_LABEL,
            &[
                self.request_id.as_bytes(),
                self.operation.as_str().as_bytes(),
                self.user.anchor().as_bytes(),
                self.field.as_str().as_bytes(),
            ],
        )
    }
}

/// Seals `secret` to `recipient` for exactly `context`.
pub fn seal(
    recipient: &SealingPublicKey,
    context: &SealContext<'_>,
    secret: &SecretString,
) -> Result<SealedSecret, ProtoError> {
    let public_key = <Kem as hpke::Kem>::PublicKey::from_bytes(&recipient.public_key)
        .map_err(|_| ProtoError::Seal)?;
    let (encapsulated, ciphertext) = hpke::single_shot_seal::<Aead, Kdf, Kem, _>(
        &OpModeS::Base,
        &public_key,
        INFO,
        secret.expose_secret().as_bytes(),
        &context.associated_data(),
        &mut OsRng,
    )
    .map_err(|_| ProtoError::Seal)?;
    let mut encapsulated_key = [0u8; 32];
    encapsulated_key.copy_from_slice(&encapsulated.to_bytes());
    Ok(SealedSecret {
        key_id: recipient.key_id.clone(),
        encapsulated_key,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(request_id: RequestId, user: &'a UserRef) -> SealContext<'a> {
        SealContext {
            request_id,
            operation: OperationKind::ResetPassword,
            user,
            field: SecretField::NewPassword,
        }
    }

    #[test]
    fn a_sealed_password_opens_under_its_own_context() {
        let agent = SealingKeyPair::generate();
        let user = UserRef::logon_name("jdoe").unwrap();
        let request_id = RequestId::generate().unwrap();
        let sealed = seal(
            agent.public_key(),
            &context(request_id, &user),
            &SecretString::from("S3cret-pw!"),
        )
        .unwrap();
        let opened = agent.open(&context(request_id, &user), &sealed).unwrap();
        assert_eq!(opened.expose_secret(), "S3cret-pw!");
    }

    #[test]
    fn a_sealed_password_does_not_open_under_another_request_operation_user_or_field() {
        let agent = SealingKeyPair::generate();
        let user = UserRef::logon_name("jdoe").unwrap();
        let other_user = UserRef::logon_name("jdoe2").unwrap();
        let request_id = RequestId::generate().unwrap();
        let original = context(request_id, &user);
        let sealed = seal(
            agent.public_key(),
            &original,
            &SecretString::from("S3cret-pw!"),
        )
        .unwrap();

        let other_request = SealContext {
            request_id: RequestId::generate().unwrap(),
            ..original
        };
        let other_operation = SealContext {
            operation: OperationKind::ChangePassword,
            ..original
        };
        let other_user_context = SealContext {
            user: &other_user,
            ..original
        };
        let other_field = SealContext {
            field: SecretField::CurrentPassword,
            ..original
        };
        for wrong in [
            other_request,
            other_operation,
            other_user_context,
            other_field,
        ] {
            assert_eq!(
                agent.open(&wrong, &sealed).unwrap_err(),
                ProtoError::Open,
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn another_agent_key_cannot_open_it() {
        let agent = SealingKeyPair::generate();
        let impostor = SealingKeyPair::generate();
        let user = UserRef::logon_name("jdoe").unwrap();
        let request_id = RequestId::generate().unwrap();
        let sealed = seal(
            agent.public_key(),
            &context(request_id, &user),
            &SecretString::from("pw"),
        )
        .unwrap();
        assert!(matches!(
            impostor.open(&context(request_id, &user), &sealed),
            Err(ProtoError::UnknownSealingKey { .. })
        ));
        let relabelled = SealedSecret {
            key_id: impostor.public_key().key_id.clone(),
            ..sealed
        };
        assert_eq!(
            impostor
                .open(&context(request_id, &user), &relabelled)
                .unwrap_err(),
            ProtoError::Open
        );
    }

    #[test]
    fn a_tampered_ciphertext_does_not_open() {
        let agent = SealingKeyPair::generate();
        let user = UserRef::logon_name("jdoe").unwrap();
        let request_id = RequestId::generate().unwrap();
        let mut sealed = seal(
            agent.public_key(),
            &context(request_id, &user),
            &SecretString::from("pw"),
        )
        .unwrap();
        sealed.ciphertext[0] ^= 1;
        assert_eq!(
            agent
                .open(&context(request_id, &user), &sealed)
                .unwrap_err(),
            ProtoError::Open
        );
    }

    #[test]
    fn keys_survive_a_round_trip_through_their_secret_bytes() {
        let agent = SealingKeyPair::generate();
        let restored = SealingKeyPair::from_secret_bytes(&agent.secret_bytes()).unwrap();
        assert_eq!(restored.public_key(), agent.public_key());
    }

    #[test]
    fn the_ciphertext_does_not_contain_the_password() {
        let agent = SealingKeyPair::generate();
        let user = UserRef::logon_name("jdoe").unwrap();
        let sealed = seal(
            agent.public_key(),
            &context(RequestId::generate().unwrap(), &user),
            &SecretString::from("VisiblePassword"),
        )
        .unwrap();
        let wire = serde_json::to_string(&sealed).unwrap();
        assert!(!wire.contains("VisiblePassword"));
        assert!(!format!("{sealed:?}").contains("VisiblePassword"));
    }
}

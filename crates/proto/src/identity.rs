//! The agent's long-term identity: an Ed25519 key generated at registration. The cloud stores the
//! public half and checks a signature over a fresh challenge at every connection.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::ProtoError;
use crate::encoding::transcript;
use crate::ids::{AgentId, random_bytes};
use crate::sealing::SealingPublicKey;

pub struct IdentityKeyPair(SigningKey);

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "IdentityKeyPair({:?})", self.public_key())
    }
}

impl IdentityKeyPair {
    pub fn generate() -> Result<Self, ProtoError> {
        let seed = Zeroizing::new(random_bytes::<32>()?);
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(bytes))
    }

    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdentityPublicKey(#[serde(with = "crate::encoding::array")] pub [u8; 32]);

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "IdentityPublicKey({})",
            crate::encoding::encode(&self.0)
        )
    }
}

impl IdentityPublicKey {
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), ProtoError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| ProtoError::BadSignature)?;
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature)
            .map_err(|_| ProtoError::BadSignature)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Signature(#[serde(with = "crate::encoding::array")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Signature(..)")
    }
}

/// What an agent signs to prove who it is on a new connection: the cloud's fresh nonce, its id,
/// and the sealing key it wants passwords sealed to.
pub fn hello_transcript(
    nonce: &[u8; 32],
    agent_id: &AgentId,
    sealing_key: &SealingPublicKey,
) -> Vec<u8> {
    transcript(
        "writeback/v1 agent hello",
        &[
            nonce,
            agent_id.as_bytes(),
            sealing_key.key_id.as_bytes(),
            &sealing_key.public_key,
        ],
    )
}

/// What a registering agent signs: proof that it holds the identity key it asks the cloud to trust.
pub fn registration_transcript(
    nonce: &[u8; 32],
    identity_key: &IdentityPublicKey,
    sealing_key: &SealingPublicKey,
) -> Vec<u8> {
    transcript(
        "writeback/v1 agent registration",
        &[
            nonce,
            &identity_key.0,
            sealing_key.key_id.as_bytes(),
            &sealing_key.public_key,
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::SealingKeyPair;

    #[test]
    fn a_hello_signature_verifies_only_for_its_nonce_and_key() {
        let identity = IdentityKeyPair::generate().unwrap();
        let sealing = SealingKeyPair::generate();
        let agent_id = AgentId::generate().unwrap();
        let nonce = [7u8; 32];
        let signature = identity.sign(&hello_transcript(&nonce, &agent_id, sealing.public_key()));
        let public = identity.public_key();
        assert_eq!(
            public.verify(
                &hello_transcript(&nonce, &agent_id, sealing.public_key()),
                &signature
            ),
            Ok(())
        );
        assert_eq!(
            public.verify(
                &hello_transcript(&[8u8; 32], &agent_id, sealing.public_key()),
                &signature
            ),
            Err(ProtoError::BadSignature)
        );
        let other_sealing = SealingKeyPair::generate();
        assert_eq!(
            public.verify(
                &hello_transcript(&nonce, &agent_id, other_sealing.public_key()),
                &signature
            ),
            Err(ProtoError::BadSignature)
        );
    }

    #[test]
    fn identity_keys_survive_a_round_trip_through_their_secret_bytes() {
        let identity = IdentityKeyPair::generate().unwrap();
        let restored = IdentityKeyPair::from_secret_bytes(&identity.secret_bytes());
        assert_eq!(restored.public_key(), identity.public_key());
    }
}

//! What the cloud means to do, before it knows which agent will do it. An intent holds its
//! secrets in the clear (as secret strings) and seals itself into an [`Operation`] at the last
//! moment, to the key of the agent chosen for that attempt and for one request id.

use secrecy::SecretString;

use crate::ProtoError;
use crate::ids::RequestId;
use crate::operation::{Operation, OperationKind, UserRef};
use crate::sealing::{SealContext, SealingPublicKey, SecretField, seal};

#[derive(Debug, Clone)]
pub enum OperationIntent {
    ResetPassword {
        user: UserRef,
        new_password: SecretString,
        must_change: bool,
        unlock: bool,
    },
    ChangePassword {
        user: UserRef,
        current_password: SecretString,
        new_password: SecretString,
    },
    Unlock {
        user: UserRef,
    },
    VerifyPassword {
        user: UserRef,
        password: SecretString,
    },
}

impl OperationIntent {
    pub fn kind(&self) -> OperationKind {
        match self {
            Self::ResetPassword { .. } => OperationKind::ResetPassword,
            Self::ChangePassword { .. } => OperationKind::ChangePassword,
            Self::Unlock { .. } => OperationKind::Unlock,
            Self::VerifyPassword { .. } => OperationKind::VerifyPassword,
        }
    }

    pub fn user(&self) -> &UserRef {
        match self {
            Self::ResetPassword { user, .. }
            | Self::ChangePassword { user, .. }
            | Self::Unlock { user }
            | Self::VerifyPassword { user, .. } => user,
        }
    }

    /// The same fingerprint as the [`Operation`] this intent seals into.
    pub fn fingerprint(&self) -> String {
        let reset_options = match self {
            Self::ResetPassword {
                must_change,
                unlock,
                ..
            } => Some((*must_change, *unlock)),
            _ => None,
        };
        crate::operation::fingerprint(self.kind(), self.user(), reset_options)
    }

    /// The operation for one attempt: every secret sealed to `key`, bound to `request_id`, this
    /// operation's kind, its user and the secret's field.
    pub fn seal(
        &self,
        key: &SealingPublicKey,
        request_id: RequestId,
    ) -> Result<Operation, ProtoError> {
        let kind = self.kind();
        let sealed = |user: &UserRef, field: SecretField, secret: &SecretString| {
            let context = SealContext {
                request_id,
                operation: kind,
                user,
                field,
            };
            seal(key, &context, secret)
        };
        Ok(match self {
            Self::ResetPassword {
                user,
                new_password,
                must_change,
                unlock,
            } => Operation::ResetPassword {
                new_password: sealed(user, SecretField::NewPassword, new_password)?,
                user: user.clone(),
                must_change: *must_change,
                unlock: *unlock,
            },
            Self::ChangePassword {
                user,
                current_password,
                new_password,
            } => Operation::ChangePassword {
                current_password: sealed(user, SecretField::CurrentPassword, current_password)?,
                new_password: sealed(user, SecretField::NewPassword, new_password)?,
                user: user.clone(),
            },
            Self::Unlock { user } => Operation::Unlock { user: user.clone() },
            Self::VerifyPassword { user, password } => Operation::VerifyPassword {
                password: sealed(user, SecretField::CurrentPassword, password)?,
                user: user.clone(),
            },
        })
    }
}

/// A sealed secret's context, as the agent rebuilds it to open the secret.
pub fn sealed_field_context<'a>(
    request_id: RequestId,
    operation: &'a Operation,
    field: SecretField,
) -> SealContext<'a> {
    SealContext {
        request_id,
        operation: operation.kind(),
        user: operation.user(),
        field,
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::operation::SealedSecret;
    use crate::sealing::SealingKeyPair;

    fn open(
        agent: &SealingKeyPair,
        request_id: RequestId,
        operation: &Operation,
        field: SecretField,
        sealed: &SealedSecret,
    ) -> String {
        agent
            .open(&sealed_field_context(request_id, operation, field), sealed)
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    #[test]
    fn an_intent_seals_into_the_operation_of_its_kind_that_only_the_agent_opens() {
        let agent = SealingKeyPair::generate();
        let request_id = RequestId::generate().unwrap();
        let user = UserRef::logon_name("jdoe").unwrap();
        let intent = OperationIntent::ChangePassword {
            user: user.clone(),
            current_password: SecretString::from("Old-pw-1"),
            new_password: SecretString::from("New-pw-2"),
        };
        let operation = intent.seal(agent.public_key(), request_id).unwrap();
        assert_eq!(operation.kind(), intent.kind());
        assert_eq!(operation.user(), &user);
        let Operation::ChangePassword {
            current_password,
            new_password,
            ..
        } = &operation
        else {
            panic!("a change seals into a change: {operation:?}");
        };
        let current = open(
            &agent,
            request_id,
            &operation,
            SecretField::CurrentPassword,
            current_password,
        );
        let new = open(
            &agent,
            request_id,
            &operation,
            SecretField::NewPassword,
            new_password,
        );
        assert_eq!((current.as_str(), new.as_str()), ("Old-pw-1", "New-pw-2"));
        let other_request = RequestId::generate().unwrap();
        assert!(
            agent
                .open(
                    &sealed_field_context(other_request, &operation, SecretField::NewPassword),
                    new_password
                )
                .is_err()
        );
        assert!(!format!("{intent:?}{operation:?}").contains("pw-"));
    }

    #[test]
    fn every_intent_keeps_its_kind_and_user_when_sealed() {
        let agent = SealingKeyPair::generate();
        let user = UserRef::logon_name("jdoe").unwrap();
        let secret = || SecretString::from("pw");
        for intent in [
            OperationIntent::ResetPassword {
                user: user.clone(),
                new_password: secret(),
                must_change: true,
                unlock: false,
            },
            OperationIntent::ChangePassword {
                user: user.clone(),
                current_password: secret(),
                new_password: secret(),
            },
            OperationIntent::Unlock { user: user.clone() },
            OperationIntent::VerifyPassword {
                user: user.clone(),
                password: secret(),
            },
        ] {
            let operation = intent
                .seal(agent.public_key(), RequestId::generate().unwrap())
                .unwrap();
            assert_eq!(operation.kind(), intent.kind());
            assert_eq!(operation.user(), intent.user());
        }
    }
}

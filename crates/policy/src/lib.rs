//! Password policy evaluation, the way Active Directory evaluates it.
//!
//! The agent runs these checks *before* it writes to the directory, because a Windows DC answers
//! every policy failure with the same `0000052D` and the user deserves the specific reason. Nothing
//! here does IO: the effective policy and the account facts are read by the directory crate and
//! passed in, and so is the current time.

pub mod screening;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why a password was refused. Stable on the wire: the portal maps each to a plain-language message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyReason {
    TooShort,
    NotComplex,
    InHistory,
    TooYoung,
    Banned,
    /// On the list of commonly used passwords that every guesser tries first.
    Common,
    /// Below the minimum strength the self-service policy sets.
    TooWeak,
    /// In the corpus of breached passwords the administrator imported.
    Breached,
}

impl PolicyReason {
    /// The stable name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooShort => "too_short",
            Self::NotComplex => "not_complex",
            Self::InHistory => "in_history",
            Self::TooYoung => "too_young",
            Self::Banned => "banned",
            Self::Common => "common",
            Self::TooWeak => "too_weak",
            Self::Breached => "breached",
        }
    }
}

/// The effective password policy of one account: the domain policy, or the fine-grained password
/// settings object (PSO) that applies to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// Minimum length in UTF-16 code units, as AD counts it.
    pub min_length: u32,
    pub complexity: bool,
    pub history_length: u32,
    #[serde(with = "duration_seconds")]
    pub min_age: Duration,
    /// Where this policy comes from: `domain` or the DN of the PSO.
    pub source: PolicySource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum PolicySource {
    Domain,
    FineGrained(String),
}

/// What the complexity and age rules need to know about the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    pub sam_account_name: String,
    pub display_name: Option<String>,
    /// When the password was last set, as milliseconds since the Unix epoch; `None` when it has
    /// never been set or must be changed (`pwdLastSet = 0`).
    pub password_last_set_unix_ms: Option<u64>,
}

/// Which write the password is for. A *change* is subject to the minimum age; a *reset* is too when
/// the DC enforces it through the policy-hints control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Reset { enforce_minimum_age: bool },
    Change,
}

/// Passwords longer than this are refused by AD's `unicodePwd` handling anyway; we refuse them
/// before they travel.
pub const MAX_PASSWORD_UTF16_UNITS: usize = 256;

/// Characters that split a display name into the tokens the complexity rule looks for.
const DISPLAY_NAME_DELIMITERS: &[char] = &[',', '.', '-', '_', '#', '\t', ' '];

/// Checks `password` against `policy` for `account`. The order follows what a user should fix
/// first: length, then banned words, then complexity, then age.
pub fn check_password(
    policy: &PasswordPolicy,
    banned_words: &[String],
    account: &AccountFacts,
    password: &str,
    kind: WriteKind,
    now_unix_ms: u64,
) -> Result<(), PolicyReason> {
    if utf16_length(password) < policy.min_length as usize {
        return Err(PolicyReason::TooShort);
    }
    if contains_banned_word(password, banned_words) {
        return Err(PolicyReason::Banned);
    }
    if policy.complexity && !meets_complexity(password, account) {
        return Err(PolicyReason::NotComplex);
    }
    let age_applies = match kind {
        WriteKind::Change => true,
        WriteKind::Reset {
            enforce_minimum_age,
        } => enforce_minimum_age,
    };
    if age_applies
        && is_too_young(
            policy.min_age,
            account.password_last_set_unix_ms,
            now_unix_ms,
        )
    {
        return Err(PolicyReason::TooYoung);
    }
    Ok(())
}

pub fn utf16_length(text: &str) -> usize {
    text.encode_utf16().count()
}

fn contains_banned_word(password: &str, banned_words: &[String]) -> bool {
    let lowered = password.to_lowercase();
    banned_words
        .iter()
        .map(|word| word.trim().to_lowercase())
        .any(|word| !word.is_empty() && lowered.contains(&word))
}

/// The AD complexity rule: the password contains neither the account name nor a display-name
/// token, and draws from at least three of five character categories.
pub fn meets_complexity(password: &str, account: &AccountFacts) -> bool {
    !contains_account_identity(password, account) && character_categories(password) >= 3
}

fn contains_account_identity(password: &str, account: &AccountFacts) -> bool {
    let lowered = password.to_lowercase();
    let account_name = account.sam_account_name.to_lowercase();
    // AD skips the account-name test for names of two characters or fewer.
    if account_name.chars().count() > 2 && lowered.contains(&account_name) {
        return true;
    }
    let Some(display_name) = &account.display_name else {
        return false;
    };
    display_name
        .split(DISPLAY_NAME_DELIMITERS)
        .filter(|token| token.chars().count() >= 3)
        .any(|token| lowered.contains(&token.to_lowercase()))
}

fn character_categories(password: &str) -> usize {
    let mut upper = false;
    let mut lower = false;
    let mut digit = false;
    let mut symbol = false;
    let mut other_letter = false;
    for character in password.chars() {
        if character.is_uppercase() {
            upper = true;
        } else if character.is_lowercase() {
            lower = true;
        } else if character.is_ascii_digit() {
            digit = true;
        } else if character.is_alphabetic() {
            other_letter = true;
        } else if !character.is_alphanumeric() {
            symbol = true;
        }
    }
    [upper, lower, digit, symbol, other_letter]
        .into_iter()
        .filter(|present| *present)
        .count()
}

fn is_too_young(min_age: Duration, last_set_unix_ms: Option<u64>, now_unix_ms: u64) -> bool {
    if min_age.is_zero() {
        return false;
    }
    // A password that must be changed (pwdLastSet = 0) can always be changed.
    let Some(last_set) = last_set_unix_ms else {
        return false;
    };
    let age_ms = now_unix_ms.saturating_sub(last_set);
    u128::from(age_ms) < min_age.as_millis()
}

mod duration_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(duration.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;

    fn domain_policy() -> PasswordPolicy {
        PasswordPolicy {
            min_length: 7,
            complexity: true,
            history_length: 24,
            min_age: Duration::ZERO,
            source: PolicySource::Domain,
        }
    }

    fn account() -> AccountFacts {
        AccountFacts {
            sam_account_name: "jdoe".into(),
            display_name: Some("Jane Q. Doe-Smith".into()),
            password_last_set_unix_ms: Some(10 * DAY_MS),
        }
    }

    fn check(policy: &PasswordPolicy, password: &str, kind: WriteKind) -> Result<(), PolicyReason> {
        check_password(policy, &[], &account(), password, kind, 10 * DAY_MS + 1000)
    }

    const RESET: WriteKind = WriteKind::Reset {
        enforce_minimum_age: false,
    };

    #[test]
    fn accepts_a_long_complex_password() {
        assert_eq!(check(&domain_policy(), "Correct-Horse-42", RESET), Ok(()));
    }

    #[test]
    fn refuses_a_short_password_before_anything_else() {
        assert_eq!(
            check(&domain_policy(), "aB1!", RESET),
            Err(PolicyReason::TooShort)
        );
    }

    #[test]
    fn length_counts_utf16_units_like_active_directory() {
        let policy = PasswordPolicy {
            min_length: 8,
            complexity: false,
            ..domain_policy()
        };
        // Four astral-plane characters are eight UTF-16 units.
        assert_eq!(check(&policy, "😀😀😀😀", RESET), Ok(()));
        assert_eq!(
            check(&policy, "ééééééé", RESET),
            Err(PolicyReason::TooShort)
        );
    }

    #[test]
    fn refuses_fewer_than_three_character_categories() {
        assert_eq!(
            check(&domain_policy(), "alllowercase1", RESET),
            Err(PolicyReason::NotComplex)
        );
        assert_eq!(check(&domain_policy(), "Upper-and-lower", RESET), Ok(()));
    }

    #[test]
    fn other_unicode_letters_are_their_own_category() {
        assert_eq!(check(&domain_policy(), "漢字漢字abc1", RESET), Ok(()));
    }

    #[test]
    fn refuses_the_account_name_case_insensitively() {
        assert_eq!(
            check(&domain_policy(), "xxJDOE!!99", RESET),
            Err(PolicyReason::NotComplex)
        );
    }

    #[test]
    fn refuses_display_name_tokens_of_three_or_more_characters() {
        assert_eq!(
            check(&domain_policy(), "Smith-2024!x", RESET),
            Err(PolicyReason::NotComplex)
        );
        assert_eq!(
            check(&domain_policy(), "JANE#Zz99", RESET),
            Err(PolicyReason::NotComplex)
        );
        // "Q" is too short a token to count.
        assert_eq!(check(&domain_policy(), "Qwerty-991", RESET), Ok(()));
    }

    #[test]
    fn short_account_names_are_not_checked() {
        let facts = AccountFacts {
            sam_account_name: "jd".into(),
            display_name: None,
            password_last_set_unix_ms: None,
        };
        let result = check_password(&domain_policy(), &[], &facts, "JD-Rocks-11", RESET, 0);
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn complexity_off_accepts_a_simple_password() {
        let policy = PasswordPolicy {
            complexity: false,
            ..domain_policy()
        };
        assert_eq!(check(&policy, "jdoejdoejdoe", RESET), Ok(()));
    }

    #[test]
    fn banned_words_are_found_inside_the_password() {
        let banned = vec!["Contoso".to_string(), "  ".to_string()];
        let result = check_password(
            &domain_policy(),
            &banned,
            &account(),
            "I<3contoso!!",
            RESET,
            0,
        );
        assert_eq!(result, Err(PolicyReason::Banned));
        let result = check_password(
            &domain_policy(),
            &banned,
            &account(),
            "Fine-Words-1",
            RESET,
            0,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn minimum_age_applies_to_changes_only_unless_hints_enforce_it() {
        let policy = PasswordPolicy {
            min_age: Duration::from_secs(24 * 60 * 60),
            ..domain_policy()
        };
        assert_eq!(
            check(&policy, "Correct-Horse-42", WriteKind::Change),
            Err(PolicyReason::TooYoung)
        );
        assert_eq!(check(&policy, "Correct-Horse-42", RESET), Ok(()));
        let hinted = WriteKind::Reset {
            enforce_minimum_age: true,
        };
        assert_eq!(
            check(&policy, "Correct-Horse-42", hinted),
            Err(PolicyReason::TooYoung)
        );
    }

    #[test]
    fn an_old_enough_or_must_change_password_can_be_changed() {
        let policy = PasswordPolicy {
            min_age: Duration::from_secs(24 * 60 * 60),
            ..domain_policy()
        };
        let facts = account();
        let later = 11 * DAY_MS + 1;
        let result = check_password(
            &policy,
            &[],
            &facts,
            "Correct-Horse-42",
            WriteKind::Change,
            later,
        );
        assert_eq!(result, Ok(()));
        let must_change = AccountFacts {
            password_last_set_unix_ms: None,
            ..account()
        };
        let result = check_password(
            &policy,
            &[],
            &must_change,
            "Correct-Horse-42",
            WriteKind::Change,
            0,
        );
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn reasons_serialize_to_their_stable_names() {
        for reason in [
            PolicyReason::TooShort,
            PolicyReason::NotComplex,
            PolicyReason::InHistory,
            PolicyReason::TooYoung,
            PolicyReason::Banned,
        ] {
            let text = serde_json::to_string(&reason).unwrap_or_default();
            assert_eq!(text, format!("\"{}\"", reason.as_str()));
        }
    }
}

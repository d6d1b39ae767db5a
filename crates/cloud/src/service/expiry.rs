//! Password expiry reminders: each synced user whose password expires within one of the
//! configured thresholds (`expiry_reminders.days_before`, 14, 7 and 1 days by default) is mailed,
//! and texted where a phone is registered, once per threshold and password, with a link to the
//! portal's change page. Each reminder is audited. Users whose password never expires, who must
//! change it at next sign-in anyway, or who are disabled get none.
//!
//! A pass is [`send_due_reminders`] at a time passed in; [`run`] makes one every
//! `check_interval_minutes`. When a pass finds a user past several thresholds (the cloud was
//! down, or the password was set with less time than the largest), one message goes, for the
//! nearest, and the others count as sent.

use std::time::Duration;

use tokio::sync::watch;
use writeback_proto::api::VerificationMethod;
use writeback_proto::time::UnixMillis;
use writeback_store::ExpiringPassword;

use crate::service::audit::{Actor, AuditAction};
use crate::service::error::CloudError;
use crate::service::notify::{Mail, TextMessage};
use crate::service::self_service::accounts::{method_owner, owner};
use crate::service::self_service::state::PortalAccount;
use crate::service::state::AppState;

const DAY_MS: u64 = 86_400_000;
/// Users reminded in one pass at most; the rest are found by the next.
const USERS_PER_PASS: u32 = 10_000;
/// The name reminders are audited under.
const REMINDER_ACTOR: &str = "writeback (expiry reminder)";

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReminderPass {
    /// Users whose password expires within the largest threshold.
    pub expiring: usize,
    /// Reminders sent (one per user at most).
    pub sent: usize,
}

/// Sends the reminders due at `now`.
pub async fn send_due_reminders(
    state: &AppState,
    now: UnixMillis,
) -> Result<ReminderPass, CloudError> {
    let mut thresholds = state.config.expiry_reminders.days_before.clone();
    thresholds.sort_unstable();
    thresholds.dedup();
    let Some(&largest) = thresholds.last() else {
        return Ok(ReminderPass::default());
    };
    let until = now.saturating_add(Duration::from_millis(u64::from(largest) * DAY_MS));
    let expiring = state
        .store
        .passwords_expiring(now, until, USERS_PER_PASS)
        .await?;
    let mut pass = ReminderPass {
        expiring: expiring.len(),
        sent: 0,
    };
    for password in &expiring {
        let left_ms = password.expires_at.0.saturating_sub(now.0);
        let crossed: Vec<u32> = thresholds
            .iter()
            .copied()
            .filter(|days| left_ms <= u64::from(*days) * DAY_MS)
            .collect();
        let Some(&nearest) = crossed.first() else {
            continue;
        };
        if remind(state, password, nearest, left_ms, now).await? {
            pass.sent += 1;
            for further in &crossed[1..] {
                state
                    .store
                    .take_expiry_reminder(
                        &password.directory,
                        &password.user.user.anchor,
                        password.expires_at,
                        *further,
                        now,
                    )
                    .await?;
            }
        }
    }
    state
        .store
        .forget_expiry_reminders(UnixMillis(now.0.saturating_sub(30 * DAY_MS)))
        .await?;
    Ok(pass)
}

/// Takes the reminder for `threshold` days and sends it; `false` when it was taken already
/// (an earlier pass, or another node) or could not be sent (given back for the next pass).
async fn remind(
    state: &AppState,
    password: &ExpiringPassword,
    threshold: u32,
    left_ms: u64,
    now: UnixMillis,
) -> Result<bool, CloudError> {
    let (directory, user) = (&password.directory, &password.user.user);
    let taken = state
        .store
        .take_expiry_reminder(directory, &user.anchor, password.expires_at, threshold, now)
        .await?;
    if !taken {
        return Ok(false);
    }
    let account = PortalAccount::of_user(directory, user);
    let owned = owner(&account);
    let registered = state
        .store
        .self_service_methods(method_owner(&owned))
        .await?;
    let registered_value = |method: VerificationMethod| {
        registered
            .iter()
            .find(|registered| registered.method == method.as_str())
            .and_then(|registered| registered.value.clone())
    };
    let address = registered_value(VerificationMethod::Email).or_else(|| user.mail.clone());
    let phone = registered_value(VerificationMethod::Sms);
    let days_left = left_ms.div_ceil(DAY_MS).max(1);
    let when = humantime::format_rfc3339_seconds(password.expires_at.to_system_time())
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC");
    let link = state.config.portal_change_url();
    let days = if days_left == 1 { "day" } else { "days" };
    let mut told = Vec::new();
    if let (Some(mailer), Some(address)) = (&state.mailer, &address) {
        let mail = Mail {
            to: address.clone(),
            subject: format!("Your password expires in {days_left} {days}"),
            body: format!(
                "The password of your account {} expires on {when}, in {days_left} {days}.\n\nChange it before then at {link}\n\nAfter it expires you cannot sign in until it is changed.\n",
                user.sam_account_name
            ),
        };
        if let Err(error) = mailer.send(&mail).await {
            tracing::warn!(%error, user = %account.audit_name(), "an expiry reminder could not be mailed; the next pass tries again");
            state
                .store
                .give_back_expiry_reminder(directory, &user.anchor, password.expires_at, threshold)
                .await?;
            return Ok(false);
        }
        told.push("mail");
    }
    if let (Some(sms), Some(phone)) = (&state.sms, phone) {
        sms.send_later(TextMessage {
            to: phone,
            body: format!(
                "Your password for {} expires in {days_left} {days}. Change it at {link}",
                user.sam_account_name
            ),
        });
        told.push("text");
    }
    let detail = if !told.is_empty() {
        format!("{threshold} days before expiry: {}", told.join(" and "))
    } else if state.mailer.is_none() && state.sms.is_none() {
        format!("{threshold} days before expiry: no mail server or SMS provider is configured")
    } else {
        format!("{threshold} days before expiry: no address or phone to tell")
    };
    AuditAction::ExpiryReminder
        .by(&Actor::new(REMINDER_ACTOR, None), now)
        .directory(directory)
        .target(account.audit_name())
        .detail(detail)
        .record(&state.store)
        .await?;
    tracing::info!(user = %account.audit_name(), threshold, days_left, "expiry reminder sent");
    Ok(!told.is_empty())
}

/// A pass every `check_interval_minutes`, the first at start, until the cloud stops.
pub async fn run(state: AppState, mut stopping: watch::Receiver<bool>) {
    let interval =
        Duration::from_secs(state.config.expiry_reminders.check_interval_minutes.max(1) * 60);
    loop {
        if let Err(error) = send_due_reminders(&state, UnixMillis::now()).await {
            tracing::error!(%error, "the expiry reminder pass failed; the next one tries again");
        }
        tokio::select! {
            _ = stopping.wait_for(|stopping| *stopping) => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// A password expiring within the largest threshold, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringSoon {
    pub password: ExpiringPassword,
    /// The thresholds whose reminders went (or counted as sent), largest first.
    pub reminded: Vec<u32>,
}

/// Passwords expiring from `now` within the largest threshold (14 days when none is set), at
/// most `limit`, soonest first.
pub async fn expiring_soon(
    state: &AppState,
    now: UnixMillis,
    limit: u32,
) -> Result<Vec<ExpiringSoon>, CloudError> {
    let largest = state
        .config
        .expiry_reminders
        .days_before
        .iter()
        .copied()
        .max()
        .unwrap_or(14);
    let until = now.saturating_add(Duration::from_millis(u64::from(largest) * DAY_MS));
    let mut soon = Vec::new();
    for password in state.store.passwords_expiring(now, until, limit).await? {
        let reminded = state
            .store
            .expiry_reminders_taken(
                &password.directory,
                &password.user.user.anchor,
                password.expires_at,
            )
            .await?;
        soon.push(ExpiringSoon { password, reminded });
    }
    Ok(soon)
}

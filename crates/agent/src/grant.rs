//! `writeback-agent grant`: the ACEs the service account needs, printed for an administrator to
//! review, and with `--apply` added to the directory by a domain administrator.

use std::fmt::Write as _;

use writeback_directory::security_descriptor::Ace;
use writeback_directory::{ActiveDirectory, DirectoryError};

use crate::doctor::{UNEXPIRE_PASSWORD, WRITEBACK_RIGHTS};

/// Which ACEs go where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantPlan {
    pub account_sid: String,
    pub entries: Vec<(String, Vec<Ace>)>,
}

impl GrantPlan {
    pub fn render(&self) -> String {
        let mut text = format!("ACEs for the service account {}:\n", self.account_sid);
        for (dn, aces) in &self.entries {
            let _ = writeln!(text, "on {dn}:");
            for ace in aces {
                let _ = writeln!(text, "  {}", ace.sddl());
            }
            let sddl: String = aces.iter().map(Ace::sddl).collect();
            let _ = writeln!(
                text,
                "  (Samba: samba-tool dsacl set --objectdn=\"{dn}\" --sddl=\"{sddl}\")"
            );
        }
        text
    }
}

/// The three rights on users go on `ou` (or the domain root when `None`); Unexpire Password always
/// goes on the domain root.
pub async fn plan(
    directory: &ActiveDirectory,
    ou: Option<&str>,
) -> Result<GrantPlan, DirectoryError> {
    let (account_sid, domain_root) = directory.service_account_sid().await?;
    let target = ou.map_or_else(|| domain_root.clone(), str::to_owned);
    let on_users: Vec<Ace> = WRITEBACK_RIGHTS
        .iter()
        .filter(|right| right.object_type != UNEXPIRE_PASSWORD)
        .map(|right| right.ace(&account_sid))
        .collect();
    let on_root: Vec<Ace> = WRITEBACK_RIGHTS
        .iter()
        .filter(|right| right.object_type == UNEXPIRE_PASSWORD)
        .map(|right| right.ace(&account_sid))
        .collect();
    let entries = if target == domain_root {
        vec![(domain_root, [on_users, on_root].concat())]
    } else {
        vec![(target, on_users), (domain_root, on_root)]
    };
    Ok(GrantPlan {
        account_sid,
        entries,
    })
}

/// Adds the plan's ACEs, signed in as a domain administrator.
pub async fn apply(
    administrator: &ActiveDirectory,
    plan: &GrantPlan,
) -> Result<(), DirectoryError> {
    for (dn, aces) in &plan.entries {
        administrator.add_aces(dn, aces).await?;
        tracing::info!(object = %dn, aces = aces.len(), event_id = 31020, "writeback rights granted");
    }
    Ok(())
}

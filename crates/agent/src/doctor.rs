//! `writeback-agent doctor`: connects as the configured service account and checks, one by one,
//! that it can do everything Writeback needs and nothing it should not. Each check passes, warns or
//! fails, and says how to fix what is wrong.
//!
//! The rights are judged from the security descriptors the account itself can read: the DACL of
//! each allowed OU (inherited ACEs included, so grants on the domain root count) and of the domain
//! root, evaluated in order for the account's SID, its groups' and the well-known SIDs.

use std::fmt::Write as _;
use std::time::Duration;

use writeback_directory::security_descriptor::{
    Access, Ace, CONTAINER_INHERIT, INHERIT_ONLY, SecurityDescriptor, Target, USER_CLASS, Verdict,
};
use writeback_directory::{ActiveDirectory, DirectoryError, PermissionFacts};

/// One of the rights Writeback needs or can use, and how it is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Right {
    pub name: &'static str,
    pub access: Access,
    /// The extended right's or the attribute's schema GUID.
    pub object_type: &'static str,
    /// For a property, its lDAPDisplayName: a grant on its property set also counts.
    pub attribute: Option<&'static str>,
}

impl Right {
    /// The ACE that grants it to `sid`: inherited by user objects below, except Unexpire Password
    /// (this object and everything below) and Replicating Directory Changes (the domain root
    /// itself).
    pub fn ace(&self, sid: &str) -> Ace {
        let (flags, inherited_object_type) = match self.object_type {
            UNEXPIRE_PASSWORD => (CONTAINER_INHERIT, None),
            REPLICATING_DIRECTORY_CHANGES => (0, None),
            _ => (
                CONTAINER_INHERIT | INHERIT_ONLY,
                Some(USER_CLASS.to_owned()),
            ),
        };
        Ace {
            allow: true,
            flags,
            mask: self.access.mask(),
            object_type: Some(self.object_type.to_owned()),
            inherited_object_type,
            sid: sid.to_owned(),
        }
    }

    pub fn sddl(&self, sid: &str) -> String {
        self.ace(sid).sddl()
    }
}

pub const UNEXPIRE_PASSWORD: &str = "ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501";
const REPLICATING_DIRECTORY_CHANGES: &str = "1131f6aa-9c07-11d1-f79f-00c04fc2dcd2";

/// The four writeback rights of REFERENCE.md.
pub const WRITEBACK_RIGHTS: [Right; 4] = [
    Right {
        name: "Reset Password",
        access: Access::ControlAccess,
        object_type: "00299570-246d-11d0-a768-00aa006e0529",
        attribute: None,
    },
    Right {
        name: "Write lockoutTime",
        access: Access::WriteProperty,
        object_type: "28630ebf-41d5-11d1-a9c1-0000f80367c1",
        attribute: Some("lockoutTime"),
    },
    Right {
        name: "Write pwdLastSet",
        access: Access::WriteProperty,
        object_type: "bf967a0a-0de6-11d0-a285-00aa003049e2",
        attribute: Some("pwdLastSet"),
    },
    Right {
        name: "Unexpire Password",
        access: Access::ControlAccess,
        object_type: UNEXPIRE_PASSWORD,
        attribute: None,
    },
];

pub const DIRSYNC_RIGHT: Right = Right {
    name: "Replicating Directory Changes",
    access: Access::ControlAccess,
    object_type: REPLICATING_DIRECTORY_CHANGES,
    attribute: None,
};

/// Relative ids and built-in SIDs of groups far more powerful than Writeback needs.
const PRIVILEGED_DOMAIN_RIDS: &[(&str, &str)] = &[
    ("512", "Domain Admins"),
    ("518", "Schema Admins"),
    ("519", "Enterprise Admins"),
];
const PRIVILEGED_BUILTIN_SIDS: &[(&str, &str)] = &[
    ("S-1-5-32-544", "Administrators"),
    ("S-1-5-32-548", "Account Operators"),
];

/// How many unreachable users the report names before it only counts.
const LISTED_USERS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub name: String,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Pass,
            name: name.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    fn problem(
        status: Status,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            status,
            name: name.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|check| check.status == Status::Fail)
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        for check in &self.checks {
            let label = match check.status {
                Status::Pass => "PASS",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            let _ = writeln!(text, "{label}  {}: {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                let _ = writeln!(text, "      fix: {fix}");
            }
        }
        let count = |status| {
            self.checks
                .iter()
                .filter(|check| check.status == status)
                .count()
        };
        let _ = writeln!(
            text,
            "{} passed, {} warnings, {} failed",
            count(Status::Pass),
            count(Status::Warn),
            count(Status::Fail)
        );
        text
    }
}

/// Runs every check against `directory` for `allowed_ous`.
pub async fn diagnose(directory: &ActiveDirectory, url: &str, allowed_ous: &[String]) -> Report {
    let mut report = Report::default();
    match directory.check_connection().await {
        Ok(()) => {
            report.checks.push(Check::pass(
                "LDAPS",
                format!("{url} answers and its certificate is trusted"),
            ));
            report
                .checks
                .push(Check::pass("Bind", "the service account signs in"));
        }
        Err(DirectoryError::Configuration(reason)) => {
            report.checks.push(Check::pass(
                "LDAPS",
                format!("{url} answers and its certificate is trusted"),
            ));
            report.checks.push(Check::problem(
                Status::Fail,
                "Bind",
                reason,
                "check directory.bind_name and the password in directory.bind_password_file",
            ));
            return report;
        }
        Err(error) => {
            let text = error.to_string();
            let advice = crate::certificate::certificate_advice(
                url,
                &text,
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|| {
                "check directory.url or directory.urls (ldaps://, port 636 reachable from this host) and that \
                     directory.ca_file holds the CA that issued the DC's certificate"
                    .to_owned()
            });
            report
                .checks
                .push(Check::problem(Status::Fail, "LDAPS", text, advice));
            return report;
        }
    }
    let attributes: Vec<&str> = WRITEBACK_RIGHTS
        .iter()
        .filter_map(|right| right.attribute)
        .collect();
    match directory.permission_facts(allowed_ous, &attributes).await {
        Ok(facts) => report.checks.extend(judge(&facts)),
        Err(error) => report.checks.push(Check::problem(
            Status::Fail,
            "Permissions",
            format!("could not read the security descriptors: {error}"),
            "let the service account read the allowed OUs and the domain root (Authenticated \
             Users may by default)",
        )),
    }
    report
}

/// The checks that follow from what was read.
pub fn judge(facts: &PermissionFacts) -> Vec<Check> {
    let mut checks = Vec::new();
    for (ou, descriptor) in &facts.allowed_ou_descriptors {
        let Some(descriptor) = descriptor else {
            checks.push(Check::problem(
                Status::Fail,
                format!("Rights on {ou}"),
                "the OU's security descriptor could not be read (does the OU exist?)",
                "check directory.allowed_ous",
            ));
            continue;
        };
        for right in &WRITEBACK_RIGHTS {
            checks.push(judge_right(
                facts,
                right,
                ou,
                descriptor,
                Target::ChildUsers,
            ));
        }
    }
    checks.push(match &facts.domain_root_descriptor {
        Some(descriptor) => match verdict(facts, &DIRSYNC_RIGHT, descriptor, Target::ThisObject) {
            Verdict::Allowed(ace) => Check::pass(
                DIRSYNC_RIGHT.name,
                format!("granted by {}; deltas are read with DirSync", ace.sddl()),
            ),
            Verdict::Denied(_) | Verdict::Missing => Check::problem(
                Status::Warn,
                DIRSYNC_RIGHT.name,
                "not held: deltas are polled by update sequence number, which sees deletions \
                 within seconds only with List Contents on CN=Deleted Objects (otherwise at the \
                 next reconciliation of the anchors in scope)",
                format!(
                    "optional: add {} on {}",
                    DIRSYNC_RIGHT.sddl(&facts.account_sid),
                    facts.domain_root
                ),
            ),
        },
        None => Check::problem(
            Status::Warn,
            DIRSYNC_RIGHT.name,
            "the domain root's security descriptor could not be read",
            "let the service account read the domain root",
        ),
    });
    checks.push(minimum_password_age(facts.minimum_password_age));
    checks.push(if facts.policy_hints_supported {
        Check::pass(
            "Policy hints",
            "the DC enforces password history and minimum age on resets",
        )
    } else {
        Check::problem(
            Status::Warn,
            "Policy hints",
            "the DC does not support the policy-hints control: password history is not \
             enforced on resets",
            "upgrade the DC (Windows Server 2016 or later, or a Samba that supports it)",
        )
    });
    checks.push(unreachable_users(facts));
    checks.push(privilege(facts));
    checks
}

fn verdict(
    facts: &PermissionFacts,
    right: &Right,
    descriptor: &SecurityDescriptor,
    target: Target,
) -> Verdict {
    let property_set = right
        .attribute
        .and_then(|attribute| facts.property_sets.get(attribute))
        .map(String::as_str);
    let object_types: Vec<&str> = [Some(right.object_type), property_set]
        .into_iter()
        .flatten()
        .collect();
    descriptor.verdict(&facts.token, right.access, &object_types, target)
}

fn judge_right(
    facts: &PermissionFacts,
    right: &Right,
    ou: &str,
    descriptor: &SecurityDescriptor,
    target: Target,
) -> Check {
    let name = format!("{} on users in {ou}", right.name);
    let needed = right.sddl(&facts.account_sid);
    let fix = format!(
        "run `writeback-agent grant --ou \"{ou}\" --apply` as a domain administrator, or add {needed}"
    );
    match verdict(facts, right, descriptor, target) {
        Verdict::Allowed(ace) => Check::pass(name, format!("granted by {}", ace.sddl())),
        Verdict::Denied(ace) => Check::problem(
            Status::Fail,
            name,
            format!("denied by {}", ace.sddl()),
            format!("remove that deny ACE; then {fix}"),
        ),
        Verdict::Missing => {
            Check::problem(Status::Fail, name, format!("missing ACE {needed}"), fix)
        }
    }
}

/// 100-nanosecond intervals per day.
const TICKS_PER_DAY: i64 = 864_000_000_000;

fn minimum_password_age(ticks: i64) -> Check {
    if ticks == 0 {
        return Check::pass("Minimum password age", "0, as Writeback needs");
    }
    let days = ticks.unsigned_abs() as f64 / TICKS_PER_DAY as f64;
    Check::problem(
        Status::Warn,
        "Minimum password age",
        format!(
            "{days:.1} days: a user whose password was just reset or changed cannot change it \
             again for that long, and resets that enforce history are refused within it"
        ),
        "set Minimum password age to 0 in the Default Domain Policy (samba-tool domain \
         passwordsettings set --min-pwd-age=0)",
    )
}

fn unreachable_users(facts: &PermissionFacts) -> Check {
    let name = "Users the rights do not reach";
    if facts.unreachable_users.is_empty() {
        return Check::pass(
            name,
            "none: every user in scope inherits the OU's ACEs and none has adminCount=1",
        );
    }
    let listed: Vec<String> = facts
        .unreachable_users
        .iter()
        .take(LISTED_USERS)
        .map(|user| {
            let mut reasons = Vec::new();
            if user.protected {
                reasons.push("adminCount=1");
            }
            if user.inheritance_disabled {
                reasons.push("inheritance disabled");
            }
            format!("{} ({})", user.distinguished_name, reasons.join(", "))
        })
        .collect();
    let more = facts.unreachable_users.len().saturating_sub(LISTED_USERS);
    let mut detail = format!(
        "{} user(s) cannot be reset through Writeback: {}",
        facts.unreachable_users.len(),
        listed.join("; ")
    );
    if more > 0 {
        let _ = write!(detail, "; and {more} more");
    }
    Check::problem(
        Status::Warn,
        name,
        detail,
        "protected accounts are refused by design; for the others, re-enable inheritance \
         (Advanced Security Settings › Enable inheritance)",
    )
}

fn privilege(facts: &PermissionFacts) -> Check {
    let domain_prefix = facts
        .account_sid
        .rsplit_once('-')
        .map_or("", |(prefix, _)| prefix);
    let mut memberships: Vec<&str> = PRIVILEGED_DOMAIN_RIDS
        .iter()
        .filter(|(rid, _)| facts.token.contains(&format!("{domain_prefix}-{rid}")))
        .map(|(_, name)| *name)
        .collect();
    memberships.extend(
        PRIVILEGED_BUILTIN_SIDS
            .iter()
            .filter(|(sid, _)| facts.token.iter().any(|held| held == sid))
            .map(|(_, name)| *name),
    );
    if memberships.is_empty() {
        return Check::pass(
            "Least privilege",
            "the account is in none of Domain Admins, Enterprise Admins, Schema Admins, \
             Administrators or Account Operators",
        );
    }
    Check::problem(
        Status::Warn,
        "Least privilege",
        format!(
            "the account is a member of {}: it can do far more than Writeback needs",
            memberships.join(", ")
        ),
        "use a dedicated account holding only the delegated rights (`writeback-agent grant`)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_sddl_matches_reference() {
        let sddl: Vec<String> = WRITEBACK_RIGHTS
            .iter()
            .map(|right| right.sddl("S-1-5-21-1-2-3-1105"))
            .collect();
        assert_eq!(
            sddl,
            [
                "(OA;CIIO;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-1-2-3-1105)",
                "(OA;CIIO;WP;28630ebf-41d5-11d1-a9c1-0000f80367c1;bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-1-2-3-1105)",
                "(OA;CIIO;WP;bf967a0a-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;S-1-5-21-1-2-3-1105)",
                "(OA;CI;CR;ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501;;S-1-5-21-1-2-3-1105)",
            ]
        );
    }

    #[test]
    fn a_nonzero_minimum_age_warns_in_days() {
        assert_eq!(minimum_password_age(0).status, Status::Pass);
        let one_day = minimum_password_age(-TICKS_PER_DAY);
        assert_eq!(one_day.status, Status::Warn);
        assert!(one_day.detail.starts_with("1.0 days"), "{}", one_day.detail);
    }

    #[test]
    fn domain_admins_are_warned_about() {
        let mut facts = PermissionFacts {
            account_sid: "S-1-5-21-7-8-9-1105".into(),
            token: vec!["S-1-5-21-7-8-9-1105".into(), "S-1-5-21-7-8-9-513".into()],
            domain_root: "DC=x".into(),
            domain_root_descriptor: None,
            allowed_ou_descriptors: Vec::new(),
            property_sets: Default::default(),
            minimum_password_age: 0,
            policy_hints_supported: true,
            unreachable_users: Vec::new(),
        };
        assert_eq!(privilege(&facts).status, Status::Pass);
        facts.token.push("S-1-5-21-7-8-9-512".into());
        let check = privilege(&facts);
        assert_eq!(check.status, Status::Warn);
        assert!(check.detail.contains("Domain Admins"));
    }
}

//! How the directory commands print: aligned text for people, the API's JSON with `--json`.

use anyhow::Result;
use serde::Serialize;
use writeback_proto::api::{DirectoryGroup, DirectoryUser, DirectoryUserDetail, SyncStatus};
use writeback_proto::time::UnixMillis;

fn json(value: &impl Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn time(at: Option<UnixMillis>) -> String {
    at.map(|at| humantime::format_rfc3339_seconds(at.to_system_time()).to_string())
        .unwrap_or_else(|| "never".into())
}

fn flags(user: &writeback_proto::sync::SyncedUser) -> String {
    let mut flags = Vec::new();
    if !user.enabled {
        flags.push("disabled");
    }
    if user.locked_out {
        flags.push("locked");
    }
    if user.must_change_password {
        flags.push("must-change");
    }
    if user.protected {
        flags.push("protected");
    }
    flags.join(",")
}

pub fn print_users(users: &[DirectoryUser], as_json: bool) -> Result<()> {
    if as_json {
        return json(&users);
    }
    if users.is_empty() {
        println!("no synced user matches");
    }
    for entry in users {
        let user = &entry.user;
        println!(
            "{:<20} {:<36} {:<30} {}",
            user.sam_account_name,
            user.user_principal_name.as_deref().unwrap_or("-"),
            user.display_name.as_deref().unwrap_or("-"),
            flags(user)
        );
    }
    Ok(())
}

pub fn print_user(detail: &DirectoryUserDetail, as_json: bool) -> Result<()> {
    if as_json {
        return json(detail);
    }
    let user = &detail.user;
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let groups = |groups: &[writeback_proto::api::GroupRef]| {
        if groups.is_empty() {
            "-".to_owned()
        } else {
            groups
                .iter()
                .map(|group| group.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!("{}", user.sam_account_name);
    println!("  anchor:            {}", user.anchor);
    println!("  sid:               {}", text(&user.sid));
    println!("  upn:               {}", text(&user.user_principal_name));
    println!("  mail:              {}", text(&user.mail));
    println!("  display name:      {}", text(&user.display_name));
    println!("  given name:        {}", text(&user.given_name));
    println!("  surname:           {}", text(&user.surname));
    println!("  dn:                {}", user.distinguished_name);
    println!("  enabled:           {}", user.enabled);
    println!("  locked out:        {}", user.locked_out);
    println!("  password last set: {}", time(user.password_last_set));
    println!("  must change:       {}", user.must_change_password);
    println!("  never expires:     {}", user.password_never_expires);
    println!("  protected:         {}", user.protected);
    println!("  groups:            {}", groups(&detail.direct_groups));
    println!("  nested groups:     {}", groups(&detail.nested_groups));
    println!("  last synced:       {}", time(Some(detail.last_synced_at)));
    Ok(())
}

pub fn print_groups(groups: &[DirectoryGroup], as_json: bool) -> Result<()> {
    if as_json {
        return json(&groups);
    }
    if groups.is_empty() {
        println!("no synced group matches");
    }
    for entry in groups {
        println!(
            "{:<30} {:>6} members  {}",
            entry.group.name, entry.direct_members, entry.group.distinguished_name
        );
    }
    Ok(())
}

pub fn print_sync_status(status: &SyncStatus, as_json: bool) -> Result<()> {
    if as_json {
        return json(status);
    }
    println!("directory sync of {}", status.directory);
    println!(
        "  users / groups:        {} / {}",
        status.users, status.groups
    );
    println!(
        "  last full sync:        started {}, completed {}",
        time(status.last_full_sync_started_at),
        time(status.last_full_sync_completed_at)
    );
    println!("  last change:           {}", time(status.last_change_at));
    println!(
        "  cursor age:            {}",
        status
            .cursor_age_ms
            .map(|age| format!("{:.1} s", age as f64 / 1000.0))
            .unwrap_or_else(|| "no cursor yet".into())
    );
    if status.full_sync_requested {
        println!("  a full sync is requested and waits for an agent");
    }
    println!("  errors:                {}", status.error_count);
    for error in &status.recent_errors {
        println!(
            "    {}  {}: {}",
            time(Some(error.at)),
            error.object,
            error.message
        );
    }
    Ok(())
}

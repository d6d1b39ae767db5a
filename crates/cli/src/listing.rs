//! How the listing commands print: aligned text for people, the API's JSON with `--json`.

use anyhow::Result;
use serde::Serialize;
use writeback_proto::api::{
    AdministratorSummary, AgentSummary, AuditOutcomeView, AuditPage, CloudNode, DirectoryGroup,
    DirectoryHealth, DirectoryUser, DirectoryUserDetail, OperationInFlight, SelfServiceScope,
    SelfServiceSettings, SyncStatus,
};
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

pub fn print_administrators(administrators: &[AdministratorSummary], as_json: bool) -> Result<()> {
    if as_json {
        return json(&administrators);
    }
    for administrator in administrators {
        println!(
            "{:<40} {:<9} {:<22} sessions {:<3} last active {}",
            administrator.email,
            if administrator.enabled {
                "enabled"
            } else {
                "disabled"
            },
            if administrator.second_factor {
                "authenticator"
            } else {
                "no authenticator yet"
            },
            administrator.sessions,
            time(administrator.last_active_at),
        );
    }
    Ok(())
}

pub fn print_agents(agents: &[AgentSummary], as_json: bool) -> Result<()> {
    if as_json {
        return json(&agents);
    }
    if agents.is_empty() {
        println!(
            "no agents are registered: issue a token with `writeback agents register DIRECTORY`"
        );
    }
    for agent in agents {
        let state = match (agent.revoked_at, agent.connected, agent.directory_reachable) {
            (Some(_), _, _) => "revoked",
            (None, false, _) => "disconnected",
            (None, true, Some(false)) => "directory unreachable",
            (None, true, _) => "connected",
        };
        println!(
            "{}  {:<12} {:<20} {:<21} v{:<8} from {:<15} node {:<12} heartbeat {}  in flight {}{}",
            agent.agent_id,
            agent.directory,
            agent.name,
            state,
            agent.version,
            agent.address.as_deref().unwrap_or("-"),
            agent.node.as_deref().unwrap_or("-"),
            time(agent.last_heartbeat_at),
            agent.requests_in_flight,
            agent
                .last_error
                .as_ref()
                .map(|error| format!("  last error: {error}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub fn print_operations(operations: &[OperationInFlight], as_json: bool) -> Result<()> {
    if as_json {
        return json(&operations);
    }
    if operations.is_empty() {
        println!("no operation is running");
    }
    for operation in operations {
        println!(
            "{}  {:<16} {:<24} agent {}  {:<10} request {}",
            time(Some(operation.sent_at)),
            operation.operation,
            operation.user,
            operation.agent_id,
            operation.stage.as_str(),
            operation.request_id
        );
    }
    Ok(())
}

pub fn print_nodes(nodes: &[CloudNode], as_json: bool) -> Result<()> {
    if as_json {
        return json(&nodes);
    }
    for node in nodes {
        println!(
            "{:<24} {:>3} agent(s) {:>4} in flight{}",
            node.name,
            node.agents,
            node.requests_in_flight,
            if node.this_node { "  (answered)" } else { "" }
        );
    }
    Ok(())
}

pub fn print_health(healths: &[DirectoryHealth], as_json: bool) -> Result<()> {
    if as_json {
        return json(&healths);
    }
    if healths.is_empty() {
        println!(
            "no directory is configured: register an agent with `writeback agents register DIRECTORY`"
        );
    }
    for health in healths {
        println!(
            "{:<16} {:<22} agents {}/{} connected, {} healthy (minimum {})  {}",
            health.directory,
            health.state.as_str(),
            health.agents_connected,
            health.agents_registered,
            health.agents_healthy,
            health.agents_minimum,
            health.summary
        );
    }
    Ok(())
}

pub fn print_audit(page: &AuditPage) {
    if page.entries.is_empty() {
        println!("no audit entry matches");
    }
    for entry in &page.entries {
        let outcome = match entry.outcome {
            AuditOutcomeView::Success => "ok",
            AuditOutcomeView::Failure => "FAILED",
        };
        println!(
            "{}  {:<24} {:<26} {:<20} {:<6} {:<24} from {}{}{}",
            time(Some(entry.at)),
            entry.actor,
            entry.action,
            entry.target.as_deref().unwrap_or("-"),
            outcome,
            entry.result_code,
            entry.origin.as_deref().unwrap_or("-"),
            entry
                .detail
                .as_ref()
                .map(|detail| format!("  ({detail})"))
                .unwrap_or_default(),
            entry
                .trace
                .as_ref()
                .map(|trace| format!("  [{}]", trace.describe()))
                .unwrap_or_default()
        );
    }
    if let Some(before) = page.next_before {
        println!("(more entries: raise --limit, or page with the API's before={before})");
    }
}

pub fn print_self_service(settings: &SelfServiceSettings) {
    let scope = match &settings.scope {
        SelfServiceScope::Nobody => "nobody (self-service is off)".to_owned(),
        SelfServiceScope::Group { group } => format!("members of {group}"),
        SelfServiceScope::Everyone => "everyone".to_owned(),
    };
    let methods: Vec<&str> = settings
        .methods
        .iter()
        .map(|method| method.as_str())
        .collect();
    let yes_no = |value: bool| if value { "yes" } else { "no" };
    let rows = [
        ("scope", scope),
        ("methods", methods.join(", ")),
        ("methods required", settings.methods_required.to_string()),
        (
            "security questions",
            format!(
                "{} written, {} asked",
                settings.security_questions.len(),
                settings.questions_asked
            ),
        ),
        (
            "unlock without reset",
            yes_no(settings.unlock_without_reset).into(),
        ),
        (
            "writeback enabled",
            yes_no(settings.writeback_enabled).into(),
        ),
        ("banned words", settings.banned_words.join(", ")),
        (
            "minimum strength",
            format!("{} of 4", settings.minimum_strength),
        ),
        ("helpdesk", settings.helpdesk.clone()),
        (
            "reconfirm after",
            match settings.reconfirm_days {
                0 => "never".into(),
                days => format!("{days} days"),
            },
        ),
        (
            "notify user on reset",
            yes_no(settings.notify_user_on_reset).into(),
        ),
        (
            "notify admins on admin reset",
            yes_no(settings.notify_admins_on_admin_reset).into(),
        ),
    ];
    for (name, value) in rows {
        println!("{name:<29} {value}");
    }
}

//! `writeback`: the administrator's command line. Sign in once, then reset, change or unlock, look
//! up synced users and groups, follow or restart directory sync, register and revoke agents, see
//! each directory's health, read and export the audit log, and change settings.
//!
//! Exit status: 0 when the directory applied the operation, 1 when it (or the agent) refused it,
//! 2 when the command itself failed (no session, cloud unreachable, bad arguments).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{CommandFactory, Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use writeback_cli::{AdministratorAction, ApiClient, AuditQuery, ClientError, UserSearch};
use writeback_config::Sources;
use writeback_proto::api::{
    AuditSettings, ChangePasswordRequest, OperationResponse, ResetPasswordRequest,
    SelfServiceScope, SelfServiceSettings, SignInResponse, VerificationMethod,
};
use writeback_proto::ids::{DirectoryName, RequestId};
use writeback_proto::result::ResultCode;
use writeback_proto::time::UnixMillis;
use writeback_tls::Trust;

mod listing;

#[derive(Debug, Parser)]
#[command(name = "writeback", version, about = "Writeback admin command line")]
struct Arguments {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where the signed-in session is kept (mode 0600).
    #[arg(long, global = true)]
    session_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Describe(writeback_config::command_line::Describe),
    /// Sign in as an administrator and keep the session.
    Login {
        /// The cloud, e.g. https://writeback.example.com:8443
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The code from your authenticator app, once one is enrolled (asked for when needed).
        #[arg(long)]
        totp_code: Option<String>,
        /// Trust exactly the cloud certificate with this SHA-256 fingerprint.
        #[arg(long, conflicts_with = "ca_file")]
        pin: Option<String>,
        /// Trust cloud certificates issued by this CA.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Administrators: list them (the default), disable, enable or delete one, or end their
    /// sessions.
    Administrators {
        #[command(subcommand)]
        command: Option<AdministratorsCommand>,
    },
    /// End the session.
    Logout,
    /// Agents: list them (the default), register a new one, or revoke one.
    Agents {
        #[command(subcommand)]
        command: Option<AgentsCommand>,
    },
    /// The health of every directory, or of one.
    Health { directory: Option<String> },
    /// The operations the cloud is waiting on now: which agent has each, and how far it got.
    Operations,
    /// The cloud's nodes: the one answering and every other node of its cluster, with their
    /// agents.
    Nodes,
    /// Read or export the audit log, newest first.
    Audit {
        /// From this time (RFC 3339, e.g. 2026-11-22T08:00:00Z, or Unix milliseconds).
        #[arg(long)]
        since: Option<String>,
        /// Until this time, exclusive.
        #[arg(long)]
        until: Option<String>,
        /// Who acted (part of an email or name).
        #[arg(long)]
        actor: Option<String>,
        /// Whom it was done to (part of a user name).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        directory: Option<String>,
        /// e.g. reset_password, change_password, unlock, sign_in, revoke_agent.
        #[arg(long)]
        operation: Option<String>,
        /// success or failure.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        result_code: Option<String>,
        /// The request id an operation answered with.
        #[arg(long)]
        request_id: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        /// table (default), json or csv.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Settings an administrator may change.
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
    /// Reset a user's password in the on-premises directory.
    Reset {
        directory: String,
        /// sAMAccountName or user principal name.
        user: String,
        /// Require a password change at next sign-in.
        #[arg(long)]
        must_change: bool,
        /// Also clear a lockout.
        #[arg(long)]
        unlock: bool,
        /// Read the new password from this file instead of prompting.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Makes a retry safe: the same key is applied at most once (32 hexadecimal digits).
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Change a user's password, verifying the current one.
    Change {
        directory: String,
        user: String,
        #[arg(long)]
        current_password_file: Option<PathBuf>,
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Clear a user's lockout and change nothing else.
    Unlock { directory: String, user: String },
    /// List or search the synced users of a directory.
    Users {
        directory: String,
        /// Part of a logon name, UPN, mail or display name.
        #[arg(long)]
        search: Option<String>,
        /// Only members of this group (name or anchor), direct or nested.
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one synced user: attributes, groups and when it was last synced.
    User {
        directory: String,
        /// sAMAccountName, user principal name, mail or anchor.
        user: String,
    },
    /// Remove every self-service method of a user who lost theirs; they register anew after
    /// signing in to the portal, and the addresses that were registered are told.
    ClearMethods {
        directory: String,
        /// sAMAccountName, user principal name, mail or anchor.
        user: String,
    },
    /// List or search the synced groups of a directory.
    Groups {
        directory: String,
        #[arg(long)]
        search: Option<String>,
    },
    /// Directory sync: its status, or a full resync.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AgentsCommand {
    /// Every registered agent: connected or not, version, address, heartbeat, requests in
    /// flight, last error.
    List,
    /// Issue a one-time token that registers a new agent for DIRECTORY (created if new).
    Register { directory: String },
    /// Disconnect an agent at once and refuse it from now on.
    Revoke { agent_id: String },
}

#[derive(Debug, Subcommand)]
enum AdministratorsCommand {
    /// Every administrator: enabled or not, second factor, open sessions, last active.
    List,
    /// Refuse EMAIL everywhere and end their sessions (never the last enabled administrator).
    Disable {
        email: String,
    },
    Enable {
        email: String,
    },
    /// Delete EMAIL for good, with their sessions (never the last enabled administrator).
    Delete {
        email: String,
    },
    /// End every session of EMAIL: they sign in again, with both factors.
    EndSessions {
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum SettingsCommand {
    /// Show or set how long the audit log keeps entries.
    Audit {
        /// Keep entries this many days (1 to 3650).
        #[arg(long, conflicts_with = "keep_forever")]
        retention_days: Option<u32>,
        /// Keep entries for ever.
        #[arg(long)]
        keep_forever: bool,
    },
    /// Show or change the self-service policy; only the options given change.
    SelfService(SelfServiceChanges),
}

#[derive(Debug, clap::Args)]
struct SelfServiceChanges {
    /// nobody, everyone, or group:NAME.
    #[arg(long)]
    scope: Option<String>,
    /// The methods users may use, comma-separated: email, authenticator_app, security_questions, sms.
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// How many methods a reset needs: 1 or 2.
    #[arg(long)]
    methods_required: Option<u8>,
    /// A file with the security questions, one per line.
    #[arg(long)]
    questions_file: Option<PathBuf>,
    /// How many questions a reset asks: 3 to 5.
    #[arg(long)]
    questions_asked: Option<u8>,
    #[arg(long)]
    unlock_without_reset: Option<bool>,
    #[arg(long)]
    writeback_enabled: Option<bool>,
    /// Words no password may contain, comma-separated (replaces the list; "" empties it).
    #[arg(long, value_delimiter = ',')]
    banned_words: Option<Vec<String>>,
    /// 0 (any) to 4 (very strong).
    #[arg(long)]
    minimum_strength: Option<u8>,
    /// A sentence or an https link users see when they cannot help themselves.
    #[arg(long)]
    helpdesk: Option<String>,
    /// Ask users to confirm their methods again after this many days; 0 never.
    #[arg(long)]
    reconfirm_days: Option<u32>,
    #[arg(long)]
    notify_user_on_reset: Option<bool>,
    #[arg(long)]
    notify_admins_on_admin_reset: Option<bool>,
}

impl SelfServiceChanges {
    /// `settings` with these changes; `true` when anything was asked to change.
    fn apply_to(&self, settings: &mut SelfServiceSettings) -> Result<bool> {
        let mut changed = false;
        if let Some(scope) = &self.scope {
            settings.scope = match scope.as_str() {
                "nobody" => SelfServiceScope::Nobody,
                "everyone" => SelfServiceScope::Everyone,
                other => match other.strip_prefix("group:") {
                    Some(group) => SelfServiceScope::Group {
                        group: group.to_owned(),
                    },
                    None => bail!("--scope must be nobody, everyone or group:NAME"),
                },
            };
            changed = true;
        }
        if let Some(methods) = &self.methods {
            settings.methods = methods
                .iter()
                .map(|name| {
                    VerificationMethod::ALL
                        .into_iter()
                        .find(|method| method.as_str() == name.trim())
                        .ok_or_else(|| anyhow!("{name:?} is not a method: use email, authenticator_app, security_questions or sms"))
                })
                .collect::<Result<_>>()?;
            changed = true;
        }
        if let Some(path) = &self.questions_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            settings.security_questions = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect();
            changed = true;
        }
        if let Some(words) = &self.banned_words {
            settings.banned_words = words
                .iter()
                .map(|word| word.trim().to_owned())
                .filter(|word| !word.is_empty())
                .collect();
            changed = true;
        }
        let mut set = |value: Option<u8>, field: &mut u8| {
            if let Some(value) = value {
                *field = value;
                changed = true;
            }
        };
        set(self.methods_required, &mut settings.methods_required);
        set(self.questions_asked, &mut settings.questions_asked);
        set(self.minimum_strength, &mut settings.minimum_strength);
        let mut flag = |value: Option<bool>, field: &mut bool| {
            if let Some(value) = value {
                *field = value;
                changed = true;
            }
        };
        flag(
            self.unlock_without_reset,
            &mut settings.unlock_without_reset,
        );
        flag(self.writeback_enabled, &mut settings.writeback_enabled);
        flag(
            self.notify_user_on_reset,
            &mut settings.notify_user_on_reset,
        );
        flag(
            self.notify_admins_on_admin_reset,
            &mut settings.notify_admins_on_admin_reset,
        );
        if let Some(helpdesk) = &self.helpdesk {
            settings.helpdesk = helpdesk.clone();
            changed = true;
        }
        if let Some(days) = self.reconfirm_days {
            settings.reconfirm_days = days;
            changed = true;
        }
        Ok(changed)
    }
}

#[derive(Debug, Subcommand)]
enum SyncCommand {
    /// Last full sync, last change, cursor age, object counts and errors.
    Status { directory: String },
    /// Read every object again; objects no longer in the directory are removed.
    Full { directory: String },
}

/// The CLI's one configuration struct: defaults, then `--config`, then `WRITEBACK_CLI_*`, then flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CliConfig {
    url: Option<String>,
    pin: Option<String>,
    ca_file: Option<PathBuf>,
    session_file: PathBuf,
}

impl Default for CliConfig {
    fn default() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        Self {
            url: None,
            pin: None,
            ca_file: None,
            session_file: home.join(".config/writeback/session.json"),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSession {
    url: String,
    pin: Option<String>,
    ca_file: Option<PathBuf>,
    token: String,
    expires_at: UnixMillis,
}

fn trust(pin: Option<&String>, ca_file: Option<&PathBuf>) -> Result<Trust> {
    Ok(match (pin, ca_file) {
        (Some(pin), _) => Trust::Pinned(pin.parse().context("invalid --pin")?),
        (None, Some(path)) => Trust::CaFile(path.clone()),
        (None, None) => Trust::SystemRoots,
    })
}

fn read_secret(path: Option<&PathBuf>, prompt: &str) -> Result<SecretString> {
    match path {
        Some(path) => Ok(writeback_config::read_secret_file(path)?),
        None => Ok(SecretString::from(rpassword::prompt_password(prompt)?)),
    }
}

fn read_line(prompt: &str) -> Result<String> {
    use std::io::Write;
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}

fn load_session(path: &Path) -> Result<(ApiClient, StoredSession)> {
    let text = std::fs::read_to_string(path)
        .map_err(|_| anyhow!("not signed in: run `writeback login` first"))?;
    let session: StoredSession =
        serde_json::from_str(&text).context("the session file is damaged; sign in again")?;
    if session.expires_at <= UnixMillis::now() {
        bail!("the session has expired: run `writeback login` again");
    }
    let client = ApiClient::new(
        &session.url,
        &trust(session.pin.as_ref(), session.ca_file.as_ref())?,
    )?
    .with_token(SecretString::from(session.token.clone()));
    Ok((client, session))
}

fn save_session(path: &Path, session: &StoredSession) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    writeback_config::write_private_file(path, serde_json::to_string_pretty(session)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn print_operation(response: &OperationResponse, json: bool) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(response)?);
    } else {
        println!("{}", response.message);
        let detail = match &response.result {
            ResultCode::PolicyViolation { reason, .. } => format!(" ({})", reason.as_str()),
            ResultCode::DirectoryUnavailable { detail } | ResultCode::Internal { detail } => {
                format!(" ({detail})")
            }
            _ => String::new(),
        };
        println!("  result:     {}{detail}", response.result.code());
        println!("  request id: {}", response.request_id);
        for warning in &response.warnings {
            println!(
                "  warning:    {} ({})",
                warning.message,
                warning.code.code()
            );
        }
    }
    Ok(if response.result.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn execute(arguments: Arguments) -> Result<ExitCode> {
    if let Command::Describe(asked) = &arguments.command {
        asked.print(Arguments::command())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut flags = Vec::new();
    if let Some(path) = &arguments.session_file {
        flags.push((
            "session_file".to_owned(),
            toml::Value::String(path.display().to_string()),
        ));
    }
    let config: CliConfig = writeback_config::load(
        &Sources {
            file: arguments.config.clone(),
            environment: std::env::vars().collect(),
            flags,
        },
        "WRITEBACK_CLI_",
    )?;
    let directory =
        |name: &str| -> Result<DirectoryName> { name.parse().context("invalid directory name") };
    match &arguments.command {
        // Printed above, before any configuration was read.
        Command::Describe(_) => {}
        Command::Login {
            url,
            email,
            password_file,
            totp_code,
            pin,
            ca_file,
        } => {
            let url = url
                .clone()
                .or(config.url.clone())
                .context("give the cloud's address with --url")?;
            let pin = pin.clone().or(config.pin.clone());
            let ca_file = ca_file.clone().or(config.ca_file.clone());
            let client = ApiClient::new(&url, &trust(pin.as_ref(), ca_file.as_ref())?)?;
            let password = read_secret(password_file.as_ref(), "Administrator password: ")?;
            let signed_in = match client
                .sign_in(email, password.clone(), totp_code.clone())
                .await
            {
                Err(ClientError::Api { code, .. })
                    if code == "second_factor_required" && totp_code.is_none() =>
                {
                    let code = read_line("Authenticator code: ")?;
                    client.sign_in(email, password, Some(code)).await?
                }
                Err(ClientError::Api { code, .. })
                    if code == "second_factor_enrolment_required" =>
                {
                    enrol(&client, email, password).await?
                }
                other => other?,
            };
            save_session(
                &config.session_file,
                &StoredSession {
                    url,
                    pin,
                    ca_file,
                    token: signed_in.token.expose_secret().to_owned(),
                    expires_at: signed_in.expires_at,
                },
            )?;
            println!(
                "signed in as {email}; the session lasts until {}",
                humantime::format_rfc3339_seconds(signed_in.expires_at.to_system_time())
            );
        }
        Command::Administrators { command } => {
            let (client, _) = load_session(&config.session_file)?;
            let (email, action) = match command.as_ref().unwrap_or(&AdministratorsCommand::List) {
                AdministratorsCommand::List => {
                    let list = client.administrators().await?;
                    listing::print_administrators(&list.administrators, arguments.json)?;
                    return Ok(ExitCode::SUCCESS);
                }
                AdministratorsCommand::Disable { email } => (email, AdministratorAction::Disable),
                AdministratorsCommand::Enable { email } => (email, AdministratorAction::Enable),
                AdministratorsCommand::Delete { email } => (email, AdministratorAction::Delete),
                AdministratorsCommand::EndSessions { email } => {
                    (email, AdministratorAction::EndSessions)
                }
            };
            let change = client.change_administrator(email, action).await?;
            if arguments.json {
                println!("{}", serde_json::to_string_pretty(&change)?);
            } else {
                let done = match (action, change.changed) {
                    (AdministratorAction::Disable, true) => "disabled",
                    (AdministratorAction::Disable, false) => "was disabled already",
                    (AdministratorAction::Enable, true) => "enabled",
                    (AdministratorAction::Enable, false) => "was enabled already",
                    (AdministratorAction::Delete, _) => "deleted",
                    (AdministratorAction::EndSessions, _) => "signed out everywhere",
                };
                println!("{email} {done}; {} sessions ended", change.sessions_ended);
            }
        }
        Command::Logout => {
            let (client, _) = load_session(&config.session_file)?;
            client.sign_out().await?;
            std::fs::remove_file(&config.session_file)?;
            println!("signed out");
        }
        Command::Agents { command } => {
            let (client, session) = load_session(&config.session_file)?;
            match command.as_ref().unwrap_or(&AgentsCommand::List) {
                AgentsCommand::List => {
                    let agents = client.agents().await?;
                    listing::print_agents(&agents, arguments.json)?;
                }
                AgentsCommand::Register { directory: name } => {
                    let registration = client.register_agent(&directory(name)?).await?;
                    if arguments.json {
                        println!("{}", serde_json::to_string_pretty(&registration)?);
                    } else {
                        println!(
                            "registration token for {} (single use, until {}):\n\n  {}\n\non the agent's host, put it in a file readable only by root and run:\n\n  writeback-agent register --cloud {}{} --token-file TOKEN_FILE\n",
                            registration.directory,
                            humantime::format_rfc3339_seconds(
                                registration.expires_at.to_system_time()
                            ),
                            registration.token.expose_secret(),
                            session.url,
                            session
                                .pin
                                .as_ref()
                                .map(|pin| format!(" --pin {pin}"))
                                .unwrap_or_default(),
                        );
                    }
                }
                AgentsCommand::Revoke { agent_id } => {
                    let agent_id = agent_id.parse().context(
                        "an agent id is 32 hexadecimal digits, as `writeback agents` lists them",
                    )?;
                    client.revoke_agent(&agent_id).await?;
                    println!(
                        "agent {agent_id} revoked: it was disconnected and cannot connect again"
                    );
                }
            }
        }
        Command::Nodes => {
            let (client, _) = load_session(&config.session_file)?;
            let nodes = client.nodes().await?;
            listing::print_nodes(&nodes, arguments.json)?;
        }
        Command::Operations => {
            let (client, _) = load_session(&config.session_file)?;
            let operations = client.operations_in_flight().await?;
            listing::print_operations(&operations, arguments.json)?;
        }
        Command::Health { directory: name } => {
            let (client, _) = load_session(&config.session_file)?;
            let healths = match name {
                Some(name) => vec![client.directory_health(&directory(name)?).await?],
                None => client.directories().await?,
            };
            listing::print_health(&healths, arguments.json)?;
            let all_healthy = healths
                .iter()
                .all(|health| health.state == writeback_proto::api::HealthState::Healthy);
            return Ok(if all_healthy {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Audit {
            since,
            until,
            actor,
            target,
            directory,
            operation,
            outcome,
            result_code,
            request_id,
            limit,
            format,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let query = AuditQuery {
                since: since.clone(),
                until: until.clone(),
                actor: actor.clone(),
                target: target.clone(),
                directory: directory.clone(),
                operation: operation.clone(),
                outcome: outcome.clone(),
                result_code: result_code.clone(),
                request_id: request_id.clone(),
                before: None,
                limit: *limit,
                format: None,
            };
            match (format.as_str(), arguments.json) {
                ("csv", _) => print!("{}", client.audit_csv(&query).await?),
                ("json", _) | (_, true) => {
                    let page = client.audit(&query).await?;
                    println!("{}", serde_json::to_string_pretty(&page)?);
                }
                ("table", false) => listing::print_audit(&client.audit(&query).await?),
                (other, false) => bail!("--format must be table, json or csv, not {other:?}"),
            }
        }
        Command::Settings {
            command:
                SettingsCommand::Audit {
                    retention_days,
                    keep_forever,
                },
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let settings = if *keep_forever || retention_days.is_some() {
                client
                    .update_audit_settings(&AuditSettings {
                        retention_days: *retention_days,
                    })
                    .await?
            } else {
                client.audit_settings().await?
            };
            if arguments.json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
            } else {
                match settings.retention_days {
                    Some(days) => println!("the audit log keeps entries for {days} days"),
                    None => println!("the audit log keeps entries for ever"),
                }
            }
        }
        Command::Settings {
            command: SettingsCommand::SelfService(changes),
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let mut settings = client.self_service_settings().await?;
            if changes.apply_to(&mut settings)? {
                settings = client.update_self_service_settings(&settings).await?;
            }
            if arguments.json {
                println!("{}", serde_json::to_string_pretty(&settings)?);
            } else {
                listing::print_self_service(&settings);
            }
        }
        Command::Reset {
            directory: name,
            user,
            must_change,
            unlock,
            password_file,
            idempotency_key,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let idempotency_key = idempotency_key
                .as_deref()
                .map(str::parse::<RequestId>)
                .transpose()
                .context("invalid --idempotency-key")?;
            let new_password = read_secret(password_file.as_ref(), "New password: ")?;
            let request = ResetPasswordRequest {
                new_password,
                must_change: *must_change,
                unlock: *unlock,
            };
            let response = client
                .reset_password(&directory(name)?, user, &request, idempotency_key)
                .await?;
            return print_operation(&response, arguments.json);
        }
        Command::Change {
            directory: name,
            user,
            current_password_file,
            new_password_file,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let request = ChangePasswordRequest {
                current_password: read_secret(
                    current_password_file.as_ref(),
                    "Current password: ",
                )?,
                new_password: read_secret(new_password_file.as_ref(), "New password: ")?,
            };
            let response = client
                .change_password(&directory(name)?, user, &request)
                .await?;
            return print_operation(&response, arguments.json);
        }
        Command::Unlock {
            directory: name,
            user,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let response = client.unlock(&directory(name)?, user).await?;
            return print_operation(&response, arguments.json);
        }
        Command::Users {
            directory: name,
            search,
            group,
            limit,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let search = UserSearch {
                text: search.clone(),
                group: group.clone(),
                limit: *limit,
            };
            let users = client.users(&directory(name)?, &search).await?;
            listing::print_users(&users, arguments.json)?;
        }
        Command::User {
            directory: name,
            user,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let detail = client.user(&directory(name)?, user).await?;
            listing::print_user(&detail, arguments.json)?;
        }
        Command::ClearMethods {
            directory: name,
            user,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let cleared = client
                .clear_self_service_methods(&directory(name)?, user)
                .await?;
            if arguments.json {
                println!("{}", serde_json::to_string_pretty(&cleared)?);
            } else {
                println!(
                    "{} self-service methods of {user} removed; they register anew after signing in to the portal",
                    cleared.removed
                );
            }
        }
        Command::Groups {
            directory: name,
            search,
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let groups = client.groups(&directory(name)?, search.as_deref()).await?;
            listing::print_groups(&groups, arguments.json)?;
        }
        Command::Sync {
            command: SyncCommand::Status { directory: name },
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let status = client.sync_status(&directory(name)?).await?;
            listing::print_sync_status(&status, arguments.json)?;
        }
        Command::Sync {
            command: SyncCommand::Full { directory: name },
        } => {
            let (client, _) = load_session(&config.session_file)?;
            let response = client.request_full_sync(&directory(name)?).await?;
            if arguments.json {
                println!("{}", serde_json::to_string_pretty(&response)?);
            } else if response.started {
                println!(
                    "full sync of {name} started; follow it with `writeback sync status {name}`"
                );
            } else {
                println!(
                    "full sync of {name} requested; it starts when an agent of {name} connects"
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[tokio::main]
async fn main() -> ExitCode {
    match execute(Arguments::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("writeback: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Enrols an authenticator for an administrator who has none: shows the key as a QR code in
/// the terminal, with the address and the key for typing by hand, and asks for its first code.
async fn enrol(client: &ApiClient, email: &str, password: SecretString) -> Result<SignInResponse> {
    let enrolment = client.begin_enrolment(email, password).await?;
    let uri = enrolment.otpauth_uri.expose_secret();
    let code = qrcode::QrCode::new(uri.as_bytes()).context("drawing the QR code")?;
    println!(
        "This administrator has no authenticator yet. Scan this with your authenticator app:\n\n{}\n",
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build()
    );
    println!(
        "or add it by hand: {uri}\nkey: {}\n",
        enrolment.key.expose_secret()
    );
    for _ in 0..5 {
        let code = read_line("The code the app shows now: ")?;
        match client.answer_challenge(&enrolment.challenge, &code).await {
            Ok(signed_in) => {
                println!("authenticator enrolled: sign in with its code from now on");
                return Ok(signed_in);
            }
            Err(ClientError::Api { code, message, .. }) if code == "invalid_second_factor" => {
                eprintln!("{message}");
            }
            Err(error) => return Err(error.into()),
        }
    }
    bail!("too many wrong codes: run `writeback login` again")
}

//! The whole product for one test: the cloud in-process on a loopback port, with its own data
//! directory, an administrator and a registered, connected `writeback-agent` *process* serving the
//! shared test DC with a least-privilege service account.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use secrecy::SecretString;
use tokio::process::{Child, Command};
use writeback_cli::ApiClient;
use writeback_cloud::{CloudConfig, RunningCloud};
use writeback_proto::api::{OperationResponse, ResetPasswordRequest};
use writeback_proto::ids::{AgentId, DirectoryName};
use writeback_tls::{Fingerprint, Trust};

use crate::domain_controller::{
    BASE_DN, DomainController, RESTRICTED_OU, SERVICE_ACCOUNT, STAFF_OU,
};
use crate::logs;

pub const DIRECTORY: &str = "corp";
pub const ADMIN_EMAIL: &str = "admin@example.test";

static NEXT_STACK: AtomicU64 = AtomicU64::new(0);

#[derive(Debug)]
pub struct Stack {
    pub dc: Arc<DomainController>,
    pub cloud: Option<RunningCloud>,
    pub address: SocketAddr,
    pub fingerprint: Fingerprint,
    pub directory: DirectoryName,
    pub admin_password: String,
    /// The administrator's authenticator, enrolled over the API at start.
    pub admin_authenticator: Authenticator,
    pub agent_id: AgentId,
    /// Signed in as the administrator.
    pub client: ApiClient,
    /// The administrator's session, which every node of a cluster honours.
    session_token: SecretString,
    pub work: PathBuf,
    agent_config: PathBuf,
    agent_log: PathBuf,
    agent: Option<Child>,
    second_agent: Option<SecondAgent>,
    cloud_config: CloudConfig,
    options: StackOptions,
}

/// Another agent of the same directory, with its own keys, journal and log; it runs while this
/// is held.
#[derive(Debug)]
pub struct SecondAgent {
    pub agent_id: AgentId,
    /// Held only for its drop, which kills the agent.
    _process: Child,
}

/// What differs between stacks: where the agent may work, how often it polls for changes, and
/// which service account it signs in as (one made by [`DomainController::create_service_account`],
/// or by default the one with the four rights on Staff).
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub allowed_ous: Vec<String>,
    /// `sync.poll_interval_ms`; `None` leaves the agent's default.
    pub sync_poll_interval_ms: Option<u64>,
    /// Whether the agent asks the DC to notify changes (`sync.change_notification`).
    pub sync_change_notification: bool,
    pub service_account: String,
    /// The loopback port of an SMTP server for the cloud's mail; none sends no mail.
    pub smtp_port: Option<u16>,
    /// The cloud's SMS provider; the default sends no texts.
    pub sms: writeback_cloud::config::SmsConfig,
    /// Changes the cloud's configuration before it starts (limits, timeouts, capacities).
    pub configure_cloud: Option<fn(&mut CloudConfig)>,
    /// Other DCs of the domain, which the agent falls back to, in this order, after the shared
    /// one ([`DomainController::join_second`]).
    pub more_domain_controllers: Vec<Arc<DomainController>>,
    /// A PostgreSQL database for the cloud, instead of SQLite in its data directory: the one
    /// every node of a cluster ([`Stack::start_node`]) shares.
    pub database_url: Option<String>,
    /// A name server ([`crate::name_server::NameServer`]) where the agent finds the domain's DCs
    /// (`directory.discover_domain`): `more_domain_controllers` are then found there, not listed.
    pub name_server: Option<std::net::SocketAddr>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            allowed_ous: vec![STAFF_OU.to_owned(), RESTRICTED_OU.to_owned()],
            sync_poll_interval_ms: None,
            sync_change_notification: false,
            service_account: SERVICE_ACCOUNT.to_owned(),
            smtp_port: None,
            sms: writeback_cloud::config::SmsConfig::default(),
            configure_cloud: None,
            more_domain_controllers: Vec::new(),
            database_url: None,
            name_server: None,
        }
    }
}

/// An authenticator app for tests: the key, and the last step a code was made for, so that each
/// code it gives is one the cloud has not accepted yet.
#[derive(Debug)]
pub struct Authenticator {
    pub key: Vec<u8>,
    last_step: std::sync::Mutex<u64>,
}

impl Authenticator {
    pub fn new(key: Vec<u8>) -> Self {
        Self {
            key,
            last_step: std::sync::Mutex::new(0),
        }
    }

    /// A code the cloud accepts now and has not seen: for the current step, or the next one
    /// (within the allowed drift) when the current one was used.
    pub fn code(&self) -> String {
        let now = writeback_cloud::service::totp::step_at(writeback_proto::time::UnixMillis::now());
        let mut last = self
            .last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let step = now.max(*last + 1);
        *last = step;
        writeback_cloud::service::totp::code_at_step(&self.key, step)
    }

    /// The code of the step before the current one, still within the cloud's allowed drift:
    /// enrolling with it leaves the code shown now unused, for a person to sign in with at once.
    pub fn previous_code(&self) -> String {
        let now = writeback_cloud::service::totp::step_at(writeback_proto::time::UnixMillis::now());
        let step = now.saturating_sub(1);
        *self
            .last_step
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = step;
        writeback_cloud::service::totp::code_at_step(&self.key, step)
    }

    /// Waits until a fresh code is within the cloud's window, then gives it.
    pub async fn fresh_code(&self) -> String {
        loop {
            let now =
                writeback_cloud::service::totp::step_at(writeback_proto::time::UnixMillis::now());
            let ready = {
                let last = self
                    .last_step
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *last < now + 1
            };
            if ready {
                return self.code();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Signs in an administrator who has no authenticator yet, enrolling one over the API as
/// `writeback login` does: the session, and the authenticator (its key remembered for the log
/// scan).
pub async fn enrol_administrator(
    client: &ApiClient,
    email: &str,
    password: &str,
) -> Result<(writeback_proto::api::SignInResponse, Authenticator)> {
    let enrolment = client
        .begin_enrolment(email, SecretString::from(password.to_owned()))
        .await?;
    let key_text = secrecy::ExposeSecret::expose_secret(&enrolment.key).to_owned();
    logs::remember_secret(&key_text);
    let authenticator = Authenticator::new(
        writeback_cloud::service::totp::decode_base32(&key_text).context("the key is base32")?,
    );
    let session = client
        .answer_challenge(&enrolment.challenge, &authenticator.previous_code())
        .await?;
    logs::remember_secret(secrecy::ExposeSecret::expose_secret(&session.token));
    Ok((session, authenticator))
}

impl Stack {
    pub async fn start() -> Result<Stack> {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Result<Stack> {
        logs::init();
        let dc = tokio::task::spawn_blocking(DomainController::shared).await??;
        let number = NEXT_STACK.fetch_add(1, Ordering::Relaxed);
        if number == 0 {
            remove_stacks_of_dead_processes();
        }
        let work =
            std::env::temp_dir().join(format!("writeback-stack-{}-{number}", std::process::id()));
        if work.exists() {
            std::fs::remove_dir_all(&work)?;
        }
        std::fs::create_dir_all(&work)?;

        let mut cloud_config = CloudConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: work.join("cloud"),
            request_timeout_seconds: 10,
            smtp: writeback_cloud::config::SmtpConfig {
                host: options.smtp_port.map(|_| "127.0.0.1".to_owned()),
                port: options.smtp_port.unwrap_or(25),
                security: writeback_cloud::config::SmtpSecurity::None,
                from: "Writeback <writeback@example.test>".into(),
                ..writeback_cloud::config::SmtpConfig::default()
            },
            sms: options.sms.clone(),
            database_url: options.database_url.clone(),
            node_name: "node-0".into(),
            ..CloudConfig::default()
        };
        if let Some(configure) = options.configure_cloud {
            configure(&mut cloud_config);
        }
        let cloud = writeback_cloud::start(cloud_config.clone()).await?;
        let address = cloud.address;
        let fingerprint = cloud.fingerprint;
        let store = cloud.state.store.clone();
        let admin_password = logs::strong_password();
        writeback_cloud::create_administrator(
            &store,
            ADMIN_EMAIL,
            &SecretString::from(admin_password.clone()),
        )
        .await?;
        let directory: DirectoryName = DIRECTORY.parse()?;
        let url = format!("https://{address}");
        let log_file =
            logs::logs_directory()?.join(format!("agent-{}-{number}.log", std::process::id()));
        let agent_config = write_agent_config(&dc, &work, &log_file, &options)?;
        let agent_id = register_agent(
            &store,
            &directory,
            &url,
            &fingerprint,
            &agent_config,
            &format!("test-agent-{number}"),
        )
        .await?;

        let client = ApiClient::new(&url, &Trust::Pinned(fingerprint))?;
        let (session, admin_authenticator) =
            enrol_administrator(&client, ADMIN_EMAIL, &admin_password).await?;
        let session_token = session.token.clone();
        let client = ApiClient::new(&url, &Trust::Pinned(fingerprint))?.with_token(session.token);

        let mut stack = Stack {
            dc,
            cloud: Some(cloud),
            address,
            fingerprint,
            directory,
            admin_password,
            admin_authenticator,
            agent_id,
            client,
            session_token,
            work,
            agent_config,
            agent_log: log_file,
            agent: None,
            second_agent: None,
            cloud_config,
            options,
        };
        stack.start_agent().await?;
        Ok(stack)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.address)
    }

    /// A new API client of the node at `url` (with the certificate `fingerprint`), signed in as
    /// the stack's administrator: its own connection, for requests in parallel.
    pub fn client_for(&self, url: &str, fingerprint: Fingerprint) -> Result<ApiClient> {
        Ok(
            ApiClient::new(url, &Trust::Pinned(fingerprint))?
                .with_token(self.session_token.clone()),
        )
    }

    /// Starts another cloud node on the stack's PostgreSQL database, named `name`: it presents
    /// the same certificate and holds the same secrets key, as the nodes of a cluster behind one
    /// name do. Returns it with an API client signed in as the stack's administrator.
    pub async fn start_node(&self, name: &str) -> Result<(RunningCloud, ApiClient)> {
        ensure!(
            self.options.database_url.is_some(),
            "nodes share a PostgreSQL database; start the stack with one"
        );
        let first = &self.cloud_config;
        let certificate = writeback_cloud::certificate_paths(first)?;
        let config = CloudConfig {
            listen: "127.0.0.1:0".into(),
            data_dir: self.work.join(format!("cloud-{name}")),
            tls_certificate: Some(certificate.0),
            tls_private_key: Some(certificate.1),
            secrets_key_file: Some(first.secrets_key_path()),
            node_name: name.into(),
            ..first.clone()
        };
        let node = writeback_cloud::start(config).await?;
        let client = ApiClient::new(
            &format!("https://{}", node.address),
            &Trust::Pinned(node.fingerprint),
        )?
        .with_token(self.session_token.clone());
        Ok((node, client))
    }

    /// Everything the agent has logged so far, every run of it.
    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(&self.agent_log).unwrap_or_default()
    }

    pub fn agent_config_path(&self) -> &Path {
        &self.agent_config
    }

    /// Starts the agent process and waits until the cloud sees it connected.
    pub async fn start_agent(&mut self) -> Result<()> {
        self.agent = Some(spawn_agent(&self.agent_config, None)?);
        self.wait_for_agent(true).await
    }

    /// Starts the agent process with the kill points `FAILPOINTS` names (for example
    /// `before-write=return`): the agent exits there, as in a crash. Only an agent built with the
    /// `kill-points` feature has them, as `cargo xtask test` builds it.
    pub async fn start_agent_with_kill_points(&mut self, kill_points: &str) -> Result<()> {
        self.agent = Some(spawn_agent(&self.agent_config, Some(kill_points))?);
        self.wait_for_agent(true).await
    }

    /// Waits for the agent process to end by itself and says how it ended.
    pub async fn agent_exit(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.agent.take().context("the agent is not running")?;
        match tokio::time::timeout(within, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.agent = Some(child);
                bail!("the agent was still running after {within:?}")
            }
        }
    }

    /// Registers a second agent for the directory and starts it; it serves the same OUs.
    pub async fn start_second_agent(&mut self) -> Result<()> {
        let work = self.work.join("second-agent");
        std::fs::create_dir_all(&work)?;
        let log = logs::logs_directory()?.join(format!(
            "agent-{}-{}-second.log",
            std::process::id(),
            self.work
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
        ));
        let config = write_agent_config(&self.dc, &work, &log, &self.options)?;
        let store = &self
            .cloud
            .as_ref()
            .context("the cloud is stopped")?
            .state
            .store;
        let agent_id = register_agent(
            store,
            &self.directory,
            &self.url(),
            &self.fingerprint,
            &config,
            "second-agent",
        )
        .await?;
        let process = spawn_agent(&config, None)?;
        self.second_agent = Some(SecondAgent {
            agent_id,
            _process: process,
        });
        self.wait_for(&agent_id, true).await
    }

    /// A new user in the staff OU with a strong password: `(name, password)`.
    pub async fn user_with_password(&self, prefix: &str) -> Result<(String, String)> {
        let name = logs::unique_user(prefix);
        let password = logs::strong_password();
        self.dc
            .admin()
            .await?
            .create_user(&crate::NewUser::new(&name, &password))
            .await?;
        Ok((name, password))
    }

    /// Waits until the cloud holds `name` as `check` expects, from the agent's sync.
    pub async fn wait_until_synced(
        &self,
        name: &str,
        check: impl Fn(&writeback_proto::sync::SyncedUser) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(detail) = self.client.user(&self.directory, name).await
                && check(&detail.user)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} was not synced as expected within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the agent reports a lockout threshold of `threshold`, the strictest it can
    /// read (the domain's or a fine-grained policy's).
    pub async fn wait_for_lockout_threshold(&self, threshold: u32) -> Result<()> {
        let state = &self.cloud.as_ref().context("the cloud is running")?.state;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !state.relay.live_agents().iter().any(|agent| {
            agent
                .status
                .as_ref()
                .and_then(|status| status.lockout)
                .is_some_and(|lockout| lockout.threshold == threshold)
        }) {
            if Instant::now() > deadline {
                bail!("the agent did not report a lockout threshold of {threshold} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Waits until the agent has reported the domain's password policy, which the portal's
    /// checklist shows.
    pub async fn wait_for_password_policy(&self) -> Result<()> {
        let state = &self.cloud.as_ref().context("the cloud is running")?.state;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !state.relay.live_agents().iter().any(|agent| {
            agent
                .status
                .as_ref()
                .is_some_and(|status| status.password_policy.is_some())
        }) {
            if Instant::now() > deadline {
                bail!("the agent did not report the password policy within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Locks the staff user `name` out for real: a password settings object with a lockout
    /// threshold of 3 applies to them, then three wrong passwords. Checked by the directory's own
    /// answer to the right password (775, locked).
    pub async fn lock_out(&self, name: &str, password: &str) -> Result<()> {
        let settings = crate::NewPasswordSettings {
            name: logs::unique_user("pso-lock-"),
            min_length: 7,
            complexity: true,
            history_length: 0,
            min_age_days: 0,
            lockout_threshold: 3,
            max_age_days: 42,
        };
        let dn = format!("CN={name},{STAFF_OU}");
        self.dc
            .admin()
            .await?
            .create_password_settings(&settings, &dn)
            .await?;
        for attempt in 0..3 {
            let wrong = logs::password_like(&format!("Wrong-{{unique}}-{attempt}!"));
            ensure!(
                self.dc.bind_as(name, &wrong).await? == Err("52e".into()),
                "a wrong password was not refused as such"
            );
        }
        ensure!(
            self.dc.bind_as(name, password).await? == Err("775".into()),
            "the account is not locked out after three wrong passwords"
        );
        Ok(())
    }

    /// Kills the agent process outright (SIGKILL), the way a crash or power loss would.
    pub async fn kill_agent(&mut self) -> Result<()> {
        if let Some(mut child) = self.agent.take() {
            child.kill().await?;
        }
        self.wait_for_agent(false).await
    }

    /// The agent process's id, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().and_then(tokio::process::Child::id)
    }

    pub fn agent_connected(&self) -> bool {
        self.cloud
            .as_ref()
            .is_some_and(|cloud| cloud.state.relay.is_connected(&self.agent_id))
    }

    pub async fn wait_for_agent(&self, connected: bool) -> Result<()> {
        self.wait_for(&self.agent_id, connected).await
    }

    /// Waits until the cloud sees `agent_id` connected (or not).
    pub async fn wait_for(&self, agent_id: &AgentId, connected: bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let is_connected = || {
            self.cloud
                .as_ref()
                .is_some_and(|cloud| cloud.state.relay.is_connected(agent_id))
        };
        while is_connected() != connected {
            if Instant::now() > deadline {
                bail!(
                    "the agent did not {} within 30 s",
                    if connected { "connect" } else { "disconnect" }
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops the cloud and starts it again on the same address with the same data.
    pub async fn restart_cloud(&mut self) -> Result<()> {
        self.restart_cloud_with(|_| {}).await
    }

    /// Restarts the cloud with its configuration changed by `change`, kept for later restarts.
    pub async fn restart_cloud_with(
        &mut self,
        change: impl FnOnce(&mut CloudConfig),
    ) -> Result<()> {
        if let Some(cloud) = self.cloud.take() {
            cloud.stop().await;
        }
        change(&mut self.cloud_config);
        let config = CloudConfig {
            listen: self.address.to_string(),
            ..self.cloud_config.clone()
        };
        self.cloud = Some(writeback_cloud::start(config).await?);
        Ok(())
    }

    pub async fn stop_cloud(&mut self) {
        if let Some(cloud) = self.cloud.take() {
            cloud.stop().await;
        }
    }

    pub async fn reset(
        &self,
        user: &str,
        password: &str,
        must_change: bool,
        unlock: bool,
    ) -> Result<OperationResponse> {
        let request = ResetPasswordRequest {
            new_password: SecretString::from(password.to_owned()),
            must_change,
            unlock,
        };
        let response = self
            .client
            .reset_password(&self.directory, user, &request, None)
            .await?;
        self.assert_audited(&response, "reset_password", user)
            .await?;
        Ok(response)
    }

    /// Checks that the audit log holds `response`'s operation: who (this stack's administrator),
    /// whom, from where (loopback), and the same result code. Every writeback the tests make
    /// through [`Stack::reset`] is checked this way.
    pub async fn assert_audited(
        &self,
        response: &OperationResponse,
        operation: &str,
        target: &str,
    ) -> Result<()> {
        let query = writeback_cli::AuditQuery {
            request_id: Some(response.request_id.to_string()),
            ..writeback_cli::AuditQuery::default()
        };
        let page = self.client.audit(&query).await?;
        let found = page.entries.iter().any(|entry| {
            entry.action == operation
                && entry.actor == ADMIN_EMAIL
                // A synced user is also named by anchor: "jdoe (3f2c…)".
                && entry.target.as_deref().is_some_and(|named| {
                    named == target || named.starts_with(&format!("{target} ("))
                })
                && entry.directory.as_deref() == Some(self.directory.as_str())
                && entry.origin.as_deref() == Some("127.0.0.1")
                && entry.result_code == response.result.code()
        });
        ensure!(
            found,
            "no audit entry for {operation} of {target} with result {}: {:?}",
            response.result.code(),
            page.entries
        );
        Ok(())
    }

    /// Runs the `writeback` CLI with this stack's own session file.
    pub async fn cli(&self, arguments: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new(logs::binary("writeback")?)
            .arg("--session-file")
            .arg(self.work.join("cli-session.json"))
            .args(arguments)
            .output()
            .await?)
    }

    /// Signs the CLI in as the administrator, the password read from a private file.
    pub async fn cli_login(&self) -> Result<()> {
        let password_file = self.work.join("cli-admin-password");
        write_private(&password_file, &self.admin_password)?;
        let url = self.url();
        let pin = self.fingerprint.to_string();
        let password_file = password_file.display().to_string();
        let code = self.admin_authenticator.fresh_code().await;
        let login = self
            .cli(&[
                "login",
                "--url",
                &url,
                "--pin",
                &pin,
                "--email",
                ADMIN_EMAIL,
                "--password-file",
                &password_file,
                "--totp-code",
                &code,
            ])
            .await?;
        ensure!(
            login.status.success(),
            "writeback login failed: {}",
            String::from_utf8_lossy(&login.stderr)
        );
        Ok(())
    }

    /// Resets `sam_account_name` (whose password is `old_password`) through the whole product to
    /// a new password, and proves it landed: the new password binds and the old one no longer does.
    pub async fn reset_and_prove(&self, sam_account_name: &str, old_password: &str) -> Result<()> {
        let new_password = logs::strong_password();
        let response = self
            .reset(sam_account_name, &new_password, false, false)
            .await?;
        ensure!(
            response.result == writeback_proto::result::ResultCode::Success,
            "the reset failed: {}",
            response.message
        );
        if let Err(code) = self.dc.bind_as(sam_account_name, &new_password).await? {
            bail!("the new password does not bind (data {code})");
        }
        ensure!(
            self.dc
                .bind_as(sam_account_name, old_password)
                .await?
                .is_err(),
            "the old password still binds"
        );
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(child) = self.agent.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Removes the work directories that test processes killed outright could not remove.
fn remove_stacks_of_dead_processes() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("writeback-stack-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Registers the agent configured in `config` with the cloud at `url`, with a fresh token, and
/// returns its id.
async fn register_agent(
    store: &writeback_store::Store,
    directory: &DirectoryName,
    url: &str,
    fingerprint: &Fingerprint,
    config: &Path,
    name: &str,
) -> Result<AgentId> {
    let (token, _) =
        writeback_cloud::create_registration_token(store, directory, Duration::from_secs(600))
            .await?;
    let token_file = config.with_file_name("registration-token");
    write_private(&token_file, secrecy::ExposeSecret::expose_secret(&token))?;
    let known: Vec<AgentId> = store
        .agents()
        .await?
        .iter()
        .map(|agent| agent.agent_id)
        .collect();
    let registered = Command::new(logs::binary("writeback-agent")?)
        .arg("--config")
        .arg(config)
        .args([
            "register",
            "--cloud",
            url,
            "--pin",
            &fingerprint.to_string(),
            "--name",
            name,
        ])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .await?;
    ensure!(
        registered.status.success(),
        "writeback-agent register failed: {}{}",
        String::from_utf8_lossy(&registered.stdout),
        String::from_utf8_lossy(&registered.stderr)
    );
    store
        .agents()
        .await?
        .iter()
        .map(|agent| agent.agent_id)
        .find(|agent_id| !known.contains(agent_id))
        .context("the registered agent is not in the store")
}

/// Runs `writeback-agent --config <config> run`, killed when the handle drops, with `FAILPOINTS`
/// set to `kill_points` if given. If the test process is killed outright, `kill_on_drop` never
/// runs; the kernel's parent-death signal stops the agent instead of leaving it dialling a dead
/// cloud.
pub fn spawn_agent(config: &Path, kill_points: Option<&str>) -> Result<Child> {
    let mut command = Command::new("setpriv");
    if let Some(kill_points) = kill_points {
        command.env("FAILPOINTS", kill_points);
    }
    command
        .args(["--pdeathsig", "KILL", "--"])
        .arg(logs::binary("writeback-agent")?)
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting writeback-agent")
}

pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    writeback_config::write_private_file(path, contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Writes `work/agent.toml` (and the service account's password file beside it) for an agent that
/// serves `options.allowed_ous` of `dc` and logs to `log_file`.
pub fn write_agent_config(
    dc: &DomainController,
    work: &Path,
    log_file: &Path,
    options: &StackOptions,
) -> Result<PathBuf> {
    let password_file = work.join("bind-password");
    write_private(&password_file, &dc.service_account_password)?;
    // Every DC's CA in one file, as an administrator whose DCs have certificates from several
    // issuers would configure it.
    let ca_file = if options.more_domain_controllers.is_empty() {
        dc.ca_file.clone()
    } else {
        let mut bundle = std::fs::read_to_string(&dc.ca_file)?;
        for other in &options.more_domain_controllers {
            bundle.push_str(&std::fs::read_to_string(&other.ca_file)?);
        }
        let path = work.join("dc-authorities.pem");
        std::fs::write(&path, bundle)?;
        path
    };
    let more_urls: Vec<String> = match options.name_server {
        Some(_) => Vec::new(),
        None => options
            .more_domain_controllers
            .iter()
            .map(|other| toml_string(&other.ldaps_url()))
            .collect(),
    };
    let discovery = match options.name_server {
        Some(server) => format!(
            "discover_domain = {}\nname_server = {}\n",
            toml_string(crate::domain_controller::DNS_DOMAIN),
            toml_string(&server.to_string())
        ),
        None => String::new(),
    };
    let config = format!(
        r#"data_dir = {data_dir}
banned_passwords = ["contoso"]
reconnect_initial_delay_ms = 100
reconnect_max_delay_seconds = 1

[directory]
url = {url}
urls = [{more_urls}]
{discovery}ca_file = {ca_file}
bind_name = {bind_name}
bind_password_file = {password_file}
base_dn = {base_dn}
allowed_ous = [{allowed_ous}]
check_interval_seconds = 2

[sync]
{poll_interval}change_notification = {change_notification}

[log]
format = "json"
level = "info,writeback_agent=debug,writeback_directory=debug"
file = {log_file}
"#,
        data_dir = toml_string(&work.join("agent").display().to_string()),
        url = toml_string(&dc.ldaps_url()),
        more_urls = more_urls.join(", "),
        ca_file = toml_string(&ca_file.display().to_string()),
        bind_name = toml_string(&dc.user_principal_name(&options.service_account)),
        password_file = toml_string(&password_file.display().to_string()),
        base_dn = toml_string(BASE_DN),
        allowed_ous = options
            .allowed_ous
            .iter()
            .map(|ou| toml_string(ou))
            .collect::<Vec<_>>()
            .join(", "),
        poll_interval = options
            .sync_poll_interval_ms
            .map(|interval| format!("poll_interval_ms = {interval}\n"))
            .unwrap_or_default(),
        change_notification = options.sync_change_notification,
        log_file = toml_string(&log_file.display().to_string()),
    );
    let path = work.join("agent.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

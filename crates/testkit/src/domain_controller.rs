//! A throwaway Samba AD domain controller (DESIGN.md §7), one per test binary.
//!
//! The DC runs under a small shell watchdog whose standard input is a pipe held by the test process.
//! When the test process ends for any reason (success, panic, abort, kill), the pipe closes, the
//! watchdog stops Samba and removes the DC's directory. Each DC binds its own loopback address, so
//! test binaries and the demo never collide.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};

pub const REALM: &str = "CORP.EXAMPLE.TEST";
pub const DNS_DOMAIN: &str = "corp.example.test";
pub const BASE_DN: &str = "DC=corp,DC=example,DC=test";
/// Users the agent may manage, with the four delegated rights granted on it.
pub const STAFF_OU: &str = "OU=Staff,DC=corp,DC=example,DC=test";
/// In the agent's allowed OUs, but the service account holds no rights here: resets are refused by
/// the DC, the way they are when an administrator forgot to delegate an OU.
pub const RESTRICTED_OU: &str = "OU=Restricted,DC=corp,DC=example,DC=test";
/// Outside the agent's allowed OUs.
pub const ELSEWHERE_OU: &str = "OU=Elsewhere,DC=corp,DC=example,DC=test";
pub const SERVICE_ACCOUNT: &str = "svc-writeback";

const GRANT_DELETED_OBJECTS_SCRIPT: &str = include_str!("../scripts/grant_deleted_objects.py");
const BULK_USERS_SCRIPT: &str = include_str!("../scripts/bulk_users.py");

const PASSWORD_SETTINGS_CONTAINER: &str =
    "CN=Password Settings Container,CN=System,DC=corp,DC=example,DC=test";

/// The four writeback grants of REFERENCE.md, for the service account's SID.
fn delegated_rights_on_users(sid: &str) -> String {
    [
        "(OA;CIIO;CR;00299570-246d-11d0-a768-00aa006e0529;bf967aba-0de6-11d0-a285-00aa003049e2;SID)",
        "(OA;CIIO;WP;28630ebf-41d5-11d1-a9c1-0000f80367c1;bf967aba-0de6-11d0-a285-00aa003049e2;SID)",
        "(OA;CIIO;WP;bf967a0a-0de6-11d0-a285-00aa003049e2;bf967aba-0de6-11d0-a285-00aa003049e2;SID)",
    ]
    .concat()
    .replace("SID", sid)
}

/// Replicating Directory Changes (DS-Replication-Get-Changes), which lets the account use DirSync.
fn replicating_directory_changes_right(sid: &str) -> String {
    format!("(OA;;CR;1131f6aa-9c07-11d1-f79f-00c04fc2dcd2;;{sid})")
}

fn unexpire_password_right(sid: &str) -> String {
    format!("(OA;CI;CR;ccc2dc7d-a6ad-4a7a-8846-c04e3cc53501;;{sid})")
}

#[derive(Debug)]
pub struct DomainController {
    pub address: Ipv4Addr,
    pub directory: PathBuf,
    pub ca_file: PathBuf,
    pub admin_password: String,
    pub service_account_password: String,
    /// Holds the watchdog's standard input open; closing it stops the DC.
    watchdog: Mutex<Child>,
}

static SHARED: OnceLock<Result<Arc<DomainController>, String>> = OnceLock::new();

impl DomainController {
    /// The DC of this test binary, provisioned on first use.
    pub fn shared() -> Result<Arc<DomainController>> {
        Self::shared_started_by(DomainController::start)
    }

    /// The test binary's DC, started joinable ([`Self::start_joinable`]) if this is the first
    /// call: a binary that joins a second DC calls it before anything else.
    pub fn shared_joinable() -> Result<Arc<DomainController>> {
        Self::shared_started_by(DomainController::start_joinable)
    }

    fn shared_started_by(start: fn() -> Result<DomainController>) -> Result<Arc<DomainController>> {
        crate::logs::init();
        SHARED
            .get_or_init(|| {
                std::thread::spawn(start)
                    .join()
                    .map_err(|_| "provisioning thread panicked".to_owned())
                    .and_then(|result| result.map(Arc::new).map_err(|error| format!("{error:#}")))
            })
            .clone()
            .map_err(|error| anyhow!("the test domain controller did not start: {error}"))
    }

    /// Provisions and starts a new DC, blocking until it answers LDAPS.
    pub fn start() -> Result<DomainController> {
        Self::start_serving(ONE_DC_SERVICES)
    }

    /// A DC that a second one can join ([`Self::join_second`]): it also answers CLDAP and RPC,
    /// which `samba-tool domain join` uses to find it and to replicate the directory.
    pub fn start_joinable() -> Result<DomainController> {
        Self::start_serving(JOINABLE_DC_SERVICES)
    }

    fn start_serving(services: &str) -> Result<DomainController> {
        let started = Instant::now();
        let address = free_loopback_address()?;
        let directory = std::env::temp_dir().join(format!(
            "writeback-dc-{}-{}",
            std::process::id(),
            address.octets()[3]
        ));
        if directory.exists() {
            std::fs::remove_dir_all(&directory)
                .with_context(|| format!("removing stale {}", directory.display()))?;
        }
        std::fs::create_dir_all(directory.join("run"))?;
        let tls_directory = directory.join("tls");
        std::fs::create_dir_all(&tls_directory)?;
        let ca_file = write_certificates(&tls_directory, address)?;

        let admin_password = "Adm1n!Passw0rd-Test".to_owned();
        let service_account_password = "Svc!Passw0rd-Test-1".to_owned();
        provision(
            &directory,
            &tls_directory,
            address,
            &admin_password,
            services,
        )?;
        let watchdog = start_watchdog(&directory)?;
        let controller = DomainController {
            address,
            directory,
            ca_file,
            admin_password,
            service_account_password,
            watchdog: Mutex::new(watchdog),
        };
        controller.wait_until_ready()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(controller.populate())?;
        tracing::info!(address = %controller.address, elapsed_ms = started.elapsed().as_millis() as u64, "test domain controller ready");
        Ok(controller)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}:636", self.address)
    }

    /// The directory crate's view of this DC, bound as the four-rights service account, as the
    /// agent sees it: for tests and benchmarks that read what the directory itself holds.
    pub fn service_directory(&self) -> Result<writeback_directory::ActiveDirectory> {
        Ok(writeback_directory::ActiveDirectory::new(
            writeback_directory::DirectorySettings {
                urls: vec![self.ldaps_url()],
                trust: writeback_tls::Trust::CaFile(self.ca_file.clone()),
                bind_name: self.user_principal_name(SERVICE_ACCOUNT),
                bind_password: secrecy::SecretString::from(self.service_account_password.clone()),
                search_base: BASE_DN.into(),
                connect_timeout: Duration::from_secs(10),
                operation_timeout: Duration::from_secs(10),
            },
        )?)
    }

    pub fn user_principal_name(&self, sam_account_name: &str) -> String {
        format!("{sam_account_name}@{DNS_DOMAIN}")
    }

    fn smb_conf(&self) -> PathBuf {
        self.directory.join("etc/smb.conf")
    }

    fn wait_until_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        loop {
            if let Ok(mut child) = self.watchdog.lock()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "samba exited during start-up ({status}); see {}",
                    self.directory.join("samba.out").display()
                );
            }
            let listening = TcpStream::connect_timeout(
                &SocketAddr::from((self.address, 636)),
                Duration::from_millis(200),
            )
            .is_ok();
            if listening && runtime.block_on(self.admin()).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("samba did not answer LDAPS on {} within 90 s", self.address);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A fresh LDAPS connection bound as the domain Administrator, for setting up test data.
    pub async fn admin(&self) -> Result<AdminSession> {
        let ldap = self
            .bind_raw("Administrator", &self.admin_password)
            .await?
            .map_err(|code| anyhow!("administrator bind refused: data {code}"))?;
        Ok(AdminSession { ldap })
    }

    /// Binds as `sam_account_name` with `password`. `Ok(Err(code))` is a refused bind with AD's
    /// `data` code (`52e` bad password, `773` must change, `775` locked out, ...).
    pub async fn bind_as(
        &self,
        sam_account_name: &str,
        password: &str,
    ) -> Result<std::result::Result<(), String>> {
        Ok(self.bind_raw(sam_account_name, password).await?.map(|_| ()))
    }

    /// What a user cares about after a reset or change: the new password binds, and the old one
    /// is refused as a wrong password (AD's 52e).
    pub async fn assert_password_replaced(
        &self,
        sam_account_name: &str,
        new_password: &str,
        old_password: &str,
    ) -> Result<()> {
        let new = self.bind_as(sam_account_name, new_password).await?;
        ensure!(
            new.is_ok(),
            "{sam_account_name} cannot bind with the new password: {new:?}"
        );
        let old = self.bind_as(sam_account_name, old_password).await?;
        ensure!(
            old == Err("52e".into()),
            "{sam_account_name}'s old password was not refused as wrong: {old:?}"
        );
        Ok(())
    }

    async fn bind_raw(
        &self,
        sam_account_name: &str,
        password: &str,
    ) -> Result<std::result::Result<Ldap, String>> {
        let tls =
            writeback_tls::client_config(&writeback_tls::Trust::CaFile(self.ca_file.clone()))?;
        let settings = LdapConnSettings::new()
            .set_config(Arc::new(tls))
            .set_conn_timeout(Duration::from_secs(10));
        let (driver, mut ldap) = LdapConnAsync::with_settings(settings, &self.ldaps_url()).await?;
        tokio::spawn(async move { driver.drive().await });
        let result = ldap
            .simple_bind(&self.user_principal_name(sam_account_name), password)
            .await?;
        if result.rc == 0 {
            return Ok(Ok(ldap));
        }
        let code = result
            .text
            .split("data ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .unwrap_or("unknown")
            .to_owned();
        let _ = ldap.unbind().await;
        Ok(Err(code))
    }

    /// Domain policy, OUs, the delegated service account.
    async fn populate(&self) -> Result<()> {
        let mut admin = self.admin().await?;
        // Changes right after a reset must be possible; tests that need a minimum age use a PSO.
        admin.replace(BASE_DN, "minPwdAge", "0").await?;
        for ou in [STAFF_OU, RESTRICTED_OU, ELSEWHERE_OU] {
            admin.add_organizational_unit(ou).await?;
        }
        let service_dn = admin
            .create_user(
                &NewUser::new(SERVICE_ACCOUNT, &self.service_account_password)
                    .in_container(&format!("CN=Users,{BASE_DN}")),
            )
            .await?;
        let sid = admin.object_sid(&service_dn).await?;
        self.set_acl(STAFF_OU, &delegated_rights_on_users(&sid))?;
        self.set_acl(BASE_DN, &unexpire_password_right(&sid))?;
        self.run_samba_python(GRANT_DELETED_OBJECTS_SCRIPT, &[&sid])
            .context("letting the service account read deleted objects")?;
        Ok(())
    }

    /// Grants the service account Replicating Directory Changes on the domain, so that its agent
    /// reads deltas with DirSync.
    pub async fn grant_replicating_directory_changes(&self) -> Result<()> {
        let sid = self.service_account_sid().await?;
        self.set_acl(BASE_DN, &replicating_directory_changes_right(&sid))
    }

    /// Lets the service account read fine-grained password policies (Read on the Password
    /// Settings Container, inherited), as the README suggests: the agent then reports their
    /// lockout thresholds too.
    pub async fn grant_read_password_settings(&self) -> Result<()> {
        let sid = self.service_account_sid().await?;
        self.set_acl(
            PASSWORD_SETTINGS_CONTAINER,
            &format!("(A;CI;RPLCLORC;;;{sid})"),
        )
    }

    /// How many wrong passwords in a row the DC counts against the staff user `name` now.
    pub async fn bad_password_count(&self, name: &str) -> Result<u32> {
        let dn = format!("CN={name},{STAFF_OU}");
        let count = self.admin().await?.read(&dn, "badPwdCount").await?;
        Ok(count.and_then(|count| count.parse().ok()).unwrap_or(0))
    }

    /// Delegates the three rights on users of `ou` to the service account, as on Staff (it holds
    /// Unexpire Password on the domain root already).
    pub async fn delegate_writeback_rights(&self, ou: &str) -> Result<()> {
        let sid = self.service_account_sid().await?;
        self.set_acl(ou, &delegated_rights_on_users(&sid))
    }

    /// A new account in CN=Users with the service account's password and exactly the four
    /// delegated rights of REFERENCE.md on Staff (and Unexpire Password): unlike the shared
    /// service account it may not read `CN=Deleted Objects`, so deletions are invisible to it.
    pub async fn create_four_rights_service_account(&self, name: &str) -> Result<()> {
        let sid = self.create_service_account(name).await?;
        self.set_acl(STAFF_OU, &delegated_rights_on_users(&sid))?;
        self.set_acl(BASE_DN, &unexpire_password_right(&sid))
    }

    /// A new account in CN=Users with the service account's password and no rights at all;
    /// returns its SID.
    pub async fn create_service_account(&self, name: &str) -> Result<String> {
        let mut admin = self.admin().await?;
        let dn = admin
            .create_user(
                &NewUser::new(name, &self.service_account_password)
                    .in_container(&format!("CN=Users,{BASE_DN}")),
            )
            .await?;
        admin.object_sid(&dn).await
    }

    async fn service_account_sid(&self) -> Result<String> {
        self.admin()
            .await?
            .object_sid(&format!("CN={SERVICE_ACCOUNT},CN=Users,{BASE_DN}"))
            .await
    }

    /// A second DC of this domain on its own loopback address, joined with `samba-tool domain
    /// join … DC`: it holds the directory as it is now (what changes later is not replicated, as
    /// the test DCs have no DNS to find each other by). Its certificate comes from a CA of its own.
    /// Needs a DC started with [`Self::start_joinable`].
    pub fn join_second(&self) -> Result<DomainController> {
        let started = Instant::now();
        let address = free_loopback_address()?;
        let directory = std::env::temp_dir().join(format!(
            "writeback-dc-{}-{}",
            std::process::id(),
            address.octets()[3]
        ));
        if directory.exists() {
            std::fs::remove_dir_all(&directory)
                .with_context(|| format!("removing stale {}", directory.display()))?;
        }
        std::fs::create_dir_all(directory.join("run"))?;
        let tls_directory = directory.join("tls");
        std::fs::create_dir_all(&tls_directory)?;
        let ca_file = write_certificates(&tls_directory, address)?;
        let mut command = Command::new("samba-tool");
        command
            .args(["domain", "join", DNS_DOMAIN, "DC", "--dns-backend=NONE"])
            .arg(format!("--server={}", self.address))
            .arg(format!(
                "--username=CORP\\Administrator%{}",
                self.admin_password
            ))
            .arg("--use-kerberos=off")
            .arg(format!("--targetdir={}", directory.display()));
        let options = dc_options(&directory, &tls_directory, address, ONE_DC_SERVICES)
            .into_iter()
            .chain([format!("realm={REALM}"), "workgroup=CORP".to_owned()]);
        for option in options {
            command.arg(format!("--option={option}"));
        }
        run(&mut command).context("samba-tool domain join")?;
        refuse_old_passwords(&directory)?;
        let watchdog = start_watchdog(&directory)?;
        let controller = DomainController {
            address,
            directory,
            ca_file,
            admin_password: self.admin_password.clone(),
            service_account_password: self.service_account_password.clone(),
            watchdog: Mutex::new(watchdog),
        };
        controller.wait_until_ready()?;
        tracing::info!(address = %controller.address, elapsed_ms = started.elapsed().as_millis() as u64, "second domain controller joined");
        Ok(controller)
    }

    /// Stops Samba for good, every process of it at once, as a DC that failed.
    pub fn stop(&self) -> Result<()> {
        self.kill_samba()
    }

    fn kill_samba(&self) -> Result<()> {
        let samba_group = std::fs::read_to_string(self.directory.join("run/samba.pid"))
            .context("reading samba's pid file")?
            .trim()
            .to_owned();
        run(Command::new("kill").args(["-KILL", "--", &format!("-{samba_group}")]))
            .context("killing samba")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Command::new("kill")
            .args(["-0", "--", &format!("-{samba_group}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
        {
            if Instant::now() > deadline {
                bail!("samba's processes did not exit after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills Samba outright, every process of it at once, the way a crash or a power cut stops a
    /// DC, then starts it again on the same database and blocks until it answers LDAPS.
    pub fn crash_and_restart(&self) -> Result<()> {
        self.kill_samba()?;
        // Started detached, in its own process group as at first, so the watchdog stops it the same way.
        run(Command::new("sh")
            .arg("-c")
            .arg(r#"setsid samba -s "$1/etc/smb.conf" -F --debug-stdout -d1 >>"$1/samba.out" 2>&1 &"#)
            .arg("restart")
            .arg(&self.directory))
        .context("starting samba again")?;
        self.wait_until_ready()
    }

    /// Adds `count` users named `prefix00000`… to `container` straight into the DC's database.
    pub fn bulk_load_users(&self, container: &str, prefix: &str, count: usize) -> Result<()> {
        self.run_samba_python(
            BULK_USERS_SCRIPT,
            &[container, prefix, &count.to_string(), DNS_DOMAIN],
        )
        .with_context(|| format!("bulk-loading {count} users into {container}"))
    }

    /// Runs one of our Samba Python scripts against this DC's database, as root on its host.
    /// Debian's own interpreter: it is the one with Samba's bindings.
    fn run_samba_python(&self, script: &str, arguments: &[&str]) -> Result<()> {
        run(Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(self.smb_conf())
            .args(arguments))
    }

    /// Adds the ACEs of `sddl` to `object_dn`, as `samba-tool dsacl set` does.
    pub fn set_acl(&self, object_dn: &str, sddl: &str) -> Result<()> {
        run(Command::new("samba-tool")
            .arg("dsacl")
            .arg("set")
            .arg("-s")
            .arg(self.smb_conf())
            .arg(format!("--objectdn={object_dn}"))
            .arg(format!("--sddl={sddl}")))
        .with_context(|| format!("granting rights on {object_dn}"))
    }
}

impl Drop for DomainController {
    fn drop(&mut self) {
        if let Ok(mut watchdog) = self.watchdog.lock() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Finds a loopback address whose LDAPS port is free, starting from one derived from the process
/// id so that concurrent test binaries rarely probe the same addresses.
fn free_loopback_address() -> Result<Ipv4Addr> {
    let start = std::process::id() % 200;
    for offset in 0..200 {
        let last_octet = 20 + ((start + offset) % 200) as u8;
        let address = Ipv4Addr::new(127, 0, 0, last_octet);
        let free = [389u16, 636]
            .iter()
            .all(|port| TcpListener::bind((address, *port)).is_ok());
        if free {
            return Ok(address);
        }
    }
    bail!("no free loopback address for a test domain controller")
}

fn write_certificates(directory: &Path, address: Ipv4Addr) -> Result<PathBuf> {
    let authority =
        writeback_tls::LocalCertificateAuthority::generate("Writeback test DC authority")?;
    let host = format!("dc{}.{DNS_DOMAIN}", address.octets()[3]);
    let server = authority.issue(&[host, address.to_string()])?;
    let ca_file = directory.join("ca.pem");
    std::fs::write(&ca_file, authority.certificate_pem())?;
    std::fs::write(directory.join("cert.pem"), &server.certificate_pem)?;
    // Samba refuses a TLS key that others may read.
    writeback_config::write_private_file(
        &directory.join("key.pem"),
        server.private_key_pem.as_bytes(),
    )?;
    Ok(ca_file)
}

/// Samba's services for a DC that stands alone: LDAP is all the tests use.
const ONE_DC_SERVICES: &str = "ldap";
/// ...and for one that a second DC joins: CLDAP to be found, RPC to replicate from.
const JOINABLE_DC_SERVICES: &str = "ldap cldap rpc";

/// The smb.conf options of a test DC on `address`.
fn dc_options(
    directory: &Path,
    tls_directory: &Path,
    address: Ipv4Addr,
    services: &str,
) -> Vec<String> {
    vec![
        format!("interfaces={address}/8"),
        "bind interfaces only=yes".to_owned(),
        format!("pid directory={}", directory.join("run").display()),
        format!("log file={}", directory.join("log.%m").display()),
        format!("netbios name=DC{}", address.octets()[3]),
        format!("server services={services}"),
        "tls enabled=yes".to_owned(),
        format!("tls keyfile={}", tls_directory.join("key.pem").display()),
        format!("tls certfile={}", tls_directory.join("cert.pem").display()),
        format!("tls cafile={}", tls_directory.join("ca.pem").display()),
    ]
}

fn provision(
    directory: &Path,
    tls_directory: &Path,
    address: Ipv4Addr,
    admin_password: &str,
    services: &str,
) -> Result<()> {
    let mut command = Command::new("samba-tool");
    command
        .args([
            "domain",
            "provision",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
        ])
        .arg(format!("--realm={REALM}"))
        .arg("--domain=CORP")
        .arg(format!("--adminpass={admin_password}"))
        .arg(format!("--targetdir={}", directory.display()))
        .arg(format!("--host-ip={address}"));
    for option in dc_options(directory, tls_directory, address, services) {
        command.arg(format!("--option={option}"));
    }
    run(&mut command).context("samba-tool domain provision")?;
    refuse_old_passwords(directory)
}

/// Samba accepts the previous password for 60 minutes after a change or reset, for NTLM clients
/// that cached it, and its LDAP simple bind takes the same path; Windows does not do this for
/// LDAP binds. Turned off so that a bind with the old password shows whether a reset landed.
/// (`samba-tool … --option` does not carry this parameter into smb.conf.)
fn refuse_old_passwords(directory: &Path) -> Result<()> {
    let configuration_path = directory.join("etc/smb.conf");
    let configuration = std::fs::read_to_string(&configuration_path)?;
    let configuration = configuration.replacen(
        "[global]\n",
        "[global]\n\told password allowed period = 0\n",
        1,
    );
    std::fs::write(&configuration_path, configuration)?;
    Ok(())
}

fn start_watchdog(directory: &Path) -> Result<Child> {
    // The watchdog waits for its stdin to close, then stops Samba and removes the DC's files.
    // Samba runs in its own process group (its pid, from its pid file, is the group id) so that
    // every one of its processes can be waited for before the directory is removed: exiting
    // children still write lock files. It ignores the signals a terminal or `timeout` sends to a
    // whole process group (Ctrl-C included): it must outlive its parent to clean up after it.
    // Samba starts before the trap, so it keeps the default dispositions.
    let script = r#"setsid samba -s "$1/etc/smb.conf" -F --debug-stdout -d1 >"$1/samba.out" 2>&1 &
trap '' INT HUP TERM
cat >/dev/null
samba_group=$(cat "$1/run/samba.pid" 2>/dev/null)
if [ -n "$samba_group" ]; then
  kill -TERM "-$samba_group" 2>/dev/null
  tries=0
  while kill -0 "-$samba_group" 2>/dev/null; do
    tries=$((tries + 1))
    [ "$tries" -gt 100 ] && kill -KILL "-$samba_group" 2>/dev/null
    sleep 0.1
  done
fi
rm -rf "$1""#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(directory)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting samba; is the samba package installed?")
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A user to create for a test.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub sam_account_name: String,
    pub password: String,
    pub container: String,
    pub display_name: Option<String>,
    pub disabled: bool,
}

impl NewUser {
    pub fn new(sam_account_name: &str, password: &str) -> Self {
        Self {
            sam_account_name: sam_account_name.to_owned(),
            password: password.to_owned(),
            container: STAFF_OU.to_owned(),
            display_name: None,
            disabled: false,
        }
    }

    pub fn in_container(mut self, container: &str) -> Self {
        self.container = container.to_owned();
        self
    }

    pub fn display_name(mut self, display_name: &str) -> Self {
        self.display_name = Some(display_name.to_owned());
        self
    }

    pub fn disabled(mut self) -> Self {
        self.disabled = true;
        self
    }
}

/// Settings of a fine-grained password policy for a test.
#[derive(Debug, Clone)]
pub struct NewPasswordSettings {
    pub name: String,
    pub min_length: u32,
    pub complexity: bool,
    pub history_length: u32,
    pub min_age_days: u32,
    pub lockout_threshold: u32,
}

/// An LDAPS session bound as Administrator.
#[derive(Debug)]
pub struct AdminSession {
    ldap: Ldap,
}

fn values(items: &[&str]) -> HashSet<Vec<u8>> {
    items.iter().map(|item| item.as_bytes().to_vec()).collect()
}

fn quoted_utf16(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

impl AdminSession {
    pub async fn add_organizational_unit(&mut self, dn: &str) -> Result<()> {
        let attributes = vec![(
            b"objectClass".to_vec(),
            values(&["top", "organizationalUnit"]),
        )];
        self.ldap
            .add(dn, attributes)
            .await?
            .success()
            .with_context(|| format!("adding {dn}"))?;
        Ok(())
    }

    /// Creates an enabled user (or a disabled one) and returns its DN.
    pub async fn create_user(&mut self, user: &NewUser) -> Result<String> {
        let dn = format!("CN={},{}", user.sam_account_name, user.container);
        let upn = format!("{}@{DNS_DOMAIN}", user.sam_account_name);
        let control = if user.disabled { "514" } else { "512" };
        let mut attributes = vec![
            (
                b"objectClass".to_vec(),
                values(&["top", "person", "organizationalPerson", "user"]),
            ),
            (
                b"sAMAccountName".to_vec(),
                values(&[&user.sam_account_name]),
            ),
            (b"userPrincipalName".to_vec(), values(&[&upn])),
            (
                b"unicodePwd".to_vec(),
                HashSet::from([quoted_utf16(&user.password)]),
            ),
            (b"userAccountControl".to_vec(), values(&[control])),
        ];
        if let Some(display_name) = &user.display_name {
            attributes.push((b"displayName".to_vec(), values(&[display_name])));
        }
        self.ldap
            .add(&dn, attributes)
            .await?
            .success()
            .with_context(|| format!("adding {dn}"))?;
        Ok(dn)
    }

    pub async fn replace(&mut self, dn: &str, attribute: &str, value: &str) -> Result<()> {
        self.ldap
            .modify(
                dn,
                vec![Mod::Replace(
                    attribute.as_bytes().to_vec(),
                    values(&[value]),
                )],
            )
            .await?
            .success()
            .with_context(|| format!("setting {attribute} on {dn}"))?;
        Ok(())
    }

    /// Resets a password as the administrator, directly, bypassing Writeback.
    pub async fn replace_password(&mut self, dn: &str, password: &str) -> Result<()> {
        self.ldap
            .modify(
                dn,
                vec![Mod::Replace(
                    b"unicodePwd".to_vec(),
                    HashSet::from([quoted_utf16(password)]),
                )],
            )
            .await?
            .success()
            .with_context(|| format!("resetting the password of {dn}"))?;
        Ok(())
    }

    pub async fn read(&mut self, dn: &str, attribute: &str) -> Result<Option<String>> {
        let result = self
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec![attribute])
            .await?
            .success()?;
        Ok(result
            .0
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .and_then(|entry| {
                entry
                    .attrs
                    .get(attribute)
                    .and_then(|values| values.first().cloned())
            }))
    }

    async fn object_sid(&mut self, dn: &str) -> Result<String> {
        let result = self
            .ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["objectSid"])
            .await?
            .success()?;
        let entry = result
            .0
            .into_iter()
            .next()
            .map(SearchEntry::construct)
            .context("no such object")?;
        let sid = entry
            .bin_attrs
            .get("objectSid")
            .and_then(|values| values.first())
            .context("object has no objectSid")?;
        sid_to_string(sid)
    }

    /// Renames the object at `dn` to `CN=new_cn` in the same container; returns the new DN.
    pub async fn rename(&mut self, dn: &str, new_cn: &str) -> Result<String> {
        let parent = dn
            .split_once(',')
            .map(|(_, parent)| parent)
            .context("DN has no parent")?;
        self.ldap
            .modifydn(dn, &format!("CN={new_cn}"), true, None)
            .await?
            .success()
            .with_context(|| format!("renaming {dn}"))?;
        Ok(format!("CN={new_cn},{parent}"))
    }

    /// Moves the object at `dn` into `container`; returns the new DN.
    pub async fn move_to(&mut self, dn: &str, container: &str) -> Result<String> {
        let rdn = dn
            .split_once(',')
            .map(|(rdn, _)| rdn)
            .context("DN has no RDN")?;
        self.ldap
            .modifydn(dn, rdn, true, Some(container))
            .await?
            .success()
            .with_context(|| format!("moving {dn} to {container}"))?;
        Ok(format!("{rdn},{container}"))
    }

    pub async fn delete(&mut self, dn: &str) -> Result<()> {
        self.ldap
            .delete(dn)
            .await?
            .success()
            .with_context(|| format!("deleting {dn}"))?;
        Ok(())
    }

    /// Creates a global security group; returns its DN.
    pub async fn create_group(&mut self, name: &str, container: &str) -> Result<String> {
        let dn = format!("CN={name},{container}");
        let attributes = vec![
            (b"objectClass".to_vec(), values(&["top", "group"])),
            (b"sAMAccountName".to_vec(), values(&[name])),
        ];
        self.ldap
            .add(&dn, attributes)
            .await?
            .success()
            .with_context(|| format!("adding {dn}"))?;
        Ok(dn)
    }

    pub async fn add_member(&mut self, group_dn: &str, member_dn: &str) -> Result<()> {
        let change = Mod::Add(b"member".to_vec(), values(&[member_dn]));
        self.change_members(group_dn, change)
            .await
            .with_context(|| format!("adding {member_dn} to {group_dn}"))
    }

    pub async fn remove_member(&mut self, group_dn: &str, member_dn: &str) -> Result<()> {
        let change = Mod::Delete(b"member".to_vec(), values(&[member_dn]));
        self.change_members(group_dn, change)
            .await
            .with_context(|| format!("removing {member_dn} from {group_dn}"))
    }

    async fn change_members(&mut self, group_dn: &str, change: Mod<Vec<u8>>) -> Result<()> {
        self.ldap.modify(group_dn, vec![change]).await?.success()?;
        Ok(())
    }

    /// Creates a PSO that applies to `applies_to`.
    pub async fn create_password_settings(
        &mut self,
        settings: &NewPasswordSettings,
        applies_to: &str,
    ) -> Result<String> {
        let dn = format!("CN={},{PASSWORD_SETTINGS_CONTAINER}", settings.name);
        let day_ticks = 864_000_000_000i64;
        let text = |value: i64| value.to_string();
        let attributes: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = [
            ("objectClass", "msDS-PasswordSettings".to_owned()),
            ("msDS-PasswordSettingsPrecedence", "10".to_owned()),
            (
                "msDS-PasswordReversibleEncryptionEnabled",
                "FALSE".to_owned(),
            ),
            (
                "msDS-PasswordHistoryLength",
                settings.history_length.to_string(),
            ),
            (
                "msDS-PasswordComplexityEnabled",
                if settings.complexity { "TRUE" } else { "FALSE" }.to_owned(),
            ),
            (
                "msDS-MinimumPasswordLength",
                settings.min_length.to_string(),
            ),
            (
                "msDS-MinimumPasswordAge",
                text(-(i64::from(settings.min_age_days)) * day_ticks),
            ),
            ("msDS-MaximumPasswordAge", text(-42 * day_ticks)),
            (
                "msDS-LockoutThreshold",
                settings.lockout_threshold.to_string(),
            ),
            ("msDS-LockoutObservationWindow", text(-18_000_000_000)),
            ("msDS-LockoutDuration", text(-18_000_000_000)),
            ("msDS-PSOAppliesTo", applies_to.to_owned()),
        ]
        .into_iter()
        .map(|(name, value)| {
            (
                name.as_bytes().to_vec(),
                HashSet::from([value.into_bytes()]),
            )
        })
        .collect();
        self.ldap
            .add(&dn, attributes)
            .await?
            .success()
            .with_context(|| format!("adding {dn}"))?;
        Ok(dn)
    }
}

/// Renders a binary SID as `S-1-5-21-...`.
fn sid_to_string(sid: &[u8]) -> Result<String> {
    if sid.len() < 8 {
        bail!("SID too short");
    }
    let revision = sid[0];
    let count = usize::from(sid[1]);
    let authority = sid[2..8]
        .iter()
        .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
    let mut text = format!("S-{revision}-{authority}");
    for index in 0..count {
        let start = 8 + index * 4;
        let chunk = sid.get(start..start + 4).context("SID truncated")?;
        let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        text.push_str(&format!("-{value}"));
    }
    Ok(text)
}

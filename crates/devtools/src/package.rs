//! Debian packages of the cloud (with the `writeback` command line) and of the agent, built from
//! binaries already compiled: each binary with its systemd unit, its configuration under
//! `/etc/writeback`, its data under `/var/lib`, a system user of its own, and shell completions
//! and a manual page that the binary itself prints from its clap definitions.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// One package: its name, what goes in it, and how it is described.
struct PackageSpec {
    name: &'static str,
    /// The service binary, its unit and its system user share the package's name.
    binaries: &'static [&'static str],
    description: &'static str,
    config_file: &'static str,
    config: &'static str,
    unit: &'static str,
    /// Whether the installation starts the service: the cloud runs as installed, the agent must
    /// be configured and registered first.
    start_on_install: bool,
}

const CLOUD: PackageSpec = PackageSpec {
    name: "writeback-cloud",
    binaries: &["writeback-cloud", "writeback"],
    description: "Writeback cloud service and admin command line\n Password writeback to Active Directory: the admin API and console, the\n self-service portal and the relay the on-premises agents dial out to.",
    config_file: "cloud.toml",
    config: CLOUD_CONFIG,
    unit: CLOUD_UNIT,
    start_on_install: true,
};

const AGENT: PackageSpec = PackageSpec {
    name: "writeback-agent",
    binaries: &["writeback-agent"],
    description: "Writeback on-premises agent\n Dials out to the Writeback cloud and writes passwords to Active Directory,\n enforcing the domain's own policy; syncs users and groups to the cloud.",
    config_file: "agent.toml",
    config: AGENT_CONFIG,
    unit: AGENT_UNIT,
    start_on_install: false,
};

const CLOUD_CONFIG: &str = r#"# Writeback cloud. Every setting and its default: man writeback-cloud, and the README.
listen = "0.0.0.0:8443"
data_dir = "/var/lib/writeback-cloud"
"#;

const AGENT_CONFIG: &str = r#"# Writeback agent. Fill in the directory, then register once:
#   sudo -u writeback-agent writeback-agent --config /etc/writeback/agent.toml register --cloud https://... --token ... --pin ...
#   systemctl enable --now writeback-agent
data_dir = "/var/lib/writeback-agent"

[directory]
url = "ldaps://dc1.corp.example.com:636"
bind_name = "svc-writeback@corp.example.com"
bind_password_file = "/etc/writeback/agent-bind-password"
base_dn = "DC=corp,DC=example,DC=com"
allowed_ous = ["OU=Staff,DC=corp,DC=example,DC=com"]
"#;

/// The hardening both services share: no privileges, a read-only system but for their own state,
/// no devices, no other users' files, and only the system calls a network service makes.
const HARDENING: &str = "NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
UMask=0077
";

const CLOUD_UNIT: &str = "[Unit]
Description=Writeback cloud service
Documentation=man:writeback-cloud(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=writeback-cloud
Group=writeback-cloud
ExecStart=/usr/bin/writeback-cloud --config /etc/writeback/cloud.toml serve
Restart=on-failure
RestartSec=5
StateDirectory=writeback-cloud
StateDirectoryMode=0750
";

const AGENT_UNIT: &str = "[Unit]
Description=Writeback on-premises agent
Documentation=man:writeback-agent(1)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=writeback-agent
Group=writeback-agent
ExecStart=/usr/bin/writeback-agent --config /etc/writeback/agent.toml run
Restart=on-failure
RestartSec=5
StateDirectory=writeback-agent
StateDirectoryMode=0750
";

/// The packages built.
#[derive(Debug, Clone)]
pub struct Packages {
    pub cloud: PathBuf,
    pub agent: PathBuf,
}

/// Builds both packages at `version` from the binaries in `binaries` (a cargo profile's output
/// directory) into `out`.
pub fn build(binaries: &Path, out: &Path, version: &str) -> Result<Packages> {
    std::fs::create_dir_all(out)?;
    let architecture = command_output(Command::new("dpkg").arg("--print-architecture"))?;
    Ok(Packages {
        cloud: build_one(&CLOUD, binaries, out, version, architecture.trim())?,
        agent: build_one(&AGENT, binaries, out, version, architecture.trim())?,
    })
}

fn build_one(
    spec: &PackageSpec,
    binaries: &Path,
    out: &Path,
    version: &str,
    architecture: &str,
) -> Result<PathBuf> {
    let root = out.join(format!("{}-staging", spec.name));
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let file = |relative: &str, contents: &[u8], mode: u32| -> Result<()> {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        set_mode(&path, mode)
    };
    for binary in spec.binaries {
        let source = binaries.join(binary);
        let contents =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        file(&format!("usr/bin/{binary}"), &contents, 0o755)?;
        for (shell, place) in [
            (
                "bash",
                format!("usr/share/bash-completion/completions/{binary}"),
            ),
            ("zsh", format!("usr/share/zsh/vendor-completions/_{binary}")),
            (
                "fish",
                format!("usr/share/fish/vendor_completions.d/{binary}.fish"),
            ),
        ] {
            let script = command_output(Command::new(&source).args(["completions", shell]))?;
            file(&place, script.as_bytes(), 0o644)?;
        }
        let manual = command_output(Command::new(&source).arg("manual"))?;
        file(
            &format!("usr/share/man/man1/{binary}.1.gz"),
            &gzip(manual.as_bytes())?,
            0o644,
        )?;
    }
    file(
        &format!("lib/systemd/system/{}.service", spec.name),
        format!(
            "{}{HARDENING}\n[Install]\nWantedBy=multi-user.target\n",
            spec.unit
        )
        .as_bytes(),
        0o644,
    )?;
    let config_path = format!("etc/writeback/{}", spec.config_file);
    file(&config_path, spec.config.as_bytes(), 0o640)?;
    file(
        &format!("usr/share/doc/{}/copyright", spec.name),
        b"Writeback\nLicense: Apache-2.0\n On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )?;
    let installed_size_kib = directory_size(&root)? / 1024 + 1;
    file(
        "DEBIAN/control",
        format!(
            "Package: {}\nVersion: {version}\nArchitecture: {architecture}\nMaintainer: Writeback developers <writeback@example.com>\nInstalled-Size: {installed_size_kib}\nDepends: libc6, passwd\nSection: admin\nPriority: optional\nDescription: {}\n",
            spec.name, spec.description
        )
        .as_bytes(),
        0o644,
    )?;
    file(
        "DEBIAN/conffiles",
        format!("/{config_path}\n").as_bytes(),
        0o644,
    )?;
    file("DEBIAN/postinst", postinst(spec).as_bytes(), 0o755)?;
    file("DEBIAN/prerm", prerm(spec).as_bytes(), 0o755)?;
    file("DEBIAN/postrm", postrm(spec).as_bytes(), 0o755)?;

    let package = out.join(format!("{}_{version}_{architecture}.deb", spec.name));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&package)
        .status()
        .context("running dpkg-deb")?;
    ensure!(status.success(), "dpkg-deb failed for {}", spec.name);
    std::fs::remove_dir_all(&root)?;
    Ok(package)
}

/// Makes the service's system user and its directories, and tells systemd, where it runs.
fn postinst(spec: &PackageSpec) -> String {
    let name = spec.name;
    let start = if spec.start_on_install {
        format!("    systemctl enable --now {name}.service || true\n")
    } else {
        format!(
            "    systemctl enable {name}.service || true\n    echo \"{name}: edit /etc/writeback/{}, register, then: systemctl start {name}\"\n",
            spec.config_file
        )
    };
    format!(
        "#!/bin/sh
set -e
if [ \"$1\" = configure ]; then
    if ! getent passwd {name} >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/{name} --no-create-home --shell /usr/sbin/nologin {name}
    fi
    install -d -m 0750 -o {name} -g {name} /var/lib/{name}
    chgrp {name} /etc/writeback/{config}
    chmod 0640 /etc/writeback/{config}
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
{start}fi
",
        config = spec.config_file,
    )
}

fn prerm(spec: &PackageSpec) -> String {
    format!(
        "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl disable --now {}.service || true
fi
",
        spec.name
    )
}

/// On purge: the data directory and the system user go too.
fn postrm(spec: &PackageSpec) -> String {
    let name = spec.name;
    format!(
        "#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
if [ \"$1\" = purge ]; then
    rm -rf /var/lib/{name}
    if getent passwd {name} >/dev/null; then
        userdel {name} || true
    fi
    if getent group {name} >/dev/null; then
        groupdel {name} || true
    fi
fi
"
    )
}

/// The unit's `ExecStart` command line, split into words, for starting a service where systemd
/// is not running.
pub fn exec_start(unit: &str) -> Option<Vec<String>> {
    unit.lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .map(|command| command.split_whitespace().map(str::to_owned).collect())
}

/// The unit's `User=`.
pub fn unit_user(unit: &str) -> Option<&str> {
    unit.lines().find_map(|line| line.strip_prefix("User="))
}

fn command_output(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running gzip")?;
    child
        .stdin
        .take()
        .context("gzip's input")?
        .write_all(bytes)?;
    let output = child.wait_with_output()?;
    ensure!(output.status.success(), "gzip failed");
    Ok(output.stdout)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn directory_size(directory: &Path) -> Result<u64> {
    let mut size = 0;
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        size += if metadata.is_dir() {
            directory_size(&entry.path())?
        } else {
            metadata.len()
        };
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_start_their_binary_as_their_own_user_hardened() {
        for spec in [&CLOUD, &AGENT] {
            let unit = format!("{}{HARDENING}", spec.unit);
            assert_eq!(unit_user(&unit), Some(spec.name));
            let command = exec_start(&unit).unwrap();
            assert_eq!(command[0], format!("/usr/bin/{}", spec.name));
            for setting in [
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "CapabilityBoundingSet=\n",
                "PrivateTmp=yes",
                "MemoryDenyWriteExecute=yes",
            ] {
                assert!(unit.contains(setting), "{}: {setting}", spec.name);
            }
            assert!(unit.contains(&format!("StateDirectory={}", spec.name)));
        }
    }
}

//! What the three programs print about their own command lines for packaging: shell completions
//! and a manual page, both generated from the clap definitions, so they never disagree with the
//! program.

use std::io::Write;

pub use clap_complete::Shell;

/// The subcommands every program has for its packaging, flattened into its own subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Describe {
    /// Print a completion script for SHELL (bash, zsh, fish, elvish or powershell).
    Completions { shell: Shell },
    /// Print this program's manual page (roff).
    Manual,
}

impl Describe {
    /// Prints what was asked for about `command` (the program's own) on standard output.
    pub fn print(&self, command: clap::Command) -> std::io::Result<()> {
        let mut out = std::io::stdout();
        match self {
            Self::Completions { shell } => write_completions(*shell, command, &mut out),
            Self::Manual => write_manual(command, &mut out),
        }
    }
}

/// Writes `command`'s completion script for `shell` to `out`.
pub fn write_completions(
    shell: Shell,
    mut command: clap::Command,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let name = command.get_name().to_owned();
    // Generated whole first: clap_complete cannot report a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    out.write_all(&script)
}

/// Writes `command`'s manual page (roff, section 1) to `out`, its subcommands included.
pub fn write_manual(command: clap::Command, out: &mut impl Write) -> std::io::Result<()> {
    let command = command.disable_help_subcommand(true);
    clap_mangen::Man::new(command.clone()).render(out)?;
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        writeln!(out, ".SH \"{}\"", subcommand.get_name().to_uppercase())?;
        clap_mangen::Man::new(subcommand.clone()).render_options_section(out)?;
        if let Some(about) = subcommand.get_about() {
            writeln!(out, "{about}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> clap::Command {
        clap::Command::new("example")
            .about("An example")
            .subcommand(
                clap::Command::new("run")
                    .about("Runs it")
                    .arg(clap::arg!(--fast "Fast")),
            )
    }

    #[test]
    fn completions_and_the_manual_name_every_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_completions(shell, example(), &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("run") && text.contains("fast"),
                "{shell}: {text}"
            );
        }
        let mut manual = Vec::new();
        write_manual(example(), &mut manual).unwrap();
        let manual = String::from_utf8(manual).unwrap();
        assert!(manual.contains(".TH example 1"), "{manual}");
        assert!(
            manual.contains("RUN") && manual.contains("fast"),
            "{manual}"
        );
    }
}

//! `fogbank manual --to DIR`: the man pages (one per command, from the
//! CLI's own definition, so they cannot drift from it) and the bash, zsh
//! and fish completions. The Debian package installs what it writes.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// Writes `DIR/man/*.1` and `DIR/completions/{fogbank.bash,_fogbank,fogbank.fish}`.
pub fn write(to: &Path) -> std::io::Result<()> {
    let man = to.join("man");
    let completions = to.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    clap_mangen::generate_to(Cli::command(), &man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "fogbank", &completions)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_command_has_a_page_and_every_shell_its_completions() {
        let dir = tempfile::tempdir().unwrap();
        super::write(dir.path()).unwrap();
        for page in [
            "fogbank.1",
            "fogbank-run.1",
            "fogbank-config-check.1",
            "fogbank-backup.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join("man").join(page)).unwrap();
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{page}: {text}"
            );
        }
        let bash = std::fs::read_to_string(dir.path().join("completions/fogbank.bash")).unwrap();
        assert!(bash.contains("restore"), "{bash}");
        for file in ["_fogbank", "fogbank.fish"] {
            assert!(dir.path().join("completions").join(file).exists(), "{file}");
        }
    }
}

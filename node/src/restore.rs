//! `fogbank restore`: a backup (a RocksDB checkpoint that `POST
//! /api/v1/backup` wrote) becomes the store of a data directory. Offline:
//! the directory must hold no store, so a running gateway's — whose store
//! is there — is never overwritten.

use std::path::Path;

use anyhow::{Context, bail};
use fogbank_taas::{Store, StoreOptions};

use crate::server::DB_DIR;

pub fn restore(from: &Path, data_dir: &Path) -> anyhow::Result<()> {
    // A checkpoint names its live files in CURRENT. Opening the backup
    // itself would write into it, so the copy is what gets opened.
    if !from.join("CURRENT").is_file() {
        bail!(
            "{} is not a fogbank backup: it has no CURRENT file",
            from.display()
        );
    }
    let db = data_dir.join(DB_DIR);
    if db.exists() {
        bail!(
            "{} holds a store already: stop its gateway and move the directory away to restore over it",
            db.display()
        );
    }
    std::fs::create_dir_all(&db).with_context(|| format!("cannot create {}", db.display()))?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() && entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), db.join(entry.file_name())).with_context(|| {
                format!(
                    "cannot copy {} into {}",
                    entry.path().display(),
                    db.display()
                )
            })?;
        }
    }
    if let Err(error) = Store::open(&db, &StoreOptions::default()) {
        let _ = std::fs::remove_dir_all(&db);
        return Err(error).with_context(|| format!("{} is not a fogbank backup", from.display()));
    }
    println!("restored {} into {}", from.display(), db.display());
    Ok(())
}

//! The store flags every binary that opens the store shares (`--storage`, `--storage-dir`, the
//! `--s3-*` flags with their `GATEHOUSE_*`/`AWS_*` environment, `--s3-object-lock-*`): one
//! definition, parsed by clap (feature `cli`), turned into a [`Store`] here.

use std::path::PathBuf;

use crate::{
    error::{Error, Result},
    lock::{MODE_FLAG, ObjectLock},
    objects::{LocalStore, S3Options, S3Store, Store},
};

/// Which store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum StorageKind {
    /// A local directory (`--storage-dir`).
    Local,
    /// An S3-compatible bucket (the `--s3-*` flags).
    S3,
}

/// Where the store is: the local directory and the S3 settings (which of them counts is the
/// caller's [`StorageKind`]).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct StoreFlags {
    /// Directory of the local store.
    #[cfg_attr(
        feature = "cli",
        arg(
            long = "storage-dir",
            env = "GATEHOUSE_STORAGE_DIR",
            default_value = "/var/lib/gatehouse/recordings"
        )
    )]
    pub dir: PathBuf,
    /// The S3 store.
    #[cfg_attr(feature = "cli", command(flatten))]
    pub s3: S3Options,
}

impl StoreFlags {
    /// The `kind` of store these flags describe, putting `lock` on every object it writes
    /// (only a bucket can lock: a directory with a lock is an error naming the flag).
    pub fn open(&self, kind: StorageKind, lock: Option<ObjectLock>) -> Result<Store> {
        match (kind, lock) {
            (StorageKind::Local, None) => Ok(Store::Local(LocalStore::new(self.dir.clone()))),
            (StorageKind::Local, Some(_)) => Err(Error::ObjectLockConfig {
                flag: MODE_FLAG,
                message: "needs --storage s3 (the operator: --audit-store s3); only an S3 store can lock objects"
                    .to_owned(),
            }),
            (StorageKind::S3, lock) => Ok(Store::S3(
                S3Store::new(self.s3.clone().config()?).with_object_lock(lock),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_directory_cannot_lock_and_a_bucket_needs_its_settings() {
        let flags = StoreFlags {
            dir: PathBuf::from("/tmp/store"),
            s3: S3Options::default(),
        };
        let lock = ObjectLock::parse("governance", "1d").unwrap();
        assert!(matches!(
            flags.open(StorageKind::Local, None),
            Ok(Store::Local(_))
        ));
        let local_lock = flags
            .open(StorageKind::Local, lock)
            .unwrap_err()
            .to_string();
        assert!(local_lock.contains(MODE_FLAG), "{local_lock}");
        let no_bucket = flags.open(StorageKind::S3, None).unwrap_err().to_string();
        assert!(no_bucket.contains("--s3-bucket"), "{no_bucket}");
    }
}

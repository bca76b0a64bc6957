//! `kubectl gatehouse audit verify`'s reads: the recording store itself, with an auditor's
//! read-only credentials (`--store-dir DIR` for a directory store, else the proxy's S3
//! settings from `GATEHOUSE_S3_*` and `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`). Data comes
//! from the store (the `audit/` listing, each batch, each recording a `recordingStored` event
//! names); it goes to [`super::verify`]'s pure checks. Nothing is written.

use std::path::PathBuf;

use gatehouse_store::{LocalStore, S3Config, S3Store, Store, hex};
use sha2::{Digest, Sha256};

use super::verify::{self, AUDIT_PREFIX, Report};
use crate::error::{Error, Result};

/// Where the store is: `--store-dir`, else S3 from the environment.
#[derive(Debug, Clone, Default)]
pub struct StoreFlags {
    /// A directory store (the chart's `local` storage, or a copy of a bucket).
    pub dir: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The store the flags and environment name.
pub fn open(flags: &StoreFlags) -> Result<Store> {
    if let Some(dir) = &flags.dir {
        if !dir.is_dir() {
            return Err(Error::File {
                path: dir.clone(),
                problem: "not a directory (--store-dir names the recording store's directory)"
                    .to_owned(),
            });
        }
        return Ok(Store::Local(LocalStore::new(dir.clone())));
    }
    let Some(bucket) = env("GATEHOUSE_S3_BUCKET") else {
        return Err(Error::Usage(
            "audit verify reads the recording store: pass --store-dir DIR, or set GATEHOUSE_S3_BUCKET (and GATEHOUSE_S3_ENDPOINT, GATEHOUSE_S3_REGION, GATEHOUSE_S3_PATH_STYLE, GATEHOUSE_S3_PREFIX as for the proxy) with read-only AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned(),
        ));
    };
    let (Some(access_key_id), Some(secret_access_key)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    else {
        return Err(Error::Usage(
            "audit verify with S3 needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (read-only credentials are enough)".to_owned(),
        ));
    };
    let path_style = env("GATEHOUSE_S3_PATH_STYLE").is_some_and(|v| v == "true" || v == "1");
    Ok(Store::S3(S3Store::new(S3Config {
        endpoint: env("GATEHOUSE_S3_ENDPOINT"),
        bucket,
        region: env("GATEHOUSE_S3_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
        access_key_id,
        secret_access_key,
        path_style,
        prefix: std::env::var("GATEHOUSE_S3_PREFIX").unwrap_or_default(),
    })))
}

/// List, fetch and verify every batch, then (unless `skip_recordings`) every recording the
/// batches name.
pub async fn verify(store: &Store, allow_expired: bool, skip_recordings: bool) -> Result<Report> {
    let keys = store.list(AUDIT_PREFIX).await.map_err(|e| Error::Api {
        action: format!("listing {AUDIT_PREFIX} in the recording store"),
        message: e.to_string(),
    })?;
    let mut batches = std::collections::BTreeMap::new();
    for key in keys.iter().filter(|k| verify::parse_key(k).is_some()) {
        let text = match store.get(key).await {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned()),
            Err(e) => Err(e.to_string()),
        };
        batches.insert(key.clone(), text);
    }
    let (mut report, recordings) = verify::verify_batches(&keys, &batches, allow_expired);
    if !skip_recordings {
        for detail in &recordings {
            let found = store
                .get(&detail.key)
                .await
                .map(|bytes| (hex(&Sha256::digest(&bytes)), bytes.len() as u64))
                .map_err(|e| e.to_string());
            report.recordings += 1;
            report
                .problems
                .extend(verify::check_recording(detail, &found));
        }
    }
    Ok(report)
}

//! The engineer's key and where the CLI keeps its files. The CLI reads only public keys
//! (`*.pub`); the one private key it ever creates is its own dedicated Ed25519 key, written by
//! `ssh-keygen` with mode 0600 under the user's config directory, and only its path is used.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use crate::error::{Error, Result};

/// The CLI's directory: `$XDG_CONFIG_HOME/gatehouse` or `~/.config/gatehouse`.
pub fn config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("gatehouse");
    }
    home().join(".config").join("gatehouse")
}

/// The user's home directory.
pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// A public key: its `.pub` path, the private key path next to it, and its line.
#[derive(Debug, Clone)]
pub struct Key {
    /// The `.pub` file.
    pub public_path: PathBuf,
    /// The private key (only ever passed to ssh as a path).
    pub private_path: PathBuf,
    /// The public key line.
    pub line: String,
}

impl Key {
    /// Where this key's certificate goes: `<private>-cert.pub`, as OpenSSH expects.
    pub fn certificate_path(&self) -> PathBuf {
        let mut name = self.private_path.as_os_str().to_owned();
        name.push("-cert.pub");
        PathBuf::from(name)
    }
}

/// Read the public key at `path` (a `.pub` file, or a private key path whose `.pub` is read).
pub fn read(path: &Path) -> Result<Key> {
    let (public_path, private_path) = if path.extension().is_some_and(|e| e == "pub") {
        (path.to_owned(), path.with_extension(""))
    } else {
        let mut public = path.as_os_str().to_owned();
        public.push(".pub");
        (PathBuf::from(public), path.to_owned())
    };
    let text = std::fs::read_to_string(&public_path).map_err(|e| Error::NoKey {
        path: public_path.clone(),
        problem: e.to_string(),
    })?;
    let line = text.lines().next().unwrap_or_default().trim().to_owned();
    let kind = line.split_whitespace().next().unwrap_or_default();
    let supported = kind == "ssh-ed25519"
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-ed25519")
        || kind.starts_with("sk-ecdsa-sha2-");
    if !supported {
        return Err(Error::NoKey {
            path: public_path,
            problem: "not an OpenSSH Ed25519 or ECDSA public key line".to_owned(),
        });
    }
    Ok(Key {
        public_path,
        private_path,
        line,
    })
}

/// The key to use: `--key`, else `~/.ssh/id_ed25519.pub`, else the CLI's own key (generated
/// with `ssh-keygen` the first time).
pub fn choose(explicit: Option<&Path>) -> Result<Key> {
    if let Some(path) = explicit {
        return read(path);
    }
    let default = home().join(".ssh").join("id_ed25519.pub");
    if default.exists() {
        return read(&default);
    }
    let own = config_dir().join("id_ed25519");
    if !own.with_extension("pub").exists() {
        generate(&own)?;
    }
    read(&own.with_extension("pub"))
}

/// Generate the CLI's dedicated key at `path` (0600; its directory 0700).
fn generate(path: &Path) -> Result<()> {
    let err = |problem: String| Error::GenerateKey {
        path: path.to_owned(),
        problem,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| err(e.to_string()))?;
    }
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "kubectl-gatehouse",
            "-f",
        ])
        .arg(path)
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))
}

/// Write `contents` to `path` (mode `mode`), creating its directory.
pub fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let err = |e: std::io::Error| Error::File {
        path: path.to_owned(),
        problem: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(path, contents).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_public_keys_and_names_the_certificate_next_to_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("id");
        std::fs::write(&private, "PRIVATE KEY MATERIAL").unwrap();
        std::fs::write(dir.path().join("id.pub"), "ssh-ed25519 AAAA me\n").unwrap();
        for given in [private.clone(), dir.path().join("id.pub")] {
            let key = read(&given).unwrap();
            assert_eq!(key.line, "ssh-ed25519 AAAA me");
            assert_eq!(key.private_path, private);
            assert_eq!(key.certificate_path(), dir.path().join("id-cert.pub"));
        }
        std::fs::write(dir.path().join("rsa.pub"), "ssh-rsa AAAA me\n").unwrap();
        let error = read(&dir.path().join("rsa.pub")).unwrap_err().to_string();
        assert!(
            error.contains("not an OpenSSH Ed25519 or ECDSA public key line"),
            "{error}"
        );
        let error = read(&dir.path().join("missing.pub"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("no public key at "), "{error}");
    }
}

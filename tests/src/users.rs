//! The control plane's users: who each one is to the API server, how it authenticates, its
//! groups and what the tests use it for.
//!
//! Data comes from `tests/users.tsv`, compiled in: the one table `control-plane.sh` also reads
//! to create the users (a client certificate or a token each, and a kubeconfig). It goes to
//! [`crate::ControlPlane`] (which kubeconfig acts as a [`User`]), to tests that check the
//! groups the API server reports, and to `make up`'s summary.

/// `tests/users.tsv`: user name, kubeconfig stem, credential, groups, role; `#` lines are comments.
const TABLE: &str = include_str!("../users.tsv");

/// The identities the control plane authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// The cluster admin (client certificate, `system:masters`).
    Admin,
    /// A requester (group `dev`).
    Alice,
    /// An approver (group `sre-leads`).
    Bob,
    /// A second approver (group `sre-leads`): four-eyes.
    Carol,
    /// An approver for another policy (group `dba-leads`).
    Dave,
    /// Authenticated, granted nothing (no groups).
    Mallory,
}

/// One row of `tests/users.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The user name the API server sees.
    pub username: &'static str,
    /// File stem of the user's kubeconfig.
    pub kubeconfig: &'static str,
    /// `certificate` or `token`.
    pub credential: &'static str,
    /// The user's groups (without `system:authenticated`).
    pub groups: Vec<&'static str>,
    /// What the tests and the demo use the user for.
    pub role: &'static str,
}

/// Every row of the table, in its order.
pub fn rows() -> Vec<UserRow> {
    TABLE
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&'static str> = line.split('\t').collect();
            assert!(
                fields.len() == 5,
                "tests/users.tsv: {line:?} has {} fields, not 5",
                fields.len()
            );
            UserRow {
                username: fields[0],
                kubeconfig: fields[1],
                credential: fields[2],
                groups: fields[3].split(',').filter(|g| !g.is_empty()).collect(),
                role: fields[4],
            }
        })
        .collect()
}

impl User {
    /// Every user, in the table's order.
    pub const ALL: [User; 6] = [
        User::Admin,
        User::Alice,
        User::Bob,
        User::Carol,
        User::Dave,
        User::Mallory,
    ];

    /// File stem of the user's kubeconfig: the key of its row in `tests/users.tsv`.
    pub fn kubeconfig_name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Alice => "alice",
            Self::Bob => "bob",
            Self::Carol => "carol",
            Self::Dave => "dave",
            Self::Mallory => "mallory",
        }
    }

    /// The user's row of `tests/users.tsv`.
    pub fn row(self) -> UserRow {
        let key = self.kubeconfig_name();
        rows()
            .into_iter()
            .find(|row| row.kubeconfig == key)
            .unwrap_or_else(|| panic!("tests/users.tsv has no row for kubeconfig {key:?}"))
    }

    /// The user name the API server sees.
    pub fn username(self) -> &'static str {
        self.row().username
    }

    /// The user's groups (without `system:authenticated`).
    pub fn groups(self) -> Vec<&'static str> {
        self.row().groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_has_exactly_one_row_and_every_row_a_user() {
        let rows = rows();
        for user in User::ALL {
            let matching = rows
                .iter()
                .filter(|r| r.kubeconfig == user.kubeconfig_name())
                .count();
            assert_eq!(matching, 1, "{user:?} in tests/users.tsv");
        }
        for row in &rows {
            assert!(
                User::ALL
                    .iter()
                    .any(|u| u.kubeconfig_name() == row.kubeconfig),
                "tests/users.tsv row {row:?} has no User variant"
            );
            assert!(matches!(row.credential, "certificate" | "token"), "{row:?}");
        }
        assert_eq!(User::Admin.username(), "gatehouse-admin");
        assert_eq!(User::Admin.row().credential, "certificate");
        assert_eq!(User::Mallory.groups(), Vec::<&str>::new());
    }

    /// README's "How the tests work" shows the table; it must say what the table says.
    #[test]
    fn the_readme_user_table_matches_users_tsv() {
        let readme = include_str!("../../README.md");
        let header = "| user | authenticates with | groups |";
        let start = readme.find(header).expect("README has the user table");
        let mut documented = Vec::new();
        for line in readme[start..].lines().skip(2) {
            if !line.starts_with('|') {
                break;
            }
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let credential = match cells[1] {
                "client certificate" => "certificate",
                other => other,
            };
            let groups: Vec<String> = match cells[2] {
                "none" => Vec::new(),
                list => list.split(", ").map(|g| g.replace('`', "")).collect(),
            };
            for user in cells[0].split(", ") {
                documented.push((user.replace('`', ""), credential.to_owned(), groups.clone()));
            }
        }
        let table: Vec<(String, String, Vec<String>)> = rows()
            .into_iter()
            .map(|r| {
                (
                    r.username.to_owned(),
                    r.credential.to_owned(),
                    r.groups.iter().map(|g| (*g).to_owned()).collect(),
                )
            })
            .collect();
        assert_eq!(documented, table, "README's user table vs tests/users.tsv");
    }
}

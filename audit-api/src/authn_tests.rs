#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::HeaderValue;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::*;

fn ca_pem() -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "front-proxy-ca");
    params
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn the_config_map_is_read_strictly() {
    let ca = ca_pem();
    let full = data(&[
        ("requestheader-client-ca-file", &ca),
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-uid-headers", r#"["X-Remote-Uid"]"#),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        (
            "requestheader-extra-headers-prefix",
            r#"["X-Remote-Extra-"]"#,
        ),
        ("client-ca-file", "ignored"),
    ]);
    let config = RequestHeaderConfig::from_data(&full).unwrap();
    assert_eq!(
        config,
        RequestHeaderConfig {
            client_ca_pem: ca.clone(),
            allowed_names: vec!["front-proxy-client".into()],
            username_headers: vec!["X-Remote-User".into()],
            uid_headers: vec!["X-Remote-Uid".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_headers_prefixes: vec!["x-remote-extra-".into()],
        }
    );
    // Empty lists ("" or "[]") are empty: any CN from the CA is allowed.
    let minimal = data(&[
        ("requestheader-client-ca-file", &ca),
        ("requestheader-allowed-names", "[]"),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-group-headers", ""),
    ]);
    let config = RequestHeaderConfig::from_data(&minimal).unwrap();
    assert!(config.allowed_names.is_empty() && config.group_headers.is_empty());
    let bad: &[(Vec<(&str, &str)>, &str)] = &[
        (vec![], "no requestheader-client-ca-file"),
        (
            vec![("requestheader-client-ca-file", " ")],
            "no requestheader-client-ca-file",
        ),
        (
            vec![("requestheader-client-ca-file", &ca)],
            "no requestheader-username-headers",
        ),
        (
            vec![
                ("requestheader-client-ca-file", &ca),
                ("requestheader-username-headers", "X-Remote-User"),
            ],
            "requestheader-username-headers is not a JSON list",
        ),
    ];
    for (pairs, want) in bad {
        let error = RequestHeaderConfig::from_data(&data(pairs)).unwrap_err();
        assert!(error.to_string().contains(want), "{error}");
    }
    // A CA file without a certificate leaves nobody able to authenticate: an error.
    let mut no_cert = minimal.clone();
    no_cert.insert("requestheader-client-ca-file".into(), "junk".into());
    let config = RequestHeaderConfig::from_data(&no_cert).unwrap();
    assert!(FrontProxy::new(config).is_err());
}

fn front_proxy() -> FrontProxy {
    let ca = ca_pem();
    FrontProxy::new(
        RequestHeaderConfig::from_data(&data(&[
            ("requestheader-client-ca-file", &ca),
            (
                "requestheader-username-headers",
                r#"["X-Remote-User","X-Other-User"]"#,
            ),
            ("requestheader-uid-headers", r#"["X-Remote-Uid"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]))
        .unwrap(),
    )
    .unwrap()
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn the_user_comes_from_the_configured_headers_only() {
    let f = front_proxy();
    let user = f
        .user(&headers(&[
            ("x-remote-user", "alice"),
            ("x-other-user", "mallory"),
            ("x-remote-uid", "u-1"),
            ("x-remote-group", "dev"),
            ("x-remote-group", "system:authenticated"),
            ("x-remote-extra-scopes", "a"),
            ("x-remote-extra-scopes", "b"),
            ("x-remote-extra-example.org%2fTeam", "t"),
            ("x-group", "ignored"),
        ]))
        .unwrap();
    assert_eq!(
        user,
        UserInfo {
            name: "alice".into(),
            uid: Some("u-1".into()),
            groups: vec!["dev".into(), "system:authenticated".into()],
            extra: [
                ("example.org/team".to_owned(), vec!["t".to_owned()]),
                ("scopes".to_owned(), vec!["a".to_owned(), "b".to_owned()]),
            ]
            .into(),
        }
    );
    // The second username header counts only without the first.
    let user = f.user(&headers(&[("x-other-user", "bob")])).unwrap();
    assert_eq!((user.name.as_str(), user.uid), ("bob", None));
    assert_eq!(
        f.user(&headers(&[("x-remote-user", ""), ("x-group", "g")])),
        Err(Unauthenticated(
            "no user name in the request headers".into()
        ))
    );
    let many: Vec<(&str, &str)> = std::iter::once(("x-remote-user", "alice"))
        .chain(std::iter::repeat_n(("x-remote-group", "g"), MAX_GROUPS + 1))
        .collect();
    assert_eq!(
        f.user(&headers(&many)),
        Err(Unauthenticated("too many groups".into()))
    );
}

#[test]
fn a_missing_chain_is_refused_and_the_cn_is_read() {
    let f = front_proxy();
    assert_eq!(
        f.verify_peer(None),
        Err(Unauthenticated("no client certificate".into()))
    );
    assert_eq!(
        f.verify_peer(Some(&[])),
        Err(Unauthenticated("no client certificate".into()))
    );
    let pem = ca_pem();
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(common_name(&der).as_deref(), Some("front-proxy-ca"));
    assert_eq!(common_name(&CertificateDer::from(vec![1, 2, 3])), None);
}

//! The floor's cases, what one measurement of a case is, and how the measured cases split one
//! auto-approved request's cost into the create, our admission (webhooks, CEL rules), the status
//! apply and the Event. Pure: numbers in, numbers out.

use std::collections::BTreeMap;

/// One thing the floor creates (or writes) `N` of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Case {
    /// ConfigMaps of about a request's size, as admin: the machine's baseline.
    ConfigMap,
    /// AccessRequests under an auto-approve policy as alice, everything on, until all Issued.
    Full,
    /// AccessRequests as alice with the webhook configurations removed, the operator paused.
    NoWebhooks,
    /// Status server-side applies (an Issued status) on existing requests, the operator paused.
    StatusApply,
    /// The same status as a JSON merge patch (not server-side apply), on fresh requests.
    StatusMerge,
    /// `events.k8s.io/v1` Events like the operator's transition Event.
    Event,
    /// Requests of a copy of the CRD (another group, no webhook matches it), CEL rules kept.
    CopyWithCel,
    /// Requests of a copy of the CRD without its `x-kubernetes-validations`.
    CopyWithoutCel,
    /// Requests of the copy with CEL rules while two watches (all namespaces, the namespace)
    /// receive them, as the proxy's and the bench's watch receive the real requests.
    CopyWatched,
}

impl Case {
    /// How the case is printed.
    pub fn label(self) -> &'static str {
        match self {
            Case::ConfigMap => "a. ConfigMap create (admin)",
            Case::Full => "b. AccessRequest, all on (create→Issued)",
            Case::NoWebhooks => "c. AccessRequest create, no webhooks",
            Case::StatusApply => "d. status apply alone",
            Case::StatusMerge => "d. status merge patch alone",
            Case::Event => "d. Event create alone",
            Case::CopyWithCel => "e. CRD copy create, CEL rules",
            Case::CopyWithoutCel => "e. CRD copy create, no CEL rules",
            Case::CopyWatched => "e. CRD copy create, CEL rules, 2 watches",
        }
    }
}

/// What one measurement of `N` objects cost, per object.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    /// kube-apiserver CPU milliseconds per object.
    pub api_ms: f64,
    /// etcd CPU milliseconds per object.
    pub etcd_ms: f64,
    /// Objects written per second by the client (`BENCH_PARALLEL` in flight).
    pub per_second: f64,
}

/// One measurement: the case's cost and the ConfigMap baseline taken just before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub cost: Cost,
    pub baseline: Cost,
}

/// One share of an auto-approved request's cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub what: &'static str,
    /// Whether Gatehouse chose it (webhooks, CEL) rather than it being the request itself.
    pub ours: bool,
    pub ms: f64,
}

/// Split `full` (one auto-approved request, everything on) with the other cases' figures
/// (the same unit: API server or etcd ms per object). The webhooks' share is what the full
/// request costs beyond a create without them, its status apply and its Event; CEL's is the
/// copy with rules minus the copy without; the rest of the create is the CRD create itself.
/// `None` if a case is missing.
pub fn shares(by_case: &BTreeMap<Case, f64>) -> Option<Vec<Share>> {
    let get = |case| by_case.get(&case).copied();
    let full = get(Case::Full)?;
    let bare = get(Case::NoWebhooks)?;
    let status = get(Case::StatusApply)?;
    let event = get(Case::Event)?;
    let cel = get(Case::CopyWithCel)? - get(Case::CopyWithoutCel)?;
    Some(vec![
        Share {
            what: "CRD create (no webhooks, no CEL), incl. watch fan-out",
            ours: false,
            ms: bare - cel,
        },
        Share {
            what: "status server-side apply",
            ours: false,
            ms: status,
        },
        Share {
            what: "Event create",
            ours: false,
            ms: event,
        },
        Share {
            what: "CEL rules of the CRD",
            ours: true,
            ms: cel,
        },
        Share {
            what: "admission webhooks (mutate + validate) and what they add",
            ours: true,
            ms: full - bare - status - event,
        },
    ])
}

/// What a create costs for two watches to receive it (the copy with CEL, watched − unwatched).
pub fn watch_fan_out(by_case: &BTreeMap<Case, f64>) -> Option<f64> {
    Some(by_case.get(&Case::CopyWatched)? - by_case.get(&Case::CopyWithCel)?)
}

/// The mean and the spread (max − min) of `values`.
pub fn mean_spread(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    (mean, max - min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cases(values: &[(Case, f64)]) -> BTreeMap<Case, f64> {
        values.iter().copied().collect()
    }

    #[test]
    fn shares_split_the_full_request() {
        let all = [
            (Case::Full, 10.0),
            (Case::NoWebhooks, 3.0),
            (Case::StatusApply, 2.0),
            (Case::Event, 1.0),
            (Case::CopyWithCel, 2.5),
            (Case::CopyWithoutCel, 2.0),
        ];
        type Row<'a> = (&'a [(Case, f64)], Option<Vec<f64>>);
        let table: [Row<'_>; 3] = [
            (&all, Some(vec![2.5, 2.0, 1.0, 0.5, 4.0])),
            (&all[..5], None),
            (&all[1..], None),
        ];
        for (input, want) in table {
            let got = shares(&cases(input)).map(|s| s.iter().map(|s| s.ms).collect::<Vec<_>>());
            assert_eq!(got, want, "{input:?}");
        }
        let split = shares(&cases(&all)).unwrap();
        let total: f64 = split.iter().map(|s| s.ms).sum();
        assert!((total - 10.0).abs() < 1e-9);
        let watched = cases(&[(Case::CopyWatched, 3.0), (Case::CopyWithCel, 2.5)]);
        assert_eq!(watch_fan_out(&watched), Some(0.5));
        assert_eq!(watch_fan_out(&cases(&all)), None);
        let ours: f64 = split.iter().filter(|s| s.ours).map(|s| s.ms).sum();
        assert!((ours - 4.5).abs() < 1e-9);
    }

    #[test]
    fn mean_and_spread() {
        let table: [(&[f64], (f64, f64)); 3] = [
            (&[], (0.0, 0.0)),
            (&[2.0], (2.0, 0.0)),
            (&[1.0, 3.0], (2.0, 2.0)),
        ];
        for (values, want) in table {
            assert_eq!(mean_spread(values), want, "{values:?}");
        }
    }
}

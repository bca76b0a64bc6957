//! The floor's summary: the per-case table over the rounds and the shares of case b, as
//! Markdown tables ready for docs/benchmarks.md.

use std::collections::BTreeMap;

use crate::floor_shares::{Case, Measured, mean_spread, shares, watch_fan_out};

/// The per-case table (mean ± spread over rounds) and the shares of case b.
pub fn summary(results: &BTreeMap<Case, Vec<Measured>>) {
    println!();
    println!("## Per object, mean of the rounds (± max − min)");
    println!();
    println!(
        "| case | apiserver CPU ms | etcd CPU ms | writes/s | ConfigMaps just before: apiserver ms, /s |"
    );
    println!("|---|---|---|---|---|");
    let stat = |ms: &[Measured], f: fn(&Measured) -> f64| {
        mean_spread(&ms.iter().map(f).collect::<Vec<_>>())
    };
    for (case, ms) in results {
        let api = stat(ms, |m| m.cost.api_ms);
        let etcd = stat(ms, |m| m.cost.etcd_ms);
        let rate = stat(ms, |m| m.cost.per_second);
        let base = ms
            .iter()
            .map(|m| format!("{:.2}, {:.0}", m.baseline.api_ms, m.baseline.per_second))
            .collect::<Vec<_>>()
            .join("; ");
        println!(
            "| {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.0} ± {:.0} | {base} |",
            case.label(),
            api.0,
            api.1,
            etcd.0,
            etcd.1,
            rate.0,
            rate.1
        );
    }
    let rounds = results.values().map(Vec::len).min().unwrap_or(0);
    for (what, f) in [
        (
            "kube-apiserver",
            (|m: &Measured| m.cost.api_ms) as fn(&Measured) -> f64,
        ),
        ("etcd", |m: &Measured| m.cost.etcd_ms),
    ] {
        let per_round: Vec<_> = (0..rounds)
            .filter_map(|i| {
                let by_case = results
                    .iter()
                    .map(|(case, ms)| (*case, f(&ms[i])))
                    .collect::<BTreeMap<_, _>>();
                Some((by_case.get(&Case::Full).copied()?, shares(&by_case)?))
            })
            .collect();
        let Some((_, first)) = per_round.first() else {
            continue;
        };
        println!();
        println!("## Shares of one auto-approved request (case b), {what} CPU ms");
        println!();
        let heads: String = (1..=per_round.len())
            .map(|i| format!(" round {i} |"))
            .collect();
        println!("| share | ours? |{heads} mean | of b |");
        println!("|---|---|{}---|---|", "---|".repeat(per_round.len()));
        let full = mean_spread(&per_round.iter().map(|(f, _)| *f).collect::<Vec<_>>()).0;
        for (k, share) in first.iter().enumerate() {
            let values: Vec<f64> = per_round.iter().map(|(_, s)| s[k].ms).collect();
            let mean = mean_spread(&values).0;
            let cells: String = values.iter().map(|v| format!(" {v:.2} |")).collect();
            println!(
                "| {} | {} |{cells} {mean:.2} | {:.0}% |",
                share.what,
                if share.ours { "ours" } else { "inherent" },
                mean * 100.0 / full.max(1e-9)
            );
        }
        let cells: String = per_round
            .iter()
            .map(|(f, _)| format!(" {f:.2} |"))
            .collect();
        println!("| total (case b) | |{cells} {full:.2} | 100% |");
        let fan_out: Vec<f64> = (0..rounds)
            .filter_map(|i| {
                let by_case = results
                    .iter()
                    .map(|(case, ms)| (*case, f(&ms[i])))
                    .collect::<BTreeMap<_, _>>();
                watch_fan_out(&by_case)
            })
            .collect();
        if !fan_out.is_empty() {
            let cells: Vec<String> = fan_out.iter().map(|v| format!("{v:.2}")).collect();
            println!();
            println!(
                "Of the CRD create, two watches receiving it cost {:.2} ms of {what} CPU (rounds: {}; case e watched − e with CEL rules).",
                mean_spread(&fan_out).0,
                cells.join(", ")
            );
        }
    }
}

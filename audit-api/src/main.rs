//! `gatehouse-audit-api`: serves `audit.gatehouse.dev` behind the aggregation layer.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("gatehouse-audit-api: not built yet")
}

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the router is not built yet")
}

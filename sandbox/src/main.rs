fn main() -> anyhow::Result<()> {
    anyhow::bail!("the sandbox is not built yet")
}

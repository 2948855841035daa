//! Page store benchmark (placeholder until written): the disk tier alone against fio.

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("the pagestore benchmark is not written yet")
}

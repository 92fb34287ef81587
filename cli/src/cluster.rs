//! Placeholder; replaced once the daemon libraries exist.
use std::path::PathBuf;

use crate::client::{Endpoints, LinkClient};

#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    pub bundle: PathBuf,
    pub k: Option<u32>,
}

pub struct LocalLink {
    endpoints: Endpoints,
}

impl LocalLink {
    pub async fn start(_options: LocalOptions) -> anyhow::Result<Self> {
        anyhow::bail!("not yet")
    }
    pub fn client(&self) -> anyhow::Result<LinkClient> {
        Ok(LinkClient::new(self.endpoints.clone())?)
    }
    pub async fn shutdown(self) -> anyhow::Result<()> {
        Ok(())
    }
}

//! What every verb needs: the validated config and its state dir, loaded
//! once. The CLI builds it; library functions that act on a configured
//! gate (doctor's checks, the verbs' helpers) take it.
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{config::Config, state::StateDir};

/// What every verb needs: the validated config and its state dir.
pub struct Ctx {
    pub config_path: PathBuf,
    pub cfg: Config,
    pub state: StateDir,
}

impl Ctx {
    pub fn load(path: &Path) -> Result<Ctx> {
        let cfg = Config::load(path)?;
        let state = StateDir::new(&cfg.state_dir);
        Ok(Ctx {
            config_path: path.to_path_buf(),
            cfg,
            state,
        })
    }
}

//! Where `eval`'s samples come from: files read as `infer` reads them, or a prepared split.

use anyhow::{bail, Result};
use medvae_model::infer::{Prepared, Preparer};
use medvae_runtime::data::image2d::{Image2d, Samples};
use medvae_runtime::data::shard::ShardSet;
use medvae_runtime::data::volume3d::Volume;
use std::path::PathBuf;

/// Where the samples come from.
pub enum Source {
    Files(Vec<PathBuf>),
    Shards { set: ShardSet, dir: PathBuf },
}

impl Source {
    pub fn len(&self) -> usize {
        match self {
            Source::Files(f) => f.len(),
            Source::Shards { set, .. } => set.len(),
        }
    }

    pub fn name(&self, i: usize) -> String {
        match self {
            Source::Files(f) => f[i].display().to_string(),
            Source::Shards { set, .. } => set.index().samples[i].source.clone(),
        }
    }

    /// Sample `i` preprocessed, with the path that names it in errors.
    pub fn load(&self, i: usize, preparer: &Preparer) -> Result<(Prepared, PathBuf)> {
        match self {
            Source::Files(f) => Ok((preparer.prepare_file(&f[i])?, f[i].clone())),
            Source::Shards { set, dir } => {
                let view = set.sample(i)?;
                let mut data = vec![0.0; view.values.len()];
                view.values.copy_to_f32(&mut data);
                let at = dir.join(format!("{}#{i}", set.index().split));
                let prepared = match *view.shape {
                    [height, width, channels] => Prepared::Image(Image2d {
                        height,
                        width,
                        channels,
                        data,
                        samples: Samples::Float,
                    }),
                    [d0, d1, d2, 1] => Prepared::Volume(
                        Volume {
                            shape: [d0, d1, d2],
                            data,
                        },
                        None,
                    ),
                    ref other => bail!("{}: a sample of shape {other:?}", at.display()),
                };
                Ok((prepared, at))
            }
        }
    }
}

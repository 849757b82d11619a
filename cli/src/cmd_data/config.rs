//! The `data prepare` config file: YAML with a `datasets:` list (each a
//! [`DatasetSpec`]) and an optional `root:` that relative paths are resolved against.
//!
//! ```yaml
//! root: ../..              # optional; relative to this file's folder (default: that folder)
//! datasets:
//!   - csv: samples/xray_2d.csv
//!     data_dir: samples/2d
//!     kind: png2d          # png2d | mri3d | ct3d
//!     suffix: ""           # appended to each image id
//! ```
//!
//! Unknown keys, at the top level or in a dataset, are errors that list the valid keys (serde's
//! `deny_unknown_fields`), so a typo never silently falls back to a default.

use anyhow::{bail, Context, Result};
use medvae_runtime::data::dataset::DatasetSpec;
use std::path::{Path, PathBuf};

/// What a config file holds.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Folder that relative `csv` / `data_dir` paths are taken from; itself relative to the
    /// config file's folder. Default: the config file's folder.
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The datasets, concatenated per split in this order.
    pub datasets: Vec<DatasetSpec>,
}

impl DataConfig {
    /// Read and validate `path`, resolving every relative path (see the module docs).
    pub fn load(path: &Path) -> Result<DataConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse(&text, config_dir).with_context(|| format!("config {}", path.display()))
    }

    /// Parse YAML text; relative paths are resolved against `config_dir` (joined with `root`).
    pub fn parse(text: &str, config_dir: &Path) -> Result<DataConfig> {
        let mut config: DataConfig = serde_yaml::from_str(text)?;
        if config.datasets.is_empty() {
            bail!("`datasets` is empty: list at least one dataset");
        }
        let base = match &config.root {
            Some(root) => config_dir.join(root),
            None => config_dir.to_path_buf(),
        };
        for spec in &mut config.datasets {
            spec.csv = base.join(&spec.csv);
            spec.data_dir = base.join(&spec.data_dir);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medvae_runtime::data::dataset::DataKind;

    #[test]
    fn resolves_paths_against_root_in_the_config_folder() {
        let text =
            "root: ../..\ndatasets:\n  - csv: s/a.csv\n    data_dir: s/2d\n    kind: png2d\n";
        let c = DataConfig::parse(text, Path::new("configs/dataloader")).unwrap();
        assert_eq!(
            c.datasets[0].csv,
            Path::new("configs/dataloader/../../s/a.csv")
        );
        assert_eq!(
            c.datasets[0].data_dir,
            Path::new("configs/dataloader/../../s/2d")
        );
        assert_eq!(c.datasets[0].kind, DataKind::Png2d);
        assert_eq!(c.datasets[0].resize_to, Some([384, 384]));
    }

    #[test]
    fn absolute_paths_stay() {
        let text = "datasets:\n  - csv: /x/a.csv\n    data_dir: /x\n    kind: ct3d\n";
        let c = DataConfig::parse(text, Path::new("cfg")).unwrap();
        assert_eq!(c.datasets[0].csv, Path::new("/x/a.csv"));
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let top = "datasets: []\nworkers: 3\n";
        let e = DataConfig::parse(top, Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("workers") && e.contains("datasets") && e.contains("root"),
            "{e}"
        );
        let inner =
            "datasets:\n  - csv: a.csv\n    data_dir: d\n    kind: png2d\n    sufix: .png\n";
        let e = DataConfig::parse(inner, Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sufix") && e.contains("suffix") && e.contains("image_column"),
            "{e}"
        );
    }

    #[test]
    fn empty_and_bad_kind_are_errors() {
        assert!(DataConfig::parse("datasets: []\n", Path::new("")).is_err());
        let bad = "datasets:\n  - csv: a.csv\n    data_dir: d\n    kind: png3d\n";
        let e = DataConfig::parse(bad, Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("png2d") && e.contains("mri3d"), "{e}");
    }
}
